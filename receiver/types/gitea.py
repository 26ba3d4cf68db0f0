"""Gitea webhooks, and the same functions registered for Forgejo and Gogs.

Signature: `X-Gitea-Signature` (Forgejo also sends `X-Forgejo-Signature`, Gogs only
`X-Gogs-Signature`; Gitea duplicates its values under the Gogs names): the bare lowercase
hex HMAC-SHA256 of the raw body, no `sha256=` prefix, and an empty value when no secret is
set. Any of these headers verifying is enough.

Gitea and Forgejo also send GitHub-compatible copies (`X-GitHub-Event`,
`X-Hub-Signature-256`, ...). This type never reads them: the Receiver's type decides how a
delivery is judged, so a `gitea` Receiver works the same with or without them, and a
`github` Receiver judges a Gitea delivery by the GitHub headers alone (see github.py).

Payloads are GitHub-shaped: a push has `ref` and `after`; `create` names a short `ref`,
its `ref_type` and (Gitea, recent Gogs) the `sha`; `delete` names the ref, no sha. A
`pull_request` asks for a plan of `refs/pull/<n>/head` (see github.py), except from Gogs,
whose pull request payload names no head commit. Bodies are `application/json` or a form
with the JSON in its `payload` field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from receiver.signatures import hmac_matches, split_signatures
from receiver.types.base import (
    BadDelivery,
    Hook,
    Keys,
    ReceiverType,
    RefChange,
    git_ref,
    json_payload,
    text,
)

# The payloads are GitHub-shaped, so GitHub's push and pull request reading is shared;
# GitHub's headers are not.
from receiver.types.github import pull_request, pushed_ref

SIGNATURE_HEADERS = ("X-Gitea-Signature", "X-Forgejo-Signature", "X-Gogs-Signature")
EVENT_HEADERS = ("X-Gitea-Event", "X-Forgejo-Event", "X-Gogs-Event")
DELIVERY_HEADERS = ("X-Gitea-Delivery", "X-Forgejo-Delivery", "X-Gogs-Delivery")


def verify(headers: Mapping[str, str], body: bytes, keys: Keys) -> bool:
    try:
        signatures: list[str] = []
        for name in SIGNATURE_HEADERS:
            value = headers.get(name, "")
            if isinstance(value, str) and value:
                signatures.extend(split_signatures(value))
        return bool(signatures) and hmac_matches("sha256", keys.tokens, body, signatures)
    except (TypeError, ValueError):  # hostile header values: never an exception, only "no"
        return False


def _event(headers: Mapping[str, str]) -> str:
    for name in EVENT_HEADERS:
        value = headers.get(name, "")
        if isinstance(value, str) and value.strip():
            return value.strip()
    raise BadDelivery("missing X-Gitea-Event (or X-Forgejo-Event, X-Gogs-Event) header")


def _ref_event(event: str, data: Mapping[str, Any]) -> RefChange:
    """`create` or `delete`: a short ref name (or a full one) with its `ref_type`."""
    ref = data.get("ref")
    if not isinstance(ref, str) or not ref:
        raise BadDelivery(f"{event} payload: 'ref' must be a non-empty string")
    ref_type = text(data, "ref_type")
    if not ref.startswith("refs/"):
        if ref_type not in ("branch", "tag"):
            raise BadDelivery(f"{event} payload: 'ref_type' must be 'branch' or 'tag'")
        ref = ("refs/heads/" if ref_type == "branch" else "refs/tags/") + ref
    sha = data.get("sha") if event == "create" else None
    if sha is None or sha == "":
        # Gogs before 0.12 and every `delete` name no commit: the ref alone still selects.
        return RefChange(*git_ref(ref))
    return pushed_ref(event, {"ref": ref, "sha": sha}, "sha")


# Gitea's and Forgejo's pull_request actions that ask for a plan (there is no "ready for
# review" action: taking the WIP prefix off the title is an edit).
_PR_ACTIONS = {"opened": "opened", "synchronized": "updated", "reopened": "reopened", "closed": "closed"}


def _parse(headers: Mapping[str, str], body: bytes, *, gogs: bool) -> Hook:
    event = _event(headers)
    delivery_id = TYPE.delivery_id(headers)
    data = json_payload(headers, body)
    if event == "push":
        return Hook(event=event, delivery_id=delivery_id, changes=(pushed_ref(event, data, "after"),))
    if event in ("create", "delete"):
        return Hook(event=event, delivery_id=delivery_id, changes=(_ref_event(event, data),))
    if event == "pull_request":
        if gogs:
            # Gogs' pull request payload names the branches but no commit (no `head.sha`):
            # there is nothing to check a plan against, and the base branch did not move.
            return Hook(event=event, delivery_id=delivery_id,
                        ignore="Gogs names no head commit in a pull request delivery: no plan")
        return Hook(event=event, delivery_id=delivery_id, pull_request=pull_request(event, data, _PR_ACTIONS))
    # release, issues, pull request reviews and comments, ...: no ref to follow.
    return Hook(event=event, delivery_id=delivery_id)


def parse(headers: Mapping[str, str], body: bytes) -> Hook:
    return _parse(headers, body, gogs=False)


def parse_gogs(headers: Mapping[str, str], body: bytes) -> Hook:
    return _parse(headers, body, gogs=True)


TYPE = ReceiverType(name="gitea", verify=verify, parse=parse, delivery_headers=DELIVERY_HEADERS)
FORGEJO = ReceiverType(name="forgejo", verify=verify, parse=parse, delivery_headers=DELIVERY_HEADERS)
GOGS = ReceiverType(name="gogs", verify=verify, parse=parse_gogs, delivery_headers=DELIVERY_HEADERS)
