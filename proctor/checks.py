"""Checks of a built image (the `scanning` phase) and the policy that blocks on findings.

Each check looks at the Dockerfile, the image's configuration or its layers and
reports findings; the policy re-ranks them by setting, marks accepted risks, and turns
a finding at or above the blocking severity into `scan_rejected`.
"""

from __future__ import annotations

import enum
import fnmatch
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import IO, Protocol, runtime_checkable

from proctor import exceptions
from proctor.engine import ImageInfo

log = logging.getLogger(__name__)


class Severity(enum.StrEnum):
    LOW = "low"  # worth knowing, no action needed
    MEDIUM = "medium"  # should be fixed
    HIGH = "high"  # must be fixed; blocks by default
    CRITICAL = "critical"  # exploitable or leaks secrets

    @property
    def rank(self) -> int:
        return list(Severity).index(self)


@dataclass(frozen=True)
class Finding:
    rule: str  # "DL3004" (hadolint), "image.setuid" (proctor), "CVE-2024-1234" (a scanner)
    severity: Severity
    message: str
    line: int | None = None  # the Dockerfile line it is about
    source: str = "proctor"  # the check that reported it: hadolint, image, trivy, grype
    path: str | None = None  # the file in the image it is about
    package: str | None = None  # for a vulnerability: the package, its version, the fix
    installed_version: str | None = None
    fixed_version: str | None = None
    accepted: bool = False  # an accepted risk (setting): kept on the job, never blocks

    def record(self) -> dict[str, object]:
        """The job JSON's shape: `rule`, `severity`, `message`, `line` always; the rest
        when they say something."""
        values = asdict(self)
        record: dict[str, object] = {
            "rule": self.rule,
            "severity": self.severity.value,
            "message": self.message,
            "line": self.line,
            "source": self.source,
        }
        for key in ("path", "package", "installed_version", "fixed_version"):
            if values[key] is not None:
                record[key] = values[key]
        if self.accepted:
            record["accepted"] = True
        return record


class ImageLayers(Protocol):
    """The image's filesystem, saved from the engine on first use."""

    def tarball(self) -> Path:
        """The image as `docker save` writes it (what external scanners read)."""
        ...

    def new_layers(self) -> Iterator[tuple[str, IO[bytes]]]:
        """(diff id, uncompressed layer tar stream) of each layer the submission added
        over its base image, bottom first; each stream is valid until the next one."""
        ...


@dataclass(frozen=True)
class Subject:
    """What a check may look at: the Dockerfile, the built image, the image it was built
    FROM (None when it is not on the engine, e.g. `FROM scratch`) and its layers."""

    dockerfile: str
    image: ImageInfo
    base: ImageInfo | None
    layers: ImageLayers

    @property
    def base_diff_ids(self) -> frozenset[str]:
        return frozenset(self.base.diff_ids if self.base else ())


class Check(Protocol):
    name: str

    def __call__(self, subject: Subject) -> Iterable[Finding]: ...


@runtime_checkable
class DockerfileCheck(Check, Protocol):
    """A check that reads the Dockerfile alone: it can run while the image builds."""

    def lint(self, dockerfile: str) -> Iterable[Finding]: ...


@dataclass(frozen=True)
class CheckRun:
    """What one check found, and how long it took."""

    name: str
    found: list[Finding]
    seconds: float


def run_check(check: Check, call: Callable[[], Iterable[Finding]]) -> CheckRun:
    """Run a check (`call`). A check that breaks becomes a finding of its own rather
    than failing the job: the others still run."""
    started = time.monotonic()
    try:
        found = list(call())
    except exceptions.CheckError as exc:
        log.warning("check %s failed: %s", check.name, exc.message)
        found = [
            Finding(
                f"{check.name}.error",
                Severity.MEDIUM,
                f"the {check.name} check could not complete: {exc.message}",
                source=check.name,
            )
        ]
    return CheckRun(check.name, found, time.monotonic() - started)


def parse_severity(value: str) -> Severity:
    try:
        return Severity(value.strip().lower())
    except ValueError as exc:
        allowed = ", ".join(s.value for s in Severity)
        raise ValueError(f"severity {value!r} is not one of {allowed}") from exc


@dataclass(frozen=True)
class Policy:
    """What the operator decided about findings (settings `block_severity`,
    `finding_severity`, `accepted_findings`)."""

    block_severity: Severity = Severity.HIGH
    severity_overrides: Mapping[str, Severity] = field(default_factory=dict)  # rule glob
    accepted: tuple[str, ...] = ()  # rule globs that never block

    def apply(self, finding: Finding) -> Finding:
        severity = next(
            (s for rule, s in self.severity_overrides.items() if _matches(finding.rule, rule)),
            finding.severity,
        )
        accepted = any(_matches(finding.rule, rule) for rule in self.accepted)
        return replace(finding, severity=severity, accepted=accepted)

    def blocking(self, findings: Sequence[Finding]) -> list[Finding]:
        """The findings that fail the job, worst first."""
        return [
            f
            for f in worst_first(findings)
            if not f.accepted and f.severity.rank >= self.block_severity.rank
        ]


def _matches(rule: str, pattern: str) -> bool:
    return fnmatch.fnmatchcase(rule.upper(), pattern.upper())


def worst_first(findings: Iterable[Finding]) -> list[Finding]:
    return sorted(findings, key=lambda f: f.severity.rank, reverse=True)


def rejection_message(blockers: Sequence[Finding], shown: int = 3) -> str:
    named = "; ".join(f"{f.rule} ({f.severity.value}): {f.message}" for f in blockers[:shown])
    more = f" and {len(blockers) - shown} more" if len(blockers) > shown else ""
    return f"the image scan found {len(blockers)} blocking finding(s): {named}{more}"


def run_checks(
    checks: Sequence[Check],
    subject: Subject,
    policy: Policy,
    on_progress: Callable[[str], None] = lambda _: None,
    done: Mapping[str, CheckRun] | None = None,
) -> list[Finding]:
    """Every check's findings with the policy applied, worst first; the checks `done`
    already (by name) are not run again."""
    findings: list[Finding] = []
    for check in checks:
        run = (done or {}).get(check.name) or run_check(check, partial(check, subject))
        on_progress(f"{run.name}: {len(run.found)} finding(s) in {run.seconds:.1f} s")
        findings.extend(policy.apply(f) for f in run.found)
    return worst_first(findings)


def describe(record: Mapping[str, object]) -> str:
    """One line for a finding (as the job JSON holds it): severity, rule, where, what."""
    where = f" line {record['line']}" if record.get("line") else ""
    where += f" {record['path']}" if record.get("path") else ""
    accepted = " (accepted)" if record.get("accepted") else ""
    return f"{record['severity']}{accepted}: {record['rule']}{where}: {record['message']}"


def log_header(records: Sequence[Mapping[str, object]]) -> str:
    """What the head of a job's logs says about its findings."""
    if not records:
        return ""
    lines = [f"[proctor] findings: {len(records)}"]
    lines += [f"[proctor]   {describe(record)}" for record in records]
    return "\n".join(lines) + "\n\n"
