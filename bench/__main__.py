"""`python -m bench`: run the measurements, print the table, write it as JSON."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import docker
from rich.console import Console

from bench import measure, report
from bench.report import Row
from bench.service import Databases

RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"
POSTGRES_URL_ENV = "PROCTOR_BENCH_PG"
MEASUREMENTS: dict[str, Callable[[measure.Options], list[Row]]] = {
    "overhead": measure.overhead,
    "throughput": measure.throughput,
    "api": measure.api,
    "history": measure.history,
    "memory": measure.memory,
}
# Measured on every database asked for; the rest need a worker's engine more than a database.
PER_DATABASE = frozenset({"api", "history"})


def parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="few runs: a smoke test")
    parser.add_argument(
        "--only", default="", help=f"comma-separated subset of {','.join(MEASUREMENTS)}"
    )
    parser.add_argument(
        "--database",
        default="sqlite",
        help="sqlite, postgresql, or both (comma-separated); PostgreSQL needs --postgres-url",
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get(POSTGRES_URL_ENV, ""),
        help=f"a PostgreSQL URL that may create databases (env {POSTGRES_URL_ENV})",
    )
    parser.add_argument(
        "--api-processes",
        type=int,
        default=measure.API_PROCESSES,
        help="`serve --processes` for the api measurement (default: serve's own, %(default)s)",
    )
    parser.add_argument("--output", type=Path, default=RESULTS, help="where the JSON goes")
    args = parser.parse_args(argv)
    if args.api_processes < 1:
        parser.error("--api-processes must be at least 1")
    return args


def docker_version() -> str:
    client = docker.from_env()
    try:
        return str(client.version().get("Version", "?"))
    finally:
        client.close()


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    chosen = [name.strip() for name in args.only.split(",") if name.strip()] or list(MEASUREMENTS)
    unknown = set(chosen) - MEASUREMENTS.keys()
    if unknown:
        raise SystemExit(f"unknown measurement(s): {', '.join(sorted(unknown))}")
    backends = [name.strip() for name in args.database.split(",") if name.strip()]
    console = Console()
    rows: list[Row] = []
    timings: dict[str, float] = {}
    started = time.monotonic()
    for name in chosen:
        for backend in backends if name in PER_DATABASE else backends[:1]:
            options = measure.Options(
                quick=args.quick,
                databases=Databases(backend, args.postgres_url),
                backend=backend,
                api_processes=args.api_processes,
            )
            console.print(f"[bold]{name}[/bold] on {backend}…")
            begun = time.monotonic()
            found = MEASUREMENTS[name](options)
            timings[f"{name}/{backend}"] = round(time.monotonic() - begun, 1)
            report.print_table(found, f"{name} ({backend})", console)
            rows += found
    meta: dict[str, object] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {**report.machine(), "docker": docker_version()},
        "commit": git_commit(),
        "quick": args.quick,
        "databases": backends,
        "api_processes": args.api_processes,
        "seconds": {**timings, "total": round(time.monotonic() - started, 1)},
    }
    report.print_table(rows, f"proctor benchmark ({meta['date']})", console)
    report.write_json(args.output, rows, meta)
    console.print(f"written to {args.output}")
    return 1 if any(row.passed is False for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
