"""Publisher confirms shared by every thread of a process: one connection, batched confirms.

`AmqpBus.publish` promises to return only once the broker confirmed the message. Waiting for
each confirm on a connection of one's own (what a blocking pika channel does) caps a process
at (threads / confirm latency) messages per second, and a quorum queue's confirm comes after
an fsync: many milliseconds. Yet the broker can confirm many messages with one `basic.ack`
(`multiple=True`) after one fsync, if they are in flight together.

So a process has one `ConfirmPublisher`: a single AMQP connection driven by its own I/O
thread (pika's SelectConnection; pika connections are not thread-safe, so only that thread
touches it). A caller hands its message over and waits on the message's own lock; the I/O
thread publishes everything handed over since it last looked, in one write, and each
`basic.ack` from the broker releases every caller it covers. No caller returns before the
broker confirmed *its* message; batching only means that many wait for the same fsync.

What a caller can be told instead (all `PublishFailed`, mapped to BusUnavailable/BusError by
the bus, which decides what to retry):

- `Unroutable`: returned by the broker (`mandatory`), e.g. its queue was deleted;
- `Nacked`: the broker refused it;
- `ChannelClosed`: the broker closed the channel (a declaration with other arguments: 406,
  access refused: 403, ...); every message in flight on that channel fails with it;
- `ConnectionLost`: the connection dropped with the message unconfirmed. `reused` says
  whether the connection was already open when the message was handed over (a stale
  connection is worth one transparent retry; a fresh one that fails is an outage);
- `ConnectFailed`: no connection could be opened (refused, handshake timed out);
- `ConfirmTimeout`: no confirm within `confirm_timeout`. The I/O thread then cuts the
  connection (a broker that answers nothing is frozen or partitioned), which fails every
  other unconfirmed message at once and makes the next publish reconnect;
- `PublisherClosed`: `close()` was called.

Ordering: messages go out in the order they were handed over; declarations a message needs
(once per queue per publisher) are sent right before it on the same channel, without waiting
for their reply (AMQP processes a channel's methods in order, and a declaration that fails
closes the channel, failing the message behind it).

Fork safety: the I/O thread is started on first use and belongs to the process that started
it; the bus makes a new publisher when it finds itself in a child process.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import pika
from pika import exceptions as pe
from pika import frame
from pika.adapters.select_connection import IOLoop, SelectConnection
from pika.adapters.utils.connection_workflow import AMQPConnectionWorkflowFailed
from pika.spec import Basic, BasicProperties

log = logging.getLogger(__name__)

# How often the I/O thread looks for confirms that are overdue.
_CHECK_SECONDS = 0.1
# After a failed connection attempt, publishes fail at once (no new attempt) for this long,
# doubling up to the maximum while the broker stays away: an outage under load would otherwise
# be one connection attempt, and pika's half-dozen log lines, per request.
_RECONNECT_FIRST = 0.1
_RECONNECT_MAX = 0.5  # also how late, at most, publishing resumes once the broker is back
# A graceful close waits this long for the broker's Close-Ok, then cuts the socket.
_CLOSE_SECONDS = 2.0

Declare = Callable[[Any, str, "int | None"], None]  # (channel, queue, delay_ms) -> None


class PublishFailed(Exception):
    """The message was not confirmed by the broker; see the subclasses for why."""


class Unroutable(PublishFailed):
    pass


class Nacked(PublishFailed):
    pass


class ChannelClosed(PublishFailed):
    def __init__(self, reply_code: int, reply_text: str) -> None:
        super().__init__(f"channel closed by the broker: ({reply_code}) {reply_text}")
        self.reply_code = reply_code
        self.reply_text = reply_text


class ConnectionLost(PublishFailed):
    def __init__(self, message: str, *, reused: bool = False) -> None:
        super().__init__(message)
        self.reused = reused


class ConnectFailed(PublishFailed):
    pass


class ConfirmTimeout(PublishFailed):
    pass


class PublisherClosed(PublishFailed):
    pass


class _Message:
    """One handed-over message and the lock its caller waits on (released when settled)."""

    __slots__ = ("abandoned", "body", "declare", "done", "enqueued", "error", "properties",
                 "returned", "reused", "routing_key", "sent_at", "settled")

    def __init__(self, routing_key: str | None, body: bytes, properties: BasicProperties | None,
                 declare: tuple[tuple[str, str, int | None], ...]) -> None:
        self.routing_key = routing_key  # None: a probe, settled as soon as a channel is ready
        self.body = body
        self.properties = properties
        self.declare = declare  # (key, queue, delay_ms) for each declaration it needs
        self.enqueued = time.monotonic()
        self.done = threading.Lock()
        self.done.acquire()
        self.error: PublishFailed | None = None
        self.settled = False
        self.returned = False
        self.reused = False
        self.sent_at = 0.0
        self.abandoned = False  # the caller stopped waiting: do not send it any more

    def settle(self, error: PublishFailed | None = None) -> None:
        if not self.settled:  # only ever called from the I/O thread
            self.settled = True
            self.error = error
            self.done.release()


class ConfirmPublisher:
    """One process's publishing connection; `publish` may be called from any thread."""

    def __init__(
        self,
        parameters: Callable[[], pika.ConnectionParameters],
        declare: Declare,
        *,
        confirm_timeout: float,
        connect_timeout: float,
    ) -> None:
        self._parameters = parameters
        self._declare = declare
        self.confirm_timeout = confirm_timeout
        # How long a caller waits in all, at most: a connection attempt (pika's stack
        # timeout), then the confirm. The I/O thread settles every message well before
        # this unless it is itself stuck; this is the backstop.
        params = parameters()
        connect_budget = max(connect_timeout, float(params.stack_timeout or connect_timeout))
        self.wait_budget = connect_budget + confirm_timeout + 1.0
        self.pid = os.getpid()
        self.failed = False  # set when the I/O loop died of an error

        self._outbox: collections.deque[_Message] = collections.deque()
        self._wake_pending = False
        self._closed = False
        self._start_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._ioloop: IOLoop | None = None

        # Owned by the I/O thread.
        self._connection: SelectConnection | None = None
        self._channel: Any = None  # pika.channel.Channel once in confirm mode
        self._state = "idle"  # idle → connecting → ready; idle again when the connection ends
        self._ready_at = 0.0
        self._pending: collections.OrderedDict[int, _Message] = collections.OrderedDict()
        self._next_tag = 0
        self._method_frames: dict[str, bytes] = {}
        self._declared: set[str] = set()
        self._abort_reason: PublishFailed | None = None
        self._check_timer: Any = None
        # The broker's reachability, as this publisher saw it: one warning when it goes, one
        # line when it is back with the count of publishes that failed in between.
        self._down_since: float | None = None
        self._down_reason = ""
        self._failed_while_down = 0
        self._next_attempt = 0.0  # monotonic: no connection attempt before then
        self._backoff = _RECONNECT_FIRST

    # -- any thread ------------------------------------------------------------------------

    def publish(self, routing_key: str, body: bytes, properties: BasicProperties,
                declare: Iterable[tuple[str, str, int | None]] = ()) -> None:
        """Publish and return once the broker confirmed; raise PublishFailed otherwise."""
        self._wait(_Message(routing_key, body, properties, tuple(declare)))

    def probe(self) -> bool:
        """Whether a confirm channel is open, or can be opened now."""
        try:
            self._wait(_Message(None, b"", None, ()))
        except PublishFailed:
            return False
        return True

    def close(self) -> None:
        """Fail whatever is unconfirmed, close the connection and end the I/O thread."""
        with self._start_lock:
            if self._closed:
                return
            self._closed = True
            thread, ioloop = self._thread, self._ioloop
        if thread is None or ioloop is None or os.getpid() != self.pid:
            return
        try:
            ioloop.add_callback_threadsafe(self._shutdown)
        except Exception:  # noqa: BLE001 - the loop is gone already
            return
        if thread is not threading.current_thread():
            thread.join(_CLOSE_SECONDS + 1.0)

    def _wait(self, message: _Message) -> None:
        ioloop = self._start()
        self._outbox.append(message)
        if not self._wake_pending:
            # One wake-up per batch: the I/O thread clears the flag *before* draining, so a
            # message appended after the drain began finds the flag clear and wakes it again.
            self._wake_pending = True
            try:
                ioloop.add_callback_threadsafe(self._flush)
            except Exception as exc:  # noqa: BLE001 - the loop was closed under us
                self._wake_pending = False
                raise PublisherClosed("the bus is closed") from exc
        if not message.done.acquire(timeout=self.wait_budget):
            message.abandoned = True
            raise ConfirmTimeout(f"no confirm within {self.wait_budget:.1f}s")
        if message.error is not None:
            raise message.error

    def _start(self) -> IOLoop:
        if self._closed:
            raise PublisherClosed("the bus is closed")
        ioloop = self._ioloop
        if ioloop is not None:
            return ioloop
        with self._start_lock:
            if self._closed:
                raise PublisherClosed("the bus is closed")
            if self._ioloop is None:
                ioloop = IOLoop()
                thread = threading.Thread(target=self._run, args=(ioloop,), name="herald-amqp-publisher",
                                          daemon=True)
                self._ioloop, self._thread = ioloop, thread
                thread.start()
            return self._ioloop

    # -- the I/O thread --------------------------------------------------------------------

    def _run(self, ioloop: IOLoop) -> None:
        try:
            ioloop.start()
        except Exception:  # noqa: BLE001 - never die silently with callers waiting
            log.exception("AMQP publisher I/O loop failed; a new publisher takes over")
            self.failed = True
        finally:
            self._fail_all(PublisherClosed("the publisher stopped"))
            if self._connection is not None and not self._connection.is_closed:
                try:
                    self._connection._terminate_stream(None)  # noqa: SLF001
                except Exception:  # noqa: BLE001
                    pass
            ioloop.close()

    def _flush(self) -> None:
        self._wake_pending = False
        if self._closed:
            self._fail_outbox(PublisherClosed("the bus is closed"))
        elif self._state == "ready":
            self._send_outbox()
        elif self._state == "idle" and self._outbox:
            wait = self._next_attempt - time.monotonic()
            if wait > 0:
                self._fail_outbox(ConnectFailed(f"the broker is unreachable ({self._down_reason}); "
                                                f"next attempt in {wait:.1f}s"))
            else:
                self._connect()
        # "connecting": the outbox is sent once the channel is ready

    def _connect(self) -> None:
        self._state = "connecting"
        self._abort_reason = None
        try:
            self._connection = SelectConnection(
                self._parameters(),
                on_open_callback=self._on_connection_open,
                on_open_error_callback=self._on_connection_open_error,
                on_close_callback=self._on_connection_closed,
                custom_ioloop=self._ioloop,
            )
        except Exception as exc:  # noqa: BLE001 - bad parameters, no socket...
            self._state = "idle"
            self._connection = None
            self._broker_down(exc)
            self._fail_outbox(ConnectFailed(f"cannot connect to the broker: {exc!r}"))
            return
        self._schedule_check()

    def _broker_down(self, error: BaseException) -> None:
        """A connection attempt failed: say so once per outage, and hold off the next one."""
        now = time.monotonic()
        self._down_reason = _short(error)
        if self._down_since is None:
            self._down_since = now
            self._failed_while_down = 0
            self._backoff = _RECONNECT_FIRST
            log.warning("the broker cannot be reached (%s): publishing fails (webhooks are answered 503) "
                        "until it is back; trying again every %gs at most", self._down_reason, _RECONNECT_MAX)
        else:
            self._backoff = min(_RECONNECT_MAX, self._backoff * 2)
        self._next_attempt = now + self._backoff

    def _broker_back(self) -> None:
        if self._down_since is not None:
            log.warning("the broker is reachable again after %.1fs; %d publish(es) failed meanwhile",
                        time.monotonic() - self._down_since, self._failed_while_down)
            self._down_since = None
        self._next_attempt = 0.0

    def _on_connection_open(self, connection: SelectConnection) -> None:
        connection.channel(on_open_callback=self._on_channel_open)

    def _on_connection_open_error(self, connection: SelectConnection, error: BaseException) -> None:
        self._state = "idle"
        self._connection = None
        self._broker_down(error)
        self._fail_outbox(ConnectFailed(f"cannot connect to the broker: {_short(error)}"))

    def _on_channel_open(self, channel: Any) -> None:
        channel.add_on_close_callback(self._on_channel_closed)
        channel.add_on_return_callback(self._on_return)
        channel.confirm_delivery(self._on_confirm, callback=lambda _frame: self._on_confirm_mode(channel))

    def _on_confirm_mode(self, channel: Any) -> None:
        if self._connection is None or channel.is_closed:
            return
        self._channel = channel
        self._next_tag = 0  # delivery tags count the channel's publishes from 1
        self._method_frames: dict[str, bytes] = {}  # Basic.Publish frames by routing key
        self._state = "ready"
        self._ready_at = time.monotonic()
        self._broker_back()
        self._send_outbox()

    def _send_outbox(self) -> None:
        """Publish everything handed over, as one write to the socket.

        pika's `basic_publish` hands the transport three buffers per message, and the
        transport sends each with its own `send()`, every one releasing the GIL: in a
        process whose other threads are busy running requests, getting it back can take a
        switch interval (5 ms) each time. The frames are the same; they just go out
        together. (Declarations still go through pika: they are RPCs it must track.)
        """
        channel, connection = self._channel, self._connection
        if channel is None or connection is None or not channel.is_open:
            return  # closing: the close callbacks settle or resend what is waiting
        number = channel.channel_number
        max_body = connection._body_max_length  # noqa: SLF001 - frame_max minus overhead
        frames: list[bytes] = []
        now = time.monotonic()
        while self._outbox:
            message = self._outbox.popleft()
            if message.routing_key is None:  # a probe: we are connected
                message.settle()
                continue
            if message.abandoned:
                continue
            missing = [d for d in message.declare if d[0] not in self._declared]
            if missing:
                self._emit(connection, frames)  # what came before goes first
                try:
                    for key, queue, delay_ms in missing:
                        self._declare(channel, queue, delay_ms)
                        self._declared.add(key)
                except (pe.AMQPError, OSError) as exc:
                    message.settle(ConnectionLost(f"cannot declare: {exc!r}", reused=True))
                    continue
            method = self._method_frames.get(message.routing_key)
            if method is None:
                method = frame.Method(number, Basic.Publish(exchange="", routing_key=message.routing_key,
                                                            mandatory=True)).marshal()
                self._method_frames[message.routing_key] = method
            body = message.body
            frames.append(method)
            frames.append(frame.Header(number, len(body), message.properties).marshal())
            for start in range(0, len(body), max_body):
                frames.append(frame.Body(number, body[start:start + max_body]).marshal())
            self._next_tag += 1
            message.sent_at = now
            message.reused = message.enqueued >= self._ready_at
            self._pending[self._next_tag] = message
        if self._pending:
            self._emit(connection, frames)
            self._schedule_check()

    @staticmethod
    def _emit(connection: SelectConnection, frames: list[bytes]) -> None:
        if frames:
            connection._output_marshaled_frames([b"".join(frames)])  # noqa: SLF001
            frames.clear()

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        nack = isinstance(method, Basic.Nack)
        tag = method.delivery_tag
        settled: list[_Message] = []
        if method.multiple:
            pending = self._pending
            while pending:
                first = next(iter(pending))
                if first > tag:
                    break
                settled.append(pending.popitem(last=False)[1])
        else:
            message = self._pending.pop(tag, None)
            if message is not None:
                settled.append(message)
        for message in settled:
            if nack:
                message.settle(Nacked(f"the broker refused the message to {message.routing_key}"))
            elif message.returned:
                message.settle(Unroutable(f"message to {message.routing_key} was unroutable"))
            else:
                message.settle()

    def _on_return(self, _channel: Any, method: Basic.Return, properties: BasicProperties,
                   body: bytes) -> None:
        # A return precedes the ack of its message. It names no delivery tag, so find the
        # oldest unconfirmed message it can be.
        for message in self._pending.values():
            if (not message.returned and message.routing_key == method.routing_key
                    and message.body == body
                    and message.properties.message_id == properties.message_id):
                message.returned = True
                self._declared.difference_update(key for key, _, _ in message.declare)
                return
        log.warning("broker returned an unknown message to %s", method.routing_key)

    def _on_channel_closed(self, channel: Any, reason: BaseException) -> None:
        connection = self._connection
        if connection is None or not connection.is_open or self._closed:
            return  # the connection is going: its close callback settles everything
        if self._channel is None:
            # Closed before it reached confirm mode: no point trying again and again.
            self._abort_reason = ConnectFailed(f"cannot open a publishing channel: {reason!r}")
            connection._terminate_stream(pe.AMQPConnectionError(str(self._abort_reason)))  # noqa: SLF001
            return
        if channel is not self._channel:
            return
        self._channel = None
        self._declared.clear()
        if isinstance(reason, pe.ChannelClosedByBroker):
            self._fail_pending(ChannelClosed(reason.reply_code, reason.reply_text))
        else:
            self._fail_pending(None, reason)
        self._state = "connecting"  # a new channel on the same connection
        connection.channel(on_open_callback=self._on_channel_open)

    def _on_connection_closed(self, connection: SelectConnection, reason: BaseException) -> None:
        if connection is not self._connection:
            return
        self._connection = None
        self._channel = None
        self._state = "idle"
        if self._abort_reason is not None:
            error, self._abort_reason = self._abort_reason, None
            self._fail_pending(error)
            self._fail_outbox(error)
        else:
            log.info("publishing connection closed: %r", reason)
            self._fail_pending(None, reason)
        if self._closed:
            self._fail_outbox(PublisherClosed("the bus is closed"))
            self._ioloop.stop()
        elif self._outbox:
            self._connect()  # messages handed over but never sent get a fresh connection

    def _schedule_check(self) -> None:
        if self._check_timer is None:
            self._check_timer = self._ioloop.call_later(_CHECK_SECONDS, self._check)

    def _check(self) -> None:
        """Cut a connection whose broker stopped confirming (or never finished opening)."""
        self._check_timer = None
        now = time.monotonic()
        overdue: PublishFailed | None = None
        if self._pending:
            oldest = next(iter(self._pending.values()))
            if now - oldest.sent_at > self.confirm_timeout:
                overdue = ConfirmTimeout(f"no confirm from the broker within {self.confirm_timeout}s")
        if overdue is None and self._state == "connecting" and self._outbox:
            if now - self._outbox[0].enqueued > self.wait_budget - 1.0:
                overdue = ConnectFailed("the broker did not finish opening a channel")
        if overdue is not None and self._connection is not None:
            log.warning("cutting the publishing connection: %s", overdue)
            self._abort_reason = overdue
            self._connection._terminate_stream(pe.AMQPConnectionError(str(overdue)))  # noqa: SLF001
            return
        if self._pending or self._state == "connecting":
            self._schedule_check()

    def _shutdown(self) -> None:
        self._fail_outbox(PublisherClosed("the bus is closed"))
        connection = self._connection
        if connection is None or connection.is_closed:
            self._fail_pending(PublisherClosed("the bus is closed"))
            self._ioloop.stop()
            return
        self._abort_reason = PublisherClosed("the bus is closed")
        if connection.is_open:
            try:
                connection.close()
            except pe.AMQPError:
                pass
        else:
            connection._terminate_stream(None)  # noqa: SLF001 - still opening

        def cut() -> None:
            if self._connection is not None:
                self._connection._terminate_stream(None)  # noqa: SLF001
            self._ioloop.stop()

        self._ioloop.call_later(_CLOSE_SECONDS, cut)

    def _fail_pending(self, error: PublishFailed | None, reason: BaseException | None = None) -> None:
        pending, self._pending = self._pending, collections.OrderedDict()
        for message in pending.values():
            message.settle(error or ConnectionLost(
                f"connection lost before the confirm: {reason!r}", reused=message.reused))

    def _fail_outbox(self, error: PublishFailed) -> None:
        if self._down_since is not None:
            self._failed_while_down += sum(m.routing_key is not None for m in self._outbox)  # not probes
        while self._outbox:
            self._outbox.popleft().settle(error)

    def _fail_all(self, error: PublishFailed) -> None:
        self._fail_pending(error)
        self._fail_outbox(error)


def _short(error: BaseException) -> str:
    """One line for a connection failure; pika's own repr nests the whole workflow."""
    for _ in range(5):  # pika nests: ConnectionError(WorkflowFailed([..., SocketConnectError(OSError)]))
        if isinstance(error, AMQPConnectionWorkflowFailed) and error.exceptions:
            error = error.exceptions[-1]
        elif isinstance(getattr(error, "exception", None), BaseException):
            error = error.exception
        elif error.args and isinstance(error.args[0], BaseException):
            error = error.args[0]
        else:
            break
    text = str(error) or type(error).__name__
    return text if len(text) <= 200 else text[:197] + "..."
