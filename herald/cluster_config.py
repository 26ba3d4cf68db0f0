"""Herald's configuration read from the cluster (`--from-cluster`), and kept current by watching it.

Flux users keep Receivers, Providers, Alerts, GitRepositories, Kustomizations and the image
automation kinds (ImageRepository, ImagePolicy, ImageUpdateAutomation) as custom resources;
with `--from-cluster` Herald reads the same kinds in its own group (`herald.dev/v1`, CRDs in
deploy/crds) and, beside them, any `-c` files. Each object becomes a YAML document whose
"file" is `cluster:<Kind>/<namespace>/<name>`, so it goes through exactly the checks a file does
(`herald.config`). Unlike files, one bad object never stops Herald: it is logged, marked
`Ready=False` in its status, and left out, with whatever depended on it; the rest loads.

Each kind is listed, then watched from the list's resourceVersion (re-listed on 410 Gone,
reconnected with backoff on errors). Secrets named by a `secretRef`/`certSecretRef` are read from
the API (unless the configuration or `--secrets-dir` has them) and watched too; only the
referenced ones are kept in memory, and no value is ever logged. A burst of changes is folded
into one rebuild (`debounce`), whose new `Config` goes to every subscriber's `update(cfg)`.

Status: the process that owns a kind (`STATUS_OWNERS`) writes its objects' `Ready` condition, and
a Receiver's `status.webhookPath`, as Flux's controllers do. It writes only when the status
differs from what the object holds, so replicas that compute the same status converge at once.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client as k8s_client
from kubernetes.client.exceptions import ApiException

from herald import config as config_mod
from herald.config import Config
from herald.schema import Diagnostic
from herald.settings import Settings
from herald.yamlsrc import Document, located
from reconciler.kube import (
    ApiRefusal,
    ClusterUnreachable,
    api_client_from_environment,
    refusal,
    request_json,
)

log = logging.getLogger("herald.config")

GROUP_VERSION = "herald.dev/v1"
PLURALS = {"Receiver": "receivers", "Provider": "providers", "Alert": "alerts",
           "GitRepository": "gitrepositories", "Kustomization": "kustomizations",
           "ImageRepository": "imagerepositories", "ImagePolicy": "imagepolicies",
           "ImageUpdateAutomation": "imageupdateautomations"}
# Which command writes the status of which kinds: one writer per kind, the component that uses it.
STATUS_OWNERS: dict[str, tuple[str, ...]] = {
    "serve": tuple(PLURALS), "receiver": ("Receiver",), "notifier": ("Provider", "Alert"),
    "worker": ("GitRepository", "Kustomization", "ImageRepository", "ImagePolicy", "ImageUpdateAutomation"),
    "validate": (), "hooks": (),
}
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
REQUEST_TIMEOUT = 30.0
WATCH_SECONDS = 300  # the server ends a watch after this; it is then resumed from its last version
MAX_BACKOFF = 30.0

Key = tuple[str, str, str]  # (kind, namespace, name)


class FromClusterError(Exception):
    """The configuration cannot be read from the cluster at all (no credentials, no CRDs, no
    rights, errors in the `-c` files): Herald does not start."""


class _Gone(Exception):
    """The watch's resourceVersion is too old (410): list again."""


def source_of(kind: str, namespace: str, name: str) -> str:
    return f"cluster:{kind}/{namespace}/{name}"


def describe(d: Diagnostic) -> str:
    """A diagnostic as printed: `file:line: ...`, or `cluster:Kind/ns/name: ...` (no line)."""
    if d.path.startswith("cluster:") and not d.line:
        return f"{d.path}: {'warning: ' if d.severity == 'warning' else ''}{d.message}"
    return str(d)


# ---- the API ------------------------------------------------------------------------------

class ClusterApi:
    """The few requests this module makes, through the official client's transport (auth, TLS,
    proxies) with the client built as the reconciler builds it (`reconciler.kube`)."""

    def __init__(self, api_client: k8s_client.ApiClient) -> None:
        self.client = api_client
        self._streams: set[Any] = set()
        self._lock = threading.Lock()

    @classmethod
    def from_environment(cls) -> ClusterApi:
        try:
            api_client = api_client_from_environment()
        except ClusterUnreachable as exc:
            raise FromClusterError(str(exc)) from None
        if api_client is None:
            raise FromClusterError("no Kubernetes cluster configured: set KUBECONFIG (or ~/.kube/config), "
                                   "or run in a cluster")
        return cls(api_client)

    def _call(self, method: str, path: str, query: Sequence[tuple[str, str]], body: Any, content_type: str,
              timeout: Any) -> Any:
        try:
            serialized = self.client.param_serialize(
                method, path, query_params=list(query),
                header_params={"Accept": "application/json", "Content-Type": content_type},
                body=body, auth_settings=["BearerToken"])
            return self.client.call_api(*serialized, _request_timeout=timeout)
        except ApiException as exc:
            raise ApiRefusal(int(exc.status or 0), str(exc.reason or ""), str(exc.reason or exc)) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise ClusterUnreachable(f"Kubernetes API server unreachable: {exc}") from None

    def request(self, method: str, path: str, query: Sequence[tuple[str, str]] = (), body: Any = None,
                content_type: str = "application/json") -> dict[str, Any]:
        return request_json(self.client, method, path, query, body, content_type)

    def list(self, path: str) -> tuple[list[dict[str, Any]], str]:
        """Every item (all pages) and the list's resourceVersion, to watch from."""
        items: list[dict[str, Any]] = []
        token = ""
        while True:
            page = self.request("GET", path, [("limit", "500")] + ([("continue", token)] if token else []))
            items += page.get("items") or []
            meta = page.get("metadata") or {}
            token = str(meta.get("continue") or "")
            if not token:
                return items, str(meta.get("resourceVersion") or "")

    def watch(self, path: str, resource_version: str) -> Iterator[dict[str, Any]]:
        """The watch events after `resource_version`, until the server ends the watch."""
        query = [("watch", "true"), ("allowWatchBookmarks", "true"), ("timeoutSeconds", str(WATCH_SECONDS))]
        if resource_version:
            query.append(("resourceVersion", resource_version))
        resp = self._call("GET", path, query, None, "application/json", (10, WATCH_SECONDS + 30))
        raw = resp.response
        if not 200 <= resp.status <= 299:
            raise refusal(resp.status, resp.reason or "", raw.data)
        with self._lock:
            self._streams.add(raw)
        buffer = b""
        try:
            for chunk in raw.stream(65536, decode_content=True):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        yield json.loads(line)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise ClusterUnreachable(f"the watch of {path} broke: {exc}") from None
        finally:
            with self._lock:
                self._streams.discard(raw)
            raw.release_conn()

    def close_streams(self) -> None:
        """End every open watch now (their threads are blocked reading)."""
        with self._lock:
            streams = list(self._streams)
        for raw in streams:
            try:
                raw.shutdown()
            except (OSError, urllib3.exceptions.HTTPError) as exc:  # best effort, at shutdown
                log.debug("config: closing a watch: %s", exc)


# ---- objects as documents -----------------------------------------------------------------

def _cleaned(kind: str, obj: dict[str, Any]) -> dict[str, Any]:
    """What the user wrote: server-set metadata (uid, managedFields, ...) and status dropped,
    so that checking an object reports only the user's own fields."""
    meta = obj.get("metadata") or {}
    clean_meta = {k: meta[k] for k in ("name", "namespace", "labels") if k in meta}
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k != LAST_APPLIED}
    if annotations:
        clean_meta["annotations"] = annotations
    out = {"apiVersion": obj.get("apiVersion") or GROUP_VERSION, "kind": kind, "metadata": clean_meta}
    out.update({k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata", "status")})
    return out


def object_document(key: Key, obj: dict[str, Any]) -> Document:
    return Document(source_of(*key), 0, located(_cleaned(key[0], obj)))


def _fingerprint(kind: str, obj: dict[str, Any]) -> str:
    return json.dumps(_cleaned(kind, obj), sort_keys=True)


def _decode_secret(namespace: str, name: str, obj: dict[str, Any]) -> dict[str, str]:
    data: dict[str, str] = {}
    for k, v in (obj.get("data") or {}).items():
        try:
            data[k] = base64.b64decode(v or "", validate=True).decode()
        except (binascii.Error, UnicodeDecodeError, TypeError):
            log.warning("config: Secret %s/%s key %s is not UTF-8 text; ignored", namespace, name, k)
    return data


def secret_refs(cfg: Config) -> set[tuple[str, str]]:
    """(namespace, name) of every Secret the configuration's objects name."""
    refs = {(r.meta.namespace, r.secret_ref.name) for r in cfg.receivers.values()}
    for p in cfg.providers.values():
        refs |= {(p.meta.namespace, ref.name) for ref in (p.secret_ref, p.cert_secret_ref) if ref}
    refs |= {(g.meta.namespace, g.secret_ref.name) for g in cfg.git_repositories.values() if g.secret_ref}
    for i in cfg.image_repositories.values():
        refs |= {(i.meta.namespace, ref.name) for ref in (i.secret_ref, i.cert_secret_ref) if ref}
    return refs


def drop_invalid(cfg: Config, out: list[Diagnostic]) -> list[str]:
    """Cross-check `cfg` and remove every object with an error, until the rest passes: what
    depended on a removed object is removed in turn (with its own error). Returns the removed
    objects as "Kind ns/name"; the diagnostics go into `out`."""
    removed: list[str] = []
    while True:
        found: list[Diagnostic] = []
        config_mod._cross_check(cfg, found)
        errors = {(d.path, d.line) for d in found if d.severity == "error"}
        bad = [(kind, key) for kind in PLURALS for key, obj in cfg.by_kind(kind).items()
               if config_mod.source_location(obj.meta.source) in errors]
        if not bad:
            out.extend(found)
            return removed
        out.extend(d for d in found if d.severity == "error")
        for kind, key in bad:
            del cfg.by_kind(kind)[key]
            removed.append(f"{kind} {key[0]}/{key[1]}")


# ---- status -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Ready:
    status: str  # "True", "False", "Unknown"
    reason: str
    message: str
    webhook_path: str | None = None


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _status_patch(kind: str, obj: dict[str, Any], ready: Ready) -> dict[str, Any] | None:
    """The merge patch that gives `obj` this Ready condition, or None when it already has it."""
    generation = (obj.get("metadata") or {}).get("generation")
    current = obj.get("status") or {}
    old = next((c for c in current.get("conditions") or [] if c.get("type") == "Ready"), {})
    same = (old.get("status"), old.get("reason"), old.get("message")) == (ready.status, ready.reason, ready.message)
    if same and current.get("observedGeneration") == generation and (
            kind != "Receiver" or current.get("webhookPath") == ready.webhook_path):
        return None
    condition = {"type": "Ready", "status": ready.status, "reason": ready.reason, "message": ready.message,
                 "lastTransitionTime": old.get("lastTransitionTime") if old.get("status") == ready.status
                 and old.get("lastTransitionTime") else _now()}
    if generation is not None:
        condition["observedGeneration"] = generation
    status: dict[str, Any] = {"conditions": [condition]}
    if generation is not None:
        status["observedGeneration"] = generation
    if kind == "Receiver":
        status["webhookPath"] = ready.webhook_path  # None removes it
    return {"status": status}


def _readiness(kind: str, src: str, cfg: Config, diagnostics: list[Diagnostic], key: tuple[str, str]) -> Ready:
    prefix = f"{kind} {key[0]}/{key[1]}: "
    mine = [d for d in diagnostics if d.path == src]
    errors = [d.message.removeprefix(prefix) for d in mine if d.severity == "error"]
    warnings = "".join(f"; warning: {d.message.removeprefix(prefix)}" for d in mine if d.severity == "warning")
    built = cfg.by_kind(kind).get(key)
    if built is None or built.meta.source != src:
        return Ready("False", "ValidationFailed", "; ".join(errors) or "not loaded")
    if kind == "Receiver":
        path = cfg.hook_path(built)
        return Ready("True", "Succeeded", f"Receiver initialized for path: {path}{warnings}", path)
    if kind in ("Provider", "Alert"):
        return Ready("True", "Succeeded", f"Initialized{warnings}")
    # A GitRepository's or Kustomization's Ready is its last reconcile's outcome, which the
    # reconciler reports in events and its inventory ConfigMap, not here: accepted, no more.
    return Ready("Unknown", "Accepted", f"Configuration accepted; reconcile results are reported as events{warnings}")


# ---- the live configuration ------------------------------------------------------------------

class ClusterConfig:
    """The configuration from the cluster (and `-c` files), rebuilt whenever the objects change."""

    def __init__(self, api: ClusterApi, *, namespace: str = "", paths: Sequence[str] = (),
                 secrets_dir: str | Path | None = None, status_kinds: Sequence[str] = (),
                 debounce: float = 0.5, report: bool = True) -> None:
        self.api = api
        self.namespace = namespace
        self.secrets_dir = Path(secrets_dir) if secrets_dir else None
        self.status_kinds = tuple(status_kinds)
        self.debounce = debounce
        self.report = report  # log changes and problems (the long-running commands)
        self.file_diagnostics: list[Diagnostic] = []
        self._file_docs = config_mod.read_documents(paths, self.file_diagnostics)
        self.config = Config(secrets_dir=self.secrets_dir)
        self.diagnostics: list[Diagnostic] = []
        self._objects: dict[Key, dict[str, Any]] = {}
        self._prints: dict[Key, str] = {}
        self._secrets: dict[tuple[str, str], dict[str, str] | None] = {}  # referenced only; None: absent
        self._referenced: set[tuple[str, str]] = set()
        self._versions: dict[str, str] = {}  # kind -> resourceVersion to watch from
        self._lock = threading.RLock()
        self._notes: list[str] = []
        self._dirty = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._listeners: list[Callable[[Config], None]] = []
        self._logged: set[str] = set()
        self._status_failures: set[tuple[Key, int]] = set()

    @classmethod
    def from_settings(cls, settings: Settings, command: str, report: bool = True) -> ClusterConfig:
        """Read the cluster once (see `sync`); `command` decides which statuses this process writes."""
        source = cls(ClusterApi.from_environment(), namespace=settings.watch_namespace, paths=settings.config,
                     secrets_dir=settings.secrets_dir or None, status_kinds=STATUS_OWNERS.get(command, ()),
                     report=report)
        source.sync()
        return source

    def subscribe(self, listener: Callable[[Config], None]) -> None:
        """`listener(cfg)` is called with each new configuration, from the watching thread."""
        self._listeners.append(listener)

    # -- reading ---------------------------------------------------------------------------

    def _path(self, kind: str) -> str:
        base, plural = ("/api/v1", "secrets") if kind == "Secret" else (f"/apis/{GROUP_VERSION}", PLURALS[kind])
        return f"{base}/namespaces/{self.namespace}/{plural}" if self.namespace else f"{base}/{plural}"

    def sync(self) -> Config:
        """List every kind and build the configuration; FromClusterError when that is impossible."""
        where = f"namespace {self.namespace}" if self.namespace else "all namespaces"
        try:
            for kind, plural in PLURALS.items():
                try:
                    self._relist(kind)
                except ApiRefusal as exc:
                    crd = f"{plural}.herald.dev"
                    if exc.code == 404:
                        raise FromClusterError(f"the API server does not serve {crd}: install Herald's CRDs "
                                               "(kubectl apply -k deploy/crds)") from None
                    raise FromClusterError(f"cannot list {crd} in {where}: {exc.message}") from None
            self._versions["Secret"] = self._secrets_version()
        except ClusterUnreachable as exc:
            raise FromClusterError(str(exc)) from None
        except ApiRefusal as exc:
            raise FromClusterError(f"cannot watch Secrets in {where}: {exc.message}") from None
        self._rebuild(initial=True)
        return self.config

    def _secrets_version(self) -> str:
        """A resourceVersion to watch Secrets from, without reading every Secret (Helm keeps
        big ones): referenced Secrets are read one by one, in `_rebuild`."""
        page = self.api.request("GET", self._path("Secret"), [("limit", "1")])
        return str((page.get("metadata") or {}).get("resourceVersion") or "")

    def _relist(self, kind: str) -> None:
        items, version = self.api.list(self._path(kind))
        fresh: dict[Key, dict[str, Any]] = {}
        for obj in items:
            meta = obj.get("metadata") or {}
            fresh[(kind, meta.get("namespace") or "default", meta.get("name") or "")] = obj
        with self._lock:
            for key in [k for k in self._objects if k[0] == kind and k not in fresh]:
                self._forget(key)
            for key, obj in fresh.items():
                self._put(key, obj)
            self._versions[kind] = version

    def _note(self, text: str) -> None:
        with self._lock:
            self._notes.append(text)
        self._dirty.set()

    def _put(self, key: Key, obj: dict[str, Any]) -> None:
        fingerprint = _fingerprint(key[0], obj)
        with self._lock:
            before = self._prints.get(key)
            self._objects[key] = obj  # always: a status write changes the object, not the configuration
            self._prints[key] = fingerprint
        if before != fingerprint:
            self._note(f"{key[0]} {key[1]}/{key[2]} {'added' if before is None else 'updated'}")

    def _forget(self, key: Key) -> None:
        with self._lock:
            known = self._objects.pop(key, None) is not None
            self._prints.pop(key, None)
        if known:
            self._note(f"{key[0]} {key[1]}/{key[2]} deleted")

    def _secret_event(self, kind: str, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        key = (meta.get("namespace") or "default", meta.get("name") or "")
        with self._lock:
            if key not in self._referenced:
                return  # not ours: neither kept nor logged
            data = None if kind == "DELETED" else _decode_secret(*key, obj)
            if self._secrets.get(key, False) == data:
                return
            self._secrets[key] = data
        self._note(f"Secret {key[0]}/{key[1]} {'deleted' if data is None else 'updated'}")

    def _cluster_secrets(self, cfg: Config) -> dict[tuple[str, str], dict[str, str]]:
        """The referenced Secrets that neither the configuration nor --secrets-dir holds, from
        the API: read once, then kept current by the watch."""
        wanted = {ref for ref in secret_refs(cfg) if ref not in cfg.secrets
                  and not (self.secrets_dir and (self.secrets_dir / ref[0] / ref[1]).is_dir())}
        with self._lock:
            self._referenced = wanted  # before reading: a change from now on is seen by the watch
            self._secrets = {k: v for k, v in self._secrets.items() if k in wanted}
            missing = wanted - set(self._secrets)
        for ns, name in sorted(missing):
            try:
                data: dict[str, str] | None = _decode_secret(
                    ns, name, self.api.request("GET", f"/api/v1/namespaces/{ns}/secrets/{name}"))
            except ApiRefusal as exc:
                if exc.code != 404:
                    log.warning("config: cannot read Secret %s/%s: %s", ns, name, exc.message)
                    continue
                data = None
            except ClusterUnreachable as exc:
                log.warning("config: cannot read Secret %s/%s: %s", ns, name, exc)
                continue
            with self._lock:
                self._secrets.setdefault((ns, name), data)
        with self._lock:
            return {k: v for k, v in self._secrets.items() if v is not None}

    # -- building --------------------------------------------------------------------------

    def _rebuild(self, initial: bool = False) -> None:
        with self._lock:
            notes, self._notes = self._notes, []
            self._dirty.clear()
            objects = dict(self._objects)
        out = list(self.file_diagnostics)
        cfg = Config(secrets_dir=self.secrets_dir)
        docs = [*self._file_docs, *(object_document(k, o) for k, o in sorted(objects.items()))]
        config_mod.add_documents(cfg, docs, out)
        cfg.cluster_secrets = self._cluster_secrets(cfg)
        removed = drop_invalid(cfg, out)
        cfg.warnings = [d for d in out if d.severity == "warning"]
        with self._lock:
            self.config, self.diagnostics = cfg, out
        if self.report:
            self._log(notes, cfg, out, removed, initial)
        if not initial:
            for listener in self._listeners:
                try:
                    listener(cfg)
                except Exception:  # one component's failure must not stop the others
                    log.exception("config: a component could not take the new configuration")
        self._write_statuses(objects, cfg, out)

    def _log(self, notes: list[str], cfg: Config, out: list[Diagnostic], removed: list[str], initial: bool) -> None:
        count = sum(len(cfg.by_kind(k)) for k in PLURALS)
        skipped = f" ({len(removed)} skipped: {', '.join(removed)})" if removed else ""
        if initial:
            from_files = sum(1 for k in PLURALS for o in cfg.by_kind(k).values() if not o.meta.source.startswith("cluster:"))
            log.info("config: %d objects from the cluster (%s) and %d from files%s", count - from_files,
                     f"namespace {self.namespace}" if self.namespace else "all namespaces", from_files, skipped)
        elif notes:
            log.info("config: %s; %d objects%s", ", ".join(dict.fromkeys(notes)), count, skipped)
        current = {describe(d) for d in out}
        for d in out:
            text = describe(d)
            if text not in self._logged:
                (log.error if d.severity == "error" else log.warning)("config: %s", text)
        self._logged = current

    def _write_statuses(self, objects: dict[Key, dict[str, Any]], cfg: Config, out: list[Diagnostic]) -> None:
        for key, obj in sorted(objects.items()):
            kind, ns, name = key
            if kind not in self.status_kinds:
                continue
            patch = _status_patch(kind, obj, _readiness(kind, source_of(*key), cfg, out, (ns, name)))
            if patch is None:
                continue
            path = f"/apis/{GROUP_VERSION}/namespaces/{ns}/{PLURALS[kind]}/{name}/status"
            try:
                written = self.api.request("PATCH", path, body=patch, content_type="application/merge-patch+json")
            except ApiRefusal as exc:
                if exc.code != 404 and (key, exc.code) not in self._status_failures:  # 404: deleted meanwhile
                    self._status_failures.add((key, exc.code))
                    log.warning("config: cannot write the status of %s %s/%s: %s", kind, ns, name, exc.message)
                continue
            except ClusterUnreachable as exc:
                log.warning("config: cannot write the status of %s %s/%s: %s", kind, ns, name, exc)
                continue
            with self._lock:
                if key in self._objects:  # what we wrote, so the next rebuild does not write it again
                    self._objects[key] = {**self._objects[key], "status": written.get("status")}

    # -- watching --------------------------------------------------------------------------

    def start(self) -> ClusterConfig:
        """Watch every kind and the referenced Secrets, in daemon threads, until `stop()`."""
        for kind in (*PLURALS, "Secret"):
            t = threading.Thread(target=self._watch_loop, args=(kind,), name=f"config-watch-{kind}", daemon=True)
            t.start()
            self._threads.append(t)
        t = threading.Thread(target=self._debounce_loop, name="config-rebuild", daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def stop(self) -> None:
        self._stop.set()
        self._dirty.set()
        self.api.close_streams()
        for t in self._threads:
            t.join(timeout=5)

    def _watch_loop(self, kind: str) -> None:
        backoff = 1.0
        while not self._stop.is_set():
            try:
                if kind not in self._versions:
                    if kind == "Secret":
                        self._versions[kind] = self._secrets_version()
                        with self._lock:  # changes may have been missed: read them again
                            self._secrets.clear()
                        self._note("Secrets re-read")
                    else:
                        self._relist(kind)
                for event in self.api.watch(self._path(kind), self._versions[kind]):
                    if self._stop.is_set():
                        return
                    self._on_event(kind, event)
                    backoff = 1.0
            except _Gone:
                log.info("config: the watch of %s expired (410 Gone); listing again", kind)
                self._versions.pop(kind, None)
                self._stop.wait(0.1)  # a server that keeps answering 410 is not hammered
            except Exception as exc:  # the watch must outlive any failure
                if self._stop.is_set():
                    return
                if isinstance(exc, ApiRefusal | ClusterUnreachable):
                    log.warning("config: watching %s failed (%s); again in %gs", kind, exc, backoff)
                else:
                    log.exception("config: watching %s failed; again in %gs", kind, backoff)
                self._versions.pop(kind, None)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)

    def _on_event(self, kind: str, event: dict[str, Any]) -> None:
        etype, obj = event.get("type"), event.get("object") or {}
        if etype == "ERROR":
            if obj.get("code") == 410:
                raise _Gone()
            raise ApiRefusal(int(obj.get("code") or 0), str(obj.get("reason") or ""), str(obj.get("message") or obj))
        meta = obj.get("metadata") or {}
        if meta.get("resourceVersion"):
            self._versions[kind] = str(meta["resourceVersion"])
        if etype == "BOOKMARK":
            return
        if kind == "Secret":
            self._secret_event(str(etype), obj)
            return
        key = (kind, meta.get("namespace") or "default", meta.get("name") or "")
        if etype == "DELETED":
            self._forget(key)
        elif etype in ("ADDED", "MODIFIED"):
            self._put(key, obj)

    def _debounce_loop(self) -> None:
        """Rebuild once a burst of changes has been quiet for `debounce` seconds (at most 10
        debounces after the first change, so a steady stream still gets through)."""
        while not self._stop.is_set():
            if not self._dirty.wait(1.0) or self._stop.is_set():
                continue
            deadline = time.monotonic() + 10 * self.debounce
            while True:
                self._dirty.clear()
                if self._stop.wait(self.debounce):
                    return
                if not self._dirty.is_set() or time.monotonic() >= deadline:
                    break
            try:
                self._rebuild()
            except Exception:  # keep the last good configuration and go on
                log.exception("config: rebuilding the configuration failed; keeping the previous one")


def start_errors(source: ClusterConfig) -> list[str]:
    """Errors that stop a long-running command from starting: those of the `-c` files (fixed
    before deploying, as without --from-cluster). A cluster object's error never does."""
    return [describe(d) for d in source.diagnostics
            if d.severity == "error" and not d.path.startswith("cluster:")]
