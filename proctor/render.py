"""How the CLI shows jobs: Rich tables and panels, kept apart from the commands."""

from __future__ import annotations

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


def status_text(status: str) -> Text:
    return Text(status, style=STATUS_STYLES.get(status, ""))


def score(job: dict[str, Any]) -> str:
    return "" if job.get("performance") is None else f"{job['performance']:.6g}"


def metrics_line(job: dict[str, Any]) -> str:
    metrics = job.get("metrics") or {}
    return "  ".join(f"{key} {value:.6g}" for key, value in sorted(metrics.items()))


def outcome_line(job: dict[str, Any]) -> Text:
    """One line saying how a final job ended."""
    line = Text(f"job {job['id']}  ")
    line.append_text(status_text(job["status"]))
    if job["status"] == "succeeded":
        line.append(f"  performance {score(job)}", style="bold")
        if metrics_line(job):
            line.append(f"  {metrics_line(job)}")
    elif job.get("error"):
        line.append(f"  {job['error']['code']}: {job['error']['message']}")
    return line


def job_panel(job: dict[str, Any]) -> Panel:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    rows: list[tuple[str, str | Text]] = [
        ("status", status_text(job["status"])),
        ("name", job.get("name") or ""),
        ("owner", job.get("owner") or ""),
        ("performance", score(job)),
        ("metrics", metrics_line(job)),
        ("error", f"{job['error']['code']}: {job['error']['message']}" if job.get("error") else ""),
        ("exit code", "" if job.get("exit_code") is None else str(job["exit_code"])),
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
            table.add_row(label, value)
    parts: list[Any] = [table]
    if job.get("findings"):
        parts.append(findings_table(job["findings"]))
    return Panel(Group(*parts), title=f"job {job['id']}", expand=False)


def findings_table(findings: list[dict[str, Any]]) -> Table:
    table = Table("severity", "rule", "line", "message", title="findings", expand=False)
    for finding in findings:
        line = "" if finding.get("line") is None else str(finding["line"])
        table.add_row(finding["severity"], finding["rule"], line, finding["message"])
    return table


def jobs_table(jobs: list[dict[str, Any]]) -> Table:
    table = Table(expand=False)
    table.add_column("id", no_wrap=True)
    for header in ("name", "status", "performance", "error"):
        table.add_column(header)
    table.add_column("created", no_wrap=True)
    for job in jobs:
        table.add_row(
            job["id"],
            job.get("name") or "",
            status_text(job["status"]),
            score(job),
            (job.get("error") or {}).get("code", ""),
            (job.get("created_at") or "")[:16].replace("T", " "),
        )
    return table


def settings_table(values: dict[str, Any]) -> Table:
    table = Table("setting", "env", "value", expand=False)
    for key, value in sorted(values.items()):
        table.add_row(key, f"PROCTOR_{key.upper()}", str(value))
    return table
