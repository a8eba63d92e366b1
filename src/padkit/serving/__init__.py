"""Serving: an OpenAI-compatible HTTP API with request batching and SQLite user profiles."""

from padkit.serving.app import Server, create_app
from padkit.serving.profiles import Profile, ProfileStore

__all__ = ["Profile", "ProfileStore", "Server", "create_app"]
