"""A GitRepository with `spec.verify` (issue 16): only commits signed by a key of its Secret are
applied, as source-controller verifies them; an unsigned or foreign commit fails the source
with Flux's reason and nothing of it reaches the cluster. Real SSH-signed commits (ssh-keygen,
git's gpg.format=ssh), the real reconciler, the test API server."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from herald import config
from tests.apt import apt_install
from tests.fixtures_herald import Repo, git
from tests.kubeapi import KubeAPIServer
from tests.test_honest_runs import deliver, drain_events, finals, kustomization, make_worker, push  # noqa: F401


@pytest.fixture(scope="module")
def ssh_keygen() -> str:
    import shutil

    why = apt_install(["openssh-client"], lambda: bool(shutil.which("ssh-keygen")))
    if why:
        pytest.fail(f"ssh-keygen is needed to sign commits: {why}")
    return "ssh-keygen"


def signing_key(tmp_path: Path, name: str) -> tuple[Path, str]:
    key = tmp_path / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{name}@acme.example", "-f", str(key)],
                   check=True)
    return key, (tmp_path / f"{name}.pub").read_text().strip()


def signed_commit(repo: Repo, key: Path | None, files: dict[str, str], message: str) -> str:
    for rel, text in files.items():
        (repo.work / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo.work / rel).write_text(text)
    git("add", "-A", cwd=repo.work)
    sign = ["-c", "gpg.format=ssh", "-c", f"user.signingkey={key}", "commit", "-S"] if key else ["commit"]
    git(*sign, "-q", "-m", message, cwd=repo.work)
    git("push", "-q", "origin", "HEAD:main", cwd=repo.work)
    return git("rev-parse", "HEAD", cwd=repo.work)


def verified_config(path: Path, url: str, public_key: str) -> config.Config:
    repo = {"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
            "metadata": {"name": "app", "namespace": "flux-system"},
            "spec": {"interval": "10m", "url": url, "ref": {"branch": "main"},
                     "verify": {"mode": "HEAD", "secretRef": {"name": "release-keys"}}}}
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "release-keys", "namespace": "flux-system"},
              "stringData": {"release.sshpub": public_key}}
    path.write_text(json.dumps(repo) + "\n---\n" + json.dumps(secret) + "\n" + kustomization("app", "./deploy"))
    return config.load([path])


CONFIG_MAP = '{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "%s", "namespace": "default"}}\n'


def test_a_commit_signed_by_a_release_key_is_applied(make_worker, tmp_path: Path, repo: Repo,
                                                      kube_api: KubeAPIServer, ssh_keygen: str) -> None:
    key, public = signing_key(tmp_path, "release")
    sha = signed_commit(repo, key, {"deploy/signed.yaml": CONFIG_MAP % "signed"}, "a signed release")
    worker = make_worker(verified_config(tmp_path / "herald.yaml", repo.url, public))
    deliver(worker, push(sha))
    assert finals(drain_events(worker.bus)) == [("Kustomization", "app", "ReconciliationSucceeded")]
    assert kube_api.get_object("v1", "ConfigMap", "default", "signed") is not None


@pytest.mark.parametrize("signer", ["nobody", "someone-else"])
def test_an_unsigned_or_foreign_commit_is_never_applied(make_worker, tmp_path: Path, repo: Repo,
                                                        kube_api: KubeAPIServer, ssh_keygen: str, signer: str) -> None:
    _, public = signing_key(tmp_path, "release")
    other = signing_key(tmp_path, "intruder")[0] if signer == "someone-else" else None
    sha = signed_commit(repo, other, {"deploy/sneaky.yaml": CONFIG_MAP % "sneaky"}, "not a release")
    worker = make_worker(verified_config(tmp_path / "herald.yaml", repo.url, public))
    deliver(worker, push(sha))
    events = drain_events(worker.bus)
    source = next(e for e in events if e["involvedObject"]["kind"] == "GitRepository")
    assert source["severity"] == "error" and source["reason"] in ("InvalidCommitSignature", "InvalidGitObject")
    assert f"commit '{sha}'" in source["message"]
    assert finals(events)[-1] == ("Kustomization", "app", "ReconciliationFailed")
    assert kube_api.get_object("v1", "ConfigMap", "default", "sneaky") is None
