"""Flux's `spec.postBuild` variable substitution, as the kustomize-controller does it.

Every expected expansion in the syntax tables was checked against fluxcd/pkg/envsubst itself
(its Go code, run on the same text and variables), quirks included: `${var-d}` is a syntax
error, `${var:+d}` is one more default, `${var#*}` trims one character, lengths count bytes.
The postBuild scenarios follow fluxcd/pkg kustomize/kustomize_varsub.go and its tests.
"""

from __future__ import annotations

import textwrap

import pytest
import yaml

from reconciler.substitute import (
    FLUX_DEFAULT_STRICT,
    SubstituteError,
    collect_variables,
    envsubst,
    substitute_always,
    substitute_document,
    substitution_disabled,
)

V = {"var": "abcdEFGH28ij", "path": "/home/bozo/ideas/thoughts.for.today", "file": "bash.string.txt",
     "s": "abcABC123ABCabc", "empty": "", "e": "héllo", "slash": "foo/bar/baz"}

SYNTAX = [
    # Plain text and plain expressions.
    ("text without expressions", "plain: text", "plain: text"),
    ("a variable", "${var}", "abcdEFGH28ij"),
    ("a variable inside text", "image: app:${var}-x", "image: app:abcdEFGH28ij-x"),
    ("an unset variable is empty", "[${nope}]", "[]"),
    ("a set empty variable is empty", "[${empty}]", "[]"),
    ("two expressions side by side", "${empty}${var}${empty}", "abcdEFGH28ij"),
    ("a name may hold digits and underscores", "${_v_1}", ""),
    # Defaults: := :- = all apply to an unset AND to an empty variable; :? and :+ are defaults too.
    ("':=' default for an unset variable", "${nope:=dev}", "dev"),
    ("':=' default for an empty variable", "${empty:=dev}", "dev"),
    ("':=' default not used when set", "${var:=dev}", "abcdEFGH28ij"),
    ("':-' default", "${nope:-dev}", "dev"),
    ("'=' default for an unset variable", "${nope=dev}", "dev"),
    ("'=' default for an empty variable too (unlike bash)", "${empty=dev}", "dev"),
    ("':?' is a default, not an error", "${nope:?fallback}", "fallback"),
    ("':+' is a default, not bash's alternate value", "${var:+other}", "abcdEFGH28ij"),
    ("':+' on an unset variable", "${nope:+other}", "other"),
    ("an empty default", "[${nope:=}]", "[]"),
    ("a default with colons and spaces", "${nope:=a: b c}", "a: b c"),
    ("a default is not assigned for later", "${nope:=x}/${nope}", "x/"),
    ("a nested default", "${nope:=${var}}", "abcdEFGH28ij"),
    ("a nested default with text around", "${nope=pre-${var,,}-post}", "pre-abcdefgh28ij-post"),
    ("nested defaults twice over", "${a:=${b:=${var^^}}}", "ABCDEFGH28IJ"),
    ("a '{' in a default ends at the first '}'", "${nope:={x}}", "{x}"),
    ("'$$' is not an escape inside a default", "${nope:=$$}", "$$"),
    # Length and case.
    ("length", "${#var}", "12"),
    ("length counts UTF-8 bytes", "${#e}", "6"),
    ("length of an unset variable", "${#nope}", "0"),
    ("upper first", "${var^}", "AbcdEFGH28ij"),
    ("upper all", "${var^^}", "ABCDEFGH28IJ"),
    ("lower first", "${s,}", "abcABC123ABCabc"),
    ("lower all", "${var,,}", "abcdefgh28ij"),
    ("upper all, non-ASCII", "${e^^}", "HÉLLO"),
    ("',^' and '^,' change nothing", "${var,^}${var^,}", "abcdEFGH28ijabcdEFGH28ij"),
    # Substrings (byte offsets).
    ("offset", "${path:11}", "ideas/thoughts.for.today"),
    ("offset and length", "${path:11:5}", "ideas"),
    ("':-3' is a default, not a negative offset", "${var:-3}", "abcdEFGH28ij"),
    ("a space before the offset: unreadable, the whole value", "${var: -3}", "abcdEFGH28ij"),
    ("a negative offset (nested) counts from the end", "${var:${n:=-3}}", "8ij"),
    ("a negative offset with a length", "${file:${n:=-3}:2}", "tx"),
    ("a negative offset past the start starts at 0", "${var:${n:=-99}:3}", "abc"),
    ("offset past the end is empty", "[${var:99}]", "[]"),
    ("length past the end is the rest", "${var:10:99}", "ij"),
    ("zero length", "[${var:3:0}]", "[]"),
    ("':+' is a default, so a signed offset must be nested", "${var:${p:=+01}:+02}", "bc"),
    ("an unreadable offset gives the whole value", "${var:x:2}", "abcdEFGH28ij"),
    ("an unreadable length gives the whole value", "${var:2:y}", "abcdEFGH28ij"),
    ("several colons before the length", "${var:1::2}", "bc"),
    ("offsets count bytes", "${e:3}", "llo"),
    ("a nested offset", "${var:${len:=2}:3}", "cdE"),
    # Trimming with glob patterns.
    ("shortest prefix", "${file#*.}", "string.txt"),
    ("longest prefix", "${file##*.}", "txt"),
    ("shortest suffix", "${file%.*}", "bash.string"),
    ("longest suffix", "${file%%.*}", "bash"),
    ("'*' matches '/' too", "${slash##*/}", "baz"),
    ("'#*' trims one character: Flux never tries the empty prefix", "${var#*}", "bcdEFGH28ij"),
    ("'%?' trims the last character", "${var%?}", "abcdEFGH28i"),
    ("a character class", "${var#[a-c]}", "bcdEFGH28ij"),
    ("a negated class", "${var#[^x]}", "bcdEFGH28ij"),
    ("no match leaves the value", "${var#zz}", "abcdEFGH28ij"),
    ("a malformed pattern leaves the value", "${var#[}", "abcdEFGH28ij"),
    ("a suffix class is reversed, so it is malformed", "${var%[a-z]}", "abcdEFGH28ij"),
    ("trimming an unset variable", "[${nope#a}]", "[]"),
    # Replacement (literal text, not patterns).
    ("replace first", "${s/abc/xyz}", "xyzABC123ABCabc"),
    ("replace all", "${s//abc/xyz}", "xyzABC123ABCxyz"),
    ("replace a prefix", "${s/#abc/XYZ}", "XYZABC123ABCabc"),
    ("replace a suffix", "${s/%abc/XYZ}", "abcABC123ABCXYZ"),
    ("replace with nothing", "${file/./}", "bashstring.txt"),
    ("delete all", "${file//./}", "bashstringtxt"),
    ("the pattern is literal", "${file/*/X}", "bash.string.txt"),
    ("an escaped slash", r"${slash/\//-}", "foo-bar/baz"),
    ("an escaped slash, all", r"${slash//\//-}", "foo-bar-baz"),
    ("'$$' is one '$' in a replacement", "${var/abc/$$}", "$dEFGH28ij"),
    ("a nested replacement", "${var/abc/${nope:=X}}", "XdEFGH28ij"),
    ("prefix replacement without a replacement leaves the value", "${s/#abc/}", "abcABC123ABCabc"),
    ("suffix replacement without a replacement leaves the value", "${s/%abc/}", "abcABC123ABCabc"),
    ("an empty pattern inserts at the start", "${var/${empty}/>}", ">abcdEFGH28ij"),
    ("an empty pattern everywhere inserts around each character", "${e//${empty}/.}", ".h.é.l.l.o."),
    ("a '}' belongs to the pattern", "${var/}x/y} ${var}", "abcdEFGH28ij abcdEFGH28ij"),
    # Escapes and what is not an expression.
    ("'$${' prints '${'", "$${var}", "${var}"),
    ("an escaped default", "$${var:=x}", "${var:=x}"),
    ("an escape next to an expression", "$$${var}", "$abcdEFGH28ij"),
    ("two escapes", "$$$${var}", "$${var}"),
    ("'$$' alone", "cost: $$5", "cost: $5"),
    ("a bare $var is left alone", "$var and ${var}", "$var and abcdEFGH28ij"),
    ("a lone '$' at the end", "5$", "5$"),
    ("'$' before a non-brace", "$(echo) $1 $", "$(echo) $1 $"),
    ("backslashes outside expressions are text", r"\\${var}\$", r"\\abcdEFGH28ij\$"),
    ("Flux's mixed escape example", "a ${var}$${var$${var}$var${var}", "a abcdEFGH28ij${var${var}$varabcdEFGH28ij"),
    ("a non-ASCII name parses (no such variable can be set)", "[${é}]", "[]"),
    ("text after a NUL character is dropped", "kept\x00${var} dropped", "kept"),
]


@pytest.mark.parametrize(("text", "expected"), [pytest.param(t, e, id=i) for i, t, e in SYNTAX])
def test_the_syntax_expands_as_fluxs_envsubst_does(text: str, expected: str) -> None:
    assert envsubst(text, V) == expected


SYNTAX_ERRORS = [
    ("'-' without ':' is not supported", "${var-default}"),
    ("'+' without ':' is not supported", "${var+x}"),
    ("'?' without ':' is not supported", "${var?x}"),
    ("an unclosed expression", "a: ${var"),
    ("an unclosed default", "a: ${var:=x"),
    ("an empty expression", "${}"),
    ("a space before the name", "${ var}"),
    ("a space after the name", "${var }"),
    ("a length without a name", "${#}"),
    ("a length with more after the name", "${#var:1}"),
    ("an empty offset", "${var:}"),
    ("an empty length", "${var:1:}"),
    ("a colon where the offset goes", "${var::2}"),
    ("a non-ASCII character after ':'", "${var:é}"),
    ("an empty trim pattern", "${var#}"),
    ("an empty suffix pattern", "${var%%}"),
    ("a trim pattern with text after a nested expression", "${var#x${var}}"),
    ("three carets", "${var^^^}"),
    ("a replacement without its second slash", "${var/a}"),
    ("a pattern that starts with a slash", "${var///a}"),
    ("text then an expression as an offset", "${var:1${var}}"),
    ("an expression inside a name", "${v${var}}"),
]


@pytest.mark.parametrize("text", [pytest.param(t, id=i) for i, t in SYNTAX_ERRORS])
def test_what_fluxs_parser_rejects_is_an_error(text: str) -> None:
    with pytest.raises(SubstituteError, match="bad substitution at line 1, column"):
        envsubst(text, V)


def test_a_syntax_error_says_where_the_expression_starts() -> None:
    with pytest.raises(SubstituteError, match="line 3, column 8"):
        envsubst("a: 1\nb: 2\nimage: ${tag-latest}\n", {"tag": "v1"})


def test_a_default_applies_when_the_variable_is_unset() -> None:
    assert envsubst("environment: ${cluster_env:=dev}", {}) == "environment: dev"
    assert envsubst("environment: ${cluster_env:=dev}", {"cluster_env": "prod"}) == "environment: prod"


def test_a_default_applies_when_the_variable_is_set_but_empty() -> None:
    assert envsubst("${v:=dev} ${v=dev} ${v:-dev}", {"v": ""}) == "dev dev dev"


def test_an_unset_variable_becomes_empty_without_strict_mode() -> None:
    assert envsubst("region: ${cluster_region}", {}) == "region: "


STRICT_FAILURES = ["${missing}", "${#missing}", "${missing^}", "${missing^^}", "${missing,}",
                   "${missing,,}", "${missing:0}", "${missing:0:10}", "${missing/a/b}",
                   "${missing//a/b}", "${missing/#a/b}", "${missing/%a/b}", "${missing#a}",
                   "${missing##a}", "${missing%a}", "${missing%%a}"]


@pytest.mark.parametrize("text", STRICT_FAILURES)
def test_strict_mode_fails_on_an_unset_variable_and_names_it(text: str) -> None:
    with pytest.raises(SubstituteError, match="variable 'missing' not set"):
        envsubst(f"x: {text}", {"other": "1"}, strict=True)


@pytest.mark.parametrize(("text", "expected"), [
    ("${missing:=fallback}", "fallback"), ("${missing:-fallback}", "fallback"),
    ("${missing=fallback}", "fallback"), ("${missing:?fallback}", "fallback"),
    ("${missing:+fallback}", "fallback"), ("[${empty}]", "[]"), ("$${missing}", "${missing}"),
])
def test_strict_mode_lets_defaults_set_empty_variables_and_escapes_through(text: str, expected: str) -> None:
    assert envsubst(text, {"empty": ""}, strict=True) == expected


def test_strict_mode_checks_a_nested_default_even_when_the_outer_variable_is_set() -> None:
    # Flux evaluates the arguments before it looks the variable up.
    with pytest.raises(SubstituteError, match="variable 'b' not set"):
        envsubst("${a:=${b}}", {"a": "set"}, strict=True)
    assert envsubst("${a:=${b}}", {"a": "set"}) == "set"


def test_strict_mode_says_where_the_variable_is_used() -> None:
    with pytest.raises(SubstituteError, match="line 2, column 7"):
        envsubst("a: b\nname: ${app}\n", {}, strict=True)


def test_flux_is_strict_by_default_since_v1_9() -> None:
    assert FLUX_DEFAULT_STRICT is True


def test_a_value_is_inserted_literally_and_never_expanded_again() -> None:
    values = {"v": "${other} $$ $x ${#v}", "other": "NO"}
    assert envsubst("cmd: ${v}", values) == "cmd: ${other} $$ $x ${#v}"


def test_a_value_with_a_newline_is_inserted_as_it_is_but_collected_without_its_newlines() -> None:
    assert envsubst("${v}", {"v": "a\nb"}) == "a\nb"
    variables = collect_variables(
        {"substitute": {"inline": "x\ny\n"}, "substituteFrom": [{"kind": "Secret", "name": "s"}]},
        lambda kind, name: {"key": "-----BEGIN-----\nAAAA\r\n-----END-----\n"},
    )
    assert variables == {"inline": "xy", "key": "-----BEGIN-----AAAA\r-----END-----"}


def test_lengths_and_offsets_count_bytes_as_go_does() -> None:
    # '€' is three bytes in UTF-8.
    assert envsubst("${#v} ${v:3} ${v:0:3} ${v:-1:2}", {"v": "€uro"}) == "6 uro € €uro"


def test_a_substring_that_cuts_a_character_in_two_is_an_error() -> None:
    with pytest.raises(SubstituteError, match="multi-byte"):
        envsubst("x: ${v:0:1}", {"v": "é"})
    # Two halves put back together are whole again, as in Go.
    assert envsubst("${v:0:1}${v:1:1}", {"v": "é"}) == "é"


def test_a_negative_substring_length_is_an_error_where_flux_panics() -> None:
    with pytest.raises(SubstituteError, match="negative length"):
        envsubst("${v:2:-1}", {"v": "hello"})
    # A negative length that still ends at or past the end is the rest, as in Go.
    assert envsubst("[${v:9:-1}]", {"v": "hello"}) == "[]"


# --- collect_variables ----------------------------------------------------------------------


def store(**objects: dict[str, str]) -> tuple[list[tuple[str, str]], object]:
    """A lookup over "Kind/name" keys, and the list of what it was asked for."""
    asked: list[tuple[str, str]] = []

    def lookup(kind: str, name: str) -> dict[str, str] | None:
        asked.append((kind, name))
        return objects.get(f"{kind}_{name}".replace("-", "_"))

    return asked, lookup


def test_later_substitute_from_entries_override_earlier_ones_and_inline_substitute_overrides_all() -> None:
    asked, lookup = store(
        ConfigMap_cluster_vars={"env": "from-cm", "region": "eu", "only_cm": "1"},
        Secret_cluster_secrets={"env": "from-secret", "token": "t0k"},
        ConfigMap_late={"region": "us"},
    )
    post_build = {
        "substitute": {"env": "inline"},
        "substituteFrom": [
            {"kind": "ConfigMap", "name": "cluster-vars"},
            {"kind": "Secret", "name": "cluster-secrets"},
            {"kind": "ConfigMap", "name": "late"},
        ],
    }
    assert collect_variables(post_build, lookup) == {
        "env": "inline", "region": "us", "only_cm": "1", "token": "t0k",
    }
    assert asked == [("ConfigMap", "cluster-vars"), ("Secret", "cluster-secrets"), ("ConfigMap", "late")]


def test_a_missing_optional_reference_is_skipped() -> None:
    _, lookup = store(ConfigMap_present={"a": "1"})
    post_build = {"substituteFrom": [
        {"kind": "ConfigMap", "name": "absent", "optional": True},
        {"kind": "ConfigMap", "name": "present"},
    ]}
    assert collect_variables(post_build, lookup) == {"a": "1"}


def test_a_missing_required_reference_is_an_error_naming_the_field() -> None:
    _, lookup = store(ConfigMap_present={"a": "1"})
    post_build = {"substituteFrom": [
        {"kind": "ConfigMap", "name": "present"},
        {"kind": "ConfigMap", "name": "cluster-vars", "optional": False},
    ]}
    with pytest.raises(SubstituteError) as error:
        collect_variables(post_build, lookup)
    assert str(error.value) == "spec.postBuild.substituteFrom[1]: ConfigMap 'cluster-vars' not found"


def test_an_invalid_variable_name_in_a_config_map_is_an_error_naming_the_field_and_the_key() -> None:
    _, lookup = store(ConfigMap_cluster_vars={"ok": "1", "cluster-name": "prod"})
    with pytest.raises(SubstituteError) as error:
        collect_variables({"substituteFrom": [{"kind": "ConfigMap", "name": "cluster-vars"}]}, lookup)
    message = str(error.value)
    assert message.startswith("spec.postBuild.substituteFrom[0]: ConfigMap 'cluster-vars': ")
    assert "variable name 'cluster-name' is invalid" in message
    assert "^[_[:alpha:]][_[:alpha:][:digit:]]*$" in message


@pytest.mark.parametrize("name", ["cluster-name", "1st", "a.b", "", "é", "has space", "x\n"])
def test_an_invalid_inline_variable_name_is_an_error(name: str) -> None:
    with pytest.raises(SubstituteError, match=r"spec\.postBuild\.substitute: variable name .* is invalid"):
        collect_variables({"substitute": {name: "v"}}, lambda kind, name: None)


@pytest.mark.parametrize("name", ["_", "a", "A_1", "_private", "CLUSTER_REGION"])
def test_a_valid_variable_name_is_accepted(name: str) -> None:
    assert collect_variables({"substitute": {name: "v"}}, lambda kind, name: None) == {name: "v"}


def test_an_unquoted_number_in_inline_substitute_is_an_error_as_the_crd_refuses_it() -> None:
    with pytest.raises(SubstituteError, match=r"spec\.postBuild\.substitute\.replicas: must be a string"):
        collect_variables({"substitute": {"replicas": 3}}, lambda kind, name: None)


@pytest.mark.parametrize(("ref", "field"), [
    ({"kind": "Namespace", "name": "x"}, r"substituteFrom\[0\]\.kind"),
    ({"name": "x"}, r"substituteFrom\[0\]\.kind"),
    ({"kind": "Secret"}, r"substituteFrom\[0\]\.name"),
    ({"kind": "Secret", "name": ""}, r"substituteFrom\[0\]\.name"),
    ({"kind": "Secret", "name": "x", "optional": "yes"}, r"substituteFrom\[0\]\.optional"),
    ("ConfigMap/x", r"substituteFrom\[0\]"),
])
def test_a_malformed_reference_is_an_error_naming_its_field(ref: object, field: str) -> None:
    with pytest.raises(SubstituteError, match=field):
        collect_variables({"substituteFrom": [ref]}, lambda kind, name: {})


def test_no_post_build_or_an_empty_one_gives_no_variables() -> None:
    assert collect_variables(None, lambda kind, name: None) == {}
    assert collect_variables({}, lambda kind, name: None) == {}
    assert collect_variables({"substitute": None, "substituteFrom": None}, lambda kind, name: None) == {}


# --- substitution_disabled -----------------------------------------------------------------


@pytest.mark.parametrize(("metadata", "disabled"), [
    ({"labels": {"kustomize.toolkit.fluxcd.io/substitute": "disabled"}}, True),
    ({"annotations": {"kustomize.toolkit.fluxcd.io/substitute": "disabled"}}, True),
    ({"labels": {"kustomize.toolkit.fluxcd.io/substitute": "enabled"},
      "annotations": {"kustomize.toolkit.fluxcd.io/substitute": "disabled"}}, True),
    ({"annotations": {"kustomize.toolkit.fluxcd.io/substitute": "Disabled"}}, False),
    ({"annotations": {"kustomize.toolkit.fluxcd.io/substitute": "disabled "}}, False),
    ({"annotations": {"Kustomize.toolkit.fluxcd.io/substitute": "disabled"}}, False),
    ({"annotations": {"kustomize.toolkit.fluxcd.io/substitute": "false"}}, False),
    ({"annotations": None, "labels": None}, False),
    ({}, False),
    (None, False),
])
def test_the_disabled_annotation_or_label_turns_substitution_off(metadata: object, disabled: bool) -> None:
    obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata}
    assert substitution_disabled(obj) is disabled


# --- substitute_document -------------------------------------------------------------------

DEPLOYMENT = textwrap.dedent("""\
    apiVersion: apps/v1
    kind: Deployment
    metadata:
      labels:
        environment: ${cluster_env:=dev}
        region: ${cluster_region}
      name: app
    spec:
      replicas: ${replicas}
      template:
        metadata:
          annotations:
            prometheus.io/port: ${port}
            prometheus.io/scrape: ${scrape:=false}
            quoted: "${replicas}"
        spec:
          containers:
          - command:
            - sh
            - -c
            - echo $HOME $${HOME}
            image: ${image}
            name: app
    """)


def rendered(text: str, variables: dict[str, str], **options: bool) -> dict:
    obj = yaml.safe_load(text)
    out = substitute_document(text, obj, variables, **options)
    assert out is not None
    # Flux parses the text again with go-yaml v2 (YAML 1.1 scalars), as PyYAML does.
    return yaml.safe_load(out)


def test_a_document_is_substituted_as_text_and_parsed_again() -> None:
    variables = {"cluster_region": "eu-central-1", "replicas": "3", "port": '"9797"',
                 "scrape": '"true"', "image": "nginx:1.27"}
    obj = rendered(DEPLOYMENT, variables)
    assert obj["metadata"]["labels"] == {"environment": "dev", "region": "eu-central-1"}
    assert obj["spec"]["replicas"] == 3  # unquoted: an integer, as in Flux
    annotations = obj["spec"]["template"]["metadata"]["annotations"]
    # A value that carries its own quotes stays a string, and so does an expression still quoted
    # in the text (kustomize's output keeps quotes only where YAML needs them, though).
    assert annotations == {"prometheus.io/port": "9797", "prometheus.io/scrape": "true", "quoted": "3"}
    container = obj["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][2] == "echo $HOME ${HOME}"
    assert container["image"] == "nginx:1.27"


def test_a_set_but_empty_variable_passes_strict_mode_and_renders_as_null() -> None:
    text = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  labels:\n    a: ${empty}\n  name: c\n"
    obj = rendered(text, {"empty": ""}, strict=True)
    assert obj["metadata"]["labels"] == {"a": None}


def test_the_quote_variable_idiom_keeps_a_number_a_string() -> None:
    # Flux's docs: kustomize drops a source file's quotes, so ${quote} puts them back.
    text = "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  annotations:\n    id: ${quote}${id}${quote}\n  name: app\n"
    obj = rendered(text, {"quote": '"', "id": "123"})
    assert obj["metadata"]["annotations"] == {"id": "123"}


def test_a_disabled_document_is_not_substituted() -> None:
    text = ("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  annotations:\n"
            "    kustomize.toolkit.fluxcd.io/substitute: disabled\n  name: c\ndata:\n  a: ${x-bad syntax}\n")
    assert substitute_document(text, yaml.safe_load(text), {"x": "1"}, strict=True) is None


def test_without_variables_flux_leaves_the_document_alone() -> None:
    text = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\ndata:\n  a: ${x:=dev}\n  b: ${unset}\n"
    assert substitute_document(text, yaml.safe_load(text), {}, strict=True) == text


def test_substitute_strategy_always_expands_defaults_without_variables() -> None:
    text = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\ndata:\n  region: ${region:=eu-central-1}\n"
    always = substitute_always({"substituteStrategy": "Always"})
    assert always is True
    out = substitute_document(text, yaml.safe_load(text), {}, always=always)
    assert yaml.safe_load(out)["data"] == {"region": "eu-central-1"}


@pytest.mark.parametrize(("post_build", "always"), [
    (None, False), ({}, False), ({"substituteStrategy": "WithVariables"}, False),
    ({"substituteStrategy": "Always"}, True),
])
def test_the_substitute_strategy_defaults_to_with_variables(post_build: dict | None, always: bool) -> None:
    assert substitute_always(post_build) is always


def test_an_unknown_substitute_strategy_is_an_error_naming_the_field() -> None:
    with pytest.raises(SubstituteError, match=r"spec\.postBuild\.substituteStrategy: 'always'"):
        substitute_always({"substituteStrategy": "always"})


def test_a_document_error_names_the_object_and_the_line() -> None:
    text = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  a: ${x-1}\n"
    with pytest.raises(SubstituteError, match=r"^ConfigMap/settings: bad substitution at line 6, column 6"):
        substitute_document(text, yaml.safe_load(text), {"x": "1"})


def test_strict_mode_in_a_document_names_the_object_and_the_variable() -> None:
    text = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  a: ${missing}\n"
    with pytest.raises(SubstituteError, match=r"^ConfigMap/settings: variable 'missing' not set"):
        substitute_document(text, yaml.safe_load(text), {"other": "1"}, strict=True)


def test_an_invalid_variable_name_given_directly_is_an_error() -> None:
    text = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n"
    with pytest.raises(SubstituteError, match="variable name 'bad-name' is invalid"):
        substitute_document(text, yaml.safe_load(text), {"bad-name": "1"})


def test_a_secret_value_never_appears_in_an_error_message() -> None:
    secret = "hunter2-Ünïcode-SECRET"
    _, lookup = store(Secret_creds={"password": secret, "bad-key": secret})
    post_build = {"substituteFrom": [{"kind": "Secret", "name": "creds"}]}
    messages = []
    with pytest.raises(SubstituteError) as error:
        collect_variables(post_build, lookup)
    messages.append(str(error.value))

    variables = {"password": secret}
    documents = [
        "kind: Secret\nmetadata:\n  name: s\nstringData:\n  p: ${password}\n  q: ${missing}\n",
        "kind: Secret\nmetadata:\n  name: s\nstringData:\n  p: ${password:3:-9}\n",
        "kind: Secret\nmetadata:\n  name: s\nstringData:\n  p: ${password:0:9}\n",
        "kind: Secret\nmetadata:\n  name: s\nstringData:\n  p: ${password}\n  q: ${password-x}\n",
    ]
    for text in documents:
        with pytest.raises(SubstituteError) as error:
            substitute_document(text, yaml.safe_load(text), variables, strict=True)
        messages.append(str(error.value))
    assert len(messages) == 5
    for message in messages:
        assert secret not in message
        assert "hunter2" not in message and "SECRET" not in message
