"""Keeping secrets out of logs, metrics, API output and dead-letter headers.

``register(value)`` adds a known secret (every SecretStr in the config is registered at
load); ``redact(text)`` replaces registered secrets and anything that looks like a
credential: Authorization values, and api keys / tokens / secrets / passwords in URLs
and query strings.
"""

from __future__ import annotations

import re

MASK = "***"
_known: set[str] = set()
_PATTERNS = (
    re.compile(r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?)(bearer |basic )?[^\s\"',}]+"),
    re.compile(r"(?i)(bearer |basic )[A-Za-z0-9._~+/=-]{8,}"),
    re.compile(r"(?i)([?&;](?:api[_-]?key|api[_-]?secret|key|token|access_token|secret|"
               r"password|client_secret|signature)=)[^&\s\"']+"),
    re.compile(r"(?i)(://[^/\s:@]+:)[^/\s@]+(@)"),  # user:password@host
)


def register(secret: str | None) -> None:
    if secret and len(secret) >= 4:
        _known.add(secret)


def redact(text: str) -> str:
    for secret in _known:
        if secret in text:
            text = text.replace(secret, MASK)
    for pattern in _PATTERNS:
        text = pattern.sub(_mask, text)
    return text


def _mask(match: re.Match[str]) -> str:
    groups = [g for g in match.groups() if g is not None]
    if not groups:
        return MASK
    if len(match.groups()) == 2 and match.group(2) == "@":
        return match.group(1) + MASK + "@"
    return (match.group(1) or "") + MASK
