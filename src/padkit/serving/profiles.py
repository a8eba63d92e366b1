"""Per-user preference profiles in SQLite: the OpenAI ``user`` field picks one."""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from padkit.errors import PadkitError
from padkit.preferences import Preference

_SCHEMA = """
CREATE TABLE IF NOT EXISTS profiles (
    user TEXT PRIMARY KEY,
    preference TEXT NOT NULL,
    alignment_weight REAL,
    updated_at REAL NOT NULL
)
"""


@dataclass
class Profile:
    """A stored preference (as given: text or weighted dimensions) and an optional alignment weight."""

    user: str
    preference: str | list[dict]
    alignment_weight: float | None = None
    updated_at: float = 0.0

    def as_dict(self) -> dict:
        return {
            "user": self.user,
            "preference": self.preference,
            "alignment_weight": self.alignment_weight,
            "updated_at": self.updated_at,
        }


class ProfileStore:
    """A SQLite table of profiles; each write is one transaction, and every call opens its own connection."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).expanduser().parent.mkdir(parents=True, exist_ok=True)
        try:
            with closing(self._connect()) as conn, conn:
                conn.execute(_SCHEMA)
        except sqlite3.DatabaseError as err:
            raise PadkitError(f"cannot open the profile database {self.path}: {err}") from err

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=10)
        conn.execute("PRAGMA journal_mode=WAL")
        return conn

    def put(self, user: str, preference: str | list[dict], alignment_weight: float | None = None) -> Profile:
        """Create or replace ``user``'s profile (the preference is validated first)."""
        Preference.parse(_as_preference_like(preference))
        now = time.time()
        with closing(self._connect()) as conn, conn:
            conn.execute(
                "INSERT INTO profiles (user, preference, alignment_weight, updated_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(user) DO UPDATE SET preference=excluded.preference, "
                "alignment_weight=excluded.alignment_weight, updated_at=excluded.updated_at",
                (user, json.dumps(preference), alignment_weight, now),
            )
        return Profile(user, preference, alignment_weight, now)

    def get(self, user: str) -> Profile | None:
        with closing(self._connect()) as conn:
            row = conn.execute(
                "SELECT preference, alignment_weight, updated_at FROM profiles WHERE user = ?", (user,)
            ).fetchone()
        return None if row is None else Profile(user, json.loads(row[0]), row[1], row[2])

    def delete(self, user: str) -> bool:
        with closing(self._connect()) as conn, conn:
            return conn.execute("DELETE FROM profiles WHERE user = ?", (user,)).rowcount > 0


def _as_preference_like(preference: str | list[dict]):
    """The HTTP form (text, or ``[{dimension | text, weight}]``) as what :meth:`Preference.parse` takes."""
    if isinstance(preference, str):
        return preference
    items = []
    for item in preference:
        text = item.get("dimension") or item.get("text")
        if not isinstance(text, str):
            raise PadkitError(f"preference item {item!r} needs a 'dimension' or a 'text'")
        items.append((text, item.get("weight", 1.0)))
    return items
