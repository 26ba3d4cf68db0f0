"""The status page, `/ui/`, in a real browser against a real `herald serve`.

One Herald for the module, as a user runs it: a Git repository, the test Kubernetes API server,
a local Slack, and an operator Secret (`--operator-secret default/herald-operator`). One
headless Chromium (tests/browser.py) follows a signed GitHub push from its delivery to its
Slack message, logs in, reconciles, suspends and resumes from the page, and checks that no page
carries a secret, that a phone can use it and that a dark theme applies.

The first tests use Flask's test client for what a browser need not show: the headers, the
login cookie, the read token's redirect, escaping, and the last guard against a leaked value.

`HERALD_SCREENSHOTS=1` also writes the README's screenshots (docs/screenshots/*.png).
"""

from __future__ import annotations

import base64
import os
import re
import textwrap
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from herald import config
from herald.bus import open_bus
from herald.history import open_history
from herald.logs import DELIVERY_HEADER
from herald.messages import RECONCILE_QUEUE, ReconcileRequest
from herald.settings import Settings
from receiver.app import create_app
from tests.browser import chromium, desktop, wait_for
from tests.fixtures_herald import (
    TOKEN,
    Repo,
    free_port,
    github_headers,
    github_push,
    make_repo,
    start_herald,
    stop_herald,
    wait_ready,
    wait_until,
    write_config,
)
from tests.kubeapi import KubeAPIServer
from tests.slackapi import SlackAPIServer

ROOT = Path(__file__).resolve().parents[1]
SLACK_TOKEN = "xoxb-20261206-48151623-statuspageTOKENxyz"
OPERATOR_TOKEN = "op-7f3c9a1e5b2d4c6e8a0f-token"
READ_TOKEN = "read-2b4d6f8a0c1e3a5c7e9b-token"
KS = "Kustomization/flux-system/app"


# A second Kustomization of the same source whose folder the repository does not have: it
# fails on every run, so the pages show a failure beside a success.
BROKEN = textwrap.dedent("""\
    ---
    apiVersion: kustomize.toolkit.fluxcd.io/v1
    kind: Kustomization
    metadata: {name: payments, namespace: flux-system}
    spec:
      interval: 10m
      path: ./payments
      prune: true
      sourceRef: {kind: GitRepository, name: app}
    """)


# And one that waits for its Deployment to roll out (`wait: true`): its runs last as long as the
# test API server's rollout of a new generation (tests.kubeapi.set_rollout).
SLOW = textwrap.dedent("""\
    ---
    apiVersion: kustomize.toolkit.fluxcd.io/v1
    kind: Kustomization
    metadata: {name: worker, namespace: flux-system}
    spec:
      interval: 10m
      path: ./slow
      prune: true
      wait: true
      timeout: 1m
      sourceRef: {kind: GitRepository, name: app}
    """)


def worker_manifests(replicas: int) -> dict[str, str]:
    return {"slow/worker.yaml": f"""\
        apiVersion: v1
        kind: Namespace
        metadata: {{name: queue}}
        ---
        apiVersion: apps/v1
        kind: Deployment
        metadata: {{name: worker, namespace: queue}}
        spec:
          replicas: {replicas}
          selector: {{matchLabels: {{app: worker}}}}
          template:
            metadata: {{labels: {{app: worker}}}}
            spec:
              containers: [{{name: worker, image: "busybox:1.36"}}]
        """}


def operator_secret(read_token: str = "") -> str:
    read = f", readToken: {read_token}" if read_token else ""
    return textwrap.dedent(f"""\
        ---
        apiVersion: v1
        kind: Secret
        metadata: {{name: herald-operator, namespace: default}}
        stringData: {{token: {OPERATOR_TOKEN}{read}}}
        """)


# ---- without a browser: the test client ------------------------------------------------------


@pytest.fixture
def app_of(tmp_path: Path):
    """create_app for write_config's scenario with the operator Secret; its client and history."""
    buses = []

    def make(read_token: str = "") -> tuple[Any, Any]:
        cfg = config.load([write_config(tmp_path / f"{uuid.uuid4().hex[:6]}.yaml", "file:///nowhere.git",
                                        slack_address="https://hooks.example/services/T0/B0/XyZsecret",
                                        slack_token=SLACK_TOKEN, extra=operator_secret(read_token))])
        bus = open_bus(None, tmp_path / "state")
        buses.append(bus)
        history = open_history(None, tmp_path / "state")
        app = create_app(cfg, bus, Settings(state_dir=tmp_path / "state", operator_secret="default/herald-operator"),
                         history=history)
        return app.test_client(), history

    yield make
    for bus in buses:
        bus.close()


PAGES = ("/ui/", "/ui/kustomizations/flux-system/app", "/ui/objects/GitRepository/flux-system/app",
         "/ui/objects/Provider/flux-system/slack", "/ui/objects/Receiver/flux-system/github-app",
         "/ui/deliveries", "/ui/plans", "/ui/images", "/ui/dead-letters", "/ui/login")


def test_every_page_is_served_with_the_security_headers(app_of) -> None:
    client, _ = app_of()
    missing = ("/ui/no-such-page", "/ui/kustomizations/flux-system/nope", "/ui/plans/nope")
    for path in (*PAGES, "/ui/static/herald.css", "/ui/static/herald.js", *missing):
        resp = client.get(path)
        assert resp.status_code == (404 if path in missing else 200), path
        assert resp.headers["Content-Security-Policy"] == (
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'"), path
        assert resp.headers["X-Frame-Options"] == "DENY"
        assert resp.headers["Referrer-Policy"] == "same-origin"
        assert resp.headers["Cache-Control"] == "no-store"
        if path.endswith((".css", ".js")):
            continue
        html = resp.get_data(as_text=True)
        # Nothing inline for the policy to refuse: no <script> body, no style attribute or element.
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html) and "style=" not in html and "<style" not in html
        assert re.search(r" on[a-z]+=", html) is None, path
        assert '<meta name="viewport"' in html


def test_a_fragment_is_the_main_element_alone_with_its_state(app_of) -> None:
    client, _ = app_of()
    whole = client.get("/ui/")
    part = client.get("/ui/?fragment=1")
    assert part.status_code == 200 and "<html" not in part.get_data(as_text=True)
    assert "<h1>Overview</h1>" in part.get_data(as_text=True)
    assert part.headers["X-Herald-State"] == whole.headers["X-Herald-State"]
    assert f'data-state="{part.headers["X-Herald-State"]}"' in whole.get_data(as_text=True)
    assert part.headers["X-Herald-Live"] == "0"


def test_login_sets_a_strict_http_only_cookie_and_only_for_a_real_token(app_of) -> None:
    client, _ = app_of()
    wrong = client.post("/ui/login", data={"token": "guess", "next": "/ui/deliveries"})
    assert wrong.status_code == 401 and "neither the operator token" in wrong.get_data(as_text=True)
    assert "Set-Cookie" not in wrong.headers

    resp = client.post("/ui/login", data={"token": OPERATOR_TOKEN, "next": "/ui/deliveries"})
    assert resp.status_code == 303 and resp.headers["Location"] == "/ui/deliveries"
    cookie = resp.headers["Set-Cookie"]
    assert cookie.startswith(f"herald_token={OPERATOR_TOKEN};")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # plain http here; Secure when the request came over https
    secure = client.post("/ui/login", data={"token": OPERATOR_TOKEN}, base_url="https://herald.example")
    assert "Secure" in secure.headers["Set-Cookie"]

    # The cookie acts only with the intent header, as the page's buttons send it.
    asked = {"kind": "Kustomization", "namespace": "flux-system", "name": "app"}
    assert client.post("/api/v1/suspend", json=asked).status_code == 403
    assert client.post("/api/v1/suspend", json=asked, headers={"X-Herald-Intent": "1"}).status_code == 200
    assert "Suspended" in client.get("/ui/").get_data(as_text=True)

    out = client.get("/ui/logout")
    assert out.status_code == 303 and "herald_token=;" in out.headers["Set-Cookie"]
    assert client.post("/api/v1/resume", json=asked, headers={"X-Herald-Intent": "1"}).status_code == 401


def test_login_from_another_site_and_redirects_elsewhere_are_refused(app_of) -> None:
    client, _ = app_of()
    cross = client.post("/ui/login", data={"token": OPERATOR_TOKEN}, headers={"Sec-Fetch-Site": "cross-site"})
    assert cross.status_code == 403 and "Set-Cookie" not in cross.headers
    for target in ("https://evil.example/", "//evil.example/ui/", "/api/v1/version", "/ui\\@evil.example",
                   "javascript:alert(1)"):
        resp = client.post("/ui/login", data={"token": OPERATOR_TOKEN, "next": target})
        assert resp.headers["Location"] == "/ui/", target


def test_with_a_read_token_every_page_sends_to_the_login(app_of) -> None:
    client, _ = app_of(read_token=READ_TOKEN)
    for path in PAGES[:-1]:
        resp = client.get(path + "?fragment=1")
        assert resp.status_code == 302, path
        assert resp.headers["Location"].startswith("/ui/login?next="), path
        assert "fragment" not in resp.headers["Location"]
    assert client.get("/ui/login").status_code == 200
    assert client.get("/ui/static/herald.css").status_code == 200
    assert client.post("/ui/login", data={"token": READ_TOKEN}).status_code == 303
    page = client.get("/ui/kustomizations/flux-system/app")
    assert page.status_code == 200 and "Reader" in page.get_data(as_text=True)
    # The read token reads; acting still needs the operator token.
    asked = {"kind": "Kustomization", "namespace": "flux-system", "name": "app"}
    assert client.post("/api/v1/reconcile", json=asked, headers={"X-Herald-Intent": "1"}).status_code == 401


def test_what_records_say_is_escaped_and_known_secrets_never_shown(app_of) -> None:
    client, history = app_of()
    now = time.time()
    history.put("event", "e1", {"at": now, "delivery": "d-1", "kind": "Kustomization", "namespace": "flux-system",
                                "name": "app", "severity": "error", "reason": "BuildFailed",
                                "message": "<script>alert(1)</script>\nkustomize build failed"})
    history.put("plan", "r1/Kustomization/flux-system/app", {
        "request": "r1", "delivery": "d-1", "target": KS, "reason": "PlanReady", "summary": "1 to change",
        "pullRequest": {"number": 7, "head": "abc", "ref": "refs/pull/7/head",
                        "url": "https://user:pw@forge.example/o/r/pull/7"},
        "source": "GitRepository/flux-system/app", "diff": "--- a\n+++ b\n-  <img src=x onerror=alert(1)>\n+ ok\n",
        "error": ""})
    # A record that should never have carried the webhook token or the Slack token.
    history.put("run", "run1", {"at": now, "id": "run1", "delivery": "d-1", "target": "GitRepository/flux-system/app",
                                "source": "GitRepository/flux-system/app", "kustomizations": [KS], "state": "failed",
                                "error": f"fetch failed: token {TOKEN} and {SLACK_TOKEN} rejected", "objects": []})
    history.put("image", "i1", {
        "request": "i1", "delivery": "d-2", "reason": "webhook", "target": "ImageRepository/flux-system/web",
        "image": "registry.example/shop/web", "tag": "1.4.3", "error": "", "followUps": ["r9"],
        "steps": [{"kind": kind, "namespace": "flux-system", "name": name, "severity": "info", "reason": reason,
                   "message": said, "revision": ""}
                  for kind, name, reason, said in (
                      ("ImageRepository", "web", "Succeeded", "found 4 tags"),
                      ("ImagePolicy", "web", "Succeeded", "latest image tag resolved to 1.4.3"),
                      ("ImageUpdateAutomation", "app", "Succeeded", "committed <b>1 change</b>"))]})
    images = client.get("/ui/images").get_data(as_text=True)
    assert [step for step in ("scan", "policy", "commit") if f">{step}</span>" in images] == ["scan", "policy",
                                                                                               "commit"]
    assert "registry.example/shop/web:1.4.3" in images and "committed &lt;b&gt;1 change&lt;/b&gt;" in images
    ks = client.get("/ui/kustomizations/flux-system/app").get_data(as_text=True)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in ks and "<script>alert" not in ks
    assert "Last error" in ks and "kustomize build failed" in ks
    plan = client.get("/ui/plans/r1/Kustomization/flux-system/app").get_data(as_text=True)
    assert "&lt;img src=x onerror=alert(1)&gt;" in plan and "<img" not in plan
    assert 'href="https://forge.example/o/r/pull/7"' in plan and "user:pw" not in plan
    trace = client.get("/ui/deliveries/d-1").get_data(as_text=True)
    assert "fetch failed: token *** and *** rejected" in trace
    for page in (ks, plan, trace):
        assert TOKEN not in page and SLACK_TOKEN not in page and OPERATOR_TOKEN not in page
    assert client.get("/ui/deliveries/nothing-known").status_code == 404


# ---- in a browser, against `herald serve` --------------------------------------------------------


@dataclass
class Served:
    base: str
    hook_url: str
    repo: Repo
    kube: KubeAPIServer
    slack: SlackAPIServer
    log: Path
    state: Path

    @property
    def hook_path(self) -> str:
        return self.hook_url[len(self.base):]

    def url(self, path: str) -> str:
        return self.base + path


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """`herald serve` with the scenario's configuration (tests.fixtures_herald.write_config), its
    Slack a local one, its cluster the test API server, and the operator Secret."""
    tmp = tmp_path_factory.mktemp("status-page")
    kube = KubeAPIServer().start()
    try:
        with SlackAPIServer() as slack:
            slack.tokens, slack.channels = {SLACK_TOKEN}, {"general"}
            repo = make_repo(tmp)
            repo.commit(worker_manifests(1), "a worker")
            cfg = write_config(tmp / "herald.yaml", repo.url, slack_address=f"{slack.url}/api/chat.postMessage",
                               slack_token=SLACK_TOKEN, extra=BROKEN + SLOW + operator_secret())
            loaded = config.load([cfg])
            port = free_port()
            base = f"http://127.0.0.1:{port}"
            env = dict(os.environ, KUBECONFIG=str(kube.write_kubeconfig(tmp / "kubeconfig")),
                       HERALD_LOG_LEVEL="INFO", HERALD_STATE_DIR=str(tmp / "state"),
                       HERALD_LISTEN=f"127.0.0.1:{port}", HERALD_STARTUP_RECONCILE="false")
            env.pop("HERALD_BROKER_URL", None)
            log = tmp / "serve.log"
            proc = start_herald("serve", cfg, log, env, "--operator-secret", "default/herald-operator")
            try:
                wait_ready(base)
                hook = base + loaded.hook_path(loaded.receivers[("flux-system", "github-app")])
                yield Served(base, hook, repo, kube, slack, log, tmp / "state")
            finally:
                stop_herald(proc)
    finally:
        kube.stop()
    assert not kube.internal_errors, kube.internal_errors


@pytest.fixture(scope="module")
def pushed(served: Served) -> str:
    """One signed GitHub push, followed until its outcome reached Slack; its delivery id."""
    delivery = str(uuid.uuid4())
    body = github_push(served.repo.head)
    resp = requests.post(served.hook_url, data=body, headers=github_headers(body, delivery=delivery), timeout=10)
    assert resp.status_code == 202, resp.text
    wait_until(lambda: any("ReconciliationSucceeded" in m.body.get("text", "") for m in served.slack.messages
                           if m.path == "/api/chat.postMessage"), 30, "the outcome's Slack message")
    return delivery


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with chromium(tmp_path_factory.mktemp("chromium")) as driver:
        yield driver


@pytest.fixture(autouse=True)
def no_script_errors(request: pytest.FixtureRequest) -> Iterator[None]:
    """A browser test also fails on an error in the page's script or a refusal by its
    Content-Security-Policy (an API's refusal, which the page shows, is no error)."""
    if "browser" not in request.fixturenames:
        yield
        return
    driver = request.getfixturevalue("browser")
    driver.get_log("browser")
    yield
    errors = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"
              and not re.search(r"Failed to load resource: the server responded with a status of 40[139]",
                                e["message"])]
    assert not errors, errors


def log_in(driver: Any, served: Served, token: str, then: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(served.url("/ui/login?next=" + then))
    field = driver.find_element(By.ID, "token")
    field.clear()
    field.send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "form.login button[type=submit]").click()
    wait_for(driver, lambda d: d.current_url == served.url(then), what="the page after the login")


def log_out(driver: Any, served: Served) -> None:
    driver.get(served.url("/ui/logout"))


def text_of(driver: Any, css: str) -> str:
    from selenium.webdriver.common.by import By

    found = driver.find_elements(By.CSS_SELECTOR, css)
    return found[0].text if found else ""


def click(driver: Any, label: str) -> None:
    from selenium.webdriver.common.by import By

    button = wait_for(driver, lambda d: next((b for b in d.find_elements(By.CSS_SELECTOR, "button[data-action]")
                                              if b.text == label and b.is_enabled()), None),
                      what=f"the button {label!r}")
    button.click()


def runs_on_page(driver: Any) -> dict[str, str]:
    """The runs on an object's page: id → this object's outcome ("" while running)."""
    from selenium.webdriver.common.by import By

    return {r.get_attribute("data-run"): r.get_attribute("data-outcome")
            for r in driver.find_elements(By.CSS_SELECTOR, "#runs tr[data-run]")}


def test_the_overview_lists_the_kustomization_with_its_state(served: Served, pushed: str, browser) -> None:
    from selenium.webdriver.common.by import By

    browser.get(served.url("/ui/"))
    row = wait_for(browser, lambda d: d.find_element(By.CSS_SELECTOR, f'tr[data-object="{KS}"]'),
                   what="the Kustomization's row")
    listed = [r.get_attribute("data-object") for r in browser.find_elements(By.CSS_SELECTOR, "#kustomizations tr")
              if r.get_attribute("data-object")]
    assert listed == ["Kustomization/flux-system/payments", KS, "Kustomization/flux-system/worker"], \
        "failing ones first"
    failing = text_of(browser, 'tr[data-object="Kustomization/flux-system/payments"]')
    assert "Failed" in failing and "BuildFailed" in failing and "./payments' not found" in failing
    text = row.text
    assert "app" in text and "flux-system" in text
    assert "Ready" in text and "ReconciliationSucceeded" in text
    assert f"main@sha1:{served.repo.head[:12]}" in text
    assert "GitRepository/flux-system/app" in text and "ago" in text
    assert pushed[:18] in text_of(browser, "#recent-deliveries")


def test_follow_one_push_from_its_delivery_to_its_slack_message(served: Served, pushed: str, browser) -> None:
    from selenium.webdriver.common.by import By

    browser.get(served.url("/ui/deliveries"))
    link = wait_for(browser, lambda d: d.find_element(By.CSS_SELECTOR, f'#deliveries a[data-delivery="{pushed}"]'),
                    what="the push in the deliveries")
    row = link.find_element(By.XPATH, "./ancestor::tr").text
    assert "flux-system/github-app" in row and "push" in row and "202" in row
    link.click()
    wait_for(browser, lambda d: d.current_url == served.url(f"/ui/deliveries/{pushed}"), what="the trace page")

    def followed(d: Any) -> bool:
        requests_ = d.find_elements(By.CSS_SELECTOR, "#stage-requests li[data-request]")
        outcomes = d.find_elements(By.CSS_SELECTOR, '#stage-runs li[data-run] li[data-outcome]')
        slack = d.find_elements(By.CSS_SELECTOR, '#stage-notifications li[data-provider-type="slack"]')
        return (any(r.get_attribute("data-result") == "ran" for r in requests_)
                and any(o.get_attribute("data-outcome") == "ReconciliationSucceeded" for o in outcomes)
                and any(n.get_attribute("data-notification-state") == "delivered"
                        and "ReconciliationSucceeded" in n.text for n in slack))

    wait_for(browser, followed, what="the request, the run and the Slack notification on the trace")
    webhook = text_of(browser, "#stage-webhook")
    assert "github push" in webhook and "202" in webhook and "GitRepository/flux-system/app" in webhook
    run = text_of(browser, "#stage-runs")
    assert "Deployment/shop/web created" in run and KS in run
    # One run for the source's two Kustomizations, each with its own outcome.
    assert "failed" in run and "Kustomization/flux-system/payments" in run
    assert "path './payments' not found in the revision" in run
    notes = text_of(browser, "#stage-notifications")
    assert "flux-system/slack" in notes and "(slack)" in notes and "delivered" in notes
    # A timestamp at every hop.
    hops = browser.find_elements(By.CSS_SELECTOR, "li.hop")
    assert hops and all(re.search(r"\d\d:\d\d:\d\d\.\d\d\d", h.text) for h in hops)
    # What the page says is what reached Slack.
    assert any(f"main@sha1:{served.repo.head}" in m.body.get("text", "") for m in served.slack.messages)


def test_reconcile_now_shows_the_new_run_without_a_reload(served: Served, pushed: str, browser) -> None:
    from selenium.webdriver.common.by import By

    page = "/ui/kustomizations/flux-system/app"
    log_out(browser, served)
    browser.get(served.url(page))
    wait_for(browser, lambda d: runs_on_page(d), what="the push's run")
    click(browser, "Reconcile now")
    refused = wait_for(browser, lambda d: "HTTP 401" in text_of(d, "#flash") and text_of(d, "#flash"),
                       what="the API's refusal")
    assert "needs the operator token" in refused

    log_in(browser, served, OPERATOR_TOKEN, page)
    cookie = browser.get_cookie("herald_token")
    assert cookie and cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/"
    assert browser.execute_script("return document.cookie") == "", "the token is out of reach of scripts"
    before = runs_on_page(browser)
    browser.execute_script("window.__marker = 1")
    click(browser, "Reconcile now")
    wait_for(browser, lambda d: "Reconcile of Kustomization flux-system/app requested" in text_of(d, "#flash"),
             what="the request's confirmation")
    new = wait_for(browser, lambda d: [i for i, outcome in runs_on_page(d).items() if i not in before
                                       and outcome == "ReconciliationSucceeded"], 30, "the new run on the page")
    assert browser.execute_script("return window.__marker") == 1, "the page was reloaded"
    row = browser.find_element(By.CSS_SELECTOR, f'#runs tr[data-run="{new[0]}"]').text
    assert "manual" in row and "ReconciliationSucceeded" in row and "Deployment/shop/web unchanged" in row


def test_suspend_and_resume_from_the_page(served: Served, pushed: str, browser) -> None:
    page = "/ui/kustomizations/flux-system/app"
    log_in(browser, served, OPERATOR_TOKEN, page)
    browser.execute_script("window.__marker = 1")

    def suspended() -> bool:
        found = requests.get(served.url("/api/v1/objects/Kustomization/flux-system/app"), timeout=5).json()
        return found["object"]["suspended"]

    click(browser, "Suspend")
    wait_for(browser, lambda d: "Suspended" in text_of(d, "#object-state"), what="the Suspended state")
    assert "Kustomization flux-system/app suspended." in text_of(browser, "#flash")
    assert suspended()
    click(browser, "Resume")
    wait_for(browser, lambda d: "Suspended" not in text_of(d, "#object-state") and "Ready" in text_of(
        d, "#object-state"), what="the resumed state")
    assert "Kustomization flux-system/app resumed." in text_of(browser, "#flash")
    assert not suspended()
    assert browser.execute_script("return window.__marker") == 1, "the page was reloaded"


def test_a_dead_letter_is_replayed_and_dropped_from_the_page(served: Served, pushed: str, browser) -> None:
    from selenium.webdriver.common.by import By

    # A request for a Kustomization the configuration no longer has: the worker rejects it.
    req = ReconcileRequest(kind="Kustomization", name="gone", namespace="flux-system", reason="manual",
                           origin={"delivery": "dead-end-1"})
    bus = open_bus(None, served.state)
    try:
        bus.publish(RECONCILE_QUEUE, req.to_json(), message_id=req.id, headers={DELIVERY_HEADER: "dead-end-1"})
    finally:
        bus.close()

    def dead() -> list[dict[str, Any]]:
        return requests.get(served.url("/api/v1/dead-letters"), timeout=5).json()["items"]

    wait_until(lambda: any(d["id"] == req.id for d in dead()), 30, "the dead letter")
    log_in(browser, served, OPERATOR_TOKEN, "/ui/dead-letters")
    row = f'tr[data-dead="{RECONCILE_QUEUE}/{req.id}"]'
    assert "Kustomization flux-system/gone is not in the configuration" in text_of(browser, row)
    browser.execute_script("window.__marker = 1")

    browser.find_element(By.CSS_SELECTOR, f"{row} button[data-action=replay]").click()
    wait_for(browser, lambda d: f"Replayed 1 dead letter(s) of {RECONCILE_QUEUE}." in text_of(d, "#flash"),
             what="the replay's confirmation")
    assert browser.execute_script("return window.__marker") == 1, "the page was reloaded"
    # Replayed, it is rejected again: back among the dead letters, its id kept.
    wait_until(lambda: any(d["id"] == req.id for d in dead()), 30, "the replayed message to die again")

    browser.get(served.url("/ui/dead-letters"))
    browser.execute_script("window.__marker = 2")
    browser.find_element(By.CSS_SELECTOR, f"{row} button[data-action=drop]").click()
    alert = wait_for(browser, lambda d: d.switch_to.alert, what="the confirmation dialog")
    assert req.id in alert.text
    alert.accept()
    wait_for(browser, lambda d: not d.find_elements(By.CSS_SELECTOR, row), what="the dropped row to go")
    assert not any(d["id"] == req.id for d in dead())
    assert browser.execute_script("return window.__marker") == 2, "the page was reloaded"


def test_a_run_in_progress_shows_on_the_overview_without_a_reload(served: Served, pushed: str, browser) -> None:
    worker = 'tr[data-object="Kustomization/flux-system/worker"]'
    # The next generation of the worker's Deployment takes 7 s to roll out, and its
    # Kustomization waits for it: longer than an idle page takes to look again (5 s).
    served.kube.set_rollout("complete", after=7, kind="Deployment", name="worker")
    browser.get(served.url("/ui/"))
    wait_for(browser, lambda d: "Ready" in text_of(d, worker), what="the worker's first run")
    browser.execute_script("window.__marker = 1")
    sha = served.repo.commit(worker_manifests(2), "two workers")
    body = github_push(sha)
    assert requests.post(served.hook_url, data=body, headers=github_headers(body), timeout=10).status_code == 202

    progressing = wait_for(browser, lambda d: "Progressing" in text_of(d, worker) and text_of(d, worker),
                           what="the worker's run in progress")
    assert "running since" in progressing
    assert browser.find_element("id", "main").get_attribute("data-live") == "1"
    done = wait_for(browser, lambda d: "Ready" in text_of(d, worker) and sha[:12] in text_of(d, worker)
                    and text_of(d, worker), 30, "the worker's run to end")
    assert "ReconciliationSucceeded" in done and "Progressing" not in done
    assert browser.execute_script("return window.__marker") == 1, "the page was reloaded"


def test_no_page_carries_a_secret(served: Served, pushed: str, browser) -> None:
    from selenium.webdriver.common.by import By

    sources = {}
    for path in ("/ui/", "/ui/kustomizations/flux-system/app", "/ui/objects/GitRepository/flux-system/app",
                 "/ui/objects/Receiver/flux-system/github-app", "/ui/objects/Provider/flux-system/slack",
                 "/ui/objects/Alert/flux-system/deployments", "/ui/deliveries", f"/ui/deliveries/{pushed}",
                 "/ui/plans", "/ui/images", "/ui/dead-letters", "/ui/login"):
        browser.get(served.url(path))
        wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "main h1"), what=path)
        sources[path] = browser.page_source
        sources[path + "?fragment=1"] = requests.get(served.url(path + "?fragment=1"), timeout=5).text
    digest = served.hook_path.rpartition("/")[2]
    for secret in (TOKEN, OPERATOR_TOKEN, SLACK_TOKEN, served.hook_path, digest, served.slack.url):
        leaked = [path for path, html in sources.items() if secret in html]
        assert not leaked, f"{secret[:6]}… is in {leaked}"
    assert "secret value(s) reached" not in served.log.read_text(), "a record carried a secret (hidden by the guard)"


PHONE_OVERFLOW = """
const width = document.documentElement.clientWidth;
const wide = [];
for (const el of document.body.querySelectorAll('*')) {
  if (el.parentElement && el.parentElement.closest('.table-wrap, pre')) continue;
  const box = el.getBoundingClientRect();
  if (box.width > 0 && (box.right > width + 1 || box.left < -1)) wide.push(el.tagName + '.' + el.className + ' ' + Math.round(box.right));
}
return [document.documentElement.scrollWidth <= width, wide.slice(0, 10)];
"""


def test_a_phone_can_use_it_and_a_dark_theme_applies(served: Served, pushed: str, browser) -> None:
    from selenium.webdriver.common.by import By

    pages = ("/ui/", "/ui/kustomizations/flux-system/app", f"/ui/deliveries/{pushed}", "/ui/deliveries",
             "/ui/dead-letters", "/ui/login")
    try:
        browser.set_window_size(390, 844)
        for path in pages:
            browser.get(served.url(path))
            assert browser.execute_script("return window.innerWidth") <= 400
            fits, wide = browser.execute_script(PHONE_OVERFLOW)
            assert fits and not wide, (path, wide)
        browser.get(served.url("/ui/"))
        wrap = browser.find_element(By.CSS_SELECTOR, "#kustomizations").find_element(By.XPATH, "..")
        assert wrap.value_of_css_property("overflow-x") == "auto"

        browser.execute_cdp_cmd("Emulation.setEmulatedMedia",
                                {"features": [{"name": "prefers-color-scheme", "value": "dark"}]})
        browser.get(served.url("/ui/"))
        assert browser.execute_script("return matchMedia('(prefers-color-scheme: dark)').matches")
        background = browser.execute_script("return getComputedStyle(document.body).backgroundColor")
        r, g, b = (int(x) for x in re.findall(r"\d+", background)[:3])
        assert 0.2126 * r + 0.7152 * g + 0.0722 * b < 60, background
        color = browser.execute_script("return getComputedStyle(document.body).color")
        assert sum(int(x) for x in re.findall(r"\d+", color)[:3]) > 500, color
        badge = browser.find_element(By.CSS_SELECTOR, f'tr[data-object="{KS}"] .badge')
        assert badge.text.endswith("Ready"), "the state is said in a word, not only a colour"
    finally:
        browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})
        desktop(browser)


@pytest.mark.skipif(os.environ.get("HERALD_SCREENSHOTS") != "1", reason="HERALD_SCREENSHOTS=1 writes the "
                                                                         "README's screenshots")
def test_screenshots_for_the_readme(served: Served, pushed: str, browser) -> None:
    from selenium.webdriver.common.by import By

    out = ROOT / "docs" / "screenshots"
    out.mkdir(parents=True, exist_ok=True)
    try:
        for name, path in (("overview", "/ui/"), ("kustomization", "/ui/kustomizations/flux-system/app"),
                           ("trace", f"/ui/deliveries/{pushed}")):
            desktop(browser)
            browser.get(served.url(path))
            wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "main h1"), what=path)
            width, height = browser.execute_script("const e = document.documentElement; "
                                                   "return [e.clientWidth, e.scrollHeight]")
            shot = browser.execute_cdp_cmd("Page.captureScreenshot", {
                "format": "png", "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": width, "height": min(height, 1600), "scale": 1}})
            (out / f"{name}.png").write_bytes(base64.b64decode(shot["data"]))
    finally:
        desktop(browser)
