"""The receivers' memory of webhook deliveries already accepted, for answering retries.

Git hosts resend a delivery when our answer was slow or lost (GitLab and Bitbucket on their
own, GitHub when a user presses "Redeliver"). A delivery id seen within the window is
answered 200 as a duplicate and not published again — across receiver restarts and across
replicas, because the memory lives where they all meet: next to the embedded bus, or in a
RabbitMQ stream.

The order is check → publish → record, never claim-first: a receiver that dies between a
claim and its publish would answer the sender's retry "duplicate" and lose the push. The
cost of this order is that two replicas handed the same delivery in the same millisecond
may both publish; a reconcile twice is harmless, a lost one is not.
"""

from __future__ import annotations

import logging

import sqlite3
import threading
import time
from pathlib import Path
from typing import Protocol

from herald.bus.sqlite import open_db

DEFAULT_WINDOW = 24 * 3600.0
FILENAME = "deliveries.sqlite3"


class DeliveryLog(Protocol):
    """A time-windowed memory of keys, each with an optional short value.

    The receiver keeps delivery ids here; the notifier keeps what it has sent (its dedupe)
    and what providers remember between deliveries (a Slack thread's ts).
    """

    def first_seen(self, key: str) -> float | None:
        """When (epoch seconds) `key` was last recorded, or None if not within the window."""

    def value(self, key: str) -> str | None:
        """The value recorded with `key` within the window, or None."""

    def record(self, key: str, value: str = "") -> None:
        """Remember `key` (and `value`) as of now. Best effort: losing a record loses only a
        dedupe or a courtesy such as a thread."""

    def items(self, prefix: str) -> dict[str, tuple[float, str]]:
        """Every key starting with `prefix` within the window: when it was recorded, its value."""

    def forget(self, keys: list[str]) -> None:
        """Drop `keys` (a bound kept by the caller, such as the history's record counts)."""

    def close(self) -> None: ...


class NoDeliveryLog:
    """For tests and tools that want every delivery treated as new."""

    def first_seen(self, key: str) -> float | None:
        return None

    def value(self, key: str) -> str | None:
        return None

    def record(self, key: str, value: str = "") -> None:
        pass

    def items(self, prefix: str) -> dict[str, tuple[float, str]]:
        return {}

    def forget(self, keys: list[str]) -> None:
        pass

    def close(self) -> None:
        pass


class SQLiteDeliveryLog:
    """The log as a SQLite table in the state directory (WAL, one connection per thread).

    Receivers sharing the state directory (several `herald serve` threads, or processes on
    one volume) share the memory; rows older than the window are pruned as records arrive.
    """

    def __init__(self, path: str | Path, window: float = DEFAULT_WINDOW) -> None:
        self.path = Path(path)
        self.window = window
        self._local = threading.local()
        self._last_prune = 0.0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._db() as db:
            db.execute("CREATE TABLE IF NOT EXISTS seen (key TEXT PRIMARY KEY, at REAL NOT NULL,"
                       " value TEXT NOT NULL DEFAULT '')")
            db.execute("CREATE INDEX IF NOT EXISTS seen_at ON seen (at)")
            columns = {row[1] for row in db.execute("PRAGMA table_info(seen)")}
            if "value" not in columns:  # a log written before values existed
                db.execute("ALTER TABLE seen ADD COLUMN value TEXT NOT NULL DEFAULT ''")

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = open_db(self.path, synchronous="NORMAL")
            self._local.db = db
        return db

    def first_seen(self, key: str) -> float | None:
        row = self._db().execute("SELECT at FROM seen WHERE key = ?", (key,)).fetchone()
        if row is None or row[0] < time.time() - self.window:
            return None
        return float(row[0])

    def value(self, key: str) -> str | None:
        row = self._db().execute("SELECT at, value FROM seen WHERE key = ?", (key,)).fetchone()
        if row is None or row[0] < time.time() - self.window:
            return None
        return str(row[1])

    def record(self, key: str, value: str = "") -> None:
        now = time.time()
        db = self._db()
        # A re-accepted key (its old record expired) starts a new window.
        db.execute("INSERT INTO seen (key, at, value) VALUES (?, ?, ?)"
                   " ON CONFLICT(key) DO UPDATE SET at = excluded.at, value = excluded.value",
                   (key, now, value))
        if now - self._last_prune > 60:
            self._last_prune = now
            db.execute("DELETE FROM seen WHERE at < ?", (now - self.window,))

    def items(self, prefix: str) -> dict[str, tuple[float, str]]:
        rows = self._db().execute("SELECT key, at, value FROM seen WHERE key >= ? AND key < ? AND at >= ?",
                                  (prefix, prefix + "\uffff", time.time() - self.window)).fetchall()
        return {str(k): (float(at), str(v)) for k, at, v in rows}

    def forget(self, keys: list[str]) -> None:
        if keys:
            db = self._db()
            db.executemany("DELETE FROM seen WHERE key = ?", [(k,) for k in keys])

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None


def open_delivery_log(broker_url: str | None, state_dir: str | Path,
                      window: float = DEFAULT_WINDOW, *, name: str = "", quiet: bool = False,
                      read: bool | str = True, max_age: str | None = "7D") -> DeliveryLog:
    """A RabbitMQ stream when there is a broker (replicas share nothing else), else SQLite.

    `name` picks another log than the receiver's (the stream `herald.<name>`, the file
    `<name>.sqlite3`), e.g. the notifier's memory of what it sent. `read` and `max_age`:
    see StreamDeliveryLog (SQLite reads on demand, and keeps what is within `window`).
    """
    url = (broker_url or "").strip()
    if url.lower().startswith(("amqp://", "amqps://")):
        from herald.bus.stream_log import STREAM, StreamDeliveryLog

        return StreamDeliveryLog(url, window, stream=f"herald.{name}" if name else STREAM,
                                 outage_level=logging.INFO if quiet else logging.WARNING, read=read,
                                 max_age=max_age)
    return SQLiteDeliveryLog(Path(state_dir) / (f"{name}.sqlite3" if name else FILENAME), window)
