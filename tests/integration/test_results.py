"""Signed results, webhooks and batch submissions, against the real app, worker and engine.

Webhooks go to a real HTTP receiver on 127.0.0.1 that checks each signature with the
user's secret, as a client's server would.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from proctor import datasets, db, results, signing, store, users, webhooks
from proctor.api.schemas import webhook_body
from proctor.config import Settings
from proctor.models import WebhookDelivery

from ..conftest import SettingsFactory
from .conftest import Api, ApiFactory, WorkerFactory, dockerfile
from .test_api import TRIVIAL, assert_error
from .test_datasets import add_dataset

DELIVERY_WAIT_SECONDS = 30
FAST_WEBHOOKS: dict[str, Any] = {
    "webhook_retry_initial": 0.2,
    "webhook_retry_max": 0.4,
    "webhook_poll_interval": 0.05,
    "webhook_timeout": 5,
}


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    verified: bool


@dataclass
class Receiver:
    """A webhook receiver: answers with the next planned status (the last one repeats)."""

    secret: Callable[[], str | None]
    statuses: list[int] = field(default_factory=lambda: [200])
    received: list[Received] = field(default_factory=list)
    url: str = ""

    def answer(self) -> int:
        return self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]

    def wait_for(self, count: int) -> list[Received]:
        deadline = time.monotonic() + DELIVERY_WAIT_SECONDS
        while len(self.received) < count:
            if time.monotonic() > deadline:
                pytest.fail(f"{len(self.received)} webhook(s) received, expected {count}")
            time.sleep(0.05)
        return self.received


@pytest.fixture
def make_receiver() -> Iterator[Callable[..., Receiver]]:
    servers: list[ThreadingHTTPServer] = []

    def make(secret: Callable[[], str | None], statuses: list[int] | None = None) -> Receiver:
        receiver = Receiver(secret=secret, statuses=statuses or [200])

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                key = receiver.secret() or ""
                verified = webhooks.verify_signature(
                    key, self.headers.get(webhooks.SIGNATURE_HEADER, ""), body
                )
                receiver.received.append(Received(dict(self.headers.items()), body, verified))
                self.send_response(receiver.answer())
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                del format, args

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        servers.append(server)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        return receiver

    yield make
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def make_dispatcher() -> Iterator[Callable[[Settings], webhooks.Dispatcher]]:
    """A webhook dispatcher driven by the test (`run_once`), not by its thread."""
    made: list[webhooks.Dispatcher] = []

    def make(settings: Settings) -> webhooks.Dispatcher:
        made.append(webhooks.Dispatcher(settings, webhook_body))
        return made[-1]

    yield make
    for dispatcher in made:
        dispatcher.close()


def secret_of(settings: Settings, name: str) -> Callable[[], str | None]:
    return lambda: users.webhook_secret(settings, name)


def wait_delivery(api: Api, job_id: str, state: str) -> dict[str, Any]:
    deadline = time.monotonic() + DELIVERY_WAIT_SECONDS
    while True:
        callback: dict[str, Any] = api.job(job_id)["callback"]
        if callback["state"] == state:
            return callback
        if time.monotonic() > deadline:
            pytest.fail(f"the webhook of job {job_id} is {callback}, not {state}")
        time.sleep(0.05)


def cancelled_job(api: Api, url: str) -> str:
    """A job made final at once (cancelled while queued): its webhook is due."""
    job_id = str(api.submit_ok(TRIVIAL, callback_url=url)["id"])
    assert api.post(f"/api/v1/jobs/{job_id}/cancel").status_code == 202
    return job_id


# --- signed results ------------------------------------------------------------------


def test_result_of_a_real_job_verifies_with_the_served_key(
    make_settings: SettingsFactory,
    make_api: ApiFactory,
    make_worker: WorkerFactory,
    make_receiver: Callable[..., Receiver],
) -> None:
    settings = make_settings(**FAST_WEBHOOKS)
    folder = add_dataset(settings, "cancer")
    make_worker(settings)
    api = make_api(app_settings=settings)
    receiver = make_receiver(secret_of(settings, api.name))
    command = (
        'test -s /data/input/train.csv && echo \'{"perf": 0.75, "auc": 0.5}\' > /data/perf.json'
    )

    job = api.run(dockerfile(command), dataset="cancer", callback_url=receiver.url)
    assert job["status"] == "succeeded", job
    response = api.get(f"/api/v1/jobs/{job['id']}/result")
    key_doc = api.get("/api/v1/signing-key").json()

    assert response.status_code == 200, response.text
    signed = response.json()
    key = signing.PublicKey.from_pem(key_doc["public_key_pem"].encode())
    record = results.verify(signed, key)
    assert signed["key_id"] == key_doc["key_id"] == key.key_id
    assert key_doc["algorithm"] == "Ed25519"
    assert record["job_id"] == job["id"] and record["owner"] == api.name
    assert record["image_id"] == job["image_id"] and record["image_id"].startswith("sha256:")
    assert record["dataset"] == "cancer"
    assert record["dataset_hash"] == datasets.content_hash(folder)
    assert record["sandbox"] == job["sandbox"] and record["sandbox"]["network"] == "none"
    assert record["performance"] == 0.75 and record["metrics"] == {"auc": 0.5}
    assert record["exit_code"] == 0
    assert record["finished_at"].startswith(job["finished_at"][:19])
    tampered = json.loads(json.dumps(signed))
    tampered["record"]["performance"] = 0.99
    with pytest.raises(Exception, match="does not match"):
        results.verify(tampered, key)

    [hook] = receiver.wait_for(1)
    assert hook.verified
    assert hook.headers[webhooks.EVENT_HEADER] == "job.succeeded"
    sent = json.loads(hook.body)
    assert sent["id"] == job["id"] and sent["status"] == "succeeded"
    assert sent["performance"] == 0.75
    callback = wait_delivery(api, job["id"], "delivered")
    assert callback["attempts"] == 1 and callback["url"] == receiver.url


def test_result_of_a_job_that_did_not_succeed_is_409(api: Api) -> None:
    job_id = api.submit_ok(TRIVIAL)["id"]

    response = api.get(f"/api/v1/jobs/{job_id}/result")

    assert_error(response, 409, "no_result", "queued")


def test_result_of_another_users_job_is_404(make_api: ApiFactory) -> None:
    alice, bob = make_api("alice"), make_api("bob")
    job_id = alice.submit_ok(TRIVIAL)["id"]

    assert bob.get(f"/api/v1/jobs/{job_id}/result").status_code == 404


def test_signing_key_is_the_one_in_the_home_folder(settings: Settings, api: Api) -> None:
    assert settings.signing_key is not None
    on_disk = signing.load_or_create(settings.signing_key)

    served = api.get("/api/v1/signing-key").json()

    assert served["key_id"] == on_disk.public.key_id
    assert api.http.get("/api/v1/signing-key").status_code == 401


# --- webhooks ------------------------------------------------------------------------


def test_webhook_retries_after_a_500_then_delivers(
    make_settings: SettingsFactory,
    make_api: ApiFactory,
    make_receiver: Callable[..., Receiver],
    make_dispatcher: Callable[[Settings], webhooks.Dispatcher],
) -> None:
    settings = make_settings(**FAST_WEBHOOKS)
    api = make_api(app_settings=settings)
    receiver = make_receiver(secret_of(settings, api.name), [500, 200])
    job_id = cancelled_job(api, receiver.url)
    dispatcher = make_dispatcher(settings)

    deadline = time.monotonic() + DELIVERY_WAIT_SECONDS
    while api.job(job_id)["callback"]["state"] == "pending" and time.monotonic() < deadline:
        dispatcher.run_once()
        time.sleep(0.05)

    first, second = receiver.wait_for(2)
    assert first.verified and second.verified
    assert first.headers[webhooks.DELIVERY_HEADER] == second.headers[webhooks.DELIVERY_HEADER]
    assert first.headers[webhooks.EVENT_HEADER] == "job.cancelled"
    callback = api.job(job_id)["callback"]
    assert callback["state"] == "delivered" and callback["attempts"] == 2
    assert callback["delivered_at"] is not None


def test_webhook_gives_up_after_the_time_limit(
    make_settings: SettingsFactory,
    make_api: ApiFactory,
    make_receiver: Callable[..., Receiver],
    make_dispatcher: Callable[[Settings], webhooks.Dispatcher],
) -> None:
    settings = make_settings(**FAST_WEBHOOKS, webhook_give_up_after=1.0)
    api = make_api(app_settings=settings)
    receiver = make_receiver(secret_of(settings, api.name), [500])
    job_id = cancelled_job(api, receiver.url)
    dispatcher = make_dispatcher(settings)

    deadline = time.monotonic() + DELIVERY_WAIT_SECONDS
    while api.job(job_id)["callback"]["state"] == "pending" and time.monotonic() < deadline:
        dispatcher.run_once()
        time.sleep(0.05)

    callback = api.job(job_id)["callback"]
    assert callback["state"] == "failed"
    assert callback["attempts"] >= 2 and callback["last_error"] == "HTTP 500"
    tried = len(receiver.received)
    time.sleep(0.5)
    dispatcher.run_once()
    assert len(receiver.received) == tried  # a failed delivery is not tried again


def test_webhook_to_a_closed_port_records_the_error(
    make_settings: SettingsFactory,
    make_api: ApiFactory,
    make_dispatcher: Callable[[Settings], webhooks.Dispatcher],
) -> None:
    settings = make_settings(**FAST_WEBHOOKS)
    api = make_api(app_settings=settings)
    job_id = cancelled_job(api, "http://127.0.0.1:9/hook")

    make_dispatcher(settings).run_once()

    callback = api.job(job_id)["callback"]
    assert callback["state"] == "pending" and callback["attempts"] == 1
    assert "ConnectError" in callback["last_error"]


def test_webhook_pending_delivery_is_sent_by_a_restarted_worker(
    make_settings: SettingsFactory,
    make_api: ApiFactory,
    make_worker: WorkerFactory,
    make_receiver: Callable[..., Receiver],
) -> None:
    settings = make_settings(**FAST_WEBHOOKS)
    api = make_api(app_settings=settings)
    receiver = make_receiver(secret_of(settings, api.name), [503])
    job_id = cancelled_job(api, receiver.url)
    first = make_worker(settings)
    receiver.wait_for(1)
    first.stop()
    first.join(timeout=30)
    assert not first.alive
    assert api.job(job_id)["callback"]["state"] == "pending"

    receiver.statuses[:] = [200]
    make_worker(settings)

    callback = wait_delivery(api, job_id, "delivered")
    assert callback["attempts"] >= 2
    assert all(hook.verified for hook in receiver.received)


def test_webhook_of_a_lost_job_is_queued(settings: Settings, api: Api) -> None:
    job_id = api.submit_ok(TRIVIAL, callback_url="http://127.0.0.1:9/hook")["id"]
    with db.session_scope(settings) as session:
        assert store.claim(session, "gone-worker", lease_seconds=-1) is not None
    with db.session_scope(settings) as session:
        store.release_expired(session, max_attempts=1)
        delivery = session.query(WebhookDelivery).filter_by(job_id=job_id).one()
        assert delivery.event == "job.failed" and delivery.state == "pending"

    assert api.job(job_id)["error"]["code"] == "lost"


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ftp://example.org/x", "http or https"),
        ("https://u:p@example.org/x", "credentials"),
        ("http:///x", "no host"),
    ],
)
def test_submit_with_a_bad_callback_url_is_422(api: Api, url: str, problem: str) -> None:
    assert_error(api.submit(TRIVIAL, callback_url=url), 422, "invalid_parameter", problem)


def test_submit_callback_url_host_outside_the_allowlist_is_422(
    make_settings: SettingsFactory, make_api: ApiFactory
) -> None:
    api = make_api(app_settings=make_settings(webhook_allowed_hosts="hooks.example.org"))

    response = api.submit(TRIVIAL, callback_url="http://127.0.0.1:9/x")

    assert_error(response, 422, "invalid_parameter", "not allowed")


def test_submit_raw_body_takes_callback_url_as_a_query_parameter(api: Api) -> None:
    response = api.post(
        "/api/v1/jobs?callback_url=http://127.0.0.1:9/raw",
        content=TRIVIAL.encode(),
        headers={"Content-Type": "application/octet-stream"},
    )

    assert response.status_code == 201, response.text
    assert response.json()["callback"] == {
        "url": "http://127.0.0.1:9/raw",
        "state": "waiting",
        "attempts": 0,
        "last_error": None,
        "delivered_at": None,
    }


def test_webhook_secret_rotation_returns_a_new_secret_once(settings: Settings, api: Api) -> None:
    before = users.webhook_secret(settings, api.name)

    response = api.post("/api/v1/webhook-secret")

    assert response.status_code == 200
    after = response.json()["webhook_secret"]
    assert after != before and after.startswith(users.WEBHOOK_SECRET_PREFIX)
    assert users.webhook_secret(settings, api.name) == after


# --- batch ---------------------------------------------------------------------------


def test_batch_keeps_order_and_gives_each_invalid_entry_its_own_error(
    settings: Settings, api: Api
) -> None:
    add_dataset(settings, "cancer")
    files = [
        ("file", ("a", TRIVIAL.encode())),
        ("file", ("b", b"\x00\x01 not a dockerfile or archive")),
        ("file", ("c", TRIVIAL.encode())),
        ("file", ("d", TRIVIAL.encode())),
        ("file", ("e", TRIVIAL.encode())),
    ]
    entries = [
        {"name": "first", "dataset": "cancer"},
        {},
        {"dataset": "no-such-dataset"},
        {"callback_url": "ftp://example.org/x"},
        {"name": "last", "timeout": 30},
    ]

    response = api.post("/api/v1/jobs/batch", files=files, data={"entries": json.dumps(entries)})

    assert response.status_code == 200, response.text
    items = response.json()["items"]
    assert [item["index"] for item in items] == [0, 1, 2, 3, 4]
    assert items[0]["job"]["name"] == "first" and items[0]["job"]["dataset"] == "cancer"
    assert items[1]["error"]["code"] == "unsupported_media_type"
    assert items[2]["error"]["code"] == "unknown_dataset"
    assert "no-such-dataset" in items[2]["error"]["message"]
    assert items[3]["error"]["code"] == "invalid_parameter"
    assert "http or https" in items[3]["error"]["message"]
    assert items[4]["job"]["name"] == "last" and items[4]["job"]["timeout"] == 30
    for index in (0, 4):
        assert api.job(items[index]["job"]["id"])["status"] == "queued"
    listed = api.get("/api/v1/jobs").json()["items"]
    assert len(listed) == 2


def test_batch_with_a_bad_entry_object_fails_only_that_entry(api: Api) -> None:
    files = [("file", ("a", TRIVIAL.encode())), ("file", ("b", TRIVIAL.encode()))]
    entries = [{"timeout": "soon"}, {"color": "red"}]

    items = api.post(
        "/api/v1/jobs/batch", files=files, data={"entries": json.dumps(entries)}
    ).json()["items"]

    assert "timeout 'soon'" in items[0]["error"]["message"]
    assert "color" in items[1]["error"]["message"]


def test_batch_over_the_entry_limit_is_refused_whole(
    make_settings: SettingsFactory, make_api: ApiFactory
) -> None:
    api = make_api(app_settings=make_settings(batch_max_jobs=2))
    files = [("file", (str(i), TRIVIAL.encode())) for i in range(3)]

    response = api.post("/api/v1/jobs/batch", files=files)

    assert_error(response, 422, "invalid_parameter", "more than 2")
    assert api.get("/api/v1/jobs").json()["items"] == []


def test_batch_over_the_byte_limit_is_413(
    make_settings: SettingsFactory, make_api: ApiFactory
) -> None:
    api = make_api(app_settings=make_settings(batch_max_bytes=100))
    files = [("file", (str(i), TRIVIAL.encode() + b"#" * 60)) for i in range(2)]

    response = api.post("/api/v1/jobs/batch", files=files)

    assert_error(response, 413, "too_large", "100-byte limit")


def test_batch_entries_must_match_the_files(api: Api) -> None:
    response = api.post(
        "/api/v1/jobs/batch",
        files=[("file", ("a", TRIVIAL.encode()))],
        data={"entries": "[{}, {}]"},
    )

    assert_error(response, 422, "invalid_parameter", "one object per file")
