"""The receiver's WSGI app: verify a webhook, publish reconcile (plan, scan) requests, answer honestly.

A 2xx means the request is on durable storage (the broker confirmed it): a Git host that got
a 202 never needs to send the delivery again. Anything that stops us short of that answers
with a status that makes the sender retry (503) or tells it what was wrong (4xx), and never
says what signature or token was expected.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from flask import Flask, Response, g, has_request_context, jsonify, request
from gunicorn.http.errors import ParseException
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    generate_latest,
    multiprocess,
)
from werkzeug.exceptions import BadRequest, HTTPException
from werkzeug.wsgi import get_input_stream

from herald import config as config_mod
from herald.bus import Bus, BusError, BusUnavailable, open_bus
from herald.bus.deliveries import DeliveryLog, open_delivery_log
from herald.history import History, open_history
from herald.logs import DELIVERY_HEADER, printable, set_correlation
from herald.messages import IMAGE_QUEUE, PLAN_QUEUE, RECONCILE_QUEUE, ReconcileRequest, new_id
from herald.model import Receiver
from herald.settings import Settings
from herald.suspensions import Applier as SuspensionApplier
from herald.suspensions import Suspensions, open_suspensions
from receiver import metrics
from receiver.operator.access import Access
from receiver.operator.api import Operator
from receiver.operator.api import register as register_api
from receiver.operator.ui import register as register_ui
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
    from herald.cluster_config import ClusterConfig

log = logging.getLogger("herald.receiver")

RETRY_AFTER_SECONDS = "10"


@dataclass(frozen=True)
class Hookpoint:
    """A Receiver at its URL, with everything needed to judge a delivery, resolved once."""

    receiver: Receiver
    rtype: ReceiverType
    keys: Keys
    where: str  # "namespace/name", for logs and metric labels


def _hookpoints(cfg: config_mod.Config) -> dict[str, Hookpoint]:
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
        return cls(cfg, _hookpoints(cfg))


def _read_body(limit: int) -> bytes | None:
    """The raw body, or None when it is longer than `limit` bytes.

    Read by hand rather than through MAX_CONTENT_LENGTH: for a chunked body (no
    Content-Length) werkzeug stops at the limit and returns the first `limit` bytes as if
    that were all, and a truncated body must never be verified, let alone published.
    """
    declared = request.content_length
    if declared is not None and declared > limit:
        return None
    stream = get_input_stream(request.environ, max_content_length=None)
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
        raise BadRequest(f"malformed chunked body: {printable(str(exc), 120)}") from exc
    except (OSError, ValueError) as exc:  # the client went away or was too slow
        raise BadRequest("the request body could not be read completely") from exc
    if declared is not None and size < declared:
        # Fewer bytes than announced: a truncated body must never be verified.
        raise BadRequest(f"the body ended after {size} of {declared} bytes")
    return b"".join(chunks)


def _metrics_text() -> bytes:
    """This process' metrics, or, under gunicorn (PROMETHEUS_MULTIPROC_DIR set by
    gunicorn.conf.py), every worker's summed: a scrape reaches one worker at random, and
    its own counters alone would jump about from scrape to scrape."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest()


def _answer(code: int, **body: object) -> Response:
    # What `jsonify` writes (compact, sorted keys, a final newline), without its detour
    # through the app's JSON provider and response factory on every webhook.
    resp = Response(json.dumps(body, separators=(",", ":"), sort_keys=True) + "\n", status=code,
                    mimetype="application/json")
    if has_request_context():
        g.answer = body  # for the delivery's record in the history
    if code == 503:
        resp.headers["Retry-After"] = RETRY_AFTER_SECONDS
    return resp


def create_app(
    cfg: config_mod.Config | None = None,
    bus: Bus | None = None,
    settings: Settings | None = None,
    deliveries: DeliveryLog | None = None,
    history: History | None = None,
    suspensions: Suspensions | None = None,
) -> Flask:
    """The app factory gunicorn calls (`receiver.app:create_app()`): with no arguments, the
    configuration, broker and limits come from HERALD_* environment variables.

    `history` and `suspensions` (opened beside the bus when not given) back the operator API
    and the status page (`receiver.operator`); each delivery is recorded in the history."""
    settings = settings or Settings.from_env()
    source = None
    standalone = cfg is None
    if cfg is None:
        # Called by gunicorn, which sets up only its own loggers: ours would go nowhere (or,
        # without any handler, only warnings would reach stderr).
        if not logging.getLogger().handlers:
            from herald import logs

            logs.setup(settings.log_level, settings.log_format)
        if settings.from_cluster:
            source = _from_cluster(settings)
            cfg = source.config
        elif not settings.config:
            raise SystemExit("herald receiver: no configuration (set HERALD_CONFIG or pass -c)")
        else:
            cfg = config_mod.load(settings.config, settings.secrets_dir or None)  # errors: refuse to start
            # What the fleet's renders added (herald.fleet), as the workers recorded it, and what
            # they add from now on.
            from herald.fleet import Fleet

            source = Fleet(settings.config, settings.secrets_dir or None, settings.state_dir, settings.broker_url)
            cfg = source.config
    if bus is None:
        bus = open_bus(settings.broker_url or None, settings.state_dir)
    if deliveries is None:
        deliveries = open_delivery_log(settings.broker_url or None, settings.state_dir,
                                       settings.dedupe_window)
    if history is None:
        history = open_history(settings.broker_url or None, settings.state_dir,
                               retention=settings.history_retention)
    if suspensions is None:
        suspensions = open_suspensions(settings.broker_url or None, settings.state_dir)
    applier = None
    if standalone:  # under gunicorn: this process applies the operator's suspensions itself
        applier = SuspensionApplier(suspensions, cfg, [])
        cfg = applier.initial()

    app = Flask("herald.receiver")
    routes = Routes.of(cfg)
    limiter = RateLimiter()

    def update(new: config_mod.Config) -> None:
        """Serve a new configuration (`--from-cluster`): new hook paths answer at once, removed
        ones 404; requests already past their lookup finish with the configuration they read."""
        nonlocal routes
        routes = Routes.of(new)
        app.extensions["herald"].update(config=new, hooks=routes.hooks)

    operator = Operator(lambda: routes.cfg, bus, history, suspensions, Access(settings.operator_secret),
                        version=_version())
    register_api(app, operator)
    register_ui(app, operator)

    @app.after_request
    def remember(resp: Response) -> Response:
        """Each delivery to a Receiver, for `herald deliveries` and the trace pages."""
        point = g.get("point")
        if point is not None and request.path.startswith("/hook/") and request.method == "POST":
            history.put("delivery", new_id(), _delivery_record(point, resp))
        return resp

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        # JSON for every error, so senders' delivery logs show a readable reason.
        resp = jsonify(error=exc.description or exc.name)
        resp.status_code = exc.code or 500
        g.answer = {"error": exc.description or exc.name}
        return resp

    @app.after_request
    def count(resp: Response) -> Response:
        if request.path.startswith("/hook/"):
            point = g.get("point")
            metrics.REQUESTS.labels(receiver=point.where if point else "",
                                    type=point.receiver.type if point else "",
                                    code=str(resp.status_code)).inc()
        return resp

    @app.get("/healthz")
    def healthz() -> Response:
        return jsonify(status="ok")

    @app.get("/readyz")
    def readyz() -> Response:
        if bus.ping():
            return jsonify(status="ready")
        return _answer(503, status="bus unavailable")

    @app.get("/metrics")
    def prometheus() -> Response:
        return Response(_metrics_text(), content_type=CONTENT_TYPE_LATEST)

    @app.route("/hook/<digest>", methods=["OPTIONS"])
    def handshake(digest: str) -> Response:
        """The CloudEvents webhook validation handshake (abuse protection, http-webhook.md):
        a sender asks whether it may deliver here before it does. Only a Receiver's secret
        URL answers yes, so knowing the URL is still what grants access."""
        point = routes.hooks.get(f"/hook/{digest}")
        if point is None:
            return _answer(404, error="no receiver at this path")
        g.point = point
        resp = Response(status=200)
        resp.headers["Allow"] = "POST, OPTIONS"
        origin = request.headers.get("WebHook-Request-Origin", "")
        if origin:
            resp.headers["WebHook-Allowed-Origin"] = printable(origin, 255)
            limit = point.receiver.rate_limit
            resp.headers["WebHook-Allowed-Rate"] = (
                str(max(1, int(limit.requests * 60 / limit.interval))) if limit else "*")
        return resp

    def publish(queue: str, reqs: list[ReconcileRequest], point: Hookpoint, *, cid: str, ctx: str,
                dedupe_key: str, started: float,
                more: tuple[tuple[str, list[ReconcileRequest]], ...] = ()) -> Response | None:
        """Put `reqs` on `queue` (and each of `more`'s requests on its queue), each confirmed by
        the broker, then remember the delivery: only once all are on the bus, so a retry after
        a 503 halfway is not taken for a duplicate.

        None once all are on the bus; else the 503 to answer, so the sender retries.
        """
        where, rtype = point.where, point.receiver.type
        batches = ((queue, reqs), *more)
        done, total = 0, sum(len(b) for _, b in batches)
        try:
            for into, batch in batches:
                for req in batch:
                    bus.publish(into, req.to_json(), message_id=req.id, headers={DELIVERY_HEADER: cid})
                    g.setdefault("published", []).append((into, req))
                    done += 1
                    metrics.PUBLISHED.labels(receiver=where, type=rtype).inc()
        except BusUnavailable as exc:
            # During a broker outage the bus says so once, and again when it is back with the
            # count; a line per delivery would be thousands of lines a minute.
            log.log(logging.DEBUG if exc.outage else logging.ERROR,
                    "%s: bus unavailable after %d of %d requests, answered 503 so the sender retries: %s",
                    ctx, done, total, exc)
            return _answer(503, error="message bus unavailable; retry later")
        except BusError as exc:  # refused for good (access, a closing bus): still never a 500
            log.error("%s: the bus refused the request after %d of %d, answered 503: %s",
                      ctx, done, total, exc)
            return _answer(503, error="message bus unavailable; retry later")
        metrics.PUBLISH_SECONDS.observe(time.monotonic() - started)
        if dedupe_key:
            try:
                deliveries.record(dedupe_key)
            except Exception:  # the requests are safe; only a future dedupe is lost
                log.exception("%s: could not record the delivery for dedupe", ctx)
        return None

    def plan(cfg: config_mod.Config, point: Hookpoint, parsed: Hook, pr: PullRequest, *, cid: str, ctx: str,
             dedupe_key: str, started: float) -> Response:
        """A pull request asks for a plan of its head, never for a reconcile: one request per
        GitRepository of its repository that follows the branch it would merge into."""
        r, where = point.receiver, point.where
        ctx = f"{ctx} pull_request={pr.number}"
        if pr.action == "closed":
            log.info("%s: pull request closed (%s), no plan", ctx, printable(pr.sender_action, 64))
            return _answer(200, message="pull request closed: no plan")
        if not pr.action:
            words = printable(pr.sender_action.replace("_", " ").replace(":", " "), 64) or "event"
            log.info("%s: pull request %s, no plan", ctx, words)
            return _answer(200, message=f"pull request {words}: no plan")
        if pr.fork and not r.plan_forks:
            log.info("%s: pull request from a fork (%s), not planned: spec.planForks is not true", ctx,
                     printable(pr.head_clone_url, 200) or "fork deleted")
            return _answer(200, message="pull request from a fork: forks are not planned unless "
                                        "spec.planForks: true")
        targets, skipped = plan_targets(cfg, select(cfg, r), pr)
        for s in skipped:
            log.info("%s: skipped: %s", ctx, s.why)
        if not targets:
            return _answer(200, message=f"no GitRepository of this repository follows "
                                        f"{printable(pr.base_branch, 200)!r}: no plan",
                           skipped=[s.why for s in skipped])
        pull_request = {"number": pr.number, "action": pr.action, "head": pr.head_sha, "ref": pr.head_ref,
                        "base": pr.base_branch, "url": pr.url, "fork": pr.fork, "headUrl": pr.head_clone_url}
        reqs = [ReconcileRequest(kind=t.kind, name=t.name, namespace=t.namespace, reason="plan",
                                 origin={"receiver": where, "type": r.type, "event": parsed.event,
                                         "delivery": parsed.delivery_id, "pullRequest": dict(pull_request)})
                for t in targets]
        failed = publish(PLAN_QUEUE, reqs, point, cid=cid, ctx=ctx, dedupe_key=dedupe_key, started=started)
        if failed is not None:
            return failed
        log.info("%s revision=%s: pull request %s, plan requested for %s", ctx,
                 printable(f"{pr.head_ref}@{pr.head_sha}", 200), pr.action,
                 ", ".join(f"{t.kind}/{t.namespace}/{t.name}={q.id}" for t, q in zip(targets, reqs, strict=True)))
        return _answer(202, requests=[q.id for q in reqs],
                       targets=[f"{t.kind}/{t.namespace}/{t.name}" for t in targets])

    @app.post("/hook/<digest>")
    def hook(digest: str) -> Response:
        set_correlation("")  # threads are reused: no line may carry the last request's id
        current = routes  # one configuration for the whole request
        point = current.hooks.get(f"/hook/{digest}")
        if point is None:
            return _answer(404, error="no receiver at this path")
        g.point = point
        r, rtype, where = point.receiver, point.rtype, point.where
        started = time.monotonic()

        try:
            body = _read_body(settings.max_body)
        except BadRequest as exc:
            log.warning("receiver=%s type=%s: body not read (400): %s", where, r.type, exc.description)
            raise
        if body is None:
            log.warning("receiver=%s type=%s: body over the %d-byte limit (413)", where, r.type,
                        settings.max_body)
            return _answer(413, error=f"body larger than {settings.max_body} bytes")
        if r.suspend:
            log.info("receiver=%s suspended: delivery refused with 503", where)
            return _answer(503, error="receiver is suspended")
        if not rtype.verify(request.headers, body, point.keys):
            metrics.VERIFICATION_FAILURES.labels(receiver=where, type=r.type).inc()
            log.warning("receiver=%s type=%s delivery=%s: signature or token missing or invalid (401)",
                        where, r.type, printable(rtype.delivery_id(request.headers)))
            return _answer(401, error="signature or token missing or invalid")
        try:
            parsed = rtype.parse(request.headers, body)
        except BadDelivery as exc:
            log.warning("receiver=%s type=%s delivery=%s: malformed delivery (400): %s", where, r.type,
                        printable(rtype.delivery_id(request.headers)), printable(str(exc), 300))
            return _answer(400, error=str(exc))

        delivery = printable(parsed.delivery_id)
        # The delivery id follows the push through every component's logs; senders that give
        # none (Docker Hub, generic hooks) get one made up here.
        # (printable() writes "-" for nothing: the sender's id itself decides.)
        cid = delivery if parsed.delivery_id else f"herald-{new_id().replace('-', '')[:20]}"
        set_correlation(cid)
        g.cid, g.event = cid, printable(parsed.event, 100)
        ctx = f"receiver={where} type={r.type} event={printable(parsed.event)} delivery={delivery}"
        if parsed.ping:
            log.info("%s: ping answered", ctx)
            return _answer(200, message="pong")
        if parsed.ignore:
            log.info("%s: ignored: %s", ctx, parsed.ignore)
            return _answer(200, message=f"ignored: {parsed.ignore}")
        if rtype.has_events and r.events and parsed.event.lower() not in {e.lower() for e in r.events}:
            log.info("%s: event not in spec.events, nothing published", ctx)
            return _answer(200, message=f"event {parsed.event!r} is not in spec.events; ignored")

        if r.rate_limit is not None:
            wait = limiter.take(where, r.rate_limit)
            if wait > 0:
                log.warning("%s: rate limit of %d per %gs exceeded (429)", ctx, r.rate_limit.requests,
                            r.rate_limit.interval)
                resp = _answer(429, error="rate limit exceeded; retry later")
                resp.headers["Retry-After"] = retry_after_header(wait)
                return resp

        dedupe_key = f"{where}|{parsed.delivery_id}" if parsed.delivery_id else ""
        if dedupe_key:
            seen = deliveries.first_seen(dedupe_key)
            if seen is not None:
                metrics.DUPLICATES.labels(receiver=where, type=r.type).inc()
                log.info("%s: duplicate of a delivery accepted %.0fs ago, not published again", ctx,
                         time.time() - seen)
                return _answer(200, message="duplicate delivery; already accepted", delivery=parsed.delivery_id)

        if parsed.pull_request is not None:
            return plan(current.cfg, point, parsed, parsed.pull_request, cid=cid, ctx=ctx,
                        dedupe_key=dedupe_key, started=started)

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
                return _answer(200, message="no selected resource follows this ref; nothing to do", skipped=whys)
            if image.name is None:
                why = image.why
            else:
                why = f"no ImageRepository to scan for {image.name}" + (" (those found are suspended)" if scans_skipped else "")
            return _answer(200, message=f"{why}, and spec.resources selects nothing to reconcile; nothing to do",
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
        failed = publish(RECONCILE_QUEUE, reqs, point, cid=cid, ctx=ctx, dedupe_key=dedupe_key, started=started,
                         more=((IMAGE_QUEUE, scan_reqs),))
        if failed is not None:
            return failed
        targets = [s.target for s in selected] + scans
        ids = [req.id for req in (*reqs, *scan_reqs)]
        named = parsed.image or next((s.revision for s in selected if s.revision), "-")
        g.revision = printable(named, 200)
        log.info("%s revision=%s: published %s", ctx, printable(named, 200),
                 ", ".join(f"{t.kind}/{t.namespace}/{t.name}={i}" for t, i in zip(targets, ids, strict=True)))
        return _answer(202, requests=ids, targets=[f"{t.kind}/{t.namespace}/{t.name}" for t in targets])

    app.extensions["herald"] = {"config": cfg, "bus": bus, "hooks": routes.hooks, "deliveries": deliveries,
                                "update": update, "source": source, "history": history, "operator": operator}
    if applier is not None:
        applier.updates.append(update)
        threading.Thread(target=applier.watch, args=(threading.Event(),), name="suspensions", daemon=True).start()
    if source is not None:  # started here (gunicorn): this process watches for itself
        source.subscribe(applier.update if applier is not None else update)
        source.start()
    return app


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("herald")
    except PackageNotFoundError:
        return "unknown"


def _delivery_record(point: Hookpoint, resp: Response) -> dict[str, object]:
    """What the history keeps of one delivery: who sent what, the answer, what was queued."""
    answer: dict[str, object] = g.get("answer") or {}  # what `_answer` said, kept to save re-reading it
    published = g.get("published") or []
    return {"delivery": g.get("cid") or "", "receiver": point.where, "type": point.receiver.type,
            "event": g.get("event") or "", "status": resp.status_code, "revision": g.get("revision") or "",
            "answer": printable(str(answer.get("error") or answer.get("message") or ""), 300),
            "requests": [{"id": req.id, "queue": queue, "target": f"{req.kind}/{req.namespace}/{req.name}"}
                         for queue, req in published]}


def _from_cluster(settings: Settings) -> ClusterConfig:
    """The configuration from the cluster, for a receiver started by gunicorn; each worker
    process watches on its own, and only the receiver's kind (Receiver) gets its status written."""
    from herald.cluster_config import ClusterConfig, FromClusterError, start_errors

    try:
        source = ClusterConfig.from_settings(settings, "receiver")
    except FromClusterError as exc:
        raise SystemExit(f"herald receiver --from-cluster: {exc}") from None
    if start_errors(source):
        raise SystemExit("herald receiver: " + "\n".join(start_errors(source)))
    return source
