"""Mixpanel: how Segment's fields become Mixpanel's reserved properties.

Follows the Mixpanel (Actions) destination's default mappings (Segment's catalog page and
Mixpanel's Segment integration guide): ``context`` → default event properties, identify
traits → reserved profile properties, group ``name`` → ``$name``.
"""

from __future__ import annotations

import re
from typing import Any

# identify traits → Mixpanel reserved profile properties (Segment maps `created`; the
# Segment spec's own trait is `createdAt`: both mean the profile's creation date)
PROFILE_TRAITS = {"email": "$email", "name": "$name", "firstName": "$first_name",
                  "lastName": "$last_name", "phone": "$phone", "username": "$username",
                  "created": "$created", "createdAt": "$created", "avatar": "$avatar"}
GROUP_TRAITS = {"name": "$name"}

# (browser, what in the user agent names it); the first match wins, so the order matters:
# Chrome-based browsers say "Chrome" too, and nearly every browser says "Gecko". Names and
# order are those of Mixpanel's own libraries, which Segment's mapping reuses.
_BROWSERS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(pattern)) for name, pattern in (
        ("Opera Mini", r" OPR/.*Mini|Mini.* OPR/"), ("Opera", r" OPR/"),
        ("BlackBerry", r"(?i)BlackBerry|PlayBook|BB10"),
        ("Internet Explorer Mobile", r"IEMobile|WPDesktop"),
        ("Samsung Internet", r"SamsungBrowser/"), ("Microsoft Edge", r"Edge|Edg/"),
        ("Facebook Mobile", r"FBIOS"), ("Chrome", r"Chrome"), ("Chrome iOS", r"CriOS"),
        ("UC Browser", r"UCWEB|UCBrowser"), ("Firefox iOS", r"FxiOS"),
        ("Safari", r""),  # decided by the vendor (Apple), below
        ("Android Mobile", r"Android"), ("Konqueror", r"Konqueror"),
        ("Firefox", r"Firefox"), ("Internet Explorer", r"MSIE|Trident/"),
        ("Mozilla", r"Gecko")))
SAFARI = re.compile(r"Version/[\d.]+.* Safari/")
# what precedes each browser's version number in the user agent
_VERSIONS = {name: re.compile(prefix + r"(\d+(?:\.\d+)?)") for name, prefix in (
    ("Internet Explorer Mobile", "rv:"), ("Microsoft Edge", "Edge?/"), ("Chrome", "Chrome/"),
    ("Chrome iOS", "CriOS/"), ("UC Browser", "(?:UCBrowser|UCWEB)/"), ("Safari", "Version/"),
    ("Mobile Safari", "Version/"), ("Opera", "(?:Opera|OPR)/"), ("Firefox", "Firefox/"),
    ("Firefox iOS", "FxiOS/"), ("Konqueror", "Konqueror:"), ("BlackBerry", "BlackBerry "),
    ("Android Mobile", r"Android\s"), ("Samsung Internet", "SamsungBrowser/"),
    ("Internet Explorer", "(?:rv:|MSIE )"), ("Mozilla", "rv:"))}


def browser(user_agent: str, vendor: str) -> tuple[str | None, str | None]:
    """(``$browser``, ``$browser_version``) from a user agent; ``vendor`` is the device's
    manufacturer (Safari is known by Apple's, or by its version token when none is sent)."""
    for name, pattern in _BROWSERS:
        if name == "Safari":
            # a browser knows its vendor; a server sees the device's manufacturer, rarely
            # sent for the web: Safari's user agent then says Version/… Safari/…
            if "Apple" not in vendor and not (not vendor and SAFARI.search(user_agent)):
                continue
            name = "Mobile Safari" if "Mobile" in user_agent else "Safari"
        elif not pattern.search(user_agent):
            continue
        version = _VERSIONS.get(name)
        found = version.search(user_agent) if version else None
        return name, found.group(1) if found else None
    return None, None


def context_properties(ctx: dict[str, Any]) -> dict[str, Any]:
    """Segment's ``context`` as Mixpanel default event properties (absent or empty values
    are left out)."""
    app, os_, page = ctx.get("app") or {}, ctx.get("os") or {}, ctx.get("page") or {}
    device, network = ctx.get("device") or {}, ctx.get("network") or {}
    library, screen = ctx.get("library") or {}, ctx.get("screen") or {}
    campaign, location = ctx.get("campaign") or {}, ctx.get("location") or {}
    user_agent = ctx.get("userAgent")
    name, version = (browser(user_agent, str(device.get("manufacturer") or ""))
                     if isinstance(user_agent, str) and user_agent else (None, None))
    pairs = (
        ("$app_build_number", app.get("build")), ("$app_version_string", app.get("version")),
        ("$app_namespace", app.get("namespace")), ("$app_name", app.get("name")),
        ("$browser", name), ("$browser_version", version),
        ("$bluetooth_enabled", network.get("bluetooth")),
        ("$cellular_enabled", network.get("cellular")), ("$carrier", network.get("carrier")),
        ("$wifi_enabled", network.get("wifi")),
        ("$current_url", page.get("url")), ("$referrer", page.get("referrer")),
        ("$device", device.get("name")), ("$device_name", device.get("name")),
        ("$device_type", device.get("type")), ("$manufacturer", device.get("manufacturer")),
        ("$model", device.get("model")),
        ("$ios_ifa", device.get("advertisingId") or device.get("idfa")),
        ("$group_id", ctx.get("groupId")),
        ("$lib_version", library.get("version")),
        ("mp_lib", f"Segment: {library['name']}" if library.get("name") else None),
        ("$locale", ctx.get("locale")),
        ("$os", os_.get("name")), ("$os_version", os_.get("version")),
        ("$screen_width", screen.get("width")), ("$screen_height", screen.get("height")),
        ("$screen_density", screen.get("density")),
        ("mp_country_code", location.get("country")),
        ("utm_source", campaign.get("source")), ("utm_medium", campaign.get("medium")),
        ("utm_campaign", campaign.get("name")), ("utm_term", campaign.get("term")),
        ("utm_content", campaign.get("content")))
    return {k: v for k, v in pairs if v is not None and v != ""}
