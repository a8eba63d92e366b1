"""Per-user preference profiles and API keys in SQLite: the OpenAI ``user`` field (or the key) picks one."""

from __future__ import annotations

import hashlib
import json
import secrets
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
);
CREATE TABLE IF NOT EXISTS api_keys (
    key_hash TEXT PRIMARY KEY,
    key_id TEXT NOT NULL UNIQUE,
    user TEXT NOT NULL,
    created_at REAL NOT NULL,
    revoked_at REAL
);
"""
KEY_PREFIX = "pk-"


def hash_key(key: str) -> str:
    """SHA-256 of a key: what the database keeps (the key itself is shown once, when it is made)."""
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass
class KeyRecord:
    """A user key as stored: its public id (the hash's first 12 hex digits), its user and its dates."""

    key_id: str
    user: str
    created_at: float
    revoked_at: float | None = None


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
                conn.executescript(_SCHEMA)
        except sqlite3.DatabaseError as err:
            raise PadkitError(f"cannot open the profile database {self.path}: {err}") from err

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=10)
        conn.execute("PRAGMA journal_mode=WAL")
        return conn

    def put(self, user: str, preference: str | list[dict], alignment_weight: float | None = None) -> Profile:
        """Create or replace ``user``'s profile (the preference is validated first)."""
        Preference.parse(_as_preference_like(preference))
        with closing(self._connect()) as conn, conn:
            conn.execute("BEGIN IMMEDIATE")  # writers take turns here, so timestamps follow the commit order
            now = time.time()
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

    def close(self) -> None:
        """Fold the write-ahead log into the database file, so a stopped server leaves one clean file."""
        with closing(self._connect()) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def add_key(self, user: str) -> tuple[str, KeyRecord]:
        """A new key bound to ``user``: returns the key (shown once, never stored) and its record."""
        if not user or len(user) > 256:
            raise PadkitError("a key needs a user name of 1 to 256 characters")
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        digest = hash_key(key)
        record = KeyRecord(digest[:12], user, time.time())
        with closing(self._connect()) as conn, conn:
            conn.execute(
                "INSERT INTO api_keys (key_hash, key_id, user, created_at) VALUES (?, ?, ?, ?)",
                (digest, record.key_id, user, record.created_at),
            )
        return key, record

    def key_user(self, key: str) -> str | None:
        """The user an active key belongs to, or None for an unknown or revoked key."""
        with closing(self._connect()) as conn:
            row = conn.execute(
                "SELECT user FROM api_keys WHERE key_hash = ? AND revoked_at IS NULL", (hash_key(key),)
            ).fetchone()
        return None if row is None else row[0]

    def list_keys(self) -> list[KeyRecord]:
        with closing(self._connect()) as conn:
            rows = conn.execute("SELECT key_id, user, created_at, revoked_at FROM api_keys ORDER BY created_at")
            return [KeyRecord(*row) for row in rows.fetchall()]

    def has_keys(self) -> bool:
        """Whether any key is active: then every ``/v1`` request needs one."""
        with closing(self._connect()) as conn:
            return conn.execute("SELECT 1 FROM api_keys WHERE revoked_at IS NULL LIMIT 1").fetchone() is not None

    def revoke_key(self, key_id: str) -> bool:
        """Revoke the key with this id (from :meth:`list_keys`); False if there is no such active key."""
        with closing(self._connect()) as conn, conn:
            cursor = conn.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL", (time.time(), key_id)
            )
            return cursor.rowcount > 0


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
