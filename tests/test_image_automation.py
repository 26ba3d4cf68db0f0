"""Image automation's Git half (issue 15): the policies' latest images written into a real
repository as one commit, only the marked bytes changed, pushed as a fast-forward; a remote that
moves meanwhile gets the edit redone on its new head, never a force push.

Each scenario writes Flux's own kinds (GitRepository, ImagePolicy, ImageUpdateAutomation) as a
user would, and runs `reconciler.images.automation.run` against a local bare repository."""

from __future__ import annotations

from pathlib import Path

from herald import config
from reconciler.git import GitCache
from reconciler.images import automation
from reconciler.images.setters import PolicyValue
from tests.fixtures_herald import AUTOMATION_GIT, Repo, git, image_automation

DEPLOYMENT = """\
# The shop's web tier. Keep the replicas in step with the HPA!
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
spec:
  replicas:   3   # odd spacing stays
  template:
    spec:
      containers:
        - name: web
          image: 'ghcr.io/acme/web:1.4.2' # {"$imagepolicy": "flux-system:web"}
        - name: sidecar
          image: ghcr.io/acme/proxy:0.9.0 # {"$imagepolicy": "flux-system:proxy"}
"""

WEB = PolicyValue("ghcr.io/acme/web", "1.5.0")
PROXY = PolicyValue("ghcr.io/acme/proxy", "0.10.1")


AUTHOR_ONLY = AUTOMATION_GIT


def configuration(tmp_path: Path, repo: Repo, git_spec: str = AUTHOR_ONLY) -> config.Config:
    text = image_automation(repo.url, "ghcr.io/acme/web", git=git_spec)
    path = tmp_path / "herald.yaml"
    path.write_text(text)
    return config.load([path])


def setup(tmp_path: Path, repo: Repo, git_spec: str = AUTHOR_ONLY) -> tuple[config.Config, GitCache]:
    repo.commit({"deploy/web.yaml": DEPLOYMENT}, "the web tier")
    return configuration(tmp_path, repo, git_spec), GitCache(tmp_path / "state" / "git-automation")


def run(cfg: config.Config, cache: GitCache, **values: PolicyValue | None) -> automation.Result:
    auto = cfg.image_update_automations[("flux-system", "app")]
    return automation.run(cfg, cache, auto, {f"flux-system:{k}": v for k, v in values.items()}, sleep=lambda _: None)


def test_new_images_become_one_commit_that_changes_only_the_marked_values(tmp_path: Path, repo: Repo) -> None:
    cfg, cache = setup(tmp_path, repo)
    before = git("rev-parse", "main", cwd=repo.bare)
    result = run(cfg, cache, web=WEB, proxy=PROXY)
    assert result.error == "" and result.branch == "main"
    assert git("rev-parse", "main", cwd=repo.bare) == result.commit
    assert git("rev-parse", f"{result.commit}^", cwd=repo.bare) == before  # one commit, a fast-forward
    after = git("show", "main:deploy/web.yaml", cwd=repo.bare) + "\n"
    assert after == DEPLOYMENT.replace("'ghcr.io/acme/web:1.4.2'", "'ghcr.io/acme/web:1.5.0'").replace(
        "proxy:0.9.0", "proxy:0.10.1")
    assert [(f, c.field, c.old, c.new) for f, c in result.changes] == [
        ("deploy/web.yaml", "image", "ghcr.io/acme/web:1.4.2", "ghcr.io/acme/web:1.5.0"),
        ("deploy/web.yaml", "image", "ghcr.io/acme/proxy:0.9.0", "ghcr.io/acme/proxy:0.10.1")]
    assert git("log", "-1", "--format=%an <%ae>|%s", "main", cwd=repo.bare) == \
        "Herald Bot <herald@example.com>|Update from image update automation"


def test_images_that_are_already_current_make_no_commit(tmp_path: Path, repo: Repo) -> None:
    cfg, cache = setup(tmp_path, repo)
    before = git("rev-parse", "main", cwd=repo.bare)
    result = run(cfg, cache, web=PolicyValue("ghcr.io/acme/web", "1.4.2"), proxy=PolicyValue("ghcr.io/acme/proxy", "0.9.0"))
    assert (result.commit, result.changes, result.error) == ("", [], "")
    assert git("rev-parse", "main", cwd=repo.bare) == before


def test_a_commit_that_lands_between_fetch_and_push_is_kept_and_the_edit_redone(tmp_path: Path, repo: Repo) -> None:
    cfg, cache = setup(tmp_path, repo)
    theirs: list[str] = []
    commit_files = cache.commit_files

    def someone_pushes_first(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        if not theirs:  # another person's push reaches the remote while Herald is committing
            theirs.append(repo.commit({"deploy/notes.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: n}\n"}))
        return commit_files(*args, **kwargs)

    cache.commit_files = someone_pushes_first  # type: ignore[method-assign]
    result = run(cfg, cache, web=WEB, proxy=PROXY)
    assert result.error == ""
    assert git("rev-parse", f"{result.commit}^", cwd=repo.bare) == theirs[0]  # on top of theirs, nothing lost
    assert "ghcr.io/acme/web:1.5.0" in git("show", "main:deploy/web.yaml", cwd=repo.bare)


def test_a_push_branch_collects_the_updates_and_main_is_left_to_people(tmp_path: Path, repo: Repo) -> None:
    cfg, cache = setup(tmp_path, repo, """\
          git:
            commit:
              author: {name: Herald Bot, email: herald@example.com}
              messageTemplate: "Bump {{ Changed.Changes | map(attribute='NewValue') | join(', ') }} ({{ AutomationObject }})"
            push: {branch: image-updates}
        """)
    main = git("rev-parse", "main", cwd=repo.bare)
    first = run(cfg, cache, web=WEB, proxy=None)
    assert first.branch == "image-updates" and git("rev-parse", "main", cwd=repo.bare) == main
    assert git("log", "-1", "--format=%s", "image-updates", cwd=repo.bare) == \
        "Bump ghcr.io/acme/web:1.5.0 (flux-system/app)"
    second = run(cfg, cache, web=PolicyValue("ghcr.io/acme/web", "1.6.0"), proxy=None)
    assert git("rev-parse", f"{second.commit}^", cwd=repo.bare) == first.commit  # stacked on the branch
    # the proxy's policy has no image yet: said, not skipped silently
    assert any("proxy" in p.message for _, p in second.problems)


def test_a_template_that_does_not_render_fails_naming_the_field(tmp_path: Path, repo: Repo) -> None:
    """(A Go template, Flux's syntax, is refused when the configuration loads: tests/test_image_config.py.)"""
    cfg, cache = setup(tmp_path, repo, """\
          git:
            commit:
              author: {email: herald@example.com}
              messageTemplate: "{{ Changed.Nothing.Here }}"
        """)
    before = git("rev-parse", "main", cwd=repo.bare)
    result = run(cfg, cache, web=WEB, proxy=PROXY)
    assert result.permanent and result.error.startswith("spec.git.commit.messageTemplate does not render")
    assert git("rev-parse", "main", cwd=repo.bare) == before


def test_a_marker_for_another_namespaces_policy_is_reported_and_the_others_still_apply(
        tmp_path: Path, repo: Repo) -> None:
    repo.commit({"deploy/web.yaml": DEPLOYMENT.replace("flux-system:proxy", "team-b:proxy")}, "the web tier")
    path = tmp_path / "herald.yaml"
    path.write_text(image_automation(repo.url, "ghcr.io/acme/web") + """\
---
apiVersion: image.toolkit.fluxcd.io/v1
kind: ImageRepository
metadata: {name: proxy, namespace: team-b}
spec: {image: ghcr.io/acme/proxy, interval: 5m}
---
apiVersion: image.toolkit.fluxcd.io/v1
kind: ImagePolicy
metadata: {name: proxy, namespace: team-b}
spec: {imageRepositoryRef: {name: proxy}, policy: {semver: {range: ">=0.1.0"}}}
""")
    cfg = config.load([path])
    result = run(cfg, GitCache(tmp_path / "cache"), web=WEB)
    assert [(f, c.new) for f, c in result.changes] == [("deploy/web.yaml", "ghcr.io/acme/web:1.5.0")]
    assert [(f, p.line, p.message) for f, p in result.problems] == [
        ("deploy/web.yaml", 15, "marker names ImagePolicy team-b/proxy, in another namespace than the "
                                "automation (flux-system): never set")]
