"""Flux's `spec.healthCheckExprs`: CEL expressions that say whether a custom resource is healthy.

Why this exists: kstatus (`reconciler.health`) only knows the built-in kinds and the generic
Ready condition. A Kustomization can tell Flux how to judge any other kind with CEL, and a
revision Flux reports Ready must be one Herald reports healthy, and the other way round. So
this module follows Flux's rules exactly, as read in Flux's own source:

* `fluxcd/pkg` `runtime/cel/status_reader.go`, `status_evaluator.go`, `expression.go` (the
  version kustomize-controller ships, runtime v0.111.0) and `apis/kustomize` (the API type);
* `fluxcd/kustomize-controller` `docs/spec/v1/kustomizations.md` ("Health check
  expressions") and `internal/controller/kustomization_controller.go`;
* `fluxcd/cli-utils` `pkg/kstatus/polling/statusreaders` and `fluxcd/pkg` `ssa/manager_wait.go`
  for what an evaluation error becomes.

The rules:

* Each entry is `{apiVersion, kind, current, inProgress, failed}`. `apiVersion` and `current`
  are required, `kind` is optional. Only the *group* of `apiVersion` is matched; the version
  is ignored. An entry without `kind` applies to every kind of its group, and an entry with
  the object's kind takes precedence over it (`find`). Two entries for the same group and
  kind (or two group-wide entries for one group) are a configuration error, as in Flux.
  An empty `inProgress` or `failed` is the same as none.
* The object is the CEL activation: its top-level fields are the variables (`status`,
  `metadata`, `spec`, `data`, ...). There is no `self`. Flux parses without type-checking
  (CRDs need not have the usual five top-level fields), so any top-level name may be used.
* First, built in: status.observedGeneration and metadata.generation, both integers, that
  differ mean InProgress, whatever the expressions say. Then inProgress, failed, current in
  that order (RFC 0009); the first that is true decides. So failed wins over current when
  both are true (e.g. `filter(...).all(...)` over an empty condition list is true for both).
  None true: InProgress.
* A missing field is not false, it is an error: `status.conditions` on an object without
  `status` fails with "no such attribute(s): status.conditions", on an object whose status
  has no conditions with "no such key: conditions". `has(status.x)` is false when status has
  no x, but an error when there is no `status` at all (Flux's docs warn about it). Flux stops
  at the first expression that errors and reports the object's status as Unknown with the
  error; that is not terminal, so Flux waits until the timeout and then names the error.
  Here `evaluate` raises `EvalError` with Flux's wording; the caller treats it as Unknown.
* A result that is not a boolean is an error too ("failed to evaluate CEL expression as
  boolean").
* An invalid expression is a configuration error (Flux marks the Kustomization Stalled with
  InvalidCELExpression); here `compile_exprs` raises `ExprError` naming the entry and field.

What Flux enables and what Herald can do: Flux's CEL (cel-go) has the standard library and
macros (`has`, `all`, `exists`, `exists_one`, `map`, `filter`), heterogeneous equality and
cross-type numeric comparison (`1 == 1.0`, `'a' == 1` is false), plus the strings, sets and
base64 extensions and optional types. Herald evaluates with cel-python (`celpy`), which has the
standard part but not the extensions nor optional syntax (`.?`, `orValue`), nor the 3-argument
`map`. Rather than give a different answer at run time, an expression that uses any of those
is rejected by `compile_exprs` with an `ExprError` that says so. A call to any function
cel-go does not know is rejected there too (Flux only finds out when it evaluates).

cel-python is adapted where it would otherwise answer differently from cel-go, each change
small and in this file: `has()` propagates an error from its operand (cel-python says
false), field selection reports Flux's error messages, `==`/`!=`/`<`/`in` follow cel-go's
heterogeneous equality and cross-type numeric ordering (cel-python raises on `1 == 1.0`),
`&&`/`||` only absorb errors, not non-boolean values, and the macros follow cel-go's error
rules (`all` is false if any element is false even when another errs; a `filter` predicate
must be a boolean).

Messages: Flux's evaluator returns a bare status with no message. `Verdict.message` is
Herald's: it says which expression decided, or that none did.

Not done here, by the caller: an object whose kind has no entry (`find` returns None) is
judged by kstatus (`reconciler.health`). kustomize-controller consults the expressions only
when `spec.wait` or `spec.healthChecks` is set, and its own Job reader comes before them:
an entry for `batch` `Job` never applies in Flux (and `find` returns None for a Job).
"""

from __future__ import annotations

import functools
import math
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Literal

import celpy
import lark
from celpy import celtypes
from celpy.evaluation import CELEvalError, Evaluator

__all__ = ["EvalError", "ExprError", "HealthExpr", "Verdict", "compile_exprs", "evaluate", "find"]

Status = Literal["Current", "Failed", "InProgress"]

FIELD = "spec.healthCheckExprs"
KEYS = ("apiVersion", "kind", "current", "inProgress", "failed")
# RFC 0009's order: the first that is true decides.
ORDER: tuple[tuple[str, Status], ...] = (("inProgress", "InProgress"), ("failed", "Failed"),
                                         ("current", "Current"))


class ExprError(Exception):
    """A healthCheckExprs entry that cannot be used; the message names the entry and field,
    e.g. ``spec.healthCheckExprs[0].failed: <why>``."""


class EvalError(Exception):
    """An expression that could not be evaluated against an object. Flux reports the object
    as Unknown with this error and keeps waiting (until the timeout); the message is Flux's."""

    def __init__(self, field_name: str, expression: str, reason: str, message: str | None = None):
        self.field = field_name
        self.expression = expression
        self.reason = reason
        super().__init__(message or f"failed to evaluate the CEL expression '{expression}': {reason}")


@dataclass(frozen=True)
class Verdict:
    status: Status
    message: str


@dataclass(frozen=True)
class HealthExpr:
    """One compiled entry. ``kind`` None: every kind of ``group``."""

    index: int
    api_version: str
    group: str
    kind: str | None
    current: str
    in_progress: str | None = None
    failed: str | None = None
    _programs: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def expression(self, name: str) -> str | None:
        return {"current": self.current, "inProgress": self.in_progress, "failed": self.failed}[name]


# ---------------------------------------------------------------------------------------------
# Configuration: compile once.

def compile_exprs(exprs: Sequence[Mapping[str, Any]] | None, *, path: str = FIELD) -> list[HealthExpr]:
    """Validate and compile ``spec.healthCheckExprs``; raise ExprError naming the first problem."""
    if exprs is None:
        return []
    if isinstance(exprs, (str, bytes)) or not isinstance(exprs, Sequence):
        raise ExprError(f"{path}: expected a list, got {_kind_of(exprs)}")
    out: list[HealthExpr] = []
    seen: dict[tuple[str, str | None], int] = {}
    for i, entry in enumerate(exprs):
        where = f"{path}[{i}]"
        if not isinstance(entry, Mapping):
            raise ExprError(f"{where}: expected a mapping, got {_kind_of(entry)}")
        for key in entry:
            if key not in KEYS:
                raise ExprError(f"{where}.{key}: unknown field (expected one of {', '.join(KEYS)})")
        values: dict[str, str] = {}
        for key in KEYS:
            value = entry.get(key)
            if value is None:
                continue
            if not isinstance(value, str):
                raise ExprError(f"{where}.{key}: expected a string, got {_kind_of(value)}")
            values[key] = value
        api_version = values.get("apiVersion", "")
        if not api_version:
            raise ExprError(f"{where}.apiVersion: required")
        group = _group(api_version)
        if group is None:
            raise ExprError(f"{where}.apiVersion: {api_version!r} is not GROUP/VERSION (or VERSION for the core group)")
        kind = values.get("kind") or None
        if not values.get("current"):
            raise ExprError(f"{where}.current: required")
        key2 = (group, kind)
        if key2 in seen:
            what = f"kind {kind}" if kind else "every kind (no kind)"
            raise ExprError(f"{where}: duplicate entry for {what} in group {group or 'core'!r}, "
                            f"already at {path}[{seen[key2]}]")
        seen[key2] = i
        programs: dict[str, Any] = {}
        for name, _status in ORDER:
            text = values.get(name) or None
            if text is not None:
                programs[name] = _compile(text, f"{where}.{name}")
        out.append(HealthExpr(index=i, api_version=api_version, group=group, kind=kind,
                              current=values["current"], in_progress=values.get("inProgress") or None,
                              failed=values.get("failed") or None, _programs=programs))
    return out


def find(exprs: Sequence[HealthExpr], api_version: str, kind: str) -> HealthExpr | None:
    """The entry Flux would use for an object: its group and kind, else its group's group-wide
    entry, else None (kstatus judges it). Versions are ignored. Flux's Job reader comes first,
    so a batch Job never gets one."""
    group = _group(api_version)
    if group is None:  # Flux's schema.FromAPIVersionAndKind drops a malformed apiVersion.
        group = ""
    if (group, kind) == ("batch", "Job"):
        return None
    wide = None
    for e in exprs:
        if e.group != group:
            continue
        if e.kind == kind:
            return e
        if e.kind is None and wide is None:
            wide = e
    return wide


def evaluate(expr: HealthExpr, obj: Mapping[str, Any]) -> Verdict:
    """The object's status as Flux's CEL status reader computes it. Raises EvalError where
    Flux's evaluator returns an error (a missing field, a non-boolean result, ...): Flux then
    reports the object Unknown, which the caller should treat as "not ready yet, say why at the
    timeout". ``obj`` is the object as the API server returns it (JSON: mappings, lists,
    strings, numbers, booleans, null; datetimes from a YAML loader are read as RFC 3339)."""
    observed = _nested(obj, "status", "observedGeneration")
    generation = _nested(obj, "metadata", "generation")
    if _is_int(observed) and _is_int(generation) and observed != generation:
        return Verdict("InProgress", f"status.observedGeneration {observed} is not metadata.generation "
                                     f"{generation}: the controller has not yet seen the latest spec")
    activation = _activation(obj)
    for name, status in ORDER:
        program = expr._programs.get(name)
        if program is None:
            continue
        text = expr.expression(name) or ""
        try:
            value = program.evaluate(activation)
        except CELEvalError as ex:
            raise EvalError(name, text, _reason(ex)) from None
        except RecursionError:
            raise EvalError(name, text, "expression nested too deeply") from None
        except Exception as ex:  # a cel-python failure must not read as healthy
            raise EvalError(name, text, f"cel-python failed: {type(ex).__name__}: {ex}") from ex
        if not isinstance(value, celtypes.BoolType):
            raise EvalError(name, text, f"result is {_type_name(value)}, not bool",
                            message=f"failed to evaluate CEL expression as boolean: '{text}'")
        if value:
            return Verdict(status, f"healthCheckExprs {name} is true: {text}")
    names = " nor ".join(n for n, _s in ORDER if n in expr._programs)
    return Verdict("InProgress", f"healthCheckExprs: neither {names} is true" if " nor " in names
                   else f"healthCheckExprs: {names} is not true")


# ---------------------------------------------------------------------------------------------
# apiVersion, object helpers.

def _group(api_version: str) -> str | None:
    """The group of GROUP/VERSION; '' for a bare VERSION (the core group); None if malformed."""
    parts = api_version.split("/")
    if len(parts) == 1:
        return "" if parts[0] else None
    if len(parts) == 2 and all(parts):
        return parts[0]
    return None


def _nested(obj: Mapping[str, Any], *keys: str) -> Any:
    cur: Any = obj
    for k in keys:
        if not isinstance(cur, Mapping) or k not in cur:
            return None
        cur = cur[k]
    return cur


def _is_int(v: Any) -> bool:
    # Flux uses unstructured.NestedInt64: an integer, not a string or float (nor, here, a bool).
    return isinstance(v, int) and not isinstance(v, bool)


def _kind_of(v: Any) -> str:
    if isinstance(v, Mapping):
        return "a mapping"
    if isinstance(v, (str, bytes)):
        return "a string"
    if isinstance(v, Sequence):
        return "a list"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, (int, float)):
        return "a number"
    return type(v).__name__


_IDENT = re.compile(r"[_a-zA-Z][_a-zA-Z0-9]*\Z")
_INT64 = (-(2 ** 63), 2 ** 63 - 1)


def _activation(obj: Mapping[str, Any]) -> dict[str, Any]:
    # Top-level fields are the variables. A key that is not an identifier cannot be named in CEL.
    return {k: _to_cel(v) for k, v in obj.items() if isinstance(k, str) and _IDENT.match(k)}


def _to_cel(v: Any) -> Any:
    """An object as the API server's JSON decodes it (what Flux's unstructured holds)."""
    if v is None:
        return None
    if isinstance(v, bool):
        return celtypes.BoolType(v)
    if isinstance(v, int):
        # Go decodes an integer beyond int64 as float64.
        return celtypes.IntType(v) if _INT64[0] <= v <= _INT64[1] else celtypes.DoubleType(float(v))
    if isinstance(v, float):
        return celtypes.DoubleType(v)
    if isinstance(v, str):
        return celtypes.StringType(v)
    if isinstance(v, datetime):
        # YAML loaders turn timestamps into datetimes; the API serves RFC 3339 strings.
        u = v.astimezone(UTC) if v.tzinfo else v
        frac = f".{u.microsecond:06d}".rstrip("0") if u.microsecond else ""
        return celtypes.StringType(u.strftime("%Y-%m-%dT%H:%M:%S") + frac + "Z")
    if isinstance(v, date):
        return celtypes.StringType(v.isoformat())
    if isinstance(v, Mapping):
        return celtypes.MapType({celtypes.StringType(_json_key(k)): _to_cel(x) for k, x in v.items()})
    if isinstance(v, Sequence) and not isinstance(v, (bytes, bytearray)):
        return celtypes.ListType([_to_cel(x) for x in v])
    raise TypeError(f"cannot evaluate CEL against a {type(v).__name__}: objects are JSON")


def _json_key(k: Any) -> str:
    if isinstance(k, str):
        return k
    if isinstance(k, bool):
        return "true" if k else "false"
    if isinstance(k, (int, float)):
        return str(k)
    raise TypeError(f"cannot evaluate CEL against a mapping key of type {type(k).__name__}")


def _type_name(v: Any) -> str:
    if v is None:
        return "null"
    for t, name in ((celtypes.BoolType, "bool"), (celtypes.UintType, "uint"), (celtypes.IntType, "int"),
                    (celtypes.DoubleType, "double"), (celtypes.StringType, "string"),
                    (celtypes.BytesType, "bytes"), (celtypes.ListType, "list"), (celtypes.MapType, "map"),
                    (celtypes.TimestampType, "timestamp"), (celtypes.DurationType, "duration")):
        if isinstance(v, t):
            return name
    return type(v).__name__


def _reason(ex: CELEvalError) -> str:
    msg = ex.args[0] if ex.args and isinstance(ex.args[0], str) else str(ex)
    if msg == "no such key" and len(ex.args) > 2 and ex.args[2]:
        msg = f"no such key: {ex.args[2][0]}"
    return msg


# ---------------------------------------------------------------------------------------------
# Compilation and what cel-python cannot do.

# cel-go's standard functions that cel-python has (called as f(x) or x.f(), as cel-go allows).
_FUNCTIONS = frozenset({
    "size", "contains", "startsWith", "endsWith", "matches", "type",
    "int", "uint", "double", "string", "bytes", "bool", "duration", "timestamp",
    "getDate", "getDayOfMonth", "getDayOfWeek", "getDayOfYear", "getFullYear", "getMonth",
    "getHours", "getMinutes", "getSeconds", "getMilliseconds",
})
_MACROS = frozenset({"all", "exists", "exists_one", "filter", "map"})
# What Flux's NewExpression enables beyond the standard library, which cel-python lacks.
_STRINGS = "the CEL strings extension"
_EXTENSIONS: dict[str, str] = {
    **{f: _STRINGS for f in ("charAt", "indexOf", "lastIndexOf", "lowerAscii", "upperAscii", "replace",
                             "split", "substring", "trim", "join", "format", "quote", "reverse")},
    **{f: "CEL optional types" for f in ("hasValue", "value", "or", "orValue", "optMap", "optFlatMap")},
}
_NAMESPACES: dict[str, tuple[str, frozenset[str]]] = {
    "sets": ("the CEL sets extension", frozenset({"contains", "equivalent", "intersects"})),
    "base64": ("the CEL encoders extension", frozenset({"encode", "decode"})),
    "strings": (_STRINGS, frozenset({"quote"})),
    "optional": ("CEL optional types", frozenset({"of", "ofNonZeroValue", "none"})),
}
_UNSUPPORTED = "which Flux enables but Herald's CEL evaluator (cel-python) does not support"
_WRAPPERS = frozenset({"expr", "conditionalor", "conditionaland", "relation", "addition", "multiplication",
                       "unary", "member", "primary", "paren_expr"})


class _Unsupported(Exception):
    pass


def _compile(text: str, where: str) -> Any:
    if not text.strip():
        raise ExprError(f"{where}: empty expression")
    try:
        ast = _env().compile(text)
    except celpy.CELParseError as ex:
        raise ExprError(f"{where}: {_parse_message(text, ex)}") from None
    except Exception as ex:  # noqa: BLE001 - lark may raise others on odd input
        raise ExprError(f"{where}: cannot parse {text!r}: {ex}") from None
    try:
        _check(ast)
    except _Unsupported as ex:
        raise ExprError(f"{where}: {ex}") from None
    return _env().program(ast, functions=_OPERATORS)


def _parse_message(text: str, ex: celpy.CELParseError) -> str:
    where = f" at line {ex.line}, column {ex.column}" if ex.line and ex.column else ""
    if ".?" in text or "[?" in text:
        return (f"syntax error{where}: optional field selection ('.?' or '[?', CEL optional types), "
                f"{_UNSUPPORTED}: {text!r}")
    return f"syntax error{where}: {text!r}"


def _unwrap(node: Any) -> Any:
    while isinstance(node, lark.Tree) and node.data in _WRAPPERS and len(node.children) == 1:
        node = node.children[0]
    return node


def _select(node: Any) -> lark.Tree | None:
    """The field selection `e.f` that `node` is, if it is one."""
    node = _unwrap(node)
    return node if isinstance(node, lark.Tree) and node.data == "member_dot" else None


def _plain_ident(node: Any) -> str | None:
    node = _unwrap(node)
    if isinstance(node, lark.Tree) and node.data == "ident":
        return str(node.children[0])
    return None


def _qualified_name(node: Any) -> str | None:
    """`a.b.c` for a chain of field selections on an identifier, else None."""
    node = _unwrap(node)
    if isinstance(node, lark.Tree) and node.data == "ident":
        return str(node.children[0])
    if isinstance(node, lark.Tree) and node.data == "member_dot":
        head = _qualified_name(node.children[0])
        return f"{head}.{node.children[1]}" if head else None
    return None


def _args(node: Any) -> list[Any]:
    if isinstance(node, lark.Tree) and node.data == "exprlist":
        return list(node.children)
    return []


def _check(ast: lark.Tree) -> None:
    for node in ast.iter_subtrees():
        if node.data == "ident_arg":
            name = str(node.children[0])
            args = _args(node.children[1] if len(node.children) > 1 else None)
            if name == "has":
                if len(args) != 1 or _select(args[0]) is None:
                    raise _Unsupported("has() takes one field selection, as in has(status.conditions)")
            elif name == "dyn":
                if len(args) != 1:
                    raise _Unsupported("dyn() takes one argument")
            else:
                _check_function(name)
        elif node.data == "member_dot_arg":
            target, name = node.children[0], str(node.children[1])
            args = _args(node.children[2] if len(node.children) > 2 else None)
            ns = _plain_ident(target)
            if ns in _NAMESPACES:
                feature, names = _NAMESPACES[ns]
                if name in names:
                    raise _Unsupported(f"function {ns}.{name}() is in {feature}, {_UNSUPPORTED}")
                raise _Unsupported(f"unknown function {ns}.{name}()")
            if name in _MACROS:
                if name == "map" and len(args) == 3:
                    raise _Unsupported(f"the three-argument map(x, predicate, transform) macro, {_UNSUPPORTED}; "
                                       "write .filter(x, predicate).map(x, transform)")
                if len(args) != 2 or _plain_ident(args[0]) is None:
                    raise _Unsupported(f"{name}() takes a variable name and an expression, "
                                       f"as in list.{name}(e, e.status == 'True')")
            else:
                _check_function(name)
        elif node.data == "dot_ident_arg":
            raise _Unsupported(f"a root-scoped function call (.{node.children[0]}()) {_UNSUPPORTED}")
        elif node.data == "member_object":
            raise _Unsupported("message construction (Type{field: value}) is not supported")


def _check_function(name: str) -> None:
    if name in _FUNCTIONS:
        return
    if name in _EXTENSIONS:
        raise _Unsupported(f"function {name}() is in {_EXTENSIONS[name]}, {_UNSUPPORTED}")
    raise _Unsupported(f"unknown function {name}()")


# ---------------------------------------------------------------------------------------------
# Evaluation: cel-python, brought in line with cel-go where the two would answer differently.

class _Missing(CELEvalError):
    """A name that is not in the object: Flux's "no such attribute(s)"."""

    def __init__(self, path: str, tree: lark.Tree | None = None):
        super().__init__(f"no such attribute(s): {path}", tree=tree)
        self.path = path


def _error(msg: str) -> CELEvalError:
    return CELEvalError(msg)


class _Evaluator(Evaluator):
    def sub_evaluator(self, ast: lark.Tree) -> Evaluator:
        return _Evaluator(ast, activation=self.activation)

    def primary(self, tree: lark.Tree) -> Any:
        child = tree.children[0]
        if isinstance(child, lark.Tree) and child.data in ("ident", "dot_ident"):
            name = str(child.children[0])
            try:
                return self.ident_value(name, root_scope=child.data == "dot_ident")
            except KeyError:
                return _Missing(name, tree)
        return super().primary(tree)

    def member_dot(self, tree: lark.Tree) -> Any:
        target_tree, name_token = tree.children
        name = str(name_token)
        target = self.visit(target_tree)
        if isinstance(target, _Missing) and _qualified_name(target_tree):
            return _Missing(f"{target.path}.{name}", tree)
        if isinstance(target, CELEvalError):
            return target
        if isinstance(target, celtypes.MapType):
            key = celtypes.StringType(name)
            if key in target:
                return target[key]
            return CELEvalError(f"no such key: {name}", tree=tree)
        if target is None:
            return CELEvalError(f"no such key: {name} (in null)", tree=tree)
        return super().member_dot(tree)

    def macro_has_eval(self, exprlist: lark.Tree) -> Any:
        select = _select(exprlist.children[0])
        assert select is not None  # _check requires it
        target_tree, name_token = select.children
        name = str(name_token)
        target = self.visit(target_tree)
        if isinstance(target, _Missing) and _qualified_name(target_tree):
            return _Missing(f"{target.path}.{name}", select)
        if isinstance(target, CELEvalError):
            return target
        if isinstance(target, celtypes.MapType):
            return celtypes.BoolType(celtypes.StringType(name) in target)
        return CELEvalError(f"invalid type for field selection: has() on {_type_name(target)}", tree=select)

    def member_dot_arg(self, tree: lark.Tree) -> Any:
        if str(tree.children[1]) in _MACROS:
            return self._macro(tree)
        try:
            return super().member_dot_arg(tree)
        except CELEvalError as ex:
            return ex

    def _macro(self, tree: lark.Tree) -> Any:
        target_tree, name_token, arglist = tree.children
        name = str(name_token)
        target = self.visit(target_tree)
        if isinstance(target, CELEvalError):
            return target
        if isinstance(target, celtypes.MapType):
            items = list(target.keys())
        elif isinstance(target, celtypes.ListType):
            items = list(target)
        else:
            return CELEvalError(f"no such overload: {name}() on {_type_name(target)}", tree=tree)
        var_tree, body = arglist.children
        var = _plain_ident(var_tree)
        sub = self.sub_evaluator(body)

        def run(item: Any) -> Any:
            try:
                return sub.evaluate({var: item})
            except CELEvalError as ex:
                return ex

        def not_bool(r: Any) -> CELEvalError:
            return CELEvalError(f"no such overload: {name}() predicate is {_type_name(r)}, not bool", tree=tree)

        if name in ("all", "exists"):
            decisive = name == "exists"  # all: a false decides; exists: a true decides
            err: CELEvalError | None = None
            for item in items:
                r = run(item)
                if isinstance(r, CELEvalError):
                    err = err or r
                elif not isinstance(r, celtypes.BoolType):
                    err = err or not_bool(r)
                elif bool(r) == decisive:
                    return celtypes.BoolType(decisive)
            return err if err is not None else celtypes.BoolType(not decisive)
        if name == "map":
            out = []
            for item in items:
                r = run(item)
                if isinstance(r, CELEvalError):
                    return r
                out.append(r)
            return celtypes.ListType(out)
        kept, count = [], 0
        for item in items:
            r = run(item)
            if isinstance(r, CELEvalError):
                return r
            if not isinstance(r, celtypes.BoolType):
                return not_bool(r)
            if r:
                kept.append(item)
                count += 1
        if name == "filter":
            return celtypes.ListType(kept)
        return celtypes.BoolType(count == 1)  # exists_one


class _Runner(celpy.InterpretedRunner):
    def evaluate(self, context: Any) -> Any:
        return _Evaluator(ast=self.ast, activation=self.new_activation()).evaluate(context)


@functools.cache
def _env() -> celpy.Environment:
    # Built on first use: loading cel-python's grammar takes a quarter of a second, and
    # celpy.Environment raises the interpreter's recursion limit (to 2500, for deep expressions).
    return celpy.Environment(runner_class=_Runner)

# cel-go's operators: equality across types (false unless numerically equal), ordering across
# numeric types, `in` by that equality, && and || that absorb errors but not non-booleans.

_NUMBERS = (celtypes.IntType, celtypes.UintType, celtypes.DoubleType)


def _num(v: Any) -> int | float:
    return float(v) if isinstance(v, float) else int(v)


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, celtypes.BoolType) or isinstance(b, celtypes.BoolType):
        return isinstance(a, celtypes.BoolType) and isinstance(b, celtypes.BoolType) and bool(a) == bool(b)
    if isinstance(a, _NUMBERS) and isinstance(b, _NUMBERS):
        return _num(a) == _num(b)  # Python compares int and float exactly; NaN equals nothing
    if a is None or b is None:
        return a is None and b is None
    for t in (celtypes.StringType, celtypes.BytesType, celtypes.TimestampType, celtypes.DurationType):
        if isinstance(a, t) or isinstance(b, t):
            return isinstance(a, t) and isinstance(b, t) and operator.eq(a, b)
    if isinstance(a, celtypes.ListType) and isinstance(b, celtypes.ListType):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, celtypes.MapType) and isinstance(b, celtypes.MapType):
        if len(a) != len(b):
            return False
        for k, v in a.items():
            other = _lookup(b, k)
            if other is _ABSENT or not _equal(v, other):
                return False
        return True
    if isinstance(a, type) and isinstance(b, type):  # type(x) == int
        return a is b
    return False


_ABSENT = object()


def _lookup(m: celtypes.MapType, key: Any) -> Any:
    if isinstance(key, celtypes.StringType):
        return dict.get(m, key, _ABSENT)
    for k, v in m.items():
        if _equal(k, key):
            return v
    return _ABSENT


def _compare(a: Any, b: Any) -> int | CELEvalError:
    if isinstance(a, _NUMBERS) and isinstance(b, _NUMBERS):
        x, y = _num(a), _num(b)
        if (isinstance(x, float) and math.isnan(x)) or (isinstance(y, float) and math.isnan(y)):
            return _error("NaN values cannot be ordered")
        return (x > y) - (x < y)
    for t in (celtypes.BoolType, celtypes.StringType, celtypes.BytesType, celtypes.TimestampType,
              celtypes.DurationType):
        if isinstance(a, t) and isinstance(b, t):
            return (a > b) - (a < b)
    return _error(f"no such overload: {_type_name(a)} compared with {_type_name(b)}")


def _ordering(op: Callable[[int, int], bool]) -> Callable[[Any, Any], Any]:
    def f(a: Any, b: Any) -> Any:
        for v in (a, b):
            if isinstance(v, CELEvalError):
                return v
        c = _compare(a, b)
        return c if isinstance(c, CELEvalError) else celtypes.BoolType(op(c, 0))
    return f


def _eq(a: Any, b: Any) -> Any:
    for v in (a, b):
        if isinstance(v, CELEvalError):
            return v
    return celtypes.BoolType(_equal(a, b))


def _ne(a: Any, b: Any) -> Any:
    r = _eq(a, b)
    return r if isinstance(r, CELEvalError) else celtypes.BoolType(not r)


def _in(item: Any, container: Any) -> Any:
    for v in (item, container):
        if isinstance(v, CELEvalError):
            return v
    if isinstance(container, celtypes.MapType):
        return celtypes.BoolType(_lookup(container, item) is not _ABSENT)
    if isinstance(container, celtypes.ListType):
        return celtypes.BoolType(any(_equal(item, x) for x in container))
    return _error(f"no such overload: {_type_name(item)} in {_type_name(container)}")


def _logic(decisive: bool, op: str) -> Callable[[Any, Any], Any]:
    def f(x: Any, y: Any) -> Any:
        for v in (x, y):
            if isinstance(v, celtypes.BoolType) and bool(v) == decisive:
                return celtypes.BoolType(decisive)
        if isinstance(x, celtypes.BoolType) and isinstance(y, celtypes.BoolType):
            return celtypes.BoolType(not decisive)
        for v in (x, y):
            if isinstance(v, CELEvalError):
                return v
        return _error(f"no such overload: {_type_name(x)} {op} {_type_name(y)}")
    return f


_OPERATORS: dict[str, Any] = {
    "_==_": _eq,
    "_!=_": _ne,
    "_<_": _ordering(operator.lt),
    "_<=_": _ordering(operator.le),
    "_>_": _ordering(operator.gt),
    "_>=_": _ordering(operator.ge),
    "_in_": _in,
    "_&&_": _logic(False, "&&"),
    "_||_": _logic(True, "||"),
}
