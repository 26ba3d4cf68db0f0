"""The message bus: RabbitMQ when a broker URL is configured, else a SQLite file.

Components only see the `Bus` interface, so the same code runs against a production broker
and on a laptop with nothing but the state directory.
"""

from __future__ import annotations

from pathlib import Path

from herald.bus.base import (
    ATTEMPT_HEADER,
    ATTEMPTS_HEADER,
    ERROR_HEADER,
    FAILING_SINCE_HEADER,
    Bus,
    BusError,
    BusUnavailable,
    Delivery,
    Handler,
    Reject,
    RetryLater,
    RetryPolicy,
)

EMBEDDED_FILENAME = "bus.sqlite3"

__all__ = [
    "ATTEMPT_HEADER",
    "ATTEMPTS_HEADER",
    "ERROR_HEADER",
    "FAILING_SINCE_HEADER",
    "Bus",
    "BusError",
    "BusUnavailable",
    "Delivery",
    "Handler",
    "Reject",
    "RetryLater",
    "RetryPolicy",
    "open_bus",
]


def open_bus(
    broker_url: str | None,
    state_dir: str | Path,
    *,
    retry: RetryPolicy = RetryPolicy(),
) -> Bus:
    """An AmqpBus for an amqp:// or amqps:// URL; with no URL, the embedded bus in `state_dir`.

    The AMQP bus connects lazily (on first publish/consume), so a broker that is down at
    start-up shows as not ready instead of crashing the process.
    """
    url = (broker_url or "").strip()
    if url.lower().startswith(("amqp://", "amqps://")):
        from herald.bus.amqp import AmqpBus  # pika is only needed with a broker

        return AmqpBus(url, retry=retry)
    if url:
        # A mistyped broker URL must not silently fall back to a local file that the other
        # components (on other machines) never read.
        raise ValueError(f"unsupported broker URL {url.split('://')[0]}://...; use amqp(s)://")
    from herald.bus.embedded import EmbeddedBus

    return EmbeddedBus(Path(state_dir) / EMBEDDED_FILENAME, retry=retry)
