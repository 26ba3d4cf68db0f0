"""Rendering a Kustomization's `spec.path`: plain YAML, or kustomize when a kustomization.yaml is
there, from a real Git repository.

Plain YAML is read straight from the Git cache's objects; kustomize and trees with symlinks go
through a checkout on disk. Both roads must give the same objects, so several scenarios run on
both and compare.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from herald import config
from herald.bus import open_bus
from herald.messages import ReconcileRequest
from reconciler.render import RenderError, render
from reconciler.worker import Reconciler
from tests.fixtures_herald import Repo, git

CONFIGMAP = """\
    apiVersion: v1
    kind: ConfigMap
    metadata: {{name: {name}}}
    data: {{k: v}}
    """


def reconciler_for(tmp_path: Path, repo: Repo, monkeypatch: pytest.MonkeyPatch, **spec: object) -> Reconciler:
    """A worker with no cluster: its event lists what it would apply, in apply order."""
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    ks = {"interval": "10m", "path": "./deploy", "prune": True, "sourceRef": {"kind": "GitRepository", "name": "app"}, **spec}
    text = "\n---\n".join(json.dumps(d) for d in [
        {"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
         "metadata": {"name": "app", "namespace": "flux-system"},
         "spec": {"interval": "10m", "url": repo.url, "ref": {"branch": "main"}}},
        {"apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
         "metadata": {"name": "app", "namespace": "flux-system"}, "spec": ks}])
    (tmp_path / "herald.yaml").write_text(text)
    cfg = config.load([tmp_path / "herald.yaml"])
    bus = open_bus(None, tmp_path / "state")
    return Reconciler(cfg, bus, tmp_path / "state", cluster=None)


def would_apply(rec: Reconciler) -> list[str]:
    [event] = rec.reconcile(ReconcileRequest(kind="GitRepository", name="app", namespace="flux-system")).events
    assert event.reason == "ClusterNotConfigured", event.message
    return event.message.splitlines()[1:]


def build_failure(rec: Reconciler) -> str:
    [event] = rec.reconcile(ReconcileRequest(kind="GitRepository", name="app", namespace="flux-system")).events
    assert (event.severity, event.reason) == ("error", "BuildFailed"), event.message
    return event.message.splitlines()[0]


def both_roads(rec: Reconciler, tmp_path: Path) -> tuple[list, list]:
    """The objects as the worker renders them (from Git's objects when it can), and as a
    checkout on disk renders them."""
    ks = next(iter(rec.cfg.kustomizations.values()))
    repo = rec.cfg.git_repositories[("flux-system", "app")]
    revision = rec.git.fetch(repo, repo.url)
    fast = rec._render(ks, repo, revision)
    checkout = tmp_path / "checkout"
    rec.git.export(repo, revision.sha, checkout)
    slow = render(checkout, ks.path, ks.target_namespace)
    return ([(m.obj, m.source) for m in fast.manifests], [(m.obj, m.source) for m in slow.manifests])


def test_plain_yaml_is_read_recursively_skipping_what_is_not_kubernetes(tmp_path: Path, repo: Repo,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    repo.commit({
        "deploy/apps/api/cm.yaml": CONFIGMAP.format(name="api") + "---\n" + CONFIGMAP.format(name="api-2"),
        "deploy/apps/values.yaml": "replicas: 3\nimage: nginx\n",  # a Helm values file: no apiVersion/kind
        "deploy/list.json": json.dumps({"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "bot", "namespace": "shop"}}]}),
        "deploy/.github/workflows/ci.yaml": "apiVersion: v1\nkind: Secret\nmetadata: {name: hidden}\n",
        "deploy/notes.txt": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: not-yaml-suffix}\n",
        "elsewhere/cm.yaml": CONFIGMAP.format(name="outside-spec-path"),
    })
    rec = reconciler_for(tmp_path, repo, monkeypatch)
    assert would_apply(rec) == ["Namespace/shop", "ServiceAccount/shop/bot", "ConfigMap/api", "ConfigMap/api-2",
                                "Service/shop/web", "Deployment/shop/web"]
    fast, slow = both_roads(rec, tmp_path)
    assert fast == slow
    assert ("deploy/apps/api/cm.yaml:6" in [s for _, s in fast])  # second document, its own line


def test_target_namespace_is_set_on_every_object(tmp_path: Path, repo: Repo,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    rec = reconciler_for(tmp_path, repo, monkeypatch, targetNamespace="staging")
    assert "Deployment/staging/web" in would_apply(rec)
    fast, slow = both_roads(rec, tmp_path)
    assert fast == slow
    assert {o["metadata"]["namespace"] for o, _ in fast} == {"staging"}  # cluster-scoped: dropped at apply


def test_a_kustomization_yaml_is_built_with_kustomize_even_reaching_outside_spec_path(
        tmp_path: Path, repo: Repo, monkeypatch: pytest.MonkeyPatch) -> None:
    repo.commit({
        "base/cm.yaml": CONFIGMAP.format(name="settings"),
        "base/kustomization.yaml": "resources: [cm.yaml]\n",
        "overlay/kustomization.yaml": "namePrefix: prod-\nnamespace: prod\nresources: [../base]\n",
    })
    rec = reconciler_for(tmp_path, repo, monkeypatch, path="./overlay")
    assert would_apply(rec) == ["ConfigMap/prod/prod-settings"]
    fast, slow = both_roads(rec, tmp_path)
    assert fast == slow


def test_without_kustomize_or_kubectl_the_error_names_the_path(tmp_path: Path, repo: Repo,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    repo.commit({"deploy/kustomization.yaml": "resources: [web.yaml]\n"})
    rec = reconciler_for(tmp_path, repo, monkeypatch)
    bin_dir = tmp_path / "bin"  # git only: neither kustomize nor kubectl
    bin_dir.mkdir()
    os.symlink(shutil.which("git"), bin_dir / "git")
    monkeypatch.setenv("PATH", str(bin_dir))
    assert build_failure(rec) == "deploy: has a kustomization.yaml but neither kustomize nor kubectl is on PATH"


@pytest.mark.parametrize(("path", "message"), [
    ("../outside", "spec.path '../outside' points outside the repository"),
    ("./deploy/../../etc", "spec.path './deploy/../../etc' points outside the repository"),
    ("./missing", "spec.path './missing' not found in the revision"),
    ("./deploy/web.yaml", "spec.path './deploy/web.yaml' not found in the revision"),  # a file, not a folder
])
def test_a_spec_path_that_is_not_a_folder_of_the_revision_fails_the_build(
        tmp_path: Path, repo: Repo, monkeypatch: pytest.MonkeyPatch, path: str, message: str) -> None:
    rec = reconciler_for(tmp_path, repo, monkeypatch, path=path)
    assert build_failure(rec) == message
    checkout = tmp_path / "checkout"
    repo_cfg = rec.cfg.git_repositories[("flux-system", "app")]
    rec.git.export(repo_cfg, rec.git.fetch(repo_cfg, repo.url).sha, checkout)
    with pytest.raises(RenderError, match=message.replace(".", r"\.")):
        render(checkout, path)


def test_a_symlinked_manifest_renders_as_from_a_checkout(tmp_path: Path, repo: Repo,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # A link inside the test's own repository, to a folder beside `deploy/`.
    repo.commit({"common/cm.yaml": CONFIGMAP.format(name="shared")})
    os.symlink("../common/cm.yaml", repo.work / "deploy" / "shared.yaml")
    git("add", "-A", cwd=repo.work)
    git("commit", "-q", "-m", "link", cwd=repo.work)
    git("push", "-q", "origin", "HEAD:main", cwd=repo.work)
    rec = reconciler_for(tmp_path, repo, monkeypatch)
    assert "ConfigMap/shared" in would_apply(rec)
    fast, slow = both_roads(rec, tmp_path)
    assert fast == slow


def test_a_file_that_is_not_utf8_is_named(tmp_path: Path, repo: Repo, monkeypatch: pytest.MonkeyPatch) -> None:
    (repo.work / "deploy" / "latin1.yaml").write_bytes(b"apiVersion: v1\nkind: ConfigMap\n# caf\xe9\n")
    repo.commit({})
    rec = reconciler_for(tmp_path, repo, monkeypatch)
    assert build_failure(rec).startswith("deploy/latin1.yaml: cannot read: 'utf-8' codec can't decode byte 0xe9")


def test_a_spec_path_that_is_a_symlinked_folder_renders_its_target(tmp_path: Path, repo: Repo,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    os.symlink("deploy", repo.work / "current")
    git("add", "-A", cwd=repo.work)
    git("commit", "-q", "-m", "current -> deploy", cwd=repo.work)
    git("push", "-q", "origin", "HEAD:main", cwd=repo.work)
    rec = reconciler_for(tmp_path, repo, monkeypatch, path="./current")
    assert would_apply(rec) == ["Namespace/shop", "Service/shop/web", "Deployment/shop/web"]


def test_a_symlink_out_of_the_repository_fails_the_build_instead_of_reading_the_host(
        tmp_path: Path, repo: Repo, monkeypatch: pytest.MonkeyPatch) -> None:
    os.symlink("/etc/hostname", repo.work / "deploy" / "host.yaml")
    git("add", "-A", cwd=repo.work)
    git("commit", "-q", "-m", "a link out", cwd=repo.work)
    git("push", "-q", "origin", "HEAD:main", cwd=repo.work)
    rec = reconciler_for(tmp_path, repo, monkeypatch)
    message = build_failure(rec)
    assert message.startswith("revision ") and "cannot be checked out safely" in message, message


def test_kustomize_output_is_read_back_with_the_rules_kustomize_wrote_it_with(
        tmp_path: Path, repo: Repo, monkeypatch: pytest.MonkeyPatch) -> None:
    """kustomize prints the string "=" unquoted (YAML 1.2 has no `=` value type); read with
    YAML 1.1 rules, the output of a folder `kubectl kustomize` builds fine failed the render."""
    repo.commit({
        "deploy/kustomization.yaml": "resources: [alerting.yaml]\n",
        "deploy/alerting.yaml": """\
            apiVersion: monitoring.coreos.com/v1alpha1
            kind: AlertmanagerConfig
            metadata: {name: critical, namespace: monitoring}
            spec:
              route:
                receiver: pager
                matchers: [{name: severity, matchType: "=", value: critical}]
            """,
    })
    rec = reconciler_for(tmp_path, repo, monkeypatch)
    assert would_apply(rec) == ["AlertmanagerConfig/monitoring/critical"]
    [(obj, _)], _ = both_roads(rec, tmp_path)
    assert obj["spec"]["route"]["matchers"] == [{"name": "severity", "matchType": "=", "value": "critical"}]


def test_a_subfolder_with_its_own_kustomization_is_built_as_one_resource(
        tmp_path: Path, repo: Repo, monkeypatch: pytest.MonkeyPatch) -> None:
    """The root layout of most fleets: `./apps` has no kustomization.yaml, each app folder has
    one. Flux's generated kustomization lists such a subfolder as one resource and does not go
    into it, so its kustomization.yaml is built, not read as a manifest (which failed with
    "Kustomization has no metadata.name"), and files it does not list are not applied."""
    repo.commit({
        "deploy/apps/podinfo/kustomization.yaml": """\
            apiVersion: kustomize.config.k8s.io/v1beta1
            kind: Kustomization
            namespace: podinfo
            namePrefix: prod-
            resources: [cm.yaml]
            """,
        "deploy/apps/podinfo/cm.yaml": CONFIGMAP.format(name="podinfo"),
        "deploy/apps/podinfo/drafts/cm.yaml": CONFIGMAP.format(name="not-listed"),
        "deploy/apps/tools/sa.yaml": "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: bot, namespace: shop}\n",
    })
    rec = reconciler_for(tmp_path, repo, monkeypatch)
    assert would_apply(rec) == ["Namespace/shop", "ServiceAccount/shop/bot", "ConfigMap/podinfo/prod-podinfo",
                                "Service/shop/web", "Deployment/shop/web"]
    fast, slow = both_roads(rec, tmp_path)
    assert fast == slow
    assert [s for _, s in fast] == ["deploy/apps/podinfo (kustomize)", "deploy/apps/tools/sa.yaml:1",
                                    "deploy/namespace.yaml:1", "deploy/web.yaml:1", "deploy/web.yaml:17"]


def test_a_failing_subfolder_build_names_the_subfolder(tmp_path: Path, repo: Repo,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    repo.commit({"deploy/apps/broken/kustomization.yaml": "resources: [missing.yaml]\n"})
    rec = reconciler_for(tmp_path, repo, monkeypatch)
    assert build_failure(rec).startswith("deploy/apps/broken: kustomize build failed:")

