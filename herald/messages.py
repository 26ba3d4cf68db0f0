"""The two messages the components exchange on the bus.

Their JSON shape is the contract in ARCHITECTURE.md; the event is Flux's event shape so that
Alerts written for Flux's notification-controller apply to Herald unchanged.
"""

from __future__ import annotations

import json
import random
import socket
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

RECONCILE_QUEUE = "herald.reconcile"
PLAN_QUEUE = "herald.plan"  # pull requests: plan, never apply (reconciler.plans)
IMAGE_QUEUE = "herald.images"  # registry pushes: scan ImageRepositories, update Git (reconciler.images)
EVENTS_QUEUE = "herald.events"
NOTIFY_QUEUE = "herald.notifications"

SEVERITY_INFO = "info"
SEVERITY_ERROR = "error"

STORY_KEY = "herald.dev/story"
"""Event metadata: the story an event belongs to beyond its own object and revision. An image
update (`image-update:<ns>/<automation>@<commit>`) is one story from the registry push to the
rollout: the policy that resolved a new tag, the automation's commit, and the Kustomizations
applying that commit. Threaded providers (Slack) keep a story in one thread."""
STORY_TITLE_KEY = "herald.dev/story-title"
"""Event metadata: what the story is about, in a few words (`ghcr.io/acme/web 1.4.2 → 1.5.0`)."""
ROUTING_METADATA = frozenset({"commit_status", STORY_KEY, STORY_TITLE_KEY})
"""Metadata that steers delivery and is not shown as a fact of the event."""

API_VERSIONS = {
    "GitRepository": "source.toolkit.fluxcd.io/v1",
    "Kustomization": "kustomize.toolkit.fluxcd.io/v1",
    "Receiver": "notification.toolkit.fluxcd.io/v1",
    "ImageRepository": "image.toolkit.fluxcd.io/v1",
    "ImagePolicy": "image.toolkit.fluxcd.io/v1",
    "ImageUpdateAutomation": "image.toolkit.fluxcd.io/v1",
}


class MessageError(ValueError):
    """A message on the bus that does not have the contract's shape."""


def new_id() -> str:
    """A random (version 4) UUID, as `str(uuid.uuid4())` but without a system call.

    `uuid4` reads the kernel's random source for every id, and that call gives up the GIL:
    on the receiver's request path, in a process whose other threads are busy, getting it
    back can cost a thread switch. An id only has to be unique, not unguessable: `random`'s
    generator (seeded from the kernel at start and again in every forked child) gives 122
    random bits just the same.
    """
    n = random.getrandbits(128) & _UUID_CLEAR | _UUID_V4
    h = f"{n:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_UUID_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))  # the version and variant bits
_UUID_V4 = (4 << 76) | (0x8000 << 48)  # version 4, RFC 4122 variant


def utc_now() -> str:
    """RFC 3339 with milliseconds and a Z, as Kubernetes and the contract write times."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _decode(body: bytes, what: str) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MessageError(f"{what}: not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise MessageError(f"{what}: expected a JSON object")
    return data


def _require_str(data: dict[str, Any], key: str, what: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise MessageError(f"{what}: field {key!r} must be a non-empty string")
    return value


@dataclass(frozen=True)
class ObjectRef:
    kind: str
    name: str
    namespace: str = "default"

    def __str__(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}"


@dataclass
class ReconcileRequest:
    """Asks the reconciler to bring one GitRepository or Kustomization up to date.

    `origin` says what caused the request (a webhook delivery, the interval timer) so the
    reconciler can wait for a revision the remote does not serve yet and so the events can
    be traced back to the delivery that caused them.
    """

    kind: str
    name: str
    namespace: str = "default"
    reason: str = "webhook"
    origin: dict[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=new_id)
    requestedAt: str = field(default_factory=utc_now)

    @property
    def target(self) -> ObjectRef:
        return ObjectRef(self.kind, self.name, self.namespace)

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "id": self.id,
                "kind": self.kind,
                "name": self.name,
                "namespace": self.namespace,
                "requestedAt": self.requestedAt,
                "reason": self.reason,
                "origin": self.origin,
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_json(cls, body: bytes) -> ReconcileRequest:
        what = "reconcile request"
        data = _decode(body, what)
        origin = data.get("origin") or {}
        if not isinstance(origin, dict):
            raise MessageError(f"{what}: field 'origin' must be an object")
        return cls(
            kind=_require_str(data, "kind", what),
            name=_require_str(data, "name", what),
            namespace=data.get("namespace") or "default",
            reason=data.get("reason") or "webhook",
            origin=origin,
            id=data.get("id") or str(uuid.uuid4()),
            requestedAt=data.get("requestedAt") or utc_now(),
        )


@dataclass
class Event:
    """Flux's event: what happened to one object, with severity, reason and metadata."""

    involvedObject: dict[str, str]
    severity: str
    reason: str
    message: str
    metadata: dict[str, str] = field(default_factory=dict)
    timestamp: str = field(default_factory=utc_now)
    reportingController: str = "herald-reconciler"
    reportingInstance: str = field(default_factory=socket.gethostname)

    @classmethod
    def for_object(
        cls,
        kind: str,
        name: str,
        namespace: str,
        *,
        severity: str,
        reason: str,
        message: str,
        metadata: dict[str, str] | None = None,
    ) -> Event:
        return cls(
            involvedObject={
                "kind": kind,
                "name": name,
                "namespace": namespace,
                "apiVersion": API_VERSIONS.get(kind, "herald.dev/v1"),
            },
            severity=severity,
            reason=reason,
            message=message,
            metadata=dict(metadata or {}),
        )

    @property
    def object_ref(self) -> ObjectRef:
        o = self.involvedObject
        return ObjectRef(o.get("kind", ""), o.get("name", ""), o.get("namespace", "default"))

    @property
    def revision(self) -> str:
        return self.metadata.get("revision", "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "involvedObject": self.involvedObject,
            "severity": self.severity,
            "timestamp": self.timestamp,
            "reason": self.reason,
            "message": self.message,
            "metadata": self.metadata,
            "reportingController": self.reportingController,
            "reportingInstance": self.reportingInstance,
        }

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":")).encode()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Event:
        what = "event"
        obj = data.get("involvedObject")
        if not isinstance(obj, dict) or not obj.get("kind") or not obj.get("name"):
            raise MessageError(f"{what}: involvedObject needs kind and name")
        metadata = data.get("metadata") or {}
        if not isinstance(metadata, dict):
            raise MessageError(f"{what}: metadata must be an object")
        return cls(
            involvedObject={k: str(v) for k, v in obj.items()},
            severity=_require_str(data, "severity", what),
            reason=_require_str(data, "reason", what),
            message=str(data.get("message", "")),
            metadata={str(k): str(v) for k, v in metadata.items()},
            timestamp=data.get("timestamp") or utc_now(),
            reportingController=data.get("reportingController") or "herald-reconciler",
            reportingInstance=data.get("reportingInstance") or "",
        )

    @classmethod
    def from_json(cls, body: bytes) -> Event:
        return cls.from_dict(_decode(body, "event"))
