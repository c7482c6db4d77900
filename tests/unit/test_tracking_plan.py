from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from router.stages.tracking_plan import Blocked, TrackingPlan

PLAN = """
events:
  Order Completed:
    type: object
    properties:
      order_id: {type: string}
      total: {type: number, minimum: 0}
      items:
        type: array
        items: {type: object, required: [sku]}
    required: [order_id, total]
  Signed Up: {}
identify:
  properties:
    email: {type: string, format: email}
  required: [email]
"""


@pytest.fixture
def plan_file(tmp_path: Path) -> Path:
    path = tmp_path / "tracking-plan.yaml"
    path.write_text(PLAN, encoding="utf-8")
    return path


def track(name: str, properties: Any = ..., **extra: Any) -> dict[str, Any]:
    event: dict[str, Any] = {"type": "track", "event": name, "messageId": "m", **extra}
    if properties is not ...:
        event["properties"] = properties
    return event


GOOD = track("Order Completed", {"order_id": "o1", "total": 10, "items": [{"sku": "a"}]})
BAD = track(
    "Order Completed",
    {"total": -1, "items": [{}]},
    context={"ip": "1.2.3.4", "library": {"name": "x"}},
)


@pytest.mark.parametrize("violations", ["allow", "tag", "block"])
def test_valid_and_unchecked_events_pass_untouched(plan_file: Path, violations: Any) -> None:
    plan = TrackingPlan.from_file(plan_file, unplanned="block", violations=violations)
    for event in (
        GOOD,
        track("Signed Up", {"anything": [1]}),
        track("Signed Up"),  # no properties: checked as {}
        {"type": "page", "name": "Home", "messageId": "m"},
        {"type": "identify", "traits": {"email": "a@b.co"}, "messageId": "m"},
    ):
        assert plan.check(event) is event


def test_unplanned_allow_and_block(plan_file: Path) -> None:
    event = track("Mystery Event", {"x": 1})
    assert TrackingPlan.from_file(plan_file, unplanned="allow").check(event) is event
    blocked = TrackingPlan.from_file(plan_file, unplanned="block").check(event)
    assert isinstance(blocked, Blocked)
    assert blocked.reason == "unplanned_event"
    assert "Mystery Event" in blocked.detail


def test_violations_allow_sends_as_is(plan_file: Path) -> None:
    plan = TrackingPlan.from_file(plan_file, violations="allow")
    assert plan.check(BAD) is BAD


def test_violations_block(plan_file: Path) -> None:
    blocked = TrackingPlan.from_file(plan_file, violations="block").check(BAD)
    assert isinstance(blocked, Blocked)
    assert blocked.reason == "plan_violation"
    assert blocked.detail


def test_violations_tag_copies_and_lists_each_violation(plan_file: Path) -> None:
    before = copy.deepcopy(BAD)
    out = TrackingPlan.from_file(plan_file, violations="tag").check(BAD)
    assert before == BAD  # copy-on-write
    assert isinstance(out, dict) and out is not BAD
    assert out["properties"] is BAD["properties"]
    assert out["context"]["ip"] == "1.2.3.4"
    assert out["context"]["library"] is BAD["context"]["library"]
    found = {(v["type"], v["field"]) for v in out["context"]["violations"]}
    assert found == {
        ("required", "properties.order_id"),
        ("minimum", "properties.total"),
        ("required", "properties.items.0.sku"),
    }
    assert all(v["description"] for v in out["context"]["violations"])


def test_identify_traits_schema(plan_file: Path) -> None:
    plan = TrackingPlan.from_file(plan_file, violations="tag")
    out = plan.check({"type": "identify", "traits": {"email": "not-an-email"}, "messageId": "m"})
    assert isinstance(out, dict)
    assert [(v["type"], v["field"]) for v in out["context"]["violations"]] == [
        ("format", "traits.email")
    ]
    missing = plan.check({"type": "identify", "messageId": "m"})
    assert isinstance(missing, dict)
    assert missing["context"]["violations"][0]["field"] == "traits.email"


def test_plan_without_identify_does_not_check_identify() -> None:
    plan = TrackingPlan({"events": {}}, unplanned="block", violations="block")
    event = {"type": "identify", "traits": {}, "messageId": "m"}
    assert plan.check(event) is event


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("events:\n  E: {type: nonsense}\n", "schema of event 'E' is invalid"),
        ("events: [a, b]\n", "must map event names"),
        ("evnts: {}\n", "unknown tracking plan keys"),
        ("events:\n  E: 3\n", "must be a mapping"),
        ("- a\n", "must be a mapping"),
        ("events: {a: [}\n", "cannot read the tracking plan"),
    ],
)
def test_bad_plans_fail_at_load(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        TrackingPlan.from_file(path)


def test_missing_plan_file_and_bad_modes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read the tracking plan"):
        TrackingPlan.from_file(tmp_path / "nope.yaml")
    with pytest.raises(ValueError, match="unplanned"):
        TrackingPlan({}, unplanned="tag")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="violations"):
        TrackingPlan({}, violations="drop")  # type: ignore[arg-type]
