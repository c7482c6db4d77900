"""The router against a Kafka that requires authentication (SASL_PLAINTEXT): the real
router process, the CLI's ``produce`` and ``replay``, and a broker of this module's own
that accepts its users by PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 and nothing
unauthenticated (``scripts.kafka.Broker(sasl_users=...)``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts.kafka import Broker
from tests.integration.harness import (
    config_dict,
    webhook,
)
from tests.integration.secured import assert_refused, routes_dead_letters_and_replays

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
    text = await assert_refused(cfg, tmp_path, "SaslAuthenticationFailed",
                                "Authentication failed")
    assert "not-the-password" not in text
