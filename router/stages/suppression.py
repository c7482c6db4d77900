"""GDPR suppression: events of listed users are never forwarded (Segment "Suppress").

The file holds one ``userId`` per line; surrounding whitespace is trimmed; blank lines and
lines starting with ``#`` are ignored (a ``#`` later in a line is part of the id, since ids
may contain one). Matching is on ``userId`` only, as Segment's suppression is keyed on it;
an event that carries only an ``anonymousId`` is not suppressed. Numeric userIds match
their decimal text.

A missing or unreadable file at start-up is an error. ``reload_if_changed`` (called
periodically by the app) re-reads the file when its mtime or size changes; if it cannot be
read then, the previous list stays in force (failing open would forward suppressed users)
and ``problem`` says why.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


class Suppression:
    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path is not None else None
        self.users: frozenset[str] = frozenset()
        self.problem: str | None = None
        self._stamp: tuple[int, int] | None = None
        if self.path is not None:
            try:
                self._load(self.path)
            except OSError as exc:
                raise ValueError(
                    f"cannot read the suppressed-users file {self.path}: {exc}"
                ) from exc

    def suppressed(self, event: dict[str, Any]) -> bool:
        users = self.users
        if not users:
            return False
        user_id = event.get("userId")
        if user_id is None:
            return False
        return (user_id if isinstance(user_id, str) else str(user_id)) in users

    def reload_if_changed(self) -> bool:
        """Re-read the file if it changed; True when a new list was loaded."""
        if self.path is None:
            return False
        try:
            stat = os.stat(self.path)
            if (stat.st_mtime_ns, stat.st_size) == self._stamp:
                return False
            self._load(self.path)
        except OSError as exc:
            self.problem = f"keeping {len(self.users)} suppressed users: {exc}"
            return False
        return True

    def _load(self, path: Path) -> None:
        stat = os.stat(path)
        text = path.read_text(encoding="utf-8")
        users = (line.strip() for line in text.splitlines())
        self.users = frozenset(u for u in users if u and not u.startswith("#"))
        self._stamp = (stat.st_mtime_ns, stat.st_size)
        self.problem = None
