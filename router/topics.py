"""Topic administration: creating the router's own topics, listing partitions, and the
partition a key goes to."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.conn import collect_hosts, create_conn
from aiokafka.errors import (
    IllegalSaslStateError,
    KafkaConnectionError,
    KafkaError,
    SaslAuthenticationFailed,
    TopicAlreadyExistsError,
    UnsupportedSaslMechanismError,
)
from aiokafka.partitioner import murmur2

from router.telemetry import logger

log = logger("router.topics")


class TLSHandshakeFailed(KafkaError):
    """No TLS session with a broker that answered: the client does not trust the
    broker's certificate (wrong ``ssl_cafile``, a name the certificate does not carry),
    or the broker refused the client's (none, or one it does not trust)."""


# A broker that answers but refuses the client's SASL login or TLS handshake. aiokafka
# reports these as "Unable to bootstrap" (KafkaConnectionError), like a broker that is down.
REFUSALS = (SaslAuthenticationFailed, UnsupportedSaslMechanismError, IllegalSaslStateError,
            TLSHandshakeFailed)
# TLS errors that only say the connection went away (a broker stopping mid-handshake):
# those stay "not reachable"; any other SSLError is a disagreement waiting will not fix.
TLS_CONNECTION_LOST = (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError,
                       ssl.SSLWantReadError, ssl.SSLWantWriteError)
# Room for the headers the router adds to a record it parks or dead-letters.
HEADER_ROOM = 64 * 1024
# The options of a client that also apply to one connection (create_conn's keywords).
CONNECTION_OPTIONS = ("client_id", "security_protocol", "ssl_context", "sasl_mechanism",
                      "sasl_plain_username", "sasl_plain_password")


def partition_of(key: bytes, partitions: int) -> int:
    """Kafka's default rule for a keyed record (murmur2, as the Java client and aiokafka)."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


async def start_admin(admin: AIOKafkaAdminClient, options: dict[str, Any]) -> None:
    """``admin.start()``, except that a broker refusing the credentials raises its own
    error (``SaslAuthenticationFailed``, ``TLSHandshakeFailed`` ...) rather than
    ``KafkaConnectionError``: a wrong password or CA is not "Kafka is not reachable yet"
    and waiting will not fix it."""
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
        except Exception as exc:  # down or unreachable: the caller's error stands
            tls = _tls_failure(exc)
            if tls is not None:
                raise TLSHandshakeFailed(f"{host}:{port}: {tls} ({_tls_hint(tls)})") from tls
            continue
        conn.close()


def _tls_failure(exc: BaseException) -> ssl.SSLError | None:
    """The failed TLS handshake behind a failed connection, if that is what it was. Our
    own check of the broker's certificate fails in the handshake (SSLCertVerificationError);
    the broker's rejection of ours arrives as an alert on the first read, which aiokafka
    reports as "Connection closed" caused by it."""
    for error in (exc, exc.__cause__):
        if isinstance(error, ssl.SSLError) and not isinstance(error, TLS_CONNECTION_LOST):
            return error
    return None


def _tls_hint(error: ssl.SSLError) -> str:
    """Which setting to look at, in words (OpenSSL's own are terse)."""
    if isinstance(error, ssl.SSLCertVerificationError):
        return "the broker's certificate is not trusted: check ssl_cafile and the host name"
    if "ALERT" in (error.reason or ""):  # e.g. TLSV13_ALERT_CERTIFICATE_REQUIRED
        return ("the broker rejected the handshake: does it require a client certificate "
                "(ssl_certfile, ssl_keyfile) signed by a CA it trusts?")
    return "the client's and the broker's TLS settings do not match"


async def ensure(options: dict[str, Any], names: list[str], partitions: int,
                 replication: int, sources: list[str] | None = None,
                 min_record_bytes: int = 0, keep: str | None = None) -> dict[str, int]:
    """Create the topics that do not exist yet. Raises ``KafkaConnectionError`` while no
    broker answers. Returns each topic's record size limit (``max.message.bytes``) where
    it could be read.

    The router's own topics (those not in ``sources``) are created to take any record
    their sources take (their largest limit; at least ``min_record_bytes``) plus the
    router's headers: a record the source took but the dead-letter or a retry topic
    refused could not be kept whole. ``keep`` (the dead-letter topic) is created with no
    time limit on its records: a dead letter waits for an operator, who may take longer
    than the broker's default week."""
    admin = AIOKafkaAdminClient(**options)
    try:
        await start_admin(admin, options)
        existing = set(await admin.list_topics())
        missing = [n for n in names if n not in existing]
        own = [n for n in missing if n not in (sources or ())]
        configs: dict[str, str] = {}
        if own:
            read = await _record_limits(admin, [t for t in sources or () if t in existing])
            largest = max([DEFAULT_RECORD_BYTES, min_record_bytes, *read.values()])
            configs["max.message.bytes"] = str(largest + HEADER_ROOM)
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # another replica won
                await admin.create_topics([
                    NewTopic(n, partitions, replication, topic_configs=(
                        {} if n not in own else
                        {**configs, "retention.ms": "-1"} if n == keep else configs))
                    for n in missing])
        return await _record_limits(admin, names)
    finally:
        with contextlib.suppress(Exception):  # closing a client that never started
            await admin.close()


async def record_limits(options: dict[str, Any], names: list[str]) -> dict[str, int]:
    """``_record_limits`` with an admin client of its own."""
    admin = AIOKafkaAdminClient(**options)
    try:
        await start_admin(admin, options)
        return await _record_limits(admin, names)
    finally:
        with contextlib.suppress(Exception):
            await admin.close()


async def _record_limits(admin: AIOKafkaAdminClient, topics: list[str]) -> dict[str, int]:
    """Each topic's ``max.message.bytes`` (its own, else the broker's default); none
    where it cannot be read (e.g. without DescribeConfigs rights)."""
    if not topics:
        return {}
    try:
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, t, {"max.message.bytes": None})
             for t in topics])
    except KafkaError as exc:
        log.warning("Could not read the topics' record size limits; records too large "
                    "for a topic are found when it refuses them.", error=repr(exc))
        return {}
    limits: dict[str, int] = {}
    for response in responses:
        for resource in response.resources:  # (error, message, type, name, entries)
            for entry in resource[4]:  # (name, value, read_only, ...)
                if entry[0] == "max.message.bytes" and str(entry[1]).isdigit():
                    limits[resource[3]] = int(entry[1])
    return limits


DEFAULT_RECORD_BYTES = 1_048_588  # Kafka's default message.max.bytes


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
