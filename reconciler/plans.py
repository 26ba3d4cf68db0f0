"""Pull-request plans from the bus: a plan request in, a pending event and a final event per
Kustomization out. Never an apply, never the apply Lease, never a wait for a reconcile.

A plan request is a ReconcileRequest on `herald.plan` (ARCHITECTURE.md) for one GitRepository,
whose `origin.pullRequest` names the pull request: its number, head commit, the ref that
publishes the head (`refs/pull/<n>/head`, ...), the base branch, and for a Bitbucket fork the
fork's URL. For each Kustomization of that GitRepository:

1. at once, a `Progressing` event on the head commit (commit-status providers show it as the
   pending check `herald/plan: <namespace>/<name>`);
2. once planned (`reconciler.preview`, which builds exactly as a reconcile does and dry-runs
   against the live cluster), `PlanSucceeded` (info) or `PlanFailed` (error), whose metadata
   carries what the notifier needs for the status and the comment: the summary (at most 140
   characters), the Kustomization's Markdown section and its counts.

Every Kustomization that got a pending event gets a final one, whatever fails (the fetch, the
build, the cluster, a bug), so no check stays pending. The plan is of the head the webhook
named: when the ref has moved on (a newer push), that commit is still planned when the remote
serves it, and otherwise the plan fails saying so; the newer push's own plan follows.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from herald.bus import Bus, Delivery, Reject
from herald.config import Config
from herald.logs import DELIVERY_HEADER, correlated, correlation_id
from herald.messages import (
    EVENTS_QUEUE,
    PLAN_QUEUE,
    SEVERITY_ERROR,
    SEVERITY_INFO,
    Event,
    MessageError,
    ReconcileRequest,
)
from herald.history import History, Recorder, delivery_of, plan_diff
from herald.model import GitRef, GitRepository, Kustomization
from reconciler.git import GitError, Revision
from reconciler.kube import Cluster
from reconciler.plan import STATUS_LIMIT, UNCHANGED
from reconciler.preview import KustomizationPlan, Planner

log = logging.getLogger(__name__)

SECTION_LIMIT = 60_000
"""The most of one Kustomization's Markdown an event carries: the comment is cut to the host's
limit anyway (GitHub 65,536), and an event is a bus message and a log line's neighbour."""

_SHA = frozenset("0123456789abcdef")


@dataclass(frozen=True)
class PullRequestRef:
    """`origin.pullRequest` of a plan request, checked."""

    number: int
    head: str  # full, or abbreviated where the host sends no more (Bitbucket Cloud: 12 hex)
    ref: str
    base: str
    url: str = ""
    fork: bool = False
    head_url: str = ""

    @classmethod
    def of(cls, origin: dict) -> PullRequestRef:
        pr = origin.get("pullRequest")
        if not isinstance(pr, dict):
            raise MessageError("plan request: origin.pullRequest must be an object")
        number, head, ref = pr.get("number"), str(pr.get("head") or "").lower(), str(pr.get("ref") or "")
        if not isinstance(number, int) or isinstance(number, bool) or number < 1:
            raise MessageError("plan request: origin.pullRequest.number must be a positive integer")
        if not 7 <= len(head) <= 64 or not set(head) <= _SHA:
            raise MessageError("plan request: origin.pullRequest.head must be a commit of 7 to 64 hex digits")
        if not ref.startswith("refs/"):
            raise MessageError("plan request: origin.pullRequest.ref must be a full ref (refs/...)")
        return cls(number, head, ref, str(pr.get("base") or ""), str(pr.get("url") or ""),
                   bool(pr.get("fork")), str(pr.get("headUrl") or ""))


def _event(ks: Kustomization, reason: str, severity: str, message: str, metadata: dict[str, str]) -> Event:
    return Event.for_object("Kustomization", ks.meta.name, ks.meta.namespace, severity=severity, reason=reason,
                            message=message, metadata=metadata)


def plan_metadata(req: ReconcileRequest, pr: PullRequestRef) -> dict[str, str]:
    """What every plan event of this request carries: the commit its status goes on, and the
    pull request its comment goes to."""
    meta = {"revision": f"{pr.ref}@sha1:{pr.head}", "commit": pr.head, "commit_status": "update",
            "plan": "true", "pullRequest": str(pr.number), "planRequestedAt": req.requestedAt}
    if pr.url:
        meta["pullRequestUrl"] = pr.url
    return meta


def final_event(result: KustomizationPlan, base: dict[str, str], whole: str = "") -> Event:
    """PlanSucceeded or PlanFailed for one Kustomization, from its plan (or why there is none).
    `whole`: where the status page shows the whole plan, linked from a section that was cut."""
    ks, meta = result.ks, dict(base)
    if result.plan is not None:
        plan = result.plan
        section = plan.markdown(f"Kustomization {result.target}")
        if len(section) > SECTION_LIMIT:
            where = f": [the whole plan]({whole})" if whole else ""
            section = section[:SECTION_LIMIT] + f"\n\n_(this Kustomization's plan was cut{where})_\n</details>\n"
        meta.update(planSummary=plan.summary, planSection=section,
                    planCounts=json.dumps(plan.counts(), separators=(",", ":")))
        lines = [plan.summary] + [c.text().splitlines()[0] for c in plan.changes if c.action != UNCHANGED]
        if plan.failed:
            return _event(ks, "PlanFailed", SEVERITY_ERROR, "\n".join(lines), meta)
        return _event(ks, "PlanSucceeded", SEVERITY_INFO, "\n".join(lines), meta)
    error = result.error or "no Kubernetes cluster is configured: the plan cannot compare with the live cluster"
    summary = error if len(error) <= STATUS_LIMIT else error[:STATUS_LIMIT - 1] + "…"
    meta.update(planSummary=f"plan failed: {summary}"[:STATUS_LIMIT], planError=error)
    return _event(ks, "PlanFailed", SEVERITY_ERROR, f"plan failed: {error}", meta)


class PlanWorker:
    """Consumes `herald.plan`. `cluster` gives the cluster to compare with (the reconciler's,
    so that both find it the same way), or None when there is none."""

    def __init__(self, cfg: Config, bus: Bus, state_dir: Path, cluster: Callable[[], Cluster | None],
                 recorder: Recorder | None = None) -> None:
        self.cfg = cfg
        self.recorder = recorder or Recorder(History())
        # HERALD_PUBLIC_URL: where people reach Herald's status page, for links from comments.
        self.public_url = (os.environ.get("HERALD_PUBLIC_URL") or "").strip().rstrip("/")
        self.bus = bus
        self.state_dir = Path(state_dir)
        self._cluster = cluster

    def update(self, cfg: Config) -> None:
        self.cfg = cfg

    def handle(self, delivery: Delivery) -> None:
        try:
            req = ReconcileRequest.from_json(delivery.body)
            pr = PullRequestRef.of(req.origin)
        except MessageError as exc:
            raise Reject(str(exc)) from None
        repo = self.cfg.git_repositories.get((req.namespace, req.name)) if req.kind == "GitRepository" else None
        if repo is None:
            why = f"plan request: GitRepository {req.namespace}/{req.name} is not in the configuration"
            self.recorder.request(req, PLAN_QUEUE, "rejected", why)
            raise Reject(why)
        where = f"plan request={req.id} GitRepository/{req.namespace}/{req.name} PR #{pr.number} head {pr.head[:12]}"
        if repo.suspend:
            log.info("%s: the GitRepository is suspended; not planned", where)
            self.recorder.request(req, PLAN_QUEUE, "skipped", "the GitRepository is suspended")
            return
        kustomizations = [k for k in self.cfg.kustomizations_for(repo) if not k.suspend]
        if not kustomizations:
            log.info("%s: no Kustomization follows this GitRepository; nothing to plan", where)
            self.recorder.request(req, PLAN_QUEUE, "skipped", "no Kustomization follows this GitRepository")
            return
        self.recorder.request(req, PLAN_QUEUE, "ran")
        headers = {"x-herald-request": req.id, DELIVERY_HEADER: str(req.origin.get("delivery") or correlation_id()
                                                                     or req.id)}
        planner = Planner(self.cfg, self.state_dir, self._cluster())
        fetched = None
        if len(pr.head) not in (40, 64):
            # An abbreviated head (Bitbucket Cloud) names no commit a status can go on: fetch
            # the ref first and take its tip when it is that commit.
            fetched = self._fetch(planner, repo, pr)
            if isinstance(fetched, Revision) and fetched.sha.startswith(pr.head):
                pr = dataclasses.replace(pr, head=fetched.sha)
            else:
                log.warning("%s: the abbreviated head %s is not the tip of %s (%s): no commit to report on; "
                            "the next push to the pull request is planned", where, pr.head, pr.ref,
                            fetched if isinstance(fetched, str) else fetched.sha[:12])
                return
        base = plan_metadata(req, pr)
        for ks in kustomizations:
            event = _event(ks, "Progressing", SEVERITY_INFO, f"Planning pull request #{pr.number} at {pr.head[:12]}",
                           base)
            self.bus.publish(EVENTS_QUEUE, event.to_json(), headers=headers)
            self.recorder.event(event, headers)
        try:
            results = self._plan(planner, kustomizations, repo, pr, fetched)
        except Exception as exc:
            log.exception("%s: planning failed unexpectedly", where)
            results = [KustomizationPlan(ks, error=f"{type(exc).__name__}: {exc}") for ks in kustomizations]
        for result in results:
            whole = f"{self.public_url}/ui/plans/{req.id}/{result.target}" if self.public_url else ""
            event = final_event(result, base, whole)
            log.info("%s: Kustomization %s: %s", where, result.target, event.metadata.get("planSummary", ""))
            self.bus.publish(EVENTS_QUEUE, event.to_json(), headers=headers)
            self.recorder.event(event, headers)
            self._record_plan(req, pr, result, event)

    def _record_plan(self, req: ReconcileRequest, pr: PullRequestRef, result: KustomizationPlan, event: Event) -> None:
        """The whole plan, for the status page (the pull request's comment may have had to cut it)."""
        self.recorder.history.put("plan", f"{req.id}/{result.target}", {
            "request": req.id, "delivery": delivery_of(req), "target": result.target,
            "pullRequest": {"number": pr.number, "head": pr.head, "ref": pr.ref, "url": pr.url},
            "source": f"GitRepository/{req.namespace}/{req.name}", "reason": event.reason,
            "summary": event.metadata.get("planSummary", ""),
            "diff": plan_diff(result.plan.body()) if result.plan is not None else "",
            "error": result.error or ""})

    @staticmethod
    def _fetch(planner: Planner, repo: GitRepository, pr: PullRequestRef) -> Revision | str:
        """The pull request's ref (from the fork, for hosts that publish no pull-request ref),
        or why it could not be fetched."""
        url = pr.head_url if pr.fork and pr.head_url and not pr.ref.startswith(("refs/pull/", "refs/merge-requests/")) \
            else None
        try:
            return planner.fetch(repo, GitRef(name=pr.ref), url=url,
                                 want_sha=pr.head if len(pr.head) in (40, 64) else "")
        except GitError as exc:
            return f"fetching {pr.ref} failed: {exc}"

    def _plan(self, planner: Planner, kustomizations: list[Kustomization], repo: GitRepository,
              pr: PullRequestRef, fetched: Revision | str | None) -> list[KustomizationPlan]:
        revision = fetched if fetched is not None else self._fetch(planner, repo, pr)
        if isinstance(revision, str):
            return [KustomizationPlan(ks, error=revision) for ks in kustomizations]
        if revision.sha != pr.head:
            if not planner.git.has_commit(repo, pr.head):
                error = (f"the head commit {pr.head} is not served by the remote ({pr.ref} is at "
                         f"{revision.sha[:12]}): a newer push is planned on its own")
                return [KustomizationPlan(ks, error=error) for ks in kustomizations]
            revision = Revision(pr.ref, pr.head)
        return planner.plan_fetched(kustomizations, repo, revision)

    def run(self, stop: threading.Event) -> None:
        self.bus.consume(PLAN_QUEUE, correlated(self.handle), stop)
