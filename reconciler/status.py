"""A Kustomization's status in the cluster, as kustomize-controller writes it.

When the Kustomization object itself is in the cluster (a fleet's render applied it because its
CRD is served, or someone applied it by hand), `kubectl get kustomizations`, `flux get
kustomizations`, Argo CD's and Headlamp's views read its `status`: the Ready condition, the
revisions, the inventory. Herald writes what its run decided there, in Flux's shape
(`kustomize.toolkit.fluxcd.io/v1` KustomizationStatus), on the status subresource only (a merge
patch: the spec, which Git owns, is never touched). Herald's own inventory ConfigMap stays the
record it reads back; this is the courtesy for people and tools.

A Kustomization that is not in the cluster (configuration from files, or a CRD that is not
served) has no status to write; nothing is asked beyond the discovery Herald already holds.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from herald.messages import utc_now
from reconciler.inventory import Inventory
from reconciler.kube import (
    ApiRefusal,
    Cluster,
    ClusterUnreachable,
    KindNotServed,
    request_json,
)

log = logging.getLogger(__name__)

API_VERSIONS = ("kustomize.toolkit.fluxcd.io/v1", "herald.dev/v1")
UNSERVED_TTL = 60.0  # a kind found not served is not asked about again for this long (a CRD installed later is seen then)
# Per Cluster object (gone with it): (apiVersion, kind) -> until when it is taken as not served.
_unserved: weakref.WeakKeyDictionary[Cluster, dict[tuple[str, str], float]] = weakref.WeakKeyDictionary()
_unserved_lock = threading.Lock()


def served(cluster: Cluster, api_version: str, kind: str) -> bool:
    """Whether the cluster serves the kind, remembering a "no" for UNSERVED_TTL: most clusters
    serve neither Flux's kinds nor Herald's, and each miss would re-read discovery on every
    recorded outcome."""
    with _unserved_lock:
        until = _unserved.get(cluster, {}).get((api_version, kind), 0.0)
    if until > time.monotonic():
        return False
    if cluster.is_served(api_version, kind):
        return True
    with _unserved_lock:
        _unserved.setdefault(cluster, {})[(api_version, kind)] = time.monotonic() + UNSERVED_TTL
    return False
SOURCE_API_VERSIONS = {"GitRepository": ("source.toolkit.fluxcd.io/v1", "herald.dev/v1"),
                       "OCIRepository": ("source.toolkit.fluxcd.io/v1",)}
_MESSAGE_LIMIT = 32 * 1024  # the condition message's maxLength in Flux's CRD


@dataclass(frozen=True)
class Outcome:
    """What a run decided, in the condition's words."""

    ready: str  # "True" | "False" | "Unknown"
    reason: str
    message: str
    last_applied_revision: str = ""
    last_attempted_revision: str = ""


def ready_status(live: dict[str, Any], outcome: Outcome) -> dict[str, Any]:
    """The Ready condition (its transition time kept when its status did not change, as
    meta.SetStatusCondition keeps it) and observedGeneration: what every Flux kind's status has."""
    old = live.get("status") or {}
    generation = (live.get("metadata") or {}).get("generation")
    previous = next((c for c in old.get("conditions") or [] if c.get("type") == "Ready"), {})
    since = previous.get("lastTransitionTime") if previous.get("status") == outcome.ready else None
    condition: dict[str, Any] = {"type": "Ready", "status": outcome.ready, "reason": outcome.reason,
                                 "message": outcome.message[:_MESSAGE_LIMIT],
                                 "lastTransitionTime": since or utc_now()}
    status: dict[str, Any] = {"conditions": [condition]}
    if generation is not None:
        condition["observedGeneration"] = generation
        status["observedGeneration"] = generation
    return status


def status_of(live: dict[str, Any], outcome: Outcome, inventory: Inventory | None) -> dict[str, Any]:
    """A Kustomization's status: Ready, its revisions, its inventory."""
    status = ready_status(live, outcome)
    status["lastAttemptedRevision"] = outcome.last_attempted_revision or None
    status["lastAppliedRevision"] = (outcome.last_applied_revision
                                     or (live.get("status") or {}).get("lastAppliedRevision") or None)
    if inventory is not None:
        status["inventory"] = {"entries": [e.to_json() for e in inventory.ordered()]}
    return status


def _patch(cluster: Cluster, api_versions: tuple[str, ...], kind: str, namespace: str, name: str,
           fields: Callable[[dict[str, Any]], dict[str, Any]]) -> bool:
    """Merge-patch the status subresource of the object, under the first of `api_versions` the
    cluster serves and holds it in, with `fields(live object)`; whether it was written. A
    failure is logged, never a failure of the run it reports on."""
    for api_version in api_versions:
        try:
            if not served(cluster, api_version, kind):
                continue
            live = cluster.get(api_version, kind, namespace, name)
            if live is None:
                continue
            path = cluster.resource(api_version, kind).path(name=name, namespace=namespace) + "/status"
            request_json(cluster.api_client, "PATCH", path, body={"status": fields(live)},
                         content_type="application/merge-patch+json")
            return True
        except (ApiRefusal, ClusterUnreachable, KindNotServed) as exc:
            log.warning("%s %s/%s: its status could not be written: %s", kind, namespace, name, exc)
            return False
    return False


def write(cluster: Cluster, namespace: str, name: str, outcome: Outcome, inventory: Inventory | None) -> bool:
    """A Kustomization's status, when it is in the cluster."""
    return _patch(cluster, API_VERSIONS, "Kustomization", namespace, name,
                  lambda live: status_of(live, outcome, inventory))


def write_source(cluster: Cluster, kind: str, namespace: str, name: str, revision: str, error: str = "") -> bool:
    """A GitRepository's or OCIRepository's status after a fetch, as source-controller writes
    it: Ready with `stored artifact for revision '<revision>'` and `artifact.revision`, or Ready
    False with the fetch's error (the last artifact stays)."""
    if error:
        reason = "GitOperationFailed" if kind == "GitRepository" else "OCIArtifactPullFailed"
        return _patch(cluster, SOURCE_API_VERSIONS.get(kind, ()), kind, namespace, name,
                      lambda live: ready_status(live, Outcome("False", reason, error)))
    outcome = Outcome("True", "Succeeded", f"stored artifact for revision '{revision}'")
    return _patch(cluster, SOURCE_API_VERSIONS.get(kind, ()), kind, namespace, name,
                  lambda live: {**ready_status(live, outcome),
                                "artifact": {"revision": revision, "lastUpdateTime": utc_now()}})


def write_configured(cluster: Cluster, api_versions: tuple[str, ...], kind: str, namespace: str, name: str,
                     message: str, extra: dict[str, Any] | None = None) -> bool:
    """Ready as Flux's controllers mark an object once it is usable, with the kind's own fields
    (`extra`: a Receiver's `webhookPath`, an ImagePolicy's `latestRef`, ...)."""
    outcome = Outcome("True", "Succeeded", message)
    return _patch(cluster, api_versions, kind, namespace, name,
                  lambda live: {**ready_status(live, outcome), **(extra or {})})
