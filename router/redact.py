"""Keeping secrets out of logs, metrics, API output and dead-letter headers.

``register(value)`` adds a known secret (every SecretStr in the config is registered at
load, and so is a plain string under a key that names a credential, such as a webhook's
``X-Api-Key`` header); ``redact(text)`` replaces registered secrets, as they are and as
JSON or a URL escapes them, and anything that looks like a credential: Authorization
values (any scheme), and api keys / tokens / secrets / passwords in URLs and query strings.
"""

from __future__ import annotations

import re
from urllib.parse import quote

import orjson

MASK = "***"
_known: set[str] = set()
_PATTERNS = (
    # the value after any scheme word ("Bearer", "Basic", "Token", "Klaviyo-API-Key" ...)
    re.compile(r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?)([\w-]+ )?[^\s\"',}]+"),
    re.compile(r"(?i)(bearer |basic )[A-Za-z0-9._~+/=-]{8,}"),
    re.compile(r"(?i)([?&;](?:api[_-]?key|api[_-]?secret|key|token|access_token|secret|"
               r"password|client_secret|signature)=)[^&\s\"']+"),
    re.compile(r"(?i)(://[^/\s:@]+:)[^/\s@]+(@)"),  # user:password@host
)


# a config key under which a plain string is a credential (header names, mostly)
_CREDENTIAL_NAME = re.compile(r"(?i)auth|key|token|secret|passw|signature|cookie|session")


def register(secret: str | None) -> None:
    if secret and len(secret) >= 4:
        # as written in JSON output (a quote or backslash escaped) and in a URL
        _known.update({secret, orjson.dumps(secret).decode()[1:-1], quote(secret, safe="")})


def names_credential(key: str) -> bool:
    return bool(_CREDENTIAL_NAME.search(key))


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
