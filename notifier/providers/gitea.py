"""Gitea (and Forgejo) commit statuses (Provider type `gitea`), as Flux's notification-controller
posts them.

Address: the repository, `https://gitea.example.com/<owner>/<repo>` (`.git` and ssh forms
accepted); the Secret's `address` overrides it. The API is `<scheme>://<host[:port]>/api/v1`.

Credentials: the Secret's `token` (an access token with `write:repository`), sent as
`Authorization: token <token>` as Gitea's SDK (Flux's client) sends it.

Wire format (Gitea's API, swagger operations `repoListStatuses` and `repoCreateStatus`):
`GET /repos/{owner}/{repo}/statuses/{sha}` lists the commit's statuses and, unless the newest
one for the context already says the same state and description (as Flux checks),
`POST /repos/{owner}/{repo}/statuses/{sha}` with `{"state", "context", "description",
"target_url"}` creates one. States: pending, success, failure. Gitea answers a status's state in
the field `status`. Gitea stores context and description as TEXT; both are still cut to 255
characters, which its UI shows whole.
"""

from __future__ import annotations

import logging
from typing import Any

from herald.forges.address import two_part_repository
from herald.forges.gitea import api_base  # shared with the PR comments
from herald.model import Provider
from notifier.providers import commitstatus, http
from notifier.providers.base import DeliveryError, Notification
from notifier.providers.commitstatus import Limits, Posted, Skip, State

LIMITS = Limits(context=255, description=255)
STATES = {State.PENDING: "pending", State.SUCCESS: "success", State.FAILURE: "failure"}
PAGE_SIZE = 50

log = logging.getLogger("herald.notifier.gitea")


def send(provider: Provider, secret: dict[str, str], note: Notification) -> str | None:
    """Post the event's commit status; None (there is no message to thread)."""
    planned = commitstatus.plan(note.event, LIMITS)
    if isinstance(planned, Skip):
        log.info("gitea: %s: no commit status: %s", note.event.object_ref, planned.reason)
        return None
    repo = two_part_repository(secret.get("address") or provider.address, "gitea", "<owner>/<repo>",
                               "gitea.example.com")
    base = api_base(repo)
    where = f"gitea status on {http.host(base)}"
    token = secret.get("token", "")
    if not token:
        raise DeliveryError(f"{where}: the Secret needs a `token`", retryable=False)
    owner, name = repo.path
    url = f"{base}/repos/{owner}/{name}/statuses/{planned.sha}"
    wanted = Posted(STATES[planned.state], planned.description)
    headers = {"Authorization": f"token {token}"}

    with http.session(provider, secret) as session:

        def newest() -> Posted | None:
            listed = http.send(provider, secret, "GET", f"{url}?limit={PAGE_SIZE}", what=where,
                               headers=headers, http=session)
            return newest_for(commitstatus.json_answer(listed), planned.context)

        if commitstatus.is_duplicate(commitstatus.courtesy_read(newest), wanted):
            log.info("%s: %s/%s@%s %s is already %s, not posted again", where, owner, name,
                     planned.sha[:12], planned.context, wanted.state)
            return None
        http.send(provider, secret, "POST", url, what=where, headers=headers, http=session,
                  json_body={"state": wanted.state, "context": planned.context,
                             "description": planned.description, "target_url": ""})
    log.info("%s: %s/%s@%s %s → %s (%s)", where, owner, name, planned.sha[:12], planned.context,
             wanted.state, planned.description)
    return None



def newest_for(statuses: Any, context: str) -> Posted | None:
    """The newest status (highest id) for the context; Gitea writes the state as `status`."""
    if not isinstance(statuses, list):
        return None
    mine = [s for s in statuses if isinstance(s, dict) and s.get("context") == context]
    if not mine:
        return None
    newest = max(mine, key=lambda s: s.get("id") if isinstance(s.get("id"), int) else -1)
    return Posted(str(newest.get("status") or newest.get("state") or ""), str(newest.get("description") or ""))
