"""Every receiver type end to end through the HTTP app: a real delivery in, a request on the bus.

Each scenario posts a third-party payload from tests/webhooks with the headers its sender
puts on it, signed with the Receiver's token where the type signs, and checks what was
published — the revision a push names, the image a registry names — and what was not.
"""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from textwrap import dedent

import pytest

from herald import config
from herald.bus import open_bus
from herald.bus.stream_log import StreamDeliveryLog
from herald.messages import RECONCILE_QUEUE, ReconcileRequest
from herald.settings import Settings
from receiver.app import create_app
from receiver.signatures import digest
from tests.fixtures_herald import FIXTURES, TOKEN

ROTATED = "the-new-key-being-rolled-out"


def drain(bus) -> list[ReconcileRequest]:
    got: list[ReconcileRequest] = []
    stop = threading.Event()
    t = threading.Thread(target=bus.consume,
                         args=(RECONCILE_QUEUE, lambda d: got.append(ReconcileRequest.from_json(d.body)), stop))
    t.start()
    t.join(timeout=0.5)
    stop.set()
    t.join()
    return got


def signed(kind: str, body: bytes, key: str = TOKEN) -> dict[str, str]:
    """The authentication headers a sender of `kind` puts on `body` when given `key`."""
    hexmac = {alg: digest(alg, key, body).hex() for alg in ("sha1", "sha256")}
    return {
        "github": {"X-Hub-Signature-256": f"sha256={hexmac['sha256']}"},
        "ghcr": {"X-Hub-Signature-256": f"sha256={hexmac['sha256']}"},
        "gitlab": {"X-Gitlab-Token": key},
        "bitbucket": {"X-Hub-Signature": f"sha256={hexmac['sha256']}"},
        "bitbucketserver": {"X-Hub-Signature": f"sha256={hexmac['sha256']}"},
        "gitea": {"X-Gitea-Signature": hexmac["sha256"]},
        "forgejo": {"X-Forgejo-Signature": hexmac["sha256"]},
        "gogs": {"X-Gogs-Signature": hexmac["sha256"]},
        "harbor": {"Authorization": key},
        "nexus": {"X-Nexus-Webhook-Signature": hexmac["sha1"]},
        "generic-hmac": {"X-Signature": f"sha256={hexmac['sha256']}"},
    }.get(kind, {})


@dataclass
class Case:
    type: str
    fixture: str
    headers: dict[str, str]
    branch: str = "main"  # what the GitRepository follows ("tag:<name>" for a tag)
    revision: str = ""
    image: str = ""
    digest: str = ""
    extra_secret: dict[str, str] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.type}:{self.fixture}"


NEXUS_BODY = json.dumps({
    "timestamp": "2016-11-10T23:57:49.664+0000", "nodeId": "52905B51-085CCABB-CEBBEAAD-16795588-FC927D11",
    "initiator": "admin/127.0.0.1", "repositoryName": "docker-hosted", "action": "CREATED",
    "component": {"id": "08909bf0c86cf6c9600aade89e1c5e25", "componentId": "MDg5MDliZjBjODZjZjZjOTYwMGFhZGU4OWUxYzVlMjU",
                  "format": "docker", "name": "team/app", "group": None, "version": "1.4.2"},
}).encode()

CASES = [
    Case("github", "github/push-with-new-branch.json", {"X-GitHub-Event": "push"}, branch="master",
         revision="master@sha1:6113728f27ae82c7b1a177c8d03f9e96e0adf246"),
    Case("gitlab", "gitlab/push.json", {"X-Gitlab-Event": "Push Hook"}, branch="master",
         revision="master@sha1:da1560886d4f094c3e6c9ef40349f7d38b5d27d7"),
    Case("gitlab", "gitlab/tag_push.json", {"X-Gitlab-Event": "Tag Push Hook"}, branch="tag:v1.0.0",
         revision="v1.0.0@sha1:82b3d5ae55f7080f1e6022629cdb57bfae7cccc7"),
    Case("bitbucket", "bitbucket/repo-push-go-scm.json", {"X-Event-Key": "repo:push"}, branch="master",
         revision="master@sha1:141977fedf5cf35aa290ac87d4b5177ac4cd9de1"),
    Case("bitbucketserver", "bitbucket-server/repo-refs_changed-go-scm.json",
         {"X-Event-Key": "repo:refs_changed"}, branch="master",
         revision="master@sha1:823b2230a56056231c9425d63758fa87078a66b4"),
    Case("gitea", "gitea/push.json", {"X-Gitea-Event": "push"}, branch="master",
         revision="master@sha1:67b56589a45103f891bdee7c0546e5d40bc02001"),
    Case("forgejo", "gitea/push.json", {"X-Forgejo-Event": "push"}, branch="master",
         revision="master@sha1:67b56589a45103f891bdee7c0546e5d40bc02001"),
    Case("gogs", "gogs/push.json", {"X-Gogs-Event": "push"}, branch="develop",
         revision="develop@sha1:bffeb74224043ba2feb48d137756c8a9331c449a"),
    Case("dockerhub", "dockerhub/push-docker-docs.json", {}, image="docker.io/svendowideit/testhook:latest"),
    Case("quay", "quay/repo_push.json", {}, image="quay.io/mynamespace/repository:latest"),
    Case("harbor", "harbor/PUSH_ARTIFACT.json", {},
         image="localhost/harbor/alpine@sha256:954b378c375d852eb3c63ab88978f640b4348b01c1b3456a024a81536dafbbf4",
         digest="sha256:954b378c375d852eb3c63ab88978f640b4348b01c1b3456a024a81536dafbbf4"),
    Case("harbor", "harbor/cloudevents-harbor.artifact.pushed-comments-removed.json",
         {"Content-Type": "application/cloudevents+json"},
         image="localhost/harbor/alpine@sha256:954b378c375d852eb3c63ab88978f640b4348b01c1b3456a024a81536dafbbf4",
         digest="sha256:954b378c375d852eb3c63ab88978f640b4348b01c1b3456a024a81536dafbbf4"),
    Case("ghcr", "ghcr/registry_package-published-container.json", {"X-GitHub-Event": "registry_package"},
         image="ghcr.io/Codertocat/hello-world@sha256:3da1996a8115d7616457760d9920b815241d0a03b34cf5f04e9a0e9d8de37498",
         digest="sha256:3da1996a8115d7616457760d9920b815241d0a03b34cf5f04e9a0e9d8de37498"),
    Case("acr", "acr/push.json", {}, image="myregistry.azurecr.io/hello-world:v1",
         digest="sha256:xxxxd5c8786bb9e621a45ece0dbxxxx1cdc624ad20da9fe62e9d25490f33xxxx"),
    Case("nexus", "(sonatype example)", {"X-Nexus-Webhook-Id": "rm:repository:component",
                                         "Content-Type": "application/json; charset=UTF-8"},
         image="team/app:1.4.2"),
    Case("generic", "cloudevents/binary-json-data-body.json", {}),
    Case("generic-hmac", "github/push-go-scm.json", {}),
    Case("cloudevents", "cloudevents/structured-json-data.json", {"Content-Type": "application/cloudevents+json"}),
]


def write_case_config(path: Path, case: Case, *, rate_limit: str = "", events: str = "") -> Path:
    ref = f"tag: {case.branch[4:]}" if case.branch.startswith("tag:") else f"branch: {case.branch}"
    secret = {"token": TOKEN + "\n", "rotationKeys": f"\n  {ROTATED}  \n", **case.extra_secret}
    path.write_text(dedent(f"""\
        apiVersion: v1
        kind: Secret
        metadata: {{name: hook-token, namespace: apps}}
        stringData: {json.dumps(secret)}
        ---
        apiVersion: notification.toolkit.fluxcd.io/v1
        kind: Receiver
        metadata: {{name: hook, namespace: apps}}
        spec:
          type: {case.type}
          secretRef: {{name: hook-token}}
          resources: [{{kind: GitRepository, name: app}}]
        """) + (f"  rateLimit: {rate_limit}\n" if rate_limit else "") + (
        f"  events: {events}\n" if events else "") + dedent(f"""\
        ---
        apiVersion: source.toolkit.fluxcd.io/v1
        kind: GitRepository
        metadata: {{name: app, namespace: apps}}
        spec: {{interval: 10m, url: "https://example.com/app.git", ref: {{{ref}}}}}
        """))
    return path


def _body(case: Case) -> bytes:
    return NEXUS_BODY if case.type == "nexus" else (FIXTURES / case.fixture).read_bytes()


@pytest.fixture
def receiver_for(tmp_path: Path):
    made = []

    def make(case: Case, **kw):
        cfg = config.load([write_case_config(tmp_path / f"{uuid.uuid4().hex}.yaml", case, **kw)])
        bus = open_bus(None, tmp_path / "state")
        made.append(bus)
        app = create_app(cfg, bus, Settings(state_dir=tmp_path / "state"))
        return app.test_client(), cfg.hook_path(cfg.receivers[("apps", "hook")]), bus

    yield make
    for bus in made:
        bus.close()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_real_delivery_of_each_type_is_published_with_what_it_names(receiver_for, case: Case) -> None:
    client, hook, bus = receiver_for(case)
    body = _body(case)
    headers = {"Content-Type": "application/json", **case.headers, **signed(case.type, body)}
    resp = client.post(hook, data=body, headers=headers)
    assert resp.status_code == 202, resp.json
    [req] = drain(bus)
    assert (req.kind, req.namespace, req.name) == ("GitRepository", "apps", "app")
    assert req.origin["receiver"] == "apps/hook" and req.origin["type"] == case.type
    assert req.origin["revision"] == case.revision
    assert req.origin.get("image", "") == case.image
    assert req.origin.get("digest", "") == case.digest


SIGNED = [c for c in CASES if signed(c.type, b"") and c.fixture != "gitlab/tag_push.json"]


@pytest.mark.parametrize("case", SIGNED, ids=[c.id for c in SIGNED])
def test_a_rotation_key_verifies_and_a_stranger_key_does_not(receiver_for, case: Case) -> None:
    """The Secret's rotationKeys let a sender move to a new key without a failed delivery."""
    client, hook, bus = receiver_for(case)
    body = _body(case)
    base = {"Content-Type": "application/json", **case.headers}
    assert client.post(hook, data=body, headers=base | signed(case.type, body, ROTATED)).status_code == 202
    resp = client.post(hook, data=body, headers=base | signed(case.type, body, "not-a-key-we-know"))
    assert resp.status_code == 401
    assert client.post(hook, data=body, headers=base).status_code == 401
    assert len(drain(bus)) == 1


def test_push_to_a_branch_nobody_follows_is_200_and_says_why(receiver_for) -> None:
    case = Case("gitlab", "gitlab/push.json", {"X-Gitlab-Event": "Push Hook"}, branch="production")
    client, hook, bus = receiver_for(case)
    body = _body(case)
    resp = client.post(hook, data=body, headers={**case.headers, **signed("gitlab", body)})
    assert resp.status_code == 200
    assert "follows 'production', not branch 'master'" in resp.json["skipped"][0]
    assert drain(bus) == []


def test_a_push_moving_several_refs_reconciles_what_follows_one_of_them(receiver_for) -> None:
    """Bitbucket puts several ref changes in one push; the tracked one gives the revision."""
    payload = json.loads((FIXTURES / "bitbucket/repo-push-go-scm.json").read_bytes())
    first = payload["push"]["changes"][0]
    other = json.loads(json.dumps(first))
    other["new"]["name"] = "release"
    other["new"]["target"]["hash"] = "f" * 40
    payload["push"]["changes"] = [first, other]
    body = json.dumps(payload).encode()
    case = Case("bitbucket", "bitbucket/repo-push-go-scm.json", {"X-Event-Key": "repo:push"}, branch="release")
    client, hook, bus = receiver_for(case)
    assert client.post(hook, data=body, headers={**case.headers, **signed("bitbucket", body)}).status_code == 202
    [req] = drain(bus)
    assert req.origin["revision"] == f"release@sha1:{'f' * 40}"


def test_a_redelivery_is_answered_200_and_not_published_again_even_after_a_restart(
    receiver_for, tmp_path: Path
) -> None:
    case = CASES[0]
    body = _body(case)
    headers = {"Content-Type": "application/json", **case.headers, **signed("github", body),
               "X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958"}
    client, hook, bus = receiver_for(case)
    assert client.post(hook, data=body, headers=headers).status_code == 202
    again = client.post(hook, data=body, headers=headers)
    assert again.status_code == 200 and again.json["message"].startswith("duplicate delivery")

    restarted, _, _ = receiver_for(case)  # a new app on the same state directory
    assert restarted.post(hook, data=body, headers=headers).status_code == 200
    fresh = headers | {"X-GitHub-Delivery": str(uuid.uuid4())}
    assert restarted.post(hook, data=body, headers=fresh).status_code == 202
    assert len(drain(bus)) == 2


def test_a_rejected_delivery_is_not_remembered_so_its_retry_goes_through(receiver_for) -> None:
    """Only accepted deliveries count: a 401 (say, a key not yet rolled out) may be retried."""
    case = CASES[0]
    body = _body(case)
    headers = {"Content-Type": "application/json", **case.headers, "X-GitHub-Delivery": "retry-me"}
    client, hook, _ = receiver_for(case)
    assert client.post(hook, data=body, headers=headers | signed("github", body, "wrong")).status_code == 401
    assert client.post(hook, data=body, headers=headers | signed("github", body)).status_code == 202


def test_replicas_sharing_one_broker_share_the_memory_of_deliveries(tmp_path: Path, rabbitmq_url: str) -> None:
    """Two receiver replicas, one RabbitMQ: a retry landing on the other replica is a duplicate."""
    case = CASES[0]
    cfg = config.load([write_case_config(tmp_path / "herald.yaml", case)])
    bus = open_bus(None, tmp_path / "state")
    logs = [StreamDeliveryLog(rabbitmq_url, 3600) for _ in range(2)]
    try:
        a, b = (create_app(cfg, bus, Settings(state_dir=tmp_path / "state"), deliveries=log).test_client()
                for log in logs)
        hook = cfg.hook_path(cfg.receivers[("apps", "hook")])
        body = _body(case)
        delivery = str(uuid.uuid4())
        headers = {"Content-Type": "application/json", **case.headers, **signed("github", body),
                   "X-GitHub-Delivery": delivery}
        assert a.post(hook, data=body, headers=headers).status_code == 202
        import time

        deadline = time.monotonic() + 5
        while logs[1].first_seen(f"apps/hook|{delivery}") is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert b.post(hook, data=body, headers=headers).status_code == 200
        # A third replica started later replays the stream and knows it too.
        late = StreamDeliveryLog(rabbitmq_url, 3600)
        logs.append(late)
        c = create_app(cfg, bus, Settings(state_dir=tmp_path / "state"), deliveries=late).test_client()
        assert c.post(hook, data=body, headers=headers).status_code == 200
        assert len(drain(bus)) == 1
    finally:
        for log in logs:
            log.close()
        bus.close()


def test_a_receiver_over_its_rate_limit_gets_429_with_retry_after(receiver_for) -> None:
    case = CASES[1]
    client, hook, bus = receiver_for(case, rate_limit="{requests: 2, interval: 1m}")
    body = _body(case)
    answers = [client.post(hook, data=body, headers={**case.headers, **signed("gitlab", body)}) for _ in range(3)]
    assert [a.status_code for a in answers] == [202, 202, 429]
    assert int(answers[2].headers["Retry-After"]) >= 1
    # Forged deliveries do not spend the budget: they are refused before the limiter.
    assert client.post(hook, data=body, headers=case.headers).status_code == 401
    assert len(drain(bus)) == 2


def test_cloudevents_senders_get_the_webhook_validation_handshake(receiver_for) -> None:
    """CloudEvents' http-webhook spec: OPTIONS with WebHook-Request-Origin before delivering."""
    case = CASES[-1]
    client, hook, bus = receiver_for(case, rate_limit="{requests: 120, interval: 1m}")
    resp = client.options(hook, headers={"WebHook-Request-Origin": "eventemitter.example.com"})
    assert resp.status_code == 200
    assert resp.headers["WebHook-Allowed-Origin"] == "eventemitter.example.com"
    assert resp.headers["WebHook-Allowed-Rate"] == "120"
    assert client.options("/hook/" + "0" * 64, headers={"WebHook-Request-Origin": "x"}).status_code == 404
    assert drain(bus) == []


def test_spec_events_does_not_silence_senders_without_event_names(receiver_for, tmp_path: Path) -> None:
    """Flux ignores spec.events for generic receivers; Herald does too, and `validate` says so."""
    case = next(c for c in CASES if c.type == "generic")
    client, hook, bus = receiver_for(case, events="[push]")
    assert client.post(hook, data=_body(case)).status_code == 202
    _, diagnostics = config.check([write_case_config(tmp_path / "w.yaml", case, events="[push]")])
    assert any(d.severity == "warning" and "spec.events is ignored" in d.message for d in diagnostics)
    assert len(drain(bus)) == 1
