"""How the CLI shows jobs and settings: Rich tables and panels, kept apart from the commands.

Everything that comes from the server or the user (names, messages, findings)
goes into `Text`, never into markup, so a `[` in a job name cannot restyle or
break the output.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.console import Group
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
    for header in ("name", "status", "performance", "error"):
        table.add_column(header)
    table.add_column("created", no_wrap=True)
    for job in jobs:
        table.add_row(
            Text(job["id"]),
            Text(job.get("name") or ""),
            status_text(job["status"]),
            Text(score(job)),
            Text((job.get("error") or {}).get("code", "")),
            Text((job.get("created_at") or "")[:CREATED_CHARS].replace("T", " ")),
        )
    if not jobs:
        table.caption = "no jobs"
    return table


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
