"""Consent and the integrations object, alone and reconciled as Segment documents it.

Segment's "Reconcile consent object and integrations object conflicts" table
(privacy/consent-management/consent-in-segment-connections) is reproduced row by row in
`test_segment_reconciliation_table`, with destinations mapped to categories as there.
"""

from __future__ import annotations

from typing import Any

import pytest

from destinations.registry import REGISTRY
from router.stages.consent import compile_consent
from router.stages.integrations import compile_integrations
from router.stages.route import compile_route


def with_consent(consent: Any = ..., integrations: Any = ...) -> dict[str, Any]:
    event: dict[str, Any] = {"type": "track", "event": "E", "messageId": "m", "userId": "u"}
    if consent is not ...:
        event["context"] = {"consent": consent}
    if integrations is not ...:
        event["integrations"] = integrations
    return event


def prefs(**values: Any) -> dict[str, Any]:
    return {"categoryPreferences": values}


# --- consent alone --------------------------------------------------------------------


def test_no_categories_means_no_stage() -> None:
    assert compile_consent([]) is None


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        ({"type": "track"}, True),  # no context
        ({"type": "track", "context": {}}, True),  # no consent
        (with_consent({}), True),  # empty consent object: no enforcement
        (with_consent(None), True),
        (with_consent(prefs()), False),  # empty categoryPreferences: all false
        (with_consent(prefs(Analytics=True)), True),
        (with_consent(prefs(Analytics=False)), False),
        (with_consent(prefs(analytics=True)), False),  # case-sensitive ids
        (with_consent(prefs(Analytics="true")), False),  # only boolean true counts
        (with_consent(prefs(Analytics=1)), False),
        (with_consent(prefs(Analytics=None)), False),
        (with_consent(prefs(Advertising=True)), False),  # category missing
        (with_consent({"categoryPreferences": None}), False),  # malformed: fail closed
        (with_consent({"other": 1}), False),
    ],
)
def test_single_category(event: dict[str, Any], expected: bool) -> None:
    check = compile_consent(["Analytics"])
    assert check is not None
    assert check(event) is expected


@pytest.mark.parametrize(
    ("preferences", "expected"),
    [
        (prefs(Analytics=True, Advertising=True), True),
        (prefs(Analytics=True, Advertising=False), False),
        (prefs(Analytics=True), False),
        (prefs(Analytics=True, Advertising=True, Functional=False), True),
    ],
)
def test_all_categories_must_be_true(preferences: dict[str, Any], expected: bool) -> None:
    check = compile_consent(["Analytics", "Advertising"])
    assert check is not None
    assert check(with_consent(preferences)) is expected


# --- integrations alone ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("integrations", "expected"),
    [
        (..., True),  # no integrations key
        ({}, True),
        (None, True),
        ({"All": True}, True),
        ({"All": False}, False),
        ({"All": False, "Mixpanel": True}, True),  # display name
        ({"All": False, "mixpanel-eu": True}, True),  # configured name
        ({"All": False, "mixpanel": True}, False),  # keys are case-sensitive
        ({"Mixpanel": False}, False),
        ({"mixpanel-eu": False}, False),
        ({"All": True, "Mixpanel": False}, False),
        ({"Mixpanel": {"api_secret": "x"}}, True),  # options object = enabled
        ({"All": False, "Mixpanel": {}}, True),  # even an empty one (JS truthiness)
        ({"All": False, "Mixpanel": None}, False),
        ({"All": False, "Mixpanel": 0}, False),
        ({"Mixpanel": None}, True),  # only an explicit false disables when All is on
        ({"Amplitude": False}, True),  # another destination's key
        ({"All": False, "Amplitude": True}, False),
        ({"mixpanel-eu": True, "Mixpanel": False}, True),  # the configured name wins
        ({"mixpanel-eu": False, "Mixpanel": True}, False),
    ],
)
def test_integrations_object(integrations: Any, expected: bool) -> None:
    enabled = compile_integrations("mixpanel-eu", "Mixpanel")
    assert enabled(with_consent(integrations=integrations)) is expected


@pytest.mark.parametrize(("kind", "key"), [
    ("webhook", "Webhooks"), ("bigquery", "BigQuery"), ("postgres", "Postgres")])
def test_integrations_object_knows_segments_catalog_names(kind: str, key: str) -> None:
    """Segment's own names for these destinations work as keys, beside ours."""
    connector = REGISTRY[kind]
    enabled = compile_integrations("mine", connector.display_name, connector.other_names)
    assert enabled(with_consent(integrations={key: False})) is False
    assert enabled(with_consent(integrations={"All": False, key: True})) is True
    assert enabled(with_consent(integrations={"All": False, connector.display_name: True}))
    assert enabled(with_consent(integrations={"All": False, "Other": True})) is False


def test_a_warehouse_is_turned_off_by_its_own_key_only() -> None:
    """Segment passes events on to warehouses whatever ``All`` says (its filtering guide:
    they are "passed downstream to your warehouse(s)")."""
    enabled = compile_integrations("pg", "PostgreSQL", ("Postgres",), warehouse=True)
    assert enabled(with_consent(integrations={"All": False, "Mixpanel": True})) is True
    assert enabled(with_consent(integrations={"All": False})) is True
    assert enabled(with_consent(integrations={"All": False, "pg": True})) is True
    assert enabled(with_consent(integrations={"pg": False})) is False
    assert enabled(with_consent(integrations={"All": False, "Postgres": False})) is False
    for kind in ("postgres", "duckdb", "bigquery"):
        assert REGISTRY[kind].warehouse
    assert not any(c.warehouse for k, c in REGISTRY.items()
                   if k not in ("postgres", "duckdb", "bigquery"))


def test_integrations_name_equal_to_display_name() -> None:
    enabled = compile_integrations("Webhook", "Webhook")
    assert enabled(with_consent(integrations={"All": False, "Webhook": True})) is True
    assert enabled(with_consent(integrations={"Webhook": False})) is False


# --- reconciliation (consent first, then integrations) --------------------------------

MAPPING = {"facebook": ["ad"], "google-ads": ["ad"], "amplitude": ["analytics"], "webhook": []}
MAPPING_MULTI = {**MAPPING, "facebook": ["ad", "analytics"]}


def receivers(event: dict[str, Any], mapping: dict[str, list[str]]) -> set[str]:
    got = set()
    for name, categories in mapping.items():
        route = compile_route(
            name=name, display_name=name.title(), consent_categories=categories, where=None
        )
        if isinstance(route(event), dict):
            got.add(name)
    return got


ALL = {"facebook", "google-ads", "amplitude", "webhook"}
FB_ON_AMP_OFF = {"facebook": True, "amplitude": False}


@pytest.mark.parametrize(
    ("consent", "integrations", "mapping", "expected"),
    [
        # Not provided or empty consent object x not provided or empty integrations.
        (..., ..., MAPPING, ALL),
        ({}, {}, MAPPING, ALL),
        # Empty categoryPreferences x no integrations: mapped destinations get nothing.
        (prefs(), ..., MAPPING, {"webhook"}),
        # No consent x {facebook: true, amplitude: false}.
        (..., FB_ON_AMP_OFF, MAPPING, {"facebook", "google-ads", "webhook"}),
        # Empty categoryPreferences x {facebook: true, amplitude: false}: consent first.
        (prefs(), FB_ON_AMP_OFF, MAPPING, {"webhook"}),
        # Categories no destination is mapped to: everything flows (integrations aside).
        (prefs(other=True), ..., {"webhook": [], "x": []}, {"webhook", "x"}),
        # {ad: true, analytics: false}, ad = facebook, google-ads; analytics = amplitude.
        (prefs(ad=True, analytics=False), ..., MAPPING, {"facebook", "google-ads", "webhook"}),
        (
            prefs(ad=True, analytics=False),
            FB_ON_AMP_OFF,
            MAPPING,
            {"facebook", "google-ads", "webhook"},
        ),
        (
            prefs(ad=True, analytics=False),
            {"facebook": False, "amplitude": False},
            MAPPING,
            {"google-ads", "webhook"},
        ),
        # facebook mapped to ad AND analytics: needs both.
        (prefs(ad=True, analytics=False), FB_ON_AMP_OFF, MAPPING_MULTI, {"google-ads", "webhook"}),
        (
            prefs(ad=True, analytics=True),
            FB_ON_AMP_OFF,
            MAPPING_MULTI,
            {"facebook", "google-ads", "webhook"},
        ),
        (prefs(ad=False, analytics=True), FB_ON_AMP_OFF, MAPPING_MULTI, {"webhook"}),
    ],
)
def test_segment_reconciliation_table(
    consent: Any, integrations: Any, mapping: dict[str, list[str]], expected: set[str]
) -> None:
    assert receivers(with_consent(consent, integrations), mapping) == expected


def test_consent_is_reported_before_integrations() -> None:
    route = compile_route(
        name="facebook", display_name="Facebook", consent_categories=["ad"], where=None
    )
    assert route(with_consent(prefs(ad=False), {"facebook": False})) == "consent"
    assert route(with_consent(prefs(ad=True), {"facebook": False})) == "integrations"
    assert route(with_consent(prefs(ad=True), {"All": False, "Facebook": True})) != "integrations"
