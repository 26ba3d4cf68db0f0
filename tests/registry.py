"""Real container registries for the registry client's tests, and a paging one of our own.

- `start_registry` runs Debian's `docker-registry` (the CNCF distribution registry 2.8) on a free
  port of 127.0.0.1 with a config file of its own and storage in a temporary directory, in one
  of four setups: no auth; htpasswd (Basic, bcrypt hashes made by `htpasswd -B`); token auth,
  the Docker token flow that Docker Hub, GHCR and Harbor use, with a `TokenIssuer` in this
  process signing the JWTs (RS256, the certificate in the `x5c` header; the registry trusts it
  as its `rootcertbundle`); and TLS with client certificates required (mTLS).
  Missing binaries are installed (docker-registry, apache2-utils) through tests/apt.py; only
  when that is impossible are the tests skipped, with the reason.
- `push_image` / `push_index` push through the registry HTTP API (blob upload POST + PUT with
  the digest, then the manifest) and return the digest the registry gave the manifest.
- `PagingRegistry` answers `tags/list` in pages with `Link: <…>; rel="next"` as GHCR and Docker
  Hub do (registry 2.8 returns every tag at once), answers manifest HEADs, logs every request
  and serves scripted failures (429, 503) first.
"""

from __future__ import annotations

import base64
import datetime
import gzip
import hashlib
import io
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tarfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, urljoin, urlsplit

import pytest
import requests
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.apt import apt_install
from tests.fixtures_herald import free_port
from tests.localserver import ServedOnAThread

Auth = Literal["none", "htpasswd", "token", "mtls"]
USERNAME = "flux"
PASSWORD = "s3cr3t-registry-pa55word"
SERVICE = "herald-test-registry"
ISSUER = "herald-test-issuer"

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def install() -> str:
    """docker-registry and htpasswd, installed when missing; "" when there, else why not."""
    def present() -> bool:
        return shutil.which("docker-registry") is not None and shutil.which("htpasswd") is not None

    return apt_install(["docker-registry", "apache2-utils"], present, recommends=False) or (
        "" if present() else "docker-registry or htpasswd not found after installing them")


# -- certificates -------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyPair:
    cert_pem: str
    key_pem: str


def _pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def certificate(cn: str, *, issuer: tuple[x509.Certificate, rsa.RSAPrivateKey] | None = None, ca: bool = False,
                ip: str | None = None, client: bool = False) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    """A certificate for `cn`, valid a day: a CA, a server for `ip`, or a client; self-signed without `issuer`."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    signer_cert, signer_key = issuer if issuer else (None, key)
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder().subject_name(subject)
        .issuer_name(signer_cert.subject if signer_cert else subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ip:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]),
                                        critical=False)
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    if client:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    return builder.sign(signer_key, hashes.SHA256()), key


def pair(cert: x509.Certificate, key: rsa.RSAPrivateKey) -> KeyPair:
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM).decode(), _pem(key))


# -- a small threaded HTTP server -----------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    """A request as a test server saw it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # names lower-cased


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


def json_answer(status: int, data: Any, **headers: str) -> Answer:
    return Answer(status, {"Content-Type": "application/json", **headers}, json.dumps(data).encode())


def registry_error(status: int, code: str, message: str, **headers: str) -> Answer:
    """An error in the distribution spec's shape."""
    return json_answer(status, {"errors": [{"code": code, "message": message, "detail": None}]}, **headers)


class _Server(ThreadingHTTPServer):
    daemon_threads = True


class TestServer(ServedOnAThread):
    """Serves `answer(request)` on 127.0.0.1, HEAD included; logs requests; scripted failures first."""

    __test__ = False  # not a pytest test class, despite the name

    def __init__(self) -> None:
        self.requests: list[Seen] = []
        self.failures: deque[Answer] = deque()
        self._lock = threading.Lock()
        self._http = _Server(("127.0.0.1", 0), _handler(self))

    @property
    def url(self) -> str:
        host, port = self._http.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def host(self) -> str:
        return self.url.removeprefix("http://")

    def fail_next(self, answer: Answer) -> None:
        self.failures.append(answer)

    def answer(self, request: Seen) -> Answer:
        raise NotImplementedError

    def serve(self, request: Seen) -> Answer:
        with self._lock:
            self.requests.append(request)
            failure = self.failures.popleft() if self.failures else None
        return failure or self.answer(request)


def _handler(server: TestServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            parts = urlsplit(self.path)
            answer = server.serve(Seen(self.command, parts.path, dict(parse_qsl(parts.query)),
                                       {k.lower(): v for k, v in self.headers.items()}))
            self.send_response(answer.status)
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(answer.body)

        do_GET = do_HEAD = do_POST = do_PUT = _serve

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: pytest shows the assertions, not an access log."""

    return Handler


# -- the token issuer -------------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenIssuer(TestServer):
    """A Docker token service: `GET /token?service=…&scope=…` with Basic credentials.

    Right credentials get a JWT granting the requested actions on the requested repositories,
    as the registry's `auth.token` expects one (iss, sub, aud = service, exp, nbf, iat, jti,
    access), signed RS256 with its certificate chain in the `x5c` header. Wrong credentials get
    401, as Docker Hub's auth.docker.io answers; no credentials get a token granting nothing,
    so the registry refuses it (what Docker Hub does for a private repository).
    """

    def __init__(self, users: dict[str, str], *, expires_in: int | None = 300) -> None:
        super().__init__()
        self.users = users
        self.expires_in = expires_in
        cert, self._key = certificate("herald-test-token-signer")
        self.cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
        self._x5c = [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()]

    @property
    def realm(self) -> str:
        return f"{self.url}/token"

    @property
    def token_requests(self) -> list[Seen]:
        return [r for r in self.requests if r.path == "/token"]

    def mint(self, subject: str, access: list[dict[str, Any]], lifetime: int = 300) -> str:
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": self._x5c}
        claims = {"iss": ISSUER, "sub": subject, "aud": SERVICE, "exp": now + lifetime, "nbf": now - 10,
                  "iat": now, "jti": uuid.uuid4().hex, "access": access}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        signature = self._key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64url(signature)}"

    def answer(self, request: Seen) -> Answer:
        if request.path != "/token":
            return Answer(404)
        subject = ""
        authorization = request.headers.get("authorization", "")
        if authorization:
            scheme, _, encoded = authorization.partition(" ")
            user, _, password = base64.b64decode(encoded).decode().partition(":")
            if scheme.lower() != "basic" or self.users.get(user) != password:
                return json_answer(401, {"details": "incorrect username or password"})
            subject = user
        access = []
        for scope in [v for k, v in request.query.items() if k == "scope"]:
            kind, name, actions = scope.split(":")
            if subject:
                access.append({"type": kind, "name": name, "actions": actions.split(",")})
        token = self.mint(subject, access)
        body: dict[str, Any] = {"token": token, "access_token": token,
                                "issued_at": datetime.datetime.now(datetime.UTC).isoformat()}
        if self.expires_in is not None:
            body["expires_in"] = self.expires_in
        return json_answer(200, body)


# -- the distribution registry ----------------------------------------------------------------


@dataclass
class Registry:
    """A running `docker-registry`; `host` is what an image name starts with."""

    auth: Auth
    port: int
    dir: Path
    issuer: TokenIssuer | None = None
    ca_pem: str | None = None          # mtls: the CA that signed the server and client certificates
    client: KeyPair | None = None      # mtls: a client certificate the registry accepts

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.auth == 'mtls' else 'http'}://{self.host}"

    def session(self, repo: str) -> requests.Session:
        """A session allowed to push to `repo` (the fixture's own, not the code under test)."""
        s = requests.Session()
        s.trust_env = False
        if self.auth == "htpasswd":
            s.auth = (USERNAME, PASSWORD)
        elif self.auth == "token":
            assert self.issuer
            token = self.issuer.mint(USERNAME, [{"type": "repository", "name": repo, "actions": ["pull", "push"]}])
            s.headers["Authorization"] = f"Bearer {token}"
        elif self.auth == "mtls":
            s.verify = str(self.dir / "ca.crt")
            s.cert = (str(self.dir / "client.crt"), str(self.dir / "client.key"))
        return s


@contextmanager
def start_registry(directory: Path, auth: Auth = "none", *, expires_in: int | None = 300) -> Iterator[Registry]:
    """Run `docker-registry` with `auth` until the block ends."""
    binary = shutil.which("docker-registry")
    assert binary, "call install() first"
    port = free_port()
    registry = Registry(auth, port, directory)
    config: dict[str, Any] = {
        "version": "0.1",
        "log": {"level": "info", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(directory / "storage")},
                    "maintenance": {"uploadpurging": {"enabled": False}}},
        "http": {"addr": registry.host, "secret": secrets.token_hex(16)},
        "health": {"storagedriver": {"enabled": False}},
    }
    issuer: TokenIssuer | None = None
    if auth == "htpasswd":
        done = subprocess.run(["htpasswd", "-Bbn", USERNAME, PASSWORD], capture_output=True, text=True, check=True)
        (directory / "htpasswd").write_text(done.stdout)
        config["auth"] = {"htpasswd": {"realm": "herald-test", "path": str(directory / "htpasswd")}}
    elif auth == "token":
        issuer = registry.issuer = TokenIssuer({USERNAME: PASSWORD}, expires_in=expires_in).start()
        (directory / "token-signer.crt").write_text(issuer.cert_pem)
        config["auth"] = {"token": {"realm": issuer.realm, "service": SERVICE, "issuer": ISSUER,
                                    "rootcertbundle": str(directory / "token-signer.crt")}}
    elif auth == "mtls":
        ca = certificate("herald-test-ca", ca=True)
        server = pair(*certificate("127.0.0.1", issuer=ca, ip="127.0.0.1"))
        registry.client = pair(*certificate("herald-test-client", issuer=ca, client=True))
        registry.ca_pem = pair(*ca).cert_pem
        for name, text in {"ca.crt": registry.ca_pem, "server.crt": server.cert_pem, "server.key": server.key_pem,
                           "client.crt": registry.client.cert_pem, "client.key": registry.client.key_pem}.items():
            (directory / name).write_text(text)
        config["http"]["tls"] = {"certificate": str(directory / "server.crt"), "key": str(directory / "server.key"),
                                 "clientcas": [str(directory / "ca.crt")]}
    (directory / "config.yml").write_text(yaml.safe_dump(config))
    # The registry reads REGISTRY_* variables over its config file: none of the machine's apply.
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    log_path = directory / "registry.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen([binary, "serve", str(directory / "config.yml")], stdout=log,
                                   stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        _wait_listening(process, port, log_path)
        yield registry
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if issuer:
            issuer.stop()


def _wait_listening(process: subprocess.Popen, port: int, log: Path, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            pytest.fail(f"docker-registry exited ({process.returncode}): {log.read_text()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                pytest.fail(f"docker-registry did not listen on port {port} within {timeout:.0f}s: "
                            f"{log.read_text()[-2000:]}")
            time.sleep(0.05)


# -- pushing ------------------------------------------------------------------------------------


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _upload_blob(s: requests.Session, registry: Registry, repo: str, data: bytes) -> dict[str, Any]:
    started = s.post(f"{registry.url}/v2/{repo}/blobs/uploads/", timeout=10)
    assert started.status_code == 202, started.text
    location = urljoin(registry.url, started.headers["Location"])
    digest = _digest(data)
    done = s.put(location + ("&" if "?" in location else "?") + f"digest={digest}", data=data,
                 headers={"Content-Type": "application/octet-stream"}, timeout=10)
    assert done.status_code == 201, done.text
    return {"digest": digest, "size": len(data)}


def _layer(content: str) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        data = content.encode()
        info = tarfile.TarInfo("etc/herald-test")
        info.size = len(data)
        info.mtime = 0
        tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0)


def _put_manifest(s: requests.Session, registry: Registry, repo: str, tag: str, media_type: str,
                  manifest: dict[str, Any]) -> str:
    body = json.dumps(manifest).encode()
    put = s.put(f"{registry.url}/v2/{repo}/manifests/{tag}", data=body, headers={"Content-Type": media_type},
                timeout=10)
    assert put.status_code == 201, put.text
    assert put.headers["Docker-Content-Digest"] == _digest(body)
    return put.headers["Docker-Content-Digest"]


def push_image(registry: Registry, repo: str, tag: str, *, oci: bool = False, arch: str = "amd64") -> str:
    """Push a one-layer image as `repo:tag` (Docker v2 manifest, or OCI); its manifest digest."""
    with registry.session(repo) as s:
        config = json.dumps({"architecture": arch, "os": "linux", "config": {"Labels": {"tag": tag}},
                             "rootfs": {"type": "layers", "diff_ids": []}}).encode()
        config_ref = _upload_blob(s, registry, repo, config)
        layer_ref = _upload_blob(s, registry, repo, _layer(f"{repo}:{tag}:{arch}"))
        media_type = OCI_MANIFEST if oci else DOCKER_MANIFEST
        manifest = {
            "schemaVersion": 2, "mediaType": media_type,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json" if oci
                       else "application/vnd.docker.container.image.v1+json", **config_ref},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip" if oci
                        else "application/vnd.docker.image.rootfs.diff.tar.gzip", **layer_ref}],
        }
        return _put_manifest(s, registry, repo, tag, media_type, manifest)


def push_index(registry: Registry, repo: str, tag: str, arches: tuple[str, ...] = ("amd64", "arm64")) -> str:
    """Push an OCI image index of one OCI image per architecture as `repo:tag`; the index's digest."""
    entries = []
    with registry.session(repo) as s:
        for arch in arches:
            digest = push_image(registry, repo, f"{tag}-{arch}", oci=True, arch=arch)
            size = int(s.head(f"{registry.url}/v2/{repo}/manifests/{digest}", headers={"Accept": OCI_MANIFEST},
                              timeout=10).headers["Content-Length"])
            entries.append({"mediaType": OCI_MANIFEST, "digest": digest, "size": size,
                            "platform": {"architecture": arch, "os": "linux"}})
        return _put_manifest(s, registry, repo, tag, OCI_INDEX,
                             {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries})


# -- a registry that pages ----------------------------------------------------------------------


class PagingRegistry(TestServer):
    """`tags/list` in pages of `page_size` with `Link` headers, as GHCR and Docker Hub answer.

    `links`: "relative" (`</v2/…?last=…&n=…>`, what GHCR and Docker Hub send) or "absolute"
    (`<http://host/v2/…>`); `overlap` starts each page with the previous page's last tag, as a
    registry with an inclusive `last` would. Manifests are small indexes, answered with their
    digest (unless `digest_header` is False); unknown repositories and tags get the spec's 404s.
    `unlisted` tags have manifests but are not in `tags/list` yet: Docker Hub's and GHCR's lists
    lag their manifests by seconds after a push.
    """

    def __init__(self, repos: dict[str, list[str]], *, page_size: int = 100,
                 links: Literal["relative", "absolute"] = "relative", overlap: bool = False,
                 link_to: Callable[[str], str] | None = None, digest_header: bool = True,
                 unlisted: frozenset[str] = frozenset()) -> None:
        super().__init__()
        self.unlisted = unlisted
        self.digest_header = digest_header
        self.repos = repos
        self.page_size = page_size
        self.links = links
        self.overlap = overlap
        self.link_to = link_to

    @staticmethod
    def manifest_of(repo: str, tag: str) -> bytes:
        return json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [],
                           "annotations": {"tag": f"{repo}:{tag}"}}).encode()

    @classmethod
    def digest_of(cls, repo: str, tag: str) -> str:
        return _digest(cls.manifest_of(repo, tag))

    def answer(self, request: Seen) -> Answer:
        path = request.path.removeprefix("/v2/")
        if "/tags/list" in path:
            return self._tags(path.removesuffix("/tags/list"), request.query)
        repo, sep, tag = path.partition("/manifests/")
        if sep:
            if tag not in self.repos.get(repo, ()):
                return registry_error(404, "MANIFEST_UNKNOWN", "manifest unknown")
            headers = {"Content-Type": OCI_INDEX}
            if self.digest_header:
                headers["Docker-Content-Digest"] = self.digest_of(repo, tag)
            return Answer(200, headers, self.manifest_of(repo, tag))
        return registry_error(404, "NOT_FOUND", "not found")

    def _tags(self, repo: str, query: dict[str, str]) -> Answer:
        if repo not in self.repos:
            return registry_error(404, "NAME_UNKNOWN", "repository name not known to registry")
        tags = [t for t in self.repos[repo] if t not in self.unlisted]
        n = min(int(query.get("n", self.page_size)), self.page_size)
        start = 0
        if "last" in query:
            start = tags.index(query["last"]) + (0 if self.overlap else 1)
        page = tags[start:start + n]
        headers = {"Content-Type": "application/json"}
        if start + n < len(tags):
            link = f"/v2/{repo}/tags/list?last={page[-1]}&n={n}"
            if self.link_to:
                link = self.link_to(link)
            elif self.links == "absolute":
                link = self.url + link
            headers["Link"] = f'<{link}>; rel="next"'
        return Answer(200, headers, json.dumps({"name": repo, "tags": page}).encode())


# -- Flux OCI artifacts ---------------------------------------------------------------------------

FLUX_CONFIG = "application/vnd.cncf.flux.config.v1+json"
FLUX_CONTENT = "application/vnd.cncf.flux.content.v1.tar+gzip"
SOURCE_ANNOTATION = "org.opencontainers.image.source"
REVISION_ANNOTATION = "org.opencontainers.image.revision"
CREATED_ANNOTATION = "org.opencontainers.image.created"


def flux_tarball(files: dict[str, bytes]) -> bytes:
    """`files` (slash-separated paths) as fluxcd/pkg/tar.Tar archives a directory holding them:
    gzip over tar, walked as Go's filepath.WalkDir walks (depth first, names in byte order within
    each directory, the root itself first as "."), directories without a trailing slash,
    uid/gid/names and times zeroed. Only regular files and directories, as Tar skips the rest."""
    tree: dict[str, Any] = {}
    for path, data in files.items():
        *dirs, leaf = path.split("/")
        node = tree
        for d in dirs:
            node = node.setdefault(d, {})
        node[leaf] = data
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        def add(name: str, entry: dict[str, Any] | bytes) -> None:
            info = tarfile.TarInfo(name)
            info.mtime = 0
            if isinstance(entry, bytes):
                info.size, info.mode = len(entry), 0o644
                tar.addfile(info, io.BytesIO(entry))
                return
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
            for child in sorted(entry, key=lambda n: n.encode()):
                add(child if name == "." else f"{name}/{child}", entry[child])

        add(".", tree)
        end = tar.offset
    # Go's tar.Writer ends with two zero blocks; Python's pads on to a 10 KiB record.
    return gzip.compress(raw.getvalue()[:end + 2 * tarfile.BLOCKSIZE], compresslevel=6, mtime=0)


def push_flux_artifact(registry: Registry, repo: str, tag: str, files: dict[str, bytes], *,
                       source: str = "https://github.com/acme/fleet.git",
                       revision: str = "main@sha1:0123456789abcdef0123456789abcdef01234567",
                       created: str | None = None, annotations: dict[str, str] | None = None,
                       layer: bytes | None = None, extra_layers: tuple[tuple[str, bytes], ...] = ()) -> str:
    """Push `files` as `repo:tag` the way `flux push artifact` does (fluxcd/pkg oci/push.go); the
    manifest's digest.

    The manifest is an OCI image manifest whose config has Flux's media type
    (application/vnd.cncf.flux.config.v1+json) and whose one layer is `flux_tarball(files)` as
    application/vnd.cncf.flux.content.v1.tar+gzip; its annotations are the OpenContainers
    source, revision and created (RFC 3339, UTC; now unless given) as oci/meta.go's
    ToAnnotations writes them, plus `annotations`. The config is the image config
    go-containerregistry writes for it (empty architecture and os, the created time, the
    layer's diff ID). `layer` replaces the content layer's bytes (a hand-made archive);
    `extra_layers` are (media type, bytes) appended after it, which `flux push` never makes.
    """
    content = flux_tarball(files) if layer is None else layer
    if created is None:
        created = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    try:
        diff_id = _digest(gzip.decompress(content))
    except (OSError, EOFError):
        diff_id = _digest(content)  # not gzip: a hand-made layer of a test that wants a broken one
    diff_ids = [diff_id, *(_digest(data) for _, data in extra_layers)]
    config = json.dumps({"architecture": "", "created": created,
                         "history": [{"created": "0001-01-01T00:00:00Z"} for _ in diff_ids], "os": "",
                         "rootfs": {"type": "layers", "diff_ids": diff_ids}, "config": {}},
                        separators=(",", ":")).encode()
    with registry.session(repo) as s:
        layers = [{"mediaType": FLUX_CONTENT, **_upload_blob(s, registry, repo, content)}]
        layers += [{"mediaType": media_type, **_upload_blob(s, registry, repo, data)}
                   for media_type, data in extra_layers]
        config_ref = _upload_blob(s, registry, repo, config)
        meta = {CREATED_ANNOTATION: created, SOURCE_ANNOTATION: source, REVISION_ANNOTATION: revision,
                **(annotations or {})}
        manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                    "config": {"mediaType": FLUX_CONFIG, "size": config_ref["size"], "digest": config_ref["digest"]},
                    "layers": [{"mediaType": d["mediaType"], "size": d["size"], "digest": d["digest"]} for d in layers],
                    "annotations": dict(sorted(meta.items()))}
        body = json.dumps(manifest, separators=(",", ":")).encode()
        put = s.put(f"{registry.url}/v2/{repo}/manifests/{tag}", data=body, headers={"Content-Type": OCI_MANIFEST},
                    timeout=10)
        assert put.status_code == 201, put.text
        assert put.headers["Docker-Content-Digest"] == _digest(body)
        return put.headers["Docker-Content-Digest"]
