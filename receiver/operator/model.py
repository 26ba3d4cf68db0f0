"""What the operator API and the status page show, built from the configuration and the history.

Pure functions: the configuration (what exists, what is suspended) and the history's records
(`herald.history`: what happened) in, plain dicts out, the same for `herald get` (JSON) and for
the pages (templates). Nothing here reads a secret: rows carry names, kinds, revisions and
the words of events, never a Secret's value, a Provider's address (a Slack or Discord URL may
be its own credential) or a Receiver's URL (for token-only types the URL is the credential).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from herald.config import Config

# `herald get <group>`: the kinds each group lists (as `flux get` groups them).
GROUPS: dict[str, tuple[str, ...]] = {
    "kustomizations": ("Kustomization",),
    "sources": ("GitRepository", "OCIRepository"),
    "receivers": ("Receiver",),
    "providers": ("Provider",),
    "alerts": ("Alert",),
    "images": ("ImageRepository", "ImagePolicy", "ImageUpdateAutomation"),
}
ALIASES = {"ks": "kustomizations", "kustomization": "kustomizations", "source": "sources",
           "receiver": "receivers", "provider": "providers", "alert": "alerts", "image": "images",
           "git": "sources", "gitrepository": "sources", "gitrepositories": "sources", "ocirepository": "sources"}
# The kinds `reconcile`, `suspend` and `resume` take, by the words the flux CLI uses.
KIND_WORDS = {
    "kustomization": "Kustomization", "ks": "Kustomization",
    "source git": "GitRepository", "gitrepository": "GitRepository",
    "source oci": "OCIRepository", "ocirepository": "OCIRepository",
    "receiver": "Receiver", "alert": "Alert", "provider": "Provider",
    "image repository": "ImageRepository", "imagerepository": "ImageRepository",
    "image update": "ImageUpdateAutomation", "imageupdateautomation": "ImageUpdateAutomation",
}
RECONCILABLE = ("Kustomization", "GitRepository", "OCIRepository", "ImageRepository")


@dataclass(frozen=True)
class Records:
    """The history's records one answer is built from (newest first, as History.all gives them)."""

    status: list[dict[str, Any]]
    runs: list[dict[str, Any]]
    events: list[dict[str, Any]]


def ref(kind: str, namespace: str, name: str) -> str:
    return f"{kind}/{namespace}/{name}"


def _first_line(text: str, limit: int = 200) -> str:
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def rows(cfg: Config, group: str, records: Records, operator: dict[tuple[str, str, str], dict[str, Any]],
         namespace: str | None = None) -> list[dict[str, Any]]:
    """One row per object of `group` (GROUPS), failing ones first, then by namespace and name."""
    status = {ref(r.get("kind", ""), r.get("namespace", ""), r.get("name", "")): r for r in records.status}
    last_event: dict[str, dict[str, Any]] = {}
    for e in records.events:  # newest first: the first seen is the latest
        last_event.setdefault(ref(e.get("kind", ""), e.get("namespace", ""), e.get("name", "")), e)
    running = _running(records.runs)
    out = []
    for kind in GROUPS[group]:
        for (ns, name), obj in cfg.by_kind(kind).items():
            if namespace is not None and ns != namespace:
                continue
            out.append(row(kind, obj, status.get(ref(kind, ns, name)), last_event.get(ref(kind, ns, name)),
                           running.get(ref(kind, ns, name)), operator.get((kind, ns, name)),
                           own_suspend(cfg, kind, obj)))
    out.sort(key=lambda r: (r["ready"] != "False", r["kind"], r["namespace"], r["name"]))
    return out


STALE_RUN = 3600.0
"""A run recorded as running this long ago is not shown as one: its worker died without saying
(SIGKILL); the request went back to the bus and another run reports it."""


def _running(runs: Iterable[dict[str, Any]], now: float | None = None) -> dict[str, dict[str, Any]]:
    """The run in progress of each object (its newest run, when that one is still running)."""
    newest: dict[str, dict[str, Any]] = {}
    for run in runs:
        for target in [*run.get("kustomizations", []), run.get("source", "")]:
            if target:
                newest.setdefault(target, run)
    oldest = (time.time() if now is None else now) - STALE_RUN
    return {t: r for t, r in newest.items() if r.get("state") == "running" and (r.get("at") or 0) > oldest}


def row(kind: str, obj: Any, status: dict[str, Any] | None, event: dict[str, Any] | None,
        running: dict[str, Any] | None, operator: dict[str, Any] | None, own_suspend: bool = False) -> dict[str, Any]:
    """One object's line: its latest state from its status record, else from its latest event.
    `own_suspend`: the configuration itself says `suspend: true` (`operator`: an operator did)."""
    ns, name = obj.meta.namespace, obj.meta.name
    suspended_by = "configuration" if own_suspend else ("operator" if operator else "")
    r: dict[str, Any] = {"kind": kind, "namespace": ns, "name": name, "suspended": bool(suspended_by),
                         "suspendedBy": suspended_by, "ready": "Unknown", "reason": "", "message": "",
                         "revision": "", "lastAppliedRevision": "", "lastRunAt": None, "lastRun": "",
                         "progressing": running is not None, "inventory": None, "duration": None}
    if operator:
        r["suspendedAt"] = operator.get("at")
    if status is not None:
        r.update(ready="True" if status.get("ready") else "False", reason=status.get("reason", ""),
                 message=status.get("message", ""), revision=status.get("revision", ""),
                 lastAppliedRevision=status.get("lastAppliedRevision", ""),
                 lastRunAt=status.get("lastRunAt") or status.get("at"), lastRun=status.get("lastRun", ""),
                 duration=status.get("duration"), inventory=status.get("inventory"))
    elif event is not None:
        ready = ("False" if event.get("severity") == "error" else
                 "Unknown" if event.get("reason") in ("Progressing", "DependencyNotReady") else "True")
        r.update(ready=ready, reason=event.get("reason", ""),
                 message=event.get("message", ""), revision=event.get("revision", ""),
                 lastAppliedRevision=event.get("revision", "") if event.get("reason") == "ReconciliationSucceeded"
                 else "", lastRunAt=event.get("at"))
    if running is not None:
        r["runningSince"] = running.get("at")
    r["summary"] = _first_line(r["message"])
    r.update(_details(kind, obj))
    return r


def own_suspend(cfg: Config, kind: str, obj: Any) -> bool:
    """Whether the configuration itself suspends `obj` (herald.suspensions' overlay sets
    `suspend` for an operator's suspension too; that one alone does not count)."""
    return bool(obj.suspend) and (kind, obj.meta.namespace, obj.meta.name) not in cfg.operator_suspended


def _details(kind: str, obj: Any) -> dict[str, Any]:
    """The kind's own columns (what `flux get` shows besides ready and message)."""
    if kind == "Kustomization":
        src = obj.source_ref
        return {"source": ref(src.kind, src.namespace or obj.meta.namespace, src.name), "path": obj.path,
                "interval": obj.interval, "prune": obj.prune}
    if kind == "GitRepository":
        gr = obj.ref
        return {"url": _safe_url(obj.url), "ref": gr.name or gr.commit or gr.tag or gr.semver or gr.branch,
                "interval": obj.interval}
    if kind == "OCIRepository":
        return {"url": _safe_url(obj.url), "interval": obj.interval}
    if kind == "Receiver":
        return {"type": obj.type, "events": list(obj.events)}
    if kind == "Provider":
        return {"type": obj.type, "channel": obj.channel}
    if kind == "Alert":
        return {"provider": obj.provider_ref, "eventSeverity": obj.event_severity,
                "eventSources": [f"{s.kind}/{s.name}" for s in obj.event_sources]}
    if kind == "ImageRepository":
        return {"image": obj.image}
    if kind == "ImageUpdateAutomation":
        return {"sourceRef": getattr(getattr(obj, "source_ref", None), "name", "")}
    return {}


def _safe_url(url: str) -> str:
    """A URL without its user info (`https://user:token@host/…` carries a credential)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url.rpartition("@")[2] if "@" in url.split(":", 1)[0] else url
    host, slash, path = rest.partition("/")
    return f"{scheme}://{host.rpartition('@')[2]}{slash}{path}"


def runs_of(target: str, runs: Iterable[dict[str, Any]], limit: int = 50) -> list[dict[str, Any]]:
    """A Kustomization's (or source's) runs, newest first, each with this object's own outcome."""
    out = []
    for run in runs:
        if target not in run.get("kustomizations", []) and run.get("source") != target:
            continue
        mine = next((o for o in run.get("objects", []) if ref(o.get("kind", ""), o.get("namespace", ""),
                                                              o.get("name", "")) == target), None)
        out.append({**run, "outcome": mine})
        if len(out) >= limit:
            break
    return out


def events_for(events: Iterable[dict[str, Any]], for_: str = "", namespace: str | None = None,
               limit: int = 100) -> list[dict[str, Any]]:
    """`--for Kind/NAME` (or Kind/NAMESPACE/NAME), newest first."""
    kind, name, ns = "", "", namespace
    if for_:
        parts = for_.split("/")
        kind = parts[0]
        if len(parts) == 2:
            name = parts[1]
        elif len(parts) >= 3:
            ns, name = parts[1], "/".join(parts[2:])
    out = []
    for e in events:
        if kind and e.get("kind", "").lower() != kind.lower():
            continue
        if name and e.get("name") != name:
            continue
        if ns is not None and e.get("namespace") != ns:
            continue
        out.append(e)
        if len(out) >= limit:
            break
    return out


def trace(delivery: str, *, deliveries: list[dict[str, Any]], requests: list[dict[str, Any]],
          runs: list[dict[str, Any]], events: list[dict[str, Any]], notifications: list[dict[str, Any]],
          plans: list[dict[str, Any]], images: list[dict[str, Any]]) -> dict[str, Any]:
    """One delivery's path: the webhook → the requests it queued → each run with its outcome →
    each notification (provider, attempts, state) → the commit statuses among them, oldest first.

    A request coalesced into another's run is followed to that run: the first run of its
    target that started after the request was taken."""
    def mine(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return sorted((r for r in records if r.get("delivery") == delivery), key=lambda r: r.get("at") or 0)

    hooks = mine(deliveries)
    reqs = mine(requests)
    own_runs = mine(runs)
    ids = {r.get("id") for r in own_runs}
    covering = []
    for q in reqs:
        if q.get("result") in ("coalesced", "satisfied"):
            run = _covering_run([r for r in runs if _same_target(r, q)], q.get("at") or 0, q.get("revision") or "")
            if run is not None and run.get("id") not in ids:
                ids.add(run.get("id"))
                covering.append({**run, "coveredRequest": q.get("id"), "covered": q.get("result")})
    # Requests the receiver queued but no worker has taken yet.
    taken = {q.get("id") for q in reqs}
    queued = [{"id": p.get("id"), "queue": p.get("queue"), "target": p.get("target"), "result": "queued"}
              for h in hooks for p in h.get("requests", []) if p.get("id") not in taken]
    # What a covering run announced belongs to this delivery's story too: the events and
    # notifications carry the id of the request that run was for.
    borrowed = {r.get("request") for r in covering}

    def ours(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return sorted((r for r in records if r.get("delivery") == delivery or
                       (borrowed and r.get("request") in borrowed)), key=lambda r: r.get("at") or 0)

    told = ours(notifications)
    return {"delivery": delivery, "webhooks": hooks, "requests": reqs + queued,
            "runs": sorted(own_runs + covering, key=lambda r: r.get("at") or 0), "events": ours(events),
            "notifications": told, "commitStatuses": [n for n in told if n.get("commitStatus")],
            "plans": mine(plans), "images": mine(images)}


def _same_target(run: dict[str, Any], req: dict[str, Any]) -> bool:
    return req.get("target", "") in (run.get("target"), run.get("source"), *run.get("kustomizations", []))


def _covering_run(runs: list[dict[str, Any]], at: float, revision: str = "") -> dict[str, Any] | None:
    """The run that was under way when the request was taken, if it applies what the request
    names, else the first one that started after it (the follow-up).

    An under-way run of another revision did not cover the request: a push during the run of
    an older commit gets a follow-up run of its own. A run's revision is known once it ends,
    so until then the run under way stands in for it."""
    for run in runs:
        start, end = run.get("at") or 0, run.get("finished")
        if start <= at and (end is None or end >= at):
            if revision and run.get("revision") and run.get("revision") != revision:
                continue
            return run
    later = [r for r in runs if (r.get("at") or 0) >= at]
    return min(later, key=lambda r: r.get("at") or 0) if later else None
