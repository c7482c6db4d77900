"""A webhook receiver: checks the HMAC signature and the JSON-array body, records each
event, and can answer with per-event errors (the webhook's partial-failure contract),
be slow, or fail."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from typing import Any

import orjson
from aiohttp import web

from tests.fakes.base import FakeServer, respond


class WebhookSink(FakeServer):
    def __init__(self, secret: str | None = None, delay_s: float = 0.0) -> None:
        self.secret = secret
        self.delay_s = delay_s
        self.reject_ids: set[str] = set()  # answered as per-event errors (not retryable)
        self.down_until = 0.0  # answer 503 until this loop time
        self.answering = asyncio.Event()  # cleared: requests are held until it is set
        self.answering.set()
        self.concurrent = 0
        self.max_concurrent = 0
        super().__init__()

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/events", self.events)

    @property
    def ids(self) -> list[str]:
        return [e["messageId"] for e in self.received]

    async def events(self, request: web.Request) -> web.Response:
        body = await request.read()
        if request.content_type != "application/json":
            return respond(415, {"error": "expected application/json"})
        if self.secret is not None:
            expected = "sha256=" + hmac.new(self.secret.encode(), body, hashlib.sha256
                                            ).hexdigest()
            if not hmac.compare_digest(request.headers.get("X-Signature", ""), expected):
                return respond(401, {"error": "bad signature"})
        try:
            events: Any = orjson.loads(body)
        except orjson.JSONDecodeError:
            return respond(400, {"error": "invalid JSON"})
        if not isinstance(events, list) or not all(
                isinstance(e, dict) and e.get("messageId") for e in events):
            return respond(400, {"error": "expected an array of events with messageId"})
        if asyncio.get_running_loop().time() < self.down_until:
            return respond(503, {"error": "down"})
        self.concurrent += 1
        self.max_concurrent = max(self.max_concurrent, self.concurrent)
        try:
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            await self.answering.wait()
        finally:
            self.concurrent -= 1
        errors = [{"index": i, "reason": "rejected by test", "retryable": False}
                  for i, e in enumerate(events) if e["messageId"] in self.reject_ids]
        self.accept([e for e in events if e["messageId"] not in self.reject_ids])
        return respond(200, {"errors": errors} if errors else {"ok": True})
