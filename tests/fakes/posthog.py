"""A PostHog capture fake: ``POST /batch/``.

Documented facts it enforces (posthog.com/docs/api/capture "Batch events" and "Invalid
events"; posthog.com/docs/api/post-only-endpoints "Responses"; the Rust capture service's
``CaptureError`` → status mapping in PostHog/posthog ``rust/capture/src/api.rs``):

- the body is a JSON object: ``{"api_key", "historical_migration"?, "batch": [...]}``;
  unparseable JSON, a non-list or empty ``batch``, a non-object item or ``properties``, a
  ``uuid`` that is not a UUID, a non-boolean ``historical_migration`` → 400;
- ``api_key`` missing or not the project's key → 401 with the documented
  ``{"type": "authentication_error", "code": "invalid_api_key", "detail": …}``;
- the whole body must be under 20 MB (``max_bytes``, lowerable for tests) → else 413;
- success is 200 ``{"status": 1}`` — which "does not imply that events are valid": an item
  without a name, without a ``distinct_id`` (top level or in ``properties``) or with an
  empty one is not ingested although the answer is 200 (as documented; the current Rust
  service answers 400 instead), and a ``timestamp`` that is not ISO 8601 is replaced by
  the ingestion time, and an event over 1 MB is discarded (docs/data/ingestion-warnings:
  "Discarded event exceeding 1MB limit"). Such items go to ``.invalid`` instead of
  ``.received``; tests assert ``.invalid`` stays empty;
- an ingested event with no ``$ip`` property and no ``$geoip_disable`` is located by GeoIP at
  the sender's address (docs/cdp/geoip-enrichment: the IP "of the client that sent the
  event"), which for a server is its data centre: such items are also listed in
  ``.located_at_sender``;
- 429 (rate or billing limit) and 503 (retryable sink error) are available via
  ``fail_next``.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import orjson
from aiohttp import web

from tests.fakes.base import FakeServer, respond

MAX_EVENT_BYTES = 1_000_000
INVALID_KEY = {"type": "authentication_error", "code": "invalid_api_key",
               "detail": "Project API key invalid. You can find your project API key in "
                         "PostHog project settings."}


def bad_request(detail: str) -> web.Response:
    return respond(400, {"type": "validation_error", "code": "invalid_payload",
                         "detail": detail, "attr": None})


class PostHogFake(FakeServer):
    def __init__(self, api_key: str = "phc_test_project_key", max_bytes: int = 20_000_000
                 ) -> None:
        self.api_key = api_key
        self.max_bytes = max_bytes
        self.invalid: list[tuple[Any, str]] = []  # (item, why PostHog would not ingest it)
        self.batches: list[dict[str, Any]] = []  # accepted bodies without their items
        self.located_at_sender: list[Any] = []  # ingested items GeoIP puts at our address
        super().__init__()

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/batch/", self.batch)
        app.router.add_post("/batch", self.batch)

    async def batch(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        if len(raw) >= self.max_bytes:
            return respond(413, "Payload Too Large")
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return bad_request(f"failed to parse request: {exc}")
        if not isinstance(body, dict):
            return bad_request("failed to parse request: expected an object")
        if not body.get("api_key") or body["api_key"] != self.api_key:
            return respond(401, INVALID_KEY)
        items = body.get("batch")
        if not isinstance(items, list) or not items:
            return bad_request("request holds no event")
        if not isinstance(body.get("historical_migration", False), bool):
            return bad_request("historical_migration must be a boolean")
        for item in items:
            problem = self._malformed(item)
            if problem:
                return bad_request(f"failed to parse request: {problem}")
        accepted = []
        for item in items:
            reason = self._dropped(item)
            if reason:
                self.invalid.append((item, reason))
            else:
                accepted.append(item)
                props = item.get("properties") or {}
                if not props.get("$ip") and not props.get("$geoip_disable"):
                    self.located_at_sender.append(item)
        self.batches.append({k: v for k, v in body.items() if k != "batch"})
        self.accept(accepted)
        return respond(200, {"status": 1})

    @staticmethod
    def _malformed(item: Any) -> str | None:
        """What makes the whole request fail to parse (400)."""
        if not isinstance(item, dict):
            return "an event is not an object"
        if not isinstance(item.get("properties", {}), dict):
            return "properties is not an object"
        if "uuid" in item:
            try:
                uuid.UUID(str(item["uuid"]))
            except ValueError:
                return f"uuid {item['uuid']!r} is not a UUID"
        return None

    @staticmethod
    def _dropped(item: dict[str, Any]) -> str | None:
        """Why PostHog would answer 200 and still not ingest the event as sent."""
        if not isinstance(item.get("event"), str) or not item["event"]:
            return "event has no name"
        if len(orjson.dumps(item)) > MAX_EVENT_BYTES:
            return "event exceeds the 1MB limit"
        distinct_id = item.get("distinct_id", (item.get("properties") or {}).get("distinct_id"))
        if distinct_id is None or str(distinct_id) == "":
            return "event has no distinct_id"
        timestamp = item.get("timestamp")
        if timestamp is not None:
            try:
                datetime.fromisoformat(str(timestamp))
            except ValueError:
                return f"timestamp {timestamp!r} is not ISO 8601"
        return None
