"""Bad inbound records on the real stack: each is dead-lettered with a reason, none stalls the
partition, good events around them still flow, and the publishing agency can list its own."""

from __future__ import annotations

import asyncio
import copy
import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from services.atrest import store
from services.auth.principals import Role
from services.auth.service import issue_credential
from services.broker.survivor_keys import EventSealer
from services.db import make_engine, make_sessionmaker, transaction
from services.decision_records import split_decisions
from services.events import provenance
from services.kafka.client import AUDIT, kafka
from services.sdk.partner import collect, tail
from services.settings import Settings
from services.sink_worker import SinkWorker
from tests.support.events import cloudevent
from tests.support.keys import AGENCY_KEYS

pytestmark = pytest.mark.integration

REASONS = {
    "oversized",
    "malformed",
    "unknown_agency",
    "unsigned",
    "bad_signature",
    "stale",
    "replayed",
    "unknown_type",
    "schema",
    "unsealed",
    "unreadable",
    "erased",
    "seal_mismatch",
}
SECRET = "Zephyrine-Quillfeather"  # a value that must never appear in a rejection


def good(survivor: str) -> dict[str, Any]:
    return cloudevent("harbor-outreach", survivor, {"survivor_name": SECRET, "age": 30})


def unsigned(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != provenance.SIGNATURE}


async def publish_all(
    settings: Settings, producer: AIOKafkaProducer, values: list[bytes]
) -> list[tuple[int, int]]:
    """Publish in order; return each record's (partition, offset)."""
    futures = [
        await producer.send(settings.topic_inbound, v, key=b"sv-dead-letters") for v in values
    ]
    metas = [await f for f in futures]
    return [(m.partition, m.offset) for m in metas]


async def dead_letters_and_decisions(
    settings: Settings, producer: AIOKafkaProducer, values: list[bytes], good_events: int
) -> tuple[dict[tuple[int, int], dict[str, Any]], list[dict[str, Any]], list[tuple[int, int]]]:
    async with (
        tail(kafka(settings, AUDIT), settings.topic_deadletter) as dead,  # the sink worker
        tail(kafka(settings, AUDIT), settings.topic_decisions) as decided,
    ):
        positions = await publish_all(settings, producer, values)
        bad = len(values) - good_events
        letters = await collect(dead, until=bad, timeout_s=60, settle_s=0.5)
        decisions = await collect(
            decided, until=good_events, timeout_s=60, settle_s=0.5, split=split_decisions
        )
    by_position = {
        (d["inbound"]["partition"], d["inbound"]["offset"]): d
        for d in letters
        if d["inbound"]["topic"] == settings.topic_inbound
    }
    return by_position, decisions, positions


@pytest.fixture(scope="module")
async def known_bad(
    settings: Settings, producer: AIOKafkaProducer, relay: None
) -> tuple[dict[str, tuple[int, int]], dict[tuple[int, int], dict[str, Any]], list[Any]]:
    event = good("sv-dead-letters")
    forged = provenance.sign_event(
        {**unsigned(good("sv-dead-letters")), "source": "/agencies/valley-school"},
        AGENCY_KEYS["harbor-outreach"],  # signed by A, claiming to be B
    )
    tampered = copy.deepcopy(event)
    tampered["data"]["age"] = 31
    bad: dict[str, bytes] = {
        "empty": b"",
        "not_json": b"{this is not json " + SECRET.encode(),
        "not_an_object": json.dumps([SECRET]).encode(),
        "missing_envelope": json.dumps({"data": {"survivor_name": SECRET}}).encode(),
        "unknown_agency": json.dumps(
            {**unsigned(good("sv-dead-letters")), "source": "/agencies/nobody"}
        ).encode(),
        "unsigned": json.dumps(unsigned(good("sv-dead-letters"))).encode(),
        "forged_source": json.dumps(forged).encode(),
        "tampered": json.dumps(tampered).encode(),
        "unknown_type": json.dumps(
            cloudevent("harbor-outreach", "sv-dead-letters", {}, type="accord.nope.unheard_of")
        ).encode(),
        "schema": json.dumps(
            cloudevent("harbor-outreach", "sv-dead-letters", {"age": "thirty", "x": SECRET})
        ).encode(),
        "oversized": json.dumps(
            cloudevent("harbor-outreach", "sv-dead-letters", {"notes": SECRET * 20_000, "age": 30})
        ).encode(),
        "deep": json.dumps(cloudevent("harbor-outreach", "sv-dead-letters", {"age": 30})).encode()[
            :-1
        ]
        + b', "x": '
        + b"[" * 5000
        + b"]" * 5000
        + b"}",
        "event": json.dumps(event).encode(),
        "replayed": json.dumps(event).encode(),  # the same event id a second time
    }
    # Every record is sealed as harbor-outreach about sv-dead-letters (whatever it claims
    # inside), as an agency's producer would; then the cases of the seal itself.
    sealer = EventSealer.for_settings(settings)
    sealed = {
        name: sealer(value, agency_id="harbor-outreach", survivor_id="sv-dead-letters")
        for name, value in bad.items()
    }
    sealed["plaintext"] = json.dumps(good("sv-dead-letters")).encode()
    sealed["sealed_as_another_survivor"] = sealer(
        json.dumps(good("sv-dead-letters")).encode(),
        agency_id="harbor-outreach",
        survivor_id="sv-dead-letters-2",
    )
    altered = json.loads(sealed["event"])
    altered["hpke"] = (
        altered["hpke"][:40] + ("A" if altered["hpke"][40] != "A" else "B") + (altered["hpke"][41:])
    )
    sealed["altered_seal"] = json.dumps(altered).encode()
    # A survivor whose data key is erased after the agency sealed to it (crypto-shredding):
    # the event still in the topic cannot be read, so it is dropped, not relayed.
    sealed["erased"] = sealer(json.dumps(good("sv-dead-letters-erased")).encode())
    with transaction(make_sessionmaker(make_engine(settings.sqlalchemy_url))) as session:
        assert store.erase(session, "sv-dead-letters-erased", by="test", now=datetime.now(UTC)) == 1
    sealer.close()
    names = list(sealed)
    letters, decisions, positions = await dead_letters_and_decisions(
        settings, producer, list(sealed.values()), good_events=1
    )
    return dict(zip(names, positions, strict=True)), letters, decisions


EXPECTED = {
    "empty": "malformed",
    "not_json": "malformed",
    "not_an_object": "malformed",
    "missing_envelope": "malformed",
    "unknown_agency": "unknown_agency",
    "unsigned": "unsigned",
    "forged_source": "bad_signature",
    "tampered": "bad_signature",
    "unknown_type": "unknown_type",
    "schema": "schema",
    "oversized": "oversized",
    "deep": "malformed",
    "replayed": "replayed",
    "plaintext": "unsealed",
    "sealed_as_another_survivor": "seal_mismatch",
    "altered_seal": "unreadable",
    "erased": "erased",
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_bad_event_is_dead_lettered_with_its_reason(name: str, known_bad: Any) -> None:
    positions, letters, _ = known_bad
    letter = letters[positions[name]]
    assert letter["code"] == EXPECTED[name]
    assert letter["detail"]
    assert SECRET not in json.dumps(letter)


def test_event_signed_by_a_claiming_b_is_dead_lettered(known_bad: Any) -> None:
    positions, letters, _ = known_bad
    assert letters[positions["forged_source"]]["code"] == "bad_signature"
    assert letters[positions["forged_source"]]["agency_id"] == "valley-school"


def test_the_good_event_among_them_is_relayed_once_and_not_dead_lettered(known_bad: Any) -> None:
    positions, letters, decisions = known_bad
    assert positions["event"] not in letters
    assert len(letters) == len(EXPECTED)
    event_ids = {d["event_id"] for d in decisions}
    assert len(event_ids) == 1
    assert all(SECRET not in json.dumps(d) for d in decisions)


async def test_agency_lists_only_its_own_rejections_without_values(
    api: str, database: str, known_bad: Any, sinks: SinkWorker
) -> None:
    sessions = make_sessionmaker(make_engine(database))
    with transaction(sessions) as session:
        harbor = issue_credential(session=session, role=Role.AGENCY, subject="harbor-outreach")
        valley = issue_credential(session=session, role=Role.AGENCY, subject="valley-school")
        partner = issue_credential(session=session, role=Role.PARTNER, subject="metro-police")
    positions, letters, _ = known_bad
    harbors = [
        n for n, p in positions.items() if letters.get(p, {}).get("agency_id") == "harbor-outreach"
    ]
    async with httpx.AsyncClient(base_url=api) as client:

        async def listing(key: str, **params: Any) -> httpx.Response:
            return await client.get(
                "/v1/events/rejected", params=params, headers={"Authorization": f"Bearer {key}"}
            )

        await sinks.catch_up()  # the sink worker has stored every dead letter so far
        mine = (await listing(harbor)).json()["items"]
        theirs = (await listing(valley)).json()["items"]
        assert (await listing(partner)).status_code == 403
        assert (await client.get("/v1/events/rejected")).status_code == 401
        first = await listing(harbor, limit=2)
        second = await listing(harbor, limit=2, after=first.json()["next_after"])
        only_schema = (await listing(harbor, code="schema")).json()["items"]
    assert len(mine) == len(harbors)
    assert {i["code"] for i in mine} == {letters[positions[n]]["code"] for n in harbors}
    assert [i["code"] for i in theirs] == ["bad_signature"]  # forged in valley's name
    assert [i["id"] for i in first.json()["items"] + second.json()["items"]] == [
        i["id"] for i in mine[:4]
    ]
    assert [i["code"] for i in only_schema] == ["schema"]
    assert SECRET not in json.dumps(mine)


# --- fuzz: hypothesis draws bad bytes; all must be dead-lettered, a good event still relayed ---

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
ENVELOPE_KEYS = ["specversion", "id", "source", "type", "subject", "time", "data"]


@st.composite
def bad_records(draw: st.DrawFn) -> bytes:
    kind = draw(
        st.sampled_from(["bytes", "json", "wrong_type", "unsigned", "tampered", "huge", "deep"])
    )
    base = good("sv-fuzz")
    if kind == "bytes":
        raw = draw(st.binary(max_size=200))
        return raw if raw[:1] != b"{" else b"x" + raw
    if kind == "json":  # any JSON that is not an object
        value = draw(json_values.filter(lambda v: not isinstance(v, dict)))
        return json.dumps(value).encode()
    if kind == "wrong_type":  # an envelope attribute of the wrong type, signed anyway
        key = draw(st.sampled_from(ENVELOPE_KEYS))
        value = draw(
            st.integers(-(10**6), 10**6)
            | st.booleans()
            | st.lists(st.integers(), max_size=3)
            | st.none()
        )
        return json.dumps(
            provenance.sign_event({**unsigned(base), key: value}, AGENCY_KEYS["harbor-outreach"])
        ).encode()
    if kind == "unsigned":
        return json.dumps(unsigned(base)).encode()
    if kind == "tampered":
        field = draw(st.sampled_from(["survivor_name", "age"]))
        changed = copy.deepcopy(base)
        changed["data"][field] = draw(st.text(min_size=1, max_size=10)) + "!"
        return json.dumps(changed).encode()
    if kind == "huge":
        size = draw(st.integers(min_value=256 * 1024 + 1, max_value=600 * 1024))
        return json.dumps({**base, "data": {"notes": "a" * size}}).encode()
    depth = draw(st.integers(min_value=1500, max_value=20_000))
    return b'{"data": ' + b"[" * depth + b"]" * depth + b"}"


async def fuzz_round(
    settings: Settings, producer: AIOKafkaProducer, drawn: list[tuple[bytes, bool]]
) -> None:
    event = good("sv-fuzz")
    sealer = EventSealer.for_settings(settings)
    try:  # sealed as an agency's producer sends them, or (drawn) as they are
        values = [
            sealer(v, agency_id="harbor-outreach", survivor_id="sv-fuzz") if sealed else v
            for v, sealed in drawn
        ]
        values.append(sealer(json.dumps(event).encode()))
    finally:
        sealer.close()
    letters, decisions, positions = await dead_letters_and_decisions(
        settings, producer, values, good_events=1
    )
    for position in positions[:-1]:
        assert position in letters, "a bad record was not dead-lettered"
        assert letters[position]["code"] in REASONS
    assert positions[-1] not in letters
    assert event["id"] in {d["event_id"] for d in decisions}, "the good event was not relayed"


async def test_fuzzed_inbound_bytes_all_dead_lettered_and_good_events_still_flow(
    settings: Settings, producer: AIOKafkaProducer, relay: None
) -> None:
    # Hypothesis drives a sync function; it runs in a worker thread and hands each round to
    # this loop, which keeps running the relay meanwhile.
    loop = asyncio.get_running_loop()

    @hsettings(
        max_examples=8,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(values=st.lists(st.tuples(bad_records(), st.booleans()), min_size=5, max_size=25))
    def check(values: list[tuple[bytes, bool]]) -> None:
        round_ = fuzz_round(settings, producer, values)
        asyncio.run_coroutine_threadsafe(round_, loop).result(timeout=180)

    await asyncio.to_thread(check)
