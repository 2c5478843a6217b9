"""Hostile submissions: each case is a real container on the real engine.

Every test names the property it proves, asserts the job's final state and error
code, and checks that the host and the service are unaffected.
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import docker
import pytest

from proctor.config import Settings

from ..conftest import SettingsFactory
from .conftest import (
    PYTHON,
    Api,
    ApiFactory,
    StackFactory,
    WorkerFactory,
    containers_of,
    dockerfile,
)

pytestmark = pytest.mark.docker

MB = 1024 * 1024
OUTPUT_CAP = 16 * MB
TMP_CAP = 8 * MB
RUN_MEMORY = 128 * MB
LOG_CAP = 64 * 1024
HEALTH_POLL_SECONDS = 0.2
HEALTHY_LATENCY_SECONDS = 2.0
PERF_OK = "echo '{\"perf\": 1}' > /data/perf.json"


@dataclass
class Stack:
    api: Api
    settings: Settings


@pytest.fixture
def stack(
    make_settings: SettingsFactory, make_api: ApiFactory, make_worker: WorkerFactory
) -> Stack:
    settings = make_settings(
        run_memory=RUN_MEMORY,
        run_pids=64,
        output_max_bytes=OUTPUT_CAP,
        run_tmp_size=TMP_CAP,
        log_max_bytes=LOG_CAP,
        build_memory="256m",
        build_timeout=60,
        worker_concurrency=2,
    )
    api = make_api(app_settings=settings)
    make_worker(settings)
    return Stack(api=api, settings=settings)


@dataclass
class HealthProbe:
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


@contextmanager
def service_stays_healthy(api: Api) -> Iterator[HealthProbe]:
    """Poll the API while a hostile job runs; it must answer, and quickly, throughout."""
    probe = HealthProbe()
    stop = threading.Event()

    def poll() -> None:
        while not stop.wait(HEALTH_POLL_SECONDS):
            started = time.monotonic()
            response = api.get("/api/v1/jobs?limit=1")
            probe.latencies.append(time.monotonic() - started)
            if response.status_code != 200:
                probe.failures.append(f"{response.status_code} {response.text[:100]}")

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield probe
    finally:
        stop.set()
        thread.join()
    assert probe.failures == []
    assert probe.latencies, "the API was never polled"
    assert max(probe.latencies) < HEALTHY_LATENCY_SECONDS


def run_logs(api: Api, job: dict[str, Any]) -> str:
    text: str = api.get(f"/api/v1/jobs/{job['id']}/logs?stream=run").text
    return text


def assert_clean(stack: Stack, job: dict[str, Any], client: docker.DockerClient) -> None:
    """Nothing of the job is left on the host: no container, no scratch folder."""
    assert containers_of(client, job["id"]) == []
    assert not (stack.settings.jobs_dir / job["id"]).exists()


# --- resource exhaustion -------------------------------------------------------------


def test_hostile_fork_bomb_is_held_by_pids_limit(
    stack: Stack, docker_client: docker.DockerClient
) -> None:
    """Property: a fork bomb cannot exceed the pids limit; the job ends at its time limit."""
    bomb = "bomb() { bomb | bomb & }; bomb; sleep 60"
    with service_stays_healthy(stack.api):
        job = stack.api.run(dockerfile(bomb), timeout=5)

    assert job["status"] == "failed"
    assert job["error"]["code"] in {"timeout", "exit_nonzero"}
    assert job["sandbox"]["pids_limit"] == 64
    assert_clean(stack, job, docker_client)


def test_hostile_memory_bomb_is_oom_killed(
    stack: Stack, docker_client: docker.DockerClient
) -> None:
    """Property: memory beyond the limit (swap included) kills the job, not the host."""
    with service_stays_healthy(stack.api):
        job = stack.api.run(dockerfile("dd if=/dev/zero of=/dev/null bs=512M count=1"))

    assert job["error"]["code"] == "oom_killed"
    assert job["sandbox"]["memory_swap_bytes"] == RUN_MEMORY
    assert_clean(stack, job, docker_client)


def test_hostile_cpu_spin_is_killed_at_time_limit(
    stack: Stack, docker_client: docker.DockerClient
) -> None:
    """Property: a busy loop is killed at the wall-clock limit; the CPU quota holds meanwhile."""
    started = time.monotonic()
    with service_stays_healthy(stack.api):
        job = stack.api.run(dockerfile("while :; do :; done"), timeout=3)

    assert job["error"]["code"] == "timeout"
    assert time.monotonic() - started < 30
    assert job["sandbox"]["cpus"] == 1.0
    assert_clean(stack, job, docker_client)


def test_hostile_sleep_is_killed_at_time_limit(
    stack: Stack, docker_client: docker.DockerClient
) -> None:
    """Property: a job that hangs is killed at its time limit."""
    job = stack.api.run(dockerfile("sleep 3600"), timeout=2)

    assert job["error"]["code"] == "timeout"
    assert_clean(stack, job, docker_client)


def test_hostile_stdout_flood_is_capped(stack: Stack, docker_client: docker.DockerClient) -> None:
    """Property: hundreds of MB of output are cut at the log cap; the job still finishes."""
    flood = f"yes 'flooding the log' | head -c {300 * MB}; {PERF_OK}"
    with service_stays_healthy(stack.api):
        job = stack.api.run(dockerfile(flood), timeout=120)

    assert job["status"] == "succeeded", job
    logs = run_logs(stack.api, job)
    assert len(logs.encode()) < LOG_CAP + 200
    assert f"log truncated at {LOG_CAP} bytes" in logs
    assert_clean(stack, job, docker_client)


def test_hostile_data_flood_stops_at_output_cap(
    stack: Stack, docker_client: docker.DockerClient
) -> None:
    """Property: writing GBs into /data stops at the cap; the host disk does not fill."""
    free_before = shutil.disk_usage(stack.settings.home).free
    # Many files, each under the per-file limit: only the folder's own cap can stop them.
    script = (
        "for i in $(seq 1 64); do dd if=/dev/zero of=/data/f$i bs=1M count=8; "
        "done; total=$(cat /data/f* | wc -c); rm /data/f*; "
        'echo "{\\"perf\\": $total}" > /data/perf.json'
    )
    job = stack.api.run(dockerfile(script))

    assert job["status"] == "succeeded", job
    assert job["performance"] <= OUTPUT_CAP
    assert "No space left on device" in run_logs(stack.api, job)
    assert free_before - shutil.disk_usage(stack.settings.home).free < 2 * OUTPUT_CAP
    assert_clean(stack, job, docker_client)


def test_hostile_tmp_flood_stops_at_tmp_cap(stack: Stack) -> None:
    """Property: /tmp is a size-capped tmpfs, not the host disk."""
    script = (
        "dd if=/dev/zero of=/tmp/big bs=1M count=1024 2>/dev/null; "
        'echo "{\\"perf\\": $(stat -c %s /tmp/big)}" > /data/perf.json'
    )
    job = stack.api.run(dockerfile(script))

    assert job["status"] == "succeeded", job
    assert job["performance"] <= TMP_CAP


# --- perf.json tricks ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("script", "fragment"),
    [
        ("ln -s /etc/shadow /data/perf.json", "symbolic link"),
        ("mkfifo /data/perf.json", "not a regular file"),
        ("mkdir /data/perf.json", "not a regular file"),
        (f"head -c {2 * MB} /dev/zero > /data/perf.json", "limit"),
        ("echo '{\"perf\": NaN}' > /data/perf.json", "not valid JSON"),
        ("echo '{\"perf\": Infinity}' > /data/perf.json", "not valid JSON"),
        ('echo \'{"perf": "0.9"}\' > /data/perf.json', "finite number"),
        ("echo '{\"perf\": true}' > /data/perf.json", "finite number"),
        ('echo \'{"perf": {"perf": 1}}\' > /data/perf.json', "finite number"),
    ],
    ids=[
        "symlink-to-host",
        "fifo",
        "directory",
        "huge",
        "nan",
        "infinity",
        "string",
        "boolean",
        "nested",
    ],
)
def test_hostile_perf_json_is_read_safely(stack: Stack, script: str, fragment: str) -> None:
    """Property: perf.json is read without following links, as a small regular file only."""
    job = stack.api.run(dockerfile(script))

    assert job["error"]["code"] == "perf_invalid", job
    assert fragment in job["error"]["message"]


# --- escape attempts -----------------------------------------------------------------


@pytest.fixture
def host_listener() -> Iterator[tuple[int, list[str]]]:
    """A TCP server on the host's loopback that records every connection it receives."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    accepted: list[str] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, address = server.accept()
            except TimeoutError:
                continue
            accepted.append(str(address))
            connection.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], accepted
    stop.set()
    thread.join()
    server.close()


def bridge_gateway(client: docker.DockerClient) -> str:
    config = client.networks.get("bridge").attrs["IPAM"]["Config"]
    return str(config[0].get("Gateway", "172.17.0.1"))


def test_hostile_cannot_reach_host_listeners(
    stack: Stack, host_listener: tuple[int, list[str]], docker_client: docker.DockerClient
) -> None:
    """Property: no network: neither the host's loopback nor the bridge gateway answers."""
    port, accepted = host_listener
    gateway = bridge_gateway(docker_client)
    script = (
        f"nc -w 2 127.0.0.1 {port} </dev/null && echo reached-loopback; "
        f"nc -w 2 {gateway} {port} </dev/null && echo reached-gateway; {PERF_OK}"
    )
    job = stack.api.run(dockerfile(script))

    assert job["status"] == "succeeded", job
    logs = run_logs(stack.api, job)
    assert "reached" not in logs
    assert accepted == []


def test_hostile_dns_does_not_resolve(stack: Stack) -> None:
    """Property: no resolver is reachable from the sandbox."""
    job = stack.api.run(dockerfile(f"nslookup example.com && echo resolved; {PERF_OK}"))

    assert job["status"] == "succeeded", job
    assert "resolved" not in run_logs(stack.api, job)


def test_hostile_docker_socket_is_absent(stack: Stack) -> None:
    """Property: the engine's socket is never mounted into a job."""
    script = (
        "for s in /var/run/docker.sock /run/docker.sock /var/run/containerd; do "
        "[ -e $s ] && echo found-$s; done; " + PERF_OK
    )
    job = stack.api.run(dockerfile(script))

    assert job["status"] == "succeeded", job
    assert "found" not in run_logs(stack.api, job)


def test_hostile_root_filesystem_is_read_only(stack: Stack) -> None:
    """Property: a job cannot change its own image (read-only root filesystem)."""
    script = (
        "echo x > /bin/tampered && echo wrote-rootfs; "
        f"echo x > /etc/passwd && echo wrote-etc; {PERF_OK}"
    )
    job = stack.api.run(dockerfile(script))

    assert job["status"] == "succeeded", job
    assert "wrote" not in run_logs(stack.api, job)
    assert "Read-only file system" in run_logs(stack.api, job)


def test_hostile_setuid_binary_cannot_gain_root(
    stack: Stack, docker_client: docker.DockerClient
) -> None:
    """Property: no-new-privileges: a setuid-root binary runs with the job's own uid."""
    text = (
        f"FROM {PYTHON}\n"
        "RUN cp /usr/bin/python3 /usr/local/bin/rootpy && chmod 4755 /usr/local/bin/rootpy\n"
        'CMD ["/usr/local/bin/rootpy", "-c", "import json, os; '
        'json.dump({\\"perf\\": os.geteuid()}, open(\\"/data/perf.json\\", \\"w\\"))"]\n'
    )
    job = stack.api.run(text)

    assert job["status"] == "succeeded", job
    assert job["performance"] == 65534
    assert job["sandbox"]["no_new_privileges"] is True
    assert job["sandbox"]["cap_drop"] == ["ALL"]


# --- hostile builds ------------------------------------------------------------------


def test_hostile_build_has_no_network(stack: Stack, host_listener: tuple[int, list[str]]) -> None:
    """Property: build steps run without network: the host's listener is never reached."""
    port, accepted = host_listener
    text = f"FROM proctor/busybox:latest\nRUN nc -w 2 127.0.0.1 {port} </dev/null\nCMD true\n"

    job = stack.api.run(text)

    assert job["error"]["code"] == "build_failed"
    assert f"nc -w 2 127.0.0.1 {port}" in job["error"]["message"]
    assert accepted == []


def test_hostile_build_out_of_memory_fails_the_build(stack: Stack) -> None:
    """Property: build containers are memory-limited."""
    text = (
        "FROM proctor/busybox:latest\nRUN dd if=/dev/zero of=/dev/null bs=600M count=1\nCMD true\n"
    )

    with service_stays_healthy(stack.api):
        job = stack.api.run(text)

    assert job["error"]["code"] == "build_failed"
    assert "dd if=/dev/zero" in job["error"]["message"]


def test_hostile_build_that_never_ends_is_stopped(make_stack: StackFactory) -> None:
    """Property: the build time limit stops a build that never ends."""
    api = make_stack(build_timeout=3)

    job = api.run("FROM proctor/busybox:latest\nRUN while :; do :; done\nCMD true\n")

    assert job["error"]["code"] == "build_timeout"


# --- settings of the sandbox ---------------------------------------------------------


def test_hostile_sandbox_profile_is_recorded_for_audit(stack: Stack) -> None:
    """Property: each job records every limit and flag it ran under."""
    job = stack.api.run(dockerfile(f"df -k /dev/shm | tail -n1; {PERF_OK}"))

    sandbox = job["sandbox"]
    assert sandbox["network"] == "none"
    assert sandbox["read_only_rootfs"] is True
    assert sandbox["seccomp"] == "default"
    assert sandbox["output_max_bytes"] == OUTPUT_CAP
    assert sandbox["output_capped"] is True
    assert sandbox["tmp_size_bytes"] == TMP_CAP
    assert sandbox["shm_size_bytes"] == 64 * MB
    assert sandbox["runtime"] == ""
    assert " 65536 " in run_logs(stack.api, job)  # /dev/shm is 64 MiB, in KiB


def test_hostile_unknown_runtime_fails_closed(make_stack: StackFactory) -> None:
    """Property: a stronger runtime that is not installed fails the job, never falls back."""
    api = make_stack(run_runtime="runsc-not-installed")

    job = api.run(dockerfile(PERF_OK))

    assert job["error"]["code"] == "internal"
    assert "runsc-not-installed" in job["error"]["message"]


def test_hostile_gpu_request_reaches_the_engine(make_stack: StackFactory) -> None:
    """Property: GPUs are requested from the engine only for jobs that ask, as recorded.

    This machine has no GPU, so the engine refuses the request: the job fails closed.
    """
    api = make_stack(run_gpus_max=-1)

    plain = api.run(dockerfile(PERF_OK))
    gpu = api.run(dockerfile(PERF_OK), gpus="all")

    assert plain["status"] == "succeeded"
    assert plain["sandbox"]["gpus"] is None
    assert gpu["error"]["code"] == "internal"
    assert gpu["sandbox"]["gpus"] == -1
