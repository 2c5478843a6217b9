"""The worker: claims queued jobs under a lease and runs each through the pipeline.

`worker_concurrency` slot threads each claim and run one job at a time; a
supervisor thread renews leases, notices cancellations within a second and
re-queues jobs whose worker died. SIGTERM/SIGINT stop claiming, interrupt the
running jobs, remove their containers and give the jobs back to the queue.
"""

from __future__ import annotations

import contextlib
import faulthandler
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from types import FrameType

from proctor import changes, datasets, db, exceptions, results, scanning, store, webhooks
from proctor.api.schemas import webhook_body
from proctor.config import Settings
from proctor.engine import DockerEngine, Executor
from proctor.jobs import ErrorCode, Outcome, Status
from proctor.pipeline import Control, Pipeline, StopReason, Ticket

log = logging.getLogger(__name__)

CANCEL_POLL_SECONDS = 1.0
DB_RETRY_SECONDS = 2.0
ENGINE_FAILURE_BACKOFF_SECONDS = 5.0
SIGNAL_CHECK_SECONDS = 0.2  # how soon the main thread acts on SIGTERM/SIGINT


def worker_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Worker:
    def __init__(
        self,
        settings: Settings,
        executor_factory: Callable[[], Executor] | None = None,
        worker_id: str | None = None,
    ) -> None:
        self.settings = settings
        self.id = worker_id or worker_name()
        self._executor_factory = executor_factory or (lambda: DockerEngine(settings.docker_host))
        self._stopping = threading.Event()
        self._active: dict[str, Control] = {}
        self._active_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._slots: list[threading.Thread] = []
        self._wakeup = threading.Event()
        self._timings = Timings()
        # Which scanners are installed is looked up once, not for every job.
        self._checks = scanning.configured_checks(settings)
        self._webhooks = webhooks.Dispatcher(settings, webhook_body)

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Clear what dead workers left on this engine, then start the slots and the
        supervisor; returns at once."""
        self.sweep_orphans()
        results.signing_key(self.settings)  # created now if this deployment has none yet
        for slot in range(self.settings.worker_concurrency):
            thread = threading.Thread(target=self._slot, name=f"slot-{slot}", daemon=True)
            self._slots.append(thread)
        self._threads = [
            *self._slots,
            threading.Thread(target=self._supervise, name="supervisor", daemon=True),
            self._webhooks.thread,
        ]
        # Claim a job as soon as one is queued, not at the next poll: on PostgreSQL a
        # NOTIFY says so; on SQLite any change to the database files (it has no NOTIFY).
        threading.Thread(
            target=changes.listen,
            args=(
                self.settings.database_url,
                store.QUEUE_CHANNEL,
                lambda _: self._wakeup.set(),
                self._stopping,
            ),
            name="listener",
            daemon=True,
        ).start()
        for thread in self._threads:
            thread.start()
        log.info("worker %s started with %d slot(s)", self.id, self.settings.worker_concurrency)

    def stop(self, drain_seconds: float | None = None) -> None:
        """Stop claiming; running jobs may finish for the drain period, then go back
        to the queue."""
        if self._stopping.is_set():
            return
        drain = self.settings.worker_drain_seconds if drain_seconds is None else drain_seconds
        log.info("worker %s stopping; running jobs get %g s to finish", self.id, drain)
        self._stopping.set()
        self._wakeup.set()
        self._webhooks.stop()
        timer = threading.Timer(drain, self._interrupt_all)
        timer.daemon = True
        timer.start()

    def _interrupt_all(self) -> None:
        with self._active_lock:
            for control in self._active.values():
                control.stop(StopReason.SHUTDOWN)

    def sweep_orphans(self) -> int:
        """Remove what workers that died left behind: containers on this engine of jobs
        they no longer hold, and their images.

        A container is an orphan when its job is no longer active, or is active under
        another worker than the one that started it. Containers and images of jobs this
        database does not know belong to another deployment sharing the engine and are
        left alone. Returns how many containers were removed.
        """
        executor = self._executor_factory()
        try:
            containers = executor.managed_containers()
            image_jobs = set() if self.settings.keep_images else executor.managed_images()
            with db.session_scope(self.settings) as session:
                holders = store.lease_holders(session, {c.job_id for c in containers} | image_jobs)
            removed = 0
            for container in containers:
                if container.job_id in holders and holders[container.job_id] != container.worker:
                    executor.remove_container(container.id)
                    removed += 1
            for job_id in image_jobs & holders.keys():
                if holders[job_id] is None:
                    executor.remove_job_images(job_id)
        except (exceptions.EngineError, exceptions.ServiceUnavailable) as exc:
            log.warning("could not sweep orphans: %s", exc.message)
            return 0
        finally:
            executor.close()
        if removed:
            log.info("removed %d orphaned container(s)", removed)
        return removed

    def join(self, timeout: float | None = None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            thread.join(remaining)

    @property
    def alive(self) -> bool:
        return any(thread.is_alive() for thread in self._threads)

    def run(self) -> None:
        self.start()
        self.join()

    @property
    def active_jobs(self) -> list[str]:
        with self._active_lock:
            return list(self._active)

    # --- slots --------------------------------------------------------------------------

    def _slot(self) -> None:
        executor: Executor | None = None
        while not self._stopping.is_set():
            try:
                if executor is None:
                    executor = self._executor_factory()
                worked = self._run_one(executor)
            except exceptions.ServiceUnavailable as exc:
                log.warning("database unavailable, retrying: %s", exc.message)
                self._stopping.wait(DB_RETRY_SECONDS)
                continue
            except Exception:
                log.exception("worker slot failed; retrying")
                self._stopping.wait(ENGINE_FAILURE_BACKOFF_SECONDS)
                continue
            if not worked:
                self._wakeup.wait(self.settings.worker_poll_interval)
                self._wakeup.clear()
        if executor is not None:
            executor.close()

    def _run_one(self, executor: Executor) -> bool:
        with db.session_scope(self.settings) as session:
            job = store.claim(
                session,
                self.id,
                self.settings.lease_seconds,
                max_running_per_user=self.settings.max_running_per_user,
            )
            if job is None:
                return False
            ticket = Ticket(
                id=job.id,
                timeout=job.timeout,
                context=store.load_context(session, job.id),
                dataset=job.dataset,
                gpus=job.gpus,
            )
            job_id, attempt = job.id, job.attempts
            if attempt > 1:
                store.clear_logs(session, job_id)
        log.info("job %s: claimed (attempt %d)", job_id, attempt)
        control = Control()
        with self._active_lock:
            self._active[job_id] = control
        pipeline = Pipeline(self.settings, executor, self.id, self._checks)
        try:
            outcome = pipeline.execute(ticket, control)
        except exceptions.ServiceUnavailable:
            raise  # the lease runs out and the job is tried again
        except Exception as exc:
            log.exception("job %s: proctor failed", job_id)
            outcome = Outcome.failed(ErrorCode.INTERNAL, f"proctor failed: {exc}")
        finally:
            with self._active_lock:
                self._active.pop(job_id, None)
        self._timings.add(pipeline.timings)
        self._settle(job_id, outcome, control, ticket.dataset, pipeline.unstored)
        if outcome is not None and outcome.error and outcome.error.code is ErrorCode.INTERNAL:
            # Whatever broke may break the next job too: give it a moment.
            self._stopping.wait(ENGINE_FAILURE_BACKOFF_SECONDS)
        return True

    def _settle(
        self,
        job_id: str,
        outcome: Outcome | None,
        control: Control,
        dataset: str | None,
        unstored: dict[str, object],
    ) -> None:
        """Store the attempt's outcome with what the pipeline learnt and has not stored."""
        succeeded = outcome is not None and outcome.status is Status.SUCCEEDED
        dataset_hash = self._dataset_hash(dataset) if succeeded and dataset else None
        with db.session_scope(self.settings) as session:
            if outcome is not None:
                if store.finish(session, job_id, self.id, outcome, **unstored):
                    # Signed by the worker that saw the result, in the same transaction.
                    results.sign_job(session, self.settings, job_id, dataset_hash)
                    log.info("job %s: %s %s", job_id, outcome.status, outcome.error or "")
                else:
                    log.warning("job %s: lease lost before its outcome was stored", job_id)
            elif control.reason is StopReason.SHUTDOWN:
                store.give_back(session, job_id, self.id)
                log.info("job %s: returned to the queue", job_id)

    def _dataset_hash(self, name: str) -> str | None:
        """The content hash of the dataset as it was mounted (read-only) for the run."""
        assert self.settings.datasets_dir is not None
        try:
            return datasets.content_hash(self.settings.datasets_dir / name)
        except OSError as exc:
            log.warning("dataset %s: cannot hash it for the result record: %s", name, exc)
            return None

    # --- supervisor ---------------------------------------------------------------------

    def _supervise(self) -> None:
        renew_every = self.settings.lease_seconds / 3
        last_renewal = 0.0
        # Runs until every slot is done: draining jobs still need their leases renewed.
        while any(slot.is_alive() for slot in self._slots):
            time.sleep(CANCEL_POLL_SECONDS)
            released = 0
            try:
                with self._timings.stored() as timed, db.session_scope(self.settings) as session:
                    store.observe_phases(session, timed)
                    held = self.active_jobs
                    for job_id in store.cancel_requested(session, held):
                        self._stop_job(job_id, StopReason.CANCEL)
                    if time.monotonic() - last_renewal >= renew_every:
                        kept = store.renew_leases(
                            session, self.id, held, self.settings.lease_seconds
                        )
                        for job_id in set(held) - kept:
                            self._stop_job(job_id, StopReason.LEASE_LOST)
                        released = store.release_expired(session, self.settings.max_attempts)
                        last_renewal = time.monotonic()
                    if released:
                        self._wakeup.set()
                        self.sweep_orphans()
            except exceptions.ServiceUnavailable as exc:
                log.warning("supervisor: database unavailable: %s", exc.message)
        with contextlib.suppress(exceptions.ServiceUnavailable):
            with self._timings.stored() as timed, db.session_scope(self.settings) as session:
                store.observe_phases(session, timed)  # the last jobs'

    def _stop_job(self, job_id: str, reason: StopReason) -> None:
        with self._active_lock:
            control = self._active.get(job_id)
        if control is not None:
            log.info("job %s: stopping (%s)", job_id, reason)
            control.stop(reason)


class Timings:
    """Phase durations of the worker's jobs, stored in batches (the phase histogram is
    a metric: a second late costs nothing, a write per observation costs CPU)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: list[tuple[Status, float]] = []

    def add(self, timings: list[tuple[Status, float]]) -> None:
        with self._lock:
            self._pending += timings

    @contextlib.contextmanager
    def stored(self) -> Iterator[list[tuple[Status, float]]]:
        """The pending durations, to store in a transaction; kept if it fails."""
        with self._lock:
            taken, self._pending = self._pending, []
        try:
            yield taken
        except BaseException:
            with self._lock:
                self._pending = taken + self._pending
            raise


def run_worker(settings: Settings) -> None:
    """Run a worker in the foreground until SIGTERM or SIGINT.

    The signal handler only records the signal: taking a lock inside a handler (logging
    does, and so does `Event.set`) can deadlock against the very thread it interrupted.
    The main thread acts on it. SIGUSR1 dumps every thread's stack to stderr, for a
    worker that seems stuck.
    """
    worker = Worker(settings)
    received: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    worker.start()
    handled = 0
    while worker.alive:
        if len(received) > handled:
            log.info("received %s", signal.Signals(received[handled]).name)
            handled = len(received)
            worker.stop()
        worker.join(timeout=SIGNAL_CHECK_SECONDS)
