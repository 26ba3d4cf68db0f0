"""GitHub (and GitHub Enterprise Server) pull-request comments.

A PR's conversation comments are issue comments (docs.github.com, REST "Issue comments"):
`GET /repos/{owner}/{repo}/issues/{number}/comments?per_page=100` (oldest first, pages linked
by the `Link` header's `rel="next"`), `POST` to the same path with `{"body"}` (201), and
`PATCH /repos/{owner}/{repo}/issues/comments/{id}` with `{"body"}` (200). Bodies are limited
to 65,536 characters (422 "Validation Failed", "Body is too long (maximum is 65536 characters)").

Address and credentials as the commit-status provider (`notifier.providers.github`): the
repository URL (`api_base`: api.github.com, or `/api/v3` on any other host), the Secret's
`token`, or a GitHub App (`github_app`, the same module and token cache).

Whose comment: with a token, `GET /user`'s `login` against each comment's `user.login`; with a
GitHub App (whose installation token cannot read `/user`), the comment's
`performed_via_github_app.id` against the App's ID.

Rate limits: a 403 with `x-ratelimit-remaining: 0` or `retry-after` (primary), or whose body
says "secondary rate limit" (GitHub's secondary limits, which advise waiting at least a minute
when no Retry-After is given) is treated as the 429 it means.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import Any

import requests

from herald import http
from herald.forges import github_app
from herald.forges.address import Repository, two_part_repository
from herald.forges.base import Comment, CommentClient, int_id
from herald.http import DeliveryError
from herald.model import Provider

PUBLIC_API = "https://api.github.com"
API_VERSION = "2022-11-28"
LIMIT = 65536
PER_PAGE = 100
SECONDARY_WAIT = 60  # seconds: GitHub's advice for a secondary limit without Retry-After


def api_base(repo: Repository) -> str:
    """github.com's API, or GitHub Enterprise Server's `/api/v3` on the repository's host."""
    if repo.hostname in ("github.com", "www.github.com"):
        return PUBLIC_API
    return f"{repo.origin}/api/v3"


def rate_limit_as_429(response: requests.Response, *args: Any, **kwargs: Any) -> requests.Response:
    """GitHub's 403 rate limits (primary and secondary) are 429s: retried, not refused."""
    if response.status_code != 403:
        return response
    headers = response.headers
    secondary = "secondary rate limit" in (response.text or "").lower()
    if headers.get("x-ratelimit-remaining") == "0" or "retry-after" in headers or secondary:
        response.status_code = 429
        reset = headers.get("x-ratelimit-reset", "")
        if "retry-after" not in headers:
            if secondary:
                headers["Retry-After"] = str(SECONDARY_WAIT)
            elif reset.isdigit():
                headers["Retry-After"] = str(max(0, int(reset) - int(time.time())))
    return response


class GitHubComments(CommentClient):
    forge = "github"
    limit = LIMIT

    def __init__(self, provider: Provider, secret: Mapping[str, str], **kwargs: Any) -> None:
        super().__init__(provider, secret, **kwargs)
        repo = two_part_repository(self.secret.get("address") or provider.address, "github", "<owner>/<repo>",
                                   "github.com")
        self.base = api_base(repo)
        self.owner, self.name = repo.path
        self.where = f"github comments on {http.host(self.base)}"
        self.session.hooks["response"].append(rate_limit_as_429)
        self.app = github_app.credentials(self.secret) if not self.secret.get("token") else None
        if not self.secret.get("token") and not self.app:
            raise DeliveryError(
                f"{self.where}: the Secret needs a `token`, or {github_app.KEY_APP_ID}, "
                f"{github_app.KEY_INSTALLATION_ID} and {github_app.KEY_PRIVATE_KEY}",
                retryable=False,
            )

    def _token(self) -> str:
        if not self.app:
            return self.secret["token"]
        token = github_app.installation_token(self.provider, self.secret, self.app, self.base, session=self.session)
        self._scrubbed["_token"] = token
        return token

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token()}", "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": API_VERSION}

    def _request(self, method: str, url: str, *, json_body: Any = None) -> requests.Response:
        try:
            return super()._request(method, url, json_body=json_body)
        except DeliveryError as exc:
            if self.app and exc.status == 401:
                github_app.forget(self.app)  # a revoked installation token: the next call asks anew
            raise

    def _whoami(self) -> str:
        if self.app:
            return f"app:{self.app.app_id}"
        return str(self._json(self._request("GET", f"{self.base}/user")).get("login") or "")

    def _comment(self, data: Any) -> Comment:
        data = data if isinstance(data, dict) else {}
        app = data.get("performed_via_github_app")
        if self.app and isinstance(app, dict):
            author = f"app:{app.get('id')}"
        else:
            author = str((data.get("user") or {}).get("login") or "")
        return Comment(int_id(data.get("id")), str(data.get("body") or ""), author, url=str(data.get("html_url") or ""))

    def _comments(self, pr: int) -> Iterator[Comment]:
        url: str | None = f"{self.base}/repos/{self.owner}/{self.name}/issues/{pr}/comments?per_page={PER_PAGE}"
        while url:
            response = self._request("GET", url)
            page = self._json(response)
            yield from (self._comment(c) for c in page if isinstance(c, dict)) if isinstance(page, list) else ()
            url = response.links.get("next", {}).get("url")

    def _create(self, pr: int, text: str) -> Comment:
        url = f"{self.base}/repos/{self.owner}/{self.name}/issues/{pr}/comments"
        return self._comment(self._json(self._request("POST", url, json_body={"body": text})))

    def _edit(self, pr: int, comment: Comment, text: str) -> Comment:
        url = f"{self.base}/repos/{self.owner}/{self.name}/issues/comments/{comment.id}"
        return self._comment(self._json(self._request("PATCH", url, json_body={"body": text})))
