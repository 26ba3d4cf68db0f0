"""Fixtures for Herald's own scenarios: a Git repository to deploy from and a config for it."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

# Third-party webhook payloads and signature vectors, copied into the repository with their
# origin and licences (webhooks/SOURCES.md): the tests read nothing outside the repository.
FIXTURES = Path(__file__).resolve().parent / "webhooks"
TOKEN = "s3cr3t-webhook-token"

WEB_MANIFESTS = {
    "deploy/namespace.yaml": """\
        apiVersion: v1
        kind: Namespace
        metadata:
          name: shop
        """,
    "deploy/web.yaml": """\
        apiVersion: apps/v1
        kind: Deployment
        metadata:
          name: web
          namespace: shop
          labels: {app: web}
        spec:
          replicas: 2
          selector: {matchLabels: {app: web}}
          template:
            metadata: {labels: {app: web}}
            spec:
              containers:
                - name: web
                  image: nginx:1.27
        ---
        apiVersion: v1
        kind: Service
        metadata:
          name: web
          namespace: shop
        spec:
          selector: {app: web}
          ports: [{port: 80}]
        """,
    "deploy/README.md": "not a manifest\n",
}


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=Test", "-c", "user.email=test@example.com", *args],
        cwd=cwd, check=True, capture_output=True, text=True,
    ).stdout.strip()


@dataclass
class Repo:
    """A bare repository (the 'remote' Herald fetches) and a work tree that pushes to it."""

    bare: Path
    work: Path

    @property
    def url(self) -> str:
        return f"file://{self.bare}"

    def commit(self, files: dict[str, str], message: str = "change") -> str:
        for rel, text in files.items():
            p = self.work / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(textwrap.dedent(text))
        git("add", "-A", cwd=self.work)
        git("commit", "-q", "-m", message, cwd=self.work)
        git("push", "-q", "origin", "HEAD:main", cwd=self.work)
        return git("rev-parse", "HEAD", cwd=self.work)

    @property
    def head(self) -> str:
        return git("rev-parse", "HEAD", cwd=self.work)


def make_repo(tmp: Path) -> Repo:
    """A remote holding the shop's manifests on main, and a work tree to push more from."""
    bare, work = tmp / "remote.git", tmp / "work"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(bare)], check=True)
    subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True)
    git("remote", "add", "origin", str(bare), cwd=work)
    r = Repo(bare, work)
    r.commit(WEB_MANIFESTS, "initial")
    return r


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    return make_repo(tmp_path)


def write_config(path: Path, repo_url: str, *, slack_address: str = "", slack_token: str = "",
                 extra: str = "") -> Path:
    """The scenario's configuration: GitHub Receiver → GitRepository → Kustomization, and an
    Alert sending every event of them to Slack when a Slack address is given."""
    parts = [f"""\
        apiVersion: v1
        kind: Secret
        metadata: {{name: github-token, namespace: flux-system}}
        stringData: {{token: "{TOKEN}\\n"}}
        ---
        apiVersion: notification.toolkit.fluxcd.io/v1
        kind: Receiver
        metadata: {{name: github-app, namespace: flux-system}}
        spec:
          type: github
          events: ["ping", "push"]
          secretRef: {{name: github-token}}
          resources:
            - apiVersion: source.toolkit.fluxcd.io/v1
              kind: GitRepository
              name: app
        ---
        apiVersion: source.toolkit.fluxcd.io/v1
        kind: GitRepository
        metadata: {{name: app, namespace: flux-system}}
        spec:
          interval: 10m
          url: {repo_url}
          ref: {{branch: main}}
        ---
        apiVersion: kustomize.toolkit.fluxcd.io/v1
        kind: Kustomization
        metadata: {{name: app, namespace: flux-system}}
        spec:
          interval: 10m
          path: ./deploy
          prune: true
          sourceRef: {{kind: GitRepository, name: app}}
        """]
    if slack_address:
        parts.append(f"""\
        ---
        apiVersion: v1
        kind: Secret
        metadata: {{name: slack-bot, namespace: flux-system}}
        stringData: {{token: "{slack_token}"}}
        ---
        apiVersion: notification.toolkit.fluxcd.io/v1beta3
        kind: Provider
        metadata: {{name: slack, namespace: flux-system}}
        spec:
          type: slack
          channel: general
          address: {slack_address}
          secretRef: {{name: slack-bot}}
        ---
        apiVersion: notification.toolkit.fluxcd.io/v1beta3
        kind: Alert
        metadata: {{name: deployments, namespace: flux-system}}
        spec:
          providerRef: {{name: slack}}
          eventSeverity: info
          eventSources:
            - kind: GitRepository
              name: '*'
            - kind: Kustomization
              name: '*'
        """)
    path.write_text("".join(textwrap.dedent(p) for p in [*parts, extra]))
    return path


def github_status_alert(repository_url: str, token: str = "github-token") -> str:
    """Configuration to add (write_config's `extra`): a `github` Provider posting commit statuses
    (and plan comments) to `repository_url`, its Secret, and an Alert sending it every event of
    the Kustomization `app`."""
    return textwrap.dedent(f"""\
        ---
        apiVersion: v1
        kind: Secret
        metadata: {{name: github-status, namespace: flux-system}}
        stringData: {{token: {token}}}
        ---
        apiVersion: notification.toolkit.fluxcd.io/v1beta3
        kind: Provider
        metadata: {{name: github-status, namespace: flux-system}}
        spec: {{type: github, address: "{repository_url}", secretRef: {{name: github-status}}}}
        ---
        apiVersion: notification.toolkit.fluxcd.io/v1beta3
        kind: Alert
        metadata: {{name: commit-status, namespace: flux-system}}
        spec:
          providerRef: {{name: github-status}}
          eventSources: [{{kind: Kustomization, name: app}}]
        """)


def taking_pull_requests(cfg: Path) -> Path:
    """write_config's Receiver, set up to take pull requests too, as a user does for plans."""
    cfg.write_text(cfg.read_text().replace('events: ["ping", "push"]', 'events: ["ping", "push", "pull_request"]'))
    return cfg


def github_pull_request(repo_url: str, number: int, head: str, action: str = "opened",
                        branch: str = "feature") -> bytes:
    """GitHub's real `pull_request` delivery (octokit's fixture) for a PR of our repository
    from `branch` into main, its head at `head`."""
    data = json.loads((FIXTURES / "github" / "pull_request-opened.json").read_bytes())
    data["action"], data["number"] = action, number
    pr = data["pull_request"]
    pr["number"], pr["state"] = number, "closed" if action == "closed" else "open"
    pr["head"]["sha"], pr["head"]["ref"], pr["base"]["ref"] = head, branch, "main"
    for where in (data["repository"], pr["head"]["repo"], pr["base"]["repo"]):
        where["clone_url"] = repo_url
    return json.dumps(data).encode()


def receiver_yaml(name: str, rtype: str, resources: str, *, namespace: str = "flux-system",
                  spec: str = "") -> str:
    """A Receiver of `rtype` naming `resources` (a YAML flow list), with its token Secret
    (TOKEN), as YAML documents to put before others; `spec`: more fields, one per line."""
    extra = "".join(f"\n  {line}" for line in spec.splitlines() if line.strip())
    return textwrap.dedent(f"""\
        apiVersion: v1
        kind: Secret
        metadata: {{name: {name}-token, namespace: {namespace}}}
        stringData: {{token: "{TOKEN}"}}
        ---
        apiVersion: notification.toolkit.fluxcd.io/v1
        kind: Receiver
        metadata: {{name: {name}, namespace: {namespace}}}
        spec:
          type: {rtype}
          secretRef: {{name: {name}-token}}
          resources: {resources}""") + extra + "\n---\n"


def harbor_push(image: str, tag: str) -> bytes:
    """Harbor's real PUSH_ARTIFACT delivery (tests/webhooks), naming `image:tag`."""
    data = json.loads((FIXTURES / "harbor" / "PUSH_ARTIFACT.json").read_bytes())
    resource = data["event_data"]["resources"][0]
    resource.update(tag=tag, resource_url=f"{image}:{tag}")
    resource.pop("digest", None)
    return json.dumps(data).encode()


def marked_deployment(image: str, tag: str = "1.4.2") -> str:
    """The Deployment `shop/web` running `image:tag`, its image marked for the ImagePolicy
    `flux-system:web` as Flux's image automation marks it."""
    return textwrap.dedent(f"""\
        apiVersion: apps/v1
        kind: Deployment
        metadata: {{name: web, namespace: shop}}
        spec:
          selector: {{matchLabels: {{app: web}}}}
          template:
            metadata: {{labels: {{app: web}}}}
            spec:
              containers:
                - name: web
                  image: {image}:{tag}  # {{"$imagepolicy": "flux-system:web"}}
        """)


AUTOMATION_GIT = """\
    git:
      commit:
        author: {name: Herald Bot, email: herald@example.com}
    """


def image_automation(repo_url: str, image: str, *, git: str = AUTOMATION_GIT,
                     policy: str = '{semver: {range: ">=1.0.0"}}', insecure: bool = False) -> str:
    """Flux's image automation for the scenario's repository, as a user writes it: the
    GitRepository `app` (main) and its Kustomization (./deploy), the ImageRepository `web` for
    `image`, the ImagePolicy `web` (`policy`), and the ImageUpdateAutomation `app` writing into
    ./deploy with the `git` section given (by default, only the commit author)."""
    flags = ", insecure: true" if insecure else ""
    return textwrap.dedent(f"""\
        apiVersion: source.toolkit.fluxcd.io/v1
        kind: GitRepository
        metadata: {{name: app, namespace: flux-system}}
        spec: {{interval: 10m, url: {repo_url}, ref: {{branch: main}}}}
        ---
        apiVersion: kustomize.toolkit.fluxcd.io/v1
        kind: Kustomization
        metadata: {{name: app, namespace: flux-system}}
        spec: {{interval: 10m, path: ./deploy, prune: true, sourceRef: {{kind: GitRepository, name: app}}}}
        ---
        apiVersion: image.toolkit.fluxcd.io/v1
        kind: ImageRepository
        metadata: {{name: web, namespace: flux-system}}
        spec: {{image: {image}, interval: 5m{flags}}}
        ---
        apiVersion: image.toolkit.fluxcd.io/v1
        kind: ImagePolicy
        metadata: {{name: web, namespace: flux-system}}
        spec:
          imageRepositoryRef: {{name: web}}
          policy: {policy}
        ---
        apiVersion: image.toolkit.fluxcd.io/v1
        kind: ImageUpdateAutomation
        metadata: {{name: app, namespace: flux-system}}
        spec:
          interval: 30m
          sourceRef: {{kind: GitRepository, name: app}}
          update: {{path: ./deploy, strategy: Setters}}
        """) + textwrap.indent(textwrap.dedent(git), "  ")


def github_push(sha: str, branch: str = "main") -> bytes:
    """GitHub's real push delivery (octokit's fixture) pointed at our repository's commit."""
    data = json.loads((FIXTURES / "github" / "push.json").read_bytes())
    data["ref"] = f"refs/heads/{branch}"
    data["after"] = sha
    return json.dumps(data).encode()


def sign(body: bytes, token: str = TOKEN) -> str:
    return "sha256=" + hmac.new(token.encode(), body, hashlib.sha256).hexdigest()


def github_headers(body: bytes, event: str = "push", delivery: str = "",
                   token: str = TOKEN) -> dict[str, str]:
    """What GitHub sends with `body`; each call is a new delivery (its own GUID) unless told."""
    return {
        "Content-Type": "application/json",
        "User-Agent": "GitHub-Hookshot/044aadd",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "X-GitHub-Hook-ID": "292430182",
        "X-Hub-Signature-256": sign(body, token),
    }


# ---- `herald` commands as real processes ---------------------------------------------------

def start_herald(command: str, cfg: Path, log: Path, env: dict[str, str], *extra: str) -> subprocess.Popen:
    """Run `herald COMMAND -c CFG` in its own process, its output going to `log`."""
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "herald.cli", command, "-c", str(cfg), *extra],
                                stdout=out, stderr=subprocess.STDOUT, env=env)


def stop_herald(proc: subprocess.Popen) -> int:
    """SIGTERM as an orchestrator sends it, SIGKILL if it has not exited in 20 s; the exit code."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float = 30.0, what: str = "condition"):
    """Poll `predicate` until it returns something truthy, and return that."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def wait_ready(url: str, timeout: float = 30.0) -> None:
    """Until a Herald process at `url` answers /readyz with 200."""
    def up() -> bool:
        try:
            return requests.get(url + "/readyz", timeout=1).status_code == 200
        except (requests.ConnectionError, requests.Timeout):
            # Timeout: the port is bound (gunicorn's arbiter binds it) before a worker has
            # built the app and accepts; on a loaded machine that takes over a second.
            return False

    wait_until(up, timeout, f"{url}/readyz")


@pytest.fixture
def vhost_url(rabbitmq_url: str):
    """A fresh RabbitMQ vhost for one test's Herald processes."""
    from tests.fixtures_rabbitmq import fresh_vhost

    with fresh_vhost(rabbitmq_url) as url:
        yield url
