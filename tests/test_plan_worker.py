"""The reconciler's side of pull-request plans (issue 14): a plan request from the bus in, a
pending event and a final event per Kustomization out, whatever happens in between.

Each scenario deploys `main` with the reconciler (test API server, real Git remote), publishes
the pull request's head as GitHub does (`refs/pull/7/head`), and hands the worker's bus handler
the plan request the receiver would publish.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from herald import config
from herald.bus import Delivery, Reject, open_bus
from herald.messages import PLAN_QUEUE, ReconcileRequest
from reconciler.worker import Reconciler
from tests.fixtures_herald import Repo, write_config
from tests.kubeapi import KubeAPIServer
from tests.test_honest_runs import drain_events
from tests.test_plan_cli import CHANGED_WEB, NEW_OBJECTS, SECRET_VALUE, deploy_main, push_pull_request


def plan_request(head: str, number: int = 7, ref: str = "refs/pull/7/head") -> ReconcileRequest:
    return ReconcileRequest(kind="GitRepository", name="app", namespace="flux-system", reason="plan", origin={
        "receiver": "flux-system/github-app", "type": "github", "event": "pull_request", "delivery": "d-1",
        "pullRequest": {"number": number, "action": "opened", "head": head, "ref": ref, "base": "main",
                        "url": f"https://github.example/acme/app/pull/{number}", "fork": False, "headUrl": ""}})


@pytest.fixture
def worker(tmp_path: Path, repo: Repo, kubeconfig: Path, monkeypatch: pytest.MonkeyPatch):
    cfg = write_config(tmp_path / "herald.yaml", repo.url)
    deploy_main(tmp_path, repo, cfg, kubeconfig, monkeypatch)
    bus = open_bus(None, tmp_path / "state")
    reconciler = Reconciler(config.load([cfg]), bus, tmp_path / "state")
    yield reconciler
    bus.close()


def handle(worker: Reconciler, req: ReconcileRequest) -> list[dict]:
    worker.plans.handle(Delivery(PLAN_QUEUE, req.to_json(), req.id))
    return drain_events(worker.bus)


def test_a_plan_request_gives_a_pending_event_then_the_plan(worker: Reconciler, repo: Repo,
                                                            kube_api: KubeAPIServer) -> None:
    head = push_pull_request(repo, {"deploy/web.yaml": CHANGED_WEB, "deploy/new.yaml": NEW_OBJECTS})
    pending, final = handle(worker, plan_request(head))
    assert (pending["reason"], pending["severity"]) == ("Progressing", "info")
    assert pending["metadata"]["commit"] == head and pending["metadata"]["plan"] == "true"
    assert final["reason"] == "PlanSucceeded" and final["involvedObject"]["name"] == "app"
    meta = final["metadata"]
    assert meta["revision"] == f"refs/pull/7/head@sha1:{head}" and meta["pullRequest"] == "7"
    assert meta["planSummary"] == "2 to create, 1 to update, 1 to delete"
    assert json.loads(meta["planCounts"])["create"] == 2
    assert "<code>Deployment/shop/web</code>: update" in meta["planSection"]
    assert SECRET_VALUE not in json.dumps(final)
    assert kube_api.get_object("apps/v1", "Deployment", "shop", "web")["spec"]["replicas"] == 2


def test_a_head_the_remote_does_not_serve_still_ends_its_pending_check(worker: Reconciler, repo: Repo) -> None:
    push_pull_request(repo, {"deploy/web.yaml": CHANGED_WEB})
    gone = "0123456789abcdef0123456789abcdef01234567"
    pending, final = handle(worker, plan_request(gone))
    assert pending["metadata"]["commit"] == final["metadata"]["commit"] == gone
    assert final["reason"] == "PlanFailed" and final["severity"] == "error"
    assert "is not served by the remote" in final["metadata"]["planError"]
    assert len(final["metadata"]["planSummary"]) <= 140


def test_a_missing_pull_request_ref_fails_the_plan_with_the_fetch_error(worker: Reconciler, repo: Repo) -> None:
    _, final = handle(worker, plan_request(repo.head, number=99, ref="refs/pull/99/head"))
    assert final["reason"] == "PlanFailed" and "fetching refs/pull/99/head failed" in final["message"]


def test_a_malformed_plan_request_is_rejected_naming_the_field(worker: Reconciler) -> None:
    req = plan_request("not-a-sha")
    with pytest.raises(Reject, match="origin.pullRequest.head must be a commit of 7 to 64 hex digits"):
        worker.plans.handle(Delivery(PLAN_QUEUE, req.to_json(), req.id))


def test_an_abbreviated_head_is_resolved_to_the_ref_tip_before_anything_is_reported(worker: Reconciler,
                                                                                   repo: Repo) -> None:
    """Bitbucket Cloud names a pull request's head by 12 hex digits: the checks go on the
    whole commit, found by fetching the ref."""
    head = push_pull_request(repo, {"deploy/web.yaml": CHANGED_WEB})
    pending, final = handle(worker, plan_request(head[:12]))
    assert pending["metadata"]["commit"] == final["metadata"]["commit"] == head
    assert final["reason"] == "PlanSucceeded"
