"""The built-in endpoint's consumer groups, kept in the hub's store: `az iot hub consumer-group create|list|delete`.

    python -m helpers.localcloud consumer-group create analytics --workspace ws
    python -m helpers.localcloud consumer-group list --workspace ws
    python -m helpers.localcloud consumer-group delete analytics --workspace ws

A new hub has `$Default`, which cannot be deleted; IoT Hub (S1-S3) allows 20 groups per hub. A
name is 1-50 letters, digits, `.`, `-` or `_`, starting and ending with a letter or digit, and
compared without case. The endpoint reads the groups when a receiver link attaches, so a group
created while the stand-in runs is served at once, and each group's readers keep their own
positions (each receiver link its own cursor), as on Event Hubs.
"""
from __future__ import annotations

import re
import time

from helpers.errors import ConfigError, Conflict, NotFound
from helpers.localcloud.common.db import Store
from helpers.localcloud.eventhub.log import DEFAULT_CONSUMER_GROUP

SCHEMA = """
CREATE TABLE IF NOT EXISTS eventhub_consumer_groups (
    name TEXT PRIMARY KEY COLLATE NOCASE,
    created_at REAL NOT NULL
)
"""
MAX_GROUPS = 20  # IoT Hub S1, S2, S3: consumer groups per hub, $Default included
_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,48}[A-Za-z0-9])?$")


class ConsumerGroups:
    """The consumer groups of the workspace hub's built-in endpoint (`$Default` always first)."""

    def __init__(self, store: Store):
        self.store = store
        with self.store.tx() as conn:
            conn.execute(SCHEMA)

    def list(self) -> list[str]:
        """Every group: `$Default`, then the created ones by name."""
        with self.store.read() as conn:
            rows = conn.execute("SELECT name FROM eventhub_consumer_groups ORDER BY name COLLATE NOCASE").fetchall()
        return [DEFAULT_CONSUMER_GROUP] + [str(r["name"]) for r in rows]

    def create(self, name: str) -> list[str]:
        """Add a group; the groups after it.

        Raises:
            ConfigError: the name is not a valid consumer group name.
            Conflict: the group exists, or the hub has `MAX_GROUPS` already.
        """
        if not _NAME.match(name or ""):
            raise ConfigError(f"consumer group name {name[:60]!r} is not valid: use 1-50 letters, digits, '.', '-' or '_', "
                              "starting and ending with a letter or digit")
        with self.store.tx() as conn:
            existing = [str(r["name"]) for r in conn.execute("SELECT name FROM eventhub_consumer_groups").fetchall()]
            if name.lower() in {g.lower() for g in [DEFAULT_CONSUMER_GROUP, *existing]}:
                raise Conflict(f"consumer group {name!r} exists already (list them: consumer-group list)", 409)
            if len(existing) + 1 >= MAX_GROUPS:
                raise Conflict(f"the hub has {len(existing) + 1} consumer groups, IoT Hub's limit is {MAX_GROUPS}: "
                               "delete one first (consumer-group delete NAME)", 409)
            conn.execute("INSERT INTO eventhub_consumer_groups(name, created_at) VALUES(?,?)", (name, time.time()))
        return self.list()

    def delete(self, name: str) -> list[str]:
        """Remove a group (its readers' next attach is refused); the groups after it.

        Raises:
            ConfigError: `$Default`, which every hub keeps.
            NotFound: no such group.
        """
        if name.lower() == DEFAULT_CONSUMER_GROUP.lower():
            raise ConfigError(f"{DEFAULT_CONSUMER_GROUP} cannot be deleted: every hub keeps it")
        with self.store.tx() as conn:
            if conn.execute("DELETE FROM eventhub_consumer_groups WHERE name=?", (name,)).rowcount == 0:
                raise NotFound(f"consumer group {name!r} does not exist (list them: consumer-group list)", 404)
        return self.list()


__all__ = ["MAX_GROUPS", "ConsumerGroups"]
