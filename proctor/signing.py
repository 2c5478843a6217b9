"""Ed25519 keys and signatures over a canonical JSON form, for proctor's result records.

The canonical form of a record is its JSON with keys sorted at every level, no
whitespace, non-ASCII characters kept as UTF-8, and no NaN or Infinity: what
`json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
allow_nan=False).encode()` produces. Anyone can verify a signature with any Ed25519
library over those bytes.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from proctor import exceptions

ALGORITHM = "Ed25519"
KEY_FILE_MODE = 0o600
KEY_ID_HEX_CHARS = 32  # of the SHA-256 of the raw public key


def canonical(record: dict[str, Any]) -> bytes:
    """The exact bytes a record's signature covers."""
    try:
        text = json.dumps(
            record, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
    except ValueError as exc:
        raise exceptions.InvalidSignature(
            f"the record cannot be put in canonical form: {exc}"
        ) from exc
    return text.encode("utf-8")


@dataclass(frozen=True)
class PublicKey:
    """A verifying key, with its id (a fingerprint of the raw key)."""

    key: Ed25519PublicKey

    @property
    def raw(self) -> bytes:
        return self.key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    @property
    def key_id(self) -> str:
        return hashlib.sha256(self.raw).hexdigest()[:KEY_ID_HEX_CHARS]

    @property
    def pem(self) -> str:
        return self.key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode("ascii")

    @classmethod
    def from_pem(cls, data: bytes) -> PublicKey:
        try:
            key = serialization.load_pem_public_key(data)
        except ValueError as exc:
            raise exceptions.InvalidSignature(f"not a PEM public key: {exc}") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise exceptions.InvalidSignature("the public key is not an Ed25519 key")
        return cls(key)

    def verify(self, record: dict[str, Any], signature: str) -> None:
        """Return if SIGNATURE (base64) signs the record's canonical form; else raise."""
        try:
            raw_signature = base64.b64decode(signature, validate=True)
        except (ValueError, TypeError) as exc:
            raise exceptions.InvalidSignature("the signature is not base64") from exc
        try:
            self.key.verify(raw_signature, canonical(record))
        except InvalidSignature as exc:
            raise exceptions.InvalidSignature(
                "the signature does not match the record: the record was changed, "
                "or it was signed by another key"
            ) from exc


@dataclass(frozen=True)
class SigningKey:
    """The private key of this deployment."""

    key: Ed25519PrivateKey

    @property
    def public(self) -> PublicKey:
        return PublicKey(self.key.public_key())

    def sign(self, record: dict[str, Any]) -> str:
        """The base64 Ed25519 signature of the record's canonical form."""
        return base64.b64encode(self.key.sign(canonical(record))).decode("ascii")


def load_or_create(path: Path) -> SigningKey:
    """The key in PATH; if there is none, a new one written there (mode 0600).

    Creation is atomic and never overwrites: the key goes to a private temporary file
    that is then hard-linked into place, which fails if another process got there first;
    that process's key is then the one used.
    """
    if not path.exists():
        _create(path)
    try:
        data = path.read_bytes()
        key = serialization.load_pem_private_key(data, password=None)
    except (OSError, ValueError) as exc:
        raise exceptions.InvalidConfiguration(f"cannot read the signing key {path}: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise exceptions.InvalidConfiguration(f"the signing key {path} is not an Ed25519 key")
    return SigningKey(key)


def _create(path: Path) -> None:
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, KEY_FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileExistsError):  # another process created it first
            os.link(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
