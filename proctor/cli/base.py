"""The `proctor` app, its options, exit codes and the plumbing every command shares."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from proctor import client as api_client
from proctor import exceptions
from proctor.client import Client, ClientError
from proctor.config import Settings, get_settings

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
ProcessesOption = Annotated[
    int | None,
    typer.Option(
        "--processes",
        envvar="PROCTOR_API_PROCESSES",
        min=1,
        max=64,
        help="API server processes sharing the port (about one per core).",
        show_default=False,
    ),
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


def exit_with_outcome(code: int) -> NoReturn:
    _outcome.reported = True
    raise typer.Exit(code)


_outcome = _Outcome()


# --- shared plumbing ---------------------------------------------------------------------


def fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@contextmanager
def errors() -> Iterator[None]:
    """Turn proctor's errors into one red line and exit code 3, never a traceback."""
    try:
        yield
    except ClientError as exc:
        # The code lets scripts and users tell "not_found" from "unauthorized" at a glance.
        fail(f"{exc.message} ({exc.code})" if exc.status else exc.message)
    except exceptions.ProctorError as exc:
        fail(exc.message)


def load_settings(
    host: str | None = None, port: int | None = None, processes: int | None = None
) -> Settings:
    try:
        settings = get_settings()
    except ValueError as exc:  # pydantic's ValidationError names every bad setting
        fail(f"invalid configuration: {exc}")
    flags = (("host", host), ("port", port), ("api_processes", processes))
    updates = {key: value for key, value in flags if value is not None}
    return settings.model_copy(update=updates) if updates else settings


def call(url: str | None, token: str | None, action: Callable[[Client], T]) -> T:
    """Run ACTION with a client of the resolved server; errors exit 3."""
    with errors(), api_client.connect(load_settings(), url, token) as client:
        return action(client)


def print_json(value: Any) -> None:
    out.print_json(json.dumps(value))


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
