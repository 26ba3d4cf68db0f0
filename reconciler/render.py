"""Turn a Kustomization's `spec.path` into the Kubernetes objects to apply.

A folder with a kustomization.yaml is built by kustomize (`kubectl kustomize`, or a
`kustomize` binary); any other folder is read as Flux's generated kustomization reads it:
its YAML files, recursively, except that a subfolder with a kustomization.yaml of its own is
built by kustomize as one resource, and not read file by file. YAML that is not a Kubernetes
object (no apiVersion/kind: a values file, a CI config) is skipped rather than applied or
failed on.

Every object then carries what Flux would send: kustomize reads YAML with go-yaml v3
(`herald.yamlsrc`) and hands the objects on as JSON, so timestamps become RFC 3339 text,
whole floats become integers, annotations keep their source text, and what JSON cannot carry
(a key that is not a string, an infinity) fails the render as it fails kustomize.
"""

from __future__ import annotations

import json
import math
import os
import posixpath
import shutil
import subprocess
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from herald.yamlsrc import LocDict, LocList, Timestamp, YAMLSyntaxError, load_documents
from reconciler.kustomize_paths import KUSTOMIZATION_FILES, EscapingPath, check_inside


class RenderError(Exception):
    pass


@dataclass
class Manifest:
    obj: dict[str, Any]
    source: str = ""  # "path/in/repo.yaml:line", for error messages

    @property
    def kind(self) -> str:
        return self.obj.get("kind", "")

    @property
    def api_version(self) -> str:
        return self.obj.get("apiVersion", "")

    @property
    def name(self) -> str:
        return (self.obj.get("metadata") or {}).get("name", "")

    @property
    def namespace(self) -> str:
        return (self.obj.get("metadata") or {}).get("namespace", "")

    def ref(self) -> str:
        """`Kind/namespace/name` (or `Kind/name` when cluster-scoped), as Flux lists changes."""
        return f"{self.kind}/{self.namespace}/{self.name}" if self.namespace else f"{self.kind}/{self.name}"


@dataclass
class Rendered:
    manifests: list[Manifest] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # files or documents that were not objects


def _plain(obj: dict[str, Any], source: str) -> dict[str, Any]:
    """A Kubernetes object as the loader read it → the plain dicts and lists Flux would send.

    kustomize hands each object on as Go's JSON of what go-yaml read: a timestamp is written
    as RFC 3339 text, a float with no fraction as an integer, and NaN, infinities and keys
    that are not strings are refused. It rewrites annotations from their source text.
    """
    out = _json(obj, source)
    meta = obj.get("metadata")
    annotations = meta.get("annotations") if isinstance(meta, dict) else None
    if isinstance(annotations, dict):
        out["metadata"]["annotations"] = {k: _annotation(annotations, k) for k in annotations}
    return out


def _annotation(annotations: dict[str, Any], key: str) -> str:
    """kustomize keeps an annotation's text as written (`012`, `on`, `2024-01-01`), and makes
    one that is not a scalar the empty string."""
    value = annotations[key]
    if value.__class__ is str:
        return value
    text = annotations.text_of(key) if isinstance(annotations, LocDict) else None
    if text is not None:
        return text
    if isinstance(value, (dict, list)):
        return ""
    return str(value) if isinstance(value, str) else json.dumps(value)


def _json(value: Any, source: str) -> Any:
    cls = value.__class__
    if cls is str or cls is int or cls is bool or value is None:
        return value
    if cls is LocList or cls is list:
        return [_json(v, source) for v in value]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if k.__class__ is not str:
                what = ("a timestamp" if isinstance(k, Timestamp) else "null" if k is None
                        else "a boolean" if isinstance(k, bool) else "a number")
                raise RenderError(f"{source}: the key {k} is read as {what}, not a string, and JSON keys are "
                                  f"strings (kustomize refuses it too): quote it")
            out[k] = _json(v, source)
        return out
    if isinstance(value, list):
        return [_json(v, source) for v in value]
    if isinstance(value, Timestamp):
        return value.instant
    if cls is float:
        if not math.isfinite(value):
            raise RenderError(f"{source}: {value} cannot be sent to Kubernetes: JSON has no NaN or infinity")
        # Go's JSON writes a whole float64 as an integer below 1e21; so does Flux.
        return int(value) if value.is_integer() and abs(value) < 1e21 else value
    if isinstance(value, (str, int)):  # subclasses: the plain value
        return str(value) if isinstance(value, str) else int(value)
    raise RenderError(f"{source}: a value of type {type(value).__name__} ({value!r:.40}) "
                      "cannot be sent to Kubernetes as JSON")


def _is_object(doc: Any) -> bool:
    return isinstance(doc, dict) and isinstance(doc.get("apiVersion"), str) and isinstance(doc.get("kind"), str)


MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


def _has_kustomization(folder: Path) -> bool:
    return any((folder / name).is_file() for name in KUSTOMIZATION_FILES)


def _walk(folder: Path) -> Iterator[tuple[Path, bool]]:
    """What Flux's generated kustomization lists for `folder`, in its order (a depth-first walk
    by name): each manifest file as (path, False), and each subfolder holding a
    kustomization.yaml as (path, True), without going into it. Hidden entries are skipped, and
    symlinked folders are not followed, as Go's filepath.Walk does not follow them."""
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as exc:
        raise RenderError(f"{folder}: cannot read: {exc}") from None
    for entry in entries:
        if entry.name.startswith("."):
            continue
        path = Path(entry.path)
        if entry.is_dir(follow_symlinks=False):
            if _has_kustomization(path):
                yield path, True
            else:
                yield from _walk(path)
        elif path.suffix in MANIFEST_SUFFIXES and entry.is_file():
            yield path, False


def _read_plain(root: Path, folder: Path, timeout: float) -> Rendered:
    walked = list(_walk(folder))
    subfolders = [path for path, built in walked if built]
    builds: dict[Path, Rendered | RenderError] = {}
    if subfolders:  # one kustomize process per subfolder (~0.1 s each): run a few at once
        with ThreadPoolExecutor(max_workers=min(4, len(subfolders))) as pool:
            builds = dict(zip(subfolders, pool.map(lambda p: _attempt(_kustomize, root, p, timeout), subfolders)))
    out = Rendered()
    texts: list[tuple[str, bytes | Exception]] = []

    def read_texts() -> None:
        part = render_files(texts)
        out.manifests.extend(part.manifests)
        out.skipped.extend(part.skipped)
        texts.clear()

    for path, built in walked:  # in Flux's order; the first failure in that order is the one told
        if built:
            read_texts()
            build = builds[path]
            if isinstance(build, RenderError):
                raise build
            out.manifests.extend(build.manifests)
            continue
        try:
            texts.append((str(path.relative_to(root)), path.read_bytes()))
        except OSError as exc:
            texts.append((str(path.relative_to(root)), exc))
    read_texts()
    return out


def _attempt(build: Callable[..., Rendered], *args: Any) -> Rendered | RenderError:
    try:
        return build(*args)
    except RenderError as exc:
        return exc


def render_files(files: Iterable[tuple[str, bytes | Exception]], target_namespace: str = "") -> Rendered:
    """Plain YAML from (path in the repository, content) pairs, in the order given: what a
    folder without a kustomization.yaml renders to. The content may be the error that
    reading it raised."""
    out = Rendered()
    for rel, content in files:
        try:
            if isinstance(content, Exception):
                raise content
            text = content.decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise RenderError(f"{rel}: cannot read: {exc}") from None
        try:
            docs = list(load_documents(text, rel))
        except YAMLSyntaxError as exc:
            raise RenderError(str(exc)) from None
        for doc in docs:
            if not _is_object(doc.data):
                out.skipped.append(f"{rel}:{doc.line}")
                continue
            if doc.data["kind"].endswith("List") and isinstance(doc.data.get("items"), list):
                for item in doc.data["items"]:
                    if _is_object(item):
                        out.manifests.append(Manifest(_plain(item, f"{rel}:{item.line}"), f"{rel}:{item.line}"))
                continue
            name = (doc.data.get("metadata") or {}).get("name") if isinstance(doc.data.get("metadata"), dict) else None
            if not name:
                raise RenderError(f"{rel}:{doc.line}: {doc.data['kind']} has no metadata.name")
            out.manifests.append(Manifest(_plain(doc.data, f"{rel}:{doc.line}"), f"{rel}:{doc.line}"))
    _set_namespace(out, target_namespace)
    return out


def tree_folder(path: str) -> str:
    """`spec.path` as a folder of the repository's tree ("" for its root), or RenderError
    when it points outside the repository."""
    norm = posixpath.normpath(path or ".")
    if norm == ".." or norm.startswith(("/", "../")):
        raise RenderError(f"spec.path {path!r} points outside the repository")
    return "" if norm == "." else norm


def plain_files(folder: str, files: Iterable[str]) -> list[str] | None:
    """Which of the tree's files (paths from its root) a plain render of `folder` reads, in
    the order `_read_plain` reads them; None when `folder`, or a folder below it, has a
    kustomization.yaml (kustomize needs the checkout on disk)."""
    prefix = f"{folder}/" if folder else ""
    inside = [f for f in files if f.startswith(prefix)]
    if any(posixpath.basename(f) in KUSTOMIZATION_FILES
           and not any(part.startswith(".") for part in f[len(prefix):].split("/")) for f in inside):
        return None
    wanted = [f for f in inside if posixpath.splitext(f)[1] in MANIFEST_SUFFIXES
              and not any(part.startswith(".") for part in f[len(prefix):].split("/"))]
    return sorted(wanted, key=lambda f: PurePosixPath(f).parts)


def _kustomize(root: Path, folder: Path, timeout: float) -> Rendered:
    rel = str(folder.relative_to(root)) or "."
    try:
        check_inside(root, folder)  # load restrictions off, as Flux builds: nothing outside the checkout
    except EscapingPath as exc:
        raise RenderError(str(exc)) from None
    if shutil.which("kustomize"):
        cmd = ["kustomize", "build", "--load-restrictor", "LoadRestrictionsNone", str(folder)]
    elif shutil.which("kubectl"):
        cmd = ["kubectl", "kustomize", "--load-restrictor", "LoadRestrictionsNone", str(folder)]
    else:
        raise RenderError(f"{rel}: has a kustomization.yaml but neither kustomize nor kubectl is on PATH")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise RenderError(f"{rel}: kustomize build timed out after {timeout:.0f}s") from None
    if proc.returncode != 0:
        raise RenderError(f"{rel}: kustomize build failed: {proc.stderr.strip()}")
    out = Rendered()
    source = f"{rel} (kustomize)"
    try:
        # kustomize writes YAML as go-yaml does: read it back with the same rules (`=` is a
        # string, not YAML 1.1's value tag).
        for doc in load_documents(proc.stdout, source):
            if _is_object(doc.data):
                out.manifests.append(Manifest(_plain(doc.data, source), source))
    except YAMLSyntaxError as exc:
        raise RenderError(f"{rel}: kustomize output is not YAML: {exc.message}") from None
    return out


def render(root: Path, path: str, target_namespace: str = "", timeout: float = 120.0) -> Rendered:
    """Render `path` (relative to the checkout `root`); it must stay inside the checkout."""
    folder = (root / path).resolve()
    if not folder.is_relative_to(root.resolve()):
        raise RenderError(f"spec.path {path!r} points outside the repository")
    if not folder.is_dir():
        raise RenderError(f"spec.path {path!r} not found in the revision")
    if _has_kustomization(folder):
        out = _kustomize(root.resolve(), folder, timeout)
    else:
        out = _read_plain(root.resolve(), folder, timeout)
    _set_namespace(out, target_namespace)
    return out


def _set_namespace(out: Rendered, target_namespace: str) -> None:
    if target_namespace:
        for m in out.manifests:
            # Cluster-scoped kinds drop the namespace again at apply time, once the API
            # server's discovery has said which kinds are namespaced.
            m.obj.setdefault("metadata", {})["namespace"] = target_namespace
