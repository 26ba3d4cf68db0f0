"""Concurrency and delivery: one reconcile per target at a time, coalesced, never lost.

The multi-process scenarios run real `herald worker` processes against a real RabbitMQ (a
private vhost each), a real Git repository and the test Kubernetes API server, where the
per-target Lease lives (`reconciler.locks`, `reconciler.coalesce`):

- a burst of 100 requests for one GitRepository while commits keep landing → at most two
  reconciles, the last applying the newest commit;
- a worker SIGKILLed mid-reconcile → the other worker takes the Lease over once it expires and
  finishes the request;
- SIGTERM during a reconcile → the worker exits 0 at once, handing the request back, and the
  other worker finishes it;
- `spec.interval` polling reconciles with no webhook at all and corrects drift made by hand;
- a permanently failing reconcile ends in `herald.reconcile.dead` with its last error.

Short Lease durations and intervals come from the environment (`HERALD_LEASE_DURATION`, ...),
so the whole module runs in well under a minute.
"""

from __future__ import annotations

import json
import math
import os
import queue
import signal
import subprocess
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pika
import pytest

from herald import config
from herald.bus import ATTEMPTS_HEADER, ERROR_HEADER, RetryPolicy
from herald.bus.amqp import AmqpBus
from herald.messages import RECONCILE_QUEUE, ReconcileRequest
from reconciler.coalesce import Coordinator, Options, RetryLater, State
from reconciler.locks import MemoryLeaseStore
from reconciler.worker import Reconciler, WorkerSettings
from tests.fixtures_herald import Repo, start_herald, stop_herald, wait_until
from tests.fixtures_rabbitmq import fresh_vhost

LEASE = ("coordination.k8s.io/v1", "Lease", "flux-system", "herald-gitrepository-app")


# -- helpers --------------------------------------------------------------------------------


def write_config(path: Path, repo: Repo, *, interval: str = "10m", wait: bool = False, url: str = "") -> Path:
    path.write_text(textwrap.dedent(f"""\
        apiVersion: source.toolkit.fluxcd.io/v1
        kind: GitRepository
        metadata: {{name: app, namespace: flux-system}}
        spec:
          interval: {interval}
          url: {url or repo.url}
          ref: {{branch: main}}
        ---
        apiVersion: kustomize.toolkit.fluxcd.io/v1
        kind: Kustomization
        metadata: {{name: app, namespace: flux-system}}
        spec:
          interval: {interval}
          path: ./deploy
          prune: true
          wait: {str(wait).lower()}
          timeout: 30s
          sourceRef: {{kind: GitRepository, name: app}}
        """))
    return path


@pytest.fixture
def broker(rabbitmq_url: str) -> Iterator[str]:
    """A private vhost: herald.reconcile and herald.events start empty and are ours alone."""
    with fresh_vhost(rabbitmq_url) as url:
        yield url


class Amqp:
    """The test's own view of the broker: publish requests, read events, count consumers."""

    def __init__(self, url: str) -> None:
        self.conn = pika.BlockingConnection(pika.URLParameters(url))
        self.ch = self.conn.channel()
        self.ch.confirm_delivery()
        for name in ("herald.reconcile", "herald.reconcile.dead", "herald.events", "herald.events.dead"):
            self.ch.queue_declare(name, durable=True, arguments={"x-queue-type": "quorum"})

    def publish(self, req: ReconcileRequest) -> None:
        self.ch.basic_publish("", RECONCILE_QUEUE, req.to_json(), pika.BasicProperties(
            delivery_mode=2, content_type="application/json", message_id=req.id))

    def consumers(self, queue: str = RECONCILE_QUEUE) -> int:
        return self.ch.queue_declare(queue, passive=True).method.consumer_count

    def ready(self, queue: str = RECONCILE_QUEUE) -> int:
        return self.ch.queue_declare(queue, passive=True).method.message_count

    def events(self) -> list[dict[str, Any]]:
        out = []
        while True:
            method, _props, body = self.ch.basic_get("herald.events", auto_ack=True)
            if method is None:
                return out
            out.append(json.loads(body))

    def close(self) -> None:
        if self.conn.is_open:
            self.conn.close()


@dataclass
class Worker:
    proc: subprocess.Popen
    log: Path

    @property
    def text(self) -> str:
        return self.log.read_text()


@pytest.fixture
def workers(tmp_path: Path, kubeconfig: Path) -> Iterator[Callable[..., Worker]]:
    """Start `herald worker` processes; each is stopped (SIGTERM, then SIGKILL) afterwards."""
    started: list[Worker] = []

    def start(cfg: Path, *extra: str, **env: str) -> Worker:
        n = len(started)
        log = tmp_path / f"worker-{n}.log"
        # No start-up reconcile: these scenarios count the runs their own requests make.
        environ = dict(os.environ, KUBECONFIG=str(kubeconfig), HERALD_LOG_LEVEL="INFO",
                       HERALD_STATE_DIR=str(tmp_path / f"state-{n}"), HERALD_LEASE_DURATION="2",
                       HERALD_RECONCILE_THREADS="2", HERALD_STARTUP_RECONCILE="false", **env)
        environ.pop("HERALD_BROKER_URL", None)
        w = Worker(start_herald("worker", cfg, log, environ, *extra), log)
        started.append(w)
        return w

    yield start
    for w in started:
        stop_herald(w.proc)


def lease(kube_api) -> dict[str, Any]:
    return kube_api.get_object(*LEASE) or {}


def holder_pid(kube_api) -> int | None:
    """The pid of the worker whose run is in progress (identity is host/pid/token)."""
    obj = lease(kube_api)
    holder = (obj.get("spec") or {}).get("holderIdentity") or ""
    running = ((obj.get("metadata") or {}).get("annotations") or {}).get("herald.dev/running-since")
    return int(holder.split("/")[1]) if holder and running else None


def succeeded(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["reason"] == "ReconciliationSucceeded"
            and e["involvedObject"]["kind"] == "Kustomization"]


def applied_revision(kube_api) -> str:
    cm = kube_api.get_object("v1", "ConfigMap", "flux-system", "herald-inventory-app") or {}
    return (cm.get("data") or {}).get("lastAppliedRevision", "")


# -- the coordinator alone (no processes): the rules, fast -----------------------------------


@dataclass
class FakeOutcome:
    retry: str = ""
    retry_after: float | None = None
    revision: str = ""


def test_a_burst_consumed_by_four_threads_is_coalesced_into_two_runs() -> None:
    """100 requests made within a second, consumed by 4 threads as a bus would hand them out,
    runs much shorter than the burst: the coalescing window still keeps it to two runs, the
    second starting after the last request was made."""
    store = MemoryLeaseStore()
    coordinator = Coordinator(Options(lease_duration=5, window=1.0, skew=0.0, poll=0.05))
    runs: list[float] = []
    inbox: queue.Queue[ReconcileRequest | None] = queue.Queue()
    results: list[str] = []

    def run(_req: ReconcileRequest) -> FakeOutcome:
        runs.append(time.time())
        time.sleep(0.05)
        return FakeOutcome(revision="main@sha1:" + "a" * 40)

    def consumer() -> None:
        while (req := inbox.get()) is not None:
            results.append(coordinator.process(store, ("flux-system", "app"), req, "*", run, threading.Event()))

    threads = [threading.Thread(target=consumer) for _ in range(4)]
    for t in threads:
        t.start()
    first = time.time()
    for _ in range(100):
        last = time.time()  # when the request is made: the sleep after it is not part of it
        inbox.put(ReconcileRequest(kind="GitRepository", name="app", namespace="flux-system"))
        time.sleep(0.004)  # about half the window: on a busy machine it still ends within it
    for _ in threads:
        inbox.put(None)
    for t in threads:
        t.join()
    # Two runs need the burst to end within the window after the first run; one that outlasts
    # it rightly gets a third run (its tail came after the second run started).
    assert last - first < 1.0, f"the burst took {last - first:.2f}s: the machine is too busy for this scenario"
    assert len(runs) == 2, runs
    assert runs[-1] >= last, "the last run must start after the last request"
    assert results.count("coalesced") + results.count("satisfied") == 99 and results.count("ran 2") == 1
    record = store.read(("flux-system", "app"))
    assert record is not None and record.free


def test_a_failed_run_leaves_its_work_pending_for_the_retry() -> None:
    store = MemoryLeaseStore()
    coordinator = Coordinator(Options(lease_duration=5, window=0.0, skew=0.0, poll=0.05))
    results = [FakeOutcome(retry="git fetch failed"), FakeOutcome(revision="main@sha1:" + "b" * 40)]
    req = ReconcileRequest(kind="GitRepository", name="app", namespace="flux-system")
    with pytest.raises(RetryLater, match="git fetch failed"):
        coordinator.process(store, ("flux-system", "app"), req, "*", lambda _r: results.pop(0), threading.Event())
    record = store.read(("flux-system", "app"))
    assert record is not None and record.free and State.load(record.annotations).pending == ["*"]
    # The bus's retry of the same message runs it (and what is pending) and clears it.
    assert coordinator.process(store, ("flux-system", "app"), req, "*", lambda _r: results.pop(0),
                               threading.Event()) == "ran 1"
    state = State.load(store.read(("flux-system", "app")).annotations)
    assert state.pending == [] and state.done["*"][1].endswith("b" * 40)
    # Now satisfied: a redelivery of the same request does nothing.
    assert coordinator.process(store, ("flux-system", "app"), req, "*", lambda _r: results.pop(0),
                               threading.Event()) == "satisfied"


# -- real worker processes on RabbitMQ -------------------------------------------------------


def test_a_hundred_requests_in_a_second_make_at_most_two_reconciles(
        tmp_path: Path, repo: Repo, kube_api, broker: str, workers) -> None:
    cfg = write_config(tmp_path / "herald.yaml", repo)
    amqp = Amqp(broker)
    try:
        a, b = workers(cfg, "--broker", broker), workers(cfg, "--broker", broker)
        wait_until(lambda: amqp.consumers() >= 4, 30, "both workers (2 threads each) to consume")

        latest = {"sha": repo.head}
        commits: list[str] = []
        landed: list[float] = []

        def keep_committing() -> None:
            for i in range(4):  # a commit lands every 0.2 s during the burst, the last well before its end
                time.sleep(max(0.0, started + 0.05 + 0.2 * i - time.monotonic()))
                sha = repo.commit({"deploy/version.yaml": f"""\
                    apiVersion: v1
                    kind: ConfigMap
                    metadata: {{name: version, namespace: shop}}
                    data: {{commit: "{i}"}}
                    """}, f"commit {i}")
                commits.append(sha)
                latest["sha"] = sha
                landed.append(time.monotonic())

        committer = threading.Thread(target=keep_committing)
        started = time.monotonic()
        committer.start()
        for i in range(100):  # each as a push webhook would publish it: naming the tip it saw
            amqp.publish(ReconcileRequest(kind="GitRepository", name="app", namespace="flux-system",
                                          origin={"revision": f"main@sha1:{latest['sha']}",
                                                  "delivery": f"push-{i}"}))
            time.sleep(max(0.0, started + (i + 1) * 0.0095 - time.monotonic()))
        # On a loaded machine the last commit may land after the hundredth request: the burst
        # then ends with one more request, naming it, as its push webhook would.
        committer.join()
        if landed[-1] > time.monotonic() - 0.05:
            time.sleep(0.05)
        amqp.publish(ReconcileRequest(kind="GitRepository", name="app", namespace="flux-system",
                                      origin={"revision": f"main@sha1:{latest['sha']}", "delivery": "push-100"}))
        ended = time.monotonic()
        burst = ended - started
        # On a loaded machine (a parallel run) publishing the hundred may take longer than the
        # second it is paced for; each further coalescing window (1 s) may then add one run.
        assert burst < 3.0, f"the burst took {burst:.2f}s"
        most = 1 + math.ceil(burst / 1.0)
        assert len(landed) == 4 and landed[-1] < ended - 0.05, "the last commit must land during the burst"
        newest = commits[-1]

        wait_until(lambda: applied_revision(kube_api) == f"main@sha1:{newest}", 30, "the newest commit applied")
        wait_until(lambda: amqp.ready() == 0 and not (lease(kube_api).get("spec") or {}).get("holderIdentity"),
                   30, "every request handled and the Lease released")
        time.sleep(1.5)  # room for a stray third run to show up, if there were one
        events = succeeded(amqp.events())
        fetches = a.text.count(": fetched main@sha1:") + b.text.count(": fetched main@sha1:")
        print(f"\n100 requests in {burst:.2f}s with {len(commits)} commits landing: "
              f"{len(events)} reconciles ({fetches} fetches)")
        assert 1 <= len(events) <= most and fetches == len(events), (events, a.text, b.text)
        assert events[-1]["metadata"]["revision"] == f"main@sha1:{newest}"
        assert kube_api.get_object("v1", "ConfigMap", "shop", "version")["data"] == {"commit": "3"}
        assert amqp.ready() == 0 and amqp.ready("herald.reconcile.dead") == 0
        assert (a.text + b.text).count("covered by a reconcile that is queued or running") + \
            (a.text + b.text).count("already applied by a reconcile") >= 100 - len(events) - 1
    finally:
        amqp.close()


def test_a_worker_killed_mid_reconcile_is_taken_over_by_another(
        tmp_path: Path, repo: Repo, kube_api, broker: str, workers) -> None:
    cfg = write_config(tmp_path / "herald.yaml", repo, wait=True)
    kube_api.set_rollout("complete", after=4.0)  # the health check keeps the reconcile busy
    amqp = Amqp(broker)
    try:
        pool = [workers(cfg, "--broker", broker), workers(cfg, "--broker", broker)]
        wait_until(lambda: amqp.consumers() >= 4, 30, "both workers to consume")
        req = ReconcileRequest(kind="GitRepository", name="app", namespace="flux-system",
                               origin={"revision": f"main@sha1:{repo.head}"})
        amqp.publish(req)

        pid = wait_until(lambda: holder_pid(kube_api), 20, "a worker to start the reconcile")
        wait_until(lambda: kube_api.get_object("apps/v1", "Deployment", "shop", "web"), 10, "the apply")
        [victim] = [w for w in pool if w.proc.pid == pid]
        [survivor] = [w for w in pool if w is not victim]
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait(timeout=10)
        killed_at = time.monotonic()

        [event] = wait_until(lambda: succeeded(amqp.events()), 30, "the other worker to finish it")
        took = time.monotonic() - killed_at
        assert event["metadata"]["revision"] == f"main@sha1:{repo.head}"
        assert "Health check passed" in event["message"]
        assert "took over the Lease from" in survivor.text and f"/{pid}/" in survivor.text
        # The success event is published inside the run; the Lease is released when it ends.
        wait_until(lambda: not lease(kube_api)["spec"].get("holderIdentity"), 10, "the Lease to be released")
        assert lease(kube_api)["spec"]["leaseTransitions"] >= 1
        assert applied_revision(kube_api) == f"main@sha1:{repo.head}"
        wait_until(lambda: amqp.ready() == 0, 10, "the request to be acknowledged")
        assert amqp.ready("herald.reconcile.dead") == 0
        print(f"\ntaken over and finished {took:.1f}s after the SIGKILL (Lease duration 2s)")
    finally:
        amqp.close()


def test_sigterm_during_a_reconcile_exits_cleanly_and_hands_the_request_over(
        tmp_path: Path, repo: Repo, kube_api, broker: str, workers) -> None:
    cfg = write_config(tmp_path / "herald.yaml", repo, wait=True)
    kube_api.set_rollout("complete", after=5.0)
    amqp = Amqp(broker)
    try:
        pool = [workers(cfg, "--broker", broker), workers(cfg, "--broker", broker)]
        wait_until(lambda: amqp.consumers() >= 4, 30, "both workers to consume")
        amqp.publish(ReconcileRequest(kind="GitRepository", name="app", namespace="flux-system"))

        pid = wait_until(lambda: holder_pid(kube_api), 20, "a worker to start the reconcile")
        wait_until(lambda: kube_api.get_object("apps/v1", "Deployment", "shop", "web"), 10, "the apply")
        [stopping] = [w for w in pool if w.proc.pid == pid]
        [other] = [w for w in pool if w is not stopping]
        signalled = time.monotonic()
        stopping.proc.send_signal(signal.SIGTERM)
        assert stopping.proc.wait(timeout=15) == 0, stopping.text
        assert time.monotonic() - signalled < 5, "a health wait must not hold up the shutdown"
        assert "handing the request back" in stopping.text

        [event] = wait_until(lambda: succeeded(amqp.events()), 30, "the other worker to finish it")
        assert "Health check passed" in event["message"]
        assert ": fetched main@sha1:" in other.text
        wait_until(lambda: amqp.ready() == 0, 10, "the request to be acknowledged")
        assert amqp.ready("herald.reconcile.dead") == 0
        # The success event goes out inside the run; the Lease is released when the run ends.
        wait_until(lambda: not lease(kube_api)["spec"].get("holderIdentity"), 10, "the Lease to be released")
    finally:
        amqp.close()


# -- interval polling ---------------------------------------------------------------------------


def test_interval_polling_reconciles_without_a_webhook_and_corrects_drift(
        tmp_path: Path, repo: Repo, kube_api, kubeconfig: Path, workers) -> None:
    cfg = write_config(tmp_path / "herald.yaml", repo, interval="2s")
    worker = workers(cfg, HERALD_POLL_JITTER="0.05")  # the embedded bus: no broker, no webhook

    deployment = wait_until(lambda: kube_api.get_object("apps/v1", "Deployment", "shop", "web"), 15,
                            "the first interval poll to apply the repository")
    assert deployment["spec"]["replicas"] == 2
    assert "interval poll: requested a reconcile of GitRepository/flux-system/app" in worker.text

    # Someone scales the Deployment by hand: the next interval run puts it back.
    subprocess.run(["kubectl", "--kubeconfig", str(kubeconfig), "--request-timeout=10s", "scale", "deployment",
                    "web", "-n", "shop", "--replicas=5"], check=True, capture_output=True, timeout=60)
    assert kube_api.get_object("apps/v1", "Deployment", "shop", "web")["spec"]["replicas"] == 5
    wait_until(lambda: kube_api.get_object("apps/v1", "Deployment", "shop", "web")["spec"]["replicas"] == 2, 15,
               "the drift to be corrected")
    wait_until(lambda: "Deployment/shop/web configured (drift corrected)" in worker.text, 5, "the drift line")
    worker.proc.terminate()
    assert worker.proc.wait(timeout=20) == 0, worker.text


# -- the dead-letter queue ----------------------------------------------------------------------


def test_a_permanently_failing_reconcile_ends_in_the_dead_letter_queue(
        tmp_path: Path, repo: Repo, kube_api, kubeconfig: Path, broker: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    # A Git host that refuses every connection: worth retrying, until the attempts run out. (A
    # repository that does not exist is not retried at all: reconciler.git's permanent errors.)
    cfg = config.load([write_config(tmp_path / "herald.yaml", repo, url="http://127.0.0.1:9/gone.git")])
    bus = AmqpBus(broker, retry=RetryPolicy(max_attempts=3, base_delay=0.1, factor=2.0, max_delay=1.0))
    reconciler = Reconciler(cfg, bus, tmp_path / "state", settings=WorkerSettings(
        threads=1, lease_duration=2, window=0.2, poll=False))
    stop = threading.Event()
    consumer = threading.Thread(target=reconciler.run, args=(stop,), daemon=True)
    consumer.start()
    amqp = Amqp(broker)
    try:
        req = ReconcileRequest(kind="GitRepository", name="app", namespace="flux-system")
        amqp.publish(req)
        [dead] = wait_until(lambda: bus.dead_letters(RECONCILE_QUEUE), 30, "the dead letter")
        assert json.loads(dead.body)["id"] == req.id
        assert dead.headers[ATTEMPTS_HEADER] == "3"
        assert dead.headers[ERROR_HEADER].startswith("RetryLater: git fetch failed")
        failures = [e for e in amqp.events() if e["reason"] == "GitOperationFailed"]
        assert len(failures) == 3, "one event per attempt"
        # Nobody holds the Lease; the failed work stays owed (the interval poller picks it up).
        annotations = lease(kube_api)["metadata"]["annotations"]
        assert not lease(kube_api)["spec"].get("holderIdentity") and annotations["herald.dev/pending"] == '["*"]'
    finally:
        stop.set()
        consumer.join(timeout=20)
        bus.close()
        amqp.close()
