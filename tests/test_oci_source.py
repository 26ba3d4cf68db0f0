"""A Kustomization whose source is an OCIRepository (issue 16): the Flux artifact that
`flux push artifact` put in a registry is pulled, unpacked and reconciled like a Git revision,
with source-controller's revisions (`<tag>@sha256:<digest>`) and `spec.ref` (tag, semver,
digest). A real registry (Debian's docker-registry), the real reconciler, the test API server."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from herald import config
from herald.bus import Delivery
from herald.messages import RECONCILE_QUEUE, ReconcileRequest
from tests.kubeapi import KubeAPIServer
from tests.registry import Registry, install, push_flux_artifact, start_registry
from tests.test_honest_runs import drain_events, finals, make_worker  # noqa: F401 (make_worker: the fixture)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    problem = install()
    if problem:
        pytest.fail(f"no docker-registry for the OCIRepository scenarios: {problem}")
    with start_registry(tmp_path_factory.mktemp("registry")) as running:
        yield running


def manifests(tier: str) -> dict[str, bytes]:
    return {"deploy/settings.yaml": json.dumps({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings", "namespace": "default"},
        "data": {"tier": tier}}).encode()}


def oci_config(path: Path, registry: Registry, repository: str, ref: str) -> config.Config:
    path.write_text(f"""\
apiVersion: source.toolkit.fluxcd.io/v1
kind: OCIRepository
metadata: {{name: manifests, namespace: flux-system}}
spec:
  interval: 5m
  url: oci://{registry.host}/{repository}
  insecure: true
  ref: {ref}
---
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {{name: app, namespace: flux-system}}
spec:
  interval: 10m
  prune: true
  path: ./deploy
  sourceRef: {{kind: OCIRepository, name: manifests}}
""")
    return config.load([path])


def reconcile(worker) -> list[dict]:
    req = ReconcileRequest(kind="OCIRepository", name="manifests", namespace="flux-system", reason="interval",
                           origin={"delivery": str(uuid.uuid4())})
    worker.handle(Delivery(RECONCILE_QUEUE, req.to_json(), req.id))
    return drain_events(worker.bus)


def test_an_artifact_is_applied_with_source_controllers_revision(
        make_worker, tmp_path: Path, registry: Registry, kube_api: KubeAPIServer) -> None:
    repository = f"fleet/app-{uuid.uuid4().hex[:8]}"
    digest = push_flux_artifact(registry, repository, "1.0.0", manifests("gold"))
    worker = make_worker(oci_config(tmp_path / "herald.yaml", registry, repository, "{tag: 1.0.0}"))
    [event] = [e for e in reconcile(worker) if e["reason"] != "Progressing"]
    assert event["reason"] == "ReconciliationSucceeded"
    assert event["metadata"]["revision"] == f"1.0.0@{digest}"
    assert (kube_api.get_object("v1", "ConfigMap", "default", "settings") or {})["data"] == {"tier": "gold"}


def test_a_semver_ref_follows_the_highest_release_pushed(
        make_worker, tmp_path: Path, registry: Registry, kube_api: KubeAPIServer) -> None:
    repository = f"fleet/app-{uuid.uuid4().hex[:8]}"
    push_flux_artifact(registry, repository, "1.0.0", manifests("one"))
    worker = make_worker(oci_config(tmp_path / "herald.yaml", registry, repository, "{semver: '>=1.0.0 <2.0.0'}"))
    assert finals(reconcile(worker)) == [("Kustomization", "app", "ReconciliationSucceeded")]
    push_flux_artifact(registry, repository, "1.1.0", manifests("one-one"))
    push_flux_artifact(registry, repository, "2.0.0", manifests("two"))  # outside the range
    [event] = [e for e in reconcile(worker) if e["reason"] != "Progressing"]
    assert event["metadata"]["revision"].startswith("1.1.0@sha256:")
    assert (kube_api.get_object("v1", "ConfigMap", "default", "settings") or {})["data"] == {"tier": "one-one"}


def test_a_missing_tag_fails_every_kustomization_of_the_source_naming_it(
        make_worker, tmp_path: Path, registry: Registry, kube_api: KubeAPIServer) -> None:
    repository = f"fleet/app-{uuid.uuid4().hex[:8]}"
    push_flux_artifact(registry, repository, "1.0.0", manifests("gold"))
    worker = make_worker(oci_config(tmp_path / "herald.yaml", registry, repository, "{tag: 9.9.9}"))
    events = reconcile(worker)
    pulled = next(e for e in events if e["involvedObject"]["kind"] == "OCIRepository")
    assert pulled["reason"] == "OCIArtifactPullFailed" and "9.9.9" in pulled["message"]
    assert finals(events)[-1] == ("Kustomization", "app", "ReconciliationFailed")
