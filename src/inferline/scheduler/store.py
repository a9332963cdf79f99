"""The scheduler's durable state in SQLite: applied resources and model versions with placements.

Everything else the scheduler knows (which replicas are connected, what they hold) is rebuilt from
the agents when they reconnect, so only what cannot be rebuilt is written here.
"""

import sqlite3
from pathlib import Path
from typing import Any

import orjson

_SCHEMA = """
CREATE TABLE IF NOT EXISTS resources (
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    doc TEXT NOT NULL,
    PRIMARY KEY (kind, name)
);
CREATE TABLE IF NOT EXISTS versions (
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    PRIMARY KEY (kind, name)
);
CREATE TABLE IF NOT EXISTS model_versions (
    model TEXT NOT NULL,
    version INTEGER NOT NULL,
    doc TEXT NOT NULL,
    PRIMARY KEY (model, version)
);
"""


class SchedulerStore:
    def __init__(self, path: Path | str = ":memory:"):
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    # --- resources ----------------------------------------------------------------------------

    def put_resource(self, kind: str, name: str, doc: dict[str, Any]) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO resources (kind, name, doc) VALUES (?, ?, ?)",
            (kind, name, orjson.dumps(doc)),
        )

    def delete_resource(self, kind: str, name: str) -> None:
        self._db.execute("DELETE FROM resources WHERE kind = ? AND name = ?", (kind, name))

    def resources(self, kind: str) -> dict[str, dict[str, Any]]:
        rows = self._db.execute(
            "SELECT name, doc FROM resources WHERE kind = ? ORDER BY name", (kind,)
        )
        return {name: orjson.loads(doc) for name, doc in rows}

    # --- version counters of other kinds (pipelines) ------------------------------------------

    def put_version(self, kind: str, name: str, version: int) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO versions (kind, name, version) VALUES (?, ?, ?)",
            (kind, name, version),
        )

    def delete_version(self, kind: str, name: str) -> None:
        self._db.execute("DELETE FROM versions WHERE kind = ? AND name = ?", (kind, name))

    def versions(self, kind: str) -> dict[str, int]:
        rows = self._db.execute("SELECT name, version FROM versions WHERE kind = ?", (kind,))
        return dict(rows)

    # --- model versions -----------------------------------------------------------------------

    def put_model_version(self, model: str, version: int, doc: dict[str, Any]) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO model_versions (model, version, doc) VALUES (?, ?, ?)",
            (model, version, orjson.dumps(doc)),
        )

    def delete_model_version(self, model: str, version: int) -> None:
        self._db.execute(
            "DELETE FROM model_versions WHERE model = ? AND version = ?", (model, version)
        )

    def delete_model_versions(self, model: str) -> None:
        self._db.execute("DELETE FROM model_versions WHERE model = ?", (model,))

    def model_versions(self) -> dict[str, dict[int, dict[str, Any]]]:
        versions: dict[str, dict[int, dict[str, Any]]] = {}
        rows = self._db.execute("SELECT model, version, doc FROM model_versions ORDER BY 1, 2")
        for model, version, doc in rows:
            versions.setdefault(model, {})[version] = orjson.loads(doc)
        return versions
