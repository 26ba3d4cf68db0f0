"""Git sources against real remotes: local bare repositories, git's smart HTTP (`git
http-backend` behind an authenticating server written here), a real `sshd`, and a remote that
hangs. Every scenario runs the real `git` CLI through `reconciler.git.GitCache`."""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import os
import shlex
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from herald import config
from herald.bus import open_bus
from herald.messages import ReconcileRequest
from herald.model import GitRef, GitRepository, Meta
from reconciler.git import GitCache, GitError, Revision, parse_semver_range, safe_url
from reconciler.worker import Reconciler
from tests.fixtures_herald import Repo, git, make_repo
from tests.fixtures_sshd import Sshd, keygen, sshd  # noqa: F401  (sshd: the fixture)

PASSWORD = "pa55-w0rd-Zq9!x"
TOKEN = "tok_3f9a1c7e5b2d4f6a8c0e"


def source(url: str, timeout: float = 30.0, **ref: str) -> GitRepository:
    return GitRepository(meta=Meta(name="app", namespace="flux-system"), url=url,
                         ref=GitRef(**ref) if ref else GitRef(branch="main"), timeout=timeout)


@pytest.fixture
def cache(tmp_path: Path) -> GitCache:
    return GitCache(tmp_path / "state" / "git")


def cached(cache: GitCache, *args: str) -> str:
    d = cache.root / "flux-system" / "app.git"
    return subprocess.run(["git", *args], cwd=d, check=True, capture_output=True, text=True).stdout.strip()


def tag(repo: Repo, name: str, sha: str = "", annotated: bool = False) -> None:
    git("tag", *(["-a", "-m", f"release {name}"] if annotated else []), name, sha or repo.head, cwd=repo.work)
    git("push", "-q", "origin", f"refs/tags/{name}", cwd=repo.work)


def commit_elsewhere(repo: Repo, ref: str, message: str = "elsewhere") -> str:
    """A commit off main, pushed to `ref` only (as a pull request's head)."""
    sha = git("commit-tree", "HEAD^{tree}", "-p", "HEAD", "-m", message, cwd=repo.work)
    git("push", "-q", "origin", f"{sha}:{ref}", cwd=repo.work)
    return sha


def assert_no_secret(message: str, *secrets: str) -> None:
    for s in secrets:
        for piece in [s, *(ln for ln in s.splitlines() if len(ln.strip()) >= 12 and "PRIVATE KEY" not in ln)]:
            assert piece.strip() not in message, f"a credential leaked into: {message}"


# ---- branch, tag, name, commit ---------------------------------------------------------

def test_a_branch_is_fetched_shallow_and_exported(cache: GitCache, repo: Repo, tmp_path: Path) -> None:
    rev = cache.fetch(source(repo.url, branch="main"), repo.url)
    assert rev == Revision("main", repo.head)
    assert str(rev) == f"main@sha1:{repo.head}"
    assert cached(cache, "rev-list", "--count", "refs/heads/main") == "1"
    out = cache.export(source(repo.url), rev.sha, tmp_path / "out")
    assert (out / "deploy" / "web.yaml").read_text().startswith("apiVersion: apps/v1")
    assert cache.has_commit(source(repo.url), rev.sha)


def test_a_local_path_works_like_a_file_url(cache: GitCache, repo: Repo) -> None:
    assert cache.fetch(source(str(repo.bare)), str(repo.bare)).sha == repo.head


def test_a_missing_branch_is_named_with_the_url(cache: GitCache, repo: Repo) -> None:
    with pytest.raises(GitError) as err:
        cache.fetch(source(repo.url, branch="nope"), repo.url)
    assert f"branch 'nope' not found in {repo.url}" in str(err.value)
    assert err.value.permanent  # only a push can make it appear: no point retrying in seconds


def test_a_repository_that_does_not_exist_is_a_permanent_error(cache: GitCache, tmp_path: Path) -> None:
    """A wrong URL fails the same way however often it is tried: the reconciler reports it
    once and waits for the next push or interval, instead of retrying it like a network error."""
    url = f"file://{tmp_path / 'no-such-repo.git'}"
    with pytest.raises(GitError) as err:
        cache.fetch(source(url), url)
    assert f"repository {url} not found" in str(err.value)
    assert err.value.permanent


def test_a_remote_that_does_not_answer_is_worth_retrying(cache: GitCache, tmp_path: Path) -> None:
    url = "http://127.0.0.1:9/fleet.git"  # the discard port: nothing listens, connection refused
    with pytest.raises(GitError) as err:
        cache.fetch(source(url), url)
    assert not err.value.permanent, str(err.value)


@pytest.mark.parametrize("annotated", [False, True], ids=["lightweight", "annotated"])
def test_a_tag_resolves_to_its_commit(cache: GitCache, repo: Repo, annotated: bool) -> None:
    first = repo.head
    tag(repo, "v1.0.0", first, annotated=annotated)
    repo.commit({"later.txt": "later\n"})
    rev = cache.fetch(source(repo.url, tag="v1.0.0", branch="main"), repo.url)  # tag beats branch
    assert str(rev) == f"v1.0.0@sha1:{first}"
    assert cached(cache, "rev-list", "--count", "refs/tags/v1.0.0") == "1"
    with pytest.raises(GitError, match=rf"tag 'v9' not found in {repo.url}"):
        cache.fetch(source(repo.url, tag="v9"), repo.url)


def test_name_fetches_any_reference(cache: GitCache, repo: Repo) -> None:
    pr = commit_elsewhere(repo, "refs/pull/1/head")
    rev = cache.fetch(source(repo.url, name="refs/pull/1/head"), repo.url)
    assert str(rev) == f"refs/pull/1/head@sha1:{pr}"
    assert str(cache.fetch(source(repo.url, name="refs/heads/main"), repo.url)) == f"refs/heads/main@sha1:{repo.head}"
    # name takes precedence over semver, tag and branch
    assert cache.fetch(source(repo.url, name="refs/pull/1/head", tag="v1", branch="main"), repo.url).sha == pr
    with pytest.raises(GitError, match=r"reference 'refs/pull/9/head' not found in file://"):
        cache.fetch(source(repo.url, name="refs/pull/9/head"), repo.url)
    with pytest.raises(GitError, match=r"must be a full reference"):
        cache.fetch(source(repo.url, name="main"), repo.url)


def test_a_commit_is_fetched_by_id(cache: GitCache, repo: Repo) -> None:
    old = repo.head
    repo.commit({"later.txt": "later\n"})
    rev = cache.fetch(source(repo.url, commit=old), repo.url)
    assert str(rev) == f"sha1:{old}"
    assert cached(cache, "rev-list", "--count", old) == "1", "fetched shallow"
    # with a branch: reported as Flux does, branch@sha1:<commit>; commit beats everything else
    rev = cache.fetch(source(repo.url, commit=old, branch="main", tag="x", semver="*"), repo.url)
    assert str(rev) == f"main@sha1:{old}"


def test_a_cached_commit_needs_no_fetch(cache: GitCache, repo: Repo, tmp_path: Path) -> None:
    sha = repo.head
    cache.fetch(source(repo.url, commit=sha), repo.url)
    gone = f"file://{tmp_path}/gone.git"
    assert cache.fetch(source(gone, commit=sha), gone).sha == sha


def test_a_missing_commit_or_branch_is_named(cache: GitCache, repo: Repo) -> None:
    missing = "0123456789abcdef0123456789abcdef01234567"
    with pytest.raises(GitError, match=rf"commit {missing} not found in {repo.url}"):
        cache.fetch(source(repo.url, commit=missing), repo.url)
    with pytest.raises(GitError, match=rf"branch 'nope' not found in {repo.url}"):
        cache.fetch(source(repo.url, commit=repo.head, branch="nope"), repo.url)


def test_the_webhook_revision_wait_still_works(cache: GitCache, repo: Repo) -> None:
    older = repo.head
    newer = repo.commit({"x.txt": "x\n"})
    started = time.monotonic()
    assert cache.fetch(source(repo.url), repo.url, want_sha=older).sha == newer
    assert time.monotonic() - started < 3
    missing = "0123456789abcdef0123456789abcdef01234567"
    started = time.monotonic()
    assert cache.fetch(source(repo.url), repo.url, want_sha=missing, wait_for_sha=1.0).sha == newer
    assert 1.0 <= time.monotonic() - started < 5


# ---- semver ----------------------------------------------------------------------------

@pytest.fixture
def tagged(repo: Repo) -> dict[str, str]:
    """Tags on distinct commits: versions, a pre-release, and tags that are no versions."""
    shas = {}
    for name in ["v1.0.0", "v1.2.0", "v1.9.0", "1.10.0", "v2.0.0", "v2.1.0-rc.1", "release-7", "latest", "v9.x"]:
        shas[name] = repo.commit({"VERSION": name + "\n"}, name)
        tag(repo, name, shas[name], annotated=name == "v2.0.0")
    return shas


@pytest.mark.parametrize(("spec", "expected"), [
    (">=1.0.0 <2.0.0", "1.10.0"),      # numeric order, and a tag without the "v"
    ("1.x", "1.10.0"),
    ("~1.2", "v1.2.0"),
    ("^1.2", "1.10.0"),
    (">= 1.0, < 1.5", "v1.2.0"),      # Masterminds spelling: spaces and a comma
    ("*", "v2.0.0"),                   # a pre-release is not picked by a range without one…
    (">=2.1.0-rc.0", "v2.1.0-rc.1"),   # …unless the range names one
    (">=1.0.0-0", "v2.1.0-rc.1"),      # of any version, as Masterminds (and so Flux) reads it; npm would not
    ("<1.0.0 || >=2.0.0 <2.1.0", "v2.0.0"),
])
def test_semver_picks_the_highest_matching_tag(cache: GitCache, repo: Repo, tagged: dict[str, str],
                                              spec: str, expected: str) -> None:
    rev = cache.fetch(source(repo.url, semver=spec), repo.url)
    assert str(rev) == f"{expected}@sha1:{tagged[expected]}"


def test_semver_fetches_only_the_picked_tag_and_moves_with_new_tags(cache: GitCache, repo: Repo,
                                                                    tagged: dict[str, str]) -> None:
    repo_src = source(repo.url, semver=">=1.0.0 <2.0.0", tag="v1.0.0", branch="main")  # semver beats tag
    assert cache.fetch(repo_src, repo.url).ref == "1.10.0"
    assert cached(cache, "for-each-ref", "--format=%(refname)") == "refs/tags/1.10.0"
    assert cached(cache, "rev-list", "--count", "refs/tags/1.10.0") == "1"
    newer = repo.commit({"VERSION": "v1.11.0\n"})
    tag(repo, "v1.11.0", newer)
    assert str(cache.fetch(repo_src, repo.url)) == f"v1.11.0@sha1:{newer}"
    assert cached(cache, "for-each-ref", "--format=%(refname)") == "refs/tags/v1.11.0"


def test_semver_errors_are_clear(cache: GitCache, repo: Repo, tagged: dict[str, str]) -> None:
    with pytest.raises(GitError) as err:
        cache.fetch(source(repo.url, semver=">=5.0.0"), repo.url)
    assert str(err.value) == f"no tag in {repo.url} matches semver '>=5.0.0' (the highest version tag is v2.1.0-rc.1)"
    with pytest.raises(GitError, match=r"invalid semver range 'not a range' in spec.ref.semver"):
        cache.fetch(source(repo.url, semver="not a range"), repo.url)
    with pytest.raises(GitError, match="invalid semver range"):
        parse_semver_range(">=1.0.0 <<2")


# ---- what a fetch costs ----------------------------------------------------------------

def test_a_second_fetch_transfers_only_the_new_commit(cache: GitCache, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "big")
    repo.commit({f"data/file{i}.txt": base64.b64encode(os.urandom(3000)).decode() + "\n" for i in range(150)})
    src = source(repo.url)
    cache.fetch(src, repo.url)
    d = cache.root / "flux-system" / "app.git"
    subprocess.run(["git", "config", "fetch.unpackLimit", "1"], cwd=d, check=True)  # keep each fetch's pack
    packs_before = set((d / "objects" / "pack").glob("*.pack"))
    first_size = sum(p.stat().st_size for p in packs_before)
    assert first_size > 400_000

    sha = repo.commit({"data/file7.txt": "changed\n"}, "one small change")
    assert cache.fetch(src, repo.url).sha == sha
    [new_pack] = set((d / "objects" / "pack").glob("*.pack")) - packs_before
    objects = subprocess.run(["git", "show-index"], input=new_pack.with_suffix(".idx").read_bytes(),
                             capture_output=True, check=True).stdout.splitlines()
    assert len(objects) <= 6, objects          # commit, 2 trees, 1 blob (no full snapshot)
    assert new_pack.stat().st_size < first_size / 20
    assert cached(cache, "rev-list", "--count", "refs/heads/main") == "1"
    assert cached(cache, "rev-parse", "--is-shallow-repository") == "true"


# ---- timeout ---------------------------------------------------------------------------

@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP server that accepts connections and never says anything."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(srv.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield srv.getsockname()[1]
    stop.set()
    t.join()
    for c in held:
        c.close()
    srv.close()


@pytest.mark.parametrize("scheme", ["git", "http"])
@pytest.mark.timeout(60)
def test_a_hanging_remote_times_out(cache: GitCache, silent_server: int, scheme: str) -> None:
    url = f"{scheme}://127.0.0.1:{silent_server}/repo.git"
    started = time.monotonic()
    with pytest.raises(GitError) as err:
        cache.fetch(source(url, timeout=2.0), url)
    elapsed = time.monotonic() - started
    assert f"git fetch from {url} timed out after 2s (spec.timeout)" == str(err.value)
    assert 1.5 < elapsed < 6, elapsed
    with pytest.raises(GitError, match="timed out after 2s"):
        cache.fetch(source(url, timeout=2.0, semver="*"), url)  # the tag listing is bounded too


# ---- https: git's smart HTTP through an authenticating server --------------------------

class GitHttpServer:
    """`git http-backend` (CGI) behind a small HTTP server that answers 401 unless the
    request carries the expected Authorization header."""

    def __init__(self, root: Path, authorization: str | None, tls: tuple[Path, Path] | None = None):
        self.root = root
        self.scheme = "https" if tls else "http"
        self.authorization = authorization
        self.seen: list[str | None] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                self._serve()

            def do_POST(self) -> None:
                self._serve()

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0], 16)
                        chunk = self.rfile.read(size + 2)[:size]
                        if size == 0:
                            return b"".join(chunks)
                        chunks.append(chunk)
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _serve(self) -> None:
                auth = self.headers.get("Authorization")
                server.seen.append(auth)
                body = self._body()
                if server.authorization is not None and auth != server.authorization:
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="herald-test"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                path, _, query = self.path.partition("?")
                env = {
                    "PATH": os.environ["PATH"], "GIT_PROJECT_ROOT": str(server.root),
                    "GIT_HTTP_EXPORT_ALL": "1", "GIT_CONFIG_NOSYSTEM": "1",
                    "REQUEST_METHOD": self.command, "PATH_INFO": path, "QUERY_STRING": query,
                    "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                    "CONTENT_LENGTH": str(len(body)), "REMOTE_ADDR": "127.0.0.1",
                    "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
                    "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
                }
                out = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True,
                                     timeout=30, check=False).stdout
                head, _, payload = out.partition(b"\r\n\r\n")
                if not _:
                    head, _, payload = out.partition(b"\n\n")
                status, headers = 200, []
                for line in head.decode().splitlines():
                    k, _, v = line.partition(":")
                    if k.lower() == "status":
                        status = int(v.split()[0])
                    else:
                        headers.append((k, v.strip()))
                self.send_response(status)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*tls)
            self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, bare: Path) -> str:
        return f"{self.scheme}://127.0.0.1:{self.httpd.server_address[1]}/{bare.relative_to(self.root)}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def http_git(tmp_path: Path) -> Iterator[object]:
    servers: list[GitHttpServer] = []

    def start(authorization: str | None, tls: tuple[Path, Path] | None = None) -> GitHttpServer:
        servers.append(GitHttpServer(tmp_path, authorization, tls))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


@pytest.fixture
def git_log(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A `git` that records its argv, GIT_SSH_COMMAND and the ssh key file's mode, then runs git."""
    log = tmp_path / "git-calls.jsonl"
    wrapper = tmp_path / "git-wrapper"
    wrapper.write_text(f"""#!{sys.executable}
import json, os, shlex, sys
rec = {{"argv": sys.argv[1:], "ssh": os.environ.get("GIT_SSH_COMMAND", ""),
       "config": {{k: v for k, v in os.environ.items() if k.startswith("GIT_CONFIG_")}}}}
parts = shlex.split(rec["ssh"])
if "-i" in parts:
    key = parts[parts.index("-i") + 1]
    rec["key"], rec["key_mode"] = key, oct(os.stat(key).st_mode & 0o777)
    rec["dir_mode"] = oct(os.stat(os.path.dirname(key)).st_mode & 0o777)
with open({str(log)!r}, "a") as f:
    f.write(json.dumps(rec) + "\\n")
os.execvp("git", ["git", *sys.argv[1:]])
""")
    wrapper.chmod(0o755)
    yield str(wrapper), log


def calls(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_https_basic_auth(cache: GitCache, http_git, tmp_path: Path, git_log) -> None:
    repo = make_repo(tmp_path / "srv")
    basic = "Basic " + base64.b64encode(f"flux:{PASSWORD}".encode()).decode()
    server = http_git(basic)
    url = server.url(repo.bare)
    wrapped = GitCache(cache.root, git=git_log[0])
    rev = wrapped.fetch(source(url), url, {"username": "flux", "password": PASSWORD + "\n"})
    assert rev.sha == repo.head
    assert basic in server.seen
    # a pinned commit is fetched by id over smart HTTP too
    assert wrapped.fetch(source(url, commit=repo.head, branch="main"), url,
                         {"username": "flux", "password": PASSWORD}).sha == repo.head
    # the password reached git through its environment only: not argv, not a file in the cache
    for call in calls(git_log[1]):
        assert_no_secret(" ".join(call["argv"]), PASSWORD, basic.split()[1])
    for f in cache.root.rglob("*"):
        if f.is_file():
            assert PASSWORD.encode() not in f.read_bytes() and basic.split()[1].encode() not in f.read_bytes(), f
    # the header is scoped to the server's origin
    keys = [v for c in calls(git_log[1]) for k, v in c["config"].items() if k.startswith("GIT_CONFIG_KEY_")]
    assert f"http.http://127.0.0.1:{url.split(':')[2].split('/')[0]}/.extraHeader" in keys


def test_https_bearer_token(cache: GitCache, http_git, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "srv")
    server = http_git(f"Bearer {TOKEN}")
    url = server.url(repo.bare)
    assert cache.fetch(source(url), url, {"bearerToken": TOKEN}).sha == repo.head
    tag(repo, "v1.0.0")
    assert cache.fetch(source(url, semver="^1"), url, {"bearerToken": TOKEN}).ref == "v1.0.0"


def self_signed(d: Path) -> tuple[Path, Path, str]:
    """A certificate for 127.0.0.1 signed by itself: (cert file, key file, PEM)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "herald-test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    (d / "cert.pem").write_text(pem)
    (d / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
    return d / "cert.pem", d / "key.pem", pem


def test_https_with_the_secrets_ca_certificate(cache: GitCache, http_git, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "srv")
    cert, key, pem = self_signed(tmp_path)
    server = http_git(f"Bearer {TOKEN}", tls=(cert, key))
    url = server.url(repo.bare)
    assert url.startswith("https://")
    with pytest.raises(GitError) as err:
        cache.fetch(source(url), url, {"bearerToken": TOKEN})
    assert "certificate" in str(err.value).lower()
    assert_no_secret(str(err.value), TOKEN)
    assert cache.fetch(source(url), url, {"bearerToken": TOKEN, "ca.crt": pem}).sha == repo.head


@pytest.mark.parametrize("credentials", [
    {"username": "flux", "password": "wrong-" + PASSWORD},
    {"bearerToken": "wrong-" + TOKEN},
    None,
], ids=["wrong-password", "wrong-token", "none"])
def test_https_auth_failure_is_clear_and_leaks_nothing(cache: GitCache, http_git, tmp_path: Path,
                                                       credentials: dict[str, str] | None) -> None:
    repo = make_repo(tmp_path / "srv")
    server = http_git("Basic " + base64.b64encode(f"flux:{PASSWORD}".encode()).decode())
    url = server.url(repo.bare)
    for ref in ({"branch": "main"}, {"semver": "*"}):
        with pytest.raises(GitError) as err:
            cache.fetch(source(url, **ref), url, credentials)
        assert f"authentication to {url} failed" in str(err.value)
        assert err.value.permanent  # refused credentials stay refused until the Secret changes
        secrets = list((credentials or {}).values())
        assert_no_secret(str(err.value), *secrets, *(base64.b64encode(f"flux:{s}".encode()).decode() for s in secrets))


def test_credentials_in_the_url_are_moved_out_of_argv_and_errors(cache: GitCache, http_git, tmp_path: Path,
                                                                 git_log) -> None:
    repo = make_repo(tmp_path / "srv")
    server = http_git("Basic " + base64.b64encode(f"flux:{PASSWORD}".encode()).decode())
    plain = server.url(repo.bare)
    with_creds = plain.replace("http://", f"http://flux:{PASSWORD}@")
    wrapped = GitCache(cache.root, git=git_log[0])
    assert wrapped.fetch(source(with_creds), with_creds).sha == repo.head
    assert all(PASSWORD not in " ".join(c["argv"]) for c in calls(git_log[1]))
    bad = plain.replace("http://", "http://flux:nope-" + PASSWORD + "@")
    with pytest.raises(GitError) as err:
        cache.fetch(source(bad), bad)
    assert f"authentication to {plain} failed" in str(err.value)
    assert_no_secret(str(err.value), PASSWORD)
    assert safe_url(bad) == plain


# ---- ssh against a real sshd -----------------------------------------------------------

def ssh_creds(server: Sshd, **extra: str) -> dict[str, str]:
    return {"identity": server.identity, "identity.pub": server.identity_pub,
            "known_hosts": server.known_hosts, **extra}


def test_ssh_with_identity_and_known_hosts(cache: GitCache, sshd: Sshd, repo: Repo, git_log) -> None:  # noqa: F811
    url = sshd.url(repo.bare)
    wrapped = GitCache(cache.root, git=git_log[0])
    rev = wrapped.fetch(source(url), url, ssh_creds(sshd))
    assert rev == Revision("main", repo.head)
    tag(repo, "v1.2.3")
    assert wrapped.fetch(source(url, semver="~1.2"), url, ssh_creds(sshd)).ref == "v1.2.3"
    assert wrapped.fetch(source(url, commit=repo.head), url, ssh_creds(sshd)).sha == repo.head
    ssh_calls = [c for c in calls(git_log[1]) if c["ssh"]]
    assert ssh_calls
    for c in ssh_calls:
        cmd = shlex.split(c["ssh"])
        for opt in ("IdentitiesOnly=yes", "StrictHostKeyChecking=yes", "BatchMode=yes"):
            assert opt in cmd
        assert any(o.startswith("UserKnownHostsFile=") for o in cmd)
        assert (c["key_mode"], c["dir_mode"]) == ("0o600", "0o700")
        assert not Path(c["key"]).exists(), "the key file is removed after use"
        assert_no_secret(" ".join(c["argv"]) + c["ssh"], sshd.identity)


def test_ssh_with_a_passphrase_protected_key(cache: GitCache, sshd: Sshd, repo: Repo, tmp_path: Path) -> None:  # noqa: F811
    identity, pub = keygen(tmp_path / "enc", passphrase="k3y-pass-phrase")
    sshd.authorize(pub)
    url = sshd.url(repo.bare)
    creds = {"identity": identity, "known_hosts": sshd.known_hosts, "password": "k3y-pass-phrase"}
    assert cache.fetch(source(url), url, creds).sha == repo.head
    with pytest.raises(GitError) as err:
        cache.fetch(source(url), url, {**creds, "password": "wrong-pass-phrase"})
    assert str(err.value) == "the Secret's ssh identity could not be decrypted with the Secret's 'password'"
    with pytest.raises(GitError, match="the Secret's ssh identity is encrypted: the Secret needs its 'password'"):
        cache.fetch(source(url), url, {"identity": identity, "known_hosts": sshd.known_hosts})
    with pytest.raises(GitError, match="the Secret's ssh identity is not a private key ssh can load"):
        cache.fetch(source(url), url, {"identity": "not a key", "known_hosts": sshd.known_hosts})


def test_ssh_refuses_a_host_key_not_in_known_hosts(cache: GitCache, sshd: Sshd, repo: Repo,  # noqa: F811
                                                   tmp_path: Path) -> None:
    _, other_host = keygen(tmp_path / "other-host")
    wrong = f"[127.0.0.1]:{sshd.port} {' '.join(other_host.split()[:2])}\n"
    url = sshd.url(repo.bare)
    for known_hosts in (wrong, f"[127.0.0.1]:1 {' '.join(other_host.split()[:2])}\n"):
        with pytest.raises(GitError) as err:
            cache.fetch(source(url), url, ssh_creds(sshd, known_hosts=known_hosts))
        assert f"ssh host key verification failed for {url}" in str(err.value)
        assert "Host key verification failed." in str(err.value)
        assert "correct access rights" not in str(err.value)
        assert_no_secret(str(err.value), sshd.identity)
    with pytest.raises(GitError, match="needs a 'known_hosts' key"):
        cache.fetch(source(url), url, ssh_creds(sshd, known_hosts=""))
    with pytest.raises(GitError, match="needs an 'identity' key"):
        cache.fetch(source(url), url, {"known_hosts": sshd.known_hosts})


def test_ssh_with_an_unauthorized_key_is_an_auth_error_without_the_key(cache: GitCache, sshd: Sshd,  # noqa: F811
                                                                      repo: Repo, tmp_path: Path) -> None:
    stranger, _ = keygen(tmp_path / "stranger")
    url = sshd.url(repo.bare)
    with pytest.raises(GitError) as err:
        cache.fetch(source(url), url, ssh_creds(sshd, identity=stranger))
    assert f"authentication to {url} failed" in str(err.value)
    assert "Permission denied (publickey)" in str(err.value)
    assert_no_secret(str(err.value), stranger, sshd.identity)
    with pytest.raises(GitError) as err:
        cache.fetch(source(url, branch="nope"), url, ssh_creds(sshd))
    assert f"branch 'nope' not found in {url}" in str(err.value)
    assert_no_secret(str(err.value), sshd.identity)


# ---- through the reconciler ------------------------------------------------------------

def test_the_reconciler_passes_the_secret_and_reports_flux_revisions(http_git, tmp_path: Path) -> None:
    """A GitRepository with a semver ref and a bearer-token Secret, as a user writes it."""
    repo = make_repo(tmp_path / "srv")
    tag(repo, "v1.4.0", annotated=True)
    server = http_git(f"Bearer {TOKEN}")

    def reconcile(token: str) -> list:
        path = tmp_path / "herald.yaml"
        path.write_text(f"""\
apiVersion: v1
kind: Secret
metadata: {{name: git-auth, namespace: flux-system}}
stringData: {{bearerToken: "{token}"}}
---
apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {{name: app, namespace: flux-system}}
spec:
  interval: 10m
  timeout: 20s
  url: {server.url(repo.bare)}
  ref: {{semver: ">=1.0.0 <2.0.0"}}
  secretRef: {{name: git-auth}}
---
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {{name: app, namespace: flux-system}}
spec:
  interval: 10m
  path: ./deploy
  prune: true
  sourceRef: {{kind: GitRepository, name: app}}
""")
        bus = open_bus(None, tmp_path / "state")
        try:
            rec = Reconciler(config.load([path]), bus, tmp_path / "state", cluster=None)
            return rec.reconcile(ReconcileRequest(kind="GitRepository", name="app", namespace="flux-system",
                                                  origin={})).events
        finally:
            bus.close()

    [event] = reconcile(TOKEN)
    assert (event.reason, event.metadata["revision"]) == ("ClusterNotConfigured", f"v1.4.0@sha1:{repo.head}")
    event, kustomization = reconcile("wrong-" + TOKEN)
    assert event.reason == "GitOperationFailed"
    assert f"authentication to {server.url(repo.bare)} failed" in event.message
    assert_no_secret(event.message, "wrong-" + TOKEN)
    assert kustomization.reason == "ReconciliationFailed"  # every Kustomization of the run ends too
    assert_no_secret(kustomization.message, "wrong-" + TOKEN)
