"""Operator actions on dead letters, on both buses: list the queues that have some, replay
them (by id, or all of a queue) as fresh messages, drop them.

Each test runs against the embedded bus (a SQLite file in tmp_path) and against the session's
RabbitMQ node.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from herald.bus.amqp import AmqpBus
from herald.bus.base import (
    ATTEMPT_HEADER,
    ATTEMPTS_HEADER,
    ERROR_HEADER,
    FAILING_SINCE_HEADER,
    REPLAYED_HEADER,
    Delivery,
    Reject,
    RetryPolicy,
)
from herald.bus.embedded import EmbeddedBus
from herald.logs import DELIVERY_HEADER
from herald.messages import NOTIFY_QUEUE
from tests.fixtures_rabbitmq import delete_queues, fresh_vhost

AnyBus = AmqpBus | EmbeddedBus

# Dies after three quick attempts (0.1 s, then 0.2 s apart), the same on both buses.
FAST_RETRY = RetryPolicy(max_attempts=3, base_delay=0.1, factor=2.0, max_delay=1.0)
BOOKKEEPING = (ATTEMPT_HEADER, ATTEMPTS_HEADER, ERROR_HEADER, FAILING_SINCE_HEADER)


@pytest.fixture(params=["embedded", "amqp"])
def make_bus(request: pytest.FixtureRequest, tmp_path: Path,
             queue_name: str) -> Iterator[Callable[..., AnyBus]]:
    """Factory of buses on one storage: the test's SQLite file, or the session's broker (its
    default vhost, or with `vhost=True` a vhost of the test's own, for exact `dead_queues`)."""
    made: list[AnyBus] = []
    url = request.getfixturevalue("rabbitmq_url") if request.param == "amqp" else ""
    vhosts = ExitStack()
    vhost_url: list[str] = []

    def make(*, vhost: bool = False) -> AnyBus:
        bus: AnyBus
        if request.param == "embedded":
            bus = EmbeddedBus(tmp_path / "bus.sqlite3", retry=FAST_RETRY, lease_seconds=5,
                              poll_interval=0.05)
        else:
            if vhost and not vhost_url:
                vhost_url.append(vhosts.enter_context(fresh_vhost(url)))
            bus = AmqpBus(vhost_url[0] if vhost else url, retry=FAST_RETRY, confirm_timeout=3.0,
                          connect_timeout=2.0, reconnect_delay=0.2, reconnect_max_delay=1.0)
        made.append(bus)
        return bus

    with vhosts:  # deletes the vhost, if any, with its queues
        yield make
        for bus in made:
            bus.close()
    if url:
        names = [f"{queue_name}{suffix}" for suffix in ("", ".a", ".b", ".c")]
        topology = AmqpBus(url, retry=FAST_RETRY).topology
        delete_queues(url, [n for name in names for n in topology(name).names()])


@pytest.fixture
def bus(make_bus: Callable[..., AnyBus]) -> AnyBus:
    return make_bus()


def wait_for(what: str, done: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@contextmanager
def consuming(bus: AnyBus, queue: str, handler: Callable[[Delivery], None]) -> Iterator[None]:
    stop = threading.Event()
    thread = threading.Thread(target=bus.consume, args=(queue, handler, stop), daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(10)
        assert not thread.is_alive(), "consume() did not return after stop was set"


def dead_ids(bus: AnyBus, queue: str) -> list[str]:
    return sorted(d.message_id for d in bus.dead_letters(queue))


def kill(bus: AnyBus, queue: str, messages: list[tuple[str, bytes]]) -> None:
    """Publish `messages` (id, body) and have a handler reject them all into the dead letters."""
    for message_id, body in messages:
        bus.publish(queue, body, message_id=message_id, headers={DELIVERY_HEADER: f"d-{message_id}"})

    def reject(delivery: Delivery) -> None:
        raise Reject("not today")

    with consuming(bus, queue, reject):
        wait_for("the dead letters", lambda: len(bus.dead_letters(queue)) == len(messages))


# -- replay ---------------------------------------------------------------------------------


def test_dead_letter_is_listed_replayed_and_handled_as_a_fresh_message(bus: AnyBus,
                                                                        queue_name: str) -> None:
    seen: list[Delivery] = []

    def handler(delivery: Delivery) -> None:
        seen.append(delivery)
        if len(seen) <= FAST_RETRY.max_attempts:
            raise RuntimeError("the remote is down")  # retried, then dead-lettered
        if len(seen) == FAST_RETRY.max_attempts + 1:
            raise Reject("still broken")  # the first replay dies at once

    bus.publish(queue_name, b'{"n":1}', message_id="m-1", headers={DELIVERY_HEADER: "d-1"})
    with consuming(bus, queue_name, handler):
        wait_for("the dead letter", lambda: len(bus.dead_letters(queue_name)) == 1)
        [dead] = bus.dead_letters(queue_name)
        assert (dead.message_id, dead.body) == ("m-1", b'{"n":1}')
        assert dead.headers[ATTEMPTS_HEADER] == "3" and "remote is down" in dead.headers[ERROR_HEADER]
        assert queue_name in bus.dead_queues()

        assert bus.replay_dead(queue_name, "m-1") == 1
        wait_for("the replay to die again", lambda: len(bus.dead_letters(queue_name)) == 1
                 and len(seen) == 4)
        [dead] = bus.dead_letters(queue_name)
        assert dead.headers[REPLAYED_HEADER] == "1"  # survives its new dead-lettering
        assert dead.headers[ERROR_HEADER] == "still broken"

        assert bus.replay_dead(queue_name, "m-1") == 1
        wait_for("the second replay to be handled", lambda: len(seen) == 5)

    first, replays = seen[0], seen[3:]
    assert first.headers.get(REPLAYED_HEADER) is None
    for number, delivery in enumerate(replays, start=1):
        assert (delivery.body, delivery.message_id, delivery.attempt) == (b'{"n":1}', "m-1", 1)
        assert delivery.headers[DELIVERY_HEADER] == "d-1"
        assert delivery.headers[REPLAYED_HEADER] == str(number)
        assert not [h for h in BOOKKEEPING if h in delivery.headers], delivery.headers
    wait_for("the queue to empty", lambda: bus.depth(queue_name) == 0)
    assert bus.dead_letters(queue_name) == []
    assert queue_name not in bus.dead_queues()


def test_replay_of_a_whole_queue(bus: AnyBus, queue_name: str) -> None:
    messages = [(f"m-{n}", f'{{"n":{n}}}'.encode()) for n in range(3)]
    kill(bus, queue_name, messages)

    assert bus.replay_dead(queue_name) == 3
    assert bus.dead_letters(queue_name) == []
    seen: list[Delivery] = []
    with consuming(bus, queue_name, seen.append):
        wait_for("the replays", lambda: len(seen) == 3)
    assert sorted((d.message_id, d.body) for d in seen) == messages
    assert {d.headers[REPLAYED_HEADER] for d in seen} == {"1"}
    assert {d.headers[DELIVERY_HEADER] for d in seen} == {"d-m-0", "d-m-1", "d-m-2"}
    assert bus.replay_dead(queue_name) == 0


def test_replay_while_the_handler_rejects_again_replays_each_letter_once(bus: AnyBus,
                                                                          queue_name: str) -> None:
    """The replayed copy is back in the dead letters while the replay may still be walking
    them: it must not be replayed again (for ever, with a handler that always rejects)."""
    handled: list[Delivery] = []

    def reject(delivery: Delivery) -> None:
        handled.append(delivery)
        raise Reject("always")

    bus.publish(queue_name, b"x", message_id="m-1")
    with consuming(bus, queue_name, reject):
        wait_for("the dead letter", lambda: len(bus.dead_letters(queue_name)) == 1)
        for replays in (1, 2, 3):
            assert bus.replay_dead(queue_name) == 1
            wait_for("the replay to die again", lambda n=replays: len(handled) == n + 1
                     and len(bus.dead_letters(queue_name)) == 1)
    assert [d.headers.get(REPLAYED_HEADER) for d in handled] == [None, "1", "2", "3"]


def test_message_published_without_an_id_is_addressed_by_the_id_listed(bus: AnyBus,
                                                                         queue_name: str) -> None:
    bus.publish(queue_name, b'{"anonymous":true}')

    def reject(delivery: Delivery) -> None:
        raise Reject("no")

    with consuming(bus, queue_name, reject):
        wait_for("the dead letter", lambda: len(bus.dead_letters(queue_name)) == 1)
    [dead] = bus.dead_letters(queue_name)
    assert dead.message_id and dead_ids(bus, queue_name) == [dead.message_id]  # stable

    assert bus.replay_dead(queue_name, dead.message_id) == 1
    seen: list[Delivery] = []
    with consuming(bus, queue_name, seen.append):
        wait_for("the replay", lambda: len(seen) == 1)
    assert seen[0].body == b'{"anonymous":true}'
    assert bus.dead_letters(queue_name) == []


# -- drop, unknown ids ----------------------------------------------------------------------


def test_dropping_one_dead_letter_leaves_the_others(bus: AnyBus, queue_name: str) -> None:
    kill(bus, queue_name, [("m-1", b"1"), ("m-2", b"2"), ("m-3", b"3")])

    assert bus.drop_dead(queue_name, "m-2") == 1
    assert dead_ids(bus, queue_name) == ["m-1", "m-3"]
    assert bus.drop_dead(queue_name, "m-2") == 0
    assert bus.drop_dead(queue_name) == 2
    assert bus.dead_letters(queue_name) == []
    assert bus.depth(queue_name) == 0  # dropped, not replayed


def test_unknown_ids_and_queues_touch_nothing(bus: AnyBus, queue_name: str) -> None:
    kill(bus, queue_name, [("m-1", b"1"), ("m-2", b"2")])

    assert bus.replay_dead(queue_name, "no-such-id") == 0
    assert bus.drop_dead(queue_name, "no-such-id") == 0
    assert bus.replay_dead(f"{queue_name}.c", "m-1") == 0  # the id, but of another queue
    assert bus.drop_dead(f"{queue_name}.c") == 0
    assert bus.replay_dead(f"{queue_name}.c") == 0
    assert dead_ids(bus, queue_name) == ["m-1", "m-2"]
    assert bus.depth(queue_name) == 0


# -- dead_queues ----------------------------------------------------------------------------


def test_dead_queues_lists_only_queues_with_dead_letters(make_bus: Callable[..., AnyBus],
                                                          queue_name: str) -> None:
    bus = make_bus(vhost=True)
    dead_a, live_b = f"{queue_name}.a", f"{queue_name}.b"
    assert bus.dead_queues() == []

    kill(bus, dead_a, [("m-1", b"1")])
    bus.publish(live_b, b"2", message_id="m-2")  # waiting, not dead
    assert bus.dead_queues() == [dead_a]

    # Another process (an operator's CLI) that never used the queues still sees Herald's own.
    kill(bus, NOTIFY_QUEUE, [("n-1", b"{}")])
    other = make_bus(vhost=True)
    assert NOTIFY_QUEUE in other.dead_queues()
    assert bus.dead_queues() == sorted([dead_a, NOTIFY_QUEUE])

    assert bus.replay_dead(dead_a) == 1
    assert bus.drop_dead(NOTIFY_QUEUE, "n-1") == 1
    assert bus.dead_queues() == []
    assert other.dead_queues() == []
