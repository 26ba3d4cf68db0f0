"""The reconciler's Kubernetes client against the test API server: credentials that expire,
and manifests holding what YAML has but JSON lacks."""

from __future__ import annotations

import datetime
import sys
import textwrap
import time
from pathlib import Path

import yaml
from kubernetes import config as k8s_config

from reconciler.kube import REFRESH_EVERY, Cluster
from reconciler.render import Manifest


def exec_kubeconfig(kube_api, tmp_path: Path) -> tuple[Path, Path]:
    """A kubeconfig whose user is an exec credential plugin (as EKS, GKE and AKS give), each
    token numbered and short-lived; and the file counting the plugin's runs."""
    runs = tmp_path / "runs"
    runs.write_text("0")
    plugin = tmp_path / "credential-plugin.py"
    plugin.write_text(textwrap.dedent(f"""\
        import datetime, json, pathlib
        runs = pathlib.Path({str(runs)!r})
        n = int(runs.read_text()) + 1
        runs.write_text(str(n))
        expiry = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=1)
        print(json.dumps({{"apiVersion": "client.authentication.k8s.io/v1beta1", "kind": "ExecCredential",
                          "status": {{"token": f"token-{{n}}",
                                      "expirationTimestamp": expiry.strftime("%Y-%m-%dT%H:%M:%SZ")}}}}))
        """))
    path = kube_api.write_kubeconfig(tmp_path / "kubeconfig")
    conf = yaml.safe_load(path.read_text())
    conf["users"][0]["user"] = {"exec": {"apiVersion": "client.authentication.k8s.io/v1beta1",
                                         "command": sys.executable, "args": [str(plugin)],
                                         "interactiveMode": "Never"}}
    path.write_text(yaml.safe_dump(conf))
    return path, runs


def test_a_short_lived_token_is_renewed_about_once_a_second_not_per_request(kube_api, tmp_path: Path) -> None:
    """The client's loader treats a token expiring within 5 minutes as expired, and runs its
    refresh before every request: without a limit, one credential plugin run per request."""
    kubeconfig, runs = exec_kubeconfig(kube_api, tmp_path)
    cluster = Cluster(k8s_config.new_client_from_config(config_file=str(kubeconfig)))
    start = int(runs.read_text())
    for _ in range(40):
        cluster.get("v1", "Namespace", None, "default")
    assert int(runs.read_text()) - start <= 2
    seen = kube_api.authorization_headers[-1]
    time.sleep(REFRESH_EVERY + 0.1)
    cluster.get("v1", "Namespace", None, "default")
    assert kube_api.authorization_headers[-1] != seen  # renewed: a newer token
    assert kube_api.authorization_headers[-1].startswith("Bearer token-")


def test_yaml_timestamps_are_applied_as_the_strings_they_were(kube_api, kubeconfig: Path) -> None:
    cluster = Cluster(k8s_config.new_client_from_config(config_file=str(kubeconfig)))
    crd = yaml.safe_load(textwrap.dedent("""\
        apiVersion: apiextensions.k8s.io/v1
        kind: CustomResourceDefinition
        metadata: {name: releases.example.com}
        spec:
          group: example.com
          scope: Namespaced
          names: {plural: releases, singular: release, kind: Release}
          versions:
            - {name: v1, served: true, storage: true,
               schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}}
        """))
    cluster.server_side_apply(crd)
    deadline = time.monotonic() + 5
    while not cluster.is_served("example.com/v1", "Release") and time.monotonic() < deadline:
        time.sleep(0.1)
        cluster.refresh_discovery()
    release = yaml.safe_load("apiVersion: example.com/v1\nkind: Release\nmetadata: {name: r, namespace: default}\n"
                             "spec: {date: 2024-05-01, at: 2024-05-01T10:00:00+00:00}\n")
    assert isinstance(release["spec"]["date"], datetime.date)  # what PyYAML makes of it
    live = cluster.apply(Manifest(release))
    assert live["spec"] == {"date": "2024-05-01", "at": "2024-05-01T10:00:00+00:00"}
