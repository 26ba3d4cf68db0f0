"""The delivery log on RabbitMQ: a stream every receiver replica appends to and tails.

Replicas of a stateless receiver share nothing but the broker, so the memory of accepted
deliveries lives there, as a RabbitMQ stream (an append-only log with time-based retention).
Each replica reads the stream from `now - window` at start, then tails it, keeping the ids
in memory, so a duplicate check is a dictionary lookup and costs no broker round trip on the
request path. Records are appended by a background thread for the same reason.

Why a stream and not a queue or a database: queues are consumed (one reader takes a record
away from the others); a database is one more thing to run. A stream is read by every
replica independently and trims itself (`x-max-age`, small segments so trimming happens).

The check is as fresh as the tail (milliseconds behind), which is what retries need: a Git
host resends after seconds or minutes, never in the same millisecond.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import queue
import threading
import time
import uuid

import pika
import pika.exceptions as pe
from pika.adapters.blocking_connection import BlockingConnection

log = logging.getLogger("herald.bus.deliveries")

STREAM = "herald.receiver.deliveries"
STREAM_ARGUMENTS = {
    "x-queue-type": "stream",
    "x-max-age": "7D",  # longer than any sensible window; the window itself is applied here
    "x-stream-max-segment-size-bytes": 8 * 1024 * 1024,  # retention drops whole segments
    "x-max-length-bytes": 1024 * 1024 * 1024,
}
MAX_KEYS = 2_000_000  # ~200 MB at worst; far more deliveries than any window sees
_MARKER_PREFIX = "herald:marker:"
# Records per stream message at most (~100 bytes each).
_MAX_BATCH = 1000
# How long the writer waits after a record for more to send with it (see `_write`).
FLUSH_DELAY = 0.05


class StreamDeliveryLog:
    def __init__(self, url: str, window: float, *, catch_up_timeout: float = 5.0,
                 reconnect_delay: float = 1.0, stream: str = STREAM,
                 flush_delay: float = FLUSH_DELAY, outage_level: int = logging.WARNING,
                 read: bool | str = True, max_age: str | None = STREAM_ARGUMENTS["x-max-age"]) -> None:
        """`outage_level`: how loudly a lost broker is logged; a log that is a courtesy (the
        fleet's, whose configuration is already in memory) says it at INFO, so an outage is
        warned about once per process by what it really stops (publishing, dedupe).

        `read=False`: a writer only (the workers' history records, which only the operator
        API reads): no reader thread, and no copy of the stream in this process' memory.
        `read="lazy"`: a writer until the first read, which starts the reader (a receiver's
        history: its webhooks pay for no reader until someone opens the API or the page).
        `max_age`: the stream's retention (None: kept until `x-max-length-bytes`, for
        records that must outlive any window, such as an operator's suspend)."""
        self.url = url
        self.outage_level = outage_level
        self.flush_delay = flush_delay
        self.window = window
        self.stream = stream
        self._lazy = read == "lazy"
        self.read = read is True
        self._start_lock = threading.Lock()
        self.arguments = {k: v for k, v in STREAM_ARGUMENTS.items() if k != "x-max-age"}
        if max_age:
            self.arguments["x-max-age"] = max_age
        self.catch_up_timeout = catch_up_timeout
        self.reconnect_delay = reconnect_delay
        self._seen: dict[str, float] = {}
        self._values: dict[str, str] = {}  # only keys recorded with a value
        self._lock = threading.Lock()
        self._outbox: queue.SimpleQueue[tuple[str, float] | tuple[str, float, str]] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._caught_up = threading.Event()
        self._declared = threading.Event()
        self._waited = False
        self._marker = _MARKER_PREFIX + uuid.uuid4().hex
        self._threads = [threading.Thread(target=self._loop, args=(self._write, "writer"),
                                          name="delivery-log-writer", daemon=True)]
        if self.read:
            self._outbox.put((self._marker, time.time()))
            self._threads.append(threading.Thread(target=self._loop, args=(self._read, "reader"),
                                                  name="delivery-log-reader", daemon=True))
        elif not self._lazy:
            self._caught_up.set()
        for t in self._threads:
            t.start()

    def _start_reading(self) -> None:
        """The first read of a lazy log: from now on it tails the stream like any reader."""
        with self._start_lock:
            if self.read:
                return
            self._outbox.put((self._marker, time.time()))
            reader = threading.Thread(target=self._loop, args=(self._read, "reader"), name="delivery-log-reader",
                                      daemon=True)
            self._threads.append(reader)
            self.read = True
            reader.start()

    # ---- the interface -----------------------------------------------------------------

    def first_seen(self, key: str) -> float | None:
        self._wait_caught_up()
        with self._lock:
            at = self._seen.get(key)
        if at is None or at < time.time() - self.window:
            return None
        return at

    def value(self, key: str) -> str | None:
        self._wait_caught_up()
        with self._lock:
            at = self._seen.get(key)
            value = self._values.get(key, "")
        if at is None or at < time.time() - self.window:
            return None
        return value

    def record(self, key: str, value: str = "") -> None:
        now = time.time()
        if self.read:  # a writer only keeps nothing: its records are for the readers
            self._remember(key, now, value)
        self._outbox.put((key, now, value) if value else (key, now))

    def items(self, prefix: str) -> dict[str, tuple[float, str]]:
        self._wait_caught_up()
        oldest = time.time() - self.window
        with self._lock:
            return {k: (at, self._values.get(k, "")) for k, at in self._seen.items()
                    if k.startswith(prefix) and at >= oldest}

    def forget(self, keys: list[str]) -> None:
        """Drop `keys` from this replica's memory (a bound on what it keeps); the stream
        itself trims by age."""
        with self._lock:
            for key in keys:
                self._seen.pop(key, None)
                self._values.pop(key, None)

    def _wait_caught_up(self) -> None:
        if self._lazy and not self.read:
            self._start_reading()
        if not self._caught_up.is_set() and not self._waited:
            # Right after start the tail has not replayed the window yet: wait for it once,
            # briefly. With the broker away there is nothing to dedupe against anyway.
            if not self._caught_up.wait(self.catch_up_timeout):
                log.warning("delivery log: stream not replayed within %.0fs; duplicates may pass "
                            "until it is", self.catch_up_timeout)
            self._waited = True

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)

    @property
    def ready(self) -> bool:
        return self._caught_up.is_set()

    # ---- internals ---------------------------------------------------------------------

    def _remember(self, key: str, at: float, value: str = "") -> None:
        with self._lock:
            old = self._seen.pop(key, None) or 0.0
            self._seen[key] = max(at, old)
            if at >= old:  # the newest record's value wins, whatever order replicas' arrive in
                if value:
                    self._values[key] = value
                else:
                    self._values.pop(key, None)
            if len(self._seen) > MAX_KEYS:
                oldest = next(iter(self._seen))
                del self._seen[oldest]
                self._values.pop(oldest, None)

    def _expire(self) -> None:
        horizon = time.time() - self.window
        with self._lock:
            while self._seen:
                key = next(iter(self._seen))
                if self._seen[key] >= horizon:
                    break
                del self._seen[key]
                self._values.pop(key, None)

    def _connect(self) -> BlockingConnection:
        params = pika.URLParameters(self.url)
        params.heartbeat = 30
        params.socket_timeout = 5
        params.blocked_connection_timeout = 10
        params.client_properties = {"connection_name": f"herald log {self.stream}"}
        return BlockingConnection(params)

    def _loop(self, body, role: str) -> None:
        down_since: float | None = None  # one warning per outage, not one per reconnect attempt
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                body()
            except (pe.AMQPError, OSError) as exc:
                if down_since is not None and time.monotonic() - started > 5 * max(self.reconnect_delay, 1.0):
                    log.log(self.outage_level, "delivery log %s %s: the broker was back for a while", self.stream,
                            role)
                    down_since = None  # it ran a while before failing: a new outage
                if down_since is None:
                    down_since = time.monotonic()
                    log.log(self.outage_level, "delivery log %s %s: lost the broker (%s); reconnecting every %gs",
                            self.stream, role, str(exc) or type(exc).__name__, self.reconnect_delay)
                else:
                    log.debug("delivery log %s: still no broker (%s)", role, str(exc) or type(exc).__name__)
            except Exception:  # a bug here must not take dedupe down for the process' lifetime
                log.exception("delivery log %s failed; restarting it", role)
            self._stop.wait(self.reconnect_delay)

    def _read(self) -> None:
        # Declaring a new stream from two connections at once can fail one of them while
        # the stream's members start; let the writer create it first.
        self._declared.wait(2.0)
        connection = self._connect()
        try:
            channel = connection.channel()
            channel.queue_declare(self.stream, durable=True, arguments=self.arguments)
            channel.basic_qos(prefetch_count=1000)  # streams require a prefetch
            # A window longer than the epoch (records kept for good) reads the stream from its start.
            since: object = ("first" if self.window >= time.time() else
                             dt.datetime.fromtimestamp(time.time() - self.window, tz=dt.UTC))
            received = 0

            def on_message(ch, method, props, body: bytes) -> None:
                nonlocal received
                for key, at, value in _records(body, props):
                    if key == self._marker:
                        self._caught_up.set()
                    elif not key.startswith(_MARKER_PREFIX):
                        self._remember(key, at, value)
                received += 1
                if received % 100 == 0:
                    # Stream credit comes back with acks: ack in batches, well inside the prefetch.
                    ch.basic_ack(method.delivery_tag, multiple=True)
                if received % 1000 == 0:
                    self._expire()

            channel.basic_consume(self.stream, on_message, auto_ack=False,
                                  arguments={"x-stream-offset": since})
            while not self._stop.is_set():
                connection.process_data_events(time_limit=0.5)
        finally:
            _close(connection)

    def _write(self) -> None:
        pending: list[tuple[str, float] | tuple[str, float, str]] = []
        connection = self._connect()
        try:
            channel = connection.channel()
            channel.queue_declare(self.stream, durable=True, arguments=self.arguments)
            self._declared.set()
            # No publisher confirms: a record lost in a broker crash costs one dedupe, while
            # waiting for confirms one by one would make this thread the bottleneck.
            while not self._stop.is_set():
                if not pending:
                    try:
                        pending.append(self._outbox.get(timeout=0.5))
                    except queue.Empty:
                        connection.process_data_events(time_limit=0)
                        continue
                    # Let the records of the next few milliseconds ride along: under load this
                    # thread then wakes (and takes the GIL from the request threads) once per
                    # `flush_delay`, not once per delivery, and the broker and every replica's
                    # reader handle one stream message for all of them. This replica knows the
                    # records at once (`record` remembered them); the others learn them this
                    # much later, still far sooner than any sender retries.
                    self._stop.wait(self.flush_delay)
                self._drain(pending)
                self._send(channel, pending)
            self._drain(pending)  # closing: what was recorded so far still goes out
            if pending:
                self._send(channel, pending)
        finally:
            # Unsent records go back for the next connection.
            for item in pending:
                self._outbox.put(item)
            _close(connection)

    def _drain(self, pending: list) -> None:
        while len(pending) < _MAX_BATCH:
            try:
                pending.append(self._outbox.get_nowait())
            except queue.Empty:
                break

    def _send(self, channel, pending: list) -> None:  # noqa: ANN001 - a pika BlockingChannel
        # Many records per stream message: under load, one message carries hundreds of
        # deliveries, so the broker and every replica's reader handle one message, not
        # hundreds (the per-message cost dominated the receiver's CPU in the bench).
        channel.basic_publish("", self.stream, json.dumps(pending).encode(),
                              pika.BasicProperties(delivery_mode=2, timestamp=int(pending[0][1]),
                                                   content_type="application/json"))
        pending.clear()


def _records(body: bytes, props: pika.BasicProperties) -> list[tuple[str, float, str]]:
    """A stream message's records: a JSON list of [key, epoch seconds] or [key, epoch seconds,
    value] items. Anything else (a foreign or damaged message) is skipped: the log is an
    optimisation, never a reason to stop reading."""
    try:
        items = json.loads(body)
    except (ValueError, RecursionError):
        return []
    if not isinstance(items, list):
        return []
    out = []
    for item in items:
        if not isinstance(item, list) or len(item) not in (2, 3):
            continue
        key, at, value = item[0], item[1], item[2] if len(item) == 3 else ""
        if isinstance(key, str) and isinstance(at, (int, float)) and isinstance(value, str):
            out.append((key, float(at), value))
    return out


def _close(connection: BlockingConnection) -> None:
    try:
        if connection.is_open:
            connection.close()
    except (pe.AMQPError, OSError):
        pass
