"""The notifier's side of pull-request plans (issue 14), as pure rules: which status a plan
event asks for, and how the one comment of a pull request is put together from the
Kustomizations' plans, newest head first. The forges' wire formats are tested in
tests/test_forge_comments.py and end to end in tests/test_pull_request_plans.py."""

from __future__ import annotations

from dataclasses import dataclass, field

from herald.messages import SEVERITY_ERROR, SEVERITY_INFO, Event
from herald.model import Meta, Provider
from notifier import plan_comments
from notifier.providers.base import DictMemory, Notification
from notifier.providers.commitstatus import Limits, State, Status, plan

HEAD = "a" * 40
NEWER = "b" * 40


def plan_event(reason: str, name: str = "app", head: str = HEAD, requested: str = "2026-12-06T10:00:00.000Z",
               **extra: str) -> Event:
    severity = SEVERITY_ERROR if reason == "PlanFailed" else SEVERITY_INFO
    meta = {"revision": f"refs/pull/7/head@sha1:{head}", "commit": head, "commit_status": "update", "plan": "true",
            "pullRequest": "7", "planRequestedAt": requested, **extra}
    return Event.for_object("Kustomization", name, "flux-system", severity=severity, reason=reason,
                            message="", metadata=meta)


def test_a_plan_gets_its_own_context_and_the_summary_as_description() -> None:
    pending = plan(plan_event("Progressing"), Limits(255, 140))
    assert pending == Status(HEAD, State.PENDING, "herald/plan: flux-system/app", "planning")
    done = plan(plan_event("PlanSucceeded", planSummary="2 to create, 1 to update, 0 to delete"), Limits(255, 140))
    assert (done.state, done.description) == (State.SUCCESS, "2 to create, 1 to update, 0 to delete")
    failed = plan(plan_event("PlanFailed", planSummary="plan failed: Deployment/shop/web: immutable"), Limits(255, 140))
    assert failed.state is State.FAILURE and failed.description.startswith("plan failed: Deployment/shop/web")


def test_an_alerts_cluster_name_is_part_of_the_plan_context() -> None:
    status = plan(plan_event("PlanSucceeded", clusterName="prod-eu", planSummary="no changes"), Limits(255, 140))
    assert status.context == "herald/plan: flux-system/app (prod-eu)"


@dataclass
class FakeClient:
    written: list[tuple[int, str]] = field(default_factory=list)

    def upsert_comment(self, pr: int, body: str) -> object:
        self.written.append((pr, body))
        return None


def post(memory: DictMemory, client: FakeClient, event: Event) -> None:
    provider = Provider(meta=Meta(name="gh", namespace="flux-system"), type="github", address="https://x/acme/app")
    note = Notification(event=event, alert="flux-system/a", provider="flux-system/gh", memory=memory)
    plan_comments.post(provider, "flux-system/gh", {}, note, make_client=lambda *a: client)


def section(name: str, head: str = HEAD, requested: str = "2026-12-06T10:00:00.000Z") -> Event:
    return plan_event("PlanSucceeded", name=name, head=head, requested=requested, planSummary="no changes",
                      planCounts='{"unchanged": 3}', planSection=f"<details>{name} of {head[:4]}</details>\n")


def test_the_comment_shows_every_kustomization_of_the_newest_head() -> None:
    memory, client = DictMemory(), FakeClient()
    post(memory, client, section("apps"))
    post(memory, client, section("infra"))
    pr, body = client.written[-1]
    assert pr == 7 and "| flux-system/apps | 0 | 0 | 0 | 3 | 0 |" in body and "| flux-system/infra |" in body
    post(memory, client, section("apps", NEWER, "2026-12-06T10:05:00.000Z"))
    body = client.written[-1][1]
    assert "apps of bbbb" in body and "infra" not in body  # the older head's sections are gone


def test_a_late_plan_of_an_older_head_leaves_the_comment_alone() -> None:
    memory, client = DictMemory(), FakeClient()
    post(memory, client, section("apps", NEWER, "2026-12-06T10:05:00.000Z"))
    post(memory, client, section("infra", HEAD, "2026-12-06T10:00:00.000Z"))
    assert len(client.written) == 1


def test_pending_events_write_no_comment() -> None:
    memory, client = DictMemory(), FakeClient()
    post(memory, client, plan_event("Progressing"))
    assert client.written == []


def test_bitbucket_which_shows_html_as_text_gets_the_sections_as_bold_titles() -> None:
    memory, client = DictMemory(), FakeClient()
    provider = Provider(meta=Meta(name="bb", namespace="flux-system"), type="bitbucketserver",
                        address="https://bitbucket.example/scm/acme/app.git")
    section = ('<details><summary><b>Kustomization flux-system/apps</b>: 1 to update</summary>\n\n'
               '<details><summary><code>Deployment/shop/web</code>: update</summary>\n\n```diff\n'
               '+  replicas: 3\n```\n\n</details>\n\n</details>\n')
    note = Notification(event=plan_event("PlanSucceeded", planSummary="1 to update", planCounts='{"update": 1}',
                                         planSection=section), alert="flux-system/a", memory=memory)
    plan_comments.post(provider, "flux-system/bb", {}, note, make_client=lambda *a: client)
    body = client.written[-1][1]
    assert "<details>" not in body and "</details>" not in body and "<code>" not in body
    assert "**Kustomization flux-system/apps: 1 to update**" in body
    assert "**`Deployment/shop/web`: update**" in body and "+  replicas: 3" in body
