"""The operator's history: bounded, shared through the bus's logs, and joined into one
delivery's trace even when its request was covered by another delivery's run."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from herald import config
from herald.history import History, open_history
from herald.suspensions import Applier, open_suspensions, overlay
from receiver.operator import model
from tests.fixtures_herald import write_config


def test_each_kind_keeps_only_its_newest_records(tmp_path: Path) -> None:
    history = open_history(None, tmp_path)
    small = History(history.log, limits={**history.limits, "delivery": 5})
    for i in range(8):
        small.put("delivery", f"d{i}", {"at": 1000.0 + i, "delivery": f"id-{i}"})
    kept = small.all("delivery")
    assert [r["delivery"] for r in kept] == ["id-7", "id-6", "id-5", "id-4", "id-3"]
    assert small.get("delivery", "d0") is None, "what fell out of the bound is forgotten, not just hidden"
    assert small.get("delivery", "d7")["key"] == "d7"


def test_records_older_than_the_retention_are_gone(tmp_path: Path) -> None:
    history = open_history(None, tmp_path, retention=0.5)
    history.put("event", "old", {"reason": "ReconciliationSucceeded"})
    assert [e["reason"] for e in history.all("event")] == ["ReconciliationSucceeded"]
    time.sleep(0.6)
    assert history.all("event") == []


def test_another_process_reads_what_one_wrote(tmp_path: Path) -> None:
    writer = open_history(None, tmp_path, read=False)
    writer.put("run", "r1", {"state": "succeeded"})
    assert open_history(None, tmp_path).get("run", "r1")["state"] == "succeeded"


def test_a_broken_store_never_fails_the_work_it_describes(tmp_path: Path) -> None:
    history = open_history(None, tmp_path)
    (tmp_path / "history.sqlite3").unlink()
    history.log.close()
    (tmp_path / "history.sqlite3").mkdir()  # unusable now
    history.put("event", "e", {"reason": "x"})  # no exception
    assert history.all("event") == []


def test_a_coalesced_delivery_is_followed_to_the_run_that_covered_it() -> None:
    now = 1_800_000_000.0
    run = {"id": "run-a", "at": now, "finished": now + 2, "request": "req-a", "delivery": "push-a",
           "target": "GitRepository/flux-system/app", "source": "GitRepository/flux-system/app",
           "kustomizations": ["Kustomization/flux-system/app"], "state": "succeeded"}
    requests = [{"id": "req-b", "delivery": "push-b", "at": now + 1, "target": "GitRepository/flux-system/app",
                 "result": "coalesced"}]
    notifications = [{"request": "req-a", "delivery": "push-a", "at": now + 3, "provider": "flux-system/slack",
                      "state": "delivered", "commitStatus": False},
                     {"request": "req-a", "delivery": "push-a", "at": now + 3, "provider": "flux-system/github",
                      "state": "delivered", "commitStatus": True}]
    hooks = [{"delivery": "push-b", "at": now + 0.9, "status": 202,
              "requests": [{"id": "req-b", "queue": "herald.reconcile", "target": "GitRepository/flux-system/app"}]}]
    trace = model.trace("push-b", deliveries=hooks, requests=requests, runs=[run], events=[],
                        notifications=notifications, plans=[], images=[])
    assert [r["id"] for r in trace["runs"]] == ["run-a"] and trace["runs"][0]["coveredRequest"] == "req-b"
    assert [n["provider"] for n in trace["notifications"]] == ["flux-system/slack", "flux-system/github"]
    assert [n["provider"] for n in trace["commitStatuses"]] == ["flux-system/github"]


def test_a_push_during_the_run_of_an_older_commit_is_followed_to_its_follow_up_run() -> None:
    """The start-up run of commit A is under way when the push of B is taken and coalesced:
    the follow-up run applies B, so the trace of B's delivery is that run, not A's."""
    now = 1_800_000_000.0
    target = {"target": "GitRepository/flux-system/app", "source": "GitRepository/flux-system/app",
              "kustomizations": ["Kustomization/flux-system/app"]}
    older = {"id": "run-a", "at": now, "finished": now + 2, "request": "req-a", "delivery": "start-up",
             "state": "succeeded", "revision": "main@sha1:" + "a" * 40, **target}
    follow_up = {"id": "run-b", "at": now + 2.1, "request": "req-f", "delivery": "start-up", "state": "running",
                 **target}
    requests = [{"id": "req-b", "delivery": "push-b", "at": now + 1, "target": "GitRepository/flux-system/app",
                 "revision": "main@sha1:" + "b" * 40, "result": "coalesced"}]

    def runs_of(*runs: dict) -> list[str]:
        return [r["id"] for r in model.trace("push-b", deliveries=[], requests=requests, runs=list(runs),
                                             events=[], notifications=[], plans=[], images=[])["runs"]]

    assert runs_of({**older, "finished": None, "state": "running", "revision": None}) == ["run-a"]  # not known yet
    assert runs_of(older, follow_up) == ["run-b"]
    same = [{**requests[0], "revision": older["revision"]}]
    assert [r["id"] for r in model.trace("push-b", deliveries=[], requests=same, runs=[older, follow_up], events=[],
                                         notifications=[], plans=[], images=[])["runs"]] == ["run-a"]


def test_a_request_no_worker_took_yet_shows_as_queued() -> None:
    hooks = [{"delivery": "d", "at": 1.0, "status": 202,
              "requests": [{"id": "q", "queue": "herald.reconcile", "target": "GitRepository/ns/app"}]}]
    trace = model.trace("d", deliveries=hooks, requests=[], runs=[], events=[], notifications=[], plans=[],
                        images=[])
    assert trace["requests"] == [{"id": "q", "queue": "herald.reconcile", "target": "GitRepository/ns/app",
                                  "result": "queued"}]


@pytest.fixture
def cfg(tmp_path: Path) -> config.Config:
    return config.load([write_config(tmp_path / "h.yaml", "file:///nowhere.git")])


def test_an_operator_suspension_overlays_the_configuration_and_resume_lifts_only_it(cfg, tmp_path: Path) -> None:
    key = ("Kustomization", "flux-system", "app")
    suspended = overlay(cfg, {key})
    assert suspended.kustomizations[key[1:]].suspend and suspended.operator_suspended == {key}
    assert not cfg.kustomizations[key[1:]].suspend, "the configuration itself is left as it is"
    assert overlay(cfg, set()) is cfg
    assert overlay(cfg, {("Kustomization", "flux-system", "gone")}) is cfg
    import dataclasses

    held = dataclasses.replace(cfg, kustomizations={key[1:]: dataclasses.replace(cfg.kustomizations[key[1:]],
                                                                                  suspend=True)})
    assert overlay(held, {key}).operator_suspended == frozenset(), \
        "suspended by its configuration: the overlay claims nothing, so resume cannot lift it"

    store = open_suspensions(None, tmp_path)
    seen: list[config.Config] = []
    import threading

    applier = Applier(store, cfg, [seen.append], poll=0.05)
    store.set(*key, True, by="alice")
    assert applier.initial().kustomizations[key[1:]].suspend

    stop = threading.Event()
    threading.Thread(target=applier.watch, args=(stop,), daemon=True).start()
    try:
        store.set(*key, False)
        deadline = time.monotonic() + 5
        while not seen and time.monotonic() < deadline:
            time.sleep(0.02)
        assert seen and not seen[-1].kustomizations[key[1:]].suspend
    finally:
        stop.set()
    assert open_suspensions(None, tmp_path).suspended() == {}, "the resume is remembered across restarts"


def test_a_plan_cut_for_its_comment_links_to_the_whole_plan_on_the_status_page(cfg) -> None:
    from reconciler.plan import CREATE, ObjectChange, Plan
    from reconciler.plans import final_event
    from reconciler.preview import KustomizationPlan

    ks = cfg.kustomizations[("flux-system", "app")]
    huge = Plan([ObjectChange(f"ConfigMap/shop/c{i}", CREATE, "+data:\n" + "+  k: " + "v" * 200 + "\n")
                 for i in range(400)])
    whole = "https://herald.example.com/ui/plans/req-1/flux-system/app"
    event = final_event(KustomizationPlan(ks, plan=huge), {"revision": "x"}, whole)
    assert event.metadata["planSection"].endswith(
        f"_(this Kustomization's plan was cut: [the whole plan]({whole}))_\n</details>\n")
    small = final_event(KustomizationPlan(ks, plan=Plan(huge.changes[:1])), {"revision": "x"}, whole)
    assert whole not in small.metadata["planSection"]


def test_a_run_whose_worker_died_silently_is_not_shown_as_running_forever() -> None:
    now = 1_800_000_000.0
    stuck = {"id": "r", "at": now - model.STALE_RUN - 1, "state": "running", "source": "GitRepository/ns/app",
             "kustomizations": ["Kustomization/ns/app"]}
    fresh = {**stuck, "at": now - 5}
    assert model._running([stuck], now) == {}
    assert set(model._running([fresh], now)) == {"GitRepository/ns/app", "Kustomization/ns/app"}
