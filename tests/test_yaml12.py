"""Manifests are read as kustomize reads them (go-yaml v3, the YAML 1.2 core schema), not with
PyYAML's YAML 1.1 rules, in every path: plain files, kustomize's output, and Herald's own
configuration.

Flux builds every Kustomization with kustomize, so what reaches the cluster is what go-yaml made
of the text, sent as JSON. The expected values below were measured with `kubectl kustomize`
(kustomize v5.5), and the scenarios that can compare against it do so on the spot.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from herald import config
from herald.bus import open_bus
from herald.cli import main
from herald.messages import ReconcileRequest
from herald.yamlsrc import Timestamp, YAMLSyntaxError, load_documents
from reconciler.render import RenderError, render
from reconciler.worker import Reconciler
from tests.fixtures_herald import Repo, write_config


def value(text: str) -> object:
    [doc] = load_documents(f"v: {text}\n", "v.yaml")
    return doc.data["v"]


@pytest.mark.parametrize(("text", "expected"), [
    # Booleans are true and false in three spellings; YAML 1.1's yes/no/on/off/y/n are strings.
    ("true", True), ("True", True), ("TRUE", True), ("False", False),
    ("on", "on"), ("off", "off"), ("yes", "yes"), ("No", "No"), ("y", "y"), ("tRue", "tRue"),
    # Null.
    ("", None), ("~", None), ("null", None), ("Null", None), ("NULL", None), ("nUll", "nUll"),
    # No sexagesimal numbers: a clock stays a clock.
    ("12:30", "12:30"), ("1:30:00", "1:30:00"),
    # Integers as Go's ParseInt(text, 0, 64) without underscores: 012 is still octal in go-yaml.
    ("42", 42), ("+12", 12), ("-7", -7), ("0", 0), ("012", 10), ("0o17", 15), ("0O17", 15),
    ("0x1F", 31), ("-0x1F", -31), ("0b101", 5), ("1_000", 1000), ("18446744073709551615", 2**64 - 1),
    # Floats; an integer past 64 bits, and 09 (no octal), become floats; an overflow stays text.
    ("1.5", 1.5), ("1.10", 1.1), ("1e3", 1000.0), (".5", 0.5), ("+.5", 0.5), ("1.", 1.0), ("09", 9.0),
    ("99999999999999999999", 1e20), ("-9223372036854775809", -9.223372036854776e18), ("1e400", "1e400"),
    # Strings YAML 1.1 would have read otherwise, or that only look numeric.
    ("=", "="), ("0x1FFFFFFFFFFFFFFFF", "0x1FFFFFFFFFFFFFFFF"), ("0x1p-2", "0x1p-2"), ("1e", "1e"),
    ("+", "+"), (".", "."), ("0b", "0b"), ("1.27-alpha", "1.27-alpha"), ("<<", "<<"),
    # Not go-yaml timestamps: lower-case z, a month 13, a 29 February out of a leap year, hour 24.
    ("2024-01-01t10:00:00z", "2024-01-01t10:00:00z"), ("2024-13-01", "2024-13-01"),
    ("2023-02-29", "2023-02-29"), ("2024-01-01T24:00:00Z", "2024-01-01T24:00:00Z"),
])
def test_plain_scalars_resolve_as_go_yaml_v3_does(text: str, expected: object) -> None:
    """PyYAML's YAML 1.1 rules read `on` as True, `12:30` as 750 and `=` as a tag it cannot build;
    go-yaml, and so the cluster, has "on", "12:30" and "="."""
    got = value(text)
    assert (got, type(got)) == (expected, type(expected))


@pytest.mark.parametrize(("text", "instant"), [
    ("2024-01-01", "2024-01-01T00:00:00Z"),
    ("2024-1-2", "2024-01-02T00:00:00Z"),
    ("2024-01-01T10:00:00Z", "2024-01-01T10:00:00Z"),
    ("2024-01-01T10:00:00+02:00", "2024-01-01T10:00:00+02:00"),
    ("2024-01-01T10:00:00-00:00", "2024-01-01T10:00:00Z"),
    ("2024-01-01 10:00:00.500", "2024-01-01T10:00:00.5Z"),
    ("2024-01-01T10:00:00,1234567891Z", "2024-01-01T10:00:00.123456789Z"),
])
def test_a_timestamp_stays_its_text_and_knows_what_kustomize_writes(text: str, instant: str) -> None:
    """A date is a string for Herald's own configuration; in a manifest it becomes the RFC 3339
    text kustomize writes for it, which is what Flux applies."""
    got = value(text)
    assert isinstance(got, Timestamp) and got == text and got.instant == instant
    assert json.dumps(got) == json.dumps(text)  # never a datetime: JSON carries it


CORPUS = """\
    apiVersion: example.com/v1
    kind: Thing
    metadata:
      name: corpus
      labels: {app: web, version: "1.10"}
      annotations:
        build: 012
        enabled: on
        when: 2024-01-01
        ratio: 1.50
        empty:
    defaults: &defaults {replicas: 2, paused: off}
    spec:
      clock: 12:30
      enabled: on
      answer: yes
      date: 2024-01-01
      stamp: 2024-01-01 10:00:00.500
      zoned: 2024-01-01T10:00:00+02:00
      octal: 012
      nine: 09
      o: 0o17
      hex: 0x1F
      big: 99999999999999999999
      whole: 1.0
      exp: 1.5e3
      half: .5
      under: 1_000
      eq: =
      nulls: [~, null, Null, ]
      bools: [true, True, FALSE, tRue]
      words: [y, n, off, nUll, 1e, 0b, "012"]
      matchers: [{name: severity, matchType: "=", value: critical}]
      <<: *defaults
      overrides: &defaults {replicas: 3}
      again: *defaults
    """


def test_a_plain_folder_renders_exactly_as_kustomize_builds_the_same_file(tmp_path: Path) -> None:
    """The same file, read as plain YAML and built by `kubectl kustomize`, gives the same JSON:
    booleans, nulls, numbers, timestamps, annotations, merge keys and a twice-defined anchor
    included. Flux builds plain folders with kustomize, so this is what Flux applies."""
    for folder in ("plain", "built"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "thing.yaml").write_text(textwrap.dedent(CORPUS))
    (tmp_path / "built" / "kustomization.yaml").write_text("resources: [thing.yaml]\n")
    [plain] = render(tmp_path, "plain").manifests
    [built] = render(tmp_path, "built").manifests
    assert json.dumps(plain.obj, sort_keys=True) == json.dumps(built.obj, sort_keys=True)
    spec = plain.obj["spec"]
    assert (spec["clock"], spec["enabled"], spec["answer"], spec["octal"], spec["whole"]) == ("12:30", "on", "yes", 10, 1)
    assert (spec["date"], spec["stamp"]) == ("2024-01-01T00:00:00Z", "2024-01-01T10:00:00.5Z")
    assert (spec["replicas"], spec["paused"], spec["again"]) == (2, "off", {"replicas": 3})
    assert plain.obj["metadata"]["annotations"] == {"build": "012", "enabled": "on", "when": "2024-01-01",
                                                    "ratio": "1.50", "empty": ""}


def test_herald_validate_reads_flux_yaml_with_the_same_rules(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """Herald's configuration is Flux YAML, which Flux reads with go-yaml: `prune: yes` is the
    string "yes" there (the Kustomization CRD refuses it), so `herald validate` says so at its
    line instead of reading True. Durations still load."""
    cfg = tmp_path / "herald.yaml"
    cfg.write_text(textwrap.dedent("""\
        apiVersion: source.toolkit.fluxcd.io/v1
        kind: GitRepository
        metadata: {name: app, namespace: flux-system}
        spec: {url: "https://example.com/app.git", interval: 10m, ref: {branch: main}}
        ---
        apiVersion: kustomize.toolkit.fluxcd.io/v1
        kind: Kustomization
        metadata: {name: app, namespace: flux-system}
        spec:
          interval: 1h
          timeout: 1m30s
          path: ./deploy
          prune: yes
          sourceRef: {kind: GitRepository, name: app}
        """))
    assert main(["validate", "-c", str(cfg)]) == 1
    assert "herald.yaml:13: Kustomization flux-system/app: spec.prune: must be true or false, got str 'yes'" \
        in capsys.readouterr().out
    cfg.write_text(cfg.read_text().replace("prune: yes", "prune: true"))
    loaded = config.load([cfg])
    ks = loaded.kustomizations[("flux-system", "app")]
    assert (ks.interval, ks.timeout, ks.prune) == (3600, 90, True)


def test_an_anchor_defined_twice_is_read_as_yaml_1_2_reads_it() -> None:
    """YAML 1.2, go-yaml and kubectl let a later anchor replace an earlier one for the aliases
    after it; libyaml's composer refuses ("found duplicate anchor"). Lines are kept, and so are
    the documents before and after."""
    text = ("kind: A\n---\n"
            "first: &labels {app: web}\nuse1: *labels\n"
            "second: &labels {app: api}\nuse2: *labels\n---\nkind: B\n")
    first, second, third = load_documents(text, "f.yaml")
    assert (first.data, third.data, third.line) == ({"kind": "A"}, {"kind": "B"}, 8)
    assert second.data == {"first": {"app": "web"}, "use1": {"app": "web"},
                           "second": {"app": "api"}, "use2": {"app": "api"}}
    assert (second.line, second.data.line_of("second"), second.data["second"].line) == (3, 5, 5)


def test_an_anchor_defined_twice_then_a_syntax_error_names_the_error() -> None:
    """The second reading (for the anchor) must not cost the documents before an error, nor
    the error its line and wording."""
    text = "a: &x 1\nb: &x 2\nc: *x\n---\nd: [1\n"
    seen = []
    with pytest.raises(YAMLSyntaxError, match=r"^f\.yaml:6: invalid YAML: .*expected ',' or ']'"):
        for doc in load_documents(text, "f.yaml"):
            seen.append(doc.data)
    assert seen == [{"a": 1, "b": 2, "c": 2}]


@pytest.mark.parametrize(("text", "message"), [
    ("spec: {limit: .inf}", r"thing\.yaml:1: inf cannot be sent to Kubernetes: JSON has no NaN or infinity"),
    ("spec: {ports: {80: http}}", r"thing\.yaml:1: the key 80 is read as a number, not a string"),
    ("spec: {2024-01-01: x}", r"thing\.yaml:1: the key 2024-01-01 is read as a timestamp, not a string"),
    ("spec: {blob: !!binary aGVsbG8=}", r"thing\.yaml:1: a value of type bytes .* cannot be sent to Kubernetes"),
])
def test_what_json_cannot_carry_fails_the_render_instead_of_the_apply(tmp_path: Path, text: str,
                                                                      message: str) -> None:
    """kustomize refuses these too (Go's JSON has no infinity and no non-string keys); Herald
    names the file rather than sending invalid JSON or crashing on the inventory digest."""
    (tmp_path / "deploy").mkdir()
    (tmp_path / "deploy" / "thing.yaml").write_text(
        f"{text}\napiVersion: example.com/v1\nkind: Thing\nmetadata: {{name: t}}\n")
    with pytest.raises(RenderError, match=message):
        render(tmp_path, "deploy")


def test_a_manifest_with_a_date_and_a_clock_is_applied(tmp_path: Path, repo: Repo, kube_api, kubeconfig: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A date used to reach the inventory digest as a `datetime.date` and fail the reconcile
    (`Object of type date is not JSON serializable`), and `12:30`/`on` were applied as 750/True.
    The cluster gets what Flux would give it."""
    repo.commit({"deploy/settings.yaml": textwrap.dedent("""\
        apiVersion: v1
        kind: ConfigMap
        metadata: {name: settings, namespace: shop, annotations: {released: 2024-01-01}}
        data:
          clock: 12:30
          enabled: on
          date: 2024-01-01
        """)})
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    bus = open_bus(None, tmp_path / "state")
    try:
        rec = Reconciler(config.load([write_config(tmp_path / "herald.yaml", repo.url)]), bus, tmp_path / "state")
        [event] = rec.reconcile(ReconcileRequest(kind="GitRepository", name="app", namespace="flux-system")).events
    finally:
        bus.close()
    assert (event.severity, event.reason) == ("info", "ReconciliationSucceeded"), event.message
    live = kube_api.get_object("v1", "ConfigMap", "shop", "settings")
    assert live["data"] == {"clock": "12:30", "enabled": "on", "date": "2024-01-01T00:00:00Z"}
    assert live["metadata"]["annotations"]["released"] == "2024-01-01"

