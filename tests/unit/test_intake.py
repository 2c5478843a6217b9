"""Submission checks: detection by content, Dockerfile parsing, allowlist, archive safety,
and the repacked context."""

from __future__ import annotations

import dataclasses
import gzip
import io
import re
import tarfile
import time
import zipfile
import zlib
from collections.abc import Callable
from typing import Any

import pytest

from proctor import exceptions
from proctor.config import Settings
from proctor.intake import (
    ImageRef,
    IntakeLimits,
    base_images,
    check_base_images,
    image_references,
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
MTIME = 1_700_000_000

Member = Callable[[tarfile.TarFile], None]


# --- factories -----------------------------------------------------------------------


def limits(**overrides: Any) -> IntakeLimits:
    return dataclasses.replace(LIMITS, **overrides)


def file_member(name: str, data: bytes | str = b"x", mode: int = 0o644) -> Member:
    def add(archive: tarfile.TarFile) -> None:
        payload = data.encode() if isinstance(data, str) else data
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(payload), mode, MTIME
        info.uid, info.gid, info.uname, info.gname = 1000, 1000, "alice", "staff"
        archive.addfile(info, io.BytesIO(payload))

    return add


def special_member(name: str, kind: bytes, linkname: str = "") -> Member:
    def add(archive: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.type, info.linkname, info.mtime = kind, linkname, MTIME
        info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
        archive.addfile(info)

    return add


def dockerfile(text: str = DOCKERFILE, name: str = "Dockerfile") -> Member:
    return file_member(name, text)


def make_tar(*members: Member, compress: bool = False, fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(
        fileobj=buffer,
        mode="w:gz" if compress else "w",
        format=fmt,
        encoding="utf-8",
        errors="surrogateescape",
    ) as archive:
        for add in members:
            add(archive)
    return buffer.getvalue()


def gzip_stream(chunks: int, chunk: bytes = bytes(MB), prefix: bytes = b"") -> bytes:
    """Gzip `prefix` then `chunks` copies of `chunk`, without holding the plain data."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    parts = [compressor.compress(prefix)]
    parts += [compressor.compress(chunk) for _ in range(chunks)]
    return b"".join(parts) + compressor.flush()


def context_of(context: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(context), mode="r:gz") as archive:
        return {member.name: member for member in archive}


def context_file(context: bytes, name: str) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(context), mode="r:gz") as archive:
        extracted = archive.extractfile(name)
        assert extracted is not None
        return extracted.read()


def v7_tar(*members: Member) -> bytes:
    """A tar whose headers carry no "ustar" magic, as tar before POSIX wrote them."""
    data = bytearray(make_tar(*members, fmt=tarfile.USTAR_FORMAT))
    offset = 0
    while data[offset : offset + 512].strip(b"\0"):
        header = data[offset : offset + 512]
        header[257:265] = bytes(8)
        header[148:156] = b" " * 8
        header[148:156] = b"%06o\0 " % sum(header)
        data[offset : offset + 512] = header
        size = int(header[124:136].strip(b"\0 ") or b"0", 8)
        offset += 512 + -(-size // 512) * 512
    return bytes(data)


def syntax_error(text: str) -> str:
    with pytest.raises(exceptions.DockerfileSyntaxError) as caught:
        image_references(parse_dockerfile(text))
    return caught.value.message


# --- detection -----------------------------------------------------------------------


def test_read_submission_plain_dockerfile_is_packed_alone() -> None:
    submission = read_submission(DOCKERFILE.encode(), LIMITS)

    assert submission.kind == "dockerfile"
    assert submission.dockerfile == DOCKERFILE
    assert submission.base_images == ("proctor/busybox:latest",)
    members = context_of(submission.context)
    assert list(members) == ["Dockerfile"]
    assert members["Dockerfile"].mode == 0o644 and members["Dockerfile"].uid == 0
    assert context_file(submission.context, "Dockerfile") == DOCKERFILE.encode()


def test_read_submission_dockerfile_with_bom_is_text() -> None:
    submission = read_submission(b"\xef\xbb\xbf" + DOCKERFILE.encode(), LIMITS)

    assert submission.kind == "dockerfile"
    assert submission.dockerfile == DOCKERFILE


@pytest.mark.parametrize("compress", [False, True], ids=["tar", "tar.gz"])
def test_read_submission_archive_by_content(compress: bool) -> None:
    data = make_tar(dockerfile(name="./Dockerfile"), file_member("app/x.py"), compress=compress)

    submission = read_submission(data, LIMITS)

    assert submission.kind == "archive"
    assert submission.dockerfile == DOCKERFILE
    assert set(context_of(submission.context)) == {"Dockerfile", "app/x.py"}


def test_read_submission_archive_without_ustar_magic_is_a_tar() -> None:
    data = v7_tar(dockerfile(), file_member("a.txt", "hello"))
    assert b"ustar" not in data

    submission = read_submission(data, LIMITS)

    assert submission.kind == "archive"
    assert context_file(submission.context, "a.txt") == b"hello"


def _zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("Dockerfile", DOCKERFILE)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("data", "error", "fragment"),
    [
        (b"", exceptions.UnreadableUpload, "the upload is empty"),
        (_zip(), exceptions.UnsupportedUpload, "neither a Dockerfile"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", exceptions.UnsupportedUpload, "neither"),
        (b"\xff\xfe\xfa garbage", exceptions.UnsupportedUpload, "neither"),
        (b"FROM a\n\x00\n", exceptions.UnsupportedUpload, "neither"),
        ("FROM caf\xe9\n".encode("latin-1"), exceptions.UnsupportedUpload, "UTF-8"),
        (b"\x1f\x8b\x08\x00garbage-not-deflate", exceptions.UnreadableUpload, "corrupt"),
        (gzip.compress(make_tar(dockerfile()))[:-30], exceptions.UnreadableUpload, "truncated"),
        (gzip.compress(b"just text, not a tar"), exceptions.UnsupportedUpload, "not hold a tar"),
        (gzip.compress(make_tar(dockerfile())) + b"junk", exceptions.UnreadableUpload, "after"),
    ],
    ids=[
        "empty",
        "zip",
        "png",
        "binary",
        "text-with-nul",
        "latin-1",
        "corrupt-gzip",
        "truncated-gzip",
        "gzip-of-text",
        "data-after-gzip",
    ],
)
def test_read_submission_rejects_what_is_not_a_submission(
    data: bytes, error: type[exceptions.ProctorError], fragment: str
) -> None:
    with pytest.raises(error, match=fragment):
        read_submission(data, LIMITS)


def test_read_submission_unsupported_says_what_is_expected() -> None:
    with pytest.raises(exceptions.UnsupportedUpload) as caught:
        read_submission(_zip(), LIMITS)

    assert caught.value.status_code == 415
    assert "Dockerfile (UTF-8 text)" in caught.value.message
    assert ".tar or .tar.gz" in caught.value.message


def test_read_submission_accepts_gzip_in_several_members() -> None:
    plain = make_tar(dockerfile(), file_member("a.txt", "hello"))
    data = gzip.compress(plain[:700]) + gzip.compress(plain[700:]) + bytes(16)

    submission = read_submission(data, LIMITS)

    assert context_file(submission.context, "a.txt") == b"hello"


def test_read_submission_upload_over_limit() -> None:
    with pytest.raises(exceptions.UploadTooLarge, match="over the 100-byte limit"):
        read_submission(DOCKERFILE.encode() + b"#" * 200, limits(max_upload_bytes=100))


def test_read_submission_stops_decompression_bomb_early() -> None:
    bomb = gzip_stream(200)  # 200 MB of zeros, about 200 KB compressed
    assert len(bomb) < MB

    started = time.monotonic()
    with pytest.raises(exceptions.UploadTooLarge, match="unpacks to more than") as caught:
        read_submission(bomb, LIMITS)

    assert caught.value.status_code == 413
    assert time.monotonic() - started < 5  # stopped near 10 MB, not after 200


def test_read_submission_stops_bomb_behind_a_valid_tar() -> None:
    # The tar ends after its Dockerfile; the zeros that follow still count against the limit.
    bomb = gzip_stream(20, prefix=make_tar(dockerfile()))

    with pytest.raises(exceptions.UploadTooLarge, match="unpacks to more than"):
        read_submission(bomb, LIMITS)


def test_read_submission_caps_sum_of_member_sizes() -> None:
    data = make_tar(dockerfile(), file_member("big", bytes(2 * MB)))

    with pytest.raises(exceptions.UploadTooLarge, match="add up to more than"):
        read_submission(data, limits(max_context_bytes=MB))


def test_read_submission_counts_hardlink_copies_against_the_cap() -> None:
    links = (special_member(f"l{i}", tarfile.LNKTYPE, "big") for i in range(4))
    data = make_tar(dockerfile(), file_member("big", bytes(300 * 1024)), *links)

    with pytest.raises(exceptions.UploadTooLarge, match="add up to more than"):
        read_submission(data, limits(max_context_bytes=MB))


# --- archive safety ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("members", "fragment"),
    [
        ([file_member("/etc/cron.d/x")], "absolute path"),
        ([file_member("../outside")], r"leaves the build context \(\.\.\)"),
        ([file_member("a/../../outside")], "leaves the build context"),
        ([special_member("a", tarfile.SYMTYPE, "../../etc/passwd")], "outside the build context"),
        ([special_member("a", tarfile.SYMTYPE, "/etc/passwd")], "absolute path '/etc/passwd'"),
        (
            [
                special_member("sub", tarfile.DIRTYPE),
                special_member("sub/up", tarfile.SYMTYPE, ".."),
                special_member("sub/out", tarfile.SYMTYPE, "up/.."),
            ],
            "symlink 'sub/out' points outside",
        ),
        (
            [special_member("a", tarfile.SYMTYPE, "b"), special_member("b", tarfile.SYMTYPE, "a")],
            "loop",
        ),
        (
            [file_member("sub/x"), special_member("d", tarfile.SYMTYPE, "sub"), file_member("d/y")],
            "'d/y' lies under the symlink 'd'",
        ),
        ([file_member("f"), file_member("f/g")], "lies under the file 'f'"),
        ([special_member("hard", tarfile.LNKTYPE, "/etc/shadow")], "not an earlier regular file"),
        ([special_member("hard", tarfile.LNKTYPE, "missing")], "not an earlier regular file"),
        (
            [special_member("hard", tarfile.LNKTYPE, "later"), file_member("later")],
            "not an earlier regular file",
        ),
        (
            [special_member("d", tarfile.DIRTYPE), special_member("hard", tarfile.LNKTYPE, "d")],
            "not an earlier regular file",
        ),
        ([special_member("dev", tarfile.CHRTYPE)], "'dev' is a character device"),
        ([special_member("blk", tarfile.BLKTYPE)], "'blk' is a block device"),
        ([special_member("fifo", tarfile.FIFOTYPE)], "'fifo' is a FIFO"),
        ([file_member("caf\udce9")], "not valid UTF-8"),
        ([special_member("a", tarfile.SYMTYPE, "caf\udce9")], "not valid UTF-8"),
    ],
    ids=[
        "absolute",
        "dotdot",
        "nested-dotdot",
        "symlink-escape",
        "symlink-absolute",
        "symlink-chain-escape",
        "symlink-loop",
        "member-under-symlink",
        "member-under-file",
        "hardlink-absolute",
        "hardlink-missing",
        "hardlink-to-later",
        "hardlink-to-dir",
        "chardev",
        "blockdev",
        "fifo",
        "name-not-utf8",
        "symlink-target-not-utf8",
    ],
)
def test_read_submission_rejects_unsafe_members(members: list[Member], fragment: str) -> None:
    data = make_tar(dockerfile(), *members, fmt=tarfile.GNU_FORMAT)

    with pytest.raises(exceptions.UnsafeArchive, match=fragment) as caught:
        read_submission(data, LIMITS)

    assert caught.value.status_code == 422


def test_read_submission_keeps_links_that_stay_inside() -> None:
    data = make_tar(
        dockerfile(),
        special_member("data", tarfile.DIRTYPE),
        special_member("data/deep", tarfile.DIRTYPE),
        file_member("data/a.txt", "hello"),
        special_member("data/b.txt", tarfile.SYMTYPE, "a.txt"),
        special_member("data/up", tarfile.SYMTYPE, "../data/./deep/.."),
        special_member("data/deep/l", tarfile.SYMTYPE, "../.."),  # the root itself is fine
        special_member("dangling", tarfile.SYMTYPE, "not/there"),
        special_member("c.txt", tarfile.LNKTYPE, "data/a.txt"),
    )

    members = context_of(read_submission(data, LIMITS).context)

    assert members["data/b.txt"].issym() and members["data/b.txt"].linkname == "a.txt"
    assert members["data/deep/l"].linkname == "../.."
    assert members["dangling"].issym()
    assert members["c.txt"].isfile() and members["c.txt"].size == 5


@pytest.mark.parametrize(
    "members",
    [
        [file_member("a"), file_member("a")],
        [file_member("a"), file_member("./a")],
        [special_member("d", tarfile.DIRTYPE), special_member("d/", tarfile.DIRTYPE)],
        [dockerfile(name="./Dockerfile")],
    ],
    ids=["same-name", "dot-slash", "directory", "dockerfile"],
)
def test_read_submission_rejects_duplicate_members(members: list[Member]) -> None:
    data = make_tar(dockerfile(), *members)

    with pytest.raises(exceptions.UnsafeArchive, match="appears more than once"):
        read_submission(data, LIMITS)


def test_read_submission_caps_member_count() -> None:
    at_cap = make_tar(dockerfile(), *(file_member(f"f{i}") for i in range(49)))
    over_cap = make_tar(dockerfile(), *(file_member(f"f{i}") for i in range(50)))

    read_submission(at_cap, LIMITS)
    with pytest.raises(exceptions.UploadTooLarge, match="more than 50 members"):
        read_submission(over_cap, LIMITS)


@pytest.mark.parametrize(
    "members",
    [
        [dockerfile(name="sub/Dockerfile")],
        [dockerfile(name="dockerfile")],
        [file_member("real", DOCKERFILE), special_member("Dockerfile", tarfile.SYMTYPE, "real")],
        [special_member("Dockerfile", tarfile.DIRTYPE)],
        [],
    ],
    ids=["in-subdirectory", "lower-case", "symlink", "directory", "empty-archive-but-root"],
)
def test_read_submission_requires_dockerfile_at_root(members: list[Member]) -> None:
    data = make_tar(special_member(".", tarfile.DIRTYPE), *members)

    with pytest.raises(exceptions.RejectedSubmission, match="no Dockerfile at its root"):
        read_submission(data, LIMITS)


def test_read_submission_accepts_hardlinked_dockerfile() -> None:
    data = make_tar(
        file_member("real", DOCKERFILE), special_member("Dockerfile", tarfile.LNKTYPE, "real")
    )

    assert read_submission(data, LIMITS).dockerfile == DOCKERFILE


def test_read_submission_archive_dockerfile_errors_name_its_line() -> None:
    data = make_tar(dockerfile("FROM a\n\nRUNN x\n"), file_member("x"))

    with pytest.raises(exceptions.DockerfileSyntaxError, match="line 3: unknown instruction"):
        read_submission(data, LIMITS)


def test_read_submission_archive_dockerfile_must_be_utf8() -> None:
    data = make_tar(file_member("Dockerfile", b"FROM a\nRUN echo \xe9\n"))

    with pytest.raises(exceptions.DockerfileSyntaxError, match=r"line 2: .* not UTF-8"):
        read_submission(data, LIMITS)


def test_read_submission_archive_applies_allowlist() -> None:
    data = make_tar(dockerfile("FROM ubuntu:24.04\n"))

    with pytest.raises(
        exceptions.BaseImageNotAllowed, match=re.escape("line 1: base image 'ubuntu:24.04'")
    ):
        read_submission(data, limits(allowed_base_images=("proctor/*",)))


# --- the repacked context ------------------------------------------------------------


def _messy_archive() -> bytes:
    return make_tar(
        special_member("./", tarfile.DIRTYPE),
        file_member("./run.sh", "#!/bin/sh", mode=0o4755),
        file_member("./notes", "n", mode=0o666),
        file_member("./group-exec", "g", mode=0o2710),
        special_member("./bin", tarfile.DIRTYPE),
        file_member("./bin/tool", "t", mode=0o1777),
        dockerfile(name="./Dockerfile"),
        special_member("./hard", tarfile.LNKTYPE, "./run.sh"),
    )


def test_read_submission_repack_normalises_members() -> None:
    members = context_of(read_submission(_messy_archive(), LIMITS).context)

    assert list(members) == [
        "Dockerfile",
        "bin",
        "bin/tool",
        "group-exec",
        "hard",
        "notes",
        "run.sh",
    ]
    assert members["run.sh"].mode == 0o755  # setuid dropped, executable kept
    assert members["group-exec"].mode == 0o755  # setgid dropped
    assert members["bin/tool"].mode == 0o755  # sticky dropped
    assert members["notes"].mode == 0o644  # no write access for others
    assert members["bin"].isdir() and members["bin"].mode == 0o755
    assert members["hard"].isfile() and members["hard"].size == len("#!/bin/sh")
    for member in members.values():
        assert (member.uid, member.gid, member.uname, member.gname) == (0, 0, "", "")
        assert member.mtime == MTIME


def test_read_submission_repack_is_deterministic_and_idempotent() -> None:
    first = read_submission(_messy_archive(), LIMITS).context

    assert read_submission(_messy_archive(), LIMITS).context == first
    assert first[4:8] == bytes(4)  # gzip header mtime
    # The worker checks the stored context again: it must pass and come out the same.
    again = read_submission(first, LIMITS)
    assert again.kind == "archive" and again.context == first


# --- Dockerfile parsing --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("FROM a\nRUNN true\n", "line 2: unknown instruction 'RUNN' (valid: FROM RUN CMD"),
        ("FROM a\nRUN\n", "line 2: RUN needs an argument"),
        ("FROM a\n  cmd   \n", "line 2: CMD needs an argument"),
        ("RUN true\nFROM a\n", "line 1: RUN comes before the first FROM"),
        ("ARG A=1\nENV B=2\nFROM a\n", "line 2: ENV comes before the first FROM"),
        ("# just a comment\n\n", "line 3: the Dockerfile has no FROM instruction"),
        ("", "line 1: the Dockerfile has no FROM instruction"),
        ("FROM a\nRUN echo \\\n", "line 2: the instruction continues"),
        ("FROM a\nRUN echo \\\n  # comment\n\n", "line 2: the instruction continues"),
        ("FROM a\nRUN <<EOF\necho\nEOF\n", "line 2: heredocs (<<EOF) are not supported"),
        ("FROM a\nRUN cat <<-'END' > /x\nhi\nEND\n", "line 2: heredocs"),
        ("FROM a\nCOPY <<EOF /x\nhi\nEOF\n", "line 2: heredocs"),
        ("FROM a\nONBUILD RUN <<EOF\nEOF\n", "line 2: heredocs"),
        ("FROM a b c d\n", "line 1: FROM takes an image and an optional AS <name>"),
        ("FROM a AS\n", "line 1: FROM takes an image"),
        ("FROM --pull=always a\n", "line 1: FROM does not take '--pull=always'"),
        ("FROM a AS 1st\n", "line 1: '1st' is not a valid stage name"),
        ("FROM a AS b\nFROM c AS B\n", "line 2: the stage name 'B' is used twice"),
        ("FROM a\nCOPY onlyone\n", "line 2: COPY needs a source and a destination"),
        ("FROM a\nONBUILD FROM b\n", "line 2: ONBUILD cannot trigger FROM"),
        ("FROM a\nONBUILD RUNN x\n", "line 2: unknown instruction 'RUNN'"),
        ("# escape=`\n# escape=\\\nFROM a\n", "line 2: the escape directive is given twice"),
        ("# escape=x\nFROM a\n", "line 1: escape must be"),
        ("FROM a\nRUN a \\\n  b \\\n  c\nWRONG x\n", "line 5: unknown instruction 'WRONG'"),
    ],
)
def test_parse_dockerfile_errors_name_the_line(text: str, fragment: str) -> None:
    assert fragment in syntax_error(text)


def test_parse_dockerfile_continuations_comments_and_directives() -> None:
    text = (
        "# syntax=docker/dockerfile:1\n# escape=`\n\n"
        "from a\n"
        "# a comment\n"
        "  RUN echo one `\n"
        "  # dropped inside a continuation\n"
        "\n"
        "  two\n"
        "cmd\tx\n"
    )

    instructions = parse_dockerfile(text)

    assert [(i.keyword, i.line) for i in instructions] == [("FROM", 4), ("RUN", 6), ("CMD", 10)]
    assert instructions[1].value == "echo one   two"  # joined as Docker does, nothing inserted
    assert instructions[2].value == "x"


def test_parse_dockerfile_directives_only_at_the_top() -> None:
    # After a comment, `# escape=` is a comment too, so the backslash still continues.
    text = "# hello\n# escape=`\nFROM a\nRUN x \\\n  y\n"

    instructions = parse_dockerfile(text)

    assert instructions[1].value == "x   y"


def test_parse_dockerfile_accepts_crlf_and_bom() -> None:
    instructions = parse_dockerfile("\ufeffFROM a\r\nRUN b \\\r\n c\r\n")

    assert [(i.keyword, i.value, i.line) for i in instructions] == [
        ("FROM", "a", 1),
        ("RUN", "b  c", 2),
    ]


@pytest.mark.parametrize(
    "line",
    [
        "RUN echo $((1<<4))",
        "RUN cat <<< 'here-string'",
        'COPY ["a b", "/c"]',
        "COPY --chown=1:1 a /b",
        "HEALTHCHECK NONE",
        "ONBUILD RUN make",
    ],
)
def test_parse_dockerfile_accepts_valid_lines(line: str) -> None:
    assert parse_dockerfile(f"FROM a\n{line}\n")[1].line == 2


# --- base images ---------------------------------------------------------------------


def test_base_images_resolves_args_and_skips_stages_and_scratch() -> None:
    text = (
        "ARG REGISTRY=registry.local:5000\n"
        'ARG BASE="${REGISTRY}/python" TAG=3.11\n'
        "ARG EMPTY=\n"
        "FROM --platform=linux/amd64 ${BASE}:${TAG} AS build\n"
        "FROM scratch AS empty\n"
        "FROM Build\n"
        "COPY --from=BUILD /a /a\nCOPY --from=0 /b /b\n"
        "COPY --from=proctor/tools:1 /c /c\n"
        "RUN --mount=type=bind,from=proctor/data:2,target=/d true\n"
        "FROM ${MISSING:-proctor/busybox}${EMPTY}\n"
        "FROM ${EMPTY:-proctor/busy}${EMPTY-x}${UNSET-box}${EMPTY:+x}${TAG+}\n"
        "FROM $REGISTRY/python:3.11\n"
    )

    assert base_images(parse_dockerfile(text)) == (
        "registry.local:5000/python:3.11",
        "proctor/tools:1",
        "proctor/data:2",
        "proctor/busybox",
    )


def test_image_references_name_their_lines() -> None:
    text = "FROM a AS x\nFROM b\nCOPY --from=x /a /a\nCOPY --from=c /b /b\n"

    assert image_references(parse_dockerfile(text)) == [
        ImageRef("a", 1),
        ImageRef("b", 2),
        ImageRef("c", 4),
    ]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("FROM $BASE\n", "line 1: $BASE has no value"),
        ("ARG BASE\nFROM ${BASE}\n", "line 2: $BASE has no value"),
        ("FROM a\nARG LATE=b\nFROM $LATE\n", "line 3: $LATE has no value"),
        ("FROM a\nCOPY --from=$X /a /b\n", "line 2: variables are not supported in --from"),
        ("FROM a\nCOPY --from=0 /a /b\n", "line 2: --from=0 is not an earlier stage"),
        ("FROM a\nFROM b\nCOPY --from=2 /a /b\n", "line 3: --from=2 is not an earlier stage"),
        ("FROM Busybox\n", "line 1: 'Busybox' is not a valid image reference"),
        ("FROM a\nCOPY --from= /a /b\n", "line 2: --from= is not an earlier stage"),
        ("ARG B=\nFROM a\nFROM $B\n", "line 3: '' is not a valid image reference"),
        ("ARG B=\nFROM $B\n", "line 2: '' is not a valid image reference"),
        ("FROM a\nCOPY --from=../x /a /b\n", "line 2: '../x' is not a valid image reference"),
    ],
)
def test_image_references_reject_what_cannot_be_resolved(text: str, fragment: str) -> None:
    assert fragment in syntax_error(text)


def test_base_images_later_stage_name_is_an_image_before_it_is_defined() -> None:
    text = "FROM later\nFROM a AS later\nFROM later\n"

    assert base_images(parse_dockerfile(text)) == ("later", "a")


# --- allowlist -----------------------------------------------------------------------


def test_normalised_names_cover_docker_hub_spellings() -> None:
    assert normalised_names("busybox") == {
        "busybox",
        "busybox:latest",
        "docker.io/library/busybox",
        "docker.io/library/busybox:latest",
    }
    assert "busybox:1.36" in normalised_names("docker.io/library/busybox:1.36")
    assert "busybox:1.36" in normalised_names("index.docker.io/library/busybox:1.36")
    assert "docker.io/proctor/python:3.11" in normalised_names("proctor/python:3.11")
    assert normalised_names("registry.local:5000/x:1") == {"registry.local:5000/x:1"}
    assert normalised_names("localhost/x") == {"localhost/x", "localhost/x:latest"}


@pytest.mark.parametrize(
    ("patterns", "text", "allowed"),
    [
        (("*",), "FROM anything/at:all\n", True),
        (("proctor/*",), "FROM proctor/busybox:latest\n", True),
        (("proctor/*",), "FROM ubuntu:24.04\n", False),
        (("docker.io/library/*",), "FROM busybox\n", True),
        (("busybox:latest",), "FROM busybox\n", True),
        (("busybox:latest",), "FROM busybox:1.36\n", False),
        (("busybox",), "FROM docker.io/library/busybox\n", True),
        (("busybox:*",), "FROM docker.io/library/busybox:1.36\n", True),
        (("docker.io/library/*",), "FROM evil.io/library/busybox\n", False),
        (("proctor/*",), "FROM proctor/a\nCOPY --from=evil/tools /x /x\n", False),
        (("proctor/*",), "FROM proctor/a\nRUN --mount=from=evil/x true\n", False),
        (("proctor/*",), "FROM proctor/a AS b\nFROM b\nCOPY --from=b /x /x\n", True),
        (("proctor/*",), "FROM scratch\n", True),
        ((), "FROM proctor/a\n", False),
    ],
)
def test_read_submission_applies_allowlist(
    patterns: tuple[str, ...], text: str, allowed: bool
) -> None:
    lims = limits(allowed_base_images=patterns)
    if allowed:
        read_submission(text.encode(), lims)
    else:
        with pytest.raises(exceptions.BaseImageNotAllowed, match="line"):
            read_submission(text.encode(), lims)


def test_check_base_images_message_names_line_image_and_patterns() -> None:
    refs = image_references(parse_dockerfile("FROM proctor/a\n\nFROM ubuntu:24.04\n"))

    with pytest.raises(exceptions.BaseImageNotAllowed) as caught:
        check_base_images(refs, ["proctor/*", "debian:*"])

    assert caught.value.message == (
        "line 3: base image 'ubuntu:24.04' is not allowed (allowed: proctor/*, debian:*)"
    )


def test_check_base_images_accepts_plain_names() -> None:
    check_base_images(["proctor/a"], ["proctor/*"])
    with pytest.raises(exceptions.BaseImageNotAllowed, match=r"^base image 'x' is not allowed"):
        check_base_images(["x"], ["proctor/*"])


def test_intake_limits_from_settings() -> None:
    settings = Settings(
        max_upload_bytes="1m",
        max_context_bytes="2m",
        max_context_members=7,
        allowed_base_images="proctor/*, debian:*",
    )

    assert IntakeLimits.from_settings(settings) == IntakeLimits(
        MB, 2 * MB, 7, ("proctor/*", "debian:*")
    )
