"""Routes of the signing key and of the caller's webhook secret."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from proctor import results, webhooks
from proctor.api.deps import CurrentUser, SettingsDep
from proctor.api.schemas import ErrorBody, SigningKeyOut, WebhookSecretOut

router = APIRouter(prefix="/api/v1", tags=["results"])

ERRORS: dict[int | str, dict[str, object]] = {code: {"model": ErrorBody} for code in (401, 503)}


@router.get("/signing-key", response_model=SigningKeyOut, responses=ERRORS)
def signing_key(_user: CurrentUser, settings: SettingsDep) -> SigningKeyOut:
    """The Ed25519 public key that verifies result records, and its id."""
    return SigningKeyOut(**results.public_key_document(results.signing_key(settings).public))


@router.post("/webhook-secret", response_model=WebhookSecretOut, responses=ERRORS)
async def rotate_webhook_secret(user: CurrentUser, settings: SettingsDep) -> WebhookSecretOut:
    """Replace your webhook signing secret; the new one is returned once."""
    secret = await run_in_threadpool(webhooks.rotate_secret, settings, user.id)
    return WebhookSecretOut(webhook_secret=secret)
