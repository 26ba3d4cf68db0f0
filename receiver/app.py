"""The receiver's WSGI app: verify a webhook, publish reconcile requests, answer honestly.

A 2xx means the request is on durable storage (the broker confirmed it): a Git host that got
a 202 never needs to send the delivery again. Anything that stops us short of that answers
with a status that makes the sender retry (503) or tells it what was wrong (4xx), and never
says what signature or token was expected.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from flask import Flask, Response, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from werkzeug.exceptions import HTTPException

from herald import config as config_mod
from herald.bus import Bus, BusUnavailable, open_bus
from herald.messages import RECONCILE_QUEUE, ReconcileRequest
from herald.model import Receiver
from herald.settings import Settings
from receiver import metrics
from receiver.selection import select, split_by_ref
from receiver.types import TYPES, BadDelivery

log = logging.getLogger("herald.receiver")

RETRY_AFTER_SECONDS = "10"


@dataclass(frozen=True)
class Hookpoint:
    receiver: Receiver
    token: str


def _hookpoints(cfg: config_mod.Config) -> dict[str, Hookpoint]:
    table: dict[str, Hookpoint] = {}
    for r in cfg.receivers.values():
        token = cfg.receiver_token(r)
        if token is not None:
            table[config_mod.hook_path(token, r.meta.name, r.meta.namespace)] = Hookpoint(r, token)
    return table


def _answer(status: int, type_name: str, **body: object) -> Response:
    metrics.DELIVERIES.labels(type=type_name, code=str(status)).inc()
    resp = jsonify(body)
    resp.status_code = status
    if status in (429, 503):
        resp.headers["Retry-After"] = RETRY_AFTER_SECONDS
    return resp


def create_app(
    cfg: config_mod.Config | None = None,
    bus: Bus | None = None,
    settings: Settings | None = None,
) -> Flask:
    """The app factory gunicorn calls (`receiver.app:create_app()`): with no arguments, the
    configuration, broker and limits come from HERALD_* environment variables."""
    settings = settings or Settings.from_env()
    if cfg is None:
        if not settings.config:
            raise SystemExit("herald receiver: no configuration (set HERALD_CONFIG or pass -c)")
        cfg = config_mod.load(settings.config, settings.secrets_dir or None)
    if bus is None:
        bus = open_bus(settings.broker_url or None, settings.state_dir)

    app = Flask("herald.receiver")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body
    hooks = _hookpoints(cfg)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        # JSON for every error, so senders' delivery logs show a readable reason.
        resp = jsonify(error=exc.description or exc.name)
        resp.status_code = exc.code or 500
        return resp

    @app.get("/healthz")
    def healthz() -> Response:
        return jsonify(status="ok")

    @app.get("/readyz")
    def readyz() -> Response:
        if bus.ping():
            return jsonify(status="ready")
        resp = jsonify(status="bus unavailable")
        resp.status_code = 503
        return resp

    @app.get("/metrics")
    def prometheus() -> Response:
        return Response(generate_latest(), content_type=CONTENT_TYPE_LATEST)

    @app.post("/hook/<digest>")
    def hook(digest: str) -> Response:
        point = hooks.get(f"/hook/{digest}")
        if point is None:
            return _answer(404, "unknown", error="no receiver at this path")
        r = point.receiver
        rtype = TYPES[r.type]
        where = f"{r.meta.namespace}/{r.meta.name}"
        started = time.monotonic()

        # get_data raises 413 itself when the body exceeds MAX_CONTENT_LENGTH.
        body = request.get_data(cache=False)
        if r.suspend:
            log.info("receiver=%s suspended: delivery refused with 503", where)
            return _answer(503, r.type, error="receiver is suspended")
        if not rtype.verify(request.headers, body, point.token):
            log.warning("receiver=%s type=%s delivery=%s: signature missing or invalid (401)",
                        where, r.type, request.headers.get("X-GitHub-Delivery", "-"))
            return _answer(401, r.type, error="signature missing or invalid")
        try:
            parsed = rtype.parse(request.headers, body)
        except BadDelivery as exc:
            log.warning("receiver=%s type=%s: malformed delivery (400): %s", where, r.type, exc)
            return _answer(400, r.type, error=str(exc))

        ctx = f"receiver={where} type={r.type} event={parsed.event} delivery={parsed.delivery_id or '-'}"
        if parsed.ping:
            log.info("%s: ping answered", ctx)
            return _answer(200, r.type, message="pong")
        if r.events and parsed.event.lower() not in {e.lower() for e in r.events}:
            log.info("%s: event not in spec.events, nothing published", ctx)
            return _answer(200, r.type, message=f"event {parsed.event!r} is not in spec.events; ignored")

        targets, skipped = split_by_ref(cfg, select(cfg, r), parsed)
        for s in skipped:
            log.info("%s: skipped: %s", ctx, s.why)
        if not targets:
            return _answer(200, r.type, message="no selected resource follows this ref; nothing to do",
                           skipped=[s.why for s in skipped])

        origin = {"receiver": where, "type": r.type, "event": parsed.event,
                  "delivery": parsed.delivery_id, "revision": parsed.revision}
        ids = []
        try:
            for t in targets:
                req = ReconcileRequest(kind=t.kind, name=t.name, namespace=t.namespace,
                                       reason="webhook", origin=origin)
                bus.publish(RECONCILE_QUEUE, req.to_json(), message_id=req.id,
                            headers={"x-herald-delivery": parsed.delivery_id})
                ids.append(req.id)
                metrics.PUBLISHED.inc()
        except BusUnavailable as exc:
            log.error("%s: bus unavailable, answered 503 so the sender retries: %s", ctx, exc)
            return _answer(503, r.type, error="message bus unavailable; retry later")
        metrics.PUBLISH_SECONDS.observe(time.monotonic() - started)
        log.info("%s revision=%s: published %s", ctx, parsed.revision or "-",
                 ", ".join(f"{t.kind}/{t.namespace}/{t.name}={i}" for t, i in zip(targets, ids, strict=True)))
        return _answer(202, r.type, requests=ids,
                       targets=[f"{t.kind}/{t.namespace}/{t.name}" for t in targets])

    app.extensions["herald"] = {"config": cfg, "bus": bus, "hooks": hooks}
    return app
