"""The HTTP contract: shapes, codes and the error body, on a real database (no worker)."""

from __future__ import annotations

import io
import re
import zipfile

import pytest

from proctor import db, users
from proctor.api.schemas import JobOut
from proctor.config import Settings
from proctor.models import Job

from ..conftest import SettingsFactory
from .conftest import Api, ApiFactory, dockerfile, tar_context

TRIVIAL = dockerfile("true")


def assert_error(response: object, status: int, code: str, fragment: str = "") -> None:
    assert response.status_code == status, response.text  # type: ignore[attr-defined]
    body = response.json()  # type: ignore[attr-defined]
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert fragment in body["error"]["message"]


def test_api_submit_multipart_returns_created_job(api: Api) -> None:
    response = api.submit(TRIVIAL, name="first try", timeout=30)

    assert response.status_code == 201, response.text
    job = response.json()
    assert response.headers["location"] == f"/api/v1/jobs/{job['id']}"
    assert job["status"] == "queued"
    assert job["name"] == "first try"
    assert job["timeout"] == 30
    for key in ("performance", "metrics", "error", "exit_code", "image_id", "started_at"):
        assert job[key] is None
    assert job["findings"] == []
    assert job["attempts"] == 0
    assert job["links"] == {
        "self": f"/api/v1/jobs/{job['id']}",
        "logs": f"/api/v1/jobs/{job['id']}/logs",
    }
    assert job["created_at"].endswith("Z") or job["created_at"].endswith("+00:00")


@pytest.mark.parametrize("content_type", ["application/octet-stream", "text/plain"])
def test_api_submit_raw_body(api: Api, content_type: str) -> None:
    response = api.post(
        "/api/v1/jobs?name=raw",
        content=TRIVIAL,
        headers={"Content-Type": content_type},
    )

    assert response.status_code == 201, response.text
    assert response.json()["name"] == "raw"


def test_api_submit_archive_told_apart_by_content(api: Api) -> None:
    archive = tar_context({"Dockerfile": TRIVIAL, "model.txt": "weights"})

    response = api.post("/api/v1/jobs", files={"file": ("Dockerfile", archive)})

    assert response.status_code == 201, response.text


def test_api_submit_rejects_zip_with_415(api: Api) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("Dockerfile", TRIVIAL)

    assert_error(api.submit(buffer.getvalue()), 415, "unsupported_media_type")


def test_api_submit_rejects_empty_upload_with_400(api: Api) -> None:
    assert_error(api.submit(b""), 400, "unreadable_upload")


def test_api_submit_without_file_part_is_400(api: Api) -> None:
    response = api.post("/api/v1/jobs", data={"name": "x"}, files={"other": ("a", b"b")})

    assert_error(response, 400, "unreadable_upload", "'file'")


def test_api_submit_too_large_is_413(make_settings: SettingsFactory, make_api: ApiFactory) -> None:
    settings: Settings = make_settings(max_upload_bytes="1k")
    api = make_api(app_settings=settings)

    assert_error(api.submit(TRIVIAL + "#" * 5000), 413, "too_large")


def test_api_submit_dockerfile_syntax_error_names_line(api: Api) -> None:
    assert_error(
        api.submit("FROM proctor/busybox:latest\nRUNN true\n"), 422, "dockerfile_invalid", "line 2"
    )


def test_api_submit_base_image_not_allowed(
    make_settings: SettingsFactory, make_api: ApiFactory
) -> None:
    settings: Settings = make_settings(allowed_base_images="proctor/*")
    api = make_api(app_settings=settings)

    assert api.submit(TRIVIAL).status_code == 201
    assert_error(
        api.submit("FROM ubuntu:24.04\nCMD true\n"), 422, "base_image_not_allowed", "ubuntu:24.04"
    )


def test_api_submit_unsafe_archive_is_422(api: Api) -> None:
    archive = tar_context({"Dockerfile": TRIVIAL, "../escape": "x"})

    assert_error(api.submit(archive), 422, "unsafe_archive", "escape")


def test_api_submit_timeout_above_maximum_is_422(api: Api) -> None:
    assert_error(api.submit(TRIVIAL, timeout=10**9), 422, "invalid_parameter", "maximum")


def test_api_submit_unknown_dataset_is_422(api: Api) -> None:
    assert_error(api.submit(TRIVIAL, dataset="nope"), 422, "unknown_dataset", "nope")


def test_api_requires_a_valid_token(api: Api) -> None:
    assert_error(api.http.get("/api/v1/jobs"), 401, "unauthorized")
    bad = api.http.get("/api/v1/jobs", headers={"Authorization": "Bearer nope"})
    assert_error(bad, 401, "unauthorized")
    assert bad.headers["www-authenticate"] == "Bearer"
    assert_error(api.http.post("/api/v1/jobs", content=TRIVIAL), 401, "unauthorized")
    for header in ("Basic dXNlcjpwYXNz", "Bearer", "Bearer   "):
        other = api.http.get("/api/v1/jobs", headers={"Authorization": header})
        assert_error(other, 401, "unauthorized", "bearer token")


def test_api_other_users_job_is_404_and_admin_sees_all(make_api: ApiFactory) -> None:
    alice, bob, root = make_api("alice"), make_api("bob"), make_api("root", admin=True)
    job_id = alice.submit_ok(TRIVIAL)["id"]

    assert_error(bob.get(f"/api/v1/jobs/{job_id}"), 404, "not_found")
    assert_error(bob.post(f"/api/v1/jobs/{job_id}/cancel"), 404, "not_found")
    assert_error(bob.get(f"/api/v1/jobs/{job_id}/logs"), 404, "not_found")
    assert bob.get("/api/v1/jobs").json()["items"] == []
    assert root.job(job_id)["owner"] == "alice"
    assert alice.job(job_id)["owner"] == "alice"
    assert [j["owner"] for j in root.get("/api/v1/jobs").json()["items"]] == ["alice"]
    assert [j["id"] for j in root.get("/api/v1/jobs?user=alice").json()["items"]] == [job_id]
    assert root.get("/api/v1/jobs?user=bob").json()["items"] == []


def test_api_list_paginates_newest_first_without_gaps(api: Api) -> None:
    ids = [api.submit_ok(TRIVIAL)["id"] for _ in range(5)]

    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        query = "?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = api.get(f"/api/v1/jobs{query}").json()
        seen += [job["id"] for job in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert seen == list(reversed(ids))
    assert pages == 3


def test_api_list_filters_by_status_and_checks_limits(api: Api) -> None:
    job_id = api.submit_ok(TRIVIAL)["id"]
    api.post(f"/api/v1/jobs/{job_id}/cancel")
    api.submit_ok(TRIVIAL)

    cancelled = api.get("/api/v1/jobs?status=cancelled").json()["items"]
    assert [job["id"] for job in cancelled] == [job_id]
    assert_error(api.get("/api/v1/jobs?limit=201"), 422, "invalid_parameter", "limit")
    assert_error(api.get("/api/v1/jobs?status=nope"), 422, "invalid_parameter", "status")
    assert_error(api.get("/api/v1/jobs?cursor=!!!"), 422, "invalid_parameter", "cursor")


def test_api_cancel_queued_job_then_conflict(api: Api) -> None:
    job_id = api.submit_ok(TRIVIAL)["id"]

    response = api.post(f"/api/v1/jobs/{job_id}/cancel")
    assert response.status_code == 202
    assert response.json()["status"] == "cancelled"
    assert response.json()["error"]["code"] == "cancelled"
    assert_error(api.post(f"/api/v1/jobs/{job_id}/cancel"), 409, "conflict", "cancelled")


def test_api_unknown_job_and_route_use_error_shape(api: Api) -> None:
    assert_error(api.get("/api/v1/jobs/ffffffffffff"), 404, "not_found")
    assert_error(api.get("/api/v1/nothing"), 404, "not_found")


def test_api_health_ready_metrics_and_docs(api: Api) -> None:
    assert api.http.get("/healthz").json() == {"status": "ok", "checks": {}}
    ready = api.http.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"database": "ok", "engine": "ok"}
    api.submit_ok(TRIVIAL)
    metrics = api.http.get("/metrics").text
    assert 'proctor_jobs{status="queued"} 1.0' in metrics
    assert "proctor_queue_depth 1.0" in metrics
    assert "proctor_api_request_seconds_bucket" in metrics
    assert 'method="POST",route="/api/v1/jobs",status="201"' in metrics
    spec = api.http.get("/openapi.json").json()
    assert "/api/v1/jobs/{job_id}/logs" in spec["paths"]
    assert api.http.get("/docs").status_code == 200


def test_api_readyz_reports_unreachable_engine(
    make_settings: SettingsFactory, make_api: ApiFactory
) -> None:
    settings: Settings = make_settings(docker_host="unix:///nonexistent/docker.sock")
    api = make_api(app_settings=settings)

    response = api.http.get("/readyz")

    assert response.status_code == 503
    assert response.json()["checks"]["database"] == "ok"
    assert response.json()["checks"]["engine"] != "ok"


def test_api_gpus_only_when_the_operator_allows(
    make_settings: SettingsFactory, make_api: ApiFactory
) -> None:
    closed = make_api("closed")
    assert_error(closed.submit(TRIVIAL, gpus=1), 422, "invalid_parameter", "no GPU jobs")
    assert closed.submit_ok(TRIVIAL)["gpus"] is None

    settings = make_settings(run_gpus_max=2)
    open_api = make_api("open", app_settings=settings)
    assert open_api.submit_ok(TRIVIAL, gpus=2)["gpus"] == 2
    assert_error(open_api.submit(TRIVIAL, gpus=3), 422, "invalid_parameter", "maximum of 2")
    assert_error(open_api.submit(TRIVIAL, gpus="all"), 422, "invalid_parameter", "maximum")
    assert_error(open_api.submit(TRIVIAL, gpus="many"), 422, "invalid_parameter", "count")


def test_api_queue_cap_per_user_is_429(
    make_settings: SettingsFactory, make_api: ApiFactory
) -> None:
    settings = make_settings(max_queued_per_user=2)
    alice = make_api("alice", app_settings=settings)
    bob = make_api("bob", app_settings=settings)
    alice.submit_ok(TRIVIAL)
    alice.submit_ok(TRIVIAL)

    assert_error(alice.submit(TRIVIAL), 429, "too_many_requests", "2 jobs waiting")
    assert bob.submit(TRIVIAL).status_code == 201


def test_api_token_cache_keeps_an_accepted_token_for_its_ttl(api: Api, settings: Settings) -> None:
    now = [0.0]
    cache = users.TokenCache(ttl_seconds=5, clock=lambda: now[0])
    api.http.app.state.token_cache = cache  # type: ignore[attr-defined]
    assert api.get("/api/v1/jobs").status_code == 200
    with db.session_scope(settings) as session:
        alice = users.find_user(session, "alice")
        expected = users.Caller(id=alice.id, name="alice", is_admin=False)
    assert cache.get(api.token) == expected

    users.issue_token(settings, "alice", admin=True)  # the old token is no longer valid
    now[0] = 4.9
    assert api.get("/api/v1/jobs").status_code == 200  # within the TTL: the cached caller
    now[0] = 5.0
    stale = api.get("/api/v1/jobs")

    assert_error(stale, 401, "unauthorized")
    assert stale.json() == {
        "error": {"code": "unauthorized", "message": "the bearer token is not valid"}
    }
    assert len(cache) == 0


def test_api_token_cache_never_keeps_a_refused_token(api: Api) -> None:
    cache: users.TokenCache = api.http.app.state.token_cache  # type: ignore[attr-defined]
    headers = {"Authorization": "Bearer pct_nope"}

    first = api.http.get("/api/v1/jobs", headers=headers)
    second = api.http.get("/api/v1/jobs/ffffffffffff", headers=headers)

    for response in (first, second):
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json() == {
            "error": {"code": "unauthorized", "message": "the bearer token is not valid"}
        }
    assert cache.get("pct_nope") is None
    assert len(cache) == 0


RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def test_api_job_json_is_the_same_from_every_route(api: Api) -> None:
    created = api.submit(TRIVIAL, name="café", timeout=30)
    job_id = created.json()["id"]
    read = api.get(f"/api/v1/jobs/{job_id}")
    listed = api.get("/api/v1/jobs")
    cancelled = api.post(f"/api/v1/jobs/{job_id}/cancel")

    for response in (created, read, listed, cancelled):
        assert response.headers["content-type"] == "application/json"
    assert created.json() == read.json() == listed.json()["items"][0]
    assert set(read.json()) == set(JobOut.model_fields)
    assert listed.json()["next_cursor"] is None
    assert read.json()["name"] == "café"
    assert RFC3339_UTC.match(read.json()["created_at"])
    assert read.json()["finished_at"] is None
    final = cancelled.json()
    assert cancelled.status_code == 202
    assert set(final) == set(JobOut.model_fields)
    assert final["status"] == "cancelled"
    assert RFC3339_UTC.match(final["finished_at"])
    assert final == api.job(job_id)


def test_api_job_json_is_what_the_schema_writes(api: Api, settings: Settings) -> None:
    job_id = api.submit_ok(TRIVIAL, callback_url="http://127.0.0.1:9/hook")["id"]
    with db.session_scope(settings) as session:
        job = session.get_one(Job, job_id)
        job.performance = 1e-05
        job.metrics = {"auc": 0.91, "big": 1e20}
        job.findings = [{"rule": "DL3007", "severity": "low", "message": "é <b>", "line": 2}]
        job.sandbox = {"network": "none", "memory_bytes": 2**31}

    response = api.get(f"/api/v1/jobs/{job_id}")

    with db.session_scope(settings) as session:
        job = session.get_one(Job, job_id)
        expected = JobOut.of(job, "alice").model_dump(mode="json")
    assert response.json() == expected
    assert response.json()["callback"]["state"] == "waiting"


def test_api_keeps_a_final_jobs_answer_for_its_owner_and_admins(
    api: Api, settings: Settings
) -> None:
    job_id = api.submit_ok(TRIVIAL)["id"]
    final_jobs = api.http.app.state.final_jobs  # type: ignore[attr-defined]
    assert api.get(f"/api/v1/jobs/{job_id}").json()["status"] == "queued"
    assert final_jobs.get(job_id) is None  # an active job is read every time
    assert api.post(f"/api/v1/jobs/{job_id}/cancel").status_code == 202

    first = api.get(f"/api/v1/jobs/{job_id}")
    assert first.json()["status"] == "cancelled"
    assert final_jobs.get(job_id) is not None
    admin = Api(http=api.http, token=users.add_user(settings, "root", admin=True), name="root")
    admin.get("/api/v1/jobs")  # its token is accepted, and kept, before the database goes
    # Without a database, the kept answer is all that can answer.
    unreachable = settings.model_copy(update={"database_url": "sqlite:////proc/version/x.db"})
    api.http.app.state.settings = unreachable  # type: ignore[attr-defined]

    again = api.get(f"/api/v1/jobs/{job_id}")
    assert again.status_code == 200
    assert again.content == first.content
    assert again.headers["content-type"] == "application/json"
    assert api.get(f"/api/v1/jobs/{job_id}?wait=30").content == first.content
    assert admin.get(f"/api/v1/jobs/{job_id}").content == first.content


def test_api_kept_final_job_is_still_not_found_for_another_user(
    api: Api, make_api: ApiFactory
) -> None:
    job_id = api.submit_ok(TRIVIAL)["id"]
    api.post(f"/api/v1/jobs/{job_id}/cancel")
    assert api.get(f"/api/v1/jobs/{job_id}").status_code == 200  # now kept
    bob = make_api("bob")

    response = bob.get(f"/api/v1/jobs/{job_id}")

    assert_error(response, 404, "not_found")
