"""Signed result records: canonical form, signing, verification, tampering, the key file."""

from __future__ import annotations

import copy
import json
import multiprocessing
import stat
from pathlib import Path
from typing import Any

import pytest

from proctor import exceptions, results, signing

RECORD: dict[str, Any] = {
    "format": results.RECORD_FORMAT,
    "proctor_version": "0.1.0",
    "key_id": "",  # set by the fixture to the key's id
    "job_id": "0190abcdef0000aabbccddeeff",
    "owner": "alice",
    "image_id": "sha256:" + "ab" * 32,
    "dataset": "breast-cancer",
    "dataset_hash": "sha256:" + "cd" * 32,
    "sandbox": {"network": "none", "memory_bytes": 268435456, "read_only": True, "pids": 256},
    "performance": 0.8731,
    "metrics": {"auc": 0.91, "loss": 0.3},
    "exit_code": 0,
    "finished_at": "2026-11-29T05:00:00.123456+00:00",
}


def _changed(value: Any) -> Any:
    """A different value of the same field, as an attacker would write it."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, dict):
        changed = dict(value)
        first = sorted(changed)[0]
        changed[first] = _changed(changed[first])
        return changed
    return "x"


@pytest.fixture
def key(tmp_path: Path) -> signing.SigningKey:
    return signing.load_or_create(tmp_path / "signing-key.pem")


@pytest.fixture
def signed(key: signing.SigningKey) -> dict[str, Any]:
    record = {**copy.deepcopy(RECORD), "key_id": key.public.key_id}
    return {"record": record, "signature": key.sign(record), "key_id": key.public.key_id}


def test_signing_canonical_form_is_sorted_compact_utf8() -> None:
    assert signing.canonical({"b": 1, "a": {"d": "é", "c": [1.5]}}) == (
        '{"a":{"c":[1.5],"d":"é"},"b":1}'.encode()
    )


def test_signing_canonical_form_refuses_nan() -> None:
    with pytest.raises(exceptions.InvalidSignature):
        signing.canonical({"perf": float("nan")})


def test_results_verify_accepts_an_untouched_record(
    key: signing.SigningKey, signed: dict[str, Any]
) -> None:
    assert results.verify(signed, key.public) == signed["record"]


def test_results_verify_survives_a_json_round_trip(
    key: signing.SigningKey, signed: dict[str, Any]
) -> None:
    saved = json.loads(json.dumps(signed, indent=2))

    assert results.verify(saved, key.public)["performance"] == RECORD["performance"]


@pytest.mark.parametrize("field", sorted(RECORD))
def test_results_verify_fails_when_any_field_changes(
    key: signing.SigningKey, signed: dict[str, Any], field: str
) -> None:
    tampered = copy.deepcopy(signed)
    tampered["record"][field] = _changed(tampered["record"][field])

    with pytest.raises(exceptions.InvalidSignature):
        results.verify(tampered, key.public)


@pytest.mark.parametrize("field", sorted(RECORD))
def test_results_verify_fails_when_a_field_is_removed(
    key: signing.SigningKey, signed: dict[str, Any], field: str
) -> None:
    tampered = copy.deepcopy(signed)
    del tampered["record"][field]

    with pytest.raises(exceptions.InvalidSignature):
        results.verify(tampered, key.public)


def test_results_verify_fails_when_a_field_is_added(
    key: signing.SigningKey, signed: dict[str, Any]
) -> None:
    tampered = copy.deepcopy(signed)
    tampered["record"]["verified_by_hand"] = True

    with pytest.raises(exceptions.InvalidSignature):
        results.verify(tampered, key.public)


def test_results_verify_fails_with_another_key(signed: dict[str, Any], tmp_path: Path) -> None:
    other = signing.load_or_create(tmp_path / "other.pem")

    with pytest.raises(exceptions.InvalidSignature, match="names signing key"):
        results.verify(signed, other.public)


def test_results_verify_fails_with_another_key_even_if_the_record_names_it(
    key: signing.SigningKey, signed: dict[str, Any], tmp_path: Path
) -> None:
    other = signing.load_or_create(tmp_path / "other.pem")
    forged = copy.deepcopy(signed)
    forged["record"]["key_id"] = other.public.key_id

    with pytest.raises(exceptions.InvalidSignature, match="does not match"):
        results.verify(forged, other.public)


def test_results_verify_fails_on_a_damaged_signature(
    key: signing.SigningKey, signed: dict[str, Any]
) -> None:
    damaged = {**signed, "signature": "not base64!"}

    with pytest.raises(exceptions.InvalidSignature, match="base64"):
        results.verify(damaged, key.public)


def test_signing_key_is_created_once_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "home" / "signing-key.pem"

    first = signing.load_or_create(path)
    second = signing.load_or_create(path)

    assert first.public.key_id == second.public.key_id
    assert stat.S_IMODE(path.stat().st_mode) == signing.KEY_FILE_MODE
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind


def _key_id_of(path: str) -> str:
    return signing.load_or_create(Path(path)).public.key_id


def test_signing_key_processes_starting_together_share_one_key(tmp_path: Path) -> None:
    path = tmp_path / "signing-key.pem"
    context = multiprocessing.get_context("spawn")

    with context.Pool(4) as pool:
        key_ids = pool.map(_key_id_of, [str(path)] * 8)

    assert len(set(key_ids)) == 1
    assert key_ids[0] == _key_id_of(str(path))


def test_signing_public_key_round_trips_through_pem(key: signing.SigningKey) -> None:
    loaded = signing.PublicKey.from_pem(key.public.pem.encode())

    assert loaded.key_id == key.public.key_id


def test_signing_unreadable_key_file_is_a_configuration_error(tmp_path: Path) -> None:
    path = tmp_path / "signing-key.pem"
    path.write_text("not a key")

    with pytest.raises(exceptions.InvalidConfiguration, match="signing key"):
        signing.load_or_create(path)
