"""Which objects a verified delivery asks to reconcile (pure functions over the config)."""

from __future__ import annotations

from dataclasses import dataclass

from herald import model as m
from herald.config import RECONCILABLE_KINDS, Config
from receiver.types.base import Hook


@dataclass(frozen=True)
class Target:
    kind: str
    name: str
    namespace: str


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


def tracks(ref: m.GitRef | None, hook: Hook) -> bool:
    """Whether a push to `hook.ref` can change what `ref` resolves to.

    Pushes to other branches are answered without a reconcile: in a busy repository most
    pushes are to feature branches, and reconciling for each would be pure load. Tags, semver
    ranges and named refs may move with any tag push, so those always reconcile.
    """
    if ref is None or not hook.ref_kind:
        return True
    if ref.commit:
        return False
    if ref.branch and not (ref.tag or ref.semver or ref.name):
        return hook.ref_kind == "branch" and hook.ref == ref.branch
    if ref.tag and not (ref.semver or ref.name):
        return hook.ref_kind == "tag" and hook.ref == ref.tag
    if ref.semver and not ref.name:
        return hook.ref_kind == "tag"
    return True


def split_by_ref(cfg: Config, targets: list[Target], hook: Hook) -> tuple[list[Target], list[Skipped]]:
    keep, skipped = [], []
    for t in targets:
        ref = _tracked_ref(cfg, t)
        if tracks(ref, hook):
            keep.append(t)
        else:
            follows = ref.branch or ref.tag or ref.semver or ref.commit if ref else "?"
            skipped.append(Skipped(t, f"{t.kind} {t.namespace}/{t.name} follows {follows!r}, "
                                      f"not {hook.ref_kind} {hook.ref!r}"))
    return keep, skipped
