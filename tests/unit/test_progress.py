"""The live view of `submit --wait` and the CLI's formatting of times and sizes."""

from __future__ import annotations

import io

from rich.console import Console

from proctor import progress, render
from proctor.client import Client


def never_connect() -> Client:
    raise AssertionError("the tail is fed by hand in these tests")


def test_progress_printable_strips_escapes_and_controls() -> None:
    hostile = "\x1b[2J\x1b[31mred\x1b[0m \x1b]0;title\x07ok\x08\x00\tend"

    assert progress.printable(hostile) == "red ok\tend"


def test_progress_printable_caps_line_length() -> None:
    assert len(progress.printable("x" * 10_000)) == progress.LOG_LINE_MAX_CHARS


def test_progress_log_tail_keeps_last_lines_across_chunks() -> None:
    tail = progress.LogTail(never_connect, "job", lines=3)

    tail.feed("one\ntwo\nthr")
    tail.feed("ee\nfour\nfi")

    assert tail.lines() == ["three", "four", "fi"]


def test_progress_log_tail_drops_carriage_returns() -> None:
    tail = progress.LogTail(never_connect, "job", lines=3)

    tail.feed("step 1\r\nstep 2\r\n")

    assert tail.lines() == ["step 1", "step 2"]


def test_progress_view_shows_phase_and_tail_without_markup() -> None:
    tail = progress.LogTail(never_connect, "job")
    tail.feed("[bold]not markup[/bold]\n")
    view = progress.WaitView({"id": "job", "status": "queued"}, tail)

    moved = view.update({"id": "job", "status": "running"}, reachable=False)
    console = Console(file=io.StringIO(), width=120, color_system=None)
    console.print(view.render())
    shown = console.file.getvalue()  # type: ignore[attr-defined]

    assert moved
    assert "running" in shown and "in this phase" in shown
    assert "server unreachable" in shown
    assert "[bold]not markup[/bold]" in shown


def test_progress_view_update_same_phase_is_not_a_move() -> None:
    view = progress.WaitView(
        {"id": "job", "status": "running"}, progress.LogTail(never_connect, "j")
    )

    assert not view.update({"id": "job", "status": "running"}, reachable=True)


def test_render_duration_steps_up_units() -> None:
    assert [render.duration(s) for s in (4.24, 185, 7380)] == ["4.2 s", "3m 05s", "2h 03m"]


def test_render_size_in_binary_units() -> None:
    assert [render.size(n) for n in (512, 1536, 20 * 2**20)] == ["512 B", "1.5 KiB", "20.0 MiB"]
