"""The configuration kinds, as typed objects.

Field names mirror Flux's CRDs (snake_case here, camelCase in YAML) so that a reader who knows
Flux can map one to the other at a glance. Parsing and validation live in `herald.config`.
"""

from __future__ import annotations

from dataclasses import dataclass, field


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
class GitRepository:
    meta: Meta
    url: str
    ref: GitRef = GitRef(branch="master")
    interval: float = 60.0
    timeout: float = 60.0
    secret_ref: SecretRef | None = None
    suspend: bool = False


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


@dataclass(frozen=True)
class Secret:
    meta: Meta
    data: dict[str, str]  # decoded; values never logged
