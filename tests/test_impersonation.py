"""Herald's Kubernetes client acting as a Kustomization's ServiceAccount.

Flux's ``spec.serviceAccountName`` makes kustomize-controller impersonate
``system:serviceaccount:<namespace>:<name>`` for every request of that Kustomization, so that
RBAC, not the controller's own rights, decides what a tenant's Git repository may change.
``Cluster.impersonating`` does the same; the test API server authorizes impersonation and RBAC
as kube-apiserver does (``tests/test_kubeapi_rbac.py`` checks it against kubectl).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

from reconciler.apply import ApplyEngine, ApplyFailed
from reconciler.inventory import Inventory
from reconciler.kube import ApiRefusal, Cluster, request_json
from reconciler.render import Manifest
from tests.kubeapi import KubeAPIServer
from tests.test_kubeapi_rbac import (  # noqa: F401 (teams: the fixture)
    FLUX, RBAC, binding, configmap, role, service_account, teams)

FORBIDDEN_IN_TEAM_B = ('configmaps "web" is forbidden: User "system:serviceaccount:team-a:flux" cannot patch '
                       'resource "configmaps" in API group "" in the namespace "team-b"')


@pytest.fixture
def admin(teams: KubeAPIServer, kubeconfig: Path) -> Cluster:  # noqa: F811 (teams: the fixture)
    """Herald's own connection: the kubeconfig's admin, who may impersonate."""
    return Cluster(k8s_config.new_client_from_config(config_file=str(kubeconfig)))


def users_since(kube_api: KubeAPIServer, start: int) -> set[str]:
    return {r.user for r in kube_api.requests[start:]}


def whoami(cluster: Cluster) -> dict[str, object]:
    review = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
    return request_json(cluster.api_client, "POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                        body=review)["status"]["userInfo"]


def test_a_service_account_applies_in_its_namespace_and_is_refused_in_another(
        teams: KubeAPIServer, admin: Cluster) -> None:  # noqa: F811 (teams: the fixture)
    flux = admin.impersonating(FLUX)
    start = len(teams.requests)
    applied = flux.server_side_apply(configmap("web", "team-a"))
    assert applied["metadata"]["namespace"] == "team-a"
    assert teams.get_object("v1", "ConfigMap", "team-a", "web") is not None
    assert users_since(teams, start) == {FLUX}  # its discovery too

    with pytest.raises(ApiRefusal) as refused:
        flux.server_side_apply(configmap("web", "team-b"))
    assert (refused.value.code, refused.value.reason, refused.value.message) == (403, "Forbidden",
                                                                                  FORBIDDEN_IN_TEAM_B)
    assert not refused.value.transient
    with pytest.raises(ApiRefusal) as dry:
        flux.dry_run(Manifest(configmap("web", "team-b")))
    assert (dry.value.code, dry.value.message) == (403, FORBIDDEN_IN_TEAM_B)
    assert teams.get_object("v1", "ConfigMap", "team-b", "web") is None

    # The Cluster it came from is still the admin, on every request.
    start = len(teams.requests)
    admin.server_side_apply(configmap("web", "team-b"))
    assert admin.get("v1", "ConfigMap", "team-b", "web") is not None
    assert users_since(teams, start) == {"kubernetes-admin"}
    assert not [h for h in admin.api_client.default_headers if h.lower().startswith("impersonate-")]
    assert admin.user is None and flux.user == FLUX


def test_reads_lists_and_prunes_are_impersonated_too(teams: KubeAPIServer, admin: Cluster) -> None:  # noqa: F811
    for ns in ("team-a", "team-b"):
        admin.server_side_apply(configmap("web", ns))
    flux = admin.impersonating(FLUX)

    assert flux.get("v1", "ConfigMap", "team-a", "web")["metadata"]["name"] == "web"
    with pytest.raises(ApiRefusal) as read:
        flux.get("v1", "ConfigMap", "team-b", "web")
    assert read.value.message == FORBIDDEN_IN_TEAM_B.replace("cannot patch", "cannot get")

    assert [o["metadata"]["name"] for o in flux.list_objects("v1", "ConfigMap", "team-a")] == ["web"]
    assert flux.list_objects("v1", "ConfigMap", "team-b") is None  # a refused LIST: read one by one

    with pytest.raises(ApiRefusal) as pruned:
        flux.delete("v1", "ConfigMap", "team-b", "web")
    assert (pruned.value.code, pruned.value.message) == (403, FORBIDDEN_IN_TEAM_B.replace("cannot patch",
                                                                                           "cannot delete"))
    assert flux.delete("v1", "ConfigMap", "team-a", "web") is True
    assert flux.wait_gone("v1", "ConfigMap", "team-a", "web", timeout=5)
    assert admin.get("v1", "ConfigMap", "team-b", "web") is not None


def test_an_apply_that_creates_needs_the_create_verb(teams: KubeAPIServer, admin: Cluster) -> None:  # noqa: F811
    """kube-apiserver authorizes a server-side apply as "patch", and once more as "create"
    when the object does not exist yet."""
    teams.apply_object(role("patcher", "team-b", {"apiGroups": [""], "resources": ["configmaps"],
                                                  "verbs": ["get", "patch"]}))
    teams.apply_object(binding("flux-patcher", "team-b", "Role", "patcher", service_account("flux", "team-a")))
    flux = admin.impersonating(FLUX)
    with pytest.raises(ApiRefusal) as refused:
        flux.server_side_apply(configmap("web", "team-b"))
    assert refused.value.message == FORBIDDEN_IN_TEAM_B.replace("cannot patch", "cannot create")
    admin.server_side_apply(configmap("web", "team-b", greeting="hi"))
    assert flux.server_side_apply(configmap("web", "team-b", greeting="hello"))["data"] == {"greeting": "hello"}


def test_groups_go_one_header_each_and_rbac_sees_them(teams: KubeAPIServer, admin: Cluster) -> None:  # noqa: F811
    deployer = admin.impersonating("ci-bot", ["deployers", "ops,oncall"])
    assert whoami(deployer) == {"username": "ci-bot", "groups": ["deployers", "ops,oncall", "system:authenticated"]}
    assert whoami(admin.impersonating(FLUX)) == {"username": FLUX, "groups": [
        "system:serviceaccounts", "system:serviceaccounts:team-a", "system:authenticated"]}
    assert whoami(admin)["username"] == "kubernetes-admin"

    with pytest.raises(ApiRefusal):
        deployer.server_side_apply(configmap("web", "team-b"))
    teams.apply_object(binding("deployers", None, "ClusterRole", "edit",
                               {"kind": "Group", "apiGroup": RBAC, "name": "deployers"}))
    assert deployer.server_side_apply(configmap("web", "team-b"))["metadata"]["namespace"] == "team-b"


def test_one_cluster_per_identity_sharing_the_connection_settings(admin: Cluster, tmp_path: Path,
                                                                  teams: KubeAPIServer,  # noqa: F811
                                                                  kubeconfig: Path) -> None:
    flux = admin.impersonating(FLUX)
    assert admin.impersonating(FLUX) is flux
    assert admin.impersonating(FLUX, ["ops"]) is not flux
    assert flux.impersonating("someone") is admin.impersonating("someone")  # no nesting: from the origin
    assert flux.api_client is not admin.api_client
    assert flux.api_client.configuration is admin.api_client.configuration  # credentials, TLS, refreshes
    # No shared mutable headers: what one client is told to send, the other does not.
    flux.api_client.set_default_header("X-Trace", "1")
    assert "X-Trace" not in admin.api_client.default_headers
    assert whoami(admin)["username"] == "kubernetes-admin" and whoami(flux)["username"] == FLUX
    for bad in ("", "x\r\nImpersonate-Group: system:masters"):
        with pytest.raises(ValueError):
            admin.impersonating(bad)

    # With a discovery cache, the impersonating Cluster reads it instead of asking again.
    cached = Cluster(k8s_config.new_client_from_config(config_file=str(kubeconfig)), cache_dir=tmp_path / "cache")
    assert cached.is_served("v1", "ConfigMap")
    start = len(teams.requests)
    cached.impersonating(FLUX).server_side_apply(configmap("cached", "team-a"))
    assert [r.path for r in teams.requests[start:]] == ["/api/v1/namespaces/team-a/configmaps/cached"]
    assert users_since(teams, start) == {FLUX}


def test_credentials_that_may_not_impersonate_are_refused(teams: KubeAPIServer) -> None:  # noqa: F811
    teams.add_user("bob-token", "bob")
    configuration = k8s_client.Configuration()
    configuration.host = teams.url
    configuration.api_key = {"authorization": "bob-token"}
    configuration.api_key_prefix = {"authorization": "Bearer"}
    bob = Cluster(k8s_client.ApiClient(configuration))
    flux = bob.impersonating(FLUX)  # no request yet
    with pytest.raises(ApiRefusal) as refused:
        flux.server_side_apply(configmap("web", "team-a"))
    assert (refused.value.code, refused.value.message) == (403, (
        'serviceaccounts "flux" is forbidden: User "bob" cannot impersonate resource "serviceaccounts" in API group '
        '"" in the namespace "team-a"'))

    # edit grants impersonating the ServiceAccounts of its namespace.
    teams.apply_object(binding("bob-edit", "team-a", "ClusterRole", "edit",
                               {"kind": "User", "apiGroup": RBAC, "name": "bob"}))
    assert flux.server_side_apply(configmap("web", "team-a"))["metadata"]["name"] == "web"


def test_the_apply_engine_reports_the_refusal_as_flux_does(teams: KubeAPIServer, admin: Cluster) -> None:  # noqa: F811
    flux = admin.impersonating(FLUX)
    owner = {"kustomize.toolkit.fluxcd.io/name": "team-a", "kustomize.toolkit.fluxcd.io/namespace": "team-a"}
    manifests = [Manifest(configmap("web", "team-a")), Manifest(configmap("web", "team-b"))]
    with pytest.raises(ApplyFailed) as failed:
        ApplyEngine(flux, owner, Inventory(), timeout=10, poll=0.05).apply(manifests)
    # The engine reads the live object before its dry run; that read is the first request refused.
    assert str(failed.value) == ("ConfigMap/team-b/web dry-run failed (Forbidden): "
                                 + FORBIDDEN_IN_TEAM_B.replace("cannot patch", "cannot get"))
    assert teams.get_object("v1", "ConfigMap", "team-b", "web") is None
