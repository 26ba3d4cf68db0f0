"""The pull-request comment of a plan: one per pull request, rewritten as each Kustomization's
plan of the newest head arrives.

The reconciler sends one final plan event per Kustomization (reconciler.plans); the comment
shows them all. So the notifier keeps, per pull request and Provider, the head being shown and
the sections received for it (in the notifier's shared memory, under a hold, so that two
notifier replicas never write the comment from different partial sets), and rewrites the one
comment (`herald.forges`: found again by its hidden marker, edited in place, cut to the host's
limit) from all of them:

- a plan of a newer head (later `planRequestedAt`) replaces every section of the older one;
- a plan of an older head that arrives late (a slow fetch) is not shown: the newer push owns
  the comment.

It runs after the commit status was posted (notifier.worker), so the check is final before the
comment is written: a comment that fails is retried with its notification, never leaving a
check pending.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from herald.forges import client as forge_client
from herald.forges.plan_comment import HTML_FORGES, PlanSection, comment, without_html
from herald.model import Provider
from notifier.providers.base import DeliveryError, Memory
from notifier.providers.commitstatus import commit_sha, is_plan_event

log = logging.getLogger("herald.notifier.plans")

FINAL_REASONS = frozenset({"PlanSucceeded", "PlanFailed"})
HOLD_SECONDS = 60.0


def wants_comment(event_reason: str, metadata: Mapping[str, str]) -> bool:
    return metadata.get("plan") == "true" and event_reason in FINAL_REASONS and bool(metadata.get("pullRequest"))


def section_of(event_metadata: Mapping[str, str], target: str) -> dict[str, Any]:
    counts: dict[str, int] = {}
    try:
        loaded = json.loads(event_metadata.get("planCounts") or "{}")
        counts = {str(k): int(v) for k, v in loaded.items()} if isinstance(loaded, dict) else {}
    except (ValueError, TypeError):
        counts = {}
    error = event_metadata.get("planError", "")
    return {"target": target, "counts": counts, "markdown": event_metadata.get("planSection", ""),
            "error": error if error or event_metadata.get("planSection") else "no plan in the event"}


def post(provider: Provider, provider_key: str, secret: Mapping[str, str], note: Any,
         make_client: Callable[..., Any] = forge_client) -> None:
    """Rewrite the plan comment of the note's pull request with the note's section.
    DeliveryError (retryable or not) when the forge or the memory fails."""
    event = note.event
    meta = event.metadata
    if not (is_plan_event(event) and wants_comment(event.reason, meta)):
        return
    try:
        pr = int(meta["pullRequest"])
    except ValueError:
        raise DeliveryError(f"plan event: pullRequest {meta['pullRequest']!r} is not a number", retryable=False) from None
    head = commit_sha(meta) or ""
    requested = meta.get("planRequestedAt", "")
    obj = event.involvedObject
    target = f"{obj.get('namespace', '')}/{obj.get('name', '')}"
    memory: Memory = note.memory
    key = f"plan-comment/{provider_key}/{pr}"
    try:
        with memory.hold(key, HOLD_SECONDS):
            state = _load(memory.get(key))
            if state.get("head") != head:
                if state.get("requestedAt", "") > requested:
                    log.info("%s: PR #%s: the plan of %s is older than the one shown (%s); comment left alone",
                             provider_key, pr, head[:12], str(state.get("head", ""))[:12])
                    return
                state = {"head": head, "requestedAt": requested, "sections": {}}
            state["sections"][target] = section_of(meta, target)
            sections = [PlanSection(s["target"], s["counts"], s["markdown"], s["error"])
                        for _, s in sorted(state["sections"].items())]
            body = comment(sections, head)
            if provider.type not in HTML_FORGES:
                body = without_html(body)
            ref = make_client(provider, secret).upsert_comment(pr, body)
            memory.put(key, json.dumps(state, separators=(",", ":")))
            log.info("%s: PR #%s: plan comment %s %s (%d Kustomization(s) of %s)", provider_key, pr,
                     getattr(ref, "id", "?"), "created" if getattr(ref, "created", False) else "updated",
                     len(sections), head[:12])
    except TimeoutError:
        raise DeliveryError(f"PR #{pr}: another delivery is writing its plan comment; will retry",
                            retryable=True) from None


def _load(text: str | None) -> dict[str, Any]:
    try:
        state = json.loads(text) if text else {}
    except ValueError:
        return {}
    if not isinstance(state, dict) or not isinstance(state.get("sections"), dict):
        return {}
    return state
