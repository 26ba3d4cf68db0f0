"""The order Herald applies objects in, and the stages it applies them in (Flux's, kind by kind).

Flux's kustomize-controller applies a set in three stages and waits between them:

1. cluster definitions: CustomResourceDefinitions, Namespaces and ClusterRoles, which the
   rest may be of (custom resources), live in (namespaced objects) or be bound to;
2. class definitions: every kind whose name ends in ``Class`` (StorageClass, IngressClass,
   PriorityClass, RuntimeClass, GatewayClass...), which the rest may name;
3. everything else.

Inside a stage, objects are sorted by fluxcd/pkg's ssa kind order (Namespaces before the
objects in them, ServiceAccounts and RBAC before workloads, Services before the Deployments
behind them, webhooks last), then by namespace and name so the order is the same whatever
order the files were in. Pruning runs in the reverse order, so that a Namespace goes after
the objects in it and a CRD after its custom resources.
"""

from __future__ import annotations

from typing import Protocol

# fluxcd/pkg ssa: kinds ordered first (in this order), unknown kinds after them, these last.
_ORDER_FIRST = (
    "CustomResourceDefinition", "Namespace", "ResourceQuota", "StorageClass", "ServiceAccount",
    "PodSecurityPolicy", "Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding", "ConfigMap",
    "Secret", "Service", "LimitRange", "PriorityClass", "Deployment", "StatefulSet", "CronJob",
    "PodDisruptionBudget",
)
_ORDER_LAST = ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration")
_KIND_INDEX = {k: i - len(_ORDER_FIRST) for i, k in enumerate(_ORDER_FIRST)}
_KIND_INDEX.update({k: 1 + i for i, k in enumerate(_ORDER_LAST)})

STAGE_DEFINITIONS = 0
STAGE_CLASSES = 1
STAGE_RESOURCES = 2
STAGE_NAMES = {STAGE_DEFINITIONS: "cluster definitions", STAGE_CLASSES: "class definitions",
               STAGE_RESOURCES: "resources"}


class ObjectLike(Protocol):
    @property
    def kind(self) -> str: ...

    @property
    def api_version(self) -> str: ...

    @property
    def namespace(self) -> str: ...

    @property
    def name(self) -> str: ...


def group_of(api_version: str) -> str:
    return api_version.rpartition("/")[0]


def stage_of(kind: str, api_version: str) -> int:
    """Which of Flux's three apply stages an object belongs to."""
    group = group_of(api_version)
    if kind == "CustomResourceDefinition" and group == "apiextensions.k8s.io":
        return STAGE_DEFINITIONS
    if kind == "Namespace" and api_version == "v1":
        return STAGE_DEFINITIONS
    if kind == "ClusterRole" and group == "rbac.authorization.k8s.io":
        return STAGE_DEFINITIONS
    if kind.endswith("Class"):
        return STAGE_CLASSES
    return STAGE_RESOURCES


def kind_key(kind: str, group: str) -> tuple[int, str, str]:
    return (_KIND_INDEX.get(kind, 0), group, kind)


def sort_key(obj: ObjectLike) -> tuple[int, tuple[int, str, str], str, str]:
    """Apply order: stage, then Flux's kind order, then namespace and name."""
    return (stage_of(obj.kind, obj.api_version), kind_key(obj.kind, group_of(obj.api_version)),
            obj.namespace, obj.name)


def id_sort_key(group: str, kind: str, namespace: str, name: str, version: str = "v1") -> tuple:
    """The same order for inventory entries, which carry group and version apart."""
    api_version = f"{group}/{version}" if group else version
    return (stage_of(kind, api_version), kind_key(kind, group), namespace, name)
