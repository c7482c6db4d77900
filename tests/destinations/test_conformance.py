"""The conformance suite: the same checks for every connector in ``REGISTRY``, now and later.

For each connector: its example config exists and validates; ``encode`` is pure, accounts
for every event exactly once, and matches the reviewed golden payload of the reference
events; its settings are documented and its limits sane; its classifier maps the
canned HTTP answers to the outcome types in ``EXPECTED_CLASSIFY``. Connectors with their
own sender (warehouses) skip the HTTP parts. A new connector fails here until it has an
example config, a golden (``python -m tests.destinations.golden --update <name>``,
reviewed by eye) and a row in ``EXPECTED_CLASSIFY``.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import orjson
import pytest
from pydantic import SecretStr

from destinations.base import Connector, ConnectorSettings, Event, Request, Response, classify_http
from destinations.registry import REGISTRY
from router.config import load
from router.delivery.outcome import Delivered, Outcome, Partial, Rejected, Retry, Split
from tests.destinations import golden
from tests.destinations.samples import FULL, MINIMAL

NAMES = sorted(REGISTRY)
SECRET_SUFFIXES = ("secret", "password", "api_key", "token", "private_key")
URL_WORDS = ("url", "endpoint", "host")


def http_connector(name: str) -> Connector:
    connector = REGISTRY[name]
    if connector.encode is None:
        pytest.skip(f"{name} has its own sender (a warehouse): no HTTP request to encode "
                    "or classify")
    return connector


def settings_of(name: str) -> Any:
    path = golden.example_path(name)
    if not path.exists():  # test_example_config_exists_and_validates fails for it
        pytest.skip(f"{path.relative_to(golden.ROOT)} is missing, and the payloads are "
                    "checked with its settings")
    return golden.example_settings(name)


def with_fixed_clock(connector: Connector, monkeypatch: pytest.MonkeyPatch) -> None:
    for module, attr, clock in golden.clock_patches(connector):
        monkeypatch.setattr(module, attr, clock)


# -- (a) example config ------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_example_config_exists_and_validates(name: str) -> None:
    path = golden.example_path(name)
    assert path.exists(), f"config/examples/{name}.yaml is missing"
    config = load(path, env={})  # placeholders only: no secret comes from the environment
    types = [d.type for d in config.destinations]  # type: ignore[attr-defined]
    assert name in types, f"{path.name} configures {types}, not a {name} destination"


# -- (b) encode: golden payloads and the invariants every encoder keeps ---------------

@pytest.mark.parametrize("name", NAMES)
def test_encode_matches_the_reviewed_golden(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    connector = http_connector(name)
    settings = settings_of(name)
    with_fixed_clock(connector, monkeypatch)
    path = golden.golden_path(name)
    assert path.exists(), (f"{path.relative_to(golden.ROOT)} is missing: run `python -m "
                           f"tests.destinations.golden --update {name}` and review it by eye")
    expected = golden.read_golden(name)
    got = golden.snapshot(connector, settings)
    for label in golden.SAMPLES:
        assert got[label] == expected[label], (
            f"{name} {label} payload differs from tests/golden/{name}.json; if the change "
            "is intended, regenerate with `python -m tests.destinations.golden --update "
            f"{name}` and review the diff against the vendor's docs")


@pytest.mark.parametrize("name", NAMES)
def test_encode_is_pure_and_accounts_for_every_event(
        name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    connector = http_connector(name)
    settings = settings_of(name)
    with_fixed_clock(connector, monkeypatch)
    assert connector.encode is not None
    events: list[Event] = copy.deepcopy(MINIMAL + FULL)
    pristine = copy.deepcopy(events)
    first = connector.encode(events, settings)
    assert events == pristine, "encode mutated its input (the engine shares events)"
    again = connector.encode(events, settings)
    assert golden.encoded_view(first, events) == golden.encoded_view(again, events)
    sent = {p for r in first.requests for p in r.events}
    assert sent | set(first.rejected) == set(range(len(events))), "an event was lost"
    assert not sent & set(first.rejected), "an event both sent and rejected"
    for request in first.requests:
        assert len(set(request.events)) == len(request.events), "a position twice in a request"
    for reason in first.rejected.values():
        assert isinstance(reason, str) and len(reason) > 10, f"unclear reason {reason!r}"
    for request in first.requests:
        assert request.method in ("POST", "PUT", "PATCH")
        assert request.url.startswith(("https://", "http://"))
        assert isinstance(request.body, bytes) and request.body
        assert request.events, "a request that carries no event"


@pytest.mark.parametrize("name", NAMES)
def test_rejections_name_the_event_not_the_batch(name: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Encoding one event alone rejects it for the same reason as inside the batch."""
    connector = http_connector(name)
    settings = settings_of(name)
    with_fixed_clock(connector, monkeypatch)
    assert connector.encode is not None
    events = copy.deepcopy(MINIMAL + FULL)
    together = connector.encode(events, settings).rejected
    for position, event in enumerate(events):
        alone = connector.encode([event], settings)
        if position in together:
            assert alone.rejected == {0: together[position]}
        else:
            assert not alone.rejected
            assert {p for r in alone.requests for p in r.events} == {0}


@pytest.mark.parametrize("name", NAMES)
def test_prepared_events_encode_as_the_batch_does(name: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A connector with ``prepare`` (the engine prepares each event as it routes it, and
    sends the batch with ``encode_prepared``) sends exactly what its ``encode`` sends;
    each prepared event is its vendor JSON object or a reason."""
    connector = http_connector(name)
    if connector.prepare is None or connector.encode_prepared is None:
        pytest.skip(f"{name} encodes whole batches only")
    settings = settings_of(name)
    with_fixed_clock(connector, monkeypatch)
    assert connector.encode is not None
    events: list[Event] = copy.deepcopy(MINIMAL + FULL)
    prepared = [connector.prepare(event, settings) for event in events]
    for item in prepared:
        assert isinstance(item, str) or isinstance(orjson.loads(bytes(item)), dict)
    assert events == copy.deepcopy(MINIMAL + FULL), "prepare mutated its input"
    assert (golden.encoded_view(connector.encode_prepared(prepared, settings), events)
            == golden.encoded_view(connector.encode(events, settings), events))


# -- (c) settings and limits ---------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_settings_are_documented_and_limits_are_sane(name: str) -> None:
    connector = REGISTRY[name]
    assert connector.name == name and connector.display_name
    assert (connector.encode is None) != (connector.sender is None), (
        "a connector either encodes HTTP requests or brings its own sender")
    settings = connector.settings
    assert issubclass(settings, ConnectorSettings), "extend ConnectorSettings (extra=forbid)"
    for field_name, field in settings.model_fields.items():
        assert field.description and len(field.description) > 10, (
            f"{name}.Settings.{field_name} needs a description (it generates the docs)")
        if field_name.endswith(SECRET_SUFFIXES):
            assert SecretStr in _types(field.annotation), (
                f"{name}.Settings.{field_name} looks like a secret: make it a SecretStr")
    if connector.encode is not None:
        assert any(word in f for f in settings.model_fields for word in URL_WORDS), (
            f"{name}: every vendor URL or host must be overridable in settings")
    limits = connector.limits
    assert limits.max_events > 0 and limits.max_bytes > 0 and limits.max_wait_ms >= 0
    assert connector.rate_limit_per_s >= 0


def _types(annotation: Any) -> set[Any]:
    args = getattr(annotation, "__args__", None)
    return set(args) if args else {annotation}


# -- (d) classification of canned answers ------------------------------------------

STATUSES = (200, 400, 401, 413, 429, 500, 503)
DEFAULT: dict[int, type[Outcome]] = {  # classify_http: Segment / RudderStack / Vector
    200: Delivered, 400: Rejected, 401: Rejected, 413: Rejected, 429: Retry, 500: Retry,
    503: Retry}
# What each vendor's documented rules make of the canned answers below, for a request
# carrying two events. Vendor rows override the default only where the vendor documents
# a different meaning.
EXPECTED_CLASSIFY: dict[str, dict[int, type[Outcome]]] = {
    "webhook": DEFAULT,
    "amplitude": {**DEFAULT, 413: Split},  # "413: payload too large" — split the batch
    "mixpanel": {**DEFAULT, 413: Split},   # /import 413 Request Entity Too Large
    "ga4": DEFAULT,                        # answers 2xx to everything; the defaults apply
    "posthog": {**DEFAULT, 413: Split},    # bodies over 20 MB
    "hubspot": {**DEFAULT, 400: Split},    # one bad input fails the batch: halve it
    "braze": {**DEFAULT, 400: Split, 413: Split},
    "salesforce": {**DEFAULT, 400: Split, 401: Retry, 413: Split},  # 401: re-auth, retry
    "bigquery": {**DEFAULT, 401: Retry, 413: Split},  # 401: new token; 413: split
}
REAUTH_ON_401 = {"salesforce", "bigquery"}


def canned(status: int) -> Response:
    if status == 200:
        return Response(200, {"Content-Type": "application/json"}, b"{}")
    headers = {"Content-Type": "application/json"}
    if status == 429:
        headers["Retry-After"] = "7"
    return Response(status, headers, b'{"error": "canned answer", "message": "canned"}')


def two_event_request(connector: Connector, settings: Any) -> Request:
    """The connector's own first request for the reference events, made to carry two
    events (so the documented split-on-400/413 rules apply)."""
    assert connector.encode is not None
    encoded = connector.encode(copy.deepcopy(MINIMAL + FULL), settings)
    assert encoded.requests, "the reference events should make at least one request"
    request = max(encoded.requests, key=lambda r: len(r.events))
    return dataclasses.replace(request, events=list(range(max(2, len(request.events)))))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("status", STATUSES)
def test_classify_table(name: str, status: int, monkeypatch: pytest.MonkeyPatch) -> None:
    connector = http_connector(name)
    assert name in EXPECTED_CLASSIFY, (
        f"add {name}'s expected outcome per status to EXPECTED_CLASSIFY (review its docs)")
    with_fixed_clock(connector, monkeypatch)
    request = two_event_request(connector, settings_of(name))
    classify = connector.classify or classify_http
    outcome = classify(canned(status), request)
    expected = EXPECTED_CLASSIFY[name][status]
    assert type(outcome) is expected, f"{name} HTTP {status}: got {outcome!r}"
    if isinstance(outcome, Retry) and status == 429:
        assert outcome.after_s == 7, f"{name} ignored Retry-After: {outcome!r}"
    if isinstance(outcome, Retry) and status == 401:
        assert outcome.reauth == (name in REAUTH_ON_401)
    if isinstance(outcome, Rejected | Split | Retry):
        assert outcome.reason, "an outcome without a reason"
    assert not isinstance(outcome, Partial), "a canned answer names no event"


# a 200 whose body must say so: Mixpanel's Engage (`1`), Salesforce's per-record results
CHECKS_200_BODY = {"mixpanel", "salesforce"}
NOT_JSON = (b"", b"<html><body>502 Bad Gateway</body></html>", b'{"errors": [{"ind',
            b"[1, 2", b"null", b"42", b'"text"', b"[]")


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("status", STATUSES)
def test_classify_reads_any_body_without_raising(name: str, status: int,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A proxy's HTML page, a truncated body or JSON of another shape: the classifier
    still answers, and for the status alone (an exception there is turned into a retry by
    the engine, which would re-send a batch a 2xx had already accepted)."""
    connector = http_connector(name)
    with_fixed_clock(connector, monkeypatch)
    request = two_event_request(connector, settings_of(name))
    classify = connector.classify or classify_http
    for body in NOT_JSON:
        outcome = classify(Response(status, {"Content-Type": "text/html"}, body), request)
        assert isinstance(outcome, Delivered | Partial | Rejected | Retry | Split), outcome
        if status == 200 and body in NOT_JSON[:4] and name not in CHECKS_200_BODY:
            assert type(outcome) is Delivered, (name, body, outcome)
