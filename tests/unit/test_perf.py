"""perf.json parsing and safe reading."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from proctor.jobs import ErrorCode
from proctor.perf import PerfError, parse_perf, read_perf

CAP = 1024


@pytest.mark.parametrize(
    ("raw", "performance", "metrics"),
    [
        (b'{"perf": 0.87}', 0.87, {}),
        (b'{"perf": 1}', 1.0, {}),
        (b'{"perf": -3.5e-2, "auc": 0.9, "name": "m", "ok": true, "n": [1]}', -0.035, {"auc": 0.9}),
        (b'\xef\xbb\xbf{"perf": 0.5}', 0.5, {}),
    ],
)
def test_parse_perf_accepts_finite_numbers(
    raw: bytes, performance: float, metrics: dict[str, float]
) -> None:
    parsed = parse_perf(raw)

    assert parsed.performance == performance
    assert parsed.metrics == metrics


@pytest.mark.parametrize(
    "raw",
    [
        b'{"perf": NaN}',
        b'{"perf": Infinity}',
        b'{"perf": -Infinity}',
        b'{"perf": "0.5"}',
        b'{"perf": true}',
        b'{"perf": null}',
        b'{"perf": {"value": 1}}',
        b'{"score": 1}',
        b"[0.5]",
        b"0.5",
        b"",
        b"\xff\xfe",
        b'{"perf": 1e999}',
    ],
)
def test_parse_perf_rejects_everything_else(raw: bytes) -> None:
    with pytest.raises(PerfError) as caught:
        parse_perf(raw)

    assert caught.value.code is ErrorCode.PERF_INVALID


def test_read_perf_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PerfError) as caught:
        read_perf(tmp_path, CAP)

    assert caught.value.code is ErrorCode.PERF_MISSING


def test_read_perf_does_not_follow_symlinks(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.json"
    target.write_text('{"perf": 1}')
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "perf.json").symlink_to(target)

    with pytest.raises(PerfError, match="symbolic link") as caught:
        read_perf(tmp_path / "out", CAP)

    assert caught.value.code is ErrorCode.PERF_INVALID


def test_read_perf_rejects_fifo_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "perf.json")

    with pytest.raises(PerfError, match="not a regular file"):
        read_perf(tmp_path, CAP)


def test_read_perf_rejects_directory(tmp_path: Path) -> None:
    (tmp_path / "perf.json").mkdir()

    with pytest.raises(PerfError, match="not a regular file"):
        read_perf(tmp_path, CAP)


def test_read_perf_caps_size(tmp_path: Path) -> None:
    (tmp_path / "perf.json").write_text('{"perf": 1, "pad": "' + "x" * CAP + '"}')

    with pytest.raises(PerfError, match="limit"):
        read_perf(tmp_path, CAP)


def test_read_perf_reads_valid_file(tmp_path: Path) -> None:
    (tmp_path / "perf.json").write_text('{"perf": 0.25, "loss": 1.5}')

    parsed = read_perf(tmp_path, CAP)

    assert (parsed.performance, parsed.metrics) == (0.25, {"loss": 1.5})
