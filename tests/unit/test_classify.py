from __future__ import annotations

import email.utils
import time

import pytest

from destinations.base import Request, Response, classify_http, retry_after_s
from router.delivery.outcome import Delivered, Rejected, Retry
from router.redact import redact, register

REQ = Request("http://x", b"[]", [0])


@pytest.mark.parametrize(("status", "kind"), [
    (200, Delivered), (201, Delivered), (204, Delivered), (400, Rejected), (401, Rejected),
    (403, Rejected), (404, Rejected), (408, Retry), (413, Rejected), (422, Rejected),
    (429, Retry), (500, Retry), (501, Rejected), (502, Retry), (503, Retry), (504, Retry),
    (505, Rejected)])
def test_default_http_rules(status: int, kind: type) -> None:
    assert isinstance(classify_http(Response(status, {}, b""), REQ), kind)


def test_retry_after_seconds_and_http_date() -> None:
    assert retry_after_s({"Retry-After": "7"}) == 7.0
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 28 <= (retry_after_s({"Retry-After": when}) or 0) <= 31
    assert retry_after_s({"Retry-After": "soon"}) is None
    outcome = classify_http(Response(429, {"Retry-After": "3"}, b""), REQ)
    assert isinstance(outcome, Retry) and outcome.after_s == 3.0


def test_redaction_of_credentials() -> None:
    register("known-secret-value")
    text = ("url=https://api.example.com/x?api_key=abc123&x=1 Authorization: Bearer "
            "tok.en.value known-secret-value https://user:pw@host/db")
    out = redact(text)
    for secret in ("abc123", "tok.en.value", "known-secret-value", ":pw@"):
        assert secret not in out
    assert "x=1" in out
