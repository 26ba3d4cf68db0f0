"""The configuration kinds, as typed objects.

Field names mirror Flux's CRDs (snake_case here, camelCase in YAML) so that a reader who knows
Flux can map one to the other at a glance. Parsing and validation live in `herald.config`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Meta:
    name: str
    namespace: str = "default"
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    source: str = ""  # "file:line" of the document, for messages that point users at it
    # Line of each spec field and list item ("spec.sourceRef", "spec.dependsOn[0]"), so that a
    # message about a reference points at the reference, not at the top of the document.
    field_lines: dict[str, int] = field(default_factory=dict, compare=False, repr=False)

    def line_of(self, where: str) -> int:
        return self.field_lines.get(where, 0)

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)


@dataclass(frozen=True)
class SecretRef:
    name: str


@dataclass(frozen=True)
class ResourceRef:
    """A Receiver's `resources` entry or a Kustomization's `sourceRef`."""

    kind: str
    name: str
    namespace: str | None = None  # None: the referring object's namespace
    api_version: str = ""
    match_labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RateLimit:
    """A token bucket: `requests` deliveries per `interval` seconds, bursts up to `requests`."""

    requests: int
    interval: float


@dataclass(frozen=True)
class Receiver:
    meta: Meta
    type: str
    secret_ref: SecretRef
    resources: tuple[ResourceRef, ...]
    events: tuple[str, ...] = ()
    suspend: bool = False
    # Herald's own fields (Flux ignores them, Flux manifests need none of them):
    rate_limit: RateLimit | None = None
    insecure_allow_sha1: bool = False  # accept GitHub's legacy X-Hub-Signature (sha1)
    plan_forks: bool = False  # plan pull requests from forks (their head is someone else's code)


@dataclass(frozen=True)
class Provider:
    meta: Meta
    type: str
    address: str = ""
    channel: str = ""
    username: str = ""
    secret_ref: SecretRef | None = None
    timeout: float = 15.0  # seconds
    proxy: str = ""
    suspend: bool = False
    cert_secret_ref: SecretRef | None = None  # its `ca.crt` is trusted for the address
    # Herald's own: the email provider's envelope (`from` in YAML) and a message template.
    sender: str = ""
    to: tuple[str, ...] = ()
    cc: tuple[str, ...] = ()
    template: str = ""


@dataclass(frozen=True)
class EventSource:
    kind: str
    name: str  # may be "*"
    namespace: str | None = None  # None: the Alert's namespace
    match_labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Alert:
    meta: Meta
    provider_ref: str
    event_sources: tuple[EventSource, ...]
    event_severity: str = "info"
    inclusion_list: tuple[str, ...] = ()
    exclusion_list: tuple[str, ...] = ()
    event_metadata: dict[str, str] = field(default_factory=dict)
    summary: str = ""
    suspend: bool = False
    template: str = ""  # Herald's own: Jinja2 for the message text (notifier/templates.py)
    include_plans: bool = False  # Herald's own: pull-request plans reach chat/email/webhooks too


@dataclass(frozen=True)
class GitRef:
    branch: str = ""
    tag: str = ""
    semver: str = ""
    commit: str = ""
    name: str = ""


@dataclass(frozen=True)
class GitInclude:
    """A GitRepository's `spec.include` entry: another GitRepository's `from_path` copied to
    `to_path` of this one's tree."""

    repository: str  # a GitRepository of the same namespace
    from_path: str = ""  # "" for its root
    to_path: str = ""  # "" for the included repository's name


@dataclass(frozen=True)
class GitRepository:
    meta: Meta
    url: str
    ref: GitRef = GitRef(branch="master")
    interval: float = 60.0
    timeout: float = 60.0
    secret_ref: SecretRef | None = None
    suspend: bool = False
    ignore: str = ""  # spec.ignore: gitignore patterns added to the repository's .sourceignore files
    verify_mode: str = ""  # spec.verify.mode (HEAD, Tag, TagAndHEAD); "" when commits are not verified
    verify_secret: str = ""  # spec.verify.secretRef: the public keys (PGP key rings, *.sshpub)
    recurse_submodules: bool = False  # spec.recurseSubmodules: submodules' trees are part of the source
    include: tuple[GitInclude, ...] = ()


@dataclass(frozen=True)
class OCIRepository:
    """Flux's OCIRepository: a Flux artifact (`flux push artifact`) in an OCI registry, as a
    Kustomization's source (reconciler.oci_source)."""

    meta: Meta
    url: str  # oci://host/repository
    ref: dict[str, str] = field(default_factory=dict)  # tag | semver (+ semverFilter) | digest, as written
    layer_selector: dict[str, str] | None = None  # mediaType, operation
    interval: float = 60.0
    timeout: float = 60.0
    secret_ref: SecretRef | None = None  # a kubernetes.io/dockerconfigjson Secret
    cert_secret_ref: SecretRef | None = None  # ca.crt, tls.crt, tls.key
    insecure: bool = False  # plain HTTP
    suspend: bool = False


@dataclass(frozen=True)
class HealthCheckRef:
    """An object a Kustomization's `healthChecks` waits for (it need not be one it applies)."""

    api_version: str
    kind: str
    name: str
    namespace: str = ""  # "" for a cluster-scoped object

    def ref(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}" if self.namespace else f"{self.kind}/{self.name}"


@dataclass(frozen=True)
class Kustomization:
    meta: Meta
    source_ref: ResourceRef
    path: str = "./"
    prune: bool = False
    interval: float = 600.0
    retry_interval: float | None = None
    target_namespace: str = ""
    depends_on: tuple[ResourceRef, ...] = ()
    wait: bool = False
    timeout: float | None = None
    suspend: bool = False
    health_checks: tuple[HealthCheckRef, ...] = ()
    # `spec.healthCheckExprs` as written (checked at load by reconciler.cel_health; compiled there)
    health_check_exprs: tuple[dict[str, Any], ...] = ()
    post_build: dict[str, Any] | None = None  # `spec.postBuild` as written (reconciler.postbuild)
    decryption: bool = False  # `spec.decryption` with provider sops
    decryption_secret: str | None = None  # its secretRef: the keys (`*.agekey`)
    # What Flux's generator writes into the build's kustomization.yaml, as written: patches,
    # images, components, namePrefix, nameSuffix, ignoreMissingComponents (reconciler.generate).
    generator: dict[str, Any] = field(default_factory=dict)
    common_metadata: dict[str, Any] | None = None  # labels/annotations set on every object after the build
    service_account_name: str = ""  # apply as system:serviceaccount:<namespace>:<this> (impersonation)
    kube_config_secret: str = ""  # spec.kubeConfig.secretRef: apply to the cluster its kubeconfig names
    kube_config_key: str = ""  # its key; "" for Flux's `value` / `value.yaml`
    force: bool = False  # recreate an object whose immutable fields changed
    deletion_policy: str = "MirrorPrune"  # what deleting the Kustomization does to its objects


@dataclass(frozen=True)
class Secret:
    meta: Meta
    data: dict[str, str]  # decoded; values never logged


# ---- image automation (Flux's image.toolkit.fluxcd.io kinds) -------------------------------

@dataclass(frozen=True)
class LabelRequirement:
    """One `matchExpressions` entry of a Kubernetes label selector."""

    key: str
    operator: str  # In, NotIn, Exists, DoesNotExist
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator == "In":
            return labels.get(self.key) in self.values
        if self.operator == "NotIn":  # as in Kubernetes: an object without the label matches
            return labels.get(self.key) not in self.values
        if self.operator == "Exists":
            return self.key in labels
        return self.key not in labels  # DoesNotExist


@dataclass(frozen=True)
class LabelSelector:
    """A Kubernetes label selector; the empty one selects everything (Flux's default for an
    ImageUpdateAutomation's `policySelector`)."""

    match_labels: dict[str, str] = field(default_factory=dict)
    match_expressions: tuple[LabelRequirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return (all(labels.get(k) == v for k, v in self.match_labels.items())
                and all(r.matches(labels) for r in self.match_expressions))


DEFAULT_EXCLUSION_LIST = ("^.*\\.sig$",)
"""Flux's default `exclusionList`: cosign signature tags are not images to deploy."""


@dataclass(frozen=True)
class ImageRepository:
    """A container image repository whose tags are scanned (`image` as written: no scheme,
    tag or digest; `herald.registry.parse_image` gives its canonical name)."""

    meta: Meta
    image: str
    interval: float
    timeout: float  # Flux's default is the interval, and never less than a second
    secret_ref: SecretRef | None = None  # a kubernetes.io/dockerconfigjson Secret
    cert_secret_ref: SecretRef | None = None  # tls.crt/tls.key and/or ca.crt
    provider: str = "generic"  # the only one Herald has: no cloud workload identity here
    insecure: bool = False  # plain http to the registry
    exclusion_list: tuple[str, ...] = DEFAULT_EXCLUSION_LIST  # Go RE2 syntax, as written
    suspend: bool = False
    # Which namespaces' ImagePolicies may use it (`accessFrom.namespaceSelectors[].matchLabels`,
    # any one matching). None: only ImagePolicies of its own namespace, as in Flux.
    access_from: tuple[dict[str, str], ...] | None = None


@dataclass(frozen=True)
class TagPolicy:
    """How an ImagePolicy orders the tags it keeps: exactly one of Flux's three policies."""

    kind: str  # "semver", "alphabetical" or "numerical"
    range: str = ""  # semver: a Masterminds/semver constraint, e.g. ">=1.0.0 <2.0.0"
    order: str = "asc"  # alphabetical, numerical: asc picks the last in ascending order


@dataclass(frozen=True)
class TagFilter:
    """`filterTags`: keep the tags `pattern` (Go RE2 syntax) matches; with `extract`, order
    them by the expansion of `extract` (`$name`, `${name}`, `$1`) instead of the whole tag."""

    pattern: str = ""
    extract: str = ""


@dataclass(frozen=True)
class ImagePolicy:
    meta: Meta
    image_repository_ref: ResourceRef
    policy: TagPolicy
    filter_tags: TagFilter | None = None
    digest_reflection_policy: str = "Never"  # or IfNotPresent, Always
    interval: float | None = None  # only with Always: how often the digest is refreshed
    suspend: bool = False


@dataclass(frozen=True)
class CommitAuthor:
    email: str
    name: str = ""  # optional in Flux's v1 API


@dataclass(frozen=True)
class ImageUpdateAutomation:
    meta: Meta
    source_ref: ResourceRef  # a GitRepository
    interval: float
    author: CommitAuthor
    checkout_ref: GitRef | None = None  # None: the GitRepository's own spec.ref
    message_template: str = ""  # a Go text/template, as in Flux
    message_template_values: dict[str, str] = field(default_factory=dict)
    push_branch: str = ""  # "": the checkout branch
    push_refspec: str = ""
    push_options: dict[str, str] = field(default_factory=dict)
    update_path: str = "./"
    update_strategy: str = "Setters"
    policy_selector: LabelSelector = LabelSelector()  # the empty selector: every ImagePolicy
    suspend: bool = False
