"""`herald validate` names every image marker that cannot apply (issue 15), where Flux skips
them silently: read from the branch each ImageUpdateAutomation edits, reported as warnings at
the file and line, so a typo in a marker shows before the release it was meant for."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from herald.cli import main
from tests.fixtures_herald import Repo, image_automation

FILES = {
    # fine: the automation's own policy
    "deploy/web.yaml": "image: ghcr.io/acme/web:1.4.2 # {\"$imagepolicy\": \"flux-system:web\"}\n",
    # a typo in the policy's name; text after the JSON
    "deploy/api.yaml": textwrap.dedent("""\
        containers:
          - image: ghcr.io/acme/api:2.0.0 # {"$imagepolicy": "flux-system:apii"}
          - image: ghcr.io/acme/job:1.0.0 # {"$imagepolicy": "flux-system:web"} keep in step
        """),
    # another team's policy, and one the automation's policySelector leaves out
    "deploy/team.yaml": textwrap.dedent("""\
        a: ghcr.io/acme/web:1.4.2 # {"$imagepolicy": "team-b:web"}
        b: ghcr.io/acme/web:1.4.2 # {"$imagepolicy": "flux-system:canary"}
        """),
    # a file that does not parse
    "deploy/broken.yaml": "image: [ghcr.io/acme/web:1.4.2 # {\"$imagepolicy\": \"flux-system:web\"}\n",
    # outside update.path: not the automation's business
    "docs/example.yaml": "image: x:1 # {\"$imagepolicy\": \"nowhere:nothing\"}\n",
}

MORE_POLICIES = """\
---
apiVersion: image.toolkit.fluxcd.io/v1
kind: ImageRepository
metadata: {name: web, namespace: team-b}
spec: {image: ghcr.io/acme/web, interval: 5m}
---
apiVersion: image.toolkit.fluxcd.io/v1
kind: ImagePolicy
metadata: {name: web, namespace: team-b}
spec: {imageRepositoryRef: {name: web}, policy: {semver: {range: ">=1.0.0"}}}
---
apiVersion: image.toolkit.fluxcd.io/v1
kind: ImagePolicy
metadata: {name: canary, namespace: flux-system, labels: {track: canary}}
spec: {imageRepositoryRef: {name: web}, policy: {semver: {range: ">=1.0.0-0"}}}
"""

SELECT_STABLE = """\
    git:
      commit:
        author: {name: Herald Bot, email: herald@example.com}
    policySelector: {matchExpressions: [{key: track, operator: NotIn, values: [canary]}]}
    """


def configuration(tmp_path: Path, repo_url: str) -> Path:
    path = tmp_path / "herald.yaml"
    path.write_text(image_automation(repo_url, "ghcr.io/acme/web", git=SELECT_STABLE) + MORE_POLICIES)
    return path


def test_markers_that_cannot_apply_are_warned_about_at_their_file_and_line(
        tmp_path: Path, repo: Repo, capsys: pytest.CaptureFixture[str]) -> None:
    repo.commit(FILES, "the shop, with marker mistakes")
    assert main(["validate", "-c", str(configuration(tmp_path, repo.url))]) == 0
    out = capsys.readouterr().out.splitlines()
    where = "GitRepository/flux-system/app@main"
    who = "warning: ImageUpdateAutomation flux-system/app"
    warned = [line for line in out if line.startswith(where)]
    assert warned[0].startswith(f"{where}:deploy/api.yaml:2: {who}: marker names ImagePolicy flux-system/apii, "
                                "which does not exist")
    assert warned[1] == f"{where}:deploy/api.yaml:3: {who}: trailing text after the marker's JSON: Flux ignores such a marker"
    assert warned[2].startswith(f"{where}:deploy/broken.yaml:2: {who}: the file does not parse as YAML: ")
    assert warned[3] == (f"{where}:deploy/team.yaml:1: {who}: marker names ImagePolicy team-b/web, in another "
                         "namespace than the automation (flux-system): never set")
    assert warned[4] == (f"{where}:deploy/team.yaml:2: {who}: marker names ImagePolicy flux-system/canary, which "
                         "the automation's spec.policySelector does not select: never set")
    assert len(warned) == 5, out  # web.yaml is fine, docs/ is outside update.path
    assert out[-1] == "ok: 8 object(s), 5 warning(s)"


def test_offline_validation_reads_no_repository(tmp_path: Path, repo: Repo,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    repo.commit(FILES, "the shop, with marker mistakes")
    assert main(["validate", "--offline", "-c", str(configuration(tmp_path, repo.url))]) == 0
    assert capsys.readouterr().out.splitlines() == ["ok: 8 object(s), 0 warning(s)"]


def test_a_repository_that_cannot_be_read_is_a_warning_not_a_failure(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "no-such-repo.git"
    assert main(["validate", "-c", str(configuration(tmp_path, missing.as_uri()))]) == 0
    [line, summary] = capsys.readouterr().out.splitlines()
    assert line.startswith("GitRepository/flux-system/app: warning: ImageUpdateAutomation flux-system/app: "
                           "its markers cannot be checked: ")
    assert summary == "ok: 8 object(s), 1 warning(s)"
