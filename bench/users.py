"""python -m bench.users: how the DuckDB load of a batch grows with the `users` table.

Every identify upserts its user's row in `users`, so a batch's load reads that table.
This loads the demo's batches (5,000 events, 500 active users) with the DuckDB loader
itself, in this process, into a file whose `users` table holds N users (the 500 active
ones spread among them, as in a table filled over months), for each N given, and prints
the median load time per batch, by SQL and row by row:

    python -m bench.users                          # N = 500, 100,000 and 1,000,000
    python -m bench.users --users 500 2000000 --batches 10

Not part of `python -m bench` (whose 500 users keep `users` small); a figure for the
warehouse chapter of docs/performance.md.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from destinations.duckdb_load import DuckDBSender
from destinations.duckdb_wh import Settings
from router.delivery.outcome import DELIVERED
from router.demo import generate

BATCH = 5000
DEMO_USERS = 500  # router.demo.generate's default


def measure(directory: Path, size: int, batches: int, rows: bool) -> dict[str, Any]:
    sender = DuckDBSender(Settings(path=str(directory / f"users-{size}.duckdb")))
    events = list(generate(BATCH * (batches + 1), seed=size + 1))
    chunks = [events[i:i + BATCH] for i in range(0, len(events), BATCH)]
    assert sender.send_sync(chunks[0]) == [DELIVERED] * len(chunks[0])
    con = sender.con
    assert con is not None
    if size > DEMO_USERS:  # other users, with every column the demo's identifies give;
        # the demo's own (user-000000 ...) spread among them, as in a table filled over
        # months, where today's users are anywhere
        stride = size // DEMO_USERS
        con.execute(f"DELETE FROM {sender.ns}.users")
        con.execute(f"INSERT INTO {sender.ns}.users BY NAME SELECT CASE WHEN i % {stride} = 0 "
                    f"AND i // {stride} < {DEMO_USERS} THEN printf('user-%06d', i // {stride}) "
                    "ELSE 'other-' || i END AS id, "
                    "now() - INTERVAL 1 DAY AS timestamp, now() AS received_at, "
                    "now() AS uuid_ts, 'user' || i || '@example.com' AS email, "
                    "'Test' AS first_name, 'U' || i AS last_name, 'team' AS plan "
                    f"FROM range({size}) AS t(i)")
        con.execute("CHECKPOINT")
    times: list[float] = []
    loads: list[str] = []  # how each batch given to the SQL load was loaded in the end
    cpu = 0.0
    for chunk in chunks[1:]:
        payload = orjson.dumps(chunk)
        t0, c0 = time.perf_counter(), time.process_time()
        outcomes = sender.send_sync(chunk) if rows else sender.send_json(payload)
        times.append(time.perf_counter() - t0)
        cpu += time.process_time() - c0
        if not rows:
            loads.append(sender.last_load)
        assert outcomes == [DELIVERED] * len(chunk)
    [(count,)] = con.execute(f"SELECT count(*) FROM {sender.ns}.users").fetchall()
    sender.close_sync()
    return {"users": count, "path": "rows" if rows else "sql",
            **({} if rows else {"loads": {kind: loads.count(kind) for kind in set(loads)}}),
            "median_batch_ms": round(statistics.median(times) * 1000, 1),
            "max_batch_ms": round(max(times) * 1000, 1),
            "cpu_us_per_event": round(cpu / (BATCH * batches) * 1e6, 1)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.users", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, nargs="+", default=[500, 100_000, 1_000_000],
                   help="users in the table (at least the demo's 500), one run each "
                   "(default %(default)s)")
    p.add_argument("--batches", type=int, default=8, help="batches timed per run")
    p.add_argument("--dir", type=Path, help="where the files go (default: a temporary "
                   "directory, removed afterwards)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-users-", dir=args.dir) as tmp:
        for size in args.users:
            for rows in (False, True):
                print(orjson.dumps(measure(Path(tmp), size, args.batches, rows)).decode(),
                      flush=True)
                for path in Path(tmp).iterdir():
                    path.unlink()


if __name__ == "__main__":
    main()
