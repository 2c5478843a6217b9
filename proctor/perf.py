"""Reading the score a job leaves in `/data/perf.json`, without trusting the file."""

from __future__ import annotations

import errno
import json
import math
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from proctor.jobs import ErrorCode

PERF_FILE = "perf.json"
PERF_KEY = "perf"


class PerfError(Exception):
    """perf.json is missing or not usable; `code` says which."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Perf:
    performance: float
    metrics: dict[str, float] = field(default_factory=dict)


def _finite_number(value: object) -> bool:
    # bool is an int subclass in Python, but `true` is not a score.
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def parse_perf(raw: bytes) -> Perf:
    """Parse the content of perf.json: an object with a finite numeric `perf`."""
    try:
        text = raw.decode("utf-8-sig")
        # Python accepts NaN and Infinity by default; the contract does not.
        document = json.loads(text, parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise PerfError(ErrorCode.PERF_INVALID, f"perf.json is not valid JSON: {exc}") from exc
    if not isinstance(document, dict):
        kind = type(document).__name__
        raise PerfError(ErrorCode.PERF_INVALID, f"perf.json holds a {kind}, not a JSON object")
    if PERF_KEY not in document:
        raise PerfError(ErrorCode.PERF_INVALID, 'perf.json has no "perf" key')
    value = document[PERF_KEY]
    if not _finite_number(value):
        raise PerfError(
            ErrorCode.PERF_INVALID,
            f'perf.json "perf" must be a finite number, not {json.dumps(value)[:80]}',
        )
    metrics = {
        key: float(item)
        for key, item in document.items()
        if key != PERF_KEY and _finite_number(item)
    }
    return Perf(performance=float(value), metrics=metrics)


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a finite number")


def read_perf(output_dir: Path, max_bytes: int) -> Perf:
    """Read `perf.json` from a job's output folder: no symlinks, regular file only, size-capped."""
    path = output_dir / PERF_FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        raise PerfError(
            ErrorCode.PERF_MISSING, "the container exited 0 but wrote no /data/perf.json"
        ) from exc
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise PerfError(
                ErrorCode.PERF_INVALID, "/data/perf.json is a symbolic link, not a regular file"
            ) from exc
        raise PerfError(
            ErrorCode.PERF_INVALID, f"/data/perf.json cannot be opened: {exc.strerror}"
        ) from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise PerfError(ErrorCode.PERF_INVALID, "/data/perf.json is not a regular file")
        if info.st_size > max_bytes:
            raise PerfError(
                ErrorCode.PERF_INVALID,
                f"/data/perf.json is {info.st_size} bytes, over the {max_bytes}-byte limit",
            )
        raw = os.read(fd, max_bytes + 1)
    finally:
        os.close(fd)
    if len(raw) > max_bytes:
        raise PerfError(
            ErrorCode.PERF_INVALID, f"/data/perf.json is over the {max_bytes}-byte limit"
        )
    return parse_perf(raw)
