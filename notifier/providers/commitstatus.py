"""What a commit status says, decided once for every forge: which commit, which state, which
context, which description, and whether the forge already shows exactly that.

Everything here is a pure function of the event (and of what a forge answered), so the five
forge modules only differ in URLs, field names and auth, and so these rules are tested without
a server. They follow Flux's notification-controller, so that statuses look the same after a
move from Flux to Herald:

- Which events. As Flux routes them to commit-status providers: events that carry
  `commit_status: update` (Herald's reconciler sets it on every result event, not on waits
  such as DependencyNotReady) or a `commit` key (Flux's `event.toolkit.fluxcd.io/commit`, which
  an Alert's `eventMetadata` may set); and, as `notifier.routing.wants` lets them through,
  Progressing events (shown as pending). Keys may carry Flux's group prefix
  (`kustomize.toolkit.fluxcd.io/commit_status`). Other events are skipped: a "DependencyNotReady"
  info event must not turn a commit green. The router filters the same way; this check keeps a
  provider called directly (a test, a one-shot tool) from painting a commit by mistake.
- Which commit. The first of the metadata keys `commit`, `originRevision`, `revision` (Flux's
  `GetRevision` order) that carries a 40-hex SHA-1, taken after the last `:` of values such as
  `main@sha1:<40 hex>` (or after the last `/` of Flux's older `main/<40 hex>`). None: the event
  is skipped (an OCI digest or a tag names no commit).
- Which state. `Progressing` and `ProgressingWithRetry` are pending (Flux does this for Gitea
  and skips them elsewhere; a pending status is never mistaken for a result, so Herald posts it
  everywhere), otherwise info is success and error is failure. Each forge maps these three to
  its own words.
- Which context. `<kind>/<name>` lowercased, as Flux's `formatNameAndDescription` builds it,
  with `/<cluster>` appended when the event metadata has `clusterName` (Flux's documented
  convention: `commitStatusExpr` examples use `event.metadata.clusterName`, set through the
  Alert's `eventMetadata`) or `cluster`. Several clusters reporting on one commit then keep one
  status each instead of overwriting one another. Flux's default also appends the Provider's
  UID; Herald's Providers have none, so without a cluster name the context is `kind/name`.
- Which description. The reason split on camel case and lowercased, as Flux writes it:
  `HealthCheckFailed` → `health check failed`.
- Limits. Context and description are cut to the forge's limits (`Limits`); a cut context
  keeps a hash of the whole so two long contexts never collapse into one.
- Dedupe. A status identical (state, description, and name where the forge has one) to the
  newest one for the same context is not posted again: redelivered events and unchanged
  reconciles would otherwise add a row to the commit's history each time.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol, TypeVar

from herald.forges.address import Repository, repository  # noqa: F401 (shared with herald.forges)
from herald.messages import SEVERITY_ERROR, SEVERITY_INFO, Event
from notifier.providers.base import DeliveryError

COMMIT_KEYS = ("commit", "originRevision", "revision")
"""Where the commit is looked up, in Flux's order (its `Event.GetRevision`)."""
CLUSTER_KEYS = ("clusterName", "cluster")
"""Event metadata naming the cluster, usually set by the Alert's `eventMetadata`."""
COMMIT_STATUS_KEY = "commit_status"
COMMIT_STATUS_UPDATE = "update"
PENDING_REASONS = frozenset({"Progressing", "ProgressingWithRetry"})
"""Flux's `meta.ProgressingReason` and `meta.ProgressingWithRetryReason`."""

_SHA1 = re.compile(r"[0-9a-f]{40}")

T = TypeVar("T")


class State(StrEnum):
    """The three things a status can say; each forge spells them its own way."""

    PENDING = "pending"
    SUCCESS = "success"
    FAILURE = "failure"


@dataclass(frozen=True)
class Limits:
    """The longest context and description a forge accepts (characters)."""

    context: int = 255
    description: int = 255


@dataclass(frozen=True)
class Status:
    """The status to post: on which commit, saying what, under which context."""

    sha: str
    state: State
    context: str
    description: str


@dataclass(frozen=True)
class Skip:
    """Why no status is posted for an event (for the log line)."""

    reason: str


@dataclass(frozen=True)
class Posted:
    """A status as a forge shows it, in the forge's own words: what dedupe compares."""

    state: str
    description: str
    name: str = ""


PLAN_KEY = "plan"
"""Set ("true") on the events of a pull-request plan (reconciler.plans)."""
PLAN_CONTEXT = "herald/plan: "


def is_plan_event(event: Event) -> bool:
    return event.metadata.get(PLAN_KEY) == "true"


def plan(event: Event, limits: Limits) -> Status | Skip:
    """The status an event asks for, or why it asks for none.

    A pull-request plan's events get the context `herald/plan: <namespace>/<name>` (with
    ` (<cluster>)` when the event names one), apart from the reconcile's own statuses on the
    same commit, and the plan's summary as the description ("2 to create, 1 to update, 0 to
    delete", "no changes", "plan failed: ...")."""
    if not is_commit_status_event(event):
        return Skip("not a commit status event (no `commit_status: update`, no `commit` key, not Progressing)")
    sha = commit_sha(event.metadata)
    if sha is None:
        shown = ", ".join(f"{k}={v!r}" for k in COMMIT_KEYS if (v := metadata_value(event.metadata, k)))
        return Skip(f"no 40-hex commit SHA in {'/'.join(COMMIT_KEYS)}" + (f" ({shown})" if shown else ""))
    state = state_of(event)
    if state is None:
        return Skip(f"severity {event.severity!r} has no commit state")
    if is_plan_event(event):
        description = "planning" if state is State.PENDING else event.metadata.get("planSummary", "")
        return Status(sha=sha, state=state, context=clip_context(plan_context_of(event), limits.context),
                      description=clip(description or description_of(event.reason), limits.description))
    return Status(
        sha=sha,
        state=state,
        context=clip_context(context_of(event), limits.context),
        description=clip(description_of(event.reason), limits.description),
    )


def metadata_value(metadata: Mapping[str, str], key: str) -> str:
    """A metadata value by its plain key or with a Flux group prefix (`<group>/<key>`)."""
    if metadata.get(key):
        return metadata[key]
    suffix = "/" + key
    return next((v for k, v in sorted(metadata.items()) if k.endswith(suffix) and v), "")


def is_commit_status_event(event: Event) -> bool:
    return (
        metadata_value(event.metadata, COMMIT_STATUS_KEY) == COMMIT_STATUS_UPDATE
        or bool(metadata_value(event.metadata, "commit"))
        or event.reason in PENDING_REASONS
    )


def commit_sha(metadata: Mapping[str, str]) -> str | None:
    """The first 40-hex SHA-1 among `commit`, `originRevision`, `revision` (after the last `:`,
    then the last `/`)."""
    for key in COMMIT_KEYS:
        candidate = metadata_value(metadata, key).rpartition(":")[2].rpartition("/")[2].strip().lower()
        if _SHA1.fullmatch(candidate):
            return candidate
    return None


def state_of(event: Event) -> State | None:
    if event.reason in PENDING_REASONS:
        return State.PENDING
    if event.severity == SEVERITY_INFO:
        return State.SUCCESS
    if event.severity == SEVERITY_ERROR:
        return State.FAILURE
    return None


def context_of(event: Event) -> str:
    """`kind/name`, plus `/cluster` when the event names one; lowercased as Flux's."""
    obj = event.involvedObject
    parts = [obj.get("kind", ""), obj.get("name", "")]
    cluster = next((c for key in CLUSTER_KEYS if (c := metadata_value(event.metadata, key).strip())), "")
    if cluster:
        parts.append(cluster)
    return "/".join(parts).lower()


def plan_context_of(event: Event) -> str:
    """`herald/plan: <namespace>/<name>`, plus ` (<cluster>)` when the event names one."""
    obj = event.involvedObject
    context = f"{PLAN_CONTEXT}{obj.get('namespace', '')}/{obj.get('name', '')}"
    cluster = next((c for key in CLUSTER_KEYS if (c := metadata_value(event.metadata, key).strip())), "")
    return f"{context} ({cluster})" if cluster else context


def description_of(reason: str) -> str:
    """Flux's description: the reason's camel-case words, lowercased."""
    return " ".join(split_camel_case(reason)).lower()


def split_camel_case(text: str) -> list[str]:
    """Words of a camel-case string: runs of one character class (lower, upper, digit, other),
    with an upper-case run's last letter moved to the lower-case run that follows it, so that
    `PDFLoader` is `PDF`, `Loader` and `ReconciliationSucceeded` is `Reconciliation`, `Succeeded`."""
    runs: list[str] = []
    last = None
    for ch in text:
        kind = _char_class(ch)
        if runs and kind == last:
            runs[-1] += ch
        else:
            runs.append(ch)
        last = kind
    for i in range(len(runs) - 1):
        if runs[i][:1].isupper() and runs[i + 1][:1].islower():
            runs[i], runs[i + 1] = runs[i][:-1], runs[i][-1] + runs[i + 1]
    return [run for run in runs if run]


def _char_class(ch: str) -> int:
    if ch.islower():
        return 1
    if ch.isupper():
        return 2
    if unicodedata.category(ch) == "Nd":
        return 3
    return 4


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def clip_context(context: str, limit: int) -> str:
    """A context within `limit`; a cut one ends in a hash of the whole, so it stays unique."""
    if len(context) <= limit:
        return context
    return context[: limit - 9] + "-" + hashlib.sha1(context.encode()).hexdigest()[:8]


def status_key(context: str) -> str:
    """Bitbucket's build key for a context: its SHA-1 in hex (40 characters), as Flux makes it."""
    return hashlib.sha1(context.encode()).hexdigest()


def is_duplicate(newest: Posted | None, wanted: Posted) -> bool:
    """Whether the newest status for the context already says exactly what we would post."""
    return newest is not None and newest == wanted


class _JSONAnswer(Protocol):
    def json(self) -> Any: ...


def json_answer(response: _JSONAnswer) -> Any:
    """A forge's JSON answer, or None when it is not JSON (a proxy's page, an empty 204)."""
    try:
        return response.json()
    except ValueError:
        return None


def courtesy_read(read: Callable[[], T]) -> T | None:
    """Run a dedupe read; a refused read (401, 403, 404, ...) yields None instead of an error.

    Reading the commit's statuses only spares the forge a duplicate. When the read is refused
    (a token that may post but not list, a Bitbucket 404 meaning "no status with this key"),
    the post goes ahead and gives the authoritative answer. Outages still raise: the post
    would fail the same way, and the delivery loop retries both.
    """
    try:
        return read()
    except DeliveryError as exc:
        if exc.retryable:
            raise
        return None
