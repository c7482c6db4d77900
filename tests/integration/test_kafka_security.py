"""The router against a Kafka that requires authentication (SASL_PLAINTEXT): the real
router process, the CLI's ``produce`` and ``replay``, and a broker of this module's own
that accepts its users by PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 and nothing
unauthenticated (``scripts.kafka.Broker(sasl_users=...)``)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from scripts.kafka import Broker
from tests.integration.harness import (
    config_dict,
    spawn,
    webhook,
    write_config,
)
from tests.integration.secured import cli, routes_dead_letters_and_replays, track

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
    """The router by PLAIN; another client (the loader) by SCRAM-SHA-256; the CLI by
    SCRAM-SHA-512."""
    cfg = config_dict(secured.bootstrap, "secured-events", [webhook("hook", "")],
                      **sasl("router"))
    loader = {"bootstrap_servers": secured.bootstrap, **sasl("loader", "SCRAM-SHA-256")}
    await routes_dead_letters_and_replays(cfg, loader, tmp_path,
                                          cli_kafka=sasl("router", "SCRAM-SHA-512"))


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
