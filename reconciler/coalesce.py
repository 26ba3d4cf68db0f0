"""Coalescing: requests for a target that is already queued or running collapse into one run.

A hundred pushes within a second must not mean a hundred reconciles: each reconcile fetches the
tip of the branch, so one that *starts* after a push covers it. The state that decides this lives
on the target's Lease (`reconciler.locks`), as annotations every worker reads and writes with
compare-and-swap, so the rules hold across processes and machines:

``herald.dev/request``, ``herald.dev/scope``, ``herald.dev/running-since``
    what the holder is working on: the id of the bus message it holds (unacknowledged), the
    scope of its run (``*``: the GitRepository and all its Kustomizations; ``<ns>/<name>``: one
    Kustomization) and, once its fetch is about to start, when.
``herald.dev/running-revision``
    once the holder's run has fetched: the revision it is applying.
``herald.dev/pending``, ``herald.dev/pending-request``
    scopes owed a follow-up run, and the first request that asked for it (for the events).
``herald.dev/done``, ``herald.dev/last-start``
    per scope, when the last *successful* run started and the revision it applied; when any
    run last started. Only a run in which every Kustomization succeeded marks its scope done;
    a run that failed (retried or not) removes the done marks it contradicts, so a push after
    a failure always runs, even one naming the commit that was applied before.
``herald.dev/failed``
    per scope, when the last failed run started and the revision it tried: the interval
    poller tries a failed target again `retryInterval` after it (Flux's schedule).

What a worker does with a request (its message is acknowledged when the handler returns):

1. Lease free (or expired): if a completed run covers the request (below) and nothing is
   pending, it is already satisfied: acknowledge. Otherwise take the Lease and run — the
   request's own scope if not yet satisfied, plus whatever is pending (and the scope of a run
   whose holder died) — and keep running while follow-ups are pending. The Lease is released
   by the same compare-and-swap that finds nothing pending, so a follow-up marked at that
   moment either makes the release fail (the holder sees it and runs again) or finds the Lease
   free (its worker takes it).
2. Lease held by a live holder: satisfied by a completed run → acknowledge. If the holder's
   run covers the scope and has not started yet, or started after the request was made, or is
   applying the very commit the request names, or a follow-up covering it is already pending
   → acknowledge (no write at all, so a burst costs one read per request). Otherwise add the
   scope to ``pending`` and acknowledge: the holder runs once more when it finishes.
3. Lease held, and the holder's message is this very message: the bus gave it back because the
   holder's connection died (SIGKILL, network). Keep it unacknowledged and wait until the Lease
   is released or expires, then go to 1 — the interrupted run's scope is owed, so it is redone.

Why acknowledging in 2 loses nothing: a Lease is only ever held by a worker that holds an
unacknowledged message for the target. If that worker dies, its message comes back (3) and is
run again once the Lease expires; if its run fails and asks for a retry, it releases the Lease
with its scope put back into ``pending`` and its message goes back to the bus for a retry, which
runs what is pending. A follow-up left pending with nobody holding a message (a message that
went to the dead-letter queue) is picked up by the interval poller, which publishes a request
for any target whose Lease is free with work pending.

Coalescing window: a run starts no sooner than ``window`` (default 1 s) after the previous run of
the target started. The first request after a quiet period runs at once; in a burst the
follow-up waits for the window, so N requests within one window produce at most two runs
however fast each run is, the second starting after the last of them and fetching the newest
commit.

Clocks: "pending" and "not started yet" need no clock at all (they are ordered by the Lease's
compare-and-swap writes). Comparing a request's ``requestedAt`` (the receiver's clock) with a
run's start (the holder's clock) does: a run counts as covering a request only if it started at
least ``skew`` (default 0.5 s, ``HERALD_CLOCK_SKEW``) after ``requestedAt``. That is safe as long
as receivers' and workers' clocks are within ``skew`` of each other (NTP keeps them within
milliseconds); a larger difference in the unsafe direction could treat a push as covered by a
fetch that started before it, until the next push or interval. A request that names a commit
(``origin.revision``) is also satisfied, clock-free, by a completed run that applied exactly that
commit. Lease expiry uses the same allowance, or the clock-free observation in
`reconciler.locks.ExpiryWatch`.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from herald.bus import RetryLater
from herald.messages import ReconcileRequest
from reconciler.locks import (
    ExpiryWatch,
    Held,
    LeaseLost,
    LeaseRecord,
    LeaseStore,
    LockKey,
    LockUnavailable,
    format_time,
    new_identity,
    parse_time,
    try_acquire,
)

log = logging.getLogger("herald.reconciler.coalesce")

REPO_SCOPE = "*"

A_REQUEST = "herald.dev/request"
A_SCOPE = "herald.dev/scope"
A_RUNNING = "herald.dev/running-since"
A_REVISION = "herald.dev/running-revision"
A_PENDING = "herald.dev/pending"
A_PENDING_BY = "herald.dev/pending-request"
A_DONE = "herald.dev/done"
A_LAST = "herald.dev/last-start"
A_FAILED = "herald.dev/failed"
_OURS = (A_REQUEST, A_SCOPE, A_RUNNING, A_REVISION, A_PENDING, A_PENDING_BY, A_DONE, A_LAST, A_FAILED)


class ShuttingDown(RetryLater):
    """The worker is stopping: the request goes back to the bus instead of being waited for."""


def kustomization_scope(namespace: str, name: str) -> str:
    return f"{namespace}/{name}"


def covers(run_scope: str, scope: str) -> bool:
    return run_scope == REPO_SCOPE or run_scope == scope


def merge(scopes: list[str]) -> str:
    """One run for several scopes: the whole repository unless they are all the same one."""
    distinct = set(scopes)
    if not distinct or REPO_SCOPE in distinct or len(distinct) > 1:
        return REPO_SCOPE
    return distinct.pop()


def request_sha(req: ReconcileRequest) -> str:
    revision = str(req.origin.get("revision") or "")
    if "sha1:" not in revision:
        return ""
    sha = revision.rpartition("sha1:")[2]
    return sha if len(sha) == 40 else ""


@dataclass
class State:
    """The coalescing state kept in a Lease's annotations."""

    request: str = ""
    scope: str = ""
    running: float | None = None
    revision: str = ""  # what the run in progress fetched and is applying ("" until it has fetched)
    pending: list[str] = field(default_factory=list)
    pending_by: dict[str, str] = field(default_factory=dict)
    done: dict[str, tuple[float, str]] = field(default_factory=dict)  # scope -> (started, revision)
    last_start: float | None = None
    failed: dict[str, tuple[float, str]] = field(default_factory=dict)  # scope -> (started, revision)

    @classmethod
    def load(cls, annotations: dict[str, str]) -> State:
        def js(key: str, default: Any) -> Any:
            try:
                value = json.loads(annotations.get(key) or "null")
            except ValueError:
                return default
            return value if isinstance(value, type(default)) else default

        def runs(key: str) -> dict[str, tuple[float, str]]:
            out: dict[str, tuple[float, str]] = {}
            for scope, entry in js(key, {}).items():
                at = parse_time((entry or {}).get("at")) if isinstance(entry, dict) else None
                if at is not None:
                    out[str(scope)] = (at, str(entry.get("revision") or ""))
            return out

        return cls(
            request=annotations.get(A_REQUEST, ""),
            scope=annotations.get(A_SCOPE, ""),
            running=parse_time(annotations.get(A_RUNNING)),
            revision=annotations.get(A_REVISION, ""),
            pending=[str(p) for p in js(A_PENDING, [])],
            pending_by={str(k): str(v) for k, v in js(A_PENDING_BY, {}).items()},
            done=runs(A_DONE),
            last_start=parse_time(annotations.get(A_LAST)),
            failed=runs(A_FAILED),
        )

    def store(self, annotations: dict[str, str]) -> dict[str, str]:
        """Write into `annotations` (other keys kept); empty fields are removed."""
        for key in _OURS:
            annotations.pop(key, None)
        def runs(entries: dict[str, tuple[float, str]]) -> str:
            return json.dumps({s: {"at": format_time(at), "revision": rev} for s, (at, rev) in
                               sorted(entries.items())}) if entries else ""

        values = {
            A_REQUEST: self.request,
            A_SCOPE: self.scope,
            A_RUNNING: format_time(self.running) if self.running is not None else "",
            A_REVISION: self.revision if self.running is not None else "",
            A_PENDING: json.dumps(sorted(set(self.pending))) if self.pending else "",
            A_PENDING_BY: json.dumps(self.pending_by, sort_keys=True) if self.pending_by else "",
            A_DONE: runs(self.done),
            A_LAST: format_time(self.last_start) if self.last_start is not None else "",
            A_FAILED: runs(self.failed),
        }
        annotations.update({k: v for k, v in values.items() if v})
        return annotations

    def satisfied(self, scope: str, requested_at: float, sha: str, skew: float) -> bool:
        """Whether a completed run covers a request made at `requested_at` (naming `sha`)."""
        for s in {scope, REPO_SCOPE}:
            entry = self.done.get(s)
            if entry is None:
                continue
            at, revision = entry
            if at >= requested_at + skew or (sha and revision.endswith(sha)):
                return True
        return False

    def owed(self) -> list[str]:
        """Scopes a new holder must run: pending ones, and a run whose holder vanished."""
        return [*self.pending, *([self.scope] if self.running is not None and self.scope else [])]

    def applying(self, scope: str, sha: str) -> bool:
        """Whether the run in progress covers `scope` and has fetched exactly commit `sha`."""
        return bool(sha) and self.running is not None and covers(self.scope, scope) \
            and self.revision.endswith(sha)

    def record(self, run_scope: str, started: float, revision: str, result: RunResult) -> None:
        """What a run that ended (successful or not) leaves behind. Only a run with no failed
        Kustomization marks its scope done; a failure removes every done mark it contradicts
        (its scope, the failed Kustomizations', the whole repository's), so no later request
        is taken as satisfied by an apply that did not hold."""
        failed = list(getattr(result, "failed", None) or [])
        if not failed and not result.retry:
            self.done[run_scope] = (started, revision)
            if run_scope == REPO_SCOPE:  # covers every Kustomization: older entries add nothing
                self.done = {s: v for s, v in self.done.items() if s == REPO_SCOPE or v[0] > started}
            self.failed = {s: v for s, v in self.failed.items() if not covers(run_scope, s) or v[0] > started}
            return
        for s in {run_scope, REPO_SCOPE, *failed}:
            self.done.pop(s, None)
            self.failed[s] = (started, revision)
        for s in getattr(result, "succeeded", None) or []:
            if s not in failed:
                self.done[s] = (started, revision)
                self.failed.pop(s, None)


class RunResult(Protocol):
    retry: str
    retry_after: float | None
    revision: str
    # Optional (read with getattr): the Kustomization scopes that failed, and those that
    # succeeded, in the run. A result without them counts as all-succeeded unless it retries.


@dataclass
class Options:
    lease_duration: float = 15.0  # seconds a Lease lasts without renewal (renewed every third)
    window: float = 1.0  # minimum seconds between the starts of two runs of one target
    skew: float = 0.5  # clock difference tolerated between machines
    poll: float = 0.5  # how often a waiter looks at a Lease again


class Coordinator:
    """Runs requests through the Lease of their target: at most one run at a time, coalesced."""

    def __init__(self, options: Options | None = None, clock: Callable[[], float] = time.time) -> None:
        self.options = options or Options()
        self.clock = clock
        self._local = threading.local()  # the Lease this thread's run is under, for `announce`

    def announce(self, revision: str) -> None:
        """Called by a run (in the thread `process` called it from) once it has fetched: record
        on the Lease which revision it is applying, so that requests naming that very commit
        are covered by it instead of owed a follow-up. Outside a run, a no-op; a failed write
        only costs that follow-up."""
        held: Held | None = getattr(self._local, "held", None)
        if held is None or not revision:
            return

        def mark(annotations: dict[str, str]) -> bool:
            st = State.load(annotations)
            if st.running is not None:
                st.revision = revision
                st.store(annotations)
            return False

        try:
            held.update(mark)
        except (LeaseLost, LockUnavailable) as exc:
            log.warning("GitRepository %s/%s: cannot record the revision being applied: %s", *held.key, exc)

    # ---- reading, for the poller ------------------------------------------------------

    def peek(self, store: LeaseStore, key: LockKey) -> tuple[LeaseRecord | None, State]:
        record = store.read(key)
        return record, State.load(record.annotations if record else {})

    # ---- a request --------------------------------------------------------------------

    def process(self, store: LeaseStore, key: LockKey, req: ReconcileRequest, scope: str,
                run: Callable[[ReconcileRequest], RunResult], stop: threading.Event) -> str:
        """Handle one request; returns what happened ("satisfied", "coalesced", "ran N").

        Raises RetryLater (the bus retries the message) when a run asks for it, when the
        Lease cannot be read or written, and (ShuttingDown) when `stop` is set while waiting.
        """
        opts = self.options
        requested_at = parse_time(req.requestedAt)
        if requested_at is None:
            requested_at = math.inf  # no usable time: only a run that starts later covers it
        sha = request_sha(req)
        where = f"{key[0]}/{key[1]}"
        watch = ExpiryWatch()
        try:
            while True:
                record = store.read(key)
                state = State.load(record.annotations if record else {})
                own_message = record is not None and not record.free and state.request == req.id
                if record is None or record.expired(self.clock(), opts.skew) or (own_message and watch.stale(record)):
                    own = not state.satisfied(scope, requested_at, sha, opts.skew)
                    owed = state.owed()
                    if not own and not owed:
                        return "satisfied"
                    identity = new_identity()
                    intended = merge(([scope] if own else []) + owed)
                    fresh = State(request=req.id, scope=intended, running=None, pending=owed,
                                  pending_by=state.pending_by, done=state.done, last_start=state.last_start)
                    held = try_acquire(store, key, record, identity, opts.lease_duration,
                                       fresh.store(dict(record.annotations if record else {})), self.clock)
                    if held is None:
                        continue  # another worker was faster; look again
                    if record is not None and not record.free:
                        log.warning("GitRepository %s: took over the Lease from %s, which stopped renewing it%s",
                                    where, record.holder,
                                    f" during a run of {state.scope}" if state.running is not None else "")
                    return self._hold(held, key, req, scope, own, run, stop)
                if own_message:
                    # The bus gave our message back while its holder's Lease still runs: the
                    # holder died or lost its broker connection. Wait for release or expiry.
                    if stop.wait(opts.poll):
                        raise ShuttingDown("worker shutting down; handing the request back")
                    continue
                if state.satisfied(scope, requested_at, sha, opts.skew):
                    return "satisfied"
                if state.applying(scope, sha):
                    return "coalesced"  # the run in progress applies the very commit it names
                if covers(state.scope, scope) and (state.running is None
                                                   or state.running >= requested_at + opts.skew):
                    return "coalesced"  # the holder's run starts (or started) after this request
                if any(covers(p, scope) for p in state.pending):
                    return "coalesced"  # a follow-up is already owed; it starts after now
                state.pending.append(scope)
                if not state.pending_by:
                    state.pending_by = {"id": req.id, "delivery": str(req.origin.get("delivery", "")),
                                        "reason": req.reason}
                marked = replace(record, annotations=state.store(dict(record.annotations)))
                if store.replace(key, marked) is not None:
                    return "coalesced"
                # The Lease changed since we read it (renewed, released, another mark): again.
        except LockUnavailable as exc:
            raise RetryLater(f"cannot coordinate with other workers: {exc}") from None

    def _hold(self, held: Held, key: LockKey, req: ReconcileRequest, scope: str, own: bool,
              run: Callable[[ReconcileRequest], RunResult], stop: threading.Event) -> str:
        opts = self.options
        where = f"{key[0]}/{key[1]}"
        held.start_renewing()
        runs = 0
        current: str | None = None  # scope of the run in progress, if any
        started = 0.0
        ended: RunResult | None = None  # a run that ended asking for a retry
        try:
            while True:
                state = State.load(held.record.annotations)
                if not own and not state.pending:
                    def idle(annotations: dict[str, str]) -> bool:
                        st = State.load(annotations)
                        if st.pending:
                            return False  # a follow-up was marked meanwhile: keep the Lease
                        st.request, st.scope, st.running = "", "", None
                        st.store(annotations)
                        return True

                    if held.update(idle):
                        return f"ran {runs}"
                    continue
                if state.last_start is not None and opts.window > 0:
                    delay = state.last_start + opts.window - self.clock()
                    if delay > 0:
                        if stop.wait(delay):
                            raise ShuttingDown("worker shutting down; handing the request back")
                        continue
                if stop.is_set():
                    raise ShuttingDown("worker shutting down; handing the request back")

                started = self.clock()
                chosen: dict[str, Any] = {}

                def start(annotations: dict[str, str], own: bool = own, started: float = started,
                          chosen: dict[str, Any] = chosen) -> bool:
                    st = State.load(annotations)
                    run_scope = merge(([scope] if own else []) + st.pending)
                    chosen["scope"], chosen["by"] = run_scope, dict(st.pending_by)
                    st.running, st.scope, st.last_start, st.revision = started, run_scope, started, ""
                    st.pending = [p for p in st.pending if not covers(run_scope, p)]
                    if not st.pending:
                        st.pending_by = {}
                    st.store(annotations)
                    return False

                held.update(start)
                current = chosen["scope"]
                if own and current == scope:
                    run_req = req
                else:
                    run_req = self._follow_up(key, current, chosen["by"], req)
                own = False
                runs += 1
                if runs > 1 or run_req is not req:
                    log.info("GitRepository %s: running %s for requests that came in meanwhile",
                             where, "the repository" if current == REPO_SCOPE else f"Kustomization {current}")
                self._local.held = held
                try:
                    outcome = run(run_req)
                finally:
                    self._local.held = None
                if held.lost:
                    raise RetryLater(f"lost the Lease of GitRepository {where} during the run; trying again")
                if outcome.retry:
                    ended = outcome
                    raise RetryLater(outcome.retry, outcome.retry_after)

                def finished(annotations: dict[str, str], run_scope: str = current, started: float = started,
                             result: RunResult = outcome) -> bool:
                    st = State.load(annotations)
                    st.record(run_scope, started, result.revision, result)
                    st.running, st.scope, st.revision = None, "", ""
                    if st.pending:
                        st.store(annotations)
                        return False
                    st.request = ""
                    st.store(annotations)
                    return True

                released = held.update(finished)
                current = None
                if released:
                    return f"ran {runs}"
        except LeaseLost as exc:
            raise RetryLater(f"{exc}; trying again") from None
        except LockUnavailable as exc:
            self._give_back(held, current)
            raise RetryLater(f"cannot coordinate with other workers: {exc}") from None
        except BaseException:
            self._give_back(held, current, None if ended is None or current is None else (current, started, ended))
            raise
        finally:
            held.stop_renewing()

    @staticmethod
    def _give_back(held: Held, interrupted: str | None,
                   ended: tuple[str, float, RunResult] | None = None) -> None:
        """Release the Lease, keeping what is owed: pending scopes and an unfinished run (or
        one that failed and is retried: `ended` is its scope, start and result)."""

        def owe(annotations: dict[str, str]) -> None:
            st = State.load(annotations)
            if interrupted is not None and interrupted not in st.pending:
                st.pending.append(interrupted)
            if ended is not None:
                run_scope, at, result = ended
                st.record(run_scope, at, result.revision, result)
            st.request, st.scope, st.running, st.revision = "", "", None, ""
            st.store(annotations)

        held.release(owe)

    @staticmethod
    def _follow_up(key: LockKey, run_scope: str, by: dict[str, str], req: ReconcileRequest) -> ReconcileRequest:
        """The request a coalesced run stands for (traced to the first request that asked)."""
        origin: dict[str, Any] = {"coalesced": True}
        if by.get("delivery"):
            origin["delivery"] = by["delivery"]
        if by.get("id"):
            origin["request"] = by["id"]
        if run_scope == REPO_SCOPE:
            kind, namespace, name = "GitRepository", key[0], key[1]
        else:
            kind = "Kustomization"
            namespace, _, name = run_scope.partition("/")
        return ReconcileRequest(kind=kind, name=name, namespace=namespace, reason="coalesced", origin=origin,
                                id=by.get("id") or req.id or str(uuid.uuid4()))
