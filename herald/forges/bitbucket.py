"""Bitbucket Cloud pull-request comments.

Wire format (developer.atlassian.com, Bitbucket Cloud REST "Pullrequests" comments):
`GET /repositories/{workspace}/{repo}/pullrequests/{id}/comments?pagelen=100` (a page
`{"values": [...], "next": <url>}`; the last page has no `next`), `POST` to the same path with
`{"content": {"raw": ...}}` (201), `PUT .../comments/{comment_id}` with the same (200).
Deleted comments (`"deleted": true`) are skipped.

The marker: Bitbucket's Markdown escapes raw HTML, so an HTML comment would be shown as text.
The marker is a link reference definition, `[//]: # (herald:plan)`, which renders as nothing
and stays in `content.raw`. Length: Bitbucket Cloud documents no limit for comments; Herald
cuts at Bitbucket Server's (32,767 characters) to stay on the safe side.

Address and credentials as the commit-status provider (`notifier.providers.bitbucket`, whose
`api_base` and `credentials` are these): `<username>:<app-password>` (or `<email>:<API token>`)
as HTTP Basic, an access token as Bearer. Whose comment: `GET /user`'s `uuid` against each
comment's `user.uuid` (an access token's bot user has one too).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from herald import http
from herald.forges.address import Repository, two_part_repository
from herald.forges.base import LINK_MARKER, Comment, CommentClient, int_id
from herald.http import DeliveryError
from herald.model import Provider

PUBLIC_API = "https://api.bitbucket.org/2.0"
LIMIT = 32767
PAGE_LEN = 100


def api_base(repo: Repository) -> str:
    if repo.hostname in ("bitbucket.org", "www.bitbucket.org"):
        return PUBLIC_API
    return f"{repo.origin}/2.0"


def credentials(secret: Mapping[str, str], where: str) -> tuple[tuple[str, str] | None, dict[str, str]]:
    """HTTP Basic for `user:password` tokens, a Bearer header for access tokens."""
    token = secret.get("token", "")
    if not token:
        raise DeliveryError(f"{where}: the Secret needs a `token` (<username>:<app-password>, or an access token)",
                            retryable=False)
    username, colon, password = token.partition(":")
    if colon:
        if not username or not password:
            raise DeliveryError(f"{where}: the Secret's `token` must be <username>:<app-password>", retryable=False)
        return (username, password), {}
    return None, {"Authorization": f"Bearer {token}"}


class BitbucketComments(CommentClient):
    forge = "bitbucket"
    limit = LIMIT
    marker = LINK_MARKER

    def __init__(self, provider: Provider, secret: Mapping[str, str], **kwargs: Any) -> None:
        super().__init__(provider, secret, **kwargs)
        repo = two_part_repository(self.secret.get("address") or provider.address, "bitbucket",
                                   "<workspace>/<repo>", "bitbucket.org")
        self.base = api_base(repo)
        self.workspace, self.slug = repo.path
        self.where = f"bitbucket comments on {http.host(self.base)}"
        self._basic, self._bearer = credentials(self.secret, self.where)
        if self._basic:
            self._scrubbed["_password"] = self._basic[1]

    def _headers(self) -> dict[str, str]:
        return dict(self._bearer)

    def _auth(self) -> tuple[str, str] | None:
        return self._basic

    def _whoami(self) -> str:
        return str(self._json(self._request("GET", f"{self.base}/user")).get("uuid") or "")

    def _comment(self, data: Any) -> Comment:
        data = data if isinstance(data, dict) else {}
        content = data.get("content") if isinstance(data.get("content"), dict) else {}
        html = ((data.get("links") or {}).get("html") or {}).get("href") or ""
        return Comment(int_id(data.get("id")), str(content.get("raw") or ""),
                       str((data.get("user") or {}).get("uuid") or ""), url=str(html))

    def _url(self, pr: int) -> str:
        return f"{self.base}/repositories/{self.workspace}/{self.slug}/pullrequests/{pr}/comments"

    def _comments(self, pr: int) -> Iterator[Comment]:
        url: str | None = f"{self._url(pr)}?pagelen={PAGE_LEN}"
        while url:
            page = self._json(self._request("GET", url))
            page = page if isinstance(page, dict) else {}
            for c in page.get("values") or []:
                if isinstance(c, dict) and not c.get("deleted"):
                    yield self._comment(c)
            url = page.get("next") or None

    def _create(self, pr: int, text: str) -> Comment:
        return self._comment(self._json(self._request("POST", self._url(pr), json_body={"content": {"raw": text}})))

    def _edit(self, pr: int, comment: Comment, text: str) -> Comment:
        url = f"{self._url(pr)}/{comment.id}"
        return self._comment(self._json(self._request("PUT", url, json_body={"content": {"raw": text}})))
