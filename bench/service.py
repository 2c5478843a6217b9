"""Real proctor processes for the benchmarks: `proctor serve` and `proctor worker` as
subprocesses on a fresh home and database, and the databases they use."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from proctor import db, users
from proctor.config import Settings

READY_SECONDS = 60
READY_POLL_SECONDS = 0.1
STOP_SECONDS = 30
BENCH_USER = "bench"
JOB_REQUEST_WAIT_SECONDS = 20  # how long one request waits on the server for the job
JOB_WAIT_SECONDS = 300
FINAL = frozenset({"succeeded", "failed", "cancelled"})

TRIVIAL_DOCKERFILE = (
    'FROM proctor/busybox:latest\nCMD ["sh", "-c", "echo \'{\\"perf\\": 1}\' > /data/perf.json"]\n'
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Databases:
    """Fresh databases: a SQLite file under a home, or a PostgreSQL database dropped after."""

    def __init__(self, backend: str, postgres_url: str = "") -> None:
        self.backend = backend
        self.admin_url = postgres_url
        self.created: list[str] = []
        if backend == "postgresql" and not postgres_url:
            raise SystemExit("--database postgresql needs --postgres-url or PROCTOR_BENCH_PG")

    def new_url(self, home: Path) -> str:
        if self.backend == "sqlite":
            return f"sqlite:///{home / 'proctor.db'}"
        name = f"proctor_bench_{secrets.token_hex(4)}"
        self._admin(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        return make_url(self.admin_url).set(database=name).render_as_string(hide_password=False)

    def drop_all(self) -> None:
        db.dispose_engines()
        for name in self.created:
            self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.created.clear()

    def _admin(self, statement: str) -> None:
        engine = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as connection:
                connection.execute(text(statement))
        finally:
            engine.dispose()


@dataclass
class Service:
    """A proctor deployment under test: its settings, processes and a user's token."""

    settings: Settings
    env: dict[str, str]
    url: str
    token: str
    home: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, role: str) -> subprocess.Popen[bytes]:
        """Start `proctor serve` or `proctor worker`."""
        log = (self.home / f"{role}.log").open("ab")
        process = subprocess.Popen(
            [sys.executable, "-m", "proctor", role],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes[role] = process
        if role == "serve":
            self._wait_ready(process)
        return process

    def stop(self, role: str) -> None:
        process = self.processes.pop(role, None)
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGINT)
        try:
            process.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def stop_all(self) -> None:
        for role in list(self.processes):
            self.stop(role)

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=60
        )

    def _wait_ready(self, process: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + READY_SECONDS
        while time.monotonic() < deadline:
            if process.poll() is not None:
                break
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            time.sleep(READY_POLL_SECONDS)
        log = (self.home / "serve.log").read_text(errors="replace")
        raise RuntimeError(f"proctor serve did not start:\n{log}")


@contextlib.contextmanager
def deployment(databases: Databases, **overrides: str) -> Iterator[Service]:
    """A fresh home and database with a user; processes started by the caller, stopped
    (and the database dropped) on exit. `overrides` are PROCTOR_* settings by field name."""
    with tempfile.TemporaryDirectory(prefix="proctor-bench-") as tmp:
        home = Path(tmp)
        port = free_port()
        values = {
            "home": str(home),
            "database_url": databases.new_url(home),
            "port": str(port),
            **overrides,
        }
        env = {k: v for k, v in os.environ.items() if not k.startswith("PROCTOR_")}
        env.update({f"PROCTOR_{key.upper()}": value for key, value in values.items()})
        settings = Settings(**values)  # type: ignore[arg-type]
        db.upgrade(settings)
        token = users.add_user(settings, BENCH_USER, admin=False)
        service = Service(settings, env, f"http://127.0.0.1:{port}", token, home)
        try:
            yield service
        finally:
            service.stop_all()
            databases.drop_all()


def wait_final(client: httpx.Client, job_id: str) -> dict[str, object]:
    """Wait until the job is final, as a client does: each request waits on the server
    until the job is final (`?wait=`)."""
    deadline = time.monotonic() + JOB_WAIT_SECONDS
    while time.monotonic() < deadline:
        params = {"wait": JOB_REQUEST_WAIT_SECONDS}
        job: dict[str, object] = client.get(f"/api/v1/jobs/{job_id}", params=params).json()
        if job.get("status") in FINAL:
            return job
    raise RuntimeError(f"job {job_id} was not final within {JOB_WAIT_SECONDS} s")


def submit(client: httpx.Client, dockerfile: str = TRIVIAL_DOCKERFILE) -> str:
    response = client.post(
        "/api/v1/jobs", content=dockerfile.encode(), headers={"Content-Type": "text/plain"}
    )
    response.raise_for_status()
    job_id: str = response.json()["id"]
    return job_id


def rss_bytes(pid: int) -> int:
    """Resident size of a process and its children, from /proc."""
    total = 0
    pids = [pid]
    with contextlib.suppress(OSError):
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(child) for child in children]
    for one in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{one}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
    return total
