"""What a Kustomization applied, and how its last reconcile went, kept in the cluster.

Owner labels
    Every object Herald applies carries Flux's owner labels,
    ``kustomize.toolkit.fluxcd.io/name: <name>`` and ``kustomize.toolkit.fluxcd.io/namespace:
    <namespace>`` of the Kustomization. Flux manifests, dashboards and habits
    (``kubectl get all -l kustomize.toolkit.fluxcd.io/name=app``) work unchanged, and moving a
    cluster between Flux and Herald keeps the objects' ownership. Herald prunes an object only
    when it still carries these labels with its own values, so an object another Kustomization
    has taken over is left alone (as Flux does).

Inventory
    Flux keeps the list of applied objects in the Kustomization's ``.status.inventory``. Herald
    has no Kustomization object in the cluster, so it keeps the same list in a ConfigMap
    ``herald-inventory-<name>`` in the Kustomization's namespace (``flux-system`` for Flux
    manifests). The cluster is the one place every worker can reach and that outlives any of
    them: the state directory is per machine, and a label query would have to list every kind
    the API server serves, and could not remember a failed delete of an object whose labels
    were already changed. If the namespace does not exist it is created (labelled
    ``app.kubernetes.io/managed-by: herald``); it is never put in an inventory, so Herald never
    prunes it, and the pruner refuses to delete a namespace that holds inventories.

    Entries use Flux's ids, ``<namespace>_<name>_<group>_<kind>``, with the version apart
    (``v``), plus Herald's ``h``: a digest of the manifest as last applied, which tells a
    change made by hand in the cluster (same manifest, different object: drift) from a change
    in Git.

Last result (dependsOn)
    The same ConfigMap records the last reconcile: ``ready`` (True/False), ``reason``,
    ``message``, ``lastAppliedRevision`` (only moved by a fully successful reconcile, health
    checks included, as Flux's ``.status.lastAppliedRevision``) and ``lastAttemptedRevision``.
    A Kustomization with ``dependsOn`` reads its dependencies' ConfigMaps, so every worker sees
    the same answer.

Writes are optimistic: a ConfigMap is written with the resourceVersion it was read at, and if
another writer came in between, the inventories are merged (union: an entry too many only
costs a lookup on the next prune; an entry too few would orphan an object).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from herald.messages import utc_now
from reconciler.kube import ApiRefusal, Cluster
from reconciler.order import id_sort_key

log = logging.getLogger("herald.reconciler.inventory")

OWNER_NAME = "kustomize.toolkit.fluxcd.io/name"
OWNER_NAMESPACE = "kustomize.toolkit.fluxcd.io/namespace"
# Per-object policies: Flux's keys, and Herald's own for manifests written for Herald.
PRUNE_KEYS = ("kustomize.toolkit.fluxcd.io/prune", "herald.dev/prune")
FORCE_KEYS = ("kustomize.toolkit.fluxcd.io/force", "herald.dev/force")
MANAGED_BY = {"app.kubernetes.io/managed-by": "herald"}
INVENTORY_LABEL = "herald.dev/inventory"
_MESSAGE_LIMIT = 8192


def owner_labels(ks_name: str, ks_namespace: str) -> dict[str, str]:
    return {OWNER_NAME: ks_name, OWNER_NAMESPACE: ks_namespace}


def has_policy(obj: dict[str, Any], keys: tuple[str, ...], value: str) -> bool:
    """Whether a label or annotation of `keys` says `value` (case-insensitive, as Flux reads them)."""
    meta = obj.get("metadata") or {}
    for where in (meta.get("annotations") or {}, meta.get("labels") or {}):
        if any(str(where.get(k, "")).lower() == value for k in keys):
            return True
    return False


def digest(obj: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ObjectId:
    namespace: str
    name: str
    group: str
    kind: str

    @property
    def id(self) -> str:
        return f"{self.namespace}_{self.name}_{self.group}_{self.kind}"

    @classmethod
    def parse(cls, text: str) -> ObjectId:
        """Namespaces, groups and kinds never hold "_"; an RBAC object's name may."""
        parts = text.split("_")
        if len(parts) < 4:
            raise ValueError(f"not an inventory id: {text!r}")
        return cls(parts[0], "_".join(parts[1:-2]), parts[-2], parts[-1])

    @classmethod
    def of(cls, obj: dict[str, Any]) -> ObjectId:
        meta = obj.get("metadata") or {}
        group = str(obj.get("apiVersion", "")).rpartition("/")[0]
        return cls(meta.get("namespace") or "", meta.get("name", ""), group, obj.get("kind", ""))

    def api_version(self, version: str) -> str:
        return f"{self.group}/{version}" if self.group else version

    def ref(self) -> str:
        """`Kind/namespace/name` (`Kind/name` when cluster-scoped), as Flux's events write objects."""
        return f"{self.kind}/{self.namespace}/{self.name}" if self.namespace else f"{self.kind}/{self.name}"


@dataclass
class Entry:
    oid: ObjectId
    version: str
    digest: str = ""

    def to_json(self) -> dict[str, str]:
        out = {"id": self.oid.id, "v": self.version}
        if self.digest:
            out["h"] = self.digest
        return out


@dataclass
class Inventory:
    entries: dict[str, Entry] = field(default_factory=dict)

    def add(self, entry: Entry) -> None:
        self.entries[entry.oid.id] = entry

    def get(self, oid: ObjectId) -> Entry | None:
        return self.entries.get(oid.id)

    def __contains__(self, oid: ObjectId) -> bool:
        return oid.id in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def ordered(self, reverse: bool = False) -> list[Entry]:
        """In apply order (reverse: prune order)."""
        return sorted(self.entries.values(), reverse=reverse,
                      key=lambda e: id_sort_key(e.oid.group, e.oid.kind, e.oid.namespace, e.oid.name, e.version))

    def minus(self, other: Inventory) -> list[Entry]:
        """Entries not in `other`: the stale objects, in prune order."""
        return [e for e in self.ordered(reverse=True) if e.oid.id not in other.entries]

    def union(self, other: Inventory) -> Inventory:
        out = Inventory(dict(other.entries))
        out.entries.update(self.entries)
        return out

    def dump(self) -> str:
        lines = [json.dumps(e.to_json(), separators=(",", ":")) for e in self.ordered()]
        return "[\n" + ",\n".join(lines) + "\n]\n" if lines else "[]\n"

    @classmethod
    def load(cls, text: str) -> Inventory:
        out = cls()
        if not text.strip():
            return out
        try:
            raw = json.loads(text)
        except ValueError:
            log.warning("inventory is not JSON; treating it as empty")
            return out
        for item in raw if isinstance(raw, list) else []:
            try:
                out.add(Entry(ObjectId.parse(str(item["id"])), str(item.get("v", "v1")), str(item.get("h", ""))))
            except (KeyError, TypeError, ValueError):
                log.warning("skipping a malformed inventory entry: %r", item)
        return out


@dataclass
class LastResult:
    """A Kustomization's last reconcile, as Flux's Ready condition and revisions say it."""

    ready: str = "Unknown"  # True | False | Unknown (never reconciled)
    reason: str = ""
    message: str = ""
    last_applied_revision: str = ""
    last_attempted_revision: str = ""
    updated_at: str = ""

    @property
    def is_ready(self) -> bool:
        return self.ready == "True"


@dataclass
class Record:
    inventory: Inventory
    result: LastResult
    resource_version: str = ""  # "" when the ConfigMap does not exist yet


def configmap_name(ks_name: str) -> str:
    name = f"herald-inventory-{ks_name}"
    if len(name) > 253:
        name = name[:236] + "-" + hashlib.sha256(ks_name.encode()).hexdigest()[:16]
    return name


class InventoryStore:
    """The ConfigMap of one Kustomization."""

    def __init__(self, cluster: Cluster, ks_namespace: str, ks_name: str) -> None:
        self.cluster = cluster
        self.namespace = ks_namespace
        self.ks_name = ks_name
        self.name = configmap_name(ks_name)

    def load(self) -> Record:
        cm = self.cluster.get("v1", "ConfigMap", self.namespace, self.name)
        if cm is None:
            return Record(Inventory(), LastResult())
        data = cm.get("data") or {}
        result = LastResult(
            ready=data.get("ready", "Unknown"), reason=data.get("reason", ""), message=data.get("message", ""),
            last_applied_revision=data.get("lastAppliedRevision", ""),
            last_attempted_revision=data.get("lastAttemptedRevision", ""), updated_at=data.get("updatedAt", ""))
        return Record(Inventory.load(data.get("inventory", "")), result,
                      str((cm.get("metadata") or {}).get("resourceVersion", "")))

    def _body(self, record: Record) -> dict[str, Any]:
        r = record.result
        meta: dict[str, Any] = {"name": self.name, "namespace": self.namespace,
                                "labels": {**MANAGED_BY, INVENTORY_LABEL: "true"},
                                "annotations": {"herald.dev/kustomization": f"{self.namespace}/{self.ks_name}"}}
        if record.resource_version:
            meta["resourceVersion"] = record.resource_version
        return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {
            "inventory": record.inventory.dump(),
            "ready": r.ready, "reason": r.reason, "message": r.message[:_MESSAGE_LIMIT],
            "lastAppliedRevision": r.last_applied_revision,
            "lastAttemptedRevision": r.last_attempted_revision,
            "updatedAt": r.updated_at or utc_now(),
        }}

    def _ensure_namespace(self) -> None:
        if self.cluster.get("v1", "Namespace", None, self.namespace) is None:
            log.info("creating namespace %s to keep Herald's inventories in", self.namespace)
            self.cluster.server_side_apply({"apiVersion": "v1", "kind": "Namespace",
                                            "metadata": {"name": self.namespace, "labels": dict(MANAGED_BY)}})

    def save(self, record: Record) -> Record:
        """Write `record`; on a concurrent write, merge inventories and try again."""
        record.result.updated_at = utc_now()
        if not record.resource_version:
            self._ensure_namespace()
        for _ in range(5):
            try:
                written = self.cluster.server_side_apply(self._body(record))
            except ApiRefusal as exc:
                if exc.code != 409:
                    raise
                theirs = self.load()
                log.info("inventory %s/%s changed concurrently; merging", self.namespace, self.name)
                record = Record(record.inventory.union(theirs.inventory), record.result, theirs.resource_version)
                continue
            record.resource_version = str((written.get("metadata") or {}).get("resourceVersion", ""))
            return record
        raise ApiRefusal(409, "Conflict", f"ConfigMap {self.namespace}/{self.name} kept changing while "
                                          "Herald wrote its inventory")
