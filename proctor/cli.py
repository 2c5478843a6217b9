"""The `proctor` command: run the service (up, serve, worker) and use it (submit, status…).

The client commands are HTTP clients of the API (`proctor.client`); only the
service commands touch the database. Exit codes: 0 success, 1 the job failed,
2 it was cancelled, 3 a client or usage error, 130 interrupted.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from proctor import __version__, exceptions, jobs, render
from proctor import client as api_client
from proctor.client import Client, ClientError, Credentials
from proctor.config import Settings, get_settings

if TYPE_CHECKING:
    import uvicorn

PROG_NAME = "proctor"
app = typer.Typer(
    name=PROG_NAME,
    help="Evaluate untrusted ML submissions in a locked-down Docker sandbox.",
    no_args_is_help=True,
    add_completion=False,
    # A traceback's locals would print tokens: never show them.
    pretty_exceptions_show_locals=False,
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
user_app = typer.Typer(help="Users and tokens.", no_args_is_help=True)
config_app = typer.Typer(help="Configuration.", no_args_is_help=True)
webhook_app = typer.Typer(help="The secret that signs your webhooks.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(webhook_app, name="webhook-secret")
app.add_typer(user_app, name="user")
app.add_typer(config_app, name="config")

out = Console()
err = Console(stderr=True)

EXIT_FAILED = 1
EXIT_CANCELLED = 2
EXIT_ERROR = 3
EXIT_INTERRUPTED = 130
CLICK_USAGE_EXIT = 2
WORKER_STOP_GRACE_SECONDS = 30.0  # after the drain period, for cleanup
ADMIN_NAME = "admin"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

T = TypeVar("T")

UrlOption = Annotated[
    str | None, typer.Option("--url", envvar="PROCTOR_URL", help="proctor server URL.")
]
TokenOption = Annotated[
    str | None,
    typer.Option("--token", envvar="PROCTOR_TOKEN", help="API token.", show_default=False),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
HostOption = Annotated[
    str | None, typer.Option("--host", envvar="PROCTOR_HOST", help="Address to listen on.")
]
PortOption = Annotated[
    int | None,
    typer.Option("--port", envvar="PROCTOR_PORT", min=1, max=65535, help="Port to listen on."),
]
JobId = Annotated[str, typer.Argument(help="A job id, as `submit` and `list` print it.")]


def main() -> None:
    """Run the CLI. Click exits 2 on a usage error, but 2 means "cancelled" here: make it 3."""
    try:
        app(prog_name=PROG_NAME)
    except SystemExit as exc:
        if exc.code == CLICK_USAGE_EXIT and not _outcome.reported:
            raise SystemExit(EXIT_ERROR) from None
        raise


class _Outcome:
    """Set when a command exits with a job's outcome, so main() leaves that code alone."""

    reported = False


def _exit_with_outcome(code: int) -> NoReturn:
    _outcome.reported = True
    raise typer.Exit(code)


_outcome = _Outcome()


# --- shared plumbing ---------------------------------------------------------------------


def _fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@contextmanager
def _errors() -> Iterator[None]:
    """Turn proctor's errors into one red line and exit code 3, never a traceback."""
    try:
        yield
    except ClientError as exc:
        # The code lets scripts and users tell "not_found" from "unauthorized" at a glance.
        _fail(f"{exc.message} ({exc.code})" if exc.status else exc.message)
    except exceptions.ProctorError as exc:
        _fail(exc.message)


def _settings(host: str | None = None, port: int | None = None) -> Settings:
    try:
        settings = get_settings()
    except ValueError as exc:  # pydantic's ValidationError names every bad setting
        _fail(f"invalid configuration: {exc}")
    updates = {key: value for key, value in (("host", host), ("port", port)) if value is not None}
    return settings.model_copy(update=updates) if updates else settings


def _call(url: str | None, token: str | None, action: Callable[[Client], T]) -> T:
    """Run ACTION with a client of the resolved server; errors exit 3."""
    with _errors(), api_client.connect(_settings(), url, token) as client:
        return action(client)


def _print_json(value: Any) -> None:
    out.print_json(json.dumps(value))


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)


# --- running the service ---------------------------------------------------------------


@app.command()
def up(host: HostOption = None, port: PortOption = None) -> None:
    """Run the API and a worker together on this machine (the embedded default)."""
    from proctor import db

    _setup_logging()
    settings = _settings(host, port)
    url = api_client.service_url(settings.host, settings.port)
    with _errors():
        db.upgrade(settings)
        _ensure_admin_credentials(settings, url)
    server = _server(settings)
    stop = _StopRequest.install(server)
    worker = _start_worker(settings)
    worker_died = _watch_worker(worker, server)
    err.print(
        render.banner(__version__, url, str(settings.credentials_path), _client_env(settings))
    )
    try:
        _run_server(server)
    finally:
        _stop_worker(worker, settings.worker_drain_seconds + WORKER_STOP_GRACE_SECONDS)
    # Ctrl-C in a terminal reaches the worker too, and it may exit first: not a crash.
    if worker_died.is_set() and not stop.requested:
        _fail(f"the worker exited unexpectedly with code {worker.returncode}", EXIT_FAILED)


class _StopRequest:
    """A SIGINT/SIGTERM handler that stops the server and remembers it was asked to.

    uvicorn installs its own handlers while it serves and, once stopped, re-raises the
    signal it got: this handler then sees it, so a requested stop is a clean exit and
    `up` still gets to stop its worker. Before uvicorn serves, it stops it early.
    """

    def __init__(self, server: uvicorn.Server) -> None:
        self.server = server
        self.requested = False

    def __call__(self, _signum: int, _frame: FrameType | None) -> None:
        self.requested = True
        self.server.should_exit = True

    @classmethod
    def install(cls, server: uvicorn.Server) -> _StopRequest:
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


def _watch_worker(worker: subprocess.Popen[bytes], server: uvicorn.Server) -> threading.Event:
    """Stop the server when the worker exits; the returned event says it did."""
    died = threading.Event()

    def watch() -> None:
        worker.wait()
        died.set()
        server.should_exit = True

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


def _server(settings: Settings) -> uvicorn.Server:
    import uvicorn

    from proctor.api.app import create_app

    config = uvicorn.Config(
        create_app(settings), host=settings.host, port=settings.port, log_level="info"
    )
    return uvicorn.Server(config)


def _run_server(server: uvicorn.Server) -> None:
    """Serve until stopped (see `_StopRequest`), then return normally."""
    try:
        server.run()
    except SystemExit as exc:  # uvicorn exits when it cannot start (e.g. the port is taken)
        if exc.code:
            _fail(f"the API server could not start on {server.config.host}:{server.config.port}")


@app.command()
def serve(host: HostOption = None, port: PortOption = None) -> None:
    """Run the API server only (for scale-out: workers run elsewhere)."""
    _setup_logging()
    server = _server(_settings(host, port))
    _StopRequest.install(server)
    _run_server(server)


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
    from proctor import db

    settings = _settings()
    with _errors():
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

    settings = _settings()
    path = settings.credentials_path
    with _errors():
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
    values = _settings().shown()
    if as_json:
        _print_json(values)
    else:
        out.print(render.settings_table(values))


# --- using the service -------------------------------------------------------------------


@app.command()
def submit(
    paths: Annotated[
        list[Path],
        typer.Argument(help="A Dockerfile, a .tar/.tar.gz or a directory; several make one batch."),
    ],
    dataset: Annotated[str | None, typer.Option(help="Server-side dataset name.")] = None,
    timeout: Annotated[
        float | None, typer.Option(help="Run time limit, seconds (at most the server's maximum).")
    ] = None,
    name: Annotated[str | None, typer.Option(help="A label for the job.")] = None,
    callback_url: Annotated[
        str | None, typer.Option(help="POSTed the job JSON, signed, once it is final.")
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Follow the job until it ends.")] = False,
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Submit a job; with --wait, exit 0 only if it succeeded (1 failed, 2 cancelled).

    Several paths are sent as one batch: one line per path, in order, with its job id
    or its error; exit 3 if any was rejected.
    """
    if len(paths) > 1:
        if wait:
            _fail("--wait follows one job: submit one path, or wait on each id afterwards")
        fields = {
            "dataset": dataset,
            "timeout": timeout,
            "name": name,
            "callback_url": callback_url,
        }
        _submit_batch(
            paths, {k: v for k, v in fields.items() if v is not None}, as_json, url, token
        )
        return
    [path] = paths
    data, filename = _read_submission(path)

    def send(client: Client) -> dict[str, Any]:
        job = client.submit(
            data,
            filename=filename,
            dataset=dataset,
            timeout=timeout,
            name=name,
            callback_url=callback_url,
        )
        if wait:
            err.print(f"submitted job {job['id']}", markup=False, highlight=False)
            return _wait(client, job)
        return job

    job = _call(url, token, send)
    if as_json:
        _print_json(job)
    elif wait:
        out.print(render.outcome_line(job), highlight=False, soft_wrap=True)
    else:
        print(job["id"])
    if wait:
        _exit_with_outcome(_exit_code(job))


def _submit_batch(
    paths: list[Path],
    fields: dict[str, Any],
    as_json: bool,
    url: str | None,
    token: str | None,
) -> None:
    uploads = [_read_submission(path) for path in paths]
    entries = [fields for _ in paths]
    items = _call(
        url,
        token,
        lambda client: client.submit_batch([(name, data) for data, name in uploads], entries),
    )
    if as_json:
        _print_json(items)
    rejected = 0
    for path, item in zip(paths, items, strict=True):
        if item.get("job"):
            if not as_json:
                print(item["job"]["id"], flush=True)
        else:
            rejected += 1
            error = item.get("error") or {}
            err.print(
                f"[red]rejected:[/red] {escape(str(path))}: {escape(str(error.get('message')))} "
                f"({escape(str(error.get('code')))})",
                highlight=False,
                soft_wrap=True,
            )
    if rejected:
        raise typer.Exit(EXIT_ERROR)


def _read_submission(path: Path) -> tuple[bytes, str]:
    """The bytes to upload for PATH and the file name to send them under."""
    from proctor.context import pack_path

    with _errors():
        try:
            data = pack_path(path)
        except OSError as exc:
            raise exceptions.SubmissionError(f"cannot read {path}: {exc.strerror}") from exc
    if path.is_file():
        return data, path.name
    return data, f"{path.resolve().name or 'context'}.tar.gz"


def _wait(client: Client, job: dict[str, Any]) -> dict[str, Any]:
    """Wait for JOB to be final, showing its phase, the time spent and its latest logs."""
    from proctor import progress

    def connect() -> Client:
        return Client(client.base_url, client.token)

    try:
        return progress.wait(err, client, job, connect)
    except KeyboardInterrupt:
        err.print(f"stopped waiting; the job goes on: proctor status {job['id']}", markup=False)
        raise typer.Exit(EXIT_INTERRUPTED) from None


def _exit_code(job: dict[str, Any]) -> int:
    return {"succeeded": 0, "cancelled": EXIT_CANCELLED}.get(job["status"], EXIT_FAILED)


@app.command()
def status(
    job_id: JobId, as_json: JsonOption = False, url: UrlOption = None, token: TokenOption = None
) -> None:
    """Show one job: state, score, error, image, findings, times."""
    job = _call(url, token, lambda client: client.get_job(job_id))
    if as_json:
        _print_json(job)
    else:
        out.print(render.job_panel(job))


@app.command()
def logs(
    job_id: JobId,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Stream until final.")] = False,
    stream: Annotated[
        jobs.Stream | None, typer.Option(help="Only this stream (default: both).")
    ] = None,
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Print a job's build and run logs."""
    selected = stream.value if stream else None
    if as_json and follow:
        _fail("--json prints the logs as they are now; it cannot --follow")

    def show(client: Client) -> None:
        if as_json:
            wanted = [selected] if selected else [s.value for s in jobs.Stream]
            _print_json({"job_id": job_id, **{name: client.logs(job_id, name) for name in wanted}})
            return
        if not follow:
            text = client.logs(job_id, selected)
            # Logs of a run that printed no final newline would glue onto the shell prompt.
            sys.stdout.write(text if not text or text.endswith("\n") else text + "\n")
            return
        for chunk in client.follow_logs(job_id, selected):  # Ctrl-C: Typer exits 130
            sys.stdout.write(chunk)
            sys.stdout.flush()

    _call(url, token, show)


@app.command()
def cancel(job_id: JobId, url: UrlOption = None, token: TokenOption = None) -> None:
    """Cancel a job that has not finished (its container is killed within seconds)."""
    job = _call(url, token, lambda client: client.cancel(job_id))
    if job["status"] in jobs.FINAL_STATES:
        out.print(render.outcome_line(job), highlight=False)
    else:
        out.print(f"cancel requested for job {job_id} (it was {job['status']})", markup=False)


@app.command("list")
def list_jobs(
    status: Annotated[jobs.Status | None, typer.Option(help="Only jobs in this state.")] = None,
    limit: Annotated[
        int | None, typer.Option(min=1, help="Jobs per page (server default 50, at most 200).")
    ] = None,
    all_pages: Annotated[bool, typer.Option("--all-pages", help="Every page.")] = False,
    user: Annotated[str | None, typer.Option(help="Admins: only this user's jobs.")] = None,
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """List your jobs (an admin's: everyone's), newest first."""
    state = status.value if status else None

    def fetch(client: Client) -> list[dict[str, Any]]:
        if all_pages:
            return list(client.iter_jobs(status=state, limit=limit, user=user))
        items: list[dict[str, Any]] = client.list_jobs(status=state, limit=limit, user=user)[
            "items"
        ]
        return items

    found = _call(url, token, fetch)
    if as_json:
        _print_json(found)
    else:
        out.print(render.jobs_table(found))


@app.command()
def datasets(as_json: JsonOption = False, url: UrlOption = None, token: TokenOption = None) -> None:
    """List the datasets a job may use (--dataset NAME): size and description, never content."""
    found = _call(url, token, lambda client: client.datasets())
    if as_json:
        _print_json(found)
    else:
        out.print(render.datasets_table(found))


@app.command()
def leaderboard(
    dataset: Annotated[
        str | None, typer.Option(help="The dataset's board (default: jobs without one).")
    ] = None,
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Show each user's best succeeded job, ranked by the dataset's metric direction."""
    board = _call(url, token, lambda client: client.leaderboard(dataset))
    if as_json:
        _print_json(board)
    else:
        out.print(render.leaderboard_table(board))


@app.command()
def result(
    job_id: JobId,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Save the signed record to this file.")
    ] = None,
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Fetch a succeeded job's signed result record (keep it for `proctor verify`)."""
    from proctor import results

    signed = _call(url, token, lambda client: client.result(job_id))
    if output is not None:
        try:
            output.write_text(json.dumps(signed, indent=2, sort_keys=True) + "\n")
        except OSError as exc:
            _fail(f"cannot write {output}: {exc.strerror}")
        err.print(f"saved the signed result of job {job_id} to {output}", markup=False)
    if as_json:
        _print_json(signed)
    elif output is None:
        out.print(render.proof_table(results.describe(signed["record"]), verified=False))


@app.command()
def verify(
    file: Annotated[Path, typer.Argument(help="A result saved by `proctor result ID -o FILE`.")],
    public_key: Annotated[
        Path | None,
        typer.Option(
            "--public-key", help="PEM file of the signing key (else fetched from the server)."
        ),
    ] = None,
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Check a saved result against proctor's public key; any changed field fails (exit 1)."""
    from proctor import results, signing

    try:
        document = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        _fail(f"cannot read {file}: {exc}")
    with _errors():
        if public_key is not None:
            try:
                key = signing.PublicKey.from_pem(public_key.read_bytes())
            except OSError as exc:
                _fail(f"cannot read {public_key}: {exc.strerror}")
        else:
            served = _call(url, token, lambda client: client.signing_key())
            key = signing.PublicKey.from_pem(str(served["public_key_pem"]).encode())
    try:
        record = results.verify(document, key)
    except exceptions.InvalidSignature as exc:
        if as_json:
            _print_json({"valid": False, "error": exc.message})
        err.print(f"[red]NOT VERIFIED:[/red] {escape(exc.message)}", highlight=False)
        _exit_with_outcome(EXIT_FAILED)
    if as_json:
        _print_json({"valid": True, "key_id": key.key_id, "record": record})
        return
    out.print(render.proof_table(results.describe(record), verified=True))


@webhook_app.command("rotate")
def webhook_secret_rotate(url: UrlOption = None, token: TokenOption = None) -> None:
    """Replace your webhook secret and print the new one (shown once, on the last line)."""
    secret = _call(url, token, lambda client: client.rotate_webhook_secret())
    err.print("new webhook secret; the old one no longer signs webhooks:", markup=False)
    print(secret, flush=True)
