"""Job storage: every read and state change of a job, as guarded SQL statements.

State changes made by a worker are conditional on it still holding the job's
lease, so a worker that lost its lease can never overwrite a newer attempt.

UPDATEs skip the ORM's synchronisation of the session (`synchronize_session=False`):
no object in the session holds the rows they change, or the caller refreshes it, and
synchronising may read the changed rows back (a sixth of a phase observation's cost).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import functools
import math
import secrets
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ColumnElement,
    ScalarSelect,
    bindparam,
    case,
    delete,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, aliased

from proctor import exceptions, jobs, users
from proctor.jobs import ErrorCode, Outcome, Status
from proctor.models import (
    Base,
    Job,
    JobContext,
    LogChunk,
    PhaseHistogram,
    User,
    WebhookDelivery,
    utcnow,
)

QUEUE_CHANNEL = "proctor_jobs"  # PostgreSQL NOTIFY channel: a job entered the queue
CHANGES_CHANNEL = "proctor_job_changes"  # PostgreSQL NOTIFY channel: this job's status changed
LIST_LIMIT_DEFAULT = 50
LIST_LIMIT_MAX = 200
PHASE_BUCKETS_SECONDS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600, math.inf)
_ACTIVE = [s.value for s in jobs.ACTIVE_STATES]
_FINAL = [s.value for s in jobs.FINAL_STATES]


_id_lock = threading.Lock()
_last_id_time = [0, 0]  # milliseconds, sequence within that millisecond


def new_job_id() -> str:
    """28 hex characters that sort by creation time: milliseconds since the epoch (12),
    a sequence within the millisecond (4), then randomness (12)."""
    now = int(time.time() * 1000)
    with _id_lock:
        last, sequence = _last_id_time
        # Never go back, even if the clock does; count up within one millisecond.
        now, sequence = (now, 0) if now > last else (last, sequence + 1)
        _last_id_time[:] = [now, sequence]
    return f"{now:012x}{sequence:04x}{secrets.token_hex(6)}"


@dataclass(frozen=True)
class NewJob:
    owner_id: int
    context: bytes
    timeout: float
    name: str | None = None
    dataset: str | None = None
    gpus: int | None = None
    callback_url: str | None = None


_NEW_JOB_COLUMNS = (
    "id",
    "owner_id",
    "name",
    "status",
    "dataset",
    "timeout",
    "gpus",
    "callback_url",
    "context_size",
    "findings",
    "timeline",
    "attempts",
    "cancel_requested",
    "created_at",
)
# Built once, values bound at each call: building and keying a statement per call costs
# more than running it. On the tables, not the mapped classes: an ORM INSERT goes through
# the ORM's bulk insert, which keys the statement again at every call. The context's
# job_id is bound to the job's "id".
_INSERT_JOB = insert(Base.metadata.tables[Job.__tablename__]).values(
    {key: bindparam(key) for key in _NEW_JOB_COLUMNS}
)
_INSERT_CONTEXT = insert(Base.metadata.tables[JobContext.__tablename__]).values(
    job_id=bindparam("id"), data=bindparam("context")
)
# PostgreSQL: both rows and the workers' wake-up in one statement, one round trip. The
# foreign key from the context to the job is checked at the end of the statement.
_INSERT_JOB_AND_NOTIFY = select(func.pg_notify(QUEUE_CHANNEL, "")).add_cte(
    _INSERT_JOB.cte("new_job"), _INSERT_CONTEXT.cte("new_context")
)


def create_job(session: Session, new: NewJob) -> Job:
    """Queue a job: its row and its build context, and wake the workers (PostgreSQL).

    INSERT statements built once, not the ORM's unit of work, which costs more than the
    statements themselves. The returned job is the row as written, not an object of the
    session.
    """
    now = utcnow()
    row: dict[str, Any] = {
        "id": new_job_id(),
        "owner_id": new.owner_id,
        "name": new.name,
        "status": Status.QUEUED.value,
        "dataset": new.dataset,
        "timeout": new.timeout,
        "gpus": new.gpus,
        "callback_url": new.callback_url,
        "context_size": len(new.context),
        "findings": [],
        "timeline": {Status.QUEUED.value: now.isoformat()},
        "attempts": 0,
        "cancel_requested": False,
        "created_at": now,
    }
    if _dialect(session) == "postgresql":
        session.execute(_INSERT_JOB_AND_NOTIFY, {**row, "context": new.context})
    else:
        session.execute(_INSERT_JOB, row)
        session.execute(_INSERT_CONTEXT, {"id": row["id"], "context": new.context})
    return Job(**row)


def notify_queued(session: Session) -> None:
    """Wake listening workers at commit (PostgreSQL; on SQLite they watch the file)."""
    _notify(session, QUEUE_CHANNEL, "")


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


def _notify(session: Session, channel: str, payload: str) -> None:
    if _dialect(session) == "postgresql":
        session.execute(
            text("SELECT pg_notify(:channel, :payload)"), {"channel": channel, "payload": payload}
        )


# --- reading, as a user sees it ------------------------------------------------------


def get_job(session: Session, job_id: str, viewer: users.Viewer) -> Job:
    """The job, if the viewer may see it; another user's job is as good as missing."""
    job = session.get(Job, job_id)
    if job is None or (job.owner_id != viewer.id and not viewer.is_admin):
        raise exceptions.NotFound(f"no job {job_id!r}")
    return job


def job_status(session: Session, job_id: str) -> Status | None:
    """The job's status alone (no access check): what a waiting request rereads."""
    status = session.scalar(select(Job.status).where(Job.id == job_id))
    return None if status is None else Status(status)


def owner_names(
    session: Session, owner_ids: Iterable[int], viewer: users.Viewer | None = None
) -> dict[int, str]:
    """Names of the jobs' owners; the viewer's own name needs no query."""
    ids = set(owner_ids)
    names: dict[int, str] = {}
    if viewer is not None and viewer.id in ids:
        names[viewer.id] = viewer.name
        ids.discard(viewer.id)
    if ids:
        rows = session.execute(select(User.id, User.name).where(User.id.in_(ids)))
        names.update({row.id: row.name for row in rows})
    return names


def encode_cursor(job_id: str) -> str:
    return base64.urlsafe_b64encode(job_id.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        job_id = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise exceptions.InvalidParameter(f"cursor {cursor!r} is not valid") from exc
    if not job_id or not all(c in "0123456789abcdef" for c in job_id):
        raise exceptions.InvalidParameter(f"cursor {cursor!r} is not valid")
    return job_id


def list_jobs(
    session: Session,
    viewer: users.Viewer,
    *,
    status: Status | None = None,
    limit: int = LIST_LIMIT_DEFAULT,
    cursor: str | None = None,
    user: str | None = None,
) -> tuple[Sequence[Job], str | None]:
    """A page of jobs, newest first, and the cursor of the next page (keyset pagination)."""
    if not 1 <= limit <= LIST_LIMIT_MAX:
        raise exceptions.InvalidParameter(f"limit must be between 1 and {LIST_LIMIT_MAX}")
    query = select(Job)
    if not viewer.is_admin:
        query = query.where(Job.owner_id == viewer.id)
    elif user is not None:
        owner = session.scalars(select(User).where(User.name == user)).one_or_none()
        query = query.where(Job.owner_id == (owner.id if owner else -1))
    if status is not None:
        query = query.where(Job.status == status.value)
    if cursor is not None:
        query = query.where(Job.id < decode_cursor(cursor))
    rows = session.scalars(query.order_by(Job.id.desc()).limit(limit + 1)).all()
    if len(rows) > limit:
        return rows[:limit], encode_cursor(rows[limit - 1].id)
    return rows, None


def read_logs(session: Session, job_id: str, stream: jobs.Stream | None = None) -> str:
    chunks, _ = read_log_chunks(session, job_id, stream=stream)
    return "".join(chunks)


def read_log_chunks(
    session: Session, job_id: str, *, stream: jobs.Stream | None = None, after: int = 0
) -> tuple[list[str], int]:
    """Log text after chunk id `after`, and the id to continue from."""
    query = select(LogChunk.id, LogChunk.data).where(LogChunk.job_id == job_id, LogChunk.id > after)
    if stream is not None:
        query = query.where(LogChunk.stream == stream.value)
    rows = session.execute(query.order_by(LogChunk.id)).all()
    return [row.data for row in rows], (rows[-1].id if rows else after)


def queued_count(session: Session, owner_id: int) -> int:
    query = select(func.count()).where(Job.owner_id == owner_id, Job.status == Status.QUEUED.value)
    return int(session.scalar(query) or 0)


def counts_by_status(session: Session) -> dict[str, int]:
    rows = session.execute(select(Job.status, func.count()).group_by(Job.status))
    return {row[0]: row[1] for row in rows}


# --- changes a user asks for ---------------------------------------------------------


def request_cancel(session: Session, job_id: str, viewer: users.Viewer) -> Job:
    """Cancel a queued job at once, or flag an active one for its worker to stop."""
    job = get_job(session, job_id, viewer)
    now = utcnow()
    message = f"cancelled by {viewer.name}"
    cancelled = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == Status.QUEUED.value)
        .values(
            status=Status.CANCELLED.value,
            error_code=ErrorCode.CANCELLED.value,
            error_message=message,
            finished_at=now,
            cancel_requested=True,
            timeline=_timeline_with(job.timeline, Status.CANCELLED, now),
        )
        .execution_options(synchronize_session=False)
    )
    if _rowcount(cancelled) == 0:
        flagged = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status.in_(_ACTIVE))
            .values(cancel_requested=True)
            .execution_options(synchronize_session=False)
        )
        if _rowcount(flagged) == 0:
            session.refresh(job)
            raise exceptions.Conflict(f"job {job_id} is already {job.status}")
    else:
        _notify(session, CHANGES_CHANNEL, job_id)
        enqueue_callbacks(session, [job_id])
    session.refresh(job)
    return job


# --- the worker's side ---------------------------------------------------------------


def claim(
    session: Session, worker_id: str, lease_seconds: float, max_running_per_user: int = 0
) -> Job | None:
    """Take a queued job under a lease, atomically; None when there is nothing to take.

    Fair across users: the job comes from the user whose last job started longest
    ago (never, first), oldest first within a user, so one user's long queue does
    not hold back another's single job; users at `max_running_per_user` (0: no
    cap) wait. One statement, so that two workers never take the same job:
    PostgreSQL skips rows another transaction has locked; SQLite serialises writers.
    """
    candidate = _claim_candidate(capped=max_running_per_user > 0)
    row = session.execute(
        update(Job)
        .where(Job.id == candidate, Job.status == Status.QUEUED.value)
        .values(status=Status.BUILDING.value, lease_owner=worker_id, attempts=Job.attempts + 1)
        .returning(Job.id, Job.timeline)
        .execution_options(synchronize_session=False),
        {"max_running": max_running_per_user},
    ).one_or_none()
    if row is None:
        return None
    claimed, timeline = row
    # The clock is read once this transaction holds the job (on SQLite, the write lock):
    # read before, it could precede the creation of a job committed while it waited.
    now = utcnow()
    session.execute(
        update(Job)
        .where(Job.id == claimed)
        .values(
            started_at=now,
            lease_expires_at=now + dt.timedelta(seconds=lease_seconds),
            timeline=_timeline_with(timeline, Status.BUILDING, now),
        )
        .execution_options(synchronize_session=False)
    )
    _notify(session, CHANGES_CHANNEL, claimed)
    job = session.get(Job, claimed, populate_existing=True)
    assert job is not None
    return job


@functools.cache
def _claim_candidate(*, capped: bool) -> ScalarSelect[str]:
    """The claim's choice of job (see `claim`); built once, as it costs more to build
    (an alias of the jobs table) than to run. Capped: `:max_running` per user."""
    other = aliased(Job)
    last_start = (
        select(func.max(other.started_at)).where(other.owner_id == Job.owner_id).scalar_subquery()
    )
    candidates = select(Job.id).where(Job.status == Status.QUEUED.value)
    if capped:
        running = (
            select(func.count())
            .select_from(other)
            .where(other.owner_id == Job.owner_id, other.status.in_(_ACTIVE))
            .scalar_subquery()
        )
        candidates = candidates.where(running < bindparam("max_running"))
    return (
        candidates.order_by(last_start.asc().nulls_first(), Job.id)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )


def load_context(session: Session, job_id: str) -> bytes | None:
    """The job's stored build context; None if it has none (it always should)."""
    context = session.get(JobContext, job_id)
    return None if context is None else context.data


def advance(session: Session, job_id: str, worker_id: str, status: Status, **values: Any) -> bool:
    """Move a held job to the next active phase, recording `values` (facts for it, as
    `record` does); False if the lease is gone or it was cancelled."""
    now = utcnow()
    moved = session.execute(
        update(Job)
        .where(
            Job.id == job_id,
            Job.lease_owner == worker_id,
            Job.status.in_(_ACTIVE),
            Job.cancel_requested.is_(False),
        )
        .values(status=status.value, timeline=_stamped(session, job_id, status, now), **values)
        .execution_options(synchronize_session=False)
    )
    if _rowcount(moved) == 0:
        return False
    _notify(session, CHANGES_CHANNEL, job_id)
    return True


def record(session: Session, job_id: str, worker_id: str, **values: Any) -> bool:
    """Store facts learnt during an attempt (image id, sandbox profile, findings)."""
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.lease_owner == worker_id, Job.status.in_(_ACTIVE))
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return _rowcount(result) == 1


def finish(session: Session, job_id: str, worker_id: str, outcome: Outcome, **values: Any) -> bool:
    """Record the final outcome of a held job, and `values` (facts of the attempt, as
    `record` stores); False if the lease was lost meanwhile."""
    assert outcome.status.is_final
    now = utcnow()
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.lease_owner == worker_id, Job.status.in_(_ACTIVE))
        .values(
            status=outcome.status.value,
            performance=outcome.performance,
            metrics=outcome.metrics,
            exit_code=outcome.exit_code,
            error_code=outcome.error.code.value if outcome.error else None,
            error_message=outcome.error.message if outcome.error else None,
            finished_at=now,
            lease_owner=None,
            lease_expires_at=None,
            timeline=_stamped(session, job_id, outcome.status, now),
            **values,
        )
        .execution_options(synchronize_session=False)
    )
    if _rowcount(result) == 0:
        return False
    _notify(session, CHANGES_CHANNEL, job_id)
    enqueue_callbacks(session, [job_id])
    return True


def give_back(session: Session, job_id: str, worker_id: str) -> bool:
    """Return a held job to the queue untried, as a worker that stops cleanly does."""
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.lease_owner == worker_id, Job.status.in_(_ACTIVE))
        .values(
            status=Status.QUEUED.value,
            lease_owner=None,
            lease_expires_at=None,
            attempts=Job.attempts - 1,
        )
        .execution_options(synchronize_session=False)
    )
    notify_queued(session)
    return _rowcount(result) == 1


def renew_leases(
    session: Session, worker_id: str, job_ids: Sequence[str], lease_seconds: float
) -> set[str]:
    """Extend the leases this worker holds; return the ids it still holds."""
    if not job_ids:
        return set()
    session.execute(
        update(Job)
        .where(Job.id.in_(job_ids), Job.lease_owner == worker_id, Job.status.in_(_ACTIVE))
        .values(lease_expires_at=utcnow() + dt.timedelta(seconds=lease_seconds))
        .execution_options(synchronize_session=False)
    )
    return set(
        session.scalars(
            select(Job.id).where(
                Job.id.in_(job_ids), Job.lease_owner == worker_id, Job.status.in_(_ACTIVE)
            )
        )
    )


def lease_holders(session: Session, job_ids: Iterable[str]) -> dict[str, str | None]:
    """For each of the given jobs this database knows, the worker holding it, or None
    when the job is not active. Jobs of another database are absent."""
    ids = list(job_ids)
    if not ids:
        return {}
    rows = session.execute(select(Job.id, Job.status, Job.lease_owner).where(Job.id.in_(ids)))
    return {id_: (owner or "") if status in _ACTIVE else None for id_, status, owner in rows}


def cancel_requested(session: Session, job_ids: Sequence[str]) -> set[str]:
    if not job_ids:
        return set()
    return set(session.scalars(select(Job.id).where(Job.id.in_(job_ids), Job.cancel_requested)))


def release_expired(session: Session, max_attempts: int) -> int:
    """Give back jobs whose worker stopped renewing its lease; end them after max_attempts.

    Returns how many jobs were re-queued or ended.
    """
    now = utcnow()
    expired = (Job.status.in_(_ACTIVE), Job.lease_expires_at < now)
    cancelled = _end_expired(
        session,
        (*expired, Job.cancel_requested.is_(True)),
        now,
        ErrorCode.CANCELLED,
        "cancelled while its worker was unreachable",
    )
    lost = _end_expired(
        session,
        (*expired, Job.attempts >= max_attempts),
        now,
        ErrorCode.LOST,
        f"the workers running this job stopped responding {max_attempts} times",
    )
    requeued = session.execute(
        update(Job)
        .where(*expired)
        .values(status=Status.QUEUED.value, lease_owner=None, lease_expires_at=None)
        .execution_options(synchronize_session=False)
    )
    if _rowcount(requeued):
        notify_queued(session)
        _notify(session, CHANGES_CHANNEL, "")  # no payload: any job may have changed
    for job_id in (*cancelled, *lost):
        _notify(session, CHANGES_CHANNEL, job_id)
    enqueue_callbacks(session, [*cancelled, *lost])
    return len(cancelled) + len(lost) + _rowcount(requeued)


# --- webhooks ------------------------------------------------------------------------

DELIVERY_PENDING = "pending"  # due at next_attempt_at (see proctor.webhooks)


def _end_expired(
    session: Session,
    where: tuple[ColumnElement[bool], ...],
    now: dt.datetime,
    code: ErrorCode,
    message: str,
) -> Sequence[str]:
    """End the expired jobs WHERE selects with CODE; their ids."""
    status = Status.CANCELLED if code is ErrorCode.CANCELLED else Status.FAILED
    return (
        session.execute(
            update(Job)
            .where(*where)
            .values(
                status=status.value,
                error_code=code.value,
                error_message=message,
                finished_at=now,
                lease_owner=None,
                lease_expires_at=None,
            )
            .returning(Job.id)
            .execution_options(synchronize_session=False)
        )
        .scalars()
        .all()
    )


def enqueue_callbacks(session: Session, job_ids: Sequence[str]) -> None:
    """Queue the webhook of each of these jobs that asked for one; they just became final."""
    if not job_ids:
        return
    now = utcnow()
    rows = session.execute(
        select(Job.id, Job.status).where(Job.id.in_(job_ids), Job.callback_url.is_not(None))
    ).all()
    for job_id, status in rows:
        session.add(
            WebhookDelivery(
                id=secrets.token_hex(16),
                job_id=job_id,
                event=f"job.{status}",
                state=DELIVERY_PENDING,
                attempts=0,
                next_attempt_at=now,
                created_at=now,
            )
        )
    session.flush()


def deliveries(session: Session, job_ids: Iterable[str]) -> dict[str, WebhookDelivery]:
    """The webhook delivery of each of these jobs that has one, by job id."""
    ids = list(job_ids)
    if not ids:
        return {}
    rows = session.scalars(select(WebhookDelivery).where(WebhookDelivery.job_id.in_(ids)))
    return {row.job_id: row for row in rows}


def append_log(session: Session, job_id: str, stream: jobs.Stream, data: str) -> None:
    if data:
        session.add(LogChunk(job_id=job_id, stream=stream.value, data=data))


def clear_logs(session: Session, job_id: str) -> None:
    """Forget the output of an earlier attempt before a new one starts."""
    session.execute(delete(LogChunk).where(LogChunk.job_id == job_id))


def observe_phase(session: Session, phase: Status, seconds: float) -> None:
    """Add one duration to the shared cumulative histogram of a phase."""
    observe_phases(session, [(phase, seconds)])


def observe_phases(session: Session, timings: Iterable[tuple[Status, float]]) -> None:
    """Add durations to the shared cumulative histograms of their phases: one statement
    per phase when its rows exist, as they do after its first observation."""
    by_phase: dict[Status, list[float]] = {}
    for phase, seconds in timings:
        by_phase.setdefault(phase, []).append(seconds)
    for phase, durations in by_phase.items():
        added = {
            bucket_label(bound): float(sum(1 for d in durations if d <= bound))
            for bound in PHASE_BUCKETS_SECONDS
        }
        added = {bucket: count for bucket, count in added.items() if count}
        added["sum"] = sum(durations)
        if not _add_observations(session, phase, added):
            _ensure_histogram(session, phase)
            _add_observations(session, phase, added)


def _add_observations(session: Session, phase: Status, added: dict[str, float]) -> bool:
    result = session.execute(
        update(PhaseHistogram)
        .where(PhaseHistogram.phase == phase.value, PhaseHistogram.bucket.in_(list(added)))
        .values(value=PhaseHistogram.value + case(added, value=PhaseHistogram.bucket))
        .execution_options(synchronize_session=False)
    )
    return _rowcount(result) > 0


def phase_histograms(session: Session) -> dict[str, dict[str, float]]:
    result: dict[str, dict[str, float]] = {}
    for row in session.scalars(select(PhaseHistogram)):
        result.setdefault(row.phase, {})[row.bucket] = row.value
    return result


def bucket_label(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else repr(float(bound))


def _ensure_histogram(session: Session, phase: Status) -> None:
    labels = [bucket_label(b) for b in PHASE_BUCKETS_SECONDS] + ["sum"]
    rows = [{"phase": phase.value, "bucket": label, "value": 0.0} for label in labels]
    upsert = pg_insert if _dialect(session) == "postgresql" else sqlite_insert
    session.execute(upsert(PhaseHistogram).values(rows).on_conflict_do_nothing())


# A change of status notes in the job's timeline when it entered the new state, in the
# UPDATE that changes it, and tells whoever waits on the job (`_notify` on
# CHANGES_CHANNEL once the UPDATE took). The timeline is read first: only the holder of
# the job's lease changes an active job, and that UPDATE is conditional on the lease.


def _stamped(session: Session, job_id: str, status: Status, when: dt.datetime) -> dict[str, str]:
    """The job's timeline with `status` entered at `when`."""
    timeline = session.scalar(select(Job.timeline).where(Job.id == job_id))
    return _timeline_with(timeline, status, when)


def _timeline_with(
    timeline: dict[str, str] | None, status: Status, when: dt.datetime
) -> dict[str, str]:
    return {**(timeline or {}), status.value: when.isoformat()}


def _rowcount(result: Any) -> int:
    return int(result.rowcount)
