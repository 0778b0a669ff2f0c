#!/usr/bin/env bash
# Checks of the Helm chart (helm/pass-status) and of its alert rules, offline:
#   1. helm lint --strict with the default values and every helm/tests/values-*.yaml;
#   2. helm template (no --kube-version: the chart renders without flags) and helm template, validated against the Kubernetes JSON schemas
#      of K8S_VERSION (default 1.31.0) with kubernetes-validate --strict (schemas ship in the
#      Python package; no network). Custom resources (ServiceMonitor, PodMonitor,
#      PrometheusRule, ScaledObject, TriggerAuthentication) have no built-in schema: they are skipped here by
#      name and checked structurally by tests/unit/test_chart.py; any other kind without a
#      schema is an error;
#   3. values.schema.json rejects bad input: a wrong type and an unknown key must each fail
#      both helm lint --strict and helm template, naming the bad value;
#   4. promtool check rules and promtool test rules on helm/pass-status/files/alerts.yaml, and
#      promtool check rules on the PrometheusRule's groups as rendered (tuned alerts);
#   5. helm template without --kube-version renders (a new user's first command).
#
# helm and promtool come from ${PASS_STATUS_CACHE:-$HOME/.cache/pass-status}/bin (built by
# `scripts/services tools`) or from PATH.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

chart=helm/pass-status
k8s_version=${K8S_VERSION:-1.31.0}
bin_dir="${PASS_STATUS_CACHE:-$HOME/.cache/pass-status}/bin"
crd_kinds=(ServiceMonitor PodMonitor PrometheusRule ScaledObject TriggerAuthentication)

step() { printf '\n==> %s\n' "$*"; }
die() { printf 'check_chart: %s\n' "$*" >&2; exit 1; }

find_tool() {
    local name=$1
    if [[ -x "$bin_dir/$name" ]]; then
        printf '%s\n' "$bin_dir/$name"
    elif command -v "$name" >/dev/null 2>&1; then
        command -v "$name"
    else
        die "$name not found in $bin_dir nor on PATH; build it with: scripts/services tools"
    fi
}

helm_bin=$(find_tool helm)
promtool_bin=$(find_tool promtool)
printf 'helm:     %s (%s)\n' "$helm_bin" "$("$helm_bin" version --short)"
printf 'promtool: %s (%s)\n' "$promtool_bin" "$("$promtool_bin" --version 2>&1 | head -n 1)"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Keep helm away from the user's repositories, plugins and caches.
export HELM_CACHE_HOME="$tmp/helm/cache" HELM_CONFIG_HOME="$tmp/helm/config" \
    HELM_DATA_HOME="$tmp/helm/data"

value_sets=(default)
for f in helm/tests/values-*.yaml; do
    value_sets+=("$f")
done

values_args() {
    if [[ $1 != default ]]; then
        printf '%s\n' --values "$1"
    fi
}

for set in "${value_sets[@]}"; do
    mapfile -t args < <(values_args "$set")
    step "helm lint --strict ($set)"
    "$helm_bin" lint --strict "$chart" "${args[@]}"
done

for set in "${value_sets[@]}"; do
    mapfile -t args < <(values_args "$set")
    name=$(basename "$set" .yaml)
    out="$tmp/$name.yaml"
    step "helm template + kubernetes-validate $k8s_version ($set)"
    "$helm_bin" template pass-status "$chart" --namespace pass-status \
        --kube-version "$k8s_version" "${args[@]}" >"$out"

    set +e
    report=$(uv run --frozen kubernetes-validate --strict \
        --kubernetes-version "$k8s_version" "$out" 2>&1)
    rc=$?
    set -e
    printf '%s\n' "$report" | grep -v '^INFO' || true
    [[ $rc -eq 0 ]] || die "kubernetes-validate failed for $set"

    # A kind without a schema is only a warning for kubernetes-validate: accept the known
    # custom resources and nothing else.
    while IFS= read -r kind; do
        [[ -z $kind ]] && continue
        if [[ ! " ${crd_kinds[*]} " == *" $kind "* ]]; then
            die "no Kubernetes schema for kind $kind ($set): not a known custom resource"
        fi
        printf 'skipped custom resource kind %s (checked by tests/unit/test_chart.py)\n' "$kind"
    done < <(printf '%s\n' "$report" | sed -n 's/^WARN .*find schema for kind \([A-Za-z]*\) .*/\1/p' | sort -u)
    if printf '%s\n' "$report" | grep '^WARN' | grep -vq 'find schema for kind'; then
        die "unexpected kubernetes-validate warning for $set"
    fi
    passed=$(printf '%s\n' "$report" | grep -c '^INFO .* passed' || true)
    [[ $passed -gt 0 ]] || die "kubernetes-validate validated no resource for $set"
    printf '%s resources valid against Kubernetes %s\n' "$passed" "$k8s_version"
done

# A bad type and an unknown key: each must fail lint and template with the schema's message.
schema_cases=(
    "replicaCount=two|got string, want integer"
    "replicaCnt=2|additional properties 'replicaCnt' not allowed"
)
for case in "${schema_cases[@]}"; do
    item=${case%%|*}
    want=${case#*|}
    for cmd in lint template; do
        step "helm $cmd --set $item must fail (values.schema.json)"
        if [[ $cmd == lint ]]; then
            args=(lint --strict "$chart")
        else
            args=(template pass-status "$chart" --kube-version "$k8s_version")
        fi
        set +e
        out=$("$helm_bin" "${args[@]}" --set "$item" 2>&1)
        rc=$?
        set -e
        [[ $rc -ne 0 ]] || die "helm $cmd accepted --set $item"
        grep -qF -- "$want" <<<"$out" || die "helm $cmd --set $item failed without '$want': $out"
        printf 'rejected: %s\n' "$want"
    done
done

step "promtool check rules"
"$promtool_bin" check rules "$chart/files/alerts.yaml"

step "promtool test rules"
"$promtool_bin" test rules helm/tests/alerts_test.yaml

step "promtool check rules (the rendered PrometheusRule of each value set with one)"
for set in "${value_sets[@]}"; do
    mapfile -t args < <(values_args "$set")
    rendered="$tmp/rules-$(basename "$set" .yaml).yaml"
    "$helm_bin" template pass-status "$chart" --kube-version "$k8s_version" "${args[@]}" \
        --set monitoring.enabled=true --show-only templates/prometheusrule.yaml |
        uv run --frozen python -c 'import sys, yaml; d = yaml.safe_load(sys.stdin); yaml.safe_dump({"groups": d["spec"]["groups"]}, sys.stdout)' \
            >"$rendered"
    "$promtool_bin" check rules "$rendered"
done

step "helm template without --kube-version"
"$helm_bin" template pass-status "$chart" >/dev/null
printf 'rendered with the default values and no flags\n'

step "chart checks passed"
