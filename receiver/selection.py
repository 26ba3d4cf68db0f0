"""Which objects a verified delivery asks to reconcile, plan or scan (pure functions over the config)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit

from herald import model as m
from herald.config import RECONCILABLE_KINDS, Config
from herald.registry.names import ImageName, ImageNameError, parse_image
from receiver.types.base import Hook, PullRequest, RefChange


@dataclass(frozen=True)
class Target:
    kind: str
    name: str
    namespace: str


@dataclass(frozen=True)
class Selected:
    target: Target
    revision: str  # what the delivery names for the ref the target follows, or ""


@dataclass(frozen=True)
class Skipped:
    target: Target
    why: str


def _labels_match(labels: dict[str, str], selector: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def select(cfg: Config, receiver: m.Receiver) -> list[Target]:
    """Expand `spec.resources`: by name, or `name: "*"` with matchLabels, as Flux does.

    Only the kinds the reconciler reconciles; ImageRepositories are image_targets'."""
    return _expand(cfg, receiver, RECONCILABLE_KINDS)


def _expand(cfg: Config, receiver: m.Receiver, kinds: tuple[str, ...]) -> list[Target]:
    targets: list[Target] = []
    for res in receiver.resources:
        if res.kind not in kinds:
            continue
        ns = res.namespace or receiver.meta.namespace
        if res.name == "*":
            for (obj_ns, obj_name), obj in sorted(cfg.by_kind(res.kind).items()):
                if obj_ns == ns and _labels_match(obj.meta.labels, res.match_labels):
                    targets.append(Target(res.kind, obj_name, ns))
        elif (ns, res.name) in cfg.by_kind(res.kind):
            targets.append(Target(res.kind, res.name, ns))
    return list(dict.fromkeys(targets))  # a target named twice is reconciled once


@dataclass(frozen=True)
class WebhookImage:
    """The image a registry delivery names, taken apart: `name` is its canonical repository,
    or None when it cannot be told (then `why` says so, for the answer and the logs)."""

    name: ImageName | None
    tag: str
    digest: str
    why: str = ""


def split_reference(reference: str) -> tuple[str, str, str]:
    """`host/repo:tag@sha256:...` -> ("host/repo", "tag", "sha256:..."): the digest after `@`,
    the tag after a `:` that follows the last `/` (so a registry's port is not a tag)."""
    name, _, digest = reference.strip().partition("@")
    colon = name.rfind(":")
    if colon > name.rfind("/"):
        return name[:colon], name[colon + 1:], digest
    return name, "", digest


def webhook_image(hook: Hook) -> WebhookImage:
    """What `hook.image` names, with `hook.digest` (or the reference's own) as the digest.

    An image without a registry host (Nexus never names its Docker connector's host; ACR and
    Harbor leave it out when their payload lacks it) is not taken for a Docker Hub image, as
    `docker pull` would take it: the registry is unknown, so no ImageRepository matches it by
    image. The repository is lowercased first: registries name repositories in lowercase, and
    GitHub writes a ghcr.io owner as it is spelled (`ghcr.io/Codertocat/hello-world`).
    """
    name, tag, digest = split_reference(hook.image)
    digest = hook.digest or digest
    if not name:
        return WebhookImage(None, tag, digest, "the delivery names no image")
    first, slash, _ = name.partition("/")
    if not slash or not ("." in first or ":" in first or first.lower() == "localhost"):
        return WebhookImage(None, tag, digest, f"the image {name[:200]!r} names no registry host, so no "
                                               "ImageRepository can be matched to it by image")
    try:
        return WebhookImage(_canonical(name.lower()), tag, digest)
    except ImageNameError as exc:
        return WebhookImage(None, tag, digest, f"the image is not a repository name: {str(exc)[:200]}")


@lru_cache(maxsize=4096)
def _canonical(image: str) -> ImageName:
    """parse_image, remembered: every delivery compares with every ImageRepository's image."""
    return parse_image(image)


def image_targets(cfg: Config, receiver: m.Receiver, hook: Hook) -> tuple[list[Target], list[Skipped]]:
    """The ImageRepositories a delivery asks to scan, each once.

    Those the Receiver's `spec.resources` names (by name, or `*` with matchLabels), whatever
    image they are for, as Flux's notification-controller requests them; and, beyond Flux,
    every ImageRepository in any namespace whose canonical image is the one the delivery
    names (`nginx`, `docker.io/library/nginx` and `index.docker.io/library/nginx` are one).
    Suspended ImageRepositories are skipped.
    """
    found = _expand(cfg, receiver, ("ImageRepository",))
    wanted = webhook_image(hook).name if hook.image else None
    if wanted is not None:
        for (ns, name), repo in sorted(cfg.image_repositories.items()):
            try:
                if _canonical(repo.image) == wanted:
                    found.append(Target("ImageRepository", name, ns))
            except ImageNameError:  # refused at load; never matched
                continue
    keep: list[Target] = []
    skipped: list[Skipped] = []
    for t in dict.fromkeys(found):
        repo = cfg.image_repositories.get((t.namespace, t.name))
        if repo is not None and repo.suspend:
            skipped.append(Skipped(t, f"ImageRepository {t.namespace}/{t.name} is suspended"))
        else:
            keep.append(t)
    return keep, skipped


def _tracked_ref(cfg: Config, target: Target) -> m.GitRef | None:
    """The Git ref the target follows, or None when it cannot be told."""
    if target.kind == "GitRepository":
        repo = cfg.git_repositories.get((target.namespace, target.name))
        return repo.ref if repo else None
    ks = cfg.kustomizations.get((target.namespace, target.name))
    if ks is None:
        return None
    repo = cfg.git_repositories.get((ks.source_ref.namespace or ks.meta.namespace, ks.source_ref.name))
    return repo.ref if repo else None


def tracks(ref: m.GitRef | None, change: RefChange) -> bool:
    """Whether moving `change`'s ref can change what `ref` resolves to.

    Pushes to other branches are answered without a reconcile: in a busy repository most
    pushes are to feature branches, and reconciling for each would be pure load. Semver
    ranges may move with any tag push, and named refs with anything, so those reconcile.
    """
    if ref is None or not change.kind:
        return True
    if ref.commit:
        return False
    if ref.name:
        return True
    if ref.semver:
        return change.kind == "tag"
    if ref.tag:
        return change.kind == "tag" and change.name == ref.tag
    if ref.branch:
        return change.kind == "branch" and change.name == ref.branch
    return True


def _exact(ref: m.GitRef | None, change: RefChange) -> bool:
    """Whether `change` names exactly what `ref` follows, so its sha is the one to deploy."""
    if ref is None or ref.commit or ref.name or ref.semver:
        return False
    if ref.tag:
        return change.kind == "tag" and change.name == ref.tag
    return change.kind == "branch" and change.name == ref.branch


def split_by_ref(cfg: Config, targets: list[Target], hook: Hook) -> tuple[list[Selected], list[Skipped]]:
    """Keep the targets the delivery's ref changes can affect, each with the revision it names.

    A delivery that names no ref (a registry push) keeps every target.
    """
    keep: list[Selected] = []
    skipped: list[Skipped] = []
    for t in targets:
        ref = _tracked_ref(cfg, t)
        if not hook.changes:
            keep.append(Selected(t, ""))
            continue
        hits = [c for c in hook.changes if tracks(ref, c)]
        if hits:
            exact = next((c.revision for c in hits if _exact(ref, c)), "")
            keep.append(Selected(t, exact))
            continue
        follows = (ref.branch or ref.tag or ref.semver or ref.commit) if ref else "?"
        pushed = ", ".join(f"{c.kind or 'ref'} {c.name!r}" for c in hook.changes[:5])
        skipped.append(Skipped(t, f"{t.kind} {t.namespace}/{t.name} follows {follows!r}, not {pushed}"))
    return keep, skipped


# `[user@]host:path`, Git's scp-like syntax (no scheme; the colon comes before any slash).
_SCP_LIKE = re.compile(r"(?:[^@/:]+@)?(?P<host>[^@/:]+):(?P<path>(?!//).*)")


def repository_key(url: str) -> str:
    """One form for the many ways to write a repository's URL: `host/owner/repo`.

    The scheme, user and port are dropped, the host lowercased, a trailing `.git` and `/`
    dropped, so `git@host:owner/repo`, `ssh://git@host:22/owner/repo.git` and
    `https://host/owner/repo` are one repository. The path keeps its case. A local path or
    `file://` URL keeps its path alone ("" host).
    """
    url = url.strip()
    scp = None if "://" in url else _SCP_LIKE.fullmatch(url)
    if scp:
        host, path = scp["host"], scp["path"]
    else:
        parts = urlsplit(url)
        try:
            host = parts.hostname or ""
        except ValueError:  # a malformed IPv6 literal
            host = ""
        path = parts.path if parts.scheme else url
    path = path.strip().rstrip("/").removesuffix(".git").rstrip("/").lstrip("/")
    return f"{host.lower()}/{path}"


def _source_of(cfg: Config, target: Target) -> tuple[Target, m.GitRepository] | None:
    """The GitRepository a target is, or the one a Kustomization builds from."""
    if target.kind == "GitRepository":
        repo = cfg.git_repositories.get((target.namespace, target.name))
        return (target, repo) if repo else None
    ks = cfg.kustomizations.get((target.namespace, target.name))
    if ks is None or ks.source_ref.kind != "GitRepository":
        return None
    ns = ks.source_ref.namespace or ks.meta.namespace
    repo = cfg.git_repositories.get((ns, ks.source_ref.name))
    return (Target("GitRepository", ks.source_ref.name, ns), repo) if repo else None


def _follows(ref: m.GitRef, branch: str) -> bool:
    return ref.branch == branch or ref.name == f"refs/heads/{branch}"


def plan_targets(cfg: Config, targets: list[Target], pr: PullRequest) -> tuple[list[Target], list[Skipped]]:
    """The GitRepositories a pull request asks to plan: among the selected targets (or the
    sources of selected Kustomizations), those whose URL is the pull request's (base)
    repository and that follow the branch it would merge into. Each appears once."""
    wanted = {repository_key(u) for u in pr.clone_urls}
    keep: list[Target] = []
    skipped: list[Skipped] = []
    for t in targets:
        found = _source_of(cfg, t)
        if found is None:
            skipped.append(Skipped(t, f"{t.kind} {t.namespace}/{t.name} has no GitRepository source to plan"))
            continue
        source, repo = found
        via = "" if source == t else f" (the source of {t.kind} {t.namespace}/{t.name})"
        if repository_key(repo.url) not in wanted:
            skipped.append(Skipped(t, f"GitRepository {source.namespace}/{source.name}{via} is {repo.url}, "
                                      "not the pull request's repository"))
        elif not _follows(repo.ref, pr.base_branch):
            follows = repo.ref.branch or repo.ref.tag or repo.ref.semver or repo.ref.commit or repo.ref.name
            skipped.append(Skipped(t, f"GitRepository {source.namespace}/{source.name}{via} follows "
                                      f"{follows!r}, not {pr.base_branch!r}"))
        elif source not in keep:
            keep.append(source)
    return keep, skipped
