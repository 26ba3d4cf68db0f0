"""Bitbucket Cloud (bitbucket.org) webhooks.

Signature: `X-Hub-Signature: sha256=<hex HMAC-SHA256 of the raw body>` when the webhook has
a secret (GitHub's format, under the header name GitHub uses for SHA-1).

Events are named by `X-Event-Key` (`repo:push`, `pullrequest:created`, ...). A `repo:push`
carries `push.changes[]`, one per moved ref: `new` is the ref after the push (`type` branch
or tag, `name`, `target.hash`), `old` the ref before; `new: null` means the ref was deleted
(then `old` names it). Each becomes one RefChange. The delivery id is `X-Request-UUID`.

`pullrequest:*` events are about a pull request: created and updated (which Bitbucket also
sends for a title or description edit) ask for a plan, fulfilled (merged) and rejected
(declined) close it, the others (comments, approvals, ...) ask for nothing. Bitbucket Cloud
publishes no ref for a pull request's head: the plan fetches `refs/heads/<source branch>`,
from the fork when the source is one, and the payload names only an abbreviated commit hash.
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
    git_ref,
    http_url,
    json_object,
    pr_branch,
    pr_number,
    pr_sha,
    ref_change,
    text,
    urls,
    with_git,
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


PR_PREFIX = "pullrequest:"
_PR_ACTIONS = {"created": "opened", "updated": "updated", "fulfilled": "closed", "rejected": "closed"}


def clone_links(repo: Any) -> tuple[str, ...]:
    """A Bitbucket repository object's clone URLs: `links.clone[].href` in the sender's order,
    then its web page as a clone URL (`links.html.href` + .git)."""
    links = repo.get("links") if isinstance(repo, Mapping) else None
    if not isinstance(links, Mapping):
        return ()
    clone = links.get("clone")
    hrefs = [c.get("href") for c in clone if isinstance(c, Mapping)] if isinstance(clone, list) else []
    html = links.get("html")
    return urls(*hrefs, with_git(html.get("href") if isinstance(html, Mapping) else None))


def http_clone_url(repo: Any) -> str:
    """The repository's http(s) clone URL, or "" when it lists none."""
    return next((u for u in clone_links(repo) if http_url(u)), "")


def _repo_key(repo: Any) -> str:
    return (text(repo, "uuid") or text(repo, "full_name").lower()) if isinstance(repo, Mapping) else ""


def pull_request(event: str, data: Mapping[str, Any]) -> PullRequest:
    pr = data.get("pullrequest")
    if not isinstance(pr, Mapping):
        raise BadDelivery(f"{event} payload: 'pullrequest' must be an object")
    number = pr_number(pr.get("id"), "pullrequest.id", event)
    source, destination = pr.get("source"), pr.get("destination")
    if not isinstance(source, Mapping):
        raise BadDelivery(f"{event} payload: 'pullrequest.source' must be an object")
    if not isinstance(destination, Mapping):
        raise BadDelivery(f"{event} payload: 'pullrequest.destination' must be an object")
    head_sha = pr_sha(text(source, "commit", "hash"), "pullrequest.source.commit.hash", event, abbreviated=True)
    head_branch = pr_branch(text(source, "branch", "name"), "pullrequest.source.branch.name", event)
    base_branch = pr_branch(text(destination, "branch", "name"), "pullrequest.destination.branch.name", event)
    base_repo, head_repo = destination.get("repository"), source.get("repository")
    clone_urls = urls(*clone_links(base_repo), *clone_links(data.get("repository")))
    if not clone_urls:
        raise BadDelivery(f"{event} payload: 'pullrequest.destination.repository.links.html.href' "
                          "must be a non-empty string")
    fork = _repo_key(head_repo) != _repo_key(base_repo)
    sender_action = event.removeprefix(PR_PREFIX)
    return PullRequest(
        number=number, action=_PR_ACTIONS.get(sender_action, ""), head_sha=head_sha,
        head_ref=f"refs/heads/{head_branch}", base_branch=base_branch, clone_urls=clone_urls, fork=fork,
        head_clone_url=http_clone_url(head_repo) if fork else "", url=text(pr, "links", "html", "href"),
        draft=pr.get("draft") is True, sender_action=sender_action)


def parse(headers: Mapping[str, str], body: bytes) -> Hook:
    event = headers.get("X-Event-Key", "").strip()
    if not event:
        raise BadDelivery("missing X-Event-Key header")
    delivery_id = TYPE.delivery_id(headers)
    data = json_object(body)
    if event.startswith(PR_PREFIX):
        return Hook(event=event, delivery_id=delivery_id, pull_request=pull_request(event, data))
    if event != "repo:push":
        # repo:commit_status_*, issue:*, ...: every selected resource.
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
