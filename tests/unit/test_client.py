"""The API client against a fake of the HTTP boundary (httpx.MockTransport), and credentials."""

from __future__ import annotations

import json
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from proctor import __version__, exceptions
from proctor.client import (
    Client,
    ClientError,
    Credentials,
    connect,
    read_credentials,
    resolve,
    service_url,
    write_credentials,
)
from proctor.config import Settings

BASE_URL = "http://proctor.test"
TOKEN = "pct_secret"
Handler = Callable[[httpx.Request], httpx.Response]


@pytest.fixture
def make_client() -> Iterator[Callable[[Handler], Client]]:
    clients: list[Client] = []

    def make(handler: Handler) -> Client:
        client = Client(BASE_URL, TOKEN, transport=httpx.MockTransport(handler))
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def job(job_id: str, status: str = "queued") -> dict[str, object]:
    return {"id": job_id, "status": status}


def error(status: int, code: str, message: str) -> httpx.Response:
    return httpx.Response(status, json={"error": {"code": code, "message": message}})


# --- requests ----------------------------------------------------------------------------


def test_client_sends_bearer_token_and_user_agent(make_client: Callable[[Handler], Client]) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=job("j1"))

    assert make_client(handler).get_job("j1") == job("j1")

    assert seen[0].url == f"{BASE_URL}/api/v1/jobs/j1"
    assert seen[0].headers["Authorization"] == f"Bearer {TOKEN}"
    assert seen[0].headers["User-Agent"] == f"proctor-cli/{__version__}"


def test_client_submit_sends_file_part_and_only_given_fields(
    make_client: Callable[[Handler], Client],
) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json=job("j1"))

    make_client(handler).submit(b"FROM scratch\n", filename="Dockerfile", timeout=30, name="demo")

    request = seen[0]
    body = request.read()
    assert request.method == "POST" and request.url.path == "/api/v1/jobs"
    assert request.headers["Content-Type"].startswith("multipart/form-data")
    assert b'name="file"; filename="Dockerfile"' in body
    assert b"FROM scratch\n" in body
    assert b'name="timeout"\r\n\r\n30' in body
    assert b'name="name"\r\n\r\ndemo' in body
    assert b'name="dataset"' not in body


def test_client_list_jobs_passes_filters_as_query(
    make_client: Callable[[Handler], Client],
) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"items": [], "next_cursor": None})

    make_client(handler).list_jobs(status="failed", limit=5, user="bob")

    assert dict(seen[0].url.params) == {"status": "failed", "limit": "5", "user": "bob"}


def test_client_iter_jobs_follows_next_cursor(make_client: Callable[[Handler], Client]) -> None:
    pages = {
        None: {"items": [job("j5"), job("j4")], "next_cursor": "c1"},
        "c1": {"items": [job("j3"), job("j2")], "next_cursor": "c2"},
        "c2": {"items": [job("j1")], "next_cursor": None},
    }
    cursors: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        cursor = request.url.params.get("cursor")
        cursors.append(cursor)
        assert request.url.params["limit"] == "2"
        return httpx.Response(200, json=pages[cursor])

    ids = [item["id"] for item in make_client(handler).iter_jobs(limit=2)]

    assert ids == ["j5", "j4", "j3", "j2", "j1"]
    assert cursors == [None, "c1", "c2"]


def test_client_logs_and_cancel(make_client: Callable[[Handler], Client]) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/logs"):
            assert request.url.params["stream"] == "run"
            return httpx.Response(200, text="hello\n")
        assert request.method == "POST" and request.url.path == "/api/v1/jobs/j1/cancel"
        return httpx.Response(202, json=job("j1", "running"))

    client = make_client(handler)

    assert client.logs("j1", "run") == "hello\n"
    assert client.cancel("j1")["status"] == "running"


def test_client_follow_logs_yields_streamed_text(
    make_client: Callable[[Handler], Client],
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.params["follow"] == "true"
        return httpx.Response(200, content=iter([b"building\n", b"running\n"]))

    assert "".join(make_client(handler).follow_logs("j1")) == "building\nrunning\n"


def test_client_ready_is_false_on_503_or_no_server(
    make_client: Callable[[Handler], Client],
) -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    assert make_client(lambda _request: httpx.Response(200, json={"status": "ok"})).ready()
    assert not make_client(lambda _request: httpx.Response(503, json={})).ready()
    assert not make_client(down).ready()


def test_client_wait_polls_until_final_and_reports_each_state(
    make_client: Callable[[Handler], Client],
) -> None:
    states = iter(["building", "running", "succeeded"])
    seen: list[tuple[str, bool]] = []

    final = make_client(lambda _request: httpx.Response(200, json=job("j1", next(states)))).wait(
        job("j1"), on_poll=lambda current, up: seen.append((current["status"], up)), poll_seconds=0
    )

    assert final["status"] == "succeeded"
    assert seen == [("queued", True), ("building", True), ("running", True)]


def test_client_wait_rides_out_a_short_outage(make_client: Callable[[Handler], Client]) -> None:
    answers = iter(
        [error(503, "unavailable", "restarting"), httpx.Response(200, json=job("j1", "failed"))]
    )
    seen: list[bool] = []

    final = make_client(lambda _request: next(answers)).wait(
        job("j1", "running"), on_poll=lambda _job, up: seen.append(up), poll_seconds=0
    )

    assert final["status"] == "failed"
    assert seen == [True, False]


def test_client_wait_gives_up_on_a_long_outage_or_a_real_error(
    make_client: Callable[[Handler], Client],
) -> None:
    unavailable = make_client(lambda _request: error(503, "unavailable", "down"))
    gone = make_client(lambda _request: error(404, "not_found", "no job 'j1'"))

    with pytest.raises(ClientError, match="down"):
        unavailable.wait(job("j1"), poll_seconds=0, outage_seconds=-1)
    with pytest.raises(ClientError, match="no job"):
        gone.wait(job("j1"), poll_seconds=0)


# --- errors ------------------------------------------------------------------------------


def test_client_maps_error_body_to_client_error(make_client: Callable[[Handler], Client]) -> None:
    client = make_client(lambda _request: error(404, "not_found", "no job 'j9'"))

    with pytest.raises(ClientError) as raised:
        client.get_job("j9")

    assert isinstance(raised.value, exceptions.ProctorError)
    assert (raised.value.status, raised.value.code) == (404, "not_found")
    assert raised.value.message == "no job 'j9'"
    assert not raised.value.transient


def test_client_maps_an_error_without_our_body(make_client: Callable[[Handler], Client]) -> None:
    client = make_client(lambda _request: httpx.Response(502, text="<html>Bad Gateway</html>"))

    with pytest.raises(ClientError) as raised:
        client.list_jobs()

    assert (raised.value.status, raised.value.code) == (502, "http_error")
    assert "HTTP 502" in raised.value.message and "Bad Gateway" in raised.value.message


def test_client_maps_connection_failure_to_unreachable_naming_the_url(
    make_client: Callable[[Handler], Client],
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(ClientError) as raised:
        make_client(handler).get_job("j1")

    assert (raised.value.status, raised.value.code) == (0, "unreachable")
    assert BASE_URL in raised.value.message
    assert raised.value.transient


def test_client_rejects_a_success_that_is_not_a_json_object(
    make_client: Callable[[Handler], Client],
) -> None:
    client = make_client(lambda _request: httpx.Response(200, text="<html>proxy</html>"))

    with pytest.raises(ClientError, match="did not answer JSON") as raised:
        client.get_job("j1")

    assert raised.value.code == "bad_response"


def test_client_follow_logs_maps_error_status(make_client: Callable[[Handler], Client]) -> None:
    client = make_client(lambda _request: error(401, "unauthorized", "the token is not valid"))

    with pytest.raises(ClientError) as raised:
        list(client.follow_logs("j1"))

    assert (raised.value.status, raised.value.code) == (401, "unauthorized")


def test_client_503_is_transient(make_client: Callable[[Handler], Client]) -> None:
    client = make_client(lambda _request: error(503, "unavailable", "the database is down"))

    with pytest.raises(ClientError) as raised:
        client.get_job("j1")

    assert raised.value.transient


# --- credentials -------------------------------------------------------------------------


def test_credentials_file_round_trips_and_is_private(tmp_path: Path) -> None:
    path = tmp_path / "home" / "credentials.json"

    write_credentials(path, Credentials("http://127.0.0.1:8000", TOKEN, "admin"))

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_credentials(path) == Credentials("http://127.0.0.1:8000", TOKEN, "admin")
    assert json.loads(path.read_text())["token"] == TOKEN


def test_credentials_missing_file_is_none_and_a_broken_one_an_error(tmp_path: Path) -> None:
    path = tmp_path / "credentials.json"
    assert read_credentials(path) is None

    path.write_text("{not json")
    with pytest.raises(ClientError, match="cannot read") as raised:
        read_credentials(path)
    assert raised.value.code == "bad_credentials"


SAVED = Credentials("http://saved:8000", "saved-token", "admin")
DEFAULT_URL = "http://127.0.0.1:8000"


@pytest.mark.parametrize(
    ("url", "token", "saved", "expected"),
    [
        # explicit values (flags or PROCTOR_URL/PROCTOR_TOKEN) win
        ("http://flag:1/", "flag-token", SAVED, Credentials("http://flag:1", "flag-token")),
        # an explicit token with the saved URL
        (None, "flag-token", SAVED, Credentials("http://saved:8000", "flag-token")),
        # the saved file alone
        (None, None, SAVED, SAVED),
        # an explicit URL equal to the saved one keeps the saved token
        ("http://saved:8000/", None, SAVED, SAVED),
        # no file: the default URL
        (None, "flag-token", None, Credentials(DEFAULT_URL, "flag-token")),
    ],
)
def test_resolve_prefers_explicit_then_saved_then_default(
    url: str | None, token: str | None, saved: Credentials | None, expected: Credentials
) -> None:
    assert resolve(url, token, saved=saved, default_url=DEFAULT_URL) == expected


def test_resolve_never_sends_a_saved_token_to_another_server() -> None:
    with pytest.raises(ClientError) as raised:
        resolve("http://elsewhere:9000", None, saved=SAVED, default_url=DEFAULT_URL)

    assert raised.value.code == "no_token"
    assert "http://elsewhere:9000" in raised.value.message


def test_resolve_without_any_token_says_how_to_get_one() -> None:
    with pytest.raises(ClientError) as raised:
        resolve(None, None, saved=None, default_url=DEFAULT_URL)

    assert raised.value.code == "no_token"
    for hint in ("proctor up", "proctor user add NAME", "--token", "PROCTOR_TOKEN"):
        assert hint in raised.value.message


def test_connect_reads_the_credentials_file_of_the_settings(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", host="0.0.0.0", port=8123)

    with pytest.raises(ClientError, match=r"http://127\.0\.0\.1:8123"):
        connect(settings)

    write_credentials(settings.credentials_path, Credentials("http://127.0.0.1:8123", TOKEN))
    with connect(settings) as client:
        assert (client.base_url, client.token) == ("http://127.0.0.1:8123", TOKEN)


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("0.0.0.0", "http://127.0.0.1:8000"),
        ("::", "http://127.0.0.1:8000"),
        ("example.org", "http://example.org:8000"),
        ("::1", "http://[::1]:8000"),
    ],
)
def test_service_url_turns_listen_addresses_into_client_urls(host: str, expected: str) -> None:
    assert service_url(host, 8000) == expected
