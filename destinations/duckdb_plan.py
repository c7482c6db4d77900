"""Set-based loading for DuckDB: the SQL that builds a batch's rows inside DuckDB.

Built from the batch's *structure*, not its events. One query over the batch's JSON
(``STRUCTURE_SQL``) gives, per event type (and track name), the merged structure of
``context``, ``properties`` and ``traits`` and the JSON types of the fields stored as text;
this module maps that to the tables' columns exactly as ``router.warehouse.event_rows``
names them (``flatten``'s names, reserved names dropped, arrays as JSON text), each with
the SQL of its value and the JSON type of its values. ``duckdb_set`` then types the batch
and fills each table with one ``INSERT ... SELECT`` (``users``: ``upsert_users``): no Python
per event.

It plans only batches that need no judgement per value: every column exists, and every
value's JSON type fits its column without widening. Anything else (a new column, a type
conflict, an ambiguous shape such as keys equal but for case, or a nested ``{}``)
raises ``Unsupported``, and the loader loads that batch row by row, which decides and
evolves. A value DuckDB then refuses fails the load the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from router.warehouse import (
    COMMON,
    STANDARD,
    TRACK_COLUMNS,
    column_name,
    event_table,
    quote,
)

TIMES = {"timestamp": "timestamp", "sentAt": "sent_at", "originalTimestamp": "original_timestamp",
         "receivedAt": "received_at"}
IDS = {"anonymousId": "anonymous_id", "userId": "user_id"}
EXTRA = {"page": {"name": "name", "category": "category"},
         "screen": {"name": "name", "category": "category"},
         "group": {"groupId": "group_id"}, "alias": {"previousId": "previous_id"}}
NESTED = ("context", "properties", "traits")
# stored as text by ``_text``: str(value), which is SQL's text of a string or an integer
TEXTS = (*IDS, "name", "category", "groupId", "previousId")
INTEGERS = frozenset(("BIGINT", "UBIGINT", "HUGEINT", "UHUGEINT"))
ARRAY = "ARRAY"  # a list in the structure: stored as JSON text
MIXED = "MIXED"  # a leaf of several scalar types in the batch (only text holds them all)


def literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


RAW_SQL = (  # the batch as read: objects and text fields still JSON, times parsed
    "CREATE OR REPLACE TEMP TABLE raw AS SELECT * FROM read_json(?, format = 'array', "
    "columns = {" + ", ".join(
        f"{literal(key)}: {literal(kind)}" for key, kind in (
            ("messageId", "VARCHAR"), ("type", "VARCHAR"), ("event", "VARCHAR"),
            *((key, "TIMESTAMPTZ") for key in TIMES), *((key, "JSON") for key in TEXTS),
            *((key, "JSON") for key in NESTED))) + "})")
STRUCTURE_SQL = (
    'SELECT "type", CASE WHEN "type" = \'track\' THEN "event" END, '
    + ", ".join(f"json_group_structure({quote(key)}), bool_and({quote(key)} IS NULL OR "
                f"starts_with(CAST({quote(key)} AS VARCHAR), '{{'))" for key in NESTED)
    + ", " + ", ".join(f"list_distinct(list(json_type({quote(key)})))" for key in TEXTS)
    + " FROM raw GROUP BY ALL")


class Unsupported(Exception):
    """The batch needs a decision per value (or DDL): load it row by row."""


@dataclass
class Table:
    name: str
    where: str  # the rows of ``batch`` (as ``b``) that go to this table
    columns: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (SQL, JSON type)


def merge(a: Any, b: Any, path: str) -> Any:
    """Two structures of one key as one (DuckDB's rules: NULL gives way, ints unite)."""
    if a == "NULL" or a == b:
        return b
    if b == "NULL":
        return a
    if isinstance(a, dict) and isinstance(b, dict):
        out = dict(a)
        for key, value in b.items():
            out[key] = merge(out[key], value, f"{path}.{key}") if key in out else value
        return out
    if isinstance(a, list) and isinstance(b, list):
        return ["JSON"]  # an array is stored as JSON text, whatever it holds
    if isinstance(a, str) and isinstance(b, str) and "JSON" not in (a, b):
        # ints unite; others: e.g. text in one event's table, numbers in another's
        return "HUGEINT" if a in INTEGERS and b in INTEGERS else MIXED
    raise Unsupported(f"{path} has two shapes in the batch ({a}, {b})")


def leaves(node: dict[str, Any], prefix: str, path: str, reserved: Any,
           out: dict[str, tuple[str, str]]) -> None:
    """``flatten`` over a structure: column name -> (SQL path, JSON type)."""
    if len({key.lower() for key in node}) < len(node) or "" in node:
        raise Unsupported(f"keys of {path} differ only in case (or are empty)")
    for key, kind in node.items():
        if kind == "NULL":
            continue
        name = column_name(prefix, key)
        ref = f"{path}.{quote(key)}"
        if isinstance(kind, dict):
            leaves(kind, name + "_", ref, reserved, out)
            continue
        if kind == "JSON":  # an object in some events, a value in others; or only {}
            raise Unsupported(f"{ref} has no single shape")
        if reserved is not None and (name in reserved or name.startswith("context_")):
            continue
        if name in out:
            raise Unsupported(f"two keys make column {name}")
        out[name] = (ref, ARRAY if isinstance(kind, list) else kind)


def plan(groups: list[tuple[Any, ...]], uuid_ts: datetime, event_tables: bool = True
         ) -> list[Table]:
    """The tables a batch fills, each column's SQL with the JSON type of its values
    (``groups``: STRUCTURE_SQL's rows)."""
    shapes: list[tuple[str, str, dict[str, Any]]] = []
    for kind, name, *found in groups:
        if kind not in ("track", "identify", "page", "screen", "group", "alias") or (
                kind == "track" and not name):
            raise Unsupported(f"an event of type {kind!r} (name {name!r})")
        shape: dict[str, Any] = {}
        for key, structure, objects in zip(NESTED, found[0:6:2], found[1:6:2], strict=True):
            if not objects:
                raise Unsupported(f"{key} is not always an object")
            if structure != '"NULL"':  # "JSON" for objects: {} in every event
                shape[key] = {} if structure == '"JSON"' else orjson.loads(structure)
        for key, types in zip(TEXTS, found[6:], strict=True):
            if not set(types) <= INTEGERS | {"VARCHAR"}:
                raise Unsupported(f"{key} is {types}")
        shapes.append((kind, name or "", shape))
    _union([shape for _, _, shape in shapes])  # one object read for all: a key is an
    # object in every event or in none (else two tables would read it two ways)
    stamp = f"TIMESTAMPTZ '{uuid_ts.isoformat()}'"
    common: dict[str, tuple[str, str]] = {
        "id": ('b."messageId"', "VARCHAR"), "uuid_ts": (stamp, "TIMESTAMPTZ"),
        **{column: (f"b.{quote(key)}", "TIMESTAMPTZ") for key, column in TIMES.items()},
        **{column: (f"b.{quote(key)}", "VARCHAR") for key, column in IDS.items()}}
    common["received_at"] = (f'coalesce(b."receivedAt", {stamp})', "TIMESTAMPTZ")

    def columns(members: list[dict[str, Any]], key: str | None, reserved: Any
                ) -> dict[str, tuple[str, str]]:
        """The row's common and context columns, and those of ``key``'s object, for the
        events of ``members`` (what ``event_rows`` gives them)."""
        shape = _union(members)
        out = dict(common)
        if "context" in shape:
            leaves(shape["context"], "context_", 'b."context"', None, out)
        if key in shape:
            leaves(shape[key], "", f"b.{quote(key)}", reserved, out)
        return out

    tables: list[Table] = []
    tracks = [(name, shape) for kind, name, shape in shapes if kind == "track"]
    if tracks:
        cases = " ".join(f"WHEN {literal(n)} THEN {literal(event_table(n))}"
                         for n, _ in tracks)
        event = {"event": (f'CASE b."event" {cases} END', "VARCHAR"),
                 "event_text": ('b."event"', "VARCHAR")}
        tables.append(Table("tracks", "b.\"type\" = 'track'", {
            **columns([shape for _, shape in tracks], None, None), **event}))
        per_table: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        for name, shape in tracks if event_tables else ():
            per_table.setdefault(event_table(name), []).append((name, shape))
        for table, members in per_table.items():
            where = ("b.\"type\" = 'track' AND b.\"event\" IN "
                     f"({', '.join(literal(name) for name, _ in members)})")
            tables.append(Table(table, where, {**columns(
                [shape for _, shape in members], "properties", TRACK_COLUMNS), **event}))
    for kind in sorted({kind for kind, _, _ in shapes} - {"track"}):
        table = {"identify": "identifies", "alias": "aliases"}.get(kind, kind + "s")
        members = [shape for k, _, shape in shapes if k == kind]
        key = "traits" if kind in ("identify", "group", "alias") else "properties"
        row = columns(members, key, COMMON if kind == "identify" else STANDARD[table])
        row.update((column, (f"b.{quote(name)}", "VARCHAR"))
                   for name, column in EXTRA.get(kind, {}).items())
        tables.append(Table(table, f"b.\"type\" = {literal(kind)}", row))
        if kind == "identify":  # traits only, by userId
            user = {name: value for name, value in row.items()
                    if name in ("received_at", "timestamp", "uuid_ts")
                    or not (name in COMMON or name.startswith("context_"))}
            tables.append(Table("users", "b.\"type\" = 'identify' AND b.\"userId\" <> ''",
                                {"id": common["user_id"], **user}))
    return tables


def _union(shapes: list[dict[str, Any]]) -> dict[str, Any]:
    union: dict[str, Any] = {}
    for shape in shapes:
        union = merge(union, shape, "$")
    return union
