"""A re-driven record's first append time: from ``source_timestamp``, else its own."""

from __future__ import annotations

from router.delivery.retry import first_append


def test_first_append_prefers_the_header_and_survives_a_bad_one() -> None:
    assert first_append({"source_timestamp": "1795576397746"}, 5) == 1795576397746
    assert first_append({}, 5) == 5  # parked by a version without the header
    assert first_append({"source_timestamp": "soon"}, 5) == 5  # unreadable: not a crash
