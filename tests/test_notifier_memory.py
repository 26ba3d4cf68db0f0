"""The notifier memory's claims (Memory.hold), on each store it runs on.

A claim is what keeps two deliveries of one Slack thread from both posting a parent, so each
store must give the three things the Slack provider relies on:
- one holder at a time, across processes sharing the store, not only across threads;
- the next holder reads what the last one wrote, at once (no tail to wait for);
- a holder that dies releases its claim, without a lease to run out.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pika
import pytest

from notifier.memory import CLAIM_QUEUE_PREFIX, AmqpMemory, NotifierMemory, _digest

KEY = "slack:thread:flux-system/slack:general:flux-system/deployments:Kustomization/shop/app:main@sha1:" + "d" * 40


def holder(store: str) -> subprocess.Popen:
    """Another notifier process holding the claim on KEY until it is killed."""
    script = textwrap.dedent(f"""\
        import sys, time
        from notifier.memory import NotifierMemory
        memory = NotifierMemory.open({store!r} if {store!r}.startswith("amqp") else None, {store!r}, 0)
        with memory.providers.hold({KEY!r}, 10):
            print("held", flush=True)
            time.sleep(120)
        """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def claim_is_refused(memory) -> bool:
    try:
        with memory.hold(KEY, 0.3):
            return False
    except TimeoutError:
        return True


@pytest.fixture(params=["state directory", "rabbitmq"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "rabbitmq":
        return request.getfixturevalue("vhost_url")
    return str(tmp_path / "state")


def open_memory(store: str) -> NotifierMemory:
    return NotifierMemory.open(store if store.startswith("amqp") else None, store, 0)


def test_a_claim_is_held_by_one_process_and_released_when_it_dies(store: str) -> None:
    """SIGKILL, as an OOM kill or a node failure does: no release code runs, and still the
    claim is free within seconds (the kernel drops the flock, the broker the connection)."""
    memory = open_memory(store)
    other = holder(store)
    try:
        assert claim_is_refused(memory.providers)
        other.kill()
        other.wait(10)
        started = time.monotonic()
        with memory.providers.hold(KEY, 10):
            pass
        assert time.monotonic() - started < 5
    finally:
        other.kill()
        memory.close()


def test_the_next_holder_reads_what_the_last_one_wrote_at_once(store: str) -> None:
    """Two notifiers (two memories, two connections): whoever holds the key after another sees
    that one's write, with no wait for a log to catch up."""
    first, second = open_memory(store), open_memory(store)
    try:
        for value in ("ts-1", "ts-2", "ts-3"):
            with first.providers.hold(KEY, 5):
                first.providers.put(KEY, value)
            with second.providers.hold(KEY, 5):
                assert second.providers.get(KEY) == value
    finally:
        first.close()
        second.close()


def test_threads_of_one_process_take_turns(store: str) -> None:
    memory = open_memory(store)
    inside, most = 0, 0
    guard = threading.Lock()

    def deliver() -> None:
        nonlocal inside, most
        with memory.providers.hold(KEY, 30):
            with guard:
                inside += 1
                most = max(most, inside)
            time.sleep(0.05)
            with guard:
                inside -= 1

    workers = [threading.Thread(target=deliver) for _ in range(6)]
    try:
        for t in workers:
            t.start()
        for t in workers:
            t.join(30)
    finally:
        memory.close()
    assert most == 1


def test_on_rabbitmq_a_released_claim_leaves_no_queue_and_a_value_is_one_message(vhost_url: str) -> None:
    """The queues behind the claims must not pile up: a claim's queue goes with its release,
    and a key's value queue keeps only the latest value (and expires with the window)."""
    memory = AmqpMemory(vhost_url)
    connection = pika.BlockingConnection(pika.URLParameters(vhost_url))
    try:
        with memory.hold(KEY, 5):
            for value in ("a", "b", "c"):
                memory.put(KEY, value)
        assert memory.get(KEY) == "c"
        channel = connection.channel()
        declared = channel.queue_declare("herald.notifier.memory." + _digest(KEY), passive=True)
        assert declared.method.message_count == 1
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as missing:
            channel.queue_declare(CLAIM_QUEUE_PREFIX + _digest(KEY), passive=True)
        assert missing.value.reply_code == 404
    finally:
        connection.close()
        memory.close()
