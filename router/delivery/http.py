"""The HTTP sender: one aiohttp session per destination, the single I/O seam for every
HTTP connector.

``HttpSender.send(events)`` (or ``send_prepared``, for a batch whose events were each
``prepare``d as they were routed) makes ONE attempt at a batch: encode, send each request,
classify each response, resolve ``Split`` (halve and resend) and ``Partial``; it returns
one outcome per event (Delivered, Retry or Rejected). Retrying, parking and dead
letters are the worker's job, not this module's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from destinations.base import (
    Connector,
    Credentials,
    Encoded,
    Event,
    Request,
    Response,
    classify_http,
)
from router.delivery.outcome import (
    DELIVERED,
    Delivered,
    Outcome,
    Partial,
    Rejected,
    Retry,
    Split,
)
from router.delivery.ratelimit import RateLimiter
from router.events import event_jsons, well_formed

Encoder = Callable[[list[Any], Any], Encoded]  # a connector's encode, encode_raw or encode_prepared


class HttpSender:
    def __init__(self, connector: Connector, settings: Any, *, concurrency: int = 4,
                 timeout_s: float = 10.0, max_bytes: int | None = None) -> None:
        assert connector.encode is not None
        self.connector = connector
        self.settings = settings
        self.concurrency = concurrency
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.session: aiohttp.ClientSession | None = None
        self.credentials: Credentials | None = None
        self._auth_lock = asyncio.Lock()
        self.on_response: Any = None  # callback(status: int, seconds: float) for metrics
        self.max_bytes = max_bytes or connector.limits.max_bytes
        self.limiter: RateLimiter | None = None  # the worker's; applied per request
        self.takes_raw = connector.encode_raw is not None  # send(events, raws) helps
        self.prepares = connector.prepare is not None  # the worker sends send_prepared()

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=max(2, self.concurrency * 2),
                                         keepalive_timeout=30, ttl_dns_cache=300)
        self.session = aiohttp.ClientSession(connector=connector, timeout=self.timeout,
                                             auto_decompress=True)

    async def close(self) -> None:
        if self.session:
            await self.session.close()
            self.session = None

    async def send(self, events: list[Event], raws: list[bytes | None] | None = None
                   ) -> list[Outcome]:
        """``raws``: each event's exact JSON when known (the record's bytes), else None;
        where it is known, the event may be None (``takes_raw``)."""
        connector = self.connector
        if self.prepares:
            return await self.send_prepared([self.prepare(event) for event in events])
        if raws is not None and connector.encode_raw is not None:
            return await self._send_batch(connector.encode_raw, event_jsons(events, raws))
        assert connector.encode is not None
        return await self._send_batch(connector.encode, events)

    def prepare(self, event: Event) -> bytes | str:
        """The connector's ``prepare``: one event's vendor JSON, or why it cannot be sent
        (also when the connector fails on it: an encoder bug must not lose the batch)."""
        try:
            return self.connector.prepare(event, self.settings)  # type: ignore[misc]
        except Exception as exc:
            # a context field of the wrong type (a number for `device`): sent without it
            fixed = well_formed(event) if type(event) is dict else None
            return self.prepare(fixed) if fixed is not None else f"encode failed: {exc!r}"

    async def send_prepared(self, prepared: list[bytes | str]) -> list[Outcome]:
        """``send`` for a batch already ``prepare``d (a worker prepares as it routes)."""
        return await self._send_batch(self.connector.encode_prepared, prepared)  # type: ignore[arg-type]

    async def _send_batch(self, encoder: Encoder, items: list[Any]) -> list[Outcome]:
        outcomes: list[Outcome] = [DELIVERED] * len(items)
        encoded = self._encode(encoder, items, list(range(len(items))))
        await self._send_encoded(encoder, items, encoded, outcomes)
        return outcomes

    def _encode(self, encoder: Encoder, items: list[Any], positions: list[int]) -> Encoded:
        """Encode a subset of the batch; map its positions back to batch positions."""
        whole = len(positions) == len(items)
        try:
            encoded = encoder(items if whole else [items[p] for p in positions], self.settings)
        except Exception as exc:  # an encoder bug must not lose the batch: halve until the
            if len(positions) == 1:  # event it fails on is alone, and reject only that one
                return self._encode_odd(encoder, items[positions[0]], positions[0], exc)
            half = len(positions) // 2
            first = self._encode(encoder, items, positions[:half])
            second = self._encode(encoder, items, positions[half:])
            first.requests += second.requests
            first.rejected.update(second.rejected)
            return first
        if not whole:
            for request in encoded.requests:
                request.events = [positions[i] for i in request.events]
            encoded.rejected = {positions[i]: r for i, r in encoded.rejected.items()}
        return encoded

    def _encode_odd(self, encoder: Encoder, item: Any, position: int,
                    exc: Exception) -> Encoded:
        """One event its encoder failed on: sent without the context fields of the wrong
        type (``well_formed``) if that is why, else rejected with the encoder's error."""
        fixed = well_formed(item) if type(item) is dict else None
        if fixed is None:
            return Encoded(rejected={position: f"encode failed: {exc!r}"})
        encoded = self._encode(encoder, [fixed], [0])
        for request in encoded.requests:
            request.events = [position]
        if encoded.rejected:  # one event: at most one reason
            encoded.rejected = {position: next(iter(encoded.rejected.values()))}
        return encoded

    async def _send_encoded(self, encoder: Encoder, items: list[Any], encoded: Encoded,
                            outcomes: list[Outcome]) -> None:
        for position, reason in encoded.rejected.items():
            outcomes[position] = Rejected(reason)
        requests = encoded.requests
        if len(requests) == 1:
            await self._send_one(encoder, items, requests[0], outcomes)
        elif requests:
            await asyncio.gather(*(self._send_one(encoder, items, r, outcomes)
                                   for r in requests))

    async def _send_one(self, encoder: Encoder, items: list[Any], request: Request,
                        outcomes: list[Outcome]) -> None:
        if len(request.body) > self.max_bytes:  # the batcher estimates; the limit is hard
            outcome: Outcome = Split(f"request of {len(request.body)} bytes is over the "
                                     f"{self.max_bytes}-byte limit")
        else:
            used = self.credentials
            outcome = await self._attempt(request)
            if isinstance(outcome, Retry) and outcome.reauth:
                # e.g. Salesforce INVALID_SESSION_ID: refresh (unless a concurrent request
                # already did) and try once more
                if self.credentials is used or used is None:
                    self.credentials = None
                outcome = await self._attempt(request)
        if isinstance(outcome, Delivered):
            return
        if isinstance(outcome, Split):
            if len(request.events) <= 1:
                for p in request.events:
                    outcomes[p] = Rejected(f"{outcome.reason} (a single event)")
                return
            half = len(request.events) // 2
            for part in (request.events[:half], request.events[half:]):
                await self._send_encoded(encoder, items, self._encode(encoder, items, part),
                                         outcomes)
            return
        if isinstance(outcome, Partial):
            for i, reason in outcome.rejected.items():
                outcomes[request.events[i]] = Rejected(reason)
            for i, reason in outcome.retry.items():
                outcomes[request.events[i]] = Retry(reason, outcome.after_s)
            return
        for p in request.events:
            outcomes[p] = outcome

    async def _attempt(self, request: Request) -> Outcome:
        assert self.session is not None, "start() the sender first"
        headers = request.headers
        if self.connector.authenticate is not None:
            try:
                credentials = await self._credentials()
            except Exception as exc:
                return Retry(f"authentication failed: {exc}")
            headers = {**headers, **credentials.headers}
        if self.limiter is not None:
            await self.limiter.acquire()
        started = time.perf_counter()
        try:
            # never follow a redirect: for a 301/302/303 aiohttp would re-send the POST as
            # a GET without the body, and a 200 for that would count the batch delivered;
            # unfollowed, the 3xx is not a 2xx and the batch is dead-lettered with it
            async with self.session.request(request.method, request.url, data=request.body,
                                            headers=headers, allow_redirects=False) as resp:
                body = await resp.read()
                response = Response(resp.status, resp.headers, body)
        except TimeoutError:
            self._observe(0, started)
            return Retry("timeout")
        except (aiohttp.ClientError, OSError) as exc:
            self._observe(0, started)
            return Retry(f"connection error: {type(exc).__name__}")
        self._observe(response.status, started)
        classify = self.connector.classify or classify_http
        try:
            return classify(response, request)
        except Exception as exc:  # a classifier bug: be safe, retry rather than lose
            return Retry(f"classify failed on HTTP {response.status}: {exc!r}")

    def _observe(self, status: int, started: float) -> None:
        if self.on_response is not None:
            self.on_response(status, time.perf_counter() - started)

    async def _credentials(self) -> Credentials:
        creds = self.credentials
        if creds is not None and creds.expires_at - 60 > time.time():
            return creds
        async with self._auth_lock:
            creds = self.credentials
            if creds is None or creds.expires_at - 60 <= time.time():
                assert self.connector.authenticate is not None and self.session is not None
                creds = await self.connector.authenticate(self.session, self.settings)
                self.credentials = creds
            return creds
