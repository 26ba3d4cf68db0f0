"""Settings a person can fix: a bad value is one line naming it, never a traceback.

An operator who mistypes a variable (`HERALD_MAX_BODY=abc`) used to get a 30-line traceback
from every command, `herald --help` included, that did not say which variable was wrong.
Each scenario here sets one bad value and runs the real command.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from herald import envcheck
from tests.fixtures_herald import (
    free_port,
    github_headers,
    github_push,
    wait_ready,
    write_config,
)

ROOT = Path(__file__).resolve().parents[1]


def herald(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_") and k not in ("PORT",)}
    return subprocess.run([sys.executable, "-m", "herald.cli", *args], env={**clean, **env},
                          capture_output=True, text=True, timeout=60, check=False)


BAD_VARIABLES = [
    ("HERALD_MAX_BODY", "abc", "a number of bytes"),
    ("HERALD_DEDUPE_WINDOW", "xyz", "a duration"),
    ("HERALD_RECONCILE_THREADS", "-1", "an integer ≥ 1"),
    ("HERALD_LOG_LEVEL", "verbose", "one of DEBUG, INFO"),
    ("PORT", "abc", "an integer from 0 to 65535"),
    ("HERALD_LISTEN", "nonsense", "HOST:PORT"),
    ("HERALD_NOTIFY_RETRY_BUDGET", "soon", "a duration"),
    ("HERALD_INTERVAL_POLLING", "maybe", "one of 1, true"),
    ("HERALD_READ_TIMEOUT", "fast", "a number ≥ 0"),
]


@pytest.mark.parametrize(("name", "value", "accepted"), BAD_VARIABLES)
@pytest.mark.parametrize("command", [["--help"], ["validate", "-c", "examples/herald.yaml"], ["serve"]])
def test_a_bad_variable_is_one_line_naming_it_and_exit_2(name: str, value: str, accepted: str,
                                                         command: list[str]) -> None:
    done = herald(*command, **{name: value})
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    assert f"{name}={value}" in done.stderr and accepted in done.stderr, done.stderr


def test_a_broker_url_that_is_not_one_is_refused_without_printing_it() -> None:
    done = herald("--help", HERALD_BROKER_URL="guest:hunter2@rabbit")
    assert done.returncode == 2 and "HERALD_BROKER_URL" in done.stderr
    assert "hunter2" not in done.stderr


@pytest.mark.parametrize(("flag", "value", "says"), [
    ("--listen", "nonsense", "expected HOST:PORT"),
    ("--listen", "127.0.0.1:99999", "from 0 to 65535"),
    ("--metrics-listen", "9090", "expected HOST:PORT"),
    ("--log-level", "verbose", "invalid choice"),
])
def test_a_bad_flag_is_one_line_naming_it_and_exit_2(flag: str, value: str, says: str) -> None:
    done = herald("serve", "-c", "examples/herald.yaml", flag, value)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and flag in done.stderr and says in done.stderr, done.stderr


def test_gunicorn_refuses_a_bad_variable_the_same_way(tmp_path: Path) -> None:
    """`web` reads its settings through receiver.gunicorn_config, which checks them first."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    done = subprocess.run(["gunicorn", "receiver.app:create_app()"], cwd=ROOT, capture_output=True, text=True,
                          env={**env, "HERALD_THREADS": "0", "HERALD_STATE_DIR": str(tmp_path)},
                          timeout=60, check=False)
    assert done.returncode == 2
    assert "HERALD_THREADS=0: expected an integer ≥ 1" in done.stderr and "Traceback" not in done.stderr


def test_every_variable_the_code_reads_is_checked() -> None:
    """The table cannot fall behind the code: a new HERALD_* variable needs a rule."""
    read = set()
    for package in ("herald", "receiver", "reconciler", "notifier"):
        for path in (ROOT / package).rglob("*.py"):
            read |= set(re.findall(r"\bHERALD_[A-Z0-9_]*[A-Z0-9]\b", path.read_text()))
    internal = {"HERALD_SSH_KEY_PASSPHRASE"}  # set by Herald for its own ssh askpass helper
    assert read - internal - set(envcheck.VARIABLES) == set()


@pytest.mark.parametrize("command", ["serve", "worker", "receiver", "notifier"])
def test_a_state_dir_that_is_a_file_is_one_line_and_exit_2(tmp_path: Path, command: str) -> None:
    not_a_dir = tmp_path / "state"
    not_a_dir.write_text("")
    done = herald(command, "-c", "examples/herald.yaml", "--state-dir", str(not_a_dir))
    assert done.returncode == 2, done.stderr
    assert f"--state-dir {not_a_dir} (HERALD_STATE_DIR): exists and is not a directory" in done.stderr
    assert "Traceback" not in done.stderr


# ---- a state directory that goes read-only while Herald runs ----------------------------------

@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of our own, which the test can remount read-only (as a kernel does with a disk
    that failed). Needs root and mount(2): skipped where neither is available."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)],
                                           capture_output=True, check=False).returncode != 0:
        pytest.skip("needs root and mount(2) to make a read-only state directory")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, check=False)


def _remount(mount: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(mount)], check=True, capture_output=True)


def _fill(mount: Path) -> Path:
    """Write a file until the disk is full, as a log or a cache left unchecked does."""
    filler = mount / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * (1 << 20))
                f.flush()
        except OSError:
            pass
    return filler


def test_a_read_only_state_dir_is_refused_at_start(small_disk: Path) -> None:
    _remount(small_disk, "ro")
    done = herald("serve", "-c", "examples/herald.yaml", "--state-dir", str(small_disk / "state"))
    assert done.returncode == 2
    assert "(HERALD_STATE_DIR): cannot be used: Read-only file system" in done.stderr, done.stderr


def test_readyz_says_not_ready_while_the_state_dir_is_full(small_disk: Path, tmp_path: Path, repo) -> None:
    """Every push gets 503 while the embedded bus cannot write; /readyz must say so too, so
    that a load balancer or Kubernetes stops sending traffic, and say ready again after."""
    cfg = write_config(tmp_path / "herald.yaml", repo.url)
    port = free_port()
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "herald.cli", "serve", "-c", str(cfg), "--state-dir",
                                 str(small_disk / "state"), "--listen", f"127.0.0.1:{port}"],
                                stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "HERALD_INTERVAL_POLLING": "false"})
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base)
        from herald import config

        loaded = config.load([cfg])
        url = base + loaded.hook_path(loaded.receivers[("flux-system", "github-app")])
        body = github_push(repo.head)

        filler = _fill(small_disk)
        assert requests.get(base + "/readyz", timeout=10).status_code == 503
        resp = requests.post(url, data=body, headers=github_headers(body, delivery=str(uuid.uuid4())), timeout=10)
        assert resp.status_code == 503 and resp.headers["Retry-After"]

        filler.unlink()
        assert requests.get(base + "/readyz", timeout=10).status_code == 200
        resp = requests.post(url, data=body, headers=github_headers(body, delivery=str(uuid.uuid4())), timeout=10)
        assert resp.status_code == 202
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert "Traceback" not in log.read_text()
