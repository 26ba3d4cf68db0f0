"""A registry push asks for an image scan.

Each scenario posts a registry's real delivery (tests/webhooks, see SOURCES.md; Nexus, which
has no recorded payload there, in the shape of Sonatype's documented example), with the
headers and proof its sender puts on it, to a Receiver in the namespace `registry`. The
ImageRepositories live in `apps`: `app` for the image the delivery names, `other` for
another image. What a verified delivery that names an image does:

* one scan request per ImageRepository on `herald.images`: those whose canonical image is the
  one pushed (beyond Flux, in any namespace; `nginx`, `docker.io/library/nginx` and
  `index.docker.io/library/nginx` are one), and those spec.resources names whatever their
  image (as Flux requests them); suspended ones skipped;
* nothing on `herald.reconcile`, unless spec.resources also selects GitRepositories or
  Kustomizations: those are reconciled as before, in the same answer;
* an image no ImageRepository is for, with nothing else selected: 200 saying why.

The baseline Receiver names ImageRepositories only through a label nothing carries
(`name: "*"` with matchLabels), so what is scanned there is what the image matched.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from textwrap import dedent
from typing import Any

import pytest

from herald import config
from herald.bus import BusUnavailable, open_bus
from herald.bus.base import Delivery
from herald.logs import DELIVERY_HEADER
from herald.messages import IMAGE_QUEUE, PLAN_QUEUE, RECONCILE_QUEUE, ReconcileRequest
from herald.settings import Settings
from receiver.app import create_app
from receiver.selection import Target, image_targets, split_reference, webhook_image
from receiver.signatures import digest
from receiver.types.base import Hook
from tests.fixtures_herald import FIXTURES, TOKEN, github_push, receiver_yaml

HARBOR_DIGEST = "sha256:954b378c375d852eb3c63ab88978f640b4348b01c1b3456a024a81536dafbbf4"
GHCR_DIGEST = "sha256:3da1996a8115d7616457760d9920b815241d0a03b34cf5f04e9a0e9d8de37498"
ACR_DIGEST = "sha256:xxxxd5c8786bb9e621a45ece0dbxxxx1cdc624ad20da9fe62e9d25490f33xxxx"  # masked by Microsoft
NEXUS_DELIVERY = "7f4a6dde-5c68-4999-bcc0-a62f3fb8ae48"  # Sonatype's documented example
# Sonatype's "Example Headers And Payloads" component event, for a Docker component.
NEXUS_DOCKER_COMPONENT = {
    "timestamp": "2016-11-14T19:32:13.515+0000", "nodeId": "7FFA7361-6ED33978-36997BD4-47095CC4-331356BE",
    "initiator": "anonymous/127.0.0.1", "repositoryName": "docker-hosted", "action": "CREATED",
    "component": {"id": "08909bf0c86cf6c9600aade89e1c5e25",
                  "componentId": "bnBtLXByb3h5OjA4OTA5YmYwYzg2Y2Y2Yzk2MDBhYWRlODllMWM1ZTI1",
                  "format": "docker", "name": "team/api", "group": None, "version": "1.4.2"}}
NS = "registry"  # the Receiver's namespace
APPS = "apps"  # the ImageRepositories'
NOTHING_NAMED = '[{kind: ImageRepository, name: "*", matchLabels: {scan: on-push}}]'


def mac(algorithm: str, body: bytes) -> str:
    return digest(algorithm, TOKEN, body).hex()


@dataclass(frozen=True)
class Push:
    """One registry's push: its Receiver type, the delivery, the image it names, and what the
    scan request's origin says of it."""

    rtype: str
    fixture: str
    headers: dict[str, str]
    repository: str  # an ImageRepository's spec.image for the pushed image, as a user would write it
    image: str  # origin.image: the reference as sent
    tag: str
    digest: str
    event: str
    delivery: str = ""

    @property
    def id(self) -> str:
        return self.fixture.split("/")[-1].removesuffix(".json") + f"-{self.rtype}"

    def body(self) -> bytes:
        return (FIXTURES / self.fixture).read_bytes()

    def sign(self, body: bytes) -> dict[str, str]:
        return {"Content-Type": "application/json", **self.headers, **{
            "harbor": {"Authorization": TOKEN},
            "ghcr": {"X-Hub-Signature-256": f"sha256={mac('sha256', body)}"},
            "nexus": {"X-Nexus-Webhook-Signature": mac("sha1", body)},
        }.get(self.rtype, {})}


PUSHES = [
    # Docker Hub's own example; `svendowideit/testhook` is how a user writes a Docker Hub image.
    Push("dockerhub", "dockerhub/push-docker-docs.json", {}, "svendowideit/testhook",
         "docker.io/svendowideit/testhook:latest", "latest", "", "push"),
    Push("dockerhub", "dockerhub/push-go-playground.json", {}, "docker.io/svendowideit/testhook",
         "docker.io/svendowideit/testhook:latest", "latest", "", "push"),
    Push("quay", "quay/repo_push.json", {}, "quay.io/mynamespace/repository",
         "quay.io/mynamespace/repository:latest", "latest", "", "repo_push"),
    Push("harbor", "harbor/PUSH_ARTIFACT.json", {}, "localhost/harbor/alpine",
         f"localhost/harbor/alpine@{HARBOR_DIGEST}", "", HARBOR_DIGEST, "PUSH_ARTIFACT"),
    Push("harbor", "harbor/cloudevents-harbor.artifact.pushed-comments-removed.json",
         {"Content-Type": "application/cloudevents+json"}, "localhost/harbor/alpine",
         f"localhost/harbor/alpine@{HARBOR_DIGEST}", "", HARBOR_DIGEST, "harbor.artifact.pushed",
         "66e18103-09c1-41f6-982f-37df223f3eeb"),
    # GitHub writes the owner as spelled (`Codertocat`); the registry's name is lowercase.
    Push("ghcr", "ghcr/package-published-container.json",
         {"X-GitHub-Event": "package", "X-GitHub-Delivery": "d1f3a2c0-ghcr"}, "ghcr.io/codertocat/hello-world",
         f"ghcr.io/Codertocat/hello-world@{GHCR_DIGEST}", "", GHCR_DIGEST, "package", "d1f3a2c0-ghcr"),
    Push("ghcr", "ghcr/registry_package-published-container.json",
         {"X-GitHub-Event": "registry_package", "X-GitHub-Delivery": "d2e4b3d1-ghcr"},
         "ghcr.io/codertocat/hello-world", f"ghcr.io/Codertocat/hello-world@{GHCR_DIGEST}", "", GHCR_DIGEST,
         "registry_package", "d2e4b3d1-ghcr"),
    Push("acr", "acr/push.json", {}, "myregistry.azurecr.io/hello-world", "myregistry.azurecr.io/hello-world:v1",
         "v1", ACR_DIGEST, "push", "cb8c3971-9adc-488b-xxxx-43cbb4974ff5"),
]
BY_ID = {p.id: p for p in PUSHES}
DOCKERHUB, HARBOR_CE, GHCR, ACR = (BY_ID["push-docker-docs-dockerhub"],
                                   BY_ID["cloudevents-harbor.artifact.pushed-comments-removed-harbor"],
                                   BY_ID["package-published-container-ghcr"], BY_ID["push-acr"])


def image_repository(name: str, image: str, *, namespace: str = APPS, suspend: bool = False,
                     labels: str = "{}") -> str:
    return dedent(f"""\
        ---
        apiVersion: image.toolkit.fluxcd.io/v1
        kind: ImageRepository
        metadata: {{name: {name}, namespace: {namespace}, labels: {labels}}}
        spec: {{image: "{image}", interval: 10m{", suspend: true" if suspend else ""}}}
        """)


def write_config(path: Path, rtype: str, repositories: str, resources: str = NOTHING_NAMED,
                 rate_limit: str = "") -> Path:
    """A Receiver of `rtype` in `registry`, the given ImageRepositories, and a GitRepository and
    Kustomization `app` in `apps` that `resources` may name."""
    path.write_text(receiver_yaml("registry", rtype, resources, namespace=NS,
                                  spec=f"rateLimit: {rate_limit}" if rate_limit else "") + dedent(f"""\
        apiVersion: source.toolkit.fluxcd.io/v1
        kind: GitRepository
        metadata: {{name: app, namespace: {APPS}}}
        spec: {{interval: 10m, url: "https://example.com/app.git", ref: {{branch: main}}}}
        ---
        apiVersion: kustomize.toolkit.fluxcd.io/v1
        kind: Kustomization
        metadata: {{name: app, namespace: {APPS}}}
        spec: {{interval: 10m, path: ./deploy, prune: true, sourceRef: {{kind: GitRepository, name: app}}}}
        """) + repositories)
    return path


class Herald:
    """The receiver app on the embedded bus, and what reached each queue."""

    def __init__(self, tmp_path: Path, rtype: str, repositories: str, resources: str = NOTHING_NAMED,
                 rate_limit: str = "") -> None:
        self.cfg = config.load([write_config(tmp_path / f"{uuid.uuid4().hex}.yaml", rtype, repositories, resources,
                                             rate_limit)])
        self.bus = open_bus(None, tmp_path / "state")
        self.app = create_app(self.cfg, self.bus, Settings(state_dir=tmp_path / "state"))
        self.client = self.app.test_client()
        self.hook = self.cfg.hook_path(self.cfg.receivers[(NS, "registry")])

    def post(self, push: Push, body: bytes | None = None, headers: dict[str, str] | None = None):
        body = push.body() if body is None else body
        return self.client.post(self.hook, data=body, headers=push.sign(body) | (headers or {}))

    def drain(self, queue: str) -> list[Delivery]:
        """Every message on `queue`, read through the bus's own consume API."""
        got: list[Delivery] = []
        waiting = self.bus.depth(queue)
        stop = threading.Event()

        def handle(delivery: Delivery) -> None:
            got.append(delivery)
            if len(got) == waiting:
                stop.set()

        if waiting:
            self.bus.consume(queue, handle, stop)
        return got

    def scans(self) -> list[ReconcileRequest]:
        return [ReconcileRequest.from_json(d.body) for d in self.drain(IMAGE_QUEUE)]

    def reconciles(self) -> list[ReconcileRequest]:
        return [ReconcileRequest.from_json(d.body) for d in self.drain(RECONCILE_QUEUE)]


@pytest.fixture
def herald(tmp_path: Path):
    made: list[Herald] = []

    def make(rtype: str, repositories: str, resources: str = NOTHING_NAMED, rate_limit: str = "") -> Herald:
        made.append(Herald(tmp_path, rtype, repositories, resources, rate_limit))
        return made[-1]

    yield make
    for h in made:
        h.bus.close()


def two_repositories(push: Push) -> str:
    """`app` for the pushed image, `other` for another one."""
    return image_repository("app", push.repository) + image_repository("other", "ghcr.io/example/other")


# ---- a push asks for a scan of its image's ImageRepositories ----------------------------------------


@pytest.mark.parametrize("push", PUSHES, ids=lambda p: p.id)
def test_a_registry_push_asks_for_one_scan_of_its_images_repository_and_reconciles_nothing(
        herald, push: Push) -> None:
    h = herald(push.rtype, two_repositories(push))
    resp = h.post(push)
    assert resp.status_code == 202, resp.json
    [delivery] = h.drain(IMAGE_QUEUE)
    scan = ReconcileRequest.from_json(delivery.body)
    assert resp.json == {"requests": [scan.id], "targets": [f"ImageRepository/{APPS}/app"]}
    assert (scan.kind, scan.namespace, scan.name, scan.reason) == ("ImageRepository", APPS, "app", "webhook")
    assert scan.origin == {"receiver": f"{NS}/registry", "type": push.rtype, "event": push.event,
                           "delivery": push.delivery, "image": push.image, "tag": push.tag, "digest": push.digest}
    # As the push path publishes: the request id is the message id, the delivery id (or one
    # made up for senders that give none) follows it in a header.
    assert delivery.message_id == scan.id
    if push.delivery:
        assert delivery.headers[DELIVERY_HEADER] == push.delivery
    else:
        assert delivery.headers[DELIVERY_HEADER].startswith("herald-")
    assert h.reconciles() == [] and h.drain(PLAN_QUEUE) == []


def test_the_scan_requests_message_is_what_the_image_worker_reads(herald) -> None:
    """The exact JSON on herald.images: ReconcileRequest's shape, kind ImageRepository."""
    h = herald("acr", two_repositories(ACR))
    assert h.post(ACR).status_code == 202
    [delivery] = h.drain(IMAGE_QUEUE)
    body = json.loads(delivery.body)
    assert set(body) == {"id", "kind", "name", "namespace", "requestedAt", "reason", "origin"}
    assert body | {"id": "-", "requestedAt": "-"} == {
        "id": "-", "requestedAt": "-", "kind": "ImageRepository", "name": "app", "namespace": APPS,
        "reason": "webhook",
        "origin": {"receiver": f"{NS}/registry", "type": "acr", "event": "push",
                   "delivery": "cb8c3971-9adc-488b-xxxx-43cbb4974ff5",
                   "image": "myregistry.azurecr.io/hello-world:v1", "tag": "v1", "digest": ACR_DIGEST}}


def test_every_imagerepository_of_the_image_is_scanned_once_in_any_namespace(herald) -> None:
    repositories = (image_repository("app", "quay.io/mynamespace/repository")
                    + image_repository("mirror", "quay.io/mynamespace/repository", namespace="team-b")
                    + image_repository("other", "quay.io/mynamespace/other"))
    # `app` is also named in spec.resources: still one scan.
    h = herald("quay", repositories, resources=f"[{{kind: ImageRepository, name: app, namespace: {APPS}}}]")
    resp = h.post(BY_ID["repo_push-quay"])
    assert resp.status_code == 202
    assert resp.json["targets"] == [f"ImageRepository/{APPS}/app", "ImageRepository/team-b/mirror"]
    assert sorted((s.namespace, s.name) for s in h.scans()) == [(APPS, "app"), ("team-b", "mirror")]


def test_an_imagerepository_named_in_resources_is_scanned_whatever_its_image(herald) -> None:
    """Flux requests a scan of every ImageRepository a Receiver names, whatever was pushed."""
    h = herald("harbor", two_repositories(HARBOR_CE),
               resources=f"[{{kind: ImageRepository, name: other, namespace: {APPS}}}]")
    resp = h.post(HARBOR_CE)
    assert resp.status_code == 202
    assert resp.json["targets"] == [f"ImageRepository/{APPS}/other", f"ImageRepository/{APPS}/app"]
    scans = {s.name: s for s in h.scans()}
    assert set(scans) == {"app", "other"}
    assert scans["other"].origin == scans["app"].origin == {
        "receiver": f"{NS}/registry", "type": "harbor", "event": "harbor.artifact.pushed",
        "delivery": HARBOR_CE.delivery, "image": HARBOR_CE.image, "tag": "", "digest": HARBOR_DIGEST}
    assert h.reconciles() == []


def test_imagerepositories_named_by_labels_are_scanned(herald) -> None:
    repositories = (two_repositories(DOCKERHUB)
                    + image_repository("labelled", "ghcr.io/example/labelled", labels="{scan: on-push}"))
    h = herald("dockerhub", repositories,
               resources=f'[{{kind: ImageRepository, name: "*", namespace: {APPS}, matchLabels: {{scan: on-push}}}}]')
    assert h.post(DOCKERHUB).status_code == 202
    assert sorted(s.name for s in h.scans()) == ["app", "labelled"]


# ---- registry pushes that also reconcile -------------------------------------------------------------


def test_a_receiver_that_also_selects_a_gitrepository_reconciles_it_in_the_same_answer(herald) -> None:
    h = herald("ghcr", two_repositories(GHCR), resources=f"[{{kind: GitRepository, name: app, namespace: {APPS}}}]")
    resp = h.post(GHCR)
    assert resp.status_code == 202
    [reconcile] = h.reconciles()
    [scan] = h.scans()
    assert resp.json == {"requests": [reconcile.id, scan.id],
                         "targets": [f"GitRepository/{APPS}/app", f"ImageRepository/{APPS}/app"]}
    # The reconcile is what it was before image scans: the image and digest for the record.
    assert reconcile.origin == {"receiver": f"{NS}/registry", "type": "ghcr", "event": "package",
                                "delivery": GHCR.delivery, "revision": "", "image": GHCR.image, "digest": GHCR_DIGEST}
    assert scan.origin["image"] == GHCR.image and scan.origin["digest"] == GHCR_DIGEST


def test_a_push_no_imagerepository_is_for_still_reconciles_what_resources_selects(herald) -> None:
    """A registry Receiver written before image scans (only Kustomizations named) keeps working."""
    h = herald("quay", image_repository("other", "ghcr.io/example/other"),
               resources=f"[{{kind: Kustomization, name: app, namespace: {APPS}}}]")
    resp = h.post(BY_ID["repo_push-quay"])
    assert resp.status_code == 202 and resp.json["targets"] == [f"Kustomization/{APPS}/app"]
    assert [r.name for r in h.reconciles()] == ["app"] and h.scans() == []


def test_a_git_push_to_a_receiver_naming_an_imagerepository_asks_for_its_scan(herald) -> None:
    """As in Flux, a Receiver's ImageRepositories are scanned whatever the sender: here a Git push."""
    h = herald("github", image_repository("app", "ghcr.io/example/app"),
               resources=f"[{{kind: GitRepository, name: app, namespace: {APPS}}}, "
                         f"{{kind: ImageRepository, name: app, namespace: {APPS}}}]")
    body = github_push("a" * 40)
    resp = h.client.post(h.hook, data=body, headers={
        "Content-Type": "application/json", "X-GitHub-Event": "push", "X-GitHub-Delivery": "git-1",
        "X-Hub-Signature-256": f"sha256={mac('sha256', body)}"})
    assert resp.status_code == 202
    assert resp.json["targets"] == [f"GitRepository/{APPS}/app", f"ImageRepository/{APPS}/app"]
    [scan] = h.scans()
    assert scan.origin == {"receiver": f"{NS}/registry", "type": "github", "event": "push", "delivery": "git-1",
                           "image": "", "tag": "", "digest": ""}
    [reconcile] = h.reconciles()
    assert reconcile.origin["revision"] == f"main@sha1:{'a' * 40}"


# ---- one image, many spellings ------------------------------------------------------------------------


def test_nginx_docker_io_and_index_docker_io_are_one_image(herald) -> None:
    repositories = (image_repository("short", "nginx") + image_repository("canonical", "docker.io/library/nginx")
                    + image_repository("index", "index.docker.io/library/nginx")
                    + image_repository("elsewhere", "ghcr.io/library/nginx")
                    + image_repository("another", "docker.io/library/nginx-unprivileged"))
    payload = json.loads(DOCKERHUB.body())
    payload["repository"]["repo_name"] = "library/nginx"
    payload["push_data"]["tag"] = "1.27"
    h = herald("dockerhub", repositories)
    resp = h.post(DOCKERHUB, json.dumps(payload).encode())
    assert resp.status_code == 202
    scans = h.scans()
    assert sorted(s.name for s in scans) == ["canonical", "index", "short"]
    assert {(s.origin["image"], s.origin["tag"]) for s in scans} == {("docker.io/library/nginx:1.27", "1.27")}


@pytest.mark.parametrize("sent", [
    "docker.io/library/nginx:1.27", "index.docker.io/library/nginx:1.27", "docker.io/nginx:1.27",
    "registry-1.docker.io/library/nginx@" + HARBOR_DIGEST, "docker.io/library/nginx:1.27@" + HARBOR_DIGEST,
    "DOCKER.IO/library/nginx",
])
def test_image_targets_matches_the_canonical_image_however_the_delivery_spells_it(tmp_path: Path, sent: str) -> None:
    cfg = config.load([write_config(tmp_path / "c.yaml", "generic",
                                    image_repository("short", "nginx") + image_repository("other", "nginx-other"))])
    receiver = cfg.receivers[(NS, "registry")]
    assert image_targets(cfg, receiver, Hook(event="push", image=sent)) == (
        [Target("ImageRepository", "short", APPS)], [])


def test_a_reference_is_split_at_its_digest_and_at_a_colon_after_the_last_slash() -> None:
    assert split_reference("localhost:5000/team/app:v1@sha256:abc") == ("localhost:5000/team/app", "v1", "sha256:abc")
    assert split_reference("localhost:5000/team/app") == ("localhost:5000/team/app", "", "")
    assert split_reference("ghcr.io/o/n@sha256:abc") == ("ghcr.io/o/n", "", "sha256:abc")
    hook = Hook(event="push", image="quay.io/o/n:v2@sha256:abc", digest="sha256:def")
    image = webhook_image(hook)
    assert (str(image.name), image.tag, image.digest) == ("quay.io/o/n", "v2", "sha256:def")  # the sender's digest


# ---- what is not scanned ----------------------------------------------------------------------------------


def test_a_suspended_imagerepository_is_skipped_with_a_log_line(herald, caplog) -> None:
    repositories = (image_repository("app", "localhost/harbor/alpine", suspend=True)
                    + image_repository("live", "localhost/harbor/alpine", namespace="team-b"))
    h = herald("harbor", repositories)
    caplog.set_level(logging.INFO, logger="herald.receiver")
    resp = h.post(BY_ID["PUSH_ARTIFACT-harbor"])
    assert resp.status_code == 202 and resp.json["targets"] == ["ImageRepository/team-b/live"]
    assert [s.name for s in h.scans()] == ["live"]
    [line] = [r.getMessage() for r in caplog.records if "suspended" in r.getMessage()]
    assert f"skipped: ImageRepository {APPS}/app is suspended" in line


def test_a_push_whose_only_imagerepository_is_suspended_is_200(herald) -> None:
    h = herald("quay", image_repository("app", "quay.io/mynamespace/repository", suspend=True))
    resp = h.post(BY_ID["repo_push-quay"])
    assert (resp.status_code, resp.json) == (200, {
        "message": "no ImageRepository to scan for quay.io/mynamespace/repository (those found are suspended), "
                   "and spec.resources selects nothing to reconcile; nothing to do",
        "skipped": [f"ImageRepository {APPS}/app is suspended"]})
    assert h.scans() == [] and h.reconciles() == []


def test_a_push_no_imagerepository_is_for_and_nothing_else_selected_is_200_saying_why(herald) -> None:
    h = herald("dockerhub", image_repository("other", "ghcr.io/example/other"))
    resp = h.post(DOCKERHUB)
    assert (resp.status_code, resp.json) == (200, {
        "message": "no ImageRepository to scan for docker.io/svendowideit/testhook, "
                   "and spec.resources selects nothing to reconcile; nothing to do",
        "skipped": []})
    assert h.scans() == [] and h.reconciles() == []


def nexus_push() -> tuple[Push, bytes]:
    body = json.dumps(NEXUS_DOCKER_COMPONENT, separators=(",", ":")).encode()
    push = Push("nexus", "(sonatype example)", {"X-Nexus-Webhook-Id": "rm:repository:component",
                                                "X-Nexus-Webhook-Delivery": NEXUS_DELIVERY},
                "", "team/api:1.4.2", "1.4.2", "", "rm:repository:component", NEXUS_DELIVERY)
    return push, body


def test_an_image_without_a_registry_host_is_not_taken_for_docker_hub(herald) -> None:
    """Nexus names a Docker component `team/api` without its connector's host: the registry is
    unknown, so `docker.io/team/api` is not scanned for it, and the answer says why."""
    push, body = nexus_push()
    h = herald("nexus", image_repository("hub", "docker.io/team/api"))
    resp = h.post(push, body)
    assert resp.status_code == 200
    assert resp.json["message"] == ("the image 'team/api' names no registry host, so no ImageRepository can be "
                                    "matched to it by image, and spec.resources selects nothing to reconcile; "
                                    "nothing to do")
    assert h.scans() == [] and h.reconciles() == []


def test_a_nexus_push_scans_the_imagerepositories_its_receiver_names(herald) -> None:
    push, body = nexus_push()
    h = herald("nexus", image_repository("app", "nexus.example.com:8443/team/api"),
               resources=f"[{{kind: ImageRepository, name: app, namespace: {APPS}}}]")
    assert h.post(push, body).status_code == 202
    [scan] = h.scans()
    assert scan.name == "app" and scan.origin == {
        "receiver": f"{NS}/registry", "type": "nexus", "event": "rm:repository:component",
        "delivery": NEXUS_DELIVERY, "image": "team/api:1.4.2", "tag": "1.4.2", "digest": ""}


# ---- delivery handling is the push path's -------------------------------------------------------------------


def test_a_replayed_delivery_is_200_duplicate_and_scanned_once(herald) -> None:
    h = herald("harbor", two_repositories(HARBOR_CE))
    assert h.post(HARBOR_CE).status_code == 202
    again = h.post(HARBOR_CE)
    assert (again.status_code, again.json) == (200, {"message": "duplicate delivery; already accepted",
                                                     "delivery": HARBOR_CE.delivery})
    assert len(h.scans()) == 1


def test_a_scan_the_broker_did_not_confirm_is_503_and_the_retry_publishes_everything(herald) -> None:
    """The reconcile went out, the scan did not: the delivery is not remembered as accepted
    until both are on the bus, so the sender's retry is not taken for a duplicate."""
    h = herald("acr", two_repositories(ACR), resources=f"[{{kind: GitRepository, name: app, namespace: {APPS}}}]")
    publish, calls = h.bus.publish, []

    def flaky(queue: str, *args: Any, **kw: Any) -> None:
        calls.append(queue)
        if queue == IMAGE_QUEUE and calls.count(IMAGE_QUEUE) == 1:
            raise BusUnavailable("no confirm in time")
        publish(queue, *args, **kw)

    h.bus.publish = flaky
    resp = h.post(ACR)
    assert resp.status_code == 503 and resp.headers["Retry-After"]
    assert h.post(ACR).status_code == 202
    assert calls == [RECONCILE_QUEUE, IMAGE_QUEUE, RECONCILE_QUEUE, IMAGE_QUEUE]
    assert len(h.scans()) == 1 and len(h.reconciles()) == 2  # the first reconcile went out too


def test_a_rate_limited_push_is_429_and_not_scanned(herald) -> None:
    push = BY_ID["repo_push-quay"]
    h = herald("quay", two_repositories(push), rate_limit="{requests: 1, interval: 1h}")
    assert h.post(push).status_code == 202
    resp = h.post(push)
    assert resp.status_code == 429 and resp.headers["Retry-After"]
    assert len(h.scans()) == 1


@pytest.mark.parametrize("kind,warned", [("ImageRepository", False), ("ImagePolicy", True)])
def test_validation_no_longer_says_imagerepository_requests_are_ignored(tmp_path: Path, kind: str,
                                                                        warned: bool) -> None:
    cfg_file = write_config(tmp_path / "c.yaml", "dockerhub",
                            image_repository("app", "nginx") + dedent(f"""\
                                ---
                                apiVersion: image.toolkit.fluxcd.io/v1
                                kind: ImagePolicy
                                metadata: {{name: app, namespace: {APPS}}}
                                spec:
                                  imageRepositoryRef: {{name: app}}
                                  policy: {{semver: {{range: "*"}}}}
                                """),
                            resources=f"[{{kind: {kind}, name: app, namespace: {APPS}}}]")
    out = [str(d) for d in config.check([cfg_file])[1]]
    assert any("requests for it are ignored" in line for line in out) is warned, out
    assert not any("not found" in line for line in out), out

