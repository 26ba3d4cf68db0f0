"""The fake Kubernetes API server is honest: real clients, real answers.

Every scenario drives ``tests/kubeapi.py`` with an unmodified client --
``kubectl`` 1.32 or the official ``kubernetes`` Python client -- or with raw
HTTP, and asserts what a real kube-apiserver 1.32 answers.  If one of these
fails, the fake has drifted from the real thing and tests built on it would
prove nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any
from collections.abc import Callable

import pytest
import requests
import yaml
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes import watch as k8s_watch
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import NotFoundError

from .kubeapi import KubeAPIServer, parse_label_selector


# kubectl ships with every machine image here; a missing one must fail the run, not skip it.
KUBECTL = shutil.which("kubectl") or "kubectl"

MANIFEST = """\
apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
  labels: {app: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
        - name: web
          image: nginx:1.27
          ports: [{containerPort: 80}]
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
  labels: {app: web}
spec:
  selector: {app: web}
  ports: [{port: 80}]
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: web-config
  namespace: shop
  labels: {app: web}
data:
  greeting: hello
"""


def deployment(name: str = "web", namespace: str = "default", replicas: int = 2,
               labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels or {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": name, "image": "nginx:1.27"}]},
            },
        },
    }


KubectlRunner = Callable[..., subprocess.CompletedProcess]


def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait for something a controller does asynchronously."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


@pytest.fixture
def kubectl(kubeconfig: Path, tmp_path: Path) -> KubectlRunner:
    """Run kubectl against the fake server; fails the test on a non-zero exit."""

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
        # A private discovery cache: ports get reused, and a stale cache would
        # hide what this server really advertises.
        argv = [str(KUBECTL), "--request-timeout=10s", f"--cache-dir={tmp_path / 'kube-cache'}", *args]
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
        if check:
            assert proc.returncode == 0, f"kubectl {' '.join(args)} failed:\n{proc.stderr}"
        return proc

    return run


@pytest.fixture
def api_client(kubeconfig: Path) -> k8s_client.ApiClient:
    return k8s_config.new_client_from_config(config_file=str(kubeconfig))


@pytest.fixture
def dyn(api_client: k8s_client.ApiClient, tmp_path: Path) -> DynamicClient:
    # Same reason as kubectl's cache dir: the default cache file is per host:port.
    return DynamicClient(api_client, cache_file=str(tmp_path / "discovery.json"))


@pytest.fixture
def http(kube_api: KubeAPIServer) -> Callable[..., requests.Response]:
    """Raw HTTP, to check status codes and Status bodies byte for byte."""
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {kube_api.token}"

    def call(method: str, path: str, body: Any = None, content_type: str = "application/json",
             **params: str) -> requests.Response:
        data = None if body is None else (body if isinstance(body, str) else json.dumps(body))
        return session.request(method, kube_api.url + path, data=data, params=params,
                               headers={"Content-Type": content_type}, timeout=10)

    return call


def apply(http: Callable[..., requests.Response], obj: dict[str, Any], **params: str) -> requests.Response:
    """Server-side apply of one object over raw HTTP."""
    group_version = obj["apiVersion"]
    prefix = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
    plural = {"Deployment": "deployments", "ConfigMap": "configmaps"}[obj["kind"]]
    path = f"{prefix}/namespaces/{obj['metadata']['namespace']}/{plural}/{obj['metadata']['name']}"
    return http("PATCH", path, obj, "application/apply-patch+yaml", **params)


# --------------------------------------------------------------------------- #
# 1. kubectl
# --------------------------------------------------------------------------- #

def test_kubectl_server_side_apply_get_list_delete(kubectl: KubectlRunner, kube_api: KubeAPIServer,
                                                   tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(MANIFEST)

    applied = kubectl("apply", "--server-side", "--field-manager=herald", "-f", str(manifest))
    assert applied.stdout.splitlines() == [
        "namespace/shop serverside-applied",
        "deployment.apps/web serverside-applied",
        "service/web serverside-applied",
        "configmap/web-config serverside-applied",
    ]
    assert applied.stderr == ""  # no discovery, validation or deprecation warnings
    patches = [r for r in kube_api.requests if r.method == "PATCH"]
    assert [r.content_type for r in patches] == ["application/apply-patch+yaml"] * 4
    assert all(r.query["fieldManager"] == "herald" for r in patches)

    listed = json.loads(kubectl("get", "deploy,svc,cm", "-n", "shop", "-o", "json", "--show-managed-fields").stdout)
    assert [(i["kind"], i["metadata"]["name"]) for i in listed["items"]] == [
        ("Deployment", "web"), ("Service", "web"), ("ConfigMap", "web-config")]
    deploy = listed["items"][0]
    assert deploy["metadata"]["managedFields"][0]["manager"] == "herald"
    assert deploy["status"]["readyReplicas"] == 2  # the "controller" rolled it out
    assert listed["items"][1]["spec"]["clusterIP"].startswith("10.96.")  # defaulted by the server

    selected = json.loads(kubectl("get", "cm", "-n", "shop", "-l", "app=web", "-o", "json").stdout)
    assert [i["metadata"]["name"] for i in selected["items"]] == ["web-config"]
    none = json.loads(kubectl("get", "cm", "-n", "shop", "-l", "app notin (web)", "-o", "json").stdout)
    assert none["items"] == []

    versions_before = {(o["kind"], o["metadata"]["name"]): o["metadata"]["resourceVersion"]
                       for o in kube_api.objects() if o["metadata"].get("namespace", o["metadata"]["name"]) == "shop"}
    kubectl("apply", "--server-side", "--field-manager=herald", "-f", str(manifest))
    versions_after = {(o["kind"], o["metadata"]["name"]): o["metadata"]["resourceVersion"]
                      for o in kube_api.objects() if o["metadata"].get("namespace", o["metadata"]["name"]) == "shop"}
    assert versions_after == versions_before  # an identical apply is a no-op

    deleted = kubectl("delete", "cm", "web-config", "-n", "shop")
    assert deleted.stdout.strip() == 'configmap "web-config" deleted'
    assert kube_api.get_object("v1", "ConfigMap", "shop", "web-config") is None
    missing = kubectl("get", "cm", "web-config", "-n", "shop", check=False)
    assert missing.returncode == 1
    assert 'configmaps "web-config" not found' in missing.stderr


def test_kubectl_reports_a_conflict_with_another_manager(kubectl: KubectlRunner, kube_api: KubeAPIServer,
                                                         tmp_path: Path) -> None:
    kube_api.apply_object(deployment(namespace="default", replicas=5), field_manager="autoscaler")
    manifest = tmp_path / "deploy.yaml"
    manifest.write_text(yaml.safe_dump(deployment(namespace="default", replicas=2)))

    refused = kubectl("apply", "--server-side", "--field-manager=herald", "-f", str(manifest), check=False)
    assert refused.returncode == 1
    assert 'Apply failed with 1 conflict: conflict with "autoscaler": .spec.replicas' in refused.stderr

    kubectl("apply", "--server-side", "--field-manager=herald", "--force-conflicts", "-f", str(manifest))
    assert kube_api.get_object("apps/v1", "Deployment", "default", "web")["spec"]["replicas"] == 2


# --------------------------------------------------------------------------- #
# 2. The official Python client
# --------------------------------------------------------------------------- #

def test_python_client_server_side_apply(dyn: DynamicClient, api_client: k8s_client.ApiClient,
                                         kube_api: KubeAPIServer) -> None:
    deployments = dyn.resources.get(api_version="apps/v1", kind="Deployment")

    def ssa(body: dict[str, Any], **kwargs: Any) -> Any:
        return deployments.server_side_apply(body=body, name="web", namespace="default", field_manager="herald",
                                             force_conflicts=True, **kwargs)

    created = ssa(deployment(replicas=2))
    assert created.metadata.generation == 1
    assert [(m.manager, m.operation) for m in created.metadata.managedFields] == [("herald", "Apply")]
    fields = created.metadata.managedFields[0].fieldsV1.to_dict()
    assert fields["f:spec"]["f:replicas"] == {}
    assert fields["f:spec"]["f:template"]["f:spec"]["f:containers"]['k:{"name":"web"}']["."] == {}

    # The deployment controller's status update is a write of its own, as on a
    # real cluster: compare against the live object, not the apply response.
    live = deployments.get(name="web", namespace="default")
    assert live.status.observedGeneration == 1 and live.status.readyReplicas == 2
    assert [(m.manager, m.operation, m.subresource) for m in live.metadata.managedFields] == [
        ("herald", "Apply", None), ("kube-controller-manager", "Update", "status")]

    again = ssa(deployment(replicas=2))
    assert again.metadata.resourceVersion == live.metadata.resourceVersion
    assert again.metadata.generation == 1

    scaled = ssa(deployment(replicas=3))
    assert int(scaled.metadata.resourceVersion) > int(live.metadata.resourceVersion)
    assert scaled.metadata.generation == 2
    assert deployments.get(name="web", namespace="default").status.observedGeneration == 2

    stored_rv = kube_api.get_object("apps/v1", "Deployment", "default", "web")["metadata"]["resourceVersion"]
    preview = ssa(deployment(replicas=7), dry_run="All")
    assert preview.spec.replicas == 7 and preview.metadata.generation == 3
    stored = kube_api.get_object("apps/v1", "Deployment", "default", "web")
    assert stored["spec"]["replicas"] == 3 and stored["metadata"]["resourceVersion"] == stored_rv

    deployments.server_side_apply(body=deployment(name="api"), namespace="default", field_manager="herald")
    selected = deployments.get(namespace="default", label_selector="app=web")
    assert selected.kind == "DeploymentList"
    assert [i.metadata.name for i in selected.items] == ["web"]
    others = deployments.get(namespace="default", label_selector="app in (api,db)")
    assert [i.metadata.name for i in others.items] == ["api"]

    typed = k8s_client.AppsV1Api(api_client).read_namespaced_deployment("web", "default")
    assert isinstance(typed, k8s_client.V1Deployment)
    assert typed.spec.replicas == 3 and typed.status.available_replicas == 3
    assert typed.metadata.managed_fields[0].manager == "herald"

    status = deployments.delete(name="web", namespace="default")
    assert (status.kind, status.status) == ("Status", "Success")
    with pytest.raises(NotFoundError) as not_found:
        deployments.get(name="web", namespace="default")
    assert json.loads(not_found.value.body)["message"] == 'deployments.apps "web" not found'


def test_python_client_watch_streams_changes(api_client: k8s_client.ApiClient, kube_api: KubeAPIServer) -> None:
    core = k8s_client.CoreV1Api(api_client)
    start = core.list_namespaced_config_map("default").metadata.resource_version

    def writer() -> None:
        kube_api.apply_object({"apiVersion": "v1", "kind": "ConfigMap",
                               "metadata": {"name": "flag", "namespace": "default"}, "data": {"on": "yes"}})
        kube_api.apply_object({"apiVersion": "v1", "kind": "ConfigMap",
                               "metadata": {"name": "flag", "namespace": "default"}, "data": {"on": "no"}})
        core.delete_namespaced_config_map("flag", "default")

    writing = threading.Timer(0.1, writer)
    writing.start()
    seen = []
    for event in k8s_watch.Watch().stream(core.list_namespaced_config_map, "default", resource_version=start,
                                          timeout_seconds=5):
        seen.append((event["type"], event["object"].metadata.name, event["object"].data))
        if event["type"] == "DELETED":
            break
    writing.join(10)  # the DELETE's answer may come after its event: the server must still be there
    assert seen == [("ADDED", "flag", {"on": "yes"}), ("MODIFIED", "flag", {"on": "no"}),
                    ("DELETED", "flag", {"on": "no"})]


# --------------------------------------------------------------------------- #
# 3. Errors are real Status objects
# --------------------------------------------------------------------------- #

def test_apply_creates_with_201_then_updates_with_200(http: Callable[..., requests.Response]) -> None:
    assert apply(http, deployment(), fieldManager="herald").status_code == 201
    assert apply(http, deployment(replicas=4), fieldManager="herald").status_code == 200


def test_apply_into_a_missing_namespace_is_404(http: Callable[..., requests.Response]) -> None:
    response = apply(http, deployment(namespace="nope"), fieldManager="herald")
    assert response.status_code == 404
    assert response.json() == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": 'namespaces "nope" not found', "reason": "NotFound",
        "details": {"name": "nope", "kind": "namespaces"}, "code": 404,
    }


def test_apply_without_field_manager_is_rejected(http: Callable[..., requests.Response]) -> None:
    # kube-apiserver rejects this in ValidatePatchOptions with errors.NewInvalid,
    # which is 422 Invalid, not 400.
    response = apply(http, deployment())
    assert response.status_code == 422
    assert response.json() == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": 'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is required for apply patch',
        "reason": "Invalid",
        "details": {"group": "meta.k8s.io", "kind": "PatchOptions", "causes": [
            {"reason": "FieldValueRequired", "message": "Required value: is required for apply patch",
             "field": "fieldManager"}]},
        "code": 422,
    }


def test_an_invalid_name_is_422_with_causes(http: Callable[..., requests.Response]) -> None:
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "Bad_Name", "namespace": "default"}}
    response = http("PATCH", "/api/v1/namespaces/default/configmaps/Bad_Name", body,
                    "application/apply-patch+yaml", fieldManager="herald")
    assert response.status_code == 422
    status = response.json()
    assert status["reason"] == "Invalid"
    assert status["message"].startswith('ConfigMap "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name": '
                                        "a lowercase RFC 1123 subdomain must consist of")
    assert status["details"]["name"] == "Bad_Name" and status["details"]["kind"] == "ConfigMap"
    assert [(c["reason"], c["field"]) for c in status["details"]["causes"]] == [("FieldValueInvalid", "metadata.name")]


def test_a_conflict_without_force_is_409_and_force_takes_ownership(http: Callable[..., requests.Response],
                                                                   kube_api: KubeAPIServer) -> None:
    assert apply(http, deployment(replicas=5), fieldManager="other-manager").status_code == 201

    refused = apply(http, deployment(replicas=2), fieldManager="herald")
    assert refused.status_code == 409
    assert refused.json() == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": 'Apply failed with 1 conflict: conflict with "other-manager": .spec.replicas',
        "reason": "Conflict",
        "details": {"causes": [{"reason": "FieldManagerConflict", "message": 'conflict with "other-manager"',
                                "field": ".spec.replicas"}]},
        "code": 409,
    }

    forced = apply(http, deployment(replicas=2), fieldManager="herald", force="true")
    assert forced.status_code == 200
    owners = {m["manager"]: m["fieldsV1"] for m in forced.json()["metadata"]["managedFields"]}
    assert "f:replicas" in owners["herald"]["f:spec"]
    assert "f:replicas" not in owners["other-manager"]["f:spec"]  # ownership moved, shared fields stay shared


def test_request_errors_read_like_the_apiserver(http: Callable[..., requests.Response]) -> None:
    missing = http("GET", "/apis/apps/v1/namespaces/default/deployments/web")
    assert (missing.status_code, missing.json()["message"]) == (404, 'deployments.apps "web" not found')
    assert missing.json()["details"] == {"name": "web", "group": "apps", "kind": "deployments"}

    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}
    assert http("POST", "/api/v1/namespaces/default/configmaps", cm).status_code == 201
    twice = http("POST", "/api/v1/namespaces/default/configmaps", cm)
    assert (twice.status_code, twice.json()["reason"], twice.json()["message"]) == (
        409, "AlreadyExists", 'configmaps "x" already exists')

    elsewhere = {**cm, "metadata": {"name": "x", "namespace": "other"}}
    wrong_ns = http("PATCH", "/api/v1/namespaces/default/configmaps/x", elsewhere, "application/apply-patch+yaml",
                    fieldManager="herald")
    assert (wrong_ns.status_code, wrong_ns.json()["message"]) == (
        400, "the namespace of the provided object does not match the namespace sent on the request")

    wrong_version = http("PATCH", "/apis/apps/v1/namespaces/default/deployments/web",
                         {**deployment(), "apiVersion": "apps/v1beta1"}, "application/apply-patch+yaml",
                         fieldManager="herald")
    assert (wrong_version.status_code, wrong_version.json()["message"]) == (
        400, "Incorrect version specified in apply patch. Specified patch version: apps/v1beta1, expected: apps/v1")

    wrong_name = http("PATCH", "/api/v1/namespaces/default/configmaps/y", cm, "application/apply-patch+yaml",
                      fieldManager="herald")
    assert (wrong_name.status_code, wrong_name.json()["message"]) == (
        400, "the name of the object (x) does not match the name on the URL (y)")

    bad_selector = http("PATCH", "/apis/apps/v1/namespaces/default/deployments/web",
                        {**deployment(), "spec": {**deployment()["spec"], "selector": {"matchLabels": {"app": "x"}}}},
                        "application/apply-patch+yaml", fieldManager="herald")
    assert bad_selector.status_code == 422
    assert "`selector` does not match template `labels`" in bad_selector.json()["message"]


# --------------------------------------------------------------------------- #
# 4. CustomResourceDefinitions
# --------------------------------------------------------------------------- #

WIDGET_CRD = """\
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wg]}
  versions:
    - name: v1
      served: true
      storage: true
      subresources: {status: {}}
      schema:
        openAPIV3Schema:
          type: object
          x-kubernetes-preserve-unknown-fields: true
"""

WIDGET = """\
apiVersion: example.com/v1
kind: Widget
metadata: {name: gizmo, namespace: default, labels: {tier: gold}}
spec: {size: 3}
"""


def test_a_crd_makes_its_kind_discoverable_and_appliable(kubectl: KubectlRunner, kube_api: KubeAPIServer,
                                                         tmp_path: Path) -> None:
    (tmp_path / "crd.yaml").write_text(WIDGET_CRD)
    (tmp_path / "widget.yaml").write_text(WIDGET)

    # kubectl caches discovery before the CRD exists and must notice the new kind.
    kubectl("get", "ns")
    kubectl("apply", "--server-side", "--field-manager=herald", "-f", str(tmp_path / "crd.yaml"))
    crd = kube_api.get_object("apiextensions.k8s.io/v1", "CustomResourceDefinition", None, "widgets.example.com")
    assert {c["type"]: c["status"] for c in crd["status"]["conditions"]} == {"NamesAccepted": "True",
                                                                             "Established": "True"}

    resources = kubectl("api-resources", "--api-group=example.com", "-o", "wide").stdout
    assert "widgets" in resources and "wg" in resources and "Widget" in resources

    applied = kubectl("apply", "--server-side", "--field-manager=herald", "-f", str(tmp_path / "widget.yaml"))
    assert applied.stdout.strip() == "widget.example.com/gizmo serverside-applied"
    listed = json.loads(kubectl("get", "wg", "-l", "tier=gold", "-o", "json").stdout)
    assert [(i["kind"], i["metadata"]["name"], i["spec"]) for i in listed["items"]] == [
        ("Widget", "gizmo", {"size": 3})]

    kubectl("delete", "crd", "widgets.example.com")
    assert kube_api.objects("Widget") == []  # the custom resources went with their definition
    assert "widgets" not in kubectl("api-resources", "--api-group=example.com").stdout


def test_a_crd_is_served_over_the_python_client(http: Callable[..., requests.Response],
                                                 api_client: k8s_client.ApiClient, tmp_path: Path) -> None:
    crd = yaml.safe_load(WIDGET_CRD)
    created = http("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
    assert created.status_code == 201

    discovery = http("GET", "/apis/example.com/v1").json()
    assert discovery["resources"][0] == {
        "name": "widgets", "singularName": "widget", "namespaced": True, "kind": "Widget",
        "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
        "shortNames": ["wg"],
    }
    dyn = DynamicClient(api_client, cache_file=str(tmp_path / "discovery.json"))
    widgets = dyn.resources.get(api_version="example.com/v1", kind="Widget")
    widgets.server_side_apply(body=yaml.safe_load(WIDGET), namespace="default", field_manager="herald")
    assert [w.spec.size for w in widgets.get(namespace="default").items] == [3]


# --------------------------------------------------------------------------- #
# Apply semantics in detail
# --------------------------------------------------------------------------- #

def test_apply_prunes_fields_its_manager_stopped_applying(kube_api: KubeAPIServer) -> None:
    def cm(manager: str, data: dict[str, str], labels: dict[str, str]) -> dict[str, Any]:
        return kube_api.apply_object({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {
            "name": "settings", "namespace": "default", "labels": labels}, "data": data}, field_manager=manager)

    cm("herald", {"a": "1", "b": "2"}, {"app": "web", "team": "blue"})
    cm("operator", {"c": "3"}, {"team": "blue"})
    result = cm("herald", {"a": "1"}, {"app": "web"})

    assert result["data"] == {"a": "1", "c": "3"}  # b was herald's alone: gone
    assert result["metadata"]["labels"] == {"app": "web", "team": "blue"}  # team is still the operator's


def test_apply_merges_containers_by_name(kube_api: KubeAPIServer) -> None:
    base = deployment()
    kube_api.apply_object(base, field_manager="herald")
    sidecar = deployment()
    sidecar["spec"] = {"template": {"spec": {"containers": [{"name": "proxy", "image": "envoy:1"}]}}}
    sidecar["metadata"].pop("labels")
    kube_api.apply_object(sidecar, field_manager="mesh")

    live = kube_api.get_object("apps/v1", "Deployment", "default", "web")
    containers = live["spec"]["template"]["spec"]["containers"]
    assert [(c["name"], c["image"]) for c in containers] == [("web", "nginx:1.27"), ("proxy", "envoy:1")]
    assert containers[0]["imagePullPolicy"] == "IfNotPresent"  # defaulted, owned by nobody


def test_status_is_a_subresource(http: Callable[..., requests.Response], kube_api: KubeAPIServer) -> None:
    body = deployment()
    body["status"] = {"replicas": 99}
    apply(http, body, fieldManager="herald")
    live = kube_api.get_object("apps/v1", "Deployment", "default", "web")
    assert live["status"]["replicas"] == 2  # the main resource ignores status
    assert "f:status" not in json.dumps(live["metadata"]["managedFields"][0]["fieldsV1"])

    patched = http("PATCH", "/apis/apps/v1/namespaces/default/deployments/web/status",
                   {"status": {"readyReplicas": 1}, "spec": {"replicas": 9}}, "application/merge-patch+json")
    assert patched.status_code == 200
    assert patched.json()["status"]["readyReplicas"] == 1
    assert patched.json()["spec"]["replicas"] == 2  # /status ignores everything else


def test_merge_strategic_and_json_patches(http: Callable[..., requests.Response], kube_api: KubeAPIServer) -> None:
    apply(http, deployment(), fieldManager="herald")
    path = "/apis/apps/v1/namespaces/default/deployments/web"

    merge = http("PATCH", path, {"metadata": {"annotations": {"note": "hi"}}}, "application/merge-patch+json",
                 fieldManager="kubectl-annotate")
    assert merge.json()["metadata"]["annotations"] == {"note": "hi"}
    assert ("kubectl-annotate", "Update") in {(m["manager"], m["operation"])
                                              for m in merge.json()["metadata"]["managedFields"]}

    new_image = {"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx:2"}]}}}}
    strategic = http("PATCH", path, new_image, "application/strategic-merge-patch+json")
    container = strategic.json()["spec"]["template"]["spec"]["containers"][0]
    assert (container["image"], container["terminationMessagePolicy"]) == ("nginx:2", "File")

    ops = [{"op": "replace", "path": "/spec/replicas", "value": 4}, {"op": "remove", "path": "/metadata/annotations"}]
    patched = http("PATCH", path, ops, "application/json-patch+json")
    assert patched.json()["spec"]["replicas"] == 4 and "annotations" not in patched.json()["metadata"]
    assert patched.json()["metadata"]["generation"] == 3


def test_a_deleted_namespace_terminates_then_takes_its_objects(http: Callable[..., requests.Response],
                                                                kube_api: KubeAPIServer) -> None:
    http("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "tmp"}})
    apply(http, deployment(namespace="tmp"), fieldManager="herald")

    deleting = http("DELETE", "/api/v1/namespaces/tmp")
    assert deleting.status_code == 200 and deleting.json()["status"]["phase"] == "Terminating"
    # Like the real namespace controller, emptying the namespace takes a moment;
    # meanwhile nothing new may be created in it.
    refused = http("POST", "/api/v1/namespaces/tmp/configmaps",
                   {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "late"}})
    assert (refused.status_code, refused.json()["message"]) == (
        403, 'configmaps "late" is forbidden: unable to create new content in namespace tmp because it is being '
             "terminated")
    assert refused.json()["details"]["causes"][0]["reason"] == "NamespaceTerminating"

    eventually(lambda: http("GET", "/api/v1/namespaces/tmp").status_code == 404)
    assert kube_api.get_object("apps/v1", "Deployment", "tmp", "web") is None


def test_kubectl_delete_of_a_namespace_and_its_contents(kubectl: KubectlRunner, kube_api: KubeAPIServer,
                                                        tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(MANIFEST)
    kubectl("apply", "--server-side", "--field-manager=herald", "-f", str(manifest))

    deleted = kubectl("delete", "-f", str(manifest))  # waits, by watching, until everything is gone

    assert deleted.stdout.splitlines() == ['namespace "shop" deleted', 'deployment.apps "web" deleted',
                                           'service "web" deleted', 'configmap "web-config" deleted']
    assert kube_api.get_object("v1", "Namespace", None, "shop") is None


def test_kubectl_health_and_drift_commands(kubectl: KubectlRunner, tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(MANIFEST)
    kubectl("apply", "--server-side", "--field-manager=herald", "-f", str(manifest))

    rollout = kubectl("rollout", "status", "deployment/web", "-n", "shop", "--timeout=5s")
    assert rollout.stdout.strip() == 'deployment "web" successfully rolled out'
    kubectl("wait", "--for=condition=Available", "deployment/web", "-n", "shop", "--timeout=5s")

    assert kubectl("diff", "--server-side", "--field-manager=herald", "-f", str(manifest)).stdout == ""
    kubectl("scale", "deployment/web", "-n", "shop", "--replicas=4")  # someone scales by hand
    # The dry-run apply behind the diff now conflicts with the hand-scaler...
    conflict = kubectl("diff", "--server-side", "--field-manager=herald", "-f", str(manifest), check=False)
    assert conflict.returncode > 1
    assert ('conflict with "kubectl" with subresource "scale" using apps/v1: .spec.replicas'
            in conflict.stderr)
    # ...and shows the drift once told to take the field back.
    drift = kubectl("diff", "--server-side", "--force-conflicts", "--field-manager=herald", "-f", str(manifest),
                    check=False)
    assert drift.returncode == 1  # kubectl diff: 1 means "differences found"
    assert "-  replicas: 4\n+  replicas: 2" in drift.stdout


def test_kubectl_migrates_client_side_apply_ownership(kubectl: KubectlRunner, kube_api: KubeAPIServer,
                                                      tmp_path: Path) -> None:
    manifest = tmp_path / "cm.yaml"
    manifest.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: legacy}\ndata: {a: b}\n")
    kubectl("apply", "-f", str(manifest))  # client-side apply: an Update by kubectl-client-side-apply
    kubectl("apply", "--server-side", "-f", str(manifest))

    # kubectl rewrites managedFields with a JSON patch and the server honours it.
    managers = {(m["manager"], m["operation"])
                for m in kube_api.get_object("v1", "ConfigMap", "default", "legacy")["metadata"]["managedFields"]}
    assert ("kubectl-client-side-apply", "Update") not in managers
    assert ("kubectl", "Apply") in managers


def test_scale_subresource(http: Callable[..., requests.Response], kube_api: KubeAPIServer) -> None:
    apply(http, deployment(replicas=2), fieldManager="herald")
    scale = http("GET", "/apis/apps/v1/namespaces/default/deployments/web/scale").json()
    assert (scale["kind"], scale["apiVersion"], scale["spec"], scale["status"]) == (
        "Scale", "autoscaling/v1", {"replicas": 2}, {"replicas": 2, "selector": "app=web"})

    scaled = http("PATCH", "/apis/apps/v1/namespaces/default/deployments/web/scale", {"spec": {"replicas": 5}},
                  "application/merge-patch+json", fieldManager="hpa")
    assert scaled.json()["spec"]["replicas"] == 5
    live = kube_api.get_object("apps/v1", "Deployment", "default", "web")
    assert live["spec"]["replicas"] == 5 and live["metadata"]["generation"] == 2
    hpa = next(m for m in live["metadata"]["managedFields"] if m["manager"] == "hpa")
    assert (hpa["operation"], hpa["subresource"]) == ("Update", "scale")
    assert hpa["fieldsV1"] == {"f:spec": {"f:replicas": {}}}
    # herald's apply now conflicts with the scaler on .spec.replicas, as on a real cluster
    refused = apply(http, deployment(replicas=2), fieldManager="herald")
    assert refused.json()["message"] == (
        'Apply failed with 1 conflict: conflict with "hpa" with subresource "scale" using apps/v1: .spec.replicas')


def test_lists_page_with_limit_and_continue(http: Callable[..., requests.Response]) -> None:
    for i in range(5):
        http("POST", "/api/v1/namespaces/default/configmaps",
             {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"cm-{i}"}})
    first = http("GET", "/api/v1/namespaces/default/configmaps", limit="2").json()
    assert [i["metadata"]["name"] for i in first["items"]] == ["cm-0", "cm-1"]
    assert first["metadata"]["remainingItemCount"] == 3
    rest = http("GET", "/api/v1/namespaces/default/configmaps", limit="10",
                **{"continue": first["metadata"]["continue"]}).json()
    assert [i["metadata"]["name"] for i in rest["items"]] == ["cm-2", "cm-3", "cm-4"]
    assert "continue" not in rest["metadata"]


def test_fail_next_injects_one_failure(http: Callable[..., requests.Response], kube_api: KubeAPIServer) -> None:
    kube_api.fail_next("Deployment", "web", "default", code=503, message="etcdserver: request timed out")
    failed = apply(http, deployment(), fieldManager="herald")
    assert (failed.status_code, failed.json()["reason"], failed.json()["message"]) == (
        503, "ServiceUnavailable", "etcdserver: request timed out")
    assert apply(http, deployment(), fieldManager="herald").status_code == 201


@pytest.mark.parametrize(("selector", "labels", "expected"), [
    ("app=web", {"app": "web"}, True),
    ("app==web,tier=db", {"app": "web"}, False),
    ("app!=web", {}, True),
    ("app in (web, api)", {"app": "api"}, True),
    ("app notin (web,api)", {"app": "web"}, False),
    ("app notin (web,api)", {}, True),
    ("app", {"app": ""}, True),
    ("!app", {"app": "web"}, False),
    ("tier in (a,b),!canary", {"tier": "b"}, True),
])
def test_label_selector_grammar(selector: str, labels: dict[str, str], expected: bool) -> None:
    assert all(r.matches(labels) for r in parse_label_selector(selector)) is expected


# --------------------------------------------------------------------------- #
# Rollouts the tests control, and immutable fields
# --------------------------------------------------------------------------- #

JOBS = """\
apiVersion: batch/v1
kind: Job
metadata: {name: ok}
spec:
  template:
    spec: {restartPolicy: Never, containers: [{name: m, image: "busybox:1"}]}
---
apiVersion: batch/v1
kind: Job
metadata: {name: broken}
spec:
  backoffLimit: 1
  template:
    spec: {restartPolicy: Never, containers: [{name: m, image: "busybox:1"}]}
"""


def test_kubectl_rollout_status_waits_for_a_delayed_rollout(kubectl: KubectlRunner, kube_api: KubeAPIServer,
                                                           tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(MANIFEST)
    kube_api.set_rollout("complete", after=1.0, kind="Deployment")
    started = time.monotonic()
    kubectl("apply", "--server-side", "-f", str(manifest))
    rollout = kubectl("rollout", "status", "deployment/web", "-n", "shop", "--timeout=20s")
    assert time.monotonic() - started >= 1.0
    assert rollout.stdout.splitlines() == [
        'Waiting for deployment "web" rollout to finish: 0 of 2 updated replicas are available...',
        'deployment "web" successfully rolled out']
    # Each new generation takes its own second; status is written by its own manager.
    live = kube_api.get_object("apps/v1", "Deployment", "shop", "web")
    assert ("kube-controller-manager", "status") in [(m["manager"], m.get("subresource"))
                                                     for m in live["metadata"]["managedFields"]]


def test_kubectl_sees_a_stuck_rollout_and_a_missed_progress_deadline(kubectl: KubectlRunner, kube_api: KubeAPIServer,
                                                                     tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(MANIFEST)
    kube_api.set_rollout("progressing", kind="Deployment", namespace="shop", name="web")
    kubectl("apply", "--server-side", "-f", str(manifest))
    stuck = kubectl("rollout", "status", "deployment/web", "-n", "shop", "--timeout=1s", check=False)
    assert stuck.returncode == 1
    assert stuck.stdout.strip() == 'Waiting for deployment "web" rollout to finish: 0 of 2 updated replicas are available...'
    assert stuck.stderr.strip() == "error: timed out waiting for the condition"

    kube_api.set_rollout("failed", kind="Deployment")
    failed = kubectl("rollout", "status", "deployment/web", "-n", "shop", "--timeout=5s", check=False)
    assert (failed.returncode, failed.stderr.strip()) == (1, 'error: deployment "web" exceeded its progress deadline')

    kube_api.set_rollout("complete")  # the last matching rule wins; the controller catches up at once
    kubectl("rollout", "status", "deployment/web", "-n", "shop", "--timeout=5s")


def test_kubectl_waits_for_jobs_to_complete_or_fail(kubectl: KubectlRunner, kube_api: KubeAPIServer,
                                                   tmp_path: Path) -> None:
    manifest = tmp_path / "jobs.yaml"
    manifest.write_text(JOBS)
    kube_api.set_rollout("failed", kind="Job", name="broken")
    kubectl("apply", "--server-side", "-f", str(manifest))
    assert kubectl("wait", "--for=condition=complete", "job/ok", "--timeout=5s").stdout.strip() == \
        "job.batch/ok condition met"
    assert kubectl("wait", "--for=condition=failed", "job/broken", "--timeout=5s").stdout.strip() == \
        "job.batch/broken condition met"
    broken = kube_api.get_object("batch/v1", "Job", "default", "broken")
    assert broken["status"]["failed"] == 2
    assert {c["type"]: c["reason"] for c in broken["status"]["conditions"]} == {
        "FailureTarget": "BackoffLimitExceeded", "Failed": "BackoffLimitExceeded"}


def test_kubectl_is_refused_changes_to_immutable_fields(kubectl: KubectlRunner, kube_api: KubeAPIServer,
                                                        tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(MANIFEST)
    kubectl("apply", "--server-side", "-f", str(manifest))
    uid = kube_api.get_object("apps/v1", "Deployment", "shop", "web")["metadata"]["uid"]
    relabelled = tmp_path / "relabelled.yaml"
    relabelled.write_text(MANIFEST.replace("matchLabels: {app: web}", "matchLabels: {app: web2}")
                          .replace("labels: {app: web}\n    spec:", "labels: {app: web2}\n    spec:"))
    expected = ('The Deployment "web" is invalid: spec.selector: Invalid value: v1.LabelSelector{MatchLabels:'
                'map[string]string{"app":"web2"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: '
                "field is immutable")
    for dry_run in ("--dry-run=server", "--dry-run=none"):
        refused = kubectl("apply", "--server-side", dry_run, "-f", str(relabelled), check=False)
        assert refused.returncode == 1
        assert refused.stderr.strip() == expected
    assert kube_api.get_object("apps/v1", "Deployment", "shop", "web")["metadata"]["uid"] == uid
    # What a forced recreate does: delete, then apply anew.
    kubectl("replace", "--force", "-f", str(relabelled))
    assert kube_api.get_object("apps/v1", "Deployment", "shop", "web")["metadata"]["uid"] != uid

    jobs = tmp_path / "jobs.yaml"
    jobs.write_text(JOBS)
    kubectl("apply", "--server-side", "-f", str(jobs))
    jobs.write_text(JOBS.replace("busybox:1", "busybox:2"))
    refused = kubectl("apply", "--server-side", "-f", str(jobs), check=False)
    assert refused.stderr.splitlines()[0] == ('Error from server (Invalid): Job.batch "ok" is invalid: spec.template: '
                                              "Invalid value: core.PodTemplateSpec{...}: field is immutable")

    frozen = tmp_path / "frozen.yaml"
    frozen.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: frozen}\nimmutable: true\ndata: {a: b}\n")
    kubectl("apply", "--server-side", "-f", str(frozen))
    frozen.write_text(frozen.read_text().replace("{a: b}", "{a: c}"))
    refused = kubectl("apply", "--server-side", "-f", str(frozen), check=False)
    assert refused.stderr.strip() == ('The ConfigMap "frozen" is invalid: data: Forbidden: field is immutable when '
                                      "`immutable` is set")


def test_immutable_field_errors_are_422_with_causes(http: Callable[..., requests.Response]) -> None:
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": "readers", "namespace": "default"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"},
               "subjects": [{"kind": "User", "name": "ann", "apiGroup": "rbac.authorization.k8s.io"}]}
    path = "/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings/readers"
    assert http("PATCH", path, binding, "application/apply-patch+yaml", fieldManager="herald").status_code == 201
    binding["roleRef"]["name"] = "writer"
    refused = http("PATCH", path, binding, "application/apply-patch+yaml", fieldManager="herald")
    assert refused.status_code == 422
    body = refused.json()
    assert body["reason"] == "Invalid"
    assert body["message"] == ('RoleBinding.rbac.authorization.k8s.io "readers" is invalid: roleRef: Invalid value: '
                               'rbac.RoleRef{APIGroup:"rbac.authorization.k8s.io", Kind:"Role", Name:"writer"}: '
                               "cannot change roleRef")
    assert body["details"]["causes"] == [{"reason": "FieldValueInvalid", "message": (
        'Invalid value: rbac.RoleRef{APIGroup:"rbac.authorization.k8s.io", Kind:"Role", Name:"writer"}: '
        "cannot change roleRef"), "field": "roleRef"}]


# --------------------------------------------------------------------------- #
# Leases (coordination.k8s.io/v1): what leader election and Herald's locks use
# --------------------------------------------------------------------------- #

def test_kubectl_creates_reads_and_validates_leases(kubectl: KubectlRunner, kube_api: KubeAPIServer,
                                                    http: Callable[..., requests.Response],
                                                    tmp_path: Path) -> None:
    lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
             "metadata": {"name": "herald-gitrepository-app", "namespace": "kube-node-lease"},
             "spec": {"holderIdentity": "worker-a", "leaseDurationSeconds": 15, "leaseTransitions": 0,
                      "acquireTime": "2026-01-02T03:04:05.123456Z", "renewTime": "2026-01-02T03:04:05.123456Z"}}
    manifest = tmp_path / "lease.yaml"
    manifest.write_text(yaml.safe_dump(lease))
    assert "lease.coordination.k8s.io/herald-gitrepository-app created" in kubectl("create", "-f", str(manifest)).stdout
    assert kubectl("api-resources", "--api-group=coordination.k8s.io", "-o", "name").stdout.split() == [
        "leases.coordination.k8s.io"]
    got = kubectl("get", "lease", "herald-gitrepository-app", "-n", "kube-node-lease", "-o",
                  "jsonpath={.spec.holderIdentity} {.spec.leaseDurationSeconds} {.spec.renewTime}").stdout
    assert got == "worker-a 15 2026-01-02T03:04:05.123456Z"

    # Compare-and-swap: an update carrying a stale resourceVersion is refused, as leader
    # election relies on; one carrying the current version goes through.
    path = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/herald-gitrepository-app"
    current = http("GET", path).json()
    taken = {**current, "spec": {**current["spec"], "holderIdentity": "worker-b", "leaseTransitions": 1}}
    assert http("PUT", path, taken).status_code == 200
    stale = {**current, "spec": {**current["spec"], "holderIdentity": "worker-c"}}
    refused = http("PUT", path, stale)
    assert refused.status_code == 409 and refused.json()["reason"] == "Conflict"
    assert 'leases.coordination.k8s.io "herald-gitrepository-app": the object has been modified' in \
        refused.json()["message"]
    assert kubectl("get", "lease", "herald-gitrepository-app", "-n", "kube-node-lease", "-o",
                   "jsonpath={.spec.holderIdentity} {.spec.leaseTransitions}").stdout == "worker-b 1"

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**lease, "metadata": {"name": "bad", "namespace": "default"},
                                   "spec": {"leaseDurationSeconds": 0}}))
    invalid = kubectl("create", "-f", str(bad), check=False)
    assert invalid.returncode != 0
    assert invalid.stderr.strip() == ('The Lease "bad" is invalid: spec.leaseDurationSeconds: Invalid value: 0: '
                                      "must be greater than 0")
