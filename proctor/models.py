"""The database tables, as SQLAlchemy 2 ORM models; Alembic migrations follow these."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; use UTC")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        assert isinstance(value, dt.datetime)
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    # sha256 of the bearer token: tokens are 256-bit random, so a fast hash suffices.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    # Key of the HMAC that signs this user's webhooks; kept in clear, since proctor must
    # compute the HMAC. None for users created before webhooks existed, until rotated.
    webhook_secret: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Job(Base):
    __tablename__ = "jobs"

    # Time-ordered ids: newest-first listing and keyset pagination sort on the key alone.
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    name: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16))
    dataset: Mapped[str | None] = mapped_column(String(200))
    timeout: Mapped[float] = mapped_column(Float)
    # GPUs the job asked for: None for none, a count, or -1 for all.
    gpus: Mapped[int | None] = mapped_column(Integer)
    context_size: Mapped[int] = mapped_column(Integer)
    performance: Mapped[float | None] = mapped_column(Float)
    metrics: Mapped[dict[str, float] | None] = mapped_column(JSON)
    error_code: Mapped[str | None] = mapped_column(String(32))
    error_message: Mapped[str | None] = mapped_column(Text)
    exit_code: Mapped[int | None] = mapped_column(Integer)
    image_id: Mapped[str | None] = mapped_column(String(100))
    findings: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    sandbox: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # When each phase began, by status name: the job's timeline.
    timeline: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # Where to POST the job once it is final (webhook), if anywhere.
    callback_url: Mapped[str | None] = mapped_column(String(2048))
    # The signed result record of a succeeded job (see proctor.results).
    result_record: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    result_signature: Mapped[str | None] = mapped_column(String(200))
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    lease_owner: Mapped[str | None] = mapped_column(String(100))
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        Index("ix_jobs_status_id", "status", "id"),
        Index("ix_jobs_owner_id_id", "owner_id", "id"),
        Index("ix_jobs_status_lease", "status", "lease_expires_at"),
        # Fair scheduling looks up each user's latest start and running jobs.
        Index("ix_jobs_owner_started", "owner_id", "started_at"),
        Index("ix_jobs_owner_status", "owner_id", "status"),
    )


class JobContext(Base):
    """The submitted build context, kept in the database so any worker can build it."""

    __tablename__ = "job_contexts"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class LogChunk(Base):
    """A piece of a job's build or run output, in arrival order."""

    __tablename__ = "log_chunks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    stream: Mapped[str] = mapped_column(String(8))
    data: Mapped[str] = mapped_column(Text)

    __table_args__ = (Index("ix_log_chunks_job_stream_id", "job_id", "stream", "id"),)


class PhaseHistogram(Base):
    """Cumulative phase-duration histogram, shared by every worker and read by /metrics."""

    __tablename__ = "phase_histogram"

    phase: Mapped[str] = mapped_column(String(16), primary_key=True)
    # Upper bound of the bucket as Prometheus writes it ("0.5", "+Inf"), or "sum".
    bucket: Mapped[str] = mapped_column(String(16), primary_key=True)
    value: Mapped[float] = mapped_column(Float, default=0.0)


class WebhookDelivery(Base):
    """The webhook of one final job: due, delivered or given up, with its attempts."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    job_id: Mapped[str] = mapped_column(
        ForeignKey("jobs.id", ondelete="CASCADE"), unique=True, index=True
    )
    event: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # When the next attempt is due; pushed ahead while an attempt is in flight.
    next_attempt_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (Index("ix_webhook_deliveries_state_due", "state", "next_attempt_at"),)
