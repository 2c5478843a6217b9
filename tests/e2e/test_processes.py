"""`proctor up --processes 2`: the API in two processes sharing the port, each answering
requests, with one set of metrics and a clean stop."""

from __future__ import annotations

import os
import re
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from .conftest import ROOT, running_up

pytestmark = pytest.mark.docker

REQUESTS = 60


def test_up_with_two_api_processes_serves_scores_and_stops_cleanly(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    with running_up(request, tmp_path, "--processes", "2") as service:
        # Each process answers: every request opens its own connection, 8 at a time.
        with ThreadPoolExecutor(8) as pool:
            answers = pool.map(lambda _: httpx.get(f"{service.url}/healthz"), range(REQUESTS))
            assert {answer.status_code for answer in answers} == {200}
        # Whichever process answers the scrape counts the requests of both.
        for _ in range(4):
            metrics = httpx.get(f"{service.url}/metrics").text
            served = re.search(
                r'proctor_api_request_seconds_count\{method="GET",route="/healthz",'
                r'status="200"\} (\d+)',
                metrics,
            )
            assert served is not None, metrics
            assert int(served.group(1)) >= REQUESTS

        submitted = service.cli("submit", str(ROOT / "examples" / "busybox"), "--wait")
        assert submitted.returncode == 0, submitted.stdout + submitted.stderr
        assert "succeeded" in submitted.stdout

        started = re.findall(r"Started server process \[(\d+)\]", service.log())
        assert len(set(started)) == 2, service.log()
        [metrics_dir] = (service.home / "run").glob("api-metrics-*")
        # A process writes its figures once it has served a request: both did.
        written = {path.name for path in metrics_dir.iterdir()}
        assert written == {f"histogram_{pid}.db" for pid in started}
        metrics_dirs = [metrics_dir]

        assert service.stop(signal.SIGINT, group=True) == 0, service.log()
        assert not metrics_dirs[0].exists()


def test_up_with_two_api_processes_stops_cleanly_when_ctrl_c_reaches_its_worker_first(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    # In a terminal both get Ctrl-C; the worker may be gone, and its watch stopping the
    # API, before `up` handles its own signal: still a requested stop, exit 0.
    with running_up(request, tmp_path, "--processes", "2") as service:
        [worker] = [
            pid
            for pid in service.children()
            if b"worker" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        ]
        os.kill(worker, signal.SIGINT)
        while Path(f"/proc/{worker}").exists():  # reaped by `up`, which then stops its API
            time.sleep(0.01)

        assert service.stop(signal.SIGINT) == 0, service.log()
        assert "exited unexpectedly" not in service.log()
