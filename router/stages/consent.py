"""Consent enforcement, exactly as Segment Connections does it.

The event carries the end user's choices in ``context.consent.categoryPreferences``
(``{"Analytics": true, "Advertising": false}``). A destination that lists
``consent_categories`` receives the event only if *every* listed category is ``true``:

- no ``context``, no ``consent``, or an empty ``consent: {}`` -> no enforcement (sent);
- ``categoryPreferences: {}`` -> every category is false (not sent);
- a category missing from the preferences, or any value other than the boolean ``true``
  (``"true"``, ``1``, ``null``), counts as not consented;
- a non-empty ``consent`` without a ``categoryPreferences`` object is treated like
  ``categoryPreferences: {}`` (fail closed: the sender meant to state consent);
- category ids are case-sensitive;
- a destination with no categories has no consent stage at all (``None``).

Consent is evaluated before the integrations object (Segment: "looks at the consent object
first, and then takes into account the integrations object").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def compile_consent(categories: list[str]) -> Callable[[dict[str, Any]], bool] | None:
    required = tuple(dict.fromkeys(categories))
    if not required:
        return None

    def consented(event: dict[str, Any]) -> bool:
        context = event.get("context")
        if not context:
            return True
        consent = context.get("consent") if isinstance(context, dict) else None
        if not consent or not isinstance(consent, dict):
            return True
        prefs = consent.get("categoryPreferences")
        if not isinstance(prefs, dict):
            return False
        if len(required) == 1:  # the common case: no generator
            return prefs.get(required[0]) is True
        return all(prefs.get(category) is True for category in required)

    return consented
