"""Bitbucket Cloud (bitbucket.org) webhooks.

Signature: `X-Hub-Signature: sha256=<hex HMAC-SHA256 of the raw body>` when the webhook has
a secret (GitHub's format, under the header name GitHub uses for SHA-1).

Events are named by `X-Event-Key` (`repo:push`, `pullrequest:created`, ...). A `repo:push`
carries `push.changes[]`, one per moved ref: `new` is the ref after the push (`type` branch
or tag, `name`, `target.hash`), `old` the ref before; `new: null` means the ref was deleted
(then `old` names it). Each becomes one RefChange. The delivery id is `X-Request-UUID`.
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
    git_ref,
    json_object,
    ref_change,
    text,
)

# Bitbucket's ref types, as the Git refs they name ("named_branch"/"bookmark" were Mercurial's).
_REF_PREFIXES = {"branch": "refs/heads/", "named_branch": "refs/heads/", "tag": "refs/tags/",
                 "annotated_tag": "refs/tags/"}


def verify(headers: Mapping[str, str], body: bytes, keys: Keys) -> bool:
    try:
        signature = headers.get("X-Hub-Signature", "")
        return isinstance(signature, str) and bool(signature) and prefixed_hmac_matches(
            signature, keys.tokens, body, ("sha256",))
    except (TypeError, ValueError):  # hostile header values: never an exception, only "no"
        return False


def _change(change: Any, where: str) -> RefChange:
    if not isinstance(change, Mapping):
        raise BadDelivery(f"repo:push payload: '{where}' must be an object")
    new, old = change.get("new"), change.get("old")
    side, state = ("new", new) if new is not None else ("old", old)
    if not isinstance(state, Mapping):
        raise BadDelivery(f"repo:push payload: '{where}.{side}' must be an object"
                          + ("" if new is not None else " when 'new' is null (a deleted ref)"))
    name, ref_type = text(state, "name"), text(state, "type")
    if not name:
        raise BadDelivery(f"repo:push payload: '{where}.{side}.name' must be a non-empty string")
    prefix = _REF_PREFIXES.get(ref_type)
    if prefix is None:
        raise BadDelivery(f"repo:push payload: '{where}.{side}.type' must be 'branch' or 'tag'")
    if side == "old":
        return RefChange(*git_ref(prefix + name))  # deleted: the ref alone, no commit
    target = state.get("target")
    sha = target.get("hash") if isinstance(target, Mapping) else None
    try:
        return ref_change(prefix + name, sha)
    except BadDelivery:
        raise BadDelivery(f"repo:push payload: '{where}.new.target.hash' must be a 40-hex commit sha") from None


def parse(headers: Mapping[str, str], body: bytes) -> Hook:
    event = headers.get("X-Event-Key", "").strip()
    if not event:
        raise BadDelivery("missing X-Event-Key header")
    delivery_id = TYPE.delivery_id(headers)
    data = json_object(body)
    if event != "repo:push":
        # pullrequest:*, repo:commit_status_*, issue:*, ...: every selected resource.
        return Hook(event=event, delivery_id=delivery_id)
    push = data.get("push")
    if not isinstance(push, Mapping):
        raise BadDelivery("repo:push payload: 'push' must be an object")
    changes = push.get("changes")
    if not isinstance(changes, list):
        raise BadDelivery("repo:push payload: 'push.changes' must be a list")
    refs = tuple(_change(c, f"push.changes[{i}]") for i, c in enumerate(changes))
    if not refs:
        return Hook(event=event, delivery_id=delivery_id, ignore="repo:push names no ref change")
    return Hook(event=event, delivery_id=delivery_id, changes=refs)


TYPE = ReceiverType(name="bitbucket", verify=verify, parse=parse, delivery_headers=("X-Request-UUID",))
