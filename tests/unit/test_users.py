"""The token cache: what the API remembers of accepted tokens, and for how long."""

from __future__ import annotations

from proctor import users
from proctor.models import User

ALICE = users.Caller(id=1, name="alice", is_admin=False)
ROOT = users.Caller(id=2, name="root", is_admin=True)


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_token_cache_returns_the_caller_until_the_ttl() -> None:
    clock = Clock()
    cache = users.TokenCache(ttl_seconds=5, clock=clock)
    cache.put("pct_alice", ALICE)

    clock.now += 4.9
    assert cache.get("pct_alice") == ALICE
    clock.now += 0.1
    assert cache.get("pct_alice") is None
    assert len(cache) == 0


def test_token_cache_knows_only_tokens_it_was_given() -> None:
    cache = users.TokenCache()
    cache.put("pct_alice", ALICE)

    assert cache.get("pct_other") is None
    assert cache.get("pct_alice ") is None


def test_token_cache_keeps_hashes_not_tokens() -> None:
    cache = users.TokenCache()
    cache.put("pct_alice", ALICE)

    assert cache._entries.get(users.hash_token("pct_alice")) == ALICE
    assert cache._entries.get("pct_alice") is None


def test_token_cache_drops_the_least_recently_used_beyond_its_size() -> None:
    cache = users.TokenCache(max_entries=2)
    cache.put("pct_alice", ALICE)
    cache.put("pct_root", ROOT)
    assert cache.get("pct_alice") == ALICE  # now the most recently used

    cache.put("pct_bob", users.Caller(id=3, name="bob", is_admin=False))

    assert len(cache) == 2
    assert cache.get("pct_root") is None
    assert cache.get("pct_alice") == ALICE


def test_token_cache_put_again_restarts_the_ttl() -> None:
    clock = Clock()
    cache = users.TokenCache(ttl_seconds=5, clock=clock)
    cache.put("pct_alice", ALICE)
    clock.now += 4
    cache.put("pct_alice", ALICE)
    clock.now += 4

    assert cache.get("pct_alice") == ALICE


def test_caller_of_a_user_is_a_detached_snapshot() -> None:
    user = User(id=1, name="alice", is_admin=False, token_hash=users.hash_token("pct_alice"))

    caller = users.Caller.of(user)
    user.is_admin = True

    assert caller == ALICE
    assert hash(caller) == hash(ALICE)
