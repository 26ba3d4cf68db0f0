"""Preparing a Kustomization's folder as Flux's kustomize generator does, then building it with
the real `kubectl kustomize`.

Each scenario writes a small repository under tmp_path, calls `generate` with a Kustomization
spec, builds the folder and looks at the objects kustomize printed. What Flux would write or
do is taken from fluxcd/pkg kustomize/kustomize_generator.go and kustomize-controller (see the
module docstring of reconciler.generate).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from herald.yamlsrc import load_documents
from reconciler.generate import GenerateError, apply_common_metadata, generate, needs_generator

pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="needs kubectl (kubectl kustomize)")

DIGEST = "sha256:" + "a" * 64


def configmap(name: str, namespace: str = "", **labels: str) -> str:
    meta = {"name": name, **({"namespace": namespace} if namespace else {}), **({"labels": labels} if labels else {})}
    return yaml.safe_dump({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"k": "v"}})


def deployment(name: str, image: str = "nginx:1.25", replicas: int = 1, **labels: str) -> str:
    return yaml.safe_dump({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, **({"labels": labels} if labels else {})},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [{"name": "main", "image": image}]}}}})


def tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def build(folder: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize` with the load restrictions Flux builds with (none: a file outside the
    folder may be read; Flux confines reads to the repository with its secure filesystem)."""
    proc = subprocess.run(["kubectl", "kustomize", "--load-restrictor=LoadRestrictionsNone", str(folder)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    return [doc.data for doc in load_documents(proc.stdout, "kustomize output")]


def by_name(objs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {f"{o['kind']}/{o['metadata']['name']}": o for o in objs}


def kustomization(folder: Path, name: str = "kustomization.yaml") -> dict[str, Any]:
    return yaml.safe_load((folder / name).read_text())


def container_images(obj: dict[str, Any]) -> list[str]:
    return [c["image"] for c in obj["spec"]["template"]["spec"]["containers"]]


# --- a folder without a kustomization.yaml -------------------------------------------------------


def test_a_folder_without_a_kustomization_lists_its_manifests_and_kustomized_subfolders_as_flux_does(
        tmp_path: Path) -> None:
    root = tree(tmp_path / "repo", {
        "deploy/b.yaml": configmap("b") + "---\n" + yaml.safe_dump(
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "stringData": {"k": "v"}}),
        "deploy/a.yml": configmap("a"),
        "deploy/empty.yaml": "",
        "deploy/data.json": '{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "json"}}',
        "deploy/README.md": "# not YAML\n",
        "deploy/sub/E.YAML": "not: listed\n",  # Flux's extension check is case-sensitive
        "deploy/sub/deeper/d.yaml": configmap("d"),
        # a subfolder with its own kustomization is one resource, and not read file by file
        "deploy/app/kustomization.yaml": "resources: [cm.yaml]\n",
        "deploy/app/cm.yaml": configmap("app"),
        "deploy/app/values.yaml": "replicas: 3\n",
        # hidden folders are listed (source-controller keeps them) ...
        "deploy/.hidden/h.yaml": configmap("hidden"),
        # ... except what its default exclusions leave out of the artifact
        "deploy/.github/workflows/ci.yaml": "on: push\njobs: {}\n",
        "deploy/cloudbuild.yaml": "steps: []\n",
        "deploy/.sops.yaml": "creation_rules: []\n",
    })
    generate(root, root / "deploy", {})

    assert kustomization(root / "deploy") == {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": ["./.hidden/h.yaml", "./a.yml", "./app", "./b.yaml", "./empty.yaml", "./sub/deeper/d.yaml"],
    }
    assert sorted(by_name(build(root / "deploy"))) == [
        "ConfigMap/a", "ConfigMap/app", "ConfigMap/b", "ConfigMap/d", "ConfigMap/hidden", "Secret/s"]


def test_a_yaml_file_that_is_not_a_kubernetes_object_fails_the_generation_naming_the_file(tmp_path: Path) -> None:
    """Flux's scanManifests decodes every listed file and fails on one that is not Kubernetes
    YAML; the Flux docs tell users to exclude such files with a .sourceignore."""
    root = tree(tmp_path / "repo", {"deploy/cm.yaml": configmap("a"), "deploy/values.yaml": "replicas: 3\n"})
    with pytest.raises(GenerateError, match=r"^deploy/values\.yaml:1: failed to decode Kubernetes YAML: "
                                            r"missing Resource metadata"):
        generate(root, root / "deploy", {})
    assert not (root / "deploy" / "kustomization.yaml").exists()

    (root / "deploy" / "values.yaml").write_text(configmap("ok") + "---\nkind: ConfigMap\nmetadata: {}\n")
    with pytest.raises(GenerateError, match=r"^deploy/values\.yaml:8: .*missing metadata\.name in the ConfigMap"):
        generate(root, root / "deploy", {})


def test_sourceignore_files_leave_out_what_source_controller_leaves_out_of_the_artifact(tmp_path: Path) -> None:
    root = tree(tmp_path / "repo", {
        ".sourceignore": "# CI and Helm values are not manifests\n*.values.yaml\n!keep.values.yaml\n/deploy/local/\n",
        "deploy/.sourceignore": "scratch/\n",  # scoped to deploy/
        "deploy/cm.yaml": configmap("cm"),
        "deploy/web.values.yaml": "replicas: 3\n",
        "deploy/keep.values.yaml": configmap("kept"),
        "deploy/local/dev.yaml": "debug: true\n",
        "deploy/scratch/notes.yaml": "todo: []\n",
        "deploy/sub/local/c.yaml": configmap("sub-local"),  # /deploy/local/ is anchored at the root
    })
    generate(root, root / "deploy", {})
    assert kustomization(root / "deploy")["resources"] == ["./cm.yaml", "./keep.values.yaml", "./sub/local/c.yaml"]
    assert sorted(by_name(build(root / "deploy"))) == ["ConfigMap/cm", "ConfigMap/kept", "ConfigMap/sub-local"]


def test_a_sourceignore_replaces_the_default_exclusions_but_never_lets_git_in(tmp_path: Path) -> None:
    """source-controller uses its CI/extension defaults only when there is no pattern at all."""
    root = tree(tmp_path / "repo", {
        ".sourceignore": "docs/\n",
        ".git/hooks/x.yaml": "not: a manifest\n",
        "cm.yaml": configmap("cm"),
        ".github/workflows/ci.yaml": "on: push\n",
    })
    with pytest.raises(GenerateError, match=r"^\.github/workflows/ci\.yaml:1: failed to decode Kubernetes YAML"):
        generate(root, root, {})
    # The GitRepository's spec.ignore adds patterns the same way.
    generate(root, root, {}, source_ignore=".github/\n")
    assert kustomization(root)["resources"] == ["./cm.yaml"]


def test_an_empty_folder_gets_flux_placeholder_namespace_and_builds_to_nothing(tmp_path: Path) -> None:
    root = tree(tmp_path / "repo", {"deploy/README.md": "nothing here\n"})
    generate(root, root / "deploy", {})
    assert kustomization(root / "deploy") == {
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "namespace": "_placeholder"}
    assert build(root / "deploy") == []


# --- the Kustomization's fields --------------------------------------------------------------------


def test_target_namespace_overrides_every_namespace_as_kustomize_does(tmp_path: Path) -> None:
    root = tree(tmp_path / "repo", {
        "deploy/kustomization.yaml": "namespace: old\nresources: [objs.yaml]\n",
        "deploy/objs.yaml": "---\n".join([
            configmap("with-ns", namespace="elsewhere"), configmap("without-ns"),
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n",
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: reader}\n"]),
    })
    assert needs_generator({"targetNamespace": "yes"})
    # "yes" is a valid namespace name that YAML 1.1 (how kustomize reads kustomization.yaml) would
    # make a boolean: it must stay a string.
    generate(root, root / "deploy", {"targetNamespace": "yes"})
    objs = by_name(build(root / "deploy"))
    assert objs["ConfigMap/with-ns"]["metadata"]["namespace"] == "yes"
    assert objs["ConfigMap/without-ns"]["metadata"]["namespace"] == "yes"
    assert "namespace" not in objs["ClusterRole/reader"]["metadata"]
    # kustomize's namespace transformer renames a Namespace object: why targetNamespace needs kustomize
    assert "Namespace/yes" in objs and "Namespace/shop" not in objs


def test_patches_strategic_merge_and_json6902_apply_to_the_objects_their_target_selects(tmp_path: Path) -> None:
    root = tree(tmp_path / "repo", {
        "deploy/web.yaml": deployment("web", **{"app.kubernetes.io/part-of": "shop"}),
        "deploy/api.yaml": deployment("api"),
        "deploy/worker.yaml": deployment("worker", **{"app.kubernetes.io/part-of": "shop"}),
    })
    spec = {"patches": [
        {"patch": textwrap.dedent("""\
            apiVersion: apps/v1
            kind: Deployment
            metadata:
              name: not-used
            spec:
              template:
                metadata:
                  annotations:
                    cluster-autoscaler.kubernetes.io/safe-to-evict: "true"
            """),
         "target": {"kind": "Deployment", "labelSelector": "app.kubernetes.io/part-of=shop"}},
        {"patch": "- op: replace\n  path: /spec/replicas\n  value: 4\n",
         "target": {"kind": "Deployment", "name": "api"}},
    ]}
    assert needs_generator(spec)
    generate(root, root / "deploy", spec)
    objs = by_name(build(root / "deploy"))

    def annotations(name: str) -> dict[str, str]:
        return objs[f"Deployment/{name}"]["spec"]["template"]["metadata"].get("annotations", {})

    assert annotations("web") == annotations("worker") == {"cluster-autoscaler.kubernetes.io/safe-to-evict": "true"}
    assert annotations("api") == {}
    assert [objs[f"Deployment/{n}"]["spec"]["replicas"] for n in ("web", "api", "worker")] == [1, 4, 1]


def test_images_set_a_new_name_a_new_tag_or_a_digest(tmp_path: Path) -> None:
    root = tree(tmp_path / "repo", {
        "deploy/a.yaml": deployment("a", image="nginx:1.25"),
        "deploy/b.yaml": deployment("b", image="ghcr.io/acme/api:v1"),
        "deploy/c.yaml": deployment("c", image="redis"),
    })
    generate(root, root / "deploy", {"images": [
        {"name": "nginx", "newName": "registry.example.com/nginx", "newTag": "1.27"},
        {"name": "ghcr.io/acme/api", "digest": DIGEST},
        {"name": "redis", "newTag": "012"},  # a tag that YAML 1.1 would read as the number 10
    ]})
    objs = by_name(build(root / "deploy"))
    assert container_images(objs["Deployment/a"]) == ["registry.example.com/nginx:1.27"]
    assert container_images(objs["Deployment/b"]) == [f"ghcr.io/acme/api@{DIGEST}"]
    assert container_images(objs["Deployment/c"]) == ["redis:012"]


def test_components_are_kustomize_components_relative_to_spec_path(tmp_path: Path) -> None:
    root = tree(tmp_path / "repo", {
        "apps/shop/web.yaml": deployment("web"),
        "components/monitoring/kustomization.yaml": """\
            apiVersion: kustomize.config.k8s.io/v1alpha1
            kind: Component
            resources: [dashboard.yaml]
            labels:
            - pairs: {monitoring: enabled}
            """,
        "components/monitoring/dashboard.yaml": configmap("dashboard"),
    })
    generate(root, root / "apps" / "shop", {"components": ["../../components/monitoring"]})
    assert kustomization(root / "apps" / "shop")["components"] == ["../../components/monitoring"]
    objs = by_name(build(root / "apps" / "shop"))
    assert sorted(objs) == ["ConfigMap/dashboard", "Deployment/web"]
    assert all(o["metadata"]["labels"] == {"monitoring": "enabled"} for o in objs.values())


def test_name_prefix_and_suffix_rename_objects_and_the_references_kustomize_knows(tmp_path: Path) -> None:
    web = yaml.safe_load(deployment("web"))
    web["spec"]["template"]["spec"]["containers"][0]["envFrom"] = [{"configMapRef": {"name": "settings"}}]
    root = tree(tmp_path / "repo", {"deploy/web.yaml": yaml.safe_dump(web), "deploy/cm.yaml": configmap("settings")})
    generate(root, root / "deploy", {"namePrefix": "shop-", "nameSuffix": "-v2"})
    objs = by_name(build(root / "deploy"))
    assert sorted(objs) == ["ConfigMap/shop-settings-v2", "Deployment/shop-web-v2"]
    container = objs["Deployment/shop-web-v2"]["spec"]["template"]["spec"]["containers"][0]
    assert container["envFrom"] == [{"configMapRef": {"name": "shop-settings-v2"}}]


def test_common_metadata_labels_and_annotates_every_object_after_the_build_and_leaves_selectors(
        tmp_path: Path) -> None:
    """kustomize-controller applies commonMetadata to the built objects (ssa SetCommonMetadata),
    not through kustomize: no selector or pod template changes, same keys are overridden."""
    root = tree(tmp_path / "repo", {"deploy/web.yaml": deployment("web", team="old"), "deploy/cm.yaml": configmap("c")})
    common = {"labels": {"team": "shop", "env": "prod"}, "annotations": {"owner": "shop@example.com"}}
    spec = {"commonMetadata": common}
    assert not needs_generator(spec)  # the plain road can take it too: it is applied after either
    generate(root, root / "deploy", spec)
    built = build(root / "deploy")
    objs = by_name(apply_common_metadata(built, common))
    for obj in objs.values():
        assert obj["metadata"]["labels"] == {"team": "shop", "env": "prod"}
        assert obj["metadata"]["annotations"] == {"owner": "shop@example.com"}
    web = objs["Deployment/web"]
    assert web["spec"]["selector"] == {"matchLabels": {"app": "web"}}
    assert web["spec"]["template"]["metadata"] == {"labels": {"app": "web"}}
    assert by_name(built)["Deployment/web"]["metadata"]["labels"] == {"team": "old"}  # input unchanged
    assert apply_common_metadata(built, None) == built
    assert apply_common_metadata([{"kind": "X", "metadata": {"name": "x"}}], {"annotations": {"a": "b"}}) == [
        {"kind": "X", "metadata": {"name": "x", "annotations": {"a": "b"}}}]  # no empty labels added


def test_an_existing_kustomization_keeps_its_own_patches_images_and_components_and_gets_fluxs_merged_in(
        tmp_path: Path) -> None:
    root = tree(tmp_path / "repo", {
        "deploy/web.yaml": deployment("web", image="nginx:1.25"),
        "deploy/cache.yaml": deployment("cache", image="redis:7"),
        "deploy/tools.yaml": deployment("tools", image="busybox"),
        "c1/kustomization.yaml": "apiVersion: kustomize.config.k8s.io/v1alpha1\nkind: Component\n"
                                 "commonAnnotations: {c1: 'yes'}\n",
        "c2/kustomization.yaml": "apiVersion: kustomize.config.k8s.io/v1alpha1\nkind: Component\n"
                                 "commonAnnotations: {c2: 'on'}\n",
        # kustomization.yml, with a field kustomize does not know: Flux's read-and-write-back drops it
        "deploy/kustomization.yml": f"""\
            namespace: old
            resources: [web.yaml, cache.yaml, tools.yaml]
            components: [../c1]
            notAKustomizeField: whatever
            patches:
            - target: {{kind: Deployment, name: web}}
              patch: |
                - op: replace
                  path: /spec/replicas
                  value: 2
                - op: add
                  path: /metadata/labels
                  value: {{from-file: "true"}}
            images:
            - name: nginx
              newTag: "1.26"
            - name: redis
              newName: mirror.example.com/redis
              digest: {DIGEST}
            """,
    })
    # kustomize alone refuses the unknown field; Flux never passes it on.
    proc = subprocess.run(["kubectl", "kustomize", str(root / "deploy")], capture_output=True, text=True,
                          check=False)
    assert proc.returncode != 0 and "notAKustomizeField" in proc.stderr

    generate(root, root / "deploy", {
        "targetNamespace": "shop",
        "patches": [{"patch": "- op: replace\n  path: /spec/replicas\n  value: 5\n",
                     "target": {"kind": "Deployment", "name": "web"}}],
        "images": [{"name": "nginx", "newName": "registry.example.com/nginx"},  # keeps the file's newTag
                   {"name": "redis", "newTag": "7.2"},  # a tag replaces the digest; newName stays
                   {"name": "busybox", "newTag": "1.36"}],  # not in the file: appended
        "components": ["../c2"],
    })
    assert not (root / "deploy" / "kustomization.yaml").exists()  # written back to the file it read
    kus = kustomization(root / "deploy", "kustomization.yml")
    assert "notAKustomizeField" not in kus
    assert kus["namespace"] == "shop"
    assert kus["components"] == ["../c1", "../c2"]
    assert [p["target"] for p in kus["patches"]] == [{"kind": "Deployment", "name": "web"}] * 2
    assert kus["images"] == [
        {"name": "nginx", "newName": "registry.example.com/nginx", "newTag": "1.26"},
        {"name": "redis", "newName": "mirror.example.com/redis", "newTag": "7.2"},
        {"name": "busybox", "newTag": "1.36"},
    ]
    objs = by_name(build(root / "deploy"))
    web = objs["Deployment/web"]
    assert web["spec"]["replicas"] == 5  # Flux's patch comes after the file's own
    assert web["metadata"]["labels"] == {"from-file": "true"}
    assert web["metadata"]["annotations"] == {"c1": "yes", "c2": "on"}
    assert web["metadata"]["namespace"] == "shop"
    assert container_images(web) == ["registry.example.com/nginx:1.26"]
    assert container_images(objs["Deployment/cache"]) == ["mirror.example.com/redis:7.2"]
    assert container_images(objs["Deployment/tools"]) == ["busybox:1.36"]


def test_the_files_own_values_keep_the_meaning_kustomize_gives_them(tmp_path: Path) -> None:
    """kustomize reads kustomization.yaml with YAML 1.1 rules: writing it back must neither turn
    a quoted "on" into a boolean nor a plain 3 into a string."""
    root = tree(tmp_path / "repo", {
        "deploy/web.yaml": deployment("web"),
        "deploy/kustomization.yaml": """\
            resources:
            - web.yaml
            commonAnnotations:
              feature: "on"
              build: '012'
            replicas: [{name: web, count: 3}]
            configMapGenerator:
            - name: settings
              literals: [MODE=fast, 'GREETING=hello: world']
            """,
    })
    generate(root, root / "deploy", {"namePrefix": "x-"})
    objs = by_name(build(root / "deploy"))
    web = objs["Deployment/x-web"]
    assert web["spec"]["replicas"] == 3
    assert web["metadata"]["annotations"] == {"feature": "on", "build": "012"}
    [settings] = [o for name, o in objs.items() if name.startswith("ConfigMap/x-settings-")]
    assert settings["data"] == {"MODE": "fast", "GREETING": "hello: world"}


def test_an_existing_kustomization_without_resources_gets_flux_origin_annotations(tmp_path: Path) -> None:
    """Flux sets buildMetadata: [originAnnotations] on a kustomization.yaml without resources;
    the built objects then carry kustomize's origin annotation, as in the cluster."""
    root = tree(tmp_path / "repo", {
        "deploy/kustomization.yaml": "configMapGenerator:\n- name: gen\n  literals: [a=b]\n"})
    generate(root, root / "deploy", {})
    [cm] = build(root / "deploy")
    assert "configuredIn: kustomization.yaml" in cm["metadata"]["annotations"]["config.kubernetes.io/origin"]


# --- what is refused ---------------------------------------------------------------------------------

SMP = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec: {replicas: 2}\n"


@pytest.mark.parametrize(("spec", "message"), [
    ({"patches": [{"target": {"kind": "Deployment"}}]}, r"spec\.patches\[0\]\.patch: is required"),
    ({"patches": [{"patch": SMP}, {"patch": SMP, "target": {"kind": "Deployment", "labels": "a=b"}}]},
     r"spec\.patches\[1\]\.target: unknown field 'labels' \(a target has group, version, kind, name"),
    ({"patches": [{"patch": SMP, "tagret": {"kind": "Deployment"}}]}, r"spec\.patches\[0\]: unknown field 'tagret'"),
    ({"patches": [{"patch": "- op: add\n  path: /x\n  value: 1\n"}]},
     r"spec\.patches\[0\]\.target: is required for a JSON 6902 patch"),
    ({"patches": [{"patch": "- op: upsert\n  path: /x\n", "target": {"kind": "Deployment"}}]},
     r"spec\.patches\[0\]\.patch\[0\]: a JSON 6902 operation needs op"),
    ({"patches": [{"patch": "spec: {replicas: 2}\n", "target": {"kind": "Deployment"}}]},
     r"spec\.patches\[0\]\.patch: a strategic-merge patch needs kind and metadata\.name"),
    ({"patches": [{"patch": "kind: [Deployment\n"}]},
     r"spec\.patches\[0\]\.patch: line \d+ of the patch: invalid YAML"),
    ({"patches": [{"patch": {"kind": "Deployment"}}]}, r"spec\.patches\[0\]\.patch: must be a string"),
    ({"patches": {"patch": SMP}}, r"spec\.patches: must be a list, got a mapping"),
    ({"images": [{"newTag": "1.2"}]}, r"spec\.images\[0\]\.name: is required"),
    ({"images": [{"name": "nginx", "tagSuffix": "-x"}]}, r"spec\.images\[0\]: unknown field 'tagSuffix'"),
    ({"images": [{"name": "nginx", "newTag": 1.25}]}, r"spec\.images\[0\]\.newTag: must be a string, got a number"),
    ({"namePrefix": 5}, r"spec\.namePrefix: must be a string"),
    ({"nameSuffix": ""}, r"spec\.nameSuffix: must be 1 to 200 characters"),
    ({"targetNamespace": "x" * 64}, r"spec\.targetNamespace: must be 1 to 63 characters"),
    ({"components": ["https://github.com/acme/components//tls"]}, r"spec\.components\[0\]: .* must be a local path"),
    ({"components": ["/etc"]}, r"spec\.components\[0\]: '/etc' must be a local path"),
    ({"components": ["../missing"]}, r"spec\.components\[0\]: '\.\./missing' not found"),
    ({"components": [["../c"]]}, r"spec\.components\[0\]: must be a string"),
    ({"buildMetadata": ["origins"]}, r"spec\.buildMetadata\[0\]: 'origins' is not one of"),
    ({"ignoreMissingComponents": "yes"}, r"spec\.ignoreMissingComponents: must be true or false"),
])
def test_bad_fields_are_refused_naming_the_field_and_nothing_is_written(
        tmp_path: Path, spec: dict[str, Any], message: str) -> None:
    root = tree(tmp_path / "repo", {"deploy/web.yaml": deployment("web")})
    assert needs_generator(spec) or "ignoreMissingComponents" in spec
    with pytest.raises(GenerateError, match=message):
        generate(root, root / "deploy", spec)
    assert not (root / "deploy" / "kustomization.yaml").exists()


def test_several_bad_fields_are_told_at_once(tmp_path: Path) -> None:
    root = tree(tmp_path / "repo", {"deploy/web.yaml": deployment("web")})
    with pytest.raises(GenerateError) as err:
        generate(root, root / "deploy", {"images": [{}], "patches": [{"patch": ""}], "namePrefix": []})
    assert str(err.value).split("; ") == [
        "spec.namePrefix: must be a string, got a list",
        "spec.patches[0].patch: must not be empty",
        "spec.images[0].name: is required (the image name to replace, without its tag)",
    ]


def test_bad_common_metadata_is_refused_naming_the_field() -> None:
    with pytest.raises(GenerateError, match=r"spec\.commonMetadata\.labels\.replicas: must be a string, got a number"):
        apply_common_metadata([], {"labels": {"replicas": 3}})
    with pytest.raises(GenerateError, match=r"spec\.commonMetadata: unknown field 'label'"):
        apply_common_metadata([], {"label": {"a": "b"}})


def test_a_malformed_existing_kustomization_is_refused_naming_the_file(tmp_path: Path) -> None:
    root = tree(tmp_path / "repo", {"deploy/kustomization.yaml": "resources: [web.yaml]\nimages: nginx\n",
                                    "deploy/web.yaml": deployment("web")})
    with pytest.raises(GenerateError, match=r"^deploy/kustomization\.yaml: images: must be a list"):
        generate(root, root / "deploy", {"images": [{"name": "nginx", "newTag": "1"}]})
    (root / "deploy" / "kustomization.yaml").write_text("resources: [web.yaml]\nnamePrefix: on\n")
    with pytest.raises(GenerateError, match=r"^deploy/kustomization\.yaml: namePrefix: must be a string, "
                                            r"got a boolean"):
        generate(root, root / "deploy", {})


def test_a_component_outside_the_repository_is_refused(tmp_path: Path) -> None:
    root = tree(tmp_path / "repo", {"deploy/web.yaml": deployment("web")})
    tree(tmp_path / "outside", {"kustomization.yaml": "apiVersion: kustomize.config.k8s.io/v1alpha1\n"
                                                      "kind: Component\ncommonLabels: {stolen: 'true'}\n"})
    with pytest.raises(GenerateError, match=r"^spec\.components\[0\]: '\.\./\.\./outside' points outside the "
                                            r"repository"):
        generate(root, root / "deploy", {"components": ["../../outside"]})
    # a symlink inside the repository does not make it inside
    os.symlink(tmp_path / "outside", root / "linked")
    with pytest.raises(GenerateError, match=r"spec\.components\[0\]: '\.\./linked' points outside"):
        generate(root, root / "deploy", {"components": ["../linked"]})
    assert not (root / "deploy" / "kustomization.yaml").exists()
    # Flux's secure filesystem reports it as missing: ignoreMissingComponents leaves it out.
    generate(root, root / "deploy", {"components": ["../../outside"], "ignoreMissingComponents": True})
    assert "components" not in kustomization(root / "deploy")
    assert "stolen" not in str(build(root / "deploy"))


def test_nothing_outside_the_repository_is_read(tmp_path: Path) -> None:
    root = tree(tmp_path / "repo", {"deploy/web.yaml": deployment("web")})
    tree(tmp_path / "outside", {"cm.yaml": configmap("host")})
    with pytest.raises(GenerateError, match=r"^spec\.path: .* points outside the repository"):
        generate(root, tmp_path / "outside", {})
    with pytest.raises(GenerateError, match=r"^spec\.path: .* points outside the repository"):
        generate(root, Path("../outside"), {})
    os.symlink(tmp_path / "outside" / "cm.yaml", root / "deploy" / "host.yaml")
    with pytest.raises(GenerateError, match=r"^deploy/host\.yaml: is a symlink to outside the repository"):
        generate(root, root / "deploy", {})
    os.unlink(root / "deploy" / "host.yaml")
    # a symlink within the repository is read (as the checkout's other roads do)
    tree(root, {"common/cm.yaml": configmap("common")})
    os.symlink("../common/cm.yaml", root / "deploy" / "common.yaml")
    generate(root, Path("deploy"), {})
    assert sorted(by_name(build(root / "deploy"))) == ["ConfigMap/common", "Deployment/web"]


def test_needs_generator_is_true_for_the_fields_kustomize_applies() -> None:
    assert not needs_generator({})
    assert not needs_generator({"path": "./deploy", "prune": True, "interval": "5m"})
    assert not needs_generator({"commonMetadata": {"labels": {"a": "b"}}, "ignoreMissingComponents": True})
    assert not needs_generator({"patches": [], "images": [], "components": [], "targetNamespace": None})
    for field, value in [("targetNamespace", "shop"), ("namePrefix", "p-"), ("nameSuffix", "-s"),
                         ("patches", [{"patch": SMP}]), ("images", [{"name": "nginx"}]), ("components", ["../c"]),
                         ("buildMetadata", ["originAnnotations"]), ("patches", "not a list")]:
        assert needs_generator({field: value}), field
