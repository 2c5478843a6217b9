"""Settings: sizes with units, defaults, the TOML file, masking."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from proctor.config import Settings, parse_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("512m", 512 * 1024**2),
        ("2g", 2 * 1024**3),
        ("2G", 2 * 1024**3),
        ("1.5GiB", int(1.5 * 1024**3)),
        ("64k", 64 * 1024),
        ("100", 100),
        (4096, 4096),
        ("10 MB", 10 * 1024**2),
    ],
)
def test_parse_size_units(text: str | int, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "lots", "12x", "-1m", True])
def test_parse_size_rejects_nonsense(text: object) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


def test_settings_defaults_follow_the_contract(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings()

    assert settings.home == tmp_path / ".proctor"
    assert settings.database_url == f"sqlite:///{tmp_path / '.proctor' / 'proctor.db'}"
    assert settings.datasets_dir == tmp_path / ".proctor" / "datasets"
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert settings.allowed_base_images == ["*"]
    assert settings.pull_base_images is False
    assert settings.run_memory == 2 * 1024**3
    assert settings.output_max_bytes == 100 * 1024**2
    assert settings.log_max_bytes == 4 * 1024**2
    assert settings.max_upload_bytes == 64 * 1024**2
    assert (settings.build_timeout, settings.run_timeout, settings.run_timeout_max) == (
        900,
        3600,
        86400,
    )
    assert (settings.run_cpus, settings.run_pids, settings.worker_concurrency) == (1.0, 256, 2)
    assert settings.block_severity == "high"


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PROCTOR_HOME", str(tmp_path))
    monkeypatch.setenv("PROCTOR_RUN_MEMORY", "512m")
    monkeypatch.setenv("PROCTOR_ALLOWED_BASE_IMAGES", "proctor/*, python:3.11*")

    settings = Settings()

    assert settings.run_memory == 512 * 1024**2
    assert settings.allowed_base_images == ["proctor/*", "python:3.11*"]


def test_settings_from_toml_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "proctor.toml"
    config.write_text('run_memory = "1g"\nworker_concurrency = 4\n')
    monkeypatch.setenv("PROCTOR_CONFIG", str(config))
    monkeypatch.setenv("PROCTOR_WORKER_CONCURRENCY", "3")

    settings = Settings(home=tmp_path)

    assert settings.run_memory == 1024**3
    assert settings.worker_concurrency == 3  # the environment wins over the file


def test_settings_reject_bad_values(tmp_path: Path) -> None:
    with pytest.raises(ValidationError):
        Settings(home=tmp_path, block_severity="urgent")
    with pytest.raises(ValidationError):
        Settings(home=tmp_path, run_timeout=100, run_timeout_max=10)
    with pytest.raises(ValidationError):
        Settings(home=tmp_path, run_memory="lots")


def test_settings_shown_masks_database_password(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, database_url="postgresql+psycopg://u:secret@db/proctor")

    shown = settings.shown()

    assert "secret" not in shown["database_url"]
    assert shown["database_url"] == "postgresql+psycopg://u:***@db/proctor"


def test_settings_finding_policy_from_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from proctor import scanning
    from proctor.checks import Severity

    monkeypatch.setenv("PROCTOR_FINDING_SEVERITY", "DL3008=medium, CVE-2024-*=low")
    monkeypatch.setenv("PROCTOR_ACCEPTED_FINDINGS", "image.root_user")
    monkeypatch.setenv("PROCTOR_BLOCK_SEVERITY", "critical")

    policy = scanning.policy(Settings(home=tmp_path))

    assert policy.block_severity is Severity.CRITICAL
    assert policy.severity_overrides == {"DL3008": Severity.MEDIUM, "CVE-2024-*": Severity.LOW}
    assert policy.accepted == ("image.root_user",)


@pytest.mark.parametrize("entry", ["DL3008", "DL3008=urgent", "=high"])
def test_settings_reject_finding_severity_that_is_not_rule_equals_severity(
    tmp_path: Path, entry: str
) -> None:
    with pytest.raises(ValidationError, match="RULE=SEVERITY"):
        Settings(home=tmp_path, finding_severity=[entry])


def test_settings_reject_unknown_scanners(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="unknown scanner"):
        Settings(home=tmp_path, scanners=["trivy", "clamav"])
