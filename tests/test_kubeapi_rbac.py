"""The fake API server authorizes as kube-apiserver does: impersonation and RBAC.

Flux's ``spec.serviceAccountName`` makes kustomize-controller impersonate
``system:serviceaccount:<namespace>:<name>`` for every request of a Kustomization.  These
scenarios drive ``tests/kubeapi.py`` with the real ``kubectl`` (``--as``), the official
``kubernetes`` Python client and raw HTTP, and check the answers against what kube-apiserver
1.32 gives: which verb each request is, who may impersonate whom, what RBAC allows, and the
403 Status of a refusal, word for word.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from kubernetes import client as k8s_client
from kubernetes import watch as k8s_watch
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import ForbiddenError

from .kubeapi import KubeAPIServer, request_attributes
from .test_kubeapi import KubectlRunner, api_client, deployment, kubectl  # noqa: F401 (fixtures)

FLUX = "system:serviceaccount:team-a:flux"
AS_FLUX = f"--as={FLUX}"
RBAC = "rbac.authorization.k8s.io"


def binding(name: str, namespace: str | None, role_kind: str, role: str, *subjects: dict[str, Any]) -> dict[str, Any]:
    kind = "RoleBinding" if namespace else "ClusterRoleBinding"
    meta: dict[str, Any] = {"name": name} | ({"namespace": namespace} if namespace else {})
    return {"apiVersion": f"{RBAC}/v1", "kind": kind, "metadata": meta,
            "roleRef": {"apiGroup": RBAC, "kind": role_kind, "name": role}, "subjects": list(subjects)}


def service_account(name: str, namespace: str) -> dict[str, str]:
    return {"kind": "ServiceAccount", "name": name, "namespace": namespace}


def role(name: str, namespace: str, *rules: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": f"{RBAC}/v1", "kind": "Role", "metadata": {"name": name, "namespace": namespace},
            "rules": list(rules)}


def configmap(name: str, namespace: str, **data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": namespace},
            "data": data or {"greeting": "hello"}}


@pytest.fixture
def teams(kube_api: KubeAPIServer) -> KubeAPIServer:
    """Namespaces team-a and team-b, the default ClusterRoles, and team-a's flux
    ServiceAccount bound to ``edit`` in team-a only (as a multi-tenant Flux setup binds it)."""
    for ns in ("team-a", "team-b"):
        kube_api.apply_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    kube_api.add_default_cluster_roles()
    kube_api.apply_object(binding("flux-edit", "team-a", "ClusterRole", "edit", service_account("flux", "team-a")))
    return kube_api


def call(kube_api: KubeAPIServer, method: str, path: str, body: Any = None, *, token: str | None = None,
         content_type: str = "application/json", headers: dict[str, str] | None = None,
         **params: str) -> requests.Response:
    """One raw HTTP request, to check codes and Status bodies byte for byte."""
    sent = {"Content-Type": content_type, "Authorization": f"Bearer {token or kube_api.token}", **(headers or {})}
    data = None if body is None else (body if isinstance(body, str) else json.dumps(body))
    return requests.request(method, kube_api.url + path, data=data, params=params, headers=sent, timeout=10)


def as_flux(**more: str) -> dict[str, str]:
    return {"Impersonate-User": FLUX, **more}


def forbidden_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("Error from server (Forbidden): ")]
    assert lines, stderr
    return lines[0].removeprefix("Error from server (Forbidden): ")


# --------------------------------------------------------------------------- #
# 1. kubectl --as: what kustomize-controller's impersonated requests meet
# --------------------------------------------------------------------------- #

def test_kubectl_as_a_service_account_applies_in_its_namespace_only(kubectl: KubectlRunner, teams: KubeAPIServer,
                                                                     tmp_path: Path) -> None:
    manifest = tmp_path / "cm.yaml"
    manifest.write_text(yaml.safe_dump(configmap("web", "team-a")))
    assert kubectl(AS_FLUX, "apply", "--server-side", "--field-manager=kustomize-controller", "-f",
                   str(manifest)).stdout.strip() == "configmap/web serverside-applied"
    stored = teams.get_object("v1", "ConfigMap", "team-a", "web")
    assert stored is not None and stored["metadata"]["managedFields"][0]["manager"] == "kustomize-controller"
    assert {r.user for r in teams.requests} == {FLUX}  # discovery included: every request was impersonated

    manifest.write_text(yaml.safe_dump(configmap("web", "team-b")))
    refused = kubectl(AS_FLUX, "apply", "--server-side", "-f", str(manifest), check=False)
    assert refused.returncode != 0
    assert forbidden_line(refused.stderr) == (
        'configmaps "web" is forbidden: User "system:serviceaccount:team-a:flux" cannot patch resource '
        '"configmaps" in API group "" in the namespace "team-b"')
    assert teams.get_object("v1", "ConfigMap", "team-b", "web") is None

    dry = kubectl(AS_FLUX, "apply", "--server-side", "--dry-run=server", "-f", str(manifest), check=False)
    assert forbidden_line(dry.stderr).startswith('configmaps "web" is forbidden: User "system:serviceaccount:')

    # The admin of the kubeconfig is unaffected.
    assert kubectl("apply", "--server-side", "-f", str(manifest)).returncode == 0
    assert teams.requests[-1].user == "kubernetes-admin"


def test_kubectl_get_and_delete_refusals_read_as_on_a_cluster(kubectl: KubectlRunner, teams: KubeAPIServer) -> None:
    teams.apply_object(configmap("web", "team-b"))
    teams.apply_object(deployment("web", "team-b"))
    teams.apply_object(configmap("web", "team-a"))

    def refusal(*args: str) -> str:
        proc = kubectl(AS_FLUX, *args, check=False)
        assert proc.returncode != 0
        return forbidden_line(proc.stderr)

    user = 'User "system:serviceaccount:team-a:flux"'
    assert refusal("get", "configmaps", "-n", "team-b") == (
        f'configmaps is forbidden: {user} cannot list resource "configmaps" in API group "" in the namespace "team-b"')
    assert refusal("get", "configmap", "web", "-n", "team-b") == (
        f'configmaps "web" is forbidden: {user} cannot get resource "configmaps" in API group "" in the namespace '
        '"team-b"')
    assert refusal("get", "deployments.apps", "web", "-n", "team-b") == (
        f'deployments.apps "web" is forbidden: {user} cannot get resource "deployments" in API group "apps" in the '
        'namespace "team-b"')
    assert refusal("get", "namespaces") == (
        f'namespaces is forbidden: {user} cannot list resource "namespaces" in API group "" at the cluster scope')
    assert refusal("get", "clusterroles") == (
        f'clusterroles.rbac.authorization.k8s.io is forbidden: {user} cannot list resource "clusterroles" in API '
        'group "rbac.authorization.k8s.io" at the cluster scope')
    assert refusal("delete", "configmap", "web", "-n", "team-b") == (
        f'configmaps "web" is forbidden: {user} cannot delete resource "configmaps" in API group "" in the '
        'namespace "team-b"')

    # edit in team-a: read, list and prune there; read its own namespace (a namespaced rule on
    # "namespaces" covers GET /api/v1/namespaces/team-a, whose namespace is team-a).
    assert kubectl(AS_FLUX, "get", "configmaps", "-n", "team-a", "-o", "name").stdout.split() == ["configmap/web"]
    assert kubectl(AS_FLUX, "get", "namespace", "team-a", "-o", "name").stdout.strip() == "namespace/team-a"
    assert refusal("get", "namespace", "team-b") == (
        f'namespaces "team-b" is forbidden: {user} cannot get resource "namespaces" in API group "" in the '
        'namespace "team-b"')
    kubectl(AS_FLUX, "delete", "configmap", "web", "-n", "team-a")
    assert teams.get_object("v1", "ConfigMap", "team-a", "web") is None
    # edit cannot read or write RBAC, not even in its own namespace.
    assert refusal("get", "rolebindings", "-n", "team-a") == (
        f'rolebindings.rbac.authorization.k8s.io is forbidden: {user} cannot list resource "rolebindings" in API '
        'group "rbac.authorization.k8s.io" in the namespace "team-a"')


def test_kubectl_auth_can_i_and_whoami_see_the_impersonated_user(kubectl: KubectlRunner, teams: KubeAPIServer) -> None:
    def can_i(*args: str) -> str:
        proc = kubectl(AS_FLUX, "auth", "can-i", *args, check=False)
        assert proc.returncode == (0 if proc.stdout.startswith("yes") else 1), proc.stderr
        return proc.stdout.strip()

    assert can_i("patch", "deployments.apps", "-n", "team-a") == "yes"
    assert can_i("patch", "deployments.apps", "-n", "team-b") == "no"
    assert can_i("create", "configmaps", "-n", "team-a") == "yes"
    assert can_i("get", "deployments.apps", "--subresource=status", "-n", "team-a") == "yes"
    assert can_i("patch", "deployments.apps", "--subresource=status", "-n", "team-a") == "no"
    assert can_i("create", "rolebindings.rbac.authorization.k8s.io", "-n", "team-a") == "no"
    assert can_i("list", "namespaces") == "no"
    assert can_i("get", "/version") == "yes"
    assert can_i("get", "/apis/apps/v1") == "yes"
    assert can_i("get", "/metrics") == "no"
    # The admin may do anything, as system:masters may.
    assert kubectl("auth", "can-i", "*", "*", "--all-namespaces").stdout.strip() == "yes"

    whoami = json.loads(kubectl(AS_FLUX, "auth", "whoami", "-o", "json").stdout)
    assert whoami["status"]["userInfo"] == {"username": FLUX, "groups": [
        "system:serviceaccounts", "system:serviceaccounts:team-a", "system:authenticated"]}
    # Groups given with the user replace the ServiceAccount's own; system:authenticated is added.
    given = json.loads(kubectl(AS_FLUX, "--as-group=ops", "auth", "whoami", "-o", "json").stdout)
    assert given["status"]["userInfo"]["groups"] == ["ops", "system:authenticated"]
    admin = json.loads(kubectl("auth", "whoami", "-o", "json").stdout)
    assert admin["status"]["userInfo"] == {"username": "kubernetes-admin",
                                           "groups": ["system:masters", "system:authenticated"]}
    assert kubectl("--as=someone", "--as-group=system:masters", "auth", "can-i", "delete", "namespaces").stdout \
        .strip() == "yes"


# --------------------------------------------------------------------------- #
# 2. Raw HTTP: the Status bodies, and which verb a request is
# --------------------------------------------------------------------------- #

def test_a_refusal_is_the_apiservers_403_status_byte_for_byte(teams: KubeAPIServer) -> None:
    path = "/apis/apps/v1/namespaces/team-b/deployments/web"
    refused = call(teams, "PATCH", path, deployment("web", "team-b"), content_type="application/apply-patch+yaml",
                   headers=as_flux(), fieldManager="kustomize-controller", force="true")
    assert refused.status_code == 403
    assert refused.headers["Content-Type"] == "application/json"
    assert list(refused.json()) == ["kind", "apiVersion", "metadata", "status", "message", "reason", "details",
                                    "code"]
    assert refused.json() == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": 'deployments.apps "web" is forbidden: User "system:serviceaccount:team-a:flux" cannot patch '
                   'resource "deployments" in API group "apps" in the namespace "team-b"',
        "reason": "Forbidden", "details": {"name": "web", "group": "apps", "kind": "deployments"}, "code": 403}

    # A collection request names no object; a core-group one names no group.
    listed = call(teams, "GET", "/api/v1/namespaces/team-b/secrets", headers=as_flux())
    assert listed.json()["message"] == ('secrets is forbidden: User "system:serviceaccount:team-a:flux" cannot list '
                                        'resource "secrets" in API group "" in the namespace "team-b"')
    assert listed.json()["details"] == {"kind": "secrets"}
    # A path outside the API: no resource at all.
    metrics = call(teams, "GET", "/metrics", headers=as_flux())
    assert metrics.status_code == 403
    assert metrics.json()["message"] == 'forbidden: User "system:serviceaccount:team-a:flux" cannot get path "/metrics"'
    assert metrics.json()["details"] == {}
    # Authorization comes before routing: what the user may not read is 403 even where nothing is served.
    assert call(teams, "GET", "/apis/example.com/v1/namespaces/team-b/widgets", headers=as_flux()).status_code == 403
    assert call(teams, "GET", "/apis/example.com/v1/namespaces/team-b/widgets").status_code == 404


@pytest.mark.parametrize(("method", "path", "query", "expected"), [
    ("GET", "/api/v1/namespaces/team-a/configmaps/web", {}, ("get", "", "configmaps", "", "team-a", "web")),
    ("GET", "/api/v1/namespaces/team-a/configmaps", {}, ("list", "", "configmaps", "", "team-a", "")),
    ("GET", "/api/v1/namespaces/team-a/configmaps", {"watch": "true"}, ("watch", "", "configmaps", "", "team-a", "")),
    ("GET", "/api/v1/namespaces/team-a/configmaps", {"watch": "false"}, ("list", "", "configmaps", "", "team-a", "")),
    ("GET", "/api/v1/namespaces/team-a/configmaps", {"fieldSelector": "metadata.name=web"},
     ("list", "", "configmaps", "", "team-a", "web")),
    ("POST", "/api/v1/namespaces/team-a/configmaps", {}, ("create", "", "configmaps", "", "team-a", "")),
    ("PUT", "/apis/apps/v1/namespaces/team-a/deployments/web/status", {},
     ("update", "apps", "deployments", "status", "team-a", "web")),
    ("PATCH", "/apis/apps/v1/namespaces/team-a/deployments/web", {}, ("patch", "apps", "deployments", "", "team-a",
                                                                      "web")),
    ("DELETE", "/api/v1/namespaces/team-a/configmaps/web", {}, ("delete", "", "configmaps", "", "team-a", "web")),
    ("DELETE", "/api/v1/namespaces/team-a/configmaps", {}, ("deletecollection", "", "configmaps", "", "team-a", "")),
    ("GET", "/api/v1/namespaces/team-a", {}, ("get", "", "namespaces", "", "team-a", "team-a")),
    ("PUT", "/api/v1/namespaces/team-a/finalize", {}, ("update", "", "namespaces", "finalize", "team-a", "team-a")),
    ("GET", "/api/v1/namespaces", {}, ("list", "", "namespaces", "", "", "")),
    ("GET", "/apis/rbac.authorization.k8s.io/v1/clusterroles/edit", {},
     ("get", "rbac.authorization.k8s.io", "clusterroles", "", "", "edit")),
])
def test_the_verb_and_scope_of_a_request_are_read_as_request_info_reads_them(
        method: str, path: str, query: dict[str, str], expected: tuple[str, ...]) -> None:
    attrs = request_attributes(method, path, query)
    assert attrs.resource_request
    assert (attrs.verb, attrs.api_group, attrs.resource, attrs.subresource, attrs.namespace, attrs.name) == expected


@pytest.mark.parametrize("path", ["/api", "/apis", "/api/v1", "/apis/apps", "/apis/apps/v1", "/version",
                                  "/openapi/v3", "/healthz"])
def test_discovery_is_a_non_resource_request_open_to_any_authenticated_user(teams: KubeAPIServer, path: str) -> None:
    attrs = request_attributes("GET", path, {})
    assert not attrs.resource_request and (attrs.verb, attrs.path) == ("get", path)
    assert call(teams, "GET", path, headers={"Impersonate-User": "nobody"}).status_code == 200


def test_a_server_side_apply_that_creates_needs_create_besides_patch(teams: KubeAPIServer) -> None:
    """kube-apiserver authorizes an apply as "patch", then asks again for "create" when the
    object turns out not to exist (the create authorization of handlers/patch.go)."""
    teams.apply_object(role("patcher", "team-b", {"apiGroups": [""], "resources": ["configmaps"],
                                                  "verbs": ["get", "patch"]}))
    teams.apply_object(binding("flux-patcher", "team-b", "Role", "patcher", service_account("flux", "team-a")))
    path = "/api/v1/namespaces/team-b/configmaps/settings"

    def apply(**params: str) -> requests.Response:
        return call(teams, "PATCH", path, configmap("settings", "team-b", mode="blue"), headers=as_flux(),
                    content_type="application/apply-patch+yaml", fieldManager="kustomize-controller", **params)

    for refused in (apply(dryRun="All"), apply()):
        assert refused.status_code == 403
        assert refused.json()["message"] == (
            'configmaps "settings" is forbidden: User "system:serviceaccount:team-a:flux" cannot create resource '
            '"configmaps" in API group "" in the namespace "team-b"')
        assert refused.json()["details"] == {"name": "settings", "kind": "configmaps"}
    assert teams.get_object("v1", "ConfigMap", "team-b", "settings") is None

    teams.apply_object(configmap("settings", "team-b", mode="green"), field_manager="someone-else")
    assert apply(force="true").status_code == 200  # an existing object only needs patch
    assert teams.get_object("v1", "ConfigMap", "team-b", "settings")["data"] == {"mode": "blue"}

    # Validation comes before that second authorization, as in the registry's create path.
    bad = call(teams, "PATCH", "/api/v1/namespaces/team-b/configmaps/Bad_Name", configmap("Bad_Name", "team-b"),
               headers=as_flux(), content_type="application/apply-patch+yaml", fieldManager="k")
    assert bad.status_code == 422


def test_resource_names_and_subresources_narrow_a_rule(teams: KubeAPIServer) -> None:
    teams.apply_object(deployment("web", "team-b"))
    teams.apply_object(configmap("allowed", "team-b"))
    teams.apply_object(configmap("other", "team-b"))
    teams.apply_object(role("narrow", "team-b",
                            {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["allowed"],
                             "verbs": ["get", "list", "watch"]},
                            {"apiGroups": ["apps"], "resources": ["deployments/status"], "verbs": ["get", "patch"]},
                            {"apiGroups": ["*"], "resources": ["*/scale"], "verbs": ["get"]}))
    teams.apply_object(binding("flux-narrow", "team-b", "Role", "narrow", service_account("flux", "team-a")))
    cms = "/api/v1/namespaces/team-b/configmaps"
    assert call(teams, "GET", f"{cms}/allowed", headers=as_flux()).status_code == 200
    assert call(teams, "GET", f"{cms}/other", headers=as_flux()).status_code == 403
    assert call(teams, "GET", cms, headers=as_flux()).status_code == 403
    # A list selecting exactly one name is about that object.
    selected = call(teams, "GET", cms, headers=as_flux(), fieldSelector="metadata.name=allowed")
    assert selected.status_code == 200 and [i["metadata"]["name"] for i in selected.json()["items"]] == ["allowed"]
    refused = call(teams, "GET", cms, headers=as_flux(), fieldSelector="metadata.name=other")
    assert refused.json()["message"].startswith('configmaps "other" is forbidden: User "system:serviceaccount:team-a:'
                                                'flux" cannot list resource "configmaps"')

    web = "/apis/apps/v1/namespaces/team-b/deployments/web"
    status = call(teams, "PATCH", f"{web}/status", {"status": {"observedGeneration": 1}}, headers=as_flux(),
                  content_type="application/merge-patch+json")
    assert status.status_code == 200
    main = call(teams, "PATCH", web, {"spec": {"replicas": 3}}, headers=as_flux(),
                content_type="application/merge-patch+json")
    assert main.json()["message"] == ('deployments.apps "web" is forbidden: User "system:serviceaccount:team-a:flux" '
                                      'cannot patch resource "deployments" in API group "apps" in the namespace '
                                      '"team-b"')
    assert call(teams, "GET", f"{web}/scale", headers=as_flux()).status_code == 200  # "*/scale"
    refused = call(teams, "PUT", f"{web}/scale", {"spec": {"replicas": 1}}, headers=as_flux())
    assert refused.json()["message"].endswith('cannot update resource "deployments/scale" in API group "apps" in the '
                                              'namespace "team-b"')
    assert refused.json()["details"] == {"name": "web", "group": "apps", "kind": "deployments"}


def test_deletecollection_and_watch_are_verbs_of_their_own(teams: KubeAPIServer,
                                                           api_client: k8s_client.ApiClient) -> None:
    teams.apply_object(role("lister", "team-b", {"apiGroups": [""], "resources": ["configmaps"],
                                                 "verbs": ["list", "delete"]}))
    teams.apply_object(binding("flux-lister", "team-b", "Role", "lister", service_account("flux", "team-a")))
    cms = "/api/v1/namespaces/team-b/configmaps"
    assert call(teams, "GET", cms, headers=as_flux()).status_code == 200
    gone = call(teams, "DELETE", cms, headers=as_flux())
    assert gone.json()["message"] == ('configmaps is forbidden: User "system:serviceaccount:team-a:flux" cannot '
                                      'deletecollection resource "configmaps" in API group "" in the namespace '
                                      '"team-b"')

    impersonating = k8s_client.ApiClient(api_client.configuration)
    impersonating.set_default_header("Impersonate-User", FLUX)
    core = k8s_client.CoreV1Api(impersonating)
    assert core.list_namespaced_config_map("team-b").items == []
    with pytest.raises(ApiException) as refused:
        for _ in k8s_watch.Watch().stream(core.list_namespaced_config_map, "team-b", timeout_seconds=1):
            pass
    assert refused.value.status == 403
    assert json.loads(refused.value.body)["message"] == (
        'configmaps is forbidden: User "system:serviceaccount:team-a:flux" cannot watch resource "configmaps" in '
        'API group "" in the namespace "team-b"')


def test_bindings_to_missing_roles_are_named_in_the_refusal(teams: KubeAPIServer) -> None:
    teams.apply_object(binding("ghost", "team-b", "ClusterRole", "ghost-editor", service_account("flux", "team-a")))
    one = call(teams, "GET", "/api/v1/namespaces/team-b/pods", headers=as_flux())
    assert one.json()["message"] == (
        'pods is forbidden: User "system:serviceaccount:team-a:flux" cannot list resource "pods" in API group "" in '
        'the namespace "team-b": RBAC: clusterrole.rbac.authorization.k8s.io "ghost-editor" not found')
    teams.apply_object(binding("phantom", "team-b", "Role", "phantom", {"kind": "Group", "apiGroup": RBAC,
                                                                      "name": "system:serviceaccounts"}))
    two = call(teams, "GET", "/api/v1/namespaces/team-b/pods", headers=as_flux())
    assert two.json()["message"].endswith(': RBAC: [clusterrole.rbac.authorization.k8s.io "ghost-editor" not found, '
                                          'role.rbac.authorization.k8s.io "phantom" not found]')
    # A binding for someone else is no concern of this user's.
    assert "RBAC" not in call(teams, "GET", "/api/v1/namespaces/team-b/pods",
                              headers={"Impersonate-User": "alice"}).json()["message"]


def test_cluster_role_bindings_users_and_groups(teams: KubeAPIServer) -> None:
    teams.apply_object(binding("auditors", None, "ClusterRole", "view", {"kind": "Group", "apiGroup": RBAC,
                                                                        "name": "auditors"}))
    teams.apply_object(binding("alice", None, "ClusterRole", "cluster-admin", {"kind": "User", "apiGroup": RBAC,
                                                                             "name": "alice"}))
    pods = "/api/v1/namespaces/team-b/pods"
    assert call(teams, "GET", pods, headers={"Impersonate-User": "bob", "Impersonate-Group": "auditors"}) \
        .status_code == 200
    assert call(teams, "GET", pods, headers={"Impersonate-User": "bob"}).status_code == 403
    assert call(teams, "DELETE", "/api/v1/namespaces/team-b", headers={"Impersonate-User": "alice"}) \
        .status_code == 200
    # A ServiceAccount subject without a namespace is the binding's namespace's.
    teams.apply_object(binding("local-flux", "default", "ClusterRole", "view", {"kind": "ServiceAccount",
                                                                              "name": "flux"}))
    assert call(teams, "GET", "/api/v1/namespaces/default/pods", headers=as_flux()).status_code == 403
    assert call(teams, "GET", "/api/v1/namespaces/default/pods",
                headers={"Impersonate-User": "system:serviceaccount:default:flux"}).status_code == 200
    teams.apply_object(binding("flux-view", None, "ClusterRole", "view", service_account("flux", "team-a")))
    assert call(teams, "GET", "/api/v1/namespaces/default/pods", headers=as_flux()).status_code == 200


# --------------------------------------------------------------------------- #
# 3. Who may impersonate whom
# --------------------------------------------------------------------------- #

def test_impersonation_needs_the_impersonate_verb(teams: KubeAPIServer) -> None:
    teams.add_user("bob-token", "bob")
    pods = "/api/v1/namespaces/team-a/pods"
    refusals = {
        "users": call(teams, "GET", pods, token="bob-token", headers={"Impersonate-User": "alice"}),
        "serviceaccounts": call(teams, "GET", pods, token="bob-token", headers=as_flux()),
    }
    assert refusals["users"].status_code == 403
    assert refusals["users"].json() == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": 'users "alice" is forbidden: User "bob" cannot impersonate resource "users" in API group "" at '
                   "the cluster scope",
        "reason": "Forbidden", "details": {"name": "alice", "kind": "users"}, "code": 403}
    assert refusals["serviceaccounts"].json()["message"] == (
        'serviceaccounts "flux" is forbidden: User "bob" cannot impersonate resource "serviceaccounts" in API group '
        '"" in the namespace "team-a"')
    # Without impersonation, bob is bob: RBAC gives him nothing.
    assert call(teams, "GET", pods, token="bob-token").json()["message"].startswith(
        'pods is forbidden: User "bob" cannot list')

    # edit grants impersonating the ServiceAccounts of its namespace (and nothing else).
    teams.apply_object(binding("bob-edit", "team-a", "ClusterRole", "edit", {"kind": "User", "apiGroup": RBAC,
                                                                           "name": "bob"}))
    assert call(teams, "GET", "/api/v1/namespaces/team-a/configmaps", token="bob-token",
                headers=as_flux()).status_code == 200
    assert teams.requests[-1].user == FLUX
    group = call(teams, "GET", pods, token="bob-token", headers=as_flux(**{"Impersonate-Group": "admins"}))
    assert group.json()["message"] == ('groups "admins" is forbidden: User "bob" cannot impersonate resource "groups" '
                                       'in API group "" at the cluster scope')
    extra = call(teams, "GET", pods, token="bob-token", headers=as_flux(**{"Impersonate-Extra-Scopes": "view"}))
    assert extra.json()["message"] == (
        'userextras.authentication.k8s.io "view" is forbidden: User "bob" cannot impersonate resource '
        '"userextras/scopes" in API group "authentication.k8s.io" at the cluster scope')
    uid = call(teams, "GET", pods, token="bob-token", headers=as_flux(**{"Impersonate-Uid": "1234"}))
    assert uid.json()["message"] == ('uids.authentication.k8s.io "1234" is forbidden: User "bob" cannot impersonate '
                                     'resource "uids" in API group "authentication.k8s.io" at the cluster scope')

    # A group without a user is not a request the apiserver can act on.
    orphan = call(teams, "GET", pods, headers={"Impersonate-Group": "admins"})
    assert orphan.status_code == 500 and orphan.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert orphan.text == (f'Internal Server Error: "{pods}": requested [{{Group  admins    }}] without '
                           "impersonating a user\n")


def test_the_admin_impersonates_with_extras_and_uid(teams: KubeAPIServer) -> None:
    review = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
    path = "/apis/authentication.k8s.io/v1/selfsubjectreviews"
    answer = call(teams, "POST", path, review, headers={
        "Impersonate-User": "carol", "Impersonate-Uid": "c-1", "Impersonate-Extra-Acme.com%2Fteam": "blue",
        "Impersonate-Group": "team-blue"})
    assert answer.status_code == 201
    assert answer.json()["status"]["userInfo"] == {"username": "carol", "uid": "c-1",
                                                   "groups": ["team-blue", "system:authenticated"],
                                                   "extra": {"acme.com/team": ["blue"]}}
    # Impersonating system:unauthenticated leaves out system:authenticated, and with it the
    # right to ask who one is (system:basic-user is bound to authenticated users only).
    anonymous = call(teams, "POST", path, review, headers={"Impersonate-User": "carol",
                                                           "Impersonate-Group": "system:unauthenticated"})
    assert anonymous.json()["message"] == (
        'selfsubjectreviews.authentication.k8s.io is forbidden: User "carol" cannot create resource '
        '"selfsubjectreviews" in API group "authentication.k8s.io" at the cluster scope')
    # /version stays open to them (system:public-info-viewer), discovery does not.
    assert call(teams, "GET", "/version", headers={"Impersonate-User": "system:anonymous"}).status_code == 200
    assert call(teams, "GET", "/apis", headers={"Impersonate-User": "system:anonymous"}).json()["message"] == (
        'forbidden: User "system:anonymous" cannot get path "/apis"')


# --------------------------------------------------------------------------- #
# 4. The official Python client
# --------------------------------------------------------------------------- #

def test_python_client_as_a_token_user_and_impersonating(teams: KubeAPIServer, api_client: k8s_client.ApiClient,
                                                         tmp_path: Path) -> None:
    teams.add_user("flux-token", FLUX)
    configuration = k8s_client.Configuration()
    configuration.host = teams.url
    configuration.api_key = {"authorization": "flux-token"}
    configuration.api_key_prefix = {"authorization": "Bearer"}
    as_token = k8s_client.CoreV1Api(k8s_client.ApiClient(configuration))
    assert as_token.create_namespaced_config_map("team-a", configmap("web", "team-a")).metadata.name == "web"
    with pytest.raises(ApiException) as refused:
        as_token.create_namespaced_config_map("team-b", configmap("web", "team-b"))
    assert refused.value.status == 403
    assert json.loads(refused.value.body)["message"] == (
        'configmaps is forbidden: User "system:serviceaccount:team-a:flux" cannot create resource "configmaps" in API '
        'group "" in the namespace "team-b"')

    impersonating = k8s_client.ApiClient(api_client.configuration)
    impersonating.set_default_header("Impersonate-User", FLUX)
    dyn = DynamicClient(impersonating, cache_file=str(tmp_path / "discovery.json"))
    configmaps = dyn.resources.get(api_version="v1", kind="ConfigMap")
    applied = configmaps.server_side_apply(body=configmap("applied", "team-a"), name="applied", namespace="team-a",
                                           field_manager="kustomize-controller")
    assert applied.metadata.name == "applied"
    with pytest.raises(ForbiddenError) as forbidden:
        configmaps.server_side_apply(body=configmap("applied", "team-b"), name="applied", namespace="team-b",
                                     field_manager="kustomize-controller")
    assert json.loads(forbidden.value.body)["reason"] == "Forbidden"
    # The client the test started from still acts as the admin.
    assert k8s_client.CoreV1Api(api_client).create_namespaced_config_map(
        "team-b", configmap("web", "team-b")).metadata.name == "web"
    assert teams.requests[-1].user == "kubernetes-admin"
