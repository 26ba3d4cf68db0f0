"""GitLab webhooks (gitlab.com and self-managed), project, group and system hooks.

GitLab signs nothing: `X-Gitlab-Token` carries the configured secret token in plain text,
and verification is that it equals one of the Receiver's keys, compared in constant time.
The value is taken exactly as sent (a trailing space is a different token).

Events are named by `X-Gitlab-Event` (`Push Hook`, `Tag Push Hook`, `Merge Request Hook`,
`System Hook`, ...). A push names one `ref`; its commit is `checkout_sha` (for an annotated
tag, `after` is the tag object, `checkout_sha` the commit it points at), else `after`. A
deleted branch or tag has `checkout_sha: null` and `after` all zeros: the ref, no commit.

Delivery id: `Idempotency-Key`, which GitLab keeps across retries of one delivery (so dedupe
catches them); GitLab before 17.4 does not send it, and then `X-Gitlab-Event-UUID` is used.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from receiver.signatures import token_matches
from receiver.types.base import (
    BadDelivery,
    Hook,
    Keys,
    ReceiverType,
    RefChange,
    json_object,
    ref_change,
    text,
)

PUSH_EVENTS = ("push hook", "tag push hook")
SYSTEM_HOOK = "system hook"
# Changes a System Hook reports about every project of the instance.
_SYSTEM_PUSHES = ("push", "tag_push")
_SYSTEM_NO_REF = ("merge_request",)


def verify(headers: Mapping[str, str], body: bytes, keys: Keys) -> bool:
    presented = headers.get("X-Gitlab-Token", "")
    if not isinstance(presented, str) or not presented:
        return False
    try:
        return token_matches(presented, keys.tokens)
    except (TypeError, ValueError):  # e.g. a lone surrogate that cannot be encoded
        return False


def _push_change(data: Mapping[str, Any], what: str = "push payload") -> RefChange:
    ref = data.get("ref")
    if not isinstance(ref, str) or not ref.startswith("refs/"):
        raise BadDelivery(f"{what}: 'ref' must be a string like refs/heads/main")
    checkout_sha = data.get("checkout_sha")
    if checkout_sha is not None and not isinstance(checkout_sha, str):
        raise BadDelivery(f"{what}: 'checkout_sha' must be a string or null")
    sha_field = "checkout_sha" if checkout_sha else "after"
    try:
        return ref_change(ref, checkout_sha or data.get("after"))
    except BadDelivery:
        raise BadDelivery(f"{what}: {sha_field!r} must be a 40-hex commit sha") from None


def _repository_update(data: Mapping[str, Any]) -> tuple[RefChange, ...]:
    changes = data.get("changes")
    if not isinstance(changes, list):
        raise BadDelivery("repository_update payload: 'changes' must be a list")
    result = []
    for i, change in enumerate(changes):
        if not isinstance(change, Mapping):
            raise BadDelivery(f"repository_update payload: 'changes[{i}]' must be an object")
        try:
            result.append(ref_change(change.get("ref"), change.get("after")))
        except BadDelivery as exc:
            raise BadDelivery(f"repository_update payload: 'changes[{i}]': {exc}") from None
    return tuple(result)


def parse(headers: Mapping[str, str], body: bytes) -> Hook:
    event = headers.get("X-Gitlab-Event", "").strip()
    if not event:
        raise BadDelivery("missing X-Gitlab-Event header")
    delivery_id = TYPE.delivery_id(headers)
    data = json_object(body)
    kind = event.lower()
    if kind in PUSH_EVENTS:
        return Hook(event=event, delivery_id=delivery_id, changes=(_push_change(data),))
    if kind == SYSTEM_HOOK:
        system_event = text(data, "event_name") or text(data, "object_kind")
        if system_event in _SYSTEM_PUSHES:
            return Hook(event=event, delivery_id=delivery_id, changes=(_push_change(data, "system hook push"),))
        if system_event == "repository_update":
            changes = _repository_update(data)
            if changes:
                return Hook(event=event, delivery_id=delivery_id, changes=changes)
            return Hook(event=event, delivery_id=delivery_id, ignore="repository_update names no ref")
        if system_event in _SYSTEM_NO_REF or text(data, "object_kind") in _SYSTEM_NO_REF:
            return Hook(event=event, delivery_id=delivery_id)
        # project_create, user_add_to_team, ...: instance administration, no Git change.
        return Hook(event=event, delivery_id=delivery_id,
                    ignore=f"system hook event {system_event[:64]!r} is no Git change" if system_event
                    else "system hook names no event")
    # Merge Request Hook, Pipeline Hook, Release Hook, ...: every selected resource.
    return Hook(event=event, delivery_id=delivery_id)


TYPE = ReceiverType(name="gitlab", verify=verify, parse=parse,
                    delivery_headers=("Idempotency-Key", "X-Gitlab-Event-UUID"))
