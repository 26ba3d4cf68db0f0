"""`herald plan` (issue 14): the plan a pull request would get, printed on the terminal.

Each scenario deploys `main` with the reconciler into the test API server (so the live
objects and the inventory are what a reconcile leaves), pushes a pull request's head to
`refs/pull/7/head` of the remote, as GitHub publishes it, and runs the real `herald plan`
command against both. Exit codes as `flux diff kustomization`: 0 nothing would change, 1
something would, 2 an error.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from herald import config
from herald.bus import open_bus
from herald.messages import ReconcileRequest
from reconciler.worker import Reconciler
from tests.fixtures_herald import WEB_MANIFESTS, Repo, git, write_config
from tests.kubeapi import KubeAPIServer

SECRET_VALUE = "hunter2-never-shown"


def deploy_main(tmp_path: Path, repo: Repo, cfg: Path, kubeconfig: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    bus = open_bus(None, tmp_path / "deploy-state")
    try:
        outcome = Reconciler(config.load([cfg]), bus, tmp_path / "deploy-state").reconcile(
            ReconcileRequest(kind="GitRepository", name="app", namespace="flux-system"))
    finally:
        bus.close()
    assert [e.reason for e in outcome.events] == ["ReconciliationSucceeded"], outcome.events


def push_pull_request(repo: Repo, files: dict[str, str], remove: tuple[str, ...] = (), number: int = 7) -> str:
    """A commit on a branch of its own, published as GitHub does a PR's head; main stays."""
    git("checkout", "-q", "-B", "feature", "main", cwd=repo.work)
    for rel in remove:
        git("rm", "-q", rel, cwd=repo.work)
    for rel, text in files.items():
        (repo.work / rel).write_text(text)
    git("add", "-A", cwd=repo.work)
    git("commit", "-q", "-m", "the pull request", cwd=repo.work)
    git("push", "-q", "-f", "origin", f"HEAD:refs/pull/{number}/head", cwd=repo.work)
    sha = git("rev-parse", "HEAD", cwd=repo.work)
    git("checkout", "-q", "main", cwd=repo.work)
    return sha


def herald_plan(tmp_path: Path, cfg: Path, kubeconfig: Path | None, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": str(kubeconfig or tmp_path / "no-such-kubeconfig"),
           "HERALD_STATE_DIR": str(tmp_path / "plan-state")}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    return subprocess.run([sys.executable, "-m", "herald.cli", "plan", "-c", str(cfg), *args],
                          capture_output=True, text=True, env=env, timeout=120, check=False)


@pytest.fixture
def deployed(tmp_path: Path, repo: Repo, kubeconfig: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cfg = write_config(tmp_path / "herald.yaml", repo.url)
    deploy_main(tmp_path, repo, cfg, kubeconfig, monkeypatch)
    return cfg


# main's Deployment (WEB_MANIFESTS) with one more replica, and no Service beside it
CHANGED_WEB = textwrap.dedent(WEB_MANIFESTS["deploy/web.yaml"]).split("---")[0].replace("replicas: 2", "replicas: 3")

NEW_OBJECTS = f"""\
apiVersion: v1
kind: ConfigMap
metadata: {{name: settings, namespace: shop}}
data: {{color: blue}}
---
apiVersion: v1
kind: Secret
metadata: {{name: db, namespace: shop}}
stringData: {{password: {SECRET_VALUE}}}
"""


def test_a_pull_request_that_adds_changes_and_removes_objects_is_planned_without_writing(
        tmp_path: Path, repo: Repo, deployed: Path, kubeconfig: Path, kube_api: KubeAPIServer) -> None:
    sha = push_pull_request(repo, {"deploy/web.yaml": CHANGED_WEB, "deploy/new.yaml": NEW_OBJECTS})
    kube_api.requests.clear()
    done = herald_plan(tmp_path, deployed, kubeconfig, "--revision", "refs/pull/7/head")
    assert done.returncode == 1, done.stderr
    out = done.stdout
    assert f"Kustomization flux-system/app at refs/pull/7/head@sha1:{sha}: 2 to create, 1 to update, 1 to delete" in out
    assert "Deployment/shop/web: update" in out and "-  replicas: 2" in out and "+  replicas: 3" in out
    assert "ConfigMap/shop/settings: create" in out and "+  color: blue" in out
    assert "Service/shop/web: delete" in out
    assert "Secret/shop/db: create" in out and "password added" in out
    assert SECRET_VALUE not in out + done.stderr
    writes = [r for r in kube_api.requests if r.method not in ("GET", "HEAD")]
    assert writes and all(r.method == "PATCH" and r.query.get("dryRun") == "All" for r in writes), writes
    # and the cluster still runs main
    assert kube_api.get_object("apps/v1", "Deployment", "shop", "web")["spec"]["replicas"] == 2
    assert kube_api.get_object("v1", "Service", "shop", "web") is not None


def test_the_markdown_is_the_comment_a_pull_request_gets(tmp_path: Path, repo: Repo, deployed: Path,
                                                         kubeconfig: Path) -> None:
    sha = push_pull_request(repo, {"deploy/web.yaml": CHANGED_WEB}, remove=("deploy/namespace.yaml",))
    done = herald_plan(tmp_path, deployed, kubeconfig, "--revision", sha, "--format", "markdown")
    assert done.returncode == 1, done.stderr
    md = done.stdout
    assert md.startswith(f"### Herald plan for `{sha[:12]}`")
    assert "| Kustomization | create | update | delete | unchanged | error |" in md
    assert "| flux-system/app | 0 | 1 | 2 | 0 | 0 |" in md, md
    assert "<details><summary><b>Kustomization flux-system/app</b>: 0 to create, 1 to update, 2 to delete" in md
    assert "<details><summary><code>Deployment/shop/web</code>: update</summary>" in md
    assert "```diff" in md and "+  replicas: 3" in md
    # what prune would delete: the Namespace and the Service left the render, Herald owns them
    assert "<details><summary><code>Namespace/shop</code>: delete</summary>" in md
    assert md.count("<details>") == md.count("</details>")


def test_a_revision_that_changes_nothing_exits_0(tmp_path: Path, repo: Repo, deployed: Path,
                                                 kubeconfig: Path) -> None:
    done = herald_plan(tmp_path, deployed, kubeconfig, "--revision", "main", "--kustomization", "flux-system/app")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"at main@sha1:{repo.head}: no changes" in done.stdout


def test_a_broken_manifest_exits_2_naming_the_file(tmp_path: Path, repo: Repo, deployed: Path,
                                                   kubeconfig: Path) -> None:
    push_pull_request(repo, {"deploy/broken.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: [oops\n"})
    done = herald_plan(tmp_path, deployed, kubeconfig, "--revision", "refs/pull/7/head")
    assert done.returncode == 2
    assert "plan failed: build failed:" in done.stdout and "deploy/broken.yaml" in done.stdout
    assert "Traceback" not in done.stderr


def test_a_refused_dry_run_exits_2_naming_the_object(tmp_path: Path, repo: Repo, deployed: Path,
                                                     kubeconfig: Path) -> None:
    immutable = CHANGED_WEB.replace("app: web}", "app: web-v2}")  # a Deployment's selector cannot change
    push_pull_request(repo, {"deploy/web.yaml": immutable})
    done = herald_plan(tmp_path, deployed, kubeconfig, "--revision", "refs/pull/7/head")
    assert done.returncode == 2, done.stdout
    assert "plan failed: Deployment/shop/web" in done.stdout and "immutable" in done.stdout


def test_without_a_cluster_it_renders_and_says_it_cannot_compare(tmp_path: Path, repo: Repo) -> None:
    cfg = write_config(tmp_path / "herald.yaml", repo.url)
    done = herald_plan(tmp_path, cfg, None, "--revision", "main")
    assert done.returncode == 2
    assert "cannot compare them with the live cluster" in done.stdout
    assert "Deployment/shop/web" in done.stdout and "Namespace/shop" in done.stdout


def test_an_unknown_kustomization_or_revision_is_named(tmp_path: Path, repo: Repo, deployed: Path,
                                                       kubeconfig: Path) -> None:
    done = herald_plan(tmp_path, deployed, kubeconfig, "--revision", "main", "--kustomization", "flux-system/nope")
    assert done.returncode == 2
    assert "--kustomization 'flux-system/nope': no such Kustomization (known: flux-system/app)" in done.stderr
    done = herald_plan(tmp_path, deployed, kubeconfig, "--revision", "refs/pull/999/head")
    assert done.returncode == 2
    assert "fetching refs/pull/999/head from GitRepository flux-system/app failed" in done.stdout
