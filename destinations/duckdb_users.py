"""DuckDB's ``users`` upsert, for both loads (``duckdb_set`` by SQL, ``duckdb_load`` row
by row): ``users`` has no key in DuckDB (docs/warehouses.md), so no ``ON CONFLICT``."""

from __future__ import annotations

from typing import Any

import duckdb

from router.warehouse import quote, user_values


def upsert_users(con: duckdb.DuckDBPyConnection, ns: str, columns: list[str], source: str,
                 params: list[Any] | None = None) -> None:
    """Upsert ``source``'s rows (one per user, ``columns``) into ``users`` by the rules of
    ``user_values``: the stored rows of those users are read, deleted, and inserted again
    merged with the new ones (with the columns the batch does not have as they were).

    Not a ``MERGE``/``UPDATE``: ``users`` has no index (see docs/warehouses.md), and
    DuckDB updating text values in place costs ~0.7 ms per row spread over the table
    (500 active users among 1M: ~400 ms per batch); a delete and an insert cost ~8 ms,
    plus one read of the ``id`` column (~30 ms per million users). Runs inside the
    caller's transaction."""
    users = f"{ns}.{quote('users')}"
    con.execute(f"CREATE OR REPLACE TEMP TABLE users_new AS {source}", params)
    con.execute(f"CREATE OR REPLACE TEMP TABLE users_old AS SELECT rowid AS {ROWID}, * "
                f"FROM {users} WHERE id IN (SELECT id FROM temp.users_new)")
    con.execute(f"DELETE FROM {users} WHERE rowid IN (SELECT {ROWID} FROM temp.users_old)")
    kept = ", ".join([ROWID, *map(quote, columns)])
    merged = ", ".join(["excluded.id AS id", *(
        f"{value} AS {quote(c)}" for c, value in user_values(columns, '"users"', "excluded"))])
    con.execute(f'INSERT INTO {users} BY NAME SELECT "users".* EXCLUDE ({kept}), {merged} '
                'FROM temp.users_new AS excluded LEFT JOIN temp.users_old AS "users" '
                'ON "users".id = excluded.id')
    con.execute("DROP TABLE temp.users_new; DROP TABLE temp.users_old")


ROWID = '"#rowid"'  # never a column's name: those are [a-z0-9_] (router.warehouse)
