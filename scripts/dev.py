"""`make dev`: a local Kafka, a local webhook sink, the router on config/router.yaml, and
demo traffic — then it shows where the events arrived and keeps a trickle flowing for
the live page until Ctrl-C.

    python -m scripts.dev [--events 2000] [--once]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
from aiohttp import ClientSession, web

from router.config import load
from router.demo import produce

ROOT = Path(__file__).resolve().parents[1]
SINK_PORT = 9200


class Sink:
    """Stands in for a customer's webhook endpoint: counts what arrives."""

    def __init__(self) -> None:
        self.events = 0
        self.by_type: dict[str, int] = {}
        self.last: dict[str, Any] | None = None

    async def handle(self, request: web.Request) -> web.Response:
        batch = orjson.loads(await request.read())
        self.events += len(batch)
        for event in batch:
            self.by_type[event["type"]] = self.by_type.get(event["type"], 0) + 1
        self.last = batch[-1]
        return web.json_response({"ok": True})


async def start_sink(sink: Sink) -> tuple[web.AppRunner, int]:
    """Serve the sink on SINK_PORT, or on a free port when that one is taken; the router's
    config finds it through WEBHOOK_URL (set here unless the user set it)."""
    app = web.Application()
    app.router.add_post("/events", sink.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", SINK_PORT)
        await site.start()
    except OSError:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    os.environ.setdefault("WEBHOOK_URL", f"http://127.0.0.1:{port}/events")
    return runner, port


def log_tail(lines: int = 15) -> str:
    text = (ROOT / "data" / "router.log").read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:])


def start_kafka() -> str:
    """Start (or reuse) the detached local broker via `python -m scripts.kafka start`."""
    out = subprocess.run([sys.executable, "-m", "scripts.kafka", "start"], cwd=ROOT,
                         check=True, capture_output=True, text=True)
    return out.stdout.strip().splitlines()[-1]


async def metrics_summary(listen: str) -> str:
    async with ClientSession() as http, http.get(f"http://{listen}/api/destinations") as resp:
        data = await resp.json()
    rows = [f"  {d['name']:<12} {d['type']:<10} delivered={d['delivered']:<6} "
            f"filtered={sum(d['filtered'].values()):<6} dead-lettered={d['dead_lettered']}"
            for d in data["destinations"]]
    return "\n".join(rows)


async def main(events: int, once: bool) -> int:
    os.chdir(ROOT)
    print("• starting the local Kafka (first run fetches its jars from Maven Central)…")
    bootstrap = await asyncio.to_thread(start_kafka)
    os.environ["KAFKA_BOOTSTRAP"] = bootstrap
    sink = Sink()
    runner, port = await start_sink(sink)
    config = load("config/router.yaml")
    listen = config.server.listen
    print(f"• Kafka on {bootstrap}; webhook sink on 127.0.0.1:{port}")
    router = subprocess.Popen([sys.executable, "-m", "router.cli", "run", "-c",
                               "config/router.yaml"], env=os.environ.copy(),
                              stderr=open(ROOT / "data" / "router.log", "ab"))  # noqa: SIM115
    try:
        await asyncio.sleep(3)
        sent = await produce(config, config.kafka.topics[0], [], events)
        print(f"• published {sent} demo events to '{config.kafka.topics[0]}'")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and router.poll() is None:
            await asyncio.sleep(1)
            if sink.events and time.monotonic() > deadline - 25:
                break
        await asyncio.sleep(3)
        if router.poll() is not None:
            print(f"\nThe router exited (code {router.returncode}); the end of "
                  f"data/router.log:\n{log_tail()}")
            return router.returncode or 1
        print(f"\nWhere they arrived (live page: http://{listen}/ui, metrics: /metrics):")
        print(await metrics_summary(listen))
        print(f"\nwebhook sink received {sink.events} events {sink.by_type}")
        for dest in config.destinations:
            if dest.type == "duckdb":
                path = dest.settings.path  # type: ignore[attr-defined]
                print(f"DuckDB warehouse: {path} — query it with "
                      f"`python -c \"import duckdb; print(duckdb.connect('{path}', "
                      f"read_only=True).sql('select event, count(*) from analytics.tracks "
                      f"group by 1'))\"` after stopping")
        print("router log: data/router.log")
        if once:
            return 0 if sink.events else 1
        print("\nA trickle of demo events keeps flowing; Ctrl-C stops everything.")
        while router.poll() is None:
            await produce(config, config.kafka.topics[0], [], 20)
            await asyncio.sleep(1)
        return router.returncode or 0
    finally:
        if router.poll() is None:
            router.send_signal(signal.SIGTERM)
            await asyncio.to_thread(router.wait, 30)
        await runner.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--once", action="store_true", help="Show the result and stop.")
    args = parser.parse_args()
    (ROOT / "data").mkdir(exist_ok=True)
    try:
        sys.exit(asyncio.run(main(args.events, args.once)))
    except KeyboardInterrupt:
        print("\nstopped (the local Kafka keeps running: `make kafka-down` stops it)")
