"""The interval timer: `spec.interval` as the fallback when no webhook comes.

Every worker runs one. For each GitRepository (and each Kustomization) that is not suspended it
looks at the target's Lease (`reconciler.coalesce`) when the interval is due: if a run covering
it started less than `interval` ago — after a webhook, or another worker's poll — it waits for
`that start + interval`; otherwise it publishes a ReconcileRequest with reason "interval". A
Kustomization's run re-applies the revision, which corrects drift made by hand in the cluster
(the event says "(drift corrected)").

Why every worker polls rather than only a Lease holder: there is no holder between runs, and
electing a poller would be one more Lease to keep. Reading the target's Lease first makes
the other workers' polls skip, and each due time is jittered (up to `jitter` × interval later),
so several workers rarely publish for one target in the same interval; when they do, the
requests are coalesced into one run anyway.

At start, every source is reconciled (reason "startup"), as Flux reconciles every object when
its controllers start: each at a random moment within `startup_spread` seconds, so a fleet does
not hit the API server at once, whatever its Lease says about recent runs (replicas starting
together publish for the same source within the spread, and coalesce into one run). Without
`startup_spread` (HERALD_STARTUP_RECONCILE=false) a never-reconciled target is first polled one
interval after the worker started.

After a failed run (the Lease's ``herald.dev/failed``) that the bus does not retry (a manifest
the API server refuses, a build error), the target is polled `retryInterval` after that run
started (the Kustomization's `spec.retryInterval`, else its interval), which is when the
failure's event says the next try comes, as Flux's kustomize-controller requeues it.

The poller also repairs the one case coalescing cannot: work marked pending on a Lease that
nobody holds (its request ended in the dead-letter queue). Such a target is polled at once.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from herald.bus import Bus, BusError
from herald.config import Config
from herald.messages import RECONCILE_QUEUE, ReconcileRequest
from reconciler.coalesce import REPO_SCOPE, State, covers, kustomization_scope
from reconciler.locks import LeaseRecord, LockKey, source_key

log = logging.getLogger("herald.reconciler.poller")

Peek = Callable[[LockKey], tuple[LeaseRecord | None, State]]


@dataclass
class _Target:
    kind: str
    namespace: str
    name: str
    interval: float
    key: LockKey  # the GitRepository's Lease
    scope: str
    due: float = 0.0
    retry: float = 0.0  # after a failed run: spec.retryInterval, else the interval
    startup: bool = False  # its start-up reconcile is still to be asked for


class Poller:
    def __init__(self, cfg: Config, bus: Bus, peek: Peek, *, jitter: float = 0.1, skew: float = 0.5,
                 clock: Callable[[], float] = time.time, rand: Callable[[], float] = random.random,
                 retry_after: float = 10.0, startup_spread: float | None = None) -> None:
        self.startup_spread = startup_spread
        self.cfg = cfg
        self.bus = bus
        self.peek = peek
        self.jitter = jitter
        self.skew = skew
        self.clock = clock
        self.rand = rand
        self.retry_after = retry_after  # when the Lease cannot be read or the bus is away
        self.published = 0
        self._changed = threading.Event()

    def update(self, cfg: Config) -> None:
        """A new configuration (`--from-cluster`): `run` re-reads the targets within a second;
        those that stay keep their due time, new ones are first due one interval from now."""
        self.cfg = cfg
        self._changed.set()

    def targets(self) -> list[_Target]:
        out = []
        for repo in [*self.cfg.git_repositories.values(), *self.cfg.oci_repositories.values()]:
            if repo.suspend or repo.interval <= 0:
                continue
            key = source_key(repo)
            out.append(_Target(type(repo).__name__, repo.meta.namespace, repo.meta.name, repo.interval, key,
                               REPO_SCOPE, retry=repo.interval))
            for ks in self.cfg.kustomizations_for(repo):
                if not ks.suspend and ks.interval > 0:
                    out.append(_Target("Kustomization", ks.meta.namespace, ks.meta.name, ks.interval, key,
                                       kustomization_scope(ks.meta.namespace, ks.meta.name),
                                       retry=ks.retry_interval or ks.interval))
        return out

    def _later(self, base: float, interval: float) -> float:
        return base + interval * (1 + self.jitter * self.rand())

    def _retarget(self, old: list[_Target], now: float) -> list[_Target]:
        due = {(t.kind, t.namespace, t.name, t.interval): t.due for t in old}
        pending_startup = {(t.kind, t.namespace, t.name) for t in old if t.startup}
        targets = self.targets()
        for t in targets:
            key = (t.kind, t.namespace, t.name, t.interval)
            t.due = due[key] if key in due else self._later(now, t.interval)
            t.startup = (t.kind, t.namespace, t.name) in pending_startup
        if targets and set(due) != {(t.kind, t.namespace, t.name, t.interval) for t in targets}:
            log.info("interval polling: %s", ", ".join(f"{t.kind}/{t.namespace}/{t.name} every {t.interval:g}s"
                                                       for t in targets))
        return targets

    def run(self, stop: threading.Event) -> None:
        targets = self._retarget([], self.clock())
        if self.startup_spread is not None:
            now = self.clock()
            for t in targets:
                if t.scope == REPO_SCOPE:  # the source's run reconciles every Kustomization of it
                    t.startup, t.due = True, now + self.startup_spread * self.rand()
        while not stop.is_set():
            if self._changed.is_set():
                self._changed.clear()
                targets = self._retarget(targets, self.clock())
            now = self.clock()
            for t in targets:
                if t.due <= now and not stop.is_set():
                    t.due = self.check(t, now)
            next_due = min((t.due for t in targets), default=now + 1.0)
            # At most a second: a new configuration (update) is picked up that soon.
            stop.wait(min(1.0, max(0.05, next_due - self.clock())))

    def check(self, t: _Target, now: float) -> float:
        """Publish for `t` if it is due; return when to look again."""
        if t.startup:
            t.startup = False
            return self._publish(t, now, "startup", {})
        try:
            record, state = self.peek(t.key)
        except Exception as exc:  # noqa: BLE001 - the API server may be away; polling must go on
            log.warning("interval poll of %s/%s/%s: cannot read its Lease (%s); requesting a reconcile",
                        t.kind, t.namespace, t.name, exc)
            record, state = None, State()
        held = record is not None and not record.expired(now, self.skew)
        stranded = bool(state.pending) and not held
        last = max((at for scope, (at, _) in state.done.items() if covers(scope, t.scope)), default=None)
        failed = max((at for scope, (at, _) in state.failed.items() if covers(scope, t.scope)), default=None)
        wait = t.interval
        if failed is not None and (last is None or failed > last):
            last, wait = failed, t.retry or t.interval  # the last run failed: Flux's retryInterval
        if held and state.last_start is not None and covers(state.scope, t.scope) and \
                state.last_start > (last or 0.0):
            last, wait = state.last_start, t.interval
        if not stranded and last is not None and now < last + wait:
            return self._later(last, wait)
        return self._publish(t, now, "interval", {"recovery": True} if stranded else {})

    def _publish(self, t: _Target, now: float, reason: str, extra: dict[str, object]) -> float:
        req = ReconcileRequest(kind=t.kind, name=t.name, namespace=t.namespace, reason=reason,
                               origin={"interval": f"{t.interval:g}s", **extra})
        try:
            self.bus.publish(RECONCILE_QUEUE, req.to_json(), message_id=req.id)
        except BusError as exc:
            log.warning("interval poll of %s/%s/%s: cannot publish (%s); trying again in %gs",
                        t.kind, t.namespace, t.name, exc, self.retry_after)
            return now + min(self.retry_after, t.interval)
        self.published += 1
        log.info("%s: requested a reconcile of %s/%s/%s (request %s%s)",
                 "start-up" if reason == "startup" else "interval poll", t.kind, t.namespace, t.name,
                 req.id, ", work left pending on a free Lease" if extra.get("recovery") else "")
        return self._later(now, t.interval)
