"""What Herald did, kept for the people who operate it: deliveries, requests, runs, events, notifications.

Each component appends what it alone knows, as it happens: the receiver each webhook delivery
and what it queued, the reconciler each request's fate, each run and its outcome, each event
and the latest state of each object, the notifier each notification's attempts. The operator
API (`receiver.operator`) reads them back, joined on the delivery id every message carries,
so one delivery can be followed from its webhook to its last Slack message.

Where it lives: the bus's keyed logs (`herald.bus.deliveries`): a RabbitMQ stream
`herald.history` that every replica appends to, or a SQLite file beside the embedded bus. So
the history survives restarts and every replica sees the same one, with nothing more to run.
The workers only write (no copy of the stream in their memory); whoever serves the API reads.

Bounded twice: by age (HERALD_HISTORY_RETENTION, default 7 days; the stream's own retention
and the window of each reader) and by count per kind (the last 1,000 runs, 10,000 deliveries
and so on; older records are forgotten when the kind is read). A record is small: messages
are cut, and a plan's diff is kept up to PLAN_DIFF_LIMIT.

Recording is best effort and never raises: losing a line of history must never fail a
webhook, a reconcile or a notification.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from herald.bus.deliveries import DeliveryLog, NoDeliveryLog, open_delivery_log

log = logging.getLogger("herald.history")

DEFAULT_RETENTION = 7 * 24 * 3600.0
MESSAGE_LIMIT = 16 * 1024
PLAN_DIFF_LIMIT = 512 * 1024

# kind → how many records are kept (the newest).
LIMITS: dict[str, int] = {
    "delivery": 10_000,
    "request": 10_000,
    "run": 1_000,
    "event": 10_000,
    "notification": 10_000,
    "status": 10_000,  # one per object: the latest state of each
    "plan": 1_000,
    "image": 1_000,
}
_PREFIX = {kind: f"{kind[0:3]}/" for kind in LIMITS}  # "del/", "req/", "run/", "eve/", ...


def _cut(text: str, limit: int = MESSAGE_LIMIT) -> str:
    return text if len(text) <= limit else text[:limit] + f"\n… ({len(text) - limit} more characters)"


@dataclass
class History:
    """The history over one keyed log. `limits` per kind (default LIMITS)."""

    log: DeliveryLog = field(default_factory=NoDeliveryLog)
    limits: Mapping[str, int] = field(default_factory=lambda: dict(LIMITS))
    _trim_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _trimmed: dict[str, float] = field(default_factory=dict, repr=False)

    # ---- writing -----------------------------------------------------------------------

    def put(self, kind: str, key: str, record: Mapping[str, Any]) -> None:
        """Record (or replace) one record of `kind`; it gets `at` (now) unless it has one."""
        if kind not in _PREFIX:
            raise ValueError(f"unknown history kind {kind!r}")
        try:
            value = dict(record)
            value.setdefault("at", time.time())
            self.log.record(_PREFIX[kind] + key, json.dumps(value, separators=(",", ":"), default=str))
        except Exception:  # noqa: BLE001 - history is a courtesy; the work it describes goes on
            log.debug("history: could not record %s %s", kind, key, exc_info=True)

    # ---- reading -----------------------------------------------------------------------

    def get(self, kind: str, key: str) -> dict[str, Any] | None:
        try:
            text = self.log.value(_PREFIX[kind] + key)
        except Exception:  # noqa: BLE001
            log.warning("history: cannot read %s %s", kind, key, exc_info=True)
            return None
        return _load(key, text) if text else None

    def all(self, kind: str) -> list[dict[str, Any]]:
        """Every record of `kind` kept, newest first (by `at`); each with its `key`."""
        prefix = _PREFIX[kind]
        try:
            items = self.log.items(prefix)
        except Exception:  # noqa: BLE001 - the API then shows nothing, and says why in the log
            log.warning("history: cannot read the %s records", kind, exc_info=True)
            return []
        records = [r for k, (_, text) in items.items() if (r := _load(k[len(prefix):], text)) is not None]
        records.sort(key=lambda r: r.get("at") or 0.0, reverse=True)
        limit = self.limits.get(kind, 0)
        if limit and len(records) > limit:
            self._trim(kind, records[limit:])
            records = records[:limit]
        return records

    def _trim(self, kind: str, old: Iterable[dict[str, Any]]) -> None:
        with self._trim_lock:
            if time.monotonic() - self._trimmed.get(kind, 0.0) < 10:
                return
            self._trimmed[kind] = time.monotonic()
        try:
            self.log.forget([_PREFIX[kind] + r["key"] for r in old])
        except Exception:  # noqa: BLE001
            log.debug("history: could not trim %s records", kind, exc_info=True)

    def keep_bounded(self, every: float = 60.0) -> History:
        """Trim every kind to its bound now and then, read or not: a receiver nobody asks
        keeps no more than the bounds in memory (stream) or on disk (SQLite)."""
        stop = self._stop = threading.Event()

        def trim() -> None:
            while not stop.wait(every):
                if getattr(self.log, "read", True):  # a lazy stream reader nobody asked yet holds nothing
                    for kind in self.limits:
                        self.all(kind)

        threading.Thread(target=trim, name="history-trim", daemon=True).start()
        return self

    def close(self) -> None:
        stop = getattr(self, "_stop", None)
        if stop is not None:
            stop.set()
        self.log.close()


def _load(key: str, text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if not isinstance(value, dict):
        return None
    value["key"] = key
    return value


def open_history(broker_url: str | None, state_dir: str | Path, *, read: bool = True,
                 retention: float = DEFAULT_RETENTION) -> History:
    """The history on the bus's keyed log: the stream `herald.history`, or
    `<state dir>/history.sqlite3`. `read=False` for processes that only write (workers). A
    reader of the stream starts tailing it at its first read (the API's), not before: a
    receiver nobody asks keeps no copy and spends nothing on it."""
    days = max(1, int(round(retention / 86400)))
    history = History(open_delivery_log(broker_url, state_dir, retention, name="history", quiet=True,
                                        read="lazy" if read else False, max_age=f"{days}D"))
    return history.keep_bounded() if read else history


def age(at: float | None, now: float | None = None) -> str:
    """How long ago `at` (Unix seconds) was, as `kubectl get` says it: "45s", "2m", "3h", "4d";
    "" when it is not known. The CLI's tables and the status page say it the same way."""
    if not at:
        return ""
    seconds = max(0, int((time.time() if now is None else now) - float(at)))
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m")):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def message(text: str) -> str:
    """An event's or error's text as the history keeps it (cut to MESSAGE_LIMIT)."""
    return _cut(text)


def plan_diff(text: str) -> str:
    return _cut(text, PLAN_DIFF_LIMIT)


# ---- the records each component writes (their shapes are the operator API's) --------------


def event_record(event: Any, delivery: str, request: str = "") -> dict[str, Any]:
    """An event (herald.messages.Event) as the history keeps it."""
    obj = event.involvedObject
    meta = {k: v for k, v in event.metadata.items() if k in _EVENT_METADATA}
    return {"at": time.time(), "timestamp": event.timestamp, "delivery": delivery, "request": request,
            "kind": obj.get("kind", ""), "namespace": obj.get("namespace", ""), "name": obj.get("name", ""),
            "severity": event.severity, "reason": event.reason, "message": message(event.message),
            "revision": event.metadata.get("revision", ""), "metadata": meta}


# Metadata worth showing with an event; the rest (a plan's rendered section) is kept elsewhere.
_EVENT_METADATA = ("revision", "commit_status", "planSummary", "pullRequest", "herald.dev/story",
                   "herald.dev/story-title", "image", "tag")


def delivery_of(req: Any) -> str:
    """The delivery a request came from: the webhook's id, or the correlation id its message
    carried (made up by the receiver for senders that give none, or the request's own)."""
    from herald.logs import correlation_id

    return str(req.origin.get("delivery") or correlation_id() or req.id)


class Recorder:
    """The writes of one component, in the shapes the operator API reads."""

    def __init__(self, history: History) -> None:
        self.history = history

    def event(self, event: Any, headers: Mapping[str, str]) -> None:
        delivery = str(headers.get("x-herald-delivery", ""))
        record = event_record(event, delivery, str(headers.get("x-herald-request", "")))
        self.history.put("event", f"{time.time():017.6f}-{id(record):x}", record)

    def request(self, req: Any, queue: str, result: str, error: str = "", taken: float | None = None) -> None:
        """What became of one request taken from the bus (at `taken`, default now): ran,
        coalesced, satisfied, skipped, rejected."""
        now = time.time()
        self.history.put("request", req.id, {
            "at": taken or now, "decided": now, "id": req.id, "queue": queue, "delivery": delivery_of(req),
            "reason": req.reason, "target": f"{req.kind}/{req.namespace}/{req.name}",
            "revision": str((req.origin or {}).get("revision") or ""),
            "requestedAt": req.requestedAt, "result": result, "error": message(error)})

    def status(self, kind: str, namespace: str, name: str, **fields: Any) -> None:
        """The latest state of one object (ready, reason, message, revision, lastRun...)."""
        self.history.put("status", f"{kind}/{namespace}/{name}", {
            "kind": kind, "namespace": namespace, "name": name, "at": time.time(), **fields})
