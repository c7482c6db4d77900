"""``python -m bench.users`` keeps working (no broker: the DuckDB loader in-process). It
asserts nothing about speed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[2]


def test_bench_users_reports_each_table_size_both_ways(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "bench.users", "--users", "500", "3000",
                          "--batches", "1", "--dir", str(tmp_path)], cwd=ROOT, check=True,
                         capture_output=True, text=True, timeout=120).stdout
    rows = [orjson.loads(line) for line in out.splitlines()]
    assert [r["path"] for r in rows] == ["sql", "rows", "sql", "rows"]
    assert rows[0]["loads"] == rows[2]["loads"] == {"sql": 1}  # none fell back to rows
    assert rows[2]["users"] == rows[3]["users"] == 3000 and rows[0]["users"] <= 500
    assert all(r["median_batch_ms"] > 0 and r["cpu_us_per_event"] > 0 for r in rows)
    assert list(tmp_path.iterdir()) == []  # its files are removed
