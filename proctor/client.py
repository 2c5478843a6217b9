"""A typed HTTP client of proctor's API, used by the CLI (and usable from scripts).

It also resolves which server and token to use: explicit values (the CLI's flags
or `PROCTOR_URL`/`PROCTOR_TOKEN`), else the credentials file that `proctor up`
and `proctor user add` write, else the local default address.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from proctor import __version__, exceptions, jobs
from proctor.config import Settings

CONNECT_TIMEOUT_SECONDS = 5.0
READ_TIMEOUT_SECONDS = 60.0
POLL_SECONDS = 0.5
WAIT_SECONDS = 25.0  # how long one request of `Client.wait` waits on the server; < the read timeout
OUTAGE_SECONDS = 60.0
"""How long `Client.wait` keeps polling through a server outage (a restart) before failing."""
USER_AGENT = f"proctor-cli/{__version__}"
CREDENTIALS_MODE = 0o600
ERROR_BODY_EXCERPT_CHARS = 200
ANY_ADDRESSES = frozenset({"0.0.0.0", "::", ""})
LOCAL_ADDRESS = "127.0.0.1"
JOBS_PATH = "/api/v1/jobs"
DATASETS_PATH = "/api/v1/datasets"
LEADERBOARD_PATH = "/api/v1/leaderboard"
SIGNING_KEY_PATH = "/api/v1/signing-key"
WEBHOOK_SECRET_PATH = "/api/v1/webhook-secret"

NO_TOKEN_HINT = (
    "run `proctor up` (it saves an admin token), or `proctor user add NAME`, "
    "or pass --token / set PROCTOR_TOKEN"
)

Job = dict[str, Any]
"""A job as the API returns it (see DESIGN section 3)."""


class ClientError(exceptions.ProctorError):
    """The API answered with an error, or could not be reached."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status  # the HTTP status, 0 when there was no HTTP answer
        self.code = code

    @property
    def transient(self) -> bool:
        """Whether trying again later may succeed (server down or restarting)."""
        return self.code == "unreachable" or self.status == httpx.codes.SERVICE_UNAVAILABLE


# --- where the server is and who we are ------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    """A server URL, the token to use there, and whose token it is (if known)."""

    url: str
    token: str | None
    user: str | None = None


def service_url(host: str, port: int) -> str:
    """The URL a local client uses for a server listening on HOST:PORT."""
    client_host = LOCAL_ADDRESS if host in ANY_ADDRESSES else host
    if ":" in client_host:  # an IPv6 literal
        client_host = f"[{client_host}]"
    return f"http://{client_host}:{port}"


def read_credentials(path: Path) -> Credentials | None:
    """The saved credentials, or None if there is no file; ClientError if it is unreadable."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        url, token, user = data["url"], data.get("token"), data.get("user")
        if not isinstance(url, str) or not isinstance(token, str | None):
            raise TypeError("url and token must be strings")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ClientError(0, "bad_credentials", f"cannot read {path}: {exc}") from exc
    return Credentials(url=url, token=token, user=user if isinstance(user, str) else None)


def write_credentials(path: Path, credentials: Credentials) -> None:
    """Write the credentials file atomically, readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.unlink(missing_ok=True)  # O_CREAT keeps the mode of a leftover file
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, CREDENTIALS_MODE)
    with os.fdopen(fd, "w") as handle:
        json.dump(
            {"url": credentials.url, "token": credentials.token, "user": credentials.user},
            handle,
        )
        handle.write("\n")
    os.replace(temporary, path)


def resolve(
    url: str | None, token: str | None, *, saved: Credentials | None, default_url: str
) -> Credentials:
    """Explicit values first, then the saved credentials, then the default URL.

    A saved token is only used for the saved server: pointing `--url` elsewhere
    never sends it to another host. Raises ClientError when no token is left.
    """
    chosen_url = (url or (saved.url if saved else None) or default_url).rstrip("/")
    saved_applies = saved is not None and saved.url.rstrip("/") == chosen_url
    if token:
        credentials = Credentials(url=chosen_url, token=token)
    elif saved is not None and saved_applies and saved.token:
        credentials = Credentials(url=chosen_url, token=saved.token, user=saved.user)
    else:
        raise ClientError(0, "no_token", f"no API token for {chosen_url}: {NO_TOKEN_HINT}")
    return credentials


def connect(settings: Settings, url: str | None = None, token: str | None = None) -> Client:
    """A client for the server and token resolved from these values and SETTINGS."""
    credentials = resolve(
        url,
        token,
        saved=read_credentials(settings.credentials_path),
        default_url=service_url(settings.host, settings.port),
    )
    return Client(credentials.url, credentials.token)


# --- the client ------------------------------------------------------------------------


class Client:
    """Calls proctor's API; every failure is a ClientError. Use it as a context manager."""

    def __init__(
        self,
        base_url: str,
        token: str | None,
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        headers = {"User-Agent": USER_AGENT}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(READ_TIMEOUT_SECONDS, connect=CONNECT_TIMEOUT_SECONDS),
            transport=transport,
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # --- jobs ------------------------------------------------------------------------

    def submit(
        self,
        data: bytes,
        *,
        filename: str = "Dockerfile",
        dataset: str | None = None,
        timeout: float | None = None,
        name: str | None = None,
        callback_url: str | None = None,
    ) -> Job:
        """Submit a Dockerfile or a build-context archive; returns the queued job."""
        fields = {
            "dataset": dataset,
            "timeout": timeout,
            "name": name,
            "callback_url": callback_url,
        }
        form = {key: str(value) for key, value in fields.items() if value is not None}
        response = self._request("POST", JOBS_PATH, files={"file": (filename, data)}, data=form)
        return _json_object(response)

    def submit_batch(
        self, uploads: list[tuple[str, bytes]], entries: list[dict[str, Any]] | None = None
    ) -> list[dict[str, Any]]:
        """Submit several (filename, data) at once; one `{"index", "job" or "error"}` each."""
        files = [("file", (filename, data)) for filename, data in uploads]
        form = {"entries": json.dumps(entries)} if entries is not None else {}
        response = self._request("POST", f"{JOBS_PATH}/batch", files=files, data=form)
        items: list[dict[str, Any]] = _json_object(response)["items"]
        return items

    def result(self, job_id: str) -> dict[str, Any]:
        """The signed result record of a succeeded job."""
        return _json_object(self._request("GET", f"{JOBS_PATH}/{job_id}/result"))

    def signing_key(self) -> dict[str, Any]:
        return _json_object(self._request("GET", SIGNING_KEY_PATH))

    def rotate_webhook_secret(self) -> str:
        """A new webhook secret for the caller (the old one stops working)."""
        return str(_json_object(self._request("POST", WEBHOOK_SECRET_PATH))["webhook_secret"])

    def get_job(self, job_id: str, *, wait: float = 0, after: str | None = None) -> Job:
        """The job; with WAIT, the server answers as soon as its status is no longer
        AFTER (without AFTER: once it is final), or after WAIT seconds."""
        params: dict[str, str | float] = {"wait": wait} if wait else {}
        if wait and after:
            params["after"] = after
        return _json_object(self._request("GET", f"{JOBS_PATH}/{job_id}", params=params))

    def list_jobs(
        self,
        status: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
        user: str | None = None,
    ) -> dict[str, Any]:
        """One page: `{"items": [...], "next_cursor": str | None}`, newest first."""
        params = {"status": status, "limit": limit, "cursor": cursor, "user": user}
        query = {key: value for key, value in params.items() if value is not None}
        return _json_object(self._request("GET", JOBS_PATH, params=query))

    def iter_jobs(
        self, status: str | None = None, limit: int | None = None, user: str | None = None
    ) -> Iterator[Job]:
        """Every job, page after page (LIMIT is the page size)."""
        cursor: str | None = None
        while True:
            page = self.list_jobs(status=status, limit=limit, cursor=cursor, user=user)
            yield from page["items"]
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def logs(self, job_id: str, stream: str | None = None) -> str:
        params = {"stream": stream} if stream else {}
        return self._request("GET", f"{JOBS_PATH}/{job_id}/logs", params=params).text

    def follow_logs(self, job_id: str, stream: str | None = None) -> Iterator[str]:
        """Yield log text as it is written, until the job is final."""
        params = {"follow": "true", **({"stream": stream} if stream else {})}
        try:
            with self._http.stream(
                "GET",
                f"{JOBS_PATH}/{job_id}/logs",
                params=params,
                timeout=httpx.Timeout(None, connect=CONNECT_TIMEOUT_SECONDS),
            ) as response:
                if response.is_error:
                    response.read()
                    _raise_for_error(response)
                yield from response.iter_text()
        except httpx.HTTPError as exc:
            raise ClientError(
                0, "unreachable", f"lost the log stream from {self.base_url}: {exc}"
            ) from exc

    def cancel(self, job_id: str) -> Job:
        return _json_object(self._request("POST", f"{JOBS_PATH}/{job_id}/cancel"))

    def wait(
        self,
        job: Job,
        *,
        on_poll: Callable[[Job, bool], None] | None = None,
        poll_seconds: float = POLL_SECONDS,
        outage_seconds: float = OUTAGE_SECONDS,
    ) -> Job:
        """Follow JOB until it is final and return it; ride out a short server outage.

        Each request waits on the server for the job's next status (`?wait=`), so a
        change is seen at once. ON_POLL, if given, sees the latest known state before each
        request and whether the server answered the last one.
        """
        outage_since: float | None = None
        while job["status"] not in jobs.FINAL_STATES:
            if on_poll is not None:
                on_poll(job, outage_since is None)
            known = job["status"]
            started = time.monotonic()
            try:
                job = self.get_job(job["id"], wait=WAIT_SECONDS, after=known)
                outage_since = None
            except ClientError as exc:
                outage_since = outage_since or time.monotonic()
                if not exc.transient or time.monotonic() - outage_since > outage_seconds:
                    raise
            if job["status"] == known and time.monotonic() - started < poll_seconds:
                # An answer that did not wait (a server without `wait`, an outage): pace.
                time.sleep(poll_seconds)
        return job

    # --- datasets and the leaderboard ---------------------------------------------------

    def datasets(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = _json_object(self._request("GET", DATASETS_PATH))["items"]
        return items

    def leaderboard(self, dataset: str | None = None) -> dict[str, Any]:
        params = {"dataset": dataset} if dataset else {}
        return _json_object(self._request("GET", LEADERBOARD_PATH, params=params))

    def ready(self) -> bool:
        """Whether the server answers /readyz with 200 (database and engine reachable)."""
        try:
            return self._http.get("/readyz").status_code == httpx.codes.OK
        except httpx.HTTPError:
            return False

    # --- plumbing --------------------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ClientError(
                0, "unreachable", f"cannot reach proctor at {self.base_url}: {exc}"
            ) from exc
        _raise_for_error(response)
        return response


def _raise_for_error(response: httpx.Response) -> None:
    if not response.is_error:
        return
    try:
        error = response.json()["error"]
        code, message = str(error["code"]), str(error["message"])
    except (ValueError, KeyError, TypeError):
        excerpt = response.text[:ERROR_BODY_EXCERPT_CHARS].strip()
        code = "http_error"
        message = f"HTTP {response.status_code} from {response.url}: {excerpt or 'no body'}"
    raise ClientError(response.status_code, code, message)


def _json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        value = response.json()
    except ValueError as exc:
        raise ClientError(
            response.status_code, "bad_response", f"{response.url} did not answer JSON"
        ) from exc
    if not isinstance(value, dict):
        raise ClientError(
            response.status_code, "bad_response", f"{response.url} did not answer a JSON object"
        )
    return value
