"""One attempt of one job: fetch the context, build, check, run sandboxed, collect the score."""

from __future__ import annotations

import contextlib
import enum
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from sqlalchemy.orm import Session

from proctor import checks, db, exceptions, intake, jobs, perf, scanning, scratch, store
from proctor.config import Settings
from proctor.engine import Executor, ImageInfo
from proctor.jobs import ErrorCode, Outcome, Status
from proctor.sandbox import SandboxProfile

log = logging.getLogger(__name__)

LOG_FLUSH_SECONDS = 0.5
LOG_FLUSH_BYTES = 64 * 1024
ENGINE_RETRY_BASE_SECONDS = 1.0

T = TypeVar("T")


class StopReason(enum.StrEnum):
    CANCEL = "cancel"  # the owner or an admin cancelled the job
    SHUTDOWN = "shutdown"  # the worker is stopping; the job goes back to the queue
    LEASE_LOST = "lease_lost"  # another worker may hold the job now


@dataclass
class Control:
    """How the worker tells a running attempt to stop, and why."""

    abort: threading.Event = field(default_factory=threading.Event)
    reason: StopReason | None = None

    def stop(self, reason: StopReason) -> None:
        if self.reason is None:
            self.reason = reason
        self.abort.set()


class LogSink:
    """Buffers a job's output and stores it in batches, up to the per-stream cap.

    Output is stored at the latest `LOG_FLUSH_SECONDS` after it arrives, even when no
    more follows (a job that prints a line, then computes in silence): a timer flushes
    what an earlier call left pending.
    """

    def __init__(self, settings: Settings, job_id: str, stream: jobs.Stream) -> None:
        self._settings = settings
        self._job_id = job_id
        self._stream = stream
        self._cap = settings.log_max_bytes
        self._lock = threading.Lock()
        self._pending: list[str] = []
        self._pending_bytes = 0
        self._stored_bytes = 0
        self._truncated = False
        self._last_flush = time.monotonic()
        self._timer: threading.Timer | None = None

    def __call__(self, text: str) -> None:
        with self._lock:
            if self._truncated:
                return
            room = self._cap - self._stored_bytes - self._pending_bytes
            data = text.encode("utf-8", errors="replace")
            if len(data) > room:
                text = data[: max(room, 0)].decode("utf-8", errors="ignore")
                text += f"\n[proctor: {self._stream} log truncated at {self._cap} bytes]\n"
                self._truncated = True
            self._pending.append(text)
            self._pending_bytes += len(text.encode("utf-8", errors="replace"))
            wait = LOG_FLUSH_SECONDS - (time.monotonic() - self._last_flush)
            if wait <= 0 or self._pending_bytes >= LOG_FLUSH_BYTES or self._truncated:
                self._flush_locked()
            elif self._timer is None:
                self._timer = threading.Timer(wait, self._flush_later)
                self._timer.daemon = True
                self._timer.start()

    def flush(self, session: Session | None = None) -> None:
        """Store what is pending: in the caller's transaction (`session`), or in one of
        its own."""
        with self._lock:
            self._flush_locked(session)

    def _flush_later(self) -> None:
        with self._lock:
            self._timer = None
            try:
                self._flush_locked()
            except Exception:  # a timer thread: nothing above it would see the error
                # Kept pending: the next write or the final flush stores it.
                log.exception("job %s: cannot store %s log yet", self._job_id, self._stream)

    def _flush_locked(self, session: Session | None = None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._pending:
            return
        text = "".join(self._pending)
        if session is not None:
            store.append_log(session, self._job_id, self._stream, text)
        else:
            with db.session_scope(self._settings) as own:
                store.append_log(own, self._job_id, self._stream, text)
        self._stored_bytes += self._pending_bytes
        self._pending, self._pending_bytes = [], 0
        self._last_flush = time.monotonic()


@dataclass(frozen=True)
class Ticket:
    """What the worker knows of a job it claimed."""

    id: str
    timeout: float
    context: bytes | None  # the build context, read with the claim (None: missing)
    dataset: str | None = None
    gpus: int | None = None


class Interrupted(Exception):
    """The attempt was told to stop (see `Control.reason`)."""


class Pipeline:
    """Runs one claimed job to its outcome; the worker decides what to do with it."""

    def __init__(
        self,
        settings: Settings,
        executor: Executor,
        worker_id: str,
        job_checks: Sequence[checks.Check] | None = None,
    ) -> None:
        self.settings = settings
        self.executor = executor
        self.worker_id = worker_id
        self.checks = scanning.configured_checks(settings) if job_checks is None else job_checks
        self.policy = scanning.policy(settings)
        # Facts for the job's row (image id, findings…) not stored yet: they go with the
        # next write the job needs anyway (the next phase, or the outcome, which the
        # worker stores).
        self.unstored: dict[str, object] = {}
        # How long each phase took, for the phase histogram (the worker stores them).
        self.timings: list[tuple[Status, float]] = []
        self._containers_gone = False

    def execute(self, ticket: Ticket, control: Control) -> Outcome | None:
        """Run the attempt; None when it was interrupted without an outcome of its own."""
        job_id = ticket.id
        build_log = LogSink(self.settings, job_id, jobs.Stream.BUILD)
        run_log = LogSink(self.settings, job_id, jobs.Stream.RUN)
        image_id: str | None = None
        output_dir = self.settings.jobs_dir / job_id
        try:
            submission = self._resubmit(ticket)
            linted = scanning.DockerfileChecks(self.checks, submission.dockerfile)
            bases = self._ready_engine(control, lambda: self._base_images(submission, build_log))
            image_id = self._build(job_id, submission, control, build_log)
            image = self._scan(
                job_id, submission.dockerfile, bases, image_id, linted, control, build_log
            )
            outcome = self._run(ticket, image, output_dir, control, build_log, run_log)
            if outcome.error is not None:
                run_log(f"\n[proctor] {outcome.error.code}: {outcome.error.message}\n")
            return outcome
        except _Failed as failed:
            build_log(f"[proctor] {failed.code}: {failed.message}\n")
            return failed.outcome
        except Interrupted:
            if control.reason is StopReason.CANCEL:
                return Outcome.failed(ErrorCode.CANCELLED, "cancelled by its owner or an admin")
            return None
        except exceptions.EngineError as exc:
            log.exception("job %s: engine failure", job_id)
            return Outcome.failed(ErrorCode.INTERNAL, f"the Docker engine failed: {exc.message}")
        finally:
            build_log.flush()
            run_log.flush()
            self._clean_up(job_id, image_id)

    # --- phases ------------------------------------------------------------------------

    def _ready_engine(self, control: Control, first_calls: Callable[[], T]) -> T:
        """The job's first engine calls, tried again with backoff while the engine is
        unreachable: an engine that restarts delays the job instead of failing it."""
        tries = self.settings.engine_retries
        for attempt in range(tries):
            try:
                return first_calls()
            except exceptions.EngineUnavailable as exc:
                if attempt == tries - 1:
                    raise _Failed(
                        ErrorCode.INTERNAL,
                        f"the Docker engine is unreachable after {tries} tries: {exc.message}",
                    ) from exc
                if control.abort.wait(ENGINE_RETRY_BASE_SECONDS * 2**attempt):
                    raise Interrupted(control.reason) from exc
        raise AssertionError("unreachable")

    def _resubmit(self, ticket: Ticket) -> intake.Submission:
        # The context was checked at submission; checking again here applies this
        # worker's allowlist and proves the stored bytes are the ones that were checked.
        if ticket.context is None:
            raise _Failed(ErrorCode.INTERNAL, f"job {ticket.id} has no stored build context")
        limits = intake.IntakeLimits.from_settings(self.settings)
        try:
            return intake.read_submission(ticket.context, limits)
        except exceptions.SubmissionError as exc:
            raise _Failed(ErrorCode.BUILD_FAILED, exc.message) from exc

    def _build(
        self, job_id: str, submission: intake.Submission, control: Control, on_log: LogSink
    ) -> str:
        self._check_point(control)
        started = time.monotonic()
        try:
            image_id = self.executor.build(
                job_id,
                submission.context,
                memory_bytes=self.settings.build_memory,
                deadline=started + self.settings.build_timeout,
                abort=control.abort,
                on_log=on_log,
            )
        except exceptions.BuildAborted as exc:
            self._check_point(control)
            raise _Failed(
                ErrorCode.BUILD_TIMEOUT,
                f"the build ran past its {self.settings.build_timeout:g}-second limit",
            ) from exc
        except exceptions.BuildError as exc:
            where = f" at {exc.step!r}" if exc.step else ""
            raise _Failed(ErrorCode.BUILD_FAILED, f"the build failed{where}: {exc}") from exc
        self._learnt((Status.BUILDING, time.monotonic() - started), image_id=image_id)
        return image_id

    def _base_images(self, submission: intake.Submission, on_log: LogSink) -> list[ImageInfo]:
        """The images the Dockerfile builds on, pulled when missing (if allowed)."""
        if not submission.base_images:
            self.executor.ping()  # FROM scratch alone: nothing to look up
        return [self._base_image(image, on_log) for image in submission.base_images]

    def _base_image(self, image: str, on_log: LogSink) -> ImageInfo:
        found = self.executor.find_image(image)
        if found is not None:
            return found
        if not self.settings.pull_base_images:
            raise _Failed(
                ErrorCode.BUILD_FAILED,
                f"base image {image} is not on this worker's engine and pulling is disabled "
                "(PROCTOR_PULL_BASE_IMAGES)",
            )
        on_log(f"[proctor] pulling base image {image}\n")
        try:
            self.executor.pull(image)
        except exceptions.ImageMissing as exc:
            raise _Failed(ErrorCode.BUILD_FAILED, exc.message) from exc
        pulled = self.executor.find_image(image)
        if pulled is None:
            raise _Failed(ErrorCode.BUILD_FAILED, f"base image {image} is gone after its pull")
        return pulled

    def _scan(
        self,
        job_id: str,
        dockerfile: str,
        bases: Sequence[ImageInfo],
        image_id: str,
        linted: scanning.DockerfileChecks,
        control: Control,
        on_log: LogSink,
    ) -> ImageInfo:
        self._advance(job_id, Status.SCANNING, control)
        started = time.monotonic()
        on_log("[proctor] checking the image\n")
        image, findings = scanning.scan(
            self.executor,
            self.settings,
            self.checks,
            dockerfile,
            bases,
            image_id,
            lambda progress: on_log(f"[proctor] {progress}\n"),
            linted.results(),
        )
        records = [f.record() for f in findings]
        self._learnt((Status.SCANNING, time.monotonic() - started), findings=records)
        for record in records:
            on_log(f"[proctor] {checks.describe(record)}\n")
        blockers = self.policy.blocking(findings)
        if blockers:
            raise _Failed(ErrorCode.SCAN_REJECTED, checks.rejection_message(blockers))
        return image

    def _run(
        self,
        ticket: Ticket,
        image: ImageInfo,
        output_dir: Path,
        control: Control,
        build_log: LogSink,
        on_log: LogSink,
    ) -> Outcome:
        job_id = ticket.id
        dataset_dir = None
        if ticket.dataset is not None:
            assert self.settings.datasets_dir is not None
            dataset_dir = self.settings.datasets_dir / ticket.dataset
            if not dataset_dir.is_dir():
                raise _Failed(
                    ErrorCode.INTERNAL, f"dataset {ticket.dataset!r} is not on this worker"
                )
        profile = SandboxProfile.for_job(
            self.settings, image_user=image.user, timeout=ticket.timeout, gpus=ticket.gpus
        )
        # The build's log is stored with the move, so that the stored logs read build
        # first, then run.
        self._advance(job_id, Status.RUNNING, control, build_log, sandbox=profile.record())
        capped = profile.output_capped
        try:
            with scratch.output_dir(output_dir, max_bytes=profile.output_max_bytes, capped=capped):
                return self._run_in(
                    ticket, image, profile, output_dir, dataset_dir, control, on_log
                )
        except exceptions.SandboxUnavailable as exc:
            raise _Failed(ErrorCode.INTERNAL, exc.message) from exc

    def _run_in(
        self,
        ticket: Ticket,
        image: ImageInfo,
        profile: SandboxProfile,
        output_dir: Path,
        dataset_dir: Path | None,
        control: Control,
        on_log: LogSink,
    ) -> Outcome:
        timeout = ticket.timeout
        started = time.monotonic()
        result = self.executor.run(
            ticket.id,
            image.id,
            profile,
            output_dir,
            dataset_dir=dataset_dir,
            abort=control.abort,
            on_log=on_log,
        )
        self._containers_gone = not result.container_left
        self._learnt((Status.RUNNING, time.monotonic() - started))
        if result.aborted:
            self._check_point(control)
        if result.timed_out:
            return Outcome.failed(
                ErrorCode.TIMEOUT,
                f"the container ran past its {timeout:g}-second limit and was killed",
            )
        if result.oom_killed:
            return Outcome.failed(
                ErrorCode.OOM_KILLED,
                f"the container exceeded its memory limit of {profile.memory_bytes} bytes",
                exit_code=result.exit_code,
            )
        if result.exit_code != 0:
            return Outcome.failed(
                ErrorCode.EXIT_NONZERO,
                f"the container exited with code {result.exit_code}",
                exit_code=result.exit_code,
            )
        try:
            score = perf.read_perf(output_dir, self.settings.perf_max_bytes)
        except perf.PerfError as exc:
            return Outcome.failed(exc.code, exc.message, exit_code=0)
        return Outcome.succeeded(score.performance, score.metrics)

    # --- helpers ------------------------------------------------------------------------

    def _check_point(self, control: Control) -> None:
        if control.abort.is_set():
            raise Interrupted(control.reason)

    # One transaction per change of status: what the phases before learnt goes with it.

    def _learnt(self, took: tuple[Status, float], **facts: object) -> None:
        """Note how long a phase `took`, and what it learnt, to store with the next write."""
        self.timings.append(took)
        self.unstored.update(facts)

    def _advance(
        self,
        job_id: str,
        status: Status,
        control: Control,
        log_sink: LogSink | None = None,
        **facts: object,
    ) -> None:
        """Move the job to `status`, storing `facts` and what is unstored in the same
        transaction."""
        self._check_point(control)
        facts = {**self.unstored, **facts}
        with db.session_scope(self.settings) as session:
            if log_sink is not None:
                log_sink.flush(session)
            moved = store.advance(session, job_id, self.worker_id, status, **facts)
            if not moved:
                # Kept for the job's record all the same (it stays ours if cancelled).
                store.record(session, job_id, self.worker_id, **facts)
        self.unstored = {}
        if not moved:
            # Either cancelled (the flag blocks the move) or the lease went elsewhere.
            control.stop(
                StopReason.CANCEL if self._cancel_flagged(job_id) else StopReason.LEASE_LOST
            )
            raise Interrupted(control.reason)

    def _cancel_flagged(self, job_id: str) -> bool:
        with db.session_scope(self.settings) as session:
            return job_id in store.cancel_requested(session, [job_id])

    def _clean_up(self, job_id: str, image_id: str | None) -> None:
        if not self._containers_gone:  # a run that did not end cleanly may leave one
            with contextlib.suppress(exceptions.EngineError):
                self.executor.remove_containers(job_id)
        if image_id and not self.settings.keep_images:
            with contextlib.suppress(exceptions.EngineError):
                self.executor.remove_image(image_id)


class _Failed(Exception):
    """Ends the attempt with a failed outcome."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def outcome(self) -> Outcome:
        return Outcome.failed(self.code, self.message)
