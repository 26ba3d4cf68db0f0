"""What the notifier remembers across restarts and replicas: what it sent, and what providers keep.

Two logs, both windowed key stores (herald.bus.deliveries): on RabbitMQ, streams every
notifier replica replays and tails; on the embedded bus, SQLite files in the state directory.

- `sent`: one key per delivered (Alert, Provider, event) — object, reason, message and
  revision, not the timestamp — for the dedupe window (5 minutes by default). A reconcile
  retried after a transient failure, or a notifier restarted mid-fan-out, re-announces the
  same event; within the window it is delivered once. Flux keeps this in memory only, so a
  restart resends.
- `memory`: providers' own small state (Slack's thread per object and revision), for a day.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from herald.bus.deliveries import DeliveryLog, NoDeliveryLog, open_delivery_log
from herald.messages import Event

DEFAULT_DEDUPE_WINDOW = 300.0
PROVIDER_MEMORY_WINDOW = 24 * 3600.0


def dedupe_key(alert: str, provider: str, event: Event) -> str:
    """The identity of one notification: who sends it where, about which change.

    The timestamp is left out on purpose: the same event emitted twice is the same news.
    """
    obj = event.involvedObject
    parts = [alert, provider, obj.get("kind", ""), obj.get("namespace", ""), obj.get("name", ""),
             event.reason, event.message, event.revision]
    return "sent:" + hashlib.sha256(json.dumps(parts).encode()).hexdigest()


class LogMemory:
    """A provider's `Memory` (notifier.providers.base) over a windowed log."""

    def __init__(self, log: DeliveryLog) -> None:
        self.log = log

    def get(self, key: str) -> str | None:
        return self.log.value(key) or None

    def put(self, key: str, value: str) -> None:
        self.log.record(key, value)


@dataclass
class NotifierMemory:
    sent: DeliveryLog
    providers: LogMemory

    @classmethod
    def open(cls, broker_url: str | None, state_dir: str | Path,
             dedupe_window: float = DEFAULT_DEDUPE_WINDOW) -> NotifierMemory:
        sent: DeliveryLog = (open_delivery_log(broker_url, state_dir, dedupe_window, name="notifier.sent")
                             if dedupe_window > 0 else NoDeliveryLog())
        kept = open_delivery_log(broker_url, state_dir, PROVIDER_MEMORY_WINDOW, name="notifier.memory")
        return cls(sent, LogMemory(kept))

    @classmethod
    def for_bus(cls, bus: object, dedupe_window: float = DEFAULT_DEDUPE_WINDOW) -> NotifierMemory:
        """Beside the bus: a stream on its broker, or SQLite next to the embedded bus's file."""
        url = getattr(bus, "url", None)
        path = getattr(bus, "path", None)
        if url:
            return cls.open(url, ".", dedupe_window)
        if path is not None:
            return cls.open(None, Path(path).parent, dedupe_window)
        raise TypeError(f"cannot place the notifier's memory beside a {type(bus).__name__}")

    def close(self) -> None:
        self.sent.close()
        self.providers.log.close()
