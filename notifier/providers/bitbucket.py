"""Bitbucket Cloud build statuses (Provider type `bitbucket`), as Flux's notification-controller
posts them.

Address: the repository, `https://bitbucket.org/<workspace>/<repo>` (`.git` and ssh forms
accepted); the Secret's `address` overrides it. The API base follows one rule:
`bitbucket.org` (or `www.bitbucket.org`) → `https://api.bitbucket.org/2.0`; any other host →
`<scheme>://<host[:port]>/2.0`. Bitbucket Cloud has no self-hosted edition, so the second case
serves proxies and test servers; it keeps the repository's scheme, host and port.

Credentials: the Secret's `token`. As in Flux, `<username>:<app-password>` (or, since app
passwords are being retired, `<email>:<API token>`) is sent as HTTP Basic; a `token` without a
colon is a repository, project or workspace access token and is sent as `Authorization: Bearer`.

Wire format (developer.atlassian.com, Bitbucket Cloud REST "Commit statuses"): the status for
our key is read with `GET /repositories/{workspace}/{repo}/commit/{sha}/statuses/build/{key}`
(404 when there is none) and, unless it already says the same state and description (as Flux
checks), written with `POST /repositories/{workspace}/{repo}/commit/{sha}/statuses/build` and
`{"key", "state", "name", "description", "url"}`; a status with the same key is overwritten.
The key is the SHA-1 of the context in hex (40 characters, Bitbucket's key limit, as Flux makes
it); the name shows the context. States: INPROGRESS, SUCCESSFUL, FAILED. `url` is required and
links the repository. Name and description are cut to 255 characters.
"""

from __future__ import annotations

import logging
from typing import Any

from herald.forges.address import two_part_repository
from herald.forges.bitbucket import PUBLIC_API, api_base, credentials  # noqa: F401 (shared with the PR comments)
from herald.model import Provider
from notifier.providers import commitstatus, http
from notifier.providers.base import Notification
from notifier.providers.commitstatus import Limits, Posted, Skip, State

LIMITS = Limits(context=255, description=255)
STATES = {State.PENDING: "INPROGRESS", State.SUCCESS: "SUCCESSFUL", State.FAILURE: "FAILED"}

log = logging.getLogger("herald.notifier.bitbucket")


def send(provider: Provider, secret: dict[str, str], note: Notification) -> str | None:
    """Post the event's build status; None (there is no message to thread)."""
    planned = commitstatus.plan(note.event, LIMITS)
    if isinstance(planned, Skip):
        log.info("bitbucket: %s: no commit status: %s", note.event.object_ref, planned.reason)
        return None
    repo = two_part_repository(secret.get("address") or provider.address, "bitbucket", "<workspace>/<repo>",
                               "bitbucket.org")
    base = api_base(repo)
    where = f"bitbucket status on {http.host(base)}"
    auth, headers = credentials(secret, where)
    workspace, slug = repo.path
    key = commitstatus.status_key(planned.context)
    statuses = f"{base}/repositories/{workspace}/{slug}/commit/{planned.sha}/statuses/build"
    wanted = Posted(STATES[planned.state], planned.description)
    scrubbed = {**secret, "_password": auth[1]} if auth else secret  # an echoed password is scrubbed too

    with http.session(provider, secret) as session:

        def current() -> Posted | None:
            answer = http.send(provider, scrubbed, "GET", f"{statuses}/{key}", what=where, auth=auth,
                               headers=headers, http=session)
            return posted(commitstatus.json_answer(answer))

        if commitstatus.is_duplicate(commitstatus.courtesy_read(current), wanted):
            log.info("%s: %s/%s@%s %s is already %s, not posted again", where, workspace, slug,
                     planned.sha[:12], planned.context, wanted.state)
            return None
        http.send(provider, scrubbed, "POST", statuses, what=where, auth=auth, headers=headers, http=session,
                  json_body={"key": key, "state": wanted.state, "name": planned.context,
                             "description": planned.description, "url": repo.url})
    log.info("%s: %s/%s@%s %s → %s (%s)", where, workspace, slug, planned.sha[:12], planned.context,
             wanted.state, planned.description)
    return None




def posted(status: Any) -> Posted | None:
    if not isinstance(status, dict) or not status.get("state"):
        return None
    return Posted(str(status["state"]), str(status.get("description") or ""))
