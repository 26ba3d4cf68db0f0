"""Docker Hub repository webhooks.

Authenticity: none offered. Docker Hub signs nothing and sends no token or event header (its
docs describe only the JSON body, and the old `callback_url` validation is no longer
supported), so the secret is the Receiver's URL itself: `verify` accepts every delivery that
reached it, as Flux's `dockerhub` receiver does. Keep the URL out of logs and behind TLS.

Payload: a push notification, `push_data.tag` and `repository.repo_name` (both required).
Docker Hub sends only pushes, so every delivery is the event `push`, and the image is
`docker.io/<repo_name>:<tag>`. There is no digest (the legacy `push_data.images` lists layer
ids, not the manifest digest) and no delivery id.
"""

from __future__ import annotations

from collections.abc import Mapping

from receiver.types.base import BadDelivery, Hook, Keys, ReceiverType, json_object, text

EVENT = "push"
HOST = "docker.io"


def verify(headers: Mapping[str, str], body: bytes, keys: Keys) -> bool:
    """Always True: the secret URL is the only proof Docker Hub gives."""
    return True


def parse(headers: Mapping[str, str], body: bytes) -> Hook:
    data = json_object(body)
    if not isinstance(data.get("push_data"), Mapping):
        raise BadDelivery("Docker Hub payload: 'push_data' is missing or not an object")
    if not isinstance(data.get("repository"), Mapping):
        raise BadDelivery("Docker Hub payload: 'repository' is missing or not an object")
    tag = text(data, "push_data", "tag")
    if not tag:
        raise BadDelivery("Docker Hub payload: 'push_data.tag' is missing or not a non-empty string")
    repo = text(data, "repository", "repo_name")
    if not repo:
        raise BadDelivery("Docker Hub payload: 'repository.repo_name' is missing or not a non-empty string")
    return Hook(event=EVENT, image=f"{HOST}/{repo}:{tag}")


TYPE = ReceiverType(name="dockerhub", verify=verify, parse=parse, delivery_headers=(), has_events=False)
