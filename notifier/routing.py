"""Which Alerts an event reaches: Flux's matching rules as pure functions.

Kept free of I/O so every rule is tested on plain data: severity, event sources (kind exact,
name or "*" with matchLabels, namespace defaulting to the Alert's), inclusion and exclusion
lists (regular expressions searched in the message, exclusion wins), and suspend.

Beyond Flux: an event source's `namespace: "*"` matches every namespace (fluxcd/flux2's
oldest open request), so one Alert can watch a whole cluster.

Regular expressions are compiled once per pattern (`re`'s cache holds only 512, and 100
Alerts easily exceed it) and were checked when the configuration was loaded, so an invalid
one is a `herald validate` error rather than a silently skipped Alert.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable

from herald.messages import SEVERITY_ERROR, SEVERITY_INFO, Event
from herald.model import Alert, EventSource

LabelLookup = Callable[[str, str, str], dict[str, str]]
"""(kind, namespace, name) → the labels of that object in the configuration."""


def _no_labels(kind: str, namespace: str, name: str) -> dict[str, str]:
    return {}


def source_matches(src: EventSource, alert: Alert, event: Event, labels: LabelLookup = _no_labels) -> bool:
    obj = event.involvedObject
    if src.kind != obj.get("kind"):
        return False
    namespace = src.namespace or alert.meta.namespace
    if namespace != "*" and namespace != obj.get("namespace", "default"):
        return False
    if src.name == "*":
        if not src.match_labels:
            return True
        have = labels(obj.get("kind", ""), obj.get("namespace", "default"), obj.get("name", ""))
        return all(have.get(k) == v for k, v in src.match_labels.items())
    return src.name == obj.get("name")


def alert_matches(alert: Alert, event: Event, labels: LabelLookup = _no_labels) -> bool:
    if alert.suspend:
        return False
    if alert.event_severity == SEVERITY_ERROR and event.severity != SEVERITY_ERROR:
        return False  # an "info" Alert takes every severity, as in Flux
    if event.severity not in (SEVERITY_INFO, SEVERITY_ERROR):
        return False
    if not any(source_matches(s, alert, event, labels) for s in alert.event_sources):
        return False
    if alert.inclusion_list and not any(_compiled(p).search(event.message) for p in alert.inclusion_list):
        return False
    if any(_compiled(p).search(event.message) for p in alert.exclusion_list):
        return False
    return True


@functools.lru_cache(maxsize=4096)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def wants(kind: str, event: Event) -> bool:
    """Whether a provider of this kind takes this event at all, before any Alert rule.

    `kind` is "commit-status" (github, gitlab, …), "threaded" (can update what it posted:
    Slack with a token; machines: generic webhooks) or "message" (email, Teams, Discord).

    A commit status is a verdict on a commit, so commit-status providers take only the events
    the reconciler marks `commit_status: update` (a reconcile's outcome) and `Progressing`
    (shown as pending): a dependency still waiting must not paint a pull request red.
    `Progressing` says "starting"; a provider that can only add messages would post it as a
    second message per push, so it goes only to those that can update or that are machines.
    """
    progressing = event.reason in ("Progressing", "ProgressingWithRetry")
    if kind == "message":
        return not progressing
    if kind != "commit-status" or progressing:
        return True
    # Flux's controllers prefix their metadata keys with their API group
    # (`kustomize.toolkit.fluxcd.io/commit_status`); events forwarded from Flux keep them.
    return any(k.rsplit("/", 1)[-1] == "commit_status" and v == "update" for k, v in event.metadata.items()) or any(
        k.rsplit("/", 1)[-1] == "commit" for k in event.metadata)


def route(alerts: list[Alert], event: Event, labels: LabelLookup = _no_labels) -> list[Alert]:
    return [a for a in alerts if alert_matches(a, event, labels)]


def with_alert_metadata(alert: Alert, event: Event) -> Event:
    """The event as the Alert's providers see it: the Alert's eventMetadata (and legacy
    `summary`) added, without overriding what the event itself says."""
    extra = dict(alert.event_metadata)
    if alert.summary:
        extra.setdefault("summary", alert.summary)
    if not extra:
        return event
    merged = {**extra, **event.metadata}
    return Event(**{**event.__dict__, "metadata": merged})
