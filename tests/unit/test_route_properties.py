"""Property tests: routes never mutate their input, never leak changes across
destinations, and never raise, whatever the (JSON) event and filter."""

from __future__ import annotations

import copy
import sys
import types
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from router.stages.fql import FQLSyntaxError, compile_fql
from router.stages.route import REASONS, compile_route
from router.stages.transforms import TransformStep

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
KEYS = ["a", "b", "email", "ip", "sku", "0", "1", "x.y"]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**53), 2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
    st.sampled_from(["a@b.c", "Order Completed", "u1", "track"]),
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(KEYS), inner, max_size=4)
    ),
    max_leaves=12,
)
objects = st.dictionaries(st.sampled_from(KEYS), json_values, max_size=5)
consents = st.one_of(
    st.just({}),
    st.builds(
        lambda prefs: {"categoryPreferences": prefs},
        st.dictionaries(st.sampled_from(["Analytics", "Ads"]), st.booleans(), max_size=2),
    ),
)
contexts = (
    st.builds(
        lambda base, consent, traits: {**base, "consent": consent, "traits": traits},
        objects,
        consents,
        objects,
    )
    | objects
)
integrations = st.dictionaries(
    st.sampled_from(["All", "alpha", "Beta", "Webhook"]),
    st.one_of(st.booleans(), st.none(), st.just({"opt": 1})),
    max_size=3,
)


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": draw(st.sampled_from(["track", "identify", "page", "screen", "group", "alias"])),
        "messageId": draw(st.text(min_size=1, max_size=12)),
        "timestamp": "2024-05-01T10:00:00.000Z",
        "userId": draw(st.sampled_from(["u1", "u2"])),
        "event": draw(st.sampled_from(["Order Completed", "Signed Up", "x"])),
    }
    for name, strategy in (
        ("properties", objects),
        ("traits", objects),
        ("context", contexts),
        ("integrations", integrations),
    ):
        if draw(st.booleans()):
            event[name] = draw(strategy)
    return event


@pytest.fixture(scope="module")
def python_step() -> Iterator[str]:
    module = types.ModuleType("route_property_transforms")

    def scribble(event: dict[str, Any]) -> dict[str, Any] | None:
        for value in list(event.values()):
            if isinstance(value, dict):
                value.clear()  # vandalise its private copy
        event["scribbled"] = True
        return None if event.get("event") == "x" else event

    module.scribble = scribble  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    yield f"{module.__name__}:scribble"
    del sys.modules[module.__name__]


STEPS = TypeAdapter(list[TransformStep])
EVERY_STEP = [
    {"rename_events": {"Order Completed": "purchase", "Signed Up": "sign_up"}},
    {"drop_fields": ["context.ip", "properties.a", "traits.0", "context.traits.email"]},
    {"allow_fields": {"properties": ["a", "b", "sku"], "traits": ["email", "a"]}},
    {"hash_fields": ["traits.email", "context.traits.email", "properties.b", "properties.x\\.y"]},
    {
        "set_fields": {
            "context.source": "web",
            "properties.uid": "{{userId}}",
            "properties.a.deep": "{{context.traits.a}}",
            "properties.label": "u-{{traits.email}}",
            "context.consent.extra": {"k": [1]},
        }
    },
    {"sample": {"percent": 70}},
]


def deep_identity(a: Any, b: Any) -> bool:
    """Equal and of the same types all the way down (1 == True would hide a change)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(deep_identity(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(deep_identity(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


@SETTINGS
@given(event=events())
def test_transforms_never_change_the_input(python_step: str, event: dict[str, Any]) -> None:
    route = compile_route(
        name="alpha",
        display_name="Alpha",
        consent_categories=None,
        where=None,
        transforms=STEPS.validate_python([*EVERY_STEP, {"python": python_step}]),
    )
    before = copy.deepcopy(event)
    result = route(event)
    assert deep_identity(event, before)
    assert isinstance(result, dict) or result in REASONS


@SETTINGS
@given(event=events())
def test_destinations_over_one_input_are_independent(
    python_step: str, event: dict[str, Any]
) -> None:
    first = compile_route(
        name="alpha",
        display_name="Alpha",
        consent_categories=["Analytics"],
        where="type = 'track' or type = 'identify'",
        transforms=STEPS.validate_python([*EVERY_STEP[:3], {"python": python_step}]),
    )
    second = compile_route(
        name="beta",
        display_name="Beta",
        consent_categories=None,
        where=None,
        transforms=STEPS.validate_python(EVERY_STEP[3:]),
    )
    alone_first = first(copy.deepcopy(event))
    alone_second = second(copy.deepcopy(event))
    shared_first = first(event)
    snapshot_first = copy.deepcopy(shared_first)
    shared_second = second(event)
    assert deep_identity(shared_first, alone_first)
    assert deep_identity(shared_second, alone_second)
    assert deep_identity(shared_first, snapshot_first)  # the second route did not touch it


paths = st.sampled_from(
    [
        "type",
        "event",
        "userId",
        "properties.a",
        "properties.b.a",
        "properties.x\\.y",
        "properties.0",
        "properties.a.0.b",
        "traits.email",
        "context.consent.categoryPreferences.Analytics",
        "integrations.All",
        "nope",
    ]
)
literals = st.one_of(
    st.sampled_from(["null", "true", "false", "0", "-1", "2.5", "1e3", "'a'", '"track"', "''"]),
    st.text(alphabet="ab*?[]-\\ '", max_size=6).map(
        lambda s: "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"
    ),
)
lists = st.lists(literals, max_size=3).map(lambda items: "[" + ", ".join(items) + "]")
operands = st.recursive(
    paths | literals | lists,
    lambda inner: st.one_of(
        st.builds(
            lambda f, a: f"{f}({a})",
            st.sampled_from(["length", "lowercase", "uppercase", "typeof"]),
            inner,
        ),
        st.builds(
            lambda f, a, b: f"{f}({a}, {b})", st.sampled_from(["contains", "match"]), inner, inner
        ),
    ),
    max_leaves=4,
)
comparisons = (
    st.builds(
        lambda a, op, b: f"{a} {op} {b}",
        operands,
        st.sampled_from(["=", "!=", "<", "<=", ">", ">=", "in"]),
        operands,
    )
    | operands
)
expressions = st.recursive(
    comparisons,
    lambda inner: st.one_of(
        st.builds(lambda a, op, b: f"{a} {op} {b}", inner, st.sampled_from(["and", "or"]), inner),
        inner.map(lambda e: f"!({e})"),
        inner.map(lambda e: f"({e})"),
    ),
    max_leaves=6,
)


@SETTINGS
@given(expr=expressions, event=events())
def test_filters_never_raise(expr: str, event: dict[str, Any]) -> None:
    try:
        predicate = compile_fql(expr)
    except FQLSyntaxError:
        return  # e.g. a list nested in a list literal
    assert predicate(event) in (True, False)  # evaluation itself never raises on JSON
    route = compile_route(name="alpha", display_name="Alpha", consent_categories=None, where=expr)
    result = route(event)
    assert result is event or result in ("filter", "integrations")


@SETTINGS
@given(text=st.text(alphabet="abc.()[]!=<>'\"\\ ,01-", max_size=24))
def test_compile_raises_only_syntax_errors(text: str) -> None:
    try:
        compile_fql(text)
    except FQLSyntaxError as exc:
        assert 0 <= exc.position <= len(text)


# --- plain route behaviour ------------------------------------------------------------


class Explosive:
    """A non-JSON value whose comparison raises: the only way to make a filter error."""

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("boom")

    __hash__ = object.__hash__


def test_route_reasons_in_order(python_step: str) -> None:
    route = compile_route(
        name="alpha",
        display_name="Alpha",
        consent_categories=["Analytics"],
        where="properties.x = properties.y",
        transforms=STEPS.validate_python([{"python": python_step}]),
    )
    ok = {"categoryPreferences": {"Analytics": True}}
    base = {"type": "track", "event": "E", "messageId": "m", "context": {"consent": ok}}
    assert route({**base, "context": {"consent": {"categoryPreferences": {}}}}) == "consent"
    assert route({**base, "integrations": {"Alpha": False}}) == "integrations"
    assert route({**base, "properties": {"x": 1, "y": 2}}) == "filter"
    assert route({**base, "properties": {"x": Explosive(), "y": Explosive()}}) == "filter_error"
    assert route({**base, "properties": {"x": 1, "y": 1}, "event": "x"}) == "transform"
    out = route({**base, "properties": {"x": 1, "y": 1}})
    assert isinstance(out, dict) and out["scribbled"] is True


def test_route_turns_a_crashing_transform_into_a_reason() -> None:
    module = types.ModuleType("route_crash_transforms")
    module.crash = lambda event: 1 / 0  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    try:
        route = compile_route(
            name="a",
            display_name="A",
            transforms=STEPS.validate_python([{"python": "route_crash_transforms:crash"}]),
        )
        assert route({"type": "track", "messageId": "m"}) == "transform_error"
        unserialisable = {"type": "track", "messageId": "m", "properties": {"x": {1, 2}}}
        assert route(unserialisable) == "transform_error"
    finally:
        del sys.modules[module.__name__]


def test_a_route_without_rules_returns_the_event_itself() -> None:
    route = compile_route(name="a", display_name="A", consent_categories=[], where="  ")
    event = {"type": "track", "messageId": "m", "context": {"consent": {"categoryPreferences": {}}}}
    assert route(event) is event


def test_a_bad_where_fails_at_compile_time() -> None:
    with pytest.raises(FQLSyntaxError):
        compile_route(name="a", display_name="A", where="type = ")
