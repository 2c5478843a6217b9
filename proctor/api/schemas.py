"""The JSON shapes of the HTTP API (they are the OpenAPI document's schemas)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, Field

from proctor import datasets, leaderboard
from proctor.datasets import Direction
from proctor.jobs import Status
from proctor.models import Job, WebhookDelivery
from proctor.webhooks import DeliveryState


class ErrorDetail(BaseModel):
    code: str = Field(description="machine-readable error code")
    message: str = Field(description="one human sentence naming the cause")


class ErrorBody(BaseModel):
    error: ErrorDetail


class FindingOut(BaseModel):
    rule: str
    severity: str
    message: str
    line: int | None = None
    source: str | None = None  # the check: hadolint, image, trivy, grype
    path: str | None = None  # the file in the image
    package: str | None = None  # vulnerabilities: the package, its version, the fix
    installed_version: str | None = None
    fixed_version: str | None = None
    accepted: bool = False  # an accepted risk (setting): kept, never blocks


class JobLinks(BaseModel):
    self: str
    logs: str


class CallbackOut(BaseModel):
    url: str
    state: DeliveryState
    attempts: int = Field(description="delivery attempts so far")
    last_error: str | None = Field(description="why the last attempt failed")
    delivered_at: dt.datetime | None

    @classmethod
    def of(cls, url: str, delivery: WebhookDelivery | None) -> CallbackOut:
        if delivery is None:
            return cls(
                url=url, state=DeliveryState.WAITING, attempts=0, last_error=None, delivered_at=None
            )
        return cls(
            url=url,
            state=DeliveryState(delivery.state),
            attempts=delivery.attempts,
            last_error=delivery.last_error,
            delivered_at=delivery.delivered_at,
        )


class JobOut(BaseModel):
    id: str
    name: str | None
    owner: str | None = Field(None, description="the user who submitted the job")
    status: Status
    performance: float | None
    metrics: dict[str, float] | None
    error: ErrorDetail | None
    exit_code: int | None
    image_id: str | None
    dataset: str | None
    timeout: float
    gpus: int | None = Field(None, description="GPUs asked for: a count, or -1 for all")
    findings: list[FindingOut]
    attempts: int
    sandbox: dict[str, Any] | None
    timeline: dict[str, str] = Field(description="when the job entered each state (RFC 3339)")
    callback: CallbackOut | None = Field(
        None, description="the webhook called when the job is final, and how its delivery went"
    )
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    links: JobLinks

    @classmethod
    def of(
        cls, job: Job, owner: str | None = None, delivery: WebhookDelivery | None = None
    ) -> JobOut:
        base = f"/api/v1/jobs/{job.id}"
        error = (
            ErrorDetail(code=job.error_code, message=job.error_message or "")
            if job.error_code
            else None
        )
        return cls(
            id=job.id,
            name=job.name,
            owner=owner,
            status=Status(job.status),
            performance=job.performance,
            metrics=job.metrics,
            error=error,
            exit_code=job.exit_code,
            image_id=job.image_id,
            dataset=job.dataset,
            timeout=job.timeout,
            gpus=job.gpus,
            findings=[FindingOut(**f) for f in job.findings or []],
            attempts=job.attempts,
            sandbox=job.sandbox,
            timeline=job.timeline or {},
            callback=CallbackOut.of(job.callback_url, delivery) if job.callback_url else None,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            links=JobLinks(self=base, logs=f"{base}/logs"),
        )


def webhook_body(job: Job, owner: str | None, delivery: WebhookDelivery | None) -> bytes:
    """A webhook's body: the job JSON exactly as the API returns it."""
    return JobOut.of(job, owner, delivery).model_dump_json().encode()


class SignedResult(BaseModel):
    record: dict[str, Any] = Field(description="what proctor vouches for (see docs/results.md)")
    signature: str = Field(description="base64 Ed25519 signature of the canonical record")
    key_id: str | None = Field(description="fingerprint of the key that signed it")


class SigningKeyOut(BaseModel):
    algorithm: str
    key_id: str = Field(description="first 32 hex digits of the SHA-256 of the raw key")
    public_key_pem: str
    public_key_raw: str = Field(description="the 32-byte raw key, base64")


class WebhookSecretOut(BaseModel):
    webhook_secret: str = Field(description="the new secret; shown once")


class BatchItem(BaseModel):
    index: int = Field(description="position of the entry in the request")
    job: JobOut | None = None
    error: ErrorDetail | None = None


class BatchOut(BaseModel):
    items: list[BatchItem] = Field(description="one per entry, in the order sent")


class JobPage(BaseModel):
    items: list[JobOut]
    next_cursor: str | None


class Health(BaseModel):
    status: str
    checks: dict[str, str] = Field(default_factory=dict)


class DatasetOut(BaseModel):
    name: str
    description: str
    direction: Direction = Field(description="which way the leaderboard ranks `perf`")
    files: int = Field(description="regular files in the dataset")
    size_bytes: int

    @classmethod
    def of(cls, dataset: datasets.Dataset) -> DatasetOut:
        return cls(
            name=dataset.name,
            description=dataset.description,
            direction=dataset.direction,
            files=dataset.files,
            size_bytes=dataset.size_bytes,
        )


class DatasetList(BaseModel):
    items: list[DatasetOut]


class ScoreOut(BaseModel):
    user: str
    job_id: str
    performance: float
    finished_at: dt.datetime


class LeaderboardEntry(ScoreOut):
    rank: int


class LeaderboardOut(BaseModel):
    dataset: str | None = Field(description="null: jobs submitted without a dataset")
    direction: Direction
    entries: list[LeaderboardEntry] = Field(description="each user's best job, best first")
    history: list[ScoreOut] = Field(
        description="every succeeded job's score, oldest first (the most recent ones)"
    )

    @classmethod
    def of(cls, board: leaderboard.Board) -> LeaderboardOut:
        return cls(
            dataset=board.dataset,
            direction=board.direction,
            entries=[
                LeaderboardEntry(rank=entry.rank, **vars(entry.score)) for entry in board.entries
            ],
            history=[ScoreOut(**vars(score)) for score in board.history],
        )
