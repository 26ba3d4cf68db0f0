"""Slow clients cannot starve real ones (the scenario; tests/test_slow_clients_*.py run it on
each way the receiver is served, in files of their own so that a parallel run can take both at
once).

An attacker opens 96 connections and sends a byte on each every half second: some dribble
their headers, some send headers and then dribble the body. With a worker that gives a
connection a thread as soon as its first byte arrives, 96 such clients hold every thread
(2 workers × 16 threads under `web`), and real deliveries wait for the slow clients' read
deadlines: 9–19 s, longer than GitHub waits. Here the worker's event loop reads requests
and only complete ones get a thread, so a signed push sent meanwhile is answered at once.

Each scenario lasts 30 s, as in the issue that asked for it, against the real server:
`gunicorn 'receiver.app:create_app()'` as the Procfile's `web` runs it (its default two
workers and 16 threads), and `herald serve` (one process, one worker, 16 threads).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

from tests.fixtures_herald import (
    free_port,
    github_headers,
    github_push,
    wait_ready,
    write_config,
)

ROOT = Path(__file__).resolve().parents[1]
SLOW_CLIENTS = 96
FLOOD_SECONDS = 30.0
BYTE_EVERY = 0.5  # seconds between two bytes of one slow client


@dataclass
class Front:
    name: str
    url: str  # the Receiver's hook URL
    body: bytes
    log: Path


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HERALD_", "GUNICORN_", "PROMETHEUS_")) and k not in ("WEB_CONCURRENCY", "PORT")}
    return {**env, "HERALD_STATE_DIR": str(tmp_path / "state"), "HERALD_INTERVAL_POLLING": "false", **extra}


@contextmanager
def serving(entry: str, tmp_path: Path, repo) -> Iterator[Front]:
    """The receiver as `entry` ("web" or "serve") runs it, until the block ends."""
    cfg = write_config(tmp_path / "herald.yaml", repo.url)
    from herald import config

    loaded = config.load([cfg])
    hook = loaded.hook_path(loaded.receivers[("flux-system", "github-app")])
    port = free_port()
    env = _env(tmp_path, HERALD_CONFIG=str(cfg), HERALD_LISTEN=f"127.0.0.1:{port}", WEB_CONCURRENCY="2")
    if entry == "web":
        command = ["gunicorn", "receiver.app:create_app()"]  # in the repository, as the Procfile
    else:
        command = [sys.executable, "-m", "herald.cli", "serve"]
    log = tmp_path / f"{entry}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_ready(f"http://127.0.0.1:{port}", timeout=60)
        yield Front(entry, f"http://127.0.0.1:{port}{hook}", github_push(repo.head), log)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(timeout=40) == 0, log.read_text()[-3000:]
        except subprocess.TimeoutExpired:
            proc.kill()
            raise


class Flood(threading.Thread):
    """SLOW_CLIENTS connections, each sending one byte every BYTE_EVERY seconds, reconnecting
    whenever the server hangs up, until `until`. Half dribble their headers, half their body."""

    def __init__(self, url: str, until: float) -> None:
        super().__init__(daemon=True)
        host, port = url.removeprefix("http://").split("/", 1)[0].split(":")
        self.address = (host, int(port))
        self.path = "/" + url.removeprefix("http://").split("/", 1)[1]
        self.until = until
        self.cut_off = 0  # times the server hung up on a slow client
        self.answered_2xx = 0

    def _request(self, i: int) -> bytes:
        head = (f"POST {self.path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"X-GitHub-Event: push\r\nX-GitHub-Delivery: {uuid.uuid4()}\r\n")
        if i % 2:
            return (head + "X-Pad: " + "a" * 4000).encode()  # headers that never end
        return (head + "Content-Length: 4000\r\n\r\n").encode() + b"{" * 4000  # a body that never ends

    def run(self) -> None:
        clients: list[tuple[socket.socket | None, bytes, int]] = [(None, self._request(i), 0)
                                                                  for i in range(SLOW_CLIENTS)]
        while time.monotonic() < self.until:
            started = time.monotonic()
            for i, (sock, data, sent) in enumerate(clients):
                try:
                    if sock is None:
                        sock = socket.create_connection(self.address, timeout=5)
                        sock.setblocking(False)
                        data, sent = self._request(i), 0
                    try:
                        answer = sock.recv(4096)
                        if answer.startswith(b"HTTP/1.1 2"):
                            self.answered_2xx += 1
                        raise ConnectionResetError  # an answer or an end: the server is done with it
                    except BlockingIOError:
                        pass
                    sock.send(data[sent:sent + 1])
                    clients[i] = (sock, data, sent + 1)
                except OSError:
                    if sock is not None:
                        sock.close()
                        self.cut_off += 1
                    clients[i] = (None, data, 0)
            time.sleep(max(0.0, BYTE_EVERY - (time.monotonic() - started)))
        for sock, _, _ in clients:
            if sock is not None:
                sock.close()


def check_a_real_delivery_is_answered_at_once_during_a_slow_client_flood(front: Front) -> None:
    flood = Flood(front.url, until=time.monotonic() + FLOOD_SECONDS)
    flood.start()
    time.sleep(2.0)  # every slow client is connected and has started sending

    took, statuses = [], []
    session = requests.Session()
    while flood.is_alive():
        headers = github_headers(front.body, delivery=str(uuid.uuid4()))
        began = time.monotonic()
        resp = session.post(front.url, data=front.body, headers=headers, timeout=30)
        took.append(time.monotonic() - began)
        statuses.append(resp.status_code)
        time.sleep(0.2)
    flood.join()

    took.sort()
    p99 = took[min(len(took) - 1, int(len(took) * 0.99))]
    assert set(statuses) == {202}, statuses
    assert len(took) >= 50, f"only {len(took)} deliveries in {FLOOD_SECONDS}s"
    assert p99 < 1.0, f"{front.name}: p99 {p99:.2f}s, max {took[-1]:.2f}s behind {SLOW_CLIENTS} slow clients"
    # The slow clients got nowhere: cut off at the read deadline, never accepted.
    assert flood.answered_2xx == 0
    assert flood.cut_off >= SLOW_CLIENTS, flood.cut_off
    log = front.log.read_text()
    assert "did not send its request within" in log
    assert "Traceback" not in log
