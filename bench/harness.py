"""The benchmark's moving parts: its options, the router subprocess and the sinks process
under control, and the generated router configs.

Three destinations, as a real deployment would have: a webhook, Amplitude (consent
category ``Analytics``, so ~10% of the demo events are filtered for it) — both pointed
at ``bench.sinks`` — and a warehouse: DuckDB when the connector is registered, else a
second webhook. HTTP destinations flush at 1,000 / 2,000 events or 50 ms.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml

from bench import profile
from bench.process import Watched

ROOT = Path(__file__).resolve().parents[1]
HTTP_WAIT_MS = 50  # batch.max_wait_ms of the HTTP destinations
WAREHOUSE_WAIT_MS = 1000  # batch.max_wait_ms of the warehouse destination


@dataclass
class Options:
    events: int = 500_000
    partitions: int = 6
    latency_rate: int = 10_000
    latency_seconds: float = 15.0
    skip_dead: bool = False
    skip_latency: bool = False
    bootstrap: str | None = None
    warehouse: str = "auto"  # auto | duckdb | postgres | webhook
    profile: bool = False
    results_dir: Path = ROOT / "bench" / "results"
    chart: bool = True
    seed: int = 7
    note: str = ""
    keep: bool = False  # keep the work dir (router logs, configs)
    overrides: list[str] = field(default_factory=list)  # "kafka.max_in_flight_events=10000"
    kafka_dir: Path | None = None  # the broker's data; default: in the work dir


def child_env() -> dict[str, str]:
    """The environment of a child process: this one, with the project first on the path."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path}


def override(config: dict[str, Any], assignment: str) -> None:
    """Apply ``a.b.c=<yaml value>`` to a generated config; in the destinations list a
    segment is a destination's name, or ``*`` for all of them."""
    path, sep, raw = assignment.partition("=")
    if not sep or not path:
        raise SystemExit(f"--set needs PATH=VALUE, got {assignment!r}")
    value = yaml.safe_load(raw)
    nodes: list[Any] = [config]
    keys = path.split(".")
    for key in keys[:-1]:
        nxt: list[Any] = []
        for node in nodes:
            if isinstance(node, list):
                nxt += [d for d in node if key in ("*", d.get("name"))]
            else:
                nxt.append(node.setdefault(key, {}))
        nodes = nxt
    for node in nodes:
        if isinstance(node, list):
            raise SystemExit(f"--set {path}: name a destination (or *) inside the list")
        node[keys[-1]] = value


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def warehouse_type(choice: str) -> str:
    from destinations.registry import REGISTRY

    if choice == "auto":
        return "duckdb" if "duckdb" in REGISTRY else "webhook"
    if choice == "duckdb" and "duckdb" not in REGISTRY:
        raise SystemExit("the duckdb connector is not in destinations.registry.REGISTRY yet")
    return choice


def destinations(sinks_url: str, warehouse: str, dead: str | None = None, *,
                 duckdb_path: Path | None = None, postgres_dsn: str | None = None,
                 run_id: str = "") -> list[dict[str, Any]]:
    """webhook + amplitude (consent: Analytics) + the warehouse (duckdb, postgres, or a
    second webhook), pointed at the sinks at ``sinks_url``; ``dead`` points one of them at
    a sink that answers 503."""
    def url(kind: str, name: str) -> str:
        return f"{sinks_url}/{'dead' if name == dead else kind}/{name}"

    def http_batch() -> dict[str, Any]:
        return {"max_wait_ms": HTTP_WAIT_MS}

    dests: list[dict[str, Any]] = [
        {"name": "webhook", "type": "webhook", "batch": http_batch(),
         "settings": {"url": url("webhook", "webhook")}},
        {"name": "amplitude", "type": "amplitude", "consent_categories": ["Analytics"],
         "batch": http_batch(),
         "settings": {"api_key": "bench-key", "endpoint": url("amplitude", "amplitude")}},
    ]
    if warehouse == "duckdb":
        dests.append({"name": "duckdb", "type": "duckdb",
                      "batch": {"max_wait_ms": WAREHOUSE_WAIT_MS},
                      "settings": {"path": str(duckdb_path), "schema": "segment"}})
    elif warehouse == "postgres":
        dests.append({"name": "postgres", "type": "postgres",
                      "batch": {"max_wait_ms": WAREHOUSE_WAIT_MS},
                      "settings": {"dsn": postgres_dsn, "schema": f"bench_{run_id}"}})
    else:
        dests.append({"name": "webhook2", "type": "webhook", "batch": http_batch(),
                      "settings": {"url": url("webhook", "webhook2")}})
    return dests


@dataclass
class RouterRun:
    name: str
    watched: Watched
    port: int
    log: Path
    spy: Any = None
    spy_output: Path | None = None


@dataclass
class Bench:
    options: Options
    bootstrap: str
    workdir: Path
    sinks_url: str
    sinks: Watched
    http: aiohttp.ClientSession
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    postgres_dsn: str | None = None  # with --warehouse postgres

    # -- config -------------------------------------------------------------------------
    def destinations(self, warehouse: str, dead: str | None = None) -> list[dict[str, Any]]:
        path = self.workdir / f"warehouse-{uuid.uuid4().hex[:6]}.duckdb"
        return destinations(self.sinks_url, warehouse, dead, duckdb_path=path,
                            postgres_dsn=self.postgres_dsn, run_id=self.run_id)

    def config(self, phase: str, topic: str, warehouse: str,
               dead: str | None = None) -> dict[str, Any]:
        prefix = f"bench-{self.run_id}-{phase}"
        config: dict[str, Any] = {
            "kafka": {"bootstrap_servers": self.bootstrap, "topics": [topic],
                      "group_id": f"{prefix}-router", "dead_letter_topic": f"{prefix}.dlq",
                      "retry_topic_prefix": f"{prefix}.retry",
                      "created_topic_partitions": self.options.partitions},
            "server": {"listen": f"127.0.0.1:{free_port()}"},
            "destinations": self.destinations(warehouse, dead),
        }
        for assignment in self.options.overrides:
            override(config, assignment)
        return config

    @staticmethod
    def expected(warehouse: str, total: int, consented: int) -> dict[str, int]:
        names = ["webhook", "amplitude", "webhook2" if warehouse == "webhook" else warehouse]
        return {n: consented if n == "amplitude" else total for n in names}

    # -- the router process ---------------------------------------------------------------
    def start_router(self, phase: str, config: dict[str, Any]) -> RouterRun:
        """``python -m router.cli run -c <config>``, as deployed, watched from /proc."""
        path = self.workdir / f"router-{phase}.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        log = self.workdir / f"router-{phase}.log"
        env = child_env()
        argv = [sys.executable, "-m", "router.cli", "run", "-c", str(path)]
        watched = Watched.spawn(argv, log, cwd=ROOT, env=env)
        port = int(config["server"]["listen"].rsplit(":", 1)[1])
        return RouterRun(phase, watched, port, log)

    def spy(self, run: RouterRun) -> None:
        """Sample the router with py-spy from now until it exits."""
        run.spy_output = self.workdir / f"profile-{run.name}.txt"
        run.spy = profile.attach(run.watched.pid, run.spy_output)

    async def router_stats(self, run: RouterRun) -> dict[str, Any] | None:
        try:
            async with self.http.get(f"http://127.0.0.1:{run.port}/api/stats") as resp:
                return dict(await resp.json()) if resp.status == 200 else None
        except (aiohttp.ClientError, OSError):
            return None

    async def wait_ready(self, run: RouterRun, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.check_alive(run)
            try:
                async with self.http.get(f"http://127.0.0.1:{run.port}/readyz") as resp:
                    if resp.status == 200:
                        return
            except (aiohttp.ClientError, OSError):
                pass
            await asyncio.sleep(0.1)
        raise RuntimeError(f"the router was not ready after {timeout_s} s; see {run.log}")

    def check_alive(self, run: RouterRun) -> None:
        if not run.watched.alive():
            tail = run.log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"the router ({run.name}) exited early:\n{tail}")

    def stop_router(self, run: RouterRun) -> dict[str, Any]:
        code = run.watched.stop()
        out: dict[str, Any] = {"exit_code": code}
        if run.spy is not None and run.spy_output is not None:
            try:
                run.spy.wait(30)
            except Exception:
                run.spy.kill()
            if run.spy_output.exists():
                out["profile"] = profile.fold(run.spy_output.read_text())
        return out

    # -- sinks ----------------------------------------------------------------------------
    async def sink_stats(self) -> dict[str, Any]:
        async with self.http.get(f"{self.sinks_url}/stats") as resp:
            return dict(await resp.json())

    async def receipts(self) -> dict[str, list[tuple[str, float]]]:
        async with self.http.get(f"{self.sinks_url}/receipts") as resp:
            return dict(orjson.loads(await resp.read()))

    async def reset_sinks(self, latency: bool = False) -> None:
        async with self.http.post(f"{self.sinks_url}/reset?latency={int(latency)}") as resp:
            resp.raise_for_status()

    async def wait_done(self, run: RouterRun, expected: dict[str, int],
                        parked: dict[str, int] | None = None,
                        timeout_s: float = 600) -> dict[str, Any]:
        """Poll every 100 ms until each destination has its expected deliveries (HTTP: at
        the sink; a warehouse: the router's own count) and each dead one has parked its
        share. Returns, per destination, when it finished (epoch s) and its counts."""
        parked = parked or {}
        done: dict[str, float] = {}
        deadline = time.monotonic() + timeout_s
        sinks: dict[str, Any] = {}
        stats: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            self.check_alive(run)
            now = time.time()
            sinks = await self.sink_stats()
            stats = await self.router_stats(run)
            routed = {d["name"]: d for d in (stats or {}).get("destinations", [])}
            for name, want in expected.items():
                if name in done:
                    continue
                sink = sinks.get(name)
                if sink is not None and name not in parked:
                    if sink["events"] >= want:
                        done[name] = sink["last"]
                elif name in routed and name not in parked and routed[name]["delivered"] >= want:
                    done[name] = now
            for name, want in parked.items():
                row = routed.get(name)
                if name not in done and row and row["parked"] + row["dead_lettered"] >= want:
                    done[name] = now
            if len(done) == len(expected) and (not parked or (stats or {}).get("in_flight") == 0):
                break
            await asyncio.sleep(0.1)
        return {"done": done, "complete": len(done) == len(expected), "sinks": sinks,
                "router": stats}


# -- setup ---------------------------------------------------------------------------------
async def start_sinks(workdir: Path) -> tuple[Watched, str]:
    port = free_port()
    env = child_env()
    watched = Watched.spawn([sys.executable, "-m", "bench.sinks", "--port", str(port)],
                            workdir / "sinks.log", cwd=ROOT, env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return watched, f"http://127.0.0.1:{port}"
        except OSError:
            if not watched.alive():
                break
            await asyncio.sleep(0.05)
    raise RuntimeError(f"the sinks did not start: {(workdir / 'sinks.log').read_text()}")


def start_broker(workdir: Path, data: Path | None = None) -> Any:
    sys.path.insert(0, str(ROOT))
    from scripts.kafka import Broker

    os.environ.setdefault("EVENT_ROUTER_KAFKA_JVM_OPTS", "")  # the full JIT for a benchmark
    broker = Broker(data or workdir / "kafka")
    broker.start()
    return broker
