"""Topic administration: creating the router's own topics, listing partitions, and the
partition a key goes to."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.conn import collect_hosts, create_conn
from aiokafka.errors import (
    IllegalSaslStateError,
    KafkaConnectionError,
    SaslAuthenticationFailed,
    TopicAlreadyExistsError,
    UnsupportedSaslMechanismError,
)
from aiokafka.partitioner import murmur2

# A broker that answers but refuses the client's SASL login. aiokafka reports these
# as "Unable to bootstrap" (KafkaConnectionError), like a broker that is down.
REFUSALS = (SaslAuthenticationFailed, UnsupportedSaslMechanismError, IllegalSaslStateError)
# The options of a client that also apply to one connection (create_conn's keywords).
CONNECTION_OPTIONS = ("client_id", "security_protocol", "ssl_context", "sasl_mechanism",
                      "sasl_plain_username", "sasl_plain_password")


def partition_of(key: bytes, partitions: int) -> int:
    """Kafka's default rule for a keyed record (murmur2, as the Java client and aiokafka)."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


async def start_admin(admin: AIOKafkaAdminClient, options: dict[str, Any]) -> None:
    """``admin.start()``, except that a broker refusing the credentials raises its own
    error (``SaslAuthenticationFailed`` ...) rather than ``KafkaConnectionError``: a
    wrong password is not "Kafka is not reachable yet" and waiting will not fix it."""
    try:
        await admin.start()
    except KafkaConnectionError:
        await raise_refusal(options)
        raise


async def raise_refusal(options: dict[str, Any]) -> None:
    """Log in once to each bootstrap server; raise the first refusal met."""
    settings = {k: options[k] for k in CONNECTION_OPTIONS if k in options}
    for host, port, _ in collect_hosts(options["bootstrap_servers"], randomize=False):
        try:
            conn = await asyncio.wait_for(create_conn(host, port, **settings), 10)
        except REFUSALS:
            raise
        except Exception:  # down or unreachable: the caller's error stands
            continue
        conn.close()


async def reach(options: dict[str, Any]) -> None:
    """Bootstrap once and let go: raises ``KafkaConnectionError`` while no broker answers
    (and ``start_admin``'s refusals)."""
    admin = AIOKafkaAdminClient(**options)
    try:
        await start_admin(admin, options)
    finally:
        with contextlib.suppress(Exception):  # closing a client that never started
            await admin.close()


async def ensure(options: dict[str, Any], names: list[str], partitions: int,
                 replication: int) -> list[str]:
    """Create the topics that do not exist yet; return the ones created. Raises
    ``KafkaConnectionError`` while no broker answers (as ``reach``)."""
    admin = AIOKafkaAdminClient(**options)
    try:
        await start_admin(admin, options)
        existing = set(await admin.list_topics())
        missing = [n for n in names if n not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # another replica won
                await admin.create_topics([NewTopic(n, partitions, replication)
                                           for n in missing])
        return missing
    finally:
        with contextlib.suppress(Exception):  # closing a client that never started
            await admin.close()


async def partitions(options: dict[str, Any], topic: str) -> list[int]:
    """The topic's partition ids; [] when it does not exist."""
    admin = AIOKafkaAdminClient(**options)
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return sorted(p["partition"] for t in described if t["error_code"] == 0
                  for p in t["partitions"])
