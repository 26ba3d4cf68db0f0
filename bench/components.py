"""Herald's components as separate processes for the end-to-end benchmarks: started with one
configuration and environment (each with a state directory and a log of its own), their logs'
tails for a failure message, and stopped as an orchestrator stops them."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def start(commands: Iterable[str], cfg: Path, env: dict[str, str], work: Path) -> dict[str, subprocess.Popen]:
    """`herald <command> -c cfg` for each command; output in `work/<command>.log`."""
    procs = {}
    for command in commands:
        with open(work / f"{command}.log", "wb") as out:
            procs[command] = subprocess.Popen(
                [sys.executable, "-m", "herald.cli", command, "-c", str(cfg)], stdout=out,
                stderr=subprocess.STDOUT, env={**env, "HERALD_STATE_DIR": str(work / f"state-{command}")}, cwd=ROOT)
    return procs


def logs(procs: dict[str, subprocess.Popen], work: Path, tail: int = 3000) -> str:
    """The last `tail` characters of each component's log, for a failure message."""
    return "\n".join(f"--- {c}.log\n" + (work / f"{c}.log").read_text()[-tail:] for c in procs)


def stop(procs: dict[str, subprocess.Popen]) -> None:
    """SIGTERM to all, then each gets 30 s to finish before SIGKILL."""
    for proc in procs.values():
        proc.terminate()
    for proc in procs.values():
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
