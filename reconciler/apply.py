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
   ssa does), with one shortcut (`unchanged_since_last_apply`): an object whose manifest is
   the one Herald applied last time (same digest in the inventory) and whose live copy holds
   every field of it with the same value is unchanged without a dry-run, because applying it
   could neither set nor remove anything. Otherwise: no live object → created; the dry-run
   result differs from the live object in labels, annotations or anything outside metadata
   and status → configured (and applied); otherwise unchanged (and not written at all, so
   nothing moves). A controller's status
   write racing the apply is therefore never reported as a change. When the manifest is
   the same one Herald applied last time (same digest in the inventory), a difference can
   only have been made in the cluster, and the line says ``(drift corrected)``.
5. A change to an immutable field (the API server's 422 "field is immutable", "may not change
   once set", ...) fails with a message naming the object and how to allow recreation,
   unless the object is annotated (or labelled) ``kustomize.toolkit.fluxcd.io/force: enabled``
   or ``herald.dev/force: enabled``: then it is deleted, its deletion awaited, and applied
   again, reported as ``recreated``. Flux recreates on any Invalid error when forced; Herald
   only on immutability, so that a genuinely invalid object is never deleted first.

Requests. Up to `CONCURRENCY` requests are in flight at once: the reads and dry runs of the
plan, and the writes of one kind (objects of one kind never depend on each other; the kinds
still go in order, one after the other). Results are reported in the apply order whatever
order the answers came in. An object whose Namespace the set creates and which does not exist
yet is planned after that stage without first asking for it (it cannot exist). The live
objects are read with one LIST per kind and namespace (selected by the owner labels) when the
previous inventory holds at least `LIST_THRESHOLD` of them there; an object that LIST does not
return is read with a GET as before (it may exist without the labels). In a Namespace this
apply created, one LIST of all the objects of a kind (few: only what controllers put in a new
namespace) stands for the GETs of the set's `LIST_THRESHOLD` or more objects of that kind
there. When a LIST is refused (RBAC without `list`), every object is read with a GET.
"""

from __future__ import annotations

import copy
import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from typing import Any, TypeVar

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
CONCURRENCY = 4  # API requests in flight at once per apply
LIST_THRESHOLD = 3  # inventory entries of one kind in one namespace from which one LIST replaces their GETs

_T = TypeVar("_T")
_R = TypeVar("_R")

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


def covers(want: Any, live: Any) -> bool:
    """Every field of `want` is in `live` with the same value (and type: True is not 1).

    Lists compare item by item, so a reordered or longer live list does not cover: only a
    certain "nothing to do" is True, and anything the server may have normalised (a quantity
    written "0.5" and stored "500m", a null, a date) is False, which only costs a dry-run."""
    if isinstance(want, dict):
        return isinstance(live, dict) and all(k in live and covers(v, live[k]) for k, v in want.items())
    if isinstance(want, list):
        return isinstance(live, list) and len(want) == len(live) and all(map(covers, want, live))
    if want is None:
        return False
    return type(want) is type(live) and want == live


def unchanged_since_last_apply(obj: dict[str, Any], live: dict[str, Any] | None, before: Entry | None) -> bool:
    """Whether a server-side apply of `obj` would be a no-op, known without asking the server.

    Herald's field manager owns exactly the fields of the manifest it applied last; when that
    manifest is `obj` (same digest), an apply of `obj` removes nothing, and when `live` holds
    each of its fields already, it sets nothing either. Fields that others added are not
    Herald's to remove (the dry-run would keep them too), so they do not matter. What this
    skips is the dry-run's admission check of an object that is not going to be written:
    `HERALD_DRY_RUN_UNCHANGED=true` restores it, as Flux does it."""
    if live is None or before is None or before.digest != digest(obj):
        return False
    if (live.get("metadata") or {}).get("deletionTimestamp"):
        return False
    return covers(obj, live)


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
                 poll: float = 0.5, concurrency: int = CONCURRENCY, dry_run_unchanged: bool = False,
                 force: bool = False) -> None:
        """`dry_run_unchanged`: dry-run every object, even one that provably would not change
        (see `unchanged_since_last_apply`). `force`: the Kustomization's `spec.force`, which
        recreates any object whose immutable fields changed, as the force annotation does for one."""
        self.cluster = cluster
        self.force = force
        self.dry_run_unchanged = dry_run_unchanged
        self.owner = owner
        self.previous = previous
        self.timeout = timeout
        self.poll = poll
        self.concurrency = max(1, concurrency)
        self._pool: ThreadPoolExecutor | None = None
        # (apiVersion, kind, namespace) -> name -> live object, from the LISTs of a planning pass;
        # _complete: the groups listed without a label selector (absent from the LIST: absent)
        self._listed: dict[tuple[str, str, str], dict[str, dict[str, Any]]] = {}
        self._complete: set[tuple[str, str, str]] = set()
        self._absent: set[str] = set()  # Namespaces of the set that did not exist when the apply began

    # ---- requests in parallel ----------------------------------------------------------

    def _map(self, fn: Callable[[_T], _R], items: Iterable[_T]) -> list[_R]:
        """`[fn(i) for i in items]`, up to `concurrency` at once, results in the items' order.

        The first exception (in the items' order) is raised once every call already started
        has returned; calls not started yet are cancelled."""
        items = list(items)
        if self._pool is None or len(items) < 2:
            return [fn(i) for i in items]
        futures: list[Future[_R]] = [self._pool.submit(fn, i) for i in items]
        try:
            return [f.result() for f in futures]
        except BaseException:
            for f in futures:
                f.cancel()
            wait_futures(futures)
            raise

    def _live(self, m: Manifest) -> dict[str, Any] | None:
        key = (m.api_version, m.kind, m.namespace)
        listed = self._listed.get(key)
        if listed is not None:
            if m.name in listed:
                return listed[m.name]
            if key in self._complete:
                return None
        return self.cluster.get(m.api_version, m.kind, m.namespace or None, m.name)

    def _prefetch(self, manifests: list[Manifest], which: Callable[[Manifest], bool], labelled: bool) -> None:
        """One LIST per kind and namespace holding `LIST_THRESHOLD` or more of the manifests
        `which` selects, in place of their GETs (see the module's docstring): selected by the
        owner labels when `labelled`, else all of them."""
        groups = Counter((m.api_version, m.kind, m.namespace) for m in manifests if which(m))
        wanted = sorted(g for g, n in groups.items() if n >= LIST_THRESHOLD)
        labels = self.owner if labelled else None
        listed = self._map(lambda g: self.cluster.list_objects(g[0], g[1], g[2] or None, labels), wanted)
        self._listed = {g: {(o.get("metadata") or {}).get("name", ""): o for o in items}
                        for g, items in zip(wanted, listed) if items is not None}
        self._complete = set() if labelled else set(self._listed)

    def _forget_listed(self) -> None:
        """LISTs serve one planning pass: later reads must be fresh."""
        self._listed, self._complete = {}, set()

    def _absent_namespaces(self, manifests: list[Manifest], new_namespaces: set[str]) -> set[str]:
        """Namespaces this set creates that do not exist yet: nothing in them exists either."""
        used = sorted({m.namespace for m in manifests if m.namespace in new_namespaces})
        found = self._map(lambda ns: self.cluster.get("v1", "Namespace", None, ns), used)
        return {ns for ns, live in zip(used, found) if live is None}

    # ---- planning ----------------------------------------------------------------------

    def _label(self, m: Manifest) -> None:
        meta = m.obj.setdefault("metadata", {})
        meta["labels"] = {**(meta.get("labels") or {}), **self.owner}

    def _plan(self, m: Manifest, creatable_namespaces: set[str]) -> _Plan | str | None:
        """Dry-run one object: a plan, an error line, or None when it must wait for its namespace."""
        ref = m.ref()
        live = None
        try:
            live = self._live(m)
            before = self.previous.get(ObjectId.of(m.obj))
            if not self.dry_run_unchanged and unchanged_since_last_apply(m.obj, live, before):
                return _Plan(m, live, UNCHANGED)
            dry = self.cluster.dry_run(m)
        except KindNotServed as exc:
            return f"{ref} dry-run failed: {exc}"
        except ApiRefusal as exc:
            if exc.code == 404 and live is None and m.namespace in creatable_namespaces:
                return None
            if is_immutable(exc):
                if self.force or has_policy(m.obj, FORCE_KEYS, "enabled"):
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
        if self.concurrency < 2:
            return self._apply_all(manifests)
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="herald-apply") as pool:
            self._pool = pool
            try:
                return self._apply_all(manifests)
            finally:
                self._pool = None
                self._forget_listed()

    def _apply_all(self, manifests: list[Manifest]) -> ApplyResult:
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
        todo = [m for m in sorted((m for m in manifests if id(m) not in deferred), key=sort_key)
                if m.ref() not in refused]
        self._absent = self._absent_namespaces(todo, new_namespaces)
        deferred.update(id(m) for m in todo if m.namespace in self._absent)
        todo = [m for m in todo if id(m) not in deferred]
        self._prefetch(todo, lambda m: ObjectId.of(m.obj) in self.previous, labelled=True)
        try:
            planned_all = self._map(lambda m: self._plan(m, new_namespaces), todo)
        finally:
            self._forget_listed()
        for m, planned in zip(todo, planned_all):
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
        scoped = [self._scope(m, set()) for m in late]  # discovery: one at a time
        ready = [m for m, s in zip(late, scoped) if s is True]
        # Namespaces that did not exist when this apply began were created by its first stage.
        self._prefetch(ready, lambda m: m.namespace in self._absent, labelled=False)
        try:
            planned_ready = dict(zip(map(id, ready), self._map(lambda m: self._plan(m, set()), ready)))
        finally:
            self._forget_listed()
        for m, s in zip(late, scoped):
            if isinstance(s, str):
                errors.append(s)
                continue
            planned = planned_ready[id(m)]
            if isinstance(planned, str):
                errors.append(planned)
            elif planned is not None:
                plans[id(m)] = planned
        if errors:
            raise ApplyFailed(errors, result)

    def _write(self, plan: _Plan) -> tuple[str, bool] | None:
        """Write one object as planned: None, or the error line and whether it is transient."""
        m, ref = plan.m, plan.m.ref()
        try:
            if plan.action == RECREATED:
                self._recreate(plan)
            elif plan.action != UNCHANGED:
                self.cluster.apply(m)
        except ApiRefusal as exc:
            reason = f" ({exc.reason})" if exc.reason else ""
            return f"{ref} apply failed{reason}: {exc.message}", exc.transient
        except (ApplyError, KindNotServed) as exc:
            return (str(exc) if isinstance(exc, ApplyError) else f"{ref} apply failed: {exc}"), False
        return None

    def _apply_stage(self, stage: list[_Plan], result: ApplyResult) -> None:
        errors, transient = [], False
        kinds: list[list[_Plan]] = []  # the stage is in apply order: runs of one kind
        for plan in stage:
            if kinds and sort_key(kinds[-1][0].m)[:2] == sort_key(plan.m)[:2]:
                kinds[-1].append(plan)
            else:
                kinds.append([plan])
        for of_kind in kinds:
            for plan, failed in zip(of_kind, self._map(self._write, of_kind)):
                if failed is not None:
                    errors.append(failed[0])
                    transient = transient or failed[1]
                    continue
                m, ref = plan.m, plan.m.ref()
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
