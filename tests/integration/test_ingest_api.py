"""The HTTP ingest API on a real server: authentication, authorisation, validation, relay."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest
from sqlalchemy.orm import Session, sessionmaker

from services.atrest import sealed, store
from services.auth.principals import Role
from services.auth.service import issue_credential, revoke_credential
from services.db import make_engine, make_sessionmaker, transaction
from services.events import provenance
from services.kafka.client import RELAY, kafka
from services.sdk.partner import collect, tail
from services.settings import Settings
from tests.support.events import cloudevent
from tests.support.keys import AGENCY_KEYS, sign

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def keys(database: str) -> dict[str, str]:
    sessions = make_sessionmaker(make_engine(database))
    with transaction(sessions) as session:
        return {
            "harbor": issue_credential(
                session=session, role=Role.AGENCY, subject="harbor-outreach"
            ),
            "partner": issue_credential(session=session, role=Role.PARTNER, subject="metro-police"),
            "revoked": issue_credential(
                session=session, role=Role.AGENCY, subject="harbor-outreach"
            ),
        }


async def post(base: str, doc: Any, key: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with httpx.AsyncClient(base_url=base) as client:
        return await client.post("/v1/events", json=doc, headers=headers)


EVENT = cloudevent("harbor-outreach", "sv-int-api", {"survivor_name": "D", "age": 40})


async def test_missing_or_bad_key_is_401(api: str) -> None:
    assert (await post(api, EVENT, None)).status_code == 401
    assert (await post(api, EVENT, "acc_0000_nope")).status_code == 401
    assert (await post(api, EVENT, "not-a-key")).status_code == 401


async def test_revoked_key_stops_working_at_once(
    api: str, keys: dict[str, str], database: str
) -> None:
    sessions = make_sessionmaker(make_engine(database))
    with transaction(sessions) as session:
        assert revoke_credential(session=session, credential_id=keys["revoked"].split("_")[1])
    assert (await post(api, EVENT, keys["revoked"])).status_code == 401


async def test_wrong_role_is_403(api: str, keys: dict[str, str]) -> None:
    response = await post(api, EVENT, keys["partner"])
    assert response.status_code == 403
    assert "agency" in response.json()["detail"]


async def test_agency_can_only_publish_as_itself(api: str, keys: dict[str, str]) -> None:
    forged = cloudevent("valley-school", "sv-int-api", {"age": 40})
    response = await post(api, forged, keys["harbor"])
    assert response.status_code == 403
    assert "only publish as itself" in response.json()["detail"]


@pytest.mark.parametrize(
    ("over", "fragment"),
    [
        ({"type": "accord.unknown.thing"}, "Unknown event type"),
        ({"data": {"age": "forty"}}, "does not match its schema"),
        ({"specversion": "0.3", "data": {"age": "forty"}}, "specversion"),
        ({"time": "forty"}, "time"),
    ],
)
async def test_invalid_events_are_422_with_a_plain_reason(
    api: str, keys: dict[str, str], over: dict[str, Any], fragment: str
) -> None:
    doc = sign({**EVENT, **over})
    response = await post(api, doc, keys["harbor"])
    assert response.status_code == 422
    assert fragment in response.text
    assert "forty" not in response.text  # errors say where, never echo the value


async def test_oversized_body_is_413(api: str, keys: dict[str, str], settings: Settings) -> None:
    big = sign({**EVENT, "data": {"narrative": "x" * (settings.max_event_bytes + 1)}})
    assert (await post(api, big, keys["harbor"])).status_code == 413


def opened(sessions: sessionmaker[Session], record: bytes) -> dict[str, Any]:
    """An inbound record opened as the relay opens it (the survivor's key from the database)."""
    parsed = sealed.parse(record, sealed.EVENT)
    assert parsed is not None, "the inbound record is not sealed"
    header = parsed.header
    with sessions() as session:
        key = store.survivor_private_keys(session, {header.key})[header.key]
    assert key is not None
    doc: dict[str, Any] = json.loads(sealed.open_record(parsed, key))
    return doc


async def test_accepted_event_is_on_the_inbound_topic_sealed_to_its_survivor(
    api: str, keys: dict[str, str], settings: Settings, sessions: sessionmaker[Session]
) -> None:
    async with tail(kafka(settings, RELAY), settings.topic_inbound) as topic:
        response = await post(api, EVENT, keys["harbor"])
        assert response.status_code == 202
        assert response.json() == {"id": EVENT["id"], "status": "accepted"}
        got = await collect(topic, until=1, timeout_s=10, opener=lambda raw: {"raw": raw})
    (record,) = [g["raw"] for g in got]
    assert EVENT["id"].encode() not in record and b"survivor_name" not in record
    assert opened(sessions, record) == EVENT  # the signed event, byte for byte as posted


async def test_agencies_get_the_key_to_seal_events_about_a_survivor(
    api: str, keys: dict[str, str], sessions: sessionmaker[Session]
) -> None:
    async with httpx.AsyncClient(base_url=api) as client:

        async def get(survivor: str, key: str | None) -> httpx.Response:
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            return await client.get(f"/v1/events/keys/{survivor}", headers=headers)

        answer = await get("sv-int-api-key", keys["harbor"])
        assert answer.status_code == 200
        assert (await get("sv-int-api-key", keys["harbor"])).json() == answer.json()  # stable
        assert (await get("sv-int-api-key", keys["partner"])).status_code == 403
        assert (await get("sv-int-api-key", None)).status_code == 401
        assert (await get("not%20an%20id", keys["harbor"])).status_code == 422
    body = answer.json()
    assert body["survivor_id"] == "sv-int-api-key" and body["format"] == sealed.EVENT
    event = json.dumps(cloudevent("harbor-outreach", "sv-int-api-key", {"age": 40})).encode()
    record = sealed.seal(
        event,
        sealed.event_header("harbor-outreach", "sv-int-api-key", body["generation"]),
        public_key=base64.b64decode(body["public_key"]),
    )
    assert json.dumps(opened(sessions, record)).encode() == event  # the relay opens it


async def test_event_not_signed_by_the_agency_is_refused(api: str, keys: dict[str, str]) -> None:
    unsigned = {k: v for k, v in EVENT.items() if k != "accordsignature"}
    assert (await post(api, unsigned, keys["harbor"])).status_code == 422
    # Signed with another agency's key while claiming to be harbor-outreach.
    forged = provenance.sign_event(unsigned, AGENCY_KEYS["valley-school"])
    response = await post(api, forged, keys["harbor"])
    assert response.status_code == 422
    assert "signature" in response.json()["detail"]
    tampered = {**EVENT, "data": {**EVENT["data"], "age": 41}}
    assert (await post(api, tampered, keys["harbor"])).status_code == 422
