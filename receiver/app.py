"""The receiver's WSGI app: webhooks (receiver.hooks), health, metrics, the operator's API and pages.

Deliveries to `POST /hook/<digest>` are served by receiver.hooks in front of the Flask app,
as plain WSGI; Flask serves everything else, where its conveniences cost nothing that matters.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import TYPE_CHECKING

from flask import Flask, Response, g, jsonify, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    generate_latest,
    multiprocess,
)
from werkzeug.exceptions import HTTPException

from herald import config as config_mod
from herald.bus import Bus, open_bus
from herald.bus.deliveries import DeliveryLog, open_delivery_log
from herald.history import History, open_history
from herald.logs import printable
from herald.settings import Settings
from herald.suspensions import Applier as SuspensionApplier
from herald.suspensions import Suspensions, open_suspensions
from receiver import metrics
from receiver.hooks import Hooks, Routes, answer, json_bytes
from receiver.operator.access import Access
from receiver.operator.api import Operator
from receiver.operator.api import register as register_api
from receiver.operator.ui import register as register_ui

if TYPE_CHECKING:
    from herald.cluster_config import ClusterConfig

log = logging.getLogger("herald.receiver")


def _metrics_text() -> bytes:
    """This process' metrics, or, under gunicorn (PROMETHEUS_MULTIPROC_DIR set by
    gunicorn.conf.py), every worker's summed: a scrape reaches one worker at random, and
    its own counters alone would jump about from scrape to scrape."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest()


def _answer(code: int, /, **body: object) -> Response:
    """A JSON answer from a Flask view, as receiver.hooks answers a delivery."""
    said = answer(code, **body)
    return Response(json_bytes(said.body), status=code, headers=said.headers, mimetype="application/json")


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

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        # JSON for every error, so senders' delivery logs show a readable reason.
        resp = jsonify(error=exc.description or exc.name)
        resp.status_code = exc.code or 500
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

    hooks = Hooks(lambda: routes, bus, deliveries, history, settings)
    app.wsgi_app = hooks.wsgi(app.wsgi_app)  # type: ignore[method-assign]
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
