"""ImagePolicy selection (reconciler/images/policy.py) against Flux's and Masterminds' own cases.

The tables marked as such are copied from the projects whose behaviour Herald matches:
- Masterminds/semver (MIT License, Copyright (C) 2014-2019 Matt Butcher and Matt Farina),
  constraints_test.go TestConstraintsCheck, at commit 71f2b39 (after v3.4.0; Flux pins v3.5.0).
- fluxcd/image-reflector-controller (Apache License 2.0, Copyright The Flux authors),
  internal/policy/{semver,alphabetical,numerical,filter}_test.go and docs/spec/v1/imagepolicies.md,
  at commit debe2aa.
"""

from __future__ import annotations

import random

import pytest

from herald.model import TagFilter, TagPolicy
from reconciler.images.policy import (
    PolicyError,
    Selection,
    compile_go_regex,
    expand,
    latest,
    new_version,
    parse_constraints,
    parse_go_float,
    parse_version,
)


class Spec:
    """An ImagePolicy-like spec: `latest` reads `policy` and `filter_tags` only."""

    def __init__(self, kind: str, range: str = "", order: str = "asc", pattern: str | None = None,
                 extract: str = "") -> None:
        self.policy = TagPolicy(kind=kind, range=range, order=order)
        self.filter_tags = TagFilter(pattern, extract) if pattern is not None else None


def semver(range: str, **kw: str) -> Spec:
    return Spec("semver", range=range, **kw)


# ---- semver ------------------------------------------------------------------------------------

# Masterminds/semver constraints_test.go, TestConstraintsCheck (versions read with NewVersion).
MASTERMINDS_CHECKS = [
    ('*', '1.2.3', True),
    ('~0.0.0', '1.2.3', True),
    ('0.x.x', '1.2.3', False),
    ('0.0.x', '1.2.3', False),
    ('0.0.0', '1.2.3', False),
    ('*', '1.2.3', True),
    ('^0.0.0', '1.2.3', False),
    ('= 2.0', '1.2.3', False),
    ('= 2.0', '2.0.0', True),
    ('4.1', '4.1.0', True),
    ('4.1.x', '4.1.3', True),
    ('1.x', '1.4', True),
    ('!=4.1', '4.1.0', False),
    ('!=4.1-alpha', '4.1.0-alpha', False),
    ('!=4.1-alpha', '4.1.1-alpha', False),
    ('!=4.1-alpha', '4.1.0', True),
    ('!=4.1', '5.1.0', True),
    ('!=4.x', '5.1.0', True),
    ('!=4.x', '4.1.0', False),
    ('!=4.1.x', '4.2.0', True),
    ('!=4.2.x', '4.2.3', False),
    ('>1.1', '4.1.0', True),
    ('>1.1', '1.1.0', False),
    ('<1.1', '0.1.0', True),
    ('<1.1', '1.1.0', False),
    ('<1.1', '1.1.1', False),
    ('<1.x', '1.1.1', False),
    ('<1.x', '0.1.1', True),
    ('<1.x', '2.0.0', False),
    ('<1.1.x', '1.2.1', False),
    ('<1.1.x', '1.1.500', False),
    ('<1.1.x', '1.0.500', True),
    ('<1.2.x', '1.1.1', True),
    ('>=1.1', '4.1.0', True),
    ('>=1.1', '4.1.0-beta', False),
    ('>=1.1', '1.1.0', True),
    ('>=1.1', '0.0.9', False),
    ('<=1.1', '0.1.0', True),
    ('<=1.1', '0.1.0-alpha', False),
    ('<=1.1-a', '0.1.0-alpha', True),
    ('<=1.1', '1.1.0', True),
    ('<=1.x', '1.1.0', True),
    ('<=2.x', '3.0.0', False),
    ('<=1.1', '1.1.1', True),
    ('<=1.1.x', '1.2.500', False),
    ('<=4.5', '3.4.0', True),
    ('<=4.5', '3.7.0', True),
    ('<=4.5', '4.6.3', False),
    ('>1.1, <2', '1.1.1', False),
    ('>1.1, <2', '1.2.1', True),
    ('>1.1, <3', '4.3.2', False),
    ('>=1.1, <2, !=1.2.3', '1.2.3', False),
    ('>1.1 <2', '1.1.1', False),
    ('>1.1 <2', '1.2.1', True),
    ('>1.1    <3', '4.3.2', False),
    ('>=1.1    <2    !=1.2.3', '1.2.3', False),
    ('>=1.1, <2, !=1.2.3 || > 3', '4.1.2', True),
    ('>=1.1, <2, !=1.2.3 || > 3', '3.1.2', False),
    ('>=1.1, <2, !=1.2.3 || >= 3', '3.0.0', True),
    ('>=1.1, <2, !=1.2.3 || > 3', '3.0.0', False),
    ('>=1.1, <2, !=1.2.3 || > 3', '1.2.3', False),
    ('>=1.1 <2 !=1.2.3', '1.2.3', False),
    ('>=1.1 <2 !=1.2.3 || > 3', '4.1.2', True),
    ('>=1.1 <2 !=1.2.3 || > 3', '3.1.2', False),
    ('>=1.1 <2 !=1.2.3 || >= 3', '3.0.0', True),
    ('>=1.1 <2 !=1.2.3 || > 3', '3.0.0', False),
    ('>=1.1 <2 !=1.2.3 || > 3', '1.2.3', False),
    ('> 1.1, <     2', '1.1.1', False),
    ('>   1.1, <2', '1.2.1', True),
    ('>1.1, <  3', '4.3.2', False),
    ('>= 1.1, <     2, !=1.2.3', '1.2.3', False),
    ('> 1.1 < 2', '1.1.1', False),
    ('>1.1 < 2', '1.2.1', True),
    ('> 1.1    <3', '4.3.2', False),
    ('>=1.1    < 2    != 1.2.3', '1.2.3', False),
    ('>= 1.1, <2, !=1.2.3 || > 3', '4.1.2', True),
    ('>= 1.1, <2, != 1.2.3 || > 3', '3.1.2', False),
    ('>= 1.1, <2, != 1.2.3 || >= 3', '3.0.0', True),
    ('>= 1.1, <2, !=1.2.3 || > 3', '3.0.0', False),
    ('>= 1.1, <2, !=1.2.3 || > 3', '1.2.3', False),
    ('>= 1.1 <2 != 1.2.3', '1.2.3', False),
    ('>= 1.1 <2 != 1.2.3 || > 3', '4.1.2', True),
    ('>= 1.1 <2 != 1.2.3 || > 3', '3.1.2', False),
    ('>= 1.1 <2 != 1.2.3 || >= 3', '3.0.0', True),
    ('>= 1.1 < 2 !=1.2.3 || > 3', '3.0.0', False),
    ('>=1.1 < 2 !=1.2.3 || > 3', '1.2.3', False),
    ('>= 1.0.0  <= 2.0.0-beta', '1.0.1-beta', True),
    ('>= 1.0.0  <= 2.0.0-beta', '1.0.1', True),
    ('>= 1.0.0  <= 2.0.0-beta', '3.0.0', False),
    ('>= 1.0.0  <= 2.0.0-beta || > 3', '1.0.1-beta', True),
    ('>= 1.0.0  <= 2.0.0-beta || > 3', '3.0.1-beta', False),
    ('>= 1.0.0  <= 2.0.0-beta != 1.0.1 || > 3', '1.0.1-beta', True),
    ('>= 1.0.0  <= 2.0.0-beta != 1.0.1-beta || > 3', '1.0.1-beta', False),
    ('>= 1.0.0-0  <= 2.0.0', '1.0.1-beta', True),
    ('1.1 - 2', '1.1.1', True),
    ('1.5.0 - 4.5', '3.7.0', True),
    ('1.1-3', '4.3.2', False),
    ('^1.1', '1.1.1', True),
    ('^1.1', '4.3.2', False),
    ('^1.x', '1.1.1', True),
    ('^2.x', '1.1.1', False),
    ('^1.x', '2.1.1', False),
    ('^1.x', '1.1.1-beta1', False),
    ('^1.1.2-alpha', '1.2.1-beta1', True),
    ('^1.2.x-alpha', '1.1.1-beta1', False),
    ('^0.0.1', '0.0.1', True),
    ('^0.0.1', '0.3.1', False),
    ('~*', '2.1.1', True),
    ('~1', '2.1.1', False),
    ('~1', '1.3.5', True),
    ('~1', '1.4', True),
    ('~1.x', '2.1.1', False),
    ('~1.x', '1.3.5', True),
    ('~1.x', '1.4', True),
    ('~1.1', '1.1.1', True),
    ('~1.1', '1.1.1-alpha', False),
    ('~1.1-alpha', '1.1.1-beta', True),
    ('~1.1.1-beta', '1.1.1-alpha', False),
    ('~1.1.1-beta', '1.1.1', True),
    ('~1.2.3', '1.2.5', True),
    ('~1.2.3', '1.2.2', False),
    ('~1.2.3', '1.3.2', False),
    ('~1.1', '1.2.3', False),
    ('~1.3', '2.4.5', False),
    ('1.0.0 - 2.0.0 <=2.0.0', '1.5.0', True),
    ('1.0.0 - 2.0.0, <=2.0.0', '1.5.0', True),
]


@pytest.mark.parametrize("constraint,version,expected", MASTERMINDS_CHECKS)
def test_constraints_check_as_masterminds_does(constraint: str, version: str, expected: bool) -> None:
    parsed = new_version(version)
    assert parsed is not None
    assert parse_constraints(constraint).check(parsed) is expected


@pytest.mark.parametrize("text", ["1.0.x", "^1.0", "=1.0.0", "~1.0", ">=1.0", ">0,<2.0",  # Flux's valid ones
                                  "*", "1.x", "^1.x-0", ">=1.0.0 <2.0.0 || >=3.0.0-0", "1.2 - 1.4"])
def test_valid_ranges(text: str) -> None:
    parse_constraints(text)


@pytest.mark.parametrize("text", ["1.0.0p", "1x", "x1", "-1", "a", "",  # Flux's invalid ones
                                  ">=1.0 <<2", "12.3.4.1234", "v1.2.3-beta.01"])
def test_invalid_ranges_are_policy_errors(text: str) -> None:
    with pytest.raises(PolicyError, match="invalid semver range"):
        parse_constraints(text)
    with pytest.raises(PolicyError):
        latest(["1.0.0"], semver(text))


@pytest.mark.parametrize("label,tags,range,expected", [
    # image-reflector-controller internal/policy/semver_test.go, TestSemVer_Latest
    ("With valid format", ["1.0.0", "1.0.0.1", "1.0.0p", "1.0.1", "1.2.0", "0.1.0"], "1.0.x", "1.0.1"),
    ("With valid format prefix", ["v1.2.3", "v1.0.0", "v0.1.0"], "1.0.x", "v1.0.0"),
    ("With invalid format prefix", ["b1.2.3", "b1.0.0", "b0.1.0"], "1.0.x", None),
    ("With empty list", [], "1.0.x", None),
    ("With non-matching version list", ["1.2.0"], "1.0.x", None),
])
def test_fluxs_semver_cases(label: str, tags: list[str], range: str, expected: str | None) -> None:
    assert latest(tags, semver(range)).tag == expected, label


def test_highest_version_in_range_wins_whatever_the_order() -> None:
    tags = ["1.9.0", "2.0.0", "1.10.0", "v1.2.3", "latest", "1.10.0-rc.1"]
    for _ in range(5):
        random.shuffle(tags)
        assert latest(tags, semver(">=1.0.0 <2.0.0")).tag == "1.10.0"
    assert latest(tags, semver("^1.2")).tag == "1.10.0"
    assert latest(tags, semver("~1.2.0")).tag == "v1.2.3"
    assert latest(tags, semver("*")).tag == "2.0.0"


def test_prereleases_match_only_when_the_range_names_one() -> None:
    tags = ["1.4.0", "1.5.0-rc.1", "2.0.0-rc.1", "2.0.0-alpha"]
    assert latest(tags, semver(">=1.0.0")).tag == "1.4.0"
    # Masterminds' rule: a pre-release in the range admits every pre-release in range (npm
    # admits only those of the same major.minor.patch, and would answer 1.4.0 here).
    assert latest(tags, semver(">=1.0.0-0")).tag == "2.0.0-rc.1"
    assert latest(tags, semver(">=1.0.0-0 <2.0.0")).tag == "2.0.0-rc.1"  # 2.0.0-rc.1 < 2.0.0
    assert latest(tags, semver("^1.x-0")).tag == "1.5.0-rc.1"
    # ...per || branch: only the branch naming a pre-release admits them.
    assert latest(["1.5.0-rc.1", "3.0.0-beta"], semver("^1.0.0 || >=3.0.0-0")).tag == "3.0.0-beta"
    assert latest(["1.5.0-rc.1"], semver("^1.0.0 || >=3.0.0-0")).tag is None
    # Pre-release order: numeric identifiers numerically, before alphanumeric ones.
    assert latest(["1.0.0-rc.2", "1.0.0-rc.10", "1.0.0-rc.a"], semver(">=1.0.0-0")).tag == "1.0.0-rc.a"
    assert latest(["1.0.0-rc.2", "1.0.0-rc.10"], semver(">=1.0.0-0")).tag == "1.0.0-rc.10"


def test_fluxs_documented_prerelease_policy() -> None:
    """docs/spec/v1/imagepolicies.md: filterTags '.*-rc.*' with range '^1.x-0'."""
    tags = ["1.0.0", "1.1.0-rc.1", "1.2.0-rc.1", "1.2.0-rc.2", "2.0.0-rc.1", "1.3.0"]
    assert latest(tags, semver("^1.x-0", pattern=".*-rc.*")).tag == "1.2.0-rc.2"


def test_tags_are_versions_as_flux_parses_them() -> None:
    # fluxcd/pkg/version.ParseVersion: three dot-separated parts, leading zeros allowed.
    calver = parse_version("v2025.02.03")
    assert calver is not None and (calver.major, calver.minor, calver.patch) == (2025, 2, 3)
    assert parse_version("1.2") is None and parse_version("1") is None and parse_version("v1.2") is None
    assert parse_version("1.2.3.4") is None and parse_version("1.2.3-beta.01") is None
    assert parse_version("1.2.3-rc.1+build.5") == new_version("1.2.3-rc.1+build.5")
    selection = latest(["1.2", "1.1.0", "latest"], semver(">=1.0.0"))
    assert selection.tag == "1.1.0"
    assert selection.skipped == ("1.2", "latest")  # not versions to Flux: never selected


def test_equal_versions_the_first_listed_wins_as_in_flux() -> None:
    """Flux keeps the first of equal versions (its GreaterThan is strict): `v1.0.0` and `1.0.0`
    are one version, and so are versions differing only in build metadata."""
    assert latest(["1.0.0", "v1.0.0"], semver("^1")).tag == "1.0.0"
    assert latest(["v1.0.0", "1.0.0"], semver("^1")).tag == "v1.0.0"
    assert latest(["1.0.0+b", "1.0.0+a", "0.9.0"], semver("^0.9 || ^1")).tag == "1.0.0+b"


def test_no_match_says_how_many_tags_and_which_range() -> None:
    selection = latest(["1.0.0", "1.1.0", "latest"], semver(">=2.0.0"))
    assert selection == Selection(None, ("latest",), "no tag in 3 tags matches semver range '>=2.0.0'")
    assert latest([], semver("*")).reason == "the image repository has no tags"
    ok = latest(["1.0.0", "1.1.0"], semver("^1"))
    assert ok.reason == "'1.1.0' is the highest version in semver range '^1' among 2 tags"


# ---- alphabetical --------------------------------------------------------------------------------

@pytest.mark.parametrize("tags,order,expected", [
    # image-reflector-controller internal/policy/alphabetical_test.go, TestAlphabetical_Latest
    (["16.04", "16.04.1", "16.10", "20.04", "20.10"], "asc", "20.10"),
    (["16.04", "16.04.1", "16.10", "20.04", "20.10"], "desc", "16.04"),
    (["xenial", "yakkety", "zesty", "artful", "bionic"], "asc", "zesty"),
    (["xenial", "yakkety", "zesty", "artful", "bionic"], "desc", "artful"),
    (["1606234201", "1606364286", "1606334092", "1606334284", "1606334201"], "asc", "1606364286"),
    (["1606234201", "1606364286", "1606334092", "1606334284", "1606334201"], "desc", "1606234201"),
    (["rel-1606234201", "rel-1606364286", "rel-1606334092", "rel-1606334284", "rel-1606334201"], "asc",
     "rel-1606364286"),
    (["2021-01-08T21-18-21Z", "2020-05-08T21-18-21Z", "2021-01-08T19-20-00Z", "1990-01-08T00-20-00Z",
      "2023-05-08T00-20-00Z"], "asc", "2023-05-08T00-20-00Z"),
    (["2021-01-08T21-18-21Z", "2020-05-08T21-18-21Z", "2021-01-08T19-20-00Z", "1990-01-08T00-20-00Z",
      "2023-05-08T00-20-00Z"], "desc", "1990-01-08T00-20-00Z"),
    ([], "asc", None),
])
def test_fluxs_alphabetical_cases(tags: list[str], order: str, expected: str | None) -> None:
    assert latest(tags, Spec("alphabetical", order=order)).tag == expected


def test_alphabetical_is_byte_order() -> None:
    assert latest(["B", "a", "Z"], Spec("alphabetical")).tag == "a"  # lowercase sorts after uppercase
    assert latest(["9", "10"], Spec("alphabetical")).tag == "9"  # not numbers


# ---- numerical ---------------------------------------------------------------------------------

def _shuffled(tags: list[str]) -> list[str]:
    tags = list(tags)
    random.Random(15).shuffle(tags)
    return tags


@pytest.mark.parametrize("tags,order,expected", [
    # image-reflector-controller internal/policy/numerical_test.go, TestNumerical_Latest
    (["-62", "-88", "73", "72", "15", "16", "15", "29", "-33", "-91"], "asc", "73"),
    (["5", "-8", "-78", "25", "70", "-4", "80", "92", "-20", "-24"], "desc", "-78"),
    (["47.40896403322944", "-27.8520927455902", "-27.930666514224427", "-31.352485948094568",
      "-50.41072694704882", "-21.962849842263736", "24.71884721436865", "-39.99177354004344",
      "53.47333823144817", "3.2008658570411086"], "asc", "53.47333823144817"),
    (["-65.27202780220686", "57.82948329142309", "22.40184684363291", "-86.36934305697784",
      "-90.29082099756083", "-12.041712603564264", "77.70488240399305", "-38.98425003883552",
      "16.06867070412028", "53.735674335181216"], "desc", "-90.29082099756083"),
    (["1606234201", "1606364286", "1606334092", "1606334284", "1606334201"], "asc", "1606364286"),
    (["1606234201", "1606364286", "1606334092", "1606334284", "1606334201"], "desc", "1606234201"),
    (["1"], "asc", "1"),
    (["1"], "desc", "1"),
    ([], "asc", None),
])
def test_fluxs_numerical_cases(tags: list[str], order: str, expected: str | None) -> None:
    assert latest(_shuffled(tags), Spec("numerical", order=order)).tag == expected


def test_a_tag_that_is_not_a_number_is_skipped_not_fatal() -> None:
    """Flux fails the whole policy on ["0", "1a", "b"] (its "With invalid numerical value");
    Herald leaves those two out, says so, and selects among the rest."""
    selection = latest(["0", "1a", "b"], Spec("numerical"))
    assert selection == Selection("0", ("1a", "b"), "'0' is the highest number among 3 tags; "
                                                    "2 tags left out as not a number")
    nothing = latest(["latest", "main"], Spec("numerical"))
    assert (nothing.tag, nothing.skipped, nothing.reason) == (None, ("latest", "main"), "no tag in 2 tags is a number")


def test_equal_numbers_the_later_wins_as_in_flux() -> None:
    assert latest(["1", "1.0", "0"], Spec("numerical")).tag == "1.0"
    assert latest(["1", "1.0", "2"], Spec("numerical", order="desc")).tag == "1.0"


@pytest.mark.parametrize("text,value", [
    ("1", 1.0), ("-2.5", -2.5), ("+.5", 0.5), ("1.", 1.0), ("1e3", 1000.0), ("1E-2", 0.01), ("1_000", 1000.0),
    ("0x1p4", 16.0), ("0x1.8P1", 3.0), ("-0x_1p0", -1.0), ("Inf", float("inf")), ("-infinity", float("-inf")),
    ("", None), ("1a", None), ("_1", None), ("1_", None), ("1__0", None), ("1_.5", None), ("0x1", None),
    ("1e", None), ("e3", None), (".", None), (" 1", None), ("1e999", None), ("-nan", None), ("infin", None),
    ("1.2.3", None), ("v1", None), ("١", None),
])
def test_numbers_are_read_as_gos_parsefloat_reads_them(text: str, value: float | None) -> None:
    assert parse_go_float(text) == value
    assert parse_go_float("NaN") != parse_go_float("NaN")  # a NaN, as in Go


# ---- filterTags ----------------------------------------------------------------------------------

def test_extract_orders_by_the_captured_part() -> None:
    tags = ["main-3c4d5e6-1700000200", "main-a1b2c3d-1700000100", "main-ffffff0-999", "v1.0.0", "feature-x-1800000000"]
    pattern = r"^main-[a-f0-9]+-(?P<ts>[0-9]+)"
    selection = latest(tags, Spec("numerical", pattern=pattern, extract="$ts"))
    assert selection.tag == "main-3c4d5e6-1700000200"
    assert selection.reason == "'main-3c4d5e6-1700000200' ('1700000200' extracted) is the highest number among 3 tags"
    # Alphabetically "999" would win: the policy, not the filter, orders.
    assert latest(tags, Spec("alphabetical", pattern=pattern, extract="$ts")).tag == "main-ffffff0-999"
    # Go 1.22's (?<name>...) is the same group.
    assert latest(tags, Spec("numerical", pattern=r"^main-[a-f0-9]+-(?<ts>[0-9]+)", extract="${ts}")).tag \
        == "main-3c4d5e6-1700000200"
    assert latest(tags, Spec("numerical", order="desc", pattern=pattern, extract="$1")).tag == "main-ffffff0-999"


def test_fluxs_documented_minio_policy() -> None:
    tags = ["RELEASE.2023-01-02T09-40-09Z", "RELEASE.2023-11-20T22-40-07Z", "RELEASE.2023-09-04T19-57-37Z",
            "latest", "RELEASE.2023-11-20T22-40-07Z.fips"]
    spec = Spec("alphabetical", pattern=r"^RELEASE\.(?P<timestamp>.*)Z$", extract="$timestamp")
    assert latest(tags, spec).tag == "RELEASE.2023-11-20T22-40-07Z"


@pytest.mark.parametrize("pattern,extract,tags,expected", [
    # image-reflector-controller internal/policy/filter_test.go, TestRegexFilter
    ("^ver", "", ["ver1", "ver2", "ver3", "rel1"], ["ver1", "ver2", "ver3"]),
    (r"ver(\d+)", "$1", ["ver1", "ver2", "ver3", "rel1"], ["1", "2", "3"]),
])
def test_fluxs_filter_cases(pattern: str, extract: str, tags: list[str], expected: list[str]) -> None:
    rx = compile_go_regex(pattern)
    kept = [expand(extract, m) if extract else t for t in tags if (m := rx.search(t))]
    assert kept == expected


def test_a_pattern_no_tag_matches_says_so() -> None:
    selection = latest(["1.0.0", "latest"], semver("*", pattern="^v"))
    assert selection == Selection(None, (), "no tag in 2 tags matches filterTags.pattern '^v'")


def test_two_tags_extracting_the_same_value_the_later_stands_for_it() -> None:
    """Flux keeps extracted value -> tag in a map, so the last tag written wins."""
    tags = ["build-7-a", "build-7-b", "build-6-c"]
    assert latest(tags, Spec("numerical", pattern=r"^build-(\d+)", extract="$1")).tag == "build-7-b"


def test_extract_expands_as_gos_regexp_expand() -> None:
    m = compile_go_regex(r"^(?P<sha>[a-f0-9]+)-(?P<ts>[0-9]+)(-(x))?").search("abc1-1700")
    assert m is not None
    assert [expand(t, m) for t in ("$ts", "${ts}", "$1", "${2}x", "$2x", "$$ts", "$", "${ts", "$0", "$9",
                                   "$4", "$sha-$ts", "$01", "$nope")] == \
        ["1700", "1700", "abc1", "1700x", "", "$ts", "$", "${ts", "abc1-1700", "", "", "abc1-1700", "", ""]


@pytest.mark.parametrize("pattern,matches,misses", [
    (r"^v[[:digit:]]+$", ["v12"], ["vx", "v"]),
    (r"^[[:alpha:]_]+\z", ["abc_"], ["ab1"]),
    (r"^\Qa.b\E$", ["a.b"], ["axb"]),
    (r"^a{,2}$", ["a{,2}"], ["aa"]),  # a literal in RE2, a repetition in Python
    (r"(?i)^MAIN", ["main-1"], ["dev"]),
    (r"^\x{41}$", ["A"], ["B"]),
    (r"^[\d]+$", ["123"], ["١٢٣"]),  # RE2's \d is ASCII
])
def test_go_patterns_match_as_go_matches(pattern: str, matches: list[str], misses: list[str]) -> None:
    rx = compile_go_regex(pattern)
    assert all(rx.search(t) for t in matches) and not any(rx.search(t) for t in misses)


@pytest.mark.parametrize("pattern,why", [
    ("^(?=v)", "look-around"), ("(?<!x)y", "look-around"), (r"(a)\1", "back-references"),
    (r"\pL", "Unicode classes"), ("a++", "possessive"), ("(?U)a+", "ungreedy"), ("a(?i)b", "only at the start"),
    ("(unclosed", "missing ), unterminated subpattern"), (r"\Z", "not Go regexp syntax"),
])
def test_patterns_go_refuses_or_python_cannot_express_are_errors(pattern: str, why: str) -> None:
    with pytest.raises(PolicyError, match=why.replace("(", r"\(").replace(")", r"\)")):
        compile_go_regex(pattern)
