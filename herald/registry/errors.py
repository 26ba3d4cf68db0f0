"""What went wrong talking to a registry, sorted into "try again later" and "fix the config".

The image automation loop scans on an interval and backs off on failures: it needs to know
whether waiting helps (429, 5xx, a dropped connection: retryable, with the registry's
Retry-After) or not (401/403, 404: a Secret or `spec.image` to fix). Messages name the image
and the registry; a credential or token never appears in one, and whatever text the registry
sent back is scrubbed of them before it is quoted.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import requests

from herald.http import retry_after, scrub

_RETRYABLE_4XX = frozenset({408, 425, 429})
_MAX_DETAIL = 200


class RegistryError(Exception):
    """A registry request failed.

    `status`: the HTTP status when the registry (or its token service) answered one; None for
    network and TLS failures. `retryable`: whether the same request may succeed later.
    `retry_after`: seconds the registry asked us to wait, if it said.
    """

    def __init__(self, message: str, status: int | None = None, retryable: bool = False,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return (f"RegistryError({self.message!r}, status={self.status!r}, retryable={self.retryable!r}, "
                f"retry_after={self.retry_after!r})")


def status_error(doing: str, response: requests.Response, secrets: Iterable[str] = ()) -> RegistryError:
    """A non-2xx answer as a RegistryError; `doing` says what was asked of whom."""
    status = response.status_code
    detail = _detail(response, secrets)
    said = f"HTTP {status}" + (f": {detail}" if detail else "")
    if status in (401, 403):
        return RegistryError(f"{doing}: unauthorized ({said})", status, False)
    if status == 404:
        return RegistryError(f"{doing}: not found ({said})", status, False)
    if status >= 500 or status in _RETRYABLE_4XX:
        kind = "rate limited" if status == 429 else "unavailable"
        return RegistryError(f"{doing}: {kind} ({said})", status, True, retry_after(response.headers))
    return RegistryError(f"{doing}: unexpected answer ({said})", status, False)


def transport_error(doing: str, exc: requests.RequestException) -> RegistryError:
    """A request that got no HTTP answer. TLS failures are configuration (a CA or client
    certificate to fix), so not retryable; timeouts and refused or dropped connections are."""
    if isinstance(exc, requests.exceptions.SSLError):
        return RegistryError(f"{doing}: TLS failed (check the CA and client certificate): {_ssl_reason(exc)}",
                             None, False)
    if isinstance(exc, requests.Timeout):
        return RegistryError(f"{doing}: timed out", None, True)
    if isinstance(exc, requests.ConnectionError):
        return RegistryError(f"{doing}: connection failed", None, True)
    return RegistryError(f"{doing}: {type(exc).__name__}", None, True)


def _detail(response: requests.Response, secrets: Iterable[str]) -> str:
    """The registry's error codes and messages (`{"errors": [{"code", "message"}]}` in the
    distribution spec; `{"details": ...}` from some token services), else nothing: an HTML page
    from a proxy says no more than the status does."""
    try:
        body = json.loads(response.content) if response.content else None
    except ValueError:
        return ""
    parts: list[str] = []
    if isinstance(body, dict):
        errors = body.get("errors")
        for error in errors if isinstance(errors, list) else []:
            if isinstance(error, dict):
                code, message = error.get("code"), error.get("message")
                parts.append(" ".join(str(p) for p in (code, message) if isinstance(p, str) and p))
        for key in ("details", "detail", "message", "error"):
            if not parts and isinstance(body.get(key), str):
                parts.append(body[key])
    text = " ".join(scrub("; ".join(p for p in parts if p), secrets).split())
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 1] + "…"


def _ssl_reason(exc: requests.exceptions.SSLError) -> str:
    text = str(exc)
    for reason in ("certificate verify failed", "certificate required", "handshake failure",
                   "wrong version number", "unknown ca", "bad certificate"):
        if reason in text.lower():
            return reason
    return "handshake failed"
