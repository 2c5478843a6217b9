"""The `scanning` phase: which checks run (from settings), on what, under which policy."""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path

from proctor import checks, inspection, lint, scanners
from proctor.config import Settings
from proctor.engine import Executor, ImageInfo

log = logging.getLogger(__name__)
_reported_missing_hadolint = False


def policy(settings: Settings) -> checks.Policy:
    overrides = {}
    for entry in settings.finding_severity:
        rule, _, severity = entry.partition("=")
        overrides[rule.strip()] = checks.parse_severity(severity)
    return checks.Policy(
        block_severity=checks.parse_severity(settings.block_severity),
        severity_overrides=overrides,
        accepted=tuple(settings.accepted_findings),
    )


def configured_checks(settings: Settings) -> tuple[checks.Check, ...]:
    """Every check this worker can run: the linter, the image inspection, and the
    external scanners the operator installed."""
    global _reported_missing_hadolint
    found: list[checks.Check] = []
    hadolint = lint.find_hadolint()
    if hadolint is not None:
        found.append(lint.HadolintCheck(hadolint, ignore=settings.lint_ignore))
    elif not _reported_missing_hadolint:
        _reported_missing_hadolint = True
        log.warning("hadolint is not installed: Dockerfiles are not linted")
    found += [inspection.ConfigCheck(settings.max_image_bytes), inspection.FilesCheck()]
    found += scanners.find_scanners(settings.scanners, settings.scan_timeout)
    return tuple(found)


class DockerfileChecks:
    """The checks of the Dockerfile alone, run in a thread of their own from the start
    of the build: their time hides behind it."""

    def __init__(self, job_checks: Sequence[checks.Check], dockerfile: str) -> None:
        self._checks = [c for c in job_checks if isinstance(c, checks.DockerfileCheck)]
        self._runs: dict[str, checks.CheckRun] = {}
        self._thread: threading.Thread | None = None
        if self._checks:
            self._thread = threading.Thread(
                target=self._run, args=(dockerfile,), name="dockerfile-checks", daemon=True
            )
            self._thread.start()

    def _run(self, dockerfile: str) -> None:
        for check in self._checks:
            self._runs[check.name] = checks.run_check(check, partial(check.lint, dockerfile))

    def results(self) -> dict[str, checks.CheckRun]:
        """What they found, by check name, once they are done."""
        if self._thread is not None:
            self._thread.join()
        return self._runs


def base_image(image: ImageInfo, candidates: Sequence[ImageInfo]) -> ImageInfo | None:
    """The base image the build started from: of the images the Dockerfile names, the
    one whose layers the built image extends furthest."""
    best: ImageInfo | None = None
    for candidate in candidates:
        layers = candidate.diff_ids
        extends = image.diff_ids[: len(layers)] == layers
        if extends and (best is None or len(layers) > len(best.diff_ids)):
            best = candidate
    return best


def scan(
    executor: Executor,
    settings: Settings,
    job_checks: Sequence[checks.Check],
    dockerfile: str,
    bases: Sequence[ImageInfo],
    image_id: str,
    on_progress: Callable[[str], None],
    done: Mapping[str, checks.CheckRun] | None = None,
) -> tuple[ImageInfo, list[checks.Finding]]:
    """Run the checks on the built image, which was built on one of `bases`; returns the
    image and the findings, worst first."""
    image = executor.inspect_image(image_id)
    base = base_image(image, bases)
    scratch = settings.home / "scan"
    scratch.mkdir(parents=True, exist_ok=True)
    workdir = Path(
        tempfile.mkdtemp(prefix=f"{image_id.removeprefix('sha256:')[:12]}-", dir=scratch)
    )
    try:
        layers = inspection.ImageArchive(
            lambda path: executor.save_image(image_id, path),
            workdir,
            frozenset(base.diff_ids if base else ()),
        )
        subject = checks.Subject(dockerfile, image, base, layers)
        findings = checks.run_checks(job_checks, subject, policy(settings), on_progress, done)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return image, findings
