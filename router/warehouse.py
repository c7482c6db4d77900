"""The warehouse schema Segment uses, shared by the postgres, duckdb and bigquery connectors.

Pure: no I/O. It turns events into rows of named tables, decides the column types those
rows need, and builds the (PostgreSQL-flavoured) SQL that PostgreSQL and DuckDB share.

- **Tables**: ``tracks`` plus one table per track event (``order_completed``),
  ``identifies``, ``users``, ``pages``, ``screens``, ``groups``, ``aliases``.
- **Names**: snake_case as Segment's go-snakecase does (``orderId`` -> ``order_id``,
  ``Order Completed`` -> ``order_completed``); only ``[a-z0-9_]``; a leading digit gets a
  ``_``; names longer than 63 characters (PostgreSQL's limit) are cut with a hash suffix.
- **Values**: nested objects flatten with ``_`` (``context.app.version`` ->
  ``context_app_version``); arrays are stored as JSON text; nulls create nothing.
- **Types** (``ColumnType``): the first values decide a column's type; a later value
  that does not fit widens it along ``bigint -> double -> text``; any other conflict
  (``boolean``, ``timestamp``) widens to ``text``. Loads never fail on a type conflict.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, NamedTuple

import orjson

from router.delivery.outcome import DELIVERED, Outcome, Rejected, Retry
from router.events import iso, parse_time

Event = dict[str, Any]
Row = dict[str, Any]
Tables = dict[str, list[tuple[int, Row]]]  # table -> (batch position, row)

MAX_NAME = 63  # PostgreSQL's identifier limit (NAMEDATALEN - 1); BigQuery allows 300
INT64 = 2**63


class ColumnType(StrEnum):
    BOOLEAN = "boolean"
    BIGINT = "bigint"
    DOUBLE = "double"
    TIMESTAMP = "timestamp"
    TEXT = "text"


BOOLEAN, BIGINT, DOUBLE = ColumnType.BOOLEAN, ColumnType.BIGINT, ColumnType.DOUBLE
TIMESTAMP, TEXT = ColumnType.TIMESTAMP, ColumnType.TEXT

COMMON: dict[str, ColumnType] = {
    "id": TEXT, "anonymous_id": TEXT, "user_id": TEXT, "timestamp": TIMESTAMP,
    "sent_at": TIMESTAMP, "received_at": TIMESTAMP, "original_timestamp": TIMESTAMP,
    "uuid_ts": TIMESTAMP,
}
TRACK_COLUMNS = {**COMMON, "event": TEXT, "event_text": TEXT}
STANDARD: dict[str, dict[str, ColumnType]] = {
    "tracks": TRACK_COLUMNS,
    "identifies": COMMON,
    "users": {"id": TEXT, "received_at": TIMESTAMP, "timestamp": TIMESTAMP, "uuid_ts": TIMESTAMP},
    "pages": {**COMMON, "name": TEXT, "category": TEXT},
    "screens": {**COMMON, "name": TEXT, "category": TEXT},
    "groups": {**COMMON, "group_id": TEXT},
    "aliases": {**COMMON, "previous_id": TEXT},
}


def standard_columns(table: str) -> dict[str, ColumnType]:
    """The fixed columns of a table; any other table is a per-event table."""
    return STANDARD.get(table, TRACK_COLUMNS)


# -- names ---------------------------------------------------------------------------------

def snake_case(name: str) -> str:
    """Segment's go-snakecase: a leading run of ``[a-z0-9]`` (with single inner ``_``) is
    kept; after it, each word is a run of ``[A-Z0-9]`` then ``[a-z0-9]``, lower-cased and
    joined with ``_``; anything else (punctuation, non-ASCII) only separates words."""
    keep = _PREFIX.match(name).end()  # type: ignore[union-attr]  # always matches
    if keep == len(name):
        return name
    if keep and name[keep - 1].isdigit():
        keep -= 1  # a digit followed by a capital starts a word: co2Level -> co_2level
    words = [w.lower() for w in _WORD.findall(name, keep)]
    return "_".join([name[:keep], *words] if keep else words)


_PREFIX = re.compile(r"(?:[a-z0-9]|_(?=[a-z0-9]))*")
_WORD = re.compile(r"[A-Z0-9]+[a-z0-9]*|[a-z0-9]+")


def identifier(raw: str) -> str:
    """A safe SQL name for a raw key: snake_case, [a-z0-9_], no leading digit, <= 63."""
    name = snake_case(raw)
    if not name:  # nothing ASCII to keep ("価格"): a stable name from the raw bytes
        name = "_" + _digest(raw)
    elif name[0].isdigit():
        name = "_" + name
    if len(name) > MAX_NAME:
        name = name[: MAX_NAME - 9] + "_" + _digest(name)
    return name


def event_table(event_name: str) -> str:
    """The per-event table of a track call; never one of the standard tables."""
    table = _TABLES.get(event_name)
    if table is None:
        if len(_TABLES) > 10_000:  # bounded even when a client sends unbounded names
            _TABLES.clear()
        name = identifier(event_name)
        table = _TABLES[event_name] = "_" + name if name in STANDARD else name
    return table


_TABLES: dict[str, str] = {}  # event name -> table (names repeat every event)


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:8]


_NAMES: dict[str, dict[str, str]] = {}  # prefix -> key -> column (keys repeat every event)


def _name(prefix: str, key: str, names: dict[str, str]) -> str:
    if len(names) > 10_000:  # bounded even when a client sends unbounded keys
        names.clear()
    # A top-level key is named as an event's table is: snake_cased once, exactly as
    # go-snakecase ("x_2Y" -> "x__2y"), and "_" + its hash when nothing ASCII is left.
    # Under a parent: the parent's name and the key's snake_case (or hash).
    name = names[key] = (identifier(prefix + (snake_case(key) or _digest(key))) if prefix
                         else identifier(key))
    return name


def column_name(prefix: str, key: str) -> str:
    """The column of ``key`` under ``prefix``, as ``flatten`` names it."""
    names = _NAMES.get(prefix)
    if names is None:
        names = _NAMES[prefix] = {}
    return names.get(key) or _name(prefix, key, names)


def flatten(obj: Mapping[str, Any], prefix: str, out: Row,
            reserved: Mapping[str, Any] | None = None) -> None:
    """Flatten ``obj`` into ``out``: nested objects join with ``_``, arrays become JSON
    text, nulls are skipped; names in ``reserved`` (or starting ``context_``) are
    dropped, as Segment drops properties that collide with its own columns."""
    names = _NAMES.get(prefix)
    if names is None:
        names = _NAMES[prefix] = {}
    for key, value in obj.items():
        if value is None:
            continue
        name = names.get(key) or _name(prefix, key, names)
        kind = type(value)
        if kind is dict:
            flatten(value, name + "_", out, reserved)
        elif reserved is not None and (name in reserved or name.startswith("context_")):
            continue
        elif kind is list:
            out[name] = orjson.dumps(value).decode()
        else:
            out[name] = value


# -- rows ----------------------------------------------------------------------------------

def event_rows(event: Event, uuid_ts: datetime, event_tables: bool = True
               ) -> list[tuple[str, Row]]:
    """The rows one event writes, as ``(table, row)``. Values stay JSON values, but for
    ``uuid_ts`` (the load time; also ``received_at`` when the event has no receivedAt)."""
    kind = event.get("type")
    row: Row = {
        "id": event.get("messageId"), "anonymous_id": _text(event.get("anonymousId")),
        "user_id": _text(event.get("userId")), "timestamp": event.get("timestamp"),
        "sent_at": event.get("sentAt"), "received_at": event.get("receivedAt") or uuid_ts,
        "original_timestamp": event.get("originalTimestamp"), "uuid_ts": uuid_ts,
    }
    context = event.get("context")
    if context:
        flatten(context, "context_", row)
    if kind == "track":
        name = str(event.get("event") or "")
        table = event_table(name)
        row["event"], row["event_text"] = table, name
        rows = [("tracks", row)]
        if event_tables:
            rows.append((table, _with(row, event.get("properties"), TRACK_COLUMNS)))
        return rows
    if kind == "identify":
        identify = _with(row, event.get("traits"), COMMON)
        rows = [("identifies", identify)]
        if row["user_id"]:  # users: keyed by userId, traits only (no context)
            user = {"id": row["user_id"], "received_at": row["received_at"],
                    "timestamp": row["timestamp"], "uuid_ts": uuid_ts}
            user.update((k, v) for k, v in identify.items() if k not in row)
            rows.append(("users", user))
        return rows
    if kind in ("page", "screen"):
        row["name"], row["category"] = _text(event.get("name")), _text(event.get("category"))
        return [(kind + "s", _with(row, event.get("properties"), STANDARD["pages"]))]
    if kind == "group":
        row["group_id"] = _text(event.get("groupId"))
        return [("groups", _with(row, event.get("traits"), STANDARD["groups"]))]
    if kind == "alias":
        row["previous_id"] = _text(event.get("previousId"))
        return [("aliases", _with(row, event.get("traits"), STANDARD["aliases"]))]
    return []


def batch_rows(events: list[Event], uuid_ts: datetime, event_tables: bool = True
               ) -> tuple[Tables, dict[int, str]]:
    """Rows of a batch grouped by table, each with its event's position; and the
    positions rejected locally with a reason."""
    tables: Tables = {}
    rejected: dict[int, str] = {}
    for position, event in enumerate(events):
        if not event.get("messageId"):
            rejected[position] = "no messageId: the warehouse primary key `id` needs one"
            continue
        try:
            rows = event_rows(event, uuid_ts, event_tables)
        except (RecursionError, TypeError, ValueError) as exc:  # nested beyond what
            rejected[position] = (  # Python or orjson follow (~250 levels): this event only
                f"cannot be made into rows (nested too deep?): {exc!r}")
            continue
        if not rows:
            rejected[position] = f"unknown event type {event.get('type')!r}"
        for table, row in rows:
            tables.setdefault(table, []).append((position, row))
    return tables, rejected


def preview(events: list[Event], settings: Any) -> list[dict[str, Any]]:
    """What ``dry-run`` can show of a warehouse destination (a connector's ``preview``):
    each row the events would write, as ``{"table", "row"}``, with only its non-null
    values (the columns it fills) and times as ISO-8601 text; ``uuid_ts`` is now."""
    now = datetime.now(UTC)
    tables, rejected = batch_rows(events, now, getattr(settings, "event_tables", True))
    shown: list[tuple[int, dict[str, Any]]] = [
        (position, {"rejected": reason}) for position, reason in rejected.items()]
    for table, rows in tables.items():
        shown.extend((position, {"table": table, "row": {
            name: iso(value) if isinstance(value, datetime) else value
            for name, value in row.items() if value is not None}}) for position, row in rows)
    return [entry for _, entry in sorted(shown, key=lambda item: item[0])]


def merge_users(rows: Iterable[Row]) -> list[Row]:
    """One row per user id (an upsert may touch a row once): the batch's identifies
    merged in time order, a later non-null value winning, ``timestamp`` the latest."""
    merged: dict[str, Row] = {}
    for row in sorted(rows, key=lambda r: _sort_time(r.get("timestamp"))):
        current = merged.get(row["id"])
        if current is None:
            merged[row["id"]] = dict(row)
        else:
            current.update((k, v) for k, v in row.items() if v is not None)
    return list(merged.values())


def _with(row: Row, extra: Any, reserved: Mapping[str, Any]) -> Row:
    if not extra or not isinstance(extra, dict):
        return row
    out = dict(row)
    flatten(extra, "", out, reserved)
    return out


def _text(value: Any) -> str | None:
    return None if value is None else value if type(value) is str else str(value)


def _sort_time(value: Any) -> float:
    parsed = parse_time(value)
    return parsed.timestamp() if parsed else 0.0


# -- types ---------------------------------------------------------------------------------

_ISO_TIME = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d(:?\d\d)?)?")


def value_type(value: Any) -> ColumnType:
    kind = type(value)
    if kind is str:
        return TIMESTAMP if _ISO_TIME.fullmatch(value) and parse_time(value) else TEXT
    if kind is bool:
        return BOOLEAN
    if kind is int:
        return BIGINT if -INT64 <= value < INT64 else TEXT
    if kind is float:
        return DOUBLE
    return TEXT


def fits(value: Any, column: ColumnType) -> bool:
    """Whether ``value`` converts to the column's type without loss."""
    kind = type(value)
    if column is TEXT:
        return True
    if column is DOUBLE:
        return kind is float or kind is int
    if column is BIGINT:
        return (kind is int or (kind is float and value.is_integer())) and -INT64 <= value < INT64
    if column is BOOLEAN:
        return kind is bool
    return kind is str and value_type(value) is TIMESTAMP


def widen(a: ColumnType, b: ColumnType) -> ColumnType:
    """The narrowest type both fit: bigint + double -> double; any other mix -> text."""
    if a is b:
        return a
    return DOUBLE if {a, b} == {BIGINT, DOUBLE} else TEXT


class Change(NamedTuple):
    add: dict[str, ColumnType]  # new columns (all of them when the table is new)
    widen: dict[str, ColumnType]  # existing columns whose type must widen
    left_out: list[str]  # new columns over the per-table cap: not created, not loaded


def plan(table: str, rows: Iterable[Row], known: Mapping[str, ColumnType],
         max_columns: int) -> Change:
    """What ``table`` (whose columns are ``known``; empty when it does not exist yet)
    needs before ``rows`` can load. Standard columns never change type. New columns
    beyond ``max_columns`` are left out, by name order so the choice is stable."""
    fixed = standard_columns(table)
    types = {**{name: kind for name, kind in fixed.items() if name not in known}, **known}
    for row in rows:
        for name, value in row.items():
            current = types.get(name)
            if current is TEXT or value is None:
                continue
            if current is None:
                types[name] = value_type(value)
            elif name not in fixed and not fits(value, current):
                types[name] = widen(current, value_type(value))
    add = {name: kind for name, kind in types.items() if name not in known}
    widened = {name: kind for name, kind in types.items()
               if name in known and kind is not known[name]}
    room = max(max_columns - len(known) - sum(1 for name in add if name in fixed), 0)
    left_out = sorted(name for name in add if name not in fixed)[room:]
    for name in left_out:
        del add[name]
    return Change(add, widened, left_out)


class Known:
    """A sender's memory of its tables, so that the hot path never reads the catalogue:
    ``columns`` (None until read; read again after a change or an error), the columns that
    cannot widen (a view or an index depends on them) and those left out at the cap."""

    def __init__(self, max_columns: int) -> None:
        self.max_columns = max_columns
        self.columns: dict[str, dict[str, ColumnType]] | None = None
        self.frozen: set[tuple[str, str]] = set()  # (table, column)
        self.left_out: dict[str, set[str]] = {}  # table -> columns

    def changes(self, tables: Tables) -> Iterator[tuple[str, bool, Change, list[str]]]:
        """``(table, exists, change, newly_left_out)`` for each table of the batch that
        needs DDL or has columns newly left out; frozen columns are not widened."""
        assert self.columns is not None, "read the catalogue first"
        for table, rows in tables.items():
            known = self.columns.get(table, {})
            if known and _unchanged(table, rows, known):
                continue
            change = plan(table, (row for _, row in rows), known, self.max_columns)
            new = [n for n in change.left_out if n not in self.left_out.get(table, ())]
            if new:
                self.left_out.setdefault(table, set()).update(new)
            widen = {n: k for n, k in change.widen.items() if (table, n) not in self.frozen}
            if change.add or widen or new:
                yield table, bool(known), change._replace(widen=widen), new


def _unchanged(table: str, rows: list[tuple[int, Row]], known: Mapping[str, ColumnType]
               ) -> bool:
    """``plan`` would change nothing: no new column, and every value of a known column
    that could widen (not text, not fixed) fits it. The common case, checked without
    looking at the text values that are most of a row."""
    present: set[str] = set()
    for _, row in rows:
        present.update(row)
    if not present <= known.keys():
        return False
    fixed = standard_columns(table)
    for name in present:
        kind = known[name]
        if kind is TEXT or name in fixed:
            continue
        for _, row in rows:
            value = row.get(name)
            if value is not None and not fits(value, kind):
                return False
    return True


def outcomes(size: int, rejected: Mapping[int, str], retry: str | None = None
             ) -> list[Outcome]:
    """One outcome per event: rejected positions with their reason; the rest delivered,
    or all retried with ``retry`` as the reason."""
    result: list[Outcome] = [DELIVERED if retry is None else Retry(retry)] * size
    for position, reason in rejected.items():
        result[position] = Rejected(reason)
    return result


def _to_text(value: Any) -> str:
    if type(value) is str:
        return value
    if type(value) is bool:
        return "true" if value else "false"
    return repr(value) if type(value) is float else str(value)


def _to_time(value: Any) -> datetime | None:
    return value if isinstance(value, datetime) else parse_time(value)


CONVERT: dict[ColumnType, Callable[[Any], Any]] = {
    TEXT: _to_text, TIMESTAMP: _to_time, DOUBLE: float, BIGINT: int, BOOLEAN: bool,
}


class Misfit(ValueError):
    """A value that does not fit its column's type (one that could not be widened)."""


def columnar(rows: list[Row], columns: Mapping[str, ColumnType]
             ) -> tuple[list[str], list[list[Any]]]:
    """The rows' values per column (only columns in ``columns`` that some row has),
    converted to the column's Python type: str, datetime, float, int or bool; ``Misfit``
    when a value cannot be."""
    present: set[str] = set()
    for row in rows:
        present.update(row)
    names = [name for name in columns if name in present]
    values = []
    for name in names:
        kind = columns[name]
        if kind is TEXT:  # the common case, inlined
            values.append([v if (v := row.get(name)) is None or type(v) is str else _to_text(v)
                           for row in rows])
            continue
        convert = CONVERT[kind]
        try:
            values.append([None if (v := row.get(name)) is None else convert(v) for row in rows])
        except (TypeError, ValueError):  # a column that could not be widened
            bad = next(v for row in rows if (v := row.get(name)) is not None
                       and not fits(v, kind))
            raise Misfit(f"column {name} is {kind}, it cannot hold {bad!r}") from None
    return names, values


# -- SQL (PostgreSQL and DuckDB share it) ---------------------------------------------------

def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def namespace(*parts: str) -> str:
    """The quoted prefix of every table name: ``"schema"``, or for DuckDB
    ``"catalog"."schema"`` (a file ``events.duckdb`` is a catalog named ``events``)."""
    return ".".join(quote(part) for part in parts)


def create_table_sql(ns: str, table: str, columns: Mapping[str, ColumnType],
                     types: Mapping[ColumnType, str], primary_key: bool = True) -> str:
    body = ", ".join(f"{quote(name)} {types[kind]}"
                     + (" PRIMARY KEY" if name == "id" and primary_key else "")
                     for name, kind in columns.items())
    return f"CREATE TABLE IF NOT EXISTS {ns}.{quote(table)} ({body})"


def add_column_sql(ns: str, table: str, name: str, kind: ColumnType,
                   types: Mapping[ColumnType, str]) -> str:
    return (f"ALTER TABLE {ns}.{quote(table)} "
            f"ADD COLUMN IF NOT EXISTS {quote(name)} {types[kind]}")


def widen_sql(ns: str, table: str, name: str, kind: ColumnType,
              types: Mapping[ColumnType, str]) -> str:
    return (f"ALTER TABLE {ns}.{quote(table)} ALTER COLUMN {quote(name)} "
            f"TYPE {types[kind]} USING CAST({quote(name)} AS {types[kind]})")


def insert_sql(ns: str, table: str, columns: list[str], source: str,
               on_conflict: bool = True) -> str:
    """``INSERT ... <source>`` that skips ids already loaded; ``users`` is upserted:
    a newer identify's non-null values win; an older one (or the same one delivered
    again) only fills nulls, so a redelivery changes nothing. With ``on_conflict`` false
    (a table without a primary key, whose ``source`` leaves loaded ids out itself), a
    plain insert; such a ``users`` table needs its own upsert (DuckDB's: duckdb_users)."""
    names = ", ".join(quote(c) for c in columns)
    if not on_conflict:
        return f"INSERT INTO {ns}.{quote(table)} ({names}) {source}"
    head = f"INSERT INTO {ns}.{quote(table)} ({names}) {source} ON CONFLICT (id) DO "
    if table != "users":
        return head + "NOTHING"
    return head + "UPDATE SET " + _user_updates(columns)


def user_values(columns: list[str], target: str, new: str) -> list[tuple[str, str]]:
    """Each column's value when ``users`` is upserted (the stored row as ``target``, the
    new one as ``new``; none stored: ``target``'s columns are null): the newer identify's
    non-null values win, the latest timestamp stays."""
    ts = quote("timestamp")
    newer = f"{new}.{ts} > {target}.{ts}"
    values = [("timestamp", f"GREATEST({target}.{ts}, {new}.{ts})")]
    for c in columns:
        if c in ("id", "timestamp"):
            continue
        q = quote(c)
        values.append((c, f"CASE WHEN {newer} THEN COALESCE({new}.{q}, {target}.{q}) "
                          f"ELSE COALESCE({target}.{q}, {new}.{q}) END"))
    return values


def _user_updates(columns: list[str]) -> str:
    """``SET`` of an upsert of ``users`` (the row as ``"users"``, the new one as
    ``excluded``): ``user_values``."""
    return ", ".join(f"{quote(c)} = {value}"
                     for c, value in user_values(columns, quote("users"), "excluded"))


def ddl(ns: str, table: str, exists: bool, change: Change,
        types: Mapping[ColumnType, str], primary_key: bool = True) -> list[str]:
    """The statements that create ``table`` or add its new columns (widening is one
    statement per column, ``widen_sql``: one that cannot run must not stop the others)."""
    if not exists:
        return ([create_table_sql(ns, table, change.add, types, primary_key)]
                if change.add else [])
    return [add_column_sql(ns, table, n, k, types) for n, k in change.add.items()]


def catalog_type(data_type: str) -> ColumnType:
    """A catalogue ``data_type`` (PostgreSQL or DuckDB ``information_schema``) as ours."""
    name = data_type.lower()
    if name.startswith("bool"):
        return BOOLEAN
    if re.fullmatch(r"u?(tiny|small|big|huge)?int(eger)?|int[248]", name):
        return BIGINT
    if name in ("double precision", "double", "real", "float") or name.startswith(
            ("numeric", "decimal")):
        return DOUBLE
    return TIMESTAMP if name.startswith("timestamp") else TEXT
