"""Commands for signed results and webhooks: `result`, `verify`, `webhook-secret rotate`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from proctor import exceptions, render
from proctor.cli.base import (
    EXIT_FAILED,
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
    webhook_app,
)


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

    signed = call(url, token, lambda client: client.result(job_id))
    if output is not None:
        try:
            output.write_text(json.dumps(signed, indent=2, sort_keys=True) + "\n")
        except OSError as exc:
            fail(f"cannot write {output}: {exc.strerror}")
        err.print(f"saved the signed result of job {job_id} to {output}", markup=False)
    if as_json:
        print_json(signed)
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
        fail(f"cannot read {file}: {exc}")
    with errors():
        if public_key is not None:
            try:
                key = signing.PublicKey.from_pem(public_key.read_bytes())
            except OSError as exc:
                fail(f"cannot read {public_key}: {exc.strerror}")
        else:
            served = call(url, token, lambda client: client.signing_key())
            key = signing.PublicKey.from_pem(str(served["public_key_pem"]).encode())
    try:
        record = results.verify(document, key)
    except exceptions.InvalidSignature as exc:
        if as_json:
            print_json({"valid": False, "error": exc.message})
        err.print(f"[red]NOT VERIFIED:[/red] {escape(exc.message)}", highlight=False)
        exit_with_outcome(EXIT_FAILED)
    if as_json:
        print_json({"valid": True, "key_id": key.key_id, "record": record})
        return
    out.print(render.proof_table(results.describe(record), verified=True))


@webhook_app.command("rotate")
def webhook_secret_rotate(url: UrlOption = None, token: TokenOption = None) -> None:
    """Replace your webhook secret and print the new one (shown once, on the last line)."""
    secret = call(url, token, lambda client: client.rotate_webhook_secret())
    err.print("new webhook secret; the old one no longer signs webhooks:", markup=False)
    print(secret, flush=True)
