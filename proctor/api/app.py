"""The FastAPI application: routes, the single error shape, request metrics."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from proctor import __version__, changes, exceptions, results, store, users
from proctor.api.routes import datasets, health, jobs, web
from proctor.api.routes import results as results_routes
from proctor.config import Settings, get_settings
from proctor.metrics import Metrics

log = logging.getLogger(__name__)

HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid_parameter",
    429: "too_many_requests",
    503: "unavailable",
}


def error_response(status: int, code: str, message: str) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code=status, headers=headers
    )


async def _proctor_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, exceptions.ProctorError)
    if exc.status_code >= 500:
        log.error("request failed: %s", exc.message, exc_info=exc)
    return error_response(exc.status_code, exc.code, exc.message)


async def _validation_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    problems = "; ".join(
        f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}" for error in exc.errors()
    )
    return error_response(422, "invalid_parameter", problems or "the request is not valid")


async def _http_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = HTTP_CODES.get(exc.status_code, "error")
    return error_response(exc.status_code, code, str(exc.detail))


async def _unexpected_error(_request: Request, exc: Exception) -> Response:
    log.exception("unexpected error", exc_info=exc)
    return error_response(500, "internal", "the server failed; the error was logged")


class _MeasureLatency:
    """Times each HTTP request, to its response's start, into the latency histogram.

    A plain ASGI middleware: Starlette's `@app.middleware("http")` runs every request
    through an extra task and memory streams, which costs more than the timing itself.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()

        async def timed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                template = getattr(scope.get("route"), "path", "unmatched")
                self.metrics.latency.labels(scope["method"], template, message["status"]).observe(
                    time.perf_counter() - started
                )
            await send(message)

        await self.app(scope, receive, timed_send)


def create_app(settings: Settings) -> FastAPI:
    watch = changes.JobWatch(settings.database_url, store.CHANGES_CHANNEL)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        watch.close()

    app = FastAPI(
        title="proctor",
        version=__version__,
        summary="Evaluate untrusted ML submissions in a locked-down sandbox.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.job_watch = watch  # requests waiting on a job (GET /api/v1/jobs/{id}?wait=)
    results.signing_key(settings)  # created on first start if this deployment has none
    app.state.metrics = Metrics(settings)
    app.state.token_cache = users.TokenCache()
    app.state.final_jobs = jobs.FinalJobs(jobs.FINAL_JOB_SECONDS, jobs.FINAL_JOB_ENTRIES)
    app.add_exception_handler(exceptions.ProctorError, _proctor_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
    app.include_router(jobs.router)
    app.include_router(datasets.router)
    app.include_router(results_routes.router)
    app.include_router(health.router)
    app.include_router(web.router)

    app.add_middleware(_MeasureLatency, metrics=app.state.metrics)
    return app


def create_app_from_env() -> FastAPI:
    """The app of one of several `serve` processes: settings from the environment and
    PROCTOR_CONFIG, as the process that started them read them."""
    return create_app(get_settings())
