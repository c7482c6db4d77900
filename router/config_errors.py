"""A pydantic error on the config, as ``file:line: dotted.path: problem`` in the file's
terms: what is wrong and what to write instead (the nearest real key or name, where a
misplaced key belongs, the value given unless it may be a secret)."""

from __future__ import annotations

import difflib
import re
import types
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, SecretStr, Tag

from destinations.registry import REGISTRY
from router import configfile
from router.configfile import dotted
from router.stages.transforms import STEPS


def describe(err: Any, data: Any, lines: configfile.Lines, root: type[BaseModel]) -> str:
    """One error of ``root.model_validate(data)`` (``data`` read from a file with ``lines``)."""
    loc = _strip_tags(tuple(err["loc"]), data)
    message = err["msg"].removeprefix("Value error, ")
    kind = err["type"]
    if kind == "unknown_destination_type":
        loc, message = _unknown_destination(loc, err["input"])
    elif kind == "duplicate_destination_name":
        loc = (*loc, err["ctx"]["index"], "name")
    elif kind == "field_error":
        loc = (*loc, err["ctx"]["field"])
    elif kind == "extra_forbidden":
        message = "unknown key (not part of the config contract)" + _key_hint(loc, data, root)
    elif kind == "missing":
        message = "required key is missing"
    else:
        message = _plain(kind, message, err, loc, data, root)
    return f"{lines.where(loc)}: {dotted(loc)}: {message}"


def _did_you_mean(given: Any, choices: Any) -> str:
    """``; did you mean `x`?`` for the closest of ``choices``, or nothing."""
    if not isinstance(given, str):
        return ""
    choices = [c for c in choices if isinstance(c, str)]
    same_but_case = [c for c in choices if c.lower() == given.lower()]
    close = same_but_case or difflib.get_close_matches(given, choices, n=1)
    return f"; did you mean `{close[0]}`?" if close else ""


def _unknown_destination(loc: tuple[Any, ...], value: Any) -> tuple[tuple[Any, ...], str]:
    """The discriminator's one error, split into what actually went wrong."""
    names = ", ".join(sorted(REGISTRY))
    if not isinstance(value, dict):
        return loc, (f"expected a mapping (a destination's name, type and settings), "
                     f"got {_kind(value)}")
    if value.get("type") is None:
        keys = [k for k in value if isinstance(k, str) and k != "type"]
        typo = difflib.get_close_matches("type", keys, n=1)
        maybe = f" (is `{typo[0]}` a misspelling of it?)" if typo else ""
        missing = "is empty" if "type" in value else "is missing"
        return (*loc, "type"), (f"required key `type` {missing}{maybe}; it names the "
                                f"connector, one of: {names}")
    return (*loc, "type"), f"unknown connector; one of {names}" + _did_you_mean(
        value["type"], REGISTRY)


def _key_hint(loc: tuple[Any, ...], data: Any, root: type[BaseModel]) -> str:
    """For an unknown key that is a real key one level up, one level down or in a sibling
    section (a slip of indentation: `url` beside `settings`, `timeout_s` in `settings`,
    `enabled` in `settings`), where it belongs; else the nearest real key at its place."""
    parent, key = loc[:-1], loc[-1]
    model = _expected_at(parent, data, root)
    if not isinstance(key, str) or not _is_model(model):
        return ""
    up = parent[:-1]
    outer = _expected_at(up, data, root) if parent and isinstance(parent[-1], str) else None
    if _is_model(outer) and key in _keys(outer) and not _given(up, key, data):
        return f"; it belongs one level up ({dotted((*up, key))})"
    places = [(*parent, name) for name in _keys(model)]
    if _is_model(outer):
        places += [(*up, name) for name in _keys(outer) if name != parent[-1]]
    for place in places:
        inner = _expected_at(place, data, root)
        if _is_model(inner) and key in _keys(inner) and not _given(place, key, data):
            return f"; it belongs under `{place[-1]}` ({dotted((*place, key))})"
    return _did_you_mean(key, _keys(model))


# Pydantic errors that gain from naming the value the file gave (``_plain``).
SHOW_VALUE = frozenset((
    "int_parsing", "int_type", "float_parsing", "float_type",
    "bool_parsing", "bool_type", "string_type", "literal_error", "greater_than",
    "greater_than_equal", "less_than", "less_than_equal", "string_pattern_mismatch"))
UNIT_SUFFIX = re.compile(r"^\s*-?\d+(\.\d+)?\s*[A-Za-z]+\s*$")  # 10s, 500ms, 1.5 h


def _plain(kind: str, message: str, err: Any, loc: tuple[Any, ...], data: Any,
           root: type[BaseModel]) -> str:
    """Pydantic's message for a value of the wrong shape or type, in the file's terms and
    with what to write instead."""
    value = err.get("input")
    if kind in ("model_type", "dict_type"):
        if not loc:
            return (f"expected a mapping of sections (kafka:, destinations:, ...) at the top "
                    f"of the file, got {_kind(value)}")
        return f"expected a mapping (indented `key: value` lines), got {_kind(value)}"
    if kind == "list_type":
        if loc == ("destinations",):
            return (f"expected a list of destinations (each one starts with `- name:`), "
                    f"got {_kind(value)}")
        shown = isinstance(value, str) and _showable(loc, data, root)
        write = f"; write [{value}]" if shown else ""
        return f"expected a list ([a, b], or one `- item` line each), got {_kind(value)}{write}"
    if kind == "too_short" and isinstance(value, list):
        least = err["ctx"]["min_length"]
        return (f"the list needs at least {least} item{'s' if least > 1 else ''}, "
                f"got {len(value) or 'an empty list'}")
    if kind == "value_error" and message.startswith("unknown transform step"):
        return message + _did_you_mean(next(iter(value), None), STEPS)
    if kind not in SHOW_VALUE:
        return message
    if value is None:
        return f"{message}, got an empty value (nothing after the ':')"
    if _showable(loc, data, root):
        message += f" (got {_shown(value)})"
    if kind in ("bool_parsing", "bool_type"):
        message += "; write true or false"
    elif kind == "literal_error":
        message += _did_you_mean(value, re.findall(r"'([^']*)'", err["ctx"]["expected"]))
    elif (kind in ("int_parsing", "float_parsing") and isinstance(value, str)
          and UNIT_SUFFIX.match(value) and str(loc[-1]).endswith(("_s", "_ms"))):
        unit = "milliseconds" if str(loc[-1]).endswith("_ms") else "seconds"
        message += f"; write a plain number of {unit} (the key's suffix gives the unit)"
    elif kind == "string_pattern_mismatch" and loc[:1] == ("destinations",) and \
            loc[-1] == "name":
        message += ("; use lowercase letters, digits, `_` and `-`, starting with a letter "
                    "or digit, at most 63 characters")
    return message


def _kind(value: Any) -> str:
    """What the file gave, in YAML's words."""
    if value is None:
        return "an empty value (nothing after the ':')"
    for python, words in ((bool, "true/false"), (int | float, "a number"), (str, "a string"),
                          (list, "a list"), (dict, "a mapping")):
        if isinstance(value, python):
            return f"{words} ({_shown(value)})" if python is bool else words
    return f"a {type(value).__name__}"  # YAML also reads dates and times


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    text = repr(value) if isinstance(value, str) else str(value)  # a date as YAML wrote it
    return text if len(text) <= 40 else text[:37] + "..."


def _showable(loc: tuple[Any, ...], data: Any, root: type[BaseModel]) -> bool:
    """Whether a value may be echoed: never a secret's, and no string of a connector's
    settings (a URL, a DSN or a header may carry a credential)."""
    if _expected_at(loc, data, root) is SecretStr:
        return False
    in_settings = len(loc) > 2 and loc[0] == "destinations" and loc[2] == "settings"
    value = _child_at(loc, data)
    return not (in_settings and isinstance(value, str))


def _given(loc: tuple[Any, ...], key: str, data: Any) -> bool:
    """Whether the file already has ``key`` at ``loc`` (then it was not misplaced)."""
    node = _child_at(loc, data)
    return isinstance(node, dict) and key in node


def _is_model(expected: Any) -> bool:
    return isinstance(expected, type) and issubclass(expected, BaseModel)


def _keys(model: type[BaseModel]) -> list[str]:
    """The keys a file writes for ``model``'s fields (an alias where there is one)."""
    return [field.alias or name for name, field in model.model_fields.items()]


def _child(node: Any, part: Any) -> Any:
    if isinstance(node, dict):
        return node.get(part)
    if isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
        return node[part]
    return None


def _child_at(loc: tuple[Any, ...], data: Any) -> Any:
    for part in loc:
        data = _child(data, part)
    return data


def _expected_at(loc: tuple[Any, ...], data: Any, root: type[BaseModel]) -> Any:
    """The type the contract expects at ``loc`` (keys and indexes as the file has them),
    following the file's own values through the destination and transform unions; None
    where it cannot tell (a destination whose `type` is unknown, say)."""
    expected: Any = root
    node = data
    for part in loc:
        expected = _resolve(expected, node)
        if isinstance(part, int) and get_origin(expected) is list:
            expected = get_args(expected)[0]
        elif isinstance(part, str) and _is_model(expected):
            field = dict(zip(_keys(expected), expected.model_fields.values(), strict=True))
            if part not in field:
                return None
            expected = field[part].annotation
        else:
            return None
        node = _child(node, part)
    return _resolve(expected, node)


def _resolve(expected: Any, node: Any) -> Any:
    """``expected`` without Annotated and Optional; of a tagged union, the member the
    file's value selects (a destination by its `type`, a transform step by its key)."""
    while True:
        origin = get_origin(expected)
        if origin is Annotated:
            expected = get_args(expected)[0]
        elif origin in (Union, types.UnionType):
            members = [m for m in get_args(expected) if m is not type(None)]
            if len(members) == 1:
                expected = members[0]
                continue
            tags = {getattr(meta, "tag", None): m for m in members
                    for meta in getattr(m, "__metadata__", ()) if isinstance(meta, Tag)}
            tag = node.get("type") if isinstance(node, dict) else None
            if isinstance(node, dict) and len(node) == 1 and tag not in tags:
                tag = next(iter(node))
            expected = tags.get(tag) if isinstance(tag, str) else None
        else:
            return expected


def _strip_tags(loc: tuple[Any, ...], data: Any) -> tuple[Any, ...]:
    """Drop the union tags pydantic inserts (e.g. destinations.0.amplitude.settings)."""
    out: list[Any] = []
    node = data
    for part in loc:
        if isinstance(node, dict) and part not in node and (
                part in REGISTRY or (out and part == out[-1])):
            continue  # a union's tag, not a key in the file (transforms[1].rename_events)
        if isinstance(node, str | int | float | bool):
            break  # nothing is inside a scalar: a union's tag (transforms[0].python)
        if (isinstance(part, str) and part.startswith("function-")) or part in ("str", "int"):
            continue
        out.append(part)
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            node = None
    return tuple(out)


