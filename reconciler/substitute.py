"""Flux's post-build variable substitution (`spec.postBuild`), as pure functions.

Why: a Flux Kustomization with `spec.postBuild` does not apply what kustomize built; the
kustomize-controller first replaces `${var}` expressions in every built object with variables
from `spec.postBuild.substitute` and from the ConfigMaps and Secrets named in
`spec.postBuild.substituteFrom`. Herald plans, previews and applies the same objects, so it has
to make the same text out of them, quirks included, or its diffs and applies would differ from
what Flux sends to the cluster.

The behaviour followed, read in Flux's source:

* the expression language is fluxcd/pkg `envsubst` (a fork of drone/envsubst): `${var}`, the
  defaults `${var=d}` `${var:=d}` `${var:-d}` (and `${var:?d}` `${var:+d}`, which its parser
  accepts and treats as one more default, not as bash does), `${#var}`, `${var^}` `${var^^}`
  `${var,}` `${var,,}`, `${var:pos}` `${var:pos:len}`, `${var#pat}` `${var##pat}` `${var%pat}`
  `${var%%pat}` (glob patterns), `${var/old/new}` `${var//old/new}` `${var/#old/new}`
  `${var/%old/new}` (literal text, not patterns), defaults and arguments nested (`${a:=${b}}`).
  `$$` is a literal `$` (so `$${var}` prints `${var}`), a bare `$var` is left alone, and
  `${var-d}` / `${var+d}` / `${var?d}` are syntax errors (the README lists `${var-d}`, the
  parser rejects it). Lengths, offsets and trimming count bytes of UTF-8, as Go does. An unset
  variable is the empty string, and a default applies to an empty variable as to an unset one.
* fluxcd/pkg `kustomize/kustomize_varsub.go`: variables come from each `substituteFrom` entry in
  order, a later one overriding an earlier one's keys, then from the inline `substitute`, which
  overrides them all; a missing `optional: true` reference is skipped; every newline is removed
  from every value; names must match `^[_[:alpha:]][_[:alpha:][:digit:]]*$`; an object labelled
  or annotated `kustomize.toolkit.fluxcd.io/substitute: disabled` (exact, case-sensitive value)
  is left untouched; and the whole YAML text of each object is substituted, then parsed again.
* kustomize-controller v1.9: strict mode (the `StrictPostBuildSubstitutions` feature gate, on by
  default since v1.9, hence `FLUX_DEFAULT_STRICT`) makes a variable that is not set an error,
  unless its expression supplies a default; substitution runs only when at least one variable is
  defined, unless `spec.postBuild.substituteStrategy` is `Always` (`substitute_always`).

What the caller must know: `text` must be the object's YAML as kustomize prints it (JSON turned
into YAML: sorted keys, and quotes only where YAML needs them). A source file's `"${n}"` has
lost its quotes by then, so in Flux `replicas: "${n}"` becomes the integer `3`; Flux's docs
recommend `${quote}${n}${quote}` with `quote: '"'`. The result is parsed again with
sigs.k8s.io/yaml (go-yaml v2, YAML 1.1 scalars: `yes`, `on` are booleans there).

Where Herald differs on purpose (each is a failure in Flux too, only reported better here):

* `${var:pos:len}` whose end falls before its start (a negative length) makes Go panic; here it
  is a SubstituteError.
* An offset or pattern that cuts a multi-byte character leaves invalid UTF-8, which Flux's YAML
  parser then rejects; here `envsubst` raises a SubstituteError itself.
* Variable names are checked when collected, naming the field; Flux checks them per object when
  it substitutes, so it does not fail when every object has substitution disabled.
* `substituteFrom` entries and inline values are checked as the Kustomization CRD's schema would
  (the API server rejects what fails it; Herald reads the YAML from Git, without that server).
* Messages name the field, the variable or the line and column of the expression, and never
  contain a variable's value or the document's text: a value may come from a Secret, and a
  document may be a decrypted Secret.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

SUBSTITUTE_KEY = "kustomize.toolkit.fluxcd.io/substitute"
DISABLED = "disabled"
# The kustomize-controller's StrictPostBuildSubstitutions feature gate: on by default from v1.9.
FLUX_DEFAULT_STRICT = True
# Flux's regular expression, spelled as Flux spells it (RE2's [:alpha:] and [:digit:] are ASCII).
VARIABLE_NAME_PATTERN = "^[_[:alpha:]][_[:alpha:][:digit:]]*$"
_VARIABLE_NAME = re.compile(r"[_A-Za-z][_A-Za-z0-9]*")
# The Kustomization CRD: substituteFrom[].name has 1 to 253 characters.
_MAX_REF_NAME = 253


class SubstituteError(Exception):
    """A postBuild substitution that Flux would not carry out either."""


# --- The expression language (fluxcd/pkg/envsubst) ---------------------------------------------


@dataclass(frozen=True)
class _Expr:
    """One `${...}`: the variable, the operator ("" for a plain `${var}`), its arguments."""

    name: str
    op: str
    args: tuple[_Node, ...]
    at: int  # index of its "${" in the text, for messages


_Node = str | _Expr

# Operators that supply their own value for an unset variable: strict mode lets them be.
_DEFAULT_OPS = frozenset({"=", ":=", ":-", ":?", ":+"})


def _where(text: str, at: int) -> str:
    line = text.count("\n", 0, at) + 1
    column = at - (text.rfind("\n", 0, at) + 1) + 1
    return f"line {line}, column {column}"


def _is_name_char(ch: str) -> bool:
    # Go's unicode.IsLetter / unicode.IsDigit / '_': the parser reads any Unicode letter, even
    # though no variable with such a name can be defined (the name check is ASCII).
    return ch == "_" or ch.isalpha() or ch.isdecimal()


class _Parser:
    """The grammar of fluxcd/pkg/envsubst's scanner and parser, quirks included."""

    def __init__(self, text: str) -> None:
        # Go's scanner takes a NUL character for the end of its input: nothing after it is read.
        self.text = text.split("\x00", 1)[0]
        self.n = len(self.text)

    def fail(self, at: int, what: str) -> NoReturn:
        raise SubstituteError(f"bad substitution at {_where(self.text, at)}: {what}")

    def peek(self, i: int) -> str | None:
        return self.text[i] if i < self.n else None

    def parse(self) -> list[_Node]:
        nodes: list[_Node] = []
        i = 0
        while i < self.n:
            if self.text.startswith("${", i):
                expr, i = self.expression(i)
                nodes.append(expr)
            else:
                literal, i = self.literal(i)
                nodes.append(literal)
        return nodes

    def literal(self, i: int) -> tuple[str, int]:
        """Text outside `${...}`: `$$` is one `$`, any other `$` is itself."""
        text, out = self.text, []
        while i < self.n:
            j = text.find("$", i)
            if j < 0:
                out.append(text[i:])
                return "".join(out), self.n
            out.append(text[i:j])
            if text.startswith("${", j):  # never at the start: the caller saw none there
                return "".join(out), j
            out.append("$")
            i = j + 2 if text.startswith("$$", j) else j + 1
        return "".join(out), i

    def name(self, i: int) -> tuple[str, int]:
        j = i
        while j < self.n and _is_name_char(self.text[j]):
            j += 1
        return self.text[i:j], j

    def close(self, i: int, at: int, what: str = "expected '}'") -> int:
        if self.peek(i) != "}":
            self.fail(at, what)
        return i + 1

    def expression(self, at: int) -> tuple[_Expr, int]:
        i = at + 2
        if self.peek(i) == "#":  # ${#var}
            name, i = self.name(i + 1)
            if not name:
                self.fail(at, "'${#' must be followed by a variable name")
            return _Expr(name, "#", (), at), self.close(i, at)
        name, i = self.name(i)
        if not name:
            self.fail(at, "unable to parse the variable name")
        c = self.peek(i)
        if c == ":":
            after = self.peek(i + 1)
            if after is not None and after in "=-?+":
                return self.defaults(name, ":" + after, i + 2, at)
            if after is None or after > "\x7f":
                # Go's parser steps back by the width of the character after ':' rather than
                # the ':' itself, so a multi-byte character there is always a syntax error.
                self.fail(at, "expected an offset after ':'")
            return self.substring(name, i + 1, at)
        if c == "=":
            return self.defaults(name, "=", i + 1, at)
        if c is not None and c in ",^":
            op = c
            if self.peek(i + 1) in (",", "^"):
                op += self.text[i + 1]
            return _Expr(name, op, (), at), self.close(i + len(op), at)
        if c == "/":
            return self.replacement(name, i, at)
        if c is not None and c in "#%":
            op = c * 2 if self.peek(i + 1) == c else c
            arg, i = self.argument(i + len(op), "}", False, at)
            return _Expr(name, op, (arg,), at), self.close(i, at)
        return _Expr(name, "", (), at), self.close(i, at, "missing closing brace")

    def defaults(self, name: str, op: str, i: int, at: int) -> tuple[_Expr, int]:
        args: list[_Node] = []
        while self.peek(i) != "}":
            arg, i = self.argument(i, "}", False, at)
            args.append(arg)
        return _Expr(name, op, tuple(args), at), i + 1

    def substring(self, name: str, i: int, at: int) -> tuple[_Expr, int]:
        offset, i = self.argument(i, ":}", False, at)
        if self.peek(i) == "}":
            return _Expr(name, ":", (offset,), at), i + 1
        if self.peek(i) != ":":
            self.fail(at, "expected ':' or '}' after the offset")
        while self.peek(i) == ":":
            i += 1
        length, i = self.argument(i, "}", False, at)
        return _Expr(name, ":", (offset, length), at), self.close(i, at)

    def replacement(self, name: str, i: int, at: int) -> tuple[_Expr, int]:
        op = "/"
        if self.peek(i + 1) in ("/", "#", "%"):
            op += self.text[i + 1]
        old, i = self.argument(i + len(op), "/", True, at)
        if self.peek(i) != "/":
            self.fail(at, "expected '/' after the pattern")
        while self.peek(i) == "/":
            i += 1
        if self.peek(i) == "}":
            return _Expr(name, op, (old,), at), i + 1
        new, i = self.argument(i, "}", True, at)
        return _Expr(name, op, (old, new), at), self.close(i, at)

    def argument(self, i: int, stops: str, escapes: bool, at: int) -> tuple[_Node, int]:
        """One argument: a nested `${...}`, or text up to a stop character or a `${`.

        With `escapes` (the arguments of `${var/old/new}` only), `$$`, `\\/` and `\\\\` stand
        for `$`, `/` and `\\`, even where the character would otherwise end the argument.
        """
        if i >= self.n:
            self.fail(at, "unexpected end of text")
        if self.text.startswith("${", i):
            return self.expression(i)
        text, out = self.text, []
        first = True
        while i < self.n:
            if not first and text.startswith("${", i):
                break
            ch = text[i]
            nxt = text[i + 1] if i + 1 < self.n else ""
            if escapes and ((ch == "$" and nxt == "$") or (ch == "\\" and nxt in ("/", "\\"))):
                out.append(nxt)
                i += 2
            elif ch in stops:
                if first:
                    self.fail(at, f"unexpected {ch!r}")
                break
            else:
                out.append(ch)
                i += 1
            first = False
        return "".join(out), i


# Go maps case one character to one character (Unicode's simple mappings); Python's str.upper
# and str.lower use the full ones, which turn a few characters into several. For those, the
# simple mapping is the character itself except for these.
_SIMPLE_UPPER = {
    **{chr(c): chr(c + 8) for base in (0x1F80, 0x1F90, 0x1FA0) for c in range(base, base + 8)},
    "\u1fb3": "\u1fbc",
    "\u1fc3": "\u1fcc",
    "\u1ff3": "\u1ffc",
}
_SIMPLE_LOWER = {"\u0130": "i"}


def _upper_char(ch: str) -> str:
    mapped = ch.upper()
    return mapped if len(mapped) == 1 else _SIMPLE_UPPER.get(ch, ch)


def _lower_char(ch: str) -> str:
    mapped = ch.lower()
    return mapped if len(mapped) == 1 else _SIMPLE_LOWER.get(ch, ch)


def _decode_rune(b: bytes, i: int) -> tuple[int, int]:
    """Go's utf8.DecodeRune of b[i:]: (U+FFFD, 1) for a byte that starts no valid sequence."""
    c = b[i]
    if c < 0x80:
        return c, 1
    n = 2 if 0xC2 <= c <= 0xDF else 3 if 0xE0 <= c <= 0xEF else 4 if 0xF0 <= c <= 0xF4 else 0
    if n and i + n <= len(b):
        try:
            return ord(b[i : i + n].decode("utf-8")), n
        except UnicodeDecodeError:
            pass
    return 0xFFFD, 1


def _runes(b: bytes) -> list[bytes]:
    """b split into UTF-8 sequences as Go steps through it (an invalid byte on its own)."""
    out, i = [], 0
    while i < len(b):
        _, n = _decode_rune(b, i)
        out.append(b[i : i + n])
        i += n
    return out


def _reverse(b: bytes) -> bytes:
    """Go's `string(reversed []rune(s))`: an invalid byte becomes U+FFFD."""
    chars = []
    i = 0
    while i < len(b):
        r, n = _decode_rune(b, i)
        chars.append(chr(r))
        i += n
    return "".join(reversed(chars)).encode("utf-8")


def _atoi(b: bytes) -> int | None:
    """Go's strconv.Atoi: an optional sign and decimal digits that fit in 64 bits."""
    if not re.fullmatch(rb"[+-]?[0-9]+", b):
        return None
    value = int(b)
    return value if -(2**63) <= value < 2**63 else None


def _wrap64(value: int) -> int:
    return (value + 2**63) % 2**64 - 2**63


def _replace(s: bytes, old: bytes, new: bytes, count: int) -> bytes:
    """Go's strings.Replace: an empty `old` matches at the start and after each character."""
    if old:
        return s.replace(old, new, count)
    if count == 1:
        return new + s
    return new + b"".join(r + new for r in _runes(s))


class _BadPattern(Exception):
    pass


def _glob(pattern: bytes, name: bytes) -> bool:
    """Flux's fork of Go's path.Match: `*` also matches '/', and a trailing `*` matches the rest.

    Works on bytes as Go does; raises _BadPattern where Go returns ErrBadPattern (which it only
    notices when matching gets that far).
    """
    while pattern:
        star, chunk, pattern = _scan_chunk(pattern)
        if star and not chunk:
            return True
        rest = _match_chunk(chunk, name)
        if rest is not None and (not rest or pattern):
            name = rest
            continue
        if star:
            for skip in range(1, len(name) + 1):
                rest = _match_chunk(chunk, name[skip:])
                if rest is not None:
                    if not pattern and rest:
                        continue
                    name = rest
                    break
            else:
                return False
            continue
        return False
    return not name


def _scan_chunk(pattern: bytes) -> tuple[bool, bytes, bytes]:
    star = False
    while pattern[:1] == b"*":
        pattern, star = pattern[1:], True
    in_range, i = False, 0
    while i < len(pattern):
        c = pattern[i : i + 1]
        if c == b"\\":
            if i + 1 < len(pattern):
                i += 1
        elif c == b"[":
            in_range = True
        elif c == b"]":
            in_range = False
        elif c == b"*" and not in_range:
            break
        i += 1
    return star, pattern[:i], pattern[i:]


def _match_chunk(chunk: bytes, s: bytes) -> bytes | None:
    """What is left of s after chunk (no stars) matched its start, or None."""
    while chunk:
        if not s:
            return None
        c = chunk[:1]
        if c == b"[":
            r, n = _decode_rune(s, 0)
            s, chunk = s[n:], chunk[1:]
            negated = chunk[:1] == b"^"
            if negated:
                chunk = chunk[1:]
            matched, ranges = False, 0
            while not (chunk[:1] == b"]" and ranges > 0):
                lo, chunk = _class_char(chunk)
                hi = lo
                if chunk[:1] == b"-":
                    hi, chunk = _class_char(chunk[1:])
                matched = matched or lo <= r <= hi
                ranges += 1
            chunk = chunk[1:]
            if matched == negated:
                return None
        elif c == b"?":
            _, n = _decode_rune(s, 0)
            s, chunk = s[n:], chunk[1:]
        else:
            if c == b"\\":
                chunk = chunk[1:]
                if not chunk:
                    raise _BadPattern
            if chunk[:1] != s[:1]:
                return None
            s, chunk = s[1:], chunk[1:]
    return s


def _class_char(chunk: bytes) -> tuple[int, bytes]:
    if not chunk or chunk[:1] in (b"-", b"]"):
        raise _BadPattern
    if chunk[:1] == b"\\":
        chunk = chunk[1:]
        if not chunk:
            raise _BadPattern
    r, n = _decode_rune(chunk, 0)
    rest = chunk[n:]
    if (r == 0xFFFD and n == 1) or not rest:
        raise _BadPattern
    return r, rest


def _trim_prefix(s: bytes, pattern: bytes, longest: bool) -> bytes:
    """`${var#pat}` / `${var##pat}`: Flux tries the prefixes from longest to one byte long (never
    the empty one), and leaves s alone when the pattern is malformed."""
    shortest = b""
    for end in range(len(s), 0, -1):
        try:
            matched = _glob(pattern, s[:end])
        except _BadPattern:
            return s
        if matched:
            if longest:
                return s[end:]
            shortest = s[:end]
    return s[len(shortest) :]


def _trim_suffix(s: bytes, pattern: bytes, longest: bool) -> bytes:
    # As Flux does it: the prefix trim of the reversed value with the reversed pattern.
    return _reverse(_trim_prefix(_reverse(s), _reverse(pattern), longest))


def _substring(s: bytes, args: list[bytes], expr: _Expr, text: str) -> bytes:
    offset = _atoi(args[0])
    if offset is None:
        return s  # as bash does for an offset it cannot read
    size = len(s)
    if offset < 0:
        offset = max(size + offset, 0)
    if len(args) == 1:
        return s[offset:] if offset < size else b""
    length = _atoi(args[1])
    if length is None:
        return s
    end = _wrap64(offset + length)
    if end >= size:
        return s[offset:] if offset < size else b""
    if end < offset:
        # Go slices s[offset:end] here and panics.
        raise SubstituteError(
            f"${{{expr.name}:offset:length}} at {_where(text, expr.at)} ends before it starts "
            "(a negative length): Flux's controller fails on it too"
        )
    return s[offset:end]


class _Evaluator:
    def __init__(self, text: str, variables: Mapping[str, str], strict: bool) -> None:
        self.text = text
        self.variables = variables
        self.strict = strict

    def node(self, node: _Node) -> bytes:
        if isinstance(node, str):
            return node.encode("utf-8")
        return self.expression(node)

    def expression(self, expr: _Expr) -> bytes:
        # Arguments first, as Flux does: a nested unset variable fails strict mode even where
        # the outer variable is set.
        args = [self.node(arg) for arg in expr.args]
        value = self.variables.get(expr.name)
        if value is None:
            if self.strict and expr.op not in _DEFAULT_OPS:
                raise SubstituteError(
                    f"variable '{expr.name}' not set (strict mode, and no default) at "
                    f"{_where(self.text, expr.at)}"
                )
            value = ""
        op = expr.op
        if op in ("", ",^", "^,") or op in _DEFAULT_OPS:
            # Flux's default function; for "", ",^" and "^," there is no argument.
            return b"".join(args) if not value and args else value.encode("utf-8")
        if op == "#" and not args:
            return str(len(value.encode("utf-8"))).encode("ascii")
        if op in ("^^", ",,"):
            case = _upper_char if op == "^^" else _lower_char
            return "".join(map(case, value)).encode("utf-8")
        if op in ("^", ","):
            case = _upper_char if op == "^" else _lower_char
            return (case(value[:1]) + value[1:]).encode("utf-8") if value else b""
        s = value.encode("utf-8")
        if op == ":":
            return _substring(s, args, expr, self.text)
        if op in ("#", "##"):
            return _trim_prefix(s, args[0], longest=op == "##")
        if op in ("%", "%%"):
            return _trim_suffix(s, args[0], longest=op == "%%")
        old, new = args[0], args[1] if len(args) > 1 else b""
        if op == "/":
            return _replace(s, old, new, 1)
        if op == "//":
            return _replace(s, old, new, -1)
        if len(args) != 2:  # "/#" and "/%" without a replacement leave the value alone
            return s
        if op == "/#":
            return new + s[len(old) :] if s.startswith(old) else s
        return s[: len(s) - len(old)] + new if s.endswith(old) else s  # "/%"


def envsubst(text: str, variables: Mapping[str, str], *, strict: bool = False) -> str:
    """Expand the `${...}` expressions in text as Flux's envsubst does.

    An unset variable is the empty string, or, with `strict`, a SubstituteError unless its
    expression supplies a default. A value is inserted as it is, never expanded again. A syntax
    error anywhere fails the whole text, as in Flux.
    """
    parser = _Parser(text)
    nodes = parser.parse()
    evaluator = _Evaluator(parser.text, variables, strict)
    out = b"".join(evaluator.node(node) for node in nodes)
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError:
        raise SubstituteError(
            "the substitution cut a multi-byte character in two (an offset, a length or a "
            "pattern counts bytes), which is not valid UTF-8 and fails Flux's YAML parser too"
        ) from None


# --- The Kustomization's postBuild (fluxcd/pkg kustomize/kustomize_varsub.go) -----------------


def _check_name(name: object, where: str) -> str:
    if not isinstance(name, str) or not _VARIABLE_NAME.fullmatch(name):
        raise SubstituteError(
            f"{where}variable name {str(name)!r} is invalid: it must match "
            f"'{VARIABLE_NAME_PATTERN}'"
        )
    return name


def substitution_disabled(obj: Mapping[str, Any]) -> bool:
    """Whether obj's labels or annotations hold `kustomize.toolkit.fluxcd.io/substitute:
    disabled`: that key exactly, and that value exactly (Flux compares case-sensitively)."""
    metadata = obj.get("metadata")
    if not isinstance(metadata, Mapping):
        return False
    for field in ("labels", "annotations"):
        values = metadata.get(field)
        if isinstance(values, Mapping) and values.get(SUBSTITUTE_KEY) == DISABLED:
            return True
    return False


def substitute_always(post_build: Mapping[str, Any] | None) -> bool:
    """Whether `spec.postBuild.substituteStrategy` is `Always`: substitute even with no
    variable defined (so `${var:=default}` still expands). `WithVariables`, the default, leaves
    the objects alone when no variable is defined."""
    strategy = post_build.get("substituteStrategy") if isinstance(post_build, Mapping) else None
    if strategy in (None, "", "WithVariables"):
        return False
    if strategy == "Always":
        return True
    raise SubstituteError(
        f"spec.postBuild.substituteStrategy: {strategy!r} is not WithVariables or Always"
    )


def collect_variables(
    post_build: Mapping[str, Any] | None,
    lookup: Callable[[str, str], Mapping[str, str] | None],
) -> dict[str, str]:
    """The variables of a Kustomization's `spec.postBuild`, as Flux merges them.

    `substituteFrom` entries in order, each later one overriding the keys of earlier ones, then
    the inline `substitute`, overriding all of them. `lookup(kind, name)` returns the data of the
    ConfigMap or Secret (a Secret's already decoded), or None when it does not exist. Newlines
    are removed from every value, as Flux does.
    """
    if post_build is None:
        return {}
    if not isinstance(post_build, Mapping):
        raise SubstituteError("spec.postBuild: must be a mapping")
    variables: dict[str, str] = {}

    refs = post_build.get("substituteFrom")
    if refs is not None and not isinstance(refs, list):
        raise SubstituteError("spec.postBuild.substituteFrom: must be a list")
    for index, ref in enumerate(refs or []):
        field = f"spec.postBuild.substituteFrom[{index}]"
        if not isinstance(ref, Mapping):
            raise SubstituteError(f"{field}: must be a mapping with kind and name")
        kind, name, optional = ref.get("kind"), ref.get("name"), ref.get("optional", False)
        if kind not in ("ConfigMap", "Secret"):
            raise SubstituteError(f"{field}.kind: {kind!r} is not ConfigMap or Secret")
        if not isinstance(name, str) or not 1 <= len(name) <= _MAX_REF_NAME:
            raise SubstituteError(f"{field}.name: must be a name of 1 to 253 characters")
        if optional is None:
            optional = False
        if not isinstance(optional, bool):
            raise SubstituteError(f"{field}.optional: must be true or false")
        data = lookup(kind, name)
        if data is None:
            if optional:
                continue
            raise SubstituteError(f"{field}: {kind} '{name}' not found")
        for key, value in data.items():
            _check_name(key, f"{field}: {kind} '{name}': ")
            if not isinstance(value, str):
                raise SubstituteError(f"{field}: {kind} '{name}': key '{key}' is not text")
            variables[key] = value.replace("\n", "")

    inline = post_build.get("substitute")
    if inline is not None and not isinstance(inline, Mapping):
        raise SubstituteError("spec.postBuild.substitute: must be a mapping of names to text")
    for key, value in (inline or {}).items():
        _check_name(key, "spec.postBuild.substitute: ")
        if not isinstance(value, str):
            # The CRD declares a map of strings: the API server refuses `replicas: 3` unquoted.
            raise SubstituteError(
                f"spec.postBuild.substitute.{key}: must be a string (quote it), "
                f"not {type(value).__name__}"
            )
        variables[key] = value.replace("\n", "")
    return variables


def substitute_document(
    text: str,
    obj: Mapping[str, Any],
    variables: Mapping[str, str],
    *,
    strict: bool = False,
    always: bool = False,
) -> str | None:
    """One built object's YAML (`text`, as kustomize printed it; `obj`, the same parsed), with
    its variables substituted; None when substitution is disabled for it (keep the original).

    With no variable and not `always` (`substitute_always`), Flux leaves the text as it is, and
    so does this. The caller parses the result again: `replicas: ${n}` with n="3" is the integer
    3, as in Flux.
    """
    if substitution_disabled(obj):
        return None
    if not variables and not always:
        return text
    for key in variables:
        _check_name(key, "")
    try:
        return envsubst(text, variables, strict=strict)
    except SubstituteError as error:
        metadata = obj.get("metadata")
        name = metadata.get("name") if isinstance(metadata, Mapping) else None
        raise SubstituteError(f"{obj.get('kind')}/{name}: {error}") from None
