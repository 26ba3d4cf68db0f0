"""The Kustomization fields that shape the build (issue 16), as Flux's generator applies them:
`patches` (strategic merge and JSON 6902, with target selectors), `images`, `components`,
`namePrefix`/`nameSuffix`, `targetNamespace`, and `commonMetadata` after the build. Each
scenario reconciles a folder without a kustomization.yaml (Flux generates one) with the real
reconciler against the test API server, and reads back what was applied."""

from __future__ import annotations

from pathlib import Path

from tests.fixtures_herald import Repo
from tests.kubeapi import KubeAPIServer
from tests.test_honest_runs import deliver, drain_events, finals, herald_config, kustomization, make_worker, push  # noqa: F401

NAMESPACE = "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n"
WEB = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, labels: {app: web}}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: ghcr.io/acme/web:1.0.0}]}
"""
SETTINGS = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {tier: base}\n"
MONITORING = """\
apiVersion: kustomize.config.k8s.io/v1alpha1
kind: Component
patches:
  - target: {kind: Deployment}
    patch: |
      - op: add
        path: /metadata/annotations
        value: {prometheus.io/scrape: "true"}
"""


def test_patches_images_components_and_names_shape_what_is_applied(
        make_worker, tmp_path: Path, repo: Repo, kube_api: KubeAPIServer) -> None:
    sha = repo.commit({"ns/namespace.yaml": NAMESPACE, "app/web.yaml": WEB, "app/settings.yaml": SETTINGS,
                       "components/monitoring/kustomization.yaml": MONITORING}, "the shop")
    spec = {
        "targetNamespace": "shop",
        "namePrefix": "prod-",
        "patches": [
            {"patch": "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec: {replicas: 3}\n"},
            {"target": {"kind": "ConfigMap", "name": "settings"},
             "patch": "- op: replace\n  path: /data/tier\n  value: gold\n"},
        ],
        "images": [{"name": "ghcr.io/acme/web", "newTag": "1.2.3"}],
        "components": ["../components/monitoring"],
        "commonMetadata": {"labels": {"team": "shop"}, "annotations": {"owner": "shop@acme.example"}},
    }
    worker = make_worker(herald_config(tmp_path / "herald.yaml", repo.url,
                                       kustomization("ns", "./ns"), kustomization("app", "./app", **spec)))
    deliver(worker, push(sha))
    assert sorted(finals(drain_events(worker.bus))) == [("Kustomization", "app", "ReconciliationSucceeded"),
                                                         ("Kustomization", "ns", "ReconciliationSucceeded")]
    web = kube_api.get_object("apps/v1", "Deployment", "shop", "prod-web") or {}
    assert web["spec"]["replicas"] == 3
    assert web["spec"]["template"]["spec"]["containers"][0]["image"] == "ghcr.io/acme/web:1.2.3"
    assert web["metadata"]["annotations"]["prometheus.io/scrape"] == "true"  # the component
    assert web["metadata"]["annotations"]["owner"] == "shop@acme.example"
    assert web["metadata"]["labels"]["team"] == "shop"
    assert web["spec"]["selector"] == {"matchLabels": {"app": "web"}}  # commonMetadata leaves selectors alone
    settings = kube_api.get_object("v1", "ConfigMap", "shop", "prod-settings") or {}
    assert settings["data"] == {"tier": "gold"} and settings["metadata"]["labels"]["team"] == "shop"
    assert kube_api.get_object("apps/v1", "Deployment", "shop", "web") is None


def test_a_patch_that_matches_nothing_or_is_malformed_fails_the_build_naming_the_field(
        make_worker, tmp_path: Path, repo: Repo, kube_api: KubeAPIServer) -> None:
    sha = repo.commit({"app/web.yaml": WEB}, "the web tier")
    worker = make_worker(herald_config(tmp_path / "herald.yaml", repo.url, kustomization(
        "app", "./app", patches=[{"patch": "- op: replace\n  path: /spec/replicas\n  value: 2\n"}])))
    deliver(worker, push(sha))
    [event] = [e for e in drain_events(worker.bus) if e["reason"] != "Progressing"]
    assert event["reason"] == "BuildFailed" and "spec.patches[0]" in event["message"]


JOB = """\
apiVersion: batch/v1
kind: Job
metadata: {name: migrate, namespace: default}
spec:
  template:
    spec:
      restartPolicy: Never
      containers: [{name: migrate, image: "ghcr.io/acme/migrate:%s"}]
"""


def test_force_recreates_an_object_whose_immutable_fields_changed(
        make_worker, tmp_path: Path, repo: Repo, kube_api: KubeAPIServer) -> None:
    sha = repo.commit({"jobs/migrate.yaml": JOB % "1"}, "the migration")
    plain = make_worker(herald_config(tmp_path / "plain.yaml", repo.url, kustomization("jobs", "./jobs")))
    deliver(plain, push(sha))
    drain_events(plain.bus)
    sha = repo.commit({"jobs/migrate.yaml": JOB % "2"}, "the next migration")
    deliver(plain, push(sha))  # a Job's template is immutable: without force, the apply fails and says how
    [event] = [e for e in drain_events(plain.bus) if e["reason"] != "Progressing"]
    assert event["reason"] == "ReconciliationFailed" and "kustomize.toolkit.fluxcd.io/force: enabled" in event["message"]

    forced = make_worker(herald_config(tmp_path / "forced.yaml", repo.url, kustomization("jobs", "./jobs", force=True)))
    deliver(forced, push(sha))
    [event] = [e for e in drain_events(forced.bus) if e["reason"] != "Progressing"]
    assert event["reason"] == "ReconciliationSucceeded" and "Job/default/migrate recreated" in event["message"]
    job = kube_api.get_object("batch/v1", "Job", "default", "migrate") or {}
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == "ghcr.io/acme/migrate:2"
