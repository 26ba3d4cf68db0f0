"""deploy/ and the Dockerfile: every kustomization renders, applies to a Kubernetes API server,
and holds what it promises.

- Every kustomization under deploy/ renders with `kubectl kustomize` and applies with
  `kubectl apply -k` (twice: the second changes nothing) to the API server of tests/kubeapi.py,
  after the CRDs of what it needs (Knative, KEDA, the RabbitMQ operator) were registered.
- Every object of a built-in kind is checked field by field against the `kubernetes` client's
  models (`attribute_map` / `openapi_types`), so a misspelt field fails here; the client itself
  ignores unknown keys. Knative, KEDA and RabbitMQ objects against the fields their projects
  document; Herald's CRDs are structural, and their example objects match their schemas.
- Every container runs as non-root on a read-only root filesystem with all capabilities
  dropped, RuntimeDefault seccomp, probes and resource limits.
- No Secret holds anything but placeholders, no base or overlay holds a Secret at all, and the
  commands that create the real ones produce the names and keys the workloads read.
- The receiver's and the notifier's ServiceAccounts are bound to nothing.
- Herald's containers get what Herald reads: the configuration (which `herald validate` accepts
  with the mounted Secrets), a writable state directory, the broker URL, and probes on the
  ports HERALD_LISTEN / HERALD_METRICS_LISTEN name.
"""

from __future__ import annotations

import base64
import copy
import functools
import hashlib
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s

from herald import config as herald_config

from .kubeapi import KubeAPIServer

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
# kubectl ships with every machine image here; a missing one must fail the run, not skip it.
KUBECTL = shutil.which("kubectl") or "kubectl"

# Every kustomization (not Component) under deploy/; test_every_kustomization_is_listed keeps
# this list complete.
KUSTOMIZATIONS = (
    "base",
    "example-secrets",
    "rabbitmq/operator",
    "rabbitmq/statefulset",
    "overlays/keda",
    "overlays/knative",
    "overlays/single",
    "overlays/namespaced-rbac",
    "overlays/from-cluster",
    "crds",
)
# The ones that install Herald itself (one of them per cluster).
HERALD_VARIANTS = ("base", "overlays/keda", "overlays/knative", "overlays/single", "overlays/namespaced-rbac",
                   "overlays/from-cluster")
# The ones whose configuration is the cluster's herald.dev/v1 objects, not a ConfigMap.
FROM_CLUSTER_VARIANTS = ("overlays/from-cluster",)
NAMESPACE = "herald"
IMAGE = "registry.example.com/herald:0.1.0"
RUN_AS_USER = 65532

CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}


# --------------------------------------------------------------------------------------------
# rendering
# --------------------------------------------------------------------------------------------

@functools.cache
def _render(rel: str) -> tuple[dict[str, Any], ...]:
    proc = subprocess.run([KUBECTL, "kustomize", str(DEPLOY / rel)], capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, f"kubectl kustomize deploy/{rel} failed:\n{proc.stderr}"
    return tuple(d for d in yaml.safe_load_all(proc.stdout) if d)


def render(rel: str) -> list[dict[str, Any]]:
    return copy.deepcopy(list(_render(rel)))


def by_kind(objs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind]


def one(objs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def ref(o: dict[str, Any]) -> str:
    meta = o["metadata"]
    return f"{o['kind']}/{meta.get('namespace', '')}/{meta['name']}".replace("//", "/")


def example_secrets() -> dict[str, dict[str, str]]:
    """name -> decoded data of every example Secret."""
    out = {}
    for s in by_kind(render("example-secrets"), "Secret"):
        out[s["metadata"]["name"]] = secret_data(s)
    return out


def secret_data(secret: dict[str, Any]) -> dict[str, str]:
    data = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
    data.update(secret.get("stringData") or {})
    return data


def pod_specs(objs: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(workload, its pod spec) for every object that runs containers."""
    for o in objs:
        knative = o["kind"] == "Service" and o["apiVersion"] == "serving.knative.dev/v1"
        if o["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job") or knative:
            yield o, o["spec"]["template"]["spec"]
        elif o["kind"] == "CronJob":
            yield o, o["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def herald_containers(objs: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]:
    for o, pod in pod_specs(objs):
        for c in pod["containers"]:
            if c["image"].split(":")[0] == IMAGE.split(":")[0]:
                yield o, pod, c


def env_of(c: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env") or []}


def test_every_kustomization_is_listed() -> None:
    found = set()
    for k in DEPLOY.rglob("kustomization.yaml"):
        doc = yaml.safe_load(k.read_text())
        if doc.get("kind") == "Component":
            continue
        found.add(k.parent.relative_to(DEPLOY).as_posix())
    assert found == set(KUSTOMIZATIONS)


@pytest.mark.parametrize("rel", KUSTOMIZATIONS)
def test_renders(rel: str) -> None:
    objs = render(rel)
    assert objs, f"deploy/{rel} renders nothing"
    seen = set()
    for o in objs:
        assert o.get("apiVersion") and o.get("kind") and o.get("metadata", {}).get("name"), o
        if o["kind"] not in CLUSTER_SCOPED:
            assert o["metadata"].get("namespace"), f"{ref(o)}: no namespace"
        assert ref(o) + o["apiVersion"] not in seen, f"{ref(o)} twice"
        seen.add(ref(o) + o["apiVersion"])


# --------------------------------------------------------------------------------------------
# applying to the test API server
# --------------------------------------------------------------------------------------------

def _crd(group: str, kind: str, plural: str, version: str) -> dict[str, Any]:
    """A minimal CRD for a kind that another project's operator would install."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {"group": group, "scope": "Namespaced",
                 "names": {"kind": kind, "plural": plural, "singular": kind.lower(), "listKind": f"{kind}List"},
                 "versions": [{"name": version, "served": True, "storage": True,
                               "schema": {"openAPIV3Schema": {"type": "object",
                                                              "x-kubernetes-preserve-unknown-fields": True}}}]},
    }


EXTERNAL_CRDS = (
    _crd("serving.knative.dev", "Service", "services", "v1"),
    _crd("keda.sh", "ScaledObject", "scaledobjects", "v1alpha1"),
    _crd("keda.sh", "TriggerAuthentication", "triggerauthentications", "v1alpha1"),
    _crd("rabbitmq.com", "RabbitmqCluster", "rabbitmqclusters", "v1beta1"),
)

Kubectl = Callable[..., subprocess.CompletedProcess]


@pytest.fixture
def kubectl(kube_api: KubeAPIServer, kubeconfig: Path, tmp_path: Path) -> Kubectl:
    """kubectl against the test API server, on which Knative, KEDA and the RabbitMQ operator
    are "installed" (their CRDs registered)."""
    for crd in EXTERNAL_CRDS:
        kube_api.apply_object(crd)

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
        argv = [KUBECTL, "--request-timeout=20s", f"--cache-dir={tmp_path / 'kube-cache'}", *args]
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, cwd=ROOT, check=False)
        if check:
            assert proc.returncode == 0, f"kubectl {' '.join(args)} failed:\n{proc.stderr}"
        return proc

    return run


@pytest.fixture
def kubectl_shell(kubectl: Kubectl, kubeconfig: Path, tmp_path: Path) -> Kubectl:
    """bash running a snippet whose kubectl commands talk to the test API server."""

    def run(script: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "KUBECONFIG": str(kubeconfig), "KUBECACHEDIR": str(tmp_path / "kube-cache")}
        proc = subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True,
                              env=env, timeout=120, cwd=ROOT, check=False)
        assert proc.returncode == 0, proc.stderr
        return proc

    return run


def _assert_on_server(kube_api: KubeAPIServer, objs: list[dict[str, Any]]) -> None:
    for o in objs:
        ns = o["metadata"].get("namespace") if o["kind"] not in CLUSTER_SCOPED else None
        live = kube_api.get_object(o["apiVersion"], o["kind"], ns, o["metadata"]["name"])
        assert live is not None, f"{ref(o)} was not created"


@pytest.mark.parametrize("rel", KUSTOMIZATIONS)
def test_applies_to_the_api_server(rel: str, kubectl: Kubectl, kube_api: KubeAPIServer) -> None:
    # deploy/README.md's first step; directories that hold no Namespace need it.
    kubectl("apply", "-f", "deploy/base/namespace.yaml")
    first = kubectl("apply", "-k", f"deploy/{rel}")
    assert "created" in first.stdout
    again = kubectl("apply", "-k", f"deploy/{rel}")
    assert " created" not in again.stdout, f"re-applying deploy/{rel} created objects:\n{again.stdout}"
    _assert_on_server(kube_api, render(rel))
    assert not kube_api.internal_errors


def _creating_secrets_by_apply(script: str) -> str:
    """A shell snippet with its `kubectl create secret` commands made into client-side dry runs
    piped to `kubectl apply` (the test API server does not take `kubectl create`'s protobuf)."""
    script = re.sub(r"\\\n\s*", " ", script)
    return re.sub(r"(kubectl -n \S+ create secret generic \S+)(.*)",
                  r"\1 --dry-run=client -o yaml\2 | kubectl apply -f -", script)


def test_the_readme_install_and_switch(kubectl: Kubectl, kubectl_shell: Kubectl, kube_api: KubeAPIServer) -> None:
    """Steps 1-3 of deploy/README.md: the namespace, the Secrets (from the examples: the test
    API server does not take `kubectl create secret`), RabbitMQ without an operator and the
    broker URL made from its user (the README's own shell blocks), the base; then the switch
    from base to knative with the README's delete command."""
    readme = (DEPLOY / "README.md").read_text()
    kubectl("apply", "-f", "deploy/base/namespace.yaml")
    for name in ("github-webhook", "git-credentials", "slack-bot-token", "github-status"):
        kubectl("apply", "-f", f"deploy/example-secrets/{name}.yaml")
    # The README's RabbitMQ without an operator, and its recipe for herald-broker, run against
    # this server: the broker URL carries the user the broker was given.
    blocks = re.findall(r"```sh\n(.*?)```", readme, re.DOTALL)
    for needle in ("kubectl apply -k deploy/rabbitmq/statefulset", "create secret generic herald-broker"):
        kubectl_shell(_creating_secrets_by_apply(next(b for b in blocks if needle in b)))
    user = secret_data(kube_api.get_object("v1", "Secret", NAMESPACE, "herald-rabbitmq-default-user"))
    broker = secret_data(kube_api.get_object("v1", "Secret", NAMESPACE, "herald-broker"))
    assert len(user["password"]) == 48
    assert broker["url"] == f"amqp://herald:{user['password']}@herald-rabbitmq.{NAMESPACE}.svc:5672/%2F"
    assert kube_api.get_object("apps/v1", "StatefulSet", NAMESPACE, "herald-rabbitmq") is not None
    kubectl("apply", "-k", "deploy/base")
    _assert_on_server(kube_api, render("base"))
    switch = re.search(r"`kubectl -n herald delete (deployment,service,ingress,poddisruptionbudget,networkpolicy) "
                       r"herald-receiver`", readme)
    assert switch, "the README no longer says how to move from base to knative"
    kubectl("-n", NAMESPACE, "delete", switch.group(1), "herald-receiver")
    kubectl("apply", "-k", "deploy/overlays/knative")
    assert kube_api.get_object("apps/v1", "Deployment", NAMESPACE, "herald-receiver") is None
    assert kube_api.get_object("v1", "Service", NAMESPACE, "herald-receiver") is None
    assert kube_api.get_object("serving.knative.dev/v1", "Service", NAMESPACE, "herald-receiver") is not None
    _assert_on_server(kube_api, render("overlays/knative"))


def test_herald_crds_and_their_examples_apply(kubectl: Kubectl, kube_api: KubeAPIServer) -> None:
    kubectl("apply", "-k", "deploy/crds")
    for crd in render("crds"):
        live = kube_api.get_object("apiextensions.k8s.io/v1", "CustomResourceDefinition", None,
                                   crd["metadata"]["name"])
        conditions = {c["type"]: c["status"] for c in live["status"]["conditions"]}
        assert conditions.get("Established") == "True"
    kubectl("apply", "-f", "deploy/base/namespace.yaml")
    kubectl("apply", "-f", "deploy/crds/examples/herald.yaml")
    examples = [d for d in yaml.safe_load_all((DEPLOY / "crds/examples/herald.yaml").read_text()) if d]
    assert {e["kind"] for e in examples} == {c["spec"]["names"]["kind"] for c in render("crds")}
    _assert_on_server(kube_api, examples)
    listed = kubectl("-n", NAMESPACE, "get", "herald", "-o", "name")
    assert len(listed.stdout.split()) == len(examples)


# --------------------------------------------------------------------------------------------
# field names: strict checks against the kubernetes client's models
# --------------------------------------------------------------------------------------------

_PRIMITIVES: dict[str, tuple[type, ...]] = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,),
                                            "datetime": (str,), "date": (str,), "bytes": (str,)}


def model_problems(value: Any, type_name: str, path: str) -> list[str]:
    """Keys that are not fields of the model, and values of the wrong JSON type."""
    if type_name == "object":
        return []
    if type_name in _PRIMITIVES:
        ok = isinstance(value, _PRIMITIVES[type_name]) and not (type_name != "bool" and isinstance(value, bool))
        return [] if ok else [f"{path}: expected {type_name}, got {value!r}"]
    m = re.fullmatch(r"[lL]ist\[(.+)\]", type_name)
    if m:
        if not isinstance(value, list):
            return [f"{path}: expected a list"]
        return [p for i, item in enumerate(value) for p in model_problems(item, m.group(1), f"{path}[{i}]")]
    m = re.fullmatch(r"dict\((\w+), (.+)\)|Dict\[(\w+), (.+)\]", type_name)
    if m:
        if not isinstance(value, dict):
            return [f"{path}: expected a mapping"]
        value_type = m.group(2) or m.group(4)
        return [p for k, v in value.items() for p in model_problems(v, value_type, f"{path}.{k}")]
    model = getattr(k8s, type_name)
    if not isinstance(value, dict):
        return [f"{path}: expected a {type_name} mapping"]
    by_json = {json_name: attr for attr, json_name in model.attribute_map.items()}
    problems = []
    for key, sub in value.items():
        if key not in by_json:
            problems.append(f"{path}.{key}: not a field of {type_name}")
            continue
        problems += model_problems(sub, model.openapi_types[by_json[key]], f"{path}.{key}")
    return problems


def model_name(obj: dict[str, Any]) -> str | None:
    version = obj["apiVersion"].rpartition("/")[2]
    name = version[0].upper() + version[1:] + obj["kind"]
    return name if hasattr(k8s, name) and obj["apiVersion"] != "serving.knative.dev/v1" else None


# The fields of other projects' kinds that these manifests may use, from their documentation
# (KEDA's ScaledObject/TriggerAuthentication and rabbitmq trigger, Knative Serving's Service,
# the RabbitMQ cluster operator's RabbitmqCluster). A shape is a model name, a primitive
# ("str", "int", "bool", "quantity", "map", "any"), a dict of field -> shape, or ["list", shape].
SCALED_OBJECT = {
    "scaleTargetRef": {"apiVersion": "str", "kind": "str", "name": "str", "envSourceContainerName": "str"},
    "pollingInterval": "int", "cooldownPeriod": "int", "initialCooldownPeriod": "int",
    "idleReplicaCount": "int", "minReplicaCount": "int", "maxReplicaCount": "int",
    "fallback": {"failureThreshold": "int", "replicas": "int", "behavior": "str"},
    "advanced": "any",
    "triggers": ["list", {"type": "str", "name": "str", "metadata": "map", "metricType": "str",
                          "useCachedMetrics": "bool", "authenticationRef": {"name": "str", "kind": "str"}}],
}
TRIGGER_AUTHENTICATION = {
    "secretTargetRef": ["list", {"parameter": "str", "name": "str", "key": "str"}],
    "env": ["list", {"parameter": "str", "name": "str", "containerName": "str"}],
    "podIdentity": "any", "hashiCorpVault": "any", "azureKeyVault": "any", "awsSecretManager": "any",
    "gcpSecretManager": "any", "configMapTargetRef": "any",
}
RABBITMQ_TRIGGER_METADATA = {"host", "protocol", "mode", "value", "activationValue", "queueName", "vhostName",
                             "hostFromEnv", "usernameFromEnv", "passwordFromEnv", "unsafeSsl", "useRegex",
                             "excludeUnacknowledged", "pageSize", "operation", "timeout"}
RABBITMQ_CLUSTER = {
    "replicas": "int", "image": "str", "imagePullSecrets": "list[V1LocalObjectReference]",
    "service": {"type": "str", "annotations": "map", "ipFamilyPolicy": "str"},
    "persistence": {"storageClassName": "str", "storage": "quantity"},
    "resources": "V1ResourceRequirements", "affinity": "V1Affinity", "tolerations": "list[V1Toleration]",
    "rabbitmq": {"additionalPlugins": ["list", "str"], "additionalConfig": "str", "advancedConfig": "str",
                 "envConfig": "str", "erlangInetConfig": "str"},
    "tls": "any", "override": "any", "secretBackend": "any", "terminationGracePeriodSeconds": "int",
    "skipPostDeploySteps": "bool", "delayStartSeconds": "int", "autoEnableAllFeatureFlags": "bool",
}
# Knative Serving's field masks (pkg/apis/serving/fieldmask.go) with its default feature flags:
# what a revision's pod spec and containers may hold.
KNATIVE_POD_FIELDS = {"serviceAccountName", "containers", "volumes", "imagePullSecrets", "enableServiceLinks",
                      "automountServiceAccountToken"}
KNATIVE_REVISION_FIELDS = {"containerConcurrency", "timeoutSeconds", "responseStartTimeoutSeconds",
                           "idleTimeoutSeconds"}
KNATIVE_CONTAINER_FIELDS = {"name", "args", "command", "env", "workingDir", "envFrom", "image", "imagePullPolicy",
                            "livenessProbe", "ports", "readinessProbe", "startupProbe", "resources",
                            "securityContext", "terminationMessagePath", "terminationMessagePolicy",
                            "volumeMounts"}
KNATIVE_SECURITY_CONTEXT_FIELDS = {"capabilities", "readOnlyRootFilesystem", "runAsUser", "runAsGroup",
                                   "runAsNonRoot", "allowPrivilegeEscalation", "seccompProfile", "privileged"}
KNATIVE_VOLUME_SOURCES = {"name", "secret", "configMap", "projected", "emptyDir"}
KNATIVE_RESERVED_ENV = {"PORT", "K_SERVICE", "K_CONFIGURATION", "K_REVISION"}
KNATIVE_RESERVED_PORTS = {8012, 8013, 8022, 9090, 9091}


def shape_problems(value: Any, shape: Any, path: str) -> list[str]:
    if shape == "any":
        return []
    if shape == "map":
        ok = isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
        return [] if ok else [f"{path}: expected a map of strings"]
    if shape == "quantity":
        return [] if isinstance(value, (str, int)) and not isinstance(value, bool) else [f"{path}: not a quantity"]
    if isinstance(shape, str):
        return model_problems(value, shape, path)
    if isinstance(shape, list):
        if not isinstance(value, list):
            return [f"{path}: expected a list"]
        return [p for i, v in enumerate(value) for p in shape_problems(v, shape[1], f"{path}[{i}]")]
    if not isinstance(value, dict):
        return [f"{path}: expected a mapping"]
    problems = []
    for key, sub in value.items():
        if key not in shape:
            problems.append(f"{path}.{key}: unknown field")
        else:
            problems += shape_problems(sub, shape[key], f"{path}.{key}")
    return problems


def knative_service_problems(o: dict[str, Any]) -> list[str]:
    problems = shape_problems({k: v for k, v in o.items() if k not in ("apiVersion", "kind")},
                              {"metadata": "V1ObjectMeta", "spec": {"template": "any", "traffic": "any"}}, "")
    template = o["spec"]["template"]
    problems += shape_problems(template, {"metadata": "V1ObjectMeta", "spec": "any"}, ".spec.template")
    spec = template["spec"]
    pod = {k: v for k, v in spec.items() if k not in KNATIVE_REVISION_FIELDS}
    problems += model_problems(pod, "V1PodSpec", ".spec.template.spec")
    problems += [f".spec.template.spec.{k}: not allowed by Knative" for k in pod if k not in KNATIVE_POD_FIELDS]
    if len(spec["containers"]) != 1:
        problems.append("Knative runs one container per revision (without the multi-container flag)")
    for c in spec["containers"]:
        problems += [f"container {c['name']}: {k} not allowed by Knative"
                     for k in c if k not in KNATIVE_CONTAINER_FIELDS]
        problems += [f"container {c['name']}: securityContext.{k} not allowed by Knative"
                     for k in c.get("securityContext") or {} if k not in KNATIVE_SECURITY_CONTEXT_FIELDS]
        problems += [f"container {c['name']}: env {e['name']} is reserved by Knative"
                     for e in c.get("env") or [] if e["name"] in KNATIVE_RESERVED_ENV]
        ports = c.get("ports") or []
        if len(ports) > 1 or any(p["containerPort"] in KNATIVE_RESERVED_PORTS for p in ports):
            problems.append(f"container {c['name']}: one port, not one of Knative's {sorted(KNATIVE_RESERVED_PORTS)}")
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            get = (c.get(probe) or {}).get("httpGet") or {}
            if "port" in get and get["port"] not in [p["containerPort"] for p in ports]:
                problems.append(f"container {c['name']}: {probe} must probe the container's port")
    for v in spec.get("volumes") or []:
        problems += [f"volume {v['name']}: {k} not allowed by Knative" for k in v if k not in KNATIVE_VOLUME_SOURCES]
    return problems


def custom_problems(o: dict[str, Any]) -> list[str]:
    key = (o["apiVersion"], o["kind"])
    if key == ("serving.knative.dev/v1", "Service"):
        return knative_service_problems(o)
    spec = {("keda.sh/v1alpha1", "ScaledObject"): SCALED_OBJECT,
            ("keda.sh/v1alpha1", "TriggerAuthentication"): TRIGGER_AUTHENTICATION,
            ("rabbitmq.com/v1beta1", "RabbitmqCluster"): RABBITMQ_CLUSTER}.get(key)
    if spec is None:
        return [f"{ref(o)}: no schema known for {key}; add one to tests/test_deploy.py"]
    problems = shape_problems({k: v for k, v in o.items() if k not in ("apiVersion", "kind")},
                              {"metadata": "V1ObjectMeta", "spec": spec}, "")
    if o["kind"] == "ScaledObject":
        for t in o["spec"]["triggers"]:
            assert t["type"] == "rabbitmq"
            problems += [f"trigger metadata {k}: unknown" for k in t["metadata"] if k not in RABBITMQ_TRIGGER_METADATA]
    return problems


@pytest.mark.parametrize("rel", KUSTOMIZATIONS)
def test_every_field_is_a_real_field(rel: str) -> None:
    api = k8s.ApiClient()
    problems = []
    for o in render(rel):
        name = model_name(o)
        if name is None:
            problems += [f"{ref(o)}{p}" for p in custom_problems(o)]
            continue
        problems += [f"{ref(o)}{p}" for p in model_problems(o, name, "")]
        # The client's own deserialisation: required fields and enum-like checks of the models.
        try:
            api._ApiClient__deserialize(copy.deepcopy(o), name)  # the client's deserialiser for dicts
        except (ValueError, TypeError) as exc:
            problems.append(f"{ref(o)}: {exc}")
    assert not problems, "\n".join(problems)


def test_the_strict_check_catches_typos() -> None:
    deployment = one(render("base"), "Deployment", "herald-reconciler")
    assert model_problems(deployment, "V1Deployment", "") == []
    typo = copy.deepcopy(deployment)
    typo["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFileSystem"] = True
    typo["spec"]["template"]["spec"]["containers"][0]["resources"]["limit"] = {"cpu": "1"}
    problems = model_problems(typo, "V1Deployment", "")
    assert any("readOnlyRootFileSystem" in p for p in problems) and any(".limit:" in p for p in problems)
    wrong_type = copy.deepcopy(deployment)
    wrong_type["spec"]["replicas"] = "2"
    assert model_problems(wrong_type, "V1Deployment", "") == [".spec.replicas: expected int, got '2'"]
    scaled = copy.deepcopy(one(render("overlays/keda"), "ScaledObject", "herald-reconciler"))
    scaled["spec"]["minReplicas"] = 0
    scaled["spec"]["triggers"][0]["metadata"]["queue"] = "x"
    assert len(custom_problems(scaled)) == 2
    ksvc = copy.deepcopy(one(render("overlays/knative"), "Service", "herald-receiver"))
    ksvc["spec"]["template"]["spec"]["securityContext"] = {"runAsNonRoot": True}
    ksvc["spec"]["template"]["spec"]["containers"][0]["env"].append({"name": "PORT", "value": "1"})
    assert len(custom_problems(ksvc)) == 2


# --------------------------------------------------------------------------------------------
# security
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("rel", KUSTOMIZATIONS)
def test_every_container_is_locked_down(rel: str) -> None:
    problems = []
    for o, pod in pod_specs(render(rel)):
        psc = pod.get("securityContext") or {}
        emptydirs = {v["name"] for v in pod.get("volumes") or [] if "emptyDir" in v}
        for c in pod.get("initContainers", []) + pod["containers"]:
            where = f"{ref(o)} container {c['name']}"
            sc = c.get("securityContext") or {}
            if not sc.get("runAsNonRoot", psc.get("runAsNonRoot")):
                problems.append(f"{where}: runAsNonRoot is not true")
            if sc.get("runAsUser", psc.get("runAsUser")) == 0:
                problems.append(f"{where}: runs as uid 0")
            if sc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{where}: readOnlyRootFilesystem is not true")
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where}: allowPrivilegeEscalation is not false")
            if sc.get("privileged"):
                problems.append(f"{where}: privileged")
            caps = sc.get("capabilities") or {}
            if "ALL" not in (caps.get("drop") or []) or caps.get("add"):
                problems.append(f"{where}: capabilities must drop ALL and add none")
            seccomp = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
            if seccomp != "RuntimeDefault":
                problems.append(f"{where}: seccompProfile is not RuntimeDefault")
            for probe in ("livenessProbe", "readinessProbe"):
                if not c.get(probe):
                    problems.append(f"{where}: no {probe}")
            res = c.get("resources") or {}
            for kind in ("requests", "limits"):
                if not {"cpu", "memory"} <= set(res.get(kind) or {}):
                    problems.append(f"{where}: {kind} must set cpu and memory")
            mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts") or []}
            if mounts.get("/tmp") not in emptydirs:
                problems.append(f"{where}: /tmp is not a writable emptyDir")
            if pod.get("hostNetwork") or pod.get("hostPID") or pod.get("hostIPC"):
                problems.append(f"{where}: shares the host's namespaces")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("rel", [r for r in KUSTOMIZATIONS if r not in FROM_CLUSTER_VARIANTS])
def test_receiver_and_notifier_have_no_kubernetes_rights(rel: str) -> None:
    objs = render(rel)
    for binding in by_kind(objs, "RoleBinding") + by_kind(objs, "ClusterRoleBinding"):
        for s in binding.get("subjects") or []:
            assert not (s["kind"] == "ServiceAccount" and s["name"] in ("herald-receiver", "herald-notifier")), \
                f"{ref(binding)} binds {s['name']}"
    for sa in by_kind(objs, "ServiceAccount"):
        if sa["metadata"]["name"] in ("herald-receiver", "herald-notifier"):
            assert sa["automountServiceAccountToken"] is False
    for o, pod in pod_specs(objs):
        if pod.get("serviceAccountName") in ("herald-receiver", "herald-notifier") and o["kind"] == "Deployment":
            assert pod.get("automountServiceAccountToken") is False, ref(o)


def test_the_reconciler_has_its_rights() -> None:
    base = render("base")
    role = one(base, "ClusterRole", "herald-reconciler")
    assert {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]} in role["rules"]
    binding = one(base, "ClusterRoleBinding", "herald-reconciler")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "herald-reconciler", "namespace": NAMESPACE}]
    assert one(base, "Deployment", "herald-reconciler")["spec"]["template"]["spec"]["serviceAccountName"] == \
        "herald-reconciler"

    namespaced = render("overlays/namespaced-rbac")
    assert [r["metadata"]["name"] for r in by_kind(namespaced, "ClusterRole")] == ["herald-reconciler-namespaces"]
    assert by_kind(namespaced, "ClusterRole")[0]["rules"] == [
        {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "watch"]}]

    def allowed(ns: str, group: str, resource: str, verb: str) -> bool:
        roles = {r["metadata"]["name"]: r for r in by_kind(namespaced, "Role") if r["metadata"]["namespace"] == ns}
        for b in by_kind(namespaced, "RoleBinding"):
            if b["metadata"]["namespace"] != ns or not any(
                    s["name"] == "herald-reconciler" and s["namespace"] == NAMESPACE for s in b["subjects"]):
                continue
            for rule in roles[b["roleRef"]["name"]]["rules"]:
                if group in rule["apiGroups"] and resource in rule["resources"] and verb in rule["verbs"]:
                    return True
        return False

    # Its own state: a Lease per GitRepository and an inventory ConfigMap per Kustomization, in
    # their namespaces (the example configuration's: herald), written by create/update/apply.
    cfg, _ = herald_config.check([DEPLOY / "base/config"])
    state_namespaces = {k[0] for k in cfg.git_repositories} | {k[0] for k in cfg.kustomizations}
    assert state_namespaces == {NAMESPACE}
    for verb in ("get", "create", "update", "patch"):
        assert allowed(NAMESPACE, "coordination.k8s.io", "leases", verb)
        assert allowed(NAMESPACE, "", "configmaps", verb)
    # What it applies, in every target namespace of the configuration.
    targets = {k.target_namespace for k in cfg.kustomizations.values()}
    assert targets == {"apps"}
    for verb in ("get", "list", "create", "patch", "delete"):
        assert allowed("apps", "apps", "deployments", verb)
        assert allowed("apps", "", "services", verb)
    assert one(namespaced, "Namespace", "apps")


# --------------------------------------------------------------------------------------------
# Secrets
# --------------------------------------------------------------------------------------------

PLACEHOLDER = "CHANGE-ME"
NOT_SECRET_KEYS = {"username"}
CREDENTIAL_PATTERNS = [
    r"gh[pousr]_[A-Za-z0-9]{20,}", r"github_pat_", r"xox[abprs]-", r"glpat-", r"AKIA[0-9A-Z]{16}",
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----", r"\b[0-9a-f]{32,}\b", r"\b[A-Za-z0-9+/]{40,}={0,2}",
]


def test_secrets_are_examples_with_placeholders() -> None:
    problems = []
    for rel in KUSTOMIZATIONS:
        for s in by_kind(render(rel), "Secret"):
            assert rel == "example-secrets", f"deploy/{rel} holds the Secret {ref(s)}: applying it would " \
                                             "overwrite the real one"
            for key, value in secret_data(s).items():
                for pattern in CREDENTIAL_PATTERNS:
                    if re.search(pattern, value):
                        problems.append(f"{ref(s)} {key}: looks like a real credential ({pattern})")
                if key not in NOT_SECRET_KEYS and PLACEHOLDER not in value:
                    problems.append(f"{ref(s)} {key}: not a {PLACEHOLDER} placeholder")
    assert not problems, "\n".join(problems)
    for f in (DEPLOY / "example-secrets").glob("*.yaml"):
        if f.name != "kustomization.yaml":
            assert "Create the real one with:" in f.read_text(), f"{f.name} does not say how to create the real one"


def _referenced_secret_keys(objs: list[dict[str, Any]]) -> dict[str, set[str]]:
    """Secret name -> the keys workloads read from it ("*": all of them, a mounted volume)."""
    refs: dict[str, set[str]] = {}
    for _, pod in pod_specs(objs):
        volumes = {v["name"]: v for v in pod.get("volumes") or []}
        for v in volumes.values():
            if "secret" in v:
                keys = {i["key"] for i in v["secret"].get("items") or []} or {"*"}
                refs.setdefault(v["secret"]["secretName"], set()).update(keys)
        for c in pod["containers"]:
            for e in c.get("env") or []:
                sk = (e.get("valueFrom") or {}).get("secretKeyRef")
                if sk:
                    refs.setdefault(sk["name"], set()).add(sk["key"])
            for m in c.get("volumeMounts") or []:
                v = volumes.get(m["name"], {})  # not there: a StatefulSet's volumeClaimTemplate
                if "secret" in v and m.get("subPath"):
                    refs[v["secret"]["secretName"]].add(m["subPath"])
    for auth in by_kind(objs, "TriggerAuthentication"):
        for t in auth["spec"].get("secretTargetRef") or []:
            refs.setdefault(t["name"], set()).add(t["key"])
    return refs


@pytest.mark.parametrize("rel", [r for r in KUSTOMIZATIONS if r not in ("example-secrets", "crds")])
def test_every_secret_read_has_an_example(rel: str) -> None:
    examples = example_secrets()
    for name, keys in _referenced_secret_keys(render(rel)).items():
        assert name in examples, f"deploy/{rel} reads the Secret {name}, which deploy/example-secrets lacks"
        missing = keys - {"*"} - set(examples[name])
        assert not missing, f"deploy/{rel} reads {name} keys {sorted(missing)} the example lacks"


def _commands_creating_secrets(text: str) -> list[str]:
    """The `kubectl ... create secret generic` commands of a text (comments or shell blocks),
    each with the lines it continues onto."""
    lines = [re.sub(r"^#\s{0,3}", "", line) for line in text.splitlines()]
    commands, i = [], 0
    while i < len(lines):
        line = lines[i].strip()
        if re.match(r"kubectl -n \S+ create secret generic", line):
            cmd = line
            while cmd.endswith("\\"):
                i += 1
                cmd = cmd[:-1] + " " + lines[i].strip()
            commands.append(cmd)
        i += 1
    return commands


def _dry_run(script: str, tmp_path: Path) -> dict[str, Any]:
    """Run a shell snippet whose kubectl commands create a Secret, client-side only."""
    script = re.sub(r"(kubectl -n \S+ create secret generic \S+)", r"\1 --dry-run=client -o yaml", script)
    env = {**os.environ, "KUBECONFIG": str(tmp_path / "no-cluster"), "GITHUB_TOKEN": "t1",
           "SLACK_BOT_TOKEN": "t2", "GITHUB_STATUS_TOKEN": "t3"}
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True, env=env,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    return yaml.safe_load(proc.stdout)


def test_the_commands_creating_real_secrets_make_what_is_read(tmp_path: Path) -> None:
    examples = example_secrets()
    seen = set()
    for f in sorted((DEPLOY / "example-secrets").glob("*.yaml")):
        text = f.read_text()
        if f.name == "kustomization.yaml":
            continue
        block = text.split("Create the real one with:", 1)[1].split("\napiVersion:", 1)[0]
        script = "\n".join(re.sub(r"^#\s{0,3}", "", line) for line in block.splitlines())
        made = _dry_run(script, tmp_path)
        name = made["metadata"]["name"]
        assert made["metadata"]["namespace"] == NAMESPACE
        assert set(made["data"]) == set(examples[name]), f"{f.name}: the command makes other keys"
        seen.add(name)
        if name == "herald-rabbitmq-default-user":
            data = {k: base64.b64decode(v).decode() for k, v in made["data"].items()}
            # ($(...) drops the final newline; RabbitMQ's config parser does not need it.)
            assert data["default_user.conf"].rstrip("\n") == \
                f"default_user = {data['username']}\ndefault_pass = {data['password']}"
    assert seen == set(examples)
    # The README gives the same commands (and herald-broker's, from RabbitMQ's Secret).
    readme = (DEPLOY / "README.md").read_text()
    made_in_readme = set()
    for cmd in _commands_creating_secrets(readme):
        name = re.search(r"create secret generic (\S+)", cmd).group(1)
        keys = set(re.findall(r"--from-literal=([\w.]+)=", cmd))
        assert keys == set(examples[name]), f"README: {name} gets keys {sorted(keys)}"
        made_in_readme.add(name)
    assert made_in_readme == set(examples)


def test_the_broker_url_reaches_the_rabbitmq_services() -> None:
    url = example_secrets()["herald-broker"]["url"]
    import pika
    params = pika.URLParameters(url)
    assert (params.host, params.port, params.virtual_host) == (f"herald-rabbitmq.{NAMESPACE}.svc", 5672, "/")
    sts = render("rabbitmq/statefulset")
    svc = one(sts, "Service", "herald-rabbitmq")
    assert 5672 in [p["port"] for p in svc["spec"]["ports"]]
    pod = one(sts, "StatefulSet", "herald-rabbitmq")["spec"]["template"]
    assert all(pod["metadata"]["labels"].get(k) == v for k, v in svc["spec"]["selector"].items())
    # The operator names its client Service after the RabbitmqCluster.
    assert by_kind(render("rabbitmq/operator"), "RabbitmqCluster")[0]["metadata"]["name"] == "herald-rabbitmq"
    # Both RabbitMQ NetworkPolicies select the broker's pods and let everything reach AMQP.
    for rel, labels in (("rabbitmq/statefulset", pod["metadata"]["labels"]),
                        ("rabbitmq/operator", {"app.kubernetes.io/name": "herald-rabbitmq"})):
        policy = one(render(rel), "NetworkPolicy", "herald-rabbitmq")
        assert all(labels.get(k) == v for k, v in policy["spec"]["podSelector"]["matchLabels"].items())
        open_rules = [r for r in policy["spec"]["ingress"] if "from" not in r]
        assert any(p["port"] == 5672 for r in open_rules for p in r["ports"])


# --------------------------------------------------------------------------------------------
# what Herald's containers get
# --------------------------------------------------------------------------------------------

def _port_of(listen: str) -> int:
    return int(listen.rpartition(":")[2])


@pytest.mark.parametrize("rel", HERALD_VARIANTS)
def test_herald_containers_get_what_herald_reads(rel: str) -> None:
    objs = render(rel)
    configmaps = {c["metadata"]["name"] for c in by_kind(objs, "ConfigMap")}
    pvcs = {c["metadata"]["name"] for c in by_kind(objs, "PersistentVolumeClaim")}
    seen_commands = set()
    containers = list(herald_containers(objs))
    assert containers
    for o, pod, c in containers:
        where = f"{ref(o)} container {c['name']}"
        env = env_of(c)
        volumes = {v["name"]: v for v in pod.get("volumes") or []}
        mounts = {m["mountPath"]: volumes[m["name"]] for m in c.get("volumeMounts") or []}
        assert c["image"] == IMAGE, f"{where}: image {c['image']} (set the same image everywhere)"
        # The configuration: a mounted ConfigMap of this render, or the cluster's objects.
        if rel in FROM_CLUSTER_VARIANTS:
            assert env["HERALD_FROM_CLUSTER"] == "true" and "HERALD_CONFIG" not in env, where
            assert not configmaps and pod["automountServiceAccountToken"] is True, where
        else:
            config_volume = mounts[env["HERALD_CONFIG"]]
            assert config_volume["configMap"]["name"] in configmaps, where
        # A writable state directory, and /tmp.
        state = mounts[env["HERALD_STATE_DIR"]]
        assert "emptyDir" in state or state.get("persistentVolumeClaim", {}).get("claimName") in pvcs, where
        # Secrets as files <HERALD_SECRETS_DIR>/<namespace>/<name> (from the API: none).
        secrets_dir = env.get("HERALD_SECRETS_DIR")
        for path, v in mounts.items():
            if "secret" in v:
                assert path == f"{secrets_dir}/{NAMESPACE}/{v['secret']['secretName']}", f"{where}: {path}"
        # The command, and where its probes go.
        command = c.get("command") or ["herald", *c.get("args", [])]
        seen_commands.add(command[0] if command[0] == "gunicorn" else " ".join(command))
        if command[0] == "gunicorn":
            listen_port = _port_of(env["HERALD_LISTEN"]) if "HERALD_LISTEN" in env else 8080
        elif command[1] == "serve":
            listen_port = _port_of(env["HERALD_LISTEN"])
        else:
            assert command[1] in ("worker", "notifier"), where
            listen_port = _port_of(env["HERALD_METRICS_LISTEN"])
        ports = {p.get("name"): p["containerPort"] for p in c["ports"]}
        assert listen_port in ports.values(), f"{where}: listens on {listen_port}, declares {ports}"
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")):
            if probe not in c:
                assert probe == "startupProbe", where
                continue
            get = c[probe]["httpGet"]
            assert get["path"] == path, f"{where}: {probe}"
            port = get.get("port", listen_port)
            assert ports.get(port, port) == listen_port, f"{where}: {probe} goes to {port}"
        # The broker, except on the embedded bus.
        if command[1:] == ["serve"]:
            assert "HERALD_BROKER_URL" not in env, where
        else:
            assert env["HERALD_BROKER_URL"] == {"secretKeyRef": {"name": "herald-broker", "key": "url"}}, where
        # Every pod annotated for Prometheus on the port it serves /metrics on.
        annotations = (o["spec"]["template"]["metadata"].get("annotations") or {})
        assert annotations.get("prometheus.io/port") == str(listen_port), where
        assert annotations.get("prometheus.io/path") == "/metrics", where
        # The image's user (Dockerfile), so files it owns stay readable.
        uid = c["securityContext"].get("runAsUser", (pod.get("securityContext") or {}).get("runAsUser"))
        assert uid == RUN_AS_USER, where
    if rel == "overlays/single":
        assert seen_commands == {"herald serve"}
    else:
        assert seen_commands == {"gunicorn", "herald worker", "herald notifier"}


@pytest.mark.parametrize("rel", [r for r in HERALD_VARIANTS if r not in FROM_CLUSTER_VARIANTS])
def test_the_configuration_validates_with_the_mounted_secrets(rel: str, tmp_path: Path) -> None:
    """`herald validate` on the generated ConfigMap, with the Secrets laid out as each
    container mounts them: every secretRef resolves in every component."""
    objs = render(rel)
    examples = example_secrets()
    for o, pod, c in herald_containers(objs):
        root = tmp_path / o["metadata"]["name"] / c["name"]
        env = env_of(c)
        volumes = {v["name"]: v for v in pod.get("volumes") or []}
        for m in c["volumeMounts"]:
            v = volumes[m["name"]]
            target = root / m["mountPath"].lstrip("/")
            if "configMap" in v:
                cm = one(objs, "ConfigMap", v["configMap"]["name"])
                target.mkdir(parents=True)
                for key, text in cm["data"].items():
                    (target / key).write_text(text)
            elif "secret" in v and not m.get("subPath"):
                target.mkdir(parents=True)
                for key, text in examples[v["secret"]["secretName"]].items():
                    (target / key).write_text(text)
        cfg, diagnostics = herald_config.check([root / env["HERALD_CONFIG"].lstrip("/")],
                                        root / env["HERALD_SECRETS_DIR"].lstrip("/"))
        assert not diagnostics, f"{ref(o)}:\n" + "\n".join(map(str, diagnostics))
        # The README's hook URL recipe names this Receiver.
        receiver = cfg.receivers[(NAMESPACE, "github-app")]
        token = examples["github-webhook"]["token"]
        assert cfg.hook_path(receiver) == \
            "/hook/" + hashlib.sha256(f"{token}github-app{NAMESPACE}".encode()).hexdigest()


def test_the_base_runs_each_component_apart() -> None:
    base = render("base")
    deployments = {d["metadata"]["name"]: d for d in by_kind(base, "Deployment")}
    assert set(deployments) == {"herald-receiver", "herald-reconciler", "herald-notifier"}
    for name, d in deployments.items():
        component = name.removeprefix("herald-")
        assert d["spec"]["template"]["spec"]["serviceAccountName"] == name
        assert d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] == component
    # The receiver: Service -> pods' port, Ingress -> Service, publishing only /hook/.
    svc = one(base, "Service", "herald-receiver")
    labels = deployments["herald-receiver"]["spec"]["template"]["metadata"]["labels"]
    assert all(labels[k] == v for k, v in svc["spec"]["selector"].items())
    assert svc["spec"]["ports"][0]["targetPort"] == "http"
    ingress = one(base, "Ingress", "herald-receiver")
    paths = [p for r in ingress["spec"]["rules"] for p in r["http"]["paths"]]
    assert [(p["path"], p["backend"]["service"]["name"]) for p in paths] == [("/hook/", "herald-receiver")]
    # The configuration comes from the YAML files in deploy/base/config.
    cm = [c for c in by_kind(base, "ConfigMap") if c["metadata"]["name"].startswith("herald-config-")]
    assert len(cm) == 1
    assert set(cm[0]["data"]) == {p.name for p in (DEPLOY / "base/config").glob("*.yaml")}


def test_network_policies() -> None:
    base = render("base")
    default = one(base, "NetworkPolicy", "herald-default")
    assert default["spec"]["podSelector"] == {"matchLabels": {"app.kubernetes.io/part-of": "herald"}}
    assert set(default["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in default["spec"], "ingress is denied unless another policy allows it"
    assert default["spec"]["egress"] == [{}], "egress stays open (Git hosts, chat APIs, the API server)"
    receiver = one(base, "NetworkPolicy", "herald-receiver")
    assert receiver["spec"]["ingress"] == [{"ports": [{"port": 8080, "protocol": "TCP"}]}]
    for d in by_kind(base, "Deployment"):
        labels = d["spec"]["template"]["metadata"]["labels"]
        assert labels["app.kubernetes.io/part-of"] == "herald"
    # Knative: the receiver's pods are reached through Knative's queue-proxy.
    kn = render("overlays/knative")
    policy = one(kn, "NetworkPolicy", "herald-receiver-knative")
    assert policy["spec"]["podSelector"] == {"matchLabels": {"serving.knative.dev/service": "herald-receiver"}}
    # single: the receiver's Service and policy lead to the one pod.
    single = render("overlays/single")
    pod_labels = one(single, "Deployment", "herald")["spec"]["template"]["metadata"]["labels"]
    for selector in (one(single, "Service", "herald-receiver")["spec"]["selector"],
                     one(single, "NetworkPolicy", "herald-receiver")["spec"]["podSelector"]["matchLabels"]):
        assert all(pod_labels.get(k) == v for k, v in selector.items())


# --------------------------------------------------------------------------------------------
# the overlays
# --------------------------------------------------------------------------------------------

def test_knative_overlay() -> None:
    objs = render("overlays/knative")
    assert not [o for o in objs if o["metadata"]["name"] == "herald-receiver" and o["kind"] in
                ("Deployment", "Ingress", "PodDisruptionBudget", "NetworkPolicy")]
    assert [o["apiVersion"] for o in objs if o["kind"] == "Service"] == ["serving.knative.dev/v1"]
    ksvc = one(objs, "Service", "herald-receiver")
    annotations = ksvc["spec"]["template"]["metadata"]["annotations"]
    assert annotations["autoscaling.knative.dev/min-scale"] == "0"
    container = ksvc["spec"]["template"]["spec"]["containers"][0]
    assert container["ports"] == [{"name": "http1", "containerPort": 8080}]
    assert "HERALD_LISTEN" not in env_of(container), "Knative's PORT must decide where gunicorn listens"
    # The hashed ConfigMap name reached the Knative Service too.
    volumes = {v["name"]: v for v in ksvc["spec"]["template"]["spec"]["volumes"]}
    assert volumes["config"]["configMap"]["name"] in {c["metadata"]["name"] for c in by_kind(objs, "ConfigMap")}
    # The rest is the base's.
    assert {d["metadata"]["name"] for d in by_kind(objs, "Deployment")} == {"herald-reconciler", "herald-notifier"}


def test_keda_overlay() -> None:
    from herald.messages import EVENTS_QUEUE, IMAGE_QUEUE, NOTIFY_QUEUE, PLAN_QUEUE, RECONCILE_QUEUE

    objs = render("overlays/keda")
    deployments = {d["metadata"]["name"]: d for d in by_kind(objs, "Deployment")}
    auth = one(objs, "TriggerAuthentication", "herald-broker")
    assert auth["spec"]["secretTargetRef"] == [{"parameter": "host", "name": "herald-broker", "key": "url"}]
    queues = {}
    for so in by_kind(objs, "ScaledObject"):
        target = so["spec"]["scaleTargetRef"]
        assert target["kind"] == "Deployment" and target["name"] in deployments
        assert so["spec"]["minReplicaCount"] == 0
        assert so["spec"]["maxReplicaCount"] >= 1
        for t in so["spec"]["triggers"]:
            assert t["type"] == "rabbitmq"
            assert t["authenticationRef"] == {"name": "herald-broker"}
            meta = t["metadata"]
            assert meta["mode"] == "QueueLength" and meta["protocol"] == "amqp"
            assert float(meta["value"]) > 0
            queues.setdefault(target["name"], set()).add(meta["queueName"])
        # KEDA owns the replica count.
        assert "replicas" not in deployments[target["name"]]["spec"]
    # Scaled to zero, a worker must be started for a pull request's plan or an image scan too, or
    # a check would stay pending for good.
    assert queues == {"herald-reconciler": {RECONCILE_QUEUE, PLAN_QUEUE, IMAGE_QUEUE},
                      "herald-notifier": {EVENTS_QUEUE, NOTIFY_QUEUE}}
    assert deployments["herald-receiver"]["spec"]["replicas"] >= 1


def test_single_overlay() -> None:
    objs = render("overlays/single")
    [deployment] = by_kind(objs, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["args"] == ["serve"]
    env = env_of(container)
    state = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}[env["HERALD_STATE_DIR"]]
    claim = {v["name"]: v for v in pod["volumes"]}[state]["persistentVolumeClaim"]["claimName"]
    pvc = one(objs, "PersistentVolumeClaim", claim)
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert pod["serviceAccountName"] == "herald-reconciler"
    assert not [o for o in objs if o["apiVersion"].startswith(("keda.sh", "rabbitmq.com", "serving.knative.dev"))]
    assert {s["metadata"]["name"] for s in by_kind(objs, "ServiceAccount")} == {"herald-reconciler"}
    assert not by_kind(objs, "PodDisruptionBudget")


def _allowed(objs: list[dict[str, Any]], account: str, group: str, resource: str, verb: str) -> bool:
    """Whether the ClusterRoles bound to the ServiceAccount `account` allow `verb` on `resource`."""
    roles = {r["metadata"]["name"]: r for r in by_kind(objs, "ClusterRole")}
    for b in by_kind(objs, "ClusterRoleBinding"):
        if not any(s["kind"] == "ServiceAccount" and s["name"] == account and s["namespace"] == NAMESPACE
                   for s in b["subjects"]):
            continue
        for rule in roles[b["roleRef"]["name"]].get("rules") or []:
            if ({group, "*"} & set(rule.get("apiGroups") or []) and {resource, "*"} & set(rule.get("resources") or [])
                    and {verb, "*"} & set(rule["verbs"])):
                return True
    return False


def test_from_cluster_overlay() -> None:
    """Each component reads Herald's kinds and Secrets and writes the status of its own kinds
    only; the ConfigMap and the mounted Secrets are gone; tokens are mounted."""
    objs = render("overlays/from-cluster")
    kinds = ("receivers", "providers", "alerts", "gitrepositories", "kustomizations")
    owned = {"herald-receiver": {"receivers"}, "herald-notifier": {"providers", "alerts"},
             "herald-reconciler": {"gitrepositories", "kustomizations"}}
    for account, mine in owned.items():
        for verb in ("get", "list", "watch"):
            assert all(_allowed(objs, account, "herald.dev", k, verb) for k in kinds), (account, verb)
            assert _allowed(objs, account, "", "secrets", verb), (account, verb)
        for k in kinds:
            if account != "herald-reconciler":  # the reconciler may do anything (the base's ClusterRole)
                assert _allowed(objs, account, "herald.dev", f"{k}/status", "patch") == (k in mine), (account, k)
                assert not _allowed(objs, account, "herald.dev", k, "update"), account
        assert one(objs, "ServiceAccount", account)["automountServiceAccountToken"] is True
    for _, pod, c in herald_containers(objs):
        assert not [v for v in pod["volumes"] if "secret" in v or "configMap" in v], pod["serviceAccountName"]
        assert "HERALD_SECRETS_DIR" not in env_of(c)
    # Only the narrow status rights: the base's reconciler rights are unchanged, nothing more.
    added = {r["metadata"]["name"] for r in by_kind(objs, "ClusterRole")} - {"herald-reconciler"}
    assert added == {"herald-config-reader", "herald-receiver-status", "herald-notifier-status",
                          "herald-reconciler-status"}


def test_rabbitmq_variants() -> None:
    [cluster] = by_kind(render("rabbitmq/operator"), "RabbitmqCluster")
    assert cluster["apiVersion"] == "rabbitmq.com/v1beta1"
    assert cluster["spec"]["replicas"] == 3, "quorum queues need three nodes to survive one"
    sts_objs = render("rabbitmq/statefulset")
    sts = one(sts_objs, "StatefulSet", "herald-rabbitmq")
    headless = one(sts_objs, "Service", sts["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    [claim] = sts["spec"]["volumeClaimTemplates"]
    mounts = {m["name"]: m["mountPath"] for m in sts["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == "/var/lib/rabbitmq"
    assert sts["spec"]["replicas"] == 1


# --------------------------------------------------------------------------------------------
# Herald's CRDs
# --------------------------------------------------------------------------------------------

def structural_problems(schema: dict[str, Any], path: str = "") -> list[str]:
    """Kubernetes' rules for a structural schema, the ones a hand-written schema breaks."""
    problems = []
    preserve = schema.get("x-kubernetes-preserve-unknown-fields") is True
    if "type" not in schema and not (preserve or schema.get("x-kubernetes-int-or-string")):
        problems.append(f"{path or '.'}: no type")
    for banned in ("$ref", "definitions", "additionalItems", "dependencies", "patternProperties", "uniqueItems"):
        if banned in schema:
            problems.append(f"{path}: {banned} is not allowed")
    if "properties" in schema and "additionalProperties" in schema:
        problems.append(f"{path}: properties and additionalProperties together")
    if schema.get("type") == "array":
        if "items" not in schema:
            problems.append(f"{path}: an array needs items")
        else:
            problems += structural_problems(schema["items"], f"{path}[]")
    if schema.get("type") == "object" and "properties" not in schema and "additionalProperties" not in schema \
            and not preserve and path not in (".metadata",):
        problems.append(f"{path}: an object with neither properties nor additionalProperties drops its content")
    for key, sub in (schema.get("properties") or {}).items():
        problems += structural_problems(sub, f"{path}.{key}")
    if isinstance(schema.get("additionalProperties"), dict):
        problems += structural_problems(schema["additionalProperties"], f"{path}.*")
    return problems


def schema_problems(value: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """The API server's validation of an object against a structural schema, strictly (unknown
    fields rejected, as `kubectl apply` asks with fieldValidation=Strict)."""
    t = schema.get("type")
    types = {"object": dict, "array": list, "string": str, "boolean": bool, "integer": int, "number": (int, float)}
    if t and not isinstance(value, types[t]) or (t in ("integer", "number") and isinstance(value, bool)):
        return [f"{path}: expected {t}"]
    problems = []
    if "enum" in schema and value not in schema["enum"]:
        problems.append(f"{path}: {value!r} not in {schema['enum']}")
    if t == "string":
        if "pattern" in schema and not re.search(schema["pattern"], value):
            problems.append(f"{path}: {value!r} does not match {schema['pattern']}")
        if len(value) < schema.get("minLength", 0) or len(value) > schema.get("maxLength", 1 << 30):
            problems.append(f"{path}: length out of bounds")
    if t in ("integer", "number") and value < schema.get("minimum", value):
        problems.append(f"{path}: below the minimum")
    if t == "array":
        if len(value) < schema.get("minItems", 0):
            problems.append(f"{path}: fewer than {schema['minItems']} items")
        problems += [p for i, v in enumerate(value) for p in schema_problems(v, schema["items"], f"{path}[{i}]")]
    if t == "object" and path != ".metadata":
        props = schema.get("properties")
        problems += [f"{path}.{k}: required" for k in schema.get("required", []) if k not in value]
        for k, v in value.items():
            if props is not None and k in props:
                problems += schema_problems(v, props[k], f"{path}.{k}")
            elif isinstance(schema.get("additionalProperties"), dict):
                problems += schema_problems(v, schema["additionalProperties"], f"{path}.{k}")
            elif not schema.get("x-kubernetes-preserve-unknown-fields"):
                problems.append(f"{path}.{k}: unknown field")
    return problems


def _crds() -> dict[str, dict[str, Any]]:
    return {c["spec"]["names"]["kind"]: c for c in render("crds")}


def test_herald_crds_are_structural_and_complete() -> None:
    crds = _crds()
    assert set(crds) == {k for k, versions in herald_config.API_VERSIONS.items() if "herald.dev/v1" in versions}
    for kind, crd in crds.items():
        spec = crd["spec"]
        assert spec["group"] == "herald.dev" and spec["scope"] == "Namespaced"
        assert crd["metadata"]["name"] == f"{spec['names']['plural']}.herald.dev"
        [version] = spec["versions"]
        assert version["name"] == "v1" and version["served"] and version["storage"]
        assert version["subresources"] == {"status": {}}
        columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
        assert {"Ready", "Status", "Age"} <= set(columns)
        for c in columns.values():
            assert c["jsonPath"].startswith("."), c
        schema = version["schema"]["openAPIV3Schema"]
        assert not structural_problems(schema), f"{kind}: " + "\n".join(structural_problems(schema))
        assert "x-kubernetes-preserve-unknown-fields" not in yaml.safe_dump(schema)
        # The spec's fields are the ones Herald reads (herald/config.py), and its required ones.
        herald_spec = herald_config._SPECS[kind]  # the schema Herald validates with
        assert set(schema["properties"]["spec"]["properties"]) == set(herald_spec.fields), kind
        assert set(schema["properties"]["spec"].get("required", [])) == set(herald_spec.required), kind


def test_herald_crd_examples_match_their_schemas_and_herald(tmp_path: Path) -> None:
    crds = _crds()
    examples = [d for d in yaml.safe_load_all((DEPLOY / "crds/examples/herald.yaml").read_text()) if d]
    for e in examples:
        schema = crds[e["kind"]]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        assert schema_problems(e, schema) == [], e["metadata"]["name"]
    # Typos and wrong values are refused.
    kustomization = copy.deepcopy(next(e for e in examples if e["kind"] == "Kustomization"))
    schema = crds["Kustomization"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    kustomization["spec"]["intervall"] = "5m"
    kustomization["spec"]["timeout"] = "five minutes"
    kustomization["spec"]["prune"] = "yes"
    assert len(schema_problems(kustomization, schema)) == 3
    # Herald loads the same objects (herald.dev/v1 is one of its configuration versions).
    secrets = tmp_path / "secrets"
    for name, data in example_secrets().items():
        (secrets / NAMESPACE / name).mkdir(parents=True)
        for key, value in data.items():
            (secrets / NAMESPACE / name / key).write_text(value)
    _, diagnostics = herald_config.check([DEPLOY / "crds/examples/herald.yaml"], secrets)
    assert not diagnostics, "\n".join(map(str, diagnostics))


def test_crds_stay_out_of_the_variants() -> None:
    for rel in KUSTOMIZATIONS:
        if rel != "crds":
            assert not by_kind(render(rel), "CustomResourceDefinition"), rel


# --------------------------------------------------------------------------------------------
# the Dockerfile
# --------------------------------------------------------------------------------------------

def _dockerfile() -> tuple[dict[str, str], list[tuple[str, str, str]]]:
    """ARG defaults before the first FROM, and (stage, instruction, arguments) in order, with
    continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text()
    text = re.sub(r"\\\n", " ", text)
    args: dict[str, str] = {}
    steps, stage = [], ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, rest = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            stage = rest.split(" AS ")[1].strip() if " AS " in rest else "final"
        elif instruction == "ARG" and not steps:
            name, _, default = rest.partition("=")
            args[name] = default
        steps.append((stage, instruction, rest))
    return args, steps


def test_dockerfile() -> None:
    args, steps = _dockerfile()
    assert args["PYTHON_IMAGE"] == "python:3.11-slim"
    froms = [(s, rest) for s, i, rest in steps if i == "FROM"]
    assert [s for s, _ in froms] == ["wheels", "kustomize", "final"]
    assert all(rest.startswith("${PYTHON_IMAGE}") for _, rest in froms)
    by_stage: dict[str, list[tuple[str, str]]] = {}
    for s, i, rest in steps:
        by_stage.setdefault(s, []).append((i, rest))
    # A wheel built in the first stage, installed (offline) in the last.
    assert any(i == "RUN" and "pip wheel" in r for i, r in by_stage["wheels"])
    final = by_stage["final"]
    assert ("COPY", "--from=wheels /wheels /wheels") in final
    assert any(i == "RUN" and "pip install" in r and "--no-index" in r and "--find-links=/wheels herald" in r
               for i, r in final)
    # kustomize: pinned, checksummed.
    kustomize_run = " ".join(r for i, r in by_stage["kustomize"] if i in ("RUN", "ARG"))
    version = re.search(r"KUSTOMIZE_VERSION=(v\d+\.\d+\.\d+)", kustomize_run).group(1)
    assert "kustomize%2F${KUSTOMIZE_VERSION}/kustomize_${KUSTOMIZE_VERSION}_linux_${arch}.tar.gz" in kustomize_run
    assert version == "v5.5.0"
    for arch in ("AMD64", "ARM64"):
        assert re.search(rf"KUSTOMIZE_SHA256_{arch}=[0-9a-f]{{64}}\b", kustomize_run)
    assert "sha256sum -c" in kustomize_run
    assert ("COPY", "--from=kustomize /usr/local/bin/kustomize /usr/local/bin/kustomize") in final
    # git and ssh for the reconciler; a fixed non-root user; the entrypoint.
    installs = " ".join(r for i, r in final if i == "RUN")
    for package in ("git", "openssh-client", "ca-certificates"):
        assert re.search(rf"\b{package}\b", installs)
    assert ("USER", f"{RUN_AS_USER}:{RUN_AS_USER}") in final
    assert f"--uid {RUN_AS_USER}" in installs
    assert ("ENTRYPOINT", '["herald"]') in final
    assert ("CMD", '["serve"]') in final
    assert ("EXPOSE", "8080") in final
    env = " ".join(r for i, r in final if i == "ENV")
    assert "PORT=8080" in env and "HERALD_STATE_DIR=/var/lib/herald" in env
    # The receiver's command finds gunicorn.conf.py where the image puts it.
    receiver = one(render("base"), "Deployment", "herald-receiver")["spec"]["template"]["spec"]["containers"][0]
    config_path = receiver["command"][receiver["command"].index("--config") + 1]
    assert ("COPY", f"gunicorn.conf.py {config_path}") in final
    assert receiver["command"][0] == "gunicorn" and receiver["command"][-1] == "receiver.app:create_app()"
    assert "receiver.app:create_app()" in (ROOT / "Procfile").read_text()


def test_dockerignore_sends_what_the_dockerfile_copies() -> None:
    rules = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert rules[0] == "*", "an allow-list: only what is named is sent to the builder"
    allowed = {r[1:].rstrip("/") for r in rules if r.startswith("!")}
    _, steps = _dockerfile()
    for _, instruction, rest in steps:
        if instruction == "COPY" and not rest.startswith("--from"):
            *sources, _ = rest.split()
            for source in sources:
                assert source.rstrip("/") in allowed, f"COPY {source}: left out by .dockerignore"
                assert (ROOT / source).exists(), source
    # pyproject's readme is read when the wheel is built.
    assert "README.md" in allowed


def test_the_wheel_holds_every_package() -> None:
    """The image runs from the wheel alone: every folder of Python code must be a package
    that pyproject.toml's package discovery finds."""
    import tomllib

    from setuptools import find_packages

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    found = set(find_packages(where=str(ROOT), include=include))
    for top in ("herald", "receiver", "reconciler", "notifier"):
        for folder in [ROOT / top, *(p for p in (ROOT / top).rglob("*") if p.is_dir())]:
            if "__pycache__" in folder.parts or not any(folder.glob("*.py")):
                continue
            package = ".".join(folder.relative_to(ROOT).parts)
            assert package in found, f"{package} would be missing from the wheel"
    assert pyproject["project"]["scripts"]["herald"] == "herald.cli:main"
