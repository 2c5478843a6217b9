"""External vulnerability scanners (Trivy, Grype) as proctor checks: each runs on the
saved image without network and its JSON report becomes findings."""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Literal, TypeGuard

from proctor import exceptions
from proctor.checks import Finding, Severity, Subject

log = logging.getLogger(__name__)

ScannerName = Literal["trivy", "grype"]
KNOWN_SCANNERS: tuple[ScannerName, ...] = ("trivy", "grype")

STDERR_TAIL_BYTES = 2048  # what an error message quotes of the scanner's stderr
SUMMARY_MAX_CHARS = 120  # the title or first sentence a finding's message quotes
# Trivy stops itself after its own --timeout (5 min by default). Ours must fire first so
# that a slow scan reads as `<name>.timeout`, not as Trivy's "context deadline exceeded".
TRIVY_OWN_TIMEOUT_SLACK_SECONDS = 30
KILL_WAIT_SECONDS = 10  # for the scanner to be reaped once its group was sent SIGKILL

BASE_IMAGE_NOTE = " (in the base image)"
# Scanners' own words, any case. LOW, NEGLIGIBLE (Debian, via Grype), UNKNOWN and
# anything new read as low: a severity nobody assigned should not block a job.
SEVERITIES = {
    "critical": Severity.CRITICAL,
    "high": Severity.HIGH,
    "medium": Severity.MEDIUM,
}

# Scanner names already reported missing from PATH: say so once per process, not per job.
_reported_missing: set[str] = set()


def is_known(name: str) -> TypeGuard[ScannerName]:
    return name in KNOWN_SCANNERS


class ScannerCheck:
    """Run Trivy or Grype on the image as `docker save` wrote it, with no network: both
    read the vulnerability database the operator installed and keeps up to date."""

    def __init__(self, name: ScannerName, executable: str, timeout_seconds: float) -> None:
        self.name: str = name
        self.scanner: ScannerName = name
        self.executable = executable
        self.timeout_seconds = timeout_seconds

    def __call__(self, subject: Subject) -> list[Finding]:
        tarball = subject.layers.tarball()
        with tempfile.TemporaryDirectory(prefix=f"proctor-{self.scanner}-") as scratch:
            report_path = Path(scratch) / "report.json"
            stderr_path = Path(scratch) / "stderr.log"
            # Reports of big images run to tens of megabytes: to a file, not a pipe.
            with report_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
                returncode = self._run(self.command(tarball), stdout, stderr)
            if returncode is None:
                return [self._timeout_finding()]
            if returncode != 0:
                how = (
                    f"was killed by signal {-returncode}"
                    if returncode < 0
                    else f"exited with {returncode}"
                )
                raise exceptions.CheckError(f"{self.scanner} {how}: {_tail(stderr_path)}")
            report = self._load(report_path)
        if self.scanner == "trivy":
            return parse_trivy(report, subject.base_diff_ids)
        return parse_grype(report, subject.base_diff_ids)

    def command(self, tarball: Path) -> list[str]:
        if self.scanner == "trivy":
            # Trivy caches each layer it analysed under its diff id in its cache dir, so
            # the base image's layers, unchanged from job to job, are analysed once.
            own_timeout = math.ceil(self.timeout_seconds) + TRIVY_OWN_TIMEOUT_SLACK_SECONDS
            return [
                self.executable,
                "image",
                "--input",
                str(tarball),
                "--format",
                "json",
                "--quiet",
                "--scanners",
                "vuln",
                "--skip-db-update",
                "--skip-java-db-update",
                "--offline-scan",
                "--timeout",
                f"{own_timeout}s",
            ]
        return [self.executable, f"docker-archive:{tarball}", "-o", "json"]

    def environment(self) -> dict[str, str]:
        """The inherited environment (the scanner's cache dir and config live there) with
        every update check and phone-home turned off."""
        if self.scanner == "trivy":
            # Variables, not --skip-version-check/--disable-telemetry: a Trivy older than
            # those checks rejects unknown flags but ignores unknown variables.
            quiet = {"TRIVY_SKIP_VERSION_CHECK": "true", "TRIVY_DISABLE_TELEMETRY": "true"}
        else:
            quiet = {"GRYPE_DB_AUTO_UPDATE": "false", "GRYPE_CHECK_FOR_APP_UPDATE": "false"}
        return {**os.environ, **quiet}

    def _run(self, command: list[str], stdout: IO[bytes], stderr: IO[bytes]) -> int | None:
        """The scanner's exit code, or None when it did not finish in time. Its own process
        group, so that killing it also kills whatever it started."""
        try:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                env=self.environment(),
                start_new_session=True,
            )
        except OSError as exc:
            raise exceptions.CheckError(f"{self.scanner} could not start: {exc}") from exc
        try:
            return process.wait(timeout=self.timeout_seconds)
        except subprocess.TimeoutExpired:
            return None
        finally:
            # Also reached on KeyboardInterrupt or a worker shutting down mid-scan.
            if process.returncode is None:
                _kill_group(process)

    def _timeout_finding(self) -> Finding:
        return Finding(
            f"{self.scanner}.timeout",
            Severity.MEDIUM,
            f"{self.scanner} did not finish within {self.timeout_seconds:g} s; "
            f"the image was not scanned by it",
            source=self.scanner,
        )

    def _load(self, path: Path) -> Mapping[str, Any]:
        try:
            with path.open("rb") as report:
                loaded: Any = json.load(report)
        except ValueError as exc:  # also UnicodeDecodeError
            raise exceptions.CheckError(
                f"{self.scanner} printed something that is not JSON: {exc}"
            ) from exc
        if not isinstance(loaded, Mapping):
            raise exceptions.CheckError(f"{self.scanner}'s report is not a JSON object")
        return loaded


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # the group is already gone
    try:
        process.wait(timeout=KILL_WAIT_SECONDS)
    except subprocess.TimeoutExpired:
        log.error("scanner process %d survived SIGKILL for %d s", process.pid, KILL_WAIT_SECONDS)


def _tail(path: Path) -> str:
    with path.open("rb") as stderr:
        stderr.seek(max(0, path.stat().st_size - STDERR_TAIL_BYTES))
        tail = stderr.read().decode(errors="replace").strip()
    return tail or "(nothing on stderr)"


def find_scanners(names: Sequence[str], timeout_seconds: float) -> list[ScannerCheck]:
    """A check for each named scanner installed on PATH. A missing one is logged, not an
    error: scanners are optional, the operator installs the ones they want."""
    unknown = [name for name in names if not is_known(name)]
    if unknown:
        raise ValueError(
            f"unknown scanner(s) {', '.join(map(repr, unknown))}; "
            f"known: {', '.join(KNOWN_SCANNERS)}"
        )
    checks = []
    for name in [name for name in dict.fromkeys(names) if is_known(name)]:
        executable = shutil.which(name)
        if executable is not None:
            checks.append(ScannerCheck(name, executable, timeout_seconds))
        elif name not in _reported_missing:
            _reported_missing.add(name)
            log.warning("%s is not on PATH: images are not scanned by it", name)
    return checks


# --- Reports --------------------------------------------------------------------------


def parse_trivy(report: Mapping[str, Any], base_diff_ids: frozenset[str]) -> list[Finding]:
    """`trivy image --format json` (SchemaVersion 2) as findings."""
    shape = _Shape("trivy")
    if not isinstance(report, Mapping) or report.get("SchemaVersion") != 2:
        version = report.get("SchemaVersion") if isinstance(report, Mapping) else None
        raise exceptions.CheckError(
            f"trivy's report is not SchemaVersion 2 JSON (SchemaVersion {version!r})"
        )
    findings = []
    # Results is left out when the image has nothing Trivy knows how to scan.
    for result in shape.items(report, "Results"):
        # Vulnerabilities is null or left out for a target with none.
        for vuln in shape.items(result, "Vulnerabilities"):
            layer = vuln.get("Layer") or {}
            in_base = isinstance(layer, Mapping) and layer.get("DiffID") in base_diff_ids
            path = vuln.get("PkgPath") or (
                result.get("Target") if result.get("Class") == "lang-pkgs" else None
            )
            findings.append(
                _finding(
                    "trivy",
                    rule=shape.text(vuln, "VulnerabilityID"),
                    severity=vuln.get("Severity"),
                    package=shape.text(vuln, "PkgName"),
                    installed=shape.text(vuln, "InstalledVersion"),
                    fixed=_optional_text(vuln.get("FixedVersion")),
                    summary=_optional_text(vuln.get("Title")) or _first_sentence(vuln),
                    in_base=in_base,
                    path=_optional_text(path),
                )
            )
    return _worst_of_each(findings)


def parse_grype(report: Mapping[str, Any], base_diff_ids: frozenset[str]) -> list[Finding]:
    """`grype -o json` as findings."""
    shape = _Shape("grype")
    if not isinstance(report, Mapping) or not isinstance(report.get("matches"), list):
        raise exceptions.CheckError("grype's report has no list of matches")
    findings = []
    for match in shape.items(report, "matches"):
        vuln = shape.mapping(match, "vulnerability")
        artifact = shape.mapping(match, "artifact")
        locations = shape.items(artifact, "locations")
        # A package counts as the base image's when every file that shows it is in a base
        # layer. Syft puts a file in the topmost layer that holds it, and a package
        # database (/var/lib/dpkg/status, /lib/apk/db/installed) is rewritten by every
        # install: once the submission installs anything, the base's OS packages are
        # reported in its layer too and are not capped. Over-reporting is the safe side.
        layer_ids = [location.get("layerID") for location in locations]
        in_base = bool(layer_ids) and all(layer in base_diff_ids for layer in layer_ids)
        fix = vuln.get("fix") or {}
        versions = fix.get("versions") if isinstance(fix, Mapping) else None
        fixed = ", ".join(str(v) for v in versions) if isinstance(versions, list) else ""
        # Distro feeds (Debian, Ubuntu) carry no description; the NVD record does.
        related = [r for r in match.get("relatedVulnerabilities") or [] if isinstance(r, Mapping)]
        described = next((r for r in [vuln, *related] if _optional_text(r.get("description"))), {})
        findings.append(
            _finding(
                "grype",
                rule=shape.text(vuln, "id"),
                severity=vuln.get("severity"),
                package=shape.text(artifact, "name"),
                installed=shape.text(artifact, "version"),
                fixed=fixed or None,
                summary=_first_sentence(described, key="description"),
                in_base=in_base,
                path=_optional_text(locations[0].get("path")) if locations else None,
            )
        )
    return _worst_of_each(findings)


class _Shape:
    """Reads one scanner's report, turning anything not of the expected shape into a
    CheckError that names the scanner (never a KeyError or TypeError)."""

    def __init__(self, scanner: str) -> None:
        self.scanner = scanner

    def fail(self, what: str) -> exceptions.CheckError:
        return exceptions.CheckError(
            f"{self.scanner}'s report is not of the expected shape: {what}"
        )

    def mapping(self, parent: Mapping[str, Any], key: str) -> Mapping[str, Any]:
        value = parent.get(key)
        if not isinstance(value, Mapping):
            raise self.fail(f"{key!r} is {_kind(value)}, not an object")
        return value

    def items(self, parent: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
        """The objects of a list that may be null or left out."""
        value = parent.get(key)
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(item, Mapping) for item in value):
            raise self.fail(f"{key!r} is {_kind(value)}, not a list of objects")
        return value

    def text(self, parent: Mapping[str, Any], key: str) -> str:
        value = parent.get(key)
        if not isinstance(value, str) or not value:
            raise self.fail(f"{key!r} is {_kind(value)}, not a string")
        return value


def _kind(value: object) -> str:
    return "missing" if value is None else f"a {type(value).__name__}"


def _optional_text(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    return value.strip() or None


def _first_sentence(item: Mapping[str, Any], key: str = "Description") -> str | None:
    text = _optional_text(item.get(key))
    if text is None:
        return None
    text = " ".join(text.split())
    return re.split(r"(?<=[.!?])\s", text, maxsplit=1)[0]


def _shorten(text: str) -> str:
    if len(text) <= SUMMARY_MAX_CHARS:
        return text
    return text[: SUMMARY_MAX_CHARS - 1].rstrip() + "…"


def _finding(
    source: str,
    *,
    rule: str,
    severity: object,
    package: str,
    installed: str,
    fixed: str | None,
    summary: str | None,
    in_base: bool,
    path: str | None,
) -> Finding:
    level = SEVERITIES.get(str(severity).strip().lower(), Severity.LOW)
    message = f"{package} {installed}"
    message += f": {_shorten(summary)}" if summary else ""
    message += f"; fixed in {fixed}" if fixed else "; no fix yet"
    if in_base:
        # The operator chose the base image; its vulnerabilities are theirs to track, and
        # must not fail every job built on it.
        level = Severity.LOW
        message += BASE_IMAGE_NOTE
    return Finding(
        rule,
        level,
        message,
        source=source,
        path=path,
        package=package,
        installed_version=installed,
        fixed_version=fixed,
    )


def _worst_of_each(findings: list[Finding]) -> list[Finding]:
    """One finding per (vulnerability, package, version), the worst one: scanners repeat a
    match for each file or lockfile the package shows up in."""
    kept: dict[tuple[str, str | None, str | None], Finding] = {}
    for finding in findings:
        key = (finding.rule, finding.package, finding.installed_version)
        if key not in kept or finding.severity.rank > kept[key].severity.rank:
            kept[key] = finding
    return list(kept.values())
