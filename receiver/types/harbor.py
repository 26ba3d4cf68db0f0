"""Harbor project webhooks, in either of Harbor's payload formats.

Authenticity: Harbor signs nothing. A webhook policy can carry an "Auth Header" that Harbor
sends verbatim as `Authorization`; the Receiver requires it to equal its token (or one of
its rotation keys), compared in constant time, as Flux's `harbor` receiver does. A policy
without the header can therefore not deliver here.

Payload formats (the policy chooses one):
* Default (`Content-Type: application/json`): `type` (e.g. `PUSH_ARTIFACT`) and the object
  `event_data`. No delivery id.
* CloudEvents, structured mode (`Content-Type: application/cloudevents+json`): `type` (e.g.
  `harbor.artifact.pushed`), `id` (the delivery id) and the object `data`, which has the
  default format's `event_data` shape.
A body with `event_data` is read as the default format and one with `specversion` (and no
`event_data`) as a CloudEvent, whatever the content type says (a proxy may rewrite it).

The event is the body's `type`, as Harbor writes it. The image and digest come from the first
entry of `resources` (Harbor sends one per artifact event; the image is informational):
`resource_url` as given, which is `host/project/repo:tag`, or `host/project/repo@sha256:...`
for an artifact pushed by digest (Harbor then puts the digest in `tag` too). Without
`resource_url`: `repository.repo_full_name` with the tag or digest, and no host (only
`resource_url` names it). Events without resources (quota, replication, ...) have no image.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from receiver.signatures import token_matches
from receiver.types.base import BadDelivery, Hook, Keys, ReceiverType, json_object, text

CLOUDEVENTS = "application/cloudevents+json"


def verify(headers: Mapping[str, str], body: bytes, keys: Keys) -> bool:
    try:
        return token_matches(headers.get("Authorization", ""), keys.tokens)
    except (UnicodeError, TypeError, AttributeError):
        return False  # a header no Harbor could send


def _first_resource(event_data: Mapping[str, Any], where: str) -> Mapping[str, Any]:
    resources = event_data.get("resources")
    if resources is None:
        return {}
    if not isinstance(resources, list):
        raise BadDelivery(f"Harbor payload: '{where}.resources' must be a list")
    if not resources:
        return {}
    if not isinstance(resources[0], Mapping):
        raise BadDelivery(f"Harbor payload: '{where}.resources[0]' must be an object")
    return resources[0]


def _reference(repo: str, tag: str, digest: str) -> str:
    """`repo:tag`, or `repo@sha256:...` when the "tag" is a digest (a push by digest)."""
    if not repo:
        return ""
    if tag and not tag.startswith("sha256:"):
        return f"{repo}:{tag}"
    ref = tag or digest
    return f"{repo}@{ref}" if ref else repo


def parse(headers: Mapping[str, str], body: bytes) -> Hook:
    content_type = headers.get("Content-Type", "").split(";")[0].strip().lower()
    data = json_object(body)
    # The shape decides when the content type disagrees with it (a proxy may rewrite headers).
    cloudevent = "event_data" not in data and (content_type == CLOUDEVENTS or "specversion" in data)
    where = "data" if cloudevent else "event_data"
    event = text(data, "type").strip()
    if not event:
        raise BadDelivery("Harbor payload: 'type' is missing or not a non-empty string")
    delivery_id = ""
    if cloudevent:
        delivery_id = text(data, "id").strip()[:128]
        if not delivery_id:
            raise BadDelivery("Harbor CloudEvent: 'id' is missing or not a non-empty string")
    event_data = data.get(where)
    if not isinstance(event_data, Mapping):
        raise BadDelivery(f"Harbor payload: '{where}' is missing or not an object")

    resource = _first_resource(event_data, where)
    digest = text(resource, "digest")
    image = text(resource, "resource_url")
    if not image:
        image = _reference(text(event_data, "repository", "repo_full_name"), text(resource, "tag"), digest)
    return Hook(event=event, delivery_id=delivery_id, image=image, digest=digest)


TYPE = ReceiverType(name="harbor", verify=verify, parse=parse, delivery_headers=())
