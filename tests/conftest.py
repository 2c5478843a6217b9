"""Fixtures shared by every test layer."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from proctor import db
from proctor.config import Settings

SettingsFactory = Callable[..., Settings]
POSTGRES_URL_ENV = "PROCTOR_TEST_POSTGRES_URL"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--database",
        choices=("sqlite", "postgresql"),
        default="sqlite",
        help=f"database the tests run on; postgresql needs {POSTGRES_URL_ENV} "
        "(a role that may create databases: scripts/install-postgres.sh prints one)",
    )


class FreshDatabases:
    """One new database per test: a SQLite file, or a PostgreSQL database dropped after."""

    def __init__(self, backend: str, tmp_path: Path) -> None:
        self.backend = backend
        self.tmp_path = tmp_path
        self.created: list[str] = []
        self.admin_url = os.environ.get(POSTGRES_URL_ENV, "")
        if backend == "postgresql" and not self.admin_url:
            pytest.fail(f"--database postgresql needs {POSTGRES_URL_ENV}")

    def new_url(self) -> str:
        if self.backend == "sqlite":
            return ""  # the default: a file under the test's PROCTOR_HOME
        name = f"proctor_test_{secrets.token_hex(6)}"
        self._admin(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        return make_url(self.admin_url).set(database=name).render_as_string(hide_password=False)

    def drop_all(self) -> None:
        for name in self.created:
            self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def _admin(self, statement: str) -> None:
        engine = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as connection:
                connection.execute(text(statement))
        finally:
            engine.dispose()


@pytest.fixture
def make_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SettingsFactory]:
    """Settings on a fresh home and database, with test-friendly limits; override any field."""
    databases = FreshDatabases(request.config.getoption("--database"), tmp_path)

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "home": tmp_path / "home",
            "database_url": databases.new_url(),
            "run_memory": "256m",
            "build_memory": "512m",
            "run_timeout": 60,
            "build_timeout": 120,
            "worker_poll_interval": 0.05,
            "lease_seconds": 6,
            "log_max_bytes": "256k",
            "engine_retries": 2,
            "worker_drain_seconds": 0,
        }
        values.update(overrides)
        settings = Settings(**values)
        db.upgrade(settings)
        return settings

    yield make
    db.dispose_engines()
    databases.drop_all()


@pytest.fixture
def settings(make_settings: SettingsFactory) -> Settings:
    return make_settings()
