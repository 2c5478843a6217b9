"""Signed result records: what proctor vouches for about a succeeded job, and checking it.

A record names the job, its owner, the image digest, the dataset and the content
hash of what was mounted, the sandbox profile, the score and the finish time; the
worker that saw the result signs it (see `proctor.signing` for the canonical form).
"""

from __future__ import annotations

import datetime as dt
import functools
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from proctor import __version__, exceptions, signing
from proctor.config import Settings
from proctor.jobs import Status
from proctor.models import Job, User

RECORD_FORMAT = "proctor.result.v1"


@functools.lru_cache(maxsize=4)
def _key_at(path: Path) -> signing.SigningKey:
    return signing.load_or_create(path)


def signing_key(settings: Settings) -> signing.SigningKey:
    """This deployment's signing key, created on first use."""
    assert settings.signing_key is not None
    return _key_at(settings.signing_key)


def build_record(job: Job, owner: str, dataset_hash: str | None, key_id: str) -> dict[str, Any]:
    """The record of a succeeded job, as stored on it and signed."""
    assert job.finished_at is not None
    return {
        "format": RECORD_FORMAT,
        "proctor_version": __version__,
        "key_id": key_id,
        "job_id": job.id,
        "owner": owner,
        "image_id": job.image_id,
        "dataset": job.dataset,
        "dataset_hash": dataset_hash,
        "sandbox": job.sandbox,
        "performance": job.performance,
        "metrics": job.metrics or {},
        "exit_code": job.exit_code,
        "finished_at": job.finished_at.astimezone(dt.UTC).isoformat(),
    }


def sign_job(session: Session, settings: Settings, job_id: str, dataset_hash: str | None) -> None:
    """Sign and store the record of a job that has just succeeded."""
    job = session.get_one(Job, job_id, populate_existing=True)
    if job.status != Status.SUCCEEDED.value:
        return
    owner = session.get_one(User, job.owner_id).name
    key = signing_key(settings)
    record = build_record(job, owner, dataset_hash, key.public.key_id)
    job.result_record = record
    job.result_signature = key.sign(record)
    session.flush()


def signed_result(job: Job) -> dict[str, Any]:
    """`{"record", "signature", "key_id"}` of a job; `NoResult` unless it has one."""
    if job.result_record is None or job.result_signature is None:
        if job.status == Status.SUCCEEDED.value:
            raise exceptions.NoResult(f"job {job.id} succeeded but has no signed result record")
        raise exceptions.NoResult(
            f"job {job.id} is {job.status}: only a succeeded job has a signed result"
        )
    return {
        "record": job.result_record,
        "signature": job.result_signature,
        "key_id": job.result_record.get("key_id"),
    }


def public_key_document(key: signing.PublicKey) -> dict[str, str]:
    """What `GET /api/v1/signing-key` serves."""
    import base64

    return {
        "algorithm": signing.ALGORITHM,
        "key_id": key.key_id,
        "public_key_pem": key.pem,
        "public_key_raw": base64.b64encode(key.raw).decode("ascii"),
    }


def verify(document: Any, key: signing.PublicKey) -> dict[str, Any]:
    """Check a saved result (`{"record", "signature", ...}`) against KEY; return the record.

    Raises `InvalidSignature` naming what is wrong.
    """
    if not isinstance(document, dict):
        raise exceptions.InvalidSignature("the file is not a JSON object")
    record, signature = document.get("record"), document.get("signature")
    if not isinstance(record, dict) or not isinstance(signature, str):
        raise exceptions.InvalidSignature(
            "the file has no 'record' object and 'signature' string: save it with "
            "`proctor result ID -o FILE`"
        )
    claimed = record.get("key_id")
    if claimed is not None and claimed != key.key_id:
        raise exceptions.InvalidSignature(
            f"the record names signing key {claimed}, but the public key given is {key.key_id}"
        )
    key.verify(record, signature)
    return record


def describe(record: dict[str, Any]) -> list[tuple[str, str]]:
    """What a verified record proves, as (what, value) lines for people."""
    sandbox = record.get("sandbox") or {}
    limits = ", ".join(f"{name}={sandbox[name]}" for name in sorted(sandbox))
    dataset = record.get("dataset")
    return [
        ("job", str(record.get("job_id"))),
        ("owner", str(record.get("owner"))),
        ("image", str(record.get("image_id"))),
        (
            "dataset",
            f"{dataset} ({record.get('dataset_hash')})" if dataset else "none",
        ),
        ("performance", str(record.get("performance"))),
        (
            "metrics",
            ", ".join(f"{k}={v}" for k, v in sorted((record.get("metrics") or {}).items()))
            or "none",
        ),
        ("exit code", str(record.get("exit_code"))),
        ("finished", str(record.get("finished_at"))),
        ("sandbox", limits or "none recorded"),
        ("signed by", f"key {record.get('key_id')} (proctor {record.get('proctor_version')})"),
    ]
