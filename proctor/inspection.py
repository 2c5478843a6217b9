"""proctor's own checks of a built image: its configuration (user, secrets, ports, size)
and the files its submission added (setuid, private keys, credentials), read from `docker save`."""

from __future__ import annotations

import gzip
import itertools
import json
import posixpath
import re
import shlex
import stat
import tarfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final, TypeGuard, cast

from proctor import exceptions, intake, sandbox
from proctor.checks import Finding, Severity, Subject
from proctor.engine import ImageInfo

SOURCE: Final = "image"  # the `source` of every finding this module reports
TARBALL_NAME: Final = "image.tar"
MANIFEST_NAME: Final = "manifest.json"
MAX_METADATA_BYTES: Final = 16 * 1024 * 1024  # manifest.json, the config JSON
SNIFF_BYTES: Final = 4
GZIP_MAGIC: Final = b"\x1f\x8b"
ZSTD_MAGIC: Final = b"\x28\xb5\x2f\xfd"

MAX_FINDINGS_PER_RULE: Final = 20  # files listed one by one, then one summary finding
MAX_KEY_FILE_BYTES: Final = 1024 * 1024  # larger files are not read for a PEM header
KEY_SCAN_BYTES: Final = 64 * 1024  # how much of a smaller file is read
MIN_KEY_FILE_BYTES: Final = len("-----BEGIN PRIVATE KEY-----")
MASK_VISIBLE_CHARS: Final = 4  # of a secret value, and never more than a third of it
MAX_SHOWN_NAME_CHARS: Final = 120  # names, ports and hints come from the submission
MAX_SHOWN_PATH_CHARS: Final = 1024

# --- What a secret looks like ---------------------------------------------------------

_NOT_BEFORE: Final = r"(?<![A-Za-z0-9])"
PRIVATE_KEY_PEM: Final = r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----"
# A value matching one of these is a secret whatever its name (severity critical).
SECRET_FORMATS: Final[tuple[tuple[str, re.Pattern[str]], ...]] = tuple(
    (what, re.compile(pattern))
    for what, pattern in (
        ("a private key", PRIVATE_KEY_PEM),
        ("an AWS access key id", _NOT_BEFORE + r"(?:AKIA|ASIA)[0-9A-Z]{16}(?![0-9A-Z])"),
        ("a GitHub token", _NOT_BEFORE + r"gh[opusr]_[A-Za-z0-9]{36}"),
        ("a GitHub token", _NOT_BEFORE + r"github_pat_[A-Za-z0-9_]{22,}"),
        ("a GitLab token", _NOT_BEFORE + r"glpat-[A-Za-z0-9_\-]{20,}"),
        ("a Slack token", _NOT_BEFORE + r"xox[abprs]-[A-Za-z0-9\-]{10,}"),
        ("a Google API key", _NOT_BEFORE + r"AIza[0-9A-Za-z_\-]{35}"),
        ("a Stripe secret key", _NOT_BEFORE + r"[sr]k_live_[0-9A-Za-z]{20,}"),
        ("an OpenAI-style API key", _NOT_BEFORE + r"sk-[A-Za-z0-9_\-]{32,}"),
        ("a Hugging Face token", _NOT_BEFORE + r"hf_[A-Za-z]{30,}"),
        (
            "a JSON web token",
            _NOT_BEFORE + r"eyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]*",
        ),
    )
)
# A name whose words say secret (a word may end with one: DBPASSWORD, AUTHTOKEN).
SECRET_NAME_WORD: Final = re.compile(
    r"[A-Z0-9]*(?:PASSWORD|PASSWD|SECRET|TOKEN|APIKEY|ACCESSKEY|PRIVATEKEY|CREDENTIAL)S?|AUTH|PASS"
)
SECRET_NAME_PAIRS: Final = frozenset({("API", "KEY"), ("ACCESS", "KEY"), ("PRIVATE", "KEY")})
# Values that hold no secret themselves, whatever the name: a reference or a file path.
NOT_A_SECRET_VALUE: Final = re.compile(r"\$[A-Za-z_][A-Za-z0-9_]*|\$\{[^}]*\}|(?:/|\./|~/)\S*")

# --- What a key or credentials file looks like ------------------------------------------

PRIVATE_KEY_HEADER: Final = re.compile(PRIVATE_KEY_PEM.encode())
PRIVATE_KEY_MARKER: Final = b"PRIVATE KEY-----"  # a cheap test before the regex
KEY_FILE_NAMES: Final = frozenset(
    {"id_rsa", "id_dsa", "id_ecdsa", "id_ed25519", "id_ecdsa_sk", "id_ed25519_sk"}
)
CREDENTIALS_FILE_NAMES: Final = frozenset(
    {".env", ".netrc", ".pgpass", ".git-credentials", ".pypirc", ".npmrc"}
)
CREDENTIALS_FILE_PATHS: Final = (".aws/credentials", ".docker/config.json", ".kube/config")
CREDENTIALS_FILE_SUFFIXES: Final = (".p12", ".pfx")

WHITEOUT_PREFIX: Final = ".wh."
OPAQUE_WHITEOUT: Final = ".wh..wh..opq"  # the directory's lower-layer content is hidden
WHITEOUT_META_PREFIX: Final = ".wh..wh."  # aufs bookkeeping, not a deletion
DELETED: Final = "deleted"
REPLACED: Final = "replaced"

_LAYER_READ_ERRORS: Final = (tarfile.TarError, OSError, EOFError, zlib.error)


# --- The saved image ---------------------------------------------------------------------


class ImageArchive:
    """The image as `docker save` writes it, saved on first use; its layers are read in
    place from the tarball (legacy `<id>/layer.tar` or OCI `blobs/sha256/<hex>` layout)."""

    def __init__(
        self, save: Callable[[Path], None], workdir: Path, base_diff_ids: frozenset[str]
    ) -> None:
        self._save = save
        self._path = workdir / TARBALL_NAME
        self._base_diff_ids = base_diff_ids
        self._saved = False
        self._failure: str | None = None  # a failed save is not tried again

    def tarball(self) -> Path:
        if self._failure is not None:
            raise exceptions.CheckError(self._failure)
        if not self._saved:
            try:
                self._save(self._path)
            except (exceptions.EngineError, OSError) as exc:
                self._failure = f"the image could not be saved: {exc}"
                raise exceptions.CheckError(self._failure) from exc
            self._saved = True
        return self._path

    def new_layers(self) -> Iterator[tuple[str, IO[bytes]]]:
        path = self.tarball()
        try:
            with tarfile.open(path, mode="r:") as archive:
                for diff_id, member in _layer_members(archive):
                    if diff_id in self._base_diff_ids:
                        continue
                    with _open_member(archive, member) as stream:
                        with _uncompressed(stream, diff_id) as layer:
                            yield diff_id, layer
        except _LAYER_READ_ERRORS as exc:
            raise exceptions.CheckError(f"the saved image is not readable: {exc}") from exc


def _layer_members(archive: tarfile.TarFile) -> list[tuple[str, str]]:
    """(diff id, member name) of every layer, bottom first, from manifest.json and the
    image config it names."""
    manifest = _read_json(archive, MANIFEST_NAME)
    if not isinstance(manifest, list) or len(manifest) != 1 or not isinstance(manifest[0], dict):
        raise exceptions.CheckError("manifest.json does not describe exactly one image")
    entry: dict[str, Any] = manifest[0]
    config_name, layers = entry.get("Config"), entry.get("Layers")
    if not isinstance(config_name, str) or not _strings(layers):
        raise exceptions.CheckError("manifest.json has no Config or Layers")
    config = _read_json(archive, config_name)
    rootfs = config.get("rootfs") if isinstance(config, dict) else None
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not _strings(diff_ids):
        raise exceptions.CheckError("the image config has no rootfs.diff_ids")
    if len(diff_ids) != len(layers):
        raise exceptions.CheckError(
            f"the image has {len(diff_ids)} diff ids but {len(layers)} layers"
        )
    return list(zip(diff_ids, layers, strict=True))


def _strings(value: object) -> TypeGuard[list[str]]:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _open_member(archive: tarfile.TarFile, name: str) -> IO[bytes]:
    """A member's content read in place; a symlink (Docker's legacy layout links a layer
    saved twice) is followed inside the archive."""
    try:
        member = archive.getmember(name)
    except KeyError as exc:
        raise exceptions.CheckError(f"the saved image has no {name}") from exc
    stream = archive.extractfile(member)
    if stream is None:
        raise exceptions.CheckError(f"{name} in the saved image is not a file")
    return stream


def _read_json(archive: tarfile.TarFile, name: str) -> Any:
    with _open_member(archive, name) as stream:
        data = stream.read(MAX_METADATA_BYTES + 1)
    if len(data) > MAX_METADATA_BYTES:
        raise exceptions.CheckError(f"{name} in the saved image is too large")
    try:
        return json.loads(data)
    except ValueError as exc:
        raise exceptions.CheckError(f"{name} in the saved image is not JSON: {exc}") from exc


def _uncompressed(stream: IO[bytes], diff_id: str) -> IO[bytes]:
    """The layer's tar: as saved, or gunzipped (an OCI blob may be compressed)."""
    magic = stream.read(SNIFF_BYTES)
    stream.seek(0)
    if magic.startswith(GZIP_MAGIC):
        return cast(IO[bytes], gzip.GzipFile(fileobj=stream, mode="rb"))
    if magic.startswith(ZSTD_MAGIC):
        raise exceptions.CheckError(f"layer {diff_id} is zstd-compressed, which is not supported")
    return stream


# --- The image's configuration -------------------------------------------------------------


class ConfigCheck:
    """What the image's configuration says: the user it runs as, secrets in its
    environment, labels and build arguments, exposed ports, its size."""

    name = "image-config"

    def __init__(self, max_image_bytes: int) -> None:
        self.max_image_bytes = max_image_bytes

    def __call__(self, subject: Subject) -> list[Finding]:
        image, base = subject.image, subject.base
        lines = _DeclaredKeys.of(subject.dockerfile)
        findings = [*_root_user(image)]
        base_env = set(base.env) if base else set()
        for entry in image.env:
            if entry not in base_env:
                name, _, value = entry.partition("=")
                findings += _secret("image.secret_env", "variable", name, value, lines.env)
        base_labels = base.labels if base else {}
        for key, value in image.labels.items():
            if base_labels.get(key) != value:
                findings += _secret("image.secret_label", "label", key, value, lines.label)
        for name, value in _build_args(image, base):
            findings += _secret("image.secret_build_arg", "build argument", name, value, lines.arg)
        findings += _exposed_ports(image, base, lines.expose)
        if image.size_bytes > self.max_image_bytes:
            findings.append(
                Finding(
                    "image.size",
                    Severity.MEDIUM,
                    f"the image is {human_bytes(image.size_bytes)}, over the limit of "
                    f"{human_bytes(self.max_image_bytes)}",
                    source=SOURCE,
                )
            )
        return findings


def human_bytes(count: int) -> str:
    """`10.0 GiB`, `512 B`: binary units."""
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{count} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def _root_user(image: ImageInfo) -> Iterator[Finding]:
    if image.user.split(":", 1)[0].strip() in sandbox.ROOT_USERS:
        shown = f"USER {_shown(image.user)}" if image.user.strip() else "no USER"
        yield Finding(
            "image.root_user",
            Severity.LOW,
            f"the image runs as root ({shown}); proctor runs it as an unprivileged uid "
            "instead, so the job still runs but cannot write where only root may",
            source=SOURCE,
        )


def _exposed_ports(image: ImageInfo, base: ImageInfo | None, line: int | None) -> list[Finding]:
    ports = sorted(set(image.exposed_ports) - set(base.exposed_ports if base else ()))
    if not ports:
        return []
    listed = ", ".join(_shown(port) for port in ports)
    return [
        Finding(
            "image.exposed_port",
            Severity.LOW,
            f"the image exposes {listed}: irrelevant here, the sandbox has no network",
            line=line,
            source=SOURCE,
        )
    ]


def _secret(rule: str, kind: str, name: str, value: str, lines: Mapping[str, int]) -> list[Finding]:
    """A finding when the value has a secret's format (critical) or the name says it is a
    secret and the value is not empty, a reference or a path (high). Never the value."""
    what = next((what for what, pattern in SECRET_FORMATS if pattern.search(value)), None)
    if what is not None:
        severity = Severity.CRITICAL
        said = f"holds what looks like {what}"
    elif _secret_name(name) and value.strip() and not NOT_A_SECRET_VALUE.fullmatch(value.strip()):
        severity = Severity.HIGH
        said = "is named like a secret and has a value"
    else:
        return []
    message = (
        f"{kind} {_shown(name)} {said} ({mask(value)}): anyone with the image can read it; "
        "pass secrets at run time, not in the image"
    )
    return [Finding(rule, severity, message, line=lines.get(name), source=SOURCE)]


def _secret_name(name: str) -> bool:
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)  # camelCase: apiKey → api_Key
    words = [word for word in re.split(r"[^A-Za-z0-9]+", spaced.upper()) if word]
    return any(SECRET_NAME_WORD.fullmatch(word) for word in words) or any(
        pair in SECRET_NAME_PAIRS for pair in itertools.pairwise(words)
    )


def mask(value: str) -> str:
    """A hint of a secret: its first characters, at most a third of it, then `…`."""
    return _shown(value[: min(MASK_VISIBLE_CHARS, len(value) // 3)]) + "…"


def _shown(text: str, limit: int = MAX_SHOWN_NAME_CHARS) -> str:
    """Text from the image, safe in one log line: control characters escaped, cut short."""
    if text.isprintable():  # nearly always, and fast: paths are shown for every file
        escaped = text
    else:
        escaped = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return escaped[:limit] + "…" if len(escaped) > limit else escaped


_BUILD_ARGS = re.compile(r"(?:RUN )?\|(\d+) (.*)", re.DOTALL)
_ARG_DEFAULT = re.compile(
    r"(?:/bin/sh -c #\(nop\)\s+)?ARG ([^\s=]+)=(.*?)(?: # buildkit)?", re.DOTALL
)
_PAIR_START = re.compile(r"(?:^| )([^\s=]+)=")
_SHELL_AFTER_ARGS = re.compile(r" (?:/bin/sh -c|/bin/bash -c|cmd /S /C) ")


def _build_args(image: ImageInfo, base: ImageInfo | None) -> list[tuple[str, str]]:
    """(name, value) of the build arguments the submission's history records: the
    classic builder writes `|N K=V … /bin/sh -c …` for each RUN, an ARG's default shows
    as `#(nop)  ARG K=V`. Each pair once."""
    found: dict[tuple[str, str], None] = {}
    for created_by in image.history[len(base.history) if base else 0 :]:
        if match := _BUILD_ARGS.fullmatch(created_by):
            for pair in _history_pairs(int(match.group(1)), match.group(2)):
                found[pair] = None
        elif match := _ARG_DEFAULT.fullmatch(created_by):
            found[(match.group(1), match.group(2))] = None
    return list(found)


def _history_pairs(count: int, text: str) -> list[tuple[str, str]]:
    """The `count` pairs at the start of `text`; a value runs to the next pair, the last
    one to the shell (or the first space). The record is plain text: a value that holds
    ` K=` is split there."""
    starts = list(_PAIR_START.finditer(text))[:count]
    pairs = []
    for index, start in enumerate(starts):
        if index + 1 < len(starts):
            end = starts[index + 1].start()
        else:
            shell = _SHELL_AFTER_ARGS.search(text, start.end())
            space = text.find(" ", start.end())
            end = shell.start() if shell else (space if space >= 0 else len(text))
        pairs.append((start.group(1), text[start.end() : end]))
    return pairs


@dataclass(frozen=True)
class _DeclaredKeys:
    """The Dockerfile line that last names each ENV, LABEL and ARG key, and the last EXPOSE."""

    env: Mapping[str, int]
    label: Mapping[str, int]
    arg: Mapping[str, int]
    expose: int | None

    @classmethod
    def of(cls, dockerfile: str) -> _DeclaredKeys:
        keys: dict[str, dict[str, int]] = {"ENV": {}, "LABEL": {}, "ARG": {}}
        expose = None
        try:
            instructions = intake.parse_dockerfile(dockerfile)
        except exceptions.DockerfileSyntaxError:
            instructions = []  # it parsed at submission; without lines the findings stand
        for instruction in instructions:
            if instruction.keyword == "EXPOSE":
                expose = instruction.line
            elif instruction.keyword in keys:
                for key in _declared(instruction.keyword, instruction.value):
                    keys[instruction.keyword][key] = instruction.line
        return cls(keys["ENV"], keys["LABEL"], keys["ARG"], expose)


def _declared(keyword: str, value: str) -> Sequence[str]:
    try:
        words = shlex.split(value)
    except ValueError:
        words = value.split()
    if keyword == "ENV" and words and "=" not in words[0]:
        return words[:1]  # the legacy `ENV NAME value` form
    return [word.split("=", 1)[0] for word in words]


# --- The files the submission added --------------------------------------------------------


@dataclass
class _Hit:
    rule: str
    severity: Severity
    what: str  # the kind of file
    why: str  # what it means, after the note that it is hidden
    path: str
    layer: int
    hidden: str | None = None  # DELETED or REPLACED by a later layer


class FilesCheck:
    """Files the submission's layers add: setuid/setgid files, private keys, credentials
    files. Each layer is streamed once; only small files are read, and only their head."""

    name = "image-files"

    def __init__(self, max_findings_per_rule: int = MAX_FINDINGS_PER_RULE) -> None:
        self.max_findings_per_rule = max_findings_per_rule

    def __call__(self, subject: Subject) -> list[Finding]:
        if subject.image.diff_ids and set(subject.image.diff_ids) <= subject.base_diff_ids:
            # Only metadata steps (CMD, ENV, LABEL…) on top of the base: no file to read,
            # and no reason to save the whole image from the engine.
            return []
        hits: list[_Hit] = []
        by_path: dict[str, list[_Hit]] = {}
        for index, (diff_id, stream) in enumerate(subject.layers.new_layers()):
            try:
                removed = self._scan_layer(index, stream, hits, by_path)
            except _LAYER_READ_ERRORS as exc:
                raise exceptions.CheckError(
                    f"layer {diff_id} is not a readable tar: {exc}"
                ) from exc
            if removed.deleted or removed.opaque:
                for hit in hits:
                    if hit.layer < index and hit.hidden is None and removed.covers(hit.path):
                        hit.hidden = DELETED
        return self._findings(hits)

    def _scan_layer(
        self, index: int, stream: IO[bytes], hits: list[_Hit], by_path: dict[str, list[_Hit]]
    ) -> _Removed:
        removed = _Removed(set(), set())
        # Random access skips file data by seeking; a stream reads through it.
        with tarfile.open(fileobj=stream, mode="r:" if stream.seekable() else "r|") as tar:
            while (member := tar.next()) is not None:
                # TarFile keeps every header it reads (memory per file in the layer). The
                # list is undocumented (typeshed leaves it out); only getmembers() and the
                # lookup of a link's target read it, and neither runs here.
                tar.members.clear()  # type: ignore[attr-defined]
                path = _image_path(member.name)
                directory, name = posixpath.split(path)
                if name.startswith(WHITEOUT_PREFIX):
                    if name == OPAQUE_WHITEOUT:
                        removed.opaque.add(directory)
                    elif not name.startswith(WHITEOUT_META_PREFIX):
                        removed.deleted.add(posixpath.join(directory, name[len(WHITEOUT_PREFIX) :]))
                    continue
                for earlier in by_path.get(path, ()):
                    if earlier.layer < index and earlier.hidden is None:
                        earlier.hidden = REPLACED
                for rule, severity, what, why in _file_rules(tar, member, name, path):
                    hit = _Hit(rule, severity, what, why, path, index)
                    hits.append(hit)
                    by_path.setdefault(path, []).append(hit)
        return removed

    def _findings(self, hits: Iterable[_Hit]) -> list[Finding]:
        # One finding per rule and path: the version still visible wins over a hidden one.
        kept: dict[tuple[str, str], _Hit] = {}
        for hit in hits:
            current = kept.get((hit.rule, hit.path))
            if current is None or (current.hidden and not hit.hidden):
                kept[(hit.rule, hit.path)] = hit
        by_rule: dict[str, list[_Hit]] = {}
        for hit in kept.values():
            by_rule.setdefault(hit.rule, []).append(hit)
        findings: list[Finding] = []
        for rule, rule_hits in by_rule.items():
            for hit in rule_hits[: self.max_findings_per_rule]:
                hidden = f" ({hit.hidden} in a later layer, but still in the image)"
                message = hit.what + (hidden if hit.hidden else "") + hit.why
                findings.append(Finding(rule, hit.severity, message, path=hit.path, source=SOURCE))
            more = rule_hits[self.max_findings_per_rule :]
            if more:
                message = f"{len(more)} more file(s) like those above, not listed: {more[0].what}"
                message += more[0].why
                findings.append(Finding(rule, more[0].severity, message, source=SOURCE))
        return findings


@dataclass(frozen=True)
class _Removed:
    """What a layer's whiteouts hide of the layers below it."""

    deleted: set[str]  # these paths and everything under them
    opaque: set[str]  # everything under these directories

    def covers(self, path: str) -> bool:
        if path in self.deleted:
            return True
        parent = posixpath.dirname(path)
        while True:
            if parent in self.deleted or parent in self.opaque:
                return True
            if parent == "/":
                return False
            parent = posixpath.dirname(parent)


def _image_path(name: str) -> str:
    """`./usr/bin/su` → `/usr/bin/su`, printable (the names are the submission's)."""
    text = name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return _shown(
        posixpath.normpath("/" + text.removeprefix("./").lstrip("/")), MAX_SHOWN_PATH_CHARS
    )


def _file_rules(
    tar: tarfile.TarFile, member: tarfile.TarInfo, name: str, path: str
) -> Iterator[tuple[str, Severity, str, str]]:
    """(rule, severity, what the file is, what that means) for each rule the file breaks."""
    if not (member.isreg() or member.islnk()):  # a hard link shares the file's mode
        return
    if member.mode & stat.S_ISUID:
        yield ("image.setuid", Severity.MEDIUM, "a file with the setuid bit", _NO_NEW_PRIVILEGES)
    if member.mode & stat.S_ISGID:
        yield ("image.setgid", Severity.MEDIUM, "a file with the setgid bit", _NO_NEW_PRIVILEGES)
    if name in KEY_FILE_NAMES:
        yield ("image.private_key", Severity.HIGH, f"an SSH private key file ({name})", _READABLE)
    elif member.isreg() and _holds_private_key(tar, member):
        yield ("image.private_key", Severity.HIGH, "a private key (PEM header)", _READABLE)
    if _credentials_file(name, path):
        yield ("image.credentials_file", Severity.MEDIUM, "a credentials file", _READABLE)


_NO_NEW_PRIVILEGES: Final = "; no-new-privileges stops it from gaining privileges in the sandbox"
_READABLE: Final = ": anyone with the image can read it"


def _holds_private_key(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bool:
    if not MIN_KEY_FILE_BYTES <= member.size <= MAX_KEY_FILE_BYTES:
        return False
    stream = tar.extractfile(member)
    if stream is None:
        return False
    with stream:
        head = stream.read(KEY_SCAN_BYTES)
    return PRIVATE_KEY_MARKER in head and PRIVATE_KEY_HEADER.search(head) is not None


def _credentials_file(name: str, path: str) -> bool:
    return (
        name in CREDENTIALS_FILE_NAMES
        or name.lower().endswith(CREDENTIALS_FILE_SUFFIXES)
        or any(path.endswith("/" + suffix) for suffix in CREDENTIALS_FILE_PATHS)
    )
