"""Generic webhooks (`generic`, `generic-hmac`): the event itself, as Flux's JSON, POSTed.

These are the providers for people who write their own receiver, so the wire format is
Flux's exactly and nothing else: the body is `Event.to_dict()` as compact JSON with
`Content-Type: application/json` and Flux's `Gotk-Component: <reportingController>` header,
so a receiver written for Flux's notification-controller takes Herald's events unchanged.

- Address: the Secret's `address` overrides the Provider's (as in Flux), because a webhook URL
  often carries its own token in the path or query.
- Extra headers: the Secret's `headers` key, a YAML map of header name to value (Flux's
  format), e.g. `Authorization: Bearer ...`. They may replace the defaults above, so a
  receiver that wants another Content-Type can have it; they never replace the signature.
- `generic-hmac` adds `X-Signature: sha256=<hex>`, the HMAC-SHA256 of the exact body bytes
  keyed with the Secret's `token`: the format Flux documents, and the one Herald's own
  `generic-hmac` Receiver verifies, so one Herald can notify another.

Secrets: the address, the token and every header value are credentials. Messages name only the
host; whatever the receiver answers is scrubbed of them before it is shown. `post_webhook`,
which does that scrubbing on top of http.send, is shared with the msteams and discord modules.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import requests
import yaml
from cryptography.hazmat.primitives import hashes, hmac

from herald.messages import Event
from herald.model import Provider
from notifier.providers import http
from notifier.providers.base import DeliveryError, Notification

COMPONENT_HEADER = "Gotk-Component"  # Flux's name for it; HTTP header names are case-insensitive
SIGNATURE_HEADER = "X-Signature"

_TOKEN_CHARS = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 field-name
_BAD_VALUE_CHARS = re.compile(r"[\r\n\x00]")

log = logging.getLogger(__name__)


def send(provider: Provider, secret: dict[str, str], note: Notification) -> None:
    """`generic`: POST the event's JSON to the address."""
    _post(provider, secret, note.event, kind="generic", signed=False)


def send_hmac(provider: Provider, secret: dict[str, str], note: Notification) -> None:
    """`generic-hmac`: the same POST, signed with the Secret's `token`."""
    _post(provider, secret, note.event, kind="generic-hmac", signed=True)


def body(event: Event) -> bytes:
    """The exact bytes sent, and signed: Flux's event JSON, compact, UTF-8."""
    return event.to_json()


def signature(payload: bytes, token: str) -> str:
    """`sha256=<hex>`: HMAC-SHA256 of `payload` keyed with `token`, as Flux's X-Signature."""
    mac = hmac.HMAC(token.encode(), hashes.SHA256())
    mac.update(payload)
    return "sha256=" + mac.finalize().hex()


def parse_headers(text: str) -> dict[str, str]:
    """The Secret's `headers` key: a YAML map of header names to scalar values.

    Raises a final DeliveryError that never quotes the text: it holds credentials.
    """
    if not text.strip():
        return {}
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        raise DeliveryError("the Secret's `headers` key is not valid YAML", retryable=False) from None
    if not isinstance(data, dict):
        raise DeliveryError("the Secret's `headers` key must be a YAML map of header names to values",
                            retryable=False)
    headers: dict[str, str] = {}
    for name, value in data.items():
        if not isinstance(name, str) or not _TOKEN_CHARS.fullmatch(name):
            raise DeliveryError("the Secret's `headers` key has a header name that is not a valid HTTP token",
                                retryable=False)
        if value is None or isinstance(value, (dict, list)):
            raise DeliveryError(f"the Secret's `headers` key: header {name!r} needs a single value",
                                retryable=False)
        text_value = str(value).lower() if isinstance(value, bool) else str(value)
        if _BAD_VALUE_CHARS.search(text_value):
            raise DeliveryError(f"the Secret's `headers` key: header {name!r} has a line break in its value",
                                retryable=False)
        headers[name] = text_value
    return headers


def request_headers(event: Event, extra: Mapping[str, str], sig: str | None) -> dict[str, str]:
    """Flux's defaults, then the Secret's headers (which may replace them), then the signature."""
    headers = {"Content-Type": "application/json", COMPONENT_HEADER: event.reportingController}
    lowered = {k.lower(): k for k in headers}
    for name, value in extra.items():
        headers.pop(lowered.get(name.lower(), name), None)
        headers[name] = value
    if sig is not None:
        for name in [k for k in headers if k.lower() == SIGNATURE_HEADER.lower()]:
            del headers[name]
        headers[SIGNATURE_HEADER] = sig
    return headers


def _post(provider: Provider, secret: dict[str, str], event: Event, *, kind: str, signed: bool) -> None:
    url = secret.get("address") or provider.address
    if not url:
        raise DeliveryError(f"{kind}: no address in the Provider or its Secret", retryable=False)
    where = f"{kind} webhook on {http.host(url, kind)}"
    token = secret.get("token", "")
    if signed and not token:
        raise DeliveryError(f"{where}: generic-hmac needs a `token` in the Provider's Secret", retryable=False)
    try:
        extra = parse_headers(secret.get("headers", ""))
    except DeliveryError as exc:
        raise DeliveryError(f"{where}: {exc}", retryable=False) from None
    payload = body(event)
    headers = request_headers(event, extra, signature(payload, token) if signed else None)
    # Header values are credentials too (Authorization): scrub each one from whatever comes back.
    scrub_too = {f"headers/{name}": value for name, value in extra.items()}
    post_webhook(provider, {**secret, **scrub_too}, url, what=where, data=payload, headers=headers)
    log.debug("%s: posted %s event for %s", where, event.reason, event.object_ref)


Refusal = Callable[[DeliveryError, requests.Response, list[str]], DeliveryError]


def post_webhook(provider: Provider, secret: Mapping[str, str], url: str, *, what: str, data: bytes | None = None,
                 json_body: Any = None, headers: Mapping[str, str] | None = None,
                 on_refusal: Refusal | None = None) -> requests.Response:
    """http.send, for an address that is itself a credential (every webhook provider uses it).

    It adds two things http.send does not do (yet): the URL's token-like path segments and query
    values are scrubbed too, so a receiver that answers "unknown token abc…" does not get it
    repeated; and a refusal's body is scrubbed before it is shortened for the message, so a cut
    never leaves part of a credential in view. `on_refusal` may restate a refusal in the
    service's own terms (Discord's error codes and rate-limit body).
    """
    hidden = {**secret, **{f"url/{n}": value for n, value in enumerate(url_secrets(url))}}
    secrets = [*hidden.values(), url]
    answers: list[requests.Response] = []
    session = http.session(provider, secret)
    session.hooks["response"].append(lambda response, *args, **kwargs: answers.append(response))
    try:
        return http.send(provider, hidden, "POST", url, what=what, data=data, json_body=json_body,
                         headers=headers, http=session)
    except DeliveryError:
        if not answers or 200 <= answers[-1].status_code < 300:
            raise  # no answer (a network failure): http.send's message is already safe
        answer = answers[-1]
        error = http.failure(what, answer.status_code, http.scrub(answer.text, secrets), answer.headers, secrets)
        raise (on_refusal(error, answer, secrets) if on_refusal else error) from None
    finally:
        session.close()


def url_secrets(url: str) -> list[str]:
    """The parts of a webhook URL that look like tokens: path segments and query values of 16
    characters or more, or of 8 or more with a digit (ids, signatures, keys)."""
    parts = urlsplit(url)
    candidates = [*parts.path.split("/"), *(value for _, value in parse_qsl(parts.query, keep_blank_values=True))]
    if parts.password:
        candidates.append(parts.password)
    return [c for c in candidates if len(c) >= 16 or (len(c) >= 8 and any(ch.isdigit() for ch in c))]
