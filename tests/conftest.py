"""Fixtures shared by every test layer."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from proctor import db
from proctor.config import Settings

SettingsFactory = Callable[..., Settings]


@pytest.fixture
def make_settings(tmp_path: Path) -> Iterator[SettingsFactory]:
    """Settings on a fresh home and database, with test-friendly limits; override any field."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "home": tmp_path / "home",
            "run_memory": "256m",
            "build_memory": "512m",
            "run_timeout": 60,
            "build_timeout": 120,
            "worker_poll_interval": 0.05,
            "lease_seconds": 6,
            "log_max_bytes": "256k",
        }
        values.update(overrides)
        settings = Settings(**values)
        db.upgrade(settings)
        return settings

    yield make
    db.dispose_engines()


@pytest.fixture
def settings(make_settings: SettingsFactory) -> Settings:
    return make_settings()
