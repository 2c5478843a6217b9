"""The sandbox profile, the blocking policy of the checks and how checks are run."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from proctor import checks, exceptions, scanning
from proctor.checks import Finding, Severity
from proctor.config import Settings
from proctor.engine import ImageInfo
from proctor.sandbox import SandboxProfile, run_user


@pytest.mark.parametrize(
    ("image_user", "expected"),
    [
        ("", "65534:65534"),
        ("root", "65534:65534"),
        ("0", "65534:65534"),
        ("0:0", "65534:65534"),
        ("root:staff", "65534:65534"),
        ("app", "app"),
        ("1000:1000", "1000:1000"),
    ],
)
def test_run_user_never_root(image_user: str, expected: str) -> None:
    assert run_user(image_user, "65534:65534") == expected


def test_sandbox_profile_records_every_limit(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, run_memory="1g", run_cpus=0.5, run_pids=64)

    record = SandboxProfile.for_job(settings, image_user="", timeout=30).record()

    assert record["network"] == "none"
    assert record["memory_bytes"] == record["memory_swap_bytes"] == 1024**3
    assert record["cpus"] == 0.5
    assert record["pids_limit"] == 64
    assert record["cap_drop"] == ["ALL"]
    assert record["no_new_privileges"] is True
    assert record["read_only_rootfs"] is True
    assert record["user"] == "65534:65534"
    assert record["timeout_seconds"] == 30


def finding(severity: Severity, rule: str = "r") -> Finding:
    return Finding(rule=rule, severity=severity, message=f"{severity} thing")


def test_blocking_keeps_findings_at_or_above_threshold_worst_first() -> None:
    found = [finding(Severity.LOW), finding(Severity.CRITICAL, "c"), finding(Severity.HIGH, "h")]

    blockers = checks.Policy(Severity.HIGH).blocking(found)

    assert [f.rule for f in blockers] == ["c", "h"]
    assert [f.rule for f in checks.Policy(Severity.CRITICAL).blocking(found)] == ["c"]
    assert checks.Policy(Severity.HIGH).blocking([finding(Severity.MEDIUM)]) == []


def test_policy_reranks_rules_by_glob_and_accepted_rules_never_block() -> None:
    policy = checks.Policy(
        Severity.HIGH,
        severity_overrides={"DL30*": Severity.CRITICAL, "cve-2024-1": Severity.LOW},
        accepted=("image.private_key",),
    )
    lint = policy.apply(finding(Severity.LOW, "DL3004"))
    cve = policy.apply(finding(Severity.CRITICAL, "CVE-2024-1"))
    key = policy.apply(finding(Severity.HIGH, "image.private_key"))

    assert lint.severity is Severity.CRITICAL and not lint.accepted
    assert cve.severity is Severity.LOW
    assert key.accepted and key.record()["accepted"] is True
    assert policy.blocking([lint, cve, key]) == [lint]


def test_finding_record_has_the_contract_keys_and_only_meaningful_extras() -> None:
    plain = finding(Severity.LOW).record()
    vulnerable = Finding(
        "CVE-1", Severity.HIGH, "m", source="trivy", package="openssl", installed_version="1"
    ).record()

    assert plain == {
        "rule": "r",
        "severity": "low",
        "message": "low thing",
        "line": None,
        "source": "proctor",
    }
    assert vulnerable["package"] == "openssl" and "fixed_version" not in vulnerable


def test_rejection_message_names_worst_findings() -> None:
    blockers = [finding(Severity.CRITICAL, f"rule{i}") for i in range(5)]

    message = checks.rejection_message(blockers)

    assert "5 blocking finding(s)" in message
    assert "rule0" in message and "2 more" in message


def test_parse_severity() -> None:
    assert checks.parse_severity(" High ") is Severity.HIGH
    with pytest.raises(ValueError, match="not one of"):
        checks.parse_severity("urgent")


class _CountingLint:
    """A Dockerfile check that counts its runs and finds one thing per FROM line."""

    name = "counting"

    def __init__(self) -> None:
        self.runs: list[str] = []

    def __call__(self, subject: checks.Subject) -> list[Finding]:
        return self.lint(subject.dockerfile)

    def lint(self, dockerfile: str) -> list[Finding]:
        self.runs.append(threading.current_thread().name)
        return [finding(Severity.LOW, "from") for line in dockerfile.splitlines() if "FROM" in line]


class _NoLayers:
    def tarball(self) -> Path:
        raise AssertionError("not read by these checks")

    def new_layers(self) -> Iterator[tuple[str, IO[bytes]]]:
        return iter(())


class _Broken:
    name = "broken"

    def __call__(self, subject: checks.Subject) -> list[Finding]:
        raise AssertionError("not a Dockerfile check: runs with the image only")

    def lint(self, dockerfile: str) -> list[Finding]:
        raise exceptions.CheckError("no binary")


def test_dockerfile_checks_run_beside_the_build_and_are_not_run_again() -> None:
    lint = _CountingLint()
    early = scanning.DockerfileChecks([lint, _Broken()], "FROM a AS x\nFROM b\n")
    done = early.results()
    assert lint.runs == ["dockerfile-checks"]  # in a thread of its own
    assert [f.rule for f in done["counting"].found] == ["from", "from"]
    assert [f.rule for f in done["broken"].found] == ["broken.error"]  # an error is a finding
    progress: list[str] = []
    image = ImageInfo(id="sha256:x", user="app", size_bytes=0)
    subject = checks.Subject("FROM a AS x\nFROM b\n", image, None, _NoLayers())
    found = checks.run_checks([lint, _Broken()], subject, checks.Policy(), progress.append, done)
    assert len(lint.runs) == 1  # not run again
    assert sorted(f.rule for f in found) == ["broken.error", "from", "from"]
    assert [line.split(":")[0] for line in progress] == ["counting", "broken"]


def test_dockerfile_checks_without_any_start_no_thread() -> None:
    early = scanning.DockerfileChecks([], "FROM a\n")
    assert early.results() == {}
