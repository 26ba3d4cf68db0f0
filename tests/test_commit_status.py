"""Commit statuses: what a reconcile looks like on GitHub, GitLab, Gitea and Bitbucket.

Each test is one scenario against local forges (tests/gitforges.py) that speak the real wire
formats, so what passes here is what the forges accept: the request paths, the auth headers,
the JSON, and the forges' own error bodies.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Iterator

import pytest
import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from herald.messages import Event
from herald.model import Meta, Provider
from notifier.providers import bitbucket, bitbucketserver, commitstatus, gitea, github, github_app, gitlab
from notifier.providers.base import DeliveryError, Notification
from tests.gitforges import GitForges

SHA = "0123456789abcdef0123456789abcdef01234567"
ORIGIN_SHA = "fedcba9876543210fedcba9876543210fedcba98"
REVISION = f"main@sha1:{SHA}"
GITHUB_TOKEN = "github-token"
SENDERS = {
    "github": github.send,
    "gitlab": gitlab.send,
    "gitea": gitea.send,
    "bitbucket": bitbucket.send,
    "bitbucketserver": bitbucketserver.send,
}


# -- scaffolding ---------------------------------------------------------------------------------


@pytest.fixture
def forges() -> Iterator[GitForges]:
    with GitForges() as server:
        yield server


@pytest.fixture(scope="module")
def app_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(autouse=True)
def fresh_app_token_cache() -> Iterator[None]:
    github_app.clear_cache()
    yield
    github_app.clear_cache()


def note(reason: str = "ReconciliationSucceeded", severity: str = "info", name: str = "app",
         **metadata: str) -> Notification:
    """A Kustomization event as Herald's reconciler emits it (revision + commit_status: update)."""
    meta = {"revision": REVISION, "commit_status": "update", **metadata}
    event = Event.for_object("Kustomization", name, "default", severity=severity, reason=reason,
                             message="Deployment/default/web configured", metadata=meta)
    return Notification(event=event, alert="default/status", provider="default/forge")


def provider(kind: str, address: str, username: str = "", timeout: float = 5.0) -> Provider:
    return Provider(meta=Meta(name=kind), type=kind, address=address, username=username, timeout=timeout)


def github_provider(forges: GitForges, repo: str = "acme/app", timeout: float = 5.0) -> Provider:
    return provider("github", f"{forges.url}/{repo}", timeout=timeout)


def failing(send, prov: Provider, secret: dict[str, str], n: Notification | None = None) -> DeliveryError:
    with pytest.raises(DeliveryError) as caught:
        send(prov, secret, n or note())
    return caught.value


def pem(key: rsa.RSAPrivateKey) -> str:
    """The key as GitHub hands it out: PKCS#1 PEM."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption()).decode()


def app_secret(key: rsa.RSAPrivateKey, installation: str = "99") -> dict[str, str]:
    # The notifier strips Secret values, so the PEM arrives without its final newline.
    return {"githubAppID": "4242", "githubAppInstallationID": installation, "githubAppPrivateKey": pem(key).strip()}


# -- GitHub: where the status goes and what it says ---------------------------------------------


def test_a_successful_reconcile_marks_its_commit_green_on_github(forges: GitForges) -> None:
    assert github.send(github_provider(forges), {"token": GITHUB_TOKEN}, note()) is None

    read, post = forges.requests
    assert (read.method, read.path) == ("GET", f"/api/v3/repos/acme/app/commits/{SHA}/statuses")
    assert (post.method, post.path) == ("POST", f"/api/v3/repos/acme/app/statuses/{SHA}")
    assert post.headers["authorization"] == f"Bearer {GITHUB_TOKEN}"
    assert post.headers["accept"] == "application/vnd.github+json"
    assert post.body == {"state": "success", "context": "kustomization/app", "description": "reconciliation succeeded"}
    [status] = forges.statuses("github", "acme/app", SHA)
    assert status["state"] == "success"


def test_the_status_goes_on_the_origin_revision_when_the_event_has_one(forges: GitForges) -> None:
    github.send(github_provider(forges), {"token": GITHUB_TOKEN}, note(originRevision=f"main@sha1:{ORIGIN_SHA}"))

    assert [p.path for p in forges.posts()] == [f"/api/v3/repos/acme/app/statuses/{ORIGIN_SHA}"]
    assert forges.statuses("github", "acme/app", SHA) == []


def test_a_commit_key_set_by_the_alert_wins_over_both_revisions(forges: GitForges) -> None:
    n = note(originRevision=f"main@sha1:{ORIGIN_SHA}", **{"event.toolkit.fluxcd.io/commit": SHA})
    github.send(github_provider(forges), {"token": GITHUB_TOKEN}, n)
    assert [p.path for p in forges.posts()] == [f"/api/v3/repos/acme/app/statuses/{SHA}"]


def test_an_oci_origin_revision_falls_back_to_the_git_revision(forges: GitForges) -> None:
    n = note(originRevision="v1.2.3@sha256:" + "a" * 64)
    github.send(github_provider(forges), {"token": GITHUB_TOKEN}, n)
    assert [p.path for p in forges.posts()] == [f"/api/v3/repos/acme/app/statuses/{SHA}"]


@pytest.mark.parametrize(
    ("severity", "reason", "state", "description"),
    [
        ("info", "ReconciliationSucceeded", "success", "reconciliation succeeded"),
        ("error", "HealthCheckFailed", "failure", "health check failed"),
        ("error", "BuildFailed", "failure", "build failed"),
        ("info", "Progressing", "pending", "progressing"),
        ("info", "ProgressingWithRetry", "pending", "progressing with retry"),
    ],
)
def test_the_state_follows_severity_and_progressing_is_pending(
    forges: GitForges, severity: str, reason: str, state: str, description: str
) -> None:
    github.send(github_provider(forges), {"token": GITHUB_TOKEN}, note(reason, severity))
    [post] = forges.posts()
    assert (post.body["state"], post.body["description"]) == (state, description)


@pytest.mark.parametrize(
    ("metadata", "context"),
    [
        ({}, "kustomization/app"),
        ({"clusterName": "EU-West-1"}, "kustomization/app/eu-west-1"),
        ({"cluster": "staging"}, "kustomization/app/staging"),
    ],
)
def test_the_context_names_the_cluster_when_the_alert_says_which(
    forges: GitForges, metadata: dict[str, str], context: str
) -> None:
    github.send(github_provider(forges), {"token": GITHUB_TOKEN}, note(**metadata))
    [post] = forges.posts()
    assert post.body["context"] == context


def test_two_clusters_keep_one_status_each_on_the_same_commit(forges: GitForges) -> None:
    github.send(github_provider(forges), {"token": GITHUB_TOKEN}, note(clusterName="prod"))
    github.send(github_provider(forges), {"token": GITHUB_TOKEN}, note("HealthCheckFailed", "error", clusterName="dev"))

    contexts = {s["context"]: s["state"] for s in forges.statuses("github", "acme/app", SHA)}
    assert contexts == {"kustomization/app/prod": "success", "kustomization/app/dev": "failure"}


@pytest.mark.parametrize(
    ("address", "api"),
    [
        ("https://github.com/acme/app", "https://api.github.com"),
        ("https://github.com/acme/app.git", "https://api.github.com"),
        ("git@github.com:acme/app.git", "https://api.github.com"),
        ("ssh://git@github.com/acme/app", "https://api.github.com"),
        ("https://ghe.example.com/acme/app", "https://ghe.example.com/api/v3"),
        ("https://ghe.example.com:8443/acme/app/", "https://ghe.example.com:8443/api/v3"),
        ("https://bot:s3cr3t@ghe.example.com/acme/app", "https://ghe.example.com/api/v3"),
    ],
)
def test_the_api_comes_from_the_address_host(address: str, api: str) -> None:
    assert github.api_base(commitstatus.repository(address, "github", "")) == api


def test_a_github_enterprise_address_is_served_under_api_v3(forges: GitForges) -> None:
    github.send(github_provider(forges), {"token": GITHUB_TOKEN}, note())
    assert all(r.path.startswith("/api/v3/repos/acme/app/") for r in forges.requests)


def test_the_secret_address_overrides_the_providers(forges: GitForges) -> None:
    github.send(provider("github", "https://github.invalid/x/y"),
                {"token": GITHUB_TOKEN, "address": f"{forges.url}/acme/app"}, note())
    assert len(forges.posts()) == 1


# -- GitHub: posting only what changes -----------------------------------------------------------


def test_an_identical_status_is_not_posted_again(forges: GitForges, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="herald.notifier")
    prov, secret = github_provider(forges), {"token": GITHUB_TOKEN}

    github.send(prov, secret, note())
    github.send(prov, secret, note())  # a redelivery, or an unchanged reconcile

    assert len(forges.posts()) == 1
    assert [r.method for r in forges.requests] == ["GET", "POST", "GET"]
    assert "already success, not posted again" in caplog.text


def test_only_the_newest_status_of_the_context_counts(forges: GitForges) -> None:
    prov, secret = github_provider(forges), {"token": GITHUB_TOKEN}
    github.send(prov, secret, note())
    github.send(prov, secret, note("HealthCheckFailed", "error"))
    github.send(prov, secret, note())  # green again: the older green one does not count

    assert [s["state"] for s in forges.statuses("github", "acme/app", SHA)] == ["success", "failure", "success"]


def test_another_systems_status_does_not_count_as_ours(forges: GitForges) -> None:
    requests.post(f"{forges.url}/api/v3/repos/acme/app/statuses/{SHA}", timeout=5,
                  headers={"Authorization": f"token {GITHUB_TOKEN}"},
                  json={"state": "success", "context": "ci/build", "description": "reconciliation succeeded"})
    github.send(github_provider(forges), {"token": GITHUB_TOKEN}, note())
    assert len(forges.statuses("github", "acme/app", SHA)) == 2


# -- what is skipped ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "metadata",
    [
        {"revision": "v1.2.3@sha256:" + "b" * 64},  # an OCI artifact: no commit
        {"revision": "v1.2.3"},
        {"revision": ""},
    ],
)
def test_an_event_without_a_commit_sha_is_skipped_with_a_log_line(
    forges: GitForges, caplog: pytest.LogCaptureFixture, metadata: dict[str, str]
) -> None:
    caplog.set_level(logging.INFO, logger="herald.notifier")
    assert github.send(github_provider(forges), {"token": GITHUB_TOKEN}, note(**metadata)) is None

    assert forges.requests == []
    [record] = [r for r in caplog.records if "no commit status" in r.getMessage()]
    assert record.name.startswith("herald.notifier")
    assert "no 40-hex commit SHA" in record.getMessage()


def test_a_wait_that_is_not_a_commit_status_update_is_skipped(forges: GitForges) -> None:
    """DependencyNotReady carries no `commit_status: update`: it must not turn the commit green."""
    event = Event.for_object("Kustomization", "app", "default", severity="info", reason="DependencyNotReady",
                             message="dependency 'default/db' is not ready", metadata={"revision": REVISION})
    for send, address in ((github.send, f"{forges.url}/acme/app"), (gitlab.send, f"{forges.url}/group/sub/app")):
        assert send(provider("x", address), {"token": "t"}, Notification(event=event, alert="a/b")) is None
    assert forges.requests == []


def test_progressing_and_commit_keyed_events_need_no_commit_status_marker(forges: GitForges) -> None:
    """The router lets Progressing through (pending), and Flux takes a `commit` key as the marker."""
    progressing = Event.for_object("Kustomization", "app", "default", severity="info", reason="Progressing",
                                   message="applying", metadata={"revision": REVISION})
    keyed = Event.for_object("HelmRelease", "web", "apps", severity="info", reason="UpgradeSucceeded",
                             message="upgraded", metadata={"event.toolkit.fluxcd.io/commit": ORIGIN_SHA})
    for event in (progressing, keyed):
        github.send(github_provider(forges), {"token": GITHUB_TOKEN}, Notification(event=event, alert="a/b"))

    assert [(p.path.rsplit("/", 1)[1], p.body["context"], p.body["state"]) for p in forges.posts()] == [
        (SHA, "kustomization/app", "pending"),
        (ORIGIN_SHA, "helmrelease/web", "success"),
    ]


# -- limits ---------------------------------------------------------------------------------------


def test_long_reasons_and_names_are_cut_to_what_github_accepts(forges: GitForges) -> None:
    reason = "ReconciliationFailedBecause" + "TheClusterSaidNo" * 20
    name = "a" * 253
    n = note(reason, "error", name=name, clusterName="c" * 40)
    github.send(github_provider(forges), {"token": GITHUB_TOKEN}, n)

    [post] = forges.posts()  # the local GitHub answers 422 beyond 140 / 255, as GitHub does
    assert len(post.body["description"]) == 140 and post.body["description"].endswith("…")
    assert len(post.body["context"]) == 255
    assert post.body["context"].startswith("kustomization/aaa")


def test_github_says_why_it_refuses_an_oversized_status(forges: GitForges) -> None:
    answer = requests.post(f"{forges.url}/api/v3/repos/acme/app/statuses/{SHA}", timeout=5,
                           headers={"Authorization": f"Bearer {GITHUB_TOKEN}"},
                           json={"state": "success", "description": "x" * 141})
    assert answer.status_code == 422
    assert answer.json()["message"] == "Validation Failed"
    assert answer.json()["errors"][0]["message"] == "description is too long (maximum is 140 characters)"


# -- GitHub: errors -------------------------------------------------------------------------------


def test_bad_credentials_are_final_with_githubs_words_and_without_the_token(
    forges: GitForges, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token = "ghp_revoked0123456789abcdefghijklmnopqr"
    error = failing(github.send, github_provider(forges), {"token": token})

    assert not error.retryable
    assert "HTTP 401: Bad credentials" in str(error)
    assert "127.0.0.1" in str(error)
    assert token not in str(error) and token not in caplog.text
    assert forges.posts() == []


def test_an_unknown_repository_is_final(forges: GitForges) -> None:
    error = failing(github.send, github_provider(forges, "acme/nope"), {"token": GITHUB_TOKEN})
    assert not error.retryable
    assert "HTTP 404: Not Found" in str(error)


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("retry_after", [None, 30.0])
def test_a_github_outage_is_retried(forges: GitForges, method: str, retry_after: float | None) -> None:
    forges.fail_next(503, method=method, retry_after=retry_after)
    error = failing(github.send, github_provider(forges), {"token": GITHUB_TOKEN})
    assert error.retryable
    assert "HTTP 503" in str(error)
    assert error.retry_after == retry_after
    assert forges.posts() == []


def test_a_rate_limit_is_retried_after_the_delay_github_asks_for(forges: GitForges) -> None:
    forges.fail_next(429, retry_after=7, method="POST")
    error = failing(github.send, github_provider(forges), {"token": GITHUB_TOKEN})
    assert error.retryable
    assert error.retry_after == 7.0


def test_githubs_403_rate_limit_is_retried_at_its_reset(forges: GitForges) -> None:
    reset = int(time.time()) + 30
    forges.fail_next(403, method="GET", body=json.dumps({"message": "API rate limit exceeded for installation."}),
                     headers={"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(reset)})
    error = failing(github.send, github_provider(forges), {"token": GITHUB_TOKEN})
    assert error.retryable
    assert error.retry_after is not None and 25 <= error.retry_after <= 31
    assert "API rate limit exceeded" in str(error)


def test_a_slow_github_is_retried(forges: GitForges) -> None:
    forges.fail_next(200, delay=1.0)
    error = failing(github.send, github_provider(forges, timeout=0.2), {"token": GITHUB_TOKEN})
    assert error.retryable


def test_without_a_token_or_an_app_nothing_is_sent(forges: GitForges) -> None:
    error = failing(github.send, github_provider(forges), {})
    assert not error.retryable
    assert "token" in str(error) and "githubAppID" in str(error)
    assert forges.requests == []


@pytest.mark.parametrize("address", ["https://bot:s3cr3t@github.com/acme", "ftp://s3cr3t@github.com/acme/app", ""])
def test_a_malformed_address_is_final_and_never_echoed(address: str) -> None:
    error = failing(github.send, provider("github", address), {"token": GITHUB_TOKEN})
    assert not error.retryable
    assert "s3cr3t" not in str(error)


# -- GitHub App ------------------------------------------------------------------------------------


def test_a_github_app_token_is_fetched_once_and_reused(
    forges: GitForges, app_key: rsa.RSAPrivateKey, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    app = forges.add_github_app("4242", "99", app_key.public_key())
    prov, secret = github_provider(forges), app_secret(app_key)

    github.send(prov, secret, note())
    github.send(prov, secret, note("HealthCheckFailed", "error"))

    [token_request] = forges.token_requests()
    assert token_request.path == "/api/v3/app/installations/99/access_tokens"
    assert token_request.status == 201  # the local GitHub verified the RS256 JWT with the App's public key
    [token] = app.issued
    assert [p.headers["authorization"] for p in forges.posts()] == [f"Bearer {token}"] * 2
    jwt = token_request.headers["authorization"].removeprefix("Bearer ")
    for credential in (token, jwt, secret["githubAppPrivateKey"]):
        assert credential not in caplog.text


def test_an_app_token_close_to_its_expiry_is_replaced(forges: GitForges, app_key: rsa.RSAPrivateKey) -> None:
    forges.add_github_app("4242", "99", app_key.public_key(), token_ttl=120)  # inside the 5-minute margin
    prov, secret = github_provider(forges), app_secret(app_key)

    github.send(prov, secret, note())
    github.send(prov, secret, note("HealthCheckFailed", "error"))

    assert len(forges.token_requests()) == 2


def test_a_revoked_installation_token_is_dropped_and_replaced_next_time(
    forges: GitForges, app_key: rsa.RSAPrivateKey
) -> None:
    app = forges.add_github_app("4242", "99", app_key.public_key())
    prov, secret = github_provider(forges), app_secret(app_key)
    github.send(prov, secret, note())
    app.issued.clear()  # GitHub revoked it (the App was reinstalled)

    error = failing(github.send, prov, secret, note("HealthCheckFailed", "error"))
    assert not error.retryable and "Bad credentials" in str(error)

    github.send(prov, secret, note("HealthCheckFailed", "error"))
    assert len(forges.token_requests()) == 2
    assert [s["state"] for s in forges.statuses("github", "acme/app", SHA)] == ["success", "failure"]


def test_a_token_in_the_secret_wins_over_the_app(forges: GitForges, app_key: rsa.RSAPrivateKey) -> None:
    forges.add_github_app("4242", "99", app_key.public_key())
    github.send(github_provider(forges), {**app_secret(app_key), "token": GITHUB_TOKEN}, note())
    assert forges.token_requests() == []
    assert forges.posts()[0].headers["authorization"] == f"Bearer {GITHUB_TOKEN}"


def test_a_private_key_github_does_not_know_is_final_and_never_shown(
    forges: GitForges, app_key: rsa.RSAPrivateKey, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    forges.add_github_app("4242", "99", app_key.public_key())
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    secret = app_secret(other)

    error = failing(github.send, github_provider(forges), secret)

    assert not error.retryable
    assert "github app token on 127.0.0.1" in str(error)
    assert "A JSON web token could not be decoded" in str(error)
    jwt = forges.token_requests()[0].headers["authorization"].removeprefix("Bearer ")
    key_body = secret["githubAppPrivateKey"].splitlines()[1]
    for credential in (jwt, key_body):
        assert credential not in str(error) and credential not in caplog.text


def test_an_unknown_installation_is_final(forges: GitForges, app_key: rsa.RSAPrivateKey) -> None:
    forges.add_github_app("4242", "99", app_key.public_key())
    error = failing(github.send, github_provider(forges), app_secret(app_key, installation="12345678"))
    assert not error.retryable and "HTTP 404" in str(error)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"githubAppPrivateKey": "-----BEGIN RSA PRIVATE KEY-----\nbm90IGEga2V5\n-----END RSA PRIVATE KEY-----"},
         "not an unencrypted PEM RSA private key"),
        ({"githubAppInstallationID": "my-install"}, "must be a number"),
        ({"githubAppPrivateKey": ""}, "no githubAppPrivateKey"),
    ],
)
def test_broken_app_credentials_are_final_without_a_request(
    forges: GitForges, app_key: rsa.RSAPrivateKey, change: dict[str, str], words: str
) -> None:
    error = failing(github.send, github_provider(forges), {**app_secret(app_key), **change})
    assert not error.retryable and words in str(error)
    assert "bm90IGEga2V5" not in str(error)
    assert forges.requests == []


def test_the_app_jwt_is_rs256_backdated_and_short_lived(app_key: rsa.RSAPrivateKey) -> None:
    now = 1_800_000_000
    head, payload, signature = github_app.make_jwt("4242", pem(app_key), now).split(".")

    def decode(part: str) -> bytes:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))

    assert json.loads(decode(head)) == {"alg": "RS256", "typ": "JWT"}
    assert json.loads(decode(payload)) == {"iat": now - 60, "exp": now + 540, "iss": "4242"}
    app_key.public_key().verify(decode(signature), f"{head}.{payload}".encode(), padding.PKCS1v15(), hashes.SHA256())


def test_the_app_base_url_from_the_secret_is_where_tokens_come_from(
    forges: GitForges, app_key: rsa.RSAPrivateKey
) -> None:
    forges.add_github_app("4242", "99", app_key.public_key())
    secret = {**app_secret(app_key), "githubAppBaseURL": f"{forges.url}/api/v3/"}
    github.send(provider("github", "https://github.invalid/acme/app"), {**secret, "address": f"{forges.url}/acme/app"},
                note())
    assert len(forges.token_requests()) == 1 and len(forges.posts()) == 1


# -- GitLab -------------------------------------------------------------------------------------------


def test_gitlab_full_scenario(forges: GitForges) -> None:
    prov, secret = provider("gitlab", f"{forges.url}/group/sub/app.git"), {"token": "gitlab-token"}

    gitlab.send(prov, secret, note("Progressing"))
    gitlab.send(prov, secret, note("ProgressingWithRetry"))  # GitLab cannot re-enter `running`
    gitlab.send(prov, secret, note())
    gitlab.send(prov, secret, note())  # identical: not posted again
    gitlab.send(prov, secret, note("HealthCheckFailed", "error"))

    first = forges.posts("gitlab")[0]
    assert first.path == f"/api/v4/projects/group%2Fsub%2Fapp/statuses/{SHA}"
    assert first.headers["private-token"] == "gitlab-token"
    assert first.body == {"state": "running", "name": "kustomization/app", "description": "progressing"}
    read = forges.requests[0]
    assert read.path == f"/api/v4/projects/group%2Fsub%2Fapp/repository/commits/{SHA}/statuses"
    assert read.query["name"] == "kustomization/app"
    shown = [(s["status"], s["description"]) for s in forges.statuses("gitlab", "group/sub/app", SHA)]
    assert shown == [("running", "progressing"), ("success", "reconciliation succeeded"),
                     ("failed", "health check failed")]


def test_gitlab_takes_a_numeric_project_id(forges: GitForges) -> None:
    gitlab.send(provider("gitlab", f"{forges.url}/4711"), {"token": "gitlab-token"}, note())
    assert [p.path for p in forges.posts()] == [f"/api/v4/projects/4711/statuses/{SHA}"]


def test_gitlab_refusals_and_outages(forges: GitForges, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    prov = provider("gitlab", f"{forges.url}/group/sub/app")

    refused = failing(gitlab.send, prov, {"token": "glpat-wrong-token-xyz"})
    assert not refused.retryable and "HTTP 401: 401 Unauthorized" in str(refused)
    assert "glpat-wrong-token-xyz" not in str(refused) + caplog.text

    missing = failing(gitlab.send, provider("gitlab", f"{forges.url}/group/nope"), {"token": "gitlab-token"})
    assert not missing.retryable and "404 Project Not Found" in str(missing)

    forges.fail_next(502, method="POST")
    assert failing(gitlab.send, prov, {"token": "gitlab-token"}).retryable


# -- Gitea --------------------------------------------------------------------------------------------


def test_gitea_full_scenario(forges: GitForges) -> None:
    prov, secret = provider("gitea", f"{forges.url}/acme/app"), {"token": "gitea-token"}

    gitea.send(prov, secret, note("Progressing"))
    gitea.send(prov, secret, note())
    gitea.send(prov, secret, note())  # identical: not posted again
    gitea.send(prov, secret, note("ReconciliationFailed", "error", clusterName="prod"))

    first = forges.posts("gitea")[0]
    assert first.path == f"/api/v1/repos/acme/app/statuses/{SHA}"
    assert first.headers["authorization"] == "token gitea-token"
    assert first.body == {"state": "pending", "context": "kustomization/app", "description": "progressing",
                          "target_url": ""}
    shown = [(s["context"], s["status"]) for s in forges.statuses("gitea", "acme/app", SHA)]
    assert shown == [("kustomization/app", "pending"), ("kustomization/app", "success"),
                     ("kustomization/app/prod", "failure")]
    assert [r.method for r in forges.requests].count("POST") == 3


def test_gitea_refusals_and_outages(forges: GitForges) -> None:
    prov = provider("gitea", f"{forges.url}/acme/app")
    refused = failing(gitea.send, prov, {"token": "wrong-gitea-token"})
    assert not refused.retryable and "token is required" in str(refused)
    assert "wrong-gitea-token" not in str(refused)

    forges.fail_next(429, retry_after=12)
    limited = failing(gitea.send, prov, {"token": "gitea-token"})
    assert limited.retryable and limited.retry_after == 12.0


# -- Bitbucket Cloud ----------------------------------------------------------------------------------


def test_bitbucket_full_scenario(forges: GitForges) -> None:
    prov, secret = provider("bitbucket", f"{forges.url}/acme/app"), {"token": "herald:app-password"}
    key = commitstatus.status_key("kustomization/app")

    bitbucket.send(prov, secret, note())
    bitbucket.send(prov, secret, note())  # identical: not posted again
    bitbucket.send(prov, secret, note("HealthCheckFailed", "error"))

    read = forges.requests[0]
    assert read.path == f"/2.0/repositories/acme/app/commit/{SHA}/statuses/build/{key}"
    assert read.status == 404  # no status with our key yet
    first = forges.posts("bitbucket")[0]
    assert first.path == f"/2.0/repositories/acme/app/commit/{SHA}/statuses/build"
    assert first.headers["authorization"] == "Basic " + base64.b64encode(b"herald:app-password").decode()
    assert first.body == {"key": key, "state": "SUCCESSFUL", "name": "kustomization/app",
                          "description": "reconciliation succeeded", "url": f"{forges.url}/acme/app"}
    assert len(key) == 40
    assert [s["state"] for s in forges.statuses("bitbucket", "acme/app", SHA)] == ["SUCCESSFUL", "FAILED"]
    assert len(forges.posts("bitbucket")) == 2


def test_bitbucket_takes_an_access_token_as_bearer(forges: GitForges) -> None:
    bitbucket.send(provider("bitbucket", f"{forges.url}/acme/app"), {"token": "bitbucket-token"}, note("Progressing"))
    [post] = forges.posts("bitbucket")
    assert post.headers["authorization"] == "Bearer bitbucket-token"
    assert post.body["state"] == "INPROGRESS"


def test_bitbucket_refusals_hide_the_app_password(forges: GitForges, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    error = failing(bitbucket.send, provider("bitbucket", f"{forges.url}/acme/app"), {"token": "herald:n0t-the-pw"})
    assert not error.retryable
    assert "HTTP 401: Access denied" in str(error)
    assert "n0t-the-pw" not in str(error) + caplog.text


@pytest.mark.parametrize(
    ("address", "api"),
    [
        ("https://bitbucket.org/acme/app", "https://api.bitbucket.org/2.0"),
        ("git@bitbucket.org:acme/app.git", "https://api.bitbucket.org/2.0"),
        ("http://127.0.0.1:8080/acme/app", "http://127.0.0.1:8080/2.0"),
    ],
)
def test_the_bitbucket_api_base_rule(address: str, api: str) -> None:
    assert bitbucket.api_base(commitstatus.repository(address, "bitbucket", "")) == api


# -- Bitbucket Server / Data Center ---------------------------------------------------------------------


def test_bitbucket_server_full_scenario(forges: GitForges) -> None:
    forges.bitbucket_context = "/bitbucket"
    prov = provider("bitbucketserver", f"{forges.url}/bitbucket/scm/PROJ/app.git")
    secret = {"token": "bitbucketserver-token"}
    key = commitstatus.status_key("kustomization/app")
    builds = f"/bitbucket/rest/api/latest/projects/PROJ/repos/app/commits/{SHA}/builds"

    bitbucketserver.send(prov, secret, note())
    bitbucketserver.send(prov, secret, note())  # identical: not posted again
    bitbucketserver.send(prov, secret, note("HealthCheckFailed", "error"))

    read = forges.requests[0]
    assert (read.method, read.path, read.query, read.status) == ("GET", builds, {"key": key}, 404)
    first = forges.posts("bitbucketserver")[0]
    assert first.path == builds and first.status == 204
    assert first.headers["authorization"] == "Bearer bitbucketserver-token"
    assert first.body == {"key": key, "state": "SUCCESSFUL", "name": "kustomization/app [reconciliation succeeded]",
                          "description": "reconciliation succeeded",
                          "url": f"{forges.url}/bitbucket/projects/PROJ/repos/app"}
    assert [s["state"] for s in forges.statuses("bitbucketserver", "PROJ/app", SHA)] == ["SUCCESSFUL", "FAILED"]
    assert len(forges.posts("bitbucketserver")) == 2


def test_bitbucket_server_basic_auth_with_the_providers_username(forges: GitForges) -> None:
    prov = provider("bitbucketserver", f"{forges.url}/scm/PROJ/app.git", username="herald")
    bitbucketserver.send(prov, {"password": "server-password"}, note())
    [post] = forges.posts("bitbucketserver")
    assert post.headers["authorization"] == "Basic " + base64.b64encode(b"herald:server-password").decode()


def test_bitbucket_server_refusals_hide_the_password(forges: GitForges, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    prov = provider("bitbucketserver", f"{forges.url}/scm/PROJ/app.git")
    error = failing(bitbucketserver.send, prov, {"username": "herald", "password": "wr0ng-passw0rd"})
    assert not error.retryable
    assert "Authentication failed" in str(error)
    assert "wr0ng-passw0rd" not in str(error) + caplog.text

    no_credentials = failing(bitbucketserver.send, prov, {})
    assert not no_credentials.retryable and "password" in str(no_credentials)


@pytest.mark.parametrize("address", ["https://bitbucket.example.com/projects/PROJ/repos/app",
                                     "ssh://git@bitbucket.example.com:7999/proj/app.git"])
def test_bitbucket_server_needs_the_http_clone_url(address: str) -> None:
    error = failing(bitbucketserver.send, provider("bitbucketserver", address), {"token": "t"})
    assert not error.retryable and "/scm/" in str(error)


# -- every forge --------------------------------------------------------------------------------------


FORGE_SETUPS = {
    "github": ("acme/app", {"token": "github-token"}),
    "gitlab": ("group/sub/app", {"token": "gitlab-token"}),
    "gitea": ("acme/app", {"token": "gitea-token"}),
    "bitbucket": ("acme/app", {"token": "herald:app-password"}),
    "bitbucketserver": ("scm/PROJ/app", {"token": "bitbucketserver-token"}),
}


@pytest.mark.parametrize("forge", list(FORGE_SETUPS))
@pytest.mark.parametrize(("status", "retry_after"), [(503, None), (429, 5.0)])
def test_every_forge_retries_outages_and_rate_limits(
    forges: GitForges, forge: str, status: int, retry_after: float | None
) -> None:
    path, secret = FORGE_SETUPS[forge]
    forges.fail_next(status, retry_after=retry_after, method="POST")
    error = failing(SENDERS[forge], provider(forge, f"{forges.url}/{path}"), secret)
    assert error.retryable
    assert error.retry_after == retry_after
    assert f"HTTP {status}" in str(error)


@pytest.mark.parametrize("forge", list(FORGE_SETUPS))
def test_every_forge_skips_an_event_without_a_commit(forges: GitForges, forge: str) -> None:
    path, secret = FORGE_SETUPS[forge]
    oci = note(revision="latest@sha256:" + "c" * 64)
    assert SENDERS[forge](provider(forge, f"{forges.url}/{path}"), secret, oci) is None
    assert forges.requests == []


@pytest.mark.parametrize("forge", list(FORGE_SETUPS))
def test_every_forge_refuses_a_wrong_token_for_good_and_keeps_it_secret(
    forges: GitForges, caplog: pytest.LogCaptureFixture, forge: str
) -> None:
    caplog.set_level(logging.DEBUG)
    path, _ = FORGE_SETUPS[forge]
    token = "s3cr3t-t0ken-" + forge
    error = failing(SENDERS[forge], provider(forge, f"{forges.url}/{path}"), {"token": token})
    assert not error.retryable
    assert "HTTP 401" in str(error)
    assert token not in str(error) and token not in caplog.text


# -- the pure rules ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "description"),
    [
        ("ReconciliationSucceeded", "reconciliation succeeded"),
        ("HealthCheckFailed", "health check failed"),
        ("PDFLoaderFailed", "pdf loader failed"),
        ("BuildFailed2", "build failed 2"),
        ("Progressing", "progressing"),
        ("", ""),
    ],
)
def test_descriptions_split_the_reason_as_flux_does(reason: str, description: str) -> None:
    assert commitstatus.description_of(reason) == description


@pytest.mark.parametrize(
    ("metadata", "sha"),
    [
        ({"revision": f"main@sha1:{SHA}"}, SHA),
        ({"revision": f"feature/x@sha1:{SHA}"}, SHA),
        ({"revision": f"sha1:{SHA}"}, SHA),
        ({"revision": SHA.upper()}, SHA),
        ({"revision": f"main/{SHA}"}, SHA),  # Flux's older revision format
        ({"revision": f"main@sha1:{SHA}", "originRevision": f"main@sha1:{ORIGIN_SHA}"}, ORIGIN_SHA),
        ({"revision": f"main@sha1:{SHA}", "commit": ORIGIN_SHA}, ORIGIN_SHA),
        ({"revision": "latest@sha256:" + "d" * 64}, None),
        ({"revision": "main@sha1:0123"}, None),
        ({}, None),
    ],
)
def test_the_commit_is_the_first_key_with_a_sha1(metadata: dict[str, str], sha: str | None) -> None:
    assert commitstatus.commit_sha(metadata) == sha


def test_a_cut_context_stays_unique() -> None:
    a, b = "kustomization/" + "a" * 300, "kustomization/" + "a" * 299 + "b"
    assert commitstatus.clip_context(a, 255) != commitstatus.clip_context(b, 255)
    assert len(commitstatus.clip_context(a, 255)) == 255
