"""kustomize's load restrictions off, as Flux builds (issue 16), and still nothing outside the
checkout: a kustomization.yaml may name a file in a sibling folder, never one outside the
repository. Real `kubectl kustomize` builds of folders written in each scenario."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reconciler.render import RenderError, render


def config_map(name: str) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}}) + "\n"


def write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def test_a_file_in_a_sibling_folder_builds_as_in_flux(tmp_path: Path) -> None:
    repo = tmp_path / "checkout"
    write(repo, {"common/settings.yaml": config_map("settings"),
                 "apps/web/kustomization.yaml": "resources: [web.yaml, ../../common/settings.yaml]\n",
                 "apps/web/web.yaml": config_map("web")})
    names = sorted(m.name for m in render(repo, "apps/web").manifests)
    assert names == ["settings", "web"]


@pytest.mark.parametrize(("kustomization", "field"), [
    ("resources: [../../outside.yaml]\n", "resources"),
    ("configMapGenerator: [{name: leak, files: [passwd=../../../../../../etc/passwd]}]\n", "configMapGenerator[].files"),
    ("secretGenerator: [{name: leak, envs: [../../host.env]}]\n", "secretGenerator[].envs"),
    ("patches: [{path: ../../patch.yaml}]\n", "patches[].path"),
])
def test_a_path_outside_the_checkout_is_refused_before_kustomize_reads_it(tmp_path: Path, kustomization: str,
                                                                          field: str) -> None:
    (tmp_path / "outside.yaml").write_text(config_map("outside"))
    repo = tmp_path / "checkout"
    write(repo, {"app/kustomization.yaml": kustomization})
    with pytest.raises(RenderError) as refused:
        render(repo, "app")
    assert f"app/kustomization.yaml: {field} names" in str(refused.value)
    assert "outside the repository" in str(refused.value)


def test_a_base_that_reaches_outside_is_refused_too(tmp_path: Path) -> None:
    repo = tmp_path / "checkout"
    write(repo, {"overlay/kustomization.yaml": "resources: [../base]\n",
                 "base/kustomization.yaml": "configMapGenerator: [{name: x, files: [../../secret.txt]}]\n"})
    with pytest.raises(RenderError, match="base/kustomization.yaml: configMapGenerator"):
        render(repo, "overlay")
