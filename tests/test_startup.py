"""Start-up (issue 17): every source is reconciled when the worker starts, as Flux's controllers
reconcile every object they find, with no webhook and before its interval; spread over
HERALD_STARTUP_SPREAD so a fleet does not hit the API server at once. The real worker loop on
an embedded bus, a real Git repository, the test API server."""

from __future__ import annotations

import threading
from pathlib import Path

from herald.bus.embedded import EmbeddedBus
from reconciler.worker import Reconciler, WorkerSettings
from tests.fixtures_herald import Repo, wait_until
from tests.kubeapi import KubeAPIServer
from tests.test_honest_runs import EXTRA, drain_events, herald_config, kustomization


def start_worker(tmp_path: Path, cfg, **settings) -> tuple[Reconciler, threading.Event, threading.Thread]:
    bus = EmbeddedBus(tmp_path / "bus.sqlite3")
    options = {"threads": 1, "lease_duration": 5.0, "window": 0.0, "poll": True, "startup_spread": 0.5, **settings}
    worker = Reconciler(cfg, bus, tmp_path / "state", poll_interval=0.1, settings=WorkerSettings(**options))
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    return worker, stop, thread


def test_every_kustomization_is_reconciled_when_the_worker_starts(tmp_path: Path, repo: Repo, kube_api: KubeAPIServer,
                                                                  kubeconfig: Path, monkeypatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    repo.commit(EXTRA, "extra settings")
    cfg = herald_config(tmp_path / "herald.yaml", repo.url, kustomization("app", "./deploy"),
                        kustomization("extra", "./extra"))
    worker, stop, thread = start_worker(tmp_path, cfg)
    try:
        wait_until(lambda: kube_api.get_object("v1", "ConfigMap", "default", "settings"), 20,
                   "the start-up reconcile to apply what is in Git")
    finally:
        stop.set()
        thread.join(timeout=30)
    events = drain_events(worker.bus)
    worker.bus.close()
    done = {e["involvedObject"]["name"] for e in events if e["reason"] == "ReconciliationSucceeded"}
    assert done == {"app", "extra"}  # one run of the source: both of its Kustomizations


def test_without_start_up_reconcile_nothing_runs_before_the_interval(tmp_path: Path, repo: Repo,
                                                                    kube_api: KubeAPIServer, kubeconfig: Path,
                                                                    monkeypatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    repo.commit(EXTRA, "extra settings")
    cfg = herald_config(tmp_path / "herald.yaml", repo.url, kustomization("extra", "./extra"))
    worker, stop, thread = start_worker(tmp_path, cfg, startup=False)
    try:
        stop.wait(2.0)
        assert kube_api.get_object("v1", "ConfigMap", "default", "settings") is None
    finally:
        stop.set()
        thread.join(timeout=30)
        worker.bus.close()
