"""Change notifications from the database, across processes and hosts.

On PostgreSQL a transaction sends `NOTIFY channel, payload` (delivered on commit) and a
listener thread hears it at once. SQLite has no NOTIFY: the listener watches the
database's files instead, which change on every commit, and reports a change with no
payload; on Linux the kernel says when they are written (inotify), elsewhere (or
without inotify) their size and modification time are looked at every 20 ms. Either
way a notification only says "look again": the database stays the only source of
truth, and a listener that lost its connection reports a change when it is back,
since it cannot know what it missed.

The worker uses this to claim a queued job at once; the API, to answer a request
waiting on a job (`GET /api/v1/jobs/{id}?wait=`) as soon as the job changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from sqlalchemy.engine import make_url

log = logging.getLogger(__name__)

LISTEN_TIMEOUT_SECONDS = 1.0  # how often a listener blocked on the database looks at its stop flag
RETRY_SECONDS = 2.0  # after the PostgreSQL connection failed
WATCH_SECONDS = 0.02  # how often the SQLite watcher looks at the files without inotify

READ_DELAY_MS = 2  # a commit is several writes: one report for them

OnChange = Callable[[str | None], None]
"""Called with a notification's payload; None when it is not known what changed."""


def listen(
    database_url: str,
    channel: str,
    on_change: OnChange,
    stop: threading.Event,
    listening: threading.Event | None = None,
) -> None:
    """Report changes until `stop` is set (run it in a thread of its own); `listening`
    is set once changes are heard."""
    listening = listening or threading.Event()
    url = make_url(database_url)
    if url.get_backend_name() == "postgresql":
        conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
        _listen_postgresql(conninfo, channel, on_change, stop, listening)
    elif url.database and url.database != ":memory:":
        _watch_sqlite(Path(url.database), on_change, stop, listening)


def _listen_postgresql(
    conninfo: str,
    channel: str,
    on_change: OnChange,
    stop: threading.Event,
    listening: threading.Event,
) -> None:
    import psycopg  # here: a process on SQLite never pays for importing it

    first = True
    while not stop.is_set():
        try:
            with psycopg.connect(conninfo, autocommit=True) as connection:
                connection.execute(f"LISTEN {channel}")
                listening.set()
                if not first:
                    on_change(None)  # what happened while the connection was down is unknown
                first = False
                while not stop.is_set():
                    for notice in connection.notifies(timeout=LISTEN_TIMEOUT_SECONDS):
                        on_change(notice.payload or None)
        except psycopg.Error as exc:
            log.warning("listening for %s: %s; retrying", channel, exc)
            first = False
            stop.wait(RETRY_SECONDS)


def _watch_sqlite(
    database: Path, on_change: OnChange, stop: threading.Event, listening: threading.Event
) -> None:
    files = (database, Path(f"{database}-wal"))
    try:
        watch = _FileWrites(files)
    except (ImportError, OSError) as exc:  # not Linux, or no inotify watches left
        log.info("watching %s by polling: %s", database, exc)
        _poll_sqlite(files, on_change, stop, listening)
        return
    with watch:
        listening.set()
        while not stop.is_set():
            if watch.wait(LISTEN_TIMEOUT_SECONDS):
                on_change(None)


class _FileWrites:
    """Writes to some files, from the kernel (inotify on their folder: SQLite deletes and
    creates the -wal file again, which a watch on the file itself would not survive).
    A thread blocked here costs nothing until a write."""

    def __init__(self, files: tuple[Path, ...]) -> None:
        from inotify_simple import INotify, flags  # Linux only: imported where used

        self._names = {path.name for path in files}
        self._inotify = INotify()
        try:
            folder = files[0].parent
            self._inotify.add_watch(folder, flags.MODIFY | flags.CREATE | flags.MOVED_TO)
        except OSError:
            self._inotify.close()
            raise

    def wait(self, timeout: float) -> bool:
        """Whether one of the files was written within `timeout` seconds."""
        events = self._inotify.read(timeout=int(timeout * 1000), read_delay=READ_DELAY_MS)
        return any(event.name in self._names for event in events)

    def __enter__(self) -> _FileWrites:
        return self

    def __exit__(self, *_: object) -> None:
        self._inotify.close()


def _poll_sqlite(
    files: tuple[Path, ...], on_change: OnChange, stop: threading.Event, listening: threading.Event
) -> None:
    # Looking at two files' size and time costs far less than a query.
    seen = file_stamp(files)
    listening.set()
    while not stop.wait(WATCH_SECONDS):
        stamp = file_stamp(files)
        if stamp != seen:
            seen = stamp
            on_change(None)


def file_stamp(files: tuple[Path, ...]) -> tuple[tuple[int, int], ...]:
    """Size and modification time of each file ((0, 0) when it does not exist)."""
    stamps = []
    for path in files:
        try:
            info = path.stat()
        except OSError:
            stamps.append((0, 0))
        else:
            stamps.append((info.st_size, info.st_mtime_ns))
    return tuple(stamps)


class JobWatch:
    """Lets async requests wait for a change to a job, from one listener thread per
    process, started by the first waiter."""

    def __init__(self, database_url: str, channel: str) -> None:
        self._database_url = database_url
        self._channel = channel
        self._lock = threading.Lock()
        self._waiters: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.listening = threading.Event()  # set once the listener hears changes

    @contextlib.contextmanager
    def subscribe(self, job_id: str) -> Iterator[asyncio.Event]:
        """An event set whenever the job may have changed. Subscribe before reading the
        job, so that a change between the read and the wait is not missed."""
        waiter = (asyncio.get_running_loop(), asyncio.Event())
        with self._lock:
            self._waiters.setdefault(job_id, set()).add(waiter)
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(
                    target=listen,
                    args=(
                        self._database_url,
                        self._channel,
                        self._notify,
                        self._stop,
                        self.listening,
                    ),
                    name="job-watch",
                    daemon=True,
                )
                self._thread.start()
        try:
            yield waiter[1]
        finally:
            with self._lock:
                waiting = self._waiters.get(job_id, set())
                waiting.discard(waiter)
                if not waiting:
                    self._waiters.pop(job_id, None)

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(LISTEN_TIMEOUT_SECONDS + 1)

    def _notify(self, job_id: str | None) -> None:
        with self._lock:
            if job_id is None:
                waiters = [w for waiting in self._waiters.values() for w in waiting]
            else:
                waiters = list(self._waiters.get(job_id, ()))
        for loop, event in waiters:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(event.set)
