"""`--from-cluster`: Herald's configuration as herald.dev/v1 objects in the cluster, watched.

The scenarios follow deploy/README.md: the CRDs and their examples applied with kubectl to the
test API server (tests/kubeapi.py), Secrets made as `kubectl create secret` makes them, then
`herald validate`, `herald hooks`, `herald serve` and the notifier reading the cluster, and
kubectl changes (a new Receiver, a rotated token, a deleted Receiver, a broken Alert) taking
effect within seconds, without a restart.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from herald.bus import open_bus
from herald.cluster_config import ClusterConfig
from herald.messages import EVENTS_QUEUE, Event
from herald.settings import Settings
from notifier.worker import Notifier, NotifierSettings

from .fixtures_herald import (
    Repo,
    free_port,
    github_headers,
    github_push,
    stop_herald,
    wait_ready,
    wait_until,
)
from .kubeapi import KubeAPIServer

ROOT = Path(__file__).resolve().parent.parent
NS = "herald"
TOKEN = "webhook-token-1"

Kubectl = Callable[..., subprocess.CompletedProcess]


def hook(token: str, name: str, namespace: str = NS) -> str:
    return "/hook/" + hashlib.sha256(f"{token}{name}{namespace}".encode()).hexdigest()


@pytest.fixture
def kubectl(kube_api: KubeAPIServer, kubeconfig: Path, tmp_path: Path) -> Kubectl:
    def run(*args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
        proc = subprocess.run(["kubectl", "--request-timeout=20s", f"--cache-dir={tmp_path / 'kube-cache'}", *args],
                              input=stdin, env=env, capture_output=True, text=True, timeout=60, cwd=ROOT,
                              check=False)
        if check:
            assert proc.returncode == 0, f"kubectl {' '.join(args)}:\n{proc.stderr}"
        return proc

    return run


def create_secret(kubectl: Kubectl, name: str, **data: str) -> None:
    """`kubectl create secret generic` (through apply: the test API server takes no protobuf),
    so the Secret holds base64 `data` as on a real cluster."""
    literals = [f"--from-literal={k}={v}" for k, v in data.items()]
    made = kubectl("-n", NS, "create", "secret", "generic", name, *literals, "--dry-run=client", "-o", "yaml")
    kubectl("apply", "-f", "-", stdin=made.stdout)


def apply(kubectl: Kubectl, text: str) -> None:
    kubectl("apply", "-f", "-", stdin=text)


def add_second_receiver(kubectl: Kubectl) -> str:
    """A second github Receiver, `second`, with its own token Secret: its hook path."""
    create_secret(kubectl, "second-token", token="webhook-token-2")
    apply(kubectl, """\
        apiVersion: herald.dev/v1
        kind: Receiver
        metadata: {name: second, namespace: herald}
        spec:
          type: github
          secretRef: {name: second-token}
          resources: [{kind: GitRepository, name: app}]
        """.replace("        ", ""))
    return hook("webhook-token-2", "second")


@pytest.fixture
def installed(kubectl: Kubectl) -> Kubectl:
    """deploy/README.md's "Herald's own CRDs": the CRDs, the namespace, the example objects and
    the Secrets they name."""
    kubectl("apply", "-k", "deploy/crds")
    kubectl("apply", "-f", "deploy/base/namespace.yaml")
    kubectl("apply", "-f", "deploy/crds/examples/herald.yaml")
    create_secret(kubectl, "github-webhook", token=TOKEN)
    create_secret(kubectl, "git-credentials", username="git", password="not-a-real-password")
    create_secret(kubectl, "slack-bot-token", token="xoxb-not-a-real-token")
    return kubectl


def herald(*args: str, kubeconfig: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "herald.cli", *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "KUBECONFIG": str(kubeconfig), **env}, cwd=ROOT, check=False)


def status_of(kube_api: KubeAPIServer, kind: str, name: str) -> dict[str, Any]:
    obj = kube_api.get_object("herald.dev/v1", kind, NS, name) or {}
    return obj.get("status") or {}


def ready(kube_api: KubeAPIServer, kind: str, name: str) -> dict[str, Any]:
    return next((c for c in status_of(kube_api, kind, name).get("conditions") or [] if c["type"] == "Ready"), {})


# ---- validate and hooks ---------------------------------------------------------------------

def test_validate_and_hooks_read_the_cluster(installed: Kubectl, kubeconfig: Path, tmp_path: Path) -> None:
    # (--offline: its ImageUpdateAutomation's repository is on github.com)
    done = herald("validate", "--offline", "--from-cluster", kubeconfig=kubeconfig)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "ok: 8 object(s), 0 warning(s)"

    hooks = herald("hooks", kubeconfig=kubeconfig, HERALD_FROM_CLUSTER="true")
    assert hooks.returncode == 0, hooks.stderr
    assert hooks.stdout == f"herald/github-app\tgithub\t{hook(TOKEN, 'github-app')}\n"

    # A missing Secret: validate names the object, the field and the Secret, and exits 1;
    # hooks still lists the Receivers that work.
    installed("-n", NS, "delete", "secret", "slack-bot-token")
    done = herald("validate", "--from-cluster", kubeconfig=kubeconfig)
    assert done.returncode == 1
    assert "cluster:Provider/herald/slack: Provider herald/slack: spec.secretRef: Secret herald/slack-bot-token " \
           "not found" in done.stdout
    assert "cluster:Alert/herald/deployments: Alert herald/deployments: spec.providerRef: Provider " \
           "herald/slack not found" in done.stdout
    assert "not-a-real" not in done.stdout + done.stderr  # no Secret value, ever
    hooks = herald("hooks", "--from-cluster", kubeconfig=kubeconfig)
    assert hooks.returncode == 0 and hook(TOKEN, "github-app") in hooks.stdout
    assert "spec.secretRef: Secret herald/slack-bot-token not found" in hooks.stderr

    # --watch-namespace: objects elsewhere are not read.
    apply(installed, """\
        apiVersion: v1
        kind: Namespace
        metadata: {name: other}
        ---
        apiVersion: herald.dev/v1
        kind: Receiver
        metadata: {name: elsewhere, namespace: other}
        spec:
          type: generic
          secretRef: {name: missing}
          resources: [{kind: GitRepository, name: app, namespace: herald}]
        """.replace("        ", ""))
    everywhere = herald("hooks", "--from-cluster", kubeconfig=kubeconfig)
    assert "cluster:Receiver/other/elsewhere: Receiver other/elsewhere: spec.secretRef" in everywhere.stderr
    only_herald = herald("hooks", "--from-cluster", "--watch-namespace", NS, kubeconfig=kubeconfig)
    assert "elsewhere" not in only_herald.stdout + only_herald.stderr

    # Files and the cluster together: one key defined in both is an error naming both sources.
    local = tmp_path / "local.yaml"
    local.write_text((ROOT / "deploy/crds/examples/herald.yaml").read_text().split("---")[0])
    both = herald("validate", "-c", str(local), "--from-cluster", "--watch-namespace", NS, kubeconfig=kubeconfig)
    assert both.returncode == 1
    assert f"cluster:Receiver/herald/github-app: Receiver herald/github-app: defined twice (first at {local}:4)" \
        in both.stdout


def test_without_crds_or_cluster_it_says_what_is_missing(kubeconfig: Path, tmp_path: Path) -> None:
    done = herald("validate", "--from-cluster", kubeconfig=kubeconfig)
    assert done.returncode == 1
    assert "does not serve receivers.herald.dev: install Herald's CRDs (kubectl apply -k deploy/crds)" in done.stderr
    nowhere = herald("hooks", "--from-cluster", kubeconfig=tmp_path / "absent", HOME=str(tmp_path))
    assert nowhere.returncode == 1 and "no Kubernetes cluster configured" in nowhere.stderr


# ---- herald serve --from-cluster ---------------------------------------------------------

@pytest.fixture
def serve(installed: Kubectl, kubeconfig: Path, tmp_path: Path, repo: Repo) -> Iterator[tuple[str, Path]]:
    """`herald serve --from-cluster` (embedded bus), the example GitRepository pointed at a local
    repository; yields the receiver's URL and the log file."""
    patch = {"spec": {"url": repo.url, "secretRef": None}}
    installed("-n", NS, "patch", "gitrepository", "app", "--type=merge", "-p", json.dumps(patch))
    installed("-n", NS, "patch", "kustomization", "app", "--type=merge", "-p",
              json.dumps({"spec": {"path": "./deploy", "targetNamespace": None, "wait": False}}))
    port = free_port()
    log = tmp_path / "serve.log"
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "HERALD_STATE_DIR": str(tmp_path / "state"),
           "HERALD_LISTEN": f"127.0.0.1:{port}", "HERALD_FROM_CLUSTER": "1"}
    env.pop("HERALD_BROKER_URL", None)
    env.pop("HERALD_CONFIG", None)
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "herald.cli", "serve"], stdout=out, stderr=subprocess.STDOUT,
                                env=env, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url)
        yield url, log
    finally:
        assert stop_herald(proc) == 0, log.read_text()


def post_push(url: str, path: str, repo: Repo, token: str = TOKEN) -> requests.Response:
    body = github_push(repo.head)
    return requests.post(url + path, data=body, headers=github_headers(body, token=token), timeout=10)


def test_serve_follows_the_cluster(serve: tuple[str, Path], installed: Kubectl, kube_api: KubeAPIServer,
                                   repo: Repo) -> None:
    url, log = serve
    kubectl = installed
    path = hook(TOKEN, "github-app")
    # The Receiver's status says where it listens, as Flux's does.
    wait_until(lambda: status_of(kube_api, "Receiver", "github-app").get("webhookPath") == path, 10,
               "the Receiver's status.webhookPath")
    assert ready(kube_api, "Receiver", "github-app")["status"] == "True"
    assert ready(kube_api, "Alert", "deployments") == {
        **ready(kube_api, "Alert", "deployments"), "status": "True", "reason": "Succeeded"}

    # A signed push is accepted and applied from the repository the GitRepository names.
    answer = post_push(url, path, repo)
    assert answer.status_code == 202, answer.text
    wait_until(lambda: kube_api.get_object("apps/v1", "Deployment", "shop", "web"), 30, "shop/web applied")

    # A new Receiver (and its Secret) answers within seconds, without a restart.
    second = add_second_receiver(kubectl)
    wait_until(lambda: post_push(url, second, repo, "webhook-token-2").status_code in (200, 202), 10,
               "the new Receiver's path")
    assert "config: Receiver herald/second added" in log.read_text()

    # A rotated token moves the path: the old one answers 404, the new one takes deliveries.
    create_secret(kubectl, "github-webhook", token="webhook-token-3")
    rotated = hook("webhook-token-3", "github-app")
    wait_until(lambda: post_push(url, rotated, repo, "webhook-token-3").status_code in (200, 202), 10,
               "the rotated path")
    assert post_push(url, path, repo).status_code == 404
    wait_until(lambda: status_of(kube_api, "Receiver", "github-app").get("webhookPath") == rotated, 10,
               "the new webhookPath")

    # A deleted Receiver's path answers 404.
    kubectl("-n", NS, "delete", "receiver", "second")
    wait_until(lambda: post_push(url, second, repo, "webhook-token-2").status_code == 404, 10, "404 after delete")

    # A broken object is reported, marked and skipped; the rest goes on working.
    apply(kubectl, """\
        apiVersion: herald.dev/v1
        kind: Receiver
        metadata: {name: broken, namespace: herald}
        spec:
          type: no-such-type
          secretRef: {name: second-token}
          resources: [{kind: GitRepository, name: app}]
        """.replace("        ", ""))
    wait_until(lambda: ready(kube_api, "Receiver", "broken").get("status") == "False", 10, "broken marked")
    assert ready(kube_api, "Receiver", "broken")["message"].startswith("spec.type: 'no-such-type' is not supported")
    assert "cluster:Receiver/herald/broken: Receiver herald/broken: spec.type: 'no-such-type' is not supported" \
        in log.read_text()
    assert post_push(url, rotated, repo, "webhook-token-3").status_code in (200, 202)
    text = log.read_text()
    for secret in (TOKEN, "webhook-token-2", "webhook-token-3", "not-a-real"):
        assert secret not in text


# ---- the notifier ----------------------------------------------------------------------------

class Capture(ThreadingHTTPServer):
    """A webhook endpoint that keeps what it was sent."""

    daemon_threads = True

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []

        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                outer.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"


def test_web_under_its_gevent_worker_follows_the_cluster(installed: Kubectl, kube_api: KubeAPIServer,
                                                         kubeconfig: Path, tmp_path: Path, repo: Repo) -> None:
    """`web` (gunicorn's arbiter, two gevent workers) with HERALD_FROM_CLUSTER: each worker
    watches the cluster through the Kubernetes client on gevent's patched sockets."""
    kubectl = installed
    port = free_port()
    log = tmp_path / "web.log"
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "HERALD_STATE_DIR": str(tmp_path / "state"),
           "HERALD_LISTEN": f"127.0.0.1:{port}", "HERALD_FROM_CLUSTER": "1", "WEB_CONCURRENCY": "2"}
    for name in ("HERALD_BROKER_URL", "HERALD_CONFIG", "HERALD_WORKER_CLASS", "GUNICORN_CMD_ARGS"):
        env.pop(name, None)
    with open(log, "wb") as out:
        proc = subprocess.Popen(["gunicorn", "receiver.app:create_app()"], stdout=out, stderr=subprocess.STDOUT,
                                env=env, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url)
        assert post_push(url, hook(TOKEN, "github-app"), repo).status_code == 202, log.read_text()

        second = add_second_receiver(kubectl)
        # Both workers take it: a few deliveries in a row, whichever worker each reaches.
        wait_until(lambda: all(post_push(url, second, repo, "webhook-token-2").status_code == 202
                               for _ in range(6)), 15, "the new Receiver's path on every worker")
        kubectl("-n", NS, "delete", "receiver", "second")
        wait_until(lambda: all(post_push(url, second, repo, "webhook-token-2").status_code == 404
                               for _ in range(6)), 15, "404 after delete on every worker")
        assert "Using worker: receiver.gevent_worker.HeraldGeventWorker" in log.read_text()
        assert "Traceback" not in log.read_text(), log.read_text()
    finally:
        assert stop_herald(proc) == 0, log.read_text()


def test_the_notifier_picks_up_new_alerts_and_providers(installed: Kubectl, kube_api: KubeAPIServer,
                                                          kubeconfig: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    kubectl = installed
    capture = Capture()
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    source = ClusterConfig.from_settings(Settings(from_cluster=True, watch_namespace=NS), "notifier")
    bus = open_bus(None, tmp_path / "state")
    notifier = Notifier(source.config, bus, settings=NotifierSettings(dedupe_window=0))
    source.subscribe(notifier.update)
    source.start()
    stop = threading.Event()
    worker = threading.Thread(target=notifier.run, args=(stop,), daemon=True)
    worker.start()
    try:
        # A Provider whose address is in its Secret, an Alert for it, and a broken Alert.
        create_secret(kubectl, "hook-address", address=capture.url)
        apply(kubectl, """\
            apiVersion: herald.dev/v1
            kind: Provider
            metadata: {name: webhook, namespace: herald}
            spec: {type: generic, secretRef: {name: hook-address}}
            ---
            apiVersion: herald.dev/v1
            kind: Alert
            metadata: {name: to-webhook, namespace: herald}
            spec:
              providerRef: {name: webhook}
              eventSources: [{kind: Kustomization, name: '*'}]
            ---
            apiVersion: herald.dev/v1
            kind: Alert
            metadata: {name: broken, namespace: herald}
            spec:
              providerRef: {name: nowhere}
              eventSources: [{kind: Kustomization, name: '*'}]
            """.replace("            ", ""))
        # Statuses are written one object at a time: wait for each, not just the first.
        wait_until(lambda: ready(kube_api, "Alert", "to-webhook").get("status") == "True", 10, "the Alert ready")
        wait_until(lambda: ready(kube_api, "Alert", "broken").get("status"), 10, "the broken Alert's status")
        broken = ready(kube_api, "Alert", "broken")
        assert (broken["status"], broken["reason"]) == ("False", "ValidationFailed")
        assert broken["message"] == "spec.providerRef: Provider herald/nowhere not found"
        wait_until(lambda: ready(kube_api, "Provider", "webhook").get("status") == "True", 10, "the Provider ready")
        # Only the notifier's kinds get a status from the notifier.
        assert status_of(kube_api, "Receiver", "github-app") == {}

        event = Event.for_object("Kustomization", "app", NS, severity="info", reason="ReconciliationSucceeded",
                                 message="Deployment/shop/web configured")
        bus.publish(EVENTS_QUEUE, event.to_json())
        wait_until(lambda: capture.bodies, 15, "the event at the new Provider")
        assert capture.bodies[0]["involvedObject"]["name"] == "app"
    finally:
        stop.set()
        worker.join(timeout=10)
        source.stop()
        bus.close()
        capture.shutdown()


def test_a_watch_that_expired_lists_again(installed: Kubectl, kube_api: KubeAPIServer, kubeconfig: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """410 Gone (the server forgot the watch's resourceVersion): list again, miss nothing."""
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    source = ClusterConfig.from_settings(Settings(from_cluster=True), "validate")
    seen: list[set[tuple[str, str]]] = []
    source.subscribe(lambda cfg: seen.append(set(cfg.receivers)))
    with kube_api.cluster.lock:  # the server's event history is gone, as after a compaction
        kube_api.cluster.events.clear()
        kube_api.cluster.oldest_event_rv = kube_api.cluster.rv
        source._versions = dict.fromkeys(source._versions, "1")
    source.start()
    try:
        installed("-n", NS, "delete", "receiver", "github-app")
        wait_until(lambda: seen and seen[-1] == set(), 15, "the deletion seen after re-listing")
    finally:
        source.stop()
