"""Logging shared by every command: one line per event, UTC timestamps, a correlation id.

The correlation id is the webhook's delivery id (GitHub's X-GitHub-Delivery, GitLab's
X-Gitlab-Event-UUID, ... or one Herald makes up when the sender gives none). The receiver sets
it; it travels on every bus message as `x-herald-delivery`; the reconciler and notifier set it
again around each message they handle. So `grep <delivery id>` over all components' logs
follows one push from the webhook to the Slack message.

HERALD_LOG_FORMAT=json writes one JSON object per line (time, level, logger, message,
correlation_id) for log collectors; `text` (the default) is for people.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

DELIVERY_HEADER = "x-herald-delivery"

_correlation: contextvars.ContextVar[str] = contextvars.ContextVar("herald_correlation_id", default="")


def correlation_id() -> str:
    return _correlation.get()


def printable(value: str, limit: int = 100) -> str:
    """A sender-controlled value made safe for one log line or error message (cut to `limit`,
    no newlines, no escapes; "-" for nothing)."""
    value = value[:limit]
    if value.isprintable():
        return value or "-"
    return "".join(c if c.isprintable() else "?" for c in value) or "-"


def set_correlation(cid: str) -> None:
    """For a request thread that is reused (gunicorn's gthread): set at the start of each."""
    _correlation.set(cid)


@contextmanager
def correlation(cid: str) -> Iterator[None]:
    token = _correlation.set(cid)
    try:
        yield
    finally:
        _correlation.reset(token)


def correlated(handler: Callable[[Any], None]) -> Callable[[Any], None]:
    """A bus handler that logs under the correlation id its message carries."""

    def run(delivery: Any) -> None:
        with correlation(str(delivery.headers.get(DELIVERY_HEADER) or delivery.message_id or "")):
            handler(delivery)

    return run


class _CorrelationFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.correlation_id = _correlation.get()
        return True


class _TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s.%(msecs)03dZ %(levelname)-5s %(name)s: %(cid)s%(message)s",
                         "%Y-%m-%dT%H:%M:%S")
        self.converter = time.gmtime

    def format(self, record: logging.LogRecord) -> str:
        cid = getattr(record, "correlation_id", "")
        record.cid = f"[{cid}] " if cid else ""
        return super().format(record)


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        cid = getattr(record, "correlation_id", "")
        if cid:
            out["correlation_id"] = cid
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def setup(level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter() if fmt.strip().lower() == "json" else _TextFormatter())
    handler.addFilter(_CorrelationFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Libraries log request lines and retries we already report in our own words.
    for noisy in ("werkzeug", "urllib3", "kubernetes"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    # pika logs each failed connection attempt as half a dozen ERROR lines (connector, workflow,
    # stack...). Herald reports what a connection failure means in its own words, once per
    # outage (herald.bus.confirms, the consumers' reconnect lines), so pika's are only noise.
    logging.getLogger("pika").setLevel(max(logging.CRITICAL, root.level))
