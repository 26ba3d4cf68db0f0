"""GitLab webhooks (gitlab.com and self-managed), project, group and system hooks.

GitLab signs nothing: `X-Gitlab-Token` carries the configured secret token in plain text,
and verification is that it equals one of the Receiver's keys, compared in constant time.
The value is taken exactly as sent (a trailing space is a different token).

Events are named by `X-Gitlab-Event` (`Push Hook`, `Tag Push Hook`, `Merge Request Hook`,
`System Hook`, ...). A push names one `ref`; its commit is `checkout_sha` (for an annotated
tag, `after` is the tag object, `checkout_sha` the commit it points at), else `after`. A
deleted branch or tag has `checkout_sha: null` and `after` all zeros: the ref, no commit.
A `Merge Request Hook` (or a System Hook's merge_request) asks for a plan of
`refs/merge-requests/<iid>/head`: see `PullRequest` in base.py.

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
    PullRequest,
    ReceiverType,
    RefChange,
    http_url,
    json_object,
    pr_branch,
    pr_number,
    pr_sha,
    pr_text,
    ref_change,
    text,
    urls,
)

PUSH_EVENTS = ("push hook", "tag push hook")
MERGE_REQUEST_HOOK = "merge request hook"
SYSTEM_HOOK = "system hook"
# Changes a System Hook reports about every project of the instance.
_SYSTEM_PUSHES = ("push", "tag_push")
_SYSTEM_MERGE_REQUEST = "merge_request"
# object_attributes.action values that ask for a plan. `update` asks for one only when it
# carries `oldrev` (new commits were pushed); without it, a title, label or assignee changed.
_MR_ACTIONS = {"open": "opened", "reopen": "reopened", "close": "closed", "merge": "closed"}


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


def _id(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def merge_request(data: Mapping[str, Any], what: str = "Merge Request Hook") -> PullRequest:
    """A merge request event: its head is refs/merge-requests/<iid>/head of the target project,
    forks included (GitLab keeps that ref in the target)."""
    attrs = data.get("object_attributes")
    if not isinstance(attrs, Mapping):
        raise BadDelivery(f"{what} payload: 'object_attributes' must be an object")
    sender_action = pr_text(attrs.get("action"), "object_attributes.action", what)
    iid = pr_number(attrs.get("iid"), "object_attributes.iid", what)
    head_sha = pr_sha(text(attrs, "last_commit", "id"), "object_attributes.last_commit.id", what)
    base_branch = pr_branch(attrs.get("target_branch"), "object_attributes.target_branch", what)
    target, source, project = (attrs.get("target"), attrs.get("source"), data.get("project"))
    target = target if isinstance(target, Mapping) else {}
    source = source if isinstance(source, Mapping) else {}
    project = project if isinstance(project, Mapping) else {}
    # The hook's project is the target project; both are read in case one is left out.
    clone_urls = urls(target.get("git_http_url"), target.get("git_ssh_url"),
                      project.get("git_http_url"), project.get("git_ssh_url"))
    if not clone_urls:
        raise BadDelivery(f"{what} payload: 'object_attributes.target.git_http_url' must be a non-empty string")
    source_id, target_id = _id(attrs.get("source_project_id")), _id(attrs.get("target_project_id"))
    if source_id is not None and target_id is not None:
        fork = source_id != target_id
    else:
        fork = text(source, "git_http_url") != text(target, "git_http_url")
    if sender_action == "update":
        oldrev = attrs.get("oldrev")
        action = "updated" if isinstance(oldrev, str) and oldrev else ""
        if not action:
            sender_action = "update (no new commit)"
    else:
        action = _MR_ACTIONS.get(sender_action, "")
    return PullRequest(
        number=iid, action=action, head_sha=head_sha, head_ref=f"refs/merge-requests/{iid}/head",
        base_branch=base_branch, clone_urls=clone_urls, fork=fork,
        head_clone_url=http_url(source.get("git_http_url")) if fork else "", url=text(attrs, "url"),
        draft=attrs.get("draft") is True or attrs.get("work_in_progress") is True,
        sender_action=sender_action)


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
        if _SYSTEM_MERGE_REQUEST in (system_event, text(data, "object_kind")):
            return Hook(event=event, delivery_id=delivery_id,
                        pull_request=merge_request(data, "system hook merge_request"))
        # project_create, user_add_to_team, ...: instance administration, no Git change.
        return Hook(event=event, delivery_id=delivery_id,
                    ignore=f"system hook event {system_event[:64]!r} is no Git change" if system_event
                    else "system hook names no event")
    if kind == MERGE_REQUEST_HOOK:
        return Hook(event=event, delivery_id=delivery_id, pull_request=merge_request(data))
    # Pipeline Hook, Release Hook, ...: every selected resource.
    return Hook(event=event, delivery_id=delivery_id)


TYPE = ReceiverType(name="gitlab", verify=verify, parse=parse,
                    delivery_headers=("Idempotency-Key", "X-Gitlab-Event-UUID"))
