"""A typed HTTP client of proctor's API, used by the CLI (and usable from scripts)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from proctor import __version__, exceptions

CONNECT_TIMEOUT_SECONDS = 5.0
READ_TIMEOUT_SECONDS = 60.0
USER_AGENT = f"proctor-cli/{__version__}"
CREDENTIALS_MODE = 0o600
Job = dict[str, Any]


class ClientError(exceptions.ProctorError):
    """The API answered with an error, or could not be reached."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass(frozen=True)
class Credentials:
    url: str
    token: str | None
    user: str | None = None


def read_credentials(path: Path) -> Credentials | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        return Credentials(url=str(data["url"]), token=data.get("token"), user=data.get("user"))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ClientError(0, "bad_credentials", f"cannot read {path}: {exc}") from exc


def write_credentials(path: Path, credentials: Credentials) -> None:
    """Write the credentials file, readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, CREDENTIALS_MODE)
    with os.fdopen(fd, "w") as handle:
        json.dump(
            {"url": credentials.url, "token": credentials.token, "user": credentials.user}, handle
        )
    os.replace(temporary, path)


def resolve(
    url: str | None, token: str | None, credentials: Credentials | None, default_url: str
) -> Credentials:
    """Flags and environment first, then the credentials file, then the default URL."""
    return Credentials(
        url=(url or (credentials.url if credentials else None) or default_url).rstrip("/"),
        token=token or (credentials.token if credentials else None),
        user=credentials.user if credentials and not token else None,
    )


class Client:
    def __init__(
        self, base_url: str, token: str | None, transport: httpx.BaseTransport | None = None
    ):
        self.base_url = base_url.rstrip("/")
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

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ClientError(
                0, "unreachable", f"cannot reach proctor at {self.base_url}: {exc}"
            ) from exc
        _raise_for_error(response)
        return response

    def submit(
        self,
        data: bytes,
        *,
        filename: str = "Dockerfile",
        dataset: str | None = None,
        timeout: float | None = None,
        name: str | None = None,
    ) -> Job:
        fields = {"dataset": dataset, "timeout": timeout, "name": name}
        form = {key: str(value) for key, value in fields.items() if value is not None}
        response = self._request(
            "POST", "/api/v1/jobs", files={"file": (filename, data)}, data=form
        )
        job: Job = response.json()
        return job

    def get_job(self, job_id: str) -> Job:
        job: Job = self._request("GET", f"/api/v1/jobs/{job_id}").json()
        return job

    def list_jobs(
        self,
        *,
        status: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
        user: str | None = None,
    ) -> dict[str, Any]:
        params = {"status": status, "limit": limit, "cursor": cursor, "user": user}
        query = {key: value for key, value in params.items() if value is not None}
        page: dict[str, Any] = self._request("GET", "/api/v1/jobs", params=query).json()
        return page

    def iter_jobs(self, *, status: str | None = None, user: str | None = None) -> Iterator[Job]:
        cursor = None
        while True:
            page = self.list_jobs(status=status, cursor=cursor, user=user)
            yield from page["items"]
            cursor = page["next_cursor"]
            if cursor is None:
                return

    def logs(self, job_id: str, stream: str | None = None) -> str:
        params = {"stream": stream} if stream else {}
        return self._request("GET", f"/api/v1/jobs/{job_id}/logs", params=params).text

    def follow_logs(self, job_id: str, stream: str | None = None) -> Iterator[str]:
        params: dict[str, str] = {"follow": "true"}
        if stream:
            params["stream"] = stream
        try:
            with self._http.stream(
                "GET", f"/api/v1/jobs/{job_id}/logs", params=params, timeout=None
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
        job: Job = self._request("POST", f"/api/v1/jobs/{job_id}/cancel").json()
        return job

    def ready(self) -> bool:
        try:
            return self._http.get("/readyz").status_code == httpx.codes.OK
        except httpx.HTTPError:
            return False


def _raise_for_error(response: httpx.Response) -> None:
    if not response.is_error:
        return
    try:
        error = response.json()["error"]
        code, message = str(error["code"]), str(error["message"])
    except (ValueError, KeyError, TypeError):
        code, message = "http_error", f"HTTP {response.status_code}: {response.text[:200]}"
    raise ClientError(response.status_code, code, message)
