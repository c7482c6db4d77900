"""DuckDB's set-based load (``destinations.duckdb_plan``) against the row-by-row load.

The row-by-row path is the reference (``router.warehouse``, tested on its own in
test_duckdb.py and test_postgres.py): the same batches loaded both ways must leave the
same tables, the same columns and types, and the same values, whichever path each batch
took.
"""

from __future__ import annotations

import copy
import itertools
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from destinations import duckdb_load
from destinations.duckdb_load import DuckDBSender
from destinations.duckdb_wh import Settings
from router.demo import generate
from router.events import decode

NOW = datetime(2026, 11, 24, 12, 0, 0, 123456, tzinfo=UTC)


class FixedClock(datetime):
    @classmethod
    def now(cls, tz: Any = None) -> datetime:  # type: ignore[override]
        return NOW


@pytest.fixture(autouse=True)
def same_load_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """``uuid_ts`` (and ``received_at`` without receivedAt) is the load time: fixed here."""
    monkeypatch.setattr(duckdb_load, "datetime", FixedClock)


def senders(tmp_path: Path, **settings: Any) -> tuple[DuckDBSender, DuckDBSender]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    return tuple(DuckDBSender(Settings.model_validate(  # type: ignore[return-value]
        {"path": str(tmp_path / name), **settings})) for name in ("set.duckdb", "rows.duckdb"))


def load_both(batches: list[list[dict[str, Any]]], fast: DuckDBSender,
              rows: DuckDBSender) -> Counter[str]:
    """Each batch both ways; how ``fast`` loaded them (sql or rows)."""
    loads: Counter[str] = Counter()
    for batch in batches:
        payload = orjson.dumps(batch)
        assert fast.send_json(payload) == rows.send_sync(orjson.loads(payload))
        loads[fast.last_load] += 1
    return loads


def contents(sender: DuckDBSender) -> dict[str, tuple[list[tuple[str, str]], list[Any]]]:
    """Every table: its columns with their types, and its rows as text, sorted (none
    when no batch had a valid event, so that the sender never opened the file)."""
    if sender.con is None:
        return {}
    con = sender.con
    tables: dict[str, tuple[list[tuple[str, str]], list[Any]]] = {}
    for (table,) in con.execute("SELECT table_name FROM information_schema.tables WHERE "
                                "table_schema = 'events' ORDER BY 1").fetchall():
        cols = con.execute("SELECT column_name, data_type FROM information_schema.columns "
                           "WHERE table_schema = 'events' AND table_name = ? "
                           "ORDER BY ordinal_position", [table]).fetchall()
        text = ", ".join(f'CAST("{name}" AS VARCHAR)' for name, _ in cols)
        tables[table] = (cols, [tuple(map(_array, row)) for row in con.execute(
            f'SELECT {text} FROM events."{table}" ORDER BY ALL').fetchall()])
    return tables


def _array(value: str | None) -> Any:
    """An array's JSON text as its value: the SQL load writes DuckDB's JSON of it, the row
    load orjson's, which differ in how they write some numbers (1e16 or 10000000000000000.0)."""
    if value and value.startswith("["):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            pass
    return value


@pytest.mark.parametrize("event_tables", [True, False])
def test_a_steady_stream_loads_by_sql_and_lands_as_row_by_row(tmp_path: Path,
                                                              event_tables: bool) -> None:
    events = list(generate(3000, seed=11))
    batches = [events[i:i + 1000] for i in range(0, 3000, 1000)]
    batches.append(events[500:1500] + events[2500:])  # redelivered, also twice in one batch
    fast, rows = senders(tmp_path, event_tables=event_tables)
    assert load_both(batches, fast, rows) == {"sql": 3, "rows": 1}  # the first: DDL
    tables = contents(fast)
    assert tables == contents(rows)
    assert len(tables["tracks"][1]) == sum(e["type"] == "track" for e in events)
    assert ("order_completed" in tables) is event_tables


def test_a_batch_needing_a_new_column_loads_row_by_row(tmp_path: Path) -> None:
    events = list(generate(200, seed=3))
    fast, rows = senders(tmp_path)
    changed = copy.deepcopy(events[100:])
    for event in changed:
        event.setdefault("properties", {})["coupon"] = "SPRING"
    changed[0]["properties"]["price"] = "free"  # a string where the column is double
    assert load_both([events[:100], changed, events[:100]], fast, rows) == {"sql": 1,
                                                                            "rows": 2}
    assert contents(fast) == contents(rows)


def test_odd_keys_get_the_same_columns_both_ways(tmp_path: Path) -> None:
    """Named by the shared rules (go-snakecase once; "_" + a hash when nothing is ASCII)."""
    def batch(offset: int) -> list[dict[str, Any]]:
        return [{"type": "track", "event": "sample_2Text", "messageId": f"m-{offset + i}",
                 "timestamp": "2026-11-20T10:00:00Z",
                 "properties": {"sample_2Text": i, "名前": "x", "meta": {"名前": "y"}}}
                for i in range(3)]
    fast, rows = senders(tmp_path)
    assert load_both([batch(0), batch(10)], fast, rows) == {"rows": 1, "sql": 1}
    tables = contents(fast)
    assert tables == contents(rows)
    columns = [name for name, _ in tables["sample__2text"][0]]
    assert columns[-3:] == ["sample__2text", "_d54d12f9", "meta_d54d12f9"]


KEYS = st.sampled_from(["a", "A", "b", "orderId", "order_id", "id", "event", "timestamp",
                        "context_x", "name", "Name", "select", "x y", "价格", 'q"t', "it's",
                        "a.b", "userId", "received_at"])
TIMES = st.sampled_from(["2026-11-20T10:00:00Z", "2026-11-20T10:00:00.5+01:00",
                         "2026-11-20 10:00", "2026-11-20T10:00:00", "2024-02-30T00:00:00Z",
                         "2026-11-19T23:59:59.999999-05:30"])
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1),
                    st.floats(allow_nan=False, allow_infinity=False), TIMES,
                    st.sampled_from(["", "x", "Ü", "24:00", "1e3", 'q"\\\n\u2028']),
                    st.text(max_size=4))
VALUES = st.one_of(SCALARS, st.lists(SCALARS, max_size=3),
                   st.dictionaries(KEYS, SCALARS, max_size=3))
OBJECTS = st.dictionaries(KEYS, VALUES, max_size=4)
IDS = st.one_of(st.none(), st.sampled_from(["u-1", "u-2", ""]), st.integers(0, 2**62))


@st.composite
def events(draw: Any) -> dict[str, Any]:
    kind = draw(st.sampled_from(["track", "track", "identify", "page", "screen", "group",
                                 "alias"]))
    event: dict[str, Any] = {"type": kind, "userId": draw(IDS), "anonymousId": "anon-1",
                             "context": draw(st.one_of(st.just({}), OBJECTS))}
    for key in draw(st.sets(st.sampled_from(["timestamp", "sentAt", "receivedAt",
                                             "originalTimestamp"]))):
        event[key] = draw(TIMES.filter(lambda t: not t.startswith("2024")))
    event["properties" if kind in ("track", "page", "screen") else "traits"] = draw(OBJECTS)
    if kind == "track":
        event["event"] = draw(st.sampled_from(["Order Completed", "order_completed", "Viewed"]))
    elif kind in ("page", "screen"):
        event.update(draw(st.dictionaries(st.sampled_from(["name", "category"]),
                                          st.one_of(st.text(max_size=3),
                                                    st.integers(-(2**63), 2**63 - 1)))))
    elif kind == "group":
        event["groupId"] = draw(st.one_of(st.just("co-1"), st.integers(0, 9)))
    elif kind == "alias":
        event["previousId"] = "old-1"
    return event


def valid(batch: list[dict[str, Any]], offset: int) -> list[dict[str, Any]]:
    """As the router hands them over: decoded (messageId, timestamp filled), else left out."""
    out = []
    for i, event in enumerate(batch):
        decoded = decode(orjson.dumps({"messageId": f"m-{offset + i}", **event}), 0)
        if isinstance(decoded, dict):
            out.append(decoded)
    return out


def same_shapes(data: Any, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The events again with other values of any scalar type where they had scalars:
    the same columns, other types (a text column given numbers, a time column text)."""
    def redraw(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: redraw(item) for key, item in value.items()}
        if isinstance(value, list) or not data.draw(st.booleans()):
            return value
        return data.draw(SCALARS)
    return [{key: redraw(value) if key in ("context", "properties", "traits") else value
             for key, value in event.items()} for event in batch]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
          HealthCheck.function_scoped_fixture])
@given(first=st.lists(events(), min_size=1, max_size=6),
       later=st.lists(events(), max_size=6), data=st.data())
def test_any_batch_lands_as_row_by_row(tmp_path_factory: pytest.TempPathFactory,
                                       first: list[dict[str, Any]],
                                       later: list[dict[str, Any]], data: Any) -> None:
    """The same events again (a set load, unless the shape is ambiguous) with some of
    them redelivered; the same shapes with other values; then new events (new columns:
    row by row)."""
    counter = itertools.count()
    base = valid(first, next(counter) * 100)
    again = valid(first, next(counter) * 100)
    other = valid(same_shapes(data, first), next(counter) * 100)
    fast, rows = senders(tmp_path_factory.mktemp("set"))
    try:
        load_both([base, again + base[:2], other,
                   valid(later, next(counter) * 100) + again[:1]], fast, rows)
        assert contents(fast) == contents(rows)
    finally:
        fast.close_sync()
        rows.close_sync()


def test_a_batch_too_wide_for_the_memory_limit_loads_row_by_row(tmp_path: Path) -> None:
    assert senders(tmp_path / "a")[0].set_max_bytes == 10_000_000  # 128MB: 18 MB failed
    assert senders(tmp_path / "b", memory_limit="64MB")[0].set_max_bytes == 2_000_000
    fast, rows = senders(tmp_path / "c")
    fast.set_max_bytes = 100_000
    events = list(generate(400, seed=5))
    for i, event in enumerate(events):  # the same shape throughout, wide from 200 on
        event["properties"] = {**event.get("properties", {}),
                               "note": "x" * (1000 if i >= 200 else 10)}
    assert load_both([events[:100], events[100:200], events[200:]], fast, rows) == {
        "sql": 1, "rows": 2}
    assert contents(fast) == contents(rows)


async def test_the_sender_tells_the_router_how_each_batch_loaded(tmp_path: Path) -> None:
    sender = DuckDBSender(Settings.model_validate({"path": str(tmp_path / "x.duckdb")}))
    seen: list[str] = []
    sender.on_load = seen.append
    events = list(generate(200, seed=1))
    try:
        await sender.send(events[:100])  # creates the tables
        await sender.send(events[100:], [orjson.dumps(e) for e in events[100:]])  # raw
        assert seen == ["rows", "sql"]
    finally:
        await sender.close()
