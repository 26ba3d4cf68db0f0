"""The Git host receiver types, as their senders really deliver.

Every payload file of GitHub, GitLab, Bitbucket Cloud, Bitbucket Server, Gitea (also as
Forgejo) and Gogs in tests/webhooks is sent with the headers that host puts on a
delivery (SOURCES.md), signed with a test secret wherever the host signs, and the Hook read
from it is checked against the fixture's own branch/tag names and commits. The published
signature vectors and token values verify through each type's `verify`, and fail with a
wrong key, a changed body or a missing header. Malformed deliveries are BadDelivery, never
another exception.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from urllib.parse import urlencode

import pytest
from werkzeug.datastructures import Headers

from receiver.signatures import digest
from receiver.types import bitbucket, bitbucketserver, gitea, github, gitlab
from receiver.types.base import (
    BadDelivery,
    Hook,
    Keys,
    PullRequest,
    ReceiverType,
    RefChange,
)
from tests.fixtures_herald import FIXTURES

SECRET = "test-webhook-secret"
DELIVERY = "72d3162e-cc78-11e3-81ab-4c9367dc0958"
INDEX = {f["file"]: f for f in json.loads((FIXTURES / "index.json").read_text())["files"]}
VECTORS = json.loads((FIXTURES / "signature-vectors.json").read_text())


def fixture(name: str) -> bytes:
    data = (FIXTURES / name).read_bytes()
    assert hashlib.sha256(data).hexdigest() == INDEX[name]["sha256"], f"{name} was altered"
    return data


def hexmac(body: bytes, key: str = SECRET, algorithm: str = "sha256") -> str:
    return digest(algorithm, key, body).hex()


# --- What each sender puts on a delivery (SOURCES.md, "HTTP headers carried by real deliveries")


def github_headers(event: str, body: bytes, key: str = SECRET, content_type: str = "application/json") -> Headers:
    return Headers({
        "Content-Type": content_type,
        "User-Agent": "GitHub-Hookshot/044aadd",
        "X-GitHub-Hook-ID": "292430182",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": DELIVERY,
        "X-GitHub-Hook-Installation-Target-Type": "repository",
        "X-GitHub-Hook-Installation-Target-ID": "79929171",
        "X-Hub-Signature": "sha1=" + hexmac(body, key, "sha1"),
        "X-Hub-Signature-256": "sha256=" + hexmac(body, key),
    })


def gitlab_headers(event: str, token: str = SECRET) -> Headers:
    return Headers({
        "Content-Type": "application/json",
        "User-Agent": "GitLab/17.1.0-pre",
        "Idempotency-Key": "a5461c4d-9c7f-4af9-add6-cddebe3c426f",
        "X-Gitlab-Event": event,
        "X-Gitlab-Webhook-UUID": "3c5c0404-c866-44bc-a5f6-452bb1bfc76e",
        "X-Gitlab-Instance": "https://gitlab.example.com",
        "X-Gitlab-Event-UUID": "9cebe914-4827-408f-b014-cfa23a47a35f",
        "X-Gitlab-Token": token,
    })


def bitbucket_headers(event: str, body: bytes, key: str = SECRET) -> Headers:
    return Headers({
        "Content-Type": "application/json",
        "User-Agent": "Bitbucket-Webhooks/2.0",
        "X-Event-Key": event,
        "X-Hook-UUID": "{e1b4f3c2-5a6b-4c7d-8e9f-0a1b2c3d4e5f}",
        "X-Request-UUID": DELIVERY,
        "X-Attempt-Number": "1",
        "X-Hub-Signature": "sha256=" + hexmac(body, key),
    })


def bitbucketserver_headers(event: str, body: bytes, key: str = SECRET) -> Headers:
    return Headers({
        "Content-Type": "application/json; charset=utf-8",
        "X-Event-Key": event,
        "X-Request-Id": DELIVERY,
        "X-Hub-Signature": "sha256=" + hexmac(body, key),
    })


def gitea_headers(event: str, body: bytes, key: str = SECRET, content_type: str = "application/json",
                  forgejo: bool = False) -> Headers:
    """Gitea's addDefaultHeaders: its own, the Gogs copies and the GitHub-compatible ones."""
    signature = hexmac(body, key)
    headers = Headers({"Content-Type": content_type})
    for prefix in (["X-Forgejo"] if forgejo else []) + ["X-Gitea", "X-Gogs"]:
        headers[f"{prefix}-Delivery"] = DELIVERY
        headers[f"{prefix}-Event"] = event
        headers[f"{prefix}-Event-Type"] = event
        headers[f"{prefix}-Signature"] = signature
    headers["X-GitHub-Delivery"] = DELIVERY
    headers["X-GitHub-Event"] = event
    headers["X-GitHub-Event-Type"] = event
    headers["X-Hub-Signature"] = "sha1=" + hexmac(body, key, "sha1")
    headers["X-Hub-Signature-256"] = "sha256=" + signature
    return headers


def gogs_headers(event: str, body: bytes, key: str = SECRET) -> Headers:
    return Headers({
        "Content-Type": "application/json",
        "X-Gogs-Delivery": DELIVERY,
        "X-Gogs-Event": event,
        "X-Gogs-Signature": hexmac(body, key),
    })


# --- Every fixture of these hosts, as delivered


@dataclass
class Delivery:
    file: str
    type: ReceiverType
    event: str
    changes: tuple[RefChange, ...] = ()
    ping: bool = False
    delivery_id: str = DELIVERY
    headers: Callable[[str, bytes], Headers] | None = field(default=None, repr=False)
    pull_request: PullRequest | None = None  # what a pull request event asks to plan
    ignore: str = ""

    def build(self) -> tuple[Headers, bytes]:
        body = fixture(self.file)
        return self.headers(self.event, body), body


def _gh(file: str, event: str, *changes: RefChange, ping: bool = False, pr: PullRequest | None = None) -> Delivery:
    return Delivery(file, github.TYPE, event, changes, ping, headers=github_headers, pull_request=pr)


def _gl(file: str, event: str, *changes: RefChange, pr: PullRequest | None = None) -> Delivery:
    return Delivery(file, gitlab.TYPE, event, changes, delivery_id="a5461c4d-9c7f-4af9-add6-cddebe3c426f",
                    headers=lambda e, b: gitlab_headers(e), pull_request=pr)


def _bb(file: str, event: str, *changes: RefChange, pr: PullRequest | None = None) -> Delivery:
    return Delivery(file, bitbucket.TYPE, event, changes, headers=bitbucket_headers, pull_request=pr)


def _bbs(file: str, event: str, *changes: RefChange) -> Delivery:
    return Delivery(file, bitbucketserver.TYPE, event, changes, headers=bitbucketserver_headers)


def _gt(file: str, event: str, *changes: RefChange, kind: ReceiverType = gitea.TYPE,
        pr: PullRequest | None = None) -> Delivery:
    return Delivery(file, kind, event, changes,
                    headers=lambda e, b: gitea_headers(e, b, forgejo=kind is gitea.FORGEJO), pull_request=pr)


def _gogs(file: str, event: str, *changes: RefChange, ignore: str = "") -> Delivery:
    return Delivery(file, gitea.GOGS, event, changes, headers=gogs_headers, ignore=ignore)


# What each fixture's pull request asks to plan, read off the fixture by hand.
GITHUB_PR = PullRequest(
    number=2, action="opened", head_sha="ec26c3e57ca3a959ca5aad62de7213c562f8c821", head_ref="refs/pull/2/head",
    base_branch="master",
    clone_urls=("https://github.com/Codertocat/Hello-World.git", "git@github.com:Codertocat/Hello-World.git"),
    fork=False, url="https://github.com/Codertocat/Hello-World/pull/2", sender_action="opened")
# GitLab's documented example names one project as `project` and another as the target: both
# are the base repository's names as far as the payload says.
GITLAB_DOCS_MR = PullRequest(
    number=1, action="opened", head_sha="da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
    head_ref="refs/merge-requests/1/head", base_branch="master",
    clone_urls=("http://example.com/awesome_space/awesome_project.git",
                "git@example.com:awesome_space/awesome_project.git",
                "http://example.com/gitlabhq/gitlab-test.git", "git@example.com:gitlabhq/gitlab-test.git"),
    fork=False, url="http://example.com/diaspora/merge_requests/1", sender_action="open")
GITLAB_SCM_MR = PullRequest(
    number=1, action="opened", head_sha="c4c79227ed610f1151f05bbc5be33b4f340d39c8",
    head_ref="refs/merge-requests/1/head", base_branch="master",
    clone_urls=("https://gitlab.com/gitlab-org/hello-world.git", "git@gitlab.com:gitlab-org/hello-world.git"),
    fork=False, url="https://gitlab.com/gitlab-org/hello-world/merge_requests/1", sender_action="open")
# Bitbucket Cloud names the head by an abbreviated hash, and publishes no pull request ref.
BITBUCKET_PR = PullRequest(
    number=1, action="opened", head_sha="d3022fc0ca3d", head_ref="refs/heads/branch2", base_branch="master",
    clone_urls=("https://api.bitbucket.org/bitbucket/bitbucket.git",), fork=False,
    url="https://api.bitbucket.org/pullrequest_id", sender_action="created")
# go-playground's Gitea pull request comes from a fork (example2/example into example/example).
GITEA_FORK_PR = PullRequest(
    number=2, action="opened", head_sha="48e773f892a831faa47c0a160d1b7f0cd369ae2a", head_ref="refs/pull/2/head",
    base_branch="master",
    clone_urls=("http://localhost:3000/example/example.git", "git@localhost:example/example.git"),
    fork=True, head_clone_url="http://localhost:3000/example2/example.git",
    url="http://localhost:3000/example/example/pulls/2", sender_action="opened")
GITEA_EDITED_PR = PullRequest(
    number=1, action="", head_sha="2eba238e33607c1fa49253182e9fff42baafa1eb", head_ref="refs/pull/1/head",
    base_branch="master",
    clone_urls=("https://try.gitea.io/jcitizen/my-repo.git", "git@try.gitea.io:jcitizen/my-repo.git"),
    fork=False, url="https://try.gitea.io/jcitizen/my-repo/pulls/1", sender_action="edited")

GITEA_FILES = [
    ("gitea/push.json", "push", RefChange("branch", "master", "67b56589a45103f891bdee7c0546e5d40bc02001")),
    ("gitea/push-go-scm.json", "push", RefChange("branch", "master", "4522cbcefc20728a5b72b3a86af35e608622c514")),
    ("gitea/create.json", "create", RefChange("branch", "master", "67b56589a45103f891bdee7c0546e5d40bc02001")),
    ("gitea/create-tag-go-scm.json", "create", RefChange("tag", "v1.0.0", "599d25c67b05717269f50ac082b34f176d085179")),
]
GITEA_PRS = [
    ("gitea/pull_request.json", "pull_request", GITEA_FORK_PR),
    ("gitea/pull_request-edited-go-scm.json", "pull_request", GITEA_EDITED_PR),
]

DELIVERIES = [
    # GitHub. octokit's push examples are the deletion of tag simple-tag (after = zeros).
    _gh("github/push.json", "push", RefChange("tag", "simple-tag", "")),
    _gh("github/push-with-installation.json", "push", RefChange("tag", "simple-tag", "")),
    _gh("github/push-with-organization.json", "push", RefChange("tag", "simple-tag", "")),
    _gh("github/push-with-new-branch.json", "push",
        RefChange("branch", "master", "6113728f27ae82c7b1a177c8d03f9e96e0adf246")),
    _gh("github/push-go-scm.json", "push", RefChange("branch", "master", "199eddf46df50de8d02e99bf1c5fdb4101338224")),
    _gh("github/push-tag-go-scm.json", "push", RefChange("tag", "v0.0.1", "d2b75aa7797ec26b088fa2dd527e9d2c052fcedd")),
    _gh("github/ping.json", "ping", ping=True),
    _gh("github/ping-with-app_id.json", "ping", ping=True),
    _gh("github/ping-with-organization.json", "ping", ping=True),
    _gh("github/pull_request-opened.json", "pull_request", pr=GITHUB_PR),
    _gh("github/pull_request-closed.json", "pull_request",
        pr=dataclasses.replace(GITHUB_PR, action="closed", sender_action="closed")),
    _gh("github/pull_request-synchronize.json", "pull_request",
        pr=dataclasses.replace(GITHUB_PR, action="updated", sender_action="synchronize")),
    _gh("github/package-published-npm.json", "package"),
    # GHCR has no webhooks of its own: these are ordinary GitHub deliveries.
    _gh("ghcr/package-published-container.json", "package"),
    _gh("ghcr/registry_package-published-container.json", "registry_package"),
    # GitLab. For tags, checkout_sha is the commit (after may be an annotated tag's object).
    _gl("gitlab/push.json", "Push Hook", RefChange("branch", "master", "da1560886d4f094c3e6c9ef40349f7d38b5d27d7")),
    _gl("gitlab/push-go-playground.json", "Push Hook",
        RefChange("branch", "master", "da1560886d4f094c3e6c9ef40349f7d38b5d27d7")),
    _gl("gitlab/push-go-scm.json", "Push Hook", RefChange("branch", "master", "2adc9465c4edfc33834e173fe89436a7cb899a1d")),
    _gl("gitlab/push-recorded-delivery.json", "Push Hook",
        RefChange("branch", "master", "f15b32277d2c55c6c595845a87109b09c913c556")),
    _gl("gitlab/tag_push.json", "Tag Push Hook", RefChange("tag", "v1.0.0", "82b3d5ae55f7080f1e6022629cdb57bfae7cccc7")),
    _gl("gitlab/tag_push-go-playground.json", "Tag Push Hook",
        RefChange("tag", "v1.0.0", "82b3d5ae55f7080f1e6022629cdb57bfae7cccc7")),
    _gl("gitlab/tag_push-create-go-scm.json", "Tag Push Hook",
        RefChange("tag", "v1.0.0", "2adc9465c4edfc33834e173fe89436a7cb899a1d")),
    _gl("gitlab/merge_request.json", "Merge Request Hook", pr=GITLAB_DOCS_MR),
    _gl("gitlab/merge_request-go-playground.json", "Merge Request Hook", pr=GITLAB_DOCS_MR),
    _gl("gitlab/merge_request-open-go-scm.json", "Merge Request Hook", pr=GITLAB_SCM_MR),
    # Bitbucket Cloud.
    _bb("bitbucket/repo-push.json", "repo:push",
        RefChange("branch", "name-of-branch", "709d658dc5b6d6afcd46049c2f332ee3f515a67d")),
    _bb("bitbucket/repo-push-go-scm.json", "repo:push",
        RefChange("branch", "master", "141977fedf5cf35aa290ac87d4b5177ac4cd9de1")),
    # go-scm's created tag is named like a branch, "feature/x": the type field decides.
    _bb("bitbucket/repo-push-tag-create-go-scm.json", "repo:push",
        RefChange("tag", "feature/x", "141977fedf5cf35aa290ac87d4b5177ac4cd9de1")),
    _bb("bitbucket/pullrequest-created.json", "pullrequest:created", pr=BITBUCKET_PR),
    # Bitbucket Server / Data Center. go-playground's refs_changed is a branch DELETE.
    _bbs("bitbucket-server/repo-refs_changed.json", "repo:refs_changed", RefChange("branch", "feature/wip", "")),
    _bbs("bitbucket-server/repo-refs_changed-go-scm.json", "repo:refs_changed",
         RefChange("branch", "master", "823b2230a56056231c9425d63758fa87078a66b4")),
    # Gitea, and the same payloads from Forgejo (which has none of its own).
    *[_gt(f, e, *c) for f, e, *c in GITEA_FILES],
    *[_gt(f, e, *c, kind=gitea.FORGEJO) for f, e, *c in GITEA_FILES],
    *[_gt(f, e, pr=pr) for f, e, pr in GITEA_PRS],
    *[_gt(f, e, pr=pr, kind=gitea.FORGEJO) for f, e, pr in GITEA_PRS],
    # Gogs.
    _gogs("gogs/push.json", "push", RefChange("branch", "develop", "bffeb74224043ba2feb48d137756c8a9331c449a")),
    # Gogs' pull request payload names no head commit: nothing to plan.
    _gogs("gogs/pull_request-edited-go-scm.json", "pull_request",
          ignore="Gogs names no head commit in a pull request delivery: no plan"),
]


def test_every_fixture_of_these_hosts_is_covered() -> None:
    hosts = ("github/", "gitlab/", "bitbucket/", "bitbucket-server/", "gitea/", "gogs/")
    assert {f for f in INDEX if f.startswith(hosts)} <= {d.file for d in DELIVERIES}


def test_fixture_event_headers_match_the_index() -> None:
    for d in DELIVERIES:
        if d.file.startswith("ghcr/"):
            continue
        assert INDEX[d.file]["event_header"].split(": ", 1)[1].startswith(d.event), d.file


@pytest.mark.parametrize("d", DELIVERIES, ids=lambda d: f"{d.type.name}:{d.file}")
def test_real_delivery_verifies_and_parses(d: Delivery) -> None:
    headers, body = d.build()
    assert d.type.verify(headers, body, Keys.of(SECRET))
    assert not d.type.verify(headers, body, Keys.of("another-secret"))
    hook = d.type.parse(headers, body)
    assert hook == Hook(event=d.event, delivery_id=d.delivery_id, ping=d.ping, changes=d.changes,
                        pull_request=d.pull_request, ignore=d.ignore)
    assert d.type.delivery_id(headers) == d.delivery_id
    for change in hook.changes:
        assert change.revision == (f"{change.name}@sha1:{change.sha}" if change.sha else "")


def test_gitlab_recorded_delivery_with_its_published_headers() -> None:
    entry = INDEX["gitlab/push-recorded-delivery.json"]
    headers = Headers(entry["headers_published_with_payload"])
    body = fixture("gitlab/push-recorded-delivery.json")
    # GitLab shows the token as [REDACTED]; the Receiver's token is what the hook was given.
    assert not gitlab.verify(headers, body, Keys.of(SECRET))
    assert gitlab.verify(headers, body, Keys.of("[REDACTED]"))
    hook = gitlab.parse(headers, body)
    assert hook.event == "Push Hook"
    # Idempotency-Key stays the same when GitLab retries the delivery; the event UUID is
    # the fallback for GitLab versions that do not send it.
    assert hook.delivery_id == "a5461c4d-9c7f-4af9-add6-cddebe3c426f"
    del headers["Idempotency-Key"]
    assert gitlab.parse(headers, body).delivery_id == "9cebe914-4827-408f-b014-cfa23a47a35f"
    assert hook.changes == (RefChange("branch", "master", "f15b32277d2c55c6c595845a87109b09c913c556"),)


# --- Published signature vectors and token values, through each type's verify

HMAC_TYPES = {
    "github": [github.TYPE],
    "gitea": [gitea.TYPE, gitea.FORGEJO, gitea.GOGS],
    "gogs": [gitea.GOGS, gitea.TYPE, gitea.FORGEJO],
    "bitbucket-server": [bitbucketserver.TYPE],
}
EVENTS = {"github": "push", "gitea": "push", "gogs": "push", "bitbucket-server": "repo:refs_changed"}


def _vector_body(v: dict) -> bytes:
    if "payload_file" in v:
        body = (FIXTURES / v["payload_file"]).read_bytes()
        assert hashlib.sha256(body).hexdigest() == v["payload_file_sha256"], "fixture was altered"
        return body
    return bytes.fromhex(v["payload_hex"])


def _vector_headers(v: dict, value: str) -> Headers:
    event_header = {"github": "X-GitHub-Event", "gitea": "X-Gitea-Event", "gogs": "X-Gogs-Event",
                    "bitbucket-server": "X-Event-Key"}[v["provider"]]
    return Headers({v["header"]: value, event_header: EVENTS[v["provider"]]})


VECTOR_CASES = [(v, t) for v in VECTORS["hmac_vectors"] for t in HMAC_TYPES[v["provider"]]]


@pytest.mark.parametrize("v,kind", VECTOR_CASES, ids=lambda x: x["id"] if isinstance(x, dict) else x.name)
def test_published_vector_verifies_through_the_type(v: dict, kind: ReceiverType) -> None:
    body = _vector_body(v)
    headers = _vector_headers(v, v["expected_header_value"])
    sha1 = v["algorithm"] == "hmac-sha1"
    keys = Keys.of(v["secret"], allow_sha1=sha1)
    assert kind.verify(headers, body, keys)
    assert not kind.verify(headers, body, Keys.of(v["secret"] + "x", allow_sha1=sha1)), "wrong key"
    assert not kind.verify(headers, body + b"\n", keys), "changed body"
    assert not kind.verify(headers, body[:-1], keys), "truncated body"
    assert not kind.verify(Headers({"Content-Type": "application/json"}), body, keys), "missing header"
    if sha1:
        assert not kind.verify(headers, body, Keys.of(v["secret"])), "sha1 only when allowed"
    for negative in v.get("published_negative_values", []):
        assert not kind.verify(_vector_headers(v, negative["header_value"]), body, keys), negative


@pytest.mark.parametrize("v", [v for v in VECTORS["token_vectors"] if v["provider"] == "gitlab"],
                         ids=lambda v: v["id"])
def test_gitlab_published_token_values(v: dict) -> None:
    body = fixture(v["payload_file"]) if "payload_file" in v else b"{}"
    keys = Keys.of(v["configured_secret"])
    for token in v["accept"]:
        assert gitlab.verify(gitlab_headers("Push Hook", token), body, keys)
    for token in v["reject"]:
        assert not gitlab.verify(gitlab_headers("Push Hook", token), body, keys)
    assert not gitlab.verify(Headers({"X-Gitlab-Event": "Push Hook"}), body, keys), "missing header"


def test_bitbucket_cloud_hook_uuid_is_not_a_secret() -> None:
    """go-playground can compare X-Hook-UUID; Bitbucket sends it to everyone: it proves nothing."""
    v = next(v for v in VECTORS["token_vectors"] if v["provider"] == "bitbucket")
    headers = Headers({"X-Event-Key": "repo:push", v["header"]: v["accept"][0]})
    assert not bitbucket.verify(headers, fixture("bitbucket/repo-push.json"), Keys.of(v["configured_secret"]))


# --- Rotation, several signatures, SHA-1


def _signed(kind: ReceiverType, body: bytes, key: str) -> Headers:
    return {
        "github": lambda: github_headers("push", body, key),
        "gitlab": lambda: gitlab_headers("Push Hook", key),
        "bitbucket": lambda: bitbucket_headers("repo:push", body, key),
        "bitbucketserver": lambda: bitbucketserver_headers("repo:refs_changed", body, key),
        "gitea": lambda: gitea_headers("push", body, key),
        "forgejo": lambda: gitea_headers("push", body, key, forgejo=True),
        "gogs": lambda: gogs_headers("push", body, key),
    }[kind.name]()


ALL_TYPES = [github.TYPE, gitlab.TYPE, bitbucket.TYPE, bitbucketserver.TYPE, gitea.TYPE, gitea.FORGEJO, gitea.GOGS]


@pytest.mark.parametrize("kind", ALL_TYPES, ids=lambda t: t.name)
def test_rotation_key_verifies_while_the_old_one_still_does(kind: ReceiverType) -> None:
    body = b'{"ref": "refs/heads/main"}'
    rotating = Keys(tokens=("old", "new"))
    assert kind.verify(_signed(kind, body, "new"), body, rotating)
    assert kind.verify(_signed(kind, body, "old"), body, rotating)
    assert not kind.verify(_signed(kind, body, "newer"), body, rotating)
    assert not kind.verify(_signed(kind, body, "new"), body, Keys(tokens=("old",)))
    assert not kind.verify(_signed(kind, body, "new"), body, Keys(tokens=()))


@pytest.mark.parametrize("kind,header,prefix", [
    (github.TYPE, "X-Hub-Signature-256", "sha256="),
    (bitbucket.TYPE, "X-Hub-Signature", "sha256="),
    (bitbucketserver.TYPE, "X-Hub-Signature", "sha256="),
    (gitea.TYPE, "X-Gitea-Signature", ""),
    (gitea.FORGEJO, "X-Forgejo-Signature", ""),
    (gitea.GOGS, "X-Gogs-Signature", ""),
], ids=lambda x: x.name if isinstance(x, ReceiverType) else None)
def test_comma_separated_signatures_one_valid_verify(kind: ReceiverType, header: str, prefix: str) -> None:
    body = fixture("gitea/push.json")
    good, stale = prefix + hexmac(body, "new"), prefix + hexmac(body, "retired")
    keys = Keys.of("new")
    assert kind.verify(Headers({header: f"{stale}, {good}"}), body, keys)
    assert kind.verify(Headers({header: f"{good},{stale}"}), body, keys)
    assert not kind.verify(Headers({header: f"{stale},{stale}"}), body, keys)
    assert not kind.verify(Headers({header: f"{prefix}{'0' * 64},garbage"}), body, keys)


def test_github_sha1_alone_is_refused_unless_allowed() -> None:
    body = fixture("github/push-go-scm.json")
    headers = Headers({"X-GitHub-Event": "push", "X-Hub-Signature": "sha1=" + hexmac(body, algorithm="sha1")})
    assert not github.verify(headers, body, Keys.of(SECRET))
    assert github.verify(headers, body, Keys.of(SECRET, allow_sha1=True))
    # With a SHA-256 signature present, it alone decides: a bad one is not rescued by SHA-1.
    headers["X-Hub-Signature-256"] = "sha256=" + "0" * 64
    assert not github.verify(headers, body, Keys.of(SECRET, allow_sha1=True))
    # sha1= inside the SHA-256 header is not a SHA-256 signature.
    assert not github.verify(Headers({"X-Hub-Signature-256": "sha1=" + hexmac(body, algorithm="sha1")}), body,
                             Keys.of(SECRET, allow_sha1=True))


@pytest.mark.parametrize("kind", [bitbucket.TYPE, bitbucketserver.TYPE], ids=lambda t: t.name)
def test_bitbucket_refuses_sha1(kind: ReceiverType) -> None:
    body = fixture("bitbucket/repo-push.json")
    headers = Headers({"X-Hub-Signature": "sha1=" + hexmac(body, algorithm="sha1")})
    assert not kind.verify(headers, body, Keys.of(SECRET, allow_sha1=True))


# --- The Receiver's type decides, never the headers present


def test_gitea_delivery_goes_through_the_gitea_type_by_its_own_headers() -> None:
    body = fixture("gitea/push.json")
    headers = gitea_headers("push", body)
    # Gitea's GitHub-compatible copies are neither needed nor preferred.
    headers["X-Hub-Signature-256"] = "sha256=" + "0" * 64
    headers["X-GitHub-Event"] = "ping"
    assert gitea.verify(headers, body, Keys.of(SECRET))
    hook = gitea.parse(headers, body)
    assert hook.event == "push" and not hook.ping
    assert hook.changes == (RefChange("branch", "master", "67b56589a45103f891bdee7c0546e5d40bc02001"),)
    for name in ("X-Hub-Signature", "X-Hub-Signature-256", "X-GitHub-Event", "X-GitHub-Delivery",
                 "X-GitHub-Event-Type"):
        del headers[name]
    assert gitea.verify(headers, body, Keys.of(SECRET))
    assert gitea.parse(headers, body) == hook


def test_gitea_type_does_not_accept_github_headers_alone() -> None:
    body = fixture("gitea/push.json")
    headers = github_headers("push", body)
    assert not gitea.verify(headers, body, Keys.of(SECRET))
    with pytest.raises(BadDelivery, match="X-Gitea-Event"):
        gitea.parse(headers, body)


def test_one_valid_gitea_family_signature_is_enough() -> None:
    body = fixture("gitea/push.json")
    headers = gitea_headers("push", body, forgejo=True)
    headers["X-Gitea-Signature"] = "0" * 64
    headers["X-Gogs-Signature"] = ""
    assert gitea.FORGEJO.verify(headers, body, Keys.of(SECRET))
    headers["X-Forgejo-Signature"] = "1" * 64
    assert not gitea.FORGEJO.verify(headers, body, Keys.of(SECRET))


def test_gitea_without_a_secret_sends_empty_signatures_which_never_verify() -> None:
    body = fixture("gitea/push.json")
    headers = gitea_headers("push", body)
    for name in ("X-Gitea-Signature", "X-Gogs-Signature"):
        headers[name] = ""
    assert not gitea.verify(headers, body, Keys.of(SECRET))
    assert not gitea.verify(headers, body, Keys.of(""))


def test_github_type_judges_a_gitea_delivery_by_github_headers_only() -> None:
    body = fixture("gitea/push.json")
    headers = gitea_headers("push", body)
    assert github.verify(headers, body, Keys.of(SECRET))
    assert github.parse(headers, body).event == "push"
    headers["X-Hub-Signature-256"] = "sha256=" + "0" * 64  # only X-Gitea-Signature is valid now
    assert not github.verify(headers, body, Keys.of(SECRET))
    del headers["X-Hub-Signature-256"]
    del headers["X-Hub-Signature"]
    assert not github.verify(headers, body, Keys.of(SECRET, allow_sha1=True))
    del headers["X-GitHub-Event"]
    with pytest.raises(BadDelivery, match="X-GitHub-Event"):
        github.parse(headers, body)


@pytest.mark.parametrize("presented", [SECRET + " ", " " + SECRET, SECRET.upper(), SECRET[:-1], SECRET + "\t",
                                       SECRET + "\n", "", "\udcff", "\ud800" + SECRET, SECRET + "\x00"])
def test_gitlab_token_must_be_exact(presented: str) -> None:
    # (A plain mapping: werkzeug's Headers refuses to even hold a newline.)
    assert not gitlab.verify({"X-Gitlab-Token": presented}, b"{}", Keys.of(SECRET))


def test_gitlab_token_header_name_is_case_insensitive_and_rotates() -> None:
    headers = Headers({"x-gitlab-token": "new"})
    assert gitlab.verify(headers, b"", Keys(tokens=("old", "new")))


# --- Events the fixtures do not cover


def test_github_create_names_the_ref_without_a_commit() -> None:
    body = json.dumps({"ref": "v1.2.0", "ref_type": "tag", "master_branch": "main", "pusher_type": "user"}).encode()
    hook = github.parse(github_headers("create", body), body)
    assert hook == Hook(event="create", delivery_id=DELIVERY, changes=(RefChange("tag", "v1.2.0", ""),))
    body = json.dumps({"ref": "feature/a", "ref_type": "branch"}).encode()
    assert github.parse(github_headers("create", body), body).changes == (RefChange("branch", "feature/a"),)
    body = json.dumps({"ref": "old", "ref_type": "branch", "pusher_type": "user"}).encode()
    assert github.parse(github_headers("delete", body), body).changes == (RefChange("branch", "old"),)


def test_github_branch_deletion_push_names_the_ref_without_a_commit() -> None:
    body = json.dumps({"ref": "refs/heads/gone", "before": "a" * 40, "after": "0" * 40, "deleted": True}).encode()
    assert github.parse(github_headers("push", body), body).changes == (RefChange("branch", "gone", ""),)


def test_gitlab_branch_and_tag_deletion() -> None:
    for event, ref, change in [("Push Hook", "refs/heads/gone", RefChange("branch", "gone")),
                               ("Tag Push Hook", "refs/tags/v0.1", RefChange("tag", "v0.1"))]:
        body = json.dumps({"object_kind": "push", "before": "a" * 40, "after": "0" * 40, "ref": ref,
                           "checkout_sha": None, "commits": [], "total_commits_count": 0}).encode()
        assert gitlab.parse(gitlab_headers(event), body).changes == (change,)


def test_gitlab_annotated_tag_follows_checkout_sha() -> None:
    body = json.dumps({"object_kind": "tag_push", "before": "0" * 40, "after": "b" * 40,
                       "ref": "refs/tags/v2", "checkout_sha": "c" * 40}).encode()
    assert gitlab.parse(gitlab_headers("Tag Push Hook"), body).changes == (RefChange("tag", "v2", "c" * 40),)


def test_gitlab_system_hooks() -> None:
    push = json.loads(fixture("gitlab/push.json"))
    push["event_name"] = "push"
    hook = gitlab.parse(gitlab_headers("System Hook"), json.dumps(push).encode())
    assert hook.event == "System Hook"
    assert hook.changes == (RefChange("branch", "master", "da1560886d4f094c3e6c9ef40349f7d38b5d27d7"),)
    update = {"event_name": "repository_update", "changes": [
        {"before": "a" * 40, "after": "b" * 40, "ref": "refs/heads/main"},
        {"before": "a" * 40, "after": "0" * 40, "ref": "refs/tags/v1"}], "refs": ["refs/heads/main", "refs/tags/v1"]}
    hook = gitlab.parse(gitlab_headers("System Hook"), json.dumps(update).encode())
    assert hook.changes == (RefChange("branch", "main", "b" * 40), RefChange("tag", "v1", ""))
    mr = gitlab.parse(gitlab_headers("System Hook"), fixture("gitlab/merge_request.json"))
    assert mr.changes == () and not mr.ignore and mr.pull_request == GITLAB_DOCS_MR
    other = gitlab.parse(gitlab_headers("System Hook"), b'{"event_name": "project_create", "name": "x"}')
    assert other.ignore and other.changes == ()


def test_bitbucket_cloud_push_of_several_refs_with_a_deletion() -> None:
    body = json.dumps({"push": {"changes": [
        {"new": {"type": "branch", "name": "main", "target": {"type": "commit", "hash": "a" * 40}},
         "old": {"type": "branch", "name": "main", "target": {"type": "commit", "hash": "b" * 40}}},
        {"new": None, "old": {"type": "tag", "name": "v1", "target": {"hash": "c" * 40}}, "closed": True},
        {"new": {"type": "tag", "name": "v2", "target": {"hash": "D" * 40}}, "old": None, "created": True},
    ]}}).encode()
    hook = bitbucket.parse(bitbucket_headers("repo:push", body), body)
    assert hook.changes == (RefChange("branch", "main", "a" * 40), RefChange("tag", "v1", ""),
                            RefChange("tag", "v2", "d" * 40))


def test_bitbucket_server_several_changes_and_ping() -> None:
    body = json.dumps({"eventKey": "repo:refs_changed", "changes": [
        {"ref": {"id": "refs/heads/main", "displayId": "main", "type": "BRANCH"}, "refId": "refs/heads/main",
         "fromHash": "a" * 40, "toHash": "b" * 40, "type": "UPDATE"},
        {"ref": {"id": "refs/tags/v3", "displayId": "v3", "type": "TAG"}, "refId": "refs/tags/v3",
         "fromHash": "0" * 40, "toHash": "c" * 40, "type": "ADD"},
        {"refId": "refs/heads/old", "fromHash": "d" * 40, "toHash": "0" * 40, "type": "DELETE"},
    ]}).encode()
    hook = bitbucketserver.parse(bitbucketserver_headers("repo:refs_changed", body), body)
    assert hook.changes == (RefChange("branch", "main", "b" * 40), RefChange("tag", "v3", "c" * 40),
                            RefChange("branch", "old", ""))
    ping = bitbucketserver.parse(bitbucketserver_headers("diagnostics:ping", b'{"test": true}'), b'{"test": true}')
    assert ping == Hook(event="diagnostics:ping", delivery_id=DELIVERY, ping=True)
    # A pull request event without its pull request (tests/test_receiver_pull_requests.py has
    # a whole one) is malformed.
    with pytest.raises(BadDelivery, match="'pullRequest'"):
        bitbucketserver.parse(bitbucketserver_headers("pr:opened", b"{}"), b"{}")


def test_gitea_delete_and_full_ref_create() -> None:
    body = json.dumps({"ref": "feature/x", "ref_type": "branch", "pusher_type": "user"}).encode()
    assert gitea.parse(gitea_headers("delete", body), body).changes == (RefChange("branch", "feature/x"),)
    body = json.dumps({"ref": "refs/tags/v9", "ref_type": "tag", "sha": "e" * 40}).encode()
    assert gitea.parse(gitea_headers("create", body), body).changes == (RefChange("tag", "v9", "e" * 40),)
    body = json.dumps({"ref": "v9", "ref_type": "tag"}).encode()  # older Gogs: no sha
    assert gitea.GOGS.parse(gogs_headers("create", body), body).changes == (RefChange("tag", "v9"),)


def test_empty_change_lists_are_answered_with_a_reason() -> None:
    body = b'{"push": {"changes": []}}'
    assert bitbucket.parse(bitbucket_headers("repo:push", body), body).ignore
    body = b'{"changes": []}'
    assert bitbucketserver.parse(bitbucketserver_headers("repo:refs_changed", body), body).ignore


# --- Form-encoded bodies (GitHub, Gitea, Forgejo, Gogs offer them)


@pytest.mark.parametrize("kind,file,headers,change", [
    (github.TYPE, "github/push-go-scm.json", github_headers,
     RefChange("branch", "master", "199eddf46df50de8d02e99bf1c5fdb4101338224")),
    (gitea.TYPE, "gitea/push.json", gitea_headers, RefChange("branch", "master", "67b56589a45103f891bdee7c0546e5d40bc02001")),
    (gitea.GOGS, "gogs/push.json", None, RefChange("branch", "develop", "bffeb74224043ba2feb48d137756c8a9331c449a")),
], ids=lambda x: x.name if isinstance(x, ReceiverType) else None)
def test_form_encoded_body_verifies_and_parses(kind, file, headers, change) -> None:
    body = urlencode({"payload": fixture(file).decode()}).encode()
    if headers is None:
        h = gogs_headers("push", body)
    else:
        h = headers("push", body, content_type="application/x-www-form-urlencoded")
    h["Content-Type"] = "application/x-www-form-urlencoded"
    assert kind.verify(h, body, Keys.of(SECRET))
    assert kind.parse(h, body).changes == (change,)
    with pytest.raises(BadDelivery, match="payload"):
        kind.parse(h, b"other=1")


# --- Malformed deliveries: BadDelivery naming the field, never another exception

PUSHES = [
    (github.TYPE, "github/push-go-scm.json", lambda b: github_headers("push", b)),
    (github.TYPE, "github/push-tag-go-scm.json", lambda b: github_headers("create", b)),
    (github.TYPE, "github/ping.json", lambda b: github_headers("ping", b)),
    (gitlab.TYPE, "gitlab/push.json", lambda b: gitlab_headers("Push Hook")),
    (gitlab.TYPE, "gitlab/tag_push.json", lambda b: gitlab_headers("Tag Push Hook")),
    (gitlab.TYPE, "gitlab/push.json", lambda b: gitlab_headers("System Hook")),
    (bitbucket.TYPE, "bitbucket/repo-push.json", lambda b: bitbucket_headers("repo:push", b)),
    (bitbucket.TYPE, "bitbucket/repo-push-tag-create-go-scm.json", lambda b: bitbucket_headers("repo:push", b)),
    (bitbucketserver.TYPE, "bitbucket-server/repo-refs_changed-go-scm.json",
     lambda b: bitbucketserver_headers("repo:refs_changed", b)),
    (bitbucketserver.TYPE, "bitbucket-server/repo-refs_changed.json",
     lambda b: bitbucketserver_headers("mirror:repo_synchronized", b)),
    (gitea.TYPE, "gitea/push.json", lambda b: gitea_headers("push", b)),
    (gitea.TYPE, "gitea/create.json", lambda b: gitea_headers("create", b)),
    (gitea.TYPE, "gitea/create-tag-go-scm.json", lambda b: gitea_headers("delete", b)),
    (gitea.GOGS, "gogs/push.json", lambda b: gogs_headers("push", b)),
    # Pull requests go through the same mill.
    (github.TYPE, "github/pull_request-opened.json", lambda b: github_headers("pull_request", b)),
    (gitlab.TYPE, "gitlab/merge_request-open-go-scm.json", lambda b: gitlab_headers("Merge Request Hook")),
    (bitbucket.TYPE, "bitbucket/pullrequest-created.json", lambda b: bitbucket_headers("pullrequest:updated", b)),
    (gitea.TYPE, "gitea/pull_request.json", lambda b: gitea_headers("pull_request", b)),
]
PUSH_IDS = [f"{k.name}:{f}:{i}" for i, (k, f, _) in enumerate(PUSHES)]


def _parse(kind: ReceiverType, headers: Headers, body: bytes) -> Hook | None:
    """parse's whole contract: a Hook or BadDelivery (None), nothing else, whatever the input."""
    try:
        hook = kind.parse(headers, body)
    except BadDelivery as exc:
        assert str(exc)
        return None
    assert isinstance(hook, Hook)
    assert all(isinstance(c, RefChange) and isinstance(c.name, str) and isinstance(c.sha, str)
               for c in hook.changes)
    return hook


@pytest.mark.parametrize("kind,file,headers", PUSHES, ids=PUSH_IDS)
@pytest.mark.parametrize("body", [
    b"", b"not json", b"\xff\xfe\x00{", b"[]", b'"x"', b"5", b"null", b"[" * 100_000, b'{"a":' * 100_000,
    b"{" + b"1" * 5000 + b"}", b'{"ref": 1' + b"1" * 5000 + b"}", b'{"\xff": 1}',
], ids=lambda b: repr(b[:12]))
def test_malformed_bodies_are_bad_deliveries(kind, file, headers, body) -> None:
    h = headers(body)
    if h.get("X-GitHub-Event") == "ping" or h.get("X-Event-Key") == "diagnostics:ping":
        _parse(kind, h, body)
        return
    with pytest.raises(BadDelivery):
        kind.parse(h, body)


@pytest.mark.parametrize("kind,file,headers", PUSHES, ids=PUSH_IDS)
def test_truncated_fixture_is_a_bad_delivery(kind, file, headers) -> None:
    body = fixture(file)
    for cut in (1, len(body) // 3, len(body) // 2, len(body) - 2):
        with pytest.raises(BadDelivery):
            kind.parse(headers(body[:cut]), body[:cut])


def _paths(node, path=(), depth=4) -> Iterator[tuple]:
    if depth == 0:
        return
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        if isinstance(node, list) and key > 2:
            break
        yield (*path, key)
        yield from _paths(value, (*path, key), depth - 1)


WRONG = [5, None, "x", "", [], {}, True, 1.5, ["x"], {"x": 1}, "0" * 40, "refs/heads/", "g" * 40]


def _mutated_bodies(data) -> Iterator[bytes]:
    """The payload with each field (to depth 4) set to each WRONG value, then removed.

    Changed in place and put back after each body: a deep copy of a 25 KB payload per body
    was most of this test's time."""
    for path in list(_paths(data)):
        node = data
        for key in path[:-1]:
            node = node[key]
        key = path[-1]
        original = node[key]
        for wrong in WRONG:
            node[key] = wrong
            yield json.dumps(data).encode()
        if isinstance(node, dict):
            order = list(node)
            del node[key]
            yield json.dumps(data).encode()
            node[key] = original
            for k in order[order.index(key) + 1:]:  # back in its place: the next bodies are as before
                node[k] = node.pop(k)
        else:
            del node[key]
            yield json.dumps(data).encode()
            node.insert(key, original)


@pytest.mark.parametrize("kind,file,headers", PUSHES, ids=PUSH_IDS)
def test_wrong_json_types_at_every_field(kind, file, headers) -> None:
    data = json.loads(fixture(file))
    for body in _mutated_bodies(data):
        _parse(kind, headers(body), body)
    assert data == json.loads(fixture(file))  # every change was put back


@pytest.mark.parametrize("kind,body,field", [
    (github.TYPE, b'{"ref": 5, "after": "' + b"a" * 40 + b'"}', "ref"),
    (github.TYPE, b'{"ref": "refs/heads/main", "after": null}', "sha"),
    (gitlab.TYPE, b'{"ref": "refs/heads/main", "checkout_sha": 5, "after": "' + b"a" * 40 + b'"}', "checkout_sha"),
    (gitlab.TYPE, b'{"ref": ["refs/heads/main"], "after": "' + b"a" * 40 + b'"}', "ref"),
    (bitbucket.TYPE, b'{"push": {"changes": "x"}}', "push.changes"),
    (bitbucket.TYPE, b'{"push": null}', "push"),
    (bitbucket.TYPE, b'{"push": {"changes": [5]}}', "push.changes[0]"),
    (bitbucket.TYPE, b'{"push": {"changes": [{"new": null, "old": null}]}}', "push.changes[0].old"),
    (bitbucket.TYPE, b'{"push": {"changes": [{"new": {"type": "branch", "name": "m", "target": {"hash": 5}}}]}}',
     "push.changes[0].new.target.hash"),
    (bitbucket.TYPE, b'{"push": {"changes": [{"new": {"type": "branch", "name": 7}}]}}', "push.changes[0].new.name"),
    (bitbucket.TYPE, b'{"push": {"changes": [{"new": {"type": "x", "name": "m"}}]}}', "push.changes[0].new.type"),
    (bitbucketserver.TYPE, b'{"changes": "x"}', "changes"),
    (bitbucketserver.TYPE, b'{"changes": [{"ref": {"id": 5}, "toHash": "' + b"a" * 40 + b'"}]}', "changes[0].ref.id"),
    (bitbucketserver.TYPE, b'{"changes": [{"refId": "refs/heads/m", "toHash": null, "type": "UPDATE"}]}',
     "changes[0].toHash"),
    (gitea.TYPE, b'{"ref": "refs/heads/main", "after": 5, "commits": null}', "sha"),
], ids=lambda x: x if isinstance(x, str) else None)
def test_bad_delivery_names_the_field(kind: ReceiverType, body: bytes, field: str) -> None:
    headers = {
        "github": lambda: github_headers("push", body),
        "gitlab": lambda: gitlab_headers("Push Hook"),
        "bitbucket": lambda: bitbucket_headers("repo:push", body),
        "bitbucketserver": lambda: bitbucketserver_headers("repo:refs_changed", body),
        "gitea": lambda: gitea_headers("push", body),
    }[kind.name]()
    with pytest.raises(BadDelivery) as exc:
        kind.parse(headers, body)
    assert field in str(exc.value)


@pytest.mark.parametrize("kind,missing", [
    (github.TYPE, "X-GitHub-Event"), (gitlab.TYPE, "X-Gitlab-Event"), (bitbucket.TYPE, "X-Event-Key"),
    (bitbucketserver.TYPE, "X-Event-Key"), (gitea.TYPE, "X-Gitea-Event"), (gitea.GOGS, "X-Gogs-Event"),
], ids=lambda x: x.name if isinstance(x, ReceiverType) else x)
def test_missing_event_header_is_a_bad_delivery(kind: ReceiverType, missing: str) -> None:
    with pytest.raises(BadDelivery, match=missing):
        kind.parse(Headers({"Content-Type": "application/json", missing: "  "}), b"{}")


HOSTILE_VALUES = ["", " ", ",", ",,,", "=", "sha256=", "sha256=" + "é" * 64, "é" * 64, "sha256=" + "0" * 63,
                  "sha256=" + "zz" * 32, "\x00" * 64, "sha256=\udcff" + "0" * 63, "\ud800" * 64,
                  ",".join(["sha256=" + "0" * 64] * 1000), "x" * 100_000, "sha1=", "sha512=" + "0" * 128]


@pytest.mark.parametrize("kind", ALL_TYPES, ids=lambda t: t.name)
def test_verify_never_raises_on_hostile_headers(kind: ReceiverType) -> None:
    names = ["X-Hub-Signature", "X-Hub-Signature-256", "X-Gitlab-Token", "X-Gitea-Signature",
             "X-Forgejo-Signature", "X-Gogs-Signature"]
    for value in HOSTILE_VALUES:
        for body in (b"", b"{}", b"\xff" * 10):
            headers = {name: value for name in names}  # a plain dict too: any Mapping
            assert kind.verify(headers, body, Keys.of(SECRET, allow_sha1=True)) is False
            assert kind.verify(Headers(headers), body, Keys(tokens=())) is False


@pytest.mark.parametrize("kind,body,field", [
    (gitlab.TYPE, b'{"ref": "main", "after": "' + b"a" * 40 + b'"}', "'ref'"),
    (gitlab.TYPE, b'{"ref": "refs/heads/main", "checkout_sha": null, "after": "abc"}', "'after'"),
    (gitlab.TYPE, b'{"ref": "refs/heads/main", "checkout_sha": "abc", "after": "' + b"a" * 40 + b'"}',
     "'checkout_sha'"),
    (github.TYPE, b'{"ref": "refs/heads/main"}', "'after' must be a 40-hex commit sha"),
    (github.TYPE, b'{"ref": "main", "after": "' + b"a" * 40 + b'"}', "'ref'"),
    (gitea.TYPE, b'{"ref": "refs/heads/main", "after": "xyz"}', "'after'"),
], ids=lambda x: x if isinstance(x, str) else None)
def test_push_errors_name_the_ref_or_the_sha_field(kind: ReceiverType, body: bytes, field: str) -> None:
    headers = {"github": lambda: github_headers("push", body), "gitlab": lambda: gitlab_headers("Push Hook"),
               "gitea": lambda: gitea_headers("push", body)}[kind.name]()
    with pytest.raises(BadDelivery) as exc:
        kind.parse(headers, body)
    assert field in str(exc.value)


def test_gitea_create_with_a_bad_sha_names_it() -> None:
    body = b'{"ref": "v1", "ref_type": "tag", "sha": "nope"}'
    with pytest.raises(BadDelivery, match="'sha'"):
        gitea.parse(gitea_headers("create", body), body)
