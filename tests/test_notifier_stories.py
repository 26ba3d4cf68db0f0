"""An image update is one story: the rollout of its commit joins the thread of the new tag.

The reconciler's events for the commit an automation pushed know nothing of images (and the run
may be the one the Git host's push webhook asked for). The notifier links them by commit, in
its Memory, so every notifier replica and restart threads them together (notifier.stories).
"""

from __future__ import annotations

from pathlib import Path

from herald.messages import STORY_KEY, STORY_TITLE_KEY, Event
from notifier import stories
from notifier.memory import NotifierMemory
from reconciler.images.setters import Change, PolicyValue
from reconciler.images.worker import story_title

SHA = "ab" * 20
STORY = {STORY_KEY: f"image-update:flux-system/app@{SHA}", STORY_TITLE_KEY: "ghcr.io/acme/web 1.4.2 → 1.5.0"}


def pushed() -> Event:
    return Event.for_object("ImageUpdateAutomation", "app", "flux-system", severity="info", reason="Succeeded",
                            message=f"pushed commit '{SHA[:7]}' to branch 'main'",
                            metadata={"revision": f"main@sha1:{SHA}", **STORY})


def applied(revision: str = f"main@sha1:{SHA}") -> Event:
    return Event.for_object("Kustomization", "app", "flux-system", severity="info",
                            reason="ReconciliationSucceeded", message="Deployment/shop/web configured",
                            metadata={"revision": revision})


def test_the_rollout_of_an_automations_commit_joins_its_story_on_every_replica(tmp_path: Path) -> None:
    one, other = NotifierMemory.open(None, tmp_path), NotifierMemory.open(None, tmp_path)
    try:
        story = pushed()
        assert stories.follow(one.providers, story) is story  # it tells its own story
        joined = stories.follow(other.providers, applied())
        assert joined.metadata[STORY_KEY] == STORY[STORY_KEY]
        assert joined.metadata[STORY_TITLE_KEY] == STORY[STORY_TITLE_KEY]
        assert joined.metadata["revision"] == f"main@sha1:{SHA}"
    finally:
        one.close()
        other.close()


def test_a_commit_no_automation_made_tells_no_story(tmp_path: Path) -> None:
    memory = NotifierMemory.open(None, tmp_path)
    try:
        stories.follow(memory.providers, pushed())
        assert STORY_KEY not in stories.follow(memory.providers, applied(f"main@sha1:{'cd' * 20}")).metadata
        assert STORY_KEY not in stories.follow(memory.providers, applied("v1.2.3")).metadata  # no commit named
    finally:
        memory.close()


class _Down:
    """A Memory whose store cannot be reached (the broker restarting)."""

    def get(self, key: str) -> str | None:
        raise ConnectionError("broker unreachable")

    def put(self, key: str, value: str) -> None:
        raise ConnectionError("broker unreachable")


def test_a_memory_that_cannot_be_reached_sends_the_event_as_it_is() -> None:
    event = applied()
    assert stories.follow(_Down(), event) is event  # type: ignore[arg-type]
    assert stories.follow(_Down(), pushed()).metadata[STORY_KEY] == STORY[STORY_KEY]  # type: ignore[arg-type]


def test_the_title_names_each_image_with_the_tag_git_had_and_the_new_one() -> None:
    values = {"flux-system:web": PolicyValue("ghcr.io/acme/web", "1.5.0", "sha256:" + "1" * 64),
              "flux-system:api": PolicyValue("localhost:5000/acme/api", "2.0.1"),
              "flux-system:idle": None}
    changes = [("deploy/web.yaml", Change(3, "flux-system:web", "image", "ghcr.io/acme/web:1.4.2@sha256:" + "0" * 64,
                                          "ghcr.io/acme/web:1.5.0@sha256:" + "1" * 64)),
               ("deploy/kustomization.yaml", Change(7, "flux-system:api", "tag", "2.0.0", "2.0.1")),
               ("deploy/kustomization.yaml", Change(6, "flux-system:api", "name", "api", "localhost:5000/acme/api"))]
    assert story_title(changes, values) == "ghcr.io/acme/web 1.4.2 → 1.5.0; localhost:5000/acme/api 2.0.0 → 2.0.1"
    # a new digest for the same tag, or a reference without a tag, still names the image
    assert story_title([("a.yaml", Change(1, "flux-system:api", "image", "localhost:5000/acme/api",
                                          "localhost:5000/acme/api:2.0.1"))], values) == "localhost:5000/acme/api 2.0.1"
