"""Is an applied object healthy? kstatus's rules, as Flux's health checks apply them.

Each object is Current (rolled out, ready), InProgress (not yet), Failed (will not get there
by waiting: a Job that failed, a Deployment past its progress deadline, a Stalled custom
resource), Terminating, or NotFound:

* Deployment: the controller observed the latest generation, and every wanted replica is
  updated, available and ready, with no old replicas left; ProgressDeadlineExceeded fails.
* StatefulSet: latest generation observed, replicas ready and updated, current revision =
  update revision (unless updateStrategy is OnDelete).
* DaemonSet: latest generation observed, every scheduled pod updated, available and ready.
* ReplicaSet: latest generation observed, replicas available and ready.
* Job: a Complete condition (Flux waits for Jobs to finish, unlike plain kstatus); a Failed
  condition fails.
* Pod: Succeeded, or Ready; Failed fails. PersistentVolumeClaim: Bound.
* Service: current, unless a LoadBalancer still waits for its ingress address.
* CustomResourceDefinition: Established (NamesAccepted=False fails).
* Anything else: status.observedGeneration (when present) has caught up with
  metadata.generation, then Stalled=True fails, Reconciling=True or Ready=False is in
  progress, Ready=True or no conditions at all is current.

`wait_for` polls until every object is current, fails early when one has failed (Flux's
``failed early due to stalled resources``), and otherwise gives up after the timeout, naming
each object that is not ready and why.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

CURRENT = "Current"
IN_PROGRESS = "InProgress"
FAILED = "Failed"
TERMINATING = "Terminating"
NOT_FOUND = "NotFound"


@dataclass(frozen=True)
class Health:
    status: str
    message: str = ""

    @property
    def current(self) -> bool:
        return self.status == CURRENT


def _conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    status = obj.get("status") if isinstance(obj.get("status"), dict) else {}
    return {c.get("type", ""): c for c in status.get("conditions") or [] if isinstance(c, dict)}


def _true(conds: dict[str, dict[str, Any]], ctype: str) -> bool:
    return str(conds.get(ctype, {}).get("status", "")) == "True"


def _false(conds: dict[str, dict[str, Any]], ctype: str) -> bool:
    return str(conds.get(ctype, {}).get("status", "")) == "False"


def _why(cond: dict[str, Any]) -> str:
    reason, message = cond.get("reason", ""), cond.get("message", "")
    return f"{reason}: {message}" if reason and message else reason or message


def _generation_lag(obj: dict[str, Any]) -> Health | None:
    generation = (obj.get("metadata") or {}).get("generation")
    observed = (obj.get("status") or {}).get("observedGeneration")
    if generation is not None and (observed is None or int(observed) < int(generation)):
        if observed is None and obj.get("kind") not in _WORKLOADS:
            return None  # many kinds never report it; kstatus only compares when it is set
        return Health(IN_PROGRESS, f"the controller has not observed generation {generation} yet"
                                   + (f" (observed {observed})" if observed is not None else ""))
    return None


def _int(status: dict[str, Any], key: str) -> int:
    try:
        return int(status.get(key) or 0)
    except (TypeError, ValueError):
        return 0


def _deployment(obj: dict[str, Any]) -> Health:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    conds = _conditions(obj)
    progressing = conds.get("Progressing", {})
    if progressing.get("reason") == "ProgressDeadlineExceeded":
        return Health(FAILED, _why(progressing) or "progress deadline exceeded")
    want = int(spec.get("replicas", 1))
    updated, total = _int(status, "updatedReplicas"), _int(status, "replicas")
    available, ready = _int(status, "availableReplicas"), _int(status, "readyReplicas")
    if updated < want:
        return Health(IN_PROGRESS, f"Updated: {updated}/{want}")
    if total > updated:
        return Health(IN_PROGRESS, f"Pending termination: {total - updated} old replicas")
    if available < want:
        return Health(IN_PROGRESS, f"Available: {available}/{want}")
    if ready < want:
        return Health(IN_PROGRESS, f"Ready: {ready}/{want}")
    return Health(CURRENT, f"Deployment is available. Replicas: {want}")


def _statefulset(obj: dict[str, Any]) -> Health:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    want = int(spec.get("replicas", 1))
    ready = _int(status, "readyReplicas")
    strategy = spec.get("updateStrategy") or {}
    if ready < want:
        return Health(IN_PROGRESS, f"Ready: {ready}/{want}")
    if strategy.get("type", "RollingUpdate") == "OnDelete":
        return Health(CURRENT, f"StatefulSet is ready. Replicas: {want}")
    partition = int((strategy.get("rollingUpdate") or {}).get("partition") or 0)
    updated = _int(status, "updatedReplicas")
    if updated < want - partition:
        return Health(IN_PROGRESS, f"Updated: {updated}/{want - partition}")
    if partition == 0 and status.get("currentRevision") != status.get("updateRevision"):
        return Health(IN_PROGRESS, f"waiting for the rollout to finish: revision {status.get('currentRevision')} "
                                   f"→ {status.get('updateRevision')}")
    return Health(CURRENT, f"StatefulSet is ready. Replicas: {want}")


def _daemonset(obj: dict[str, Any]) -> Health:
    status = obj.get("status") or {}
    want = _int(status, "desiredNumberScheduled")
    for key, label in (("updatedNumberScheduled", "Updated"), ("numberAvailable", "Available"),
                       ("numberReady", "Ready")):
        if _int(status, key) < want:
            return Health(IN_PROGRESS, f"{label}: {_int(status, key)}/{want}")
    return Health(CURRENT, f"All replicas scheduled as expected. Replicas: {want}")


def _replicaset(obj: dict[str, Any]) -> Health:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    want = int(spec.get("replicas", 1))
    for key, label in (("availableReplicas", "Available"), ("readyReplicas", "Ready")):
        if _int(status, key) < want:
            return Health(IN_PROGRESS, f"{label}: {_int(status, key)}/{want}")
    return Health(CURRENT, f"ReplicaSet is available. Replicas: {want}")


def _job(obj: dict[str, Any]) -> Health:
    conds, status = _conditions(obj), obj.get("status") or {}
    if _true(conds, "Failed"):
        return Health(FAILED, _why(conds["Failed"]) or "Job failed")
    if _true(conds, "Complete"):
        return Health(CURRENT, f"Job Completed. succeeded: {_int(status, 'succeeded')}")
    if (obj.get("spec") or {}).get("suspend"):
        return Health(IN_PROGRESS, "Job is suspended")
    return Health(IN_PROGRESS, f"Job in progress. succeeded: {_int(status, 'succeeded')}, "
                               f"active: {_int(status, 'active')}, failed: {_int(status, 'failed')}")


def _pod(obj: dict[str, Any]) -> Health:
    phase = (obj.get("status") or {}).get("phase", "")
    if phase == "Succeeded":
        return Health(CURRENT, "Pod has completed successfully")
    if phase == "Failed":
        return Health(FAILED, "Pod has failed")
    if _true(_conditions(obj), "Ready"):
        return Health(CURRENT, "Pod is Ready")
    return Health(IN_PROGRESS, f"Pod phase: {phase or 'Pending'}")


def _pvc(obj: dict[str, Any]) -> Health:
    phase = (obj.get("status") or {}).get("phase", "")
    return Health(CURRENT, "PVC is Bound") if phase == "Bound" else Health(IN_PROGRESS, f"PVC is {phase or 'Pending'}")


def _service(obj: dict[str, Any]) -> Health:
    if (obj.get("spec") or {}).get("type") == "LoadBalancer" and \
            not ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress"):
        return Health(IN_PROGRESS, "waiting for the load balancer's address")
    return Health(CURRENT, "Service is ready")


def _crd(obj: dict[str, Any]) -> Health:
    conds = _conditions(obj)
    if _false(conds, "NamesAccepted"):
        return Health(FAILED, _why(conds["NamesAccepted"]) or "names not accepted")
    if _true(conds, "Established"):
        return Health(CURRENT, "CRD is established")
    return Health(IN_PROGRESS, "CRD is not established yet")


def _generic(obj: dict[str, Any]) -> Health:
    conds = _conditions(obj)
    if _true(conds, "Stalled"):
        return Health(FAILED, _why(conds["Stalled"]) or "Stalled")
    if _true(conds, "Reconciling"):
        return Health(IN_PROGRESS, _why(conds["Reconciling"]) or "Reconciling")
    if _false(conds, "Ready"):
        return Health(IN_PROGRESS, _why(conds["Ready"]) or "not Ready")
    if _true(conds, "Ready"):
        return Health(CURRENT, _why(conds["Ready"]) or "Ready")
    return Health(CURRENT, "Resource is current")


_WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"}
_BUILTIN: dict[tuple[str, str], Callable[[dict[str, Any]], Health]] = {
    ("apps", "Deployment"): _deployment,
    ("apps", "StatefulSet"): _statefulset,
    ("apps", "DaemonSet"): _daemonset,
    ("apps", "ReplicaSet"): _replicaset,
    ("batch", "Job"): _job,
    ("", "Pod"): _pod,
    ("", "PersistentVolumeClaim"): _pvc,
    ("", "Service"): _service,
    ("apiextensions.k8s.io", "CustomResourceDefinition"): _crd,
}


def assess(obj: dict[str, Any] | None) -> Health:
    if obj is None:
        return Health(NOT_FOUND, "not found")
    meta = obj.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        return Health(TERMINATING, "being deleted")
    key = (str(obj.get("apiVersion", "")).rpartition("/")[0], obj.get("kind", ""))
    if key[1] == "Namespace" and (obj.get("status") or {}).get("phase") == "Terminating":
        return Health(TERMINATING, "namespace is terminating")
    lag = _generation_lag(obj)
    if lag is not None:
        return lag
    return _BUILTIN.get(key, _generic)(obj)


class HealthCheckFailed(Exception):
    def __init__(self, message: str, unhealthy: list[tuple[str, Health]]) -> None:
        super().__init__(message)
        self.unhealthy = unhealthy


def go_duration(seconds: float) -> str:
    """Go's time.Duration.String() at millisecond precision: 176ms, 1.234s, 10m0s, 1h0m0s."""
    ms = round(max(seconds, 0.0) * 1000)
    if ms == 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def _describe(ref: str, h: Health) -> str:
    return f"{ref} status: '{h.status}'" + (f" ({h.message})" if h.message else "")


def wait_for(objects: Iterable[tuple[str, Callable[[], dict[str, Any] | None]]], timeout: float,
             interval: float = 0.5, clock: Callable[[], float] = time.monotonic) -> float:
    """Poll each (ref, getter) until all are current; return the seconds it took.

    Raises HealthCheckFailed naming every object that is not current, with why."""
    pending = list(objects)
    started = clock()
    deadline = started + timeout
    while True:
        unhealthy = []
        for ref, getter in pending:
            h = assess(getter())
            if not h.current:
                unhealthy.append((ref, h))
        if not unhealthy:
            return clock() - started
        failed = [(ref, h) for ref, h in unhealthy if h.status == FAILED]
        elapsed = go_duration(clock() - started)
        if failed:
            raise HealthCheckFailed(
                f"health check failed after {elapsed}: failed early due to stalled resources:\n"
                + "\n".join(_describe(ref, h) for ref, h in failed), failed)
        if clock() >= deadline:
            raise HealthCheckFailed(
                f"health check failed after {elapsed}: timeout waiting for:\n"
                + "\n".join(_describe(ref, h) for ref, h in unhealthy), unhealthy)
        keep = {ref for ref, _ in unhealthy}
        pending = [(ref, g) for ref, g in pending if ref in keep]
        time.sleep(max(0.0, min(interval, deadline - clock())))
