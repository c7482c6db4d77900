"""A contract fake of Amplitude's HTTP V2 API (``POST /2/httpapi``).

Enforces what Amplitude documents (amplitude.com/docs/apis/analytics/http-v2,
.../http-api-batching-retries, the SDKs' response models):

- ``Content-Type: application/json`` and a JSON object body, else 400;
- ``api_key`` equal to the project's key, else 400 ``Invalid API key``;
- a non-empty ``events`` list, else 400 with ``missing_field: "events"``;
- at most 2,000 events and a body under 1 MB, else 413 ``Payload too large``;
- per event: ``event_type`` present, a ``user_id`` or ``device_id``, each id at least
  5 characters (or ``options.min_id_length``), ``time`` an integer (ms) when present;
  any failure → 400 listing the bad indices under ``events_with_missing_fields``,
  ``events_with_invalid_fields`` or ``events_with_invalid_id_lengths``, and NOTHING in
  the request is ingested (Amplitude's documented 400 behaviour);
- success → 200 ``{"code":200,"events_ingested":N,"payload_size_bytes":B,
  "server_upload_time":ms}``.

``received`` holds every ingested Amplitude event (dict); ``silence(device_id)`` makes
the fake report that device's events in ``silenced_events``.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from aiohttp import web

from tests.fakes.base import FakeServer, respond

PATH = "/2/httpapi"
MAX_EVENTS = 2000
MAX_BYTES = 1_000_000
DEFAULT_MIN_ID_LENGTH = 5


class AmplitudeFake(FakeServer):
    def __init__(self, api_key: str = "amp-test-key") -> None:
        self.api_key = api_key
        self.silenced_devices: set[str] = set()
        super().__init__()

    def routes(self, app: web.Application) -> None:
        # aiohttp refuses bodies over 1 MiB by itself; let the vendor's own limit decide.
        app.router.add_post(PATH, self.httpapi)

    @property
    def endpoint(self) -> str:
        return self.url + PATH

    def silence(self, device_id: str) -> None:
        self.silenced_devices.add(device_id)

    async def httpapi(self, request: web.Request) -> web.Response:
        raw = await request.read()
        if len(raw) >= MAX_BYTES:
            return respond(413, {"code": 413, "error": "Payload too large"})
        if request.content_type != "application/json":
            return respond(400, {"code": 400, "error": "Content-Type must be application/json"})
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return respond(400, {"code": 400, "error": "Invalid JSON request body"})
        if not isinstance(body, dict):
            return respond(400, {"code": 400, "error": "Invalid JSON request body"})
        if body.get("api_key") != self.api_key:
            return respond(400, {"code": 400, "error": f"Invalid API key: {body.get('api_key')}"})
        events = body.get("events")
        if not isinstance(events, list) or not events:
            return respond(400, {"code": 400, "error": "Request missing required field",
                                 "missing_field": "events"})
        if len(events) > MAX_EVENTS:
            return respond(413, {"code": 413, "error": "Payload too large"})
        options = body.get("options") or {}
        min_length = options.get("min_id_length") or DEFAULT_MIN_ID_LENGTH
        problems = self._validate(events, min_length)
        if any(problems.values()):
            return respond(400, {"code": 400, "error": "Request has invalid or missing fields",
                                 **{k: v for k, v in problems.items() if v}})
        self.accept(events)
        return respond(200, {"code": 200, "events_ingested": len(events),
                             "payload_size_bytes": len(raw),
                             "server_upload_time": int(time.time() * 1000)})

    def _validate(self, events: list[Any], min_length: int) -> dict[str, Any]:
        missing: dict[str, list[int]] = {}
        invalid: dict[str, list[int]] = {}
        short: dict[str, list[int]] = {}
        silenced: list[int] = []
        for i, event in enumerate(events):
            if not isinstance(event, dict):
                invalid.setdefault("event", []).append(i)
                continue
            if not isinstance(event.get("event_type"), str) or not event["event_type"]:
                missing.setdefault("event_type", []).append(i)
            ids = {k: event.get(k) for k in ("user_id", "device_id") if event.get(k)}
            if not ids:
                missing.setdefault("user_id", []).append(i)
            for key, value in ids.items():
                if not isinstance(value, str):
                    invalid.setdefault(key, []).append(i)
                elif len(value) < min_length:
                    short.setdefault(key, []).append(i)
            if "time" in event and (not isinstance(event["time"], int)
                                    or isinstance(event["time"], bool)):
                invalid.setdefault("time", []).append(i)
            if event.get("device_id") in self.silenced_devices:
                silenced.append(i)
        return {"events_with_missing_fields": missing, "events_with_invalid_fields": invalid,
                "events_with_invalid_id_lengths": short, "silenced_events": silenced,
                "silenced_devices": sorted(self.silenced_devices) if silenced else []}
