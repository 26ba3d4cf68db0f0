"""The bus interface every component talks to, whatever carries the messages.

Two promises matter to users and are the reason this interface is small:
- `publish` returns only once the message is durable (broker confirm / SQLite commit), so the
  receiver can answer 2xx knowing nothing will be lost;
- a consumed message is acknowledged only after its handler returned, so a crash in the
  middle of work means the message is delivered again, never dropped.
"""

from __future__ import annotations

import random
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
FAILING_SINCE_HEADER = "x-herald-failing-since"  # unix time of the first failed attempt
READY_AT_HEADER = "x-herald-ready-at"  # unix time the message may be handled (for queue lag)
BOOKKEEPING_HEADERS = frozenset({ATTEMPT_HEADER, ERROR_HEADER, ATTEMPTS_HEADER, FAILING_SINCE_HEADER,
                                 READY_AT_HEADER})
# Set by `replay_dead`: how many times an operator sent this message back from the dead letters
# (a trace shows that the run is a replay, and the how-manieth). Deliberately not bookkeeping:
# it must survive the message's own retries and a new dead-lettering, so that the next replay
# counts on from it instead of starting at 1 again.
REPLAYED_HEADER = "x-herald-replayed"


def caller_headers(headers: dict[str, str] | None) -> dict[str, str]:
    """The headers a caller may set on a new message (the bookkeeping ones removed)."""
    return {k: v for k, v in (headers or {}).items() if k not in BOOKKEEPING_HEADERS}


class BusError(Exception):
    """The bus could not take or give a message (broker down, confirm not received...)."""


class BusUnavailable(BusError):
    """The broker cannot be reached or did not confirm in time: callers answer 503.

    `outage`: the broker as a whole is unreachable, which the bus has announced once already
    (and will announce the end of): callers need not log each failure again.
    """

    def __init__(self, message: str, *, outage: bool = False) -> None:
        super().__init__(message)
        self.outage = outage


@dataclass
class Delivery:
    """One consumed message as the handler sees it."""

    queue: str
    body: bytes
    message_id: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    attempt: int = 1  # 1 on first delivery; grows with each retry or redelivery
    ready_at: float | None = None  # unix time it became ready to handle (published, or retry due)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how late a failed message is tried again, for every bus implementation.

    Exponential backoff so that a broken cluster or remote is not hammered, capped so a
    message is never parked for hours, and bounded — by attempts, and optionally by a time
    `budget` since the first failure — so a poison message ends in the dead-letter queue
    instead of looping forever. `jitter` spreads retries (a fraction of each delay, added) so
    deliveries that failed together during an outage do not all come back in the same second.
    """

    max_attempts: int = 5
    base_delay: float = 1.0  # seconds before the 2nd attempt
    factor: float = 2.0
    max_delay: float = 300.0
    budget: float | None = None  # seconds since the first failure after which we give up
    jitter: float = 0.0  # up to this fraction of a delay is added at random

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.base_delay <= 0 or self.factor < 1 or self.max_delay < self.base_delay:
            raise ValueError("need base_delay > 0, factor >= 1 and max_delay >= base_delay")
        if self.budget is not None and self.budget <= 0:
            raise ValueError("budget must be positive")
        if not 0 <= self.jitter <= 1:
            raise ValueError("jitter must be between 0 and 1")

    def delay(self, failed_attempt: int) -> float:
        """Seconds to wait after attempt number `failed_attempt` (1-based) failed, no jitter."""
        exponent = max(0, failed_attempt - 1)
        try:
            return min(self.max_delay, self.base_delay * self.factor**exponent)
        except OverflowError:
            return self.max_delay

    def next_delay(self, failed_attempt: int, requested: float | None = None,
                   rand: float | None = None) -> float:
        """The wait before the next attempt: what the handler asked for (a retryInterval, a
        server's Retry-After: never shortened), else the backoff; plus jitter either way."""
        base = requested if requested is not None and requested > 0 else self.delay(failed_attempt)
        if not self.jitter:
            return base
        return base * (1 + self.jitter * (random.random() if rand is None else rand))

    def exhausted(self, attempt: int, failing_since: float, now: float) -> bool:
        """Whether attempt number `attempt` having failed, there should be no other."""
        if attempt >= self.max_attempts:
            return True
        return self.budget is not None and now - failing_since >= self.budget


class RetryLater(Exception):
    """Raised by a handler for a failure worth another attempt after `delay` seconds.

    `delay` is the caller's own schedule: a Kustomization's retryInterval, or the Retry-After
    a provider sent with its 429. The bus waits at least that long (its own backoff when
    None), and still dead-letters the message once the policy's attempts or budget run out.
    """

    def __init__(self, reason: str, delay: float | None = None) -> None:
        super().__init__(reason)
        self.delay = delay


def requested_delay(exc: BaseException) -> float | None:
    return exc.delay if isinstance(exc, RetryLater) else None


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
        retry: RetryPolicy | None = None,
    ) -> None:
        """Deliver messages to `handler` until `stop` is set; blocks the calling thread.

        Handler returns → ack. Raises Reject → dead-letter queue `<queue>.dead` at once.
        Raises RetryLater → retried after its delay; anything else → retried after the
        backoff. Dead-lettered with the error once `retry` (default: the bus's policy) is
        exhausted.
        """

    def ping(self) -> bool:
        """Whether the bus can take messages now (used by /readyz)."""

    def dead_letters(self, queue: str) -> list[Delivery]:
        """Messages dead-lettered from `queue` (for operators and tests); does not consume.

        Each has a non-empty `message_id`, the one `replay_dead` and `drop_dead` take: the
        publisher's message id, or for a message published without one an id the bus derives
        (see each implementation), stable as long as the message stays dead.
        """

    def dead_queues(self) -> list[str]:
        """The work queues (names without `.dead`) that have at least one dead letter, sorted.

        So that an operator (or /metrics, or a CLI) can find what needs attention without
        knowing every queue name in advance.
        """

    def replay_dead(self, queue: str, message_id: str | None = None) -> int:
        """Send the dead letters of `queue` with `message_id` (None: all of them) back to `queue`.

        Once the cause is fixed (a missing secret, a broken remote), the operator re-runs the
        messages instead of waiting for the next webhook. Each goes back as a fresh message:
        attempts counted from 1 again, the bus's retry and error headers removed, body, message
        id and the publisher's own headers (the delivery id of the trace) kept, and
        REPLAYED_HEADER counting the replays. No message is lost on the way: the copy is
        durable in `queue` before the dead letter is removed (a failure in between can leave
        both, never neither). Returns how many were replayed; 0 for an unknown id or queue.
        Raises BusUnavailable when the bus cannot be reached.
        """

    def drop_dead(self, queue: str, message_id: str | None = None) -> int:
        """Delete the dead letters of `queue` with `message_id` (None: all of them).

        For messages that will never succeed (a deleted object, a malformed payload) and would
        otherwise be listed forever. Returns how many were deleted; 0 for an unknown id or
        queue. Raises BusUnavailable when the bus cannot be reached.
        """

    def close(self) -> None: ...
