"""The operator API, `/api/v1/…` on the receiver's port: what `herald get`, `reconcile`,
`suspend`/`resume`, `events`, `deliveries` and `dead-letters` talk to, and what the status page
(`receiver.operator.ui`) is built from.

Reading is open unless a read token is set; every change needs the operator token
(`receiver.operator.access`). Nothing here is reachable under `/hook/`, and nothing here
answers with a secret's value. A change is a message on the bus like any webhook's (a
reconcile request with reason `manual`), or a record in the operator's log (a suspension), so
the receiver stays what it is: a door that publishes, never a worker.

| method and path | answers |
| --- | --- |
| GET  /api/v1/version | `{"version"}` |
| GET  /api/v1/get/<group>[?namespace=NS] | rows of kustomizations, sources, receivers, providers, alerts, images |
| GET  /api/v1/objects/<Kind>/<ns>/<name> | one object: its row, runs, events (and inventory for a Kustomization) |
| GET  /api/v1/events[?for=Kind/NAME&namespace=NS&limit=N&after=T] | events, newest first |
| GET  /api/v1/deliveries[?limit=N] | webhook deliveries, newest first |
| GET  /api/v1/deliveries/<id> | one delivery's trace: webhook → requests → runs → events → notifications |
| GET  /api/v1/runs[?target=Kind/ns/name] , /api/v1/runs/<id> | reconcile runs |
| GET  /api/v1/requests/<id> | what a worker did with one request: ran, coalesced, satisfied, skipped, rejected |
| GET  /api/v1/plans , /api/v1/plans/<request>/<Kind>/<ns>/<name> | pull-request plans, with the whole diff |
| GET  /api/v1/images | image updates: scan → policy → commit |
| GET  /api/v1/dead-letters , /api/v1/dead-letters/<queue>/<id> | dead-lettered messages |
| POST /api/v1/reconcile `{"kind","namespace","name"}` | 202 `{"request","requestedAt"}` |
| POST /api/v1/suspend , /api/v1/resume (same body) | the object's new row |
| POST /api/v1/dead-letters/<queue>/replay[/<id>] , DELETE /api/v1/dead-letters/<queue>[/<id>] | `{"count"}` |
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flask import Blueprint, Flask, Response, request

from herald.bus import ATTEMPTS_HEADER, ERROR_HEADER, Bus, BusError
from herald.bus.base import REPLAYED_HEADER
from herald.config import Config
from herald.history import History
from herald.logs import DELIVERY_HEADER
from herald.messages import (
    EVENTS_QUEUE,
    IMAGE_QUEUE,
    NOTIFY_QUEUE,
    PLAN_QUEUE,
    RECONCILE_QUEUE,
    ReconcileRequest,
)
from herald.suspensions import KINDS as SUSPENDABLE
from herald.suspensions import Suspensions
from receiver.operator import model
from receiver.operator.access import COOKIE, INTENT_HEADER, Access, Guesses, Verdict, bearer_of

log = logging.getLogger("herald.operator")

QUEUES = (RECONCILE_QUEUE, PLAN_QUEUE, IMAGE_QUEUE, EVENTS_QUEUE, NOTIFY_QUEUE)
BODY_PREVIEW = 64 * 1024


@dataclass
class Operator:
    """What the API reads and changes; `config` gives the configuration serving right now."""

    config: Callable[[], Config]
    bus: Bus
    history: History
    suspensions: Suspensions
    access: Access
    version: str = ""
    guesses: Guesses = field(default_factory=Guesses)  # wrong tokens per address (API and login)

    # ---- reading -----------------------------------------------------------------------

    def records(self) -> model.Records:
        return model.Records(self.history.all("status"), self.history.all("run"), self.history.all("event"))

    def operator_suspended(self) -> dict[tuple[str, str, str], dict[str, Any]]:
        try:
            return self.suspensions.suspended()  # type: ignore[return-value]
        except Exception:  # noqa: BLE001 - the rows still show the configuration's own suspend
            log.warning("cannot read the operator's suspensions", exc_info=True)
            return {}

    def rows(self, group: str, namespace: str | None = None) -> list[dict[str, Any]]:
        return model.rows(self.config(), group, self.records(), self.operator_suspended(), namespace)

    def object(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        cfg = self.config()
        obj = cfg.by_kind(kind).get((namespace, name))
        if obj is None or kind == "Secret":
            return None
        records = self.records()
        target = model.ref(kind, namespace, name)
        status = next((s for s in records.status if model.ref(s.get("kind", ""), s.get("namespace", ""),
                                                                s.get("name", "")) == target), None)
        events = model.events_for(records.events, f"{kind}/{namespace}/{name}", limit=100)
        runs = model.runs_of(target, records.runs)
        running = next((r for r in runs[:1] if r.get("state") == "running"), None)
        row = model.row(kind, obj, status, events[0] if events else None, running,
                        self.operator_suspended().get((kind, namespace, name)), model.own_suspend(cfg, kind, obj))
        errors = [e for e in events if e.get("severity") == "error"]
        return {"object": row, "runs": runs, "events": events,
                "lastError": errors[0] if errors else None,
                "inventory": (status or {}).get("inventory") or []}

    def dead_letters(self) -> list[dict[str, Any]]:
        out = []
        for queue in QUEUES:
            for d in self.bus.dead_letters(queue):
                out.append(_dead_row(queue, d, preview=False))
        return out

    def trace(self, delivery: str) -> dict[str, Any]:
        h = self.history
        return model.trace(delivery, deliveries=h.all("delivery"), requests=h.all("request"), runs=h.all("run"),
                           events=h.all("event"), notifications=h.all("notification"), plans=h.all("plan"),
                           images=h.all("image"))

    # ---- acting ------------------------------------------------------------------------

    def reconcile(self, kind: str, namespace: str, name: str, by: str) -> ReconcileRequest:
        req = ReconcileRequest(kind=kind, name=name, namespace=namespace, reason="manual",
                               origin={"operator": by, "delivery": f"manual-{time.strftime('%Y%m%dT%H%M%S')}-"
                                                                   f"{name[:40]}"})
        req.origin["delivery"] = f"{req.origin['delivery']}-{req.id[:8]}"
        queue = IMAGE_QUEUE if kind == "ImageRepository" else RECONCILE_QUEUE
        self.bus.publish(queue, req.to_json(), message_id=req.id, headers={DELIVERY_HEADER: req.origin["delivery"]})
        self.history.put("delivery", req.id, {
            "id": req.id, "delivery": req.origin["delivery"], "receiver": "", "type": "operator",
            "event": f"reconcile {kind}", "status": 202, "answer": f"asked by {by}",
            "requests": [{"id": req.id, "queue": queue, "target": model.ref(kind, namespace, name)}]})
        return req


def _dead_row(queue: str, d: Any, *, preview: bool) -> dict[str, Any]:
    body = bytes(d.body)
    row: dict[str, Any] = {"queue": queue, "id": d.message_id, "attempts": d.attempt,
                           "error": d.headers.get(ERROR_HEADER, ""), "delivery": d.headers.get(DELIVERY_HEADER, ""),
                           "attemptsHeader": d.headers.get(ATTEMPTS_HEADER, ""), "size": len(body),
                           "replayed": int(d.headers.get(REPLAYED_HEADER) or 0)
                           if str(d.headers.get(REPLAYED_HEADER) or "0").isdigit() else 0}
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if isinstance(data, dict):
        target = data if "kind" in data else (data.get("event") or {}).get("involvedObject") or {}
        row["target"] = model.ref(target.get("kind", ""), target.get("namespace", ""), target.get("name", ""))
        if "provider" in data:
            row["provider"] = data.get("provider")
    if preview:
        row["body"] = body[:BODY_PREVIEW].decode("utf-8", "replace")
    return row


def _json(status: int, body: Any) -> Response:
    return Response(json.dumps(body, default=str, separators=(",", ":")) + "\n", status=status,
                    mimetype="application/json")


def _error(status: int, message: str) -> Response:
    return _json(status, {"error": message})


def _limit(default: int, cap: int) -> int:
    try:
        return max(1, min(cap, int(request.args.get("limit") or default)))
    except ValueError:
        return default


def register(app: Flask, op: Operator) -> None:
    """Mount the API on `app` (the receiver's)."""
    api = Blueprint("operator_api", __name__, url_prefix="/api/v1")

    def verdict(write: bool) -> Verdict:
        return op.access.check(op.config(), bearer=bearer_of(request.headers.get("Authorization", "")),
                               cookie=request.cookies.get(COOKIE, ""), intent=request.headers.get(INTENT_HEADER) == "1",
                               write=write)

    @api.before_request
    def guard() -> Response | None:
        address = request.remote_addr or ""
        wait = op.guesses.wait(address)
        if wait:
            resp = _error(429, "too many wrong tokens from this address; try again later")
            resp.headers["Retry-After"] = str(wait)
            return resp
        v = verdict(write=request.method not in ("GET", "HEAD", "OPTIONS"))
        if not v.ok:
            if v.status == 401 and (request.headers.get("Authorization") or request.cookies.get(COOKIE)):
                op.guesses.wrong(address)
            return _error(v.status, v.error)
        return None

    @api.errorhandler(BusError)
    def bus_error(exc: BusError) -> Response:
        log.warning("operator API: the bus is unavailable: %s", exc)
        resp = _error(503, "the message bus is unavailable; try again")
        resp.headers["Retry-After"] = "5"
        return resp

    @api.get("/version")
    def version() -> Response:
        return _json(200, {"version": op.version})

    @api.get("/get/<group>")
    def get(group: str) -> Response:
        group = model.ALIASES.get(group.lower(), group.lower())
        if group not in model.GROUPS:
            return _error(404, f"unknown group {group!r}; one of: {', '.join(model.GROUPS)}")
        return _json(200, {"items": op.rows(group, request.args.get("namespace") or None)})

    @api.get("/objects/<kind>/<namespace>/<name>")
    def obj(kind: str, namespace: str, name: str) -> Response:
        found = op.object(kind, namespace, name)
        if found is None:
            return _error(404, f"{kind} {namespace}/{name} is not in the configuration")
        return _json(200, found)

    @api.get("/events")
    def events() -> Response:
        items = model.events_for(op.history.all("event"), request.args.get("for", ""),
                                 request.args.get("namespace") or None, _limit(100, 10_000))
        after = request.args.get("after")
        if after:
            try:
                items = [e for e in items if (e.get("at") or 0) > float(after)]
            except ValueError:
                return _error(400, "after: a Unix time in seconds, such as 1765000000.5")
        return _json(200, {"items": items})

    @api.get("/deliveries")
    def deliveries() -> Response:
        return _json(200, {"items": op.history.all("delivery")[:_limit(100, 10_000)]})

    @api.get("/deliveries/<path:delivery>")
    def trace(delivery: str) -> Response:
        found = op.trace(delivery)
        if not any(found[k] for k in ("webhooks", "requests", "runs", "events", "notifications", "plans", "images")):
            return _error(404, f"nothing is known of delivery {delivery!r} (the history keeps "
                               f"the last 10,000 deliveries)")
        return _json(200, found)

    @api.get("/requests/<request_id>")
    def request_record(request_id: str) -> Response:
        found = op.history.get("request", request_id)
        return _json(200, found) if found else _error(404, f"request {request_id!r} has not been taken by a worker "
                                                          "yet (or is no longer in the history)")

    @api.get("/runs")
    def runs() -> Response:
        target = request.args.get("target", "")
        items = model.runs_of(target, op.history.all("run"), _limit(50, 1000)) if target \
            else op.history.all("run")[:_limit(50, 1000)]
        return _json(200, {"items": items})

    @api.get("/runs/<run_id>")
    def run(run_id: str) -> Response:
        found = op.history.get("run", run_id)
        return _json(200, found) if found else _error(404, f"no run {run_id!r} in the history")

    @api.get("/plans")
    def plans() -> Response:
        items = [{k: v for k, v in p.items() if k != "diff"} for p in op.history.all("plan")[:_limit(100, 1000)]]
        return _json(200, {"items": items})

    @api.get("/plans/<path:key>")
    def plan(key: str) -> Response:
        found = op.history.get("plan", key)
        return _json(200, found) if found else _error(404, f"no plan {key!r} in the history")

    @api.get("/images")
    def images() -> Response:
        return _json(200, {"items": op.history.all("image")[:_limit(100, 1000)]})

    @api.get("/dead-letters")
    def dead_letters() -> Response:
        return _json(200, {"items": op.dead_letters()})

    @api.get("/dead-letters/<queue>/<message_id>")
    def dead_letter(queue: str, message_id: str) -> Response:
        if queue not in QUEUES:
            return _error(404, f"unknown queue {queue!r}; one of: {', '.join(QUEUES)}")
        found = next((d for d in op.bus.dead_letters(queue) if d.message_id == message_id), None)
        if found is None:
            return _error(404, f"no dead letter {message_id!r} in {queue}.dead")
        return _json(200, _dead_row(queue, found, preview=True))

    def act_on_dead(queue: str, message_id: str | None, act: Callable[[str, str | None], int], done: str) -> Response:
        if queue not in QUEUES:
            return _error(404, f"unknown queue {queue!r}; one of: {', '.join(QUEUES)}")
        count = act(queue, message_id)
        if message_id and not count:
            return _error(404, f"no dead letter {message_id!r} in {queue}.dead")
        log.info("operator: %s %d dead letter(s) of %s%s", done, count, queue, f" ({message_id})" if message_id else "")
        return _json(200, {"count": count})

    @api.post("/dead-letters/<queue>/replay")
    @api.post("/dead-letters/<queue>/replay/<message_id>")
    def replay(queue: str, message_id: str | None = None) -> Response:
        return act_on_dead(queue, message_id, op.bus.replay_dead, "replayed")

    @api.delete("/dead-letters/<queue>")
    @api.delete("/dead-letters/<queue>/<message_id>")
    def drop(queue: str, message_id: str | None = None) -> Response:
        return act_on_dead(queue, message_id, op.bus.drop_dead, "dropped")

    def target() -> tuple[str, str, str] | Response:
        data = request.get_json(silent=True)
        if not isinstance(data, dict):
            return _error(400, 'the body must be JSON: {"kind": "Kustomization", "namespace": "…", "name": "…"}')
        kind, ns, name = (str(data.get(k) or "") for k in ("kind", "namespace", "name"))
        if not kind or not name:
            return _error(400, "kind and name are required")
        ns = ns or "default"
        if op.config().by_kind(kind).get((ns, name)) is None or kind == "Secret":
            return _error(404, f"{kind} {ns}/{name} is not in the configuration")
        return kind, ns, name

    @api.post("/reconcile")
    def reconcile() -> Response:
        t = target()
        if isinstance(t, Response):
            return t
        kind, ns, name = t
        if kind not in model.RECONCILABLE:
            return _error(400, f"{kind} is not reconciled on request; one of: {', '.join(model.RECONCILABLE)}")
        obj = op.config().by_kind(kind)[(ns, name)]
        if obj.suspend or (kind, ns, name) in op.operator_suspended():
            return _error(409, f"{kind} {ns}/{name} is suspended; resume it first")
        req = op.reconcile(kind, ns, name, request.remote_addr or "")
        log.info("operator: reconcile of %s %s/%s requested (request=%s)", kind, ns, name, req.id)
        return _json(202, {"request": req.id, "requestedAt": req.requestedAt, "delivery": req.origin["delivery"],
                           "at": time.time()})

    def suspension(suspend: bool) -> Response:
        t = target()
        if isinstance(t, Response):
            return t
        kind, ns, name = t
        if kind not in SUSPENDABLE:
            return _error(400, f"{kind} cannot be suspended; one of: {', '.join(SUSPENDABLE)}")
        if not suspend:
            cfg = op.config()
            if model.own_suspend(cfg, kind, cfg.by_kind(kind)[(ns, name)]):
                return _error(409, f"{kind} {ns}/{name} is suspended by its configuration (spec.suspend: true); "
                                   "resume changes nothing: edit the configuration")
        op.suspensions.set(kind, ns, name, suspend, by=request.remote_addr or "")
        log.info("operator: %s %s/%s %s", kind, ns, name, "suspended" if suspend else "resumed")
        return _json(200, {"kind": kind, "namespace": ns, "name": name, "suspended": suspend})

    @api.post("/suspend")
    def suspend() -> Response:
        return suspension(True)

    @api.post("/resume")
    def resume() -> Response:
        return suspension(False)

    app.register_blueprint(api)
