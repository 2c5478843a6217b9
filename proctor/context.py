"""Client side of a submission: a file as it is, or a directory packed as a build context."""

from __future__ import annotations

import gzip
import io
import os
import stat
import tarfile
from pathlib import Path
from typing import Any

import pathspec

from proctor import exceptions

DOCKERFILE = "Dockerfile"
DOCKERIGNORE = ".dockerignore"
GZIP_LEVEL = 6
ALWAYS_SENT = frozenset({DOCKERFILE, DOCKERIGNORE})


def pack_path(path: Path) -> bytes:
    """The bytes to upload for PATH: a file unchanged, a directory as a .tar.gz context."""
    if path.is_file():
        return path.read_bytes()
    if not path.is_dir():
        raise exceptions.SubmissionError(f"{path} is neither a file nor a directory")
    if not (path / DOCKERFILE).is_file():
        raise exceptions.SubmissionError(f"{path} has no {DOCKERFILE}")
    return _pack_directory(path, _ignore_spec(path))


def _ignore_spec(root: Path) -> pathspec.PathSpec[Any]:
    ignore_file = root / DOCKERIGNORE
    lines = ignore_file.read_text().splitlines() if ignore_file.is_file() else []
    # Docker anchors every pattern at the context root; gitignore patterns without a slash
    # match at any depth, so anchor them explicitly.
    anchored = []
    for line in lines:
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        body = pattern[1:] if negate else pattern
        body = "/" + body.lstrip("/")
        anchored.append(("!" if negate else "") + body)
    return pathspec.PathSpec.from_lines("gitwildmatch", anchored)


def _pack_directory(root: Path, ignore: pathspec.PathSpec[Any]) -> bytes:
    buffer = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=buffer, mode="wb", compresslevel=GZIP_LEVEL, mtime=0) as zipped,
        tarfile.open(fileobj=zipped, mode="w:", format=tarfile.PAX_FORMAT) as archive,
    ):
        for relative in _walk(root, ignore):
            info = archive.gettarinfo(str(root / relative), arcname=relative)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if info.isfile():
                with open(root / relative, "rb") as handle:
                    archive.addfile(info, handle)
            else:
                archive.addfile(info)
    return buffer.getvalue()


def _walk(root: Path, ignore: pathspec.PathSpec[Any]) -> list[str]:
    kept: list[str] = []
    for directory, subdirs, files in os.walk(root):
        subdirs.sort()
        base = Path(directory).relative_to(root)
        for name in sorted([*subdirs, *files]):
            relative = (base / name).as_posix()
            full = root / relative
            mode = full.lstat().st_mode
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISLNK(mode)):
                continue  # sockets, FIFOs and devices are never part of a context
            if relative in ALWAYS_SENT or not ignore.match_file(relative):
                kept.append(relative)
    return kept
