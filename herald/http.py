"""HTTP for Herald's clients of other services (the notifier's providers, the forges' comment
APIs): one place for timeouts, proxies, custom CAs and reading failures.

It lives in the core so that `herald.forges` can use it without importing the notifier;
`notifier.providers.http` re-exports it unchanged.

Every HTTP provider (commit statuses, Teams, Discord, generic webhooks) goes through `send`,
so they all honour the Provider's `timeout` and `proxy` (or the Secret's `proxy`), trust the
Secret's `ca.crt` for self-hosted servers, and turn an answer into the same two kinds of
DeliveryError: retryable (network errors, 408/425/429/5xx, with the server's Retry-After) or
final (400/401/403/404/422 and other 4xx, with the server's own words about why).

Secrets: a request URL may be the credential itself (webhooks), and error bodies sometimes
echo what was sent. Messages name only the host, and every Secret value is scrubbed from
whatever text the far side returned.
"""

from __future__ import annotations

import email.utils
import json
import ssl
import time
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

from herald.model import Provider


class DeliveryError(Exception):
    """A provider (or a forge client) could not deliver. The message must never contain a token or webhook URL.

    `retryable`: an outage or rate limit (try again later) rather than a refusal that only a
    configuration change fixes. `retry_after`: seconds the far side asked us to wait, if it said.
    `status`: the HTTP status when the far side answered one.
    """

    def __init__(self, message: str, *, retryable: bool, retry_after: float | None = None,
                 status: int | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after
        self.status = status


USER_AGENT = "herald-notifier"
RETRYABLE_STATUS = frozenset({408, 425, 429})
_MAX_DETAIL = 300


class _CAAdapter(HTTPAdapter):
    """Trusts a CA given as PEM text (the Secret's ca.crt) besides the system's roots."""

    def __init__(self, ca_pem: str) -> None:
        self._context = ssl.create_default_context()
        self._context.load_verify_locations(cadata=ca_pem)
        super().__init__(max_retries=0)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["ssl_context"] = self._context
        super().init_poolmanager(*args, **kwargs)

    def proxy_manager_for(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["ssl_context"] = self._context
        return super().proxy_manager_for(*args, **kwargs)


def host(url: str, what: str = "provider") -> str:
    """The only part of an address that may be shown in messages and logs."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DeliveryError(f"{what}: the address is not an http(s) URL", retryable=False)
    return parts.hostname + (f":{parts.port}" if parts.port else "")


def session(provider: Provider, secret: Mapping[str, str], *, user_agent: str = USER_AGENT) -> requests.Session:
    """A session with the Provider's proxy and the Secret's CA; no retries of its own (the
    delivery loop owns retries, with backoff that outlives this process)."""
    s = requests.Session()
    s.headers["User-Agent"] = user_agent
    s.trust_env = False  # the Provider says which proxy to use, not the notifier's environment
    proxy = secret.get("proxy") or provider.proxy
    if proxy:
        s.proxies = {"http": proxy, "https": proxy}
    ca = secret.get("ca.crt") or secret.get("caFile")
    try:
        adapter = _CAAdapter(ca) if ca else HTTPAdapter(max_retries=0)
    except ssl.SSLError as exc:
        raise DeliveryError(f"the Secret's ca.crt is not a PEM certificate: {exc.reason}",
                            retryable=False) from None
    s.mount("https://", adapter)
    s.mount("http://", HTTPAdapter(max_retries=0))
    return s


def send(
    provider: Provider,
    secret: Mapping[str, str],
    method: str,
    url: str,
    *,
    what: str,
    json_body: Any = None,
    data: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    auth: tuple[str, str] | None = None,
    http: requests.Session | None = None,
) -> requests.Response:
    """Make one request; return the 2xx response or raise a classified DeliveryError.

    `what` names the provider and host for messages ("github status on api.github.com").
    """
    s = http or session(provider, secret)
    try:
        response = s.request(method, url, json=json_body, data=data, headers=dict(headers or {}),
                             auth=auth, timeout=provider.timeout, allow_redirects=True)
    except requests.RequestException as exc:
        raise DeliveryError(f"{what}: {scrub(_reason(exc), _secrets(secret, url))}", retryable=True) from None
    finally:
        if http is None:
            s.close()
    if 200 <= response.status_code < 300:
        return response
    raise failure(what, response.status_code, response.text, response.headers, _secrets(secret, url))


def failure(what: str, status: int, body: str, headers: Mapping[str, str],
            secrets: Iterable[str] = ()) -> DeliveryError:
    """An HTTP answer as a DeliveryError: retryable for outages and rate limits, else final."""
    detail = error_detail(scrub(body or "", secrets))  # scrub first: a clipped secret would slip through
    message = f"{what}: HTTP {status}" + (f": {detail}" if detail else "")
    retryable = status >= 500 or status in RETRYABLE_STATUS
    return DeliveryError(message, retryable=retryable, retry_after=retry_after(headers) if retryable else None,
                         status=status)


def error_detail(body: str) -> str:
    """What the server said about the failure: the usual JSON error fields, else a short text."""
    text = (body or "").strip()
    if not text:
        return ""
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict):
        parts: list[str] = []
        for key in ("message", "error", "error_description", "errors", "detail", "title"):
            value = data.get(key)
            if isinstance(value, str) and value:
                parts.append(value)
            elif isinstance(value, dict):  # Bitbucket: {"error": {"message": ...}}; GitLab: {"message": {...}}
                parts.append(value.get("message") if isinstance(value.get("message"), str)
                             else json.dumps(value, separators=(",", ":")))
            elif isinstance(value, list) and value:
                parts.append(json.dumps(value, separators=(",", ":")))
        text = "; ".join(p for p in parts if p) or text
    text = " ".join(text.split())
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 1] + "…"


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds from a Retry-After header, given as seconds or as an HTTP date."""
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def scrub(text: str, secrets: Iterable[str]) -> str:
    for secret in sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def _secrets(secret: Mapping[str, str], url: str) -> list[str]:
    parts = urlsplit(url)
    return [*secret.values(), url, parts.path, parts.query, parts.password or ""]


def _reason(exc: requests.RequestException) -> str:
    if isinstance(exc, requests.Timeout):
        return "timed out"
    if isinstance(exc, requests.exceptions.SSLError):
        return "TLS verification failed (set ca.crt in the Secret for a private CA)"
    if isinstance(exc, requests.ConnectionError):
        return "connection failed"
    return type(exc).__name__
