"""One reconcile per GitRepository at a time, across threads, processes and machines.

The lock unit is the GitRepository: a request for a GitRepository reconciles it and every
Kustomization reading it, and a request for one Kustomization locks the GitRepository it reads.
So each Kustomization, and each GitRepository fetch, has at most one reconcile running. (Two
Kustomizations of one repository are therefore never reconciled in parallel; they already run
one after the other inside a request, dependencies first, so nothing is lost.)

Where the lock lives
    A Kubernetes ``coordination.k8s.io/v1`` Lease per GitRepository, named
    ``herald-gitrepository-<name>`` in the GitRepository's namespace — the cluster the
    reconciler applies to, which every worker on every machine already reaches and which
    outlives all of them. It is the object Kubernetes' own controllers use for leader election:
    ``holderIdentity``, ``leaseDurationSeconds``, ``acquireTime``, ``renewTime``,
    ``leaseTransitions``. Every write is a compare-and-swap on ``resourceVersion`` (create, or
    update with the version read), so two workers can never both believe they took it. The
    holder renews it every third of its duration; a holder killed with SIGKILL stops renewing
    and its Lease is free again once ``renewTime + leaseDurationSeconds`` has passed. The same
    Lease carries the coalescing state as annotations (see `reconciler.coalesce`), so taking
    the lock and reading or writing that state are one atomic write.

    Without a cluster (``herald serve`` on a laptop: embedded bus, one process, reconciles that
    only render), the same records live in a process-wide `MemoryLeaseStore`.

Why not RabbitMQ's single-active-consumer
    SAC makes one consumer active per *queue*. One queue per target would be needed (declared
    and consumed by every worker for every GitRepository: N workers × M repositories consumers
    and channels), the receiver would have to route by target, and the embedded bus has no such
    thing. It also gives exclusion only while messages sit in that queue: it cannot express
    "a request that arrives while its target runs is already covered" (coalescing), which needs
    shared state anyway. A Lease gives both, on every bus, at the cost of a few small API
    requests per reconcile.

Expiry and clocks
    A Lease is expired when ``renewTime + leaseDurationSeconds + skew`` is in the past on the
    reader's clock (``skew`` is the clock difference we tolerate between machines, see
    `reconciler.coalesce`), or — clock-free, as client-go's leader election does — when a
    waiter has seen the same ``resourceVersion`` for a whole ``leaseDurationSeconds`` on its own
    monotonic clock.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import logging
import math
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from herald.model import GitRepository, OCIRepository
from reconciler.kube import ApiRefusal, Cluster, ClusterUnreachable, KindNotServed

log = logging.getLogger("herald.reconciler.locks")

LEASE_API_VERSION = "coordination.k8s.io/v1"
MANAGED_BY = {"app.kubernetes.io/managed-by": "herald"}

LockKey = tuple[str, str]  # (namespace, name) of the source (`source_key`)


class LockUnavailable(Exception):
    """The lock store could not be read or written (API server unreachable or refusing)."""


class LeaseLost(Exception):
    """Someone else holds the Lease we thought was ours (we failed to renew it in time)."""


def format_time(t: float) -> str:
    """Kubernetes MicroTime: RFC 3339 with microseconds and a Z."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: Any) -> float | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def source_key(repo: GitRepository | OCIRepository) -> LockKey:
    """The Lease key of a source: (namespace, name) for a GitRepository, (namespace,
    "OCIRepository/<name>") for an OCIRepository (see `lease_name`)."""
    if isinstance(repo, OCIRepository):
        return repo.meta.namespace, f"OCIRepository/{repo.meta.name}"
    return repo.meta.namespace, repo.meta.name


def lease_name(repo_name: str) -> str:
    """The Lease of a source: `herald-gitrepository-<name>`, or `herald-ocirepository-<name>` for
    an OCIRepository, whose LockKey names it `OCIRepository/<name>` (no Kubernetes name has a
    slash, so the two kinds never share a Lease)."""
    kind, slash, bare = repo_name.rpartition("/")
    name = f"herald-{kind.lower()}-{bare}" if slash else f"herald-gitrepository-{repo_name}"
    if len(name) > 253:
        name = name[:236] + "-" + hashlib.sha256(repo_name.encode()).hexdigest()[:16]
    return name


def new_identity() -> str:
    """Who holds a Lease: host, process and a fresh token (threads of one process differ)."""
    return f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:8]}"


@dataclass
class LeaseRecord:
    """A Lease as the coordinator sees it; `version` is the compare-and-swap token."""

    holder: str = ""
    duration: float = 15.0
    acquired: float | None = None
    renewed: float | None = None
    transitions: int = 0
    annotations: dict[str, str] = field(default_factory=dict)
    version: str = ""

    @property
    def free(self) -> bool:
        return not self.holder

    def expired(self, now: float, skew: float) -> bool:
        """Free, or not renewed within its duration (by the wall clock, allowing `skew`)."""
        if self.free:
            return True
        if self.renewed is None:
            return True
        return now > self.renewed + self.duration + skew


class LeaseStore(Protocol):
    def read(self, key: LockKey) -> LeaseRecord | None:
        """The record, or None when there is none yet. Raises LockUnavailable."""

    def create(self, key: LockKey, record: LeaseRecord) -> LeaseRecord | None:
        """Create it; None when it exists already. Raises LockUnavailable."""

    def replace(self, key: LockKey, record: LeaseRecord) -> LeaseRecord | None:
        """Write it if nobody wrote since `record.version`; None otherwise. Raises LockUnavailable."""


class MemoryLeaseStore:
    """The same records in this process's memory: the fallback when no cluster is configured."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: dict[LockKey, LeaseRecord] = {}
        self._version = 0

    def _bump(self, record: LeaseRecord) -> LeaseRecord:
        self._version += 1
        stored = replace(copy.deepcopy(record), version=str(self._version))
        return stored

    def read(self, key: LockKey) -> LeaseRecord | None:
        with self._lock:
            found = self._records.get(key)
            return copy.deepcopy(found) if found is not None else None

    def create(self, key: LockKey, record: LeaseRecord) -> LeaseRecord | None:
        with self._lock:
            if key in self._records:
                return None
            self._records[key] = self._bump(record)
            return copy.deepcopy(self._records[key])

    def replace(self, key: LockKey, record: LeaseRecord) -> LeaseRecord | None:
        with self._lock:
            current = self._records.get(key)
            if current is None or current.version != record.version:
                return None
            self._records[key] = self._bump(record)
            return copy.deepcopy(self._records[key])


PROCESS_STORE = MemoryLeaseStore()


class KubeLeaseStore:
    """Leases in the cluster, one per GitRepository, in the GitRepository's namespace."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    def _resource(self) -> Any:
        try:
            return self.cluster.resource(LEASE_API_VERSION, "Lease")
        except KindNotServed as exc:
            raise LockUnavailable(f"the API server does not serve {LEASE_API_VERSION} Lease: {exc}") from None
        except ClusterUnreachable as exc:
            raise LockUnavailable(str(exc)) from None

    @staticmethod
    def _refused(exc: ApiRefusal, what: str) -> LockUnavailable:
        hint = ""
        if exc.code == 403:
            hint = " (Herald needs get, create and update on leases.coordination.k8s.io)"
        return LockUnavailable(f"cannot {what}: {exc.message}{hint}")

    def read(self, key: LockKey) -> LeaseRecord | None:
        namespace, repo = key
        self._resource()  # a clear error when Leases are not served
        try:
            obj = self.cluster.get(LEASE_API_VERSION, "Lease", namespace, lease_name(repo))
        except ClusterUnreachable as exc:
            raise LockUnavailable(str(exc)) from None
        except ApiRefusal as exc:
            raise self._refused(exc, f"read Lease {namespace}/{lease_name(repo)}") from None
        return None if obj is None else self._record(obj)

    def create(self, key: LockKey, record: LeaseRecord) -> LeaseRecord | None:
        namespace, repo = key
        res = self._resource()
        body = self._body(key, record, with_version=False)
        for first in (True, False):
            try:
                created = self.cluster._call(res.create, body=body, namespace=namespace)
            except ClusterUnreachable as exc:
                raise LockUnavailable(str(exc)) from None
            except ApiRefusal as exc:
                if exc.code == 409:
                    return None
                if exc.code == 404 and first:  # the namespace does not exist yet
                    self._ensure_namespace(namespace)
                    continue
                raise self._refused(exc, f"create Lease {namespace}/{lease_name(repo)}") from None
            return self._record(created.to_dict())
        return None

    def replace(self, key: LockKey, record: LeaseRecord) -> LeaseRecord | None:
        namespace, repo = key
        res = self._resource()
        body = self._body(key, record, with_version=True)
        try:
            written = self.cluster._call(res.replace, body=body, name=lease_name(repo),
                                         namespace=namespace)
        except ClusterUnreachable as exc:
            raise LockUnavailable(str(exc)) from None
        except ApiRefusal as exc:
            if exc.code in (404, 409):  # deleted, or written since we read it
                return None
            raise self._refused(exc, f"update Lease {namespace}/{lease_name(repo)}") from None
        return self._record(written.to_dict())

    def _ensure_namespace(self, namespace: str) -> None:
        log.info("creating namespace %s to keep Herald's Leases in", namespace)
        try:
            self.cluster.server_side_apply({"apiVersion": "v1", "kind": "Namespace",
                                            "metadata": {"name": namespace, "labels": dict(MANAGED_BY)}})
        except ClusterUnreachable as exc:
            raise LockUnavailable(str(exc)) from None
        except ApiRefusal as exc:
            raise self._refused(exc, f"create namespace {namespace}") from None

    @staticmethod
    def _body(key: LockKey, record: LeaseRecord, with_version: bool) -> dict[str, Any]:
        namespace, repo = key
        meta: dict[str, Any] = {"name": lease_name(repo), "namespace": namespace,
                                "labels": {**MANAGED_BY, "herald.dev/lock": "gitrepository"},
                                "annotations": {"herald.dev/gitrepository": f"{namespace}/{repo}",
                                                **record.annotations}}
        if with_version and record.version:
            meta["resourceVersion"] = record.version
        spec: dict[str, Any] = {"leaseDurationSeconds": max(1, math.ceil(record.duration)),
                                "leaseTransitions": record.transitions}
        if record.holder:
            spec["holderIdentity"] = record.holder
        if record.acquired is not None:
            spec["acquireTime"] = format_time(record.acquired)
        if record.renewed is not None:
            spec["renewTime"] = format_time(record.renewed)
        return {"apiVersion": LEASE_API_VERSION, "kind": "Lease", "metadata": meta, "spec": spec}

    @staticmethod
    def _record(obj: dict[str, Any]) -> LeaseRecord:
        meta = obj.get("metadata") or {}
        spec = obj.get("spec") or {}
        annotations = {k: str(v) for k, v in (meta.get("annotations") or {}).items()
                       if k != "herald.dev/gitrepository"}
        return LeaseRecord(
            holder=str(spec.get("holderIdentity") or ""),
            duration=float(spec.get("leaseDurationSeconds") or 15),
            acquired=parse_time(spec.get("acquireTime")),
            renewed=parse_time(spec.get("renewTime")),
            transitions=int(spec.get("leaseTransitions") or 0),
            annotations=annotations,
            version=str(meta.get("resourceVersion") or ""),
        )


class ExpiryWatch:
    """Tells, without trusting other machines' clocks, when a Lease stopped being renewed:
    the same version seen for a whole lease duration on our monotonic clock."""

    def __init__(self) -> None:
        self._version = ""
        self._since = 0.0

    def stale(self, record: LeaseRecord) -> bool:
        now = time.monotonic()
        if record.version != self._version:
            self._version, self._since = record.version, now
            return False
        return now - self._since >= record.duration


class Held:
    """A Lease we hold: renewed in the background; every change is a compare-and-swap."""

    def __init__(self, store: LeaseStore, key: LockKey, record: LeaseRecord, identity: str,
                 clock: Any = time.time) -> None:
        self.store = store
        self.key = key
        self.record = record
        self.identity = identity
        self.clock = clock
        self.lost = False
        self.released = False
        self._lock = threading.Lock()  # one write at a time from this holder (renewer vs. worker)
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self._last_renewal = time.monotonic()

    def start_renewing(self) -> None:
        self._renewer = threading.Thread(target=self._renew, name=f"herald-lease-{self.key[1]}", daemon=True)
        self._renewer.start()

    def stop_renewing(self) -> None:
        self._stop.set()
        if self._renewer is not None and self._renewer is not threading.current_thread():
            self._renewer.join(timeout=5)

    def update(self, change: Any) -> bool:
        """Apply `change(annotations) -> release?` to the current record and write it.

        On a conflict (another worker marked a follow-up, say) the record is read again and
        `change` applied to the fresh one. Returns whether the Lease was released. Raises
        LeaseLost when someone else holds it now, LockUnavailable when the store is away.
        """
        with self._lock:
            if self.lost:
                raise LeaseLost(f"lost the Lease of {self.key[0]}/{self.key[1]}")
            if self.released:
                return True  # never take a released Lease back (a late renewal would)
            record = self.record
            while True:
                annotations = dict(record.annotations)
                release = bool(change(annotations))
                wanted = replace(record, annotations=annotations, renewed=self.clock(),
                                 holder="" if release else self.identity)
                written = self.store.replace(self.key, wanted)
                if written is not None:
                    self.record = written
                    self._last_renewal = time.monotonic()
                    if release:
                        self.released = True
                        self._stop.set()
                    return release
                fresh = self.store.read(self.key)
                if fresh is None or fresh.holder != self.identity:
                    self.lost = True
                    self._stop.set()
                    raise LeaseLost(f"the Lease of {self.key[0]}/{self.key[1]} is held by "
                                    f"{fresh.holder if fresh else 'nobody'} now")
                record = fresh

    def _renew(self) -> None:
        interval = max(0.05, self.record.duration / 3)
        while not self._stop.wait(interval):
            try:
                self.update(lambda _annotations: False)
            except LeaseLost as exc:
                log.error("%s; the reconcile running under it is no longer exclusive", exc)
                return
            except LockUnavailable as exc:
                log.warning("cannot renew the Lease of %s/%s: %s", *self.key, exc)
                if time.monotonic() - self._last_renewal > self.record.duration:
                    self.lost = True
                    log.error("the Lease of %s/%s ran out while the API server was away", *self.key)
                    return
            except Exception:
                log.exception("renewing the Lease of %s/%s failed", *self.key)

    def release(self, change: Any = None) -> None:
        """Give the Lease up (best effort: if it cannot be written it simply expires)."""
        if self.released or self.lost:
            self.stop_renewing()
            return

        def give_up(annotations: dict[str, str]) -> bool:
            if change is not None:
                change(annotations)
            return True

        with contextlib.suppress(LeaseLost, LockUnavailable):
            self.update(give_up)
        self.stop_renewing()


def try_acquire(store: LeaseStore, key: LockKey, seen: LeaseRecord | None, identity: str, duration: float,
                annotations: dict[str, str], clock: Any = time.time) -> Held | None:
    """Take a free (or expired) Lease, as read in `seen`; None if someone else was faster."""
    now = clock()
    if seen is None:
        record = LeaseRecord(holder=identity, duration=duration, acquired=now, renewed=now, transitions=0,
                             annotations=annotations)
        written = store.create(key, record)
    else:
        record = replace(seen, holder=identity, duration=duration, acquired=now, renewed=now,
                         transitions=seen.transitions + (1 if seen.holder != identity else 0),
                         annotations=annotations)
        written = store.replace(key, record)
    if written is None:
        return None
    return Held(store, key, written, identity, clock)
