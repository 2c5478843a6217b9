"""Crash safety with real processes: killed workers, many workers, a killed API, a
restarted database. No job is lost, none runs twice at once, nothing is left behind."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import httpx
import pytest

from proctor import db, users
from proctor.config import Settings
from proctor.engine import JOB_LABEL, WORKER_LABEL
from proctor.models import Job, JobContext

from ..conftest import SettingsFactory
from .conftest import (
    Api,
    ApiFactory,
    WorkerFactory,
    containers_of,
    dockerfile,
    tar_context,
    wait_for_sandbox,
)

pytestmark = pytest.mark.docker

LEASE_SECONDS = 3
WAIT_SECONDS = 180
PERF = "echo '{\"perf\": 1}' > /data/perf.json"
PERF_FILE = dockerfile(PERF).encode()
WorkerProcess = Callable[[str], "subprocess.Popen[bytes]"]


@pytest.fixture
def crash_settings(make_settings: SettingsFactory) -> Settings:
    return make_settings(lease_seconds=LEASE_SECONDS)


@pytest.fixture
def spawn_worker(crash_settings: Settings, tmp_path: Path) -> Iterator[WorkerProcess]:
    """`proctor worker` processes, each with its own home, as if on its own host."""
    started: list[subprocess.Popen[bytes]] = []

    def spawn(name: str, concurrency: int = 2) -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            "PROCTOR_HOME": str(tmp_path / f"worker-{name}"),
            "PROCTOR_DATABASE_URL": crash_settings.database_url,
            "PROCTOR_LEASE_SECONDS": str(LEASE_SECONDS),
            "PROCTOR_WORKER_POLL_INTERVAL": "0.05",
            "PROCTOR_WORKER_DRAIN_SECONDS": "0",
            "PROCTOR_WORKER_CONCURRENCY": str(concurrency),
            "PROCTOR_RUN_MEMORY": "256m",
        }
        with (tmp_path / f"worker-{name}.log").open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "proctor", "worker"], env=env, stdout=log, stderr=log
            )
        started.append(process)
        return process

    yield spawn
    for process in started:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in started:
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    # A worker killed with -9 cannot unmount its jobs' /data folders: do it for it.
    for mount_point in mounts_under(tmp_path):
        subprocess.run(["umount", "-l", mount_point], check=False)


def mounts_under(root: Path) -> list[str]:
    with open("/proc/mounts") as mounts:
        points = [line.split()[1] for line in mounts]
    return [point for point in points if point.startswith(f"{root}/")]


@pytest.fixture
def crash_api(crash_settings: Settings, make_api: ApiFactory) -> Api:
    return make_api(app_settings=crash_settings)


def start_serve(settings: Settings, home: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A `proctor serve` process on the test's database; returns it and its URL once up."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        **os.environ,
        "PROCTOR_HOME": str(home),
        "PROCTOR_DATABASE_URL": settings.database_url,
        "PROCTOR_PORT": str(port),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "proctor", "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            assert time.monotonic() < deadline, "proctor serve did not start"
            time.sleep(0.1)


def kill_and_replace(first: subprocess.Popen[bytes], spawn_worker: WorkerProcess) -> None:
    """kill -9 a worker, then start another (another host) to pick up its jobs."""
    first.kill()
    first.wait()
    spawn_worker("b")


def test_crash_kill_9_worker_mid_run_job_completes_elsewhere(
    crash_api: Api, spawn_worker: WorkerProcess, docker_client: docker.DockerClient
) -> None:
    job_id = crash_api.submit_ok(dockerfile(f"sleep 4; {PERF}"))["id"]
    first = spawn_worker("a")
    crash_api.wait(job_id, {"running"}, timeout=60)
    wait_for_sandbox(docker_client, job_id)

    kill_and_replace(first, spawn_worker)
    job = crash_api.wait(job_id, timeout=WAIT_SECONDS)

    assert job["status"] == "succeeded", job
    assert job["attempts"] == 2
    assert containers_of(docker_client, job_id) == []


def test_crash_kill_9_worker_mid_build_job_completes_elsewhere(
    crash_api: Api, spawn_worker: WorkerProcess, docker_client: docker.DockerClient
) -> None:
    # A step no earlier build cached: the build really runs when the worker dies.
    step = f"RUN echo {uuid.uuid4().hex} && sleep 3\n"
    text = "FROM proctor/busybox:latest\n" + step + dockerfile(PERF).split("\n", 1)[1]
    job_id = crash_api.submit_ok(text)["id"]
    first = spawn_worker("a")
    crash_api.wait(job_id, {"building"}, timeout=60)
    time.sleep(1)

    kill_and_replace(first, spawn_worker)
    job = crash_api.wait(job_id, timeout=WAIT_SECONDS)

    assert job["status"] == "succeeded", job
    assert job["attempts"] == 2
    assert containers_of(docker_client, job_id) == []


def test_crash_three_workers_run_every_job_exactly_once(
    crash_api: Api,
    spawn_worker: WorkerProcess,
    docker_client: docker.DockerClient,
    crash_settings: Settings,
) -> None:
    # Count run containers from the engine's own event stream, not from the database.
    events = docker_client.events(
        decode=True, filters={"type": "container", "event": "start", "label": WORKER_LABEL}
    )
    starts: Counter[str] = Counter()
    listener = threading.Thread(
        target=lambda: starts.update(e["Actor"]["Attributes"].get(JOB_LABEL) for e in events),
        daemon=True,
    )
    listener.start()
    ids = [crash_api.submit_ok(dockerfile(PERF))["id"] for _ in range(100)]
    for name in ("a", "b", "c"):
        spawn_worker(name)

    jobs = [crash_api.wait(job_id, timeout=WAIT_SECONDS) for job_id in ids]
    time.sleep(1)  # let the last events arrive
    events.close()
    assert all(job["status"] == "succeeded" for job in jobs)
    assert {job["id"]: job["attempts"] for job in jobs} == {
        job_id: starts[job_id] for job_id in ids
    }
    duplicates = [job_id for job_id in ids if starts[job_id] > 1]
    lost = [job["id"] for job in jobs if job["status"] != "succeeded"]
    print(
        f"\njobs submitted 100, completed {len(jobs) - len(lost)}, "
        f"duplicates {len(duplicates)}, lost {len(lost)}"
    )
    assert duplicates == [] and lost == []


def test_crash_kill_9_api_during_uploads_leaves_no_half_job(
    crash_settings: Settings, tmp_path: Path
) -> None:
    token = users.add_user(crash_settings, "uploader", admin=False)
    server, url = start_serve(crash_settings, tmp_path / "api-home")
    archive = tar_context({"Dockerfile": dockerfile(PERF), "weights.bin": os.urandom(2 * 2**20)})
    stop = threading.Event()

    def upload() -> None:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as client:
            while not stop.is_set():
                try:
                    client.post("/api/v1/jobs", files={"file": ("c.tar.gz", archive)}, timeout=10)
                except httpx.HTTPError:
                    return

    threads = [threading.Thread(target=upload) for _ in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(1.5)
    server.kill()
    server.wait()
    stop.set()
    for thread in threads:
        thread.join()

    with db.session_scope(crash_settings) as session:
        jobs = session.query(Job).all()
        contexts = {c.job_id: len(c.data) for c in session.query(JobContext).all()}
    assert jobs, "no upload completed before the kill"
    assert all(job.status == "queued" for job in jobs)
    assert {job.id for job in jobs} == set(contexts)
    assert all(size == job.context_size for job in jobs for size in [contexts[job.id]])


def test_crash_database_restart_loses_no_job(
    request: pytest.FixtureRequest,
    crash_settings: Settings,
    crash_api: Api,
    make_worker: WorkerFactory,
) -> None:
    if request.config.getoption("--database") != "postgresql":
        pytest.skip("restarts the PostgreSQL server: runs with --database postgresql")
    cluster = subprocess.run(
        ["pg_lsclusters", "--no-header"], capture_output=True, text=True, check=True
    ).stdout.split()[:2]
    ids = [crash_api.submit_ok(dockerfile(f"sleep 1; {PERF}"))["id"] for _ in range(6)]
    make_worker(crash_settings)
    crash_api.wait(ids[0], {"running", "succeeded"}, timeout=60)

    subprocess.run(["pg_ctlcluster", *cluster, "restart"], check=True)
    answers: Counter[int] = Counter()
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        response = crash_api.get("/api/v1/jobs?limit=200")
        answers[response.status_code] += 1
        if response.status_code == 200 and all(
            job["status"] in {"succeeded", "failed", "cancelled"}
            for job in response.json()["items"]
        ):
            break
        time.sleep(0.5)

    jobs = [crash_api.job(job_id) for job_id in ids]
    assert [job["status"] for job in jobs] == ["succeeded"] * len(ids), jobs
    assert set(answers) <= {200, 503}


def test_crash_several_api_processes_act_as_one_service(
    crash_settings: Settings, tmp_path: Path
) -> None:
    token = users.add_user(crash_settings, "multi", admin=False)
    servers = [start_serve(crash_settings, tmp_path / f"api-{name}") for name in ("one", "two")]
    headers = {"Authorization": f"Bearer {token}"}
    try:
        (_, first), (_, second) = servers
        created = httpx.post(
            f"{first}/api/v1/jobs", headers=headers, files={"file": ("Dockerfile", PERF_FILE)}
        ).json()

        seen = httpx.get(f"{second}/api/v1/jobs/{created['id']}", headers=headers)
        cancelled = httpx.post(f"{second}/api/v1/jobs/{created['id']}/cancel", headers=headers)
        listed = httpx.get(f"{first}/api/v1/jobs", headers=headers).json()["items"]
    finally:
        for process, _ in servers:
            process.terminate()
            process.wait(30)

    assert seen.status_code == 200 and seen.json()["id"] == created["id"]
    assert cancelled.status_code == 202
    assert [(job["id"], job["status"]) for job in listed] == [(created["id"], "cancelled")]
