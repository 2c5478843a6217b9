"""The benchmark suite's own logic (targets, ratios, the table, reading wrk) on fixed
figures: no timing is asserted here."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bench import __main__ as cli
from bench import load, measure, report
from bench.report import Goal, Row, Target
from bench.service import Databases
from proctor.config import Settings

WRK_OUTPUT = """\
Running 10s test @ http://127.0.0.1:8000/api/v1/jobs/x
  1 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     5.10ms    2.00ms  40.00ms   90.00%
    Req/Sec     1.60k   100.00     1.80k    70.00%
  Latency Distribution
     50%    4.50ms
     75%    5.80ms
     90%    7.10ms
     99%  850.00us
  16000 requests in 10.00s, 20.00MB read
  Socket errors: connect 0, read 1, write 0, timeout 2
  Non-2xx or 3xx responses: 4
Requests/sec:   1600.25
Transfer/sec:      2.00MB
"""


@pytest.mark.parametrize(
    ("target", "value", "baseline", "expected"),
    [
        # 10 % of 2000 ms is 200 ms: more than the 150 ms slack, so it is the allowance.
        (Target(Goal.OVERHEAD, 1.10, 150), 2200, 2000, True),
        (Target(Goal.OVERHEAD, 1.10, 150), 2201, 2000, False),
        # 10 % of 500 ms is 50 ms: the 150 ms slack is larger.
        (Target(Goal.OVERHEAD, 1.10, 150), 650, 500, True),
        (Target(Goal.OVERHEAD, 1.10, 150), 651, 500, False),
        (Target(Goal.AT_LEAST_RATIO, 0.9), 90, 100, True),
        (Target(Goal.AT_LEAST_RATIO, 0.9), 89, 100, False),
        (Target(Goal.AT_MOST_RATIO, 2.0), 2.0, 1.0, True),
        (Target(Goal.AT_MOST_RATIO, 2.0), 2.1, 1.0, False),
        (Target(Goal.AT_LEAST, 1000), 1000, None, True),
        (Target(Goal.AT_LEAST, 1000), 999, 5000, False),
        (Target(Goal.AT_MOST, 50), 51, None, False),
        (Target(Goal.NONE), 1, 1, None),
        (Target(Goal.AT_MOST_RATIO, 2.0), 1.0, None, None),  # nothing to compare with
        (Target(Goal.AT_LEAST, 1000), math.nan, None, None),  # not measured
    ],
)
def test_target_met_judges_value_against_baseline(
    target: Target, value: float, baseline: float | None, expected: bool | None
) -> None:
    assert target.met(value, baseline) is expected


def test_row_ratio_is_proctor_over_baseline() -> None:
    row = Row("latency", "ms", 300.0, 200.0, Target(Goal.AT_MOST_RATIO, 2.0))
    assert row.ratio == pytest.approx(1.5)
    assert row.passed is True
    assert Row("x", "ms", 1.0, None, Target(Goal.NONE)).ratio is None


@pytest.mark.parametrize(
    ("count", "rounds", "shares"),
    [(100, 5, [20] * 5), (10, 2, [5, 5]), (7, 3, [3, 2, 2]), (2, 5, [1, 1, 0, 0, 0])],
)
def test_throughput_rounds_share_out_every_job(count: int, rounds: int, shares: list[int]) -> None:
    assert measure._shares(count, rounds) == shares


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 21)]
    assert report.percentile(values, 0.95) == 19.0
    assert report.percentile(values, 0.5) == 10.0
    assert math.isnan(report.percentile([], 0.5))


def test_markdown_shows_verdicts_and_dashes() -> None:
    rows = [
        Row("GET job", "req/s", 1200, 3000, Target(Goal.AT_LEAST, 1000)),
        Row("POST job", "req/s", 150, None, Target(Goal.AT_LEAST, 200)),
        Row("p50", "ms", 3.0, None, Target(Goal.NONE)),
    ]
    lines = report.markdown(rows).splitlines()
    assert lines[2].endswith("| 0.40 | ≥ 1000 req/s | pass |")
    assert lines[3].endswith("| — | ≥ 200 req/s | FAIL |")
    assert lines[4].endswith("| — | — | — |")


def test_write_json_records_rows_with_ratio_and_verdict(tmp_path: Path) -> None:
    path = tmp_path / "results" / "latest.json"
    row = Row("claim", "ms", 4.0, 1.0, Target(Goal.AT_MOST_RATIO, 2.0), "note")
    report.write_json(path, [row], {"date": "2026-01-01"})
    document = json.loads(path.read_text())
    assert document["date"] == "2026-01-01"
    [recorded] = document["rows"]
    assert recorded["ratio"] == 4.0
    assert recorded["passed"] is False
    assert recorded["target"]["text"] == "ratio ≤ 2"


def test_api_measurement_runs_serve_as_configured_by_default() -> None:
    assert cli.parse([]).api_processes == Settings().api_processes == 1
    assert cli.parse(["--api-processes", "2"]).api_processes == 2
    with pytest.raises(SystemExit):
        cli.parse(["--api-processes", "0"])


def test_parse_wrk_reads_rate_percentiles_and_errors() -> None:
    figures = load.parse_wrk(WRK_OUTPUT)
    assert figures.requests_per_second == pytest.approx(1600.25)
    assert figures.p50_ms == pytest.approx(4.5)
    assert figures.p99_ms == pytest.approx(0.85)  # microseconds converted
    assert figures.errors == 4 + 3
    assert figures.requests == 16000


def test_parse_wrk_refuses_output_without_figures() -> None:
    with pytest.raises(RuntimeError, match="cannot read wrk"):
        load.parse_wrk("unable to connect to 127.0.0.1:1 Connection refused\n")


def test_history_measures_claim_get_and_list_on_a_real_database() -> None:
    options = measure.Options(quick=True, databases=Databases("sqlite"), backend="sqlite")
    rows = measure.history(options, small=100, samples=3)
    assert [row.metric.split(" at ")[0] for row in rows] == [
        "claim",
        "get job",
        "list page",
        "list all (admin)",
    ]
    assert all(math.isfinite(row.proctor) and row.baseline for row in rows)
    assert rows[0].metric == "claim at 20k jobs, sqlite"


def test_read_json_gives_back_the_rows_written(tmp_path: Path) -> None:
    path = tmp_path / "latest.json"
    rows = [
        Row("claim", "ms", 4.0, 1.0, Target(Goal.AT_MOST_RATIO, 2.0), "note"),
        Row("overhead", "ms", 900.0, 600.0, Target(Goal.OVERHEAD, 1.1, 150.0)),
        Row("rss", "MiB", 90.0, None, Target(Goal.NONE)),
    ]
    report.write_json(path, rows, {"date": "2026-01-01"})

    read, meta = report.read_json(path)

    assert read == rows
    assert meta == {"date": "2026-01-01"}
