"""After the build, as kustomize-controller does it: decrypt (`spec.decryption`), then
substitute variables (`spec.postBuild`), then refuse any Secret still encrypted.

The order is Flux's: SOPS-encrypted objects are decrypted first (`reconciler.decrypt`, the
reference `sops` binary, keys only in memory), and `${var}` substitution runs on the decrypted
objects (`reconciler.substitute`), each object's YAML as kustomize prints it (its JSON turned
into YAML: keys sorted, quotes only where YAML needs them) and read back with YAML 1.1 scalars,
as sigs.k8s.io/yaml reads it in Flux. So `replicas: ${n}` becomes the integer 3 there as here.

The ConfigMaps and Secrets these steps read (`substituteFrom`, `decryption.secretRef`) are
Flux's: in the Kustomization's namespace, in the cluster. `read(kind, namespace, name)` is the
caller's way to them (the cluster, else Herald's configuration); it returns decoded strings or
None. Every failure is a RenderError (the event's BuildFailed) naming the field and never a
value: a variable may come from a Secret and a document may be a decrypted Secret.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping
from typing import Any

import yaml

from herald.model import Kustomization
from reconciler.decrypt import (
    DecryptionError,
    decrypt_manifests,
    decryption_keys,
    is_encrypted_secret,
)
from reconciler.render import Manifest, RenderError
from reconciler.substitute import (
    FLUX_DEFAULT_STRICT,
    SubstituteError,
    collect_variables,
    substitute_always,
    substitute_document,
)

Read = Callable[[str, str, str], Mapping[str, str] | None]


class _YAML11(yaml.SafeLoader):
    """YAML 1.1 scalars as go-yaml v2 reads them into JSON: no timestamps (they stay text)."""


_YAML11.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:timestamp"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def as_kustomize_prints(obj: Mapping[str, Any]) -> str:
    """The object's YAML as kustomize prints it after the build (sorted keys, block style)."""
    return yaml.safe_dump(json.loads(json.dumps(obj)), sort_keys=True, default_flow_style=False,
                          allow_unicode=True, width=2**31 - 1)


def finish(ks: Kustomization, manifests: list[Manifest], read: Read | None) -> list[Manifest]:
    """`manifests` decrypted and substituted as the Kustomization asks; see the module docstring."""
    ns = ks.meta.namespace
    if ks.decryption_secret is not None or ks.decryption:
        manifests = _decrypt(ks, manifests, read)
    if ks.post_build is not None:
        manifests = _substitute(ks, manifests, read)
    for m in manifests:
        if is_encrypted_secret(m.obj):
            raise RenderError(f"{m.ref()} is SOPS encrypted, configuring decryption is required for this secret "
                              f"to be reconciled (spec.decryption of Kustomization {ns}/{ks.meta.name})")
    return manifests


def _decrypt(ks: Kustomization, manifests: list[Manifest], read: Read | None) -> list[Manifest]:
    ns = ks.meta.namespace
    keys = decryption_keys({})
    if ks.decryption_secret:
        data = read("Secret", ns, ks.decryption_secret) if read is not None else None
        if data is None:
            raise RenderError(f"spec.decryption.secretRef: Secret {ns}/{ks.decryption_secret} not found")
        try:
            keys = decryption_keys(data, secret=f"{ns}/{ks.decryption_secret}")
        except DecryptionError as exc:
            raise RenderError(f"spec.decryption.secretRef: {exc}") from None
    try:
        objs = decrypt_manifests([m.obj for m in manifests], keys)
    except DecryptionError as exc:
        raise RenderError(f"decryption failed: {exc}") from None
    return [Manifest(obj, m.source) for obj, m in zip(objs, manifests, strict=True)]


def _substitute(ks: Kustomization, manifests: list[Manifest], read: Read | None) -> list[Manifest]:
    ns = ks.meta.namespace
    post_build = ks.post_build or {}

    def lookup(kind: str, name: str) -> Mapping[str, str] | None:
        return read(kind, ns, name) if read is not None else None

    try:
        variables = collect_variables(post_build, lookup)
    except SubstituteError as exc:
        raise RenderError(f"postBuild substitution failed: {exc}") from None
    always = substitute_always(post_build)
    out = []
    for m in manifests:
        try:
            text = substitute_document(as_kustomize_prints(m.obj), m.obj, variables, strict=FLUX_DEFAULT_STRICT,
                                       always=always)
        except SubstituteError as exc:
            raise RenderError(f"postBuild substitution failed for {m.ref()}: {exc}") from None
        if text is None:
            out.append(m)
            continue
        try:
            obj = yaml.load(text, Loader=_YAML11)
        except yaml.YAMLError as exc:
            raise RenderError(f"postBuild substitution made {m.ref()} invalid YAML: "
                              f"{getattr(exc, 'problem', None) or type(exc).__name__}") from None
        if not isinstance(obj, dict):
            raise RenderError(f"postBuild substitution made {m.ref()} something other than an object")
        out.append(Manifest(json.loads(json.dumps(obj)), m.source))
    return out


def reader(cluster: Any, cfg: Any) -> Read:
    """Flux's reads for these steps: the object in the cluster (a `reconciler.kube.Cluster`),
    else, for a Secret, Herald's configuration (files, the secrets directory, a render)."""

    def read(kind: str, namespace: str, name: str) -> Mapping[str, str] | None:
        if cluster is not None:
            obj = cluster.get("v1", kind, namespace, name)
            if obj is not None:
                data = obj.get("data") or {}
                if kind == "Secret":
                    return {k: base64.b64decode(v).decode("utf-8", "replace") for k, v in data.items()}
                return {k: str(v) for k, v in data.items()}
        return cfg.secret(namespace, name) if kind == "Secret" else None

    return read
