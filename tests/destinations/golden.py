"""Golden payloads: what each HTTP connector sends for the reference events.

    python -m tests.destinations.golden            # compare; exit 1 naming stale goldens
    python -m tests.destinations.golden --update   # rewrite tests/golden/<name>.json
    python -m tests.destinations.golden --update amplitude ga4   # only these

Each golden holds, for ``samples.MINIMAL`` and ``samples.FULL``, the requests the
connector's ``encode`` makes — method, URL, headers, body (JSON-parsed; gunzipped when
``Content-Encoding: gzip``) and the messageIds each request carries — and the reasons it
rejects events locally. Settings come from ``config/examples/<name>.yaml`` read with an
EMPTY environment (so the placeholders, never real secrets), and connector modules that
read the clock see ``FIXED_NOW`` (two hours after the samples), so the output is
deterministic. Review every rewritten golden by eye against the vendor's documented
format before committing it: the conformance suite trusts it.
"""

from __future__ import annotations

import argparse
import copy
import gzip
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson

from destinations.base import Connector, Encoded, Event
from destinations.registry import REGISTRY
from router.config import load
from tests.destinations.samples import FULL, MINIMAL

ROOT = Path(__file__).resolve().parents[2]
GOLDEN_DIR = ROOT / "tests" / "golden"
EXAMPLES_DIR = ROOT / "config" / "examples"
FIXED_NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC).timestamp()
SAMPLES: dict[str, list[Event]] = {"MINIMAL": MINIMAL, "FULL": FULL}


class FixedClock:
    """Stands in for the ``time`` module inside a connector module: ``time()`` returns a
    fixed instant; everything else is the real module."""

    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


def fixed_datetime(now: float) -> type[datetime]:
    """A ``datetime`` class whose ``now()`` is a fixed instant."""

    class FixedDatetime(datetime):
        @classmethod
        def now(cls, tz: tzinfo | None = None) -> datetime:  # type: ignore[override]
            return datetime.fromtimestamp(now, tz)

    return FixedDatetime


def clock_patches(connector: Connector, now: float = FIXED_NOW
                  ) -> list[tuple[ModuleType, str, Any]]:
    """(module, attribute, stand-in) for each connector module that reads the clock through
    ``time.time()`` or ``datetime.now()``; tests apply them with ``monkeypatch.setattr``."""
    modules = {sys.modules[f.__module__] for f in (connector.encode, connector.classify)
               if f is not None}
    patches: list[tuple[ModuleType, str, Any]] = []
    for module in sorted(modules, key=lambda m: m.__name__):
        if getattr(module, "time", None) is time:
            patches.append((module, "time", FixedClock(now)))
        if getattr(module, "datetime", None) is datetime:
            patches.append((module, "datetime", fixed_datetime(now)))
    return patches


@contextmanager
def fixed_clock(connector: Connector, now: float = FIXED_NOW) -> Iterator[None]:
    patches = clock_patches(connector, now)
    originals = [(module, attr, getattr(module, attr)) for module, attr, _ in patches]
    try:
        for module, attr, stand_in in patches:
            setattr(module, attr, stand_in)
        yield
    finally:
        for module, attr, original in originals:
            setattr(module, attr, original)


def example_path(name: str) -> Path:
    return EXAMPLES_DIR / f"{name}.yaml"


def example_settings(name: str, path: Path | None = None) -> Any:
    """The settings of the first destination of type ``name`` in its example config."""
    config = load(path or example_path(name), env={})
    for destination in config.destinations:
        if destination.type == name:  # type: ignore[attr-defined]
            return destination.settings  # type: ignore[attr-defined]
    raise LookupError(f"{path or example_path(name)} configures no destination of type {name}")


def body_view(body: bytes, headers: dict[str, str]) -> Any:
    encoding = {k.lower(): v for k, v in headers.items()}.get("content-encoding", "")
    if encoding.lower() == "gzip":
        body = gzip.decompress(body)
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.decode("utf-8", "replace")


def encoded_view(encoded: Encoded, events: list[Event]) -> dict[str, Any]:
    ids = [str(e["messageId"]) for e in events]
    return {
        "requests": [{"method": r.method, "url": r.url, "headers": r.headers,
                      "body": body_view(r.body, r.headers),
                      "events": [ids[p] for p in r.events]} for r in encoded.requests],
        "rejected": {ids[p]: reason for p, reason in sorted(encoded.rejected.items())},
    }


def snapshot(connector: Connector, settings: Any) -> dict[str, Any]:
    """The golden document for one connector (call it under the fixed clock)."""
    assert connector.encode is not None
    doc: dict[str, Any] = {"connector": connector.name,
                           "settings_from": f"config/examples/{connector.name}.yaml",
                           "clock": datetime.fromtimestamp(FIXED_NOW, UTC).isoformat()}
    for label, events in SAMPLES.items():
        batch = copy.deepcopy(events)
        doc[label] = encoded_view(connector.encode(batch, settings), batch)
    return orjson.loads(orjson.dumps(doc))  # exactly what the JSON file round-trips to


def golden_path(name: str) -> Path:
    return GOLDEN_DIR / f"{name}.json"


def read_golden(name: str) -> Any:
    return orjson.loads(golden_path(name).read_bytes())


def render(doc: Any) -> bytes:
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n"


def current(name: str, settings_path: Path | None = None) -> dict[str, Any]:
    connector = REGISTRY[name]
    with fixed_clock(connector):
        return snapshot(connector, example_settings(name, settings_path))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.destinations.golden",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--update", action="store_true", help="rewrite the golden files")
    parser.add_argument("names", nargs="*", help="connectors (default: every HTTP connector)")
    args = parser.parse_args(argv)
    names = args.names or [n for n, c in sorted(REGISTRY.items()) if c.encode is not None]
    stale = 0
    for name in names:
        if not example_path(name).exists():
            stale += 1
            print(f"config/examples/{name}.yaml is missing: a golden needs its settings")
            continue
        doc = current(name)
        path = golden_path(name)
        if args.update:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(render(doc))
            print(f"wrote {path.relative_to(ROOT)}: review it against the vendor's docs")
        elif not path.exists() or read_golden(name) != doc:
            stale += 1
            print(f"{path.relative_to(ROOT)} is missing or stale; run with --update and review")
    return 1 if stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
