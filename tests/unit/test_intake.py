"""Submission checks: detection by content, Dockerfile parsing, allowlist, archive safety."""

from __future__ import annotations

import gzip
import io
import tarfile
import zipfile
import zlib
from collections.abc import Callable

import pytest

from proctor import exceptions
from proctor.intake import (
    IntakeLimits,
    base_images,
    normalised_names,
    parse_dockerfile,
    read_submission,
)

MB = 1024 * 1024
LIMITS = IntakeLimits(
    max_upload_bytes=8 * MB,
    max_context_bytes=10 * MB,
    max_context_members=50,
    allowed_base_images=("*",),
)
DOCKERFILE = 'FROM proctor/busybox:latest\nCMD ["true"]\n'

Member = Callable[[tarfile.TarFile], None]


def file_member(name: str, data: bytes | str = b"x", mode: int = 0o644) -> Member:
    def add(archive: tarfile.TarFile) -> None:
        payload = data.encode() if isinstance(data, str) else data
        info = tarfile.TarInfo(name)
        info.size, info.mode = len(payload), mode
        archive.addfile(info, io.BytesIO(payload))

    return add


def special_member(name: str, kind: bytes, linkname: str = "") -> Member:
    def add(archive: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.type, info.linkname = kind, linkname
        archive.addfile(info)

    return add


def make_tar(*members: Member, compress: bool = False) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz" if compress else "w") as archive:
        for add in members:
            add(archive)
    return buffer.getvalue()


def context_of(submission_context: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(submission_context), mode="r:gz") as archive:
        return {member.name: member for member in archive}


# --- detection -----------------------------------------------------------------------


def test_read_submission_plain_dockerfile() -> None:
    submission = read_submission(DOCKERFILE.encode(), LIMITS)

    assert submission.kind == "dockerfile"
    assert submission.base_images == ("proctor/busybox:latest",)
    assert list(context_of(submission.context)) == ["Dockerfile"]


@pytest.mark.parametrize("compress", [False, True])
def test_read_submission_archive_by_content(compress: bool) -> None:
    data = make_tar(
        file_member("./Dockerfile", DOCKERFILE), file_member("app/x.py"), compress=compress
    )

    submission = read_submission(data, LIMITS)

    assert submission.kind == "archive"
    assert set(context_of(submission.context)) == {"Dockerfile", "app/x.py"}


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", exceptions.UnreadableUpload),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", exceptions.UnsupportedUpload),
        (b"\xff\xfe\xfa garbage", exceptions.UnsupportedUpload),
        (b"\x1f\x8b\x08\x00garbage-not-deflate", exceptions.UnreadableUpload),
        (gzip.compress(b"just text, not a tar"), exceptions.UnsupportedUpload),
    ],
    ids=["empty", "png", "binary", "corrupt-gzip", "gzip-of-text"],
)
def test_read_submission_rejects_what_is_not_a_submission(
    data: bytes, error: type[exceptions.ProctorError]
) -> None:
    with pytest.raises(error):
        read_submission(data, LIMITS)


def test_read_submission_rejects_zip_as_unsupported() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("Dockerfile", DOCKERFILE)

    with pytest.raises(exceptions.UnsupportedUpload, match="neither a Dockerfile"):
        read_submission(buffer.getvalue(), LIMITS)


def test_read_submission_upload_over_limit() -> None:
    limits = IntakeLimits(100, MB, 10, ("*",))

    with pytest.raises(exceptions.UploadTooLarge):
        read_submission(DOCKERFILE.encode() + b"#" * 200, limits)


def test_read_submission_stops_decompression_bomb_early() -> None:
    # 200 MB of zeros compress to about 200 KB; inflating must stop at the 10 MB limit.
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    chunk = bytes(MB)
    bomb = b"".join(compressor.compress(chunk) for _ in range(200)) + compressor.flush()

    with pytest.raises(exceptions.UploadTooLarge, match="unpacks to more than"):
        read_submission(bomb, LIMITS)


# --- archive safety ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("member", "fragment"),
    [
        (file_member("/etc/cron.d/x"), "absolute path"),
        (file_member("../outside"), "leaves the build context"),
        (file_member("a/../../outside"), "leaves the build context"),
        (special_member("link", tarfile.SYMTYPE, "../../etc/passwd"), "outside the build context"),
        (special_member("link", tarfile.SYMTYPE, "/etc/passwd"), "absolute path"),
        (special_member("hard", tarfile.LNKTYPE, "/etc/shadow"), "absolute path"),
        (special_member("hard", tarfile.LNKTYPE, "missing"), "not an earlier file"),
        (special_member("dev", tarfile.CHRTYPE), "device"),
        (special_member("blk", tarfile.BLKTYPE), "device"),
        (special_member("fifo", tarfile.FIFOTYPE), "FIFO"),
    ],
    ids=[
        "absolute",
        "dotdot",
        "nested-dotdot",
        "symlink-escape",
        "symlink-absolute",
        "hardlink-absolute",
        "hardlink-missing",
        "chardev",
        "blockdev",
        "fifo",
    ],
)
def test_read_submission_rejects_unsafe_members(member: Member, fragment: str) -> None:
    data = make_tar(file_member("Dockerfile", DOCKERFILE), member)

    with pytest.raises(exceptions.UnsafeArchive, match=fragment):
        read_submission(data, LIMITS)


def test_read_submission_keeps_symlinks_and_hardlinks_inside() -> None:
    data = make_tar(
        file_member("Dockerfile", DOCKERFILE),
        file_member("data/a.txt", "hello"),
        special_member("data/b.txt", tarfile.SYMTYPE, "a.txt"),
        special_member("c.txt", tarfile.LNKTYPE, "data/a.txt"),
    )

    members = context_of(read_submission(data, LIMITS).context)

    assert members["data/b.txt"].issym() and members["data/b.txt"].linkname == "a.txt"
    assert members["c.txt"].isfile() and members["c.txt"].size == 5


def test_read_submission_rejects_duplicates_and_too_many_members() -> None:
    twice = make_tar(file_member("Dockerfile", DOCKERFILE), file_member("a"), file_member("./a"))
    with pytest.raises(exceptions.UnsafeArchive, match="twice"):
        read_submission(twice, LIMITS)

    many = make_tar(
        file_member("Dockerfile", DOCKERFILE), *(file_member(f"f{i}") for i in range(60))
    )
    with pytest.raises(exceptions.UploadTooLarge, match="members"):
        read_submission(many, LIMITS)


def test_read_submission_requires_dockerfile_at_root() -> None:
    data = make_tar(file_member("sub/Dockerfile", DOCKERFILE))

    with pytest.raises(exceptions.RejectedSubmission, match="no Dockerfile at its root"):
        read_submission(data, LIMITS)


def test_read_submission_repack_normalises_members() -> None:
    data = make_tar(
        file_member("./Dockerfile", DOCKERFILE),
        file_member("run.sh", "#!/bin/sh", mode=0o4755),
        file_member("notes", "n", mode=0o666),
    )

    first = read_submission(data, LIMITS).context
    members = context_of(first)

    assert members["run.sh"].mode == 0o755  # setuid dropped, executable kept
    assert members["notes"].mode == 0o644
    assert all(m.uid == 0 and m.gid == 0 and not m.name.startswith("./") for m in members.values())
    assert read_submission(data, LIMITS).context == first  # deterministic


# --- Dockerfile parsing --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("FROM a\nRUNN true\n", "line 2: unknown instruction 'runn'"),
        ("FROM a\nRUN\n", "line 2: RUN needs an argument"),
        ("RUN true\nFROM a\n", "line 1: RUN comes before the first FROM"),
        ("# just a comment\n", "no FROM"),
        ("FROM a\nRUN echo \\\n", "line 2: the instruction continues past the end"),
        ("FROM a\nRUN <<EOF\necho\nEOF\n", "line 2: heredocs"),
        ("FROM $BASE\n", "line 1: FROM uses $BASE"),
        ("FROM a b c d\n", "line 1: FROM takes an image"),
    ],
)
def test_parse_dockerfile_errors_name_the_line(text: str, fragment: str) -> None:
    with pytest.raises(exceptions.DockerfileSyntaxError, match=fragment.replace("$", r"\$")):
        base_images(parse_dockerfile(text))


def test_parse_dockerfile_continuations_comments_and_escape_directive() -> None:
    text = "# escape=`\n\nfrom a\n# comment\nRUN echo one `\n  # inside\n  two\nCMD x\n"

    instructions = parse_dockerfile(text)

    assert [(i.keyword, i.line) for i in instructions] == [("FROM", 3), ("RUN", 5), ("CMD", 8)]
    assert instructions[1].value == "echo one two"


def test_base_images_resolves_args_and_skips_stages_and_scratch() -> None:
    text = (
        "ARG BASE=proctor/python\nARG TAG=3.11\n"
        "FROM --platform=linux/amd64 ${BASE}:${TAG} AS build\n"
        "FROM scratch AS empty\n"
        "FROM build\nCOPY --from=build /a /a\nCOPY --from=0 /b /b\n"
        "COPY --from=proctor/tools:1 /c /c\n"
        "FROM ${MISSING:-proctor/busybox}\n"
    )

    assert base_images(parse_dockerfile(text)) == (
        "proctor/python:3.11",
        "proctor/tools:1",
        "proctor/busybox",
    )


# --- allowlist -----------------------------------------------------------------------


def test_normalised_names_cover_docker_hub_spellings() -> None:
    assert normalised_names("busybox") == {
        "busybox",
        "busybox:latest",
        "docker.io/library/busybox:latest",
    }
    assert "docker.io/proctor/python:3.11" in normalised_names("proctor/python:3.11")
    assert normalised_names("registry.local:5000/x:1") == {"registry.local:5000/x:1"}


@pytest.mark.parametrize(
    ("patterns", "text", "allowed"),
    [
        (("proctor/*",), "FROM proctor/busybox:latest\n", True),
        (("proctor/*",), "FROM ubuntu:24.04\n", False),
        (("docker.io/library/*",), "FROM busybox\n", True),
        (("busybox:latest",), "FROM busybox\n", True),
        (("proctor/*",), "FROM proctor/a\nCOPY --from=evil/tools /x /x\n", False),
        ((), "FROM proctor/a\n", False),
    ],
)
def test_read_submission_applies_allowlist(
    patterns: tuple[str, ...], text: str, allowed: bool
) -> None:
    limits = IntakeLimits(MB, MB, 10, patterns)
    if allowed:
        read_submission(text.encode(), limits)
    else:
        with pytest.raises(exceptions.BaseImageNotAllowed, match="line"):
            read_submission(text.encode(), limits)
