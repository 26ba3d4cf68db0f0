"""A configuration with one Receiver per registered receiver type, and what their senders send.

Shared by the receiver's fuzz, secrets and outage tests. Every Receiver points at the same
GitRepository (`flux-system/app`, branch main). Signed types take the Secret's `token` (and its
`rotationKeys`) as their key; a few types get extra Receivers for their authentication modes
(ACR with Basic credentials or a header token, CloudEvents/CDEvents with `requireSignature`,
GitHub with the legacy SHA-1 header allowed).

`valid_delivery(name, key)` builds what a well-behaved sender of that type posts, correctly
authenticated with `key`: the control case the hostile variants are measured against.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import textwrap
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

from herald import config as config_mod
from receiver.types import TYPES
from tests.fixtures_herald import FIXTURES, free_port, start_herald, stop_herald

NAMESPACE = "flux-system"
# Long, distinctive values: a hit when grepping logs and bodies cannot be a coincidence.
TOKEN = "tok-7d41c0e9b2a84f56a1c3e5f7092b4d6e"
ROTATION_KEYS = ("rot-1f3e5a7c9b0d2e4f6a8c0e2b4d6f8a1c", "rot-93b8d1e6f4a2c0e8b6d4f2a0c8e6b4d2")
KEYS = (TOKEN, *ROTATION_KEYS)
ACR_USERNAME = "acr-user-5e2b9c7a1d3f"
ACR_PASSWORD = "acr-pass-0c8e6a4f2d1b3e5c7a9f"
ACR_HEADER_TOKEN = "acr-hdr-b7d5f3a1c9e8d6b4a2f0e1c3"
ACR_BASIC = base64.b64encode(f"{ACR_USERNAME}:{ACR_PASSWORD}".encode()).decode()
ALGORITHMS = ("sha1", "sha256", "sha512")
COMMIT = "5e2b9c7a1d3f4b6e8a0c2e4f6a8b0d2f4e6a8c0b"

# Receiver name -> (type, Secret name, extra spec lines).
RECEIVERS: dict[str, tuple[str, str, str]] = {
    "github": ("github", "hook-keys", ""),
    "github-sha1": ("github", "hook-keys", "insecureAllowSHA1: true"),
    "gitlab": ("gitlab", "hook-keys", ""),
    "bitbucket": ("bitbucket", "hook-keys", ""),
    "bitbucketserver": ("bitbucketserver", "hook-keys", ""),
    "gitea": ("gitea", "hook-keys", ""),
    "forgejo": ("forgejo", "hook-keys", ""),
    "gogs": ("gogs", "hook-keys", ""),
    "dockerhub": ("dockerhub", "hook-keys", ""),
    "quay": ("quay", "hook-keys", ""),
    "harbor": ("harbor", "hook-keys", ""),
    "ghcr": ("ghcr", "hook-keys", ""),
    "acr": ("acr", "hook-keys", ""),
    "acr-basic": ("acr", "acr-basic", ""),
    "acr-bearer": ("acr", "acr-bearer", ""),
    "nexus": ("nexus", "hook-keys", ""),
    "generic": ("generic", "hook-keys", ""),
    "generic-hmac": ("generic-hmac", "hook-keys", ""),
    "cloudevents": ("cloudevents", "hook-keys", ""),
    "cloudevents-signed": ("cloudevents", "ce-signed", ""),
    "cdevents": ("cdevents", "hook-keys", ""),
    "cdevents-signed": ("cdevents", "ce-signed", ""),
}

# Receivers whose only credential is the URL: any body reaching them is judged on its shape.
URL_ONLY = ("dockerhub", "quay", "acr", "generic", "cloudevents", "cdevents")
SIGNED = tuple(n for n in RECEIVERS if n not in URL_ONLY)

SECRETS = {
    "hook-keys": {"token": TOKEN, "rotationKeys": "\n".join(ROTATION_KEYS) + "\n"},
    "acr-basic": {"token": TOKEN, "username": ACR_USERNAME, "password": ACR_PASSWORD},
    "acr-bearer": {"token": TOKEN, "headerToken": ACR_HEADER_TOKEN},
    "ce-signed": {"token": TOKEN, "rotationKeys": "\n".join(ROTATION_KEYS), "requireSignature": "true"},
}


def every_secret_value() -> list[str]:
    """Each configured credential, and the forms it travels in (Basic, Bearer)."""
    values = {v.strip() for data in SECRETS.values() for k, v in data.items() if k != "requireSignature"}
    values |= set(KEYS) | {ACR_BASIC, f"Basic {ACR_BASIC}", f"Bearer {ACR_HEADER_TOKEN}"}
    return sorted(values)


def expected_macs(body: bytes, keys: tuple[str, ...] = KEYS) -> list[str]:
    """Hex HMACs of `body` under every key and algorithm any type uses: what a valid signature is."""
    return [hmac.new(k.encode(), body, getattr(hashlib, a)).hexdigest() for k in keys for a in ALGORITHMS]


def mac(body: bytes, key: str = TOKEN, algorithm: str = "sha256") -> str:
    return hmac.new(key.encode(), body, getattr(hashlib, algorithm)).hexdigest()


def write_types_config(path: Path) -> Path:
    docs = [textwrap.dedent(f"""\
        apiVersion: source.toolkit.fluxcd.io/v1
        kind: GitRepository
        metadata: {{name: app, namespace: {NAMESPACE}}}
        spec:
          interval: 10m
          url: https://example.com/app.git
          ref: {{branch: main}}
        """), textwrap.dedent(f"""\
        apiVersion: kustomize.toolkit.fluxcd.io/v1
        kind: Kustomization
        metadata: {{name: app, namespace: {NAMESPACE}}}
        spec:
          interval: 10m
          path: ./deploy
          prune: false
          sourceRef: {{kind: GitRepository, name: app}}
        """)]
    for name, data in SECRETS.items():
        docs.append(f"apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {NAMESPACE}}}\n"
                    f"stringData: {json.dumps(data)}\n")
    for name, (rtype, secret, extra) in RECEIVERS.items():
        docs.append(textwrap.dedent(f"""\
            apiVersion: notification.toolkit.fluxcd.io/v1
            kind: Receiver
            metadata: {{name: {name}, namespace: {NAMESPACE}}}
            spec:
              type: {rtype}
              secretRef: {{name: {secret}}}
              resources:
                - {{kind: GitRepository, name: app}}
            """) + (f"  {extra}\n" if extra else ""))
    path.write_text("---\n".join(docs))
    return path


@dataclass
class TypesConfig:
    path: Path
    cfg: config_mod.Config
    hooks: dict[str, str]  # receiver name -> /hook/<digest>

    def hook(self, name: str) -> str:
        return self.hooks[name]


def load_types_config(directory: Path) -> TypesConfig:
    path = write_types_config(directory / "herald-types.yaml")
    cfg = config_mod.load([path])
    hooks = {name: cfg.hook_path(cfg.receivers[(NAMESPACE, name)]) for name in RECEIVERS}
    assert all(hooks.values())
    covered = {rtype for rtype, _, _ in RECEIVERS.values()}
    assert covered == set(TYPES), f"a registered type has no Receiver here: {set(TYPES) - covered}"
    return TypesConfig(path, cfg, hooks)


# ---- what the senders send ---------------------------------------------------------------

def fixture(rel: str) -> bytes:
    return (FIXTURES / rel).read_bytes()


def _json(data: object) -> bytes:
    return json.dumps(data).encode()


def _on_main(rel: str, sha: str = COMMIT) -> bytes:
    """A GitHub-shaped push fixture moved to our branch and commit."""
    data = json.loads(fixture(rel))
    data["ref"], data["after"] = "refs/heads/main", sha
    if "checkout_sha" in data:
        data["checkout_sha"] = sha
    return _json(data)


NEXUS_BODY = json.dumps({
    "timestamp": "2016-11-14T19:32:13.515+0000", "nodeId": "7FFA7361-6ED33978-36997BD4-47095CC4-331356BE",
    "initiator": "anonymous/127.0.0.1", "repositoryName": "docker-hosted", "action": "CREATED",
    "component": {"id": "08909bf0c86cf6c9600aade89e1c5e25", "format": "docker", "name": "team/api",
                  "version": "1.4.2"}}, separators=(",", ":")).encode()


def _bitbucket_push() -> bytes:
    data = json.loads(fixture("bitbucket/repo-push.json"))
    for change in data["push"]["changes"]:
        change["new"]["name"], change["new"]["type"] = "main", "branch"
        change["new"]["target"]["hash"] = COMMIT
    return _json(data)


def _bitbucketserver_push() -> bytes:
    data = json.loads(fixture("bitbucket-server/repo-refs_changed.json"))
    data["changes"] = [{"ref": {"id": "refs/heads/main", "displayId": "main", "type": "BRANCH"},
                        "refId": "refs/heads/main", "fromHash": "0" * 40, "toHash": COMMIT, "type": "UPDATE"}]
    return _json(data)


def cdevent_headers(body: bytes) -> dict[str, str]:
    context = json.loads(body)["context"]
    return {"ce-specversion": "1.0", "ce-type": context["type"], "ce-id": context["id"],
            "ce-source": context["source"], "Content-Type": "application/json"}


# Bodies a real sender of each receiver's type posts (valid, and routed to branch main).
def sample_bodies(name: str) -> list[bytes]:
    rtype = RECEIVERS[name][0]
    return {
        "github": [_on_main("github/push.json"), _on_main("github/push-with-organization.json")],
        "gitlab": [_on_main("gitlab/push.json")],
        "bitbucket": [_bitbucket_push()],
        "bitbucketserver": [_bitbucketserver_push()],
        "gitea": [_on_main("gitea/push.json")],
        "forgejo": [_on_main("gitea/push.json")],
        "gogs": [_on_main("gogs/push.json")],
        "dockerhub": [fixture("dockerhub/push-docker-docs.json"), fixture("dockerhub/push-go-playground.json")],
        "quay": [fixture("quay/repo_push.json"), fixture("quay/vulnerability_found.json")],
        "harbor": [fixture("harbor/PUSH_ARTIFACT.json"), fixture("harbor/cloudevents-harbor.artifact.pushed-comments-removed.json")],
        "ghcr": [fixture("ghcr/package-published-container.json")],
        "acr": [fixture("acr/push.json"), fixture("acr/delete.json"), fixture("acr/chart_push.json")],
        "nexus": [NEXUS_BODY],
        "generic": [b'{"ref": "main"}', b"triggered by CI"],
        "generic-hmac": [b'{"ref": "main"}', b"\x00\xffbinary"],
        "cloudevents": [fixture("cloudevents/structured-json-data.json"),
                        fixture("cloudevents/structured-data_base64.json")],
        "cdevents": [fixture("cloudevents/cdevents-change_merged-binary-body.json"),
                     fixture("cloudevents/cdevents-artifact_published-binary-body.json")],
    }[rtype]


def base_headers(name: str, body: bytes) -> dict[str, str]:
    """The sender's own headers for `body`, without any credential."""
    rtype = RECEIVERS[name][0]
    delivery = str(uuid.uuid4())
    if rtype in ("github", "ghcr"):
        event = "push" if rtype == "github" else "package"
        return {"Content-Type": "application/json", "X-GitHub-Event": event, "X-GitHub-Delivery": delivery,
                "User-Agent": "GitHub-Hookshot/044aadd"}
    if rtype == "gitlab":
        return {"Content-Type": "application/json", "X-Gitlab-Event": "Push Hook", "Idempotency-Key": delivery}
    if rtype in ("bitbucket", "bitbucketserver"):
        event = "repo:push" if rtype == "bitbucket" else "repo:refs_changed"
        id_header = "X-Request-UUID" if rtype == "bitbucket" else "X-Request-Id"
        return {"Content-Type": "application/json", "X-Event-Key": event, id_header: delivery}
    if rtype in ("gitea", "forgejo", "gogs"):
        host = rtype.capitalize()
        return {"Content-Type": "application/json", f"X-{host}-Event": "push", f"X-{host}-Delivery": delivery}
    if rtype == "nexus":
        return {"Content-Type": "application/json; charset=UTF-8", "X-Nexus-Webhook-Id": "rm:repository:component",
                "X-Nexus-Webhook-Delivery": delivery}
    if rtype == "harbor":
        ce = b'"specversion"' in body
        return {"Content-Type": "application/cloudevents+json" if ce else "application/json"}
    if rtype == "cloudevents":
        return {"Content-Type": "application/cloudevents+json; charset=utf-8"}
    if rtype == "cdevents":
        return cdevent_headers(body)
    return {"Content-Type": "application/json"}  # dockerhub, quay, acr, generic, generic-hmac


def credentials(name: str, body: bytes, key: str = TOKEN, algorithm: str = "") -> dict[str, str]:
    """The authentication headers a sender configured with `key` puts on `body`."""
    rtype = RECEIVERS[name][0]
    if name == "github-sha1":
        return {"X-Hub-Signature": "sha1=" + mac(body, key, "sha1")}
    if rtype in ("github", "ghcr"):
        return {"X-Hub-Signature-256": "sha256=" + mac(body, key)}
    if rtype in ("bitbucket", "bitbucketserver"):
        return {"X-Hub-Signature": "sha256=" + mac(body, key)}
    if rtype in ("gitea", "forgejo", "gogs"):
        return {f"X-{rtype.capitalize()}-Signature": mac(body, key)}
    if rtype == "nexus":
        return {"X-Nexus-Webhook-Signature": mac(body, key, "sha1")}
    if rtype == "gitlab":
        return {"X-Gitlab-Token": key}
    if rtype == "harbor":
        return {"Authorization": key}
    if name == "acr-basic":
        return {"Authorization": f"Basic {ACR_BASIC}"}
    if name == "acr-bearer":
        return {"Authorization": f"Bearer {ACR_HEADER_TOKEN}"}
    if name in ("generic-hmac", "cloudevents-signed", "cdevents-signed"):
        algorithm = algorithm or "sha256"
        return {"X-Signature": f"{algorithm}={mac(body, key, algorithm)}"}
    return {}


def valid_delivery(name: str, key: str = TOKEN, index: int = 0, algorithm: str = "") -> tuple[dict[str, str], bytes]:
    bodies = sample_bodies(name)
    body = bodies[index % len(bodies)]
    return base_headers(name, body) | credentials(name, body, key, algorithm), body


# ---- `herald receiver` as a real process -------------------------------------------------

@contextmanager
def receiver_process(config: Path, tmp: Path, *extra: str, log_level: str = "INFO",
                     env: dict[str, str] | None = None) -> Iterator[tuple[str, Path]]:
    """`herald receiver -c CONFIG` in its own process; yields its base URL and the path of its log.

    The process is stopped with SIGTERM (as an orchestrator would) and must exit cleanly.
    """
    port = free_port()
    log = tmp / f"receiver-{uuid.uuid4().hex[:6]}.log"
    run_env = dict(os.environ if env is None else env, HERALD_LOG_LEVEL=log_level,
                   HERALD_STATE_DIR=str(tmp / "state"), HERALD_LISTEN=f"127.0.0.1:{port}")
    if "--broker" not in extra:
        run_env.pop("HERALD_BROKER_URL", None)
    base = f"http://127.0.0.1:{port}"
    proc = start_herald("receiver", config, log, run_env, *extra)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except (requests.ConnectionError, requests.Timeout):  # bound before a worker accepts
                pass
            assert proc.poll() is None, f"herald receiver exited:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"herald receiver did not come up:\n{log.read_text()}"
            time.sleep(0.1)
        yield base, log
    finally:
        stop_herald(proc)
    assert proc.returncode == 0, f"herald receiver did not exit cleanly ({proc.returncode}):\n{log.read_text()}"
