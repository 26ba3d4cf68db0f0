"""Which Alerts an event reaches: Flux's matching rules as pure functions.

Kept free of I/O so every rule is tested on plain data: severity, event sources (kind exact,
name or "*" with matchLabels, namespace defaulting to the Alert's), inclusion and exclusion
lists (regular expressions searched in the message, exclusion wins), and suspend.

Beyond Flux: an event source's `namespace: "*"` matches every namespace (fluxcd/flux2's
oldest open request), so one Alert can watch a whole cluster.

Regular expressions are compiled once per pattern (`re`'s cache holds only 512, and 100
Alerts easily exceed it) and were checked when the configuration was loaded, so an invalid
one is a `herald validate` error rather than a silently skipped Alert.

Speed (bench/notifier_bench.py: 100 Alerts, ~30k events/s on one core): each event's fields,
labels and pattern results are worked out once for all Alerts (`_Match`), and a leading or
trailing `.*`, which Flux users often write and which changes nothing about whether a search
finds a match, is left out of the search (`_core`).
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
    return _Match(event, labels).source(src, alert)


def alert_matches(alert: Alert, event: Event, labels: LabelLookup = _no_labels) -> bool:
    return _Match(event, labels).alert(alert)


class _Match:
    """One event being matched against Alerts: what every Alert asks of it, worked out once.

    `route` asks the same questions of one event for every Alert, so the object's fields are read
    once, its labels looked up at most once (the lookup is a read of the configuration), and each
    pattern searched in the message at most once (Alerts often share their lists). The rules, and
    the order in which they are checked, are the ones documented above.
    """

    __slots__ = ("_found", "_labels", "_lookup", "event", "kind", "message", "name", "namespace", "severity")

    def __init__(self, event: Event, labels: LabelLookup) -> None:
        obj = event.involvedObject
        self.event = event
        self.kind = obj.get("kind")
        self.namespace = obj.get("namespace", "default")
        self.name = obj.get("name")
        self.severity = event.severity
        self.message = event.message
        self._lookup = labels
        self._labels: dict[str, str] | None = None
        self._found: dict[str, bool] = {}

    def labels(self) -> dict[str, str]:
        if self._labels is None:
            obj = self.event.involvedObject
            self._labels = self._lookup(obj.get("kind", ""), self.namespace, obj.get("name", ""))
        return self._labels

    def found(self, pattern: str) -> bool:
        hit = self._found.get(pattern)
        if hit is None:
            hit = self._found[pattern] = _searcher(pattern)(self.message) is not None
        return hit

    def source(self, src: EventSource, alert: Alert) -> bool:
        if src.kind != self.kind:
            return False
        namespace = src.namespace or alert.meta.namespace
        if namespace != "*" and namespace != self.namespace:
            return False
        if src.name == "*":
            if not src.match_labels:
                return True
            have = self.labels()
            return all(have.get(k) == v for k, v in src.match_labels.items())
        return src.name == self.name

    def alert(self, alert: Alert) -> bool:
        if alert.suspend:
            return False
        if alert.event_severity == SEVERITY_ERROR and self.severity != SEVERITY_ERROR:
            return False  # an "info" Alert takes every severity, as in Flux
        if self.severity not in (SEVERITY_INFO, SEVERITY_ERROR):
            return False
        for src in alert.event_sources:
            if self.source(src, alert):
                break
        else:
            return False
        if alert.inclusion_list:
            for p in alert.inclusion_list:
                if self.found(p):
                    break
            else:
                return False
        for p in alert.exclusion_list:
            if self.found(p):
                return False
        return True


@functools.lru_cache(maxsize=4096)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


_GLOBAL_FLAGS = re.compile(r"(?:\(\?[aiLmsux]+\))*")


def _core(pattern: str) -> str:
    """The pattern without a leading or trailing `.*`: it finds a match exactly where `pattern` does.

    Flux users write `.*succeeded.*`, and Flux's own docs show them so. For `search`, a `.*` at
    either end changes where a match starts or ends, never whether there is one (it may match
    nothing), but it costs dearly: `re` tries each start position and runs `.*` to the end of
    the line and back, 20-160 µs on a change list instead of 1. Only a greedy `.*` is removed
    (`.*?`, `.*+` and `.*{` are left), only an unescaped one at the end, and global flags such as
    `(?i)` stay in front.
    """
    flags = _GLOBAL_FLAGS.match(pattern).group()  # type: ignore[union-attr]  # matches "" at least
    core = pattern[len(flags):]
    while core.startswith(".*") and core[2:3] not in ("*", "+", "?", "{"):
        core = core[2:]
    while core.endswith(".*") and (len(core) - 2 - len(core[:-2].rstrip("\\"))) % 2 == 0:
        core = core[:-2]
    return flags + core


@functools.lru_cache(maxsize=4096)
def _searcher(pattern: str) -> Callable[[str], re.Match[str] | None]:
    """`re.compile(pattern).search`, or the same search for the pattern's `_core` when it compiles.

    An invalid pattern raises here as `re.compile` does (the configuration's validation has
    normally refused it already).
    """
    compiled = _compiled(pattern)
    core = _core(pattern)
    if core != pattern:
        try:
            return re.compile(core).search
        except re.error:
            pass
    return compiled.search


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
    """The Alerts, in their order, that take the event (each as `alert_matches` says)."""
    if event.severity not in (SEVERITY_INFO, SEVERITY_ERROR):
        return []  # no Alert takes it; the checks before this one cannot fail
    match = _Match(event, labels).alert
    return [a for a in alerts if match(a)]


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
