"""A tenant's Kustomization applies as its ServiceAccount (issue 16): `spec.serviceAccountName`
makes every apply, prune and health read of that Kustomization an impersonated request,
`system:serviceaccount:<namespace>:<name>`, so the tenant's RBAC decides, as in Flux's
multi-tenancy. The test API server enforces impersonation and RBAC (tests/test_kubeapi_rbac.py
checks it with kubectl); team-a's `flux` ServiceAccount may edit team-a only."""

from __future__ import annotations

import json
from pathlib import Path

from tests.fixtures_herald import Repo
from tests.kubeapi import KubeAPIServer
from tests.test_honest_runs import deliver, drain_events, finals, herald_config, make_worker, push  # noqa: F401
from tests.test_kubeapi_rbac import teams  # noqa: F401 (the fixture)

TENANT = "system:serviceaccount:team-a:flux"


def config_map(name: str, namespace: str) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": namespace},
                       "data": {"owner": "team-a"}}) + "\n"


def tenant_kustomization(path: str, **spec: object) -> str:
    fields = {"interval": "10m", "path": path, "prune": True, "timeout": "30s", "serviceAccountName": "flux",
              "sourceRef": {"kind": "GitRepository", "name": "app", "namespace": "flux-system"}, **spec}
    return "---\n" + json.dumps({"apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
                                 "metadata": {"name": "tenant", "namespace": "team-a"}, "spec": fields}) + "\n"


def test_a_tenant_applies_in_its_own_namespace_as_its_service_account(
        make_worker, tmp_path: Path, repo: Repo, teams: KubeAPIServer) -> None:  # noqa: F811
    sha = repo.commit({"tenant/settings.yaml": config_map("settings", "team-a")}, "team-a's settings")
    worker = make_worker(herald_config(tmp_path / "herald.yaml", repo.url, tenant_kustomization("./tenant")))
    start = len(teams.requests)
    deliver(worker, push(sha))
    assert finals(drain_events(worker.bus)) == [("Kustomization", "tenant", "ReconciliationSucceeded")]
    assert teams.get_object("v1", "ConfigMap", "team-a", "settings") is not None
    writes = [r for r in teams.requests[start:] if r.method == "PATCH" and "/configmaps/settings" in r.path]
    assert writes and {r.user for r in writes} == {TENANT}


def test_a_tenant_cannot_write_into_another_teams_namespace(
        make_worker, tmp_path: Path, repo: Repo, teams: KubeAPIServer) -> None:  # noqa: F811
    sha = repo.commit({"tenant/settings.yaml": config_map("settings", "team-a"),
                       "tenant/intrusion.yaml": config_map("intrusion", "team-b")}, "team-a reaching into team-b")
    worker = make_worker(herald_config(tmp_path / "herald.yaml", repo.url, tenant_kustomization("./tenant")))
    deliver(worker, push(sha))
    [event] = [e for e in drain_events(worker.bus) if e["reason"] != "Progressing"]
    assert event["reason"] == "ReconciliationFailed"
    assert f'User "{TENANT}" cannot' in event["message"] and 'in the namespace "team-b"' in event["message"]
    assert teams.get_object("v1", "ConfigMap", "team-b", "intrusion") is None  # Herald's own rights were not used
