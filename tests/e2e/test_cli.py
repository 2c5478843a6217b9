"""The CLI and `proctor up` as a user runs them, on the real engine."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from .conftest import Service

pytestmark = pytest.mark.docker


def test_cli_submit_busybox_example_waits_and_prints_performance(service: Service) -> None:
    result = service.cli("submit", "examples/busybox", "--wait", "--name", "demo")

    assert result.returncode == 0, result.stderr
    assert "succeeded" in result.stdout
    assert "performance 0.5" in result.stdout
    job_id = result.stdout.split()[1]

    listed = service.cli("list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [job["id"] for job in json.loads(listed.stdout)] == [job_id]

    status = service.cli("status", job_id)
    assert status.returncode == 0 and "succeeded" in status.stdout and "demo" in status.stdout

    logs = service.cli("logs", job_id, "--stream", "run")
    assert "hello from the sandbox" in logs.stdout


def test_cli_numpy_model_scores_itself(service: Service) -> None:
    result = service.cli("submit", "examples/numpy-model", "--wait", "--json")

    assert result.returncode == 0, result.stderr
    job = json.loads(result.stdout)
    assert job["status"] == "succeeded"
    assert 0.7 < job["performance"] <= 1.0
    assert set(job["metrics"]) == {"log_loss", "train_seconds"}


def test_cli_failed_job_exits_nonzero_with_reason(service: Service, tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text('FROM proctor/busybox:latest\nCMD ["sh", "-c", "exit 3"]\n')

    result = service.cli("submit", str(dockerfile), "--wait")

    assert result.returncode == 1
    assert "exit_nonzero" in result.stdout


def test_cli_rejected_submission_exits_3_with_message(service: Service, tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM proctor/busybox:latest\nRUNN true\n")

    result = service.cli("submit", str(dockerfile))

    assert result.returncode == 3
    assert "line 2" in result.stderr


def test_cli_users_are_isolated_and_bad_tokens_rejected(service: Service) -> None:
    job_id = service.cli("submit", "examples/busybox").stdout.strip().splitlines()[-1]

    added = service.cli("user", "add", "bob")
    assert added.returncode == 0, added.stderr
    bob = added.stdout.strip().splitlines()[-1]

    as_bob = service.cli("status", job_id, env={"PROCTOR_TOKEN": bob})
    assert as_bob.returncode == 3
    assert "no job" in as_bob.stderr
    assert json.loads(service.cli("list", "--json", env={"PROCTOR_TOKEN": bob}).stdout) == []

    bad = service.cli("list", "--token", "nope")
    assert bad.returncode == 3
    assert "not valid" in bad.stderr


def test_cli_cancel_and_follow_logs(service: Service, tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(
        'FROM proctor/busybox:latest\nCMD ["sh", "-c", "echo begun; sleep 300"]\n'
    )
    job_id = service.cli("submit", str(dockerfile)).stdout.strip().splitlines()[-1]
    deadline = time.monotonic() + 60
    while json.loads(service.cli("status", job_id, "--json").stdout)["status"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.3)

    cancelled = service.cli("cancel", job_id)
    followed = service.cli("logs", job_id, "-f")

    assert cancelled.returncode == 0, cancelled.stderr
    assert followed.returncode == 0
    assert "begun" in followed.stdout
    assert json.loads(service.cli("status", job_id, "--json").stdout)["status"] == "cancelled"


def test_cli_config_show_masks_nothing_secret_and_names_env(service: Service) -> None:
    result = service.cli("config", "show", "--json")

    assert result.returncode == 0
    values = json.loads(result.stdout)
    assert values["home"] == str(service.home)
    assert values["run_memory"] == 256 * 1024 * 1024
