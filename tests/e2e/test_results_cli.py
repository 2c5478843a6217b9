"""`proctor result`, `proctor verify`, `user add` and batch `submit` as subprocesses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from proctor import results, signing

from .conftest import ROOT, Service, cli_env, free_port, run_cli

RECEIVER = ROOT / "scripts" / "webhook-receiver.py"
RECEIVER_SECONDS = 60

RECORD: dict[str, Any] = {
    "format": results.RECORD_FORMAT,
    "job_id": "0190abcdef0000aabbccddeeff",
    "owner": "alice",
    "image_id": "sha256:" + "ab" * 32,
    "dataset": "cancer",
    "dataset_hash": "sha256:" + "cd" * 32,
    "sandbox": {"network": "none", "memory_bytes": 268435456},
    "performance": 0.8731,
    "metrics": {"auc": 0.91},
    "exit_code": 0,
    "finished_at": "2026-11-29T05:00:00+00:00",
}


def signed_files(tmp_path: Path) -> tuple[Path, Path]:
    """A saved signed result and the PEM of the key that signed it."""
    key = signing.load_or_create(tmp_path / "signing-key.pem")
    record = {**RECORD, "key_id": key.public.key_id}
    saved = tmp_path / "result.json"
    saved.write_text(json.dumps({"record": record, "signature": key.sign(record)}, indent=2))
    public = tmp_path / "public.pem"
    public.write_text(key.public.pem)
    return saved, public


def test_cli_verify_offline_says_what_the_record_proves(tmp_path: Path) -> None:
    saved, public = signed_files(tmp_path)

    result = run_cli("verify", str(saved), "--public-key", str(public), env=cli_env(tmp_path))

    assert result.returncode == 0, result.stderr
    for shown in (
        "VERIFIED",
        RECORD["job_id"],
        "alice",
        "cancer",
        RECORD["dataset_hash"],
        "0.8731",
        "memory_bytes=268435456",
        "2026-11-29T05:00:00",
    ):
        assert shown in result.stdout


def test_cli_verify_fails_on_a_tampered_file(tmp_path: Path) -> None:
    saved, public = signed_files(tmp_path)
    document = json.loads(saved.read_text())
    document["record"]["performance"] = 0.99
    saved.write_text(json.dumps(document))

    result = run_cli("verify", str(saved), "--public-key", str(public), env=cli_env(tmp_path))

    assert result.returncode == 1
    assert "NOT VERIFIED" in result.stderr and "does not match" in result.stderr
    assert "VERIFIED" not in result.stdout


def test_cli_verify_of_a_file_that_is_not_a_result_exits_1(tmp_path: Path) -> None:
    _, public = signed_files(tmp_path)
    other = tmp_path / "other.json"
    other.write_text('{"perf": 1}')

    result = run_cli("verify", str(other), "--public-key", str(public), env=cli_env(tmp_path))

    assert result.returncode == 1
    assert "proctor result ID -o FILE" in result.stderr


def test_cli_result_saved_verifies_against_the_served_key_and_offline(
    service: Service, tmp_path: Path
) -> None:
    submitted = service.cli("submit", "examples/busybox", "--wait", "--json")
    assert submitted.returncode == 0, submitted.stderr
    job = json.loads(submitted.stdout)
    saved = tmp_path / "result.json"

    fetched = service.cli("result", job["id"], "-o", str(saved))
    online = service.cli("verify", str(saved))
    public = tmp_path / "public.pem"
    public.write_text(signing.load_or_create(service.home / "signing-key.pem").public.pem)
    offline = run_cli("verify", str(saved), "--public-key", str(public), env=cli_env(tmp_path))

    assert fetched.returncode == 0, fetched.stderr
    assert json.loads(saved.read_text())["record"]["job_id"] == job["id"]
    assert online.returncode == 0, online.stderr
    assert offline.returncode == 0, offline.stderr
    assert job["id"] in offline.stdout and job["image_id"] in offline.stdout


def test_cli_user_add_prints_the_webhook_secret_before_the_token(service: Service) -> None:
    added = service.cli("user", "add", "carol")

    assert added.returncode == 0, added.stderr
    *_, secret, token = added.stdout.strip().splitlines()
    assert secret.startswith("whsec_") and token.startswith("pct_")
    rotated = service.cli("webhook-secret", "rotate", env={"PROCTOR_TOKEN": token})
    assert rotated.returncode == 0, rotated.stderr
    new_secret = rotated.stdout.strip().splitlines()[-1]
    assert new_secret.startswith("whsec_") and new_secret != secret


def test_cli_submit_several_paths_is_one_batch_in_order(service: Service, tmp_path: Path) -> None:
    broken = tmp_path / "Dockerfile"
    broken.write_text("FROM proctor/busybox:latest\nNOT_AN_INSTRUCTION x\n")

    result = service.cli("submit", "examples/busybox", str(broken), "examples/busybox")

    assert result.returncode == 3
    ids = result.stdout.split()
    assert len(ids) == 2 and ids[0] < ids[1]
    assert "rejected:" in result.stderr and str(broken) in result.stderr


def test_cli_webhook_reaches_the_standalone_receiver_verified(service: Service) -> None:
    added = service.cli("user", "add", "dave")
    *_, secret, token = added.stdout.strip().splitlines()
    port = free_port()
    receiver = subprocess.Popen(
        [sys.executable, str(RECEIVER), "--port", str(port), "--secret", secret, "--once"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        hook = f"http://127.0.0.1:{port}/hook"
        submitted = service.cli(
            "submit",
            "examples/busybox",
            "--callback-url",
            hook,
            "--wait",
            env={"PROCTOR_TOKEN": token},
        )
        assert submitted.returncode == 0, submitted.stderr
        output, _ = receiver.communicate(timeout=RECEIVER_SECONDS)
    finally:
        if receiver.poll() is None:
            receiver.kill()
            receiver.wait()

    assert receiver.returncode == 0
    assert "signature: VERIFIED" in output and "event:     job.succeeded" in output
