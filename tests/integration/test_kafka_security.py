"""The router against a Kafka that requires authentication (SASL_PLAINTEXT): the real
router process, the CLI's ``produce`` and ``replay``, and a broker of this module's own
that accepts its users by PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 and nothing
unauthenticated (``scripts.kafka.Broker(sasl_users=...)``)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from scripts.kafka import Broker
from tests.fakes.webhook import WebhookSink
from tests.integration.harness import (
    config_dict,
    eventually,
    headers,
    spawn,
    webhook,
    write_config,
)
from tests.integration.secured import all_committed, cli, read_all, track

pytestmark = pytest.mark.kafka
USERS = {"router": "router-secret", "loader": "loader-secret"}


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    broker = Broker(tmp_path_factory.mktemp("kafka-sasl"), sasl_users=USERS)
    broker.start()
    yield broker
    broker.stop()


def sasl(user: str, mechanism: str = "PLAIN", password: str | None = None) -> dict[str, str]:
    """The ``kafka`` config keys (also aiokafka's options) to log in as ``user``."""
    return {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": mechanism,
            "sasl_plain_username": user, "sasl_plain_password": password or USERS[user]}


async def test_the_router_runs_produces_and_replays_on_a_sasl_kafka(
        secured: Broker, tmp_path: Path) -> None:
    topic = "secured-events"
    async with WebhookSink() as sink:
        sink.reject_ids = {"rejected-1"}  # dead-lettered by the hook (replayable)
        cfg = config_dict(secured.bootstrap, topic, [webhook("hook", f"{sink.url}/events")],
                          **sasl("router"))
        path = write_config(tmp_path / "router.yaml", cfg)
        log = tmp_path / "router.log"
        proc = spawn(path, log)
        try:
            # the router creates its topics (admin client) and joins its group
            await eventually(lambda: "Router started." in log.read_text(), 45)
            # an authenticated producer of another user, by SCRAM
            loader = sasl("loader", "SCRAM-SHA-256")
            producer = AIOKafkaProducer(bootstrap_servers=secured.bootstrap, acks="all",
                                        **loader)
            await producer.start()
            try:
                for value in (*(orjson.dumps(track(i)) for i in ("ok-1", "rejected-1")),
                              b"not json"):
                    await producer.send_and_wait(topic, value)
            finally:
                await producer.stop()
            await sink.wait_for(lambda: sink.ids == ["ok-1"], 20)

            # the router's own producer writes the dead letters
            options = {"bootstrap_servers": secured.bootstrap, **loader}
            await eventually(lambda: all_committed(options, cfg["kafka"]["group_id"], topic),
                             20)
            dead = await read_all(options, f"{topic}.dlq")
            assert sorted(headers(r).get("destination", "-") for r in dead) == ["-", "hook"]
            assert b"not json" in [r.value for r in dead]

            # the CLI, with the same config (by SCRAM-SHA-512 this time)
            cli_cfg = {**cfg, "kafka": {**cfg["kafka"], **sasl("router", "SCRAM-SHA-512")}}
            cli_path = write_config(tmp_path / "cli.yaml", cli_cfg)
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


async def test_a_wrong_password_stops_the_router_with_one_line(
        secured: Broker, tmp_path: Path) -> None:
    cfg = config_dict(secured.bootstrap, "secured-refused", [webhook("hook", "http://127.0.0.1:9")],
                      **sasl("router", password="not-the-password"))
    log = tmp_path / "router.log"
    proc = spawn(write_config(tmp_path / "router.yaml", cfg), log)
    try:
        code = await asyncio.to_thread(proc.wait, 30)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert code == 1, text
    refused = [line for line in text.splitlines() if "Kafka refused" in line]
    assert len(refused) == 1 and "Authentication failed" in refused[0], text
    assert "Traceback" not in text and "not reachable yet" not in text, text
    assert "not-the-password" not in text

    # the CLI's Kafka commands too: one line naming the refusal, exit 1
    events = tmp_path / "events.ndjson"
    events.write_bytes(orjson.dumps(track("refused-1")) + b"\n")
    for args in (["produce", str(events)], ["replay"]):
        done = await asyncio.to_thread(cli, *args, "-c", str(tmp_path / "router.yaml"))
        assert done.returncode == 1, done.stderr
        assert f"{args[0]}: Kafka: SaslAuthenticationFailed" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr, done.stderr
