"""Pull-request plans: one comment per PR, edited in place, on every forge Herald speaks to.

Each scenario runs against the local forges (tests/gitforges.py), which answer the forges' real
comment APIs: GitHub issue comments with `Link` pagination, GitLab notes with `X-Next-Page`,
Gitea comments with `page`/`limit`, Bitbucket Cloud pages with `next`, Bitbucket Server
activities with `isLastPage`/`nextPageStart` and comment `version`s, and each forge's error
bodies and comment-length limits.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from herald import forges as forge_clients
from herald.forges import LINK_MARKER, MARKER, CommentClient, fit, github_app
from herald.http import DeliveryError
from herald.model import Meta, Provider
from tests.gitforges import GitForges

PR = 7
FORGES = ("github", "gitlab", "gitea", "bitbucket", "bitbucketserver")
REPOS = {"github": "acme/app", "gitlab": "group/sub/app", "gitea": "acme/app", "bitbucket": "acme/app",
         "bitbucketserver": "PROJ/app"}
PATHS = {"github": "acme/app", "gitlab": "group/sub/app", "gitea": "acme/app", "bitbucket": "acme/app",
         "bitbucketserver": "scm/PROJ/app.git"}
SECRETS = {"github": {"token": "github-token"}, "gitlab": {"token": "gitlab-token"},
           "gitea": {"token": "gitea-token"}, "bitbucket": {"token": "herald:app-password"},
           "bitbucketserver": {"token": "bitbucketserver-token"}}
OWN_LOGIN = {"github": "herald-bot", "gitlab": "herald-bot", "gitea": "herald-bot", "bitbucket": "herald",
             "bitbucketserver": "herald-bot"}

PLAN = """### Herald plan for `main@sha1:0123456789ab`: 2 objects change

| object | change |
| --- | --- |
| Deployment/default/web | configured |
| ConfigMap/default/web | created |

<details><summary>Deployment/default/web</summary>

```diff
-  replicas: 2
+  replicas: 3
```

</details>
"""


@pytest.fixture
def forges() -> Iterator[GitForges]:
    with GitForges() as server:
        yield server


@pytest.fixture(autouse=True)
def fresh_app_token_cache() -> Iterator[None]:
    github_app.clear_cache()
    yield
    github_app.clear_cache()


def provider(forges: GitForges, forge: str) -> Provider:
    return Provider(meta=Meta(name=forge), type=forge, address=f"{forges.url}/{PATHS[forge]}", timeout=5.0)


def client(forges: GitForges, forge: str, secret: dict[str, str] | None = None, **options: Any) -> CommentClient:
    """A fresh client, as a notifier process would make after a (re)start; no real waiting."""
    options = {"write_interval": 0.0, "backoff": 0.01, **options}
    return forge_clients.client(provider(forges, forge), secret or SECRETS[forge], **options)


def on_pr(forges: GitForges, forge: str) -> list[dict[str, Any]]:
    return forges.comments(forge, REPOS[forge], PR)


def marker(forge: str) -> str:
    return LINK_MARKER if forge.startswith("bitbucket") else MARKER


# -- one comment per pull request ----------------------------------------------------------------


@pytest.mark.parametrize("forge", FORGES)
def test_the_first_plan_creates_one_comment_with_the_hidden_marker(forges: GitForges, forge: str) -> None:
    with client(forges, forge) as c:
        ref = c.upsert_comment(PR, PLAN)
    [comment] = on_pr(forges, forge)
    assert ref.created and ref.id == comment["id"] and ref.forge == forge
    assert comment["body"] == f"{marker(forge)}\n{PLAN}"
    assert comment["author"] == OWN_LOGIN[forge]


@pytest.mark.parametrize("forge", FORGES)
def test_a_second_push_edits_the_same_comment(forges: GitForges, forge: str) -> None:
    with client(forges, forge) as c:
        first = c.upsert_comment(PR, PLAN)
        second = c.upsert_comment(PR, PLAN.replace("replicas: 3", "replicas: 4"))
    [comment] = on_pr(forges, forge)
    assert not second.created and second.id == first.id == comment["id"]
    assert "replicas: 4" in comment["body"]
    assert len(forges.comment_writes(forge)) == 2  # one create, one edit


@pytest.mark.parametrize("forge", FORGES)
def test_after_a_restart_the_comment_is_found_again_by_its_marker(forges: GitForges, forge: str) -> None:
    with client(forges, forge) as before_restart:
        first = before_restart.upsert_comment(PR, PLAN)
    forges.add_comment(forge, REPOS[forge], PR, "LGTM, but why 3 replicas?", author="reviewer")
    with client(forges, forge) as after_restart:  # a new process: nothing remembered
        again = after_restart.upsert_comment(PR, PLAN + "\nsecond push\n")
    mine = [c for c in on_pr(forges, forge) if c["author"] == OWN_LOGIN[forge]]
    assert [c["id"] for c in mine] == [first.id] == [again.id]
    assert mine[0]["body"].endswith("second push\n")


@pytest.mark.parametrize("forge", FORGES)
def test_the_comment_is_found_across_pages(forges: GitForges, forge: str) -> None:
    with client(forges, forge) as c:
        first = c.upsert_comment(PR, PLAN)
    for i in range(120):  # more than one page on every forge (GitHub's per_page is at most 100)
        forges.add_comment(forge, REPOS[forge], PR, f"comment {i}", author="reviewer")
    with client(forges, forge) as c:
        again = c.upsert_comment(PR, PLAN)
    assert again.id == first.id and not again.created
    assert len(on_pr(forges, forge)) == 121
    lists = [r for r in forges.requests if r.method == "GET" and ("comments" in r.path or "notes" in r.path
                                                                   or "activities" in r.path)]
    assert len(lists) >= 3  # two pages (or more) read on the second run


def test_gitea_without_pagination_is_read_once(forges: GitForges) -> None:
    forges.gitea_paginates_comments = False  # older Gitea answers every comment whatever page says
    for i in range(60):
        forges.add_comment("gitea", "acme/app", PR, f"comment {i}", author="reviewer")
    with client(forges, "gitea") as c:
        c.upsert_comment(PR, PLAN)
        c.upsert_comment(PR, PLAN)
    assert sum(c["author"] == "herald-bot" for c in on_pr(forges, "gitea")) == 1


@pytest.mark.parametrize("forge", FORGES)
def test_a_comment_by_someone_else_quoting_the_marker_is_not_taken_over(forges: GitForges, forge: str) -> None:
    quoted = f"> {marker(forge)}\n> Herald's plan said 3 replicas; why?"
    theirs = forges.add_comment(forge, REPOS[forge], PR, quoted, author="reviewer")
    with client(forges, forge) as c:
        ref = c.upsert_comment(PR, PLAN)
    assert ref.created and ref.id != theirs
    assert next(c for c in on_pr(forges, forge) if c["id"] == theirs)["body"] == quoted


# -- the forges' own rules -----------------------------------------------------------------------


def test_bitbucket_server_edits_with_the_version_and_rereads_a_stale_one(forges: GitForges) -> None:
    with client(forges, "bitbucketserver") as c:
        first = c.upsert_comment(PR, PLAN)
        assert first.version == 0
        # Someone (a second notifier replica) edits it between our read and our write.
        real_list = c._comments

        def list_then_edit(pr: int) -> Iterator[Any]:
            listed = list(real_list(pr))
            forges.edit_comment("bitbucketserver", "PROJ/app", PR, first.id, f"{LINK_MARKER}\nother replica")
            return iter(listed)

        c._comments = list_then_edit  # type: ignore[method-assign]
        second = c.upsert_comment(PR, PLAN + "\nnewer\n")
    [comment] = on_pr(forges, "bitbucketserver")
    assert comment["body"].endswith("newer\n") and comment["version"] == 2 and second.version == 2
    puts = [r for r in forges.requests if r.method == "PUT"]
    assert [(r.body["version"], r.status) for r in puts] == [(0, 409), (1, 200)]


def test_gitlab_conflict_on_an_edit_is_retried_once(forges: GitForges) -> None:
    with client(forges, "gitlab") as c:
        first = c.upsert_comment(PR, PLAN)
        forges.fail_next(409, method="PUT", body='{"message": "409 Conflict"}')
        second = c.upsert_comment(PR, PLAN + "\nnewer\n")
    assert second.id == first.id
    assert [r.status for r in forges.requests if r.method == "PUT"] == [409, 200]


def test_github_app_comments_are_recognised_by_the_app_not_by_user(forges: GitForges) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forges.add_github_app("4242", "99", key.public_key())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                            serialization.NoEncryption()).decode()
    secret = {"githubAppID": "4242", "githubAppInstallationID": "99", "githubAppPrivateKey": pem}
    forges.add_comment("github", "acme/app", PR, f"{MARKER}\nan old plan by a token", author="herald-bot")
    with client(forges, "github", secret) as c:
        first = c.upsert_comment(PR, PLAN)
    with client(forges, "github", secret) as c:
        second = c.upsert_comment(PR, PLAN + "\nagain\n")
    assert first.created and second.id == first.id
    assert not any(r.path == "/api/v3/user" for r in forges.requests)  # an installation token cannot read it
    assert len(forges.token_requests()) == 1  # the shared App token cache


# -- one comment within the host's limit ---------------------------------------------------------


def big_plan(objects: int = 400) -> str:
    blocks = [f"<details><summary>Deployment/default/web-{i}</summary>\n\n```diff\n"
              + "".join(f"+  line {j}: {'x' * 60}\n" for j in range(20)) + "```\n\n</details>\n"
              for i in range(objects)]
    return "### Herald plan: 400 objects change\n\nSummary: 400 configured.\n\n" + "\n".join(blocks)


@pytest.mark.parametrize("forge", FORGES)
def test_a_long_plan_is_cut_to_the_forges_limit_with_a_note(forges: GitForges, forge: str) -> None:
    plan = big_plan(400 if forge != "gitlab" else 1200)
    with client(forges, forge) as c:
        c.upsert_comment(PR, plan)
        limit = c.limit
    [comment] = on_pr(forges, forge)
    body = comment["body"]
    assert len(plan) > limit >= len(body) > limit - 2000
    assert body.startswith(f"{marker(forge)}\n### Herald plan: 400 objects change\n\nSummary: 400 configured.\n")
    assert re.search(r"Cut to fit this host's limit of [\d,]+ characters: [\d,]+ more did not fit", body)
    assert_balanced(body)
    # Only whole objects are kept.
    assert body.count("<details>") == body.count("</details>") == body.count("```diff")


def test_the_forge_refuses_an_uncut_body_with_its_own_words(forges: GitForges) -> None:
    """What the cut avoids: the real limit errors, passed on with the forge's message."""
    for forge, word in (("github", "body is too long (maximum is 65536 characters)"),
                        ("bitbucketserver", "less than 32768 characters")):
        with client(forges, forge) as c, pytest.raises(DeliveryError) as failed:
            c.limit = 10**7  # as if the client did not know the limit
            c.upsert_comment(PR, "x" * 70000)
        assert word in str(failed.value) and not failed.value.retryable


def assert_balanced(markdown: str) -> None:
    fences = [line for line in markdown.splitlines() if line.lstrip().startswith("```")]
    assert len(fences) % 2 == 0
    assert markdown.count("<details") == markdown.count("</details>")


def test_fit_keeps_a_body_that_fits() -> None:
    assert fit(PLAN, len(PLAN)) == PLAN


def test_fit_closes_an_open_code_fence_and_details_when_one_object_is_too_long() -> None:
    body = "## Plan\nsummary\n\n<details><summary>huge</summary>\n\n```diff\n" + "+ a line\n" * 1000 + "```\n</details>\n"
    cut = fit(body, 500)
    assert len(cut) <= 500 and cut.startswith("## Plan\nsummary\n\n<details>")
    assert_balanced(cut)
    assert "\n```\n</details>\n\n_✂️ Cut to fit" in cut


def test_fit_cuts_at_a_line_boundary() -> None:
    body = "summary\n\n" + "".join(f"line {i} {'y' * 30}\n" for i in range(100))
    cut = fit(body, 400)
    kept = cut.split("\n\n_✂️")[0]
    assert all(line == "summary" or line == "" or re.fullmatch(r"line \d+ y{30}", line) for line in kept.splitlines())


def test_fit_keeps_the_summary_whole_before_anything_else() -> None:
    summary = "## Plan\n" + "word " * 50 + "\n"
    cut = fit(summary + "\n" + "z" * 1000, 400)
    assert cut.startswith(summary) and len(cut) <= 400


def test_fit_cuts_even_a_summary_too_long_for_the_limit() -> None:
    cut = fit("x" * 5000, 300)
    assert len(cut) <= 300 and "Cut to fit" in cut


# -- pace, retries and secrets ---------------------------------------------------------------------


@pytest.mark.parametrize("forge", FORGES)
def test_429_then_accepted(forges: GitForges, forge: str) -> None:
    waits: list[float] = []
    forges.fail_next(429, retry_after=2, method="POST")
    with client(forges, forge, sleep=waits.append) as c:
        ref = c.upsert_comment(PR, PLAN)
    assert ref.created and len(on_pr(forges, forge)) == 1
    assert 2 in waits  # Retry-After honoured
    assert [r.status for r in forges.requests if r.method == "POST"] == [429, 201]


def test_github_secondary_rate_limit_is_waited_out(forges: GitForges) -> None:
    waits: list[float] = []
    forges.fail_next(403, method="POST", body='{"message": "You have exceeded a secondary rate limit. Please wait '
                                               'a few minutes before you try again.", "documentation_url": '
                                               '"https://docs.github.com/rest/overview/rate-limits-for-the-rest-api"}')
    with client(forges, "github", sleep=waits.append) as c:
        assert c.upsert_comment(PR, PLAN).created
    assert waits == [60]


def test_a_wait_longer_than_allowed_fails_retryable_without_waiting(forges: GitForges) -> None:
    waits: list[float] = []
    forges.fail_next(429, retry_after=3600, method="POST")
    with client(forges, "gitea", sleep=waits.append, max_wait=30) as c, pytest.raises(DeliveryError) as failed:
        c.upsert_comment(PR, PLAN)
    assert failed.value.retryable and failed.value.retry_after == 3600 and waits == []


def test_an_outage_is_retried_with_backoff(forges: GitForges) -> None:
    waits: list[float] = []
    forges.fail_next(503)
    forges.fail_next(502)
    with client(forges, "gitlab", sleep=waits.append, backoff=0.5) as c:
        assert c.upsert_comment(PR, PLAN).created
    assert waits == [0.5, 1.0]


def test_writes_are_paced(forges: GitForges) -> None:
    waits: list[float] = []
    with client(forges, "github", sleep=waits.append, write_interval=1.0) as c:
        c.upsert_comment(PR, PLAN)
        c.upsert_comment(PR, PLAN)
    assert len(waits) == 1 and 0 < waits[0] <= 1.0  # the second write waited for the first's second


@pytest.mark.parametrize("forge", FORGES)
def test_the_token_never_appears_in_errors(forges: GitForges, forge: str) -> None:
    token = {"bitbucket": "herald:s3cret-app-password"}.get(forge, f"{forge}-s3cret-token")
    echoed = f'{{"message": "token {token} was refused", "error": {{"message": "bad {token}"}}}}'
    forges.fail_next(401, body=echoed)
    with client(forges, forge, {"token": token}) as c, pytest.raises(DeliveryError) as failed:
        c.upsert_comment(PR, PLAN)
    text = str(failed.value)
    assert not failed.value.retryable and "HTTP 401" in text
    assert "s3cret" not in text and "***" in text


def test_a_refusal_says_what_the_forge_said(forges: GitForges) -> None:
    with client(forges, "gitlab", {"token": "wrong"}) as c, pytest.raises(DeliveryError) as failed:
        c.upsert_comment(PR, PLAN)
    assert "HTTP 401: 401 Unauthorized" in str(failed.value) and "wrong" not in str(failed.value)


def test_the_registry_has_every_commit_status_forge() -> None:
    from notifier.providers import COMMIT_STATUS_TYPES

    assert set(forge_clients.FORGES) == set(COMMIT_STATUS_TYPES)
    with pytest.raises(DeliveryError):
        forge_clients.client(Provider(meta=Meta(name="s"), type="slack"), {})


def test_the_client_is_core_and_imports_no_component() -> None:
    """The notifier, and later the CLI, share it: it must not pull a component in."""
    import subprocess
    import sys

    code = ("import sys, herald.forges; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('notifier', 'receiver', 'reconciler')))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"
