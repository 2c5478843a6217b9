"""The benchmark table: each row a proctor figure against a baseline measured in the
same run, the ratio between them, the target and whether it was met."""

from __future__ import annotations

import enum
import json
import math
import platform
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table


class Goal(enum.StrEnum):
    OVERHEAD = "overhead"  # proctor may add at most (`limit` - 1) * baseline or `slack` absolute
    AT_LEAST_RATIO = "at_least_ratio"  # proctor / baseline ≥ limit
    AT_MOST_RATIO = "at_most_ratio"  # proctor / baseline ≤ limit
    AT_LEAST = "at_least"  # proctor ≥ limit (absolute)
    AT_MOST = "at_most"  # proctor ≤ limit (absolute)
    NONE = "none"  # recorded for information only


@dataclass(frozen=True)
class Target:
    goal: Goal
    limit: float = 0.0
    slack: float = 0.0  # OVERHEAD only: the absolute allowance, in the row's unit

    def met(self, value: float, baseline: float | None) -> bool | None:
        """Whether `value` meets the target; None when there is nothing to judge."""
        if self.goal is Goal.NONE or math.isnan(value):
            return None
        if self.goal is Goal.AT_LEAST:
            return value >= self.limit
        if self.goal is Goal.AT_MOST:
            return value <= self.limit
        if baseline is None or math.isnan(baseline) or baseline <= 0:
            return None
        ratio = value / baseline
        if self.goal is Goal.OVERHEAD:
            return value - baseline <= max(self.slack, (self.limit - 1) * baseline)
        if self.goal is Goal.AT_LEAST_RATIO:
            return ratio >= self.limit
        return ratio <= self.limit

    def describe(self, unit: str) -> str:
        if self.goal is Goal.OVERHEAD:
            return f"+≤{(self.limit - 1) * 100:g}% or +≤{self.slack:g} {unit}"
        if self.goal is Goal.AT_LEAST_RATIO:
            return f"ratio ≥ {self.limit:g}"
        if self.goal is Goal.AT_MOST_RATIO:
            return f"ratio ≤ {self.limit:g}"
        if self.goal is Goal.AT_LEAST:
            return f"≥ {self.limit:g} {unit}"
        if self.goal is Goal.AT_MOST:
            return f"≤ {self.limit:g} {unit}"
        return "—"


@dataclass(frozen=True)
class Row:
    """One line of the table."""

    metric: str
    unit: str
    proctor: float
    baseline: float | None
    target: Target
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or math.isnan(self.baseline) or self.baseline == 0:
            return None
        return self.proctor / self.baseline

    @property
    def passed(self) -> bool | None:
        return self.target.met(self.proctor, self.baseline)

    def record(self) -> dict[str, object]:
        record = asdict(self)
        record["target"] = {**asdict(self.target), "text": self.target.describe(self.unit)}
        record.update(ratio=self.ratio, passed=self.passed)
        return record


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile (`fraction` in 0..1)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def verdict(passed: bool | None) -> str:
    return {True: "pass", False: "FAIL", None: "—"}[passed]


def _number(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "—"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"


def table(rows: Sequence[Row], title: str) -> Table:
    view = Table(title=title)
    for heading in ("metric", "proctor", "baseline", "ratio", "target", "result"):
        view.add_column(heading, justify="right" if heading != "metric" else "left")
    for row in rows:
        ratio = row.ratio
        view.add_row(
            escape(f"{row.metric} ({row.unit})"),
            _number(row.proctor),
            _number(row.baseline),
            "—" if ratio is None else f"{ratio:.2f}",
            row.target.describe(row.unit),
            verdict(row.passed),
        )
    return view


def markdown(rows: Sequence[Row]) -> str:
    """The table as Markdown, for docs/performance.md."""
    lines = [
        "| metric | proctor | baseline | ratio | target | result |",
        "|---|---:|---:|---:|---|---|",
    ]
    for row in rows:
        ratio = row.ratio
        lines.append(
            f"| {row.metric} ({row.unit}) | {_number(row.proctor)} | {_number(row.baseline)} "
            f"| {'—' if ratio is None else f'{ratio:.2f}'} | {row.target.describe(row.unit)} "
            f"| {verdict(row.passed)} |"
        )
    return "\n".join(lines) + "\n"


def machine() -> dict[str, str]:
    """What the figures were measured on."""
    info = {"kernel": platform.release(), "python": platform.python_version()}
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        models = [
            line.split(":", 1)[1].strip()
            for line in cpuinfo.read_text().splitlines()
            if line.startswith("model name")
        ]
        info["cpu"] = models[0] if models else platform.processor()
        info["cores"] = str(len(models))
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        total_kib = int(meminfo.read_text().split()[1])
        info["ram"] = f"{total_kib / 1024 / 1024:.1f} GiB"
    return info


def write_json(path: Path, rows: Sequence[Row], meta: dict[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {**meta, "rows": [row.record() for row in rows]}
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")


def print_table(rows: Sequence[Row], title: str, console: Console | None = None) -> None:
    (console or Console()).print(table(rows, title))


def read_json(path: Path) -> tuple[list[Row], dict[str, object]]:
    """The rows and the rest of a results file, as `write_json` wrote them."""
    document = json.loads(path.read_text())
    rows = []
    for record in document.pop("rows"):
        target = record["target"]
        rows.append(
            Row(
                metric=record["metric"],
                unit=record["unit"],
                proctor=float(record["proctor"]),
                baseline=None if record["baseline"] is None else float(record["baseline"]),
                target=Target(Goal(target["goal"]), target["limit"], target["slack"]),
                note=record["note"],
            )
        )
    return rows, document
