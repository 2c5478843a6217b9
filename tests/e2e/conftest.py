"""End-to-end fixtures: the real `proctor up` as a subprocess, the CLI as another."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from ..conftest import FreshDatabases

READY_SECONDS = 60
STOP_SECONDS = 30
CLI_SECONDS = 180
READY_POLL_SECONDS = 0.2
READY_PROBE_TIMEOUT_SECONDS = 2
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def cli_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a user's shell: no stray proctor settings but PROCTOR_HOME."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PROCTOR_")}
    env.update(PROCTOR_HOME=str(home), COLUMNS="200", **extra)
    return env


def run_cli(
    *args: str, env: dict[str, str], timeout: float = CLI_SECONDS
) -> subprocess.CompletedProcess[str]:
    """Run `proctor ARGS` as a user would, from the repository root."""
    return subprocess.run(
        [sys.executable, "-m", "proctor", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@dataclass
class Service:
    """A running `proctor up`: its URL, the environment to reach it, its process."""

    url: str
    env: dict[str, str]
    home: Path
    process: subprocess.Popen[bytes]
    log_path: Path
    stopped: bool = field(default=False)

    def cli(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, env={**self.env, **(env or {})})

    def spawn(self, *args: str) -> subprocess.Popen[str]:
        """Start `proctor ARGS` without waiting for it (stdout and stderr piped)."""
        return subprocess.Popen(
            [sys.executable, "-m", "proctor", *args],
            env=self.env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def children(self) -> list[int]:
        """Pids of `up`'s child processes (its worker)."""
        pid = self.process.pid
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        return [int(child) for child in children]

    def stop(self, signum: int = signal.SIGINT, *, group: bool = False) -> int:
        """Signal `up` (or, like Ctrl-C in a terminal, its whole process group).

        Returns its exit code; fails if it takes over STOP_SECONDS.
        """
        self.stopped = True
        if group:
            os.killpg(self.process.pid, signum)
        else:
            self.process.send_signal(signum)
        try:
            return self.process.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            pytest.fail(f"proctor up did not stop within {STOP_SECONDS} s:\n{self.log()}")


def wait_ready(url: str, process: subprocess.Popen[bytes], log: Callable[[], str]) -> None:
    deadline = time.monotonic() + READY_SECONDS
    while True:
        try:
            if httpx.get(f"{url}/readyz", timeout=READY_PROBE_TIMEOUT_SECONDS).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"proctor up was not ready within {READY_SECONDS} s:\n{log()}")
        time.sleep(READY_POLL_SECONDS)


@contextlib.contextmanager
def running_up(request: pytest.FixtureRequest, tmp_path: Path, *args: str) -> Iterator[Service]:
    """`proctor up --port P ARGS` on a fresh PROCTOR_HOME (and, with --database postgresql,
    a fresh PostgreSQL database); stopped with SIGINT, which must exit 0."""
    home = tmp_path / "home"
    port = free_port()
    databases = FreshDatabases(request.config.getoption("--database"), tmp_path)
    database_url = databases.new_url()
    database = {"PROCTOR_DATABASE_URL": database_url} if database_url else {}
    # Test-friendly limits travel in the environment, as an operator would set them.
    server_env = cli_env(
        home,
        PROCTOR_RUN_MEMORY="256m",
        PROCTOR_WORKER_POLL_INTERVAL="0.05",
        PROCTOR_WORKER_DRAIN_SECONDS="2",
        **database,
    )
    log_path = tmp_path / "up.log"
    with (
        log_path.open("wb") as log,
        subprocess.Popen(
            [sys.executable, "-m", "proctor", "up", "--port", str(port), *args],
            env=server_env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            process_group=0,  # its own group, as in a terminal: see Service.stop
        ) as process,
    ):
        service = Service(
            url=f"http://127.0.0.1:{port}",
            env=cli_env(home, **database),
            home=home,
            process=process,
            log_path=log_path,
        )
        try:
            wait_ready(service.url, process, service.log)
            yield service
        finally:
            if process.poll() is None:
                code = service.stop()
                assert code == 0, f"proctor up exited {code} on SIGINT:\n{service.log()}"
            elif not service.stopped:
                pytest.fail(f"proctor up died during the test:\n{service.log()}")
            databases.drop_all()


@pytest.fixture
def service(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Service]:
    """`proctor up` (see `running_up`)."""
    with running_up(request, tmp_path) as service:
        yield service
