"""Histograms: the batch form of observe counts exactly as observe does."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import orjson
import pytest
import structlog

from router.redact import register
from router.telemetry import LATENCY_BUCKETS_S, Histogram, configure_logging, logger


@pytest.mark.parametrize("skewed", [False, True])
def test_observe_ages_matches_observe_per_value(skewed: bool) -> None:
    now_ms = 1_700_000_100_000
    times = [now_ms - d for d in (0, 3, 40, 999, 1_000, 2_500, 61_000, 10**7)]
    if skewed:  # a time in the future counts as age 0
        times.append(now_ms + 5)
    one, many = Histogram(LATENCY_BUCKETS_S), Histogram(LATENCY_BUCKETS_S)
    for t in times:
        one.observe(max(0.0, (now_ms - t) / 1000))
    many.observe_ages(times, now_ms)
    assert many.counts == one.counts and many.count == one.count == len(times)
    assert abs(many.total - one.total) < 1e-9


@pytest.fixture
def restored_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level, config = root.handlers[:], root.level, structlog.get_config()
    yield
    root.handlers[:], root.level = handlers, level
    structlog.configure(**config)


def test_every_log_line_is_one_json_object(restored_logging: None) -> None:
    """The router's own lines (structlog) and the standard library's (aiokafka, aiohttp,
    the warehouse loaders) share one format: a log pipeline parses each line as JSON."""
    out = io.StringIO()
    configure_logging("info", out)
    logger("router.test").warning("Destination stalled.", destination="duckdb")
    logging.getLogger("aiokafka.conn").error("Unable connect to %s", "127.0.0.1:1")
    logging.getLogger("aiokafka.conn").info("connected")  # aiokafka's INFO is chatter
    logging.getLogger("destinations.postgres").debug("below the level")
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("destinations.postgres").exception("Load failed.")
    lines = [orjson.loads(line) for line in out.getvalue().splitlines()]
    assert [(x["level"], x["event"]) for x in lines] == [
        ("warning", "Destination stalled."), ("error", "Unable connect to 127.0.0.1:1"),
        ("error", "Load failed.")]
    assert lines[0]["destination"] == "duckdb"
    assert lines[1]["logger"] == "aiokafka.conn"
    assert "ValueError: boom" in lines[2]["exception"]
    assert all(x["timestamp"].endswith("Z") for x in lines)


def test_log_lines_are_redacted(restored_logging: None) -> None:
    """A secret in a message, a field or a traceback (an exception's URL with its api key)
    never reaches the log, from structlog or from the standard library."""
    out = io.StringIO()
    configure_logging("info", out)
    register("sk-live-LOGSECRET")
    logger("router.test").warning("Request failed.", detail="key sk-live-LOGSECRET refused")
    try:
        raise ValueError("GET https://mp.example/collect?api_secret=QS-SECRET-1&x=1 failed")
    except ValueError:
        logging.getLogger("aiohttp.client").exception("Send failed: token sk-live-LOGSECRET")
    text = out.getvalue()
    assert "LOGSECRET" not in text and "QS-SECRET-1" not in text
    assert [orjson.loads(line)["event"] for line in text.splitlines()] == [
        "Request failed.", "Send failed: token ***"]
