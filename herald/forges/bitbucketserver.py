"""Bitbucket Server / Data Center pull-request comments.

Wire format (developer.atlassian.com, Bitbucket Data Center REST, pull requests):
comments are listed through the PR's activities, `GET
{site}/rest/api/latest/projects/{P}/repos/{r}/pull-requests/{id}/activities?start=N&limit=100`
(pages `{"values", "isLastPage", "nextPageStart"}`, newest first; a comment is an activity with
`"action": "COMMENTED"`, `"commentAction": "ADDED"` and its `comment`, with `id`, `version`,
`text` and `author`). `POST .../pull-requests/{id}/comments` with `{"text"}` creates one (201);
`PUT .../pull-requests/{id}/comments/{commentId}` with `{"text", "version"}` edits it (200).
A stale `version` answers 409 (`CommentOutOfDateException`): the comment is read again
(`GET .../comments/{commentId}`) and the edit retried once with its current version. Text is
limited to 32,767 characters (400, "Please enter a non-empty value less than 32768 characters").

The marker: Bitbucket Server escapes raw HTML in Markdown unless an administrator allows it, so
the marker is a link reference definition, `[//]: # (herald:plan)`, which renders as nothing.

Address and credentials as the commit-status provider (`notifier.providers.bitbucketserver`,
whose `split_scm_path` and `credentials` are these): the clone URL
`https://host[/context]/scm/<PROJECT>/<repo>.git`; the Secret's `token` as Bearer, else
`password` with `username` (Secret or `spec.username`) as Basic. Whose comment: the username
(Basic), or for a token `GET {site}/plugins/servlet/applinks/whoami` (plain text, the token's
user), against each comment's `author.name`, ignoring case as Bitbucket does.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from herald import http
from herald.forges.address import Repository, repository
from herald.forges.base import LINK_MARKER, Comment, CommentClient, int_id
from herald.http import DeliveryError
from herald.model import Provider

LIMIT = 32767
PAGE_LIMIT = 100
EXAMPLE = "https://bitbucket.example.com/scm/<PROJECT>/<repo>.git"


def split_scm_path(repo: Repository) -> tuple[str, str, str]:
    """(context path, project key, repository slug) from `<context>/scm/<PROJECT>/<repo>`."""
    path = repo.path
    scm = max((i for i, part in enumerate(path) if part == "scm"), default=-1)
    if scm < 0 or len(path) - scm != 3:
        raise DeliveryError(f"bitbucketserver: the Provider's address must be the http(s) clone URL, such as {EXAMPLE}",
                            retryable=False)
    context = "".join(f"/{part}" for part in path[:scm])
    return context, path[scm + 1], path[scm + 2]


def credentials(
    provider: Provider, secret: Mapping[str, str], where: str
) -> tuple[tuple[str, str] | None, dict[str, str]]:
    """A Bearer header for `token`, else HTTP Basic from `password` and the username."""
    headers = {"X-Atlassian-Token": "no-check"}
    if secret.get("token"):
        return None, {**headers, "Authorization": f"Bearer {secret['token']}"}
    username = secret.get("username") or provider.username
    password = secret.get("password", "")
    if not username or not password:
        raise DeliveryError(
            f"{where}: the Secret needs a `token`, or a `password` with a `username` (Secret or spec.username)",
            retryable=False,
        )
    return (username, password), headers


class BitbucketServerComments(CommentClient):
    forge = "bitbucketserver"
    limit = LIMIT
    marker = LINK_MARKER

    def __init__(self, provider: Provider, secret: Mapping[str, str], **kwargs: Any) -> None:
        super().__init__(provider, secret, **kwargs)
        address = self.secret.get("address") or provider.address
        if not address.strip().lower().startswith(("http://", "https://")):
            raise DeliveryError(f"bitbucketserver: the Provider's address must be the http(s) clone URL, "
                                f"such as {EXAMPLE}", retryable=False)
        repo = repository(address, "bitbucketserver", EXAMPLE)
        context, self.project, self.slug = split_scm_path(repo)
        self.site = repo.origin + context
        self.where = f"bitbucketserver comments on {http.host(self.site)}"
        self._basic, self._extra = credentials(provider, self.secret, self.where)
        if self._basic:
            self._scrubbed["_password"] = self._basic[1]

    def _headers(self) -> dict[str, str]:
        return dict(self._extra)

    def _auth(self) -> tuple[str, str] | None:
        return self._basic

    def _is_mine(self, comment: Comment, me: str) -> bool:
        return bool(me) and comment.author.lower() == me.lower()

    def _whoami(self) -> str:
        if self._basic:
            return self._basic[0]
        return self._request("GET", f"{self.site}/plugins/servlet/applinks/whoami").text.strip()

    def _pr(self, pr: int) -> str:
        return f"{self.site}/rest/api/latest/projects/{self.project}/repos/{self.slug}/pull-requests/{pr}"

    def _comment(self, data: Any, pr: int) -> Comment:
        data = data if isinstance(data, dict) else {}
        version = data.get("version")
        return Comment(int_id(data.get("id")), str(data.get("text") or ""),
                       str((data.get("author") or {}).get("name") or ""),
                       version=version if isinstance(version, int) else None,
                       url=f"{self.site}/projects/{self.project}/repos/{self.slug}/pull-requests/{pr}/overview"
                           f"?commentId={data.get('id')}")

    def _comments(self, pr: int) -> Iterator[Comment]:
        start: Any = 0
        while True:
            page = self._json(self._request("GET", f"{self._pr(pr)}/activities?start={start}&limit={PAGE_LIMIT}"))
            page = page if isinstance(page, dict) else {}
            for activity in page.get("values") or []:
                if (isinstance(activity, dict) and activity.get("action") == "COMMENTED"
                        and activity.get("commentAction") == "ADDED"):
                    yield self._comment(activity.get("comment"), pr)
            if page.get("isLastPage", True) or page.get("nextPageStart") is None:
                return
            start = page["nextPageStart"]

    def _reread(self, pr: int, comment: Comment) -> Comment:
        return self._comment(self._json(self._request("GET", f"{self._pr(pr)}/comments/{comment.id}")), pr)

    def _create(self, pr: int, text: str) -> Comment:
        return self._comment(self._json(self._request("POST", f"{self._pr(pr)}/comments", json_body={"text": text})),
                             pr)

    def _edit(self, pr: int, comment: Comment, text: str) -> Comment:
        body = {"text": text, "version": comment.version if comment.version is not None else 0}
        return self._comment(self._json(self._request("PUT", f"{self._pr(pr)}/comments/{comment.id}",
                                                      json_body=body)), pr)
