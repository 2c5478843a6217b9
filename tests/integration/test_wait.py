"""A client waits for a job's next state in one request (`?wait=`), on a real worker and
database: the answer comes when the job changes, or when the time is up."""

from __future__ import annotations

import asyncio
import time

import pytest

from proctor import changes, db, store, users
from proctor.config import Settings
from proctor.worker import Worker

from .conftest import Api, ApiFactory, dockerfile

pytestmark = pytest.mark.docker

SCORE = "echo '{\"perf\": 0.5}' > /data/perf.json"


def test_wait_answers_once_the_job_is_final(api: Api, worker: Worker) -> None:
    job_id = api.submit_ok(dockerfile(f"sleep 1; {SCORE}"))["id"]

    job = api.get(f"/api/v1/jobs/{job_id}?wait=60").json()

    assert job["status"] == "succeeded", job
    assert job["performance"] == 0.5


def test_wait_after_answers_at_the_next_status(api: Api, worker: Worker) -> None:
    job_id = api.submit_ok(dockerfile(f"sleep 30; {SCORE}"))["id"]
    seen = ["queued"]
    while seen[-1] != "running":
        job = api.get(f"/api/v1/jobs/{job_id}", params={"wait": 60, "after": seen[-1]}).json()
        assert job["status"] != seen[-1], job
        seen.append(job["status"])

    assert seen[0] == "queued" and seen[-1] == "running"
    assert set(seen) <= {"queued", "building", "scanning", "running"}
    api.post(f"/api/v1/jobs/{job_id}/cancel")


def test_wait_runs_out_with_the_job_as_it_is(api: Api, worker: Worker) -> None:
    job_id = api.submit_ok(dockerfile("sleep 300"))["id"]
    api.wait(job_id, {"running"})

    started = time.monotonic()
    job = api.get(f"/api/v1/jobs/{job_id}?wait=1.5&after=running").json()

    assert job["status"] == "running"
    assert time.monotonic() - started >= 1.5
    assert api.post(f"/api/v1/jobs/{job_id}/cancel").status_code == 202
    assert api.get(f"/api/v1/jobs/{job_id}?wait=60").json()["status"] == "cancelled"


def test_wait_on_a_final_job_answers_at_once(api: Api, worker: Worker) -> None:
    job = api.run(dockerfile(SCORE))

    started = time.monotonic()
    again = api.get(f"/api/v1/jobs/{job['id']}?wait=60&after=succeeded").json()

    assert again["status"] == "succeeded"
    assert time.monotonic() - started < 30  # not held to the end of the wait


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("wait=61", "wait"),
        ("wait=-1", "wait"),
        ("wait=soon", "wait"),
        ("wait=5&after=done", "after"),
    ],
)
def test_wait_rejects_bad_parameters(api: Api, query: str, named: str) -> None:
    job_id = api.submit_ok(dockerfile(SCORE))["id"]

    response = api.get(f"/api/v1/jobs/{job_id}?{query}")

    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_parameter"
    assert named in response.json()["error"]["message"]


def test_wait_on_another_users_job_is_not_found(api: Api, make_api: ApiFactory) -> None:
    job_id = api.submit_ok(dockerfile(SCORE))["id"]
    other = make_api("bob")

    response = other.get(f"/api/v1/jobs/{job_id}?wait=5")

    assert response.status_code == 404


def test_job_watch_hears_a_status_change_from_another_connection(settings: Settings) -> None:
    users.add_user(settings, "alice", admin=False)
    with db.session_scope(settings) as session:
        owner = users.find_user(session, "alice")
        job_id = store.create_job(
            session, store.NewJob(owner_id=owner.id, context=b"x", timeout=5)
        ).id
    watch = changes.JobWatch(settings.database_url, store.CHANGES_CHANNEL)

    async def claim_and_hear() -> bool:
        with watch.subscribe(job_id) as changed:
            assert await asyncio.to_thread(watch.listening.wait, 10)
            changed.clear()
            with db.session_scope(settings) as session:
                assert store.claim(session, "w", 30) is not None
            await asyncio.wait_for(changed.wait(), 5)
            return True

    try:
        assert asyncio.run(claim_and_hear())
    finally:
        watch.close()
