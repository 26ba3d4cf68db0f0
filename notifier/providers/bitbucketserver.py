"""Bitbucket Server / Data Center build statuses (Provider type `bitbucketserver`), as Flux's
notification-controller posts them.

Address: the repository's http(s) clone URL, `https://bitbucket.example.com/scm/<PROJECT>/<repo>.git`
(as Flux, ssh URLs are not accepted); the Secret's `address` overrides it. Whatever precedes the
last `/scm/` is the server's context path (`https://example.com/bitbucket/scm/...`), so the API is
`<scheme>://<host[:port]><context>/rest/api/latest/projects/<PROJECT>/repos/<repo>/commits/<sha>/builds`
(Bitbucket 7.4 and later).

Credentials, as Flux reads them: the Secret's `token` (an HTTP access token with repository
write permission), sent as `Authorization: Bearer`; else `password` with `username` from the
Secret or the Provider's `spec.username`, sent as HTTP Basic.

Wire format (developer.atlassian.com, "Updating build status for commits" and the build REST
resource): `GET .../builds?key=<key>` answers the build status with that key (404 when there is
none) and, unless it already has the same state, name and description (as Flux checks),
`POST .../builds` with `{"key", "state", "name", "description", "url"}` sets it (204). As Flux,
the key is the SHA-1 of the context in hex, and the name is `<context> [<description>]` because
Bitbucket's UI shows the name. States: INPROGRESS, SUCCESSFUL, FAILED. `url` is required and
links the repository's page. Name and description are cut to 255 characters.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlencode

from herald.forges.bitbucketserver import (  # shared with the PR comments
    EXAMPLE,
    credentials,
    split_scm_path,
)
from herald.model import Provider
from notifier.providers import commitstatus, http
from notifier.providers.base import DeliveryError, Notification
from notifier.providers.commitstatus import Limits, Posted, Skip, State

LIMITS = Limits(context=255, description=255)
NAME_LIMIT = 255
STATES = {State.PENDING: "INPROGRESS", State.SUCCESS: "SUCCESSFUL", State.FAILURE: "FAILED"}

log = logging.getLogger("herald.notifier.bitbucketserver")


def send(provider: Provider, secret: dict[str, str], note: Notification) -> str | None:
    """Set the event's build status; None (there is no message to thread)."""
    planned = commitstatus.plan(note.event, LIMITS)
    if isinstance(planned, Skip):
        log.info("bitbucketserver: %s: no commit status: %s", note.event.object_ref, planned.reason)
        return None
    address = secret.get("address") or provider.address
    if not address.strip().lower().startswith(("http://", "https://")):
        raise DeliveryError(f"bitbucketserver: the Provider's address must be the http(s) clone URL, such as {EXAMPLE}",
                            retryable=False)
    repo = commitstatus.repository(address, "bitbucketserver", EXAMPLE)
    context_path, project, slug = split_scm_path(repo)
    site = repo.origin + context_path
    where = f"bitbucketserver status on {http.host(site)}"
    auth, headers = credentials(provider, secret, where)
    builds = f"{site}/rest/api/latest/projects/{project}/repos/{slug}/commits/{planned.sha}/builds"
    key = commitstatus.status_key(planned.context)
    name = commitstatus.clip(f"{planned.context} [{planned.description}]", NAME_LIMIT)
    wanted = Posted(STATES[planned.state], planned.description, name)
    scrubbed = {**secret, "_password": auth[1]} if auth else secret

    with http.session(provider, secret) as session:

        def current() -> Posted | None:
            answer = http.send(provider, scrubbed, "GET", f"{builds}?{urlencode({'key': key})}", what=where,
                               auth=auth, headers=headers, http=session)
            return posted(commitstatus.json_answer(answer), key)

        if commitstatus.is_duplicate(commitstatus.courtesy_read(current), wanted):
            log.info("%s: %s/%s@%s %s is already %s, not posted again", where, project, slug,
                     planned.sha[:12], planned.context, wanted.state)
            return None
        http.send(provider, scrubbed, "POST", builds, what=where, auth=auth, headers=headers, http=session,
                  json_body={"key": key, "state": wanted.state, "name": name,
                             "description": planned.description,
                             "url": f"{site}/projects/{project}/repos/{slug}"})
    log.info("%s: %s/%s@%s %s → %s (%s)", where, project, slug, planned.sha[:12], planned.context,
             wanted.state, planned.description)
    return None




def posted(status: Any, key: str) -> Posted | None:
    if not isinstance(status, dict) or status.get("key") != key or not status.get("state"):
        return None
    return Posted(str(status["state"]), str(status.get("description") or ""), str(status.get("name") or ""))
