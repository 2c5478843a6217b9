"""Trivy and Grype as checks: their JSON reports as findings, and the scanners run as
subprocesses (small shell scripts stand in for the real binaries).

The sample reports under data/ are trimmed copies of real scanner output:

- data/trivy-image.json follows aquasecurity/trivy
  integration/testdata/busybox-with-lockfile.json.golden (the two-layer image: a base
  layer and an added layer holding Cargo.lock, with the ammonia vulnerabilities) and
  integration/testdata/debian-buster.json.golden (the bash "affected"/no-fix and the
  libidn2 CRITICAL entries, whose layer serves as the base layer here). The UNKNOWN
  GMS-2021-175 entry with an empty "Layer" is real Trivy output quoted in ZupIT/horusec
  internal/services/formatters/generic/trivy/formatter_test.go; the
  `"Vulnerabilities": null` target follows Trivy's own docs
  (docs/mkdocs/examples/standalone/save/json.md). Adapted: the OS target's name, the
  vendor/Cargo.lock target (the same ammonia match in a base layer, to exercise dedupe)
  and trimmed References/CVSS.
- data/grype-image.json follows real `grype -o json` output (grype 0.28.0, debian:10)
  kept as DefectDojo/django-DefectDojo unittests/scans/anchore_grype/check_all_fields.json,
  whose key names and nesting match anchore/grype
  grype/presenter/json/testdata/snapshot/TestJsonImgsPresenter.golden. Adapted: the
  libgssapi-krb5-2 locations were moved to the first (base) layer, the redis match's
  fabricated fix versions became "unknown", lists (cpes, urls, layers) were trimmed.
  The libc-bin locations are as upstream: /var/lib/dpkg/status in a later layer, its
  other files in the first. The Django GHSA match appears twice, as upstream.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from proctor import checks, exceptions, scanners
from proctor.checks import Finding, Severity, Subject
from proctor.engine import ImageInfo

DATA = Path(__file__).parent / "data"

TRIVY_BASE_LAYER = "sha256:78c1b9419976227e05be9d243b7fa583bea44a5258e52018b2af4cdfe23d148d"
TRIVY_NEW_LAYER = "sha256:ea6f6933da66090da8bfe233d68f083792a68f944cd2d8f9fbb52da795813a4f"
GRYPE_BASE_LAYERS = (
    "sha256:d000633a56813933cb0ac5ee3246cf7a4c0205db6290018a169d7cb096581046",
    "sha256:55ad5d8b8f0f48507b98793ce81733f50a8a05f0bc047361557ae7d00878d1e3",
)
GRYPE_APT_LAYER = "sha256:88a5584c6af8c220f94abb05315c2695505c8b9e2344a0aa879721b871d32b03"
PROCESS_GONE_WAIT_SECONDS = 5

ScannerFactory = Callable[[str], str]


def sample(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((DATA / name).read_text())
    return loaded


def by_rule(findings: list[Finding]) -> dict[str, Finding]:
    found = {f.rule: f for f in findings}
    assert len(found) == len(findings), "one finding per rule in these samples"
    return found


class SavedImage:
    """An ImageLayers whose tarball is a path; the fake scanners never open it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def tarball(self) -> Path:
        return self.path

    def new_layers(self) -> Iterator[tuple[str, IO[bytes]]]:
        return iter(())


@pytest.fixture
def make_subject(tmp_path: Path) -> Callable[..., Subject]:
    def make(base_diff_ids: tuple[str, ...] = ()) -> Subject:
        tarball = tmp_path / "image.tar"
        tarball.write_bytes(b"")
        image = ImageInfo(id="sha256:image", user="app", size_bytes=0)
        base = ImageInfo(id="sha256:base", user="", size_bytes=0, diff_ids=base_diff_ids)
        return Subject("FROM base\n", image, base, SavedImage(tarball))

    return make


@pytest.fixture
def fake_scanner(tmp_path: Path) -> ScannerFactory:
    """A shell script standing in for a scanner binary; returns its path."""

    def write(body: str) -> str:
        path = tmp_path / "bin" / "scanner"
        path.parent.mkdir(exist_ok=True)
        path.write_text("#!/bin/sh\n" + body)
        path.chmod(0o755)
        return str(path)

    return write


def trivy_report(*vulnerabilities: dict[str, Any]) -> dict[str, Any]:
    return {
        "SchemaVersion": 2,
        "Results": [{"Target": "t", "Class": "os-pkgs", "Vulnerabilities": list(vulnerabilities)}],
    }


def trivy_vuln(**overrides: Any) -> dict[str, Any]:
    vuln = {
        "VulnerabilityID": "CVE-2024-0001",
        "PkgName": "pkg",
        "InstalledVersion": "1.0",
        "Severity": "HIGH",
        "Title": "a title",
    }
    return {**vuln, **overrides}


# --- Trivy's report ---------------------------------------------------------------------


def test_parse_trivy_reads_ids_severities_and_versions() -> None:
    findings = by_rule(scanners.parse_trivy(sample("trivy-image.json"), frozenset()))

    assert set(findings) == {
        "CVE-2019-18276",
        "CVE-2019-18224",
        "CVE-2019-15542",
        "CVE-2021-38193",
        "GMS-2021-175",
    }
    libidn2 = findings["CVE-2019-18224"]
    assert libidn2.severity is Severity.CRITICAL
    assert (libidn2.package, libidn2.installed_version, libidn2.fixed_version) == (
        "libidn2-0",
        "2.0.5-1",
        "2.0.5-1+deb10u1",
    )
    assert findings["CVE-2019-15542"].severity is Severity.HIGH
    assert findings["CVE-2021-38193"].severity is Severity.MEDIUM
    assert findings["CVE-2019-18276"].severity is Severity.LOW
    assert findings["GMS-2021-175"].severity is Severity.LOW  # UNKNOWN
    assert all(f.source == "trivy" for f in findings.values())


def test_parse_trivy_message_names_package_title_and_fix() -> None:
    findings = by_rule(scanners.parse_trivy(sample("trivy-image.json"), frozenset()))

    assert findings["CVE-2019-15542"].message == (
        "ammonia 1.9.0: Uncontrolled recursion leads to abort in HTML serialization; "
        "fixed in >= 2.1.0"
    )
    assert findings["CVE-2019-18276"].fixed_version is None
    assert findings["CVE-2019-18276"].message.endswith("; no fix yet")
    assert findings["CVE-2019-15542"].path == "Cargo.lock"  # the lockfile it was found in


def test_parse_trivy_message_falls_back_to_the_first_sentence_and_truncates() -> None:
    long_sentence = "A " + "very " * 40 + "long sentence. And a second one."
    report = trivy_report(
        trivy_vuln(Title="", Description="Short first sentence. Second sentence."),
        trivy_vuln(VulnerabilityID="CVE-2024-0002", Title=None, Description=long_sentence),
    )

    findings = by_rule(scanners.parse_trivy(report, frozenset()))

    assert findings["CVE-2024-0001"].message == "pkg 1.0: Short first sentence.; no fix yet"
    summary = findings["CVE-2024-0002"].message.removeprefix("pkg 1.0: ").split(";")[0]
    assert len(summary) == scanners.SUMMARY_MAX_CHARS
    assert summary.endswith("…")
    assert "second" not in findings["CVE-2024-0002"].message


def test_parse_trivy_caps_base_image_vulnerabilities_at_low() -> None:
    findings = by_rule(
        scanners.parse_trivy(sample("trivy-image.json"), frozenset({TRIVY_BASE_LAYER}))
    )

    libidn2 = findings["CVE-2019-18224"]  # CRITICAL, in the base layer
    assert libidn2.severity is Severity.LOW
    assert libidn2.message.endswith(" (in the base image)")
    assert libidn2.fixed_version == "2.0.5-1+deb10u1"
    assert findings["CVE-2019-18276"].message.endswith("; no fix yet (in the base image)")
    # In the layer the submission added, or in no known layer: as the scanner says.
    assert findings["CVE-2021-38193"].severity is Severity.MEDIUM
    assert not findings["GMS-2021-175"].message.endswith("(in the base image)")


def test_parse_trivy_keeps_the_worst_of_a_repeated_vulnerability() -> None:
    report = sample("trivy-image.json")
    base = frozenset({TRIVY_BASE_LAYER})
    reordered = {**report, "Results": list(reversed(report["Results"]))}

    for each in (report, reordered):
        findings = scanners.parse_trivy(each, base)
        ammonia = [f for f in findings if f.rule == "CVE-2019-15542"]
        # Cargo.lock (added layer, HIGH) and vendor/Cargo.lock (base layer, capped).
        assert len(ammonia) == 1
        assert ammonia[0].severity is Severity.HIGH
        assert not ammonia[0].message.endswith("(in the base image)")


def test_parse_trivy_takes_null_or_absent_vulnerabilities_as_none() -> None:
    null = {"SchemaVersion": 2, "Results": [{"Target": "Python", "Vulnerabilities": None}]}
    absent = {"SchemaVersion": 2, "Results": [{"Target": "Python", "Class": "lang-pkgs"}]}
    no_results = {"SchemaVersion": 2, "ArtifactName": "image.tar"}

    for report in (null, absent, no_results):
        assert scanners.parse_trivy(report, frozenset()) == []


@pytest.mark.parametrize(
    "severity, expected",
    [
        ("CRITICAL", Severity.CRITICAL),
        ("High", Severity.HIGH),
        ("medium", Severity.MEDIUM),
        ("LOW", Severity.LOW),
        ("NEGLIGIBLE", Severity.LOW),
        ("UNKNOWN", Severity.LOW),
        ("SEVERE", Severity.LOW),
        (None, Severity.LOW),
    ],
)
def test_parse_trivy_maps_severities(severity: str | None, expected: Severity) -> None:
    (finding,) = scanners.parse_trivy(trivy_report(trivy_vuln(Severity=severity)), frozenset())

    assert finding.severity is expected


@pytest.mark.parametrize(
    "report",
    [
        {},
        [],
        {"SchemaVersion": 1, "Results": []},
        {"SchemaVersion": 2, "Results": "none"},
        {"SchemaVersion": 2, "Results": ["a target"]},
        {"SchemaVersion": 2, "Results": [{"Target": "t", "Vulnerabilities": {"a": 1}}]},
        trivy_report({"PkgName": "pkg", "InstalledVersion": "1.0"}),
        trivy_report(trivy_vuln(PkgName=42)),
        trivy_report(trivy_vuln(InstalledVersion=None)),
    ],
)
def test_parse_trivy_rejects_malformed_reports(report: Any) -> None:
    with pytest.raises(exceptions.CheckError, match="trivy"):
        scanners.parse_trivy(report, frozenset())


# --- Grype's report ---------------------------------------------------------------------


def test_parse_grype_reads_ids_severities_and_versions() -> None:
    findings = by_rule(scanners.parse_grype(sample("grype-image.json"), frozenset()))

    assert set(findings) == {
        "CVE-2004-0971",
        "CVE-2021-32626",
        "CVE-2021-33574",
        "GHSA-v6rh-hp5x-86rv",
    }
    django = findings["GHSA-v6rh-hp5x-86rv"]
    assert django.severity is Severity.HIGH
    assert (django.package, django.installed_version, django.fixed_version) == (
        "Django",
        "3.2.9",
        "3.2.10",
    )
    assert django.message == (
        "Django 3.2.9: Potential bypass of an upstream access control based on URL paths "
        "in Django; fixed in 3.2.10"
    )
    assert findings["CVE-2021-33574"].severity is Severity.CRITICAL
    assert findings["CVE-2004-0971"].severity is Severity.LOW  # Negligible
    assert findings["CVE-2021-32626"].fixed_version is None
    assert findings["CVE-2021-32626"].message.endswith("; no fix yet")
    assert findings["CVE-2021-32626"].path == (
        "/usr/local/lib/python3.8/site-packages/redis-4.0.2.dist-info/METADATA"
    )
    assert all(f.source == "grype" for f in findings.values())


def test_parse_grype_takes_the_description_from_a_related_vulnerability() -> None:
    findings = by_rule(scanners.parse_grype(sample("grype-image.json"), frozenset()))

    # The Debian record has no description; the related NVD record has.
    assert findings["CVE-2021-33574"].message.startswith(
        "libc-bin 2.28-10: The mq_notify function in the GNU C Library"
    )


def test_parse_grype_caps_packages_whose_every_location_is_in_the_base() -> None:
    findings = by_rule(
        scanners.parse_grype(sample("grype-image.json"), frozenset(GRYPE_BASE_LAYERS))
    )

    krb5 = findings["CVE-2004-0971"]
    assert krb5.severity is Severity.LOW
    assert krb5.message.endswith("; no fix yet (in the base image)")
    # /var/lib/dpkg/status was rewritten by a later layer (apt-get in the submission): one
    # location outside the base is enough to keep the scanner's severity.
    assert findings["CVE-2021-33574"].severity is Severity.CRITICAL
    assert findings["GHSA-v6rh-hp5x-86rv"].severity is Severity.HIGH


def test_parse_grype_caps_a_critical_when_all_its_layers_are_the_base() -> None:
    base = frozenset({*GRYPE_BASE_LAYERS, GRYPE_APT_LAYER})

    libc = by_rule(scanners.parse_grype(sample("grype-image.json"), base))["CVE-2021-33574"]

    assert libc.severity is Severity.LOW
    assert libc.message.endswith(" (in the base image)")


def test_parse_grype_keeps_the_worst_of_a_repeated_match() -> None:
    report = sample("grype-image.json")
    worse = copy.deepcopy(report)
    worse["matches"][-1]["vulnerability"]["severity"] = "Critical"  # the second Django copy

    plain = [f for f in scanners.parse_grype(report, frozenset()) if f.package == "Django"]
    kept = [f for f in scanners.parse_grype(worse, frozenset()) if f.package == "Django"]

    assert [f.severity for f in plain] == [Severity.HIGH]
    assert [f.severity for f in kept] == [Severity.CRITICAL]


def test_parse_grype_without_locations_is_not_the_base() -> None:
    report = sample("grype-image.json")
    report["matches"][0]["artifact"]["locations"] = []

    krb5 = by_rule(scanners.parse_grype(report, frozenset(GRYPE_BASE_LAYERS)))["CVE-2004-0971"]

    assert not krb5.message.endswith("(in the base image)")
    assert krb5.path is None


def test_parse_grype_reads_an_empty_report() -> None:
    assert scanners.parse_grype({"matches": [], "source": {"type": "image"}}, frozenset()) == []


def grype_broken(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    report = sample("grype-image.json")
    change(report["matches"][0])
    return report


@pytest.mark.parametrize(
    "report",
    [
        {},
        {"matches": None},
        {"matches": {"a": 1}},
        {"matches": ["CVE-2021-1234"]},
        {"SchemaVersion": 2, "Results": []},  # a Trivy report
        grype_broken(lambda m: m.pop("vulnerability")),
        grype_broken(lambda m: m.update(artifact=[])),
        grype_broken(lambda m: m["vulnerability"].pop("id")),
        grype_broken(lambda m: m["artifact"].update(version=1.17)),
        grype_broken(lambda m: m["artifact"].update(locations="/var/lib/dpkg/status")),
    ],
)
def test_parse_grype_rejects_malformed_reports(report: Any) -> None:
    with pytest.raises(exceptions.CheckError, match="grype"):
        scanners.parse_grype(report, frozenset())


# --- Running a scanner ------------------------------------------------------------------


def test_scanner_check_runs_trivy_offline_on_the_tarball(
    fake_scanner: ScannerFactory, make_subject: Callable[..., Subject], tmp_path: Path
) -> None:
    args = tmp_path / "args"
    trivy = fake_scanner(f'printf "%s\\n" "$@" > {args}\ncat {DATA / "trivy-image.json"}\n')
    subject = make_subject((TRIVY_BASE_LAYER,))

    findings = scanners.ScannerCheck("trivy", trivy, timeout_seconds=30)(subject)

    assert findings == scanners.parse_trivy(sample("trivy-image.json"), subject.base_diff_ids)
    assert by_rule(findings)["CVE-2019-18224"].severity is Severity.LOW  # base capped
    argv = args.read_text().splitlines()
    assert argv[:3] == ["image", "--input", str(subject.layers.tarball())]
    for flag in ("--quiet", "--skip-db-update", "--skip-java-db-update", "--offline-scan"):
        assert flag in argv
    assert argv[argv.index("--format") + 1] == "json"
    assert argv[argv.index("--scanners") + 1] == "vuln"


def test_scanner_check_runs_grype_without_updates_on_the_tarball(
    fake_scanner: ScannerFactory,
    make_subject: Callable[..., Subject],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PROCTOR_TEST_INHERITED", "kept")
    seen = tmp_path / "seen"
    grype = fake_scanner(
        f'printf "%s\\n" "$@" > {seen}\n'
        f'echo "$GRYPE_DB_AUTO_UPDATE $GRYPE_CHECK_FOR_APP_UPDATE $PROCTOR_TEST_INHERITED"'
        f" >> {seen}\n"
        f"cat {DATA / 'grype-image.json'}\n"
    )
    subject = make_subject(GRYPE_BASE_LAYERS)

    findings = scanners.ScannerCheck("grype", grype, timeout_seconds=30)(subject)

    assert findings == scanners.parse_grype(sample("grype-image.json"), subject.base_diff_ids)
    assert seen.read_text().splitlines() == [
        f"docker-archive:{subject.layers.tarball()}",
        "-o",
        "json",
        "false false kept",
    ]


def test_scanner_check_implements_the_check_protocol(
    fake_scanner: ScannerFactory, make_subject: Callable[..., Subject]
) -> None:
    check: checks.Check = scanners.ScannerCheck("grype", fake_scanner("exit 3\n"), 30)
    policy = checks.Policy()

    findings = checks.run_checks([check], make_subject(), policy)

    assert [(f.rule, f.source) for f in findings] == [("grype.error", "grype")]


def process_alive(pid: int) -> bool:
    """Whether the process exists and is not a zombie (a killed orphan can stay one when
    nothing here reaps it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    state = stat.rpartition(")")[2].split()[0]
    return state not in ("Z", "X")


def test_scanner_check_timeout_is_a_finding_and_kills_the_scanner(
    fake_scanner: ScannerFactory, make_subject: Callable[..., Subject], tmp_path: Path
) -> None:
    pids = tmp_path / "pids"
    # The scanner and a child of its own, as a real scanner's helpers would be.
    sleeper = fake_scanner(f"echo $$ > {pids}\nsleep 60 &\necho $! >> {pids}\nwait\n")
    check = scanners.ScannerCheck("trivy", sleeper, timeout_seconds=1)

    started = time.monotonic()
    findings = check(make_subject())
    elapsed = time.monotonic() - started

    assert [(f.rule, f.severity, f.source) for f in findings] == [
        ("trivy.timeout", Severity.MEDIUM, "trivy")
    ]
    assert findings[0].message == (
        "trivy did not finish within 1 s; the image was not scanned by it"
    )
    assert elapsed < 1 + PROCESS_GONE_WAIT_SECONDS
    scanner_pid, child_pid = (int(line) for line in pids.read_text().split())
    deadline = time.monotonic() + PROCESS_GONE_WAIT_SECONDS
    while time.monotonic() < deadline and (process_alive(scanner_pid) or process_alive(child_pid)):
        time.sleep(0.05)
    assert not process_alive(scanner_pid)
    assert not process_alive(child_pid)


def test_scanner_check_failure_carries_the_tail_of_stderr(
    fake_scanner: ScannerFactory, make_subject: Callable[..., Subject]
) -> None:
    failing = fake_scanner(
        "i=0; while [ $i -lt 100 ]; do echo 'progress line padding the log' >&2; "
        "i=$((i+1)); done\n"
        "echo 'FATAL failed to load the vulnerability DB: no such file' >&2\nexit 2\n"
    )

    with pytest.raises(exceptions.CheckError) as raised:
        scanners.ScannerCheck("grype", failing, timeout_seconds=30)(make_subject())

    message = raised.value.message
    assert message.startswith("grype exited with 2: ")
    assert message.endswith("FATAL failed to load the vulnerability DB: no such file")
    assert len(message) <= scanners.STDERR_TAIL_BYTES + len("grype exited with 2: ")


def test_scanner_check_output_that_is_not_json_is_an_error(
    fake_scanner: ScannerFactory, make_subject: Callable[..., Subject]
) -> None:
    garbage = fake_scanner("echo '2024-01-01T00:00:00Z INFO Detecting vulnerabilities...'\n")

    with pytest.raises(exceptions.CheckError, match="trivy printed something that is not JSON"):
        scanners.ScannerCheck("trivy", garbage, timeout_seconds=30)(make_subject())


def test_scanner_check_json_that_is_not_a_report_is_an_error(
    fake_scanner: ScannerFactory, make_subject: Callable[..., Subject]
) -> None:
    wrong = fake_scanner("echo '[1, 2, 3]'\n")

    with pytest.raises(exceptions.CheckError, match="grype"):
        scanners.ScannerCheck("grype", wrong, timeout_seconds=30)(make_subject())


def test_scanner_check_missing_executable_is_an_error(
    make_subject: Callable[..., Subject], tmp_path: Path
) -> None:
    check = scanners.ScannerCheck("trivy", str(tmp_path / "gone"), timeout_seconds=30)

    with pytest.raises(exceptions.CheckError, match="trivy could not start"):
        check(make_subject())


# --- Finding the scanners ---------------------------------------------------------------


@pytest.fixture
def path_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """PATH is this folder only; each test starts with no scanner reported missing."""
    folder = tmp_path / "path"
    folder.mkdir()
    monkeypatch.setenv("PATH", str(folder))
    monkeypatch.setattr(scanners, "_reported_missing", set())
    return folder


def test_find_scanners_returns_a_check_for_each_scanner_on_path(path_dir: Path) -> None:
    trivy = path_dir / "trivy"
    trivy.write_text("#!/bin/sh\n")
    trivy.chmod(0o755)

    found = scanners.find_scanners(["trivy", "grype"], timeout_seconds=120)

    assert [(c.name, c.executable, c.timeout_seconds) for c in found] == [
        ("trivy", str(trivy), 120)
    ]


def test_find_scanners_warns_once_about_a_missing_scanner(
    path_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="proctor.scanners"):
        assert scanners.find_scanners(["grype"], timeout_seconds=120) == []
        assert scanners.find_scanners(["grype"], timeout_seconds=120) == []

    warnings = [r for r in caplog.records if r.name == "proctor.scanners"]
    assert [r.levelno for r in warnings] == [logging.WARNING]
    assert "grype" in warnings[0].getMessage()


def test_find_scanners_rejects_unknown_names(path_dir: Path) -> None:
    with pytest.raises(ValueError, match=r"'clair'.*known: trivy, grype"):
        scanners.find_scanners(["trivy", "clair"], timeout_seconds=120)
