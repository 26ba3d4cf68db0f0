"""What a receiver type module provides.

Each module (one per Git host or registry) exposes two pure functions, so verification and
parsing are tested on bytes and headers alone, with no HTTP server:

    verify(headers, body, keys) -> bool      # on the raw bytes, before any parsing
    parse(headers, body) -> Hook             # raises BadDelivery for a malformed body

`headers` is case-insensitive (werkzeug's Headers or EnvironHeaders), as HTTP header names
are. `verify` must never raise on hostile input: any malformed signature is simply False.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs


class BadDelivery(ValueError):
    """A correctly signed delivery whose body or headers make no sense: answered 400."""


@dataclass(frozen=True)
class Keys:
    """What a Receiver's Secret (and spec) give its type to verify a delivery with.

    `tokens` is the Secret's `token` first, then each line of its `rotationKeys`: a signed
    type accepts a signature made with any of them, so a sender can move to a new key while
    the old one still verifies. The URL stays derived from `token` alone.
    """

    tokens: tuple[str, ...]
    # Every key of the Secret, trimmed: type-specific extras (ACR's username/password, ...).
    secret: Mapping[str, str] = field(default_factory=dict)
    # Receiver spec.insecureAllowSHA1: GitHub's legacy `X-Hub-Signature: sha1=` fallback.
    allow_sha1: bool = False

    @classmethod
    def of(cls, *tokens: str, allow_sha1: bool = False, **secret: str) -> Keys:
        """For tests and callers with no Secret at hand."""
        return cls(tokens=tuple(tokens), secret={"token": tokens[0], **secret} if tokens else secret,
                   allow_sha1=allow_sha1)


@dataclass(frozen=True)
class RefChange:
    """One Git ref a delivery says moved."""

    kind: str  # "branch", "tag", or "" for other refs (refs/pull/..., refs/notes/...)
    name: str  # "main", "v1.2.0"
    sha: str = ""  # the new commit; "" when the ref was deleted or the sender does not say

    @property
    def revision(self) -> str:
        """`<ref>@sha1:<sha>` as Flux writes revisions (`sha256:` for SHA-256 repositories)."""
        if not self.sha:
            return ""
        return f"{self.name}@{'sha256' if len(self.sha) == 64 else 'sha1'}:{self.sha}"


@dataclass(frozen=True)
class PullRequest:
    """A pull (merge) request a delivery is about: what to plan, and where to fetch it from.

    `action` is normalized across hosts: "opened", "updated" (a new head was pushed),
    "reopened", "ready" (out of draft), "closed" (closed or merged), or "" for an action that
    asks for no plan (a title edit, a label, a review, ...); `sender_action` keeps the
    sender's own word for it, for the answer and the logs.
    """

    number: int
    action: str
    # The head commit: 40 or 64 hex, lowercased. Bitbucket Cloud names only an abbreviated
    # hash (12 hex) in its pull request payloads: the planner resolves `head_ref` and checks
    # that the commit it gets starts with this.
    head_sha: str
    # What to fetch from the BASE repository: refs/pull/<n>/head (GitHub, Gitea, Forgejo),
    # refs/merge-requests/<iid>/head (GitLab). Bitbucket Cloud and Server publish no such ref:
    # refs/heads/<source branch>, fetched from `head_clone_url` when the head is a fork.
    head_ref: str
    base_branch: str  # the target branch's name, "main"
    clone_urls: tuple[str, ...]  # the BASE repository's clone (or web) URLs, as the sender gives them
    fork: bool  # the head repository is not the base repository
    head_clone_url: str = ""  # the fork's http(s) clone URL, when `fork`
    url: str = ""  # the pull request's web page
    draft: bool = False
    sender_action: str = ""  # the sender's action ("synchronize", "label_updated", ...)


@dataclass(frozen=True)
class Hook:
    """What a verified delivery says, in the terms the receiver needs to act on it."""

    event: str  # the sender's event name, compared with a Receiver's spec.events
    delivery_id: str = ""  # the sender's id of this delivery, for dedupe and logs
    ping: bool = False  # a liveness check from the sender: answered, never published
    # The Git refs the delivery says changed (a push may move several). Empty when it names
    # none (registry events): then every selected resource is reconciled.
    changes: tuple[RefChange, ...] = ()
    image: str = ""  # registry events: "host/repository:tag" (or without host when unknown)
    digest: str = ""  # registry events: "sha256:<hex>" when the sender gives it
    ignore: str = ""  # a valid delivery that asks for nothing: answered 200 with this reason
    # A pull request event: planned (see PullRequest), never reconciled.
    pull_request: PullRequest | None = None


@dataclass(frozen=True)
class ReceiverType:
    name: str
    verify: Callable[[Mapping[str, str], bytes, Keys], bool]
    parse: Callable[[Mapping[str, str], bytes], Hook]
    # Headers that carry the sender's delivery id, read for logs even when verification fails.
    delivery_headers: tuple[str, ...] = ()
    # False for senders with no event names (Docker Hub, Quay, generic): spec.events does not
    # apply to them, as in Flux, rather than filtering every delivery out.
    has_events: bool = True

    def delivery_id(self, headers: Mapping[str, str]) -> str:
        for name in self.delivery_headers:
            value = headers.get(name, "")
            if value:
                return value[:128]
        return ""


def json_object(raw: bytes | str, what: str = "body") -> dict[str, Any]:
    """Parse a JSON object, turning every way it can fail into BadDelivery (a 400).

    Deeply nested input makes json raise RecursionError, and non-UTF-8 bytes a
    UnicodeDecodeError: hostile senders try both, and neither may become a 500.
    """
    try:
        # Decoded strictly first: json.loads(bytes) lets encoded surrogates through, which is
        # not UTF-8 and breaks whatever later tries to encode the text.
        data = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BadDelivery(f"{what} is not valid JSON: {str(exc)[:200]}") from None
    if not isinstance(data, dict):
        raise BadDelivery(f"{what} must be a JSON object")
    return data


def json_payload(headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
    """A GitHub-style body: `application/json`, or a form whose `payload` field is the JSON.

    GitHub, Gitea, Forgejo and Gogs offer both content types; the signature covers the raw
    bytes either way, so this runs only after verification.
    """
    content_type = headers.get("Content-Type", "application/json").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        return json_object(body)
    try:
        form = parse_qs(body.decode("utf-8"), strict_parsing=True, max_num_fields=64)
    except (UnicodeDecodeError, ValueError):
        raise BadDelivery("form body is not valid application/x-www-form-urlencoded") from None
    if "payload" not in form:
        raise BadDelivery("form body has no 'payload' field")
    return json_object(form["payload"][0], "form field 'payload'")


def text(data: Mapping[str, Any], *path: str) -> str:
    """The string at `path` in nested JSON objects, or "" when any step is missing or not text."""
    node: Any = data
    for key in path:
        if not isinstance(node, Mapping):
            return ""
        node = node.get(key)
    return node if isinstance(node, str) else ""


def git_ref(ref: str) -> tuple[str, str]:
    """`refs/heads/main` -> ("branch", "main"); `refs/tags/v1` -> ("tag", "v1")."""
    if ref.startswith("refs/heads/"):
        return "branch", ref.removeprefix("refs/heads/")
    if ref.startswith("refs/tags/"):
        return "tag", ref.removeprefix("refs/tags/")
    return "", ref


ZERO_SHA = "0" * 40
# 40 hex for SHA-1 repositories, 64 for SHA-256 ones (Git 2.29+, Gitea, GitLab).
_SHA = re.compile(r"[0-9a-fA-F]{40}(?:[0-9a-fA-F]{24})?")


def ref_change(ref: str, sha: str) -> RefChange:
    """`refs/heads/main` moved to `sha` (all zeros when deleted), checked for shape."""
    if not isinstance(ref, str) or not ref.startswith("refs/"):
        raise BadDelivery("push payload: 'ref' must be a string like refs/heads/main")
    if not isinstance(sha, str) or not _SHA.fullmatch(sha):
        raise BadDelivery(f"push payload: the new commit of {ref[:100]} must be a 40-hex sha")
    kind, name = git_ref(ref)
    # A deleted branch or tag has no revision to deploy; the push is still worth a reconcile
    # (the GitRepository may now resolve elsewhere), so it is not an error.
    return RefChange(kind, name, "" if set(sha) == {"0"} else sha.lower())


def push_hook(event: str, delivery_id: str, ref: str, sha: str) -> Hook:
    """A push that moved one `ref` to `sha`."""
    return Hook(event=event, delivery_id=delivery_id, changes=(ref_change(ref, sha),))


# ---- pull requests: each host's module reads its payload; these check the fields' shape ----

_ABBREVIATED_SHA = re.compile(r"[0-9a-fA-F]{7,64}")


def pr_number(value: Any, field_name: str, what: str) -> int:
    """A pull request's number (GitLab: its iid): a positive integer, never a bool or a string."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise BadDelivery(f"{what} payload: {field_name!r} must be a positive integer")
    return value


def pr_sha(value: Any, field_name: str, what: str, *, abbreviated: bool = False) -> str:
    """The head commit, lowercased: 40 or 64 hex (7 to 64 where the host abbreviates it)."""
    pattern = _ABBREVIATED_SHA if abbreviated else _SHA
    if not isinstance(value, str) or not pattern.fullmatch(value) or set(value) == {"0"}:
        shape = "a hex commit sha" if abbreviated else "a 40-hex commit sha"
        raise BadDelivery(f"{what} payload: {field_name!r} must be {shape}")
    return value.lower()


def pr_text(value: Any, field_name: str, what: str) -> str:
    """A field the plan cannot do without (the action): a non-empty string, trimmed."""
    if not isinstance(value, str) or not value.strip():
        raise BadDelivery(f"{what} payload: {field_name!r} must be a non-empty string")
    return value.strip()


# What `git check-ref-format` refuses in a branch name, roughly: no Git host serves such a
# branch, and the planner passes the name to `git fetch`.
_BAD_BRANCH = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|@\{|//|^[-/.]|/\.|[/.]$|\.lock$|^@$")


def pr_branch(value: Any, field_name: str, what: str) -> str:
    """A branch name, given short ("main") or as a full ref ("refs/heads/main")."""
    if not isinstance(value, str) or not value:
        raise BadDelivery(f"{what} payload: {field_name!r} must be a non-empty string")
    name = value.removeprefix("refs/heads/") if value.startswith("refs/") else value
    if (value.startswith("refs/") and not value.startswith("refs/heads/")) or not name or _BAD_BRANCH.search(name):
        raise BadDelivery(f"{what} payload: {field_name!r} must name a branch")
    return name


def http_url(value: Any) -> str:
    """`value` when it is an http(s) URL (a fork's clone URL the planner will fetch), else ""."""
    if isinstance(value, str) and value.strip().lower().startswith(("https://", "http://")):
        return value.strip()
    return ""


def urls(*values: Any) -> tuple[str, ...]:
    """The non-empty strings among `values`, trimmed, in order, each once."""
    return tuple(dict.fromkeys(v.strip() for v in values if isinstance(v, str) and v.strip()))


def with_git(url: Any) -> str:
    """A web URL as its clone URL (`https://host/owner/repo` -> `.../repo.git`), or ""."""
    if not isinstance(url, str) or not url.strip():
        return ""
    url = url.strip().rstrip("/")
    return url if url.endswith(".git") else url + ".git"
