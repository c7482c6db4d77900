"""PostgreSQL: events land in Segment's warehouse schema (``router.warehouse``).

Each batch, on one pooled connection:

1. rows are grouped by table; missing tables and columns are created (``CREATE TABLE IF
   NOT EXISTS`` / ``ADD COLUMN IF NOT EXISTS``) and conflicting columns widened, in a
   short transaction of their own; the known columns are cached per table, read from
   ``information_schema`` once and again only after a change;
2. one transaction loads every table: ``COPY`` into a temp staging table, then
   ``INSERT ... SELECT ... ON CONFLICT (id) DO NOTHING`` (``users``: an upsert), so a
   batch delivered twice adds nothing.

Connection and server trouble retries the whole batch. A data error (a value PostgreSQL
refuses) rolls the transaction back; the batch is then bisected under savepoints until
the offending events are found, and only those are rejected.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
from pydantic import Field, SecretStr, field_validator

from destinations.base import Connector, ConnectorSettings, Event, Limits
from router.delivery.outcome import Outcome
from router.warehouse import (
    BIGINT,
    BOOLEAN,
    DOUBLE,
    MAX_NAME,
    TEXT,
    TIMESTAMP,
    Change,
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
    preview,
    quote,
    widen_sql,
)

log = logging.getLogger(__name__)

TYPES = {BOOLEAN: "boolean", BIGINT: "bigint", DOUBLE: "double precision",
         TIMESTAMP: "timestamp with time zone", TEXT: "text"}
# A value PostgreSQL refuses (class 22 data exception, 23 constraint, 54 a limit: a value
# too big for an index entry), or one that does not fit a column that could not widen.
# Each fails again however often it is retried: only its events are rejected.
DATA_ERRORS = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError,
               asyncpg.ProgramLimitExceededError, Misfit)
TRANSIENT = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)
# ALTER COLUMN TYPE refused for good: a view or rule uses the column, or it is indexed oddly.
CANNOT_WIDEN = (asyncpg.FeatureNotSupportedError, asyncpg.DependentObjectsStillExistError,
                asyncpg.DatatypeMismatchError, asyncpg.CannotCoerceError)
# DDL waits at most this long for its lock: a waiting ALTER would block every reader queued
# behind it; on timeout the batch retries later instead.
LOCK_TIMEOUT = "SET LOCAL lock_timeout = '5s'"
COMMAND_TIMEOUT_S = 300


class Settings(ConnectorSettings):
    dsn: SecretStr = Field(description="Connection string, "
                           "`postgresql://user:password@host:5432/database`.")
    schema_name: str = Field("events", alias="schema", description="Schema the tables live "
                             "in (Segment uses one per source); created when missing.")
    max_columns: int = Field(1000, ge=20, le=1600, description="Columns per table at most "
                             "(PostgreSQL's hard limit is 1600); new properties beyond it are "
                             "left out of the row, which still loads.")
    event_tables: bool = Field(True, description="Also load each track into its own "
                               "per-event table (`order_completed`), as Segment does.")
    pool_size: int = Field(4, ge=1, le=100, description="Connections in the pool.")

    @field_validator("schema_name")
    @classmethod
    def _fits_postgres(cls, name: str) -> str:
        # PostgreSQL refuses a longer name: every batch would retry until dead-lettered
        if not 0 < len(name.encode()) <= MAX_NAME:
            raise ValueError(f"schema must be 1 to {MAX_NAME} bytes (PostgreSQL's limit)")
        return name


class PostgresSender:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.schema = settings.schema_name
        self.ns = namespace(self.schema)
        self.pool: asyncpg.Pool | None = None
        self.known = Known(settings.max_columns)
        self._ddl = asyncio.Lock()
        # One batch at a time: concurrent loads raced on the column cache (a batch's COPY
        # met a staging shape another batch had just changed) and gained little.
        self._one = asyncio.Lock()
        self.max_concurrency = 1  # so the engine holds further batches, not this lock
        # send(events, raws): an event that is exactly its record's bytes comes as those
        # bytes and is decoded in the flattening thread, so the router does not keep its
        # dict while the batch waits (5,000 events a batch)
        self.takes_raw = True

    async def start(self) -> None:
        try:
            await self._connect()
        except TRANSIENT as exc:  # a warehouse that is down must not stop the router
            log.warning("PostgreSQL is not reachable yet (%s); batches will retry.", exc)

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()
            self.pool = None

    async def send(self, events: list[Event | None], raws: list[bytes | None] | None = None
                   ) -> list[Outcome]:
        # Decoding and flattening are pure CPU: off the event loop.
        tables, rejected = await asyncio.to_thread(self._rows, events, raws)
        try:
            if tables:
                pool = self.pool or await self._connect()
                async with self._one, pool.acquire() as conn:
                    await self._evolve(conn, tables)
                    bad = await self._load_batch(conn, tables)
                rejected.update((p, f"PostgreSQL refused the row: {r}") for p, r in bad.items())
        except TRANSIENT as exc:
            self.known.columns = None  # the catalogue may have changed under us
            return outcomes(len(events), rejected, f"PostgreSQL: {type(exc).__name__}: {exc}")
        return outcomes(len(events), rejected)

    def _rows(self, events: list[Event | None], raws: list[bytes | None] | None
              ) -> tuple[Tables, dict[int, str]]:
        if raws is not None:
            events = [orjson.loads(raw) if event is None else event  # type: ignore[arg-type]
                      for event, raw in zip(events, raws, strict=True)]
        return batch_rows(events, datetime.now(UTC), self.settings.event_tables)  # type: ignore[arg-type]

    async def _connect(self) -> asyncpg.Pool:
        self.pool = await asyncpg.create_pool(
            self.settings.dsn.get_secret_value(), min_size=1, max_size=self.settings.pool_size,
            timeout=10, command_timeout=COMMAND_TIMEOUT_S,
            server_settings={"application_name": "event-router", "timezone": "UTC"})
        return self.pool

    async def _evolve(self, conn: Any, tables: Tables) -> None:
        """Create, add and widen what this batch needs; then re-read those tables."""
        async with self._ddl:
            if self.known.columns is None:
                # Look first: CREATE SCHEMA IF NOT EXISTS needs a privilege the role may lack.
                if not await conn.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = $1",
                                           self.schema):
                    await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {self.ns}")
                self.known.columns = await self._catalog(conn)
            # Planned again on the tables as read back: another router may have made one
            # (CREATE TABLE IF NOT EXISTS is then a no-op) without this batch's columns, or
            # a column of a type its values do not fit (ADD COLUMN IF NOT EXISTS keeps it).
            # Loaded as they are, those values would be left out, or rejected.
            for _ in range(3):
                changes = list(self.known.changes(tables))
                for table, exists, change, left_out in changes:
                    await self._change(conn, table, exists, change, left_out)
                if not any(change.add or change.widen for _, _, change, _ in changes):
                    break

    async def _change(self, conn: Any, table: str, exists: bool, change: Change,
                      left_out: list[str]) -> None:
        assert self.known.columns is not None
        if left_out:
            log.warning("Table %s.%s is at its %d-column cap; values of %s are not "
                        "loaded.", self.schema, table, self.known.max_columns,
                        ", ".join(left_out))
        if change.add:
            async with conn.transaction():
                await conn.execute(LOCK_TIMEOUT)
                for sql in ddl(self.ns, table, exists, change, TYPES):
                    await conn.execute(sql)
        for name, kind in change.widen.items():
            try:
                async with conn.transaction():
                    await conn.execute(LOCK_TIMEOUT)
                    await conn.execute(widen_sql(self.ns, table, name, kind, TYPES))
            except CANNOT_WIDEN as exc:
                self.known.frozen.add((table, name))
                log.warning("Column %s.%s cannot widen to %s (%s); values that do not "
                            "fit it are rejected.", table, name, TYPES[kind], exc)
        if change.add or change.widen:
            self.known.columns[table] = (await self._catalog(conn, table)).get(table, {})

    async def _catalog(self, conn: Any, table: str | None = None
                       ) -> dict[str, dict[str, ColumnType]]:
        query = ("SELECT table_name, column_name, data_type FROM information_schema.columns "
                 "WHERE table_schema = $1 AND ($2::text IS NULL OR table_name = $2) "
                 "ORDER BY table_name, ordinal_position")
        columns: dict[str, dict[str, ColumnType]] = {}
        for record in await conn.fetch(query, self.schema, table):
            columns.setdefault(record[0], {})[record[1]] = catalog_type(record[2])
        return columns

    async def _load_batch(self, conn: Any, tables: Tables) -> dict[int, str]:
        """Load in one transaction; on a data error, find the events at fault."""
        try:
            async with conn.transaction():
                await self._load(conn, tables, None)
            return {}
        except DATA_ERRORS as exc:
            error = exc
        bad: dict[int, str] = {}
        async with conn.transaction():
            positions = sorted({p for rows in tables.values() for p, _ in rows})
            await self._bisect(conn, tables, positions, error, bad)
        return bad

    async def _bisect(self, conn: Any, tables: Tables, positions: list[int],
                      error: Exception, bad: dict[int, str]) -> None:
        """``positions`` failed with ``error``: load each half under a savepoint and split
        the halves that fail, down to the single events at fault."""
        if len(positions) == 1:
            bad[positions[0]] = str(error)
            return
        half = len(positions) // 2
        for part in (positions[:half], positions[half:]):
            try:
                async with conn.transaction():  # a savepoint
                    await self._load(conn, tables, set(part))
            except DATA_ERRORS as exc:
                await self._bisect(conn, tables, part, exc, bad)

    async def _load(self, conn: Any, tables: Tables, only: set[int] | None) -> None:
        for table in sorted(tables):  # one order for every batch: fewer lock waits
            rows = [row for p, row in tables[table] if only is None or p in only]
            if table == "users":
                rows = merge_users(rows)
            if rows:
                await self._copy_insert(conn, table, rows)

    async def _copy_insert(self, conn: Any, table: str, rows: list[Row]) -> None:
        kinds = (self.known.columns or {}).get(table, {})
        names, values = columnar(rows, kinds)
        staged = [kinds[n] for n in names]
        for i, kind in enumerate(staged):
            if kind is TIMESTAMP and _edge(values[i]):
                staged[i], values[i] = TEXT, [None if v is None else v.isoformat()
                                              for v in values[i]]
        shape = ",".join(f"{n} {kind}" for n, kind in zip(names, staged, strict=True))
        # One staging name per shape: asyncpg caches the COPY column codecs by table name.
        stage = "stage_" + hashlib.sha1(f"{table}:{shape}".encode()).hexdigest()[:16]
        columns = ", ".join(f"{quote(n)} {TYPES[kind]}"
                            for n, kind in zip(names, staged, strict=True))
        await conn.execute(f"CREATE TEMP TABLE {stage} ({columns}) ON COMMIT DROP")
        records = list(zip(*values, strict=True))
        await conn.copy_records_to_table(stage, records=records, columns=names)
        select = "SELECT " + ", ".join(
            quote(n) if kind is kinds[n] else f"CAST({quote(n)} AS {TYPES[kinds[n]]})"
            for n, kind in zip(names, staged, strict=True)) + f" FROM {stage}"
        await conn.execute(f"{insert_sql(self.ns, table, names, select)}; DROP TABLE {stage}")


def _edge(times: list[datetime | None]) -> bool:
    """Whether a time may be out of Python's range in UTC, which asyncpg converts it to
    (``0001-01-01T00:00:00+02:00``: .NET's DateTimeOffset.MinValue with a local offset);
    the column is then staged as ISO text, for PostgreSQL (whose range is wider) to
    convert. ~0.3 ms per 5,000 times."""
    years = {t.year for t in times if t is not None}
    return 1 in years or 9999 in years


CONNECTOR = Connector(
    name="postgres",
    display_name="PostgreSQL",
    other_names=("Postgres",),  # Segment's catalog name
    warehouse=True,
    settings=Settings,
    limits=Limits(max_events=5000, max_bytes=20_000_000, max_wait_ms=10_000),
    sender=PostgresSender,
    preview=preview,
    docs="""Loads Segment's warehouse schema: `tracks`, one table per track event,
`identifies`, `users`, `pages`, `screens`, `groups`, `aliases`; `id` is the `messageId`
(primary key), so redelivery adds no rows; `users` is keyed by `userId` and keeps the
latest traits. New properties add columns; type conflicts widen columns
(bigint -> double precision -> text) and never fail a load. See docs/warehouses.md.""",
)
