"""The measurements: each returns table rows, proctor against a baseline measured in the
same run (see README.md for what each compares)."""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import httpx
from sqlalchemy import select, text

from bench import raw
from bench.load import WRK_CONNECTIONS, wrk
from bench.report import Goal, Row, Target, median, percentile
from bench.service import (
    TRIVIAL_DOCKERFILE,
    Databases,
    deployment,
    rss_bytes,
    submit,
    wait_final,
)
from proctor import db, store, users
from proctor.config import Settings
from proctor.jobs import Status
from proctor.models import Job, User

MS_PER_SECOND = 1000.0
OVERHEAD_RATIO = 1.10  # proctor may add 10 % …
OVERHEAD_SLACK_MS = 150.0  # … or 150 ms, whichever is larger
THROUGHPUT_RATIO = 0.90
GET_RPS_MIN = 1000.0
GET_P99_MS_MAX = 50.0
POST_RPS_MIN = 200.0
HISTORY_RATIO_MAX = 2.0
MEMORY_RATIO_MAX = 2.0  # under load, at most twice the idle resident size
WARMUP_JOBS = 2
# `serve --processes` in the api measurement: serve's default. The load generator, the
# worker and PostgreSQL share the machine's cores with the API: with a process per core
# the CPUs are oversubscribed and the scheduler, not the app, sets the tail (see
# docs/performance.md).
API_PROCESSES: int = Settings.model_fields["api_processes"].default
SLEEPY_DOCKERFILE = (
    "FROM proctor/busybox:latest\n"
    'CMD ["sh", "-c", "sleep 30; echo \'{\\"perf\\": 1}\' > /data/perf.json"]\n'
)
POST_DOCKERFILE = 'FROM proctor/busybox:latest\nCMD ["true"]\n'
HISTORY_USERS = 10
BULK_CHUNK_ROWS = 200_000


@dataclass(frozen=True)
class Options:
    quick: bool
    databases: Databases
    backend: str
    api_processes: int = API_PROCESSES

    @property
    def runs(self) -> int:
        return 5 if self.quick else 20

    @property
    def jobs(self) -> int:
        return 10 if self.quick else 100

    @property
    def throughput_rounds(self) -> int:
        return 2 if self.quick else 5

    @property
    def load_seconds(self) -> int:
        return 3 if self.quick else 10

    @property
    def history_rows(self) -> int:
        return 20_000 if self.quick else 1_000_000


def _timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return (time.perf_counter() - started) * MS_PER_SECOND


# --- 1. per-job overhead ---------------------------------------------------------------


def overhead(options: Options) -> list[Row]:
    """One trivial job at a time: submit → final status through proctor, versus build +
    sandboxed run + read the score straight on the engine."""
    with deployment(options.databases, worker_concurrency="1") as service:
        service.start("serve")
        service.start("worker")
        runner = raw.RawRunner(service.settings)
        with service.client() as client:
            for _ in range(WARMUP_JOBS):
                _proctor_job(client)
                runner.run(TRIVIAL_DOCKERFILE)
            through, direct = [], []
            for _ in range(options.runs):  # interleaved, so background load hits both alike
                through.append(_timed(lambda: _proctor_job(client)))
                direct.append(_timed(lambda: runner.run(TRIVIAL_DOCKERFILE)))
        runner.close()
    target = Target(Goal.OVERHEAD, OVERHEAD_RATIO, OVERHEAD_SLACK_MS)
    n = f"n={options.runs}"
    return [
        Row("job latency median", "ms", median(through), median(direct), target, n),
        Row(
            "job latency p95", "ms", percentile(through, 0.95), percentile(direct, 0.95), target, n
        ),
    ]


def _proctor_job(client: httpx.Client) -> None:
    _await_success(client, submit(client))


def _await_success(client: httpx.Client, job_id: str) -> None:
    job = wait_final(client, job_id)
    if job["status"] != "succeeded":
        raise RuntimeError(f"benchmark job {job_id} did not succeed: {job}")


# --- 2. throughput ---------------------------------------------------------------------


def throughput(options: Options, parallel: int = 2) -> list[Row]:
    """`jobs` trivial jobs with `parallel` at once: a worker of that concurrency versus
    the same number of threads on the engine.

    In rounds, proctor's share then the raw engine's, so that other load on the machine
    (it comes and goes) falls on both sides alike. The worker is up and has run a job
    before the clock starts, as the raw side's client is connected before its clock
    starts: a process starting is not throughput. The submissions are timed: the worker
    takes the first job while the rest are being queued.
    """
    count, rounds = options.jobs, options.throughput_rounds
    proctor_seconds = raw_seconds = 0.0
    with deployment(options.databases, worker_concurrency=str(parallel)) as service:
        service.start("serve")
        service.start("worker")
        runner = raw.RawRunner(service.settings)
        with service.client() as client, ThreadPoolExecutor(parallel) as pool:
            for _ in range(WARMUP_JOBS):
                _proctor_job(client)
            for share in _shares(count, rounds):
                started = time.perf_counter()
                ids = [submit(client) for _ in range(share)]
                for job_id in ids:
                    _await_success(client, job_id)
                proctor_seconds += time.perf_counter() - started
                started = time.perf_counter()
                list(pool.map(lambda _: runner.run(TRIVIAL_DOCKERFILE), range(share)))
                raw_seconds += time.perf_counter() - started
        runner.close()
    return [
        Row(
            f"throughput, {count} jobs, {parallel} at once",
            "jobs/min",
            count / proctor_seconds * 60,
            count / raw_seconds * 60,
            Target(Goal.AT_LEAST_RATIO, THROUGHPUT_RATIO),
            f"{rounds} rounds",
        )
    ]


def _shares(count: int, rounds: int) -> list[int]:
    """`count` split into `rounds` near-equal parts."""
    return [count // rounds + (1 if i < count % rounds else 0) for i in range(rounds)]


# --- 3. API under load -----------------------------------------------------------------


def api(options: Options) -> list[Row]:
    """GET a job and POST a job under load, while jobs run, against /healthz (the server
    with no auth, database or job JSON) on the same server."""
    seconds = options.load_seconds
    label = options.backend
    with deployment(
        options.databases,
        max_queued_per_user="0",
        worker_concurrency="2",
        api_processes=str(options.api_processes),
    ) as service:
        server = service.start("serve").pid
        service.start("worker")
        with service.client() as client:
            job_id = submit(client)
            wait_final(client, job_id)
            # The worker is busy while the load runs; the last of these stays queued.
            sleepy = [submit(client, SLEEPY_DOCKERFILE) for _ in range(3)]
            time.sleep(1)
            health = wrk(f"{service.url}/healthz", seconds, server_pid=server)
            get = wrk(f"{service.url}/api/v1/jobs/{job_id}", seconds, service.token, None, server)
            # An active job's answer is read from the database every time.
            active = wrk(
                f"{service.url}/api/v1/jobs/{sleepy[-1]}", seconds, service.token, None, server
            )
            post = wrk(
                f"{service.url}/api/v1/jobs", seconds, service.token, POST_DOCKERFILE, server
            )
    note = (
        f"wrk -c{WRK_CONNECTIONS}, {seconds} s, {options.api_processes} API process(es), "
        "baseline GET /healthz"
    )
    rows = [
        Row(
            f"GET job, {label}",
            "req/s",
            get.requests_per_second,
            health.requests_per_second,
            Target(Goal.AT_LEAST, GET_RPS_MIN),
            note,
        ),
        Row(f"GET job p50, {label}", "ms", get.p50_ms, health.p50_ms, Target(Goal.NONE)),
        Row(
            f"GET job p99, {label}",
            "ms",
            get.p99_ms,
            health.p99_ms,
            Target(Goal.AT_MOST, GET_P99_MS_MAX),
        ),
        Row(
            f"GET active job, {label}",
            "req/s",
            active.requests_per_second,
            health.requests_per_second,
            Target(Goal.NONE),
            "a job not final: no kept answer, a database read each time",
        ),
        Row(
            f"GET active job p99, {label}",
            "ms",
            active.p99_ms,
            health.p99_ms,
            Target(Goal.NONE),
        ),
        Row(
            f"POST job, {label}",
            "req/s",
            post.requests_per_second,
            health.requests_per_second,
            Target(Goal.AT_LEAST, POST_RPS_MIN),
            note,
        ),
        Row(f"POST job p99, {label}", "ms", post.p99_ms, health.p99_ms, Target(Goal.NONE)),
    ]
    # Server CPU per request: the figure least moved by other load on the machine.
    rows += [
        Row(
            f"{name} job server CPU per request, {label}",
            "ms",
            load.cpu_per_request_ms,
            health.cpu_per_request_ms,
            Target(Goal.NONE),
            "baseline: GET /healthz",
        )
        for load, name in ((get, "GET"), (active, "GET active"), (post, "POST"))
    ]
    for load, name in ((get, "GET"), (active, "GET active"), (post, "POST")):
        if load.errors:
            rows.append(
                Row(
                    f"{name} errors, {label}",
                    "responses",
                    load.errors,
                    None,
                    Target(Goal.AT_MOST, 0),
                )
            )
    return rows


# --- 4. scale of history ---------------------------------------------------------------

_SQLITE_FILL = """
INSERT INTO jobs (id, owner_id, name, status, dataset, timeout, gpus, context_size,
  performance, metrics, error_code, error_message, exit_code, image_id, findings, sandbox,
  timeline, attempts, cancel_requested, lease_owner, lease_expires_at, created_at,
  started_at, finished_at)
WITH RECURSIVE seq(n) AS (SELECT :first UNION ALL SELECT n + 1 FROM seq WHERE n < :last)
SELECT printf('%012x%04x%012x', :base_ms + n, 0, n), :owner0 + (n % :owners), NULL,
  'succeeded', NULL, 3600, NULL, 100, 0.5, NULL, NULL, NULL, 0, NULL, '[]', NULL, '{}', 1, 0,
  NULL, NULL, :when, :when, :when
FROM seq
"""
_POSTGRES_FILL = """
INSERT INTO jobs (id, owner_id, name, status, dataset, timeout, gpus, context_size,
  performance, metrics, error_code, error_message, exit_code, image_id, findings, sandbox,
  timeline, attempts, cancel_requested, lease_owner, lease_expires_at, created_at,
  started_at, finished_at)
SELECT lpad(to_hex(CAST(:base_ms AS bigint) + n), 12, '0') || '0000' || lpad(to_hex(n), 12, '0'),
  :owner0 + (n % :owners), NULL, 'succeeded', NULL, 3600, NULL, 100, 0.5, NULL, NULL, NULL, 0,
  NULL, CAST('[]' AS JSON), NULL, CAST('{}' AS JSON), 1, false, NULL, NULL,
  CAST(:when AS timestamptz), CAST(:when AS timestamptz), CAST(:when AS timestamptz)
FROM generate_series(CAST(:first AS bigint), CAST(:last AS bigint)) AS n
"""


def fill_history(settings: Settings, first: int, last: int, owner0: int) -> None:
    """Bulk-insert finished jobs numbered first..last, older than any real job."""
    with db.session_scope(settings) as session:
        postgres = session.get_bind().dialect.name == "postgresql"
        session.execute(
            text(_POSTGRES_FILL if postgres else _SQLITE_FILL),
            {
                "first": first,
                "last": last,
                "base_ms": int(time.time() * 1000) - 10 * last - 10**7,
                "owner0": owner0,
                "owners": HISTORY_USERS,
                "when": "2026-01-01 00:00:00" + ("+00" if postgres else ".000000"),
            },
        )
    if postgres:
        with db.get_engine(settings.database_url).connect() as connection:
            connection.execution_options(isolation_level="AUTOCOMMIT").execute(text("ANALYZE jobs"))


@dataclass(frozen=True)
class HistoryFigures:
    claim_ms: float
    get_ms: float
    list_ms: float
    list_all_ms: float


def history_figures(settings: Settings, viewer: User, admin: User, samples: int) -> HistoryFigures:
    """Median latency of claiming a job, getting one and listing the first page."""
    claims, gets, lists, lists_all = [], [], [], []
    with db.session_scope(settings) as session:
        old = session.scalars(
            select(Job.id).where(Job.owner_id == viewer.id).order_by(Job.id).limit(1)
        ).one()
    for _ in range(samples):
        with db.session_scope(settings) as session:
            store.create_job(session, store.NewJob(viewer.id, b"FROM scratch\n", 60))
        with db.session_scope(settings) as session:
            started = time.perf_counter()
            job = store.claim(session, "bench", 30)
            session.commit()
            claims.append((time.perf_counter() - started) * MS_PER_SECOND)
            assert job is not None
            job.status = Status.SUCCEEDED.value
            job.lease_owner = None
        with db.session_scope(settings) as session:
            gets.append(_timed(partial(store.get_job, session, old, viewer)))
        with db.session_scope(settings) as session:
            lists.append(_timed(partial(store.list_jobs, session, viewer)))
        with db.session_scope(settings) as session:
            lists_all.append(_timed(partial(store.list_jobs, session, admin)))
    return HistoryFigures(median(claims), median(gets), median(lists), median(lists_all))


@contextmanager
def _history_database(options: Options) -> Iterator[Settings]:
    with tempfile.TemporaryDirectory(prefix="proctor-bench-") as tmp:
        home = Path(tmp)
        settings = Settings(home=home, database_url=options.databases.new_url(home))
        try:
            db.upgrade(settings)
            yield settings
        finally:
            db.dispose_engines()
            options.databases.drop_all()


def history(options: Options, small: int = 1000, samples: int = 30) -> list[Row]:
    """Claim, get and list with `small` finished jobs in the database, then with
    `history_rows`; the large figure should stay within twice the small one."""
    large = options.history_rows
    label = options.backend
    with _history_database(options) as settings:
        for index in range(HISTORY_USERS):
            users.add_user(settings, f"bench{index}", admin=False)
        users.add_user(settings, "benchadmin", admin=True)
        with db.session_scope(settings) as session:
            viewer = session.scalars(select(User).where(User.name == "bench0")).one()
            admin_user = session.scalars(select(User).where(User.is_admin)).one()
            owner0 = viewer.id
        assert viewer is not None and admin_user is not None
        fill_history(settings, 0, small - 1, owner0)
        before = history_figures(settings, viewer, admin_user, samples)
        started = time.perf_counter()
        for first in range(small, large, BULK_CHUNK_ROWS):
            fill_history(settings, first, min(first + BULK_CHUNK_ROWS, large) - 1, owner0)
        fill_seconds = time.perf_counter() - started
        after = history_figures(settings, viewer, admin_user, samples)
        with db.session_scope(settings) as session:
            total = session.scalar(text("SELECT count(*) FROM jobs"))
    target = Target(Goal.AT_MOST_RATIO, HISTORY_RATIO_MAX)
    note = f"baseline: {small:,} jobs; inserted {total:,} in {fill_seconds:.0f} s"
    scale = f"{large / 1e6:g}M jobs" if large >= 1_000_000 else f"{large // 1000:,}k jobs"
    return [
        Row(f"claim at {scale}, {label}", "ms", after.claim_ms, before.claim_ms, target, note),
        Row(f"get job at {scale}, {label}", "ms", after.get_ms, before.get_ms, target),
        Row(f"list page at {scale}, {label}", "ms", after.list_ms, before.list_ms, target),
        Row(
            f"list all (admin) at {scale}, {label}",
            "ms",
            after.list_all_ms,
            before.list_all_ms,
            target,
        ),
    ]


# --- 5. memory -------------------------------------------------------------------------


class RssSampler:
    """The peak resident size of a process (and its children) while it runs."""

    INTERVAL_SECONDS = 0.1

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(self.INTERVAL_SECONDS):
            self.peak = max(self.peak, rss_bytes(self.pid))


def memory(options: Options) -> list[Row]:
    """Resident size of `proctor serve` and `proctor worker` idle, then at their peak
    while jobs run and the API is under load."""
    mib = 1024 * 1024
    with deployment(options.databases, max_queued_per_user="0") as service:
        serve = service.start("serve")
        worker = service.start("worker")
        time.sleep(2)
        idle = {"serve": rss_bytes(serve.pid), "worker": rss_bytes(worker.pid)}
        with RssSampler(serve.pid) as serve_peak, RssSampler(worker.pid) as worker_peak:
            with service.client() as client:
                ids = [submit(client) for _ in range(options.runs)]
                wrk(f"{service.url}/api/v1/jobs/{ids[0]}", options.load_seconds, service.token)
                for job_id in ids:
                    wait_final(client, job_id)
    target = Target(Goal.AT_MOST_RATIO, MEMORY_RATIO_MAX)
    note = "baseline: idle"
    return [
        Row(
            "serve RSS under load", "MiB", serve_peak.peak / mib, idle["serve"] / mib, target, note
        ),
        Row(
            "worker RSS under load",
            "MiB",
            worker_peak.peak / mib,
            idle["worker"] / mib,
            target,
            note,
        ),
    ]
