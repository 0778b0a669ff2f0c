"""The Helm chart (helm/pass-status), its alert rules, dashboard and the Dockerfile.

The chart is rendered with the real ``helm`` binary. ``make test`` builds helm and promtool
first (``scripts/services tools``, cached); run directly, these tests build them the same way
when they are missing, so a fresh machine needs no extra step. Built-in kinds are validated offline
against the Kubernetes JSON schemas shipped with kubernetes-validate; custom resources
(ServiceMonitor, PrometheusRule, ScaledObject, TriggerAuthentication) have no built-in schema
and are checked structurally here. ``scripts/check_chart.sh`` runs the same validation from
the shell, plus ``promtool test rules``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from consumer.adapters.metrics import Metrics
from consumer.settings import PREFIX, Settings
from prometheus_client import CollectorRegistry

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "pass-status"
TESTS_DIR = ROOT / "helm" / "tests"
ALERTS_FILE = CHART / "files" / "alerts.yaml"
DASHBOARD_FILE = CHART / "files" / "dashboard.json"
K8S_VERSION = "1.31.0"
CRD_KINDS = frozenset(
    {"ServiceMonitor", "PodMonitor", "PrometheusRule", "ScaledObject", "TriggerAuthentication"}
)
SECRET_ENV = frozenset({"PASS_STATUS_MONGODB_URI", "PASS_STATUS_KAFKA_SASL_PASSWORD"})
VALUE_SETS = ("default", "values-all.yaml", "values-hpa.yaml")

pytestmark = pytest.mark.tools  # helm and promtool (scripts/run_tests builds them meanwhile)

Doc = dict[str, Any]


def _cached_tool(name: str) -> str | None:
    cache = Path(os.environ.get("PASS_STATUS_CACHE", str(Path.home() / ".cache" / "pass-status")))
    candidate = cache / "bin" / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    return shutil.which(name)


@functools.cache
def _build_tools() -> str:
    """``scripts/services tools``: builds helm and promtool once into the cache."""
    done = subprocess.run(
        [str(ROOT / "scripts" / "services"), "tools"],
        capture_output=True,
        text=True,
        check=False,
        timeout=3600,
    )
    return "" if done.returncode == 0 else done.stderr[-3000:]


def _tool(name: str) -> str:
    found = _cached_tool(name)
    if found is None:
        failure = _build_tools()
        found = _cached_tool(name)
        assert found is not None, f"scripts/services tools did not build {name}:\n{failure}"
    return found


@functools.cache
def _render_text(values_file: str, sets: tuple[str, ...] = ()) -> str:
    args = [_tool("helm"), "template", "pass-status", str(CHART), "--namespace", "pass-status"]
    args += ["--kube-version", K8S_VERSION]
    if values_file != "default":
        args += ["--values", str(TESTS_DIR / values_file)]
    for item in sets:
        args += ["--set", item]
    done = subprocess.run(args, capture_output=True, text=True, check=False, timeout=60)
    if done.returncode != 0:
        raise RenderError(done.stderr)
    return done.stdout


class RenderError(Exception):
    """helm template failed; the message is helm's stderr."""


def render(values_file: str = "default", *sets: str) -> list[Doc]:
    """The rendered documents; cached and shared between tests, so never mutate them."""
    return _parse(_render_text(values_file, tuple(sets)))


@functools.cache
def _parse(text: str) -> list[Doc]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return [d for d in yaml.load_all(text, Loader=loader) if d]


def one(docs: list[Doc], kind: str, name_suffix: str = "") -> Doc:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(name_suffix)]
    assert len(found) == 1, f"expected one {kind}*{name_suffix}, found {len(found)}"
    return found[0]


def kinds(docs: list[Doc]) -> list[str]:
    return sorted(d["kind"] for d in docs)


def pod_specs(docs: list[Doc]) -> list[Doc]:
    out = [one(docs, "Deployment")["spec"]["template"]["spec"]]
    out += [
        d["spec"]["jobTemplate"]["spec"]["template"]["spec"] for d in docs if d["kind"] == "CronJob"
    ]
    return out


def env_of(container: Doc) -> dict[str, Doc]:
    return {e["name"]: e for e in container["env"]}


def alert_rules() -> list[Doc]:
    data = yaml.safe_load(ALERTS_FILE.read_text())
    return [r for g in data["groups"] for r in g["rules"] if "alert" in r]


def metric_names() -> set[str]:
    """Every sample name the service exports (histograms as _bucket/_sum/_count)."""
    registry = CollectorRegistry()
    Metrics(registry)
    names: set[str] = set()
    for family in registry.collect():
        if not family.name.startswith("pass_status_"):
            continue  # process_*, python_gc_*, python_info: the client library's collectors
        if family.type == "histogram":
            names |= {family.name + s for s in ("_bucket", "_sum", "_count")}
        elif family.type == "counter":
            names.add(family.name + "_total")
        else:
            names.add(family.name)
    return names


def metric_families() -> set[str]:
    return {re.sub(r"_(bucket|sum|count)$", "", n) for n in metric_names()}


def referenced_metrics(text: str) -> set[str]:
    return set(re.findall(r"\bpass_status_[a-z0-9_]+", text))


# --- rendering and schema validation ---------------------------------------------------------


@pytest.mark.parametrize("values_file", VALUE_SETS)
def test_builtin_kinds_validate_against_kubernetes_schema(values_file: str) -> None:
    docs = render(values_file)
    validated = 0
    for doc in docs:
        if doc["kind"] in CRD_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {e.path}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError as e:
            pytest.fail(f"no schema for {doc['kind']} (not a known custom resource): {e.message}")
        validated += 1
    assert validated >= 5


def test_default_values_render_the_expected_objects() -> None:
    assert kinds(render()) == [
        "CronJob",
        "CronJob",
        "Deployment",
        "PodDisruptionBudget",
        "Service",
        "ServiceAccount",
    ]


def test_all_options_render_every_object() -> None:
    assert kinds(render("values-all.yaml")) == [
        "ConfigMap",
        "CronJob",
        "CronJob",
        "Deployment",
        "NetworkPolicy",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "PrometheusRule",
        "ScaledObject",
        "Service",
        "ServiceAccount",
        "ServiceMonitor",
        "TriggerAuthentication",
    ]
    assert {"HorizontalPodAutoscaler", "PodMonitor"} <= set(kinds(render("values-hpa.yaml")))


def test_names_fit_kubernetes_limits() -> None:
    long_name = "x" * 70
    docs = render("default", f"fullnameOverride={long_name}")
    for doc in docs:
        limit = 52 if doc["kind"] == "CronJob" else 63
        assert len(doc["metadata"]["name"]) <= limit, doc["metadata"]["name"]


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (("env.PASS_STATUS_MONGODB_URI=mongodb://u:p@h",), "secret setting"),
        (("env.PASS_STATUS_KAFKA_SASL_PASSWORD=p",), "secret setting"),
        (("kafka.securityProtocol=TLS",), "/kafka/securityProtocol"),
        (("kafka.securityProtocol=SASL_SSL",), "kafka.sasl.mechanism"),
        (
            ("kafka.securityProtocol=SASL_SSL", "kafka.sasl.mechanism=PLAIN"),
            "kafka.sasl.username",
        ),
        (("autoscaling.mode=vpa",), "/autoscaling/mode"),
        (("autoscaling.mode=keda", "autoscaling.keda.topics={nope}"), "/autoscaling/keda/topics/0"),
        (("consumer.terminationGraceExtraSeconds=0",), "terminationGraceExtraSeconds"),
        (("kafka.ca.name=ca", "kafka.ca.kind=File"), "/kafka/ca/kind"),
    ],
)
def test_bad_values_fail_with_a_clear_message(sets: tuple[str, ...], message: str) -> None:
    with pytest.raises(RenderError, match=re.escape(message)):
        render("default", *sets)


# --- the consumer Deployment -----------------------------------------------------------------


@pytest.mark.parametrize("values_file", VALUE_SETS)
def test_pods_are_locked_down(values_file: str) -> None:
    for spec in pod_specs(render(values_file)):
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True
        assert pod["runAsUser"] == 10001
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
        assert spec["automountServiceAccountToken"] is False
        (container,) = spec["containers"]
        sc = container["securityContext"]
        assert sc["runAsNonRoot"] is True
        assert sc["runAsUser"] == 10001
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert "emptyDir" in volumes[mounts["/tmp"]]  # noqa: S108 - the pod's own emptyDir
        assert container["resources"]["requests"]
        assert container["resources"]["limits"]["memory"]


@pytest.mark.parametrize("values_file", VALUE_SETS)
def test_deployment_probes_port_and_grace(values_file: str) -> None:
    docs = render(values_file)
    spec = one(docs, "Deployment")["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert container["args"] == ["run"]
    env = env_of(container)
    port = int(env["PASS_STATUS_HTTP_PORT"]["value"])
    assert container["ports"] == [{"name": "http", "containerPort": port, "protocol": "TCP"}]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    grace = float(env["PASS_STATUS_SHUTDOWN_GRACE_SECONDS"]["value"])
    assert spec["terminationGracePeriodSeconds"] == grace + 15
    assert spec["topologySpreadConstraints"]
    service = one(docs, "Service")
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    selector = service["spec"]["selector"]
    pod_labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= pod_labels.items()
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_replicas_are_left_to_the_autoscaler() -> None:
    assert one(render(), "Deployment")["spec"]["replicas"] == 2
    for values_file in ("values-all.yaml", "values-hpa.yaml"):
        assert "replicas" not in one(render(values_file), "Deployment")["spec"]


@pytest.mark.parametrize("values_file", VALUE_SETS)
def test_env_is_read_by_the_settings(values_file: str) -> None:
    """Every variable the chart sets is a setting, and together they pass validation."""
    known = {PREFIX + f.name.upper() for f in dataclasses.fields(Settings)}
    known |= {PREFIX + f.name.upper() + "_FILE" for f in dataclasses.fields(Settings)}
    extra = (
        set(yaml.safe_load((TESTS_DIR / values_file).read_text()).get("env", {}))
        if values_file != "default"
        else set()
    )
    for spec in pod_specs(render(values_file)):
        env = env_of(spec["containers"][0])
        assert set(env) - extra <= known, sorted(set(env) - extra - known)
        plain = {
            k: v["value"]
            for k, v in env.items()
            if "value" in v and k not in extra and not k.endswith("_FILE")
        }
        plain |= {k.removesuffix("_FILE"): "from-file" for k in env if k.endswith("_FILE")}
        plain |= {
            k: "from-secret"
            for k, v in env.items()
            if "secretKeyRef" in v.get("valueFrom", {})  # extraEnv may use other sources
        }
        if "PASS_STATUS_MONGODB_URI" in plain:
            plain["PASS_STATUS_MONGODB_URI"] = "mongodb://from-secret"  # settings check URIs
        Settings.from_env(plain)


@pytest.mark.parametrize("values_file", VALUE_SETS)
def test_secrets_only_come_from_the_existing_secret(values_file: str) -> None:
    docs = render(values_file)
    assert "Secret" not in kinds(docs)
    secret_fields = {
        PREFIX + f.name.upper() for f in dataclasses.fields(Settings) if f.metadata.get("secret")
    } | SECRET_ENV
    for spec in pod_specs(docs):
        env = env_of(spec["containers"][0])
        for name in secret_fields & set(env):
            assert set(env[name]) == {"name", "valueFrom"}, name
            assert "secretKeyRef" in env[name]["valueFrom"], name
    text = _render_text(values_file, ())
    assert "mongodb://" not in text


@pytest.mark.parametrize("values_file", VALUE_SETS)
def test_tick_jobs_get_no_mongodb_credentials(values_file: str) -> None:
    """Least privilege: the tick jobs only publish to Kafka."""
    docs = render(values_file)
    consumer, *ticks = pod_specs(docs)
    consumer_env = env_of(consumer["containers"][0])
    uri = (
        consumer_env.get("PASS_STATUS_MONGODB_URI") or consumer_env["PASS_STATUS_MONGODB_URI_FILE"]
    )
    assert "secretKeyRef" in uri.get("valueFrom", {}) or "_FILE" in uri["name"]
    assert ticks
    for spec in ticks:
        env = env_of(spec["containers"][0])
        assert not [name for name in env if "MONGODB" in name]
        assert "mongodb-ca" not in {v["name"] for v in spec["volumes"]}
        for volume in spec["volumes"]:
            items = volume.get("secret", {}).get("items", [])
            assert "mongodb-uri" not in {i["key"] for i in items}


# --- values.schema.json --------------------------------------------------------------------------

SCHEMA_FAILURES = [
    ("replicaCount=two", "got string, want integer"),
    ("replicaCnt=2", "additional properties 'replicaCnt' not allowed"),
    ("kafka.topics.tickUsed=x", "additional properties 'tickUsed' not allowed"),
    ("probes.liveness.periodSeconds=-1", "minimum"),
    ("consumer.logLevel=LOUD", "/consumer/logLevel"),
    # A typo in resources (limit for limits) used to pass: issue 21.
    ("resources.limit.memory=1Gi", "additional properties 'limit' not allowed"),
    ("resources.requests.cpu=lots", "/resources/requests/cpu"),
    ("cronJobs.resources.limits.gpu=1", "additional properties 'gpu' not allowed"),
]


@pytest.mark.parametrize(("item", "message"), SCHEMA_FAILURES)
def test_values_schema_rejects_bad_types_and_unknown_keys_in_template(
    item: str, message: str
) -> None:
    with pytest.raises(RenderError, match=re.escape(message)):
        render("default", item)


@pytest.mark.parametrize(("item", "message"), SCHEMA_FAILURES[:2])
def test_values_schema_rejects_bad_types_and_unknown_keys_in_lint(item: str, message: str) -> None:
    done = subprocess.run(
        [_tool("helm"), "lint", "--strict", str(CHART), "--set", item],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode != 0
    assert message in done.stdout + done.stderr


def test_every_value_set_passes_the_schema() -> None:
    for values_file in VALUE_SETS:
        render(values_file)  # raises RenderError otherwise


# --- production setups ---------------------------------------------------------------------------


def _mounts(container: Doc) -> dict[str, Doc]:
    return {m["name"]: m for m in container["volumeMounts"]}


def test_kafka_mutual_tls_for_the_consumer_the_ticks_and_keda() -> None:
    docs = render("values-all.yaml")
    for spec in pod_specs(docs):
        container = spec["containers"][0]
        env = env_of(container)
        mount = _mounts(container)["kafka-client-cert"]
        assert mount["readOnly"] is True
        assert env["PASS_STATUS_KAFKA_SSL_CERTFILE"]["value"] == mount["mountPath"] + "/tls.crt"
        assert env["PASS_STATUS_KAFKA_SSL_KEYFILE"]["value"] == mount["mountPath"] + "/tls.key"
        volume = {v["name"]: v for v in spec["volumes"]}["kafka-client-cert"]
        assert volume["secret"]["secretName"] == "pass-status-kafka-client"
    params = {
        r["parameter"]: r for r in one(docs, "TriggerAuthentication")["spec"]["secretTargetRef"]
    }
    assert params["cert"] == {
        "parameter": "cert",
        "name": "pass-status-kafka-client",
        "key": "tls.crt",
    }
    assert params["key"] == {
        "parameter": "key",
        "name": "pass-status-kafka-client",
        "key": "tls.key",
    }

    keda_mtls_only = render(
        "default",
        "autoscaling.mode=keda",
        "kafka.securityProtocol=SSL",
        "kafka.clientCert.secretName=client",
    )
    auth = one(keda_mtls_only, "TriggerAuthentication")
    assert {r["parameter"] for r in auth["spec"]["secretTargetRef"]} == {"cert", "key"}
    with pytest.raises(RenderError, match=re.escape("kafka.clientCert needs")):
        render("default", "kafka.clientCert.secretName=client")


def test_extra_env_env_from_and_volumes_reach_the_consumer_only() -> None:
    docs = render("values-all.yaml")
    consumer, *ticks = pod_specs(docs)
    container = consumer["containers"][0]
    ref = env_of(container)["PASS_STATUS_BACKOFF_MAX_SECONDS"]["valueFrom"]["configMapKeyRef"]
    assert ref == {"name": "pass-status-tuning", "key": "backoff-max-seconds"}
    assert container["envFrom"] == [{"configMapRef": {"name": "pass-status-extra-settings"}}]
    assert _mounts(container)["trust-extra"]["mountPath"] == "/etc/ssl/corporate"
    assert {v["name"] for v in consumer["volumes"]} >= {"tmp", "trust-extra"}
    for spec in ticks:
        assert "envFrom" not in spec["containers"][0]
        assert "trust-extra" not in {v["name"] for v in spec["volumes"]}
    plain = one(render(), "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert "envFrom" not in plain


def test_pdb_lets_unready_pods_be_evicted() -> None:
    pdb = one(render(), "PodDisruptionBudget")
    assert pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"


def test_chart_metadata() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    # Checked by the templates instead: see test_helm_template_renders_without_flags.
    assert "kubeVersion" not in chart
    assert chart["home"].startswith("https://")
    assert chart["sources"]
    assert chart["maintainers"][0]["name"]


def test_liveness_limit_is_a_chart_setting() -> None:
    container = one(render("default", "consumer.livenessMaxStallSeconds=45"), "Deployment")["spec"][
        "template"
    ]["spec"]["containers"][0]
    assert env_of(container)["PASS_STATUS_LIVENESS_MAX_STALL_SECONDS"]["value"] == "45"


def test_sasl_settings_from_values_and_secret() -> None:
    env = env_of(
        one(render("values-all.yaml"), "Deployment")["spec"]["template"]["spec"]["containers"][0]
    )
    assert env["PASS_STATUS_KAFKA_SECURITY_PROTOCOL"]["value"] == "SASL_SSL"
    assert env["PASS_STATUS_KAFKA_SASL_MECHANISM"]["value"] == "SCRAM-SHA-512"
    assert env["PASS_STATUS_KAFKA_SASL_USERNAME"]["value"] == "pass-status"
    ref = env["PASS_STATUS_KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "pass-status-credentials", "key": "kafka-password"}
    assert env["PASS_STATUS_KAFKA_SSL_CAFILE"]["value"] == "/etc/pass-status/kafka-ca/ca.crt"
    assert env["PASS_STATUS_MONGODB_TLS_CAFILE"]["value"] == "/etc/pass-status/mongodb-ca/ca.pem"
    assert env["PASS_STATUS_LOG_LEVEL"]["value"] == "WARNING", "env overrides the chart's settings"

    hpa_env = env_of(
        one(render("values-hpa.yaml"), "Deployment")["spec"]["template"]["spec"]["containers"][0]
    )
    user_ref = hpa_env["PASS_STATUS_KAFKA_SASL_USERNAME"]["valueFrom"]["secretKeyRef"]
    assert user_ref == {"name": "pass-status-credentials", "key": "kafka-username"}

    plain = env_of(one(render(), "Deployment")["spec"]["template"]["spec"]["containers"][0])
    assert "PASS_STATUS_KAFKA_SASL_PASSWORD" not in plain
    assert plain["PASS_STATUS_MONGODB_URI"]["valueFrom"]["secretKeyRef"]["name"] == "pass-status"


# --- issue 21: a chart an SRE can tune and lock down ---------------------------------------


def test_helm_template_renders_without_flags_and_refuses_old_clusters() -> None:
    """A new user's first command: no --kube-version (helm assumes 1.20 offline)."""
    args = [_tool("helm"), "template", "pass-status", str(CHART)]
    done = subprocess.run(args, capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "kind: Deployment" in done.stdout
    old = subprocess.run(
        [*args, "--kube-version", "1.26.0"], capture_output=True, text=True, check=False, timeout=60
    )
    assert old.returncode != 0
    assert "needs Kubernetes 1.27 or later, not v1.26.0" in old.stderr


@pytest.mark.parametrize("values_file", VALUE_SETS)
def test_pods_get_no_service_links(values_file: str) -> None:
    """Kubernetes' Service variables looked like settings (unknown_settings_ignored)."""
    for spec in pod_specs(render(values_file)):
        assert spec["enableServiceLinks"] is False


def test_network_policies_allow_kafka_mongodb_dns_out_and_metrics_in() -> None:
    assert "NetworkPolicy" not in kinds(render())
    docs = render("values-all.yaml")
    consumer = one(docs, "NetworkPolicy", "pass-status")["spec"]
    tick = one(docs, "NetworkPolicy", "-tick")["spec"]
    pod_labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert consumer["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert consumer["policyTypes"] == ["Ingress", "Egress"]
    (ingress,) = consumer["ingress"]
    assert ingress["ports"] == [{"protocol": "TCP", "port": "http"}]
    assert ingress["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    ]

    def egress_ports(spec: Doc) -> list[tuple[int, str, str]]:
        return sorted(
            (p["port"], p["protocol"], json.dumps(rule.get("to"), sort_keys=True))
            for rule in spec["egress"]
            for p in rule["ports"]
        )

    kafka = json.dumps(
        [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kafka"}}}],
        sort_keys=True,
    )
    dns = json.dumps(
        [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}}],
        sort_keys=True,
    )
    mongodb = json.dumps([{"ipBlock": {"cidr": "10.20.0.0/16"}}], sort_keys=True)
    assert egress_ports(consumer) == [
        (53, "TCP", dns),
        (53, "UDP", dns),
        (9093, "TCP", kafka),
        (27017, "TCP", mongodb),
    ]
    # The tick jobs publish to Kafka only, and nothing connects to them.
    assert tick["policyTypes"] == ["Ingress", "Egress"]
    assert "ingress" not in tick
    assert egress_ports(tick) == [(53, "TCP", dns), (53, "UDP", dns), (9093, "TCP", kafka)]
    tick_labels = one(docs, "CronJob", "-tick-due")["spec"]["jobTemplate"]["spec"]["template"][
        "metadata"
    ]["labels"]
    selector = tick["podSelector"]
    assert selector["matchLabels"].items() <= tick_labels.items()
    (expression,) = selector["matchExpressions"]
    assert tick_labels[expression["key"]] in expression["values"]
    assert pod_labels[expression["key"]] not in expression["values"]


def test_keda_falls_back_and_scales_up_in_steps() -> None:
    spec = one(render("values-all.yaml"), "ScaledObject")["spec"]
    assert spec["fallback"] == {"failureThreshold": 3, "replicas": spec["maxReplicaCount"]}
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleUp"]["policies"] == [{"type": "Pods", "value": 4, "periodSeconds": 60}]
    assert behavior["scaleDown"]["policies"] == [{"type": "Pods", "value": 1, "periodSeconds": 120}]
    tuned = one(
        render(
            "default",
            "autoscaling.mode=keda",
            "autoscaling.keda.fallback.replicas=5",
            "autoscaling.scaleUp.pods=2",
        ),
        "ScaledObject",
    )["spec"]
    assert tuned["fallback"]["replicas"] == 5
    up = tuned["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleUp"]
    assert up["policies"][0]["value"] == 2
    hpa = one(render("values-hpa.yaml"), "HorizontalPodAutoscaler")["spec"]
    assert hpa["behavior"] == behavior
    # cooldownPeriod only scales to zero, which the chart never does: said so, not otherwise.
    values_text = (CHART / "values.yaml").read_text()
    cooldown_comment = values_text.split("cooldownPeriod:")[0].rsplit("pollingInterval:", 1)[1]
    assert "scales to zero" in cooldown_comment
    assert "scaling back to minReplicas" not in values_text


def test_cpu_request_and_hpa_target_match_docs_scaling() -> None:
    """docs/scaling.md: a replica runs at up to 0.6 core before another is added. The request
    covers that (so the HPA's target, a percent of the request, is at most 100) and the
    smallest row's per-replica figure; the target makes the HPA add a replica at 0.6 core."""
    scaling = (ROOT / "docs" / "scaling.md").read_text()
    assert "a replica is one event loop: one core, run at 60 %" in re.sub(r"\s+", " ", scaling)
    per_replica = re.search(
        r"^\| 1M \| 1k \|.*\| ([0-9.]+) core, \d+ MiB \|$", scaling, re.MULTILINE
    )
    assert per_replica is not None
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    request = values["resources"]["requests"]["cpu"]
    assert request.endswith("m")
    request_cores = int(request.removesuffix("m")) / 1000
    assert request_cores >= max(0.6, float(per_replica.group(1)))
    target = values["autoscaling"]["hpa"]["targetCPUUtilizationPercentage"]
    assert target == round(0.6 / request_cores * 100)
    hpa = one(render("values-hpa.yaml"), "HorizontalPodAutoscaler")["spec"]
    assert hpa["metrics"][0]["resource"]["target"]["averageUtilization"] == target


def test_pdb_follows_the_replica_count() -> None:
    assert one(render(), "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    assert "PodDisruptionBudget" not in kinds(render("default", "replicaCount=1"))
    assert "PodDisruptionBudget" not in kinds(
        render("default", "autoscaling.mode=hpa", "autoscaling.minReplicas=1")
    )
    assert "PodDisruptionBudget" in kinds(render("default", "replicaCount=3"))
    with pytest.raises(
        RenderError, match=re.escape("maxUnavailable (2) must be fewer than the replicas (2)")
    ):
        render("default", "podDisruptionBudget.maxUnavailable=2")


def test_pod_monitor_scrapes_the_pods_with_the_alerts_job_label() -> None:
    docs = render("values-hpa.yaml")
    assert "ServiceMonitor" not in kinds(docs)
    monitor = one(docs, "PodMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    pod_labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == "http"
    assert endpoint["path"] == "/metrics"
    (relabel,) = endpoint["relabelings"]
    service_name = one(docs, "Service")["metadata"]["name"]
    assert relabel == {"action": "replace", "targetLabel": "job", "replacement": service_name}
    with pytest.raises(RenderError, match="enable one"):
        render("default", "monitoring.enabled=true", "monitoring.podMonitor.enabled=true")


@pytest.mark.parametrize("values_file", VALUE_SETS)
def test_every_probe_has_a_timeout(values_file: str) -> None:
    container = one(render(values_file), "Deployment")["spec"]["template"]["spec"]["containers"][0]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["timeoutSeconds"] >= 1, probe
    tuned = one(render("default", "probes.startup.timeoutSeconds=7"), "Deployment")
    assert tuned["spec"]["template"]["spec"]["containers"][0]["startupProbe"]["timeoutSeconds"] == 7


def test_tick_pods_get_the_consumers_scheduling_knobs() -> None:
    docs = render("values-all.yaml")
    consumer, *ticks = pod_specs(docs)
    consumer_meta = one(docs, "Deployment")["spec"]["template"]["metadata"]
    assert ticks
    for cron in [d for d in docs if d["kind"] == "CronJob"]:
        template = cron["spec"]["jobTemplate"]["spec"]["template"]
        spec = template["spec"]
        for knob in ("affinity", "nodeSelector", "tolerations", "priorityClassName"):
            assert spec[knob] == consumer[knob], knob
        assert template["metadata"]["annotations"] == consumer_meta["annotations"]
        assert template["metadata"]["labels"]["tier"] == consumer_meta["labels"]["tier"]


@pytest.mark.parametrize(
    "name",
    [
        "PASS_STATUS_MONGODB_URI",
        "PASS_STATUS_KAFKA_SASL_PASSWORD",
        "PASS_STATUS_KAFKA_SASL_USERNAME",
    ],
)
def test_extra_env_refuses_a_secret_setting_as_a_literal(name: str) -> None:
    with pytest.raises(
        RenderError, match=f"extraEnv {name} is a secret setting given as a literal"
    ):
        render("default", f"extraEnv[0].name={name}", "extraEnv[0].value=hunter2")
    by_reference = render(
        "default",
        f"extraEnv[0].name={name}",
        "extraEnv[0].valueFrom.secretKeyRef.name=other",
        "extraEnv[0].valueFrom.secretKeyRef.key=k",
    )
    assert "hunter2" not in _render_text("default", (f"extraEnv[0].name={name}",))
    assert one(by_reference, "Deployment")


def test_secrets_can_be_mounted_as_files() -> None:
    docs = render("values-hpa.yaml")
    consumer, *ticks = pod_specs(docs)
    container = consumer["containers"][0]
    env = env_of(container)
    mount = _mounts(container)["secrets"]
    assert mount["readOnly"] is True
    assert env["PASS_STATUS_MONGODB_URI_FILE"]["value"] == mount["mountPath"] + "/mongodb-uri"
    password = env["PASS_STATUS_KAFKA_SASL_PASSWORD_FILE"]["value"]
    assert password == mount["mountPath"] + "/kafka-sasl-password"
    assert "PASS_STATUS_MONGODB_URI" not in env
    assert "PASS_STATUS_KAFKA_SASL_PASSWORD" not in env
    volume = {v["name"]: v for v in consumer["volumes"]}["secrets"]["secret"]
    assert volume["secretName"] == "pass-status-credentials"
    assert volume["defaultMode"] == 0o400
    assert {i["key"] for i in volume["items"]} == {"mongodb-uri", "kafka-sasl-password"}
    for spec in ticks:  # the tick jobs get the Kafka password only
        tick_volume = {v["name"]: v for v in spec["volumes"]}["secrets"]["secret"]
        assert {i["key"] for i in tick_volume["items"]} == {"kafka-sasl-password"}
        assert "PASS_STATUS_KAFKA_SASL_PASSWORD_FILE" in env_of(spec["containers"][0])


# --- CronJobs --------------------------------------------------------------------------------


def test_tick_cronjobs() -> None:
    docs = render()
    due = one(docs, "CronJob", "-tick-due")["spec"]
    full = one(docs, "CronJob", "-tick-full")["spec"]
    assert due["schedule"] == "* * * * *"
    for cron in (due, full):
        assert cron["concurrencyPolicy"] == "Forbid"
        job = cron["jobTemplate"]["spec"]
        assert job["template"]["spec"]["restartPolicy"] == "Never"
        assert job["activeDeadlineSeconds"] > 0
    assert due["jobTemplate"]["spec"]["activeDeadlineSeconds"] < 60
    due_container = due["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    full_container = full["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert due_container["args"] == ["tick", "--mode", "due"]
    assert full_container["args"] == ["tick", "--mode", "full", "--dry-run"]
    assert "command" not in full_container, "the image's ENTRYPOINT is python -m consumer"

    applied = one(render("values-all.yaml"), "CronJob", "-tick-full")["spec"]
    args = applied["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args == ["tick", "--mode", "full", "--user", "4242"]
    assert applied["timeZone"] == "Europe/Paris"

    assert (
        kinds(render("default", "cronJobs.due.enabled=false", "cronJobs.full.enabled=false")).count(
            "CronJob"
        )
        == 0
    )


# --- custom resources, checked structurally ------------------------------------------------------


def test_service_monitor_scrapes_the_service() -> None:
    docs = render("values-all.yaml")
    monitor = one(docs, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    service = one(docs, "Service")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    assert re.fullmatch(r"\d+[smh]", endpoint["interval"])


def test_prometheus_rule_embeds_the_alerts_file(tmp_path: Path) -> None:
    rule = one(render("values-all.yaml"), "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    groups = rule["spec"]["groups"]
    source = yaml.safe_load(ALERTS_FILE.read_text())["groups"]
    assert [g["name"] for g in groups] == [g["name"] for g in source]
    tuned = yaml.safe_load((TESTS_DIR / "values-all.yaml").read_text())["monitoring"]["alerts"]
    for got_group, want_group in zip(groups, source, strict=True):
        wanted = [r for r in want_group["rules"] if tuned.get(r["alert"], {}).get("enabled", True)]
        for got, want in zip(got_group["rules"], wanted, strict=True):
            tune = tuned.get(want["alert"], {})
            threshold = threshold_of(want["expr"])
            value = tune.get("threshold", threshold)
            assert got["expr"] == want["expr"].replace(f"{threshold} # threshold", f"{value}")
            assert got.get("for") == tune.get("for", want.get("for"))
            labels = want["labels"] | {"team": "transit"}
            assert got["labels"] == labels | {"severity": tune.get("severity", labels["severity"])}
            anchor = want["alert"].lower()
            assert got["annotations"]["runbook_url"].endswith(f"/docs/operations.md#{anchor}")
            assert got["annotations"]["summary"] == want["annotations"]["summary"]
    default_rule = one(render("default", "monitoring.enabled=true"), "PrometheusRule")
    for group in default_rule["spec"]["groups"]:
        for got in group["rules"]:
            url = got["annotations"]["runbook_url"]
            assert url.startswith("https://github.com/"), url
            assert f"/docs/operations.md#{got['alert'].lower()}" in url, url
    # What the operator loads must be a valid rules file too.
    rules_file = tmp_path / "rendered-rules.yaml"
    rules_file.write_text(yaml.safe_dump({"groups": groups}))
    done = subprocess.run(
        [_tool("promtool"), "check", "rules", str(rules_file)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def threshold_of(expr: str) -> str | None:
    """The number before the "# threshold" comment of an alert's expression, if any."""
    found = re.findall(r"(-?[0-9][0-9.]*(?:e[-+]?[0-9]+)?) # threshold", expr)
    assert len(found) <= 1, expr
    return found[0] if found else None


def rendered_alerts(*sets: str, values_file: str = "default") -> dict[str, Doc]:
    docs = render(values_file, "monitoring.enabled=true", *sets)
    rule = one(docs, "PrometheusRule")
    return {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}


def test_alert_defaults_in_values_are_those_of_the_alerts_file() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())["monitoring"]["alerts"]
    rules = {r["alert"]: r for r in alert_rules()}
    assert set(values) == set(rules)
    for name, rule in rules.items():
        tune = values[name]
        assert tune["enabled"] is True, name
        assert tune["for"] == rule["for"], name
        assert tune["severity"] == rule["labels"]["severity"], name
        threshold = threshold_of(rule["expr"])
        if threshold is None:
            assert "threshold" not in tune, name
        else:
            assert float(tune["threshold"]) == float(threshold), name


def test_alert_threshold_for_severity_and_enablement_come_from_values() -> None:
    base = "monitoring.alerts.PassStatusConsumerLagGrowing"
    alerts = rendered_alerts(
        f"{base}.threshold=5000",
        f"{base}.for=20m",
        f"{base}.severity=critical",
        "monitoring.alerts.PassStatusKafkaErrors.enabled=false",
    )
    lag = alerts["PassStatusConsumerLagGrowing"]
    assert "(pass_status_consumer_lag_messages) > 5000\n" in lag["expr"]
    assert "# threshold" not in lag["expr"]
    assert lag["for"] == "20m"
    assert lag["labels"]["severity"] == "critical"
    assert "PassStatusKafkaErrors" not in alerts
    assert "PassStatusMongoDBErrors" in alerts
    with pytest.raises(RenderError, match="additional properties 'threshold' not allowed"):
        render(
            "default",
            "monitoring.enabled=true",
            "monitoring.alerts.PassStatusConsumerDown.threshold=1",
        )
    with pytest.raises(RenderError, match="/monitoring/alerts/PassStatusOutboxBacklog/for"):
        render("default", "monitoring.alerts.PassStatusOutboxBacklog.for=soon")


def test_due_sweep_alerts_render_only_with_the_due_cronjob() -> None:
    with_due = rendered_alerts()
    assert {"PassStatusDueSweepStale", "PassStatusDueSweepMissing"} <= set(with_due)
    without = rendered_alerts("cronJobs.due.enabled=false")
    assert not {"PassStatusDueSweepStale", "PassStatusDueSweepMissing"} & set(without)
    assert set(with_due) - set(without) == {"PassStatusDueSweepStale", "PassStatusDueSweepMissing"}


def test_monitoring_objects_follow_their_switches() -> None:
    off = kinds(render("default", "monitoring.enabled=false"))
    assert not {"ServiceMonitor", "PrometheusRule", "ConfigMap"} & set(off)
    on = kinds(render("default", "monitoring.enabled=true"))
    assert {"ServiceMonitor", "PrometheusRule", "ConfigMap"} <= set(on)
    no_rules = kinds(
        render("default", "monitoring.enabled=true", "monitoring.prometheusRule.enabled=false")
    )
    assert "PrometheusRule" not in no_rules


def test_keda_scaled_object() -> None:
    docs = render("values-all.yaml")
    deployment = one(docs, "Deployment")
    env = env_of(deployment["spec"]["template"]["spec"]["containers"][0])
    scaled = one(docs, "ScaledObject")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled["spec"]
    assert spec["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    auth = one(docs, "TriggerAuthentication")
    topics = set()
    for trigger in spec["triggers"]:
        assert trigger["type"] == "kafka"
        meta = trigger["metadata"]
        assert all(isinstance(v, str) for v in meta.values()), "KEDA metadata values are strings"
        assert meta["bootstrapServers"] == env["PASS_STATUS_KAFKA_BOOTSTRAP_SERVERS"]["value"]
        assert meta["consumerGroup"] == env["PASS_STATUS_GROUP_ID"]["value"]
        assert meta["lagThreshold"].isdigit()
        assert meta["sasl"] == "scram_sha512"
        assert meta["tls"] == "enable"
        assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
        topics.add(meta["topic"])
    assert topics == {
        env["PASS_STATUS_TOPIC_TICKET_USED"]["value"],
        env["PASS_STATUS_TOPIC_TICK"]["value"],
    }
    params = {r["parameter"]: r for r in auth["spec"]["secretTargetRef"]}
    assert params["password"] == {
        "parameter": "password",
        "name": "pass-status-credentials",
        "key": "kafka-password",
    }
    assert params["ca"]["name"] == "kafka-ca"
    (username,) = auth["spec"]["env"]
    assert username["name"] == "PASS_STATUS_KAFKA_SASL_USERNAME"
    assert (
        username["containerName"] == deployment["spec"]["template"]["spec"]["containers"][0]["name"]
    )

    plain = render("default", "autoscaling.mode=keda")
    assert "TriggerAuthentication" not in kinds(plain)
    trigger = one(plain, "ScaledObject")["spec"]["triggers"][0]
    assert "authenticationRef" not in trigger
    assert trigger["metadata"]["tls"] == "disable"


# --- alerts and dashboard ------------------------------------------------------------------------


def test_alerts_use_only_exported_metrics() -> None:
    names = metric_names()
    for rule in alert_rules():
        unknown = referenced_metrics(rule["expr"]) - names
        assert not unknown, f"{rule['alert']}: {sorted(unknown)}"
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"]
        assert rule["annotations"]["description"]


def test_every_alert_has_firing_and_quiet_unit_tests() -> None:
    tests = yaml.safe_load((TESTS_DIR / "alerts_test.yaml").read_text())
    assert tests["rule_files"] == ["../pass-status/files/alerts.yaml"]
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in tests["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {r["alert"] for r in alert_rules()}
    assert names - firing == set(), "alerts without a firing test"
    assert names - quiet == set(), "alerts without a not-firing test"


def test_dashboard() -> None:
    config_map = one(render("values-all.yaml"), "ConfigMap", "-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(config_map["data"]["pass-status.json"])
    assert dashboard == json.loads(DASHBOARD_FILE.read_text())
    assert dashboard["uid"] == "pass-status"
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    exprs = " ".join(t["expr"] for p in panels for t in p["targets"])
    used = referenced_metrics(exprs)
    assert used <= metric_names(), sorted(used - metric_names())
    used_families = {re.sub(r"_(bucket|sum|count)$", "", n) for n in used}
    families = {re.sub(r"_total$", "", n) for n in metric_families()}
    missing = families - {re.sub(r"_total$", "", n) for n in used_families}
    assert not missing, f"metrics without a panel: {sorted(missing)}"
    for quantile in ("0.5", "0.95", "0.99"):
        assert (
            f"histogram_quantile({quantile}, sum by (le) "
            "(rate(pass_status_end_to_end_latency_seconds_bucket" in exprs
        )


# --- documentation -----------------------------------------------------------------------------


def documented_value_keys() -> list[str]:
    """Dotted paths of values.yaml keys that carry their own comment, checking that every key is
    documented itself, by an ancestor, or through its children."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    stack: list[tuple[int, str, bool]] = []  # (indent, key, documented)
    documented: list[str] = []
    undocumented: list[str] = []
    previous = ""
    key_re = re.compile(r"^(\s*)([A-Za-z][\w.-]*):(.*)$")
    for index, line in enumerate(lines):
        match = key_re.match(line)
        if not match or line.lstrip().startswith("#"):
            previous = line  # a blank line detaches a comment from the next key
            continue
        indent = len(match.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([k for _, k, _ in stack] + [match.group(2)])
        has_comment = previous.strip().startswith("#")
        inherited = any(doc for _, _, doc in stack)
        rest = match.group(3).strip()
        next_line = next((x for x in lines[index + 1 :] if x.strip()), "")
        has_children = rest == "" and (len(next_line) - len(next_line.lstrip())) > indent
        if has_comment:
            documented.append(path)
        elif not inherited and not has_children:
            undocumented.append(path)
        stack.append((indent, match.group(2), has_comment or inherited))
        previous = line
    assert not undocumented, f"values without a comment: {undocumented}"
    return documented


def test_every_value_is_documented_in_values_and_readme() -> None:
    readme = (CHART / "README.md").read_text()
    missing = [k for k in documented_value_keys() if f"`{k}`" not in readme]
    assert not missing, f"values missing from helm/pass-status/README.md: {missing}"


def test_runbook_covers_every_alert_and_metric() -> None:
    runbook = (ROOT / "docs" / "operations.md").read_text()
    for rule in alert_rules():
        assert re.search(rf"^### {rule['alert']}$", runbook, re.MULTILINE), rule["alert"]
    for family in metric_families():
        assert family in runbook, family
    assert "/healthz" in runbook
    assert "/readyz" in runbook


# --- Dockerfile (no Docker engine in CI: lint by construction) ------------------------------------


def dockerfile_stages() -> list[list[str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    instructions = [
        ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")
    ]
    stages: list[list[str]] = []
    for instruction in instructions:
        if instruction.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(instruction)
    return stages


def test_ci_rehearses_the_dockerfile_install_commands() -> None:
    """scripts/rehearse_image_install.sh (run by .ci/run) runs each install command of the
    Dockerfile verbatim."""
    rehearsal = (ROOT / "scripts" / "rehearse_image_install.sh").read_text()
    commands = [
        re.sub(r"^RUN (--mount=\S+ )*", "", re.sub(r"\s+", " ", i)).replace(
            "/app/.venv/bin/python", '"$venv_python"'
        )
        for i in dockerfile_stages()[0]
        if i.startswith("RUN") and ("uv sync" in i or "sed -i" in i)
    ]
    assert len(commands) == 3
    flat = re.sub(r"\s+", " ", rehearsal.replace("\\\n", " "))
    for command in commands:
        assert command in flat, command
    assert "scripts/rehearse_image_install.sh" in (ROOT / ".ci" / "run").read_text()


def test_dockerfile() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2, "multi-stage build"
    # One base for every stage, pinned by digest with its tag (docs/release.md).
    base = re.search(r"^ARG BASE_IMAGE=(\S+)$", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert base, "the base image is one ARG before the first FROM"
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm@sha256:[0-9a-f]{64}", base[1]), base[1]
    for stage in stages:
        assert stage[0].split()[1] == "${BASE_IMAGE}", stage[0]
    builder = " ".join(stages[0])
    assert 'pip install "uv==0.13.9"' in builder
    assert "COPY consumer/ consumer/" in builder
    assert "COPY schemas/ schemas/" in builder
    # uv's Docker pattern: the dependency layer sees only uv.lock and pyproject.toml (bind
    # mounts) and uv's cache mount; --locked everywhere; README.md comes after it.
    syncs = [i for i in stages[0] if "uv sync" in i]
    assert len(syncs) == 2
    deps, project = syncs
    assert "--mount=type=cache,target=/root/.cache/uv" in deps
    assert "--mount=type=bind,source=uv.lock,target=uv.lock" in deps
    assert "--mount=type=bind,source=pyproject.toml,target=pyproject.toml" in deps
    assert "--no-install-project" in deps
    assert "--mount=type=cache,target=/root/.cache/uv" in project
    for sync in syncs:
        assert "uv sync --locked --no-dev --no-editable" in sync
        assert "--frozen" not in sync
    copies_before_deps = stages[0][: stages[0].index(deps)]
    assert not [i for i in copies_before_deps if i.startswith("COPY")], copies_before_deps
    final = stages[-1]
    final_text = "\n".join(final)
    assert "COPY --from=builder /app/.venv /app/.venv" in final_text
    for word in ("gcc", "build-essential", "apt-get install"):
        assert word not in final_text
    (user,) = [i for i in final if i.startswith("USER ")]
    uid = user.split()[1].split(":")[0]
    assert uid.isdigit()
    assert int(uid) != 0
    assert 'ENTRYPOINT ["python", "-m", "consumer"]' in final
    assert 'CMD ["run"]' in final
    assert "EXPOSE 8080" in final
    for label in ("title", "description", "version", "revision", "licenses", "base.name"):
        assert f"org.opencontainers.image.{label}=" in final_text
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    for needed in ("!pyproject.toml", "!uv.lock", "!README.md", "!consumer", "!schemas"):
        assert needed in ignore
