"""proctor's settings: one place that reads the environment and the optional TOML file."""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)


def parse_size(value: Any) -> int:
    """Turn `512m`, `2g`, `1.5GiB` or a plain number of bytes into bytes."""
    if isinstance(value, bool):
        raise ValueError("a size must be a number of bytes or a string such as 512m or 2g")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value)
    match = _SIZE_RE.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a size: use bytes or a unit, such as 512m or 2g")
    number, unit = match.groups()
    return int(float(number) * _SIZE_UNITS[unit.lower()])


def _split_csv(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


ByteSize = Annotated[int, BeforeValidator(parse_size), Field(ge=0)]
CsvList = Annotated[list[str], NoDecode, BeforeValidator(_split_csv)]

SECRET_FIELDS = frozenset({"database_url"})
SEVERITIES = ("low", "medium", "high", "critical")
SCANNERS = ("trivy", "grype")  # external vulnerability scanners proctor knows


class Settings(BaseSettings):
    """Every knob of proctor; environment `PROCTOR_<NAME>` or the TOML file in `PROCTOR_CONFIG`."""

    model_config = SettingsConfigDict(env_prefix="PROCTOR_", extra="ignore", validate_default=True)

    home: Path = Path(".proctor")
    database_url: str = ""
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    # API server processes of `serve` and `up`, sharing the port: one per core serves
    # that many times the requests.
    api_processes: int = Field(1, ge=1, le=64)
    docker_host: str | None = None

    allowed_base_images: CsvList = ["*"]
    pull_base_images: bool = False

    build_timeout: float = Field(900, gt=0)
    build_memory: ByteSize = parse_size("2g")
    run_timeout: float = Field(3600, gt=0)
    run_timeout_max: float = Field(86400, gt=0)
    run_memory: ByteSize = parse_size("2g")
    run_cpus: float = Field(1.0, gt=0)
    run_pids: int = Field(256, ge=8)
    run_nofile: int = Field(1024, ge=16)
    run_file_size_max: ByteSize = parse_size("1g")
    run_tmp_size: ByteSize = parse_size("64m")
    run_user: str = "65534:65534"
    run_shm_size: ByteSize = parse_size("64m")
    # "" is the engine's default runtime (runc); "runsc" is gVisor, once installed.
    run_runtime: str = ""
    # "" follows the engine (remapped when dockerd runs with --userns-remap); "host" opts out.
    run_userns_mode: str = ""
    # GPUs a job may ask for: 0 (none, the default), a count, or -1 for all of them.
    run_gpus_max: int = Field(0, ge=-1)

    output_max_bytes: ByteSize = parse_size("100m")
    output_cap: bool = True
    perf_max_bytes: ByteSize = parse_size("64k")
    log_max_bytes: ByteSize = parse_size("4m")
    max_upload_bytes: ByteSize = parse_size("64m")
    max_context_bytes: ByteSize = parse_size("512m")
    max_context_members: int = Field(10000, ge=1)

    worker_concurrency: int = Field(2, ge=1)
    # On SIGTERM a worker stops claiming and lets running jobs finish this long, then
    # gives the rest back to the queue.
    worker_drain_seconds: float = Field(20, ge=0)
    # Per-user caps (0: none): jobs running at once, and jobs waiting in the queue.
    max_running_per_user: int = Field(0, ge=0)
    max_queued_per_user: int = Field(1000, ge=0)
    engine_retries: int = Field(4, ge=1)
    # An idle slot looks for work this often; it is woken at once when a job is queued
    # (PostgreSQL NOTIFY, or a change to the SQLite files), so this is only the fallback.
    worker_poll_interval: float = Field(2.0, gt=0)
    lease_seconds: float = Field(30, ge=2)
    max_attempts: int = Field(3, ge=1)
    keep_images: bool = False
    block_severity: str = "high"
    # Checks of the built image: "RULE=severity" re-ranks (globs allowed, e.g.
    # "DL3008=medium,CVE-2024-*=low"); accepted rules are kept on the job but never block.
    finding_severity: CsvList = []
    accepted_findings: CsvList = []
    lint_ignore: CsvList = []  # hadolint rules not reported at all
    # External scanners run when installed on the worker (absent ones: one warning).
    scanners: CsvList = ["trivy", "grype"]
    scan_timeout: float = Field(300, gt=0)  # per scanner; past it, a finding says so
    max_image_bytes: ByteSize = parse_size("10g")  # bigger images get a finding
    datasets_dir: Path | None = None

    # Ed25519 key that signs result records; every API and worker host needs the same file.
    signing_key: Path | None = None
    # Webhooks: hosts a callback URL may name (globs), the per-attempt HTTP timeout, the
    # first retry delay (doubling after each failure, up to the max), and when to give up.
    webhook_allowed_hosts: CsvList = ["*"]
    webhook_timeout: float = Field(10, gt=0)
    webhook_retry_initial: float = Field(5, gt=0)
    webhook_retry_max: float = Field(900, gt=0)
    webhook_give_up_after: float = Field(6 * 3600, gt=0)
    webhook_poll_interval: float = Field(1.0, gt=0)
    # Batch submissions: entries per request and bytes of all their files together.
    batch_max_jobs: int = Field(20, ge=1)
    batch_max_bytes: ByteSize = parse_size("128m")

    @field_validator("block_severity")
    @classmethod
    def _known_severity(cls, value: str) -> str:
        value = value.strip().lower()
        if value not in SEVERITIES:
            raise ValueError(f"must be one of {', '.join(SEVERITIES)}")
        return value

    @field_validator("scanners")
    @classmethod
    def _known_scanners(cls, value: list[str]) -> list[str]:
        unknown = [name for name in value if name not in SCANNERS]
        if unknown:
            raise ValueError(f"unknown scanner(s) {', '.join(unknown)}: known are {SCANNERS}")
        return value

    @field_validator("finding_severity")
    @classmethod
    def _rule_severities(cls, value: list[str]) -> list[str]:
        for entry in value:
            rule, _, severity = entry.partition("=")
            if not rule.strip() or severity.strip().lower() not in SEVERITIES:
                raise ValueError(
                    f"{entry!r} is not RULE=SEVERITY (severity one of {', '.join(SEVERITIES)})"
                )
        return value

    @model_validator(mode="after")
    def _derive_paths(self) -> Settings:
        self.home = self.home.expanduser().resolve()
        if not self.database_url:
            self.database_url = f"sqlite:///{self.home / 'proctor.db'}"
        if self.datasets_dir is None:
            self.datasets_dir = self.home / "datasets"
        if self.signing_key is None:
            self.signing_key = self.home / "signing-key.pem"
        if self.run_timeout > self.run_timeout_max:
            raise ValueError("run_timeout must not exceed run_timeout_max")
        return self

    @property
    def credentials_path(self) -> Path:
        return self.home / "credentials.json"

    @property
    def jobs_dir(self) -> Path:
        """Per-job scratch folders (a job's `/data`) live here, on the worker's host."""
        return self.home / "jobs"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get("PROCTOR_CONFIG")
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config_file)))
        return tuple(sources)

    def shown(self) -> dict[str, Any]:
        """The effective settings for display, secrets masked."""
        values = self.model_dump(mode="json")
        for key in SECRET_FIELDS:
            values[key] = _mask_url(str(values[key]))
        return values


def _mask_url(url: str) -> str:
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
