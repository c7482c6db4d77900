from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from router.demo import key_of
from router.events import Invalid, decode, parse_time, time_ms


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



# Times at the calendar's edges (found by tests/unit/test_fuzz_intake.py): decode raised
# OverflowError, or passed on a time no connector could turn into UTC.

def _track(**fields: Any) -> bytes:
    return orjson.dumps({"type": "track", "event": "E", "userId": "u", **fields})


def test_a_clock_skew_beyond_the_calendar_falls_back_to_received_at() -> None:
    # receivedAt - (sentAt - originalTimestamp) before year 1 or after 9999: a device
    # clock off by millennia cannot be corrected, so the time is receivedAt (the router
    # side's clock, the one the correction would have expressed it in)
    for sent, original in [("9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z"),
                           ("0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z")]:
        event = decode(_track(receivedAt="2024-01-01T00:00:00+01:00", sentAt=sent,
                              originalTimestamp=original))
        assert isinstance(event, dict) and event["timestamp"] == "2023-12-31T23:00:00.000Z"


@pytest.mark.parametrize(("field", "value"), [
    ("timestamp", "0001-01-01T00:00:00+02:00"),  # 0000-12-31T22:00Z
    ("originalTimestamp", "0001-01-01T00:00:00+02:00"),
    ("receivedAt", "9999-12-31T23:59:59-02:00"),  # 10000-01-01T01:59:59Z
    ("sentAt", "9999-12-31T23:59:00-00:01"),
])
def test_a_time_beyond_years_1_to_9999_in_utc_is_a_bad_timestamp(field: str, value: str
                                                                   ) -> None:
    event = decode(_track(**{field: value}))
    assert isinstance(event, Invalid) and event.reason == "bad_timestamp"
    assert event.detail == f"{field} {value!r} is outside years 1-9999 once in UTC"


@pytest.mark.parametrize("value", [
    "0001-01-01T00:00:00Z", "0001-01-01T02:00:00+02:00", "0001-01-01",
    "9999-12-31T23:59:59.999Z", "9999-12-31T21:59:59-02:00", "0999-12-31T23:59:59-02:00",
    "1969-12-31T23:59:59.999+01:00", "9000-01-01T00:00:00+14:00", "2026-01-01T00:00:00-23:59",
])
def test_times_within_the_calendar_in_utc_are_kept(value: str) -> None:
    event = decode(_track(timestamp=value))
    assert isinstance(event, dict) and event["timestamp"] == value
    parse_time(value).astimezone(UTC)  # type: ignore[union-attr]  # what connectors do


@pytest.mark.parametrize("value", ["", "nope", "2026-13-01T00:00:00Z", "99999-01-01",
                                   "1e999", 1_700_000_000_000, True, [], ["2026-01-01"],
                                   {}, {"0": "2"}])
def test_what_is_not_an_iso_time_is_still_a_bad_timestamp(value: object) -> None:
    event = decode(_track(sentAt=value))
    assert isinstance(event, Invalid) and event.reason == "bad_timestamp"
    assert event.detail == f"sentAt {value!r} is not an ISO-8601 time"


def test_a_kafka_time_that_is_no_time_is_not_used() -> None:
    # -1 is Kafka's "no timestamp"; a producer may set any CreateTime, even past 9999
    before = datetime.now(UTC) - timedelta(seconds=5)
    for append_ms in (-1, 2**62, 10**17):
        event = decode(_track(), append_ms)
        assert isinstance(event, dict)
        assert parse_time(event["timestamp"]) > before  # type: ignore[operator]

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
