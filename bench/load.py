"""Load on the API from a separate process: wrk, and reading what it prints; the
server's CPU time from /proc while it runs."""

from __future__ import annotations

import dataclasses
import math
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

MS_PER_SECOND = 1000.0


@dataclass(frozen=True)
class Load:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int = 0
    server_cpu_ms: float = 0.0  # CPU time the server spent during the load

    @property
    def cpu_per_request_ms(self) -> float:
        return self.server_cpu_ms / self.requests if self.requests else math.nan


_WRK_LATENCY = re.compile(r"^\s*(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s)\s*$", re.MULTILINE)
_WRK_REQUESTS = re.compile(r"^\s*(\d+) requests in", re.MULTILINE)
_WRK_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)
_WRK_ERRORS = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_WRK_SOCKET_ERRORS = re.compile(
    r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)"
)
_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}
WRK_CONNECTIONS = 8


def parse_wrk(output: str) -> Load:
    """The figures `wrk --latency` prints."""
    latencies = {
        int(q): float(value) * _UNIT_MS[unit] for q, value, unit in _WRK_LATENCY.findall(output)
    }
    rps = _WRK_RPS.search(output)
    errors = _WRK_ERRORS.search(output)
    sockets = _WRK_SOCKET_ERRORS.search(output)
    if rps is None or 50 not in latencies or 99 not in latencies:
        raise RuntimeError(f"cannot read wrk's output:\n{output}")
    failed = int(errors.group(1)) if errors else 0
    if sockets:
        failed += sum(int(n) for n in sockets.groups())
    requests = _WRK_REQUESTS.search(output)
    return Load(
        float(rps.group(1)),
        latencies[50],
        latencies[99],
        failed,
        int(requests.group(1)) if requests else 0,
    )


def cpu_seconds(pid: int) -> float:
    """User and system CPU time a process and its descendants (e.g. the API processes
    `serve --processes` starts) have used so far."""
    total = 0.0
    pending = [pid]
    while pending:
        one = pending.pop()
        try:
            fields = Path(f"/proc/{one}/stat").read_text().rsplit(")", 1)[1].split()
            children = Path(f"/proc/{one}/task/{one}/children").read_text().split()
        except OSError:  # it exited meanwhile
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        pending += [int(child) for child in children]
    return total


def wrk(
    url: str, seconds: int, token: str = "", body: str | None = None, server_pid: int = 0
) -> Load:
    """Load `url` from a separate process (wrk, one thread, a few connections); with
    `server_pid`, also the server's CPU time during the load."""
    binary = shutil.which("wrk")
    if binary is None:
        raise RuntimeError("wrk is not installed (apt-get install wrk; ./bench/run does it)")
    command = [binary, "-t1", f"-c{WRK_CONNECTIONS}", f"-d{seconds}s", "--latency"]
    if token:
        command += ["-H", f"Authorization: Bearer {token}"]
    with tempfile.TemporaryDirectory() as tmp:
        if body is not None:
            script = Path(tmp) / "post.lua"
            script.write_text(
                'wrk.method = "POST"\n'
                f"wrk.body = {_lua_string(body)}\n"
                'wrk.headers["Content-Type"] = "text/plain"\n'
            )
            command += ["-s", str(script)]
        cpu_before = cpu_seconds(server_pid) if server_pid else 0.0
        output = subprocess.run(
            [*command, url], capture_output=True, text=True, check=True, timeout=seconds + 60
        ).stdout
        cpu = cpu_seconds(server_pid) - cpu_before if server_pid else 0.0
    return dataclasses.replace(parse_wrk(output), server_cpu_ms=cpu * MS_PER_SECOND)


def _lua_string(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'
