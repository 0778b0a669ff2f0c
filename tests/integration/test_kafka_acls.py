"""docs/operations.md, "Kafka ACLs": the documented grants, run verbatim against a broker with
an authorizer, are what the consumer and the tick CronJobs need; without them the service
cannot start.

A Kafka of this module only (``scripts/services up --sasl`` in a temporary state directory on
free ports) runs KRaft's StandardAuthorizer with ``allow.everyone.if.no.acl.found=false``. Its
PLAINTEXT listener (tools, this test's producers and readers) is a super user; the service
connects through SASL_PLAINTEXT as ``User:pass-status``, the principal the runbook grants.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import orjson
import pytest
from pymongo import AsyncMongoClient

from tests.conftest import REPO
from tests.integration.factories import a_pass, a_user, ticket_used
from tests.integration.harness import (
    ConsumerProcess,
    ServiceEnv,
    produce_json,
    read_topic,
    service_environment,
)
from tests.integration.own_kafka import sasl_kafka

pytestmark = pytest.mark.slow

RUNBOOK = REPO / "docs" / "operations.md"
BLOCK = re.compile(r"<!-- runbook-test: acls-consumer -->\n```sh\n(.*?)\n```", re.DOTALL)
SASL_USER = "pass-status"
SASL_PASSWORD = "acl-test-password"
AUTHORIZER = """
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
# The PLAINTEXT and CONTROLLER listeners (broker-to-controller, tools, test clients).
super.users=User:ANONYMOUS
"""


@pytest.fixture(scope="module")
def acl_kafka(
    mongodb_uri: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """``plaintext`` (super user) and ``sasl`` bootstrap addresses of one broker with ACLs."""
    state = tmp_path_factory.mktemp("acl-services")
    extra = state / "authorizer.properties"
    extra.write_text(AUTHORIZER)
    with sasl_kafka(
        state / "services", mongodb_uri, SASL_USER, SASL_PASSWORD, extra_properties=str(extra)
    ) as addresses:
        yield addresses


def service_as_granted_principal(kafka: dict[str, str], mongodb_uri: str, db: str) -> ServiceEnv:
    """The runbook's names (default topics and group; `up` created the topics) over SASL."""
    return service_environment(
        db,
        kafka["sasl"],
        mongodb_uri,
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism="PLAIN",
        kafka_sasl_username=SASL_USER,
        kafka_sasl_password=SASL_PASSWORD,
        group_id="pass-status",
        topic_ticket_used="bytemark.ticket-used.v1",
        topic_tick="bytemark.tick.v1",
        topic_status_changed="bytemark.pass-status-changed.v1",
        topic_check_log="bytemark.check-log.v1",
        topic_dead_letter="bytemark.dead-letter.v1",
    )


def run_cli(service: ServiceEnv, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "consumer", *args],
        env={**os.environ, **service.env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def grant_as_documented(bootstrap: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    found = BLOCK.search(RUNBOOK.read_text())
    assert found, "docs/operations.md has no <!-- runbook-test: acls-consumer --> block"
    (cwd / "admin.properties").write_text("")  # the super user's listener needs no security
    script = f'kafka-acls.sh() {{ "{REPO}/scripts/kafka-acls" "$@"; }}\n{found[1]}\n'
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        env={**os.environ, "BOOTSTRAP": bootstrap},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


async def test_documented_acls_are_what_the_consumer_and_tick_jobs_need(
    acl_kafka: dict[str, str], mongodb_uri: str, unique_name: str, tmp_path: Path
) -> None:
    service = service_as_granted_principal(acl_kafka, mongodb_uri, unique_name)
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(mongodb_uri, tz_aware=True)
    try:
        # Before the grants the principal sees no topic: the service refuses to start.
        refused = run_cli(service, "run")
        assert refused.returncode == 2, refused.stderr[-2000:]
        assert "missing Kafka topics" in refused.stderr

        granted = grant_as_documented(acl_kafka["plaintext"], tmp_path)
        assert granted.returncode == 0, granted.stderr[-3000:] + granted.stdout[-3000:]
        assert "User:pass-status" in granted.stdout  # the block's own --list verification

        the_pass = a_pass("USABLE", timedelta(hours=1))
        db = client[unique_name]
        await db[service.settings.collection_cache].insert_one(a_user(4242, [the_pass]))
        process = ConsumerProcess(service).start()
        try:
            await produce_json(
                acl_kafka["plaintext"],
                service.settings.topic_ticket_used,
                [ticket_used(4242, the_pass["pass_uuid"])],
            )
            changes = await read_topic(
                acl_kafka["plaintext"], service.settings.topic_status_changed, expect=1
            )
            assert [orjson.loads(c.value)["status_log"] for c in changes] == ["USABLE -> USING"]
            assert process.http_get("/readyz")[0] == 200
            tick = run_cli(service, "tick", "--mode", "due")  # the tick CronJob, same identity
            assert tick.returncode == 0, tick.stderr[-2000:]
        finally:
            code = process.stop()
        assert code == 0
        denied = [line for line in process.raw if "AuthorizationFailed" in line]
        assert denied == []
    finally:
        await client.drop_database(unique_name)
        await client.close()
