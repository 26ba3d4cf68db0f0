"""Installing a Debian package from a test session, once, whatever runs at the same time.

The suite runs on several pytest-xdist workers, and each may find a package missing on a
fresh machine (CI) at the same moment: two `apt-get` runs at once fail on dpkg's lock. So an
install holds a file lock shared by every worker, checks again under it whether the package
arrived meanwhile, and asks apt itself to wait for dpkg's lock (another apt on the machine).
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

LOCK = Path(tempfile.gettempdir()) / "herald-tests-apt.lock"
WAIT_FOR_DPKG = ["-o", "DPkg::Lock::Timeout=600"]


def apt_install(packages: list[str], present: Callable[[], bool], *, recommends: bool = True) -> str:
    """Install `packages` unless `present()`; "" when they are there, else why not."""
    if present():
        return ""
    if os.geteuid() != 0:
        return f"{' '.join(packages)}: not installed, and installing needs root"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", *WAIT_FOR_DPKG, "install", "-y", *([] if recommends else ["--no-install-recommends"]),
               *packages]
    with open(LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one install at a time, across workers
        if present():
            return ""  # another worker installed it while this one waited
        done = subprocess.run(install, capture_output=True, text=True, env=env, timeout=900, check=False)
        if done.returncode != 0:  # an old or empty package list: update it, then try again
            for cmd in (["apt-get", *WAIT_FOR_DPKG, "update"], install):
                done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900, check=False)
                if done.returncode != 0:
                    return f"{' '.join(cmd)} failed: {done.stderr.strip()[-1000:]}"
    return ""
