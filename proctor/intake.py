"""Checks at submission time: what the upload is, whether its Dockerfile parses and names only
allowed base images, and whether an archive is safe. The checked context is repacked, so the
builder only ever sees members proctor has looked at."""

from __future__ import annotations

import fnmatch
import gzip
import io
import json
import re
import tarfile
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Literal

from proctor import exceptions
from proctor.config import Settings

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

GZIP_MAGIC = b"\x1f\x8b"
GZIP_WBITS = 16 + zlib.MAX_WBITS  # zlib parses and checks the gzip header and trailer itself
GZIP_LEVEL = 6
INFLATE_CHUNK_BYTES = 64 * 1024  # compressed bytes handed to zlib at a time
TAR_BLOCK_BYTES = tarfile.BLOCKSIZE
TAR_MAGIC_OFFSET = 257
TAR_MAGIC = b"ustar"
MAX_SYMLINK_HOPS = 40  # where Linux gives up with ELOOP
DOCKERFILE = "Dockerfile"
FILE_MODE, EXEC_MODE, SYMLINK_MODE = 0o644, 0o755, 0o777  # EXEC_MODE is every directory's too
INSTRUCTIONS = (
    "FROM RUN CMD LABEL MAINTAINER EXPOSE ENV ADD COPY ENTRYPOINT VOLUME USER WORKDIR ARG "
    "ONBUILD STOPSIGNAL HEALTHCHECK SHELL"
).split()
DIRECTIVES = frozenset({"syntax", "escape", "check"})
_DIRECTIVE_RE = re.compile(r"#[ \t]*([A-Za-z][A-Za-z0-9]*)[ \t]*=[ \t]*(.+?)[ \t]*")
_HEREDOC_RE = re.compile(r"(?<!<)<<(?!<)-?[ \t]*[\"']?[A-Za-z_]")  # not `<<<`, a here-string
_ARITHMETIC_RE = re.compile(r"\$\(\(.*?\)\)")  # `$((1<<n))` is a shift, not a heredoc
_STAGE_NAME_RE = re.compile(r"[a-z][a-z0-9_.-]*", re.IGNORECASE)
_ARG_RE = re.compile(r"""([A-Za-z_][A-Za-z0-9_]*)(=(?:[^\s"']+|"[^"]*"|'[^']*')*)?""")
_VARIABLE_RE = re.compile(r"\$(?:([A-Za-z_]\w*)|\{([A-Za-z_]\w*)(?:(:?[-+])([^}]*))?\})")
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_PART = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_REFERENCE_RE = re.compile(  # Docker's image reference grammar, without IPv6 registries
    rf"(?:{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*(?::[0-9]+)?/)?{_COMPONENT}(?:/{_COMPONENT})*"
    r"(?::\w[\w.-]{0,127})?(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-f]{32,})?"
)


@dataclass(frozen=True)
class IntakeLimits:
    """What one submission may weigh, and which base images it may name."""

    max_upload_bytes: int  # the raw upload, as received
    max_context_bytes: int  # the uncompressed archive, and the sum of its files' sizes
    max_context_members: int
    allowed_base_images: tuple[str, ...]  # fnmatch globs; "*" allows all

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
    keyword: str  # upper case, e.g. "FROM"
    value: str  # the rest, continuation lines joined
    line: int  # 1-based line where it starts


@dataclass(frozen=True)
class ImageRef:
    """An image the build takes from outside the Dockerfile, and the line that names it."""

    name: str  # as written, variables resolved
    line: int


@dataclass(frozen=True)
class Submission:
    context: bytes  # gzip tar repacked by proctor, Dockerfile at its root
    dockerfile: str
    base_images: tuple[str, ...]  # external images, in order, deduplicated
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
        stream = _Gunzip(data, limits.max_context_bytes)
        if not _looks_like_tar(stream.peek(TAR_BLOCK_BYTES)):
            stream.drain()  # a bomb or a corrupt stream is reported as such, not as "not a tar"
            raise exceptions.UnsupportedUpload("the gzip upload does not hold a tar archive")
        members = _scan_archive(io.BufferedReader(stream), limits)
        stream.drain()  # all of the stream counts against the limit, and its CRC is checked
        return _accept_archive(members, limits)
    if _looks_like_tar(data[:TAR_BLOCK_BYTES]):
        return _accept_archive(_scan_archive(io.BytesIO(data), limits), limits)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = "\x00"
    if "\x00" in text:
        raise exceptions.UnsupportedUpload(
            "the upload is neither a Dockerfile (UTF-8 text) nor a build context "
            "(a .tar or .tar.gz archive with the Dockerfile at its root); zip is not supported"
        )
    images = _checked_images(text, limits)
    context = _pack({DOCKERFILE: _Member("file", FILE_MODE, 0, data=data)})
    return Submission(context=context, dockerfile=text, base_images=images, kind="dockerfile")


def _checked_images(text: str, limits: IntakeLimits) -> tuple[str, ...]:
    references = image_references(parse_dockerfile(text))
    check_base_images(references, limits.allowed_base_images)
    return tuple(dict.fromkeys(ref.name for ref in references))


# --- Dockerfiles ---------------------------------------------------------------------


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with their first line; a `DockerfileSyntaxError` names the bad line."""
    lines = text.removeprefix("\ufeff").split("\n")
    escape, directives, in_directives = "\\", set[str](), True
    instructions: list[Instruction] = []
    pending: list[str] | None = None
    start = 0
    for number, raw in enumerate(lines, start=1):
        line = raw.rstrip("\r")
        stripped = line.strip()
        directive = _DIRECTIVE_RE.fullmatch(stripped) if in_directives else None
        if directive and directive.group(1).lower() in DIRECTIVES:
            name = directive.group(1).lower()
            if name in directives:
                raise _syntax(number, f"the {name} directive is given twice")
            directives.add(name)
            escape = directive.group(2) if name == "escape" else escape
            if escape not in ("\\", "`"):
                raise _syntax(number, f"escape must be \\ or `, not {escape!r}")
            continue
        in_directives = False  # Docker reads directives only before anything else
        if stripped.startswith("#") or not stripped:
            continue  # inside a continuation too: Docker drops comment and empty lines there
        match = re.search(re.escape(escape) + r"[ \t]*$", line)
        body = line[: match.start()] if match else line
        if pending is None:
            pending, start = [], number
        pending.append(body)  # joined as Docker does: escape removed, nothing inserted
        if not match:
            instructions.append(_instruction("".join(pending), start))
            pending = None
    if pending is not None:
        raise _syntax(start, f"the instruction continues ({escape}) past the end of the file")
    _check_structure(instructions, len(lines))
    return instructions


def _instruction(text: str, line: int) -> Instruction:
    word, value = [*text.split(None, 1), ""][:2]
    keyword, value = word.upper(), value.strip()
    if keyword not in INSTRUCTIONS:
        raise _syntax(line, f"unknown instruction {word!r} (valid: {' '.join(INSTRUCTIONS)})")
    if not value:
        raise _syntax(line, f"{keyword} needs an argument")
    if keyword in ("RUN", "COPY", "ADD") and _HEREDOC_RE.search(_ARITHMETIC_RE.sub("", value)):
        raise _syntax(line, "heredocs (<<EOF) are not supported: put the script in a file")
    flags, words = _flags_and_words(value)
    if keyword == "FROM":
        if bad := [flag for flag in flags if not flag.startswith("--platform=")]:
            raise _syntax(line, f"FROM does not take {bad[0]!r} (only --platform=)")
        if len(words) == 3 and words[1].lower() == "as":
            if not _STAGE_NAME_RE.fullmatch(words[2]):
                raise _syntax(line, f"{words[2]!r} is not a valid stage name")
        elif len(words) != 1:
            raise _syntax(line, "FROM takes an image and an optional AS <name>")
    elif keyword in ("COPY", "ADD") and len(_paths(words)) < 2:
        raise _syntax(line, f"{keyword} needs a source and a destination")
    elif keyword == "ONBUILD":
        if (trigger := value.split()[0].upper()) in ("ONBUILD", "FROM", "MAINTAINER"):
            raise _syntax(line, f"ONBUILD cannot trigger {trigger}")
        _instruction(value, line)
    return Instruction(keyword=keyword, value=value, line=line)


def _flags_and_words(value: str) -> tuple[list[str], list[str]]:
    words = value.split()
    count = next((i for i, word in enumerate(words) if not word.startswith("--")), len(words))
    return words[:count], words[count:]


def _paths(words: list[str]) -> list[str]:
    try:  # the JSON form, COPY ["a b", "/c"], counts its items, not its words
        parsed = json.loads(" ".join(words))
    except ValueError:
        return words
    return [str(item) for item in parsed] if isinstance(parsed, list) else words


def _check_structure(instructions: list[Instruction], last_line: int) -> None:
    stages: set[str] = set()
    for instruction in instructions:
        if instruction.keyword == "FROM":
            words = _flags_and_words(instruction.value)[1]
            name = words[2].lower() if len(words) == 3 else f"#{len(stages)}"
            if name in stages:
                raise _syntax(instruction.line, f"the stage name {words[2]!r} is used twice")
            stages.add(name)
        elif not stages and instruction.keyword != "ARG":
            raise _syntax(instruction.line, f"{instruction.keyword} comes before the first FROM")
    if not stages:
        raise _syntax(last_line, "the Dockerfile has no FROM instruction")


def _syntax(line: int, message: str) -> exceptions.DockerfileSyntaxError:
    return exceptions.DockerfileSyntaxError(f"line {line}: {message}")


# --- base images ---------------------------------------------------------------------


def image_references(instructions: list[Instruction]) -> list[ImageRef]:
    """Every image the build takes from outside the Dockerfile: FROM, COPY --from= and
    RUN --mount=from= (BuildKit pulls an image named there too), with their lines."""
    args: dict[str, str | None] = {}  # ARGs before the first FROM; None: no default
    stages: list[str | None] = []  # lower-cased stage names by index, None when unnamed
    found: list[ImageRef] = []
    for instruction in instructions:
        line = instruction.line
        if instruction.keyword == "ARG" and not stages:
            for name, default in _ARG_RE.findall(instruction.value):
                unquoted = default[1:].replace('"', "").replace("'", "")
                args[name] = _expand(unquoted, args, line, strict=False) if default else None
        elif instruction.keyword == "FROM":
            words = _flags_and_words(instruction.value)[1]
            image = _expand(words[0], args, line, strict=True)
            if image.lower() != "scratch" and image.lower() not in stages:
                found.append(_reference(image, line))
            stages.append(words[2].lower() if len(words) == 3 else None)
        for source in _sources(instruction):
            if not source or (source.isdigit() and int(source) >= len(stages) - 1):
                raise _syntax(line, f"--from={source} is not an earlier stage")
            if not source.isdigit() and source.lower() not in stages:
                # Builders disagree on which variables apply here; refusing them is safe.
                if "$" in source:
                    raise _syntax(line, f"variables are not supported in --from ({source})")
                found.append(_reference(source, line))
    return found


def _sources(instruction: Instruction) -> Iterator[str]:
    for flag in _flags_and_words(instruction.value)[0]:
        if instruction.keyword == "COPY" and flag.startswith("--from="):
            yield flag.removeprefix("--from=")
        elif instruction.keyword == "RUN" and flag.startswith("--mount="):
            for option in flag.removeprefix("--mount=").split(","):
                if option.startswith("from="):
                    yield option.removeprefix("from=")


def _reference(image: str, line: int) -> ImageRef:
    if not _REFERENCE_RE.fullmatch(image):
        raise _syntax(line, f"{image!r} is not a valid image reference")
    return ImageRef(image, line)


def _expand(word: str, values: Mapping[str, str | None], line: int, *, strict: bool) -> str:
    """`$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:+alt}`, `${VAR+alt}`,
    as Docker expands them. An unset variable is an error when `strict`, else empty."""

    def substitute(match: re.Match[str]) -> str:
        name, operator, operand = match[1] or match[2], match[3] or "", match[4] or ""
        value = values.get(name)  # None: never declared, or declared without a default
        missing = value is None or (operator.startswith(":") and value == "")
        if operator.endswith("-"):
            return _expand(operand, values, line, strict=strict) if missing else value or ""
        if operator.endswith("+"):
            return "" if missing else _expand(operand, values, line, strict=strict)
        if value is None and strict:
            raise _syntax(line, f"${name} has no value: give it a default with ARG {name}=...")
        return value or ""

    return _VARIABLE_RE.sub(substitute, word)


def normalised_names(image: str) -> frozenset[str]:
    """The spellings of one image: `busybox`, `busybox:latest`, `docker.io/library/busybox`…"""
    rest, at, digest = image.partition("@")
    colon = rest.rfind(":")
    repository, tag = (rest[:colon], rest[colon:]) if colon > rest.rfind("/") else (rest, "")
    first, slash, remainder = repository.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        domain, path = ("docker.io" if first == "index.docker.io" else first), remainder
    else:
        domain, path = "docker.io", repository
    if domain == "docker.io" and "/" not in path:
        path = f"library/{path}"
    canonical = f"{domain}/{path}"
    familiar = path.removeprefix("library/") if domain == "docker.io" else canonical
    suffixes = (tag + at + digest,) if tag or at else ("", ":latest")  # no tag means latest
    return frozenset({image} | {name + end for name in (canonical, familiar) for end in suffixes})


def base_images(instructions: list[Instruction]) -> tuple[str, ...]:
    """The external images of `image_references`, in order, deduplicated."""
    return tuple(dict.fromkeys(ref.name for ref in image_references(instructions)))


def check_base_images(images: Iterable[ImageRef | str], patterns: Sequence[str]) -> None:
    """Every image must match a glob, as written or in one of its normalised spellings."""
    for image in images:
        ref = image if isinstance(image, ImageRef) else ImageRef(image, 0)
        names = normalised_names(ref.name)
        if not any(fnmatch.fnmatchcase(name, p) for name in names for p in patterns):
            where = f"line {ref.line}: " if ref.line else ""
            raise exceptions.BaseImageNotAllowed(
                f"{where}base image {ref.name!r} is not allowed "
                f"(allowed: {', '.join(patterns) or 'none'})"
            )


# --- archives ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Member:
    kind: Literal["file", "dir", "symlink"]
    mode: int  # already normalised
    mtime: int
    data: bytes = b""
    target: str = ""  # a symlink's


class _Gunzip(io.RawIOBase):
    """Inflates gzip data while it is read and stops once the output passes `limit` bytes:
    a decompression bomb costs `limit` bytes of work, never `limit` bytes of memory."""

    def __init__(self, data: bytes, limit: int) -> None:
        super().__init__()
        self._data, self._offset = memoryview(data), 0
        self._limit, self._total = limit, 0
        self._inflater = zlib.decompressobj(GZIP_WBITS)
        self._done = False
        self._head = b""  # inflated but not yet read

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        self._head = self._head or self._inflate(len(view))
        size = min(len(view), len(self._head))
        view[:size], self._head = self._head[:size], self._head[size:]
        return size

    def peek(self, size: int) -> bytes:
        while len(self._head) < size and not self._done:
            self._head += self._inflate(size - len(self._head))
        return self._head[:size]

    def drain(self) -> None:
        while not self._done:
            self._inflate(INFLATE_CHUNK_BYTES)

    def _inflate(self, size: int) -> bytes:
        """Up to `size` more bytes; empty only at the end of the data."""
        while not self._done:
            source: bytes | memoryview = self._inflater.unconsumed_tail
            if not source:
                source = self._data[self._offset : self._offset + INFLATE_CHUNK_BYTES]
                self._offset += len(source)
            try:
                out = self._inflater.decompress(source, size)
            except zlib.error as exc:
                raise exceptions.UnreadableUpload(f"the gzip data is corrupt ({exc})") from exc
            self._total += len(out)
            if self._total > self._limit:
                raise exceptions.UploadTooLarge(
                    f"the archive unpacks to more than the {self._limit}-byte limit"
                )
            if self._inflater.eof:
                self._next_member()
            elif not out and not source:
                raise exceptions.UnreadableUpload("the gzip data is truncated")
            if out:
                return out
        return b""

    def _next_member(self) -> None:
        # gzip allows several members in a row (pigz, cat a.gz b.gz); zero padding is common.
        self._offset -= len(self._inflater.unused_data)
        rest = self._data[self._offset :]
        if bytes(rest[: len(GZIP_MAGIC)]) == GZIP_MAGIC:
            self._inflater = zlib.decompressobj(GZIP_WBITS)
        elif any(rest):
            raise exceptions.UnreadableUpload("the upload has data after its gzip stream")
        else:
            self._done = True


def _looks_like_tar(head: bytes) -> bool:
    if head[TAR_MAGIC_OFFSET : TAR_MAGIC_OFFSET + len(TAR_MAGIC)] == TAR_MAGIC:
        return True
    try:  # an old (v7) tar has no magic, only a header checksum
        tarfile.TarInfo.frombuf(head, "utf-8", "surrogateescape")
    except tarfile.HeaderError:
        return False
    return True


def _scan_archive(stream: IO[bytes], limits: IntakeLimits) -> dict[str, _Member]:
    """Read each member once, in order, never extracting; refuse anything unsafe."""
    members: dict[str, _Member] = {}
    total = 0
    try:
        with tarfile.open(
            fileobj=stream, mode="r|", encoding="utf-8", errors="surrogateescape"
        ) as archive:
            for count, info in enumerate(archive, start=1):
                if count > limits.max_context_members:
                    raise exceptions.UploadTooLarge(
                        f"the archive has more than {limits.max_context_members} members"
                    )
                name = _member_name(info.name)
                if name in members:
                    raise exceptions.UnsafeArchive(f"member {name!r} appears more than once")
                total += info.size if info.isreg() else 0  # before reading any of it
                member = _member(archive, info, name, members)
                total += len(member.data) if info.islnk() else 0  # a link becomes a copy
                if total > limits.max_context_bytes:
                    raise exceptions.UploadTooLarge(
                        f"the archive's files add up to more than the "
                        f"{limits.max_context_bytes}-byte limit"
                    )
                if name != ".":
                    members[name] = member
    except tarfile.TarError as exc:
        raise exceptions.UnreadableUpload(f"the tar archive cannot be read ({exc})") from exc
    _check_paths(members)
    return members


def _member(
    archive: tarfile.TarFile, info: tarfile.TarInfo, name: str, members: dict[str, _Member]
) -> _Member:
    if info.isdir():
        return _Member("dir", EXEC_MODE, int(info.mtime))
    if name == ".":
        raise exceptions.UnsafeArchive(f"member {info.name!r} has no name")
    if info.isreg():
        extracted = archive.extractfile(info)
        assert extracted is not None  # a regular member always has data
        # setuid, setgid and sticky bits, and write access for others, never reach the build.
        mode = EXEC_MODE if info.mode & 0o111 else FILE_MODE
        return _Member("file", mode, int(info.mtime), data=extracted.read())
    if info.issym():
        _check_utf8(info.linkname, f"the target of symlink {name!r}")
        if not info.linkname or info.linkname.startswith("/"):
            raise exceptions.UnsafeArchive(
                f"symlink {name!r} points to the absolute path {info.linkname!r}"
            )
        return _Member("symlink", SYMLINK_MODE, int(info.mtime), target=info.linkname)
    if info.islnk():
        try:
            target = members.get(_member_name(info.linkname))
        except exceptions.UnsafeArchive:  # an absolute or `..` target is never a member
            target = None
        if target is None or target.kind != "file":
            raise exceptions.UnsafeArchive(
                f"hard link {name!r} points to {info.linkname!r}, "
                "which is not an earlier regular file of the archive"
            )
        return target  # stored as a copy of the file it links to
    kinds = {tarfile.CHRTYPE: "character device", tarfile.BLKTYPE: "block device"}
    kind = kinds.get(info.type, "FIFO" if info.isfifo() else f"special file ({info.type!r})")
    raise exceptions.UnsafeArchive(f"member {name!r} is a {kind}")


def _member_name(name: str) -> str:
    _check_utf8(name, f"the name of member {name!r}")
    if name.startswith("/"):
        raise exceptions.UnsafeArchive(f"member {name!r} has an absolute path")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise exceptions.UnsafeArchive(f"member {name!r} leaves the build context (..)")
    return "/".join(parts) or "."


def _check_utf8(text: str, what: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:  # tarfile keeps bytes that are not UTF-8 as surrogates
        raise exceptions.UnsafeArchive(f"{what} is not valid UTF-8") from exc


def _check_paths(members: dict[str, _Member]) -> None:
    """No member below a file or a symlink (a write through a link), no link that leaves."""
    for name, member in members.items():
        parts = name.split("/")
        for depth in range(1, len(parts)):
            parent = members.get("/".join(parts[:depth]))
            if parent is not None and parent.kind != "dir":
                raise exceptions.UnsafeArchive(
                    f"member {name!r} lies under the {parent.kind} {'/'.join(parts[:depth])!r}"
                )
        if member.kind == "symlink":
            _follow(name, members)


def _follow(name: str, members: dict[str, _Member]) -> None:
    """Resolve a symlink through the archive's own links, as the kernel would: a link that
    points at another link, then `..`, must not climb above the context root."""
    hops = 0

    def walk(parts: list[str], target: str) -> list[str]:
        nonlocal hops
        for part in target.split("/"):
            if part == ".." and not parts:
                raise exceptions.UnsafeArchive(
                    f"symlink {name!r} points outside the build context ({members[name].target!r})"
                )
            if part == "..":
                parts = parts[:-1]
            elif part not in ("", "."):
                parts = [*parts, part]
                link = members.get("/".join(parts))
                if link is not None and link.kind == "symlink":
                    hops += 1
                    if hops > MAX_SYMLINK_HOPS:
                        raise exceptions.UnsafeArchive(f"symlink {name!r} is part of a loop")
                    parts = walk(parts[:-1], link.target)
        return parts

    walk(name.split("/")[:-1], members[name].target)


def _accept_archive(members: dict[str, _Member], limits: IntakeLimits) -> Submission:
    dockerfile = members.get(DOCKERFILE)
    if dockerfile is None or dockerfile.kind != "file":
        raise exceptions.RejectedSubmission("the archive has no Dockerfile at its root")
    try:
        text = dockerfile.data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = dockerfile.data[: exc.start].count(b"\n") + 1
        raise _syntax(line, "the Dockerfile is not UTF-8 text") from exc
    if "\x00" in text:
        raise _syntax(text[: text.index("\x00")].count("\n") + 1, "the Dockerfile holds NUL")
    images = _checked_images(text, limits)
    return Submission(context=_pack(members), dockerfile=text, base_images=images, kind="archive")


def _pack(members: Mapping[str, _Member]) -> bytes:
    """A deterministic gzip tar of checked members: sorted, owned by root, modes normalised."""
    buffer = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=buffer, mode="wb", compresslevel=GZIP_LEVEL, mtime=0) as zipped,
        tarfile.open(fileobj=zipped, mode="w|", format=tarfile.PAX_FORMAT) as archive,
    ):
        for name, member in sorted(members.items()):
            info = tarfile.TarInfo(name)
            info.mode, info.mtime, info.uid, info.gid = member.mode, member.mtime, 0, 0
            info.uname = info.gname = ""
            if member.kind == "dir":
                info.type = tarfile.DIRTYPE
            elif member.kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, member.target
            info.size = len(member.data)
            archive.addfile(info, io.BytesIO(member.data) if member.kind == "file" else None)
    return buffer.getvalue()
