"""Routing rules through the real broker: each destination receives exactly the subset
its consent categories, the integrations object and its filter allow; global stages
(suppression, dedupe, tracking plan) apply to all."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.webhook import WebhookSink
from tests.integration.harness import (
    config_dict,
    eventually,
    headers,
    produce,
    read_all,
    running,
    webhook,
)

pytestmark = pytest.mark.kafka

CONSENTS: list[Any] = [
    None,  # no consent object: no enforcement
    {},  # empty consent: no enforcement
    {"categoryPreferences": {}},  # every category false
    {"categoryPreferences": {"Analytics": True}},
    {"categoryPreferences": {"Analytics": True, "Advertising": True}},
    {"categoryPreferences": {"analytics": True, "Advertising": True}},  # case matters
]
INTEGRATIONS: list[Any] = [
    None, {"All": False}, {"All": False, "Product": True}, {"Marketing": False},
    {"All": False, "Webhook": {"note": "object means on"}}, {"Webhook": False},
]
EVENTS = ["Order Completed", "Heartbeat", "Signed Up"]


def stream() -> list[dict[str, Any]]:
    out = []
    for n, (consent, integrations, name) in enumerate(
            itertools.product(CONSENTS, INTEGRATIONS, EVENTS)):
        event: dict[str, Any] = {"type": "track", "event": name, "userId": f"u{n % 7}",
                                 "messageId": f"m-{n:04d}", "properties": {"total": n}}
        if consent is not None:
            event["context"] = {"consent": consent}
        if integrations is not None:
            event["integrations"] = integrations
        out.append(event)
    return out


def expected(event: dict[str, Any], name: str, categories: list[str], where: Any) -> bool:
    """Segment's rules, written out independently of the router's stages."""
    consent = (event.get("context") or {}).get("consent")
    if categories and consent:
        prefs = consent.get("categoryPreferences", {})
        if not all(prefs.get(c) is True for c in categories):
            return False
    integrations = event.get("integrations") or {}
    for key in (name, "Webhook"):
        if key in integrations:
            if integrations[key] is False:
                return False
            break
    else:
        if integrations.get("All") is False:
            return False
    return bool(where(event))


DESTINATIONS = {
    "product": (["Analytics"], 'event != "Heartbeat"', lambda e: e["event"] != "Heartbeat"),
    "marketing": (["Analytics", "Advertising"], None, lambda e: True),
    "revenue": ([], 'event = "Order Completed" and properties.total >= 50',
                lambda e: e["event"] == "Order Completed" and e["properties"]["total"] >= 50),
}


async def test_each_destination_receives_exactly_its_subset(kafka_bootstrap: str,
                                                            make_topic: Any) -> None:
    topic = await make_topic(partitions=3)
    events = stream()
    async with WebhookSink() as a, WebhookSink() as b, WebhookSink() as c:
        sinks = {"product": a, "marketing": b, "revenue": c}
        dests = []
        for name, (categories, where, _) in DESTINATIONS.items():
            dest = webhook(name, f"{sinks[name].url}/events", consent_categories=categories)
            if where:
                dest["where"] = where
            dests.append(dest)
        cfg = config_dict(kafka_bootstrap, topic, dests)
        async with running(cfg) as router:
            await produce(kafka_bootstrap, topic, events)
            await eventually(lambda: router.stats.received == len(events)
                             and router.tracker.in_flight == 0, 30)
            stats = {n: router.stats.destinations[n] for n in DESTINATIONS}
    for name, (categories, _, where) in DESTINATIONS.items():
        want = sorted(e["messageId"] for e in events if expected(e, name, categories, where))
        assert sorted(sinks[name].ids) == want, name
        assert want and len(want) < len(events)
        s = stats[name]
        assert s.delivered + sum(s.filtered.values()) == len(events)
        if categories:
            assert s.filtered["consent"] > 0
        assert s.filtered["integrations"] > 0


async def test_global_stages_suppress_dedupe_and_enforce_the_plan(
        kafka_bootstrap: str, make_topic: Any, tmp_path: Path) -> None:
    topic = await make_topic()
    suppressed = tmp_path / "suppressed.txt"
    suppressed.write_text("# GDPR requests\nuser-gone\n")
    plan = tmp_path / "plan.yaml"
    plan.write_text("events:\n  Order Completed:\n    type: object\n    required: [total]\n"
                    "    properties: {total: {type: number}}\n  Signed Up: {}\n")
    events = [
        {"type": "track", "event": "Signed Up", "userId": "u1", "messageId": "ok-1"},
        {"type": "track", "event": "Signed Up", "userId": "u1", "messageId": "ok-1"},  # dup
        {"type": "track", "event": "Signed Up", "userId": "user-gone", "messageId": "gdpr"},
        {"type": "track", "event": "Order Completed", "userId": "u2", "messageId": "bad-plan",
         "properties": {"total": "lots"}},
        {"type": "track", "event": "Unplanned", "userId": "u2", "messageId": "unplanned"},
        {"type": "track", "event": "Order Completed", "userId": "u3", "messageId": "ok-2",
         "properties": {"total": 5}},
    ]
    async with WebhookSink() as sink:
        cfg = config_dict(kafka_bootstrap, topic, [webhook("hook", f"{sink.url}/events")])
        cfg["pipeline"] = {"suppressed_users": str(suppressed), "tracking_plan": {
            "path": str(plan), "unplanned": "block", "violations": "block"}}
        async with running(cfg) as router:
            await produce(kafka_bootstrap, topic, events)
            await eventually(lambda: router.stats.received == len(events)
                             and router.tracker.in_flight == 0, 30)
            dropped = dict(router.stats.dropped)
        dead = await read_all(kafka_bootstrap, f"{topic}.dlq")
    assert sorted(sink.ids) == ["ok-1", "ok-2"]
    assert dropped == {"duplicate": 1, "suppressed": 1, "tracking_plan": 2}
    reasons = sorted(headers(r)["reason"].split(":")[0] for r in dead)
    assert reasons == ["tracking_plan", "tracking_plan"]
    assert {json.loads(r.value)["messageId"] for r in dead} == {"bad-plan", "unplanned"}


def test_dry_run_shows_decisions_and_native_payloads(tmp_path: Path) -> None:
    config = tmp_path / "router.yaml"
    config.write_text("""\
destinations:
  - name: amplitude
    type: amplitude
    consent_categories: [Analytics]
    settings: {api_key: dry-run-secret-key}
  - name: hook
    type: webhook
    where: 'type = "identify"'
    settings: {url: "http://127.0.0.1:9/hook"}
  - name: mixpanel
    type: mixpanel
    settings: {project_token: dry-run-token, api_secret: dry-run-api-secret}
""")
    events = tmp_path / "events.ndjson"
    events.write_text(
        '{"type":"track","event":"Order Completed","userId":"user-1","messageId":"m1",'
        '"timestamp":"2026-11-20T10:00:00Z","properties":{"revenue":5}}\n'
        '{"type":"track","event":"X","userId":"user-2","messageId":"m2",'
        '"context":{"consent":{"categoryPreferences":{"Analytics":false}}}}\n'
        'not json\n')
    out = subprocess.run([sys.executable, "-m", "router.cli", "dry-run", "-c", str(config),
                          str(events)], capture_output=True, text=True, check=True).stdout
    results = json.loads(out)
    first = results[0]["destinations"]
    assert first["hook"] == {"decision": "filtered", "reason": "filter"}
    request = first["amplitude"]["requests"][0]
    assert request["url"] == "https://api2.amplitude.com/2/httpapi"
    native = request["body"]["events"][0]
    assert native["event_type"] == "Order Completed" and native["insert_id"] == "m1"
    assert native["user_id"] == "user-1" and native["time"] == 1795168800000
    assert results[1]["destinations"]["amplitude"] == {"decision": "filtered",
                                                       "reason": "consent"}
    assert results[2]["decision"] == "dead-letter" and "invalid_json" in results[2]["reason"]
    assert "dry-run-secret-key" not in out  # the api_key is in Amplitude's body: redacted
    # Mixpanel's import body goes gzipped: shown decompressed, its token redacted
    mixpanel = first["mixpanel"]["requests"][0]
    assert mixpanel["headers"]["Content-Encoding"] == "gzip"
    assert mixpanel["body_encoding"].startswith("gzip, ")
    [imported] = mixpanel["body"]
    assert imported["event"] == "Order Completed"
    assert imported["properties"]["$insert_id"] == "m1"
    assert "dry-run-token" not in out and "dry-run-api-secret" not in out


async def test_produce_publishes_every_line_as_is(kafka_bootstrap: str, make_topic: Any,
                                                  tmp_path: Path) -> None:
    """``event-router produce FILE``: each non-blank line is one record, byte for byte,
    keyed by its user when it is an event; JSON that is not an object and text that is
    not JSON go as they are, keyless (the router then dead-letters them with a reason)."""
    topic = await make_topic(partitions=1)
    config = tmp_path / "router.yaml"
    config.write_text(f"kafka:\n  bootstrap_servers: {kafka_bootstrap}\n"
                      f"  topics: [{topic}]\ndestinations: []\n")
    lines = [b'{"type":"track","event":"A","userId":"user-7","messageId":"p1"}',
             b"[1, 2]", b"", b"not json", b'"a string"']
    events = tmp_path / "events.ndjson"
    events.write_bytes(b"\n".join(lines) + b"\n")
    done = subprocess.run([sys.executable, "-m", "router.cli", "produce", "-c", str(config),
                           str(events)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"published 4 events to {topic}"
    records = await read_all(kafka_bootstrap, topic)
    assert [r.value for r in records] == [line for line in lines if line]
    assert [r.key for r in records] == [b"user-7", None, None, None]
