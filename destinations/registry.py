"""The destinations registry: explicit, no scanning. `type:` in config selects one.

Not in the package's ``__init__``: the DuckDB loader's child process imports
``destinations.duckdb_load`` and must not import every connector (aiohttp and all, ~15 MB)
on the way."""

from __future__ import annotations

from destinations import (
    amplitude,
    bigquery,
    braze,
    duckdb_wh,
    ga4,
    hubspot,
    mixpanel,
    postgres,
    posthog,
    salesforce,
    webhook,
)
from destinations.base import Connector

REGISTRY: dict[str, Connector] = {
    c.name: c
    for c in (
        webhook.CONNECTOR,
        amplitude.CONNECTOR,
        mixpanel.CONNECTOR,
        ga4.CONNECTOR,
        posthog.CONNECTOR,
        hubspot.CONNECTOR,
        braze.CONNECTOR,
        salesforce.CONNECTOR,
        postgres.CONNECTOR,
        duckdb_wh.CONNECTOR,
        bigquery.CONNECTOR,
    )
}
