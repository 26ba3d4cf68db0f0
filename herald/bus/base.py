"""The bus interface every component talks to, whatever carries the messages.

Two promises matter to users and are the reason this interface is small:
- `publish` returns only once the message is durable (broker confirm / SQLite commit), so the
  receiver can answer 2xx knowing nothing will be lost;
- a consumed message is acknowledged only after its handler returned, so a crash in the
  middle of work means the message is delivered again, never dropped.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Protocol
from collections.abc import Callable


# Bookkeeping headers the buses set themselves. A handler sees ERROR_HEADER on a retry (why
# the previous attempt failed) and both on a dead letter; `publish` drops all three from the
# headers it is given, so a handler that forwards `delivery.headers` to another queue does not
# make the new message start with someone else's attempt count or error.
ATTEMPT_HEADER = "x-herald-attempt"  # on a retry copy: the number of the next attempt
ERROR_HEADER = "x-herald-error"  # why the last attempt failed
ATTEMPTS_HEADER = "x-herald-attempts"  # on a dead letter: how many attempts were made
BOOKKEEPING_HEADERS = frozenset({ATTEMPT_HEADER, ERROR_HEADER, ATTEMPTS_HEADER})


def caller_headers(headers: dict[str, str] | None) -> dict[str, str]:
    """The headers a caller may set on a new message (the bookkeeping ones removed)."""
    return {k: v for k, v in (headers or {}).items() if k not in BOOKKEEPING_HEADERS}


class BusError(Exception):
    """The bus could not take or give a message (broker down, confirm not received...)."""


class BusUnavailable(BusError):
    """The broker cannot be reached or did not confirm in time: callers answer 503."""


@dataclass
class Delivery:
    """One consumed message as the handler sees it."""

    queue: str
    body: bytes
    message_id: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    attempt: int = 1  # 1 on first delivery; grows with each retry or redelivery


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how late a failed message is tried again, for every bus implementation.

    Exponential backoff so that a broken cluster or remote is not hammered, capped so a
    message is never parked for hours, and a bounded number of attempts so a poison message
    ends in the dead-letter queue instead of looping forever.
    """

    max_attempts: int = 5
    base_delay: float = 1.0  # seconds before the 2nd attempt
    factor: float = 2.0
    max_delay: float = 300.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.base_delay <= 0 or self.factor < 1 or self.max_delay < self.base_delay:
            raise ValueError("need base_delay > 0, factor >= 1 and max_delay >= base_delay")

    def delay(self, failed_attempt: int) -> float:
        """Seconds to wait after attempt number `failed_attempt` (1-based) failed."""
        exponent = max(0, failed_attempt - 1)
        try:
            return min(self.max_delay, self.base_delay * self.factor**exponent)
        except OverflowError:
            return self.max_delay


class Reject(Exception):
    """Raised by a handler for a message that can never succeed (malformed, unknown target).

    The message goes to the dead-letter queue at once instead of being retried.
    """


Handler = Callable[[Delivery], None]


class Bus(Protocol):
    def publish(
        self,
        queue: str,
        body: bytes,
        *,
        message_id: str = "",
        headers: dict[str, str] | None = None,
    ) -> None:
        """Store one message durably; return only once it is safe. Raises BusUnavailable."""

    def consume(
        self,
        queue: str,
        handler: Handler,
        stop: threading.Event,
        *,
        prefetch: int = 1,
    ) -> None:
        """Deliver messages to `handler` until `stop` is set; blocks the calling thread.

        Handler returns → ack. Raises Reject → dead-letter queue `<queue>.dead` at once.
        Raises anything else → retried after a delay, and dead-lettered with the error
        once `max_attempts` is exceeded.
        """

    def ping(self) -> bool:
        """Whether the bus can take messages now (used by /readyz)."""

    def dead_letters(self, queue: str) -> list[Delivery]:
        """Messages dead-lettered from `queue` (for operators and tests); does not consume."""

    def close(self) -> None: ...
