"""Configuration: Flux manifests load, mistakes are reported with file and line."""

from __future__ import annotations

import hashlib
import textwrap
from pathlib import Path

import pytest

from herald import config
from herald.cli import main

ROOT = Path(__file__).resolve().parents[1]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def test_the_example_configuration_validates(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "-c", str(ROOT / "examples" / "herald.yaml")]) == 0
    assert capsys.readouterr().out.strip() == "ok: 5 object(s), 0 warning(s)"


def test_hooks_prints_fluxs_receiver_path(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    cfg = write(tmp_path / "r.yaml", """\
        apiVersion: v1
        kind: Secret
        metadata: {name: webhook-token, namespace: apps}
        data: {token: c2VjcmV0Cg==}   # "secret\\n": the newline is trimmed, as in Flux
        ---
        apiVersion: notification.toolkit.fluxcd.io/v1
        kind: Receiver
        metadata: {name: github-receiver, namespace: apps}
        spec:
          type: github
          secretRef: {name: webhook-token}
          resources: [{kind: GitRepository, name: app}]
        ---
        apiVersion: source.toolkit.fluxcd.io/v1
        kind: GitRepository
        metadata: {name: app, namespace: apps}
        spec: {url: "https://example.com/app.git", interval: 5m}
        """)
    assert main(["hooks", "-c", str(cfg)]) == 0
    digest = hashlib.sha256(b"secret" + b"github-receiver" + b"apps").hexdigest()
    assert capsys.readouterr().out == f"apps/github-receiver\tgithub\t/hook/{digest}\n"


def test_every_mistake_is_reported_with_file_and_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = write(tmp_path / "conf" / "bad.yaml", """\
        apiVersion: notification.toolkit.fluxcd.io/v1
        kind: Receiver
        metadata:
          name: gh
        spec:
          type: github
          evnts: [push]
          secretRef: {name: token}
          resources: [{kind: GitRepository, name: app}]
        ---
        apiVersion: kustomize.toolkit.fluxcd.io/v1
        kind: Kustomization
        metadata: {name: app}
        spec:
          interval: 5 minutes
          prune: yes please
          sourceRef: {kind: GitRepository, name: missing}
        ---
        apiVersion: notification.toolkit.fluxcd.io/v1beta3
        kind: Alert
        metadata: {name: a}
        spec:
          providerRef: {name: nobody}
          eventSources: [{kind: Kustomization, name: '*'}]
          inclusionList: ["(unclosed"]
        ---
        apiVersion: v1
        kind: Secret
        metadata: {name: s}
        data: {token: "!!not base64 VERY-SECRET-VALUE"}
        ---
        apiVersion: example.com/v1
        kind: Widget
        metadata: {name: w}
        """)
    write(tmp_path / "conf" / "broken.yml", "kind: Secret\nmetadata: [unclosed\n")
    assert main(["validate", "-c", str(tmp_path / "conf")]) == 1
    out = capsys.readouterr().out
    expected = [
        f"{bad}:7: Receiver default/gh: spec.evnts: unknown field",
        f"{bad}:15: Kustomization default/app: spec.interval: '5 minutes' is not a duration",
        f"{bad}:16: Kustomization default/app: spec.prune: must be true or false",
        f"{bad}:25: Alert default/a: spec.inclusionList[0]: invalid regular expression '(unclosed'",
        f"{bad}:30: Secret default/s: data.token: not valid base64",
        f"{bad}:33: kind 'Widget' is not a Herald configuration kind",
        f"{tmp_path / 'conf' / 'broken.yml'}:3: invalid YAML",
    ]
    for line in expected:
        assert line in out, f"missing {line!r} in:\n{out}"
    assert "VERY-SECRET-VALUE" not in out
    assert out.strip().endswith("7 error(s), 0 warning(s)")


def test_references_are_checked_across_documents(tmp_path: Path) -> None:
    cfg = write(tmp_path / "refs.yaml", """\
        apiVersion: notification.toolkit.fluxcd.io/v1
        kind: Receiver
        metadata: {name: gh}
        spec:
          type: gcr
          secretRef: {name: missing-secret}
          resources: [{kind: GitRepository, name: nope}]
        ---
        apiVersion: kustomize.toolkit.fluxcd.io/v1
        kind: Kustomization
        metadata: {name: app}
        spec: {interval: 5m, prune: true, sourceRef: {kind: GitRepository, name: missing}}
        """)
    _, diagnostics = config.check([cfg])
    messages = [str(d) for d in diagnostics]
    assert any(m.startswith(f"{cfg}:1: Receiver default/gh: spec.type: 'gcr' is not supported "
                            "(a Flux type Herald does not support yet); supported: github, gitlab, ")
               for m in messages), messages
    # A reference is reported at its own line, not at the top of its document.
    assert f"{cfg}:6: Receiver default/gh: spec.secretRef: Secret default/missing-secret not found" in messages
    assert f"{cfg}:7: Receiver default/gh: spec.resources: GitRepository default/nope not found" in messages
    assert f"{cfg}:12: Kustomization default/app: spec.sourceRef: GitRepository default/missing not found" in messages


def test_a_reference_in_block_style_points_at_the_name_or_item(tmp_path: Path) -> None:
    cfg = write(tmp_path / "fleet.yaml", """\
        apiVersion: kustomize.toolkit.fluxcd.io/v1
        kind: Kustomization
        metadata:
          name: apps
        spec:
          interval: 5m
          prune: true
          sourceRef:
            kind: GitRepository
            name: fleet
          dependsOn:
            - name: infra
            - name: crds
        """)
    messages = [str(d) for d in config.check([cfg])[1]]
    assert f"{cfg}:10: Kustomization default/apps: spec.sourceRef: GitRepository default/fleet not found" in messages
    assert f"{cfg}:12: Kustomization default/apps: spec.dependsOn: Kustomization default/infra not found" in messages
    assert f"{cfg}:13: Kustomization default/apps: spec.dependsOn: Kustomization default/crds not found" in messages


def test_an_invalid_object_is_reported_once_not_again_as_missing(tmp_path: Path) -> None:
    """A typo in a GitRepository's interval is one error; the Kustomizations that use it are
    not "GitRepository not found" on top of it (it is there, just wrong)."""
    cfg = write(tmp_path / "fleet.yaml", """\
        apiVersion: source.toolkit.fluxcd.io/v1
        kind: GitRepository
        metadata: {name: fleet}
        spec: {url: "https://example.com/fleet.git", interval: 10 minutes, ref: {branch: main}}
        ---
        apiVersion: kustomize.toolkit.fluxcd.io/v1
        kind: Kustomization
        metadata: {name: apps}
        spec: {interval: 5m, prune: true, sourceRef: {kind: GitRepository, name: fleet}}
        """)
    messages = [str(d) for d in config.check([cfg])[1]]
    assert messages == [f"{cfg}:4: GitRepository default/fleet: spec.interval: '10 minutes' is not a duration "
                        "(examples: 30s, 5m, 1h0m0s)"]


def test_an_empty_configuration_is_a_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = write(tmp_path / "empty.yaml", "# nothing yet\n")
    assert main(["validate", "-c", str(empty)]) == 0
    out = capsys.readouterr().out
    assert f"{empty}: warning: no objects in this file" in out
    assert "warning: the configuration defines no objects: Herald has nothing to do" in out


def test_problems_with_a_whole_file_name_the_file_without_a_line(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "-c", str(tmp_path / "missing.yaml")]) == 1
    assert f"{tmp_path / 'missing.yaml'}: no such file or directory" in capsys.readouterr().out


def test_flux_manifests_load_unchanged_with_warnings_for_fields_herald_ignores(tmp_path: Path) -> None:
    """Manifests as Flux's docs write them, including fields Herald does not act on yet."""
    write(tmp_path / "flux" / "apps.yaml", """\
        ---
        apiVersion: source.toolkit.fluxcd.io/v1
        kind: GitRepository
        metadata:
          name: podinfo
          namespace: flux-system
        spec:
          interval: 1m0s
          url: https://github.com/stefanprodan/podinfo
          ref:
            branch: master
          sparseCheckout: [kustomize]
        ---
        apiVersion: kustomize.toolkit.fluxcd.io/v1
        kind: Kustomization
        metadata:
          name: podinfo
          namespace: flux-system
        spec:
          interval: 10m
          targetNamespace: default
          sourceRef:
            kind: GitRepository
            name: podinfo
          path: "./kustomize"
          prune: true
          timeout: 1m
        ---
        apiVersion: notification.toolkit.fluxcd.io/v1beta3
        kind: Provider
        metadata:
          name: slack-bot
          namespace: flux-system
        spec:
          type: slack
          channel: general
          address: https://slack.com/api/chat.postMessage
          secretRef:
            name: slack-bot-token
        ---
        apiVersion: notification.toolkit.fluxcd.io/v1beta3
        kind: Alert
        metadata:
          name: on-call-webapp
          namespace: flux-system
        spec:
          summary: "Cluster addons impacted in us-east-2"
          providerRef:
            name: slack-bot
          eventSeverity: error
          eventSources:
            - kind: GitRepository
              name: '*'
            - kind: Kustomization
              name: '*'
          exclusionList:
            - ".*upgrade.*has.*started"
        """)
    write(tmp_path / "flux" / "secrets" / "slack.yaml", """\
        apiVersion: v1
        kind: Secret
        metadata: {name: slack-bot-token, namespace: flux-system}
        stringData: {token: xoxb-1234}
        """)
    write(tmp_path / "flux" / ".git" / "ignored.yaml", "not: [valid")  # hidden folders are skipped
    cfg, diagnostics = config.check([tmp_path / "flux"])
    assert [d.severity for d in diagnostics] == ["warning"], [str(d) for d in diagnostics]
    assert "spec.sparseCheckout: Flux field not acted on by Herald yet" in str(diagnostics[0])
    ks = cfg.kustomizations[("flux-system", "podinfo")]
    assert (ks.path, ks.prune, ks.interval, ks.timeout, ks.target_namespace) == ("./kustomize", True, 600.0, 60.0, "default")
    assert cfg.git_repositories[("flux-system", "podinfo")].interval == 60.0
    assert cfg.alerts[("flux-system", "on-call-webapp")].event_severity == "error"


@pytest.mark.parametrize(("kind", "field", "value", "why"), [
    ("Kustomization", "kubeConfig", "{configMapRef: {name: spoke}}", "workload identity"),
    ("Kustomization", "decryption", "{provider: sops, serviceAccountName: kms}", "cloud KMS identity"),
    ("GitRepository", "provider", "github", "GitHub App"),
])
def test_fields_that_change_what_where_or_as_whom_herald_applies_are_refused(
        tmp_path: Path, kind: str, field: str, value: str, why: str) -> None:
    """Until Herald implements them, these are errors: never warned about and then applied."""
    write(tmp_path / "flux.yaml", f"""\
        apiVersion: source.toolkit.fluxcd.io/v1
        kind: GitRepository
        metadata: {{name: app, namespace: flux-system}}
        spec:
          {{interval: 1m, url: https://example.com/app.git{', ' + field + ': ' + value if kind == 'GitRepository' else ''}}}
        ---
        apiVersion: kustomize.toolkit.fluxcd.io/v1
        kind: Kustomization
        metadata: {{name: app, namespace: flux-system}}
        spec:
          {{interval: 10m, prune: true, sourceRef: {{kind: GitRepository, name: app}}{', ' + field + ': ' + value if kind == 'Kustomization' else ''}}}
        """)
    _, diagnostics = config.check([tmp_path / "flux.yaml"])
    [refusal] = [d for d in diagnostics if d.severity == "error"]
    assert f"spec.{field}" in refusal.message and "not supported by Herald: " in refusal.message
    assert why in refusal.message
    assert refusal.line == (5 if kind == "GitRepository" else 11)


def test_secrets_can_come_from_mounted_files(tmp_path: Path) -> None:
    """In production a Secret is mounted as files: <dir>/<namespace>/<name>/<key>."""
    cfg_file = write(tmp_path / "r.yaml", """\
        apiVersion: notification.toolkit.fluxcd.io/v1
        kind: Receiver
        metadata: {name: gh, namespace: ci}
        spec:
          type: github
          secretRef: {name: hook}
          resources: [{kind: GitRepository, name: app}]
        ---
        apiVersion: source.toolkit.fluxcd.io/v1
        kind: GitRepository
        metadata: {name: app, namespace: ci}
        spec: {url: "https://example.com/app.git", interval: 5m}
        """)
    write(tmp_path / "secrets" / "ci" / "hook" / "token", "from-a-file\n")
    cfg = config.load([cfg_file], secrets_dir=tmp_path / "secrets")
    receiver = cfg.receivers[("ci", "gh")]
    assert cfg.receiver_token(receiver) == "from-a-file"
    with pytest.raises(config.ConfigError, match="Secret ci/hook not found"):
        config.load([cfg_file])


@pytest.mark.parametrize("text,seconds", [("30s", 30), ("1m0s", 60), ("1h30m", 5400), ("1.5s", 1.5), ("500ms", 0.5)])
def test_durations_parse_as_go_writes_them(text: str, seconds: float) -> None:
    from herald.schema import parse_duration

    assert parse_duration(text) == seconds


def test_an_invalid_semver_range_is_a_config_error_with_its_line(tmp_path: Path) -> None:
    cfg = write(tmp_path / "semver.yaml", """\
        apiVersion: source.toolkit.fluxcd.io/v1
        kind: GitRepository
        metadata: {name: app}
        spec: {interval: 5m, url: "https://example.com/app.git", ref: {semver: ">=1.0 <<2"}}
        """)
    _, diagnostics = config.check([cfg])
    assert any(d.severity == "error" and d.line == 4 and "spec.ref.semver" in d.message for d in diagnostics), \
        [str(d) for d in diagnostics]


def test_yaml_errors_keep_the_documents_before_them_and_name_what_was_found() -> None:
    """The fast (libyaml) reader must not cost the error messages their detail."""
    from herald.yamlsrc import YAMLSyntaxError, load_documents

    text = "a: 1\n---\nmetadata:\n  labels: {x: y}\n---\nref: *nowhere\n"
    seen = []
    with pytest.raises(YAMLSyntaxError) as err:
        for doc in load_documents(text, "conf.yaml"):
            seen.append((doc.line, dict(doc.data)))
    assert seen == [(1, {"a": 1}), (3, {"metadata": {"labels": {"x": "y"}}})]
    assert str(err.value) == "conf.yaml:6: invalid YAML: found undefined alias 'nowhere'"


def test_every_key_and_item_knows_its_line() -> None:
    from herald.yamlsrc import load_documents

    text = "kind: A\nspec:\n  items:\n  - one\n  - {name: two}\n---\n\n# c\nkind: B\n"
    first, second = load_documents(text, "f.yaml")
    assert (first.line, second.line) == (1, 9)
    spec = first.data["spec"]
    assert first.data.line_of("spec") == 2 and spec.line_of("items") == 3
    assert spec["items"].line_of(0) == 4 and spec["items"].line_of(1) == 5
    assert spec["items"][1].line == 5
