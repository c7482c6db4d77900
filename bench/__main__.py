"""python -m bench: measure raw consume, routed throughput, latency and memory in one run.

It starts its own Kafka (or uses --bootstrap), preloads the events into a 6-partition
topic, runs the measurements, prints the JSON report and a one-line summary, and writes
bench/results/<timestamp>.json, latest.json and a PNG chart. Targets are reported, not
asserted: the benchmark never fails on a slow figure.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from bench import profile, report
from bench.harness import Options
from bench.phases import run_all


def parse(argv: list[str] | None) -> Options:
    defaults = Options()
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=defaults.events,
                   help="events to preload and route (default %(default)s)")
    p.add_argument("--partitions", type=int, default=defaults.partitions)
    p.add_argument("--latency-rate", type=int, default=defaults.latency_rate,
                   help="events/s of the live stream (default %(default)s)")
    p.add_argument("--latency-seconds", type=float, default=defaults.latency_seconds)
    p.add_argument("--skip-latency", action="store_true")
    p.add_argument("--skip-dead", action="store_true",
                   help="skip the run with a dead destination")
    p.add_argument("--bootstrap", help="use this Kafka instead of starting one")
    p.add_argument("--warehouse", choices=["auto", "duckdb", "postgres", "webhook"],
                   default="auto", help="third destination: duckdb when registered (auto), "
                   "PostgreSQL (started here, as the tests do), else a webhook")
    p.add_argument("--profile", action="store_true",
                   help="sample the routed run with py-spy (slows it a little)")
    p.add_argument("--results-dir", type=Path, default=defaults.results_dir)
    p.add_argument("--no-chart", action="store_true")
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--note", default="", help="free text stored in the report, e.g. "
                   "what else was running")
    p.add_argument("--keep", action="store_true", help="keep the work dir (logs, configs)")
    p.add_argument("--set", action="append", default=[], metavar="PATH=VALUE",
                   help="override the generated router config, e.g. "
                   "kafka.max_in_flight_events=10000 or destinations.*.delivery.concurrency=8 "
                   "(repeatable; recorded in the report)")
    p.add_argument("--kafka-dir", type=Path, help="the broker's data directory (default: "
                   "in the work dir), e.g. on tmpfs to keep the broker's disk apart from "
                   "DuckDB's file; it is emptied first")
    a = p.parse_args(argv)
    return Options(events=a.events, partitions=a.partitions, latency_rate=a.latency_rate,
                   latency_seconds=a.latency_seconds, skip_dead=a.skip_dead,
                   skip_latency=a.skip_latency, bootstrap=a.bootstrap, warehouse=a.warehouse,
                   profile=a.profile, results_dir=a.results_dir, chart=not a.no_chart,
                   seed=a.seed, note=a.note, keep=a.keep, overrides=a.set,
                   kafka_dir=a.kafka_dir)


def run(options: Options) -> dict[str, Any]:
    """One benchmark run; returns the report after writing it under results_dir."""
    if options.profile and not profile.available():
        raise SystemExit("--profile needs py-spy: pip install py-spy")
    started = datetime.now(UTC)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    head = {"started_at": started.isoformat(timespec="seconds"), "host": report.host(),
            "note": options.note}
    t0 = time.monotonic()
    loop_factory = None
    try:
        import uvloop
        loop_factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - optional
        pass
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        body = runner.run(run_all(options))
    result: dict[str, Any] = {**head, **body, "bench_seconds": round(time.monotonic() - t0, 1)}
    for phase in ("routed", "routed_http"):
        folded = (result.get(phase) or {}).pop("profile", None)
        if folded:
            result.setdefault("profile", {})[phase] = folded
            options.results_dir.mkdir(parents=True, exist_ok=True)
            path = options.results_dir / f"profile-{stamp}-{phase}.txt"
            path.write_text(profile.render(folded))
    result["targets"] = report.judge(result)
    result["summary"] = report.summary(result)
    result["files"] = {"json": str(report.write(result, options.results_dir, stamp,
                                                 chart=options.chart))}
    return result


def main(argv: list[str] | None = None) -> int:
    result = run(parse(argv))
    shown = {k: v for k, v in result.items() if k not in ("profile", "router_config")}
    for phase in ("routed", "routed_http", "dead", "dead_http"):
        if isinstance(shown.get(phase), dict):
            shown[phase] = {k: v for k, v in shown[phase].items() if k != "rss_series"}
    sys.stdout.write(orjson.dumps(shown, option=orjson.OPT_INDENT_2).decode() + "\n")
    sys.stdout.write(result["summary"] + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
