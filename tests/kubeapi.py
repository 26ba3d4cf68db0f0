"""A small but honest Kubernetes API server for tests.

No real API server can run on the test machines, and a mock that answers
whatever the code under test expects proves nothing.  ``KubeAPIServer`` serves
real HTTP and answers the way kube-apiserver 1.32 answers the requests a
client such as ``kubectl`` or the official ``kubernetes`` Python client sends:

* discovery (``/version``, ``/api``, ``/apis``, ``/api/v1``, ``/apis/{g}/{v}``)
  in the legacy format; kubectl asks for aggregated discovery first and falls
  back when it gets plain ``application/json``;
* ``/openapi/v3`` with an empty index and ``/openapi/v2`` as an empty protobuf
  document: "no schemas published".  kubectl then skips client-side schema
  validation instead of failing on a 404, and nothing claims a schema the
  server does not enforce;
* CRUD, list (label and field selectors, ``limit``/``continue``), watch,
  ``deletecollection``, the ``status`` and ``scale`` subresources;
* server-side apply with field ownership tracked in ``metadata.managedFields``
  (FieldsV1), conflicts, ``force``, pruning of fields a manager stopped
  applying, ``dryRun=All``, and no-op applies that leave ``resourceVersion``
  and ``generation`` untouched;
* merge, strategic-merge (as merge patch with keyed lists) and JSON patches;
* Status error bodies worded and shaped like the real ones;
* authorization as on a kubeadm cluster.  The kubeconfig ``write_kubeconfig`` writes is
  the admin (``kubernetes-admin`` in ``system:masters``: allowed everything, impersonation
  included); ``add_user`` registers bearer tokens of other users.  ``Impersonate-User``,
  ``Impersonate-Group``, ``Impersonate-Uid`` and ``Impersonate-Extra-*`` are honoured once the
  requestor may ``impersonate`` each of them (a ServiceAccount user also gets
  ``system:serviceaccounts`` and ``system:serviceaccounts:<ns>``, everyone
  ``system:authenticated``).  Everyone but system:masters is authorized by RBAC from the
  Roles, ClusterRoles, RoleBindings and ClusterRoleBindings in the store (verbs, apiGroups,
  resources with ``x/subresource`` and ``*/subresource``, resourceNames, nonResourceURLs), on
  the verb and scope kube-apiserver's request info gives each request (get, list, watch,
  create, update, patch, delete, deletecollection; a server-side apply that creates its
  object needs ``create`` besides ``patch``).  Discovery, ``/version`` and ``/openapi`` are open
  to every authenticated user, as the bootstrap ``system:discovery`` and
  ``system:public-info-viewer`` roles make them; ``add_default_cluster_roles`` stores
  cluster-admin, admin, edit and view.  A refusal is the apiserver's 403 Status, word for
  word.  ``SelfSubjectAccessReview`` and ``SelfSubjectReview`` answer ``kubectl auth can-i``
  and ``kubectl auth whoami`` (read in protobuf too, as kubectl sends them);
* CRDs: creating one registers its kinds in discovery and the REST paths;
* Leases (``coordination.k8s.io/v1``) with ``leaseDurationSeconds``/``leaseTransitions``
  validated and updates refused with 409 when their ``resourceVersion`` is stale, the
  compare-and-swap leader election (and Herald's per-target locks) rely on;
* tiny "controllers" that fill in status for Deployments, StatefulSets,
  DaemonSets, Jobs, Pods and CRDs as their real controllers eventually would,
  as separate status writes, so health checks have something true to read.
  Workloads roll out at once unless a test says otherwise with
  ``KubeAPIServer.set_rollout``: after a delay, never ("progressing"), or
  failing (a Deployment past its progress deadline, a Job past its backoff
  limit), for all workloads or one kind, namespace or object;
* the update rules for immutable fields that GitOps tools meet: a workload's
  selector, a Job's template, a StatefulSet's spec beyond the updatable
  fields, an immutable ConfigMap's or Secret's data, a Service's clusterIP
  and a binding's roleRef, with the apiserver's messages (422 "field is
  immutable", "may not change once set", ...);
* namespace deletion as on a cluster: the namespace turns Terminating,
  refuses new objects, and is emptied and removed a moment later.

What it deliberately does not do is listed in ``NOT_IMPLEMENTED`` below.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import ipaddress
import json
import re
import secrets
import socket
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, UTC
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NamedTuple
from collections.abc import Callable, Iterable
from urllib.parse import parse_qsl, unquote, urlsplit

import yaml

NOT_IMPLEMENTED = """
Not implemented, on purpose (none of it is needed to test a GitOps client):
authentication proper (no TLS, client certificates or 401s: a request without a token
registered with `add_user` is the admin, whatever it carries), the node and webhook
authorizers, ClusterRole aggregation, RBAC's escalation checks (writing a role or binding
needs neither `escalate`/`bind` nor the rights it grants), selector-based authorization,
SubjectAccessReview, LocalSubjectAccessReview, SelfSubjectRulesReview and TokenReview, the
bootstrap RBAC objects as stored objects (system:discovery, system:basic-user and
system:public-info-viewer are built into the authorizer; cluster-admin, admin, edit and view
exist once a test calls `add_default_cluster_roles`), admission webhooks,
OpenAPI schemas and schema validation (fieldValidation=Strict is accepted but
unknown fields are kept and types are not checked; only names, labels, a
workload's selector, a CRD's name and the immutable fields above are
validated), most defaulting (only the common workload/pod/service/namespace
defaults), finalizers and graceful
deletion other than a namespace's termination (other deletes are immediate; a
CRD takes its custom resources at once), garbage collection by
ownerReferences, Table output (kubectl falls back to client-side printing),
protobuf and CBOR request bodies (415, so typed kubectl generators such as
`kubectl create configmap` fail; `kubectl create -f` works; only the two self reviews
are read in protobuf), aggregated
discovery (kubectl falls back to the legacy documents), strategic-merge-patch
directives ($patch, $retainKeys), CRDs with several versions and conversion,
apply on /scale, scale for custom resources, watch niceties (bookmarks,
initial-events streaming, DELETED for objects that leave a label selector),
and the objects controllers create by themselves (ReplicaSets and Pods of
workloads, default ServiceAccounts, kube-root-ca.crt ConfigMaps, the
`kubernetes` Service), so listings hold only what tests created.
"""

# --------------------------------------------------------------------------- #
# Resource types
# --------------------------------------------------------------------------- #

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True)
class ResourceType:
    """One REST resource: what discovery advertises and what the store keys on."""

    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    # Types whose status is written through /status only: writes to the main
    # resource leave status alone, and apply does not own status fields.
    status_subresource: bool = False
    # Types whose strategy sets metadata.generation (most types with a spec).
    tracks_generation: bool = False
    # Which name validation the real registry uses for this type.
    name_rule: str = "subdomain"
    singular: str = ""
    custom: bool = False  # served because a CRD asked for it
    scale_subresource: bool = False  # /scale speaks autoscaling/v1 Scale
    # Create-only "reviews" (SelfSubjectAccessReview, SelfSubjectReview): answered, never stored.
    review: bool = False

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def singular_name(self) -> str:
        return self.singular or self.kind.lower()

    @property
    def group_resource(self) -> str:
        """``deployments.apps`` / ``configmaps``: how Status messages name it."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def group_kind(self) -> str:
        """``Deployment.apps`` / ``ConfigMap``: how Invalid messages name it."""
        return f"{self.kind}.{self.group}" if self.group else self.kind

    def discovery_entries(self) -> list[dict[str, Any]]:
        main: dict[str, Any] = {
            "name": self.plural,
            "singularName": self.singular_name,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": ["create"] if self.review else list(ALL_VERBS),
        }
        if self.short_names:
            main["shortNames"] = list(self.short_names)
        if self.categories:
            main["categories"] = list(self.categories)
        entries = [main]
        if self.scale_subresource:
            entries.append({
                "name": f"{self.plural}/scale",
                "singularName": "",
                "namespaced": self.namespaced,
                "group": "autoscaling",
                "version": "v1",
                "kind": "Scale",
                "verbs": ["get", "patch", "update"],
            })
        if self.status_subresource:
            entries.append({
                "name": f"{self.plural}/status",
                "singularName": "",
                "namespaced": self.namespaced,
                "kind": self.kind,
                "verbs": ["get", "patch", "update"],
            })
        return entries

    def write_scope(self, subresource: str) -> str:
        """Which fields a write may touch: "all", "" (all but status), "status" or "scale"."""
        if subresource:
            return subresource
        return "" if self.status_subresource else "all"


def _rt(group: str, kind: str, plural: str, namespaced: bool = True, short: tuple[str, ...] = (),
        cats: tuple[str, ...] = (), status: bool = False, gen: bool = False,
        name_rule: str = "subdomain", version: str = "v1", scale: bool = False) -> ResourceType:
    return ResourceType(group, version, kind, plural, namespaced, short, cats, status, gen, name_rule,
                        scale_subresource=scale)


BUILTIN_TYPES: tuple[ResourceType, ...] = (
    _rt("", "Namespace", "namespaces", False, ("ns",), status=True, name_rule="label"),
    _rt("", "ConfigMap", "configmaps", short=("cm",)),
    _rt("", "Secret", "secrets"),
    _rt("", "Service", "services", short=("svc",), cats=("all",), status=True, name_rule="dns1035"),
    _rt("", "ServiceAccount", "serviceaccounts", short=("sa",)),
    _rt("", "Pod", "pods", short=("po",), cats=("all",), status=True),
    _rt("", "PersistentVolumeClaim", "persistentvolumeclaims", short=("pvc",), status=True),
    _rt("", "Event", "events", short=("ev",)),
    _rt("", "Endpoints", "endpoints", short=("ep",)),
    _rt("", "ResourceQuota", "resourcequotas", short=("quota",), status=True),
    _rt("", "LimitRange", "limitranges", short=("limits",)),
    _rt("apps", "Deployment", "deployments", short=("deploy",), cats=("all",), status=True, gen=True, scale=True),
    _rt("apps", "StatefulSet", "statefulsets", short=("sts",), cats=("all",), status=True, gen=True, scale=True),
    _rt("apps", "DaemonSet", "daemonsets", short=("ds",), cats=("all",), status=True, gen=True),
    _rt("apps", "ReplicaSet", "replicasets", short=("rs",), cats=("all",), status=True, gen=True, scale=True),
    _rt("batch", "Job", "jobs", cats=("all",), status=True, gen=True),
    _rt("batch", "CronJob", "cronjobs", short=("cj",), cats=("all",), status=True, gen=True),
    _rt("autoscaling", "HorizontalPodAutoscaler", "horizontalpodautoscalers", short=("hpa",),
        cats=("all",), status=True, gen=True, version="v2"),
    _rt("policy", "PodDisruptionBudget", "poddisruptionbudgets", short=("pdb",), status=True, gen=True),
    _rt("rbac.authorization.k8s.io", "Role", "roles", name_rule="path"),
    _rt("rbac.authorization.k8s.io", "RoleBinding", "rolebindings", name_rule="path"),
    _rt("rbac.authorization.k8s.io", "ClusterRole", "clusterroles", False, name_rule="path"),
    _rt("rbac.authorization.k8s.io", "ClusterRoleBinding", "clusterrolebindings", False, name_rule="path"),
    _rt("networking.k8s.io", "Ingress", "ingresses", short=("ing",), status=True, gen=True),
    _rt("networking.k8s.io", "NetworkPolicy", "networkpolicies", short=("netpol",), gen=True),
    _rt("coordination.k8s.io", "Lease", "leases"),
    _rt("apiextensions.k8s.io", "CustomResourceDefinition", "customresourcedefinitions", False,
        ("crd", "crds"), ("api-extensions",), status=True, gen=True),
    ResourceType("authorization.k8s.io", "v1", "SelfSubjectAccessReview", "selfsubjectaccessreviews", False,
                 review=True),
    ResourceType("authentication.k8s.io", "v1", "SelfSubjectReview", "selfsubjectreviews", False, review=True),
)

INITIAL_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")

SERVER_VERSION = {
    "major": "1",
    "minor": "32",
    # Build metadata says what this really is without upsetting version parsers.
    "gitVersion": "v1.32.0+herald.kubeapi",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2024-12-11T00:00:00Z",
    "goVersion": "go1.23.3",
    "compiler": "gc",
    "platform": "linux/amd64",
}


def _version_priority(version: str) -> tuple[int, int, int]:
    """Kubernetes version ordering: v2 > v1 > v1beta2 > v1beta1 > v1alpha1 > other."""
    m = re.fullmatch(r"v(\d+)(?:(alpha|beta)(\d+))?", version)
    if not m:
        return (0, 0, 0)
    stability = {"alpha": 1, "beta": 2, None: 3}[m.group(2)]
    return (stability, int(m.group(1)), int(m.group(3) or 0))


# --------------------------------------------------------------------------- #
# Status errors
# --------------------------------------------------------------------------- #

_REASONS = {
    400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
    405: "MethodNotAllowed", 406: "NotAcceptable", 409: "Conflict", 410: "Expired",
    415: "UnsupportedMediaType", 422: "Invalid", 429: "TooManyRequests",
    500: "InternalError", 503: "ServiceUnavailable", 504: "Timeout",
}


class ApiError(Exception):
    """An error answered as a ``metav1.Status``, shaped as the apiserver shapes it."""

    def __init__(self, code: int, message: str, reason: str | None = None,
                 details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason if reason is not None else _REASONS.get(code, ""),
        }
        if details is not None:
            self.status["details"] = details
        self.status["code"] = code


def _details(rtype: ResourceType | None, name: str, *, kind: str | None = None,
             group: str | None = None, **extra: Any) -> dict[str, Any]:
    """StatusDetails with Go's omitempty: empty name/group are left out."""
    d: dict[str, Any] = {}
    if name:
        d["name"] = name
    g = group if group is not None else (rtype.group if rtype else "")
    if g:
        d["group"] = g
    k = kind if kind is not None else (rtype.plural if rtype else "")
    if k:
        d["kind"] = k
    d.update(extra)
    return d


def not_found(rtype: ResourceType, name: str) -> ApiError:
    return ApiError(404, f'{rtype.group_resource} "{name}" not found', "NotFound", _details(rtype, name))


def namespace_not_found(namespace: str) -> ApiError:
    return ApiError(404, f'namespaces "{namespace}" not found', "NotFound",
                    {"name": namespace, "kind": "namespaces"})


def already_exists(rtype: ResourceType, name: str) -> ApiError:
    return ApiError(409, f'{rtype.group_resource} "{name}" already exists', "AlreadyExists",
                    _details(rtype, name))


def bad_request(message: str) -> ApiError:
    return ApiError(400, message, "BadRequest")


def modified_conflict(rtype: ResourceType, name: str) -> ApiError:
    return ApiError(409, f'Operation cannot be fulfilled on {rtype.group_resource} "{name}": the object '
                         "has been modified; please apply your changes to the latest version and try again",
                    "Conflict", _details(rtype, name))


@dataclass(frozen=True)
class FieldError:
    """One ``field.Error``: rendered like Go's ``field.Error.Error()``."""

    type: str  # FieldValueInvalid, FieldValueRequired, ...
    field: str
    detail: str = ""
    value: Any = None

    def body(self) -> str:
        if self.type == "FieldValueRequired":
            head = "Required value"
        elif self.type == "FieldValueForbidden":
            head = "Forbidden"
        elif self.type == "FieldValueNotSupported":
            head = f"Unsupported value: {_go_value(self.value)}"
        else:
            head = f"Invalid value: {_go_value(self.value)}"
        return f"{head}: {self.detail}" if self.detail else head

    def __str__(self) -> str:
        return f"{self.field}: {self.body()}"


class GoLiteral(str):
    """A value already written as Go's ``%#v`` prints it (a struct, a slice)."""


def _go_value(value: Any) -> str:
    """How ``field.Invalid`` prints a value (``%q`` for strings, ``%#v`` for maps)."""
    if isinstance(value, GoLiteral):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, dict):
        inner = ", ".join(f"{json.dumps(k)}:{json.dumps(v)}" for k, v in sorted(value.items()))
        return "map[string]string{" + inner + "}"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def invalid(group_kind: str, group: str, name: str, errors: list[FieldError]) -> ApiError:
    """``errors.NewInvalid``: 422 with one cause per field error."""
    kind = group_kind.split(".", 1)[0]
    agg = str(errors[0]) if len(errors) == 1 else "[" + ", ".join(str(e) for e in errors) + "]"
    causes = [{"reason": e.type, "message": e.body(), "field": e.field} for e in errors]
    return ApiError(422, f'{group_kind} "{name}" is invalid: {agg}', "Invalid",
                    _details(None, name, kind=kind, group=group, causes=causes))


# --------------------------------------------------------------------------- #
# Validation
# --------------------------------------------------------------------------- #

_DNS1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN = _DNS1123_LABEL + r"(\." + _DNS1123_LABEL + r")*"
_DNS1035_LABEL = r"[a-z]([-a-z0-9]*[a-z0-9])?"
_QUALIFIED_NAME = r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_LABEL_VALUE = r"(" + _QUALIFIED_NAME + r")?"

_MSG_SUBDOMAIN = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
                  "'.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used "
                  f"for validation is '{_DNS1123_SUBDOMAIN}')")
_MSG_LABEL = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must "
              "start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for "
              f"validation is '{_DNS1123_LABEL}')")
_MSG_DNS1035 = ("a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an "
                "alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', "
                f"regex used for validation is '{_DNS1035_LABEL}')")
_MSG_QUALIFIED = ("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end "
                  "with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for "
                  f"validation is '{_QUALIFIED_NAME}')")
_MSG_LABEL_VALUE = ("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or "
                    "'.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or "
                    f"'my_value',  or '12345', regex used for validation is '{_LABEL_VALUE}')")


def _name_problems(name: str, rule: str) -> list[str]:
    if rule == "path":
        if name in (".", ".."):
            return [f"may not be '{name}'"]
        return [f"may not contain '{c}'" for c in "/%" if c in name]
    pattern, limit, msg = {
        "subdomain": (_DNS1123_SUBDOMAIN, 253, _MSG_SUBDOMAIN),
        "label": (_DNS1123_LABEL, 63, _MSG_LABEL),
        "dns1035": (_DNS1035_LABEL, 63, _MSG_DNS1035),
    }[rule]
    problems = []
    if len(name) > limit:
        problems.append(f"must be no more than {limit} characters")
    if not re.fullmatch(pattern, name):
        problems.append(msg)
    return problems


def _label_problems(labels: Any) -> list[FieldError]:
    errors: list[FieldError] = []
    if not isinstance(labels, dict):
        return errors
    for key, value in labels.items():
        prefix, _, name_part = key.rpartition("/")
        if prefix and _name_problems(prefix, "subdomain"):
            errors.append(FieldError("FieldValueInvalid", "metadata.labels", "prefix part " + _MSG_SUBDOMAIN, key))
        if len(name_part) > 63:
            errors.append(FieldError("FieldValueInvalid", "metadata.labels",
                                     "name part must be no more than 63 characters", key))
        if not re.fullmatch(_QUALIFIED_NAME, name_part):
            errors.append(FieldError("FieldValueInvalid", "metadata.labels", _MSG_QUALIFIED, key))
        value = "" if value is None else str(value)
        if len(value) > 63:
            errors.append(FieldError("FieldValueInvalid", "metadata.labels", "must be no more than 63 characters",
                                     value))
        if not re.fullmatch(_LABEL_VALUE, value):
            errors.append(FieldError("FieldValueInvalid", "metadata.labels", _MSG_LABEL_VALUE, value))
    return errors


def _go_label_selector(selector: Any) -> GoLiteral:
    """``%#v`` of a metav1.LabelSelector, as immutable-selector errors print it."""
    selector = selector if isinstance(selector, dict) else {}
    labels = selector.get("matchLabels")
    text = ("map[string]string{" + ", ".join(f"{json.dumps(k)}:{json.dumps(v)}" for k, v in sorted(labels.items()))
            + "}") if isinstance(labels, dict) and labels else "map[string]string(nil)"
    exprs = "[]v1.LabelSelectorRequirement(nil)" if not selector.get("matchExpressions") else \
        "[]v1.LabelSelectorRequirement{...}"
    return GoLiteral(f"v1.LabelSelector{{MatchLabels:{text}, MatchExpressions:{exprs}}}")


_STS_UPDATABLE = ("replicas", "ordinals", "template", "updateStrategy", "persistentVolumeClaimRetentionPolicy",
                  "minReadySeconds")


def _immutability_problems(rtype: ResourceType, live: dict[str, Any], new: dict[str, Any]) -> list[FieldError]:
    """The registries' ValidateUpdate rules for fields that cannot change once set.

    Messages are the apiserver's; a Job's pod template is printed abbreviated
    (``core.PodTemplateSpec{...}``) where the real one prints the whole struct."""
    if rtype.custom:
        return []
    kind = rtype.kind
    old_spec = live.get("spec") if isinstance(live.get("spec"), dict) else {}
    spec = new.get("spec") if isinstance(new.get("spec"), dict) else {}
    errors: list[FieldError] = []
    if kind in ("Deployment", "ReplicaSet", "DaemonSet") and spec.get("selector") != old_spec.get("selector"):
        errors.append(FieldError("FieldValueInvalid", "spec.selector", "field is immutable",
                                 _go_label_selector(spec.get("selector"))))
    elif kind == "StatefulSet":
        if {k: v for k, v in spec.items() if k not in _STS_UPDATABLE} != \
                {k: v for k, v in old_spec.items() if k not in _STS_UPDATABLE}:
            allowed = ", ".join(f"'{k}'" for k in _STS_UPDATABLE[:-1])
            errors.append(FieldError("FieldValueForbidden", "spec", "updates to statefulset spec for fields other "
                                     f"than {allowed} and '{_STS_UPDATABLE[-1]}' are forbidden"))
    elif kind == "Job":
        if spec.get("selector") != old_spec.get("selector"):
            errors.append(FieldError("FieldValueInvalid", "spec.selector", "field is immutable",
                                     _go_label_selector(spec.get("selector"))))
        if spec.get("template") != old_spec.get("template"):
            errors.append(FieldError("FieldValueInvalid", "spec.template", "field is immutable",
                                     GoLiteral("core.PodTemplateSpec{...}")))
        if spec.get("completions") != old_spec.get("completions"):
            errors.append(FieldError("FieldValueInvalid", "spec.completions", "field is immutable",
                                     spec.get("completions")))
    elif kind in ("ConfigMap", "Secret") and live.get("immutable") is True:
        for name in ("data", "binaryData") + (("stringData",) if kind == "Secret" else ()):
            if new.get(name) != live.get(name):
                errors.append(FieldError("FieldValueForbidden", name, "field is immutable when `immutable` is set"))
        if new.get("immutable") is not True:
            errors.append(FieldError("FieldValueForbidden", "immutable", "field is immutable when `immutable` is set"))
    elif kind == "Service":
        old_ip, ip = old_spec.get("clusterIP"), spec.get("clusterIP")
        if old_ip and old_ip != "None" and ip != old_ip and spec.get("type") != "ExternalName":
            errors.append(FieldError("FieldValueInvalid", "spec.clusterIPs[0]", "may not change once set",
                                     GoLiteral("[]string{" + json.dumps(ip or "") + "}")))
    elif kind in ("RoleBinding", "ClusterRoleBinding") and new.get("roleRef") != live.get("roleRef"):
        ref = new.get("roleRef") if isinstance(new.get("roleRef"), dict) else {}
        errors.append(FieldError("FieldValueInvalid", "roleRef", "cannot change roleRef", GoLiteral(
            f'rbac.RoleRef{{APIGroup:{json.dumps(ref.get("apiGroup", ""))}, Kind:{json.dumps(ref.get("kind", ""))}, '
            f'Name:{json.dumps(ref.get("name", ""))}}}')))
    return errors


def _validate(rtype: ResourceType, obj: dict[str, Any], live: dict[str, Any] | None = None) -> None:
    """The slice of registry validation a GitOps client trips over in practice; with the
    live object, an update's immutability rules too (checked first, as ValidateUpdate does)."""
    meta = obj["metadata"]
    name = meta.get("name", "")
    errors = _immutability_problems(rtype, live, obj) if live is not None else []
    errors += [FieldError("FieldValueInvalid", "metadata.name", p, name) for p in _name_problems(name, rtype.name_rule)]
    errors += _label_problems(meta.get("labels"))
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    if not rtype.custom and rtype.kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"):
        selector = spec.get("selector")
        template_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
        if not selector:
            errors.append(FieldError("FieldValueRequired", "spec.selector"))
        wanted = (selector or {}).get("matchLabels") or {}
        if not wanted or any(template_labels.get(k) != v for k, v in wanted.items()):
            errors.append(FieldError("FieldValueInvalid", "spec.template.metadata.labels",
                                     "`selector` does not match template `labels`", template_labels))
    if rtype.kind == "Lease" and not rtype.custom:
        # ValidateLeaseSpec: the two counters must make sense; times and holder are free-form.
        duration, transitions = spec.get("leaseDurationSeconds"), spec.get("leaseTransitions")
        if isinstance(duration, int) and duration <= 0:
            errors.append(FieldError("FieldValueInvalid", "spec.leaseDurationSeconds", "must be greater than 0",
                                     duration))
        if isinstance(transitions, int) and transitions < 0:
            errors.append(FieldError("FieldValueInvalid", "spec.leaseTransitions",
                                     "must be greater than or equal to 0", transitions))
    if rtype.kind == "CustomResourceDefinition" and not rtype.custom:
        names = spec.get("names") or {}
        expected = f"{names.get('plural', '')}.{spec.get('group', '')}"
        if name != expected:
            errors.append(FieldError("FieldValueInvalid", "metadata.name",
                                     'must be spec.names.plural+"."+spec.group', name))
    if errors:
        raise invalid(rtype.group_kind, rtype.group, name, errors)


# --------------------------------------------------------------------------- #
# Field sets (managedFields / FieldsV1)
# --------------------------------------------------------------------------- #

# A field path is a tuple of FieldsV1 path elements: "f:spec", 'k:{"name":"web"}'.
FieldPath = tuple[str, ...]
_MISSING: Any = object()

# Associative lists of the built-in types and their keys (x-kubernetes-list-map-keys).
# Everything else, and every list in a custom resource, is atomic, as the
# server treats lists that have no such schema.
_LIST_MAP_KEYS: dict[str, tuple[str, ...]] = {
    "containers": ("name",),
    "initContainers": ("name",),
    "ephemeralContainers": ("name",),
    "env": ("name",),
    "volumes": ("name",),
    "volumeMounts": ("mountPath",),
    "conditions": ("type",),
    "ownerReferences": ("uid",),
}
_KEY_DEFAULTS = {"protocol": "TCP"}

# Metadata the server owns; never part of anyone's field set.
_IGNORED_PATHS: tuple[FieldPath, ...] = (
    ("f:apiVersion",), ("f:kind",),
    *(("f:metadata", f"f:{k}") for k in (
        "name", "namespace", "uid", "resourceVersion", "generation", "creationTimestamp",
        "managedFields", "selfLink", "deletionTimestamp", "deletionGracePeriodSeconds")),
)


def _list_keys(field_name: str | None, items: list[Any]) -> tuple[str, ...] | None:
    """The keys of an associative list, or None when the list is atomic."""
    if not items or not all(isinstance(i, dict) for i in items):
        return None
    if field_name == "ports":
        if all("containerPort" in i for i in items):
            keys: tuple[str, ...] = ("containerPort", "protocol")
        elif all("port" in i for i in items):
            keys = ("port", "protocol")
        else:
            return None
    else:
        keys = _LIST_MAP_KEYS.get(field_name or "", ())
    if not keys or not all(k in i for i in items for k in keys if k not in _KEY_DEFAULTS):
        return None
    tokens = [_key_token(i, keys) for i in items]
    return keys if len(set(tokens)) == len(tokens) else None


def _is_label_selector(name: str | None, value: dict[str, Any]) -> bool:
    """metav1.LabelSelector is an atomic struct: owned and replaced as a whole."""
    return bool(name) and name.lower().endswith("selector") and set(value) <= {"matchLabels", "matchExpressions"}


def _key_token(item: dict[str, Any], keys: tuple[str, ...]) -> str:
    key = {k: item.get(k, _KEY_DEFAULTS.get(k)) for k in sorted(keys)}
    return "k:" + json.dumps(key, separators=(",", ":"))


def field_paths(obj: dict[str, Any], keyed_lists: bool) -> set[FieldPath]:
    """The set of fields an object (or apply configuration) sets.

    Leaves are scalars, atomic lists and empty maps; items of associative lists
    are members themselves (rendered with ``.``) and have their own fields.
    """
    out: set[FieldPath] = set()

    def walk(value: Any, path: FieldPath, name: str | None) -> None:
        if isinstance(value, dict) and value and not (keyed_lists and _is_label_selector(name, value)):
            for k, child in value.items():
                walk(child, path + (f"f:{k}",), k)
            return
        keys = _list_keys(name, value) if keyed_lists and isinstance(value, list) else None
        if keys:
            for item in value:
                item_path = path + (_key_token(item, keys),)
                out.add(item_path)
                for k, child in item.items():
                    walk(child, item_path + (f"f:{k}",), k)
        elif path:
            out.add(path)

    walk(obj, (), None)
    return {p for p in out if not any(p[:len(i)] == i for i in _IGNORED_PATHS)}


def _in_scope(paths: Iterable[FieldPath], scope: str) -> set[FieldPath]:
    """Restrict a field set to what a write may touch (see ResourceType.write_scope)."""
    if scope == "all":
        return set(paths)
    if scope == "status":
        return {p for p in paths if p[:1] == ("f:status",)}
    if scope == "scale":
        return {p for p in paths if p == ("f:spec", "f:replicas")}
    return {p for p in paths if p[:1] != ("f:status",)}


def to_fields_v1(paths: set[FieldPath]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for p in paths:
        node = tree
        for el in p:
            node = node.setdefault(el, {})

    def finish(node: dict[str, Any], path: FieldPath) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if path and node and path in paths:
            out["."] = {}
        for el in sorted(node):
            out[el] = finish(node[el], path + (el,))
        return out

    return finish(tree, ())


def from_fields_v1(tree: dict[str, Any], prefix: FieldPath = ()) -> set[FieldPath]:
    out: set[FieldPath] = set()
    for el, child in tree.items():
        if el == ".":
            continue
        p = prefix + (el,)
        if not child or "." in child:
            out.add(p)
        out |= from_fields_v1(child, p)
    return out


def _item_matches(item: Any, key: dict[str, Any]) -> bool:
    return isinstance(item, dict) and all(item.get(k, _KEY_DEFAULTS.get(k)) == v for k, v in key.items())


def get_path(obj: Any, path: FieldPath) -> Any:
    cur = obj
    for el in path:
        if el.startswith("f:") and isinstance(cur, dict) and el[2:] in cur:
            cur = cur[el[2:]]
        elif el.startswith("k:") and isinstance(cur, list):
            key = json.loads(el[2:])
            cur = next((i for i in cur if _item_matches(i, key)), _MISSING)
            if cur is _MISSING:
                return _MISSING
        else:
            return _MISSING
    return cur


def remove_path(obj: dict[str, Any], path: FieldPath) -> None:
    """Remove one field (or list item), then the maps and lists it left empty,
    as Go's omitempty drops them; ``metadata`` itself always stays."""
    chain: list[Any] = [obj]
    for el in path[:-1]:
        child = get_path(chain[-1], (el,))
        if not isinstance(child, (dict, list)):
            return
        chain.append(child)
    for depth in range(len(path) - 1, -1, -1):
        container, el = chain[depth], path[depth]
        if depth < len(path) - 1:  # a parent: only if now empty, and never metadata
            if get_path(container, (el,)) not in ({}, []) or path[:depth + 1] == ("f:metadata",):
                break
        if el.startswith("f:"):
            container.pop(el[2:], None)
        else:
            key = json.loads(el[2:])
            container[:] = [i for i in container if not _item_matches(i, key)]


def path_string(path: FieldPath) -> str:
    """structured-merge-diff's ``Path.String()``: ``.spec.containers[name="web"].image``."""
    out = []
    for el in path:
        if el.startswith("f:"):
            out.append("." + el[2:])
        elif el.startswith("k:"):
            key = json.loads(el[2:])
            out.append("[" + ",".join(f"{k}={json.dumps(v)}" for k, v in key.items()) + "]")
        else:
            out.append(f"[{el}]")
    return "".join(out)


def merge_applied(live: Any, applied: Any, keyed_lists: bool, name: str | None = None) -> Any:
    """Merge an apply configuration into the live object: maps merge, associative
    lists merge item by item, everything else (atomic lists, label selectors,
    scalars) is replaced."""
    if isinstance(live, dict) and isinstance(applied, dict) and not (
            keyed_lists and _is_label_selector(name, applied)):
        out = copy.deepcopy(live)
        for k, v in applied.items():
            out[k] = merge_applied(live[k], v, keyed_lists, k) if k in live else copy.deepcopy(v)
        return out
    if keyed_lists and isinstance(live, list) and isinstance(applied, list):
        keys = _list_keys(name, applied)
        if keys and _list_keys(name, live) == keys:
            by_token = {_key_token(i, keys): i for i in applied}
            live_tokens = set()
            result = []
            for item in live:
                token = _key_token(item, keys)
                live_tokens.add(token)
                result.append(merge_applied(item, by_token[token], keyed_lists) if token in by_token
                              else copy.deepcopy(item))
            result += [copy.deepcopy(i) for t, i in by_token.items() if t not in live_tokens]
            return result
    return copy.deepcopy(applied)


def _drop_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


@dataclass
class ManagedEntry:
    """One ``metadata.managedFields`` entry, with its FieldsV1 as a path set."""

    manager: str
    operation: str  # "Apply" or "Update"
    api_version: str
    time: str
    paths: set[FieldPath]
    subresource: str = ""

    @property
    def ident(self) -> tuple[str, str, str, str]:
        # Appliers are one manager whatever version they apply with (BuildManagerIdentifier).
        return (self.manager, self.operation, self.subresource,
                "" if self.operation == "Apply" else self.api_version)

    def display(self) -> str:
        """How conflict messages name a manager (printManager in the apiserver)."""
        text = json.dumps(self.manager)
        if self.subresource:
            text += f" with subresource {json.dumps(self.subresource)}"
        if self.operation == "Update":
            text += f" using {self.api_version}"
        return text

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "manager": self.manager,
            "operation": self.operation,
            "apiVersion": self.api_version,
            "time": self.time,
            "fieldsType": "FieldsV1",
            "fieldsV1": to_fields_v1(self.paths),
        }
        if self.subresource:
            out["subresource"] = self.subresource
        return out

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> ManagedEntry:
        return cls(raw.get("manager", ""), raw.get("operation", "Update"), raw.get("apiVersion", ""),
                   raw.get("time", ""), from_fields_v1(raw.get("fieldsV1") or {}), raw.get("subresource", ""))


def _sorted_entries(entries: list[ManagedEntry]) -> list[ManagedEntry]:
    """The apiserver's order: Apply before Update, then by time, manager, version."""
    return sorted((e for e in entries if e.paths),
                  key=lambda e: (e.operation, e.time, e.manager, e.api_version, e.subresource))


# --------------------------------------------------------------------------- #
# Selectors
# --------------------------------------------------------------------------- #

@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # =, !=, in, notin, exists, !, gt, lt
    values: tuple[str, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op == "exists":
            return present
        if self.op == "!":
            return not present
        if self.op in ("=", "in"):
            return present and value in self.values
        if self.op in ("!=", "notin"):
            return not present or value not in self.values
        try:
            number, bound = int(str(value)), int(self.values[0])
        except (TypeError, ValueError):
            return False
        return present and (number > bound if self.op == "gt" else number < bound)


_REQUIREMENT = re.compile(
    r"\s*(?:(?P<not>!)\s*(?P<nkey>[^\s=!<>(),]+)"
    r"|(?P<key>[^\s=!<>(),]+)\s*(?:"
    r"(?P<op>==|=|!=)\s*(?P<val>[^\s=!<>(),]*)"
    r"|\s(?P<setop>in|notin)\s*\((?P<vals>[^()]*)\)"
    r"|(?P<cmp>[<>])\s*(?P<num>-?\d+)"
    r")?)\s*$")


def _split_top_level(text: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def parse_label_selector(text: str) -> list[Requirement]:
    """Parse the label selector grammar of ``k8s.io/apimachinery/pkg/labels``."""
    if not text.strip():
        return []
    reqs = []
    for part in _split_top_level(text):
        m = _REQUIREMENT.fullmatch(part)
        if not m:
            raise bad_request(f"unable to parse requirement: found '{part.strip()}', expected: "
                              "'=', '!=', '==', 'in', notin'")
        if m["not"]:
            reqs.append(Requirement(m["nkey"], "!"))
        elif m["op"]:
            reqs.append(Requirement(m["key"], "!=" if m["op"] == "!=" else "=", (m["val"],)))
        elif m["setop"]:
            values = tuple(v.strip() for v in m["vals"].split(",") if v.strip())
            reqs.append(Requirement(m["key"], m["setop"], values))
        elif m["cmp"]:
            reqs.append(Requirement(m["key"], "gt" if m["cmp"] == ">" else "lt", (m["num"],)))
        else:
            reqs.append(Requirement(m["key"], "exists"))
    return reqs


def parse_field_selector(text: str) -> list[tuple[str, bool, str]]:
    """``metadata.name=x,metadata.namespace!=y`` → [(field, equal, value)]."""
    out = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        m = re.fullmatch(r"([^=!]+?)\s*(==|=|!=)\s*(.*)", part)
        if not m:
            raise bad_request(f"invalid selector: '{text}'; can't understand '{part}'")
        name, op, value = m.groups()
        if name not in ("metadata.name", "metadata.namespace"):
            raise bad_request(f'"{name}" is not a known field selector: only "metadata.name", "metadata.namespace"')
        out.append((name, op != "!=", value))
    return out


def _matches(obj: dict[str, Any], labels: list[Requirement], fields: list[tuple[str, bool, str]]) -> bool:
    meta = obj.get("metadata", {})
    obj_labels = meta.get("labels") or {}
    if not all(r.matches(obj_labels) for r in labels):
        return False
    for name, equal, value in fields:
        actual = meta.get(name.split(".", 1)[1], "")
        if (actual == value) != equal:
            return False
    return True


# --------------------------------------------------------------------------- #
# Small helpers
# --------------------------------------------------------------------------- #

def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _short_hash(value: Any, length: int = 10) -> str:
    """A stable name suffix in the alphabet the apiserver uses for generated names."""
    alphabet = "bcdfghjklmnpqrstvwxz2456789"
    digest = int.from_bytes(hashlib.sha256(json.dumps(value, sort_keys=True).encode()).digest()[:8], "big")
    out = []
    for _ in range(length):
        digest, i = divmod(digest, len(alphabet))
        out.append(alphabet[i])
    return "".join(out)


def _setdefault(obj: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for k in path[:-1]:
        nxt = obj.setdefault(k, {})
        if not isinstance(nxt, dict):
            return
        obj = nxt
    obj.setdefault(path[-1], copy.deepcopy(value))


class _NoTimestampLoader(yaml.SafeLoader):
    """YAML as sigs.k8s.io/yaml reads it: ``2024-01-01`` stays a string."""


_NoTimestampLoader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _decode_body(raw: bytes, content_type: str) -> Any:
    if content_type not in ("", "application/json", "application/yaml", "text/yaml") and \
            content_type not in _PATCH_TYPES:
        # Protobuf and CBOR bodies need the Go type registry; say so the way a
        # server that does not speak them does.
        raise ApiError(415, "the body of the request was in an unknown format - accepted media types include: "
                            "application/json, application/yaml", "UnsupportedMediaType", {})
    if not raw.strip():
        raise bad_request("the body of the request is empty")
    text = raw.decode("utf-8")
    try:
        return json.loads(text)
    except ValueError:
        if "yaml" not in content_type:
            raise bad_request(f"the object provided is unrecognized: {text[:30]!r}") from None
    try:
        return yaml.load(text, Loader=_NoTimestampLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as exc:
        raise bad_request(f"error decoding YAML: {exc}") from None


PROTOBUF = "application/vnd.kubernetes.protobuf"


def _protobuf_fields(data: bytes) -> list[tuple[int, Any]]:
    """(field number, value) of one protobuf message: varints as ints, the rest as bytes."""
    fields: list[tuple[int, Any]] = []
    pos = 0

    def varint() -> int:
        nonlocal pos
        value = shift = 0
        while True:
            if pos >= len(data):
                raise bad_request("the protobuf body ends inside a field")
            byte = data[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7

    while pos < len(data):
        key = varint()
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            fields.append((number, varint()))
            continue
        size = {1: 8, 5: 4}.get(wire_type)
        if size is None and wire_type == 2:
            size = varint()
        if size is None or pos + size > len(data):
            raise bad_request("the protobuf body is not a valid message")
        fields.append((number, data[pos:pos + size]))
        pos += size
    return fields


def _protobuf_strings(data: Any, names: dict[int, str]) -> dict[str, str]:
    """The non-empty string fields of a message, by JSON name (as Go's omitempty writes them)."""
    if not isinstance(data, bytes):
        return {}
    return {names[n]: v.decode("utf-8", "replace") for n, v in _protobuf_fields(data)
            if n in names and isinstance(v, bytes) and v}


_RESOURCE_ATTRIBUTES = {1: "namespace", 2: "verb", 3: "group", 4: "version", 5: "resource", 6: "subresource",
                        7: "name"}


def decode_review_protobuf(raw: bytes) -> dict[str, Any]:
    """A SelfSubjectAccessReview or SelfSubjectReview sent in Kubernetes' protobuf encoding,
    as kubectl's typed clients send them (``kubectl auth can-i``, ``kubectl auth whoami``): the
    "k8s\\0" magic, a runtime.Unknown envelope, then the review.  Only these two kinds are read;
    every other protobuf body is refused with a 415."""
    if not raw.startswith(b"k8s\x00"):
        raise bad_request("the protobuf body does not start with the Kubernetes magic number")
    envelope = dict(_protobuf_fields(raw[4:]))
    type_meta = _protobuf_strings(envelope.get(1), {1: "apiVersion", 2: "kind"})
    review: dict[str, Any] = {"apiVersion": type_meta.get("apiVersion", ""), "kind": type_meta.get("kind", "")}
    if review["kind"] == "SelfSubjectAccessReview":
        spec_fields = dict(_protobuf_fields(envelope.get(2) or b"")).get(2)
        spec = dict(_protobuf_fields(spec_fields)) if isinstance(spec_fields, bytes) else {}
        review["spec"] = {}
        if 1 in spec:
            review["spec"]["resourceAttributes"] = _protobuf_strings(spec[1], _RESOURCE_ATTRIBUTES)
        if 2 in spec:
            review["spec"]["nonResourceAttributes"] = _protobuf_strings(spec[2], {1: "path", 2: "verb"})
    elif review["kind"] != "SelfSubjectReview":
        raise ApiError(415, "the body of the request was in an unknown format - accepted media types include: "
                            "application/json, application/yaml", "UnsupportedMediaType", {})
    return review


def json_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = json_merge_patch(out.get(k), v)
    return out


def strategic_merge_patch(target: Any, patch: Any, name: str | None = None) -> Any:
    """A merge patch that merges the built-in associative lists by key, as
    strategic merge patch does (without ``$patch`` directives)."""
    if isinstance(patch, dict):
        out = copy.deepcopy(target) if isinstance(target, dict) else {}
        for k, v in patch.items():
            if v is None:
                out.pop(k, None)
            else:
                out[k] = strategic_merge_patch(out.get(k), v, k)
        return out
    if isinstance(patch, list) and isinstance(target, list):
        keys = _list_keys(name, patch)
        if keys and _list_keys(name, target) == keys:
            result = copy.deepcopy(target)
            for item in patch:
                token = _key_token(item, keys)
                for i, existing in enumerate(result):
                    if _key_token(existing, keys) == token:
                        result[i] = strategic_merge_patch(existing, item)
                        break
                else:
                    result.append(copy.deepcopy(item))
            return result
    return copy.deepcopy(patch)


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise bad_request(f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def json_patch(doc: Any, ops: Any) -> Any:
    """RFC 6902 (add, remove, replace, move, copy, test)."""
    if not isinstance(ops, list):
        raise bad_request("json patch must be a list of operations")
    doc = copy.deepcopy(doc)

    def walk(parts: list[str]) -> tuple[Any, str]:
        cur = doc
        for p in parts[:-1]:
            cur = cur[int(p)] if isinstance(cur, list) else cur[p]
        return cur, parts[-1]

    def get(parts: list[str]) -> Any:
        cur = doc
        for p in parts:
            cur = cur[int(p)] if isinstance(cur, list) else cur[p]
        return cur

    def remove(parts: list[str]) -> Any:
        parent, last = walk(parts)
        return parent.pop(int(last)) if isinstance(parent, list) else parent.pop(last)

    def add(parts: list[str], value: Any) -> None:
        parent, last = walk(parts)
        if isinstance(parent, list):
            parent.insert(len(parent) if last == "-" else int(last), value)
        else:
            parent[last] = value

    for op in ops:
        try:
            kind, parts = op["op"], _pointer(op["path"])
            if kind == "add":
                add(parts, copy.deepcopy(op["value"]))
            elif kind == "remove":
                remove(parts)
            elif kind == "replace":
                remove(parts)
                add(parts, copy.deepcopy(op["value"]))
            elif kind == "move":
                add(parts, remove(_pointer(op["from"])))
            elif kind == "copy":
                add(parts, copy.deepcopy(get(_pointer(op["from"]))))
            elif kind == "test":
                if get(parts) != op["value"]:
                    raise ApiError(422, f"the server rejected our request due to an error in our request: "
                                        f"testing value {op['path']} failed", "Invalid")
            else:
                raise bad_request(f"Unexpected kind: {kind}")
        except (KeyError, IndexError, ValueError, TypeError) as exc:
            raise ApiError(422, f"the server rejected our request due to an error in our request: {exc}",
                           "Invalid") from None
    return doc


# --------------------------------------------------------------------------- #
# The cluster state
# --------------------------------------------------------------------------- #

ObjKey = tuple[str, str, str, str]  # (group, plural, namespace, name)


@dataclass
class WatchEvent:
    rv: int
    type: str  # ADDED, MODIFIED, DELETED
    group: str
    plural: str
    obj: dict[str, Any]


@dataclass
class FailRule:
    """A planned failure: the next matching write is answered with this Status."""

    kind: str
    name: str
    namespace: str | None
    verbs: tuple[str, ...]
    error: ApiError
    times: int


@dataclass
class RolloutRule:
    """How the workload "controllers" roll out the workloads this rule matches.

    ``mode`` is "complete" (rolled out ``after`` seconds after the controller first saw
    the generation; 0 = at once), "progressing" (never finishes) or "failed" (Deployments
    pass their progress deadline, Jobs hit their backoff limit; StatefulSets and
    DaemonSets, which have no failed state, keep progressing)."""

    mode: str = "complete"
    after: float = 0.0
    kind: str | None = None
    namespace: str | None = None
    name: str | None = None

    def matches(self, kind: str, namespace: str, name: str) -> bool:
        return all(want is None or want == got for want, got in
                   ((self.kind, kind), (self.namespace, namespace), (self.name, name)))


ROLLOUT_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job")


class Cluster:
    """The API semantics, free of HTTP: a typed store guarded by one lock."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.rv = 0
        self.objects: dict[ObjKey, dict[str, Any]] = {}
        self.events: list[WatchEvent] = []
        self.oldest_event_rv = 0
        self.types: dict[tuple[str, str, str], ResourceType] = {}
        self.fail_rules: list[FailRule] = []
        self.stopping = False
        self._next_ip = 100  # 10.96.0.1 is the kubernetes Service's, 10.96.0.10 DNS's, on real clusters
        # How long the "namespace controller" takes to empty a deleted namespace.
        self.namespace_termination_seconds = 0.2
        self._timers: list[threading.Timer] = []
        self.rollout_rules: list[RolloutRule] = []
        self._rollout_seen: dict[tuple[str, int], float] = {}  # (uid, generation) -> first seen
        self._rollout_timers: set[tuple[str, int]] = set()
        self.reset()

    # -- registry ---------------------------------------------------------- #

    def reset(self) -> None:
        with self.lock:
            self.cancel_timers()
            self.objects.clear()
            self.events.clear()
            self.oldest_event_rv = self.rv
            self.fail_rules.clear()
            self.rollout_rules.clear()
            self._rollout_seen.clear()
            self._rollout_timers.clear()
            self.types = {(t.group, t.version, t.plural): t for t in BUILTIN_TYPES}
            for ns in INITIAL_NAMESPACES:
                self.write(self.type_for("v1", "Namespace"), None, ns, "create",
                           {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
                           manager="kube-apiserver")

    def type_for(self, api_version: str, kind: str) -> ResourceType:
        group, _, version = api_version.rpartition("/")
        for t in self.types.values():
            if (t.group, t.version, t.kind) == (group, version, kind):
                return t
        raise KeyError(f"no resource type for {api_version} {kind}")

    def lookup(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self.types.get((group, version, plural))

    def group_versions(self) -> dict[str, list[str]]:
        """Served versions per group, preferred first."""
        out: dict[str, list[str]] = {}
        for t in self.types.values():
            if t.group and t.version not in out.setdefault(t.group, []):
                out[t.group].append(t.version)
        for versions in out.values():
            versions.sort(key=_version_priority, reverse=True)
        return out

    def _sync_crd(self, crd: dict[str, Any] | None, name: str) -> None:
        """Serve (or stop serving) the kinds a CRD defines."""
        for key, t in list(self.types.items()):
            if t.custom and f"{t.plural}.{t.group}" == name:
                del self.types[key]
        if crd is None:
            return
        spec = crd.get("spec") or {}
        names = spec.get("names") or {}
        for v in spec.get("versions") or []:
            if not v.get("served", True):
                continue
            rtype = ResourceType(
                group=spec.get("group", ""), version=v.get("name", ""), kind=names.get("kind", ""),
                plural=names.get("plural", ""), namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                short_names=tuple(names.get("shortNames") or ()), categories=tuple(names.get("categories") or ()),
                status_subresource="status" in (v.get("subresources") or {}), tracks_generation=True,
                singular=names.get("singular", ""), custom=True,
            )
            self.types[(rtype.group, rtype.version, rtype.plural)] = rtype

    # -- authorization ------------------------------------------------------- #

    def authorize(self, user: UserInfo, attrs: Attributes) -> tuple[bool, str]:
        """kube-apiserver's authorizer chain, as (allowed, reason).

        Members of system:masters may do anything (the privileged-group authorizer, which
        gives no reason).  RBAC decides for everyone else: the rules of the roles that
        ClusterRoleBindings, then the RoleBindings of the request's namespace, bind the user
        (by name, group or ServiceAccount) to.  Allowed, the reason names the binding; denied,
        it lists the roles such bindings refer to that do not exist, or is empty."""
        if SYSTEM_MASTERS in user.groups:
            return True, ""
        errors: list[str] = []
        with self.lock:
            for source, rules in self._rules_for(user, attrs.namespace, errors):
                if any(rule_allows(rule, attrs) for rule in rules):
                    return True, f"RBAC: allowed by {source}"
        return False, f"RBAC: {_aggregate(errors)}" if errors else ""

    def _stored_rbac(self, plural: str, namespace: str = "") -> list[dict[str, Any]]:
        return [o for _, o in sorted((item for item in self.objects.items()
                                      if item[0][:3] == (RBAC_GROUP, plural, namespace)), key=lambda item: item[0])]

    def _role_rules(self, ref: Any, namespace: str) -> list[dict[str, Any]] | str:
        """The rules a binding's roleRef grants, or why it grants none (the error RBAC collects)."""
        ref = ref if isinstance(ref, dict) else {}
        kind, name = ref.get("kind", ""), str(ref.get("name", ""))
        if kind == "Role":
            role = self.objects.get((RBAC_GROUP, "roles", namespace, name)) if namespace else None
            if role is None:
                return f"role.{RBAC_GROUP} {_go_quote(name)} not found"
        elif kind == "ClusterRole":
            role = self.objects.get((RBAC_GROUP, "clusterroles", "", name))
            if role is None and name in _BOOTSTRAP_CLUSTER_ROLES:
                return _BOOTSTRAP_CLUSTER_ROLES[name]
            if role is None:
                return f"clusterrole.{RBAC_GROUP} {_go_quote(name)} not found"
        else:
            return f"unsupported role reference kind: {_go_quote(str(kind))}"
        rules = role.get("rules")
        return [r for r in rules if isinstance(r, dict)] if isinstance(rules, list) else []

    def _rules_for(self, user: UserInfo, namespace: str,
                   errors: list[str]) -> Iterable[tuple[str, list[dict[str, Any]]]]:
        """(which binding, its role's rules) for every binding that applies to the user."""
        stored = self._stored_rbac("clusterrolebindings")
        taken = {b["metadata"]["name"] for b in stored}
        builtin = [{"metadata": {"name": name},
                    "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": name},
                    "subjects": [{"kind": "Group", "apiGroup": RBAC_GROUP, "name": g} for g in groups]}
                   for name, groups in _BOOTSTRAP_BINDINGS if name not in taken]
        scoped = [("", b) for b in builtin + stored]
        if namespace:
            scoped += [(namespace, b) for b in self._stored_rbac("rolebindings", namespace)]
        for binding_namespace, binding in scoped:
            subjects = binding.get("subjects") if isinstance(binding.get("subjects"), list) else []
            subject = next((s for s in subjects if _subject_applies(s, user, binding_namespace)), None)
            if subject is None:
                continue
            rules = self._role_rules(binding.get("roleRef"), binding_namespace)
            if isinstance(rules, str):
                errors.append(rules)
                continue
            name, ref = binding["metadata"]["name"], binding["roleRef"]
            which = (f"RoleBinding {_go_quote(name + '/' + binding_namespace)}" if binding_namespace
                     else f"ClusterRoleBinding {_go_quote(name)}")
            yield (f"{which} of {ref.get('kind', '')} {_go_quote(str(ref.get('name', '')))} to "
                   f"{_describe_subject(subject, binding_namespace)}"), rules

    # -- reads --------------------------------------------------------------- #

    @staticmethod
    def key(rtype: ResourceType, namespace: str | None, name: str) -> ObjKey:
        return (rtype.group, rtype.plural, namespace or "" if rtype.namespaced else "", name)

    def get(self, rtype: ResourceType, namespace: str | None, name: str) -> dict[str, Any]:
        with self.lock:
            obj = self.objects.get(self.key(rtype, namespace, name))
            if obj is None:
                raise not_found(rtype, name)
            return self._render(rtype, obj)

    def list(self, rtype: ResourceType, namespace: str | None, query: dict[str, str]) -> dict[str, Any]:
        labels = parse_label_selector(query.get("labelSelector", ""))
        fields = parse_field_selector(query.get("fieldSelector", ""))
        with self.lock:
            items = [self._render(rtype, o, in_list=True)
                     for k, o in sorted(self.objects.items())
                     if k[:2] == (rtype.group, rtype.plural) and (not namespace or k[2] == namespace)
                     and _matches(o, labels, fields)]
            list_rv = str(self.rv)
        meta: dict[str, Any] = {"resourceVersion": list_rv}
        start = 0
        if query.get("continue"):
            try:
                token = json.loads(base64.urlsafe_b64decode(query["continue"].encode()))
                start, list_rv = int(token["start"]), token["rv"]
                meta["resourceVersion"] = list_rv
            except (ValueError, KeyError, TypeError):
                raise bad_request("continue key is not valid: incorrect encoded start resourceVersion "
                                  "(version meta.k8s.io/v1)") from None
        limit = int(query.get("limit") or 0)
        page = items[start:start + limit] if limit > 0 else items[start:]
        if limit > 0 and start + limit < len(items):
            meta["continue"] = base64.urlsafe_b64encode(
                json.dumps({"start": start + limit, "rv": list_rv}).encode()).decode()
            if not labels and not fields:
                meta["remainingItemCount"] = len(items) - start - limit
        return {"kind": f"{rtype.kind}List", "apiVersion": rtype.api_version, "metadata": meta, "items": page}

    @staticmethod
    def _render(rtype: ResourceType, obj: dict[str, Any], in_list: bool = False) -> dict[str, Any]:
        out = copy.deepcopy(obj)
        if in_list and not rtype.custom:
            # Typed lists carry the kind once, on the list, not on every item.
            out.pop("apiVersion", None)
            out.pop("kind", None)
        return out

    # -- failure injection --------------------------------------------------- #

    def _check_fail_rules(self, rtype: ResourceType, namespace: str | None, name: str, verb: str) -> None:
        for rule in self.fail_rules:
            if (rule.kind == rtype.kind and rule.name == name and verb in rule.verbs
                    and (rule.namespace is None or rule.namespace == (namespace or ""))):
                rule.times -= 1
                if rule.times <= 0:
                    self.fail_rules.remove(rule)
                raise rule.error

    # -- writes -------------------------------------------------------------- #

    def write(self, rtype: ResourceType, namespace: str | None, name: str, verb: str, body: Any, *,
              manager: str, subresource: str = "", force: bool = False, dry_run: bool = False,
              patch_type: str = "", authorize_create: Callable[[], None] | None = None) -> tuple[int, dict[str, Any]]:
        """Create, update, patch or apply one object; returns (HTTP code, object).

        The checks run in the order kube-apiserver runs them, so a request with
        several problems gets the same error a real cluster would give.
        ``authorize_create`` is called (and may raise a 403) when an apply is about to
        create the object: the request was authorized as a patch, and kube-apiserver
        asks the authorizer again for "create" once the object is known to be new and valid.
        """
        with self.lock:
            self._check_fail_rules(rtype, namespace, name, "apply" if patch_type == "apply" else verb)
            key = self.key(rtype, namespace, name)
            live = self.objects.get(key)
            if live is None and verb in ("update", "patch") and patch_type != "apply":
                raise not_found(rtype, name)
            if live is not None and verb == "create":
                self._check_namespace_exists(rtype, namespace)
                raise already_exists(rtype, name)
            if live is None and subresource:
                raise not_found(rtype, name)

            entries = [ManagedEntry.from_json(e) for e in (live or {}).get("metadata", {}).get("managedFields") or []]
            if patch_type == "apply":
                candidate, entries = self._apply(rtype, live, body, manager, force, subresource, entries)
            else:
                candidate = self._mutate(rtype, live, body, verb, patch_type)
                entries = _requested_entries(candidate, subresource) or entries

            meta = candidate.setdefault("metadata", {})
            if not isinstance(meta, dict):
                raise bad_request("metadata must be an object")
            self._check_namespace_and_name(rtype, namespace, name, meta, verb)
            if live is None:
                self._check_namespace_exists(rtype, namespace)
                self._check_namespace_active(rtype, namespace, meta.get("name") or name)

            new = self._restrict_to_subresource(rtype, live, candidate, subresource)
            self._restore_server_fields(rtype, live, new, namespace, name)
            _apply_defaults(rtype, new, self)
            _validate(rtype, new, live if subresource != "status" else None)
            if live is None and authorize_create is not None:
                authorize_create()

            if patch_type != "apply":
                entries = _update_entries(entries, live, new, manager, rtype, subresource)
            new["metadata"]["managedFields"] = [e.to_json() for e in _sorted_entries(entries)]
            if not new["metadata"]["managedFields"]:
                del new["metadata"]["managedFields"]
            code = 201 if live is None else 200
            return code, self._commit(rtype, key, live, new, dry_run)

    def get_scale(self, rtype: ResourceType, namespace: str | None, name: str) -> dict[str, Any]:
        return _to_scale(self.get(rtype, namespace, name))

    def write_scale(self, rtype: ResourceType, namespace: str | None, name: str, verb: str, body: Any, *,
                    manager: str, dry_run: bool = False, patch_type: str = "") -> dict[str, Any]:
        """PUT/PATCH of ``/scale``: an autoscaling/v1 Scale view of spec.replicas."""
        with self.lock:
            key = self.key(rtype, namespace, name)
            live = self.objects.get(key)
            if live is None:
                raise not_found(rtype, name)
            scale = _to_scale(live)
            if patch_type == "apply":
                raise bad_request("this test server does not support apply on the scale subresource")
            if verb == "update":
                wanted_rv = (body.get("metadata") or {}).get("resourceVersion") if isinstance(body, dict) else None
                if wanted_rv and wanted_rv != live["metadata"]["resourceVersion"]:
                    raise modified_conflict(rtype, name)
                new_scale = body
            elif patch_type == "json":
                new_scale = json_patch(scale, body)
            else:
                new_scale = json_merge_patch(scale, body)
            replicas = ((new_scale or {}).get("spec") or {}).get("replicas") if isinstance(new_scale, dict) else None
            if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
                raise invalid("Scale.autoscaling", "autoscaling", name, [
                    FieldError("FieldValueInvalid", "spec.replicas", "must be greater than or equal to 0", replicas)])
            new = copy.deepcopy(live)
            new.setdefault("spec", {})["replicas"] = replicas
            entries = [ManagedEntry.from_json(e) for e in live["metadata"].get("managedFields") or []]
            entries = _update_entries(entries, live, new, manager, rtype, "scale")
            new["metadata"]["managedFields"] = [e.to_json() for e in _sorted_entries(entries)]
            return _to_scale(self._commit(rtype, key, live, new, dry_run))

    def _apply(self, rtype: ResourceType, live: dict[str, Any] | None, body: Any, manager: str, force: bool,
               subresource: str, entries: list[ManagedEntry]) -> tuple[dict[str, Any], list[ManagedEntry]]:
        if not isinstance(body, dict):
            raise bad_request("error decoding YAML: the apply configuration must be an object")
        if body.get("apiVersion") != rtype.api_version:
            raise bad_request("Incorrect version specified in apply patch. Specified patch version: "
                              f"{body.get('apiVersion', '')}, expected: {rtype.api_version}")
        if body.get("kind") != rtype.kind:
            raise bad_request(f"the kind in the apply patch ({body.get('kind', '')}) does not match the kind of "
                              f"the resource ({rtype.kind})")
        meta = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
        if meta.get("managedFields") is not None:
            raise bad_request("metadata.managedFields must be nil")
        applied = _drop_nulls(body)
        wanted_rv = meta.get("resourceVersion")
        if wanted_rv and live is not None and wanted_rv != live["metadata"].get("resourceVersion"):
            raise modified_conflict(rtype, meta.get("name", ""))

        keyed = not rtype.custom
        new_set = _in_scope(field_paths(applied, keyed), rtype.write_scope(subresource))
        mine = ManagedEntry(manager, "Apply", rtype.api_version, _now(), new_set, subresource)
        previous = next((e for e in entries if e.ident == mine.ident), None)
        others = [e for e in entries if e.ident != mine.ident]

        base = live if live is not None else {}
        conflicts = [(e, p) for e in others for p in sorted(new_set & e.paths)
                     if not p[-1].startswith("k:") and get_path(applied, p) != get_path(base, p)]
        if conflicts and not force:
            raise _apply_conflict(conflicts)
        for e, p in conflicts:
            e.paths.discard(p)

        candidate = merge_applied({k: v for k, v in base.items()}, applied, keyed)
        if previous is not None:
            owned_by_others = set().union(*(e.paths for e in others)) if others else set()
            # Shortest first: dropping a list item drops the fields inside it too.
            for p in sorted(previous.paths - new_set, key=len):
                if not any(q[:len(p)] == p for q in owned_by_others):
                    remove_path(candidate, p)
        return candidate, others + ([mine] if new_set else [])

    @staticmethod
    def _mutate(rtype: ResourceType, live: dict[str, Any] | None, body: Any, verb: str,
                patch_type: str) -> dict[str, Any]:
        if verb == "patch":
            current = copy.deepcopy(live)
            if patch_type == "json":
                result = json_patch(current, body)
            elif patch_type == "strategic" and not rtype.custom:
                result = strategic_merge_patch(current, body)
            else:
                result = json_merge_patch(current, body)
            if not isinstance(result, dict):
                raise bad_request("the patched object must be a JSON object")
            return result
        if not isinstance(body, dict):
            raise bad_request("the object provided is unrecognized (must be a JSON or YAML object)")
        gv = body.get("apiVersion", rtype.api_version)
        if gv != rtype.api_version:
            raise bad_request(f"the API version in the data ({gv}) does not match the expected API version "
                              f"({rtype.api_version})")
        if body.get("kind", rtype.kind) != rtype.kind:
            raise bad_request(f"{body.get('kind')} in version \"{rtype.version}\" cannot be handled as a "
                              f"{rtype.kind}: the kind in the data does not match the resource")
        return copy.deepcopy(body)

    def _check_namespace_and_name(self, rtype: ResourceType, namespace: str | None, name: str,
                                  meta: dict[str, Any], verb: str) -> None:
        if rtype.namespaced:
            if meta.get("namespace") not in (None, "", namespace):
                raise bad_request("the namespace of the provided object does not match the namespace sent on "
                                  "the request")
        if verb != "create" and meta.get("name", name) != name:
            raise bad_request(f"the name of the object ({meta.get('name')}) does not match the name on the URL "
                              f"({name})")

    def _check_namespace_exists(self, rtype: ResourceType, namespace: str | None) -> None:
        if rtype.namespaced and ("", "namespaces", "", namespace or "") not in self.objects:
            raise namespace_not_found(namespace or "")

    def _check_namespace_active(self, rtype: ResourceType, namespace: str | None, name: str) -> None:
        """NamespaceLifecycle admission: nothing new in a terminating namespace."""
        ns = self.objects.get(("", "namespaces", "", namespace or "")) if rtype.namespaced else None
        if ns is not None and ns["metadata"].get("deletionTimestamp"):
            raise ApiError(403, f'{rtype.group_resource} "{name}" is forbidden: unable to create new content in '
                                f"namespace {namespace} because it is being terminated", "Forbidden",
                           _details(rtype, name, causes=[{"reason": "NamespaceTerminating",
                                                          "message": f"namespace {namespace} is being terminated",
                                                          "field": "metadata.namespace"}]))

    @staticmethod
    def _restrict_to_subresource(rtype: ResourceType, live: dict[str, Any] | None, candidate: dict[str, Any],
                                 subresource: str) -> dict[str, Any]:
        """Writes to the main resource cannot change status; writes to /status
        can change nothing else (the registries' PrepareForUpdate)."""
        if not rtype.status_subresource:
            return candidate
        if subresource == "status":
            new = copy.deepcopy(live) if live is not None else {}
            if "status" in candidate:
                new["status"] = candidate["status"]
            else:
                new.pop("status", None)
            return new
        new = candidate
        new.pop("status", None)
        if live is not None and "status" in live:
            new["status"] = copy.deepcopy(live["status"])
        return new

    def _restore_server_fields(self, rtype: ResourceType, live: dict[str, Any] | None, new: dict[str, Any],
                               namespace: str | None, name: str) -> None:
        new["apiVersion"], new["kind"] = rtype.api_version, rtype.kind
        meta = new.setdefault("metadata", {})
        if not name and meta.get("generateName"):
            name = meta["generateName"] + _short_hash(secrets.token_hex(8), 5)
        meta["name"] = name or meta.get("name", "")
        if not meta["name"]:
            raise invalid(rtype.group_kind, rtype.group, "", [
                FieldError("FieldValueRequired", "metadata.name", "name or generateName is required")])
        if rtype.namespaced:
            meta["namespace"] = namespace or ""
        else:
            meta.pop("namespace", None)
        for k in ("uid", "resourceVersion", "generation", "creationTimestamp", "managedFields",
                  "selfLink", "deletionTimestamp", "deletionGracePeriodSeconds"):
            meta.pop(k, None)
        if live is not None:
            for k in ("uid", "resourceVersion", "generation", "creationTimestamp", "deletionTimestamp",
                      "deletionGracePeriodSeconds"):
                if k in live["metadata"]:
                    meta[k] = live["metadata"][k]

    def _commit(self, rtype: ResourceType, key: ObjKey, live: dict[str, Any] | None, new: dict[str, Any],
                dry_run: bool) -> dict[str, Any]:
        """Store ``new`` unless it equals ``live``; a no-op keeps resourceVersion,
        generation and managedFields timestamps, as the apiserver does."""
        meta = new["metadata"]
        if live is not None:
            if _without_times(live) == _without_times(new):
                return copy.deepcopy(live)
            if rtype.tracks_generation and _generation_input(rtype, live) != _generation_input(rtype, new):
                meta["generation"] = int(live["metadata"].get("generation", 0)) + 1
        else:
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = _now()
            if rtype.tracks_generation:
                meta["generation"] = 1
        key = (key[0], key[1], key[2], meta["name"])
        if dry_run:
            if live is None:
                meta.pop("resourceVersion", None)
            return _order_metadata(new)
        if live is None and key in self.objects:
            raise already_exists(rtype, meta["name"])
        new = self._store(rtype, key, new, "MODIFIED" if live is not None else "ADDED")
        result = copy.deepcopy(new)
        if rtype.kind == "CustomResourceDefinition" and not rtype.custom:
            self._sync_crd(new, meta["name"])
        self._reconcile(rtype, key)
        return result

    def _store(self, rtype: ResourceType, key: ObjKey, obj: dict[str, Any], event: str) -> dict[str, Any]:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        obj = _order_metadata(obj)
        if event == "DELETED":
            self.objects.pop(key, None)
        else:
            self.objects[key] = obj
        self.events.append(WatchEvent(self.rv, event, rtype.group, rtype.plural, copy.deepcopy(obj)))
        if len(self.events) > 10_000:
            dropped = self.events[:5_000]
            del self.events[:5_000]
            self.oldest_event_rv = dropped[-1].rv
        self.changed.notify_all()
        return obj

    def delete(self, rtype: ResourceType, namespace: str | None, name: str, dry_run: bool = False,
               preconditions: dict[str, Any] | None = None) -> dict[str, Any]:
        with self.lock:
            self._check_fail_rules(rtype, namespace, name, "delete")
            key = self.key(rtype, namespace, name)
            obj = self.objects.get(key)
            if obj is None:
                raise not_found(rtype, name)
            uid = obj["metadata"].get("uid")
            pre = preconditions or {}
            if pre.get("uid") and pre["uid"] != uid:
                raise ApiError(409, f"Precondition failed: UID in precondition: {pre['uid']}, UID in object meta: "
                                    f"{uid}", "Conflict", _details(rtype, name))
            if pre.get("resourceVersion") and pre["resourceVersion"] != obj["metadata"].get("resourceVersion"):
                raise modified_conflict(rtype, name)
            if dry_run:
                return copy.deepcopy(obj)
            if rtype.kind == "Namespace" and not rtype.custom:
                return self._terminate_namespace(rtype, key, obj)
            self._delete_key(rtype, key)
            if rtype.kind == "CustomResourceDefinition" and not rtype.custom:
                spec = obj.get("spec") or {}
                group, plural = spec.get("group", ""), (spec.get("names") or {}).get("plural", "")
                for k in [k for k in self.objects if k[:2] == (group, plural)]:
                    child = self._type_of_key(k)
                    if child is not None:
                        self._delete_key(child, k)
                self._sync_crd(None, name)
            if rtype.custom or rtype.kind in ("Pod", "CustomResourceDefinition"):
                # These registries return the deleted object (graceful deletion,
                # finalizers); the others return a Status.
                gone = copy.deepcopy(obj)
                if not rtype.custom:  # graceful deletion / a finalizer: marked, not yet gone
                    gone["metadata"]["deletionTimestamp"] = _now()
                return gone
            return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                    "details": _details(rtype, name, uid=uid)}

    def _terminate_namespace(self, rtype: ResourceType, key: ObjKey, obj: dict[str, Any]) -> dict[str, Any]:
        """Deleting a namespace only marks it Terminating; the namespace
        controller empties and removes it a moment later.  Until then its
        objects can still be read, changed and deleted, but not created."""
        if obj["metadata"].get("deletionTimestamp"):
            return copy.deepcopy(obj)
        terminating = copy.deepcopy(obj)
        terminating["metadata"]["deletionTimestamp"] = _now()
        terminating["metadata"]["deletionGracePeriodSeconds"] = 0
        terminating.setdefault("status", {})["phase"] = "Terminating"
        stored = copy.deepcopy(self._store(rtype, key, terminating, "MODIFIED"))
        name = key[3]
        if self.namespace_termination_seconds <= 0:
            self._finalize_namespace(name)
        else:
            timer = threading.Timer(self.namespace_termination_seconds, self._finalize_namespace, (name,))
            timer.daemon = True
            self._timers.append(timer)
            timer.start()
        return stored

    def _finalize_namespace(self, name: str) -> None:
        with self.lock:
            key = ("", "namespaces", "", name)
            ns = self.objects.get(key)
            if ns is None or not ns["metadata"].get("deletionTimestamp"):
                return
            for k in [k for k in self.objects if k[2] == name]:
                child = self._type_of_key(k)
                if child is not None and child.namespaced:
                    self._delete_key(child, k)
            self._delete_key(self.type_for("v1", "Namespace"), key)

    def cancel_timers(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()

    def _type_of_key(self, key: ObjKey) -> ResourceType | None:
        return next((t for t in self.types.values() if (t.group, t.plural) == key[:2]), None)

    def _delete_key(self, rtype: ResourceType, key: ObjKey) -> None:
        obj = copy.deepcopy(self.objects[key])
        self._store(rtype, key, obj, "DELETED")

    # -- controllers ----------------------------------------------------------- #

    def _reconcile(self, rtype: ResourceType, key: ObjKey) -> None:
        """What the controllers would eventually write to status, written now as
        their own status update (a separate resourceVersion, like the real thing)."""
        obj = self.objects.get(key)
        if obj is None or rtype.custom:
            return
        controller = _CONTROLLERS.get(rtype.kind)
        if controller is None:
            return
        manager, compute = controller
        status = compute(obj, self)
        if status is None or status == obj.get("status"):
            return
        new = copy.deepcopy(obj)
        new["status"] = status
        entries = [ManagedEntry.from_json(e) for e in obj["metadata"].get("managedFields") or []]
        entries = _update_entries(entries, obj, new, manager, rtype, "status")
        new["metadata"]["managedFields"] = [e.to_json() for e in _sorted_entries(entries)]
        self._store(rtype, key, new, "MODIFIED")

    def rollout_phase(self, obj: dict[str, Any]) -> str:
        """complete | progressing | failed, for a workload's current generation."""
        meta = obj["metadata"]
        rule = next((r for r in reversed(self.rollout_rules)
                     if r.matches(obj.get("kind", ""), meta.get("namespace", ""), meta.get("name", ""))),
                    RolloutRule())
        if rule.mode != "complete":
            return rule.mode
        if rule.after <= 0:
            return "complete"
        seen_key = (meta.get("uid", ""), int(meta.get("generation", 1)))
        first = self._rollout_seen.setdefault(seen_key, time.monotonic())
        remaining = first + rule.after - time.monotonic()
        if remaining <= 0:
            return "complete"
        if seen_key not in self._rollout_timers and not self.stopping:
            self._rollout_timers.add(seen_key)
            rtype = self.type_for(obj["apiVersion"], obj["kind"])
            key = self.key(rtype, meta.get("namespace"), meta["name"])
            timer = threading.Timer(remaining + 0.01, self._rerun_controller, (rtype, key, seen_key))
            timer.daemon = True
            self._timers.append(timer)
            timer.start()
        return "progressing"

    def _rerun_controller(self, rtype: ResourceType, key: ObjKey, seen_key: tuple[str, int]) -> None:
        with self.lock:
            self._rollout_timers.discard(seen_key)
            if not self.stopping:
                self._reconcile(rtype, key)

    def set_rollout(self, rule: RolloutRule) -> None:
        """Add a rollout rule (the last matching rule wins) and let the controllers act on it."""
        with self.lock:
            self.rollout_rules.append(rule)
            for key in [k for k, o in self.objects.items() if o.get("kind") in ROLLOUT_KINDS]:
                rtype = self._type_of_key(key)
                if rtype is not None and not rtype.custom:
                    self._reconcile(rtype, key)

    def allocate_cluster_ip(self) -> str:
        ip = ipaddress.ip_address("10.96.0.0") + self._next_ip
        self._next_ip += 1
        return str(ip)


def _selector_string(selector: Any) -> str:
    """A LabelSelector in the string form Scale.status.selector uses."""
    selector = selector if isinstance(selector, dict) else {}
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        op, key, values = expr.get("operator", ""), expr.get("key", ""), expr.get("values") or []
        if op in ("In", "NotIn"):
            parts.append(f"{key} {op.lower()} ({','.join(sorted(values))})")
        elif op == "Exists":
            parts.append(key)
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
    return ",".join(parts)


def _to_scale(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj["metadata"]
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    scale_meta = {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp") if k in meta}
    return {"kind": "Scale", "apiVersion": "autoscaling/v1", "metadata": scale_meta,
            "spec": {"replicas": spec.get("replicas", 1)},
            "status": {"replicas": status.get("replicas", 0), "selector": _selector_string(spec.get("selector"))}}


def _apply_conflict(conflicts: list[tuple[ManagedEntry, FieldPath]]) -> ApiError:
    """409 worded like structured-merge-diff's conflict errors."""
    causes = [{"reason": "FieldManagerConflict", "message": f"conflict with {e.display()}",
               "field": path_string(p)} for e, p in conflicts]
    if len(conflicts) == 1:
        e, p = conflicts[0]
        message = f"Apply failed with 1 conflict: conflict with {e.display()}: {path_string(p)}"
    else:
        by_manager: dict[str, list[str]] = {}
        for e, p in conflicts:
            by_manager.setdefault(e.display(), []).append(path_string(p))
        lines = []
        for display in sorted(by_manager):
            lines.append(f"conflicts with {display}:")
            lines += [f"- {p}" for p in by_manager[display]]
        message = f"Apply failed with {len(conflicts)} conflicts: " + "\n".join(lines)
    return ApiError(409, message, "Conflict", {"causes": causes})


def _requested_entries(obj: dict[str, Any], subresource: str) -> list[ManagedEntry] | None:
    """managedFields a client wrote itself (kubectl does, to migrate client-side
    apply ownership).  As in the apiserver's decodeLiveOrNew: used when non-empty
    and decodable, ignored on subresources; otherwise the live entries stand."""
    provided = (obj.get("metadata") or {}).get("managedFields") if isinstance(obj.get("metadata"), dict) else None
    if subresource or not isinstance(provided, list) or not provided:
        return None
    if not all(isinstance(e, dict) and isinstance(e.get("fieldsV1", {}), dict) for e in provided):
        return None
    return [ManagedEntry.from_json(e) for e in provided]


def _update_entries(entries: list[ManagedEntry], live: dict[str, Any] | None, new: dict[str, Any],
                    manager: str, rtype: ResourceType, subresource: str) -> list[ManagedEntry]:
    """Field ownership after a non-apply write: the writer takes every field it
    added or changed (from everyone else); fields it removed leave every set."""
    keyed = not rtype.custom
    scope = rtype.write_scope(subresource)

    def scoped(paths: set[FieldPath]) -> set[FieldPath]:
        return _in_scope(paths, scope)

    old_paths = scoped(field_paths(live, keyed)) if live is not None else set()
    new_paths = scoped(field_paths(new, keyed))
    changed = {p for p in new_paths
               if p not in old_paths or (not p[-1].startswith("k:") and get_path(live, p) != get_path(new, p))}
    removed = old_paths - new_paths
    mine = ManagedEntry(manager, "Update", rtype.api_version, _now(), set(), subresource)
    result = []
    for e in entries:
        e.paths -= removed
        if e.ident == mine.ident:
            mine.paths = e.paths
            mine.time = e.time
        else:
            e.paths -= changed
            result.append(e)
    if changed:
        mine.paths |= changed
        mine.time = _now()
    if mine.paths:
        result.append(mine)
    return result


def _without_times(obj: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    out["metadata"].pop("resourceVersion", None)
    for e in out["metadata"].get("managedFields") or []:
        e.pop("time", None)
    return out


def _generation_input(rtype: ResourceType, obj: dict[str, Any]) -> Any:
    """What a change of bumps metadata.generation: spec for built-ins; for custom
    resources everything but metadata (and status, when it is a subresource)."""
    if rtype.custom:
        skip = ("metadata", "status") if rtype.status_subresource else ("metadata",)
        return {k: v for k, v in obj.items() if k not in skip}
    return obj.get("spec")


_META_ORDER = ("name", "generateName", "namespace", "uid", "resourceVersion", "generation", "creationTimestamp",
               "deletionTimestamp", "labels", "annotations", "ownerReferences", "finalizers", "managedFields")


def _order_metadata(obj: dict[str, Any]) -> dict[str, Any]:
    """Field order as the apiserver serialises it (cosmetic, but kubectl output reads better)."""
    meta = obj.get("metadata", {})
    ordered_meta = {k: meta[k] for k in _META_ORDER if k in meta}
    ordered_meta.update({k: v for k, v in meta.items() if k not in ordered_meta})
    out = {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"), "metadata": ordered_meta}
    out.update({k: v for k, v in obj.items() if k not in out})
    return out


# --------------------------------------------------------------------------- #
# Defaulting and controllers
# --------------------------------------------------------------------------- #

def _default_pod_spec(spec: Any) -> None:
    if not isinstance(spec, dict):
        return
    for k, v in (("restartPolicy", "Always"), ("terminationGracePeriodSeconds", 30), ("dnsPolicy", "ClusterFirst"),
                 ("securityContext", {}), ("schedulerName", "default-scheduler")):
        spec.setdefault(k, copy.deepcopy(v))
    for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        if not isinstance(c, dict):
            continue
        image = str(c.get("image", ""))
        tag = image.rsplit("/", 1)[-1].partition("@")[0].partition(":")[2]
        c.setdefault("imagePullPolicy", "Always" if tag in ("", "latest") and "@" not in image else "IfNotPresent")
        c.setdefault("terminationMessagePath", "/dev/termination-log")
        c.setdefault("terminationMessagePolicy", "File")
        c.setdefault("resources", {})
        for p in c.get("ports") or []:
            if isinstance(p, dict):
                p.setdefault("protocol", "TCP")


def _apply_defaults(rtype: ResourceType, obj: dict[str, Any], cluster: Cluster) -> None:
    """The defaults the real API server stores that clients most often notice.
    Defaulted fields belong to nobody, so a manager's apply never conflicts on them."""
    if rtype.custom:
        return
    kind, spec = rtype.kind, obj.get("spec")
    if kind == "Secret" and isinstance(obj.get("stringData"), dict):
        # As the Secret strategy does: stringData is write-only, merged into data (base64) and
        # never stored, so a Secret read back holds its values under data only.
        data = obj.get("data") if isinstance(obj.get("data"), dict) else {}
        for key, value in obj.pop("stringData").items():
            data[key] = base64.b64encode(str(value).encode()).decode()
        obj["data"] = data
        return
    if kind == "Namespace":
        obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = obj["metadata"]["name"]
        _setdefault(obj, ("spec", "finalizers"), ["kubernetes"])
        _setdefault(obj, ("status", "phase"), "Active")
        return
    if not isinstance(spec, dict):
        return
    if kind == "Deployment":
        spec.setdefault("replicas", 1)
        spec.setdefault("strategy", {"type": "RollingUpdate",
                                     "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("progressDeadlineSeconds", 600)
    elif kind == "StatefulSet":
        spec.setdefault("replicas", 1)
        spec.setdefault("podManagementPolicy", "OrderedReady")
        spec.setdefault("updateStrategy", {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("persistentVolumeClaimRetentionPolicy", {"whenDeleted": "Retain", "whenScaled": "Retain"})
    elif kind == "DaemonSet":
        spec.setdefault("updateStrategy", {"type": "RollingUpdate",
                                           "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}})
        spec.setdefault("revisionHistoryLimit", 10)
    elif kind == "ReplicaSet":
        spec.setdefault("replicas", 1)
    elif kind == "Job":
        for k, v in (("parallelism", 1), ("completions", 1), ("backoffLimit", 6), ("completionMode", "NonIndexed"),
                     ("suspend", False), ("podReplacementPolicy", "TerminatingOrFailed"), ("manualSelector", False)):
            spec.setdefault(k, v)
    elif kind == "Service":
        spec.setdefault("type", "ClusterIP")
        spec.setdefault("sessionAffinity", "None")
        if spec["type"] != "ExternalName":
            if not spec.get("clusterIP"):
                spec["clusterIP"] = cluster.allocate_cluster_ip()
            spec.setdefault("clusterIPs", [spec["clusterIP"]])
            spec.setdefault("ipFamilies", ["IPv4"])
            spec.setdefault("ipFamilyPolicy", "SingleStack")
            spec.setdefault("internalTrafficPolicy", "Cluster")
        for p in spec.get("ports") or []:
            if isinstance(p, dict):
                p.setdefault("protocol", "TCP")
                if "port" in p:
                    p.setdefault("targetPort", p["port"])
        _setdefault(obj, ("status", "loadBalancer"), {})
    if kind == "Pod":
        _default_pod_spec(spec)
    template = spec.get("template") if isinstance(spec.get("template"), dict) else None
    if kind == "Job" and template is not None:
        _default_pod_spec(template.get("spec"))
    elif template is not None and kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"):
        _default_pod_spec(template.get("spec"))


def _condition(old_status: Any, ctype: str, status: str, reason: str | None = None, message: str | None = None,
               times: tuple[str, ...] = ("lastTransitionTime",)) -> dict[str, Any]:
    """A condition that keeps its timestamps while it does not change, as controllers do."""
    old = next((c for c in (old_status or {}).get("conditions") or [] if c.get("type") == ctype), None)
    unchanged = old is not None and old.get("status") == status and old.get("reason") == reason
    new: dict[str, Any] = {"type": ctype, "status": status}
    now = _now()
    for t in times:
        new[t] = old[t] if unchanged and t in old else now  # type: ignore[index]
    if reason is not None:
        new["reason"] = reason
    if message is not None:
        new["message"] = message
    return new


def _drop_zero(status: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in status.items() if not (k in keys and v == 0)}


def _deployment_status(obj: dict[str, Any], cluster: Cluster) -> dict[str, Any]:
    spec, old = obj.get("spec") or {}, obj.get("status")
    replicas = int(spec.get("replicas", 1))
    rs_name = f"{obj['metadata']['name']}-{_short_hash(spec.get('template'))}"
    phase = cluster.rollout_phase(obj) if replicas else "complete"
    times = ("lastUpdateTime", "lastTransitionTime")
    if phase == "complete":
        ready = replicas
        conditions = [
            _condition(old, "Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability.",
                       times),
            _condition(old, "Progressing", "True", "NewReplicaSetAvailable",
                       f'ReplicaSet "{rs_name}" has successfully progressed.', times),
        ]
    else:  # the new pods were created and never became ready
        ready = 0
        progressing = (
            _condition(old, "Progressing", "False", "ProgressDeadlineExceeded",
                       f'ReplicaSet "{rs_name}" has timed out progressing.', times) if phase == "failed" else
            _condition(old, "Progressing", "True", "ReplicaSetUpdated", f'ReplicaSet "{rs_name}" is progressing.',
                       times))
        conditions = [_condition(old, "Available", "False", "MinimumReplicasUnavailable",
                                 "Deployment does not have minimum availability.", times), progressing]
    status = {
        "observedGeneration": obj["metadata"].get("generation", 1),
        "replicas": replicas, "updatedReplicas": replicas, "readyReplicas": ready, "availableReplicas": ready,
        "unavailableReplicas": replicas - ready, "conditions": conditions,
    }
    return _drop_zero(status, "replicas", "updatedReplicas", "readyReplicas", "availableReplicas",
                      "unavailableReplicas")


def _statefulset_status(obj: dict[str, Any], cluster: Cluster) -> dict[str, Any]:
    spec = obj.get("spec") or {}
    replicas = int(spec.get("replicas", 1))
    revision = f"{obj['metadata']['name']}-{_short_hash(spec.get('template'))}"
    ready = replicas if not replicas or cluster.rollout_phase(obj) == "complete" else 0
    status = {
        "observedGeneration": obj["metadata"].get("generation", 1), "replicas": replicas,
        "readyReplicas": ready, "currentReplicas": replicas, "updatedReplicas": replicas,
        "availableReplicas": ready, "currentRevision": revision, "updateRevision": revision, "collisionCount": 0,
    }
    return _drop_zero(status, "readyReplicas", "currentReplicas", "updatedReplicas")


def _daemonset_status(obj: dict[str, Any], cluster: Cluster) -> dict[str, Any]:
    # One schedulable node, so one pod, up to date, and ready once rolled out.
    ready = 1 if cluster.rollout_phase(obj) == "complete" else 0
    status = {"currentNumberScheduled": 1, "numberMisscheduled": 0, "desiredNumberScheduled": 1, "numberReady": ready,
              "observedGeneration": obj["metadata"].get("generation", 1), "updatedNumberScheduled": 1,
              "numberAvailable": ready}
    if not ready:
        del status["numberAvailable"]
        status["numberUnavailable"] = 1
    return status


def _job_status(obj: dict[str, Any], cluster: Cluster) -> dict[str, Any] | None:
    spec, old = obj.get("spec") or {}, obj.get("status") or {}
    done = {c.get("type") for c in old.get("conditions") or [] if c.get("status") == "True"}
    if spec.get("suspend") or done & {"Complete", "Failed"}:
        return None
    now = _now()
    started = old.get("startTime") or obj["metadata"].get("creationTimestamp", now)
    phase = cluster.rollout_phase(obj)
    if phase == "progressing":
        return {"active": 1, "startTime": started, "ready": 0, "terminating": 0, "uncountedTerminatedPods": {}}
    if phase == "failed":
        limit = int(spec.get("backoffLimit", 6))
        conditions = [
            {"type": t, "status": "True", "lastProbeTime": now, "lastTransitionTime": now,
             "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}
            for t in ("FailureTarget", "Failed")]
        return {"conditions": conditions, "startTime": started, "failed": limit + 1, "terminating": 0,
                "uncountedTerminatedPods": {}, "ready": 0}
    conditions = [
        {"type": t, "status": "True", "lastProbeTime": now, "lastTransitionTime": now, "reason": r, "message": m}
        for t, r, m in (("SuccessCriteriaMet", "CompletionsReached", "Reached expected number of succeeded pods"),
                        ("Complete", "CompletionsReached", "Reached expected number of succeeded pods"))
    ]
    return {"conditions": conditions, "startTime": started,
            "completionTime": now, "succeeded": int(spec.get("completions") or 1), "terminating": 0,
            "uncountedTerminatedPods": {}, "ready": 0}


def _pod_status(obj: dict[str, Any], _: Cluster) -> dict[str, Any]:
    spec, old = obj.get("spec") or {}, obj.get("status") or {}
    started = old.get("startTime") or _now()
    conditions = [_condition(old, t, "True") for t in
                  ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled")]
    return {
        "phase": "Running", "conditions": conditions, "hostIP": "10.0.0.1", "podIP": "10.244.0.10",
        "startTime": started, "qosClass": "BestEffort",
        "containerStatuses": [
            {"name": c.get("name", ""), "state": {"running": {"startedAt": started}}, "ready": True,
             "restartCount": 0, "image": c.get("image", ""), "imageID": "", "started": True}
            for c in spec.get("containers") or [] if isinstance(c, dict)
        ],
    }


def _crd_status(obj: dict[str, Any], _: Cluster) -> dict[str, Any]:
    spec, old = obj.get("spec") or {}, obj.get("status")
    names = dict(spec.get("names") or {})
    names.setdefault("singular", str(names.get("kind", "")).lower())
    names.setdefault("listKind", f"{names.get('kind', '')}List")
    stored = [v.get("name") for v in spec.get("versions") or [] if v.get("storage")]
    return {
        "conditions": [
            _condition(old, "NamesAccepted", "True", "NoConflicts", "no conflicts found"),
            _condition(old, "Established", "True", "InitialNamesAccepted", "the initial names have been accepted"),
        ],
        "acceptedNames": names,
        "storedVersions": sorted(set(((old or {}).get("storedVersions") or []) + stored)),
    }


_CONTROLLERS: dict[str, tuple[str, Callable[[dict[str, Any], Cluster], dict[str, Any] | None]]] = {
    "Deployment": ("kube-controller-manager", _deployment_status),
    "StatefulSet": ("kube-controller-manager", _statefulset_status),
    "DaemonSet": ("kube-controller-manager", _daemonset_status),
    "Job": ("kube-controller-manager", _job_status),
    "Pod": ("kubelet", _pod_status),
    "CustomResourceDefinition": ("kube-apiserver", _crd_status),
}


# --------------------------------------------------------------------------- #
# Authentication, impersonation and RBAC
# --------------------------------------------------------------------------- #

SYSTEM_MASTERS = "system:masters"
ALL_AUTHENTICATED = "system:authenticated"
ALL_UNAUTHENTICATED = "system:unauthenticated"
ANONYMOUS = "system:anonymous"
SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"
RBAC_GROUP = "rbac.authorization.k8s.io"


@dataclass(frozen=True)
class UserInfo:
    """Who a request is from once authenticated and impersonated (``user.Info``)."""

    name: str
    groups: tuple[str, ...] = ()
    uid: str = ""
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()


# Every request without a token registered with ``KubeAPIServer.add_user`` -- the kubeconfig
# the tests write included -- is this user.  Being in system:masters, it passes kube-apiserver's
# privileged-group authorizer before RBAC is asked, so it may do and impersonate anything.
ADMIN = UserInfo("kubernetes-admin", (SYSTEM_MASTERS, ALL_AUTHENTICATED))


def split_service_account(username: str) -> tuple[str, str] | None:
    """``system:serviceaccount:<namespace>:<name>`` → (namespace, name); None for any other user
    name (``serviceaccount.SplitUsername``: a DNS label and a DNS subdomain)."""
    if not username.startswith(SERVICE_ACCOUNT_PREFIX):
        return None
    parts = username[len(SERVICE_ACCOUNT_PREFIX):].split(":")
    if len(parts) != 2 or _name_problems(parts[0], "label") or _name_problems(parts[1], "subdomain"):
        return None
    return parts[0], parts[1]


def service_account_groups(namespace: str) -> tuple[str, ...]:
    """The groups a ServiceAccount is in, besides system:authenticated."""
    return ("system:serviceaccounts", f"system:serviceaccounts:{namespace}")


@dataclass(frozen=True)
class Attributes:
    """What authorization decides on (``authorizer.Attributes``)."""

    verb: str
    resource_request: bool
    path: str = ""
    api_group: str = ""
    api_version: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""


_VERB_OF_METHOD = {"POST": "create", "GET": "get", "HEAD": "get", "PUT": "update", "PATCH": "patch",
                   "DELETE": "delete"}


def request_attributes(method: str, path: str, query: dict[str, str]) -> Attributes:
    """The attributes kube-apiserver's request-info filter reads off a request.

    ``/api/v1/...`` and ``/apis/<group>/<version>/...`` with a resource are resource requests:
    GET of an item is get, of a collection list (watch with ``?watch``), POST create, PUT update,
    PATCH patch (server-side apply included), DELETE of an item delete and of a collection
    deletecollection.  ``/api/v1/namespaces/<ns>`` is the resource "namespaces" named <ns>
    *in the namespace <ns>*, so a RoleBinding there can grant reading it.  A list or watch
    selecting ``metadata.name=<x>`` is about the object <x> (resourceNames apply).  Everything
    else (``/api``, ``/apis/<group>/<version>``, ``/version``, ``/openapi/v3``) is a non-resource
    request whose verb is the lower-cased method."""
    non_resource = Attributes(method.lower(), False, path)
    trimmed = path.strip("/")
    parts = trimmed.split("/") if trimmed else []
    if len(parts) < 3 or parts[0] not in ("api", "apis"):
        return non_resource
    prefix, parts = parts[0], parts[1:]
    group = ""
    if prefix == "apis":
        if len(parts) < 3:
            return non_resource
        group, parts = parts[0], parts[1:]
    version, parts = parts[0], parts[1:]
    verb = _VERB_OF_METHOD.get(method, "")
    if parts[0] in ("watch", "proxy") and len(parts) >= 2:  # the deprecated verb-in-path forms
        verb, parts = parts[0], parts[1:]
    namespace = ""
    if parts[0] == "namespaces" and len(parts) > 1:
        namespace = parts[1]
        if len(parts) > 2 and parts[2] not in ("status", "finalize"):
            parts = parts[2:]
    resource = parts[0]
    name = parts[1] if len(parts) >= 2 else ""
    subresource = parts[2] if len(parts) >= 3 and verb != "proxy" else ""
    if not name and verb == "get":
        watch = query.get("watch")
        verb = "watch" if watch is not None and watch.lower() not in ("0", "false") else "list"
        try:
            selected = [v for f, equal, v in parse_field_selector(query.get("fieldSelector", ""))
                        if f == "metadata.name" and equal]
        except ApiError:  # the list itself answers for a bad selector
            selected = []
        if selected and not _name_problems(selected[0], "path"):
            name = selected[0]
    if not name and verb == "delete":
        verb = "deletecollection"
    return Attributes(verb, True, path, group, version, resource, subresource, namespace, name)


def _strings(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def rule_allows(rule: Any, attrs: Attributes) -> bool:
    """Whether one PolicyRule covers a request (RBAC's ``RuleAllows``)."""
    if not isinstance(rule, dict):
        return False
    verbs = _strings(rule.get("verbs"))
    if "*" not in verbs and attrs.verb not in verbs:
        return False
    if not attrs.resource_request:
        return any(url == "*" or url == attrs.path or (url.endswith("*") and attrs.path.startswith(url.rstrip("*")))
                   for url in _strings(rule.get("nonResourceURLs")))
    groups = _strings(rule.get("apiGroups"))
    if "*" not in groups and attrs.api_group not in groups:
        return False
    combined = f"{attrs.resource}/{attrs.subresource}" if attrs.subresource else attrs.resource
    if not any(r in ("*", combined) or (attrs.subresource and r == f"*/{attrs.subresource}")
               for r in _strings(rule.get("resources"))):
        return False
    names = _strings(rule.get("resourceNames"))
    return not names or attrs.name in names


def _rule(groups: Iterable[str], resources: Iterable[str], verbs: Iterable[str]) -> dict[str, Any]:
    return {"apiGroups": list(groups), "resources": list(resources), "verbs": list(verbs)}


_READ = ("get", "list", "watch")
_WRITE = ("create", "delete", "deletecollection", "patch", "update")
_DISCOVERY_URLS = ["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi", "/openapi/*", "/readyz",
                   "/version", "/version/"]

# The bootstrap policy that lets every authenticated user discover the API and ask about
# itself.  kube-apiserver stores these ClusterRoles and ClusterRoleBindings; here they are
# built in (a stored object of the same name takes their place), so listings stay empty.
_BOOTSTRAP_CLUSTER_ROLES: dict[str, list[dict[str, Any]]] = {
    "system:discovery": [{"nonResourceURLs": _DISCOVERY_URLS, "verbs": ["get"]}],
    "system:basic-user": [
        _rule(["authorization.k8s.io"], ["selfsubjectaccessreviews", "selfsubjectrulesreviews"], ["create"]),
        _rule(["authentication.k8s.io"], ["selfsubjectreviews"], ["create"]),
    ],
    "system:public-info-viewer": [{"nonResourceURLs": ["/healthz", "/livez", "/readyz", "/version", "/version/"],
                                   "verbs": ["get"]}],
}
_BOOTSTRAP_BINDINGS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("system:basic-user", (ALL_AUTHENTICATED,)),
    ("system:discovery", (ALL_AUTHENTICATED,)),
    ("system:public-info-viewer", (ALL_AUTHENTICATED, ALL_UNAUTHENTICATED)),
)

# The user-facing default ClusterRoles of Kubernetes 1.32, with the rules the aggregation
# controller gives them (view ⊂ edit ⊂ admin).  Stored on request only, by
# ``KubeAPIServer.add_default_cluster_roles``.
_VIEW_RULES = [
    _rule([""], ["configmaps", "endpoints", "persistentvolumeclaims", "persistentvolumeclaims/status", "pods",
                 "replicationcontrollers", "replicationcontrollers/scale", "serviceaccounts", "services",
                 "services/status"], _READ),
    _rule([""], ["bindings", "events", "limitranges", "namespaces/status", "pods/log", "pods/status",
                 "replicationcontrollers/status", "resourcequotas", "resourcequotas/status"], _READ),
    _rule([""], ["namespaces"], _READ),
    _rule(["discovery.k8s.io"], ["endpointslices"], _READ),
    _rule(["apps"], ["controllerrevisions", "daemonsets", "daemonsets/status", "deployments", "deployments/scale",
                     "deployments/status", "replicasets", "replicasets/scale", "replicasets/status", "statefulsets",
                     "statefulsets/scale", "statefulsets/status"], _READ),
    _rule(["autoscaling"], ["horizontalpodautoscalers", "horizontalpodautoscalers/status"], _READ),
    _rule(["batch"], ["cronjobs", "cronjobs/status", "jobs", "jobs/status"], _READ),
    _rule(["extensions"], ["daemonsets", "daemonsets/status", "deployments", "deployments/scale", "deployments/status",
                           "ingresses", "ingresses/status", "networkpolicies", "replicasets", "replicasets/scale",
                           "replicasets/status", "replicationcontrollers/scale"], _READ),
    _rule(["policy"], ["poddisruptionbudgets", "poddisruptionbudgets/status"], _READ),
    _rule(["networking.k8s.io"], ["ingresses", "ingresses/status", "networkpolicies"], _READ),
]
_EDIT_RULES = [
    _rule([""], ["pods/attach", "pods/exec", "pods/portforward", "pods/proxy", "secrets", "services/proxy"], _READ),
    _rule([""], ["serviceaccounts"], ["impersonate"]),
    _rule([""], ["pods", "pods/attach", "pods/exec", "pods/portforward", "pods/proxy"], _WRITE),
    _rule([""], ["pods/eviction"], ["create"]),
    _rule([""], ["configmaps", "events", "persistentvolumeclaims", "replicationcontrollers",
                 "replicationcontrollers/scale", "secrets", "serviceaccounts", "services", "services/proxy"], _WRITE),
    _rule([""], ["serviceaccounts/token"], ["create"]),
    _rule(["apps"], ["daemonsets", "deployments", "deployments/rollback", "deployments/scale", "replicasets",
                     "replicasets/scale", "statefulsets", "statefulsets/scale"], _WRITE),
    _rule(["autoscaling"], ["horizontalpodautoscalers"], _WRITE),
    _rule(["batch"], ["cronjobs", "jobs"], _WRITE),
    _rule(["extensions"], ["daemonsets", "deployments", "deployments/rollback", "deployments/scale", "ingresses",
                           "networkpolicies", "replicasets", "replicasets/scale", "replicationcontrollers/scale"],
          _WRITE),
    _rule(["policy"], ["poddisruptionbudgets"], _WRITE),
    _rule(["networking.k8s.io"], ["ingresses", "networkpolicies"], _WRITE),
    _rule(["coordination.k8s.io"], ["leases"], (*_READ, *_WRITE)),
]
_ADMIN_RULES = [
    _rule(["authorization.k8s.io"], ["localsubjectaccessreviews"], ["create"]),
    _rule([RBAC_GROUP], ["rolebindings", "roles"], (*_READ, *_WRITE)),
]
DEFAULT_CLUSTER_ROLES: dict[str, list[dict[str, Any]]] = {
    "cluster-admin": [_rule(["*"], ["*"], ["*"]), {"nonResourceURLs": ["*"], "verbs": ["*"]}],
    "admin": _ADMIN_RULES + _EDIT_RULES + _VIEW_RULES,
    "edit": _EDIT_RULES + _VIEW_RULES,
    "view": _VIEW_RULES,
}


def _go_quote(text: str) -> str:
    """Go's ``%q`` for the strings that occur here."""
    return json.dumps(text, ensure_ascii=False)


def _aggregate(errors: list[str]) -> str:
    """``utilerrors.NewAggregate(errs).Error()``: one message, or the distinct ones in brackets."""
    distinct = list(dict.fromkeys(errors))
    return distinct[0] if len(distinct) == 1 else "[" + ", ".join(distinct) + "]"


def forbidden(user: UserInfo, attrs: Attributes, reason: str = "") -> ApiError:
    """The 403 kube-apiserver answers a request its authorizers did not allow
    (``responsewriters.ForbiddenStatusError``)."""
    if attrs.resource_request:
        resource = f"{attrs.resource}/{attrs.subresource}" if attrs.subresource else attrs.resource
        scope = f"in the namespace {_go_quote(attrs.namespace)}" if attrs.namespace else "at the cluster scope"
        what = (f"User {_go_quote(user.name)} cannot {attrs.verb} resource {_go_quote(resource)} in API group "
                f"{_go_quote(attrs.api_group)} {scope}")
    else:
        what = f"User {_go_quote(user.name)} cannot {attrs.verb} path {_go_quote(attrs.path)}"
    # Sanitized so that the message cannot pass for HTML; the reason is not.
    what = what.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    cause = f"{what}: {reason}" if reason else what
    qualified = f"{attrs.resource}.{attrs.api_group}" if attrs.api_group else attrs.resource
    if not qualified:
        message = f"forbidden: {cause}"
    elif not attrs.name:
        message = f"{qualified} is forbidden: {cause}"
    else:
        message = f"{qualified} {_go_quote(attrs.name)} is forbidden: {cause}"
    return ApiError(403, message, "Forbidden", _details(None, attrs.name, kind=attrs.resource, group=attrs.api_group))


def _describe_subject(subject: dict[str, Any], binding_namespace: str) -> str:
    kind, name = str(subject.get("kind", "")), str(subject.get("name", ""))
    if kind == "ServiceAccount":
        return f"{kind} {_go_quote(name + '/' + (subject.get('namespace') or binding_namespace))}"
    return f"{kind} {_go_quote(name)}"


def _subject_applies(subject: Any, user: UserInfo, binding_namespace: str) -> bool:
    if not isinstance(subject, dict):
        return False
    kind, name = subject.get("kind"), subject.get("name", "")
    if kind == "User":
        return user.name == name
    if kind == "Group":
        return name in user.groups
    if kind == "ServiceAccount":
        namespace = subject.get("namespace") or binding_namespace
        return bool(namespace) and user.name == f"{SERVICE_ACCOUNT_PREFIX}{namespace}:{name}"
    return False


# --------------------------------------------------------------------------- #
# HTTP
# --------------------------------------------------------------------------- #

class RecordedRequest(NamedTuple):
    method: str
    path: str
    query: dict[str, str]
    content_type: str
    user: str = ""  # who the request was authorized as: the impersonated user, if any


class _PlainTextError(Exception):
    """An error kube-apiserver answers in plain text (``http.Error``), not as a Status."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


@dataclass
class Target:
    """What a resource URL addresses."""

    rtype: ResourceType
    namespace: str | None
    name: str | None
    subresource: str = ""


_PATCH_TYPES = {
    "application/apply-patch+yaml": "apply",
    "application/apply-patch+cbor": None,
    "application/merge-patch+json": "merge",
    "application/strategic-merge-patch+json": "strategic",
    "application/json-patch+json": "json",
}

# An empty openapi_v2.Document (protobuf) with swagger: "2.0": "no schemas published".
_EMPTY_OPENAPI_V2_PB = b"\x0a\x032.0"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; every response carries Content-Length or is chunked
    disable_nagle_algorithm = True  # without it each small response waits ~40 ms for delayed ACKs
    server: _HTTPServer
    user: UserInfo = ADMIN  # who the request being served is from (after impersonation)
    attrs: Attributes  # what it was authorized as

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature from the base class
        pass

    def setup(self) -> None:
        super().setup()
        kube = self.server.kube
        with kube._connections_lock:
            kube._connections.add(self.connection)

    def finish(self) -> None:
        kube = self.server.kube
        with kube._connections_lock:
            kube._connections.discard(self.connection)
        super().finish()

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # -- plumbing -------------------------------------------------------------- #

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, code: int, payload: Any, content_type: str = "application/json") -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-cache, private")
        self.send_header("Audit-Id", str(uuid.uuid4()))
        self.end_headers()
        self.wfile.write(data)

    def _dispatch(self, method: str) -> None:
        kube = self.server.kube
        url = urlsplit(self.path)
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        content_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        body = self._read_body()
        self.user = self._authenticate()
        try:
            try:
                self.user = self._impersonate(self.user)
            finally:
                kube._record(RecordedRequest(method, url.path, query, content_type, self.user.name),
                             self.headers.get("Authorization"))
            # Authorization comes before routing: a path nobody may read is 403, not 404.
            self.attrs = request_attributes(method, url.path, query)
            self._authorize(self.attrs)
            result = self._route(method, url.path.rstrip("/") or "/", query, content_type, body)
            if result is not None:
                self._send(*result)
        except ApiError as exc:
            self._send(exc.code, exc.status)
        except _PlainTextError as exc:
            self._send(exc.code, exc.text.encode(), "text/plain; charset=utf-8")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:  # a bug here must fail tests loudly, not hang them
            kube.internal_errors.append(traceback.format_exc())
            self._send(500, ApiError(500, f"Internal error occurred: {exc!r}", "InternalError").status)

    # -- authentication, impersonation, authorization ---------------------------- #

    def _authenticate(self) -> UserInfo:
        """The user of a token registered with ``add_user``; anyone else is the admin."""
        scheme, _, token = self.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            with self.server.kube.cluster.lock:
                known = self.server.kube.tokens.get(token.strip())
            if known is not None:
                return known
        return ADMIN

    def _impersonate(self, requestor: UserInfo) -> UserInfo:
        """kube-apiserver's impersonation filter: who the Impersonate-* headers ask to act as,
        each part of it authorized ("impersonate") for the requestor first."""
        user_name = self.headers.get("Impersonate-User", "")
        groups_asked = self.headers.get_all("Impersonate-Group") or []
        extras_asked = [(unquote(header[len("impersonate-extra-"):].lower()), value)
                        for header, value in self.headers.items() if header.lower().startswith("impersonate-extra-")]
        uid = self.headers.get("Impersonate-Uid", "")
        if not (user_name or groups_asked or extras_asked or uid):
            return requestor
        checks: list[Attributes] = []
        refs: list[str] = []  # Go's %v of the ObjectReferences, for the one error that prints them
        groups: list[str] = []
        service_account = split_service_account(user_name) if user_name else None
        if service_account is not None:
            namespace, name = service_account
            checks.append(Attributes("impersonate", True, resource="serviceaccounts", namespace=namespace, name=name))
            refs.append(f"{{ServiceAccount {namespace} {name}    }}")
            if not groups_asked:
                groups.extend(service_account_groups(namespace))
        elif user_name:
            checks.append(Attributes("impersonate", True, resource="users", name=user_name))
            refs.append(f"{{User  {user_name}    }}")
        for group in groups_asked:
            checks.append(Attributes("impersonate", True, resource="groups", name=group))
            refs.append(f"{{Group  {group}    }}")
            groups.append(group)
        extra: dict[str, list[str]] = {}
        for key, value in extras_asked:
            checks.append(Attributes("impersonate", True, api_group="authentication.k8s.io", api_version="v1",
                                     resource="userextras", subresource=key, name=value))
            refs.append(f"{{UserExtra  {value}  authentication.k8s.io/v1  {key}}}")
            extra.setdefault(key, []).append(value)
        if uid:
            checks.append(Attributes("impersonate", True, api_group="authentication.k8s.io", api_version="v1",
                                     resource="uids", name=uid))
            refs.append(f"{{UID  {uid}  authentication.k8s.io/v1  }}")
        if not user_name:
            raise _PlainTextError(500, f"Internal Server Error: {_go_quote(self.path)}: requested [{' '.join(refs)}] "
                                       "without impersonating a user\n")
        cluster = self.server.kube.cluster
        for attrs in checks:
            allowed, reason = cluster.authorize(requestor, attrs)
            if not allowed:
                raise forbidden(requestor, attrs, reason)
        if user_name != ANONYMOUS:
            if not any(g in (ALL_AUTHENTICATED, ALL_UNAUTHENTICATED) for g in groups):
                groups.append(ALL_AUTHENTICATED)
        elif ALL_UNAUTHENTICATED not in groups:
            groups.append(ALL_UNAUTHENTICATED)
        return UserInfo(user_name, tuple(groups), uid, tuple((k, tuple(v)) for k, v in extra.items()))

    def _authorize(self, attrs: Attributes) -> None:
        allowed, reason = self.server.kube.cluster.authorize(self.user, attrs)
        if not allowed:
            raise forbidden(self.user, attrs, reason)

    def _review(self, rtype: ResourceType, body: Any) -> tuple[int, dict[str, Any]]:
        """A SelfSubjectAccessReview (may I ...?) or SelfSubjectReview (who am I?): answered, not stored."""
        if not isinstance(body, dict):
            raise bad_request("the object provided is unrecognized (must be a JSON or YAML object)")
        answer: dict[str, Any] = {"kind": rtype.kind, "apiVersion": rtype.api_version,
                                  "metadata": {"creationTimestamp": None}}
        user = self.user
        if rtype.kind == "SelfSubjectReview":
            info: dict[str, Any] = {"username": user.name}
            if user.uid:
                info["uid"] = user.uid
            if user.groups:
                info["groups"] = list(user.groups)
            if user.extra:
                info["extra"] = {k: list(v) for k, v in user.extra}
            answer["status"] = {"userInfo": info}
            return 201, answer
        spec = body.get("spec") if isinstance(body.get("spec"), dict) else {}
        resource, non_resource = spec.get("resourceAttributes"), spec.get("nonResourceAttributes")
        if resource is not None and non_resource is not None:
            raise invalid("SelfSubjectAccessReview.authorization.k8s.io", "authorization.k8s.io", "", [FieldError(
                "FieldValueInvalid", "spec.nonResourceAttributes",
                "cannot be specified in combination with resourceAttributes",
                GoLiteral("&authorization.NonResourceAttributes{...}"))])
        if not isinstance(resource, dict) and not isinstance(non_resource, dict):
            raise invalid("SelfSubjectAccessReview.authorization.k8s.io", "authorization.k8s.io", "", [FieldError(
                "FieldValueInvalid", "spec.resourceAttributes",
                "exactly one of nonResourceAttributes or resourceAttributes must be specified", GoLiteral('"null"'))])
        if isinstance(resource, dict):
            asked = {k: str(resource.get(k) or "") for k in ("verb", "group", "version", "resource", "subresource",
                                                             "namespace", "name")}
            attrs = Attributes(asked["verb"], True, "", asked["group"], asked["version"], asked["resource"],
                               asked["subresource"], asked["namespace"], asked["name"])
        else:
            attrs = Attributes(str(non_resource.get("verb") or ""), False, str(non_resource.get("path") or ""))
        allowed, reason = self.server.kube.cluster.authorize(user, attrs)
        answer["spec"] = spec
        answer["status"] = {"allowed": allowed, **({"reason": reason} if reason else {})}
        return 201, answer

    # -- routing --------------------------------------------------------------- #

    def _route(self, method: str, path: str, query: dict[str, str], content_type: str,
               body: bytes) -> tuple[Any, ...] | None:
        cluster = self.server.kube.cluster
        parts = [p for p in path.split("/") if p]
        if method == "GET" and not parts[1:] and path in ("/version", "/healthz", "/livez", "/readyz",
                                                           "/api", "/apis"):
            return self._discovery_root(path)
        if path == "/openapi/v3" and method == "GET":
            return 200, {"paths": {}}
        if path == "/openapi/v2" and method == "GET":
            if "protobuf" in self.headers.get("Accept", ""):
                return 200, _EMPTY_OPENAPI_V2_PB, "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
            return 200, {"swagger": "2.0", "info": {"title": "Kubernetes", "version": SERVER_VERSION["gitVersion"]},
                         "paths": {}, "definitions": {}}

        if parts[:2] == ["api", "v1"]:
            group, version, rest = "", "v1", parts[2:]
        elif parts[:1] == ["apis"] and len(parts) >= 2:
            group = parts[1]
            if len(parts) == 2:
                return self._api_group(group)
            version, rest = parts[2], parts[3:]
        else:
            raise ApiError(404, "the server could not find the requested resource", "NotFound", {})

        with cluster.lock:
            served = any((t.group, t.version) == (group, version) for t in cluster.types.values())
            if not served:
                raise ApiError(404, "the server could not find the requested resource", "NotFound", {})
            if not rest:
                return 200, self._resource_list(group, version)
            target = self._parse_target(group, version, rest)
        return self._serve(method, target, query, content_type, body)

    def _parse_target(self, group: str, version: str, rest: list[str]) -> Target:
        cluster = self.server.kube.cluster
        unknown = ApiError(404, "the server could not find the requested resource", "NotFound", {})
        namespace = None
        if rest[0] == "namespaces" and len(rest) >= 3:
            candidate = cluster.lookup(group, version, rest[2])
            if candidate is not None and candidate.namespaced:
                namespace, rest = rest[1], rest[2:]
        rtype = cluster.lookup(group, version, rest[0])
        if rtype is None or len(rest) > 3:
            raise unknown
        name = rest[1] if len(rest) >= 2 else None
        sub = rest[2] if len(rest) == 3 else ""
        if sub and not ((sub == "status" and rtype.status_subresource) or (sub == "scale" and rtype.scale_subresource)):
            raise unknown
        if namespace is None and rtype.namespaced and name is not None:
            raise unknown  # namespaced objects are only addressable inside their namespace
        return Target(rtype, namespace, name, sub)

    def _discovery_root(self, path: str) -> tuple[int, Any]:
        kube = self.server.kube
        if path == "/version":
            return 200, SERVER_VERSION
        if path in ("/healthz", "/livez", "/readyz"):
            return 200, b"ok", "text/plain; charset=utf-8"  # type: ignore[return-value]
        if path == "/api":
            return 200, {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": f"127.0.0.1:{kube.port}"}]}
        with kube.cluster.lock:
            groups = [self._group_doc(g, vs) for g, vs in sorted(kube.cluster.group_versions().items())]
        for g in groups:
            del g["kind"], g["apiVersion"]
        return 200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}

    @staticmethod
    def _group_doc(group: str, versions: list[str]) -> dict[str, Any]:
        gvs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        return {"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": gvs, "preferredVersion": gvs[0]}

    def _api_group(self, group: str) -> tuple[int, Any]:
        with self.server.kube.cluster.lock:
            versions = self.server.kube.cluster.group_versions().get(group)
        if not versions:
            raise ApiError(404, "the server could not find the requested resource", "NotFound", {})
        return 200, self._group_doc(group, versions)

    def _resource_list(self, group: str, version: str) -> dict[str, Any]:
        types = sorted((t for t in self.server.kube.cluster.types.values() if (t.group, t.version) == (group, version)),
                       key=lambda t: t.plural)
        return {"kind": "APIResourceList", "apiVersion": "v1",
                "groupVersion": f"{group}/{version}" if group else version,
                "resources": [e for t in types for e in t.discovery_entries()]}

    # -- resources --------------------------------------------------------------- #

    def _serve(self, method: str, t: Target, query: dict[str, str], content_type: str,
               body: bytes) -> tuple[Any, ...] | None:
        cluster = self.server.kube.cluster
        dry_run = "dryRun" in query
        if dry_run and query["dryRun"] != "All":
            options = {"POST": "CreateOptions", "PUT": "UpdateOptions", "PATCH": "PatchOptions"}.get(method,
                                                                                                   "DeleteOptions")
            raise invalid(f"{options}.meta.k8s.io", "meta.k8s.io", "", [
                FieldError("FieldValueNotSupported", "dryRun", 'supported values: "All"', query["dryRun"])])
        manager = query.get("fieldManager") or self._default_manager()
        if t.rtype.review:
            if method != "POST" or t.name is not None:
                raise ApiError(405, "the server does not allow this method on the requested resource",
                               "MethodNotAllowed", {})
            return self._review(t.rtype, decode_review_protobuf(body) if content_type == PROTOBUF
                                else _decode_body(body, content_type))
        if t.name is None:
            if method == "GET":
                if query.get("watch") in ("true", "1"):
                    self._watch(t, query)
                    return None
                return 200, cluster.list(t.rtype, t.namespace, query)
            if method == "POST":
                if t.rtype.namespaced and t.namespace is None:
                    raise ApiError(404, "the server could not find the requested resource", "NotFound", {})
                obj = _decode_body(body, content_type)
                name = (obj.get("metadata") or {}).get("name", "") if isinstance(obj, dict) else ""
                return cluster.write(t.rtype, t.namespace, name, "create", obj, manager=manager, dry_run=dry_run)
            if method == "DELETE":
                return 200, self._delete_collection(t, query, dry_run)
            raise ApiError(405, "the server does not allow this method on the requested resource", "MethodNotAllowed",
                           {})
        if t.subresource == "scale":
            return self._scale(method, t, query, content_type, body, manager, dry_run)
        if method == "GET":
            return 200, cluster.get(t.rtype, t.namespace, t.name)
        if method == "PUT":
            obj = _decode_body(body, content_type)
            wanted_rv = (obj.get("metadata") or {}).get("resourceVersion") if isinstance(obj, dict) else None
            with cluster.lock:
                current = cluster.objects.get(cluster.key(t.rtype, t.namespace, t.name))
                if current is not None and wanted_rv and wanted_rv != current["metadata"]["resourceVersion"]:
                    raise modified_conflict(t.rtype, t.name)
                return cluster.write(t.rtype, t.namespace, t.name, "update", obj, manager=manager,
                                     subresource=t.subresource, dry_run=dry_run)
        if method == "PATCH":
            return self._patch(t, query, content_type, body, dry_run)
        if method == "DELETE":
            options = _decode_body(body, "application/json") if body.strip() else {}
            if not isinstance(options, dict):
                raise bad_request("DeleteOptions must be a JSON object")
            return 200, cluster.delete(t.rtype, t.namespace, t.name, dry_run=dry_run,
                                       preconditions=(options or {}).get("preconditions"))
        raise ApiError(405, "the server does not allow this method on the requested resource", "MethodNotAllowed", {})

    def _patch(self, t: Target, query: dict[str, str], content_type: str, body: bytes,
               dry_run: bool) -> tuple[int, dict[str, Any]]:
        patch_type = _PATCH_TYPES.get(content_type)
        if patch_type is None:
            raise ApiError(415, "the body of the request was in an unknown format - accepted media types include: "
                                "application/json-patch+json, application/merge-patch+json, "
                                "application/apply-patch+yaml", "UnsupportedMediaType", {})
        if patch_type == "apply" and not query.get("fieldManager"):
            raise invalid("PatchOptions.meta.k8s.io", "meta.k8s.io", "", [
                FieldError("FieldValueRequired", "fieldManager", "is required for apply patch")])
        if patch_type != "apply" and "force" in query:
            raise invalid("PatchOptions.meta.k8s.io", "meta.k8s.io", "", [
                FieldError("FieldValueForbidden", "force", "may not be specified for non-apply patch")])
        patch = _decode_body(body, content_type)
        manager = query.get("fieldManager") or self._default_manager()
        code, obj = self.server.kube.cluster.write(
            t.rtype, t.namespace, t.name or "", "patch", patch, manager=manager, subresource=t.subresource,
            force=query.get("force") in ("true", "1"), dry_run=dry_run, patch_type=patch_type,
            authorize_create=(lambda: self._authorize(replace(self.attrs, verb="create"))) if patch_type == "apply"
            else None)
        return code, obj

    def _scale(self, method: str, t: Target, query: dict[str, str], content_type: str, body: bytes, manager: str,
               dry_run: bool) -> tuple[int, dict[str, Any]]:
        cluster = self.server.kube.cluster
        if method == "GET":
            return 200, cluster.get_scale(t.rtype, t.namespace, t.name or "")
        if method not in ("PUT", "PATCH"):
            raise ApiError(405, "the server does not allow this method on the requested resource",
                           "MethodNotAllowed", {})
        patch_type = ""
        if method == "PATCH":
            patch_type = _PATCH_TYPES.get(content_type) or ""
            if not patch_type:
                raise ApiError(415, "the body of the request was in an unknown format - accepted media types "
                                    "include: application/json-patch+json, application/merge-patch+json, "
                                    "application/apply-patch+yaml", "UnsupportedMediaType", {})
        obj = _decode_body(body, content_type)
        return 200, cluster.write_scale(t.rtype, t.namespace, t.name or "", "update" if method == "PUT" else "patch",
                                        obj, manager=manager, dry_run=dry_run, patch_type=patch_type)

    def _delete_collection(self, t: Target, query: dict[str, str], dry_run: bool) -> dict[str, Any]:
        cluster = self.server.kube.cluster
        with cluster.lock:
            listed = cluster.list(t.rtype, t.namespace, {k: v for k, v in query.items()
                                                         if k in ("labelSelector", "fieldSelector")})
            for item in listed["items"]:
                cluster.delete(t.rtype, item["metadata"].get("namespace"), item["metadata"]["name"], dry_run=dry_run)
        return listed

    def _default_manager(self) -> str:
        """The apiserver names an unnamed manager after the User-Agent's product."""
        agent = self.headers.get("User-Agent", "unknown")
        return agent.split("/", 1)[0][:128] or "unknown"

    # -- watch -------------------------------------------------------------------- #

    def _watch(self, t: Target, query: dict[str, str]) -> None:
        """A chunked stream of watch events, as ``?watch=true`` gives."""
        cluster = self.server.kube.cluster
        labels = parse_label_selector(query.get("labelSelector", ""))
        fields = parse_field_selector(query.get("fieldSelector", ""))
        timeout = float(query.get("timeoutSeconds") or 1800)
        rv_text = query.get("resourceVersion", "")
        deadline = threading.Event()
        timer = threading.Timer(timeout, deadline.set)
        timer.daemon = True

        def wanted(group: str, plural: str, obj: dict[str, Any]) -> bool:
            return ((group, plural) == (t.rtype.group, t.rtype.plural)
                    and (t.namespace is None or obj["metadata"].get("namespace") == t.namespace)
                    and _matches(obj, labels, fields))

        with cluster.lock:
            if rv_text in ("", "0"):
                cursor = cluster.rv
                initial = [{"type": "ADDED", "object": cluster._render(t.rtype, o)}
                           for k, o in sorted(cluster.objects.items()) if wanted(k[0], k[1], o)]
            else:
                try:
                    cursor = int(rv_text)
                except ValueError:
                    raise bad_request(f"invalid resource version: {rv_text}") from None
                initial = []
                if cursor < cluster.oldest_event_rv:
                    gone = ApiError(410, f"too old resource version: {cursor} ({cluster.rv})", "Expired").status
                    initial = [{"type": "ERROR", "object": gone}]
                    cursor = -1
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        timer.start()
        try:
            for event in initial:
                self._chunk(event)
            while cursor >= 0 and not deadline.is_set():
                with cluster.lock:
                    pending = [e for e in cluster.events if e.rv > cursor]
                    if not pending:
                        if cluster.stopping:
                            break
                        cluster.changed.wait(timeout=0.5)
                        continue
                    cursor = pending[-1].rv
                    batch = [{"type": e.type, "object": copy.deepcopy(e.obj)} for e in pending
                             if wanted(e.group, e.plural, e.obj)]
                for event in batch:
                    self._chunk(event)
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError, OSError):
            self.close_connection = True
        finally:
            timer.cancel()

    def _chunk(self, event: dict[str, Any]) -> None:
        data = json.dumps(event).encode() + b"\n"
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # kubectl opens ~10 discovery connections at once; the default backlog of 5
    # overflows and the kernel then retries the SYN a whole second later.
    request_queue_size = 128
    kube: KubeAPIServer


class KubeAPIServer:
    """A real HTTP Kubernetes API server on 127.0.0.1, in a background thread.

    >>> with KubeAPIServer() as srv:
    ...     kubeconfig = srv.write_kubeconfig(tmp_path / "kubeconfig")
    """

    token = "herald-test-token"

    def __init__(self) -> None:
        self.cluster = Cluster()
        self.tokens: dict[str, UserInfo] = {}  # bearer tokens of users other than the admin
        self.requests: list[RecordedRequest] = []
        self.authorization_headers: list[str | None] = []
        self.internal_errors: list[str] = []
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------ #

    def start(self) -> KubeAPIServer:
        if self._httpd is not None:
            return self
        self.cluster.stopping = False
        self._httpd = _HTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.kube = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="kubeapi", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        with self.cluster.lock:
            self.cluster.stopping = True
            self.cluster.cancel_timers()
            self.cluster.changed.notify_all()
        self._httpd.shutdown()
        self._httpd.server_close()
        with self._connections_lock:
            connections = list(self._connections)
        for conn in connections:  # idle keep-alive connections and watches
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> KubeAPIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("KubeAPIServer is not started")
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def write_kubeconfig(self, path: str | Path, namespace: str = "default") -> Path:
        """A kubeconfig with one cluster (plain http), one token user, one current context."""
        path = Path(path)
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "kubeapi", "cluster": {"server": self.url}}],
            "users": [{"name": "herald", "user": {"token": self.token}}],
            "contexts": [{"name": "kubeapi", "context": {"cluster": "kubeapi", "user": "herald",
                                                          "namespace": namespace}}],
            "current-context": "kubeapi",
            "preferences": {},
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    # -- test helpers ------------------------------------------------------------- #

    def _record(self, request: RecordedRequest, authorization: str | None) -> None:
        with self.cluster.lock:
            self.requests.append(request)
            self.authorization_headers.append(authorization)

    def reset(self) -> None:
        """Forget every object, CRD, request and planned failure (resourceVersions keep rising)."""
        with self.cluster.lock:
            self.cluster.reset()
            self.tokens.clear()
            self.requests.clear()
            self.authorization_headers.clear()
            self.internal_errors.clear()

    def add_user(self, token: str, name: str, groups: Iterable[str] = ()) -> UserInfo:
        """Let ``Authorization: Bearer <token>`` authenticate as ``name``, as a token authenticator
        would: a ServiceAccount user (``system:serviceaccount:<ns>:<name>``) is also in its
        groups, and everyone in system:authenticated.  Unlike the admin, such a user is
        subject to RBAC, impersonation included.  (kubectl sends no credentials to a plain
        http server, so its requests are always the admin's; the Python client and raw HTTP
        send the token.)"""
        all_groups = list(groups)
        service_account = split_service_account(name)
        if service_account is not None:
            all_groups = [*service_account_groups(service_account[0]), *all_groups]
        if ALL_AUTHENTICATED not in all_groups:
            all_groups.append(ALL_AUTHENTICATED)
        user = UserInfo(name, tuple(dict.fromkeys(all_groups)))
        with self.cluster.lock:
            self.tokens[token] = user
        return user

    def add_default_cluster_roles(self) -> None:
        """Store the ClusterRoles every cluster has for people: cluster-admin, admin, edit and
        view, with the rules Kubernetes 1.32 aggregates into them (no aggregationRule: nothing
        here aggregates), so that tests can bind them as they would on a real cluster."""
        for name, rules in DEFAULT_CLUSTER_ROLES.items():
            self.apply_object({
                "apiVersion": f"{RBAC_GROUP}/v1", "kind": "ClusterRole",
                "metadata": {"name": name, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
                             "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}},
                "rules": copy.deepcopy(rules)}, field_manager="kube-apiserver")

    def get_object(self, api_version: str, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        with self.cluster.lock:
            try:
                rtype = self.cluster.type_for(api_version, kind)
            except KeyError:
                return None
            obj = self.cluster.objects.get(self.cluster.key(rtype, namespace, name))
            return copy.deepcopy(obj) if obj is not None else None

    def objects(self, kind: str | None = None) -> list[dict[str, Any]]:
        with self.cluster.lock:
            return [copy.deepcopy(o) for _, o in sorted(self.cluster.objects.items())
                    if kind is None or o.get("kind") == kind]

    def apply_object(self, obj: dict[str, Any], field_manager: str = "test-setup", force: bool = True,
                     subresource: str = "") -> dict[str, Any]:
        """Server-side apply without HTTP, e.g. to seed objects another manager owns."""
        with self.cluster.lock:
            rtype = self.cluster.type_for(obj["apiVersion"], obj["kind"])
            meta = obj.get("metadata", {})
            namespace = meta.get("namespace", "default") if rtype.namespaced else None
            _, result = self.cluster.write(rtype, namespace, meta["name"], "patch", obj, manager=field_manager,
                                           force=force, patch_type="apply", subresource=subresource)
            return result

    def set_rollout(self, mode: str = "complete", *, after: float = 0.0, kind: str | None = None,
                    namespace: str | None = None, name: str | None = None) -> None:
        """Decide how Deployments, StatefulSets, DaemonSets and Jobs roll out from now on.

        By default every workload is rolled out (Jobs complete) the moment it is written.
        ``set_rollout("complete", after=2)`` makes the controllers take two seconds per new
        generation, ``set_rollout("progressing")`` never finishes, ``set_rollout("failed")``
        makes Deployments exceed their progress deadline and Jobs fail. ``kind``,
        ``namespace`` and ``name`` narrow the rule; the last matching rule wins. Workloads
        already in the store are re-evaluated at once."""
        if mode not in ("complete", "progressing", "failed"):
            raise ValueError(f"unknown rollout mode {mode!r}")
        self.cluster.set_rollout(RolloutRule(mode, after, kind, namespace, name))

    def fail_next(self, kind: str, name: str, namespace: str | None = None, *, code: int = 500,
                  message: str | None = None, reason: str | None = None,
                  verbs: Iterable[str] = ("apply",), times: int = 1) -> None:
        """Answer the next ``times`` matching writes to this object with a Status error.

        ``verbs`` are "apply", "create", "update", "patch" (non-apply) and "delete".
        """
        text = message or f"Internal error occurred: injected failure for {kind} {name}"
        with self.cluster.lock:
            rtype = next((t for t in self.cluster.types.values() if t.kind == kind), None)
            error = ApiError(code, text, reason, _details(rtype, name) if rtype else {"name": name})
            self.cluster.fail_rules.append(FailRule(kind, name, namespace, tuple(verbs), error, times))
