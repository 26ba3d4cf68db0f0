"""The receiver's gunicorn defaults: gunicorn.conf.py and its worker, receiver.gevent_worker.

A public webhook endpoint meets clients that send slowly on purpose (slowloris): one that
dribbles its headers must be cut off within the read timeout, and while it is, a real
delivery must still be answered. The server here is the real thing, started the way the
Procfile does (gunicorn in the repository directory, configured by environment variables).
tests/test_gunicorn_threaded.py runs the same scenarios with the threaded worker (that of
`herald serve`, and HERALD_WORKER_CLASS's other choice), with two threads so that two slow
clients would be enough to starve it.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.fixtures_herald import (
    free_port,
    github_headers,
    github_push,
    wait_ready,
    write_config,
)

ROOT = Path(__file__).resolve().parents[1]
READ_TIMEOUT = 1.5
KEEPALIVE = 2
THREADS = 2


@dataclass
class Server:
    host: str
    port: int
    hook: str  # the Receiver's path
    body: bytes  # a signed push it accepts
    log: Path
    proc: subprocess.Popen | None = None  # gunicorn's arbiter

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}{self.hook}"

    def deliver(self, timeout: float = 15.0) -> tuple[int, float]:
        """POST the signed push with a fresh delivery id: (status, seconds taken)."""
        headers = github_headers(self.body, delivery=str(uuid.uuid4()))
        started = time.monotonic()
        resp = requests.post(self.url, data=self.body, headers=headers, timeout=timeout)
        return resp.status_code, time.monotonic() - started


def gunicorn_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ, HERALD_STATE_DIR=str(tmp_path / "state"), **extra)
    for name in ("HERALD_BROKER_URL", "GUNICORN_CMD_ARGS", "WEB_CONCURRENCY", "PORT"):
        env.pop(name, None)
    return {**env, **extra}


@pytest.fixture
def server(tmp_path: Path, repo) -> Iterator[Server]:
    """`web` as the Procfile runs it, with the default worker (receiver.gevent_worker)."""
    yield from run_web(tmp_path, repo)


def run_web(tmp_path: Path, repo, **extra: str) -> Iterator[Server]:
    cfg = write_config(tmp_path / "herald.yaml", repo.url)
    from herald import config

    loaded = config.load([cfg])
    hook = loaded.hook_path(loaded.receivers[("flux-system", "github-app")])
    port = free_port()
    env = gunicorn_env(tmp_path, HERALD_CONFIG=str(cfg), HERALD_LISTEN=f"127.0.0.1:{port}",
                       WEB_CONCURRENCY="1", HERALD_THREADS=str(THREADS),
                       HERALD_READ_TIMEOUT=str(READ_TIMEOUT), HERALD_KEEPALIVE=str(KEEPALIVE), **extra)
    log = tmp_path / "gunicorn.log"
    with open(log, "wb") as out:
        # As the Procfile runs it: gunicorn in the repository, which picks up gunicorn.conf.py.
        proc = subprocess.Popen(["gunicorn", "receiver.app:create_app()"], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_ready(f"http://127.0.0.1:{port}")
        yield Server("127.0.0.1", port, hook, github_push(repo.head), log, proc)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        assert code == 0, log.read_text()


class SlowClient(threading.Thread):
    """Sends `first`, then `rest` one byte every `interval` s, until the server hangs up.

    `cut_after` is how long after the first byte the server closed the connection (None if
    it never did); `answer` is whatever the server sent before closing.
    """

    def __init__(self, server: Server, first: bytes, rest: bytes, interval: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.sock = socket.create_connection((server.host, server.port), timeout=30)
        self.first, self.rest, self.interval = first, rest, interval
        self.cut_after: float | None = None
        self.answer = b""
        self.started = threading.Event()

    def run(self) -> None:
        self.sock.sendall(self.first)
        began = time.monotonic()
        self.started.set()
        try:
            for byte in self.rest:
                readable, _, _ = select.select([self.sock], [], [], self.interval)
                if readable and self._closed_by_server():
                    self.cut_after = time.monotonic() - began
                    return
                self.sock.sendall(bytes([byte]))
        except OSError:  # reset or broken pipe: the server hung up
            self.cut_after = time.monotonic() - began
        finally:
            self.sock.close()

    def _closed_by_server(self) -> bool:
        try:
            data = self.sock.recv(65536)
        except OSError:
            return True
        self.answer += data
        if data:  # an answer (a 400): the close follows
            return self._closed_by_server() if select.select([self.sock], [], [], 2.0)[0] else False
        return True


def request_head(server: Server, *, content_length: int | None = None) -> bytes:
    head = f"POST {server.hook} HTTP/1.1\r\nHost: {server.host}\r\nContent-Type: application/json\r\n"
    if content_length is not None:
        head += f"Content-Length: {content_length}\r\nX-GitHub-Event: push\r\n\r\n"
    return head.encode()


def test_header_dribblers_are_cut_off_and_a_delivery_still_gets_through(server: Server) -> None:
    # As many slow clients as the worker has threads: without a read deadline they would
    # hold every thread for the minute their headers take, and nothing else would be served.
    slow = [SlowClient(server, request_head(server), b"X-Slow: " + b"a" * 300)
            for _ in range(THREADS)]
    for client in slow:
        client.start()
        client.started.wait(5)
    time.sleep(0.2)  # the slow clients have the threads now

    status, took = server.deliver()

    assert status == 202
    assert took < READ_TIMEOUT + 2.0, f"the delivery waited {took:.1f}s behind slow clients"
    for client in slow:
        client.join(READ_TIMEOUT + 5)
        assert client.cut_after is not None, "a client dribbling its headers was never cut off"
        assert READ_TIMEOUT * 0.8 <= client.cut_after <= READ_TIMEOUT + 1.0, client.cut_after
        assert not client.answer.startswith(b"HTTP/1.1 2")
    assert "did not send its request within" in server.log.read_text()


def test_body_dribbler_is_cut_off_within_the_read_timeout(server: Server) -> None:
    client = SlowClient(server, request_head(server, content_length=len(server.body)), server.body,
                        interval=0.1)
    client.start()
    client.join(READ_TIMEOUT + 5)

    assert client.cut_after is not None, "a client dribbling its body was never cut off"
    assert client.cut_after <= READ_TIMEOUT + 1.0, client.cut_after
    # A body cut short is never verified or published: an error (or no answer at all).
    assert client.answer == b"" or client.answer[9:10] in (b"4", b"5"), client.answer[:200]
    status, _ = server.deliver()
    assert status == 202


def test_connections_that_send_nothing_hold_no_thread(server: Server) -> None:
    idle = [socket.create_connection((server.host, server.port), timeout=30) for _ in range(2 * THREADS)]
    try:
        time.sleep(0.2)
        status, took = server.deliver()
        assert status == 202
        # gthread alone lets a thread wait up to 5 s for a new connection's first byte.
        assert took < 1.0, f"the delivery waited {took:.1f}s behind idle connections"
        # Connections that never say anything are closed after the keep-alive timeout.
        for sock in idle:
            readable, _, _ = select.select([sock], [], [], KEEPALIVE + 3)
            assert readable and sock.recv(1) == b"", "an idle connection was left open"
    finally:
        for sock in idle:
            sock.close()


def test_a_client_that_never_closes_does_not_stall_the_worker(server: Server) -> None:
    """After a `Connection: close` answer gunicorn waits for the client to close its side;
    that wait must not hold up the worker's accept loop."""
    body = server.body
    headers = github_headers(body, delivery=str(uuid.uuid4()))
    lines = [f"POST {server.hook} HTTP/1.1", f"Host: {server.host}", "Connection: close",
             f"Content-Length: {len(body)}", *(f"{k}: {v}" for k, v in headers.items())]
    lingering = socket.create_connection((server.host, server.port), timeout=30)
    try:
        lingering.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        answer = lingering.recv(65536)
        assert answer.startswith(b"HTTP/1.1 202"), answer[:200]
        # It neither reads on nor closes. Meanwhile, others are served at once.
        for _ in range(3):
            status, took = server.deliver()
            assert status == 202 and took < 1.0, took
    finally:
        lingering.close()


def test_web_serves_with_the_gevent_worker(server: Server) -> None:
    status, _ = server.deliver()
    assert status == 202
    assert "Using worker: receiver.gevent_worker.HeraldGeventWorker" in server.log.read_text()


def test_settings_come_from_the_environment(tmp_path: Path) -> None:
    def resolved(**env: str) -> dict[str, str]:
        # gunicorn prints the resolved settings, then tries the app (no HERALD_CONFIG: it exits).
        out = subprocess.run(["gunicorn", "--print-config", "receiver.app:create_app()"], cwd=ROOT,
                             env=gunicorn_env(tmp_path, **env), capture_output=True, text=True,
                             timeout=60, check=False).stdout
        settings = {}
        for line in out.splitlines():
            name, sep, value = line.partition("=")
            if sep:
                settings[name.strip()] = value.strip()
        return settings

    defaults = resolved()
    assert defaults["worker_class"] == "receiver.gevent_worker.HeraldGeventWorker"
    assert int(defaults["worker_connections"]) == 1000
    assert 1 <= int(defaults["workers"]) <= min(len(os.sched_getaffinity(0)), 8)
    assert defaults["bind"] == "['127.0.0.1:9292']"
    assert int(defaults["limit_request_field_size"]) == 16384
    assert int(defaults["graceful_timeout"]) < int(defaults["timeout"])

    changed = resolved(WEB_CONCURRENCY="3", HERALD_THREADS="5", HERALD_KEEPALIVE="75", PORT="8000",
                       GUNICORN_CMD_ARGS="--timeout 60")
    assert changed["workers"] == "3" and changed["threads"] == "5" and changed["keepalive"] == "75"
    assert changed["bind"] == "['0.0.0.0:8000']"
    assert changed["timeout"] == "60"  # GUNICORN_CMD_ARGS wins over the file


def _signed_request(server: Server, *, extra: str = "", close: bool = False) -> tuple[bytes, bytes]:
    body = server.body
    headers = github_headers(body, delivery=str(uuid.uuid4()))
    lines = [f"POST {server.hook} HTTP/1.1", f"Host: {server.host}", f"Content-Length: {len(body)}",
             *(f"{k}: {v}" for k, v in headers.items())]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n" + extra + "\r\n").encode(), body


def _read_answers(sock: socket.socket, count: int, timeout: float = 10.0) -> list[bytes]:
    """The status lines of the next `count` final answers (1xx included in the list)."""
    sock.settimeout(timeout)
    data, lines = b"", []
    while sum(not line.startswith(b"HTTP/1.1 1") for line in lines) < count:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed after {lines}"
            data += chunk
            continue
        status = head.split(b"\r\n", 1)[0]
        lines.append(status)
        length = next((int(h.split(b":", 1)[1]) for h in head.split(b"\r\n")[1:]
                       if h.lower().startswith(b"content-length:")), 0)
        while len(rest) < length:
            rest += sock.recv(65536)
        data = rest[length:]
    return lines


def test_expect_continue_is_answered_once_and_the_body_then_accepted(server: Server) -> None:
    """curl and .NET send `Expect: 100-continue` and hold the body until told to go on; the
    event loop says so when the headers are in (no thread waits for that body)."""
    head, body = _signed_request(server, extra="Expect: 100-continue\r\n")
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(head)
        assert sock.recv(4096) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        assert _read_answers(sock, 1) == [b"HTTP/1.1 202 ACCEPTED"]  # and no second 100


def test_pipelined_and_kept_alive_requests_are_each_answered_in_order(server: Server) -> None:
    first, body1 = _signed_request(server)
    second, body2 = _signed_request(server)
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(first + body1 + second + body2)  # two requests in one write
        assert _read_answers(sock, 2) == [b"HTTP/1.1 202 ACCEPTED"] * 2
        third, body3 = _signed_request(server)
        sock.sendall(third + body3)  # then another, on the same kept-alive connection
        assert _read_answers(sock, 1) == [b"HTTP/1.1 202 ACCEPTED"]


def test_sigterm_lets_a_delivery_in_flight_finish_then_the_server_exits(server: Server) -> None:
    head, body = _signed_request(server)
    assert server.proc is not None
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(head + body[:100])  # in flight: the rest of its body is still to come
        time.sleep(0.3)
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        sock.sendall(body[100:])
        assert _read_answers(sock, 1) == [b"HTTP/1.1 202 ACCEPTED"]
    # Then it exits (cleanly: the fixture checks the code) and the port is closed.
    server.proc.wait(timeout=30)
    with pytest.raises(OSError):
        socket.create_connection((server.host, server.port), timeout=2).close()


def _send_until_closed(server: Server, request: bytes) -> tuple[bytes, bytes]:
    """Send `request`, read until the server closes the connection: (head, body) of the answer."""
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return head, body


@pytest.mark.parametrize("framing", [
    "Content-Length: 10\r\nContent-Length: 12\r\n",
    "Content-Length: +5\r\n",
    "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
])
def test_refused_framing_is_a_json_400_that_closes_the_connection(server: Server, framing: str) -> None:
    request = (f"POST {server.hook} HTTP/1.1\r\nHost: x\r\n{framing}\r\n").encode() + b"x" * 12
    head, body = _send_until_closed(server, request)
    assert head.startswith(b"HTTP/1.1 400 ") and b"Connection: close" in head, head
    assert "Content-Length" in json.loads(body)["error"]


def test_a_body_left_unread_after_an_answer_holds_no_thread(server: Server) -> None:
    """A 413 is answered before the body is read. gthread would then drain the rest of the body
    in the request thread, for as long as the client takes to send it; here the connection is
    closed (and the answer says so), so as many such clients as threads block nothing."""
    dribblers = []
    for _ in range(THREADS):
        sock = socket.create_connection((server.host, server.port), timeout=10)
        sock.sendall(f"POST {server.hook} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000000\r\n\r\n".encode())
        head = sock.recv(4096).partition(b"\r\n\r\n")[0]
        assert head.startswith(b"HTTP/1.1 413") and b"Connection: close" in head, head
        dribblers.append(sock)
    stop = threading.Event()

    def dribble() -> None:
        while not stop.wait(0.3):
            for sock in dribblers:
                try:
                    sock.sendall(b"x")
                except OSError:
                    pass

    threading.Thread(target=dribble, daemon=True).start()
    try:
        time.sleep(0.5)
        status, took = server.deliver()
        assert status == 202 and took < 1.0, f"a delivery waited {took:.1f}s behind unread bodies"
    finally:
        stop.set()
        for sock in dribblers:
            sock.close()


def test_a_broken_chunked_body_is_answered_with_connection_close(server: Server) -> None:
    """The body's end is unknown, so the connection cannot be reused: the 400 says so, and a
    client that pools connections does not send its next request into a closing socket."""
    head, body = _send_until_closed(
        server, f"POST {server.hook} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".encode())
    assert head.startswith(b"HTTP/1.1 400") and b"Connection: close" in head, head
    assert "malformed chunked body" in json.loads(body)["error"]


def test_a_pipelined_request_left_half_sent_is_cut_off_at_the_deadline(server: Server) -> None:
    """A whole request and, behind it in the same write, the start of a second: the second
    goes to a thread from gunicorn's own buffer, not through the event loop, and must still
    be read within the deadline, or such clients could hold every thread."""
    stuck = [socket.create_connection((server.host, server.port), timeout=30) for _ in range(THREADS)]
    try:
        for sock in stuck:  # each its own delivery id: a repeated one is answered 200, not 202
            first, body = _signed_request(server)
            sock.sendall(first + body + f"POST {server.hook} HTTP/1.1\r\nHost: x\r\n".encode())
        for sock in stuck:
            assert _read_answers(sock, 1) == [b"HTTP/1.1 202 ACCEPTED"]
        time.sleep(0.3)  # the half-sent second requests are in the threads now
        status, took = server.deliver(timeout=READ_TIMEOUT + 10)
        assert status == 202 and took < READ_TIMEOUT + 1.5, f"a delivery waited {took:.1f}s"
        for sock in stuck:  # cut off at the deadline, without an answer
            readable, _, _ = select.select([sock], [], [], READ_TIMEOUT + 3)
            assert readable and sock.recv(65536) == b""
    finally:
        for sock in stuck:
            sock.close()
