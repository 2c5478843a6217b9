"""Commands that use the service: submit, follow and read jobs; datasets, the leaderboard."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from proctor import exceptions, jobs, render
from proctor.cli.base import (
    EXIT_CANCELLED,
    EXIT_ERROR,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    JobId,
    JsonOption,
    TokenOption,
    UrlOption,
    app,
    call,
    err,
    errors,
    exit_with_outcome,
    fail,
    out,
    print_json,
)
from proctor.client import Client


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
            fail("--wait follows one job: submit one path, or wait on each id afterwards")
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

    job = call(url, token, send)
    if as_json:
        print_json(job)
    elif wait:
        out.print(render.outcome_line(job), highlight=False, soft_wrap=True)
    else:
        print(job["id"])
    if wait:
        exit_with_outcome(_exit_code(job))


def _submit_batch(
    paths: list[Path],
    fields: dict[str, Any],
    as_json: bool,
    url: str | None,
    token: str | None,
) -> None:
    uploads = [_read_submission(path) for path in paths]
    entries = [fields for _ in paths]
    items = call(
        url,
        token,
        lambda client: client.submit_batch([(name, data) for data, name in uploads], entries),
    )
    if as_json:
        print_json(items)
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

    with errors():
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
    job = call(url, token, lambda client: client.get_job(job_id))
    if as_json:
        print_json(job)
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
        fail("--json prints the logs as they are now; it cannot --follow")

    def show(client: Client) -> None:
        if as_json:
            wanted = [selected] if selected else [s.value for s in jobs.Stream]
            print_json({"job_id": job_id, **{name: client.logs(job_id, name) for name in wanted}})
            return
        if not follow:
            text = client.logs(job_id, selected)
            # Logs of a run that printed no final newline would glue onto the shell prompt.
            sys.stdout.write(text if not text or text.endswith("\n") else text + "\n")
            return
        for chunk in client.follow_logs(job_id, selected):  # Ctrl-C: Typer exits 130
            sys.stdout.write(chunk)
            sys.stdout.flush()

    call(url, token, show)


@app.command()
def cancel(job_id: JobId, url: UrlOption = None, token: TokenOption = None) -> None:
    """Cancel a job that has not finished (its container is killed within seconds)."""
    job = call(url, token, lambda client: client.cancel(job_id))
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

    found = call(url, token, fetch)
    if as_json:
        print_json(found)
    else:
        out.print(render.jobs_table(found))


@app.command()
def datasets(as_json: JsonOption = False, url: UrlOption = None, token: TokenOption = None) -> None:
    """List the datasets a job may use (--dataset NAME): size and description, never content."""
    found = call(url, token, lambda client: client.datasets())
    if as_json:
        print_json(found)
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
    board = call(url, token, lambda client: client.leaderboard(dataset))
    if as_json:
        print_json(board)
    else:
        out.print(render.leaderboard_table(board))
