"""Job states, error codes and the rules for moving between states."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Status(enum.StrEnum):
    QUEUED = "queued"  # waiting for a worker
    BUILDING = "building"  # a worker builds the image, without network
    SCANNING = "scanning"  # the built image is checked
    RUNNING = "running"  # the container runs in the sandbox
    SUCCEEDED = "succeeded"  # the container wrote a valid perf.json
    FAILED = "failed"  # see the job's error code
    CANCELLED = "cancelled"  # stopped by its owner or an admin

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATES

    @property
    def is_active(self) -> bool:
        """Held by a worker under a lease."""
        return self in ACTIVE_STATES


FINAL_STATES = frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELLED})
ACTIVE_STATES = frozenset({Status.BUILDING, Status.SCANNING, Status.RUNNING})
_ORDER = [Status.QUEUED, Status.BUILDING, Status.SCANNING, Status.RUNNING]


class ErrorCode(enum.StrEnum):
    BUILD_FAILED = "build_failed"  # the image does not build
    BUILD_TIMEOUT = "build_timeout"  # the build exceeded its time limit
    SCAN_REJECTED = "scan_rejected"  # a finding at or above the blocking severity
    TIMEOUT = "timeout"  # the container ran past its time limit
    OOM_KILLED = "oom_killed"  # the container exceeded its memory limit
    EXIT_NONZERO = "exit_nonzero"  # the container exited with a non-zero code
    PERF_MISSING = "perf_missing"  # exit 0 but no /data/perf.json
    PERF_INVALID = "perf_invalid"  # perf.json unreadable or without a finite `perf`
    CANCELLED = "cancelled"  # cancelled by its owner or an admin
    LOST = "lost"  # workers died holding it more often than the retry limit
    INTERNAL = "internal"  # proctor itself failed


class Stream(enum.StrEnum):
    BUILD = "build"  # output of the image build (and the checks)
    RUN = "run"  # stdout and stderr of the container


def can_move(current: Status, target: Status) -> bool:
    """Whether a job may go from `current` to `target`.

    Jobs only move forward; the one way back is a job whose worker died, which
    returns to `queued` to be tried again.
    """
    if current.is_final:
        return False
    if target.is_final:
        return True
    if target is Status.QUEUED:
        return current.is_active
    return _ORDER.index(target) > _ORDER.index(current)


@dataclass(frozen=True)
class JobError:
    """Why a job did not succeed: a machine-readable code and one human sentence."""

    code: ErrorCode
    message: str


@dataclass(frozen=True)
class Outcome:
    """The final word on one attempt of a job."""

    status: Status
    error: JobError | None = None
    performance: float | None = None
    metrics: dict[str, float] | None = None
    exit_code: int | None = None

    @classmethod
    def failed(cls, code: ErrorCode, message: str, *, exit_code: int | None = None) -> Outcome:
        status = Status.CANCELLED if code is ErrorCode.CANCELLED else Status.FAILED
        return cls(status=status, error=JobError(code, message), exit_code=exit_code)

    @classmethod
    def succeeded(
        cls, performance: float, metrics: dict[str, float], exit_code: int = 0
    ) -> Outcome:
        return cls(
            status=Status.SUCCEEDED,
            performance=performance,
            metrics=metrics,
            exit_code=exit_code,
        )
