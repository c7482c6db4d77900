"""One destination's per-event route: consent -> integrations -> where -> transforms.

    route = compile_route(name="amplitude", display_name="Amplitude",
                          consent_categories=["Analytics"], where="type = 'track'",
                          transforms=[...])
    route(event)  ->  the event to send (possibly a copy), or a reason string:

    consent       the user did not consent to every category the destination needs
    integrations  the event's integrations object disables this destination
    filter        the `where` expression is false
    filter_error  evaluating `where` raised (fail closed: never leak the event)
    sampled       a `sample` transform left it out
    transform     a python transform returned None
    transform_error  a python transform raised or returned a non-dict

Everything is compiled here, once; a stage that is not configured costs nothing per
event. The route never raises and never mutates its input.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from router.stages.consent import compile_consent
from router.stages.fql import compile_fql
from router.stages.integrations import compile_integrations
from router.stages.transforms import TransformStep, compile_transforms

Route = Callable[[dict[str, Any]], dict[str, Any] | str]
REASONS = (
    "consent",
    "integrations",
    "filter",
    "filter_error",
    "sampled",
    "transform",
    "transform_error",
)


def compile_route(
    *,
    name: str,
    display_name: str,
    other_names: tuple[str, ...] = (),
    warehouse: bool = False,
    consent_categories: list[str] | None = None,
    where: str | None = None,
    transforms: list[TransformStep] | None = None,
) -> Route:
    """Raises FQLSyntaxError for a bad `where`, ValueError for a bad python transform."""
    consented = compile_consent(consent_categories or [])
    enabled = compile_integrations(name, display_name, other_names, warehouse)
    matches = compile_fql(where) if where and where.strip() else None
    transform = compile_transforms(transforms or [])

    def route(event: dict[str, Any]) -> dict[str, Any] | str:
        if consented is not None and not consented(event):
            return "consent"
        if "integrations" in event and not enabled(event):  # most events have none
            return "integrations"
        if matches is not None:
            try:
                if not matches(event):
                    return "filter"
            except Exception:
                return "filter_error"
        if transform is None:
            return event
        try:
            return transform(event)
        except Exception:
            return "transform_error"

    return route
