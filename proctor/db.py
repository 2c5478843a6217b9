"""Database connections and schema upgrades (Alembic), for SQLite and PostgreSQL alike."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError
from sqlalchemy.orm import ORMExecuteState, Session, SessionTransaction, sessionmaker

from proctor import exceptions
from proctor.config import Settings

if TYPE_CHECKING:
    from alembic.config import Config

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
SQLITE_BUSY_TIMEOUT_SECONDS = 30
POOL_PRE_PING = True

_engines: dict[str, Engine] = {}
_sessionmakers: dict[str, sessionmaker[Session]] = {}
_engines_lock = threading.Lock()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets the API read while a worker writes; NORMAL sync is durable across crashes of
    # the process (only an OS crash may lose the last commits).
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def get_engine(url: str) -> Engine:
    """One engine (and pool) per database URL per process."""
    with _engines_lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _create_engine(url)
            _engines[url] = engine
        return engine


def _create_engine(url: str) -> Engine:
    try:
        return _connect(url)
    except (ArgumentError, NoSuchModuleError) as exc:
        raise exceptions.InvalidConfiguration(
            f"PROCTOR_DATABASE_URL is not a usable database URL: {exc}"
        ) from exc


def _connect(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS, "check_same_thread": False},
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=POOL_PRE_PING, pool_size=10, max_overflow=20)


def dispose_engines() -> None:
    with _engines_lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
        _sessionmakers.clear()


class _SQLiteWriters:
    """Takes turns for the sessions of one process that write to one SQLite database.

    SQLite lets one transaction write at a time, and one that must wait does so in the
    busy handler, which sleeps between tries (1, 2, 5, … up to 100 ms) instead of
    waking when the lock is free: under a burst of submissions the API's threads slept
    their way to a p99 of half a second. Here they queue on a lock that is handed over
    at once, from the session's first write until its transaction ends. Between
    processes (the API's, a worker's) the busy handler still decides.
    """

    HELD = "proctor.sqlite_write_turn"

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def watch(self, factory: sessionmaker[Session]) -> None:
        event.listen(factory, "do_orm_execute", self._on_execute)
        event.listen(factory, "before_flush", self._on_flush)
        event.listen(factory, "after_transaction_end", self._on_end)

    def _on_execute(self, state: ORMExecuteState) -> None:
        if state.is_insert or state.is_update or state.is_delete:
            self._take(state.session)

    def _on_flush(self, session: Session, _context: Any, _instances: Any) -> None:
        if session.new or session.dirty or session.deleted:
            self._take(session)

    def _take(self, session: Session) -> None:
        if session.info.get(self.HELD):
            return
        # Bounded: past it, the write goes ahead and SQLite's own wait decides, as
        # without this lock.
        if self._lock.acquire(timeout=SQLITE_BUSY_TIMEOUT_SECONDS):
            session.info[self.HELD] = True
        else:
            log.warning("waited %s s for this process's turn to write", SQLITE_BUSY_TIMEOUT_SECONDS)

    def _on_end(self, session: Session, transaction: SessionTransaction) -> None:
        if transaction.parent is None and session.info.pop(self.HELD, False):
            self._lock.release()


def sessionmaker_for(settings: Settings) -> sessionmaker[Session]:
    """One session factory per database URL per process, like the engine.

    A `sessionmaker` makes its own `Session` subclass, and SQLAlchemy sets up the event
    dispatch of a class on its first session (about 0.3 ms): a factory per call paid
    that on every session.
    """
    url = settings.database_url
    factory = _sessionmakers.get(url)
    if factory is None:
        engine = get_engine(url)
        with _engines_lock:
            factory = _sessionmakers.get(url)
            if factory is None:
                factory = sessionmaker(engine, expire_on_commit=False)
                if engine.dialect.name == "sqlite":
                    _SQLiteWriters().watch(factory)
                _sessionmakers[url] = factory
    return factory


@contextmanager
def session_scope(settings: Settings) -> Iterator[Session]:
    """A session that commits on success and rolls back on error.

    A database that cannot be reached becomes `ServiceUnavailable`, so the edges
    answer 503 (API) or retry (worker) instead of crashing.
    """
    session = sessionmaker_for(settings)()
    try:
        yield session
        session.commit()
    except OperationalError as exc:
        session.rollback()
        raise exceptions.ServiceUnavailable(f"the database is unavailable: {exc.orig}") from exc
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def alembic_config(settings: Settings) -> Config:
    # Alembic is imported where migrations are handled: a process that only opens the
    # database starts faster without it.
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # Alembic's config is ConfigParser-based: a literal % must be doubled.
    config.set_main_option("sqlalchemy.url", settings.database_url.replace("%", "%%"))
    return config


def upgrade(settings: Settings) -> None:
    """Bring the schema to the newest revision (creating the database if needed)."""
    from alembic import command

    settings.home.mkdir(parents=True, exist_ok=True)
    try:
        with get_engine(settings.database_url).begin() as connection:
            config = alembic_config(settings)
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    except OperationalError as exc:
        raise exceptions.ServiceUnavailable(f"the database is unavailable: {exc.orig}") from exc
