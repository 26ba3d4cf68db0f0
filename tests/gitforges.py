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
        self.apps: dict[str, GitHubApp] = {}  # by installation ID
        self.requests: list[Received] = []
        self._statuses: dict[tuple[str, str, str], list[dict[str, Any]]] = {}  # oldest first
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
    if "/rest/" in path:
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

        do_GET = do_POST = do_PUT = do_DELETE = _serve  # noqa: N815 (http.server's naming)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            """Quiet: pytest shows the assertions, not an access log."""

    return Handler
