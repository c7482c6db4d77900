"""The seam between the engine and a destination.

A destination module defines ``CONNECTOR = Connector(...)`` with:

- ``settings``: a pydantic model (subclass of ``ConnectorSettings``), a ``description``
  on every field; secrets are ``SecretStr``;
- ``limits``: the vendor's hard per-request limits (config may lower, never raise);
- ``encode(events, settings) -> Encoded``: pure; turns a batch of Segment-spec event
  dicts into one or more HTTP requests, and rejects locally what the vendor would refuse
  (or would silently drop), each with a reason;
- optionally ``encode_raw(jsons, settings) -> Encoded``: the same from each event's JSON
  (the Kafka record's own bytes when nothing changed the event), for a connector that
  sends events as they are and need not serialise them again;
- optionally ``prepare(event, settings) -> bytes | str`` with
  ``encode_prepared(prepared, settings) -> Encoded``: ``encode`` in two halves, for a
  connector whose request carries each event as its own JSON value. ``prepare`` turns
  one event into its vendor JSON (or the reason it cannot be sent) when the event is
  routed, so the batch waits as compact bytes instead of decoded events (less memory,
  and the decoded event is freed at once: ``orjson.loads`` then costs about half);
  ``encode_prepared`` builds the request(s) from a batch of them (``split_prepared``
  sets the reasons aside; ``encode = encode_in_parts(prepare, encode_prepared)``);
- optionally ``classify(response, request) -> Outcome`` where the default HTTP rules
  (``classify_http``) are not enough — e.g. per-event errors in a 200 or 400 body;
- optionally ``authenticate(session, settings) -> Credentials`` for token-based auth
  (the engine caches the credentials until ``expires_at`` or a ``Retry(reauth=True)``);
- or, for warehouses, ``sender(settings) -> Sender`` which replaces HTTP entirely.

The engine owns batching, concurrency, rate limits, retries, parking, dead letters,
metrics and logs.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
from pydantic import BaseModel, ConfigDict

from router.delivery.outcome import (
    DELIVERED,
    Outcome,
    Rejected,
    Retry,
)

Event = dict[str, Any]


class ConnectorSettings(BaseModel):
    """Base of every connector's settings: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True, slots=True)
class Limits:
    max_events: int
    max_bytes: int
    max_wait_ms: int = 500  # default flush interval for this connector
    # the batch's size when config sets none (default: max_events); for a destination
    # whose cap is not a vendor's but a trade-off (a warehouse: memory for speed)
    default_events: int | None = None


@dataclass(slots=True)
class Request:
    url: str
    body: bytes
    events: list[int]  # positions (in the batch given to encode) this request carries
    headers: dict[str, str] = field(default_factory=dict)
    method: str = "POST"


@dataclass(slots=True)
class Encoded:
    requests: list[Request] = field(default_factory=list)
    rejected: dict[int, str] = field(default_factory=dict)  # position -> reason


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: Mapping[str, str]  # case-insensitive mapping in practice (CIMultiDict)
    body: bytes


def json_body(raw: bytes) -> Any:
    """A body as JSON, or None when it is not JSON (an HTML error page from a proxy, a
    truncated body): a classifier reads what a server sends and must not raise on it."""
    try:
        return orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        return None


def json_object(raw: bytes) -> dict[str, Any]:
    """``json_body`` when it is an object, else ``{}``."""
    value = json_body(raw)
    return value if isinstance(value, dict) else {}


@dataclass(frozen=True, slots=True)
class Credentials:
    headers: dict[str, str]
    expires_at: float = float("inf")  # time.time() seconds


class Sender(Protocol):
    """A destination that is not an HTTP API (warehouses). One outcome per event.

    Optional attributes the engine reads: ``max_concurrency`` (an int: batches it can
    take at once; the engine caps ``delivery.concurrency`` at it), ``takes_raw``
    (``send(events, raws)`` takes the records' own bytes), ``serial`` (True: it works
    one batch at a time and queues the next, so a send's time is counted from the end of
    the one ahead of it) and ``withdraw()`` (a sender
    that queues batches itself takes back those not started when the destination
    stalls; their ``send`` raises ``router.delivery.gate.Withdrawn``)."""

    async def start(self) -> None: ...

    async def send(self, events: list[Event]) -> list[Outcome]: ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class Connector:
    name: str  # the `type:` in config
    display_name: str  # matched by the integrations object, e.g. "Google Analytics 4"
    settings: type[ConnectorSettings]
    limits: Limits
    encode: Callable[[list[Event], Any], Encoded] | None = None
    encode_raw: Callable[[list[bytes], Any], Encoded] | None = None
    prepare: Callable[[Event, Any], bytes | str] | None = None
    encode_prepared: Callable[[list[bytes | str], Any], Encoded] | None = None
    classify: Callable[[Response, Request], Outcome] | None = None
    authenticate: Callable[[Any, Any], Awaitable[Credentials]] | None = None
    sender: Callable[[Any], Sender] | None = None
    # what dry-run shows for a connector with its own sender (a warehouse's rows)
    preview: Callable[[list[Event], Any], list[dict[str, Any]]] | None = None
    rate_limit_per_s: float = 0.0  # default rate limit (0 = none); config may override
    docs: str = ""  # identity / mapping notes rendered into the reference docs
    # other keys of the integrations object that mean this connector: Segment's catalog
    # names where they differ from ours ("Webhooks" for "Webhook")
    other_names: tuple[str, ...] = ()
    # a warehouse gets every event whatever the integrations object's "All" says, as in
    # Segment ("passed downstream to your warehouse(s)"); only a key naming it turns it off
    warehouse: bool = False

    def __post_init__(self) -> None:
        if (self.prepare is None) != (self.encode_prepared is None):
            raise ValueError(f"connector {self.name!r}: prepare and encode_prepared go together")


def prepared(result: dict[str, Any] | str) -> bytes | str:
    """A ``prepare``'s answer from a conversion's: its JSON (``compact_json``), or the
    reason it gave."""
    return result if type(result) is str else compact_json(result)


def array_head(fields: dict[str, Any], key: str) -> bytes:
    """The start of a JSON object of ``fields`` and then ``key``, an array, up to its
    first item (``array_body`` completes it)."""
    return orjson.dumps({**fields, key: []})[:-3] + b"["


def array_body(head: bytes, jsons: Iterable[bytes]) -> bytes:
    """``array_head``'s object completed: the array's items (already JSON), closed."""
    return head + b",".join(jsons) + b"]}"


def encode_in_parts(prepare: Callable[[Event, Any], bytes | str],
                    encode_prepared: Callable[[list[bytes | str], Any], Encoded]
                    ) -> Callable[[list[Event], Any], Encoded]:
    """A connector's ``encode`` made of its ``prepare`` and ``encode_prepared`` (what the
    engine does in two steps; dry runs and the goldens call ``encode``)."""
    def encode(events: list[Event], settings: Any) -> Encoded:
        return encode_prepared([prepare(event, settings) for event in events], settings)
    return encode


def split_prepared(prepared: list[bytes | str]) -> tuple[list[bytes], list[int], Encoded]:
    """A prepared batch as (the events' JSON, their positions in the batch, an ``Encoded``
    holding the rejected ones' reasons) for an ``encode_prepared`` to fill in."""
    jsons: list[bytes] = []
    positions: list[int] = []
    encoded = Encoded()
    for position, item in enumerate(prepared):
        if type(item) is str:
            encoded.rejected[position] = item
        else:
            jsons.append(item)  # type: ignore[arg-type]
            positions.append(position)
    return jsons, positions, encoded


def compact_json(value: Any) -> bytes:
    """``orjson.dumps`` for a value that stays in memory a while (a prepared event).

    orjson writes into a buffer larger than its output and shrinks it in place, which
    leaves each small result in a malloc'd block between short-lived ones: 20,000 kept
    that way held ~90 MB of heap in a probe, against ~13 MB for exact copies (which
    small enough go to Python's own allocator). The copy costs ~0.1 µs."""
    return bytes(memoryview(orjson.dumps(value)))


def retry_after_s(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Parse ``Retry-After``: delta-seconds or an HTTP date. None when absent or bad."""
    value = headers.get("Retry-After")
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def classify_http(response: Response, request: Request | None = None) -> Outcome:
    """Segment / RudderStack / Vector rules: 2xx delivered; 408, 429 and 5xx except
    501/505 retried (honouring Retry-After); any other status rejected."""
    status = response.status
    if 200 <= status < 300:
        return DELIVERED
    if status in (408, 429) or (status >= 500 and status not in (501, 505)):
        return Retry(f"HTTP {status}", retry_after_s(response.headers))
    return Rejected(f"HTTP {status}: {response.body[:200].decode('utf-8', 'replace')}")
