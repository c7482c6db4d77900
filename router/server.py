"""The operator's HTTP surface: /metrics /healthz /readyz /api/* /ui.

Mutating /api calls need ``Authorization: Bearer <server.admin_token>`` (compared in
constant time); with no token configured they answer 403 (disabled).
"""

from __future__ import annotations

import hmac
import time
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from router.redact import redact
from router.telemetry import StatsCollector

UI_DIR = Path(__file__).parent / "ui"
STALL_S = 5.0


def _json(data: Any, status: int = 200) -> web.Response:
    import orjson

    return web.Response(body=redact(orjson.dumps(data).decode()).encode(), status=status,
                        content_type="application/json")


def build_app(router: Any) -> web.Application:
    registry = CollectorRegistry()
    registry.register(StatsCollector(router.stats))
    app = web.Application()

    def authorized(request: web.Request) -> web.Response | None:
        token = router.config.server.admin_token
        if token is None:
            return _json({"error": "admin API disabled: set server.admin_token"}, 403)
        # the scheme is case-insensitive (RFC 9110 11.1): "bearer <token>" is fine too
        scheme, _, given = request.headers.get("Authorization", "").strip().partition(" ")
        if not (scheme.lower() == "bearer" and hmac.compare_digest(
                given.strip().encode(), token.get_secret_value().encode())):
            return _json({"error": "unauthorized"}, 401)
        return None

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        stalled = time.monotonic() - router.last_tick
        crashed = [n for n, t in router.tasks.items() if t.done() and not t.cancelled()
                   and t.exception() is not None]
        if stalled > STALL_S or crashed:
            return _json({"ok": False, "loop_stalled_s": round(stalled, 1),
                          "crashed": crashed}, 503)
        return _json({"ok": True})

    async def readyz(_: web.Request) -> web.Response:
        ready = (router.started and router.source is not None
                 and router.source.assigned.is_set() and not router.stopping.is_set())
        return _json({"ready": ready}, 200 if ready else 503)

    async def destinations(_: web.Request) -> web.Response:
        return _json({"destinations": [describe(router, d) for d in
                                       router.destinations.values()],
                      "in_flight": router.tracker.in_flight,
                      "lag": {f"{t}:{p}": v for (t, p), v in router.stats.lag.items()}})

    async def stats(_: web.Request) -> web.Response:
        return _json(snapshot(router))

    async def pause(request: web.Request) -> web.Response:
        return await _set_paused(request, True)

    async def resume(request: web.Request) -> web.Response:
        return await _set_paused(request, False)

    async def _set_paused(request: web.Request, paused: bool) -> web.Response:
        if (denied := authorized(request)) is not None:
            return denied
        dest = router.destinations.get(request.match_info["name"])
        if dest is None:
            return _json({"error": "no such destination"}, 404)
        dest.worker.paused = paused
        dest.stats.paused = int(paused)
        return _json(describe(router, dest))

    async def reload(request: web.Request) -> web.Response:
        if (denied := authorized(request)) is not None:
            return denied
        ok, message = await router.reload()
        return _json({"ok": ok, "message": message}, 200 if ok else 400)

    async def replay(request: web.Request) -> web.Response:
        if (denied := authorized(request)) is not None:
            return denied
        from router.replay import replay as do_replay

        try:
            body = await request.json() if request.can_read_body else {}
        except ValueError:
            return _json({"error": "the body must be JSON"}, 400)
        if not isinstance(body, dict):
            return _json({"error": "the body must be a JSON object"}, 400)
        name = body.get("destination")
        if name is not None and name not in router.destinations:
            return _json({"error": f"no destination named {name!r}"}, 404)
        try:
            counts = await do_replay(router.config, destination=name, since=body.get("since"),
                                     limit=body.get("limit"), dry_run=bool(body.get("dry_run")))
        except (ValueError, TypeError) as exc:
            return _json({"error": str(exc)}, 400)
        return _json(counts)

    async def root(_: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/ui")

    async def ui(_: web.Request) -> web.StreamResponse:
        return web.FileResponse(UI_DIR / "index.html")

    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/api/destinations", destinations)
    app.router.add_get("/api/stats", stats)
    app.router.add_post("/api/destinations/{name}/pause", pause)
    app.router.add_post("/api/destinations/{name}/resume", resume)
    app.router.add_post("/api/reload", reload)
    app.router.add_post("/api/replay", replay)
    app.router.add_get("/ui", ui)
    app.router.add_get("/", root)
    return app


def describe(router: Any, dest: Any) -> dict[str, Any]:
    s = dest.stats
    return {"name": dest.cfg.name, "type": dest.cfg.type, "paused": dest.worker.paused,
            "circuit": ("closed", "half-open", "open")[s.circuit],
            "delivered": s.delivered, "rejected": s.rejected, "retried": s.retried,
            "parked": s.parked, "spilled": s.spilled, "spilling": dest.worker.spilling,
            "dead_lettered": s.dead_lettered, "filtered": dict(s.filtered),
            "in_flight": s.in_flight, "loads": dict(s.loads),
            "retry_backlog": s.retry_backlog}


def snapshot(router: Any) -> dict[str, Any]:
    """Totals for the live page; it derives rates from successive snapshots."""
    dests = []
    for dest in router.destinations.values():
        row = describe(router, dest)
        row["filtered_total"] = sum(dest.stats.filtered.values())
        row["p50_s"] = dest.stats.end_to_end.quantile(0.5)
        row["p99_s"] = dest.stats.end_to_end.quantile(0.99)
        dests.append(row)
    s = router.stats
    state = ("stopping" if router.stopping.is_set() else "running" if router.started
             else "starting")  # starting: waiting for Kafka, or joining the group
    return {"time": time.time(), "state": state,
            "kafka": router.config.kafka.bootstrap_servers, "received": s.received,
            "invalid": sum(s.invalid.values()), "in_flight": router.tracker.in_flight,
            "lag": sum(s.lag.values()), "destinations": dests}


async def start_server(router: Any, listen: str) -> web.AppRunner:
    host, _, port = listen.rpartition(":")
    runner = web.AppRunner(build_app(router), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host or "127.0.0.1", int(port)).start()
    return runner
