"""`herald validate -c <fleet repository>`: check a Flux fleet's repository as Flux would build it.

A fleet repository is not a folder of Herald configuration: its folders mix Flux objects with
workload manifests, `kustomization.yaml` files and Helm values, and a Flux object is often
incomplete in its own file (the parent `kustomization.yaml` sets its namespace, its patches add
`interval` and `prune`). Reading every YAML file as configuration refuses nearly all of it. So
`validate_fleet` builds the repository folder by folder as Flux would (`reconciler.render`:
kustomize where there is a kustomization.yaml, Flux's plain-folder rules elsewhere, Flux's
generator where a Kustomization sets `patches`, `images`, `components`, `namePrefix` or
`nameSuffix`), checks the Flux objects of each result with `herald.config.check`, counts the
rest, and names what Herald does not act on.

Which folders, and in which groups (the rules, and why):

1. **Walks.** Flux knows a folder only because a Kustomization applies it. Without a cluster,
   the walk starts where a cluster's Flux starts, and follows each Kustomization whose sourceRef
   is *this repository* to its `spec.path` (relative to the repository's root, as Flux reads
   it; each folder is built once per walk, with the spec of the Kustomization that applies it).
   A Kustomization sourced from anything else (a tenant's GitRepository, an OCIRepository, an
   ExternalArtifact) is checked but not followed: its path is in another tree. Walks start at,
   in this order (shallowest folder first within each), a start being skipped when an earlier
   walk already built it:

   a. a *bootstrap*: a Kustomization that applies the folder its own file lies in (a non-root
      `spec.path` holding its file): `flux bootstrap`'s `clusters/<name>/flux-system/
      gotk-sync.yaml` (path `./clusters/<name>`). The GitRepository it names is this repository.
      A FluxInstance (Flux Operator) with `spec.sync` from a GitRepository is one too: its
      `sync.path`, and the GitRepository named after its namespace, as the operator names it
      (which the repository then does not define: said once, as in (b)).
      The bootstrap's own spec (patches, targetNamespace) applies to its folder's build. A
      bootstrap whose file an earlier walk built is one of that cluster's Kustomizations, not
      a cluster of its own. (A root path is not taken: a tenant's Kustomization without a path
      applies another repository's root.)
   b. a folder `flux bootstrap` wrote into that no bootstrap reached: one holding
      `flux-system/gotk-sync.yaml` or `flux-system/gotk-components.yaml`. Template fleets
      (fluxcd's examples) publish gotk-sync.yaml as a placeholder comment; this repository is
      then taken to be `flux-system/flux-system`, the names `flux bootstrap` gives its
      GitRepository and Kustomization, and "not found" for them is one warning for the walk
      (bootstrap will define them), not an error per object.
   c. what no walk reached, with the same assumption as (b): first the plain YAML files holding
      Flux objects that no build read (grouped by folder; a home-lab fleet's root Kustomization
      often sits in a folder of its own, e.g. `kubernetes/flux/cluster/ks.yaml`, and is what
      applies the rest), then every kustomize root that no kustomization.yaml includes and no
      walk built. Nothing the repository holds goes unchecked, and nothing is checked twice for
      being reachable two ways.

2. **One check per walk, and per target cluster.** Each walk is one cluster's objects, checked
   together (a Kustomization's dependsOn and sourceRef are resolved in it). Walks are checked
   apart: a fleet's clusters all define `flux-system/flux-system` and often the same
   Kustomization names, which are not duplicates. Objects applied through a Kustomization with
   `spec.kubeConfig` (hub and spoke) land in another cluster, and are checked apart too.

3. **What is reported.**
   - Flux objects of the kinds Herald reads (`herald.config.API_VERSIONS`) are checked with
     `herald.config.check`, with file:line of their source: a plain file's line as read; for a
     kustomize build, the source file that kustomize names in its `config.kubernetes.io/origin`
     annotation (asked for with `buildMetadata: [originAnnotations]` in a throwaway copy of the
     repository, then removed from the objects), and the line of the object of that kind and
     name in it. Each field keeps its line where the source has it; a field the build added
     (a patch, the namespace) takes the line of what holds it there.
   - A Secret that the check cannot find (a Receiver's token, a GitRepository's credentials) is
     a warning: a fleet repository leaves Secrets to the cluster or keeps them SOPS-encrypted,
     and neither can be read here. `herald serve` needs it where it runs. SOPS-encrypted Secrets
     are not checked (their values are ciphertext); plain Secrets are read for the references,
     and what the check says about a Secret itself is a warning: it is a workload.
   - A check error about a value holding `${...}` in an object whose Kustomization has
     `spec.postBuild` is a warning: Flux substitutes it in the cluster; its value is unknown.
     A `spec.path` holding one is not followed.
   - Flux kinds Herald does not act on (HelmRelease, HelmRepository, ...) are counted, and named
     once per kind in a warning. Every other Kubernetes object (CRDs, Deployments, Namespaces,
     Secrets, ...) is a workload: counted, never an error. YAML that is no Kubernetes object
     (Helm values, CI configuration) is skipped silently, as Flux's plain-folder read skips it,
     and a file that no walk builds and that holds no Flux object is not read at all.
   - A folder that does not build (kustomize's error, a Kustomization's `spec.path` that is not
     in the repository) is an error naming the folder and the Kustomization that applies it.

Variables are not substituted and SOPS is not decrypted: their inputs live in the cluster.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import shutil
import tempfile
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from herald.config import API_VERSIONS, Diagnostic, check
from herald.yamlsrc import (
    Document,
    LocDict,
    LocList,
    YAMLSyntaxError,
    load_documents,
    located,
)
from herald.fleet import FLUX_GROUPS, is_inert, is_taken
from reconciler.generate import GenerateError, generate
from reconciler.render import (
    KUSTOMIZATION_FILES,
    Manifest,
    RenderError,
    render,
    render_files,
    tree_folder,
)

ORIGIN_ANNOTATION = "config.kubernetes.io/origin"
KUSTOMIZE_GROUP = "kustomize.toolkit.fluxcd.io"
# The GitRepository `flux bootstrap` writes into gotk-sync.yaml: taken as this repository when no
# bootstrap says otherwise (rules 1b and 1c).
BOOTSTRAP_REPOSITORY = ("flux-system", "flux-system")
# Kustomization fields Flux's generator writes into the folder's kustomization (reconciler.build
# builds with them the same way); targetNamespace is the render's own.
_GENERATOR_FIELDS = ("patches", "images", "components", "namePrefix", "nameSuffix", "ignoreMissingComponents")
_CONTROLLERS = {
    "helm.toolkit.fluxcd.io": "helm-controller",
    "source.toolkit.fluxcd.io": "source-controller",
    "kustomize.toolkit.fluxcd.io": "kustomize-controller",
    "notification.toolkit.fluxcd.io": "notification-controller",
    "image.toolkit.fluxcd.io": "image-reflector-controller and image-automation-controller",
    "source.extensions.fluxcd.io": "source-watcher",
    "fluxcd.controlplane.io": "the Flux Operator",
}
_BY_BOOTSTRAP = "flux bootstrap writes into gotk-sync.yaml"
_SECRET_NOT_FOUND = re.compile(r"\bSecret (\S+)/(\S+) not found")
# What `flux bootstrap` writes into <path>/flux-system.
_BOOTSTRAP_FILES = ("gotk-sync.yaml", "gotk-components.yaml")
_KLOG = re.compile(r'\b[EWIF]\d{4} [\d:.]+\s+\d+ [\w.-]+:\d+\] "command failed" err="(.*)"$', re.DOTALL)


@dataclass
class FleetReport:
    diagnostics: list[Diagnostic] = field(default_factory=list)
    flux_objects: int = 0  # Flux's (and Herald's) objects, checked or inert, in every walk
    workloads: int = 0  # every other Kubernetes object
    inert: dict[str, int] = field(default_factory=dict)  # Flux kinds Herald does not act on, by kind
    folders: list[str] = field(default_factory=list)  # what was built, from the repository's root
    walks: list[str] = field(default_factory=list)  # where each walk started, and why (rule 1)

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]


def validate_fleet(root: Path, *, secrets_dir: str | Path | None = None) -> FleetReport:
    """Build and check the fleet repository at `root`; see the module docstring for the rules."""
    root = Path(root)
    report = FleetReport()
    if not root.is_dir():
        report.diagnostics.append(Diagnostic(str(root), 0, "no such directory"))
        return report
    with tempfile.TemporaryDirectory(prefix="herald-fleet-") as tmp:
        _Validation(root, Path(tmp), secrets_dir, report).run()
    return report


# ---- the objects of a build ----------------------------------------------------------------


def _group(api_version: str) -> str:
    return api_version.rpartition("/")[0]


def _is_flux(api_version: Any) -> bool:
    if not isinstance(api_version, str):
        return False
    group = _group(api_version)
    return group == "herald.dev" or any(group == g or group.endswith(f".{g}") for g in FLUX_GROUPS)


@dataclass
class _Obj:
    """An object as Flux would apply it, and where it came from."""

    manifest: Manifest
    file: str | None  # its source file, from the repository's root, when known
    src: LocDict | None  # its document in that file, when found
    folder: str  # the build it came from
    substituted: bool  # its Kustomization substitutes ${variables} (spec.postBuild)

    @property
    def kind(self) -> str:
        return self.manifest.kind

    def is_secret(self) -> bool:
        return self.kind == "Secret" and self.manifest.api_version == "v1"

    def is_checked(self) -> bool:
        """Herald reads it as configuration: a kind of API_VERSIONS (a Flux one with another
        apiVersion too: the check then names the versions Herald reads)."""
        m = self.manifest
        if self.is_secret():
            return "sops" not in m.obj  # SOPS-encrypted values are ciphertext
        return m.kind != "Secret" and (is_taken(m) or (m.kind in API_VERSIONS and _is_flux(m.api_version)))

    def is_flux(self) -> bool:
        return not self.is_secret() and (is_taken(self.manifest) or _is_flux(self.manifest.api_version))


@dataclass
class _Unit:
    """Something to build: a folder (with the spec of the Kustomization that applies it), or
    some plain files of one folder (rule 1c)."""

    folder: str  # from the repository's root; "" is the root
    files: tuple[str, ...] = ()
    spec: Mapping[str, Any] | None = None
    by: str = ""  # "Kustomization ns/name (file:line)" that applies it, for messages
    target: str = ""  # "" for the walk's cluster, else the kubeConfig it applies through
    substituted: bool = False

    def key(self) -> str:
        spec = self.spec or {}
        wanted = {k: spec.get(k) for k in (*_GENERATOR_FIELDS, "targetNamespace") if spec.get(k) not in (None, "", [])}
        return json.dumps([self.folder, self.files, self.target, wanted], sort_keys=True, default=str)


@dataclass
class _Walk:
    start: str
    folder: str
    self_repos: set[tuple[str | None, str]]  # (namespace or None for any, name) of this repository
    assumed: str = ""  # who defines this repository's GitRepository when the repository does not (1a-c)
    objects: list[tuple[str, _Obj]] = field(default_factory=list)  # (target, object)


# ---- the validation ------------------------------------------------------------------------


class _Validation:
    def __init__(self, root: Path, tmp: Path, secrets_dir: str | Path | None, report: FleetReport) -> None:
        self.root = root
        self.tmp = tmp
        self.secrets_dir = secrets_dir
        self.report = report
        self.copy = tmp / "repo"
        self._docs: dict[str, list[LocDict]] = {}
        self._reach_memo: dict[str, set[str]] = {}
        self.covered: set[str] = set()  # folders a walk built (or tried to)
        self.covered_files: set[str] = set()  # files whose objects a walk built
        self._walks: list[_Walk] = []
        self._said: set[tuple[str, int, str, str]] = set()
        self._scan()

    # -- the repository, read once -------------------------------------------------------

    def _scan(self) -> None:
        """Folders, kustomize roots and YAML files, hidden entries left out (as Flux's plain
        read and `herald.yamlsrc.yaml_files` leave them out)."""
        self.folders: set[str] = set()
        self.children: dict[str, list[str]] = {}
        self.yaml_files: dict[str, list[str]] = {}  # folder -> its own YAML files
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            rel = Path(dirpath).relative_to(self.root).as_posix()
            rel = "" if rel == "." else rel
            self.folders.add(rel)
            self.children[rel] = [posixpath.join(rel, d) for d in dirnames]
            self.yaml_files[rel] = [posixpath.join(rel, f) for f in sorted(filenames)
                                    if not f.startswith(".") and f.endswith((".yaml", ".yml"))]
        self.kroots = {f for f in self.folders if any((self.root / f / n).is_file() for n in KUSTOMIZATION_FILES)}
        self.includes = {k: self._kustomize_includes(k) for k in self.kroots}

    def _kustomize_includes(self, folder: str) -> list[str]:
        """The folders of this repository that a kustomization's resources, bases and
        components name."""
        data = None
        for name in KUSTOMIZATION_FILES:
            rel = posixpath.join(folder, name)
            if (self.root / rel).is_file():
                docs = self.documents(rel)
                data = docs[0] if docs else None
                break
        out = []
        for key in ("resources", "bases", "components"):
            items = data.get(key) if isinstance(data, dict) else None
            for item in items if isinstance(items, list) else ():
                if isinstance(item, str) and "://" not in item:
                    target = posixpath.normpath(posixpath.join(folder, item))
                    if target in self.folders:
                        out.append(target)
        return out

    def documents(self, rel: str) -> list[LocDict]:
        """The mapping documents of a file as written (List items included), or none when it
        is not YAML: a file is read as configuration only when a build holds its objects."""
        if rel not in self._docs:
            found: list[LocDict] = []
            try:
                for doc in load_documents((self.root / rel).read_text(encoding="utf-8"), rel):
                    if not isinstance(doc.data, LocDict):
                        continue
                    found.append(doc.data)
                    items = doc.data.get("items")
                    if str(doc.data.get("kind", "")).endswith("List") and isinstance(items, list):
                        found.extend(i for i in items if isinstance(i, LocDict))
            except (OSError, UnicodeDecodeError, YAMLSyntaxError):
                pass
            self._docs[rel] = found
        return self._docs[rel]

    def reach(self, folder: str) -> set[str]:
        """The folders a build of `folder` reads: a kustomize root and what it includes, or a
        plain folder and every folder below it."""
        if folder not in self._reach_memo:
            seen: set[str] = set()
            pending = [folder]
            while pending:
                f = pending.pop()
                if f in seen or f not in self.folders:
                    continue
                seen.add(f)
                pending.extend(self.includes[f] if f in self.kroots else self.children.get(f, ()))
            self._reach_memo[folder] = seen
        return self._reach_memo[folder]

    def display(self, rel: str) -> str:
        return str(self.root / rel) if rel else str(self.root)

    # -- the walks ---------------------------------------------------------------------------

    def run(self) -> None:
        self._prepare_copy()
        for start in self._starts():
            found = start()
            if found is not None:
                unit, walk = found
                self._walks.append(walk)
                self._walk(walk, unit)
        for walk in self._walks:
            self._check(walk)
        self._report_inert()
        if not self.report.flux_objects and not self.report.errors:
            self.report.diagnostics.append(Diagnostic(
                self.display(""), 0, "no Flux objects found: nothing in this repository for Herald to act on",
                "warning"))

    def _starts(self) -> Iterable[Callable[[], tuple[_Unit, _Walk] | None]]:
        """Rule 1's starting points, in its order. Each is asked when its turn comes, as an
        earlier walk may have built it by then (None: nothing left to start)."""
        bootstraps = sorted(self._bootstraps(), key=lambda b: (b[0].folder.count("/"), b[0].folder, b[2]))
        started: set[tuple[str, frozenset[tuple[str | None, str]]]] = set()
        for unit, repos, file, what, defined_by in bootstraps:

            def bootstrap(unit: _Unit = unit, repos: set[tuple[str | None, str]] = repos, file: str = file,
                          what: str = what, defined_by: str = defined_by) -> tuple[_Unit, _Walk] | None:
                identity = (unit.folder, frozenset(repos))
                if identity in started or file in self.covered_files:
                    return None  # another walk applies it: one of that cluster's Kustomizations
                started.add(identity)
                return unit, _Walk(f"{unit.folder} ({what} {file})", unit.folder, set(repos), defined_by)

            yield bootstrap

        def folder(unit: _Unit, what: str) -> Callable[[], tuple[_Unit, _Walk] | None]:
            def start() -> tuple[_Unit, _Walk] | None:
                if unit.folder in self.covered:
                    return None
                return unit, _Walk(f"{unit.folder or '.'} ({what})", unit.folder, {BOOTSTRAP_REPOSITORY}, _BY_BOOTSTRAP)
            return start

        # 1b: what `flux bootstrap --path` wrote, without a usable gotk-sync.yaml
        for f in sorted(self.folders, key=lambda f: (f.count("/"), f)):
            made = posixpath.join(f, "flux-system")
            if any(posixpath.join(made, name) in self.yaml_files.get(made, ()) for name in _BOOTSTRAP_FILES):
                yield folder(_Unit(f), "has flux-system/ from flux bootstrap, no bootstrap Kustomization: this "
                                       f"repository taken as GitRepository {'/'.join(BOOTSTRAP_REPOSITORY)}")

        # 1c: Flux objects in plain files no walk read (first: they are what applies folders),
        # then kustomize roots no kustomization includes and no walk built
        for f in sorted(self.yaml_files, key=lambda f: (f.count("/"), f)):
            if f in self.kroots:
                continue
            flux_files = [p for p in self.yaml_files[f]
                          if any(_is_flux(d.get("apiVersion")) for d in self.documents(p))]
            if not flux_files:
                continue

            def files(f: str = f, flux_files: list[str] = flux_files) -> tuple[_Unit, _Walk] | None:
                left = tuple(p for p in flux_files if p not in self.covered_files)
                if not left or f in self.covered:
                    return None
                return _Unit(f, files=left), _Walk(f"{f or '.'} (Flux objects nothing applies)", f,
                                                   {BOOTSTRAP_REPOSITORY}, _BY_BOOTSTRAP)

            yield files
        included = {i for k in self.kroots for i in self.includes[k] if i != k}
        for k in sorted(self.kroots - included, key=lambda f: (f.count("/"), f)):
            yield folder(_Unit(k), "kustomize root nothing applies")

    def _bootstraps(self) -> Iterable[tuple[_Unit, set[tuple[str | None, str]], str, str, str]]:
        for folder in sorted(self.yaml_files):
            for rel in self.yaml_files[folder]:
                for doc in self.documents(rel):
                    found = self._bootstrap(doc, rel)
                    if found is not None:
                        yield found

    def _bootstrap(self, doc: LocDict, rel: str) -> tuple[_Unit, set[tuple[str | None, str]], str, str, str] | None:
        """(its folder to build, this repository's GitRepository, its file, what it is, who defines
        that GitRepository when the repository does not), when `doc` starts a cluster (rule 1a)."""
        spec, meta = doc.get("spec"), doc.get("metadata")
        if not isinstance(spec, dict) or not isinstance(meta, dict):
            return None
        namespace = meta.get("namespace") if isinstance(meta.get("namespace"), str) else None
        group, kind = _group(str(doc.get("apiVersion", ""))), doc.get("kind")
        if group == KUSTOMIZE_GROUP and kind == "Kustomization":
            source, path = spec.get("sourceRef"), spec.get("path")
            if not (isinstance(source, dict) and source.get("kind") == "GitRepository"
                    and isinstance(source.get("name"), str) and isinstance(path, str)):
                return None
            folder = _folder(path)
            # It applies its own file's folder: the bootstrap. A Kustomization with no path (or
            # the root) is usually a tenant's, applying another repository's root: not one.
            if not folder or folder not in self.folders or not rel.startswith(f"{folder}/"):
                return None
            repo_ns = source.get("namespace") if isinstance(source.get("namespace"), str) else namespace
            where = f"Kustomization {namespace or 'default'}/{meta.get('name')} ({rel}:{doc.line})"
            return (_Unit(folder, spec=spec, by=where, substituted="postBuild" in spec),
                    {(repo_ns, source["name"])}, rel, "bootstrap", "")
        if group == "fluxcd.controlplane.io" and kind == "FluxInstance":
            sync = spec.get("sync")
            if not (isinstance(sync, dict) and sync.get("kind") == "GitRepository"
                    and isinstance(sync.get("path"), str)):
                return None
            folder = _folder(sync["path"])
            if folder is None or folder not in self.folders:
                return None
            ns = namespace or BOOTSTRAP_REPOSITORY[0]
            # The operator creates the GitRepository and the Kustomization, named after the namespace.
            return (_Unit(folder, by=f"FluxInstance {ns}/{meta.get('name')} ({rel}:{doc.line})"), {(ns, ns)}, rel,
                    "FluxInstance sync in", f"the Flux Operator creates for FluxInstance {ns}/{meta.get('name')}")
        return None

    def _walk(self, walk: _Walk, start: _Unit) -> None:
        self.report.walks.append(walk.start)
        queue = deque([start])
        seen: set[str] = set()
        while queue:
            unit = queue.popleft()
            if unit.key() in seen:
                continue
            seen.add(unit.key())
            # tried, built or not: no later walk starts there again (rule 1)
            self.covered |= {unit.folder} if unit.files else self.reach(unit.folder)
            try:
                objects = self._build(unit)
            except (RenderError, GenerateError, OSError) as exc:
                self._build_failed(unit, str(exc))
                continue
            for label in unit.files or (unit.folder or ".",):
                if label not in self.report.folders:
                    self.report.folders.append(label)
            for o in objects:
                walk.objects.append((unit.target, o))
                if o.file:
                    self.covered_files.add(o.file)
                if o.is_flux():
                    self.report.flux_objects += 1
                else:
                    self.report.workloads += 1
                child = self._follow(walk, unit, o)
                if child is not None:
                    queue.append(child)

    def _follow(self, walk: _Walk, unit: _Unit, o: _Obj) -> _Unit | None:
        """The folder a Kustomization applies, when its source is this repository."""
        m = o.manifest
        if m.kind != "Kustomization" or _group(m.api_version) != KUSTOMIZE_GROUP:
            return None
        spec = m.obj.get("spec")
        source = spec.get("sourceRef") if isinstance(spec, dict) else None
        if not isinstance(source, dict) or source.get("kind") != "GitRepository":
            return None
        namespace = source.get("namespace") or m.namespace or "default"
        if not any(name == source.get("name") and ns in (None, namespace) for ns, name in walk.self_repos):
            return None
        path = spec.get("path") or ""
        if not isinstance(path, str):
            return None  # the check names it
        where = f"Kustomization {m.namespace or 'default'}/{m.name}"
        at = (o.file, _line_of(o, "path")) if o.file else None
        if "${" in path:
            if o.substituted:
                self._diag(at, o.folder, f"{where}: spec.path {path!r} holds a postBuild variable, substituted in the "
                                         "cluster: the folder it names is not built", "warning")
            else:
                self._diag(at, o.folder, f"{where}: spec.path {path!r}: no Kustomization substitutes this variable "
                                         "(no spec.postBuild), so Flux looks for a folder of that name")
            return None
        folder = _folder(path)
        if folder is None:
            self._diag(at, o.folder, f"{where}: spec.path {path!r} points outside the repository")
            return None
        if folder not in self.folders:
            self._diag(at, o.folder, f"{where}: spec.path {path!r}: no such folder in the repository (Flux fails "
                                     "this Kustomization)")
            return None
        target = unit.target
        kube = spec.get("kubeConfig")
        if isinstance(kube, dict) and kube:
            ref = kube.get("secretRef") or kube.get("configMapRef") or {}
            target = f"kubeConfig {m.namespace or 'default'}/{ref.get('name') if isinstance(ref, dict) else ref}"
        by = f"{where} ({o.file}:{at[1]})" if at and at[1] else f"{where} ({o.file or o.folder})"
        return _Unit(folder, spec=spec, by=by, target=target,
                     substituted=isinstance(spec.get("postBuild"), dict))

    def _diag(self, at: tuple[str | None, int] | None, folder: str, message: str, severity: str = "error") -> None:
        if at and at[0]:
            self.report.diagnostics.append(Diagnostic(self.display(at[0]), at[1], message, severity))
        else:
            self.report.diagnostics.append(Diagnostic(self.display(folder), 0, message, severity))

    def _build_failed(self, unit: _Unit, message: str) -> None:
        for prefix in {str(self.copy), str(self.copy.resolve())}:
            message = message.replace(f"{prefix}/", "")
        # kubectl's log header around kustomize's own words
        message = _KLOG.sub(lambda m: m.group(1).replace('\\"', '"'), message)
        name = unit.folder or "."
        if message.startswith(f"{name}: "):
            message = message[len(name) + 2:]
        applied = f" (applied by {unit.by})" if unit.by else ""
        self.report.diagnostics.append(Diagnostic(self.display(unit.folder), 0,
                                                  f"cannot build {name}{applied}: {message}"))

    # -- building ------------------------------------------------------------------------

    def _prepare_copy(self) -> None:
        """A copy of the repository whose every kustomization asks kustomize for the origin
        of each object. kustomize honours it only in the kustomization it builds (paths
        relative to that one), so one copy serves every build."""
        shutil.copytree(self.root, self.copy, symlinks=True, ignore=shutil.ignore_patterns(".git"))
        for folder in sorted(self.kroots):
            for name in KUSTOMIZATION_FILES:
                path = self.copy / folder / name
                if path.is_file():
                    self._ask_origins(path)
                    break

    def _ask_origins(self, path: Path) -> None:
        try:
            text = path.read_text(encoding="utf-8")
            docs = list(load_documents(text, str(path)))
        except (OSError, UnicodeDecodeError, YAMLSyntaxError):
            return  # kustomize says what is wrong with it, when it is built
        if len(docs) != 1 or not isinstance(docs[0].data, dict):
            return
        data = docs[0].data
        have = data.get("buildMetadata")
        if isinstance(have, list) and "originAnnotations" in have:
            return
        if "buildMetadata" not in data:
            # Append a line, leaving the file otherwise as written; kept only if it reads back as
            # the same kustomization plus that field (no flow mapping, no second document).
            added = (text if text.endswith("\n") or not text else text + "\n") + "buildMetadata: [originAnnotations]\n"
            try:
                again = list(load_documents(added, str(path)))
            except YAMLSyntaxError:
                again = []
            if (len(again) == 1 and isinstance(again[0].data, dict)
                    and again[0].data.get("buildMetadata") == ["originAnnotations"]
                    and {k: v for k, v in again[0].data.items() if k != "buildMetadata"} == dict(data)):
                path.write_text(added, encoding="utf-8")
                return
        kept = [b for b in have if b == "transformerAnnotations"] if isinstance(have, list) else []
        try:
            # Flux's own rewrite of a kustomization (reconciler.generate), with the field set.
            generate(self.copy, path.parent, {"buildMetadata": [*kept, "originAnnotations"]})
        except GenerateError:
            pass  # built as written: its objects are named by folder only

    def _build(self, unit: _Unit) -> list[_Obj]:
        spec = unit.spec or {}
        if unit.files:
            rendered = render_files([(f, _read(self.root / f)) for f in unit.files])
        else:
            namespace = spec.get("targetNamespace") if isinstance(spec.get("targetNamespace"), str) else ""
            wanted = {k: spec[k] for k in _GENERATOR_FIELDS if spec.get(k) not in (None, "", [])}
            if wanted:
                if namespace:
                    wanted["targetNamespace"] = namespace
                rendered = self._generated(unit.folder, wanted)
            else:
                rendered = render(self.copy, unit.folder, namespace)
        return [self._locate(m, unit) for m in rendered.manifests]

    def _generated(self, folder: str, spec: dict[str, Any]) -> Any:
        """A Kustomization with patches, images, components or a name prefix/suffix: Flux's
        generator writes them into the folder's kustomization (the one file it writes), which
        is put back as it was after the build."""
        where = self.copy / folder
        kept = {name: (where / name).read_bytes() if (where / name).is_file() else None
                for name in KUSTOMIZATION_FILES}
        try:
            generate(self.copy, where, {**spec, "buildMetadata": ["originAnnotations"]})
            return render(self.copy, folder)
        finally:
            for name, content in kept.items():
                if content is None:
                    (where / name).unlink(missing_ok=True)
                else:
                    (where / name).write_bytes(content)

    def _locate(self, m: Manifest, unit: _Unit) -> _Obj:
        """The object, its origin annotation removed, with its source file and document."""
        origin = _pop_origin(m.obj)
        file: str | None = None
        src: LocDict | None = None
        if m.source.endswith(" (kustomize)"):
            base = m.source[: -len(" (kustomize)")]
            base = "" if base == "." else base
            if isinstance(origin, dict) and "repo" not in origin:
                rel = origin.get("path") or origin.get("configuredIn")
                if isinstance(rel, str):
                    candidate = posixpath.normpath(posixpath.join(base, rel))
                    if not candidate.startswith("../") and (self.root / candidate).is_file():
                        file = candidate
                        if "path" in origin:
                            src = self._find(candidate, m)
        else:
            rel, _, line = m.source.rpartition(":")
            if rel and line.isdigit():
                file = rel
                src = next((d for d in self.documents(rel) if d.line == int(line)), None)
        return _Obj(m, file, src, unit.folder or ".", unit.substituted)

    def _find(self, rel: str, m: Manifest) -> LocDict | None:
        """The document of `m` in its source file: same kind and name (and namespace, among
        several), else the file's one document of that kind (a name prefix changed it)."""
        same_kind = [d for d in self.documents(rel) if d.get("kind") == m.kind]
        named = [d for d in same_kind if isinstance(d.get("metadata"), dict) and d["metadata"].get("name") == m.name]
        if len(named) > 1:
            named = [d for d in named if d["metadata"].get("namespace") in (None, m.namespace)] or named
        if named:
            return named[0]
        return same_kind[0] if len(same_kind) == 1 else None

    # -- checking ------------------------------------------------------------------------

    def _check(self, walk: _Walk) -> None:
        targets: dict[str, list[_Obj]] = {}
        for target, o in walk.objects:
            targets.setdefault(target, []).append(o)
        for objects in targets.values():
            checked = [o for o in objects if o.is_checked()]
            if not any(not o.is_secret() for o in checked):
                continue
            docs: list[Document] = []
            by_doc: dict[str, list[tuple[str, _Obj]]] = {}  # path -> ("Kind ns/name:", object)
            for o in checked:
                doc = self._document(o)
                docs.append(doc)
                meta = o.manifest.obj.get("metadata") if isinstance(o.manifest.obj.get("metadata"), dict) else {}
                by_doc.setdefault(doc.path, []).append(
                    (f"{o.kind} {meta.get('namespace') or 'default'}/{meta.get('name')}:", o))
            sops = {(o.manifest.namespace or "default", o.manifest.name): o for o in objects
                    if o.is_secret() and "sops" in o.manifest.obj}
            _, diagnostics = check([], self.secrets_dir, extra=docs)
            assumed = 0
            for d in diagnostics:
                if walk.assumed and d.severity == "error" and any(
                        f"{kind} {ns}/{name} not found" in d.message
                        for ns, name in walk.self_repos for kind in ("GitRepository", "Kustomization")):
                    assumed += 1  # said once for the walk, below
                    continue
                self._add(self._judge(d, by_doc, sops))
            if assumed:
                ns, name = next(iter(walk.self_repos))
                self._add(Diagnostic(
                    self.display(walk.folder), 0,
                    f"{ns}/{name}, the GitRepository and Kustomization {walk.assumed}, is not defined here: taken "
                    f"as this repository for the {assumed} object{'s' if assumed != 1 else ''} that name it",
                    "warning"))

    def _document(self, o: _Obj) -> Document:
        if o.file and o.src is not None:
            return Document(self.display(o.file), o.src.line, _with_lines(o.manifest.obj, o.src, o.src.line))
        where = self.display(o.file) if o.file else f"{self.display('' if o.folder == '.' else o.folder)} (kustomize)"
        return Document(where, 0, located(o.manifest.obj))

    def _judge(self, d: Diagnostic, by_doc: dict[str, list[tuple[str, _Obj]]],
               sops: dict[tuple[str, str], _Obj]) -> Diagnostic:
        """A check's diagnostic, as it stands in a repository (rule 3)."""
        if d.severity != "error":
            return d
        o = next((obj for prefix, obj in by_doc.get(d.path, ()) if d.message.startswith(prefix)), None)
        if o is not None and o.is_secret():
            return _warning(d, "a Secret is a workload here: Herald reads it only for the objects that name it")
        missing = _SECRET_NOT_FOUND.search(d.message)
        if missing:
            encrypted = sops.get((missing.group(1), missing.group(2)))
            why = (f"it is SOPS-encrypted in {self.display(encrypted.file) if encrypted.file else encrypted.folder}, "
                   "which Herald cannot read here" if encrypted else
                   "a fleet repository leaves Secrets to the cluster or keeps them SOPS-encrypted")
            return _warning(d, f"{why}; Herald needs it where it runs")
        if o is not None and o.substituted and "${" in d.message:
            return _warning(d, "its Kustomization substitutes ${variables} (spec.postBuild) in the cluster; "
                               "the value is not known here")
        return d

    def _add(self, d: Diagnostic) -> None:
        """Once: a base two clusters build says the same of the same line twice."""
        key = (d.path, d.line, d.message, d.severity)
        if key not in self._said:
            self._said.add(key)
            self.report.diagnostics.append(d)

    def _report_inert(self) -> None:
        counts: Counter[str] = Counter()
        groups: dict[str, str] = {}
        for o in (o for walk in self._walks for _, o in walk.objects):
            if is_inert(o.manifest) and not o.is_checked():
                counts[o.kind] += 1
                groups.setdefault(o.kind, _group(o.manifest.api_version))
        self.report.inert = dict(sorted(counts.items()))
        for kind, n in sorted(counts.items()):
            controller = _CONTROLLERS.get(groups[kind]) or f"Flux's controller for {groups[kind]}"
            self.report.diagnostics.append(Diagnostic(
                self.display(""), 0,
                f"{kind}: {n} object{'s' if n != 1 else ''}; Herald does not act on {kind} ({controller} would)",
                "warning"))


def _warning(d: Diagnostic, why: str) -> Diagnostic:
    return Diagnostic(d.path, d.line, f"{d.message} ({why})", "warning")


def _line_of(o: _Obj, spec_field: str) -> int:
    """The line of `spec.<spec_field>` in the object's source, else of the object."""
    if o.src is None:
        return 0
    spec = o.src.get("spec")
    return spec.line_of(spec_field) if isinstance(spec, LocDict) and spec_field in spec else o.src.line


def _folder(path: str) -> str | None:
    try:
        return tree_folder(path)
    except RenderError:
        return None


def _read(path: Path) -> bytes | Exception:
    try:
        return path.read_bytes()
    except OSError as exc:
        return exc


def _pop_origin(obj: dict[str, Any]) -> Any:
    """Remove the origin annotation kustomize added; return it, read."""
    meta = obj.get("metadata")
    annotations = meta.get("annotations") if isinstance(meta, dict) else None
    if not isinstance(annotations, dict) or ORIGIN_ANNOTATION not in annotations:
        return None
    text = annotations.pop(ORIGIN_ANNOTATION)
    if not annotations:
        del meta["annotations"]
    try:
        return yaml.safe_load(text) if isinstance(text, str) else None
    except yaml.YAMLError:
        return None


def _with_lines(value: Any, src: Any, line: int) -> Any:
    """The built `value` as the loader's LocDict/LocList, each key and item at its line in the
    source document `src` where the source has it, else at the line of what holds it."""
    if isinstance(value, dict):
        out = LocDict()
        out.line = src.line if isinstance(src, LocDict) and src.line else line
        for key, item in value.items():
            has = isinstance(src, dict) and key in src
            at = src.line_of(key) if has and isinstance(src, LocDict) else out.line
            out[key] = _with_lines(item, src[key] if has else None, at)
            out.lines[key] = at
        return out
    if isinstance(value, list):
        items = LocList()
        items.line = src.line if isinstance(src, LocList) and src.line else line
        for i, item in enumerate(value):
            has = isinstance(src, list) and i < len(src)
            at = src.line_of(i) if has and isinstance(src, LocList) else items.line
            items.append(_with_lines(item, src[i] if has else None, at))
            items.lines.append(at)
        return items
    return value
