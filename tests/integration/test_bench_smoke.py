"""The benchmark keeps working: ``python -m bench`` with a tiny load against the session's
broker writes a complete report and a chart. It asserts nothing about speed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def run_bench(*args: str) -> str:
    """``python -m bench <args>``; its output, once it exited 0."""
    # Its own process group, so that a timeout stops the routers and sinks it started too.
    proc = subprocess.Popen([sys.executable, "-m", "bench", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
    assert proc.returncode == 0, stdout[-3000:] + stderr[-3000:]
    return stdout


def test_bench_runs_end_to_end_and_writes_its_report(kafka_bootstrap: str,
                                                      tmp_path: Path) -> None:
    events = 2000
    stdout = run_bench("--events", str(events), "--latency-rate", "2000", "--latency-seconds",
                       "1", "--bootstrap", kafka_bootstrap, "--results-dir", str(tmp_path))
    assert stdout.strip().splitlines()[-1].startswith("bench: raw ")

    report = orjson.loads((tmp_path / "latest.json").read_bytes())
    assert (tmp_path / "latest.png").stat().st_size > 10_000
    assert report["raw_consume"]["events"] == events
    consented = report["preload"]["analytics_consented"]
    assert 0 < consented < events
    routed_runs = [report[p] for p in ("routed", "routed_http") if p in report]
    assert routed_runs
    for run in routed_runs:
        assert run["complete"] and run["exit_code"] == 0
        assert run["router_counts"]["received"] == events
        delivered = {n: d["delivered"] for n, d in run["destinations"].items()}
        assert delivered["webhook"] == events and delivered["amplitude"] == consented
        assert run["events_per_s"] > 0 and run["peak_rss_mb"] > 0
        assert 0 <= run["children_busy_pct"] <= 200
    warehouse = report["routed"]["router_counts"]["destinations"].get("duckdb")
    if warehouse is not None:  # it says how it loaded its batches (by SQL, row by row)
        assert sum(warehouse["loads"].values()) >= 1
    live = report["latency"]
    assert live["complete"] and live["produced"] == 2000
    webhook = live["destinations"]["webhook"]
    assert webhook["count"] == 2000 and 0 <= webhook["p50"] <= webhook["p99"] <= webhook["max"]
    dead = report["dead"]
    assert dead["complete"] and dead["parked"] >= consented
    assert set(dead["live_destinations"].values()) == {events}
    assert {t["name"] for t in report["targets"]} >= {"routed_ratio", "latency_p99_ms",
                                                      "dead_peak_rss_mb"}


def test_bench_with_postgres_as_the_warehouse(kafka_bootstrap: str, tmp_path: Path) -> None:
    """``--warehouse postgres`` starts its own PostgreSQL (as the tests do) and loads every
    event into it."""
    events = 2000
    run_bench("--events", str(events), "--skip-latency", "--skip-dead", "--warehouse",
              "postgres", "--no-chart", "--bootstrap", kafka_bootstrap,
              "--results-dir", str(tmp_path))
    report = orjson.loads((tmp_path / "latest.json").read_bytes())
    run = report["routed"]
    assert run["complete"] and run["exit_code"] == 0
    assert run["router_counts"]["destinations"]["postgres"]["delivered"] == events
    assert report["routed_http"]["complete"]
