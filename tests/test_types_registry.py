"""Container registry receiver types: Docker Hub, Quay, Harbor, GHCR, ACR and Nexus.

Each scenario reads a published delivery from tests/webhooks with the headers its sender
really puts on it (SOURCES.md), or, for Nexus (no payload file), a body in the shape of
Sonatype's documented examples, and checks what the receiver makes of it: the event compared
with spec.events, the image and digest it names, the delivery id, and whether verification
holds. Malformed deliveries must end in BadDelivery (a 400), never in another exception.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any
from urllib.parse import urlencode

import pytest
from werkzeug.datastructures import Headers

from receiver.types import acr, dockerhub, ghcr, harbor, nexus, quay
from receiver.types.base import BadDelivery, Hook, Keys
from tests.fixtures_herald import FIXTURES

MODULES = (dockerhub, quay, harbor, ghcr, acr, nexus)
SECRET = "s3cr3t-receiver-token"

HARBOR_DIGEST_PUSHED = "sha256:954b378c375d852eb3c63ab88978f640b4348b01c1b3456a024a81536dafbbf4"
HARBOR_DIGEST_DELETED = "sha256:2bb501e6173d9d006e56de5bce2720eb06396803300fe1687b58a7ff32bf4c14"
GHCR_DIGEST = "sha256:3da1996a8115d7616457760d9920b815241d0a03b34cf5f04e9a0e9d8de37498"
ACR_IMAGE_DIGEST = "sha256:xxxxd5c8786bb9e621a45ece0dbxxxx1cdc624ad20da9fe62e9d25490f33xxxx"
ACR_CHART_DIGEST = "sha256:xxxx8075264b5ba7c14c23672xxxx52ae6a3ebac1c47916e4efe19cd624dxxxx"
GITHUB_DELIVERY = "72d3162e-cc78-11e3-81ab-4c9367dc0958"  # GitHub's documented example delivery
NEXUS_DELIVERY = "7f4a6dde-5c68-4999-bcc0-a62f3fb8ae48"  # Sonatype's documented example

JSON = {"Content-Type": "application/json"}
CLOUDEVENTS = {"Content-Type": "application/cloudevents+json"}


def github_headers(event: str) -> dict[str, str]:
    """What GitHub sends with a package delivery (SOURCES.md, GitHub section), unsigned."""
    return {"X-GitHub-Event": event, "X-GitHub-Delivery": GITHUB_DELIVERY, "X-GitHub-Hook-ID": "292430182",
            "User-Agent": "GitHub-Hookshot/044aadd", "Content-Type": "application/json"}


def nexus_headers(event: str) -> dict[str, str]:
    """What Nexus Repository 3 sends (Sonatype's "Example Headers"), unsigned."""
    return {"X-Nexus-Webhook-Id": event, "X-Nexus-Webhook-Delivery": NEXUS_DELIVERY,
            "X-Request-Id": "d535c62b-063e-4ace-90ce-f7b579d6c37c",
            "Content-Type": "application/json; charset=UTF-8",
            "User-Agent": "Nexus/3.1.0-SNAPSHOT (PRO; Mac OS X; 10.11.1; x86_64; 1.8.0_60)"}


# Bodies in the shape of Sonatype's "Example Headers And Payloads" page, compact as Nexus sends
# them (it signs "the JSON body without whitespace").
NEXUS_COMPONENT = {"timestamp": "2016-11-14T19:32:13.515+0000", "nodeId": "7FFA7361-6ED33978-36997BD4-47095CC4-331356BE",
                   "initiator": "anonymous/127.0.0.1", "repositoryName": "npm-proxy", "action": "CREATED",
                   "component": {"id": "08909bf0c86cf6c9600aade89e1c5e25",
                                 "componentId": "bnBtLXByb3h5OjA4OTA5YmYwYzg2Y2Y2Yzk2MDBhYWRlODllMWM1ZTI1",
                                 "format": "npm", "name": "angular2", "group": "types", "version": "0.0.2"}}
NEXUS_ASSET = {"timestamp": "2016-11-10T23:57:49.664+0000", "nodeId": "52905B51-085CCABB-CEBBEAAD-16795588-FC927D93",
               "initiator": "admin/127.0.0.1", "repositoryName": "npm-proxy", "action": "CREATED",
               "asset": {"id": "31c950c8eeeab78336308177ae9c441c",
                         "assetId": "bnBtLXByb3h5OjMxYzk1MGM4ZWVlYWI3ODMzNjMwODE3N2FlOWM0NDFj",
                         "format": "npm", "name": "concrete"}}
NEXUS_DOCKER_COMPONENT = {**NEXUS_COMPONENT, "repositoryName": "docker-hosted",
                          "component": {**NEXUS_COMPONENT["component"], "format": "docker", "group": None,
                                        "name": "team/api", "version": "1.4.2"}}


def compact(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


def fixture(path: str) -> bytes:
    return (FIXTURES / path).read_bytes()


def sign(alg: str, key: str, body: bytes) -> str:
    return hmac.new(key.encode(), body, getattr(hashlib, alg)).hexdigest()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# --- every fixture, parsed with the headers its sender sends ----------------------------------

# (module, fixture file, headers, event, image, digest, delivery id, ignore reason or "")
FIXTURE_CASES = [
    (dockerhub, "dockerhub/push-docker-docs.json", {}, "push",
     "docker.io/svendowideit/testhook:latest", "", "", ""),
    # The legacy body: float timestamps, push_data.images ending in the string "..." (layer ids,
    # not a digest, so no digest is reported).
    (dockerhub, "dockerhub/push-go-playground.json", {}, "push",
     "docker.io/svendowideit/testhook:latest", "", "", ""),
    (quay, "quay/repo_push.json", JSON, "repo_push", "quay.io/mynamespace/repository:latest", "", "", ""),
    # Not a push: named by its own event so spec.events can leave it out; first of its tags.
    (quay, "quay/vulnerability_found.json", JSON, "vulnerability_found",
     "quay.io/mynamespace/repository:latest", "", "", ""),
    # Pushed by digest: Harbor's tag *is* the digest and resource_url uses `@`.
    (harbor, "harbor/PUSH_ARTIFACT.json", JSON, "PUSH_ARTIFACT",
     f"localhost/harbor/alpine@{HARBOR_DIGEST_PUSHED}", HARBOR_DIGEST_PUSHED, "", ""),
    (harbor, "harbor/DELETE_ARTIFACT.json", JSON, "DELETE_ARTIFACT",
     "localhost/harbor/alpine:3.8", HARBOR_DIGEST_DELETED, "", ""),
    (harbor, "harbor/SCANNING_COMPLETED.json", JSON, "SCANNING_COMPLETED",
     f"localhost/harbor/alpine@{HARBOR_DIGEST_PUSHED}", HARBOR_DIGEST_PUSHED, "", ""),
    (harbor, "harbor/cloudevents-harbor.artifact.pushed-comments-removed.json", CLOUDEVENTS,
     "harbor.artifact.pushed", f"localhost/harbor/alpine@{HARBOR_DIGEST_PUSHED}", HARBOR_DIGEST_PUSHED,
     "66e18103-09c1-41f6-982f-37df223f3eeb", ""),
    (harbor, "harbor/cloudevents-harbor.artifact.deleted.json", CLOUDEVENTS, "harbor.artifact.deleted",
     "localhost/harbor/alpine:3.8", HARBOR_DIGEST_DELETED, "343f1623-7cba-487c-88f1-c5ebf55e93aa", ""),
    (harbor, "harbor/cloudevents-harbor.scan.completed.json", CLOUDEVENTS, "harbor.scan.completed",
     f"localhost/harbor/alpine@{HARBOR_DIGEST_PUSHED}", HARBOR_DIGEST_PUSHED,
     "64bce2fe-6159-454d-8389-852d01ef1e9d", ""),
    # octokit's GHCR examples have an empty tag (package_url ends in ":") and a 40-hex
    # container_metadata.tag.digest; the well-formed digest is package_version.version.
    (ghcr, "ghcr/package-published-container.json", github_headers("package"), "package",
     f"ghcr.io/Codertocat/hello-world@{GHCR_DIGEST}", GHCR_DIGEST, GITHUB_DELIVERY, ""),
    (ghcr, "ghcr/registry_package-published-container.json", github_headers("registry_package"),
     "registry_package", f"ghcr.io/Codertocat/hello-world@{GHCR_DIGEST}", GHCR_DIGEST, GITHUB_DELIVERY, ""),
    (ghcr, "github/package-published-npm.json", github_headers("package"), "package", "", "",
     GITHUB_DELIVERY, "package published: a npm package, not a container image"),
    # ACR's documented examples mask digests and ids with "xxxx": reported as given.
    (acr, "acr/push.json", JSON, "push", "myregistry.azurecr.io/hello-world:v1", ACR_IMAGE_DIGEST,
     "cb8c3971-9adc-488b-xxxx-43cbb4974ff5", ""),
    (acr, "acr/delete.json", JSON, "delete", f"myregistry.azurecr.io/hello-world@{ACR_IMAGE_DIGEST}",
     ACR_IMAGE_DIGEST, "afc359ce-df7f-4e32-xxxx-1ff8aa80927b", ""),
    # The documented chart_push has no `request`, so no host.
    (acr, "acr/chart_push.json", JSON, "chart_push", "repo:wordpress-5.4.0.tgz", ACR_CHART_DIGEST,
     "6356e9e0-627f-4fed-xxxx-d9059b5143ac", ""),
]


@pytest.mark.parametrize("module,path,headers,event,image,digest,delivery,ignore", FIXTURE_CASES,
                         ids=[c[1] for c in FIXTURE_CASES])
def test_published_delivery_is_understood(module: ModuleType, path: str, headers: dict, event: str,
                                          image: str, digest: str, delivery: str, ignore: str) -> None:
    hook = module.parse(Headers(headers), fixture(path))
    assert (hook.event, hook.image, hook.digest, hook.delivery_id, hook.ignore) == (
        event, image, digest, delivery, ignore)
    assert not hook.ping and hook.changes == ()


def test_every_registry_fixture_has_a_scenario() -> None:
    on_disk = {f"{p.parent.name}/{p.name}" for d in ("dockerhub", "quay", "harbor", "ghcr", "acr")
               for p in (FIXTURES / d).glob("*.json")}
    assert on_disk <= {c[1] for c in FIXTURE_CASES}


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.TYPE.name)
def test_type_names_the_headers_that_carry_its_delivery_id(module: ModuleType) -> None:
    assert module.TYPE.name == module.__name__.rsplit(".", 1)[1]
    assert module.TYPE.verify is module.verify and module.TYPE.parse is module.parse
    expected = {"ghcr": ("X-GitHub-Delivery",), "nexus": ("X-Nexus-Webhook-Delivery",)}
    assert module.TYPE.delivery_headers == expected.get(module.TYPE.name, ())


# --- Docker Hub and Quay: the URL is the secret -----------------------------------------------

@pytest.mark.parametrize("module,path", [(dockerhub, "dockerhub/push-docker-docs.json"), (quay, "quay/repo_push.json")])
def test_unsigned_registries_accept_whatever_reaches_the_secret_url(module: ModuleType, path: str) -> None:
    assert module.verify(Headers(), fixture(path), Keys.of(SECRET))
    assert module.verify(Headers({"Authorization": "anything"}), b"not even json", Keys.of(SECRET))


def test_quay_push_of_several_tags_names_the_first() -> None:
    body = compact({"docker_url": "quay.io/acme/api", "updated_tags": ["v2.1.0", "latest"]})
    assert quay.parse(Headers(JSON), body).image == "quay.io/acme/api:v2.1.0"
    body = compact({"docker_url": "quay.io/acme/api", "updated_tags": []})
    assert quay.parse(Headers(JSON), body) == Hook(event="repo_push", image="quay.io/acme/api")


# --- Harbor: the Authorization header is the token --------------------------------------------

HARBOR_BODY = fixture("harbor/PUSH_ARTIFACT.json")


def test_harbor_accepts_the_configured_auth_header() -> None:
    assert harbor.verify(Headers({**JSON, "Authorization": SECRET}), HARBOR_BODY, Keys.of(SECRET))


@pytest.mark.parametrize("authorization", [None, "", SECRET + "x", SECRET[:-1], f"Bearer {SECRET}", SECRET.upper()])
def test_harbor_refuses_a_missing_or_wrong_auth_header(authorization: str | None) -> None:
    headers = Headers(JSON)
    if authorization is not None:
        headers["Authorization"] = authorization
    assert not harbor.verify(headers, HARBOR_BODY, Keys.of(SECRET))


def test_harbor_accepts_a_rotation_key_while_the_policy_still_sends_the_old_header() -> None:
    keys = Keys.of("new-token", "old-token")
    assert harbor.verify(Headers({"Authorization": "old-token"}), HARBOR_BODY, keys)
    assert harbor.verify(Headers({"Authorization": "new-token"}), HARBOR_BODY, keys)
    assert not harbor.verify(Headers({"Authorization": "retired-token"}), HARBOR_BODY, keys)


def test_harbor_cloudevent_is_recognised_by_its_shape_when_a_proxy_rewrote_the_content_type() -> None:
    body = fixture("harbor/cloudevents-harbor.artifact.deleted.json")
    hook = harbor.parse(Headers(JSON), body)
    assert (hook.event, hook.delivery_id) == ("harbor.artifact.deleted", "343f1623-7cba-487c-88f1-c5ebf55e93aa")


def test_harbor_default_body_under_the_cloudevents_content_type_is_read_by_its_shape() -> None:
    hook = harbor.parse(Headers(CLOUDEVENTS), HARBOR_BODY)
    assert (hook.event, hook.delivery_id, hook.digest) == ("PUSH_ARTIFACT", "", HARBOR_DIGEST_PUSHED)


def test_harbor_without_resource_url_names_the_repository_without_a_host() -> None:
    body = compact({"type": "PUSH_ARTIFACT", "event_data": {
        "resources": [{"digest": HARBOR_DIGEST_DELETED, "tag": "3.8"}],
        "repository": {"repo_full_name": "harbor/alpine"}}})
    assert harbor.parse(Headers(JSON), body).image == "harbor/alpine:3.8"


def test_harbor_event_without_resources_has_no_image() -> None:
    body = compact({"type": "QUOTA_EXCEED", "event_data": {"repository": {"repo_full_name": "harbor/alpine"}}})
    assert harbor.parse(Headers(JSON), body) == Hook(event="QUOTA_EXCEED", image="harbor/alpine")
    body = compact({"type": "REPLICATION", "event_data": {"replication": {}}})
    assert harbor.parse(Headers(JSON), body) == Hook(event="REPLICATION")


# --- ACR: optional Basic auth or header token from the Secret ---------------------------------

ACR_BODY = fixture("acr/push.json")


def acr_verify(authorization: str | None, **secret: str) -> bool:
    headers = Headers(JSON)
    if authorization is not None:
        headers["Authorization"] = authorization
    return acr.verify(headers, ACR_BODY, Keys.of(SECRET, **secret))


def test_acr_without_credentials_in_the_secret_trusts_the_secret_url() -> None:
    assert acr_verify(None)
    assert acr_verify("Basic whatever")


def test_acr_basic_auth_from_username_and_password() -> None:
    creds = {"username": "acr-hook", "password": "pa:ss wörd"}
    assert acr_verify(basic("acr-hook", "pa:ss wörd"), **creds)
    assert acr_verify(basic("acr-hook", "pa:ss wörd").replace("Basic", "basic"), **creds)


@pytest.mark.parametrize("authorization", [
    None, "", basic("acr-hook", "wrong"), basic("other", "pa:ss wörd"), basic("acr-hook", "pa:ss wörd")[6:],
    "Bearer " + basic("acr-hook", "pa:ss wörd")[6:], "Basic", "Basic !!!not-base64!!!", "acr-hook:pa:ss wörd",
])
def test_acr_refuses_missing_or_wrong_basic_auth(authorization: str | None) -> None:
    assert not acr_verify(authorization, username="acr-hook", password="pa:ss wörd")


def test_acr_username_and_password_win_over_a_header_token() -> None:
    secret = {"username": "u", "password": "p", "headerToken": "tok"}
    assert acr_verify(basic("u", "p"), **secret)
    assert not acr_verify("tok", **secret)


def test_acr_username_alone_still_requires_basic_auth() -> None:
    assert not acr_verify(None, username="u")
    assert acr_verify(basic("u", ""), username="u")


@pytest.mark.parametrize("authorization,ok", [
    ("hdr-token-1", True), ("Bearer hdr-token-1", True), ("bearer hdr-token-1", True),
    (None, False), ("", False), ("hdr-token-2", False), ("Bearer hdr-token-2", False), ("Bearer", False),
    ("Basic hdr-token-1", False), ("Bearer  Bearer hdr-token-1", False),
])
def test_acr_header_token_plain_or_bearer(authorization: str | None, ok: bool) -> None:
    assert acr_verify(authorization, headerToken="hdr-token-1") is ok


def test_acr_header_token_configured_with_its_scheme_matches_verbatim() -> None:
    assert acr_verify("Bearer hdr-token-1", headerToken="Bearer hdr-token-1")


def test_acr_delete_by_tag_names_the_tag() -> None:
    body = compact({"id": "x", "action": "delete", "target": {"repository": "api", "tag": "v1"},
                    "request": {"host": "acme.azurecr.io"}})
    assert acr.parse(Headers(JSON), body) == Hook(event="delete", delivery_id="x", image="acme.azurecr.io/api:v1")


# --- Nexus: hex HMAC-SHA1 of the body ---------------------------------------------------------

NEXUS_BODY = compact(NEXUS_COMPONENT)


def nexus_verify(signature: str | None, keys: Keys, body: bytes = NEXUS_BODY) -> bool:
    headers = Headers(nexus_headers("rm:repository:component"))
    if signature is not None:
        headers["X-Nexus-Webhook-Signature"] = signature
    return nexus.verify(headers, body, keys)


def test_nexus_signed_component_event() -> None:
    signature = sign("sha1", SECRET, NEXUS_BODY)
    assert nexus_verify(signature, Keys.of(SECRET))
    assert nexus_verify(signature.upper(), Keys.of(SECRET))
    hook = nexus.parse(Headers(nexus_headers("rm:repository:component")), NEXUS_BODY)
    assert hook == Hook(event="rm:repository:component", delivery_id=NEXUS_DELIVERY)


@pytest.mark.parametrize("signature", [
    None, "", sign("sha1", "other-secret", NEXUS_BODY), sign("sha256", SECRET, NEXUS_BODY),
    "sha1=" + sign("sha1", SECRET, NEXUS_BODY), sign("sha1", SECRET, NEXUS_BODY)[:-2], "zz" * 20,
    "687f3719b87232cf1c11b3ef7ea10c49218b6df1",  # Sonatype's documented example, for another body
])
def test_nexus_refuses_a_missing_or_wrong_signature(signature: str | None) -> None:
    assert not nexus_verify(signature, Keys.of(SECRET))


def test_nexus_signature_covers_the_exact_bytes() -> None:
    signature = sign("sha1", SECRET, NEXUS_BODY)
    pretty = json.dumps(NEXUS_COMPONENT, indent=2).encode()
    assert not nexus_verify(signature, Keys.of(SECRET), pretty)


def test_nexus_rotation_keys_and_comma_separated_signatures() -> None:
    keys = Keys.of("new-key", "old-key")
    assert nexus_verify(sign("sha1", "old-key", NEXUS_BODY), keys)
    assert nexus_verify(sign("sha1", "new-key", NEXUS_BODY), keys)
    both = f"{sign('sha1', 'unknown', NEXUS_BODY)}, {sign('sha1', 'old-key', NEXUS_BODY)}"
    assert nexus_verify(both, keys)
    assert not nexus_verify(f"{sign('sha1', 'a', NEXUS_BODY)},{sign('sha1', 'b', NEXUS_BODY)}", keys)


def test_nexus_asset_event_and_docker_component_image() -> None:
    hook = nexus.parse(Headers(nexus_headers("rm:repository:asset")), compact(NEXUS_ASSET))
    assert hook == Hook(event="rm:repository:asset", delivery_id=NEXUS_DELIVERY)
    hook = nexus.parse(Headers(nexus_headers("rm:repository:component")), compact(NEXUS_DOCKER_COMPONENT))
    assert hook == Hook(event="rm:repository:component", delivery_id=NEXUS_DELIVERY, image="team/api:1.4.2")


def test_nexus_non_repository_event_needs_only_a_json_object() -> None:
    audit = {"nodeId": "7FFA7361", "initiator": "admin/127.0.0.1",
             "audit": {"domain": "security.user", "type": "created", "context": "testuser"}}
    hook = nexus.parse(Headers(nexus_headers("rm:audit")), compact(audit))
    assert hook == Hook(event="rm:audit", delivery_id=NEXUS_DELIVERY)


# --- GHCR: GitHub's signature, package events only --------------------------------------------

GHCR_BODY = fixture("ghcr/registry_package-published-container.json")


def ghcr_signed(event: str, body: bytes, key: str = SECRET, sha1: bool = False) -> Headers:
    headers = Headers(github_headers(event))
    headers["X-Hub-Signature-256"] = "sha256=" + sign("sha256", key, body)
    if sha1:
        headers["X-Hub-Signature"] = "sha1=" + sign("sha1", key, body)
        del headers["X-Hub-Signature-256"]
    return headers


def test_ghcr_verifies_like_github() -> None:
    assert ghcr.verify(ghcr_signed("registry_package", GHCR_BODY), GHCR_BODY, Keys.of(SECRET))
    assert not ghcr.verify(ghcr_signed("registry_package", GHCR_BODY, "wrong"), GHCR_BODY, Keys.of(SECRET))
    assert not ghcr.verify(Headers(github_headers("registry_package")), GHCR_BODY, Keys.of(SECRET))
    assert ghcr.verify(ghcr_signed("registry_package", GHCR_BODY), GHCR_BODY, Keys.of("new", SECRET))
    assert not ghcr.verify(ghcr_signed("registry_package", GHCR_BODY), GHCR_BODY + b" ", Keys.of(SECRET))


def test_ghcr_sha1_only_when_the_receiver_allows_it() -> None:
    headers = ghcr_signed("registry_package", GHCR_BODY, sha1=True)
    assert not ghcr.verify(headers, GHCR_BODY, Keys.of(SECRET))
    assert ghcr.verify(headers, GHCR_BODY, Keys.of(SECRET, allow_sha1=True))


def test_ghcr_ping_is_answered_as_a_ping() -> None:
    hook = ghcr.parse(Headers(github_headers("ping")), fixture("github/ping.json"))
    assert hook == Hook(event="ping", delivery_id=GITHUB_DELIVERY, ping=True)


def test_ghcr_ignores_other_github_events() -> None:
    hook = ghcr.parse(Headers(github_headers("push")), fixture("github/push.json"))
    assert (hook.event, hook.ping) == ("push", False) and "not a package event" in hook.ignore


def test_ghcr_ignores_actions_other_than_published_and_updated() -> None:
    data = json.loads(GHCR_BODY)
    data["action"] = "updated"
    assert not ghcr.parse(Headers(github_headers("registry_package")), compact(data)).ignore
    data["action"] = "default"
    hook = ghcr.parse(Headers(github_headers("registry_package")), compact(data))
    assert "only published and updated" in hook.ignore and hook.image == ""


def test_ghcr_tagged_image_and_form_encoded_delivery() -> None:
    data = json.loads(GHCR_BODY)
    version = data["registry_package"]["package_version"]
    version["container_metadata"]["tag"] = {"name": "v1.2.0", "digest": GHCR_DIGEST}
    version["package_url"] = "ghcr.io/acme/api:v1.2.0"
    body = urlencode({"payload": json.dumps(data)}).encode()
    headers = Headers({**github_headers("registry_package"), "Content-Type": "application/x-www-form-urlencoded"})
    hook = ghcr.parse(headers, body)
    assert (hook.image, hook.digest) == ("ghcr.io/acme/api:v1.2.0", GHCR_DIGEST)


def test_ghcr_without_package_url_builds_the_reference_from_owner_and_name() -> None:
    data = json.loads(GHCR_BODY)
    del data["registry_package"]["package_version"]["package_url"]
    hook = ghcr.parse(Headers(github_headers("registry_package")), compact(data))
    assert hook.image == f"ghcr.io/Codertocat/hello-world-npm@{GHCR_DIGEST}"


# --- malformed deliveries: BadDelivery naming what is wrong -----------------------------------

HARBOR_DEFAULT = json.loads(HARBOR_BODY)
HARBOR_CE = json.loads(fixture("harbor/cloudevents-harbor.artifact.pushed-comments-removed.json"))
ACR_PUSH = json.loads(ACR_BODY)
GHCR_DATA = json.loads(GHCR_BODY)


def without(data: dict, *path: str) -> dict:
    copy = json.loads(json.dumps(data))
    node = copy
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return copy


def replaced(data: dict, value: Any, *path: str) -> dict:
    copy = json.loads(json.dumps(data))
    node = copy
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return copy


DOCKERHUB = json.loads(fixture("dockerhub/push-docker-docs.json"))
QUAY = json.loads(fixture("quay/repo_push.json"))
GH_REG = github_headers("registry_package")
NX = nexus_headers("rm:repository:component")

# (module, headers, body, words the message must contain)
MALFORMED = [
    (dockerhub, {}, without(DOCKERHUB, "push_data", "tag"), "push_data.tag"),
    (dockerhub, {}, replaced(DOCKERHUB, "", "push_data", "tag"), "push_data.tag"),
    (dockerhub, {}, replaced(DOCKERHUB, ["latest"], "push_data", "tag"), "push_data.tag"),
    (dockerhub, {}, without(DOCKERHUB, "push_data"), "push_data"),
    (dockerhub, {}, replaced(DOCKERHUB, "x", "repository"), "repository"),
    (dockerhub, {}, without(DOCKERHUB, "repository", "repo_name"), "repository.repo_name"),
    (dockerhub, {}, replaced(DOCKERHUB, 7, "repository", "repo_name"), "repository.repo_name"),
    (quay, JSON, without(QUAY, "docker_url"), "docker_url"),
    (quay, JSON, replaced(QUAY, {"u": 1}, "docker_url"), "docker_url"),
    (quay, JSON, without(QUAY, "updated_tags"), "updated_tags"),
    (quay, JSON, replaced(QUAY, "latest", "updated_tags"), "updated_tags"),
    (quay, JSON, replaced(QUAY, [1, 2], "updated_tags"), "updated_tags"),
    (quay, JSON, replaced(QUAY, None, "updated_tags"), "updated_tags"),
    (harbor, JSON, without(HARBOR_DEFAULT, "type"), "type"),
    (harbor, JSON, replaced(HARBOR_DEFAULT, 3, "type"), "type"),
    (harbor, JSON, without(HARBOR_DEFAULT, "event_data"), "event_data"),
    (harbor, JSON, replaced(HARBOR_DEFAULT, [], "event_data"), "event_data"),
    (harbor, JSON, replaced(HARBOR_DEFAULT, {"digest": "x"}, "event_data", "resources"), "event_data.resources"),
    (harbor, JSON, replaced(HARBOR_DEFAULT, ["localhost/a:b"], "event_data", "resources"), "resources[0]"),
    (harbor, CLOUDEVENTS, without(HARBOR_CE, "id"), "id"),
    (harbor, CLOUDEVENTS, replaced(HARBOR_CE, 12, "id"), "id"),
    (harbor, CLOUDEVENTS, without(HARBOR_CE, "type"), "type"),
    (harbor, CLOUDEVENTS, without(HARBOR_CE, "data"), "data"),
    (harbor, CLOUDEVENTS, replaced(HARBOR_CE, "e30=", "data"), "data"),
    (ghcr, {}, GHCR_DATA, "X-GitHub-Event"),
    (ghcr, GH_REG, without(GHCR_DATA, "registry_package"), "registry_package"),
    (ghcr, GH_REG, replaced(GHCR_DATA, [], "registry_package"), "registry_package"),
    (ghcr, GH_REG, without(GHCR_DATA, "action"), "action"),
    (ghcr, GH_REG, replaced(GHCR_DATA, None, "registry_package", "package_version"), "package_version"),
    (acr, JSON, without(ACR_PUSH, "action"), "action"),
    (acr, JSON, replaced(ACR_PUSH, ["push"], "action"), "action"),
    (acr, JSON, without(ACR_PUSH, "target"), "target"),
    (acr, JSON, replaced(ACR_PUSH, "hello-world:v1", "target"), "target"),
    (acr, JSON, without(ACR_PUSH, "target", "repository"), "target.repository"),
    (acr, JSON, replaced(ACR_PUSH, None, "target", "repository"), "target.repository"),
    (acr, JSON, replaced(ACR_PUSH, 1, "target", "tag"), "target.tag"),
    (acr, JSON, replaced(ACR_PUSH, {"a": "b"}, "target", "digest"), "target.digest"),
    (acr, JSON, without(without(ACR_PUSH, "target", "tag"), "target", "digest"), "target.digest"),
    (nexus, {k: v for k, v in NX.items() if k != "X-Nexus-Webhook-Id"}, NEXUS_COMPONENT, "X-Nexus-Webhook-Id"),
    (nexus, NX, without(NEXUS_COMPONENT, "component"), "component"),
    (nexus, NX, replaced(NEXUS_COMPONENT, "angular2", "component"), "component"),
    (nexus, NX, without(NEXUS_COMPONENT, "repositoryName"), "repositoryName"),
    (nexus, NX, replaced(NEXUS_COMPONENT, 1, "action"), "action"),
    (nexus, nexus_headers("rm:repository:asset"), NEXUS_COMPONENT, "asset"),
]


@pytest.mark.parametrize("module,headers,data,words", MALFORMED,
                         ids=[f"{c[0].TYPE.name}-{i}-{c[3]}" for i, c in enumerate(MALFORMED)])
def test_malformed_payload_names_the_field(module: ModuleType, headers: dict, data: dict, words: str) -> None:
    with pytest.raises(BadDelivery, match=words.replace("[", r"\[").replace(".", r"\.")):
        module.parse(Headers(headers), compact(data))


HEADERS_FOR = {"dockerhub": {}, "quay": JSON, "harbor": JSON, "ghcr": GH_REG, "acr": JSON, "nexus": NX}
NOT_OBJECTS = [b"", b"null", b"[]", b'"push"', b"42", b"true", b"{", b'{"a":', b"\xff\xfe\x00garbage",
               b"\x80\x81", b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
               b"<xml/>", b"payload=%7B%7D"]


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.TYPE.name)
@pytest.mark.parametrize("body", NOT_OBJECTS, ids=range(len(NOT_OBJECTS)))
def test_body_that_is_not_a_json_object_is_a_bad_delivery(module: ModuleType, body: bytes) -> None:
    with pytest.raises(BadDelivery):
        module.parse(Headers(HEADERS_FOR[module.TYPE.name]), body)


@pytest.mark.parametrize("module", [harbor, ghcr], ids=lambda m: m.TYPE.name)
def test_content_type_does_not_change_that(module: ModuleType) -> None:
    for content_type in ("application/x-www-form-urlencoded", "application/cloudevents+json", "text/plain", "\x00"):
        headers = Headers({**HEADERS_FOR[module.TYPE.name], "Content-Type": content_type})
        with pytest.raises(BadDelivery):
            module.parse(headers, b"\xff not json")


# --- wrong JSON types at every field: a Hook or BadDelivery, never anything else ---------------

WRONG = (None, 0, -1.5, True, "", "x" * 300, [], [None], {}, {"": None})

SEEDS = [
    (dockerhub, {}, DOCKERHUB), (quay, JSON, QUAY),
    (quay, JSON, json.loads(fixture("quay/vulnerability_found.json"))),
    (harbor, JSON, HARBOR_DEFAULT), (harbor, CLOUDEVENTS, HARBOR_CE),
    (ghcr, GH_REG, GHCR_DATA), (acr, JSON, ACR_PUSH), (acr, JSON, json.loads(fixture("acr/delete.json"))),
    (nexus, NX, NEXUS_DOCKER_COMPONENT), (nexus, nexus_headers("rm:repository:asset"), NEXUS_ASSET),
]


def paths(node: Any, prefix: tuple = ()) -> Iterator[tuple]:
    """Every key or index path in a JSON document, containers before their contents."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in items:
        yield (*prefix, key)
        yield from paths(child, (*prefix, key))


def mutate(data: Any, path: tuple, value: Any) -> Any:
    copy = json.loads(json.dumps(data))
    node = copy
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return copy


def survives(parse: Callable[[Headers, bytes], Hook], headers: Headers, body: bytes) -> None:
    try:
        hook = parse(headers, body)
    except BadDelivery as exc:
        assert str(exc)
        return
    assert isinstance(hook, Hook) and isinstance(hook.event, str) and hook.event
    assert all(isinstance(v, str) for v in (hook.delivery_id, hook.image, hook.digest, hook.ignore))


@pytest.mark.parametrize("module,headers,data", SEEDS, ids=[f"{s[0].TYPE.name}-{i}" for i, s in enumerate(SEEDS)])
def test_every_field_with_a_wrong_type(module: ModuleType, headers: dict, data: dict) -> None:
    h = Headers(headers)
    rng = random.Random(f"{module.TYPE.name}-{len(compact(data))}")
    all_paths = list(paths(data))
    # The GHCR body has thousands of fields (mostly URLs of the repository and users): the
    # package part is tried exhaustively, the rest by a fixed sample.
    important = [p for p in all_paths if module is not ghcr or p[0] in ("action", "registry_package")]
    chosen = important if len(important) <= 400 else important[:300] + rng.sample(important[300:], 100)
    for path in chosen:
        for value in WRONG:
            survives(module.parse, h, compact(mutate(data, path, value)))


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.TYPE.name)
def test_verify_never_raises_on_hostile_headers(module: ModuleType) -> None:
    odd = ["", " ", "\x00", "\ud800", "\udcff", "é" * 40, "a" * 100_000, ",,,,", "Basic \ud800",
           "Bearer \ud800", "sha256=\ud800", "sha1=" + "0" * 40, ("0" * 40 + ",") * 50]
    keysets = [Keys.of(SECRET), Keys.of(SECRET, "old", allow_sha1=True),
               Keys.of(SECRET, username="u", password="p"), Keys.of(SECRET, headerToken="t"), Keys(tokens=())]
    names = ["Authorization", "X-Hub-Signature-256", "X-Hub-Signature", "X-Nexus-Webhook-Signature"]
    for value in odd:
        for keys in keysets:
            headers = Headers([(n, value) for n in names])
            assert module.verify(headers, b"\xff" + value.encode("utf-8", "surrogatepass"), keys) in (True, False)


@pytest.mark.parametrize("module", [harbor, nexus, ghcr], ids=lambda m: m.TYPE.name)
def test_signed_types_refuse_a_receiver_with_no_keys(module: ModuleType) -> None:
    body = NEXUS_BODY
    headers = Headers({"Authorization": "", "X-Nexus-Webhook-Signature": sign("sha1", "", body),
                       "X-Hub-Signature-256": "sha256=" + sign("sha256", "", body)})
    assert not module.verify(headers, body, Keys(tokens=()))
