"""What every provider module offers, and how it reports failure.

A provider is a function: (Provider spec, its decoded Secret, the event) → delivered or raise.
Failures say whether trying again can help, so the delivery loop can retry outages with
backoff and dead-letter a 401 at once instead of hammering an API with a revoked token.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from herald.messages import Event
from herald.model import Provider


class DeliveryError(Exception):
    """A provider could not deliver. The message must never contain a token or webhook URL."""

    def __init__(self, message: str, *, retryable: bool, retry_after: float | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


@dataclass(frozen=True)
class Notification:
    """An event on its way to one provider, with the Alert's additions merged in."""

    event: Event
    alert: str  # "namespace/name" of the Alert that matched
    summary: str = ""


SendFn = Callable[[Provider, dict[str, str], Notification], "str | None"]
"""Returns the provider's id for the message when it has one (Slack's ts), else None."""
