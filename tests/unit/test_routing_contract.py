"""The routing contract of docs/routing.md, checked from the outside: the CLI's
``dry-run`` and ``validate`` on small configs, plus the reload swap on a stand-in router.

Transforms copy on write (one destination's steps never show at another), hash_fields
follows Segment's convention, a python transform's bad result is a per-event
``transform_error`` (never a batch-wide failure), and the tracking plan refuses at
``validate`` what it could not evaluate at run time."""

from __future__ import annotations

import hashlib
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from click.testing import CliRunner, Result

from router.cli import main
from router.config import Config
from router.offsets import Tracker
from router.pipeline import Pipeline
from router.reload import apply
from router.stages.tracking_plan import Blocked, TrackingPlan
from router.telemetry import Stats

MODULE = "routing_contract_transforms"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def hook(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": "webhook", "settings": {"url": "http://127.0.0.1:9/x"},
            **extra}


def cli(tmp_path: Path, config: dict[str, Any], *args: str) -> Result:
    path = tmp_path / "router.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return CliRunner().invoke(main, [args[0], "-c", str(path), *args[1:]],
                              catch_exceptions=False)


def dry_run(tmp_path: Path, config: dict[str, Any], events: list[dict[str, Any]]
            ) -> list[dict[str, Any]]:
    data = tmp_path / "events.ndjson"
    data.write_bytes(b"\n".join(orjson.dumps(e) for e in events))
    result = cli(tmp_path, config, "dry-run", str(data))
    assert result.exit_code == 0, result.output
    return list(orjson.loads(result.output))


def sent(result: dict[str, Any], destination: str) -> dict[str, Any]:
    """The one event a webhook destination would POST."""
    decision = result["destinations"][destination]
    assert decision["decision"] == "sent", decision
    [event] = decision["requests"][0]["body"]
    return dict(event)


EVENT = {"type": "identify", "messageId": "m-1", "userId": "user-1",
         "timestamp": "2024-05-01T00:00:00Z",
         "traits": {"email": "  Jane.Doe@Example.COM ", "phone": 5551234, "vip": True,
                    "address": {"city": "Paris"}, "hashed": sha("x").upper(), "gone": None},
         "context": {"ip": "1.2.3.4", "traits": {"email": "J@X.io"}}}


# --- transforms -----------------------------------------------------------------------


def test_one_destinations_transforms_never_show_at_another(tmp_path: Path) -> None:
    config = {"destinations": [
        hook("scrub", transforms=[
            {"hash_fields": ["traits.email", "traits.phone", "traits.vip", "traits.address",
                             "traits.hashed", "traits.gone", "traits.absent",
                             "context.traits.email"]},
            {"drop_fields": ["context.ip", "properties.none", "traits.email.deeper"]},
            {"set_fields": {"traits.city": "{{traits.address.city}}"}}]),
        hook("plain")]}
    [result] = dry_run(tmp_path, config, [EVENT])
    scrubbed, plain = sent(result, "scrub"), sent(result, "plain")
    assert scrubbed["traits"] == {
        "email": sha("jane.doe@example.com"),  # trimmed and lower-cased first
        "phone": sha("5551234"),  # a number: from its JSON text
        "hashed": sha("x").upper(),  # already a SHA-256 hex: left alone
        "gone": None}  # bool and object removed; null kept; missing not created
    assert scrubbed["context"] == {"traits": {"email": sha("j@x.io")}}
    # the other destination gets the event exactly as it came
    assert plain["traits"] == EVENT["traits"] and plain["context"] == EVENT["context"]


def test_an_object_copied_by_set_fields_is_edited_separately(tmp_path: Path) -> None:
    """set_fields "{{context}}" then editing the copy must not edit context itself
    (the copy used to share the dict an earlier step had made writable)."""
    event = {"type": "track", "event": "E", "messageId": "m-2", "userId": "user-1",
             "timestamp": "2024-05-01T00:00:00Z", "properties": {},
             "context": {"ip": "1.2.3.4", "locale": "fr-FR", "page": {"url": "u"}}}
    config = {"destinations": [hook("copy", transforms=[
        {"drop_fields": ["context.ip", "context.page.url"]},
        {"set_fields": {"properties.ctx": "{{context}}"}},
        {"drop_fields": ["properties.ctx.locale"]},
        {"hash_fields": ["properties.ctx.page.title"]},
        {"set_fields": {"properties.ctx.page.title": "t"}}])]}
    [result] = dry_run(tmp_path, config, [event])
    out = sent(result, "copy")
    assert out["context"] == {"locale": "fr-FR", "page": {}}
    assert out["properties"] == {"ctx": {"page": {"title": "t"}}}


@pytest.fixture
def python_module() -> Iterator[str]:
    module = types.ModuleType(MODULE)

    def untyped(event: dict[str, Any]) -> dict[str, Any]:
        del event["type"]
        return event

    def unidentified(event: dict[str, Any]) -> dict[str, Any]:
        return {"type": event["type"], "timestamp": event["timestamp"]}

    def undated(event: dict[str, Any]) -> dict[str, Any]:
        del event["timestamp"]
        return event

    def not_json(event: dict[str, Any]) -> dict[str, Any]:
        event["properties"] = {"tags": {"a", "b"}}
        return event

    def huge(event: dict[str, Any]) -> dict[str, Any]:
        event["properties"] = {"n": 2**70}
        return event

    def fine(event: dict[str, Any]) -> dict[str, Any]:
        event["properties"] = {"ok": True}
        return event

    for fn in (untyped, unidentified, undated, not_json, huge, fine):
        setattr(module, fn.__name__, fn)
    sys.modules[MODULE] = module
    yield MODULE
    del sys.modules[MODULE]


@pytest.mark.parametrize("function", ["untyped", "unidentified", "undated", "not_json", "huge"])
def test_a_python_result_that_cannot_be_sent_is_a_transform_error(
        tmp_path: Path, python_module: str, function: str) -> None:
    """Such a result used to reach the connector: dry-run crashed on it, and in a batch
    encoder (the webhook's) it failed the whole batch, innocent events included."""
    config = {"destinations": [hook("py", transforms=[{"python": f"{python_module}:{function}"}]),
                               hook("fine", transforms=[{"python": f"{python_module}:fine"}])]}
    [result] = dry_run(tmp_path, config, [EVENT])
    assert result["destinations"]["py"] == {"decision": "filtered", "reason": "transform_error"}
    assert sent(result, "fine")["properties"] == {"ok": True}


# --- tracking plan --------------------------------------------------------------------


def plan_config(tmp_path: Path, plan: str, **modes: str) -> dict[str, Any]:
    path = tmp_path / "plan.yaml"
    path.write_text(plan)
    return {"pipeline": {"tracking_plan": {"path": str(path), **modes}},
            "destinations": [hook("a")]}


@pytest.mark.parametrize("schema", [
    '{$ref: "#/$defs/missing"}',
    '{properties: {total: {$ref: "#/nowhere"}}}',
    '{$ref: "https://example.com/schemas/order.json"}',  # nothing is fetched
    '{$dynamicRef: "#meta"}',
])
def test_validate_refuses_a_plan_whose_refs_do_not_resolve(tmp_path: Path, schema: str) -> None:
    config = plan_config(tmp_path, f"events:\n  Order Completed: {schema}\n")
    result = cli(tmp_path, config, "validate")
    assert result.exit_code != 0 and "does not resolve" in result.output, result.output


@pytest.mark.parametrize("schema", [
    '{$ref: "#/$defs/order", $defs: {order: {required: [total]}}}',
    '{$defs: {o: {$anchor: order, required: [total]}}, $ref: "#order"}',
    '{$ref: "https://json-schema.org/draft/2020-12/schema"}',  # a metaschema is built in
])
def test_refs_within_the_plan_resolve(tmp_path: Path, schema: str) -> None:
    config = plan_config(tmp_path, f"events:\n  Order Completed: {schema}\n")
    assert cli(tmp_path, config, "validate").exit_code == 0


def test_a_schema_failing_to_evaluate_is_a_violation_not_a_crash() -> None:
    """A self-reference loops forever: before, it raised out of the consumer's intake on
    every such event (a crash, and again after each restart)."""
    event = {"type": "track", "event": "Loop", "messageId": "m", "properties": {}}
    tagged = TrackingPlan({"events": {"Loop": {"$ref": "#"}}}, violations="tag").check(event)
    assert isinstance(tagged, dict)
    [violation] = tagged["context"]["violations"]
    assert violation["type"] == "error" and violation["field"] == "properties"
    blocked = TrackingPlan({"events": {"Loop": {"$ref": "#"}}}, violations="block").check(event)
    assert isinstance(blocked, Blocked) and blocked.reason == "plan_violation"


PLAN = """
events:
  Order Completed:
    type: object
    required: [order_id, total]
    properties:
      total: {type: number, minimum: 0}
      items: {type: array, items: {type: object, required: [sku]}}
identify:
  required: [email]
  properties: {email: {type: string, format: email}}
"""


def test_tracking_plan_modes_and_the_violations_shape(tmp_path: Path) -> None:
    events = [
        {"type": "track", "event": "Order Completed", "messageId": "bad", "userId": "u",
         "properties": {"total": -1, "items": [{}]}},
        {"type": "track", "event": "Unplanned", "messageId": "unplanned", "userId": "u"},
        {"type": "identify", "messageId": "idy", "userId": "u", "traits": {"email": "nope"}},
        {"type": "page", "messageId": "page", "userId": "u", "name": "Home"},
    ]
    tag = dry_run(tmp_path, plan_config(tmp_path, PLAN, unplanned="block", violations="tag"),
                  events)
    assert sent(tag[0], "a")["context"]["violations"] == [
        {"type": "required", "field": "properties.order_id",
         "description": "'order_id' is a required property"},
        {"type": "minimum", "field": "properties.total",
         "description": "-1 is less than the minimum of 0"},
        {"type": "required", "field": "properties.items.0.sku",
         "description": "'sku' is a required property"}]
    assert tag[1]["decision"] == "dead-letter"
    assert tag[1]["reason"] == "tracking_plan: unplanned_event"
    assert sent(tag[2], "a")["context"]["violations"] == [
        {"type": "format", "field": "traits.email", "description": "'nope' is not a 'email'"}]
    assert "context" not in sent(tag[3], "a")  # other calls are not checked
    block = dry_run(tmp_path, plan_config(tmp_path, PLAN, violations="block"), events)
    assert [r.get("reason") for r in block] == [
        "tracking_plan: plan_violation", None, "tracking_plan: plan_violation", None]
    allow = dry_run(tmp_path, plan_config(tmp_path, PLAN), events)
    assert all("violations" not in sent(r, "a").get("context", {}) for r in allow)


# --- reload ---------------------------------------------------------------------------


class StandIn:
    """What reload.apply touches of a started Router, with no Kafka behind it."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.destinations: dict[str, Any] = {}
        self.retry_sources: dict[str, Any] = {}
        self.tasks: dict[str, Any] = {}
        self.outbox = None
        self.stats = Stats()
        self.tracker = Tracker()
        self.pipeline = Pipeline(config, [], None, self.stats, self.tracker)  # type: ignore[arg-type]
        self.source = types.SimpleNamespace(handler=None)

    async def _ensure_topics(self, cfg: Config, names: list[str]) -> None:
        return None


async def test_a_reload_keeps_what_was_fetched_so_a_refetch_is_not_a_duplicate() -> None:
    """The new pipeline must know which offsets this process already fetched: a record
    fetched again after a rebalance is its own re-delivery, and with the dedupe memory
    kept it would otherwise be dropped as a duplicate while the first copy is in flight."""
    config = Config.model_validate({"destinations": []})
    router = StandIn(config)
    old = router.pipeline
    old.fetched[("events", 0)] = 41
    ok, message = await apply(router, Config.model_validate({"destinations": []}))
    assert ok, message
    assert router.pipeline is not old and router.pipeline.dedupe is old.dedupe
    assert router.pipeline.fetched == {("events", 0): 41}
    # dead-letter writes the old pipeline started are still awaited at shutdown
    assert router.pipeline.background is old.background
