"""The reconcile worker: one request in, the cluster brought to the revision, events out.

A request is acknowledged only after its events are confirmed by the bus, so a worker that
dies at any point leaves the request to be redelivered, never a deployed change that nobody
hears about.

For each Kustomization of the request (dependencies first), as Flux's kustomize-controller:
dependsOn is checked (each dependency Ready, and at this revision when it reads the same
source), the path is rendered, applied in stages (`reconciler.apply`), stale objects are
pruned when `spec.prune` (`reconciler.prune`), and with `spec.wait` every applied object is
health-checked within `spec.timeout` (default: the interval) (`reconciler.health`). The
inventory and the outcome are recorded in the cluster (`reconciler.inventory`) where every
worker, and the dependsOn checks of other Kustomizations, read them.

One event per Kustomization, with Flux's reasons: ReconciliationSucceeded (the change set,
prune lines, then "Reconciliation finished in 1.2s, next run in 10m0s"), ReconciliationFailed,
PruneFailed, HealthCheckFailed, BuildFailed and DependencyNotReady. A failure's last line says
when the next try really comes: "next try in 4s" when the bus retries the request (its backoff,
or the retryInterval asked for, as that bus rounds it), "giving up: attempt 5 of 5, the request
is dead-lettered" on its last attempt, or "next try in 10m0s" (retryInterval, else interval)
when the interval timer retries it. Whatever goes wrong inside a run (the fetch, a bug), every
Kustomization of it still ends with an event, ReconciliationFailed with the error if nothing
better, before the request is retried or dead-lettered. Every event carries the revision; all but
DependencyNotReady (a wait, not a result) also `commit_status: update`, as Flux's final
events do. Unlike Flux, unchanged objects are listed too, so an event always says what the
revision consists of.

Concurrency and delivery. Every request goes through its GitRepository's Lease
(`reconciler.locks`): one reconcile per GitRepository, and so per Kustomization, at a time,
across threads, processes and machines; requests that arrive while their target is queued or
running are coalesced into one follow-up (`reconciler.coalesce`). A worker killed mid-reconcile
loses nothing: its message was not acknowledged, comes back, and is run again once the Lease
expires (`HERALD_LEASE_DURATION`, 15 s). On SIGTERM, a reconcile that is applying finishes; one
that is waiting (health checks, the coalescing window, another worker's Lease) is handed back
to the bus and its Lease released. `spec.interval` is honoured by `reconciler.poller`.

Retries: a reconcile that failed for a passing reason (API server or Git host unreachable, a
dependency not ready, health checks) raises `RetryLater`; the bus tries it again after the
Kustomization's `retryInterval` when it sets one (Flux's field), else after its own exponential
backoff, and dead-letters it with its last error after the bus's `max_attempts`. A failure
that retrying cannot fix (a manifest the API server refuses) waits for the next push or the
interval instead.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from herald.bus import (
    FAILING_SINCE_HEADER,
    Bus,
    BusError,
    Delivery,
    Reject,
    RetryPolicy,
)
from herald.config import SOURCE_KINDS, Config
from herald.fleet import Fleet, Taken, key_of
from herald.history import History, Recorder
from herald.logs import DELIVERY_HEADER, correlated, correlation_id
from herald.messages import (
    EVENTS_QUEUE,
    RECONCILE_QUEUE,
    SEVERITY_ERROR,
    SEVERITY_INFO,
    Event,
    MessageError,
    ReconcileRequest,
)
from herald.model import GitRepository, Kustomization, OCIRepository
from herald.registry import RegistryError
from herald.settings import env_flag, env_seconds
from reconciler import metrics, runs, status
from reconciler.apply import ApplyEngine, ApplyFailed
from reconciler.build import build, build_tree
from reconciler.coalesce import (
    REPO_SCOPE,
    Coordinator,
    Options,
    RetryLater,
    ShuttingDown,
    State,
    kustomization_scope,
)
from reconciler.git import GitCache, GitError, Revision, resolve_url
from reconciler.health import HealthCheckFailed, go_duration, wait_for, with_expressions
from reconciler.images.poller import ImagePoller
from reconciler.images.worker import ImageWorker
from reconciler.inventory import (
    Entry,
    Inventory,
    InventoryStore,
    LastResult,
    Record,
    owner_labels,
)
from reconciler.kube import (
    ApiRefusal,
    Cluster,
    ClusterUnreachable,
    acting_as,
    api_client_from_kubeconfig,
    sort_key,
)
from reconciler.locks import (
    PROCESS_STORE,
    KubeLeaseStore,
    LeaseRecord,
    LeaseStore,
    LockKey,
    LockUnavailable,
    source_key,
)
from reconciler.oci import ArtifactError
from reconciler.oci_source import ArtifactRevision, pull
from reconciler.plans import PlanWorker
from reconciler.poller import Poller
from reconciler.postbuild import reader
from reconciler.prune import PruneResult, prune
from reconciler.render import Manifest, Rendered, RenderError
from reconciler.verify import VerificationError, verify_revision

log = logging.getLogger("herald.reconciler")


@dataclass
class Outcome:
    events: list[Event]
    retry: str = ""  # non-empty: publish the events, then have the request retried
    retry_after: float | None = None  # the shortest retryInterval asking for it, if any
    revision: str = ""  # what was fetched ("" when the fetch failed or the source is suspended)
    failed: list[str] = field(default_factory=list)  # scopes (`ns/name`) of Kustomizations that failed
    succeeded: list[str] = field(default_factory=list)  # ... and of those that succeeded


@dataclass(frozen=True)
class Attempt:
    """Which delivery of its request a reconcile is, so its events can say what comes next."""

    number: int = 1  # 1 on the first delivery (Delivery.attempt)
    failing_since: float | None = None  # unix time of the first failed attempt (the bus's header)

    @classmethod
    def of(cls, delivery: Delivery) -> Attempt:
        try:
            since: float | None = float(delivery.headers.get(FAILING_SINCE_HEADER) or "")
        except ValueError:
            since = None
        return cls(max(1, delivery.attempt), since)


@dataclass
class WorkerSettings:
    """How a worker process runs its reconciles; each from an environment variable."""

    threads: int = 2  # HERALD_RECONCILE_THREADS: requests handled at once (different targets)
    lease_duration: float = 15.0  # HERALD_LEASE_DURATION: how soon a dead worker's Lease frees itself
    window: float = 1.0  # HERALD_COALESCE_WINDOW: minimum time between two runs of one target
    skew: float = 0.5  # HERALD_CLOCK_SKEW: clock difference tolerated between machines
    poll: bool = True  # HERALD_INTERVAL_POLLING=false turns the spec.interval timer off
    # HERALD_STARTUP_RECONCILE: every source reconciled when the worker starts, as Flux does, each
    # at a random moment within HERALD_STARTUP_SPREAD seconds (a fleet does not hit the API server
    # at once; replicas starting together coalesce into one run per source). Part of the timer.
    startup: bool = True
    startup_spread: float = 10.0
    jitter: float = 0.1  # HERALD_POLL_JITTER: a poll comes up to this fraction of the interval late
    # HERALD_DRY_RUN_UNCHANGED=true: dry-run even the objects that provably would not change
    # (reconciler.apply.unchanged_since_last_apply), so admission policies see them each time
    dry_run_unchanged: bool = False
    # HERALD_APPLY_CONCURRENCY: API requests in flight at once per reconcile (reads, dry-runs,
    # the writes of one kind); more helps against a distant API server, and costs its capacity
    apply_concurrency: int = 4
    # HERALD_PLAN_THREADS: pull-request plans handled at once, on threads of their own (a burst
    # of pull requests would otherwise wait one behind the other for their pending checks)
    plan_threads: int = 4

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> WorkerSettings:
        env = dict(os.environ if env is None else env)
        d = cls()
        return cls(
            threads=max(1, int(env.get("HERALD_RECONCILE_THREADS") or d.threads)),
            lease_duration=max(1.0, env_seconds(env, "HERALD_LEASE_DURATION", d.lease_duration)),
            window=max(0.0, env_seconds(env, "HERALD_COALESCE_WINDOW", d.window)),
            skew=max(0.0, env_seconds(env, "HERALD_CLOCK_SKEW", d.skew)),
            poll=env_flag(env, "HERALD_INTERVAL_POLLING", d.poll),
            startup=env_flag(env, "HERALD_STARTUP_RECONCILE", d.startup),
            startup_spread=max(0.0, env_seconds(env, "HERALD_STARTUP_SPREAD", d.startup_spread)),
            jitter=max(0.0, float(env.get("HERALD_POLL_JITTER") or d.jitter)),
            dry_run_unchanged=env_flag(env, "HERALD_DRY_RUN_UNCHANGED", d.dry_run_unchanged),
            apply_concurrency=max(1, int(env.get("HERALD_APPLY_CONCURRENCY") or d.apply_concurrency)),
            plan_threads=max(1, int(env.get("HERALD_PLAN_THREADS") or d.plan_threads)),
        )


def _event_headers(req: ReconcileRequest) -> dict[str, str]:
    """The request's id and the webhook delivery it came from (the correlation id of the logs)."""
    return {"x-herald-request": req.id,
            DELIVERY_HEADER: str(req.origin.get("delivery") or correlation_id() or req.id)}


DEPENDENCY_REQUEUE = 30.0
"""Seconds before a Kustomization whose dependencies are not ready looks again, when it sets no
retryInterval: kustomize-controller's `--requeue-dependency` default."""


@dataclass
class _Result:
    """How one Kustomization's reconcile ended; its event is written once the whole request's
    outcome (retried by the bus or not, and when) is known."""

    severity: str
    reason: str
    lines: list[str]
    tail: str = ""  # "finished", "failed" (a line about the next try is added), "waiting" (dependsOn)
    retry: str = ""
    retry_after: float | None = None
    commit_status: bool = True
    elapsed: float = 0.0
    notes: list[str] = field(default_factory=list)  # lines after the outcome's own (herald.fleet)
    events: list[Event] = field(default_factory=list)  # about other objects (a refused child Kustomization)

    @property
    def ok(self) -> bool:
        return self.reason in ("ReconciliationSucceeded", "ClusterNotConfigured")


def _wait_gone(cluster: Cluster, entries: list[Entry], timeout: float, poll: float) -> None:
    """WaitForTermination: until every object is gone (finalizers done), or HealthCheckFailed."""
    deadline = time.monotonic() + timeout
    left = list(entries)
    while True:
        left = [e for e in left if cluster.get(e.oid.api_version(e.version), e.oid.kind, e.oid.namespace or None,
                                               e.oid.name) is not None]
        if not left:
            return
        if time.monotonic() >= deadline:
            raise HealthCheckFailed(f"timeout waiting for the termination of: {', '.join(e.oid.ref() for e in left)}",
                                    [])
        time.sleep(poll)


class RemoteClusterError(Exception):
    """`spec.kubeConfig` names no usable cluster: a configuration problem, not an outage of Herald's own."""


Source = GitRepository | OCIRepository


def dependency_order(kustomizations: list[Kustomization]) -> list[Kustomization]:
    """Dependencies before their dependents (stable otherwise); cycles keep the given order."""
    by_key = {k.meta.key: k for k in kustomizations}
    out: list[Kustomization] = []
    state: dict[tuple[str, str], int] = {}  # 1 visiting, 2 done

    def visit(k: Kustomization) -> None:
        if state.get(k.meta.key):
            return
        state[k.meta.key] = 1
        for d in k.depends_on:
            dep = by_key.get((d.namespace or k.meta.namespace, d.name))
            if dep is not None and not state.get(dep.meta.key):
                visit(dep)
        state[k.meta.key] = 2
        out.append(k)

    for k in kustomizations:
        visit(k)
    return out


class Reconciler:
    def __init__(self, cfg: Config, bus: Bus, state_dir: Path, cluster: Cluster | None | str = "auto",
                 poll_interval: float = 1.0, settings: WorkerSettings | None = None, fleet: Fleet | None = None,
                 history: History | None = None):
        """`cluster="auto"` finds one from the environment on first use (kubeconfig or
        in-cluster); None means no cluster: render and report what would be applied.
        `poll_interval` is how often health checks look again. `settings` (default: from the
        environment) sets the reconcile threads, the Lease duration, coalescing and polling.
        `fleet`: the Flux objects each render holds become configuration (herald.fleet).
        `history`: where runs, requests and events are recorded for the operator (herald.history)."""
        self.cfg = cfg
        self.recorder = Recorder(history or History())
        self._kept: dict[str, runs.Kept] = {}  # each Kustomization's inventory and last applied revision
        self.fleet = fleet
        self.bus = bus
        self.state_dir = Path(state_dir)
        self.git = GitCache(self.state_dir / "git")
        self._cluster = cluster
        self._remotes: dict[tuple[str, str, str], Cluster] = {}  # spec.kubeConfig's clusters, by Secret and content
        self._lock = threading.Lock()
        self.poll_interval = poll_interval
        self.settings = settings or WorkerSettings.from_env()
        s = self.settings
        self.coordinator = Coordinator(Options(lease_duration=s.lease_duration, window=s.window, skew=s.skew,
                                               poll=min(0.5, s.lease_duration / 4)))
        self._stop = threading.Event()  # set by run()'s caller: stop waiting, hand work back
        self._poller: Poller | None = None
        self._image_poller: ImagePoller | None = None
        # The policy run() consumes with, so that a failed reconcile's event can say when the
        # bus tries again, or that it gives up: the bus's own, which both buses keep as `retry`.
        policy = getattr(bus, "retry", None)
        self.retry_policy = policy if isinstance(policy, RetryPolicy) else RetryPolicy()
        # Pull-request plans: their own consumer thread, so a plan never waits behind a
        # reconcile nor holds one up; the same cluster (found the same way).
        self.plans = PlanWorker(cfg, bus, self.state_dir, self._cluster_or_none, self.recorder)
        # Registry pushes: scan, select, commit (reconciler.images.worker), on a thread of their own.
        self.images = ImageWorker(cfg, bus, self.state_dir, window=self.settings.window, stop=self._stop,
                                  cluster=self._cluster_or_none, recorder=self.recorder)

    def update(self, cfg: Config) -> None:
        """A new configuration (`--from-cluster`): requests handled from now on, and the interval
        timer, use it."""
        self.cfg = cfg
        if self._poller is not None:
            self._poller.update(cfg)
        self.plans.update(cfg)
        self.images.update(cfg)
        if self._image_poller is not None:
            self._image_poller.update(cfg)

    # ---- bus handler -------------------------------------------------------------------

    def handle(self, delivery: Delivery) -> None:
        """One request from the bus, through its target's Lease (`reconciler.coalesce`): run
        now, or coalesced into a run that is queued or running, or already satisfied."""
        taken = time.time()
        try:
            req = ReconcileRequest.from_json(delivery.body)
        except MessageError as exc:
            raise Reject(str(exc)) from None
        try:
            repo, _ = self._targets(req)
        except Reject as exc:
            self.recorder.request(req, RECONCILE_QUEUE, "rejected", str(exc))
            raise
        key = source_key(repo)
        scope = REPO_SCOPE if req.kind in SOURCE_KINDS else kustomization_scope(req.namespace, req.name)
        ks = self.cfg.kustomizations.get((req.namespace, req.name)) if req.kind == "Kustomization" else None
        if ks is not None and ks.suspend:
            log.info("request=%s Kustomization/%s/%s is suspended, skipped", req.id, req.namespace, req.name)
            self.recorder.request(req, RECONCILE_QUEUE, "skipped",
                                  f"Kustomization {req.namespace}/{req.name} is suspended")
            return
        if repo.suspend:
            log.info("request=%s %s/%s/%s: %s %s/%s is suspended, skipped", req.id, req.kind,
                     req.namespace, req.name, type(repo).__name__, repo.meta.namespace, repo.meta.name)
            self.recorder.request(req, RECONCILE_QUEUE, "skipped",
                                  f"{type(repo).__name__} {repo.meta.namespace}/{repo.meta.name} is suspended")
            return
        try:
            store = self.lease_store()
        except ClusterUnreachable as exc:
            self._forget_cluster()
            raise RetryLater(f"cannot coordinate with other workers: {exc}") from None
        attempt = Attempt.of(delivery)
        result = self.coordinator.process(store, key, req, scope, lambda r: self._run_and_publish(r, attempt),
                                          self._stop)
        self.recorder.request(req, RECONCILE_QUEUE, "ran" if result.startswith("ran") else result, taken=taken)
        if not result.startswith("ran"):
            log.info("request=%s %s/%s/%s (%s): %s", req.id, req.kind, req.namespace, req.name, req.reason,
                     "covered by a reconcile that is queued or running" if result == "coalesced"
                     else "already applied by a reconcile that started after it")

    def _run_and_publish(self, req: ReconcileRequest, attempt: Attempt | None = None) -> Outcome:
        try:
            repo, kustomizations = self._targets(req)
            targets = [f"Kustomization/{k.meta.namespace}/{k.meta.name}" for k in kustomizations if not k.suspend]
            source = f"{type(repo).__name__}/{repo.meta.namespace}/{repo.meta.name}"
        except Reject:
            targets, source = [], f"{req.kind}/{req.namespace}/{req.name}"
        run = runs.started(self.recorder, req, attempt.number if attempt else 1, source, targets)
        try:
            outcome = self.reconcile(req, attempt)
        except ShuttingDown as exc:
            runs.handed_back(self.recorder, run, str(exc) or "the worker is shutting down")
            raise
        except BaseException as exc:
            runs.finished(self.recorder, run, [], revision="", retry=f"{type(exc).__name__}: {exc}",
                          last_attempt=False, error=f"{type(exc).__name__}: {exc}")
            raise
        headers = _event_headers(req)
        for event in outcome.events:
            self.bus.publish(EVENTS_QUEUE, event.to_json(), headers=headers)
            self.recorder.event(event, headers)
        last = bool(outcome.retry) and not self._next_try(outcome, attempt)[0]
        runs.finished(self.recorder, run, outcome.events, revision=outcome.revision, retry=outcome.retry,
                      last_attempt=last, kept=self._kept)
        return outcome

    def lease_store(self) -> LeaseStore:
        """Leases in the cluster; in this process's memory when no cluster is configured."""
        cluster = self._cluster_or_none()
        return PROCESS_STORE if cluster is None else KubeLeaseStore(cluster)

    def peek(self, key: LockKey) -> tuple[LeaseRecord | None, State]:
        try:
            return self.coordinator.peek(self.lease_store(), key)
        except (ClusterUnreachable, LockUnavailable):
            self._forget_cluster()
            raise

    # ---- reconcile ---------------------------------------------------------------------

    def _cluster_or_none(self) -> Cluster | None:
        with self._lock:
            if self._cluster == "auto":
                self._cluster = Cluster.from_environment(self.state_dir / "kube")
                if self._cluster is None:
                    log.warning("no Kubernetes cluster configured (no kubeconfig, not in a cluster): "
                                "reconciles will render and report without applying")
            return self._cluster  # type: ignore[return-value]

    def _source_status(self, repo: Source, revision: str, error: str = "") -> None:
        """The source object's own status, when it is in the cluster (reconciler.status)."""
        try:
            cluster = self._cluster_or_none()
        except ClusterUnreachable:
            return
        if cluster is not None:
            status.write_source(cluster, type(repo).__name__, repo.meta.namespace, repo.meta.name, revision, error)

    def _with_includes(self, repo: GitRepository, revision: Revision) -> Revision:
        """`spec.include`: each included GitRepository (same namespace) fetched at its own ref,
        to be copied into the tree (`reconciler.build`). The revision stays the repository's own
        commit, as source-controller reports it."""
        found = []
        for inc in repo.include:
            other = self.cfg.git_repositories.get((repo.meta.namespace, inc.repository))
            if other is None:
                raise GitError(f"spec.include: GitRepository {repo.meta.namespace}/{inc.repository} not found",
                               permanent=True)
            credentials = self.cfg.secret(other.meta.namespace, other.secret_ref.name) if other.secret_ref else None
            url = resolve_url(other.url, other.meta.source)
            got = self.git.fetch(other, url, credentials)
            if other.recurse_submodules:
                self.git.fetch_submodules(other, url, credentials, got.sha)
            found.append((other, got.sha, inc.from_path, inc.to_path))
        return dataclasses.replace(revision, includes=tuple(found))

    def _verify(self, repo: GitRepository, revision: Revision, where: str) -> None:
        """GitRepository `spec.verify`, as source-controller checks it after each fetch: the
        commit's (and with a Tag mode, the tag's) signature by a key of `verify.secretRef`
        (`reconciler.verify`). Nothing of an unverified revision is applied."""
        ns = repo.meta.namespace
        keys = reader(self._cluster_or_none(), self.cfg)("Secret", ns, repo.verify_secret)
        if keys is None:
            raise VerificationError(f"PGP public keys secret error: Secret {ns}/{repo.verify_secret} not found")
        tag = repo.ref.name.removeprefix("refs/tags/") if repo.ref.name.startswith("refs/tags/") else (
            revision.ref if (repo.ref.tag or repo.ref.semver) and not repo.ref.commit else "")
        tag_object = self.git.ref_object(repo, f"refs/tags/{tag}") if tag else ""
        verified = verify_revision(self.git.git_dir(repo), repo.verify_mode, repo.ref, revision.sha, keys,
                                   tag_object_sha=tag_object, tag_name=tag)
        log.info("%s: %s", where, " ".join(verified.message.split()))

    def _remote_cluster(self, ks: Kustomization, cluster: Cluster) -> Cluster:
        """The cluster `spec.kubeConfig.secretRef` names (a hub applying to a spoke, as in Flux):
        the kubeconfig under the Secret's `key`, else `value`, else `value.yaml`, read from the
        Kustomization's namespace. The inventory and the Lease stay in Herald's own cluster."""
        ns, secret = ks.meta.namespace, ks.kube_config_secret
        data = reader(cluster, self.cfg)("Secret", ns, secret)
        if data is None:
            raise RemoteClusterError(f"spec.kubeConfig.secretRef: Secret {ns}/{secret} not found")
        key = ks.kube_config_key or next((k for k in ("value", "value.yaml") if k in data), "value")
        text = data.get(key)
        if not text:
            raise RemoteClusterError(f"spec.kubeConfig.secretRef: Secret {ns}/{secret} has no key '{key}'")
        digest = hashlib.sha256(text.encode()).hexdigest()[:16]
        with self._lock:
            found = self._remotes.get((ns, secret, digest))
            if found is None:
                try:
                    api = api_client_from_kubeconfig(text, f"spec.kubeConfig.secretRef: Secret {ns}/{secret} key "
                                                           f"'{key}'")
                except ClusterUnreachable as exc:
                    raise RemoteClusterError(str(exc)) from None
                found = Cluster(api, self.state_dir / "kube-remote" / digest)
                self._remotes[(ns, secret, digest)] = found
            return found

    def _forget_cluster(self) -> None:
        with self._lock:
            if self._cluster not in (None, "auto"):
                self._cluster = "auto"  # reconnect (and rediscover) next time

    def _targets(self, req: ReconcileRequest) -> tuple[Source, list[Kustomization]]:
        key = (req.namespace, req.name)
        if req.kind in SOURCE_KINDS:
            repo = self.cfg.by_kind(req.kind).get(key)
            if repo is None:
                raise Reject(f"{req.kind} {req.namespace}/{req.name} is not in the configuration")
            return repo, self.cfg.kustomizations_for(repo)
        if req.kind == "Kustomization":
            ks = self.cfg.kustomizations.get(key)
            if ks is None:
                raise Reject(f"Kustomization {req.namespace}/{req.name} is not in the configuration")
            src = (ks.source_ref.namespace or ks.meta.namespace, ks.source_ref.name)
            repo = self.cfg.by_kind(ks.source_ref.kind).get(src)
            if repo is None:
                raise Reject(f"Kustomization {req.namespace}/{req.name}: its {ks.source_ref.kind} {src[0]}/{src[1]} "
                             "is not in the configuration")
            return repo, [ks]
        raise Reject(f"Herald does not reconcile {req.kind}")

    def reconcile(self, req: ReconcileRequest, attempt: Attempt | None = None) -> Outcome:
        """Fetch and reconcile every Kustomization of `req`. Whatever goes wrong, each one ends
        with an event (ReconciliationFailed with the error, if nothing better), written once
        the request's fate is known, so it says when the next try is: the bus's retry of this
        request (`attempt` is which delivery this is), or the interval timer."""
        repo, kustomizations = self._targets(req)
        where = f"request={req.id} {req.kind}/{req.namespace}/{req.name}"
        kind = type(repo).__name__
        if repo.suspend:
            log.info("%s: %s %s/%s is suspended, skipped", where, kind, repo.meta.namespace, repo.meta.name)
            return Outcome([])
        active = []
        for ks in dependency_order(kustomizations):
            if ks.suspend:
                log.info("%s: Kustomization %s/%s is suspended, skipped", where, ks.meta.namespace, ks.meta.name)
            else:
                active.append(ks)

        wanted = str(req.origin.get("revision") or "")
        want_sha = wanted.rpartition(":")[2] if "@sha1:" in wanted or wanted.startswith("sha1:") else ""
        outcome = Outcome([])
        results: list[tuple[Kustomization, _Result]] = []
        note = ""
        revision: Revision | ArtifactRevision
        try:
            if isinstance(repo, OCIRepository):
                revision = pull(self.cfg, repo, self.state_dir / "oci")
            else:
                credentials = None
                if repo.secret_ref:
                    credentials = self.cfg.secret(repo.meta.namespace, repo.secret_ref.name)
                url = resolve_url(repo.url, repo.meta.source)
                revision = self.git.fetch(repo, url, credentials, want_sha)
                if repo.recurse_submodules:
                    self.git.fetch_submodules(repo, url, credentials, revision.sha)
                if repo.include:
                    revision = self._with_includes(repo, revision)
                if repo.verify_mode:
                    self._verify(repo, revision, where)
        except Exception as exc:  # a fetch failing in any way fails every Kustomization
            known = isinstance(exc, (GitError, ArtifactError, RegistryError, VerificationError))
            error = str(exc) if known else f"{type(exc).__name__}: {exc}"
            log.error("%s: fetch failed: %s", where, error, exc_info=not known)
            self._source_status(repo, "", error)
            reason = ("OCIArtifactPullFailed" if isinstance(repo, OCIRepository) else
                      exc.reason if isinstance(exc, VerificationError) else "GitOperationFailed")
            outcome.events.append(Event.for_object(kind, repo.meta.name, repo.meta.namespace,
                                                   severity=SEVERITY_ERROR, reason=reason, message=error))
            # A repository that does not exist, or refuses the credentials, fails the same way
            # on every try: report it once and wait for the next push or the interval (the
            # poller tries failed runs again after retryInterval), rather than have the bus
            # repeat it, and its failure events, within seconds.
            permanent = (isinstance(exc, GitError) and exc.permanent) or isinstance(exc, VerificationError) or (
                isinstance(exc, (ArtifactError, RegistryError)) and not exc.retryable)
            outcome.retry = "" if permanent else error
            source = f"{kind}/{repo.meta.namespace}/{repo.meta.name}"
            for ks in active:
                results.append((ks, _Result(SEVERITY_ERROR, "ReconciliationFailed",
                                            [f"fetching {source} failed: {error}"], "failed", error,
                                            ks.retry_interval)))
            for ks, result in results:
                outcome.failed.append(kustomization_scope(ks.meta.namespace, ks.meta.name))
            outcome.events.extend(self._final_event(ks, wanted, "", result, outcome, attempt)
                                  for ks, result in results)
            return outcome
        if (want_sha and isinstance(repo, GitRepository) and revision.sha != want_sha
                and not self.git.has_commit(repo, want_sha)):
            note = f"\nThe webhook named {wanted}, which the remote does not serve yet; applied {revision}."
        log.info("%s: fetched %s", where, revision)
        self._source_status(repo, str(revision))
        self.coordinator.announce(str(revision))

        outcome.revision = str(revision)
        for ks in active:
            started = time.monotonic()
            try:
                result = self._reconcile_kustomization(ks, repo, revision, lambda e: self._progress(req, e))
            except ShuttingDown:
                raise  # handed back to the bus: the worker that takes it over reports the outcome
            except Exception as exc:  # whatever went wrong, the Kustomization gets its event
                log.exception("%s: Kustomization %s/%s %s failed unexpectedly", where, ks.meta.namespace,
                              ks.meta.name, revision)
                error = f"{type(exc).__name__}: {exc}"
                result = _Result(SEVERITY_ERROR, "ReconciliationFailed", [f"reconciliation failed: {error}"],
                                 "failed", error, ks.retry_interval)
            result.elapsed = time.monotonic() - started
            metrics.RECONCILES.labels(ks.meta.namespace, ks.meta.name, result.reason).inc()
            metrics.RECONCILE_SECONDS.labels(result.reason).observe(result.elapsed)
            results.append((ks, result))
            outcome.events.extend(result.events)
            (outcome.succeeded if result.ok else outcome.failed).append(
                kustomization_scope(ks.meta.namespace, ks.meta.name))
            if result.retry:
                outcome.retry = outcome.retry or result.retry
                if result.retry_after is not None:
                    outcome.retry_after = min(filter(None, (outcome.retry_after, result.retry_after)))
        outcome.events.extend(self._final_event(ks, str(revision), note, result, outcome, attempt)
                              for ks, result in results)
        return outcome

    def _next_try(self, outcome: Outcome, attempt: Attempt | None) -> tuple[str, str]:
        """When the request is tried again, in the words of an event: ("in 4s", "") when the bus
        retries it, or ("", "giving up: attempt 5 of 5, ...") when this was its last attempt.

        The same arithmetic as the buses': RetryPolicy's backoff, or the retryInterval asked
        for, which the AMQP bus rounds up to its delay-queue ladder; a range when the policy
        adds jitter."""
        policy = self.retry_policy
        n = attempt.number if attempt is not None else 1
        now = time.time()
        since = attempt.failing_since if attempt is not None and attempt.failing_since else now
        if policy.exhausted(n, since, now):
            spent = (f", and its retry budget of {go_duration(policy.budget)} is spent"
                     if policy.budget is not None and now - since >= policy.budget else "")
            return "", (f"giving up: attempt {n} of {policy.max_attempts}{spent}, the request is "
                        f"dead-lettered")
        low = policy.next_delay(n, outcome.retry_after, rand=0.0)
        high = policy.next_delay(n, outcome.retry_after, rand=1.0)
        if type(self.bus).__module__ == "herald.bus.amqp" and (outcome.retry_after is not None or policy.jitter):
            # The broker parks such a retry in the delay queue at or above it (herald.bus.amqp).
            from herald.bus.amqp import ladder_ms

            low, high = ladder_ms(low) / 1000, ladder_ms(high) / 1000
        when = go_duration(low) if high - low < 0.001 else f"{go_duration(low)} to {go_duration(high)}"
        return f"in {when}", ""

    def _final_event(self, ks: Kustomization, revision: str, note: str, result: _Result, outcome: Outcome,
                     attempt: Attempt | None) -> Event:
        lines = [*result.lines, *result.notes]
        elapsed = go_duration(result.elapsed)
        if result.tail == "finished":
            lines.append(f"Reconciliation finished in {elapsed}, next run in {go_duration(ks.interval)}")
        elif result.tail in ("failed", "waiting"):
            if outcome.retry:  # the bus runs the whole request again (or gives up)
                when, last = self._next_try(outcome, attempt)
            else:  # the interval timer tries again, after retryInterval (reconciler.poller)
                when, last = f"in {go_duration(ks.retry_interval or ks.interval)}", ""
            if result.tail == "failed":
                lines.append(f"Reconciliation failed after {elapsed}, " + (f"next try {when}" if when else last))
            else:
                lines[-1] += f", retrying {when}" if when else f"; {last}"
        meta = {"revision": revision} if revision else {}
        if result.commit_status:
            meta["commit_status"] = "update"
        return Event.for_object("Kustomization", ks.meta.name, ks.meta.namespace, severity=result.severity,
                                reason=result.reason, message="\n".join(lines) + note, metadata=meta)

    def _progress(self, req: ReconcileRequest, event: Event) -> None:
        """Publish a Progressing event now, not with the outcome: it is what turns a pull
        request's check to pending and starts the Slack thread while the apply runs. Losing one
        (bus away) loses only that courtesy, so it never fails the reconcile."""
        headers = _event_headers(req)
        try:
            self.bus.publish(EVENTS_QUEUE, event.to_json(), headers=headers)
        except BusError as exc:
            log.warning("request=%s: cannot announce %s: %s", req.id, event.reason, exc)
        self.recorder.event(event, headers)

    def _reconcile_kustomization(self, ks: Kustomization, repo: GitRepository, revision: Revision,
                                 progress: Callable[[Event], None] | None = None) -> _Result:
        notes: list[str] = []
        events: list[Event] = []
        result = self._reconcile_one(ks, repo, revision, progress, notes, events)
        result.notes, result.events = notes, events
        return result

    def _reconcile_one(self, ks: Kustomization, repo: GitRepository, revision: Revision,
                       progress: Callable[[Event], None] | None, notes: list[str], events: list[Event]) -> _Result:
        name = f"Kustomization/{ks.meta.namespace}/{ks.meta.name}"

        try:
            cluster = self._cluster_or_none()
            store = None if cluster is None else InventoryStore(cluster, ks.meta.namespace, ks.meta.name)
            record = None if store is None else store.load()

            if ks.depends_on and cluster is not None and record is not None and store is not None:
                problem = self._dependency_problem(cluster, ks, revision)
                if problem:
                    log.info("%s %s: %s", name, revision, problem)
                    self._record(store, record, "False", "DependencyNotReady", problem, revision)
                    wait = ks.retry_interval or DEPENDENCY_REQUEUE
                    return _Result(SEVERITY_INFO, "DependencyNotReady",
                                   [f"Dependencies do not meet ready condition ({problem})"], "waiting", problem,
                                   wait, commit_status=False)

            if progress is not None and record is not None and record.result.last_attempted_revision != str(revision):
                progress(Event.for_object("Kustomization", ks.meta.name, ks.meta.namespace, severity=SEVERITY_INFO,
                                          reason="Progressing",
                                          message=f"Reconciliation in progress for revision {revision}",
                                          metadata={"revision": str(revision), "commit_status": "update"}))

            try:
                rendered = self._render(ks, repo, revision)
            except (GitError, RenderError) as exc:
                log.error("%s %s: %s", name, revision, exc)
                if store is not None and record is not None:
                    self._record(store, record, "False", "BuildFailed", str(exc), revision)
                return _Result(SEVERITY_ERROR, "BuildFailed", [str(exc)], "failed")

            manifests = sorted(rendered.manifests, key=sort_key)
            target = cluster
            if cluster is not None and ks.kube_config_secret:
                try:
                    target = self._remote_cluster(ks, cluster)
                except RemoteClusterError as exc:
                    log.error("%s %s: %s", name, revision, exc)
                    if store is not None and record is not None:
                        self._record(store, record, "False", "ReconciliationFailed", str(exc), revision)
                    return _Result(SEVERITY_ERROR, "ReconciliationFailed", [str(exc)], "failed", "",
                                   ks.retry_interval)
            configured: list[Manifest] = []
            if self.fleet is not None:
                manifests = self._take_configuration(ks, revision, manifests, target, notes, events, configured)
            if target is None or store is None or record is None:
                listing = [m.ref() for m in manifests] or ["(no objects)"]
                log.info("%s %s: no cluster configured; would apply %d objects", name, revision, len(manifests))
                return _Result(SEVERITY_INFO, "ClusterNotConfigured", [
                    ("No Kubernetes cluster is configured (no kubeconfig, not in a cluster), "
                     "so nothing was applied. Would apply:"), *listing])
            result = self._apply(ks, target, store, record, manifests, revision, name)
            if configured:
                self._configured_status(target, configured)
            return result
        except ClusterUnreachable as exc:
            self._forget_cluster()
            log.error("%s %s: %s", name, revision, exc)
            return _Result(SEVERITY_ERROR, "ReconciliationFailed", [str(exc)], "failed", str(exc), ks.retry_interval)
        except ApiRefusal as exc:  # reading or writing the inventory, reading objects' health
            log.error("%s %s: %s", name, revision, exc.message)
            reason = f" ({exc.reason})" if exc.reason else ""
            text = f"the Kubernetes API server refused a request{reason}: {exc.message}"
            return _Result(SEVERITY_ERROR, "ReconciliationFailed", [text], "failed", text if exc.transient else "",
                         ks.retry_interval)

    def _take_configuration(self, ks: Kustomization, revision: Revision, manifests: list[Manifest],
                            cluster: Cluster | None, notes: list[str], events: list[Event],
                            configured: list[Manifest] | None = None) -> list[Manifest]:
        """The render's Flux objects become configuration (`herald.fleet`); what is left to
        apply: taken objects only where their CRD is served, Flux kinds Herald does not act on
        likewise, refused objects never. New and changed Kustomizations and GitRepositories are
        reconciled at once, as Flux's controllers would on seeing them."""
        assert self.fleet is not None
        taken = self.fleet.take(ks, str(revision), manifests)
        refused = {key for key, _ in taken.refused}
        consumed = {id(m) for m in taken.consumed}
        inert = {id(m) for m in taken.inert}
        unserved: list[str] = []
        kept: list[Manifest] = []
        served: dict[tuple[str, str], bool] = {}  # a kind not served costs a discovery read: ask once
        for m in manifests:
            if key_of(m) in refused and id(m) in consumed:
                continue
            flux_kind = id(m) in consumed or id(m) in inert
            if flux_kind and cluster is not None and (m.api_version, m.kind) not in served:
                served[(m.api_version, m.kind)] = cluster.is_served(m.api_version, m.kind)
            if flux_kind and cluster is not None and not served[(m.api_version, m.kind)]:
                unserved.append(m.ref())
                continue
            kept.append(m)
            if configured is not None and id(m) in consumed and m.kind in ("Receiver", "Provider", "Alert"):
                configured.append(m)
        home = self._cluster_or_none() if taken.gone else None  # inventories live in Herald's own cluster
        for gone in taken.gone:
            if home is not None:
                notes.append(self._finalize(gone, home))
        for (kind, ns, name), why in taken.refused:
            events.append(Event.for_object(kind, name, ns, severity=SEVERITY_ERROR, reason="ConfigurationRefused",
                                           message=f"not reconciled: {why}",
                                           metadata={"revision": str(revision)}))
        said = [f"{kind}/{ns}/{name} ({how})" for how, keys in
                (("added", taken.added), ("changed", taken.changed), ("removed", taken.removed))
                for kind, ns, name in keys]
        if said:
            notes.append("Configuration from this render: " + ", ".join(said))
        if refused:
            notes.append("Refused as configuration (not reconciled, not applied): "
                         + ", ".join(f"{k}/{n}/{o}" for k, n, o in sorted(refused)))
        if unserved:
            notes.append("Not applied, their CRDs are not served by the cluster: " + ", ".join(unserved))
        acted_on = [m.ref() for m in taken.inert if m.ref() not in unserved]
        if acted_on:
            notes.append("Applied, but Herald does not act on these kinds (their Flux controllers would): "
                         + ", ".join(acted_on))
        for kind, ns, name in self._follow_ups(ks, taken):
            # Not `origin.revision`: the run that rendered it has applied that commit, but
            # without this object, which coalescing would otherwise take as done.
            follow = ReconcileRequest(kind=kind, name=name, namespace=ns, reason="configuration",
                                      origin={"owner": f"Kustomization/{ks.meta.namespace}/{ks.meta.name}",
                                              "ownerRevision": str(revision)})
            try:
                self.bus.publish(RECONCILE_QUEUE, follow.to_json(), message_id=follow.id)
            except BusError as exc:  # the interval timer reconciles it later
                log.warning("cannot ask for the reconcile of %s %s/%s: %s", kind, ns, name, exc)
        return kept

    def _follow_ups(self, owner: Kustomization, taken: Taken) -> list[tuple[str, str, str]]:
        """What to reconcile now that a render changed the configuration: each new or changed
        source, and each new or changed Kustomization, by one request per source when several
        share it (a fleet's hundred Kustomizations on one GitRepository are one run, not a
        hundred requests each marking a follow-up of the next)."""
        changed = [*taken.added, *taken.changed]
        sources = {(kind, ns, name) for kind, ns, name in changed if kind in SOURCE_KINDS}
        by_source: dict[tuple[str, str, str], list[tuple[str, str, str]]] = {}
        for kind, ns, name in changed:
            ks = self.cfg.kustomizations.get((ns, name)) if kind == "Kustomization" else None
            if ks is None or (ns, name) == owner.meta.key:
                continue
            src = (ks.source_ref.kind, ks.source_ref.namespace or ns, ks.source_ref.name)
            by_source.setdefault(src, []).append((kind, ns, name))
        out = sorted(sources)
        for src, members in sorted(by_source.items()):
            if src in sources:
                continue  # the source's own request runs them all
            out += [src] if len(members) > 1 else members
        return out

    def _configured_status(self, cluster: Cluster, configured: list[Manifest]) -> None:
        """The status notification-controller writes on the Receivers, Providers and Alerts a
        render applied: Ready, and a Receiver's `webhookPath`, which is where people look for it."""
        for m in configured:
            ns = m.namespace or "default"
            obj = self.cfg.by_kind(m.kind).get((ns, m.name))
            if obj is None:
                continue  # refused: its own error event says why
            if m.kind == "Receiver":
                path = self.cfg.hook_path(obj)
                status.write_configured(cluster, (m.api_version,), m.kind, ns, m.name,
                                        f"Receiver initialized for path: {path}", {"webhookPath": path})
            else:
                status.write_configured(cluster, (m.api_version,), m.kind, ns, m.name, "Initialized")

    def _finalize(self, ks: Kustomization, cluster: Cluster) -> str:
        """A Kustomization gone from the configuration (its parent's render dropped it), as
        kustomize-controller's finalizer handles a deleted one: its objects are deleted when
        `deletionPolicy` says so (MirrorPrune, the default: when it prunes; Delete; and
        WaitForTermination, which also waits until they are gone) or left (Orphan); then its
        inventory goes. Returns the line for the event of the run that dropped it."""
        where = f"Kustomization/{ks.meta.namespace}/{ks.meta.name}"
        try:
            store = InventoryStore(cluster, ks.meta.namespace, ks.meta.name)
            record = store.load()
            policy = ks.deletion_policy
            delete = policy in ("Delete", "WaitForTermination") or (policy == "MirrorPrune" and ks.prune)
            said = f"{where} removed: "
            if delete and len(record.inventory):
                target = self._remote_cluster(ks, cluster) if ks.kube_config_secret else cluster
                target = acting_as(target, ks)
                owner = owner_labels(ks.meta.name, ks.meta.namespace)
                entries = record.inventory.ordered(reverse=True)
                pruned = prune(target, entries, owner, {k.meta.namespace for k in self.cfg.kustomizations.values()})
                if pruned.errors:
                    return said + "deleting its objects failed: " + "; ".join(pruned.errors)
                if policy == "WaitForTermination":
                    _wait_gone(target, entries, ks.timeout or ks.interval, self.poll_interval)
                said += f"deleted its {len(pruned.changes)} object(s) (deletionPolicy {policy})"
            else:
                said += f"its objects are left in place (deletionPolicy {policy}, prune {str(ks.prune).lower()})"
            cluster.delete("v1", "ConfigMap", ks.meta.namespace, store.name)
            return said
        except (ApiRefusal, ClusterUnreachable, RemoteClusterError, HealthCheckFailed) as exc:
            log.error("%s: finalizing failed: %s", where, exc)
            return f"{where} removed: finalizing it failed: {exc}"

    def _render(self, ks: Kustomization, repo: Source, revision: Revision | ArtifactRevision) -> Rendered:
        """The Kustomization's objects at `revision` (`reconciler.build`, which plans use too)."""
        workdir = (self.state_dir / "work" / f"{os.getpid()}-{threading.get_ident()}" / ks.meta.namespace
                   / ks.meta.name)
        read = reader(self._cluster_or_none(), self.cfg)
        if isinstance(revision, ArtifactRevision):
            return build_tree(ks, revision.root, workdir, read)
        return build(self.git, ks, repo, revision.sha, workdir, read, includes=revision.includes)

    def _apply(self, ks: Kustomization, cluster: Cluster, store: InventoryStore, record: Record,
               manifests: list[Manifest], revision: Revision, name: str) -> _Result:
        timeout = ks.timeout or ks.interval
        owner = owner_labels(ks.meta.name, ks.meta.namespace)
        # As kustomize-controller: a Kustomization with serviceAccountName applies, prunes and
        # reads health as that ServiceAccount (impersonation), so the tenant's RBAC decides; its
        # inventory and Lease stay Herald's own, as the Kustomization's status stays Flux's.
        cluster = acting_as(cluster, ks)
        engine = ApplyEngine(cluster, owner, record.inventory, timeout, poll=self.poll_interval,
                             concurrency=self.settings.apply_concurrency,
                             dry_run_unchanged=self.settings.dry_run_unchanged, force=ks.force)
        try:
            applied = engine.apply(manifests)
        except ApplyFailed as exc:
            record.inventory = record.inventory.union(exc.result.applied)  # never orphan what was created
            self._record(store, record, "False", "ReconciliationFailed", str(exc), revision)
            done = [str(c) for c in exc.result.changes if c.changed]
            log.error("%s %s: apply failed:\n%s", name, revision, exc)
            return _Result(SEVERITY_ERROR, "ReconciliationFailed", [*exc.errors, *done], "failed",
                         "apply failed (transient)" if exc.transient else "", ks.retry_interval)

        stale = record.inventory.minus(applied.applied)
        pruned = PruneResult()
        if ks.prune and stale:
            pruned = prune(cluster, stale, owner, {k.meta.namespace for k in self.cfg.kustomizations.values()})
        record.inventory = applied.applied.union(pruned.kept)
        lines = [str(c) for c in [*applied.changes, *pruned.changes]]
        log.info("%s %s: %s", name, revision, ", ".join(lines) or "no objects")
        if pruned.errors:
            self._record(store, record, "False", "PruneFailed", "\n".join(pruned.errors), revision)
            return _Result(SEVERITY_ERROR, "PruneFailed", [*lines, *pruned.errors], "failed",
                         "prune failed (transient)" if pruned.transient else "", ks.retry_interval)

        # As Flux: `wait` checks everything applied; otherwise `healthChecks` names what to wait for
        # (objects of other Kustomizations or controllers too). healthCheckExprs judge their kinds.
        targets = (self._health_targets(cluster, record.inventory) if ks.wait
                   else self._health_check_targets(cluster, ks))
        if targets:
            self._record(store, record, "Unknown", "Progressing",
                         f"Running health checks for revision {revision} with a timeout of {go_duration(timeout)}",
                         revision)
            try:
                # Flux's JobsWithTTL: such a Job, deleted by the TTL controller once finished, is done.
                ttl_jobs = {m.ref() for m in manifests if m.kind == "Job" and m.api_version.startswith("batch/")
                            and (m.obj.get("spec") or {}).get("ttlSecondsAfterFinished") is not None}
                took = wait_for(targets, timeout, self.poll_interval, gone_ok=ttl_jobs,
                                judge=with_expressions(ks.health_check_exprs) if ks.health_check_exprs else None)
            except HealthCheckFailed as exc:
                log.error("%s %s: %s", name, revision, exc)
                self._record(store, record, "False", "HealthCheckFailed", str(exc), revision)
                return _Result(SEVERITY_ERROR, "HealthCheckFailed", [*lines, str(exc)], "failed",
                             "health check failed", ks.retry_interval)
            lines.append(f"Health check passed in {go_duration(took)}")
        self._record(store, record, "True", "ReconciliationSucceeded", f"Applied revision: {revision}", revision,
                     applied=True)
        return _Result(SEVERITY_INFO, "ReconciliationSucceeded", lines or ["no objects"], "finished")

    def _getter(self, cluster: Cluster, api_version: str, kind: str, namespace: str | None,
                name: str) -> Callable[[], dict | None]:
        stop = self._stop

        def get() -> dict | None:
            if stop.is_set():  # a health wait may last minutes: a stopping worker hands it back
                raise ShuttingDown("worker shutting down during the health check; handing the request back")
            return cluster.get(api_version, kind, namespace, name)  # None for a kind not served (yet)

        return get

    def _health_targets(self, cluster: Cluster, inventory: Inventory) -> list[tuple[str, Callable[[], dict | None]]]:
        return [(e.oid.ref(), self._getter(cluster, e.oid.api_version(e.version), e.oid.kind, e.oid.namespace or None,
                                           e.oid.name))
                for e in inventory.ordered()]

    def _health_check_targets(self, cluster: Cluster, ks: Kustomization) -> list[tuple[str, Callable[[], dict | None]]]:
        return [(h.ref(), self._getter(cluster, h.api_version, h.kind, h.namespace or None, h.name))
                for h in ks.health_checks]

    def _record(self, store: InventoryStore, record: Record, ready: str, reason: str, message: str,
                revision: Revision, applied: bool = False) -> None:
        previous = record.result
        record.result = LastResult(ready=ready, reason=reason, message=message,
                                   last_applied_revision=str(revision) if applied else previous.last_applied_revision,
                                   last_attempted_revision=str(revision))
        saved = store.save(record)
        record.resource_version = saved.resource_version
        # For the operator's history (reconciler.runs): what the Kustomization holds now.
        self._kept[f"Kustomization/{store.namespace}/{store.ks_name}"] = runs.Kept(
            [e.oid.ref() for e in record.inventory.ordered()], record.result.last_applied_revision)
        # The Kustomization object's own status, when it is in the cluster (reconciler.status).
        status.write(store.cluster, store.namespace, store.ks_name,
                     status.Outcome(ready, reason, message, record.result.last_applied_revision, str(revision)),
                     record.inventory)

    def _dependency_problem(self, cluster: Cluster, ks: Kustomization, revision: Revision) -> str:
        """Flux's checkDependencies: each dependency Ready, and applied at this revision when
        it reads the same source. An empty answer means all are ready."""
        mine = (ks.source_ref.kind, ks.source_ref.namespace or ks.meta.namespace, ks.source_ref.name)
        for d in ks.depends_on:
            namespace = d.namespace or ks.meta.namespace
            dep_name = f"{namespace}/{d.name}"
            dep = self.cfg.kustomizations.get((namespace, d.name))
            if dep is None:
                return f"dependency '{dep_name}' not found"
            last = InventoryStore(cluster, namespace, d.name).load().result
            if not last.is_ready:
                return f"dependency '{dep_name}' is not ready"
            theirs = (dep.source_ref.kind, dep.source_ref.namespace or dep.meta.namespace, dep.source_ref.name)
            if theirs == mine and last.last_applied_revision != str(revision):
                return f"dependency '{dep_name}' revision is not up to date"
        return ""

    # ---- loop --------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Consume reconcile requests on `settings.threads` threads, and poll intervals, until
        `stop` is set. A reconcile that is applying when `stop` is set finishes; one that is
        waiting (for health, for the coalescing window, for another worker's Lease) is handed
        back to the bus and its Lease released, so another worker takes it over at once."""
        self._stop = stop
        self.images.stop = stop  # a scan waiting for its window is handed back at once
        threads = []
        for i in range(1, self.settings.threads):
            t = threading.Thread(target=self.bus.consume, args=(RECONCILE_QUEUE, correlated(self.handle), stop),
                                 kwargs={"retry": self.retry_policy}, name=f"reconciler-{i}", daemon=True)
            t.start()
            threads.append(t)
        for i in range(self.settings.plan_threads):
            t = threading.Thread(target=self.plans.run, args=(stop,), name=f"reconciler-plans-{i}", daemon=True)
            t.start()
            threads.append(t)
        t = threading.Thread(target=self.images.run, args=(stop,), name="reconciler-images", daemon=True)
        t.start()
        threads.append(t)
        if self.settings.poll:
            scans = ImagePoller(self.cfg, self.bus, jitter=self.settings.jitter)
            self._image_poller = scans
            t = threading.Thread(target=scans.run, args=(stop,), name="reconciler-image-interval", daemon=True)
            t.start()
            threads.append(t)
            poller = Poller(self.cfg, self.bus, self.peek, jitter=self.settings.jitter, skew=self.settings.skew,
                            startup_spread=self.settings.startup_spread if self.settings.startup else None)
            self._poller = poller
            t = threading.Thread(target=poller.run, args=(stop,), name="reconciler-interval", daemon=True)
            t.start()
            threads.append(t)
        try:
            self.bus.consume(RECONCILE_QUEUE, correlated(self.handle), stop, retry=self.retry_policy)
        finally:
            stop.set()
            for t in threads:
                t.join()
