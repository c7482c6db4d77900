"""Webhook: POSTs a JSON array of events to a URL, optionally signed.

The signature is ``X-Signature: sha256=<hex HMAC-SHA256 of the body>`` with the shared
secret, the convention GitHub and Segment webhooks use; receivers recompute it over the
raw body.
"""

from __future__ import annotations

import hashlib
import hmac

import orjson
from pydantic import Field, SecretStr

from destinations.base import Connector, ConnectorSettings, Encoded, Event, Limits, Request


class Settings(ConnectorSettings):
    url: str = Field(description="Where to POST each batch, a JSON array of Segment-spec events.")
    secret: SecretStr | None = Field(
        None, description="Shared secret; when set, each request carries "
        "`X-Signature: sha256=<HMAC-SHA256 of the body>`.")
    signature_header: str = Field("X-Signature", description="Header that carries the signature.")
    headers: dict[str, str] = Field(
        default_factory=dict, description="Extra headers sent with every request.")


def encode(events: list[Event], settings: Settings) -> Encoded:
    body = orjson.dumps(events)
    headers = {"Content-Type": "application/json", **settings.headers}
    if settings.secret is not None:
        digest = hmac.new(settings.secret.get_secret_value().encode(), body, hashlib.sha256)
        headers[settings.signature_header] = "sha256=" + digest.hexdigest()
    return Encoded([Request(settings.url, body, list(range(len(events))), headers)])


CONNECTOR = Connector(
    name="webhook",
    display_name="Webhook",
    settings=Settings,
    limits=Limits(max_events=1000, max_bytes=5_000_000),
    encode=encode,
)
