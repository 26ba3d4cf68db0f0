"""pytest plugin: a real RabbitMQ node of the tests' own, and a switch to take it away.

The AMQP bus's promises (confirms, quorum queues, redelivery after a crash, fast failure when
the broker is gone) only mean something against a real broker, so the tests use one. They
start it themselves: a node with its own name, ports and data directory, installing the
Debian package first if needed, and stop it at the end of the session. The outage tests stop
and freeze that node, and only that one: a RabbitMQ that the machine runs for anything else
(Debian starts one when the package is installed) is never touched.

Every `rabbitmqctl` the session runs (here, in the tests, in the processes they start) talks
to the tests' node: the session sets RABBITMQ_NODENAME, which rabbitmqctl reads.

Under pytest-xdist the workers of one run share one node (`SharedNode`): starting a node costs
about 7 s of CPU, and six of them at once slowed the whole suite on a 2-core machine. Tests
isolate themselves on it as they must anyway (a vhost, or queue names, of their own). The
modules that stop or freeze the broker (`uses_private_rabbitmq`) get a node of their own
instead, so an outage they cause is never another worker's.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pika
import pytest

from herald.bus import RetryPolicy
from herald.bus.amqp import AmqpBus
from tests.apt import apt_install

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"  # the machine's own node (bench --broker shared)
READY_TIMEOUT = 90.0
# Small enough that a message dies in well under a second of retries.
FAST_RETRY = RetryPolicy(max_attempts=3, base_delay=0.1, factor=2.0, max_delay=1.0)


def _run(*cmd: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def _node_up(node: str | None = None) -> bool:
    """The Erlang node answers (the RabbitMQ app itself may still be stopped).

    `node` names it; without one, rabbitmq-diagnostics asks RABBITMQ_NODENAME's node (the
    session's own during a test session) or else the machine's default node, which a fresh
    machine does not run (Debian's postinst cannot start it without systemd)."""
    if shutil.which("rabbitmq-diagnostics") is None:
        return False
    target = ("-n", node) if node else ()
    try:
        return _run("rabbitmq-diagnostics", *target, "-q", "ping", timeout=20).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def _amqp_ready(url: str) -> bool:
    params = pika.URLParameters(url)
    params.socket_timeout = 2
    params.stack_timeout = 3
    params.connection_attempts = 1
    try:
        pika.BlockingConnection(params).close()
    except Exception:  # noqa: BLE001 - any failure means "not yet"
        return False
    return True


def _wait_ready(url: str, timeout: float = READY_TIMEOUT, node: str | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _node_up(node) and _amqp_ready(url):
            return
        time.sleep(0.5)
    raise RuntimeError(f"RabbitMQ did not become ready within {timeout:.0f}s")


def _install() -> None:
    problem = apt_install(["rabbitmq-server"], lambda: shutil.which("rabbitmq-server") is not None)
    if problem:
        raise RuntimeError(problem)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TestNode:
    """A RabbitMQ node of this test session: own node name, AMQP and distribution ports, data
    and log directories. Started detached; `stop()` ends it."""

    __test__ = False  # not a test class, whatever pytest thinks of the name

    def __init__(self) -> None:
        if shutil.which("rabbitmq-server") is None:
            _install()
        self.dir = Path(tempfile.mkdtemp(prefix="herald-test-rabbitmq-"))
        self.port, self.dist_port = _free_port(), _free_port()
        self.node = f"herald-test-{uuid.uuid4().hex[:8]}@localhost"
        (self.dir / "enabled_plugins").write_text("[].\n")
        (self.dir / "rabbitmq.conf").write_text(f"listeners.tcp.default = 127.0.0.1:{self.port}\n")
        if os.geteuid() == 0:  # the Debian wrapper runs the node as the `rabbitmq` user
            for path in [self.dir, *self.dir.iterdir()]:
                shutil.chown(path, "rabbitmq", "rabbitmq")
        self.env = {
            "RABBITMQ_NODENAME": self.node, "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port), "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.dir / "log"), "RABBITMQ_PID_FILE": str(self.dir / "pid"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(self.dir / "rabbitmq.conf"),
        }
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"
        self.shared = False  # other workers' tests use it too: never stop or freeze it

    def describe(self) -> dict[str, object]:
        return {"dir": str(self.dir), "port": self.port, "dist_port": self.dist_port, "node": self.node}

    @classmethod
    def attach(cls, described: dict[str, object]) -> TestNode:
        """The node another process of this test run started (see SharedNode)."""
        node = cls.__new__(cls)
        node.dir, node.node = Path(str(described["dir"])), str(described["node"])
        node.port, node.dist_port = int(described["port"]), int(described["dist_port"])  # type: ignore[arg-type]
        node.env = {}
        node.url = f"amqp://guest:guest@127.0.0.1:{node.port}/%2F"
        node.shared = True
        return node

    def start(self, owner: int | None = None) -> None:
        """`owner`: the process whose end makes the node an orphan (default: this one)."""
        (self.dir / "owner").write_text(f"{owner or os.getpid()}\n{self.node}\n")
        done = subprocess.run(["rabbitmq-server", "-detached"], env={**os.environ, **self.env},
                              capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"rabbitmq-server -detached failed: {done.stderr[-2000:]}")
        # Ready once it takes an AMQP connection. Polled from here: `rabbitmqctl wait` and
        # `rabbitmq-diagnostics ping` would each start an Erlang VM (~0.8 s of CPU) to ask.
        # (Its pid file is no sign of life while it starts: it first holds the launcher's.)
        if not _answers_within(self.url, READY_TIMEOUT):
            log = "\n".join(p.read_text(errors="replace")[-2000:] for p in (self.dir / "log").glob("*.log"))
            raise RuntimeError(f"the tests' RabbitMQ node took no connection within {READY_TIMEOUT:.0f}s: {log}")

    def stop(self) -> None:
        _run("rabbitmqctl", "-n", self.node, "stop", str(self.dir / "pid"), timeout=120)
        shutil.rmtree(self.dir, ignore_errors=True)

    @staticmethod
    def sweep_orphans() -> None:
        """Stop the nodes of test sessions that were killed before their teardown (Ctrl-C, a
        timeout): they would keep running, and holding memory, for as long as the machine."""
        for owner in Path(tempfile.gettempdir()).glob("herald-test-rabbitmq-*/owner"):
            try:
                pid_text, node = owner.read_text().split()[:2]
                os.kill(int(pid_text), 0)
                continue  # its session is still running
            except ProcessLookupError:
                pass
            except (OSError, ValueError):
                continue
            _run("rabbitmqctl", "-n", node, "stop", str(owner.parent / "pid"), timeout=120)
            shutil.rmtree(owner.parent, ignore_errors=True)


def _dead_letter_supervisor_down() -> bool:
    """Whether RabbitMQ's at-least-once dead-letter supervisor has given up.

    A broker bug (see herald.bus.amqp) can leave it dead until the app restarts, after which
    retry queues cannot be declared; tests that delete queues while the app restarts can
    trigger it, so the session heals it instead of failing for unrelated reasons.
    """
    out = _run("rabbitmqctl", "eval", "whereis(rabbit_fifo_dlx_sup).", timeout=30).stdout
    return out.strip() == "undefined"


def ensure_rabbitmq(url: str = DEFAULT_URL) -> None:
    """Make sure the node `rabbitmqctl` talks to is running and accepts AMQP connections at
    `url`: the tests' own node during a test session (RABBITMQ_NODENAME), the machine's
    default node for `bench/ --broker shared`."""
    if _amqp_ready(url):
        if shutil.which("rabbitmqctl") and _dead_letter_supervisor_down():
            _run("rabbitmqctl", "-q", "stop_app")
            _run("rabbitmqctl", "-q", "start_app")
            _wait_ready(url)
        return
    if shutil.which("rabbitmq-server") is None:
        _install()
    if _node_up():
        # The node runs but the app was stopped (e.g. an outage test was interrupted).
        _run("rabbitmqctl", "-q", "start_app")
    else:
        subprocess.run(["rabbitmq-server", "-detached"], capture_output=True, timeout=60,
                       check=False)
    _wait_ready(url)


# Queue names of this pytest session start with this, so that the sweep at the end removes
# ours and never those of another session running against the same broker.
SESSION_PREFIX = f"test.{uuid.uuid4().hex[:8]}."


class SharedNode:
    """One node for every xdist worker of a test run: the first to need it starts it, the
    last to finish stops it.

    The run's workers agree through a folder in the run's own temporary folder (the parent of
    every worker's basetemp, which pytest removes a few runs later), under a file lock:
    `node.json` describes the node, `users/` holds a file per worker using it. Its owner (for
    `TestNode.sweep_orphans`) is the xdist controller, the workers' parent: if the run is
    killed, the next session stops the node."""

    def __init__(self, folder: Path) -> None:
        self.dir = folder

    @contextmanager
    def _locked(self) -> Iterator[None]:
        (self.dir / "users").mkdir(parents=True, exist_ok=True)
        with open(self.dir / "lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def join(self) -> TestNode:
        with self._locked():
            described = self.dir / "node.json"
            node = None
            if described.exists():
                node = TestNode.attach(json.loads(described.read_text()))
                if not _answers_within(node.url, 30.0):  # a busy machine's slow answer is no death
                    node.stop()  # it died (killed from outside): start another
                    node = None
            if node is None:
                node = TestNode()
                try:
                    node.start(owner=os.getppid())
                except BaseException:
                    node.stop()
                    raise
                described.write_text(json.dumps(node.describe()))
                node.shared = True
            (self.dir / "users" / str(os.getpid())).touch()
            return node

    def leave(self, node: TestNode) -> None:
        with self._locked():
            (self.dir / "users" / str(os.getpid())).unlink(missing_ok=True)
            if any(_alive(int(user.name)) for user in (self.dir / "users").iterdir() if user.name.isdigit()):
                return
            node.stop()
            (self.dir / "node.json").unlink()  # a worker joining later starts another


def _answers_within(url: str, seconds: float) -> bool:
    """Whether the node at `url` takes an AMQP connection within `seconds`."""
    deadline = time.monotonic() + seconds
    while not _amqp_ready(url):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


@contextmanager
def _session_node(node: TestNode) -> Iterator[TestNode]:
    """`node` for every rabbitmqctl of the session while the block runs (RABBITMQ_NODENAME)."""
    saved = os.environ.get("RABBITMQ_NODENAME")
    os.environ["RABBITMQ_NODENAME"] = node.node
    try:
        yield node
    finally:
        if saved is None:
            os.environ.pop("RABBITMQ_NODENAME", None)
        else:
            os.environ["RABBITMQ_NODENAME"] = saved


def _own_node() -> TestNode:
    node = TestNode()
    try:
        node.start()
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        node.stop()
        pytest.fail(f"no RabbitMQ for the AMQP tests: {exc}")
    return node


@pytest.fixture(scope="session")
def rabbitmq_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestNode]:
    """The session's own RabbitMQ node (installed first if needed), stopped at the end; under
    xdist, the one node the run's workers share (SharedNode)."""
    TestNode.sweep_orphans()
    under_xdist = bool(os.environ.get("PYTEST_XDIST_WORKER"))
    shared = SharedNode(tmp_path_factory.getbasetemp().parent / "rabbitmq") if under_xdist else None
    if shared is None:
        node = _own_node()
    else:
        try:
            node = shared.join()
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            pytest.fail(f"no RabbitMQ for the AMQP tests: {exc}")
    try:
        with _session_node(node):
            yield node
    finally:
        if shared is None:
            node.stop()
        else:
            shared.leave(node)


@pytest.fixture(scope="session")
def rabbitmq_url(rabbitmq_node: TestNode) -> Iterator[str]:
    """URL of the session's RabbitMQ node, default vhost."""
    yield rabbitmq_node.url
    if _amqp_ready(rabbitmq_node.url):
        sweep_queues(rabbitmq_node.url, SESSION_PREFIX)  # whatever a test left behind


@pytest.fixture(scope="session")
def private_rabbitmq_node() -> Iterator[TestNode]:
    """A node of this process alone, for tests that stop or freeze the broker."""
    TestNode.sweep_orphans()
    node = _own_node()
    yield node
    node.stop()


def uses_private_rabbitmq() -> tuple[object, object]:
    """`rabbitmq_node, rabbitmq_url = uses_private_rabbitmq()` at the top of a test module:
    its tests (and the processes they start, and their rabbitmqctl) use a node of their
    worker's own, which they may stop and freeze without touching another worker's tests."""

    @pytest.fixture(scope="module")
    def rabbitmq_node(private_rabbitmq_node: TestNode) -> Iterator[TestNode]:
        with _session_node(private_rabbitmq_node):
            yield private_rabbitmq_node

    @pytest.fixture(scope="module")
    def rabbitmq_url(rabbitmq_node: TestNode) -> Iterator[str]:
        yield rabbitmq_node.url
        if _amqp_ready(rabbitmq_node.url):
            sweep_queues(rabbitmq_node.url, SESSION_PREFIX)

    return rabbitmq_node, rabbitmq_url


@dataclass
class RabbitControl:
    """Takes the tests' own node away and brings it back, for outage tests (`rabbitmqctl`
    reaches that node through RABBITMQ_NODENAME, set for the session)."""

    url: str
    node: TestNode | None = None
    _frozen: int | None = None

    def stop(self) -> None:
        """Stop the RabbitMQ app (the node stays up): connections drop, new ones are refused."""
        done = _run("rabbitmqctl", "-q", "stop_app")
        assert done.returncode == 0, done.stderr

    def start(self, timeout: float = READY_TIMEOUT) -> None:
        """Start the app again and wait until it accepts AMQP connections."""
        done = _run("rabbitmqctl", "-q", "start_app")
        assert done.returncode == 0, done.stderr
        _wait_ready(self.url, timeout)

    def pid(self) -> int:
        """OS pid of the broker's Erlang VM."""
        out = _run("rabbitmqctl", "eval", "os:getpid().").stdout
        match = re.search(r"\d+", out)
        assert match, out
        return int(match.group())

    def freeze(self) -> None:
        """SIGSTOP the broker: it keeps its sockets but answers nothing (a hung broker)."""
        self._frozen = self.pid()
        os.kill(self._frozen, signal.SIGSTOP)

    def thaw(self) -> None:
        if self._frozen is not None:
            os.kill(self._frozen, signal.SIGCONT)
            self._frozen = None

    def ensure_running(self) -> None:
        self.thaw()
        if _amqp_ready(self.url):
            return
        if _node_up():
            _run("rabbitmqctl", "-q", "start_app")
            _wait_ready(self.url)
        elif self.node is not None:
            self.node.start()


# Fresh vhosts made ahead, per node: each `rabbitmqctl` starts an Erlang VM (about 0.8 s of
# CPU), so they are made VHOST_BATCH at a time, with their permissions, in one call.
VHOST_BATCH = 8
_vhosts_ready: dict[str, list[str]] = {}


def _new_vhost() -> str:
    node = os.environ.get("RABBITMQ_NODENAME", "")
    ready = _vhosts_ready.setdefault(node, [])
    if not ready:
        names = [f"herald-test-{uuid.uuid4().hex[:10]}" for _ in range(VHOST_BATCH)]
        definitions = {"vhosts": [{"name": name} for name in names],
                       "permissions": [{"user": "guest", "vhost": name, "configure": ".*", "write": ".*",
                                        "read": ".*"} for name in names]}
        subprocess.run(["rabbitmqctl", "-q", "import_definitions"], input=json.dumps(definitions), text=True,
                       check=True, capture_output=True, timeout=120)
        ready.extend(names)
    return ready.pop()


@contextmanager
def fresh_vhost(rabbitmq_url: str) -> Iterator[str]:
    """A vhost on the session's node that nothing has used, `guest` allowed everything in it;
    its URL.

    It is not deleted afterwards (one more `rabbitmqctl` each): its name is never used again,
    and it goes with the test node at the end of the session, with whatever queues were left
    in it."""
    yield rabbitmq_url.rsplit("/", 1)[0] + "/" + _new_vhost()


@pytest.fixture
def rabbitmq_control(rabbitmq_node: TestNode, rabbitmq_url: str) -> Iterator[RabbitControl]:
    if rabbitmq_node.shared:
        pytest.fail("this test stops or freezes the broker: its module must use a node of its own "
                    "(rabbitmq_node, rabbitmq_url = uses_private_rabbitmq())")
    control = RabbitControl(rabbitmq_url, rabbitmq_node)
    yield control
    control.ensure_running()  # never leave the broker down for the next test


@pytest.fixture
def queue_name() -> str:
    """A queue name no other test (or session) uses; derive further names from it."""
    return f"{SESSION_PREFIX}{uuid.uuid4().hex[:12]}"


def delete_queues(url: str, names: list[str]) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        for name in names:
            channel.queue_delete(name)  # a no-op for a queue that does not exist
    finally:
        connection.close()


def sweep_queues(url: str, prefix: str) -> None:
    """Delete every queue whose name starts with `prefix`."""
    listed = _run("rabbitmqctl", "-q", "list_queues", "--no-table-headers", "name")
    names = [n.strip() for n in listed.stdout.splitlines() if n.strip().startswith(prefix)]
    if names:
        delete_queues(url, names)


@pytest.fixture
def amqp_bus(rabbitmq_url: str, queue_name: str) -> Iterator[AmqpBus]:
    """An AmqpBus with fast retries and reconnects.

    Afterwards the queues behind `queue_name` and `<queue_name>.results` are deleted (a
    cheap per-test cleanup); anything else is swept at the end of the session.
    """
    bus = AmqpBus(
        rabbitmq_url,
        retry=FAST_RETRY,
        confirm_timeout=3.0,
        connect_timeout=2.0,
        reconnect_delay=0.2,
        reconnect_max_delay=1.0,
    )
    yield bus
    bus.close()
    if _amqp_ready(rabbitmq_url):
        bases = (queue_name, f"{queue_name}.results")
        delete_queues(rabbitmq_url, [n for base in bases for n in bus.topology(base).names()])
