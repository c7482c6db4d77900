"""The DuckDB loader (connector ``destinations.duckdb_wh``): one connection, one batch at
a time, in a child process by default. A batch whose columns exist with types that fit is
loaded by SQL alone (``duckdb_set``); any other row by row: DDL as needed, then per table
one ``INSERT ... SELECT ... FROM read_json(<file of rows>)`` leaving out loaded ids
(``users``: ``duckdb_users.upsert_users``). A data error bisects the batch to reject only
its culprits."""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import orjson

from destinations import duckdb_set
from destinations.base import Event
from destinations.duckdb_plan import Unsupported
from destinations.duckdb_set import rows_within, transaction, unloaded
from destinations.duckdb_users import upsert_users
from destinations.duckdb_wh import Settings
from router.delivery.outcome import Outcome
from router.events import json_array
from router.warehouse import (
    BIGINT,
    BOOLEAN,
    DOUBLE,
    TEXT,
    TIMESTAMP,
    ColumnType,
    Known,
    Misfit,
    Row,
    Tables,
    batch_rows,
    catalog_type,
    columnar,
    ddl,
    insert_sql,
    merge_users,
    namespace,
    outcomes,
    quote,
    widen_sql,
)

log = logging.getLogger(__name__)

TYPES = {BOOLEAN: "BOOLEAN", BIGINT: "BIGINT", DOUBLE: "DOUBLE",
         TIMESTAMP: "TIMESTAMP WITH TIME ZONE", TEXT: "VARCHAR"}
# A value DuckDB refuses (conversion, range, constraint), or one no column can hold.
DATA_ERRORS = (duckdb.DataError, duckdb.IntegrityError, Misfit)
TRANSIENT = (duckdb.Error, OSError)
CANNOT_WIDEN = (duckdb.DependencyException, duckdb.NotImplementedException,
                duckdb.ConversionException)


class DuckDBSender:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.schema = settings.schema_name
        self.ns = namespace(self.schema)  # with the catalog once connected
        self.con: duckdb.DuckDBPyConnection | None = None
        self.known = Known(settings.max_columns)
        self._lock = asyncio.Lock()  # one batch at a time on the one connection
        self.takes_raw = True  # send(events, raws): the records' bytes where unchanged
        self.last_load = ""  # how the last batch was loaded ("sql" or "rows")
        self.on_load: Callable[[str], None] | None = None  # the router's counter
        # the SQL load needs ~45 MB + 6x the batch (18 MB failed at 128MB): wider, row by row
        self.set_max_bytes = max(0, settings.memory_limit_bytes() - 48_000_000) // 8

    async def start(self) -> None:
        async with self._lock:
            try:
                await asyncio.to_thread(self._connect)
            except TRANSIENT as exc:  # e.g. another process holds the file: retry later
                log.warning("DuckDB %s cannot be opened yet (%s); batches will retry.",
                            self.settings.path, exc)

    async def close(self) -> None:
        async with self._lock:
            await asyncio.to_thread(self.close_sync)

    async def send(self, events: list[Event], raws: list[bytes | None] | None = None
                   ) -> list[Outcome]:
        payload = json_array(events, raws)
        async with self._lock:
            outcomes = await asyncio.to_thread(self.send_json, payload)
            if self.on_load is not None:
                self.on_load(self.last_load)
            return outcomes

    def close_sync(self) -> None:
        if self.con is not None:
            self.con.close()
            self.con = None

    def _connect(self) -> duckdb.DuckDBPyConnection:
        Path(self.settings.path).parent.mkdir(parents=True, exist_ok=True)
        con = duckdb.connect(self.settings.path, config={
            "threads": self.settings.threads, "memory_limit": self.settings.memory_limit,
            "checkpoint_threshold": self.settings.checkpoint_threshold})
        # Qualify with the catalog: the file events.duckdb is a catalog named "events".
        [(catalog,)] = con.execute("SELECT current_database()").fetchall()
        self.ns = namespace(catalog, self.schema)
        self.con = con
        return con

    def send_json(self, payload: bytes) -> list[Outcome]:
        """``send_file`` of a batch given as one JSON array."""
        with tempfile.NamedTemporaryFile(prefix="event-router-", suffix=".json") as file:
            file.write(payload)
            file.flush()
            return self.send_file(file.name)

    def send_file(self, path: str) -> list[Outcome]:
        """The batch in ``path`` (a JSON array): by SQL when it can be, else row by row."""
        fits = os.path.getsize(path) <= self.set_max_bytes
        loaded = self._load_set(path) if fits else None
        self.last_load = "rows" if loaded is None else "sql"
        if loaded is None:
            return self.send_sync(orjson.loads(Path(path).read_bytes()))
        return outcomes(loaded, {})

    def _load_set(self, path: str) -> int | None:
        """The batch's size, or None (nothing loaded) when it needs the row-by-row load."""
        try:
            con = self.con or self._connect()
            if self.known.columns is None:
                self._evolve(con, {})  # reads the catalogue
            return duckdb_set.load(con, self.ns, path, datetime.now(UTC), self.known.columns
                                   or {}, self.known.left_out, self.settings.event_tables)
        except (Unsupported, *TRANSIENT) as exc:  # the row path retries what is transient
            log.debug("Batch loaded row by row: %s", exc)
            return None

    def send_sync(self, events: list[Event]) -> list[Outcome]:
        tables, rejected = batch_rows(events, datetime.now(UTC), self.settings.event_tables)
        try:
            if tables:
                con = self.con or self._connect()
                self._evolve(con, tables)
                bad: dict[int, str] = {}
                self._try(con, tables, sorted({p for r in tables.values() for p, _ in r}), bad)
                rejected.update((p, f"DuckDB refused the row: {r}") for p, r in bad.items())
        except TRANSIENT as exc:
            self.known.columns = None  # read the catalogue again on the next batch
            return outcomes(len(events), rejected, f"DuckDB: {type(exc).__name__}: {exc}")
        return outcomes(len(events), rejected)

    def _evolve(self, con: duckdb.DuckDBPyConnection, tables: Tables) -> None:
        """Create, add and widen what this batch needs; then re-read those tables."""
        if self.known.columns is None:
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {self.ns}")
            self.known.columns = self._catalog(con)
        for table, exists, change, left_out in list(self.known.changes(tables)):
            if left_out:
                log.warning("Table %s.%s is at its %d-column cap; values of %s are not loaded.",
                            self.schema, table, self.known.max_columns, ", ".join(left_out))
            for sql in ddl(self.ns, table, exists, change, TYPES, primary_key=False):
                con.execute(sql)
            for name, kind in change.widen.items():
                try:
                    con.execute(widen_sql(self.ns, table, name, kind, TYPES))
                except duckdb.Error as exc:
                    if not (isinstance(exc, CANNOT_WIDEN) or "depends on" in str(exc)):
                        raise  # e.g. "an index depends on it" is for good; the rest retries
                    self.known.frozen.add((table, name))
                    log.warning("Column %s.%s cannot widen to %s (%s); values that do not "
                                "fit it are rejected.", table, name, TYPES[kind], exc)
            if change.add or change.widen:
                self.known.columns[table] = self._catalog(con, table).get(table, {})

    def _catalog(self, con: duckdb.DuckDBPyConnection, table: str | None = None
                 ) -> dict[str, dict[str, ColumnType]]:
        query = ("SELECT table_name, column_name, data_type FROM information_schema.columns "
                 "WHERE table_catalog = current_database() AND table_schema = ? "
                 "AND (CAST(? AS VARCHAR) IS NULL OR table_name = ?) "
                 "ORDER BY table_name, ordinal_position")
        columns: dict[str, dict[str, ColumnType]] = {}
        for name, column, data_type in con.execute(query, [self.schema, table, table]).fetchall():
            columns.setdefault(name, {})[column] = catalog_type(data_type)
        return columns

    def _try(self, con: duckdb.DuckDBPyConnection, tables: Tables, positions: list[int],
             bad: dict[int, str]) -> None:
        """Load ``positions`` in one transaction; on a data error, bisect."""
        try:
            self._transaction(con, tables, set(positions))
        except DATA_ERRORS as exc:
            if len(positions) == 1:
                bad[positions[0]] = str(exc)
                return
            half = len(positions) // 2
            self._try(con, tables, positions[:half], bad)
            self._try(con, tables, positions[half:], bad)

    def _transaction(self, con: duckdb.DuckDBPyConnection, tables: Tables, only: set[int]
                     ) -> None:
        with transaction(con):
            columns = self.known.columns or {}
            for table in sorted(tables):
                rows = [row for p, row in tables[table] if p in only]
                if rows:
                    self._insert(con, table, rows, columns.get(table, {}))

    def _insert(self, con: duckdb.DuckDBPyConnection, table: str, rows: list[Row],
                kinds: dict[str, ColumnType]) -> None:
        """One bulk statement through a JSON file that ``read_json`` reads with the
        table's column types (5,000 rows of 36 columns: 0.07 s; 7 s with executemany).
        DuckDB refusing a value: ``columnar`` names it (``Misfit``). Loaded ids are left
        out by an anti-join, ``users`` upserted (``upsert_users``, docs/warehouses.md)."""
        if table == "users":
            rows = merge_users(rows)
        elif len({row["id"] for row in rows}) < len(rows):  # a repeat within the batch
            rows = list({row["id"]: row for row in reversed(rows)}.values())
        present: set[str] = set()
        for row in rows:
            present.update(row)
        names = [name for name in kinds if name in present]
        types = ", ".join(f"'{n}': '{TYPES[kinds[n]]}'" for n in names)
        source = (f"SELECT {', '.join(quote(n) for n in names)} FROM "
                  f"read_json(?, format = 'array', columns = {{{types}}}) AS new")
        fd, path = tempfile.mkstemp(prefix="event-router-", suffix=".json")
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(orjson.dumps(rows))
            if table == "users":
                upsert_users(con, self.ns, names, source, [path])
            else:
                con.execute(insert_sql(self.ns, table, names, source + unloaded(
                    self.ns, table, rows_within(rows)), on_conflict=False), [path])
        except duckdb.InvalidInputException:
            columnar(rows, kinds)  # raises Misfit naming the culprit (the batch then bisects)
            raise
        finally:
            os.unlink(path)
