"""Stories: events of several objects that tell one story, and are threaded as one.

An image update is one story from the registry push to the rollout (issue 15): the ImagePolicy
that resolved the new tag, the ImageUpdateAutomation's commit, then the Kustomizations applying
that commit. The image worker marks its own events with the story (`herald.messages.STORY_KEY`,
and the commit's revision on the automation's event). The reconciler's events cannot say it:
the reconciler does not know which commits an automation made, and the run that applies the
commit may well be the one the Git host's push webhook asked for, not the image worker's
follow-up (they coalesce into one run).

So the notifier links them by commit. When it fans out an event that carries a story and a
revision, it remembers commit → story in its Memory (shared by replicas, kept a day); an event
of another object at a remembered commit joins that story. The image worker publishes its
events before it asks for the reconcile of its commit, so the link exists before the rollout's
first event is fanned out. The Memory is a courtesy: when it cannot be read, the event is sent
as it is (in its object's own thread), never held back.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace

from herald.messages import STORY_KEY, STORY_TITLE_KEY, Event
from notifier.providers.base import Memory

log = logging.getLogger(__name__)

MEMORY_PREFIX = "story:commit:"


def commit_of(revision: str) -> str:
    """The commit a revision names (`main@sha1:<sha>`, `sha1:<sha>`), or "" for none."""
    _, found, sha = revision.rpartition("sha1:")
    return sha if found and len(sha) == 40 else ""


def follow(memory: Memory, event: Event) -> Event:
    """The event as its providers should see it: with the story of its commit, if it has one.

    An event carrying its own story links its commit to it (and is returned as it is)."""
    story, commit = event.metadata.get(STORY_KEY, ""), commit_of(event.revision)
    if not commit:
        return event
    try:
        if story:
            memory.put(MEMORY_PREFIX + commit, json.dumps(
                {"story": story, "title": event.metadata.get(STORY_TITLE_KEY, "")}, separators=(",", ":")))
            return event
        linked = memory.get(MEMORY_PREFIX + commit)
    except Exception as exc:  # noqa: BLE001 (a courtesy: whatever backs the Memory, the event goes on)
        log.warning("stories: commit %s: the notifier memory cannot be used (%s: %s); sent on its own",
                    commit[:12], type(exc).__name__, exc)
        return event
    if not linked:
        return event
    try:
        data = json.loads(linked)
        story, title = str(data["story"]), str(data.get("title") or "")
    except (ValueError, KeyError, TypeError):
        return event  # written by another version, or damaged: not worth failing a notification
    return replace(event, metadata={**event.metadata, STORY_KEY: story, **({STORY_TITLE_KEY: title} if title else {})})
