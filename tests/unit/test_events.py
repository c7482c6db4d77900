from __future__ import annotations

import orjson
import pytest

from router.events import Invalid, decode


def test_timestamp_is_corrected_for_clock_skew() -> None:
    event = decode(orjson.dumps({
        "type": "track", "event": "X", "userId": "u",
        "originalTimestamp": "2026-01-01T10:00:00.000Z",  # device clock
        "sentAt": "2026-01-01T10:00:05.000Z",  # device clock, 5 s later
        "receivedAt": "2026-01-01T12:00:03.000Z"}))  # server clock
    assert isinstance(event, dict)
    assert event["timestamp"] == "2026-01-01T11:59:58.000Z"


def test_given_timestamp_is_kept_and_append_time_is_the_last_resort() -> None:
    kept = decode(b'{"type":"page","anonymousId":"a","timestamp":"2026-02-02T00:00:00Z"}')
    assert isinstance(kept, dict) and kept["timestamp"] == "2026-02-02T00:00:00Z"
    fallback = decode(b'{"type":"page","anonymousId":"a"}', append_time_ms=1_700_000_000_000)
    assert isinstance(fallback, dict) and fallback["timestamp"] == "2023-11-14T22:13:20.000Z"


def test_missing_message_id_is_derived_deterministically() -> None:
    raw = b'{"type":"identify","userId":"u1"}'
    first, second = decode(raw), decode(raw)
    assert isinstance(first, dict) and isinstance(second, dict)
    assert first["messageId"] == second["messageId"]
    assert first["messageId"].startswith("derived-")
    other = decode(b'{"type":"identify","userId":"u2"}')
    assert isinstance(other, dict) and other["messageId"] != first["messageId"]


@pytest.mark.parametrize(("raw", "reason"), [
    (b"{", "invalid_json"),
    (b'{"type":"track","event":"\xff","userId":"u"}', "invalid_utf8"),
    (b"[1,2]", "not_an_object"),
    (b'{"type":"buy","userId":"u"}', "unknown_type"),
    (b'{"type":"track","event":"X"}', "missing_identity"),
    (b'{"type":"track","userId":"u"}', "missing_event"),
    (b'{"type":"track","event":"X","userId":{"id":1}}', "wrong_type"),
    (b'{"type":"track","event":"X","userId":true}', "wrong_type"),
    (b'{"type":"track","event":"X","userId":"u","context":"web"}', "wrong_type"),
    (b'{"type":"track","event":"X","userId":"u","messageId":42}', "wrong_type"),
    (b'{"type":"track","event":"X","userId":"u","sentAt":"soon"}', "bad_timestamp"),
    (b'{"type":"alias","userId":"u"}', "missing_previous_id"),
    (None, "empty"),
])
def test_invalid_input_gets_a_reason(raw: bytes | None, reason: str) -> None:
    result = decode(raw)
    assert isinstance(result, Invalid) and result.reason == reason, result


def test_oversized_is_invalid_at_the_configured_limit() -> None:
    raw = orjson.dumps({"type": "track", "event": "X", "userId": "u", "p": "x" * 500})
    assert isinstance(decode(raw, max_bytes=400), Invalid)
    assert isinstance(decode(raw, max_bytes=4000), dict)
