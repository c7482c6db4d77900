"""python -m bench.hotpath: the router's hot path in this one process, without Kafka or
sockets, for comparing changes to it with less noise than the full benchmark.

The bench's own events (``bench.load``), keyed onto 6 partitions as the preload puts
them, go through the real ``Pipeline.intake`` in fetches of 2,000 records (the router's
``fetch_max_records``), the real workers batch them, and the real HTTP senders encode
each request for the bench's three HTTP destinations (webhook, Amplitude, a second
webhook); only the request itself is left out: each is answered 200 at once. The event
loop runs between fetches, as it does between the router's ``getmany`` calls. What is
not here: aiokafka's fetching and unpacking, the sockets, the commits.

It prints the CPU time per event (median of ``--repeat`` runs, each on a fresh pipeline)
and checks that every event was delivered where the full benchmark expects it. Like the
benchmark, it asserts nothing about time.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import time
from collections import namedtuple
from typing import Any

import orjson
from aiokafka import TopicPartition

from bench.harness import destinations, override
from bench.load import make_events
from router.config import Config
from router.delivery.http import HttpSender
from router.delivery.outcome import DELIVERED, Outcome
from router.delivery.worker import Worker
from router.offsets import Envelope, Tracker
from router.pipeline import Destination, Pipeline, build_route
from router.telemetry import Stats
from router.topics import partition_of

Record = namedtuple("Record", "value offset timestamp key")
PARTITIONS = 6
FETCH = 2000  # the router's kafka.fetch_max_records
Fetch = list[tuple[TopicPartition, list[Record]]]  # one getmany: records per partition


class AnsweredSender(HttpSender):
    """The real sender (encode, split, classify) with every request answered 200 at once."""

    requests = 0
    bytes = 0

    async def _attempt(self, request: Any) -> Outcome:
        self.requests += 1
        self.bytes += len(request.body)
        return DELIVERED


class Outbox:
    """Nothing is dead-lettered or parked here; if it were, the run is not comparable."""

    async def dead_letter(self, items: list[tuple[Envelope, str]], destination: str = "") -> None:
        raise AssertionError(f"dead letter in the hot-path run: {items[0][1]}")

    async def park(self, envs: list[Envelope], *args: Any) -> list[int]:
        raise AssertionError(f"parked in the hot-path run: {args}")


def fetches(values: list[bytes], keys: list[bytes]) -> list[Fetch]:
    """The events as ``getmany`` would hand them over: per partition in offset order,
    ``FETCH`` records per fetch spread over the partitions."""
    now_ms = int(time.time() * 1000)
    per: list[list[Record]] = [[] for _ in range(PARTITIONS)]
    for key, value in zip(keys, values, strict=True):
        records = per[partition_of(key, PARTITIONS)]
        records.append(Record(value, len(records), now_ms, key))
    tps = [TopicPartition("events", p) for p in range(PARTITIONS)]
    share = FETCH // PARTITIONS
    out = []
    for start in range(0, max(map(len, per)), share):
        fetch = [(tp, records[start:start + share]) for tp, records in zip(tps, per, strict=True)]
        out.append([(tp, records) for tp, records in fetch if records])
    return out


async def run_once(config: Config, fetched: list[Fetch]) -> tuple[float, dict[str, int], int]:
    stats, outbox, tracker = Stats(), Outbox(), Tracker()
    dests, senders = [], []
    for cfg in config.destinations:
        sender = AnsweredSender(cfg.connector, cfg.settings,  # type: ignore[attr-defined]
                                concurrency=cfg.delivery.concurrency, max_bytes=cfg.max_bytes)
        await sender.start()
        senders.append(sender)
        dest_stats = stats.destination(cfg.name)
        worker = Worker(cfg, sender, outbox, dest_stats)  # type: ignore[arg-type]
        dests.append(Destination(cfg, build_route(cfg), worker, dest_stats))
    pipe = Pipeline(config, dests, outbox, stats, tracker)  # type: ignore[arg-type]
    gc.collect()
    started = time.process_time()
    for fetch in fetched:
        for tp, records in fetch:
            pipe.intake(tp, records)
        await asyncio.sleep(0)  # the loop runs the sends, as between getmany calls
    for dest in dests:
        await dest.worker.drain(60)
    cpu = time.process_time() - started
    for sender in senders:
        await sender.close()
    assert tracker.in_flight == 0, f"{tracker.in_flight} events still in flight"
    delivered = {d.cfg.name: d.stats.delivered for d in dests}
    return cpu, delivered, sum(s.requests for s in senders)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.hotpath", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=200_000)
    p.add_argument("--repeat", type=int, default=5, help="runs; the median is reported")
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   metavar="PATH=VALUE", help="override the generated config, as in bench")
    args = p.parse_args(argv)
    raw: dict[str, Any] = {"destinations": destinations("http://127.0.0.1:9", "webhook")}
    for assignment in args.overrides:
        override(raw, assignment)
    config = Config.model_validate(raw)
    events = make_events(args.events)
    fetched = fetches(events.values, events.keys)
    # what the full benchmark expects too (a --set that filters changes it: not checked)
    expected = None if args.overrides else {
        "webhook": args.events, "amplitude": events.analytics_consented,
        "webhook2": args.events}
    try:
        import uvloop  # as the router runs
        new_loop: Any = uvloop.new_event_loop
    except ImportError:
        new_loop = asyncio.new_event_loop
    gc.freeze()  # as the router does once started: the events above are not scanned
    runs = []
    for _ in range(args.repeat):
        with asyncio.Runner(loop_factory=new_loop) as runner:
            cpu, delivered, requests = runner.run(run_once(config, fetched))
        if expected is not None and delivered != expected:
            raise SystemExit(f"delivered {delivered}, expected {expected}")
        runs.append(cpu)
    us = [cpu / args.events * 1e6 for cpu in runs]
    print(orjson.dumps({"events": args.events, "delivered": delivered, "requests": requests,
                        "cpu_us_per_event": round(statistics.median(us), 2),
                        "runs_us_per_event": [round(u, 2) for u in us],
                        "events_per_cpu_s": round(args.events / statistics.median(runs))},
                       option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
