"""Property-based fuzzing of the per-record path: nothing a producer sends may crash it.

The promise (README, DESIGN.md "Clear fate for every event"): bad input gets a reason and
goes to the dead-letter topic; an exception escaping ``decode``, the global stages or a
destination's route would instead stop the partition. So, for Segment-ish events with
odd values everywhere (extreme ISO times, ids of every JSON type, deep nesting, numbers
beyond 2^64, unicode and NUL in keys and strings, wrong-typed ``integrations`` and
``context.consent``, keys that collide once snake_cased) and for raw bytes:

- ``decode`` returns a dict or ``Invalid``, and a dict's spec times are times every
  connector can turn into UTC (years 1-9999);
- ``dry-run``'s engine (``router.dryrun.evaluate``), with every connector configured
  from ``config/examples`` (and once more without their filters, so every encoder sees
  every call type), gives each event a decision without raising, no stage fails
  (``filter_error``, ``transform_error``) and no encoder raises ("encode failed": a
  context field of the wrong type is left out on a second try, ``events.well_formed``);
- ``Pipeline.intake`` settles or hands over every record without raising.

Hypothesis runs derandomized (the same examples every run) and briefly; set
``FUZZ_EXAMPLES`` to look harder locally.
"""

from __future__ import annotations

import asyncio
import glob
import json
import os
from collections import namedtuple
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import TopicPartition
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router.config import Config, load
from router.delivery.http import HttpSender
from router.dryrun import evaluate
from router.events import Invalid, decode, parse_time
from router.offsets import Tracker
from router.pipeline import Destination, Pipeline, build_route
from router.telemetry import Stats
from router.warehouse import batch_rows

ROOT = Path(__file__).resolve().parents[2]
# hypothesis reports a failure with libcst, whose import warns (an error here): without
# this, a failing example ends the run as an INTERNALERROR instead of a failed test
pytestmark = pytest.mark.filterwarnings(
    "ignore:mypy_extensions.TypedDict is deprecated:DeprecationWarning")
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))

# -- strategies -----------------------------------------------------------------------

ODD_TEXT = st.text(st.characters(codec="utf-8"), max_size=12) | st.sampled_from(
    ["", " ", "\x00", "a\x00b", "😀", "Ünïcödé", "\u202e", "\ufeff", "x" * 300, "null",
     "true", "0", "-1", "1e999", "NaN", "{}", "[]", "\\", "\"", "a.b", "a\\.b"])
BIG_INTS = st.sampled_from([2**63 - 1, 2**63, -(2**63) - 1, 2**64 - 1, 2**64, 10**30,
                            -(10**30), 0, -1, 1])
NUMBERS = (st.integers() | BIG_INTS
           | st.floats(allow_nan=False, allow_infinity=False) | st.just(1e308))
SCALARS = st.none() | st.booleans() | NUMBERS | ODD_TEXT
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(ODD_TEXT, inner, max_size=4), max_leaves=12)
IDS = SCALARS | st.lists(SCALARS, max_size=2) | st.dictionaries(ODD_TEXT, SCALARS, max_size=2)

# Keys that a warehouse's snake_case (and other normalisations) map to the same name.
COLLIDING = st.sampled_from(["Order ID", "order_id", "orderId", "ORDER_ID", "order-id",
                             "order.id", "Order Id", "id", "ID", "user_id", "userId",
                             "timestamp", "context_ip", "$set", "received_at", "1abc",
                             "", "_", "__", "event", "type", "a" * 200])

EXTREME_TIMES = st.sampled_from([
    "0001-01-01T00:00:00Z", "0001-01-01T00:00:00+02:00", "0001-01-01T00:00:00-02:00",
    "0001-01-01", "9999-12-31T23:59:59Z", "9999-12-31T23:59:59.999999Z",
    "9999-12-31T23:59:59-02:00", "9999-12-31T23:59:59+02:00", "9999-12-31",
    "1970-01-01T00:00:00Z", "1969-12-31T23:59:59.999Z", "2038-01-19T03:14:08Z",
    "2024-02-29T12:00:00+14:00", "2024-01-01T00:00:00-23:59", "2024-01-01 00:00:00",
    "20240101T000000Z", "2024-01-01T00:00:00.1234567Z", "2024-01-01T00:00Z",
    "2024-W01-1", "2024-001", "2024-13-01T00:00:00Z", "not a time", "", "  "])
# Times as datetime.isoformat writes them, anywhere in years 1-9999, at any offset.
ISO_TIMES = st.builds(
    lambda when, minutes: when.replace(tzinfo=None).isoformat() + (
        "Z" if minutes is None else
        f"{'+' if minutes >= 0 else '-'}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"),
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)),
    st.none() | st.integers(-23 * 60 - 59, 23 * 60 + 59))
# Within GA4's 72 hours, so its encoder goes past the age check.
RECENT = st.builds(lambda ago: (datetime.now(UTC) - timedelta(seconds=ago)).isoformat(),
                   st.integers(0, 3 * 24 * 3600))
TIMES = EXTREME_TIMES | ISO_TIMES | RECENT | st.none() | NUMBERS | st.booleans()

CONSENT = st.one_of(
    JSON, st.fixed_dictionaries({}, optional={"categoryPreferences": st.one_of(
        JSON, st.dictionaries(st.sampled_from(["Analytics", "Marketing", "analytics"]),
                              SCALARS, max_size=3))}))
INTEGRATIONS = st.one_of(JSON, st.dictionaries(
    st.sampled_from(["All", "Amplitude", "Mixpanel", "webhook", "Webhooks", "warehouse",
                     "Postgres", "BigQuery", "duckdb", "Google Analytics 4"]),
    SCALARS | st.dictionaries(ODD_TEXT, SCALARS, max_size=2), max_size=4))
CONTEXT = st.fixed_dictionaries({}, optional={
    "consent": CONSENT, "traits": JSON | st.dictionaries(COLLIDING, JSON, max_size=3)
    | st.fixed_dictionaries({}, optional={"email": IDS, "ga_client_id": IDS}),
    "ip": IDS, "device": JSON, "page": JSON, "library": JSON, "locale": IDS,
    "userAgent": IDS, "app": JSON, "os": JSON, "campaign": JSON, "timezone": IDS,
    "groupId": IDS, "externalIds": JSON})
OBJECT = st.dictionaries(ODD_TEXT | COLLIDING, JSON, max_size=6)
# Spec-ish properties: the names connectors map (revenue, products, email, ...).
ECOMMERCE = st.fixed_dictionaries({}, optional={
    "revenue": NUMBERS | ODD_TEXT, "total": NUMBERS | ODD_TEXT, "value": JSON,
    "currency": ODD_TEXT | st.sampled_from(["USD", "usd", "EURO"]), "price": JSON,
    "quantity": JSON, "order_id": IDS, "product_id": IDS, "sku": IDS, "name": IDS,
    "products": JSON | st.lists(st.dictionaries(st.sampled_from(
        ["product_id", "sku", "price", "quantity", "name", "category"]), JSON), max_size=3),
    "email": IDS, "url": IDS, "path": IDS, "title": IDS, "referrer": IDS, "search": IDS,
    "session_id": JSON})
TRAITS = st.fixed_dictionaries({}, optional={
    "email": IDS, "firstName": IDS, "lastName": IDS, "name": IDS, "phone": IDS,
    "company": JSON | st.fixed_dictionaries({"name": IDS}),
    "address": JSON | st.fixed_dictionaries({"city": IDS, "country": IDS}),
    "birthday": TIMES, "createdAt": TIMES, "renewalDate": TIMES, "domain": IDS, "age": JSON,
    "gender": IDS, "website": IDS, "title": IDS, "employees": JSON, "industry": IDS,
    "plan": IDS, "avatar": IDS, "description": IDS, "id": IDS, "username": IDS})


def _merged(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    return {**a, **b}


PROPS = st.builds(_merged, ECOMMERCE, OBJECT) | JSON
TRAIT_OBJECT = st.builds(_merged, TRAITS, OBJECT) | JSON

COMMON_FIELDS = {
    "messageId": st.none() | ODD_TEXT | IDS, "timestamp": TIMES, "sentAt": TIMES,
    "receivedAt": TIMES, "originalTimestamp": TIMES, "context": CONTEXT | JSON,
    "integrations": INTEGRATIONS, "version": JSON, "channel": IDS, "writeKey": IDS,
    "properties": PROPS, "traits": TRAIT_OBJECT, "extra": JSON,
}
# What decode accepts, so most events get past it to the stages and connectors.
WELL_TYPED = {
    "messageId": st.text(min_size=1, max_size=40), "timestamp": EXTREME_TIMES | ISO_TIMES,
    "sentAt": EXTREME_TIMES | ISO_TIMES, "receivedAt": EXTREME_TIMES | ISO_TIMES,
    "originalTimestamp": EXTREME_TIMES | ISO_TIMES, "context": CONTEXT,
    "integrations": st.dictionaries(ODD_TEXT, JSON, max_size=3) | st.fixed_dictionaries(
        {"Google Analytics 4": st.fixed_dictionaries({"app_instance_id": IDS})}),
    "properties": st.builds(_merged, ECOMMERCE, OBJECT),
    "traits": st.builds(_merged, TRAITS, OBJECT),
}
NAMES = ODD_TEXT | COLLIDING | st.sampled_from(
    ["Order Completed", "Signed Up", "Product Viewed", "Heartbeat", "Demo Requested",
     "page_view", "purchase", "Application Installed", "x" * 60, "$identify", "ga_x"])
PER_TYPE: dict[str, dict[str, Any]] = {
    "track": {"event": NAMES},
    "identify": {},
    "page": {"name": IDS, "category": IDS},
    "screen": {"name": IDS, "category": IDS},
    "group": {"groupId": IDS},
    "alias": {"previousId": IDS},
}
IDENTITY = st.text(min_size=1, max_size=40) | st.integers() | BIG_INTS


@st.composite
def segment_events(draw: st.DrawFn) -> dict[str, Any]:
    """One event of a random type: its spec fields mostly of the types decode accepts
    (so it gets past decode and exercises the stages and connectors), sometimes of any
    type; every other field optional and of any shape."""
    kind = draw(st.sampled_from(sorted(PER_TYPE)))
    required = {"track": "event", "group": "groupId", "alias": "previousId"}.get(kind)
    event: dict[str, Any] = {"type": kind}
    if draw(st.integers(0, 9)):  # mostly valid identity, sometimes anything
        for name in draw(st.sampled_from([["userId"], ["anonymousId"],
                                          ["userId", "anonymousId"]])):
            event[name] = draw(IDENTITY)
    fields = {**COMMON_FIELDS, "userId": IDS, "anonymousId": IDS, **PER_TYPE[kind]}
    for name, strategy in fields.items():
        if draw(st.integers(0, 2)) == 0:
            hostile = name not in WELL_TYPED or draw(st.integers(0, 9)) == 0
            event[name] = draw(strategy if hostile else WELL_TYPED[name])
    if required and draw(st.integers(0, 9)):
        event[required] = draw(NAMES if required == "event" else IDENTITY)
    return event


def _nest(depth: int, leaf: Any, key: str) -> Any:
    for _ in range(depth):
        leaf = {key: leaf} if key else [leaf]
    return leaf


DEEP = st.builds(_nest, st.integers(100, 1100), SCALARS, st.sampled_from(["a", "", "$set"]))


@st.composite
def deep_events(draw: st.DrawFn) -> dict[str, Any]:
    """A valid event with one very deeply nested value (JSON allows any depth)."""
    event = draw(segment_events())
    where = draw(st.sampled_from(["properties", "traits", "context"]))
    event[where] = {"deep": draw(DEEP)}
    return event


def as_bytes(event: Any) -> bytes:
    # the standard library writes ints beyond 64 bits, which orjson refuses to
    return json.dumps(event, ensure_ascii=False).encode()


RAW = st.one_of(
    st.binary(max_size=64),
    st.builds(as_bytes, JSON),
    st.sampled_from([b"", b" ", b"null", b"[]", b"{}", b"\xff\xfe", b'{"type":"track"',
                     b'{"a":1e400}', b'{"a":"\\ud800"}', b"\x00", b'{"type": "track"}\x00',
                     b'{"type":"track","event":"E","userId":"u","a":18446744073709551616}',
                     b'{"type":"track","event":"E","userId":"u","userId":"v"}',
                     b'\xef\xbb\xbf{"type":"track","event":"E","userId":"u"}']),
)


@st.composite
def timed_events(draw: st.DrawFn) -> dict[str, Any]:
    """A valid track whose four time fields are each absent, odd or extreme: the inputs of
    decode's clock-skew correction."""
    event: dict[str, Any] = {"type": "track", "event": "E", "userId": "u"}
    for name in ("timestamp", "sentAt", "receivedAt", "originalTimestamp"):
        if draw(st.booleans()) or name != "timestamp":
            value = draw(st.none() | EXTREME_TIMES | ISO_TIMES)
            if value is not None:
                event[name] = value
    return event


EVENTS = st.builds(as_bytes, segment_events())
TIMED = st.builds(as_bytes, timed_events())
DEEP_EVENTS = st.builds(as_bytes, deep_events())
EVENT_BYTES = st.one_of(EVENTS, EVENTS, EVENTS, TIMED, DEEP_EVENTS, RAW)
# A Kafka record's timestamp: None (old formats), -1 ("none"), or whatever a producer set.
KAFKA_TIMES = st.none() | st.sampled_from([-1, 0, 1, 2**62]) | st.integers(-(2**63), 2**63 - 1)


# -- (a) decode -----------------------------------------------------------------------


def check_decoded(raw: bytes | None, append_ms: int | None = 1_700_000_000_000
                  ) -> dict[str, Any] | Invalid:
    result = decode(raw, append_ms)
    assert type(result) in (dict, Invalid), result
    if type(result) is dict:
        assert type(result["messageId"]) is str and result["messageId"]
        # every connector turns the spec's times into UTC (ISO text, epoch ms or µs)
        for name in ("timestamp", "sentAt", "receivedAt", "originalTimestamp"):
            if result.get(name) is not None:
                when = parse_time(result[name])
                assert when is not None, (name, result[name])
                when.astimezone(UTC)
    return result


@FUZZ
@given(EVENT_BYTES, KAFKA_TIMES)
def test_decode_returns_an_event_or_a_reason(raw: bytes, append_ms: int | None) -> None:
    check_decoded(raw, append_ms)


# -- (b) dry-run's engine, every connector ---------------------------------------------

# Every global stage and every transform step, on a destination whose `where` calls each
# FQL function on fields of any type (it ends in `or true`: evaluated, then passes).
STAGES = {
    "name": "stages", "type": "webhook", "settings": {"url": "http://127.0.0.1:9/hook"},
    "where": 'typeof(properties.total) = "number" and properties.total > 100'
             ' or length(properties.products) >= 2 or length(userId) < 3'
             ' or contains(lowercase(event), "order") or match(context.page.url, "*[a-z]?\\*")'
             ' or uppercase(traits.email) in ["A", 1, null, true]'
             ' or properties.products.0.price <= 1'
             ' or !(context.consent.categoryPreferences.Analytics = true) or true',
    "transforms": [
        {"rename_events": {"Order Completed": "purchase", "": "empty"}},
        {"drop_fields": ["context.ip", "properties.order\\.id", "traits.password",
                         "context.traits"]},
        {"allow_fields": {"properties": ["total", "products", "Order ID", "order_id", ""],
                          "context": ["page", "consent", "traits", "ip"]}},
        {"hash_fields": ["traits.email", "properties.email", "context.page.url", "userId",
                         "anonymousId", "properties.products"]},
        {"set_fields": {"context.source": "fuzz", "properties.uid": "{{userId}}",
                        "properties.k": "k-{{event}}-{{properties.total}}",
                        "properties.copy": "{{context}}", "traits.at": "{{timestamp}}",
                        "properties.deep.er": 1}},
        {"sample": {"percent": 100}},
        {"python": "copy:copy"},
    ],
}


def all_connectors() -> Config:
    """Every connector of config/examples, as configured there and again with no consent
    gate and no `where` (named ``<name>-all``), so every encoder sees every call type;
    with ``STAGES``, a tracking plan that tags violations and a suppression list."""
    base = Config.model_validate({"pipeline": {
        "tracking_plan": {"path": str(ROOT / "config/tracking-plan.yaml"),
                          "unplanned": "allow", "violations": "tag"},
        "suppressed_users": str(ROOT / "config/suppressed-users.txt")},
        "destinations": [STAGES]})
    dests = list(base.destinations)
    for path in sorted(glob.glob(str(ROOT / "config/examples/*.yaml"))):
        for dest in load(path, env={}).destinations:
            dests += [dest, dest.model_copy(update={
                "name": dest.name + "-all", "where": None, "consent_categories": ()})]
    return base.model_copy(update={"destinations": dests})


CONFIG = all_connectors()

def check_dry_run(raw: bytes) -> dict[str, Any]:
    result = evaluate(CONFIG, raw)
    decoded = decode(raw, None, CONFIG.kafka.max_event_bytes)
    if isinstance(decoded, Invalid):
        assert result["decision"] == "dead-letter"
        return result
    for name, outcome in result.get("destinations", {}).items():
        assert outcome["decision"] in ("sent", "filtered", "rejected"), (name, outcome)
        # the stages never raise on a JSON event (the python step's copy:copy neither)
        assert outcome.get("reason") not in ("filter_error", "transform_error"), (name, outcome)
        # an exception in an encoder is a crash dry-run happens to catch, not a decision
        assert not str(outcome.get("reason", "")).startswith("encode failed"), (name, outcome)
    return result


@FUZZ
@given(st.one_of(EVENTS, EVENTS, TIMED, RAW))
def test_dry_run_decides_every_event_at_every_connector(raw: bytes) -> None:
    check_dry_run(raw)


# -- (c) Pipeline.intake ---------------------------------------------------------------

Record = namedtuple("Record", "value offset timestamp key")


class Collect:
    """A worker stand-in that settles what it is given (prepared, when it prepares)."""

    def __init__(self, prepare: Any = None) -> None:
        self.prepare = prepare

    def submit_many(self, items: list[tuple[Any, Any]]) -> None:
        for env, _ in items:
            env.settle()


class Outbox:
    def __init__(self) -> None:
        self.dead: list[str] = []

    async def dead_letter(self, items: list[tuple[Any, str]], destination: str = "") -> None:
        for env, reason in items:
            self.dead.append(reason)
            env.settle()


def _prepare_of(dest: Any) -> Any:
    """What the real HTTP worker applies as it routes: the connector's ``prepare``, an
    exception in it becoming the event's reject reason (as ``HttpSender.prepare`` does)."""
    prepare = dest.connector.prepare
    if prepare is None:
        return None

    def guarded(event: dict[str, Any]) -> bytes | str:
        try:
            return prepare(event, dest.settings)  # type: ignore[no-any-return]
        except Exception as exc:
            return f"encode failed: {exc!r}"

    return guarded


def intake(raws: list[bytes | None], times: list[int | None]) -> Outbox:
    stats, tracker, outbox = Stats(), Tracker(), Outbox()
    dests = [Destination(cfg, build_route(cfg), Collect(_prepare_of(cfg)),  # type: ignore[arg-type]
                         stats.destination(cfg.name)) for cfg in CONFIG.destinations]
    pipe = Pipeline(CONFIG, dests, outbox, stats, tracker)  # type: ignore[arg-type]
    tp = TopicPartition("events", 0)

    async def run() -> None:
        pipe.intake(tp, [Record(raw, offset, time, b"k")
                         for offset, (raw, time) in enumerate(zip(raws, times, strict=True))])
        await asyncio.gather(*pipe.background)

    asyncio.run(run())
    assert tracker.committable() == {tp: len(raws)}  # every record settled
    return outbox


@FUZZ
@given(st.lists(st.tuples(st.none() | EVENT_BYTES, KAFKA_TIMES), min_size=1, max_size=4))
def test_intake_settles_every_record(records: list[tuple[bytes | None, int | None]]) -> None:
    intake([raw for raw, _ in records], [time for _, time in records])


# -- intake: the regression the fuzzing found (decode's are in test_events.py) -------


def _event(**fields: Any) -> bytes:
    return orjson.dumps({"type": "track", "event": "E", "userId": "u", **fields})


def test_an_out_of_range_time_is_dead_lettered_by_intake_not_raised() -> None:
    outbox = intake([_event(timestamp="0001-01-01T00:00:00+02:00"),
                     _event(receivedAt="2024-01-01T00:00:00Z", sentAt="9999-12-31T23:59:59Z",
                            originalTimestamp="0001-01-01T00:00:00Z"),
                     _event(), _event(timestamp="2024-01-01T00:00:00Z")],
                    [None, None, 2**62, -1])
    assert [reason.split(":")[0] for reason in outbox.dead] == ["bad_timestamp"]


# -- inputs a connector or the warehouse cannot map ----------------------------------------
# (found by the fuzzing above: before, an encoder's exception rejected its whole batch, a
# HubSpot date trait beyond the calendar raised, and deep nesting parked a warehouse's
# whole batch as an internal error, retried for hours)


def _batch(name: str, event: dict[str, Any]) -> tuple[Any, list[dict[str, Any]]]:
    """The destination and a batch of [a good event, this one], as decode leaves them
    (built directly: a 990-level event is deeper than the test's own JSON writer goes)."""
    dest = next(d for d in CONFIG.destinations if d.name == name)
    now = datetime.now(UTC).isoformat()  # GA4 refuses events older than 72 h first
    good = decode(as_bytes({"messageId": "m-0", "timestamp": now, "type": event["type"],
                            "userId": "user-000001", "anonymousId": "anon-000001",
                            "event": "E", "traits": {"email": "a@b.co"}, "groupId": "g1"}))
    assert isinstance(good, dict)
    return dest, [good, {"messageId": "m-1", "timestamp": now, **event}]


def _outcome(name: str, event: dict[str, Any]) -> tuple[dict[int, str], set[int]]:
    """(rejected positions with reasons, positions sent) of [good, this event]."""
    dest, batch = _batch(name, event)
    if dest.connector.encode is None:  # a warehouse: its rows
        tables, rejected = batch_rows(batch, datetime.now(UTC))
        return rejected, {position for rows in tables.values() for position, _ in rows}
    # what the engine's HTTP sender does with an encoder's exception
    encoded = HttpSender(dest.connector, dest.settings)._encode(
        dest.connector.encode, batch, [0, 1])
    return encoded.rejected, {p for request in encoded.requests for p in request.events}


# a context field of the wrong type, which the connector reads: sent without it
ODD_CONTEXT = [
    ("amplitude-all", {"type": "track", "event": "E", "userId": "user1",
                       "context": {"device": 5}}),  # amplitude.py device.get
    ("mixpanel-all", {"type": "track", "event": "E", "userId": "user1",
                      "context": {"os": 5}}),  # mixpanel_map.py os_.get
    ("ga4-all", {"type": "page", "anonymousId": "anon1",
                 "context": {"page": [1]}}),  # ga4.py {**page}
    ("posthog-all", {"type": "page", "userId": "user1",
                     "context": {"page": [1]}}),  # posthog.py {**page}
]


@pytest.mark.parametrize(("name", "event"), ODD_CONTEXT,
                         ids=[n for n, _ in ODD_CONTEXT])
def test_a_context_field_of_the_wrong_type_is_left_out_not_the_event(
        name: str, event: dict[str, Any]) -> None:
    rejected, sent = _outcome(name, event)
    assert rejected == {} and sent == {0, 1}, (rejected, sent)
    dest, batch = _batch(name, event)
    [payload] = evaluate(CONFIG.model_copy(update={"destinations": [dest]}),
                         orjson.dumps(batch[1]))["destinations"].values()
    assert payload["decision"] == "sent", payload  # dry-run shows what the engine does


# no form the vendor or warehouse would take: that event alone is rejected
REPORTED = [
    ("braze-all", {"type": "track", "event": "Order Completed", "userId": "u",
                   "properties": {"products": [1]}}),  # not an object
    ("hubspot-all", {"type": "identify", "userId": "u", "traits": {
        "email": "a@b.co", "renewalDate": "0001-01-01T00:00:00+02:00"}}),  # no UTC day
    ("warehouse-all", {"type": "track", "event": "E", "userId": "u", "properties": {
        "a": _nest(255, 1, "")}}),  # deeper than orjson.dumps goes
    ("warehouse-all", {"type": "track", "event": "E", "userId": "u",
                       "properties": _nest(990, 1, "a")}),  # deeper than Python recurses
]


@pytest.mark.parametrize(("name", "event"), REPORTED, ids=[f"{n}-{i}" for i, (n, _) in
                                                           enumerate(REPORTED)])
def test_an_event_its_connector_cannot_map_is_rejected_alone(name: str,
                                                            event: dict[str, Any]) -> None:
    rejected, sent = _outcome(name, event)
    assert list(rejected) == [1] and sent == {0}, (rejected, sent)
