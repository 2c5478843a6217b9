"""Webhooks: POST a final job's JSON to the URL it named, signed, retried until delivered.

Deliveries are rows (`webhook_deliveries`) queued in the same transaction that makes
a job final, so none is lost when a process stops; a dispatcher thread in each
worker claims due rows (`FOR UPDATE SKIP LOCKED` on PostgreSQL) and posts them.
The body is signed with the owner's secret:
`X-Proctor-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
"""

from __future__ import annotations

import datetime as dt
import enum
import fnmatch
import hashlib
import hmac
import logging
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass

import httpx
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from proctor import __version__, db, exceptions, store
from proctor.config import Settings
from proctor.models import Job, User, WebhookDelivery, utcnow

log = logging.getLogger(__name__)

URL_MAX_CHARS = 2048
SIGNATURE_HEADER = "X-Proctor-Signature"
DELIVERY_HEADER = "X-Proctor-Delivery"
EVENT_HEADER = "X-Proctor-Event"
USER_AGENT = f"proctor-webhook/{__version__}"
SIGNATURE_TOLERANCE_SECONDS = 300  # how old a signed timestamp a receiver should accept
CLAIM_BATCH = 10
IN_FLIGHT_MARGIN_SECONDS = 30.0  # past the HTTP timeout, before another worker may retry
ERROR_MAX_CHARS = 500


class DeliveryState(enum.StrEnum):
    WAITING = "waiting"  # the job is not final yet
    PENDING = store.DELIVERY_PENDING  # due, or waiting for its next retry
    DELIVERED = "delivered"  # the receiver answered 2xx
    FAILED = "failed"  # given up after webhook_give_up_after seconds


def validate_callback_url(settings: Settings, url: str | None) -> str | None:
    """The URL if a job may call it back; `InvalidParameter` naming the problem if not."""
    if url is None or url.strip() == "":
        return None
    url = url.strip()
    if len(url) > URL_MAX_CHARS:
        raise exceptions.InvalidParameter(f"callback_url is longer than {URL_MAX_CHARS} characters")
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError as exc:
        raise exceptions.InvalidParameter(f"callback_url {url!r} is not a URL: {exc}") from exc
    if parts.scheme not in ("http", "https"):
        raise exceptions.InvalidParameter("callback_url must be an http or https URL")
    if not host:
        raise exceptions.InvalidParameter("callback_url has no host")
    if parts.username is not None or parts.password is not None:
        raise exceptions.InvalidParameter("callback_url must not hold credentials")
    allowed = settings.webhook_allowed_hosts
    if not any(fnmatch.fnmatchcase(host.lower(), pattern.lower()) for pattern in allowed):
        raise exceptions.InvalidParameter(
            f"callback_url host {host!r} is not allowed on this server "
            f"(PROCTOR_WEBHOOK_ALLOWED_HOSTS: {', '.join(allowed)})"
        )
    return url


def signature_header(secret: str, timestamp: int, body: bytes) -> str:
    """The value of `X-Proctor-Signature` for BODY sent at TIMESTAMP."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify_signature(
    secret: str,
    header: str,
    body: bytes,
    *,
    now: float | None = None,
    tolerance_seconds: float = SIGNATURE_TOLERANCE_SECONDS,
) -> bool:
    """Whether HEADER signs BODY with SECRET, at a time within the tolerance of NOW."""
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(fields["t"])
    except (KeyError, ValueError):
        return False
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_seconds:
        return False
    expected = signature_header(secret, timestamp, body)
    return hmac.compare_digest(expected, f"t={timestamp},v1={fields.get('v1', '')}")


def retry_delay(settings: Settings, attempts: int) -> float:
    """Seconds before the next try after ATTEMPTS failed ones: doubling, capped."""
    exponent = min(max(attempts - 1, 0), 32)
    return float(min(settings.webhook_retry_initial * 2**exponent, settings.webhook_retry_max))


@dataclass(frozen=True)
class Due:
    """A claimed delivery, ready to be sent."""

    id: str
    job_id: str
    event: str
    attempts: int
    created_at: dt.datetime


def claim_due(session: Session, settings: Settings, limit: int = CLAIM_BATCH) -> list[Due]:
    """Take due deliveries, pushing their due time past the attempt so no one else does."""
    now = utcnow()
    rows = session.scalars(
        select(WebhookDelivery)
        .where(
            WebhookDelivery.state == DeliveryState.PENDING.value,
            WebhookDelivery.next_attempt_at <= now,
        )
        .order_by(WebhookDelivery.next_attempt_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    in_flight = dt.timedelta(seconds=settings.webhook_timeout + IN_FLIGHT_MARGIN_SECONDS)
    due = []
    for row in rows:
        row.next_attempt_at = now + in_flight
        due.append(Due(row.id, row.job_id, row.event, row.attempts, row.created_at))
    session.flush()
    return due


def record_attempt(
    session: Session, settings: Settings, delivery: Due, error: str | None
) -> DeliveryState:
    """Store how an attempt went: delivered, retry later, or given up."""
    now = utcnow()
    attempts = delivery.attempts + 1
    values: dict[str, object] = {"attempts": attempts}
    if error is None:
        state = DeliveryState.DELIVERED
        values.update(delivered_at=now, last_error=None)
    else:
        values["last_error"] = error[:ERROR_MAX_CHARS]
        next_at = now + dt.timedelta(seconds=retry_delay(settings, attempts))
        give_up_at = delivery.created_at + dt.timedelta(seconds=settings.webhook_give_up_after)
        state = DeliveryState.FAILED if next_at > give_up_at else DeliveryState.PENDING
        values["next_attempt_at"] = next_at
    values["state"] = state.value
    session.execute(
        update(WebhookDelivery).where(WebhookDelivery.id == delivery.id).values(**values)
    )
    return state


def rotate_secret(settings: Settings, user_id: int) -> str:
    """Give the user a new webhook secret and return it (shown once)."""
    from proctor import users

    secret = users.new_webhook_secret()
    with db.session_scope(settings) as session:
        session.execute(update(User).where(User.id == user_id).values(webhook_secret=secret))
    return secret


PayloadBuilder = Callable[[Job, str | None, WebhookDelivery | None], bytes]
"""Renders a job as the webhook body (the API's job JSON), given its owner and delivery."""


class Dispatcher:
    """A thread that sends due webhooks until stopped; never blocks a job."""

    def __init__(self, settings: Settings, render: PayloadBuilder) -> None:
        self.settings = settings
        self.render = render
        self._stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="webhooks", daemon=True)
        self._http = httpx.Client(
            timeout=settings.webhook_timeout,
            follow_redirects=False,
            headers={"User-Agent": USER_AGENT},
        )

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._stopping.set()

    def close(self) -> None:
        """Release the HTTP connections (the thread does it when it stops)."""
        self._http.close()

    def _loop(self) -> None:
        try:
            while not self._stopping.is_set():
                try:
                    sent = self.run_once()
                except exceptions.ServiceUnavailable as exc:
                    log.warning("webhooks: database unavailable: %s", exc.message)
                    sent = 0
                except Exception:
                    # A bug here must not end deliveries for the worker's lifetime.
                    log.exception("webhooks: dispatcher failed; retrying")
                    sent = 0
                if not sent:
                    self._stopping.wait(self.settings.webhook_poll_interval)
        finally:
            self.close()

    def run_once(self) -> int:
        """Send every delivery due now; return how many were tried."""
        with db.session_scope(self.settings) as session:
            due = claim_due(session, self.settings)
        for delivery in due:
            error = self._send(delivery)
            with db.session_scope(self.settings) as session:
                state = record_attempt(session, self.settings, delivery, error)
            log.info(
                "webhook %s of job %s: %s %s", delivery.id, delivery.job_id, state, error or ""
            )
        return len(due)

    def _send(self, delivery: Due) -> str | None:
        """POST the delivery; None on a 2xx answer, else what went wrong."""
        with db.session_scope(self.settings) as session:
            job = session.get(Job, delivery.job_id)
            if job is None or job.callback_url is None:
                return "the job no longer exists"
            owner = session.get(User, job.owner_id)
            secret = owner.webhook_secret if owner else None
            row = session.get(WebhookDelivery, delivery.id)
            body = self.render(job, owner.name if owner else None, row)
            url = job.callback_url
        if not secret:
            return (
                "the job's owner has no webhook secret: rotate it (proctor webhook-secret rotate)"
            )
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: signature_header(secret, timestamp, body),
            DELIVERY_HEADER: delivery.id,
            EVENT_HEADER: delivery.event,
        }
        try:
            response = self._http.post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if response.is_success:
            return None
        return f"HTTP {response.status_code}"
