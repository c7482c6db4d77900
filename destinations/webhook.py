"""Webhook: POSTs a JSON array of events to a URL, optionally signed.

The signature is ``X-Signature: sha256=<hex HMAC-SHA256 of the body>`` with the shared
secret, the convention GitHub and Segment webhooks use; receivers recompute it over the
raw body.

Partial failures: a receiver may answer 2xx or 207 with
``{"errors": [{"index": 3, "reason": "...", "retryable": false}, ...]}``; the named
events (by position in the array) are rejected, or retried when ``retryable`` is true,
and the rest count as delivered. Any other body follows the default HTTP rules.
"""

from __future__ import annotations

import hashlib
import hmac

import orjson
from pydantic import Field, SecretStr

from destinations.base import (
    Connector,
    ConnectorSettings,
    Encoded,
    Event,
    Limits,
    Request,
    Response,
    classify_http,
    json_object,
)
from router.delivery.outcome import Outcome, Partial
from router.events import array_of


class Settings(ConnectorSettings):
    url: str = Field(description="Where to POST each batch, a JSON array of Segment-spec events.")
    secret: SecretStr | None = Field(
        None, description="Shared secret; when set, each request carries "
        "`X-Signature: sha256=<HMAC-SHA256 of the body>`.")
    signature_header: str = Field("X-Signature", description="Header that carries the signature.")
    headers: dict[str, str] = Field(
        default_factory=dict, description="Extra headers sent with every request.")


def encode(events: list[Event], settings: Settings) -> Encoded:
    return _encoded(orjson.dumps(events), len(events), settings)


def encode_raw(jsons: list[bytes], settings: Settings) -> Encoded:
    """The same body from the events' JSON as it is (no re-serialising)."""
    return _encoded(array_of(jsons), len(jsons), settings)


def _encoded(body: bytes, count: int, settings: Settings) -> Encoded:
    headers = {"Content-Type": "application/json", **settings.headers}
    if settings.secret is not None:
        digest = hmac.new(settings.secret.get_secret_value().encode(), body, hashlib.sha256)
        headers[settings.signature_header] = "sha256=" + digest.hexdigest()
    return Encoded([Request(settings.url, body, list(range(count)), headers)])


def classify(response: Response, request: Request) -> Outcome:
    outcome = classify_http(response, request)
    if not (200 <= response.status < 300) or b'"errors"' not in response.body:
        return outcome
    errors = json_object(response.body).get("errors") or []
    rejected: dict[int, str] = {}
    retry: dict[int, str] = {}
    for error in errors:
        index = error.get("index") if isinstance(error, dict) else None
        if isinstance(index, int) and 0 <= index < len(request.events):
            reason = str(error.get("reason") or "rejected by the receiver")
            (retry if error.get("retryable") else rejected)[index] = reason
    return Partial(rejected, retry) if rejected or retry else outcome


CONNECTOR = Connector(
    name="webhook",
    display_name="Webhook",
    other_names=("Webhooks",),  # Segment's catalog name
    settings=Settings,
    limits=Limits(max_events=1000, max_bytes=5_000_000),
    encode=encode,
    encode_raw=encode_raw,
    classify=classify,
    docs="""Identity: none needed — every event is sent as it is (after the destination's
transforms), keyed by its `messageId`, which receivers should use to deduplicate
(delivery is at-least-once). Partial failures: answer 2xx/207 with
`{"errors": [{"index": i, "reason": "...", "retryable": false}]}`.""",
)
