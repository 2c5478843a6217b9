"""Image inspection on hand-made `docker save` archives (legacy and OCI layouts) and
image configurations: every rule, secret masking, base skipping, whiteouts, caps."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import tarfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

import pytest

from proctor import exceptions, inspection
from proctor.checks import Finding, Severity, Subject
from proctor.engine import ImageInfo

PEM_KEY = (
    b"-----BEGIN " + b"OPENSSH PRIVATE KEY-----\n"
    b"b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
    b"-----END OPENSSH PRIVATE KEY-----\n"
)
PEM_CERT = b"-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----\n"
# Secrets are built from parts so that no secret scanner mistakes this file for a leak.
SECRETS_BY_FORMAT = {
    "private key": "-----BEGIN " + "RSA PRIVATE KEY-----\\nMIIEowIBAAKCAQEA",
    "AWS access key id": "AKIA" + "Z7QX" * 4,
    "AWS session key id": "ASIA" + "Q2W3" * 4,
    "GitHub token": "ghp_" + "a1B2c3D4e5F6" * 3,
    "GitHub app token": "ghs_" + "a1B2c3D4e5F6" * 3,
    "GitHub fine-grained token": "github_pat_" + "11ABCDEFG0" * 3 + "_" + "xYz" * 20,
    "GitLab token": "glpat-" + "Zx9" * 7,
    "Slack token": "xoxb-" + "1234567890-" + "Abc" * 8,
    "Google API key": "AIza" + "Sy" + "B1c2D3e4F5" * 3 + "g6H",
    "Stripe key": "sk_" + "live_" + "4eC39HqLyjWDarjtT1zdp7dc",
    "OpenAI-style key": "sk-" + "proj-" + "Ab1Cd2Ef3G" * 4,
    "Hugging Face token": "hf_" + "QwErTyUiOp" * 3 + "AsDf",
    "JWT": "eyJhbGciOiJIUzI1NiJ9"
    + "."
    + "eyJzdWIiOiIxMjM0NTY3ODkwIn0"
    + "."
    + "dozjgNryP4J3jVmNHl0w5N",
}
NAME_SAYS_SECRET = (
    "DB_PASSWORD",
    "MYSQL_PASSWD",
    "DBPASSWORD",
    "CLIENT_SECRET",
    "HF_TOKEN",
    "AUTHTOKEN",
    "API_KEY",
    "OPENAI_APIKEY",
    "aws_access_key",
    "PRIVATE_KEY",
    "GOOGLE_CREDENTIALS",
    "BASIC_AUTH",
    "apiKey",
    "com.example.api-key",
)
NAME_SAYS_NOTHING = (
    "TOKENIZERS_PARALLELISM",
    "AUTHOR",
    "org.opencontainers.image.authors",
    "PATH",
    "KEYBOARD",
    "PASSAGE_COUNT",
)


# --- Hand-made image archives -----------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One member of a layer tar."""

    name: str
    data: bytes = b""
    mode: int = 0o644
    kind: bytes = tarfile.REGTYPE
    linkname: str = ""


@dataclass(frozen=True)
class Link:
    """A symlink in the outer archive (Docker's legacy layout links a layer saved twice)."""

    target: str


def layer(*entries: Entry | str) -> bytes:
    """A layer tar; a bare string is an empty regular file."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            item = Entry(entry) if isinstance(entry, str) else entry
            info = tarfile.TarInfo(item.name)
            info.mode, info.type, info.linkname = item.mode, item.kind, item.linkname
            info.size = len(item.data) if item.kind == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(item.data) if info.size else None)
    return buffer.getvalue()


def write_tar(path: Path, members: Mapping[str, bytes | Link | None]) -> Path:
    """An outer archive: bytes are files, None a directory, Link a symlink."""
    with tarfile.open(path, mode="w") as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            if content is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            elif isinstance(content, Link):
                info.type, info.linkname = tarfile.SYMTYPE, content.target
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return path


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def docker_save_members(
    layers: Sequence[bytes],
    layout: Literal["legacy", "oci"] = "legacy",
    *,
    compress: bool = False,
) -> dict[str, bytes | Link | None]:
    """What `docker save` writes: legacy `<id>/layer.tar` (Docker ≤ 24) or OCI
    `blobs/sha256/<hex>` (Docker ≥ 25), with manifest.json in both."""
    diff_ids = [sha256(data) for data in layers]
    config = json.dumps({"rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    members: dict[str, bytes | Link | None] = {}
    paths: list[str] = []
    if layout == "legacy":
        saved: dict[str, str] = {}
        for index, data in enumerate(layers):
            layer_id = hashlib.sha256(f"{index}{diff_ids[index]}".encode()).hexdigest()
            members[f"{layer_id}/"] = None
            members[f"{layer_id}/VERSION"] = b"1.0"
            members[f"{layer_id}/json"] = b"{}"
            path = f"{layer_id}/layer.tar"
            if diff_ids[index] in saved:
                members[path] = Link(f"../{saved[diff_ids[index]]}")
            else:
                members[path] = data
                saved[diff_ids[index]] = path
            paths.append(path)
        config_path = hashlib.sha256(config).hexdigest() + ".json"
        members[config_path] = config
        members["repositories"] = b"{}"
    else:
        members["blobs/"] = None
        members["blobs/sha256/"] = None
        for data in layers:
            blob = gzip.compress(data, mtime=0) if compress else data
            path = "blobs/sha256/" + hashlib.sha256(blob).hexdigest()
            members[path] = blob
            paths.append(path)
        config_path = "blobs/sha256/" + hashlib.sha256(config).hexdigest()
        members[config_path] = config
        members["oci-layout"] = b'{"imageLayoutVersion": "1.0.0"}'
        members["index.json"] = b'{"schemaVersion": 2, "manifests": []}'
    manifest = [{"Config": config_path, "RepoTags": None, "Layers": paths}]
    members["manifest.json"] = json.dumps(manifest).encode()
    return members


class FakeSave:
    """The engine's `save_image` for one image: copies a prepared archive."""

    def __init__(self, source: Path) -> None:
        self.source = source
        self.calls: list[Path] = []

    def __call__(self, destination: Path) -> None:
        self.calls.append(destination)
        shutil.copyfile(self.source, destination)


ArchiveFactory = Callable[..., tuple[inspection.ImageArchive, FakeSave]]


@pytest.fixture
def make_archive(tmp_path: Path) -> ArchiveFactory:
    """An ImageArchive over the given layers; the bottom `base` of them are the base's."""
    made = 0

    def make(
        layers: Sequence[bytes],
        *,
        base: int = 0,
        layout: Literal["legacy", "oci"] = "legacy",
        compress: bool = False,
        members: Mapping[str, bytes | Link | None] | None = None,
    ) -> tuple[inspection.ImageArchive, FakeSave]:
        nonlocal made
        made += 1
        source = tmp_path / f"saved-{made}.tar"
        write_tar(source, members or docker_save_members(layers, layout, compress=compress))
        workdir = tmp_path / f"work-{made}"
        workdir.mkdir()
        save = FakeSave(source)
        base_ids = frozenset(sha256(data) for data in layers[:base])
        return inspection.ImageArchive(save, workdir, base_ids), save

    return make


def read_layers(archive: inspection.ImageArchive) -> list[tuple[str, list[str]]]:
    """(diff id, member names) of each new layer, read as FilesCheck reads them."""
    found = []
    for diff_id, stream in archive.new_layers():
        with tarfile.open(fileobj=stream, mode="r:") as tar:
            found.append((diff_id, tar.getnames()))
    return found


# --- Subjects ----------------------------------------------------------------------------


class NoLayers:
    """The configuration check never opens the image."""

    def tarball(self) -> Path:
        raise AssertionError("the configuration check reads ImageInfo only")

    def new_layers(self) -> Iterator[tuple[str, IO[bytes]]]:
        raise AssertionError("the configuration check reads ImageInfo only")


class OneLayer:
    """A single layer given as a stream, for what ImageArchive always hands over seekable."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream

    def tarball(self) -> Path:
        raise AssertionError("the files check reads layers only")

    def new_layers(self) -> Iterator[tuple[str, IO[bytes]]]:
        yield "sha256:one", self.stream


class Unseekable(io.BytesIO):
    def seekable(self) -> bool:
        return False


class CountingReads(io.BytesIO):
    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.bytes_read = 0

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        self.bytes_read += len(data)
        return data


def image(**values: Any) -> ImageInfo:
    defaults: dict[str, Any] = {"id": "sha256:image", "user": "app", "size_bytes": 1024}
    return ImageInfo(**{**defaults, **values})


def config_findings(
    built: ImageInfo,
    base: ImageInfo | None = None,
    dockerfile: str = "FROM proctor/busybox:latest\n",
    max_image_bytes: int = 10 * 1024**3,
) -> list[Finding]:
    check = inspection.ConfigCheck(max_image_bytes)
    return list(check(Subject(dockerfile, built, base, NoLayers())))


def file_findings(
    archive: inspection.ImageArchive | OneLayer, check: inspection.FilesCheck | None = None
) -> list[Finding]:
    subject = Subject("FROM proctor/busybox:latest\n", image(), None, archive)
    return list((check or inspection.FilesCheck())(subject))


def by_rule(findings: Sequence[Finding], rule: str) -> list[Finding]:
    return [f for f in findings if f.rule == rule]


def shown(findings: Sequence[Finding]) -> str:
    """Everything a finding says, in every field."""
    return repr(findings) + json.dumps([f.record() for f in findings], ensure_ascii=False)


# --- ImageArchive ------------------------------------------------------------------------


def test_image_archive_saves_lazily_and_only_once(make_archive: ArchiveFactory) -> None:
    archive, save = make_archive([layer("a")])

    assert save.calls == []
    path = archive.tarball()
    assert archive.tarball() == path
    read_layers(archive)
    read_layers(archive)

    assert save.calls == [path]
    assert path.name == "image.tar"


@pytest.mark.parametrize(("layout", "compress"), [("legacy", False), ("oci", False), ("oci", True)])
def test_image_archive_yields_new_layers_bottom_first(
    make_archive: ArchiveFactory, layout: Literal["legacy", "oci"], compress: bool
) -> None:
    layers = [layer("bin/su"), layer("app/one"), b"\0" * 1024, layer("app/two")]
    archive, _ = make_archive(layers, base=1, layout=layout, compress=compress)

    found = read_layers(archive)

    assert found == [
        (sha256(layers[1]), ["app/one"]),
        (sha256(layers[2]), []),
        (sha256(layers[3]), ["app/two"]),
    ]


def test_image_archive_reads_in_place_without_extracting(make_archive: ArchiveFactory) -> None:
    archive, save = make_archive([layer("app/one"), layer("app/two")])

    read_layers(archive)

    assert sorted(p.name for p in save.calls[0].parent.iterdir()) == ["image.tar"]


def test_image_archive_follows_a_legacy_symlinked_layer(
    make_archive: ArchiveFactory,
) -> None:
    """Docker's legacy layout saves a layer that appears twice once, and links to it."""
    twice = layer("app/same")
    layers = [layer("bin/su"), twice, layer("app/between"), twice]
    members = docker_save_members(layers)
    assert any(isinstance(content, Link) for content in members.values())
    archive, _ = make_archive(layers, base=1)

    found = read_layers(archive)

    assert found == [
        (sha256(twice), ["app/same"]),
        (sha256(layers[2]), ["app/between"]),
        (sha256(twice), ["app/same"]),
    ]


def test_image_archive_symlinked_layer_whose_first_copy_is_in_the_base(
    make_archive: ArchiveFactory,
) -> None:
    shared = layer("opt/shared")
    layers = [shared, layer("app/x"), shared]

    archive, _ = make_archive(layers, base=1)

    assert read_layers(archive) == [(sha256(layers[1]), ["app/x"])]


def malformed(name: str) -> dict[str, bytes | Link | None]:
    good = docker_save_members([layer("app/x")])
    manifest = json.loads(good["manifest.json"])  # type: ignore[arg-type]
    config_path, layer_path = manifest[0]["Config"], manifest[0]["Layers"][0]
    if name == "no manifest":
        del good["manifest.json"]
    elif name == "manifest not JSON":
        good["manifest.json"] = b"{not json"
    elif name == "two images":
        good["manifest.json"] = json.dumps(manifest * 2).encode()
    elif name == "no Layers":
        good["manifest.json"] = json.dumps([{"Config": config_path}]).encode()
    elif name == "no diff ids":
        good[config_path] = b'{"rootfs": {}}'
    elif name == "diff ids and layers differ":
        good[config_path] = json.dumps({"rootfs": {"diff_ids": ["sha256:a", "sha256:b"]}}).encode()
    elif name == "layer missing":
        del good[layer_path]
    elif name == "layer is a directory":
        good[layer_path] = None
    elif name == "zstd layer":
        good[layer_path] = b"\x28\xb5\x2f\xfd" + b"\0" * 100
    return good


@pytest.mark.parametrize(
    "name",
    [
        "no manifest",
        "manifest not JSON",
        "two images",
        "no Layers",
        "no diff ids",
        "diff ids and layers differ",
        "layer missing",
        "layer is a directory",
        "zstd layer",
    ],
)
def test_image_archive_malformed_raises_check_error(
    make_archive: ArchiveFactory, name: str
) -> None:
    archive, _ = make_archive([], members=malformed(name))

    with pytest.raises(exceptions.CheckError):
        read_layers(archive)


def test_image_archive_not_a_tar_raises_check_error(tmp_path: Path) -> None:
    source = tmp_path / "garbage"
    source.write_bytes(b"this is not a tar archive\n" * 100)
    archive = inspection.ImageArchive(FakeSave(source), tmp_path, frozenset())

    with pytest.raises(exceptions.CheckError, match="not readable"):
        read_layers(archive)


def test_image_archive_save_that_writes_nothing_raises_check_error(tmp_path: Path) -> None:
    archive = inspection.ImageArchive(lambda path: None, tmp_path, frozenset())

    with pytest.raises(exceptions.CheckError):
        read_layers(archive)


def test_image_archive_failed_save_is_a_check_error_and_not_retried(tmp_path: Path) -> None:
    calls: list[Path] = []

    def failing(path: Path) -> None:
        calls.append(path)
        raise exceptions.EngineError("the engine went away")

    archive = inspection.ImageArchive(failing, tmp_path, frozenset())

    with pytest.raises(exceptions.CheckError, match="the engine went away"):
        archive.tarball()
    with pytest.raises(exceptions.CheckError, match="the engine went away"):
        list(archive.new_layers())
    assert len(calls) == 1


# --- ConfigCheck: user, ports, size --------------------------------------------------------


@pytest.mark.parametrize("user", ["", "root", "0", "0:0", "root:wheel", " root "])
def test_config_check_root_user_is_low_and_says_the_job_still_runs(user: str) -> None:
    [finding] = by_rule(config_findings(image(user=user)), "image.root_user")

    assert finding.severity is Severity.LOW
    assert "unprivileged uid" in finding.message and "still runs" in finding.message


@pytest.mark.parametrize("user", ["app", "1000", "1000:1000", "65534:65534", "rooter"])
def test_config_check_non_root_user_is_not_reported(user: str) -> None:
    assert by_rule(config_findings(image(user=user)), "image.root_user") == []


def test_config_check_exposed_ports_one_low_finding_without_the_base_ports() -> None:
    base = image(exposed_ports=("22/tcp",))
    built = image(exposed_ports=("9090/udp", "8080/tcp", "22/tcp"))
    dockerfile = "FROM proctor/python:3.11\nEXPOSE 8080\nEXPOSE 9090/udp\n"

    [finding] = by_rule(config_findings(built, base, dockerfile), "image.exposed_port")

    assert finding.severity is Severity.LOW
    assert "8080/tcp, 9090/udp" in finding.message and "22/tcp" not in finding.message
    assert "no network" in finding.message
    assert finding.line == 3


def test_config_check_no_exposed_ports_no_finding() -> None:
    base = image(exposed_ports=("22/tcp",))

    assert (
        by_rule(config_findings(image(exposed_ports=("22/tcp",)), base), "image.exposed_port") == []
    )


def test_config_check_size_over_the_limit_in_human_units() -> None:
    built = image(size_bytes=12 * 1024**3 + 512 * 1024**2)

    [finding] = by_rule(config_findings(built, max_image_bytes=10 * 1024**3), "image.size")

    assert finding.severity is Severity.MEDIUM
    assert "12.5 GiB" in finding.message and "10.0 GiB" in finding.message


def test_config_check_size_at_the_limit_is_fine() -> None:
    assert by_rule(config_findings(image(size_bytes=100), max_image_bytes=100), "image.size") == []


@pytest.mark.parametrize(
    ("count", "text"),
    [(512, "512 B"), (2048, "2.0 KiB"), (5 * 1024**2, "5.0 MiB"), (3 * 1024**4, "3.0 TiB")],
)
def test_human_bytes_binary_units(count: int, text: str) -> None:
    assert inspection.human_bytes(count) == text


# --- ConfigCheck: secrets ----------------------------------------------------------------------


@pytest.mark.parametrize("value", SECRETS_BY_FORMAT.values(), ids=SECRETS_BY_FORMAT.keys())
def test_config_check_value_in_a_secret_format_is_critical_whatever_its_name(value: str) -> None:
    findings = config_findings(image(env=(f"MODEL_SOURCE={value}",), labels={"note": value}))

    [env] = by_rule(findings, "image.secret_env")
    [label] = by_rule(findings, "image.secret_label")
    assert env.severity is label.severity is Severity.CRITICAL
    assert "MODEL_SOURCE" in env.message and "note" in label.message
    assert value not in shown(findings)


def test_config_check_secret_inside_a_longer_value_is_found() -> None:
    token = SECRETS_BY_FORMAT["GitHub token"]

    findings = config_findings(image(env=(f"EXTRA_ARGS=--verbose --token {token} --fast",)))

    [finding] = by_rule(findings, "image.secret_env")
    assert finding.severity is Severity.CRITICAL and "GitHub token" in finding.message
    assert token not in shown(findings)


@pytest.mark.parametrize("name", NAME_SAYS_SECRET)
def test_config_check_name_that_says_secret_with_a_value_is_high(name: str) -> None:
    value = "correct-horse-battery"

    findings = config_findings(image(env=(f"{name}={value}",), labels={name: value}))

    assert [f.severity for f in by_rule(findings, "image.secret_env")] == [Severity.HIGH]
    assert [f.severity for f in by_rule(findings, "image.secret_label")] == [Severity.HIGH]
    assert value not in shown(findings)


@pytest.mark.parametrize("name", NAME_SAYS_NOTHING)
def test_config_check_name_that_says_nothing_with_a_plain_value_is_not_reported(
    name: str,
) -> None:
    findings = config_findings(image(env=(f"{name}=false",), labels={name: "Jane Doe"}))

    assert findings == []


@pytest.mark.parametrize("value", ["", "   ", "$HF_TOKEN", "${HF_TOKEN}", "/run/secrets/hf_token"])
def test_config_check_secret_name_with_empty_reference_or_path_is_not_reported(
    value: str,
) -> None:
    assert config_findings(image(env=(f"HF_TOKEN={value}",), labels={"api-key": value})) == []


@pytest.mark.parametrize(
    ("value", "hint"),
    [("hunter2hunter2", "hunt…"), ("abcdefghi", "abc…"), ("abcdef", "ab…"), ("q7", "…")],
)
def test_config_check_masked_hint_shows_at_most_four_chars_and_a_third(
    value: str, hint: str
) -> None:
    [finding] = config_findings(image(env=(f"DB_PASSWORD={value}",)))

    assert f"({hint})" in finding.message
    assert value not in finding.message


def test_config_check_env_and_labels_identical_in_the_base_are_skipped() -> None:
    token = SECRETS_BY_FORMAT["Hugging Face token"]
    base = image(env=(f"HF_TOKEN={token}", "DB_PASSWORD=old-one"), labels={"api-key": "k1k2k3k4"})
    built = image(
        env=(f"HF_TOKEN={token}", "DB_PASSWORD=new-one"),
        labels={"api-key": "k1k2k3k4", "secret": "s1s2s3s4"},
    )

    findings = config_findings(built, base)

    assert [(f.rule, f.message.split()[1]) for f in findings] == [
        ("image.secret_env", "DB_PASSWORD"),
        ("image.secret_label", "secret"),
    ]


def test_config_check_findings_carry_the_dockerfile_line_that_names_the_key() -> None:
    dockerfile = (
        "FROM proctor/busybox:latest\n"
        "ARG HF_TOKEN\n"
        "ENV A=1 \\\n"
        "    DB_PASSWORD=pw-pw-pw-pw\n"
        'LABEL "api-key"="k1k2k3k4" other=x\n'
        "ENV LEGACY_SECRET value with spaces\n"
    )
    built = image(
        env=("A=1", "DB_PASSWORD=pw-pw-pw-pw", "LEGACY_SECRET=value with spaces"),
        labels={"api-key": "k1k2k3k4"},
        history=("|1 HF_TOKEN=hf-hf-hf-hf /bin/sh -c true",),
    )

    findings = config_findings(built, dockerfile=dockerfile)

    lines = {
        f.message.split()[1] if f.rule != "image.secret_build_arg" else "HF_TOKEN": f.line
        for f in findings
    }
    assert lines == {"DB_PASSWORD": 3, "LEGACY_SECRET": 6, "api-key": 5, "HF_TOKEN": 2}


def test_config_check_key_no_instruction_names_has_no_line() -> None:
    [finding] = config_findings(image(env=("DB_PASSWORD=from-the-base-arg",)))

    assert finding.line is None


def test_config_check_dockerfile_that_does_not_parse_still_reports() -> None:
    [finding] = config_findings(image(env=("DB_PASSWORD=pw-pw-pw-pw",)), dockerfile="FROMM x\n")

    assert finding.rule == "image.secret_env" and finding.line is None


def test_config_check_build_args_from_history_beyond_the_base() -> None:
    """The classic builder records `|N K=V …` on every RUN after an ARG (values may hold
    spaces), and an ARG's default as `#(nop)  ARG K=V`."""
    token = SECRETS_BY_FORMAT["GitHub token"]
    base = image(history=("|1 BASE_TOKEN=base-base-base /bin/sh -c make",))
    built = image(
        history=(
            "|1 BASE_TOKEN=base-base-base /bin/sh -c make",
            "/bin/sh -c #(nop)  ARG TOKEN",
            "/bin/sh -c #(nop)  ARG SETUP_PASSWORD=default-pw-1",
            f"|3 OTHER=with space SETUP_PASSWORD=default-pw-1 TOKEN={token} /bin/sh -c true",
            f"|3 OTHER=with space SETUP_PASSWORD=default-pw-1 TOKEN={token} /bin/sh -c a=b c",
            "/bin/sh -c #(nop)  ENV FOO=bar",
            f"RUN |1 GH={token} /bin/sh -c pip install x # buildkit",
        )
    )

    findings = config_findings(built, base)

    assert [(f.severity, f.message.split()[2]) for f in findings] == [
        (Severity.HIGH, "SETUP_PASSWORD"),
        (Severity.CRITICAL, "TOKEN"),
        (Severity.CRITICAL, "GH"),
    ]
    assert all(f.rule == "image.secret_build_arg" for f in findings)
    assert token not in shown(findings) and "default-pw-1" not in shown(findings)


def test_config_check_build_args_without_a_base_read_all_history() -> None:
    built = image(history=("|1 API_KEY=k1k2k3k4k5 /bin/sh -c true",))

    [finding] = config_findings(built, None)

    assert finding.rule == "image.secret_build_arg" and finding.severity is Severity.HIGH


def test_config_check_names_from_the_image_are_escaped_in_messages() -> None:
    findings = config_findings(image(labels={"secret\n[proctor] fake line": "s1s2s3s4"}))

    assert "\n" not in findings[0].message and "\\n" in findings[0].message


def test_config_check_every_finding_is_from_the_image_source() -> None:
    built = image(
        user="root",
        env=("DB_PASSWORD=pw-pw-pw-pw",),
        labels={"token": "t1t2t3t4"},
        exposed_ports=("80/tcp",),
        size_bytes=2,
        history=("|1 API_KEY=k1k2k3k4k5 /bin/sh -c true",),
    )

    findings = config_findings(built, max_image_bytes=1)

    assert len({f.rule for f in findings}) == 6
    assert {f.source for f in findings} == {"image"}
    assert inspection.ConfigCheck(1).name == "image-config"


# --- FilesCheck ----------------------------------------------------------------------------


def test_files_check_setuid_and_setgid_files_the_submission_added(
    make_archive: ArchiveFactory,
) -> None:
    base = layer(Entry("bin/su", b"su", mode=0o4755))
    added = layer(
        Entry("./usr/local/bin/escalate", b"x", mode=0o4755),
        Entry("usr/local/bin/group", b"x", mode=0o2755),
        Entry("usr/local/bin/both", b"x", mode=0o6755),
        Entry("var/mail", mode=0o2775, kind=tarfile.DIRTYPE),  # a setgid directory: fine
        Entry(
            "usr/local/bin/hard",
            mode=0o4755,
            kind=tarfile.LNKTYPE,
            linkname="usr/local/bin/escalate",
        ),
    )
    archive, _ = make_archive([base, added], base=1)

    findings = file_findings(archive)

    assert [f.path for f in by_rule(findings, "image.setuid")] == [
        "/usr/local/bin/escalate",
        "/usr/local/bin/both",
        "/usr/local/bin/hard",
    ]
    assert [f.path for f in by_rule(findings, "image.setgid")] == [
        "/usr/local/bin/group",
        "/usr/local/bin/both",
    ]
    assert {f.severity for f in findings} == {Severity.MEDIUM}
    assert all("no-new-privileges" in f.message for f in findings)
    assert {f.source for f in findings} == {"image"}


def test_files_check_base_layers_are_not_read(make_archive: ArchiveFactory) -> None:
    base = layer(Entry("bin/su", b"su", mode=0o4755), Entry("root/.netrc", b"machine x"))
    archive, _ = make_archive([base, layer("app/main.py")], base=1)

    assert file_findings(archive) == []


def test_files_check_does_not_save_an_image_that_adds_no_layer(
    make_archive: ArchiveFactory,
) -> None:
    base_layer = layer(Entry("bin/su", b"su", mode=0o4755))
    archive, save = make_archive([base_layer], base=1)
    base = image(id="sha256:base", diff_ids=(sha256(base_layer),))
    built = image(diff_ids=(sha256(base_layer),))  # CMD, ENV, LABEL: metadata only

    findings = inspection.FilesCheck()(Subject("FROM b\nCMD x\n", built, base, archive))

    assert findings == []
    assert save.calls == []


def test_files_check_saves_and_reads_an_image_that_adds_a_layer(
    make_archive: ArchiveFactory,
) -> None:
    base_layer, added = layer("bin/sh"), layer(Entry("app/tool", b"x", mode=0o4755))
    archive, save = make_archive([base_layer, added], base=1)
    base = image(id="sha256:base", diff_ids=(sha256(base_layer),))
    built = image(diff_ids=(sha256(base_layer), sha256(added)))

    findings = inspection.FilesCheck()(Subject("FROM b\nCOPY . .\n", built, base, archive))

    assert [f.path for f in findings] == ["/app/tool"]
    assert len(save.calls) == 1


def test_files_check_private_keys_by_header_and_by_name(make_archive: ArchiveFactory) -> None:
    added = layer(
        Entry("opt/model/deploy_key", PEM_KEY),
        Entry("etc/app/bundle.pem", PEM_CERT + PEM_KEY),  # a key after a certificate
        Entry("home/u/.ssh/id_ed25519", b"whatever it holds"),
        Entry("home/u/.ssh/id_ed25519.pub", b"ssh-ed25519 AAAA"),
        Entry("etc/ssl/certs/ca.pem", PEM_CERT),
        Entry("app/notes.txt", b"see PRIVATE KEY----- handling in the docs"),
    )
    archive, _ = make_archive([added])

    findings = file_findings(archive)

    assert [(f.path, f.severity) for f in findings] == [
        ("/opt/model/deploy_key", Severity.HIGH),
        ("/etc/app/bundle.pem", Severity.HIGH),
        ("/home/u/.ssh/id_ed25519", Severity.HIGH),
    ]
    assert {f.rule for f in findings} == {"image.private_key"}
    assert "BEGIN" not in shown(findings) and "b3BlbnNz" not in shown(findings)


@pytest.mark.parametrize(
    ("size", "offset", "found"),
    [
        (100 * 1024, 60 * 1024, True),  # within the head that is read
        (100 * 1024, 70 * 1024, False),  # past the 64 KiB head
        (1024 * 1024 + 1, 0, False),  # a file over 1 MiB is not read
    ],
)
def test_files_check_reads_only_the_head_of_small_files(
    make_archive: ArchiveFactory, size: int, offset: int, found: bool
) -> None:
    data = bytearray(size)
    data[offset : offset + len(PEM_KEY)] = PEM_KEY
    archive, _ = make_archive([layer(Entry("data/blob", bytes(data)))])

    assert bool(file_findings(archive)) is found


@pytest.mark.parametrize(
    "path",
    [
        "app/.env",
        "root/.netrc",
        "var/lib/postgresql/.pgpass",
        "root/.git-credentials",
        "root/.aws/credentials",
        "root/.docker/config.json",
        "root/.pypirc",
        "home/u/.npmrc",
        "certs/client.p12",
        "certs/CLIENT.PFX",
        "root/.kube/config",
    ],
)
def test_files_check_credentials_files(make_archive: ArchiveFactory, path: str) -> None:
    archive, _ = make_archive([layer(Entry(path, b"user=me"))])

    [finding] = file_findings(archive)

    assert finding.rule == "image.credentials_file" and finding.severity is Severity.MEDIUM
    assert finding.path == "/" + path


@pytest.mark.parametrize(
    "path", ["app/env", "app/.env.py", "etc/docker/config.json", "app/config", "app/credentials"]
)
def test_files_check_files_that_only_look_alike_are_not_credentials(
    make_archive: ArchiveFactory, path: str
) -> None:
    archive, _ = make_archive([layer(Entry(path, b"user=me"))])

    assert file_findings(archive) == []


def test_files_check_files_deleted_in_a_later_layer_are_still_reported(
    make_archive: ArchiveFactory,
) -> None:
    first = layer(
        Entry("opt/key.pem", PEM_KEY),
        Entry("root/.ssh/id_rsa", b"key"),
        Entry("data/.netrc", b"machine x"),
        Entry("app/.env", b"A=1"),
    )
    second = layer(
        Entry("opt/.wh.key.pem"),  # the file
        Entry("root/.wh..ssh"),  # its directory
        Entry("data/.wh..wh..opq"),  # everything under data/ from below
        Entry("data/fresh.txt", b"new"),
    )
    archive, _ = make_archive([first, second])

    findings = file_findings(archive)

    deleted = "(deleted in a later layer, but still in the image)"
    assert {f.path: deleted in f.message for f in findings} == {
        "/opt/key.pem": True,
        "/root/.ssh/id_rsa": True,
        "/data/.netrc": True,
        "/app/.env": False,
    }


def test_files_check_file_added_again_after_its_deletion_is_reported_once_as_present(
    make_archive: ArchiveFactory,
) -> None:
    adds = layer(Entry("root/.netrc", b"machine x"))
    archive, _ = make_archive([adds, layer(Entry("root/.wh..netrc")), adds])

    [finding] = file_findings(archive)

    assert finding.path == "/root/.netrc" and "deleted" not in finding.message


def test_files_check_whiteout_applies_only_to_lower_layers(make_archive: ArchiveFactory) -> None:
    archive, _ = make_archive([layer(Entry("app/.wh..env"), Entry("app/.env", b"A=1"))])

    [finding] = file_findings(archive)

    assert "deleted" not in finding.message


def test_files_check_replaced_file_is_reported_once_as_still_in_the_image(
    make_archive: ArchiveFactory,
) -> None:
    first = layer(
        Entry("usr/local/bin/tool", b"x", mode=0o4755), Entry("bin/again", b"x", mode=0o4755)
    )
    second = layer(
        Entry("usr/local/bin/tool", b"x", mode=0o755), Entry("bin/again", b"y", mode=0o4755)
    )
    archive, _ = make_archive([first, second])

    findings = file_findings(archive)

    assert [(f.path, "replaced in a later layer" in f.message) for f in findings] == [
        ("/usr/local/bin/tool", True),
        ("/bin/again", False),
    ]


def test_files_check_caps_findings_per_rule_then_one_summary(
    make_archive: ArchiveFactory,
) -> None:
    many = [Entry(f"opt/bin/tool{i:02}", b"x", mode=0o4755) for i in range(25)]
    archive, _ = make_archive([layer(*many, Entry("opt/bin/g", b"x", mode=0o2755))])

    findings = by_rule(file_findings(archive), "image.setuid")

    assert len(findings) == inspection.MAX_FINDINGS_PER_RULE + 1 == 21
    assert findings[-1].path is None and "5 more" in findings[-1].message
    assert [f.path for f in findings[:2]] == ["/opt/bin/tool00", "/opt/bin/tool01"]


def test_files_check_cap_is_per_rule(make_archive: ArchiveFactory) -> None:
    entries = [Entry(f"bin/u{i}", b"x", mode=0o4755) for i in range(3)]
    entries += [Entry(f"bin/g{i}", b"x", mode=0o2755) for i in range(2)]
    archive, _ = make_archive([layer(*entries)])

    findings = file_findings(archive, inspection.FilesCheck(max_findings_per_rule=2))

    assert [(f.rule, f.path) for f in findings] == [
        ("image.setuid", "/bin/u0"),
        ("image.setuid", "/bin/u1"),
        ("image.setuid", None),
        ("image.setgid", "/bin/g0"),
        ("image.setgid", "/bin/g1"),
    ]


def test_files_check_skips_file_data_instead_of_reading_it() -> None:
    """Only the heads of small files are read: a big file's data is seeked over."""
    big = b"\0" * (8 * 1024 * 1024)
    stream = CountingReads(layer(Entry("models/weights.bin", big), Entry("k", PEM_KEY)))

    findings = file_findings(OneLayer(stream))

    assert [f.path for f in findings] == ["/k"]
    assert stream.bytes_read < 64 * 1024


def test_files_check_reads_an_unseekable_stream() -> None:
    stream = Unseekable(
        layer(Entry("big", b"\0" * 100_000), Entry("root/.netrc", b"m"), Entry("k", PEM_KEY))
    )

    findings = file_findings(OneLayer(stream))

    assert [f.path for f in findings] == ["/root/.netrc", "/k"]


def unreadable_layer(kind: str) -> bytes:
    if kind == "garbage":
        return b"this is not a tar archive at all\n" * 100
    whole = gzip.compress(layer(Entry("a", bytes(range(256)) * 400)), mtime=0)
    return whole[: len(whole) // 2]


@pytest.mark.parametrize("kind", ["garbage", "truncated gzip"])
def test_files_check_unreadable_layer_raises_check_error(
    make_archive: ArchiveFactory, kind: str
) -> None:
    archive, _ = make_archive([unreadable_layer(kind)])

    with pytest.raises(exceptions.CheckError, match="not a readable tar"):
        file_findings(archive)


def test_files_check_odd_names_are_made_printable(make_archive: ArchiveFactory) -> None:
    archive, _ = make_archive([layer(Entry("app/evil\nname/.env", b"A=1"))])

    [finding] = file_findings(archive)

    assert finding.path == "/app/evil\\nname/.env"
    assert inspection.FilesCheck().name == "image-files"
