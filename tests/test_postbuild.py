"""After the build, as kustomize-controller (issue 16): SOPS-encrypted manifests are decrypted
with the age keys of `spec.decryption.secretRef`, then `${variables}` are substituted from
`spec.postBuild` (inline, and ConfigMaps and Secrets in the cluster), before anything is applied.

Each scenario runs the real reconciler on a real Git repository against the test API server;
the encryption is the real `sops` with a key from the real `age-keygen`."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

from tests.fixtures_herald import Repo
from tests.kubeapi import KubeAPIServer
from tests.sops import age_keygen, sops_encrypt, tools_missing
from tests.test_honest_runs import deliver, drain_events, finals, herald_config, kustomization, make_worker, push  # noqa: F401

NAMESPACE = "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n"
DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
  labels: {cluster: "${cluster_name}", region: "${region:=eu-west-1}"}
spec:
  replicas: ${replicas}
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: "nginx:${nginx_tag}"}]}
"""
LITERAL = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: script
  namespace: shop
  annotations: {kustomize.toolkit.fluxcd.io/substitute: disabled}
data: {run.sh: 'echo ${HOME}'}
"""


def core(kubeconfig: Path) -> k8s_client.CoreV1Api:
    return k8s_client.CoreV1Api(k8s_config.new_client_from_config(str(kubeconfig)))


def create(kubeconfig: Path, kind: str, name: str, data: dict[str, str]) -> None:
    """What an operator (or another Kustomization) put in the cluster beforehand."""
    api = core(kubeconfig)
    try:
        api.create_namespace(k8s_client.V1Namespace(metadata=k8s_client.V1ObjectMeta(name="flux-system")))
    except k8s_client.ApiException as exc:
        if exc.status != 409:
            raise
    meta = k8s_client.V1ObjectMeta(name=name, namespace="flux-system")
    if kind == "Secret":
        encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
        api.create_namespaced_secret("flux-system", k8s_client.V1Secret(metadata=meta, data=encoded))
    else:
        api.create_namespaced_config_map("flux-system", k8s_client.V1ConfigMap(metadata=meta, data=data))


def test_variables_from_the_spec_and_a_configmap_are_substituted_before_the_apply(
        make_worker, tmp_path: Path, repo: Repo, kube_api: KubeAPIServer, kubeconfig: Path) -> None:
    sha = repo.commit({"deploy/ns.yaml": NAMESPACE, "deploy/web.yaml": DEPLOYMENT, "deploy/script.yaml": LITERAL},
                      "the web tier, per cluster")
    create(kubeconfig, "ConfigMap", "cluster-vars", {"cluster_name": "prod-1", "replicas": "3"})
    post_build = {"substitute": {"nginx_tag": "1.27"},
                  "substituteFrom": [{"kind": "ConfigMap", "name": "cluster-vars"},
                                     {"kind": "Secret", "name": "cluster-secrets", "optional": True}]}
    worker = make_worker(herald_config(tmp_path / "herald.yaml", repo.url,
                                       kustomization("app", "./deploy", postBuild=post_build)))
    deliver(worker, push(sha))
    assert finals(drain_events(worker.bus)) == [("Kustomization", "app", "ReconciliationSucceeded")]
    web = kube_api.get_object("apps/v1", "Deployment", "shop", "web") or {}
    assert web["spec"]["replicas"] == 3  # an integer, as Flux makes it
    labels = web["metadata"]["labels"]
    assert (labels["cluster"], labels["region"]) == ("prod-1", "eu-west-1")
    assert web["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.27"
    # an object that opts out keeps its ${...}
    assert (kube_api.get_object("v1", "ConfigMap", "shop", "script") or {})["data"] == {"run.sh": "echo ${HOME}"}


def test_a_variable_nobody_set_fails_the_build_naming_it(
        make_worker, tmp_path: Path, repo: Repo, kube_api: KubeAPIServer) -> None:
    sha = repo.commit({"deploy/ns.yaml": NAMESPACE, "deploy/web.yaml": DEPLOYMENT}, "the web tier")
    worker = make_worker(herald_config(tmp_path / "herald.yaml", repo.url, kustomization(
        "app", "./deploy", postBuild={"substitute": {"nginx_tag": "1.27", "cluster_name": "prod-1"}})))
    deliver(worker, push(sha))
    [event] = [e for e in drain_events(worker.bus) if e["reason"] != "Progressing"]
    assert event["reason"] == "BuildFailed"
    assert "Deployment/shop/web" in event["message"] and "replicas" in event["message"]
    assert kube_api.get_object("apps/v1", "Deployment", "shop", "web") is None  # nothing half-substituted


def test_a_missing_configmap_that_is_not_optional_fails_the_build_naming_the_field(
        make_worker, tmp_path: Path, repo: Repo, kube_api: KubeAPIServer) -> None:
    sha = repo.commit({"deploy/ns.yaml": NAMESPACE}, "a namespace")
    worker = make_worker(herald_config(tmp_path / "herald.yaml", repo.url, kustomization(
        "app", "./deploy", postBuild={"substituteFrom": [{"kind": "ConfigMap", "name": "cluster-vars"}]})))
    deliver(worker, push(sha))
    [event] = [e for e in drain_events(worker.bus) if e["reason"] != "Progressing"]
    assert event["reason"] == "BuildFailed"
    assert "spec.postBuild.substituteFrom[0]" in event["message"] and "cluster-vars" in event["message"]


SECRET = b"""\
apiVersion: v1
kind: Secret
metadata: {name: db, namespace: shop}
stringData: {password: correct-horse-battery-staple}
"""


@pytest.fixture(scope="module")
def age_key():
    why = tools_missing()
    if why:
        pytest.fail(f"sops and age-keygen are needed for the decryption scenarios: {why}")
    return age_keygen()


def test_a_sops_encrypted_secret_is_applied_decrypted_with_the_age_key_from_the_cluster(
        make_worker, tmp_path: Path, repo: Repo, kube_api: KubeAPIServer, kubeconfig: Path, age_key) -> None:
    encrypted = sops_encrypt(SECRET, [age_key.recipient], input_type="yaml",
                             encrypted_regex="^(data|stringData)$").decode()
    assert "correct-horse" not in encrypted
    sha = repo.commit({"deploy/ns.yaml": NAMESPACE, "deploy/db.enc.yaml": encrypted}, "the database password")
    create(kubeconfig, "Secret", "sops-age", {"age.agekey": age_key.file})
    worker = make_worker(herald_config(tmp_path / "herald.yaml", repo.url, kustomization(
        "app", "./deploy", decryption={"provider": "sops", "secretRef": {"name": "sops-age"}})))
    deliver(worker, push(sha))
    assert finals(drain_events(worker.bus)) == [("Kustomization", "app", "ReconciliationSucceeded")]
    secret = kube_api.get_object("v1", "Secret", "shop", "db") or {}
    assert base64.b64decode(secret["data"]["password"]) == b"correct-horse-battery-staple"
    assert "sops" not in secret


def test_an_encrypted_secret_without_decryption_is_never_applied(
        make_worker, tmp_path: Path, repo: Repo, kube_api: KubeAPIServer, age_key) -> None:
    encrypted = sops_encrypt(SECRET, [age_key.recipient], input_type="yaml",
                             encrypted_regex="^(data|stringData)$").decode()
    sha = repo.commit({"deploy/ns.yaml": NAMESPACE, "deploy/db.enc.yaml": encrypted}, "the database password")
    worker = make_worker(herald_config(tmp_path / "herald.yaml", repo.url, kustomization("app", "./deploy")))
    deliver(worker, push(sha))
    [event] = [e for e in drain_events(worker.bus) if e["reason"] != "Progressing"]
    assert event["reason"] == "BuildFailed"
    assert "Secret/shop/db is SOPS encrypted, configuring decryption is required" in event["message"]
    assert kube_api.get_object("v1", "Secret", "shop", "db") is None


def test_the_wrong_key_fails_the_build_without_showing_a_key_or_a_value(
        make_worker, tmp_path: Path, repo: Repo, kube_api: KubeAPIServer, kubeconfig: Path, age_key) -> None:
    encrypted = sops_encrypt(SECRET, [age_key.recipient], input_type="yaml",
                             encrypted_regex="^(data|stringData)$").decode()
    sha = repo.commit({"deploy/ns.yaml": NAMESPACE, "deploy/db.enc.yaml": encrypted}, "the database password")
    other = age_keygen()
    create(kubeconfig, "Secret", "sops-age", {"age.agekey": other.file})
    worker = make_worker(herald_config(tmp_path / "herald.yaml", repo.url, kustomization(
        "app", "./deploy", decryption={"provider": "sops", "secretRef": {"name": "sops-age"}})))
    deliver(worker, push(sha))
    [event] = [e for e in drain_events(worker.bus) if e["reason"] != "Progressing"]
    assert event["reason"] == "BuildFailed" and "Secret shop/db" in event["message"]
    assert other.identity not in event["message"] and "correct-horse" not in event["message"]
