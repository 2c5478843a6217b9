"""The `proctor` command: run the service (up, serve, worker) and use it (submit, status…).

The client commands are HTTP clients of the API (`proctor.client`); only the
service commands touch the database. Exit codes: 0 success, 1 the job failed,
2 it was cancelled, 3 a client or usage error, 130 interrupted.
"""

from __future__ import annotations

# Importing the command modules registers their commands on `app`, in --help order.
from proctor.cli import service  # isort: split

from proctor.cli import jobs, results
from proctor.cli.base import app, main

__all__ = ["app", "jobs", "main", "results", "service"]
