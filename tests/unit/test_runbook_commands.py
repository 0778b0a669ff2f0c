"""docs/operations.md, "Pause the consumer": its commands name what the chart renders.

The runbook annotates the ScaledObject and scales the Deployment by the same name, waits for
the consumer pods by a label selector (which must not match the tick CronJobs' pods, or the
wait would hang on them), and says that a `helm upgrade` keeps a pause under an autoscaler
but restores `replicaCount` in mode `none`.
"""

from __future__ import annotations

import re
from typing import Any

from tests.conftest import REPO
from tests.unit.test_chart import render

RUNBOOK = REPO / "docs" / "operations.md"
RELEASE = "pass-status"  # the release name tests/unit/test_chart.py renders with


def section(title: str) -> str:
    text = RUNBOOK.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [d for d in docs if d["kind"] == kind]
    return found


def test_pause_names_the_scaledobject_and_deployment_the_chart_renders() -> None:
    docs = render("default", "autoscaling.mode=keda")
    pause = section("Pause the consumer")
    names = set(re.findall(r"(?:scaledobject|deploy/)\s*(<release>)", pause))
    assert names == {"<release>"}
    assert one(docs, "ScaledObject")["metadata"]["name"] == RELEASE
    assert one(docs, "Deployment")["metadata"]["name"] == RELEASE
    assert one(docs, "ScaledObject")["spec"]["scaleTargetRef"]["name"] == RELEASE


def test_pause_waits_for_the_consumer_pods_and_only_them() -> None:
    (selector,) = re.findall(
        r"kubectl .*wait --for=delete pod -l (\S+)", section("Pause the consumer")
    )
    wanted = dict(item.split("=", 1) for item in selector.replace("<release>", RELEASE).split(","))
    docs = render("default")
    consumer_pods = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert wanted.items() <= consumer_pods.items()
    cronjobs = [d for d in docs if d["kind"] == "CronJob"]
    assert cronjobs
    for cronjob in cronjobs:
        tick_pods = cronjob["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
        assert not wanted.items() <= tick_pods.items(), cronjob["metadata"]["name"]


def test_an_upgrade_keeps_a_pause_only_under_an_autoscaler() -> None:
    for mode in ("keda", "hpa"):
        deployment = one(render("default", f"autoscaling.mode={mode}"), "Deployment")
        assert "replicas" not in deployment["spec"], mode
    assert "replicas" in one(render("default"), "Deployment")["spec"]
    assert "restores `replicaCount` in mode `none`" in section("Pause the consumer")
