"""The Segment ``integrations`` object: per-event opt-in/opt-out of destinations.

    {"All": false, "Mixpanel": true, "Amplitude": {"session_id": 1}}

Rules (those of analytics.js, which defined the object):

- no ``integrations`` key, or an empty object -> every destination receives the event;
- a key naming this destination decides: ``false`` disables it; any truthy value
  (``true``, an object of options, even an empty one) enables it;
- a key matches the destination's configured ``name``, its connector's display name
  (``"Mixpanel"``) or Segment's catalog name for it where that differs (``"Webhooks"``);
  keys are case-sensitive; when several are present, ``name`` wins, then the display name;
- without a specific key, ``"All": false`` disables; ``All`` is true by default;
- except for a warehouse: Segment passes every event on to warehouses whatever the object
  says, so ``All`` does not apply to one; only a key naming it (``false``) turns it off;
- when ``All`` is false, a specific key must be truthy (JS truthiness: ``null``, ``0`` and
  ``""`` are not) to enable; when ``All`` is true only an explicit ``false`` disables.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def compile_integrations(name: str, display_name: str, other_names: tuple[str, ...] = (),
                         warehouse: bool = False) -> Callable[[dict[str, Any]], bool]:
    keys = tuple(dict.fromkeys((name, display_name, *other_names)))  # in order, once each

    def enabled(event: dict[str, Any]) -> bool:
        integrations = event.get("integrations")
        if not integrations or not isinstance(integrations, dict):
            return True
        all_off = integrations.get("All") is False and not warehouse
        for key in keys:
            if key in integrations:
                value = integrations[key]
                if value is False:
                    return False
                return _truthy(value) if all_off else True
        return not all_off

    return enabled


def _truthy(value: Any) -> bool:
    """JavaScript truthiness: objects and lists are truthy even when empty."""
    if isinstance(value, dict | list):
        return True
    return bool(value)
