"""GitHub (and GitHub Enterprise) webhooks.

Signature: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>` keyed with the
Receiver's token (or a rotation key). The legacy `X-Hub-Signature: sha1=<hex>` is accepted
only when the Receiver opts in (`Keys.allow_sha1`) and no SHA-256 signature was sent. Bodies
come as `application/json` or, when the webhook is set to the form content type, as
`application/x-www-form-urlencoded` with the JSON in the `payload` field; the signature is
over the raw bytes either way.

Gitea and Forgejo send GitHub-compatible headers too. A Receiver of type `github` judges
such a delivery by those GitHub headers alone: the Receiver's type decides, never sniffing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from receiver.signatures import prefixed_hmac_matches
from receiver.types.base import (
    BadDelivery,
    Hook,
    Keys,
    ReceiverType,
    RefChange,
    json_payload,
    ref_change,
    text,
)


def verify(headers: Mapping[str, str], body: bytes, keys: Keys) -> bool:
    try:
        signature = headers.get("X-Hub-Signature-256", "")
        if isinstance(signature, str) and signature:
            return prefixed_hmac_matches(signature, keys.tokens, body, ("sha256",))
        legacy = headers.get("X-Hub-Signature", "")
        return (keys.allow_sha1 and isinstance(legacy, str) and bool(legacy)
                and prefixed_hmac_matches(legacy, keys.tokens, body, ("sha1",)))
    except (TypeError, ValueError):  # hostile header values: never an exception, only "no"
        return False


_REF_TYPES = {"branch": "branch", "tag": "tag"}


def pushed_ref(event: str, data: Mapping[str, Any], sha_field: str = "after") -> RefChange:
    """A GitHub-shaped push (`ref`, and the new commit in `after`), with errors naming the field."""
    ref = data.get("ref")
    if not isinstance(ref, str) or not ref.startswith("refs/"):
        raise BadDelivery(f"{event} payload: 'ref' must be a string like refs/heads/main")
    try:
        return ref_change(ref, data.get(sha_field))
    except BadDelivery:
        raise BadDelivery(f"{event} payload: '{sha_field}' must be a 40-hex commit sha") from None


def created_or_deleted_ref(event: str, data: Mapping[str, Any]) -> RefChange:
    """A `create`/`delete` event: the short ref name and its `ref_type`, no commit.

    GitHub gives no sha for either (Gitea's `create` does; see gitea.py). The ref is still
    named, so only the resources following it are reconciled.
    """
    ref = data.get("ref")
    if not isinstance(ref, str) or not ref:
        raise BadDelivery(f"{event} payload: 'ref' must be a non-empty string")
    kind = _REF_TYPES.get(text(data, "ref_type"))
    if kind is None:
        raise BadDelivery(f"{event} payload: 'ref_type' must be 'branch' or 'tag'")
    return RefChange(kind, ref.removeprefix("refs/heads/" if kind == "branch" else "refs/tags/"))


def parse(headers: Mapping[str, str], body: bytes) -> Hook:
    event = headers.get("X-GitHub-Event", "").strip()
    if not event:
        raise BadDelivery("missing X-GitHub-Event header")
    delivery_id = TYPE.delivery_id(headers)
    data = json_payload(headers, body)
    if event == "ping":
        return Hook(event=event, delivery_id=delivery_id, ping=True)
    if event == "push":
        return Hook(event=event, delivery_id=delivery_id, changes=(pushed_ref(event, data),))
    if event in ("create", "delete"):
        return Hook(event=event, delivery_id=delivery_id, changes=(created_or_deleted_ref(event, data),))
    # pull_request, package, registry_package, ...: no ref of a deployable branch or tag.
    return Hook(event=event, delivery_id=delivery_id)


TYPE = ReceiverType(name="github", verify=verify, parse=parse, delivery_headers=("X-GitHub-Delivery",))
