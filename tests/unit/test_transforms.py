from __future__ import annotations

import copy
import hashlib
import sys
import types
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from router.stages.transforms import TransformStep, compile_transforms, parse_path

STEPS = TypeAdapter(list[TransformStep])


def build(*steps: dict[str, Any]) -> Any:
    fn = compile_transforms(STEPS.validate_python(list(steps)))
    assert fn is not None
    return fn


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture
def event() -> dict[str, Any]:
    return {
        "type": "track",
        "event": "Order Completed",
        "messageId": "m-1",
        "timestamp": "2024-05-01T10:00:00.000Z",
        "userId": "u-1",
        "properties": {"sku": "s1", "price": 9.5, "coupon": "X", "nested": {"a": 1}},
        "traits": {"email": "  Ann@Example.COM ", "name": "Ann"},
        "context": {
            "ip": "1.2.3.4",
            "locale": "en-US",
            "library": {"name": "analytics.js"},
            "traits": {"email": "ann@example.com", "phone": "555"},
        },
    }


@pytest.fixture
def frozen(event: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The event, checked after the test to be exactly as it was (copy-on-write)."""
    before = copy.deepcopy(event)
    yield event
    assert event == before


def test_no_steps_is_no_stage() -> None:
    assert compile_transforms([]) is None


# --- rename_events --------------------------------------------------------------------


def test_rename_events(frozen: dict[str, Any]) -> None:
    fn = build({"rename_events": {"Order Completed": "purchase"}})
    out = fn(frozen)
    assert out["event"] == "purchase"
    assert out["properties"] is frozen["properties"]  # only the changed path is copied


def test_rename_leaves_unlisted_and_non_track_events(frozen: dict[str, Any]) -> None:
    fn = build({"rename_events": {"Other": "x", "Order Completed": "purchase"}})
    assert fn({**frozen, "event": "Signed Up"})["event"] == "Signed Up"
    page = {"type": "page", "event": "Order Completed", "messageId": "m"}
    assert fn(page) is page
    unchanged = build({"rename_events": {"Nope": "x"}})
    assert unchanged(frozen) is frozen  # nothing changed -> the very same object


# --- drop_fields ----------------------------------------------------------------------


def test_drop_fields(frozen: dict[str, Any]) -> None:
    fn = build({"drop_fields": ["context.ip", "properties.coupon", "traits", "nope.deeper"]})
    out = fn(frozen)
    assert "ip" not in out["context"] and out["context"]["locale"] == "en-US"
    assert "coupon" not in out["properties"] and out["properties"]["sku"] == "s1"
    assert "traits" not in out
    assert out["context"]["library"] is frozen["context"]["library"]


def test_drop_missing_fields_returns_the_same_object(frozen: dict[str, Any]) -> None:
    fn = build({"drop_fields": ["context.nope", "properties.sku.deeper", "x.y.z"]})
    assert fn(frozen) is frozen


def test_drop_escaped_dot(frozen: dict[str, Any]) -> None:
    event = {**frozen, "properties": {"a.b": 1, "a": {"b": 2}}}
    out = build({"drop_fields": ["properties.a\\.b"]})(event)
    assert out["properties"] == {"a": {"b": 2}}
    assert parse_path("a\\.b.c") == ("a.b", "c")


# --- allow_fields ---------------------------------------------------------------------


def test_allow_fields(frozen: dict[str, Any]) -> None:
    fn = build({"allow_fields": {"properties": ["sku", "nested"], "traits": ["email"]}})
    out = fn(frozen)
    assert out["properties"] == {"sku": "s1", "nested": {"a": 1}}
    assert out["properties"]["nested"] is frozen["properties"]["nested"]
    assert out["traits"] == {"email": "  Ann@Example.COM "}
    assert out["context"]["traits"] == {"email": "ann@example.com"}  # context.traits too
    assert out["context"]["ip"] == "1.2.3.4"  # context not named: untouched


def test_allow_context(frozen: dict[str, Any]) -> None:
    out = build({"allow_fields": {"context": ["locale"]}})(frozen)
    assert out["context"] == {"locale": "en-US"}
    assert out["properties"] is frozen["properties"]


def test_allow_fields_nothing_to_drop_is_same_object(frozen: dict[str, Any]) -> None:
    fn = build({"allow_fields": {"properties": ["sku", "price", "coupon", "nested", "x"]}})
    assert fn(frozen) is frozen
    assert build({"allow_fields": {"properties": ["a"]}})({"type": "identify"}) == {
        "type": "identify"
    }


# --- hash_fields ----------------------------------------------------------------------


def test_hash_fields(frozen: dict[str, Any]) -> None:
    out = build({"hash_fields": ["traits.email", "context.traits.email"]})(frozen)
    assert out["traits"]["email"] == sha("ann@example.com")  # trimmed, lower-cased
    assert out["context"]["traits"]["email"] == sha("ann@example.com")
    assert out["traits"]["name"] == "Ann"


def test_hash_leaves_hashes_nulls_and_missing_alone(frozen: dict[str, Any]) -> None:
    already = sha("x")
    event = {**frozen, "traits": {"email": already, "upper": already.upper(), "none": None}}
    fn = build({"hash_fields": ["traits.email", "traits.upper", "traits.none", "traits.nope"]})
    assert fn(event) is event


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (5551234, sha("5551234")),
        (1.5, sha("1.5")),
        ("", ""),  # blank stays blank, as Segment's hashing: never sha256("")
        ("  ", ""),
        ("ABC", sha("abc")),
        ("z" * 64, sha("z" * 64)),  # 64 chars but not hex: hashed
    ],
)
def test_hash_values(value: Any, expected: str) -> None:
    out = build({"hash_fields": ["traits.v"]})({"type": "identify", "traits": {"v": value}})
    assert out["traits"]["v"] == expected


@pytest.mark.parametrize("value", [True, False, {"a": "b"}, ["a@b.c"]])
def test_hash_removes_unhashable_values(value: Any) -> None:
    out = build({"hash_fields": ["traits.v"]})({"type": "identify", "traits": {"v": value}})
    assert "v" not in out["traits"]


# --- set_fields -----------------------------------------------------------------------


def test_set_fields_literals_and_templates(frozen: dict[str, Any]) -> None:
    fn = build(
        {
            "set_fields": {
                "context.source": "web",
                "properties.uid": "{{userId}}",
                "properties.price_copy": "{{ properties.price }}",
                "properties.label": "user-{{userId}}/{{event}}/{{nope}}/{{properties.price}}",
                "properties.obj": {"k": [1, 2]},
                "properties.missing_copy": "{{nope.deeper}}",
                "new.deep.field": 1,
            }
        }
    )
    out = fn(frozen)
    assert out["context"]["source"] == "web"
    assert out["properties"]["uid"] == "u-1"
    assert out["properties"]["price_copy"] == 9.5  # whole template keeps the type
    assert out["properties"]["label"] == "user-u-1/Order Completed//9.5"
    assert out["properties"]["obj"] == {"k": [1, 2]}
    assert "missing_copy" not in out["properties"]
    assert out["new"] == {"deep": {"field": 1}}


def test_set_fields_unchanged_or_blocked_is_same_object(frozen: dict[str, Any]) -> None:
    fn = build({"set_fields": {"context.locale": "en-US", "userId.x": 1, "properties.sku.y": 2}})
    assert fn(frozen) is frozen  # equal value; parents that are not objects are left alone


# --- sample ---------------------------------------------------------------------------


def test_sample_is_deterministic_by_message_id() -> None:
    fn = build({"sample": {"percent": 10}})
    events = [{"type": "track", "event": "E", "messageId": f"id-{i}"} for i in range(5000)]
    first = [fn(e) for e in events]
    assert first == [fn(dict(e)) for e in events]  # the same fate on redelivery
    kept = sum(1 for r in first if isinstance(r, dict))
    assert 400 <= kept <= 600  # ~10 %
    assert {r for r in first if isinstance(r, str)} == {"sampled"}
    kept_event = next(e for e, r in zip(events, first, strict=True) if isinstance(r, dict))
    assert fn(kept_event) is kept_event


@pytest.mark.parametrize(("percent", "kept"), [(0, 0), (100, 200)])
def test_sample_bounds(percent: float, kept: int) -> None:
    fn = build({"sample": {"percent": percent}})
    results = [fn({"type": "track", "messageId": str(i)}) for i in range(200)]
    assert sum(isinstance(r, dict) for r in results) == kept


# --- python ---------------------------------------------------------------------------


@pytest.fixture
def python_module() -> Iterator[str]:
    module = types.ModuleType("transforms_under_test")

    def tag(event: dict[str, Any]) -> dict[str, Any]:
        event["properties"]["tagged"] = True  # mutating its private copy is fine
        return event

    def drop(event: dict[str, Any]) -> None:
        return None

    def boom(event: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("bug in user code")

    def not_a_dict(event: dict[str, Any]) -> list[int]:
        return [1]

    for fn in (tag, drop, boom, not_a_dict):
        setattr(module, fn.__name__, fn)
    module.constant = 3  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    yield module.__name__
    del sys.modules[module.__name__]


def test_python_transform(frozen: dict[str, Any], python_module: str) -> None:
    out = build({"python": f"{python_module}:tag"})(frozen)
    assert out["properties"]["tagged"] is True
    assert out is not frozen


@pytest.mark.parametrize(
    ("function", "reason"),
    [("drop", "transform"), ("boom", "transform_error"), ("not_a_dict", "transform_error")],
)
def test_python_transform_outcomes(
    frozen: dict[str, Any], python_module: str, function: str, reason: str
) -> None:
    assert build({"python": f"{python_module}:{function}"})(frozen) == reason


def test_python_transform_is_imported_at_load(python_module: str) -> None:
    for target, message in [
        ("no_such_module_xyz:f", "cannot import"),
        (f"{python_module}:missing", "cannot import"),
        (f"{python_module}:constant", "not callable"),
        ("not a target", "should match pattern"),
    ]:
        with pytest.raises(ValidationError, match=message):
            STEPS.validate_python([{"python": target}])


# --- chains and validation ------------------------------------------------------------


def test_steps_run_in_order_and_copy_once(frozen: dict[str, Any]) -> None:
    fn = build(
        {"rename_events": {"Order Completed": "purchase"}},
        {"set_fields": {"properties.source": "web"}},
        {"drop_fields": ["properties.coupon"]},
        {"hash_fields": ["traits.email"]},
    )
    out = fn(frozen)
    assert out["event"] == "purchase"
    assert out["properties"] == {"sku": "s1", "price": 9.5, "nested": {"a": 1}, "source": "web"}
    assert out["traits"]["email"] == sha("ann@example.com")
    assert out["context"] is frozen["context"]


def test_later_steps_see_earlier_changes(frozen: dict[str, Any]) -> None:
    fn = build(
        {"set_fields": {"traits.email2": "{{traits.email}}"}},
        {"hash_fields": ["traits.email2"]},
        {"rename_events": {"Order Completed": "purchase"}},
        {"set_fields": {"properties.name": "{{event}}"}},
    )
    out = fn(frozen)
    assert out["traits"]["email2"] == sha("ann@example.com")
    assert out["traits"]["email"] == "  Ann@Example.COM "
    assert out["properties"]["name"] == "purchase"


def test_sampled_out_stops_the_chain(frozen: dict[str, Any]) -> None:
    fn = build({"drop_fields": ["context.ip"]}, {"sample": {"percent": 0}})
    assert fn(frozen) == "sampled"


class Destination(BaseModel):
    model_config = ConfigDict(extra="forbid")
    transforms: list[TransformStep] = []


@pytest.mark.parametrize(
    ("step", "message"),
    [
        ({"rename_event": {"a": "b"}}, "unknown transform step 'rename_event'"),
        ({"drop_fields": ["a"], "hash_fields": ["b"]}, "exactly one key"),
        ({}, "exactly one key"),
        ("drop_fields", "mapping with one key"),
        ({"drop_fields": []}, "at least 1 item"),
        ({"drop_fields": ["a..b"]}, "empty segment"),
        ({"drop_fields": ["messageId"]}, "can't be dropped"),
        ({"hash_fields": ["type"]}, "can't be dropped or hashed"),
        ({"set_fields": {"messageId": "x"}}, "can't be set"),
        ({"allow_fields": {"props": ["a"]}}, "Extra inputs are not permitted"),
        ({"sample": {"percent": 150}}, "less than or equal to 100"),
        ({"sample": {"rate": 5}}, "Extra inputs are not permitted"),
        ({"rename_events": {"a": 1}}, "valid string"),
    ],
)
def test_invalid_steps_are_config_errors(step: Any, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Destination.model_validate({"transforms": [step]})


def test_steps_validate_inside_a_config_model_and_have_a_schema() -> None:
    config = Destination.model_validate(
        {"transforms": [{"drop_fields": ["context.ip"]}, {"sample": {"percent": 5}}]}
    )
    assert compile_transforms(config.transforms) is not None
    schema = Destination.model_json_schema()
    assert "DropFields" in schema["$defs"] and "SetFields" in schema["$defs"]
