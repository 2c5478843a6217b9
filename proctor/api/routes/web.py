"""The web dashboard: static files (HTML, CSS, JS modules) served with strict security headers.

The pages need no auth; every data call they make carries the user's token to /api/v1."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from proctor import exceptions

STATIC_DIR = Path(__file__).resolve().parents[2] / "web" / "static"
INDEX = "index.html"
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}
CACHE_SECONDS = 300  # assets are small; a deploy shows up within minutes without a hard reload
SECURITY_HEADERS = {
    # Only our own files; no inline script or style, no framing, no plugins, no <base>.
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}

router = APIRouter(include_in_schema=False)


def _assets() -> dict[str, Path]:
    """The files the dashboard may serve, by name: a fixed list, so no path ever reaches disk."""
    return {
        path.name: path
        for path in STATIC_DIR.iterdir()
        if path.is_file() and path.suffix in MEDIA_TYPES
    }


ASSETS = _assets()


def _serve(name: str) -> FileResponse:
    path = ASSETS.get(name)
    if path is None:
        raise exceptions.NotFound(f"no dashboard file named {name!r}")
    headers = {**SECURITY_HEADERS, "Cache-Control": f"max-age={CACHE_SECONDS}"}
    return FileResponse(path, media_type=MEDIA_TYPES[path.suffix], headers=headers)


@router.get("/")
def dashboard() -> FileResponse:
    """The dashboard's single page."""
    return _serve(INDEX)


@router.get("/static/{name}")
def static_file(name: str) -> FileResponse:
    """One of the dashboard's static files."""
    return _serve(name)
