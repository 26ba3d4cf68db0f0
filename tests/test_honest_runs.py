"""Every run ends honestly (issue 13, points 5–9).

A reconcile's events are what people read in Slack and what turns a commit status green or
red, so they must say what really happened and what really happens next:

- only a successful run marks a revision done: a push after a failure always runs;
- a failed run's event says when the bus really tries again, or that it gave up, on the
  embedded bus and on RabbitMQ alike;
- whatever goes wrong inside a run, every Kustomization of it ends with an event before the
  request is retried or dead-lettered;
- health checks judge objects as kstatus (and so Flux) does: a LoadBalancer Service is healthy
  without a load-balancer controller;
- a request for the commit the running reconcile is applying needs no second run.

Each scenario runs the real reconciler on a real Git repository, against the test Kubernetes
API server (where the Leases and inventories live), through a real bus.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from herald import config
from herald.bus import ATTEMPTS_HEADER, Bus, Delivery, RetryLater, RetryPolicy
from herald.bus.embedded import EmbeddedBus
from herald.messages import EVENTS_QUEUE, RECONCILE_QUEUE, ReconcileRequest
from reconciler.worker import Reconciler, WorkerSettings
from tests.fixtures_herald import Repo, wait_until

LEASE = ("coordination.k8s.io/v1", "Lease", "flux-system", "herald-gitrepository-app")

EXTRA = {"extra/settings.yaml": """\
    apiVersion: v1
    kind: ConfigMap
    metadata: {name: settings, namespace: default}
    data: {tier: gold}
    """}


def kustomization(name: str, path: str, **spec: Any) -> str:
    fields = {"interval": "10m", "path": path, "prune": True, "timeout": "30s",
              "sourceRef": {"kind": "GitRepository", "name": "app"}, **spec}
    return "---\n" + json.dumps({"apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
                                 "metadata": {"name": name, "namespace": "flux-system"}, "spec": fields}) + "\n"


def herald_config(path: Path, url: str, *kustomizations: str) -> config.Config:
    path.write_text(f"""\
apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {{name: app, namespace: flux-system}}
spec:
  interval: 10m
  url: {url}
  ref: {{branch: main}}
""" + "".join(kustomizations or (kustomization("app", "./deploy"),)))
    return config.load([path])


def push(sha: str) -> ReconcileRequest:
    """What the receiver publishes for a signed push: a new delivery id each time."""
    return ReconcileRequest(kind="GitRepository", name="app", namespace="flux-system", reason="webhook",
                            origin={"revision": f"main@sha1:{sha}", "delivery": str(uuid.uuid4())})


def deliver(reconciler: Reconciler, req: ReconcileRequest) -> None:
    """Hand `req` to the worker's bus handler, as the bus does on a first delivery."""
    reconciler.handle(Delivery(RECONCILE_QUEUE, req.to_json(), req.id))


def drain_events(bus: EmbeddedBus) -> list[dict[str, Any]]:
    """Every event published so far, consumed off the bus as the notifier would."""
    got: list[dict[str, Any]] = []
    stop = threading.Event()
    consumer = threading.Thread(target=bus.consume, args=(EVENTS_QUEUE, lambda d: got.append(json.loads(d.body)), stop))
    consumer.start()
    try:
        wait_until(lambda: bus.depth(EVENTS_QUEUE) == 0, 10, "the events to be consumed")
    finally:
        stop.set()
        consumer.join(timeout=10)
    return got


def finals(events: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(kind, name, reason) of each event but the Progressing ones."""
    return [(e["involvedObject"]["kind"], e["involvedObject"]["name"], e["reason"]) for e in events
            if e["reason"] != "Progressing"]


def lease_annotations(kube_api) -> dict[str, str]:
    return ((kube_api.get_object(*LEASE) or {}).get("metadata") or {}).get("annotations") or {}


@pytest.fixture
def make_worker(tmp_path: Path, kubeconfig: Path, monkeypatch: pytest.MonkeyPatch
                ) -> Iterator[Callable[..., Reconciler]]:
    """A worker (Reconciler) on an embedded bus, talking to the test API server."""
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    buses: list[Bus] = []

    def make(cfg: config.Config, bus: Bus | None = None, **settings: Any) -> Reconciler:
        if bus is None:
            bus = EmbeddedBus(tmp_path / f"bus-{len(buses)}.sqlite3")
        buses.append(bus)
        options = {"threads": 1, "lease_duration": 5.0, "window": 0.2, "poll": False, **settings}
        return Reconciler(cfg, bus, tmp_path / f"state-{len(buses)}", poll_interval=0.1,
                          settings=WorkerSettings(**options))

    yield make
    for bus in buses:
        bus.close()


# -- 5. only a successful run marks a revision done -------------------------------------------


def test_a_push_after_a_failed_reconcile_runs_even_for_the_same_commit(
        make_worker, tmp_path: Path, repo: Repo, kube_api) -> None:
    """The API server refuses a manifest (its namespace does not exist). Someone creates the
    namespace and has GitHub redeliver the push: same commit, new delivery id. It must run,
    not be dropped as "already applied" by the run that failed."""
    sha = repo.commit({"deploy/cm.yaml": """\
        apiVersion: v1
        kind: ConfigMap
        metadata: {name: settings, namespace: nowhere}
        data: {a: b}
        """}, "a ConfigMap in a namespace nobody created yet")
    worker = make_worker(herald_config(tmp_path / "herald.yaml", repo.url))

    deliver(worker, push(sha))
    assert finals(drain_events(worker.bus)) == [("Kustomization", "app", "ReconciliationFailed")]

    kube_api.apply_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "nowhere"}},
                          field_manager="kubectl")
    deliver(worker, push(sha))
    events = [e for e in drain_events(worker.bus) if e["reason"] != "Progressing"]
    assert len(events) == 1, "the redelivered push must run"
    [event] = events
    assert event["reason"] == "ReconciliationSucceeded", event["message"]
    assert "ConfigMap/nowhere/settings created" in event["message"].splitlines()
    assert kube_api.get_object("v1", "ConfigMap", "nowhere", "settings") is not None


# -- 6. the event says when the bus really tries again ----------------------------------------


def run_until_dead(worker: Reconciler, req: ReconcileRequest, timeout: float = 30) -> Delivery:
    """Run the worker's consumer loop until `req` is dead-lettered; its dead letter."""
    stop = threading.Event()
    loop = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    loop.start()
    try:
        worker.bus.publish(RECONCILE_QUEUE, req.to_json(), message_id=req.id)
        [dead] = wait_until(lambda: worker.bus.dead_letters(RECONCILE_QUEUE), timeout, "the dead letter")
        return dead
    finally:
        stop.set()
        loop.join(timeout=20)


def last_lines(events: list[dict[str, Any]], reason: str) -> list[str]:
    return [e["message"].splitlines()[-1] for e in events if e["reason"] == reason]


def test_each_failed_attempt_says_the_embedded_bus_s_real_next_try_and_the_last_says_it_gives_up(
        make_worker, tmp_path: Path, repo: Repo, kube_api) -> None:
    """A rollout that exceeds its progress deadline fails the health check at every attempt.
    The bus retries after its backoff (here 200 ms, then 400 ms) and dead-letters the request
    after the third attempt: the events say exactly that, not Flux's "next try in 10m0s"."""
    kube_api.set_rollout("failed", kind="Deployment")
    cfg = herald_config(tmp_path / "herald.yaml", repo.url, kustomization("app", "./deploy", wait=True))
    bus = EmbeddedBus(tmp_path / "bus.sqlite3", retry=RetryPolicy(max_attempts=3, base_delay=0.2, factor=2.0))
    worker = make_worker(cfg, bus)

    dead = run_until_dead(worker, push(repo.head))
    assert dead.headers[ATTEMPTS_HEADER] == "3"
    tails = last_lines(drain_events(bus), "HealthCheckFailed")
    assert [t.partition(", ")[2] for t in tails] == [
        "next try in 200ms", "next try in 400ms",
        "giving up: attempt 3 of 3, the request is dead-lettered"], tails
    assert all(t.startswith("Reconciliation failed after ") for t in tails)


def test_on_rabbitmq_a_retry_interval_is_said_as_the_delay_queue_the_broker_really_uses(
        make_worker, tmp_path: Path, repo: Repo, kube_api, vhost_url: str) -> None:
    """With `retryInterval: 1100ms` the AMQP bus parks the retry in its 1.189 s delay queue
    (its ladder rounds a requested delay up, at most 9%): the event says 1.189s, and the next
    attempt indeed comes no sooner; the second and last attempt says it gives up."""
    from herald.bus.amqp import AmqpBus

    bus = AmqpBus(vhost_url, retry=RetryPolicy(max_attempts=2, base_delay=0.2, factor=2.0))
    try:
        kube_api.set_rollout("failed", kind="Deployment")
        cfg = herald_config(tmp_path / "herald.yaml", repo.url,
                            kustomization("app", "./deploy", wait=True, retryInterval="1100ms"))
        worker = make_worker(cfg, bus)
        dead = run_until_dead(worker, push(repo.head))
        assert dead.headers[ATTEMPTS_HEADER] == "2"

        events: list[dict[str, Any]] = []
        stop = threading.Event()
        consumer = threading.Thread(target=bus.consume,
                                    args=(EVENTS_QUEUE, lambda d: events.append(json.loads(d.body)), stop))
        consumer.start()
        try:
            wait_until(lambda: len([e for e in events if e["reason"] == "HealthCheckFailed"]) == 2, 20,
                       "both attempts' events")
        finally:
            stop.set()
            consumer.join(timeout=20)
        failed = [e for e in events if e["reason"] == "HealthCheckFailed"]
        tails = [e["message"].splitlines()[-1].partition(", ")[2] for e in failed]
        assert tails == ["next try in 1.189s", "giving up: attempt 2 of 2, the request is dead-lettered"], tails
        first, second = (datetime.fromisoformat(e["timestamp"]) for e in failed)
        assert (second - first).total_seconds() >= 1.189
    finally:
        bus.close()


# -- 7. every Kustomization of a run ends with an event ---------------------------------------


def test_a_failed_fetch_ends_every_kustomization_before_the_retry(make_worker, tmp_path: Path) -> None:
    """The Git host is unreachable. Besides the GitRepository's GitOperationFailed, each
    Kustomization reading it ends with ReconciliationFailed (and its commit status with it)
    before the request goes back to the bus."""
    # Nothing listens on the discard port: the host refuses, as one that is down does.
    cfg = herald_config(tmp_path / "herald.yaml", "http://127.0.0.1:9/gone.git",
                        kustomization("app", "./deploy"), kustomization("extra", "./extra"))
    worker = make_worker(cfg)
    req = push("0123456789abcdef0123456789abcdef01234567")
    with pytest.raises(RetryLater, match="git fetch failed"):
        deliver(worker, req)
    events = drain_events(worker.bus)
    assert finals(events) == [("GitRepository", "app", "GitOperationFailed"),
                              ("Kustomization", "app", "ReconciliationFailed"),
                              ("Kustomization", "extra", "ReconciliationFailed")]
    for e in events[1:]:
        assert e["message"].startswith("fetching GitRepository/flux-system/app failed: git fetch failed")
        assert e["message"].splitlines()[-1].endswith("next try in 1s")
        assert e["metadata"] == {"revision": req.origin["revision"], "commit_status": "update"}


def test_a_repository_that_does_not_exist_is_reported_once_and_not_retried(make_worker, tmp_path: Path) -> None:
    """A wrong URL fails the same way on every try. Retrying it five times within seconds
    only posted five failure events; it is reported once, and the next push or the interval
    (retryInterval) tries again."""
    cfg = herald_config(tmp_path / "herald.yaml", f"file://{tmp_path}/no-such-repo.git",
                        kustomization("app", "./deploy", retryInterval="2m"))
    worker = make_worker(cfg)
    deliver(worker, push("0123456789abcdef0123456789abcdef01234567"))  # handled: no RetryLater
    events = drain_events(worker.bus)
    assert finals(events) == [("GitRepository", "app", "GitOperationFailed"),
                              ("Kustomization", "app", "ReconciliationFailed")]
    assert f"repository file://{tmp_path}/no-such-repo.git not found" in events[0]["message"]
    assert events[1]["message"].splitlines()[-1].endswith("next try in 2m0s")


def test_an_unexpected_error_in_one_kustomization_still_ends_it_and_the_next_one(
        make_worker, tmp_path: Path, repo: Repo, kube_api, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug (here: rendering the first Kustomization raises) must not leave its commit status
    pending, nor stop the Kustomizations after it: the first ends ReconciliationFailed with
    the error, the second is applied, and the request is retried."""
    repo.commit(EXTRA, "extra")
    cfg = herald_config(tmp_path / "herald.yaml", repo.url,
                        kustomization("app", "./deploy"), kustomization("extra", "./extra"))
    worker = make_worker(cfg)
    render = worker._render

    def buggy(ks, *args):
        if ks.meta.name == "app":
            raise KeyError("spec")
        return render(ks, *args)

    monkeypatch.setattr(worker, "_render", buggy)
    with pytest.raises(RetryLater):
        deliver(worker, push(repo.head))
    events = [e for e in drain_events(worker.bus) if e["reason"] != "Progressing"]
    assert finals(events) == [("Kustomization", "app", "ReconciliationFailed"),
                              ("Kustomization", "extra", "ReconciliationSucceeded")]
    assert events[0]["message"].splitlines()[0] == "reconciliation failed: KeyError: 'spec'"
    assert events[0]["metadata"]["commit_status"] == "update"
    assert kube_api.get_object("v1", "ConfigMap", "default", "settings") is not None


# -- 8. health checks agree with kstatus ------------------------------------------------------


def test_a_load_balancer_service_is_healthy_without_a_load_balancer_controller(
        make_worker, tmp_path: Path, repo: Repo, kube_api) -> None:
    """kind, k3d and most labs run no load-balancer controller: a LoadBalancer Service gets a
    cluster IP and never an ingress address. kstatus, and so Flux, calls it Current; so must
    Herald's health check, instead of failing it five times and dead-lettering it."""
    repo.commit({"deploy/lb.yaml": """\
        apiVersion: v1
        kind: Service
        metadata: {name: public, namespace: shop}
        spec:
          type: LoadBalancer
          selector: {app: web}
          ports: [{port: 80}]
        """}, "expose the shop")
    cfg = herald_config(tmp_path / "herald.yaml", repo.url, kustomization("app", "./deploy", wait=True,
                                                                          timeout="2s"))
    worker = make_worker(cfg)
    deliver(worker, push(repo.head))
    [event] = [e for e in drain_events(worker.bus) if e["reason"] != "Progressing"]
    assert event["reason"] == "ReconciliationSucceeded", event["message"]
    service = kube_api.get_object("v1", "Service", "shop", "public")
    assert service["spec"]["clusterIP"] and not service["status"]["loadBalancer"].get("ingress")


# -- 9. a request for the commit being applied needs no follow-up -----------------------------


def test_a_push_of_the_commit_being_applied_does_not_schedule_a_second_run(
        make_worker, tmp_path: Path, repo: Repo, kube_api) -> None:
    """During a burst, GitHub delivers the same push twice (a retry with a new delivery id)
    while the first is already applying that commit and waiting for the rollout. The run in
    progress covers it: one ReconciliationSucceeded in Slack, not a second one from a
    follow-up run that finds nothing to do."""
    kube_api.set_rollout("complete", after=1.5, kind="Deployment")
    cfg = herald_config(tmp_path / "herald.yaml", repo.url, kustomization("app", "./deploy", wait=True))
    worker = make_worker(cfg, window=0.0)
    first = threading.Thread(target=deliver, args=(worker, push(repo.head)))
    first.start()
    wait_until(lambda: kube_api.get_object("apps/v1", "Deployment", "shop", "web"), 10, "the apply")
    time.sleep(0.1)
    deliver(worker, push(repo.head))  # returns at once: covered by the run in progress
    assert first.is_alive(), "the first run must still be waiting for the rollout"
    first.join(timeout=30)
    events = drain_events(worker.bus)
    assert [r for _, _, r in finals(events)] == ["ReconciliationSucceeded"]
    assert "herald.dev/pending" not in lease_annotations(kube_api)


def test_a_push_of_a_newer_commit_during_a_run_still_gets_its_follow_up(
        make_worker, tmp_path: Path, repo: Repo, kube_api) -> None:
    """The other side of the same rule: a push naming a commit the running reconcile did not
    fetch is owed a run of its own, which applies it."""
    kube_api.set_rollout("complete", after=1.5, kind="Deployment")
    cfg = herald_config(tmp_path / "herald.yaml", repo.url, kustomization("app", "./deploy", wait=True))
    worker = make_worker(cfg, window=0.0)
    original = repo.head
    first = threading.Thread(target=deliver, args=(worker, push(original)))
    first.start()
    wait_until(lambda: kube_api.get_object("apps/v1", "Deployment", "shop", "web"), 10, "the apply")
    newer = repo.commit({"deploy/extra.yaml": EXTRA["extra/settings.yaml"].replace("default", "shop")}, "newer")
    deliver(worker, push(newer))
    first.join(timeout=30)
    succeeded = [e for e in drain_events(worker.bus) if e["reason"] == "ReconciliationSucceeded"]
    assert [e["metadata"]["revision"] for e in succeeded] == [f"main@sha1:{original}", f"main@sha1:{newer}"]
    assert kube_api.get_object("v1", "ConfigMap", "shop", "settings") is not None
