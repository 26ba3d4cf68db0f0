"""GitHub (and GitHub Enterprise) webhooks.

Signature: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>` keyed with the
Receiver's token. Bodies come as `application/json` or, when the webhook is set to the form
content type, as `application/x-www-form-urlencoded` with the JSON in the `payload` field; the
signature is over the raw bytes either way.
"""

from __future__ import annotations

import json
from typing import Any
from collections.abc import Mapping
from urllib.parse import parse_qs

from receiver.signatures import prefixed_hmac_matches
from receiver.types.base import BadDelivery, Hook, ReceiverType

_ZERO_SHA = "0" * 40


def verify(headers: Mapping[str, str], body: bytes, token: str) -> bool:
    signature = headers.get("X-Hub-Signature-256", "")
    return bool(signature) and prefixed_hmac_matches(signature, token.encode(), body, "sha256")


def _payload(headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
    content_type = headers.get("Content-Type", "application/json").split(";")[0].strip().lower()
    raw: bytes | str = body
    if content_type == "application/x-www-form-urlencoded":
        try:
            form = parse_qs(body.decode("utf-8"), strict_parsing=True)
        except (UnicodeDecodeError, ValueError):
            raise BadDelivery("form body is not valid application/x-www-form-urlencoded") from None
        if "payload" not in form:
            raise BadDelivery("form body has no 'payload' field")
        raw = form["payload"][0]
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadDelivery(f"body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadDelivery("body must be a JSON object")
    return data


def parse(headers: Mapping[str, str], body: bytes) -> Hook:
    event = headers.get("X-GitHub-Event", "").strip()
    if not event:
        raise BadDelivery("missing X-GitHub-Event header")
    delivery_id = headers.get("X-GitHub-Delivery", "")
    data = _payload(headers, body)
    if event == "ping":
        return Hook(event=event, delivery_id=delivery_id, ping=True)
    if event != "push":
        return Hook(event=event, delivery_id=delivery_id)

    ref, after = data.get("ref"), data.get("after")
    if not isinstance(ref, str) or not ref.startswith("refs/"):
        raise BadDelivery("push payload: 'ref' must be a string like refs/heads/main")
    if not isinstance(after, str) or len(after) != 40:
        raise BadDelivery("push payload: 'after' must be a 40-hex commit sha")
    if ref.startswith("refs/heads/"):
        kind, name = "branch", ref.removeprefix("refs/heads/")
    elif ref.startswith("refs/tags/"):
        kind, name = "tag", ref.removeprefix("refs/tags/")
    else:
        kind, name = "", ref
    # A deleted branch or tag has no revision to deploy; the push is still worth a reconcile
    # (the GitRepository may now point elsewhere), so it is not an error.
    revision = "" if after == _ZERO_SHA else f"{name}@sha1:{after}"
    return Hook(event=event, delivery_id=delivery_id, ref_kind=kind, ref=name, revision=revision)


TYPE = ReceiverType(name="github", verify=verify, parse=parse)
