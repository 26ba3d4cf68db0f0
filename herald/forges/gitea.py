"""Gitea (and Forgejo) pull-request comments.

Wire format (Gitea's API, swagger operations `issueGetComments`, `issueCreateComment`,
`issueEditComment`; a PR's conversation is its issue's): `GET
/repos/{owner}/{repo}/issues/{index}/comments?page=N&limit=50` (oldest first; pages are read
until one comes back short or repeats what was seen, since older servers ignore `page` and
`limit` here and answer everything at once), `POST` to the same path with `{"body"}` (201),
`PATCH /repos/{owner}/{repo}/issues/comments/{id}` with `{"body"}` (200).

Length: Gitea stores a comment as LONGTEXT and documents no limit; Herald cuts at 65,536
characters anyway, so a plan stays readable and the same size as on GitHub.

Address and credentials as the commit-status provider (`notifier.providers.gitea`):
`<origin>/api/v1` and the Secret's `token` as `Authorization: token`. Whose comment: `GET
/user`'s `login` against each comment's `user.login`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from herald import http
from herald.forges.address import Repository, two_part_repository
from herald.forges.base import Comment, CommentClient, int_id
from herald.http import DeliveryError
from herald.model import Provider

LIMIT = 65536
PAGE_SIZE = 50


def api_base(repo: Repository) -> str:
    return f"{repo.origin}/api/v1"


class GiteaComments(CommentClient):
    forge = "gitea"
    limit = LIMIT

    def __init__(self, provider: Provider, secret: Mapping[str, str], **kwargs: Any) -> None:
        super().__init__(provider, secret, **kwargs)
        repo = two_part_repository(self.secret.get("address") or provider.address, "gitea", "<owner>/<repo>",
                                   "gitea.example.com")
        self.base = api_base(repo)
        self.owner, self.name = repo.path
        self.where = f"gitea comments on {http.host(self.base)}"
        if not self.secret.get("token"):
            raise DeliveryError(f"{self.where}: the Secret needs a `token`", retryable=False)

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"token {self.secret['token']}"}

    def _whoami(self) -> str:
        return str(self._json(self._request("GET", f"{self.base}/user")).get("login") or "")

    def _comment(self, data: Any) -> Comment:
        data = data if isinstance(data, dict) else {}
        return Comment(int_id(data.get("id")), str(data.get("body") or ""),
                       str((data.get("user") or {}).get("login") or ""), url=str(data.get("html_url") or ""))

    def _comments(self, pr: int) -> Iterator[Comment]:
        seen: set[int] = set()
        page = 1
        while True:
            url = f"{self.base}/repos/{self.owner}/{self.name}/issues/{pr}/comments?page={page}&limit={PAGE_SIZE}"
            listed = self._json(self._request("GET", url))
            items = [self._comment(c) for c in listed if isinstance(c, dict)] if isinstance(listed, list) else []
            new = [c for c in items if c.id not in seen]
            yield from new
            seen.update(c.id for c in new)
            if len(items) < PAGE_SIZE or not new:
                return
            page += 1

    def _create(self, pr: int, text: str) -> Comment:
        url = f"{self.base}/repos/{self.owner}/{self.name}/issues/{pr}/comments"
        return self._comment(self._json(self._request("POST", url, json_body={"body": text})))

    def _edit(self, pr: int, comment: Comment, text: str) -> Comment:
        url = f"{self.base}/repos/{self.owner}/{self.name}/issues/comments/{comment.id}"
        return self._comment(self._json(self._request("PATCH", url, json_body={"body": text})))
