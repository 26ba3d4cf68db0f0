"""The status page, `/ui/`: server-rendered HTML built from the operator API's `Operator` (the
same rows, runs, events and traces `herald get` and `herald deliveries --trace` show).

| path | shows |
| --- | --- |
| /ui/ | every Kustomization (failing first): source, revision, state, last outcome; sources, recent deliveries, dead letters |
| /ui/kustomizations/<ns>/<name> , /ui/objects/<Kind>/<ns>/<name> | runs with their change sets, the last error, inventory, events; Reconcile now, Suspend, Resume |
| /ui/deliveries , /ui/deliveries/<id> | webhook deliveries; one delivery's trace: webhook → requests → runs → events → notifications → commit statuses |
| /ui/plans , /ui/plans/<key> | pull-request plans, with the whole diff |
| /ui/images | image updates: scan → policy → commit |
| /ui/dead-letters | dead-lettered messages, with Replay and Drop |
| /ui/login , /ui/logout | the operator's token in an HttpOnly, SameSite=Strict cookie |

No build step and nothing from elsewhere: Jinja2 templates (autoescaped) and one stylesheet and
one script served from here, under a Content-Security-Policy that allows nothing inline. Pages
read through `Operator` only, never the cluster or files; the buttons call the operator API
with `fetch()` (the cookie, plus `X-Herald-Intent: 1`), so the API's rules are the page's.

Live updates: `?fragment=1` answers a page's `<main>` alone, with `X-Herald-State` (a digest of
what it was built from) and `X-Herald-Live` (whether something is under way). The script asks
for it every 2 s while the page is live and after a button was pressed (until its effect
shows), every 5 s otherwise (to notice a run starting; not on the dead letters' page), and
swaps `<main>` when the state changed.

Reading needs what the API's reading needs: nothing, unless the operator Secret has a
`readToken`; then every page sends a visitor without the cookie to the login form. As a last
guard, every page is scrubbed of the values Herald knows to be secret (Secret data, Provider
addresses, hook paths, the operator's tokens) before it is sent; finding one is logged.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

from flask import (
    Blueprint,
    Flask,
    Response,
    g,
    redirect,
    render_template,
    request,
    url_for,
)
from markupsafe import escape

from herald.bus import BusError
from herald.history import age
from herald.suspensions import KINDS as SUSPENDABLE
from receiver.operator import model
from receiver.operator.access import COOKIE, Verdict

if TYPE_CHECKING:
    from herald.config import Config
    from receiver.operator.api import Operator

log = logging.getLogger("herald.operator.ui")

CSP = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'"
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}
LIVE_AFTER = 15.0  # a trace keeps refreshing this long after its latest hop (notifications follow runs)
STALE_RUN = 1800.0  # a run still `running` after this long was abandoned (its worker died): not live
SECRET_MIN = 8  # shorter Secret values ("true", "git") are not scrubbed: they would mangle pages
# Keys of Secrets whose values are not secret and may well be words a page shows (a bot's name).
PUBLIC_KEYS = frozenset({"username", "user", "ca.crt", "tls.crt", "caFile", "certFile", "known_hosts",
                         "identity.pub", "from", "to", "channel"})
STEP = {"ImageRepository": "scan", "ImagePolicy": "policy", "ImageUpdateAutomation": "commit"}
OPEN = ("status_page.login", "status_page.logout", "status_page.static")


# ---- formatting (the templates' helpers) ------------------------------------------------------


def ago(at: float | None, now: float | None = None) -> str:
    """"2m ago", as static/herald.js writes it too (it keeps these current)."""
    return f"{age(at, now)} ago" if at else "never"


def utc(at: float | None) -> str:
    return datetime.fromtimestamp(float(at), UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if at else ""


def iso(at: float | None) -> str:
    return datetime.fromtimestamp(float(at), UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if at else ""


def clock(at: float | None) -> str:
    """A trace hop's time: 16:11:16.145."""
    if not at:
        return ""
    t = datetime.fromtimestamp(float(at), UTC)
    return t.strftime("%H:%M:%S.") + f"{t.microsecond // 1000:03d}"


def duration(seconds: float | None) -> str:
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool):
        return ""
    s = float(seconds)
    if s < 1:
        return f"{s * 1000:.0f} ms"
    if s < 60:
        return f"{s:.1f} s"
    m, s = divmod(int(s), 60)
    return f"{m}m {s:02d}s" if m < 60 else f"{m // 60}h {m % 60:02d}m"


def offset(at: float | None, start: float | None) -> str:
    """A hop's time after the trace's first: +0.120 s."""
    if not at or not start:
        return ""
    return f"+{max(0.0, float(at) - float(start)):.3f} s"


def short(revision: str | None) -> str:
    """main@sha1:d94184a2e4c5cdab… → main@sha1:d94184a2e4c5."""
    revision = revision or ""
    head, sep, sha = revision.rpartition(":")
    return f"{head}:{sha[:12]}" if sep and len(sha) > 12 else revision


def lines(text: str | None) -> list[str]:
    return [line for line in (text or "").splitlines() if line.strip()]


def state_of(row: dict[str, Any]) -> tuple[str, str]:
    """(word, css class) of an object's row: the word is the signal, the colour repeats it."""
    if row.get("progressing"):
        return "Progressing", "progressing"
    ready = row.get("ready")
    if ready == "True":
        return "Ready", "ok"
    if ready == "False":
        return ("Not ready", "warn") if row.get("reason") == "DependencyNotReady" else ("Failed", "bad")
    return "Unknown", "unknown"


def run_state(state: str | None) -> str:
    return {"succeeded": "ok", "delivered": "ok", "ran": "ok", "failed": "bad", "dead-lettered": "bad",
            "rejected": "bad", "refused": "bad", "retrying": "warn", "running": "progressing",
            "queued": "progressing", "handed back": "warn"}.get(state or "", "unknown")


def severity(sev: str | None) -> str:
    return {"error": "bad", "info": "ok"}.get(sev or "", "unknown")


def inventory_entry(entry: str) -> tuple[str, str, str]:
    """"Deployment/shop/web" → (Deployment, shop, web); "Namespace/shop" → (Namespace, "", shop)."""
    parts = entry.split("/")
    if len(parts) >= 3:
        return parts[0], parts[1], "/".join(parts[2:])
    if len(parts) == 2:
        return parts[0], "", parts[1]
    return entry, "", ""


def safe_url(url: str | None) -> str:
    """A link shown only without user info, and only for http(s)."""
    url = url or ""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return ""
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=host).geturl()


def split_ref(text: str | None) -> tuple[str, str, str] | None:
    parts = (text or "").split("/")
    if len(parts) < 3 or not all(parts[:3]):
        return None
    return parts[0], parts[1], "/".join(parts[2:])


HELPERS = {"ago": ago, "utc": utc, "iso": iso, "clock": clock, "duration": duration, "offset": offset,
           "short": short, "lines": lines, "state_of": state_of, "run_state": run_state, "severity": severity,
           "inventory_entry": inventory_entry, "safe_url": safe_url, "split_ref": split_ref, "step": STEP,
           "reconcilable": model.RECONCILABLE, "suspendable": tuple(SUSPENDABLE)}


# ---- the last guard: values known to be secret never leave ------------------------------------


class Scrubber:
    """The secret values of the configuration being served, looked up at most every 30 s."""

    def __init__(self, op: Operator) -> None:
        self.op = op
        self._lock = threading.Lock()
        self._cache: tuple[int, float, list[str]] = (0, 0.0, [])

    def values(self) -> list[str]:
        cfg = self.op.config()
        with self._lock:
            key, at, values = self._cache
            if key == id(cfg) and time.monotonic() - at < 30:
                return values
        values = sorted(_secret_values(cfg, self.op), key=len, reverse=True)
        with self._lock:
            self._cache = (id(cfg), time.monotonic(), values)
        return values

    def __call__(self, html: str) -> str:
        found = 0
        for value in self.values():
            for form in {value, str(escape(value))}:
                if form in html:
                    found += 1
                    html = html.replace(form, "***")
        if found:
            log.warning("status page: %d secret value(s) reached %s and were hidden; the record showing "
                        "them should not carry them", found, request.path)
        return html


def _secret_values(cfg: Config, op: Operator) -> set[str]:
    names: set[tuple[str, str]] = set(cfg.secrets)
    values: set[str] = set()
    for kind in ("Receiver", "Provider", "Alert", "GitRepository", "OCIRepository", "Kustomization",
                 "ImageRepository", "ImagePolicy", "ImageUpdateAutomation"):
        for obj in cfg.by_kind(kind).values():
            ns = obj.meta.namespace
            for attr in ("secret_ref", "cert_secret_ref"):
                ref = getattr(obj, attr, None)
                if ref is not None and getattr(ref, "name", ""):
                    names.add((ns, ref.name))
            for attr in ("decryption_secret", "kube_config_secret"):
                if getattr(obj, attr, None):
                    names.add((ns, getattr(obj, attr)))
            if kind == "Provider":
                values.update(v for v in (obj.address, getattr(obj, "proxy", "")) if v)
            if kind == "Receiver":
                path = cfg.hook_path(obj)
                if path:
                    values.update((path, path.rpartition("/")[2]))
    for ns, name in names:
        try:
            data = cfg.secret(ns, name) or {}
        except OSError:
            continue
        for key, value in data.items():
            if key in PUBLIC_KEYS:
                continue
            values.add(value.strip())
            if key == "rotationKeys":
                values.update(line.strip() for line in value.splitlines())
    try:
        values.update(t for t in op.access.tokens(cfg) if t)
    except OSError:
        pass
    return {v for v in values if len(v) >= SECRET_MIN}


# ---- the pages ------------------------------------------------------------------------------


def register(app: Flask, op: Operator) -> None:
    """Mount the status page on `app` (the receiver's)."""
    ui = Blueprint("status_page", __name__, url_prefix="/ui", template_folder="templates", static_folder="static")
    scrub = Scrubber(op)

    def verdict() -> Verdict:
        return op.access.check(op.config(), bearer="", cookie=request.cookies.get(COOKIE, ""), intent=False,
                               write=False)

    def here() -> str:
        """This page's path and query, without `fragment` (where the login sends one back)."""
        query = urlencode([(k, v) for k, v in request.args.items(multi=True) if k != "fragment"])
        return request.script_root + request.path + (f"?{query}" if query else "")

    @ui.before_request
    def guard() -> Response | None:
        if request.endpoint in OPEN:
            return None
        v = verdict()
        if not v.ok:
            return redirect(url_for("status_page.login", next=here()))
        g.ui_verdict = v
        return None

    @ui.after_request
    def headers(resp: Response) -> Response:
        for name, value in HEADERS.items():
            resp.headers[name] = value
        return resp

    @ui.context_processor
    def common() -> dict[str, Any]:
        v: Verdict | None = g.get("ui_verdict")
        write_token, read_token = op.access.tokens(op.config())
        return {**HELPERS, "can_write": bool(v and v.write), "has_cookie": bool(request.cookies.get(COOKIE)),
                "writes_enabled": write_token is not None, "reads_need_token": read_token is not None,
                "api_root": request.script_root + "/api/v1", "version": op.version}

    def page(template: str, title: str, *, live: bool = False, status: int = 200, state: Any = None,
             **ctx: Any) -> Response:
        fragment = request.args.get("fragment") == "1"
        digest = hashlib.sha256(json.dumps(ctx if state is None else state, sort_keys=True, default=str)
                                .encode()).hexdigest()[:16]
        html = render_template(template, fragment=fragment, title=title, live=live, state=digest, **ctx)
        resp = Response(scrub(html), status=status, mimetype="text/html")
        resp.headers["X-Herald-State"] = digest
        resp.headers["X-Herald-Live"] = "1" if live else "0"
        return resp

    def not_found(what: str) -> Response:
        return page("not_found.html", "Not found", status=404, what=what)

    def running(runs: Iterable[dict[str, Any]]) -> bool:
        now = time.time()
        return any(r.get("state") == "running" and (r.get("at") or 0) > now - STALE_RUN for r in runs)

    census: list[Any] = [0.0, [], ""]  # when, queues with dead letters, error

    def dead_queues() -> tuple[list[str], str]:
        """The queues that have dead letters, asked at most every 10 s: the overview refreshes
        every 2 s while a run is in progress, and this is a passive look (reading the dead
        letters themselves is not, on RabbitMQ: see AmqpBus.dead_letters)."""
        if time.monotonic() - census[0] > 10:
            try:
                census[1:] = [op.bus.dead_queues(), ""]
            except BusError:
                log.warning("status page: the bus is unavailable for the dead letters", exc_info=True)
                census[1:] = [[], "the message bus is unavailable; try again"]
            census[0] = time.monotonic()
        return census[1], census[2]

    def dead_letters() -> tuple[list[dict[str, Any]], str]:
        try:
            return op.dead_letters(), ""
        except BusError:
            log.warning("status page: the bus is unavailable for the dead letters", exc_info=True)
            return [], "the message bus is unavailable; try again"

    @ui.get("/")
    def overview() -> Response:
        kustomizations = op.rows("kustomizations")
        sources = op.rows("sources")
        deliveries = op.history.all("delivery")[:8]
        dead, dead_error = dead_queues()
        runs = op.history.all("run")[:50]
        live = any(k.get("progressing") for k in kustomizations + sources) or running(runs)
        counts = {"failing": sum(1 for k in kustomizations if k["ready"] == "False"),
                  "progressing": sum(1 for k in kustomizations if k.get("progressing")),
                  "suspended": sum(1 for k in kustomizations if k["suspended"])}
        return page("overview.html", "Overview", live=live, kustomizations=kustomizations, sources=sources,
                    deliveries=deliveries, dead_queues=dead, dead_error=dead_error, counts=counts,
                    plans=len(op.history.all("plan")), images=len(op.history.all("image")))

    @ui.get("/kustomizations/<namespace>/<name>")
    def kustomization(namespace: str, name: str) -> Response:
        return obj("Kustomization", namespace, name)

    @ui.get("/objects/<kind>/<namespace>/<name>")
    def obj(kind: str, namespace: str, name: str) -> Response:
        found = op.object(kind, namespace, name)
        if found is None:
            return not_found(f"{kind} {namespace}/{name} is not in the configuration")
        row = found["object"]
        live = bool(row.get("progressing")) or running(found["runs"])
        return page("object.html", f"{kind} {namespace}/{name}", live=live, **found)

    @ui.get("/deliveries")
    def deliveries() -> Response:
        try:
            limit = max(1, min(1000, int(request.args.get("limit") or 100)))
        except ValueError:
            limit = 100
        items = op.history.all("delivery")[:limit]
        return page("deliveries.html", "Deliveries", live=running(op.history.all("run")[:50]), deliveries=items,
                    limit=limit)

    @ui.get("/deliveries/<path:delivery>")
    def trace(delivery: str) -> Response:
        found = op.trace(delivery)
        if not any(found[k] for k in ("webhooks", "requests", "runs", "events", "notifications")):
            return not_found(f"nothing is known of delivery {delivery!r} (the history keeps the last 10,000 "
                             f"deliveries)")
        hops = [*found["webhooks"], *found["requests"], *found["runs"], *found["events"], *found["notifications"],
                *found["plans"], *found["images"]]
        times = [t for h in hops for t in (h.get("at"), h.get("finished"), h.get("updated")) if t]
        start = min((h.get("at") for h in hops if h.get("at")), default=None)
        live = (max(times, default=0) > time.time() - LIVE_AFTER
                or any(r.get("state") in ("running", "retrying") for r in found["runs"])
                or any(q.get("result") == "queued" for q in found["requests"])
                or any(n.get("state") == "retrying" for n in found["notifications"]))
        return page("trace.html", f"Delivery {delivery}", live=live, state=found, start=start, **found)

    @ui.get("/plans")
    def plans() -> Response:
        items = [{k: v for k, v in p.items() if k != "diff"} for p in op.history.all("plan")[:200]]
        return page("plans.html", "Plans", plans=items)

    @ui.get("/plans/<path:key>")
    def plan(key: str) -> Response:
        found = op.history.get("plan", key)
        if not found:
            return not_found(f"no plan {key!r} in the history")
        return page("plan.html", f"Plan for {found.get('target', key)}", plan=found)

    @ui.get("/images")
    def images() -> Response:
        return page("images.html", "Image updates", images=op.history.all("image")[:200])

    @ui.get("/dead-letters")
    def dead() -> Response:
        items, error = dead_letters()
        # Not refreshed by itself: on RabbitMQ each listing counts as a delivery of every dead letter.
        return page("dead_letters.html", "Dead letters", dead=items, error=error, idle_poll=False)

    # ---- login ------------------------------------------------------------------------------

    def safe_next(value: str | None) -> str:
        """Only a page of this site's status page: never another site (an open redirect)."""
        root = url_for("status_page.overview")
        value = value or ""
        if (not value.startswith(root.rstrip("/")) or value.startswith("//") or "\\" in value
                or any(c in value for c in "\r\n") or urlsplit(value).scheme or urlsplit(value).netloc):
            return root
        return value

    @ui.route("/login", methods=["GET", "POST"])
    def login() -> Response:
        error, status = "", 200
        nxt = safe_next(request.values.get("next"))
        wait = op.guesses.wait(request.remote_addr or "") if request.method == "POST" else 0
        if wait:
            error, status = f"too many wrong tokens from this address; try again in {wait}s", 429
        elif request.method == "POST":
            if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
                error, status = "a login must be sent from this page", 403
            else:
                token = (request.form.get("token") or "").strip()
                cfg = op.config()
                writes = op.access.check(cfg, bearer=token, cookie="", intent=False, write=True)
                open_reads = op.access.check(cfg, bearer="", cookie="", intent=False, write=False).ok
                reads = op.access.check(cfg, bearer=token, cookie="", intent=False, write=False)
                if token and (writes.ok or (not open_reads and reads.ok)):
                    resp = redirect(nxt, code=303)
                    resp.set_cookie(COOKIE, token, httponly=True, samesite="Strict", secure=request.is_secure,
                                    path="/")
                    log.info("status page: login from %s (%s)", request.remote_addr,
                             "operator" if writes.ok else "reader")
                    return resp
                error, status = "that token is neither the operator token nor the read token", 401
                op.guesses.wrong(request.remote_addr or "")
                log.info("status page: a login with a wrong token from %s", request.remote_addr)
        g.ui_verdict = verdict()
        return page("login.html", "Log in", status=status, error=error, next=nxt)

    @ui.route("/logout", methods=["GET", "POST"])
    def logout() -> Response:
        resp = redirect(url_for("status_page.login"), code=303)
        resp.delete_cookie(COOKIE, path="/", httponly=True, samesite="Strict", secure=request.is_secure)
        return resp

    @ui.route("/<path:anything>")
    def unknown(anything: str) -> Response:
        return not_found(f"there is no page /ui/{anything}")

    app.register_blueprint(ui)
