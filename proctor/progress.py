"""The live view of `proctor submit --wait`: the phase, the time spent, the tail of the logs.

The logs come from the submitter's container, so what reaches the terminal is
stripped of control characters and escape sequences, and never read as markup.
"""

from __future__ import annotations

import collections
import re
import threading
import time
from collections.abc import Callable

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from proctor import render
from proctor.client import Client, ClientError, Job

LOG_TAIL_LINES = 8
LOG_LINE_MAX_CHARS = 240
REFRESH_PER_SECOND = 4
# CSI/OSC escape sequences, then every other control character but tab.
_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b.?")
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def printable(line: str) -> str:
    """`line` as it may be shown on a terminal: no escapes, no control characters."""
    return _CONTROLS.sub("", _ESCAPES.sub("", line))[:LOG_LINE_MAX_CHARS]


class LogTail:
    """Follows a job's logs on a thread of its own and keeps the last lines."""

    def __init__(self, connect: Callable[[], Client], job_id: str, lines: int = LOG_TAIL_LINES):
        self._connect = connect
        self._job_id = job_id
        self._lines: collections.deque[str] = collections.deque(maxlen=lines)
        self._partial = ""
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._follow, name="log-tail", daemon=True)

    def start(self) -> LogTail:
        self._thread.start()
        return self

    def feed(self, chunk: str) -> None:
        with self._lock:
            *complete, self._partial = (self._partial + chunk).split("\n")
            self._lines.extend(printable(line.rstrip("\r")) for line in complete)

    def lines(self) -> list[str]:
        with self._lock:
            tail = list(self._lines)
            if self._partial:
                tail = [*tail, printable(self._partial)][-(self._lines.maxlen or 1) :]
            return tail

    def _follow(self) -> None:
        try:
            with self._connect() as client:
                for chunk in client.follow_logs(self._job_id):
                    self.feed(chunk)
        except ClientError:
            # The view is a courtesy: the job's state still comes from polling.
            return


class WaitView:
    """What the terminal shows while a job runs; `update` is fed each poll of the job."""

    def __init__(self, job: Job, tail: LogTail) -> None:
        self.job = job
        self.reachable = True
        self._tail = tail
        self._started = time.monotonic()
        self._phase_started = self._started
        self._spinner = Spinner("dots")

    def update(self, job: Job, reachable: bool) -> bool:
        """Take the latest state; True if the job moved to a new phase."""
        moved: bool = job["status"] != self.job["status"]
        if moved:
            self._phase_started = time.monotonic()
        self.job, self.reachable = job, reachable
        return moved

    def render(self) -> RenderableType:
        now = time.monotonic()
        head = Text.assemble(
            "  ",
            render.status_text(self.job["status"]),
            f"  {render.duration(now - self._phase_started)} in this phase",
            f", {render.duration(now - self._started)} in all",
            ("  (server unreachable, retrying)" if not self.reachable else "", "yellow"),
        )
        line = Table.grid(padding=(0, 1))
        line.add_row(self._spinner, head)
        tail = self._tail.lines()
        if not tail:
            return line
        return Group(
            line,
            *(
                Text("    " + entry, style="dim", no_wrap=True, overflow="ellipsis")
                for entry in tail
            ),
        )


def wait(console: Console, client: Client, job: Job, connect: Callable[[], Client]) -> Job:
    """Follow JOB until it is final, with a live view on `console`; returns the final job."""
    view = WaitView(job, LogTail(connect, job["id"]).start())
    console.print(Text.assemble("  ", render.status_text(job["status"])))
    with Live(
        get_renderable=view.render,
        console=console,
        refresh_per_second=REFRESH_PER_SECOND,
        transient=True,
    ) as live:

        def show(current: Job, reachable: bool) -> None:
            if view.update(current, reachable):
                live.console.print(Text.assemble("  ", render.status_text(current["status"])))

        final = client.wait(job, on_poll=show)
        show(final, True)
    return final
