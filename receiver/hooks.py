"""A webhook delivery, from the raw request to the answer: verify, parse, route, publish.

A 2xx means the request is on durable storage (the broker confirmed it): a Git host that got
a 202 never needs to send the delivery again. Anything that stops us short of that answers
with a status that makes the sender retry (503) or tells it what was wrong (4xx), and never
says what signature or token was expected.

`POST /hook/<digest>` is served here as plain WSGI, in front of the Flask app that serves
everything else (receiver.app): the one path that takes thousands of requests a second pays
for no request context, URL map, context-local proxies, response object or after-request
hooks. Flask's share of a delivery's CPU was about 40 % (bench/RESULTS.md, issue 12); what is
left is the delivery itself. The answers are the JSON Flask's `jsonify` writes.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gunicorn.http.errors import ParseException
from werkzeug.datastructures import EnvironHeaders
from werkzeug.http import HTTP_STATUS_CODES
from werkzeug.wsgi import get_content_length, get_input_stream

from herald import config as config_mod
from herald.bus import Bus, BusError, BusUnavailable
from herald.bus.deliveries import DeliveryLog
from herald.history import History
from herald.logs import DELIVERY_HEADER, printable, set_correlation
from herald.messages import (
    IMAGE_QUEUE,
    PLAN_QUEUE,
    RECONCILE_QUEUE,
    ReconcileRequest,
    new_id,
)
from herald.model import Receiver
from receiver import metrics
from receiver.ratelimit import RateLimiter, retry_after_header
from receiver.selection import (
    image_targets,
    plan_targets,
    select,
    split_by_ref,
    webhook_image,
)
from receiver.types import TYPES, BadDelivery, Hook, Keys, PullRequest, ReceiverType

if TYPE_CHECKING:
    from herald.settings import Settings

log = logging.getLogger("herald.receiver")

RETRY_AFTER_SECONDS = "10"
PREFIX = "/hook/"


@dataclass(frozen=True)
class Hookpoint:
    """A Receiver at its URL, with everything needed to judge a delivery, resolved once."""

    receiver: Receiver
    rtype: ReceiverType
    keys: Keys
    where: str  # "namespace/name", for logs and metric labels


def hookpoints(cfg: config_mod.Config) -> dict[str, Hookpoint]:
    table: dict[str, Hookpoint] = {}
    for r in cfg.receivers.values():
        tokens, secret = cfg.receiver_keys(r)
        rtype = TYPES.get(r.type)
        if not tokens or rtype is None:
            continue  # `herald validate` and start-up report these; there is no URL to serve
        path = config_mod.hook_path(tokens[0], r.meta.name, r.meta.namespace)
        table[path] = Hookpoint(r, rtype, Keys(tokens, secret, r.insecure_allow_sha1),
                                f"{r.meta.namespace}/{r.meta.name}")
    return table


@dataclass(frozen=True)
class Routes:
    """The configuration and the hook table built from it, swapped as one: a request reads
    both from the same configuration even while `--from-cluster` swaps in a new one."""

    cfg: config_mod.Config
    hooks: dict[str, Hookpoint]

    @classmethod
    def of(cls, cfg: config_mod.Config) -> Routes:
        return cls(cfg, hookpoints(cfg))


class BodyError(Exception):
    """The body could not be read whole (400)."""


@dataclass
class Answer:
    """What a delivery is answered: a status, a JSON object, and extra headers."""

    status: int
    body: dict[str, Any]
    headers: list[tuple[str, str]] = field(default_factory=list)


def answer(status: int, /, **body: Any) -> Answer:
    out = Answer(status, body)
    if status == 503:
        out.headers.append(("Retry-After", RETRY_AFTER_SECONDS))
    return out


def json_bytes(body: dict[str, Any]) -> bytes:
    """What `jsonify` writes (compact, sorted keys, a final newline)."""
    return (json.dumps(body, separators=(",", ":"), sort_keys=True) + "\n").encode()


def status_line(status: int) -> str:
    return f"{status} {HTTP_STATUS_CODES.get(status, 'UNKNOWN').upper()}"  # as werkzeug writes it


@dataclass
class Delivery:
    """One request to a hook path, as it goes: what its history record and metrics need."""

    point: Hookpoint | None = None
    cid: str = ""
    event: str = ""
    revision: str = ""
    published: list[tuple[str, ReconcileRequest]] = field(default_factory=list)

    def record(self, status: int, said: dict[str, Any]) -> dict[str, object]:
        """What the history keeps of one delivery: who sent what, the answer, what was queued."""
        point = self.point
        assert point is not None
        return {"delivery": self.cid, "receiver": point.where, "type": point.receiver.type,
                "event": self.event, "status": status, "revision": self.revision,
                "answer": printable(str(said.get("error") or said.get("message") or ""), 300),
                "requests": [{"id": req.id, "queue": queue, "target": f"{req.kind}/{req.namespace}/{req.name}"}
                             for queue, req in self.published]}


def read_body(environ: dict[str, Any], limit: int) -> bytes | None:
    """The raw body, or None when it is longer than `limit` bytes; BodyError when it cannot
    be read whole.

    Read by hand rather than through MAX_CONTENT_LENGTH: for a chunked body (no
    Content-Length) werkzeug stops at the limit and returns the first `limit` bytes as if
    that were all, and a truncated body must never be verified, let alone published.
    """
    declared = get_content_length(environ)
    if declared is not None and declared > limit:
        return None
    stream = get_input_stream(environ, max_content_length=None)
    chunks, size = [], 0
    try:
        while size <= limit:
            chunk = stream.read(min(65536, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        else:
            return None
    except ParseException as exc:
        # gunicorn reads a chunked body as the app asks for it, so broken chunk framing (a bad
        # size, a missing CRLF, a bad extension) surfaces here, not before the app runs. The
        # body's end is unknown: gunicorn closes the connection after this answer.
        raise BodyError(f"malformed chunked body: {printable(str(exc), 120)}") from exc
    except (OSError, ValueError) as exc:  # the client went away or was too slow
        raise BodyError("the request body could not be read completely") from exc
    if declared is not None and size < declared:
        # Fewer bytes than announced: a truncated body must never be verified.
        raise BodyError(f"the body ended after {size} of {declared} bytes")
    return b"".join(chunks)


class Hooks:
    """Serves `POST /hook/<digest>`: a delivery, judged and published, answered honestly."""

    def __init__(self, routes: Callable[[], Routes], bus: Bus, deliveries: DeliveryLog, history: History,
                 settings: Settings) -> None:
        self.routes = routes
        self.bus = bus
        self.deliveries = deliveries
        self.history = history
        self.settings = settings
        self.limiter = RateLimiter()

    def wsgi(self, inner: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
        """`inner` (the Flask app) with POST /hook/<digest> served here first."""

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            path = environ.get("PATH_INFO") or ""
            if (environ.get("REQUEST_METHOD") != "POST" or not path.startswith(PREFIX)
                    or "/" in path[len(PREFIX):] or len(path) == len(PREFIX)):
                return inner(environ, start_response)  # not a hook path Flask would route to `hook`
            return self.serve(path, environ, start_response)

        return app

    def serve(self, path: str, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        set_correlation("")  # threads are reused: no line may carry the last request's id
        d = Delivery()
        try:
            said = self.deliver(path, environ, d)
        except Exception:  # a bug: a 500 and its traceback in the log, never a dropped connection
            # Not Flask's "Exception on <path>": the path is the Receiver's secret URL.
            log.exception("receiver=%s: the delivery failed on a bug, answered 500",
                          d.point.where if d.point else "-")
            said = answer(500, error="The server encountered an internal error and was unable to complete "
                                     "your request. Either the server is overloaded or there is an error in "
                                     "the application.")
        point = d.point
        metrics.REQUESTS.labels(receiver=point.where if point else "", type=point.receiver.type if point else "",
                                code=str(said.status)).inc()
        if point is not None:  # each delivery to a Receiver, for `herald deliveries` and the trace pages
            self.history.put("delivery", new_id(), d.record(said.status, said.body))
        data = json_bytes(said.body)
        start_response(status_line(said.status), [("Content-Type", "application/json"),
                                                  ("Content-Length", str(len(data))), *said.headers])
        return [data]

    def deliver(self, path: str, environ: dict[str, Any], d: Delivery) -> Answer:
        current = self.routes()  # one configuration for the whole request
        point = current.hooks.get(path)
        if point is None:
            return answer(404, error="no receiver at this path")
        d.point = point
        r, rtype, where = point.receiver, point.rtype, point.where
        started = time.monotonic()
        max_body = self.settings.max_body

        try:
            body = read_body(environ, max_body)
        except BodyError as exc:
            log.warning("receiver=%s type=%s: body not read (400): %s", where, r.type, exc)
            return answer(400, error=str(exc))
        if body is None:
            log.warning("receiver=%s type=%s: body over the %d-byte limit (413)", where, r.type, max_body)
            return answer(413, error=f"body larger than {max_body} bytes")
        if r.suspend:
            log.info("receiver=%s suspended: delivery refused with 503", where)
            return answer(503, error="receiver is suspended")
        headers = EnvironHeaders(environ)
        if not rtype.verify(headers, body, point.keys):
            metrics.VERIFICATION_FAILURES.labels(receiver=where, type=r.type).inc()
            log.warning("receiver=%s type=%s delivery=%s: signature or token missing or invalid (401)",
                        where, r.type, printable(rtype.delivery_id(headers)))
            return answer(401, error="signature or token missing or invalid")
        try:
            parsed = rtype.parse(headers, body)
        except BadDelivery as exc:
            log.warning("receiver=%s type=%s delivery=%s: malformed delivery (400): %s", where, r.type,
                        printable(rtype.delivery_id(headers)), printable(str(exc), 300))
            return answer(400, error=str(exc))

        delivery = printable(parsed.delivery_id)
        # The delivery id follows the push through every component's logs; senders that give
        # none (Docker Hub, generic hooks) get one made up here.
        # (printable() writes "-" for nothing: the sender's id itself decides.)
        cid = delivery if parsed.delivery_id else f"herald-{new_id().replace('-', '')[:20]}"
        set_correlation(cid)
        d.cid, d.event = cid, printable(parsed.event, 100)
        ctx = f"receiver={where} type={r.type} event={printable(parsed.event)} delivery={delivery}"
        if parsed.ping:
            log.info("%s: ping answered", ctx)
            return answer(200, message="pong")
        if parsed.ignore:
            log.info("%s: ignored: %s", ctx, parsed.ignore)
            return answer(200, message=f"ignored: {parsed.ignore}")
        if rtype.has_events and r.events and parsed.event.lower() not in {e.lower() for e in r.events}:
            log.info("%s: event not in spec.events, nothing published", ctx)
            return answer(200, message=f"event {parsed.event!r} is not in spec.events; ignored")

        if r.rate_limit is not None:
            wait = self.limiter.take(where, r.rate_limit)
            if wait > 0:
                log.warning("%s: rate limit of %d per %gs exceeded (429)", ctx, r.rate_limit.requests,
                            r.rate_limit.interval)
                said = answer(429, error="rate limit exceeded; retry later")
                said.headers.append(("Retry-After", retry_after_header(wait)))
                return said

        dedupe_key = f"{where}|{parsed.delivery_id}" if parsed.delivery_id else ""
        if dedupe_key:
            seen = self.deliveries.first_seen(dedupe_key)
            if seen is not None:
                metrics.DUPLICATES.labels(receiver=where, type=r.type).inc()
                log.info("%s: duplicate of a delivery accepted %.0fs ago, not published again", ctx,
                         time.time() - seen)
                return answer(200, message="duplicate delivery; already accepted", delivery=parsed.delivery_id)

        if parsed.pull_request is not None:
            return self.plan(current.cfg, d, parsed, parsed.pull_request, ctx=ctx, dedupe_key=dedupe_key,
                             started=started)

        # A registry push asks for a scan of the ImageRepositories of its image (and of those
        # spec.resources names, as in Flux); GitRepositories and Kustomizations spec.resources
        # selects are reconciled as well, whatever the sender.
        selected, skipped = split_by_ref(current.cfg, select(current.cfg, r), parsed)
        scans, scans_skipped = image_targets(current.cfg, r, parsed)
        image = webhook_image(parsed)
        if parsed.image and image.name is None:
            log.info("%s: image %s not matched to ImageRepositories: %s", ctx, printable(parsed.image, 200),
                     image.why)
        for s in (*skipped, *scans_skipped):
            log.info("%s: skipped: %s", ctx, s.why)
        if not selected and not scans:
            whys = [s.why for s in (*skipped, *scans_skipped)]
            if not parsed.image:
                return answer(200, message="no selected resource follows this ref; nothing to do", skipped=whys)
            if image.name is None:
                why = image.why
            else:
                why = f"no ImageRepository to scan for {image.name}" + (" (those found are suspended)" if scans_skipped else "")
            return answer(200, message=f"{why}, and spec.resources selects nothing to reconcile; nothing to do",
                          skipped=whys)

        reqs = []
        for sel in selected:
            t = sel.target
            origin = {"receiver": where, "type": r.type, "event": parsed.event,
                      "delivery": parsed.delivery_id, "revision": sel.revision}
            if parsed.image:
                origin["image"] = parsed.image
            if parsed.digest:
                origin["digest"] = parsed.digest
            reqs.append(ReconcileRequest(kind=t.kind, name=t.name, namespace=t.namespace,
                                         reason="webhook", origin=origin))
        scan_reqs = [ReconcileRequest(kind=t.kind, name=t.name, namespace=t.namespace, reason="webhook",
                                      origin={"receiver": where, "type": r.type, "event": parsed.event,
                                              "delivery": parsed.delivery_id, "image": parsed.image,
                                              "tag": image.tag, "digest": image.digest})
                     for t in scans]
        failed = self.publish(RECONCILE_QUEUE, reqs, d, ctx=ctx, dedupe_key=dedupe_key, started=started,
                              more=((IMAGE_QUEUE, scan_reqs),))
        if failed is not None:
            return failed
        targets = [s.target for s in selected] + scans
        ids = [req.id for req in (*reqs, *scan_reqs)]
        named = parsed.image or next((s.revision for s in selected if s.revision), "-")
        d.revision = printable(named, 200)
        log.info("%s revision=%s: published %s", ctx, printable(named, 200),
                 ", ".join(f"{t.kind}/{t.namespace}/{t.name}={i}" for t, i in zip(targets, ids, strict=True)))
        return answer(202, requests=ids, targets=[f"{t.kind}/{t.namespace}/{t.name}" for t in targets])

    def publish(self, queue: str, reqs: list[ReconcileRequest], d: Delivery, *, ctx: str, dedupe_key: str,
                started: float, more: tuple[tuple[str, list[ReconcileRequest]], ...] = ()) -> Answer | None:
        """Put `reqs` on `queue` (and each of `more`'s requests on its queue), each confirmed by
        the broker, then remember the delivery: only once all are on the bus, so a retry after
        a 503 halfway is not taken for a duplicate.

        None once all are on the bus; else the 503 to answer, so the sender retries.
        """
        point = d.point
        assert point is not None
        where, rtype = point.where, point.receiver.type
        batches = ((queue, reqs), *more)
        done, total = 0, sum(len(b) for _, b in batches)
        published = metrics.PUBLISHED.labels(receiver=where, type=rtype)
        try:
            for into, batch in batches:
                for req in batch:
                    self.bus.publish(into, req.to_json(), message_id=req.id, headers={DELIVERY_HEADER: d.cid})
                    d.published.append((into, req))
                    done += 1
                    published.inc()
        except BusUnavailable as exc:
            # During a broker outage the bus says so once, and again when it is back with the
            # count; a line per delivery would be thousands of lines a minute.
            log.log(logging.DEBUG if exc.outage else logging.ERROR,
                    "%s: bus unavailable after %d of %d requests, answered 503 so the sender retries: %s",
                    ctx, done, total, exc)
            return answer(503, error="message bus unavailable; retry later")
        except BusError as exc:  # refused for good (access, a closing bus): still never a 500
            log.error("%s: the bus refused the request after %d of %d, answered 503: %s",
                      ctx, done, total, exc)
            return answer(503, error="message bus unavailable; retry later")
        metrics.PUBLISH_SECONDS.observe(time.monotonic() - started)
        if dedupe_key:
            try:
                self.deliveries.record(dedupe_key)
            except Exception:  # the requests are safe; only a future dedupe is lost
                log.exception("%s: could not record the delivery for dedupe", ctx)
        return None

    def plan(self, cfg: config_mod.Config, d: Delivery, parsed: Hook, pr: PullRequest, *, ctx: str,
             dedupe_key: str, started: float) -> Answer:
        """A pull request asks for a plan of its head, never for a reconcile: one request per
        GitRepository of its repository that follows the branch it would merge into."""
        point = d.point
        assert point is not None
        r, where = point.receiver, point.where
        ctx = f"{ctx} pull_request={pr.number}"
        if pr.action == "closed":
            log.info("%s: pull request closed (%s), no plan", ctx, printable(pr.sender_action, 64))
            return answer(200, message="pull request closed: no plan")
        if not pr.action:
            words = printable(pr.sender_action.replace("_", " ").replace(":", " "), 64) or "event"
            log.info("%s: pull request %s, no plan", ctx, words)
            return answer(200, message=f"pull request {words}: no plan")
        if pr.fork and not r.plan_forks:
            log.info("%s: pull request from a fork (%s), not planned: spec.planForks is not true", ctx,
                     printable(pr.head_clone_url, 200) or "fork deleted")
            return answer(200, message="pull request from a fork: forks are not planned unless "
                                       "spec.planForks: true")
        targets, skipped = plan_targets(cfg, select(cfg, r), pr)
        for s in skipped:
            log.info("%s: skipped: %s", ctx, s.why)
        if not targets:
            return answer(200, message=f"no GitRepository of this repository follows "
                                       f"{printable(pr.base_branch, 200)!r}: no plan",
                          skipped=[s.why for s in skipped])
        pull_request = {"number": pr.number, "action": pr.action, "head": pr.head_sha, "ref": pr.head_ref,
                        "base": pr.base_branch, "url": pr.url, "fork": pr.fork, "headUrl": pr.head_clone_url}
        reqs = [ReconcileRequest(kind=t.kind, name=t.name, namespace=t.namespace, reason="plan",
                                 origin={"receiver": where, "type": r.type, "event": parsed.event,
                                         "delivery": parsed.delivery_id, "pullRequest": dict(pull_request)})
                for t in targets]
        failed = self.publish(PLAN_QUEUE, reqs, d, ctx=ctx, dedupe_key=dedupe_key, started=started)
        if failed is not None:
            return failed
        log.info("%s revision=%s: pull request %s, plan requested for %s", ctx,
                 printable(f"{pr.head_ref}@{pr.head_sha}", 200), pr.action,
                 ", ".join(f"{t.kind}/{t.namespace}/{t.name}={q.id}" for t, q in zip(targets, reqs, strict=True)))
        return answer(202, requests=[q.id for q in reqs],
                      targets=[f"{t.kind}/{t.namespace}/{t.name}" for t in targets])
