"""Azure Container Registry webhooks.

Authenticity: ACR signs nothing and adds no header of its own ("no other headers are added
to the request beyond those custom headers you might have specified"). What it offers is
custom headers on the webhook, which this type uses when the Receiver's Secret asks for it:
* `username` and `password` in the Secret: the webhook must send
  `Authorization: Basic base64(username:password)` (scheme case-insensitive). A Secret with
  only one of the two still requires Basic auth (the other taken as empty) rather than
  silently accepting everything.
* else `headerToken` in the Secret: `Authorization` must be that value, or `Bearer <value>`.
* else nothing but the secret URL, as Flux's `acr` receiver does.
Every comparison is constant time (token_matches).

Payload: `action` (the event: `push`, `delete`, `chart_push`, `chart_delete`, ...),
`target.repository`, and `target.tag`, which a delete by digest leaves out: then
`target.digest` is required instead. The delivery id is the body's `id`.

Image: `request.host/target.repository:target.tag` (host left out when the payload has no
`request`, as in the documented `chart_push`); `@target.digest` instead of the tag when there
is no tag. The digest is `target.digest` as given: Microsoft's published examples mask parts
of digests with `xxxx`, so it is not checked for hex.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from receiver.signatures import token_matches
from receiver.types.base import BadDelivery, Hook, Keys, ReceiverType, json_object, text


def _secret(keys: Keys, name: str) -> str:
    value = keys.secret.get(name, "") if isinstance(keys.secret, Mapping) else ""
    return value if isinstance(value, str) else ""


def verify(headers: Mapping[str, str], body: bytes, keys: Keys) -> bool:
    try:
        presented = headers.get("Authorization", "").strip()
        username, password = _secret(keys, "username"), _secret(keys, "password")
        if username or password:
            scheme, _, credentials = presented.partition(" ")
            expected = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
            return scheme.lower() == "basic" and token_matches(credentials.strip(), [expected])
        header_token = _secret(keys, "headerToken")
        if header_token:
            scheme, _, rest = presented.partition(" ")
            bearer = rest.strip() if scheme.lower() == "bearer" else ""
            # Both compared, so the time taken does not tell which form matched.
            plain = token_matches(presented, [header_token])
            return token_matches(bearer, [header_token]) | plain
        return True
    except (UnicodeError, TypeError, AttributeError):
        return False  # a header or Secret value no ACR webhook could match


def _optional_text(obj: Mapping[str, Any], key: str, where: str) -> str:
    value = obj.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BadDelivery(f"ACR payload: '{where}.{key}' must be a string")
    return value.strip()


def parse(headers: Mapping[str, str], body: bytes) -> Hook:
    data = json_object(body)
    action = text(data, "action").strip()
    if not action:
        raise BadDelivery("ACR payload: 'action' is missing or not a non-empty string")
    target = data.get("target")
    if not isinstance(target, Mapping):
        raise BadDelivery("ACR payload: 'target' is missing or not an object")
    repository = text(target, "repository").strip()
    if not repository:
        raise BadDelivery("ACR payload: 'target.repository' is missing or not a non-empty string")
    tag = _optional_text(target, "tag", "target")
    digest = _optional_text(target, "digest", "target")
    if not tag and not digest:
        raise BadDelivery("ACR payload: 'target.tag' is missing and so is 'target.digest'")
    host = text(data, "request", "host").strip()
    name = f"{host}/{repository}" if host else repository
    image = f"{name}:{tag}" if tag else f"{name}@{digest}"
    return Hook(event=action, delivery_id=text(data, "id").strip()[:128], image=image, digest=digest)


TYPE = ReceiverType(name="acr", verify=verify, parse=parse, delivery_headers=())
