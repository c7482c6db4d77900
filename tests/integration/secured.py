"""Helpers for the tests against secured brokers (SASL, TLS): the CLI as a process, and
reading a topic or a group's commits with a client's own security options."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from router import topics
from tests.fakes.webhook import WebhookSink
from tests.integration.harness import ROOT, eventually, headers, spawn, write_config


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "router.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


async def read_all(options: dict[str, Any], topic: str) -> list[Any]:
    """Every record in ``topic``, read as the client ``options`` describe."""
    tps = [TopicPartition(topic, p) for p in await topics.partitions(options, topic)]
    consumer = AIOKafkaConsumer(**options, enable_auto_commit=False)
    await consumer.start()
    await asyncio.sleep(0)  # let aiokafka's no-group task start, or stop() raises
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        out: list[Any] = []
        while len(out) < sum(ends.values()):
            batch = await consumer.getmany(timeout_ms=500)
            out += [r for records in batch.values() for r in records]
        return out
    finally:
        await consumer.stop()


async def all_committed(options: dict[str, Any], group: str, topic: str) -> bool:
    """The group's committed offsets have reached the end of every partition."""
    consumer = AIOKafkaConsumer(**options, group_id=group, enable_auto_commit=False)
    await consumer.start()
    await asyncio.sleep(0)
    try:
        tps = [TopicPartition(topic, p) for p in await topics.partitions(options, topic)]
        ends = await consumer.end_offsets(tps)
        # a partition that never had a record has nothing committed (None): its end is 0
        return all([(await consumer.committed(tp) or 0) == ends[tp] for tp in tps])
    finally:
        await consumer.stop()


def track(message_id: str) -> dict[str, Any]:
    return {"type": "track", "event": "Secured", "userId": f"u-{message_id}",
            "messageId": message_id}


async def routes_dead_letters_and_replays(cfg: dict[str, Any], options: dict[str, Any],
                                          tmp_path: Path, cli_kafka: dict[str, Any]) -> None:
    """The whole secured path, black-box: the router process (``cfg``, a webhook
    destination ``hook`` pointing at nothing yet: its url is set here) creates its topics,
    joins its group, delivers, dead-letters a refused event and a malformed record with its
    own producer, and commits; then the CLI's ``produce`` and ``replay`` (``cfg`` with
    ``cli_kafka`` over its ``kafka`` keys) work too. ``options``: another client's, for
    producing and reading the topics."""
    async with WebhookSink() as sink:
        sink.reject_ids = {"rejected-1"}  # dead-lettered by the hook (replayable)
        cfg["destinations"][0]["settings"]["url"] = f"{sink.url}/events"
        topic = cfg["kafka"]["topics"][0]
        log = tmp_path / "router.log"
        proc = spawn(write_config(tmp_path / "router.yaml", cfg), log)
        try:
            await eventually(lambda: "Router started." in log.read_text(), 45)
            producer = AIOKafkaProducer(**options, acks="all")
            await producer.start()
            try:
                for value in (*(orjson.dumps(track(i)) for i in ("ok-1", "rejected-1")),
                              b"not json"):
                    await producer.send_and_wait(topic, value)
            finally:
                await producer.stop()
            await sink.wait_for(lambda: sink.ids == ["ok-1"], 20)
            await eventually(lambda: all_committed(options, cfg["kafka"]["group_id"], topic),
                             30)
            dead = await read_all(options, f"{topic}.dlq")
            assert sorted(headers(r).get("destination", "-") for r in dead) == ["-", "hook"]
            assert b"not json" in [r.value for r in dead]

            cli_path = write_config(tmp_path / "cli.yaml",
                                    {**cfg, "kafka": {**cfg["kafka"], **cli_kafka}})
            events = tmp_path / "events.ndjson"
            events.write_bytes(orjson.dumps(track("cli-1")) + b"\n")
            sent = await asyncio.to_thread(cli, "produce", "-c", str(cli_path), str(events))
            assert sent.returncode == 0 and "published 1 events" in sent.stdout, sent.stderr
            await sink.wait_for(lambda: "cli-1" in sink.ids, 20)

            sink.reject_ids = set()  # the hook is fixed
            replayed = await asyncio.to_thread(cli, "replay", "-c", str(cli_path))
            assert replayed.returncode == 0, replayed.stderr
            assert orjson.loads(replayed.stdout)["by_destination"] == {"hook": 1}
            await sink.wait_for(lambda: "rejected-1" in sink.ids, 20)

            proc.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(proc.wait, 30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
    assert sorted(sink.ids) == ["cli-1", "ok-1", "rejected-1"]
    assert "Traceback" not in log.read_text()


async def assert_refused(cfg: dict[str, Any], tmp_path: Path, error: str, reason: str) -> str:
    """``run``, ``produce`` and ``replay`` with ``cfg`` each stop at once with exit code 1
    and one line naming ``error`` and ``reason`` (no traceback, no waiting for a Kafka
    that answered); the router's log."""
    path = write_config(tmp_path / "router.yaml", cfg)
    log = tmp_path / "router.log"
    proc = spawn(path, log)
    try:
        code = await asyncio.to_thread(proc.wait, 30)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert code == 1, text
    refused = [line for line in text.splitlines() if "Kafka refused" in line]
    assert len(refused) == 1 and error in refused[0] and reason in refused[0], text
    assert "Traceback" not in text and "not reachable yet" not in text, text

    events = tmp_path / "events.ndjson"
    events.write_bytes(orjson.dumps(track("refused-1")) + b"\n")
    for args in (["produce", str(events)], ["replay"]):
        done = await asyncio.to_thread(cli, *args, "-c", str(path))
        assert done.returncode == 1, done.stderr
        assert f"{args[0]}: Kafka: {error}" in done.stderr, done.stderr
        assert reason in done.stderr and "Traceback" not in done.stderr, done.stderr
    return text
