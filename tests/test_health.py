"""Health checks judge each kind as kstatus does (and so Flux's `wait`), kind by kind.

Herald's `reconciler.health` follows sigs.k8s.io/cli-utils `pkg/kstatus/status` and Flux's own
Job reader. Each case is an object as its controller leaves it, and the verdict kstatus gives:
where Herald used to be stricter (a LoadBalancer waiting for an address, a StatefulSet whose
revision fields lag, a failed bare Pod) it dead-lettered revisions Flux reports Ready; where it
was more lenient (a Deployment not yet Available, a DaemonSet nobody has looked at) it called
healthy what Flux still waits for.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from reconciler.health import CURRENT, FAILED, IN_PROGRESS, NOT_FOUND, TERMINATING, assess, wait_for


def obj(api_version: str, kind: str, spec: dict | None = None, status: dict | None = None,
        generation: int | None = 1, **meta: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": "x", "namespace": "shop", **meta}
    if generation is not None:
        metadata["generation"] = generation
    out: dict[str, Any] = {"apiVersion": api_version, "kind": kind, "metadata": metadata}
    if spec is not None:
        out["spec"] = spec
    if status is not None:
        out["status"] = status
    return out


def cond(ctype: str, status: str, reason: str = "", message: str = "") -> dict[str, str]:
    return {"type": ctype, "status": status, "reason": reason, "message": message}


AVAILABLE = [cond("Available", "True", "MinimumReplicasAvailable"),
             cond("Progressing", "True", "NewReplicaSetAvailable")]
ROLLED = {"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2, "availableReplicas": 2}
LONG_AGO = (datetime.now(UTC) - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")

CASES = [
    # -- every kind ----------------------------------------------------------------------
    ("being deleted", obj("v1", "ConfigMap", deletionTimestamp=LONG_AGO), TERMINATING),
    ("generation not observed yet", obj("apps/v1", "Deployment", {"replicas": 2},
                                        {**ROLLED, "observedGeneration": 1, "conditions": AVAILABLE},
                                        generation=2), IN_PROGRESS),
    ("Stalled=True on any kind fails", obj("apps/v1", "Deployment", {"replicas": 2, "progressDeadlineSeconds": 600},
                                           {**ROLLED, "conditions": [*AVAILABLE, cond("Stalled", "True", "Quota")]}),
     FAILED),
    ("Reconciling=True is in progress", obj("example.com/v1", "Widget", {}, {"observedGeneration": 1, "conditions": [
        cond("Reconciling", "True", "Progressing"), cond("Ready", "True")]}), IN_PROGRESS),
    # -- Deployment ----------------------------------------------------------------------
    ("Deployment rolled out", obj("apps/v1", "Deployment", {"replicas": 2, "progressDeadlineSeconds": 600},
                                  {**ROLLED, "conditions": AVAILABLE}), CURRENT),
    ("Deployment counted but not Available yet",
     obj("apps/v1", "Deployment", {"replicas": 2, "progressDeadlineSeconds": 600},
         {**ROLLED, "conditions": [cond("Available", "False"), cond("Progressing", "True", "ReplicaSetUpdated")]}),
     IN_PROGRESS),
    ("Deployment without progressDeadlineSeconds needs no Progressing condition",
     obj("apps/v1", "Deployment", {"replicas": 2}, {**ROLLED, "conditions": [cond("Available", "True")]}), CURRENT),
    ("Deployment past its progress deadline", obj("apps/v1", "Deployment", {"replicas": 2},
                                                  {**ROLLED, "readyReplicas": 0, "conditions": [
                                                      cond("Progressing", "False", "ProgressDeadlineExceeded")]}),
     FAILED),
    ("Deployment with an old replica left", obj("apps/v1", "Deployment", {"replicas": 2},
                                                {**ROLLED, "replicas": 3, "conditions": AVAILABLE}), IN_PROGRESS),
    # -- StatefulSet ---------------------------------------------------------------------
    ("StatefulSet OnDelete is the user's to roll", obj("apps/v1", "StatefulSet", {
        "replicas": 2, "updateStrategy": {"type": "OnDelete"}}, {"observedGeneration": 1, "replicas": 2}), CURRENT),
    ("StatefulSet with the defaulted partition 0 does not wait for currentRevision",
     obj("apps/v1", "StatefulSet", {"replicas": 2, "updateStrategy": {"type": "RollingUpdate",
                                                                      "rollingUpdate": {"partition": 0}}},
         {"observedGeneration": 1, "replicas": 2, "readyReplicas": 2, "updatedReplicas": 2, "currentReplicas": 1,
          "currentRevision": "x-1", "updateRevision": "x-2"}), CURRENT),
    ("StatefulSet without a partition waits for its revision",
     obj("apps/v1", "StatefulSet", {"replicas": 2}, {
         "observedGeneration": 1, "replicas": 2, "readyReplicas": 2, "updatedReplicas": 2, "currentReplicas": 2,
         "currentRevision": "x-1", "updateRevision": "x-2"}), IN_PROGRESS),
    # -- DaemonSet -----------------------------------------------------------------------
    ("DaemonSet its controller has not looked at", obj("apps/v1", "DaemonSet", {}, {}), IN_PROGRESS),
    ("DaemonSet without desiredNumberScheduled", obj("apps/v1", "DaemonSet", {}, {"observedGeneration": 1}),
     IN_PROGRESS),
    ("DaemonSet on every node", obj("apps/v1", "DaemonSet", {}, {
        "observedGeneration": 1, "desiredNumberScheduled": 3, "currentNumberScheduled": 3,
        "updatedNumberScheduled": 3, "numberAvailable": 3, "numberReady": 3}), CURRENT),
    # -- ReplicaSet ----------------------------------------------------------------------
    ("ReplicaSet that cannot create pods", obj("apps/v1", "ReplicaSet", {"replicas": 1}, {
        "observedGeneration": 1, "replicas": 0, "conditions": [cond("ReplicaFailure", "True", "FailedCreate")]}),
     IN_PROGRESS),
    ("ReplicaSet available", obj("apps/v1", "ReplicaSet", {"replicas": 1}, {
        "observedGeneration": 1, "replicas": 1, "fullyLabeledReplicas": 1, "readyReplicas": 1,
        "availableReplicas": 1}), CURRENT),
    # -- Pod -----------------------------------------------------------------------------
    ("Pod that completed unsuccessfully has completed", obj("v1", "Pod", {}, {"phase": "Failed"}, None), CURRENT),
    ("Pod in CrashLoopBackOff", obj("v1", "Pod", {}, {"phase": "Running", "containerStatuses": [
        {"name": "web", "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}, None), FAILED),
    ("Pod unschedulable for minutes", obj("v1", "Pod", {}, {"phase": "Pending", "conditions": [
        cond("PodScheduled", "False", "Unschedulable")]}, None, creationTimestamp=LONG_AGO), FAILED),
    ("Pod ready", obj("v1", "Pod", {}, {"phase": "Running", "conditions": [cond("Ready", "True")]}, None), CURRENT),
    # -- Job (Flux's reader: waits for completion) ----------------------------------------
    ("Job running", obj("batch/v1", "Job", {}, {"startTime": LONG_AGO, "active": 1}), IN_PROGRESS),
    ("Job suspended", obj("batch/v1", "Job", {"suspend": True}, {}), CURRENT),
    ("Job complete", obj("batch/v1", "Job", {}, {"conditions": [cond("Complete", "True")]}), CURRENT),
    ("Job failed", obj("batch/v1", "Job", {}, {"conditions": [cond("Failed", "True", "BackoffLimitExceeded")]}),
     FAILED),
    # -- Service, PVC, always-ready kinds -------------------------------------------------
    ("LoadBalancer with a cluster IP and no ingress", obj("v1", "Service", {
        "type": "LoadBalancer", "clusterIP": "10.96.0.10"}, {"loadBalancer": {}}, None), CURRENT),
    ("LoadBalancer without a cluster IP yet", obj("v1", "Service", {"type": "LoadBalancer"}, {}, None), IN_PROGRESS),
    ("PVC pending", obj("v1", "PersistentVolumeClaim", {}, {"phase": "Pending"}, None), IN_PROGRESS),
    ("PodDisruptionBudget observed", obj("policy/v1", "PodDisruptionBudget", {}, {
        "observedGeneration": 1, "conditions": [cond("DisruptionAllowed", "False", "InsufficientPods")]}), CURRENT),
    ("CronJob", obj("batch/v1", "CronJob", {"schedule": "* * * * *"}, {}), CURRENT),
    # -- CRD -----------------------------------------------------------------------------
    ("CRD installing", obj("apiextensions.k8s.io/v1", "CustomResourceDefinition", {}, {"conditions": [
        cond("Established", "False", "Installing")]}, None), IN_PROGRESS),
    ("CRD that will not be established", obj("apiextensions.k8s.io/v1", "CustomResourceDefinition", {}, {
        "conditions": [cond("Established", "False", "NotEstablished")]}, None), FAILED),
    # -- anything else: the Ready condition ------------------------------------------------
    ("custom resource Ready=Unknown", obj("example.com/v1", "Widget", {}, {"conditions": [
        cond("Ready", "Unknown", "Progressing")]}), IN_PROGRESS),
    ("custom resource without conditions", obj("example.com/v1", "Widget", {}, {}), CURRENT),
]


@pytest.mark.parametrize(("case", "live", "verdict"), CASES, ids=[c[0] for c in CASES])
def test_each_kind_is_judged_as_kstatus_judges_it(case: str, live: dict[str, Any], verdict: str) -> None:
    assert assess(live).status == verdict, assess(live)


def test_a_job_with_a_ttl_that_is_gone_has_finished() -> None:
    """As Flux's JobsWithTTL: the TTL controller deletes such a Job after it finished, so not
    finding it is success; any other object that is not found is still waited for."""
    assert assess(None).status == NOT_FOUND
    assert wait_for([("Job/shop/migrate", lambda: None)], 1.0, 0.05, gone_ok={"Job/shop/migrate"}) < 1.0
