"""The operator surface on the real broker: health, admin API (auth, pause/resume),
hot reload without loss, and secrets never leaking into any output."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from router.config import load
from router.demo import generate
from tests.fakes.base import FakeServer, respond
from tests.fakes.webhook import WebhookSink
from tests.integration.harness import (
    config_dict,
    eventually,
    headers,
    produce,
    read_all,
    running,
    spawn,
    webhook,
    write_config,
)

pytestmark = pytest.mark.kafka
TOKEN = "adm-token-KNOWN-4"


async def call(method: str, url: str, token: str | None = None) -> tuple[int, Any]:
    hdrs = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as http, http.request(method, url, headers=hdrs) as r:
        body = await r.json() if r.content_type == "application/json" else await r.text()
        return r.status, body


async def test_health_admin_auth_and_pause_resume(kafka_bootstrap: str, make_topic: Any,
                                                  free_port: int) -> None:
    topic = await make_topic()
    async with WebhookSink() as sink:
        cfg = config_dict(kafka_bootstrap, topic, [webhook(
            "hook", f"{sink.url}/events", delivery={"park_backoff_s": 60})])
        cfg["server"] = {"listen": f"127.0.0.1:{free_port}", "admin_token": TOKEN}
        base = f"http://127.0.0.1:{free_port}"
        async with running(cfg) as router:
            await eventually(lambda: router.source is not None and router.source.assigned
                             .is_set(), 20)
            assert (await call("GET", f"{base}/readyz"))[0] == 200
            assert (await call("GET", f"{base}/healthz"))[0] == 200
            assert (await call("POST", f"{base}/api/destinations/hook/pause"))[0] == 401
            assert (await call("POST", f"{base}/api/destinations/hook/pause", "wrong"))[0] == 401
            status, body = await call("POST", f"{base}/api/destinations/hook/pause", TOKEN)
            assert status == 200 and body["paused"] is True
            first = list(generate(50, seed=21))
            await produce(kafka_bootstrap, topic, first)
            stats = router.stats.destinations["hook"]
            await eventually(lambda: stats.parked == 50, 20)
            assert sink.received == []  # paused: parked, not sent, not lost
            status, body = await call("POST", f"{base}/api/destinations/hook/resume", TOKEN)
            assert status == 200 and body["paused"] is False
            # parked due at once: re-driven on the resume, not after a park delay (30-60 s)
            await sink.wait_for(lambda: len(set(sink.ids)) == 50, 10)
            status, listing = await call("GET", f"{base}/api/destinations")
            assert listing["destinations"][0]["name"] == "hook"
            metrics = (await call("GET", f"{base}/metrics"))[1]
            assert 'router_parked_events_total{destination="hook"} 50.0' in metrics
            assert (await call("POST", f"{base}/api/destinations/nope/pause", TOKEN))[0] == 404
            async with aiohttp.ClientSession() as http:
                for body, want in (({"destination": "nope"}, 404), ({"since": "soon"}, 400),
                                   ({"destination": "hook", "dry_run": True}, 200)):
                    async with http.post(f"{base}/api/replay", json=body, headers={
                            "Authorization": f"Bearer {TOKEN}"}) as resp:
                        assert resp.status == want, (body, await resp.text())
            assert not router.stopping.is_set()  # a bad admin call never stops the router


async def test_admin_api_is_disabled_without_a_token(kafka_bootstrap: str, make_topic: Any,
                                                     free_port: int) -> None:
    topic = await make_topic()
    cfg = config_dict(kafka_bootstrap, topic, [webhook("hook", "http://127.0.0.1:9/x")])
    cfg["server"] = {"listen": f"127.0.0.1:{free_port}"}
    async with running(cfg):
        status, body = await call("POST", f"http://127.0.0.1:{free_port}/api/reload", "any")
        assert status == 403 and "disabled" in body["error"]


async def test_hot_reload_swaps_destinations_without_losing_events(
        kafka_bootstrap: str, make_topic: Any, tmp_path: Path) -> None:
    topic = await make_topic(partitions=2)
    async with WebhookSink() as a, WebhookSink() as b, WebhookSink() as c:
        cfg = config_dict(kafka_bootstrap, topic, [webhook("a", f"{a.url}/events"),
                                                   webhook("b", f"{b.url}/events")])
        path = write_config(tmp_path / "router.yaml", cfg)
        from router.app import Router
        router = Router(load(path), path)
        await router.start()
        task = asyncio.create_task(router.run(install_signals=False))
        try:
            before = list(generate(300, seed=31))
            await produce(kafka_bootstrap, topic, before)
            await a.wait_for(lambda: len(set(a.ids)) == 300, 30)
            # an invalid config is refused; the old one keeps running
            path.write_text(path.read_text() + "bogus: 1\n")
            ok, message = await router.reload()
            assert not ok and "bogus" in message
            # remove b, add c, change a's filter
            cfg["destinations"] = [
                {**webhook("a", f"{a.url}/events"), "where": 'type != "screen"'},
                webhook("c", f"{c.url}/events")]
            write_config(path, cfg)
            during = list(generate(600, seed=32))
            producing = asyncio.create_task(produce(kafka_bootstrap, topic, during))
            ok, message = await router.reload()
            assert ok, message
            await producing
            want_a = {e["messageId"] for e in before} | {
                e["messageId"] for e in during if e["type"] != "screen"}
            await a.wait_for(lambda: set(a.ids) >= want_a, 30)
            after = list(generate(200, seed=33))
            await produce(kafka_bootstrap, topic, after)
            await c.wait_for(lambda: {e["messageId"] for e in after} <= set(c.ids), 30)
            assert sorted(router.destinations) == ["a", "c"]
        finally:
            router.stop()
            await asyncio.wait_for(task, 60)
    # b got the events before the reload, and whatever it had buffered then: none after
    assert {e["messageId"] for e in before} <= set(b.ids)
    assert not {e["messageId"] for e in after} & set(b.ids)
    # every event produced during the swap reached each destination that should get it:
    # either the old `a` (no filter) or the new one, and every one of them reached `c`
    # or the old `b` — nothing fell between the two configs
    during_ids = {e["messageId"] for e in during}
    assert during_ids <= set(b.ids) | set(c.ids)


class EchoVendor(FakeServer):
    """A vendor that answers 400 and echoes the request (and its auth) in the error."""

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/2/httpapi", self.handle)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.text()
        auth = request.headers.get("Authorization", "")
        return respond(400, {"code": 400, "error": f"bad request {body} auth={auth}"})


async def test_secrets_never_appear_in_any_output(kafka_bootstrap: str, make_topic: Any,
                                                  tmp_path: Path, free_port: int) -> None:
    secrets = {"hook": "whsec-KNOWN-1", "header": "hdr-token-KNOWN-2",
               "amplitude": "amp-key-KNOWN-3", "admin": TOKEN}
    topic = await make_topic()
    async with WebhookSink() as sink, EchoVendor() as vendor:
        cfg = config_dict(kafka_bootstrap, topic, [
            {"name": "hook", "type": "webhook", "settings": {
                "url": f"{sink.url}/events?api_key={secrets['hook']}",
                "secret": secrets["hook"],
                "headers": {"Authorization": f"Bearer {secrets['header']}"}}},
            {"name": "amp", "type": "amplitude", "settings": {
                "api_key": secrets["amplitude"], "endpoint": f"{vendor.url}/2/httpapi"},
             "delivery": {"inline_retries": 0}}])
        cfg["server"] = {"listen": f"127.0.0.1:{free_port}", "admin_token": TOKEN}
        cfg["log_level"] = "debug"
        path = write_config(tmp_path / "router.yaml", cfg)
        log = tmp_path / "router.log"
        proc = spawn(path, log)
        outputs: list[str] = []
        try:
            base = f"http://127.0.0.1:{free_port}"
            await eventually(lambda: _ready(base), 30)
            await produce(kafka_bootstrap, topic, list(generate(20, seed=41)))
            await eventually(lambda: _dead_lettered(kafka_bootstrap, topic, 20), 30)
            for method, url, token in (("GET", "/metrics", None), ("GET", "/api/stats", None),
                                       ("GET", "/api/destinations", None),
                                       ("POST", "/api/reload", TOKEN),
                                       ("POST", "/api/reload", "wrong"),
                                       ("GET", "/healthz", None)):
                outputs.append(str(await call(method, base + url, token)))
        finally:
            proc.terminate()
            await asyncio.to_thread(proc.wait, 30)
        dead = await read_all(kafka_bootstrap, f"{topic}.dlq")
    assert dead, "nothing was dead-lettered: the leak path was not exercised"
    outputs += [str(headers(r)) for r in dead]
    outputs.append(log.read_text())
    for args in (["validate", "-c", str(path)], ["dry-run", "-c", str(path), "-"]):
        run = subprocess.run([sys.executable, "-m", "router.cli", *args], capture_output=True,
                             text=True, input='{"type":"track","event":"E","userId":"uuuuu1"}')
        outputs += [run.stdout, run.stderr]
    text = "\n".join(outputs)
    assert "bad request" in text  # the vendor's echo reached the dead-letter reason…
    for name, secret in secrets.items():
        assert secret not in text, f"the {name} secret leaked"  # …with the secrets masked
    assert yaml.safe_load(path.read_text())  # the config itself still holds them


async def _ready(base: str) -> bool:
    try:
        return (await call("GET", f"{base}/readyz"))[0] == 200
    except aiohttp.ClientError:
        return False


async def _dead_lettered(bootstrap: str, topic: str, n: int) -> bool:
    return len(await read_all(bootstrap, f"{topic}.dlq")) >= n
