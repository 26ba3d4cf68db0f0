"""Notifications survive what production throws at them, with every part real:
RabbitMQ, the notifier in its own process, and local servers in each provider's wire format.

- a provider answering 503 for a whole minute gets every notification, once, after it recovers;
- a notifier SIGKILLed with deliveries pending delivers them all after a restart, and sends
  nothing twice but what was on the wire at the moment of the kill;
- a notifier SIGTERMed mid-delivery finishes what is on the wire, starts nothing new, exits 0,
  and the next one sends the rest, each once;
- the same event announced twice within the dedupe window, even across a restart, is sent once;
- a template shapes the message; a push's commit status lands on the pushed sha.
"""

from __future__ import annotations

import json
import os
import signal
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import requests

from herald import config
from herald.bus import open_bus
from herald.messages import EVENTS_QUEUE, NOTIFY_QUEUE, Event
from notifier.worker import Notifier, NotifierSettings
from tests.chatapis import GenericReceiver, Reply, Request, text_reply
from tests.fixtures_herald import (
    TOKEN,
    Repo,
    free_port,
    github_headers,
    github_push,
    github_status_alert,
    start_herald,
    stop_herald,
    wait_ready,
    wait_until,
    write_config,
)
from tests.gitforges import GitForges

HMAC_KEY = "generic-hmac-key-for-tests"


class FlakyReceiver(GenericReceiver):
    """A generic webhook receiver that can be down (503) and can hold requests at a gate."""

    def __init__(self) -> None:
        super().__init__(hmac_key=HMAC_KEY)
        self.down_until = 0.0
        self.gate = threading.Event()
        self.gate.set()
        self.held: list[str] = []  # messages of requests held at the gate
        self.entered = 0  # requests that reached the handler, answered or not yet

    def handle(self, request: Request) -> Reply:
        self.entered += 1
        if time.monotonic() < self.down_until:
            return text_reply(503, "upstream connect error or disconnect/reset before headers")
        if not self.gate.is_set():
            self.held.append(json.loads(request.raw)["message"])
            self.gate.wait()
        return super().handle(request)

    def messages(self) -> Counter[str]:
        return Counter(e["message"] for e in self.events)


def notifier_config(path: Path, receiver: FlakyReceiver, *, template: str = "") -> Path:
    path.write_text(textwrap.dedent(f"""\
        apiVersion: v1
        kind: Secret
        metadata: {{name: hook, namespace: flux-system}}
        stringData:
          address: "{receiver.webhook_url}"
          token: {HMAC_KEY}
        ---
        apiVersion: notification.toolkit.fluxcd.io/v1beta3
        kind: Provider
        metadata: {{name: hook, namespace: flux-system}}
        spec: {{type: generic-hmac, secretRef: {{name: hook}}, timeout: 5s}}
        ---
        apiVersion: notification.toolkit.fluxcd.io/v1beta3
        kind: Alert
        metadata: {{name: everything, namespace: flux-system}}
        spec:
          providerRef: {{name: hook}}
          eventSources: [{{kind: Kustomization, name: '*', namespace: '*'}}]
        """) + (f"  template: {json.dumps(template)}\n" if template else ""))
    return path


def event(i: int, namespace: str = "apps") -> Event:
    return Event.for_object("Kustomization", f"app-{i % 7}", namespace, severity="info",
                            reason="ReconciliationSucceeded", message=f"Deployment/{namespace}/web-{i} configured",
                            metadata={"revision": f"main@sha1:{i:040x}", "commit_status": "update"})


@pytest.fixture
def receiver():
    with FlakyReceiver() as server:
        yield server


# The minute-long outage of the scenario, and the notifier's backoff, both scaled down by the
# same factor: the notifier climbs the same ladder of retries (1 s doubling to 8 s, over a
# minute) in a sixth of the time, and the suite does not spend a minute waiting.
TIME_SCALE = 1 / 6


def test_a_provider_down_for_a_minute_gets_every_notification_once_after_it_recovers(
        tmp_path: Path, receiver: FlakyReceiver, vhost_url: str) -> None:
    cfg = config.load([notifier_config(tmp_path / "n.yaml", receiver)])
    bus = open_bus(vhost_url, tmp_path)
    # Backoff from 1 s capped at 8 s (the default cap is 5 min), scaled as the outage is.
    settings = NotifierSettings(first_retry=1.0 * TIME_SCALE, max_retry_delay=8.0 * TIME_SCALE)
    stop = threading.Event()
    worker = threading.Thread(target=Notifier(cfg, bus, settings=settings).run, args=(stop,))
    receiver.down_until = time.monotonic() + 60 * TIME_SCALE
    worker.start()
    try:
        for i in range(20):
            bus.publish(EVENTS_QUEUE, event(i).to_json())
        time.sleep(55 * TIME_SCALE)
        assert not receiver.delivered, "nothing gets through while the provider is down"
        refused = len(receiver.requests)
        assert refused >= 20 * 3, "every delivery was tried, and retried, during the outage"
        wait_until(lambda: len(receiver.delivered) >= 20, 40, "all 20 deliveries after the recovery")
        time.sleep(2)
    finally:
        stop.set()
        worker.join(15)
        bus.close()
    assert receiver.messages() == Counter({f"Deployment/apps/web-{i} configured": 1 for i in range(20)})
    assert bus.dead_letters(NOTIFY_QUEUE) == []


ALL_30 = {f"Deployment/apps/web-{i} configured" for i in range(30)}


class Interrupted:
    """Thirty events for a notifier process, stopped by `signal` while the provider holds its
    requests on the wire; then a second notifier is started to deliver the rest."""

    def __init__(self, tmp_path: Path, receiver: FlakyReceiver, vhost_url: str) -> None:
        self.tmp, self.receiver, self.url = tmp_path, receiver, vhost_url
        self.cfg = notifier_config(tmp_path / "n.yaml", receiver)
        self.env = dict(os.environ, HERALD_LOG_LEVEL="INFO", HERALD_STATE_DIR=str(tmp_path / "state"),
                        HERALD_NOTIFY_THREADS="2")
        self.bus = open_bus(vhost_url, tmp_path)
        for i in range(30):
            self.bus.publish(EVENTS_QUEUE, event(i).to_json())
        self.first = start_herald("notifier", self.cfg, tmp_path / "first.log", self.env, "--broker", vhost_url)

    def hold_and_signal(self, signum: int) -> None:
        """After ten deliveries, hold what arrives at the provider, then signal the notifier."""
        try:
            wait_until(lambda: len(self.receiver.delivered) >= 10, 30, "ten deliveries")
            self.receiver.gate.clear()
            wait_until(lambda: self.receiver.held, 10, "a request held mid-flight")
            time.sleep(0.3)  # every delivery thread is now waiting on the provider
            self.first.send_signal(signum)
        except BaseException:
            self.first.kill()
            raise

    def deliver_the_rest(self) -> None:
        second = start_herald("notifier", self.cfg, self.tmp / "second.log", self.env, "--broker", self.url)
        try:
            wait_until(lambda: set(self.receiver.messages()) == ALL_30, 60, "all 30 events delivered")
            time.sleep(2)
        finally:
            assert stop_herald(second) == 0
            self.bus.close()


def test_a_sigkilled_notifier_delivers_everything_after_restart_and_nothing_twice(
        tmp_path: Path, receiver: FlakyReceiver, vhost_url: str) -> None:
    run = Interrupted(tmp_path, receiver, vhost_url)
    run.hold_and_signal(signal.SIGKILL)  # what is on the wire now is caught mid-request
    run.first.wait(10)
    in_flight = set(receiver.held)
    receiver.gate.set()
    assert len(receiver.delivered) < 30, "the kill came with deliveries still pending"

    run.deliver_the_rest()
    twice = {message for message, n in receiver.messages().items() if n > 1}
    # At-least-once: only a request the provider had received when the process died may repeat.
    assert twice <= in_flight, (twice, in_flight)
    assert all(n <= 2 for n in receiver.messages().values())


def test_a_sigterm_mid_delivery_finishes_what_is_in_flight_takes_nothing_new_and_exits_0(
        tmp_path: Path, receiver: FlakyReceiver, vhost_url: str) -> None:
    """What a rolling update or a scale-down does: the deliveries on the wire complete (the
    provider answers after the signal), nothing more is started, the process exits 0 well
    within Kubernetes' 30 s grace period, and the next notifier sends the rest: each once."""
    run = Interrupted(tmp_path, receiver, vhost_url)
    run.hold_and_signal(signal.SIGTERM)
    try:
        time.sleep(1.0)
        started_before_answers = receiver.entered
        signalled = time.monotonic()
        receiver.gate.set()  # the provider answers the requests it was holding
        code = run.first.wait(20)
        took = time.monotonic() - signalled
    finally:
        if run.first.poll() is None:
            run.first.kill()
    assert code == 0, (tmp_path / "first.log").read_text()
    assert took < 10, f"exited {took:.1f}s after its last delivery was answered"
    assert receiver.entered == started_before_answers, "no delivery may start after SIGTERM"
    sent_before = set(receiver.messages())
    assert len(sent_before) < 30, "the signal came with deliveries still pending"
    assert set(receiver.held) <= sent_before, "the deliveries in flight were completed"

    run.deliver_the_rest()
    assert receiver.messages() == Counter(dict.fromkeys(ALL_30, 1))


def test_the_same_event_twice_within_the_window_is_sent_once_even_across_a_restart(
        tmp_path: Path, receiver: FlakyReceiver) -> None:
    cfg = config.load([notifier_config(tmp_path / "n.yaml", receiver)])

    def run_notifier_over(published: list[Event], expected: int) -> None:
        bus = open_bus(None, tmp_path / "state")
        stop = threading.Event()
        t = threading.Thread(target=Notifier(cfg, bus).run, args=(stop,))
        t.start()
        for e in published:
            bus.publish(EVENTS_QUEUE, e.to_json())
        wait_until(lambda: bus.depth(EVENTS_QUEUE) == 0 and bus.depth(NOTIFY_QUEUE) == 0, 15, "the queues to drain")
        wait_until(lambda: len(receiver.delivered) >= expected, 10, f"{expected} deliveries")
        stop.set()
        t.join(10)
        bus.close()

    # A reconcile retried after a transient error announces the same outcome again.
    run_notifier_over([event(1), event(1), event(2)], expected=2)
    time.sleep(0.5)
    assert sorted(receiver.messages().values()) == [1, 1]
    # After a restart, the memory of what was sent is still there.
    run_notifier_over([event(1), event(3)], expected=3)
    time.sleep(0.5)
    assert receiver.messages() == Counter({"Deployment/apps/web-1 configured": 1,
                                           "Deployment/apps/web-2 configured": 1,
                                           "Deployment/apps/web-3 configured": 1})


def test_an_alert_template_shapes_the_message_and_a_broken_one_falls_back(
        tmp_path: Path, receiver: FlakyReceiver) -> None:
    from notifier import templates

    e = event(4, namespace="prod")
    text = templates.render("{{ name }} is live in {{ namespace }} at {{ sha[:7] }} ({{ reason }})", e,
                            alert="flux-system/everything", provider="flux-system/hook", summary="")
    assert text == "app-4 is live in prod at 0000000 (ReconciliationSucceeded)"
    assert templates.render("{{ nope }}", e, alert="a", provider="p", summary="") == e.message
    assert templates.render("{{ ''.__class__.__mro__ }}", e, alert="a", provider="p", summary="") == e.message


def test_validate_names_the_file_and_line_of_a_broken_template_and_regex(tmp_path: Path) -> None:
    path = tmp_path / "alerts.yaml"
    path.write_text(textwrap.dedent("""\
        apiVersion: notification.toolkit.fluxcd.io/v1beta3
        kind: Provider
        metadata: {name: hook}
        spec: {type: generic, address: "http://127.0.0.1:1/hook"}
        ---
        apiVersion: notification.toolkit.fluxcd.io/v1beta3
        kind: Alert
        metadata: {name: broken}
        spec:
          providerRef: {name: hook}
          eventSources: [{kind: Kustomization, name: '*'}]
          exclusionList: ["(unclosed"]
          template: "{{ name "
        """))
    _, diagnostics = config.check([path])
    messages = [str(d) for d in diagnostics]
    assert any("alerts.yaml:13" in m and "spec.template" in m for m in messages), messages
    assert any("alerts.yaml" in m and "exclusionList" in m for m in messages), messages


def test_a_push_gets_its_commit_status_on_the_pushed_sha(tmp_path: Path, repo: Repo, kube_api, kubeconfig: Path) -> None:
    with GitForges() as forges:
        forges.repos["github"].add("acme/app")
        cfg = write_config(tmp_path / "herald.yaml", repo.url, extra=github_status_alert(f"{forges.url}/acme/app"))
        loaded = config.load([cfg])
        port = free_port()
        env = dict(os.environ, KUBECONFIG=str(kubeconfig), HERALD_STATE_DIR=str(tmp_path / "state"),
                   HERALD_LISTEN=f"127.0.0.1:{port}", HERALD_LOG_LEVEL="INFO")
        env.pop("HERALD_BROKER_URL", None)
        proc = start_herald("serve", cfg, tmp_path / "serve.log", env)
        try:
            base = f"http://127.0.0.1:{port}"
            wait_ready(base)
            hook = base + loaded.hook_path(loaded.receivers[("flux-system", "github-app")])
            body = github_push(repo.head)
            assert requests.post(hook, data=body, headers=github_headers(body), timeout=10).status_code == 202
            statuses = wait_until(lambda: [s for s in forges.statuses("github", "acme/app", repo.head)
                                           if s["state"] == "success"], 60, "a success status on the pushed sha")
        finally:
            assert stop_herald(proc) == 0, (tmp_path / "serve.log").read_text()
        every = forges.statuses("github", "acme/app", repo.head)
        assert [s["state"] for s in every] == ["pending", "success"]
        assert statuses[0]["context"] == "kustomization/app"
        assert TOKEN not in (tmp_path / "serve.log").read_text()
