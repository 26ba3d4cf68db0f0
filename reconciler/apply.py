"""Apply a rendered set the way Flux's kustomize-controller does, and say what changed.

1. Every object gets the Kustomization's owner labels (see `reconciler.inventory`).
2. Dry run of the whole set, server-side (field manager `herald`, conflicts forced). If any
   object is refused, nothing is written and the error lists every refused object with the
   API server's message. (Flux stops at the first; Herald reports them all so one push does
   not need one fix-and-retry per mistake.) Objects that cannot be dry-run yet -- custom
   resources of a CRD in the same set, objects in a Namespace the set creates -- are dry-run
   right after the stage that makes them possible.
3. Stages (see `reconciler.order`): cluster definitions (CRDs, Namespaces, ClusterRoles) are
   applied first, then Herald waits until the CRDs are Established and their kinds
   discoverable and the Namespaces active; then the `*Class` kinds; then the rest in Flux's
   kind order.
4. created / configured / unchanged is decided per object from the dry run (as fluxcd/pkg's
   ssa does): no live object → created; the dry-run result differs from the live object in
   labels, annotations or anything outside metadata and status → configured (and applied);
   otherwise unchanged (and not written at all, so nothing moves). A controller's status
   write racing the apply is therefore never reported as a change. When the manifest is
   the same one Herald applied last time (same digest in the inventory), a difference can
   only have been made in the cluster, and the line says ``(drift corrected)``.
5. A change to an immutable field (the API server's 422 "field is immutable", "may not change
   once set", ...) fails with a message naming the object and how to allow recreation,
   unless the object is annotated (or labelled) ``kustomize.toolkit.fluxcd.io/force: enabled``
   or ``herald.dev/force: enabled``: then it is deleted, its deletion awaited, and applied
   again, reported as ``recreated``. Flux recreates on any Invalid error when forced; Herald
   only on immutability, so that a genuinely invalid object is never deleted first.
"""

from __future__ import annotations

import copy
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from reconciler.health import HealthCheckFailed, wait_for
from reconciler.inventory import (
    FORCE_KEYS,
    Entry,
    Inventory,
    ObjectId,
    digest,
    has_policy,
)
from reconciler.kube import ApiRefusal, ApplyError, Cluster, KindNotServed
from reconciler.order import (
    STAGE_CLASSES,
    STAGE_DEFINITIONS,
    STAGE_RESOURCES,
    group_of,
    sort_key,
    stage_of,
)
from reconciler.render import Manifest

log = logging.getLogger("herald.reconciler.apply")

CREATED, CONFIGURED, UNCHANGED, RECREATED, DELETED = "created", "configured", "unchanged", "recreated", "deleted"
DRIFT_NOTE = "drift corrected"
FORCE_HINT = ("changing it needs the object deleted and recreated: annotate it with "
              "kustomize.toolkit.fluxcd.io/force: enabled (or herald.dev/force: enabled) to let Herald do that")
_IMMUTABLE = re.compile(r"field is immutable|is immutable|immutable field|may not change once set|"
                        r"cannot change roleRef|updates to statefulset spec for fields other than", re.IGNORECASE)


@dataclass(frozen=True)
class Change:
    ref: str  # Kind/namespace/name
    action: str  # created | configured | unchanged | recreated | deleted
    note: str = ""

    def __str__(self) -> str:
        return f"{self.ref} {self.action}" + (f" ({self.note})" if self.note else "")

    @property
    def changed(self) -> bool:
        return self.action != UNCHANGED


@dataclass
class ApplyResult:
    changes: list[Change] = field(default_factory=list)
    applied: Inventory = field(default_factory=Inventory)  # what of the set is now in the cluster as wanted


class ApplyFailed(ApplyError):
    """Some objects could not be applied. `result` holds what was done before that."""

    def __init__(self, errors: list[str], result: ApplyResult, transient: bool = False) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors
        self.result = result
        self.transient = transient


def is_immutable(refusal: ApiRefusal) -> bool:
    return refusal.code in (409, 422) and bool(_IMMUTABLE.search(refusal.message))


def drifted(live: dict[str, Any], dry: dict[str, Any]) -> bool:
    """fluxcd/pkg ssa's rule: labels, annotations, or anything but metadata and status."""
    lm, dm = live.get("metadata") or {}, dry.get("metadata") or {}
    if (lm.get("labels") or {}) != (dm.get("labels") or {}):
        return True
    if (lm.get("annotations") or {}) != (dm.get("annotations") or {}):
        return True

    def body(o: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in o.items() if k not in ("metadata", "status")}

    return body(live) != body(dry)


def dry_run_error(ref: str, refusal: ApiRefusal) -> str:
    """Flux's DryRunErr wording."""
    if refusal.code == 404:
        return f"{ref} not found: {refusal.message}"
    reason = f" ({refusal.reason})" if refusal.reason else ""
    return f"{ref} dry-run failed{reason}: {refusal.message}"


@dataclass
class _Plan:
    m: Manifest
    live: dict[str, Any] | None = None
    action: str = ""
    note: str = ""

    @property
    def oid(self) -> ObjectId:
        return ObjectId.of(self.m.obj)


class ApplyEngine:
    """Applies one Kustomization's set; `previous` is its inventory from the last reconcile."""

    def __init__(self, cluster: Cluster, owner: dict[str, str], previous: Inventory, timeout: float,
                 poll: float = 0.5) -> None:
        self.cluster = cluster
        self.owner = owner
        self.previous = previous
        self.timeout = timeout
        self.poll = poll

    # ---- planning ----------------------------------------------------------------------

    def _label(self, m: Manifest) -> None:
        meta = m.obj.setdefault("metadata", {})
        meta["labels"] = {**(meta.get("labels") or {}), **self.owner}

    def _plan(self, m: Manifest, creatable_namespaces: set[str]) -> _Plan | str | None:
        """Dry-run one object: a plan, an error line, or None when it must wait for its namespace."""
        ref = m.ref()
        live = None
        try:
            live = self.cluster.get(m.api_version, m.kind, m.namespace or None, m.name)
            dry = self.cluster.dry_run(m)
        except KindNotServed as exc:
            return f"{ref} dry-run failed: {exc}"
        except ApiRefusal as exc:
            if exc.code == 404 and live is None and m.namespace in creatable_namespaces:
                return None
            if is_immutable(exc):
                if has_policy(m.obj, FORCE_KEYS, "enabled"):
                    return _Plan(m, live, RECREATED, "immutable field changed")
                return f"{dry_run_error(ref, exc)}; {FORCE_HINT}"
            return dry_run_error(ref, exc)
        plan = _Plan(m, live)
        before = self.previous.get(plan.oid)
        same_manifest = before is not None and before.digest == digest(m.obj)
        if live is None:
            plan.action, plan.note = CREATED, DRIFT_NOTE if same_manifest else ""
        elif drifted(live, dry):
            plan.action, plan.note = CONFIGURED, DRIFT_NOTE if same_manifest else ""
        else:
            plan.action = UNCHANGED
        return plan

    def _scope(self, m: Manifest, crd_kinds: set[tuple[str, str]]) -> str | bool:
        """Resolve the object's scope: True when done, False to retry after the CRDs, or an error."""
        try:
            self.cluster.scope(m)
            return True
        except KindNotServed as exc:
            if (group_of(m.api_version), m.kind) in crd_kinds:
                return False
            return f"{m.ref()} dry-run failed: {exc} (is its CustomResourceDefinition installed?)"

    # ---- the whole set -----------------------------------------------------------------

    def apply(self, manifests: list[Manifest]) -> ApplyResult:
        manifests = [Manifest(copy.deepcopy(m.obj), m.source) for m in manifests]
        for m in manifests:
            self._label(m)
        crd_kinds = {((m.obj.get("spec") or {}).get("group", ""), ((m.obj.get("spec") or {}).get("names") or {})
                      .get("kind", "")) for m in manifests if m.kind == "CustomResourceDefinition"}
        new_namespaces = {m.name for m in manifests if m.kind == "Namespace" and m.api_version == "v1"}

        errors: list[str] = []
        deferred: set[int] = set()  # id() of manifests to dry-run after an earlier stage
        plans: dict[int, _Plan] = {}
        for m in manifests:
            scoped = self._scope(m, crd_kinds)
            if scoped is False:
                deferred.add(id(m))
            elif isinstance(scoped, str):
                errors.append(scoped)
        refused = {e.split(" ", 1)[0] for e in errors}
        for m in sorted((m for m in manifests if id(m) not in deferred), key=sort_key):
            if m.ref() in refused:
                continue
            planned = self._plan(m, new_namespaces)
            if planned is None:
                deferred.add(id(m))
            elif isinstance(planned, str):
                errors.append(planned)
            else:
                plans[id(m)] = planned
        result = ApplyResult()
        if errors:
            raise ApplyFailed(errors, result)

        for stage in (STAGE_DEFINITIONS, STAGE_CLASSES, STAGE_RESOURCES):
            in_stage = sorted((m for m in manifests if stage_of(m.kind, m.api_version) == stage), key=sort_key)
            late = [m for m in in_stage if id(m) in deferred]
            if late:
                self._await_kinds(late, result)
                self._plan_late(late, plans, result)
            self._apply_stage([plans[id(m)] for m in in_stage], result)
            if stage != STAGE_RESOURCES:
                self._settle([plans[id(m)] for m in in_stage], result)
        return result

    def _plan_late(self, late: list[Manifest], plans: dict[int, _Plan], result: ApplyResult) -> None:
        errors = []
        for m in late:
            scoped = self._scope(m, set())
            if isinstance(scoped, str):
                errors.append(scoped)
                continue
            planned = self._plan(m, set())
            if isinstance(planned, str):
                errors.append(planned)
            elif planned is not None:
                plans[id(m)] = planned
        if errors:
            raise ApplyFailed(errors, result)

    def _apply_stage(self, stage: list[_Plan], result: ApplyResult) -> None:
        errors, transient = [], False
        for plan in stage:
            m, ref = plan.m, plan.m.ref()
            try:
                if plan.action == RECREATED:
                    self._recreate(plan)
                elif plan.action != UNCHANGED:
                    self.cluster.apply(m)
            except ApiRefusal as exc:
                reason = f" ({exc.reason})" if exc.reason else ""
                errors.append(f"{ref} apply failed{reason}: {exc.message}")
                transient = transient or exc.transient
                continue
            except (ApplyError, KindNotServed) as exc:
                errors.append(str(exc) if isinstance(exc, ApplyError) else f"{ref} apply failed: {exc}")
                continue
            result.changes.append(Change(ref, plan.action, plan.note))
            result.applied.add(Entry(plan.oid, m.api_version.rpartition("/")[2], digest(m.obj)))
            log.debug("%s %s", ref, plan.action)
        if errors:
            raise ApplyFailed(errors, result, transient)

    def _recreate(self, plan: _Plan) -> None:
        m = plan.m
        uid = ((plan.live or {}).get("metadata") or {}).get("uid", "")
        log.info("%s: immutable field changed and force is enabled; deleting and recreating it", m.ref())
        self.cluster.delete(m.api_version, m.kind, m.namespace or None, m.name)
        if not self.cluster.wait_gone(m.api_version, m.kind, m.namespace or None, m.name, self.timeout, uid):
            raise ApplyError(f"{m.ref()} recreate failed: still being deleted after {self.timeout:.0f}s")
        self.cluster.apply(m)

    def _settle(self, stage: list[_Plan], result: ApplyResult) -> None:
        """Wait for a definitions or classes stage to be usable (CRDs Established, Namespaces active)."""
        touched = [p for p in stage if p.action != UNCHANGED]
        if not touched:
            return
        getters = [(p.m.ref(), self._getter(p.m)) for p in touched]
        try:
            wait_for(getters, self.timeout, self.poll)
        except HealthCheckFailed as exc:
            raise ApplyFailed([str(exc)], result) from None

    def _getter(self, m: Manifest) -> Callable[[], dict[str, Any] | None]:
        return lambda: self.cluster.get(m.api_version, m.kind, m.namespace or None, m.name)

    def _await_kinds(self, late: list[Manifest], result: ApplyResult) -> None:
        """The CRDs of this set are Established; wait until discovery serves their kinds too."""
        missing = {(m.api_version, m.kind) for m in late}
        deadline = time.monotonic() + self.timeout
        while True:
            missing = {(v, k) for v, k in missing if not self.cluster.is_served(v, k)}
            if not missing:
                return
            if time.monotonic() >= deadline:
                names = ", ".join(f"{k} ({v})" for v, k in sorted(missing))
                errors = [f"{m.ref()} dry-run failed: the API server does not serve {m.kind} ({m.api_version}) "
                          f"{self.timeout:.0f}s after its CustomResourceDefinition was applied"
                          for m in late if (m.api_version, m.kind) in missing]
                log.warning("kinds still not served: %s", names)
                raise ApplyFailed(errors, result)
            time.sleep(self.poll)
            self.cluster.refresh_discovery()
