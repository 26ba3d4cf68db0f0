"""gunicorn's threaded worker, made fit for a public webhook endpoint: a waiting client holds
no thread.

gunicorn's `gthread` hands a connection to a request thread as soon as its first byte is
there, and the thread then reads the request with blocking calls. A client that sends its
headers or body a byte now and then (slowloris) holds that thread until it is done or cut
off, and a few dozen such clients hold every thread of every worker: real deliveries queue
behind them. A read deadline alone does not fix that: with 96 slow clients and 32 threads,
a delivery still waits for the slow ones' deadlines to pass, longer than the 10 s GitHub
waits for an answer.

So this worker reads each request in its event loop (the one that accepts connections),
into a buffer, and gives it to a thread only when it is complete, or when gunicorn's parser
can answer it without the rest (receiver.framing decides which). The thread then parses
and serves bytes already in memory. A slow client costs a buffer and a poller entry; the
threads only ever serve requests that are all there. Along with that:

- a read deadline counted from the connection's accept (or, on a kept-alive connection,
  from the first byte of the next request): the request line, headers and body must all
  arrive within `HERALD_READ_TIMEOUT` seconds (default 10), or the client is disconnected,
  abruptly (it would not read an answer either), and a warning is logged. It bounds the
  memory slow clients hold, and the rare request handed over before its body (see
  receiver.framing) is read by its thread within what is left of it;
- `Expect: 100-continue` is answered by the event loop when the headers are in, so such a
  client sends its body without holding a thread either (gunicorn's own "100 Continue",
  written later by the thread, is then not sent twice);
- requests gunicorn refuses before the app runs (two Content-Length headers, an invalid
  one, Content-Length with Transfer-Encoding, oversize headers, ...) are answered with the
  receiver's JSON error body naming the problem, and the connection is closed;
- closing a connection after its response does not wait in the event loop: gthread lingers
  there (up to 2 s) for the client to close its side, during which the worker accepts
  nothing. Here the socket is half-closed and left to the poller.

This is the worker of `herald serve`, and `web`'s with HERALD_WORKER_CLASS set to it. `web`
and `herald receiver` run receiver.gevent_worker by default: gevent monkeypatches the whole
process, which suits a process that only serves the receiver, but not `herald serve`, which
runs the reconciler and notifier (threads, subprocesses, pika, the Kubernetes client) in the
same process as this worker. Reading requests in the event loop gives the property that
matters for a public endpoint, a waiting client holds no thread, to the worker gunicorn
already runs.

With TLS terminated by gunicorn itself (`certfile`), the TLS socket must own the raw one, so
this worker behaves as plain gthread; terminate TLS at the proxy or load balancer instead.

Use: `worker_class = "receiver.gunicorn_worker.HeraldThreadWorker"` (receiver.gunicorn_config's
SERVE_WORKER_CLASS).
"""

from __future__ import annotations

import errno
import json
import math
import os
import selectors
import socket
import time
from functools import partial
from typing import Any

from gunicorn import util
from gunicorn.http import body as http_body
from gunicorn.http import errors as http_errors
from gunicorn.workers import gthread

from herald.logs import printable, set_correlation
from herald.settings import Settings
from receiver.framing import READY, RequestScanner

DEFAULT_READ_TIMEOUT = 10.0
# How long a closing connection may take to say goodbye (as gunicorn's close_graceful).
LINGER_SECONDS = 2.0
_LINGER_MAX_BYTES = 64 * 1024
# Bytes read from one connection per readiness event, so one fast sender cannot hold the
# event loop while others wait.
_READ_PER_EVENT = 256 * 1024
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
# Header sections are read ahead up to this size; a longer one goes to a thread, whose parser
# refuses it or reads on (webhook senders send a few KB).
_HEAD_LIMIT = 64 * 1024
# Bytes a worker holds for requests it is still reading. Past it, requests go to threads as
# soon as their headers are in, as plain gthread does: many clients each sending a large body
# slowly then cost threads, not unbounded memory.
PREREAD_BUDGET = 64 * 1024 * 1024


def read_timeout_from_env() -> float:
    value = os.environ.get("HERALD_READ_TIMEOUT", "")
    return float(value) if value.strip() else DEFAULT_READ_TIMEOUT


def recv_within(sock: Any, size: int, flags: tuple[int, ...], deadline: float) -> bytes | None:
    """Up to `size` bytes from a blocking `sock` by `deadline` (time.monotonic()), or None
    once it has passed."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        return None
    sock.settimeout(remaining)
    try:
        return sock.recv(size, *flags)
    except TimeoutError:  # socket.timeout
        return None
    finally:
        sock.settimeout(None)


class DeadlineSocket:
    """A client socket whose reads of one request all end by its deadline (None: none), in
    either worker (this one's PrereadSocket, receiver.gevent_worker's KeepAliveSocket).

    When the deadline has passed while gunicorn reads the request line and headers, `recv`
    reports end of stream (gunicorn drops such a client quietly); once the application reads
    the body (`in_body`), it raises TimeoutError, so that a body cut short is an error (the
    app answers 400), never a shorter body to verify and act on. `expired` tells the worker
    it was a timeout. Writing the response ends the deadline. Everything else is the
    socket's own.
    """

    __slots__ = ("_deadline", "_sock", "expired", "in_body")

    def __init__(self, sock: Any, deadline: float | None = None) -> None:
        self._sock = sock
        self._deadline = deadline
        self.expired = False
        self.in_body = False  # the application is reading: a timeout must raise

    @property
    def raw(self) -> Any:
        return self._sock

    def recv(self, size: int, *flags: int) -> bytes:
        deadline = self._deadline
        if deadline is None:
            return self._sock.recv(size, *flags)
        data = recv_within(self._sock, size, flags, deadline)
        if data is not None:
            return data
        self.expired = True
        if self.in_body:
            raise TimeoutError("request body not received in time")
        return b""

    def sendall(self, data: bytes, *flags: int) -> None:
        self._deadline = None  # the response has started: the request was read in time
        self._sock.sendall(data, *flags)

    def send(self, data: bytes, *flags: int) -> int:
        if data != CONTINUE:  # "100 Continue" asks for the body, which is still to be read in time
            self._deadline = None
        return self._sock.send(data, *flags)

    def fileno(self) -> int:
        return self._sock.fileno()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class PrereadSocket(DeadlineSocket):
    """A client socket as the request thread sees it: first the bytes the event loop read
    ahead, then the socket itself, within the request's deadline (from `arm()`)."""

    __slots__ = ("_off", "_pending", "continue_sent")

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(sock)
        self._pending: bytearray | bytes = b""  # read ahead by the event loop, not yet taken by the parser
        self._off = 0
        self.continue_sent = False  # the event loop answered "Expect: 100-continue"

    @property
    def buffered(self) -> int:
        return len(self._pending) - self._off

    @property
    def armed(self) -> bool:
        return self._deadline is not None

    def pending(self) -> bytearray | bytes:
        """What was read ahead and not yet taken (for the event loop's scanner)."""
        if self._off:
            self._pending, self._off = self._pending[self._off:], 0
        return self._pending

    def fill(self, limit: int = _READ_PER_EVENT) -> bool:
        """Read what the (non-blocking) socket has, up to `limit` bytes; True at end of stream."""
        if not isinstance(self._pending, bytearray):
            self._pending = bytearray(self.pending())
        got = 0
        while got < limit:
            try:
                data = self._sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return False
            except OSError:  # reset: nothing more will come
                return True
            if not data:
                return True
            self._pending += data
            got += len(data)
        return False

    def arm(self, deadline: float) -> None:
        """The request goes to a thread: what was read is frozen, the deadline applies."""
        self._pending = bytes(self.pending())
        self._deadline = None if math.isinf(deadline) else deadline
        self.expired = False
        self.in_body = False

    def disarm(self) -> None:
        self._deadline = None

    def recv(self, size: int, *flags: int) -> bytes:
        if self._off < len(self._pending):
            data = bytes(self._pending[self._off:self._off + size])
            self._off += len(data)
            if self._off >= len(self._pending):
                self._pending, self._off = b"", 0
            return data
        return super().recv(size, *flags)

    def send(self, data: bytes, *flags: int) -> int:
        if self.continue_sent and data == CONTINUE:
            self.continue_sent = False  # gunicorn's own: the client has had it already
            return len(data)
        return super().send(data, *flags)


def client_error_answer(exc: BaseException) -> tuple[int, str, str] | None:
    """(status, reason, message) for a request gunicorn's parser refused, or None when the
    fault is not the client's (gunicorn answers those itself, as a 500)."""
    if isinstance(exc, (http_errors.InvalidResponseHeader, http_errors.InvalidResponseHeaderName,
                        http_errors.ConfigurationProblem)) or not isinstance(exc, http_errors.ParseException):
        return None
    if isinstance(exc, http_errors.InvalidHeader) and exc.hdr == "CONTENT-LENGTH":
        return 400, "Bad Request", ("invalid Content-Length: repeated, not a number, or sent with "
                                    "Transfer-Encoding (RFC 9112 section 6.3)")
    if isinstance(exc, http_errors.InvalidHeader) and exc.hdr == "TRANSFER-ENCODING":
        return 400, "Bad Request", ("invalid Transfer-Encoding: a request body must be chunked, once, "
                                    "over HTTP/1.1 (RFC 9112 section 6.3)")
    if isinstance(exc, http_errors.UnsupportedTransferCoding):
        return 501, "Not Implemented", "unsupported transfer coding (only chunked is accepted)"
    if isinstance(exc, http_errors.LimitRequestLine):
        return 414, "URI Too Long", "request line too long"
    if isinstance(exc, http_errors.LimitRequestHeaders):
        return 431, "Request Header Fields Too Large", f"request headers too large: {exc}"
    if isinstance(exc, http_errors.ExpectationFailed):
        return 417, "Expectation Failed", "unsupported Expect header (only 100-continue)"
    if isinstance(exc, http_errors.ForbiddenProxyRequest):
        return 403, "Forbidden", "PROXY protocol line from an address not allowed to send one"
    return 400, "Bad Request", f"malformed request: {printable(str(exc), 200)}"


def send_client_error(log: Any, client: Any, addr: Any, exc: BaseException) -> bool:
    """Answer a request gunicorn's parser refused with the receiver's JSON error body naming
    the problem (the connection is then closed); False when the fault is not the client's."""
    answer = client_error_answer(exc)
    if answer is None:
        return False
    status, reason, message = answer
    log.warning("client %s: %s (%d)", peer(addr), message, status)
    body = json.dumps({"error": message}).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    try:
        client.sendall(head + body)
    except OSError:
        pass  # the client is gone
    return True


class HeraldThreadWorker(gthread.ThreadWorker):
    """gthread that reads requests in its event loop before a thread serves them (see above)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.read_timeout = read_timeout_from_env()
        self.body_limit = Settings.from_env().max_body  # HERALD_MAX_BODY, as the app reads it
        # Connections whose request the event loop is reading → (deadline, scanner).
        self._reading: dict[Any, tuple[float, RequestScanner]] = {}
        self._preread_bytes = 0  # buffered in `_reading`, against PREREAD_BUDGET
        # Never more than gunicorn's parser reads of a header section before it refuses it (431).
        cfg = self.cfg
        self.head_limit = min(_HEAD_LIMIT, cfg.limit_request_line + 4
                              + cfg.limit_request_fields * (cfg.limit_request_field_size + 2))
        self._lingering: dict[socket.socket, float] = {}  # closing sockets → when to give up

    @property
    def prereads(self) -> bool:
        return not self.cfg.is_ssl

    def init_process(self) -> None:
        if self.cfg.is_ssl:
            self.log.warning("TLS terminated by gunicorn: requests are read by request threads, so slow "
                             "clients can hold them; terminate TLS in front of Herald instead")
        super().init_process()

    # -- reading requests in the event loop ------------------------------------------------

    def accept(self, listener: socket.socket) -> None:
        if not self.prereads:
            super().accept(listener)
            return
        try:
            client_sock, client_addr = listener.accept()
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        conn = gthread.TConn(self.cfg, client_sock, client_addr, listener.getsockname())  # non-blocking
        conn.sock = PrereadSocket(conn.sock)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_request_bytes, conn))
        self._start_reading(conn)

    def on_client_socket_readable(self, conn: Any, client: Any) -> None:
        """A kept-alive connection sends its next request: read it here, not in a thread."""
        if not isinstance(conn.sock, PrereadSocket):
            super().on_client_socket_readable(conn, client)
            return
        self.keepalived_conns.remove(conn)
        self.poller.modify(conn.sock, selectors.EVENT_READ, partial(self._on_request_bytes, conn))
        self._start_reading(conn)

    def _start_reading(self, conn: Any) -> None:
        deadline = time.monotonic() + self.read_timeout if self.read_timeout > 0 else math.inf
        scanner = RequestScanner(self.body_limit, head_limit=self.head_limit)
        self._reading[conn] = (deadline, scanner)
        self._preread_bytes += conn.sock.buffered  # a pipelined request read with the last one
        self._read_some(conn)

    def _on_request_bytes(self, conn: Any, _sock: Any) -> None:
        if conn in self._reading:
            self._read_some(conn)

    def _read_some(self, conn: Any) -> None:
        sock: PrereadSocket = conn.sock
        deadline, scanner = self._reading[conn]
        before = sock.buffered
        eof = sock.fill()
        self._preread_bytes += sock.buffered - before
        decision = scanner.feed(sock.pending()) if sock.buffered else None
        if (decision == READY or (eof and scanner.head_complete)
                or (self._preread_bytes > PREREAD_BUDGET and scanner.head_complete)):
            # Complete, or the client is done sending (a body shorter than announced is then
            # the parser's and the app's to answer, 400).
            self._stop_reading(conn)
            conn.data_ready = True
            sock.arm(deadline)
            self.enqueue_req(conn)
        elif eof:
            # Gone before its request's headers were all sent: nothing to answer.
            self._stop_reading(conn)
            self._drop(conn)
        elif scanner.expect_continue and scanner.head_complete and not sock.continue_sent:
            try:
                sock.raw.send(CONTINUE)  # 25 bytes into an empty send buffer
                sock.continue_sent = True
            except OSError:
                pass  # it will send its body anyway, after its own timeout

    def _stop_reading(self, conn: Any) -> None:
        if self._reading.pop(conn, None) is not None:
            self._preread_bytes -= conn.sock.buffered
        try:
            self.poller.unregister(conn.sock)
        except (KeyError, ValueError, OSError):
            pass

    def _drop(self, conn: Any) -> None:
        self.nr_conns -= 1
        try:
            conn.sock.raw.close()  # abruptly: a graceful close would wait on this client again
        except OSError:
            pass

    def murder_keepalived(self, force: bool = False) -> None:
        super().murder_keepalived(force)
        now = time.monotonic()
        if self._reading:
            for conn, (deadline, _scanner) in list(self._reading.items()):
                if force or deadline <= now:
                    if not force:
                        self.log.warning("client %s did not send its request within %gs; disconnected",
                                         peer(conn.client), self.read_timeout)
                    self._stop_reading(conn)
                    self._drop(conn)
        if self._lingering:
            for sock, deadline in list(self._lingering.items()):
                if force or deadline <= now:
                    self._end_linger(sock)

    # -- serving a request in a thread -----------------------------------------------------

    def handle(self, conn: Any) -> Any:
        set_correlation("")  # threads are reused: gunicorn's lines must not carry the last delivery's id
        sock = conn.sock
        if not isinstance(sock, PrereadSocket):
            return super().handle(conn)
        if not sock.armed and self.read_timeout > 0:
            # Handed over without the event loop reading it: gthread does so when a pipelined
            # request is already in its parser's buffer. Whatever of it is still to come must
            # come within the deadline too, or a client could hold this thread by stopping
            # half-way through its second request.
            sock.arm(time.monotonic() + self.read_timeout)
        try:
            result = super().handle(conn)
        finally:
            sock.disarm()
        if sock.expired:
            self.log.warning("client %s did not send its request within %gs; disconnected",
                             peer(conn.client), self.read_timeout)
            try:
                sock.raw.close()  # abruptly: a graceful close would wait on this client again
            except OSError:
                pass
            return False
        return result

    def handle_request(self, req: Any, conn: Any) -> Any:
        if isinstance(conn.sock, PrereadSocket):
            conn.sock.in_body = True  # headers are in; the application reads the body
            # A body the app did not read to its end (a 413, a 404 with a body) or could not
            # read (a malformed chunk) ends the connection, and the answer says so: gthread
            # would drain the rest in this thread, for as long as the client takes to send it.
            # The close itself lingers in the event loop (finish_request), not here.
            asked = req.should_close
            req.should_close = lambda: asked() or body_unfinished(req)
        return super().handle_request(req, conn)

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        """Requests gunicorn refuses get the receiver's JSON error body, naming the problem."""
        if not send_client_error(self.log, client, addr, exc):
            super().handle_error(req, client, addr, exc)

    # -- closing without blocking the event loop -------------------------------------------

    def finish_request(self, conn: Any, fs: Any) -> None:
        if self.cfg.is_ssl:  # a TLS socket closes through its own protocol: gthread's way
            super().finish_request(conn, fs)
            return
        try:
            closing = not fs.cancelled() and fs.exception() is None and not fs.result()
        except Exception:  # noqa: BLE001 - let gthread deal with it
            closing = False
        if not closing:
            super().finish_request(conn, fs)
            sock = conn.sock
            if isinstance(sock, PrereadSocket) and sock.buffered and conn in self.keepalived_conns:
                # A pipelined request is already in our buffer: the socket may never be
                # readable again for it.
                self.on_client_socket_readable(conn, sock)
            return
        self.nr_conns -= 1
        self._linger_close(conn.sock.raw if isinstance(conn.sock, PrereadSocket) else conn.sock)

    def _linger_close(self, sock: socket.socket) -> None:
        """Half-close, then let the poller wait for the client's end (RFC 9112 §9.6)."""
        if sock.fileno() < 0:
            return  # closed already (a client that timed out)
        try:
            sock.shutdown(socket.SHUT_WR)
            sock.setblocking(False)
            self.poller.register(sock, selectors.EVENT_READ, self._on_lingering_readable)
        except (OSError, ValueError, KeyError):
            util.close(sock)
            return
        self._lingering[sock] = time.monotonic() + LINGER_SECONDS

    def _on_lingering_readable(self, sock: socket.socket) -> None:
        try:
            for _ in range(_LINGER_MAX_BYTES // 4096):
                if not sock.recv(4096):
                    break  # the client closed its side: done
            # else: it keeps sending; it has had enough of our patience
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                return  # nothing more for now: wait for its end or the deadline
        self._end_linger(sock)

    def _end_linger(self, sock: socket.socket) -> None:
        self._lingering.pop(sock, None)
        try:
            self.poller.unregister(sock)
        except (KeyError, ValueError, OSError):
            pass
        util.close(sock)


def body_unfinished(req: Any) -> bool:
    """Whether part of the request's body is still unread, or its framing broke while read."""
    body = getattr(req, "body", None)
    if body is None:
        return False
    if getattr(body, "failed", False):
        return True
    reader = body.reader
    if isinstance(reader, http_body.LengthReader):
        return reader.length > 0
    if isinstance(reader, http_body.ChunkedReader):
        return reader.parser is not None
    return False


def peer(client: Any) -> str:
    if isinstance(client, tuple) and client:
        return str(client[0])
    return str(client or "-")

