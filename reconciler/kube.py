"""Server-side apply of rendered manifests through the official `kubernetes` client.

The order follows Flux's kustomize-controller: cluster-wide definitions (CRDs, Namespaces,
ClusterRoles...) go first, because the rest may live in them or be of their kinds. The rest of
the set is then dry-run on the server as a whole, so an invalid object fails the reconcile
before anything else of it has changed.

Whether an apply created, configured or left an object unchanged is read from the server, not
guessed: an object that did not exist was created, and an object whose resourceVersion did not
move was unchanged (the API server does not write no-op applies).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import DynamicApiError, ResourceNotFoundError

from reconciler.render import Manifest

log = logging.getLogger("herald.reconciler.kube")

FIELD_MANAGER = "herald"

# Flux's apply order (kustomize-controller's ssa sort): definitions first, then the rest.
_STAGE_ONE = ("CustomResourceDefinition", "Namespace", "ClusterRole", "ClusterRoleBinding",
              "PriorityClass", "StorageClass", "ResourceQuota", "ServiceAccount", "Role",
              "RoleBinding", "LimitRange")
_KIND_ORDER = {k: i for i, k in enumerate(_STAGE_ONE + (
    "ConfigMap", "Secret", "PersistentVolume", "PersistentVolumeClaim", "Service", "Ingress",
    "DaemonSet", "Deployment", "StatefulSet", "ReplicaSet", "Job", "CronJob",
    "HorizontalPodAutoscaler"))}
_DEFINITIONS = set(_STAGE_ONE[:3])  # applied before the dry-run of everything else


class ApplyError(Exception):
    """The API server refused objects; the message carries its own words, one per object."""


class ClusterUnreachable(Exception):
    """The API server could not be reached at all: worth retrying, unlike a refusal."""


@dataclass(frozen=True)
class Change:
    ref: str  # Kind/namespace/name
    action: str  # created | configured | unchanged

    def __str__(self) -> str:
        return f"{self.ref} {self.action}"


def sort_key(m: Manifest) -> tuple[int, str, str, str]:
    return (_KIND_ORDER.get(m.kind, len(_KIND_ORDER)), m.kind, m.namespace, m.name)


def _status_message(exc: Exception) -> str:
    """The API server's own message from a Status body, else the exception's text."""
    body = getattr(exc, "body", None)
    if body:
        try:
            data = json.loads(body)
            if isinstance(data, dict) and data.get("message"):
                return str(data["message"])
        except (TypeError, ValueError):
            pass
    status, reason = getattr(exc, "status", ""), getattr(exc, "reason", "")
    return f"{status} {reason}".strip() or str(exc)


class Cluster:
    """A connection to one API server; discovery is cached and refreshed on a miss."""

    def __init__(self, api_client: k8s_client.ApiClient, cache_dir: Path | None = None):
        self.api_client = api_client
        cache_file = None
        if cache_dir is not None:
            cache_dir.mkdir(parents=True, exist_ok=True)
            host = api_client.configuration.host.replace("://", "_").replace("/", "_").replace(":", "_")
            cache_file = str(cache_dir / f"discovery-{host}.json")
        try:
            self.dyn = DynamicClient(api_client, cache_file=cache_file)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise ClusterUnreachable(f"Kubernetes API server unreachable: {exc}") from None
        except ApiException as exc:
            raise ClusterUnreachable(f"Kubernetes discovery failed: {_status_message(exc)}") from None

    @classmethod
    def from_environment(cls, cache_dir: Path | None = None) -> Cluster | None:
        """In-cluster credentials, else KUBECONFIG / ~/.kube/config; None when neither exists."""
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            try:
                k8s_config.load_incluster_config()
                return cls(k8s_client.ApiClient(), cache_dir)
            except ConfigException:
                pass
        paths = os.environ.get("KUBECONFIG", "")
        candidates = [p for p in paths.split(os.pathsep) if p] or [os.path.expanduser("~/.kube/config")]
        if not any(os.path.exists(p) for p in candidates):
            return None
        try:
            api = k8s_config.new_client_from_config(config_file=candidates[0])
        except ConfigException as exc:
            raise ClusterUnreachable(f"kubeconfig {candidates[0]} is not usable: {exc}") from None
        return cls(api, cache_dir)

    def _resource(self, m: Manifest) -> Any:
        try:
            return self.dyn.resources.get(api_version=m.api_version, kind=m.kind)
        except ResourceNotFoundError:
            raise ApplyError(f"{m.ref()}: no kind {m.kind!r} is served for apiVersion "
                             f"{m.api_version!r} (is its CRD installed?)") from None

    def _prepare(self, m: Manifest) -> tuple[Any, str | None]:
        res = self._resource(m)
        meta = m.obj.setdefault("metadata", {})
        if res.namespaced:
            meta.setdefault("namespace", "default")  # as kubectl does without a context namespace
            return res, meta["namespace"]
        meta.pop("namespace", None)
        return res, None

    def _apply_one(self, m: Manifest, dry_run: bool) -> str:
        """Apply one object; return its action (empty for a dry run, which only validates)."""
        res, ns = self._prepare(m)
        kwargs: dict[str, Any] = {"field_manager": FIELD_MANAGER, "force_conflicts": True}
        old_version = None
        try:
            if dry_run:
                res.server_side_apply(body=m.obj, name=m.name, namespace=ns, dry_run="All", **kwargs)
                return ""
            try:
                old_version = res.get(name=m.name, namespace=ns).metadata.resourceVersion
            except DynamicApiError as exc:
                if exc.status != 404:
                    raise
            after = res.server_side_apply(body=m.obj, name=m.name, namespace=ns, **kwargs)
        except DynamicApiError as exc:
            raise ApplyError(f"{m.ref()}: {_status_message(exc)}") from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise ClusterUnreachable(f"Kubernetes API server unreachable: {exc}") from None
        if old_version is None:
            return "created"
        return "unchanged" if after.metadata.resourceVersion == old_version else "configured"

    def apply(self, manifests: list[Manifest]) -> list[Change]:
        """Apply all manifests in Flux's order; raise ApplyError naming every refused object."""
        ordered = sorted(manifests, key=sort_key)
        changes: list[Change] = []
        definitions = [m for m in ordered if m.kind in _DEFINITIONS]
        rest = [m for m in ordered if m.kind not in _DEFINITIONS]
        for m in definitions:
            action = self._apply_one(m, dry_run=False)  # defaults the namespace: ref() after
            changes.append(Change(m.ref(), action))
        if any(m.kind == "CustomResourceDefinition" for m in definitions):
            self.dyn.resources.invalidate_cache()  # new kinds must become discoverable
        errors = []
        for m in rest:
            try:
                self._apply_one(m, dry_run=True)
            except ApplyError as exc:
                errors.append(str(exc))
        if errors:
            raise ApplyError("\n".join(errors))
        for m in rest:
            action = self._apply_one(m, dry_run=False)
            changes.append(Change(m.ref(), action))
        return changes
