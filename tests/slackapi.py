"""A local Slack: the Web API's chat.postMessage and chat.update, and an incoming webhook.

It answers in Slack's documented wire formats, so a provider that passes here would pass
against Slack:
- chat.postMessage and chat.update say HTTP 200 with `{"ok": false, "error": "..."}` for every
  refusal (not_authed, invalid_auth, channel_not_found, is_archived, no_text, invalid_blocks,
  ...) except a rate limit, which is HTTP 429 with `Retry-After` and `"error": "ratelimited"`.
- chat.postMessage takes a channel name or ID and answers with the ID; `thread_ts` makes the
  message a reply and `reply_broadcast` also shows that reply in the channel. A `thread_ts`
  that names no message (never posted, or deleted) is answered `ok` and the reply is then shown
  nowhere: that is what Slack does (python-slack-sdk#840, slack-php-api#40), and why a provider
  must not trust a remembered ts without checking it. A locked thread answers
  `restricted_action_thread_locked`.
- chat.update takes only a channel ID (a name is `channel_not_found`, as Slack's maintainers
  confirm in python-slack-sdk#696) and the message's `ts`; it answers message_not_found (no such
  message, or deleted), cant_update_message (posted by another token), edit_window_closed
  (the workspace's edit window, `edit_window` seconds, has passed), is_inactive (archived
  channel), msg_too_long (text over 4,000 characters). Attachments and blocks it is not given
  are kept, as documented.
- an incoming webhook answers `ok`, or a bare error code with an HTTP status: 400
  invalid_payload / no_text, 403 invalid_token, 404 no_service, 410 channel_is_archived,
  429 rate_limited, 500 rollup_error.
It also checks the Block Kit limits Slack enforces (3000 characters a section, 10 fields of
2000, 50 blocks), so a message that is too long fails here as it would there. Given an
`ssl.SSLContext`, it serves https, for tests of a private CA.

`hold()` keeps the requests that arrive waiting, unanswered and not yet handled, until the test
releases them: an outage that ends at a moment the test chooses, so that races between
deliveries happen every run instead of now and then.
"""

from __future__ import annotations

import json
import secrets
import socket
import ssl
import sys
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

from tests.localserver import ServedOnAThread

WEBHOOK_TEAM = "T0HERALD01"
WEBHOOK_BOT = "B0HERALD01"

_Reply = tuple[dict[str, str], bytes]  # headers, body
# what was parsed, status, reply, and which list a success goes to ("messages", "updates", "lost")
_Outcome = tuple[dict[str, Any] | None, int, _Reply, str]
_CONTENT = ("text", "username", "attachments", "blocks")


@dataclass(frozen=True)
class Received:
    """One request as the server saw it, with the Slack error code it answered ("" if posted)."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any] | None  # the parsed JSON, or the form with its JSON fields decoded
    status: int
    error: str


@dataclass
class Message:
    """A message as Slack keeps it: what people see now, changed in place by chat.update."""

    channel: str  # the channel's ID
    ts: str
    token: str  # the token that posted it: only its owner may update it
    content: dict[str, Any]  # text, username, attachments, blocks
    thread_ts: str = ""  # a reply's parent; "" for a message in the channel itself
    broadcast: bool = False  # a reply shown in the channel too (reply_broadcast)
    posted_at: float = 0.0  # time.monotonic(), for the edit window
    edits: int = 0
    deleted: bool = False
    replies: list[Message] = field(default_factory=list)

    @property
    def color(self) -> str:
        attachments = self.content.get("attachments") or [{}]
        return str(attachments[0].get("color", ""))


@dataclass
class Held:
    """A request kept waiting by `SlackAPIServer.hold`: where it went and what it said."""

    path: str
    body: dict[str, Any]  # the JSON body or the form, as far as it could be read
    gate: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def text(self) -> str:
        return str(self.body.get("text", ""))


@dataclass(frozen=True)
class _Failure:
    status: int
    retry_after: float | None
    body: str | None
    delay: float
    path: str | None  # only a request to this path fails; None: any


class SlackAPIServer(ServedOnAThread):
    """Start it, point a provider at `post_message_url` or `webhook_url`, read `messages`."""

    thread_name = "slack-api"

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.tokens: set[str] = {"xoxb-test"}
        self.channels: set[str] = {"general", "C123"}
        self.archived: set[str] = set()  # channels that answer is_archived / channel_is_archived
        self.webhook_channel = "general"  # the channel the webhook was installed for
        self.webhook_path = f"/services/{WEBHOOK_TEAM}/{WEBHOOK_BOT}/{secrets.token_urlsafe(18)}"
        self.edit_window: float | None = None  # seconds a message may be edited; None: always
        self.requests: list[Received] = []  # everything that arrived
        self.messages: list[Received] = []  # what Slack would have posted where people see it
        self.updates: list[Received] = []  # the chat.update calls that changed a message
        self.lost: list[Received] = []  # replies Slack said ok to, to threads that do not exist
        self.store: dict[tuple[str, str], Message] = {}  # (channel ID, ts) → message
        self.locked: set[tuple[str, str]] = set()  # (channel ID, ts) of threads admins locked
        self._failures: deque[_Failure] = deque()
        self._holding: set[str | None] = set()  # paths whose requests wait; None: every path
        self.held: list[Held] = []  # requests waiting for `release`, in arrival order
        self._changed = threading.Condition()
        self._ts = 0
        self._tls = tls
        self._http = _Server(("127.0.0.1", 0), _handler_for(self), tls)

    @property
    def url(self) -> str:
        host, port = self._http.server_address[:2]
        return f"{'https' if self._tls else 'http'}://{host}:{port}"

    @property
    def post_message_url(self) -> str:
        return f"{self.url}/api/chat.postMessage"

    @property
    def update_url(self) -> str:
        return f"{self.url}/api/chat.update"

    @property
    def webhook_url(self) -> str:
        return self.url + self.webhook_path

    def fail_next(
        self,
        status: int = 500,
        *,
        retry_after: float | None = None,
        body: str | None = None,
        delay: float = 0.0,
        path: str | None = None,
    ) -> None:
        """Answer the next request (to `path`, if given) with `status` after `delay` seconds,
        instead of handling it.

        429 carries `Retry-After` and Slack's rate-limit body; other bodies default to what
        Slack's edge sends for that endpoint, or `body` when given.
        """
        with self._changed:
            self._failures.append(_Failure(status, retry_after, body, delay, path))

    def hold(self, path: str | None = None) -> None:
        """From now on, keep each request (to `path`, if given) waiting until `release`."""
        with self._changed:
            self._holding.add(path)

    def wait_held(self, count: int, timeout: float = 5.0) -> list[Held]:
        """Block until `count` requests are being held."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.held) >= count, timeout):
                raise TimeoutError(f"{len(self.held)} of {count} held Slack requests after {timeout}s")
            return list(self.held)

    def release(self, which: Callable[[Held], bool] | None = None) -> list[Held]:
        """Let the held requests `which` picks go on; without `which`, all of them, and stop
        holding. Returns those released."""
        with self._changed:
            if which is None:
                self._holding.clear()
            released = [h for h in self.held if which is None or which(h)]
            self.held = [h for h in self.held if h not in released]
        for held in released:
            held.gate.set()
        return released

    def stop(self) -> None:
        self.release()
        super().stop()

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Received]:
        """Block until `count` messages were posted; the provider may post from another thread."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.messages) >= count, timeout):
                raise TimeoutError(f"{len(self.messages)} of {count} Slack messages after {timeout}s")
            return list(self.messages)

    # -- what a person in the workspace would see, or do ------------------------------------

    @staticmethod
    def channel_id(channel: str) -> str:
        """The ID Slack gives a channel name (an ID stays itself)."""
        return _channel_id(channel)

    def message(self, channel: str, ts: str) -> Message:
        return self.store[(_channel_id(channel), ts)]

    def channel_messages(self, channel: str) -> list[Message]:
        """What the channel shows, oldest first: its messages and the replies broadcast to it."""
        cid = _channel_id(channel)
        with self._changed:
            return [m for (c, _), m in sorted(self.store.items()) if c == cid and not m.deleted
                    and (not m.thread_ts or m.broadcast)]

    def thread(self, channel: str, ts: str) -> list[Message]:
        """The replies in the thread under (channel, ts), oldest first."""
        return list(self.message(channel, ts).replies)

    def delete(self, channel: str, ts: str) -> None:
        """A person deletes the message (its thread's replies stay, as in Slack)."""
        self.message(channel, ts).deleted = True

    def lock(self, channel: str, ts: str) -> None:
        """An admin locks the thread: it takes no more replies."""
        self.locked.add((_channel_id(channel), ts))

    # -- what Slack does with a request ---------------------------------------------------

    def _handle(self, path: str, headers: dict[str, str], raw: bytes) -> tuple[int, dict[str, str], bytes]:
        api = path.startswith("/api/")
        self._wait_if_held(path, headers, raw)
        failure = self._take_failure(path)
        if failure:
            time.sleep(failure.delay)
            body, status, reply, kind = None, failure.status, self._failure_reply(api, failure), ""
        elif path in ("/api/chat.postMessage", "/api/chat.update"):
            body, status, reply, kind = self._web_api(path.removeprefix("/api/"), headers, raw)
        elif path.startswith("/services/"):
            body, status, reply, kind = self._webhook(path, headers, raw)
        else:
            body, status, reply, kind = None, 404, _text("404 Not Found"), ""
        error = _error_of(status, reply)
        received = Received(path, headers, body, status, error)
        with self._changed:
            self.requests.append(received)
            if status == 200 and not error and kind:
                getattr(self, kind).append(received)
            self._changed.notify_all()
        return status, reply[0], reply[1]

    def _wait_if_held(self, path: str, headers: dict[str, str], raw: bytes) -> None:
        with self._changed:
            if not self._holding & {None, path}:
                return
            held = Held(path, _readable(headers, raw))
            self.held.append(held)
            self._changed.notify_all()
        held.gate.wait()

    def _take_failure(self, path: str) -> _Failure | None:
        with self._changed:
            for failure in self._failures:
                if failure.path in (None, path):
                    self._failures.remove(failure)
                    return failure
        return None

    def _failure_reply(self, api: bool, failure: _Failure) -> _Reply:
        if failure.body is not None:
            headers, payload = _text(failure.body)
        elif failure.status == 429:
            headers, payload = _api_error("ratelimited") if api else _text("rate_limited")
        else:  # Slack's edge answers the Web API's outages with a page, a webhook's with a code
            headers, payload = _text("<html><body>Service Unavailable</body></html>" if api else "rollup_error")
        if failure.retry_after is not None:
            headers["Retry-After"] = f"{failure.retry_after:g}"
        return headers, payload

    def _web_api(self, method: str, headers: dict[str, str], raw: bytes) -> _Outcome:
        """The steps every Web API method shares: the body's format, then the token."""
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        token = headers.get("authorization", "").removeprefix("Bearer ").strip()
        if content_type == "application/json":
            try:
                args = json.loads(raw or b"null")
            except (UnicodeDecodeError, json.JSONDecodeError):
                return None, 200, _api_error("invalid_json"), ""
            if not isinstance(args, dict):
                return None, 200, _api_error("json_not_object"), ""
        elif content_type == "application/x-www-form-urlencoded":
            args = {k: v[-1] for k, v in parse_qs(raw.decode("utf-8", "replace")).items()}
            token = token or args.pop("token", "")
            for key in ("attachments", "blocks"):
                if key in args:
                    try:
                        args[key] = json.loads(args[key])
                    except json.JSONDecodeError:
                        return args, 200, _api_error(f"invalid_{key}"), ""
        else:
            return None, 200, _api_error("invalid_post_type"), ""
        if not token:
            return args, 200, _api_error("not_authed"), ""
        if token not in self.tokens:
            return args, 200, _api_error("invalid_auth"), ""
        with self._changed:  # one request at a time changes the store
            if method == "chat.update":
                return self._update(args, token)
            return self._post_message(args, token)

    def _content_problem(self, args: dict[str, Any], text_limit: int) -> _Reply | None:
        text, blocks, attachments = args.get("text"), args.get("blocks"), args.get("attachments")
        if not (text or blocks or attachments):
            return _api_error("no_text")
        if isinstance(text, str) and len(text) > text_limit:
            return _api_error("msg_too_long")
        if isinstance(attachments, list) and len(attachments) > 100:
            return _api_error("too_many_attachments")
        problems = _message_problems(args)
        if problems:
            return _api_error("invalid_blocks", errors=problems)
        return None

    def _post_message(self, args: dict[str, Any], token: str) -> _Outcome:
        channel = str(args.get("channel") or "")
        if channel not in self.channels and channel not in {_channel_id(c) for c in self.channels}:
            return args, 200, _api_error("channel_not_found"), ""
        if channel in self.archived or _channel_id(channel) in {_channel_id(c) for c in self.archived}:
            return args, 200, _api_error("is_archived"), ""
        problem = self._content_problem(args, 40000)
        if problem:
            return args, 200, problem, ""
        cid = _channel_id(channel)
        thread_ts = str(args.get("thread_ts") or "")
        parent = self.store.get((cid, thread_ts)) if thread_ts else None
        if parent is not None and parent.thread_ts:  # a reply's ts: Slack threads under its parent
            parent = self.store.get((cid, parent.thread_ts))
        if parent is not None and (cid, parent.ts) in self.locked:
            return args, 200, _api_error("restricted_action_thread_locked"), ""
        ts = self._next_ts()
        content = {k: args[k] for k in _CONTENT if k in args}
        message = {"type": "message", "subtype": "bot_message", "bot_id": WEBHOOK_BOT, "ts": ts, **content}
        if thread_ts:
            message["thread_ts"] = parent.ts if parent is not None and not parent.deleted else thread_ts
        kind = "messages"
        if thread_ts and (parent is None or parent.deleted):
            kind = "lost"  # ok, and shown nowhere
        else:
            posted = Message(cid, ts, token, content, posted_at=time.monotonic())
            if parent is not None:
                posted.thread_ts = parent.ts
                posted.broadcast = _truthy(args.get("reply_broadcast"))
                parent.replies.append(posted)
            self.store[(cid, ts)] = posted
        return args, 200, _json({"ok": True, "channel": cid, "ts": ts, "message": message}), kind

    def _update(self, args: dict[str, Any], token: str) -> _Outcome:
        channel, ts = str(args.get("channel") or ""), str(args.get("ts") or "")
        if channel not in {_channel_id(c) for c in self.channels}:  # an ID only: names are not found
            return args, 200, _api_error("channel_not_found"), ""
        if channel in {_channel_id(c) for c in self.archived}:
            return args, 200, _api_error("is_inactive"), ""
        message = self.store.get((channel, ts))
        if message is None or message.deleted:
            return args, 200, _api_error("message_not_found"), ""
        if message.token != token:
            return args, 200, _api_error("cant_update_message"), ""
        if self.edit_window is not None and time.monotonic() - message.posted_at >= self.edit_window:
            return args, 200, _api_error("edit_window_closed"), ""
        problem = self._content_problem(args, 4000)
        if problem:
            return args, 200, problem, ""
        message.content.update({k: args[k] for k in ("text", "attachments", "blocks") if k in args})
        message.edits += 1
        shown = {"type": "message", "ts": ts, "edited": {"user": WEBHOOK_BOT, "ts": self._next_ts()},
                 **message.content}
        reply = {"ok": True, "channel": channel, "ts": ts, "text": message.content.get("text", ""), "message": shown}
        return args, 200, _json(reply), "updates"

    def _webhook(self, path: str, headers: dict[str, str], raw: bytes) -> _Outcome:
        parts = path.split("/")[2:]
        if len(parts) != 3 or parts[:2] != [WEBHOOK_TEAM, WEBHOOK_BOT]:
            return None, 404, _text("no_service"), ""
        if path != self.webhook_path:
            return None, 403, _text("invalid_token"), ""
        if self.webhook_channel in self.archived:
            return None, 410, _text("channel_is_archived"), ""
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        try:
            if content_type == "application/x-www-form-urlencoded":  # the legacy payload= form
                raw = parse_qs(raw.decode("utf-8"))["payload"][-1].encode()
            body = json.loads(raw)
        except (UnicodeDecodeError, KeyError, json.JSONDecodeError):
            return None, 400, _text("invalid_payload"), ""
        if not isinstance(body, dict):
            return None, 400, _text("invalid_payload"), ""
        if not (body.get("text") or body.get("blocks") or body.get("attachments")):
            return body, 400, _text("no_text"), ""
        if _message_problems(body):
            return body, 400, _text("invalid_blocks"), ""
        return body, 200, _text("ok"), "messages"

    def _next_ts(self) -> str:
        with self._changed:
            self._ts += 1
            return f"{int(time.time())}.{self._ts:06d}"


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler],
                 tls: ssl.SSLContext | None) -> None:
        self.tls = tls
        super().__init__(address, handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        """With TLS, the handshake happens here, in the request's thread, not in accept()."""
        if self.tls is None:
            super().finish_request(request, client_address)
            return
        with self.tls.wrap_socket(request, server_side=True) as wrapped:
            super().finish_request(wrapped, client_address)

    def shutdown_request(self, request: Any) -> None:
        if request.fileno() == -1:  # detached into the TLS socket, which is closed already
            return
        try:
            request.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        request.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that gave up (a timeout test) or did not trust our certificate is expected;
        anything else is a bug to show."""
        if not isinstance(sys.exc_info()[1], (ConnectionError, ssl.SSLError, TimeoutError)):
            super().handle_error(request, client_address)


def _handler_for(server: SlackAPIServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, reply_headers, payload = server._handle(self.path, headers, raw)
            self.send_response(status)
            for name, value in reply_headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            """Quiet: pytest shows the assertions, not an access log."""

    return Handler


def _readable(headers: dict[str, str], raw: bytes) -> dict[str, Any]:
    """A request's JSON body or form, for a test to see which one it is; {} when neither."""
    try:
        if headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            return {k: v[-1] for k, v in parse_qs(raw.decode("utf-8")).items()}
        body = json.loads(raw or b"null")
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return body if isinstance(body, dict) else {}


def _truthy(value: Any) -> bool:
    """A boolean argument, as JSON sends it or as a form does ("true", "1")."""
    return value is True or (isinstance(value, str) and value.lower() in ("true", "1")) or value == 1


def _json(data: dict[str, Any]) -> _Reply:
    return {"Content-Type": "application/json; charset=utf-8"}, json.dumps(data).encode()


def _text(text: str) -> _Reply:
    return {"Content-Type": "text/html"}, text.encode()


def _api_error(code: str, **extra: Any) -> _Reply:
    return _json({"ok": False, "error": code, **extra})


def _error_of(status: int, reply: _Reply) -> str:
    """The Slack error code in a reply, whichever of the two formats it uses."""
    headers, payload = reply
    if headers["Content-Type"].startswith("application/json"):
        return json.loads(payload).get("error", "")
    return "" if status == 200 else payload.decode()


def _channel_id(channel: str) -> str:
    """Slack answers with the channel's ID even when it was given a name."""
    return channel if channel[:1] in "CGD" and channel.isupper() else f"C{zlib.crc32(channel.encode()):08X}"


def _message_problems(message: dict[str, Any]) -> list[str]:
    """Block Kit limits, in Slack's `invalid_blocks` wording, for the message and its attachments."""
    problems = _blocks_problems(message.get("blocks"), "/blocks")
    for index, attachment in enumerate(message.get("attachments") or []):
        if isinstance(attachment, dict):
            problems += _blocks_problems(attachment.get("blocks"), f"/attachments/{index}/blocks")
    return problems


def _blocks_problems(blocks: Any, pointer: str) -> list[str]:
    if blocks is None:
        return []
    if not isinstance(blocks, list):
        return [f"must be an array [json-pointer:{pointer}]"]
    problems = [f"no more than 50 items allowed [json-pointer:{pointer}]"] if len(blocks) > 50 else []
    for index, block in enumerate(blocks):
        at = f"{pointer}/{index}"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "section":
            text, fields = block.get("text"), block.get("fields")
            if text is None and not fields:
                problems.append(f"must provide either text or fields [json-pointer:{at}]")
            if text is not None:
                problems += _text_problems(text, 3000, f"{at}/text")
            if fields is not None:
                if not isinstance(fields, list) or len(fields) > 10:
                    problems.append(f"no more than 10 items allowed [json-pointer:{at}/fields]")
                else:
                    for n, field in enumerate(fields):
                        problems += _text_problems(field, 2000, f"{at}/fields/{n}")
        elif kind == "context":
            elements = block.get("elements")
            if not isinstance(elements, list) or not 1 <= len(elements) <= 10:
                problems.append(f"must have between 1 and 10 items [json-pointer:{at}/elements]")
        elif kind not in ("divider", "header", "image", "actions", "rich_text", "file", "video", "markdown"):
            problems.append(f"unsupported type {kind!r} [json-pointer:{at}]")
    return problems


def _text_problems(text: Any, limit: int, at: str) -> list[str]:
    if not isinstance(text, dict) or text.get("type") not in ("mrkdwn", "plain_text"):
        return [f"must be a text object [json-pointer:{at}]"]
    value = text.get("text")
    if not isinstance(value, str) or not 1 <= len(value) <= limit:
        return [f"must be between 1 and {limit} characters [json-pointer:{at}/text]"]
    return []
