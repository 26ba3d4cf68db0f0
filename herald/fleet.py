"""A fleet's configuration, built the way Flux builds it: from what its Kustomizations render.

In the core: the reconciler feeds it (`take`), and every component reads it (`config`, `watch`).

Flux users bootstrap a cluster with `clusters/<name>/flux-system/gotk-sync.yaml`: one
GitRepository and one Kustomization. That Kustomization applies `clusters/<name>`, which holds
more Kustomizations (their namespace, `interval` and `prune` often set by the folder's
`kustomization.yaml` and its patches), which apply more folders. Flux knows the fleet only
because the objects each render produces land in the cluster and its controllers watch them.

Herald reads its configuration from files, so `herald serve -c gotk-sync.yaml` alone would know
two objects. `Fleet` closes the loop: each time a Kustomization renders, the Flux objects in
its render (GitRepository, Kustomization, Receiver, Provider, Alert, the image automation kinds,
and Secrets) become configuration *owned* by that Kustomization, checked by the same rules as
files (`herald.config.check`), with the namespace and patches the build gave them. A new
configuration is handed to every subscriber at once; no restart. An object that disappears
from its owner's render goes, and so does everything an owner owned once the owner itself is
gone (a child Kustomization removed from its parent's folder takes its own children along).

What each render's objects become:
- **taken**: kinds Herald acts on. They join the configuration; they are applied to the
  cluster only when their CRD is served there (`Taken.consumed`), else left out of the apply
  and named once in the event;
- **inert**: Flux kinds Herald does not act on (HelmRelease, HelmRepository, HelmChart, Bucket,
  ExternalArtifact, FluxInstance, ...): applied as ordinary objects when their CRD exists,
  and named in the event, so nobody believes Herald runs them;
- **refused**: taken kinds whose configuration Herald refuses (a field that would change what,
  where or as whom it applies; a broken reference). They stay out of the configuration, so
  they are never reconciled, and each gets an error event of its own.

What a render contributed is kept under the state directory (Secrets excepted: a decrypted
Secret never leaves the process) where the bus keeps its logs: a RabbitMQ stream that every
replica replays and tails, or SQLite beside the embedded bus. So a restart knows the whole fleet
before the bootstrap Kustomization has run again, and every process shares it: `watch` (the
receivers, the notifiers, the other workers) picks up what another process's render recorded
within `POLL` seconds.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from herald.bus.deliveries import open_delivery_log
from herald.config import API_VERSIONS, Config, Diagnostic, check
from herald.model import Kustomization
from herald.yamlsrc import Document, located


class Manifest(Protocol):
    """A rendered object as the reconciler hands it over (reconciler.render.Manifest): the core
    reads it, it does not import the component that makes it."""

    obj: dict[str, Any]
    source: str

    @property
    def kind(self) -> str: ...

    @property
    def api_version(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def namespace(self) -> str: ...

    def ref(self) -> str: ...

log = logging.getLogger(__name__)

OwnerKey = tuple[str, str]  # (namespace, name) of the Kustomization whose render it came from
ObjectKey = tuple[str, str, str]  # (kind, namespace, name)

# The API groups of Flux's own kinds (and its operator's): a kind of these that Herald does not
# take as configuration is *inert* under Herald, and said so.
FLUX_GROUPS = ("toolkit.fluxcd.io", "fluxcd.controlplane.io", "source.extensions.fluxcd.io")
MAX_DEPTH = 16  # owners of owners: deeper than any fleet nests, shallow enough to stop a cycle
POLL = 2.0  # seconds between looks at what other processes' renders recorded
WINDOW = 30 * 24 * 3600.0  # a render recorded longer ago than this is forgotten (renders record at every run)
KEY_PREFIX = "fleet:"


def _owner(key: str) -> OwnerKey:
    ns, _, name = key.removeprefix(KEY_PREFIX).partition("/")
    return ns, name


def _group(api_version: str) -> str:
    return api_version.rpartition("/")[0] if "/" in api_version else ""


def is_taken(m: Manifest) -> bool:
    """Whether Herald takes this object as configuration (a kind and apiVersion it reads)."""
    return m.kind in API_VERSIONS and m.api_version in API_VERSIONS[m.kind]


def is_inert(m: Manifest) -> bool:
    """A Flux kind that Herald does not act on."""
    return not is_taken(m) and any(_group(m.api_version).endswith(g) for g in FLUX_GROUPS)


def key_of(m: Manifest) -> ObjectKey:
    return m.kind, m.namespace or "default", m.name


@dataclass
class Taken:
    """What a Kustomization's render gave the configuration, and what changed because of it."""

    consumed: list[Manifest] = field(default_factory=list)  # taken as configuration
    inert: list[Manifest] = field(default_factory=list)
    refused: list[tuple[ObjectKey, str]] = field(default_factory=list)  # object, why (file:line: message)
    added: list[ObjectKey] = field(default_factory=list)  # in the configuration now, not before
    changed: list[ObjectKey] = field(default_factory=list)
    removed: list[ObjectKey] = field(default_factory=list)
    # The Kustomizations removed, as they were configured: what their deletionPolicy says
    # becomes of their objects (the worker finalizes them, as kustomize-controller's finalizer).
    gone: list[Kustomization] = field(default_factory=list)


class Fleet:
    """The configuration: the files (`paths`), plus what each Kustomization's render owns."""

    def __init__(self, paths: Iterable[str | Path], secrets_dir: str | Path | None, state_dir: Path,
                 broker_url: str | None = None) -> None:
        self.paths = [Path(p) for p in paths]
        self.secrets_dir = secrets_dir
        # Where renders' objects are shared: a RabbitMQ stream every replica replays and tails,
        # or SQLite beside the embedded bus (herald.bus.deliveries).
        self.log = open_delivery_log(broker_url or None, state_dir, WINDOW, name="fleet", quiet=True)
        self._lock = threading.Lock()
        self._refused: dict[OwnerKey, list[tuple[ObjectKey, str]]] = {}  # per owner, as its last build found
        self._seen: dict[str, float] = {}  # owner's key -> when it was recorded, as this process last saw it
        self._owned: dict[OwnerKey, list[Document]] = self._load()
        self._listeners: list[Callable[[Config], None]] = []
        self.config, self.diagnostics = self._build(self._owned)

    # ---- reading and writing what renders owned -----------------------------------------

    @staticmethod
    def _key(owner: OwnerKey) -> str:
        return f"{KEY_PREFIX}{owner[0]}/{owner[1]}"

    def _load(self) -> dict[OwnerKey, list[Document]]:
        owned: dict[OwnerKey, list[Document]] = {}
        for key, (at, value) in self.log.items(KEY_PREFIX).items():
            docs = self._read(key, at, value)
            if docs:
                owned[_owner(key)] = docs
        return owned

    def _read(self, key: str, at: float, value: str) -> list[Document] | None:
        """An owner's documents as recorded (None when it cannot be read; [] when removed)."""
        self._seen[key] = at
        if not value:
            return []
        try:
            data = json.loads(value)
            return [Document(str(d["source"]), 0, located(d["object"])) for d in data["objects"]]
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("fleet: %s cannot be read (%s); its owner's objects come back at its next run", key, exc)
            return None

    def refresh(self) -> bool:
        """Take in what other processes' renders recorded since this one last looked; whether
        the configuration changed (subscribers have the new one then)."""
        found = self.log.items(KEY_PREFIX)
        with self._lock:
            owned = dict(self._owned)
            changed = False
            for key, (at, value) in found.items():
                if self._seen.get(key) != at:
                    docs = self._read(key, at, value)
                    if docs is not None:
                        if docs:
                            owned[_owner(key)] = docs
                        else:
                            owned.pop(_owner(key), None)
                        changed = True
            if not changed:
                return False
            before = self.config
            cfg, diagnostics = self._build(owned)
            self._owned, self.config, self.diagnostics = owned, cfg, diagnostics
        taken = Taken()
        _diff(before, cfg, taken)
        if taken.added or taken.changed or taken.removed:
            for listener in list(self._listeners):
                listener(cfg)
            return True
        return False

    def close(self) -> None:
        self.stop()
        self.log.close()

    def start(self) -> None:
        """Watch on a daemon thread of its own (a gunicorn worker's receiver), until `stop`."""
        self._stop = threading.Event()
        threading.Thread(target=self.watch, args=(self._stop,), name="herald-fleet", daemon=True).start()

    def stop(self) -> None:
        stop = getattr(self, "_stop", None)
        if stop is not None:
            stop.set()

    def watch(self, stop: threading.Event, poll: float = POLL) -> None:
        """`refresh` every `poll` seconds until `stop` is set (a thread of its own)."""
        while not stop.wait(poll):
            try:
                self.refresh()
            except Exception:  # noqa: BLE001 (a bad look must not end the watch)
                log.exception("fleet: reading what other processes wrote failed; trying again")

    def _save(self, owner: OwnerKey, docs: list[Document]) -> None:
        """Record what `owner`'s render holds, Secrets left out (a decrypted one never leaves
        this process); every render records again, which keeps a stable fleet in the window."""
        kept = [{"source": d.path, "object": d.data} for d in docs if d.data.get("kind") != "Secret"]
        key = self._key(owner)
        value = json.dumps({"objects": kept}, separators=(",", ":")) if docs else ""
        self.log.record(key, value)
        found = self.log.items(key).get(key)
        if found is not None:
            self._seen[key] = found[0]

    # ---- building -------------------------------------------------------------------------

    def _build(self, owned: dict[OwnerKey, list[Document]]) -> tuple[Config, list[Diagnostic]]:
        """The files plus the documents of every owner that is itself in the configuration:
        grown from the files outwards, so a removed owner's objects go with it."""
        included: set[OwnerKey] = set()
        cfg, diagnostics = check(self.paths, self.secrets_dir)
        for _ in range(MAX_DEPTH):
            present = {k for k in owned if k in cfg.kustomizations}
            if present == included:
                break
            included = present
            extra = [d for k in sorted(included) for d in owned[k]]
            cfg, diagnostics = check(self.paths, self.secrets_dir, extra)
        return cfg, diagnostics

    def subscribe(self, listener: Callable[[Config], None]) -> None:
        self._listeners.append(listener)

    def take(self, owner: Kustomization, revision: str, manifests: Iterable[Manifest]) -> Taken:
        """Record what `owner`'s render at `revision` holds; hand a changed configuration to
        every subscriber. Secrets in the render join the configuration too (a Receiver's
        token may live beside it) but are applied like any other object."""
        key = owner.meta.key
        where = f"Kustomization {key[0]}/{key[1]}@{revision}"
        taken = Taken()
        docs: list[Document] = []
        for m in manifests:
            if is_taken(m):
                if m.kind != "Secret":
                    taken.consumed.append(m)
                docs.append(Document(_doc_path(where, m), 0, located(m.obj)))
            elif is_inert(m):
                taken.inert.append(m)
        with self._lock:
            if [d.data for d in docs] == [d.data for d in self._owned.get(key, ())]:
                # The render holds what it held (most renders: none at all): nothing to build
                # again, only the record to keep within the window.
                if docs and time.time() - self._seen.get(self._key(key), 0.0) > WINDOW / 2:
                    self._save(key, docs)
                taken.refused = list(self._refused.get(key, ()))
                return taken
            before = self.config
            owned = dict(self._owned)
            if docs:
                owned[key] = docs
            else:
                owned.pop(key, None)
            cfg, diagnostics = self._build(owned)
            self._owned = owned
            self.config, self.diagnostics = cfg, diagnostics
            self._save(key, docs)
        paths = {_doc_path(where, m): key_of(m) for m in taken.consumed}
        for d in diagnostics:
            if d.severity == "error" and d.path in paths:
                taken.refused.append((paths[d.path], d.message))
        self._refused[key] = list(taken.refused)
        _diff(before, cfg, taken)
        if before is not cfg and (taken.added or taken.changed or taken.removed):
            for listener in list(self._listeners):
                listener(cfg)
        return taken


def _doc_path(where: str, m: Manifest) -> str:
    """Where a rendered object came from, as diagnostics name it: unique per object (a
    kustomize build has one source for all of its objects)."""
    return f"{where}: {m.ref()} from {m.source or '-'}"


def _objects(cfg: Config) -> dict[ObjectKey, Any]:
    out: dict[ObjectKey, Any] = {}
    for kind in API_VERSIONS:
        if kind == "Secret":
            continue
        for (ns, name), obj in cfg.by_kind(kind).items():
            out[(kind, ns, name)] = obj
    return out


def _diff(before: Config, after: Config, taken: Taken) -> None:
    old, new = _objects(before), _objects(after)
    taken.added = sorted(k for k in new if k not in old)
    taken.removed = sorted(k for k in old if k not in new)
    taken.gone = [old[k] for k in taken.removed if k[0] == "Kustomization"]
    taken.changed = sorted(k for k in new if k in old and _spec(new[k]) != _spec(old[k]))


def _spec(obj: Any) -> Any:
    """An object without where it was read from: a render that moved it has not changed it."""
    meta = getattr(obj, "meta", None)
    if meta is None:
        return obj
    import dataclasses

    return dataclasses.replace(obj, meta=dataclasses.replace(meta, source=""))
