"""Per-Receiver rate limits: a token bucket per Receiver, in this process.

Only verified deliveries that would publish are counted, so forged traffic cannot spend a
Receiver's budget and lock its real sender out. There is no default limit: GitHub does not
retry a delivery that got a 429, so a default that trips on a monorepo's burst of pushes
would lose deployments. Operators who want one set `spec.rateLimit`.

The bucket lives in the process: with N receiver processes (gunicorn workers, replicas) a
Receiver may see up to N times its limit in total, which is enough to stop a runaway
sender from flooding the queue, the purpose of the limit.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from herald.model import RateLimit


@dataclass
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def take(self, key: str, limit: RateLimit) -> float:
        """0 when a delivery may pass (and takes a token); else seconds until one may."""
        rate = limit.requests / limit.interval  # tokens per second
        now = self._clock()
        with self._lock:
            b = self._buckets.get(key)
            if b is None:
                b = self._buckets[key] = _Bucket(float(limit.requests), now)
            b.tokens = min(float(limit.requests), b.tokens + (now - b.at) * rate)
            b.at = now
            if b.tokens >= 1.0:
                b.tokens -= 1.0
                return 0.0
            return (1.0 - b.tokens) / rate


def retry_after_header(seconds: float) -> str:
    """Retry-After takes whole seconds; round up so a sender that obeys it gets through."""
    return str(max(1, math.ceil(seconds)))
