"""GitHub Container Registry (ghcr.io) through GitHub's package webhooks.

GHCR has no webhook system of its own: a container publish arrives as an ordinary GitHub
delivery (`X-GitHub-Event: package` or `registry_package`) from a repository, organisation or
App webhook. Authenticity is therefore GitHub's: `X-Hub-Signature-256`, the HMAC-SHA256 of
the raw body under the Receiver's token or a rotation key, and the legacy SHA-1
`X-Hub-Signature` only with spec.insecureAllowSHA1 (`github.verify`, reused as is).

Event: the `X-GitHub-Event` value, `package` or `registry_package`, so spec.events is written
as for the `github` type. The payload's `action` is not the event; it selects instead: only
`published` and `updated` (a new image or tag) ask for a reconcile, any other action is a
valid delivery answered with an `ignore` reason. Likewise ignored: packages that are not
containers (npm, Maven, ... : `package_type` and `registry.type` are both something other
than `container`/`docker`; `ecosystem` is not trusted, GitHub's examples put `docker` there
for npm packages too) and every other GitHub event. `ping` is answered as a ping.

Image: `package_version.package_url` (`ghcr.io/<owner>/<name>:<tag>`), with the tag taken from
`container_metadata.tag.name` when the URL has none; an untagged version is named by digest
(`ghcr.io/<owner>/<name>@sha256:...`). Without `package_url`: `ghcr.io/<owner.login>/<name>`.
The case is kept as GitHub sends it. Digest: the first well-formed `sha256:<64 hex>` among
`container_metadata.tag.digest`, `package_version.version` and `package_version.name`.
Delivery id: `X-GitHub-Delivery`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from receiver.types import github
from receiver.types.base import (
    BadDelivery,
    Hook,
    Keys,
    ReceiverType,
    json_payload,
    text,
)

HOST = "ghcr.io"
PACKAGE_EVENTS = ("package", "registry_package")
ACTIONS = ("published", "updated")
CONTAINER_KINDS = ("container", "docker")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def verify(headers: Mapping[str, str], body: bytes, keys: Keys) -> bool:
    try:
        return github.verify(headers, body, keys)
    except (UnicodeError, TypeError, AttributeError):
        return False


def _split_reference(reference: str) -> tuple[str, str]:
    """`ghcr.io/o/n:v1` -> ("ghcr.io/o/n", "v1"); a `@digest` suffix is dropped."""
    name = reference.strip().partition("@")[0]
    colon = name.rfind(":")
    if colon > name.rfind("/"):
        return name[:colon], name[colon + 1:]
    return name, ""


def parse(headers: Mapping[str, str], body: bytes) -> Hook:
    event = headers.get("X-GitHub-Event", "").strip()
    if not event:
        raise BadDelivery("missing X-GitHub-Event header")
    delivery_id = TYPE.delivery_id(headers)
    data = json_payload(headers, body)
    if event == "ping":
        return Hook(event=event, delivery_id=delivery_id, ping=True)
    if event not in PACKAGE_EVENTS:
        return Hook(event=event, delivery_id=delivery_id,
                    ignore=f"GitHub event {event[:64]!r} is not a package event")

    package = data.get(event)
    if not isinstance(package, Mapping):
        raise BadDelivery(f"{event} payload: '{event}' is missing or not an object")
    action = text(data, "action").strip()
    if not action:
        raise BadDelivery(f"{event} payload: 'action' is missing or not a non-empty string")
    kinds = (text(package, "package_type").lower(), text(package, "registry", "type").lower())
    if not any(k in CONTAINER_KINDS for k in kinds):
        kind = kinds[0] or kinds[1] or "unknown"
        return Hook(event=event, delivery_id=delivery_id,
                    ignore=f"{event} {action[:32]}: a {kind[:32]} package, not a container image")
    if action.lower() not in ACTIONS:
        return Hook(event=event, delivery_id=delivery_id,
                    ignore=f"{event} {action[:32]}: only published and updated images are acted on")

    version = package.get("package_version")
    if not isinstance(version, Mapping):
        raise BadDelivery(f"{event} payload: '{event}.package_version' is missing or not an object")
    candidates = (text(version, "container_metadata", "tag", "digest"),
                  text(version, "version"), text(version, "name"))
    digest = next((c for c in (c.strip().lower() for c in candidates) if _DIGEST.fullmatch(c)), "")

    name, tag = _split_reference(text(version, "package_url"))
    if not name:
        owner, package_name = text(package, "owner", "login"), text(package, "name")
        name = f"{HOST}/{owner}/{package_name}" if owner and package_name else ""
    tag = text(version, "container_metadata", "tag", "name").strip() or tag
    if name and tag:
        image = f"{name}:{tag}"
    elif name and digest:
        image = f"{name}@{digest}"
    else:
        image = name
    return Hook(event=event, delivery_id=delivery_id, image=image, digest=digest)


TYPE = ReceiverType(name="ghcr", verify=verify, parse=parse, delivery_headers=("X-GitHub-Delivery",))
