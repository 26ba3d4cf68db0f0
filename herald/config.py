"""Loading and validating Herald's configuration: Flux-shaped YAML documents.

`load(paths)` returns a `Config` or raises `ConfigError` listing every problem with file and
line. `check(paths)` returns the diagnostics (errors and warnings) for `herald validate`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from herald import model as m
from herald.schema import (
    Ctx,
    Diagnostic,
    Obj,
    boolean,
    dns_name,
    duration,
    integer,
    list_of,
    regex,
    string,
    string_map,
    template,
)
from herald.yamlsrc import (
    Document,
    LocDict,
    LocList,
    YAMLSyntaxError,
    load_documents,
    yaml_files,
)

RECEIVER_VERSIONS = ("notification.toolkit.fluxcd.io/v1", "herald.dev/v1")
NOTIFICATION_VERSIONS = (
    "notification.toolkit.fluxcd.io/v1beta3",
    "notification.toolkit.fluxcd.io/v1beta2",
    "herald.dev/v1",
)
API_VERSIONS: dict[str, tuple[str, ...]] = {
    "Receiver": RECEIVER_VERSIONS,
    "Provider": NOTIFICATION_VERSIONS,
    "Alert": NOTIFICATION_VERSIONS,
    "GitRepository": ("source.toolkit.fluxcd.io/v1", "source.toolkit.fluxcd.io/v1beta2", "herald.dev/v1"),
    "Kustomization": ("kustomize.toolkit.fluxcd.io/v1", "herald.dev/v1"),
    "Secret": ("v1",),
}

# Kinds Herald can reconcile; Receivers and Alerts may name Flux's other kinds (a Flux
# manifest set often does) and are warned about rather than rejected.
RECONCILABLE_KINDS = ("GitRepository", "Kustomization")
FLUX_SOURCE_KINDS = (
    "Bucket", "GitRepository", "HelmChart", "HelmRelease", "HelmRepository",
    "ImagePolicy", "ImageRepository", "ImageUpdateAutomation", "Kustomization", "OCIRepository",
)
FLUX_RECEIVER_TYPES = (
    "generic", "generic-hmac", "github", "gitlab", "bitbucket", "harbor", "dockerhub", "quay",
    "gcr", "nexus", "acr", "cdevents", "cloudevents",
)


class ConfigError(Exception):
    def __init__(self, diagnostics: list[Diagnostic]):
        self.diagnostics = diagnostics
        super().__init__("\n".join(str(d) for d in diagnostics))


# ---- schemas ---------------------------------------------------------------------------

_name = string(nonempty=True)
_ref = Obj({"name": _name}, required=("name",))

_METADATA = Obj(
    {"name": _name, "namespace": _name, "labels": string_map(), "annotations": string_map()},
    required=("name",),
    flux_only=("finalizers", "generateName", "uid", "resourceVersion", "generation",
               "creationTimestamp", "managedFields", "ownerReferences", "deletionTimestamp"),
)

_RESOURCE = Obj(
    {"apiVersion": string(), "kind": string(nonempty=True), "name": _name,
     "namespace": _name, "matchLabels": string_map()},
    required=("kind", "name"),
)

_SPECS: dict[str, Obj] = {
    "Receiver": Obj(
        {"type": string(nonempty=True), "events": list_of(string(nonempty=True)),
         "secretRef": _ref, "resources": list_of(_RESOURCE, nonempty=True),
         "suspend": boolean(),
         # Herald's own: per-Receiver rate limit, GitHub's legacy sha1 signature, plans of
         # pull requests from forks.
         "rateLimit": Obj({"requests": integer(minimum=1), "interval": duration()},
                          required=("requests",)),
         "insecureAllowSHA1": boolean(), "planForks": boolean()},
        required=("type", "secretRef", "resources"),
        flux_only=("interval", "resourceFilter"),
    ),
    "Provider": Obj(
        {"type": string(nonempty=True), "address": string(), "channel": string(),
         "username": string(), "secretRef": _ref, "certSecretRef": _ref, "timeout": duration(),
         "proxy": string(), "suspend": boolean(),
         # Herald's own: the email provider's envelope, and a message template (Jinja2).
         "from": string(), "to": list_of(string(nonempty=True)), "cc": list_of(string(nonempty=True)),
         "template": template()},
        required=("type",),
        flux_only=("interval", "commitStatusExpr", "serviceAccountName"),
    ),
    "Alert": Obj(
        {"providerRef": _ref,
         "eventSeverity": string(choices=("info", "error")),
         "eventSources": list_of(
             Obj({"apiVersion": string(), "kind": string(choices=FLUX_SOURCE_KINDS),
                  "name": _name, "namespace": _name, "matchLabels": string_map()},
                 required=("kind", "name")),
             nonempty=True),
         "inclusionList": list_of(regex()), "exclusionList": list_of(regex()),
         "eventMetadata": string_map(), "summary": string(), "suspend": boolean(),
         # Herald's own: a message template (Jinja2, see notifier/templates.py), and whether a
         # chat, email or webhook Provider also gets pull-request plans (commit-status
         # Providers always do; see notifier.worker).
         "template": template(), "includePlans": boolean()},
        required=("providerRef", "eventSources"),
    ),
    "GitRepository": Obj(
        {"url": string(nonempty=True), "secretRef": _ref, "interval": duration(),
         "timeout": duration(),
         "ref": Obj({"branch": string(), "tag": string(), "semver": string(),
                     "name": string(), "commit": string(pattern=r"^[0-9a-f]{40}$")}),
         "suspend": boolean()},
        required=("url", "interval"),
        flux_only=("verify", "proxySecretRef", "ignore", "recurseSubmodules", "include",
                   "sparseCheckout", "provider"),
    ),
    "Kustomization": Obj(
        {"sourceRef": Obj({"apiVersion": string(), "kind": string(nonempty=True),
                           "name": _name, "namespace": _name}, required=("kind", "name")),
         "path": string(), "prune": boolean(), "interval": duration(),
         "retryInterval": duration(), "targetNamespace": _name,
         "dependsOn": list_of(Obj({"name": _name, "namespace": _name}, required=("name",))),
         "wait": boolean(), "timeout": duration(), "suspend": boolean()},
        required=("sourceRef", "interval", "prune"),
        flux_only=("decryption", "healthChecks", "healthCheckExprs", "patches", "images",
                   "components", "postBuild", "force", "serviceAccountName", "kubeConfig",
                   "commonMetadata", "namePrefix", "nameSuffix", "deletionPolicy"),
    ),
}


# ---- the loaded configuration ----------------------------------------------------------

@dataclass
class Config:
    receivers: dict[tuple[str, str], m.Receiver] = field(default_factory=dict)
    providers: dict[tuple[str, str], m.Provider] = field(default_factory=dict)
    alerts: dict[tuple[str, str], m.Alert] = field(default_factory=dict)
    git_repositories: dict[tuple[str, str], m.GitRepository] = field(default_factory=dict)
    kustomizations: dict[tuple[str, str], m.Kustomization] = field(default_factory=dict)
    secrets: dict[tuple[str, str], m.Secret] = field(default_factory=dict)
    secrets_dir: Path | None = None
    # Secrets read from the Kubernetes API (`--from-cluster`): consulted after the two above.
    cluster_secrets: Mapping[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    warnings: list[Diagnostic] = field(default_factory=list)
    # (kind, namespace, name) of objects that were defined but refused: references to them
    # are not reported again as "not found" (their own error says what is wrong).
    rejected: set[tuple[str, str, str]] = field(default_factory=set)

    def by_kind(self, kind: str) -> dict[tuple[str, str], Any]:
        return {
            "Receiver": self.receivers, "Provider": self.providers, "Alert": self.alerts,
            "GitRepository": self.git_repositories, "Kustomization": self.kustomizations,
            "Secret": self.secrets,
        }.get(kind, {})

    def secret(self, namespace: str, name: str) -> dict[str, str] | None:
        """A Secret's decoded data: from the configuration, else from the secrets directory,
        else (with `--from-cluster`) from the cluster.

        The directory layout is `<dir>/<namespace>/<name>/<key>`, which is what mounting a
        Kubernetes Secret as a volume under `<dir>/<namespace>/<name>` produces.
        """
        found = self.secrets.get((namespace, name))
        if found is not None:
            return found.data
        if self.secrets_dir is not None:
            folder = self.secrets_dir / namespace / name
            if folder.is_dir():
                return {
                    p.name: p.read_text()
                    for p in folder.iterdir()
                    if p.is_file() and not p.name.startswith(".")
                }
        return self.cluster_secrets.get((namespace, name))

    def receiver_token(self, receiver: m.Receiver) -> str | None:
        data = self.secret(receiver.meta.namespace, receiver.secret_ref.name)
        if data is None or not data.get("token", "").strip():
            return None
        # Tokens pasted into Secrets often carry a trailing newline; Flux trims it too.
        return data["token"].strip()

    def receiver_keys(self, receiver: m.Receiver) -> tuple[tuple[str, ...], dict[str, str]]:
        """The keys a delivery may be signed with, and the Secret's data, all trimmed.

        `token` comes first; each non-empty line of `rotationKeys` follows, so a sender can
        move to a new key while deliveries signed with the old one still verify.
        """
        data = {k: v.strip() for k, v in (self.secret(receiver.meta.namespace, receiver.secret_ref.name) or {}).items()}
        token = data.get("token", "")
        rotation = [line.strip() for line in data.get("rotationKeys", "").splitlines() if line.strip()]
        keys = tuple(dict.fromkeys(k for k in (token, *rotation) if k))
        return keys, data

    def hook_path(self, receiver: m.Receiver) -> str | None:
        token = self.receiver_token(receiver)
        if token is None:
            return None
        return hook_path(token, receiver.meta.name, receiver.meta.namespace)

    def kustomizations_for(self, repo: m.GitRepository) -> list[m.Kustomization]:
        return [
            k for k in self.kustomizations.values()
            if k.source_ref.kind == "GitRepository"
            and k.source_ref.name == repo.meta.name
            and (k.source_ref.namespace or k.meta.namespace) == repo.meta.namespace
        ]


def hook_path(token: str, name: str, namespace: str) -> str:
    """Flux's Receiver URL: /hook/ + hex(sha256(token + name + namespace))."""
    return "/hook/" + hashlib.sha256((token + name + namespace).encode()).hexdigest()


# ---- building ---------------------------------------------------------------------------

def _refs(items: Iterable[dict[str, Any]] | None) -> tuple[m.ResourceRef, ...]:
    return tuple(
        m.ResourceRef(kind=r["kind"], name=r["name"], namespace=r.get("namespace"),
                      api_version=r.get("apiVersion") or "",
                      match_labels=r.get("matchLabels") or {})
        for r in items or ()
    )


def _build(kind: str, meta: m.Meta, spec: dict[str, Any], doc: dict[str, Any]) -> Any:
    if kind == "Receiver":
        limit = spec.get("rateLimit")
        return m.Receiver(meta=meta, type=spec["type"], secret_ref=m.SecretRef(spec["secretRef"]["name"]),
                          resources=_refs(spec["resources"]), events=tuple(spec.get("events") or ()),
                          suspend=bool(spec.get("suspend")),
                          rate_limit=m.RateLimit(limit["requests"], limit.get("interval") or 60.0)
                          if limit else None,
                          insecure_allow_sha1=bool(spec.get("insecureAllowSHA1")),
                          plan_forks=bool(spec.get("planForks")))
    if kind == "Provider":
        ref = spec.get("secretRef")
        return m.Provider(meta=meta, type=spec["type"], address=spec.get("address") or "",
                          channel=spec.get("channel") or "", username=spec.get("username") or "",
                          secret_ref=m.SecretRef(ref["name"]) if ref else None,
                          cert_secret_ref=m.SecretRef(spec["certSecretRef"]["name"])
                          if spec.get("certSecretRef") else None,
                          timeout=spec.get("timeout") or 15.0, proxy=spec.get("proxy") or "",
                          suspend=bool(spec.get("suspend")), sender=spec.get("from") or "",
                          to=tuple(spec.get("to") or ()), cc=tuple(spec.get("cc") or ()),
                          template=spec.get("template") or "")
    if kind == "Alert":
        return m.Alert(
            meta=meta, provider_ref=spec["providerRef"]["name"],
            event_sources=tuple(
                m.EventSource(kind=s["kind"], name=s["name"], namespace=s.get("namespace"),
                              match_labels=s.get("matchLabels") or {})
                for s in spec["eventSources"]),
            event_severity=spec.get("eventSeverity") or "info",
            inclusion_list=tuple(spec.get("inclusionList") or ()),
            exclusion_list=tuple(spec.get("exclusionList") or ()),
            event_metadata=spec.get("eventMetadata") or {}, summary=spec.get("summary") or "",
            suspend=bool(spec.get("suspend")), template=spec.get("template") or "",
            include_plans=bool(spec.get("includePlans")))
    if kind == "GitRepository":
        ref = spec.get("ref") or {}
        git_ref = m.GitRef(**{k: ref.get(k) or "" for k in ("branch", "tag", "semver", "commit", "name")})
        if not any((git_ref.branch, git_ref.tag, git_ref.semver, git_ref.commit, git_ref.name)):
            git_ref = m.GitRef(branch="master")  # Flux's default when ref is empty
        sref = spec.get("secretRef")
        return m.GitRepository(meta=meta, url=spec["url"], ref=git_ref, interval=spec["interval"],
                               timeout=spec.get("timeout") or 60.0,
                               secret_ref=m.SecretRef(sref["name"]) if sref else None,
                               suspend=bool(spec.get("suspend")))
    if kind == "Kustomization":
        s = spec["sourceRef"]
        return m.Kustomization(
            meta=meta,
            source_ref=m.ResourceRef(kind=s["kind"], name=s["name"], namespace=s.get("namespace"),
                                     api_version=s.get("apiVersion") or ""),
            path=spec.get("path") or "./", prune=bool(spec.get("prune")), interval=spec["interval"],
            retry_interval=spec.get("retryInterval"), target_namespace=spec.get("targetNamespace") or "",
            depends_on=tuple(m.ResourceRef(kind="Kustomization", name=d["name"], namespace=d.get("namespace"))
                             for d in spec.get("dependsOn") or ()),
            wait=bool(spec.get("wait")), timeout=spec.get("timeout"), suspend=bool(spec.get("suspend")))
    if kind == "Secret":
        return m.Secret(meta=meta, data=doc["__secret_data"])
    raise AssertionError(kind)


def _secret_data(doc: LocDict, ctx: Ctx) -> dict[str, str] | None:
    data: dict[str, str] = {}
    ok = True
    for key in ("data", "stringData"):
        if key not in doc:
            continue
        values = string_map()(doc[key], key, doc.line_of(key), ctx)
        if values is None:
            ok = False
            continue
        for k, v in values.items():
            line = doc[key].line_of(k) if isinstance(doc[key], LocDict) else doc.line_of(key)
            if key == "data":
                try:
                    data[k] = base64.b64decode(v, validate=True).decode()
                except (binascii.Error, UnicodeDecodeError):
                    # Never echo the value: it is a secret.
                    ctx.error(line, f"data.{k}: not valid base64-encoded UTF-8 text")
                    ok = False
            else:
                data[k] = v  # stringData wins over data, as in Kubernetes
    return data if ok else None


def _field_lines(spec: Any) -> dict[str, int]:
    """Where each field of `spec` is, two levels deep: "spec.x", "spec.x.y", "spec.x[i]"."""
    lines: dict[str, int] = {}
    if not isinstance(spec, LocDict):
        return lines
    for key, value in spec.items():
        here = f"spec.{key}"
        lines[here] = spec.line_of(key)
        if isinstance(value, LocDict):
            for sub in value:
                lines[f"{here}.{sub}"] = value.line_of(sub)
        elif isinstance(value, LocList):
            for i in range(len(value)):
                lines[f"{here}[{i}]"] = value.line_of(i)
    return lines


def _identity(doc: Document) -> tuple[str, str, str] | None:
    """(kind, namespace, name) of a document, read leniently, when it says what it defines."""
    data = doc.data
    if not isinstance(data, dict) or not isinstance(data.get("kind"), str):
        return None
    meta = data.get("metadata")
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str):
        return None
    namespace = meta.get("namespace")
    return data["kind"], namespace if isinstance(namespace, str) and namespace else "default", meta["name"]


def _check_document(doc: Document, out: list[Diagnostic]) -> tuple[str, Any] | None:
    ctx = Ctx(doc.path, out)
    data = doc.data
    if not isinstance(data, LocDict):
        ctx.error(doc.line, "a document must be a mapping with apiVersion and kind")
        return None
    kind = data.get("kind")
    api_version = data.get("apiVersion")
    if not isinstance(kind, str) or not kind:
        ctx.error(data.line, "kind: required field is missing")
        return None
    if kind.endswith("List") and isinstance(data.get("items"), list):
        ctx.error(data.line, f"kind {kind}: lists are not supported; write one document per object")
        return None
    if kind not in API_VERSIONS:
        ctx.error(data.line_of("kind"),
                  f"kind {kind!r} is not a Herald configuration kind "
                  f"(known: {', '.join(API_VERSIONS)})")
        return None
    if api_version not in API_VERSIONS[kind]:
        ctx.error(data.line_of("apiVersion"),
                  f"apiVersion {api_version!r} is not accepted for {kind} "
                  f"(accepted: {', '.join(API_VERSIONS[kind])})")
        return None
    meta_raw = _METADATA(data.get("metadata"), "metadata", data.line_of("metadata"), ctx) \
        if "metadata" in data else None
    if meta_raw is None:
        if "metadata" not in data:
            ctx.error(data.line, "metadata.name: required field is missing")
        return None
    name, namespace = meta_raw["name"], meta_raw.get("namespace") or "default"
    ctx.where = f"{kind} {namespace}/{name}"
    if not dns_name(name):
        ctx.error(data["metadata"].line_of("name"),
                  "metadata.name: must be a lowercase RFC 1123 name (a-z, 0-9, '-', '.')")
        return None
    meta = m.Meta(name=name, namespace=namespace, labels=meta_raw.get("labels") or {},
                  annotations=meta_raw.get("annotations") or {},
                  source=f"{doc.path}:{data.line}" if data.line else doc.path,
                  field_lines=_field_lines(data.get("spec")))

    allowed_top = {"apiVersion", "kind", "metadata", "spec"} if kind != "Secret" else \
        {"apiVersion", "kind", "metadata", "data", "stringData", "type", "immutable"}
    for key in data:
        if key == "status":
            ctx.warn(data.line_of(key), "status: ignored (Herald keeps status itself)")
        elif key not in allowed_top:
            ctx.error(data.line_of(key), f"{key}: unknown field")

    if kind == "Secret":
        secret = _secret_data(data, ctx)
        if secret is None:
            return None
        return kind, _build(kind, meta, {}, {"__secret_data": secret})

    if "spec" not in data:
        ctx.error(data.line, "spec: required field is missing")
        return None
    before = sum(d.severity == "error" for d in out)
    spec = _SPECS[kind](data["spec"], "spec", data.line_of("spec"), ctx)
    if spec is None or sum(d.severity == "error" for d in out) > before:
        return None
    return kind, _build(kind, meta, spec, data)


def _registered_types() -> tuple[Mapping[str, Any], tuple[str, ...]]:
    """Receiver and provider types, read from the components' own tables (one source of truth)."""
    from notifier.providers import PROVIDERS
    from receiver.types import TYPES

    return TYPES, tuple(PROVIDERS)


def _cross_check(cfg: Config, out: list[Diagnostic]) -> None:
    """References between objects: the mistakes a single document cannot show."""
    receiver_types, provider_types = _registered_types()

    def rejected(kind: str, namespace: str, name: str) -> bool:
        return (kind, namespace, name) in cfg.rejected

    def err(obj: Any, msg: str, severity: str = "error", at: str = "") -> None:
        path, line = source_location(obj.meta.source)
        line = obj.meta.line_of(at) or line if at else line
        kind = type(obj).__name__
        out.append(Diagnostic(path, line, f"{kind} {obj.meta.namespace}/{obj.meta.name}: {msg}",
                              severity))

    for r in cfg.receivers.values():
        if r.type not in receiver_types:
            hint = " (a Flux type Herald does not support yet)" if r.type in FLUX_RECEIVER_TYPES else ""
            err(r, f"spec.type: {r.type!r} is not supported{hint}; supported: {', '.join(receiver_types)}")
        elif r.events and not receiver_types[r.type].has_events:
            err(r, f"spec.events: {r.type} deliveries carry no event name, so spec.events is ignored",
                "warning")
        if cfg.secret(r.meta.namespace, r.secret_ref.name) is None:
            if not rejected("Secret", r.meta.namespace, r.secret_ref.name):
                err(r, f"spec.secretRef: Secret {r.meta.namespace}/{r.secret_ref.name} not found",
                    at="spec.secretRef.name")
        elif cfg.receiver_token(r) is None:
            err(r, f"spec.secretRef: Secret {r.meta.namespace}/{r.secret_ref.name} has no 'token' key",
                at="spec.secretRef.name")
        for i, res in enumerate(r.resources):
            item = f"spec.resources[{i}]"
            if res.kind not in RECONCILABLE_KINDS:
                err(r, f"spec.resources: Herald does not reconcile {res.kind}; requests for it are ignored",
                    "warning", at=item)
            elif (res.name != "*" and (res.namespace or r.meta.namespace, res.name) not in cfg.by_kind(res.kind)
                  and not rejected(res.kind, res.namespace or r.meta.namespace, res.name)):
                err(r, f"spec.resources: {res.kind} {res.namespace or r.meta.namespace}/{res.name} not found",
                    at=item)
            if res.name != "*" and res.match_labels:
                err(r, "spec.resources: matchLabels is only allowed with name '*'", at=item)
    for p in cfg.providers.values():
        if p.type not in provider_types:
            err(p, f"spec.type: {p.type!r} is not supported; supported: {', '.join(provider_types)}")
        if (p.secret_ref and cfg.secret(p.meta.namespace, p.secret_ref.name) is None
                and not rejected("Secret", p.meta.namespace, p.secret_ref.name)):
            err(p, f"spec.secretRef: Secret {p.meta.namespace}/{p.secret_ref.name} not found",
                at="spec.secretRef.name")
        if (p.cert_secret_ref and cfg.secret(p.meta.namespace, p.cert_secret_ref.name) is None
                and not rejected("Secret", p.meta.namespace, p.cert_secret_ref.name)):
            err(p, f"spec.certSecretRef: Secret {p.meta.namespace}/{p.cert_secret_ref.name} not found",
                at="spec.certSecretRef.name")
        if p.type == "email" and not p.to:
            err(p, "spec.to: an email Provider needs at least one recipient")
    for a in cfg.alerts.values():
        if ((a.meta.namespace, a.provider_ref) not in cfg.providers
                and not rejected("Provider", a.meta.namespace, a.provider_ref)):
            err(a, f"spec.providerRef: Provider {a.meta.namespace}/{a.provider_ref} not found",
                at="spec.providerRef.name")

    for g in cfg.git_repositories.values():
        if (g.secret_ref and cfg.secret(g.meta.namespace, g.secret_ref.name) is None
                and not rejected("Secret", g.meta.namespace, g.secret_ref.name)):
            err(g, f"spec.secretRef: Secret {g.meta.namespace}/{g.secret_ref.name} not found",
                at="spec.secretRef.name")
        if g.ref.semver:
            from reconciler.git import GitError, parse_semver_range

            try:
                parse_semver_range(g.ref.semver)
            except GitError as exc:
                err(g, f"spec.ref.semver: {exc}", at="spec.ref.semver")
    for k in cfg.kustomizations.values():
        ns = k.source_ref.namespace or k.meta.namespace
        if k.source_ref.kind != "GitRepository":
            err(k, f"spec.sourceRef.kind: Herald reconciles from a GitRepository, not {k.source_ref.kind}",
                at="spec.sourceRef.kind")
        elif (ns, k.source_ref.name) not in cfg.git_repositories and not rejected("GitRepository", ns,
                                                                                  k.source_ref.name):
            err(k, f"spec.sourceRef: GitRepository {ns}/{k.source_ref.name} not found", at="spec.sourceRef.name")
        for i, d in enumerate(k.depends_on):
            dns = d.namespace or k.meta.namespace
            if (dns, d.name) not in cfg.kustomizations and not rejected("Kustomization", dns, d.name):
                err(k, f"spec.dependsOn: Kustomization {dns}/{d.name} not found", at=f"spec.dependsOn[{i}]")


def read_documents(paths: Iterable[str | Path], out: list[Diagnostic]) -> list[Document]:
    """Every YAML document of the files `paths` name; what cannot be read goes into `out`."""
    found: list[Document] = []
    for root in paths:
        root = Path(root)
        if not root.exists():
            out.append(Diagnostic(str(root), 0, "no such file or directory"))
            continue
        files = yaml_files(root)
        if not files:
            out.append(Diagnostic(str(root), 0, "no .yaml or .yml files found"))
        for f in files:
            try:
                text = f.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                out.append(Diagnostic(str(f), 0, f"cannot read: {exc}"))
                continue
            before = len(found)
            try:
                # Documents before a syntax error are still checked: one run, every error.
                for doc in load_documents(text, str(f)):
                    found.append(doc)
            except YAMLSyntaxError as exc:
                out.append(Diagnostic(exc.path, exc.line, exc.message))
                continue
            if len(found) == before:
                out.append(Diagnostic(str(f), 0, "no objects in this file", "warning"))
    return found


def add_documents(cfg: Config, docs: Iterable[Document], out: list[Diagnostic]) -> None:
    """Check each document and add what it builds to `cfg`; the first of two same-named
    objects wins, and the second is reported naming both sources. Documents may come from
    files or from elsewhere (`herald.cluster_config`): only `Document.path` tells them apart."""
    for doc in docs:
        built = _check_document(doc, out)
        if built is None:
            identity = _identity(doc)
            if identity is not None:
                cfg.rejected.add(identity)
            continue
        kind, obj = built
        table = cfg.by_kind(kind)
        if obj.meta.key in table:
            first = table[obj.meta.key].meta.source
            path, line = source_location(obj.meta.source)
            out.append(Diagnostic(path, line,
                                  f"{kind} {obj.meta.namespace}/{obj.meta.name}: defined twice "
                                  f"(first at {first})"))
            continue
        table[obj.meta.key] = obj


def source_location(source: str) -> tuple[str, int]:
    """`Meta.source` as (path, line): "file.yaml:12" -> ("file.yaml", 12); a source with no
    line ("cluster:Receiver/ns/name") -> (source, 0)."""
    path, _, line = source.rpartition(":")
    return (path, int(line)) if path and line.isdigit() else (source, 0)


def check(paths: Iterable[str | Path], secrets_dir: str | Path | None = None) -> tuple[Config, list[Diagnostic]]:
    """Read and check the configuration; return what could be built and every diagnostic."""
    out: list[Diagnostic] = []
    cfg = Config(secrets_dir=Path(secrets_dir) if secrets_dir else None)
    docs = read_documents(paths, out)
    add_documents(cfg, docs, out)
    if not docs and not any(d.severity == "error" for d in out):
        out.append(Diagnostic(", ".join(str(p) for p in paths) or "-", 0,
                              "the configuration defines no objects: Herald has nothing to do", "warning"))
    _cross_check(cfg, out)
    cfg.warnings = [d for d in out if d.severity == "warning"]
    return cfg, out


def load(paths: Iterable[str | Path], secrets_dir: str | Path | None = None) -> Config:
    cfg, diagnostics = check(paths, secrets_dir)
    errors = [d for d in diagnostics if d.severity == "error"]
    if errors:
        raise ConfigError(errors)
    return cfg
