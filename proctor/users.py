"""Users and their bearer tokens. Only a token's hash is stored; the token is shown once."""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from proctor import db, exceptions
from proctor.cache import ExpiringCache
from proctor.config import Settings
from proctor.models import User

TOKEN_BYTES = 32
TOKEN_PREFIX = "pct_"
WEBHOOK_SECRET_PREFIX = "whsec_"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
TOKEN_CACHE_SECONDS = 5.0
"""How long the API trusts a token it has already checked, without asking the database.

A change to a user (its token replaced, admin rights granted) reaches the API within this
delay: until then the replaced token still works and the old rights still apply."""
TOKEN_CACHE_MAX_ENTRIES = 4096


class Viewer(Protocol):
    """Who is asking: what reading and changing jobs needs to know of a user."""

    @property
    def id(self) -> int: ...

    @property
    def name(self) -> str: ...

    @property
    def is_admin(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class Caller:
    """A snapshot of an authenticated user, detached from any database session."""

    id: int
    name: str
    is_admin: bool

    @classmethod
    def of(cls, user: Viewer) -> Caller:
        return cls(id=user.id, name=user.name, is_admin=user.is_admin)


class TokenCache:
    """Recently accepted tokens and their callers, for `ttl_seconds`, at most `max_entries`.

    Keyed by the token's hash, like the database. Only accepted tokens are kept: a refused
    token is checked again every time, and the least recently used entry goes first.
    """

    def __init__(
        self,
        ttl_seconds: float = TOKEN_CACHE_SECONDS,
        max_entries: int = TOKEN_CACHE_MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._entries: ExpiringCache[str, Caller] = ExpiringCache(ttl_seconds, max_entries, clock)

    def get(self, token: str) -> Caller | None:
        """The caller the token was accepted for, unless that was `ttl_seconds` ago or more."""
        return self._entries.get(hash_token(token))

    def put(self, token: str, caller: Caller) -> None:
        self._entries.put(hash_token(token), caller)

    def __len__(self) -> int:
        return len(self._entries)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


def new_webhook_secret() -> str:
    return WEBHOOK_SECRET_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


def webhook_secret(settings: Settings, name: str) -> str | None:
    """The user's webhook secret (for `proctor user add` to show once)."""
    with db.session_scope(settings) as session:
        return find_user(session, name).webhook_secret


def _check_name(name: str) -> None:
    if not NAME_RE.match(name):
        raise exceptions.InvalidParameter(
            f"user name {name!r} is invalid: use 1-64 letters, digits, '.', '_' or '-'"
        )


def add_user(settings: Settings, name: str, *, admin: bool) -> str:
    """Create a user and return its token (shown once, stored only as a hash)."""
    _check_name(name)
    token = new_token()
    try:
        with db.session_scope(settings) as session:
            session.add(
                User(
                    name=name,
                    token_hash=hash_token(token),
                    is_admin=admin,
                    webhook_secret=new_webhook_secret(),
                )
            )
    except IntegrityError as exc:
        raise exceptions.Conflict(f"a user named {name!r} already exists") from exc
    return token


def issue_token(settings: Settings, name: str, *, admin: bool) -> str:
    """Create the user if missing, else give it a new token; return the token."""
    _check_name(name)
    token = new_token()
    with db.session_scope(settings) as session:
        user = session.scalars(select(User).where(User.name == name)).one_or_none()
        if user is None:
            session.add(
                User(
                    name=name,
                    token_hash=hash_token(token),
                    is_admin=admin,
                    webhook_secret=new_webhook_secret(),
                )
            )
        else:
            user.token_hash = hash_token(token)
            user.is_admin = user.is_admin or admin
    return token


def authenticate(session: Session, token: str) -> User:
    """The user a bearer token belongs to, or `Unauthorized`."""
    user = session.scalars(select(User).where(User.token_hash == hash_token(token))).one_or_none()
    if user is None:
        raise exceptions.Unauthorized("the bearer token is not valid")
    return user


def caller_of(settings: Settings, token: str) -> Caller:
    """`authenticate` in a session of its own, as a snapshot that outlives the session."""
    with db.session_scope(settings) as session:
        return Caller.of(authenticate(session, token))


def token_is_valid(settings: Settings, token: str) -> bool:
    with db.session_scope(settings) as session:
        try:
            authenticate(session, token)
        except exceptions.Unauthorized:
            return False
    return True


def find_user(session: Session, name: str) -> User:
    user = session.scalars(select(User).where(User.name == name)).one_or_none()
    if user is None:
        raise exceptions.NotFound(f"no user named {name!r}")
    return user
