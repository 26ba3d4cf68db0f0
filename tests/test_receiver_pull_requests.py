"""A pull request asks for a plan, never for a reconcile.

Each scenario posts what a Git host sends for a pull request (its real payload from
tests/webhooks where there is one, changed only where the scenario says so), signed as that
host signs, to a Receiver whose GitRepository is the pull request's repository. What a
verified pull request does:

* opened, reopened, ready for review, or a new head pushed: one plan request per selected
  GitRepository of that repository following the branch the pull request would merge into,
  on `herald.plan`, and nothing on `herald.reconcile`;
* closed or merged, a title edit, a label, a comment: answered 200, nothing published;
* from a fork: answered 200, nothing published, unless the Receiver says `planForks: true`;
* against a branch no GitRepository follows, or from another repository: answered 200 with
  the reason.

Pushes still reconcile as before.
"""

from __future__ import annotations

import copy
import json
import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from textwrap import dedent
from typing import Any

import pytest

from herald import config
from herald.bus import BusUnavailable, open_bus
from herald.messages import PLAN_QUEUE, RECONCILE_QUEUE, ReconcileRequest
from herald.settings import Settings
from receiver.app import create_app
from receiver.selection import Target, plan_targets, repository_key
from receiver.signatures import digest
from receiver.types.base import PullRequest
from tests.fixtures_herald import FIXTURES, TOKEN, github_push, receiver_yaml

NS = "flux-system"


def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_bytes())


def bitbucket_server_pr_opened() -> dict[str, Any]:
    """Bitbucket Server / Data Center's `pr:opened` delivery. There is no recorded one in
    tests/webhooks: this is built by hand from the payload Atlassian documents ("Event
    payload", Pull request events, Opened): `pullRequest` with `id`, `fromRef` and `toRef`
    (`id`, `displayId`, `latestCommit`, `repository` with `slug`, `project.key` and the clone
    links real deliveries carry)."""
    repository = {
        "slug": "repository", "id": 84, "name": "repository", "scmId": "git", "state": "AVAILABLE",
        "statusMessage": "Available", "forkable": True,
        "project": {"key": "PROJ", "id": 84, "name": "project", "public": False, "type": "NORMAL"},
        "public": False,
        "links": {"clone": [{"href": "ssh://git@bitbucket.example.com:7999/proj/repository.git", "name": "ssh"},
                            {"href": "https://bitbucket.example.com/scm/proj/repository.git", "name": "http"}],
                  "self": [{"href": "https://bitbucket.example.com/projects/PROJ/repos/repository/browse"}]},
    }
    actor = {"name": "admin", "emailAddress": "admin@example.com", "id": 1, "displayName": "Administrator",
             "active": True, "slug": "admin", "type": "NORMAL"}
    return {
        "eventKey": "pr:opened", "date": "2017-09-19T09:58:11+1000", "actor": actor,
        "pullRequest": {
            "id": 1, "version": 0, "title": "a new file added", "state": "OPEN", "open": True, "closed": False,
            "createdDate": 1505779091796, "updatedDate": 1505779091796,
            "fromRef": {"id": "refs/heads/a-branch", "displayId": "a-branch",
                        "latestCommit": "ef8755f06ee4b28c96a847a95cb8ec8ed6ddd1ca", "repository": repository},
            "toRef": {"id": "refs/heads/main", "displayId": "main",
                      "latestCommit": "178864a7d521b6f5e720b386b2c2b0ef8563e0dc",
                      "repository": copy.deepcopy(repository)},
            "locked": False, "author": {"user": actor, "role": "AUTHOR", "approved": False, "status": "UNAPPROVED"},
            "reviewers": [], "participants": [],
            "links": {"self": [{"href": "https://bitbucket.example.com/projects/PROJ/repos/repository/pull-requests/1"}]},
        },
    }


def signed(rtype: str, event: str, body: bytes, delivery: str) -> dict[str, str]:
    """What each host puts on a delivery: its event header, its delivery id, its proof."""
    mac = digest("sha256", TOKEN, body).hex()
    return {"Content-Type": "application/json", **{
        "github": {"X-GitHub-Event": event, "X-GitHub-Delivery": delivery, "X-Hub-Signature-256": f"sha256={mac}"},
        "gitlab": {"X-Gitlab-Event": event, "Idempotency-Key": delivery, "X-Gitlab-Token": TOKEN},
        "gitea": {"X-Gitea-Event": event, "X-Gitea-Delivery": delivery, "X-Gitea-Signature": mac},
        "forgejo": {"X-Forgejo-Event": event, "X-Forgejo-Delivery": delivery, "X-Forgejo-Signature": mac},
        "gogs": {"X-Gogs-Event": event, "X-Gogs-Delivery": delivery, "X-Gogs-Signature": mac},
        "bitbucket": {"X-Event-Key": event, "X-Request-UUID": delivery, "X-Hub-Signature": f"sha256={mac}"},
        "bitbucketserver": {"X-Event-Key": event, "X-Request-Id": delivery, "X-Hub-Signature": f"sha256={mac}"},
    }[rtype]}


def write_config(path: Path, rtype: str, url: str, branch: str, *, plan_forks: bool = False,
                 resources: str = "[{kind: GitRepository, name: app}]") -> Path:
    """A Receiver of `rtype` → GitRepository `app` (`url`, following `branch`) → Kustomization `app`."""
    path.write_text(receiver_yaml("forge", rtype, resources, namespace=NS,
                                  spec="planForks: true" if plan_forks else "") + dedent(f"""\
        apiVersion: source.toolkit.fluxcd.io/v1
        kind: GitRepository
        metadata: {{name: app, namespace: {NS}}}
        spec: {{interval: 10m, url: "{url}", ref: {{branch: "{branch}"}}}}
        ---
        apiVersion: kustomize.toolkit.fluxcd.io/v1
        kind: Kustomization
        metadata: {{name: app, namespace: {NS}}}
        spec: {{interval: 10m, path: ./deploy, prune: true, sourceRef: {{kind: GitRepository, name: app}}}}
        """))
    return path


class Herald:
    """The receiver app on the embedded bus, and what reached each queue."""

    def __init__(self, tmp_path: Path, rtype: str, url: str, branch: str, **kw: Any) -> None:
        self.rtype = rtype
        self.cfg = config.load([write_config(tmp_path / f"{uuid.uuid4().hex}.yaml", rtype, url, branch, **kw)])
        self.bus = open_bus(None, tmp_path / "state")
        self.app = create_app(self.cfg, self.bus, Settings(state_dir=tmp_path / "state"))
        self.client = self.app.test_client()
        self.hook = self.cfg.hook_path(self.cfg.receivers[(NS, "forge")])

    def post(self, event: str, payload: dict[str, Any], delivery: str = ""):
        body = json.dumps(payload).encode()
        return self.client.post(self.hook, data=body,
                                headers=signed(self.rtype, event, body, delivery or str(uuid.uuid4())))

    def drain(self, queue: str) -> list[ReconcileRequest]:
        """Every message on `queue`, read through the bus's own consume API."""
        got: list[ReconcileRequest] = []
        waiting = self.bus.depth(queue)
        stop = threading.Event()

        def handle(delivery) -> None:
            got.append(ReconcileRequest.from_json(delivery.body))
            if len(got) == waiting:
                stop.set()

        if waiting:
            self.bus.consume(queue, handle, stop)
        return got

    def plans(self) -> list[ReconcileRequest]:
        return self.drain(PLAN_QUEUE)

    def reconciles(self) -> list[ReconcileRequest]:
        return self.drain(RECONCILE_QUEUE)


@pytest.fixture
def herald(tmp_path: Path):
    made: list[Herald] = []

    def make(rtype: str, url: str, branch: str, **kw: Any) -> Herald:
        made.append(Herald(tmp_path, rtype, url, branch, **kw))
        return made[-1]

    yield make
    for h in made:
        h.bus.close()


@dataclass
class Host:
    """One Git host's pull request: its Receiver type, the event that opens one and the payload
    it sends, the repository and base branch in that payload, and the plan it should ask for."""

    rtype: str
    event: str
    payload: Callable[[], dict[str, Any]]
    url: str  # the GitRepository's URL: the payload's repository, as a user would write it
    base: str
    expected: dict[str, Any]

    @property
    def id(self) -> str:
        return self.rtype


def _gitea_opened() -> dict[str, Any]:
    # go-scm's recorded Gitea pull request was an edit; the same pull request, as opened.
    return fixture("gitea/pull_request-edited-go-scm.json") | {"action": "opened"}


def _bitbucket_full_hash() -> dict[str, Any]:
    # Bitbucket Cloud names the head by 12 hex digits (see the abbreviation scenario); this
    # gives it a whole one, to show the full request.
    data = fixture("bitbucket/pullrequest-created.json")
    data["pullrequest"]["source"]["commit"]["hash"] = "d3022fc0ca3d" + "4" * 28
    return data


HOSTS = [
    Host("github", "pull_request", lambda: fixture("github/pull_request-opened.json"),
         "https://github.com/Codertocat/Hello-World", "master",
         {"number": 2, "action": "opened", "head": "ec26c3e57ca3a959ca5aad62de7213c562f8c821",
          "ref": "refs/pull/2/head", "base": "master", "url": "https://github.com/Codertocat/Hello-World/pull/2",
          "fork": False, "headUrl": ""}),
    Host("gitlab", "Merge Request Hook", lambda: fixture("gitlab/merge_request-open-go-scm.json"),
         "git@gitlab.com:gitlab-org/hello-world.git", "master",
         {"number": 1, "action": "opened", "head": "c4c79227ed610f1151f05bbc5be33b4f340d39c8",
          "ref": "refs/merge-requests/1/head", "base": "master",
          "url": "https://gitlab.com/gitlab-org/hello-world/merge_requests/1", "fork": False, "headUrl": ""}),
    Host("gitea", "pull_request", _gitea_opened, "https://try.gitea.io/jcitizen/my-repo.git", "master",
         {"number": 1, "action": "opened", "head": "2eba238e33607c1fa49253182e9fff42baafa1eb",
          "ref": "refs/pull/1/head", "base": "master", "url": "https://try.gitea.io/jcitizen/my-repo/pulls/1",
          "fork": False, "headUrl": ""}),
    Host("forgejo", "pull_request", _gitea_opened, "ssh://git@try.gitea.io/jcitizen/my-repo", "master",
         {"number": 1, "action": "opened", "head": "2eba238e33607c1fa49253182e9fff42baafa1eb",
          "ref": "refs/pull/1/head", "base": "master", "url": "https://try.gitea.io/jcitizen/my-repo/pulls/1",
          "fork": False, "headUrl": ""}),
    Host("bitbucket", "pullrequest:created", _bitbucket_full_hash, "https://api.bitbucket.org/bitbucket/bitbucket",
         "master",
         {"number": 1, "action": "opened", "head": "d3022fc0ca3d" + "4" * 28, "ref": "refs/heads/branch2",
          "base": "master", "url": "https://api.bitbucket.org/pullrequest_id", "fork": False, "headUrl": ""}),
    Host("bitbucketserver", "pr:opened", bitbucket_server_pr_opened,
         "ssh://git@bitbucket.example.com:7999/proj/repository.git", "main",
         {"number": 1, "action": "opened", "head": "ef8755f06ee4b28c96a847a95cb8ec8ed6ddd1ca",
          "ref": "refs/heads/a-branch", "base": "main",
          "url": "https://bitbucket.example.com/projects/PROJ/repos/repository/pull-requests/1",
          "fork": False, "headUrl": ""}),
]
BY_TYPE = {h.rtype: h for h in HOSTS}


# ---- a pull request asks for a plan ---------------------------------------------------------


@pytest.mark.parametrize("host", HOSTS, ids=lambda h: h.id)
def test_an_opened_pull_request_asks_for_one_plan_and_reconciles_nothing(herald, host: Host) -> None:
    h = herald(host.rtype, host.url, host.base)
    resp = h.post(host.event, host.payload(), delivery="d-1")
    assert resp.status_code == 202, resp.json
    [plan] = h.plans()
    assert resp.json == {"requests": [plan.id], "targets": [f"GitRepository/{NS}/app"]}
    assert (plan.kind, plan.namespace, plan.name, plan.reason) == ("GitRepository", NS, "app", "plan")
    assert plan.origin == {"receiver": f"{NS}/forge", "type": host.rtype, "event": host.event,
                           "delivery": "d-1", "pullRequest": host.expected}
    assert h.reconciles() == []


def _updated(rtype: str, data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The same pull request after a push to its head, as each host says it."""
    if rtype == "github":
        return "pull_request", fixture("github/pull_request-synchronize.json")
    if rtype == "gitlab":  # an update naming the previous head (`oldrev`) is a push
        data["object_attributes"] |= {"action": "update", "oldrev": "a" * 40}
        return "Merge Request Hook", data
    if rtype in ("gitea", "forgejo"):
        return "pull_request", data | {"action": "synchronized"}
    if rtype == "bitbucket":
        return "pullrequest:updated", data
    data |= {"eventKey": "pr:from_ref_updated", "previousFromHash": "b" * 40}
    return "pr:from_ref_updated", data


@pytest.mark.parametrize("host", HOSTS, ids=lambda h: h.id)
def test_a_push_to_the_pull_request_asks_for_a_plan_of_the_new_head(herald, host: Host) -> None:
    h = herald(host.rtype, host.url, host.base)
    event, payload = _updated(host.rtype, host.payload())
    assert h.post(event, payload).status_code == 202
    [plan] = h.plans()
    assert plan.origin["pullRequest"] == host.expected | {"action": "updated"}
    assert h.reconciles() == []


@pytest.mark.parametrize("rtype,event,change", [
    ("github", "pull_request", lambda d: d | {"action": "reopened"}),
    ("github", "pull_request", lambda d: d | {"action": "ready_for_review"}),
    ("gitlab", "Merge Request Hook", lambda d: d | {"object_attributes": d["object_attributes"] | {"action": "reopen"}}),
    ("gitea", "pull_request", lambda d: d | {"action": "reopened"}),
], ids=["github-reopened", "github-ready_for_review", "gitlab-reopen", "gitea-reopened"])
def test_a_reopened_or_ready_pull_request_is_planned_again(herald, rtype: str, event: str, change) -> None:
    host = BY_TYPE[rtype]
    h = herald(rtype, host.url, host.base)
    assert h.post(event, change(host.payload())).status_code == 202
    [plan] = h.plans()
    assert plan.origin["pullRequest"]["action"] in ("reopened", "ready")


# ---- what asks for no plan ----------------------------------------------------------------


CLOSED = [
    ("github", "pull_request", lambda d: fixture("github/pull_request-closed.json")),
    ("github", "pull_request", lambda d: d | {"action": "closed", "pull_request": d["pull_request"] | {"merged": True}}),
    ("gitlab", "Merge Request Hook", lambda d: d | {"object_attributes": d["object_attributes"] | {"action": "close"}}),
    ("gitlab", "Merge Request Hook", lambda d: d | {"object_attributes": d["object_attributes"] | {"action": "merge"}}),
    ("gitea", "pull_request", lambda d: d | {"action": "closed"}),
    ("bitbucket", "pullrequest:fulfilled", lambda d: d),
    ("bitbucket", "pullrequest:rejected", lambda d: d),
    ("bitbucketserver", "pr:merged", lambda d: d),
    ("bitbucketserver", "pr:declined", lambda d: d),
    ("bitbucketserver", "pr:deleted", lambda d: d),
]


@pytest.mark.parametrize("rtype,event,change", CLOSED, ids=[f"{c[0]}-{i}" for i, c in enumerate(CLOSED)])
def test_a_closed_or_merged_pull_request_gets_no_plan(herald, rtype: str, event: str, change) -> None:
    host = BY_TYPE[rtype]
    h = herald(rtype, host.url, host.base)
    resp = h.post(event, change(host.payload()))
    assert (resp.status_code, resp.json) == (200, {"message": "pull request closed: no plan"})
    assert h.plans() == [] and h.reconciles() == []


EDITS = [
    ("github", "pull_request", lambda d: d | {"action": "labeled"}, "pull request labeled: no plan"),
    ("github", "pull_request", lambda d: d | {"action": "edited"}, "pull request edited: no plan"),
    # GitLab sends `update` for a title or label change too; without `oldrev` no commit moved.
    ("gitlab", "Merge Request Hook", lambda d: d | {"object_attributes": d["object_attributes"] | {"action": "update"}},
     "pull request update (no new commit): no plan"),
    ("gitea", "pull_request", lambda d: fixture("gitea/pull_request-edited-go-scm.json"),
     "pull request edited: no plan"),
    ("gitea", "pull_request", lambda d: d | {"action": "label_updated"}, "pull request label updated: no plan"),
    ("bitbucket", "pullrequest:comment_created", lambda d: d, "pull request comment created: no plan"),
    ("bitbucketserver", "pr:modified", lambda d: d, "pull request modified: no plan"),
    ("bitbucketserver", "pr:reviewer:approved", lambda d: d, "pull request reviewer approved: no plan"),
]


@pytest.mark.parametrize("rtype,event,change,message", EDITS, ids=[e[3] for e in EDITS])
def test_a_title_edit_a_label_or_a_comment_gets_no_plan(herald, rtype: str, event: str, change,
                                                        message: str) -> None:
    host = BY_TYPE[rtype]
    h = herald(rtype, host.url, host.base)
    resp = h.post(event, change(host.payload()))
    assert (resp.status_code, resp.json) == (200, {"message": message})
    assert h.plans() == [] and h.reconciles() == []


def test_bitbucket_cloud_names_only_an_abbreviated_head_and_it_is_planned_all_the_same(herald) -> None:
    """Bitbucket Cloud's real pull request payload names its head as `d3022fc0ca3d`: the plan
    request carries it as sent, and the reconciler resolves it to the ref's tip
    (tests/test_plan_worker.py)."""
    h = herald("bitbucket", "https://api.bitbucket.org/bitbucket/bitbucket", "master")
    resp = h.post("pullrequest:created", fixture("bitbucket/pullrequest-created.json"))
    assert resp.status_code == 202
    [plan] = h.plans()
    assert plan.origin["pullRequest"]["head"] == "d3022fc0ca3d" and h.reconciles() == []


def test_gogs_names_no_head_commit_so_it_gets_no_plan(herald) -> None:
    h = herald("gogs", "http://try.gogs.io/gogits/hello-world.git", "master")
    resp = h.post("pull_request", fixture("gogs/pull_request-edited-go-scm.json") | {"action": "opened"})
    assert resp.status_code == 200 and "Gogs names no head commit" in resp.json["message"]
    assert h.plans() == [] and h.reconciles() == []


# ---- forks ------------------------------------------------------------------------------------


def _github_fork(d: dict[str, Any]) -> dict[str, Any]:
    d["pull_request"]["head"]["repo"] |= {"id": 99, "full_name": "mallory/Hello-World",
                                         "clone_url": "https://github.com/mallory/Hello-World.git"}
    return d


def _bitbucket_server_fork(d: dict[str, Any]) -> dict[str, Any]:
    d["pullRequest"]["fromRef"]["repository"] |= {
        "id": 85, "slug": "repository", "project": {"key": "~MALLORY"},
        "links": {"clone": [{"href": "ssh://git@bitbucket.example.com:7999/~mallory/repository.git", "name": "ssh"},
                            {"href": "https://bitbucket.example.com/scm/~mallory/repository.git", "name": "http"}]}}
    return d


FORKS = [
    # go-playground's recorded Gitea pull request comes from a fork: example2/example into example/example.
    ("gitea", "pull_request", lambda: fixture("gitea/pull_request.json"), "http://localhost:3000/example/example",
     "master", {"number": 2, "ref": "refs/pull/2/head", "headUrl": "http://localhost:3000/example2/example.git"}),
    ("github", "pull_request", lambda: _github_fork(fixture("github/pull_request-opened.json")),
     BY_TYPE["github"].url, "master",
     {"number": 2, "ref": "refs/pull/2/head", "headUrl": "https://github.com/mallory/Hello-World.git"}),
    # Bitbucket publishes no pull request ref: the head branch is fetched from the fork.
    ("bitbucketserver", "pr:opened", lambda: _bitbucket_server_fork(bitbucket_server_pr_opened()),
     BY_TYPE["bitbucketserver"].url, "main",
     {"number": 1, "ref": "refs/heads/a-branch",
      "headUrl": "https://bitbucket.example.com/scm/~mallory/repository.git"}),
]


@pytest.mark.parametrize("rtype,event,payload,url,base,expected", FORKS, ids=[f[0] for f in FORKS])
def test_a_pull_request_from_a_fork_is_not_planned_by_default(herald, caplog, rtype, event, payload, url, base,
                                                               expected) -> None:
    """A fork's head is someone else's code: rendering it runs their Kustomize overlays
    against the cluster's API server (a dry-run, but still). Only `planForks: true` allows it."""
    h = herald(rtype, url, base)
    assert h.cfg.receivers[(NS, "forge")].plan_forks is False
    caplog.set_level(logging.INFO, logger="herald.receiver")
    resp = h.post(event, payload())
    assert (resp.status_code, resp.json) == (
        200, {"message": "pull request from a fork: forks are not planned unless spec.planForks: true"})
    assert h.plans() == [] and h.reconciles() == []
    [line] = [r for r in caplog.records if "fork" in r.getMessage()]
    assert line.levelno == logging.INFO and "spec.planForks is not true" in line.getMessage()


@pytest.mark.parametrize("rtype,event,payload,url,base,expected", FORKS, ids=[f[0] for f in FORKS])
def test_a_pull_request_from_a_fork_is_planned_with_plan_forks(herald, rtype, event, payload, url, base,
                                                                expected) -> None:
    h = herald(rtype, url, base, plan_forks=True)
    assert h.cfg.receivers[(NS, "forge")].plan_forks is True
    assert h.post(event, payload()).status_code == 202
    [plan] = h.plans()
    pr = plan.origin["pullRequest"]
    assert pr["fork"] is True and pr["action"] == "opened" and pr["base"] == base
    assert {k: pr[k] for k in expected} == expected
    assert h.reconciles() == []


# ---- which GitRepositories are planned ----------------------------------------------------------


def test_a_pull_request_against_a_branch_no_gitrepository_follows_gets_no_plan(herald) -> None:
    host = BY_TYPE["github"]
    h = herald("github", host.url, "main")  # the pull request is into master
    resp = h.post("pull_request", host.payload())
    assert resp.status_code == 200
    assert resp.json == {"message": "no GitRepository of this repository follows 'master': no plan",
                         "skipped": [f"GitRepository {NS}/app follows 'main', not 'master'"]}
    assert h.plans() == [] and h.reconciles() == []


def test_a_pull_request_of_another_repository_gets_no_plan(herald) -> None:
    host = BY_TYPE["github"]
    h = herald("github", "https://github.com/Codertocat/Another-World.git", "master")
    resp = h.post("pull_request", host.payload())
    assert resp.status_code == 200
    assert resp.json["skipped"] == [
        f"GitRepository {NS}/app is https://github.com/Codertocat/Another-World.git, not the pull request's repository"]
    assert h.plans() == [] and h.reconciles() == []


def test_a_selected_kustomization_plans_its_gitrepository_once(herald) -> None:
    host = BY_TYPE["gitlab"]
    h = herald("gitlab", host.url, host.base,
               resources="[{kind: Kustomization, name: app}, {kind: GitRepository, name: app}]")
    resp = h.post(host.event, host.payload())
    assert resp.status_code == 202
    assert resp.json["targets"] == [f"GitRepository/{NS}/app"]
    assert [p.name for p in h.plans()] == ["app"]


def test_the_many_ways_to_write_one_repository_url_are_one_repository() -> None:
    same = ["git@GitHub.com:owner/repo.git", "ssh://git@github.com/owner/repo", "ssh://git@github.com:22/owner/repo.git",
            "https://github.com/owner/repo", "https://github.com/owner/repo.git", "https://token@github.com:443/owner/repo/",
            "http://github.com/owner/repo.git/", "git://github.com/owner/repo.git"]
    assert {repository_key(u) for u in same} == {"github.com/owner/repo"}
    assert repository_key("https://github.com/owner/other") != repository_key(same[0])
    assert repository_key("https://gitlab.com/owner/repo") != repository_key(same[0])


def test_plan_targets_keeps_the_gitrepositories_of_the_base_branch(tmp_path: Path) -> None:
    cfg = config.load([write_config(tmp_path / "c.yaml", "github", "git@github.com:owner/repo.git", "main")])
    pr = PullRequest(number=3, action="opened", head_sha="c" * 40, head_ref="refs/pull/3/head", base_branch="main",
                     clone_urls=("https://github.com/owner/repo.git",), fork=False)
    ks, repo = Target("Kustomization", "app", NS), Target("GitRepository", "app", NS)
    assert plan_targets(cfg, [ks, repo], pr) == ([repo], [])
    other = PullRequest(**{**pr.__dict__, "base_branch": "release"})
    targets, skipped = plan_targets(cfg, [ks], other)
    assert targets == [] and [s.why for s in skipped] == [
        f"GitRepository {NS}/app (the source of Kustomization {NS}/app) follows 'main', not 'release'"]


# ---- malformed pull requests ------------------------------------------------------------------


MISSING = object()  # the field is left out


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def change(d: dict[str, Any]) -> dict[str, Any]:
        *parents, last = path.split(".")
        node = d
        for key in parents:
            node = node[key]
        if value is MISSING:
            del node[last]
        else:
            node[last] = value
        return d
    return change


MALFORMED = [
    ("github", "pull_request.head.sha", "not-a-commit", "'pull_request.head.sha' must be a 40-hex commit sha"),
    ("github", "pull_request.number", MISSING, "'pull_request.number' must be a positive integer"),
    ("github", "pull_request.base.ref", "refs/tags/v1", "'pull_request.base.ref' must name a branch"),
    ("gitlab", "object_attributes.last_commit.id", "g" * 40,
     "'object_attributes.last_commit.id' must be a 40-hex commit sha"),
    ("gitlab", "object_attributes.iid", MISSING, "'object_attributes.iid' must be a positive integer"),
    ("gitea", "pull_request.head.sha", "", "'pull_request.head.sha' must be a 40-hex commit sha"),
    ("bitbucket", "pullrequest.id", "1", "'pullrequest.id' must be a positive integer"),
    ("bitbucket", "pullrequest.source.commit.hash", "xyz", "'pullrequest.source.commit.hash' must be a hex commit sha"),
    ("bitbucketserver", "pullRequest.fromRef.latestCommit", None,
     "'pullRequest.fromRef.latestCommit' must be a 40-hex commit sha"),
    ("bitbucketserver", "pullRequest.id", MISSING, "'pullRequest.id' must be a positive integer"),
]


@pytest.mark.parametrize("rtype,path,value,error", MALFORMED, ids=[f"{m[0]}:{m[1]}" for m in MALFORMED])
def test_a_malformed_pull_request_is_400_naming_the_field(herald, rtype: str, path: str, value: Any,
                                                         error: str) -> None:
    host = BY_TYPE[rtype]
    h = herald(rtype, host.url, host.base)
    resp = h.post(host.event, _set(path, value)(host.payload()))
    assert resp.status_code == 400
    assert resp.json == {"error": f"{host.event} payload: {error}"}
    assert h.plans() == [] and h.reconciles() == []


# ---- delivery handling is the push path's ---------------------------------------------------------


def test_a_redelivered_pull_request_is_planned_once(herald) -> None:
    host = BY_TYPE["github"]
    h = herald("github", host.url, host.base)
    assert h.post(host.event, host.payload(), delivery="same").status_code == 202
    resp = h.post(host.event, host.payload(), delivery="same")
    assert resp.status_code == 200 and resp.json["message"] == "duplicate delivery; already accepted"
    assert len(h.plans()) == 1


def test_a_plan_the_broker_did_not_confirm_is_503_and_its_retry_is_planned(herald) -> None:
    host = BY_TYPE["github"]
    h = herald("github", host.url, host.base)
    publish, calls = h.bus.publish, []

    def flaky(queue: str, *args: Any, **kw: Any) -> None:
        calls.append(queue)
        if len(calls) == 1:
            raise BusUnavailable("no confirm in time")
        publish(queue, *args, **kw)

    h.bus.publish = flaky
    resp = h.post(host.event, host.payload(), delivery="retried")
    assert resp.status_code == 503 and resp.headers["Retry-After"]
    assert h.post(host.event, host.payload(), delivery="retried").status_code == 202
    assert calls == [PLAN_QUEUE, PLAN_QUEUE] and len(h.plans()) == 1


def test_a_push_still_reconciles_and_asks_for_no_plan(herald) -> None:
    h = herald("github", "https://example.com/app.git", "main")
    resp = h.post("push", json.loads(github_push("a" * 40)))
    assert resp.status_code == 202
    [req] = h.reconciles()
    assert (req.kind, req.name, req.reason) == ("GitRepository", "app", "webhook")
    assert req.origin["revision"] == f"main@sha1:{'a' * 40}"
    assert h.plans() == []
