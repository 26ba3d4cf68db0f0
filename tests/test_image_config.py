"""Flux's image automation kinds (ImageRepository, ImagePolicy, ImageUpdateAutomation) load
unchanged; what Herald refuses is reported with file, line and the reason.

The manifests marked "Flux docs" are copied from Flux's documentation (Apache License 2.0,
Copyright The Flux authors): fluxcd/image-reflector-controller docs/spec/v1/imagerepositories.md
and imagepolicies.md at commit debe2aa, fluxcd/image-automation-controller
docs/spec/v1/imageupdateautomations.md at commit d36e2ea. Where a doc shows only a fragment of
a spec, the fields it leaves out are filled in and say so.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from herald import cluster_config, config
from herald import model as m
from herald.cli import main


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def messages(path: Path) -> list[str]:
    return [str(d) for d in config.check([path])[1]]


# Flux docs: imageupdateautomations.md, "Example" (all four kinds, as written).
AUTOMATION_EXAMPLE = """\
    ---
    apiVersion: source.toolkit.fluxcd.io/v1
    kind: GitRepository
    metadata:
      name: podinfo
      namespace: default
    spec:
      interval: 5m0s
      url: https://github.com/fluxcd/example
      ref:
        branch: main
    ---
    apiVersion: image.toolkit.fluxcd.io/v1
    kind: ImageRepository
    metadata:
      name: podinfo
      namespace: default
    spec:
      image: ghcr.io/stefanprodan/podinfo
      interval: 5h
    ---
    apiVersion: image.toolkit.fluxcd.io/v1
    kind: ImagePolicy
    metadata:
      name: podinfo-policy
      namespace: default
    spec:
      imageRepositoryRef:
        name: podinfo
      policy:
        semver:
          range: 5.0.x
    ---
    apiVersion: image.toolkit.fluxcd.io/v1
    kind: ImageUpdateAutomation
    metadata:
      name: podinfo-update
      namespace: default
    spec:
      interval: 30m
      sourceRef:
        kind: GitRepository
        name: podinfo
      git:
        commit:
          author:
            email: fluxcdbot@users.noreply.github.com
            name: fluxcdbot
        push:
          branch: main
      update:
        path: ./
    """


def test_fluxs_automation_example_loads_as_herald_objects(tmp_path: Path) -> None:
    cfg = config.load([write(tmp_path / "flux.yaml", AUTOMATION_EXAMPLE)])
    repo = cfg.image_repositories[("default", "podinfo")]
    assert repo == m.ImageRepository(meta=repo.meta, image="ghcr.io/stefanprodan/podinfo", interval=5 * 3600.0,
                                     timeout=5 * 3600.0)  # Flux's timeout defaults to the interval
    assert (repo.provider, repo.exclusion_list, repo.access_from) == ("generic", ("^.*\\.sig$",), None)
    policy = cfg.image_policies[("default", "podinfo-policy")]
    assert policy.image_repository_ref == m.ResourceRef(kind="ImageRepository", name="podinfo")
    assert (policy.policy, policy.filter_tags, policy.digest_reflection_policy, policy.interval) == \
        (m.TagPolicy(kind="semver", range="5.0.x"), None, "Never", None)
    auto = cfg.image_update_automations[("default", "podinfo-update")]
    assert auto.source_ref == m.ResourceRef(kind="GitRepository", name="podinfo")
    assert auto.author == m.CommitAuthor(email="fluxcdbot@users.noreply.github.com", name="fluxcdbot")
    assert (auto.interval, auto.checkout_ref, auto.push_branch, auto.update_path, auto.update_strategy) == \
        (1800.0, None, "main", "./", "Setters")
    assert auto.policy_selector.matches({}) and auto.policy_selector.matches({"any": "label"})


def test_every_flux_api_version_and_heralds_own_load(tmp_path: Path) -> None:
    for version in ("image.toolkit.fluxcd.io/v1beta2", "herald.dev/v1"):
        cfg = config.load([write(tmp_path / f"{version.replace('/', '_')}.yaml",
                                 AUTOMATION_EXAMPLE.replace("image.toolkit.fluxcd.io/v1", version))])
        assert len(cfg.image_repositories) == len(cfg.image_policies) == len(cfg.image_update_automations) == 1
    bad = write(tmp_path / "old.yaml",
                AUTOMATION_EXAMPLE.replace("image.toolkit.fluxcd.io/v1", "image.toolkit.fluxcd.io/v1alpha1"))
    assert any("apiVersion 'image.toolkit.fluxcd.io/v1alpha1' is not accepted for ImageRepository (accepted: "
               "image.toolkit.fluxcd.io/v1, image.toolkit.fluxcd.io/v1beta2, herald.dev/v1)" in line
               for line in messages(bad))


def test_fluxs_image_repository_examples_load(tmp_path: Path) -> None:
    cfg_file = write(tmp_path / "repos.yaml", """\
        # Flux docs: imagerepositories.md, "Example".
        ---
        apiVersion: image.toolkit.fluxcd.io/v1
        kind: ImageRepository
        metadata:
          name: podinfo
          namespace: default
        spec:
          image: stefanprodan/podinfo
          interval: 1h
          provider: generic
        # Flux docs: "Secret reference" (the Secret as written).
        ---
        apiVersion: image.toolkit.fluxcd.io/v1
        kind: ImageRepository
        metadata:
          name: podinfo-private
          namespace: default
        spec:
          image: stefanprodan/podinfo
          interval: 1h
          secretRef:
            name: regcred
        ---
        apiVersion: v1
        kind: Secret
        metadata:
          name: regcred
          namespace: default
        type: kubernetes.io/dockerconfigjson
        data:
          .dockerconfigjson: eyJhdXRocyI6eyJodHRwczovL2luZGV4LmRvY2tlci5pby92MS8iOnsidXNlcm5hbWUiOiJmb28iLCJwYXNzd29yZCI6ImJhciIsImF1dGgiOiJabTl2T21KaGNnPT0ifX19
        # Flux docs: "Certificate secret reference" (mTLS; the Secret shortened).
        ---
        apiVersion: image.toolkit.fluxcd.io/v1
        kind: ImageRepository
        metadata:
          name: example-mtls
          namespace: default
        spec:
          interval: 5m0s
          image: example.com
          certSecretRef:
            name: example-mtls-certs
        ---
        apiVersion: v1
        kind: Secret
        metadata:
          name: example-mtls-certs
          namespace: default
        type: kubernetes.io/tls # or Opaque
        stringData:
          ca.crt: |
            -----BEGIN CERTIFICATE-----
            <certificate authority certificate>
            -----END CERTIFICATE-----
        # Flux docs: "Access from" (the ImageRepository and the ImagePolicy in flux-system).
        ---
        apiVersion: image.toolkit.fluxcd.io/v1
        kind: ImageRepository
        metadata:
          name: app1
          namespace: apps
        spec:
          interval: 1h
          image: docker.io/org/image
          accessFrom:
            namespaceSelectors:
              - matchLabels:
                  kubernetes.io/metadata.name: flux-system
        ---
        apiVersion: image.toolkit.fluxcd.io/v1
        kind: ImagePolicy
        metadata:
          name: app1
          namespace: flux-system
        spec:
          imageRepositoryRef:
            name: app1
            namespace: apps
          policy:
            semver:
              range: 1.0.x
        """)
    cfg, diagnostics = config.check([cfg_file])
    assert diagnostics == []
    mtls = cfg.image_repositories[("default", "example-mtls")]
    assert (mtls.image, mtls.cert_secret_ref, mtls.interval, mtls.timeout) == \
        ("example.com", m.SecretRef("example-mtls-certs"), 300.0, 300.0)
    assert cfg.image_repositories[("default", "podinfo-private")].secret_ref == m.SecretRef("regcred")
    assert cfg.image_repositories[("apps", "app1")].access_from == ({"kubernetes.io/metadata.name": "flux-system"},)
    # --from-cluster reads the Secrets the configuration names: these too.
    assert {("default", "regcred"), ("default", "example-mtls-certs")} <= cluster_config.secret_refs(cfg)


def test_fluxs_image_policy_examples_load(tmp_path: Path) -> None:
    repo = """\
        ---
        apiVersion: image.toolkit.fluxcd.io/v1
        kind: ImageRepository
        metadata: {name: %s}
        spec: {image: ghcr.io/example/%s, interval: 5m}
        """
    repos = textwrap.dedent(repo % ("podinfo", "podinfo")) + textwrap.dedent(repo % ("minio", "minio"))
    cfg_file = write(tmp_path / "policies.yaml", repos + textwrap.dedent("""\
        # Flux docs: imagepolicies.md, "Example" (namespace dropped: all of these are in default).
        ---
        apiVersion: image.toolkit.fluxcd.io/v1
        kind: ImagePolicy
        metadata:
          name: podinfo
        spec:
          imageRepositoryRef:
            name: podinfo
          digestReflectionPolicy: IfNotPresent
          policy:
            semver:
              range: 5.1.x
        # Flux docs: "Alphabetical" and "Numerical".
        ---
        apiVersion: image.toolkit.fluxcd.io/v1
        kind: ImagePolicy
        metadata:
          name: podinfo-alphabetical
        spec:
          imageRepositoryRef:
            name: podinfo
          policy:
            alphabetical:
              order: asc
        ---
        apiVersion: image.toolkit.fluxcd.io/v1
        kind: ImagePolicy
        metadata:
          name: podinfo-numerical
        spec:
          imageRepositoryRef:
            name: podinfo
          policy:
            numerical:
              order: asc
        # Flux docs: "Filter Tags", twice.
        ---
        apiVersion: image.toolkit.fluxcd.io/v1
        kind: ImagePolicy
        metadata:
          name: podinfo-rc
        spec:
          imageRepositoryRef:
            name: podinfo
          filterTags:
            pattern: '.*-rc.*'
          policy:
            semver:
              range: '^1.x-0'
        ---
        apiVersion: image.toolkit.fluxcd.io/v1
        kind: ImagePolicy
        metadata:
          name: minio
        spec:
          imageRepositoryRef:
            name: minio
          filterTags:
            pattern: '^RELEASE\\.(?P<timestamp>.*)Z$'
            extract: '$timestamp'
          policy:
            alphabetical:
              order: asc
        # Herald's own: Go 1.22's (?<name>...), a numerical policy on the captured timestamp, and a
        # digest refreshed every hour.
        ---
        apiVersion: image.toolkit.fluxcd.io/v1
        kind: ImagePolicy
        metadata:
          name: main-builds
        spec:
          imageRepositoryRef:
            name: podinfo
          filterTags:
            pattern: '^main-[a-f0-9]+-(?<ts>[0-9]+)'
            extract: '$ts'
          policy:
            numerical: {}
          digestReflectionPolicy: Always
          interval: 1h
        """))
    cfg, diagnostics = config.check([cfg_file])
    assert diagnostics == []
    policies = cfg.image_policies
    assert policies[("default", "podinfo")].digest_reflection_policy == "IfNotPresent"
    assert policies[("default", "podinfo-alphabetical")].policy == m.TagPolicy(kind="alphabetical", order="asc")
    assert policies[("default", "podinfo-rc")].filter_tags == m.TagFilter(pattern=".*-rc.*")
    assert policies[("default", "minio")].filter_tags == m.TagFilter(r"^RELEASE\.(?P<timestamp>.*)Z$", "$timestamp")
    builds = policies[("default", "main-builds")]
    assert (builds.policy, builds.interval) == (m.TagPolicy(kind="numerical", order="asc"), 3600.0)


def test_fluxs_image_update_automation_fragments_load(tmp_path: Path) -> None:
    cfg_file = write(tmp_path / "auto.yaml", """\
        apiVersion: source.toolkit.fluxcd.io/v1
        kind: GitRepository
        metadata: {name: app, namespace: flux-system}
        spec: {interval: 5m, url: "https://example.com/app.git", ref: {tag: v1.0.0}}
        # Flux docs: imageupdateautomations.md, the Gerrit example (sourceRef and interval added).
        ---
        apiVersion: image.toolkit.fluxcd.io/v1
        kind: ImageUpdateAutomation
        metadata:
          name: my-automation
          namespace: flux-system
        spec:
          sourceRef: {name: app}
          interval: 10m
          git:
            checkout:
              ref:
                branch: main
            push:
              branch: flux-updates
              refspec: refs/heads/flux-updates:refs/for/main
              options:
                topic: flux-updates
                title: Flux Image Update
                description: |-
                  This PR is automatically opened by the fluxcd *image-automation-controller*
            commit:
              author:
                email: flux@eaample.com
                name: fluxcd
              messageTemplate: '{{range .Changed.Changes}}{{print .OldValue}} -> {{println
                .NewValue}}{{end}}'
        # Flux docs: "Message template values", "Push options" and "PolicySelector" (the rest added).
        ---
        apiVersion: image.toolkit.fluxcd.io/v1
        kind: ImageUpdateAutomation
        metadata:
          name: selected
          namespace: flux-system
        spec:
          sourceRef: {kind: GitRepository, name: app}
          interval: 1h
          git:
            commit:
              author: {email: bot@example.com}
              messageTemplate: |-
                Automated image update by Flux for cluster {{ .Values.cluster }}.
              messageTemplateValues:
                cluster: prod
            push:
              branch: dev
              options:
                merge_request.create: ""
                merge_request.target: release
          update:
            path: ./clusters/prod
          policySelector:
            matchExpressions:
              - key: app.kubernetes.io/component
                operator: In
                values:
                  - my-component
                  - my-other-component
        """)
    cfg, diagnostics = config.check([cfg_file])
    # What Herald cannot honour is refused with the reason, at its line, never ignored: a refspec
    # and push options change where and how it pushes; a Go template would fail at the first update.
    said = sorted((d.line, d.message.split(": ", 2)[1]) for d in diagnostics)
    assert said == [(21, "spec.git.push.refspec"), (22, "spec.git.push.options"),
                    (31, "spec.git.commit.messageTemplate"), (46, "spec.git.commit.messageTemplate"),
                    (52, "spec.git.push.options")], diagnostics
    assert "this is a Go template" in next(d.message for d in diagnostics if d.line == 31)
    assert ("flux-system", "my-automation") not in cfg.image_update_automations
    written_for_herald = write(tmp_path / "herald-auto.yaml", """\
        apiVersion: source.toolkit.fluxcd.io/v1
        kind: GitRepository
        metadata: {name: app, namespace: flux-system}
        spec: {interval: 5m, url: "https://example.com/app.git", ref: {branch: main}}
        ---
        apiVersion: image.toolkit.fluxcd.io/v1
        kind: ImageUpdateAutomation
        metadata: {name: my-automation, namespace: flux-system}
        spec:
          sourceRef: {name: app}
          interval: 10m
          git:
            checkout: {ref: {branch: main}}
            push: {branch: flux-updates}
            commit:
              author: {email: flux@example.com, name: fluxcd}
              messageTemplate: '{% for c in Changed.Changes %}{{ c.OldValue }} -> {{ c.NewValue }}{% endfor %}'
          policySelector:
            matchExpressions:
              - key: app.kubernetes.io/component
                operator: In
                values: [my-component, my-other-component]
        """)
    cfg, diagnostics = config.check([written_for_herald])
    assert diagnostics == []
    gerrit = cfg.image_update_automations[("flux-system", "my-automation")]
    assert gerrit.checkout_ref == m.GitRef(branch="main") and gerrit.push_branch == "flux-updates"
    assert gerrit.message_template.startswith("{% for c in Changed.Changes %}")
    chooses = gerrit.policy_selector.matches
    assert chooses({"app.kubernetes.io/component": "my-other-component"})
    assert not chooses({"app.kubernetes.io/component": "db"}) and not chooses({})


def test_label_selectors_match_as_kubernetes_does() -> None:
    req = m.LabelRequirement
    selector = m.LabelSelector({"tier": "web"}, (req("env", "NotIn", ("dev",)), req("team", "Exists"),
                                                 req("legacy", "DoesNotExist")))
    assert selector.matches({"tier": "web", "team": "a"})  # NotIn: a missing label matches
    assert not selector.matches({"tier": "web", "team": "a", "env": "dev"})
    assert not selector.matches({"tier": "web", "team": "a", "legacy": "yes"})
    assert not selector.matches({"tier": "db", "team": "a"})


def test_refusals_name_the_field_and_line(tmp_path: Path) -> None:
    cfg_file = write(tmp_path / "bad.yaml", """\
        apiVersion: image.toolkit.fluxcd.io/v1
        kind: ImageRepository
        metadata: {name: scheme}
        spec:
          image: https://ghcr.io/org/app
          interval: 5m
        ---
        apiVersion: image.toolkit.fluxcd.io/v1
        kind: ImageRepository
        metadata: {name: tagged}
        spec:
          image: ghcr.io/org/app:1.0.0
          interval: 5m
        ---
        apiVersion: image.toolkit.fluxcd.io/v1
        kind: ImageRepository
        metadata: {name: digest}
        spec:
          image: ghcr.io/org/app@sha256:0d2f2e9d5a5b0b1e3c1e4a6a2a5c8f8e6d0a4b3c2d1e0f9a8b7c6d5e4f3a2b1c
          interval: 5m
        ---
        apiVersion: image.toolkit.fluxcd.io/v1
        kind: ImageRepository
        metadata: {name: cloud}
        spec:
          image: 123456789012.dkr.ecr.us-east-1.amazonaws.com/app
          interval: 5m
          provider: aws
          serviceAccountName: image-reflector
          exclusionList: ["^.*\\\\.sig$", "(?!x)"]
        ---
        apiVersion: image.toolkit.fluxcd.io/v1
        kind: ImageRepository
        metadata: {name: no-interval}
        spec:
          image: ghcr.io/org/app
        """)
    out = messages(cfg_file)
    for expected in [
        f"{cfg_file}:5: ImageRepository default/scheme: spec.image: image 'https://ghcr.io/org/app' should not "
        "include URL scheme; remove 'https://'",
        f"{cfg_file}:12: ImageRepository default/tagged: spec.image: image 'ghcr.io/org/app:1.0.0' should not "
        "include a tag; remove ':1.0.0'",
        f"{cfg_file}:19: ImageRepository default/digest: spec.image: image 'ghcr.io/org/app@sha256:",
        f"{cfg_file}:28: ImageRepository default/cloud: spec.provider: 'aws' is not supported by Herald: it has no "
        "aws workload identity",
        f"{cfg_file}:29: ImageRepository default/cloud: spec.serviceAccountName: not supported by Herald: Herald has "
        "no cloud workload identity",
        f"{cfg_file}:30: ImageRepository default/cloud: spec.exclusionList[1]: invalid regular expression '(?!x)': "
        "look-around assertions are not supported",
        f"{cfg_file}:35: ImageRepository default/no-interval: spec.interval: required field is missing",
    ]:
        assert any(line.startswith(expected) for line in out), f"{expected!r} not in:\n" + "\n".join(out)
    assert any("should not include a digest; remove '@sha256:" in line for line in out)
    assert "as whom Herald acts" in "\n".join(out)
    assert len(out) == 7, out


def test_policy_refusals_name_the_field_and_line(tmp_path: Path) -> None:
    cfg_file = write(tmp_path / "policies.yaml", """\
        apiVersion: image.toolkit.fluxcd.io/v1
        kind: ImageRepository
        metadata: {name: app}
        spec: {image: ghcr.io/org/app, interval: 5m}
        ---
        apiVersion: image.toolkit.fluxcd.io/v1
        kind: ImagePolicy
        metadata: {name: two}
        spec:
          imageRepositoryRef: {name: app}
          policy:
            semver: {range: ">=1.0.0"}
            numerical: {order: asc}
        ---
        apiVersion: image.toolkit.fluxcd.io/v1
        kind: ImagePolicy
        metadata: {name: none}
        spec:
          imageRepositoryRef: {name: app}
          policy: {}
        ---
        apiVersion: image.toolkit.fluxcd.io/v1
        kind: ImagePolicy
        metadata: {name: range}
        spec:
          imageRepositoryRef: {name: app}
          policy:
            semver:
              range: ">=1.0 <<2"
        ---
        apiVersion: image.toolkit.fluxcd.io/v1
        kind: ImagePolicy
        metadata: {name: order}
        spec:
          imageRepositoryRef: {name: app}
          policy:
            alphabetical: {order: ASC}
        ---
        apiVersion: image.toolkit.fluxcd.io/v1
        kind: ImagePolicy
        metadata: {name: always}
        spec:
          imageRepositoryRef: {name: app}
          policy: {alphabetical: {}}
          digestReflectionPolicy: Always
        ---
        apiVersion: image.toolkit.fluxcd.io/v1
        kind: ImagePolicy
        metadata: {name: interval}
        spec:
          imageRepositoryRef: {name: app}
          policy: {alphabetical: {}}
          interval: 10m
        ---
        apiVersion: image.toolkit.fluxcd.io/v1
        kind: ImagePolicy
        metadata: {name: pattern}
        spec:
          imageRepositoryRef: {name: app}
          policy: {numerical: {}}
          filterTags:
            pattern: '^main-(?P<ts>\\d+)(?=x)'
        ---
        apiVersion: image.toolkit.fluxcd.io/v1
        kind: ImagePolicy
        metadata: {name: extract}
        spec:
          imageRepositoryRef: {name: app}
          policy: {numerical: {}}
          filterTags:
            pattern: '^main-(?P<ts>\\d+)'
            extract: '$timestamp'
        """)
    out = messages(cfg_file)
    for expected in [
        f"{cfg_file}:13: ImagePolicy default/two: spec.policy: exactly one of semver, alphabetical, numerical is "
        "required; found semver, numerical",
        f"{cfg_file}:20: ImagePolicy default/none: spec.policy: exactly one of semver, alphabetical, numerical is "
        "required",
        f"{cfg_file}:29: ImagePolicy default/range: spec.policy.semver.range: invalid semver range '>=1.0 <<2'",
        f"{cfg_file}:37: ImagePolicy default/order: spec.policy.alphabetical.order: 'ASC' is not one of: asc, desc",
        f"{cfg_file}:45: ImagePolicy default/always: spec.interval must be set when spec.digestReflectionPolicy is "
        "set to 'Always'",
        f"{cfg_file}:53: ImagePolicy default/interval: spec.interval is only accepted when "
        "spec.digestReflectionPolicy is set to 'Always'",
        f"{cfg_file}:62: ImagePolicy default/pattern: spec.filterTags.pattern: invalid regular expression",
        f"{cfg_file}:72: warning: ImagePolicy default/extract: spec.filterTags.extract: $timestamp names no group of "
        "spec.filterTags.pattern, so it expands to an empty string",
    ]:
        assert any(line.startswith(expected) for line in out), f"{expected!r} not in:\n" + "\n".join(out)
    assert len(out) == 8, out


def test_automation_refusals_name_the_field_and_line(tmp_path: Path) -> None:
    cfg_file = write(tmp_path / "auto.yaml", """\
        apiVersion: source.toolkit.fluxcd.io/v1
        kind: GitRepository
        metadata: {name: app}
        spec: {interval: 5m, url: "https://example.com/app.git"}
        ---
        apiVersion: image.toolkit.fluxcd.io/v1
        kind: ImageUpdateAutomation
        metadata: {name: signed}
        spec:
          sourceRef: {name: app}
          interval: 5m
          git:
            commit:
              author: {name: bot}
              signingKey:
                type: ssh
                secretRef: {name: signing-key}
          update: {strategy: Kyaml}
          policySelector:
            matchExpressions:
              - {key: tier, operator: In}
              - {key: team, operator: Exists, values: [a]}
        ---
        apiVersion: image.toolkit.fluxcd.io/v1
        kind: ImageUpdateAutomation
        metadata: {name: oci}
        spec:
          sourceRef: {kind: OCIRepository, name: app}
          interval: 5m
        """)
    out = messages(cfg_file)
    for expected in [
        f"{cfg_file}:14: ImageUpdateAutomation default/signed: spec.git.commit.author.email: required field is missing",
        f"{cfg_file}:15: ImageUpdateAutomation default/signed: spec.git.commit.signingKey: not supported by Herald: "
        "Herald does not sign commits yet",
        f"{cfg_file}:18: ImageUpdateAutomation default/signed: spec.update.strategy: 'Kyaml' is not one of: Setters",
        f"{cfg_file}:21: ImageUpdateAutomation default/signed: spec.policySelector.matchExpressions[0].values: must "
        "list at least one value with operator In",
        f"{cfg_file}:22: ImageUpdateAutomation default/signed: spec.policySelector.matchExpressions[1].values: must "
        "be empty with operator Exists",
        f"{cfg_file}:28: ImageUpdateAutomation default/oci: spec.sourceRef.kind: 'OCIRepository' is not one of: "
        "GitRepository",
        f"{cfg_file}:27: ImageUpdateAutomation default/oci: spec.git: required field is missing",
    ]:
        assert any(line.startswith(expected) for line in out), f"{expected!r} not in:\n" + "\n".join(out)
    assert len(out) == 7, out


def test_references_are_checked_across_documents(tmp_path: Path) -> None:
    cfg_file = write(tmp_path / "refs.yaml", """\
        apiVersion: image.toolkit.fluxcd.io/v1
        kind: ImagePolicy
        metadata: {name: orphan}
        spec:
          imageRepositoryRef:
            name: missing
          policy: {semver: {range: "*"}}
        ---
        apiVersion: image.toolkit.fluxcd.io/v1
        kind: ImageRepository
        metadata: {name: private}
        spec:
          image: ghcr.io/org/private
          interval: 5m
          secretRef:
            name: regcred
        ---
        apiVersion: image.toolkit.fluxcd.io/v1
        kind: ImageUpdateAutomation
        metadata: {name: auto}
        spec:
          interval: 5m
          sourceRef:
            name: nowhere
          git: {commit: {author: {email: bot@example.com}}}
        ---
        apiVersion: source.toolkit.fluxcd.io/v1
        kind: GitRepository
        metadata: {name: released}
        spec: {interval: 5m, url: "https://example.com/app.git", ref: {semver: ">=1.0.0"}}
        ---
        apiVersion: image.toolkit.fluxcd.io/v1
        kind: ImageUpdateAutomation
        metadata: {name: nowhere-to-push}
        spec:
          interval: 5m
          sourceRef: {name: released}
          git:
            commit: {author: {email: bot@example.com}}
        ---
        apiVersion: image.toolkit.fluxcd.io/v1
        kind: ImageUpdateAutomation
        metadata: {name: tag-checkout}
        spec:
          interval: 5m
          sourceRef: {name: released}
          git:
            checkout: {ref: {semver: ">=1.0 <<2"}}
            commit: {author: {email: bot@example.com}}
            push: {branch: auto}
        ---
        apiVersion: notification.toolkit.fluxcd.io/v1
        kind: Receiver
        metadata: {name: registry}
        spec:
          type: dockerhub
          secretRef: {name: hook}
          resources:
            - {kind: ImageRepository, name: private}
            - {kind: ImageRepository, name: gone}
        ---
        apiVersion: v1
        kind: Secret
        metadata: {name: hook}
        stringData: {token: t}
        """)
    out = messages(cfg_file)
    for expected in [
        f"{cfg_file}:6: ImagePolicy default/orphan: spec.imageRepositoryRef: ImageRepository default/missing not found",
        f"{cfg_file}:16: ImageRepository default/private: spec.secretRef: Secret default/regcred not found",
        f"{cfg_file}:24: ImageUpdateAutomation default/auto: spec.sourceRef: GitRepository default/nowhere not found",
        f"{cfg_file}:38: ImageUpdateAutomation default/nowhere-to-push: spec.git.push: push spec not provided, and "
        "cannot be inferred from .spec.git.checkout.ref or GitRepository .spec.ref",
        f"{cfg_file}:48: ImageUpdateAutomation default/tag-checkout: spec.git.checkout.ref.semver: invalid semver "
        "range '>=1.0 <<2':",
        f"{cfg_file}:60: Receiver default/registry: spec.resources: ImageRepository default/gone not found",
    ]:
        assert any(line.startswith(expected) for line in out), f"{expected!r} not in:\n" + "\n".join(out)
    assert not any("ImageRepository default/private not found" in line for line in out)
    # a Receiver may name ImageRepositories: a registry push scans them (no warning any more)
    assert not any("Herald does not reconcile" in line for line in out)
    assert len(out) == 6, out


def test_an_invalid_image_repository_is_reported_once_not_again_as_missing(tmp_path: Path) -> None:
    cfg_file = write(tmp_path / "once.yaml", """\
        apiVersion: image.toolkit.fluxcd.io/v1
        kind: ImageRepository
        metadata: {name: app}
        spec: {image: "ghcr.io/org/app:latest", interval: 5m}
        ---
        apiVersion: image.toolkit.fluxcd.io/v1
        kind: ImagePolicy
        metadata: {name: app}
        spec:
          imageRepositoryRef: {name: app}
          policy: {semver: {range: "*"}}
        """)
    assert messages(cfg_file) == [f"{cfg_file}:4: ImageRepository default/app: spec.image: image "
                                  "'ghcr.io/org/app:latest' should not include a tag; remove ':latest'"]


@pytest.mark.parametrize("selectors,namespace,denied", [
    (None, "flux-system", "ImageRepository 'apps/app' can't be accessed due to missing ACL labels on 'accessFrom'"),
    ("[{matchLabels: {}}]", "anywhere", ""),
    ("[{matchLabels: {kubernetes.io/metadata.name: flux-system}}]", "flux-system", ""),
    ("[{matchLabels: {kubernetes.io/metadata.name: flux-system}}]", "other",
     "ImageRepository 'apps/app' can't be accessed due to ACL labels mismatch on namespace 'other'"),
    ("[{matchLabels: {team: a}}, {matchLabels: {kubernetes.io/metadata.name: ci}}]", "ci", ""),
    ("[{matchLabels: {team: a}}]", "flux-system",
     "ImageRepository 'apps/app' can't be accessed due to ACL labels mismatch on namespace 'flux-system' (Herald "
     "matches a namespace by its kubernetes.io/metadata.name label only, not by team)"),
])
def test_another_namespaces_image_repository_needs_its_access_from(tmp_path: Path, selectors: str | None,
                                                                   namespace: str, denied: str) -> None:
    """Flux's ACL (fluxcd/pkg/runtime/acl HasAccessToRef), with its messages."""
    access = f"accessFrom: {{namespaceSelectors: {selectors}}}" if selectors else ""
    cfg_file = write(tmp_path / "acl.yaml", f"""\
        apiVersion: image.toolkit.fluxcd.io/v1
        kind: ImageRepository
        metadata: {{name: app, namespace: apps}}
        spec: {{image: ghcr.io/org/app, interval: 5m, {access}}}
        ---
        apiVersion: image.toolkit.fluxcd.io/v1
        kind: ImagePolicy
        metadata: {{name: app, namespace: {namespace}}}
        spec:
          imageRepositoryRef: {{name: app, namespace: apps}}
          policy: {{semver: {{range: "*"}}}}
        """)
    expected = [f"{cfg_file}:10: ImagePolicy {namespace}/app: spec.imageRepositoryRef: {denied}"] if denied else []
    assert messages(cfg_file) == expected


def test_fields_flux_has_and_herald_does_not_use_yet_are_warnings(tmp_path: Path) -> None:
    cfg_file = write(tmp_path / "proxy.yaml", """\
        # Flux docs: imagerepositories.md, "Proxy secret reference".
        apiVersion: image.toolkit.fluxcd.io/v1
        kind: ImageRepository
        metadata:
          name: example
          namespace: default
        spec:
          interval: 5m0s
          image: example.com
          proxySecretRef:
            name: http-proxy
        """)
    assert messages(cfg_file) == [f"{cfg_file}:10: warning: ImageRepository default/example: spec.proxySecretRef: "
                                  "Flux field not acted on by Herald yet; it is ignored"]


def test_repository_defaults_follow_flux(tmp_path: Path) -> None:
    cfg = config.load([write(tmp_path / "r.yaml", """\
        apiVersion: image.toolkit.fluxcd.io/v1
        kind: ImageRepository
        metadata: {name: quick}
        spec: {image: alpine, interval: 500ms, exclusionList: [], insecure: true}
        ---
        apiVersion: image.toolkit.fluxcd.io/v1
        kind: ImageRepository
        metadata: {name: slow}
        spec: {image: localhost:5000/app, interval: 1h, timeout: 2m, exclusionList: ["^sha-"], suspend: true}
        """)])
    quick, slow = cfg.image_repositories[("default", "quick")], cfg.image_repositories[("default", "slow")]
    # An empty exclusionList is the default one, and a timeout is never under a second (GetTimeout).
    assert (quick.timeout, quick.exclusion_list, quick.insecure) == (1.0, ("^.*\\.sig$",), True)
    assert (slow.timeout, slow.exclusion_list, slow.suspend) == (120.0, ("^sha-",), True)


def test_alerts_name_the_image_kinds_as_event_sources(tmp_path: Path) -> None:
    cfg_file = write(tmp_path / "alert.yaml", """\
        apiVersion: notification.toolkit.fluxcd.io/v1beta3
        kind: Provider
        metadata: {name: hook}
        spec: {type: generic, address: "https://example.com/hook"}
        ---
        apiVersion: notification.toolkit.fluxcd.io/v1beta3
        kind: Alert
        metadata: {name: images}
        spec:
          providerRef: {name: hook}
          eventSources:
            - {kind: ImageRepository, name: '*'}
            - {kind: ImagePolicy, name: '*'}
            - {kind: ImageUpdateAutomation, name: '*'}
        """)
    cfg, diagnostics = config.check([cfg_file])
    assert diagnostics == []
    assert [s.kind for s in cfg.alerts[("default", "images")].event_sources] == list(config.IMAGE_KINDS)


def test_validate_counts_and_reports_them(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write(tmp_path / "good" / "flux.yaml", AUTOMATION_EXAMPLE)
    assert main(["validate", "--offline", "-c", str(good)]) == 0  # its repository is on github.com
    assert capsys.readouterr().out.strip() == "ok: 4 object(s), 0 warning(s)"
    bad = write(tmp_path / "bad" / "flux.yaml", AUTOMATION_EXAMPLE.replace("range: 5.0.x", "range: 5.0.x.y"))
    assert main(["validate", "-c", str(bad)]) == 1
    out = capsys.readouterr().out
    assert f"{bad}:32: ImagePolicy default/podinfo-policy: spec.policy.semver.range: invalid semver range " \
           "'5.0.x.y'" in out
    assert out.strip().endswith("1 error(s), 0 warning(s)")


def test_the_cluster_reads_the_image_kinds_from_herald_dev() -> None:
    assert {cluster_config.PLURALS[k] for k in config.IMAGE_KINDS} == \
        {"imagerepositories", "imagepolicies", "imageupdateautomations"}
    assert set(config.IMAGE_KINDS) <= set(cluster_config.STATUS_OWNERS["serve"])
