"""The client side of a submission: turn the path given to `proctor submit` into upload bytes,
tarring a directory the way `docker build` sends its context (honouring `.dockerignore`)."""

from __future__ import annotations

import gzip
import io
import os
import posixpath
import re
import stat
import tarfile
from collections.abc import Sequence
from pathlib import Path

import pathspec

from proctor import exceptions

DOCKERFILE = "Dockerfile"
DOCKERIGNORE = ".dockerignore"
ALWAYS_SENT = frozenset({DOCKERFILE, DOCKERIGNORE})  # Docker sends both even if ignored
GZIP_LEVEL = 6
# pathspec 1.0 renamed its gitignore-style patterns from "gitwildmatch" to "gitignore" and
# made the old name warn; the new name alone would mean a different class on pathspec 0.12.
PATTERN_STYLE = "gitignore" if int(pathspec.__version__.split(".")[0]) >= 1 else "gitwildmatch"


def pack_path(path: Path) -> bytes:
    """A file as it is (a Dockerfile or an archive the server inspects); a directory as a
    gzip tar of its context. Raises `SubmissionError` when there is nothing to send."""
    try:
        if path.is_file():
            return path.read_bytes()
        if not path.is_dir():
            raise exceptions.SubmissionError(f"{path} is neither a file nor a directory")
        if not (path / DOCKERFILE).is_file():
            raise exceptions.SubmissionError(
                f"{path} has no {DOCKERFILE}: a build context directory needs one at its root"
            )
        return _pack_directory(path, _ignore_patterns(path / DOCKERIGNORE))
    except OSError as exc:
        raise exceptions.SubmissionError(f"cannot read {exc.filename or path}: {exc}") from exc


def _ignore_patterns(ignore_file: Path) -> Sequence[pathspec.Pattern]:
    """`.dockerignore` lines compiled by pathspec, in order. Docker's patterns are anchored
    at the context root (`*.py` is top-level files only, `**/*.py` is every level) and are
    cleaned like paths (a leading or trailing `/` means nothing); gitignore patterns mean the
    same once each one starts with `/`. Accepted difference: bracket classes and escapes
    follow gitignore's rules rather than Go's filepath.Match; both cover `[abc]`, `[!a]`, `\\`."""
    if not ignore_file.is_file():
        return []
    patterns: list[str] = []
    try:
        lines = ignore_file.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        raise exceptions.SubmissionError(f"{ignore_file} is not UTF-8 text") from exc
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate, pattern = line.startswith("!"), line.removeprefix("!").strip()
        pattern = posixpath.normpath(pattern).lstrip("/")
        if pattern and pattern != ".":
            patterns.append(("!/" if negate else "/") + pattern)
    try:
        return pathspec.PathSpec.from_lines(PATTERN_STYLE, patterns).patterns
    except (ValueError, re.error) as exc:  # pathspec's errors, or a bad range like [z-a]
        raise exceptions.SubmissionError(f"{ignore_file} has an invalid pattern: {exc}") from exc


def _excluded(name: str, patterns: Sequence[pathspec.Pattern]) -> bool:
    """Docker's rule, not git's: every pattern that matches the path or one of its parent
    directories decides in turn, the last one wins, so a `!` pattern can bring back a file
    below an excluded directory."""
    if name in ALWAYS_SENT:
        return False
    parts = name.split("/")
    candidates = ["/".join(parts[: depth + 1]) for depth in range(len(parts))]
    excluded = False
    for pattern in patterns:
        if any(pattern.match_file(candidate) is not None for candidate in candidates):
            excluded = bool(pattern.include)
    return excluded


def _pack_directory(root: Path, patterns: Sequence[pathspec.Pattern]) -> bytes:
    """A deterministic gzip tar: sorted names, owner root, no ./ prefix, gzip mtime 0."""
    # Without `!` patterns nothing below an excluded directory can come back: skip it whole.
    prune = all(pattern.include for pattern in patterns)
    names: list[str] = []
    for directory, dirnames, filenames in os.walk(root, onerror=_raise):
        relative_dir = Path(directory).relative_to(root).as_posix()
        for entry in [*dirnames, *filenames]:
            name = entry if relative_dir == "." else f"{relative_dir}/{entry}"
            if not _excluded(name, patterns):
                names.append(name)
            elif prune and entry in dirnames:
                dirnames.remove(entry)  # os.walk does not descend into what is removed here
    buffer = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=buffer, mode="wb", compresslevel=GZIP_LEVEL, mtime=0) as zipped,
        tarfile.open(fileobj=zipped, mode="w|", format=tarfile.PAX_FORMAT) as archive,
    ):
        for name in sorted(names):
            _add(archive, root / name, name, follow=name == DOCKERFILE)
    return buffer.getvalue()


def _raise(error: OSError) -> None:
    raise error  # os.walk would skip an unreadable directory without a word


def _add(archive: tarfile.TarFile, path: Path, name: str, *, follow: bool) -> None:
    """One entry; a symlink stays a symlink (the server judges it), except the Dockerfile,
    which Docker reads through a link. Sockets, FIFOs and devices are skipped."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise exceptions.SubmissionError(
            f"{str(path)!r}: the file name is not valid UTF-8"
        ) from exc
    status = path.stat() if follow else path.lstat()
    info = tarfile.TarInfo(name)
    info.mtime, info.mode = int(status.st_mtime), stat.S_IMODE(status.st_mode)
    info.uid, info.gid, info.uname, info.gname = 0, 0, "", ""
    if stat.S_ISLNK(status.st_mode):
        info.type, info.linkname = tarfile.SYMTYPE, os.readlink(path)
        archive.addfile(info)
    elif stat.S_ISDIR(status.st_mode):
        info.type = tarfile.DIRTYPE
        archive.addfile(info)
    elif stat.S_ISREG(status.st_mode):
        info.size = status.st_size
        with path.open("rb") as handle:
            archive.addfile(info, handle)
