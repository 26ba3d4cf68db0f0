"""The embedded bus: the `Bus` interface on a SQLite file in the state directory.

It exists so that `herald serve` runs on a laptop with no broker and still keeps the bus's two
promises: `publish` returns after the row is committed with `synchronous=FULL` (on disk), and a
message is deleted only after its handler returned. A consumer claims a message by taking a
*lease* on it; if the process dies mid-handler the lease runs out and the message is delivered
again, so a crash or restart loses nothing.

Concurrency: sqlite3 connections are bound to the thread that made them, so every thread gets
its own; claims run in `BEGIN IMMEDIATE` transactions (the write lock is taken before the
SELECT), so two consumers — threads or processes on the same file — never claim one message.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Iterator

from herald.bus import metrics
from herald.bus.base import (
    ATTEMPTS_HEADER,
    ERROR_HEADER,
    FAILING_SINCE_HEADER,
    REPLAYED_HEADER,
    BusError,
    BusUnavailable,
    Delivery,
    Handler,
    Reject,
    RetryPolicy,
    caller_headers,
    requested_delay,
)
from herald.bus.sqlite import open_db

log = logging.getLogger(__name__)

_MAX_ERROR_CHARS = 2000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    queue        TEXT    NOT NULL,
    body         BLOB    NOT NULL,
    headers      TEXT    NOT NULL DEFAULT '{}',
    message_id   TEXT    NOT NULL DEFAULT '',
    attempts     INTEGER NOT NULL DEFAULT 0,  -- deliveries so far (counted when claimed)
    available_at REAL    NOT NULL,            -- unix time; later than now while a retry waits
    leased_until REAL,                        -- unix time; a consumer holds it until then
    lease_token  TEXT,                        -- who holds the lease; settles only with it
    last_error   TEXT,
    dead         INTEGER NOT NULL DEFAULT 0,
    created_at   REAL    NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_queue ON messages (queue, dead, id);
-- One row, rewritten by ping(): readiness means a publish could be written now.
CREATE TABLE IF NOT EXISTS ping (id INTEGER PRIMARY KEY CHECK (id = 1), at REAL NOT NULL);
"""


@dataclass
class _Claim:
    """A message this process holds a lease on; only `token` may settle it."""

    id: int
    token: str
    delivery: Delivery


class EmbeddedBus:
    """A durable local bus on one SQLite file; several threads and processes may share it."""

    def __init__(
        self,
        path: str | Path,
        *,
        retry: RetryPolicy = RetryPolicy(),
        lease_seconds: float = 300.0,
        poll_interval: float = 0.2,
        busy_timeout: float = 30.0,
    ) -> None:
        if lease_seconds <= 0:
            raise ValueError("lease_seconds must be positive")
        self.path = Path(path)
        self.retry = retry
        self.lease_seconds = lease_seconds
        self.poll_interval = poll_interval
        self.busy_timeout = busy_timeout
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        # Wakes in-process consumers as soon as a message is committed; `_generation` lets a
        # consumer notice a publish that happened between its empty claim and its wait.
        self._published = threading.Condition()
        self._generation = 0
        self._closed = threading.Event()
        # Leases of messages whose handler is running here: renewed so a handler that runs
        # longer than `lease_seconds` is not delivered a second time to another consumer.
        self._held: dict[int, str] = {}
        self._held_lock = threading.Lock()
        self._renewer: threading.Thread | None = None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db().executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise BusUnavailable(f"cannot open the bus database {self.path}: {exc}") from exc

    # -- connections ----------------------------------------------------------------------

    def _db(self) -> sqlite3.Connection:
        """This thread's connection (sqlite3 objects must stay in the thread that made them)."""
        if self._closed.is_set():
            raise BusError("the bus is closed")
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            # FULL: a commit is on disk when it returns. check_same_thread=False only so that
            # close() may close it; it is used by one thread.
            conn = open_db(self.path, timeout=self.busy_timeout, synchronous="FULL", check_same_thread=False)
            self._local.conn = conn
            with self._connections_lock:
                self._connections.append(conn)
        return conn

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """`BEGIN IMMEDIATE`: take the write lock first, so read-then-update cannot race."""
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            raise

    # -- Bus --------------------------------------------------------------------------------

    def publish(
        self,
        queue: str,
        body: bytes,
        *,
        message_id: str = "",
        headers: dict[str, str] | None = None,
    ) -> None:
        """Insert and commit; the message is on disk when this returns. A message without
        `message_id` gets a random one, as on RabbitMQ: operators address dead letters by it."""
        now = time.time()
        message_id = message_id or uuid.uuid4().hex
        try:
            with self._transaction() as db:
                db.execute(
                    "INSERT INTO messages (queue, body, headers, message_id, available_at,"
                    " created_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (queue, bytes(body), json.dumps(caller_headers(headers)), message_id, now, now),
                )
        except sqlite3.Error as exc:
            raise BusUnavailable(f"cannot store the message in {self.path}: {exc}") from exc
        with self._published:
            self._generation += 1
            self._published.notify_all()

    def consume(
        self,
        queue: str,
        handler: Handler,
        stop: threading.Event,
        *,
        prefetch: int = 1,  # noqa: ARG002 - one message at a time; the row is the buffer
        retry: RetryPolicy | None = None,
    ) -> None:
        """Claim, handle and settle messages one by one until `stop` is set.

        A handler that is running when `stop` is set is let finish (its message is then
        settled); only the wait for new messages is cut short.
        """
        while not stop.is_set():
            generation = self._generation
            try:
                claim = self._claim(queue)
            except sqlite3.Error as exc:
                log.warning("bus %s: cannot claim from %s: %s", self.path, queue, exc)
                stop.wait(1.0)
                continue
            if claim is None:
                with self._published:
                    if generation == self._generation and not stop.is_set():
                        self._published.wait(self.poll_interval)
                continue
            self._handle(claim, handler, retry or self.retry)

    def ping(self) -> bool:
        """A message could be published now: the file takes a committed write. (A read alone
        succeeds on a state directory that went read-only or full, where every publish, and
        so every webhook, fails: /readyz must not say ready then.)"""
        try:
            db = self._db()
            with db:
                db.execute("INSERT OR REPLACE INTO ping (id, at) VALUES (1, ?)", (time.time(),))
        except (sqlite3.Error, OSError, BusError):
            return False
        return True

    def dead_letters(self, queue: str) -> list[Delivery]:
        """Dead messages of `queue`, oldest first, with the error and attempts as headers.

        A message published without a message id is listed under its row id, as a string
        (`"42"`): stable for as long as the row exists (a replay updates the row in place), and
        what `replay_dead` and `drop_dead` accept for it. A publisher's message id that happens
        to be the same digits addresses both messages.
        """
        try:
            rows = self._db().execute(
                "SELECT id, body, headers, message_id, attempts, last_error FROM messages"
                " WHERE queue = ? AND dead = 1 ORDER BY id",
                (queue,),
            ).fetchall()
        except sqlite3.Error as exc:
            raise BusUnavailable(f"cannot read dead letters of {queue} in {self.path}: {exc}") from exc
        out = []
        for row_id, body, headers, message_id, attempts, last_error in rows:
            merged = {**json.loads(headers), ERROR_HEADER: last_error or "",
                      ATTEMPTS_HEADER: str(attempts)}
            out.append(Delivery(queue, bytes(body), message_id or str(row_id), merged, attempts))
        return out

    def dead_queues(self) -> list[str]:
        """The queues that have dead messages, sorted."""
        try:
            rows = self._db().execute(
                "SELECT DISTINCT queue FROM messages WHERE dead = 1 ORDER BY queue"
            ).fetchall()
        except sqlite3.Error as exc:
            raise BusUnavailable(f"cannot read dead letters in {self.path}: {exc}") from exc
        return [queue for (queue,) in rows]

    def replay_dead(self, queue: str, message_id: str | None = None) -> int:
        """Make the matching dead rows live again, in one transaction.

        Each row is updated in place (so it keeps its id, and its place in the queue: it is
        handled before messages published after it first was), available now, attempts and
        error cleared, the bookkeeping headers dropped and REPLAYED_HEADER counted up.
        """
        now = time.time()
        where, params = _dead_match(queue, message_id)
        try:
            with self._transaction() as db:
                rows = db.execute(f"SELECT id, headers FROM messages WHERE {where}", params).fetchall()
                for row_id, headers in rows:
                    kept = caller_headers(json.loads(headers))
                    kept[REPLAYED_HEADER] = str(_replays(kept.get(REPLAYED_HEADER)) + 1)
                    db.execute(
                        "UPDATE messages SET dead = 0, attempts = 0, available_at = ?,"
                        " leased_until = NULL, lease_token = NULL, last_error = NULL, headers = ?"
                        " WHERE id = ?",
                        (now, json.dumps(kept), row_id),
                    )
        except sqlite3.Error as exc:
            raise BusUnavailable(f"cannot replay dead letters of {queue} in {self.path}: {exc}") from exc
        if rows:
            with self._published:
                self._generation += 1
                self._published.notify_all()
        return len(rows)

    def drop_dead(self, queue: str, message_id: str | None = None) -> int:
        """Delete the matching dead rows."""
        where, params = _dead_match(queue, message_id)
        try:
            with self._transaction() as db:
                return int(db.execute(f"DELETE FROM messages WHERE {where}", params).rowcount)
        except sqlite3.Error as exc:
            raise BusUnavailable(f"cannot drop dead letters of {queue} in {self.path}: {exc}") from exc

    def depth(self, queue: str) -> int:
        """Messages of `queue` not yet handled successfully and not dead (for tests, metrics)."""
        row = self._db().execute(
            "SELECT COUNT(*) FROM messages WHERE queue = ? AND dead = 0", (queue,)
        ).fetchone()
        return int(row[0])

    def close(self) -> None:
        """Close every thread's connection; call once the consumers have returned."""
        self._closed.set()
        if self._renewer is not None:
            self._renewer.join(timeout=5)
        with self._connections_lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    # -- internals --------------------------------------------------------------------------

    def _claim(self, queue: str) -> _Claim | None:
        """Lease the oldest available message of `queue`, counting the delivery."""
        now = time.time()
        token = uuid.uuid4().hex
        with self._transaction() as db:
            row = db.execute(
                "SELECT id, body, headers, message_id, attempts, last_error, available_at FROM messages"
                " WHERE queue = ? AND dead = 0 AND available_at <= ?"
                " AND (leased_until IS NULL OR leased_until <= ?) ORDER BY id LIMIT 1",
                (queue, now, now),
            ).fetchone()
            if row is None:
                return None
            msg_id, body, headers, message_id, attempts, last_error, available_at = row
            db.execute(
                "UPDATE messages SET attempts = attempts + 1, leased_until = ?, lease_token = ?"
                " WHERE id = ?",
                (now + self.lease_seconds, token, msg_id),
            )
        merged = json.loads(headers)
        if last_error:  # as on the AMQP bus, a retry tells the handler why the last one failed
            merged[ERROR_HEADER] = last_error
        delivery = Delivery(queue, bytes(body), message_id, merged, attempts + 1, ready_at=float(available_at))
        return _Claim(msg_id, token, delivery)

    def _handle(self, claim: _Claim, handler: Handler, policy: RetryPolicy) -> None:
        delivery = claim.delivery
        if delivery.ready_at is not None:
            metrics.QUEUE_LAG.labels(delivery.queue).observe(max(0.0, time.time() - delivery.ready_at))
        if delivery.attempt > policy.max_attempts:
            # Only reachable when earlier deliveries never finished (the process died
            # mid-handler): a message that kills its consumer must not do so forever.
            self._bury(claim, f"delivered {delivery.attempt} times without finishing")
            return
        self._hold(claim)
        try:
            handler(delivery)
        except Reject as exc:
            log.warning("%s message %s rejected: %s", delivery.queue, delivery.message_id, exc)
            self._bury(claim, str(exc))
        except Exception as exc:  # noqa: BLE001 - any failure of the handler is retried
            error = f"{type(exc).__name__}: {exc}"
            now = time.time()
            since = _float(delivery.headers.get(FAILING_SINCE_HEADER), now)
            if policy.exhausted(delivery.attempt, since, now):
                log.error("%s message %s failed for good after %d attempts: %s",
                          delivery.queue, delivery.message_id, delivery.attempt, error)
                self._bury(claim, error)
            else:
                delay = policy.next_delay(delivery.attempt, requested_delay(exc))
                metrics.HANDLED.labels(delivery.queue, "retry").inc()
                log.warning("%s message %s failed (attempt %d), retry in %.1fs: %s",
                            delivery.queue, delivery.message_id, delivery.attempt, delay, error)
                stored = {k: v for k, v in delivery.headers.items() if k != ERROR_HEADER}
                stored[FAILING_SINCE_HEADER] = repr(since)
                self._settle(claim, "UPDATE messages SET available_at = ?, leased_until = NULL,"
                             " lease_token = NULL, last_error = ?, headers = ? WHERE id = ? AND lease_token = ?",
                             (now + delay, error[:_MAX_ERROR_CHARS], json.dumps(stored)))
        except BaseException:
            # Interpreter shutdown or KeyboardInterrupt: hand the message back at once
            # rather than leaving it leased until the lease runs out.
            self._settle(claim, "UPDATE messages SET leased_until = NULL, lease_token = NULL"
                         " WHERE id = ? AND lease_token = ?", ())
            raise
        else:
            metrics.HANDLED.labels(delivery.queue, "ok").inc()
            self._settle(claim, "DELETE FROM messages WHERE id = ? AND lease_token = ?", ())
        finally:
            self._release(claim)

    def _bury(self, claim: _Claim, error: str) -> None:
        metrics.HANDLED.labels(claim.delivery.queue, "dead").inc()
        metrics.DEAD_LETTERED.labels(claim.delivery.queue).inc()
        self._settle(claim, "UPDATE messages SET dead = 1, leased_until = NULL, lease_token = NULL,"
                     " last_error = ? WHERE id = ? AND lease_token = ?",
                     (error[:_MAX_ERROR_CHARS],))

    def _settle(self, claim: _Claim, sql: str, params: tuple[object, ...]) -> None:
        """Run one settling statement, only if we still hold the lease.

        If it cannot be written, the lease simply runs out and the message is delivered
        again: at-least-once, never lost.
        """
        try:
            with self._transaction() as db:
                changed = db.execute(sql, (*params, claim.id, claim.token)).rowcount
        except sqlite3.Error as exc:
            log.error("bus %s: cannot settle message %d: %s", self.path, claim.id, exc)
            return
        if not changed:
            log.warning("bus %s: lease on message %d was lost before it was settled",
                        self.path, claim.id)

    def _hold(self, claim: _Claim) -> None:
        with self._held_lock:
            self._held[claim.id] = claim.token
            if self._renewer is None:
                self._renewer = threading.Thread(
                    target=self._renew_leases, name="herald-bus-lease-renewer", daemon=True
                )
                self._renewer.start()

    def _release(self, claim: _Claim) -> None:
        with self._held_lock:
            self._held.pop(claim.id, None)

    def _renew_leases(self) -> None:
        """Extend the leases of running handlers every third of the lease time."""
        interval = self.lease_seconds / 3
        while not self._closed.wait(interval):
            with self._held_lock:
                held = list(self._held.items())
            if not held:
                continue
            until = time.time() + self.lease_seconds
            try:
                with self._transaction() as db:
                    db.executemany(
                        "UPDATE messages SET leased_until = ? WHERE id = ? AND lease_token = ?",
                        [(until, msg_id, token) for msg_id, token in held],
                    )
            except (sqlite3.Error, BusError) as exc:
                log.warning("bus %s: cannot renew leases: %s", self.path, exc)


def _dead_match(queue: str, message_id: str | None) -> tuple[str, tuple[object, ...]]:
    """WHERE clause for the dead rows of `queue` that `message_id` names (None: all of them);
    a row without a message id is named by its row id (see `EmbeddedBus.dead_letters`)."""
    if message_id is None:
        return "queue = ? AND dead = 1", (queue,)
    return ("queue = ? AND dead = 1 AND (message_id = ? OR (message_id = '' AND CAST(id AS TEXT) = ?))",
            (queue, message_id, message_id))


def _replays(value: str | None) -> int:
    try:
        return max(0, int(value or 0))
    except ValueError:
        return 0


def _float(value: str | None, default: float) -> float:
    try:
        return float(value) if value else default
    except ValueError:
        return default
