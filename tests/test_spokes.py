"""A hub applies to a spoke (issue 16): a Kustomization's `spec.kubeConfig.secretRef` names a
Secret holding a kubeconfig, and its objects land in that cluster, as Flux's hub-and-spoke
fleets do; the hub keeps the inventory and the Lease. Two test API servers play hub and spoke."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures_herald import Repo
from tests.kubeapi import KubeAPIServer
from tests.test_honest_runs import deliver, drain_events, finals, herald_config, make_worker, push  # noqa: F401

CONFIG_MAP = json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "edge", "namespace": "default"},
                         "data": {"site": "spoke-1"}}) + "\n"


@pytest.fixture
def spoke(tmp_path: Path) -> Iterator[KubeAPIServer]:
    server = KubeAPIServer().start()
    try:
        yield server
    finally:
        server.stop()


def spoke_kustomization(**kube_config: str) -> str:
    fields = {"interval": "10m", "path": "./edge", "prune": True, "timeout": "30s",
              "sourceRef": {"kind": "GitRepository", "name": "app"},
              "kubeConfig": {"secretRef": {"name": "spoke-1-kubeconfig", **kube_config}}}
    return "---\n" + json.dumps({"apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
                                 "metadata": {"name": "edge", "namespace": "flux-system"}, "spec": fields}) + "\n"


def kubeconfig_secret(spoke: KubeAPIServer, tmp_path: Path, key: str = "value") -> str:
    text = spoke.write_kubeconfig(tmp_path / "spoke.kubeconfig").read_text()
    return "---\n" + json.dumps({"apiVersion": "v1", "kind": "Secret",
                                 "metadata": {"name": "spoke-1-kubeconfig", "namespace": "flux-system"},
                                 "data": {key: base64.b64encode(text.encode()).decode()}}) + "\n"


def test_a_kustomization_with_a_kubeconfig_applies_to_the_spoke_and_keeps_its_inventory_on_the_hub(
        make_worker, tmp_path: Path, repo: Repo, kube_api: KubeAPIServer, spoke: KubeAPIServer) -> None:
    sha = repo.commit({"edge/site.yaml": CONFIG_MAP}, "the edge site's settings")
    worker = make_worker(herald_config(tmp_path / "herald.yaml", repo.url, spoke_kustomization(),
                                       kubeconfig_secret(spoke, tmp_path)))
    deliver(worker, push(sha))
    assert finals(drain_events(worker.bus)) == [("Kustomization", "edge", "ReconciliationSucceeded")]
    assert (spoke.get_object("v1", "ConfigMap", "default", "edge") or {}).get("data") == {"site": "spoke-1"}
    assert kube_api.get_object("v1", "ConfigMap", "default", "edge") is None  # not on the hub
    # the hub keeps what was applied (its inventory): a removal in Git is pruned from the spoke
    (repo.work / "edge" / "site.yaml").unlink()
    sha = repo.commit({"edge/other.yaml": CONFIG_MAP.replace('"edge"', '"other"')}, "the edge site moves")
    deliver(worker, push(sha))
    assert finals(drain_events(worker.bus)) == [("Kustomization", "edge", "ReconciliationSucceeded")]
    assert spoke.get_object("v1", "ConfigMap", "default", "edge") is None
    assert spoke.get_object("v1", "ConfigMap", "default", "other") is not None


def test_a_missing_kubeconfig_secret_fails_the_kustomization_naming_it(
        make_worker, tmp_path: Path, repo: Repo, kube_api: KubeAPIServer, spoke: KubeAPIServer) -> None:
    sha = repo.commit({"edge/site.yaml": CONFIG_MAP}, "the edge site's settings")
    worker = make_worker(herald_config(tmp_path / "herald.yaml", repo.url, spoke_kustomization()))
    deliver(worker, push(sha))
    [event] = [e for e in drain_events(worker.bus) if e["reason"] != "Progressing"]
    assert event["reason"] == "ReconciliationFailed"
    assert "spec.kubeConfig.secretRef: Secret flux-system/spoke-1-kubeconfig not found" in event["message"]
    assert kube_api.get_object("v1", "ConfigMap", "default", "edge") is None  # never the hub instead


def test_the_kubeconfig_may_sit_under_another_key(
        make_worker, tmp_path: Path, repo: Repo, kube_api: KubeAPIServer, spoke: KubeAPIServer) -> None:
    sha = repo.commit({"edge/site.yaml": CONFIG_MAP}, "the edge site's settings")
    worker = make_worker(herald_config(tmp_path / "herald.yaml", repo.url, spoke_kustomization(key="spoke.yaml"),
                                       kubeconfig_secret(spoke, tmp_path, key="spoke.yaml")))
    deliver(worker, push(sha))
    assert finals(drain_events(worker.bus)) == [("Kustomization", "edge", "ReconciliationSucceeded")]
    assert spoke.get_object("v1", "ConfigMap", "default", "edge") is not None
