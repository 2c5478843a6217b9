"""Checks at submission time: what the upload is, whether its Dockerfile parses and names
allowed base images, and whether an archive is safe. The checked context is repacked, so
the builder only ever sees members proctor has looked at."""

from __future__ import annotations

import fnmatch
import gzip
import io
import posixpath
import re
import tarfile
import zlib
from dataclasses import dataclass
from typing import Literal

from proctor import exceptions
from proctor.config import Settings

GZIP_MAGIC = b"\x1f\x8b"
TAR_MAGIC_OFFSET = 257
TAR_MAGIC = b"ustar"
READ_CHUNK_BYTES = 64 * 1024
GZIP_LEVEL = 6
DOCKERFILE = "Dockerfile"
FILE_MODE = 0o644
EXEC_MODE = 0o755
INSTRUCTIONS = frozenset(
    "FROM RUN CMD LABEL MAINTAINER EXPOSE ENV ADD COPY ENTRYPOINT VOLUME USER WORKDIR ARG "
    "ONBUILD STOPSIGNAL HEALTHCHECK SHELL".split()
)
_DIRECTIVE_RE = re.compile(r"^#\s*([a-zA-Z][a-zA-Z0-9_-]*)\s*=\s*(.*?)\s*$")
_VARIABLE_RE = re.compile(
    r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?::?[-+]([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))"
)
_HEREDOC_RE = re.compile(r"<<-?\s*[\"']?[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class IntakeLimits:
    max_upload_bytes: int
    max_context_bytes: int
    max_context_members: int
    allowed_base_images: tuple[str, ...]

    @classmethod
    def from_settings(cls, settings: Settings) -> IntakeLimits:
        return cls(
            max_upload_bytes=settings.max_upload_bytes,
            max_context_bytes=settings.max_context_bytes,
            max_context_members=settings.max_context_members,
            allowed_base_images=tuple(settings.allowed_base_images),
        )


@dataclass(frozen=True)
class Instruction:
    keyword: str
    value: str
    line: int


@dataclass(frozen=True)
class Submission:
    context: bytes
    dockerfile: str
    base_images: tuple[str, ...]
    kind: Literal["dockerfile", "archive"]


def read_submission(data: bytes, limits: IntakeLimits) -> Submission:
    """Tell a Dockerfile from an archive by content, check it, and repack its context."""
    if not data:
        raise exceptions.UnreadableUpload("the upload is empty")
    if len(data) > limits.max_upload_bytes:
        raise exceptions.UploadTooLarge(
            f"the upload is {len(data)} bytes, over the {limits.max_upload_bytes}-byte limit"
        )
    if data.startswith(GZIP_MAGIC):
        raw = _gunzip(data, limits.max_context_bytes)
        if not _is_tar(raw):
            raise exceptions.UnsupportedUpload("the gzip upload does not hold a tar archive")
        return _read_archive(raw, limits)
    if _is_tar(data):
        return _read_archive(data, limits)
    text = _as_text(data)
    if text is None:
        raise exceptions.UnsupportedUpload(
            "the upload is neither a Dockerfile (UTF-8 text) nor a .tar/.tar.gz build context"
        )
    instructions = parse_dockerfile(text)
    check_base_images(instructions, limits.allowed_base_images)
    return Submission(
        context=_pack({DOCKERFILE: (text.encode(), FILE_MODE)}),
        dockerfile=text,
        base_images=base_images(instructions),
        kind="dockerfile",
    )


# --- Dockerfiles ---------------------------------------------------------------------


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with their first line; `DockerfileSyntaxError` names the bad line."""
    lines = text.splitlines()
    escape = "\\"
    instructions: list[Instruction] = []
    in_directives = True
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(lines, start=1):
        stripped = raw.strip()
        if in_directives:
            directive = _DIRECTIVE_RE.match(stripped)
            if directive and directive.group(1).lower() == "escape":
                escape = directive.group(2)
                if escape not in ("\\", "`"):
                    raise _syntax(number, f"escape must be \\ or `, not {escape!r}")
                continue
            if directive:
                continue
            in_directives = False
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # comments inside a continued instruction are dropped, as Docker does
        if not pending:
            start = number
        if stripped.endswith(escape):
            pending.append(stripped[: -len(escape)].rstrip())
            continue
        pending.append(stripped)
        instructions.append(_instruction(" ".join(part for part in pending if part), start))
        pending = []
    if pending:
        raise _syntax(start, "the instruction continues past the end of the file")
    _check_order(instructions)
    return instructions


def _instruction(text: str, line: int) -> Instruction:
    keyword, _, value = text.partition(" ")
    keyword, value = keyword.upper(), value.strip()
    if keyword not in INSTRUCTIONS:
        raise _syntax(line, f"unknown instruction {keyword.lower()!r}")
    if not value:
        raise _syntax(line, f"{keyword} needs an argument")
    if keyword in ("RUN", "COPY", "ADD") and _HEREDOC_RE.search(value):
        raise _syntax(line, "heredocs (<<EOF) are not supported")
    return Instruction(keyword=keyword, value=value, line=line)


def _check_order(instructions: list[Instruction]) -> None:
    for instruction in instructions:
        if instruction.keyword == "FROM":
            return
        if instruction.keyword != "ARG":
            raise _syntax(instruction.line, f"{instruction.keyword} comes before the first FROM")
    raise exceptions.DockerfileSyntaxError("the Dockerfile has no FROM instruction")


def _syntax(line: int, message: str) -> exceptions.DockerfileSyntaxError:
    return exceptions.DockerfileSyntaxError(f"line {line}: {message}")


def base_images(instructions: list[Instruction]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(image for image, _ in _external_images(instructions)))


def _external_images(instructions: list[Instruction]) -> list[tuple[str, int]]:
    """Images from outside the Dockerfile (FROM and COPY --from), with their line."""
    args: dict[str, str] = {}
    stages: set[str] = set()
    found: list[tuple[str, int]] = []
    seen_from = False
    for instruction in instructions:
        if instruction.keyword == "ARG" and not seen_from:
            name, _, default = instruction.value.partition("=")
            args[name.strip()] = default.strip().strip("\"'")
        elif instruction.keyword == "FROM":
            seen_from = True
            words = [w for w in instruction.value.split() if not w.startswith("--")]
            image = _resolve(words[0], args, instruction.line)
            if len(words) == 3 and words[1].lower() == "as":
                stages.add(words[2].lower())
            elif len(words) != 1:
                raise _syntax(instruction.line, "FROM takes an image and an optional AS name")
            if image.lower() not in stages and image.lower() != "scratch":
                found.append((image, instruction.line))
        elif instruction.keyword == "COPY":
            for word in instruction.value.split():
                if word.startswith("--from="):
                    source = word.removeprefix("--from=")
                    if source.lower() not in stages and not source.isdigit():
                        found.append((source, instruction.line))
    return found


def _resolve(word: str, args: dict[str, str], line: int) -> str:
    def substitute(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(3)
        if args.get(name):
            return args[name]
        if match.group(2) is not None and ":-" in match.group(0):
            return match.group(2)
        raise _syntax(line, f"FROM uses ${name}, which has no default value")

    return _VARIABLE_RE.sub(substitute, word)


def normalised_names(image: str) -> set[str]:
    """The ways one image may be written: `busybox`, `busybox:latest`, `docker.io/library/…`."""
    names = {image}
    name, tagged = image, image
    last = image.rsplit("/", 1)[-1]
    if ":" not in last and "@" not in last:
        tagged = f"{image}:latest"
        names.add(tagged)
    first = name.split("/", 1)[0]
    if "/" not in name:
        names.add(f"docker.io/library/{tagged}")
    elif "." not in first and ":" not in first and first != "localhost":
        names.add(f"docker.io/{tagged}")
    return names


def check_base_images(instructions: list[Instruction], patterns: tuple[str, ...]) -> None:
    for image, line in _external_images(instructions):
        names = normalised_names(image)
        if not any(fnmatch.fnmatchcase(n, p) for n in names for p in patterns):
            allowed = ", ".join(patterns) or "(none)"
            raise exceptions.BaseImageNotAllowed(
                f"line {line}: base image {image!r} is not allowed; allowed: {allowed}"
            )


# --- archives ------------------------------------------------------------------------


def _gunzip(data: bytes, limit: int) -> bytes:
    """Inflate at most `limit` bytes: a decompression bomb stops here, not in memory."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    out = bytearray()
    view = memoryview(data)
    try:
        for offset in range(0, len(data), READ_CHUNK_BYTES):
            out += inflater.decompress(
                view[offset : offset + READ_CHUNK_BYTES], limit + 1 - len(out)
            )
            if len(out) > limit or inflater.unconsumed_tail:
                raise exceptions.UploadTooLarge(
                    f"the archive unpacks to more than the {limit}-byte limit"
                )
        out += inflater.flush()
    except zlib.error as exc:
        raise exceptions.UnreadableUpload(f"the gzip data is corrupt: {exc}") from exc
    if not inflater.eof:
        raise exceptions.UnreadableUpload("the gzip data is truncated")
    if len(out) > limit:
        raise exceptions.UploadTooLarge(f"the archive unpacks to more than the {limit}-byte limit")
    return bytes(out)


def _is_tar(data: bytes) -> bool:
    return data[TAR_MAGIC_OFFSET : TAR_MAGIC_OFFSET + len(TAR_MAGIC)] == TAR_MAGIC


def _as_text(data: bytes) -> str | None:
    if b"\x00" in data:
        return None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None


def _read_archive(raw: bytes, limits: IntakeLimits) -> Submission:
    files: dict[str, tuple[bytes, int]] = {}
    links: dict[str, str] = {}
    dirs: set[str] = set()
    total = 0
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as archive:
            for count, member in enumerate(archive, start=1):
                if count > limits.max_context_members:
                    raise exceptions.UploadTooLarge(
                        f"the archive has more than {limits.max_context_members} members"
                    )
                name = _member_name(member.name)
                if name in files or name in links or (name in dirs and not member.isdir()):
                    raise exceptions.UnsafeArchive(f"member {name!r} appears twice")
                if member.isdir():
                    dirs.add(name)
                elif member.isfile():
                    total += member.size
                    if total > limits.max_context_bytes:
                        raise exceptions.UploadTooLarge(
                            f"the archive unpacks to more than the "
                            f"{limits.max_context_bytes}-byte limit"
                        )
                    extracted = archive.extractfile(member)
                    assert extracted is not None
                    files[name] = (extracted.read(), _mode(member.mode))
                elif member.issym():
                    links[name] = _symlink_target(name, member.linkname)
                elif member.islnk():
                    target = _member_name(member.linkname)
                    if target not in files:
                        raise exceptions.UnsafeArchive(
                            f"hard link {name!r} points to {member.linkname!r}, "
                            "which is not an earlier file of the archive"
                        )
                    files[name] = files[target]
                else:
                    raise exceptions.UnsafeArchive(
                        f"member {name!r} is a device, FIFO or other special file"
                    )
    except tarfile.TarError as exc:
        raise exceptions.UnreadableUpload(f"the tar archive cannot be read: {exc}") from exc
    if DOCKERFILE not in files:
        raise exceptions.RejectedSubmission("the archive has no Dockerfile at its root")
    text = _as_text(files[DOCKERFILE][0])
    if text is None:
        raise exceptions.DockerfileSyntaxError("the archive's Dockerfile is not UTF-8 text")
    instructions = parse_dockerfile(text)
    check_base_images(instructions, limits.allowed_base_images)
    return Submission(
        context=_pack(files, links, dirs),
        dockerfile=text,
        base_images=base_images(instructions),
        kind="archive",
    )


def _member_name(name: str) -> str:
    if name.startswith("/"):
        raise exceptions.UnsafeArchive(f"member {name!r} has an absolute path")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise exceptions.UnsafeArchive(f"member {name!r} leaves the build context (..)")
    if not parts:
        return "."
    return "/".join(parts)


def _symlink_target(name: str, target: str) -> str:
    if target.startswith("/"):
        raise exceptions.UnsafeArchive(f"symlink {name!r} points to the absolute path {target!r}")
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
    if resolved == ".." or resolved.startswith("../"):
        raise exceptions.UnsafeArchive(f"symlink {name!r} points outside the build context")
    return target


def _mode(mode: int) -> int:
    # setuid, setgid and sticky bits, and write access for others, never reach the builder.
    return EXEC_MODE if mode & 0o111 else FILE_MODE


def _pack(
    files: dict[str, tuple[bytes, int]],
    links: dict[str, str] | None = None,
    dirs: set[str] | None = None,
) -> bytes:
    """A deterministic gzip tar of the checked members, owned by root, modes normalised."""
    buffer = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=buffer, mode="wb", compresslevel=GZIP_LEVEL, mtime=0) as zipped,
        tarfile.open(fileobj=zipped, mode="w:", format=tarfile.PAX_FORMAT) as archive,
    ):
        for name in sorted((dirs or set()) - {"."}):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, EXEC_MODE
            archive.addfile(info)
        for name, (data, mode) in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            archive.addfile(info, io.BytesIO(data))
        for name, target in sorted((links or {}).items()):
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.mode = tarfile.SYMTYPE, target, 0o777
            archive.addfile(info)
    return buffer.getvalue()
