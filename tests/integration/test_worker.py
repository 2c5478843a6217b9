"""The worker as a real process: clean stop on signals, cleanup, leases."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from sqlalchemy import update

from proctor import db, store
from proctor.config import Settings
from proctor.engine import JOB_LABEL, WORKER_LABEL
from proctor.models import Job
from proctor.worker import Worker

from ..conftest import SettingsFactory
from .conftest import (
    Api,
    ApiFactory,
    WorkerFactory,
    containers_of,
    dockerfile,
    wait_for_sandbox,
)

pytestmark = pytest.mark.docker

# Drain, kill, cleanup: seconds when idle, but the engine can be slow under a full suite.
STOP_SECONDS = 60


@pytest.fixture
def worker_process(settings: Settings) -> Iterator[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        "PROCTOR_HOME": str(settings.home),
        "PROCTOR_DATABASE_URL": settings.database_url,
        "PROCTOR_WORKER_POLL_INTERVAL": "0.05",
        "PROCTOR_WORKER_DRAIN_SECONDS": "1",
    }
    # A file, not a pipe: nobody reads a pipe while the test waits, and a worker whose
    # log fills the pipe blocks on its next line.
    with (
        (settings.home / "worker.log").open("wb") as log,
        subprocess.Popen(
            [sys.executable, "-m", "proctor", "worker"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        ) as process,
    ):
        yield process
        if process.poll() is None:
            process.kill()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_worker_signal_stops_cleanly_and_requeues(
    api: Api,
    settings: Settings,
    worker_process: subprocess.Popen[bytes],
    docker_client: docker.DockerClient,
    signum: signal.Signals,
) -> None:
    job_id = api.submit_ok(dockerfile("sleep 300"))["id"]
    api.wait(job_id, {"running"}, timeout=60)
    wait_for_sandbox(docker_client, job_id, timeout=30)

    worker_process.send_signal(signum)
    try:
        code = worker_process.wait(timeout=STOP_SECONDS)
    except subprocess.TimeoutExpired:
        code = None
        worker_process.send_signal(signal.SIGUSR1)  # its threads' stacks, into the log
        time.sleep(1)
    output = (settings.home / "worker.log").read_text(errors="replace")
    assert code == 0, f"worker exit {code} after {signum.name}:\n{output[-5000:]}"
    assert containers_of(docker_client, job_id) == []
    job = api.job(job_id)
    assert job["status"] == "queued", job
    assert job["attempts"] == 0


def test_worker_picks_up_a_job_given_back(api: Api, make_worker: WorkerFactory) -> None:
    first = make_worker()
    job_id = api.submit_ok(dockerfile("sleep 2; echo '{\"perf\": 2}' > /data/perf.json"))["id"]
    api.wait(job_id, {"running"})
    first.stop()
    first.join(timeout=STOP_SECONDS)
    assert api.job(job_id)["status"] == "queued"

    make_worker()
    job = api.wait(job_id)

    assert job["status"] == "succeeded"
    assert job["performance"] == 2
    assert job["attempts"] == 1


def test_worker_requeues_job_of_a_dead_worker(
    api: Api, settings: Settings, make_worker: WorkerFactory
) -> None:
    job_id = api.submit_ok(dockerfile("echo '{\"perf\": 3}' > /data/perf.json"))["id"]
    # A worker that claimed the job and died: its lease is held by nobody alive.
    with db.session_scope(settings) as session:
        assert store.claim(session, "dead-worker", lease_seconds=1) is not None
    time.sleep(1.5)

    make_worker()
    job = api.wait(job_id)

    assert job["status"] == "succeeded"
    assert job["attempts"] == 2
    with db.session_scope(settings) as session:
        stored = session.get(Job, job_id)
        assert stored is not None and stored.lease_owner is None


def test_worker_job_scratch_folder_is_removed(api: Api, worker: Worker, settings: Settings) -> None:
    job = api.run(dockerfile("echo '{\"perf\": 1}' > /data/perf.json; echo x > /data/extra"))

    assert job["status"] == "succeeded"
    assert not (Path(settings.jobs_dir) / job["id"]).exists()


def test_worker_drain_lets_running_jobs_finish(
    api: Api, settings: Settings, make_worker: WorkerFactory
) -> None:
    worker = make_worker()
    job_id = api.submit_ok(dockerfile("sleep 2; echo '{\"perf\": 5}' > /data/perf.json"))["id"]
    api.wait(job_id, {"running"})

    worker.stop(drain_seconds=60)
    worker.join(timeout=STOP_SECONDS)

    assert api.job(job_id)["status"] == "succeeded"


def test_worker_sweeps_orphans_of_dead_workers_only_in_its_own_database(
    api: Api, settings: Settings, make_worker: WorkerFactory, docker_client: docker.DockerClient
) -> None:
    finished = api.submit_ok(dockerfile("true"))["id"]
    api.post(f"/api/v1/jobs/{finished}/cancel")
    running = api.submit_ok(dockerfile("true"))["id"]
    with db.session_scope(settings) as session:
        claimed = store.claim(session, "live-worker-elsewhere", lease_seconds=300)
        assert claimed is not None and claimed.id == running
    # A job of another deployment sharing this engine: its database is not ours.
    foreign = "0" * 28
    for job_id, owner in (
        (finished, "dead-worker"),
        (running, "live-worker-elsewhere"),
        (foreign, "worker-of-another-deployment"),
    ):
        labels = {JOB_LABEL: job_id, WORKER_LABEL: owner}
        docker_client.containers.create("proctor/busybox:latest", labels=labels)

    make_worker()

    assert containers_of(docker_client, finished) == []
    assert len(containers_of(docker_client, running)) == 1
    assert len(containers_of(docker_client, foreign)) == 1
    for container in containers_of(docker_client, running) + containers_of(docker_client, foreign):
        container.remove(force=True)


def test_worker_schedules_users_fairly(
    make_settings: SettingsFactory, make_api: ApiFactory, make_worker: WorkerFactory
) -> None:
    settings = make_settings(worker_concurrency=1)
    alice, bob = make_api("alice", app_settings=settings), make_api("bob", app_settings=settings)
    perf = dockerfile("echo '{\"perf\": 1}' > /data/perf.json")
    alice_jobs = [alice.submit_ok(perf)["id"] for _ in range(30)]
    bob_job = bob.submit_ok(perf)["id"]

    make_worker(settings)
    bob_started = bob.wait(bob_job)["started_at"]

    fourth = alice.job(alice_jobs[3])
    assert fourth["started_at"] is None or bob_started < fourth["started_at"]


def test_worker_picks_up_new_jobs_at_once_on_postgresql(
    request: pytest.FixtureRequest,
    make_settings: SettingsFactory,
    make_api: ApiFactory,
    make_worker: WorkerFactory,
) -> None:
    if request.config.getoption("--database") != "postgresql":
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's: runs with --database postgresql")
    # Polling alone would take 60 s: a quick start proves the notification woke the worker.
    settings = make_settings(worker_poll_interval=60)
    api = make_api(app_settings=settings)
    make_worker(settings)
    time.sleep(1)  # the worker is listening and idle

    job = api.wait(api.submit_ok(dockerfile("echo '{\"perf\": 1}' > /data/perf.json"))["id"])

    assert job["status"] == "succeeded"
    created, started = (dt.datetime.fromisoformat(job[k]) for k in ("created_at", "started_at"))
    assert (started - created).total_seconds() < 2


def test_worker_picks_up_new_jobs_at_once_on_sqlite(
    request: pytest.FixtureRequest,
    make_settings: SettingsFactory,
    make_api: ApiFactory,
    make_worker: WorkerFactory,
) -> None:
    if request.config.getoption("--database") != "sqlite":
        pytest.skip("watching the database file is SQLite's: runs with --database sqlite")
    # Polling alone would take 60 s: a quick start proves the file watch woke the worker.
    settings = make_settings(worker_poll_interval=60)
    api = make_api(app_settings=settings)
    make_worker(settings)
    time.sleep(1)  # the worker is idle, waiting out its poll interval

    job = api.wait(api.submit_ok(dockerfile("echo '{\"perf\": 1}' > /data/perf.json"))["id"])

    assert job["status"] == "succeeded"
    created, started = (dt.datetime.fromisoformat(job[k]) for k in ("created_at", "started_at"))
    assert (started - created).total_seconds() < 2


def test_worker_that_loses_its_lease_stops_the_job_and_keeps_off(
    api: Api, settings: Settings, make_worker: WorkerFactory, docker_client: docker.DockerClient
) -> None:
    make_worker()
    job_id = api.submit_ok(dockerfile("sleep 300"))["id"]
    api.wait(job_id, {"running"})
    wait_for_sandbox(docker_client, job_id, timeout=30)

    # Another worker now holds the job (as after a partition that outlasted the lease).
    with db.session_scope(settings) as session:
        session.execute(update(Job).where(Job.id == job_id).values(lease_owner="other-worker"))
    deadline = time.monotonic() + settings.lease_seconds + 10
    while containers_of(docker_client, job_id):
        assert time.monotonic() < deadline, "the container outlived the lost lease"
        time.sleep(0.2)
    time.sleep(1)

    job = api.job(job_id)
    assert job["status"] == "running"  # the old worker wrote no outcome over the new holder's
    with db.session_scope(settings) as session:
        stored = session.get(Job, job_id)
        assert stored is not None and stored.lease_owner == "other-worker"
