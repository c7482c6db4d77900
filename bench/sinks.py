"""Fast local destinations for the benchmark, run in their own process so that their
CPU is not charged to the router:

    python -m bench.sinks --port 8900

    POST /webhook/<name>     a webhook receiver: a JSON array of Segment events
    POST /amplitude/<name>   Amplitude HTTP V2: {"api_key": ..., "events": [...]}
    POST /dead/<name>        a destination that is down: always 503
    GET  /stats              per <name>: events, requests, first/last receipt (epoch s),
                             latency percentiles (ms) when latency mode is on
    GET  /receipts           per <name>: [[messageId, receipt epoch ms], ...] (latency mode)
    POST /reset?latency=1    clear everything; latency mode on (1) or off (0)

Counting is cheap on purpose: an event is one ``"messageId":`` (webhook) or
``"insert_id":`` (Amplitude) key in the body, a C-speed ``bytes.count``. Every 50th
request (and every request in latency mode) is parsed in full and its length checked
against the count; a mismatch or an unparsable body is counted in ``errors``.

In latency mode every event is parsed and its receipt time recorded by messageId (the
benchmark joins it with the record's Kafka append time); ``latency_ms`` in /stats is the
client's view: receipt minus the event's own time, the ``timestamp`` (webhook) or
``time`` (Amplitude) that the producer set when it sent the record.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import datetime
from typing import Any

import orjson
from aiohttp import web

CHECK_EVERY = 50
MARKERS = {"webhook": b'"messageId":', "amplitude": b'"insert_id":'}
ID_FIELDS = {"webhook": "messageId", "amplitude": "insert_id"}


class Counter:
    __slots__ = ("errors", "events", "first", "last", "latencies_ms", "receipts", "requests")

    def __init__(self) -> None:
        self.events = 0
        self.requests = 0
        self.errors = 0
        self.first = 0.0
        self.last = 0.0
        self.latencies_ms: list[float] = []
        self.receipts: list[tuple[str, float]] = []

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"events": self.events, "requests": self.requests,
                               "errors": self.errors, "first": self.first, "last": self.last}
        if self.latencies_ms:
            out["latency_ms"] = percentiles(self.latencies_ms)
        return out


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    n = len(ordered)

    def at(q: float) -> float:
        return round(ordered[min(n - 1, int(q * n))], 1)

    return {"count": n, "p50": at(0.50), "p90": at(0.90), "p99": at(0.99),
            "p999": at(0.999), "max": round(ordered[-1], 1),
            "mean": round(sum(ordered) / n, 1)}


def event_times_ms(kind: str, items: list[Any]) -> list[float]:
    if kind == "amplitude":
        return [float(e["time"]) for e in items]
    return [datetime.fromisoformat(e["timestamp"]).timestamp() * 1000 for e in items]


class Sinks:
    def __init__(self) -> None:
        self.counters: dict[str, Counter] = {}
        self.latency = False

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/webhook/{name}", self.webhook)
        app.router.add_post("/amplitude/{name}", self.amplitude)
        app.router.add_post("/dead/{name}", self.dead)
        app.router.add_get("/stats", self.stats)
        app.router.add_get("/receipts", self.receipts)
        app.router.add_post("/reset", self.reset)
        return app

    def counter(self, name: str) -> Counter:
        counter = self.counters.get(name)
        if counter is None:
            counter = self.counters[name] = Counter()
        return counter

    def record(self, kind: str, name: str, body: bytes) -> int:
        now = time.time()
        counter = self.counter(name)
        count = body.count(MARKERS[kind])
        counter.requests += 1
        if self.latency or counter.requests % CHECK_EVERY == 1:
            try:
                parsed = orjson.loads(body)
                items = parsed if kind == "webhook" else parsed["events"]
                if len(items) != count:
                    counter.errors += 1
                if self.latency:
                    now_ms = now * 1000
                    counter.latencies_ms.extend(now_ms - t for t in event_times_ms(kind, items))
                    id_field = ID_FIELDS[kind]
                    counter.receipts.extend((e[id_field], now_ms) for e in items)
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                counter.errors += 1
        counter.events += count
        counter.first = counter.first or now
        counter.last = now
        return count

    async def webhook(self, request: web.Request) -> web.Response:
        self.record("webhook", request.match_info["name"], await request.read())
        return web.json_response({"ok": True})

    async def amplitude(self, request: web.Request) -> web.Response:
        body = await request.read()
        count = self.record("amplitude", request.match_info["name"], body)
        return web.json_response({"code": 200, "events_ingested": count,
                                  "payload_size_bytes": len(body),
                                  "server_upload_time": int(time.time() * 1000)})

    async def dead(self, request: web.Request) -> web.Response:
        await request.read()
        self.counter(request.match_info["name"]).requests += 1
        return web.json_response({"code": 503, "error": "Service Unavailable"}, status=503)

    async def stats(self, _: web.Request) -> web.Response:
        return web.json_response({n: c.summary() for n, c in self.counters.items()},
                                 dumps=lambda v: orjson.dumps(v).decode())

    async def receipts(self, _: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps({n: c.receipts for n, c in self.counters.items()}),
                            content_type="application/json")

    async def reset(self, request: web.Request) -> web.Response:
        self.counters.clear()
        self.latency = request.query.get("latency") == "1"
        return web.json_response({"ok": True})


async def serve(port: int) -> None:
    runner = web.AppRunner(Sinks().app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=1024).start()
    print(f"sinks listening on 127.0.0.1:{port}", flush=True)
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.sinks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    try:
        import uvloop
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:  # pragma: no cover - optional
        pass
    asyncio.run(serve(args.port))


if __name__ == "__main__":
    main()
