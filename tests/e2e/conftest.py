"""End-to-end fixtures: the real `proctor up` as a subprocess, the CLI as another."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

READY_SECONDS = 60
STOP_SECONDS = 30
CLI_SECONDS = 180
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Service:
    url: str
    env: dict[str, str]
    home: Path

    def cli(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run `proctor ARGS` as a user would, from the repository root."""
        return subprocess.run(
            [sys.executable, "-m", "proctor", *args],
            env={**self.env, **(env or {})},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=CLI_SECONDS,
        )


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    home = tmp_path / "home"
    port = free_port()
    env = {
        **os.environ,
        "PROCTOR_HOME": str(home),
        "PROCTOR_PORT": str(port),
        "PROCTOR_RUN_MEMORY": "256m",
        "PROCTOR_WORKER_POLL_INTERVAL": "0.05",
        "COLUMNS": "200",
    }
    env.pop("PROCTOR_URL", None)
    env.pop("PROCTOR_TOKEN", None)
    log = (tmp_path / "up.log").open("w")
    with subprocess.Popen(
        [sys.executable, "-m", "proctor", "up"], env=env, stdout=log, stderr=subprocess.STDOUT
    ) as process:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + READY_SECONDS
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                log.close()
                pytest.fail(f"proctor up did not start:\n{(tmp_path / 'up.log').read_text()}")
            time.sleep(0.2)
        try:
            yield Service(url=url, env=env, home=home)
        finally:
            process.send_signal(signal.SIGINT)
            try:
                code = process.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                raise
            finally:
                log.close()
            assert code == 0, (tmp_path / "up.log").read_text()
