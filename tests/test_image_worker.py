"""A registry push becomes a Git commit and a reconcile of it (issue 15), against a real
registry (Debian's docker-registry) and a real Git remote.

Each scenario pushes images to the registry with its HTTP API, writes Flux's kinds as a user
would, and hands the worker's bus handler the image scan request the receiver publishes for a
registry webhook."""

from __future__ import annotations

import textwrap
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from herald import config
from herald.bus import Delivery, RetryLater, open_bus
from herald.messages import IMAGE_QUEUE, RECONCILE_QUEUE, ReconcileRequest
from reconciler.worker import Reconciler
from tests.fixtures_herald import Repo, git, image_automation, marked_deployment
from tests.registry import PagingRegistry, Registry, install, push_image, start_registry
from tests.test_end_to_end import wait_until
from tests.test_honest_runs import drain_events


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    problem = install()
    if problem:
        pytest.fail(f"no docker-registry for the image automation scenarios: {problem}")
    with start_registry(tmp_path_factory.mktemp("registry")) as running:
        yield running


def image_config(tmp_path: Path, repo: Repo, image: str) -> Path:
    path = tmp_path / "herald.yaml"
    path.write_text(image_automation(repo.url, image, insecure=True, git="""\
        git:
          commit:
            author: {name: Herald Bot, email: herald@example.com}
            messageTemplate: "Update {{ Changed.Changes | map(attribute='NewValue') | join(', ') }}"
        """))
    return path


@pytest.fixture
def scene(tmp_path: Path, repo: Repo, registry: Registry):
    image = f"{registry.host}/acme/web-{uuid.uuid4().hex[:8]}"  # a repository of the scenario's own
    repository = image.split("/", 1)[1]
    for tag in ("1.4.2", "1.5.0", "2.0.0-rc.1", "latest"):
        push_image(registry, repository, tag)
    repo.commit({"deploy/web.yaml": marked_deployment(image)}, "the web tier")
    bus = open_bus(None, tmp_path / "state")
    worker = Reconciler(config.load([image_config(tmp_path, repo, image)]), bus, tmp_path / "state", cluster=None)
    yield worker, image, repository
    bus.close()


def scan(worker: Reconciler, delivery: str = "registry-delivery-1", *, tag: str = "", attempt: int = 1) -> list[dict]:
    """The receiver's scan request for a registry webhook (announcing `tag`, when given), handled."""
    origin = {"receiver": "flux-system/registry", "type": "generic", "delivery": delivery}
    if tag:
        origin["tag"] = tag
    req = ReconcileRequest(kind="ImageRepository", name="web", namespace="flux-system", reason="webhook",
                           origin=origin)
    worker.images.handle(Delivery(IMAGE_QUEUE, req.to_json(), req.id, attempt=attempt))
    return drain_events(worker.bus)


def test_a_new_image_becomes_a_commit_and_a_reconcile_of_it(scene, repo: Repo, registry: Registry) -> None:
    worker, image, _ = scene
    events = scan(worker)
    said = [(e["involvedObject"]["kind"], e["reason"], e["message"].splitlines()[0]) for e in events]
    head = git("rev-parse", "main", cwd=repo.bare)
    assert said == [
        ("ImageRepository", "Succeeded", "successful scan: found 4 tags"),
        # the tag it replaced is read from Git when this worker has not resolved it before
        ("ImagePolicy", "Succeeded", f"Latest image tag for '{image}' resolved to 1.5.0 (previously 1.4.2)"),
        ("ImageUpdateAutomation", "Succeeded", f"pushed commit '{head[:7]}' to branch 'main'"),
    ]
    assert events[-1]["message"].splitlines()[1] == f"Update {image}:1.5.0"
    assert git("show", "main:deploy/web.yaml", cwd=repo.bare) + "\n" == marked_deployment(image, "1.5.0")
    # the commit is reconciled like a push, under the registry delivery's id
    [req] = pending(worker, RECONCILE_QUEUE)
    assert (req.kind, req.name, req.origin["revision"]) == ("GitRepository", "app", f"main@sha1:{head}")
    assert req.origin["delivery"] == "registry-delivery-1"


def test_the_next_release_is_a_second_commit_and_says_what_it_replaced(scene, repo: Repo, registry: Registry) -> None:
    worker, image, repository = scene
    scan(worker)
    commits = int(git("rev-list", "--count", "main", cwd=repo.bare))
    push_image(registry, repository, "1.6.0")
    events = scan(worker, "registry-delivery-2")
    assert f"Latest image tag for '{image}' resolved to 1.6.0 (previously 1.5.0)" in [e["message"] for e in events]
    assert f"{image}:1.6.0" in git("show", "main:deploy/web.yaml", cwd=repo.bare)
    assert int(git("rev-list", "--count", "main", cwd=repo.bare)) == commits + 1  # one commit for 1.6.0


def test_a_tag_the_policy_rejects_commits_nothing(scene, repo: Repo, registry: Registry) -> None:
    worker, _, repository = scene
    scan(worker)
    before = git("rev-parse", "main", cwd=repo.bare)
    push_image(registry, repository, "3.0.0-rc.1")  # a pre-release: ">=1.0.0" does not take it
    events = scan(worker, "registry-delivery-3")
    assert git("rev-parse", "main", cwd=repo.bare) == before
    assert [e["involvedObject"]["kind"] for e in events] == ["ImageRepository"]  # nothing new to say


def test_a_registry_that_cannot_be_reached_is_tried_again_later(tmp_path: Path, repo: Repo) -> None:
    repo.commit({"deploy/web.yaml": marked_deployment("127.0.0.1:1/acme/web")}, "the web tier")
    bus = open_bus(None, tmp_path / "state")
    worker = Reconciler(config.load([image_config(tmp_path, repo, "127.0.0.1:1/acme/web")]), bus,
                        tmp_path / "state", cluster=None)
    try:
        with pytest.raises(RetryLater):
            scan(worker)
        [event] = drain_events(bus)
        assert (event["reason"], event["severity"]) == ("ScanFailed", "error")
    finally:
        bus.close()


def test_a_webhook_for_a_tag_the_registry_does_not_serve_yet_is_asked_again_then_scanned(
        scene, repo: Repo) -> None:
    worker, image, _ = scene
    before = git("rev-parse", "main", cwd=repo.bare)
    for attempt in (1, 2):  # the webhook came before the registry's replicas had the tag
        with pytest.raises(RetryLater, match="1.6.0, which the webhook announced, is not served"):
            scan(worker, tag="1.6.0", attempt=attempt)
        assert git("rev-parse", "main", cwd=repo.bare) == before
        assert drain_events(worker.bus) == []
    events = scan(worker, tag="1.6.0", attempt=3)  # the last try scans what the registry serves
    assert f"Latest image tag for '{image}' resolved to 1.5.0 (previously 1.4.2)" in [e["message"] for e in events]
    assert f"{image}:1.5.0" in git("show", "main:deploy/web.yaml", cwd=repo.bare)


def test_a_tag_the_registry_serves_before_it_lists_it_is_confirmed_with_one_head_and_deployed(
        tmp_path: Path, repo: Repo) -> None:
    with PagingRegistry({"acme/web": ["1.4.2", "1.5.0"]}, unlisted=frozenset({"1.5.0"})) as lagging:
        image = f"{lagging.host}/acme/web"
        repo.commit({"deploy/web.yaml": marked_deployment(image)}, "the web tier")
        bus = open_bus(None, tmp_path / "state")
        worker = Reconciler(config.load([image_config(tmp_path, repo, image)]), bus, tmp_path / "state", cluster=None)
        try:
            events = scan(worker, tag="1.5.0")
        finally:
            bus.close()
        assert f"{image}:1.5.0" in git("show", "main:deploy/web.yaml", cwd=repo.bare)
        assert f"Latest image tag for '{image}' resolved to 1.5.0 (previously 1.4.2)" in [e["message"] for e in events]
        asked = [(r.method, r.path) for r in lagging.requests]
        assert asked == [("HEAD", "/v2/acme/web/manifests/1.5.0"), ("GET", "/v2/acme/web/tags/list")]


def pending(worker: Reconciler, queue: str) -> list[ReconcileRequest]:
    """Messages waiting on `queue`, consumed as the worker's reconcile threads would."""
    got: list[ReconcileRequest] = []
    stop = threading.Event()
    t = threading.Thread(target=worker.bus.consume,
                         args=(queue, lambda d: got.append(ReconcileRequest.from_json(d.body)), stop))
    t.start()
    try:
        wait_until(lambda: worker.bus.depth(queue) == 0, 10, f"{queue} to be drained")
    finally:
        stop.set()
        t.join(timeout=10)
    return got



def test_two_images_of_one_release_pushed_together_become_one_commit(tmp_path: Path, repo: Repo,
                                                                      registry: Registry) -> None:
    """web and api pushed within the window: the first webhook's scan waits for it, sees both,
    and commits both; the second finds every value current and commits nothing."""
    suffix = uuid.uuid4().hex[:8]
    web, api = f"{registry.host}/acme/web-{suffix}", f"{registry.host}/acme/api-{suffix}"
    for image in (web, api):
        push_image(registry, image.split("/", 1)[1], "1.4.2")
    repo.commit({"deploy/web.yaml": marked_deployment(web), "deploy/api.yaml": marked_deployment(api).replace(
        "name: web", "name: api").replace("flux-system:web", "flux-system:api")}, "web and api")
    path = image_config(tmp_path, repo, web)
    path.write_text(path.read_text() + textwrap.dedent(f"""\
        ---
        apiVersion: image.toolkit.fluxcd.io/v1
        kind: ImageRepository
        metadata: {{name: api, namespace: flux-system}}
        spec: {{image: {api}, interval: 5m, insecure: true}}
        ---
        apiVersion: image.toolkit.fluxcd.io/v1
        kind: ImagePolicy
        metadata: {{name: api, namespace: flux-system}}
        spec:
          imageRepositoryRef: {{name: api}}
          policy: {{semver: {{range: ">=1.0.0"}}}}
        """))
    bus = open_bus(None, tmp_path / "state")
    worker = Reconciler(config.load([path]), bus, tmp_path / "state", cluster=None)
    worker.images.window = 0.5
    try:
        before = int(git("rev-list", "--count", "main", cwd=repo.bare))
        requests = []
        for name, image in (("web", web), ("api", api)):  # the release: both pushed, both webhooks sent
            push_image(registry, image.split("/", 1)[1], "1.5.0")
            requests.append(ReconcileRequest(kind="ImageRepository", name=name, namespace="flux-system",
                                             reason="webhook", origin={"delivery": f"release-{name}"}))
        for req in requests:  # one after the other, as the worker's consumer takes them
            worker.images.handle(Delivery(IMAGE_QUEUE, req.to_json(), req.id))
        assert int(git("rev-list", "--count", "main", cwd=repo.bare)) == before + 1
        assert git("show", "--name-only", "--format=", "main", cwd=repo.bare).split() == \
            ["deploy/api.yaml", "deploy/web.yaml"]
        assert f"{web}:1.5.0" in git("show", "main:deploy/web.yaml", cwd=repo.bare)
        assert f"{api}:1.5.0" in git("show", "main:deploy/api.yaml", cwd=repo.bare)
    finally:
        bus.close()


def test_a_worker_that_dies_before_or_after_its_push_leaves_one_commit(scene, repo: Repo) -> None:
    """The scan request stays on the bus until handled: a worker killed before its push is
    redelivered and pushes then; one killed after its push (before the ack) is redelivered,
    finds every value current, and commits nothing more."""
    worker, image, _ = scene
    before = int(git("rev-list", "--count", "main", cwd=repo.bare))
    req = ReconcileRequest(kind="ImageRepository", name="web", namespace="flux-system", reason="interval")
    git_push = worker.images.git.push

    def dies_before_pushing(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise SystemExit("killed")

    worker.images.git.push = dies_before_pushing  # type: ignore[method-assign]
    with pytest.raises(SystemExit):
        worker.images.handle(Delivery(IMAGE_QUEUE, req.to_json(), req.id))
    assert int(git("rev-list", "--count", "main", cwd=repo.bare)) == before  # nothing pushed
    worker.images.git.push = git_push  # type: ignore[method-assign]
    for attempt in (2, 3):  # redelivered; then redelivered again, as if killed before the ack
        worker.images.handle(Delivery(IMAGE_QUEUE, req.to_json(), req.id, attempt=attempt))
    assert int(git("rev-list", "--count", "main", cwd=repo.bare)) == before + 1
    assert f"{image}:1.5.0" in git("show", "main:deploy/web.yaml", cwd=repo.bare)


def test_the_image_kinds_in_the_cluster_get_the_status_flux_writes(tmp_path: Path, repo: Repo, registry: Registry,
                                                                   kube_api, kubeconfig: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Where Herald's CRDs are installed and the image objects applied, `kubectl get
    imagepolicies` shows the latest tag, as with Flux's image controllers."""
    import yaml

    from tests.test_deploy import render

    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    for crd in render("crds"):
        if crd["spec"]["names"]["kind"].startswith("Image"):
            kube_api.apply_object(crd)
    image = f"{registry.host}/acme/web-{uuid.uuid4().hex[:8]}"
    for tag in ("1.4.2", "1.5.0"):
        push_image(registry, image.split("/", 1)[1], tag)
    repo.commit({"deploy/web.yaml": marked_deployment(image)}, "the web tier")
    path = image_config(tmp_path, repo, image)
    kube_api.apply_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "flux-system"}})
    for doc in yaml.safe_load_all(path.read_text()):
        if doc["kind"].startswith("Image"):
            kube_api.apply_object({**doc, "apiVersion": "herald.dev/v1"})
    bus = open_bus(None, tmp_path / "state")
    worker = Reconciler(config.load([path]), bus, tmp_path / "state")
    try:
        scan(worker)
    finally:
        bus.close()
    policy = kube_api.get_object("herald.dev/v1", "ImagePolicy", "flux-system", "web") or {}
    assert policy["status"]["latestRef"] == {"name": image, "tag": "1.5.0"}
    scanned = kube_api.get_object("herald.dev/v1", "ImageRepository", "flux-system", "web") or {}
    assert scanned["status"]["lastScanResult"]["tagCount"] == 2
    automation = kube_api.get_object("herald.dev/v1", "ImageUpdateAutomation", "flux-system", "app") or {}
    assert automation["status"]["lastPushCommit"] == git("rev-parse", "main", cwd=repo.bare)
