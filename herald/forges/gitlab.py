"""GitLab merge-request comments (notes).

Wire format (docs.gitlab.com, "Notes API", merge requests):
`GET /projects/:id/merge_requests/:iid/notes?sort=asc&order_by=created_at&per_page=100&page=N`
(the next page's number in the `X-Next-Page` header, empty on the last), `POST` to the same path
with `{"body"}` (201), `PUT /projects/:id/merge_requests/:iid/notes/:note_id` with `{"body"}`
(200). System notes ("added 1 commit") are skipped. A note is limited to 1,000,000 characters
(400 `{"message": {"note": ["is too long (maximum is 1000000 characters)"]}}`). GitLab may
answer 409 to concurrent updates; the edit is then read again and retried once (base).

Address and credentials as the commit-status provider (`notifier.providers.gitlab`): the
project's URL (`<origin>/api/v4`, the project named by its URL-encoded path or numeric ID) and
the Secret's `token`, sent as `PRIVATE-TOKEN`. Whose note: `GET /user`'s `id` against each
note's `author.id`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import quote

from herald import http
from herald.forges.address import Repository, repository
from herald.forges.base import Comment, CommentClient, int_id
from herald.http import DeliveryError
from herald.model import Provider

LIMIT = 1_000_000
PER_PAGE = 100


def api_base(repo: Repository) -> str:
    return f"{repo.origin}/api/v4"


def project_id(repo: Repository) -> str:
    """The project as the API names it: its numeric ID, or its URL-encoded full path."""
    return quote("/".join(repo.path), safe="")


class GitLabComments(CommentClient):
    forge = "gitlab"
    limit = LIMIT

    def __init__(self, provider: Provider, secret: Mapping[str, str], **kwargs: Any) -> None:
        super().__init__(provider, secret, **kwargs)
        repo = repository(self.secret.get("address") or provider.address, "gitlab",
                          "https://gitlab.com/<group>/<project>")
        self.base = api_base(repo)
        self.project = project_id(repo)
        self.where = f"gitlab comments on {http.host(self.base)}"
        if not self.secret.get("token"):
            raise DeliveryError(f"{self.where}: the Secret needs a `token`", retryable=False)

    def _headers(self) -> dict[str, str]:
        return {"PRIVATE-TOKEN": self.secret["token"]}

    def _whoami(self) -> str:
        return str(self._json(self._request("GET", f"{self.base}/user")).get("id") or "")

    def _comment(self, data: Any) -> Comment:
        data = data if isinstance(data, dict) else {}
        return Comment(int_id(data.get("id")), str(data.get("body") or ""),
                       str((data.get("author") or {}).get("id") or ""))

    def _notes(self, pr: int) -> str:
        return f"{self.base}/projects/{self.project}/merge_requests/{pr}/notes"

    def _comments(self, pr: int) -> Iterator[Comment]:
        page = "1"
        while page:
            url = f"{self._notes(pr)}?sort=asc&order_by=created_at&per_page={PER_PAGE}&page={page}"
            response = self._request("GET", url)
            notes = self._json(response)
            for note in notes if isinstance(notes, list) else []:
                if isinstance(note, dict) and not note.get("system"):
                    yield self._comment(note)
            page = response.headers.get("X-Next-Page", "").strip()

    def _create(self, pr: int, text: str) -> Comment:
        return self._comment(self._json(self._request("POST", self._notes(pr), json_body={"body": text})))

    def _edit(self, pr: int, comment: Comment, text: str) -> Comment:
        url = f"{self._notes(pr)}/{comment.id}"
        return self._comment(self._json(self._request("PUT", url, json_body={"body": text})))
