"""What the notifier remembers across restarts and replicas: what it sent, and what providers keep.

- `sent`: one key per delivered (Alert, Provider, event) — object, reason, message and
  revision, not the timestamp — for the dedupe window (5 minutes by default). A reconcile
  retried after a transient failure, or a notifier restarted mid-fan-out, re-announces the
  same event; within the window it is delivered once. Flux keeps this in memory only, so a
  restart resends. A windowed key store (herald.bus.deliveries): a RabbitMQ stream every
  replica replays and tails, or SQLite beside the embedded bus.
- `providers`: providers' own small state (Slack's thread per object and revision), for a
  day, with a claim per key (`Memory.hold`).

Why the providers' memory needs a claim. After a Slack outage, one revision's Progressing and
Succeeded are retried at the same moment, on two delivery threads or two replicas. Each read
"no thread yet" and posted a parent: two top-level messages, one of them a stale Progressing
(issue 13). The read of the thread, the Slack calls and the write of the thread must happen as
one step per key: whoever comes second must wait, then read what the first wrote. That takes
two things, a lock all deliveries see, and a read that sees the last holder's write.

- Within a process, a lock per key (KeyLocks).
- On the embedded bus (SQLite in the state directory), the state is already read-your-writes
  for every process on the file. The lock across processes is `flock` on a file in the state
  directory: the kernel releases it when a holder dies, so a crashed notifier never leaves a
  claim behind and no lease needs a length guessed. SQLite's WAL needs its processes on one
  host anyway (no network filesystems), which is all flock needs too. A claim row (`INSERT ...
  ON CONFLICT DO NOTHING`) would need an expiry, and a holder slower than its expiry (three
  Slack calls at the Provider's timeout) would lose its claim while still holding it.
- On RabbitMQ, the stream used for `sent` cannot serve: it has no compare-and-set, and a
  replica's tail lags its writer, so a lock alone would let the next holder read the state from
  before the last holder's write. Each key gets two small queues instead:
  - its claim, an *exclusive* queue (`herald.notifier.claim.<hash>`): RabbitMQ lets one
    connection declare it and refuses every other (RESOURCE_LOCKED) until that connection
    deletes it or goes away. One winner across the cluster, released by the broker when a
    notifier dies (or misses heartbeats), with no TTL to tune;
  - its value, the one message of a durable queue (`herald.notifier.memory.<hash>`,
    `x-max-length` 1, so a write replaces it). It is written with a publisher confirm before
    the claim is released and peeked (got, then requeued) under the claim, so the next holder,
    on any replica, reads exactly what the last one wrote. `x-expires` removes the queues of
    threads unused for a day.
  Routing every delivery of a key to one consumer would also serialise them, but plain
  RabbitMQ has no consistent-hash exchange, and lanes of single-active-consumer queues would
  put unrelated objects behind one slow delivery. The claim costs a handful of broker round
  trips per Slack delivery (milliseconds), nothing for other providers.
A delivery that cannot get its claim within its timeout, or whose claim store is unreachable,
is retried later by the delivery loop: better late than a second parent.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pika
import pika.exceptions as pe
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from herald.bus.deliveries import (
    DeliveryLog,
    NoDeliveryLog,
    SQLiteDeliveryLog,
    open_delivery_log,
)
from herald.messages import Event
from notifier.providers.base import KeyLocks

DEFAULT_DEDUPE_WINDOW = 300.0
PROVIDER_MEMORY_WINDOW = 24 * 3600.0
MEMORY_QUEUE_PREFIX = "herald.notifier.memory."
CLAIM_QUEUE_PREFIX = "herald.notifier.claim."
LOCK_DIR = "notifier.locks"
LOCK_STRIPES = 256  # lock files; two keys sharing one only wait for each other, never mix state

log = logging.getLogger("herald.notifier")
T = TypeVar("T")


def dedupe_key(alert: str, provider: str, event: Event) -> str:
    """The identity of one notification: who sends it where, about which change.

    The timestamp is left out on purpose: the same event emitted twice is the same news.
    """
    obj = event.involvedObject
    parts = [alert, provider, obj.get("kind", ""), obj.get("namespace", ""), obj.get("name", ""),
             event.reason, event.message, event.revision]
    return "sent:" + hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class LogMemory:
    """A provider's Memory over a windowed log whose reads see every write at once (SQLite),
    claimed with a lock per key in this process and, given `lock_dir`, an flock shared with
    every process on the same directory."""

    def __init__(self, log: DeliveryLog, lock_dir: str | Path | None = None) -> None:
        self.log = log
        self.lock_dir = Path(lock_dir) if lock_dir is not None else None
        self._locks = KeyLocks()

    def get(self, key: str) -> str | None:
        return self.log.value(key) or None

    def put(self, key: str, value: str) -> None:
        self.log.record(key, value)

    @contextmanager
    def hold(self, key: str, timeout: float) -> Iterator[None]:
        deadline = time.monotonic() + timeout
        with self._locks.hold(key, timeout):
            if self.lock_dir is None:
                yield
                return
            self.lock_dir.mkdir(parents=True, exist_ok=True)
            stripe = int(_digest(key)[:8], 16) % LOCK_STRIPES
            # A descriptor of its own: flock conflicts between descriptors even in one process.
            fd = os.open(self.lock_dir / f"{stripe:03d}", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                _wait(lambda: _flock(fd), deadline, key)
                yield  # closing the descriptor releases the lock, as dying does
            finally:
                os.close(fd)

    def close(self) -> None:
        self.log.close()


def _flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _wait(attempt: Callable[[], bool], deadline: float, key: str) -> None:
    """Try `attempt` until it succeeds, backing off from 10 ms to 200 ms; TimeoutError at `deadline`."""
    delay = 0.01
    while not attempt():
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{key} stayed claimed by another notifier")
        time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 2, 0.2)


class _QuietClaimRefusals(logging.Filter):
    """pika warns of every channel the broker closes; a claim refused because another notifier
    holds it is how waiting works here (several a second), not news."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not ("RESOURCE_LOCKED" in message and CLAIM_QUEUE_PREFIX in message)


_PIKA_CHANNEL_LOG = logging.getLogger("pika.channel")
if not any(isinstance(f, _QuietClaimRefusals) for f in _PIKA_CHANNEL_LOG.filters):
    _PIKA_CHANNEL_LOG.addFilter(_QuietClaimRefusals())


class AmqpMemory:
    """A provider's Memory on RabbitMQ: per key, a claim queue and a value queue (see above).

    One connection, used by one thread at a time; a keeper thread answers heartbeats while
    deliveries wait on Slack, so the broker never takes a claim away from a live holder.
    """

    def __init__(self, url: str, window: float = PROVIDER_MEMORY_WINDOW, *, heartbeat: int = 30,
                 connect_timeout: float = 5.0) -> None:
        self.url = url
        self.window = window
        self.heartbeat = heartbeat
        self.connect_timeout = connect_timeout
        self._locks = KeyLocks()
        self._io = threading.Lock()  # pika's connection is not thread-safe
        self._connection: BlockingConnection | None = None
        self._channel: BlockingChannel | None = None
        self._generation = 0  # which connection holds the claims: a new one holds none of the old
        self._stop = threading.Event()
        self._keeper = threading.Thread(target=self._keep_alive, name="notifier-memory-heartbeats", daemon=True)
        self._keeper.start()

    # -- Memory ------------------------------------------------------------------------------

    def get(self, key: str) -> str | None:
        """The key's value; under its claim, the last holder's write, whichever replica made it."""
        name = MEMORY_QUEUE_PREFIX + _digest(key)

        def peek(channel: BlockingChannel) -> str | None:
            self._declare_value_queue(channel, name)
            method, _, body = channel.basic_get(name, auto_ack=False)
            if method is None:
                return None
            channel.basic_nack(method.delivery_tag, requeue=True)  # it stays, for the next reader
            return body.decode("utf-8", "replace") or None

        return self._call(peek)

    def put(self, key: str, value: str) -> None:
        """Replace the key's value; returns once the broker has confirmed it."""
        name = MEMORY_QUEUE_PREFIX + _digest(key)

        def write(channel: BlockingChannel) -> None:
            self._declare_value_queue(channel, name)
            channel.basic_publish("", name, value.encode(), pika.BasicProperties(delivery_mode=2), mandatory=True)

        self._call(write)

    @contextmanager
    def hold(self, key: str, timeout: float) -> Iterator[None]:
        deadline = time.monotonic() + timeout
        claim = CLAIM_QUEUE_PREFIX + _digest(key)
        with self._locks.hold(key, timeout):  # one thread of this process asks the broker
            generation = 0

            def take() -> bool:
                nonlocal generation
                generation = self._call(lambda channel: self._claim(channel, claim))
                return generation > 0

            _wait(take, deadline, key)
            try:
                yield
            finally:
                self._release(claim, generation)

    def close(self) -> None:
        self._stop.set()
        self._keeper.join(timeout=5)
        with self._io:
            self._drop()

    # -- the broker --------------------------------------------------------------------------

    def _claim(self, channel: BlockingChannel, claim: str) -> int:
        """The connection's generation once `claim` is ours; 0 while another connection has it."""
        try:
            channel.queue_declare(claim, exclusive=True, arguments={"x-queue-type": "classic"})
        except pe.ChannelClosedByBroker as exc:
            self._reset_channel()
            if exc.reply_code == 405:  # RESOURCE_LOCKED: another notifier holds it
                return 0
            raise
        return self._generation

    def _release(self, claim: str, generation: int) -> None:
        with self._io:
            if generation != self._generation or self._channel is None:
                log.warning("notifier memory: the connection holding %s was lost; the broker released it", claim)
                return
            try:
                self._channel.queue_delete(claim)
            except (pe.AMQPError, OSError) as exc:
                # Closing the connection is the one sure release left (the other claims of this
                # process go with it; their holders are told so when they release).
                log.warning("notifier memory: could not release %s (%s); closing its connection to release it",
                            claim, exc or type(exc).__name__)
                self._drop()

    def _declare_value_queue(self, channel: BlockingChannel, name: str) -> None:
        window_ms = int(self.window * 1000)
        channel.queue_declare(name, durable=True, arguments={
            "x-queue-type": "classic",
            "x-max-length": 1,  # a write drops the value it replaces
            "x-message-ttl": window_ms,
            "x-expires": window_ms,  # a thread unused for the window goes, queue and all
        })

    def _call(self, work: Callable[[BlockingChannel], T]) -> T:
        with self._io:
            try:
                return work(self._open_channel())
            except pe.AMQPChannelError:  # the claims live on the connection: keep it
                self._reset_channel()
                raise
            except (pe.AMQPError, OSError):
                self._drop()
                raise

    def _reset_channel(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None and channel.is_open:
            try:
                channel.close()
            except (pe.AMQPError, OSError):
                pass

    def _open_channel(self) -> BlockingChannel:
        if self._connection is None or not self._connection.is_open:
            self._drop()
            params = pika.URLParameters(self.url)
            params.heartbeat = self.heartbeat
            params.socket_timeout = self.connect_timeout
            params.stack_timeout = self.connect_timeout + 2
            params.blocked_connection_timeout = 10
            params.connection_attempts = 1
            params.client_properties = {"connection_name": "herald notifier memory"}
            self._connection = pika.BlockingConnection(params)
            self._generation += 1
        if self._channel is None or not self._channel.is_open:
            self._channel = self._connection.channel()
            self._channel.confirm_delivery()
        return self._channel

    def _drop(self) -> None:
        """Forget the connection (closing it if it is still open): its claims go with it."""
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and connection.is_open:
            try:
                connection.close()
            except (pe.AMQPError, OSError):
                pass

    def _keep_alive(self) -> None:
        while not self._stop.wait(max(1.0, self.heartbeat / 3)):
            with self._io:
                if self._connection is None:
                    continue
                try:
                    self._connection.process_data_events(time_limit=0)
                except (pe.AMQPError, OSError) as exc:
                    log.warning("notifier memory: connection lost (%s); claims it held are released",
                                exc or type(exc).__name__)
                    self._drop()


@dataclass
class NotifierMemory:
    sent: DeliveryLog
    providers: AmqpMemory | LogMemory

    @classmethod
    def open(cls, broker_url: str | None, state_dir: str | Path,
             dedupe_window: float = DEFAULT_DEDUPE_WINDOW) -> NotifierMemory:
        sent: DeliveryLog = (open_delivery_log(broker_url, state_dir, dedupe_window, name="notifier.sent")
                             if dedupe_window > 0 else NoDeliveryLog())
        url = (broker_url or "").strip()
        providers: AmqpMemory | LogMemory
        if url.lower().startswith(("amqp://", "amqps://")):
            providers = AmqpMemory(url, PROVIDER_MEMORY_WINDOW)
        else:
            kept = SQLiteDeliveryLog(Path(state_dir) / "notifier.memory.sqlite3", PROVIDER_MEMORY_WINDOW)
            providers = LogMemory(kept, lock_dir=Path(state_dir) / LOCK_DIR)
        return cls(sent, providers)

    @classmethod
    def for_bus(cls, bus: object, dedupe_window: float = DEFAULT_DEDUPE_WINDOW) -> NotifierMemory:
        """Beside the bus: on its broker, or SQLite next to the embedded bus's file."""
        url = getattr(bus, "url", None)
        path = getattr(bus, "path", None)
        if url:
            return cls.open(url, ".", dedupe_window)
        if path is not None:
            return cls.open(None, Path(path).parent, dedupe_window)
        raise TypeError(f"cannot place the notifier's memory beside a {type(bus).__name__}")

    def close(self) -> None:
        self.sent.close()
        self.providers.close()

