"""Opening the SQLite files beside the embedded bus, safely from several processes at once."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path


def open_db(path: str | Path, *, timeout: float = 30.0, synchronous: str = "FULL",
            check_same_thread: bool = True) -> sqlite3.Connection:
    """A connection in WAL mode, autocommit (callers BEGIN themselves).

    Switching a new file to WAL needs an exclusive lock, and SQLite answers "database is
    locked" at once, without waiting `timeout`, when another process holds it at that moment:
    `herald worker` and `herald notifier` started together on a fresh state directory met
    that (4 times in 200 in a three-process test). So the switch is retried until `timeout`."""
    conn = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=check_same_thread)
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                conn.close()
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.2)
    conn.execute(f"PRAGMA synchronous={synchronous}")
    return conn
