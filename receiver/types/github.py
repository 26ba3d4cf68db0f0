"""GitHub (and GitHub Enterprise) webhooks.

Signature: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>` keyed with the
Receiver's token (or a rotation key). The legacy `X-Hub-Signature: sha1=<hex>` is accepted
only when the Receiver opts in (`Keys.allow_sha1`) and no SHA-256 signature was sent. Bodies
come as `application/json` or, when the webhook is set to the form content type, as
`application/x-www-form-urlencoded` with the JSON in the `payload` field; the signature is
over the raw bytes either way.

A `pull_request` delivery asks for a plan of the pull request's head (`refs/pull/<n>/head`,
fetched from the base repository, forks included): see `PullRequest` in base.py.

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
    PullRequest,
    ReceiverType,
    RefChange,
    http_url,
    json_payload,
    pr_branch,
    pr_number,
    pr_sha,
    pr_text,
    ref_change,
    text,
    urls,
    with_git,
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


# GitHub's pull_request actions that ask for a plan; every other one (edited, labeled,
# assigned, converted_to_draft, ...) asks for none.
_PR_ACTIONS = {"opened": "opened", "synchronize": "updated", "reopened": "reopened",
               "ready_for_review": "ready", "closed": "closed"}


def _repo_id(repo: Mapping[str, Any]) -> object:
    """What tells two repositories of one payload apart: the id, else the full name."""
    rid = repo.get("id")
    if isinstance(rid, int) and not isinstance(rid, bool):
        return rid
    return text(repo, "full_name").lower() or None


def pull_request(event: str, data: Mapping[str, Any], actions: Mapping[str, str] = _PR_ACTIONS) -> PullRequest:
    """A `pull_request` delivery (GitHub's shape, which Gitea and Forgejo copy with their own
    `actions`), with errors naming the field."""
    pr = data.get("pull_request")
    if not isinstance(pr, Mapping):
        raise BadDelivery(f"{event} payload: 'pull_request' must be an object")
    sender_action = pr_text(data.get("action"), "action", event)
    number = pr_number(pr.get("number"), "pull_request.number", event)
    head, base = pr.get("head"), pr.get("base")
    if not isinstance(head, Mapping):
        raise BadDelivery(f"{event} payload: 'pull_request.head' must be an object")
    if not isinstance(base, Mapping):
        raise BadDelivery(f"{event} payload: 'pull_request.base' must be an object")
    head_sha = pr_sha(head.get("sha"), "pull_request.head.sha", event)
    base_branch = pr_branch(base.get("ref"), "pull_request.base.ref", event)
    base_repo = base.get("repo")
    if not isinstance(base_repo, Mapping):
        base_repo = data.get("repository")
    if not isinstance(base_repo, Mapping):
        raise BadDelivery(f"{event} payload: 'pull_request.base.repo' must be an object")
    clone_urls = urls(base_repo.get("clone_url"), base_repo.get("ssh_url"), with_git(base_repo.get("html_url")))
    if not clone_urls:
        raise BadDelivery(f"{event} payload: 'pull_request.base.repo.clone_url' must be a non-empty string")
    head_repo = head.get("repo")
    # A fork deleted since the pull request was opened leaves `head.repo` null: still a fork.
    fork = not isinstance(head_repo, Mapping) or _repo_id(head_repo) != _repo_id(base_repo)
    return PullRequest(
        number=number, action=actions.get(sender_action, ""), head_sha=head_sha,
        head_ref=f"refs/pull/{number}/head", base_branch=base_branch, clone_urls=clone_urls, fork=fork,
        head_clone_url=http_url(head_repo.get("clone_url")) if fork and isinstance(head_repo, Mapping) else "",
        url=text(pr, "html_url"), draft=pr.get("draft") is True, sender_action=sender_action)


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
    if event == "pull_request":
        return Hook(event=event, delivery_id=delivery_id, pull_request=pull_request(event, data))
    # package, registry_package, ...: no ref of a deployable branch or tag.
    return Hook(event=event, delivery_id=delivery_id)


TYPE = ReceiverType(name="github", verify=verify, parse=parse, delivery_headers=("X-GitHub-Delivery",))
