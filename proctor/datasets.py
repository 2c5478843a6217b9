"""The datasets an operator offers to jobs: one folder each under `datasets_dir`.

A dataset folder may hold a `dataset.toml` describing it (a description, and
whether a higher or a lower `perf` is better); everything in the folder is
mounted read-only at `/data/input` for a job that names the dataset.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import logging
import os
import re
import stat
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

from proctor import exceptions
from proctor.config import Settings

log = logging.getLogger(__name__)

DESCRIPTOR = "dataset.toml"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
DESCRIPTION_MAX_CHARS = 2000
HASH_CHUNK_BYTES = 1024 * 1024
# Digests of files already hashed, keyed by identity and modification: a worker hashes a
# large dataset once, not once per job.
FILE_DIGEST_CACHE_ENTRIES = 65536
RACY_WINDOW_NS = 2_000_000_000


class Direction(enum.StrEnum):
    """Which way the leaderboard ranks a dataset's `perf`."""

    HIGHER = "higher"  # accuracy, AUC…: higher is better
    LOWER = "lower"  # loss, error…: lower is better


@dataclass(frozen=True)
class Dataset:
    name: str
    description: str
    direction: Direction
    files: int  # regular files, the descriptor excluded
    size_bytes: int
    path: Path


def directory(settings: Settings) -> Path:
    assert settings.datasets_dir is not None
    return settings.datasets_dir


def list_all(settings: Settings) -> list[Dataset]:
    """Every usable dataset, by name. A folder with a broken descriptor is left out (logged)."""
    root = directory(settings)
    if not root.is_dir():
        return []
    found = []
    for entry in sorted(root.iterdir()):
        if not entry.is_dir() or not NAME_RE.match(entry.name):
            continue
        try:
            found.append(_load(entry))
        except exceptions.DatasetMisconfigured as exc:
            log.warning("dataset left out: %s", exc.message)
    return found


def get(settings: Settings, name: str) -> Dataset:
    """The dataset called `name`; `UnknownDataset` if there is none, `DatasetMisconfigured`
    if its descriptor cannot be used."""
    folder = directory(settings) / name
    if not NAME_RE.match(name) or not folder.is_dir():
        raise exceptions.UnknownDataset(f"no dataset named {name!r} on this server")
    return _load(folder)


def _load(folder: Path) -> Dataset:
    description, direction = _read_descriptor(folder)
    files = size = 0
    for path, info in _walk(folder):
        if stat.S_ISREG(info.st_mode) and path != DESCRIPTOR:
            files += 1
            size += info.st_size
    return Dataset(folder.name, description, direction, files, size, folder)


def _read_descriptor(folder: Path) -> tuple[str, Direction]:
    descriptor = folder / DESCRIPTOR
    if not descriptor.is_file():
        return "", Direction.HIGHER
    where = f"dataset {folder.name!r}: {DESCRIPTOR}"
    try:
        values = tomllib.loads(descriptor.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise exceptions.DatasetMisconfigured(f"{where} cannot be read: {exc}") from exc
    description = values.get("description", "")
    if not isinstance(description, str):
        raise exceptions.DatasetMisconfigured(f"{where}: description must be a string")
    direction = values.get("direction", Direction.HIGHER.value)
    if direction not in {d.value for d in Direction}:
        raise exceptions.DatasetMisconfigured(
            f"{where}: direction must be 'higher' or 'lower', not {direction!r}"
        )
    return description.strip()[:DESCRIPTION_MAX_CHARS], Direction(direction)


def _walk(folder: Path) -> list[tuple[str, os.stat_result]]:
    """Every entry under `folder` as (relative POSIX path, lstat), sorted by path.
    Symbolic links are reported, never followed."""
    entries = []
    for top, dirs, names in os.walk(folder, followlinks=False):
        for name in dirs + names:
            full = os.path.join(top, name)
            relative = Path(full).relative_to(folder).as_posix()
            entries.append((relative, os.lstat(full)))
    entries.sort(key=lambda item: item[0])
    return entries


def content_hash(folder: Path) -> str:
    """`sha256:<hex>` over the dataset's tree: every path, its kind, and each file's
    content or each link's target. Any change to a file, a name or a link changes it."""
    digest = hashlib.sha256()
    for relative, info in _walk(folder):
        full = folder / relative
        if stat.S_ISREG(info.st_mode):
            entry = b"file\0" + _digest_of(full, info)
        elif stat.S_ISLNK(info.st_mode):
            entry = b"link\0" + os.readlink(full).encode("utf-8", "surrogateescape")
        elif stat.S_ISDIR(info.st_mode):
            entry = b"dir\0"
        else:
            entry = b"other\0"
        digest.update(relative.encode("utf-8", "surrogateescape") + b"\0" + entry + b"\n")
    return f"sha256:{digest.hexdigest()}"


def _digest_of(path: Path, info: os.stat_result) -> bytes:
    # The change time moves on every write and metadata change (utime included) and
    # cannot be set back; a file changed within the clock's granularity could change
    # again unseen, so such a file is hashed afresh (git's "racy" rule).
    if time.time_ns() - info.st_ctime_ns < RACY_WINDOW_NS:
        return _read_digest(str(path))
    key = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
    return _cached_digest(str(path), key)


@functools.lru_cache(maxsize=FILE_DIGEST_CACHE_ENTRIES)
def _cached_digest(path: str, identity: tuple[int, ...]) -> bytes:
    del identity  # part of the cache key only: a changed file is hashed anew
    return _read_digest(path)


def _read_digest(path: str) -> bytes:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest().encode("ascii")
