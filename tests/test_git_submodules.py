"""A GitRepository with `recurseSubmodules` (issue 16): the submodules' trees, at the commits the
repository records, are part of what its Kustomizations render, as in source-controller's
artifact; without it they are not. Real repositories with a real submodule (a relative URL,
as most .gitmodules write it), the real reconciler, the test API server."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from herald import config
from tests.fixtures_herald import Repo, git
from tests.kubeapi import KubeAPIServer
from tests.test_honest_runs import deliver, drain_events, finals, kustomization, make_worker, push  # noqa: F401


def with_a_submodule(repo: Repo, tmp_path: Path) -> str:
    """`vendor/library` is a submodule (../library.git, beside the repository's remote) holding a
    ConfigMap, which the Kustomization applies."""
    library = repo.bare.parent / "library.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(library)], check=True)
    work = tmp_path / "library-work"
    subprocess.run(["git", "clone", "-q", str(library), str(work)], check=True, capture_output=True)
    (work / "cm.yaml").write_text(json.dumps({"apiVersion": "v1", "kind": "ConfigMap",
                                              "metadata": {"name": "library", "namespace": "default"}}) + "\n")
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", "library settings", cwd=work)
    git("push", "-q", "origin", "HEAD:main", cwd=work)
    git("-c", "protocol.file.allow=always", "submodule", "add", "-q", "../library.git", "vendor/library", cwd=repo.work)
    return repo.commit({}, "vendor library")


def herald_config(path: Path, url: str, **spec: object) -> config.Config:
    source = {"interval": "10m", "url": url, "ref": {"branch": "main"}, **spec}
    path.write_text(json.dumps({"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
                                "metadata": {"name": "app", "namespace": "flux-system"}, "spec": source})
                    + "\n" + kustomization("app", "./vendor/library"))
    return config.load([path])


def test_submodules_are_part_of_the_source_with_recurse_submodules(make_worker, tmp_path: Path, repo: Repo,
                                                                   kube_api: KubeAPIServer) -> None:
    sha = with_a_submodule(repo, tmp_path)
    worker = make_worker(herald_config(tmp_path / "herald.yaml", repo.url, recurseSubmodules=True))
    deliver(worker, push(sha))
    assert finals(drain_events(worker.bus)) == [("Kustomization", "app", "ReconciliationSucceeded")]
    assert kube_api.get_object("v1", "ConfigMap", "default", "library") is not None


def test_without_recurse_submodules_the_submodule_is_empty_as_in_flux(make_worker, tmp_path: Path, repo: Repo,
                                                                       kube_api: KubeAPIServer) -> None:
    sha = with_a_submodule(repo, tmp_path)
    worker = make_worker(herald_config(tmp_path / "herald.yaml", repo.url))
    deliver(worker, push(sha))
    drain_events(worker.bus)
    assert kube_api.get_object("v1", "ConfigMap", "default", "library") is None
