"""Loading and validating Herald's configuration: Flux-shaped YAML documents.

`load(paths)` returns a `Config` or raises `ConfigError` listing every problem with file and
line. `check(paths)` returns the diagnostics (errors and warnings) for `herald validate`.
"""

from __future__ import annotations

import re
import base64
import binascii
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from herald import model as m
from herald.schema import (
    Check,
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
from herald.schema import _type_name as type_name
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
# image-reflector-controller (ImageRepository, ImagePolicy) and image-automation-controller
# (ImageUpdateAutomation) share one group; v1beta2 has the same fields as v1.
IMAGE_VERSIONS = ("image.toolkit.fluxcd.io/v1", "image.toolkit.fluxcd.io/v1beta2", "herald.dev/v1")
API_VERSIONS: dict[str, tuple[str, ...]] = {
    "Receiver": RECEIVER_VERSIONS,
    "Provider": NOTIFICATION_VERSIONS,
    "Alert": NOTIFICATION_VERSIONS,
    "GitRepository": ("source.toolkit.fluxcd.io/v1", "source.toolkit.fluxcd.io/v1beta2", "herald.dev/v1"),
    "Kustomization": ("kustomize.toolkit.fluxcd.io/v1", "herald.dev/v1"),
    "OCIRepository": ("source.toolkit.fluxcd.io/v1", "source.toolkit.fluxcd.io/v1beta2"),
    "ImageRepository": IMAGE_VERSIONS,
    "ImagePolicy": IMAGE_VERSIONS,
    "ImageUpdateAutomation": IMAGE_VERSIONS,
    "Secret": ("v1",),
}

# Kinds Herald can reconcile; Receivers and Alerts may name Flux's other kinds (a Flux
# manifest set often does) and are warned about rather than rejected.
RECONCILABLE_KINDS = ("GitRepository", "Kustomization")
SOURCE_KINDS = ("GitRepository", "OCIRepository")  # what a Kustomization's sourceRef may name
IMAGE_KINDS = ("ImageRepository", "ImagePolicy", "ImageUpdateAutomation")
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

_GIT_REF = Obj({"branch": string(), "tag": string(), "semver": string(), "name": string(),
                "commit": string(pattern=r"^[0-9a-f]{40}$")})
# Flux's ImageRepository providers; Herald has only `generic` (see _provider).
IMAGE_PROVIDERS = ("generic", "aws", "azure", "gcp")
METADATA_NAME_LABEL = "kubernetes.io/metadata.name"  # every namespace has it, set by Kubernetes


def _go_regex() -> Check:
    """A regular expression in Go's RE2 syntax (Flux compiles it with Go's regexp)."""

    def check(v: Any, path: str, line: int, ctx: Ctx) -> Any:
        if not isinstance(v, str):
            ctx.error(line, f"{path}: must be a regular expression string, got {type_name(v)}")
            return None
        from reconciler.images.policy import PolicyError, compile_go_regex

        try:
            compile_go_regex(v)
        except PolicyError as exc:
            ctx.error(line, f"{path}: {exc}")
            return None
        return v

    return check


def _semver_range() -> Check:
    """An ImagePolicy's range: Masterminds/semver syntax, as image-reflector-controller reads it."""

    def check(v: Any, path: str, line: int, ctx: Ctx) -> Any:
        if not isinstance(v, str):
            ctx.error(line, f"{path}: must be a semver range string such as '>=1.0.0 <2.0.0', got {type_name(v)}")
            return None
        from reconciler.images.policy import PolicyError, parse_constraints

        try:
            parse_constraints(v)
        except PolicyError as exc:
            ctx.error(line, f"{path}: {exc}")
            return None
        return v

    return check


def _kubeconfig_secret(out: dict[str, Any], loc: LocDict, path: str, ctx: Ctx) -> None:
    """kubeConfig without a secretRef (nor the refused configMapRef) would apply to Herald's own
    cluster instead of the one meant: required."""
    if not out.get("secretRef"):
        ctx.error(loc.line, f"{path}.secretRef: required field is missing (the Secret holding the kubeconfig)")


def _health_check_exprs() -> Check:
    """A Kustomization's healthCheckExprs: CEL compiled as kustomize-controller compiles it
    (reconciler.cel_health), so a bad expression is a file:line error, not a stalled rollout."""

    def check(v: Any, path: str, line: int, ctx: Ctx) -> Any:
        if not isinstance(v, list) or not all(isinstance(e, dict) for e in v):
            ctx.error(line, f"{path}: must be a list of {{apiVersion, kind, current, inProgress, failed}}, "
                            f"got {type_name(v)}")
            return None
        from reconciler.cel_health import ExprError, compile_exprs

        plain = [{k: val for k, val in e.items()} for e in v]
        try:
            compile_exprs(plain, path=path)
        except ExprError as exc:
            ctx.error(line, str(exc))
            return None
        return plain

    return check


def _image() -> Check:
    """ImageRepository.spec.image: a repository, refused with image-reflector-controller's
    own words when it holds a scheme, a tag or a digest."""

    def check(v: Any, path: str, line: int, ctx: Ctx) -> Any:
        if not isinstance(v, str):
            ctx.error(line, f"{path}: must be a string, got {type_name(v)}")
            return None
        from herald.registry.names import ImageNameError, parse_image

        try:
            parse_image(v)
        except ImageNameError as exc:
            ctx.error(line, f"{path}: {exc}")
            return None
        return v

    return check


def _provider() -> Check:
    def check(v: Any, path: str, line: int, ctx: Ctx) -> Any:
        if v == "generic":
            return v
        if isinstance(v, str) and v in IMAGE_PROVIDERS:
            ctx.error(line, f"{path}: {v!r} is not supported by Herald: it has no {v} workload identity to "
                            "log in to the registry with; use 'generic' with spec.secretRef (a "
                            "kubernetes.io/dockerconfigjson Secret)")
            return None
        ctx.error(line, f"{path}: {v!r} is not one of: {', '.join(IMAGE_PROVIDERS)}")
        return None

    return check


def _one_policy(out: dict[str, Any], loc: LocDict, path: str, ctx: Ctx) -> None:
    chosen = [k for k in ("semver", "alphabetical", "numerical") if k in out]
    if len(chosen) != 1:
        found = f"; found {', '.join(chosen)}" if chosen else ""
        ctx.error(loc.line_of(chosen[1]) if len(chosen) > 1 else loc.line,
                  f"{path}: exactly one of semver, alphabetical, numerical is required{found}")


def _digest_interval(out: dict[str, Any], loc: LocDict, path: str, ctx: Ctx) -> None:
    """Flux's two validation rules of an ImagePolicy spec, with Flux's own messages."""
    always = out.get("digestReflectionPolicy") == "Always"
    if always and "interval" not in out:
        ctx.error(loc.line_of("digestReflectionPolicy"),
                  "spec.interval must be set when spec.digestReflectionPolicy is set to 'Always'")
    elif "interval" in out and not always:
        ctx.error(loc.line_of("interval"),
                  "spec.interval is only accepted when spec.digestReflectionPolicy is set to 'Always'")


def _extract_groups(out: dict[str, Any], loc: LocDict, path: str, ctx: Ctx) -> None:
    """A `$name` in `extract` that the pattern has no group for expands to "" (Go's rule, so
    every tag would become the same empty string): valid in Flux, but surely a mistake."""
    if not out.get("extract"):
        return
    from reconciler.images.policy import compile_go_regex, template_references

    rx = compile_go_regex(out.get("pattern") or "")
    for name in template_references(out["extract"]):
        if not (name.isdigit() and int(name) <= rx.groups) and name not in rx.groupindex:
            ctx.warn(loc.line_of("extract"), f"{path}.extract: ${name} names no group of {path}.pattern, "
                                             "so it expands to an empty string")


def _exclusion_limit(out: dict[str, Any], loc: LocDict, path: str, ctx: Ctx) -> None:
    if len(out.get("exclusionList") or ()) > 25:
        ctx.error(loc.line_of("exclusionList"), f"{path}.exclusionList: at most 25 entries (Flux's limit)")


def _requirement_values(out: dict[str, Any], loc: LocDict, path: str, ctx: Ctx) -> None:
    """Kubernetes' rule for a label selector requirement's values."""
    values = out.get("values") or []
    if out["operator"] in ("In", "NotIn") and not values:
        ctx.error(loc.line_of("operator"), f"{path}.values: must list at least one value with operator "
                                           f"{out['operator']}")
    elif out["operator"] in ("Exists", "DoesNotExist") and values:
        ctx.error(loc.line_of("values"), f"{path}.values: must be empty with operator {out['operator']}")


def _commit_message() -> Check:
    """An ImageUpdateAutomation's `git.commit.messageTemplate`: Jinja2, with Flux's value names
    (reconciler.images.automation). A Go template (Flux's syntax, `{{ .Changed.Changes }}`) does
    not compile as Jinja2: refused at its line, with the way to write it, rather than a commit that
    fails at the first image update."""
    compiled = template()

    def check(v: Any, path: str, line: int, ctx: Ctx) -> Any:
        if isinstance(v, str) and re.search(r"\{\{-?\s*(?:\.|range\b|end\b|print)", v):
            ctx.error(line, f"{path}: this is a Go template (Flux's syntax); Herald renders Jinja2 with the same "
                            "names: write {{ AutomationObject }}, {% for c in Changed.Changes %}{{ c.OldValue }} -> "
                            "{{ c.NewValue }}{% endfor %}, {{ Values.cluster }}")
            return None
        return compiled(v, path, line, ctx)

    return check


_LABEL_SELECTOR = Obj({
    "matchLabels": string_map(),
    "matchExpressions": list_of(Obj(
        {"key": string(nonempty=True), "operator": string(choices=("In", "NotIn", "Exists", "DoesNotExist")),
         "values": list_of(string())},
        required=("key", "operator"), extra=_requirement_values)),
})

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
         "ref": _GIT_REF,
         "suspend": boolean(), "ignore": string(), "recurseSubmodules": boolean(),
         "include": list_of(Obj({"repository": Obj({"name": _name}, required=("name",)), "fromPath": string(),
                                 "toPath": string()}, required=("repository",))),
         "verify": Obj({"mode": string(choices=("HEAD", "head", "Tag", "TagAndHEAD")), "secretRef": _ref},
                       required=("secretRef",))},
        required=("url", "interval"),
        flux_only=("proxySecretRef", "sparseCheckout"),
        refused={
            "provider": "Flux authenticates as a cloud identity or GitHub App; Herald fetches only with "
                        "spec.secretRef",
        },
    ),
    "OCIRepository": Obj(
        {"url": string(nonempty=True, pattern=r"^oci://.+$"), "interval": duration(), "timeout": duration(),
         "ref": Obj({"tag": string(), "semver": string(), "semverFilter": string(), "digest": string()}),
         "layerSelector": Obj({"mediaType": string(), "operation": string(choices=("extract", "copy"))}),
         "secretRef": _ref, "certSecretRef": _ref, "insecure": boolean(), "suspend": boolean(),
         "provider": string(choices=("generic",))},
        required=("url", "interval"),
        flux_only=("proxySecretRef",),
        refused={
            "verify": "Flux applies only artifacts whose cosign or notation signature verifies; applying "
                      "unverified artifacts would defeat the point",
            "serviceAccountName": "Flux pulls with this ServiceAccount's image pull secrets; Herald pulls only "
                                  "with spec.secretRef",
            "ignore": "Flux leaves the files it matches out of the artifact; applying them anyway would apply "
                      "what the source excludes",
        },
    ),
    "Kustomization": Obj(
        {"sourceRef": Obj({"apiVersion": string(), "kind": string(nonempty=True),
                           "name": _name, "namespace": _name}, required=("kind", "name")),
         "path": string(), "prune": boolean(), "interval": duration(),
         "retryInterval": duration(), "targetNamespace": _name,
         "dependsOn": list_of(Obj({"name": _name, "namespace": _name}, required=("name",))),
         "wait": boolean(), "timeout": duration(), "suspend": boolean(),
         "healthChecks": list_of(Obj({"apiVersion": string(nonempty=True), "kind": string(nonempty=True),
                                      "name": _name, "namespace": _name},
                                     required=("apiVersion", "kind", "name"))),
         "healthCheckExprs": _health_check_exprs(),
         "postBuild": Obj({"substitute": string_map(),
                           "substituteFrom": list_of(Obj({"kind": string(choices=("ConfigMap", "Secret")),
                                                          "name": _name, "optional": boolean()},
                                                         required=("kind", "name"))),
                           "substituteStrategy": string(choices=("WithVariables", "Always"))}),
         "patches": list_of(Obj({"patch": string(nonempty=True),
                                 "target": Obj({k: string() for k in ("group", "version", "kind", "name", "namespace",
                                                                      "labelSelector", "annotationSelector")})},
                                required=("patch",))),
         "images": list_of(Obj({"name": string(nonempty=True), "newName": string(), "newTag": string(),
                                "digest": string()}, required=("name",))),
         "components": list_of(string(nonempty=True)),
         "ignoreMissingComponents": boolean(),
         "namePrefix": string(), "nameSuffix": string(), "serviceAccountName": _name,
         "force": boolean(),
         "deletionPolicy": string(choices=("MirrorPrune", "Delete", "WaitForTermination", "Orphan")),
         "kubeConfig": Obj({"secretRef": Obj({"name": _name, "key": string()}, required=("name",))},
                           extra=_kubeconfig_secret,
                           refused={"configMapRef": "Flux builds this kubeconfig from a cloud provider's workload "
                                                    "identity; Herald has none (put a kubeconfig in a Secret and "
                                                    "name it in secretRef)"}),
         "commonMetadata": Obj({"labels": string_map(), "annotations": string_map()}),
         "decryption": Obj({"provider": string(choices=("sops",)), "secretRef": _ref},
                           required=("provider",),
                           refused={"serviceAccountName": "Flux decrypts with this ServiceAccount's cloud KMS "
                                                          "identity; Herald has none (put age keys in secretRef)"})},
        required=("sourceRef", "interval", "prune"),
    ),
    "ImageRepository": Obj(
        {"image": _image(), "interval": duration(), "timeout": duration(), "secretRef": _ref,
         "certSecretRef": _ref, "provider": _provider(), "insecure": boolean(),
         "exclusionList": list_of(_go_regex()), "suspend": boolean(),
         "accessFrom": Obj({"namespaceSelectors": list_of(Obj({"matchLabels": string_map()}))},
                           required=("namespaceSelectors",))},
        required=("image", "interval"),
        flux_only=("proxySecretRef",),
        refused={"serviceAccountName": "Herald has no cloud workload identity and does not log in with a "
                                       "ServiceAccount's image pull secrets; ignoring it would change as whom "
                                       "Herald acts, so it is refused (name the credentials in spec.secretRef)"},
        extra=_exclusion_limit,
    ),
    "ImagePolicy": Obj(
        {"imageRepositoryRef": Obj({"name": _name, "namespace": _name}, required=("name",)),
         "policy": Obj({"semver": Obj({"range": _semver_range()}, required=("range",)),
                        "alphabetical": Obj({"order": string(choices=("asc", "desc"))}),
                        "numerical": Obj({"order": string(choices=("asc", "desc"))})},
                       extra=_one_policy),
         "filterTags": Obj({"pattern": _go_regex(), "extract": string()}, extra=_extract_groups),
         "digestReflectionPolicy": string(choices=("Never", "IfNotPresent", "Always")),
         "interval": duration(), "suspend": boolean()},
        required=("imageRepositoryRef", "policy"),
        extra=_digest_interval,
    ),
    "ImageUpdateAutomation": Obj(
        {"sourceRef": Obj({"apiVersion": string(), "kind": string(choices=("GitRepository",)),
                           "name": _name, "namespace": _name}, required=("name",)),
         "interval": duration(),
         "git": Obj(
             {"checkout": Obj({"ref": _GIT_REF}, required=("ref",)),
              "commit": Obj({"author": Obj({"name": string(), "email": string(nonempty=True)},
                                           required=("email",)),
                             "messageTemplate": _commit_message(), "messageTemplateValues": string_map()},
                            required=("author",),
                            refused={"signingKey": "Herald does not sign commits yet; pushing unsigned commits "
                                                   "where signed ones were asked for would defeat the point"}),
              "push": Obj({"branch": string()},
                          refused={"refspec": "Herald pushes to a branch (spec.git.push.branch) and does not "
                                              "follow a refspec yet; pushing elsewhere than asked would be wrong",
                                   "options": "Herald does not send push options yet; a Gerrit topic or a GitLab "
                                              "merge request asked for that way would not be made"})},
             required=("commit",)),
         "update": Obj({"path": string(), "strategy": string(choices=("Setters",))}),
         "policySelector": _LABEL_SELECTOR, "suspend": boolean()},
        # Flux's CRD leaves git optional, and its controller then fails: "source kind
        # 'GitRepository' necessitates field .spec.git". Herald says so at load time.
        required=("sourceRef", "interval", "git"),
    ),
}


# ---- the loaded configuration ----------------------------------------------------------

@dataclass
class Config:
    receivers: dict[tuple[str, str], m.Receiver] = field(default_factory=dict)
    providers: dict[tuple[str, str], m.Provider] = field(default_factory=dict)
    alerts: dict[tuple[str, str], m.Alert] = field(default_factory=dict)
    git_repositories: dict[tuple[str, str], m.GitRepository] = field(default_factory=dict)
    oci_repositories: dict[tuple[str, str], m.OCIRepository] = field(default_factory=dict)
    kustomizations: dict[tuple[str, str], m.Kustomization] = field(default_factory=dict)
    image_repositories: dict[tuple[str, str], m.ImageRepository] = field(default_factory=dict)
    image_policies: dict[tuple[str, str], m.ImagePolicy] = field(default_factory=dict)
    image_update_automations: dict[tuple[str, str], m.ImageUpdateAutomation] = field(default_factory=dict)
    secrets: dict[tuple[str, str], m.Secret] = field(default_factory=dict)
    secrets_dir: Path | None = None
    # Secrets read from the Kubernetes API (`--from-cluster`): consulted after the two above.
    cluster_secrets: Mapping[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    warnings: list[Diagnostic] = field(default_factory=list)
    # (kind, namespace, name) of objects that were defined but refused: references to them
    # are not reported again as "not found" (their own error says what is wrong).
    rejected: set[tuple[str, str, str]] = field(default_factory=set)
    # (kind, namespace, name) whose `suspend` an operator set (herald.suspensions), not the
    # configuration: `resume` lifts only these.
    operator_suspended: frozenset[tuple[str, str, str]] = frozenset()

    def by_kind(self, kind: str) -> dict[tuple[str, str], Any]:
        return {
            "Receiver": self.receivers, "Provider": self.providers, "Alert": self.alerts,
            "GitRepository": self.git_repositories, "Kustomization": self.kustomizations,
            "OCIRepository": self.oci_repositories,
            "ImageRepository": self.image_repositories, "ImagePolicy": self.image_policies,
            "ImageUpdateAutomation": self.image_update_automations, "Secret": self.secrets,
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

    def kustomizations_for(self, repo: m.GitRepository | m.OCIRepository) -> list[m.Kustomization]:
        kind = type(repo).__name__
        return [
            k for k in self.kustomizations.values()
            if k.source_ref.kind == kind
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
        git_ref = _git_ref(spec.get("ref") or {})
        if not any((git_ref.branch, git_ref.tag, git_ref.semver, git_ref.commit, git_ref.name)):
            git_ref = m.GitRef(branch="master")  # Flux's default when ref is empty
        sref = spec.get("secretRef")
        return m.GitRepository(meta=meta, url=spec["url"], ref=git_ref, interval=spec["interval"],
                               timeout=spec.get("timeout") or 60.0,
                               secret_ref=m.SecretRef(sref["name"]) if sref else None,
                               suspend=bool(spec.get("suspend")), ignore=spec.get("ignore") or "",
                               verify_mode=((spec.get("verify") or {}).get("mode") or "HEAD") if spec.get("verify")
                               else "",
                               verify_secret=((spec.get("verify") or {}).get("secretRef") or {}).get("name") or "",
                               recurse_submodules=bool(spec.get("recurseSubmodules")),
                               include=tuple(m.GitInclude(i["repository"]["name"], i.get("fromPath") or "",
                                                          i.get("toPath") or "") for i in spec.get("include") or ()))
    if kind == "OCIRepository":
        sref, cref = spec.get("secretRef"), spec.get("certSecretRef")
        return m.OCIRepository(meta=meta, url=spec["url"], ref={k: v for k, v in (spec.get("ref") or {}).items() if v},
                               layer_selector=spec.get("layerSelector") or None, interval=spec["interval"],
                               timeout=spec.get("timeout") or 60.0,
                               secret_ref=m.SecretRef(sref["name"]) if sref else None,
                               cert_secret_ref=m.SecretRef(cref["name"]) if cref else None,
                               insecure=bool(spec.get("insecure")), suspend=bool(spec.get("suspend")))
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
            wait=bool(spec.get("wait")), timeout=spec.get("timeout"), suspend=bool(spec.get("suspend")),
            health_checks=tuple(m.HealthCheckRef(api_version=h["apiVersion"], kind=h["kind"], name=h["name"],
                                                 namespace=h.get("namespace") or "")
                                for h in spec.get("healthChecks") or ()),
            health_check_exprs=tuple(spec.get("healthCheckExprs") or ()),
            post_build=spec.get("postBuild") if "postBuild" in spec else None,
            decryption="decryption" in spec,
            decryption_secret=((spec.get("decryption") or {}).get("secretRef") or {}).get("name"),
            generator={k: spec[k] for k in ("patches", "images", "components", "namePrefix", "nameSuffix",
                                            "ignoreMissingComponents") if spec.get(k) not in (None, [], "")},
            common_metadata=spec.get("commonMetadata") or None,
            service_account_name=spec.get("serviceAccountName") or "",
            kube_config_secret=((spec.get("kubeConfig") or {}).get("secretRef") or {}).get("name") or "",
            kube_config_key=((spec.get("kubeConfig") or {}).get("secretRef") or {}).get("key") or "",
            force=bool(spec.get("force")), deletion_policy=spec.get("deletionPolicy") or "MirrorPrune")
    if kind in IMAGE_KINDS:
        return _build_image_kind(kind, meta, spec)
    if kind == "Secret":
        return m.Secret(meta=meta, data=doc["__secret_data"])
    raise AssertionError(kind)


def _git_ref(ref: dict[str, Any]) -> m.GitRef:
    return m.GitRef(**{k: ref.get(k) or "" for k in ("branch", "tag", "semver", "commit", "name")})


def _secret_ref(ref: dict[str, Any] | None) -> m.SecretRef | None:
    return m.SecretRef(ref["name"]) if ref else None


def _build_image_kind(kind: str, meta: m.Meta, spec: dict[str, Any]) -> Any:
    if kind == "ImageRepository":
        interval = spec["interval"]
        access = spec.get("accessFrom")
        return m.ImageRepository(
            meta=meta, image=spec["image"], interval=interval,
            timeout=max(1.0, spec.get("timeout") or interval),  # Flux's GetTimeout
            secret_ref=_secret_ref(spec.get("secretRef")), cert_secret_ref=_secret_ref(spec.get("certSecretRef")),
            provider=spec.get("provider") or "generic", insecure=bool(spec.get("insecure")),
            # Flux's GetExclusionList: an empty list is the default too.
            exclusion_list=tuple(spec.get("exclusionList") or m.DEFAULT_EXCLUSION_LIST),
            suspend=bool(spec.get("suspend")),
            access_from=tuple(s.get("matchLabels") or {} for s in access["namespaceSelectors"] or ())
            if access else None)
    if kind == "ImagePolicy":
        ref, choice = spec["imageRepositoryRef"], spec["policy"]
        which = next(k for k in ("semver", "alphabetical", "numerical") if k in choice)
        flt = spec.get("filterTags")
        return m.ImagePolicy(
            meta=meta,
            image_repository_ref=m.ResourceRef(kind="ImageRepository", name=ref["name"],
                                               namespace=ref.get("namespace")),
            policy=m.TagPolicy(kind=which, range=(choice[which] or {}).get("range") or "",
                               order=(choice[which] or {}).get("order") or "asc"),
            filter_tags=m.TagFilter(pattern=flt.get("pattern") or "", extract=flt.get("extract") or "")
            if flt is not None else None,
            digest_reflection_policy=spec.get("digestReflectionPolicy") or "Never",
            interval=spec.get("interval"), suspend=bool(spec.get("suspend")))
    s, git = spec["sourceRef"], spec["git"]
    commit, push, update = git["commit"], git.get("push") or {}, spec.get("update") or {}
    checkout = git.get("checkout")
    selector = spec.get("policySelector") or {}
    return m.ImageUpdateAutomation(
        meta=meta,
        source_ref=m.ResourceRef(kind=s.get("kind") or "GitRepository", name=s["name"], namespace=s.get("namespace"),
                                 api_version=s.get("apiVersion") or ""),
        interval=spec["interval"],
        author=m.CommitAuthor(email=commit["author"]["email"], name=commit["author"].get("name") or ""),
        checkout_ref=_git_ref(checkout["ref"]) if checkout else None,
        message_template=commit.get("messageTemplate") or "",
        message_template_values=commit.get("messageTemplateValues") or {},
        push_branch=push.get("branch") or "", push_refspec=push.get("refspec") or "",
        push_options=push.get("options") or {},
        update_path=update.get("path") or "./", update_strategy=update.get("strategy") or "Setters",
        policy_selector=m.LabelSelector(
            match_labels=selector.get("matchLabels") or {},
            match_expressions=tuple(m.LabelRequirement(r["key"], r["operator"], tuple(r.get("values") or ()))
                                    for r in selector.get("matchExpressions") or ())),
        suspend=bool(spec.get("suspend")))


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


def _field_lines(spec: Any, here: str = "spec") -> dict[str, int]:
    """Where each field and item of `spec` is, at every depth: "spec.x", "spec.x.y",
    "spec.x[i]", "spec.x[i].y"."""
    lines: dict[str, int] = {}
    if isinstance(spec, LocDict):
        for key, value in spec.items():
            lines[f"{here}.{key}"] = spec.line_of(key)
            lines.update(_field_lines(value, f"{here}.{key}"))
    elif isinstance(spec, LocList):
        for i, value in enumerate(spec):
            lines[f"{here}[{i}]"] = spec.line_of(i)
            lines.update(_field_lines(value, f"{here}[{i}]"))
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
            # ImageRepositories are scanned (the receiver asks on herald.images), not reconciled.
            if res.kind not in (*RECONCILABLE_KINDS, "ImageRepository"):
                err(r, f"spec.resources: Herald does not reconcile {res.kind}; requests for it are ignored",
                    "warning", at=item)
            # Names are looked up for the kinds Herald loads (the image kinds too: Flux allows a
            # Receiver to name them); other Flux kinds have no table to look in.
            if (res.kind in (*RECONCILABLE_KINDS, *IMAGE_KINDS) and res.name != "*"
                    and (res.namespace or r.meta.namespace, res.name) not in cfg.by_kind(res.kind)
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
    for g in cfg.git_repositories.values():
        for i, inc in enumerate(g.include):
            if (g.meta.namespace, inc.repository) not in cfg.git_repositories and not rejected(
                    "GitRepository", g.meta.namespace, inc.repository):
                err(g, f"spec.include[{i}].repository: GitRepository {g.meta.namespace}/{inc.repository} not found",
                    at=f"spec.include[{i}]")
            elif inc.repository == g.meta.name:
                err(g, f"spec.include[{i}].repository: a GitRepository cannot include itself", at=f"spec.include[{i}]")
    for k in cfg.kustomizations.values():
        ns = k.source_ref.namespace or k.meta.namespace
        if k.source_ref.kind not in SOURCE_KINDS:
            err(k, f"spec.sourceRef.kind: Herald reconciles from a GitRepository or an OCIRepository, not "
                   f"{k.source_ref.kind}", at="spec.sourceRef.kind")
        elif (ns, k.source_ref.name) not in cfg.by_kind(k.source_ref.kind) and not rejected(
                k.source_ref.kind, ns, k.source_ref.name):
            err(k, f"spec.sourceRef: {k.source_ref.kind} {ns}/{k.source_ref.name} not found",
                at="spec.sourceRef.name")
        for i, d in enumerate(k.depends_on):
            dns = d.namespace or k.meta.namespace
            if (dns, d.name) not in cfg.kustomizations and not rejected("Kustomization", dns, d.name):
                err(k, f"spec.dependsOn: Kustomization {dns}/{d.name} not found", at=f"spec.dependsOn[{i}]")

    for repo in cfg.image_repositories.values():
        for field_name, ref in (("secretRef", repo.secret_ref), ("certSecretRef", repo.cert_secret_ref)):
            if (ref and cfg.secret(repo.meta.namespace, ref.name) is None
                    and not rejected("Secret", repo.meta.namespace, ref.name)):
                err(repo, f"spec.{field_name}: Secret {repo.meta.namespace}/{ref.name} not found",
                    at=f"spec.{field_name}.name")
    for p in cfg.image_policies.values():
        ref = p.image_repository_ref
        ns = ref.namespace or p.meta.namespace
        found = cfg.image_repositories.get((ns, ref.name))
        if found is None:
            if not rejected("ImageRepository", ns, ref.name):
                err(p, f"spec.imageRepositoryRef: ImageRepository {ns}/{ref.name} not found",
                    at="spec.imageRepositoryRef.name")
        elif ns != p.meta.namespace and (denied := access_denied(found, p.meta.namespace)):
            err(p, f"spec.imageRepositoryRef: {denied}", at="spec.imageRepositoryRef")
    for a in cfg.image_update_automations.values():
        ns = a.source_ref.namespace or a.meta.namespace
        source = cfg.git_repositories.get((ns, a.source_ref.name))
        if source is None:
            if not rejected("GitRepository", ns, a.source_ref.name):
                err(a, f"spec.sourceRef: GitRepository {ns}/{a.source_ref.name} not found",
                    at="spec.sourceRef.name")
        elif not a.push_branch and not (a.checkout_ref or source.ref).branch:
            # image-automation-controller's check, in its words: it pushes to a branch.
            err(a, "spec.git.push: push spec not provided, and cannot be inferred from .spec.git.checkout.ref "
                   "or GitRepository .spec.ref", at="spec.git")
        if a.checkout_ref and a.checkout_ref.semver:
            from reconciler.git import GitError, parse_semver_range

            try:
                parse_semver_range(a.checkout_ref.semver)
            except GitError as exc:
                # GitError names GitRepository's field; this one is the checkout's.
                err(a, f"spec.git.checkout.ref.semver: {str(exc).replace(' in spec.ref.semver', '')}",
                    at="spec.git.checkout.ref.semver")


def access_denied(repo: m.ImageRepository, namespace: str) -> str:
    """Why an ImagePolicy in `namespace` may not use `repo` (another namespace's), or "".

    Flux's ACL (fluxcd/pkg/runtime/acl): allowed when one of `accessFrom.namespaceSelectors`
    matches the policy's namespace's labels. Herald reads no Namespace objects, so the one
    label it can match is `kubernetes.io/metadata.name`, which Kubernetes sets on every
    namespace to its name; an empty selector matches every namespace. A selector on any other
    label cannot be verified and does not match (an ACL is not guessed open).
    """
    where = f"ImageRepository '{repo.meta.namespace}/{repo.meta.name}'"
    if repo.access_from is None:
        return f"{where} can't be accessed due to missing ACL labels on 'accessFrom'"
    if any(all(k == METADATA_NAME_LABEL and v == namespace for k, v in sel.items()) for sel in repo.access_from):
        return ""
    unknown = sorted({k for sel in repo.access_from for k in sel if k != METADATA_NAME_LABEL})
    hint = (f" (Herald matches a namespace by its {METADATA_NAME_LABEL} label only, not by "
            f"{', '.join(unknown)})") if unknown else ""
    return f"{where} can't be accessed due to ACL labels mismatch on namespace '{namespace}'{hint}"


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


def check(paths: Iterable[str | Path], secrets_dir: str | Path | None = None,
          extra: Iterable[Document] = ()) -> tuple[Config, list[Diagnostic]]:
    """Read and check the configuration; return what could be built and every diagnostic.
    `extra`: documents from elsewhere (a Kustomization's render: herald.fleet), after the files."""
    out: list[Diagnostic] = []
    cfg = Config(secrets_dir=Path(secrets_dir) if secrets_dir else None)
    paths = list(paths)
    rendered = list(extra)
    docs = read_documents(paths, out)
    if rendered:
        # A render that holds an object of the files (the bootstrap gotk-sync.yaml, which its own
        # Kustomization applies from Git) supersedes it: Git is what Flux follows after bootstrap.
        superseded = {_identity(d) for d in rendered} - {None}
        docs = rendered + [d for d in docs if _identity(d) not in superseded]
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
