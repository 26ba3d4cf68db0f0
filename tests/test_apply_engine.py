"""The apply engine against real Git repositories and the test API server.

Each scenario pushes commits to a real repository, runs the reconciler on it as the worker
would, and checks both the event (Flux's reasons and message shapes) and what the API
server now holds.
"""

from __future__ import annotations

import json
import logging
import re
import textwrap
import time
from pathlib import Path

import pytest

from herald import config
from herald.bus import Delivery, open_bus
from herald.messages import RECONCILE_QUEUE, ReconcileRequest
from reconciler.worker import Reconciler, RetryLater
from tests.fixtures_herald import WEB_MANIFESTS, Repo

FINISHED = re.compile(r"Reconciliation finished in \d+(\.\d+)?m?s, next run in 10m0s")
FAILED = re.compile(r"Reconciliation failed after \d+(\.\d+)?m?s, next try in (10m0s|\d+s)")
OWNER = {"kustomize.toolkit.fluxcd.io/name": "app", "kustomize.toolkit.fluxcd.io/namespace": "flux-system"}

CRD = """\
    apiVersion: apiextensions.k8s.io/v1
    kind: CustomResourceDefinition
    metadata: {name: widgets.example.com}
    spec:
      group: example.com
      scope: Namespaced
      names: {plural: widgets, singular: widget, kind: Widget}
      versions:
        - name: v1
          served: true
          storage: true
          schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
    """

WIDGET = """\
    apiVersion: example.com/v1
    kind: Widget
    metadata: {name: gear, namespace: shop}
    spec: {teeth: 12}
    """


def kustomization(name: str, path: str, **spec: object) -> str:
    fields = {"interval": "10m", "path": path, "prune": True,
              "sourceRef": {"kind": "GitRepository", "name": "app"}, **spec}
    return "---\n" + json.dumps({"apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
                                 "metadata": {"name": name, "namespace": "flux-system"}, "spec": fields}) + "\n"


def write_herald_config(path: Path, repo: Repo, *kustomizations: str) -> Path:
    text = textwrap.dedent(f"""\
        apiVersion: source.toolkit.fluxcd.io/v1
        kind: GitRepository
        metadata: {{name: app, namespace: flux-system}}
        spec:
          interval: 10m
          url: {repo.url}
          ref: {{branch: main}}
        """)
    path.write_text(text + "".join(kustomizations or (kustomization("app", "./deploy"),)))
    return path


@pytest.fixture
def make_reconciler(tmp_path: Path, repo: Repo, kubeconfig: Path, monkeypatch: pytest.MonkeyPatch):
    """Build a Reconciler (a worker) for a configuration; each call is a fresh worker."""
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    buses = []

    def make(*kustomizations: str, state: str = "state") -> Reconciler:
        cfg = config.load([write_herald_config(tmp_path / f"herald-{len(buses)}.yaml", repo, *kustomizations)])
        bus = open_bus(None, tmp_path / state)
        buses.append(bus)
        return Reconciler(cfg, bus, tmp_path / state, poll_interval=0.1)

    yield make
    for bus in buses:
        bus.close()


def request(kind: str = "GitRepository", name: str = "app") -> ReconcileRequest:
    return ReconcileRequest(kind=kind, name=name, namespace="flux-system")


def lines(message: str) -> list[str]:
    """The message without its last line, which must be Flux's closing line."""
    *body, last = message.splitlines()
    assert FINISHED.fullmatch(last) or FAILED.fullmatch(last), last
    return body


def only_event(reconciler: Reconciler, req: ReconcileRequest | None = None):
    outcome = reconciler.reconcile(req or request())
    [event] = outcome.events
    return event, outcome


def inventory(kube_api, name: str = "app") -> dict[str, str]:
    cm = kube_api.get_object("v1", "ConfigMap", "flux-system", f"herald-inventory-{name}")
    assert cm is not None, "no inventory ConfigMap"
    return cm["data"]


def inventory_ids(kube_api, name: str = "app") -> list[str]:
    return [e["id"] for e in json.loads(inventory(kube_api, name)["inventory"])]


def writes(kube_api) -> list[str]:
    """Paths of the requests that changed something (not dry runs, not reads)."""
    return [r.path for r in kube_api.requests if r.method in ("PATCH", "PUT", "POST", "DELETE")
            and r.query.get("dryRun") != "All"]


# --------------------------------------------------------------------------- #
# Staged apply
# --------------------------------------------------------------------------- #

def test_a_crd_and_its_custom_resource_in_one_commit_are_applied_in_stages(make_reconciler, repo: Repo,
                                                                           kube_api) -> None:
    repo.commit({"deploy/crd.yaml": CRD, "deploy/widget.yaml": WIDGET}, "add widgets")
    event, outcome = only_event(make_reconciler())
    assert (event.severity, event.reason) == ("info", "ReconciliationSucceeded"), event.message
    assert lines(event.message) == [
        "CustomResourceDefinition/widgets.example.com created",
        "Namespace/shop created",
        "Service/shop/web created",
        "Deployment/shop/web created",
        "Widget/shop/gear created",
    ]
    assert event.metadata == {"revision": f"main@sha1:{repo.head}", "commit_status": "update"}
    assert outcome.retry == ""
    widget = kube_api.get_object("example.com/v1", "Widget", "shop", "gear")
    assert widget["spec"] == {"teeth": 12}
    assert widget["metadata"]["labels"] == OWNER
    # The CRD went first and the custom resource was only dry-run once its kind was served.
    paths = writes(kube_api)
    crd_at = paths.index("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com")
    assert crd_at < paths.index("/apis/example.com/v1/namespaces/shop/widgets/gear")
    assert inventory_ids(kube_api) == [
        "_widgets.example.com_apiextensions.k8s.io_CustomResourceDefinition", "_shop__Namespace",
        "shop_web__Service", "shop_web_apps_Deployment", "shop_gear_example.com_Widget"]


def test_every_applied_object_carries_the_owner_labels(make_reconciler, kube_api) -> None:
    only_event(make_reconciler())
    for api_version, kind, ns, name in (("v1", "Namespace", None, "shop"), ("v1", "Service", "shop", "web"),
                                        ("apps/v1", "Deployment", "shop", "web")):
        labels = kube_api.get_object(api_version, kind, ns, name)["metadata"]["labels"]
        assert OWNER.items() <= labels.items(), (kind, labels)
    data = inventory(kube_api)
    assert (data["ready"], data["reason"]) == ("True", "ReconciliationSucceeded")
    assert data["lastAppliedRevision"] == data["lastAttemptedRevision"]


# --------------------------------------------------------------------------- #
# Validation before anything changes
# --------------------------------------------------------------------------- #

def test_invalid_objects_change_nothing_and_are_all_listed(make_reconciler, repo: Repo, kube_api) -> None:
    only_event(make_reconciler())
    versions = {(o["kind"], o["metadata"]["name"]): o["metadata"]["resourceVersion"] for o in kube_api.objects()}
    web = (repo.work / "deploy" / "web.yaml").read_text().replace("replicas: 2", "replicas: 5")
    repo.commit({
        "deploy/web.yaml": web,  # a valid change, which must not be applied either
        "deploy/bad.yaml": """\
            apiVersion: apps/v1
            kind: Deployment
            metadata: {name: api, namespace: shop}
            spec:
              selector: {matchLabels: {app: api}}
              template:
                metadata: {labels: {app: not-api}}
                spec: {containers: [{name: api, image: api:1}]}
            ---
            apiVersion: v1
            kind: ConfigMap
            metadata: {name: Settings_, namespace: shop}
            data: {a: b}
            ---
            apiVersion: v1
            kind: ConfigMap
            metadata: {name: elsewhere, namespace: nowhere}
            """}, "three mistakes")
    event, outcome = only_event(make_reconciler())
    assert (event.severity, event.reason) == ("error", "ReconciliationFailed")
    body = lines(event.message)
    assert body[0].startswith('ConfigMap/nowhere/elsewhere not found: namespaces "nowhere" not found')
    assert body[1].startswith('ConfigMap/shop/Settings_ dry-run failed (Invalid): ConfigMap "Settings_" is invalid: '
                              'metadata.name: Invalid value: "Settings_": a lowercase RFC 1123 subdomain')
    assert body[2].startswith('Deployment/shop/api dry-run failed (Invalid): Deployment.apps "api" is invalid: '
                              'spec.template.metadata.labels: Invalid value: ')
    assert len(body) == 3
    assert event.metadata["commit_status"] == "update"
    assert outcome.retry == ""  # a refusal does not heal by retrying
    after = {(o["kind"], o["metadata"]["name"]): o["metadata"]["resourceVersion"] for o in kube_api.objects()}
    assert {k: v for k, v in after.items() if k[1] != "herald-inventory-app"} == \
           {k: v for k, v in versions.items() if k[1] != "herald-inventory-app"}
    assert kube_api.get_object("apps/v1", "Deployment", "shop", "web")["spec"]["replicas"] == 2
    data = inventory(kube_api)
    assert (data["ready"], data["reason"]) == ("False", "ReconciliationFailed")


def test_an_immutable_field_fails_with_how_to_allow_recreation(make_reconciler, repo: Repo, kube_api) -> None:
    only_event(make_reconciler())
    uid = kube_api.get_object("apps/v1", "Deployment", "shop", "web")["metadata"]["uid"]
    web = (repo.work / "deploy" / "web.yaml").read_text()
    repo.commit({"deploy/web.yaml": web.replace("{app: web}", "{app: web2}")}, "relabel")
    event, _ = only_event(make_reconciler())
    assert (event.severity, event.reason) == ("error", "ReconciliationFailed")
    [line] = lines(event.message)
    assert line.startswith('Deployment/shop/web dry-run failed (Invalid): Deployment.apps "web" is invalid: '
                           'spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string{"app":"web2"}, '
                           'MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: field is immutable')
    assert line.endswith("field is immutable; changing it needs the object deleted and recreated: annotate it with "
                         "kustomize.toolkit.fluxcd.io/force: enabled (or herald.dev/force: enabled) to let Herald do that")
    live = kube_api.get_object("apps/v1", "Deployment", "shop", "web")
    assert (live["metadata"]["uid"], live["spec"]["selector"]) == (uid, {"matchLabels": {"app": "web"}})


def test_an_immutable_field_with_the_force_annotation_recreates_the_object(make_reconciler, repo: Repo,
                                                                           kube_api) -> None:
    only_event(make_reconciler())
    uid = kube_api.get_object("apps/v1", "Deployment", "shop", "web")["metadata"]["uid"]
    web = (repo.work / "deploy" / "web.yaml").read_text().replace("{app: web}", "{app: web2}").replace(
        "  labels: {app: web2}\n", "  labels: {app: web2}\n  annotations: {kustomize.toolkit.fluxcd.io/force: enabled}\n",
        1)
    repo.commit({"deploy/web.yaml": web}, "relabel, forced")
    event, _ = only_event(make_reconciler())
    assert (event.severity, event.reason) == ("info", "ReconciliationSucceeded"), event.message
    assert "Deployment/shop/web recreated (immutable field changed)" in lines(event.message)
    live = kube_api.get_object("apps/v1", "Deployment", "shop", "web")
    assert live["metadata"]["uid"] != uid
    assert live["spec"]["selector"] == {"matchLabels": {"app": "web2"}}


def test_herald_s_own_force_annotation_is_honoured_too(make_reconciler, repo: Repo, kube_api) -> None:
    repo.commit({"deploy/job.yaml": """\
        apiVersion: batch/v1
        kind: Job
        metadata: {name: migrate, namespace: shop, annotations: {herald.dev/force: enabled}}
        spec:
          template:
            spec: {restartPolicy: Never, containers: [{name: m, image: "migrate:1"}]}
        """})
    only_event(make_reconciler())
    repo.commit({"deploy/job.yaml": (repo.work / "deploy" / "job.yaml").read_text().replace("migrate:1", "migrate:2")})
    event, _ = only_event(make_reconciler())
    assert "Job/shop/migrate recreated (immutable field changed)" in lines(event.message)
    job = kube_api.get_object("batch/v1", "Job", "shop", "migrate")
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == "migrate:2"


# --------------------------------------------------------------------------- #
# Prune
# --------------------------------------------------------------------------- #

def _add_configmaps(repo: Repo) -> None:
    repo.commit({"deploy/cms.yaml": """\
        apiVersion: v1
        kind: ConfigMap
        metadata: {name: old, namespace: shop}
        data: {a: b}
        ---
        apiVersion: v1
        kind: ConfigMap
        metadata:
          name: keep
          namespace: shop
          annotations: {kustomize.toolkit.fluxcd.io/prune: disabled}
        data: {a: b}
        """}, "two configmaps")


def test_a_removed_object_is_pruned_and_prune_disabled_is_kept(make_reconciler, repo: Repo, kube_api) -> None:
    _add_configmaps(repo)
    only_event(make_reconciler())
    assert {"shop_old__ConfigMap", "shop_keep__ConfigMap"} <= set(inventory_ids(kube_api))
    (repo.work / "deploy" / "cms.yaml").unlink()
    repo.commit({}, "remove both")
    event, _ = only_event(make_reconciler())
    assert (event.severity, event.reason) == ("info", "ReconciliationSucceeded")
    assert lines(event.message) == ["Namespace/shop unchanged", "Service/shop/web unchanged",
                                    "Deployment/shop/web unchanged", "ConfigMap/shop/old deleted"]
    assert kube_api.get_object("v1", "ConfigMap", "shop", "old") is None
    assert kube_api.get_object("v1", "ConfigMap", "shop", "keep") is not None
    assert not {"shop_old__ConfigMap", "shop_keep__ConfigMap"} & set(inventory_ids(kube_api))


def test_without_prune_removed_objects_stay(make_reconciler, repo: Repo, kube_api) -> None:
    _add_configmaps(repo)
    only_event(make_reconciler(kustomization("app", "./deploy", prune=False)))
    (repo.work / "deploy" / "cms.yaml").unlink()
    repo.commit({}, "remove both")
    event, _ = only_event(make_reconciler(kustomization("app", "./deploy", prune=False)))
    assert "ConfigMap/shop/old deleted" not in event.message
    assert kube_api.get_object("v1", "ConfigMap", "shop", "old") is not None


def test_a_failing_delete_is_kept_in_the_inventory_and_retried_next_time(make_reconciler, repo: Repo,
                                                                         kube_api) -> None:
    _add_configmaps(repo)
    only_event(make_reconciler())
    (repo.work / "deploy" / "cms.yaml").unlink()
    repo.commit({}, "remove both")
    kube_api.fail_next("ConfigMap", "old", "shop", code=503, message="etcdserver: request timed out",
                       verbs=("delete",))
    event, outcome = only_event(make_reconciler())
    assert (event.severity, event.reason) == ("error", "PruneFailed")
    assert "ConfigMap/shop/old delete failed (ServiceUnavailable): etcdserver: request timed out" in lines(event.message)
    assert outcome.retry  # a 503 is worth a retry
    assert kube_api.get_object("v1", "ConfigMap", "shop", "old") is not None
    assert "shop_old__ConfigMap" in inventory_ids(kube_api)
    assert inventory(kube_api)["reason"] == "PruneFailed"

    event, outcome = only_event(make_reconciler())
    assert (event.severity, event.reason) == ("info", "ReconciliationSucceeded")
    assert "ConfigMap/shop/old deleted" in lines(event.message)
    assert kube_api.get_object("v1", "ConfigMap", "shop", "old") is None
    assert "shop_old__ConfigMap" not in inventory_ids(kube_api)


def test_the_inventory_survives_a_worker_restart(make_reconciler, repo: Repo, kube_api) -> None:
    _add_configmaps(repo)
    only_event(make_reconciler(state="worker-1"))
    (repo.work / "deploy" / "cms.yaml").unlink()
    repo.commit({}, "remove both")
    # Another worker, with a state directory of its own, knows what the first one applied.
    event, _ = only_event(make_reconciler(state="worker-2"))
    assert "ConfigMap/shop/old deleted" in lines(event.message)
    assert kube_api.get_object("v1", "ConfigMap", "shop", "old") is None


def test_an_object_taken_over_by_another_kustomization_is_not_pruned(make_reconciler, repo: Repo, kube_api) -> None:
    _add_configmaps(repo)
    only_event(make_reconciler())
    kube_api.apply_object({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {
        "name": "old", "namespace": "shop", "labels": {"kustomize.toolkit.fluxcd.io/name": "other"}}},
        field_manager="herald")
    (repo.work / "deploy" / "cms.yaml").unlink()
    repo.commit({}, "remove both")
    event, _ = only_event(make_reconciler())
    assert "ConfigMap/shop/old deleted" not in event.message
    assert kube_api.get_object("v1", "ConfigMap", "shop", "old") is not None


# --------------------------------------------------------------------------- #
# Health (spec.wait)
# --------------------------------------------------------------------------- #

def test_wait_reports_a_rollout_that_does_not_finish_within_the_timeout(make_reconciler, kube_api) -> None:
    kube_api.set_rollout("progressing", kind="Deployment")
    started = time.monotonic()
    event, outcome = only_event(make_reconciler(kustomization("app", "./deploy", wait=True, timeout="1s")))
    assert time.monotonic() - started < 10
    assert (event.severity, event.reason) == ("error", "HealthCheckFailed")
    body = lines(event.message)
    assert body[:3] == ["Namespace/shop created", "Service/shop/web created", "Deployment/shop/web created"]
    assert re.fullmatch(r"health check failed after 1(\.\d+)?s: timeout waiting for:", body[3])
    assert body[4:] == ["Deployment/shop/web status: 'InProgress' (Available: 0/2)"]
    assert event.metadata["commit_status"] == "update"
    assert outcome.retry
    data = inventory(kube_api)
    assert (data["ready"], data["reason"], data["lastAppliedRevision"]) == ("False", "HealthCheckFailed", "")
    assert "shop_web_apps_Deployment" in inventory_ids(kube_api)  # recorded although unhealthy


def test_wait_passes_once_the_rollout_finishes(make_reconciler, kube_api) -> None:
    kube_api.set_rollout("complete", after=0.5, kind="Deployment")
    event, outcome = only_event(make_reconciler(kustomization("app", "./deploy", wait=True, timeout="10s")))
    assert (event.severity, event.reason) == ("info", "ReconciliationSucceeded"), event.message
    body = lines(event.message)
    assert body[:3] == ["Namespace/shop created", "Service/shop/web created", "Deployment/shop/web created"]
    assert re.fullmatch(r"Health check passed in \d+(\.\d+)?m?s", body[3])
    assert outcome.retry == ""
    assert kube_api.get_object("apps/v1", "Deployment", "shop", "web")["status"]["availableReplicas"] == 2


def test_wait_fails_early_on_a_failed_job(make_reconciler, repo: Repo, kube_api) -> None:
    repo.commit({"deploy/job.yaml": """\
        apiVersion: batch/v1
        kind: Job
        metadata: {name: migrate, namespace: shop}
        spec:
          backoffLimit: 2
          template:
            spec: {restartPolicy: Never, containers: [{name: m, image: "migrate:1"}]}
        """})
    kube_api.set_rollout("failed", kind="Job")
    started = time.monotonic()
    event, _ = only_event(make_reconciler(kustomization("app", "./deploy", wait=True, timeout="1m")))
    assert time.monotonic() - started < 10, "a failed Job must not wait for the timeout"
    assert event.reason == "HealthCheckFailed"
    assert "failed early due to stalled resources:" in event.message
    assert ("Job/shop/migrate status: 'Failed' (BackoffLimitExceeded: Job has reached the specified backoff limit)"
            in lines(event.message))


# --------------------------------------------------------------------------- #
# dependsOn
# --------------------------------------------------------------------------- #

INFRA = {"infra/quota.yaml": """\
    apiVersion: v1
    kind: ConfigMap
    metadata: {name: platform, namespace: default}
    data: {tier: gold}
    """}


def test_depends_on_waits_for_the_dependency_then_applies(make_reconciler, repo: Repo, kube_api) -> None:
    repo.commit(INFRA, "infra")
    kustomizations = (kustomization("app", "./deploy", dependsOn=[{"name": "infra"}]),
                      kustomization("infra", "./infra"))
    reconciler = make_reconciler(*kustomizations)

    event, outcome = only_event(reconciler, request("Kustomization", "app"))
    assert (event.severity, event.reason) == ("info", "DependencyNotReady")
    assert event.message == ("Dependencies do not meet ready condition (dependency 'flux-system/infra' is not "
                             "ready), retrying in 30s")
    assert event.metadata == {"revision": f"main@sha1:{repo.head}"}  # no commit status for a wait
    assert outcome.retry and outcome.retry_after == 30.0  # kustomize-controller's --requeue-dependency
    assert kube_api.get_object("apps/v1", "Deployment", "shop", "web") is None
    assert inventory(kube_api)["reason"] == "DependencyNotReady"

    # A push reconciles both, the dependency first, so the dependent need not wait.
    outcome = reconciler.reconcile(request())
    assert [(e.involvedObject["name"], e.reason) for e in outcome.events] == [
        ("infra", "ReconciliationSucceeded"), ("app", "ReconciliationSucceeded")]
    assert kube_api.get_object("apps/v1", "Deployment", "shop", "web") is not None


def test_the_bus_handler_publishes_then_asks_for_a_retry_after_retry_interval(make_reconciler, repo: Repo) -> None:
    repo.commit(INFRA, "infra")
    reconciler = make_reconciler(kustomization("app", "./deploy", dependsOn=[{"name": "infra"}], retryInterval="30s"),
                                 kustomization("infra", "./infra"))
    published = []
    reconciler.bus.publish = lambda queue, body, headers=None: published.append((queue, body))  # type: ignore[method-assign]
    with pytest.raises(RetryLater) as raised:
        reconciler.handle(Delivery(RECONCILE_QUEUE, request("Kustomization", "app").to_json()))
    assert raised.value.delay == 30.0
    assert str(raised.value) == "dependency 'flux-system/infra' is not ready"
    [(queue, body)] = published
    assert queue == "herald.events" and b"DependencyNotReady" in body and b"retrying in 30s" in body


def test_depends_on_wants_the_dependency_at_the_same_revision(make_reconciler, repo: Repo) -> None:
    repo.commit(INFRA, "infra")
    reconciler = make_reconciler(kustomization("app", "./deploy", dependsOn=[{"name": "infra"}]),
                                 kustomization("infra", "./infra"))
    reconciler.reconcile(request())
    repo.commit({"deploy/extra.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: extra, namespace: shop}\n"})
    event, _ = only_event(reconciler, request("Kustomization", "app"))
    assert event.reason == "DependencyNotReady"
    assert "dependency 'flux-system/infra' revision is not up to date" in event.message
    event, _ = only_event(reconciler, request("Kustomization", "infra"))
    assert event.reason == "ReconciliationSucceeded"
    event, _ = only_event(reconciler, request("Kustomization", "app"))
    assert event.reason == "ReconciliationSucceeded"
    assert "ConfigMap/shop/extra created" in lines(event.message)


def test_an_unhealthy_dependency_holds_its_dependents_back(make_reconciler, repo: Repo, kube_api) -> None:
    repo.commit({"infra/web.yaml": (repo.work / "deploy" / "web.yaml").read_text().replace("shop", "default")})
    reconciler = make_reconciler(kustomization("app", "./deploy", dependsOn=[{"name": "infra"}]),
                                 kustomization("infra", "./infra", wait=True, timeout="1s"))
    kube_api.set_rollout("progressing", kind="Deployment", namespace="default")
    outcome = reconciler.reconcile(request())
    assert [(e.involvedObject["name"], e.reason) for e in outcome.events] == [
        ("infra", "HealthCheckFailed"), ("app", "DependencyNotReady")]


# --------------------------------------------------------------------------- #
# Drift and no-ops
# --------------------------------------------------------------------------- #

def test_drift_is_corrected_and_reported(make_reconciler, kube_api) -> None:
    reconciler = make_reconciler()
    only_event(reconciler)
    # Someone scales by hand and edits the Service.
    kube_api.apply_object({"apiVersion": "apps/v1", "kind": "Deployment",
                           "metadata": {"name": "web", "namespace": "shop"}, "spec": {"replicas": 7}},
                          field_manager="kubectl-edit")
    kube_api.apply_object({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "shop"},
                           "spec": {"selector": {"app": "other"}}}, field_manager="kubectl-edit")
    event, _ = only_event(reconciler)
    assert lines(event.message) == ["Namespace/shop unchanged", "Service/shop/web configured (drift corrected)",
                                    "Deployment/shop/web configured (drift corrected)"]
    assert kube_api.get_object("apps/v1", "Deployment", "shop", "web")["spec"]["replicas"] == 2
    assert kube_api.get_object("v1", "Service", "shop", "web")["spec"]["selector"] == {"app": "web"}


def test_an_object_deleted_by_hand_is_recreated_as_drift(make_reconciler, kube_api) -> None:
    reconciler = make_reconciler()
    only_event(reconciler)
    with kube_api.cluster.lock:
        rtype = kube_api.cluster.type_for("v1", "Service")
        kube_api.cluster.delete(rtype, "shop", "web")
    event, _ = only_event(reconciler)
    assert "Service/shop/web created (drift corrected)" in lines(event.message)


def test_an_unchanged_reapply_writes_nothing_even_after_status_writes(make_reconciler, kube_api) -> None:
    reconciler = make_reconciler()
    only_event(reconciler)
    # A controller's status write lands between two reconciles.
    kube_api.apply_object({"apiVersion": "apps/v1", "kind": "Deployment",
                           "metadata": {"name": "web", "namespace": "shop"},
                           "status": {"observedGeneration": 1, "replicas": 2, "readyReplicas": 1}},
                          field_manager="kube-controller-manager", subresource="status")
    kube_api.requests.clear()
    event, _ = only_event(reconciler)
    assert lines(event.message) == ["Namespace/shop unchanged", "Service/shop/web unchanged",
                                    "Deployment/shop/web unchanged"]
    # Only the inventory's own record was written.
    assert writes(kube_api) == ["/api/v1/namespaces/flux-system/configmaps/herald-inventory-app"]


def dry_runs(kube_api) -> list[str]:
    return [r.path for r in kube_api.requests if r.query.get("dryRun") == "All"]


def test_an_object_unchanged_in_git_and_in_the_cluster_is_not_dry_run_again(make_reconciler, kube_api) -> None:
    """Applying it could neither set nor remove a field: the dry-run could only say so."""
    reconciler = make_reconciler()
    only_event(reconciler)
    # Someone adds a label of their own: not Herald's to remove, as a dry-run would also say.
    kube_api.apply_object({"apiVersion": "v1", "kind": "Service",
                           "metadata": {"name": "web", "namespace": "shop", "labels": {"team": "shop"}}},
                          field_manager="kubectl-label")
    kube_api.requests.clear()
    event, _ = only_event(reconciler)
    assert lines(event.message) == ["Namespace/shop unchanged", "Service/shop/web unchanged",
                                    "Deployment/shop/web unchanged"]
    assert dry_runs(kube_api) == []
    assert kube_api.get_object("v1", "Service", "shop", "web")["metadata"]["labels"]["team"] == "shop"


def test_a_hand_edit_is_still_found_and_only_that_object_is_dry_run(make_reconciler, kube_api) -> None:
    reconciler = make_reconciler()
    only_event(reconciler)
    kube_api.apply_object({"apiVersion": "apps/v1", "kind": "Deployment",
                           "metadata": {"name": "web", "namespace": "shop"}, "spec": {"replicas": 1}},
                          field_manager="kubectl-scale")
    kube_api.requests.clear()
    event, _ = only_event(reconciler)
    assert lines(event.message) == ["Namespace/shop unchanged", "Service/shop/web unchanged",
                                    "Deployment/shop/web configured (drift corrected)"]
    assert dry_runs(kube_api) == ["/apis/apps/v1/namespaces/shop/deployments/web"]
    assert kube_api.get_object("apps/v1", "Deployment", "shop", "web")["spec"]["replicas"] == 2


def test_a_field_removed_from_git_is_removed_from_the_cluster(make_reconciler, repo: Repo, kube_api) -> None:
    """Every live field is still "covered" by the smaller manifest: only the digest in the
    inventory tells that Herald's last apply set more, so the dry-run must run."""
    reconciler = make_reconciler()
    only_event(reconciler)
    repo.commit({"deploy/web.yaml": re.sub(r"\n *labels: \{app: web\}", "", WEB_MANIFESTS["deploy/web.yaml"], count=1)},
                "drop the Deployment's label")
    event, _ = only_event(reconciler)
    assert "Deployment/shop/web configured" in lines(event.message)
    labels = kube_api.get_object("apps/v1", "Deployment", "shop", "web")["metadata"]["labels"]
    assert "app" not in labels and labels["kustomize.toolkit.fluxcd.io/name"] == "app"


def test_dry_run_unchanged_dry_runs_every_object_as_flux_does(make_reconciler, kube_api,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERALD_DRY_RUN_UNCHANGED", "true")
    reconciler = make_reconciler()
    only_event(reconciler)
    kube_api.requests.clear()
    event, _ = only_event(reconciler)
    assert all(line.endswith(" unchanged") for line in lines(event.message))
    assert len(dry_runs(kube_api)) == 3


@pytest.mark.parametrize(("want", "live", "covered"), [
    ({"a": 1}, {"a": 1, "b": 2}, True),
    ({"a": {"b": [1, {"c": "x"}]}}, {"a": {"b": [1, {"c": "x", "d": 0}]}}, True),
    ({"a": True}, {"a": 1}, False),  # True == 1 in Python, not in Kubernetes
    ({"a": 1}, {"a": 1.0}, False),
    ({"cpu": "0.5"}, {"cpu": "500m"}, False),  # the server normalised it: let the dry-run judge
    ({"a": [1]}, {"a": [1, 2]}, False),
    ({"a": None}, {}, False),
    ({"a": {}}, {}, False),
])
def test_what_counts_as_already_in_the_cluster(want, live, covered) -> None:
    from reconciler.apply import covers

    assert covers(want, live) is covered


# --------------------------------------------------------------------------- #
# Suspend
# --------------------------------------------------------------------------- #

def test_a_suspended_kustomization_is_skipped_and_says_so(make_reconciler, kube_api,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="herald.reconciler"):
        outcome = make_reconciler(kustomization("app", "./deploy", suspend=True)).reconcile(request())
    assert outcome.events == [] and outcome.retry == ""
    assert "Kustomization flux-system/app is suspended, skipped" in caplog.text
    assert kube_api.get_object("v1", "Namespace", None, "shop") is None
