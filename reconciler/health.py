"""Is an applied object healthy? kstatus's rules, as Flux's health checks apply them.

Each object is Current (rolled out, ready), InProgress (not yet), Failed (will not get there
by waiting), Terminating, or NotFound. The rules are kstatus's (sigs.k8s.io/cli-utils
`pkg/kstatus/status`, which Flux's kustomize-controller polls through `fluxcd/pkg/ssa`), so
that a revision Flux reports Ready is one Herald reports healthy, and the other way round.
First, for every kind:

* metadata.deletionTimestamp set: Terminating.
* status.observedGeneration present and different from metadata.generation: InProgress (a
  kind that never reports observedGeneration is not held to it).
* a condition Reconciling=True: InProgress; Stalled=True: Failed (the first of them listed).

Then by kind:

* Deployment: ProgressDeadlineExceeded fails. Otherwise, in order: status.replicas,
  updatedReplicas, no extra (old) replicas, available ≥ updated, readyReplicas, each against
  spec.replicas; then the Progressing condition says NewReplicaSetAvailable (unless
  spec.progressDeadlineSeconds is unset, when the controller never writes it) and
  Available=True.
* StatefulSet: OnDelete is current at once (the user rolls it). Otherwise status.replicas and
  readyReplicas reach spec.replicas with no extra; with a partition (the API server defaults
  it to 0) the pods at or above it are updated; without one currentReplicas reaches
  spec.replicas and currentRevision = updateRevision.
* DaemonSet: generation and observedGeneration must both be present; then
  desiredNumberScheduled present, and current, updated, available and ready numbers reach it.
* ReplicaSet: a ReplicaFailure=True condition is in progress; then fullyLabeled, available
  and ready replicas reach spec.replicas, with no extra.
* Pod: Succeeded, and Failed too (it has completed; kstatus judges the Pod, not its workload),
  are current; Running is current when Ready, failed when a container is in CrashLoopBackOff;
  Pending is failed when Unschedulable for more than 15 s since creation.
* Job: Flux's own reader (`fluxcd/pkg/runtime/statusreaders`): suspended or Complete=True is
  current, Failed=True fails, anything else (started or not) is in progress.
* Service: current, except a LoadBalancer that has no spec.clusterIP yet. Its
  status.loadBalancer.ingress is *not* waited for: kstatus does not, and on clusters without
  a load-balancer controller (kind, k3d, most labs) it never comes.
* PersistentVolumeClaim: Bound. PodDisruptionBudget, ConfigMap, Secret, CronJob: current.
* CustomResourceDefinition: NamesAccepted=False fails; Established=True is current,
  Established=False for any reason but Installing fails; else in progress.
* Anything else: a Ready condition True is current, False or Unknown in progress; with no
  Ready condition, current.

Where Herald is stricter than kstatus, and why: only Jobs. Plain kstatus calls a Job Current
as soon as it has started; Herald waits for Complete=True, as Flux's own Job reader does, so
Herald and Flux still agree: a migration Job in a Kustomization with `wait` gates the
revision. Likewise as Flux (`JobsWithTTL`), a Job with spec.ttlSecondsAfterFinished that is
gone (NotFound: the TTL controller deleted it after it finished) counts as current; any other
NotFound object does not.

`wait_for` polls until every object is current, fails early when one has failed (Flux's
``failed early due to stalled resources``), and otherwise gives up after the timeout, naming
each object that is not ready and why.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any

from reconciler.locks import parse_time

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


def _status(obj: dict[str, Any]) -> dict[str, Any]:
    status = obj.get("status")
    return status if isinstance(status, dict) else {}


def _condition_list(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in _status(obj).get("conditions") or [] if isinstance(c, dict)]


def _conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c.get("type", ""): c for c in _condition_list(obj)}


def _true(conds: dict[str, dict[str, Any]], ctype: str) -> bool:
    return str(conds.get(ctype, {}).get("status", "")) == "True"


def _why(cond: dict[str, Any]) -> str:
    reason, message = cond.get("reason", ""), cond.get("message", "")
    return f"{reason}: {message}" if reason and message else reason or message


def _int(obj: dict[str, Any], path: str, default: int = 0) -> int:
    """A number at a dotted path (`spec.replicas`), `default` when absent or not a number."""
    value: Any = obj
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            return default
        value = value[key]
    if isinstance(value, bool):
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _has(obj: dict[str, Any], path: str) -> bool:
    return _int(obj, path, -(2**63)) != -(2**63)


def _generic(obj: dict[str, Any]) -> Health | None:
    """kstatus's checks for every kind: generation observed, Reconciling, Stalled."""
    if _has(obj, "metadata.generation") and _has(obj, "status.observedGeneration"):
        generation, observed = _int(obj, "metadata.generation"), _int(obj, "status.observedGeneration")
        if generation != observed:
            return Health(IN_PROGRESS, f"{obj.get('kind', 'resource')} generation is {generation}, "
                                       f"but latest observed generation is {observed}")
    for c in _condition_list(obj):
        if str(c.get("status", "")) != "True":
            continue
        if c.get("type") == "Reconciling":
            return Health(IN_PROGRESS, _why(c) or "Reconciling")
        if c.get("type") == "Stalled":
            return Health(FAILED, _why(c) or "Stalled")
    return None


def _deployment(obj: dict[str, Any]) -> Health:
    # Without progressDeadlineSeconds the controller writes no Progressing condition at all.
    progressing = not _has(obj, "spec.progressDeadlineSeconds") or \
        _int(obj, "spec.progressDeadlineSeconds") == 2**31 - 1
    available = False
    for c in _condition_list(obj):
        if c.get("type") == "Progressing":
            if c.get("reason") == "ProgressDeadlineExceeded":
                return Health(FAILED, _why(c) or "Progress deadline exceeded")
            if c.get("status") == "True" and c.get("reason") == "NewReplicaSetAvailable":
                progressing = True
        elif c.get("type") == "Available" and c.get("status") == "True":
            available = True
    want = _int(obj, "spec.replicas", 1)
    total, updated = _int(obj, "status.replicas"), _int(obj, "status.updatedReplicas")
    ready, avail = _int(obj, "status.readyReplicas"), _int(obj, "status.availableReplicas")
    if want > total:
        return Health(IN_PROGRESS, f"Replicas: {total}/{want}")
    if want > updated:
        return Health(IN_PROGRESS, f"Updated: {updated}/{want}")
    if total > want:
        return Health(IN_PROGRESS, f"Pending termination: {total - want}")
    if updated > avail:
        return Health(IN_PROGRESS, f"Available: {avail}/{updated}")
    if want > ready:
        return Health(IN_PROGRESS, f"Ready: {ready}/{want}")
    if not progressing:
        return Health(IN_PROGRESS, "ReplicaSet not Available")
    if not available:
        return Health(IN_PROGRESS, "Deployment not Available")
    return Health(CURRENT, f"Deployment is available. Replicas: {total}")


def _statefulset(obj: dict[str, Any]) -> Health:
    spec = obj.get("spec") or {}
    if (spec.get("updateStrategy") or {}).get("type") == "OnDelete":
        return Health(CURRENT, "StatefulSet is using the OnDelete update strategy")
    want = _int(obj, "spec.replicas", 1)
    total, ready = _int(obj, "status.replicas"), _int(obj, "status.readyReplicas")
    current, updated = _int(obj, "status.currentReplicas"), _int(obj, "status.updatedReplicas")
    if want > total:
        return Health(IN_PROGRESS, f"Replicas: {total}/{want}")
    if want > ready:
        return Health(IN_PROGRESS, f"Ready: {ready}/{want}")
    if total > want:
        return Health(IN_PROGRESS, f"Pending termination: {total - want}")
    if _has(obj, "spec.updateStrategy.rollingUpdate.partition"):
        partition = _int(obj, "spec.updateStrategy.rollingUpdate.partition")
        if updated < want - partition:
            return Health(IN_PROGRESS, f"Updated: {updated}/{want - partition}")
        return Health(CURRENT, f"Partition rollout complete. Updated: {updated}")
    if want > current:
        return Health(IN_PROGRESS, f"Current: {current}/{want}")
    status = _status(obj)
    if status.get("currentRevision", "") != status.get("updateRevision", ""):
        return Health(IN_PROGRESS, "Waiting for updated revision to match current")
    return Health(CURRENT, f"All replicas scheduled as expected. Replicas: {total}")


def _daemonset(obj: dict[str, Any]) -> Health:
    kind = obj.get("kind", "DaemonSet")
    if not _has(obj, "metadata.generation"):
        return Health(IN_PROGRESS, f"{kind} metadata.generation not found")
    if not _has(obj, "status.observedGeneration"):
        return Health(IN_PROGRESS, f"{kind} status.observedGeneration not found")
    want = _int(obj, "status.desiredNumberScheduled", -1)
    if want == -1:
        return Health(IN_PROGRESS, "Missing .status.desiredNumberScheduled")
    for key, label in (("currentNumberScheduled", "Current"), ("updatedNumberScheduled", "Updated"),
                       ("numberAvailable", "Available"), ("numberReady", "Ready")):
        if want > _int(obj, f"status.{key}"):
            return Health(IN_PROGRESS, f"{label}: {_int(obj, f'status.{key}')}/{want}")
    return Health(CURRENT, f"All replicas scheduled as expected. Replicas: {want}")


def _replicaset(obj: dict[str, Any]) -> Health:
    for c in _condition_list(obj):
        if c.get("type") == "ReplicaFailure" and c.get("status") == "True":
            return Health(IN_PROGRESS, _why(c) or "Replica Failure condition. Check Pods")
    want = _int(obj, "spec.replicas", 1)
    for key, label in (("fullyLabeledReplicas", "Labelled"), ("availableReplicas", "Available"),
                       ("readyReplicas", "Ready")):
        if want > _int(obj, f"status.{key}"):
            return Health(IN_PROGRESS, f"{label}: {_int(obj, f'status.{key}')}/{want}")
    total = _int(obj, "status.replicas")
    if total > want:
        return Health(IN_PROGRESS, f"Pending termination: {total - want}")
    return Health(CURRENT, f"ReplicaSet is available. Replicas: {total}")


SCHEDULE_WINDOW = 15.0
"""Seconds an Unschedulable Pod is given before it counts as failed (kstatus's ScheduleWindow)."""


def _pod(obj: dict[str, Any]) -> Health:
    phase = _status(obj).get("phase", "")
    conds = _conditions(obj)
    if phase == "Succeeded":
        return Health(CURRENT, "Pod has completed successfully")
    if phase == "Failed":
        return Health(CURRENT, "Pod has completed, but not successfully")
    if phase == "Running":
        if _true(conds, "Ready"):
            return Health(CURRENT, "Pod is Ready")
        looping = [str(cs.get("name", "")) for cs in _status(obj).get("containerStatuses") or []
                   if isinstance(cs, dict)
                   and (((cs.get("state") or {}).get("waiting") or {}).get("reason")) == "CrashLoopBackOff"]
        if looping:
            return Health(FAILED, f"Containers in CrashLoop state: {','.join(looping)}")
        return Health(IN_PROGRESS, "Pod is running but is not Ready")
    if phase == "Pending":
        scheduled = conds.get("PodScheduled", {})
        if scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable":
            created = parse_time((obj.get("metadata") or {}).get("creationTimestamp"))
            if created is not None and time.time() - created > SCHEDULE_WINDOW:
                return Health(FAILED, _why(scheduled) or "Pod could not be scheduled")
            return Health(IN_PROGRESS, "Pod has not been scheduled")
        return Health(IN_PROGRESS, "Pod is in the Pending phase")
    return Health(IN_PROGRESS, f"Pod phase {phase}" if phase else "Pod phase not available")


def _job(obj: dict[str, Any]) -> Health:
    if (obj.get("spec") or {}).get("suspend") is True:
        return Health(CURRENT, "Job is suspended")
    conds = _conditions(obj)
    succeeded, active, failed = (_int(obj, f"status.{k}") for k in ("succeeded", "active", "failed"))
    for c in _condition_list(obj):
        if c.get("status") != "True":
            continue
        if c.get("type") == "Complete":
            return Health(CURRENT, f"Job Completed. succeeded: {succeeded}")
        if c.get("type") == "Failed":
            return Health(FAILED, _why(conds["Failed"]) or f"Job Failed. failed: {failed}")
    if not _status(obj).get("startTime"):
        return Health(IN_PROGRESS, "Job not started")
    return Health(IN_PROGRESS, f"Job in progress. succeeded: {succeeded}, active: {active}, failed: {failed}")


def _service(obj: dict[str, Any]) -> Health:
    spec = obj.get("spec") or {}
    if spec.get("type") == "LoadBalancer" and not spec.get("clusterIP"):
        return Health(IN_PROGRESS, "ClusterIP not set. Service type: LoadBalancer")
    return Health(CURRENT, "Service is ready")


def _pvc(obj: dict[str, Any]) -> Health:
    phase = _status(obj).get("phase", "")
    return Health(CURRENT, "PVC is Bound") if phase == "Bound" else \
        Health(IN_PROGRESS, f"PVC is not Bound. phase: {phase or 'unknown'}")


def _crd(obj: dict[str, Any]) -> Health:
    for c in _condition_list(obj):
        if c.get("type") == "NamesAccepted" and c.get("status") == "False":
            return Health(FAILED, _why(c) or "names not accepted")
        if c.get("type") == "Established":
            if c.get("status") == "False" and c.get("reason") != "Installing":
                return Health(FAILED, _why(c) or "not established")
            if c.get("status") == "True":
                return Health(CURRENT, "CRD is established")
    return Health(IN_PROGRESS, "Install in progress")


def _always(obj: dict[str, Any]) -> Health:
    return Health(CURRENT, "Resource is always ready")


def _pdb(obj: dict[str, Any]) -> Health:
    return Health(CURRENT, "AllowedDisruptions has been computed.")


def _ready_condition(obj: dict[str, Any]) -> Health:
    """Kinds without a rule of their own: a Ready condition if they have one, else current."""
    for c in _condition_list(obj):
        if c.get("type") != "Ready":
            continue
        if c.get("status") == "True":
            return Health(CURRENT, _why(c) or "Resource is Ready")
        if c.get("status") in ("False", "Unknown"):
            return Health(IN_PROGRESS, _why(c) or f"Ready is {c.get('status')}")
    return Health(CURRENT, "Resource is current")


_BUILTIN: dict[tuple[str, str], Callable[[dict[str, Any]], Health]] = {
    ("apps", "Deployment"): _deployment,
    ("extensions", "Deployment"): _deployment,
    ("apps", "StatefulSet"): _statefulset,
    ("apps", "DaemonSet"): _daemonset,
    ("extensions", "DaemonSet"): _daemonset,
    ("apps", "ReplicaSet"): _replicaset,
    ("extensions", "ReplicaSet"): _replicaset,
    ("batch", "Job"): _job,
    ("batch", "CronJob"): _always,
    ("policy", "PodDisruptionBudget"): _pdb,
    ("", "Pod"): _pod,
    ("", "Service"): _service,
    ("", "PersistentVolumeClaim"): _pvc,
    ("", "ConfigMap"): _always,
    ("", "Secret"): _always,
    ("apiextensions.k8s.io", "CustomResourceDefinition"): _crd,
}


def assess(obj: dict[str, Any] | None) -> Health:
    if obj is None:
        return Health(NOT_FOUND, "not found")
    meta = obj.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        return Health(TERMINATING, "Resource scheduled for deletion")
    key = (str(obj.get("apiVersion", "")).rpartition("/")[0], obj.get("kind", ""))
    if key[1] == "Namespace" and _status(obj).get("phase") == "Terminating":
        return Health(TERMINATING, "namespace is terminating")
    found = _generic(obj)
    if found is not None:
        return found
    return _BUILTIN.get(key, _ready_condition)(obj)


def with_expressions(exprs: Iterable[dict[str, Any]]) -> Callable[[dict[str, Any] | None], Health]:
    """`assess`, with a Kustomization's healthCheckExprs (CEL, `reconciler.cel_health`) deciding
    for the kinds they name, as kustomize-controller's CEL status reader does. An expression
    that cannot be evaluated (a field the object does not have yet) leaves the object in
    progress with the error as its message, as Flux reports it Unknown and waits on."""
    from reconciler.cel_health import EvalError, compile_exprs, evaluate, find

    compiled = compile_exprs(list(exprs))

    def judge(obj: dict[str, Any] | None) -> Health:
        if obj is None or (obj.get("metadata") or {}).get("deletionTimestamp"):
            return assess(obj)
        expr = find(compiled, str(obj.get("apiVersion", "")), str(obj.get("kind", "")))
        if expr is None:
            return assess(obj)
        try:
            verdict = evaluate(expr, obj)
        except EvalError as exc:
            return Health(IN_PROGRESS, str(exc))
        return Health(verdict.status, verdict.message)

    return judge


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
             interval: float = 0.5, clock: Callable[[], float] = time.monotonic,
             gone_ok: Collection[str] = (), judge: Callable[[dict[str, Any] | None], Health] | None = None) -> float:
    """Poll each (ref, getter) until all are current; return the seconds it took. An object of
    `gone_ok` (Jobs with ttlSecondsAfterFinished) also counts as current once it is not found.
    `judge` replaces `assess` (a Kustomization's healthCheckExprs: `with_expressions`).

    Raises HealthCheckFailed naming every object that is not current, with why."""
    pending = list(objects)
    started = clock()
    deadline = started + timeout
    while True:
        unhealthy = []
        for ref, getter in pending:
            h = (judge or assess)(getter())
            if not h.current and not (h.status == NOT_FOUND and ref in gone_ok):
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
