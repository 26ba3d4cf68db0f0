"""Who may read and who may act: the operator API's tokens.

The operator names a Secret (`--operator-secret NS/NAME`, HERALD_OPERATOR_SECRET), resolved as
every other Secret is (configuration, secrets directory, cluster). Its `token` key allows
everything; its optional `readToken` key allows reading only. Without a `readToken`, reading
needs no token (`flux get` on a cluster one may list is as open); without the Secret, nothing
can be changed over HTTP at all.

A token comes as `Authorization: Bearer <token>` (the CLI) or in the status page's HttpOnly,
SameSite=Strict cookie set by its login form. A change asked with the cookie must also carry
`X-Herald-Intent: 1`, a header a cross-site form cannot send, so another site cannot act with
an operator's browser. Tokens are compared in constant time and never logged or echoed.
"""

from __future__ import annotations

import hmac
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

COOKIE = "herald_token"
INTENT_HEADER = "X-Herald-Intent"


class Secrets(Protocol):
    def secret(self, namespace: str, name: str) -> dict[str, str] | None: ...


@dataclass(frozen=True)
class Verdict:
    ok: bool
    status: int = 200
    error: str = ""
    write: bool = False  # the caller holds the read-write token


def _equal(given: str, expected: str | None) -> bool:
    return bool(expected) and hmac.compare_digest(given.encode(), (expected or "").encode())


@dataclass(frozen=True)
class Access:
    secret: str = ""  # "namespace/name" of the Secret with `token` (and `readToken`)

    def tokens(self, cfg: Secrets) -> tuple[str | None, str | None]:
        """(read-write token, read token) from the Secret; None for each that is not set."""
        if not self.secret:
            return None, None
        ns, _, name = self.secret.rpartition("/")
        data = cfg.secret(ns or "default", name) or {}
        write, read = (data.get("token") or "").strip(), (data.get("readToken") or "").strip()
        return write or None, read or None

    def check(self, cfg: Secrets, *, bearer: str, cookie: str, intent: bool, write: bool) -> Verdict:
        write_token, read_token = self.tokens(cfg)
        given = bearer or cookie
        holds_write = _equal(given, write_token)
        if write:
            if write_token is None:
                return Verdict(False, 403, "changes over the API are disabled: start Herald with --operator-secret "
                                           "NS/NAME (HERALD_OPERATOR_SECRET) naming a Secret with a `token` key")
            if not holds_write:
                return Verdict(False, 401, "this needs the operator token (Authorization: Bearer <token>)")
            if not bearer and not intent:
                return Verdict(False, 403, f"a change asked with the login cookie needs the {INTENT_HEADER} header")
            return Verdict(True, write=True)
        if read_token is None or holds_write or _equal(given, read_token):
            return Verdict(True, write=holds_write)
        return Verdict(False, 401, "this needs the read token or the operator token (Authorization: Bearer <token>)")


def bearer_of(header: str) -> str:
    scheme, _, value = (header or "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


@dataclass
class Guesses:
    """Wrong tokens per client address: after `limit` within `window` seconds, that address
    is refused (429, Retry-After) until the window has passed, whatever it sends, so a token
    cannot be guessed at the speed of HTTP. Per process, like the receivers' rate limits: N
    processes let N times as many guesses through, still too few to matter for a long token."""

    limit: int = 10
    window: float = 60.0
    clock: Callable[[], float] = time.monotonic
    _wrong: dict[str, list[float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def wait(self, address: str) -> int:
        """Seconds before `address` may try again (0: it may)."""
        now = self.clock()
        with self._lock:
            times = [t for t in self._wrong.get(address, []) if t > now - self.window]
            if times:
                self._wrong[address] = times
            else:
                self._wrong.pop(address, None)
            if len(times) < self.limit:
                return 0
            return max(1, math.ceil(times[0] + self.window - now))

    def wrong(self, address: str) -> None:
        with self._lock:
            self._wrong.setdefault(address, []).append(self.clock())
            if len(self._wrong) > 10_000:  # a flood from many addresses: forget the oldest
                self._wrong.pop(next(iter(self._wrong)))
