"""Pull-request plans end to end (issue 14): a GitHub `pull_request` webhook in, a pending
check, a final check and one plan comment out, and nothing applied.

`herald serve` runs as a user runs it (embedded bus), against the test API server, a real Git
remote that publishes the pull request's head as GitHub does (`refs/pull/<n>/head`), and a
local server speaking GitHub's REST API (statuses, issue comments, /user), pointed at by the
Provider's `address` as a GitHub Enterprise user would.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from herald import config
from tests.fixtures_herald import (
    TOKEN,
    Repo,
    github_headers,
    github_pull_request,
    github_push,
    github_status_alert,
    start_herald,
    stop_herald,
    taking_pull_requests,
    wait_ready,
    write_config,
)
from tests.gitforges import GitForges
from tests.kubeapi import KubeAPIServer
from tests.test_end_to_end import free_port, wait_until
from tests.test_plan_cli import (
    CHANGED_WEB,
    NEW_OBJECTS,
    SECRET_VALUE,
    push_pull_request,
)

CONTEXT = "herald/plan: flux-system/app"
GITHUB_TOKEN = "github-token-never-shown"


def pull_request(repo: Repo, number: int, head: str, action: str = "opened") -> bytes:
    return github_pull_request(repo.url, number, head, action)


@dataclass
class Running:
    repo: Repo
    forges: GitForges
    kube_api: KubeAPIServer
    cfg: Path
    env: dict[str, str]
    log: Path
    hook: str = ""
    base: str = ""
    proc: object = None

    def start(self) -> None:
        self.proc = start_herald("serve", self.cfg, self.log, self.env)
        wait_ready(self.base)

    def stop(self) -> None:
        if self.proc is not None:
            assert stop_herald(self.proc) == 0, self.log.read_text()
            self.proc = None

    def send(self, body: bytes, event: str = "pull_request") -> requests.Response:
        return requests.post(self.hook, data=body, headers=github_headers(body, event=event), timeout=10)

    def final_status(self, sha: str) -> dict:
        def final() -> list[dict]:
            return [s for s in self.forges.statuses("github", "acme/app", sha)
                    if s["context"] == CONTEXT and s["state"] != "pending"]
        return wait_until(final, 60, f"a final plan status on {sha[:12]}")[0]

    def comments(self, number: int = 7) -> list[dict]:
        return self.forges.comments("github", "acme/app", number)


@pytest.fixture
def herald(tmp_path: Path, repo: Repo, kube_api: KubeAPIServer, kubeconfig: Path) -> Iterator[Running]:
    with GitForges() as forges:
        forges.repos["github"].add("acme/app")
        forges.tokens["github"] = {GITHUB_TOKEN}
        cfg = taking_pull_requests(write_config(tmp_path / "herald.yaml", repo.url,
                                                extra=github_status_alert(f"{forges.url}/acme/app", GITHUB_TOKEN)))
        loaded = config.load([cfg])
        port = free_port()
        env = dict(os.environ, KUBECONFIG=str(kubeconfig), HERALD_STATE_DIR=str(tmp_path / "state"),
                   HERALD_LISTEN=f"127.0.0.1:{port}", HERALD_LOG_LEVEL="INFO", HERALD_INTERVAL_POLLING="false")
        env.pop("HERALD_BROKER_URL", None)
        running = Running(repo, forges, kube_api, cfg, env, tmp_path / "serve.log",
                          base=f"http://127.0.0.1:{port}")
        running.hook = running.base + loaded.hook_path(loaded.receivers[("flux-system", "github-app")])
        running.start()
        try:
            # main is deployed first, as a reconcile leaves it: the plans compare with that
            body = github_push(repo.head)
            assert running.send(body, event="push").status_code == 202
            wait_until(lambda: [s for s in forges.statuses("github", "acme/app", repo.head)
                                if s["state"] == "success"], 60, "main deployed")
            yield running
        finally:
            running.stop()
        log = running.log.read_text()
        assert SECRET_VALUE not in log and GITHUB_TOKEN not in log and TOKEN not in log
        assert "Traceback" not in log, log


def test_a_pull_request_gets_a_pending_then_final_check_and_one_comment_and_nothing_is_applied(
        herald: Running) -> None:
    head = push_pull_request(herald.repo, {"deploy/web.yaml": CHANGED_WEB, "deploy/new.yaml": NEW_OBJECTS})
    writes_before = [r for r in herald.kube_api.requests if r.method not in ("GET", "HEAD")
                     and r.query.get("dryRun") != "All"]
    assert herald.send(pull_request(herald.repo, 7, head)).status_code == 202
    final = herald.final_status(head)
    assert (final["state"], final["description"]) == ("success", "2 to create, 1 to update, 1 to delete")
    states = [s["state"] for s in herald.forges.statuses("github", "acme/app", head) if s["context"] == CONTEXT]
    assert states == ["pending", "success"]
    [comment] = wait_until(herald.comments, 30, "the plan comment")
    body = comment["body"]
    assert body.startswith("<!-- herald:plan -->\n### Herald plan for `" + head[:12])
    assert "| flux-system/app | 2 | 1 | 1 | 1 | 0 |" in body
    assert "<code>Deployment/shop/web</code>: update" in body and "+  replicas: 3" in body
    assert "<code>Secret/shop/db</code>: create" in body and "`password` added" in body
    assert SECRET_VALUE not in json.dumps(herald.forges.statuses("github", "acme/app", head)) + body
    # nothing applied: the only writes since main was deployed are dry-runs
    writes = [r for r in herald.kube_api.requests if r.method not in ("GET", "HEAD") and r.query.get("dryRun") != "All"]
    assert writes == writes_before
    assert herald.kube_api.get_object("apps/v1", "Deployment", "shop", "web")["spec"]["replicas"] == 2


def test_a_second_push_edits_the_same_comment_even_after_a_restart(herald: Running) -> None:
    first = push_pull_request(herald.repo, {"deploy/web.yaml": CHANGED_WEB})
    assert herald.send(pull_request(herald.repo, 7, first)).status_code == 202
    herald.final_status(first)
    [comment] = wait_until(herald.comments, 30, "the plan comment")
    herald.stop()  # a restart between two pushes: the comment is found again by its marker
    herald.start()
    second = push_pull_request(herald.repo, {"deploy/web.yaml": CHANGED_WEB.replace("replicas: 3", "replicas: 5"),
                                             "deploy/new.yaml": NEW_OBJECTS})
    assert herald.send(pull_request(herald.repo, 7, second, action="synchronize")).status_code == 202
    assert herald.final_status(second)["state"] == "success"
    edited = wait_until(lambda: [c for c in herald.comments() if second[:12] in c["body"]], 30, "the edited comment")
    assert len(herald.comments()) == 1 and edited[0]["id"] == comment["id"]
    assert "+  replicas: 5" in edited[0]["body"] and "+  replicas: 3" not in edited[0]["body"]


def test_a_pull_request_that_breaks_a_manifest_fails_its_check_naming_the_object(herald: Running) -> None:
    head = push_pull_request(herald.repo, {"deploy/web.yaml": CHANGED_WEB.replace("app: web}", "app: web-v2}")},
                             number=8)
    assert herald.send(pull_request(herald.repo, 8, head)).status_code == 202
    final = herald.final_status(head)
    assert final["state"] == "failure" and final["description"].startswith("plan failed: Deployment/shop/web")
    assert len(final["description"]) <= 140
    [comment] = wait_until(lambda: herald.comments(8), 30, "the plan comment")
    assert "| flux-system/app |" in comment["body"] and "immutable" in comment["body"]


def test_a_closed_pull_request_gets_no_plan_and_a_busy_host_is_waited_for(herald: Running) -> None:
    head = push_pull_request(herald.repo, {"deploy/web.yaml": CHANGED_WEB}, number=10)
    closed = herald.send(pull_request(herald.repo, 9, head, action="closed"))
    assert closed.status_code == 200
    herald.forges.fail_next(429, retry_after=1)  # the host is busy once: Retry-After is honoured
    assert herald.send(pull_request(herald.repo, 10, head)).status_code == 202
    assert herald.final_status(head)["state"] == "success"
    wait_until(lambda: herald.comments(10), 60, "the plan comment after the 429")
    assert herald.comments(9) == [] and len(herald.comments(10)) == 1
