"""Git sources: fetch a GitRepository's ref into a local cache and export one revision.

The real `git` CLI does the protocol work. The cache is one bare repository per
GitRepository under the state directory; each reconcile fetches only the tracked ref, shallow,
so a push costs one small fetch rather than a clone. Credentials from the Secret reach git
through GIT_CONFIG_* environment variables, never through argv (visible in `ps`) or the
URL (written to logs and .git/config).
"""

from __future__ import annotations

import base64
import io
import logging
import os
import re
import shutil
import subprocess
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

from herald.model import GitRepository

log = logging.getLogger("herald.reconciler.git")

_SHA = re.compile(r"^[0-9a-f]{40}$")


class GitError(Exception):
    """Fetching or reading a revision failed; the message is safe to show (no credentials)."""


@dataclass(frozen=True)
class Revision:
    ref: str  # branch or tag name as Flux prints it ("main")
    sha: str

    def __str__(self) -> str:
        # Flux writes "main@sha1:<sha>", and plain "sha1:<sha>" for a commit with no branch.
        return f"{self.ref}@sha1:{self.sha}" if self.ref else f"sha1:{self.sha}"


def resolve_url(url: str, config_source: str) -> str:
    """A relative path is taken relative to the configuration file that named it.

    That lets an example config point at a repository next to it; every other URL (https,
    ssh, file://, absolute paths) is passed to git unchanged.
    """
    if "://" in url or url.startswith("/") or re.match(r"^[\w.-]+@[\w.-]+:", url):
        return url
    base = Path(config_source.rpartition(":")[0] or ".").resolve().parent
    return str((base / url).resolve())


def _redact(text: str, secrets: list[str]) -> str:
    for s in secrets:
        if s:
            text = text.replace(s, "***")
    return re.sub(r"(https?://)[^/@\s]+@", r"\1***@", text)


class GitCache:
    def __init__(self, root: Path, git: str = "git"):
        self.root = root
        self.git = git

    def _repo_dir(self, repo: GitRepository) -> Path:
        return self.root / repo.meta.namespace / f"{repo.meta.name}.git"

    def _run(self, args: list[str], cwd: Path, env: dict[str, str], timeout: float,
             secrets: list[str], stdout_bytes: bool = False) -> subprocess.CompletedProcess:
        try:
            proc = subprocess.run([self.git, *args], cwd=cwd, env=env, capture_output=True,
                                  timeout=timeout, text=not stdout_bytes)
        except subprocess.TimeoutExpired:
            raise GitError(f"git {args[0]} timed out after {timeout:.0f}s") from None
        if proc.returncode != 0:
            err = proc.stderr if isinstance(proc.stderr, str) else proc.stderr.decode(errors="replace")
            raise GitError(_redact(f"git {args[0]} failed: {err.strip()}", secrets))
        return proc

    def _env(self, credentials: dict[str, str] | None) -> tuple[dict[str, str], list[str]]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
        env.update(GIT_TERMINAL_PROMPT="0", GIT_ASKPASS="true", LC_ALL="C")
        secrets: list[str] = []
        config: list[tuple[str, str]] = [("protocol.file.allow", "always")]
        if credentials:
            user, password = credentials.get("username", ""), credentials.get("password", "")
            bearer = credentials.get("bearerToken", "")
            if bearer:
                config.append(("http.extraHeader", f"Authorization: Bearer {bearer}"))
                secrets.append(bearer)
            elif password:
                basic = base64.b64encode(f"{user or 'git'}:{password}".encode()).decode()
                config.append(("http.extraHeader", f"Authorization: Basic {basic}"))
                secrets += [password, basic]
        env["GIT_CONFIG_COUNT"] = str(len(config))
        for i, (k, v) in enumerate(config):
            env[f"GIT_CONFIG_KEY_{i}"], env[f"GIT_CONFIG_VALUE_{i}"] = k, v
        return env, secrets

    def fetch(
        self,
        repo: GitRepository,
        url: str,
        credentials: dict[str, str] | None = None,
        want_sha: str = "",
        wait_for_sha: float = 5.0,
    ) -> Revision:
        """Fetch the tracked ref and return the revision it points at.

        `want_sha` is the commit a webhook named. Git hosts sometimes send the webhook a
        moment before every replica serves the commit, so when it is missing we fetch again
        for up to `wait_for_sha` seconds before settling for what the remote has.
        """
        ref = repo.ref
        if ref.semver or ref.name:
            raise GitError("spec.ref.semver and spec.ref.name are not supported yet; use branch, tag or commit")
        d = self._repo_dir(repo)
        env, secrets = self._env(credentials)
        if not (d / "HEAD").exists():
            d.mkdir(parents=True, exist_ok=True)
            self._run(["init", "--bare", "--quiet"], d, env, 30, secrets)
        if ref.commit:
            name, refspec, local = ref.branch, ref.commit, ""
        elif ref.tag:
            name, refspec, local = ref.tag, f"+refs/tags/{ref.tag}:refs/tags/{ref.tag}", f"refs/tags/{ref.tag}"
        else:
            name, refspec = ref.branch, f"+refs/heads/{ref.branch}:refs/heads/{ref.branch}"
            local = f"refs/heads/{ref.branch}"

        deadline = time.monotonic() + wait_for_sha
        while True:
            self._run(["fetch", "--quiet", "--no-tags", "--depth=1", "--", url, refspec], d, env,
                      repo.timeout, secrets)
            sha = ref.commit or self._run(["rev-parse", f"{local}^{{commit}}"], d, env, 30,
                                          secrets).stdout.strip()
            if not want_sha or sha == want_sha or self.has_commit(repo, want_sha) \
                    or self._remote_has(url, want_sha, d, env, repo.timeout, secrets) \
                    or time.monotonic() >= deadline:
                break
            time.sleep(0.5)
        if not _SHA.match(sha):
            raise GitError(f"unexpected revision {sha!r} for {name}")
        return Revision(name, sha)

    def _remote_has(self, url: str, sha: str, d: Path, env: dict[str, str], timeout: float,
                    secrets: list[str]) -> bool:
        """Whether the remote serves `sha` (fetched by id, shallow). When it does, the webhook
        named an older commit than the ref's tip (pushes in quick succession): the tip is what
        to apply, with no reason to wait."""
        try:
            self._run(["fetch", "--quiet", "--no-tags", "--depth=1", "--", url, sha], d, env, timeout, secrets)
        except GitError:
            return False
        return True

    def has_commit(self, repo: GitRepository, sha: str) -> bool:
        d = self._repo_dir(repo)
        return subprocess.run([self.git, "cat-file", "-e", f"{sha}^{{commit}}"], cwd=d,
                              capture_output=True).returncode == 0

    def export(self, repo: GitRepository, sha: str, dest: Path) -> Path:
        """Write the tree of `sha` into `dest` (fresh), via `git archive` (no work tree state)."""
        d = self._repo_dir(repo)
        env, secrets = self._env(None)
        proc = self._run(["archive", "--format=tar", sha], d, env, 120, secrets, stdout_bytes=True)
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        with tarfile.open(fileobj=io.BytesIO(proc.stdout)) as tar:
            tar.extractall(dest, filter="data")  # refuses absolute paths and links outside dest
        return dest
