"""The router against a Kafka that speaks only TLS: the real router process, the CLI's
``produce`` and ``replay``, a broker of this module's own (``scripts.kafka.Broker``
with ``ssl_keystore``) and certificates made here, for this run only. A client that
does not trust the broker's certificate, or that the broker does not trust, is refused
at once (one line, exit 1), not waited for as if Kafka were down."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka.helpers import create_ssl_context
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from scripts.kafka import Broker
from tests.fakes.webhook import WebhookSink
from tests.integration.harness import config_dict, eventually, spawn, webhook, write_config
from tests.integration.secured import (
    assert_refused,
    cli,
    routes_dead_letters_and_replays,
    track,
)

pytestmark = pytest.mark.kafka
USERS = {"router": "router-secret"}
Key = ec.EllipticCurvePrivateKey


# --- a throwaway PKI ---------------------------------------------------------------


def _certificate(subject: str, key: Key, issuer: tuple[x509.Name, Key] | None,
                 extensions: list[tuple[x509.ExtensionType, bool]]) -> x509.Certificate:
    """A certificate valid for a day; self-signed when ``issuer`` is None."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer_name, issuer_key = issuer or (name, key)
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer_name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1)))
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical)
    return builder.sign(issuer_key, hashes.SHA256())


def make_ca(subject: str) -> tuple[Key, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    usage = x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                          content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False,
                          encipher_only=False, decipher_only=False)
    return key, _certificate(subject, key, None, [
        (x509.BasicConstraints(ca=True, path_length=None), True), (usage, True),
        (x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)])


def make_leaf(subject: str, ca: tuple[Key, x509.Certificate],
              names: list[x509.GeneralName]) -> tuple[Key, x509.Certificate]:
    """A certificate for ``names``, good for a server and a client (the broker is both:
    it connects to its own listener)."""
    ca_key, ca_cert = ca
    key = ec.generate_private_key(ec.SECP256R1())
    usage = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                   ExtendedKeyUsageOID.CLIENT_AUTH])
    return key, _certificate(subject, key, (ca_cert.subject, ca_key), [
        (x509.BasicConstraints(ca=False, path_length=None), True),
        (x509.SubjectAlternativeName(names), False), (usage, False),
        (x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False)])


def pem(item: Key | x509.Certificate) -> bytes:
    if isinstance(item, x509.Certificate):
        return item.public_bytes(serialization.Encoding.PEM)
    # Kafka's PEM key store reads PKCS#8 keys
    return item.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption())


@dataclass
class Pki:
    ca: Path  # the CA that signed the broker's and the router's certificates
    wrong_ca: Path  # another CA, which signed nothing here
    broker: Path  # the broker's key and certificate, as Kafka's PEM key store
    client_cert: Path  # the router's certificate (mutual TLS)
    client_key: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca = make_ca("event-router test CA")
    wrong_cert = make_ca("event-router wrong CA")[1]
    broker_key, broker_cert = make_leaf("kafka", ca, [
        x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    client_key, client_cert = make_leaf("router", ca, [x509.DNSName("router")])
    files = {"ca": pem(ca[1]), "wrong_ca": pem(wrong_cert),
             "broker": pem(broker_key) + pem(broker_cert),
             "client_cert": pem(client_cert), "client_key": pem(client_key)}
    for name, data in files.items():
        (d / f"{name}.pem").write_bytes(data)
    return Pki(**{name: d / f"{name}.pem" for name in files})


@pytest.fixture(scope="module")
def tls_broker(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    broker = Broker(tmp_path_factory.mktemp("kafka-tls"), ssl_keystore=pki.broker,
                    ssl_cafile=pki.ca)
    broker.start()
    yield broker
    broker.stop()


def tls(cafile: Path) -> dict[str, str]:
    """The ``kafka`` config keys to reach the broker by TLS, trusting ``cafile``."""
    return {"security_protocol": "SSL", "ssl_cafile": str(cafile)}


def client_options(broker: Broker, pki: Pki) -> dict[str, Any]:
    """aiokafka's options for the test's own clients."""
    return {"bootstrap_servers": broker.bootstrap, "security_protocol": "SSL",
            "ssl_context": create_ssl_context(cafile=str(pki.ca))}


async def stop(proc: Any) -> None:
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(proc.wait, 30) == 0


# --- the tests ----------------------------------------------------------------------


async def test_the_router_runs_produces_and_replays_on_a_tls_kafka(
        tls_broker: Broker, pki: Pki, tmp_path: Path) -> None:
    cfg = config_dict(tls_broker.bootstrap, "tls-events", [webhook("hook", "")],
                      **tls(pki.ca))
    await routes_dead_letters_and_replays(cfg, client_options(tls_broker, pki), tmp_path,
                                          cli_kafka={})


async def test_a_broker_certificate_from_another_ca_stops_the_router_with_one_line(
        tls_broker: Broker, pki: Pki, tmp_path: Path) -> None:
    cfg = config_dict(tls_broker.bootstrap, "tls-refused",
                      [webhook("hook", "http://127.0.0.1:9")], **tls(pki.wrong_ca))
    await assert_refused(cfg, tmp_path, "TLSHandshakeFailed", "CERTIFICATE_VERIFY_FAILED")


async def test_sasl_ssl_with_a_client_certificate(pki: Pki, tmp_path: Path,
                                                  tmp_path_factory: pytest.TempPathFactory
                                                  ) -> None:
    """SASL over TLS, on a broker that also wants each client's certificate (mutual
    TLS): the router logs in and delivers; without its certificate it is refused."""
    broker = Broker(tmp_path_factory.mktemp("kafka-mtls"), sasl_users=USERS,
                    ssl_keystore=pki.broker, ssl_cafile=pki.ca, ssl_client_auth=True)
    broker.start()
    try:
        login = {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
                 "sasl_plain_username": "router", "sasl_plain_password": USERS["router"],
                 "ssl_cafile": str(pki.ca)}
        async with WebhookSink() as sink:
            topic = "mtls-events"
            cfg = config_dict(broker.bootstrap, topic, [webhook("hook", f"{sink.url}/events")],
                              **login, ssl_certfile=str(pki.client_cert),
                              ssl_keyfile=str(pki.client_key))
            path = write_config(tmp_path / "router.yaml", cfg)
            log = tmp_path / "router.log"
            proc = spawn(path, log)
            try:
                await eventually(lambda: "Router started." in log.read_text(), 45)
                events = tmp_path / "events.ndjson"
                events.write_bytes(orjson.dumps(track("mtls-1")) + b"\n")
                sent = await asyncio.to_thread(cli, "produce", "-c", str(path), str(events))
                assert sent.returncode == 0, sent.stderr
                await sink.wait_for(lambda: sink.ids == ["mtls-1"], 20)
                await stop(proc)
            finally:
                if proc.poll() is None:
                    proc.kill()
            assert "Traceback" not in log.read_text()

        # the same login without a client certificate: the broker ends the handshake
        no_cert = config_dict(broker.bootstrap, topic, [webhook("hook", "http://127.0.0.1:9")],
                              **login)
        (tmp_path / "refused").mkdir()
        await assert_refused(no_cert, tmp_path / "refused", "TLSHandshakeFailed", "ALERT")
    finally:
        broker.stop()
