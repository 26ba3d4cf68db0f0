"""The reconcile worker: one request in, the cluster brought to the revision, events out.

A request is acknowledged only after its events are confirmed by the bus, so a worker that
dies at any point leaves the request to be redelivered, never a deployed change that nobody
hears about.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

from herald.bus import Bus, Delivery, Reject
from herald.config import Config
from herald.messages import EVENTS_QUEUE, RECONCILE_QUEUE, SEVERITY_ERROR, SEVERITY_INFO, Event, MessageError, ReconcileRequest
from herald.model import GitRepository, Kustomization
from reconciler.git import GitCache, GitError, Revision, resolve_url
from reconciler.kube import ApplyError, Cluster, ClusterUnreachable, sort_key
from reconciler.render import RenderError, render

log = logging.getLogger("herald.reconciler")


class RetryLater(Exception):
    """A transient failure (Git host or API server unreachable): the bus retries with backoff."""


@dataclass
class Outcome:
    events: list[Event]
    retry: str = ""  # non-empty: publish the events, then have the request retried


class Reconciler:
    def __init__(self, cfg: Config, bus: Bus, state_dir: Path, cluster: Cluster | None | str = "auto"):
        """`cluster="auto"` finds one from the environment on first use (kubeconfig or
        in-cluster); None means no cluster: render and report what would be applied."""
        self.cfg = cfg
        self.bus = bus
        self.state_dir = Path(state_dir)
        self.git = GitCache(self.state_dir / "git")
        self._cluster = cluster
        self._lock = threading.Lock()

    # ---- bus handler -------------------------------------------------------------------

    def handle(self, delivery: Delivery) -> None:
        try:
            req = ReconcileRequest.from_json(delivery.body)
        except MessageError as exc:
            raise Reject(str(exc)) from None
        outcome = self.reconcile(req)
        headers = {"x-herald-request": req.id, "x-herald-delivery": str(req.origin.get("delivery", ""))}
        for event in outcome.events:
            self.bus.publish(EVENTS_QUEUE, event.to_json(), headers=headers)
        if outcome.retry:
            raise RetryLater(outcome.retry)

    # ---- reconcile ---------------------------------------------------------------------

    def _cluster_or_none(self) -> Cluster | None:
        with self._lock:
            if self._cluster == "auto":
                self._cluster = Cluster.from_environment(self.state_dir / "kube")
                if self._cluster is None:
                    log.warning("no Kubernetes cluster configured (no kubeconfig, not in a cluster): "
                                "reconciles will render and report without applying")
            return self._cluster  # type: ignore[return-value]

    def _targets(self, req: ReconcileRequest) -> tuple[GitRepository, list[Kustomization]]:
        key = (req.namespace, req.name)
        if req.kind == "GitRepository":
            repo = self.cfg.git_repositories.get(key)
            if repo is None:
                raise Reject(f"GitRepository {req.namespace}/{req.name} is not in the configuration")
            return repo, self.cfg.kustomizations_for(repo)
        if req.kind == "Kustomization":
            ks = self.cfg.kustomizations.get(key)
            if ks is None:
                raise Reject(f"Kustomization {req.namespace}/{req.name} is not in the configuration")
            src = (ks.source_ref.namespace or ks.meta.namespace, ks.source_ref.name)
            return self.cfg.git_repositories[src], [ks]
        raise Reject(f"Herald does not reconcile {req.kind}")

    def reconcile(self, req: ReconcileRequest) -> Outcome:
        repo, kustomizations = self._targets(req)
        where = f"request={req.id} {req.kind}/{req.namespace}/{req.name}"
        if repo.suspend:
            log.info("%s: GitRepository %s/%s is suspended, skipped", where, repo.meta.namespace, repo.meta.name)
            return Outcome([])

        wanted = str(req.origin.get("revision") or "")
        want_sha = wanted.rpartition(":")[2] if "@sha1:" in wanted or wanted.startswith("sha1:") else ""
        credentials = None
        if repo.secret_ref:
            credentials = self.cfg.secret(repo.meta.namespace, repo.secret_ref.name)
        try:
            revision = self.git.fetch(repo, resolve_url(repo.url, repo.meta.source), credentials, want_sha)
        except GitError as exc:
            log.error("%s: fetch failed: %s", where, exc)
            event = Event.for_object("GitRepository", repo.meta.name, repo.meta.namespace,
                                     severity=SEVERITY_ERROR, reason="GitOperationFailed", message=str(exc))
            return Outcome([event], retry=str(exc))
        note = ""
        if want_sha and revision.sha != want_sha and not self.git.has_commit(repo, want_sha):
            note = f"\nThe webhook named {wanted}, which the remote does not serve yet; applied {revision}."
        log.info("%s: fetched %s", where, revision)

        events, retry = [], ""
        for ks in kustomizations:
            if ks.suspend:
                log.info("%s: Kustomization %s/%s is suspended, skipped", where, ks.meta.namespace, ks.meta.name)
                continue
            event, transient = self._reconcile_kustomization(ks, repo, revision, note)
            events.append(event)
            retry = retry or transient
        return Outcome(events, retry)

    def _reconcile_kustomization(self, ks: Kustomization, repo: GitRepository, revision: Revision,
                                 note: str) -> tuple[Event, str]:
        meta = {"revision": str(revision), "commit_status": "update"}

        def event(severity: str, reason: str, message: str) -> Event:
            return Event.for_object("Kustomization", ks.meta.name, ks.meta.namespace, severity=severity,
                                    reason=reason, message=message + note, metadata=meta)

        name = f"Kustomization/{ks.meta.namespace}/{ks.meta.name}"
        workdir = self.state_dir / "work" / f"{os.getpid()}-{threading.get_ident()}" / ks.meta.namespace / ks.meta.name
        try:
            self.git.export(repo, revision.sha, workdir)
            rendered = render(workdir, ks.path, ks.target_namespace)
        except (GitError, RenderError) as exc:
            log.error("%s %s: %s", name, revision, exc)
            return event(SEVERITY_ERROR, "BuildFailed", str(exc)), ""
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

        manifests = sorted(rendered.manifests, key=sort_key)
        try:
            cluster = self._cluster_or_none()
            if cluster is None:
                listing = "\n".join(m.ref() for m in manifests) or "(no objects)"
                log.info("%s %s: no cluster configured; would apply %d objects", name, revision, len(manifests))
                return event(SEVERITY_INFO, "ClusterNotConfigured",
                             "No Kubernetes cluster is configured (no kubeconfig, not in a cluster), "
                             f"so nothing was applied. Would apply:\n{listing}"), ""
            changes = cluster.apply(manifests)
        except ApplyError as exc:
            log.error("%s %s: apply failed: %s", name, revision, exc)
            return event(SEVERITY_ERROR, "ReconciliationFailed", str(exc)), ""
        except ClusterUnreachable as exc:
            with self._lock:
                if self._cluster not in (None, "auto"):
                    self._cluster = "auto"  # reconnect (and rediscover) next time
            log.error("%s %s: %s", name, revision, exc)
            return event(SEVERITY_ERROR, "ReconciliationFailed", str(exc)), str(exc)
        log.info("%s %s: applied %s", name, revision, ", ".join(str(c) for c in changes) or "nothing")
        return event(SEVERITY_INFO, "ReconciliationSucceeded",
                     "\n".join(str(c) for c in changes) or "no objects"), ""

    # ---- loop --------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        self.bus.consume(RECONCILE_QUEUE, self.handle, stop)
