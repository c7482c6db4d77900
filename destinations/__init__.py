"""The destinations registry: explicit, no scanning. `type:` in config selects one."""

from __future__ import annotations

from destinations import amplitude, mixpanel, webhook
from destinations.base import Connector

REGISTRY: dict[str, Connector] = {
    c.name: c
    for c in (
        webhook.CONNECTOR,
        amplitude.CONNECTOR,
        mixpanel.CONNECTOR,
    )
}
