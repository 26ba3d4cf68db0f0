"""A registry push, end to end (issue 15): Harbor's webhook in, a commit in Git, the new image
running in the cluster, with `herald serve` as a user runs it (embedded bus), a real registry
(Debian's docker-registry), a real Git remote and the test API server."""

from __future__ import annotations

import os
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
from tests.registry import Registry, push_image
from tests.test_end_to_end import free_port, wait_until
from tests.test_image_worker import registry  # noqa: F401 (the fixture)


def test_a_registry_push_is_committed_to_git_and_rolled_out(tmp_path: Path, repo: Repo, registry: Registry,
                                                            kube_api: KubeAPIServer, kubeconfig: Path) -> None:
    image = f"{registry.host}/acme/shop-{os.getpid()}"
    push_image(registry, image.split("/", 1)[1], "1.4.2")
    repo.commit({"deploy/namespace.yaml": "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n",
                 "deploy/web.yaml": marked_deployment(image)}, "the web tier at 1.4.2")
    cfg = tmp_path / "herald.yaml"
    cfg.write_text(receiver_yaml("registry", "harbor", "[{kind: ImageRepository, name: web}]")
                   + image_automation(repo.url, image, insecure=True))
    loaded = config.load([cfg])
    port = free_port()
    env = dict(os.environ, KUBECONFIG=str(kubeconfig), HERALD_STATE_DIR=str(tmp_path / "state"),
               HERALD_LISTEN=f"127.0.0.1:{port}", HERALD_LOG_LEVEL="INFO", HERALD_INTERVAL_POLLING="false")
    env.pop("HERALD_BROKER_URL", None)
    proc = start_herald("serve", cfg, tmp_path / "serve.log", env)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_ready(base)
        hook = base + loaded.hook_path(loaded.receivers[("flux-system", "registry")])
        push_image(registry, image.split("/", 1)[1], "1.5.0")
        body = harbor_push(image, "1.5.0")
        answer = requests.post(hook, data=body, headers={"Content-Type": "application/json", "Authorization": TOKEN},
                               timeout=10)
        assert answer.status_code == 202, answer.text
        assert answer.json()["targets"] == ["ImageRepository/flux-system/web"]

        def running() -> str:
            obj = kube_api.get_object("apps/v1", "Deployment", "shop", "web") or {}
            return (((obj.get("spec") or {}).get("template") or {}).get("spec") or {}).get(
                "containers", [{}])[0].get("image", "")

        wait_until(lambda: running() == f"{image}:1.5.0", 60, "the new image to run in the cluster")
    finally:
        assert stop_herald(proc) == 0, (tmp_path / "serve.log").read_text()
    # only the marked value changed in Git, in one commit by the automation's author
    assert git("show", "main:deploy/web.yaml", cwd=repo.bare) + "\n" == marked_deployment(image, "1.5.0")
    assert git("log", "-1", "--format=%an", "main", cwd=repo.bare) == "Herald Bot"
    # one trace: the registry delivery's correlation id is on the scan, the push and the apply
    log = (tmp_path / "serve.log").read_text()
    pushed = next(line for line in log.splitlines() if "pushed commit" in line)
    cid = pushed.split("[", 1)[1].split("]", 1)[0]
    assert any(cid in line and "ReconciliationSucceeded" in line for line in log.splitlines()), log
    assert "Traceback" not in log and TOKEN not in log
