"""Commands that run the service (`up`, `serve`, `worker`) and administer it (`db`, `user`,
`config`)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from proctor import __version__, render
from proctor import client as api_client
from proctor.cli.base import (
    ADMIN_NAME,
    EXIT_FAILED,
    PROG_NAME,
    WORKER_STOP_GRACE_SECONDS,
    HostOption,
    JsonOption,
    PortOption,
    ProcessesOption,
    app,
    config_app,
    db_app,
    err,
    errors,
    fail,
    load_settings,
    out,
    print_json,
    setup_logging,
    user_app,
)
from proctor.client import ClientError, Credentials
from proctor.config import Settings

if TYPE_CHECKING:
    from uvicorn.supervisors import Multiprocess


@app.command()
def up(host: HostOption = None, port: PortOption = None, processes: ProcessesOption = None) -> None:
    """Run the API and a worker together on this machine (the embedded default)."""
    from proctor import db

    setup_logging()
    settings = load_settings(host, port, processes)
    url = api_client.service_url(settings.host, settings.port)
    with errors():
        db.upgrade(settings)
        _ensure_admin_credentials(settings, url)
    server = ApiServer(settings)
    stop = _StopRequest.install(server)
    worker = _start_worker(settings)
    worker_died = _watch_worker(worker, server)
    err.print(
        render.banner(__version__, url, str(settings.credentials_path), _client_env(settings))
    )
    try:
        server.run()
    finally:
        _stop_worker(worker, settings.worker_drain_seconds + WORKER_STOP_GRACE_SECONDS)
    # Ctrl-C in a terminal reaches the worker too, and it may exit first: not a crash.
    if worker_died.is_set() and not (stop.requested or server.signalled):
        fail(f"the worker exited unexpectedly with code {worker.returncode}", EXIT_FAILED)


class _StopRequest:
    """A SIGINT/SIGTERM handler that stops the server and remembers it was asked to.

    uvicorn installs its own handlers while it serves and, once stopped, re-raises the
    signal it got: this handler then sees it, so a requested stop is a clean exit and
    `up` still gets to stop its worker. Before uvicorn serves, it stops it early.
    """

    def __init__(self, server: ApiServer) -> None:
        self.server = server
        self.requested = False

    def __call__(self, _signum: int, _frame: FrameType | None) -> None:
        self.requested = True
        self.server.stop()

    @classmethod
    def install(cls, server: ApiServer) -> _StopRequest:
        handler = cls(server)
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, handler)
        return handler


def _ensure_admin_credentials(settings: Settings, url: str) -> None:
    """Keep a valid saved token (pointing it at URL); else issue the admin a new one."""
    from proctor import users

    path = settings.credentials_path
    try:
        saved = api_client.read_credentials(path)
    except ClientError as exc:
        err.print(f"[yellow]warning:[/yellow] {escape(exc.message)}; writing a new one")
        saved = None
    if saved and saved.token and users.token_is_valid(settings, saved.token):
        if saved.url != url:
            api_client.write_credentials(path, Credentials(url, saved.token, saved.user))
        return
    token = users.issue_token(settings, ADMIN_NAME, admin=True)
    api_client.write_credentials(path, Credentials(url, token, ADMIN_NAME))
    err.print(f"issued a token for user {ADMIN_NAME!r}, saved in {path}", highlight=False)


def _client_env(settings: Settings) -> str:
    """The prefix a client shell needs to find this server's credentials."""
    default_home = Path(Settings.model_fields["home"].default).resolve()
    return "" if settings.home == default_home else f"PROCTOR_HOME={settings.home} "


def _start_worker(settings: Settings) -> subprocess.Popen[bytes]:
    environment = {
        **os.environ,
        "PROCTOR_HOME": str(settings.home),
        "PROCTOR_DATABASE_URL": settings.database_url,
    }
    return subprocess.Popen([sys.executable, "-m", PROG_NAME, "worker"], env=environment)


def _watch_worker(worker: subprocess.Popen[bytes], server: ApiServer) -> threading.Event:
    """Stop the server when the worker exits; the returned event says it did."""
    died = threading.Event()

    def watch() -> None:
        worker.wait()
        died.set()
        server.stop()

    threading.Thread(target=watch, name="watch-worker", daemon=True).start()
    return died


def _stop_worker(worker: subprocess.Popen[bytes], grace_seconds: float) -> None:
    if worker.poll() is not None:
        return
    err.print("stopping the worker (running jobs go back to the queue)")
    worker.terminate()
    try:
        worker.wait(grace_seconds)
    except subprocess.TimeoutExpired:
        err.print("[yellow]warning:[/yellow] the worker did not stop in time; killing it")
        worker.kill()
        worker.wait()


class ApiServer:
    """uvicorn serving the API: in this process, or in `api_processes` processes that
    share the listening socket (uvicorn's supervisor restarts one that dies).

    With several processes the request metrics go through files in a folder of their
    own (prometheus_client's multiprocess mode), so that `/metrics`, whichever process
    answers it, counts the requests of all of them.
    """

    def __init__(self, settings: Settings) -> None:
        import uvicorn

        from proctor.api.app import create_app

        self.settings = settings
        self.signalled = False  # the supervisor of several processes stopped on a signal
        self._stopping = False
        self._supervisor: Multiprocess | None = None
        if settings.api_processes == 1:
            app: Any = create_app(settings)
            options: dict[str, Any] = {}
        else:
            # Each process builds its app from the same environment (see create_app_from_env)
            app, options = f"{create_app.__module__}:create_app_from_env", {"factory": True}
        self.config = uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            log_level="info",
            workers=settings.api_processes,
            **options,
        )
        self._server = uvicorn.Server(self.config)

    def run(self) -> None:
        """Serve until stopped (see `_StopRequest`), then return normally."""
        try:
            if self.settings.api_processes == 1:
                self._server.run()
            else:
                self._run_processes()
        except SystemExit as exc:  # uvicorn exits when it cannot start (e.g. the port is taken)
            if exc.code:
                fail(f"the API server could not start on {self.config.host}:{self.config.port}")

    def stop(self) -> None:
        self._stopping = True
        self._server.should_exit = True
        if self._supervisor is not None:
            self._supervisor.should_exit.set()

    def _run_processes(self) -> None:
        from uvicorn.supervisors import Multiprocess

        from proctor.metrics import METRICS_DIR_ENV

        metrics = self.settings.home / "run" / f"api-metrics-{os.getpid()}"
        shutil.rmtree(metrics, ignore_errors=True)
        metrics.mkdir(parents=True)
        os.environ[METRICS_DIR_ENV] = str(metrics)  # the processes inherit it
        try:
            listener = self.config.bind_socket()
        except (OSError, SystemExit):  # uvicorn logs why it cannot bind, then exits
            shutil.rmtree(metrics, ignore_errors=True)
            raise SystemExit(1) from None
        # The connections accepted on it inherit this (Linux). asyncio sets it only on
        # sockets it knows to be TCP, which a socket handed to another process is not:
        # without it, a small answer waits for the client's delayed ACK, about 40 ms.
        listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # Installs its own SIGINT/SIGTERM handlers: `_StopRequest` no longer sees them.
        self._supervisor = Multiprocess(self.config, sockets=[listener])
        self._note_signals()
        if self._stopping:
            self._supervisor.should_exit.set()
        try:
            self._supervisor.run()
        finally:
            listener.close()
            shutil.rmtree(metrics, ignore_errors=True)
        self.signalled = self.signalled or not self._stopping

    def _note_signals(self) -> None:
        """Remember a SIGINT or SIGTERM, then hand it to the supervisor's handler.

        Ctrl-C in a terminal reaches `up`'s worker as well: when the worker exits first,
        its watch stops the server before the supervisor acts on the signal, and only
        this says that the stop was asked for.
        """
        for signum in (signal.SIGINT, signal.SIGTERM):
            supervisors = signal.getsignal(signum)

            def noted(
                received: int, frame: FrameType | None, supervisors: Any = supervisors
            ) -> None:
                self.signalled = True
                if callable(supervisors):
                    supervisors(received, frame)

            signal.signal(signum, noted)


@app.command()
def serve(
    host: HostOption = None, port: PortOption = None, processes: ProcessesOption = None
) -> None:
    """Run the API server only (for scale-out: workers run elsewhere)."""
    setup_logging()
    server = ApiServer(load_settings(host, port, processes))
    _StopRequest.install(server)
    server.run()


@app.command()
def worker() -> None:
    """Run a worker: claim queued jobs and run them until SIGTERM or SIGINT."""
    from proctor.worker import run_worker

    setup_logging()
    with errors():
        run_worker(load_settings())


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply database migrations (creates the database if needed)."""
    from proctor import db

    settings = load_settings()
    with errors():
        db.upgrade(settings)
    err.print(f"database at the newest schema: {settings.shown()['database_url']}", markup=False)


@user_app.command("add")
def user_add(
    name: Annotated[str, typer.Argument(help="The new user's name.")],
    admin: Annotated[bool, typer.Option("--admin", help="May see and cancel every job.")] = False,
    save: Annotated[
        bool, typer.Option("--save", help="Write the token to the credentials file.")
    ] = False,
) -> None:
    """Create a user and print its token (shown once, alone on the last line)."""
    from proctor import db, users

    settings = load_settings()
    path = settings.credentials_path
    with errors():
        db.upgrade(settings)
        token = users.add_user(settings, name, admin=admin)
        secret = users.webhook_secret(settings, name)
    err.print(f"created {'admin ' if admin else ''}user {name!r}", markup=False)
    if save or not path.exists():
        url = api_client.service_url(settings.host, settings.port)
        try:
            api_client.write_credentials(path, Credentials(url, token, name))
            err.print(f"token saved to {path}", markup=False)
        except OSError as exc:  # the token is printed below all the same
            err.print(f"[yellow]warning:[/yellow] cannot save the token: {escape(str(exc))}")
    err.print("webhook secret (verifies X-Proctor-Signature; not shown again):", markup=False)
    print(secret, flush=True)
    err.print("keep this token; it is not shown again:")
    print(token, flush=True)


@config_app.command("show")
def config_show(as_json: JsonOption = False) -> None:
    """Print the effective configuration, secrets masked."""
    values = load_settings().shown()
    if as_json:
        print_json(values)
    else:
        out.print(render.settings_table(values))
