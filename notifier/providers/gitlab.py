"""GitLab commit statuses (Provider type `gitlab`), as Flux's notification-controller posts them.

Address: the project, `https://gitlab.com/<group>/<subgroup>/<project>` (any depth; `.git` and
ssh forms accepted), or `https://gitlab.com/<numeric project ID>` as Flux's docs suggest; the
Secret's `address` overrides it. The API is `<scheme>://<host[:port]>/api/v4`, and the project
is named by its URL-encoded path (`group%2Fsubgroup%2Fproject`) or ID. GitLab installed under a
relative URL (`https://example.com/gitlab/...`) is not supported: the path is read as the
project's.

Credentials: the Secret's `token` (personal, group or project access token with the `api`
scope), sent as `PRIVATE-TOKEN` as go-gitlab (Flux's client) sends it.

Wire format (docs.gitlab.com, "Commits API"): `GET /projects/:id/repository/commits/:sha/statuses
?name=<context>` lists the latest statuses with that name, and
`POST /projects/:id/statuses/:sha` with `{"state", "name", "description"}` sets one.
States: running (for pending: reconciliation is under way), success, failed. Descriptions are
limited to 255 characters. GitLab cannot re-enter a state it is in (posting `running` over
`running` answers 400 "Cannot transition status via :run from :running"), so a running status is
not re-posted even when its description changed.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlencode

from herald.forges.gitlab import api_base, project_id  # shared with the MR comments
from herald.model import Provider
from notifier.providers import commitstatus, http
from notifier.providers.base import DeliveryError, Notification
from notifier.providers.commitstatus import Limits, Posted, Skip, State

LIMITS = Limits(context=255, description=255)
STATES = {State.PENDING: "running", State.SUCCESS: "success", State.FAILURE: "failed"}
UNFINISHED = frozenset({"pending", "running"})
PER_PAGE = 100

log = logging.getLogger("herald.notifier.gitlab")


def send(provider: Provider, secret: dict[str, str], note: Notification) -> str | None:
    """Set the event's commit status; None (there is no message to thread)."""
    planned = commitstatus.plan(note.event, LIMITS)
    if isinstance(planned, Skip):
        log.info("gitlab: %s: no commit status: %s", note.event.object_ref, planned.reason)
        return None
    repo = commitstatus.repository(secret.get("address") or provider.address, "gitlab",
                                   "https://gitlab.com/<group>/<project>")
    base = api_base(repo)
    where = f"gitlab status on {http.host(base)}"
    token = secret.get("token", "")
    if not token:
        raise DeliveryError(f"{where}: the Secret needs a `token`", retryable=False)
    project = project_id(repo)
    wanted = Posted(STATES[planned.state], planned.description)
    headers = {"PRIVATE-TOKEN": token}

    with http.session(provider, secret) as session:

        def newest() -> Posted | None:
            query = urlencode({"name": planned.context, "per_page": PER_PAGE})
            url = f"{base}/projects/{project}/repository/commits/{planned.sha}/statuses?{query}"
            listed = http.send(provider, secret, "GET", url, what=where, headers=headers, http=session)
            return newest_for(commitstatus.json_answer(listed), planned.context)

        existing = commitstatus.courtesy_read(newest)
        if commitstatus.is_duplicate(existing, wanted) or (
            existing is not None and existing.state == wanted.state and wanted.state in UNFINISHED
        ):
            log.info("%s: %s@%s %s is already %s, not posted again", where, "/".join(repo.path),
                     planned.sha[:12], planned.context, wanted.state)
            return None
        http.send(provider, secret, "POST", f"{base}/projects/{project}/statuses/{planned.sha}",
                  what=where, headers=headers, http=session,
                  json_body={"state": wanted.state, "name": planned.context,
                             "description": planned.description})
    log.info("%s: %s@%s %s → %s (%s)", where, "/".join(repo.path), planned.sha[:12], planned.context,
             wanted.state, planned.description)
    return None




def newest_for(statuses: Any, context: str) -> Posted | None:
    """The newest status (highest id) with the context as its name."""
    if not isinstance(statuses, list):
        return None
    named = [s for s in statuses if isinstance(s, dict) and s.get("name") == context]
    if not named:
        return None
    newest = max(named, key=lambda s: s.get("id") if isinstance(s.get("id"), int) else -1)
    return Posted(str(newest.get("status") or ""), str(newest.get("description") or ""))
