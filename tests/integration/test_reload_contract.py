"""Hot reload as docs/operations.md "Hot reload" promises it, on the real broker:
a changed destination keeps re-driving its retry topic, an unchanged one is untouched
(same worker, counters, retry driver), and SIGHUP on a running process refuses a bad
file while keeping the running config, then applies a good one."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from aiokafka.errors import KafkaError

from router.app import Router
from router.config import load
from router.demo import generate
from tests.fakes.webhook import WebhookSink
from tests.integration.harness import (
    config_dict,
    eventually,
    kill9,
    produce,
    spawn,
    webhook,
    write_config,
)

pytestmark = pytest.mark.kafka


async def test_a_changed_destination_keeps_redriving_its_parked_events(
        kafka_bootstrap: str, make_topic: Any, tmp_path: Path) -> None:
    topic = await make_topic()
    fast_park = {"inline_retries": 0, "park_backoff_s": 0.3, "backoff_max_s": 1,
                 "backoff_base_s": 0.05, "circuit_failures": 1000}
    async with WebhookSink() as a, WebhookSink() as b:
        a.down_until = float("inf")  # `a` is down: its events are parked in its retry topic
        cfg = config_dict(kafka_bootstrap, topic, [
            webhook("a", f"{a.url}/events", delivery=fast_park),
            webhook("b", f"{b.url}/events")])
        path = write_config(tmp_path / "router.yaml", cfg)
        router = Router(load(path), path)
        await router.start()
        task = asyncio.create_task(router.run(install_signals=False))
        try:
            events = list(generate(40, seed=41))
            ids = {e["messageId"] for e in events}
            await produce(kafka_bootstrap, topic, events)
            stats_a = router.stats.destinations["a"]
            await eventually(lambda: stats_a.parked >= 40, 20)
            await b.wait_for(lambda: set(b.ids) == ids, 20)
            b_parts = (router.destinations["b"], router.retry_sources["b"],
                       router.tasks["retry:b"], router.stats.destinations["b"])
            delivered_b = b_parts[3].delivered
            # change a's filter (it still lets every event through) and reload
            cfg["destinations"][0]["where"] = 'messageId != "none"'
            write_config(path, cfg)
            ok, message = await router.reload()
            assert ok and "1 started, 1 stopped" in message, message
            # the new `a`'s retry driver runs: the old one's task was the one stopped
            redriving = router.tasks.get("retry:a")
            assert redriving is not None and not redriving.done()
            a.down_until = 0.0  # `a` recovers: what was parked before the swap arrives
            await a.wait_for(lambda: set(a.ids) == ids, 20)
            # b was not touched: same worker, retry driver (still running), counters
            assert (router.destinations["b"], router.retry_sources["b"],
                    router.tasks["retry:b"], router.stats.destinations["b"]) == b_parts
            assert not b_parts[2].done() and b_parts[3].delivered == delivered_b
            assert sorted(b.ids) == sorted(ids)  # nothing re-sent to b by the reload

            # a reload that fails (Kafka refuses a new destination's retry topic) says why,
            # as an answer, not an exception; two at once run one after the other
            async def refused(*_: Any) -> None:
                raise KafkaError("topic creation refused")

            router._ensure_topics = refused  # type: ignore[method-assign]
            cfg["destinations"].append(webhook("c", f"{b.url}/c"))
            write_config(path, cfg)
            results = await asyncio.gather(router.reload(), router.reload())
            assert [ok for ok, _ in results] == [False, False]
            assert all("reload failed" in message for _, message in results), results
            del router._ensure_topics  # the class's own again
            more = list(generate(5, seed=43))
            await produce(kafka_bootstrap, topic, more)  # still routing, as before
            await b.wait_for(lambda: {e["messageId"] for e in more} <= set(b.ids), 20)
        finally:
            router.stop()
            await asyncio.wait_for(task, 60)


async def test_sighup_refuses_a_bad_file_then_applies_a_good_one(
        kafka_bootstrap: str, make_topic: Any, tmp_path: Path) -> None:
    topic = await make_topic()
    async with WebhookSink() as a, WebhookSink() as c:
        cfg = config_dict(kafka_bootstrap, topic, [webhook("a", f"{a.url}/events")])
        path = write_config(tmp_path / "router.yaml", cfg)
        log = tmp_path / "router.log"
        proc = spawn(path, log)
        try:
            first = list(generate(30, seed=42))
            await produce(kafka_bootstrap, topic, first)
            await a.wait_for(lambda: len(set(a.ids)) == 30, 30)
            # an invalid file (an unknown key) is refused; the process keeps routing to `a`
            path.write_text(path.read_text() + "bogus: 1\n")
            os.kill(proc.pid, signal.SIGHUP)
            await eventually(lambda: "Reload refused" in log.read_text(), 10)
            second = list(generate(30, seed=43))
            await produce(kafka_bootstrap, topic, second)
            await a.wait_for(lambda: len(set(a.ids)) == 60, 20)
            assert proc.poll() is None
            # a valid file adding `c` is applied: `c` gets what comes next
            cfg["destinations"].append(webhook("c", f"{c.url}/events"))
            write_config(path, cfg)
            os.kill(proc.pid, signal.SIGHUP)
            await eventually(lambda: "Config reloaded" in log.read_text(), 10)
            third = list(generate(30, seed=44))
            await produce(kafka_bootstrap, topic, third)
            want = {e["messageId"] for e in third}
            await c.wait_for(lambda: want <= set(c.ids), 20)
            await a.wait_for(lambda: want <= set(a.ids), 20)
            # nothing reached `a` twice, and nothing before the reload reached `c`
            assert len(a.ids) == len(set(a.ids)) == 90
            assert not {e["messageId"] for e in first + second} & set(c.ids)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(proc.wait, 30)
            except Exception:
                kill9(proc)
