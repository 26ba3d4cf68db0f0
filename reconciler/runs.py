"""Each reconcile run as the history keeps it (`herald.history`): what the operator API and the
status page show as a Kustomization's runs, and as the hop between a delivery and its
notifications on a delivery's trace.

A run is recorded when it starts (state `running`, so a page shows it while it applies) and
again when it ends, with each Kustomization's outcome taken from the final event the run
publishes: the same words Slack and the pull request get. Each Kustomization's latest state
(`status` records) is what `herald get kustomizations` lists.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from herald.history import Recorder, delivery_of, message
from herald.messages import Event, ReconcileRequest


@dataclass(frozen=True)
class Kept:
    """What a Kustomization holds after a run, as its inventory record says."""

    inventory: list[str]
    last_applied_revision: str


@dataclass
class Run:
    req: ReconcileRequest
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    started: float = field(default_factory=time.time)
    attempt: int = 1
    source: str = ""
    targets: list[str] = field(default_factory=list)

    def record(self, state: str, **more: Any) -> dict[str, Any]:
        return {"at": self.started, "id": self.id, "request": self.req.id,
                "delivery": delivery_of(self.req), "reason": self.req.reason,
                "target": f"{self.req.kind}/{self.req.namespace}/{self.req.name}", "source": self.source,
                "kustomizations": self.targets, "attempt": self.attempt, "state": state, **more}


def started(recorder: Recorder, req: ReconcileRequest, attempt: int, source: str, targets: list[str]) -> Run:
    """Recorded as `running`: the API shows a Kustomization as progressing while its newest run is."""
    run = Run(req, attempt=attempt, source=source, targets=targets)
    recorder.history.put("run", run.id, run.record("running"))
    return run


def finished(recorder: Recorder, run: Run, events: list[Event], *, revision: str, retry: str,
             last_attempt: bool, error: str = "", kept: dict[str, Kept] | None = None) -> None:
    """The run's end: `retry` non-empty when the bus tries the request again (`last_attempt`:
    it will not, the request is dead-lettered); `error` when the run itself failed to finish."""
    now = time.time()
    kept = kept or {}
    objects = []
    failed = bool(error)
    for event in events:
        obj = event.involvedObject
        if event.reason == "Progressing":  # a run's outcome holds final events; this guards the record
            continue
        ok = event.severity != "error"
        failed = failed or not ok
        objects.append({"kind": obj.get("kind", ""), "namespace": obj.get("namespace", ""),
                        "name": obj.get("name", ""), "severity": event.severity, "reason": event.reason,
                        "message": message(event.message), "revision": event.metadata.get("revision", "")})
        if obj.get("kind") == "Kustomization":
            target = f"Kustomization/{obj.get('namespace', '')}/{obj.get('name', '')}"
            holds = kept.get(target)
            recorder.status("Kustomization", obj.get("namespace", ""), obj.get("name", ""),
                            ready=ok and event.reason != "DependencyNotReady", reason=event.reason,
                            severity=event.severity, message=message(event.message),
                            revision=event.metadata.get("revision", "") or revision,
                            lastAppliedRevision=holds.last_applied_revision if holds else "",
                            inventory=holds.inventory if holds else None, lastRun=run.id, lastRunAt=run.started,
                            finishedAt=now, duration=now - run.started,
                            delivery=delivery_of(run.req))
    if error and not objects:
        for target in run.targets:
            kind, ns, name = target.split("/", 2)
            holds = kept.get(target)
            recorder.status(kind, ns, name, ready=False, reason="ReconciliationFailed", severity="error",
                            message=message(error), revision=revision,
                            lastAppliedRevision=holds.last_applied_revision if holds else "",
                            inventory=holds.inventory if holds else None,
                            lastRun=run.id, lastRunAt=run.started, finishedAt=now, duration=now - run.started,
                            delivery=delivery_of(run.req))
    _source_status(recorder, run, events, revision, now, error)
    state = ("failed" if failed else "succeeded") if not retry else ("dead-lettered" if last_attempt else "retrying")
    recorder.history.put("run", run.id, run.record(state, finished=now, duration=now - run.started,
                                                   revision=revision, objects=objects, error=message(error or retry)))


def _source_status(recorder: Recorder, run: Run, events: list[Event], revision: str, now: float,
                   error: str) -> None:
    """The source's state, as source-controller words it: the artifact stored for a revision,
    or the event that says why the fetch failed."""
    if not run.source:
        return
    kind, ns, name = run.source.split("/", 2)
    failure = next((e for e in events if e.severity == "error" and e.involvedObject.get("kind") == kind
                    and e.involvedObject.get("name") == name and e.involvedObject.get("namespace") == ns), None)
    if failure is None and not revision:
        if not error:
            return  # nothing was fetched (the source is suspended): its state has not changed
        recorder.status(kind, ns, name, ready=False, reason="ReconciliationFailed", severity="error",
                        message=message(error), revision="", lastRun=run.id, lastRunAt=run.started, finishedAt=now)
        return
    if failure is not None:
        recorder.status(kind, ns, name, ready=False, reason=failure.reason, severity="error",
                        message=message(failure.message), revision="", lastRun=run.id, lastRunAt=run.started,
                        finishedAt=now)
        return
    recorder.status(kind, ns, name, ready=True, reason="Succeeded", severity="info",
                    message=f"stored artifact for revision '{revision}'", revision=revision,
                    lastAppliedRevision=revision, lastRun=run.id, lastRunAt=run.started, finishedAt=now,
                    duration=now - run.started)


def handed_back(recorder: Recorder, run: Run, why: str) -> None:
    """A run stopped before its end (shutdown): another worker runs the request again."""
    now = time.time()
    recorder.history.put("run", run.id, run.record("handed back", finished=now, duration=now - run.started,
                                                   error=message(why)))
