"""What every provider module offers, and how it reports failure.

A provider is a function: (Provider spec, its decoded Secret, the notification) → delivered or
raise. Failures say whether trying again can help, so the delivery loop can retry outages with
backoff and dead-letter a 401 at once instead of hammering an API with a revoked token.

The Secret a provider receives is the Provider's `secretRef` Secret with, when the Provider
names a `certSecretRef`, that Secret's `ca.crt` added (Flux keeps them apart; a provider only
needs to know the CA). Its values are credentials: they never appear in a DeliveryError.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Protocol

from herald.http import DeliveryError  # noqa: F401 (its home is the core; providers import it from here)
from herald.messages import Event
from herald.model import Provider


class Memory(Protocol):
    """What a provider may remember across deliveries, restarts and notifier replicas.

    Slack keeps the `ts` of an object's thread here; commit-status providers may keep the last
    status they posted. Keys are the provider's own (prefix them with the provider type);
    values are short strings. Entries expire (a day by default), so it is a cache of
    courtesies, never the only copy of anything that matters.

    `hold(key, timeout)` makes a read-then-write of one key safe from concurrent deliveries:
    while it is held, no other thread of this process and no other notifier sharing the store
    holds the same key, and `get` returns what the previous holder `put`. It raises
    TimeoutError when the key stays held by someone else for `timeout` seconds, and the
    store's own error when the claim cannot be made at all.
    """

    def get(self, key: str) -> str | None: ...

    def put(self, key: str, value: str) -> None: ...

    def hold(self, key: str, timeout: float) -> AbstractContextManager[None]: ...


class KeyLocks:
    """One lock per key for the threads of one process; a key's lock lives while it is wanted."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[threading.Lock, int]] = {}  # key → (its lock, threads wanting it)
        self._guard = threading.Lock()

    @contextmanager
    def hold(self, key: str, timeout: float = -1) -> Iterator[None]:
        """Hold `key`'s lock; TimeoutError after `timeout` seconds (never, when negative)."""
        with self._guard:
            lock, users = self._locks.get(key, (threading.Lock(), 0))
            self._locks[key] = (lock, users + 1)
        try:
            if not lock.acquire(timeout=timeout):
                raise TimeoutError(f"{key} stayed held by another delivery for {timeout:g}s")
            try:
                yield
            finally:
                lock.release()
        finally:
            with self._guard:  # the last one who wanted it takes the lock away
                lock, users = self._locks[key]
                if users == 1:
                    del self._locks[key]
                else:
                    self._locks[key] = (lock, users - 1)


class DictMemory:
    """A Memory in a dict, for the threads of one process: for tests and for one-shot tools."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}
        self.locks = KeyLocks()

    def get(self, key: str) -> str | None:
        return self.data.get(key)

    def put(self, key: str, value: str) -> None:
        self.data[key] = value

    def hold(self, key: str, timeout: float) -> AbstractContextManager[None]:
        return self.locks.hold(key, timeout)


@dataclass(frozen=True)
class Notification:
    """An event on its way to one provider, with the Alert's additions merged in.

    `message` is the text to show people: the Alert's or Provider's template rendered, or the
    event's own message when neither has one (see notifier/templates.py). Providers that send
    structured data (generic webhooks, commit statuses) use `event` itself.
    """

    event: Event
    alert: str  # "namespace/name" of the Alert that matched
    summary: str = ""
    message: str = ""
    provider: str = ""  # "namespace/name" of the Provider, for memory keys and log lines
    memory: Memory = field(default_factory=DictMemory, compare=False)

    @property
    def text(self) -> str:
        return self.message or self.event.message


SendFn = Callable[[Provider, dict[str, str], Notification], "str | None"]
"""Returns the provider's id for the message when it has one (Slack's ts), else None."""
