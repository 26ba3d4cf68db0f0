"""gunicorn's gevent worker, made fit for a public webhook endpoint: the worker of `web` and
`herald receiver`.

A webhook is a short burst of Python (verify, parse, route) around a long wait (the broker's
publisher confirm). In gunicorn's threaded worker, each wait hands the GIL and the request to
another OS thread and back: measured in bench/receiver_vs_webhook.py, 30 context switches and
about 1 ms of CPU per request went to those hand-offs, and a busy machine made them slower
still. Under gevent, a worker is one OS thread: a request that waits for its confirm yields to
the next greenlet, and the publisher's I/O loop runs in the same thread. Half the CPU per
request, twice the requests per second, and a waiting connection (a slow client) holds a
greenlet of a few KB, not a thread (bench/RESULTS.md, issue 12).

What this worker adds to gunicorn's `gevent`, as receiver.gunicorn_worker does to `gthread`:

- a read deadline counted from the connection's accept: the request line, headers and body
  must all arrive within `HERALD_READ_TIMEOUT` seconds (default 10), or the client is
  disconnected and a warning is logged. On a kept-alive connection the next request may
  take `keepalive` seconds to start, and then has the same deadline from its first byte.
  gunicorn's own gevent worker only times the wait for the request's headers, with the
  keep-alive timeout, and never the body;
- requests gunicorn refuses before the app runs (two Content-Length headers, an invalid one,
  Content-Length with Transfer-Encoding, oversize headers, ...) are answered with the
  receiver's JSON error body naming the problem, and the connection is closed;
- a body the app did not read to its end (a 413, a 404) ends the connection rather than
  being drained for the next request.

Not for `herald serve`: gevent monkeypatches the whole process, and `herald serve` runs the
reconciler and notifier (threads, subprocesses, the Kubernetes client) in the process that
serves the receiver; it runs receiver.gunicorn_worker.HeraldThreadWorker instead
(receiver.server). With TLS terminated by gunicorn itself (`certfile`), the deadline is
gunicorn's keep-alive timeout for the headers only; terminate TLS in front of Herald.

Use: `worker_class = "receiver.gevent_worker.HeraldGeventWorker"` (receiver.gunicorn_config).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from gunicorn.workers.ggevent import GeventWorker

from herald.logs import set_correlation
from receiver.gunicorn_worker import (
    DeadlineSocket,
    body_unfinished,
    peer,
    read_timeout_from_env,
    recv_within,
    send_client_error,
)


class KeepAliveSocket(DeadlineSocket):
    """A client connection's socket under gevent: each request's reads end by its deadline
    (DeadlineSocket), counted from the accept for the first request. `idle()`, once a response
    is written, lets the next request take `keepalive` seconds to start; its deadline then
    counts from its first byte."""

    __slots__ = ("_idle", "read_timeout")

    def __init__(self, sock: Any, read_timeout: float) -> None:
        super().__init__(sock, time.monotonic() + read_timeout if read_timeout > 0 else None)
        self.read_timeout = read_timeout
        self._idle: float | None = None

    def idle(self, keepalive: float) -> None:
        """The response is written: wait up to `keepalive` seconds for the next request."""
        self._idle, self._deadline, self.in_body = keepalive, None, False

    def recv(self, size: int, *flags: int) -> bytes:
        if self._idle is None:
            return super().recv(size, *flags)
        data = recv_within(self._sock, size, flags, time.monotonic() + self._idle)
        if data is None:
            return b""  # idle for longer than keepalive: close, as gunicorn does
        self._idle = None
        if data and self.read_timeout > 0:
            self._deadline = time.monotonic() + self.read_timeout
        return data


class HeraldGeventWorker(GeventWorker):
    """gevent with a read deadline per request and the receiver's JSON answers (see above)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.read_timeout = read_timeout_from_env()

    def init_process(self) -> None:
        if self.cfg.is_ssl:
            self.log.warning("TLS terminated by gunicorn: the request body has no read deadline; "
                             "terminate TLS in front of Herald instead")
        super().init_process()

    def timeout_ctx(self) -> Any:
        if self.cfg.is_ssl:
            return super().timeout_ctx()
        return contextlib.nullcontext()  # the socket keeps time (KeepAliveSocket)

    def handle(self, listener: Any, client: Any, addr: Any) -> None:
        set_correlation("")  # no gunicorn line may carry another delivery's id
        if self.cfg.is_ssl:
            super().handle(listener, client, addr)
            return
        sock = KeepAliveSocket(client, self.read_timeout)
        try:
            super().handle(listener, sock, addr)
        finally:
            if sock.expired:
                self.log.warning("client %s did not send its request within %gs; disconnected",
                                 peer(addr), self.read_timeout)

    def handle_request(self, listener_name: Any, req: Any, sock: Any, addr: Any) -> Any:
        if not isinstance(sock, KeepAliveSocket):
            return super().handle_request(listener_name, req, sock, addr)
        sock.in_body = True  # headers are in; the application reads the body
        # A body the app did not read to its end (a 413, a 404 with a body) or could not read
        # (a malformed chunk) ends the connection, and the answer says so: gunicorn would read
        # the rest before the next request, for as long as the client takes to send it.
        asked = req.should_close
        req.should_close = lambda: asked() or body_unfinished(req)
        try:
            return super().handle_request(listener_name, req, sock, addr)
        finally:
            sock.idle(self.cfg.keepalive)

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        """Requests gunicorn refuses get the receiver's JSON error body, naming the problem."""
        if not send_client_error(self.log, client, addr, exc):
            super().handle_error(req, client, addr, exc)
