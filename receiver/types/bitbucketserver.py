"""Bitbucket Server / Bitbucket Data Center webhooks.

Signature: `X-Hub-Signature: sha256=<hex HMAC-SHA256 of the raw body>` when the webhook has
a secret (HMACSha256 is the product's default and the only algorithm accepted here).

Events are named by `X-Event-Key`: `repo:refs_changed` (and a mirror's
`mirror:repo_synchronized`) carry `changes[]`, each with the full ref (`ref.id`, or
`refId`), the new commit `toHash` and a `type` of ADD, UPDATE or DELETE; each change is one
RefChange, a DELETE without a commit. `pr:*` name no ref to follow. `diagnostics:ping` is
the "Test connection" button: a liveness check. The delivery id is `X-Request-Id`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from receiver.types.base import (
    BadDelivery,
    Hook,
    ReceiverType,
    RefChange,
    git_ref,
    json_object,
    ref_change,
    text,
)

# Signed as Bitbucket Cloud signs: X-Hub-Signature: sha256=<hex HMAC>.
from receiver.types.bitbucket import verify

REF_EVENTS = ("repo:refs_changed", "mirror:repo_synchronized")
PING = "diagnostics:ping"


def _change(event: str, change: Any, where: str) -> RefChange:
    if not isinstance(change, Mapping):
        raise BadDelivery(f"{event} payload: '{where}' must be an object")
    ref = text(change, "ref", "id") or text(change, "refId")
    if not ref.startswith("refs/"):
        raise BadDelivery(f"{event} payload: '{where}.ref.id' (or 'refId') must be a string like refs/heads/main")
    change_type = text(change, "type").upper()
    if change_type == "DELETE":
        return RefChange(*git_ref(ref))
    try:
        return ref_change(ref, change.get("toHash"))
    except BadDelivery:
        raise BadDelivery(f"{event} payload: '{where}.toHash' must be a 40-hex commit sha") from None


def parse(headers: Mapping[str, str], body: bytes) -> Hook:
    event = headers.get("X-Event-Key", "").strip()
    if not event:
        raise BadDelivery("missing X-Event-Key header")
    delivery_id = TYPE.delivery_id(headers)
    if event == PING:
        # "Test connection" asks only for an answer; its small body says nothing more.
        return Hook(event=event, delivery_id=delivery_id, ping=True)
    data = json_object(body)
    if event not in REF_EVENTS:
        # pr:opened, pr:merged, pr:from_ref_updated, repo:modified, ...: every selected resource.
        return Hook(event=event, delivery_id=delivery_id)
    changes = data.get("changes")
    if not isinstance(changes, list):
        raise BadDelivery(f"{event} payload: 'changes' must be a list")
    refs = tuple(_change(event, c, f"changes[{i}]") for i, c in enumerate(changes))
    if not refs:
        return Hook(event=event, delivery_id=delivery_id, ignore=f"{event} names no ref change")
    return Hook(event=event, delivery_id=delivery_id, changes=refs)


TYPE = ReceiverType(name="bitbucketserver", verify=verify, parse=parse, delivery_headers=("X-Request-Id",))
