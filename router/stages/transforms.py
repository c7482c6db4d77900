"""Per-destination transforms: ordered steps, validated at config load, compiled once.

Each step is a YAML mapping with exactly one key::

    transforms:
      - rename_events: {"Order Completed": purchase}      # track events' `event` only
      - drop_fields: [context.ip, properties.coupon]
      - allow_fields: {properties: [sku, price], traits: [email], context: [locale]}
      - hash_fields: [traits.email, context.traits.phone]
      - set_fields: {context.source: web, properties.uid: "{{userId}}", properties.k: "k-{{event}}"}
      - sample: {percent: 10}
      - python: mypackage.transforms:scrub

Paths are dot-separated; a backslash escapes a dot inside a key (``properties.a\\.b``).
``type`` and ``messageId`` can't be dropped, hashed or set, and ``timestamp`` can't be
dropped or hashed (the engine relies on them).

- ``allow_fields`` keeps only the listed top-level keys of ``properties``, ``traits`` or
  ``context`` (nested values of a kept key are kept whole); an object not named is left
  alone. ``traits`` applies both to ``traits`` and to ``context.traits``.
- ``hash_fields`` replaces a string with the SHA-256 hex of its trimmed, lower-cased text,
  leaving a value that is already 64 hex characters alone and a blank one blank (``""``,
  as Segment does); a number is hashed from its
  JSON text (``5551234`` -> sha256("5551234")); null and missing fields stay as they are;
  a bool, object or list is removed (it cannot be hashed meaningfully and must not leak).
- ``set_fields`` values are JSON literals; a string that is exactly ``{{path}}`` copies
  that field with its type (nothing is set when it is missing; an object is copied, so
  later steps edit the two places separately); ``{{path}}`` inside a
  longer string interpolates its text (missing -> empty). A field under a non-object
  parent is not set.
- ``sample`` keeps ``percent`` % of events, chosen deterministically by ``messageId``
  (CRC-32 bucket out of 10,000): a re-delivered event meets the same fate.
- ``python`` names ``module:function``, imported at load; it gets a private deep copy of
  the event and returns a dict (the new event) or None to drop it (``transform``). An
  exception, or a result that is not a JSON object or lost the event's ``type``,
  ``messageId`` or ``timestamp``, gives ``transform_error``.

The compiled function returns the event, or a drop reason: ``sampled``, ``transform`` or
``transform_error``. Copy-on-write: it never mutates its input or anything reachable from
it; it copies only the containers on a changed path, and returns the very same object when
nothing changed, so destinations sharing an input event never see each other's changes.
"""

from __future__ import annotations

import hashlib
import importlib
import re
import zlib
from collections.abc import Callable
from typing import Annotated, Any, ClassVar, cast

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    JsonValue,
    Tag,
)

Path = tuple[str, ...]
StepFn = Callable[["_Edit"], str | None]
_MISSING: Any = object()
HEX64 = re.compile(r"[0-9a-fA-F]{64}")
TEMPLATE = re.compile(r"\{\{\s*([^{}]+?)\s*\}\}")
NEVER_DROPPED = frozenset(("type", "messageId", "timestamp"))
NEVER_SET = frozenset(("type", "messageId"))


def parse_path(text: str) -> Path:
    """``a.b\\.c`` -> ("a", "b.c"); raises ValueError on an empty segment."""
    segments, current, i = [], [], 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            current.append(text[i + 1])
            i += 2
            continue
        if c == ".":
            segments.append("".join(current))
            current = []
        else:
            current.append(c)
        i += 1
    segments.append("".join(current))
    if not all(segments):
        raise ValueError(f"{text!r} is not a dot path (empty segment)")
    return tuple(segments)


def _check_path(text: str) -> str:
    parse_path(text)
    return text


def _check_droppable(text: str) -> str:
    if parse_path(text) in {(name,) for name in NEVER_DROPPED}:
        raise ValueError(f"{text!r} can't be dropped or hashed; the router relies on it")
    return text


def _check_settable(text: str) -> str:
    if parse_path(text) in {(name,) for name in NEVER_SET}:
        raise ValueError(f"{text!r} can't be set; the router relies on it")
    return text


DroppablePath = Annotated[str, AfterValidator(_check_path), AfterValidator(_check_droppable)]
SettablePath = Annotated[str, AfterValidator(_check_path), AfterValidator(_check_settable)]


# --- step models ----------------------------------------------------------------------


class _Step(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    step: ClassVar[str]


class RenameEvents(_Step):
    step = "rename_events"
    rename_events: dict[str, str] = Field(
        description="Rename track events: {old event name: new event name}."
    )


class DropFields(_Step):
    step = "drop_fields"
    drop_fields: list[DroppablePath] = Field(
        min_length=1, description="Dot paths of fields to remove, e.g. context.ip."
    )


class AllowList(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    properties: list[str] | None = Field(None, description="Keys of `properties` to keep.")
    traits: list[str] | None = Field(
        None, description="Keys of `traits` and `context.traits` to keep."
    )
    context: list[str] | None = Field(None, description="Keys of `context` to keep.")


class AllowFields(_Step):
    step = "allow_fields"
    allow_fields: AllowList = Field(
        description="Allowlists: only the listed keys of each named object are sent."
    )


class HashFields(_Step):
    step = "hash_fields"
    hash_fields: list[DroppablePath] = Field(
        min_length=1,
        description="Dot paths to replace by the SHA-256 hex of the lower-cased value.",
    )


class SetFields(_Step):
    step = "set_fields"
    set_fields: dict[SettablePath, JsonValue] = Field(
        min_length=1, description="Dot path -> JSON value; strings may use {{path}} templates."
    )


class SampleRate(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    percent: float = Field(ge=0, le=100, description="Share of events kept, 0-100.")


class Sample(_Step):
    step = "sample"
    sample: SampleRate = Field(description="Keep a deterministic share of events by messageId.")


def _check_import(target: str) -> str:
    _import(target)
    return target


class PythonStep(_Step):
    step = "python"
    python: Annotated[str, AfterValidator(_check_import)] = Field(
        pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$",
        description="module:function taking a private copy of the event, returning a dict or None.",
    )


STEPS: dict[str, type[_Step]] = {
    model.step: model
    for model in (RenameEvents, DropFields, AllowFields, HashFields, SetFields, Sample, PythonStep)
}


def _step_tag(value: Any) -> str | None:
    if isinstance(value, dict):
        return next(iter(value)) if len(value) == 1 else None
    return getattr(value, "step", None)


def _check_step(value: Any) -> Any:
    known = ", ".join(STEPS)
    if isinstance(value, dict):
        if len(value) != 1:
            raise ValueError(f"a transform step has exactly one key (one of: {known})")
        name = next(iter(value))
        if name not in STEPS:
            raise ValueError(f"unknown transform step {name!r}; expected one of: {known}")
    elif not isinstance(value, _Step):
        raise ValueError(f"a transform step is a mapping with one key (one of: {known})")
    return value


TransformStep = Annotated[
    Annotated[RenameEvents, Tag("rename_events")]
    | Annotated[DropFields, Tag("drop_fields")]
    | Annotated[AllowFields, Tag("allow_fields")]
    | Annotated[HashFields, Tag("hash_fields")]
    | Annotated[SetFields, Tag("set_fields")]
    | Annotated[Sample, Tag("sample")]
    | Annotated[PythonStep, Tag("python")],
    Discriminator(_step_tag),
    BeforeValidator(_check_step),
]


# --- copy-on-write editing ------------------------------------------------------------


class _Edit:
    """The event being transformed; copies a dict the first time it is written to."""

    __slots__ = ("_owned", "root")

    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root
        self._owned: dict[int, dict[str, Any]] | None = None  # id -> dict we made (kept alive)

    def reset(self, root: dict[str, Any]) -> None:
        self.root, self._owned = root, None

    def _own(self, node: Any) -> dict[str, Any]:
        owned = self._owned
        if owned is None:
            owned = self._owned = {}
        elif id(node) in owned:
            return node
        copy: dict[str, Any] = node.copy() if type(node) is dict else {}
        owned[id(copy)] = copy
        return copy

    def _writable(self, parents: Path) -> dict[str, Any]:
        parent = self.root = self._own(self.root)
        for key in parents:
            child = self._own(parent.get(key))
            parent[key] = child
            parent = child
        return parent

    def get(self, path: Path) -> Any:
        node: Any = self.root
        for key in path:
            if type(node) is not dict:
                return _MISSING
            node = node.get(key, _MISSING)
        return node

    def set(self, path: Path, value: Any) -> None:
        node: Any = self.root
        for key in path[:-1]:
            node = node.get(key)
            if node is None:
                break
            if type(node) is not dict:
                return  # never clobber a non-object parent
        else:
            current = node.get(path[-1], _MISSING)
            if current is value or (type(current) is type(value) and current == value):
                return
        self._writable(path[:-1])[path[-1]] = value

    def delete(self, path: Path) -> None:
        node: Any = self.root
        for key in path[:-1]:
            node = node.get(key)
            if type(node) is not dict:
                return
        if path[-1] in node:
            del self._writable(path[:-1])[path[-1]]


# --- compilation ----------------------------------------------------------------------


def compile_transforms(
    steps: list[TransformStep],
) -> Callable[[dict[str, Any]], dict[str, Any] | str] | None:
    """One function running every step in order, or None when there are no steps."""
    fns = [_compile_step(step) for step in steps]
    if not fns:
        return None

    def transform(event: dict[str, Any]) -> dict[str, Any] | str:
        edit = _Edit(event)
        for fn in fns:
            reason = fn(edit)
            if reason is not None:
                return reason
        return edit.root

    return transform


def _compile_step(step: _Step) -> StepFn:
    if isinstance(step, RenameEvents):
        return _rename(dict(step.rename_events))
    if isinstance(step, DropFields):
        return _drop([parse_path(p) for p in step.drop_fields])
    if isinstance(step, AllowFields):
        return _allow(step.allow_fields)
    if isinstance(step, HashFields):
        return _hash([parse_path(p) for p in step.hash_fields])
    if isinstance(step, SetFields):
        return _set([(parse_path(p), v) for p, v in step.set_fields.items()])
    if isinstance(step, Sample):
        return _sample(step.sample.percent)
    if isinstance(step, PythonStep):
        return _python(_import(step.python))
    raise TypeError(f"not a transform step: {step!r}")


def _rename(mapping: dict[str, str]) -> StepFn:
    def rename(edit: _Edit) -> None:
        root = edit.root
        name = root.get("event")
        if root.get("type") == "track" and isinstance(name, str) and name in mapping:
            edit.set(("event",), mapping[name])

    return rename


def _drop(paths: list[Path]) -> StepFn:
    def drop(edit: _Edit) -> None:
        for path in paths:
            edit.delete(path)

    return drop


def _allow(spec: AllowList) -> StepFn:
    targets: list[tuple[Path, frozenset[str]]] = []
    if spec.properties is not None:
        targets.append((("properties",), frozenset(spec.properties)))
    if spec.context is not None:
        targets.append((("context",), frozenset(spec.context)))
    if spec.traits is not None:
        keep = frozenset(spec.traits)
        targets += [(("traits",), keep), (("context", "traits"), keep)]

    def allow(edit: _Edit) -> None:
        for path, keep in targets:
            obj = edit.get(path)
            if isinstance(obj, dict) and not keep.issuperset(obj):
                edit.set(path, {k: v for k, v in obj.items() if k in keep})

    return allow


def _hash_value(value: Any) -> Any:
    """The hashed form of a field value; _MISSING means remove the field."""
    if value is None:
        return None
    if isinstance(value, str):
        if len(value) == 64 and HEX64.fullmatch(value):
            return value
        text = value.strip().lower()
        # a blank stays blank (as Segment's hashing does): sha256("") would make every
        # blank value look like one and the same person downstream
        return hashlib.sha256(text.encode("utf-8")).hexdigest() if text else ""
    if type(value) is int or type(value) is float:
        return hashlib.sha256(orjson.dumps(value)).hexdigest()
    return _MISSING


def _hash(paths: list[Path]) -> StepFn:
    def hash_fields(edit: _Edit) -> None:
        for path in paths:
            value = edit.get(path)
            if value is _MISSING:
                continue
            hashed = _hash_value(value)
            if hashed is _MISSING:
                edit.delete(path)
            else:
                edit.set(path, hashed)

    return hash_fields


def _template(value: JsonValue) -> Callable[[_Edit], Any]:
    """A literal, or a `{{path}}` template resolved against the event being edited."""
    if not isinstance(value, str) or "{{" not in value:
        return lambda edit: value
    whole = TEMPLATE.fullmatch(value)
    if whole:
        source = parse_path(whole.group(1))

        def copy_field(edit: _Edit) -> Any:
            found = edit.get(source)
            # an object is copied whole: shared, a later step editing one place (which
            # may be a dict this edit already owns) would change the other too
            return orjson.loads(orjson.dumps(found)) if type(found) is dict else found

        return copy_field
    pieces = TEMPLATE.split(value)  # literal, path, literal, path, ..., literal
    parts: list[str | Path] = [
        parse_path(p) if i % 2 else p for i, p in enumerate(pieces) if p or i % 2
    ]

    def render(edit: _Edit) -> str:
        out = []
        for part in parts:
            if isinstance(part, str):
                out.append(part)
                continue
            v = edit.get(part)
            if v is not _MISSING and v is not None:
                out.append(v if isinstance(v, str) else orjson.dumps(v).decode())
        return "".join(out)

    return render


def _set(assignments: list[tuple[Path, JsonValue]]) -> StepFn:
    compiled = [(path, _template(value)) for path, value in assignments]

    def set_fields(edit: _Edit) -> None:
        for path, resolve in compiled:
            value = resolve(edit)
            if value is not _MISSING:
                edit.set(path, value)

    return set_fields


def _sample(percent: float) -> StepFn:
    threshold = round(percent * 100)  # buckets kept out of 10,000

    def sample(edit: _Edit) -> str | None:
        message_id = str(edit.root.get("messageId", ""))
        return "sampled" if zlib.crc32(message_id.encode()) % 10_000 >= threshold else None

    return sample


def _import(target: str) -> Callable[[dict[str, Any]], Any]:
    module_name, _, attr = target.partition(":")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot import the python transform {target!r}: {exc}") from exc
    if not callable(fn):
        raise ValueError(f"the python transform {target!r} is not callable")
    return cast(Callable[[dict[str, Any]], Any], fn)


def _usable(result: Any, given: dict[str, Any]) -> bool:
    """A python transform's result can be sent: a JSON object that kept the fields the
    engine and the connectors rely on (``type``, ``messageId``, ``timestamp``, as strings,
    where the event it was given had them). Anything else would fail later, when its
    batch is encoded, and take the batch's other events down with it."""
    if not isinstance(result, dict) or not all(
            isinstance(result.get(key), str) for key in NEVER_DROPPED if key in given):
        return False
    try:
        orjson.dumps(result)
    except TypeError:  # orjson.JSONEncodeError: a set, an object, a too-large int, ...
        return False
    return True


def _python(fn: Callable[[dict[str, Any]], Any]) -> StepFn:
    def python(edit: _Edit) -> str | None:
        try:
            result = fn(orjson.loads(orjson.dumps(edit.root)))
        except Exception:
            return "transform_error"
        if result is None:
            return "transform"
        if not _usable(result, edit.root):
            return "transform_error"
        edit.reset(result)
        return None

    return python
