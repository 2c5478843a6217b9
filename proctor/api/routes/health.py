"""Liveness, readiness and metrics: no auth, for load balancers and Prometheus."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

from proctor import db, exceptions
from proctor.api.deps import SettingsDep
from proctor.api.schemas import Health
from proctor.config import Settings
from proctor.engine import DockerEngine

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    """The process is alive."""
    return Health(status="ok")


def _check_database(settings: Settings) -> str:
    try:
        with db.session_scope(settings) as session:
            session.execute(text("SELECT 1"))
    except exceptions.ServiceUnavailable as exc:
        return exc.message
    return "ok"


def _check_engine(settings: Settings) -> str:
    try:
        engine = DockerEngine(settings.docker_host)
        try:
            engine.ping()
        finally:
            engine.close()
    except exceptions.EngineError as exc:
        return exc.message
    return "ok"


@router.get("/readyz", response_model=Health, responses={503: {"model": Health}})
async def readyz(settings: SettingsDep) -> JSONResponse:
    """The database and the Docker engine are reachable."""
    checks = {
        "database": await run_in_threadpool(_check_database, settings),
        "engine": await run_in_threadpool(_check_engine, settings),
    }
    ready = all(value == "ok" for value in checks.values())
    body = Health(status="ok" if ready else "unavailable", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


@router.get("/metrics", response_class=Response)
def metrics(request: Request) -> Response:
    """Prometheus metrics."""
    return Response(
        generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST
    )
