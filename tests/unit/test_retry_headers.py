"""A retry record's headers: numbers read leniently (a record put in a retry topic by hand
must not stop the router), the first append time from ``source_timestamp``."""

from __future__ import annotations

from router.delivery.retry import first_append, number


def test_first_append_prefers_the_header_and_survives_a_bad_one() -> None:
    assert first_append({"source_timestamp": "1795576397746"}, 5) == 1795576397746
    assert first_append({}, 5) == 5  # parked by a version without the header
    assert first_append({"source_timestamp": "soon"}, 5) == 5  # unreadable: not a crash


def test_numeric_headers_fall_back_to_their_default() -> None:
    headers = {"attempts": "3", "not_before": "tomorrow", "first_failure_at": ""}
    assert number(headers, "attempts", 0) == 3.0
    assert number(headers, "not_before", 0.0) == 0.0  # unreadable: due now
    assert number(headers, "first_failure_at", 0.0) == 0.0
    assert number(headers, "missing", 7) == 7
