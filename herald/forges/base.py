"""One pull-request comment per PR, edited in place: what every forge's client shares.

A client is made from a Provider (its `address` names the repository, GitHub Enterprise style
as the commit-status providers read it) and the Provider's decoded Secret (the same keys the
commit-status providers use). `upsert_comment(pr, body)`:

1. lists the PR's comments, following the forge's pagination to the end;
2. keeps those written by the client's own user (the token's user, or the GitHub App) whose
   body carries the hidden marker, so a restart finds the comment again without remembering an
   id, and a comment by someone else that quotes the marker is never taken over;
3. edits the oldest such comment, or creates one when there is none; the body is cut to the
   forge's limit first (`fit`), so it is always one comment, never a chain.

Pace and retries (`_request`): writes are spaced by `write_interval` seconds (GitHub asks for
a second between mutating requests); 429, GitHub's 403 rate limits (primary and secondary)
and 5xx are retried, waiting the server's Retry-After, or a backoff when it gave none, never
longer than `max_wait` per wait (a longer ask fails at once, retryable, with the wait in
`retry_after`); other 4xx fail at once with the forge's own words. Errors are
`herald.http.DeliveryError`; Secret values (and derived tokens) are scrubbed from them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Self

import requests

from herald import http
from herald.forges.fit import fit
from herald.http import DeliveryError
from herald.model import Provider

MARKER = "<!-- herald:plan -->"
"""The hidden marker, as an HTML comment: GitHub, GitLab and Gitea keep it and do not show it."""
LINK_MARKER = "[//]: # (herald:plan)"
"""The marker for Bitbucket, whose Markdown escapes HTML (so an HTML comment would show): a
link reference definition, which CommonMark renders as nothing and the raw text keeps."""
USER_AGENT = "herald"

log = logging.getLogger("herald.forges")


@dataclass(frozen=True)
class Comment:
    """A PR comment as a forge listed it. `author` is in the form `_whoami` answers."""

    id: int
    body: str
    author: str
    version: int | None = None  # Bitbucket Server's optimistic-locking version
    url: str = ""


@dataclass(frozen=True)
class CommentRef:
    """The comment `upsert_comment` wrote: which one, and whether it was new."""

    forge: str
    pr: int
    id: int
    created: bool
    url: str = ""
    version: int | None = None


class CommentClient:
    """Common logic; a forge module subclasses it with its URLs, auth and field names."""

    forge = ""
    limit = 65536
    marker = MARKER

    def __init__(
        self,
        provider: Provider,
        secret: Mapping[str, str],
        *,
        max_wait: float = 60.0,
        attempts: int = 5,
        write_interval: float = 1.0,
        backoff: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.provider = provider
        self.secret = dict(secret)
        self.max_wait = max_wait
        self.attempts = max(1, attempts)
        self.write_interval = write_interval
        self.backoff = backoff
        self.sleep = sleep
        self.session = http.session(provider, self.secret, user_agent=USER_AGENT)
        self._scrubbed: dict[str, str] = dict(self.secret)  # what errors are scrubbed of
        self._last_write = 0.0
        self._me: str | None = None
        self._lock = threading.Lock()
        self.where = self.forge  # "<forge> comments on <host>", set by the subclass

    # -- the API -------------------------------------------------------------------------

    def upsert_comment(self, pr: int, body: str) -> CommentRef:
        """Edit this client's marked comment on PR `pr`, or create it; the body cut to fit."""
        text = fit(f"{self.marker}\n{body}", self.limit)
        with self._lock:
            found = self.find_comment(pr)
            if found is None:
                made = self._create(pr, text)
                log.info("%s: PR %s: created comment %s", self.where, pr, made.id)
                return self._ref(pr, made, created=True)
            try:
                edited = self._edit(pr, found, text)
            except DeliveryError as exc:
                if exc.status != 409:
                    raise
                # A concurrent edit (Bitbucket Server's stale version, GitLab's conflict): re-read, once.
                log.info("%s: PR %s: comment %s changed under us (409), read again", self.where, pr, found.id)
                edited = self._edit(pr, self._reread(pr, found), text)
            log.info("%s: PR %s: edited comment %s", self.where, pr, edited.id)
            return self._ref(pr, edited, created=False)

    def find_comment(self, pr: int) -> Comment | None:
        """The oldest comment on the PR by this client's user that carries the marker."""
        me = self.me()
        mine = [c for c in self._comments(pr) if self.marker in c.body and self._is_mine(c, me)]
        return min(mine, key=lambda c: c.id) if mine else None

    def me(self) -> str:
        """Who the credentials act as, in the form `Comment.author` takes (asked once)."""
        if self._me is None:
            self._me = self._whoami()
        return self._me

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- what a forge module provides ----------------------------------------------------

    def _whoami(self) -> str:
        raise NotImplementedError

    def _comments(self, pr: int) -> Iterator[Comment]:
        raise NotImplementedError

    def _create(self, pr: int, text: str) -> Comment:
        raise NotImplementedError

    def _edit(self, pr: int, comment: Comment, text: str) -> Comment:
        raise NotImplementedError

    def _reread(self, pr: int, comment: Comment) -> Comment:
        """The comment as it is now (after a 409); by default, found again by listing."""
        return self.find_comment(pr) or comment

    def _headers(self) -> dict[str, str]:
        return {}

    def _auth(self) -> tuple[str, str] | None:
        return None

    def _is_mine(self, comment: Comment, me: str) -> bool:
        return comment.author == me

    def _ref(self, pr: int, comment: Comment, *, created: bool) -> CommentRef:
        return CommentRef(self.forge, pr, comment.id, created, comment.url, comment.version)

    # -- HTTP with pacing and retries ----------------------------------------------------

    def _request(self, method: str, url: str, *, json_body: Any = None) -> requests.Response:
        write = method not in ("GET", "HEAD")
        for attempt in range(1, self.attempts + 1):
            if write:
                self._pace()
            try:
                return http.send(self.provider, self._scrubbed, method, url, what=self.where,
                                 json_body=json_body, headers=self._headers(), auth=self._auth(),
                                 http=self.session)
            except DeliveryError as exc:
                if not exc.retryable or attempt == self.attempts:
                    raise
                wait = exc.retry_after if exc.retry_after is not None else self.backoff * 2 ** (attempt - 1)
                if wait > self.max_wait:
                    raise DeliveryError(f"{exc} (asked to wait {wait:.0f}s, more than {self.max_wait:g}s)",
                                        retryable=True, retry_after=wait, status=exc.status) from None
                log.warning("%s: %s; trying again in %.1fs (attempt %d of %d)", self.where, exc, wait,
                            attempt + 1, self.attempts)
                self.sleep(wait)
        raise AssertionError("unreachable")

    def _pace(self) -> None:
        now = time.monotonic()
        wait = self._last_write + self.write_interval - now
        if wait > 0:
            self.sleep(wait)
        self._last_write = time.monotonic()

    def _json(self, response: requests.Response) -> Any:
        try:
            return response.json()
        except ValueError:
            raise DeliveryError(f"{self.where}: the answer is not JSON", retryable=True,
                                status=response.status_code) from None


def int_id(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return -1
