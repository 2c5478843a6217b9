"""Checks of a built image (the `scanning` phase) and the policy that blocks on findings.

Each check looks at the built image and reports findings; the policy turns a
finding at or above the blocking severity into `scan_rejected`. Checks are
plugged in through `Check`; linters and scanners implement it.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Protocol

from proctor.engine import ImageInfo


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
    rule: str
    severity: Severity
    message: str
    line: int | None = None

    def record(self) -> dict[str, object]:
        return {**asdict(self), "severity": self.severity.value}


@dataclass(frozen=True)
class Subject:
    """What a check may look at: the Dockerfile and the built image."""

    dockerfile: str
    image: ImageInfo


class Check(Protocol):
    name: str

    def __call__(self, subject: Subject) -> Iterable[Finding]: ...


def parse_severity(value: str) -> Severity:
    try:
        return Severity(value.strip().lower())
    except ValueError as exc:
        allowed = ", ".join(s.value for s in Severity)
        raise ValueError(f"severity {value!r} is not one of {allowed}") from exc


def blocking(findings: Sequence[Finding], threshold: Severity) -> list[Finding]:
    """The findings at or above the threshold, worst first."""
    worst_first = sorted(findings, key=lambda f: f.severity.rank, reverse=True)
    return [f for f in worst_first if f.severity.rank >= threshold.rank]


def rejection_message(blockers: Sequence[Finding], shown: int = 3) -> str:
    named = "; ".join(f"{f.rule} ({f.severity.value}): {f.message}" for f in blockers[:shown])
    more = f" and {len(blockers) - shown} more" if len(blockers) > shown else ""
    return f"the image scan found {len(blockers)} blocking finding(s): {named}{more}"


def run_checks(checks: Sequence[Check], subject: Subject) -> list[Finding]:
    findings: list[Finding] = []
    for check in checks:
        findings.extend(check(subject))
    return findings


# No checks ship yet; the scanning phase runs whatever this holds.
DEFAULT_CHECKS: tuple[Check, ...] = ()
