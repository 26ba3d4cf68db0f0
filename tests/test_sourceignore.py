"""What a GitRepository's artifact leaves out (issue 16), as source-controller leaves it out:
the repository's `.sourceignore` files and `spec.ignore` (gitignore patterns), so Herald
applies the files Flux applies. Real repositories, the real reconciler, the test API server."""

from __future__ import annotations

import json
from pathlib import Path

from tests.fixtures_herald import Repo
from tests.kubeapi import KubeAPIServer
from tests.test_honest_runs import deliver, drain_events, finals, kustomization, make_worker, push  # noqa: F401
from herald import config


def config_map(name: str) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "default"},
                       "data": {"from": name}}) + "\n"


def herald_config(path: Path, url: str, ignore: str = "") -> config.Config:
    spec = {"interval": "10m", "url": url, "ref": {"branch": "main"}, **({"ignore": ignore} if ignore else {})}
    path.write_text(json.dumps({"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
                                "metadata": {"name": "app", "namespace": "flux-system"}, "spec": spec})
                    + "\n" + kustomization("app", "./deploy"))
    return config.load([path])


def test_files_a_sourceignore_excludes_are_not_applied(make_worker, tmp_path: Path, repo: Repo,
                                                       kube_api: KubeAPIServer) -> None:
    sha = repo.commit({".sourceignore": "# drafts stay in Git\ndeploy/drafts/\n",
                       "deploy/web.yaml": config_map("web"), "deploy/drafts/next.yaml": config_map("next")},
                      "a draft beside the web tier")
    worker = make_worker(herald_config(tmp_path / "herald.yaml", repo.url))
    deliver(worker, push(sha))
    assert finals(drain_events(worker.bus)) == [("Kustomization", "app", "ReconciliationSucceeded")]
    assert kube_api.get_object("v1", "ConfigMap", "default", "web") is not None
    assert kube_api.get_object("v1", "ConfigMap", "default", "next") is None


def test_spec_ignore_adds_patterns_and_a_negation_takes_a_file_back(make_worker, tmp_path: Path, repo: Repo,
                                                                    kube_api: KubeAPIServer) -> None:
    sha = repo.commit({"deploy/web.yaml": config_map("web"), "deploy/local.yaml": config_map("local"),
                       "deploy/kept.yaml": config_map("kept")}, "three files")
    worker = make_worker(herald_config(tmp_path / "herald.yaml", repo.url, ignore="deploy/*\n!deploy/web.yaml\n"))
    deliver(worker, push(sha))
    assert finals(drain_events(worker.bus)) == [("Kustomization", "app", "ReconciliationSucceeded")]
    assert kube_api.get_object("v1", "ConfigMap", "default", "web") is not None
    assert kube_api.get_object("v1", "ConfigMap", "default", "local") is None
    assert kube_api.get_object("v1", "ConfigMap", "default", "kept") is None
