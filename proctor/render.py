"""How the CLI shows jobs and settings: Rich tables and panels, kept apart from the commands.

Everything that comes from the server or the user (names, messages, findings)
goes into `Text`, never into markup, so a `[` in a job name cannot restyle or
break the output.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from rich.console import Group
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

STATUS_STYLES = {
    "queued": "dim",
    "building": "cyan",
    "scanning": "cyan",
    "running": "blue",
    "succeeded": "green",
    "failed": "red",
    "cancelled": "yellow",
}
SEVERITY_STYLES = {"low": "dim", "medium": "yellow", "high": "red", "critical": "bold red"}
SCORE_FORMAT = ".6g"
CREATED_CHARS = 19  # "YYYY-MM-DD HH:MM:SS" of an RFC 3339 timestamp
ENV_PREFIX = "PROCTOR_"
MINUTE_SECONDS = 60
BINARY_STEP = 1024
SIZE_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")

Job = dict[str, Any]


def status_text(status: str) -> Text:
    return Text(status, style=STATUS_STYLES.get(status, ""))


def score(job: Job) -> str:
    performance = job.get("performance")
    return "" if performance is None else format(performance, SCORE_FORMAT)


def metrics_line(job: Job) -> str:
    metrics = job.get("metrics") or {}
    return "  ".join(f"{key} {value:{SCORE_FORMAT}}" for key, value in sorted(metrics.items()))


def error_line(job: Job) -> str:
    error = job.get("error")
    return f"{error['code']}: {error['message']}" if error else ""


def outcome_line(job: Job) -> Text:
    """One line saying how a job ended (or where it is): `job ID  STATUS  details`."""
    line = Text(f"job {job['id']}  ")
    line.append_text(status_text(job["status"]))
    if job["status"] == "succeeded":
        line.append(f"  performance {score(job)}", style="bold")
        if metrics_line(job):
            line.append(f"  {metrics_line(job)}")
    elif job.get("error"):
        line.append(f"  {error_line(job)}")
        if job.get("exit_code") not in (None, 0):
            line.append(f" (exit code {job['exit_code']})")
    return line


def job_panel(job: Job) -> Panel:
    """Everything a user asks about one job, in a compact panel."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    exit_code = job.get("exit_code")
    rows: list[tuple[str, str | Text]] = [
        ("status", status_text(job["status"])),
        ("name", job.get("name") or ""),
        ("owner", job.get("owner") or ""),
        ("performance", score(job)),
        ("metrics", metrics_line(job)),
        ("error", error_line(job)),
        ("exit code", "" if exit_code is None else str(exit_code)),
        ("image", job.get("image_id") or ""),
        ("dataset", job.get("dataset") or ""),
        ("attempts", str(job.get("attempts", 0))),
        ("findings", str(len(job.get("findings") or []))),
        ("webhook", callback_line(job)),
        ("created", job.get("created_at") or ""),
        ("started", job.get("started_at") or ""),
        ("finished", job.get("finished_at") or ""),
    ]
    for label, value in rows:
        if value:
            table.add_row(label, value if isinstance(value, Text) else Text(value))
    parts: list[Table] = [table]
    if job.get("findings"):
        parts.append(findings_table(job["findings"]))
    return Panel(Group(*parts), title=Text(f"job {job['id']}"), expand=False)


def callback_line(job: Job) -> str:
    """The webhook's URL and how its delivery went, or "" without one."""
    callback = job.get("callback")
    if not callback:
        return ""
    attempts = callback.get("attempts", 0)
    line = f"{callback['url']}: {callback['state']}"
    if attempts:
        line += f" after {attempts} attempt{'s' if attempts != 1 else ''}"
    if callback.get("last_error") and callback["state"] != "delivered":
        line += f" (last error: {callback['last_error']})"
    return line


def findings_table(findings: Sequence[dict[str, Any]]) -> Table:
    table = Table("severity", "rule", "where", "message", title="findings", expand=False)
    for finding in findings:
        severity = str(finding.get("severity", ""))
        if finding.get("accepted"):
            severity += " (accepted)"
        table.add_row(
            Text(severity, style=SEVERITY_STYLES.get(str(finding.get("severity")), "")),
            Text(str(finding.get("rule", ""))),
            Text(_where(finding)),
            Text(str(finding.get("message", ""))),
        )
    return table


def _where(finding: dict[str, Any]) -> str:
    """The Dockerfile line, the file in the image, or the vulnerable package."""
    if finding.get("line"):
        return f"line {finding['line']}"
    if finding.get("package"):
        return f"{finding['package']} {finding.get('installed_version') or ''}".strip()
    return str(finding.get("path") or "")


def jobs_table(jobs: Sequence[Job]) -> Table:
    table = Table(expand=False)
    table.add_column("id", no_wrap=True)
    for header in ("name", "status", "performance", "error", "dataset"):
        table.add_column(header)
    table.add_column("took", justify="right", no_wrap=True)
    table.add_column("created", no_wrap=True)
    for job in jobs:
        table.add_row(
            Text(job["id"]),
            Text(job.get("name") or ""),
            status_text(job["status"]),
            Text(score(job)),
            Text((job.get("error") or {}).get("code", "")),
            Text(job.get("dataset") or ""),
            Text(_took(job)),
            Text(timestamp(job.get("created_at"))),
        )
    if not jobs:
        table.caption = "no jobs"
    return table


def timestamp(value: str | None) -> str:
    """`YYYY-MM-DD HH:MM:SS` of an RFC 3339 time, or nothing."""
    return (value or "")[:CREATED_CHARS].replace("T", " ")


def duration(seconds: float) -> str:
    """`4.2 s`, `3m 05s`, `2h 03m`: short and steady-width enough for a table."""
    if seconds < MINUTE_SECONDS:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(seconds), MINUTE_SECONDS)
    if minutes < MINUTE_SECONDS:
        return f"{minutes}m {rest:02d}s"
    hours, minutes = divmod(minutes, MINUTE_SECONDS)
    return f"{hours}h {minutes:02d}m"


def _took(job: Job) -> str:
    started, finished = job.get("started_at"), job.get("finished_at")
    if not started or not finished:
        return ""
    elapsed = dt.datetime.fromisoformat(finished) - dt.datetime.fromisoformat(started)
    return duration(elapsed.total_seconds())


def datasets_table(datasets: Sequence[dict[str, Any]]) -> Table:
    table = Table("name", "ranks", "files", "size", "description", expand=False)
    for dataset in datasets:
        table.add_row(
            Text(dataset["name"]),
            Text(f"{dataset['direction']} first"),
            Text(str(dataset["files"]), justify="right"),
            Text(size(dataset["size_bytes"]), justify="right"),
            Text(dataset.get("description") or ""),
        )
    if not datasets:
        table.caption = "no datasets: an operator adds them under PROCTOR_DATASETS_DIR"
    return table


def leaderboard_table(board: dict[str, Any]) -> Table:
    title = f"leaderboard: {board.get('dataset') or 'jobs without a dataset'}"
    table = Table("rank", "user", "performance", "job", "finished", title=title, expand=False)
    for entry in board["entries"]:
        table.add_row(
            Text(str(entry["rank"]), justify="right"),
            Text(entry["user"]),
            Text(format(entry["performance"], SCORE_FORMAT), style="bold"),
            Text(entry["job_id"]),
            Text(timestamp(entry.get("finished_at"))),
        )
    table.caption = (
        f"{board['direction']} is better" if board["entries"] else "no succeeded jobs yet"
    )
    return table


def size(count: int) -> str:
    """Bytes for people: 512 B, 1.5 KiB, 20.0 MiB."""
    value = float(count)
    for unit in SIZE_UNITS:
        if value < BINARY_STEP or unit == SIZE_UNITS[-1]:
            return f"{count} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= BINARY_STEP
    raise AssertionError("unreachable")


def settings_table(values: dict[str, Any]) -> Table:
    table = Table("setting", "env", "value", expand=False)
    for key, value in sorted(values.items()):
        table.add_row(Text(key), Text(f"{ENV_PREFIX}{key.upper()}"), Text(str(value)))
    return table


def banner(version: str, url: str, credentials: str, client_env: str) -> Panel:
    """What `proctor up` prints once it is about to serve."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    table.add_row("API", Text(url))
    table.add_row("docs", Text(f"{url}/docs"))
    table.add_row("credentials", Text(credentials))
    table.add_row("try", Text(f"{client_env}proctor submit examples/busybox --wait"))
    return Panel(table, title=f"proctor {version}", expand=False)


def proof_table(lines: list[tuple[str, str]], *, verified: bool) -> Table:
    """What a signed result record says; VERIFIED says the signature was checked."""
    title = (
        "[green]VERIFIED[/green]: proctor's key signed this record; it proves"
        if verified
        else "signed result record (check it with `proctor verify`)"
    )
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for what, value in lines:
        table.add_row(what, escape(value))
    return table
