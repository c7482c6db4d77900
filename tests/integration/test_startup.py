"""Start-up before Kafka: the router waits for the brokers (a log line per attempt),
answers ``/healthz`` and says not ready meanwhile, then runs once a broker answers; a
SIGTERM while it waits stops it cleanly. The real router process, the real broker
(reached, late, through a local TCP forwarder)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.fakes.webhook import WebhookSink
from tests.integration.harness import (
    config_dict,
    eventually,
    produce,
    spawn,
    webhook,
    write_config,
)

pytestmark = pytest.mark.kafka
WAITING = "Kafka is not reachable yet"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def forwarder(port: int, target: str) -> AsyncIterator[None]:
    """127.0.0.1:``port`` -> ``target`` (host:port), both ways, until the block ends."""
    host, _, target_port = target.rpartition(":")

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(host, int(target_port))
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    try:
        yield
    finally:
        server.close()


async def status(url: str) -> int:
    try:
        async with aiohttp.ClientSession() as http, http.get(url) as resp:
            return resp.status
    except aiohttp.ClientError:
        return 0


def config_before_kafka(kafka_port: int, topic: str, sink_url: str) -> tuple[dict[str, Any],
                                                                             str]:
    cfg = config_dict(f"127.0.0.1:{kafka_port}", topic, [webhook("hook", sink_url)])
    listen = f"127.0.0.1:{free_port()}"
    cfg["server"] = {"listen": listen}
    return cfg, f"http://{listen}"


async def wait_in_log(log: Path, text: str, timeout_s: float = 30) -> None:
    await eventually(lambda: log.exists() and text in log.read_text(), timeout_s)


def stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(30)


async def test_the_router_waits_for_kafka_then_runs(kafka_bootstrap: str, make_topic: Any,
                                                    tmp_path: Path) -> None:
    topic = await make_topic()
    kafka_port = free_port()  # nothing listens here until the forwarder starts
    async with WebhookSink() as sink:
        cfg, base = config_before_kafka(kafka_port, topic, f"{sink.url}/events")
        log = tmp_path / "router.log"
        proc = spawn(write_config(tmp_path / "router.yaml", cfg), log)
        try:
            await wait_in_log(log, WAITING)
            await eventually(lambda: status(f"{base}/healthz"), 10)
            assert await status(f"{base}/healthz") == 200  # alive, and says so
            assert await status(f"{base}/readyz") == 503  # but not ready
            assert proc.poll() is None
            async with forwarder(kafka_port, kafka_bootstrap):
                async def ready() -> bool:
                    return await status(f"{base}/readyz") == 200

                await eventually(ready, 60)
                await produce(kafka_bootstrap, topic, [
                    {"type": "track", "event": "Late", "userId": "user-1",
                     "messageId": "late-1"}])
                await sink.wait_for(lambda: sink.ids == ["late-1"], 30)
                assert stop(proc) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
    assert "Router started." in log.read_text()


async def test_sigterm_while_waiting_for_kafka_stops_cleanly(make_topic: Any,
                                                             tmp_path: Path) -> None:
    topic = await make_topic()
    cfg, _ = config_before_kafka(free_port(), topic, "http://127.0.0.1:9/events")
    log = tmp_path / "router.log"
    proc = spawn(write_config(tmp_path / "router.yaml", cfg), log)
    try:
        await wait_in_log(log, WAITING)
        assert stop(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert "Router stopped." in text and "Traceback" not in text
