"""The RabbitMQ bus: the `Bus` interface on durable quorum queues with publisher confirms.

Topology per logical queue `q`:

- `q`: quorum queue (replicated, durable) that consumers read;
- `q.dead`: quorum queue for messages that failed too often or were rejected;
- `q.retry.<ms>`: one quorum queue per backoff delay, with a fixed queue TTL of `<ms>`
  milliseconds, dead-lettering expired messages back to `q` through the default exchange.
  The policy's own backoff delays get exact queues; a delay the handler asks for (a
  retryInterval, a Retry-After) or one with jitter is rounded *up* to a fixed ladder (100 ms
  steps to 1 s, then eight steps per doubling, at most 9% late), so the number of retry
  queues stays bounded whatever the delays asked for.

`q` and `q.dead` are declared on first use by a publisher or consumer; a retry queue when the
first message needs it (declarations are idempotent).

Why one retry queue per delay tier rather than a single `q.retry` with per-message
`expiration`: RabbitMQ only expires messages at the *head* of a queue, so a message waiting
300 s would hold back one behind it that should wait 1 s. With a fixed TTL per queue, messages
expire in arrival order and every delay is honoured.

Why quorum retry queues with `x-dead-letter-strategy: at-least-once`: RabbitMQ 3.10 added
message TTL and at-least-once dead-lettering to quorum queues. With it the broker keeps an
expired message in the retry queue until `q` has confirmed it, so nothing is lost on the way
back; classic queues (and the quorum default, at-most-once) re-publish without confirms and
can drop the message if `q` is unavailable at that moment (e.g. a leader election).

Known broker bug and why retry queues are declared lazily: RabbitMQ's `rabbit_fifo_dlx_sup`
(which runs the at-least-once dead-letter workers) can exceed its restart intensity when
workers crash in a burst — seen on 3.10 when a retry queue is deleted while its worker starts
(right after a restart), reported upstream for membership churn (rabbitmq-server #16652). Until
the RabbitMQ app is restarted, declaring an at-least-once queue then fails (INTERNAL_ERROR)
and such queues stop moving messages. Because `publish` and consumer start-up never declare
retry queues, webhooks and first attempts keep working through it; failed messages are handed
back to the broker and, once out of attempts, dead-lettered to `q.dead` — degraded, not lost.
Thread model: pika connections are not thread-safe. `publish` is called from many threads
(web server threads, handlers), so it hands the message to the process's one publishing
connection, driven by its own I/O thread (herald.bus.confirms): the caller waits for its
message's confirm while confirms for many callers' messages arrive together, one fsync on the
broker settling a whole batch. A consumer owns one more connection whose I/O loop runs in the
thread that called `consume`; the handler runs in a worker thread, so heartbeats keep flowing
while a reconcile takes minutes, and the ack is sent from the I/O thread once the handler
returned.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import queue as queue_module
import threading
import time
import urllib.parse
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from collections.abc import Callable, Iterator

import pika
from pika import exceptions as pe
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from pika.adapters.utils.connection_workflow import AMQPConnectorException
from pika.spec import Basic, BasicProperties

from herald.bus import confirms, metrics
from herald.bus.base import (
    ATTEMPT_HEADER,
    ATTEMPTS_HEADER,
    ERROR_HEADER,
    FAILING_SINCE_HEADER,
    READY_AT_HEADER,
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
from herald.messages import EVENTS_QUEUE, IMAGE_QUEUE, NOTIFY_QUEUE, PLAN_QUEUE, RECONCILE_QUEUE

log = logging.getLogger(__name__)

# The work queues Herald's components use. AMQP 0-9-1 cannot list a vhost's queues (that is
# the management plugin's HTTP API, which we do not require), so `dead_queues` looks at these
# and at the queues the bus instance itself declared: an operator's fresh CLI process, which
# declared nothing, still finds Herald's dead letters.
WORK_QUEUES = (RECONCILE_QUEUE, PLAN_QUEUE, IMAGE_QUEUE, EVENTS_QUEUE, NOTIFY_QUEUE)

CONTENT_TYPE = "application/json"
# Bookkeeping the broker adds; not copied onto retries or dead letters, where it would
# otherwise be mistaken for the new copy's own history.
_BROKER_HEADER_PREFIXES = ("x-death", "x-delivery-count", "x-first-death-", "x-last-death-")
_MAX_ERROR_CHARS = 2000
_POLL_SECONDS = 0.25  # how long the consumer's I/O loop waits before checking `stop`


class _DeadlineExpired(pe.AMQPConnectionError):
    """A blocking pika call (confirm, RPC) took longer than we allow; the socket was cut."""


@contextlib.contextmanager
def _deadline(connection: BlockingConnection, seconds: float) -> Iterator[None]:
    """Bound every blocking call on `connection` inside the block to `seconds`.

    pika's blocking `basic_publish` waits for the confirm, and its RPCs for their reply,
    without any timeout: a broker that stops answering (frozen, partitioned, half-open TCP)
    would hang the caller — a webhook request — forever. When the deadline passes we tear
    the stream down the way pika itself does for `blocked_connection_timeout`, which makes the
    blocked call raise `_DeadlineExpired` and leaves the connection closed and discardable.
    """
    impl = connection._impl  # noqa: SLF001 - pika offers no public per-call timeout

    def expire() -> None:
        error = _DeadlineExpired(f"no answer from the broker within {seconds}s")
        impl._terminate_stream(error)  # noqa: SLF001

    timer = impl._adapter_call_later(seconds, expire)  # noqa: SLF001
    try:
        yield
    finally:
        with contextlib.suppress(Exception):  # the ioloop is gone if the connection closed
            impl._adapter_remove_timeout(timer)  # noqa: SLF001


def _close_quietly(connection: BlockingConnection | None) -> None:
    """Close without ever hanging on a broker that does not answer."""
    if connection is None or not connection.is_open:
        return
    with contextlib.suppress(Exception):
        with _deadline(connection, 2.0):
            connection.close()


def _text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return None


def _as_int(value: Any, default: int) -> int:
    try:
        return int(_text(value) or default)
    except ValueError:
        return default


def _is_broker_header(name: str) -> bool:
    return name.startswith(_BROKER_HEADER_PREFIXES)


def _address(props: BasicProperties, body: bytes) -> str:
    """The id a dead letter is listed and addressed by: its `message_id` property.

    `publish` gives every message one, so this is the fallback for a message without (from a
    Herald before that, or another client): a digest of its body, the same on every read.
    Dead letters with the same body then share the id, and are replayed or dropped together.
    """
    return props.message_id or "sha256:" + hashlib.sha256(body).hexdigest()[:16]


@dataclass(frozen=True)
class Topology:
    """The broker queues behind one logical queue."""

    queue: str
    retry_delays_ms: tuple[int, ...]

    @property
    def dead(self) -> str:
        return f"{self.queue}.dead"

    def retry(self, delay_ms: int) -> str:
        return f"{self.queue}.retry.{delay_ms}"

    def names(self) -> list[str]:
        return [self.queue, self.dead, *(self.retry(ms) for ms in self.retry_delays_ms)]


@dataclass
class _Job:
    """A delivery handed from the consumer's I/O thread to its worker thread."""

    channel: BlockingChannel
    connection: BlockingConnection
    delivery_tag: int
    delivery: Delivery
    properties: BasicProperties
    ack: bool = False  # the outcome: True → ack; False → hand back to the broker (nack+requeue)


def ladder_ms(delay: float) -> int:
    """`delay` seconds rounded up to the retry-queue ladder, in milliseconds.

    100 ms steps up to a second, then 2**(k/8) seconds: every whole power of two is on it
    (so 1, 2, 4 s share queues with the default backoff), and a delay is at most 9% late.
    """
    ms = max(1, math.ceil(delay * 1000))
    if ms <= 1000:
        return max(100, math.ceil(ms / 100) * 100)
    k = math.ceil(8 * math.log2(ms / 1000))
    tier = round(1000 * 2 ** (k / 8))
    return tier if tier >= ms else round(1000 * 2 ** ((k + 1) / 8))


class _Backoff:
    """Reconnect delays that double up to a cap, so an outage is never a hot loop."""

    def __init__(self, first: float, cap: float) -> None:
        self.first, self.cap, self.next = first, cap, first

    def take(self) -> float:
        delay, self.next = self.next, min(self.cap, self.next * 2)
        return delay

    def reset(self) -> None:
        self.next = self.first


class _ConsumerCancelled(pe.AMQPError):
    """The broker cancelled our consumer (queue deleted, leader moved): subscribe again."""


class AmqpBus:
    """RabbitMQ (3.10+) implementation of `Bus`."""

    def __init__(
        self,
        url: str,
        *,
        retry: RetryPolicy = RetryPolicy(),
        confirm_timeout: float = 5.0,
        connect_timeout: float = 3.0,
        heartbeat: int = 30,
        reconnect_delay: float = 0.5,
        reconnect_max_delay: float = 10.0,
    ) -> None:
        self.url = url
        self.retry = retry
        self.confirm_timeout = confirm_timeout
        self.connect_timeout = connect_timeout
        self.heartbeat = heartbeat
        self.reconnect_delay = reconnect_delay
        self.reconnect_max_delay = reconnect_max_delay
        self._confirms: confirms.ConfirmPublisher | None = None  # made on first use, per process
        self._confirms_lock = threading.Lock()
        self._ping_lock = threading.Lock()
        self._ping_at = float("-inf")
        self._ping_ok = False
        self._closed = False
        self._extra_delays: dict[str, set[int]] = {}  # ladder tiers used, per queue (for depth)
        self._declared: set[str] = set()  # work queues declared by this instance (dead_queues)
        self._declared_lock = threading.Lock()

    # -- Bus --------------------------------------------------------------------------------

    def publish(
        self,
        queue: str,
        body: bytes,
        *,
        message_id: str = "",
        headers: dict[str, str] | None = None,
    ) -> None:
        """Publish persistently and return once the broker confirmed it.

        Raises BusUnavailable when the broker cannot be reached, refuses (nack), cannot route
        the message, or does not confirm within `confirm_timeout`; BusError when the queue
        exists with other arguments or access is refused, or the bus was closed.

        A message without `message_id` is given a random one here, once: it is what its
        retries and dead letter carry, and what an operator names it by (`replay_dead`).
        """
        props = self._properties(message_id or uuid.uuid4().hex, caller_headers(headers), CONTENT_TYPE)
        self._send(queue, queue, body, props)

    def consume(
        self,
        queue: str,
        handler: Handler,
        stop: threading.Event,
        *,
        prefetch: int = 1,
        retry: RetryPolicy | None = None,
    ) -> None:
        """Deliver messages of `queue` to `handler` one at a time until `stop` is set.

        Up to `prefetch` messages are held unacknowledged; they are handled in order by one
        worker thread (run several `consume` calls for parallelism). Reconnects with backoff
        while the broker is away. When `stop` is set, a running handler is let finish and its
        message settled before this returns. Raises BusError if the queues exist with other
        arguments than ours (a configuration error that retrying will not fix).
        """
        worker = _Worker(self, queue, handler, retry or self.retry)
        backoff = _Backoff(self.reconnect_delay, self.reconnect_max_delay)
        try:
            while not stop.is_set():
                try:
                    self._consume_session(queue, worker, stop, prefetch, backoff)
                except (pe.AMQPError, OSError, BusUnavailable) as exc:
                    self._wait_reconnect(queue, exc, stop, backoff)
        finally:
            worker.close()

    def ping(self) -> bool:
        """Whether the publishing connection is open or can be opened now; cached 1 s."""
        with self._ping_lock:
            if time.monotonic() - self._ping_at < 1.0:
                return self._ping_ok
        try:
            ok = self._publisher().probe()
        except BusError:
            ok = False
        with self._ping_lock:
            self._ping_at, self._ping_ok = time.monotonic(), ok
        return ok

    def dead_letters(self, queue: str, *, limit: int = 1000) -> list[Delivery]:
        """Read up to `limit` dead letters of `queue` and hand them all back to the broker.

        Messages are fetched unacknowledged and then nacked with requeue, so they stay in
        `<queue>.dead` (if we die in between, the broker requeues them just the same). Their
        `message_id` is the one `replay_dead` and `drop_dead` take (see `_address`).

        Caution, RabbitMQ 4.0 to 4.2: a nack with requeue counts as a failed delivery there, and
        quorum queues drop a message after 20 of them unless a delivery limit is set (policy
        `delivery-limit: -1` on `*.dead`): every listing uses up one of those 20.
        """
        topology = self.topology(queue)
        connection = self._connect("dead-letter reader")
        try:
            with _deadline(connection, max(10.0, self.confirm_timeout)):
                channel = connection.channel()
                self._declare(channel, queue)
                out: list[Delivery] = []
                while len(out) < limit:
                    method, props, body = channel.basic_get(topology.dead, auto_ack=False)
                    if method is None:
                        break
                    delivery = self._delivery(topology.dead, method, props, body)
                    delivery.message_id = _address(props, body)
                    delivery.attempt = _as_int(delivery.headers.get(ATTEMPTS_HEADER), 1)
                    out.append(delivery)
                if out:
                    channel.basic_nack(delivery_tag=0, multiple=True, requeue=True)
                return out
        except (pe.AMQPError, OSError) as exc:
            raise BusUnavailable(f"cannot read dead letters of {queue}: {exc!r}") from exc
        finally:
            _close_quietly(connection)

    def dead_queues(self) -> list[str]:
        """Herald's queues (WORK_QUEUES and those this instance declared) with dead letters.

        Counted with a passive declare of each `<queue>.dead` (ready messages only: dead
        letters that a `dead_letters` call holds at that moment are not counted).
        """
        with self._declared_lock:
            names = sorted({*WORK_QUEUES, *self._declared})
        connection = self._connect("dead-letter census")
        try:
            with _deadline(connection, max(10.0, self.confirm_timeout)):
                return [name for name in names if self._ready(connection, self.topology(name).dead)]
        except (pe.AMQPError, OSError) as exc:
            raise BusUnavailable(f"cannot count dead letters: {exc!r}") from exc
        finally:
            _close_quietly(connection)

    def replay_dead(self, queue: str, message_id: str | None = None) -> int:
        """Publish the matching dead letters to `queue` again, then remove them from `.dead`.

        Each copy goes through `_send`, as `publish` does, and the dead letter is acked only
        once the broker confirmed the copy: a failure in between leaves the dead letter where
        it was (and, if only the ack was lost, the message in both queues: at least once).
        """

        def replay(props: BasicProperties, body: bytes, delivery: Delivery) -> None:
            headers = caller_headers(delivery.headers)  # the dead letter's error, attempts...
            headers[REPLAYED_HEADER] = str(max(0, _as_int(headers.get(REPLAYED_HEADER), 0)) + 1)
            copy = self._properties(delivery.message_id, headers, props.content_type or CONTENT_TYPE)
            self._send(queue, queue, body, copy)

        return self._settle_dead(queue, message_id, replay, "dead-letter replay")

    def drop_dead(self, queue: str, message_id: str | None = None) -> int:
        """Ack (delete) the matching dead letters; all of them with a purge of `.dead`."""
        if message_id is not None:
            return self._settle_dead(queue, message_id, None, "dead-letter drop")
        connection = self._connect("dead-letter drop")
        try:
            with _deadline(connection, max(10.0, self.confirm_timeout)):
                channel = connection.channel()
                try:
                    purged = channel.queue_purge(self.topology(queue).dead)
                except pe.ChannelClosedByBroker as exc:
                    if exc.reply_code == 404:  # no such queue: nothing dead
                        return 0
                    raise
                return int(purged.method.message_count)
        except (pe.AMQPError, OSError) as exc:
            raise BusUnavailable(f"cannot drop dead letters of {queue}: {exc!r}") from exc
        finally:
            _close_quietly(connection)

    def _settle_dead(
        self,
        queue: str,
        message_id: str | None,
        act: Callable[[BasicProperties, bytes, Delivery], None] | None,
        role: str,
    ) -> int:
        """Take the dead letters of `queue` one by one; for each that `message_id` names (None:
        every one) run `act` (if any) and ack it. The others are nacked with requeue at the
        end, as `dead_letters` does. Returns how many were acked.

        Only as many letters as `.dead` held at the start are taken: a replayed message that a
        running consumer rejects again at once is back in `.dead` while we walk, and must not
        be replayed again (with a handler that always rejects, for ever).

        Deadlines are per broker call rather than for the whole walk, which publishes (and
        waits for a confirm) once per replayed message. A `.dead` that does not exist is not
        declared (a mistyped queue name must not leave queues behind): it has nothing to take.
        """
        dead = self.topology(queue).dead
        step = max(10.0, self.confirm_timeout)
        connection = self._connect(role)
        done = unacked = 0
        try:
            with _deadline(connection, step):
                channel = connection.channel()
            try:
                with _deadline(connection, step):
                    present = channel.queue_declare(dead, passive=True).method.message_count
                for _ in range(present):
                    with _deadline(connection, step):
                        method, props, body = channel.basic_get(dead, auto_ack=False)
                    if method is None:
                        break
                    unacked += 1
                    delivery = self._delivery(dead, method, props, body)
                    delivery.message_id = _address(props, body)
                    if message_id is not None and delivery.message_id != message_id:
                        continue  # not ours: handed back below
                    if act is not None:
                        try:
                            act(props, body, delivery)
                        except BusUnavailable as exc:  # the letter stays unacked, so dead
                            raise BusUnavailable(f"{role} of {queue} stopped after {done}: {exc}",
                                                 outage=exc.outage) from exc
                    with _deadline(connection, step):
                        channel.basic_ack(method.delivery_tag)
                    unacked -= 1
                    done += 1
                return done
            except pe.ChannelClosedByBroker as exc:
                if exc.reply_code != 404:  # 404: no such queue, so nothing dead
                    raise
                return done
            finally:
                if unacked and channel.is_open:
                    # Whatever is still unacked on the channel: the letters we skipped, and the
                    # one in hand if `act` failed. (Closing would requeue them just the same.)
                    with contextlib.suppress(Exception), _deadline(connection, step):
                        channel.basic_nack(delivery_tag=0, multiple=True, requeue=True)
        except (pe.AMQPError, OSError) as exc:
            raise BusUnavailable(
                f"cannot settle dead letters of {queue} ({done} done): {exc!r}"
            ) from exc
        finally:
            _close_quietly(connection)

    def depth(self, queue: str) -> int:
        """Messages ready in `queue` and its retry queues, not counting unacked ones."""
        topology = self.topology(queue)
        connection = self._connect("depth probe")
        try:
            with _deadline(connection, max(10.0, self.confirm_timeout)):
                self._declare(connection.channel(), queue)
                delays = {*topology.retry_delays_ms, *self._extra_delays.get(queue, ())}
                names = [topology.queue, *(topology.retry(ms) for ms in sorted(delays))]
                return sum(self._ready(connection, name) for name in names)
        except (pe.AMQPError, OSError) as exc:
            raise BusUnavailable(f"cannot count {queue}: {exc!r}") from exc
        finally:
            _close_quietly(connection)

    @staticmethod
    def _ready(connection: BlockingConnection, name: str) -> int:
        """Ready messages in `name`; 0 if it does not exist (a retry queue never needed)."""
        channel = connection.channel()  # a failed passive declare closes its channel
        try:
            count = channel.queue_declare(name, passive=True).method.message_count
        except pe.ChannelClosedByBroker as exc:
            if exc.reply_code == 404:
                return 0
            raise
        channel.close()
        return int(count)

    def close(self) -> None:
        """Close the publishing connection; call once consumers and publishers stopped."""
        with self._confirms_lock:
            self._closed = True
            publisher, self._confirms = self._confirms, None
        if publisher is not None:
            publisher.close()

    def topology(self, queue: str) -> Topology:
        """The broker queues behind `queue` under this bus's retry policy."""
        delays = {
            max(1, round(self.retry.delay(attempt) * 1000))
            for attempt in range(1, self.retry.max_attempts)
        }
        return Topology(queue, tuple(sorted(delays)))

    # -- connections ------------------------------------------------------------------------

    def _parameters(self, role: str) -> pika.URLParameters:
        """The URL's parameters, with short timeouts unless the URL sets its own.

        A dead broker must turn into BusUnavailable within seconds (the receiver answers 503
        and the sender retries), never into a hanging request.
        """
        params = pika.URLParameters(self.url)
        given = set(urllib.parse.parse_qs(urllib.parse.urlsplit(self.url).query))
        defaults: dict[str, Any] = {
            "socket_timeout": self.connect_timeout,
            "stack_timeout": self.connect_timeout + 2.0,
            "connection_attempts": 1,
            "retry_delay": 0,
            "blocked_connection_timeout": self.confirm_timeout,
            "heartbeat": self.heartbeat,
        }
        for name, value in defaults.items():
            if name not in given:
                setattr(params, name, value)
        params.client_properties = {"connection_name": f"herald {role}"}
        return params

    def _connect(self, role: str) -> BlockingConnection:
        try:
            return pika.BlockingConnection(self._parameters(role))
        except (pe.AMQPError, AMQPConnectorException, OSError) as exc:  # refused, timed out...
            raise BusUnavailable(f"cannot connect to the broker: {exc!r}") from exc

    def _publisher(self) -> confirms.ConfirmPublisher:
        """This process's publisher (a child process after fork gets its own)."""
        publisher = self._confirms
        if publisher is not None and publisher.pid == os.getpid() and not publisher.failed:
            return publisher
        with self._confirms_lock:
            if self._closed:
                raise BusError("the bus is closed")
            publisher = self._confirms
            if publisher is None or publisher.pid != os.getpid() or publisher.failed:
                # An inherited publisher's I/O thread did not survive the fork; its socket is
                # the parent's, so it is left alone rather than closed.
                publisher = confirms.ConfirmPublisher(
                    lambda: self._parameters("publisher"),
                    self._declare,
                    confirm_timeout=self.confirm_timeout,
                    connect_timeout=self.connect_timeout,
                )
                self._confirms = publisher
            return publisher

    def _drop_publisher(self) -> None:
        """Called by a consumer's handler thread as it ends; publishers are per process now."""

    # -- publishing -------------------------------------------------------------------------

    @staticmethod
    def _properties(message_id: str, headers: dict[str, str], content_type: str,
                    delay: float = 0.0) -> BasicProperties:
        now = time.time()
        return BasicProperties(
            delivery_mode=pika.DeliveryMode.Persistent,
            content_type=content_type or CONTENT_TYPE,
            message_id=message_id or None,
            headers={**headers, READY_AT_HEADER: f"{now + delay:.3f}"},
            timestamp=int(now),
        )

    def _declare(self, channel: BlockingChannel, queue: str, delay_ms: int | None = None) -> None:
        """Declare `queue` and its dead-letter queue, or (with `delay_ms`) one retry queue."""
        topology = self.topology(queue)
        quorum = {"x-queue-type": "quorum"}
        if delay_ms is None:
            channel.queue_declare(topology.queue, durable=True, arguments=quorum)
            channel.queue_declare(topology.dead, durable=True, arguments=quorum)
            with self._declared_lock:
                self._declared.add(queue)
            return
        channel.queue_declare(
            topology.retry(delay_ms),
            durable=True,
            arguments={
                **quorum,
                "x-message-ttl": delay_ms,
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": topology.queue,
                "x-dead-letter-strategy": "at-least-once",
                "x-overflow": "reject-publish",  # required by at-least-once
            },
        )

    def _send(
        self,
        queue: str,
        routing_key: str,
        body: bytes,
        props: BasicProperties,
        *,
        delay_ms: int | None = None,
    ) -> None:
        """Publish to `routing_key` and wait for the confirm.

        `routing_key` is `queue`, `queue`'s dead-letter queue, or (with `delay_ms`) its retry
        queue for that delay; what is needed is declared once per publisher. A connection that
        was already open and turns out broken is replaced once, transparently; a queue deleted
        behind our back is declared again once. Anything else is an error.
        """
        declare = ((queue, queue, None), (routing_key, queue, delay_ms))
        for last_try in (False, True):
            publisher = self._publisher()
            try:
                publisher.publish(routing_key, body, props, declare)
                return
            except confirms.Unroutable as exc:
                # The publisher forgot the declarations; the retry declares the queues again.
                if last_try:
                    raise BusUnavailable(f"message to {routing_key} was unroutable") from exc
            except confirms.Nacked as exc:
                raise BusUnavailable(f"the broker refused the message to {routing_key}") from exc
            except confirms.ChannelClosed as exc:
                if exc.reply_code in (403, 406):
                    raise BusError(f"cannot publish to {routing_key}: {exc.reply_text}") from exc
                if last_try:
                    raise BusUnavailable(f"cannot publish to {routing_key}: {exc}") from exc
            except confirms.ConfirmTimeout as exc:
                raise BusUnavailable(
                    f"no confirm for {routing_key} within {self.confirm_timeout}s"
                ) from exc
            except confirms.ConnectionLost as exc:
                if last_try or not exc.reused:
                    raise BusUnavailable(f"cannot publish to {routing_key}: {exc}", outage=True) from exc
                log.info("publishing connection was broken (%s); reconnecting once", exc)
            except confirms.PublisherClosed as exc:
                if publisher.failed:  # its I/O loop died: the next publish gets a new publisher
                    raise BusUnavailable(f"cannot publish to {routing_key}: {exc}") from exc
                raise BusError("the bus is closed") from exc
            except confirms.PublishFailed as exc:  # ConnectFailed: the publisher announced the outage
                raise BusUnavailable(f"cannot publish to {routing_key}: {exc}", outage=True) from exc

    # -- consuming --------------------------------------------------------------------------

    def _wait_reconnect(
        self, queue: str, exc: BaseException, stop: threading.Event, backoff: _Backoff
    ) -> None:
        delay = backoff.take()
        log.warning("consumer of %s lost the broker (%r); reconnecting in %.1fs", queue, exc, delay)
        stop.wait(delay)

    def _consume_session(
        self,
        queue: str,
        worker: _Worker,
        stop: threading.Event,
        prefetch: int,
        backoff: _Backoff,
    ) -> None:
        """One connection's worth of consuming; returns when stopped, raises when cut off."""
        connection = self._connect(f"consumer {queue}")
        try:
            cancelled: list[Any] = []
            inbox: deque[tuple[Basic.Deliver, BasicProperties, bytes]] = deque()
            with _deadline(connection, max(10.0, self.confirm_timeout)):
                channel = connection.channel()
                try:
                    self._declare(channel, queue)
                except pe.ChannelClosedByBroker as exc:
                    if exc.reply_code in (403, 406):  # access refused, precondition failed
                        raise BusError(f"cannot declare {queue}: {exc.reply_text}") from exc
                    raise
                channel.basic_qos(prefetch_count=prefetch)
                channel.add_on_cancel_callback(cancelled.append)
                channel.basic_consume(
                    queue,
                    on_message_callback=lambda _ch, method, props, body: inbox.append(
                        (method, props, body)
                    ),
                    auto_ack=False,
                )
            backoff.reset()
            log.info("consuming %s (prefetch %d)", queue, prefetch)
            while True:
                for job in worker.finished():
                    self._settle(channel, job)
                if not worker.busy:
                    if stop.is_set():
                        return  # unacked prefetched messages go back when the channel closes
                    if cancelled:
                        raise _ConsumerCancelled(f"the broker cancelled our consumer of {queue}")
                    if inbox:
                        method, props, body = inbox.popleft()
                        delivery = self._delivery(queue, method, props, body)
                        worker.submit(
                            _Job(channel, connection, method.delivery_tag, delivery, props)
                        )
                connection.process_data_events(time_limit=_POLL_SECONDS)
        finally:
            _close_quietly(connection)

    @staticmethod
    def _settle(channel: BlockingChannel, job: _Job) -> None:
        """Ack (or hand back) on the I/O thread, on the channel the message came from."""
        if job.channel is not channel or not channel.is_open:
            # Delivery tags belong to their channel; that one is gone and the broker has
            # already put the message back for redelivery.
            log.warning("message %s finished after its connection was lost; it will be "
                        "delivered again", job.delivery.message_id)
            return
        if job.ack:
            channel.basic_ack(job.delivery_tag)
        else:
            channel.basic_nack(job.delivery_tag, requeue=True)

    @staticmethod
    def _delivery(
        queue: str, method: Basic.Deliver | Basic.GetOk, props: BasicProperties, body: bytes
    ) -> Delivery:
        raw = props.headers or {}
        headers = {
            name: text
            for name, value in raw.items()
            if not _is_broker_header(name) and name != ATTEMPT_HEADER
            and (text := _text(value)) is not None
        }
        # Our retries carry the attempt number; a redelivery by the broker (a consumer died
        # or handed it back) is counted by quorum queues in x-delivery-count.
        if "x-delivery-count" in raw:
            redeliveries = _as_int(raw["x-delivery-count"], 0)
        else:
            redeliveries = 1 if method.redelivered else 0
        attempt = max(1, _as_int(raw.get(ATTEMPT_HEADER), 1)) + max(0, redeliveries)
        try:
            ready_at: float | None = float(headers.pop(READY_AT_HEADER, "") or props.timestamp or 0) or None
        except ValueError:
            ready_at = None
        return Delivery(queue, bytes(body), props.message_id or "", headers, attempt, ready_at=ready_at)

    def _process(self, job: _Job, handler: Handler, policy: RetryPolicy) -> None:
        """Run the handler in the worker thread and park the message if it failed.

        Sets `job.ack` only when the message is safe: handled, or its retry copy / dead
        letter confirmed by the broker. Otherwise the message is handed back to the broker.
        """
        delivery = job.delivery
        try:
            if delivery.attempt > policy.max_attempts:
                # Only reachable when earlier deliveries never finished (the consumer died
                # mid-handler): a message that kills its consumer must not do so forever.
                self._dead_letter(job, f"delivered {delivery.attempt} times without finishing")
            else:
                if delivery.ready_at is not None:
                    metrics.QUEUE_LAG.labels(delivery.queue).observe(max(0.0, time.time() - delivery.ready_at))
                try:
                    handler(delivery)
                    metrics.HANDLED.labels(delivery.queue, "ok").inc()
                except Reject as exc:
                    log.warning("%s message %s rejected: %s",
                                delivery.queue, delivery.message_id, exc)
                    self._dead_letter(job, str(exc))
                except Exception as exc:  # noqa: BLE001 - any failure of the handler is retried
                    self._failed(job, f"{type(exc).__name__}: {exc}", policy, requested_delay(exc))
            job.ack = True
        except BusError as exc:
            log.error("cannot park failed message %s of %s (%s); handing it back to the broker",
                      delivery.message_id, delivery.queue, exc)
            time.sleep(1.0)  # do not turn a broker problem into a redelivery hot loop
        except BaseException as exc:  # noqa: BLE001 - SystemExit in a handler thread
            log.error("handler for %s ended with %r; handing the message back",
                      delivery.queue, exc)

    def _failed(self, job: _Job, error: str, policy: RetryPolicy, requested: float | None) -> None:
        delivery = job.delivery
        now = time.time()
        try:
            since = float(delivery.headers.get(FAILING_SINCE_HEADER) or now)
        except ValueError:
            since = now
        if policy.exhausted(delivery.attempt, since, now):
            log.error("%s message %s failed for good after %d attempts: %s",
                      delivery.queue, delivery.message_id, delivery.attempt, error)
            self._dead_letter(job, error)
            return
        if requested is None and not policy.jitter:
            delay_ms = max(1, round(policy.delay(delivery.attempt) * 1000))
        else:
            delay_ms = ladder_ms(policy.next_delay(delivery.attempt, requested))
            self._extra_delays.setdefault(delivery.queue, set()).add(delay_ms)
        log.warning("%s message %s failed (attempt %d), retry in %.1fs: %s",
                    delivery.queue, delivery.message_id, delivery.attempt, delay_ms / 1000, error)
        headers = {**self._own_headers(job), ATTEMPT_HEADER: str(delivery.attempt + 1),
                   ERROR_HEADER: error[:_MAX_ERROR_CHARS], FAILING_SINCE_HEADER: repr(since)}
        props = self._properties(delivery.message_id, headers, job.properties.content_type, delay_ms / 1000)
        metrics.HANDLED.labels(delivery.queue, "retry").inc()
        self._send(delivery.queue, self.topology(delivery.queue).retry(delay_ms),
                   delivery.body, props, delay_ms=delay_ms)

    def _dead_letter(self, job: _Job, error: str) -> None:
        delivery = job.delivery
        metrics.HANDLED.labels(delivery.queue, "dead").inc()
        metrics.DEAD_LETTERED.labels(delivery.queue).inc()
        headers = {**self._own_headers(job), ERROR_HEADER: error[:_MAX_ERROR_CHARS],
                   ATTEMPTS_HEADER: str(delivery.attempt)}
        if FAILING_SINCE_HEADER in delivery.headers:
            headers[FAILING_SINCE_HEADER] = delivery.headers[FAILING_SINCE_HEADER]
        props = self._properties(delivery.message_id, headers, job.properties.content_type)
        self._send(delivery.queue, self.topology(delivery.queue).dead, delivery.body, props)

    @staticmethod
    def _own_headers(job: _Job) -> dict[str, str]:
        """The publisher's headers, to carry over onto a retry copy or dead letter."""
        return caller_headers(job.delivery.headers)


@dataclass
class _Worker:
    """The thread that runs one consumer's handler, away from the connection's I/O loop.

    It lives as long as the `consume` call (across reconnects), so the handler's own
    `publish` calls reuse one publishing connection. `busy` is read and written only by the
    consumer's I/O thread: set on submit, cleared when the finished job is collected.
    """

    bus: AmqpBus
    queue: str
    handler: Handler
    policy: RetryPolicy
    busy: bool = False
    _jobs: queue_module.Queue[_Job | None] = field(default_factory=queue_module.Queue)
    _done: deque[_Job] = field(default_factory=deque)
    _thread: threading.Thread | None = None

    def submit(self, job: _Job) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"herald-handler-{self.queue}", daemon=True
            )
            self._thread.start()
        self.busy = True
        self._jobs.put(job)

    def finished(self) -> list[_Job]:
        jobs = []
        while self._done:
            jobs.append(self._done.popleft())
            self.busy = False
        return jobs

    def close(self) -> None:
        """Let a running handler finish, then end the thread."""
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join()

    def _run(self) -> None:
        try:
            while (job := self._jobs.get()) is not None:
                self.bus._process(job, self.handler, self.policy)  # noqa: SLF001
                self._done.append(job)
                with contextlib.suppress(Exception):  # closed: the I/O loop is gone anyway
                    job.connection.add_callback_threadsafe(lambda: None)  # wake the I/O loop
        finally:
            self.bus._drop_publisher()  # noqa: SLF001
