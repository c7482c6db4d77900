"""Black-box checks of the engine's Segment semantics and the config contract, through
the CLI (`dry-run`, `validate`) as an operator would run it.

Each test writes a small config and a few NDJSON events, runs the command with click's
CliRunner and reads the decisions back from its JSON output. The expectations come
from Segment's published docs (consent, the integrations object, FQL, the spec's
required fields and time fields) and from DESIGN.md's configuration contract.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner, Result

from router.cli import main
from router.config import load
from router.demo import generate

DESIGN = Path("/work/shared/DESIGN.md")  # where the team keeps it; skipped elsewhere
ROOT = Path(__file__).resolve().parents[2]
HOOK = {"url": "http://127.0.0.1:9/hook"}


def _yaml(destinations: list[dict[str, Any]], extra: str = "") -> str:
    # JSON is YAML: each destination on one line keeps the test independent of indenting
    lines = [extra, "destinations:"] + [f"  - {orjson.dumps(d).decode()}" for d in destinations]
    return "\n".join(lines) + "\n"


def _invoke(args: list[str], env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, args, env=env, catch_exceptions=False)


def dry_run(tmp_path: Path, destinations: list[dict[str, Any]],
            events: list[dict[str, Any] | str], env: dict[str, str] | None = None,
            extra: str = "") -> tuple[list[dict[str, Any]], str]:
    config = tmp_path / "router.yaml"
    config.write_text(_yaml(destinations, extra))
    lines = [e if isinstance(e, str) else orjson.dumps(e).decode() for e in events]
    (tmp_path / "events.ndjson").write_text("\n".join(lines) + "\n")
    result = _invoke(["dry-run", "-c", str(config), str(tmp_path / "events.ndjson")], env)
    assert result.exit_code == 0, result.output
    return orjson.loads(result.stdout), result.stdout


def decisions(results: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Per event: destination -> "sent" or the filter reason (or the global decision)."""
    out = []
    for r in results:
        if "destinations" not in r:
            out.append({"*": r["reason"]})
            continue
        out.append({name: d.get("reason") or d["decision"] if d["decision"] != "sent" else "sent"
                    for name, d in r["destinations"].items()})
    return out


def body(result: dict[str, Any], destination: str) -> Any:
    return result["destinations"][destination]["requests"][0]["body"]


def track(**fields: Any) -> dict[str, Any]:
    return {"type": "track", "event": "Clicked", "userId": "user-1", **fields}


# --- consent (Segment Consent Management) ---------------------------------------------


def test_consent_follows_segments_table(tmp_path: Path) -> None:
    dests = [{"name": "one", "type": "webhook", "consent_categories": ["Analytics"],
              "settings": HOOK},
             {"name": "two", "type": "webhook",
              "consent_categories": ["Analytics", "Advertising"], "settings": HOOK},
             {"name": "none", "type": "webhook", "settings": HOOK}]
    prefs = [None, {}, {"categoryPreferences": {}},
             {"categoryPreferences": {"Analytics": True}},
             {"categoryPreferences": {"Analytics": True, "Advertising": True}},
             {"categoryPreferences": {"analytics": True, "Advertising": True}},
             {"categoryPreferences": {"Analytics": "true", "Advertising": 1}}]
    events = [track(context={} if p is None else {"consent": p}) for p in prefs]
    got = decisions(dry_run(tmp_path, dests, events)[0])
    expected = [("sent", "sent"), ("sent", "sent"), ("consent", "consent"),
                ("sent", "consent"), ("sent", "sent"), ("consent", "consent"),
                ("consent", "consent")]
    assert [(g["one"], g["two"]) for g in got] == expected
    assert all(g["none"] == "sent" for g in got)  # no categories: needs no consent


# --- the integrations object (Segment spec, Common fields) ----------------------------


def test_integrations_object_by_name_and_display_name(tmp_path: Path) -> None:
    dests = [{"name": "amp", "type": "amplitude", "settings": {"api_key": "k" * 32}},
             {"name": "mp", "type": "mixpanel", "settings": {"project_token": "tok-12345"}},
             {"name": "hook", "type": "webhook", "settings": HOOK}]
    events = [track(integrations={"All": False, "Mixpanel": True}),
              track(integrations={"All": False, "amp": {"session_id": 1}}),
              track(integrations={"Amplitude": False}),
              track(integrations={"amplitude": False, "MIXPANEL": False}),  # case-sensitive
              track(integrations={"All": False, "Mixpanel": 0, "Amplitude": None}),
              track(integrations={}),
              track(integrations={"Webhooks": False})]  # Segment's name for webhooks
    got = decisions(dry_run(tmp_path, dests, events)[0])
    assert got == [
        {"amp": "integrations", "mp": "sent", "hook": "integrations"},
        {"amp": "sent", "mp": "integrations", "hook": "integrations"},
        {"amp": "integrations", "mp": "sent", "hook": "sent"},
        {"amp": "sent", "mp": "sent", "hook": "sent"},
        {"amp": "integrations", "mp": "integrations", "hook": "integrations"},
        {"amp": "sent", "mp": "sent", "hook": "sent"},
        {"amp": "sent", "mp": "sent", "hook": "integrations"},
    ]


def test_integrations_all_false_still_reaches_the_warehouse(tmp_path: Path) -> None:
    dests = [{"name": "wh", "type": "duckdb", "settings": {"path": str(tmp_path / "w.duckdb")}},
             {"name": "hook", "type": "webhook", "settings": HOOK}]
    events = [track(integrations={"All": False, "Mixpanel": True}),
              track(integrations={"wh": False})]
    got = decisions(dry_run(tmp_path, dests, events)[0])
    assert got == [{"wh": "sent", "hook": "integrations"},
                   {"wh": "integrations", "hook": "sent"}]


# --- FQL (Segment's Destination Filter Query Language) -------------------------------

FQL_EVENT = {
    "type": "track", "event": "Button Clicked", "userId": "u1", "messageId": "fql-1",
    "context": {"library": {"name": "analytics.js", "version": "1.0"}},
    "properties": {"features": ["discounts", "dark-mode"], "total": 20, "price": "19.99",
                   "enabled": True, "product 1": {"price": "19.99"}},
}
FQL_CASES = [  # Segment's example table, then its operator and function rules
    ("event = 'Button Clicked'", True), ("event = 'Screen Tapped'", False),
    ("context.path.path = '/login'", False), ("type = 'identify' or type = 'track'", True),
    ("match( context.library.version, '1.*' )", True),
    ("match( context.library.version, '2.*' )", False),
    ("type = 'track' and ( event = 'Click' or match( event, 'Button *' ) )", True),
    ("!contains( context.library.name, 'js' )", False),
    ("'dark-mode' in properties.features", True), ("'blink' in properties.features", False),
    ("properties.total > 10", True), ("properties.total < '30'", False),
    ("properties.price = 19.99", False), ("properties.price = '19.99'", True),
    ("properties.missing = null", True), ("properties.missing != 'a'", True),
    ("properties.enabled", True), ("!properties.missing", True),
    ("properties.product\\ 1.price = '19.99'", True), ("length(properties.missing) = 0", True),
    ("typeof(properties.features) = 'list'", True), ("!( type in ['track', 'identify'] )", False),
    ("match('ab*d', 'ab\\*d')", True), ("match('abcd', 'ab[A-Z]d')", False),
]


def test_fql_matches_segments_documented_results(tmp_path: Path) -> None:
    dests = [{"name": f"f{i}", "type": "webhook", "where": expr, "settings": HOOK}
             for i, (expr, _) in enumerate(FQL_CASES)]
    got = decisions(dry_run(tmp_path, dests, [FQL_EVENT])[0])[0]
    for i, (expr, expected) in enumerate(FQL_CASES):
        assert got[f"f{i}"] == ("sent" if expected else "filter"), expr


def test_fql_evaluation_error_fails_closed(tmp_path: Path) -> None:
    dests = [{"name": "f", "type": "webhook", "where": "!match(event, properties.pattern)",
              "settings": HOOK}]
    got = decisions(dry_run(tmp_path, dests, [track(properties={"pattern": "[z-a]"})])[0])
    assert got == [{"f": "filter_error"}]


def test_fql_bad_glob_literal_is_a_syntax_error_with_its_line(tmp_path: Path) -> None:
    config = tmp_path / "router.yaml"
    config.write_text(_yaml([{"name": "f", "type": "webhook", "where": "match(event, '[z-a]')",
                              "settings": HOOK}]))
    result = CliRunner().invoke(main, ["validate", "-c", str(config)])
    assert result.exit_code == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert re.search(r"router\.yaml:3: destinations\[0\]\.where: FQL syntax error", result.output)


# --- transforms ------------------------------------------------------------------------


def test_transforms_rename_drop_hash_copy_on_write(tmp_path: Path) -> None:
    dests = [{"name": "t", "type": "webhook", "settings": HOOK, "transforms": [
                 {"rename_events": {"Order Completed": "purchase"}},
                 {"drop_fields": ["context.ip"]},
                 {"hash_fields": ["traits.email", "properties.flag"]}]},
             {"name": "plain", "type": "webhook", "settings": HOOK}]
    event = track(event="Order Completed", context={"ip": "1.2.3.4"},
                  traits={"email": "  Foo@Example.COM "}, properties={"flag": True})
    result = dry_run(tmp_path, dests, [event])[0][0]
    sent = body(result, "t")[0]
    assert sent["event"] == "purchase"
    assert "ip" not in sent["context"]
    assert sent["traits"]["email"] == hashlib.sha256(b"foo@example.com").hexdigest()
    assert "flag" not in sent["properties"]  # a bool cannot be hashed: removed, never leaked
    plain = body(result, "plain")[0]
    assert (plain["event"], plain["context"]["ip"]) == ("Order Completed", "1.2.3.4")
    assert plain["traits"]["email"] == "  Foo@Example.COM "


# --- decode: messageId, timestamps, malformed input ------------------------------------


def test_missing_message_id_is_derived_from_the_bytes(tmp_path: Path) -> None:
    raw = '{"type":"track","event":"A","userId":"u1"}'
    results, _ = dry_run(tmp_path, [{"name": "h", "type": "webhook", "settings": HOOK}],
                         [raw, raw, raw.replace(",", ", ")])
    ids = [r["messageId"] for r in results]
    assert ids[0] == ids[1] == "derived-" + hashlib.sha1(raw.encode()).hexdigest()
    assert ids[2] != ids[0]


@pytest.mark.parametrize("given", [{}, {"timestamp": None}])
def test_timestamp_is_received_at_minus_clock_skew(tmp_path: Path, given: dict[str, Any]
                                                   ) -> None:
    event = track(receivedAt="2024-01-01T00:00:10.000Z", sentAt="2024-01-01T00:00:05.000Z",
                  originalTimestamp="2024-01-01T00:00:03.000Z", **given)
    result = dry_run(tmp_path, [{"name": "h", "type": "webhook", "settings": HOOK}], [event])
    assert body(result[0][0], "h")[0]["timestamp"] == "2024-01-01T00:00:08.000Z"


def test_malformed_input_is_dead_lettered_with_a_reason(tmp_path: Path) -> None:
    lines = ["not json", "[1, 2]", '{"event": "A", "userId": "u"}',
             '{"type": "purchase", "userId": "u"}', '{"type": "track", "userId": "u"}',
             '{"type": "identify", "traits": {"a": 1}}', '{"type": "alias", "userId": "u"}',
             '{"type": "group", "userId": "u", "traits": {"name": "X"}}',
             '{"type": "group", "userId": "u", "groupId": ""}',
             '{"type": "identify", "anonymousId": "a-1"}',
             '{"type": "group", "userId": "u", "groupId": 0}']  # an id, if not a string
    results, _ = dry_run(tmp_path, [{"name": "h", "type": "webhook", "settings": HOOK}], lines)
    reasons = [r.get("reason", r.get("decision", "")).split(":")[0] for r in results]
    assert reasons == ["invalid_json", "not_an_object", "unknown_type", "unknown_type",
                       "missing_event", "missing_identity", "missing_previous_id",
                       "missing_group_id", "missing_group_id", "", ""]
    assert all(r.get("decision") == "dead-letter" for r in results[:-2])


def test_dry_run_shows_a_warehouses_rows(tmp_path: Path) -> None:
    """Segment's warehouse schema: `tracks` and the event's own table, snake_case."""
    dests = [{"name": "wh", "type": "duckdb", "settings": {"path": str(tmp_path / "w.duckdb")}}]
    event = track(event="Order Completed", messageId="m-1", timestamp="2026-11-20T10:00:00Z",
                  properties={"orderId": "o-1", "total": 5, "product": {"sku": "s"}},
                  context={"ip": "198.51.100.1"})
    results, _ = dry_run(tmp_path, dests, [event])
    rows = results[0]["destinations"]["wh"]["rows"]
    assert [r["table"] for r in rows] == ["tracks", "order_completed"]
    tracks, order = (r["row"] for r in rows)
    assert tracks["id"] == order["id"] == "m-1"
    assert tracks["event"] == "order_completed" and tracks["event_text"] == "Order Completed"
    assert tracks["context_ip"] == "198.51.100.1" and "order_id" not in tracks
    assert order["order_id"] == "o-1" and order["total"] == 5 and order["product_sku"] == "s"


# --- the configuration contract ---------------------------------------------------------


def test_env_interpolation_and_unknown_keys_with_file_line_and_path(tmp_path: Path) -> None:
    config = tmp_path / "router.yaml"
    config.write_text("kafka:\n  bootstrap_servers: ${AUDIT_BOOT:-127.0.0.1:9999}\n"
                      "  bogus: 1\ndestinations: []\n")
    result = _invoke(["validate", "-c", str(config)])
    assert result.exit_code == 1
    assert f"{config}:3: kafka.bogus: unknown key" in result.output
    config.write_text("kafka:\n  bootstrap_servers: ${AUDIT_BOOT:-127.0.0.1:9999}\n"
                      "destinations:\n  - {name: h, type: webhook, settings: "
                      "{url: '${AUDIT_URL}', secret: '${AUDIT_SECRET}'}}\n")
    missing = _invoke(["validate", "-c", str(config)], env={"AUDIT_URL": "http://x"})
    assert missing.exit_code == 1
    assert f"{config}:4: destinations[0].settings.secret: environment variable AUDIT_SECRET" \
        in missing.output
    ok = _invoke(["validate", "-c", str(config)],
                 env={"AUDIT_URL": "http://x", "AUDIT_SECRET": "s3cret-value"})
    assert ok.exit_code == 0, ok.output


def test_secrets_are_never_printed(tmp_path: Path) -> None:
    secrets = {"AMP": "amp-SECRET-0001", "BZ": "bz-SECRET-0002", "HOOK": "hook-SECRET-0003"}
    dests = [{"name": "amp", "type": "amplitude", "settings": {"api_key": "${AMP}"}},
             {"name": "bz", "type": "braze", "settings": {
                 "api_key": "${BZ}", "rest_endpoint": "https://rest.iad-01.braze.com"}},
             {"name": "h", "type": "webhook", "settings": {**HOOK, "secret": "${HOOK}"}}]
    _, text = dry_run(tmp_path, dests, [{"type": "identify", "userId": "user-1"}], env=secrets)
    assert not any(s in text for s in secrets.values())
    (tmp_path / "bad.yaml").write_text(_yaml(
        [{"name": "amp", "type": "amplitude", "settings": {"api_key": "${AMP}", "nope": 1}}]))
    bad = _invoke(["validate", "-c", str(tmp_path / "bad.yaml")], env=secrets)
    assert bad.exit_code == 1 and secrets["AMP"] not in bad.output


def test_secrets_are_hidden_however_they_are_written(tmp_path: Path) -> None:
    """A secret with a quote or backslash (escaped in the JSON output), a token under
    another Authorization scheme, and a webhook's credential header."""
    secrets = {"AMP": 'amp"quote\\slash-SECRET1', "HDR": "hdrSECRET2", "TOK": "tokSECRET3"}
    dests = [{"name": "amp", "type": "amplitude", "settings": {"api_key": "${AMP}"}},
             {"name": "h", "type": "webhook", "settings": {**HOOK, "headers": {
                 "X-Api-Key": "${HDR}", "Authorization": "Token ${TOK}",
                 "X-Source": "audit-source"}}}]
    results, text = dry_run(tmp_path, dests, [track()], env=secrets)
    assert "SECRET" not in text
    headers = results[0]["destinations"]["h"]["requests"][0]["headers"]
    assert headers["X-Source"] == "audit-source"  # not a credential: shown


def test_design_example_validates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not DESIGN.exists():
        pytest.skip("DESIGN.md is not on this machine")
    example = re.search(r"## Configuration contract.*?```yaml\n(.*?)```", DESIGN.read_text(),
                        re.S)
    assert example is not None
    (tmp_path / "router.yaml").write_text(example.group(1))
    monkeypatch.chdir(ROOT)  # the files it names are shipped in config/
    result = _invoke(["validate", "-c", str(tmp_path / "router.yaml")],
                     env={"AMPLITUDE_API_KEY": "k" * 32})
    assert result.exit_code == 0, result.output


def test_shipped_tracking_plan_passes_the_demo_events(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    plan = ("pipeline:\n  suppressed_users: config/suppressed-users.txt\n  tracking_plan: "
            "{path: config/tracking-plan.yaml, unplanned: block, violations: block}")
    results, _ = dry_run(tmp_path, [{"name": "h", "type": "webhook", "settings": HOOK}],
                         list(generate(300, seed=11)), extra=plan)
    assert {d["h"] for d in decisions(results)} == {"sent"}
    broken = track(event="Order Completed", properties={"total": -1})
    results, _ = dry_run(tmp_path, [{"name": "h", "type": "webhook", "settings": HOOK}],
                         [broken], extra=plan)
    assert "tracking_plan" in results[0]["reason"]


def test_dry_run_reports_an_encoder_that_raises(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """As the engine does, the event is rejected with why; the other events still show."""
    config = tmp_path / "probe.yaml"
    config.write_text(_yaml([{"name": "h", "type": "webhook", "settings": HOOK}]))
    model = type(load(config).destinations[0])
    original = model.connector

    def broken(events: list[dict[str, Any]], _settings: Any) -> Any:
        if any(e.get("event") == "Boom" for e in events):
            raise ValueError("cannot encode Boom")
        assert original.encode is not None
        return original.encode(events, _settings)

    monkeypatch.setattr(model, "connector",
                        dataclasses.replace(original, encode=broken))
    results, _ = dry_run(tmp_path, [{"name": "h", "type": "webhook", "settings": HOOK}],
                         [track(event="Boom"), track()])
    assert results[0]["destinations"]["h"] == {
        "decision": "rejected", "reason": "encode failed: ValueError('cannot encode Boom')"}
    assert results[1]["destinations"]["h"]["decision"] == "sent"


# --- a first-time user's slips: one clear line, not a surprise --------------------------


def test_dry_run_refuses_a_config_given_where_the_events_go(tmp_path: Path) -> None:
    """`run FILE` and `validate FILE` take the config positionally; `dry-run FILE` must not
    quietly read that YAML as events (each line a dead letter) against the default."""
    config = tmp_path / "router.yaml"
    config.write_text(_yaml([{"name": "h", "type": "webhook", "settings": HOOK}]))
    result = CliRunner().invoke(main, ["dry-run", str(config)])
    assert result.exit_code == 2, result.output
    assert "give the config with -c" in result.output and "dead-letter" not in result.output


def test_produce_with_nothing_to_publish_is_a_usage_error(tmp_path: Path) -> None:
    config = tmp_path / "router.yaml"
    config.write_text("kafka: {bootstrap_servers: '127.0.0.1:1'}\ndestinations: []\n")
    result = CliRunner().invoke(main, ["produce", "-c", str(config)])
    assert result.exit_code == 2, result.output
    assert "--demo N" in result.output and "published" not in result.output


def test_a_missing_config_file_says_how_to_give_one(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["validate", "-c", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 1
    assert f"{tmp_path / 'nope.yaml'}: no such config file (give one with -c FILE" \
        in result.output


def test_run_on_a_taken_listen_port_ends_with_one_line(tmp_path: Path) -> None:
    import socket
    import subprocess
    import sys

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "router.yaml"
        config.write_text("kafka: {bootstrap_servers: '127.0.0.1:1'}\n"  # never reached
                          f"server: {{listen: '127.0.0.1:{port}'}}\ndestinations: []\n")
        done = subprocess.run([sys.executable, "-m", "router.cli", "run", "-c", str(config)],
                              capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert (f"cannot serve on server.listen '127.0.0.1:{port}': Address already in use"
            in done.stderr), done.stderr
