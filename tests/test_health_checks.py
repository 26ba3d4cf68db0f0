"""A Kustomization's `healthChecks` and `healthCheckExprs` (issue 16), as Flux honours them.

Without `wait`, Flux waits only for the objects `healthChecks` names (one another controller
may own); `healthCheckExprs` decide, with CEL, when a custom resource is healthy, which kstatus
cannot know. Each scenario runs the real reconciler on a real Git repository against the
test API server, whose workload "controllers" roll out as the test says."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

from herald.bus import RetryLater
from tests.fixtures_herald import Repo
from tests.kubeapi import KubeAPIServer
from tests.test_honest_runs import deliver, drain_events, finals, herald_config, kustomization, make_worker, push  # noqa: F401 (make_worker: the fixture)

WEB = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: nginx}]}
"""

CERTIFICATE_CRD = """\
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: certificates.cert-manager.io}
spec:
  group: cert-manager.io
  names: {kind: Certificate, plural: certificates, singular: certificate, listKind: CertificateList}
  scope: Namespaced
  versions:
    - name: v1
      served: true
      storage: true
      subresources: {status: {}}
      schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
"""

CERTIFICATE = """\
apiVersion: cert-manager.io/v1
kind: Certificate
metadata: {name: web, namespace: shop}
spec: {secretName: web-tls, dnsNames: [shop.example.com]}
"""

# As Flux's documentation writes them for cert-manager.
CERTIFICATE_EXPRS = [{
    "apiVersion": "cert-manager.io/v1", "kind": "Certificate",
    "failed": "status.conditions.filter(e, e.type == 'Ready').all(e, e.status == 'False')",
    "current": "status.conditions.filter(e, e.type == 'Ready').all(e, e.status == 'True')",
}]


def namespace() -> str:
    return "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n"


def test_health_checks_wait_for_the_objects_they_name_and_fail_naming_them(
        make_worker, tmp_path: Path, repo: Repo, kube_api: KubeAPIServer) -> None:
    sha = repo.commit({"deploy/ns.yaml": namespace(), "deploy/web.yaml": WEB}, "the web tier")
    kube_api.set_rollout("progressing", kind="Deployment")
    checks = [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "namespace": "shop"}]
    worker = make_worker(herald_config(tmp_path / "herald.yaml", repo.url,
                                       kustomization("app", "./deploy", timeout="2s", healthChecks=checks)))
    with pytest.raises(RetryLater):  # the bus tries a failed health check again
        deliver(worker, push(sha))
    [event] = [e for e in drain_events(worker.bus) if e["reason"] != "Progressing"]
    assert event["reason"] == "HealthCheckFailed"
    assert "timeout waiting for:\nDeployment/shop/web status: 'InProgress'" in event["message"]

    kube_api.set_rollout("complete", kind="Deployment")
    deliver(worker, push(sha))
    assert finals(drain_events(worker.bus)) == [("Kustomization", "app", "ReconciliationSucceeded")]


def test_without_health_checks_or_wait_nothing_is_waited_for(
        make_worker, tmp_path: Path, repo: Repo, kube_api: KubeAPIServer) -> None:
    sha = repo.commit({"deploy/ns.yaml": namespace(), "deploy/web.yaml": WEB}, "the web tier")
    kube_api.set_rollout("progressing", kind="Deployment")
    worker = make_worker(herald_config(tmp_path / "herald.yaml", repo.url, kustomization("app", "./deploy")))
    deliver(worker, push(sha))
    assert finals(drain_events(worker.bus)) == [("Kustomization", "app", "ReconciliationSucceeded")]


def set_ready(kubeconfig: Path, status: str) -> None:
    """cert-manager's controller reports the Certificate's Ready condition."""
    api = k8s_config.new_client_from_config(str(kubeconfig))
    k8s_client.CustomObjectsApi(api).patch_namespaced_custom_object_status(
        "cert-manager.io", "v1", "shop", "certificates", "web",
        {"status": {"conditions": [{"type": "Ready", "status": status, "reason": "Issued" if status == "True"
                                    else "Failed", "message": "..."}]}})
    api.close()


def test_health_check_exprs_judge_a_custom_resource_kstatus_cannot(
        make_worker, tmp_path: Path, repo: Repo, kube_api: KubeAPIServer, kubeconfig: Path) -> None:
    sha = repo.commit({"deploy/ns.yaml": namespace(), "deploy/crd.yaml": CERTIFICATE_CRD,
                       "deploy/cert.yaml": CERTIFICATE}, "a certificate")
    worker = make_worker(herald_config(tmp_path / "herald.yaml", repo.url, kustomization(
        "app", "./deploy", wait=True, timeout="2s", healthCheckExprs=CERTIFICATE_EXPRS)))
    # no status yet: the expression cannot be evaluated, so the Certificate is still in progress
    with pytest.raises(RetryLater):  # the bus tries a failed health check again
        deliver(worker, push(sha))
    [event] = [e for e in drain_events(worker.bus) if e["reason"] != "Progressing"]
    assert event["reason"] == "HealthCheckFailed"
    assert "Certificate/shop/web status: 'InProgress'" in event["message"]
    assert "status" in event["message"].split("Certificate/shop/web", 1)[1]  # the evaluation error says why

    set_ready(kubeconfig, "False")
    with pytest.raises(RetryLater):
        deliver(worker, push(sha))
    [event] = [e for e in drain_events(worker.bus) if e["reason"] != "Progressing"]
    assert "failed early due to stalled resources:\nCertificate/shop/web status: 'Failed'" in event["message"]

    set_ready(kubeconfig, "True")
    deliver(worker, push(sha))
    assert finals(drain_events(worker.bus)) == [("Kustomization", "app", "ReconciliationSucceeded")]


def test_a_health_check_expr_that_does_not_compile_is_an_error_at_its_line(tmp_path: Path) -> None:
    from herald import config

    path = tmp_path / "herald.yaml"
    path.write_text(textwrap.dedent("""\
        apiVersion: kustomize.toolkit.fluxcd.io/v1
        kind: Kustomization
        metadata: {name: app, namespace: flux-system}
        spec:
          interval: 10m
          prune: true
          sourceRef: {kind: GitRepository, name: app}
          healthCheckExprs:
            - apiVersion: cert-manager.io/v1
              kind: Certificate
              current: "status.conditions.filter(e, e.type == 'Ready'"
        """))
    _, diagnostics = config.check([path])
    [error] = [d for d in diagnostics if d.severity == "error" and "healthCheckExprs" in d.message]
    assert error.line == 8 and "spec.healthCheckExprs[0].current" in error.message
