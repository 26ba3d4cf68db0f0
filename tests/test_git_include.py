"""A GitRepository's `include` (issue 16): another GitRepository's files, from its `fromPath`,
copied to `toPath` of this one's tree, as source-controller builds the artifact: a fleet's
apps repository including the platform team's shared manifests. Real repositories, the real
reconciler, the test API server."""

from __future__ import annotations

import json
from pathlib import Path

from herald import config
from tests.fixtures_herald import Repo, make_repo
from tests.kubeapi import KubeAPIServer
from tests.test_honest_runs import deliver, drain_events, finals, kustomization, make_worker, push  # noqa: F401


def config_map(name: str) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "default"}}) \
        + "\n"


def git_repository(name: str, url: str, **spec: object) -> str:
    return json.dumps({"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
                       "metadata": {"name": name, "namespace": "flux-system"},
                       "spec": {"interval": "10m", "url": url, "ref": {"branch": "main"}, **spec}}) + "\n---\n"


def test_an_included_repositorys_folder_is_rendered_where_to_path_puts_it(make_worker, tmp_path: Path, repo: Repo,
                                                                          kube_api: KubeAPIServer) -> None:
    platform = make_repo(tmp_path / "platform")
    platform.commit({"shared/policies/quota.yaml": config_map("quota"), "other/skip.yaml": config_map("skip")},
                    "the platform team's shared manifests")
    sha = repo.commit({"deploy/kustomization.yaml": "resources: [web.yaml, ../vendor/policies]\n",
                       "deploy/web.yaml": config_map("web")}, "the app, with the platform's policies")
    path = tmp_path / "herald.yaml"
    path.write_text(git_repository("platform", platform.url)
                    + git_repository("app", repo.url, include=[{"repository": {"name": "platform"},
                                                               "fromPath": "shared", "toPath": "vendor"}])
                    + kustomization("app", "./deploy"))
    (platform.work / "shared/policies/kustomization.yaml").write_text("resources: [quota.yaml]\n")
    platform.commit({}, "a kustomization for the policies")
    worker = make_worker(config.load([path]))
    deliver(worker, push(sha))
    assert finals(drain_events(worker.bus)) == [("Kustomization", "app", "ReconciliationSucceeded")]
    assert kube_api.get_object("v1", "ConfigMap", "default", "quota") is not None
    assert kube_api.get_object("v1", "ConfigMap", "default", "web") is not None
    assert kube_api.get_object("v1", "ConfigMap", "default", "skip") is None


def test_an_include_of_a_repository_that_does_not_exist_is_a_configuration_error(tmp_path: Path) -> None:
    path = tmp_path / "herald.yaml"
    path.write_text(git_repository("app", "https://example.com/app.git", include=[{"repository": {"name": "nope"}}])
                    .removesuffix("---\n"))
    _, diagnostics = config.check([path])
    assert any("spec.include[0].repository: GitRepository flux-system/nope not found" in d.message
               for d in diagnostics if d.severity == "error")
