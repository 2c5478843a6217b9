"""Integration fixtures: the real API app, a real worker, the real Docker engine."""

from __future__ import annotations

import io
import json
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import docker
import pytest
from fastapi.testclient import TestClient

from proctor import users
from proctor.api.app import create_app
from proctor.config import Settings
from proctor.engine import JOB_LABEL
from proctor.worker import Worker

from ..conftest import SettingsFactory

BUSYBOX = "proctor/busybox:latest"
PYTHON = "proctor/python:3.11"
FINAL = {"succeeded", "failed", "cancelled"}
WAIT_SECONDS = 120


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        pytest.fail(f"no Docker engine: run scripts/install-engine.sh ({exc})")
    for image in (BUSYBOX,):
        try:
            client.images.get(image)
        except docker.errors.ImageNotFound:
            pytest.fail(f"base image {image} is missing: run scripts/base-images.sh")
    yield client
    client.close()


@dataclass
class Api:
    """An HTTP client of the app, signed in as one user."""

    http: TestClient
    token: str
    name: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def get(self, url: str, headers: dict[str, str] | None = None, **kwargs: Any) -> Any:
        return self.http.get(url, headers={**self.headers, **(headers or {})}, **kwargs)

    def post(self, url: str, headers: dict[str, str] | None = None, **kwargs: Any) -> Any:
        return self.http.post(url, headers={**self.headers, **(headers or {})}, **kwargs)

    def submit(self, dockerfile: str | bytes, **fields: Any) -> Any:
        data = dockerfile.encode() if isinstance(dockerfile, str) else dockerfile
        form = {key: str(value) for key, value in fields.items()}
        return self.post("/api/v1/jobs", files={"file": ("Dockerfile", data)}, data=form)

    def submit_ok(self, dockerfile: str | bytes, **fields: Any) -> dict[str, Any]:
        response = self.submit(dockerfile, **fields)
        assert response.status_code == 201, response.text
        job: dict[str, Any] = response.json()
        return job

    def job(self, job_id: str) -> dict[str, Any]:
        response = self.get(f"/api/v1/jobs/{job_id}")
        assert response.status_code == 200, response.text
        job: dict[str, Any] = response.json()
        return job

    def logs(self, job_id: str) -> str:
        response = self.get(f"/api/v1/jobs/{job_id}/logs")
        assert response.status_code == 200, response.text
        return str(response.text)

    def wait(
        self, job_id: str, statuses: set[str] = FINAL, timeout: float = WAIT_SECONDS
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job["status"] in statuses:
                return job
            if time.monotonic() > deadline:
                pytest.fail(f"job {job_id} still {job['status']} after {timeout} s")
            time.sleep(0.1)

    def run(self, dockerfile: str | bytes, **fields: Any) -> dict[str, Any]:
        """Submit and wait for the final state."""
        return self.wait(self.submit_ok(dockerfile, **fields)["id"])


ApiFactory = Callable[..., Api]


@pytest.fixture
def make_api(settings: Settings) -> Iterator[ApiFactory]:
    clients: list[TestClient] = []

    def make(
        name: str = "alice", *, admin: bool = False, app_settings: Settings | None = None
    ) -> Api:
        chosen = app_settings or settings
        http = TestClient(create_app(chosen), raise_server_exceptions=False)
        http.__enter__()  # runs the app's lifespan, so its shutdown is run too
        clients.append(http)
        return Api(http=http, token=users.add_user(chosen, name, admin=admin), name=name)

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def api(make_api: ApiFactory) -> Api:
    return make_api()


WorkerFactory = Callable[..., Worker]


@pytest.fixture
def make_worker(settings: Settings, docker_client: docker.DockerClient) -> Iterator[WorkerFactory]:
    started: list[Worker] = []

    def make(worker_settings: Settings | None = None, **kwargs: Any) -> Worker:
        worker = Worker(worker_settings or settings, **kwargs)
        worker.start()
        started.append(worker)
        return worker

    yield make
    for worker in started:
        worker.stop()
    for worker in started:
        worker.join(timeout=60)


@pytest.fixture
def worker(make_worker: WorkerFactory) -> Worker:
    return make_worker()


StackFactory = Callable[..., Api]


@pytest.fixture
def make_stack(
    make_settings: SettingsFactory, make_api: ApiFactory, make_worker: WorkerFactory
) -> StackFactory:
    """An API client and a running worker, on fresh settings with these overrides."""

    def make(**overrides: Any) -> Api:
        settings = make_settings(**overrides)
        make_worker(settings)
        return make_api(app_settings=settings)

    return make


def containers_of(client: docker.DockerClient, job_id: str, *, running: bool = False) -> list[Any]:
    """The job's containers. Sparse: the list is not followed by one inspect per container,
    which would race the engine removing a build step's container between the two."""
    filters: dict[str, Any] = {"label": f"{JOB_LABEL}={job_id}"}
    if running:
        filters["status"] = "running"
    return list(client.containers.list(all=True, filters=filters, sparse=True))


def wait_for_sandbox(client: docker.DockerClient, job_id: str, timeout: float = 60) -> None:
    """Wait until the job's sandbox container runs. The job's status says `running` a
    moment before, and a build step's container (never started) may still be there."""
    deadline = time.monotonic() + timeout
    while not containers_of(client, job_id, running=True):
        assert time.monotonic() < deadline, "the job's container never started"
        time.sleep(0.1)


def managed_images(client: docker.DockerClient, job_id: str) -> list[Any]:
    # all: an intermediate image would be hidden from a plain list
    return list(client.images.list(all=True, filters={"label": f"{JOB_LABEL}={job_id}"}))


def tar_context(files: dict[str, bytes | str], *, gzip: bool = True) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz" if gzip else "w") as archive:
        for name, content in files.items():
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def dockerfile(cmd: str, *, base: str = BUSYBOX, extra: str = "") -> str:
    """A job whose command is one shell line."""
    return f"FROM {base}\n{extra}CMD {json.dumps(['sh', '-c', cmd])}\n"
