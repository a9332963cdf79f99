"""The embedded bus's storage: one SQLite database with topics, messages and committed offsets.

Every method is synchronous and short (a few statements, bounded row counts), so the bus calls
them on its event loop thread. Write methods take whole batches and run them as one transaction,
which is what makes group commit pay: a commit costs far more than a row.

`"offset"` and `"group"` are SQL keywords, hence quoted everywhere.
"""

import sqlite3
import struct
from collections.abc import Sequence
from pathlib import Path

from inferline.bus.base import Message

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS topics (
    name TEXT PRIMARY KEY,
    partitions INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    "offset" INTEGER NOT NULL,
    timestamp_ms INTEGER NOT NULL,
    key BLOB,
    headers BLOB,
    value BLOB NOT NULL,
    PRIMARY KEY (topic, partition, "offset")
);
CREATE TABLE IF NOT EXISTS committed_offsets (
    "group" TEXT NOT NULL,
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    "offset" INTEGER NOT NULL,
    PRIMARY KEY ("group", topic, partition)
);
"""

# (topic, partition, offset, timestamp_ms, key, encoded headers, value)
MessageRow = tuple[str, int, int, int, bytes | None, bytes | None, bytes]

_INSERT = "INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?, ?)"

_COUNT = struct.Struct(">I")
_LENGTHS = struct.Struct(">II")


def encode_headers(headers: Sequence[tuple[str, bytes]]) -> bytes | None:
    """Headers as one blob: a count, then per header the name and value lengths and bytes."""
    if not headers:
        return None
    parts = [_COUNT.pack(len(headers))]
    for name, value in headers:
        raw_name = name.encode()
        parts += (_LENGTHS.pack(len(raw_name), len(value)), raw_name, value)
    return b"".join(parts)


def decode_headers(blob: bytes | None) -> tuple[tuple[str, bytes], ...]:
    if not blob:
        return ()
    (count,) = _COUNT.unpack_from(blob)
    at = _COUNT.size
    headers = []
    for _ in range(count):
        name_length, value_length = _LENGTHS.unpack_from(blob, at)
        at += _LENGTHS.size
        name = blob[at : at + name_length].decode()
        at += name_length
        headers.append((name, blob[at : at + value_length]))
        at += value_length
    return tuple(headers)


class SqliteLog:
    """The database. `fsync=False` runs `synchronous=NORMAL` (a committed transaction survives
    the process dying, not the machine losing power); `fsync=True` runs `synchronous=FULL`."""

    def __init__(self, file: Path, fsync: bool = False):
        self.file = file
        self._db = sqlite3.connect(str(file), isolation_level=None, check_same_thread=False)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={'FULL' if fsync else 'NORMAL'}")
            # Checkpoints copy the WAL into the database and fsync it: the bus runs them from a
            # worker thread (`checkpoint`) instead of letting a commit on the loop thread do it.
            self._db.execute("PRAGMA wal_autocheckpoint=0")
            self._db.execute("PRAGMA journal_size_limit=67108864")
            (version,) = self._db.execute("PRAGMA user_version").fetchone()
            if version > SCHEMA_VERSION:
                raise RuntimeError(
                    f"{file} was written by a newer inferline (bus schema {version}, "
                    f"this one reads {SCHEMA_VERSION})"
                )
            self._db.executescript(_SCHEMA)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except BaseException:
            self._db.close()
            raise
        self._checkpointer: sqlite3.Connection | None = None
        # SQLite refuses a row longer than this (1e9 bytes by default), whatever is retried.
        self.max_row_bytes = self._db.getlimit(sqlite3.SQLITE_LIMIT_LENGTH) - 1024

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.close()
        self._db.close()

    # --- topics ---------------------------------------------------------------------------------

    def topics(self) -> dict[str, int]:
        return dict(self._db.execute("SELECT name, partitions FROM topics"))

    def create_topic(self, topic: str, partitions: int) -> None:
        self._db.execute(
            "INSERT OR IGNORE INTO topics (name, partitions) VALUES (?, ?)", (topic, partitions)
        )

    def delete_topic(self, topic: str) -> None:
        with self._transaction():
            self._db.execute("DELETE FROM messages WHERE topic = ?", (topic,))
            self._db.execute("DELETE FROM committed_offsets WHERE topic = ?", (topic,))
            self._db.execute("DELETE FROM topics WHERE name = ?", (topic,))

    def bounds(self, topic: str, partition: int) -> tuple[int, int]:
        """(first kept offset, next offset) of a partition; (0, 0) when it never had a message.
        The bus never trims a partition's newest message, so the next offset is always known."""
        first, last = self._db.execute(
            'SELECT min("offset"), max("offset") FROM messages WHERE topic = ? AND partition = ?',
            (topic, partition),
        ).fetchone()
        return (0, 0) if last is None else (first, last + 1)

    # --- messages -------------------------------------------------------------------------------

    def write(
        self,
        rows: Sequence[MessageRow],
        commits: Sequence[tuple[str, str, int, int]] = (),
        trims: Sequence[tuple[str, int, int]] = (),
    ) -> None:
        """One transaction: append `rows`, record `commits` (group, topic, partition, offset),
        and drop every message below `offset` for each of `trims` (topic, partition, offset)."""
        if len(rows) == 1 and not commits and not trims:
            # A lone statement is a transaction of its own: the usual batch of a sequential
            # caller (one message per hop) saves the BEGIN and COMMIT round trips (measured
            # 54 -> 45 us per write).
            self._db.execute(_INSERT, rows[0])
            return
        with self._transaction():
            if rows:
                self._db.executemany(_INSERT, rows)
            if commits:
                self._db.executemany(
                    "INSERT OR REPLACE INTO committed_offsets VALUES (?, ?, ?, ?)", commits
                )
            if trims:
                self._db.executemany(
                    'DELETE FROM messages WHERE topic = ? AND partition = ? AND "offset" < ?',
                    trims,
                )

    def first_offset_since(
        self, topic: str, partition: int, start: int, since_ms: int
    ) -> int | None:
        """The first offset at or after `start` written at or after `since_ms`, scanning from
        `start` (so the cost is the number of older messages, which are about to be trimmed)."""
        row = self._db.execute(
            'SELECT "offset" FROM messages WHERE topic = ? AND partition = ? AND "offset" >= ? '
            'AND timestamp_ms >= ? ORDER BY "offset" LIMIT 1',
            (topic, partition, start, since_ms),
        ).fetchone()
        return None if row is None else row[0]

    def trim(self, trims: Sequence[tuple[str, int, int]]) -> None:
        self.write((), (), trims)

    def read(self, topic: str, partition: int, start: int, limit: int) -> list[Message]:
        rows = self._db.execute(
            'SELECT "offset", timestamp_ms, key, headers, value FROM messages '
            'WHERE topic = ? AND partition = ? AND "offset" >= ? ORDER BY "offset" LIMIT ?',
            (topic, partition, start, limit),
        )
        return [
            Message(topic, partition, offset, key, value, decode_headers(headers), timestamp)
            for offset, timestamp, key, headers, value in rows
        ]

    def read_last(self, topic: str, partition: int, count: int) -> list[Message]:
        rows = self._db.execute(
            'SELECT "offset", timestamp_ms, key, headers, value FROM messages '
            'WHERE topic = ? AND partition = ? ORDER BY "offset" DESC LIMIT ?',
            (topic, partition, count),
        ).fetchall()
        return [
            Message(topic, partition, offset, key, value, decode_headers(headers), timestamp)
            for offset, timestamp, key, headers, value in reversed(rows)
        ]

    # --- committed offsets ----------------------------------------------------------------------

    def committed(self, group: str) -> dict[tuple[str, int], int]:
        rows = self._db.execute(
            'SELECT topic, partition, "offset" FROM committed_offsets WHERE "group" = ?', (group,)
        )
        return {(topic, partition): offset for topic, partition, offset in rows}

    # --- WAL checkpoints ------------------------------------------------------------------------

    def checkpoint(self) -> None:
        """Copy the WAL into the database (PASSIVE: never waits for, nor blocks, the writer).
        Runs in a worker thread on a connection of its own; sqlite3 releases the GIL meanwhile."""
        if self._checkpointer is None:
            self._checkpointer = sqlite3.connect(
                str(self.file), isolation_level=None, check_same_thread=False
            )
        self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    # --- helpers --------------------------------------------------------------------------------

    def _transaction(self) -> "_Transaction":
        return _Transaction(self._db)


class _Transaction:
    __slots__ = ("_db",)

    def __init__(self, db: sqlite3.Connection):
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN")

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self._db.execute("COMMIT")
        else:
            self._db.execute("ROLLBACK")
