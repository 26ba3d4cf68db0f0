"""gunicorn's threaded worker with the time limits a public webhook endpoint needs.

gunicorn's `gthread` worker reads a request with blocking socket calls and no time limit once
its first byte arrived: a client that sends its headers (or body) a byte every few seconds
holds a worker thread for as long as it likes, and a few dozen such clients (slowloris) hold
them all. This worker adds three things, and is otherwise `gthread`:

- a read deadline: from the moment a thread takes up a request, the request line, headers and
  body must all arrive within `HERALD_READ_TIMEOUT` seconds (default 10). A client that is
  too slow is disconnected, abruptly (no response: it would not read one either), and a
  warning is logged;
- no thread waits for a new connection's first byte: gthread lets a thread wait up to 5 s
  for it, so connections that send nothing would tie up every thread. Here a connection
  with nothing to read yet goes to the worker's poller at once, and is closed if nothing
  comes within the keep-alive timeout;
- closing a connection after its response ("Connection: close", or not kept alive) does not
  wait on the worker's main loop: gthread lingers there (up to 2 s) for the client to
  close its side, during which the worker accepts and dispatches nothing. Here the socket is
  half-closed and left to the poller, which closes it when the client is done or after 2 s.

With TLS terminated by gunicorn itself (`certfile`), the read deadline is not applied (the
TLS socket must own the raw one); terminate TLS at the proxy or load balancer instead.

Use: `worker_class = "receiver.gunicorn_worker.HeraldThreadWorker"` (gunicorn.conf.py does).
"""

from __future__ import annotations

import errno
import os
import selectors
import socket
import time
from typing import Any

from gunicorn import util
from gunicorn.workers import gthread

DEFAULT_READ_TIMEOUT = 10.0
# How long a closing connection may take to say goodbye (as gunicorn's close_graceful).
LINGER_SECONDS = 2.0
_LINGER_MAX_BYTES = 64 * 1024
_DEFER = getattr(gthread, "_DEFER", None)  # gunicorn >= 24: "no data yet, back to the poller"


def read_timeout_from_env() -> float:
    value = os.environ.get("HERALD_READ_TIMEOUT", "")
    return float(value) if value.strip() else DEFAULT_READ_TIMEOUT


class DeadlineSocket:
    """A client socket whose reads fail once the current request's deadline has passed.

    Between `arm()` and the first write of the response, every `recv` is given only the time
    left. When there is none: while gunicorn reads the request line and headers, it reports
    end of stream (gunicorn drops such a client quietly); once the application reads the body,
    it raises TimeoutError, so that a body cut short is an error (werkzeug answers 400), never
    a shorter body to verify and act on. `expired` tells the worker it was a timeout.
    Everything else is the socket's own.
    """

    __slots__ = ("_deadline", "_sock", "expired", "in_body")

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._deadline: float | None = None
        self.expired = False
        self.in_body = False  # the application is reading: a timeout must raise

    @property
    def raw(self) -> socket.socket:
        return self._sock

    def arm(self, deadline: float) -> None:
        self._deadline = deadline
        self.expired = False
        self.in_body = False

    def disarm(self) -> None:
        self._deadline = None

    def fileno(self) -> int:
        return self._sock.fileno()

    def recv(self, size: int, *flags: int) -> bytes:
        deadline = self._deadline
        if deadline is None:
            return self._sock.recv(size, *flags)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return self._expire()
        sock = self._sock
        sock.settimeout(remaining)
        try:
            return sock.recv(size, *flags)
        except TimeoutError:  # socket.timeout
            return self._expire()
        finally:
            sock.settimeout(None)

    def _expire(self) -> bytes:
        self.expired = True
        if self.in_body:
            raise TimeoutError("request body not received in time")
        return b""

    def sendall(self, data: bytes, *flags: int) -> None:
        self._deadline = None  # the response has started: the request was read in time
        self._sock.sendall(data, *flags)

    def send(self, data: bytes, *flags: int) -> int:
        self._deadline = None
        return self._sock.send(data, *flags)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class HeraldThreadWorker(gthread.ThreadWorker):
    """gthread with a request read deadline and non-blocking connection closes (see above)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.read_timeout = read_timeout_from_env()
        self._lingering: dict[socket.socket, float] = {}  # closing sockets → when to give up

    def init_process(self) -> None:
        if self.cfg.is_ssl:
            self.log.warning("HERALD_READ_TIMEOUT is not applied to TLS connections terminated by "
                             "gunicorn; terminate TLS in front of it to protect against slow clients")
        super().init_process()

    # -- reading a request within the deadline ----------------------------------------------

    def enqueue_req(self, conn: Any) -> None:
        if not self.cfg.is_ssl and self.read_timeout > 0 and not isinstance(conn.sock, DeadlineSocket):
            conn.sock = DeadlineSocket(conn.sock)
        super().enqueue_req(conn)

    def handle(self, conn: Any) -> Any:
        if (_DEFER is not None and not conn.initialized and not getattr(conn, "data_ready", True)
                and not conn.wait_for_data(0)):
            return _DEFER  # nothing to read yet: the poller waits for it, not a thread
        sock = conn.sock
        if not isinstance(sock, DeadlineSocket):
            return super().handle(conn)
        sock.arm(time.monotonic() + self.read_timeout)
        try:
            result = super().handle(conn)
        finally:
            sock.disarm()
        if sock.expired:
            self.log.warning("client %s did not send its request within %gs; disconnected",
                             _peer(conn.client), self.read_timeout)
            try:
                sock.raw.close()  # abruptly: a graceful close would wait on this client again
            except OSError:
                pass
            return False
        return result

    def handle_request(self, req: Any, conn: Any) -> Any:
        if isinstance(conn.sock, DeadlineSocket):
            conn.sock.in_body = True  # headers are in; the application reads the body
        return super().handle_request(req, conn)

    # -- closing without blocking the main loop ---------------------------------------------

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
            return
        self.nr_conns -= 1
        self._linger_close(conn.sock.raw if isinstance(conn.sock, DeadlineSocket) else conn.sock)

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

    def murder_keepalived(self, force: bool = False) -> None:
        super().murder_keepalived(force)
        if self._lingering:
            now = time.monotonic()
            for sock, deadline in list(self._lingering.items()):
                if force or deadline <= now:
                    self._end_linger(sock)


def _peer(client: Any) -> str:
    if isinstance(client, tuple) and client:
        return str(client[0])
    return str(client or "-")
