"""Sonatype Nexus Repository 3 webhooks (the "Webhook: Repository" and global capabilities).

Authenticity: with a secret key configured, Nexus sends `X-Nexus-Webhook-Signature`, the
bare hex HMAC-SHA1 of the body. The Receiver requires it (as Flux's `nexus` receiver does)
and checks it against its token and rotation keys; several comma-separated signatures are
accepted for a sender rotating keys. The MAC is over the raw bytes as received (Nexus says
it hashes the JSON "without whitespace", i.e. the compact JSON it sends). SHA-1 is the only
algorithm Nexus offers.

Headers: `X-Nexus-Webhook-Id` is the event (`rm:repository:component`,
`rm:repository:asset`, `rm:audit`, ...) and is required; `X-Nexus-Webhook-Delivery` is the
delivery id.

Payload: a JSON object. Repository events (`rm:repository:*`) must have `repositoryName`
and `action` (`CREATED`, `UPDATED`, `DELETED`), and a component or asset event its
`component` / `asset` object. The image is set only for a component of format `docker`:
`<name>:<version>` (Nexus's name and version of a Docker component are the image and its tag),
without a host, because the Docker connector's host and port are not in the payload. Nexus
gives no digest.
"""

from __future__ import annotations

from collections.abc import Mapping

from receiver.signatures import hmac_matches, split_signatures
from receiver.types.base import BadDelivery, Hook, Keys, ReceiverType, json_object, text

SIGNATURE_HEADER = "X-Nexus-Webhook-Signature"
EVENT_HEADER = "X-Nexus-Webhook-Id"
COMPONENT = "rm:repository:component"
ASSET = "rm:repository:asset"


def verify(headers: Mapping[str, str], body: bytes, keys: Keys) -> bool:
    try:
        signatures = split_signatures(headers.get(SIGNATURE_HEADER, ""))
        return bool(signatures) and hmac_matches("sha1", keys.tokens, body, signatures)
    except (UnicodeError, TypeError, AttributeError):
        return False


def parse(headers: Mapping[str, str], body: bytes) -> Hook:
    event = headers.get(EVENT_HEADER, "").strip()
    if not event:
        raise BadDelivery(f"missing {EVENT_HEADER} header")
    delivery_id = TYPE.delivery_id(headers)
    data = json_object(body)
    image = ""
    if event.lower().startswith("rm:repository:"):
        for field in ("repositoryName", "action"):
            if not text(data, field).strip():
                raise BadDelivery(f"Nexus payload: '{field}' is missing or not a non-empty string")
        for kind, field in ((COMPONENT, "component"), (ASSET, "asset")):
            if event.lower() == kind and not isinstance(data.get(field), Mapping):
                raise BadDelivery(f"Nexus payload: '{field}' is missing or not an object")
        if event.lower() == COMPONENT and text(data, "component", "format").lower() == "docker":
            name, version = text(data, "component", "name"), text(data, "component", "version")
            image = f"{name}:{version}" if name and version else name
    return Hook(event=event, delivery_id=delivery_id, image=image)


TYPE = ReceiverType(name="nexus", verify=verify, parse=parse,
                    delivery_headers=("X-Nexus-Webhook-Delivery",))
