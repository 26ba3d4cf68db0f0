"""Flux OCI artifacts (`flux push artifact`) pulled for an OCIRepository, against a real registry.

Artifacts are pushed to Debian's docker-registry (the CNCF distribution registry) as fluxcd/pkg's
oci/push.go pushes them, without auth, behind htpasswd Basic auth and behind Docker's token
auth. `spec.ref` is resolved as source-controller resolves it (digest over semver over tag,
`latest` by default, Masterminds ranges with Flux's pre-release rule, `semverFilter`, Helm's
`_` for `+`), with Flux's revision strings. A fetch verifies the blob's digest before it reads
a byte of it, chooses the layer as `spec.layerSelector` says, and unpacks it only inside the
destination: archives that reach out of it (`..`, absolute names, links to /etc) are refused
whole and leave nothing behind, anywhere.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from herald.registry import Credentials, RegistryClient, RegistryError
from reconciler.oci import (
    COPY,
    HELM_CHART_MEDIA_TYPE,
    ArtifactError,
    Resolved,
    copied_layer,
    fetch,
    parse_url,
    resolve,
)
from tests.fixtures_herald import free_port
from tests.registry import (
    FLUX_CONTENT,
    PASSWORD,
    USERNAME,
    Answer,
    Auth,
    PagingRegistry,
    Registry,
    Seen,
    flux_tarball,
    install,
    push_flux_artifact,
    registry_error,
    start_registry,
)

FILES = {
    "kustomization.yaml": b"apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [deploy]\n",
    "deploy/web.yaml": b"apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n",
    "deploy/jobs/nightly.yaml": b"apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: nightly}\n",
}


@pytest.fixture(scope="module")
def registries(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[Auth], Registry]]:
    """A running docker-registry per kind of auth, started when a test first asks for it."""
    reason = install()
    if reason:
        pytest.fail(f"no docker-registry for the OCI artifact scenarios: {reason}")
    running: dict[Auth, Registry] = {}
    with ExitStack() as stack:
        def registry(auth: Auth) -> Registry:
            if auth not in running:
                running[auth] = stack.enter_context(start_registry(tmp_path_factory.mktemp(f"oci-{auth}"), auth))
            return running[auth]

        yield registry


@pytest.fixture
def registry(registries: Callable[[Auth], Registry]) -> Registry:
    return registries("none")


def client_for(registry: Registry, password: str = PASSWORD) -> RegistryClient:
    credentials = {registry.host: Credentials(USERNAME, password)} if registry.auth != "none" else None
    return RegistryClient(credentials, insecure=True, timeout=10)


def new_repo() -> str:
    return f"fleet/app-{uuid.uuid4().hex[:10]}"  # a repository of the test's own


def oci_url(registry: Registry, repo: str) -> str:
    return f"oci://{registry.host}/{repo}"


def tree(root: Path) -> dict[str, bytes]:
    """Every regular file under `root`, by slash-separated relative path."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def everything(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


def blob_path(registry: Registry, data: bytes) -> Path:
    """Where docker-registry keeps the blob `data` on disk."""
    hexa = hashlib.sha256(data).hexdigest()
    return registry.dir / "storage" / "docker" / "registry" / "v2" / "blobs" / "sha256" / hexa[:2] / hexa / "data"


def tgz(*entries: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    """A hand-made tar+gzip layer: each TarInfo as given (names are not cleaned), with its data."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return gzip.compress(raw.getvalue(), mtime=0)


def entry(name: str, data: bytes | None = b"", *, kind: bytes = tarfile.REGTYPE, link: str = "",
          mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, mode
    return info, (data if kind == tarfile.REGTYPE else None)


# -- resolve and fetch, with and without auth -------------------------------------------------------


@pytest.mark.parametrize("auth", ["none", "htpasswd", "token"])
def test_an_artifact_pushed_as_flux_pushes_it_is_resolved_by_tag_and_extracted(
        registries: Callable[[Auth], Registry], auth: Auth, tmp_path: Path) -> None:
    registry = registries(auth)
    repo = new_repo()
    digest = push_flux_artifact(registry, repo, "v1.0.0", FILES)
    url = oci_url(registry, repo)
    with client_for(registry) as client:
        resolved = resolve(client, url, {"tag": "v1.0.0"})
        assert resolved == Resolved("v1.0.0", digest, f"v1.0.0@{digest}")
        fetch(client, url, resolved, tmp_path / "out")
    assert tree(tmp_path / "out") == FILES
    assert everything(tmp_path / "out") == {*FILES, "deploy", "deploy/jobs"}
    assert everything(tmp_path) == {"out", *(f"out/{p}" for p in everything(tmp_path / "out"))}  # no leftovers


def test_without_a_ref_the_tag_is_latest_as_flux_defaults_it(registry: Registry, tmp_path: Path) -> None:
    repo = new_repo()
    push_flux_artifact(registry, repo, "v2", {"a.yaml": b"old: true\n"})
    digest = push_flux_artifact(registry, repo, "latest", {"a.yaml": b"new: true\n"})
    url = oci_url(registry, repo)
    with client_for(registry) as client:
        for ref in (None, {}, {"tag": ""}):
            assert resolve(client, url, ref) == Resolved("latest", digest, f"latest@{digest}")
        fetch(client, url, resolve(client, url, None), tmp_path / "out")
    assert tree(tmp_path / "out") == {"a.yaml": b"new: true\n"}


def test_the_artifact_matches_what_flux_push_artifact_makes(registry: Registry) -> None:
    """The test helper's artifact has the manifest fluxcd/pkg oci/push.go writes."""
    repo = new_repo()
    digest = push_flux_artifact(registry, repo, "v1", FILES, source="https://github.com/acme/fleet.git",
                                revision="main@sha1:" + "a" * 40, created="2025-01-02T03:04:05Z")
    with registry.session(repo) as s:
        got = s.get(f"{registry.url}/v2/{repo}/manifests/{digest}",
                    headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}, timeout=10)
    manifest = got.json()
    assert got.headers["Content-Type"] == "application/vnd.oci.image.manifest.v1+json"
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert manifest["config"]["mediaType"] == "application/vnd.cncf.flux.config.v1+json"
    assert [layer["mediaType"] for layer in manifest["layers"]] == [FLUX_CONTENT]
    assert FLUX_CONTENT == "application/vnd.cncf.flux.content.v1.tar+gzip"
    assert manifest["annotations"] == {"org.opencontainers.image.created": "2025-01-02T03:04:05Z",
                                       "org.opencontainers.image.revision": "main@sha1:" + "a" * 40,
                                       "org.opencontainers.image.source": "https://github.com/acme/fleet.git"}
    with tarfile.open(fileobj=io.BytesIO(flux_tarball(FILES))) as tar:
        names = [m.name for m in tar]
    assert names == [".", "deploy", "deploy/jobs", "deploy/jobs/nightly.yaml", "deploy/web.yaml", "kustomization.yaml"]


# -- spec.ref --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def versions(registries: Callable[[Auth], Registry]) -> tuple[Registry, str, dict[str, str]]:
    """One repository with many tags, each a different artifact: tag -> manifest digest."""
    registry = registries("none")
    repo = new_repo()
    tags = ["1.0.0", "1.2.0", "1.10.0", "v1.11.0", "2.0.0-rc.1", "2.0.0-rc.2", "latest", "1.9", "3.0.0-beta.1"]
    return registry, repo, {t: push_flux_artifact(registry, repo, t, {"version": t.encode()}) for t in tags}


@pytest.mark.parametrize(("semver", "semver_filter", "chosen"), [
    (">=1.0.0 <2.0.0", "", "v1.11.0"),         # 1.10 > 1.9 > 1.2: versions, not strings; `v` allowed
    (">=1.0.0", "", "v1.11.0"),                # pre-releases only for a range that names one
    (">=1.0.0-0", "", "3.0.0-beta.1"),         # ... and then any pre-release in range (Masterminds)
    (">=2.0.0-0 <2.1.0", "", "2.0.0-rc.2"),
    (">=2.0.0-0 <3.0.0", "", "3.0.0-beta.1"),   # a pre-release of 3.0.0 is below 3.0.0
    ("~1.2", "", "1.2.0"),
    ("1.x", "^1\\.[0-9]\\.", "1.2.0"),          # semverFilter: only 1.0.0 and 1.2.0 are left
    (">=1.0.0-0", ".*-rc.*", "2.0.0-rc.2"),   # Flux's documented example
    ("*", "", "v1.11.0"),
])
def test_semver_picks_the_highest_matching_tag(versions: tuple[Registry, str, dict[str, str]], semver: str,
                                               semver_filter: str, chosen: str) -> None:
    registry, repo, digests = versions
    with client_for(registry) as client:
        resolved = resolve(client, oci_url(registry, repo), {"semver": semver, "semverFilter": semver_filter})
    assert resolved == Resolved(chosen, digests[chosen], f"{chosen}@{digests[chosen]}")


def test_digest_wins_over_semver_which_wins_over_tag(versions: tuple[Registry, str, dict[str, str]],
                                                     tmp_path: Path) -> None:
    registry, repo, digests = versions
    url = oci_url(registry, repo)
    with client_for(registry) as client:
        by_semver = resolve(client, url, {"semver": "~1.2", "tag": "1.0.0"})
        assert by_semver.tag == "1.2.0"
        pinned = digests["1.0.0"]
        by_digest = resolve(client, url, {"digest": pinned, "semver": "~1.2", "tag": "latest"})
        # Flux's revision for a digest ref is the digest alone.
        assert by_digest == Resolved(None, pinned, pinned)
        fetch(client, url, by_digest, tmp_path / "out")
    assert tree(tmp_path / "out") == {"version": b"1.0.0"}


def test_semver_without_a_match_or_with_a_bad_range_is_not_retryable(
        versions: tuple[Registry, str, dict[str, str]]) -> None:
    registry, repo, _ = versions
    url = oci_url(registry, repo)
    with client_for(registry) as client:
        with pytest.raises(ArtifactError) as none:
            resolve(client, url, {"semver": ">=4.0.0"})
        with pytest.raises(ArtifactError) as bad:
            resolve(client, url, {"semver": "newest please"})
        with pytest.raises(ArtifactError) as filtered:
            resolve(client, url, {"semver": ">=1.0.0", "semverFilter": "(?=x)"})
    assert str(none.value) == f"failed to determine the artifact tag for '{url}': no match found for semver: >=4.0.0"
    assert "semver 'newest please' parse error" in str(bad.value)
    assert "semverFilter" in str(filtered.value)
    assert not any(e.value.retryable for e in (none, bad, filtered))


def test_a_helm_chart_layer_reads_an_underscore_in_a_tag_as_semvers_plus(registry: Registry) -> None:
    repo = new_repo()
    digests = {t: push_flux_artifact(registry, repo, t, {"chart": t.encode()}) for t in ("6.2.0", "6.2.1_ref.1234567")}
    url = oci_url(registry, repo)
    with client_for(registry) as client:
        helm = resolve(client, url, {"semver": ">= 6.2.0"}, {"mediaType": HELM_CHART_MEDIA_TYPE})
        plain = resolve(client, url, {"semver": ">= 6.2.0"})
    assert helm.revision == f"6.2.1_ref.1234567@{digests['6.2.1_ref.1234567']}"
    assert plain.tag == "6.2.0"  # `6.2.1_ref.1234567` is no version unless the layer is a chart


def test_a_bad_digest_ref_is_refused_before_asking_the_registry() -> None:
    with RegistryClient(insecure=True) as client, pytest.raises(ArtifactError) as bad:
        resolve(client, f"oci://127.0.0.1:{free_port()}/app", {"digest": "sha256:abc"})
    assert "sha256:abc" in str(bad.value) and not bad.value.retryable


@pytest.mark.parametrize(("url", "message"), [
    ("ghcr.io/acme/app",
     "URL validation failed for 'ghcr.io/acme/app': URL must be in format 'oci://<domain>/<org>/<repo>'"),
    ("https://ghcr.io/acme/app", "URL must be in format 'oci://<domain>/<org>/<repo>'"),
    ("oci://ghcr.io/acme/app:v1", "URL must not contain a tag; remove ':v1'"),
    ("oci://localhost:5000/app:v1", "URL must not contain a tag; remove ':v1'"),
    ("oci://ghcr.io/acme/app@sha256:" + "0" * 64, "should not include a digest"),
    ("oci://ghcr.io/Acme/app", "must be lowercase"),
])
def test_a_url_that_is_not_an_oci_repository_is_refused_in_flux_words(url: str, message: str) -> None:
    with pytest.raises(ArtifactError) as refused:
        parse_url(url)
    assert message in str(refused.value) and not refused.value.retryable


def test_oci_urls_name_repositories_as_flux_does() -> None:
    assert str(parse_url("oci://ghcr.io/stefanprodan/manifests/podinfo")) == "ghcr.io/stefanprodan/manifests/podinfo"
    assert str(parse_url("oci://localhost:5000/app")) == "localhost:5000/app"
    assert str(parse_url("oci://acme/app")) == "docker.io/acme/app"  # no host: Docker Hub


# -- layerSelector ------------------------------------------------------------------------------------


def test_a_layer_selector_copies_a_second_layer_as_it_is(registry: Registry, tmp_path: Path) -> None:
    repo = new_repo()
    chart = tgz(entry("podinfo/Chart.yaml", b"name: podinfo\nversion: 6.2.1\n"))
    push_flux_artifact(registry, repo, "v1", FILES, extra_layers=((HELM_CHART_MEDIA_TYPE, chart),))
    url = oci_url(registry, repo)
    with client_for(registry) as client:
        resolved = resolve(client, url, {"tag": "v1"})
        fetch(client, url, resolved, tmp_path / "copied", {"mediaType": HELM_CHART_MEDIA_TYPE, "operation": COPY})
        fetch(client, url, resolved, tmp_path / "extracted", {"mediaType": HELM_CHART_MEDIA_TYPE})
        fetch(client, url, resolved, tmp_path / "first", {"operation": "extract"})
    target = copied_layer(tmp_path / "copied", resolved)
    assert target.name == f"{resolved.digest}.tgz"  # source-controller's name for it
    assert tree(tmp_path / "copied") == {target.name: chart}
    assert tree(tmp_path / "extracted") == {"podinfo/Chart.yaml": b"name: podinfo\nversion: 6.2.1\n"}
    assert tree(tmp_path / "first") == FILES  # no mediaType: the first layer, as Flux takes it


def test_a_layer_selector_without_a_match_or_with_an_unknown_operation_fails(registry: Registry,
                                                                              tmp_path: Path) -> None:
    repo = new_repo()
    push_flux_artifact(registry, repo, "v1", FILES)
    url = oci_url(registry, repo)
    with client_for(registry) as client:
        resolved = resolve(client, url, {"tag": "v1"})
        with pytest.raises(ArtifactError) as missing:
            fetch(client, url, resolved, tmp_path / "out", {"mediaType": HELM_CHART_MEDIA_TYPE})
        with pytest.raises(ArtifactError) as unknown:
            fetch(client, url, resolved, tmp_path / "out", {"operation": "move"})
    assert f"failed to find layer with media type '{HELM_CHART_MEDIA_TYPE}' in artifact" in str(missing.value)
    assert "unsupported layer operation: move" in str(unknown.value)
    assert not missing.value.retryable and not unknown.value.retryable
    assert not (tmp_path / "out").exists()


# -- integrity and safety -----------------------------------------------------------------------------


def test_a_tampered_blob_is_refused_before_anything_is_extracted(registry: Registry, tmp_path: Path) -> None:
    repo = new_repo()
    files = {**FILES, "id": uuid.uuid4().hex.encode()}  # a blob of this test's own: blobs are shared
    push_flux_artifact(registry, repo, "v1", files)
    stored = blob_path(registry, flux_tarball(files))
    evil = gzip.compress(flux_tarball({"pwned.yaml": b"kind: Namespace\n"}), mtime=0)
    original = stored.read_bytes()
    assert len(evil) < len(original)
    stored.write_bytes(evil + original[len(evil):])  # the same size, other content
    url = oci_url(registry, repo)
    with client_for(registry) as client:
        resolved = resolve(client, url, {"tag": "v1"})
        with pytest.raises(ArtifactError) as tampered:
            fetch(client, url, resolved, tmp_path / "out")
    assert "does not match its digest" in str(tampered.value) and url in str(tampered.value)
    assert (tampered.value.status, tampered.value.retryable) == (None, False)
    assert not (tmp_path / "out").exists() and everything(tmp_path) == set()


SECRET = "herald-oci-escape-probe"  # constant: test ids must be the same on every xdist worker


@pytest.mark.parametrize(("entries", "named", "why"), [
    ([entry("ok.yaml", b"a: 1\n"), entry("../escape", b"x")], "'../escape'", "leads out of the artifact"),
    ([entry("deploy/../../escape", b"x")], "'deploy/../../escape'", "leads out of the artifact"),
    ([entry(f"/tmp/{SECRET}", b"x")], f"'/tmp/{SECRET}'", "is an absolute path"),
    ([entry("etc", kind=tarfile.SYMTYPE, link="/etc"), entry(f"etc/{SECRET}", b"x")], "'etc'",
     "is a symlink to '/etc', outside the artifact"),
    ([entry("deploy", kind=tarfile.DIRTYPE, mode=0o755), entry("deploy/up", kind=tarfile.SYMTYPE, link="../../..")],
     "'deploy/up'", "is a symlink to '../../..', outside the artifact"),
    ([entry("passwd", kind=tarfile.LNKTYPE, link="/etc/passwd")], "'passwd'", "is a hard link to '/etc/passwd'"),
    ([entry("../hard", kind=tarfile.LNKTYPE, link="ok.yaml")], "'../hard'", "leads out of the artifact"),
    ([entry("null", kind=tarfile.CHRTYPE)], "'null'", "is a character device"),
    ([entry("pipe", kind=tarfile.FIFOTYPE)], "'pipe'", "is a FIFO"),
    ([entry("dir\\..\\..\\x", b"x")], "'dir\\\\..\\\\..\\\\x'", "contains a backslash"),
])
def test_an_archive_that_reaches_outside_dest_is_refused_and_nothing_is_written(
        registry: Registry, tmp_path: Path, entries: list, named: str, why: str) -> None:
    repo = new_repo()
    push_flux_artifact(registry, repo, "v1", {}, layer=tgz(*entries))
    url = oci_url(registry, repo)
    dest = tmp_path / "work" / "out"
    with client_for(registry) as client:
        resolved = resolve(client, url, {"tag": "v1"})
        with pytest.raises(ArtifactError) as refused:
            fetch(client, url, resolved, dest)
    message = str(refused.value)
    assert f"tar entry {named}" in message and why in message, message
    assert f"artifact '{url}' revision '{resolved.revision}'" in message
    assert not refused.value.retryable
    assert everything(tmp_path) == {"work"}  # dest made, then removed: nothing anywhere under tmp_path
    assert not Path("/etc", SECRET).exists() and not Path("/tmp", SECRET).exists()


def test_links_inside_the_artifact_are_skipped_as_flux_skips_symlinks(registry: Registry, tmp_path: Path) -> None:
    repo = new_repo()
    push_flux_artifact(registry, repo, "v1", {}, layer=tgz(
        entry("./", kind=tarfile.DIRTYPE, mode=0o755),
        entry("./deploy/web.yaml", b"kind: Deployment\n", mode=0o4777),
        entry("current", kind=tarfile.SYMTYPE, link="deploy"),
        entry("deploy/again.yaml", kind=tarfile.LNKTYPE, link="deploy/web.yaml"),
        entry("deploy/up.yaml", kind=tarfile.SYMTYPE, link="../deploy/./web.yaml"),
    ))
    url = oci_url(registry, repo)
    with client_for(registry) as client:
        fetch(client, url, resolve(client, url, {"tag": "v1"}), tmp_path / "out")
    assert tree(tmp_path / "out") == {"deploy/web.yaml": b"kind: Deployment\n"}
    assert everything(tmp_path / "out") == {"deploy", "deploy/web.yaml"}
    assert (tmp_path / "out" / "deploy" / "web.yaml").stat().st_mode & 0o7777 == 0o755  # no setuid, no o+w


def test_the_size_limit_bounds_the_files_extracted_and_the_blob(registry: Registry, tmp_path: Path) -> None:
    repo = new_repo()
    push_flux_artifact(registry, repo, "v1", {"small.yaml": b"a" * 1000, "big.yaml": b"b" * 5000})
    incompressible = os.urandom(8000)
    push_flux_artifact(registry, repo, "v2", {"random": incompressible})
    url = oci_url(registry, repo)
    with client_for(registry) as client:
        with pytest.raises(ArtifactError) as files:
            fetch(client, url, resolve(client, url, {"tag": "v1"}), tmp_path / "v1", max_bytes=4096)
        with pytest.raises(ArtifactError) as blob:
            fetch(client, url, resolve(client, url, {"tag": "v2"}), tmp_path / "v2", max_bytes=4096)
        fetch(client, url, resolve(client, url, {"tag": "v1"}), tmp_path / "fits", max_bytes=6000)
    assert "tar entry 'big.yaml'" in str(files.value) and "limit of 4096 bytes" in str(files.value)
    assert "more than the limit of 4096" in str(blob.value)
    assert not files.value.retryable and not blob.value.retryable
    assert everything(tmp_path) == {"fits", "fits/big.yaml", "fits/small.yaml"}


def test_a_layer_that_is_not_a_tar_gz_is_refused(registry: Registry, tmp_path: Path) -> None:
    repo = new_repo()
    push_flux_artifact(registry, repo, "v1", {}, layer=b"plain text, not gzip")
    url = oci_url(registry, repo)
    with client_for(registry) as client, pytest.raises(ArtifactError) as refused:
        fetch(client, url, resolve(client, url, {"tag": "v1"}), tmp_path / "out")
    assert "not a readable gzip-compressed tar archive" in str(refused.value)
    assert not (tmp_path / "out").exists()


def test_dest_must_be_empty_and_stays_as_it_was_after_a_failure(registry: Registry, tmp_path: Path) -> None:
    repo = new_repo()
    push_flux_artifact(registry, repo, "v1", {}, layer=tgz(entry("a.yaml", b"a"), entry("/abs", b"x")))
    url = oci_url(registry, repo)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep").write_bytes(b"mine")
    (tmp_path / "empty").mkdir()
    with client_for(registry) as client:
        resolved = resolve(client, url, {"tag": "v1"})
        with pytest.raises(ValueError, match="not empty"):
            fetch(client, url, resolved, tmp_path / "full")
        with pytest.raises(ArtifactError):
            fetch(client, url, resolved, tmp_path / "empty")
    assert everything(tmp_path) == {"full", "full/keep", "empty"}


# -- failures and whether to retry --------------------------------------------------------------------


def test_a_missing_tag_or_repository_is_not_retryable_and_names_the_tag(registry: Registry) -> None:
    repo = new_repo()
    push_flux_artifact(registry, repo, "v1", FILES)
    with client_for(registry) as client:
        with pytest.raises(ArtifactError) as no_tag:
            resolve(client, oci_url(registry, repo), {"tag": "v9.9.9"})
        with pytest.raises(ArtifactError) as no_repo:
            resolve(client, oci_url(registry, "fleet/nothing-here"), {"semver": ">=1.0.0"})
    assert "tag 'v9.9.9' not found" in str(no_tag.value) and oci_url(registry, repo) in str(no_tag.value)
    assert (no_tag.value.status, no_tag.value.retryable) == (404, False)
    assert (no_repo.value.status, no_repo.value.retryable) == (404, False)


def test_a_digest_that_is_not_there_fails_the_fetch_not_retryable(registry: Registry, tmp_path: Path) -> None:
    repo = new_repo()
    push_flux_artifact(registry, repo, "v1", FILES)
    url = oci_url(registry, repo)
    missing = "sha256:" + "0" * 64
    with client_for(registry) as client:
        resolved = resolve(client, url, {"digest": missing})  # Flux asks the registry nothing for a digest
        with pytest.raises(ArtifactError) as absent:
            fetch(client, url, resolved, tmp_path / "out")
    assert missing in str(absent.value) and "not found" in str(absent.value)
    assert (absent.value.status, absent.value.retryable) == (404, False)


@pytest.mark.parametrize("auth", ["htpasswd", "token"])
def test_wrong_credentials_are_not_retryable(registries: Callable[[Auth], Registry], auth: Auth) -> None:
    registry = registries(auth)
    repo = new_repo()
    push_flux_artifact(registry, repo, "v1", FILES)
    url = oci_url(registry, repo)
    with client_for(registry, password="not-the-password") as client, pytest.raises(ArtifactError) as refused:
        resolve(client, url, {"tag": "v1"})
    with RegistryClient(insecure=True) as anonymous, pytest.raises(ArtifactError) as anon:
        resolve(anonymous, url, {"semver": "*"})
    for error in (refused.value, anon.value):
        assert error.status == 401 and not error.retryable and "unauthorized" in str(error)
    assert "not-the-password" not in str(refused.value) and PASSWORD not in str(refused.value)


class LyingRegistry(PagingRegistry):
    """Serves a manifest other than the one whose digest it announces (and was asked for)."""

    def answer(self, request: Seen) -> Answer:
        repo, _, reference = request.path.removeprefix("/v2/").partition("/manifests/")
        tag = next((t for t in self.repos.get(repo, ()) if self.digest_of(repo, t) == reference), None)
        if tag:  # by digest, as by its tag
            request = Seen(request.method, f"/v2/{repo}/manifests/{tag}", request.query, request.headers)
        real = super().answer(request)
        if "/manifests/" not in request.path or real.status != 200:
            return real
        return Answer(200, real.headers, real.body.replace(b'"manifests": []', b'"manifests": [{}]'))


def test_a_manifest_that_is_not_the_digest_it_was_asked_by_is_refused(tmp_path: Path) -> None:
    digest = PagingRegistry.digest_of("app", "v1")
    with LyingRegistry({"app": ["v1"]}) as lying, RegistryClient(insecure=True) as client:
        with pytest.raises(RegistryError) as by_tag:
            client.manifest(f"{lying.host}/app", "v1")
        with pytest.raises(RegistryError) as by_digest:
            client.manifest(f"{lying.host}/app", digest)
        with pytest.raises(ArtifactError) as fetched:
            fetch(client, f"oci://{lying.host}/app", Resolved(None, digest, digest), tmp_path / "out")
    for error in (by_tag.value, by_digest.value):
        assert f"does not match its digest {digest}" in str(error) and not error.retryable
    assert "does not match its digest" in str(fetched.value) and not fetched.value.retryable
    assert not (tmp_path / "out").exists()


def test_outages_rate_limits_and_refused_connections_are_retryable() -> None:
    with PagingRegistry({"app": ["v1", "v2"]}) as paging, RegistryClient(insecure=True) as client:
        url = f"oci://{paging.host}/app"
        paging.fail_next(registry_error(503, "UNAVAILABLE", "service unavailable"))
        with pytest.raises(ArtifactError) as unavailable:
            resolve(client, url, {"tag": "v1"})
        paging.fail_next(registry_error(429, "TOOMANYREQUESTS", "slow down", **{"Retry-After": "7"}))
        with pytest.raises(ArtifactError) as limited:
            resolve(client, url, {"semver": "*"})
        assert resolve(client, url, {"tag": "v1"}).revision == f"v1@{PagingRegistry.digest_of('app', 'v1')}"
    assert (unavailable.value.status, unavailable.value.retryable) == (503, True)
    assert (limited.value.status, limited.value.retryable, limited.value.retry_after) == (429, True, 7.0)
    with RegistryClient(insecure=True, timeout=5) as client, pytest.raises(ArtifactError) as refused:
        resolve(client, f"oci://127.0.0.1:{free_port()}/app", None)
    assert (refused.value.status, refused.value.retryable) == (None, True)
