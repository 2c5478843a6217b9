"""The whole path on the real engine: each outcome and error code reached by a real container."""

from __future__ import annotations

import time

import docker
import pytest

from proctor.engine import JOB_LABEL
from proctor.worker import Worker

from ..conftest import SettingsFactory
from .conftest import (
    Api,
    ApiFactory,
    StackFactory,
    WorkerFactory,
    containers_of,
    dockerfile,
    managed_images,
    wait_for_sandbox,
)

pytestmark = pytest.mark.docker

WRITE_PERF = 'echo scoring; echo \'{"perf": 0.75, "auc": 0.9, "note": "x"}\' > /data/perf.json'


def test_pipeline_succeeds_with_performance_and_metrics(
    api: Api, worker: Worker, docker_client: docker.DockerClient
) -> None:
    job = api.run(dockerfile(WRITE_PERF))

    assert job["status"] == "succeeded", job
    assert job["performance"] == 0.75
    assert job["metrics"] == {"auc": 0.9}
    assert job["error"] is None
    assert job["exit_code"] == 0
    assert job["image_id"].startswith("sha256:")
    assert job["attempts"] == 1
    assert set(job["timeline"]) == {"queued", "building", "scanning", "running", "succeeded"}
    assert job["sandbox"]["network"] == "none"
    assert job["sandbox"]["read_only_rootfs"] is True
    logs = api.get(f"/api/v1/jobs/{job['id']}/logs?stream=run").text
    assert "scoring" in logs
    assert containers_of(docker_client, job["id"]) == []
    assert managed_images(docker_client, job["id"]) == []
    # The phase histogram gets the job's phases within the supervisor's next round.
    deadline = time.monotonic() + 10
    while not _phases_counted(api) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _phases_counted(api)


def _phases_counted(api: Api) -> bool:
    metrics = api.get("/metrics").text
    return all(
        f'proctor_job_phase_seconds_count{{phase="{phase}"}} 1.0' in metrics
        for phase in ("building", "scanning", "running")
    )


def test_pipeline_runs_as_unprivileged_user_on_read_only_root(api: Api, worker: Worker) -> None:
    script = (
        'echo "uid=$(id -u)"; touch /rootfs-write 2>/dev/null && echo rootfs-writable; '
        "touch /tmp/ok && echo tmp-writable; "
        "echo '{\"perf\": 1}' > /data/perf.json"
    )
    job = api.run(dockerfile(script))

    assert job["status"] == "succeeded", job
    logs = api.get(f"/api/v1/jobs/{job['id']}/logs?stream=run").text
    assert "uid=65534" in logs
    assert "rootfs-writable" not in logs
    assert "tmp-writable" in logs


def test_pipeline_has_no_network(api: Api, worker: Worker) -> None:
    script = (
        'ip -o link | grep -v " lo:" | wc -l > /data/n; '
        'echo "{\\"perf\\": $(cat /data/n)}" > /data/perf.json'
    )
    job = api.run(dockerfile(script))

    assert job["status"] == "succeeded", job
    assert job["performance"] == 0  # only the loopback interface exists


def test_pipeline_build_failed_names_the_instruction(api: Api, worker: Worker) -> None:
    job = api.run("FROM proctor/busybox:latest\nRUN echo before\nRUN false\nCMD true\n")

    assert job["status"] == "failed"
    assert job["error"]["code"] == "build_failed"
    assert "RUN false" in job["error"]["message"]
    assert "before" in api.get(f"/api/v1/jobs/{job['id']}/logs?stream=build").text


def test_pipeline_build_failed_when_base_image_is_absent(api: Api, worker: Worker) -> None:
    job = api.run("FROM proctor/not-here:1\nCMD true\n")

    assert job["error"]["code"] == "build_failed"
    assert "proctor/not-here:1" in job["error"]["message"]
    assert "pulling is disabled" in job["error"]["message"]


def test_pipeline_build_timeout(make_stack: StackFactory) -> None:
    api = make_stack(build_timeout=2)
    started = time.monotonic()

    job = api.run("FROM proctor/busybox:latest\nRUN sleep 60\nCMD true\n")

    assert job["error"]["code"] == "build_timeout"
    assert "2-second limit" in job["error"]["message"]
    assert time.monotonic() - started < 30


def test_pipeline_timeout_kills_the_container(
    api: Api, worker: Worker, docker_client: docker.DockerClient
) -> None:
    job = api.run(dockerfile("sleep 120"), timeout=2)

    assert job["status"] == "failed"
    assert job["error"]["code"] == "timeout"
    assert "2-second limit" in job["error"]["message"]
    assert containers_of(docker_client, job["id"]) == []


def test_pipeline_oom_killed(make_stack: StackFactory) -> None:
    api = make_stack(run_memory="32m")

    job = api.run(dockerfile("dd if=/dev/zero of=/dev/null bs=64M count=1"))

    assert job["error"]["code"] == "oom_killed", job
    assert str(32 * 1024 * 1024) in job["error"]["message"]


def test_pipeline_exit_nonzero_keeps_the_exit_code(api: Api, worker: Worker) -> None:
    job = api.run(dockerfile("echo failing >&2; exit 3"))

    assert job["error"]["code"] == "exit_nonzero"
    assert job["exit_code"] == 3
    assert "failing" in api.get(f"/api/v1/jobs/{job['id']}/logs").text


def test_pipeline_perf_missing(api: Api, worker: Worker) -> None:
    job = api.run(dockerfile("true"))

    assert job["error"]["code"] == "perf_missing"
    assert job["exit_code"] == 0


def test_pipeline_cancel_running_job_removes_container_within_seconds(
    api: Api, worker: Worker, docker_client: docker.DockerClient
) -> None:
    job_id = api.submit_ok(dockerfile("echo started; sleep 300"))["id"]
    api.wait(job_id, {"running"})
    wait_for_sandbox(docker_client, job_id, timeout=30)

    cancelled_at = time.monotonic()
    response = api.post(f"/api/v1/jobs/{job_id}/cancel")
    assert response.status_code == 202
    job = api.wait(job_id, timeout=30)

    assert job["status"] == "cancelled"
    assert job["error"]["code"] == "cancelled"
    while containers_of(docker_client, job_id):
        assert time.monotonic() - cancelled_at < 10, "container still there 10 s after cancel"
        time.sleep(0.1)


def test_pipeline_stores_a_lone_line_while_the_job_still_runs(api: Api, worker: Worker) -> None:
    # One line, then silence: the line must not wait for more output (or the end) to be stored.
    job_id = api.submit_ok(dockerfile("echo only-line; sleep 300"))["id"]
    api.wait(job_id, {"running"})
    deadline = time.monotonic() + 15
    while "only-line" not in api.get(f"/api/v1/jobs/{job_id}/logs?stream=run").text:
        assert time.monotonic() < deadline, "the line was not stored while the job ran"
        time.sleep(0.2)

    assert api.job(job_id)["status"] == "running"
    assert api.post(f"/api/v1/jobs/{job_id}/cancel").status_code == 202
    assert api.wait(job_id, timeout=30)["status"] == "cancelled"


def test_pipeline_cancel_during_build(api: Api, worker: Worker) -> None:
    job_id = api.submit_ok("FROM proctor/busybox:latest\nRUN sleep 300\nCMD true\n")["id"]
    api.wait(job_id, {"building"})
    time.sleep(1)

    assert api.post(f"/api/v1/jobs/{job_id}/cancel").status_code == 202
    job = api.wait(job_id, timeout=30)

    assert job["status"] == "cancelled"


def test_pipeline_internal_when_engine_unreachable(make_stack: StackFactory) -> None:
    api = make_stack(docker_host="unix:///nonexistent/docker.sock")

    job = api.run(dockerfile("true"))

    assert job["error"]["code"] == "internal"
    assert "unreachable" in job["error"]["message"]


def test_pipeline_leaves_no_image_of_the_job_behind_not_even_intermediate(
    api: Api, worker: Worker, docker_client: docker.DockerClient
) -> None:
    job = api.run(dockerfile(WRITE_PERF))

    assert job["status"] == "succeeded"
    # all=True: an intermediate image is hidden from a plain list
    left = docker_client.images.list(all=True, filters={"label": f"{JOB_LABEL}={job['id']}"})
    assert left == []


def test_pipeline_keeps_image_when_asked(
    make_stack: StackFactory, docker_client: docker.DockerClient
) -> None:
    api = make_stack(keep_images=True)

    job = api.run(dockerfile(WRITE_PERF))

    assert job["status"] == "succeeded"
    images = managed_images(docker_client, job["id"])
    assert [image.id for image in images] == [job["image_id"]]
    docker_client.images.remove(job["image_id"], force=True)


def test_pipeline_runs_jobs_concurrently(make_stack: StackFactory) -> None:
    api = make_stack(worker_concurrency=2)
    script = "sleep 3; echo '{\"perf\": 1}' > /data/perf.json"
    ids = [api.submit_ok(dockerfile(script))["id"] for _ in range(2)]

    jobs = [api.wait(job_id) for job_id in ids]

    assert all(job["status"] == "succeeded" for job in jobs)
    first, second = (job["timeline"] for job in jobs)
    # Both ran at once: each started running before the other finished.
    assert first["running"] < second["succeeded"] and second["running"] < first["succeeded"]


def test_pipeline_caps_stored_logs_with_a_marker(make_stack: StackFactory) -> None:
    api = make_stack(log_max_bytes="16k")
    flood = "head -c 1000000 /dev/zero | tr '\\0' x; echo '{\"perf\": 1}' > /data/perf.json"

    job = api.run(dockerfile(flood))

    assert job["status"] == "succeeded"
    logs = api.get(f"/api/v1/jobs/{job['id']}/logs?stream=run").text
    assert len(logs.encode()) < 16 * 1024 + 200
    assert "log truncated at 16384 bytes" in logs


def test_pipeline_mounts_dataset_read_only(
    make_settings: SettingsFactory, make_api: ApiFactory, make_worker: WorkerFactory
) -> None:
    settings = make_settings()
    assert settings.datasets_dir is not None
    (settings.datasets_dir / "iris").mkdir(parents=True)
    (settings.datasets_dir / "iris" / "value.txt").write_text("0.625\n")
    api = make_api(app_settings=settings)
    make_worker(settings)
    script = (
        "touch /data/input/new 2>/dev/null && echo dataset-writable; "
        'echo "{\\"perf\\": $(cat /data/input/value.txt)}" > /data/perf.json'
    )

    job = api.run(dockerfile(script), dataset="iris")

    assert job["status"] == "succeeded", job
    assert job["dataset"] == "iris"
    assert job["performance"] == 0.625
    assert "dataset-writable" not in api.get(f"/api/v1/jobs/{job['id']}/logs?stream=run").text
