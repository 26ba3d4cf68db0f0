"""A registry push, end to end (issue 15): Harbor's webhook in, a commit in Git, the new image
running in the cluster and one Slack thread telling it, with `herald serve` as a user runs it
(embedded bus), a real registry (Debian's docker-registry), a real Git remote, the test API
server and the local Slack."""

from __future__ import annotations

import os
import subprocess
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

from herald import config
from tests.fixtures_herald import (
    TOKEN,
    Repo,
    git,
    harbor_push,
    image_automation,
    marked_deployment,
    receiver_yaml,
    start_herald,
    stop_herald,
    wait_ready,
)
from tests.kubeapi import KubeAPIServer
from tests.slackapi import SlackAPIServer
from tests.registry import Registry, push_image
from tests.test_end_to_end import free_port, wait_until
from tests.test_image_worker import registry  # noqa: F401 (the fixture)


BOT_TOKEN = "xoxb-5555-6666-image-story"


def slack_alert(slack: SlackAPIServer) -> str:
    """A Slack bot in #releases told about images and deployments, as a team sets it up."""
    slack.tokens = {BOT_TOKEN}
    slack.channels.add("releases")
    return textwrap.dedent(f"""\
        ---
        apiVersion: v1
        kind: Secret
        metadata: {{name: slack-bot, namespace: flux-system}}
        stringData: {{token: {BOT_TOKEN}}}
        ---
        apiVersion: notification.toolkit.fluxcd.io/v1beta3
        kind: Provider
        metadata: {{name: slack, namespace: flux-system}}
        spec: {{type: slack, channel: releases, address: "{slack.post_message_url}", secretRef: {{name: slack-bot}}}}
        ---
        apiVersion: notification.toolkit.fluxcd.io/v1beta3
        kind: Alert
        metadata: {{name: releases, namespace: flux-system}}
        spec:
          providerRef: {{name: slack}}
          eventSources:
          - {{kind: ImagePolicy, name: '*'}}
          - {{kind: ImageUpdateAutomation, name: '*'}}
          - {{kind: Kustomization, name: '*'}}
        """)


@dataclass
class Shop:
    """The scenario: `web` at 1.4.2 in Git and the registry, Herald serving, its hook."""

    image: str
    hook: str
    proc: subprocess.Popen
    log: Path
    url: str = ""

    def running(self, kube_api: KubeAPIServer) -> str:
        obj = kube_api.get_object("apps/v1", "Deployment", "shop", "web") or {}
        return (((obj.get("spec") or {}).get("template") or {}).get("spec") or {}).get(
            "containers", [{}])[0].get("image", "")

    def release(self, registry: Registry, tag: str) -> requests.Response:
        """CI pushes `tag` to the registry, and Harbor sends its webhook."""
        push_image(registry, self.image.split("/", 1)[1], tag)
        return requests.post(self.hook, data=harbor_push(self.image, tag), timeout=10,
                             headers={"Content-Type": "application/json", "Authorization": TOKEN})


@contextmanager
def shop(tmp_path: Path, repo: Repo, registry: Registry, kubeconfig: Path, extra: str = "",
         **more_env: str) -> Iterator[Shop]:
    image = f"{registry.host}/acme/shop-{os.getpid()}"
    push_image(registry, image.split("/", 1)[1], "1.4.2")
    repo.commit({"deploy/namespace.yaml": "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n",
                 "deploy/web.yaml": marked_deployment(image)}, "the web tier at 1.4.2")
    cfg = tmp_path / "herald.yaml"
    cfg.write_text(receiver_yaml("registry", "harbor", "[{kind: ImageRepository, name: web}]")
                   + image_automation(repo.url, image, insecure=True) + extra)
    loaded = config.load([cfg])
    port = free_port()
    env = dict(os.environ, KUBECONFIG=str(kubeconfig), HERALD_STATE_DIR=str(tmp_path / "state"),
               HERALD_LISTEN=f"127.0.0.1:{port}", HERALD_LOG_LEVEL="INFO", HERALD_INTERVAL_POLLING="false",
               **more_env)
    env.pop("HERALD_BROKER_URL", None)
    log = tmp_path / "serve.log"
    proc = start_herald("serve", cfg, log, env)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_ready(base)
        yield Shop(image, base + loaded.hook_path(loaded.receivers[("flux-system", "registry")]), proc, log, base)
    finally:
        assert stop_herald(proc) == 0, log.read_text()


def test_a_registry_push_is_committed_to_git_and_rolled_out(tmp_path: Path, repo: Repo, registry: Registry,
                                                            kube_api: KubeAPIServer, kubeconfig: Path) -> None:
    with shop(tmp_path, repo, registry, kubeconfig) as it:
        answer = it.release(registry, "1.5.0")
        assert answer.status_code == 202, answer.text
        assert answer.json()["targets"] == ["ImageRepository/flux-system/web"]
        wait_until(lambda: it.running(kube_api) == f"{it.image}:1.5.0", 60, "the new image to run in the cluster")
    # only the marked value changed in Git, in one commit by the automation's author
    assert git("show", "main:deploy/web.yaml", cwd=repo.bare) + "\n" == marked_deployment(it.image, "1.5.0")
    assert git("log", "-1", "--format=%an", "main", cwd=repo.bare) == "Herald Bot"
    # one trace: the registry delivery's correlation id is on the scan, the push and the apply
    log = it.log.read_text()
    pushed = next(line for line in log.splitlines() if "pushed commit" in line)
    cid = pushed.split("[", 1)[1].split("]", 1)[0]
    assert any(cid in line and "ReconciliationSucceeded" in line for line in log.splitlines()), log
    assert "Traceback" not in log and TOKEN not in log


def test_a_registry_push_is_one_slack_thread_from_the_new_tag_to_the_rollout(
        tmp_path: Path, repo: Repo, registry: Registry, kube_api: KubeAPIServer, kubeconfig: Path,
        slack_api: SlackAPIServer) -> None:
    with shop(tmp_path, repo, registry, kubeconfig, slack_alert(slack_api)) as it:
        assert it.release(registry, "1.5.0").status_code == 202
        sha = ""

        def rolled_out() -> bool:
            nonlocal sha
            sha = git("rev-parse", "main", cwd=repo.bare)
            parents = slack_api.channel_messages("releases")
            return bool(parents) and "ReconciliationSucceeded" in parents[-1].content.get("text", "")

        wait_until(rolled_out, 60, "the rollout's outcome on the thread's parent")
        assert it.running(kube_api) == f"{it.image}:1.5.0"
    # the channel shows one message: the image update, at its last step
    [parent] = slack_api.channel_messages("releases")
    headline = parent.content["text"]
    assert headline.startswith(f"{it.image} 1.4.2 → 1.5.0 · Kustomization/flux-system/app: ReconciliationSucceeded")
    # its thread tells the story: the new tag, the commit, the rollout
    thread = [m.content["text"] for m in slack_api.thread("releases", parent.ts)]
    said = "\n".join(thread)
    assert "ImagePolicy/flux-system/web: Succeeded" in said
    assert f"ImageUpdateAutomation/flux-system/app: Succeeded at main@sha1:{sha}" in said
    assert f"Kustomization/flux-system/app: ReconciliationSucceeded at main@sha1:{sha}" in said
    shown = json_text(parent) + "".join(json_text(m) for m in slack_api.thread("releases", parent.ts))
    assert "resolved to 1.5.0" in shown and f"pushed commit '{sha[:7]}'" in shown
    assert "herald.dev/story" not in shown  # a routing hint, not a fact to show
    assert "Traceback" not in it.log.read_text()


def json_text(message: object) -> str:
    import json

    return json.dumps(getattr(message, "content", {}), ensure_ascii=False)


OPERATOR = """\
---
apiVersion: v1
kind: Secret
metadata: {name: herald-operator, namespace: flux-system}
stringData: {token: image-operator-token}
"""


def test_an_operator_asks_for_a_scan_and_sees_the_update_through(tmp_path: Path, repo: Repo, registry: Registry,
                                                                 kube_api: KubeAPIServer, kubeconfig: Path,
                                                                 capsys) -> None:
    """No webhook from this registry: `herald reconcile image repository` scans it now."""
    from herald.cli import main

    with shop(tmp_path, repo, registry, kubeconfig, OPERATOR,
              HERALD_OPERATOR_SECRET="flux-system/herald-operator") as it:
        push_image(registry, it.image.split("/", 1)[1], "1.6.0")
        os.environ["HERALD_TOKEN"] = "image-operator-token"
        try:
            code = main(["reconcile", "image", "repository", "web", "--server", it.url, "--timeout", "60s"])
        finally:
            os.environ.pop("HERALD_TOKEN", None)
        out = capsys.readouterr().out
        assert code == 0, out
        assert "ImagePolicy web: Succeeded" in out and "ImageUpdateAutomation app: Succeeded" in out
        wait_until(lambda: it.running(kube_api) == f"{it.image}:1.6.0", 60, "the new image to run")
        assert main(["get", "images", "--server", it.url]) == 0
        table = capsys.readouterr().out
        assert "ImagePolicy/web" in table and "ImageUpdateAutomation/app" in table
        images = requests.get(f"{it.url}/api/v1/images", timeout=10).json()["items"]
        assert [s["reason"] for s in images[0]["steps"] if s["kind"] == "ImageUpdateAutomation"] == ["Succeeded"]
