"""Bitbucket Server / Bitbucket Data Center webhooks.

Signature: `X-Hub-Signature: sha256=<hex HMAC-SHA256 of the raw body>` when the webhook has
a secret (HMACSha256 is the product's default and the only algorithm accepted here).

Events are named by `X-Event-Key`: `repo:refs_changed` (and a mirror's
`mirror:repo_synchronized`) carry `changes[]`, each with the full ref (`ref.id`, or
`refId`), the new commit `toHash` and a `type` of ADD, UPDATE or DELETE; each change is one
RefChange, a DELETE without a commit. `diagnostics:ping` is the "Test connection" button: a
liveness check. The delivery id is `X-Request-Id`.

`pr:*` events are about a pull request (`pullRequest`, its `fromRef` and `toRef`): pr:opened
and pr:from_ref_updated (a push to the source branch) ask for a plan, pr:merged, pr:declined
and pr:deleted close it, the others (comments, reviewers, pr:modified) ask for nothing. The
plan fetches the source branch (`fromRef.id`), from the fork when the source is one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from receiver.types.base import (
    BadDelivery,
    Hook,
    PullRequest,
    ReceiverType,
    RefChange,
    git_ref,
    json_object,
    pr_branch,
    pr_number,
    pr_sha,
    ref_change,
    text,
)

# Signed as Bitbucket Cloud signs: X-Hub-Signature: sha256=<hex HMAC>; repositories list
# their clone URLs under `links.clone` as Cloud's do.
from receiver.types.bitbucket import clone_links, http_clone_url, verify

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


PR_PREFIX = "pr:"
_PR_ACTIONS = {"opened": "opened", "from_ref_updated": "updated", "merged": "closed",
               "declined": "closed", "deleted": "closed"}


def _repo_key(repo: Any) -> object:
    if not isinstance(repo, Mapping):
        return None
    rid = repo.get("id")
    if isinstance(rid, int) and not isinstance(rid, bool):
        return rid
    return (text(repo, "project", "key").upper(), text(repo, "slug").lower())


def _ref(pr: Mapping[str, Any], side: str, event: str) -> Mapping[str, Any]:
    ref = pr.get(side)
    if not isinstance(ref, Mapping):
        raise BadDelivery(f"{event} payload: 'pullRequest.{side}' must be an object")
    return ref


def pull_request(event: str, data: Mapping[str, Any]) -> PullRequest:
    pr = data.get("pullRequest")
    if not isinstance(pr, Mapping):
        raise BadDelivery(f"{event} payload: 'pullRequest' must be an object")
    number = pr_number(pr.get("id"), "pullRequest.id", event)
    from_ref, to_ref = _ref(pr, "fromRef", event), _ref(pr, "toRef", event)
    head_sha = pr_sha(from_ref.get("latestCommit"), "pullRequest.fromRef.latestCommit", event)
    head_branch = pr_branch(from_ref.get("id"), "pullRequest.fromRef.id", event)
    base_branch = pr_branch(to_ref.get("id"), "pullRequest.toRef.id", event)
    base_repo, head_repo = to_ref.get("repository"), from_ref.get("repository")
    clone_urls = clone_links(base_repo)
    if not clone_urls:
        raise BadDelivery(f"{event} payload: 'pullRequest.toRef.repository.links.clone' must list the clone URLs")
    fork = _repo_key(head_repo) != _repo_key(base_repo)
    links = pr.get("links")
    own = links.get("self") if isinstance(links, Mapping) else None
    url = text(own[0], "href") if isinstance(own, list) and own else ""
    sender_action = event.removeprefix(PR_PREFIX)
    return PullRequest(
        number=number, action=_PR_ACTIONS.get(sender_action, ""), head_sha=head_sha,
        head_ref=f"refs/heads/{head_branch}", base_branch=base_branch, clone_urls=clone_urls, fork=fork,
        head_clone_url=http_clone_url(head_repo) if fork else "", url=url, draft=pr.get("draft") is True,
        sender_action=sender_action)


def parse(headers: Mapping[str, str], body: bytes) -> Hook:
    event = headers.get("X-Event-Key", "").strip()
    if not event:
        raise BadDelivery("missing X-Event-Key header")
    delivery_id = TYPE.delivery_id(headers)
    if event == PING:
        # "Test connection" asks only for an answer; its small body says nothing more.
        return Hook(event=event, delivery_id=delivery_id, ping=True)
    data = json_object(body)
    if event.startswith(PR_PREFIX):
        return Hook(event=event, delivery_id=delivery_id, pull_request=pull_request(event, data))
    if event not in REF_EVENTS:
        # repo:modified, repo:comment:added, ...: every selected resource.
        return Hook(event=event, delivery_id=delivery_id)
    changes = data.get("changes")
    if not isinstance(changes, list):
        raise BadDelivery(f"{event} payload: 'changes' must be a list")
    refs = tuple(_change(event, c, f"changes[{i}]") for i, c in enumerate(changes))
    if not refs:
        return Hook(event=event, delivery_id=delivery_id, ignore=f"{event} names no ref change")
    return Hook(event=event, delivery_id=delivery_id, changes=refs)


TYPE = ReceiverType(name="bitbucketserver", verify=verify, parse=parse, delivery_headers=("X-Request-Id",))
