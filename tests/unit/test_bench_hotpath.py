"""``python -m bench.hotpath`` keeps working: the router's hot path in one process, no
broker, every request answered at once. It asserts nothing about speed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

from bench.hotpath import FETCH, PARTITIONS, fetches

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bench.hotpath", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_hotpath_delivers_every_event_where_the_benchmark_expects_it() -> None:
    done = run("--events", "3000", "--repeat", "2")
    assert done.returncode == 0, done.stderr
    report = orjson.loads(done.stdout)
    assert report["events"] == 3000
    assert report["delivered"]["webhook"] == report["delivered"]["webhook2"] == 3000
    assert 0 < report["delivered"]["amplitude"] < 3000  # consent filters ~10% out
    assert report["requests"] >= 2 + 2 + 3  # <= 2,000 a webhook request, 1,000 Amplitude
    assert len(report["runs_us_per_event"]) == 2 and report["cpu_us_per_event"] > 0


def test_hotpath_applies_set_and_then_reports_the_counts_unchecked() -> None:
    done = run("--events", "500", "--repeat", "1", "--set",
               "destinations.webhook.where=type = 'track'")
    assert done.returncode == 0  # with --set the counts are reported, not checked
    assert orjson.loads(done.stdout)["delivered"]["webhook"] < 500


def test_fetches_keep_each_partition_in_offset_order() -> None:
    values = [b"%d" % i for i in range(5000)]
    keys = [b"user-%d" % (i % 37) for i in range(5000)]
    fetched = fetches(values, keys)
    assert all(sum(len(r) for _, r in fetch) <= FETCH for fetch in fetched)
    seen: dict[int, list[int]] = {}
    for fetch in fetched:
        for tp, records in fetch:
            seen.setdefault(tp.partition, []).extend(r.offset for r in records)
    assert set(seen) <= set(range(PARTITIONS))
    assert sum(map(len, seen.values())) == 5000
    assert all(offsets == list(range(len(offsets))) for offsets in seen.values())
