"""A raw HTTP/1.1 client for the front-door tests, and fresh deliveries for every receiver type.

`requests` and `http.client` refuse to send what a hostile client sends (two Content-Length
values, a Content-Length of `+5`, a chunk size of `0x..`, headers cut off, a body shorter
than announced), so `exchange` writes bytes to a socket and reads back whatever comes, until
the server closes the connection, or stops answering once it has answered: every response
in the stream is parsed (a request smuggled behind a broken one shows up as a second
response), and whether the server closed the connection is recorded.
"""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pika

from herald.bus import EMBEDDED_FILENAME, open_bus
from herald.bus.sqlite import open_db
from herald.messages import RECONCILE_QUEUE
from tests.receiver_types_config import (
    RECEIVERS,
    base_headers,
    credentials,
    sample_bodies,
)

# How long to wait for the first byte of an answer: generous, the suite shares a 2-core
# machine with other test runs.
ANSWER_TIMEOUT = 30.0
# Once a complete response is in, how long to wait for the server to close the connection
# (or to send a second response) before deciding it keeps the connection open.
LINGER = 2.0


@dataclass
class Response:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    def json(self) -> object:
        return json.loads(self.body)

    def error(self) -> str:
        """The "error" of a JSON error body; AssertionError if the body is anything else."""
        assert (self.header("Content-Type") or "").split(";")[0].strip() == "application/json", \
            f"{self.status} answered with Content-Type {self.header('Content-Type')!r}: {self.body[:300]!r}"
        try:
            data = self.json()
        except ValueError:
            raise AssertionError(f"{self.status} answered with a body that is not JSON: {self.body[:300]!r}") from None
        assert isinstance(data, dict) and isinstance(data.get("error"), str) and data["error"], \
            f"{self.status} answered without an \"error\": {self.body[:300]!r}"
        return data["error"]

    def __str__(self) -> str:
        return f"{self.status} {self.reason} {self.body[:300]!r}"


@dataclass
class Exchange:
    """Everything that came back on one connection."""

    raw: bytes = b""
    responses: list[Response] = field(default_factory=list)
    closed: bool = False  # the server closed (or reset) the connection
    reset: bool = False
    trailing: bytes = b""  # bytes after the last complete response
    log_offset: int = 0  # the size of the server's log when the connection was opened

    @property
    def silent(self) -> bool:
        """Closed without a single byte of answer."""
        return self.closed and not self.raw

    @property
    def only(self) -> Response:
        """The one response; AssertionError if there is none, or more than one."""
        assert self.responses, f"no complete response; got {self.raw[:300]!r} (closed={self.closed})"
        assert len(self.responses) == 1 and not self.trailing, \
            f"expected one response on this connection, got {len(self.responses)}: " \
            f"{[str(r) for r in self.responses]} and {self.trailing[:200]!r}"
        return self.responses[0]

    @property
    def text(self) -> str:
        return self.raw.decode("latin-1")


def request(path: str, headers: Sequence[tuple[str, str]] | dict[str, str], body: bytes = b"", *,
            method: str = "POST", host: str = "127.0.0.1") -> bytes:
    """A request as bytes, exactly as given: no header is added, none is checked."""
    items = list(headers.items()) if isinstance(headers, dict) else list(headers)
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in items) + "\r\n"
    return head.encode("latin-1") + body


def chunked(body: bytes, size: int = 4096) -> bytes:
    """`body` in well-formed chunks, with the last chunk and an empty trailer."""
    parts = [b"%x\r\n%s\r\n" % (len(body[i:i + size]), body[i:i + size]) for i in range(0, len(body), size)]
    return b"".join(parts) + b"0\r\n\r\n"


def exchange(host: str, port: int, data: bytes | Sequence[bytes], *, half_close: bool = False,
             abort: bool = False, pause: float = 0.0, timeout: float = ANSWER_TIMEOUT) -> Exchange:
    """Send `data` (one write per element, `pause` seconds apart) on a new connection.

    half_close: shutdown(SHUT_WR) after sending, so the server reads the end of the stream.
    abort: close the socket right after sending and read nothing (a client that is gone).
    """
    parts = [data] if isinstance(data, bytes) else list(data)
    out = Exchange()
    with socket.create_connection((host, port), timeout=timeout) as s:
        try:
            for i, part in enumerate(parts):
                if i and pause:
                    time.sleep(pause)
                s.sendall(part)
            if half_close:
                s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered (and closed) before taking everything: read the answer
        if abort:
            out.closed = True
            return out
        deadline = time.monotonic() + timeout
        while True:
            _parse(out)
            if out.responses and not out.trailing:
                s.settimeout(LINGER)  # answered: now only waiting for the close
            else:
                s.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                got = s.recv(65536)
            except TimeoutError:
                break
            except ConnectionResetError:
                out.closed = out.reset = True
                break
            if not got:
                out.closed = True
                break
            out.raw += got
            if time.monotonic() > deadline:
                break
    _parse(out, final=True)
    return out


def _parse(out: Exchange, final: bool = False) -> None:
    """Split out.raw into complete responses; what is left over is out.trailing."""
    out.responses, rest = [], out.raw
    while rest:
        head, sep, after = rest.partition(b"\r\n\r\n")
        if not sep:
            break
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            break
        headers = [(k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in lines[1:])]
        length = next((v for k, v in headers if k.lower() == "content-length"), None)
        if length is not None and length.isdigit():
            if len(after) < int(length):
                break
            body, rest = after[:int(length)], after[int(length):]
        elif final:
            body, rest = after, b""  # delimited by the close
        else:
            break
        out.responses.append(Response(int(parts[1]), parts[2] if len(parts) > 2 else "", headers, body))
    out.trailing = rest


# ---- deliveries ----------------------------------------------------------------------------

def _refresh_ids(name: str, body: bytes) -> bytes:
    """`body` with the delivery id it carries (if its type reads one from the body) made new.

    The receiver answers a delivery id it has seen with 200 and publishes nothing: a test
    sending the same sample twice must not mistake that for a refusal, or the refusal of a
    broken copy for a duplicate. Header ids are fresh in every `base_headers` already.
    """
    rtype = RECEIVERS[name][0]
    try:
        data = json.loads(body)
    except ValueError:
        return body
    if not isinstance(data, dict):
        return body
    if rtype == "cdevents" and isinstance(data.get("context"), dict):
        data["context"]["id"] = str(uuid.uuid4())
    elif "id" in data and rtype in ("acr", "harbor", "cloudevents"):
        data["id"] = str(uuid.uuid4())
    else:
        return body
    return json.dumps(data).encode()


@dataclass
class Delivery:
    """What a well-behaved sender posts: headers without credentials, body, credentials."""

    name: str
    headers: dict[str, str]  # the sender's own, Content-Type included; no credential
    body: bytes
    credentials: dict[str, str]

    @property
    def signed_headers(self) -> dict[str, str]:
        return self.headers | self.credentials

    def signing(self, body: bytes) -> dict[str, str]:
        """The same sender's headers for another body, correctly signed with the real key."""
        return self.headers | credentials(self.name, body)


def fresh_delivery(name: str) -> Delivery:
    """A valid delivery for Receiver `name` (index 0 of its samples) with a new delivery id."""
    body = _refresh_ids(name, sample_bodies(name)[0])
    return Delivery(name, base_headers(name, body), body, credentials(name, body))


# ---- counting what is published -------------------------------------------------------------

class EmbeddedPublishCount:
    """How many messages were ever published to `herald.reconcile` on the embedded bus in `state_dir`.

    `depth()` is not that count when something consumes the queue: under `herald serve` the
    in-process reconciler takes each request, and acknowledges at once the ones that a run
    already queued or running covers (coalescing), so they leave the queue within
    milliseconds. A trigger on the bus's table counts every message as it is inserted,
    inside the publisher's own transaction, whatever happens to it afterwards. Installed
    before the server starts; with interval polling off, the receiver is the only publisher.
    """

    def __init__(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        bus = open_bus(None, state_dir)  # creates the bus's schema
        bus.depth(RECONCILE_QUEUE)
        bus.close()
        self.conn = open_db(state_dir / EMBEDDED_FILENAME)
        self.conn.executescript(f"""
            BEGIN;
            CREATE TABLE front_door_published (n INTEGER NOT NULL);
            INSERT INTO front_door_published VALUES (0);
            CREATE TRIGGER front_door_count AFTER INSERT ON messages WHEN NEW.queue = '{RECONCILE_QUEUE}'
            BEGIN UPDATE front_door_published SET n = n + 1; END;
            COMMIT;
        """)

    def __call__(self) -> int:
        return int(self.conn.execute("SELECT n FROM front_door_published").fetchone()[0])

    def close(self) -> None:
        self.conn.close()


class AmqpQueueDepth:
    """Messages ready in `herald.reconcile` of a RabbitMQ vhost that nothing consumes: a
    passive declare on one kept connection (a new connection per look would cost more than
    most scenarios take)."""

    def __init__(self, url: str, state_dir: Path, patience: float = 60.0) -> None:
        self.url, self.patience = url, patience
        self.connection: pika.BlockingConnection | None = None
        bus = open_bus(url, state_dir)  # declares the queue as the receiver does: countable at once
        try:
            assert bus.depth(RECONCILE_QUEUE) == 0
        finally:
            bus.close()

    def __call__(self) -> int:
        # The broker is shared with other test runs; one that takes it away for a moment
        # (an outage test) must not read as a count here.
        deadline = time.monotonic() + self.patience
        while True:
            try:
                if self.connection is None or self.connection.is_closed:
                    self.connection = pika.BlockingConnection(pika.URLParameters(self.url))
                channel = self.connection.channel()
                count = channel.queue_declare(RECONCILE_QUEUE, passive=True).method.message_count
                channel.close()
                return int(count)
            except (pika.exceptions.AMQPError, OSError):
                self.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def close(self) -> None:
        if self.connection is not None and self.connection.is_open:
            try:
                self.connection.close()
            except (pika.exceptions.AMQPError, OSError):
                pass
        self.connection = None
