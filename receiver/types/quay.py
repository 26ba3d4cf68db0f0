"""Quay (quay.io and Red Hat Quay) repository notifications sent to a webhook.

Authenticity: none in the request. Quay adds no signature, token or event header; its docs
prove origin with Quay's TLS client certificate, which belongs to the TLS terminator, not to
this module. So the Receiver's URL is the secret and `verify` accepts every delivery, as
Flux's `quay` receiver does.

Payload: the "Repository Push" notification, with `docker_url` (e.g.
`quay.io/mynamespace/repository`) and `updated_tags` (a list of tags), both required. As Quay
names no event on the wire, a push is the fixed event `repo_push` (Quay's own name for that
notification kind). A "Vulnerability Detected" notification (a `vulnerability` object and
`tags` instead of `updated_tags`) is accepted as the event `vulnerability_found`, so a
Receiver can leave it out of spec.events; any other shape without `updated_tags` is a 400.

Image: `<docker_url>:<first tag>` (the image is informational: one reference is enough);
`<docker_url>` alone when the tag list is empty. Quay gives no digest and no delivery id.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from receiver.types.base import BadDelivery, Hook, Keys, ReceiverType, json_object, text

PUSH = "repo_push"
VULNERABILITY = "vulnerability_found"


def verify(headers: Mapping[str, str], body: bytes, keys: Keys) -> bool:
    """Always True: the secret URL is the only proof a Quay webhook gives."""
    return True


def _tags(value: Any, field: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise BadDelivery(f"Quay payload: '{field}' must be a list of strings")
    return [t for t in value if t]


def parse(headers: Mapping[str, str], body: bytes) -> Hook:
    data = json_object(body)
    docker_url = text(data, "docker_url")
    if not docker_url:
        raise BadDelivery("Quay payload: 'docker_url' is missing or not a non-empty string")
    if "updated_tags" in data:
        event, tags = PUSH, _tags(data["updated_tags"], "updated_tags")
    elif isinstance(data.get("vulnerability"), Mapping):
        event, tags = VULNERABILITY, _tags(data.get("tags", []), "tags")
    else:
        raise BadDelivery("Quay payload: 'updated_tags' is missing (not a repository push)")
    return Hook(event=event, image=f"{docker_url}:{tags[0]}" if tags else docker_url)


TYPE = ReceiverType(name="quay", verify=verify, parse=parse, delivery_headers=())
