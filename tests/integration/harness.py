"""Running the real router against the session's Kafka, in-process or as a subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import orjson
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from router import topics
from router.app import Router
from router.config import Config
from router.demo import key_of
from router.telemetry import StatsCollector

ROOT = Path(__file__).resolve().parents[2]


def config_dict(bootstrap: str, topic: str, destinations: list[dict[str, Any]],
                **kafka: Any) -> dict[str, Any]:
    unique = uuid.uuid4().hex[:8]
    return {
        "kafka": {"bootstrap_servers": bootstrap, "topics": [topic],
                  "group_id": f"router-{unique}", "dead_letter_topic": f"{topic}.dlq",
                  "retry_topic_prefix": f"{topic}.retry", "commit_interval_ms": 200,
                  "created_topic_partitions": 2, **kafka},
        "server": {"listen": ""},
        "destinations": destinations,
    }


def webhook(name: str, url: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": "webhook", "settings": {"url": url},
            "batch": {"max_wait_ms": 50}, **extra}


@contextlib.asynccontextmanager
async def running(config: dict[str, Any] | Config) -> AsyncIterator[Router]:
    cfg = config if isinstance(config, Config) else Config.model_validate(config)
    router = Router(cfg)
    await router.start()
    task = asyncio.create_task(router.run(install_signals=False))
    try:
        yield router
    finally:
        router.stop()
        await asyncio.wait_for(task, 60)


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def spawn(config_path: Path, log_path: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "router.cli", "run", "-c", str(config_path)],
                            cwd=ROOT, env=env, stdout=log_path.open("ab"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def kill9(proc: subprocess.Popen[bytes]) -> None:
    """``kill -9`` the router. Its DuckDB child dies with it (PR_SET_PDEATHSIG), and
    multiprocessing's resource tracker, left alone, unlinks the child's semaphores (a
    kill of the whole group leaked five ``/dev/shm/sem.mp-*`` per kill). Whatever of the
    group is still there after 10 s is killed too."""
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)  # anyone left in the router's group?
        except ProcessLookupError:
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


async def produce(bootstrap: str, topic: str, values: Iterable[bytes | dict[str, Any]],
                  partition: int | None = None) -> int:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")
    await producer.start()
    futures = []
    try:
        for value in values:
            if isinstance(value, dict):
                key, raw = key_of(value), orjson.dumps(value)
            else:
                key, raw = None, value
            futures.append(await producer.send(topic, raw, key=key, partition=partition))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return len(futures)


async def read_all(bootstrap: str, topic: str, timeout_s: float = 10.0) -> list[Any]:
    """Every record currently in the topic."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    await asyncio.sleep(0)  # let aiokafka's no-group task start, or stop() raises
    try:
        deadline = time.monotonic() + timeout_s
        tps = [TopicPartition(topic, p)
               for p in await topics.partitions({"bootstrap_servers": bootstrap}, topic)]
        if not tps:
            return []
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        out: list[Any] = []
        left = {tp for tp in tps if ends[tp] > 0}
        while left and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for tp, records in batch.items():
                out.extend(r for r in records if r.offset < ends[tp])
                if records and records[-1].offset >= ends[tp] - 1:
                    left.discard(tp)
        return out
    finally:
        await consumer.stop()


async def committed(bootstrap: str, group: str, topic: str) -> dict[int, int | None]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                                enable_auto_commit=False)
    await consumer.start()
    await asyncio.sleep(0)  # let aiokafka's no-group task start, or stop() raises
    try:
        partitions = await topics.partitions({"bootstrap_servers": bootstrap}, topic)
        return {p: await consumer.committed(TopicPartition(topic, p)) for p in partitions}
    finally:
        await consumer.stop()


async def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    await asyncio.sleep(0)  # let aiokafka's no-group task start, or stop() raises
    try:
        partitions = await topics.partitions({"bootstrap_servers": bootstrap}, topic)
        tps = [TopicPartition(topic, p) for p in partitions]
        return {tp.partition: o for tp, o in (await consumer.end_offsets(tps)).items()}
    finally:
        await consumer.stop()


async def eventually(predicate: Any, timeout_s: float = 30.0, interval_s: float = 0.1) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        await asyncio.sleep(interval_s)


def headers(record: Any) -> dict[str, str]:
    return {k: v.decode() for k, v in record.headers or ()}


def metrics(router: Router) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The router's standard metrics, as Prometheus would scrape them."""
    registry = CollectorRegistry()
    registry.register(StatsCollector(router.stats))
    text = generate_latest(registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}
