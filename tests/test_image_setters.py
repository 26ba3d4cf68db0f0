"""Image automation markers, as Flux writes them, set the marked value and not one byte more.

A manifest marks the scalars Flux's image-automation-controller may update with a JSON line
comment naming an ImagePolicy:

    image: ghcr.io/acme/web:1.4.2 # {"$imagepolicy": "flux-system:web"}

`apply_setters` takes the file's text and each policy's latest image and returns the new text,
the changes, and the problems: markers that name no policy, that are not Flux's JSON, or that sit
where Flux sets nothing. Every expected text below is the input with the value's characters
replaced, and nothing else: comments, quoting, indentation and line endings stay as written.
"""

from __future__ import annotations

import re
import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from herald.yamlsrc import load_documents
from reconciler.images import setters
from reconciler.images.setters import (
    Change,
    Marker,
    PolicyValue,
    Problem,
    apply_setters,
    marker_problems,
    markers,
)

WEB = PolicyValue("ghcr.io/acme/web", "1.5.0")
DIGEST = "sha256:6129bb944cada32b4662eafd13fd9904d34c77286bf2ec4523eaedb711757cb0"


def yaml_text(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def replaced(text: str, old: str, new: str, count: int = 1) -> str:
    """`text` with exactly `count` occurrences of `old` turned into `new`: the expected edit."""
    assert text.count(old) == count, f"{old!r} must occur {count} time(s) in the test's input"
    return text.replace(old, new)


def data(text: str) -> list[object]:
    return [doc.data for doc in load_documents(text, "t.yaml")]


# --- The markers Flux documents ---------------------------------------------------------------


DEPLOYMENT = yaml_text("""
    apiVersion: apps/v1
    kind: Deployment
    metadata:
      name: podinfo
      namespace: apps
      labels:
        app: podinfo
    spec:
      minReadySeconds: 3
      revisionHistoryLimit: 5
      progressDeadlineSeconds: 60
      strategy:
        rollingUpdate:
          maxUnavailable: 0
        type: RollingUpdate
      selector:
        matchLabels:
          app: podinfo
      template:
        metadata:
          annotations:
            prometheus.io/scrape: "true"
            prometheus.io/port: "9797"
          labels:
            app: podinfo
        spec:
          containers:
          - name: podinfod
            image: ghcr.io/stefanprodan/podinfo:6.3.0 # {"$imagepolicy": "flux-system:podinfo"}
            imagePullPolicy: IfNotPresent
            ports:
            - name: http
              containerPort: 9898
              protocol: TCP
            command:
            - ./podinfo
            - --port=9898
            - --level=info
""")


def test_a_deployment_image_follows_its_policy() -> None:
    """The plain marker sets the whole `name:tag`; the rest of the Deployment is untouched, the
    unindented container list included (kyaml would have re-indented it)."""
    edit = apply_setters(DEPLOYMENT, {"flux-system:podinfo": PolicyValue("ghcr.io/stefanprodan/podinfo", "6.5.4")})

    assert edit.text == replaced(DEPLOYMENT, "podinfo:6.3.0 #", "podinfo:6.5.4 #")
    assert edit.changes == (Change(29, "flux-system:podinfo", "image", "ghcr.io/stefanprodan/podinfo:6.3.0",
                                   "ghcr.io/stefanprodan/podinfo:6.5.4"),)
    assert edit.problems == ()


def test_digest_reflection_pins_the_image_as_name_tag_at_digest() -> None:
    """With the policy's digestReflectionPolicy on, its latest image carries a digest, and the
    whole-image marker writes `name:tag@digest`, as `ImageRef.String()` does in Flux."""
    edit = apply_setters(DEPLOYMENT, {"flux-system:podinfo": PolicyValue("ghcr.io/stefanprodan/podinfo", "6.5.4", DIGEST)})

    assert edit.text == replaced(DEPLOYMENT, "podinfo:6.3.0 #", f"podinfo:6.5.4@{DIGEST} #")
    assert edit.changes[0].new == f"ghcr.io/stefanprodan/podinfo:6.5.4@{DIGEST}"


HELMRELEASE = yaml_text("""
    apiVersion: helm.toolkit.fluxcd.io/v2
    kind: HelmRelease
    metadata:
      name: my-app
      namespace: default
    spec:
      values:
        image:
          repository: ghcr.io/my-org/my-app # {"$imagepolicy": "flux-system:my-policy:name"}
          tag: 4.0.6 # {"$imagepolicy": "flux-system:my-policy:tag"}
          digest: sha256:0000000000000000000000000000000000000000000000000000000000000000 # {"$imagepolicy": "flux-system:my-policy:digest"}
""")


def test_tag_name_and_digest_markers_each_set_their_part() -> None:
    """A chart that takes the image in parts gets one marker per part: `:name`, `:tag`, `:digest`."""
    value = PolicyValue("ghcr.io/my-org/my-app-v2", "4.1.0", DIGEST)
    edit = apply_setters(HELMRELEASE, {"flux-system:my-policy": value})

    expected = replaced(HELMRELEASE, "my-org/my-app #", "my-org/my-app-v2 #")
    expected = replaced(expected, "tag: 4.0.6", "tag: 4.1.0")
    expected = replaced(expected, "sha256:" + "0" * 64, DIGEST)
    assert edit.text == expected
    assert [(c.line, c.field, c.new) for c in edit.changes] == [
        (9, "name", "ghcr.io/my-org/my-app-v2"), (10, "tag", "4.1.0"), (11, "digest", DIGEST)]
    assert edit.problems == ()


def test_a_tag_only_marker_leaves_the_name_alone() -> None:
    text = "image:\n  repository: docker.io/library/nginx\n  tag: 1.25.3 # {\"$imagepolicy\": \"web:nginx:tag\"}\n"
    edit = apply_setters(text, {"web:nginx": PolicyValue("docker.io/library/nginx", "1.27.0")})

    assert edit.text == replaced(text, "1.25.3", "1.27.0")


def test_a_digest_marker_needs_a_policy_that_reflects_digests() -> None:
    """Flux would write an empty digest; Herald leaves the field and says why."""
    edit = apply_setters(HELMRELEASE, {"flux-system:my-policy": PolicyValue("ghcr.io/my-org/my-app", "4.0.6")})

    assert edit.text == HELMRELEASE
    assert edit.changes == ()
    assert [p.line for p in edit.problems] == [11]
    assert "digestReflectionPolicy" in edit.problems[0].message


KUSTOMIZATION = yaml_text("""
    # Images are pinned here, not in the base.
    apiVersion: kustomize.config.k8s.io/v1beta1
    kind: Kustomization
    resources:
      - ../../base/web
    images:
      - name: web
        newName: ghcr.io/acme/web # {"$imagepolicy": "flux-system:web:name"}
        newTag: 1.4.2 # {"$imagepolicy": "flux-system:web:tag"}
        digest: sha256:1111111111111111111111111111111111111111111111111111111111111111 # {"$imagepolicy": "flux-system:web:digest"}
    patches:
      - patch: |
          - op: replace
            path: /spec/replicas
            value: 3 # {"$imagepolicy": "flux-system:web"} is only text inside a block scalar
        target:
          kind: Deployment
""")


def test_a_kustomization_pins_new_name_new_tag_and_digest() -> None:
    """kustomization.yaml `images:` entries carry the markers on newName, newTag and digest; the
    marker-looking text inside the patch's block scalar is content, not a comment."""
    value = PolicyValue("ghcr.io/acme/web", "1.5.0", DIGEST)
    edit = apply_setters(KUSTOMIZATION, {"flux-system:web": value}, path="clusters/prod/kustomization.yaml")

    expected = replaced(KUSTOMIZATION, "newTag: 1.4.2", "newTag: 1.5.0")
    expected = replaced(expected, "sha256:" + "1" * 64, DIGEST)
    assert edit.text == expected
    assert [(c.field, c.old, c.new) for c in edit.changes] == [("tag", "1.4.2", "1.5.0"),
                                                              ("digest", "sha256:" + "1" * 64, DIGEST)]
    assert edit.problems == ()


def test_a_file_named_kustomization_is_read_too() -> None:
    """Flux reads `*.yaml`, `*.yml` and `Kustomization`; other files keep their markers and say so."""
    value = {"flux-system:web": PolicyValue("ghcr.io/acme/web", "1.5.0")}

    assert apply_setters(KUSTOMIZATION, value, path="overlays/prod/Kustomization").changes
    for path in ("values.json", "README.md", "deploy.YAML"):
        edit = apply_setters(KUSTOMIZATION, value, path=path)
        assert edit.text == KUSTOMIZATION
        assert [p.line for p in edit.problems] == [8]
        assert "Flux looks for markers only in" in edit.problems[0].message


# --- Only the value's characters change -------------------------------------------------------


AWKWARD = (
    "%YAML 1.2\r\n"
    "---\r\n"
    "# first document: a Deployment, indented oddly\r\n"
    "apiVersion: apps/v1\r\n"
    "kind:   Deployment\r\n"
    "\r\n"
    "spec:\r\n"
    "   template:\r\n"
    "         spec:\r\n"
    "            containers:\r\n"
    "            -   name: web\r\n"
    "                image: 'ghcr.io/acme/web:1.4.2'   #\t{\"$imagepolicy\": \"flux-system:web\"}\t\r\n"
    "\r\n"
    "\r\n"
    "            -   name: worker   # a\tworker\r\n"
    "                image: \"ghcr.io/acme/worker:0.9.0\" # {\"$imagepolicy\": \"flux-system:worker\"}\r\n"
    "---\r\n"
    "# second document: tag only, plain and with an anchor\r\n"
    "values:\r\n"
    "  tag: &tag v2024.01.1 #{\"$imagepolicy\":\"flux-system:web:tag\"}\r\n"
    "  sameTag: *tag\r\n"
    "  untouched: ghcr.io/acme/web:1.4.2 # no marker here\r\n"
    "..."
)


def test_only_the_marked_values_change_in_an_awkward_file() -> None:
    """A `%YAML 1.2` directive, `---` and `...`, CRLF line endings, blank lines, odd indentation,
    a tab in a comment, single and double quotes, an anchor and no newline at the end: all of it
    comes back byte for byte, quotes included, with only the three values replaced."""
    values = {"flux-system:web": PolicyValue("ghcr.io/acme/web", "1.5.0"),
              "flux-system:worker": PolicyValue("ghcr.io/acme/worker", "1.0.0")}
    edit = apply_setters(AWKWARD, values)

    expected = replaced(AWKWARD, "'ghcr.io/acme/web:1.4.2'", "'ghcr.io/acme/web:1.5.0'")
    expected = replaced(expected, '"ghcr.io/acme/worker:0.9.0"', '"ghcr.io/acme/worker:1.0.0"')
    expected = replaced(expected, "&tag v2024.01.1 #", "&tag 1.5.0 #")
    assert edit.text == expected
    assert [(c.line, c.policy, c.field) for c in edit.changes] == [
        (12, "flux-system:web", "image"), (16, "flux-system:worker", "image"), (20, "flux-system:web", "tag")]
    assert edit.problems == ()
    # The alias follows its anchor, as in Flux, where the alias is the same node.
    assert data(edit.text)[1]["values"]["sameTag"] == "1.5.0"


def test_a_byte_order_mark_and_crlf_stay() -> None:
    text = "\ufeffimage: ghcr.io/acme/web:1.4.2 # {\"$imagepolicy\": \"flux-system:web\"}\r\n"
    edit = apply_setters(text, {"flux-system:web": WEB})

    assert edit.text == replaced(text, "1.4.2", "1.5.0")


def test_nothing_changes_when_the_value_is_already_current() -> None:
    """No Change, no problem, the same text: Flux makes no commit either."""
    edit = apply_setters(DEPLOYMENT, {"flux-system:podinfo": PolicyValue("ghcr.io/stefanprodan/podinfo", "6.3.0")})

    assert (edit.text, edit.changes, edit.problems) == (DEPLOYMENT, (), ())


def test_a_quoted_value_equal_to_the_new_one_is_current_too() -> None:
    text = "tag: \"1.5.0\" # {\"$imagepolicy\": \"flux-system:web:tag\"}\n"

    assert apply_setters(text, {"flux-system:web": WEB}).changes == ()


@pytest.mark.parametrize(("tag", "written"), [
    ("1.5.0", "1.5.0"),             # the usual: stays plain
    ("v1.27-alpha", "v1.27-alpha"),
    ("1.0", '"1.0"'),               # a float, unquoted
    ("10", '"10"'),                 # an integer
    ("1e3", '"1e3"'),               # a float to go-yaml v3, a string to YAML 1.1: quoted all the same
    ("on", '"on"'),                 # a YAML 1.1 boolean, which kyaml quotes
    ("y", '"y"'),                   # a go-yaml v2 boolean, which kyaml quotes
    ("true", '"true"'),
    ("null", '"null"'),
    ("2024-01-01", '"2024-01-01"'),  # a timestamp
    ("12:30", '"12:30"'),           # sexagesimal in YAML 1.1
    ("a: b", '"a: b"'),             # would be a mapping
    ("x #y", '"x #y"'),             # would end in a comment
    ("-", '"-"'),
    ('"hi"\\', '"\\"hi\\"\\\\"'),  # would be a quoted scalar: quoted, with escapes
])
def test_a_plain_value_is_quoted_when_plain_would_read_otherwise(tag: str, written: str) -> None:
    """Plain stays plain unless the new value would then read as a number, a boolean, null, a
    timestamp or another structure; then it is double-quoted, as kyaml does when Flux sets it."""
    text = "tag: 1.4.2 # {\"$imagepolicy\": \"flux-system:web:tag\"}\n"
    edit = apply_setters(text, {"flux-system:web": PolicyValue("ghcr.io/acme/web", tag)})

    assert edit.text == replaced(text, "1.4.2", written)
    assert data(edit.text) == [{"tag": tag}]


def test_a_single_quoted_value_stays_single_quoted_with_its_quotes_doubled() -> None:
    text = "tag: '1.4.2' # {\"$imagepolicy\": \"flux-system:web:tag\"}\n"
    edit = apply_setters(text, {"flux-system:web": PolicyValue("ghcr.io/acme/web", "it's")})

    assert edit.text == replaced(text, "'1.4.2'", "'it''s'")


def test_a_scalar_in_a_flow_mapping_is_set_and_quoted_by_flow_rules() -> None:
    """Inside `{…}` a comma ends a plain scalar, so a value with one is quoted there."""
    text = yaml_text("""
        image: {
          repository: ghcr.io/acme/web,
          tag: 1.4.2 # {"$imagepolicy": "flux-system:web:tag"}
        }
    """)
    assert apply_setters(text, {"flux-system:web": WEB}).text == replaced(text, "1.4.2", "1.5.0")
    edit = apply_setters(text, {"flux-system:web": PolicyValue("ghcr.io/acme/web", "1,5")})
    assert edit.text == replaced(text, "1.4.2", '"1,5"')
    assert data(edit.text) == [{"image": {"repository": "ghcr.io/acme/web", "tag": "1,5"}}]


@settings(max_examples=300, deadline=None)
@given(tag=st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12),
       quote=st.sampled_from(["", "'", '"']))
def test_any_value_reads_back_as_itself_and_nothing_else_moves(tag: str, quote: str) -> None:
    """Whatever the value (tabs, colons, quotes, brackets, line breaks, control characters), in
    a block mapping, a flow mapping or a list, the new file reads as the old one with that value,
    and the characters around each value are those of the old file."""
    old = f"{quote}1.4.2{quote}"
    marker = '# {"$imagepolicy": "ns:p:tag"}'
    text = (f"a: [1, 2] # keep\nimage:\n  tag: {old} {marker}\nb: x\n"
            f"flow: {{k: {old} {marker}\n}}\n"
            f"list:\n- {old} {marker}\n")
    edit = apply_setters(text, {"ns:p": PolicyValue("r/img", tag)})

    if tag == "1.4.2":
        assert edit == setters.Edit(text, (), ())
        return
    assert len(edit.changes) == 3 and edit.problems == ()
    assert data(edit.text) == [{"a": [1, 2], "image": {"tag": tag}, "b": "x", "flow": {"k": tag}, "list": [tag]}]
    # Around the three values, every character is the old file's. A quoted value stays quoted,
    # with the same quote unless single quotes cannot hold it (a control character, a line break).
    around = re.fullmatch("(.+?)".join(re.escape(piece) for piece in text.split(old)), edit.text, re.DOTALL)
    assert around is not None
    if quote:
        # YAML's printable characters (YAML 1.2 §5.1) that are no line break.
        single_quotable = re.fullmatch("[\t\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]+", tag)
        expected_quote = quote if quote == '"' or single_quotable else '"'
        assert all(value[0] == value[-1] == expected_quote for value in around.groups())


# --- Several markers --------------------------------------------------------------------------


TWO_CONTAINERS = yaml_text("""
    apiVersion: apps/v1
    kind: Deployment
    metadata:
      name: shop
    spec:
      template:
        spec:
          initContainers:
            - name: migrate
              image: ghcr.io/acme/shop:2.0.0 # {"$imagepolicy": "apps:shop"}
          containers:
            - name: shop
              image: ghcr.io/acme/shop:2.0.0 # {"$imagepolicy": "apps:shop"}
            - name: proxy
              image: docker.io/envoyproxy/envoy:v1.29.0 # {"$imagepolicy": "apps:envoy"}
""")


def test_two_policies_in_one_file() -> None:
    values = {"apps:shop": PolicyValue("ghcr.io/acme/shop", "2.0.0"),
              "apps:envoy": PolicyValue("docker.io/envoyproxy/envoy", "v1.30.1")}
    edit = apply_setters(TWO_CONTAINERS, values)

    assert edit.text == replaced(TWO_CONTAINERS, "envoy:v1.29.0", "envoy:v1.30.1")
    assert [(c.line, c.policy) for c in edit.changes] == [(15, "apps:envoy")]


def test_the_same_policy_twice_sets_both_values() -> None:
    values = {"apps:shop": PolicyValue("ghcr.io/acme/shop", "2.1.0"),
              "apps:envoy": PolicyValue("docker.io/envoyproxy/envoy", "v1.29.0")}
    edit = apply_setters(TWO_CONTAINERS, values)

    assert edit.text == replaced(TWO_CONTAINERS, "shop:2.0.0", "shop:2.1.0", count=2)
    assert [(c.line, c.policy, c.old, c.new) for c in edit.changes] == [
        (10, "apps:shop", "ghcr.io/acme/shop:2.0.0", "ghcr.io/acme/shop:2.1.0"),
        (13, "apps:shop", "ghcr.io/acme/shop:2.0.0", "ghcr.io/acme/shop:2.1.0")]


def test_good_markers_apply_while_bad_ones_are_reported() -> None:
    """As in Flux, a marker that cannot apply does not stop the others."""
    edit = apply_setters(TWO_CONTAINERS, {"apps:shop": PolicyValue("ghcr.io/acme/shop", "2.1.0")})

    assert edit.text == replaced(TWO_CONTAINERS, "shop:2.0.0", "shop:2.1.0", count=2)
    assert edit.problems == (Problem(15, "marker names ImagePolicy apps:envoy, which does not exist"),)


# --- Problems: reported with their line, the text unchanged -----------------------------------


def one_marker(comment: str) -> str:
    return f"spec:\n  image: ghcr.io/acme/web:1.4.2 {comment}\n"


@pytest.mark.parametrize(("values", "message"), [
    ({}, "marker names ImagePolicy flux-system:web, which does not exist"),
    ({"flux-system:web": None}, "ImagePolicy flux-system:web has no latest image yet, so its marker changes nothing"),
    ({"flux-system:web": PolicyValue("ghcr.io/acme/web", "")}, "ImagePolicy flux-system:web has no tag"),
])
def test_a_policy_that_is_missing_or_has_no_value(values: dict, message: str) -> None:
    text = one_marker('# {"$imagepolicy": "flux-system:web"}')
    edit = apply_setters(text, values)

    assert (edit.text, edit.changes, edit.problems) == (text, (), (Problem(2, message),))


@pytest.mark.parametrize(("comment", "message"), [
    ('# {"$imagepolicy": "flux-system:web"} extra', "trailing text after the marker's JSON"),
    ('# {"$imagepolicy": "flux-system:web",}', "the marker is not valid JSON"),
    ("# {'$imagepolicy': 'flux-system:web'}", "the marker is not valid JSON"),
    ('# image: {"$imagepolicy": "flux-system:web"}', "text before the marker's JSON"),
    ('# {"$imagepolicy": "web"}', 'marker names ImagePolicy "web" without its namespace'),
    ('# {"$imagepolicy": "flux-system:web:version"}', 'marker asks for "version"'),
    ('# {"$imagepolicy": "flux-system:"}', "Flux expects \"namespace:name\""),
    ('# {"$imagepolicy": ""}', 'the marker has no "$imagepolicy" key'),
    ('# {"$ImagePolicy": "flux-system:web"}', 'the marker has no "$imagepolicy" key'),
    ('# {"$imagepolicy": "flux-system:web", "replicas": 3}', "values are all strings"),
])
def test_a_marker_flux_would_ignore_is_a_problem(comment: str, message: str) -> None:
    """Flux skips these without a word; Herald says which line and why."""
    text = one_marker(comment)
    edit = apply_setters(text, {"flux-system:web": WEB})

    assert (edit.text, edit.changes) == (text, ())
    assert [p.line for p in edit.problems] == [2]
    assert message in edit.problems[0].message


def test_prose_that_mentions_markers_is_no_marker() -> None:
    text = "# Images below are bumped by Flux through $imagepolicy markers.\nimage: ghcr.io/acme/web:1.4.2\n"

    assert apply_setters(text, {}) == setters.Edit(text, (), ())


def test_an_unparsable_file_is_left_alone() -> None:
    text = 'spec:\n  image: ghcr.io/acme/web:1.4.2 # {"$imagepolicy": "flux-system:web"}\n  - oops\n'
    edit = apply_setters(text, {"flux-system:web": WEB})

    assert (edit.text, edit.changes) == (text, ())
    [problem] = edit.problems
    assert problem.line == 3
    assert problem.message.startswith("the file does not parse as YAML: ")


def test_a_file_without_markers_is_not_even_parsed() -> None:
    """Flux reads only files that contain a marker, so a Helm template is no problem."""
    template = "image: {{ .Values.image }}:{{ .Values.tag }}\n{{- if .Values.x }}\n"

    assert apply_setters(template, {}) == setters.Edit(template, (), ())


PLACEMENTS = {
    "follows a flow mapping": 'image: {name: ghcr.io/acme/web, tag: 1.4.2} # {"$imagepolicy": "flux-system:web"}\n',
    "follows a flow sequence": 'args: [ghcr.io/acme/web:1.4.2] # {"$imagepolicy": "flux-system:web"}\n',
    "follows a key with no value on its line":
        'image: # {"$imagepolicy": "flux-system:web"}\n    ghcr.io/acme/web:1.4.2\n',
    "follows a mapping key": '? image # {"$imagepolicy": "flux-system:web"}\n  : ghcr.io/acme/web:1.4.2\n',
    "follows an alias (*img)": 'image: *img # {"$imagepolicy": "flux-system:web"}\n',
    "on a block scalar (|)": 'image: | # {"$imagepolicy": "flux-system:web"}\n    ghcr.io/acme/web:1.4.2\n',
    "a marker on a line of its own is not applied":
        '# {"$imagepolicy": "flux-system:web"}\n  image: ghcr.io/acme/web:1.4.2\n',
}


@pytest.mark.parametrize(("reason", "lines"), PLACEMENTS.items(), ids=list(PLACEMENTS))
def test_a_marker_where_flux_sets_no_scalar_is_a_problem(reason: str, lines: str) -> None:
    """Flux sets scalar values followed by their marker; a marker anywhere else sets nothing."""
    text = f"base: &img ghcr.io/acme/web:1.4.2\nspec:\n  {lines}"
    edit = apply_setters(text, {"flux-system:web": WEB})

    assert (edit.text, edit.changes) == (text, ())
    assert [p.line for p in edit.problems] == [3]
    assert reason in edit.problems[0].message


def test_the_edit_is_refused_when_the_new_text_would_not_read_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """The last safety net: after splicing, the file is read again. Were the value ever written
    wrong (here, a renderer that forgets to quote), the file stays as it was, with a Problem."""
    monkeypatch.setattr(setters, "_render", lambda value, style, flow: value)
    text = one_marker('# {"$imagepolicy": "flux-system:web:tag"}')
    edit = apply_setters(text, {"flux-system:web": PolicyValue("ghcr.io/acme/web", "a: b")})

    assert (edit.text, edit.changes) == (text, ())
    assert [p.line for p in edit.problems] == [2]
    assert "left unchanged" in edit.problems[0].message


# --- For `herald validate` --------------------------------------------------------------------


def test_markers_lists_the_markers_and_marker_problems_the_rest() -> None:
    text = HELMRELEASE + '    broken: x # {"$imagepolicy": "flux-system:my-policy"} trailing\n'

    assert markers(text, "release.yaml") == [Marker(9, "flux-system:my-policy", "name"),
                                             Marker(10, "flux-system:my-policy", "tag"),
                                             Marker(11, "flux-system:my-policy", "digest")]
    assert [(p.line, p.message) for p in marker_problems(text, "release.yaml")] == [
        (12, "trailing text after the marker's JSON: Flux ignores such a marker")]
    assert markers(DEPLOYMENT) == [Marker(29, "flux-system:podinfo", "image")]
    assert marker_problems(DEPLOYMENT) == []
    assert markers("a: [\n") == [] and marker_problems("a: [\n") == []  # no marker: not parsed
