"""The reconciler fetches a real Git revision and server-side applies it to an API server."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest

from herald import config
from herald.bus import open_bus
from herald.messages import ReconcileRequest
from reconciler.worker import Reconciler
from tests.fixtures_herald import Repo, write_config


def request(revision: str = "") -> ReconcileRequest:
    return ReconcileRequest(kind="GitRepository", name="app", namespace="flux-system",
                            origin={"revision": revision} if revision else {})


FINISHED = re.compile(r"Reconciliation finished in \d+(\.\d+)?m?s, next run in 10m0s")


def changes(message: str) -> list[str]:
    """The change set of a ReconciliationSucceeded message, checking its last line is Flux's."""
    *lines, last = message.splitlines()
    assert FINISHED.fullmatch(last), last
    return lines


@pytest.fixture
def reconciler(tmp_path: Path, repo: Repo, kubeconfig: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    cfg = config.load([write_config(tmp_path / "herald.yaml", repo.url)])
    bus = open_bus(None, tmp_path / "state")
    yield Reconciler(cfg, bus, tmp_path / "state")
    bus.close()


def test_a_push_is_applied_with_field_manager_herald(reconciler: Reconciler, repo: Repo, kube_api,
                                                     kubeconfig: Path) -> None:
    outcome = reconciler.reconcile(request(f"main@sha1:{repo.head}"))
    [event] = outcome.events
    assert (event.severity, event.reason) == ("info", "ReconciliationSucceeded")
    assert event.involvedObject == {"kind": "Kustomization", "name": "app", "namespace": "flux-system",
                                    "apiVersion": "kustomize.toolkit.fluxcd.io/v1"}
    assert event.metadata["revision"] == f"main@sha1:{repo.head}"
    assert changes(event.message) == [
        "Namespace/shop created",
        "Service/shop/web created",
        "Deployment/shop/web created",
    ]
    deployment = kube_api.get_object("apps/v1", "Deployment", "shop", "web")
    assert deployment["spec"]["replicas"] == 2
    # A real client sees the same: kubectl reads what Herald applied, and who manages it.
    seen = subprocess.run(
        ["kubectl", "--kubeconfig", str(kubeconfig), "--request-timeout=10s", "get", "deployment", "web",
         "-n", "shop", "--show-managed-fields", "-o",
         "jsonpath={.spec.replicas} {.metadata.managedFields[?(@.operation=='Apply')].manager}"],
        capture_output=True, text=True, timeout=60, check=True).stdout
    assert seen == "2 herald"
    assert ("herald", "Apply") in [(f["manager"], f["operation"]) for f in deployment["metadata"]["managedFields"]]
    assert outcome.retry == ""


def test_reapplying_reports_unchanged_and_a_change_reports_configured(reconciler: Reconciler, repo: Repo) -> None:
    reconciler.reconcile(request())
    assert changes(reconciler.reconcile(request()).events[0].message) == [
        "Namespace/shop unchanged", "Service/shop/web unchanged", "Deployment/shop/web unchanged"]
    web = (repo.work / "deploy" / "web.yaml").read_text().replace("replicas: 2", "replicas: 3")
    sha = repo.commit({"deploy/web.yaml": web}, "scale up")
    [event] = reconciler.reconcile(request(f"main@sha1:{sha}")).events
    assert event.metadata["revision"] == f"main@sha1:{sha}"
    assert "Deployment/shop/web configured" in changes(event.message)
    assert "Service/shop/web unchanged" in changes(event.message)


def test_a_refused_object_fails_the_reconcile_with_the_api_servers_message(
        reconciler: Reconciler, repo: Repo, kube_api) -> None:
    repo.commit({"deploy/cm.yaml": """\
        apiVersion: v1
        kind: ConfigMap
        metadata: {name: settings, namespace: nowhere}
        data: {a: b}
        """})
    [event] = reconciler.reconcile(request()).events
    assert (event.severity, event.reason) == ("error", "ReconciliationFailed")
    assert event.message.splitlines()[0] == 'ConfigMap/nowhere/settings not found: namespaces "nowhere" not found'
    assert re.fullmatch(r"Reconciliation failed after \d+(\.\d+)?m?s, next try in 10m0s", event.message.splitlines()[-1])
    assert event.metadata == {"revision": f"main@sha1:{repo.head}", "commit_status": "update"}
    # The whole set was dry-run first: nothing at all was written, not even the namespace.
    assert kube_api.get_object("apps/v1", "Deployment", "shop", "web") is None
    assert kube_api.get_object("v1", "Namespace", None, "shop") is None


def test_without_a_cluster_it_renders_and_says_so(tmp_path: Path, repo: Repo, monkeypatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-such-kubeconfig"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    cfg = config.load([write_config(tmp_path / "herald.yaml", repo.url)])
    [event] = Reconciler(cfg, open_bus(None, tmp_path / "s"), tmp_path / "s").reconcile(request()).events
    assert (event.severity, event.reason) == ("info", "ClusterNotConfigured")
    assert event.message.splitlines() == [
        "No Kubernetes cluster is configured (no kubeconfig, not in a cluster), so nothing was applied. Would apply:",
        "Namespace/shop", "Service/shop/web", "Deployment/shop/web"]
    assert event.metadata["revision"] == f"main@sha1:{repo.head}"


def test_an_unreachable_repository_is_an_error_event_and_a_retry(tmp_path: Path, monkeypatch) -> None:
    """The GitRepository says why, and its Kustomization ends too: a push must never leave a
    commit status pending because the fetch failed."""
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "none"))
    # Nothing listens on the discard port: a host that is down (a wrong URL is not retried).
    cfg = config.load([write_config(tmp_path / "herald.yaml", "http://127.0.0.1:9/missing.git")])
    outcome = Reconciler(cfg, open_bus(None, tmp_path / "s"), tmp_path / "s").reconcile(request())
    source, kustomization = outcome.events
    assert (source.severity, source.reason, source.involvedObject["kind"]) == ("error", "GitOperationFailed", "GitRepository")
    assert "git fetch failed" in source.message
    assert (kustomization.severity, kustomization.reason) == ("error", "ReconciliationFailed")
    assert kustomization.message.startswith("fetching GitRepository/flux-system/app failed: git fetch failed")
    assert outcome.retry


def test_invalid_yaml_in_the_repository_names_file_and_line(reconciler: Reconciler, repo: Repo) -> None:
    repo.commit({"deploy/broken.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x\n"})
    [event] = reconciler.reconcile(request()).events
    assert (event.severity, event.reason) == ("error", "BuildFailed")
    assert event.message.startswith("deploy/broken.yaml:4: invalid YAML")
    assert "Reconciliation failed after" in event.message.splitlines()[-1]


def test_a_webhook_for_an_older_commit_applies_the_tip_without_waiting(reconciler: Reconciler, repo: Repo) -> None:
    """Two pushes in quick succession: the first delivery names a commit the tip has passed."""
    older = repo.head
    newer = repo.commit({"deploy/extra.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: extra, namespace: shop}\n"})
    started = time.monotonic()
    [event] = reconciler.reconcile(request(f"main@sha1:{older}")).events
    assert time.monotonic() - started < 3, "must not wait for a commit the remote already has"
    assert event.metadata["revision"] == f"main@sha1:{newer}"
    assert "does not serve yet" not in event.message


def test_a_webhook_for_a_commit_the_remote_lacks_is_said_in_the_event(reconciler: Reconciler, repo: Repo) -> None:
    missing = "0123456789abcdef0123456789abcdef01234567"
    [event] = reconciler.reconcile(request(f"main@sha1:{missing}")).events
    assert event.metadata["revision"] == f"main@sha1:{repo.head}"
    assert event.message.endswith(
        f"The webhook named main@sha1:{missing}, which the remote does not serve yet; applied main@sha1:{repo.head}.")
