"""The `proctor` command: run the service (up, serve, worker) and use it (submit, status…)."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
import uvicorn
from rich.console import Console

from proctor import __version__, db, exceptions, render, users
from proctor.client import Client, Credentials, read_credentials, resolve
from proctor.client import write_credentials as save_credentials
from proctor.config import Settings, get_settings

app = typer.Typer(
    name="proctor",
    help="Evaluate untrusted ML submissions in a locked-down Docker sandbox.",
    no_args_is_help=True,
    add_completion=False,
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
user_app = typer.Typer(help="Users and tokens.", no_args_is_help=True)
config_app = typer.Typer(help="Configuration.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(user_app, name="user")
app.add_typer(config_app, name="config")

out = Console()
err = Console(stderr=True)

EXIT_FAILED = 1
EXIT_CANCELLED = 2
EXIT_ERROR = 3
POLL_SECONDS = 0.5
WORKER_STOP_GRACE_SECONDS = 30
ADMIN_NAME = "admin"
ANY_ADDRESS = "0.0.0.0"
LOCAL_ADDRESS = "127.0.0.1"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

T = TypeVar("T")

UrlOption = Annotated[
    str | None, typer.Option("--url", envvar="PROCTOR_URL", help="proctor server URL.")
]
TokenOption = Annotated[
    str | None, typer.Option("--token", envvar="PROCTOR_TOKEN", help="API token.")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
HostOption = Annotated[
    str | None, typer.Option("--host", envvar="PROCTOR_HOST", help="Address to listen on.")
]
PortOption = Annotated[
    int | None, typer.Option("--port", envvar="PROCTOR_PORT", help="Port to listen on.")
]


def main() -> None:
    app()


@contextmanager
def _errors() -> Iterator[None]:
    """Turn proctor's errors into one red line and exit code 3, never a traceback."""
    try:
        yield
    except exceptions.ProctorError as exc:
        err.print(f"[red]error:[/red] {exc.message}", highlight=False)
        raise typer.Exit(EXIT_ERROR) from exc


def _settings(host: str | None = None, port: int | None = None) -> Settings:
    with _errors():
        try:
            settings = get_settings()
        except ValueError as exc:
            raise exceptions.ProctorError(f"invalid configuration: {exc}") from exc
    updates: dict[str, Any] = {}
    if host is not None:
        updates["host"] = host
    if port is not None:
        updates["port"] = port
    return settings.model_copy(update=updates) if updates else settings


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)


def _client(url: str | None, token: str | None) -> Client:
    settings = _settings()
    with _errors():
        saved = read_credentials(settings.credentials_path)
    default_url = f"http://{_client_host(settings.host)}:{settings.port}"
    credentials = resolve(url, token, saved, default_url)
    if not credentials.token:
        err.print(
            "[red]error:[/red] no API token: run `proctor up`, or `proctor user add NAME`, "
            "or pass --token / PROCTOR_TOKEN",
            highlight=False,
        )
        raise typer.Exit(EXIT_ERROR)
    return Client(credentials.url, credentials.token)


def _call(url: str | None, token: str | None, action: Callable[[Client], T]) -> T:
    with _errors(), _client(url, token) as client:
        return action(client)


def _client_host(host: str) -> str:
    return LOCAL_ADDRESS if host in (ANY_ADDRESS, "::", "") else host


def _print_json(value: Any) -> None:
    out.print_json(json.dumps(value))


# --- running the service --------------------------------------------------------------


@app.command()
def up(host: HostOption = None, port: PortOption = None) -> None:
    """Run the API and a worker together on this machine (the embedded default)."""
    _setup_logging()
    settings = _settings(host, port)
    with _errors():
        db.upgrade(settings)
        url = f"http://{_client_host(settings.host)}:{settings.port}"
        _ensure_admin_credentials(settings, url)
    worker = subprocess.Popen(
        [sys.executable, "-m", "proctor", "worker"],
        env={
            **os.environ,
            "PROCTOR_HOME": str(settings.home),
            "PROCTOR_DATABASE_URL": settings.database_url,
        },
    )
    err.print(
        f"[bold]proctor {__version__}[/bold] at {url}  (API docs: {url}/docs)\n"
        f"credentials: {settings.credentials_path}\n"
        "submit with: proctor submit examples/busybox --wait",
        highlight=False,
    )
    server = _server(settings)
    worker_died = threading.Event()

    def watch_worker() -> None:
        worker.wait()
        if not server.should_exit:
            worker_died.set()
            server.should_exit = True

    threading.Thread(target=watch_worker, daemon=True).start()
    try:
        _run_server(server)
    finally:
        _stop(worker)
    if worker_died.is_set():
        err.print(f"[red]error:[/red] the worker exited with code {worker.returncode}")
        raise typer.Exit(EXIT_FAILED)


def _ensure_admin_credentials(settings: Settings, url: str) -> None:
    saved = read_credentials(settings.credentials_path)
    if saved and saved.token and users.token_is_valid(settings, saved.token):
        if saved.url != url:
            save_credentials(settings.credentials_path, Credentials(url, saved.token, saved.user))
        return
    token = users.issue_token(settings, ADMIN_NAME, admin=True)
    save_credentials(settings.credentials_path, Credentials(url, token, ADMIN_NAME))
    err.print(f"created user {ADMIN_NAME!r}; its token is in {settings.credentials_path}")


def _server(settings: Settings) -> uvicorn.Server:
    from proctor.api.app import create_app

    config = uvicorn.Config(
        create_app(settings), host=settings.host, port=settings.port, log_level="info"
    )
    return uvicorn.Server(config)


def _run_server(server: uvicorn.Server) -> None:
    """Serve until SIGINT/SIGTERM, then return normally (exit code 0).

    uvicorn handles both signals while it serves, then re-raises the one it got for
    the handler that was there before: make that one a no-op, so a requested stop
    is a clean exit and `up` can still stop its worker.
    """
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda _signum, _frame: None)
    server.run()


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(WORKER_STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@app.command()
def serve(host: HostOption = None, port: PortOption = None) -> None:
    """Run the API server only (for scale-out; workers run elsewhere)."""
    _setup_logging()
    _run_server(_server(_settings(host, port)))


@app.command()
def worker() -> None:
    """Run a worker: claim queued jobs and run them until SIGTERM or SIGINT."""
    from proctor.worker import run_worker

    _setup_logging()
    with _errors():
        run_worker(_settings())


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply database migrations (creates the database if needed)."""
    settings = _settings()
    with _errors():
        db.upgrade(settings)
    err.print(f"database at the newest schema: {settings.shown()['database_url']}")


@user_app.command("add")
def user_add(
    name: str,
    admin: Annotated[bool, typer.Option("--admin", help="May see and cancel every job.")] = False,
    save: Annotated[
        bool, typer.Option("--save", help="Write the token to the credentials file.")
    ] = False,
) -> None:
    """Create a user and print its token (shown once, on the last line)."""
    settings = _settings()
    with _errors():
        db.upgrade(settings)
        token = users.add_user(settings, name, admin=admin)
        path = settings.credentials_path
        if save or read_credentials(path) is None:
            url = f"http://{_client_host(settings.host)}:{settings.port}"
            save_credentials(path, Credentials(url, token, name))
            err.print(f"token saved to {path}")
    err.print(f"created {'admin ' if admin else ''}user {name!r}; keep this token:")
    print(token)


@config_app.command("show")
def config_show(as_json: JsonOption = False) -> None:
    """Print the effective configuration, secrets masked."""
    values = _settings().shown()
    if as_json:
        _print_json(values)
    else:
        out.print(render.settings_table(values))


# --- using the service ----------------------------------------------------------------


@app.command()
def submit(
    path: Annotated[Path, typer.Argument(help="A Dockerfile, a .tar/.tar.gz or a directory.")],
    dataset: Annotated[str | None, typer.Option(help="Server-side dataset name.")] = None,
    timeout: Annotated[float | None, typer.Option(help="Run time limit, seconds.")] = None,
    name: Annotated[str | None, typer.Option(help="A label for the job.")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Follow the job until it ends.")] = False,
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Submit a job; with --wait, exit 0 only if it succeeded."""
    from proctor.context import pack_path

    with _errors():
        data = pack_path(path)
    filename = path.name if path.is_file() else f"{path.name or 'context'}.tar.gz"

    def send(client: Client) -> dict[str, Any]:
        job = client.submit(data, filename=filename, dataset=dataset, timeout=timeout, name=name)
        if not as_json:
            err.print(f"submitted job {job['id']}", highlight=False)
        return _follow(client, job) if wait else job

    job = _call(url, token, send)
    if as_json:
        _print_json(job)
    elif wait:
        out.print(render.outcome_line(job), highlight=False, soft_wrap=True)
    else:
        print(job["id"])
    if wait:
        raise typer.Exit(_exit_code(job))


def _follow(client: Client, job: dict[str, Any]) -> dict[str, Any]:
    started = time.monotonic()
    seen = None
    with err.status("waiting") as status:
        while job["status"] not in ("succeeded", "failed", "cancelled"):
            if job["status"] != seen:
                seen = job["status"]
                err.print(f"  {seen}", style=render.STATUS_STYLES.get(seen, ""))
            status.update(f"{job['status']}  {time.monotonic() - started:.0f} s")
            time.sleep(POLL_SECONDS)
            job = client.get_job(job["id"])
    return job


def _exit_code(job: dict[str, Any]) -> int:
    return {"succeeded": 0, "cancelled": EXIT_CANCELLED}.get(job["status"], EXIT_FAILED)


@app.command()
def status(
    job_id: str, as_json: JsonOption = False, url: UrlOption = None, token: TokenOption = None
) -> None:
    """Show one job."""
    job = _call(url, token, lambda client: client.get_job(job_id))
    if as_json:
        _print_json(job)
    else:
        out.print(render.job_panel(job))


@app.command()
def logs(
    job_id: str,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Stream until final.")] = False,
    stream: Annotated[str | None, typer.Option(help="build or run (default: both).")] = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Print a job's build and run logs."""

    def show(client: Client) -> None:
        if follow:
            for chunk in client.follow_logs(job_id, stream):
                sys.stdout.write(chunk)
                sys.stdout.flush()
        else:
            sys.stdout.write(client.logs(job_id, stream))

    _call(url, token, show)


@app.command()
def cancel(job_id: str, url: UrlOption = None, token: TokenOption = None) -> None:
    """Cancel a job that has not finished."""
    job = _call(url, token, lambda client: client.cancel(job_id))
    out.print(render.outcome_line(job) if job["status"] == "cancelled" else f"cancelling {job_id}")


@app.command("list")
def list_jobs(
    status: Annotated[str | None, typer.Option(help="Only jobs in this state.")] = None,
    limit: Annotated[int, typer.Option(help="Jobs per page (at most 200).")] = 50,
    all_pages: Annotated[bool, typer.Option("--all-pages", help="Every page.")] = False,
    user: Annotated[str | None, typer.Option(help="Admins: one user's jobs.")] = None,
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """List your jobs, newest first."""

    def fetch(client: Client) -> list[dict[str, Any]]:
        if all_pages:
            return list(client.iter_jobs(status=status, user=user))
        items: list[dict[str, Any]] = client.list_jobs(status=status, limit=limit, user=user)[
            "items"
        ]
        return items

    jobs = _call(url, token, fetch)
    if as_json:
        _print_json(jobs)
    else:
        out.print(render.jobs_table(jobs))
