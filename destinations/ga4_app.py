"""What a GA4 app data stream (Firebase) changes on the Measurement Protocol (see ga4.py).

The request names the stream with the ``firebase_app_id`` query parameter instead of
``measurement_id``, and the device with ``app_instance_id`` in the body instead of
``client_id``: the id the Firebase SDK gives one installation of the app, which GA4's
validation server expects as a 32-digit hexadecimal number. Segment's GA4 destination has
no default field for it (it must be mapped), so ours is read from the paths in
``app_instance_id_paths``; the default is an option of the event's integrations object,
where Segment carries per-destination values that are not part of its spec.
"""

from __future__ import annotations

import re
from typing import Any

DEFAULT_INSTANCE_ID_PATHS = ("integrations.Google Analytics 4.app_instance_id",)
INSTANCE_ID = re.compile(r"[0-9A-Fa-f]{32}")  # the SDKs give lower- or upper-case hex


def instance_id_problem(value: str) -> str | None:
    """Why GA4 would drop this app_instance_id, or None when it has the right shape."""
    if INSTANCE_ID.fullmatch(value):
        return None
    shown = value if len(value) <= 40 else value[:40] + "…"
    return (f"app_instance_id {shown!r} is not 32 hexadecimal digits (the Firebase SDK's "
            "app instance id); GA4 drops it")


def screen_view(event: dict[str, Any], props: dict[str, Any]
                ) -> tuple[str, dict[str, Any], tuple[str, ...]]:
    """A Segment screen as Firebase's ``screen_view`` (as Segment's Firebase integration
    logs it): the screen's name is ``screen_name``. Returns (name, params, used props)."""
    return "screen_view", {"screen_name": event.get("name") or props.get("name")}, ("name",)
