"""Image automation's Git writes (issue 15): a commit made without a work tree, pushed as a
fast-forward only, against real remotes (a local bare repository, and git's smart HTTP behind
Basic auth). `reconciler.git.GitCache.commit_files` and `.push`."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from reconciler.git import Author, GitCache, GitError
from tests.fixtures_herald import Repo, git, make_repo
from tests.fixtures_sshd import Sshd, sshd  # noqa: F401 (sshd: the fixture)
from tests.test_git_sources import (  # noqa: F401 (cache, http_git: fixtures)
    PASSWORD,
    GitHttpServer,
    assert_no_secret,
    cache,
    http_git,
    source,
    ssh_creds,
)

AUTHOR = Author("Herald Bot", "herald@example.com")
WEB = "deploy/web.yaml"


def content(repo: Repo, ref: str, path: str) -> str:
    return git("show", f"{ref}:{path}", cwd=repo.bare)


def bump(text: str) -> bytes:
    return text.replace("image: nginx:1.27", "image: nginx:1.28").encode()


def test_a_commit_changes_only_the_given_file_and_is_pushed_to_the_branch(cache: GitCache, repo: Repo) -> None:
    before = content(repo, "main", WEB)
    rev = cache.fetch(source(repo.url), repo.url)
    sha = cache.commit_files(source(repo.url), rev.sha, {WEB: bump(before)}, "Update web to 1.28\n", AUTHOR)
    assert cache.push(source(repo.url), repo.url, None, sha, "main") is True
    assert git("rev-parse", "main", cwd=repo.bare) == sha
    assert git("rev-parse", f"{sha}^", cwd=repo.bare) == rev.sha  # on top of what was fetched
    assert content(repo, "main", WEB) == before.replace("nginx:1.27", "nginx:1.28")
    assert git("diff", "--name-only", rev.sha, sha, cwd=repo.bare) == WEB
    assert git("log", "-1", "--format=%an <%ae>|%cn|%s", sha, cwd=repo.bare) == \
        "Herald Bot <herald@example.com>|Herald Bot|Update web to 1.28"


def test_a_remote_that_moved_on_refuses_the_push_and_keeps_its_commit(cache: GitCache, repo: Repo) -> None:
    rev = cache.fetch(source(repo.url), repo.url)
    theirs = repo.commit({"deploy/other.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n"}, "theirs")
    sha = cache.commit_files(source(repo.url), rev.sha, {WEB: bump(content(repo, "main", WEB))}, "ours\n", AUTHOR)
    assert cache.push(source(repo.url), repo.url, None, sha, "main") is False  # never a force push
    assert git("rev-parse", "main", cwd=repo.bare) == theirs
    # fetch again and redo the change on the new head: now it goes through, with theirs kept
    rev = cache.fetch(source(repo.url), repo.url)
    sha = cache.commit_files(source(repo.url), rev.sha, {WEB: bump(content(repo, "main", WEB))}, "ours\n", AUTHOR)
    assert cache.push(source(repo.url), repo.url, None, sha, "main") is True
    assert git("rev-parse", "main^", cwd=repo.bare) == theirs


def test_a_push_branch_is_created_from_the_checkout_branch(cache: GitCache, repo: Repo) -> None:
    rev = cache.fetch(source(repo.url), repo.url)
    sha = cache.commit_files(source(repo.url), rev.sha, {WEB: bump(content(repo, "main", WEB))}, "bump\n", AUTHOR)
    assert cache.push(source(repo.url), repo.url, None, sha, "image-updates") is True
    assert git("rev-parse", "image-updates", cwd=repo.bare) == sha
    assert git("rev-parse", "main", cwd=repo.bare) == rev.sha  # main is left to people


def test_over_http_the_credentials_push_and_wrong_ones_are_refused_without_leaking(
        cache: GitCache, http_git, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "srv")
    git("config", "http.receivepack", "true", cwd=repo.bare)
    basic = "Basic " + base64.b64encode(f"flux:{PASSWORD}".encode()).decode()
    url = http_git(basic).url(repo.bare)
    creds = {"username": "flux", "password": PASSWORD}
    rev = cache.fetch(source(url), url, creds)
    sha = cache.commit_files(source(url), rev.sha, {WEB: bump(content(repo, "main", WEB))}, "bump\n", AUTHOR)
    with pytest.raises(GitError) as refused:
        cache.push(source(url), url, {"username": "flux", "password": "wrong-" + PASSWORD}, sha, "main")
    assert refused.value.permanent and "authentication" in str(refused.value)
    assert_no_secret(str(refused.value), PASSWORD)
    assert cache.push(source(url), url, creds, sha, "main") is True
    assert git("rev-parse", "main", cwd=repo.bare) == sha


def test_a_branch_name_git_would_refuse_is_an_error_before_any_push(cache: GitCache, repo: Repo) -> None:
    rev = cache.fetch(source(repo.url), repo.url)
    with pytest.raises(GitError, match="branch"):
        cache.push(source(repo.url), repo.url, None, rev.sha, "bad..name")


def test_over_ssh_the_commit_is_pushed_with_the_secrets_key(cache: GitCache, sshd: Sshd, repo: Repo) -> None:  # noqa: F811
    url = sshd.url(repo.bare)
    rev = cache.fetch(source(url), url, ssh_creds(sshd))
    sha = cache.commit_files(source(url), rev.sha, {WEB: bump(content(repo, "main", WEB))}, "bump\n", AUTHOR)
    assert cache.push(source(url), url, ssh_creds(sshd), sha, "main") is True
    assert git("rev-parse", "main", cwd=repo.bare) == sha
