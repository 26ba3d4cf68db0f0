"""Prepare a Kustomization's folder for `kustomize build` as Flux's kustomize generator does.

Why: a Kustomization with `targetNamespace`, `patches`, `images`, `components`, `namePrefix`,
`nameSuffix` or `buildMetadata` is not "the folder's YAML": Flux writes those fields into the
folder's kustomization.yaml (creating one when there is none) and lets kustomize apply them.
Reproducing them by hand would drift from kustomize (its namespace transformer renames a
Namespace object and skips cluster-scoped kinds; its image transformer knows where images hide;
patch targets use kustomize's selectors), so Herald does what Flux does: it edits the folder
and runs kustomize. This module is that edit; building is the caller's.

Followed from fluxcd/pkg `kustomize/kustomize_generator.go` (`GenerateManifest`,
`findOrGenerateKustomization`, `scanManifests`, `IsLocalRelativePath`), as used by
kustomize-controller (`internal/controller/kustomization_controller.go`, `generate`/`build`/
`apply`), and from the API in `api/v1/kustomization_types.go` and
`docs/spec/v1/kustomizations.md`:

- The first of kustomization.yaml, kustomization.yml, Kustomization that is a file is the
  folder's kustomization; Flux reads it into kustomize's Kustomization type and writes it back
  to the same file, so fields kustomize does not know are dropped (kustomize alone would fail
  on them) and empty ones vanish. An existing kustomization without `resources` gets
  `buildMetadata: [originAnnotations]` (to dodge kustomize's "kustomization.yaml is empty"),
  which shows: every built object then carries a `config.kubernetes.io/origin` annotation.
- With none, Flux generates one listing, in a walk by name, every *.yaml/*.yml file below the
  folder and every subfolder holding a kustomization file (as "./sub", not entered). Every such
  file must decode as Kubernetes objects (a `kind`, and a `metadata.name` unless the kind is a
  List); one that does not (a values file, a CI config) fails the generation: Flux expects it
  excluded by `.sourceignore`. An empty folder gets `namespace: _placeholder` and no resources.
  Flux only ever sees the source-controller's artifact, which leaves out what `.sourceignore`
  files (and the GitRepository's `spec.ignore`) exclude, plus `.git/` and, when no ignore
  pattern exists at all, CI files (`.github/`, `.gitlab-ci.yml`, ...) and `.sops.yaml`-like
  files; `generate` applies the same rules (fluxcd/pkg `sourceignore`, go-git's gitignore
  matching as fluxcd/pkg copies it) when it discovers files.
- `targetNamespace` sets `namespace`, `namePrefix` and `nameSuffix` replace theirs; `patches`
  and `components` are appended after the file's own; an image in `images` whose name the file
  already lists is merged field by field (newName replaces newName; newTag and digest replace
  both, as one version), any other is appended; a non-empty `buildMetadata` replaces the file's.
- A component must be a local, relative path (not a URL, not absolute), relative to `spec.path`;
  with `ignoreMissingComponents` one that does not exist (or lies outside the repository, which
  Flux's secure filesystem reports as missing) is left out.
- `commonMetadata` is not a kustomize field: Flux sets its labels and annotations on every built
  object's metadata just before applying (after post-build substitution), overriding same keys
  and touching no selector or template. `apply_common_metadata` is that step; the caller runs it
  on the final objects whichever way they were rendered.

Where Herald is stricter than Flux: Flux gets the spec from the API server, whose schema refuses
wrong types and empty names; here the spec is plain YAML from Git, so `generate` checks its shape
and names the field. Problems kustomize would only report at build time (a JSON 6902 patch without
a target, a component that does not exist, a patch that is not YAML) are reported here. Paths
never leave `root`: the folder, a component, a symlinked manifest, kustomization or .sourceignore
file that resolves outside it is an error (with `ignoreMissingComponents`, such a component is
left out, as Flux leaves it out).

For the caller: Flux runs the generator before every build, even for a spec that sets none of
these fields (the round trip and the originAnnotations rule above still apply), so call `generate`
before every kustomize build of a Kustomization, once per fresh checkout (a second call would
merge the spec in twice, as Flux never does). `needs_generator` tells when a folder without a
kustomization.yaml must take that road instead of a plain read. Flux builds with kustomize's load
restrictions off (`kubectl kustomize --load-restrictor=LoadRestrictionsNone`), confining reads to
the repository with its own filesystem; `generate` checks only the paths it lists or writes.
A symlinked manifest inside the repository is listed, as kustomize and Herald's other roads read
it (source-controller's artifact has no symlinks at all); a symlinked folder is not entered.
"""

from __future__ import annotations

import functools
import math
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from herald.yamlsrc import YAMLSyntaxError, load_documents
from reconciler.render import KUSTOMIZATION_FILES

__all__ = [
    "GENERATOR_FIELDS",
    "GenerateError",
    "apply_common_metadata",
    "generate",
    "needs_generator",
    "prune_ignored",
]

KUSTOMIZATION_API_VERSION = "kustomize.config.k8s.io/v1beta1"
KUSTOMIZATION_KIND = "Kustomization"

# Kustomization spec fields that Flux turns into kustomization.yaml fields.
GENERATOR_FIELDS = ("targetNamespace", "namePrefix", "nameSuffix", "patches", "images", "components",
                    "buildMetadata")

_SELECTOR_KEYS = ("group", "version", "kind", "name", "namespace", "labelSelector", "annotationSelector")
_IMAGE_KEYS = ("name", "newName", "newTag", "digest")
_BUILD_METADATA = ("originAnnotations", "transformerAnnotations")
_JSON6902_OPS = ("add", "remove", "replace", "move", "copy", "test")
# kustomize.IsLocalRelativePath: prefixes that make a component remote.
_REMOTE_PREFIXES = ("git::", "gh:", "ssh://", "https://", "http://", "git@", "github.com:", "github.com/")


class GenerateError(Exception):
    """The spec or the folder cannot be prepared as Flux would; the message names the field
    (`spec.patches[1].target: ...`) or the file (path from the repository's root)."""


# --- the spec -----------------------------------------------------------------------------------


def needs_generator(spec: Mapping[str, Any]) -> bool:
    """Whether `spec` sets a field that kustomize must apply (see GENERATOR_FIELDS), so a folder
    without a kustomization.yaml cannot be read as plain files. `commonMetadata` is not one:
    it is applied after the build (`apply_common_metadata`), on either road. A field present
    with a wrong shape counts as set, so that `generate` reports it."""
    return any(_is_set(spec.get(name)) for name in GENERATOR_FIELDS)


def _is_set(value: Any) -> bool:
    return value is not None and not (isinstance(value, (list, tuple)) and not value)


@dataclass
class _Patch:
    patch: str
    target: dict[str, str] | None


@dataclass
class _Spec:
    target_namespace: str | None = None
    name_prefix: str | None = None
    name_suffix: str | None = None
    patches: list[_Patch] = field(default_factory=list)
    images: list[dict[str, str]] = field(default_factory=list)
    components: list[str] = field(default_factory=list)
    ignore_missing_components: bool = False
    build_metadata: list[str] = field(default_factory=list)


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


class _Problems:
    def __init__(self) -> None:
        self.messages: list[str] = []

    def add(self, message: str) -> None:
        self.messages.append(message)

    def raise_any(self) -> None:
        if self.messages:
            raise GenerateError("; ".join(self.messages))


def _string(value: Any, path: str, problems: _Problems, max_len: int = 0) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        problems.add(f"{path}: must be a string, got {_type_name(value)}")
        return None
    if max_len and not 1 <= len(value) <= max_len:
        # The CRD's MinLength=1/MaxLength: the API server refuses the Kustomization.
        problems.add(f"{path}: must be 1 to {max_len} characters long, got {len(value)}")
        return None
    return value


def _list(value: Any, path: str, problems: _Problems) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        problems.add(f"{path}: must be a list, got {_type_name(value)}")
        return []
    return value


def _unknown(item: Mapping[str, Any], known: tuple[str, ...], path: str, what: str, problems: _Problems) -> None:
    for key in item:
        if key not in known:
            problems.add(f"{path}: unknown field {key!r} ({what} has {', '.join(known)})")


def _read_spec(spec: Mapping[str, Any]) -> _Spec:
    problems = _Problems()
    if not isinstance(spec, Mapping):
        raise GenerateError(f"spec: must be a mapping, got {_type_name(spec)}")
    out = _Spec()
    out.target_namespace = _string(spec.get("targetNamespace"), "spec.targetNamespace", problems, 63)
    out.name_prefix = _string(spec.get("namePrefix"), "spec.namePrefix", problems, 200)
    out.name_suffix = _string(spec.get("nameSuffix"), "spec.nameSuffix", problems, 200)
    for i, item in enumerate(_list(spec.get("patches"), "spec.patches", problems)):
        patch = _read_patch(item, f"spec.patches[{i}]", problems)
        if patch:
            out.patches.append(patch)
    for i, item in enumerate(_list(spec.get("images"), "spec.images", problems)):
        image = _read_image(item, f"spec.images[{i}]", problems)
        if image:
            out.images.append(image)
    for i, item in enumerate(_list(spec.get("components"), "spec.components", problems)):
        path = f"spec.components[{i}]"
        if not isinstance(item, str):
            problems.add(f"{path}: must be a string, got {_type_name(item)}")
        elif not item:
            problems.add(f"{path}: must not be empty")
        elif not _is_local_relative(item):
            problems.add(f"{path}: {item!r} must be a local path relative to spec.path (Flux refuses URLs "
                         "and absolute paths)")
        else:
            out.components.append(item)
    ignore_missing = spec.get("ignoreMissingComponents")
    if ignore_missing is not None and not isinstance(ignore_missing, bool):
        problems.add(f"spec.ignoreMissingComponents: must be true or false, got {_type_name(ignore_missing)}")
    out.ignore_missing_components = ignore_missing is True
    for i, item in enumerate(_list(spec.get("buildMetadata"), "spec.buildMetadata", problems)):
        if item not in _BUILD_METADATA:
            problems.add(f"spec.buildMetadata[{i}]: {item!r} is not one of: {', '.join(_BUILD_METADATA)}")
        else:
            out.build_metadata.append(item)
    problems.raise_any()
    return out


def _read_patch(item: Any, path: str, problems: _Problems) -> _Patch | None:
    if not isinstance(item, Mapping):
        problems.add(f"{path}: must be a mapping with patch and an optional target, got {_type_name(item)}")
        return None
    before = len(problems.messages)
    _unknown(item, ("patch", "target"), path, "a patch", problems)
    text = item.get("patch")
    if text is None:
        problems.add(f"{path}.patch: is required (an inline strategic-merge or JSON 6902 patch)")
    elif not isinstance(text, str):
        problems.add(f"{path}.patch: must be a string, got {_type_name(text)} (write it as a block: `patch: |`)")
    elif not text.strip():
        problems.add(f"{path}.patch: must not be empty")
    target: dict[str, str] | None = None
    raw_target = item.get("target")
    if raw_target is not None:
        if not isinstance(raw_target, Mapping):
            problems.add(f"{path}.target: must be a mapping, got {_type_name(raw_target)}")
        else:
            _unknown(raw_target, _SELECTOR_KEYS, f"{path}.target", "a target", problems)
            target = {}
            for key in _SELECTOR_KEYS:
                value = _string(raw_target.get(key), f"{path}.target.{key}", problems)
                if value:
                    target[key] = value
    if len(problems.messages) > before:
        return None
    assert isinstance(text, str)
    _check_patch_text(text, target is not None, path, problems)
    return _Patch(text, target) if len(problems.messages) == before else None


def _check_patch_text(text: str, has_target: bool, path: str, problems: _Problems) -> None:
    """What kustomize would refuse at build time, said here with the field's name."""
    try:
        docs = [doc.data for doc in load_documents(text, f"{path}.patch")]
    except YAMLSyntaxError as exc:
        problems.add(f"{path}.patch: line {exc.line} of the patch: {exc.message}")
        return
    if len(docs) == 1 and isinstance(docs[0], list):  # JSON 6902: a list of operations
        if not has_target:
            problems.add(f"{path}.target: is required for a JSON 6902 patch (kustomize cannot tell what "
                         "it applies to)")
        for i, op in enumerate(docs[0]):
            if not (isinstance(op, Mapping) and op.get("op") in _JSON6902_OPS and isinstance(op.get("path"), str)):
                problems.add(f"{path}.patch[{i}]: a JSON 6902 operation needs op (one of "
                             f"{', '.join(_JSON6902_OPS)}) and path")
        return
    if not docs:
        problems.add(f"{path}.patch: has no patch in it")
        return
    if has_target and len(docs) > 1:
        problems.add(f"{path}.patch: holds {len(docs)} strategic-merge patches; kustomize allows only one "
                     "with a target")
    for doc in docs:
        meta = doc.get("metadata") if isinstance(doc, Mapping) else None
        if not (isinstance(doc, Mapping) and _text(doc.get("kind"))
                and isinstance(meta, Mapping) and _text(meta.get("name"))):
            problems.add(f"{path}.patch: a strategic-merge patch needs kind and metadata.name (with a target, "
                         "the name is not used), or a JSON 6902 patch a list of operations")
            return


def _read_image(item: Any, path: str, problems: _Problems) -> dict[str, str] | None:
    if not isinstance(item, Mapping):
        problems.add(f"{path}: must be a mapping with name and newName, newTag or digest, got {_type_name(item)}")
        return None
    before = len(problems.messages)
    _unknown(item, _IMAGE_KEYS, path, "an image", problems)
    image: dict[str, str] = {}
    for key in _IMAGE_KEYS:
        value = _string(item.get(key), f"{path}.{key}", problems)
        if value:
            image[key] = value
    if "name" not in image and len(problems.messages) == before:
        problems.add(f"{path}.name: is required (the image name to replace, without its tag)")
    return image if len(problems.messages) == before else None


def _is_local_relative(path: str) -> bool:
    """fluxcd/pkg kustomize.IsLocalRelativePath: no remote prefix, not absolute (also after
    file://)."""
    lower = path.lower()
    if any(len(p) < len(path) and lower.startswith(p) for p in _REMOTE_PREFIXES):
        return False
    return not (path.startswith("/") or lower.removeprefix("file://").startswith("/"))


# --- commonMetadata -----------------------------------------------------------------------------


def apply_common_metadata(objs: Iterable[Mapping[str, Any]],
                          common_metadata: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """`spec.commonMetadata` applied to built objects, as kustomize-controller does after the
    build (fluxcd/pkg `ssa/utils.SetCommonMetadata`): every object's `metadata.labels` and
    `metadata.annotations` get these keys, replacing same keys; nothing else is touched (no
    selector, no pod template). An object without labels (or annotations) gets none added when
    there are none to add. Returns new objects; the given ones are not changed."""
    labels, annotations = _read_common_metadata(common_metadata)
    out: list[dict[str, Any]] = []
    for obj in objs:
        new = dict(obj)
        if labels or annotations:
            meta = new.get("metadata")
            meta = dict(meta) if isinstance(meta, Mapping) else {}
            for key, extra in (("labels", labels), ("annotations", annotations)):
                current = meta.get(key)
                merged = dict(current) if isinstance(current, Mapping) else {}
                merged.update(extra)
                if merged:
                    meta[key] = merged
            new["metadata"] = meta
        out.append(new)
    return out


def _read_common_metadata(common_metadata: Mapping[str, Any] | None) -> tuple[dict[str, str], dict[str, str]]:
    if common_metadata is None:
        return {}, {}
    problems = _Problems()
    if not isinstance(common_metadata, Mapping):
        raise GenerateError(f"spec.commonMetadata: must be a mapping, got {_type_name(common_metadata)}")
    _unknown(common_metadata, ("labels", "annotations"), "spec.commonMetadata", "commonMetadata", problems)
    maps: list[dict[str, str]] = []
    for key in ("labels", "annotations"):
        value = common_metadata.get(key)
        found: dict[str, str] = {}
        if value is not None and not isinstance(value, Mapping):
            problems.add(f"spec.commonMetadata.{key}: must be a mapping of strings, got {_type_name(value)}")
        elif value is not None:
            for k, v in value.items():
                if not isinstance(k, str) or not isinstance(v, str):
                    problems.add(f"spec.commonMetadata.{key}.{k}: must be a string, got {_type_name(v)} (quote it)")
                else:
                    found[k] = v
        maps.append(found)
    problems.raise_any()
    return maps[0], maps[1]


# --- generate -----------------------------------------------------------------------------------


def generate(root: Path, folder: Path, spec: Mapping[str, Any], *, source_ignore: str | None = None) -> None:
    """Leave `folder` (the Kustomization's `spec.path`; absolute, or relative to `root`) ready for
    `kustomize build`, as Flux's generator leaves it: its kustomization file, created when there
    is none, with `spec`'s fields merged in. `root` is a checkout of the repository that may be
    changed (Flux works on a throwaway copy too). `source_ignore` is the GitRepository's
    `spec.ignore`, which source-controller adds to the repository's `.sourceignore` files.

    Raises GenerateError naming the field or the file."""
    wanted = _read_spec(spec)
    root_r = Path(root).resolve()
    folder_given = folder if Path(folder).is_absolute() else Path(root) / folder
    folder_r = Path(folder_given).resolve()
    if not folder_r.is_relative_to(root_r):
        raise GenerateError(f"spec.path: {str(folder)!r} points outside the repository")
    if not folder_r.is_dir():
        raise GenerateError(f"spec.path: {_rel(folder_r, root_r)!r} is not a folder in the repository")

    kfile = _existing_kustomization(root_r, folder_r)
    if kfile is not None:
        kus = _read_kustomization(kfile, root_r)
        if _is_empty(kus.get("resources")):
            # Flux: "if there are no resources, set the build metadata to avoid
            # 'kustomization.yaml is empty' build error".
            kus["buildMetadata"] = ["originAnnotations"]
    else:
        kfile = folder_r / KUSTOMIZATION_FILES[0]
        resources = _discover(root_r, folder_r, _Matcher.for_repository(root_r, source_ignore))
        kus = {"apiVersion": KUSTOMIZATION_API_VERSION, "kind": KUSTOMIZATION_KIND}
        if resources:
            kus["resources"] = resources
        else:
            kus["namespace"] = "_placeholder"

    _merge(kus, wanted, root_r, folder_r)
    _write(kfile, _dump({k: kus[k] for k in sorted(kus) if not _omitted(k, kus[k])}))


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix() if path != root else "."


def _merge(kus: dict[str, Any], wanted: _Spec, root: Path, folder: Path) -> None:
    if wanted.target_namespace:
        kus["namespace"] = wanted.target_namespace
    if wanted.name_prefix:
        kus["namePrefix"] = wanted.name_prefix
    if wanted.name_suffix:
        kus["nameSuffix"] = wanted.name_suffix
    if wanted.patches:
        kus["patches"] = _items(kus.get("patches"), "patches") + [
            {"patch": p.patch, **({"target": dict(sorted(p.target.items()))} if p.target is not None else {})}
            for p in wanted.patches]
    components = [c for i, c in enumerate(wanted.components)
                  if _component_kept(c, f"spec.components[{i}]", wanted.ignore_missing_components, root, folder)]
    if components:
        kus["components"] = _items(kus.get("components"), "components") + components
    if wanted.images:
        images = [_typed_image(node, i) for i, node in enumerate(_items(kus.get("images"), "images"))]
        for image in wanted.images:
            existing = next((e for e in images if e.get("name") == image["name"]), None)
            if existing is None:
                images.append(dict(image))
                continue
            if image.get("newName"):
                existing["newName"] = image["newName"]
            if image.get("newTag") or image.get("digest"):  # one version: setting one clears the other
                for key in ("newTag", "digest"):
                    existing.pop(key, None)
                    if image.get(key):
                        existing[key] = image[key]
        kus["images"] = [{k: img[k] for k in sorted(img)} for img in images]
    if wanted.build_metadata:
        kus["buildMetadata"] = list(wanted.build_metadata)


def _component_kept(component: str, path: str, ignore_missing: bool, root: Path, folder: Path) -> bool:
    target = Path(os.path.normpath(folder / component))
    resolved = target.resolve()
    inside = resolved.is_relative_to(root)
    if inside and resolved.exists():
        return True
    if ignore_missing:  # Flux's secure filesystem says "does not exist" for both
        return False
    if not inside:
        raise GenerateError(f"{path}: {component!r} points outside the repository")
    raise GenerateError(f"{path}: {component!r} not found (looked for {_rel(target, root)}; set "
                        "spec.ignoreMissingComponents to leave out missing components)")


# --- the existing kustomization file -------------------------------------------------------------

# kustomize's Kustomization type (sigs.k8s.io/kustomize/api/types, v0.21.1): the fields Flux's
# read-and-write-back keeps. Pointer fields keep an empty mapping; the others are omitted empty.
_KUSTOMIZATION_FIELDS = (
    "kind", "apiVersion", "metadata", "openapi", "namePrefix", "nameSuffix", "namespace", "commonLabels",
    "labels", "commonAnnotations", "patchesStrategicMerge", "patchesJson6902", "patches", "images",
    "imageTags", "replacements", "replicas", "vars", "sortOptions", "resources", "components", "crds",
    "bases", "configMapGenerator", "secretGenerator", "helmGlobals", "helmCharts",
    "helmChartInflationGenerator", "generatorOptions", "configurations", "generators", "transformers",
    "validators", "buildMetadata",
)
_POINTER_FIELDS = ("metadata", "sortOptions", "helmGlobals", "generatorOptions")
_STRING_FIELDS = ("kind", "apiVersion", "namePrefix", "nameSuffix", "namespace")
_IMAGE_FIELDS = ("name", "newName", "tagSuffix", "newTag", "digest")  # kustomize's Image type


def _existing_kustomization(root: Path, folder: Path) -> Path | None:
    for name in KUSTOMIZATION_FILES:
        path = folder / name
        if path.is_symlink() and not path.resolve().is_relative_to(root):
            raise GenerateError(f"{_rel(path, root)}: is a symlink to outside the repository")
        if path.is_file():
            return path
    return None


# The kustomization file is read by Flux and by kustomize alike with sigs.k8s.io/yaml, which
# resolves plain scalars with go-yaml v2's YAML 1.1 rules (`on`, `y` are booleans). It is kept
# as PyYAML nodes, untouched scalars are written back with their own text, and kustomize reads
# them with those same rules. Only the fields Flux sets are interpreted, with go-yaml v2's rules.
_PLAIN = "herald:plain"
_QUOTED = "herald:quoted"
_STR_TAG = "tag:yaml.org,2002:str"


class _NodeResolver(yaml.resolver.BaseResolver):
    def resolve(self, kind: Any, value: Any, implicit: Any) -> str:
        if kind is yaml.ScalarNode and implicit[0]:
            return _PLAIN
        if kind is yaml.ScalarNode and implicit[1]:
            return _QUOTED
        return str(super().resolve(kind, value, implicit))


class _NodeLoader(yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser, yaml.composer.Composer,
                  _NodeResolver):
    def __init__(self, stream: str) -> None:
        yaml.reader.Reader.__init__(self, stream)
        yaml.scanner.Scanner.__init__(self)
        yaml.parser.Parser.__init__(self)
        yaml.composer.Composer.__init__(self)
        _NodeResolver.__init__(self)


_V2_TRUE = frozenset(("y", "Y", "yes", "Yes", "YES", "on", "On", "ON", "true", "True", "TRUE"))
_V2_FALSE = frozenset(("n", "N", "no", "No", "NO", "off", "Off", "OFF", "false", "False", "FALSE"))
_V2_NULL = frozenset(("", "~", "null", "Null", "NULL"))
_V2_INT = re.compile(r"[-+]?(?:0[xX][0-9a-fA-F]+|0[oO][0-7]+|0[bB][01]+|0[0-7]*|[1-9][0-9]*)")
_V2_FLOAT = re.compile(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?")
_V2_SPECIAL = {".inf": math.inf, ".Inf": math.inf, ".INF": math.inf, "+.inf": math.inf, "+.Inf": math.inf,
               "+.INF": math.inf, "-.inf": -math.inf, "-.Inf": -math.inf, "-.INF": -math.inf,
               ".nan": math.nan, ".NaN": math.nan, ".NAN": math.nan}


def _v2_plain(text: str) -> Any:
    """A plain scalar as go-yaml v2 decodes it into an interface{} (a timestamp stays text)."""
    if text in _V2_NULL:
        return None
    if text in _V2_TRUE or text in _V2_FALSE:
        return text in _V2_TRUE
    if text in _V2_SPECIAL:
        return _V2_SPECIAL[text]
    plain = text.replace("_", "")
    if _V2_INT.fullmatch(plain):
        value = int(plain, 0) if not re.fullmatch(r"[-+]?0[0-7]+", plain) else int(plain.replace("0", "0o", 1), 0)
        if -(2 ** 63) <= value < 2 ** 64:
            return value
    if _V2_FLOAT.fullmatch(plain):
        return float(plain)
    return text


def _value(node: yaml.Node) -> Any:
    """A scalar node's value as go-yaml v2 reads it; collections are returned as nodes."""
    if isinstance(node, yaml.ScalarNode):
        if node.tag == _PLAIN:
            return _v2_plain(node.value)
        if node.tag in (_QUOTED, _STR_TAG):
            return node.value
        return _Tagged(node.tag, node.value)
    return node


@dataclass(frozen=True)
class _Tagged:
    tag: str
    text: str


def _mapping(node: yaml.Node, what: str) -> dict[str, Any]:
    """A mapping node's keys (as text) and value nodes, with `<<` merges done, as go-yaml does."""
    if not isinstance(node, yaml.MappingNode):
        raise GenerateError(f"{what}: must be a mapping, got {_node_type(node)}")
    own: dict[str, Any] = {}
    merged: dict[str, Any] = {}
    for key, value in node.value:
        if not isinstance(key, yaml.ScalarNode):
            raise GenerateError(f"{what}: a key that is not a string")
        if key.tag == _PLAIN and key.value == "<<":
            for source in (value.value if isinstance(value, yaml.SequenceNode) else [value]):
                for k, v in _mapping(source, what).items():
                    merged.setdefault(k, v)
            continue
        own[key.value] = value
    return {**merged, **own}


def _node_type(node: Any) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    if isinstance(node, yaml.ScalarNode):
        return _type_name(_value(node))
    return _type_name(node)


def _read_kustomization(path: Path, root: Path) -> dict[str, Any]:
    """The file as Flux's read into kustomize's type leaves it: known fields only (Go matches
    names case-insensitively), TypeMeta defaulted, the fields Flux edits checked."""
    rel = _rel(path, root)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise GenerateError(f"{rel}: cannot read: {exc}") from None
    try:
        loader = _NodeLoader(text)
        try:
            node = loader.get_node() if loader.check_node() else None
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise GenerateError(f"{rel}:{mark.line + 1 if mark else 1}: invalid YAML: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise GenerateError(f"{rel}: invalid YAML: {exc}") from None
    kus: dict[str, Any] = {"apiVersion": KUSTOMIZATION_API_VERSION, "kind": KUSTOMIZATION_KIND}
    if node is None or (isinstance(node, yaml.ScalarNode) and _value(node) is None):
        return kus
    fields = {name.lower(): name for name in _KUSTOMIZATION_FIELDS}
    found = _mapping(node, rel)
    for key, value in sorted(found.items(), key=lambda kv: kv[0] in _KUSTOMIZATION_FIELDS):
        name = key if key in _KUSTOMIZATION_FIELDS else fields.get(key.lower())
        if name is None:
            continue  # unknown to kustomize's type: Flux's round trip drops it
        if name in _STRING_FIELDS:
            scalar = _value(value) if isinstance(value, yaml.ScalarNode) else value
            if scalar is not None and not isinstance(scalar, str):
                raise GenerateError(f"{rel}: {key}: must be a string, got {_node_type(value)} (quote it)")
            kus[name] = scalar or ""
        else:
            kus[name] = value
    for name in ("resources", "components", "patches", "images"):
        _items(kus.get(name), name, rel)
    for i, node in enumerate(_items(kus.get("images"), "images", rel)):
        _typed_image(node, i, rel)
    return kus


def _items(value: Any, name: str, rel: str = "kustomization file") -> list[Any]:
    if value is None or isinstance(value, list):
        return list(value or [])
    if isinstance(value, yaml.ScalarNode) and _value(value) is None:
        return []
    if not isinstance(value, yaml.SequenceNode):
        raise GenerateError(f"{rel}: {name}: must be a list, got {_node_type(value)}")
    if name in ("resources", "components"):
        for i, item in enumerate(value.value):
            if not (isinstance(item, yaml.ScalarNode) and isinstance(_value(item), (str, type(None)))):
                raise GenerateError(f"{rel}: {name}[{i}]: must be a string, got {_node_type(item)}")
    elif name in ("patches", "images"):
        for i, item in enumerate(value.value):
            _mapping(item, f"{rel}: {name}[{i}]")
    return list(value.value)


def _typed_image(node: Any, index: int, rel: str = "kustomization file") -> dict[str, str]:
    """An images entry as kustomize's Image type reads it (Go's case-insensitive names)."""
    fields = {name.lower(): name for name in _IMAGE_FIELDS}
    out: dict[str, str] = {}
    for key, value in _mapping(node, f"{rel}: images[{index}]").items():
        name = key if key in _IMAGE_FIELDS else fields.get(key.lower())
        if name is None:
            continue
        scalar = _value(value) if isinstance(value, yaml.ScalarNode) else value
        if scalar is not None and not isinstance(scalar, str):
            raise GenerateError(f"{rel}: images[{index}].{key}: must be a string, got "
                                f"{_node_type(value)} (quote it)")
        if scalar:
            out[name] = scalar
    return out


def _is_empty(value: Any) -> bool:
    if value is None or value == "" or value == [] or value == {}:
        return True
    if isinstance(value, yaml.ScalarNode):
        return _value(value) in (None, "")
    if isinstance(value, (yaml.SequenceNode, yaml.MappingNode)):
        return not value.value
    return False


def _omitted(name: str, value: Any) -> bool:
    """Go's omitempty on kustomize's type: a nil pointer, an empty string, list or map."""
    if name in _POINTER_FIELDS:
        return value is None or (isinstance(value, yaml.ScalarNode) and _value(value) is None)
    return _is_empty(value)


# --- writing YAML --------------------------------------------------------------------------------

_DQ_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r", "\0": "\\0"}


_SAFE_PLAIN = re.compile(r"[A-Za-z_./][A-Za-z0-9_./-]*")


def _str(text: str) -> str:
    """A string scalar that YAML 1.1 and 1.2 readers both read back as this string: plain when
    it cannot be mistaken for anything else (`./a.yaml`, `nginx`), double-quoted otherwise
    (`"yes"`, `"on"`, `"012"`, `"1e3"`)."""
    if _SAFE_PLAIN.fullmatch(text) and _v2_plain(text) == text:
        return text
    return _dq(text)


def _dq(text: str) -> str:
    """A double-quoted scalar: a string to YAML 1.1 and 1.2 readers alike, whatever it looks like."""
    out = []
    for ch in text:
        code = ord(ch)
        if ch in _DQ_ESCAPES:
            out.append(_DQ_ESCAPES[ch])
        elif code < 0x20 or 0x7F <= code <= 0x9F or code in (0x2028, 0x2029, 0xFEFF, 0xFFFE, 0xFFFF) \
                or 0xD800 <= code <= 0xDFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _scalar(value: Any) -> str | None:
    """The inline text of a scalar (or of an empty collection); None for a block collection."""
    if isinstance(value, yaml.ScalarNode):
        if value.tag == _PLAIN:
            return value.value if value.value else "null"
        if value.tag in (_QUOTED, _STR_TAG):
            return _str(value.value)
        tag = value.tag.replace("tag:yaml.org,2002:", "!!", 1) if value.tag.startswith("tag:yaml.org,2002:") \
            else f"!<{value.tag}>"
        return f"{tag} {_dq(value.value)}"
    if isinstance(value, (yaml.MappingNode, dict)):
        return None if (value.value if isinstance(value, yaml.MappingNode) else value) else "{}"
    if isinstance(value, (yaml.SequenceNode, list)):
        return None if (value.value if isinstance(value, yaml.SequenceNode) else value) else "[]"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return ".nan" if math.isnan(value) else (".inf" if value > 0 else "-.inf") if math.isinf(value) \
            else repr(value)
    if isinstance(value, str):
        return _str(value)
    raise GenerateError(f"cannot write a value of type {type(value).__name__} to a kustomization file")


def _pairs(value: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield _str(key), item
        return
    for key, item in value.value:
        text = _scalar(key)
        if text is None:
            raise GenerateError("a kustomization file key that is a mapping or a list is not supported")
        yield text, item


def _block(value: Any, indent: int, lines: list[str]) -> None:
    pad = " " * indent
    if isinstance(value, (dict, yaml.MappingNode)):
        for key, item in _pairs(value):
            text = _scalar(item)
            if text is not None:
                lines.append(f"{pad}{key}: {text}")
            else:
                lines.append(f"{pad}{key}:")
                _block(item, indent + 2, lines)
        return
    for item in (value if isinstance(value, list) else value.value):
        text = _scalar(item)
        if text is not None:
            lines.append(f"{pad}- {text}")
            continue
        nested: list[str] = []
        _block(item, indent + 2, nested)
        lines.append(f"{pad}- {nested[0][indent + 2:]}")
        lines.extend(nested[1:])


def _dump(kus: dict[str, Any]) -> str:
    lines: list[str] = []
    _block(kus, 0, lines)
    return "\n".join(lines) + "\n"


def _write(path: Path, text: str) -> None:
    """Replace `path` (never writing through a symlink) with `text`."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".herald-kustomization-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


# --- discovering a folder's manifests ------------------------------------------------------------


def _discover(root: Path, folder: Path, matcher: _Matcher) -> list[str]:
    """fluxcd/pkg scanManifests on the artifact: a walk by name below `folder` listing each
    *.yaml/*.yml file (it must hold Kubernetes objects) and each subfolder with a
    kustomization file (not entered), as paths from `folder` starting with "./"."""
    found: list[str] = []

    def in_artifact(path: Path, is_dir: bool) -> bool:
        return not matcher.excluded(path.relative_to(root).parts, is_dir)

    def walk(directory: Path) -> None:
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as exc:
            raise GenerateError(f"{_rel(directory, root)}: cannot read: {exc}") from None
        for entry in entries:
            path = Path(entry.path)
            if entry.is_dir(follow_symlinks=False):  # Go's Walk does not follow symlinked folders
                if not in_artifact(path, True) and not matcher.has_inclusions:
                    continue
                if any(_kustomization_in_artifact(path / name, root, in_artifact) for name in KUSTOMIZATION_FILES):
                    found.append("./" + path.relative_to(folder).as_posix())
                else:
                    walk(path)
                continue
            if os.path.splitext(entry.name)[1] not in (".yaml", ".yml") or not in_artifact(path, False):
                continue
            _check_manifest(path, root)
            found.append("./" + path.relative_to(folder).as_posix())

    walk(folder)
    return found


def _kustomization_in_artifact(path: Path, root: Path, in_artifact: Any) -> bool:
    return path.is_file() and path.resolve().is_relative_to(root) and in_artifact(path, False)


def _check_manifest(path: Path, root: Path) -> None:
    """Flux decodes each listed file with kustomize's resource factory and fails the generation
    on any file that is not Kubernetes objects."""
    rel = _rel(path, root)
    if path.is_symlink() and not path.resolve().is_relative_to(root):
        raise GenerateError(f"{rel}: is a symlink to outside the repository")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise GenerateError(f"{rel}: failed to decode Kubernetes YAML: cannot read: {exc}") from None
    try:
        for doc in load_documents(text, rel):
            problem = _not_a_resource(doc.data)
            if problem:
                raise GenerateError(f"{rel}:{doc.line}: failed to decode Kubernetes YAML: {problem} (Flux lists "
                                    "every YAML file of a folder without a kustomization.yaml; exclude files that "
                                    "are not Kubernetes objects with a .sourceignore file)")
    except YAMLSyntaxError as exc:
        raise GenerateError(f"{exc.path}:{exc.line}: failed to decode Kubernetes YAML: {exc.message}") from None


def _text(value: Any) -> str:
    """A scalar's text as kustomize reads it for a kind or a name; "" for none or a collection."""
    if value is None or isinstance(value, (Mapping, list)):
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _not_a_resource(data: Any) -> str:
    """Why kustomize's resource factory refuses a document ("" when it takes it): the rules of
    kyaml's GetValidatedMetadata and of inlining a List's items."""
    if data is None or (isinstance(data, (Mapping, list)) and not data):
        return ""
    if not isinstance(data, Mapping):
        return "missing Resource metadata (the document is not a mapping)"
    kind = _text(data.get("kind"))
    meta = data.get("metadata")
    if not kind and not _text(data.get("apiVersion")) and not meta:
        return "missing Resource metadata (no apiVersion, kind or metadata)"
    if not kind:
        return "missing kind"
    if kind.endswith("List"):
        items = data.get("items")
        if items is None:
            return ""
        if not isinstance(items, list):
            return f"expected a list in {kind}.items"
        for item in items:
            problem = _not_a_resource(item)
            if problem:
                return f"{kind}.items: {problem}"
        return ""
    if not (isinstance(meta, Mapping) and _text(meta.get("name"))):
        return f"missing metadata.name in the {kind}"
    return ""


# --- source-controller's ignore rules ------------------------------------------------------------

# fluxcd/pkg sourceignore: always excluded, and excluded only when no pattern exists at all.
_EXCLUDE_VCS = ".git/,.gitignore,.gitmodules,.gitattributes"
_EXCLUDE_EXT = "*.jpg,*.jpeg,*.gif,*.png,*.wmv,*.flv,*.tar.gz,*.zip"
_EXCLUDE_CI = (".github/,.circleci/,.travis.yml,.gitlab-ci.yml,appveyor.yml,.drone.yml,cloudbuild.yaml,"
               "codeship-services.yml,codeship-steps.yml")
_EXCLUDE_EXTRA = "**/.goreleaser.yml,**/.sops.yaml,**/.flux.yaml"
_EXCLUDE_DEFAULT = f"{_EXCLUDE_EXT},{_EXCLUDE_CI},{_EXCLUDE_EXTRA}"
_IGNORE_FILE = ".sourceignore"

_NO_MATCH, _EXCLUDE, _INCLUDE = 0, 1, 2


@functools.lru_cache(maxsize=512)
def _go_glob(pattern: str) -> re.Pattern[str] | None:
    """Go's filepath.Match pattern as a regular expression; None when Go calls it malformed."""
    out: list[str] = []
    i, n = 0, len(pattern)

    def esc(j: int) -> tuple[str, int] | None:  # Go's getEsc: one class character
        if j >= n or pattern[j] in "-]":
            return None
        if pattern[j] == "\\":
            j += 1
            if j >= n:
                return None
        return pattern[j], j + 1

    while i < n:
        c = pattern[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "\\":
            i += 1
            if i >= n:
                return None
            out.append(re.escape(pattern[i]))
        elif c == "[":
            i += 1
            negated = i < n and pattern[i] == "^"
            i += negated
            ranges: list[str] = []
            count = 0
            while True:
                if i < n and pattern[i] == "]" and count > 0:
                    break
                got = esc(i)
                if got is None:
                    return None
                lo, i = got
                hi = lo
                if i < n and pattern[i] == "-":
                    got = esc(i + 1)
                    if got is None:
                        return None
                    hi, i = got
                if i >= n:
                    return None
                if lo <= hi:
                    ranges.append(f"{re.escape(lo)}-{re.escape(hi)}")
                count += 1
            if ranges:
                out.append(f"[{'^' if negated else ''}{''.join(ranges)}]")
            else:
                out.append("[^/]" if negated else "(?!)")
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out), re.DOTALL)


def _go_match(pattern: str, name: str) -> bool | None:
    rx = _go_glob(pattern)
    return None if rx is None else rx.fullmatch(name) is not None


@dataclass(frozen=True)
class _Pattern:
    """One gitignore pattern as fluxcd/pkg's copy of go-git's gitignore matches it."""

    domain: tuple[str, ...]
    parts: tuple[str, ...]
    inclusion: bool
    dir_only: bool
    is_glob: bool

    @classmethod
    def parse(cls, text: str, domain: tuple[str, ...]) -> _Pattern:
        inclusion = text.startswith("!")
        if inclusion:
            text = text[1:]
        if not text.endswith("\\ "):
            text = text.rstrip(" ")
        dir_only = text.endswith("/")
        if dir_only:
            text = text[:-1]
        return cls(domain, tuple(text.split("/")), inclusion, dir_only, "/" in text)

    def match(self, path: tuple[str, ...], is_dir: bool) -> int:
        if len(path) <= len(self.domain) or path[:len(self.domain)] != self.domain:
            return _NO_MATCH
        rest = path[len(self.domain):]
        if not (self._glob_match(rest, is_dir) if self.is_glob else self._name_match(rest, is_dir)):
            return _NO_MATCH
        return _INCLUDE if self.inclusion else _EXCLUDE

    def _name_match(self, path: tuple[str, ...], is_dir: bool) -> bool:
        for i, name in enumerate(path):
            matched = _go_match(self.parts[0], name)
            if matched is None:
                return False
            if matched:
                return not (self.dir_only and not is_dir and i == len(path) - 1)
        return False

    def _glob_match(self, path: tuple[str, ...], is_dir: bool) -> bool:
        rest = list(path)
        matched = traverse = False
        for i, part in enumerate(self.parts):
            if part == "":
                traverse = False
                continue
            if part == "**":
                if i == len(self.parts) - 1:
                    break
                traverse = True
                continue
            if "**" in part or not rest:
                return False
            if traverse:
                traverse = False
                while rest:
                    hit = _go_match(part, rest.pop(0))
                    if hit is None:
                        return False
                    if hit:
                        matched = True
                        break
                    if not rest:
                        matched = False
            else:
                if not _go_match(part, rest[0]):
                    return False
                matched = True
                rest.pop(0)
        if matched and self.dir_only and not is_dir and not rest:
            matched = False
        return matched


def _read_patterns(text: str, domain: tuple[str, ...]) -> list[_Pattern]:
    out = []
    for line in text.split("\n"):
        line = line.removesuffix("\r")
        if not line.startswith("#") and line.strip():
            out.append(_Pattern.parse(line, domain))
    return out


def _patterns(text: str) -> list[_Pattern]:
    return [_Pattern.parse(p, ()) for p in text.split(",")]


class _Matcher:
    """What source-controller leaves out of the artifact (fluxcd/pkg artifact/storage
    SourceIgnoreFilter): later patterns win; the first that matches decides."""

    def __init__(self, patterns: list[_Pattern]) -> None:
        self.patterns = patterns
        self.has_inclusions = any(p.inclusion for p in patterns)

    @classmethod
    def for_repository(cls, root: Path, source_ignore: str | None) -> _Matcher:
        found = _load_ignore_files(root, root, ())
        if source_ignore:
            found += _read_patterns(source_ignore, ())
        return cls(_patterns(_EXCLUDE_VCS) + (found if found else _patterns(_EXCLUDE_DEFAULT)))

    def excluded(self, path: tuple[str, ...], is_dir: bool) -> bool:
        for pattern in reversed(self.patterns):
            result = pattern.match(path, is_dir)
            if result != _NO_MATCH:
                return result == _EXCLUDE
        return False


def _load_ignore_files(root: Path, directory: Path, domain: tuple[str, ...]) -> list[_Pattern]:
    """sourceignore.LoadIgnorePatterns: each folder's .sourceignore, the folder's own first, then
    its subfolders' by name (not .git, not symlinked folders), scoped to their folder."""
    out: list[_Pattern] = []
    ignore = directory / _IGNORE_FILE
    if ignore.is_file():
        if not ignore.resolve().is_relative_to(root):
            raise GenerateError(f"{_rel(ignore, root)}: is a symlink to outside the repository")
        try:
            out += _read_patterns(ignore.read_bytes().decode("utf-8", "replace"), domain)
        except OSError as exc:
            raise GenerateError(f"{_rel(ignore, root)}: cannot read: {exc}") from None
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except OSError as exc:
        raise GenerateError(f"{_rel(directory, root)}: cannot read: {exc}") from None
    for entry in entries:
        if entry.name != ".git" and entry.is_dir(follow_symlinks=False):
            out += _load_ignore_files(root, Path(entry.path), (*domain, entry.name))
    return out


def prune_ignored(root: Path, source_ignore: str | None = None) -> list[str]:
    """Remove from a checkout what source-controller leaves out of a GitRepository's artifact:
    `.git/`, what the repository's `.sourceignore` files and `spec.ignore` (`source_ignore`)
    exclude, and, when there are none, Flux's default exclusions (CI files, images, archives).
    Returns the paths removed (from `root`), so that Herald renders the files Flux renders."""
    root_r = Path(root).resolve()
    matcher = _Matcher.for_repository(root_r, source_ignore)
    removed: list[str] = []

    def walk(directory: Path) -> None:
        for entry in sorted(os.scandir(directory), key=lambda e: e.name):
            path = Path(entry.path)
            rel = path.relative_to(root_r)
            is_dir = entry.is_dir(follow_symlinks=False)
            if matcher.excluded(rel.parts, is_dir):
                if is_dir and matcher.has_inclusions:
                    walk(path)  # a later `!pattern` may take a file inside back in
                    continue
                shutil.rmtree(path) if is_dir else path.unlink()
                removed.append(rel.as_posix())
            elif is_dir:
                walk(path)

    walk(root_r)
    return removed
