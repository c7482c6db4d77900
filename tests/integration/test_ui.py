"""The operator page (/ui) in a real headless Chromium, against the real router and the
session's Kafka: every configured destination is listed, and the numbers on the page
follow the events as they flow (delivered, filtered, failed, invalid, paused).

The screenshot lands in tests/artifacts/ui.png for a human to look at.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from router.demo import generate
from tests.fakes.webhook import WebhookSink
from tests.integration.harness import ROOT, config_dict, eventually, produce, running, webhook

pytestmark = [pytest.mark.kafka, pytest.mark.browser]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
SCREENSHOT = ROOT / "tests" / "artifacts" / "ui.png"
TOKEN = "ui-test-token"
SECRET = "whsec-ui-test-4711"

# What each destination row shows, read from the DOM as the user sees it: the visible
# total of every outcome cell (or the cell's text), plus the state badges.
READ_TABLE = """() => Object.fromEntries(
  [...document.querySelectorAll('#rows tr[data-destination]')].map((tr) => [
    tr.dataset.destination,
    Object.assign(Object.fromEntries([...tr.querySelectorAll('td[data-field]')].map((td) =>
      [td.dataset.field, (td.querySelector('.total') || td).innerText.trim()])), {
      name: tr.querySelector('[data-name]').innerText.trim(),
      circuit: tr.querySelector('[data-circuit]').innerText.trim(),
      paused: tr.querySelector('[data-paused]').checkVisibility(),
      delivered_rate: tr.querySelector('[data-field="delivered"]').dataset.rate,
    })]))"""
READ_SUMMARY = """() => Object.fromEntries(
  [...document.querySelectorAll('#summary [data-metric]')].map((card) => [
    card.dataset.metric,
    (card.querySelector('[data-total]') || card.querySelector('[data-value]')).innerText.trim(),
  ]))"""


def number(text: str) -> int:
    """A count as the page prints it ("1,234"); -1 for "—" (no data yet)."""
    digits = text.replace(",", "").strip()
    return int(digits) if digits.isdigit() else -1


@contextlib.asynccontextmanager
async def chromium_page() -> AsyncIterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (.ci/run installs Debian's chromium)")
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield await browser.new_page(viewport={"width": 1440, "height": 800})
        finally:
            await browser.close()


async def test_live_page_follows_the_events(kafka_bootstrap: str, make_topic: Any,
                                            free_port: int) -> None:
    topic = await make_topic(partitions=2)
    first = list(generate(300, seed=11))
    second = list(generate(200, seed=12))
    identifies = sum(e["type"] == "identify" for e in first)
    assert 0 < identifies < len(first)
    rejected = {e["messageId"] for e in first[:7]}
    base = f"http://127.0.0.1:{free_port}"

    analytics, crm, warehouse = WebhookSink(), WebhookSink(), WebhookSink(secret=SECRET)
    warehouse.reject_ids = rejected
    async with analytics, crm, warehouse:
        cfg = config_dict(kafka_bootstrap, topic, [
            webhook("analytics", f"{analytics.url}/events"),
            webhook("crm", f"{crm.url}/events", where='type = "identify"'),
            {**webhook("warehouse", f"{warehouse.url}/events"),
             "settings": {"url": f"{warehouse.url}/events", "secret": SECRET}}])
        cfg["server"] = {"listen": f"127.0.0.1:{free_port}", "admin_token": TOKEN}
        async with running(cfg), chromium_page() as page:
            requested: list[str] = []
            problems: list[str] = []
            page.on("request", lambda r: requested.append(r.url))
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)

            await page.goto(f"{base}/ui")
            await page.wait_for_selector('#rows tr[data-destination="warehouse"]')
            table = await page.evaluate(READ_TABLE)
            assert [row["name"] for row in table.values()] == ["analytics", "crm", "warehouse"]
            assert {n: number(r["delivered"]) for n, r in table.items()} == {
                "analytics": 0, "crm": 0, "warehouse": 0}
            assert all(r["circuit"] == "circuit closed" and not r["paused"]
                       for r in table.values())

            # First batch (and one undecodable record): the page shows each fate.
            await produce(kafka_bootstrap, topic, [*first, b'{"type": "track", '])

            async def page_shows_first_batch() -> bool:
                rows = await page.evaluate(READ_TABLE)
                return (number(rows["analytics"]["delivered"]) == len(first)
                        and number(rows["crm"]["delivered"]) == identifies
                        and number(rows["warehouse"]["delivered"]) == len(first) - 7
                        and number(rows["warehouse"]["dead_lettered"]) == 7)

            await eventually(page_shows_first_batch, 30)
            table = await page.evaluate(READ_TABLE)
            assert number(table["crm"]["filtered"]) == len(first) - identifies
            assert number(table["warehouse"]["failed"]) == 7
            assert number(table["analytics"]["failed"]) == 0
            assert number(table["analytics"]["filtered"]) == 0
            assert float(table["analytics"]["delivered_rate"]) > 0

            async def summary_counts_everything() -> bool:
                summary = await page.evaluate(READ_SUMMARY)
                return number(summary["received"]) == len(first) + 1 and \
                    number(summary["invalid"]) == 1

            await eventually(summary_counts_everything, 10)
            # The screen-reader summary (aria-live) speaks up when health changes.
            assert "warehouse (dead-lettering)" in (await page.text_content("#announce") or "")

            # Second batch: the delivered numbers on the page move again.
            await produce(kafka_bootstrap, topic, second)

            async def page_shows_second_batch() -> bool:
                rows = await page.evaluate(READ_TABLE)
                return (number(rows["analytics"]["delivered"]) == len(first) + len(second)
                        and number(rows["warehouse"]["delivered"])
                        == len(first) + len(second) - 7)

            await eventually(page_shows_second_batch, 30)
            assert len(analytics.received) == len(first) + len(second)

            # An operator pauses one destination through the admin API: the page says so.
            async with aiohttp.ClientSession() as http:
                url = f"{base}/api/destinations/crm/pause"
                async with http.post(url) as resp:
                    assert resp.status == 401
                async with http.post(url, headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
                    assert resp.status == 200

            async def crm_shown_paused() -> bool:
                rows = await page.evaluate(READ_TABLE)
                return bool(rows["crm"]["paused"]) and not rows["analytics"]["paused"]

            await eventually(crm_shown_paused, 10)
            assert "crm (paused)" in await page.inner_text('[data-metric="health"]')

            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(SCREENSHOT), full_page=True)

            assert not problems, problems
            outside = [u for u in requested if not u.startswith(base)]
            assert not outside, f"the page must load nothing from elsewhere: {outside}"
            shown = await page.content()
            assert SECRET not in shown and TOKEN not in shown


async def test_the_page_says_the_router_is_waiting_for_kafka(make_topic: Any,
                                                             free_port: int) -> None:
    """Started before its brokers, the router serves the page, which says it is starting
    and where it is waiting for Kafka, instead of showing an empty, "live" overview."""
    import socket

    from router.app import Router
    from router.config import Config

    with socket.socket() as s:  # a port nothing listens on: Kafka "not there yet"
        s.bind(("127.0.0.1", 0))
        nowhere = f"127.0.0.1:{s.getsockname()[1]}"
    cfg = config_dict(nowhere, await make_topic(), [webhook("hook", "http://127.0.0.1:9/x")])
    cfg["server"] = {"listen": f"127.0.0.1:{free_port}"}
    router = Router(Config.model_validate(cfg))
    task = asyncio.create_task(router.run(install_signals=False))
    try:
        async with chromium_page() as page:
            await page.goto(f"http://127.0.0.1:{free_port}/ui")
            await page.wait_for_selector("#banner:not([hidden])")
            banner = await page.text_content("#banner") or ""
            assert f"waiting for Kafka at {nowhere}" in banner
            assert await page.text_content("#conn-text") == "Starting"
            assert await page.get_attribute("#conn", "data-state") == "starting"
    finally:
        router.stop()
        await asyncio.wait_for(task, 30)
    assert not router.started
