"""Taking a submission: validate it, then queue it as a job. Shared by the API and tests."""

from __future__ import annotations

from dataclasses import dataclass

from proctor import datasets, db, exceptions, intake, store, webhooks
from proctor.config import Settings
from proctor.models import Job, User

NAME_MAX_CHARS = 200


@dataclass(frozen=True)
class Request:
    """What a client sent, before any check."""

    data: bytes
    name: str | None = None
    dataset: str | None = None
    timeout: float | None = None
    gpus: str | None = None
    callback_url: str | None = None


ALL_GPUS = -1


def validate_gpus(settings: Settings, gpus: str | None) -> int | None:
    """None for no GPU; a count; or ALL_GPUS. Only what the operator allows."""
    if gpus is None or gpus.strip() in ("", "0"):
        return None
    value = gpus.strip().lower()
    if value == "all":
        wanted = ALL_GPUS
    elif value.isdigit():
        wanted = int(value)
    else:
        raise exceptions.InvalidParameter(f"gpus {gpus!r} is not a count or 'all'")
    allowed = settings.run_gpus_max
    if allowed == 0:
        raise exceptions.InvalidParameter("gpus: this server runs no GPU jobs")
    if allowed != ALL_GPUS and (wanted == ALL_GPUS or wanted > allowed):
        raise exceptions.InvalidParameter(f"gpus {gpus!r} is above the server maximum of {allowed}")
    return wanted


def validate_timeout(settings: Settings, timeout: float | None) -> float:
    if timeout is None:
        return settings.run_timeout
    if not timeout > 0:
        raise exceptions.InvalidParameter(
            f"timeout must be a positive number of seconds, not {timeout:g}"
        )
    if timeout > settings.run_timeout_max:
        raise exceptions.InvalidParameter(
            f"timeout {timeout:g} is above the server maximum of "
            f"{settings.run_timeout_max:g} seconds"
        )
    return timeout


def validate_dataset(settings: Settings, dataset: str | None) -> str | None:
    if dataset is None or dataset == "":
        return None
    return datasets.get(settings, dataset).name


def validate_name(name: str | None) -> str | None:
    if name is None or name == "":
        return None
    if len(name) > NAME_MAX_CHARS:
        raise exceptions.InvalidParameter(f"name is longer than {NAME_MAX_CHARS} characters")
    return name


def submit(settings: Settings, owner_id: int, request: Request) -> Job:
    """Check a submission and queue it; raises a `SubmissionError` naming the problem."""
    timeout = validate_timeout(settings, request.timeout)
    dataset = validate_dataset(settings, request.dataset)
    name = validate_name(request.name)
    gpus = validate_gpus(settings, request.gpus)
    callback_url = webhooks.validate_callback_url(settings, request.callback_url)
    submission = intake.read_submission(request.data, intake.IntakeLimits.from_settings(settings))
    with db.session_scope(settings) as session:
        cap = settings.max_queued_per_user
        if cap and store.queued_count(session, owner_id) >= cap:
            raise exceptions.QuotaExceeded(
                f"you have {cap} jobs waiting, the most this server queues per user; "
                "submit again when some have started"
            )
        if callback_url and not session.get_one(User, owner_id).webhook_secret:
            raise exceptions.InvalidParameter(
                "callback_url: you have no webhook secret to sign callbacks with yet; "
                "create one with `proctor webhook-secret rotate`"
            )
        return store.create_job(
            session,
            store.NewJob(
                owner_id=owner_id,
                context=submission.context,
                timeout=timeout,
                name=name,
                dataset=dataset,
                gpus=gpus,
                callback_url=callback_url,
            ),
        )
