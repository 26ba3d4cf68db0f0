"""Which files a kustomize build may read: anywhere in the checkout, nowhere else.

Flux builds with kustomize's load restrictions off (`LoadRestrictionsNone`): a
kustomization.yaml may name a file outside its own folder (`../common/settings.yaml`, a patch
in a sibling folder), which kustomize's default (`LoadRestrictionsRootOnly`) refuses. Herald
builds the same way, so such fleets build here as they do in Flux. Flux keeps the build inside
the artifact with a filesystem rooted there; `kubectl kustomize` has no such option, so before
a build Herald reads every kustomization file the build can reach and refuses one that names a
path outside the checkout (a `configMapGenerator` of `../../../../etc/passwd` would otherwise
put the host's file in a ConfigMap). Symlinks cannot lead out: the checkout is extracted with
links outside it refused.

The paths read are kustomize v5's: `resources`, `components`, `bases`, `crds`,
`configurations`, `generators`, `transformers`, `validators`, `patchesStrategicMerge` (file
entries), the `path` of `patches`, `patchesJson6902` and `replacements`, the `files`, `envs`
and `env` of `configMapGenerator` and `secretGenerator`, `openapi.path`, and the values files
of `helmCharts`. Remote resources (URLs) are kustomize's to fetch, as in Flux.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
_LISTS = ("resources", "components", "bases", "crds", "configurations", "generators", "transformers",
          "validators", "patchesStrategicMerge")
_WITH_PATH = ("patches", "patchesJson6902", "replacements")
_GENERATORS = ("configMapGenerator", "secretGenerator")


class EscapingPath(Exception):
    """A kustomization names a path outside the checkout; the message names the file and field."""


def _is_remote(text: str) -> bool:
    return "://" in text or text.startswith(("git@", "github.com/", "gitlab.com/", "bitbucket.org/"))


def _references(data: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(field, path) of every local path a kustomization names."""
    for name in _LISTS:
        for item in data.get(name) or []:
            if isinstance(item, str) and "\n" not in item and not _is_remote(item):
                yield name, item
    for name in _WITH_PATH:
        for item in data.get(name) or []:
            if isinstance(item, dict) and isinstance(item.get("path"), str):
                yield f"{name}[].path", item["path"]
    for name in _GENERATORS:
        for item in data.get(name) or []:
            if not isinstance(item, dict):
                continue
            for entry in item.get("files") or []:
                if isinstance(entry, str):
                    yield f"{name}[].files", entry.partition("=")[2] or entry
            for entry in [*(item.get("envs") or []), *([item["env"]] if isinstance(item.get("env"), str) else [])]:
                if isinstance(entry, str):
                    yield f"{name}[].envs", entry
    openapi = data.get("openapi")
    if isinstance(openapi, dict) and isinstance(openapi.get("path"), str):
        yield "openapi.path", openapi["path"]
    for chart in data.get("helmCharts") or []:
        if isinstance(chart, dict):
            for key in ("valuesFile",):
                if isinstance(chart.get(key), str):
                    yield f"helmCharts[].{key}", chart[key]
            for entry in chart.get("additionalValuesFiles") or []:
                if isinstance(entry, str):
                    yield "helmCharts[].additionalValuesFiles", entry


def check_inside(root: Path, folder: Path) -> None:
    """Refuse (EscapingPath) a build of `folder` that would read outside `root`: every
    kustomization it reaches, through resources and components, names paths inside `root`."""
    root = root.resolve()
    seen: set[Path] = set()
    pending = [folder.resolve()]
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        kfile = next((current / n for n in KUSTOMIZATION_FILES if (current / n).is_file()), None)
        if kfile is None:
            continue
        try:
            data = yaml.safe_load(kfile.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            continue  # kustomize reports it, with its own words
        if not isinstance(data, dict):
            continue
        rel = kfile.relative_to(root) if kfile.is_relative_to(root) else kfile
        for field, ref in _references(data):
            target = (current / ref).resolve()
            if not target.is_relative_to(root):
                raise EscapingPath(f"{rel}: {field} names {ref!r}, outside the repository: Herald builds with "
                                   "kustomize's load restrictions off, as Flux does, and so refuses paths that "
                                   "leave the checkout")
            if target.is_dir():
                pending.append(target)
