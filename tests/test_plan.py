"""Pull-request plans (issue 14): what a change would do to the cluster, found without writing.

Each scenario renders a folder with the reconciler's own renderer, applies a first version
with the reconciler's apply engine where the cluster should already hold something (so
that the inventory and the live objects are exactly what a reconcile leaves), then plans a
second version against the test API server and checks the plan and that nothing was written.
"""

from __future__ import annotations

import base64
import copy
import textwrap
from pathlib import Path
from typing import Any

import pytest
from kubernetes import config as k8s_config

from reconciler.apply import ApplyEngine
from reconciler.inventory import Inventory, owner_labels
from reconciler.kube import Cluster
from reconciler.plan import (
    CANNOT_PREVIEW,
    CREATE,
    DELETE,
    ERROR,
    LAST_APPLIED,
    RECREATE,
    STATUS_LIMIT,
    UNCHANGED,
    UPDATE,
    ObjectChange,
    Plan,
    clean,
    diff_object,
    mask_secret,
    plan_kustomization,
    summarize,
)
from reconciler.render import Manifest, render
from tests.kubeapi import KubeAPIServer

OWNER = owner_labels("app", "flux-system")
KEY = b"k" * 32

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

DEPLOYMENT = """\
    apiVersion: apps/v1
    kind: Deployment
    metadata: {name: web, namespace: default, labels: {app: web}}
    spec:
      replicas: 2
      selector: {matchLabels: {app: %s}}
      template:
        metadata: {labels: {app: %s}}
        spec:
          containers: [{name: web, image: "nginx:1.27"}]
    """


def configmap(name: str, **data: str) -> str:
    body = ", ".join(f"{k}: {v!r}" for k, v in data.items())
    return f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: default}}\ndata: {{{body}}}\n"


@pytest.fixture
def cluster(kubeconfig: Path) -> Cluster:
    return Cluster(k8s_config.new_client_from_config(config_file=str(kubeconfig)))


@pytest.fixture
def folder(tmp_path: Path):
    """Write a version of the Kustomization's folder and render it as the reconciler does."""
    counter = iter(range(1000))

    def make(files: dict[str, str], target_namespace: str = "") -> list[Manifest]:
        path = f"v{next(counter)}"
        for name, text in files.items():
            (tmp_path / path / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / path / name).write_text(textwrap.dedent(text))
        return render(tmp_path, path, target_namespace).manifests

    return make


def apply(cluster: Cluster, manifests: list[Manifest]) -> Inventory:
    """What a reconcile of this version leaves: the objects, and the inventory."""
    return ApplyEngine(cluster, OWNER, Inventory(), timeout=10, poll=0.05).apply(manifests).applied


def snapshot(kube_api: KubeAPIServer) -> tuple[int, list[dict[str, Any]]]:
    return kube_api.cluster.rv, kube_api.objects()


def plan_read_only(kube_api: KubeAPIServer, cluster: Cluster, manifests: list[Manifest],
                   inventory: Inventory, **kwargs: Any) -> Plan:
    """Plan, and check the plan wrote nothing: same objects, same resourceVersion, and no
    request but reads and dry-runs."""
    before = snapshot(kube_api)
    seen = len(kube_api.requests)
    plan = plan_kustomization(cluster, manifests, inventory, OWNER, key=KEY, **kwargs)
    writes = [r for r in kube_api.requests[seen:] if r.method != "GET" and r.query.get("dryRun") != "All"]
    assert writes == []
    assert snapshot(kube_api) == before
    return plan


def by_ref(plan: Plan) -> dict[str, ObjectChange]:
    return {c.ref: c for c in plan.changes}


# ---- against the test API server ---------------------------------------------------------


def test_a_change_that_adds_changes_and_removes_objects(kube_api, cluster, folder):
    inventory = apply(cluster, folder({
        "a.yaml": configmap("settings", mode="blue"),
        "old.yaml": configmap("old", x="1"),
        "svc.yaml": "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default}\n"
                    "spec: {selector: {app: web}, ports: [{port: 80}]}\n",
    }))
    pr = folder({
        "a.yaml": configmap("settings", mode="green"),
        "svc.yaml": "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default}\n"
                    "spec: {selector: {app: web}, ports: [{port: 80}]}\n",
        "web.yaml": DEPLOYMENT % ("web", "web"),
    })

    plan = plan_read_only(kube_api, cluster, pr, inventory)

    assert plan.summary == "1 to create, 1 to update, 1 to delete"
    changes = by_ref(plan)
    assert {r: c.action for r, c in changes.items()} == {
        "ConfigMap/default/settings": UPDATE, "Service/default/web": UNCHANGED,
        "Deployment/default/web": CREATE, "ConfigMap/default/old": DELETE}
    update = changes["ConfigMap/default/settings"].diff
    assert "-  mode: blue\n" in update and "+  mode: green\n" in update
    assert update.startswith("--- live/ConfigMap/default/settings\n+++ planned/ConfigMap/default/settings\n")
    for noise in ("managedFields", "resourceVersion", "uid:", "creationTimestamp", "status"):
        assert noise not in plan.body()
    create = changes["Deployment/default/web"].diff.splitlines()
    assert create[0] == "--- /dev/null" and all(line.startswith("+") for line in create[1:] if line[:2] != "@@")
    assert "+      - image: nginx:1.27" in create
    delete = changes["ConfigMap/default/old"].diff.splitlines()
    assert delete[1] == "+++ /dev/null" and all(line.startswith("-") for line in delete[2:] if line[:2] != "@@")
    assert changes["Service/default/web"].diff == ""
    # The comment lists what moves, not what stays.
    assert "Service/default/web" not in plan.body()


def test_prune_candidates_follow_the_reconcilers_prune_rules(kube_api, cluster, folder):
    inventory = apply(cluster, folder({
        "keep.yaml": configmap("kept", x="1"), "taken.yaml": configmap("taken", x="1"),
        "gone.yaml": configmap("gone", x="1"),
    }))
    kube_api.apply_object({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {
        "name": "kept", "namespace": "default", "annotations": {"kustomize.toolkit.fluxcd.io/prune": "disabled"}}})
    kube_api.apply_object({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {
        "name": "taken", "namespace": "default", "labels": {"kustomize.toolkit.fluxcd.io/name": "other"}}})
    pr = folder({"other.yaml": configmap("fresh", x="1")})

    plan = plan_read_only(kube_api, cluster, pr, inventory)
    assert [c.ref for c in plan.of(DELETE)] == ["ConfigMap/default/gone"]

    no_prune = plan_read_only(kube_api, cluster, pr, inventory, prune=False)
    assert no_prune.summary == "1 to create, 0 to update, 0 to delete"


def test_nothing_changes(kube_api, cluster, folder):
    files = {"a.yaml": configmap("settings", mode="blue"), "web.yaml": DEPLOYMENT % ("web", "web")}
    inventory = apply(cluster, folder(files))

    plan = plan_read_only(kube_api, cluster, folder(files), inventory)

    assert plan.summary == "no changes"
    assert {c.action for c in plan.changes} == {UNCHANGED}
    assert plan.body() == "no changes\n"


def test_a_manifest_the_dry_run_refuses_fails_the_plan_naming_it(kube_api, cluster, folder):
    pr = folder({
        "a.yaml": configmap("fine", x="1"),
        "bad.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bad\n  namespace: default\n"
                    "  labels: {tier: 'not a valid label value!'}\n",
    })

    plan = plan_read_only(kube_api, cluster, pr, Inventory())

    assert plan.failed
    bad = by_ref(plan)["ConfigMap/default/bad"]
    assert bad.action == ERROR and "dry-run failed (Invalid)" in bad.note
    assert plan.summary.startswith("plan failed: ConfigMap/default/bad: ConfigMap/default/bad dry-run failed")
    assert len(plan.summary) <= STATUS_LIMIT
    assert by_ref(plan)["ConfigMap/default/fine"].action == CREATE  # the rest is still planned


def test_a_missing_namespace_not_in_the_render_is_a_failure(kube_api, cluster, folder):
    pr = folder({"a.yaml": configmap("x", k="v").replace("namespace: default", "namespace: nowhere")})
    plan = plan_read_only(kube_api, cluster, pr, Inventory())
    assert plan.summary.startswith("plan failed: ConfigMap/nowhere/x: ConfigMap/nowhere/x not found")


def test_a_forbidden_object_cannot_be_previewed_and_does_not_fail_the_plan(kube_api, cluster, folder):
    kube_api.fail_next("ConfigMap", "locked", "default", code=403, reason="Forbidden",
                       message='configmaps "locked" is forbidden: User "herald" cannot patch resource')
    pr = folder({"a.yaml": configmap("locked", x="1"), "b.yaml": configmap("open", x="1")})

    plan = plan_read_only(kube_api, cluster, pr, Inventory())

    assert not plan.failed
    assert by_ref(plan)["ConfigMap/default/locked"].action == CANNOT_PREVIEW
    assert "forbidden" in by_ref(plan)["ConfigMap/default/locked"].note
    assert plan.summary == "1 to create, 0 to update, 0 to delete, 1 cannot preview"


def test_an_immutable_change_fails_unless_force_is_enabled(kube_api, cluster, folder):
    inventory = apply(cluster, folder({"web.yaml": DEPLOYMENT % ("web", "web")}))
    pr = DEPLOYMENT % ("web2", "web2")

    plan = plan_read_only(kube_api, cluster, folder({"web.yaml": pr}), inventory)
    failed = by_ref(plan)["Deployment/default/web"]
    assert failed.action == ERROR and "immutable" in failed.note and "force: enabled" in failed.note

    forced = pr.replace("labels: {app: web}}", "labels: {app: web}, annotations: "
                                               "{kustomize.toolkit.fluxcd.io/force: enabled}}")
    plan = plan_read_only(kube_api, cluster, folder({"web.yaml": forced}), inventory)
    recreated = by_ref(plan)["Deployment/default/web"]
    assert recreated.action == RECREATE and recreated.note == "immutable field changed"
    assert "-      app: web\n+      app: web2\n" in recreated.diff
    assert "progressDeadlineSeconds" not in recreated.diff  # server defaults are not changes
    assert plan.summary == "0 to create, 0 to update, 0 to delete, 1 to recreate"


def test_a_new_namespace_and_objects_in_it_are_creates(kube_api, cluster, folder):
    pr = folder({
        "ns.yaml": "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n",
        "a.yaml": configmap("settings", mode="blue").replace("namespace: default", "namespace: shop"),
        "web.yaml": (DEPLOYMENT % ("web", "web")).replace("namespace: default", "namespace: shop"),
    })

    plan = plan_read_only(kube_api, cluster, pr, Inventory())

    assert [(c.ref, c.action) for c in plan.changes] == [
        ("Namespace/shop", CREATE), ("ConfigMap/shop/settings", CREATE), ("Deployment/shop/web", CREATE)]
    assert "Namespace shop is created by this change" in by_ref(plan)["ConfigMap/shop/settings"].note
    assert "+  mode: blue" in by_ref(plan)["ConfigMap/shop/settings"].diff
    assert plan.summary == "3 to create, 0 to update, 0 to delete"


def test_target_namespace_and_kustomize_render_as_the_reconciler_renders(kube_api, cluster, folder):
    pr = folder({
        "kustomization.yaml": "resources: [ns.yaml, a.yaml]\n",
        "ns.yaml": "apiVersion: v1\nkind: Namespace\nmetadata: {name: team}\n",
        "a.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {mode: blue}\n",
    }, target_namespace="team")

    plan = plan_read_only(kube_api, cluster, pr, Inventory())

    assert [(c.ref, c.action) for c in plan.changes] == [("Namespace/team", CREATE),
                                                         ("ConfigMap/team/settings", CREATE)]


def test_a_new_crd_and_a_custom_resource_of_it_are_creates(kube_api, cluster, folder):
    pr = folder({"crd.yaml": CRD,
                 "gear.yaml": "apiVersion: example.com/v1\nkind: Widget\n"
                              "metadata: {name: gear, namespace: default}\nspec: {teeth: 12}\n"})

    plan = plan_read_only(kube_api, cluster, pr, Inventory())

    assert [(c.ref, c.action) for c in plan.changes] == [
        ("CustomResourceDefinition/widgets.example.com", CREATE), ("Widget/default/gear", CREATE)]
    assert "+  teeth: 12" in by_ref(plan)["Widget/default/gear"].diff
    assert not cluster.is_served("example.com/v1", "Widget")  # the dry-run did not create the CRD


def test_a_custom_resource_of_an_unknown_kind_fails(kube_api, cluster, folder):
    pr = folder({"gear.yaml": "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: gear}\n"})
    plan = plan_read_only(kube_api, cluster, pr, Inventory())
    assert plan.failed and "is its CustomResourceDefinition installed?" in plan.changes[0].note


SECRET_V1 = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "namespace": "default"},
             "data": {"password": base64.b64encode(b"hunter2-old").decode(),
                      "user": base64.b64encode(b"admin-user").decode(),
                      "legacy": base64.b64encode(b"legacy-token-9").decode()}}
SECRET_VALUES = ("hunter2-old", "hunter2-new", "admin-user", "legacy-token-9", "api-key-value")


def assert_no_secret_value(text: str) -> None:
    for value in SECRET_VALUES:
        assert value not in text
        assert base64.b64encode(value.encode()).decode() not in text
    assert LAST_APPLIED not in text


def test_a_secret_change_is_masked(kube_api, cluster, folder):
    live = copy.deepcopy(SECRET_V1)
    live["metadata"]["annotations"] = {LAST_APPLIED: '{"data":{"password":"aHVudGVyMi1vbGQ="}} hunter2-old'}
    kube_api.apply_object(live, field_manager="kubectl-client-side-apply")
    pr = folder({"secret.yaml": """\
        apiVersion: v1
        kind: Secret
        metadata: {name: db, namespace: default}
        data: {password: aHVudGVyMi1uZXc=, user: YWRtaW4tdXNlcg==}
        stringData: {apikey: api-key-value}
        """})

    plan = plan_read_only(kube_api, cluster, pr, Inventory())

    secret = by_ref(plan)["Secret/default/db"]
    assert secret.action == UPDATE
    # "legacy" stays: kubectl's field manager owns it, and Herald's apply removes only its own fields.
    assert secret.secret_keys == {"apikey": "added", "legacy": "unchanged", "password": "changed",
                                  "user": "unchanged"}
    assert "hmac-sha256:" in secret.diff
    assert_no_secret_value(plan.body())
    assert_no_secret_value(repr(plan))
    assert "data keys: " in plan.body() and "password changed" in plan.body()


def test_secret_keys_are_added_removed_changed_unchanged():
    desired = {**SECRET_V1, "data": {"password": base64.b64encode(b"hunter2-new").decode(),
                                     "user": SECRET_V1["data"]["user"]},
               "stringData": {"apikey": "api-key-value"}}
    masked_live, masked_desired, states = mask_secret(SECRET_V1, desired, KEY)
    assert states == {"apikey": "added", "legacy": "removed", "password": "changed", "user": "unchanged"}
    assert masked_live["data"]["user"] == masked_desired["data"]["user"]
    assert masked_live["data"]["password"] != masked_desired["data"]["password"]
    assert "stringData" not in masked_desired
    assert_no_secret_value(repr((masked_live, masked_desired)))
    # Another plan's key gives other fingerprints: nothing to compare across comments.
    assert mask_secret(SECRET_V1, None, b"x" * 32)[0]["data"] != masked_live["data"]
    # stringData and data holding the same value: no change.
    same = {**SECRET_V1, "data": {}, "stringData": {"password": "hunter2-old", "user": "admin-user",
                                                   "legacy": "legacy-token-9"}}
    assert set(mask_secret(SECRET_V1, same, KEY)[2].values()) == {"unchanged"}


def test_a_secret_that_cannot_be_masked_is_not_shown():
    broken = {**SECRET_V1, "data": {"password": "hunter2-new is not base64!"}}
    change = diff_object(SECRET_V1, broken, key=KEY)
    assert change.action == UPDATE and change.diff == "" and "could not be masked" in change.note
    assert_no_secret_value(change.text())
    assert "hunter2-new" not in change.text()
    with pytest.raises(ValueError):
        mask_secret(SECRET_V1, {**SECRET_V1, "stringData": ["a list"]}, KEY)
    with pytest.raises(ValueError):
        mask_secret(SECRET_V1, SECRET_V1, b"")


def test_a_refused_secrets_message_is_withheld_when_it_quotes_a_value(kube_api, cluster, folder):
    kube_api.fail_next("Secret", "db", "default", code=422, reason="Invalid",
                       message='Secret "db" is invalid: data[password]: Invalid value: "hunter2-new"')
    pr = folder({"secret.yaml": "apiVersion: v1\nkind: Secret\nmetadata: {name: db, namespace: default}\n"
                                "stringData: {password: hunter2-new}\n"})
    plan = plan_read_only(kube_api, cluster, pr, Inventory())
    assert plan.failed and "withheld" in plan.changes[0].note
    assert "hunter2-new" not in plan.body() and "hunter2-new" not in plan.summary


def test_deleted_secret_shows_keys_not_values(kube_api, cluster, folder):
    inventory = apply(cluster, [Manifest(copy.deepcopy(SECRET_V1))])
    plan = plan_read_only(kube_api, cluster, folder({"a.yaml": configmap("x", k="v")}), inventory)
    gone = by_ref(plan)["Secret/default/db"]
    assert gone.action == DELETE and gone.secret_keys == {"legacy": "removed", "password": "removed",
                                                          "user": "removed"}
    assert_no_secret_value(plan.body())


# ---- pure functions ----------------------------------------------------------------------


def test_clean_strips_server_noise_only():
    live = {"apiVersion": "v1", "kind": "ConfigMap", "status": {"x": 1},
            "metadata": {"name": "a", "namespace": "default", "uid": "u", "resourceVersion": "7", "generation": 2,
                         "creationTimestamp": "t", "managedFields": [{}], "selfLink": "/x",
                         "labels": {"app": "a"},
                         "annotations": {LAST_APPLIED: "{}", "team": "blue"}},
            "data": {"k": "v"}}
    assert clean(live) == {"apiVersion": "v1", "kind": "ConfigMap", "data": {"k": "v"},
                           "metadata": {"name": "a", "namespace": "default", "labels": {"app": "a"},
                                        "annotations": {"team": "blue"}}}
    assert "status" in live and "uid" in live["metadata"]  # a copy
    only_last_applied = {"metadata": {"name": "a", "annotations": {LAST_APPLIED: "{}"}}}
    assert clean(only_last_applied) == {"metadata": {"name": "a"}}
    assert clean(None) is None


def test_diff_object_decides_like_the_apply_engine():
    live = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "n",
                                                                  "resourceVersion": "1"}, "data": {"k": "v"}}
    same = {**live, "metadata": {**live["metadata"], "resourceVersion": "2"}}
    assert diff_object(live, same, key=KEY).action == UNCHANGED
    changed = {**live, "data": {"k": "w"}}
    c = diff_object(live, changed, key=KEY)
    assert (c.ref, c.action) == ("ConfigMap/n/a", UPDATE) and "-  k: v\n+  k: w\n" in c.diff
    assert diff_object(None, live, key=KEY).action == CREATE
    assert diff_object(live, None, key=KEY).action == DELETE


def change(action: str, ref: str = "ConfigMap/default/a", note: str = "") -> ObjectChange:
    return ObjectChange(ref, action, note=note)


def test_summaries():
    assert summarize([]) == "no changes"
    assert summarize([change(UNCHANGED)] * 5) == "no changes"
    assert summarize([change(CREATE), change(CREATE), change(UPDATE), change(UNCHANGED)]) == \
        "2 to create, 1 to update, 0 to delete"
    assert summarize([change(DELETE)]) == "0 to create, 0 to update, 1 to delete"
    assert summarize([change(CREATE), change(ERROR, "Deployment/shop/web", "Deployment/shop/web dry-run failed"),
                      change(ERROR, "Service/shop/web", "x")]) == \
        "plan failed: Deployment/shop/web: Deployment/shop/web dry-run failed (+1 more)"


def test_the_status_description_is_at_most_140_characters():
    long_ref = "Deployment/" + "n" * 63 + "/" + "w" * 200
    long_note = "dry-run failed (Invalid): " + "spec.template.spec.containers[0].image: Required value; " * 20
    for changes in ([change(ERROR, long_ref, long_note)], [change(ERROR, "ConfigMap/default/a", long_note)] * 3,
                    [change(CREATE)] * 10**5 + [change(UPDATE)] * 10**5 + [change(DELETE)] * 10**5
                    + [change(RECREATE)] * 10**5 + [change(CANNOT_PREVIEW)] * 10**5):
        text = summarize(changes)
        assert len(text) <= STATUS_LIMIT, text
        assert "\n" not in text
    assert summarize([change(ERROR, "ConfigMap/default/a", long_note)]).startswith(
        "plan failed: ConfigMap/default/a: dry-run failed (Invalid): spec.template")
    assert summarize([change(ERROR, "ConfigMap/default/a", long_note)]).endswith("…")
