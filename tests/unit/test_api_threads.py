"""The API's thread pool: blocking calls run off the event loop, results and errors come back."""

from __future__ import annotations

import asyncio
import threading

import pytest

from proctor import exceptions
from proctor.api.threads import run_blocking


def where(label: str, *, suffix: str = "") -> tuple[str, str]:
    return label + suffix, threading.current_thread().name


def fail(message: str) -> None:
    raise exceptions.NotFound(message)


def test_run_blocking_returns_from_another_thread() -> None:
    label, thread = asyncio.run(run_blocking(where, "job", suffix="!"))

    assert label == "job!"
    assert thread != threading.current_thread().name
    assert thread.startswith("proctor-api")


def test_run_blocking_raises_the_calls_error() -> None:
    with pytest.raises(exceptions.NotFound, match="no job"):
        asyncio.run(run_blocking(fail, "no job"))
