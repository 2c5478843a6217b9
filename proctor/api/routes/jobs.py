"""Routes of `/api/v1/jobs`: submit, read, list, logs, cancel."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import PlainTextResponse, StreamingResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from proctor import changes, checks, db, exceptions, jobs, results, store, submissions, users
from proctor.api.deps import CurrentUser, SettingsDep
from proctor.api.schemas import (
    BatchItem,
    BatchOut,
    ErrorBody,
    ErrorDetail,
    JobOut,
    JobPage,
    SignedResult,
)
from proctor.api.threads import run_blocking
from proctor.cache import ExpiringCache
from proctor.config import Settings
from proctor.models import Job

router = APIRouter(prefix="/api/v1/jobs", tags=["jobs"])

FOLLOW_POLL_SECONDS = 0.5
WAIT_MAX_SECONDS = 60
WAIT_RECHECK_SECONDS = 1.0  # a waiting request reads its job at least this often
# Answers for final jobs kept per process (see _answer): how long, and how many.
FINAL_JOB_SECONDS = 60.0
FINAL_JOB_ENTRIES = 4096
MULTIPART_OVERHEAD_BYTES = 64 * 1024
FORM_FIELD_MAX_BYTES = 64 * 1024
RAW_TYPES = frozenset(
    {
        "application/octet-stream",
        "text/plain",
        "application/x-tar",
        "application/gzip",
        "application/x-gzip",
    }
)
ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorBody} for code in (400, 401, 404, 409, 413, 415, 422, 429, 503)
}
JSON_MEDIA_TYPE = "application/json"


def _json(
    model: BaseModel, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """The model's JSON as the response, as FastAPI would write it for `response_model`.

    A route that returns a `Response` skips FastAPI validating the model it has just built
    a second time and encoding it through `jsonable_encoder`: the bytes are the same.
    """
    return Response(
        model.model_dump_json(),
        status_code=status_code,
        headers=headers,
        media_type=JSON_MEDIA_TYPE,
    )


def _job_out(settings: Settings, job_id: str, viewer: users.Viewer) -> JobOut:
    return _read_job(settings, job_id, viewer)[1]


def _read_job(settings: Settings, job_id: str, viewer: users.Viewer) -> tuple[Job, JobOut]:
    with db.session_scope(settings) as session:
        job = store.get_job(session, job_id, viewer)
        names = store.owner_names(session, [job.owner_id], viewer)
        delivery = store.deliveries(session, [job.id]).get(job.id) if job.callback_url else None
        return job, JobOut.of(job, names.get(job.owner_id), delivery)


def _read_status(settings: Settings, job_id: str) -> jobs.Status | None:
    with db.session_scope(settings) as session:
        return store.job_status(session, job_id)


FinalJobs = ExpiringCache[str, tuple[int, bytes]]
"""Answers for final jobs: job id -> (owner id, the job's JSON)."""


def _final_answer(final_jobs: FinalJobs, job_id: str, viewer: users.Viewer) -> Response | None:
    """The kept answer for a final job, if there is one and the viewer may see the job
    (else the database path answers, with its 404)."""
    kept = final_jobs.get(job_id)
    if kept is None or not (viewer.is_admin or viewer.id == kept[0]):
        return None
    return Response(kept[1], media_type=JSON_MEDIA_TYPE)


def _answer(final_jobs: FinalJobs, job: Job, out: JobOut) -> Response:
    """The job's JSON; kept when the job is final and has no callback, since nothing
    changes such a job any more (a callback's delivery state still does)."""
    response = _json(out)
    if out.status.is_final and job.callback_url is None:
        final_jobs.put(job.id, (job.owner_id, bytes(response.body)))
    return response


async def _read_upload(request: Request, settings: Settings) -> submissions.Request:
    limit = settings.max_upload_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + MULTIPART_OVERHEAD_BYTES:
        raise exceptions.UploadTooLarge(
            f"the upload is {declared} bytes, over the {limit}-byte limit"
        )
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        return await _read_form(request, limit)
    if content_type in RAW_TYPES or not content_type:
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise exceptions.UploadTooLarge(f"the upload is over the {limit}-byte limit")
        params = request.query_params
        return submissions.Request(
            data=bytes(body),
            name=params.get("name"),
            dataset=params.get("dataset"),
            timeout=_timeout(params.get("timeout")),
            gpus=params.get("gpus"),
            callback_url=params.get("callback_url"),
        )
    raise exceptions.UnsupportedUpload(
        f"content type {content_type!r} is not accepted: send multipart/form-data with a "
        "'file' part, or the Dockerfile or archive as application/octet-stream"
    )


async def _read_form(request: Request, limit: int) -> submissions.Request:
    try:
        form = await request.form(max_files=1, max_fields=16, max_part_size=FORM_FIELD_MAX_BYTES)
    except Exception as exc:  # python-multipart raises several unrelated types
        raise exceptions.UnreadableUpload(f"the multipart body cannot be read: {exc}") from exc
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise exceptions.UnreadableUpload("the multipart body has no file part named 'file'")
        data = await upload.read(limit + 1)
        if len(data) > limit:
            raise exceptions.UploadTooLarge(f"the upload is over the {limit}-byte limit")

        def text(key: str) -> str | None:
            value = form.get(key)
            return value if isinstance(value, str) else None

        return submissions.Request(
            data=data,
            name=text("name"),
            dataset=text("dataset"),
            timeout=_timeout(text("timeout")),
            gpus=text("gpus"),
            callback_url=text("callback_url"),
        )
    finally:
        await form.close()


def _timeout(value: str | None) -> float | None:
    if value is None or value.strip() == "":
        return None
    try:
        return float(value)
    except ValueError as exc:
        raise exceptions.InvalidParameter(f"timeout {value!r} is not a number of seconds") from exc


@router.post(
    "",
    status_code=201,
    response_model=JobOut,
    responses=ERRORS,
    openapi_extra={
        "requestBody": {
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file"],
                        "properties": {
                            "file": {"type": "string", "format": "binary"},
                            "dataset": {"type": "string"},
                            "timeout": {"type": "number"},
                            "name": {"type": "string"},
                            "gpus": {"type": "string", "description": "a count, or all"},
                            "callback_url": {
                                "type": "string",
                                "description": "POSTed the job JSON, signed, once it is final",
                            },
                        },
                    }
                },
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            }
        }
    },
)
async def submit_job(request: Request, user: CurrentUser, settings: SettingsDep) -> Response:
    """Submit a Dockerfile or a .tar/.tar.gz build context."""
    upload = await _read_upload(request, settings)
    job = await run_blocking(submissions.submit, settings, user.id, upload)
    return _json(
        JobOut.of(job, user.name), status_code=201, headers={"Location": f"/api/v1/jobs/{job.id}"}
    )


BATCH_ENTRY_FIELDS = ("name", "dataset", "timeout", "callback_url", "gpus")
BATCH_SCHEMA = {
    "type": "object",
    "required": ["file"],
    "properties": {
        "file": {
            "type": "array",
            "items": {"type": "string", "format": "binary"},
            "description": "one part per job, each a Dockerfile or a .tar/.tar.gz context",
        },
        "entries": {
            "type": "string",
            "description": (
                "optional JSON array, one object per file in the same order, with any of "
                "name, dataset, timeout, callback_url, gpus; "
                'e.g. [{"name": "a", "dataset": "d"}, {}]'
            ),
        },
    },
}


@router.post(
    "/batch",
    response_model=BatchOut,
    responses=ERRORS,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"multipart/form-data": {"schema": BATCH_SCHEMA}},
        }
    },
)
async def submit_batch(request: Request, user: CurrentUser, settings: SettingsDep) -> BatchOut:
    """Submit several jobs at once; each entry gets its job or its own error, in order."""
    entries = await _read_batch(request, settings)
    items = []
    for index, entry in enumerate(entries):
        try:
            if isinstance(entry, exceptions.ProctorError):
                raise entry
            job = await run_in_threadpool(submissions.submit, settings, user.id, entry)
            items.append(BatchItem(index=index, job=JobOut.of(job, user.name)))
        except exceptions.SubmissionError as exc:
            items.append(
                BatchItem(index=index, error=ErrorDetail(code=exc.code, message=exc.message))
            )
    return BatchOut(items=items)


async def _read_batch(
    request: Request, settings: Settings
) -> list[submissions.Request | exceptions.SubmissionError]:
    """The entries of a batch, each a request or the error that makes it unusable."""
    total_cap, count_cap = settings.batch_max_bytes, settings.batch_max_jobs
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > total_cap + MULTIPART_OVERHEAD_BYTES:
        raise exceptions.UploadTooLarge(
            f"the batch is {declared} bytes, over the {total_cap}-byte limit"
        )
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "multipart/form-data":
        raise exceptions.UnsupportedUpload(
            "a batch is multipart/form-data: one 'file' part per job, and an optional "
            "'entries' JSON array"
        )
    try:
        form = await request.form(
            max_files=count_cap + 1, max_fields=8, max_part_size=FORM_FIELD_MAX_BYTES
        )
    except Exception as exc:  # python-multipart raises several unrelated types
        raise exceptions.UnreadableUpload(f"the multipart body cannot be read: {exc}") from exc
    try:
        uploads = [part for part in form.getlist("file") if isinstance(part, UploadFile)]
        if not uploads:
            raise exceptions.UnreadableUpload("the batch has no file part named 'file'")
        if len(uploads) > count_cap:
            raise exceptions.InvalidParameter(
                f"the batch has more than {count_cap} entries, the most this server takes"
            )
        options = _batch_options(form.get("entries"), len(uploads))
        found: list[submissions.Request | exceptions.SubmissionError] = []
        total = 0
        for upload, option in zip(uploads, options, strict=True):
            data = await upload.read(settings.max_upload_bytes + 1)
            total += len(data)
            if total > total_cap:
                raise exceptions.UploadTooLarge(f"the batch is over the {total_cap}-byte limit")
            if isinstance(option, exceptions.SubmissionError):
                found.append(option)
            elif len(data) > settings.max_upload_bytes:
                found.append(
                    exceptions.UploadTooLarge(
                        f"the upload is over the {settings.max_upload_bytes}-byte limit"
                    )
                )
            else:
                found.append(submissions.Request(data=data, **option))
        return found
    finally:
        await form.close()


def _batch_options(raw: object, count: int) -> list[dict[str, Any] | exceptions.SubmissionError]:
    """Each entry's fields from the `entries` JSON array, or the error of a bad entry."""
    if raw is None or raw == "":
        return [{} for _ in range(count)]
    try:
        values = json.loads(str(raw))
    except ValueError as exc:
        raise exceptions.InvalidParameter(f"entries is not JSON: {exc}") from exc
    if not isinstance(values, list) or len(values) != count:
        raise exceptions.InvalidParameter(
            f"entries must be a JSON array with one object per file ({count})"
        )
    options: list[dict[str, Any] | exceptions.SubmissionError] = []
    for value in values:
        if not isinstance(value, dict):
            options.append(exceptions.InvalidParameter("the entry is not a JSON object"))
            continue
        unknown = sorted(set(value) - set(BATCH_ENTRY_FIELDS))
        if unknown:
            options.append(
                exceptions.InvalidParameter(f"unknown field(s) in the entry: {', '.join(unknown)}")
            )
            continue
        try:
            option = {
                key: None if value.get(key) is None else str(value[key])
                for key in BATCH_ENTRY_FIELDS
            }
            timeout = _timeout(option.pop("timeout"))
        except exceptions.InvalidParameter as exc:
            options.append(exc)
            continue
        options.append({**option, "timeout": timeout})
    return options


@router.get("", response_model=JobPage, responses=ERRORS)
def list_jobs(
    user: CurrentUser,
    settings: SettingsDep,
    status: jobs.Status | None = None,
    limit: Annotated[int, Query(ge=1, le=store.LIST_LIMIT_MAX)] = store.LIST_LIMIT_DEFAULT,
    cursor: str | None = None,
    owner: Annotated[str | None, Query(alias="user")] = None,
) -> Response:
    """List your jobs (an admin: everyone's), newest first."""
    with db.session_scope(settings) as session:
        rows, next_cursor = store.list_jobs(
            session, user, status=status, limit=limit, cursor=cursor, user=owner
        )
        names = store.owner_names(session, (job.owner_id for job in rows), user)
        sent = store.deliveries(session, (job.id for job in rows if job.callback_url))
        items = [JobOut.of(job, names.get(job.owner_id), sent.get(job.id)) for job in rows]
    return _json(JobPage(items=items, next_cursor=next_cursor))


@router.get("/{job_id}", response_model=JobOut, responses=ERRORS)
async def get_job(
    job_id: str,
    request: Request,
    user: CurrentUser,
    settings: SettingsDep,
    wait: Annotated[
        float,
        Query(
            ge=0,
            le=WAIT_MAX_SECONDS,
            description="seconds to hold the answer until the job changes (see `after`)",
        ),
    ] = 0,
    after: Annotated[
        jobs.Status | None,
        Query(
            description="with `wait`: answer once the status is no longer this one "
            "(the one the client knows); without it, once the job is final"
        ),
    ] = None,
) -> Response:
    """One job. With `wait`, the answer comes as soon as the job changes, or when the
    time is up (the job as it is then): no need to poll."""
    final_jobs: FinalJobs = request.app.state.final_jobs
    kept = _final_answer(final_jobs, job_id, user)
    if kept is not None:  # a final job never changes: no database, and no wait
        return kept
    if wait == 0:
        return _answer(final_jobs, *await run_blocking(_read_job, settings, job_id, user))
    watch: changes.JobWatch = request.app.state.job_watch
    deadline = time.monotonic() + wait

    def answers(status: jobs.Status | None) -> bool:
        return status is None or status.is_final or (after is not None and status != after)

    with watch.subscribe(job_id) as changed:  # before reading: no change slips between
        job, out = await run_blocking(_read_job, settings, job_id, user)  # may be a 404
        status: jobs.Status | None = out.status
        while not answers(status):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            # A change wakes this at once; the timeout is the fallback for a lost notice,
            # and where a client that went away is noticed (asking on every change costs
            # more than the status read: a wake is frequent on SQLite).
            try:
                async with asyncio.timeout(min(left, WAIT_RECHECK_SECONDS)):
                    await changed.wait()
            except TimeoutError:
                if await request.is_disconnected():
                    break
            changed.clear()
            # Any commit may wake this (on SQLite, any change to the database): the
            # status alone says whether to answer, for a fraction of a whole read.
            status = await run_blocking(_read_status, settings, job_id)
    if status != out.status:
        job, out = await run_blocking(_read_job, settings, job_id, user)
    return _answer(final_jobs, job, out)


@router.get("/{job_id}/result", response_model=SignedResult, responses=ERRORS)
def job_result(job_id: str, user: CurrentUser, settings: SettingsDep) -> SignedResult:
    """The signed result record of a succeeded job (409 for any other job)."""
    with db.session_scope(settings) as session:
        job = store.get_job(session, job_id, user)
        return SignedResult(**results.signed_result(job))


@router.post("/{job_id}/cancel", status_code=202, response_model=JobOut, responses=ERRORS)
def cancel_job(job_id: str, user: CurrentUser, settings: SettingsDep) -> Response:
    """Cancel a job that has not finished; its container is killed within seconds."""
    with db.session_scope(settings) as session:
        job = store.request_cancel(session, job_id, user)
        names = store.owner_names(session, [job.owner_id], user)
        delivery = store.deliveries(session, [job.id]).get(job.id) if job.callback_url else None
        out = JobOut.of(job, names.get(job.owner_id), delivery)
    return _json(out, status_code=202)


@router.get(
    "/{job_id}/logs",
    response_class=PlainTextResponse,
    responses={**ERRORS, 200: {"content": {"text/plain": {}}}},
)
async def job_logs(
    job_id: str,
    user: CurrentUser,
    settings: SettingsDep,
    stream: jobs.Stream | None = None,
    follow: bool = False,
) -> Response:
    """Build and run logs as text; `follow=true` streams them until the job is final."""
    job = await run_in_threadpool(_job_out, settings, job_id, user)
    if not follow:
        text = await run_in_threadpool(_logs_text, settings, job_id, stream)
        if stream in (None, jobs.Stream.BUILD):
            text = checks.log_header([f.model_dump() for f in job.findings]) + text
        return PlainTextResponse(text)
    return StreamingResponse(
        _follow(settings, job_id, stream), media_type="text/plain; charset=utf-8"
    )


def _logs_text(settings: Settings, job_id: str, stream: jobs.Stream | None) -> str:
    with db.session_scope(settings) as session:
        return store.read_logs(session, job_id, stream)


def _poll_logs(
    settings: Settings, job_id: str, stream: jobs.Stream | None, after: int
) -> tuple[list[str], int, bool]:
    with db.session_scope(settings) as session:
        status = session.get_one(Job, job_id).status
        chunks, after = store.read_log_chunks(session, job_id, stream=stream, after=after)
    return chunks, after, jobs.Status(status).is_final


async def _follow(
    settings: Settings, job_id: str, stream: jobs.Stream | None
) -> AsyncIterator[str]:
    after = 0
    while True:
        chunks, after, final = await run_in_threadpool(_poll_logs, settings, job_id, stream, after)
        for chunk in chunks:
            yield chunk
        if final:
            # The status was read before the chunks, and a worker stores all output
            # before the final state: nothing can follow.
            return
        await asyncio.sleep(FOLLOW_POLL_SECONDS)
