"""The table of receiver types: one module each, as in Flux's notification-controller."""

from receiver.types import github
from receiver.types.base import BadDelivery, Hook, ReceiverType

TYPES: dict[str, ReceiverType] = {t.name: t for t in (github.TYPE,)}

__all__ = ["TYPES", "BadDelivery", "Hook", "ReceiverType"]
