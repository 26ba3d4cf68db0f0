"""Pull-request plans: what applying a rendered set would change, found without writing anything.

A plan answers "what would this pull request do to the cluster?" in a commit status and a
comment. It must agree with what the reconciler would then do, so it is computed the way the
apply engine decides (`reconciler.apply`): every object is read live and server-side
dry-run (``dryRun=All``, field manager ``herald``, conflicts forced, the Kustomization's
owner labels added), created / updated / unchanged is decided by the same rule
(`reconciler.apply.drifted`), an immutable field change is a recreate only when the object
asks for it (`FORCE_KEYS`), and what prune would delete is the inventory minus the render,
less what `reconciler.prune` would leave in place.

A plan never writes: it sends GETs (discovery included) and dry-run PATCHes only, and it
takes no apply Lease, so it can run while a reconcile of the same target is applying.

What a dry-run cannot see is reported from the render instead, after checking the render
holds what makes it possible:

* an object in a Namespace the same render creates (and that does not exist yet) is a
  create: the API server would answer 404 for the missing namespace;
* a custom resource of a CRD the same render adds is a create: its kind is not served yet;
* an object the API server will not let Herald dry-run (403) is "cannot preview", not a
  failed plan: the plan's identity may be weaker than the reconciler's.

Secrets. A plan's output goes to pull-request comments, statuses, logs and events, which
are far more widely readable than Secrets. So `data` and `stringData` never leave this
module as values: each key is shown as added / removed / changed / unchanged with an HMAC
fingerprint under a key made for this plan alone (so fingerprints cannot be compared across
plans or brute-forced offline from a comment), and the
``kubectl.kubernetes.io/last-applied-configuration`` annotation, which holds a copy of the
whole object, is removed from every object. When a Secret cannot be masked (its data is not
a map of base64 strings, ...) its content is not shown at all (fail closed), and an API
server message about a Secret is withheld when it quotes one of the Secret's values.
"""

from __future__ import annotations

import base64
import binascii
import copy
import difflib
import hashlib
import hmac
import html
import re
import secrets as pysecrets
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import yaml

from reconciler.apply import FORCE_HINT, drifted, dry_run_error, is_immutable
from reconciler.inventory import (
    FORCE_KEYS,
    PRUNE_KEYS,
    Entry,
    Inventory,
    ObjectId,
    has_policy,
)
from reconciler.kube import ApiRefusal, Cluster, KindNotServed
from reconciler.order import group_of, sort_key
from reconciler.render import Manifest

__all__ = ["CANNOT_PREVIEW", "CREATE", "DELETE", "ERROR", "LAST_APPLIED", "RECREATE", "STATUS_LIMIT", "UNCHANGED",
           "UPDATE", "ObjectChange", "Plan", "SecretNotMaskable", "clean", "diff_object", "fingerprint",
           "mask_secret", "plan_kustomization", "project", "summarize"]

CREATE, UPDATE, DELETE, UNCHANGED = "create", "update", "delete", "unchanged"
RECREATE, CANNOT_PREVIEW, ERROR = "recreate", "cannot-preview", "error"
ACTIONS = (CREATE, UPDATE, DELETE, UNCHANGED, RECREATE, CANNOT_PREVIEW, ERROR)

STATUS_LIMIT = 140  # GitHub's commit status description limit, the tightest of the forges
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"

# Written by the API server or by controllers, never by a manifest: comparing them would
# show every object as changed (resourceVersion) or show what nobody can act on.
_SERVER_METADATA = ("managedFields", "resourceVersion", "uid", "generation", "creationTimestamp", "selfLink",
                    "deletionTimestamp", "deletionGracePeriodSeconds")
_SERVER_ANNOTATIONS = (LAST_APPLIED, "deployment.kubernetes.io/revision")

ADDED, REMOVED, CHANGED = "added", "removed", "changed"
_WITHHELD = "(message withheld: it may quote a value of the Secret)"
_NOT_MASKABLE = "content not shown: the Secret could not be masked"


class SecretNotMaskable(ValueError):
    """A Secret whose values could not be reduced to fingerprints; it must not be shown."""


# ---- cleaning ------------------------------------------------------------------------------


def clean(obj: dict[str, Any] | None) -> dict[str, Any] | None:
    """A copy of `obj` without what the server or controllers write (see `_SERVER_METADATA`),
    its `status`, and the last-applied annotation, so that live and desired compare on what
    a manifest can say. The last-applied annotation goes from every kind: it is a full copy
    of the object, a Secret's values included."""
    if obj is None:
        return None
    out = copy.deepcopy(obj)
    out.pop("status", None)
    meta = out.get("metadata")
    if isinstance(meta, dict):
        for key in _SERVER_METADATA:
            meta.pop(key, None)
        annotations = meta.get("annotations")
        if isinstance(annotations, dict):
            for key in _SERVER_ANNOTATIONS:
                annotations.pop(key, None)
            if not annotations:
                meta.pop("annotations", None)
    return out


# ---- Secrets -------------------------------------------------------------------------------


def is_secret(obj: dict[str, Any] | None) -> bool:
    """Any kind named Secret, whatever its group: masking one too many costs nothing."""
    return bool(obj) and obj.get("kind") == "Secret"


def _secret_values(obj: dict[str, Any] | None) -> dict[str, bytes]:
    """The Secret's values as the API server stores them: `data` (base64) with `stringData`
    merged over it, as kube-apiserver merges them. Raises `SecretNotMaskable` on anything
    else, so nothing unexpected is ever printed."""
    if obj is None:
        return {}
    out: dict[str, bytes] = {}
    data, string_data = obj.get("data"), obj.get("stringData")
    for name, section in (("data", data), ("stringData", string_data)):
        if section is not None and not isinstance(section, dict):
            raise SecretNotMaskable(f"{name} is not a map")
    for key, value in (data or {}).items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise SecretNotMaskable("data holds something that is not a string")
        try:
            out[key] = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise SecretNotMaskable(f"data[{key!r}] is not base64") from None
    for key, value in (string_data or {}).items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise SecretNotMaskable("stringData holds something that is not a string")
        out[key] = value.encode()
    return out


def fingerprint(key: bytes, value: bytes) -> str:
    """A keyed hash of one value: equal values under one plan's key look equal, nothing more."""
    return "hmac-sha256:" + hmac.new(key, value, hashlib.sha256).hexdigest()[:16]


def mask_secret(live: dict[str, Any] | None, desired: dict[str, Any] | None,
                key: bytes) -> tuple[dict[str, Any] | None, dict[str, Any] | None, dict[str, str]]:
    """Both sides of a Secret with `data`/`stringData` replaced by fingerprints under `key`,
    and each key's state (added / removed / changed / unchanged).

    The masked sides keep a `data` map of fingerprints, so that the unified diff of the two
    shows which keys changed and nothing else; `stringData` is folded into `data` (that is
    where the API server keeps it), so moving a value between the two is no change. Raises
    `SecretNotMaskable` when either side is not a well-formed Secret: the caller then shows
    nothing of it."""
    if not key:
        raise SecretNotMaskable("no fingerprint key")
    before, after = _secret_values(live), _secret_values(desired)
    states: dict[str, str] = {}
    for k in sorted(set(before) | set(after)):
        if k not in before:
            states[k] = ADDED
        elif k not in after:
            states[k] = REMOVED
        else:
            states[k] = UNCHANGED if hmac.compare_digest(before[k], after[k]) else CHANGED

    def masked(obj: dict[str, Any] | None, values: dict[str, bytes]) -> dict[str, Any] | None:
        if obj is None:
            return None
        out = {k: v for k, v in obj.items() if k not in ("data", "stringData")}
        if values:
            out["data"] = {k: fingerprint(key, v) for k, v in sorted(values.items())}
        return out

    return masked(live, before), masked(desired, after), states


def _withhold_values(message: str, *objs: dict[str, Any] | None) -> str:
    """An API server message about a Secret, unless it quotes one of the Secret's values
    (a field error's "Invalid value: ..." may), in any of the forms it could be quoted in."""
    try:
        values = [v for o in objs for v in _secret_values(o).values()]
        raw = [o for obj in objs for sec in ("data", "stringData") for o in ((obj or {}).get(sec) or {}).values()]
    except SecretNotMaskable:
        return _WITHHELD
    for v in values:
        forms = {v.decode("utf-8", "replace"), base64.b64encode(v).decode(), repr(v)}
        if any(len(f) >= 3 and f in message for f in forms):
            return _WITHHELD
    if any(isinstance(r, str) and len(r) >= 3 and r in message for r in raw):
        return _WITHHELD
    return message


# ---- one object ----------------------------------------------------------------------------


@dataclass
class ObjectChange:
    """What a plan says about one object.

    `diff` is a unified diff of the cleaned (and, for Secrets, masked) YAML of live and
    planned: all `+` lines for a create (the full content), all `-` lines for a delete, empty
    when unchanged or when nothing may be shown. `secret_keys` is a Secret's per-key state.
    `note` says why for recreate, cannot-preview and error (the API server's words)."""

    ref: str  # Kind/namespace/name, as the reconciler's events write objects
    action: str
    diff: str = ""
    note: str = ""
    secret_keys: dict[str, str] = field(default_factory=dict)
    source: str = ""  # where the manifest came from, file:line

    @property
    def changed(self) -> bool:
        return self.action in (CREATE, UPDATE, DELETE, RECREATE)

    def text(self) -> str:
        """The object's section of a plan comment: a heading line, then the diff."""
        head = f"{self.ref}: {self.action}" + (f" ({self.note})" if self.note else "")
        lines = [head]
        if self.secret_keys:
            lines.append("data keys: " + ", ".join(f"{k} {s}" for k, s in self.secret_keys.items()))
        if self.diff:
            lines.append(self.diff.rstrip("\n"))
        return "\n".join(lines)


def _yaml(obj: dict[str, Any] | None) -> list[str]:
    if obj is None:
        return []
    return yaml.safe_dump(obj, sort_keys=True, default_flow_style=False, allow_unicode=True).splitlines(keepends=True)


def unified(ref: str, before: dict[str, Any] | None, after: dict[str, Any] | None) -> str:
    """The unified diff of two cleaned objects' YAML (keys sorted, so order is no change)."""
    return "".join(difflib.unified_diff(_yaml(before), _yaml(after),
                                        fromfile="/dev/null" if before is None else f"live/{ref}",
                                        tofile="/dev/null" if after is None else f"planned/{ref}"))


def _ref(obj: dict[str, Any]) -> str:
    return ObjectId.of(obj).ref()


def diff_object(live: dict[str, Any] | None, dry_run_result: dict[str, Any] | None, *, key: bytes,
                ref: str = "", action: str = "", note: str = "", source: str = "") -> ObjectChange:
    """The change from `live` to `dry_run_result` (the API server's answer to the dry-run
    apply; the rendered object where no dry-run was possible; None for a delete).

    The action is decided as the apply engine decides it: no live object → create; no
    planned object → delete; else `drifted` (labels, annotations, anything outside metadata
    and status) → update, otherwise unchanged. `action` overrides that (recreate). Secrets
    are masked under `key`; one that cannot be masked keeps its action and shows nothing."""
    ref = ref or _ref(dry_run_result or live or {})
    if not action:
        if live is None and dry_run_result is None:
            raise ValueError("diff_object needs a live or a planned object")
        if live is None:
            action = CREATE
        elif dry_run_result is None:
            action = DELETE
        else:
            action = UPDATE if drifted(live, dry_run_result) else UNCHANGED
    before, after = clean(live), clean(dry_run_result)
    secret_keys: dict[str, str] = {}
    if is_secret(live) or is_secret(dry_run_result):
        try:
            before, after, secret_keys = mask_secret(before, after, key)
        except SecretNotMaskable:
            return ObjectChange(ref, action, "", f"{note}; {_NOT_MASKABLE}" if note else _NOT_MASKABLE, {}, source)
    diff = "" if action == UNCHANGED else unified(ref, before, after)
    return ObjectChange(ref, action, diff, note, secret_keys, source)


# ---- the whole plan ------------------------------------------------------------------------


def _cut(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1].rstrip() + "…"


def summarize(changes: Iterable[ObjectChange], limit: int = STATUS_LIMIT) -> str:
    """The commit status description: at most `limit` characters.

    "no changes" when every object is unchanged; the first failed object and its error when
    one failed (a plan that fails names what to fix); else "2 to create, 1 to update, 0 to
    delete", followed by the recreates and the objects that cannot be previewed, if any."""
    changes = list(changes)
    failed = next((c for c in changes if c.action == ERROR), None)
    if failed is not None:
        more = sum(c.action == ERROR for c in changes) - 1
        tail = f" (+{more} more)" if more else ""
        head = f"plan failed: {failed.ref}"
        room = limit - len(head) - len(tail) - 2
        if room < 10:
            return _cut(head + tail, limit)
        return head + ": " + _cut(failed.note or "failed", room) + tail
    counts = Counter(c.action for c in changes)
    if not any(counts[a] for a in (CREATE, UPDATE, DELETE, RECREATE, CANNOT_PREVIEW)):
        return "no changes"
    parts = [f"{counts[CREATE]} to create", f"{counts[UPDATE]} to update", f"{counts[DELETE]} to delete"]
    if counts[RECREATE]:
        parts.append(f"{counts[RECREATE]} to recreate")
    if counts[CANNOT_PREVIEW]:
        parts.append(f"{counts[CANNOT_PREVIEW]} cannot preview")
    return _cut(", ".join(parts), limit)


@dataclass
class Plan:
    """Every object's change, in apply order, then the deletes in prune order."""

    changes: list[ObjectChange] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return any(c.action == ERROR for c in self.changes)

    @property
    def summary(self) -> str:
        return summarize(self.changes)

    def of(self, action: str) -> list[ObjectChange]:
        return [c for c in self.changes if c.action == action]

    def body(self) -> str:
        """The plan as text for a comment: the summary, then each object that is not
        unchanged. (Unchanged objects are counted out: a comment lists what moves.)"""
        sections = [self.summary] + [c.text() for c in self.changes if c.action != UNCHANGED]
        return "\n\n".join(sections) + "\n"

    def counts(self) -> dict[str, int]:
        """Objects per action, every action named (0 when none)."""
        counted = Counter(c.action for c in self.changes)
        return {a: counted[a] for a in ACTIONS}

    def markdown(self, title: str) -> str:
        """The plan as a collapsible section of a pull-request comment: `<details>` titled
        `title` and the summary, then one `<details>` per object that is not unchanged, with
        its diff in a fenced `diff` block (full content for a create). One block, as
        `herald.forges.fit` counts blocks, so a cut comment drops whole Kustomizations."""
        out = [f"<details><summary><b>{html.escape(title)}</b>: {html.escape(self.summary)}</summary>", ""]
        moved = [c for c in self.changes if c.action != UNCHANGED]
        if not moved:
            out += ["Nothing to change.", ""]
        for c in moved:
            head = f"<code>{html.escape(c.ref)}</code>: {c.action}"
            if c.note:
                head += f" ({html.escape(c.note)})"
            out += [f"<details><summary>{head}</summary>", ""]
            if c.source:
                out += [f"From `{c.source}`.", ""]
            if c.secret_keys:
                out += ["Data keys (values never shown): "
                        + ", ".join(f"`{k}` {state}" for k, state in c.secret_keys.items()), ""]
            if c.diff:
                fence = _fence(c.diff)
                out += [f"{fence}diff", c.diff.rstrip("\n"), fence, ""]
            out += ["</details>", ""]
        out.append("</details>")
        return "\n".join(out) + "\n"


def _fence(text: str) -> str:
    """A code fence longer than any run of backticks in `text`, so content cannot close it."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


# ---- the I/O edge --------------------------------------------------------------------------


def _owned(live: dict[str, Any], owner: dict[str, str]) -> bool:
    labels = (live.get("metadata") or {}).get("labels") or {}
    return all(labels.get(k) == v for k, v in owner.items())


def _would_prune(live: dict[str, Any] | None, entry: Entry, owner: dict[str, str],
                 protected_namespaces: set[str]) -> bool:
    """`reconciler.prune.prune`'s rules for leaving a stale object in place."""
    if live is None or not _owned(live, owner) or has_policy(live, PRUNE_KEYS, "disabled"):
        return False
    oid = entry.oid
    return not (oid.kind == "Namespace" and not oid.group and oid.name in protected_namespaces)


def project(live: Any, want: Any) -> Any:
    """`live` cut down to the fields `want` sets (maps key by key; lists of the same length
    item by item, else whole): a diff against `want` then shows what the manifest changes,
    not the defaults the server filled in. Secrets and metadata are handled by the caller's
    masking and cleaning as for any object."""
    if isinstance(live, dict) and isinstance(want, dict):
        return {k: project(v, want[k]) for k, v in live.items() if k in want}
    if isinstance(live, list) and isinstance(want, list) and len(live) == len(want):
        return [project(a, b) for a, b in zip(live, want)]
    return copy.deepcopy(live)


def _refused(ref: str, exc: ApiRefusal, m: Manifest, live: dict[str, Any] | None, key: bytes) -> ObjectChange:
    """A dry-run the API server refused: cannot-preview when forbidden, else an error in the
    reconciler's words. A Secret's message is withheld when it quotes a value."""
    if exc.code == 403:
        note = exc.message
        if is_secret(m.obj):
            note = _withhold_values(note, m.obj, live)
        return ObjectChange(ref, CANNOT_PREVIEW, note=f"forbidden: {note}", source=m.source)
    if is_immutable(exc) and has_policy(m.obj, FORCE_KEYS, "enabled"):
        # No dry-run answer to diff against (the server refused it), so the manifest stands
        # for the new object, and live is cut down to the fields it sets: otherwise every
        # server default would show as removed.
        return diff_object(None if live is None else project(live, m.obj), m.obj, key=key, ref=ref,
                           action=RECREATE, note="immutable field changed", source=m.source)
    message = dry_run_error(ref, exc)
    if is_immutable(exc):
        message = f"{message}; {FORCE_HINT}"
    if is_secret(m.obj):
        message = _withhold_values(message, m.obj, live)
    return ObjectChange(ref, ERROR, note=message, source=m.source)


def plan_kustomization(cluster: Cluster, manifests: Iterable[Manifest], inventory: Inventory,
                       owner: dict[str, str], *, prune: bool = True, protected_namespaces: Iterable[str] = (),
                       key: bytes | None = None) -> Plan:
    """Plan applying `manifests` (a Kustomization's render, `targetNamespace` already set by
    `reconciler.render.render`) with owner labels `owner`, whose last inventory is
    `inventory`: read the live objects, dry-run each, and list what prune would delete when
    `prune` is on. `protected_namespaces` are the namespaces holding Herald's inventories,
    which prune never deletes. `key` is the plan's fingerprint key (a fresh random one by
    default; tests pass their own).

    Sends only GETs and dry-run applies. `ClusterUnreachable` propagates (retry the plan);
    every refusal is reported on its object."""
    key = key or pysecrets.token_bytes(32)
    protected = set(protected_namespaces)
    wanted = [Manifest(copy.deepcopy(m.obj), m.source) for m in manifests]
    for m in wanted:  # what apply sends (ApplyEngine._label)
        meta = m.obj.setdefault("metadata", {})
        meta["labels"] = {**(meta.get("labels") or {}), **owner}
    crd_kinds = {((m.obj.get("spec") or {}).get("group", ""), ((m.obj.get("spec") or {}).get("names") or {})
                  .get("kind", "")) for m in wanted if m.kind == "CustomResourceDefinition"}
    new_namespaces = {m.name for m in wanted if m.kind == "Namespace" and m.api_version == "v1"}
    absent: dict[str, bool] = {}  # namespace of the render -> does not exist yet

    def namespace_absent(ns: str) -> bool:
        if ns not in absent:
            absent[ns] = cluster.get("v1", "Namespace", None, ns) is None
        return absent[ns]

    changes: list[ObjectChange] = []
    rendered = Inventory()  # what the render holds, to subtract from the last inventory
    for m in sorted(wanted, key=sort_key):
        try:
            cluster.scope(m)
        except KindNotServed as exc:
            rendered.add(Entry(ObjectId.of(m.obj), m.api_version.rpartition("/")[2]))
            if (group_of(m.api_version), m.kind) in crd_kinds:
                changes.append(diff_object(None, m.obj, key=key, ref=m.ref(), action=CREATE,
                                           note="its CustomResourceDefinition is created by this change",
                                           source=m.source))
            else:
                changes.append(ObjectChange(m.ref(), ERROR, note=f"{m.ref()} dry-run failed: {exc} "
                                            "(is its CustomResourceDefinition installed?)", source=m.source))
            continue
        ref = m.ref()
        rendered.add(Entry(ObjectId.of(m.obj), m.api_version.rpartition("/")[2]))
        if m.namespace and m.namespace in new_namespaces and namespace_absent(m.namespace):
            # Nothing exists in a namespace that does not exist: a create, and the API server
            # would refuse the dry-run (namespace not found) until the Namespace is applied.
            changes.append(diff_object(None, m.obj, key=key, ref=ref, action=CREATE,
                                       note=f"its Namespace {m.namespace} is created by this change",
                                       source=m.source))
            continue
        live = None
        try:
            live = cluster.get(m.api_version, m.kind, m.namespace or None, m.name)
            dry = cluster.dry_run(m)
        except ApiRefusal as exc:
            changes.append(_refused(ref, exc, m, live, key))
            continue
        except KindNotServed as exc:  # its CRD went away between discovery and the dry-run
            changes.append(ObjectChange(ref, ERROR, note=f"{ref} dry-run failed: {exc}", source=m.source))
            continue
        changes.append(diff_object(live, dry, key=key, ref=ref, source=m.source))

    if prune:
        for entry in inventory.minus(rendered):
            oid = entry.oid
            ref = oid.ref()
            try:
                live = cluster.get(oid.api_version(entry.version), oid.kind, oid.namespace or None, oid.name)
            except ApiRefusal as exc:
                if exc.code == 403:
                    changes.append(ObjectChange(ref, CANNOT_PREVIEW, note=f"forbidden: {exc.message}"))
                else:
                    changes.append(ObjectChange(ref, ERROR, note=f"{ref} read failed: {exc.message}"))
                continue
            if _would_prune(live, entry, owner, protected):
                changes.append(diff_object(live, None, key=key, ref=ref, action=DELETE))
    return Plan(changes)
