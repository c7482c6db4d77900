"""dry-run: what would happen to these events, per destination — no network, no Kafka.

For each event it prints the global decision (invalid, suppressed, blocked by the
tracking plan) and, per destination, either why it was filtered or the exact native
request the connector would send (URL, headers and body, secrets redacted). Warehouse
destinations show the rows they would load.
"""

from __future__ import annotations

import gzip
from typing import Any

import orjson

from router.config import Config
from router.events import Invalid, decode, well_formed
from router.pipeline import build_route
from router.redact import redact
from router.stages.suppression import Suppression
from router.stages.tracking_plan import Blocked, TrackingPlan


def split_events(data: bytes) -> list[bytes]:
    """A JSON array, a single JSON object, or NDJSON."""
    stripped = data.strip()
    if stripped.startswith(b"["):
        try:
            return [orjson.dumps(e) for e in orjson.loads(stripped)]
        except orjson.JSONDecodeError:
            pass
    try:
        orjson.loads(stripped)
        return [stripped]
    except orjson.JSONDecodeError:
        return [line for line in stripped.splitlines() if line.strip()]


def evaluate(config: Config, raw: bytes) -> dict[str, Any]:
    from router.app import register_secrets

    register_secrets(config)
    p = config.pipeline
    event = decode(raw, None, config.kafka.max_event_bytes)
    if isinstance(event, Invalid):
        return {"decision": "dead-letter", "reason": f"{event.reason}: {event.detail}"}
    result: dict[str, Any] = {"messageId": event["messageId"], "type": event["type"]}
    if p.suppressed_users and Suppression(p.suppressed_users).suppressed(event):
        return {**result, "decision": "dropped", "reason": "suppressed"}
    if p.tracking_plan:
        plan = p.tracking_plan
        checked = TrackingPlan.from_file(plan.path, plan.unplanned, plan.violations).check(event)
        if isinstance(checked, Blocked):
            return {**result, "decision": "dead-letter", "reason": f"tracking_plan: "
                    f"{checked.reason}"}
        event = checked
    out = {}
    for dest in config.destinations:
        if not dest.enabled:
            out[dest.name] = {"decision": "filtered", "reason": "disabled"}
            continue
        routed = build_route(dest)(event)
        if isinstance(routed, str):
            out[dest.name] = {"decision": "filtered", "reason": routed}
            continue
        out[dest.name] = {"decision": "sent", **_payload(dest, routed)}
    result["destinations"] = out
    return result


def _payload(dest: Any, event: dict[str, Any]) -> dict[str, Any]:
    connector = dest.connector
    try:
        if connector.encode is None:
            preview = connector.preview
            return {"rows": preview([event], dest.settings) if preview else [event]}
        encoded = connector.encode([event], dest.settings)
    except Exception as exc:  # as the engine does: sent without context fields of the
        fixed = well_formed(event)  # wrong type if that is why, else rejected, with why
        if fixed is not None:
            return _payload(dest, fixed)
        return {"decision": "rejected", "reason": f"encode failed: {exc!r}"}
    if encoded.rejected:
        return {"decision": "rejected", "reason": encoded.rejected[0]}
    return {"requests": [_request(request) for request in encoded.requests]}


def _request(request: Any) -> dict[str, Any]:
    """A request as it would be sent, its body readable: JSON parsed, text as text, and a
    gzipped body (Mixpanel's import) shown decompressed, with its size on the wire."""
    shown: dict[str, Any] = {"method": request.method, "url": request.url,
                             "headers": request.headers}
    raw = request.body
    encoding = {k.lower(): v for k, v in request.headers.items()}.get("content-encoding")
    if encoding == "gzip":
        shown["body_encoding"] = f"gzip, {len(raw)} bytes sent"
        raw = gzip.decompress(raw)
    try:
        shown["body"] = orjson.loads(raw)
    except orjson.JSONDecodeError:
        shown["body"] = raw.decode("utf-8", "replace")
    return shown


def render(config: Config, data: bytes) -> str:
    results = [evaluate(config, raw) for raw in split_events(data)]
    text = orjson.dumps(results, option=orjson.OPT_INDENT_2).decode()
    return redact(text)
