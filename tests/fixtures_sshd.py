"""A real OpenSSH server for the ssh Git source tests.

`sshd` runs on a free high port of 127.0.0.1 with a host key, an authorized_keys file and a
config of its own (nothing of the machine's ssh setup is used or changed). It serves the
current user, so `ssh://<user>@127.0.0.1:<port>/<absolute path>` reaches any local bare
repository through the real ssh transport (`git-upload-pack` run by the login shell).

When `sshd` is missing it is installed (the Debian package openssh-server, as root); only when
that is impossible are the tests that need it skipped, with the reason.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.apt import apt_install
from tests.fixtures_herald import free_port

SSHD_CANDIDATES = ("/usr/sbin/sshd", "/usr/local/sbin/sshd")


def _sshd_path() -> str | None:
    for p in (shutil.which("sshd"), *SSHD_CANDIDATES):
        if p and os.access(p, os.X_OK):
            return p
    return None


def _install() -> str:
    """Install openssh-server; return why not when it cannot be done."""
    return apt_install(["openssh-server"], lambda: _sshd_path() is not None, recommends=False)


def keygen(path: Path, comment: str = "herald-test", passphrase: str = "") -> tuple[str, str]:
    """A new ed25519 key pair at `path`; returns (private key text, public key line)."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C", comment, "-f", str(path)],
                   check=True, capture_output=True)
    return path.read_text(), Path(f"{path}.pub").read_text().strip()


@dataclass
class Sshd:
    port: int
    user: str
    identity: str          # the client's private key (authorized on the server)
    identity_pub: str
    known_hosts: str       # the line that trusts exactly this server's host key
    dir: Path

    def url(self, path: Path) -> str:
        return f"ssh://{self.user}@127.0.0.1:{self.port}{path}"

    def authorize(self, public_key: str) -> None:
        with open(self.dir / "authorized_keys", "a") as f:
            f.write(public_key.strip() + "\n")


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    path = _sshd_path()
    if path is None:
        reason = _install()
        path = _sshd_path()
        if path is None:
            pytest.skip(reason or "sshd not found after installing openssh-server")
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir
    d = tmp_path_factory.mktemp("sshd")
    _, host_pub = keygen(d / "host_ed25519", "herald-test-host")
    identity, identity_pub = keygen(d / "client_ed25519")
    (d / "authorized_keys").write_text(identity_pub + "\n")
    port = free_port()
    (d / "sshd_config").write_text(f"""\
Port {port}
ListenAddress 127.0.0.1
HostKey {d}/host_ed25519
AuthorizedKeysFile {d}/authorized_keys
PidFile {d}/sshd.pid
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
LogLevel VERBOSE
""")
    with open(d / "sshd.log", "w") as log:
        proc = subprocess.Popen([path, "-D", "-e", "-f", str(d / "sshd_config")], stdout=log,
                                stderr=subprocess.STDOUT)
        try:
            _wait_listening(proc, port, d / "sshd.log")
            host_key = " ".join(host_pub.split()[:2])
            yield Sshd(port=port, user=getpass.getuser(), identity=identity, identity_pub=identity_pub,
                       known_hosts=f"[127.0.0.1]:{port} {host_key}\n", dir=d)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_listening(proc: subprocess.Popen, port: int, log: Path, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            pytest.fail(f"sshd exited ({proc.returncode}): {log.read_text()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                pytest.fail(f"sshd did not listen on port {port} within {timeout:.0f}s")
            time.sleep(0.1)
