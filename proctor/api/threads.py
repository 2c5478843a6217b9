"""The thread pool that runs the API's blocking work (database sessions) off the event loop."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

API_THREADS = 40  # as many as Starlette's thread pool: the same number of sessions at once

P = ParamSpec("P")
T = TypeVar("T")

_executor = ThreadPoolExecutor(max_workers=API_THREADS, thread_name_prefix="proctor-api")


async def run_blocking(func: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """`func(*args, **kwargs)` in the API's thread pool.

    For the hot routes instead of a sync route or `run_in_threadpool`: asyncio's executor
    hands a call to a thread for about half the CPU time of anyio's worker threads
    (cancel scope, capacity limiter, a queue per thread), which showed per request.
    """
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_executor, functools.partial(func, *args, **kwargs))
