"""GitHub commit statuses (Provider type `github`), as Flux's notification-controller posts them.

Address: the repository, `https://github.com/<owner>/<repo>` (`.git` and ssh forms accepted);
the Secret's `address` overrides it, as in Flux. The API is https://api.github.com for
github.com, and `<scheme>://<host[:port]>/api/v3` for any other host (GitHub Enterprise Server,
or a test server), as go-github's enterprise client makes it.

Credentials: the Secret's `token` (a personal access token or any token with "Commit statuses:
write"), sent as `Authorization: Bearer`; or a GitHub App (`githubAppID`,
`githubAppInstallationID`, `githubAppPrivateKey`, optional `githubAppBaseURL`; see
`github_app`). A token wins when both are present, as in Flux.

Wire format (docs.github.com, REST "Commit statuses"): the newest statuses are read with
`GET /repos/{owner}/{repo}/commits/{sha}/statuses` (newest first) and, unless the newest one for
the context already says the same state and description (as Flux checks), one is created with
`POST /repos/{owner}/{repo}/statuses/{sha}` and `{"state", "context", "description"}`.
States: pending, success, failure. GitHub refuses descriptions over 140 characters and contexts
over 255 with 422 "Validation Failed"; both are cut to fit (see `commitstatus`).

Errors are http.py's: 429/5xx retried (Retry-After honoured), 401/403/404/422 final with
GitHub's `message`. One GitHub quirk is mended here: a rate limit may come as 403 with
`x-ratelimit-remaining: 0` (or with `retry-after`), which is presented to http.py as the 429 it
means, with the wait until `x-ratelimit-reset`, so it is retried instead of dead-lettered.
"""

from __future__ import annotations

import logging
from typing import Any

from herald.forges.address import two_part_repository
from herald.forges.github import (  # noqa: F401 (shared with the PR comments)
    PUBLIC_API,
    api_base,
    rate_limit_as_429,
)
from herald.model import Provider
from notifier.providers import commitstatus, github_app, http
from notifier.providers.base import DeliveryError, Notification
from notifier.providers.commitstatus import Limits, Posted, Skip, State

LIMITS = Limits(context=255, description=140)
STATES = {State.PENDING: "pending", State.SUCCESS: "success", State.FAILURE: "failure"}
API_VERSION = "2022-11-28"
PER_PAGE = 100

log = logging.getLogger("herald.notifier.github")


def send(provider: Provider, secret: dict[str, str], note: Notification) -> str | None:
    """Post the event's commit status; None (there is no message to thread)."""
    planned = commitstatus.plan(note.event, LIMITS)
    if isinstance(planned, Skip):
        log.info("github: %s: no commit status: %s", note.event.object_ref, planned.reason)
        return None
    repo = two_part_repository(secret.get("address") or provider.address, "github", "<owner>/<repo>", "github.com")
    base = api_base(repo)
    where = f"github status on {http.host(base)}"
    wanted = Posted(STATES[planned.state], planned.description)
    owner, name = repo.path

    with http.session(provider, secret) as session:
        session.hooks["response"].append(rate_limit_as_429)
        app = github_app.credentials(secret) if not secret.get("token") else None
        token = secret.get("token") or (
            github_app.installation_token(provider, secret, app, base, session=session) if app else ""
        )
        if not token:
            raise DeliveryError(
                f"{where}: the Secret needs a `token`, or {github_app.KEY_APP_ID}, "
                f"{github_app.KEY_INSTALLATION_ID} and {github_app.KEY_PRIVATE_KEY}",
                retryable=False,
            )
        scrubbed = {**secret, "_token": token}
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/vnd.github+json",
                   "X-GitHub-Api-Version": API_VERSION}

        def newest() -> Posted | None:
            url = f"{base}/repos/{owner}/{name}/commits/{planned.sha}/statuses?per_page={PER_PAGE}"
            listed = http.send(provider, scrubbed, "GET", url, what=where, headers=headers, http=session)
            return newest_for(commitstatus.json_answer(listed), planned.context)

        if commitstatus.is_duplicate(commitstatus.courtesy_read(newest), wanted):
            log.info("%s: %s/%s@%s %s is already %s, not posted again", where, owner, name,
                     planned.sha[:12], planned.context, wanted.state)
            return None
        try:
            http.send(provider, scrubbed, "POST", f"{base}/repos/{owner}/{name}/statuses/{planned.sha}",
                      what=where, headers=headers, http=session,
                      json_body={"state": wanted.state, "context": planned.context,
                                 "description": planned.description})
        except DeliveryError as exc:
            if app and exc.status == 401:
                github_app.forget(app)  # a revoked installation token: the next try asks for one
            raise
    log.info("%s: %s/%s@%s %s → %s (%s)", where, owner, name, planned.sha[:12], planned.context,
             wanted.state, planned.description)
    return None



def newest_for(statuses: Any, context: str) -> Posted | None:
    """The newest status for a context in GitHub's list (newest first; contexts ignore case)."""
    for status in statuses if isinstance(statuses, list) else []:
        if isinstance(status, dict) and str(status.get("context") or "").lower() == context.lower():
            return Posted(str(status.get("state") or ""), str(status.get("description") or ""))
    return None
