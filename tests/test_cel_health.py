"""A Kustomization's `spec.healthCheckExprs` judge custom resources as Flux judges them.

Flux (fluxcd/pkg runtime/cel) evaluates inProgress, failed, current in that order after a
built-in observedGeneration check, calls an object InProgress when none is true, and reports
an expression that cannot be evaluated (a missing field) as an error, not as false. Each case
is a custom resource as its controller leaves it and the status Flux gives it; the
expressions are the ones Flux's documentation and its CEL cheatsheet publish.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import yaml

from reconciler.cel_health import (
    EvalError,
    ExprError,
    HealthExpr,
    Verdict,
    compile_exprs,
    evaluate,
    find,
)


def cond(ctype: str, status: str, reason: str = "", message: str = "") -> dict[str, str]:
    return {"type": ctype, "status": status, "reason": reason, "message": message}


def obj(api_version: str, kind: str, status: dict | None = None, spec: dict | None = None,
        generation: int = 1) -> dict[str, Any]:
    out: dict[str, Any] = {"apiVersion": api_version, "kind": kind,
                           "metadata": {"name": "x", "namespace": "shop", "generation": generation}}
    if spec is not None:
        out["spec"] = spec
    if status is not None:
        out["status"] = status
    return out


def one(**entry: str) -> HealthExpr:
    return compile_exprs([entry])[0]


# The cheatsheet's expressions for cert-manager (ClusterIssuer; a Certificate is alike).
READY_FAILED = "status.conditions.filter(e, e.type == 'Ready').all(e, e.status == 'False')"
READY_CURRENT = "status.conditions.filter(e, e.type == 'Ready').all(e, e.status == 'True')"
CERTIFICATE = one(apiVersion="cert-manager.io/v1", kind="Certificate", failed=READY_FAILED, current=READY_CURRENT)


def certificate(*conditions: dict[str, str], generation: int = 1, observed: int | None = 1) -> dict[str, Any]:
    status: dict[str, Any] = {"conditions": list(conditions)}
    if observed is not None:
        status["observedGeneration"] = observed
    return obj("cert-manager.io/v1", "Certificate", status, {"secretName": "shop-tls"}, generation)


# --- cert-manager: current, failed, in progress ------------------------------------------------

def test_a_certificate_whose_ready_condition_is_true_is_current():
    v = evaluate(CERTIFICATE, certificate(cond("Ready", "True", "Ready"), cond("Issuing", "False")))
    assert v == Verdict("Current", f"healthCheckExprs current is true: {READY_CURRENT}")


def test_a_certificate_whose_ready_condition_is_false_has_failed():
    v = evaluate(CERTIFICATE, certificate(cond("Ready", "False", "DoesNotExist", "Issuer not found")))
    assert v.status == "Failed"
    assert "failed is true" in v.message


def test_a_certificate_with_ready_unknown_is_in_progress_because_no_expression_is_true():
    v = evaluate(CERTIFICATE, certificate(cond("Ready", "Unknown", "Pending")))
    assert v == Verdict("InProgress", "healthCheckExprs: neither failed nor current is true")


def test_a_certificate_whose_controller_has_not_seen_the_new_generation_is_in_progress_whatever_it_says():
    # Flux checks status.observedGeneration against metadata.generation before any expression.
    v = evaluate(CERTIFICATE, certificate(cond("Ready", "True"), generation=3, observed=2))
    assert v.status == "InProgress"
    assert "observedGeneration 2" in v.message and "generation 3" in v.message


def test_an_observed_generation_that_is_not_an_integer_is_left_to_the_expressions():
    # As Flux (NestedInt64): some CRDs type it as a string; then only the expressions decide.
    e = one(apiVersion="example.com/v1", current="status.observedGeneration == '2'")
    v = evaluate(e, {"metadata": {"generation": 2}, "status": {"observedGeneration": "2"}})
    assert v.status == "Current"


# --- A missing status is an error, as in Flux (Unknown, wait until the timeout) ----------------

def test_a_certificate_just_created_without_a_status_cannot_be_evaluated():
    with pytest.raises(EvalError) as err:
        evaluate(CERTIFICATE, obj("cert-manager.io/v1", "Certificate"))
    # Flux's exact wording; failed is evaluated before current, so it is the one that errs.
    assert str(err.value) == (f"failed to evaluate the CEL expression '{READY_FAILED}': "
                              "no such attribute(s): status.conditions")
    assert err.value.field == "failed"


def test_a_status_without_conditions_is_an_error_naming_the_missing_key():
    with pytest.raises(EvalError, match="no such key: conditions$"):
        evaluate(CERTIFICATE, obj("cert-manager.io/v1", "Certificate", {"observedGeneration": 1}))


def test_has_is_false_for_a_missing_field_but_an_error_when_the_status_itself_is_missing():
    e = one(apiVersion="bitnami.com/v1alpha1", kind="SealedSecret",
            inProgress="has(status.observedGeneration) && metadata.generation != status.observedGeneration",
            current="has(status.conditions)")
    assert evaluate(e, obj("bitnami.com/v1alpha1", "SealedSecret", {})).status == "InProgress"
    assert evaluate(e, obj("bitnami.com/v1alpha1", "SealedSecret", {"conditions": []})).status == "Current"
    with pytest.raises(EvalError, match=r"no such attribute\(s\): status.observedGeneration$"):
        evaluate(e, {"metadata": {"generation": 1}})


def test_the_first_expression_that_errs_stops_the_evaluation_even_if_a_later_one_is_true():
    e = one(apiVersion="example.com/v1", inProgress="status.phase == 'Pending'", current="true")
    with pytest.raises(EvalError) as err:
        evaluate(e, {"status": {}})
    assert err.value.field == "inProgress"


def test_an_expression_that_is_not_a_boolean_is_an_error_as_in_flux():
    e = one(apiVersion="example.com/v1", current="status.phase")
    with pytest.raises(EvalError, match=r"^failed to evaluate CEL expression as boolean: 'status.phase'$"):
        evaluate(e, {"status": {"phase": "Ready"}})


# --- Precedence: inProgress, then failed, then current ----------------------------------------

def test_when_failed_and_current_are_both_true_the_object_has_failed():
    e = one(apiVersion="example.com/v1", failed="data.failed", current="data.current")
    assert evaluate(e, {"data": {"failed": True, "current": True}}).status == "Failed"


def test_when_all_three_are_true_the_object_is_in_progress():
    e = one(apiVersion="example.com/v1", inProgress="data.p", failed="data.f", current="data.c")
    assert evaluate(e, {"data": {"p": True, "f": True, "c": True}}).status == "InProgress"


def test_an_empty_condition_list_makes_filter_all_true_for_failed_and_current_so_it_has_failed():
    # A quirk of the cheatsheet's filter(...).all(...) pattern that Flux's own tests pin down.
    assert evaluate(CERTIFICATE, certificate()).status == "Failed"


# --- Crossplane: a claim, with the cheatsheet's Synced/ReconcileError rule --------------------

CLAIM = one(apiVersion="database.example.org/v1alpha1", kind="PostgreSQLInstance",
            failed="status.conditions.filter(e, e.type == 'Synced').all(e, e.status == 'False' && e.reason == 'ReconcileError')",
            current="status.conditions.filter(e, e.type == 'Ready').all(e, e.status == 'True')")


def claim(*conditions: dict[str, str]) -> dict[str, Any]:
    return obj("database.example.org/v1alpha1", "PostgreSQLInstance",
               {"conditions": list(conditions)}, {"parameters": {"storageGB": 20}})


def test_a_crossplane_claim_that_is_synced_and_ready_is_current():
    assert evaluate(CLAIM, claim(cond("Synced", "True", "ReconcileSuccess"),
                                 cond("Ready", "True", "Available"))).status == "Current"


def test_a_crossplane_claim_whose_reconcile_errs_has_failed():
    assert evaluate(CLAIM, claim(cond("Synced", "False", "ReconcileError", "cannot compose"),
                                 cond("Ready", "False", "Creating"))).status == "Failed"


def test_a_crossplane_claim_still_creating_is_in_progress():
    assert evaluate(CLAIM, claim(cond("Synced", "True", "ReconcileSuccess"),
                                 cond("Ready", "False", "Creating"))).status == "InProgress"


# --- CloudNativePG: a Cluster judged by its phase and instance counts ------------------------

CNPG = one(apiVersion="postgresql.cnpg.io/v1", kind="Cluster",
           inProgress="status.phase != 'Cluster in healthy state'",
           failed="has(status.phaseReason) && status.phaseReason.contains('failed')",
           current="status.readyInstances == spec.instances")


def pg(phase: str, ready: int, reason: str | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase, "readyInstances": ready, "instances": 3}
    if reason:
        status["phaseReason"] = reason
    return obj("postgresql.cnpg.io/v1", "Cluster", status, {"instances": 3})


def test_a_cloudnativepg_cluster_in_healthy_state_with_all_instances_ready_is_current():
    assert evaluate(CNPG, pg("Cluster in healthy state", 3)).status == "Current"


def test_a_cloudnativepg_cluster_creating_a_replica_is_in_progress_before_anything_else():
    assert evaluate(CNPG, pg("Creating a new replica", 2)).status == "InProgress"


def test_a_healthy_cloudnativepg_cluster_whose_phase_reason_reports_a_failure_has_failed():
    assert evaluate(CNPG, pg("Cluster in healthy state", 3, "backup failed")).status == "Failed"


# --- The expressions of Flux's documentation -------------------------------------------------

KUSTOMIZATION_DOCS = """
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata:
  name: sealed-secrets
  namespace: flux-system
spec:
  interval: 5m
  path: ./path/to/sealed/secrets
  prune: true
  sourceRef:
    kind: GitRepository
    name: flux-system
  timeout: 1m
  wait: true
  healthCheckExprs:
    - apiVersion: bitnami.com/v1alpha1
      kind: SealedSecret
      failed: status.conditions.filter(e, e.type == 'Synced').all(e, e.status == 'False')
      current: status.conditions.filter(e, e.type == 'Synced').all(e, e.status == 'True')
"""

CHEATSHEET = """
- apiVersion: ceph.rook.io/v1
  kind: CephCluster
  failed: status.ceph.health == 'HEALTH_ERR'
  current: status.ceph.health == 'HEALTH_OK'
- apiVersion: cluster.x-k8s.io/v1beta1
  kind: Cluster
  failed: status.conditions.filter(e, e.type == 'Ready').all(e, e.status == 'False')
  current: status.conditions.filter(e, e.type == 'Ready').all(e, e.status == 'True')
- apiVersion: cert-manager.io/v1
  kind: ClusterIssuer
  failed: status.conditions.filter(e, e.type == 'Ready').all(e, e.status == 'False')
  current: status.conditions.filter(e, e.type == 'Ready').all(e, e.status == 'True')
- apiVersion: external-secrets.io/v1beta1
  kind: ClusterSecretStore
  failed: status.conditions.filter(e, e.type == 'Ready').all(e, e.status == 'False')
  current: status.conditions.filter(e, e.type == 'Ready').all(e, e.status == 'True')
- apiVersion: pkg.crossplane.io/v1
  kind: Provider
  failed: status.conditions.filter(e, e.type == 'Healthy').all(e, e.status == 'False')
  current: status.conditions.filter(e, e.type == 'Healthy').all(e, e.status == 'True')
- apiVersion: iam.aws.crossplane.io/v1beta1
  kind: Role
  failed: status.conditions.filter(e, e.type == 'Synced').all(e, e.status == 'False' && e.reason == 'ReconcileError')
  current: status.conditions.filter(e, e.type == 'Ready').all(e, e.status == 'True')
- apiVersion: keda.sh/v1alpha1
  kind: ScaledObject
  failed: status.conditions.filter(e, e.type == 'Ready').all(e, e.status == 'False')
  current: status.conditions.filter(e, e.type == 'Ready').all(e, e.status == 'True')
- apiVersion: fluxcd.controlplane.io/v1
  failed: status.conditions.exists(e, e.type == 'Stalled' && e.status == 'True' && e.observedGeneration == metadata.generation)
  current: status.conditions.filter(e, e.type == 'Ready').all(e, e.status == 'True' && e.observedGeneration == metadata.generation)
"""


def test_the_sealed_secret_example_of_the_kustomization_docs_follows_its_synced_condition():
    exprs = compile_exprs(yaml.safe_load(KUSTOMIZATION_DOCS)["spec"]["healthCheckExprs"])
    e = find(exprs, "bitnami.com/v1alpha1", "SealedSecret")
    assert e is not None
    sealed = obj("bitnami.com/v1alpha1", "SealedSecret", {"observedGeneration": 1, "conditions": [cond("Synced", "True")]})
    assert evaluate(e, sealed).status == "Current"
    sealed["status"]["conditions"] = [cond("Synced", "False", "ErrUnsealFailed")]
    assert evaluate(e, sealed).status == "Failed"


def test_every_expression_of_flux_cel_cheatsheet_compiles():
    exprs = compile_exprs(yaml.safe_load(CHEATSHEET))
    assert [e.kind for e in exprs] == ["CephCluster", "Cluster", "ClusterIssuer", "ClusterSecretStore",
                                       "Provider", "Role", "ScaledObject", None]


@pytest.mark.parametrize(("health", "status"), [("HEALTH_OK", "Current"), ("HEALTH_ERR", "Failed"),
                                                ("HEALTH_WARN", "InProgress")])
def test_a_ceph_cluster_is_judged_by_its_health(health: str, status: str):
    e = find(compile_exprs(yaml.safe_load(CHEATSHEET)), "ceph.rook.io/v1", "CephCluster")
    assert e is not None
    assert evaluate(e, obj("ceph.rook.io/v1", "CephCluster", {"ceph": {"health": health}})).status == status


def test_the_group_wide_flux_operator_entry_judges_a_resource_set_of_the_current_generation():
    e = find(compile_exprs(yaml.safe_load(CHEATSHEET)), "fluxcd.controlplane.io/v1", "ResourceSet")
    assert e is not None and e.kind is None
    rs = obj("fluxcd.controlplane.io/v1", "ResourceSet",
             {"conditions": [{**cond("Ready", "True"), "observedGeneration": 4}]}, generation=4)
    assert evaluate(e, rs).status == "Current"
    rs["status"]["conditions"] = [{**cond("Stalled", "True"), "observedGeneration": 4},
                                  {**cond("Ready", "False"), "observedGeneration": 4}]
    assert evaluate(e, rs).status == "Failed"
    rs["metadata"]["generation"] = 5  # the conditions speak of the previous generation
    assert evaluate(e, rs).status == "InProgress"


# --- CEL as cel-go evaluates it ----------------------------------------------------------------

@pytest.mark.parametrize(("expression", "status"), [
    ("status.progress == 100", "Current"),            # 100.0 in the object: cel-go compares across types
    ("status.progress >= 99.5 && status.replicas > 2.5", "Current"),
    ("status.conditions[0].status == true", "InProgress"),   # 'True' is a string: not equal, not an error
    ("'shop' in metadata.labels && metadata.labels['shop'] == 'web'", "Current"),
    ("status.conditions.exists(c, c.type == 'Ready') && status.conditions.exists_one(c, c.status == 'True')", "Current"),
    ("status.conditions.map(c, c.type) == ['Ready']", "Current"),
    ("has(status.missing) && status.missing.ready", "InProgress"),   # && short-circuits the error
    ("status.missing.ready || status.progress == 100", "Current"),   # || absorbs it when the other side is true
    ("size(status.conditions) == 1 && metadata.name.startsWith('x') && metadata.name.matches('^[a-z]+$')", "Current"),
    ("timestamp(status.notAfter) > timestamp('2025-01-01T00:00:00Z')", "Current"),
])
def test_expressions_are_evaluated_as_cel_go_evaluates_them(expression: str, status: str):
    e = one(apiVersion="example.com/v1", current=expression)
    o = {"metadata": {"name": "x", "generation": 1, "labels": {"shop": "web"}},
         "status": {"progress": 100.0, "replicas": 3, "conditions": [cond("Ready", "True")],
                    # YAML loaders turn timestamps into datetimes; the API serves RFC 3339 strings.
                    "notAfter": datetime(2030, 1, 1, tzinfo=UTC)}}
    assert evaluate(e, o).status == status


def test_a_macro_whose_predicate_is_not_a_boolean_is_an_error_not_a_truthy_value():
    e = one(apiVersion="example.com/v1", current="status.conditions.filter(c, c.type).size() == 1")
    with pytest.raises(EvalError, match="not bool"):
        evaluate(e, {"status": {"conditions": [cond("Ready", "True")]}})


def test_all_is_false_when_one_element_is_false_even_if_another_cannot_be_evaluated():
    e = one(apiVersion="example.com/v1", failed="status.conditions.all(c, c.status == 'True')", current="true")
    # The first condition has no status (an error), the second is 'False': all() is false, as in cel-go.
    v = evaluate(e, {"status": {"conditions": [{"type": "A"}, cond("B", "False")]}})
    assert v.status == "Current"


# --- Configuration errors name the entry and the field -----------------------------------------

@pytest.mark.parametrize(("entries", "message"), [
    ([{"apiVersion": "v1", "current": "true"},
      {"apiVersion": "v1", "kind": "ConfigMap", "current": "true", "failed": "data."}],
     r"^spec\.healthCheckExprs\[1\]\.failed: syntax error at line 1, column 5: 'data\.'$"),
    ([{"apiVersion": "example.com/v1", "kind": "Widget", "failed": "true"}],
     r"^spec\.healthCheckExprs\[0\]\.current: required$"),
    ([{"apiVersion": "example.com/v1", "kind": "Widget", "current": ""}],
     r"^spec\.healthCheckExprs\[0\]\.current: required$"),
    ([{"kind": "Widget", "current": "true"}], r"^spec\.healthCheckExprs\[0\]\.apiVersion: required$"),
    ([{"apiVersion": "a/b/c", "current": "true"}], r"^spec\.healthCheckExprs\[0\]\.apiVersion: 'a/b/c' is not"),
    ([{"apiVersion": "example.com/v1", "current": "true", "curent": "true"}],
     r"^spec\.healthCheckExprs\[0\]\.curent: unknown field"),
    ([{"apiVersion": "example.com/v1", "current": True}],
     r"^spec\.healthCheckExprs\[0\]\.current: expected a string, got a boolean$"),
    ([{"apiVersion": "v1", "kind": "ConfigMap", "current": "true"},
      {"apiVersion": "v1", "kind": "ConfigMap", "current": "false"}],
     r"^spec\.healthCheckExprs\[1\]: duplicate entry for kind ConfigMap in group 'core', already at spec\.healthCheckExprs\[0\]$"),
    ([{"apiVersion": "bitnami.com/v1alpha1", "current": "true"},
      {"apiVersion": "bitnami.com/v1", "current": "true"}],   # versions do not tell entries apart
     r"^spec\.healthCheckExprs\[1\]: duplicate entry for every kind"),
    ([{"apiVersion": "example.com/v1", "current": "has(status)"}],
     r"^spec\.healthCheckExprs\[0\]\.current: has\(\) takes one field selection"),
    ([{"apiVersion": "example.com/v1", "current": "status.conditions.all(c)"}],
     r"^spec\.healthCheckExprs\[0\]\.current: all\(\) takes a variable name and an expression"),
    ([{"apiVersion": "example.com/v1", "current": "isReady(status)"}],
     r"^spec\.healthCheckExprs\[0\]\.current: unknown function isReady\(\)$"),
    ("current: true", r"^spec\.healthCheckExprs: expected a list, got a string$"),
    (["current: true"], r"^spec\.healthCheckExprs\[0\]: expected a mapping, got a string$"),
])
def test_an_invalid_entry_is_rejected_at_configuration_time_naming_the_field(entries: Any, message: str):
    with pytest.raises(ExprError, match=message):
        compile_exprs(entries)


@pytest.mark.parametrize(("expression", "feature"), [
    ("status.phase.lowerAscii() == 'ready'", "function lowerAscii() is in the CEL strings extension"),
    ("status.message.split(',').size() > 1", "function split() is in the CEL strings extension"),
    ("status.?phase.orValue('') == 'Ready'", "optional field selection"),
    ("metadata.labels[?'tier'].hasValue()", "optional field selection"),
    ("optional.of(status.phase).hasValue()", "function optional.of() is in CEL optional types"),
    ("sets.contains(['a', 'b'], ['a'])", "function sets.contains() is in the CEL sets extension"),
    ("base64.decode(status.data) == b'ok'", "function base64.decode() is in the CEL encoders extension"),
    ("status.conditions.map(c, c.status == 'True', c.type).size() > 0",
     "the three-argument map(x, predicate, transform) macro"),
])
def test_cel_that_flux_enables_but_cel_python_lacks_is_refused_at_configuration_time(expression: str, feature: str):
    with pytest.raises(ExprError) as err:
        compile_exprs([{"apiVersion": "example.com/v1", "current": "true", "inProgress": expression}])
    assert str(err.value).startswith("spec.healthCheckExprs[0].inProgress: ")
    assert feature in str(err.value)
    assert "Herald's CEL evaluator (cel-python) does not support" in str(err.value)


def test_empty_in_progress_and_failed_are_the_same_as_none():
    e = one(apiVersion="example.com/v1", inProgress="", failed="", current="false")
    assert (e.in_progress, e.failed) == (None, None)
    assert evaluate(e, {}) == Verdict("InProgress", "healthCheckExprs: current is not true")


def test_an_entry_is_compiled_once_and_evaluated_against_many_objects():
    assert isinstance(CERTIFICATE, HealthExpr)
    for n in range(3):
        assert evaluate(CERTIFICATE, certificate(cond("Ready", "True"), generation=n, observed=n)).status == "Current"


# --- Which entry applies to an object ----------------------------------------------------------

EXPRS = compile_exprs([
    {"apiVersion": "bitnami.com/v1alpha1", "current": "true"},                          # [0] group-wide
    {"apiVersion": "cert-manager.io/v1", "kind": "Certificate", "current": "true"},     # [1]
    {"apiVersion": "bitnami.com/v1alpha1", "kind": "SealedSecret", "current": "true"},  # [2] overrides [0]
    {"apiVersion": "v1", "kind": "ConfigMap", "current": "true"},                       # [3] core group
    {"apiVersion": "batch/v1", "kind": "Job", "current": "true"},                       # [4] shadowed in Flux
])


def index(api_version: str, kind: str) -> int | None:
    e = find(EXPRS, api_version, kind)
    return None if e is None else e.index


def test_an_entry_applies_to_its_group_and_kind_whatever_the_version():
    assert index("cert-manager.io/v1", "Certificate") == 1
    assert index("cert-manager.io/v1beta1", "Certificate") == 1


def test_an_entry_for_the_kind_takes_precedence_over_the_group_wide_entry_listed_before_it():
    assert index("bitnami.com/v1alpha1", "SealedSecret") == 2
    assert index("bitnami.com/v1alpha1", "SealingKey") == 0


def test_an_object_of_a_kind_without_expressions_is_left_to_kstatus():
    assert find(EXPRS, "cert-manager.io/v1", "Issuer") is None
    assert find(EXPRS, "apps/v1", "Deployment") is None
    assert find(EXPRS, "v1", "Secret") is None
    assert find([], "cert-manager.io/v1", "Certificate") is None


def test_the_core_group_is_written_as_a_bare_version():
    assert index("v1", "ConfigMap") == 3


def test_a_batch_job_is_judged_by_flux_own_job_reader_not_by_expressions():
    # kustomize-controller puts its Job status reader before the CEL reader.
    assert find(EXPRS, "batch/v1", "Job") is None
