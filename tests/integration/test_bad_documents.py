"""Bad documents in MongoDB are reported and skipped; everything else is processed.

Via a full tick (check-log ``skipped_list``) and via ticket-used events, against the same
set of malformed cache documents, with good passes beside the bad ones.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo.asynchronous.collection import AsyncCollection

from tests.integration.factories import a_pass, a_user, tick, ticket_used
from tests.integration.harness import (
    ConsumerProcess,
    ServiceEnv,
    eventually,
    produce_json,
    read_topic,
    values,
)

pytestmark = pytest.mark.integration
Collection = AsyncCollection[dict[str, Any]]


def _bad_world(now: datetime) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """Malformed documents, each beside a good pass that must still be processed."""
    p: dict[str, dict[str, Any]] = {
        name: a_pass("USABLE", timedelta(minutes=-10), now=now)
        for name in ("expired_202", "expired_203", "expired_204", "expired_205", "dup", "good")
    }
    p["fresh_202"] = a_pass("USABLE", timedelta(days=5), now=now)
    no_payload = a_pass("USABLE", timedelta(minutes=-10), now=now)
    del no_payload["payload"]
    p["no_payload"] = no_payload
    p["status_int"] = {**a_pass(now=now), "status": 7}
    p["status_weird"] = {**a_pass(now=now), "status": "WEIRD"}
    unreadable = a_pass("USING", timedelta(days=1), first_use="x", now=now)
    unreadable["payload"]["expiration"] = "the day after tomorrow"
    p["unreadable"] = unreadable
    dup_again = {**p["dup"], "payload": {**p["dup"]["payload"], "note": "second copy"}}
    not_objects: list[Any] = [p["expired_202"], 42, "text", p["fresh_202"]]
    docs = [
        a_user(201, []) | {"passes": "not a list"},
        a_user(202, not_objects),
        a_user(203, [no_payload, p["expired_203"]]),
        a_user(204, [p["status_int"], p["status_weird"], p["expired_204"]]),
        a_user(205, [unreadable, p["expired_205"]]),
        a_user(206, [p["dup"], dup_again]),
        a_user(207, [a_pass("USABLE", timedelta(minutes=-10), now=now)]) | {"user_id": "abc"},
        a_user(208, [p["good"]]),
    ]
    return docs, p


async def test_a_full_tick_skips_and_reports_bad_documents_and_processes_the_rest(
    service_env: ServiceEnv,
    cache: Collection,
    check_logs: Collection,
    consumers: list[ConsumerProcess],
) -> None:
    settings = service_env.settings
    now = datetime.now(UTC)
    docs, p = _bad_world(now)
    await cache.insert_many(docs)
    process = ConsumerProcess(service_env).start()
    consumers.append(process)

    await produce_json(
        settings.kafka_bootstrap_servers,
        settings.topic_tick,
        [tick("full", at=now, apply=True)],
        key_field="user_id",
    )
    process.wait_for("sweep_completed", timeout=90)
    logs = [d async for d in check_logs.find({"check_userID": "all users"})]
    assert len(logs) == 1, logs
    by_user = {entry["user_id"]: entry for entry in logs[0]["log"]}

    def skipped(user_id: int) -> list[tuple[str | None, str]]:
        return [(s["pass_uuid"], s["reason"]) for s in by_user[user_id]["skipped_list"]]

    def invalid(user_id: int) -> list[tuple[str, str]]:
        return [(s["pass_uuid"], s["status_log"]) for s in by_user[user_id]["invalid_list"]]

    assert len(skipped(201)) == 1
    assert "passes is not a list" in skipped(201)[0][1]
    assert [r for _u, r in skipped(202)] == ["pass is not an object", "pass is not an object"]
    assert invalid(202) == [(p["expired_202"]["pass_uuid"], "USABLE -> EXPIRED")]
    assert skipped(203) == [(p["no_payload"]["pass_uuid"], "missing payload")]
    assert invalid(203) == [(p["expired_203"]["pass_uuid"], "USABLE -> EXPIRED")]
    assert [u for u, _r in skipped(204)] == [
        p["status_int"]["pass_uuid"],
        p["status_weird"]["pass_uuid"],
    ]
    assert all("unknown status" in r for _u, r in skipped(204))
    assert "WEIRD" in skipped(204)[1][1]
    assert skipped(205)[0][0] == p["unreadable"]["pass_uuid"]
    assert "the day after tomorrow" in skipped(205)[0][1]
    assert invalid(206) == [(p["dup"]["pass_uuid"], "USABLE -> EXPIRED")]
    assert "duplicate pass_uuid" in skipped(206)[0][1]
    assert invalid(208) == [(p["good"]["pass_uuid"], "USABLE -> EXPIRED")]
    assert 207 not in by_user
    assert any(e.get("user_id") == "abc" for e in process.events("bad_document_skipped"))
    # A document without a usable user_id is reported under user_id 0, with its _id.
    [(no_uuid, reason)] = skipped(0)
    assert no_uuid is None
    assert "user_id is not an integer: 'abc'" in reason
    assert str(next(d["_id"] for d in docs if d["user_id"] == "abc")) in reason

    # The changes were applied: good passes expired, bad ones left byte-for-byte as they were.
    stored = {d["user_id"]: d async for d in cache.find({})}
    seeded = {d["user_id"]: d for d in docs}
    assert stored[201]["passes"] == "not a list"
    assert [x if not isinstance(x, dict) else x["status"] for x in stored[202]["passes"]] == [
        "EXPIRED",
        42,
        "text",
        "USABLE",
    ]
    assert stored[203]["passes"][0] == seeded[203]["passes"][0]
    assert stored[204]["passes"][:2] == seeded[204]["passes"][:2]
    assert stored[204]["passes"][2]["status"] == "EXPIRED"
    assert stored[205]["passes"][0] == seeded[205]["passes"][0]
    assert [x["status"] for x in stored[206]["passes"]] == ["EXPIRED", "USABLE"]
    assert stored["abc"]["passes"] == seeded["abc"]["passes"]
    assert stored[208]["passes"][0]["status"] == "EXPIRED"
    changes = values(
        await read_topic(settings.kafka_bootstrap_servers, settings.topic_status_changed, expect=6)
    )
    assert len(changes) == 6
    assert process.proc is not None
    assert process.proc.poll() is None
    assert process.stop() == 0


async def test_ticket_used_on_bad_documents_is_dead_lettered_or_applied_to_the_good_passes(
    service_env: ServiceEnv, cache: Collection, consumers: list[ConsumerProcess]
) -> None:
    settings = service_env.settings
    now = datetime.now(UTC)
    docs, p = _bad_world(now)
    await cache.insert_many(docs)
    process = ConsumerProcess(service_env).start()
    consumers.append(process)

    used = now - timedelta(minutes=1)
    events = [
        ticket_used(201, "anything", used),  # passes is not a list: no such pass
        ticket_used(202, p["fresh_202"]["pass_uuid"], used),  # beside non-object passes
        ticket_used(203, p["no_payload"]["pass_uuid"], used),  # no payload: left, reported
        ticket_used(204, p["status_weird"]["pass_uuid"], used),  # unknown status: left
        ticket_used(205, p["unreadable"]["pass_uuid"], used),  # unreadable expiration: left
        ticket_used(207, "whatever", used),  # user_id of the document is not an integer
        ticket_used(208, p["good"]["pass_uuid"], used),  # expired: EXPIRED, first_use set
    ]
    await produce_json(settings.kafka_bootstrap_servers, settings.topic_ticket_used, events)

    dead = values(
        await read_topic(settings.kafka_bootstrap_servers, settings.topic_dead_letter, expect=2)
    )
    reasons = {base64.b64decode(d["key_base64"]).decode(): d["reason"] for d in dead}
    # passes is not a list: the user holds no such pass; user_id "abc": no user 207.
    assert reasons == {"201": "unknown_pass", "207": "unknown_user"}, dead

    async def doc(user_id: int) -> dict[str, Any]:
        found = await cache.find_one({"user_id": user_id})
        assert found is not None
        return found

    await eventually(lambda: doc(208), lambda d: d["passes"][0]["status"] == "EXPIRED", wait=60)
    d202 = await eventually(
        lambda: doc(202), lambda d: d["passes"][3]["status"] == "USING", wait=60
    )
    assert d202["passes"][0]["status"] == "EXPIRED"  # noticed on the way
    assert d202["passes"][1:3] == [42, "text"]
    assert (await doc(203))["passes"][0] == docs[2]["passes"][0]
    assert [x["status"] for x in (await doc(204))["passes"]] == [7, "WEIRD", "EXPIRED"]
    assert (await doc(205))["passes"][0]["status"] == "USING"
    assert (await doc(205))["passes"][0]["payload"]["expiration"] == "the day after tomorrow"
    assert (await doc(208))["passes"][0]["payload"]["first_use"] == events[-1]["used_at"]
    assert process.proc is not None
    assert process.proc.poll() is None
    assert process.stop() == 0
