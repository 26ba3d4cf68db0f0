"""The Procfile's `web` process is gunicorn serving receiver.app:create_app(), configured by
environment variables alone, as on a Procfile platform."""

from __future__ import annotations

import os
import signal
import subprocess
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


def procfile() -> dict[str, str]:
    entries = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        name, sep, command = line.partition(":")
        if sep and not line.startswith("#"):
            entries[name.strip()] = command.strip()
    return entries


def test_procfile_names_the_three_processes() -> None:
    entries = procfile()
    assert set(entries) == {"web", "worker", "notifier"}
    assert "receiver.app:create_app()" in entries["web"] and entries["web"].startswith("gunicorn ")
    assert entries["worker"] == "herald worker" and entries["notifier"] == "herald notifier"


def test_web_process_serves_signed_pushes_under_gunicorn(tmp_path: Path, repo) -> None:
    cfg = write_config(tmp_path / "herald.yaml", repo.url)
    port = free_port()
    env = dict(os.environ, PORT=str(port), HERALD_CONFIG=str(cfg), HERALD_STATE_DIR=str(tmp_path / "state"),
               WEB_CONCURRENCY="1")
    env.pop("HERALD_BROKER_URL", None)
    log = tmp_path / "gunicorn.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(["bash", "-c", f"exec {procfile()['web']}"], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_ready(base)
        from herald import config

        loaded = config.load([cfg])
        hook = loaded.hook_path(loaded.receivers[("flux-system", "github-app")])
        body = github_push(repo.head)
        resp = requests.post(base + hook, data=body, headers=github_headers(body), timeout=10)
        assert resp.status_code == 202, resp.text + log.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log.read_text()


def test_durations_in_the_environment_take_seconds_or_flux_s_form() -> None:
    """A 12-factor platform's settings page takes plain numbers: HERALD_DEDUPE_WINDOW=30 used to
    crash every command with a traceback."""
    from herald.settings import Settings
    from reconciler.worker import WorkerSettings

    assert Settings.from_env({"HERALD_DEDUPE_WINDOW": "30"}).dedupe_window == 30.0
    assert Settings.from_env({"HERALD_DEDUPE_WINDOW": "1h30m"}).dedupe_window == 5400.0
    assert Settings.from_env({"HERALD_FROM_CLUSTER": "TRUE"}).from_cluster is True
    assert WorkerSettings.from_env({"HERALD_INTERVAL_POLLING": "off"}).poll is False
    assert WorkerSettings.from_env({"HERALD_INTERVAL_POLLING": ""}).poll is True
    assert WorkerSettings.from_env({"HERALD_DRY_RUN_UNCHANGED": "yes"}).dry_run_unchanged is True
