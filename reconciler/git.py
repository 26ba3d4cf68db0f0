"""Git sources: fetch a GitRepository's ref into a local cache and export one revision.

The real `git` CLI does the protocol work (file://, local paths, git://, http(s)://, ssh://
and scp-like `user@host:path`). The cache is one bare repository per GitRepository under the
state directory; each reconcile fetches only the tracked ref, shallow (`--depth=1`), so a push
costs one small fetch (the new commit's new objects) rather than a clone.

What `spec.ref` selects, in Flux's order of precedence (commit > name > semver > tag > branch),
and the revision string reported for it (Flux's):

- `commit`: that commit, fetched by id (`sha1:<sha>`; with `branch`, `<branch>@sha1:<sha>`).
  A commit already in the cache is not fetched again (commits are immutable).
- `name`: any reference, e.g. `refs/pull/1/head` (`refs/pull/1/head@sha1:<sha>`).
- `semver`: the highest tag matching the range (`v1.2.3@sha1:<sha>`): the remote's tags are
  listed (`git ls-remote --tags`), one is picked, and only that tag is fetched.
- `tag`, `branch`: that tag or branch (`v1.2.3@sha1:<sha>`, `main@sha1:<sha>`).

Every git process is bounded by `spec.timeout` (the whole process group is killed at the
deadline, so an ssh or http helper left behind cannot keep the call alive).

Credentials from the Secret never reach argv (visible in `ps`), a URL (written to logs and
error messages) or a config file: https credentials travel as an `http.<origin>.extraHeader`
set through GIT_CONFIG_* environment variables (so the header goes to that origin only), and
an ssh key is written to a 0600 file in a private temporary directory that is removed after
the call, handed to ssh through GIT_SSH_COMMAND with strict host key checking against exactly
the Secret's `known_hosts`. Error messages are redacted before they leave this module.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import fcntl
import functools
import hashlib
import io
import logging
import os
import posixpath
import re
import shlex
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from herald.model import GitRef, GitRepository
from reconciler.images.policy import (
    Constraints,
    PolicyError,
    parse_constraints,
    parse_version,
)
from reconciler.images.policy import Version as SemVersion

log = logging.getLogger("herald.reconciler.git")

_SHA = re.compile(r"^[0-9a-f]{40}$")
_SCP_LIKE = re.compile(r"^(?:[^@/:]+@)?[\w.-]+:(?!//)")
# Environment variables passed through to git although they start with GIT_: they point git at
# the operator's CA bundle and change nothing else.
_PASS_THROUGH = ("GIT_SSL_CAINFO", "GIT_SSL_CAPATH")
_LOCAL_TIMEOUT = 120.0


class GitError(Exception):
    """Fetching or reading a revision failed; the message is safe to show (no credentials).

    `permanent`: trying again soon cannot help (the repository does not exist, the
    credentials are refused, the host key is not trusted, the branch is not there): only a
    change, announced by the next push or found by the next interval, can. Retrying such an
    error five times in a few seconds only repeats the same failure event five times.
    """

    def __init__(self, message: str, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclass(frozen=True)
class Revision:
    ref: str  # branch or tag name as Flux prints it ("main"), a full name for spec.ref.name
    sha: str
    # spec.include: (included GitRepository, its commit, fromPath, toPath), copied into the tree
    includes: tuple[tuple[GitRepository, str, str, str], ...] = ()

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


def safe_url(url: str) -> str:
    """`url` as it may be shown: an http(s) URL loses its user info (user, password, token);
    an ssh URL keeps its user name (`git@`), which is not a secret."""
    if "://" not in url:
        return url
    parts = urlsplit(url)
    if parts.scheme in ("http", "https") and "@" in parts.netloc:
        return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    if "@" in parts.netloc and ":" in parts.netloc.rpartition("@")[0]:  # ssh://user:pw@host
        user = parts.netloc.rpartition("@")[0].partition(":")[0]
        return urlunsplit(parts._replace(netloc=f"{user}@{parts.netloc.rpartition('@')[2]}"))
    return url


def _is_ssh(url: str) -> bool:
    if "://" in url:
        return urlsplit(url).scheme in ("ssh", "git+ssh", "ssh+git")
    return bool(_SCP_LIKE.match(url)) and not url.startswith("/")


def _is_http(url: str) -> bool:
    return "://" in url and urlsplit(url).scheme in ("http", "https")


def _redact(text: str, secrets: list[str]) -> str:
    for s in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(s, "***")
    return re.sub(r"(https?://)[^/@\s'\"]+@", r"\1", text)


def parse_semver_range(text: str) -> Constraints:
    """A GitRepository's `spec.ref.semver`, read as Flux's source-controller reads it:
    Masterminds/semver constraints (`reconciler.images.policy`, which ImagePolicies use too), so
    `>=1.0.0-0` takes pre-releases and `^1.x-0` is a range, as in Flux."""
    if not text.strip():
        raise GitError("spec.ref.semver is empty", permanent=True)
    try:
        return parse_constraints(text.strip())
    except PolicyError as exc:
        why = str(exc).split(": ", 1)[-1]  # "invalid semver range '…': <why>"
        raise GitError(f"invalid semver range {text!r} in spec.ref.semver: {why}", permanent=True) from None


def tag_version(tag: str) -> SemVersion | None:
    """The version a tag names, as fluxcd/pkg's `version.ParseVersion` reads it (three parts,
    an optional `v`: "v1.2.3", "1.2.3-rc.1"; "v1.2" is no version for Flux), or None."""
    return parse_version(tag)


def highest_matching_tag(tags: list[str], spec: Constraints) -> str | None:
    """The tag naming the highest version `spec` accepts. Equal versions ("1.0.0" and "v1.0.0")
    are broken by name so that the choice is stable (Flux takes the one on the newer commit,
    which would cost a fetch of each)."""
    best: tuple[SemVersion, str] | None = None
    for tag in tags:
        v = tag_version(tag)
        if v is None or not spec.check(v):
            continue
        if best is None or (order := v.compare(best[0])) > 0 or (order == 0 and tag > best[1]):
            best = (v, tag)
    return best[1] if best else None


_BY_VERSION = functools.cmp_to_key(lambda a, b: a[0].compare(b[0]) or (a[1] > b[1]) - (a[1] < b[1]))


# ---- one git invocation's environment --------------------------------------------------

@dataclass
class _Session:
    """The environment for the git calls of one fetch: credentials, and the secrets that
    must never appear in what is shown. Files it writes go in `tmp`, removed on close."""

    env: dict[str, str]
    secrets: list[str] = field(default_factory=list)
    tmp: Path | None = None

    def close(self) -> None:
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None


def _base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if (not k.startswith("GIT_") or k in _PASS_THROUGH) and not k.startswith("SSH_ASKPASS")}
    env.update(
        GIT_TERMINAL_PROMPT="0",
        GIT_ASKPASS="true",  # any prompt for a user name or password gets an empty answer
        LC_ALL="C",
        # The operator's ~/.gitconfig and /etc/gitconfig (credential helpers, insteadOf
        # rewrites) have no say in what Herald fetches.
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_GLOBAL=os.devnull,
    )
    return env


def _set_config(env: dict[str, str], config: list[tuple[str, str]]) -> None:
    env["GIT_CONFIG_COUNT"] = str(len(config))
    for i, (k, v) in enumerate(config):
        env[f"GIT_CONFIG_KEY_{i}"], env[f"GIT_CONFIG_VALUE_{i}"] = k, v


def _write_private(path: Path, text: str, mode: int = 0o600) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def _local_session() -> _Session:
    env = _base_env()
    _set_config(env, [("protocol.file.allow", "always"), ("gc.autoDetach", "false"),
                      ("maintenance.autoDetach", "false")])
    return _Session(env)


def _relative_url(parent: str, relative: str) -> str:
    """A submodule's `../other.git` against its superproject's URL, as git resolves it: the
    superproject's URL taken as a folder (`https://host/org/app.git` + `../lib.git` is
    `https://host/org/lib.git`)."""
    parts = urlsplit(parent)
    if parts.scheme and parts.netloc or parts.scheme == "file":
        path = posixpath.normpath(posixpath.join(parts.path.rstrip("/") + "/", relative))
        return urlunsplit(parts._replace(path=path))
    return posixpath.normpath(posixpath.join(parent.rstrip("/") + "/", relative))


def _open_session(url: str, credentials: dict[str, str] | None, timeout: float) -> tuple[_Session, str]:
    """The session for fetching from `url`, and the URL to hand git (any user info of an
    http(s) URL moved into the Authorization header, so that no password reaches argv)."""
    creds = dict(credentials or {})
    env = _base_env()
    session = _Session(env)
    config: list[tuple[str, str]] = [
        ("protocol.file.allow", "always"),
        ("gc.autoDetach", "false"),          # `git fetch` may run `gc --auto`: in our time
        ("maintenance.autoDetach", "false"),
        ("credential.helper", ""),
    ]
    try:
        if _is_http(url):
            parts = urlsplit(url)
            if "@" in parts.netloc:
                userinfo, _, host = parts.netloc.rpartition("@")
                user, _, password = userinfo.partition(":")
                user, password = unquote(user), unquote(password)
                session.secrets += [userinfo, password if password else user]
                url = urlunsplit(parts._replace(netloc=host))
                parts = urlsplit(url)
                if not (creds.get("password") or creds.get("bearerToken")):
                    # A URL "https://<token>@host/…" carries the token as the user name.
                    creds.update(username=user if password else "git", password=password or user)
            origin = f"{parts.scheme}://{parts.netloc}/"
            bearer = creds.get("bearerToken", "").strip()
            user, password = creds.get("username", "").strip(), creds.get("password", "").strip()
            if bearer:
                config.append((f"http.{origin}.extraHeader", f"Authorization: Bearer {bearer}"))
                session.secrets.append(bearer)
            elif password:
                basic = base64.b64encode(f"{user or 'git'}:{password}".encode()).decode()
                config.append((f"http.{origin}.extraHeader", f"Authorization: Basic {basic}"))
                session.secrets += [password, basic, f"{user}:{password}"]
            ca = creds.get("ca.crt") or creds.get("caFile")
            if ca:
                session.tmp = Path(tempfile.mkdtemp(prefix="herald-git-"))
                _write_private(session.tmp / "ca.crt", ca)
                config.append((f"http.{origin}.sslCAInfo", str(session.tmp / "ca.crt")))
                for k in _PASS_THROUGH:  # the environment's CA bundle would win over the config
                    env.pop(k, None)
        elif _is_ssh(url):
            env["GIT_SSH_COMMAND"] = _ssh_command(session, creds, timeout)
            env["GIT_SSH_VARIANT"] = "ssh"
        _set_config(env, config)
    except BaseException:
        session.close()
        raise
    return session, url


def _ssh_command(session: _Session, creds: dict[str, str], timeout: float) -> str:
    opts = ["-o", "StrictHostKeyChecking=yes", "-o", "UpdateHostKeys=no",
            "-o", "PasswordAuthentication=no", "-o", "KbdInteractiveAuthentication=no",
            "-o", "PreferredAuthentications=publickey",
            "-o", f"ConnectTimeout={max(1, int(timeout))}"]
    identity, known_hosts = creds.get("identity", ""), creds.get("known_hosts", "")
    if not creds:
        # No Secret: the process's own ssh keys and known_hosts, but never trust on first use.
        return shlex.join(["ssh", *opts, "-o", "BatchMode=yes"])
    if not identity.strip():
        raise GitError("the Secret for an ssh URL needs an 'identity' key (the private key)", permanent=True)
    if not known_hosts.strip():
        raise GitError("the Secret for an ssh URL needs a 'known_hosts' key: Herald checks the "
                       "server's host key strictly and never trusts a key on first use", permanent=True)
    opts[:0] = ["-F", os.devnull]  # with a Secret, the operator's ~/.ssh/config has no say
    session.tmp = Path(tempfile.mkdtemp(prefix="herald-git-"))  # 0700
    key, hosts = session.tmp / "identity", session.tmp / "known_hosts"
    key_text = identity.replace("\r\n", "\n").strip() + "\n"  # ssh refuses a key without one
    _write_private(key, key_text)
    _write_private(hosts, known_hosts.replace("\r\n", "\n").strip() + "\n")
    session.secrets += [key_text.strip(), *(line.strip() for line in key_text.splitlines()
                                             if len(line.strip()) >= 16 and "PRIVATE KEY" not in line)]
    opts += ["-i", str(key), "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none",
             "-o", f"UserKnownHostsFile={hosts}", "-o", f"GlobalKnownHostsFile={os.devnull}"]
    password = creds.get("password", "")
    if password:
        # An encrypted key: ssh asks SSH_ASKPASS for the passphrase, which reads it from its
        # environment (readable by this user only), never from argv or a file.
        askpass = session.tmp / "askpass"
        _write_private(askpass, '#!/bin/sh\nprintf \'%s\\n\' "$HERALD_SSH_KEY_PASSPHRASE"\n', 0o700)
        session.env.update(SSH_ASKPASS=str(askpass), SSH_ASKPASS_REQUIRE="force",
                           HERALD_SSH_KEY_PASSPHRASE=password, DISPLAY=session.env.get("DISPLAY", ":0"))
        session.env.pop("SSH_AUTH_SOCK", None)
        session.secrets.append(password)
        opts += ["-o", "BatchMode=no", "-o", "NumberOfPasswordPrompts=1"]
    else:
        opts += ["-o", "BatchMode=yes"]
    _check_identity(session, key, bool(password))
    return shlex.join(["ssh", *opts])


def _check_identity(session: _Session, key: Path, has_password: bool) -> None:
    """Load the key as ssh will (`ssh-keygen -y`, passphrase through the same askpass), so that
    a bad key or passphrase is named as such instead of ending in "Permission denied"."""
    args = ["ssh-keygen", "-y", "-f", str(key), *([] if has_password else ["-P", ""])]
    try:
        done = subprocess.run(args, env=session.env, stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=15, start_new_session=True, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return  # no ssh-keygen: ssh itself will say what is wrong
    if done.returncode == 0:
        return
    err = done.stderr.lower()
    if "passphrase" in err and not has_password:
        raise GitError("the Secret's ssh identity is encrypted: the Secret needs its 'password'", permanent=True)
    if "passphrase" in err:
        raise GitError("the Secret's ssh identity could not be decrypted with the Secret's 'password'",
                       permanent=True)
    raise GitError("the Secret's ssh identity is not a private key ssh can load", permanent=True)


# ---- what a GitRef selects -------------------------------------------------------------

@dataclass(frozen=True)
class _Target:
    kind: str      # "branch", "tag", "reference" (spec.ref.name)
    name: str      # as shown in the revision
    remote: str    # the full remote reference
    local: str     # where the cache keeps it

    @property
    def refspec(self) -> str:
        return f"+{self.remote}:{self.local}"


def _check_ref_name(git: str, kind: str, name: str, full: str) -> None:
    bad = (not name or name.startswith("-") or any(c in name for c in "\n\r\0")
           or subprocess.run([git, "check-ref-format", full], capture_output=True, check=False).returncode != 0)
    if bad:
        raise GitError(f"invalid {kind} name {name!r} in spec.ref", permanent=True)


# ---- the cache -------------------------------------------------------------------------

class GitCache:
    def __init__(self, root: Path, git: str = "git"):
        self.root = root
        self.git = git

    def _repo_dir(self, repo: GitRepository) -> Path:
        return self.root / repo.meta.namespace / f"{repo.meta.name}.git"

    # -- running git --

    def _run(self, args: list[str], cwd: Path, session: _Session, timeout: float, *,
             what: str = "", stdout_bytes: bool = False, stdin: bytes | None = None) -> tuple[int, bytes | str, str]:
        """Run git; return (exit code, stdout, stderr). Raises GitError on a timeout only.

        git runs in its own process group, all of which is killed at the deadline: a plain
        `subprocess.run(timeout=…)` kills git but then waits for its ssh or http helper,
        which still holds the pipes, for as long as that hangs."""
        try:
            proc = subprocess.Popen([self.git, *args], cwd=cwd, env=session.env,
                                    stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        except OSError as exc:
            raise GitError(f"cannot run {self.git}: {exc.strerror}") from None
        try:
            out, err = proc.communicate(stdin, timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.communicate(timeout=5)
            raise GitError(f"git {args[0]}{' ' + what if what else ''} timed out after {timeout:g}s "
                           "(spec.timeout)") from None
        except BaseException:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        return proc.returncode, (out if stdout_bytes else out.decode(errors="replace")), \
            err.decode(errors="replace")

    def _must(self, args: list[str], cwd: Path, session: _Session, timeout: float = _LOCAL_TIMEOUT,
              stdout_bytes: bool = False, stdin: bytes | None = None) -> bytes | str:
        """A local git operation that must succeed."""
        code, out, err = self._run(args, cwd, session, timeout, stdout_bytes=stdout_bytes, stdin=stdin)
        if code != 0:
            raise GitError(_redact(f"git {args[0]} failed: {_tail(err)}", session.secrets))
        return out

    def _failure(self, op: str, err: str, url: str, session: _Session, target: _Target | None = None,
                 sha: str = "") -> GitError:
        """A GitError naming what failed, from a remote git operation's stderr."""
        shown, detail = safe_url(url), _tail(err)
        low = err.lower()
        permanent = True
        if any(s in low for s in ("does not appear to be a git repository", "repository not found",
                                  "returned error: 404", "not found: repository", "no such repository")) \
                or (" not found" in low and "repository '" in low):
            msg = f"repository {shown} not found ({detail})"
        elif "couldn't find remote ref" in low and target is not None:
            msg = f"{target.kind} '{target.name}' not found in {shown}"
        elif sha and ("not our ref" in low or "couldn't find remote ref" in low
                      or "no such remote ref" in low or "unadvertised object" in low):
            msg = f"commit {sha} not found in {shown}"
        elif "host key verification failed" in low or "host identification has changed" in low \
                or "no matching host key" in low or ("host key" in low and "strict checking" in low):
            msg = (f"ssh host key verification failed for {shown}: the server's host key is not "
                   f"in the Secret's known_hosts ({detail})")
        elif "load key" in low:
            msg = (f"the Secret's ssh identity for {shown} could not be used: invalid private key, "
                   f"or wrong 'password' for an encrypted one ({detail})")
        elif any(s in low for s in ("authentication failed", "could not read username",
                                    "could not read password", "permission denied (",
                                    "permission denied, please", "returned error: 401",
                                    "returned error: 403")):
            msg = f"authentication to {shown} failed ({detail})"
        else:
            msg = f"git {op} failed for {shown}: {detail}"
            permanent = False  # the network, the server, a timeout: worth trying again
        if not msg.startswith("git "):
            msg = f"git {op} failed: {msg}"
        return GitError(_redact(msg, session.secrets), permanent=permanent)

    # -- locking --

    @contextlib.contextmanager
    def _locked(self, d: Path, timeout: float) -> Iterator[None]:
        """One fetch at a time per cache repository, across threads and processes."""
        d.parent.mkdir(parents=True, exist_ok=True)
        with open(d.parent / f"{d.name}.lock", "a") as f:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EACCES) or time.monotonic() >= deadline:
                        raise GitError(f"another fetch into the cache {d.name} is still running") from None
                    time.sleep(0.05)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    # -- the public interface --

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
        ref, timeout = repo.ref, float(repo.timeout)
        spec = parse_semver_range(ref.semver) if ref.semver and not (ref.commit or ref.name) else None
        if ref.commit and not _SHA.match(ref.commit):
            raise GitError(f"spec.ref.commit {ref.commit!r} is not a full 40-character SHA-1", permanent=True)
        d = self._repo_dir(repo)
        with self._locked(d, timeout * 2 + wait_for_sha + 10):
            session, git_url = _open_session(url, credentials, timeout)
            try:
                if not (d / "HEAD").exists():
                    d.mkdir(parents=True, exist_ok=True)
                    self._must(["init", "--bare", "--quiet"], d, session)
                if ref.commit:
                    return self._fetch_commit(ref, d, git_url, session, timeout)
                deadline = time.monotonic() + wait_for_sha
                while True:
                    target = self._target(ref, spec, d, git_url, session, timeout)
                    self._fetch_target(target, d, git_url, session, timeout)
                    sha = str(self._must(["rev-parse", "--verify", "--quiet", f"{target.local}^{{commit}}"],
                                         d, session)).strip()
                    if not want_sha or sha == want_sha or self._has(d, want_sha, session) \
                            or self._remote_has(git_url, want_sha, d, session, timeout) \
                            or time.monotonic() >= deadline:
                        break
                    time.sleep(0.5)
                if not _SHA.match(sha):
                    raise GitError(f"unexpected revision {sha!r} for {target.kind} {target.name}")
                self._forget_other_refs(d, {target.local}, session)
                return Revision(target.name, sha)
            finally:
                session.close()

    def _target(self, ref: GitRef, spec: Constraints | None, d: Path, url: str, session: _Session,
                timeout: float) -> _Target:
        if ref.name:
            if not ref.name.startswith("refs/"):
                raise GitError(f"spec.ref.name {ref.name!r} must be a full reference, e.g. "
                               "refs/heads/main, refs/tags/v1.0.0 or refs/pull/1/head", permanent=True)
            _check_ref_name(self.git, "reference", ref.name, ref.name)
            return _Target("reference", ref.name, ref.name, ref.name)
        if spec is not None:
            tag = self._pick_semver_tag(ref.semver, spec, d, url, session, timeout)
            return _Target("tag", tag, f"refs/tags/{tag}", f"refs/tags/{tag}")
        if ref.tag:
            _check_ref_name(self.git, "tag", ref.tag, f"refs/tags/{ref.tag}")
            return _Target("tag", ref.tag, f"refs/tags/{ref.tag}", f"refs/tags/{ref.tag}")
        branch = ref.branch or "master"
        _check_ref_name(self.git, "branch", branch, f"refs/heads/{branch}")
        return _Target("branch", branch, f"refs/heads/{branch}", f"refs/heads/{branch}")

    def _ls_remote(self, args: list[str], d: Path, url: str, session: _Session, timeout: float,
                   target: _Target | None = None) -> list[tuple[str, str]]:
        code, out, err = self._run(["ls-remote", *args, "--", url, *([target.remote] if target else [])],
                                   d, session, timeout, what=f"from {safe_url(url)}")
        if code != 0:
            raise self._failure("ls-remote", err, url, session, target)
        refs = []
        for line in str(out).splitlines():
            sha, _, name = line.partition("\t")
            if _SHA.match(sha) and name:
                refs.append((sha, name))
        return refs

    def _pick_semver_tag(self, text: str, spec: Constraints, d: Path, url: str, session: _Session,
                         timeout: float) -> str:
        refs = self._ls_remote(["--tags", "--refs"], d, url, session, timeout)
        tags = [name.removeprefix("refs/tags/") for _, name in refs]
        tag = highest_matching_tag(tags, spec)
        if tag is None:
            versions = sorted(((v, t) for t in tags if (v := tag_version(t)) is not None), key=_BY_VERSION)
            seen = f"the highest version tag is {versions[-1][1]}" if versions else "it has no version tags"
            raise GitError(f"no tag in {safe_url(url)} matches semver {text!r} ({seen})", permanent=True)
        return tag

    def _fetch_target(self, target: _Target, d: Path, url: str, session: _Session, timeout: float) -> None:
        code, _, err = self._run(["fetch", "--quiet", "--no-tags", "--depth=1", "--", url, target.refspec],
                                 d, session, timeout, what=f"from {safe_url(url)}")
        if code != 0:
            raise self._failure("fetch", err, url, session, target)

    def _fetch_commit(self, ref: GitRef, d: Path, url: str, session: _Session, timeout: float) -> Revision:
        """A pinned commit: fetched by id (shallow) unless the cache has it. With a branch, the
        branch must exist on the remote (checked with one ref listing, also when cached)."""
        sha = ref.commit
        if ref.branch:
            branch = _Target("branch", ref.branch, f"refs/heads/{ref.branch}", f"refs/heads/{ref.branch}")
            _check_ref_name(self.git, "branch", ref.branch, branch.remote)
            if not any(name == branch.remote for _, name in
                       self._ls_remote(["--heads"], d, url, session, timeout, branch)):
                raise GitError(f"git ls-remote failed: branch '{ref.branch}' not found in {safe_url(url)}",
                               permanent=True)
        if not self._has(d, sha, session):
            code, _, err = self._run(["fetch", "--quiet", "--no-tags", "--depth=1", "--", url, sha],
                                     d, session, timeout, what=f"from {safe_url(url)}")
            if code != 0:
                raise self._failure("fetch", err, url, session, sha=sha)
            if not self._has(d, sha, session):
                raise GitError(f"commit {sha} not found in {safe_url(url)}", permanent=True)
        local = "refs/herald/commit"
        self._must(["update-ref", local, sha], d, session)
        self._forget_other_refs(d, {local}, session)
        return Revision(ref.branch, sha)

    def _forget_other_refs(self, d: Path, keep: set[str], session: _Session) -> None:
        """Drop refs of earlier specs (another branch, a lower semver tag) so that `git gc`
        may collect what only they kept; the tracked ref stays, as the base of the next
        fetch's negotiation."""
        listed = str(self._must(["for-each-ref", "--format=%(refname)"], d, session)).split()
        stale = [r for r in listed if r not in keep]
        for r in stale:
            self._must(["update-ref", "-d", r], d, session)

    def _remote_has(self, url: str, sha: str, d: Path, session: _Session, timeout: float) -> bool:
        """Whether the remote serves `sha` (fetched by id, shallow). When it does, the webhook
        named an older commit than the ref's tip (pushes in quick succession): the tip is what
        to apply, with no reason to wait."""
        try:
            code, _, _ = self._run(["fetch", "--quiet", "--no-tags", "--depth=1", "--", url, sha],
                                   d, session, timeout)
        except GitError:
            return False
        return code == 0

    def _has(self, d: Path, sha: str, session: _Session) -> bool:
        if not _SHA.match(sha) or not (d / "HEAD").exists():
            return False
        code, _, _ = self._run(["cat-file", "-e", f"{sha}^{{commit}}"], d, session, _LOCAL_TIMEOUT)
        return code == 0

    def git_dir(self, repo: GitRepository) -> Path:
        """The bare repository the cache keeps for `repo` (read-only use: signature checks)."""
        return self._repo_dir(repo)

    def ref_object(self, repo: GitRepository, ref: str) -> str:
        """The object a local ref points at (a tag object for an annotated tag), or ""."""
        code, out, _ = self._run(["rev-parse", "--verify", "--quiet", ref], self._repo_dir(repo), _local_session(), 30)
        sha = str(out).strip()
        return sha if code == 0 and _SHA.match(sha) else ""

    def has_commit(self, repo: GitRepository, sha: str) -> bool:
        return self._has(self._repo_dir(repo), sha, _local_session())

    def export(self, repo: GitRepository, sha: str, dest: Path, submodules: bool = False) -> Path:
        """Write the tree of `sha` into `dest` (fresh), via `git archive` (no work tree state);
        with `submodules`, each submodule's tree at its recorded commit too (`fetch_submodules`
        fetched them)."""
        self._export_dir(self._repo_dir(repo), sha, dest, submodules)
        return dest

    def _export_dir(self, d: Path, sha: str, dest: Path, submodules: bool) -> None:
        if not _SHA.match(sha):
            raise GitError(f"not a commit id: {sha!r}")
        data = self._must(["archive", "--format=tar", sha], d, _local_session(), stdout_bytes=True)
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:  # type: ignore[arg-type]
            try:
                tar.extractall(dest, filter="data")  # refuses absolute paths and links outside dest
            except tarfile.FilterError as exc:
                raise GitError(f"revision {sha[:12]} cannot be checked out safely: {exc}") from None
        if submodules:
            for path, sub_sha, _ in self._gitlinks(d, sha, ""):
                target = (dest / path).resolve()
                if not target.is_relative_to(dest.resolve()):
                    raise GitError(f"submodule path {path!r} points outside the repository", permanent=True)
                module = self._module_dir(d, path)
                if not self._has(module, sub_sha, _local_session()):
                    raise GitError(f"submodule {path} at {sub_sha[:12]} was not fetched")
                self._export_dir(module, sub_sha, target, True)

    # -- submodules (GitRepository spec.recurseSubmodules) --

    @staticmethod
    def _module_dir(d: Path, path: str) -> Path:
        return d.parent / f"{d.name}.modules" / f"{hashlib.sha256(path.encode()).hexdigest()[:24]}.git"

    def _gitlinks(self, d: Path, sha: str, parent_url: str) -> list[tuple[str, str, str]]:
        """(path, commit, url) of each submodule of commit `sha`, the url from its .gitmodules,
        a relative one (`../other.git`) taken relative to `parent_url`, as git resolves it."""
        session = _local_session()
        listed = self._must(["ls-tree", "-r", "-z", "--full-tree", sha], d, session, stdout_bytes=True)
        links = []
        for record in listed.split(b"\0"):  # type: ignore[union-attr]
            meta, _, name = record.partition(b"\t")
            if meta.startswith(b"160000 commit "):
                links.append((name.decode("utf-8", "surrogateescape"), meta.split()[2].decode()))
        if not links:
            return []
        code, out, _ = self._run(["config", "--blob", f"{sha}:.gitmodules", "--get-regexp",
                                  r"^submodule\..*\.(path|url)$"], d, session, _LOCAL_TIMEOUT)
        paths: dict[str, str] = {}
        urls: dict[str, str] = {}
        for line in str(out).splitlines() if code == 0 else []:
            key, _, value = line.partition(" ")
            name, _, field = key.removeprefix("submodule.").rpartition(".")
            (paths if field == "path" else urls)[name] = value
        by_path = {p: urls.get(n, "") for n, p in paths.items()}
        out_links = []
        for path, sub_sha in links:
            url = by_path.get(path, "")
            if url.startswith(("./", "../")) and parent_url:
                url = _relative_url(parent_url, url)
            out_links.append((path, sub_sha, url))
        return out_links

    def fetch_submodules(self, repo: GitRepository, url: str, credentials: dict[str, str] | None, sha: str,
                         depth: int = 0) -> None:
        """Fetch every submodule of `sha` (recursively) at the commit it records, as
        source-controller does with `recurseSubmodules`: with the GitRepository's credentials
        when the submodule is on the same host, none otherwise."""
        self._fetch_modules(self._repo_dir(repo), url, credentials, sha, float(repo.timeout), depth)

    def _fetch_modules(self, d: Path, url: str, credentials: dict[str, str] | None, sha: str, timeout: float,
                       depth: int) -> None:
        if depth > 8:
            raise GitError("submodules nest deeper than 8 levels", permanent=True)
        for path, sub_sha, sub_url in self._gitlinks(d, sha, url):
            if not sub_url:
                raise GitError(f"submodule {path}: no url in .gitmodules", permanent=True)
            module = self._module_dir(d, path)
            same_host = urlsplit(sub_url).netloc == urlsplit(url).netloc
            with self._locked(module, timeout * 2 + 10):
                session, git_url = _open_session(sub_url, credentials if same_host else None, timeout)
                try:
                    if not (module / "HEAD").exists():
                        module.mkdir(parents=True, exist_ok=True)
                        self._must(["init", "--bare", "--quiet"], module, session)
                    if not self._has(module, sub_sha, session):
                        code, _, err = self._run(["fetch", "--quiet", "--no-tags", "--depth=1", "--", git_url,
                                                  sub_sha], module, session, timeout, what=f"from {safe_url(git_url)}")
                        if code != 0 or not self._has(module, sub_sha, session):
                            raise self._failure("fetch", err or "commit not served", git_url, session, sha=sub_sha)
                finally:
                    session.close()
            self._fetch_modules(module, sub_url, credentials if same_host else None, sub_sha, timeout, depth + 1)

    def list_tree(self, repo: GitRepository, sha: str, path: str) -> list[TreeEntry]:
        """The files under `path` (relative to the repository's root) in the tree of `sha`.

        Read from the object database: nothing is written, which matters because creating a
        file costs more than reading and parsing it (0.7 ms each on the disks measured in
        bench/RESULTS.md)."""
        d = self._repo_dir(repo)
        if not _SHA.match(sha):
            raise GitError(f"not a commit id: {sha!r}")
        pathspec = [] if path in ("", ".") else ["--", path]
        out = self._must(["ls-tree", "-r", "-z", "--full-tree", sha, *pathspec], d, _local_session(),
                         stdout_bytes=True)
        entries = []
        for record in out.split(b"\0"):  # type: ignore[union-attr]
            if not record:
                continue
            meta, _, name = record.partition(b"\t")
            mode, kind, blob = meta.decode().split(" ")
            entries.append(TreeEntry(name.decode("utf-8", "surrogateescape"), mode, kind, blob))
        return entries

    def read_blobs(self, repo: GitRepository, blobs: list[str]) -> list[bytes]:
        """The contents of these blobs, in order, through one `git cat-file --batch`."""
        if not blobs:
            return []
        out = self._must(["cat-file", "--batch"], self._repo_dir(repo), _local_session(), stdout_bytes=True,
                         stdin="".join(f"{b}\n" for b in blobs).encode())
        assert isinstance(out, bytes)
        contents, at = [], 0
        for blob in blobs:
            end = out.index(b"\n", at)
            header = out[at:end].split(b" ")
            if len(header) != 3 or header[1] != b"blob" or header[0].decode() != blob:
                raise GitError(f"git cat-file: unexpected answer for {blob}: {out[at:end][:100]!r}")
            size = int(header[2])
            contents.append(out[end + 1:end + 1 + size])
            at = end + 1 + size + 1  # the content, then a newline
        return contents


    # -- writing (image automation) --

    def commit_files(self, repo: GitRepository, base: str, changes: dict[str, bytes], message: str,
                     author: Author) -> str:
        """A commit on top of `base` (a commit in the cache) whose tree is base's with each file
        of `changes` (path → new content, its mode kept) replaced; its sha.

        Made without a work tree, through a temporary index (`read-tree`, `update-index`,
        `write-tree`, `commit-tree`): nothing of the repository is checked out, so nothing but
        the changed blobs is written, and no other process's checkout can be disturbed."""
        d = self._repo_dir(repo)
        if not _SHA.match(base):
            raise GitError(f"not a commit id: {base!r}")
        session = _local_session()
        with tempfile.TemporaryDirectory(prefix="herald-index-") as tmp:
            session.env["GIT_INDEX_FILE"] = str(Path(tmp) / "index")
            self._must(["read-tree", base], d, session)
            modes = {e.path: e.mode for e in self.list_tree(repo, base, "")}
            for path, content in sorted(changes.items()):
                blob = str(self._must(["hash-object", "-w", "--stdin"], d, session, stdin=content)).strip()
                self._must(["update-index", "--add", "--cacheinfo", f"{modes.get(path, '100644')},{blob},{path}"],
                           d, session)
            tree = str(self._must(["write-tree"], d, session)).strip()
            session.env.update(GIT_AUTHOR_NAME=author.name, GIT_AUTHOR_EMAIL=author.email,
                               GIT_COMMITTER_NAME=author.name, GIT_COMMITTER_EMAIL=author.email)
            return str(self._must(["commit-tree", tree, "-p", base], d, session,
                                  stdin=message.encode())).strip()

    def push(self, repo: GitRepository, url: str, credentials: dict[str, str] | None, sha: str,
             branch: str) -> bool:
        """Push commit `sha` (in the cache) to the remote's `refs/heads/<branch>`, as a
        fast-forward only: never `--force`, so a branch that moved on keeps what others pushed.
        False when the remote refused it for that reason (fetch, redo the change on its new head,
        try again); GitError for anything else (authentication, a protected branch, the network:
        `permanent` says which)."""
        d = self._repo_dir(repo)
        target = _Target("branch", branch, f"refs/heads/{branch}", f"refs/heads/{branch}")
        _check_ref_name(self.git, "branch", branch, target.remote)
        timeout = float(repo.timeout)
        with self._locked(d, timeout * 2 + 10):
            session, git_url = _open_session(url, credentials, timeout)
            try:
                code, out, err = self._run(["push", "--porcelain", "--", git_url, f"{sha}:{target.remote}"], d,
                                           session, timeout, what=f"to {safe_url(url)}")
            finally:
                session.close()
        if code == 0:
            return True
        # --porcelain reports each ref on stdout: "!\t<src>:<dst>\t[rejected] (fetch first)".
        low = f"{out}\n{err}".lower()
        if any(s in low for s in ("non-fast-forward", "fetch first", "\t[rejected]", "cannot lock ref",
                                  "stale info")):
            return False
        refused = [ln.split("\t")[-1] for ln in str(out).splitlines() if ln.startswith("!")]
        raise self._failure("push", "\n".join([err, *refused]), url, session, target)


@dataclass(frozen=True)
class Author:
    """Who image automation commits as (ImageUpdateAutomation `git.commit.author`)."""

    name: str
    email: str


@dataclass(frozen=True)
class TreeEntry:
    """One entry of `git ls-tree -r`: mode 100644/100755 file, 120000 symlink, 160000 submodule."""

    path: str
    mode: str
    kind: str
    blob: str

    @property
    def is_file(self) -> bool:
        return self.kind == "blob" and self.mode in ("100644", "100755")


def _tail(stderr: str, lines: int = 4) -> str:
    """The lines of git's stderr worth showing (hints and progress dropped)."""
    kept = [ln.strip() for ln in stderr.replace("\r", "\n").splitlines()
            if ln.strip() and not ln.lstrip().startswith(("hint:", "remote: Counting", "remote: Compressing"))]
    # ssh's failures end in git's generic advice, which says nothing the line before did not.
    useful = [ln for ln in kept if ln not in _BOILERPLATE]
    return " | ".join((useful or kept)[-lines:]) or "no output from git"


_BOILERPLATE = {
    "fatal: Could not read from remote repository.",
    "Please make sure you have the correct access rights",
    "and the repository exists.",
}
