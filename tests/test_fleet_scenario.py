"""A whole fleet, as a Flux user's repository holds it (issue 16), reconciled from its bootstrap
gotk-sync.yaml alone, with every part issue 16 names in one repository:

    clusters/prod/flux-system/      gotk-sync.yaml (the bootstrap), kustomization.yaml
    clusters/prod/kustomization.yaml  namespace flux-system; patches give every Kustomization
                                      its interval and prune
    clusters/prod/infrastructure.yaml the cluster's variables (a ConfigMap)
    clusters/prod/apps.yaml         dependsOn infrastructure; postBuild.substituteFrom the
                                    ConfigMap and an optional Secret; SOPS decryption
    clusters/prod/tenants.yaml      applies tenants/: team-a's namespace, ServiceAccount,
                                    RoleBinding and its own Kustomization (serviceAccountName)
    clusters/prod/edge.yaml         a spoke through kubeConfig
    clusters/prod/charts.yaml       an OCIRepository (a Flux artifact in a real registry) and a
                                    Kustomization of it

The test API server enforces RBAC for impersonated requests; a second one is the spoke; the
registry is Debian's docker-registry; the Secret is encrypted by the real sops."""

from __future__ import annotations

import base64
import json
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from herald.bus import Delivery, RetryLater
from herald.messages import RECONCILE_QUEUE, ReconcileRequest
from herald.fleet import Fleet
from tests.fixtures_herald import Repo
from tests.kubeapi import KubeAPIServer
from tests.registry import Registry, push_flux_artifact
from tests.sops import age_keygen, sops_encrypt, tools_missing
from tests.test_fleet import CLUSTER_KUSTOMIZATION, bootstrap_request, fleet_worker, gotk_sync  # noqa: F401
from tests.test_honest_runs import drain_events
from tests.test_kubeapi_rbac import binding, service_account
from tests.test_oci_source import registry  # noqa: F401 (the fixture)


def kustomization(name: str, path: str, **spec: Any) -> str:
    """A Kustomization as fleets write them: no namespace, interval or prune of its own."""
    return json.dumps({"apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
                       "metadata": {"name": name},
                       "spec": {"path": path, "sourceRef": {"kind": "GitRepository", "name": "flux-system"},
                                **spec}}) + "\n"


def doc(obj: dict[str, Any]) -> str:
    return json.dumps(obj) + "\n"


WEB = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop, labels: {cluster: "${cluster_name}"}}
spec:
  replicas: ${replicas:=2}
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: "ghcr.io/acme/web:1.0.0"}]}
"""

DB_SECRET = b"apiVersion: v1\nkind: Secret\nmetadata: {name: db, namespace: shop}\nstringData: {password: s3cr3t-p4ss}\n"


@pytest.fixture
def spoke() -> Iterator[KubeAPIServer]:
    server = KubeAPIServer().start()
    try:
        yield server
    finally:
        server.stop()


def run_until_quiet(worker, first: ReconcileRequest, limit: int = 30) -> list[tuple[str, str, str]]:
    """Handle `first` and every request the runs ask for; a dependency not ready yet is asked
    again after the others, as the bus's retry would. (kind, name, outcome) per handling."""
    pending: list[ReconcileRequest] = [first]
    done: list[tuple[str, str, str]] = []
    while pending and len(done) < limit:
        req = pending.pop(0)
        try:
            worker.handle(Delivery(RECONCILE_QUEUE, req.to_json(), req.id))
            done.append((req.kind, req.name, "ran"))
        except RetryLater:
            done.append((req.kind, req.name, "retry"))
            pending.append(req)
        while worker.bus.depth(RECONCILE_QUEUE):
            stop = threading.Event()

            def take(d: Delivery, stop: threading.Event = stop) -> None:
                pending.append(ReconcileRequest.from_json(d.body))
                stop.set()

            worker.bus.consume(RECONCILE_QUEUE, take, stop)
    return done


def test_a_fleet_of_every_kind_reconciles_from_its_bootstrap_file(
        tmp_path: Path, repo: Repo, kube_api: KubeAPIServer, kubeconfig: Path, spoke: KubeAPIServer,
        registry: Registry, fleet_worker: Callable[..., Any]) -> None:  # noqa: F811
    why = tools_missing()
    if why:
        pytest.fail(f"sops and age-keygen are needed: {why}")
    key = age_keygen()
    # Out of band, as Flux's guides do it: the age key, the spoke's kubeconfig, RBAC's roles.
    kube_api.add_default_cluster_roles()
    kube_api.apply_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "flux-system"}})
    kube_api.apply_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-b"}})
    for name, data in (("sops-age", {"age.agekey": key.file}),
                       ("spoke-1", {"value": spoke.write_kubeconfig(tmp_path / "spoke").read_text()})):
        kube_api.apply_object({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name,
                                                                                  "namespace": "flux-system"},
                               "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}})
    chart_digest = push_flux_artifact(registry, "fleet/charts", "1.2.0", {"deploy/chart.yaml": doc(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "chart", "namespace": "default"},
         "data": {"from": "oci"}}).encode()})

    encrypted = sops_encrypt(DB_SECRET, [key.recipient], input_type="yaml",
                             encrypted_regex="^(data|stringData)$").decode()
    cluster = CLUSTER_KUSTOMIZATION.replace("  - apps.yaml\n", "".join(
        f"  - {f}\n" for f in ("infrastructure.yaml", "apps.yaml", "tenants.yaml", "edge.yaml", "charts.yaml")))
    sha = repo.commit({
        "clusters/prod/flux-system/gotk-sync.yaml": gotk_sync(repo.url),
        "clusters/prod/flux-system/kustomization.yaml": "resources: [gotk-sync.yaml]\n",
        "clusters/prod/kustomization.yaml": cluster,
        "clusters/prod/infrastructure.yaml": kustomization("infrastructure", "./infrastructure", wait=True),
        "clusters/prod/apps.yaml": kustomization(
            "apps", "./apps/prod", dependsOn=[{"name": "infrastructure"}],
            postBuild={"substituteFrom": [{"kind": "ConfigMap", "name": "cluster-vars"},
                                          {"kind": "Secret", "name": "cluster-secrets", "optional": True}]},
            decryption={"provider": "sops", "secretRef": {"name": "sops-age"}}),
        "clusters/prod/tenants.yaml": kustomization("tenants", "./tenants"),
        "clusters/prod/edge.yaml": kustomization("edge", "./edge",
                                                 kubeConfig={"secretRef": {"name": "spoke-1"}}),
        "clusters/prod/charts.yaml": doc({
            "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "OCIRepository", "metadata": {"name": "charts"},
            "spec": {"url": f"oci://{registry.host}/fleet/charts", "insecure": True, "interval": "5m",
                     "ref": {"semver": ">=1.0.0"}}}) + "---\n" + json.dumps({
            "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization", "metadata": {"name": "charts"},
            "spec": {"path": "./deploy", "sourceRef": {"kind": "OCIRepository", "name": "charts"}}}) + "\n",
        "infrastructure/cluster-vars.yaml": doc({"apiVersion": "v1", "kind": "ConfigMap",
                                                 "metadata": {"name": "cluster-vars", "namespace": "flux-system"},
                                                 "data": {"cluster_name": "prod-1"}}),
        "apps/base/kustomization.yaml": "resources: [namespace.yaml, web.yaml, db.enc.yaml]\n",
        "apps/base/namespace.yaml": "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n",
        "apps/base/web.yaml": WEB,
        "apps/base/db.enc.yaml": encrypted,
        "apps/prod/kustomization.yaml": "resources: [../base]\n",
        "tenants/team-a/kustomization.yaml": textwrap.dedent("""\
            namespace: team-a
            resources: [namespace.yaml, rbac.yaml, sync.yaml]
            """),
        "tenants/team-a/namespace.yaml": "apiVersion: v1\nkind: Namespace\nmetadata: {name: team-a}\n",
        "tenants/team-a/rbac.yaml": doc({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "flux"}})
        + "---\n" + doc(binding("flux-edit", "team-a", "ClusterRole", "edit", service_account("flux", "team-a"))),
        "tenants/team-a/sync.yaml": json.dumps({
            "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization", "metadata": {"name": "apps"},
            "spec": {"path": "./tenants/team-a/apps", "serviceAccountName": "flux",
                     "sourceRef": {"kind": "GitRepository", "name": "flux-system", "namespace": "flux-system"},
                     "interval": "5m", "prune": True}}) + "\n",
        "tenants/team-a/apps/mine.yaml": doc({"apiVersion": "v1", "kind": "ConfigMap",
                                              "metadata": {"name": "mine", "namespace": "team-a"}}),
        "tenants/team-a/apps/theirs.yaml": doc({"apiVersion": "v1", "kind": "ConfigMap",
                                                "metadata": {"name": "theirs", "namespace": "team-b"}}),
        "edge/site.yaml": doc({"apiVersion": "v1", "kind": "ConfigMap",
                               "metadata": {"name": "site", "namespace": "default"}, "data": {"site": "edge"}}),
    }, "the whole fleet")
    bootstrap = tmp_path / "gotk-sync.yaml"
    bootstrap.write_text(gotk_sync(repo.url))
    worker, fleet = fleet_worker(bootstrap)

    run_until_quiet(worker, bootstrap_request())
    events = drain_events(worker.bus)
    outcome = {(e["involvedObject"]["namespace"], e["involvedObject"]["name"]): (e["reason"], e["message"])
               for e in events if e["involvedObject"]["kind"] == "Kustomization" and e["reason"] != "Progressing"}

    # every Kustomization the renders hold is configuration, with what the parent gave it
    assert set(fleet.config.kustomizations) == {("flux-system", n) for n in (
        "flux-system", "infrastructure", "apps", "tenants", "edge", "charts")} | {("team-a", "apps")}
    assert all(k.interval == 300.0 and k.prune for k in fleet.config.kustomizations.values()
               if k.meta.name != "flux-system")
    # apps: after its dependency, substituted from the ConfigMap infrastructure applied, decrypted
    assert outcome[("flux-system", "apps")][0] == "ReconciliationSucceeded", outcome
    web = kube_api.get_object("apps/v1", "Deployment", "shop", "web") or {}
    assert web["metadata"]["labels"]["cluster"] == "prod-1" and web["spec"]["replicas"] == 2
    db = kube_api.get_object("v1", "Secret", "shop", "db") or {}
    assert base64.b64decode(db["data"]["password"]) == b"s3cr3t-p4ss"
    # the tenant: its own namespace as its ServiceAccount, refused in team-b, never with Herald's rights
    assert outcome[("team-a", "apps")][0] == "ReconciliationFailed"
    assert 'User "system:serviceaccount:team-a:flux" cannot' in outcome[("team-a", "apps")][1]
    assert kube_api.get_object("v1", "ConfigMap", "team-b", "theirs") is None
    # the spoke got the edge site, the hub did not
    assert (spoke.get_object("v1", "ConfigMap", "default", "site") or {}).get("data") == {"site": "edge"}
    assert kube_api.get_object("v1", "ConfigMap", "default", "site") is None
    # the OCI artifact, at source-controller's revision
    charts = next(e for e in events if e["involvedObject"]["name"] == "charts"
                  and e["reason"] == "ReconciliationSucceeded")
    assert charts["metadata"]["revision"] == f"1.2.0@{chart_digest}"
    assert kube_api.get_object("v1", "ConfigMap", "default", "chart") is not None
    # nothing of the encrypted Secret, or the age key, in any event
    assert not [e for e in events if "s3cr3t" in e["message"] or "AGE-SECRET-KEY" in e["message"]]
