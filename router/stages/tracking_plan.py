"""A tracking plan: which track events exist and what their properties look like.

The plan file (YAML)::

    events:                       # track event name -> JSON Schema of its `properties`
      Order Completed:
        type: object
        properties:
          order_id: {type: string}
          total: {type: number, minimum: 0}
        required: [order_id, total]
      Signed Up: {}               # planned, any properties
    identify:                     # optional: JSON Schema of identify `traits`
      properties:
        email: {type: string}
      required: [email]

Schemas are JSON Schema Draft 2020-12 (``format`` is checked), validated and compiled
once at load. Only track events (by ``event`` name) and, when ``identify`` is given,
identify calls (``traits``) are checked; every other call passes untouched. A missing
``properties``/``traits`` object is checked as ``{}``.

Modes:

- ``unplanned``: a track event not in the plan is ``allow``-ed or ``block``-ed
  (``Blocked("unplanned_event")``);
- ``violations``: an event failing its schema is sent as is (``allow``), sent as a copy
  carrying ``context.violations`` (``tag``, a list of ``{"type", "field",
  "description"}`` where type is the failing JSON Schema keyword, e.g. ``required``, and
  field a dot path such as ``properties.total``), or ``Blocked("plan_violation")``
  (``block``).

Every ``$ref`` must resolve within the plan file or to a JSON Schema metaschema (nothing
is fetched); a schema that
still fails to evaluate on an event counts as one violation of type ``error``.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, Literal

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, ValidationError
from jsonschema_specifications import REGISTRY as METASCHEMAS
from referencing.exceptions import Unresolvable
from referencing.jsonschema import DRAFT202012

Unplanned = Literal["allow", "block"]
Violations = Literal["allow", "tag", "block"]
MAX_VIOLATIONS = 20


@dataclass(frozen=True, slots=True)
class Blocked:
    reason: str  # unplanned_event | plan_violation
    detail: str = ""


class TrackingPlan:
    def __init__(
        self,
        plan: dict[str, Any],
        unplanned: Unplanned = "allow",
        violations: Violations = "allow",
    ) -> None:
        if unplanned not in ("allow", "block"):
            raise ValueError(f"unplanned must be allow or block, not {unplanned!r}")
        if violations not in ("allow", "tag", "block"):
            raise ValueError(f"violations must be allow, tag or block, not {violations!r}")
        unknown = set(plan) - {"events", "identify"}
        if unknown:
            raise ValueError(f"unknown tracking plan keys {sorted(unknown)}; use events, identify")
        events = plan.get("events") or {}
        if not isinstance(events, dict):
            raise ValueError("tracking plan `events` must map event names to schemas")
        self.unplanned = unplanned
        self.violations = violations
        self.events = {name: _compile(schema, f"event {name!r}") for name, schema in events.items()}
        identify = plan.get("identify")
        self.identify = _compile(identify, "identify") if identify is not None else None

    @classmethod
    def from_file(
        cls,
        path: str | Path,
        unplanned: Unplanned = "allow",
        violations: Violations = "allow",
    ) -> TrackingPlan:
        try:
            plan = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(f"cannot read the tracking plan {path}: {exc}") from exc
        if not isinstance(plan, dict):
            raise ValueError(f"the tracking plan {path} must be a mapping")
        try:
            return cls(plan, unplanned, violations)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from exc

    def check(self, event: dict[str, Any]) -> dict[str, Any] | Blocked:
        kind = event.get("type")
        if kind == "track":
            name = event.get("event")
            validator = self.events.get(name) if isinstance(name, str) else None
            if validator is None:
                if self.unplanned == "block":
                    return Blocked("unplanned_event", f"{name!r} is not in the tracking plan")
                return event
            field = "properties"
        elif kind == "identify" and self.identify is not None:
            validator, field = self.identify, "traits"
        else:
            return event
        if self.violations == "allow":
            return event
        target = event.get(field)
        errors = validator.iter_errors(target if target is not None else {})
        try:
            if self.violations == "block":
                first = next(errors, None)
                if first is None:
                    return event
                return Blocked("plan_violation", _describe(first, field)["description"])
            found = [_describe(e, field) for e in islice(errors, MAX_VIOLATIONS)]
        except Exception as exc:  # a schema that fails to evaluate on this event
            # counts as a violation: it must never stop the consumer (one event would
            # then crash the router on every restart)
            error = {"type": "error", "field": field,
                     "description": f"the schema could not be evaluated: {exc}"}
            if self.violations == "block":
                return Blocked("plan_violation", error["description"])
            found = [error]
        if not found:
            return event
        context = event.get("context")
        context = dict(context) if isinstance(context, dict) else {}
        context["violations"] = found
        return {**event, "context": context}


def _compile(schema: Any, what: str) -> Draft202012Validator:
    if schema is None:
        schema = {}
    if not isinstance(schema, dict | bool):
        raise ValueError(f"the schema of {what} must be a mapping")
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise ValueError(f"the schema of {what} is invalid: {exc.message}") from exc
    if isinstance(schema, dict):
        # jsonschema resolves $ref only while validating, and fetches nothing over the
        # network (the JSON Schema metaschemas are built in): a reference to anywhere
        # else would fail on every event
        resource = DRAFT202012.create_resource(schema)
        registry = METASCHEMAS.with_resource(resource.id() or "", resource).crawl()
        try:
            _check_refs(schema, registry.resolver(base_uri=resource.id() or ""))
        except Unresolvable as exc:
            raise ValueError(f"the schema of {what} has a $ref that does not resolve "
                             f"within the plan: {exc}") from exc
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


# keywords whose values are data, not subschemas: a "$ref" key inside them is not a ref
_DATA_KEYWORDS = frozenset(("const", "enum", "default", "examples"))


def _check_refs(node: Any, resolver: Any) -> None:  # a referencing Resolver
    """Raise Unresolvable for the first $ref / $dynamicRef that points nowhere."""
    if isinstance(node, list):
        for item in node:
            _check_refs(item, resolver)
        return
    if not isinstance(node, dict):
        return
    if isinstance(node.get("$id"), str):  # a nested $id changes the base of its refs
        resolver = resolver.in_subresource(DRAFT202012.create_resource(node))
    for keyword in ("$ref", "$dynamicRef"):
        ref = node.get(keyword)
        if isinstance(ref, str):
            resolver.lookup(ref)
    for key, value in node.items():
        if key not in _DATA_KEYWORDS:
            _check_refs(value, resolver)


def _describe(error: ValidationError, root: str) -> dict[str, str]:
    path = [root, *(str(p) for p in error.absolute_path)]
    if error.validator == "required" and isinstance(error.instance, dict):
        missing = next(
            (
                p
                for p in error.validator_value
                if p not in error.instance and repr(p) in error.message
            ),
            None,
        )
        if missing is not None:
            path.append(str(missing))
    return {"type": str(error.validator), "field": ".".join(path), "description": error.message}
