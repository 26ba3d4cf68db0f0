"""Alerts route events as Flux's notification-controller does."""

from __future__ import annotations

import pytest

from herald.messages import Event
from herald.model import Alert, EventSource, Meta
from notifier.routing import alert_matches, route, with_alert_metadata


def event(kind: str = "Kustomization", name: str = "app", namespace: str = "flux-system",
          severity: str = "info", message: str = "Deployment/shop/web configured") -> Event:
    return Event.for_object(kind, name, namespace, severity=severity, reason="ReconciliationSucceeded",
                            message=message, metadata={"revision": "main@sha1:" + "a" * 40})


def alert(*sources: EventSource, severity: str = "info", namespace: str = "flux-system", **kw) -> Alert:
    return Alert(meta=Meta(name="a", namespace=namespace), provider_ref="slack",
                 event_sources=sources or (EventSource("Kustomization", "*"),), event_severity=severity, **kw)


def test_an_info_alert_takes_info_and_error_events() -> None:
    a = alert(severity="info")
    assert alert_matches(a, event(severity="info")) and alert_matches(a, event(severity="error"))


def test_an_error_alert_takes_only_errors() -> None:
    a = alert(severity="error")
    assert not alert_matches(a, event(severity="info"))
    assert alert_matches(a, event(severity="error"))


@pytest.mark.parametrize("source,matches", [
    (EventSource("Kustomization", "app"), True),
    (EventSource("Kustomization", "*"), True),
    (EventSource("Kustomization", "other"), False),
    (EventSource("GitRepository", "app"), False),  # kind is compared exactly
    (EventSource("kustomization", "app"), False),
    (EventSource("Kustomization", "app", namespace="flux-system"), True),
    (EventSource("Kustomization", "*", namespace="apps"), False),
])
def test_event_sources_by_kind_and_name(source: EventSource, matches: bool) -> None:
    assert alert_matches(alert(source), event()) is matches


def test_source_namespace_defaults_to_the_alerts() -> None:
    assert not alert_matches(alert(EventSource("Kustomization", "*"), namespace="apps"), event())


def test_match_labels_select_objects_by_their_configured_labels() -> None:
    labels = {("Kustomization", "flux-system", "app"): {"team": "shop"}}
    lookup = lambda kind, ns, name: labels.get((kind, ns, name), {})  # noqa: E731
    assert alert_matches(alert(EventSource("Kustomization", "*", match_labels={"team": "shop"})), event(), lookup)
    assert not alert_matches(alert(EventSource("Kustomization", "*", match_labels={"team": "ops"})), event(), lookup)


def test_inclusion_and_exclusion_lists_exclusion_wins() -> None:
    assert alert_matches(alert(inclusion_list=(r"configured",)), event())
    assert not alert_matches(alert(inclusion_list=(r"^created",)), event())
    assert not alert_matches(alert(inclusion_list=(r"configured",), exclusion_list=(r"shop/web",)), event())


def test_suspended_alerts_take_nothing_and_route_keeps_order() -> None:
    a, b = alert(), alert(suspend=True)
    first = alert(EventSource("Kustomization", "app"))
    assert route([first, b, a], event()) == [first, a]


def test_alert_metadata_and_summary_are_added_without_overriding_the_event() -> None:
    a = alert(event_metadata={"env": "prod", "revision": "spoofed"}, summary="Production")
    merged = with_alert_metadata(a, event())
    assert merged.metadata == {"env": "prod", "revision": "main@sha1:" + "a" * 40, "summary": "Production"}


# -- the cases Flux's Alert documentation walks through, as one table ----------------------

FLUX_DOC_CASES = [
    # (what the docs say, the Alert, the event, routed?)
    ("an info Alert on every Kustomization takes a success",
     alert(EventSource("Kustomization", "*")), event(), True),
    ("an error Alert drops a success",
     alert(EventSource("Kustomization", "*"), severity="error"), event(), False),
    ("an error Alert takes a failure",
     alert(EventSource("Kustomization", "*"), severity="error"), event(severity="error"), True),
    ("sources list several kinds; the event's kind must be one of them",
     alert(EventSource("GitRepository", "*"), EventSource("Kustomization", "app")), event(), True),
    ("a source in another namespace names it",
     alert(EventSource("Kustomization", "app", namespace="apps")), event(namespace="apps"), True),
    ("inclusionList: only messages that match one pattern",
     alert(inclusion_list=(".*succeeded.*",)), event(message="Health check succeeded"), True),
    ("inclusionList: others are dropped",
     alert(inclusion_list=(".*succeeded.*",)), event(message="Deployment/shop/web configured"), False),
    ("exclusionList drops what matches",
     alert(exclusion_list=("^Dependencies.*",)), event(message="Dependencies do not meet ready condition"), False),
    ("exclusionList wins over inclusionList",
     alert(inclusion_list=(".*",), exclusion_list=(".*transient.*",)), event(message="a transient error"), False),
    ("patterns are searched, not anchored",
     alert(inclusion_list=("configured",)), event(message="Deployment/shop/web configured"), True),
    ("a suspended Alert takes nothing",
     alert(suspend=True), event(), False),
]


@pytest.mark.parametrize("case,a,e,routed", FLUX_DOC_CASES, ids=[c[0] for c in FLUX_DOC_CASES])
def test_the_flux_documentation_cases(case: str, a: Alert, e: Event, routed: bool) -> None:
    assert alert_matches(a, e) is routed, case


def test_namespace_star_watches_every_namespace_beyond_flux() -> None:
    everywhere = alert(EventSource("Kustomization", "*", namespace="*"))
    assert all(alert_matches(everywhere, event(namespace=ns)) for ns in ("flux-system", "apps", "team-a"))
    assert not alert_matches(everywhere, event(kind="GitRepository"))


@pytest.mark.parametrize("kind,reason,metadata,wanted", [
    ("commit-status", "ReconciliationSucceeded", {"commit_status": "update"}, True),
    ("commit-status", "Progressing", {}, True),
    ("commit-status", "DependencyNotReady", {}, False),  # a wait must not paint a PR red
    ("commit-status", "ReconciliationSucceeded", {"kustomize.toolkit.fluxcd.io/commit_status": "update"}, True),
    ("threaded", "Progressing", {}, True),
    ("message", "Progressing", {}, False),  # email, Teams, Discord cannot update "starting"
    ("message", "ReconciliationFailed", {}, True),
])
def test_which_events_each_kind_of_provider_takes(kind: str, reason: str, metadata: dict, wanted: bool) -> None:
    from notifier.routing import wants

    e = Event.for_object("Kustomization", "app", "flux-system", severity="info", reason=reason,
                         message="m", metadata={"revision": "main@sha1:" + "a" * 40, **metadata})
    assert wants(kind, e) is wanted
