"""Local forges: the commit-status APIs of GitHub, GitLab, Gitea, Bitbucket Cloud and Bitbucket
Server on one 127.0.0.1 server, each under its own API prefix.

| forge | prefix (what a provider derives from http://127.0.0.1:<port>/<repo path>) |
| --- | --- |
| GitHub (Enterprise Server) | `/api/v3`: statuses, and the App's installation tokens |
| GitLab | `/api/v4` |
| Gitea | `/api/v1` |
| Bitbucket Cloud | `/2.0` |
| Bitbucket Server | `<context path>/rest/api/latest` |

Each speaks its documented wire format, so a provider that passes here sends what the real
API takes: the same paths, auth headers (GitHub `Bearer`/`token`, GitLab `PRIVATE-TOKEN`, Gitea
`token`, Bitbucket Basic or `Bearer`), JSON bodies and answers (GitHub's newest-first list,
GitLab's `status` and `name`, Gitea's `status`, Bitbucket's key-addressed build statuses), and
error bodies: GitHub `{"message": "Bad credentials", "documentation_url": ...}` and 422
"Validation Failed" with `errors` (description over 140 characters, context over 255), GitLab
`{"message": "401 Unauthorized"}`, its 255-character description limit and its refusal to
re-enter a running state, Gitea `{"message": ..., "url": ...}`, Bitbucket Cloud
`{"type": "error", "error": {"message": ...}}`, Bitbucket Server `{"errors": [{"message": ...}]}`.

The statuses each forge was given are kept per repository and commit and answered by the list
and get endpoints. `fail_next` makes the next request fail (503, or 429 with Retry-After, or any
status, headers and body). A GitHub App (`add_github_app`) gets installation tokens from
`POST /app/installations/{id}/access_tokens` after its RS256 JWT is verified with the App's
public key; those tokens are then accepted like personal tokens until they expire.

Pull-request comments (what `herald.forges` edits in place), per forge and in its own shape:
GitHub issue comments (`GET`/`POST /repos/{o}/{r}/issues/{n}/comments` with `Link` pages,
`PATCH /repos/{o}/{r}/issues/comments/{id}`, `GET /user`; 422 "body is too long (maximum is
65536 characters)"; App-written comments carry `performed_via_github_app`), GitLab MR notes
(`X-Next-Page` and the other `X-` headers, `PUT .../notes/{id}`, `GET /user`; the 1,000,000
character note limit), Gitea comments (`page`/`limit`, or every comment at once when
`gitea_paginates_comments` is off, as older servers do; `PATCH .../issues/comments/{id}`),
Bitbucket Cloud (`{"values", "next"}` pages, `content.raw`, `GET /2.0/user`; no limit enforced,
none being documented), Bitbucket Server (`activities` with `isLastPage`/`nextPageStart`,
comment `version`s with 409 `CommentOutOfDateException` on a stale one, "Please enter a
non-empty value less than 32768 characters", `plugins/servlet/applinks/whoami`). `add_comment`
seeds a comment by another user, `edit_comment` edits one behind the client's back, `comments`
reads a PR's comments; `fail_next(429, retry_after=...)` answers one request with a rate limit.

What could not be checked against the real services (they are not reachable from here): the
exact wording of Gitea's and both Bitbucket editions' error messages, and Bitbucket's length
limits; the shapes are the documented ones.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import secrets
import sys
import threading
import time
import uuid as uuid_module
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.localserver import ServedOnAThread

FORGES = ("github", "gitlab", "gitea", "bitbucket", "bitbucketserver")

GITHUB_DOCS = "https://docs.github.com/rest/commits/statuses#create-a-commit-status"
GITHUB_STATES = {"error", "failure", "pending", "success"}
GITLAB_STATES = {"pending", "running", "success", "failed", "canceled", "skipped"}
GITEA_STATES = {"pending", "success", "error", "failure", "warning"}
BITBUCKET_STATES = {"INPROGRESS", "SUCCESSFUL", "FAILED", "STOPPED"}
BITBUCKET_SERVER_STATES = {"INPROGRESS", "SUCCESSFUL", "FAILED", "CANCELLED", "UNKNOWN"}
_SHA1 = re.compile(r"[0-9a-f]{40}")
GITHUB_COMMENTS_DOCS = "https://docs.github.com/rest/issues/comments#update-an-issue-comment"
GITHUB_COMMENT_LIMIT = 65536  # "body is too long (maximum is 65536 characters)"
GITLAB_NOTE_LIMIT = 1_000_000  # GitLab's Note validation
BITBUCKET_SERVER_COMMENT_LIMIT = 32768  # "Please enter a non-empty value less than 32768 characters"

_Reply = tuple[int, dict[str, str], bytes]


@dataclass(frozen=True)
class Received:
    """One request as the server saw it, and the status it answered."""

    forge: str
    method: str
    path: str  # without the query, as sent (GitLab's project stays URL-encoded)
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: Any  # parsed JSON or form, None when empty
    status: int


@dataclass
class GitHubApp:
    app_id: str
    installation_id: str
    public_key: rsa.RSAPublicKey
    token_ttl: float = 3600.0  # seconds until an installation token's expires_at
    issued: dict[str, float] = field(default_factory=dict)  # token → expiry (epoch)


@dataclass(frozen=True)
class _Failure:
    status: int
    retry_after: float | None
    body: str | None
    headers: dict[str, str]
    delay: float
    method: str | None


class GitForges(ServedOnAThread):
    """Start it, point providers at `url` + a repository path, read `requests` and `statuses`."""

    thread_name = "git-forges"

    def __init__(self) -> None:
        self.repos: dict[str, set[str]] = {
            "github": {"acme/app"},
            "gitlab": {"group/sub/app"},
            "gitea": {"acme/app"},
            "bitbucket": {"acme/app"},
            "bitbucketserver": {"PROJ/app"},
        }
        self.gitlab_ids = {"4711": "group/sub/app"}  # GitLab also names projects by ID
        self.tokens: dict[str, set[str]] = {forge: {f"{forge}-token"} for forge in FORGES}
        self.logins: dict[str, set[tuple[str, str]]] = {
            "bitbucket": {("herald", "app-password")},
            "bitbucketserver": {("herald", "server-password")},
        }
        self.bitbucket_context = ""  # Bitbucket Server's context path, such as "/bitbucket"
        self.token_users: dict[str, str] = {}  # token → the login it acts as ("herald-bot" by default)
        self.gitea_paginates_comments = True  # False: answer every comment at once, as older Gitea does
        self._comments: dict[tuple[str, str, int], list[dict[str, Any]]] = {}  # oldest first
        self.apps: dict[str, GitHubApp] = {}  # by installation ID
        self.requests: list[Received] = []
        self._statuses: dict[tuple[str, str, str], list[dict[str, Any]]] = {}  # oldest first
        # When each status and comment (by id) was last written, for benchmarks: kept apart
        # from the records, which are answered as the forge's JSON.
        self.written_at: dict[int, float] = {}
        self._ids = itertools.count(1001)
        self._failures: deque[_Failure] = deque()
        self._lock = threading.Lock()
        self._http = _Server(("127.0.0.1", 0), _handler_for(self))

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def url(self) -> str:
        host, port = self._http.server_address[:2]
        return f"http://{host}:{port}"

    # -- what tests set and read ---------------------------------------------------------

    def fail_next(self, status: int = 503, *, retry_after: float | None = None, body: str | None = None,
                  headers: dict[str, str] | None = None, delay: float = 0.0, method: str | None = None) -> None:
        """Answer the next request (the next `method` one, if given) with `status` after `delay`
        seconds, with `Retry-After` when given and the forge's usual error body unless `body`."""
        self._failures.append(_Failure(status, retry_after, body, dict(headers or {}), delay, method))

    def add_github_app(self, app_id: str, installation_id: str, public_key: rsa.RSAPublicKey,
                       token_ttl: float = 3600.0) -> GitHubApp:
        app = GitHubApp(app_id, installation_id, public_key, token_ttl)
        self.apps[installation_id] = app
        return app

    def statuses(self, forge: str, repo: str, sha: str) -> list[dict[str, Any]]:
        """The statuses a forge keeps for a commit, oldest first, as it would answer them."""
        with self._lock:
            return [dict(s) for s in self._statuses.get((forge, repo, sha), [])]

    def posts(self, forge: str | None = None) -> list[Received]:
        """The status-writing requests that were accepted."""
        return [r for r in self.requests if r.method == "POST" and 200 <= r.status < 300
                and (forge is None or r.forge == forge) and "access_tokens" not in r.path]

    def token_requests(self) -> list[Received]:
        return [r for r in self.requests if r.path.endswith("/access_tokens")]

    # -- dispatch --------------------------------------------------------------------------

    def _handle(self, method: str, target: str, headers: dict[str, str], raw: bytes) -> _Reply:
        parts = urlsplit(target)
        path, query = parts.path, dict(parse_qsl(parts.query))
        body = _parse_body(headers, raw)
        forge = _forge_of(path)
        failure = self._take_failure(method)
        if failure:
            time.sleep(failure.delay)
            reply = self._failure_reply(forge, failure)
        elif (comment_reply := self._comments_route(forge, method, path, query, headers, body)) is not None:
            reply = comment_reply
        elif forge == "github":
            reply = self._github(method, path, query, headers, body)
        elif forge == "gitlab":
            reply = self._gitlab(method, path, query, headers, body)
        elif forge == "gitea":
            reply = self._gitea(method, path, query, headers, body)
        elif forge == "bitbucket":
            reply = self._bitbucket(method, path, query, headers, body)
        elif forge == "bitbucketserver":
            reply = self._bitbucket_server(method, path, query, headers, body)
        else:
            reply = _text(404, "404 page not found")
        with self._lock:
            self.requests.append(Received(forge, method, path, query, headers, body, reply[0]))
        return reply

    def _take_failure(self, method: str) -> _Failure | None:
        with self._lock:
            for failure in self._failures:
                if failure.method in (None, method):
                    self._failures.remove(failure)
                    return failure
        return None

    def _failure_reply(self, forge: str, failure: _Failure) -> _Reply:
        if failure.body is not None:
            status, headers, payload = _text(failure.status, failure.body)
            if failure.body.lstrip().startswith(("{", "[")):
                headers["Content-Type"] = "application/json; charset=utf-8"
        elif failure.status == 429:
            status, headers, payload = _error(forge, 429, "API rate limit exceeded")
        else:
            status, headers, payload = _text(failure.status, f"<html><body><h1>{failure.status} Service "
                                                             "Unavailable</h1></body></html>")
        headers.update(failure.headers)
        if failure.retry_after is not None:
            headers["Retry-After"] = f"{failure.retry_after:g}"
        return status, headers, payload

    def _store(self, forge: str, repo: str, sha: str, status: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            status = {"id": next(self._ids), **status}
            self._statuses.setdefault((forge, repo, sha), []).append(status)
            self.written_at[status["id"]] = time.time()
            return dict(status)

    # -- GitHub (REST "Commit statuses", GitHub Apps) ----------------------------------------

    def _github(self, method: str, path: str, query: dict[str, str], headers: dict[str, str], body: Any) -> _Reply:
        if m := re.fullmatch(r"/api/v3/app/installations/([^/]+)/access_tokens", path):
            if method != "POST":
                return _github_error(404, "Not Found")
            return self._github_app_token(m[1], headers)
        post = re.fullmatch(r"/api/v3/repos/([^/]+)/([^/]+)/statuses/([^/]+)", path)
        listing = re.fullmatch(r"/api/v3/repos/([^/]+)/([^/]+)/commits/([^/]+)/statuses", path)
        if not (post and method == "POST") and not (listing and method == "GET"):
            return _github_error(404, "Not Found")
        token = _bearer(headers)
        if not token:
            return _github_error(401, "Requires authentication")
        if not self._github_token_ok(token):
            return _github_error(401, "Bad credentials")
        m = post or listing
        assert m is not None
        repo, ref = f"{m[1]}/{m[2]}", m[3]
        if repo not in self.repos["github"]:
            return _github_error(404, "Not Found")
        if not _SHA1.fullmatch(ref):
            return _github_error(422, f"No commit found for SHA: {ref}")
        if listing:
            newest_first = list(reversed(self.statuses("github", repo, ref)))
            per_page = min(int(query.get("per_page", "30")), 100)
            page = max(int(query.get("page", "1")), 1)
            return _json(200, newest_first[(page - 1) * per_page: page * per_page])
        if not isinstance(body, dict):
            return _github_error(400, "Problems parsing JSON")
        errors = []
        if body.get("state") not in GITHUB_STATES:
            errors.append(_github_field("state", "state is not included in the list"))
        if len(str(body.get("description") or "")) > 140:
            errors.append(_github_field("description", "description is too long (maximum is 140 characters)"))
        if len(str(body.get("context") or "default")) > 255:
            errors.append(_github_field("context", "context is too long (maximum is 255 characters)"))
        if errors:
            return _json(422, {"message": "Validation Failed", "errors": errors, "documentation_url": GITHUB_DOCS,
                               "status": "422"})
        now = _now()
        stored = self._store("github", repo, ref, {
            "url": f"{self.url}/api/v3/repos/{repo}/statuses/{ref}",
            "state": body["state"],
            "description": body.get("description"),
            "target_url": body.get("target_url"),
            "context": body.get("context") or "default",
            "created_at": now,
            "updated_at": now,
            "creator": {"login": "herald-bot", "id": 7, "type": "User"},
        })
        return _json(201, stored)

    def _github_token_ok(self, token: str) -> bool:
        if token in self.tokens["github"]:
            return True
        now = time.time()
        return any(app.issued.get(token, 0) > now for app in self.apps.values())

    def _github_app_token(self, installation_id: str, headers: dict[str, str]) -> _Reply:
        jwt = _bearer(headers)
        if not jwt:
            return _github_error(401, "A JSON web token could not be decoded")
        app = self.apps.get(installation_id)
        problem = _jwt_problem(jwt, app, next(iter(self.apps.values()), None))
        if problem:
            return _github_error(401, problem)
        if app is None:
            return _github_error(404, "Not Found")
        token = "ghs_" + secrets.token_urlsafe(27)
        expires = time.time() + app.token_ttl
        app.issued[token] = expires
        return _json(201, {
            "token": token,
            "expires_at": datetime.fromtimestamp(expires, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "permissions": {"statuses": "write", "metadata": "read"},
            "repository_selection": "selected",
        })

    # -- GitLab (Commits API: statuses) ------------------------------------------------------

    def _gitlab(self, method: str, path: str, query: dict[str, str], headers: dict[str, str], body: Any) -> _Reply:
        post = re.fullmatch(r"/api/v4/projects/([^/]+)/statuses/([^/]+)", path)
        listing = re.fullmatch(r"/api/v4/projects/([^/]+)/repository/commits/([^/]+)/statuses", path)
        if not (post and method == "POST") and not (listing and method == "GET"):
            return _json(404, {"error": "404 Not Found"})
        token = headers.get("private-token") or _bearer(headers)
        if not token or token not in self.tokens["gitlab"]:
            return _json(401, {"message": "401 Unauthorized"})
        m = post or listing
        assert m is not None
        project = unquote(m[1])
        project = self.gitlab_ids.get(project, project)
        sha = m[2]
        if project not in self.repos["gitlab"]:
            return _json(404, {"message": "404 Project Not Found"})
        if not _SHA1.fullmatch(sha):
            return _json(404, {"message": "404 Commit Not Found"})
        statuses = self.statuses("gitlab", project, sha)
        if listing:
            if query.get("name"):
                statuses = [s for s in statuses if s["name"] == query["name"]]
            if query.get("all") not in ("true", "1"):
                latest: dict[str, dict[str, Any]] = {}
                for s in statuses:
                    latest[s["name"]] = s
                statuses = sorted(latest.values(), key=lambda s: s["id"])
            if query.get("sort") == "desc":
                statuses.reverse()
            per_page = min(int(query.get("per_page", "20")), 100)
            return _json(200, statuses[:per_page])
        params = {**query, **(body if isinstance(body, dict) else {})}
        state = params.get("state")
        if not state:
            return _json(400, {"error": "state is missing"})
        if state not in GITLAB_STATES:
            return _json(400, {"error": "state does not have a valid value"})
        name = str(params.get("name") or params.get("context") or "default")
        description = params.get("description")
        too_long = {k: ["is too long (maximum is 255 characters)"]
                    for k, v in (("name", name), ("description", description or "")) if len(v) > 255}
        if too_long:
            return _json(400, {"message": too_long})
        same_name = [s for s in statuses if s["name"] == name]
        if same_name and same_name[-1]["status"] == state and state in ("pending", "running"):
            event = {"pending": "enqueue", "running": "run"}[state]
            return _json(400, {"message": f"Cannot transition status via :{event} from :{state} (Reason(s): "
                                          f"Status cannot transition via \"{event}\" according to its current state)"})
        now = _now()
        finished = state in ("success", "failed", "canceled", "skipped")
        stored = self._store("gitlab", project, sha, {
            "sha": sha, "ref": params.get("ref"), "status": state, "name": name,
            "target_url": params.get("target_url"), "description": description,
            "created_at": now, "started_at": now if state != "pending" else None,
            "finished_at": now if finished else None, "allow_failure": False, "coverage": None,
            "author": {"id": 28, "username": "herald-bot", "name": "Herald", "state": "active"},
        })
        return _json(201, stored)

    # -- Gitea (repoCreateStatus, repoListStatuses) ------------------------------------------

    def _gitea(self, method: str, path: str, query: dict[str, str], headers: dict[str, str], body: Any) -> _Reply:
        swagger = f"{self.url}/api/swagger"
        statuses = re.fullmatch(r"/api/v1/repos/([^/]+)/([^/]+)/statuses/([^/]+)", path)
        by_ref = re.fullmatch(r"/api/v1/repos/([^/]+)/([^/]+)/commits/([^/]+)/statuses", path)
        if not (statuses and method in ("GET", "POST")) and not (by_ref and method == "GET"):
            return _json(404, {"errors": None, "message": "The target couldn't be found.", "url": swagger})
        auth = headers.get("authorization", "")
        token = auth.split(" ", 1)[1].strip() if auth.lower().startswith(("token ", "bearer ")) else ""
        if not token or token not in self.tokens["gitea"]:
            return _json(401, {"message": "token is required", "url": swagger})
        m = statuses or by_ref
        assert m is not None
        repo, sha = f"{m[1]}/{m[2]}", m[3]
        if repo not in self.repos["gitea"]:
            return _json(404, {"errors": None, "message": "The target couldn't be found.", "url": swagger})
        if method == "GET":
            newest_first = sorted(self.statuses("gitea", repo, sha), key=lambda s: s["id"], reverse=True)
            limit = int(query.get("limit", "30"))
            page = max(int(query.get("page", "1")), 1)
            return _json(200, newest_first[(page - 1) * limit: page * limit])
        if not _SHA1.fullmatch(sha):
            return _json(404, {"errors": None, "message": "object does not exist", "url": swagger})
        if not isinstance(body, dict) or body.get("state") not in GITEA_STATES:
            return _json(422, {"message": "[State]: invalid commit status state", "url": swagger})
        now = _now()
        stored = self._store("gitea", repo, sha, {
            "status": body["state"], "target_url": body.get("target_url", ""),
            "description": body.get("description", ""), "url": f"{self.url}/api/v1/repos/{repo}/statuses/{sha}",
            "context": body.get("context", ""),
            "creator": {"id": 3, "login": "herald-bot", "full_name": "Herald"},
            "created_at": now, "updated_at": now,
        })
        return _json(201, stored)

    # -- Bitbucket Cloud (commit statuses: build) ----------------------------------------------

    def _bitbucket(self, method: str, path: str, query: dict[str, str], headers: dict[str, str], body: Any) -> _Reply:
        base = r"/2.0/repositories/([^/]+)/([^/]+)/commit/([^/]+)/statuses"
        create = re.fullmatch(base + r"/build/?", path)
        one = re.fullmatch(base + r"/build/([^/]+)", path)
        listing = re.fullmatch(base, path)
        if not (create and method == "POST") and not ((one or listing) and method == "GET"):
            return _bitbucket_error(404, "Resource not found")
        if not self._bitbucket_auth_ok("bitbucket", headers):
            return _bitbucket_error(401, "Access denied. You must have write or admin access.")
        m = create or one or listing
        assert m is not None
        repo, sha = f"{m[1]}/{m[2]}", m[3]
        if repo not in self.repos["bitbucket"]:
            return _bitbucket_error(404, f"Repository {repo} not found")
        if not _SHA1.fullmatch(sha):
            return _bitbucket_error(404, f"Commit not found: {sha}")
        current = {s["key"]: s for s in self.statuses("bitbucket", repo, sha)}  # the latest per key wins
        if listing:
            values = sorted(current.values(), key=lambda s: s["updated_on"], reverse=True)
            return _json(200, {"pagelen": 10, "size": len(values), "page": 1, "values": values})
        if one:
            status = current.get(unquote(one[4]))
            if status is None:
                return _bitbucket_error(404, "Commit status not found")
            return _json(200, status)
        if not isinstance(body, dict):
            return _bitbucket_error(400, "Bad request")
        fields: dict[str, list[str]] = {}
        for name in ("key", "state", "url"):
            if not body.get(name):
                fields[name] = ["This field is required."]
        if body.get("state") and body["state"] not in BITBUCKET_STATES:
            fields["state"] = [f"Value must be one of: {', '.join(sorted(BITBUCKET_STATES))}."]
        for name, limit in (("key", 40), ("name", 255), ("description", 255)):
            if len(str(body.get(name) or "")) > limit:
                fields[name] = [f"Ensure this value has at most {limit} characters."]
        if fields:
            return _json(400, {"type": "error", "error": {"message": "Bad request", "fields": fields}})
        now = _now()
        previous = current.get(body["key"])
        stored = self._store("bitbucket", repo, sha, {
            "type": "build", "key": body["key"], "state": body["state"], "name": body.get("name"),
            "description": body.get("description"), "url": body["url"], "refname": body.get("refname"),
            "uuid": previous["uuid"] if previous else "{" + secrets.token_hex(16) + "}",
            "created_on": previous["created_on"] if previous else now, "updated_on": now,
            "links": {"commit": {"href": f"{self.url}/2.0/repositories/{repo}/commit/{sha}"}},
        })
        return _json(200 if previous else 201, stored)

    # -- Bitbucket Server / Data Center (build status) -----------------------------------------

    def _bitbucket_server(self, method: str, path: str, query: dict[str, str], headers: dict[str, str],
                          body: Any) -> _Reply:
        m = re.fullmatch(r"(.*)/rest/api/latest/projects/([^/]+)/repos/([^/]+)/commits/([^/]+)/builds", path)
        if not m or m[1] != self.bitbucket_context or method not in ("GET", "POST"):
            return _text(404, "Not Found")
        if not self._bitbucket_auth_ok("bitbucketserver", headers):
            return _bitbucket_server_error(401, "Authentication failed. Please check your credentials and try again.",
                                           "com.atlassian.bitbucket.auth.IncorrectPasswordAuthenticationException")
        repo, sha = f"{m[2]}/{m[3]}", m[4]
        if repo not in self.repos["bitbucketserver"]:
            return _bitbucket_server_error(404, f"Repository {repo} does not exist.",
                                           "com.atlassian.bitbucket.repository.NoSuchRepositoryException")
        if not _SHA1.fullmatch(sha):
            return _bitbucket_server_error(404, f"Commit '{sha}' does not exist in repository '{m[3]}'.",
                                           "com.atlassian.bitbucket.commit.NoSuchCommitException")
        current = {s["key"]: s for s in self.statuses("bitbucketserver", repo, sha)}
        if method == "GET":
            status = current.get(query.get("key", ""))
            if status is None:
                return _bitbucket_server_error(404, f"No build status with key '{query.get('key', '')}' exists "
                                                    f"for commit {sha}.",
                                               "com.atlassian.bitbucket.build.status.NoSuchBuildStatusException")
            return _json(200, status)
        if not isinstance(body, dict):
            return _bitbucket_server_error(400, "The request body is not valid JSON.", None)
        problems = [(name, f"{name} must not be blank") for name in ("key", "state", "url") if not body.get(name)]
        if body.get("state") and body["state"] not in BITBUCKET_SERVER_STATES:
            problems.append(("state", f"state must be one of {', '.join(sorted(BITBUCKET_SERVER_STATES))}"))
        problems += [(name, f"{name} must be at most 255 characters") for name in ("key", "name", "description")
                     if len(str(body.get(name) or "")) > 255]
        if problems:
            errors = [{"context": context, "message": msg, "exceptionName": None} for context, msg in problems]
            return _json(400, {"errors": errors})
        now_ms = int(time.time() * 1000)
        previous = current.get(body["key"])
        self._store("bitbucketserver", repo, sha, {
            "key": body["key"], "state": body["state"], "name": body.get("name"), "url": body["url"],
            "description": body.get("description"), "ref": body.get("ref"),
            "createdDate": previous["createdDate"] if previous else now_ms, "updatedDate": now_ms,
        })
        return 204, {}, b""

    def _bitbucket_auth_ok(self, forge: str, headers: dict[str, str]) -> bool:
        auth = headers.get("authorization", "")
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer":
            return value.strip() in self.tokens[forge]
        if scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(value.strip()).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return False
            return (user, password) in self.logins.get(forge, set())
        return False

    # -- pull-request comments (all five forges) -------------------------------------------
    #
    # Comments are kept per (forge, repository, PR) in one neutral shape ({"id", "body",
    # "author", "app_id", "version", "created", "updated"}) and answered in each forge's own.
    # Who writes: `token_users` maps a token (or a Basic login's user) to a login; the default
    # tokens act as "herald-bot", Basic logins as their username, App tokens as "<slug>[bot]".

    def add_comment(self, forge: str, repo: str, pr: int, body: str, author: str = "someone-else") -> int:
        """A comment written by `author` (as another user, or a person quoting the marker)."""
        return self._new_comment(forge, repo, pr, body, author, None)["id"]

    def comments(self, forge: str, repo: str, pr: int) -> list[dict[str, Any]]:
        """The PR's comments, oldest first: {"id", "body", "author", "version", ...}."""
        with self._lock:
            return [dict(c) for c in self._comments.get((forge, repo, pr), [])]

    def edit_comment(self, forge: str, repo: str, pr: int, comment_id: int, body: str) -> None:
        """Someone edits a comment behind the client's back (Bitbucket Server's version moves)."""
        with self._lock:
            for c in self._comments.get((forge, repo, pr), []):
                if c["id"] == comment_id:
                    c.update(body=body, version=c["version"] + 1, updated=_now())

    def comment_writes(self, forge: str | None = None) -> list[Received]:
        """The accepted comment-writing requests (POST, PUT, PATCH on a comments path)."""
        return [r for r in self.requests if r.method in ("POST", "PUT", "PATCH") and 200 <= r.status < 300
                and re.search(r"/(comments|notes)(/|$)", r.path) and (forge is None or r.forge == forge)]

    def _new_comment(self, forge: str, repo: str, pr: int, body: str, author: str,
                     app_id: str | None) -> dict[str, Any]:
        with self._lock:
            now = _now()
            comment = {"id": next(self._ids), "body": body, "author": author, "app_id": app_id, "version": 0,
                       "created": now, "updated": now, "pr": pr, "repo": repo}
            self._comments.setdefault((forge, repo, pr), []).append(comment)
            self.written_at[comment["id"]] = time.time()
            return dict(comment)

    def _find_comment(self, forge: str, repo: str, comment_id: int, pr: int | None = None) -> dict[str, Any] | None:
        with self._lock:
            for (f, r, p), listed in self._comments.items():
                if f == forge and r == repo and (pr is None or p == pr):
                    for c in listed:
                        if c["id"] == comment_id:
                            return c
        return None

    def _user(self, forge: str, headers: dict[str, str]) -> tuple[str, str | None] | None:
        """(login, GitHub App id) the request authenticates as, or None."""
        auth = headers.get("authorization", "")
        scheme, _, value = auth.partition(" ")
        token = headers.get("private-token") or (value.strip() if scheme.lower() in ("bearer", "token") else "")
        if token:
            if token in self.tokens[forge]:
                return self.token_users.get(token, "herald-bot"), None
            if forge == "github":
                now = time.time()
                for app in self.apps.values():
                    if app.issued.get(token, 0) > now:
                        return f"herald-app-{app.app_id}[bot]", app.app_id
            return None
        if scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(value.strip()).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return None
            return (user, None) if (user, password) in self.logins.get(forge, set()) else None
        return None

    def _comments_route(self, forge: str, method: str, path: str, query: dict[str, str], headers: dict[str, str],
                        body: Any) -> _Reply | None:
        routes = {"github": self._github_comments, "gitlab": self._gitlab_comments, "gitea": self._gitea_comments,
                  "bitbucket": self._bitbucket_comments, "bitbucketserver": self._bitbucket_server_comments}
        route = routes.get(forge)
        return route(method, path, query, headers, body) if route else None

    # GitHub: REST "Issue comments" (a PR's conversation) and "Users" (GET /user).

    def _github_comment(self, c: dict[str, Any], repo: str) -> dict[str, Any]:
        app = {"id": int(c["app_id"]), "slug": f"herald-app-{c['app_id']}", "name": "Herald"} if c["app_id"] else None
        return {
            "id": c["id"], "node_id": f"IC_{c['id']}",
            "url": f"{self.url}/api/v3/repos/{repo}/issues/comments/{c['id']}",
            "html_url": f"{self.url}/{repo}/pull/{c['pr']}#issuecomment-{c['id']}",
            "issue_url": f"{self.url}/api/v3/repos/{repo}/issues/{c['pr']}",
            "body": c["body"], "created_at": c["created"], "updated_at": c["updated"],
            "user": {"login": c["author"], "id": _user_id(c["author"]), "type": "Bot" if c["app_id"] else "User"},
            "author_association": "NONE" if c["app_id"] else "MEMBER",
            "performed_via_github_app": app,
        }

    def _github_comments(self, method: str, path: str, query: dict[str, str], headers: dict[str, str],
                         body: Any) -> _Reply | None:
        listing = re.fullmatch(r"/api/v3/repos/([^/]+)/([^/]+)/issues/(\d+)/comments", path)
        one = re.fullmatch(r"/api/v3/repos/([^/]+)/([^/]+)/issues/comments/(\d+)", path)
        if path != "/api/v3/user" and not listing and not one:
            return None
        user = self._user("github", headers)
        if user is None:
            return _github_error(401, "Bad credentials" if headers.get("authorization") else "Requires authentication")
        login, app_id = user
        if path == "/api/v3/user":
            if method != "GET":
                return _github_error(404, "Not Found")
            if app_id:
                return _github_error(403, "Resource not accessible by integration")
            return _json(200, {"login": login, "id": _user_id(login), "type": "User"})
        m = listing or one
        assert m is not None
        repo = f"{m[1]}/{m[2]}"
        if repo not in self.repos["github"]:
            return _github_error(404, "Not Found")
        if listing and method == "GET":
            comments = self.comments("github", repo, int(m[3]))
            per_page = min(int(query.get("per_page", "30")), 100)
            page = max(int(query.get("page", "1")), 1)
            last = max(1, -(-len(comments) // per_page))
            status, reply_headers, payload = _json(200, [self._github_comment(c, repo) for c in
                                                         comments[(page - 1) * per_page: page * per_page]])
            link = f"{self.url}{path}?per_page={per_page}&page="
            links = ([f'<{link}{page + 1}>; rel="next"', f'<{link}{last}>; rel="last"'] if page < last else [])
            if page > 1:
                links += [f'<{link}{page - 1}>; rel="prev"', f'<{link}1>; rel="first"']
            if links:
                reply_headers["Link"] = ", ".join(links)
            return status, reply_headers, payload
        if (listing and method != "POST") or (one and method != "PATCH"):
            return _github_error(404, "Not Found")
        text = body.get("body") if isinstance(body, dict) else None
        if not isinstance(text, str) or not text:
            return _json(422, {"message": "Invalid request.\n\n\"body\" wasn't supplied.",
                               "documentation_url": GITHUB_COMMENTS_DOCS, "status": "422"})
        if len(text) > GITHUB_COMMENT_LIMIT:
            return _json(422, {"message": "Validation Failed", "errors": [{
                "resource": "IssueComment", "code": "custom", "field": "body",
                "message": f"body is too long (maximum is {GITHUB_COMMENT_LIMIT} characters)"}],
                "documentation_url": GITHUB_COMMENTS_DOCS, "status": "422"})
        if listing:
            return _json(201, self._github_comment(self._new_comment("github", repo, int(m[3]), text, login, app_id),
                                                   repo))
        comment = self._find_comment("github", repo, int(m[3]))
        if comment is None:
            return _github_error(404, "Not Found")
        with self._lock:
            comment.update(body=text, updated=_now(), version=comment["version"] + 1)
            self.written_at[comment["id"]] = time.time()
        return _json(200, self._github_comment(dict(comment), repo))

    # GitLab: "Notes API" (merge requests) and "Users API" (GET /user).

    def _gitlab_note(self, c: dict[str, Any]) -> dict[str, Any]:
        return {"id": c["id"], "type": None, "body": c["body"], "attachment": None,
                "author": {"id": _user_id(c["author"]), "username": c["author"], "name": c["author"],
                           "state": "active"},
                "created_at": c["created"], "updated_at": c["updated"], "system": bool(c.get("system")),
                "noteable_id": 900 + c["pr"], "noteable_type": "MergeRequest", "noteable_iid": c["pr"],
                "resolvable": False, "confidential": False, "internal": False}

    def _gitlab_comments(self, method: str, path: str, query: dict[str, str], headers: dict[str, str],
                         body: Any) -> _Reply | None:
        listing = re.fullmatch(r"/api/v4/projects/([^/]+)/merge_requests/(\d+)/notes", path)
        one = re.fullmatch(r"/api/v4/projects/([^/]+)/merge_requests/(\d+)/notes/(\d+)", path)
        if path != "/api/v4/user" and not listing and not one:
            return None
        user = self._user("gitlab", headers)
        if user is None:
            return _json(401, {"message": "401 Unauthorized"})
        login = user[0]
        if path == "/api/v4/user":
            return _json(200, {"id": _user_id(login), "username": login, "name": login, "state": "active"})
        m = listing or one
        assert m is not None
        project = unquote(m[1])
        project = self.gitlab_ids.get(project, project)
        if project not in self.repos["gitlab"]:
            return _json(404, {"message": "404 Project Not Found"})
        pr = int(m[2])
        if listing and method == "GET":
            notes = self.comments("gitlab", project, pr)
            if query.get("sort", "desc") == "desc":
                notes.reverse()
            per_page = min(int(query.get("per_page", "20")), 100)
            page = max(int(query.get("page", "1")), 1)
            pages = max(1, -(-len(notes) // per_page))
            status, reply_headers, payload = _json(200, [self._gitlab_note(n) for n in
                                                         notes[(page - 1) * per_page: page * per_page]])
            reply_headers.update({"X-Page": str(page), "X-Per-Page": str(per_page), "X-Total": str(len(notes)),
                                  "X-Total-Pages": str(pages), "X-Next-Page": str(page + 1) if page < pages else "",
                                  "X-Prev-Page": str(page - 1) if page > 1 else ""})
            return status, reply_headers, payload
        if (listing and method != "POST") or (one and method != "PUT"):
            return _json(405, {"message": "405 Method Not Allowed"})
        text = body.get("body") if isinstance(body, dict) else None
        if not isinstance(text, str) or not text:
            return _json(400, {"error": "body is missing"})
        if len(text) > GITLAB_NOTE_LIMIT:
            return _json(400, {"message": {"note": [f"is too long (maximum is {GITLAB_NOTE_LIMIT} characters)"]}})
        if listing:
            return _json(201, self._gitlab_note(self._new_comment("gitlab", project, pr, text, login, None)))
        note = self._find_comment("gitlab", project, int(m[3]), pr)
        if note is None:
            return _json(404, {"message": "404 Note Not Found"})
        if note["author"] != login:
            return _json(403, {"message": "403 Forbidden"})
        with self._lock:
            note.update(body=text, updated=_now(), version=note["version"] + 1)
            self.written_at[note["id"]] = time.time()
        return _json(200, self._gitlab_note(dict(note)))

    # Gitea: issueGetComments, issueCreateComment, issueEditComment, userGetCurrent.

    def _gitea_comment(self, c: dict[str, Any], repo: str) -> dict[str, Any]:
        return {"id": c["id"], "html_url": f"{self.url}/{repo}/pulls/{c['pr']}#issuecomment-{c['id']}",
                "pull_request_url": f"{self.url}/{repo}/pulls/{c['pr']}", "issue_url": "",
                "user": {"id": _user_id(c["author"]), "login": c["author"], "full_name": c["author"]},
                "original_author": "", "original_author_id": 0, "body": c["body"], "assets": [],
                "created_at": c["created"], "updated_at": c["updated"]}

    def _gitea_comments(self, method: str, path: str, query: dict[str, str], headers: dict[str, str],
                        body: Any) -> _Reply | None:
        listing = re.fullmatch(r"/api/v1/repos/([^/]+)/([^/]+)/issues/(\d+)/comments", path)
        one = re.fullmatch(r"/api/v1/repos/([^/]+)/([^/]+)/issues/comments/(\d+)", path)
        if path != "/api/v1/user" and not listing and not one:
            return None
        swagger = f"{self.url}/api/swagger"
        user = self._user("gitea", headers)
        if user is None:
            return _json(401, {"message": "token is required", "url": swagger})
        login = user[0]
        if path == "/api/v1/user":
            return _json(200, {"id": _user_id(login), "login": login, "full_name": login})
        m = listing or one
        assert m is not None
        repo = f"{m[1]}/{m[2]}"
        if repo not in self.repos["gitea"]:
            return _json(404, {"errors": None, "message": "The target couldn't be found.", "url": swagger})
        if listing and method == "GET":
            comments = self.comments("gitea", repo, int(m[3]))
            total = len(comments)
            if self.gitea_paginates_comments and ("page" in query or "limit" in query):
                limit = min(int(query.get("limit", "30")), 50)
                page = max(int(query.get("page", "1")), 1)
                comments = comments[(page - 1) * limit: page * limit]
            status, reply_headers, payload = _json(200, [self._gitea_comment(c, repo) for c in comments])
            reply_headers["X-Total-Count"] = str(total)
            return status, reply_headers, payload
        if (listing and method != "POST") or (one and method != "PATCH"):
            return _json(405, {"message": "Method Not Allowed", "url": swagger})
        text = body.get("body") if isinstance(body, dict) else None
        if not isinstance(text, str):
            return _json(422, {"message": "[Body]: Required", "url": swagger})
        if listing:
            return _json(201, self._gitea_comment(self._new_comment("gitea", repo, int(m[3]), text, login, None), repo))
        comment = self._find_comment("gitea", repo, int(m[3]))
        if comment is None:
            return _json(404, {"errors": None, "message": "The target couldn't be found.", "url": swagger})
        if comment["author"] != login:
            return _json(403, {"message": "user should be the owner of the comment", "url": swagger})
        with self._lock:
            comment.update(body=text, updated=_now(), version=comment["version"] + 1)
            self.written_at[comment["id"]] = time.time()
        return _json(200, self._gitea_comment(dict(comment), repo))

    # Bitbucket Cloud: pullrequests/{id}/comments and GET /user.

    def _bitbucket_comment(self, c: dict[str, Any], repo: str) -> dict[str, Any]:
        api = f"{self.url}/2.0/repositories/{repo}/pullrequests/{c['pr']}/comments/{c['id']}"
        return {"id": c["id"], "type": "pullrequest_comment",
                "content": {"type": "rendered", "raw": c["body"], "markup": "markdown", "html": ""},
                "user": _bitbucket_user(c["author"]), "created_on": c["created"], "updated_on": c["updated"],
                "deleted": bool(c.get("deleted")), "pending": False,
                "pullrequest": {"type": "pullrequest", "id": c["pr"]},
                "links": {"self": {"href": api},
                          "html": {"href": f"{self.url}/{repo}/pull-requests/{c['pr']}/_/diff#comment-{c['id']}"}}}

    def _bitbucket_comments(self, method: str, path: str, query: dict[str, str], headers: dict[str, str],
                            body: Any) -> _Reply | None:
        listing = re.fullmatch(r"/2.0/repositories/([^/]+)/([^/]+)/pullrequests/(\d+)/comments/?", path)
        one = re.fullmatch(r"/2.0/repositories/([^/]+)/([^/]+)/pullrequests/(\d+)/comments/(\d+)", path)
        if path != "/2.0/user" and not listing and not one:
            return None
        user = self._user("bitbucket", headers)
        if user is None:
            return _bitbucket_error(401, "Access denied. You must have write or admin access.")
        login = user[0]
        if path == "/2.0/user":
            return _json(200, _bitbucket_user(login))
        m = listing or one
        assert m is not None
        repo, pr = f"{m[1]}/{m[2]}", int(m[3])
        if repo not in self.repos["bitbucket"]:
            return _bitbucket_error(404, f"Repository {repo} not found")
        if listing and method == "GET":
            comments = self.comments("bitbucket", repo, pr)
            pagelen = min(int(query.get("pagelen", "10")), 100)
            page = max(int(query.get("page", "1")), 1)
            answer: dict[str, Any] = {
                "pagelen": pagelen, "size": len(comments), "page": page,
                "values": [self._bitbucket_comment(c, repo) for c in comments[(page - 1) * pagelen: page * pagelen]]}
            if page * pagelen < len(comments):
                answer["next"] = f"{self.url}{path}?pagelen={pagelen}&page={page + 1}"
            return _json(200, answer)
        if (listing and method != "POST") or (one and method not in ("PUT", "GET")):
            return _bitbucket_error(405, "Method not allowed")
        if one and method == "GET":
            comment = self._find_comment("bitbucket", repo, int(m[4]), pr)
            return (_json(200, self._bitbucket_comment(comment, repo)) if comment
                    else _bitbucket_error(404, "Comment not found"))
        content = body.get("content") if isinstance(body, dict) else None
        text = content.get("raw") if isinstance(content, dict) else None
        if not isinstance(text, str) or not text:
            return _json(400, {"type": "error", "error": {"message": "Bad request",
                                                          "fields": {"content.raw": ["This field is required."]}}})
        if listing:
            return _json(201, self._bitbucket_comment(self._new_comment("bitbucket", repo, pr, text, login, None), repo))
        comment = self._find_comment("bitbucket", repo, int(m[4]), pr)
        if comment is None:
            return _bitbucket_error(404, "Comment not found")
        if comment["author"] != login:
            return _bitbucket_error(403, "You can only edit your own comments.")
        with self._lock:
            comment.update(body=text, updated=_now(), version=comment["version"] + 1)
            self.written_at[comment["id"]] = time.time()
        return _json(200, self._bitbucket_comment(dict(comment), repo))

    # Bitbucket Server / Data Center: pull-requests/{id}/activities, .../comments, applinks whoami.

    def _bitbucket_server_comment(self, c: dict[str, Any]) -> dict[str, Any]:
        return {"properties": {"repositoryId": 1}, "id": c["id"], "version": c["version"], "text": c["body"],
                "author": _bitbucket_server_user(c["author"]), "createdDate": _millis(c["created"]),
                "updatedDate": _millis(c["updated"]), "comments": [], "tasks": [], "severity": "NORMAL",
                "state": "OPEN", "permittedOperations": {"editable": True, "transitionable": True,
                                                         "deletable": True}}

    def _bitbucket_server_comments(self, method: str, path: str, query: dict[str, str], headers: dict[str, str],
                                   body: Any) -> _Reply | None:
        ctx = re.escape(self.bitbucket_context)
        pr_path = ctx + r"/rest/api/latest/projects/([^/]+)/repos/([^/]+)/pull-requests/(\d+)"
        activities = re.fullmatch(pr_path + r"/activities", path)
        listing = re.fullmatch(pr_path + r"/comments", path)
        one = re.fullmatch(pr_path + r"/comments/(\d+)", path)
        whoami = path == f"{self.bitbucket_context}/plugins/servlet/applinks/whoami"
        if not (activities or listing or one or whoami):
            return None
        user = self._user("bitbucketserver", headers)
        if whoami:  # plain text: the user's name, or nothing for an anonymous request
            return 200, {"Content-Type": "text/plain;charset=UTF-8"}, (user[0] if user else "").encode()
        if user is None:
            return _bitbucket_server_error(401, "Authentication failed. Please check your credentials and try again.",
                                           "com.atlassian.bitbucket.auth.IncorrectPasswordAuthenticationException")
        login = user[0]
        m = activities or listing or one
        assert m is not None
        repo, pr = f"{m[1]}/{m[2]}", int(m[3])
        if repo not in self.repos["bitbucketserver"]:
            return _bitbucket_server_error(404, f"Repository {repo} does not exist.",
                                           "com.atlassian.bitbucket.repository.NoSuchRepositoryException")
        if activities:
            if method != "GET":
                return _text(405, "Method Not Allowed")
            newest_first = list(reversed(self.comments("bitbucketserver", repo, pr)))
            start = max(int(query.get("start", "0")), 0)
            limit = min(int(query.get("limit", "25")), 1000)
            chunk = newest_first[start: start + limit]
            values = [{"id": 5000 + c["id"], "createdDate": _millis(c["created"]),
                       "user": _bitbucket_server_user(c["author"]), "action": "COMMENTED", "commentAction": "ADDED",
                       "comment": self._bitbucket_server_comment(c)} for c in chunk]
            last = start + limit >= len(newest_first)
            answer: dict[str, Any] = {"size": len(values), "limit": limit, "isLastPage": last, "start": start,
                                      "values": values}
            if not last:
                answer["nextPageStart"] = start + limit
            return _json(200, answer)
        if (listing and method != "POST") or (one and method not in ("GET", "PUT")):
            return _text(405, "Method Not Allowed")
        if one and method == "GET":
            comment = self._find_comment("bitbucketserver", repo, int(m[4]), pr)
            if comment is None:
                return _bitbucket_server_error(404, f"Comment {m[4]} does not exist.",
                                               "com.atlassian.bitbucket.comment.NoSuchCommentException")
            return _json(200, self._bitbucket_server_comment(comment))
        text = body.get("text") if isinstance(body, dict) else None
        if not isinstance(text, str) or not text.strip() or len(text) >= BITBUCKET_SERVER_COMMENT_LIMIT:
            return _json(400, {"errors": [{"context": "text", "exceptionName": None, "message":
                                           f"Please enter a non-empty value less than "
                                           f"{BITBUCKET_SERVER_COMMENT_LIMIT} characters"}]})
        if listing:
            return _json(201, self._bitbucket_server_comment(
                self._new_comment("bitbucketserver", repo, pr, text, login, None)))
        comment = self._find_comment("bitbucketserver", repo, int(m[4]), pr)
        if comment is None:
            return _bitbucket_server_error(404, f"Comment {m[4]} does not exist.",
                                           "com.atlassian.bitbucket.comment.NoSuchCommentException")
        if comment["author"].lower() != login.lower():
            return _bitbucket_server_error(403, "You are not permitted to edit this comment.",
                                           "com.atlassian.bitbucket.AuthorisationException")
        with self._lock:
            if body.get("version") != comment["version"]:
                return _json(409, {"errors": [{
                    "context": None, "exceptionName": "com.atlassian.bitbucket.comment.CommentOutOfDateException",
                    "message": "You are attempting to modify a comment based on out-of-date information.",
                    "currentVersion": comment["version"], "expectedVersion": body.get("version")}]})
            comment.update(body=text, updated=_now(), version=comment["version"] + 1)
            self.written_at[comment["id"]] = time.time()
            answer_comment = dict(comment)
        return _json(200, self._bitbucket_server_comment(answer_comment))


# -- helpers -----------------------------------------------------------------------------------


def _forge_of(path: str) -> str:
    if path.startswith("/api/v3/"):
        return "github"
    if path.startswith("/api/v4/"):
        return "gitlab"
    if path.startswith("/api/v1/"):
        return "gitea"
    if path.startswith("/2.0/"):
        return "bitbucket"
    if "/rest/" in path or "/plugins/servlet/" in path:
        return "bitbucketserver"
    return ""


def _jwt_problem(jwt: str, app: GitHubApp | None, any_app: GitHubApp | None) -> str:
    """What GitHub would say about an App JWT, or "" when it is valid."""
    undecodable = "A JSON web token could not be decoded"
    key_owner = app or any_app
    try:
        head, payload, signature = jwt.split(".")
        header = json.loads(_b64decode(head))
        claims = json.loads(_b64decode(payload))
    except ValueError:
        return undecodable
    if header.get("alg") != "RS256" or key_owner is None:
        return undecodable
    try:
        key_owner.public_key.verify(_b64decode(signature), f"{head}.{payload}".encode(), padding.PKCS1v15(),
                                    hashes.SHA256())
    except (InvalidSignature, ValueError):
        return undecodable
    now = time.time()
    iat, exp = claims.get("iat"), claims.get("exp")
    if not isinstance(iat, int) or iat > now + 30:
        return "'Issued at' claim ('iat') must be an Integer representing the time that the assertion was issued."
    if not isinstance(exp, int) or exp <= now:
        return ("'Expiration time' claim ('exp') must be a numeric value representing the future time at which "
                "the assertion expires.")
    if exp - now > 600:
        return "'Expiration time' claim ('exp') is too far in the future"
    if str(claims.get("iss")) != key_owner.app_id:
        return undecodable
    return ""


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _bearer(headers: dict[str, str]) -> str:
    scheme, _, value = headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() in ("bearer", "token") else ""


def _parse_body(headers: dict[str, str], raw: bytes) -> Any:
    if not raw:
        return None
    content_type = headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        if content_type == "application/x-www-form-urlencoded":
            return dict(parse_qsl(raw.decode()))
        return json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        return None


def _user_id(login: str) -> int:
    """A stable numeric id for a login (GitHub, GitLab and Gitea users have one)."""
    return 1000 + int.from_bytes(login.encode()[:6].ljust(6, b"\0"), "big") % 900_000


def _bitbucket_user(login: str) -> dict[str, Any]:
    uuid = "{" + str(uuid_module.uuid5(uuid_module.NAMESPACE_URL, "bitbucket:" + login)) + "}"
    return {"type": "user", "uuid": uuid, "account_id": f"557058:{uuid[1:9]}", "nickname": login,
            "display_name": login}


def _bitbucket_server_user(login: str) -> dict[str, Any]:
    return {"name": login, "emailAddress": f"{login}@example.com", "id": _user_id(login), "displayName": login,
            "active": True, "slug": login.lower(), "type": "NORMAL"}


def _millis(stamp: str) -> int:
    return int(datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp() * 1000)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _json(status: int, data: Any) -> _Reply:
    return status, {"Content-Type": "application/json; charset=utf-8"}, json.dumps(data).encode()


def _text(status: int, text: str) -> _Reply:
    return status, {"Content-Type": "text/html; charset=utf-8"}, text.encode()


def _github_error(status: int, message: str) -> _Reply:
    return _json(status, {"message": message, "documentation_url": GITHUB_DOCS, "status": str(status)})


def _github_field(name: str, message: str) -> dict[str, str]:
    return {"resource": "Status", "code": "custom", "field": name, "message": message}


def _bitbucket_error(status: int, message: str) -> _Reply:
    return _json(status, {"type": "error", "error": {"message": message}})


def _bitbucket_server_error(status: int, message: str, exception: str | None) -> _Reply:
    return _json(status, {"errors": [{"context": None, "message": message, "exceptionName": exception}]})


def _error(forge: str, status: int, message: str) -> _Reply:
    """A forge's usual error body, for injected failures."""
    if forge == "github":
        return _github_error(status, message)
    if forge == "bitbucket":
        return _bitbucket_error(status, message)
    if forge == "bitbucketserver":
        return _bitbucket_server_error(status, message, None)
    return _json(status, {"message": message})


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that gave up (a timeout test) is expected; anything else is a bug to show."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def _handler_for(server: GitForges) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def _serve(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, reply_headers, payload = server._handle(self.command, self.path, headers, raw)
            self.send_response(status)
            for name, value in reply_headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve  # noqa: N815 (http.server's naming)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            """Quiet: pytest shows the assertions, not an access log."""

    return Handler
