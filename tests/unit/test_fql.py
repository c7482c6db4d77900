from __future__ import annotations

from typing import Any

import pytest

from router.stages.fql import FQLSyntaxError, compile_fql

# Segment's documented example object and table (public-api/fql.md).
DOC_EVENT: dict[str, Any] = {
    "event": "Button Clicked",
    "type": "track",
    "context": {"library": {"name": "analytics.js", "version": "1.0"}},
    "properties": {"features": ["discounts", "dark-mode"]},
}

EVENT: dict[str, Any] = {
    "type": "track",
    "event": "Order Completed",
    "userId": "u1",
    "properties": {
        "total": 42.5,
        "count": 3,
        "zero": 0,
        "flag": True,
        "off": False,
        "nothing": None,
        "name": "Widget",
        "kana": "ア",
        "tags": ["a", "b"],
        "nums": [1, 2.0],
        "items": [{"sku": "s1"}, {"sku": "s2"}],
        "obj": {"k": "v"},
        "product 1": {"price": "19.99"},
        "a.b": "dotted",
        "with-dash": "ok",
    },
}


def ev(expr: str, event: dict[str, Any] = EVENT) -> bool:
    return compile_fql(expr)(event)


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("event = 'Button Clicked'", True),
        ("event = 'Screen Tapped'", False),
        ("context.path.path = '/login'", False),
        ("type = 'identify' or type = 'track'", True),
        ("event = 'Button Clicked' and type = 'track'", True),
        ("match( context.library.version, '1.*' )", True),
        ("match( context.library.version, '2.*' )", False),
        ("type = 'track' and ( event = 'Click' or match( event, 'Button *' ) )", True),
        ("!contains( context.library.name, 'js' )", False),
        ("'dark-mode' in properties.features", True),
        ("'blink' in properties.features", False),
        ("!( type in ['track', 'identify'] )", False),
    ],
)
def test_segment_documented_examples(expr: str, expected: bool) -> None:
    assert ev(expr, DOC_EVENT) is expected


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("properties.count = 3", True),
        ("properties.count = 3.0", True),  # numbers compare across int/float
        ("properties.count != 3", False),
        ("properties.count != 4", True),
        ("properties.total > 40", True),
        ("properties.total > 42.5", False),
        ("properties.total >= 42.5", True),
        ("properties.total < 43", True),
        ("properties.total < 42.5", False),
        ("properties.total <= 42.5", True),
        ("properties.count > -1", True),
        ("properties.count < 1e3", True),
        ('properties.name = "Widget"', True),
        ("properties.name = 'widget'", False),  # case-sensitive
        ("properties.flag = true", True),
        ("properties.off = false", True),
        ("properties.flag = 1", False),  # bool is not a number
        ("properties.count = true", False),
        ("properties.nothing = null", True),
        ("properties.tags = ['a', 'b']", True),
        ("properties.tags = ['b', 'a']", False),
        ("properties.tags != ['a', 'b']", False),
        ("properties.nums = [1, 2]", True),
        ("properties.obj = properties.obj", True),
        ("properties.count = properties.count", True),
        ("properties.count != properties.total", True),
        ("properties.count < properties.total", True),
    ],
)
def test_comparison_operators(expr: str, expected: bool) -> None:
    assert ev(expr) is expected


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("properties.missing = null", True),
        ("nope.deeper.still = null", True),
        ("properties.missing != null", False),
        ("properties.missing != 'a'", True),  # different types -> not equal
        ("properties.missing = 'a'", False),
        ("properties.missing < 1", False),
        ("properties.missing > 1", False),
        ("properties.missing <= 1", False),
        ("properties.missing >= 1", False),
        ("properties.missing in ['a']", False),
        ("null in ['a', null]", True),
        ("'a' in properties.missing", False),
        ("properties.missing", False),
        ("!properties.missing", True),
        ("properties.name.deeper = null", True),  # walking through a string is null
    ],
)
def test_null_safety(expr: str, expected: bool) -> None:
    assert ev(expr) is expected


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("properties.name > 1", False),  # string vs number: false, not an error
        ("properties.name < 1", False),
        ("properties.count > '1'", False),
        ("properties.count = '3'", False),
        ("properties.count != '3'", True),
        ("properties.name >= 'A'", False),  # ordering is for numbers only
        ("properties.flag > 0", False),
        ("properties.tags > 1", False),
        ("properties.obj < 1", False),
        ("3 in properties.nums", False),
        ("1 in properties.nums", True),
        ("2 in properties.nums", True),
        ("true in [1]", False),
        ("1 in [true]", False),
        ("'a' in 'abc'", False),  # right side must be a list
    ],
)
def test_mixed_types_are_false_not_errors(expr: str, expected: bool) -> None:
    assert ev(expr) is expected


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("true and true", True),
        ("true and false", False),
        ("false or true", True),
        ("false or false", False),
        ("null or true", True),
        ("null and true", False),
        ("!true", False),
        ("!false", True),
        ("!!true", True),
        ("!null", True),
        ("properties.flag", True),
        ("properties.name", False),  # only the boolean true counts as true
        ("properties.count = 3 and properties.flag", True),
        ("properties.count = 4 or properties.count = 3 and properties.flag", True),
        ("(properties.count = 4 or properties.count = 3) and properties.off", False),
        ("properties.count = 4 or properties.count = 5 or properties.count = 3", True),
        ("true and true and false", False),
        ("!properties.count = 4", True),  # `!` applies to the whole comparison
        ("! (properties.count = 3)", False),
        ("(((true)))", True),
        ("event in ['Signed Up', 'Order Completed']", True),
        ("event in ['Signed Up']", False),
        ("properties.count in [1, 2, 3]", True),
        ("properties.nothing in [null]", True),
        ("properties.flag in [false, true]", True),
    ],
)
def test_logic_and_membership(expr: str, expected: bool) -> None:
    assert ev(expr) is expected


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("contains(properties.name, 'idg')", True),
        ("contains(properties.name, 'IDG')", False),
        ("contains(properties.missing, 'x')", False),
        ("contains(properties.tags, 'a')", False),  # strings only
        ("contains(properties.name, properties.missing)", False),
        ("length(properties.name) = 6", True),
        ("length(properties.kana) = 3", True),  # bytes, not characters (Segment)
        ("length(properties.tags) = 2", True),
        ("length(properties.missing) = 0", True),
        ("length(properties.count) = null", True),
        ("length(userId) > 0", True),
        ("lowercase(properties.name) = 'widget'", True),
        ("lowercase(properties.missing) = null", True),
        ("lowercase(properties.count) = null", True),
        ("uppercase(properties.name) = 'WIDGET'", True),
        ("typeof(properties.name) = 'string'", True),
        ("typeof(properties.count) = 'number'", True),
        ("typeof(properties.total) = 'number'", True),
        ("typeof(properties.flag) = 'bool'", True),
        ("typeof(properties.tags) = 'list'", True),
        ("typeof(properties.obj) = 'object'", True),
        ("typeof(properties.nothing) = 'null'", True),
        ("typeof(properties.missing) = 'null'", True),
        ("contains(lowercase(properties.name), 'wid')", True),
        ("match(lowercase(event), 'order *')", True),
        ("match(properties.missing, '*')", False),
        ("match(properties.count, '*')", False),
        ("match(properties.name, properties.name)", True),  # dynamic pattern
    ],
)
def test_functions(expr: str, expected: bool) -> None:
    assert ev(expr) is expected


@pytest.mark.parametrize(
    ("text", "pattern", "expected"),
    [  # Segment's documented glob table
        ("abcd", "a*d", True),
        ("", "*", True),
        ("abc", "ab", False),
        ("abcd", "a??d", True),
        ("abcd", "*d", True),
        ("ab*d", "ab\\*d", True),
        ("abxd", "ab\\*d", False),
        ("abCd", "ab[cC]d", True),
        ("abcd", "ab[a-z]d", True),
        ("abcd", "ab[A-Z]d", False),
        ("a.c", "a.c", True),
        ("abc", "a.c", False),  # regex characters are literal
        ("a\nb", "a*b", True),
        ("[x", "[x", True),  # an unclosed bracket is literal
    ],
)
def test_match_globs(text: str, pattern: str, expected: bool) -> None:
    escaped = pattern.replace("\\", "\\\\").replace("'", "\\'")
    assert ev(f"match(properties.s, '{escaped}')", {"properties": {"s": text}}) is expected
    assert ev("match(properties.s, properties.p)", {"properties": {"s": text, "p": pattern}}) is (
        expected
    )


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("properties.product\\ 1.price = '19.99'", True),
        ("properties.a\\.b = 'dotted'", True),
        ("properties.with-dash = 'ok'", True),
        ("properties.items.1.sku = 's2'", True),
        ("properties.items.7.sku = null", True),
        ("properties.\\and = null", True),  # an escaped keyword is a field name
        ("'it\\'s' = \"it's\"", True),
        ('"say \\"hi\\"" = \'say "hi"\'', True),
    ],
)
def test_paths_and_strings(expr: str, expected: bool) -> None:
    assert ev(expr) is expected


@pytest.mark.parametrize(
    ("expr", "position", "fragment"),
    [
        ("", 0, "expected a value"),
        ("type = ", 7, "expected a value"),
        ("type == 'track'", 6, "expected a value"),
        ("type = 'track", 7, "unterminated string"),
        ("type = 'a' and", 14, "expected a value"),
        ("(type = 'a'", 11, "expected ')'"),
        ("type = 'a' event", 11, "unexpected 'event'"),
        ("foo(type)", 0, "unknown function 'foo'"),
        ("contains(type)", 0, "takes 2 argument"),
        ("length(a, b)", 0, "takes 1 argument"),
        ("type in [event]", 9, "literals"),
        ("type in ['a' 'b']", 13, "expected ','"),
        ("type = 'a' & x", 11, "unexpected character '&'"),
        ("properties..x = 1", 10, "empty field name"),
        ("properties. = 1", 10, "empty field name"),
        ("a = 1.", 5, "malformed number"),
        ("a = 1.5.2", 7, "malformed number"),
        ("a = 12abc", 6, "unexpected 'abc'"),
        ("and = 1", 0, "expected a value"),
        ("a = b = c", 6, "unexpected '='"),
        ("contains(a,)", 11, "expected a value"),
        ("x = 1 )", 6, "unexpected ')'"),
        ("a\\", 1, "backslash"),
    ],
)
def test_syntax_errors_name_the_position(expr: str, position: int, fragment: str) -> None:
    with pytest.raises(FQLSyntaxError) as info:
        compile_fql(expr)
    assert info.value.position == position
    assert fragment in str(info.value)
    assert f"at position {position}" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_evaluation_does_not_raise_on_odd_shapes() -> None:
    predicate = compile_fql(
        "properties.a.b > 1 or length(properties.a) > 0 or 'x' in properties.a "
        "or match(properties.a, 'x*') or typeof(properties.a.0) = 'null'"
    )
    for value in (None, 1, "s", [1, [2]], {"b": "2"}, {"b": None}, True, [], {}):
        assert predicate({"properties": {"a": value}}) in (True, False)
    assert predicate({"properties": None}) is True  # typeof(missing) = 'null'
    assert predicate({}) is True
