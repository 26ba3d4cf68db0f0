"""Local chat and webhook APIs on 127.0.0.1 that answer in the real wire formats.

A provider that passes against these would pass against the real service, because each one
checks what the real one checks and refuses in the real one's words:

- `TeamsWorkflow` — a Teams "Workflows" (Power Automate) webhook trigger. Its URL carries the
  signature in the query (`sig=`). The trigger answers 202 Accepted with an empty body once the
  envelope matches its schema (`type`, and `attachments` whose items have `contentType`,
  `content` and `contentUrl`); then the flow run posts each Adaptive Card, which is where a
  card Teams cannot render fails: such failures are kept in `runs`, as Power Automate's run
  history keeps them, since the webhook caller never hears of them. Refusals use Logic Apps'
  error shape `{"error": {"code": ..., "message": ...}}`: 400 TriggerInputSchemaMismatch,
  401 DirectApiAuthorizationRequired (no `sig`) or DirectApiInvalidAuthorizationSignature,
  404 WorkflowNotFound, 429 with Retry-After.
- `DiscordWebhooks` — Discord's "execute webhook": 204, or 200 with the message under
  `?wait=true`; 400 `{"code": 50035, "message": "Invalid Form Body", "errors": {...}}` naming
  each field over Discord's limits (title 256, description 4096, 25 fields, field name 256,
  value 1024, footer 2048, 6000 in all, 10 embeds, content 2000, username 1-80 without
  "discord"); 404 Unknown Webhook (10015); 401 Invalid Webhook Token (50027); 429 with
  `retry_after` (float seconds) in the body and Retry-After (whole seconds) in the headers.
- `GenericReceiver` — a receiver for Flux's generic webhooks: the event JSON, optionally
  required headers (Authorization) and an `X-Signature: sha256=<hex>` HMAC checked with the
  standard library, independently of the code under test.
- `ForwardProxy` — a plain HTTP forward proxy that records the absolute URLs it was asked for.

Each can serve https with a `Certificate` from tests/smtpserver.py, so the Secret's `ca.crt`
can be tested against a self-signed certificate.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import math
import re
import secrets
import ssl
import sys
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from tests.localserver import ServedOnAThread
from tests.smtpserver import Certificate


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass(frozen=True)
class Request:
    method: str
    target: str  # as on the request line: a path, or an absolute URL when sent to a proxy
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # names lower-cased
    raw: bytes

    def json(self) -> Any:
        return json.loads(self.raw)


@dataclass(frozen=True)
class Received:
    """One request as the server saw it, and what it answered."""

    request: Request
    status: int
    reply: bytes

    @property
    def headers(self) -> dict[str, str]:
        return self.request.headers

    @property
    def body(self) -> Any:
        try:
            return self.request.json()
        except ValueError:
            return None


def json_reply(status: int, data: Any, **headers: str) -> Reply:
    return Reply(status, {"Content-Type": "application/json; charset=utf-8", **headers}, json.dumps(data).encode())


def text_reply(status: int, text: str, content_type: str = "text/plain; charset=utf-8", **headers: str) -> Reply:
    return Reply(status, {"Content-Type": content_type, **headers}, text.encode())


class LocalAPI(ServedOnAThread):
    """The common part: a threaded HTTP(S) server, a log of requests, injected failures."""

    name = "local-api"

    @property
    def thread_name(self) -> str:  # type: ignore[override]
        return self.name

    def __init__(self, *, certificate: Certificate | None = None) -> None:
        self.certificate = certificate
        self.requests: list[Received] = []
        self._failures: deque[tuple[Reply, float]] = deque()
        self._changed = threading.Condition()
        self._http = _Server(("127.0.0.1", 0), _handler_for(self))
        if certificate:
            self._http.socket = certificate.server_context().wrap_socket(self._http.socket, server_side=True)

    @property
    def url(self) -> str:
        host, port = self._http.server_address[:2]
        return f"{'https' if self.certificate else 'http'}://{host}:{port}"

    @property
    def delivered(self) -> list[Received]:
        """The requests the service accepted (2xx)."""
        return [r for r in self.requests if 200 <= r.status < 300]

    def fail_next(self, reply: Reply, *, delay: float = 0.0) -> None:
        """Answer the next request with `reply`, after `delay` seconds, instead of handling it."""
        self._failures.append((reply, delay))

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Received]:
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.delivered) >= count, timeout):
                raise TimeoutError(f"{len(self.delivered)} of {count} deliveries to {self.name} after {timeout}s")
            return self.delivered

    def handle(self, request: Request) -> Reply:
        raise NotImplementedError

    def _serve(self, request: Request) -> Reply:
        if self._failures:
            reply, delay = self._failures.popleft()
            time.sleep(delay)
        else:
            reply = self.handle(request)
        with self._changed:
            self.requests.append(Received(request, reply.status, reply.body))
            self._changed.notify_all()
        return reply


# -- Microsoft Teams: a Workflows (Power Automate) webhook trigger --------------------------


@dataclass(frozen=True)
class FlowRun:
    """What the flow did after the trigger's 202: posted the cards, or failed with `error`."""

    cards: list[dict[str, Any]]
    error: str = ""


TEAMS_MAX_BYTES = 28 * 1024  # Teams refuses a message over about 28 KB
_CARD_ELEMENTS = {"TextBlock", "FactSet", "Container", "ColumnSet", "Column", "Image", "RichTextBlock", "ActionSet"}
_ENUMS = {
    "size": {"default", "small", "medium", "large", "extralarge"},
    "weight": {"default", "lighter", "bolder"},
    "color": {"default", "dark", "light", "accent", "good", "warning", "attention"},
    "fontType": {"default", "monospace"},
    "spacing": {"none", "small", "default", "medium", "large", "extralarge", "padding"},
}
_CONTAINER_STYLES = {"default", "emphasis", "good", "attention", "warning", "accent"}


class TeamsWorkflow(LocalAPI):
    name = "teams-workflow"

    def __init__(self, *, certificate: Certificate | None = None) -> None:
        super().__init__(certificate=certificate)
        self.workflow_id = uuid.uuid4().hex
        self.sig = secrets.token_urlsafe(32)
        self.runs: list[FlowRun] = []

    @property
    def path(self) -> str:
        return f"/workflows/{self.workflow_id}/triggers/manual/paths/invoke"

    @property
    def webhook_url(self) -> str:
        return (f"{self.url}{self.path}?api-version=2016-06-01&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0"
                f"&sig={self.sig}")

    @property
    def cards(self) -> list[dict[str, Any]]:
        """The cards that reached the channel."""
        return [card for run in self.runs if not run.error for card in run.cards]

    def throttle_next(self, retry_after: int) -> None:
        self.fail_next(json_reply(429, _logic_error(
            "WorkflowRequestsThrottled",
            "Number of requests exceeded the limit of 100 over time window of 00:01:00."),
            **{"Retry-After": str(retry_after)}))

    def handle(self, request: Request) -> Reply:
        match = re.fullmatch(r"/workflows/([0-9a-f]+)/triggers/manual/paths/invoke", request.path)
        if not match or match[1] != self.workflow_id:
            workflow = match[1] if match else "?"
            return json_reply(404, _logic_error("WorkflowNotFound", f"The workflow '{workflow}' could not be found."))
        if request.method != "POST":
            return json_reply(405, _logic_error("TriggerRequestMethodNotValid",
                                                f"The HTTP method for this request is not valid: expected 'Post' "
                                                f"and actual '{request.method.title()}'."))
        sig = request.query.get("sig")
        if not sig:
            return json_reply(401, _logic_error("DirectApiAuthorizationRequired",
                                                "The request must be authenticated only by Shared Access scheme."))
        if not hmac.compare_digest(sig, self.sig):
            return json_reply(401, _logic_error("DirectApiInvalidAuthorizationSignature",
                                                "The provided authorization signature is not valid."))
        try:
            envelope = request.json()
        except ValueError as exc:
            return json_reply(400, _logic_error("InvalidRequestContent",
                                                f"The request content is not valid and could not be deserialized: "
                                                f"'{exc}'."))
        problem = _trigger_schema_problem(envelope)
        if problem:
            return json_reply(400, _logic_error(
                "TriggerInputSchemaMismatch",
                f"The input body for trigger 'manual' of type 'Request' did not match its schema definition. "
                f"Error details: '{problem}'."))
        self.runs.append(self._run(envelope, len(request.raw)))
        return Reply(202, {"Content-Length": "0"})

    def _run(self, envelope: dict[str, Any], size: int) -> FlowRun:
        cards = [a.get("content") for a in envelope["attachments"]]
        if size > TEAMS_MAX_BYTES:
            return FlowRun(cards, f"RequestEntityTooLarge: the message is {size} bytes, over Teams' limit")
        for attachment in envelope["attachments"]:
            if attachment["contentType"] != "application/vnd.microsoft.card.adaptive":
                return FlowRun(cards, f"unsupported attachment {attachment['contentType']!r}")
            problems = card_problems(attachment["content"])
            if problems:
                return FlowRun(cards, "AdaptiveCard is not valid: " + "; ".join(problems))
        return FlowRun(cards)


def _logic_error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def _trigger_schema_problem(envelope: Any) -> str:
    """The Teams webhook trigger's request schema: an object with `type` and `attachments`."""
    if not isinstance(envelope, dict):
        return f"Invalid type. Expected Object but got {type(envelope).__name__}."
    missing = [k for k in ("type", "attachments") if k not in envelope]
    if missing:
        return f"Required properties are missing from object: {', '.join(missing)}."
    if not isinstance(envelope["attachments"], list):
        return "Invalid type. Expected Array but got another type. Path 'attachments'."
    for index, attachment in enumerate(envelope["attachments"]):
        if not isinstance(attachment, dict):
            return f"Invalid type. Expected Object. Path 'attachments[{index}]'."
        missing = [k for k in ("contentType", "content", "contentUrl") if k not in attachment]
        if missing:
            return f"Required properties are missing from object: {', '.join(missing)}."
    return ""


def card_problems(card: Any) -> list[str]:
    """What Teams would refuse to render in an Adaptive Card (the subset Herald's card uses)."""
    if not isinstance(card, dict) or card.get("type") != "AdaptiveCard":
        return ["content is not an AdaptiveCard"]
    problems = []
    version = card.get("version")
    if version not in ("1.0", "1.1", "1.2", "1.3", "1.4", "1.5"):
        problems.append(f"version {version!r} is not supported by Teams")
    body = card.get("body")
    if not isinstance(body, list):
        return [*problems, "body must be an array"]
    return problems + _elements_problems(body, "body")


def _elements_problems(elements: list[Any], at: str) -> list[str]:
    problems = []
    for index, element in enumerate(elements):
        where = f"{at}[{index}]"
        kind = element.get("type") if isinstance(element, dict) else None
        if kind not in _CARD_ELEMENTS:
            problems.append(f"{where}: unknown element type {kind!r}")
            continue
        for prop, allowed in _ENUMS.items():
            if prop in element and str(element[prop]).lower() not in allowed:
                problems.append(f"{where}.{prop}: {element[prop]!r} is not one of {sorted(allowed)}")
        if kind == "TextBlock" and not isinstance(element.get("text"), str):
            problems.append(f"{where}: a TextBlock needs a text")
        elif kind == "FactSet":
            facts = element.get("facts")
            if not isinstance(facts, list) or not all(
                    isinstance(f, dict) and isinstance(f.get("title"), str) and isinstance(f.get("value"), str)
                    for f in facts):
                problems.append(f"{where}: facts must be objects with a string title and value")
        elif kind == "Container":
            style = element.get("style")
            if style is not None and str(style).lower() not in _CONTAINER_STYLES:
                problems.append(f"{where}.style: {style!r} is not a container style")
            items = element.get("items")
            if not isinstance(items, list):
                problems.append(f"{where}: a Container needs items")
            else:
                problems += _elements_problems(items, f"{where}.items")
    return problems


# -- Discord: execute webhook ---------------------------------------------------------------


class DiscordWebhooks(LocalAPI):
    name = "discord"

    def __init__(self, *, certificate: Certificate | None = None) -> None:
        super().__init__(certificate=certificate)
        self.webhook_id = str(1187654321098765432 + secrets.randbelow(10**6))
        self.token = secrets.token_urlsafe(51)
        self.deleted = False  # a deleted webhook answers 404 Unknown Webhook
        self.messages: list[dict[str, Any]] = []  # the messages Discord created
        self._snowflake = int(time.time() * 1000) << 22

    @property
    def webhook_url(self) -> str:
        return f"{self.url}/api/webhooks/{self.webhook_id}/{self.token}"

    def rate_limit_next(self, retry_after: float, *, header: str | None = None, is_global: bool = False) -> None:
        """429 as Discord sends it: `retry_after` in the body; Retry-After rounded up, or `header`."""
        body = {"message": "You are being rate limited.", "retry_after": retry_after, "global": is_global}
        headers = {"Retry-After": header if header is not None else str(math.ceil(retry_after)),
                   "X-RateLimit-Scope": "global" if is_global else "shared"}
        if is_global:
            headers["X-RateLimit-Global"] = "true"
        self.fail_next(json_reply(429, body, **headers))

    def handle(self, request: Request) -> Reply:
        match = re.fullmatch(r"/api(?:/v\d+)?/webhooks/(\d+)/([^/]+)", request.path)
        if not match or match[1] != self.webhook_id or self.deleted:
            return json_reply(404, {"message": "Unknown Webhook", "code": 10015})
        if not hmac.compare_digest(match[2], self.token):
            return json_reply(401, {"message": "Invalid Webhook Token", "code": 50027})
        if request.method != "POST":
            return json_reply(405, {"message": "405: Method Not Allowed", "code": 0})
        if not request.headers.get("content-type", "").startswith("application/json"):
            return json_reply(400, {"message": "Cannot send an empty message", "code": 50006})
        try:
            body = request.json()
        except ValueError:
            return json_reply(400, {"message": "The request body contains invalid JSON.", "code": 50109})
        if not isinstance(body, dict):
            not_a_dict = {"code": "DICT_TYPE_CONVERT", "message": "Only dictionaries may be used in a DictType"}
            return json_reply(400, {"message": "Invalid Form Body", "code": 50035,
                                    "errors": {"_errors": [not_a_dict]}})
        errors = discord_form_errors(body)
        if errors:
            return json_reply(400, {"message": "Invalid Form Body", "code": 50035, "errors": errors})
        if not (body.get("content") or body.get("embeds")):
            return json_reply(400, {"message": "Cannot send an empty message", "code": 50006})
        message = self._create(body)
        if request.query.get("wait", "").lower() == "true":
            return json_reply(200, message)
        return Reply(204)

    def _create(self, body: dict[str, Any]) -> dict[str, Any]:
        with self._changed:
            self._snowflake += 1
            message = {
                "id": str(self._snowflake), "type": 0, "content": body.get("content", ""),
                "channel_id": "1187000000000000001", "webhook_id": self.webhook_id,
                "author": {"bot": True, "id": self.webhook_id, "username": body.get("username") or "Captain Hook"},
                "embeds": [{"type": "rich", **e} for e in body.get("embeds") or []],
                "timestamp": datetime.now().astimezone().isoformat(),
            }
            self.messages.append(message)
        return message


def discord_form_errors(body: dict[str, Any]) -> dict[str, Any]:
    """Discord's checks of an execute-webhook body, as its nested `errors` object."""
    errors: dict[str, Any] = {}

    def refuse(path: list[str | int], code: str, message: str) -> None:
        node = errors
        for key in path:
            node = node.setdefault(str(key), {})
        node.setdefault("_errors", []).append({"code": code, "message": message})

    def max_length(path: list[str | int], value: Any, limit: int, required: bool = False) -> None:
        if value is None:
            if required:
                refuse(path, "BASE_TYPE_REQUIRED", "This field is required")
        elif not isinstance(value, str):
            refuse(path, "BASE_TYPE_STRING", "Could not interpret value as string.")
        elif required and not value:
            refuse(path, "BASE_TYPE_REQUIRED", "This field is required")
        elif len(value) > limit:
            refuse(path, "BASE_TYPE_MAX_LENGTH", f"Must be {limit} or fewer in length.")

    max_length(["content"], body.get("content"), 2000)
    username = body.get("username")
    if username is not None:
        if not isinstance(username, str) or not 1 <= len(username) <= 80:
            refuse(["username"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 80 in length.")
        else:
            for word in ("discord", "clyde"):
                if word in username.lower():
                    refuse(["username"], "USERNAME_INVALID_CONTAINS", f'Username cannot contain "{word}"')
    embeds = body.get("embeds")
    if embeds is None:
        return errors
    if not isinstance(embeds, list):
        refuse(["embeds"], "LIST_TYPE_CONVERT", "Only iterables may be used in a ListType")
        return errors
    if len(embeds) > 10:
        refuse(["embeds"], "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length.")
    total = 0
    for n, embed in enumerate(embeds):
        at: list[str | int] = ["embeds", n]
        if not isinstance(embed, dict):
            refuse(at, "DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType")
            continue
        max_length([*at, "title"], embed.get("title"), 256)
        max_length([*at, "description"], embed.get("description"), 4096)
        footer = embed.get("footer")
        if footer is not None:
            max_length([*at, "footer", "text"], footer.get("text") if isinstance(footer, dict) else None, 2048, True)
        author = embed.get("author")
        if author is not None:
            max_length([*at, "author", "name"], author.get("name") if isinstance(author, dict) else None, 256, True)
        color = embed.get("color")
        if color is not None and (not isinstance(color, int) or isinstance(color, bool) or not 0 <= color <= 0xFFFFFF):
            refuse([*at, "color"], "NUMBER_TYPE_MAX", "int value should be less than or equal to 16777215.")
        stamp = embed.get("timestamp")
        if stamp is not None and not _iso8601(stamp):
            refuse([*at, "timestamp"], "DATE_TIME_TYPE_PARSE",
                   f'Could not parse {stamp}. Should be ISO8601.')
        fields = embed.get("fields") or []
        if not isinstance(fields, list):
            refuse([*at, "fields"], "LIST_TYPE_CONVERT", "Only iterables may be used in a ListType")
            fields = []
        if len(fields) > 25:
            refuse([*at, "fields"], "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
        for i, f in enumerate(fields):
            f = f if isinstance(f, dict) else {}
            max_length([*at, "fields", i, "name"], f.get("name"), 256, True)
            max_length([*at, "fields", i, "value"], f.get("value"), 1024, True)
            total += len(str(f.get("name") or "")) + len(str(f.get("value") or ""))
        total += sum(len(str(x or "")) for x in (
            embed.get("title"), embed.get("description"),
            footer.get("text") if isinstance(footer, dict) else None,
            author.get("name") if isinstance(author, dict) else None))
    if total > 6000:
        refuse(["embeds"], "MAX_EMBED_SIZE_EXCEEDED", "Embed size exceeds maximum size of 6000")
    return errors


def _iso8601(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


# -- a generic webhook receiver -------------------------------------------------------------


class GenericReceiver(LocalAPI):
    """Takes Flux's event JSON at a secret path; checks headers and the HMAC when told to."""

    name = "generic-receiver"

    def __init__(self, *, hmac_key: str | None = None, required_headers: dict[str, str] | None = None,
                 certificate: Certificate | None = None, answer: int = 200) -> None:
        super().__init__(certificate=certificate)
        self.path = f"/hooks/{secrets.token_urlsafe(24)}"
        self.hmac_key = hmac_key
        self.required_headers = {k.lower(): v for k, v in (required_headers or {}).items()}
        self.answer = answer

    @property
    def webhook_url(self) -> str:
        return self.url + self.path

    @property
    def events(self) -> list[dict[str, Any]]:
        return [r.body for r in self.delivered]

    def handle(self, request: Request) -> Reply:
        if request.path != self.path:
            return text_reply(404, "404 page not found")
        if request.method != "POST":
            return text_reply(405, "method not allowed")
        for name, value in self.required_headers.items():
            if not hmac.compare_digest(request.headers.get(name, ""), value):
                return text_reply(401, "unauthorized")
        if self.hmac_key is not None:
            problem = _signature_problem(request.headers.get("x-signature", ""), request.raw, self.hmac_key)
            if problem:
                return text_reply(401, f"failed to verify HMAC signature: {problem}")
        try:
            event = request.json()
        except ValueError:
            return text_reply(400, "the body is not JSON")
        if not isinstance(event, dict) or "involvedObject" not in event:
            return text_reply(400, "the body is not a Flux event")
        return Reply(self.answer) if self.answer == 204 else text_reply(self.answer, "ok")


def _signature_problem(header: str, body: bytes, key: str) -> str:
    """Flux's documented check: `<hash-function>=<hex>`, HMAC of the raw body with the token."""
    if not header:
        return "missing X-Signature header"
    algorithm, sep, value = header.partition("=")
    if not sep or algorithm not in ("sha224", "sha256", "sha384", "sha512"):
        return f"unsupported signature algorithm {algorithm!r}"
    expected = hmac.new(key.encode(), body, getattr(hashlib, algorithm)).hexdigest()
    return "" if hmac.compare_digest(expected, value) else "HMACs do not match"


# -- a forward proxy ------------------------------------------------------------------------


class ForwardProxy(LocalAPI):
    """Forwards plain-http requests sent in absolute form and notes each URL it was asked for."""

    name = "proxy"

    @property
    def seen(self) -> list[str]:
        return [r.request.target for r in self.requests]

    def handle(self, request: Request) -> Reply:
        target = urlsplit(request.target)
        if target.scheme != "http" or not target.hostname:
            return text_reply(400, "this proxy forwards absolute http:// requests only")
        connection = http.client.HTTPConnection(target.hostname, target.port or 80, timeout=10)
        try:
            path = target.path + (f"?{target.query}" if target.query else "")
            hop_by_hop = {"proxy-connection", "connection", "keep-alive", "proxy-authorization", "host"}
            headers = {k: v for k, v in request.headers.items() if k not in hop_by_hop}
            connection.request(request.method, path or "/", body=request.raw, headers=headers)
            response = connection.getresponse()
            body = response.read()
            headers = {k: v for k, v in response.getheaders() if k.lower() not in ("transfer-encoding", "connection")}
            return Reply(response.status, headers, body)
        except OSError as exc:
            return text_reply(502, f"proxy could not reach {target.hostname}: {exc}")
        finally:
            connection.close()


# -- plumbing -------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that gave up (a timeout test) or refused the certificate is expected."""
        if not isinstance(sys.exc_info()[1], (ConnectionError, ssl.SSLError)):
            super().handle_error(request, client_address)


def _handler_for(api: LocalAPI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def _serve(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            parts = urlsplit(self.path)
            request = Request(
                method=self.command, target=self.path, path=parts.path,
                query=dict(parse_qsl(parts.query, keep_blank_values=True)),
                headers={k.lower(): v for k, v in self.headers.items()}, raw=raw,
            )
            reply = api._serve(request)
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                if name.lower() != "content-length":
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve  # noqa: N815 (http.server's naming)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            """Quiet: pytest shows the assertions, not an access log."""

    return Handler
