"""The measurements, on one machine, in one run:

    raw_consume   (a) the ceiling: consume + orjson-decode every event, nothing else
    routed        (b) the router end to end (a subprocess) with three destinations;
                      with DuckDB as the third, and again with three HTTP destinations
                      (the engine alone, no warehouse load in the process)
    latency       (c) a live stream at a fixed rate: Kafka append -> receipt at the sink
    dead          (d) the preloaded events with Amplitude down (503) throughout: its
                      events park in its retry topic; memory must stay bounded (with
                      the warehouse, and again with three HTTP destinations)

The router runs as ``python -m router.cli run -c <generated yaml>``, exactly as deployed;
its memory and CPU are read from /proc by ``bench.process``. The sinks run in their own
process (``bench.sinks``), so their CPU is not the router's.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from bench import load
from bench.harness import (
    HTTP_WAIT_MS,
    ROOT,
    WAREHOUSE_WAIT_MS,
    Bench,
    Options,
    child_env,
    start_broker,
    start_sinks,
    warehouse_type,
)
from bench.sinks import percentiles


async def raw_consume(bench: Bench, topic: str, events: int) -> dict[str, Any]:
    env = child_env()
    log = bench.workdir / "ceiling.log"
    argv = [sys.executable, "-m", "bench.ceiling", "--bootstrap", bench.bootstrap,
            "--topic", topic, "--events", str(events)]
    out = bench.workdir / "ceiling.json"
    with out.open("wb") as stdout, log.open("ab") as stderr:
        proc = await asyncio.create_subprocess_exec(*argv, cwd=ROOT, env=env, stdout=stdout,
                                                    stderr=stderr)
        code = await proc.wait()
    if code != 0:
        raise RuntimeError(f"the ceiling consumer failed ({code}): {log.read_text()[-2000:]}")
    result: dict[str, Any] = orjson.loads(out.read_bytes())
    result["events_per_cpu_s"] = round(result["events"] / max(1e-9, result["cpu_s"]))
    return result


async def routed(bench: Bench, topic: str, events: load.Events, warehouse: str,
                 phase: str = "routed") -> dict[str, Any]:
    """From the first delivery at any destination to the last at every destination."""
    total = len(events.values)
    expected = bench.expected(warehouse, total, events.analytics_consented)
    await bench.reset_sinks()
    spawned = time.time()
    run = bench.start_router(phase, bench.config(phase, topic, warehouse))
    try:
        if bench.options.profile:
            await bench.wait_ready(run)  # leave start-up (imports) out of the profile
            bench.spy(run)
        waited = await bench.wait_done(run, expected, timeout_s=120 + total / 1000)
    finally:
        stopped = bench.stop_router(run)
    sinks = waited["sinks"]
    firsts = [sinks[n]["first"] for n in expected if n in sinks and sinks[n]["first"]]
    first = min(firsts) if firsts else spawned
    last = max(waited["done"].values(), default=time.time())
    seconds = max(1e-9, last - first)
    cpu = run.watched.cpu_between(first, last)
    own_cpu = run.watched.cpu_between(first, last, own=True)
    per_dest = {}
    for name, want in expected.items():
        sink = sinks.get(name) or {}
        end = waited["done"].get(name)
        start = sink.get("first") or first
        per_dest[name] = {
            "expected": want, "delivered": sink.get("events", _delivered(waited["router"], name)),
            "measured_at": "sink" if sink else "router (polled every 100 ms)",
            "events_per_s": round(want / (end - start)) if end and end > start else None}
    return {
        "destinations_config": [d["name"] + ":" + d["type"]
                                for d in bench.destinations(warehouse)],
        "events": total, "deliveries": sum(expected.values()), "complete": waited["complete"],
        "seconds": round(seconds, 3), "events_per_s": round(total / seconds),
        "wall_incl_startup_s": round(last - spawned, 3),
        "router_cpu_s": cpu, "events_per_cpu_s": round(total / cpu) if cpu else None,
        "router_cpu_pct": round(100 * cpu / seconds, 1),
        "router_own_cpu_s": own_cpu,
        # the router's children (DuckDB's loader): how busy they kept a core, in percent
        "children_busy_pct": round(100 * max(0.0, cpu - own_cpu) / seconds),
        "peak_rss_mb": run.watched.peak_rss_mb(), "final_rss_mb": run.watched.rss_mb(last),
        "router_own_peak_rss_mb": run.watched.own_peak_rss_mb(),
        "machine_busy_pct": run.watched.machine_busy_pct(first, last),
        "sinks_cpu_s": round(bench.sinks.cpu_between(first, last), 3),
        "destinations": per_dest, "router_counts": router_counts(waited["router"]),
        "exit_code": stopped["exit_code"], "rss_series": run.watched.rss_series(),
        "profiled": bench.options.profile, "profile": stopped.get("profile"),
    }


async def latency(bench: Bench, warehouse: str, phase: str = "latency") -> dict[str, Any]:
    """A live stream at a fixed rate into a LogAppendTime topic; each event's latency is
    its receipt at the sink minus the broker's append time (joined by messageId)."""
    opts = bench.options
    topic = await load.create_topic(bench.bootstrap, f"bench-{bench.run_id}-{phase}",
                                    opts.partitions, {"message.timestamp.type": "LogAppendTime"})
    run = bench.start_router(phase, bench.config(phase, topic, warehouse))
    try:
        await bench.wait_ready(run)
        await asyncio.sleep(1.0)  # let every partition's first fetch settle
        await bench.reset_sinks(latency=True)
        started = time.time()
        idle_rss_mb = run.watched.rss_mb(started)
        produced = await load.produce_paced(bench.bootstrap, topic, opts.partitions,
                                            opts.latency_rate, opts.latency_seconds)
        expected = bench.expected(warehouse, produced["produced"],
                                  produced["analytics_consented"])
        waited = await bench.wait_done(run, expected, timeout_s=60)
        ended = time.time()
        receipts = await bench.receipts()
    finally:
        stopped = bench.stop_router(run)
        await bench.reset_sinks(latency=False)
    append_ms: dict[str, float] = produced.pop("append_ms")
    producer_ms: list[float] = produced.pop("producer_ms")
    per_dest: dict[str, Any] = {}
    for name in expected:
        if receipts.get(name):
            latencies = [at - append_ms[i] for i, at in receipts[name] if i in append_ms]
            per_dest[name] = {"measured_at": "sink, from the Kafka append time",
                              **percentiles(latencies)}
        else:
            row = _router_row(waited["router"], name)
            per_dest[name] = {"measured_at": "router histogram (bucket upper bounds)",
                              "p50": _ms(row.get("p50_s")), "p99": _ms(row.get("p99_s"))}
    measured = [d for d in per_dest.values() if d["measured_at"].startswith("sink")]
    cpu = run.watched.cpu_between(started, ended)
    return {
        **produced, "target_rate": opts.latency_rate, "complete": waited["complete"],
        "destinations_config": [d["name"] + ":" + d["type"]
                                for d in bench.destinations(warehouse)],
        "producer_append_ms": percentiles(producer_ms) if producer_ms else None,
        "destinations": per_dest,
        "p50_ms": max((d["p50"] for d in measured), default=None),
        "p99_ms": max((d["p99"] for d in measured), default=None),
        "max_ms": max((d["max"] for d in measured), default=None),
        "idle_rss_mb": idle_rss_mb, "peak_rss_mb": run.watched.peak_rss_mb(),
        "router_own_peak_rss_mb": run.watched.own_peak_rss_mb(),
        "router_cpu_pct": round(100 * cpu / max(1e-9, ended - started), 1),
        "machine_busy_pct": run.watched.machine_busy_pct(started, ended),
        "router_counts": router_counts(waited["router"]), "exit_code": stopped["exit_code"],
    }


async def dead(bench: Bench, topic: str, events: load.Events, warehouse: str,
               phase: str = "dead") -> dict[str, Any]:
    total = len(events.values)
    expected = bench.expected(warehouse, total, events.analytics_consented)
    await bench.reset_sinks()
    spawned = time.time()
    run = bench.start_router(phase, bench.config(phase, topic, warehouse, dead="amplitude"))
    try:
        waited = await bench.wait_done(run, expected, parked={"amplitude": expected["amplitude"]},
                                       timeout_s=180 + total / 500)
        settled_at = max(waited["done"].values(), default=time.time())
        await asyncio.sleep(3.0)  # after the backlog: memory must come back down
        router = await bench.router_stats(run) or {}
    finally:
        stopped = bench.stop_router(run)
    row = _router_row(router, "amplitude")
    return {
        "destinations_config": [d["name"] + ":" + d["type"]
                                for d in bench.destinations(warehouse)],
        "events": total, "dead_destination": "amplitude (HTTP 503 throughout)",
        "complete": waited["complete"], "seconds_to_settle": round(settled_at - spawned, 2),
        "parked": row.get("parked"), "dead_lettered": row.get("dead_lettered"),
        "retried": row.get("retried"), "circuit": row.get("circuit"),
        "live_destinations": {n: (waited["sinks"].get(n) or {}).get("events",
                                                                    _delivered(router, n))
                              for n in expected if n != "amplitude"},
        "peak_rss_mb": run.watched.peak_rss_mb(),
        "router_own_peak_rss_mb": run.watched.own_peak_rss_mb(),
        "final_rss_mb": run.watched.rss_mb(time.time()),
        "router_counts": router_counts(router), "exit_code": stopped["exit_code"],
        "rss_series": run.watched.rss_series(),
    }


def router_counts(stats: dict[str, Any] | None) -> dict[str, Any]:
    """The router's own view at the end: received, invalid, in flight, per destination."""
    stats = stats or {}
    keys = ("delivered", "filtered_total", "rejected", "retried", "parked", "dead_lettered",
            "loads")  # loads: how a warehouse loaded its batches (sql, rows)
    return {"received": stats.get("received"), "invalid": stats.get("invalid"),
            "in_flight": stats.get("in_flight"),
            "destinations": {d["name"]: {k: d.get(k) for k in keys}
                             for d in stats.get("destinations", [])}}


def _router_row(stats: dict[str, Any] | None, name: str) -> dict[str, Any]:
    for row in (stats or {}).get("destinations", []):
        if row["name"] == name:
            return dict(row)
    return {}


def _delivered(stats: dict[str, Any] | None, name: str) -> int | None:
    value = _router_row(stats, name).get("delivered")
    return int(value) if value is not None else None


def _ms(seconds: float | None) -> float | None:
    if seconds is None or seconds == float("inf"):
        return None
    return round(seconds * 1000, 1)


# -- one whole run -----------------------------------------------------------------------
async def run_all(options: Options) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="event-router-bench-"))
    warehouse = warehouse_type(options.warehouse)
    broker = None
    sinks = None
    postgres = None
    report: dict[str, Any] = {"options": {
        "events": options.events, "partitions": options.partitions,
        "latency_rate": options.latency_rate, "latency_seconds": options.latency_seconds,
        "warehouse": warehouse, "http_max_wait_ms": HTTP_WAIT_MS,
        "warehouse_max_wait_ms": WAREHOUSE_WAIT_MS, "seed": options.seed,
        "external_broker": options.bootstrap is not None, "overrides": options.overrides,
        "kafka_dir": str(options.kafka_dir) if options.kafka_dir else None}}
    ok = False
    try:
        bootstrap = options.bootstrap
        if bootstrap is None:
            broker = start_broker(workdir, options.kafka_dir)
            bootstrap = broker.bootstrap
        sinks, sinks_url = await start_sinks(workdir)
        if warehouse == "postgres":
            from scripts.postgres import Postgres

            postgres = Postgres(workdir / "postgres")
            postgres.start()
        async with aiohttp.ClientSession() as http:
            bench = Bench(options, bootstrap, workdir, sinks_url, sinks, http,
                          postgres_dsn=postgres.dsn if postgres is not None else None)
            report["router_config"] = bench.config("<phase>", "<topic>", warehouse)
            events = load.make_events(options.events, options.seed)
            topic = await load.create_topic(bootstrap, f"bench-{bench.run_id}",
                                            options.partitions)
            seconds = await load.preload(bootstrap, topic, events, options.partitions)
            report["preload"] = {"events": len(events.values), "seconds": round(seconds, 2),
                                 "mean_event_bytes": round(events.mean_bytes),
                                 "analytics_consented": events.analytics_consented}
            report["raw_consume"] = await raw_consume(bench, topic, options.events)
            report["routed"] = await routed(bench, topic, events, warehouse)
            if warehouse != "webhook":
                report["routed_http"] = await routed(bench, topic, events, "webhook",
                                                     "routed_http")
            if not options.skip_latency:
                report["latency"] = await latency(bench, warehouse)
                if warehouse != "webhook":
                    report["latency_http"] = await latency(bench, "webhook", "latency_http")
            if not options.skip_dead:
                report["dead"] = await dead(bench, topic, events, warehouse)
                if warehouse != "webhook":
                    report["dead_http"] = await dead(bench, topic, events, "webhook",
                                                     "dead_http")
        ok = True
    finally:
        if sinks is not None:
            sinks.stop(5)
        if broker is not None:
            broker.stop()
        if postgres is not None:
            postgres.stop(remove=not options.keep)
        if options.keep or not ok:
            print(f"bench: work dir (logs, configs) kept at {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return report
