"""Decoding: Kafka bytes -> a Segment-spec event dict, or Invalid(reason).

The event stays the plain dict orjson gives us; decode only checks what the spec
requires and fills two fields every destination relies on:

- ``messageId``: when absent, derived deterministically from the event's bytes
  (``derived-<sha1>``) so a redelivered copy keeps its id and stays idempotent;
- ``timestamp``: when absent or null, ``receivedAt - (sentAt - originalTimestamp)`` (Segment's
  clock-skew correction; ``receivedAt`` when that leaves the calendar), else
  ``originalTimestamp``, else ``receivedAt``, else the Kafka append time (if it is one).

A time field that is not an ISO-8601 string, or is one outside years 1-9999 once in UTC
(``0001-01-01T00:00:00+02:00``), makes the event ``Invalid("bad_timestamp")``.

Timestamps stay ISO-8601 strings in the dict; ``parse_time`` turns one into a datetime.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

TYPES = frozenset(("track", "identify", "page", "screen", "group", "alias"))
TIME_FIELDS = ("timestamp", "sentAt", "receivedAt", "originalTimestamp")
OBJECT_FIELDS = ("properties", "traits", "context", "integrations")
DEFAULT_MAX_EVENT_BYTES = 32 * 1024


@dataclass(frozen=True, slots=True)
class Invalid:
    reason: str  # a short code: invalid_json, invalid_utf8, not_an_object, ...
    detail: str


def parse_time(value: Any) -> datetime | None:
    """ISO-8601 string (with Z or offset; naive is UTC) -> aware datetime, else None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def utc_day(value: Any) -> str | None:
    """An ISO-8601 time or epoch milliseconds (a number or its digits) -> its UTC day
    (``YYYY-MM-DD``); None for anything else, or a time with no UTC day in the calendar."""
    if isinstance(value, str) and (parsed := parse_time(value)) is not None:
        try:
            return parsed.astimezone(UTC).date().isoformat()
        except OverflowError:  # 0001-01-01T00:00:00+02:00
            return None
    try:
        return None if isinstance(value, bool) else (
            EPOCH + timedelta(milliseconds=float(value))).date().isoformat()
    except (TypeError, ValueError, OverflowError):
        return None


def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def time_ms(event: dict[str, Any]) -> int:
    """The event's ``timestamp`` in epoch milliseconds (decode guarantees it parses)."""
    try:
        parsed = datetime.fromisoformat(event.get("timestamp"))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return (parsed - EPOCH) // MILLISECOND  # exact: float seconds * 1000 can be 1 ms off


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MILLISECOND = timedelta(milliseconds=1)


def event_jsons(events: list[dict[str, Any]], raws: list[bytes | None]) -> list[bytes]:
    """Each event's JSON: its record's own bytes where known (``raws``), else serialised."""
    return [raw if raw is not None else orjson.dumps(event)
            for raw, event in zip(raws, events, strict=True)]


def json_array(events: list[dict[str, Any]], raws: list[bytes | None] | None) -> bytes:
    """A batch as one JSON array (``event_jsons`` when the records' bytes are given)."""
    if raws is None:
        return orjson.dumps(events)
    return array_of(event_jsons(events, raws))


# Segment's spec makes these context fields objects; a producer may still send a number
CONTEXT_OBJECTS = ("app", "campaign", "device", "library", "location", "network", "os",
                   "page", "referrer", "screen", "traits")


def well_formed(event: dict[str, Any]) -> dict[str, Any] | None:
    """The event without the context fields the spec makes objects that are not (a
    connector that reads them may fail on them), or None when it has none. For a second
    try only, after an encoder failed: nothing is checked on the hot path."""
    context = event.get("context")
    if type(context) is not dict:
        return None
    odd = [k for k in CONTEXT_OBJECTS if type(context.get(k, {})) is not dict
           and context[k] is not None]
    if not odd:
        return None
    return {**event, "context": {k: v for k, v in context.items() if k not in odd}}


def array_of(jsons: Iterable[bytes]) -> bytes:
    """A JSON array of values already serialised."""
    return b"[" + b",".join(jsons) + b"]"


def user_key(event: dict[str, Any]) -> str:
    """The identity used for ordering and partitioning: userId, else anonymousId."""
    return str(event.get("userId") or event.get("anonymousId") or "")


def decode(
    raw: bytes | None,
    append_time_ms: int | None = None,
    max_bytes: int = DEFAULT_MAX_EVENT_BYTES,
) -> dict[str, Any] | Invalid:
    event = parse(raw, max_bytes)
    if type(event) is dict:
        complete(event, raw, append_time_ms)  # type: ignore[arg-type]
    return event


def parse(raw: bytes | None, max_bytes: int = DEFAULT_MAX_EVENT_BYTES
          ) -> dict[str, Any] | Invalid:
    """The spec checks of ``decode``, without filling ``messageId`` and ``timestamp``."""
    if raw is None:
        return Invalid("empty", "the message has no value (a tombstone?)")
    if len(raw) > max_bytes:
        return Invalid("oversized", f"{len(raw)} bytes is over the {max_bytes}-byte limit")
    try:
        event = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as uexc:
            return Invalid("invalid_utf8", str(uexc))
        return Invalid("invalid_json", str(exc))
    if type(event) is not dict:
        return Invalid("not_an_object", f"expected a JSON object, got {type(event).__name__}")
    return _check(event) or event


def complete(event: dict[str, Any], raw: bytes, append_time_ms: int | None) -> bool:
    """Fill a missing ``messageId`` and ``timestamp``; True when it changed the event."""
    changed = False
    if not event.get("messageId"):
        event["messageId"] = "derived-" + hashlib.sha1(raw).hexdigest()
        changed = True
    if event.get("timestamp") is None:  # a null timestamp is as good as none
        event["timestamp"] = _infer_timestamp(event, append_time_ms)
        changed = True
    return changed


def _check(event: dict[str, Any]) -> Invalid | None:
    get = event.get
    kind = get("type")
    if kind not in TYPES:
        return Invalid("unknown_type", f"type {kind!r} is not one of {sorted(TYPES)}")
    user_id, anon_id = get("userId"), get("anonymousId")
    if not user_id and not anon_id:
        return Invalid("missing_identity", "neither userId nor anonymousId is set")
    if not (type(user_id) is str or user_id is None) or not (
            type(anon_id) is str or anon_id is None):
        for name, value in (("userId", user_id), ("anonymousId", anon_id)):
            if value is not None and type(value) is not str and type(value) is not int:
                return Invalid("wrong_type",
                               f"{name} must be a string, got {type(value).__name__}")
    message_id = get("messageId")
    if message_id is not None and type(message_id) is not str:
        return Invalid("wrong_type", f"messageId must be a string, got {type(message_id).__name__}")
    if kind == "track":
        name = get("event")
        if not name or type(name) is not str:
            return Invalid("missing_event", "a track call needs a non-empty string `event`")
    elif kind == "alias" and get("previousId") in (None, ""):
        return Invalid("missing_previous_id", "an alias call needs `previousId`")
    elif kind == "group" and get("groupId") in (None, ""):  # the spec marks it required
        return Invalid("missing_group_id", "a group call needs `groupId`")
    for name in OBJECT_FIELDS:
        value = get(name)
        if value is not None and type(value) is not dict:
            return Invalid("wrong_type", f"{name} must be an object, got {type(value).__name__}")
    for name in TIME_FIELDS:
        value = get(name)
        if value is None:
            continue
        try:
            # the usual time, in years 2000-2999, is a UTC instant whatever its offset;
            # this test costs what a type check would (a non-string raises TypeError or
            # LookupError); anything else takes the full check
            if value[0] == "2":
                fromisoformat(value)
                continue
        except (ValueError, TypeError, LookupError):
            pass
        problem = _odd_time(value)
        if problem:
            return Invalid("bad_timestamp", f"{name} {value!r} {problem}")
    return None


fromisoformat = datetime.fromisoformat


def _odd_time(value: Any) -> str | None:
    """Why a time (outside years 2000-2999) is unusable, or None when it is fine.

    Every destination takes times in UTC (ISO text, epoch ms or µs) and the calendar
    stops at years 1 and 9999, so e.g. ``0001-01-01T00:00:00+02:00`` (UTC year 0) has no
    form a destination could be sent: it is a bad timestamp, not a crash later."""
    if type(value) is not str or not value:
        return "is not an ISO-8601 time"
    try:
        parsed = fromisoformat(value)
        if parsed.tzinfo is not None:
            parsed.astimezone(UTC)
    except ValueError:
        return "is not an ISO-8601 time"
    except OverflowError:
        return "is outside years 1-9999 once in UTC"
    return None


def _infer_timestamp(event: dict[str, Any], append_time_ms: int | None) -> str:
    received = parse_time(event.get("receivedAt"))
    sent = parse_time(event.get("sentAt"))
    original = parse_time(event.get("originalTimestamp"))
    if received and sent and original:
        try:
            return iso(received - (sent - original))
        except OverflowError:
            # a skew of thousands of years (sentAt 9999, originalTimestamp 0001): that
            # device clock cannot be corrected; receivedAt is the router side's clock,
            # the one the correction would have expressed the time in
            return iso(received)
    if original:
        return iso(original)
    if received:
        return iso(received)
    if append_time_ms is not None and append_time_ms > 0:  # Kafka: -1 is "no timestamp"
        try:
            return iso(datetime.fromtimestamp(append_time_ms / 1000, UTC))
        except (OverflowError, ValueError, OSError):  # a producer's absurd CreateTime
            pass
    return iso(datetime.now(UTC))
