"""What every vendor contract fake shares: a local aiohttp server that records what it
accepted and can be told to misbehave.

A vendor fake subclasses ``FakeServer``, adds its routes in ``routes()``, validates each
request the way the vendor documents (auth, shape, limits) and answers with the vendor's
documented bodies. Tests switch it to failure modes with ``fail_next``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Failure:
    status: int
    body: bytes | str | dict[str, Any] = b""
    headers: dict[str, str] = field(default_factory=dict)
    times: int = 1
    path: str | None = None  # only requests to this path fail; None = any path


class FakeServer:
    client_max_size = 64 * 1024 * 1024  # let vendor size limits, not aiohttp's 1 MiB, decide

    def __init__(self) -> None:
        self.received: list[Any] = []  # what the vendor accepted (vendor-specific items)
        self.requests: list[tuple[str, bytes]] = []  # every request: (path, body)
        self.failures: list[Failure] = []
        self.app = web.Application(middlewares=[self._failure_middleware],
                                   client_max_size=self.client_max_size)
        self.routes(self.app)
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.changed = asyncio.Event()

    def routes(self, app: web.Application) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> FakeServer:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()

    async def __aenter__(self) -> FakeServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def fail_next(self, status: int, body: bytes | str | dict[str, Any] = b"",
                  headers: dict[str, str] | None = None, times: int = 1,
                  path: str | None = None) -> None:
        self.failures.append(Failure(status, body, headers or {}, times, path))

    def accept(self, items: list[Any]) -> None:
        self.received.extend(items)
        self.changed.set()

    async def wait_for(self, predicate: Callable[[], bool], timeout_s: float = 30.0) -> None:
        async def loop() -> None:
            while not predicate():
                self.changed.clear()
                await self.changed.wait()
        await asyncio.wait_for(loop(), timeout_s)

    @web.middleware
    async def _failure_middleware(self, request: web.Request, handler: Handler
                                  ) -> web.StreamResponse:
        body = await request.read()
        self.requests.append((request.path, body))
        for failure in self.failures:
            if failure.times > 0 and failure.path in (None, request.path):
                failure.times -= 1
                return respond(failure.status, failure.body, failure.headers)
        return await handler(request)


def respond(status: int, body: bytes | str | dict[str, Any] | list[Any] = b"",
            headers: dict[str, str] | None = None) -> web.Response:
    if isinstance(body, dict | list):
        return web.json_response(body, status=status, headers=headers)
    if isinstance(body, str):
        body = body.encode()
    return web.Response(status=status, body=body, headers=headers)
