"""The SQLite change watch: a commit from another connection is reported, with the
kernel's notice of the write (inotify) and by polling the files where there is none."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from proctor import changes


def _no_inotify(files: tuple[Path, ...]) -> None:
    raise OSError("inotify is not available")


@pytest.mark.parametrize("inotify", [True, False], ids=["inotify", "polling"])
def test_sqlite_watch_reports_a_commit_and_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, inotify: bool
) -> None:
    database = tmp_path / "proctor.db"
    connection = sqlite3.connect(database)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("CREATE TABLE jobs (status TEXT)")
    connection.commit()
    if not inotify:
        monkeypatch.setattr(changes, "_FileWrites", _no_inotify)
    heard, stop, listening = threading.Event(), threading.Event(), threading.Event()
    watcher = threading.Thread(
        target=changes.listen,
        args=(f"sqlite:///{database}", "unused", lambda _: heard.set(), stop, listening),
    )
    watcher.start()
    try:
        assert listening.wait(5)
        (tmp_path / "proctor.log").write_text("another file in the same folder\n")
        assert not heard.wait(0.3)
        connection.execute("INSERT INTO jobs VALUES ('queued')")
        connection.commit()
        assert heard.wait(5)
    finally:
        stop.set()
        watcher.join(5)
        connection.close()
    assert not watcher.is_alive()
