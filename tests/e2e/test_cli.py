"""The CLI and `proctor up` as a user runs them, on the real engine."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import time
from pathlib import Path

import pytest

from .conftest import ROOT, STOP_SECONDS, Service

pytestmark = pytest.mark.docker

RUNNING_SECONDS = 60
POLL_SECONDS = 0.3
BUSYBOX = "FROM proctor/busybox:latest\n"


def dockerfile(tmp_path: Path, command: str) -> Path:
    path = tmp_path / "Dockerfile"
    path.write_text(f'{BUSYBOX}CMD ["sh", "-c", {json.dumps(command)}]\n')
    return path


def wait_for_status(service: Service, job_id: str, wanted: str) -> None:
    deadline = time.monotonic() + RUNNING_SECONDS
    while True:
        result = service.cli("status", job_id, "--json")
        assert result.returncode == 0, result.stderr
        if json.loads(result.stdout)["status"] == wanted:
            return
        assert time.monotonic() < deadline, f"job {job_id} never reached {wanted}"
        time.sleep(POLL_SECONDS)


def first_job_id(service: Service) -> str:
    """The id of the (newest) job, once it has been submitted."""
    deadline = time.monotonic() + RUNNING_SECONDS
    while True:
        jobs = json.loads(service.cli("list", "--json").stdout)
        if jobs:
            return str(jobs[0]["id"])
        assert time.monotonic() < deadline, "no job was submitted"
        time.sleep(POLL_SECONDS)


def test_cli_up_saves_private_admin_credentials(service: Service) -> None:
    path = service.home / "credentials.json"

    saved = json.loads(path.read_text())

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert saved["url"] == service.url and saved["user"] == "admin"
    assert service.cli("list").returncode == 0  # the saved token is the one clients use
    assert "/docs" in service.log() and str(path) in service.log()


def test_cli_submit_busybox_example_waits_and_prints_performance(service: Service) -> None:
    result = service.cli("submit", "examples/busybox", "--wait", "--name", "demo")

    assert result.returncode == 0, result.stderr
    assert "succeeded" in result.stdout
    assert "performance 0.5" in result.stdout
    assert "runtime_s 0" in result.stdout
    job_id = result.stdout.split()[1]
    assert f"submitted job {job_id}" in result.stderr

    listed = service.cli("list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [job["id"] for job in json.loads(listed.stdout)] == [job_id]
    table = service.cli("list")
    assert job_id in table.stdout and "demo" in table.stdout and "0.5" in table.stdout

    status = service.cli("status", job_id)
    assert status.returncode == 0, status.stderr
    for shown in ("succeeded", "demo", "0.5", "sha256:", "attempts"):
        assert shown in status.stdout

    logs = service.cli("logs", job_id, "--stream", "run")
    assert logs.returncode == 0, logs.stderr
    assert "hello from the sandbox" in logs.stdout


def test_cli_numpy_model_scores_itself(service: Service) -> None:
    result = service.cli("submit", "examples/numpy-model", "--wait", "--json")

    assert result.returncode == 0, result.stderr
    job = json.loads(result.stdout)
    assert job["status"] == "succeeded"
    assert 0.7 < job["performance"] <= 1.0
    assert set(job["metrics"]) == {"log_loss", "train_seconds"}


def test_cli_dataset_model_scores_and_tops_the_leaderboard(service: Service) -> None:
    shutil.copytree(
        ROOT / "examples" / "datasets" / "breast-cancer",
        service.home / "datasets" / "breast-cancer",
    )

    listed = json.loads(service.cli("datasets", "--json").stdout)
    table = service.cli("datasets").stdout
    result = service.cli(
        "submit", "examples/breast-cancer-model", "--dataset", "breast-cancer", "--wait"
    )
    board = json.loads(service.cli("leaderboard", "--dataset", "breast-cancer", "--json").stdout)
    board_table = service.cli("leaderboard", "--dataset", "breast-cancer").stdout
    logs = json.loads(service.cli("logs", board["entries"][0]["job_id"], "--json").stdout)

    assert [(d["name"], d["files"], d["direction"]) for d in listed] == [
        ("breast-cancer", 2, "higher")
    ]
    assert "breast-cancer" in table and "higher first" in table
    assert result.returncode == 0, result.stderr
    assert "performance 0.9" in result.stdout and "auc" in result.stdout
    job_id = result.stdout.split()[1]
    assert [(e["rank"], e["user"], e["job_id"]) for e in board["entries"]] == [(1, "admin", job_id)]
    assert "admin" in board_table and job_id in board_table
    assert set(logs) == {"job_id", "build", "run"}
    assert "test accuracy" in logs["run"] and "Successfully built" in logs["build"]


def test_cli_failed_job_exits_1_with_reason(service: Service, tmp_path: Path) -> None:
    result = service.cli("submit", str(dockerfile(tmp_path, "exit 3")), "--wait")

    assert result.returncode == 1, result.stderr
    assert "failed" in result.stdout
    assert "exit_nonzero" in result.stdout
    assert "exit code 3" in result.stdout


def test_cli_rejected_submission_exits_3_with_message(service: Service, tmp_path: Path) -> None:
    path = tmp_path / "Dockerfile"
    path.write_text(f"{BUSYBOX}RUNN true\n")

    result = service.cli("submit", str(path))

    assert result.returncode == 3
    assert result.stderr.startswith("error:")
    assert "line 2" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_users_are_isolated_and_bad_tokens_rejected(service: Service) -> None:
    submitted = service.cli("submit", "examples/busybox")
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()

    added = service.cli("user", "add", "bob")
    assert added.returncode == 0, added.stderr
    bob = added.stdout.strip().splitlines()[-1]
    assert bob and " " not in bob
    # The admin's saved credentials stay: bob's token was only printed.
    assert json.loads((service.home / "credentials.json").read_text())["user"] == "admin"

    as_bob = service.cli("status", job_id, env={"PROCTOR_TOKEN": bob})
    assert as_bob.returncode == 3
    assert "not_found" in as_bob.stderr
    mine = service.cli("list", "--json", env={"PROCTOR_TOKEN": bob})
    assert mine.returncode == 0, mine.stderr
    assert json.loads(mine.stdout) == []

    again = service.cli("user", "add", "bob")
    assert again.returncode == 3 and "already exists" in again.stderr

    bad = service.cli("list", "--token", "nope")
    assert bad.returncode == 3
    assert "not valid" in bad.stderr and "unauthorized" in bad.stderr


def test_cli_cancel_stops_a_running_job_and_follow_ends(service: Service, tmp_path: Path) -> None:
    path = dockerfile(tmp_path, "echo begun; sleep 300")
    job_id = service.cli("submit", str(path)).stdout.strip()
    wait_for_status(service, job_id, "running")

    cancelled = service.cli("cancel", job_id)
    followed = service.cli("logs", job_id, "-f")

    assert cancelled.returncode == 0, cancelled.stderr
    assert job_id in cancelled.stdout
    assert followed.returncode == 0, followed.stderr
    assert "begun" in followed.stdout
    final = json.loads(service.cli("status", job_id, "--json").stdout)
    assert final["status"] == "cancelled"
    assert final["error"]["code"] == "cancelled"

    again = service.cli("cancel", job_id)
    assert again.returncode == 3 and "conflict" in again.stderr


def test_cli_submit_wait_exits_2_when_the_job_is_cancelled(
    service: Service, tmp_path: Path
) -> None:
    path = dockerfile(tmp_path, "sleep 300")

    with service.spawn("submit", str(path), "--wait", "--json") as waiter:
        wait_for_status(service, first_job_id(service), "running")
        assert service.cli("cancel", first_job_id(service)).returncode == 0
        stdout, stderr = waiter.communicate(timeout=RUNNING_SECONDS)

    assert waiter.returncode == 2, stderr
    assert json.loads(stdout)["status"] == "cancelled"


def test_cli_config_show_names_env_and_masks_secrets(service: Service) -> None:
    env = {
        "PROCTOR_RUN_MEMORY": "256m",
        "PROCTOR_DATABASE_URL": "postgresql+psycopg://proctor:hunter2@db/proctor",
    }

    as_json = service.cli("config", "show", "--json", env=env)
    table = service.cli("config", "show", env=env)

    assert as_json.returncode == 0, as_json.stderr
    values = json.loads(as_json.stdout)
    assert values["home"] == str(service.home)
    assert values["run_memory"] == 256 * 1024 * 1024
    assert "hunter2" not in as_json.stdout and "hunter2" not in table.stdout
    assert "PROCTOR_RUN_MEMORY" in table.stdout


def test_cli_up_exits_nonzero_when_its_worker_dies(service: Service) -> None:
    (worker,) = service.children()

    os.kill(worker, signal.SIGKILL)
    code = service.process.wait(STOP_SECONDS)
    service.stopped = True

    assert code == 1
    assert "the worker exited unexpectedly" in service.log()


def test_cli_up_stops_its_worker_on_sigterm(service: Service) -> None:
    (worker,) = service.children()

    code = service.stop(signal.SIGTERM)

    assert code == 0, service.log()
    with pytest.raises(ProcessLookupError):
        os.kill(worker, 0)


def test_cli_up_exits_0_on_ctrl_c_in_a_terminal(service: Service) -> None:
    (worker,) = service.children()

    code = service.stop(signal.SIGINT, group=True)  # the worker gets the SIGINT as well

    assert code == 0, service.log()
    assert "exited unexpectedly" not in service.log()
    with pytest.raises(ProcessLookupError):
        os.kill(worker, 0)
