"""DuckDB (type ``duckdb``; the module name never shadows the library): an embedded file
with Segment's warehouse schema, as the PostgreSQL connector has it (``router.warehouse``).

The loader (``destinations.duckdb_load``) runs in a child process by default
(``own_process``), so the router's own process never imports DuckDB.
"""

from __future__ import annotations

import re

from pydantic import Field

from destinations.base import Connector, ConnectorSettings, Limits
from router.delivery.offload import ProcessSender, load_attr
from router.warehouse import preview

LOADER = "destinations.duckdb_load:DuckDBSender"
SIZE = r"^\d+(\.\d+)?\s*[KMGT]i?B$"


class Settings(ConnectorSettings):
    path: str = Field("data/events.duckdb", description="The database file; created (with "
                      "its directory) when missing. Only one process may write to it.")
    schema_name: str = Field("events", alias="schema", description="Schema the tables live "
                             "in (Segment uses one per source); created when missing.")
    max_columns: int = Field(1000, ge=20, le=10_000, description="Columns per table at most; "
                             "new properties beyond it are left out of the row, which still "
                             "loads.")
    event_tables: bool = Field(True, description="Also load each track into its own "
                               "per-event table (`order_completed`), as Segment does.")
    threads: int = Field(1, ge=1, le=64, description="DuckDB worker threads; 1 leaves the "
                         "other cores to the router (DuckDB's default is every core).")
    own_process: bool = Field(True, description="Load in a child process, on another core "
                              "than the router's event loop.")
    memory_limit: str = Field("128MB", pattern=SIZE,
                              description="DuckDB's memory limit (its default is 80% of RAM).")
    checkpoint_threshold: str = Field("64MB", pattern=SIZE, description=(
        "WAL size that triggers a checkpoint (DuckDB's 16MB checkpoints too often here)."))

    def memory_limit_bytes(self) -> int:
        """``memory_limit`` in bytes (KB, MB, ... are powers of 1000; KiB, MiB of 1024)."""
        number, unit, binary = re.fullmatch(  # type: ignore[union-attr]
            r"(\d+(?:\.\d+)?)\s*([KMGT])(i?)B", self.memory_limit).groups()
        return int(float(number) * (1024 if binary else 1000) ** ("KMGT".index(unit) + 1))


CONNECTOR = Connector(
    name="duckdb",
    display_name="DuckDB",
    warehouse=True,
    settings=Settings,
    # 5,000 events a batch unless set: larger batches cost the loader less per event
    # (~21% less at 8,000) and the router more memory (~60 MB at 8,000): docs/warehouses.md
    limits=Limits(max_events=20_000, max_bytes=20_000_000, max_wait_ms=10_000,
                  default_events=5000),
    preview=preview,
    sender=lambda settings: (ProcessSender(LOADER, settings) if settings.own_process
                             else load_attr(LOADER)(settings)),
    docs="""An embedded DuckDB file with Segment's warehouse schema — the same tables,
columns and semantics as PostgreSQL: `id` = `messageId` (redelivery adds no rows; no
table has an index, so memory stays flat), `users` upserted by `userId` with the latest
traits, new properties add columns, type conflicts widen columns and never fail a load.
See docs/warehouses.md.""",
)
