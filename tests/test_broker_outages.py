"""The broker taken away: stopped, restarted, frozen. These tests run on a RabbitMQ node of
their worker's own (the other tests share one), so an outage here is never another test's.

The bus (`herald.bus.amqp`): quorum queues keep a message over a restart; a publish during an
outage fails fast with BusUnavailable and the publisher and consumer recover by themselves; a
hung (SIGSTOPped) broker is a BusUnavailable within seconds, not a hang.

The receiver: never 2xx before the broker confirmed, while RabbitMQ is stopped in the middle
of a burst of pushes.

The real `herald receiver -c CONFIG --broker URL` runs as its own process against the local
RabbitMQ, in a private vhost with its own user (so the broker's password can be looked for in
the log too). Several client threads send signed GitHub pushes, each with its own
X-GitHub-Delivery; part-way through, the RabbitMQ app is stopped (`rabbitmqctl stop_app`) and
later started again while the senders keep going. Every answer is recorded. Then the reconcile
queue is read through the bus API (AmqpBus.consume), and:

* every delivery answered 202 is in the queue (matched on origin.delivery) — a 2xx was only
  given once the broker had confirmed;
* every other answer is a 503 with Retry-After (no 500, no hang), and every request sent while
  the broker was down got one;
* the queue holds nothing else: only deliveries we sent, each at most as often as it was sent
  (a 503'ed delivery may have reached the broker before its confirm was lost; that is why the
  sender retries and why redeliveries are harmless);
* after recovery, resending each 503'ed delivery (what GitHub's redelivery does) gets a 202
  and lands in the queue.
"""

from __future__ import annotations

import collections
import queue
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pika
import pytest
import requests

from herald import config
from herald.bus import BusUnavailable, RetryPolicy
from herald.bus.amqp import AmqpBus
from herald.messages import RECONCILE_QUEUE, ReconcileRequest
from tests.fixtures_herald import github_headers, github_push, wait_until, write_config
from tests.fixtures_rabbitmq import FAST_RETRY, RabbitControl, uses_private_rabbitmq
from tests.receiver_types_config import receiver_process

SENDERS = 6
# Fixed batches; while the broker is being stopped and started, deliveries stream in without
# pause (STREAM_RATE per second) so that some are in flight at the moment it goes and comes back.
BATCHES = {"before": 100, "down": 50, "after": 50}
STREAM_RATE = {"stopping": 200.0, "starting": 60.0}
HOOK_TIMEOUT = 30.0

# These tests stop and freeze the broker: a node of this worker's own, not the run's shared one.
rabbitmq_node, rabbitmq_url = uses_private_rabbitmq()


@dataclass
class Answer:
    delivery: str
    status: int  # 0: no HTTP answer at all
    retry_after: str
    sent: float
    answered: float
    text: str


class Burst:
    """Sender threads taking deliveries from a queue; the test releases them in batches."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.todo: queue.Queue[tuple[str, bytes, dict[str, str]] | None] = queue.Queue()
        self.answers: list[Answer] = []
        self.requests: dict[str, tuple[bytes, dict[str, str]]] = {}  # delivery -> what was sent
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._send, daemon=True, name=f"sender-{i}")
                        for i in range(SENDERS)]
        for t in self.threads:
            t.start()

    def release(self, n: int, phase: str) -> list[str]:
        ids = []
        for i in range(n):
            delivery = f"{phase}-{i:03d}-{uuid.uuid4()}"
            body = github_push(uuid.uuid4().hex + uuid.uuid4().hex[:8])  # a 40-hex commit of its own
            headers = github_headers(body, delivery=delivery)
            self.requests[delivery] = (body, headers)
            self.todo.put((delivery, body, headers))
            ids.append(delivery)
        return ids

    def _send(self) -> None:
        session = requests.Session()  # keep-alive, as a proxy in front of us would
        while True:
            item = self.todo.get()
            if item is None:
                return
            delivery, body, headers = item
            sent = time.monotonic()
            try:
                resp = session.post(self.url, data=body, headers=headers, timeout=HOOK_TIMEOUT)
                answer = Answer(delivery, resp.status_code, resp.headers.get("Retry-After", ""), sent,
                                time.monotonic(), resp.text[:300])
            except requests.RequestException as exc:
                answer = Answer(delivery, 0, "", sent, time.monotonic(), repr(exc))
                session = requests.Session()
            with self.lock:
                self.answers.append(answer)
            time.sleep(0.005)

    @contextmanager
    def streaming(self, phase: str, rate: float, into: list[str]) -> Iterator[None]:
        """Keep deliveries coming at `rate` per second while the block runs."""
        stop = threading.Event()

        def produce() -> None:
            while not stop.is_set():
                if self.todo.qsize() < SENDERS:
                    into.extend(self.release(1, phase))
                stop.wait(1.0 / rate)

        t = threading.Thread(target=produce, daemon=True)
        t.start()
        try:
            yield
        finally:
            stop.set()
            t.join()

    def count(self, predicate=lambda a: True) -> int:
        with self.lock:
            return sum(1 for a in self.answers if predicate(a))

    def wait(self, predicate, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.01)

    def finish(self) -> None:
        for _ in self.threads:
            self.todo.put(None)
        for t in self.threads:
            t.join(timeout=HOOK_TIMEOUT + 5)


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture
def private_broker(rabbitmq_url: str):
    """A vhost and a user of our own: the queues start empty and the password is unique."""
    vhost = f"herald-outage-{uuid.uuid4().hex[:8]}"
    user, password = f"herald-outage-{uuid.uuid4().hex[:6]}", f"pw-{uuid.uuid4().hex}"
    _rabbitmqctl("add_vhost", vhost)
    _rabbitmqctl("add_user", user, password)
    _rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
    host = rabbitmq_url.split("@", 1)[1].rsplit("/", 1)[0]
    try:
        yield f"amqp://{user}:{password}@{host}/{vhost}", password
    finally:
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], capture_output=True, timeout=60, check=False)
        subprocess.run(["rabbitmqctl", "-q", "delete_user", user], capture_output=True, timeout=60, check=False)


def _consume_all(broker: str, expect_at_least: int, timeout: float = 30.0) -> list[ReconcileRequest]:
    """Read the reconcile queue through the bus API until it stays empty."""
    bus = AmqpBus(broker, retry=RetryPolicy(max_attempts=2, base_delay=0.5, max_delay=1.0),
                  reconnect_delay=0.2, reconnect_max_delay=1.0)
    got: list[ReconcileRequest] = []
    lock = threading.Lock()
    stop = threading.Event()

    def handler(delivery) -> None:
        with lock:
            got.append(ReconcileRequest.from_json(delivery.body))

    t = threading.Thread(target=bus.consume, args=(RECONCILE_QUEUE, handler, stop), kwargs={"prefetch": 50},
                         daemon=True)
    t.start()
    try:
        deadline = time.monotonic() + timeout
        last, stable_since = -1, time.monotonic()
        while time.monotonic() < deadline:
            with lock:
                n = len(got)
            if n != last:
                last, stable_since = n, time.monotonic()
            elif n >= expect_at_least and time.monotonic() - stable_since > 1.0 and bus.depth(RECONCILE_QUEUE) == 0:
                break
            time.sleep(0.05)
    finally:
        stop.set()
        t.join(timeout=15)
        bus.close()
    return got


def test_stopping_rabbitmq_mid_burst_loses_no_accepted_delivery(tmp_path: Path, rabbitmq_control,
                                                                private_broker) -> None:
    broker, broker_password = private_broker
    cfg = write_config(tmp_path / "herald.yaml", "https://example.com/app.git")
    loaded = config.load([cfg])
    hook = loaded.hook_path(loaded.receivers[("flux-system", "github-app")])
    marks: dict[str, float] = {}
    resent: dict[str, list[int]] = collections.defaultdict(list)

    with receiver_process(cfg, tmp_path, "--broker", broker) as (base, log):
        deadline = time.monotonic() + 30
        while requests.get(base + "/readyz", timeout=5).status_code != 200:
            assert time.monotonic() < deadline, "the receiver never saw the broker"
            time.sleep(0.2)
        burst = Burst(base + hook)
        sent_ids: list[str] = []
        try:
            # Warm up (the delivery log replays its stream once, on the first delivery).
            sent_ids += burst.release(1, "warmup")
            burst.wait(lambda: burst.count() == 1, 30, "the warm-up delivery")

            sent_ids += burst.release(BATCHES["before"], "before")
            burst.wait(lambda: burst.count() >= 61, 60, "the first answers")
            with burst.streaming("stopping", STREAM_RATE["stopping"], sent_ids):
                marks["stop_begin"] = time.monotonic()
                rabbitmq_control.stop()
                marks["stop_end"] = time.monotonic()
            sent_ids += burst.release(BATCHES["down"], "down")
            burst.wait(lambda: burst.count() == len(sent_ids), 60, "the answers while the broker is down")
            with burst.streaming("starting", STREAM_RATE["starting"], sent_ids):
                marks["start_begin"] = time.monotonic()
                rabbitmq_control.start()
                marks["start_end"] = time.monotonic()
            # As a load balancer does: the next batch once the receiver says it is ready again
            # (its publisher holds off reconnecting for up to half a second after a failure).
            deadline = time.monotonic() + 30
            while requests.get(base + "/readyz", timeout=5).status_code != 200:
                assert time.monotonic() < deadline, "the receiver never saw the broker again"
                time.sleep(0.1)
            sent_ids += burst.release(BATCHES["after"], "after")
            burst.wait(lambda: burst.count() == len(sent_ids), 60, "every answer")
        finally:
            burst.finish()
            rabbitmq_control.ensure_running()  # never leave the broker down

        answers = {a.delivery: a for a in burst.answers}
        assert len(answers) == len(sent_ids) > 1 + sum(BATCHES.values())
        # The sender's retry: every delivery not answered 202 is sent again, the same bytes
        # under the same id (GitHub's "Redeliver"), until it is accepted; right after a restart
        # the broker may need a few seconds before its queues take messages again.
        retry_deadline = time.monotonic() + 30
        pending = [d for d in sent_ids if answers[d].status != 202]
        session = requests.Session()
        while pending and time.monotonic() < retry_deadline:
            still = []
            for delivery in pending:
                body, headers = burst.requests[delivery]
                resp = session.post(base + hook, data=body, headers=headers, timeout=HOOK_TIMEOUT)
                resent[delivery].append(resp.status_code)
                if resp.status_code not in (200, 202):
                    still.append(delivery)
            pending = still
            if pending:
                time.sleep(0.5)
        assert pending == [], f"{len(pending)} deliveries were never accepted after recovery"

    consumed = _consume_all(broker, expect_at_least=sum(1 for a in answers.values() if a.status == 202) + len(resent))
    log_text = log.read_text(errors="replace")

    # ---- what the senders were told -------------------------------------------------------
    statuses = collections.Counter(a.status for a in answers.values())
    assert set(statuses) <= {202, 503}, f"answers other than 202 and 503: {statuses}"
    for a in answers.values():
        if a.status == 503:
            assert a.retry_after and int(a.retry_after) > 0, a
    during_outage = [a for a in answers.values() if marks["stop_end"] < a.sent and a.answered < marks["start_begin"]]
    before = [a for a in answers.values() if a.answered < marks["stop_begin"] and a.status == 202]
    after = [a for a in answers.values() if a.sent > marks["start_end"] and a.status == 202]
    assert during_outage and all(a.status == 503 for a in during_outage), \
        [(a.delivery, a.status) for a in during_outage if a.status != 503]
    assert len(before) >= 50, "the broker was stopped before the burst got going"
    assert after, "nothing was accepted once the broker was back"

    # ---- what the broker holds ------------------------------------------------------------
    per_delivery = collections.Counter(r.origin["delivery"] for r in consumed)
    assert set(per_delivery) <= set(sent_ids), "the queue holds requests for deliveries never sent"
    accepted = [d for d, a in answers.items() if a.status == 202]
    lost = [d for d in accepted if per_delivery[d] == 0]
    assert lost == [], f"{len(lost)} deliveries answered 202 are not in the queue: {lost[:5]}"
    for delivery, count in per_delivery.items():
        # Never more often than sent; a delivery accepted the first time, exactly once.
        assert count <= 1 + len(resent.get(delivery, ())), (delivery, count, resent.get(delivery))
        if delivery not in resent:
            assert count == 1, f"{delivery} was sent once and accepted, but is queued {count} times"
    # Every 503'ed delivery, resent after recovery, was accepted and is in the queue.
    assert all(per_delivery[d] >= 1 for d in resent)
    assert all(codes[-1] in (200, 202) for codes in resent.values())
    for r in consumed:
        assert (r.kind, r.name, r.namespace, r.origin["receiver"]) == \
            ("GitRepository", "app", "flux-system", "flux-system/github-app")

    # ---- and the log says why, once per outage, without the broker's password -----------------
    # Each worker process that publishes says once that the broker went away and once that it
    # is back (with how many publishes failed); nothing per request, nothing from pika.
    lines = log_text.splitlines()
    gone = [ln for ln in lines if "the broker cannot be reached" in ln]
    back = [ln for ln in lines if "the broker is reachable again" in ln]
    assert gone and len(gone) == len(back) <= 8, (gone, back)
    assert [ln for ln in lines if " ERROR " in ln or "Traceback" in ln] == []
    assert len([ln for ln in lines if " WARNING " in ln]) <= 6 * len(gone), \
        [ln for ln in lines if " WARNING " in ln][:20]
    assert not any(" pika" in ln for ln in lines)
    assert broker_password not in log_text

    by_batch = collections.defaultdict(collections.Counter)
    for a in answers.values():
        by_batch[a.delivery.split("-", 1)[0]][a.status] += 1
    print(f"\noutage burst by batch: { {b: dict(c) for b, c in by_batch.items()} }")
    print(f"outage burst: {dict(statuses)}; 202 before stop={len(before)}, 503 while down={len(during_outage)}, "
          f"202 after restart={len(after)}; resent {len(resent)} "
          f"(attempts {sum(len(v) for v in resent.values())}); consumed {len(consumed)}; "
          f"phantoms (503 but queued before the resend)={sum(1 for d in resent if per_delivery[d] > 1)}; "
          f"stop took {marks['stop_end'] - marks['stop_begin']:.1f}s, start {marks['start_end'] - marks['start_begin']:.1f}s")


# -- the bus alone ------------------------------------------------------------------------


def test_amqp_queues_are_quorum_and_messages_survive_a_broker_restart(
    amqp_bus: AmqpBus, queue_name: str, rabbitmq_control: RabbitControl
) -> None:
    amqp_bus.publish(queue_name, b'{"k":1}', message_id="persist-me")
    out = subprocess.run(
        ["rabbitmqctl", "-q", "list_queues", "--no-table-headers", "name", "type", "durable",
         "arguments"],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout
    listed = {line.split()[0]: line.split()[1:3] for line in out.splitlines()
              if line.startswith(queue_name)}
    # Retry queues are declared when a message first needs one (see herald.bus.amqp).
    assert listed == {queue_name: ["quorum", "true"], f"{queue_name}.dead": ["quorum", "true"]}

    rabbitmq_control.stop()
    rabbitmq_control.start()

    connection = pika.BlockingConnection(pika.URLParameters(amqp_bus.url))
    try:
        channel = connection.channel()
        method, props, body = channel.basic_get(queue_name, auto_ack=True)
        assert method is not None, "the message did not survive the restart"
        assert body == b'{"k":1}'
        assert props.delivery_mode == 2
        assert props.content_type == "application/json"
        assert props.message_id == "persist-me"
    finally:
        connection.close()


def test_amqp_outage_fails_fast_then_publisher_and_consumer_recover(
    amqp_bus: AmqpBus, queue_name: str, rabbitmq_control: RabbitControl
) -> None:
    received: list[bytes] = []
    stop = threading.Event()
    consumer = threading.Thread(
        target=amqp_bus.consume, args=(queue_name, lambda d: received.append(d.body), stop)
    )
    consumer.start()
    try:
        amqp_bus.publish(queue_name, b'"before"')
        wait_until(lambda: received == [b'"before"'], 10, "the message sent before the outage")

        rabbitmq_control.stop()
        started = time.monotonic()
        with pytest.raises(BusUnavailable):
            amqp_bus.publish(queue_name, b'"during"')
        assert time.monotonic() - started < 5, "publish must fail fast, not hang"
        time.sleep(1.1)  # past ping()'s cache
        assert amqp_bus.ping() is False

        rabbitmq_control.start()
        amqp_bus.publish(queue_name, b'"after"')  # reconnects by itself
        wait_until(lambda: received == [b'"before"', b'"after"'], 15, "the message sent after the outage")
        time.sleep(1.1)
        assert amqp_bus.ping() is True
    finally:
        stop.set()
        consumer.join(10)
    assert not consumer.is_alive()


def test_amqp_hung_broker_yields_bus_unavailable_not_a_hang(
    rabbitmq_url: str, amqp_bus: AmqpBus, queue_name: str, rabbitmq_control: RabbitControl
) -> None:
    bus = AmqpBus(rabbitmq_url, retry=FAST_RETRY, confirm_timeout=1.5, connect_timeout=1.0)
    try:
        bus.publish(queue_name, b"{}")  # connection open and queues declared
        rabbitmq_control.freeze()
        try:
            started = time.monotonic()
            with pytest.raises(BusUnavailable):
                bus.publish(queue_name, b"{}")  # no confirm ever comes
            assert time.monotonic() - started < 4
            started = time.monotonic()
            with pytest.raises(BusUnavailable):
                bus.publish(queue_name, b"{}")  # TCP connects, the AMQP handshake never ends
            assert time.monotonic() - started < 6
        finally:
            rabbitmq_control.thaw()
        wait_until(lambda: _publishes(bus, queue_name), 20, "a publish after the thaw")
    finally:
        bus.close()  # the amqp_bus fixture deletes the queues


def _publishes(bus: AmqpBus, queue: str) -> bool:
    try:
        bus.publish(queue, b"{}")
    except BusUnavailable:
        return False
    return True
