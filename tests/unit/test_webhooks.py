"""Webhook rules that need no server: callback URL checks, signatures, backoff."""

from __future__ import annotations

import time

import pytest

from proctor import exceptions, webhooks
from proctor.config import Settings


@pytest.fixture
def settings(tmp_path: object) -> Settings:
    return Settings(home=str(tmp_path))


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8080/hook", "https://ci.example.org/proctor?x=1", "http://[::1]:9/h"],
)
def test_webhooks_callback_url_accepts_http_and_https(settings: Settings, url: str) -> None:
    assert webhooks.validate_callback_url(settings, url) == url


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ftp://example.org/hook", "http or https"),
        ("file:///etc/passwd", "http or https"),
        ("example.org/hook", "http or https"),
        ("http:///hook", "no host"),
        ("https://user:pw@example.org/hook", "credentials"),
        ("https://token@example.org/hook", "credentials"),
        ("http://example.org:notaport/", "not a URL"),
        ("https://example.org/" + "a" * webhooks.URL_MAX_CHARS, "longer than"),
    ],
)
def test_webhooks_callback_url_rejects_with_the_reason(
    settings: Settings, url: str, problem: str
) -> None:
    with pytest.raises(exceptions.InvalidParameter, match=problem):
        webhooks.validate_callback_url(settings, url)


def test_webhooks_callback_url_host_must_match_the_allowed_globs(tmp_path: object) -> None:
    settings = Settings(home=str(tmp_path), webhook_allowed_hosts="*.example.org,127.0.0.1")

    assert webhooks.validate_callback_url(settings, "https://ci.EXAMPLE.org/h")
    assert webhooks.validate_callback_url(settings, "http://127.0.0.1:9000/h")
    with pytest.raises(exceptions.InvalidParameter, match="not allowed"):
        webhooks.validate_callback_url(settings, "https://evil.com/h")


def test_webhooks_empty_callback_url_means_none(settings: Settings) -> None:
    assert webhooks.validate_callback_url(settings, "") is None
    assert webhooks.validate_callback_url(settings, None) is None


def test_webhooks_signature_verifies_and_detects_changes() -> None:
    now = int(time.time())
    header = webhooks.signature_header("whsec_1", now, b'{"id":"j"}')

    assert webhooks.verify_signature("whsec_1", header, b'{"id":"j"}')
    assert not webhooks.verify_signature("whsec_2", header, b'{"id":"j"}')
    assert not webhooks.verify_signature("whsec_1", header, b'{"id":"k"}')
    assert not webhooks.verify_signature("whsec_1", "t=x,v1=00", b'{"id":"j"}')


def test_webhooks_signature_too_old_is_refused() -> None:
    old = int(time.time()) - webhooks.SIGNATURE_TOLERANCE_SECONDS - 10
    header = webhooks.signature_header("s", old, b"{}")

    assert not webhooks.verify_signature("s", header, b"{}")


def test_webhooks_retry_delay_doubles_up_to_the_cap(tmp_path: object) -> None:
    settings = Settings(home=str(tmp_path), webhook_retry_initial=2, webhook_retry_max=10)

    delays = [webhooks.retry_delay(settings, attempts) for attempts in range(1, 6)]

    assert delays == [2, 4, 8, 10, 10]


def test_render_callback_line_shows_state_attempts_and_error() -> None:
    from proctor import render

    job = {
        "callback": {
            "url": "http://h/x",
            "state": "pending",
            "attempts": 2,
            "last_error": "HTTP 500",
            "delivered_at": None,
        }
    }

    assert (
        render.callback_line(job) == "http://h/x: pending after 2 attempts (last error: HTTP 500)"
    )
    assert render.callback_line({"callback": None}) == ""
