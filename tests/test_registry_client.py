"""The registry client that image automation scans with, against real registries.

Image names are taken as Flux's ImageRepository `spec.image` takes them: Docker Hub's short
names are made canonical, and a scheme, a tag or a digest is refused in
image-reflector-controller's words. Credentials come from a dockerconfigjson Secret however
its keys are spelled.

Tags and digests are read from Debian's docker-registry (the CNCF distribution registry 2.8)
without auth, behind htpasswd Basic auth, behind Docker's token auth (our own issuer signing
the JWTs), and behind TLS that demands a client certificate. Pagination, rate limits and
outages are played by `PagingRegistry`, which pages as GHCR and Docker Hub do.

Failures say whether to retry: 401/403 and 404 are configuration to fix, 429 and 5xx and
dropped connections are not, and no message ever holds a password or token.
"""

from __future__ import annotations

import base64
import email.utils
import json
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack

import pytest
import requests

from herald.registry import (
    Credentials,
    CredentialsError,
    ImageName,
    ImageNameError,
    RegistryClient,
    RegistryError,
    api_base,
    credentials_for,
    parse_dockerconfigjson,
    parse_image,
)
from herald.registry.auth import Authenticator, parse_challenges
from tests.fixtures_herald import free_port
from tests.registry import (
    PASSWORD,
    USERNAME,
    Auth,
    PagingRegistry,
    Registry,
    install,
    push_image,
    push_index,
    registry_error,
    start_registry,
)


@pytest.fixture(scope="module")
def registries(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[Auth], Registry]]:
    """A running docker-registry per kind of auth, started when a test first asks for it."""
    reason = install()
    if reason:
        pytest.fail(f"no docker-registry for the registry scenarios: {reason}")
    running: dict[Auth, Registry] = {}
    with ExitStack() as stack:
        def registry(auth: Auth) -> Registry:
            if auth not in running:
                running[auth] = stack.enter_context(start_registry(tmp_path_factory.mktemp(f"registry-{auth}"), auth))
            return running[auth]

        yield registry


@pytest.fixture
def plain_registry(registries: Callable[[Auth], Registry]) -> Registry:
    return registries("none")


@pytest.fixture
def basic_registry(registries: Callable[[Auth], Registry]) -> Registry:
    return registries("htpasswd")


@pytest.fixture
def token_registry(registries: Callable[[Auth], Registry]) -> Registry:
    return registries("token")


@pytest.fixture
def mtls_registry(registries: Callable[[Auth], Registry]) -> Registry:
    return registries("mtls")


# -- image names -----------------------------------------------------------------------------


@pytest.mark.parametrize(("spec_image", "canonical"), [
    ("nginx", "docker.io/library/nginx"),
    ("acme/app", "docker.io/acme/app"),
    ("docker.io/nginx", "docker.io/library/nginx"),
    ("index.docker.io/acme/app", "docker.io/acme/app"),
    ("registry-1.docker.io/library/nginx", "docker.io/library/nginx"),
    ("ghcr.io/fluxcd/source-controller", "ghcr.io/fluxcd/source-controller"),
    ("GHCR.io/fluxcd/flux-cli", "ghcr.io/fluxcd/flux-cli"),
    ("localhost/app", "localhost/app"),
    ("localhost:5000/team/app", "localhost:5000/team/app"),
    ("127.0.0.1:5000/app", "127.0.0.1:5000/app"),
    ("registry.example.com/a/b/c", "registry.example.com/a/b/c"),
    ("acme/my_app-2.x", "docker.io/acme/my_app-2.x"),
])
def test_image_names_are_made_canonical_as_flux_makes_them(spec_image: str, canonical: str) -> None:
    name = parse_image(spec_image)
    assert str(name) == canonical
    assert name == parse_image(canonical)  # one repository, however it was spelled


def test_the_first_component_is_a_host_only_with_a_dot_a_colon_or_as_localhost() -> None:
    assert parse_image("acme/app") == ImageName("docker.io", "acme/app")
    assert parse_image("acme.io/app") == ImageName("acme.io", "app")
    assert parse_image("acme:5000/app") == ImageName("acme:5000", "app")
    assert parse_image("localhost/app") == ImageName("localhost", "app")


@pytest.mark.parametrize(("spec_image", "words"), [
    ("https://ghcr.io/fluxcd/flux",
     "image 'https://ghcr.io/fluxcd/flux' should not include URL scheme; remove 'https://'"),
    ("oci://ghcr.io/fluxcd/flux", "should not include URL scheme; remove 'oci://'"),
    ("nginx:1.2", "image 'nginx:1.2' should not include a tag; remove ':1.2'"),
    ("localhost:5000/app:v1", "should not include a tag; remove ':v1'"),
    ("nginx@sha256:" + "a" * 64, "should not include a digest"),
    ("", "image must not be empty"),
    ("ghcr.io/Fluxcd/flux", "repository name must be lowercase"),
    ("nginx ", "must not contain whitespace"),
    ("ghcr.io/a//b", "is not a repository name"),
    ("ghcr.io/-a", "is not a repository name"),
    ("ghcr.io/" + "a" * 250, "must not be more than 255 characters"),
])
def test_a_scheme_a_tag_a_digest_or_a_bad_name_is_refused(spec_image: str, words: str) -> None:
    with pytest.raises(ImageNameError) as refused:
        parse_image(spec_image)
    assert words in str(refused.value)


def test_the_api_is_on_registry_1_for_docker_hub_and_on_the_host_elsewhere() -> None:
    assert api_base(parse_image("nginx")) == "https://registry-1.docker.io"
    assert api_base(parse_image("nginx"), insecure=True) == "https://registry-1.docker.io"
    assert api_base(parse_image("ghcr.io/fluxcd/flux")) == "https://ghcr.io"
    assert api_base(parse_image("127.0.0.1:5000/app"), insecure=True) == "http://127.0.0.1:5000"


# -- credentials -------------------------------------------------------------------------------


def _auth(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def test_dockerconfigjson_gives_credentials_by_host_however_the_keys_are_spelled() -> None:
    secret_value = json.dumps({"auths": {
        "https://index.docker.io/v1/": {"auth": _auth("hubuser", "hub:pass")},
        "ghcr.io": {"username": "ghuser", "password": "ghp_token"},
        "https://quay.io": {"auth": _auth("quser", "qpass"), "email": "q@example.com"},
        "registry.example.com:5000/v2/": {"username": "u", "password": "p"},
    }})
    creds = parse_dockerconfigjson(secret_value)
    assert credentials_for(creds, parse_image("nginx").registry) == Credentials("hubuser", "hub:pass")
    assert credentials_for(creds, "ghcr.io") == Credentials("ghuser", "ghp_token")
    assert credentials_for(creds, "quay.io") == Credentials("quser", "qpass")
    assert credentials_for(creds, "registry.example.com:5000") == Credentials("u", "p")
    assert credentials_for(creds, "registry.example.com") is None
    assert "hub:pass" not in repr(creds)  # credentials end up in logs through reprs too


def test_auth_wins_over_username_and_password_as_in_dockers_own_reader() -> None:
    creds = parse_dockerconfigjson(json.dumps({"auths": {"ghcr.io": {
        "auth": _auth("from-auth", "pw1"), "username": "from-fields", "password": "pw2"}}}))
    assert creds["ghcr.io"] == Credentials("from-auth", "pw1")


@pytest.mark.parametrize(("value", "words"), [
    ("not json s3cr3t", "is not JSON"),
    ('{"ghcr.io": {"auth": "x"}}', "no 'auths' object"),
    ('{"auths": {"ghcr.io": {"auth": "%%s3cr3t%%"}}}', "is not base64"),
    ('{"auths": {"ghcr.io": {"auth": "' + base64.b64encode(b"s3cr3t").decode() + '"}}}', "user:password"),
    ('{"auths": {"ghcr.io": {"password": "s3cr3t"}}}', "neither 'auth' nor"),
])
def test_a_bad_dockerconfigjson_is_refused_without_quoting_it(value: str, words: str) -> None:
    with pytest.raises(CredentialsError) as refused:
        parse_dockerconfigjson(value)
    assert words in str(refused.value)
    assert "s3cr3t" not in str(refused.value)


def test_www_authenticate_challenges_are_read_as_registries_send_them() -> None:
    hub = 'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",' \
          'scope="repository:library/nginx:pull"'
    [challenge] = parse_challenges(hub)
    assert challenge.scheme == "bearer"
    assert challenge.params == {"realm": "https://auth.docker.io/token", "service": "registry.docker.io",
                                "scope": "repository:library/nginx:pull"}
    basic, bearer = parse_challenges('Basic realm="Registry Realm", Bearer realm="https://t/x",error=insufficient_scope')
    assert (basic.scheme, basic.params) == ("basic", {"realm": "Registry Realm"})
    assert bearer.params == {"realm": "https://t/x", "error": "insufficient_scope"}


# -- tags and digests from a real registry ---------------------------------------------------


def test_tags_are_listed_from_a_registry_without_auth(plain_registry: Registry) -> None:
    pushed = {tag: push_image(plain_registry, "team/web", tag) for tag in ("1.0.0", "1.1.0", "2.0.0-rc.1")}
    with RegistryClient(insecure=True) as client:
        tags = client.tags(f"{plain_registry.host}/team/web")
        assert sorted(tags) == sorted(pushed)
        for tag, digest in pushed.items():
            assert client.digest(f"{plain_registry.host}/team/web", tag) == digest


def test_a_digest_is_the_manifests_for_docker_and_oci_images_and_the_indexs_for_multi_arch(
        plain_registry: Registry) -> None:
    """The registry answers an OCI manifest or index only to an Accept that names it (else
    404): the HEAD must accept all four kinds, and a multi-arch tag's digest is its index's."""
    image = ImageName(plain_registry.host, "team/multi")
    docker = push_image(plain_registry, image.repository, "docker")
    oci = push_image(plain_registry, image.repository, "oci", oci=True)
    index = push_index(plain_registry, image.repository, "multi", ("amd64", "arm64"))
    with RegistryClient(insecure=True) as client:
        assert client.digest(image, "docker") == docker
        assert client.digest(image, "oci") == oci
        assert client.digest(image, "multi") == index
        assert client.digest(image, "multi-arm64") not in (None, index)


def test_an_unknown_tag_has_no_digest_and_an_unknown_repository_is_not_found(plain_registry: Registry) -> None:
    push_image(plain_registry, "team/known", "1.0.0")
    with RegistryClient(insecure=True) as client:
        assert client.digest(f"{plain_registry.host}/team/known", "9.9.9") is None
        with pytest.raises(RegistryError) as missing:
            client.tags(f"{plain_registry.host}/team/unknown")
    error = missing.value
    assert (error.status, error.retryable, error.retry_after) == (404, False, None)
    assert "not found" in str(error)
    assert f"{plain_registry.host}/team/unknown" in str(error) and f"http://{plain_registry.host}" in str(error)


def test_a_tag_that_is_not_one_is_refused_before_any_request() -> None:
    with RegistryClient() as client, pytest.raises(ValueError):
        client.digest("127.0.0.1:1/app", "../../blobs/x")


def test_basic_auth_sends_the_secrets_credentials(basic_registry: Registry) -> None:
    digest = push_image(basic_registry, "team/api", "1.0.0")
    config = json.dumps({"auths": {f"http://{basic_registry.host}": {"auth": _auth(USERNAME, PASSWORD)}}})
    with RegistryClient(parse_dockerconfigjson(config), insecure=True) as client:
        assert client.tags(f"{basic_registry.host}/team/api") == ["1.0.0"]
        assert client.digest(f"{basic_registry.host}/team/api", "1.0.0") == digest


def test_wrong_credentials_are_unauthorized_not_retryable_and_never_quoted(basic_registry: Registry) -> None:
    push_image(basic_registry, "team/api", "1.0.0")
    wrong = "wr0ng-pa55word"
    with RegistryClient({basic_registry.host: Credentials(USERNAME, wrong)}, insecure=True) as client, \
            pytest.raises(RegistryError) as refused:
        client.tags(f"{basic_registry.host}/team/api")
    error = refused.value
    assert (error.status, error.retryable) == (401, False)
    assert "unauthorized" in str(error) and f"{basic_registry.host}/team/api" in str(error)
    for secret in (wrong, _auth(USERNAME, wrong)):
        assert secret not in str(error) and secret not in repr(error)


def test_no_credentials_for_a_basic_registry_is_unauthorized(basic_registry: Registry) -> None:
    with RegistryClient({"ghcr.io": Credentials("someone", "else")}, insecure=True) as client, \
            pytest.raises(RegistryError) as refused:
        client.tags(f"{basic_registry.host}/team/api")
    assert (refused.value.status, refused.value.retryable) == (401, False)
    assert "none are given for" in str(refused.value)


def test_token_auth_gets_a_token_with_the_secrets_credentials_and_reuses_it(token_registry: Registry) -> None:
    """Docker's token flow: 401 with a Bearer challenge, the realm asked for the challenge's
    service and scope with Basic credentials, the token sent as Bearer; then cached."""
    digest = push_image(token_registry, "team/token", "1.0.0")
    issuer = token_registry.issuer
    assert issuer
    before = len(issuer.token_requests)
    image = f"{token_registry.host}/team/token"
    with RegistryClient({token_registry.host: Credentials(USERNAME, PASSWORD)}, insecure=True) as client:
        assert client.tags(image) == ["1.0.0"]
        assert client.tags(image) == ["1.0.0"]
        assert client.digest(image, "1.0.0") == digest
    [asked] = issuer.token_requests[before:]  # one token for three calls
    assert asked.query == {"service": "herald-test-registry", "scope": "repository:team/token:pull",
                           "account": USERNAME}
    assert asked.headers["authorization"] == f"Basic {_auth(USERNAME, PASSWORD)}"


def test_token_auth_with_wrong_credentials_is_unauthorized(token_registry: Registry) -> None:
    push_image(token_registry, "team/token", "1.0.0")
    with RegistryClient({token_registry.host: Credentials(USERNAME, "wr0ng-pa55word")}, insecure=True) as client, \
            pytest.raises(RegistryError) as refused:
        client.tags(f"{token_registry.host}/team/token")
    error = refused.value
    assert (error.status, error.retryable) == (401, False)
    assert "getting a token" in str(error) and "incorrect username or password" in str(error)
    assert "wr0ng-pa55word" not in str(error)


def test_an_anonymous_token_without_access_is_unauthorized(token_registry: Registry) -> None:
    push_image(token_registry, "team/private", "1.0.0")
    with RegistryClient(insecure=True) as client, pytest.raises(RegistryError) as refused:
        client.tags(f"{token_registry.host}/team/private")
    assert (refused.value.status, refused.value.retryable) == (401, False)


def test_a_token_without_expires_in_is_kept_60_seconds(token_registry: Registry) -> None:
    issuer = token_registry.issuer
    assert issuer
    push_image(token_registry, "team/clock", "1.0.0")
    image = ImageName(token_registry.host, "team/clock")
    url = f"{token_registry.url}/v2/team/clock/tags/list"
    now = [1000.0]
    issuer.expires_in = None
    try:
        with requests.Session() as session:
            auth = Authenticator(session, {token_registry.host: Credentials(USERNAME, PASSWORD)}, timeout=10,
                                 clock=lambda: now[0])
            challenge = session.get(url)
            assert challenge.status_code == 401
            first = auth.answer(image, challenge, "listing")
            assert session.get(url, headers={"Authorization": first}).status_code == 200
            asked = len(issuer.token_requests)
            now[0] += 50
            assert auth.authorization(image, "listing") == first
            now[0] += 10
            renewed = auth.authorization(image, "listing")
            assert len(issuer.token_requests) == asked + 1 and renewed != first
    finally:
        issuer.expires_in = 300


def test_a_registry_behind_mtls_is_read_with_its_ca_and_a_client_certificate(mtls_registry: Registry) -> None:
    digest = push_image(mtls_registry, "team/secure", "1.0.0")
    client_pair = mtls_registry.client
    assert client_pair and mtls_registry.ca_pem
    image = f"{mtls_registry.host}/team/secure"
    with RegistryClient(ca_pem=mtls_registry.ca_pem, cert_pem=client_pair.cert_pem,
                        key_pem=client_pair.key_pem) as client:
        assert client.tags(image) == ["1.0.0"]
        assert client.digest(image, "1.0.0") == digest


@pytest.mark.parametrize("setup", ["no client certificate", "the system's CAs"])
def test_tls_failures_are_configuration_not_retried(mtls_registry: Registry, setup: str) -> None:
    client_pair = mtls_registry.client
    assert client_pair
    kwargs = {"ca_pem": mtls_registry.ca_pem} if setup == "no client certificate" else \
        {"cert_pem": client_pair.cert_pem, "key_pem": client_pair.key_pem}
    with RegistryClient(**kwargs) as client, pytest.raises(RegistryError) as failed:
        client.tags(f"{mtls_registry.host}/team/secure")
    assert (failed.value.status, failed.value.retryable) == (None, False)
    assert "TLS failed" in str(failed.value)


def test_pem_that_does_not_load_is_refused_naming_the_field_only() -> None:
    with pytest.raises(ValueError, match=r"ca\.crt"):
        RegistryClient(ca_pem="-----BEGIN CERTIFICATE-----\nnot-a-cert\n-----END CERTIFICATE-----\n")
    with pytest.raises(ValueError, match=r"tls\.crt, tls\.key") as refused:
        RegistryClient(cert_pem="s3cr3t-cert", key_pem="s3cr3t-key")
    assert "s3cr3t" not in str(refused.value)


# -- pagination, HEAD and failures, against a registry that pages --------------------------


@pytest.fixture
def paging() -> PagingRegistry:
    with PagingRegistry({"team/many": [f"1.{i // 100}.{i % 100}" for i in range(1500)],
                         "team/few": ["a", "b"]}) as registry:
        yield registry


def test_1500_tags_are_read_over_15_pages_by_following_link_headers(paging: PagingRegistry) -> None:
    with RegistryClient(insecure=True) as client:
        tags = client.tags(f"{paging.host}/team/many")
    assert tags == paging.repos["team/many"]  # every tag, in the registry's order
    pages = [r for r in paging.requests if r.path.endswith("/tags/list")]
    assert len(pages) == 15
    assert pages[0].query == {"n": "1000"}  # asked for 1,000; the registry gives its own page size
    assert pages[1].query == {"last": "1.0.99", "n": "100"}


@pytest.mark.parametrize("options", [{"links": "absolute"}, {"overlap": True}])
def test_absolute_links_and_overlapping_pages_give_each_tag_once(options: dict) -> None:
    tags = [f"v{i}" for i in range(250)]
    with PagingRegistry({"app": tags}, **options) as registry, RegistryClient(insecure=True) as client:
        assert client.tags(f"{registry.host}/app") == tags


def test_a_link_to_another_host_is_refused_it_would_carry_the_token() -> None:
    with PagingRegistry({"app": [f"v{i}" for i in range(250)]},
                        link_to=lambda link: "http://127.0.0.2:1" + link) as registry, \
            RegistryClient(insecure=True) as client, pytest.raises(RegistryError) as refused:
        client.tags(f"{registry.host}/app")
    assert "leads away from the registry" in str(refused.value) and not refused.value.retryable


def test_pages_that_never_end_are_an_error_not_a_hang() -> None:
    with PagingRegistry({"app": [f"v{i}" for i in range(250)]},
                        link_to=lambda link: "/v2/app/tags/list?n=100") as registry, \
            RegistryClient(insecure=True) as client, pytest.raises(RegistryError) as refused:
        client.tags(f"{registry.host}/app")
    assert "pages do not end" in str(refused.value)


def test_a_digest_is_read_with_head_not_pulled(paging: PagingRegistry) -> None:
    with RegistryClient(insecure=True) as client:
        assert client.digest(f"{paging.host}/team/few", "b") == PagingRegistry.digest_of("team/few", "b")
        assert client.digest(f"{paging.host}/team/few", "zzz") is None
    manifests = [r for r in paging.requests if "/manifests/" in r.path]
    assert [r.method for r in manifests] == ["HEAD", "HEAD"]
    accepted = manifests[0].headers["accept"]
    for media_type in ("application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json",
                       "application/vnd.docker.distribution.manifest.list.v2+json",
                       "application/vnd.docker.distribution.manifest.v2+json"):
        assert media_type in accepted


def test_without_docker_content_digest_on_the_head_the_digest_is_the_manifests_hash() -> None:
    with PagingRegistry({"app": ["v1"]}, digest_header=False) as registry, RegistryClient(insecure=True) as client:
        assert client.digest(f"{registry.host}/app", "v1") == PagingRegistry.digest_of("app", "v1")
    assert [r.method for r in registry.requests] == ["HEAD", "GET"]


def test_a_rate_limit_is_retryable_after_the_registrys_retry_after(paging: PagingRegistry) -> None:
    paging.fail_next(registry_error(429, "TOOMANYREQUESTS", "You have reached your pull rate limit.",
                                    **{"Retry-After": "7"}))
    with RegistryClient(insecure=True) as client, pytest.raises(RegistryError) as limited:
        client.tags(f"{paging.host}/team/few")
    error = limited.value
    assert (error.status, error.retryable, error.retry_after) == (429, True, 7.0)
    assert "rate limited" in str(error) and "TOOMANYREQUESTS" in str(error)


def test_an_outage_is_retryable_with_retry_after_as_a_date_or_without_one(paging: PagingRegistry) -> None:
    paging.fail_next(registry_error(503, "UNAVAILABLE", "service unavailable",
                                    **{"Retry-After": email.utils.formatdate(time.time() + 30, usegmt=True)}))
    paging.fail_next(registry_error(500, "UNKNOWN", "unknown error"))
    with RegistryClient(insecure=True) as client:
        with pytest.raises(RegistryError) as unavailable:
            client.tags(f"{paging.host}/team/few")
        with pytest.raises(RegistryError) as broken:
            client.digest(f"{paging.host}/team/few", "a")
        assert client.tags(f"{paging.host}/team/few") == ["a", "b"]  # and then it works again
    assert (unavailable.value.status, unavailable.value.retryable) == (503, True)
    assert unavailable.value.retry_after is not None and 25 <= unavailable.value.retry_after <= 30
    assert (broken.value.status, broken.value.retryable, broken.value.retry_after) == (500, True, None)


def test_a_refused_connection_is_retryable() -> None:
    with RegistryClient(insecure=True, timeout=5) as client, pytest.raises(RegistryError) as failed:
        client.tags(f"127.0.0.1:{free_port()}/app")
    assert (failed.value.status, failed.value.retryable) == (None, True)
    assert "connection failed" in str(failed.value)
