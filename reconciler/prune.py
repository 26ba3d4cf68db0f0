"""Garbage collection: delete what a Kustomization applied before but no longer renders.

The stale objects are the old inventory minus the new one, deleted in reverse apply order
(custom resources before their CRD, namespaced objects before their Namespace), with
background propagation, as Flux prunes. An object is left in place, and dropped from the
inventory, when

* it is annotated or labelled ``kustomize.toolkit.fluxcd.io/prune: disabled`` (or
  ``herald.dev/prune: disabled``);
* its owner labels no longer name this Kustomization (another one took it over, or someone
  detached it by hand);
* it is a Namespace that holds Herald's inventories (deleting it would delete them).

A delete the API server refuses (or that does not get an answer) is reported, and the
object stays in the inventory so that the next reconcile tries again. (Flux forgets it.)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from reconciler.apply import DELETED, Change
from reconciler.inventory import PRUNE_KEYS, Entry, Inventory, has_policy
from reconciler.kube import ApiRefusal, Cluster, ClusterUnreachable

log = logging.getLogger("herald.reconciler.prune")


@dataclass
class PruneResult:
    changes: list[Change] = field(default_factory=list)
    kept: Inventory = field(default_factory=Inventory)  # failed deletes: still ours, try again next time
    errors: list[str] = field(default_factory=list)
    transient: bool = False


def prune(cluster: Cluster, stale: list[Entry], owner: dict[str, str],
          protected_namespaces: set[str]) -> PruneResult:
    out = PruneResult()
    for entry in stale:
        oid = entry.oid
        api_version, ref = oid.api_version(entry.version), oid.ref()
        try:
            live = cluster.get(api_version, oid.kind, oid.namespace or None, oid.name)
            if live is None:
                continue
            labels = (live.get("metadata") or {}).get("labels") or {}
            if any(labels.get(k) != v for k, v in owner.items()):
                log.info("%s: not pruned, its owner labels no longer name this Kustomization", ref)
                continue
            if has_policy(live, PRUNE_KEYS, "disabled"):
                log.info("%s: not pruned, pruning is disabled for it", ref)
                continue
            if oid.kind == "Namespace" and not oid.group and oid.name in protected_namespaces:
                log.warning("%s: not pruned, it holds Herald's inventories", ref)
                continue
            if cluster.delete(api_version, oid.kind, oid.namespace or None, oid.name):
                out.changes.append(Change(ref, DELETED))
        except ApiRefusal as exc:
            reason = f" ({exc.reason})" if exc.reason else ""
            out.errors.append(f"{ref} delete failed{reason}: {exc.message}")
            out.transient = out.transient or exc.transient
            out.kept.add(entry)
        except ClusterUnreachable as exc:
            out.errors.append(f"{ref} delete failed: {exc}")
            out.transient = True
            out.kept.add(entry)
    return out
