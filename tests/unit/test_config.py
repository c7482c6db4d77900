"""Bad config files each produce their specific message, with file and line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from router.config import ConfigError, load

GOOD = """\
kafka:
  bootstrap_servers: 127.0.0.1:9092
  topics: [events]
destinations:
  - name: hook
    type: webhook
    settings:
      url: http://127.0.0.1:9/events
"""

CASES = [
    ("unknown top-level key", GOOD + "extra: 1\n", 9, "extra: unknown key"),
    ("unknown kafka key", GOOD.replace("  topics:", "  topicz: [x]\n  topics:"), 3,
     "kafka.topicz: unknown key"),
    ("unknown destination type", GOOD.replace("type: webhook", "type: webhok"), 6,
     "destinations[0].type: unknown connector; one of"),
    ("missing setting", GOOD.replace("      url: http://127.0.0.1:9/events\n", "      {}\n")
     .replace("settings:\n      {}", "settings: {}"), 7,
     "destinations[0].settings.url: required key is missing"),
    ("unknown setting", GOOD + "      urll: x\n", 9, "destinations[0].settings.urll: unknown key"),
    ("wrong type", GOOD.replace("topics: [events]", "topics: [events]\n  max_in_flight_events: "
                                "lots"), 4, "kafka.max_in_flight_events: Input should be a "
     "valid integer"),
    ("bad FQL", GOOD + "    where: 'event = '\n", 9,
     "destinations[0].where: FQL syntax error: expected a value, found end of expression at "
     "position 8"),
    ("batch above the connector limit", GOOD + "    batch: {max_events: 5000}\n", 5,
     "batch.max_events 5000 is above the webhook limit of 1000"),
    ("duplicate names", GOOD + GOOD.split("destinations:\n")[1], 9,
     "destinations[1].name: destination name 'hook' is already used by destinations[0]"),
    ("bad name", GOOD.replace("name: hook", "name: Hook One"), 5,
     "destinations[0].name: String should match pattern"),
    ("unset env var", GOOD.replace("http://127.0.0.1:9/events", "${NO_SUCH_VAR_XYZ}"), 8,
     "environment variable NO_SUCH_VAR_XYZ is not set"),
    ("invalid YAML", GOOD + "  - name: [unclosed\n", 10, "invalid YAML"),
    ("duplicate key", GOOD.replace("  topics: [events]\n", "  topics: [events]\n  topics: [x]\n"),
     4, "kafka.topics: the key is given twice"),
    ("unknown transform", GOOD + "    transforms:\n      - uppercase: [event]\n", 10,
     "destinations[0].transforms[0]"),
    ("SASL without its password", GOOD.replace(
        "  topics: [events]\n", "  topics: [events]\n  security_protocol: SASL_SSL\n"
        "  sasl_mechanism: SCRAM-SHA-512\n  sasl_plain_username: router\n"), 1,
     "kafka.sasl_plain_password: required with security_protocol SASL_SSL"),
    ("SASL setting under PLAINTEXT", GOOD.replace(
        "  topics: [events]\n", "  topics: [events]\n  sasl_plain_username: router\n"), 4,
     "kafka.sasl_plain_username: only used with SASL_PLAINTEXT or SASL_SSL"),
    ("SSL file under SASL_PLAINTEXT", GOOD.replace(
        "  topics: [events]\n", "  topics: [events]\n  security_protocol: SASL_PLAINTEXT\n"
        "  sasl_mechanism: PLAIN\n  sasl_plain_username: u\n  sasl_plain_password: p\n"
        "  ssl_cafile: /etc/ca.pem\n"), 8,
     "kafka.ssl_cafile: only used with SSL or SASL_SSL"),
    ("bad rename", GOOD + "    transforms:\n      - rename_events: {a: 1}\n", 10,
     "destinations[0].transforms[0].rename_events.a: Input should be a valid string"),
    ("python transform that does not import", GOOD + "    transforms:\n"
     "      - python: 'no_such_module_xyz:f'\n", 10,
     "destinations[0].transforms[0].python: cannot import the python transform"),
    ("missing suppressed-users file", GOOD + "pipeline:\n  suppressed_users: /no/such/file\n",
     10, "pipeline.suppressed_users: cannot read the suppressed-users file /no/such/file"),
    ("missing tracking plan", GOOD + "pipeline:\n  tracking_plan: /no/such/plan.yaml\n", 10,
     "pipeline.tracking_plan.path: cannot read the tracking plan /no/such/plan.yaml"),
    ("unknown SASL mechanism", GOOD.replace(
        "  topics: [events]\n", "  topics: [events]\n  security_protocol: SASL_SSL\n"
        "  sasl_mechanism: KERBEROS\n"), 5, "kafka.sasl_mechanism: Input should be"),
]


@pytest.mark.parametrize(("title", "text", "line", "message"), CASES, ids=[c[0] for c in CASES])
def test_bad_config_names_file_line_and_key(tmp_path: Path, title: str, text: str, line: int,
                                            message: str) -> None:
    path = tmp_path / "router.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load(path)
    problems = info.value.problems
    assert any(message in p and p.startswith(f"{path}:{line}:") for p in problems), problems


def test_env_interpolation_with_defaults(tmp_path: Path) -> None:
    path = tmp_path / "router.yaml"
    path.write_text(GOOD.replace("127.0.0.1:9092", "${BOOT:-10.0.0.1:9092}")
                    .replace("http://127.0.0.1:9/events", "${HOOK_URL}"))
    config = load(path, env={"HOOK_URL": "http://x/y"})
    assert config.kafka.bootstrap_servers == "10.0.0.1:9092"
    assert config.destinations[0].settings.url == "http://x/y"


def test_secrets_are_never_printed(tmp_path: Path) -> None:
    path = tmp_path / "router.yaml"
    path.write_text(GOOD.replace("url: http://127.0.0.1:9/events",
                                 "url: http://127.0.0.1:9/events\n      secret: hunter2-sekret"))
    config = load(path)
    assert "hunter2-sekret" not in repr(config) and "hunter2-sekret" not in str(config)


def test_validate_cli_exit_codes(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(GOOD)
    bad.write_text(GOOD + "bogus: 1\n")
    ok = subprocess.run([sys.executable, "-m", "router.cli", "validate", "-c", str(good)],
                        capture_output=True, text=True)
    assert ok.returncode == 0 and "is valid" in ok.stdout
    failed = subprocess.run([sys.executable, "-m", "router.cli", "validate", "-c", str(bad)],
                            capture_output=True, text=True)
    assert failed.returncode == 1 and f"{bad}:9: bogus: unknown key" in failed.stderr


def test_every_example_config_validates() -> None:
    examples = [*sorted(Path("config/examples").glob("*.yaml")), Path("config/router.yaml")]
    assert examples
    for path in examples:
        load(path, env={})


def test_schema_lists_every_connector() -> None:
    from destinations.registry import REGISTRY
    from router.config import json_schema

    text = str(json_schema())
    for name in REGISTRY:
        assert f"'{name}'" in text


def test_generated_reference_and_schema_are_current() -> None:
    import orjson

    from router.config import json_schema
    from router.reference import render

    assert Path("docs/reference.md").read_text() == render(), "run `make docs`"
    on_disk = orjson.loads(Path("config/router.schema.json").read_bytes())
    assert on_disk == json_schema(), "run `make docs`"


def test_a_sasl_ssl_config_reaches_the_kafka_client(tmp_path: Path) -> None:
    from router.app import kafka_options

    path = tmp_path / "router.yaml"
    path.write_text(GOOD.replace("  topics: [events]\n", "  topics: [events]\n"
                                 "  security_protocol: SASL_SSL\n"
                                 "  sasl_mechanism: SCRAM-SHA-256\n"
                                 "  sasl_plain_username: router\n"
                                 "  sasl_plain_password: ${KAFKA_PASSWORD}\n"))
    options = kafka_options(load(path, env={"KAFKA_PASSWORD": "s3cret"}))
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-256"
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("router",
                                                                                "s3cret")
    assert options["ssl_context"] is not None


def test_a_tracking_plan_with_a_bad_schema_fails_validate(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text("events:\n  Signed Up: {type: objekt}\n")
    path = tmp_path / "router.yaml"
    path.write_text(GOOD + f"pipeline:\n  tracking_plan: {{path: {plan}, violations: block}}\n")
    with pytest.raises(ConfigError) as info:
        load(path)
    [problem] = info.value.problems
    assert problem.startswith(f"{path}:10: pipeline.tracking_plan.path: {plan}")
    plan.write_text("events:\n  Signed Up: {type: object}\n")
    assert load(path).pipeline.tracking_plan is not None  # fixed: valid


@pytest.mark.parametrize(("text", "line", "message"), [
    (GOOD.replace("    settings:", "   settings:"), 7,
     "invalid YAML at column 4: the indentation does not match the lines above"),
    (GOOD.replace("  topics:", "\ttopics:"), 3, "a tab character: YAML is indented with spaces"),
    (GOOD + "    where: 'type = \"track\"\n", 10,
     "the file ends inside a quoted string: close the quote (YAML: found unexpected end of "
     "stream), while scanning a quoted scalar from line 9"),
    (GOOD.replace("topics: [events]", "topics: [events"), 4,
     "a [list] or {mapping} is not closed, or lacks a comma between items"),
    (GOOD.replace("bootstrap_servers: 127.0.0.1:9092", "bootstrap_servers: a: b"), 2,
     "quote a value that contains one"),
], ids=["indentation", "tab", "unclosed quote", "unclosed list", "colon in a value"])
def test_yaml_slips_say_what_to_fix(tmp_path: Path, text: str, line: int, message: str) -> None:
    """PyYAML's parser jargon alone ("expected <block end>") does not tell a first-time
    user what to change; the line where the broken block began often does."""
    path = tmp_path / "router.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load(path)
    [problem] = info.value.problems
    assert problem.startswith(f"{path}:{line}: ") and message in problem, problem


def test_reference_names_each_key_as_the_yaml_writes_it(tmp_path: Path) -> None:
    """A setting with an alias (DuckDB's and PostgreSQL's `schema`) is documented by the
    key a config uses: the field's own name is refused as an unknown key."""
    from router.reference import render

    reference = render()
    assert "| `schema` |" in reference and "`schema_name`" not in reference
    path = tmp_path / "router.yaml"
    path.write_text("kafka: {bootstrap_servers: 'localhost:9092', topics: [events]}\n"
                    "destinations:\n  - name: wh\n    type: duckdb\n"
                    "    settings: {path: wh.duckdb, schema: analytics}\n")
    assert load(str(path)).destinations[0].settings.schema_name == "analytics"


AMPLITUDE = GOOD.replace("type: webhook", "type: amplitude").replace(
    "url: http://127.0.0.1:9/events", "api_key: k")
TOP_KAFKA = "kafka:\n  bootstrap_servers: 127.0.0.1:9092\n  topics: [events]\n"


@pytest.mark.parametrize(("text", "line", "message"), [
    (GOOD + "    consent_catgories: [ads]\n", 9, "destinations[0].consent_catgories: unknown key "
     "(not part of the config contract); did you mean `consent_categories`?"),
    (GOOD.replace("  topics:", "  topic: [x]\n  topics:"), 3,
     "kafka.topic: unknown key (not part of the config contract); did you mean `topics`?"),
    (GOOD.replace("type: webhook", "type: amplitud"), 6, "destinations[0].type: unknown "
     "connector; one of amplitude, bigquery, braze, duckdb, ga4, hubspot, mixpanel, postgres, "
     "posthog, salesforce, webhook; did you mean `amplitude`?"),
    (GOOD + "    transforms:\n      - drop_field: [a]\n", 10,
     "destinations[0].transforms[0]: unknown transform step 'drop_field'; expected one of: "
     "rename_events, drop_fields, allow_fields, hash_fields, set_fields, sample, python; "
     "did you mean `drop_fields`?"),
    (GOOD + "    secret: s\n", 9, "destinations[0].secret: unknown key (not part of the "
     "config contract); it belongs under `settings` (destinations[0].settings.secret)"),
    (GOOD + "      timeout_s: 5\n", 9, "destinations[0].settings.timeout_s: unknown key (not "
     "part of the config contract); it belongs under `delivery` "
     "(destinations[0].delivery.timeout_s)"),
    (GOOD + "      enabled: false\n", 9, "destinations[0].settings.enabled: unknown key (not "
     "part of the config contract); it belongs one level up (destinations[0].enabled)"),
    (GOOD + "group_id: x\n", 9, "group_id: unknown key (not part of the config contract); "
     "it belongs under `kafka` (kafka.group_id)"),
    (GOOD + "    url: http://x\n", 9, "destinations[0].url: unknown key (not part of the config "
     "contract)"),
], ids=["key typo", "kafka key typo", "connector typo", "transform typo", "key above settings",
        "delivery key in settings", "destination key in settings", "kafka key at the top",
        "already in its place: no guess"])
def test_an_unknown_key_or_name_suggests_the_real_one(tmp_path: Path, text: str, line: int,
                                                      message: str) -> None:
    path, problem = only_problem(tmp_path, text)
    assert problem == f"{path}:{line}: {message}"


def only_problem(tmp_path: Path, text: str) -> tuple[Path, str]:
    """The config file written from ``text``, and the one problem ``load`` finds in it."""
    path = tmp_path / "router.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load(path)
    [problem] = info.value.problems
    return path, problem


@pytest.mark.parametrize(("text", "line", "message"), [
    (GOOD.replace("    type: webhook\n", ""), 5, "destinations[0].type: required key `type` is "
     "missing; it names the connector, one of: amplitude, bigquery, braze, duckdb, ga4, "
     "hubspot, mixpanel, postgres, posthog, salesforce, webhook"),
    (GOOD.replace("type: webhook", "typ: webhook"), 5, "destinations[0].type: required key "
     "`type` is missing (is `typ` a misspelling of it?); it names the connector, one of: "),
    (GOOD.replace("type: webhook", "type:"), 6, "destinations[0].type: required key `type` is "
     "empty; it names the connector, one of: "),
    (GOOD.replace(TOP_KAFKA, "kafka: 3\n"), 1,
     "kafka: expected a mapping (indented `key: value` lines), got a number"),
    (GOOD.replace(TOP_KAFKA, "kafka:\n"), 1, "kafka: expected a mapping (indented `key: value` "
     "lines), got an empty value (nothing after the ':')"),
    ("destinations: {a: 1}\n", 1, "destinations: expected a list of destinations (each one "
     "starts with `- name:`), got a mapping"),
    ("destinations: [hook]\n", 1, "destinations[0]: expected a mapping (a destination's name, "
     "type and settings), got a string"),
    ("- kafka\n", 1, "(top level): expected a mapping of sections (kafka:, destinations:, ...) "
     "at the top of the file, got a list"),
    (GOOD.replace("topics: [events]", "topics: events"), 3, "kafka.topics: expected a list "
     "([a, b], or one `- item` line each), got a string; write [events]"),
    (GOOD.replace("topics: [events]", "topics: []"), 3,
     "kafka.topics: the list needs at least 1 item, got an empty list"),
    (GOOD.replace("topics: [events]", "topics: [events]\n  group_id:"), 4, "kafka.group_id: "
     "Input should be a valid string, got an empty value (nothing after the ':')"),
    (GOOD + "    delivery: {concurrency: lots}\n", 9, "destinations[0].delivery.concurrency: "
     "Input should be a valid integer, unable to parse string as an integer (got 'lots')"),
    (GOOD + "    delivery: {timeout_s: 10s}\n", 9, "destinations[0].delivery.timeout_s: Input "
     "should be a valid number, unable to parse string as a number (got '10s'); write a plain "
     "number of seconds (the key's suffix gives the unit)"),
    (GOOD + "    delivery: {timeout_s: -1}\n", 9,
     "destinations[0].delivery.timeout_s: Input should be greater than 0 (got -1)"),
    (GOOD + "    enabled: maybe\n", 9, "destinations[0].enabled: Input should be a valid "
     "boolean, unable to interpret input (got 'maybe'); write true or false"),
    (GOOD + "log_level: INFO\n", 9, "log_level: Input should be 'debug', 'info', 'warning' or "
     "'error' (got 'INFO'); did you mean `info`?"),
    (GOOD.replace("name: hook", "name: Hook One"), 5, "destinations[0].name: String should "
     "match pattern '^[a-z0-9][a-z0-9_-]{0,62}$' (got 'Hook One'); use lowercase letters, "
     "digits, `_` and `-`, starting with a letter or digit, at most 63 characters"),
], ids=["no type", "misspelt type", "empty type", "kafka: 3", "empty kafka",
        "destinations as a mapping", "destination as a string", "a list at the top",
        "topics as a string", "no topics", "empty value", "string for a number",
        "a unit in the value", "negative timeout", "not a boolean", "level in capitals",
        "bad name"])
def test_a_slip_of_shape_or_value_says_what_to_write(tmp_path: Path, text: str, line: int,
                                                      message: str) -> None:
    """No pydantic class names ("instance of KafkaConfig"); what was given and what to write."""
    path, problem = only_problem(tmp_path, text)
    assert problem.startswith(f"{path}:{line}: {message}"), problem
    assert "instance of" not in problem


@pytest.mark.parametrize("text", [
    GOOD.replace("topics: [events]", "topics: [events]\n  security_protocol: SASL_SSL\n"
                 "  sasl_mechanism: PLAIN\n  sasl_plain_username: u\n"
                 "  sasl_plain_password: 1234567"),
    GOOD + "server: {admin_token: 1234567}\n",
    AMPLITUDE.replace("api_key: k", "api_key: 1234567"),
    GOOD.replace("url: http://127.0.0.1:9/events", "url: http://u:1234567@x/e\n"
                 "      timeout_s: http://u:1234567@x/e"),
], ids=["kafka password", "admin token", "connector secret", "string in settings"])
def test_a_bad_value_is_not_echoed_where_it_may_be_a_secret(tmp_path: Path, text: str) -> None:
    path = tmp_path / "router.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load(path)
    assert info.value.problems and "1234567" not in str(info.value)
