"""The client side of `proctor submit`: files as they are, directories packed like
`docker build` packs its context."""

from __future__ import annotations

import io
import os
import socket
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from proctor import exceptions
from proctor.context import pack_path
from proctor.intake import IntakeLimits, read_submission

DOCKERFILE = "FROM proctor/busybox:latest\nCOPY . /app\n"
MTIME = 1_700_000_000
LIMITS = IntakeLimits(1024 * 1024, 10 * 1024 * 1024, 100, ("*",))

ContextFactory = Callable[..., Path]


@pytest.fixture
def make_context(tmp_path: Path) -> ContextFactory:
    """A context directory with a Dockerfile, the given files and an optional .dockerignore."""

    def make(files: dict[str, str] | None = None, dockerignore: str | None = None) -> Path:
        root = tmp_path / "ctx"
        root.mkdir()
        (root / "Dockerfile").write_text(DOCKERFILE)
        if dockerignore is not None:
            (root / ".dockerignore").write_text(dockerignore)
        for name, content in (files or {}).items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(content)
        for path in [root, *root.rglob("*")]:
            os.utime(path, (MTIME, MTIME), follow_symlinks=False)
        return root

    return make


def members(data: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        return {member.name: member for member in archive}


def files(data: bytes) -> set[str]:
    return {name for name, member in members(data).items() if not member.isdir()}


# --- files and errors ----------------------------------------------------------------


@pytest.mark.parametrize("content", [DOCKERFILE.encode(), b"\x1f\x8b\x08\x00anything"])
def test_pack_path_sends_a_file_unchanged(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "upload"
    path.write_bytes(content)

    assert pack_path(path) == content


def test_pack_path_directory_needs_a_dockerfile(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text("print(1)")

    with pytest.raises(exceptions.SubmissionError, match="has no Dockerfile"):
        pack_path(tmp_path)


def test_pack_path_missing_path_is_a_submission_error(tmp_path: Path) -> None:
    with pytest.raises(exceptions.SubmissionError, match="neither a file nor a directory"):
        pack_path(tmp_path / "nope")


# --- the packed directory ------------------------------------------------------------


def test_pack_path_directory_is_a_sorted_root_owned_gzip_tar(make_context: ContextFactory) -> None:
    root = make_context({"src/b.py": "b", "src/a.py": "a", "z.txt": "z"})
    (root / "run.sh").write_text("#!/bin/sh")
    (root / "run.sh").chmod(0o755)

    data = pack_path(root)

    packed = members(data)
    assert list(packed) == sorted(packed)
    assert set(packed) == {"Dockerfile", "run.sh", "src", "src/a.py", "src/b.py", "z.txt"}
    assert all((m.uid, m.gid, m.uname, m.gname) == (0, 0, "", "") for m in packed.values())
    assert packed["src"].isdir() and packed["src/a.py"].mtime == MTIME
    assert packed["run.sh"].mode & 0o111
    assert data[4:8] == bytes(4)  # gzip header mtime
    assert pack_path(root) == data  # deterministic


def test_pack_path_keeps_symlinks_as_symlinks(make_context: ContextFactory) -> None:
    root = make_context({"data/a.txt": "a"})
    (root / "inside").symlink_to("data/a.txt")
    (root / "linked-dir").symlink_to("data")
    (root / "escape").symlink_to("/etc/passwd")  # the server judges, the client only packs

    packed = members(pack_path(root))

    assert packed["inside"].issym() and packed["inside"].linkname == "data/a.txt"
    assert packed["linked-dir"].issym()
    assert "linked-dir/a.txt" not in packed
    assert packed["escape"].linkname == "/etc/passwd"


def test_pack_path_skips_fifos_and_sockets(make_context: ContextFactory, tmp_path: Path) -> None:
    root = make_context({"keep.txt": "k"})
    os.mkfifo(root / "pipe")
    short = tmp_path / "s"  # a socket path must stay short; link it into the context
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(short))
        os.rename(short, root / "sock")

        assert files(pack_path(root)) == {"Dockerfile", "keep.txt"}


def test_pack_path_dereferences_a_symlinked_dockerfile(make_context: ContextFactory) -> None:
    root = make_context({"docker/Dockerfile.real": DOCKERFILE})
    (root / "Dockerfile").unlink()
    (root / "Dockerfile").symlink_to("docker/Dockerfile.real")

    packed = members(pack_path(root))

    assert packed["Dockerfile"].isfile() and packed["Dockerfile"].size == len(DOCKERFILE)


def test_pack_path_output_passes_intake(make_context: ContextFactory) -> None:
    root = make_context({"app/main.py": "print(1)"}, dockerignore="*.pyc\n")

    submission = read_submission(pack_path(root), LIMITS)

    assert submission.kind == "archive"
    assert submission.base_images == ("proctor/busybox:latest",)


# --- .dockerignore -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dockerignore", "expected"),
    [
        ("", {"a.log", "sub/b.log", "sub/deep/c.log", "build/out", "build/keep.txt", "x.py"}),
        # Patterns are anchored at the root: `*.log` is not `**/*.log`, unlike gitignore.
        ("*.log\n", {"sub/b.log", "sub/deep/c.log", "build/out", "build/keep.txt", "x.py"}),
        ("**/*.log\n", {"build/out", "build/keep.txt", "x.py"}),
        ("sub/**/*.log\n", {"a.log", "build/out", "build/keep.txt", "x.py"}),
        ("build\n", {"a.log", "sub/b.log", "sub/deep/c.log", "x.py"}),
        ("/build/\n", {"a.log", "sub/b.log", "sub/deep/c.log", "x.py"}),
        ("./sub\n", {"a.log", "build/out", "build/keep.txt", "x.py"}),
        ("s?b/deep\n", {"a.log", "sub/b.log", "build/out", "build/keep.txt", "x.py"}),
        (
            "# a comment\n\n   \n*.py\n",
            {"a.log", "sub/b.log", "sub/deep/c.log", "build/out", "build/keep.txt"},
        ),
        # A later `!` brings a file back, even from an excluded directory.
        (
            "build\n!build/keep.txt\n",
            {"a.log", "sub/b.log", "sub/deep/c.log", "build/keep.txt", "x.py"},
        ),
        ("**/*.log\n!sub/deep/c.log\n", {"sub/deep/c.log", "build/out", "build/keep.txt", "x.py"}),
        # The last matching pattern wins.
        ("!x.py\n*\n", set()),
    ],
    ids=[
        "none",
        "anchored-star",
        "double-star",
        "double-star-under-dir",
        "directory",
        "slashes-ignored",
        "dot-slash",
        "question-mark",
        "comments-and-blanks",
        "negation-under-excluded-dir",
        "negation-after-double-star",
        "last-match-wins",
    ],
)
def test_pack_path_honours_dockerignore(
    make_context: ContextFactory, dockerignore: str, expected: set[str]
) -> None:
    root = make_context(
        {
            "a.log": "",
            "sub/b.log": "",
            "sub/deep/c.log": "",
            "build/out": "",
            "build/keep.txt": "",
            "x.py": "",
        },
        dockerignore=dockerignore,
    )

    assert files(pack_path(root)) == expected | {"Dockerfile", ".dockerignore"}


def test_pack_path_always_sends_dockerfile_and_dockerignore(make_context: ContextFactory) -> None:
    root = make_context({"app.py": "", "sub/Dockerfile": ""}, dockerignore="*\nDockerfile\n")

    assert files(pack_path(root)) == {"Dockerfile", ".dockerignore"}


def test_pack_path_excluded_directory_is_not_entered(make_context: ContextFactory) -> None:
    root = make_context({"node_modules/x/y.js": "", "keep.js": ""}, dockerignore="node_modules\n")
    (root / "node_modules").chmod(0o000)  # would fail the walk if it were entered
    try:
        packed = members(pack_path(root))
    finally:
        (root / "node_modules").chmod(0o755)

    assert "node_modules" not in packed and "keep.js" in packed


def test_pack_path_unreadable_directory_is_an_error(make_context: ContextFactory) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads every directory")
    root = make_context({"secret/x": ""})
    (root / "secret").chmod(0o000)
    try:
        with pytest.raises(exceptions.SubmissionError, match="cannot read"):
            pack_path(root)
    finally:
        (root / "secret").chmod(0o755)


def test_pack_path_rejects_file_names_that_are_not_utf8(make_context: ContextFactory) -> None:
    root = make_context()
    with open(os.path.join(os.fsencode(root), b"caf\xe9.txt"), "wb"):
        pass

    with pytest.raises(exceptions.SubmissionError, match="not valid UTF-8"):
        pack_path(root)


@pytest.mark.parametrize("pattern", ["[z-a]\n", "trailing\\\n"])
def test_pack_path_rejects_invalid_dockerignore_pattern(
    make_context: ContextFactory, pattern: str
) -> None:
    root = make_context(dockerignore=pattern)

    with pytest.raises(exceptions.SubmissionError, match="invalid pattern"):
        pack_path(root)
