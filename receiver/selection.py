"""Which objects a verified delivery asks to reconcile (pure functions over the config)."""

from __future__ import annotations

from dataclasses import dataclass

from herald import model as m
from herald.config import RECONCILABLE_KINDS, Config
from receiver.types.base import Hook, RefChange


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
    """Expand `spec.resources`: by name, or `name: "*"` with matchLabels, as Flux does."""
    targets: list[Target] = []
    for res in receiver.resources:
        if res.kind not in RECONCILABLE_KINDS:
            continue
        ns = res.namespace or receiver.meta.namespace
        if res.name == "*":
            for (obj_ns, obj_name), obj in sorted(cfg.by_kind(res.kind).items()):
                if obj_ns == ns and _labels_match(obj.meta.labels, res.match_labels):
                    targets.append(Target(res.kind, obj_name, ns))
        elif (ns, res.name) in cfg.by_kind(res.kind):
            targets.append(Target(res.kind, res.name, ns))
    return list(dict.fromkeys(targets))  # a target named twice is reconciled once


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

    A delivery that names no ref (a pull request, a registry push) keeps every target.
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
