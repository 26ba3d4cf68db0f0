"""The README's operator tables cannot rot: every metric it lists is served by the component it
names, with the type and labels it gives, and every HERALD_* variable the code reads is in its
table of variables (and nothing else is)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import requests

from tests.fixtures_herald import (
    free_port,
    github_headers,
    github_push,
    start_herald,
    stop_herald,
    wait_ready,
)

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()

# Set by Herald itself for the ssh askpass helper it writes; not something an operator sets.
INTERNAL_VARIABLES = {"HERALD_SSH_KEY_PASSPHRASE"}


def section(title: str) -> str:
    """The README's text from the heading `## title` to the next heading of level 1 or 2."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^#{{1,2}} )", README + "\n# end", re.M | re.S)
    assert match, f"README has no section '## {title}'"
    return match.group(1)


def metric_rows() -> dict[str, tuple[str, tuple[str, ...]]]:
    """name → (type, labels) from the metrics table."""
    rows = {}
    for line in section("Read the metrics").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("`herald_"):
            labels = tuple(re.findall(r"`([a-z_]+)`", cells[2]))
            rows[cells[0].strip("`")] = (cells[1], labels)
    return rows


def component_of(metric: str) -> set[str]:
    if metric.startswith("herald_receiver_"):
        return {"receiver"}
    if metric.startswith("herald_reconcile"):
        return {"worker"}
    if metric.startswith("herald_notification"):
        return {"notifier"}
    return {"worker", "notifier"}  # the bus's metrics: every consumer reports them


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> dict[str, dict[str, str]]:
    """component → {metric name: type} from the `# TYPE` lines of its /metrics."""
    tmp = tmp_path_factory.mktemp("readme")
    cfg = ROOT / "examples" / "herald.yaml"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HERALD_", "PROMETHEUS_"))}
    env["HERALD_INTERVAL_POLLING"] = "false"
    ports = {name: free_port() for name in ("receiver", "worker", "notifier")}
    procs = {}
    try:
        for name, port in ports.items():
            flag = "--listen" if name == "receiver" else "--metrics-listen"
            # One state directory each: the test needs their metrics, not a shared bus.
            procs[name] = start_herald(name, cfg, tmp / f"{name}.log", env, flag, f"127.0.0.1:{port}",
                                       "--state-dir", str(tmp / name))
        out = {}
        for name, port in ports.items():
            base = f"http://127.0.0.1:{port}"
            try:
                wait_ready(base, timeout=20)
            except AssertionError:
                raise AssertionError((tmp / f"{name}.log").read_text()) from None
            if name == "receiver":
                deliver_each_kind(base, cfg)
            text = requests.get(base + "/metrics", timeout=5).text
            out[name] = dict(re.findall(r"^# TYPE (herald_\w+) (\w+)$", text, re.M))
        return out
    finally:
        for proc in procs.values():
            stop_herald(proc)


def deliver_each_kind(base: str, cfg: Path) -> None:
    """One accepted push, its duplicate and a forged one. The receiver runs under gunicorn,
    whose metrics (summed over its worker processes) show a labelled counter only once it has
    counted something, as any Prometheus multiprocess exporter does."""
    from herald import config

    loaded = config.load([cfg])
    receiver = next(iter(loaded.receivers.values()))
    token = loaded.receiver_keys(receiver)[0][0]
    url = base + loaded.hook_path(receiver)
    body = github_push("0" * 40)
    headers = github_headers(body, token=token)
    assert requests.post(url, data=body, headers=headers, timeout=10).status_code == 202
    assert requests.post(url, data=body, headers=headers, timeout=10).status_code == 200  # duplicate
    forged = {**headers, "X-Hub-Signature-256": "sha256=" + "0" * 64, "X-GitHub-Delivery": "forged"}
    assert requests.post(url, data=body, headers=forged, timeout=10).status_code == 401


def test_every_listed_metric_is_served_with_its_type(served) -> None:
    rows = metric_rows()
    assert len(rows) >= 12, "the metrics table was not found or lost rows"
    for name, (kind, _labels) in rows.items():
        for component in component_of(name):
            assert served[component].get(name) == kind, (
                f"README lists {name} ({kind}) for {component}; its /metrics has {served[component].get(name)}")


def test_every_served_metric_is_listed(served) -> None:
    rows = metric_rows()
    for component, metrics in served.items():
        for name in metrics:
            if name.endswith("_created"):  # prometheus-client's companion series of a histogram
                continue
            assert name in rows, f"{component} serves {name}, which the README's metrics table lacks"


def test_listed_labels_are_the_code_labels() -> None:
    from herald.bus import metrics as bus
    from notifier import metrics as notifier
    from receiver import metrics as receiver
    from reconciler import metrics as reconciler

    defined = {}
    for module in (bus, notifier, receiver, reconciler):
        for value in vars(module).values():
            name = getattr(value, "_name", None)
            if isinstance(name, str) and name.startswith("herald_"):
                kind = getattr(value, "_type", "")
                defined[name + ("_total" if kind == "counter" else "")] = tuple(value._labelnames)
    rows = metric_rows()
    assert set(rows) == set(defined)
    for name, (_kind, labels) in rows.items():
        assert labels == defined[name], f"{name}: README says labels {labels}, the code {defined[name]}"


def code_variables() -> set[str]:
    files = [ROOT / "gunicorn.conf.py"]
    for package in ("herald", "receiver", "reconciler", "notifier"):
        files += (ROOT / package).rglob("*.py")
    found = set()
    for path in files:
        found |= set(re.findall(r"\bHERALD_[A-Z0-9_]*[A-Z0-9]\b", path.read_text()))
    return found - INTERNAL_VARIABLES


def test_every_variable_the_code_reads_is_in_the_table() -> None:
    table = "\n".join(line for line in section("Run on a Procfile platform").splitlines()
                      if line.startswith("| `"))
    listed = set(re.findall(r"\bHERALD_[A-Z0-9_]*[A-Z0-9]\b", table))
    code = code_variables()
    assert not code - listed, f"read by the code, missing from the README's table: {sorted(code - listed)}"
    assert not listed - code, f"in the README's table, read by no code: {sorted(listed - code)}"
