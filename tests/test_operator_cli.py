"""An operator at the terminal: `herald get`, `reconcile`, `suspend`/`resume`, `events`,
`deliveries` and `dead-letters` against a running Herald, on the embedded bus and on RabbitMQ.

Herald runs as its own process (`herald serve`, or receiver + worker + notifier on a broker) with
a Git repository, the test Kubernetes API server and a local Slack; the commands are the real
CLI (`herald.cli.main`), talking to it over HTTP as they would from a laptop.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from herald import config
from herald.cli import main
from tests.fixtures_herald import (
    TOKEN,
    Repo,
    free_port,
    github_headers,
    github_push,
    make_repo,
    start_herald,
    stop_herald,
    wait_ready,
    wait_until,
    write_config,
)
from tests.kubeapi import KubeAPIServer
from tests.slackapi import SlackAPIServer

SLACK_TOKEN = "xoxb-operator-slack-token"
BROKEN_SLACK_TOKEN = "xoxb-not-yet-valid-token"
OPERATOR_TOKEN = "operator-token-9f2c1d"

OPERATOR = textwrap.dedent(f"""\
    ---
    apiVersion: v1
    kind: Secret
    metadata: {{name: herald-operator, namespace: flux-system}}
    stringData: {{token: {OPERATOR_TOKEN}}}
    ---
    apiVersion: kustomize.toolkit.fluxcd.io/v1
    kind: Kustomization
    metadata: {{name: broken, namespace: flux-system}}
    spec:
      interval: 10m
      path: ./no-such-folder
      prune: true
      sourceRef: {{kind: GitRepository, name: app}}
    ---
    apiVersion: kustomize.toolkit.fluxcd.io/v1
    kind: Kustomization
    metadata: {{name: held, namespace: flux-system}}
    spec:
      suspend: true
      interval: 10m
      path: ./deploy
      prune: false
      sourceRef: {{kind: GitRepository, name: app}}
    """)


def broken_slack(address: str) -> str:
    """A second Slack Provider whose token Slack does not know yet: its deliveries are refused
    (`invalid_auth`) and dead-lettered at once, until the token is made valid."""
    return textwrap.dedent(f"""\
        ---
        apiVersion: v1
        kind: Secret
        metadata: {{name: slack-later, namespace: flux-system}}
        stringData: {{token: {BROKEN_SLACK_TOKEN}}}
        ---
        apiVersion: notification.toolkit.fluxcd.io/v1beta3
        kind: Provider
        metadata: {{name: slack-later, namespace: flux-system}}
        spec: {{type: slack, channel: general, address: {address}, secretRef: {{name: slack-later}}}}
        ---
        apiVersion: notification.toolkit.fluxcd.io/v1beta3
        kind: Alert
        metadata: {{name: later, namespace: flux-system}}
        spec:
          providerRef: {{name: slack-later}}
          eventSources: [{{kind: Kustomization, name: app}}]
        """)


@dataclass
class Running:
    url: str
    hook_url: str
    repo: Repo
    kube: KubeAPIServer
    slack: SlackAPIServer
    logs: list[Path]
    restart: object  # callable: restart every process (same state)


def herald_cli(capsys: pytest.CaptureFixture, *args: str, token: str | None = None) -> tuple[int, str, str]:
    """Run `herald ARGS` as a user would (in this process), with HERALD_TOKEN set or not."""
    old = os.environ.get("HERALD_TOKEN")
    if token is None:
        os.environ.pop("HERALD_TOKEN", None)
    else:
        os.environ["HERALD_TOKEN"] = token
    try:
        capsys.readouterr()
        code = main(list(args))
        out = capsys.readouterr()
        return code, out.out, out.err
    finally:
        if old is None:
            os.environ.pop("HERALD_TOKEN", None)
        else:
            os.environ["HERALD_TOKEN"] = old


def _start(tmp: Path, bus: str) -> Iterator[Running]:
    repo = make_repo(tmp)
    kube = KubeAPIServer().start()
    slack = SlackAPIServer().__enter__()
    slack.tokens = {SLACK_TOKEN}
    slack.channels = {"general"}
    address = f"{slack.url}/api/chat.postMessage"
    cfg = write_config(tmp / "herald.yaml", repo.url, slack_address=address, slack_token=SLACK_TOKEN,
                       extra=OPERATOR + broken_slack(address))
    loaded = config.load([cfg])
    port = free_port()
    env = dict(os.environ, KUBECONFIG=str(kube.write_kubeconfig(tmp / "kubeconfig")), HERALD_LOG_LEVEL="INFO",
               HERALD_STATE_DIR=str(tmp / "state"), HERALD_LISTEN=f"127.0.0.1:{port}",
               HERALD_STARTUP_SPREAD="0", HERALD_OPERATOR_SECRET="flux-system/herald-operator",
               HERALD_RECONCILE_THREADS="2", HERALD_COALESCE_WINDOW="0.2")
    env.pop("HERALD_BROKER_URL", None)
    url = f"http://127.0.0.1:{port}"
    logs: list[Path] = []
    procs: list[subprocess.Popen] = []

    def up() -> None:
        commands = ["serve"] if bus == "embedded" else ["receiver", "worker", "notifier"]
        for command in commands:
            log = tmp / f"{command}-{len(logs)}.log"
            extra = () if bus == "embedded" else ("--broker", bus)
            procs.append(start_herald(command, cfg, log, env, *extra))
            logs.append(log)
        wait_ready(url, 60)

    def down() -> None:
        while procs:
            stop_herald(procs.pop())

    def restart() -> None:
        down()
        up()

    up()
    try:
        yield Running(url, url + loaded.hook_path(loaded.receivers[("flux-system", "github-app")]), repo, kube,
                      slack, logs, restart)
    finally:
        down()
        slack.stop()
        kube.stop()


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    yield from _start(tmp_path_factory.mktemp("operator-embedded"), "embedded")


@pytest.fixture(scope="module")
def on_rabbitmq(tmp_path_factory: pytest.TempPathFactory, rabbitmq_url: str) -> Iterator[Running]:
    from tests.fixtures_rabbitmq import fresh_vhost

    with fresh_vhost(rabbitmq_url) as url:
        yield from _start(tmp_path_factory.mktemp("operator-rabbitmq"), url)


@pytest.fixture
def herald(embedded: Running) -> Running:
    """The Herald each scenario runs against: here `herald serve` on the embedded bus;
    tests/test_operator_cli_rabbitmq.py runs the same scenarios on RabbitMQ (apart, so the two
    run on two test workers at once)."""
    return embedded


def get(h: Running, capsys, group: str, *more: str) -> list[dict]:
    code, out, err = herald_cli(capsys, "get", group, "--server", h.url, "-o", "json", *more)
    assert code == 0, err
    return json.loads(out)


def row(h: Running, capsys, name: str, group: str = "kustomizations") -> dict:
    return next(r for r in get(h, capsys, group) if r["name"] == name)


# ---- the scenarios --------------------------------------------------------------------------


def test_get_lists_every_kustomization_with_its_state_after_the_start_up_reconcile(herald: Running, capsys) -> None:
    app = wait_until(lambda: (r := row(herald, capsys, "app"))["ready"] == "True" and r["inventory"] and r, 60,
                     "the start-up reconcile of app")
    assert app["lastAppliedRevision"] == f"main@sha1:{herald.repo.head}"
    assert app["reason"] == "ReconciliationSucceeded" and app["lastRunAt"]
    assert "Deployment/shop/web" in "\n".join(app["inventory"])
    broken = wait_until(lambda: (r := row(herald, capsys, "broken"))["ready"] == "False" and r, 60,
                        "the start-up reconcile of broken")
    assert "no-such-folder" in broken["message"]
    held = row(herald, capsys, "held")
    assert held["suspended"] and held["suspendedBy"] == "configuration"

    code, out, _ = herald_cli(capsys, "get", "ks", "--server", herald.url)
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["NAMESPACE", "NAME", "READY", "REVISION"]
    assert lines[1].split()[1:3] == ["broken", "False"], "failing ones first"
    assert any(ln.split()[1:3] == ["app", "True"] and herald.repo.head[:12] in ln for ln in lines)
    code, out, _ = herald_cli(capsys, "get", "kustomizations", "-n", "elsewhere", "--server", herald.url)
    assert code == 0 and out == ""

    sources = get(herald, capsys, "sources")
    assert [(s["kind"], s["name"], s["ready"]) for s in sources] == [("GitRepository", "app", "True")]
    assert sources[0]["url"] == herald.repo.url
    receivers = get(herald, capsys, "receivers")
    assert receivers[0]["type"] == "github" and "hook" not in json.dumps(receivers)
    providers = get(herald, capsys, "providers")
    assert {p["name"] for p in providers} == {"slack", "slack-later"}
    assert herald.slack.url not in json.dumps(providers), "a Provider's address may be its credential"
    assert {a["name"] for a in get(herald, capsys, "alerts")} == {"deployments", "later"}


def test_reconcile_waits_for_the_outcome_and_says_it_in_its_exit_code(herald: Running, capsys) -> None:
    wait_until(lambda: row(herald, capsys, "app")["ready"] == "True", 60, "app ready")
    code, out, err = herald_cli(capsys, "reconcile", "kustomization", "app", "--server", herald.url,
                                "--timeout", "60s", token=OPERATOR_TOKEN)
    assert code == 0, out + err
    assert "✔ applied revision main@sha1:" + herald.repo.head in out

    code, out, err = herald_cli(capsys, "reconcile", "ks", "broken", "-n", "flux-system", "--with-source",
                                "--server", herald.url, "--timeout", "60s", token=OPERATOR_TOKEN)
    assert code == 1 and "no-such-folder" in out, out + err

    code, out, err = herald_cli(capsys, "reconcile", "source", "git", "app", "--server", herald.url,
                                "--timeout", "60s", token=OPERATOR_TOKEN)
    assert code == 0 and f"fetched revision main@sha1:{herald.repo.head}" in out, out + err


def test_changes_need_the_operator_token(herald: Running, capsys) -> None:
    code, _, err = herald_cli(capsys, "reconcile", "ks", "app", "--server", herald.url)
    assert code == 1 and "needs the operator token" in err and "(HTTP 401)" in err
    code, _, err = herald_cli(capsys, "suspend", "ks", "app", "--server", herald.url, token="wrong")
    assert code == 1 and "(HTTP 401)" in err
    assert OPERATOR_TOKEN not in err
    for method, path in (("POST", "/api/v1/reconcile"), ("POST", "/api/v1/suspend"),
                         ("POST", "/api/v1/dead-letters/herald.reconcile/replay")):
        resp = requests.request(method, herald.url + path, json={"kind": "Kustomization", "name": "app"},
                                cookies={"herald_token": OPERATOR_TOKEN}, timeout=10)
        assert resp.status_code == 403, "a cookie alone must not act (another site could send it)"
    # The API lives beside the hooks, never under them.
    assert requests.get(herald.url + "/hook/api/v1/get/kustomizations", timeout=10).status_code in (404, 405)


def test_suspend_is_honoured_by_every_part_and_outlives_a_restart(herald: Running, capsys) -> None:
    code, out, err = herald_cli(capsys, "suspend", "receiver", "github-app", "--server", herald.url,
                                token=OPERATOR_TOKEN)
    assert code == 0 and "✔ Receiver flux-system/github-app suspended" in out, err
    body = github_push(herald.repo.head)
    wait_until(lambda: requests.post(herald.hook_url, data=body, headers=github_headers(body),
                                     timeout=10).status_code == 503, 10, "the receiver to refuse")
    code, out, err = herald_cli(capsys, "suspend", "kustomization", "app", "--server", herald.url,
                                token=OPERATOR_TOKEN)
    assert code == 0
    # Every replica learns it from the bus's log, moments later.
    wait_until(lambda: all(row(herald, capsys, "app")["suspendedBy"] == "operator" for _ in range(4)), 10,
               "every replica to see the suspension")
    code, _, err = herald_cli(capsys, "reconcile", "ks", "app", "--server", herald.url, token=OPERATOR_TOKEN)
    assert code == 1 and "is suspended; resume it first" in err

    before = get(herald, capsys, "kustomizations")
    herald.restart()  # type: ignore[operator]
    app = row(herald, capsys, "app")
    assert app["suspendedBy"] == "operator", "a suspension outlives a restart"
    assert app["lastAppliedRevision"] == next(r for r in before if r["name"] == "app")["lastAppliedRevision"], \
        "and so does the history"
    assert requests.post(herald.hook_url, data=body, headers=github_headers(body), timeout=10).status_code == 503

    for kind, name in (("receiver", "github-app"), ("kustomization", "app")):
        code, out, err = herald_cli(capsys, "resume", kind, name, "--server", herald.url, token=OPERATOR_TOKEN)
        assert code == 0, err
    wait_until(lambda: requests.post(herald.hook_url, data=body, headers=github_headers(body),
                                     timeout=10).status_code == 202, 10, "the receiver to take pushes again")
    wait_until(lambda: not any(row(herald, capsys, "app")["suspended"] for _ in range(4)), 10,
               "every replica to see the resume")
    # The worker too (it reads the operator's log on its own, moments later): the Kustomization
    # is reconciled again. Until it has, a reconcile says why it did not run.
    reconcile_once_the_worker_sees_it(herald, capsys)
    # The configuration's own `suspend: true` wins: resume says so and changes nothing.
    code, _, err = herald_cli(capsys, "resume", "ks", "held", "--server", herald.url, token=OPERATOR_TOKEN)
    assert code == 1 and "suspended by its configuration" in err
    assert row(herald, capsys, "held")["suspended"]


def test_events_and_deliveries_tell_what_a_push_did(herald: Running, capsys) -> None:
    sha = herald.repo.commit({"deploy/extra.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: extra, "
                                                   "namespace: shop}\ndata: {a: b}\n"}, "add a ConfigMap")
    body = github_push(sha)
    headers = github_headers(body)
    delivery = headers["X-GitHub-Delivery"]
    assert requests.post(herald.hook_url, data=body, headers=headers, timeout=10).status_code == 202

    last: list[dict] = []

    def traced() -> dict | None:
        found = requests.get(f"{herald.url}/api/v1/deliveries/{delivery}", timeout=10)
        if found.status_code != 200:
            return None
        t = found.json()
        last[:] = [t]
        done = [n for n in t["notifications"] if n["state"] == "delivered" and n["provider"] == "flux-system/slack"
                and n["reason"] == "ReconciliationSucceeded"]
        run = t["runs"][-1] if t["runs"] else {}
        return t if run.get("state") not in (None, "running") and run.get("revision") == f"main@sha1:{sha}" \
            and done else None

    try:
        trace = wait_until(traced, 60, "the delivery's trace to reach its Slack message")
    except AssertionError:
        raise AssertionError(json.dumps(last, indent=1)[:6000]) from None
    assert trace["webhooks"][0]["status"] == 202 and trace["webhooks"][0]["receiver"] == "flux-system/github-app"
    assert trace["requests"][0]["target"] == "GitRepository/flux-system/app"
    run = trace["runs"][-1]
    assert run["revision"] == f"main@sha1:{sha}"
    assert any(o["name"] == "app" and "ConfigMap/shop/extra created" in o["message"] for o in run["objects"])

    code, out, _ = herald_cli(capsys, "deliveries", "--server", herald.url)
    line = next(ln for ln in out.splitlines() if delivery in ln)
    assert "flux-system/github-app" in line and "push" in line and "202" in line
    assert "GitRepository/flux-system/app" in line
    code, out, _ = herald_cli(capsys, "deliveries", "--trace", delivery, "--server", herald.url)
    assert code == 0 and "ReconciliationSucceeded" in out and "delivered" in out and "slack" in out

    code, out, _ = herald_cli(capsys, "events", "--for", "Kustomization/app", "--server", herald.url)
    assert code == 0
    assert any("ReconciliationSucceeded" in ln and sha[:12] in ln and "ConfigMap/shop/extra created" in ln
               for ln in out.splitlines())
    assert "broken" not in out


def test_events_watch_prints_new_events_as_they_come(herald: Running, capsys, tmp_path: Path) -> None:
    env = dict(os.environ, HERALD_SERVER=herald.url, HERALD_TOKEN=OPERATOR_TOKEN)
    out = tmp_path / "watch.out"
    with open(out, "wb") as f:
        watch = subprocess.Popen([sys.executable, "-m", "herald.cli", "events", "--watch", "--for",
                                  "Kustomization/broken"], stdout=f, stderr=subprocess.STDOUT, env=env)
    try:
        time.sleep(1.5)
        seen = out.read_text().count("\n")
        code, _, err = herald_cli(capsys, "reconcile", "ks", "broken", "--server", herald.url, "--timeout", "60s",
                                  token=OPERATOR_TOKEN)
        assert code == 1, err
        wait_until(lambda: out.read_text().count("\n") > seen, 15, "a new event line")
    finally:
        watch.terminate()
        watch.wait(10)
    assert "no-such-folder" in out.read_text().splitlines()[-1]


def test_dead_letters_are_listed_shown_replayed_and_dropped(herald: Running, capsys) -> None:
    herald.slack.tokens = {SLACK_TOKEN}  # slack-later's token is refused: its messages die at once
    code, _, err = herald_cli(capsys, "reconcile", "ks", "app", "--server", herald.url, "--timeout", "60s",
                              token=OPERATOR_TOKEN)
    assert code == 0, err

    def dead() -> list[dict]:
        code, out, _ = herald_cli(capsys, "dead-letters", "list", "-o", "json", "--server", herald.url)
        return [d for d in json.loads(out) if d.get("provider") == "flux-system/slack-later"]

    letters = wait_until(lambda: len(dead()) >= 1 and dead(), 30, "a dead-lettered notification")
    first = letters[0]
    assert first["queue"] == "herald.notifications" and "invalid_auth" in first["error"]
    assert BROKEN_SLACK_TOKEN not in json.dumps(letters)

    code, out, _ = herald_cli(capsys, "dead-letters", "list", "--server", herald.url)
    assert code == 0 and first["id"] in out and "herald.notifications" in out
    code, out, _ = herald_cli(capsys, "dead-letters", "show", first["id"], "--server", herald.url)
    assert code == 0 and "Kustomization" in out and "invalid_auth" in out

    code, _, err = herald_cli(capsys, "dead-letters", "replay", first["id"], "--server", herald.url)
    assert code == 1 and "HTTP 401" in err, "replaying is a change: it needs the token"
    herald.slack.tokens = {SLACK_TOKEN, BROKEN_SLACK_TOKEN}  # the operator fixed the token
    sent = len(herald.slack.messages)
    code, out, err = herald_cli(capsys, "dead-letters", "replay", first["id"], "--server", herald.url,
                                token=OPERATOR_TOKEN)
    assert code == 0 and "put back on herald.notifications" in out, err
    wait_until(lambda: len(herald.slack.messages) > sent, 30, "the replayed notification at Slack")
    assert first["id"] not in [d["id"] for d in dead()]

    code, out, err = herald_cli(capsys, "dead-letters", "drop", "--all", "--server", herald.url,
                                token=OPERATOR_TOKEN)
    assert code == 0 and "dropped" in out, err
    assert dead() == []
    code, _, err = herald_cli(capsys, "dead-letters", "replay", "no-such-id", "--server", herald.url,
                              token=OPERATOR_TOKEN)
    assert code == 1 and "no dead letter 'no-such-id'" in err


def test_a_herald_that_is_not_running_gets_one_clear_line(capsys) -> None:
    port = free_port()
    code, out, err = herald_cli(capsys, "get", "kustomizations", "--server", f"http://127.0.0.1:{port}")
    assert code == 1 and out == ""
    assert err.strip() == (f"herald get: cannot reach Herald at http://127.0.0.1:{port}: is it running? "
                           "(--server URL or HERALD_SERVER)")
    code, _, err = herald_cli(capsys, "reconcile", "ks", "app", "--timeout", "soon")
    assert code == 2 and "--timeout 'soon'" in err


def test_a_suspended_alert_sends_nothing_and_a_suspended_source_is_not_reconciled(herald: Running, capsys) -> None:
    for args in (("suspend", "alert", "deployments"), ("suspend", "source", "git", "app")):
        code, out, err = herald_cli(capsys, *args, "--server", herald.url, token=OPERATOR_TOKEN)
        assert code == 0, err
    code, _, err = herald_cli(capsys, "reconcile", "source", "git", "app", "--server", herald.url,
                              token=OPERATOR_TOKEN)
    assert code == 1 and "GitRepository flux-system/app is suspended; resume it first" in err
    assert row(herald, capsys, "app", "sources")["suspendedBy"] == "operator"
    code, _, err = herald_cli(capsys, "resume", "source", "git", "app", "--server", herald.url, token=OPERATOR_TOKEN)
    assert code == 0, err
    wait_until(lambda: not any(row(herald, capsys, "app", "sources")["suspended"] for _ in range(4)), 10,
               "every replica to see the source resumed")
    sent = len(deployments_messages(herald))
    reconcile_once_the_worker_sees_it(herald, capsys)
    time.sleep(2)  # the notifier had its chance
    assert deployments_messages(herald)[sent:] == [], "a suspended Alert sends nothing"

    code, _, err = herald_cli(capsys, "resume", "alert", "deployments", "--server", herald.url, token=OPERATOR_TOKEN)
    assert code == 0, err
    time.sleep(0.5)
    sent = len(deployments_messages(herald))
    code, out, err = herald_cli(capsys, "reconcile", "ks", "app", "--server", herald.url, "--timeout", "60s",
                                token=OPERATOR_TOKEN)
    assert code == 0, out + err
    wait_until(lambda: len(deployments_messages(herald)) > sent, 30, "Slack messages once the Alert is resumed")


def reconcile_once_the_worker_sees_it(h: Running, capsys) -> None:
    """`herald reconcile ks app` until it runs: the worker reads the operator's log on its own,
    moments after the receivers; until then a reconcile says it was not run, and why."""
    def reconciled() -> bool:
        code, out, err = herald_cli(capsys, "reconcile", "ks", "app", "--server", h.url, "--timeout", "60s",
                                    token=OPERATOR_TOKEN)
        assert code == 0 or "not run:" in out and "is suspended" in out, out + err
        return code == 0

    wait_until(reconciled, 30, "the worker to reconcile the resumed Kustomization")


def deployments_messages(h: Running) -> list:
    """What the Alert `deployments` sent: its Provider's token, not slack-later's."""
    return [m for m in h.slack.messages if m.headers.get("authorization") == f"Bearer {SLACK_TOKEN}"]
