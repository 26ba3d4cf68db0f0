"""The receiver's front door: hostile HTTP at every receiver type, through both entry points.

A webhook URL is public. Whatever arrives at it — broken framing, a wrong or missing
signature, broken JSON, the wrong content type, bytes that are not UTF-8, JSON nested
thousands deep, headers too large, a body over the limit, a request the client gave up on
half-way — must be answered the way the design promises (shared/design/ARCHITECTURE.md,
"HTTP behaviour of the receiver"), and never with a 5xx: a 5xx makes Git hosts retry, and a traceback in the log of
a public endpoint is an alarm nobody should have to read. Above all, nothing may be
published: a reconcile request is queued only for a complete, correctly signed delivery.

Each scenario runs over a real socket against a real server process, once per entry point:

* `web`: gunicorn as the Procfile runs it (`gunicorn 'receiver.app:create_app()'` in the
  repository, picking up gunicorn.conf.py), two worker processes, publishing to RabbitMQ in
  a vhost of its own — as in production;
* `serve`: `herald serve -c CONFIG`, the one-process form, on the embedded SQLite bus.

The configuration has one Receiver per registered receiver type (tests/receiver_types_config.py);
the scenarios run for every one of them. What is published is counted where it lands, in
the `herald.reconcile` queue. Under `web` nothing consumes that queue, so its depth (a passive
declare) is the count. Under `serve` the in-process reconciler consumes it and acknowledges
at once every request a queued or running reconcile covers, so depth says little there: a
trigger on the embedded bus's table counts each message published to the queue instead (see
tests/front_door_clients.py). Every 202 must add exactly its one request; every other answer
none.

Every answer is checked as it comes: never 5xx; every 4xx a JSON object with an "error";
no configured secret in it. The server's log is checked as the scenarios go and once more
at the end: no "Traceback", no secret.

The framing scenarios follow RFC 9112 (§6.1, §6.3, §7.1): a request whose body's length
cannot be known for sure is answered 400 and the connection is closed, so that nothing
sent after it (here: a request smuggled behind it on the same connection) is ever read as a
request of its own. A client that is gone (headers cut off) gets no answer at all.

These complement tests/test_receiver_fuzz.py (thousands of hostile bodies and headers
through the Flask test client, in-process): here the server in front of the app is part of
what is tested.
"""

from __future__ import annotations

import base64
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from tests.fixtures_herald import free_port, wait_until
from tests.fixtures_rabbitmq import fresh_vhost
from tests.front_door_clients import (
    AmqpQueueDepth,
    EmbeddedPublishCount,
    Exchange,
    chunked,
    exchange,
    fresh_delivery,
    request,
)
from tests.receiver_types_config import (
    ACR_USERNAME,
    RECEIVERS,
    SIGNED,
    TypesConfig,
    credentials,
    every_secret_value,
    expected_macs,
    load_types_config,
    mac,
)
from tests.test_receiver_fuzz import CREDENTIAL_HEADERS

ROOT = Path(__file__).resolve().parents[1]
MAX_BODY = 64 * 1024  # HERALD_MAX_BODY: small, so that going over it is cheap
ENTRY_POINTS = ("web", "serve")
HOST = "127.0.0.1"
START_TIMEOUT = 60.0
UNAUTHORIZED = {"error": "signature or token missing or invalid"}
WRONG_KEY = "wrong-key-4f0c2a9e7b1d3c5e"

NAMES = list(RECEIVERS)
# Receivers whose body is never read (generic: the URL is all; generic-hmac: the MAC is all):
# broken JSON is a fine body for them, and it is published (see test_receiver_fuzz.py).
BODY_BLIND = ("generic", "generic-hmac")
PARSED = [n for n in NAMES if n not in BODY_BLIND]
# Receivers where a wrong credential can be sent: every signed one, and CloudEvents/CDEvents,
# whose signature is optional but, when present, must verify.
WRONG_CREDENTIAL = [*SIGNED, "cloudevents", "cdevents"]


# ---- the server under test -------------------------------------------------------------------

@dataclass
class FrontDoor:
    """One running entry point, and the ledger of what it published."""

    entry: str
    port: int
    types: TypesConfig
    log: Path
    _count: Callable[[], int]
    proc: subprocess.Popen
    seen: int = 0  # the count at the last look
    accounted: int = 0  # requests of deliveries answered 202
    reported: int = 0  # requests published by deliveries that should not have been (already failed)
    secrets: list[str] = field(default_factory=every_secret_value)

    def hook(self, name: str) -> str:
        return self.types.hook(name)

    def published(self) -> int:
        return self._count()

    def send(self, data: bytes | list[bytes], **kwargs) -> Exchange:
        """One connection: send `data`, read what comes back (see front_door_clients.exchange)."""
        offset = self.log.stat().st_size
        ex = exchange(HOST, self.port, data, **kwargs)
        ex.log_offset = offset
        return ex

    def log_text(self, offset: int = 0) -> str:
        with open(self.log, "rb") as f:
            f.seek(offset)
            return f.read().decode("utf-8", "replace")

    def log_problems(self, offset: int = 0) -> list[str]:
        text = self.log_text(offset)
        problems = []
        if "Traceback" in text:
            problems.append(f"a traceback in the {self.entry} log:\n{text[max(0, text.index('Traceback') - 500):][:4000]}")
        if any(secret in text for secret in self.secrets):
            problems.append("a configured secret appears in the log")
        return problems

    def newly_published(self) -> int:
        """Requests published since the last look. Each look moves the mark, so one
        scenario that publishes fails alone, not every scenario after it."""
        now = self.published()
        new, self.seen = now - self.seen, now
        return new

    def _problems(self, ex: Exchange) -> list[str]:
        """What no answer may ever be: a 5xx, a refusal that is not a JSON "error", a secret."""
        problems = []
        for resp in ex.responses:
            if resp.status >= 500:
                problems.append(f"answered {resp}")
            elif resp.status >= 400:
                try:
                    resp.error()
                except AssertionError as exc:
                    problems.append(str(exc))
        if any(secret in ex.text for secret in self.secrets):
            problems.append("a configured secret appears in an answer")
        return problems + self.log_problems(ex.log_offset)

    def _verdict(self, problems: list[str], published: int) -> None:
        if published:
            self.reported += published
            problems.append(f"{published} reconcile request(s) published")
        assert not problems, f"{self.entry}: " + "; ".join(problems)

    def refused(self, ex: Exchange, status: int, names: str = "") -> None:
        """The one answer is `status` with a JSON "error" (which matches `names`, if given:
        the error names the problem), and nothing was published."""
        published = self.newly_published()
        problems = self._problems(ex)
        if len(ex.responses) != 1 or ex.trailing:
            problems.append(f"{len(ex.responses)} answers instead of one {status}: "
                            f"{[str(r) for r in ex.responses]} {ex.trailing[:200]!r} (closed={ex.closed})")
        elif ex.responses[0].status != status:
            problems.append(f"answered {ex.responses[0]} instead of {status}")
        elif names:
            try:
                error = ex.responses[0].error()
            except AssertionError:
                pass  # reported by _problems
            else:
                if not re.search(names, error, re.IGNORECASE):
                    problems.append(f"the error {error!r} does not name the problem ({names})")
        self._verdict(problems, published)

    def unanswered(self, ex: Exchange) -> None:
        """The connection was closed without a byte of answer, and nothing was published."""
        published = self.newly_published()
        problems = self._problems(ex)
        if not ex.silent:
            problems.append(f"answered {ex.raw[:300]!r} (closed={ex.closed}) to a client that is gone")
        self._verdict(problems, published)

    def accepted(self, ex: Exchange) -> None:
        """202, and exactly one reconcile request published per request id in the answer."""
        problems = self._problems(ex)
        resp = ex.only
        assert resp.status == 202 and not problems, f"{self.entry}: answered {resp}; " + "; ".join(problems)
        ids = resp.json()["requests"]
        assert len(ids) == 1, f"{self.entry}: {resp}"
        self.accounted += len(ids)
        wait_until(lambda: self.published() >= self.seen + len(ids), 20, "the request in the queue")
        published = self.newly_published()
        assert published == len(ids), f"{self.entry}: {published} requests published for one 202"

    def still_serving(self, name: str) -> None:
        """A fresh valid delivery to `name` is accepted and published once."""
        d = fresh_delivery(name)
        self.accepted(self.send(post(self, name, d.signed_headers, d.body)))


def post(door: FrontDoor, name: str, headers: dict[str, str], body: bytes, *, close: bool = True) -> bytes:
    """A POST of `body` to `name`'s hook with a correct Content-Length (and Connection: close,
    so that the answer is followed by the end of the connection instead of a keep-alive wait)."""
    items = [*headers.items(), ("Content-Length", str(len(body)))]
    if close:
        items.append(("Connection", "close"))
    return request(door.hook(name), items, body)


def _environment(tmp: Path, types: TypesConfig, port: int) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("HERALD_BROKER_URL", "HERALD_CONFIG", "GUNICORN_CMD_ARGS", "WEB_CONCURRENCY", "PORT",
                 "PROMETHEUS_MULTIPROC_DIR", "HERALD_READ_TIMEOUT", "HERALD_MAX_BODY"):
        env.pop(name, None)
    # The code of this checkout, whatever is installed, also where the cwd is not the checkout.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.update(HERALD_CONFIG=str(types.path), HERALD_LISTEN=f"{HOST}:{port}", HERALD_STATE_DIR=str(tmp / "state"),
               HERALD_MAX_BODY=str(MAX_BODY), HERALD_LOG_LEVEL="DEBUG",
               # `serve`: the receiver is then the only publisher of reconcile requests.
               HERALD_INTERVAL_POLLING="false")
    return env


def _unreachable_source(types: TypesConfig, tmp: Path) -> None:
    """Point the GitRepository at a local path where there is no repository: the reconciler
    of `serve` then fails at once, without reaching for the network. Hook URLs do not
    depend on the GitRepository."""
    text = types.path.read_text()
    assert "url: https://example.com/app.git" in text
    types.path.write_text(text.replace("url: https://example.com/app.git",
                                       f"url: file://{tmp}/no-such-repository.git"))


def _wait_serving(proc: subprocess.Popen, port: int, log: Path, entry: str) -> None:
    def up() -> bool:
        assert proc.poll() is None, f"{entry} exited ({proc.returncode}):\n{log.read_text()}"
        try:
            return requests.get(f"http://{HOST}:{port}/readyz", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    wait_until(up, START_TIMEOUT, f"{entry} to answer /readyz")


def _stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=40)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


@pytest.fixture(scope="module", params=ENTRY_POINTS)
def door(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FrontDoor]:
    entry = request.param
    tmp = tmp_path_factory.mktemp(f"front-door-{entry}")
    types = load_types_config(tmp)
    _unreachable_source(types, tmp)
    port = free_port()
    env = _environment(tmp, types, port)
    log = tmp / f"{entry}.log"
    vhost_of = fresh_vhost(request.getfixturevalue("rabbitmq_url")) if entry == "web" \
        else nullcontext("")
    with vhost_of as vhost:
        count: AmqpQueueDepth | EmbeddedPublishCount
        if entry == "web":
            env.update(HERALD_BROKER_URL=vhost, WEB_CONCURRENCY="2")
            count = AmqpQueueDepth(vhost, tmp / "state")
            argv = [sys.executable, "-m", "gunicorn", "receiver.app:create_app()"]
            cwd = ROOT  # as the Procfile: gunicorn.conf.py is read from here
        else:
            count = EmbeddedPublishCount(tmp / "state")
            argv = [sys.executable, "-m", "herald.cli", "serve", "-c", str(types.path),
                    "--state-dir", str(tmp / "state")]
            cwd = tmp
        with open(log, "wb") as out:
            proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            _wait_serving(proc, port, log, entry)
            yield FrontDoor(entry, port, types, log, count, proc)
        finally:
            code = _stop(proc)
            count.close()
        assert code == 0, f"{entry} did not exit cleanly ({code}):\n{log.read_text()[-4000:]}"
        # Shutting down is part of the run: its lines are checked too.
        problems = FrontDoor(entry, port, types, log, count, proc).log_problems()
        assert not problems, problems


# ---- the control: what a real sender sends gets through ------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_a_valid_delivery_is_accepted_and_published_exactly_once(door: FrontDoor, name: str) -> None:
    """The control every refusal below is measured against: the same sender, the same
    body, correctly signed and framed, is answered 202 and queues exactly one request."""
    d = fresh_delivery(name)
    door.accepted(door.send(post(door, name, d.signed_headers, d.body)))


def test_an_unknown_hook_path_is_404(door: FrontDoor) -> None:
    """For URL-only types the path is the credential: a wrong one finds no Receiver."""
    d = fresh_delivery("generic")
    ex = door.send(request(f"/hook/{uuid.uuid4().hex}", {**d.signed_headers, "Content-Length": str(len(d.body)),
                                                         "Connection": "close"}, d.body))
    door.refused(ex, 404)


# ---- credentials --------------------------------------------------------------------------------

def _wrong_credentials(name: str, body: bytes) -> dict[str, str]:
    """What a sender without the key sends: the right header, a wrong value."""
    if name == "acr-basic":
        return {"Authorization": "Basic " + base64.b64encode(f"{ACR_USERNAME}:{WRONG_KEY}".encode()).decode()}
    if name == "acr-bearer":
        return {"Authorization": f"Bearer {WRONG_KEY}"}
    if name in ("cloudevents", "cdevents"):
        return {"X-Signature": f"sha256={mac(body, WRONG_KEY)}"}
    wrong = credentials(name, body, key=WRONG_KEY)
    assert wrong and wrong != credentials(name, body), name
    return wrong


@pytest.mark.parametrize("name", WRONG_CREDENTIAL)
def test_a_wrong_signature_or_token_is_401_and_says_nothing_of_the_right_one(door: FrontDoor, name: str) -> None:
    """Signed with another key (or the wrong token, or wrong Basic/Bearer credentials):
    401 with the one fixed message, which names neither the key nor the MAC that would
    have been valid."""
    d = fresh_delivery(name)
    ex = door.send(post(door, name, d.headers | _wrong_credentials(name, d.body), d.body))
    door.refused(ex, 401)
    assert ex.only.json() == UNAUTHORIZED
    for expected in expected_macs(d.body):
        assert expected not in ex.text.lower()


@pytest.mark.parametrize("name", SIGNED)
def test_a_missing_signature_or_token_is_401(door: FrontDoor, name: str) -> None:
    """The sender's delivery as it is, minus every header that could carry a credential."""
    d = fresh_delivery(name)
    assert not {h.lower() for h in CREDENTIAL_HEADERS[name]} & {h.lower() for h in d.headers}
    ex = door.send(post(door, name, d.headers, d.body))
    door.refused(ex, 401)
    assert ex.only.json() == UNAUTHORIZED


# ---- framing (RFC 9112) ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Fault:
    """A way of framing a correctly signed delivery wrong.

    `build(head, body)` gets the request line and headers as a list (without framing
    headers) and the signed body; it returns the bytes to send. Had the server guessed a
    length and read on, it would find a valid delivery and publish it: the signed body is
    what makes a lax reading visible.
    """

    build: Callable[[Callable[[list[tuple[str, str]]], bytes], bytes], bytes]
    answer: int | None  # None: no answer at all (the client is gone)
    names: str = ""  # a pattern the error must match: the error names the problem
    half_close: bool = False  # the client shuts down its sending side after the bytes


CL = "Content-Length"
TE = "Transfer-Encoding"
FRAMING = {
    "two-content-lengths": Fault(lambda h, b: h([(CL, str(len(b))), (CL, str(len(b) + 1))]) + b,
                                 400, "content-length"),
    "content-length-empty": Fault(lambda h, b: h([(CL, "")]) + b, 400, "content-length"),
    "content-length-blank": Fault(lambda h, b: h([(CL, " ")]) + b, 400, "content-length"),
    "content-length-abc": Fault(lambda h, b: h([(CL, "abc")]) + b, 400, "content-length"),
    # A lax int() reads "+<n>" as n, and with it the whole signed body.
    "content-length-plus-sign": Fault(lambda h, b: h([(CL, f"+{len(b)}")]) + b, 400, "content-length"),
    "content-length-and-chunked": Fault(lambda h, b: h([(CL, str(len(b))), (TE, "chunked")]) + chunked(b),
                                        400, "content-length|transfer-encoding"),
    # int(x, 16) takes "0x" and "+" prefixes and "_" separators: a chunk-size takes none.
    "bad-chunk-size": Fault(lambda h, b: h([(TE, "chunked")]) + b"0x%x\r\n%s\r\n0\r\n\r\n" % (len(b), b),
                            400, "chunk"),
    "missing-chunk-terminator": Fault(lambda h, b: h([(TE, "chunked")]) + b"%x\r\n%s0\r\n\r\n" % (len(b), b),
                                      400, "chunk"),
    "bad-chunk-extension": Fault(lambda h, b: h([(TE, "chunked")])
                                 + b'%x;name="unterminated\r\n%s\r\n0\r\n\r\n' % (len(b), b), 400, "chunk"),
    "body-shorter-than-announced": Fault(lambda h, b: h([(CL, str(len(b) + 16))]) + b, 400,
                                         "body|content-length|incomplete|ended|short", half_close=True),
    "headers-cut-off": Fault(lambda h, b: h([(CL, str(len(b)))]).split(b"\r\n\r\n")[0][:-7], None,
                             half_close=True),
    # Every header line complete, only the empty line missing: not a request either.
    "headers-cut-at-a-line-end": Fault(lambda h, b: h([(CL, "0")])[:-2], None, half_close=True),
}


def _smuggled(door: FrontDoor) -> bytes:
    """A valid delivery to the `generic` Receiver, which publishes any body: answered or
    published, it would show that the server read on after a request it could not frame."""
    return post(door, "generic", {"Content-Type": "application/json"}, b'{"smuggled": true}', close=False)


@pytest.mark.parametrize("fault", list(FRAMING))
@pytest.mark.parametrize("name", NAMES)
def test_broken_framing_is_400_and_the_connection_is_closed(door: FrontDoor, name: str, fault: str) -> None:
    """RFC 9112 §6.3: when the body's length cannot be determined for sure, the server
    answers 400 and closes the connection. One JSON error names the problem; a request
    pipelined behind the broken one is never answered, and nothing is published. Headers
    cut off by a closed connection get no answer at all."""
    f = FRAMING[fault]
    d = fresh_delivery(name)

    def head(framing: list[tuple[str, str]]) -> bytes:
        return request(door.hook(name), [*d.signed_headers.items(), *framing])

    data = f.build(head, d.body)
    if f.answer is None:
        door.unanswered(door.send(data, half_close=True))
        return
    if not f.half_close:
        data += _smuggled(door)
    ex = door.send(data, half_close=f.half_close)
    door.refused(ex, f.answer, f.names)
    assert ex.closed, f"{door.entry} kept the connection open after a request it could not frame"


# ---- bodies: broken, not UTF-8, nested, of the wrong type ----------------------------------------

def _inside_first_string(body: bytes, insert: bytes) -> bytes:
    """`insert` placed inside the first string value of a JSON body."""
    at = body.index(b'"', body.index(b":")) + 1
    return body[:at] + insert + body[at:]


BODY_FAULTS: dict[str, Callable[[bytes], bytes]] = {
    "truncated-json": lambda b: b[: len(b) // 2],
    "trailing-garbage": lambda b: b + b"}{",
    # A lone continuation byte, and an overlong encoding of "/": neither is UTF-8 (RFC 3629).
    "not-utf8": lambda b: _inside_first_string(b, b"\x80\xc0\xaf"),
    "deeply-nested": lambda b: b'{"a": ' + b"[" * 20000 + b"]" * 20000 + b"}",
}


@pytest.mark.parametrize("fault", list(BODY_FAULTS))
@pytest.mark.parametrize("name", PARSED)
def test_a_malformed_body_with_a_valid_signature_is_400(door: FrontDoor, name: str, fault: str) -> None:
    """Signed by the real key, so only the body decides: broken JSON, bytes that are not
    UTF-8, and JSON nested deeper than any parser's stack are a 400 naming the body, never
    a 500 (a RecursionError or UnicodeDecodeError let through) and never published."""
    d = fresh_delivery(name)
    body = BODY_FAULTS[fault](d.body)
    assert len(body) < MAX_BODY
    door.refused(door.send(post(door, name, d.signing(body), body)), 400)


WRONG_TYPES = {
    "form-urlencoded": ("application/x-www-form-urlencoded", b"ref=refs%2Fheads%2Fmain&after=5e2b9c7a1d3f"),
    "xml": ("application/xml", b"<push><ref>refs/heads/main</ref></push>"),
    "plain-text": ("text/plain; charset=utf-8", b"refs/heads/main 5e2b9c7a1d3f"),
}


@pytest.mark.parametrize("kind", list(WRONG_TYPES))
@pytest.mark.parametrize("name", PARSED)
def test_a_body_of_another_content_type_is_400(door: FrontDoor, name: str, kind: str) -> None:
    """A form, XML or plain text where the type reads JSON (or a GitHub-style form with a
    `payload` field), correctly signed and labelled with its own Content-Type: 400."""
    content_type, body = WRONG_TYPES[kind]
    d = fresh_delivery(name)
    headers = {k: v for k, v in d.signing(body).items() if k.lower() != "content-type"}
    door.refused(door.send(post(door, name, {**headers, "Content-Type": content_type}, body)), 400)


# ---- sizes: headers and body ---------------------------------------------------------------------

OVERSIZE_HEADERS = {
    "one-huge-header": lambda: [("X-Padding", "a" * (64 * 1024))],
    "too-many-headers": lambda: [(f"X-Padding-{i}", "x") for i in range(150)],
}


@pytest.mark.parametrize("kind", list(OVERSIZE_HEADERS))
@pytest.mark.parametrize("name", NAMES)
def test_oversize_headers_are_431(door: FrontDoor, name: str, kind: str) -> None:
    """A valid delivery carrying a 64 KiB header, or 150 headers, is refused before the
    app sees it: 431, as JSON like every other refusal."""
    d = fresh_delivery(name)
    headers = [*d.signed_headers.items(), *OVERSIZE_HEADERS[kind](), (CL, str(len(d.body))), ("Connection", "close")]
    door.refused(door.send(request(door.hook(name), headers, d.body)), 431)


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
@pytest.mark.parametrize("name", NAMES)
def test_a_body_over_the_limit_is_413(door: FrontDoor, name: str, framing: str) -> None:
    """One byte over HERALD_MAX_BODY, correctly signed so that size alone decides: 413,
    whether the length is announced or the body comes in chunks (a chunked body must not be
    cut at the limit and judged as if that were all)."""
    d = fresh_delivery(name)
    body = b'{"pad": "' + b"x" * (MAX_BODY - 10) + b'"}'
    assert len(body) == MAX_BODY + 1
    headers = d.signing(body)
    if framing == "content-length":
        data = post(door, name, headers, body)
    else:
        data = request(door.hook(name), [*headers.items(), (TE, "chunked"), ("Connection", "close")]) + chunked(body)
    door.refused(door.send(data), 413, "larger|limit|too large|size")


# ---- clients that go away ---------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["closed", "reset"])
@pytest.mark.parametrize("name", NAMES)
def test_a_half_sent_request_publishes_nothing_and_the_server_keeps_serving(
        door: FrontDoor, name: str, how: str) -> None:
    """The headers of a valid delivery announcing N bytes, half of them, then the client
    is gone (closed, or reset): whatever arrived is never verified or published, nothing
    is logged as a crash, and the next delivery is served as usual."""
    d = fresh_delivery(name)
    data = post(door, name, d.signed_headers, d.body, close=False)
    cut = data[: len(data) - len(d.body) // 2]
    offset = door.log.stat().st_size
    with socket.create_connection((HOST, door.port), timeout=30) as s:
        s.sendall(cut)
        if how == "reset":
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    # Give the server the moment it takes to see the end of the stream and give up on it.
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and door.log.stat().st_size == offset:
        time.sleep(0.05)
    time.sleep(0.2)
    published = door.newly_published()
    door.reported += published
    problems = door.log_problems(offset) + ([f"{published} request(s) published"] if published else [])
    assert not problems, f"{door.entry}: " + "; ".join(problems)
    door.still_serving(name)


# ---- at the end: the whole log -----------------------------------------------------------------------

def test_the_log_has_no_traceback_and_no_secret_and_the_count_adds_up(door: FrontDoor) -> None:
    """After every scenario above: not one traceback and not one secret in the whole log,
    and the queue holds exactly the requests of the deliveries answered 202."""
    time.sleep(0.5)
    assert door.published() == door.accounted + door.reported, \
        f"{door.entry}: {door.published()} requests queued; {door.accounted} accounted for by 202 answers, " \
        f"{door.reported} by scenarios that failed for it"
    problems = door.log_problems()
    assert not problems, problems
    assert door.proc.poll() is None, f"the {door.entry} server is gone"
