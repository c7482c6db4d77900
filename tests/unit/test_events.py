from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from router.demo import key_of
from router.events import Invalid, decode, time_ms


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


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@given(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
       st.sampled_from(["ms_z", "ms_offset", "seconds_z", "naive", "micros_z"]))
def test_time_ms_is_the_exact_millisecond_of_any_iso_timestamp(moment: datetime,
                                                                form: str) -> None:
    """The cached fast path (``…SS.mmmZ``) and the parsing fallback agree, to the ms."""
    aware = moment.replace(tzinfo=UTC)
    text = {"ms_z": aware.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "ms_offset": aware.astimezone(timezone(timedelta(hours=-5)))
            .isoformat(timespec="milliseconds"),
            "seconds_z": aware.isoformat(timespec="seconds").replace("+00:00", "Z"),
            "naive": moment.isoformat(timespec="milliseconds"),
            "micros_z": aware.isoformat(timespec="microseconds").replace("+00:00", "Z")}[form]
    expected = (datetime.fromisoformat(text).replace(tzinfo=None) - EPOCH.replace(tzinfo=None)
                if form == "naive" else datetime.fromisoformat(text) - EPOCH)
    assert time_ms({"timestamp": text}) == expected // timedelta(milliseconds=1)


@pytest.mark.parametrize("text", ["2026-02-30T10:00:00.000Z", "2026-11-24T16:34:16.7a5Z",
                                  "2026-11-24T25:00:00.000Z", "not a time", "", None, 5])
def test_time_ms_of_what_does_not_parse_is_zero(text: object) -> None:
    assert time_ms({"timestamp": text}) == 0


@pytest.mark.parametrize(("event", "key"), [
    ({"userId": "u1", "anonymousId": "a1"}, b"u1"),
    ({"anonymousId": "a1"}, b"a1"),
    ({"userId": "", "anonymousId": "a1"}, b"a1"),
    ({"userId": 42}, b"42"),
    ({"type": "track"}, None),  # no id: keyless, spread over partitions, not all on one
    ({"userId": "", "anonymousId": ""}, None),
])
def test_produce_keys_records_by_user(event: dict[str, Any], key: bytes | None) -> None:
    assert key_of(event) == key
