"""Driving a connector through the engine's HTTP sender in destination tests."""

from __future__ import annotations

from typing import Any

from destinations.base import Connector
from router.delivery.http import HttpSender
from router.delivery.outcome import Outcome


async def send_once(connector: Connector, settings: Any, events: list[dict[str, Any]],
                    sender: HttpSender | None = None) -> list[Outcome]:
    """One engine attempt at a batch: encode, send, classify, split/partial resolved.
    Starts and closes its own sender unless one is given (to keep cached credentials)."""
    if sender is not None:
        return await sender.send(events)
    own = HttpSender(connector, settings)
    await own.start()
    try:
        return await own.send(events)
    finally:
        await own.close()
