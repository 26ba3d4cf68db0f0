"""The table of provider types: one module each, as in Flux's notification-controller."""

from notifier.providers import slack
from notifier.providers.base import DeliveryError, Notification, SendFn

PROVIDERS: dict[str, SendFn] = {
    "slack": slack.send,
}

__all__ = ["PROVIDERS", "DeliveryError", "Notification", "SendFn"]
