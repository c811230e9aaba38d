"""Data at rest (issue #8): survivor content in the database is sealed with per-survivor data
keys; KEK rotation while reading and writing; crypto-shredding; the migration of old rows."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg
import pytest
from sqlalchemy import Connection, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from services import migrations
from services.atrest import store
from services.atrest.cli import rewrap_command, status_command
from services.atrest.envelope import KekRing, LocalKek, Unreadable
from services.atrest.models import SurvivorKey
from services.audit.cli import run_verify
from services.audit.models import AuditEntry
from services.auth.principals import Role
from services.auth.service import issue_credential
from services.consent import models, service
from services.consent.erasure import erase_command
from services.consent.schemas import ConsentIn, RecordedBy
from services.db import make_engine, make_sessionmaker, transaction
from services.devstack import postgres
from services.legal import models as legal_models
from services.legal import service as legal
from services.legal.schemas import DeclarationIn
from services.registry.models import Agency
from services.settings import Settings
from services.snapshot.build import snapshot
from services.snapshot.publisher import encode

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
SELF = RecordedBy(role="self", actor="sv")
PROVISION = {
    "type": "permit",
    "recipients": {"partners": [], "partner_types": ["shelter"]},
    "purposes": ["service_referral"],
    "categories": ["*"],
    "period": {"start": "2026-01-01T00:00:00Z", "end": None},
}


def canary() -> str:
    return f"CANARY-{uuid.uuid4().hex[:12]}"


RAW = {"k1": os.urandom(32), "k2": os.urandom(32)}  # two KEKs, as configuration holds them


def kek(key_id: str) -> LocalKek:
    return LocalKek(key_id, RAW[key_id])


# --- through the API, on the session's database ------------------------------------------------


@pytest.fixture(scope="module")
def keys(sessions: sessionmaker[Session]) -> dict[str, str]:
    with transaction(sessions) as session:
        return {
            "advocate": issue_credential(
                session=session, role=Role.ADVOCATE, subject="adv-rest", agency_id="harbor-outreach"
            ),
            "supervisor": issue_credential(
                session=session,
                role=Role.SUPERVISOR,
                subject="sup-rest",
                agency_id="harbor-outreach",
            ),
        }


def client(api: str, key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=api, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def raw_rows(sessions: sessionmaker[Session], survivor: str) -> list[str]:
    """Every column of the survivor's consent versions, declarations, court orders and
    guardians, as the database holds them (what a disk or a backup shows)."""
    out = []
    with sessions() as session:
        for table in ("consent_versions", "declarations", "court_orders", "guardians"):
            for row in session.execute(
                text(f"SELECT * FROM {table} WHERE survivor_id = :s"),  # noqa: S608 (fixed names)
                {"s": survivor},
            ):
                out.append(json.dumps([str(v) for v in row]))
    return out


async def survivor_with_content(
    api: str, keys: dict[str, str], evidence: str, justification: str
) -> tuple[str, str]:
    """A survivor with a consent (evidence), a declaration and a court order (justifications)."""
    survivor = f"sv-rest-{uuid.uuid4().hex[:8]}"
    async with client(api, keys["advocate"]) as adv, client(api, keys["supervisor"]) as sup:
        assert (await adv.post("/v1/survivors", json={"survivor_id": survivor})).status_code == 201
        grant = await adv.post(
            f"/v1/survivors/{survivor}/consents",
            json={
                "provisions": [PROVISION],
                "evidence": {"kind": "signed_statement", "reference": evidence},
            },
        )
        assert grant.status_code == 201, grant.text
        declared = await sup.post(
            f"/v1/survivors/{survivor}/declarations",
            json={"justification": f"Credible threat tonight: {justification}"},
        )
        assert declared.status_code == 201, declared.text
        order = await sup.post(
            f"/v1/survivors/{survivor}/court-orders",
            json={
                "reference": "Case 2026-7",
                "court": "County Court",
                "recipient": "metro-police",
                "fields": ["survivor_name"],
                "expires_at": (datetime.now(UTC) + timedelta(days=3)).isoformat(),
                "justification": f"Order: {justification}",
            },
        )
        assert order.status_code == 201, order.text
    return survivor, grant.json()["id"]


async def survivor_with_identity(
    api: str, keys: dict[str, str], sessions: sessionmaker[Session], secret: dict[str, str]
) -> tuple[str, str, str]:
    """A minor with a guardian (``secret["relation"]``) who granted a consent, and a court
    order (``secret["reference"]``, ``secret["court"]``): (survivor, consent id, order id)."""
    survivor, guardian = f"sv-rest-{uuid.uuid4().hex[:8]}", f"g-rest-{uuid.uuid4().hex[:8]}"
    with transaction(sessions) as session:
        guardian_key = issue_credential(session=session, role=Role.GUARDIAN, subject=guardian)
    async with (
        client(api, keys["advocate"]) as adv,
        client(api, keys["supervisor"]) as sup,
        client(api, guardian_key) as grd,
    ):
        assert (await adv.post("/v1/survivors", json={"survivor_id": survivor})).status_code == 201
        link = {"guardian_id": guardian, "relation": secret["relation"]}
        assert (await adv.put(f"/v1/survivors/{survivor}/guardians", json=link)).status_code == 204
        grant = await grd.post(
            f"/v1/survivors/{survivor}/consents",
            json={
                "provisions": [PROVISION],
                "evidence": {"kind": "form_reference", "reference": "guardian form"},
            },
        )
        assert grant.status_code == 201, grant.text
        assert grant.json()["recorded_by"]["relation"] == secret["relation"]
        order = await sup.post(
            f"/v1/survivors/{survivor}/court-orders",
            json={
                "reference": secret["reference"],
                "court": secret["court"],
                "recipient": "metro-police",
                "fields": ["survivor_name"],
                "expires_at": (datetime.now(UTC) + timedelta(days=3)).isoformat(),
                "justification": "Order of the court, served today.",
            },
        )
        assert order.status_code == 201, order.text
        # The API answers with the order's identity, opened from what it sealed.
        assert (order.json()["reference"], order.json()["court"]) == (
            secret["reference"],
            secret["court"],
        )
    return survivor, grant.json()["id"], order.json()["id"]


def identity_secrets() -> dict[str, str]:
    return {"reference": canary(), "court": canary(), "relation": canary()}


async def test_order_identity_and_guardian_relation_are_sealed_and_never_published(
    api: str, keys: dict[str, str], sessions: sessionmaker[Session]
) -> None:
    secret = identity_secrets()
    survivor, cid, order_id = await survivor_with_identity(api, keys, sessions, secret)
    async with client(api, keys["advocate"]) as adv:
        listed = (await adv.get(f"/v1/survivors/{survivor}/consents")).json()
        fhir = (await adv.get(f"/v1/survivors/{survivor}/consents/{cid}/fhir")).json()
    # The API reads the relation back as before ...
    assert listed[0]["recorded_by"]["relation"] == secret["relation"]
    assert fhir["contained"][0]["relationship"] == [{"text": secret["relation"]}]
    # ... while the database holds only ciphertext of the order's identity and the relation.
    rows = raw_rows(sessions, survivor)
    assert len(rows) == 3  # the consent version, the order, the guardian
    assert not [r for r in rows if any(v in r for v in secret.values())]
    with sessions() as session:
        order = session.get(legal_models.CourtOrder, order_id)
        link = session.scalars(
            select(models.Guardian).where(models.Guardian.survivor_id == survivor)
        ).one()
        stored = session.get(models.ConsentVersion, (cid, 1))
        assert order is not None and stored is not None
        for token in (order.reference, order.court, link.relation, stored.recorded_by["relation"]):
            assert token.startswith("ac1.1.")
        assert legal.order_identity(session, order) == (secret["reference"], secret["court"])
        assert service.relation_of(session, link) == secret["relation"]
        # The relay's snapshot (what goes to accord.consent.changes, and so to OPA) holds
        # none of them: the relay needs no KEK.
        survivor_row = session.get(models.Survivor, survivor)
        assert survivor_row is not None
        snap = snapshot(session=session, survivor=survivor_row)
    published = encode(snap).decode()
    assert not [v for v in secret.values() if v in published]
    assert [sorted(o) for o in snap.court_orders] == [["expires_at", "fields", "id", "recipient"]]
    assert snap.consents[0]["recorded_by"] == {
        "role": "guardian",
        "actor": listed[0]["recorded_by"]["actor"],
        "suspect": False,
    }


async def test_erasing_a_survivors_key_erases_the_order_identity_and_relation(
    api: str, keys: dict[str, str], sessions: sessionmaker[Session], settings: Settings
) -> None:
    secret = identity_secrets()
    survivor, cid, order_id = await survivor_with_identity(api, keys, sessions, secret)
    said: list[str] = []
    assert await asyncio.to_thread(erase_command, settings, said.append, survivor, by="ops-2") == 1
    async with client(api, keys["advocate"]) as adv, client(api, keys["supervisor"]) as sup:
        listed = await adv.get(f"/v1/survivors/{survivor}/consents")
        fhir = await adv.get(f"/v1/survivors/{survivor}/consents/{cid}/fhir")
        assert listed.status_code == fhir.status_code == 200
        assert listed.json()[0]["recorded_by"]["relation"] is None
        assert not [c for c in fhir.json().get("contained", []) if "relationship" in c]
        assert not [v for v in secret.values() if v in listed.text + fhir.text]
        # Nothing new is recorded about an erased survivor: no key is made for them again.
        order = await sup.post(
            f"/v1/survivors/{survivor}/court-orders",
            json={
                "reference": "Case after",
                "court": "Court after",
                "recipient": "metro-police",
                "fields": ["survivor_name"],
                "expires_at": (datetime.now(UTC) + timedelta(days=3)).isoformat(),
                "justification": "Order of the court, served after the erasure.",
            },
        )
        assert order.status_code == 410, order.text
        assert "Case after" not in order.text
    with sessions() as session:
        erased = session.get(legal_models.CourtOrder, order_id)
        link = session.scalars(
            select(models.Guardian).where(models.Guardian.survivor_id == survivor)
        ).one()
        assert erased is not None and erased.reference.startswith("ac1.1.")
        assert legal.order_identity(session, erased) == (None, None)
        assert service.relation_of(session, link) is None
        survivor_row = session.get(models.Survivor, survivor)
        assert survivor_row is not None
        # The snapshot does not depend on any key: the erased order still counts (R9).
        snap = snapshot(session=session, survivor=survivor_row)
        assert order_id in [o["id"] for o in snap.court_orders]
    report = await asyncio.to_thread(run_verify, settings)
    assert report.ok, (report.problems, report.checkpoint_problems)
    assert not [r for r in raw_rows(sessions, survivor) if any(v in r for v in secret.values())]


async def test_evidence_and_justifications_are_sealed_in_the_database(
    api: str, keys: dict[str, str], sessions: sessionmaker[Session]
) -> None:
    evidence, justification = canary(), canary()
    survivor, cid = await survivor_with_content(api, keys, evidence, justification)
    async with client(api, keys["advocate"]) as adv:
        listed = (await adv.get(f"/v1/survivors/{survivor}/consents")).json()
        fhir = (await adv.get(f"/v1/survivors/{survivor}/consents/{cid}/fhir")).json()
    # The API reads it back as before ...
    assert listed[0]["evidence"] == {"kind": "signed_statement", "reference": evidence}
    assert listed[0]["evidence_erased"] is False
    assert fhir["sourceAttachment"] == {"title": evidence}
    # ... while the database holds only ciphertext.
    rows = raw_rows(sessions, survivor)
    assert len(rows) == 3
    assert not [r for r in rows if evidence in r or justification in r]
    with sessions() as session:
        stored = session.get(models.ConsentVersion, (cid, 1))
        declaration = session.scalars(
            select(legal_models.Declaration).where(legal_models.Declaration.survivor_id == survivor)
        ).one()
        assert stored is not None and stored.evidence is not None
        assert stored.evidence.startswith("ac1.1.")
        assert declaration.justification.startswith("ac1.1.")
        assert justification in (legal.justification(session, declaration) or "")
        dek = session.get(SurvivorKey, (survivor, 1))
        assert dek is not None and dek.wrapped_dek is not None and dek.kek_id == "dev"
        assert len(dek.wrapped_dek) == 12 + 32 + 16  # nonce, AES-256 key, tag: never the key


async def test_a_ciphertext_copied_to_another_survivors_row_does_not_open(
    api: str, keys: dict[str, str], sessions: sessionmaker[Session]
) -> None:
    a, cid_a = await survivor_with_content(api, keys, canary(), canary())
    b, cid_b = await survivor_with_content(api, keys, canary(), canary())
    with transaction(sessions) as session:
        token = session.get(models.ConsentVersion, (cid_a, 1)).evidence  # type: ignore[union-attr]
        session.execute(
            update(models.ConsentVersion)
            .where(models.ConsentVersion.consent_id == cid_b)
            .values(evidence=token)
        )
    with sessions() as session, pytest.raises(Unreadable):
        service.version(session=session, survivor_id=b, consent_id=cid_b, number=1)
    with sessions() as session:  # the one it was copied from still opens
        assert service.version(session=session, survivor_id=a, consent_id=cid_a, number=1).evidence


async def test_erasing_a_survivors_key_makes_their_evidence_unreadable_and_the_chain_verifies(
    api: str, keys: dict[str, str], sessions: sessionmaker[Session], settings: Settings
) -> None:
    evidence, justification = canary(), canary()
    survivor, cid = await survivor_with_content(api, keys, evidence, justification)
    with sessions() as session:
        chained_before = session.scalar(
            select(AuditEntry.seq).where(AuditEntry.survivor_id == survivor).limit(1)
        )
    assert chained_before is not None
    said: list[str] = []
    assert await asyncio.to_thread(erase_command, settings, said.append, survivor, by="ops-1") == 1
    assert said[0] == f"destroyed 1 data key(s) of survivor {survivor}; 1 consent(s) ended"
    assert await asyncio.to_thread(erase_command, settings, said.append, survivor, by="ops-1") == 0

    async with client(api, keys["advocate"]) as adv:
        listed = await adv.get(f"/v1/survivors/{survivor}/consents")
        one = await adv.get(f"/v1/survivors/{survivor}/consents/{cid}/versions/1")
        fhir = await adv.get(f"/v1/survivors/{survivor}/consents/{cid}/fhir")
        disclosures = await adv.get(f"/v1/survivors/{survivor}/disclosures")
        assert listed.status_code == one.status_code == fhir.status_code == 200
        assert disclosures.status_code == 200
        for doc in (listed.json()[0], one.json()):
            assert doc["evidence"] is None
        assert one.json()["evidence_erased"] is True
        assert "sourceAttachment" not in fhir.json()
        assert evidence not in listed.text + one.text + fhir.text
        # The erasure ended the consent (revoking it again is a conflict, not an error) ...
        assert listed.json()[0]["status"] == "revoked"
        revoked = await adv.post(f"/v1/survivors/{survivor}/consents/{cid}/revoke")
        assert revoked.status_code == 409, revoked.text
        # ... and nothing new is recorded: no key is made for an erased survivor again.
        again = await adv.post(
            f"/v1/survivors/{survivor}/consents",
            json={
                "provisions": [PROVISION],
                "evidence": {"kind": "form_reference", "reference": "new form"},
            },
        )
        assert again.status_code == 410, again.text

    with sessions() as session:
        first = session.get(SurvivorKey, (survivor, 1))
        second = session.get(SurvivorKey, (survivor, 2))
        assert first is not None and first.wrapped_dek is None and first.erased_at is not None
        assert second is None
        declaration = session.scalars(
            select(legal_models.Declaration).where(legal_models.Declaration.survivor_id == survivor)
        ).one()
        # The ciphertext is still there; no key opens it any more.
        assert declaration.justification.startswith("ac1.1.")
        assert legal.justification(session, declaration) is None
        assert (
            session.scalar(
                select(AuditEntry.seq).where(AuditEntry.survivor_id == survivor).limit(1)
            )
            == chained_before
        )
        erasures = list(
            session.scalars(
                select(AuditEntry).where(
                    AuditEntry.survivor_id == survivor, AuditEntry.kind == "key_erasure"
                )
            )
        )
        assert [json.loads(e.record)["generations"] for e in erasures] == [[1]]
        assert json.loads(erasures[0].record)["by"] == "ops-1"
    report = await asyncio.to_thread(run_verify, settings)
    assert report.ok, (report.problems, report.checkpoint_problems)
    assert not [r for r in raw_rows(sessions, survivor) if evidence in r or justification in r]


# --- on a database of its own: rotation, the migration ----------------------------------------


@pytest.fixture(params=["postgresql", "sqlite"])
def empty_database(
    request: pytest.FixtureRequest, tmp_path: Path, settings: Settings
) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'rest.db'}"
        return
    name = f"rest_{uuid.uuid4().hex[:8]}"
    admin = postgres.url(settings, "postgres").replace("postgresql+psycopg", "postgresql")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield postgres.url(settings, name)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def consent_in(reference: str) -> ConsentIn:
    return ConsentIn.model_validate(
        {"provisions": [PROVISION], "evidence": {"kind": "form_reference", "reference": reference}}
    )


def populate(sessions: sessionmaker[Session], survivors: list[str]) -> None:
    with transaction(sessions) as session:
        if session.get(Agency, "harbor-outreach") is None:
            session.add(Agency(id="harbor-outreach", name="Harbor", jurisdiction="state-a"))
        for sv in survivors:
            row = service.register_survivor(
                session=session, survivor_id=sv, agency_id="harbor-outreach", now=NOW
            )
            session.flush()
            service.grant(
                session=session, survivor=row, data=consent_in(f"form of {sv}"), by=SELF, now=NOW
            )
            legal.declare(
                session=session,
                survivor_id=sv,
                agency_id="harbor-outreach",
                by="sup",
                data=DeclarationIn(justification=f"Credible threat to {sv}, reported today."),
                now=NOW,
            )


def read_all(sessions: sessionmaker[Session], survivors: list[str]) -> dict[str, tuple[str, str]]:
    """Every survivor's evidence reference and justification, read through the services."""
    out = {}
    with sessions() as session:
        for sv in survivors:
            (consent,) = service.current_consents(session=session, survivor_id=sv, now=None)
            declaration = session.scalars(
                select(legal_models.Declaration).where(legal_models.Declaration.survivor_id == sv)
            ).one()
            assert consent.evidence is not None
            out[sv] = (consent.evidence.reference, legal.justification(session, declaration) or "")
    return out


def ring_settings(settings: Settings, url: str, ids: list[str], active: str) -> Settings:
    """Settings as a process configured with these KEKs (ACCORD_KEKS) would have them."""
    keks = ",".join(f"{k}:{base64.b64encode(RAW[k]).decode()}" for k in ids)
    return settings.model_copy(update={"database_url": url, "keks": keks, "kek_active": active})


def test_kek_rotation_rewraps_every_data_key_while_everything_stays_readable(
    empty_database: str, settings: Settings
) -> None:
    migrations.upgrade(empty_database)
    engine = make_engine(empty_database)
    k1, k2 = kek("k1"), kek("k2")
    before = make_sessionmaker(engine, kek_ring=KekRing({"k1": k1}, "k1"))
    survivors = [f"sv-rot-{i}" for i in range(7)]
    populate(before, survivors)
    expected = read_all(before, survivors)
    assert expected["sv-rot-3"] == (
        "form of sv-rot-3",
        "Credible threat to sv-rot-3, reported today.",
    )
    with before() as session:
        sealed_before = {
            r.consent_id: r.evidence for r in session.scalars(select(models.ConsentVersion))
        }
        wrapped_before = {
            r.survivor_id: r.wrapped_dek for r in session.scalars(select(SurvivorKey))
        }

    # Step 1 (rolling): every process knows both KEKs, the old one still active.
    # Step 2 (rolling): the new one is active; processes not yet restarted still write with k1.
    both_old = make_sessionmaker(engine, kek_ring=KekRing({"k1": k1, "k2": k2}, "k1"))
    both_new = make_sessionmaker(engine, kek_ring=KekRing({"k1": k1, "k2": k2}, "k2"))
    with transaction(both_new) as session:
        assert store.rewrap(session, limit=3) == 3
    with before() as session:
        assert store.status(session) == {"k1": 4, "k2": 3}
    # Mid-rotation: processes of either configuration read everything and write.
    assert read_all(both_old, survivors) == read_all(both_new, survivors) == expected
    populate(both_old, ["sv-rot-late"])  # a process still on k1 adds a survivor mid-rotation
    survivors.append("sv-rot-late")
    expected = read_all(both_new, survivors)

    # Step 3: `accord keys rewrap`, in small batches, while a reader keeps reading.
    errors: list[BaseException] = []
    reads = 0
    done = threading.Event()

    def reader() -> None:
        nonlocal reads
        while not done.is_set():
            try:
                assert read_all(both_new, survivors) == expected
                reads += 1
            except BaseException as exc:
                errors.append(exc)
                return

    thread = threading.Thread(target=reader)
    thread.start()
    new_settings = ring_settings(settings, empty_database, ["k1", "k2"], "k2")
    said: list[str] = []
    try:
        total = rewrap_command(new_settings, said.append, batch=1, pause_s=0.02)
    finally:
        done.set()
        thread.join()
    assert not errors and reads > 0
    assert total == 5  # 4 left of the first 7, and the one k1 wrapped mid-rotation
    assert status_command(new_settings, said.append) == 0

    # Step 4: k1 is retired. Everything reads under k2 alone; k1 alone opens nothing.
    only_k2 = make_sessionmaker(engine, kek_ring=KekRing({"k2": k2}, "k2"))
    assert read_all(only_k2, survivors) == expected
    only_k1 = make_sessionmaker(engine, kek_ring=KekRing({"k1": k1}, "k1"))
    for sv in survivors:
        with pytest.raises(Unreadable):
            read_all(only_k1, [sv])
    with only_k2() as session:
        assert store.status(session) == {"k2": 8}
        # The data keys were re-wrapped, not replaced: no sealed row had to change.
        assert {
            r.consent_id: r.evidence
            for r in session.scalars(select(models.ConsentVersion))
            if r.survivor_id != "sv-rot-late"
        } == sealed_before
        for r in session.scalars(select(SurvivorKey)):
            assert r.survivor_id == "sv-rot-late" or r.wrapped_dek != wrapped_before[r.survivor_id]
    engine.dispose()


def insert_agency(conn: Connection) -> None:
    """The agency the plain rows of a migration test belong to, in raw SQL (no ORM: the
    schema is an older revision's)."""
    conn.execute(
        text("INSERT INTO agencies (id, name, jurisdiction) VALUES ('harbor-outreach', 'H', 's')")
    )


def insert_survivor(conn: Connection, survivor_id: str) -> None:
    conn.execute(
        text(
            "INSERT INTO survivors (id, agency_id, created_at, change_seq, published_seq)"
            " VALUES (:sv, 'harbor-outreach', :now, 1, 1)"
        ),
        {"sv": survivor_id, "now": NOW},
    )


def test_the_migration_seals_existing_plaintext_rows(empty_database: str) -> None:
    migrations.upgrade(empty_database, "0006")
    evidence = {"sv-old-1": canary(), "sv-old-2": canary()}
    justification = {sv: canary() for sv in evidence}
    engine = make_engine(empty_database)
    with engine.begin() as conn:
        insert_agency(conn)
        for sv in evidence:
            insert_survivor(conn, sv)
            conn.execute(
                text(
                    "INSERT INTO consent_versions (consent_id, version, survivor_id, status,"
                    " provisions, recorded_by, evidence, recorded_at) VALUES"
                    " (:cid, 1, :sv, 'active', :p, :by, :ev, :now)"
                ),
                {
                    "cid": f"c-{sv}",
                    "sv": sv,
                    "p": json.dumps([PROVISION]),
                    "by": json.dumps({"role": "self", "actor": sv}),
                    "ev": json.dumps({"kind": "signed_statement", "reference": evidence[sv]}),
                    "now": NOW,
                },
            )
            conn.execute(
                text(
                    "INSERT INTO declarations (id, survivor_id, agency_id, declared_by,"
                    " justification, tell_survivor, declared_at) VALUES"
                    " (:id, :sv, 'harbor-outreach', 'sup', :j, true, :now)"
                ),
                {"id": f"decl-{sv}", "sv": sv, "j": justification[sv], "now": NOW},
            )
    migrations.upgrade(empty_database)
    sessions = make_sessionmaker(engine)
    for sv in evidence:
        rows = raw_rows(sessions, sv)
        assert len(rows) == 2 and not [
            r for r in rows if evidence[sv] in r or justification[sv] in r
        ]
    with sessions() as session:
        assert {(k.survivor_id, k.generation) for k in session.scalars(select(SurvivorKey))} == {
            (sv, 1) for sv in evidence
        }
        for sv in evidence:
            (consent,) = service.current_consents(session=session, survivor_id=sv, now=None)
            assert consent.evidence is not None and consent.evidence.reference == evidence[sv]
            decl = session.get(legal_models.Declaration, f"decl-{sv}")
            assert decl is not None and legal.justification(session, decl) == justification[sv]
    # And back: the downgrade restores the plaintext.
    migrations.downgrade(empty_database, "0006")
    with engine.connect() as conn:
        ev = conn.execute(
            text("SELECT evidence FROM consent_versions WHERE survivor_id = 'sv-old-1'")
        )
        got = ev.scalar_one()
        assert (json.loads(got) if isinstance(got, str) else got)["reference"] == evidence[
            "sv-old-1"
        ]
    engine.dispose()


def test_migration_0008_seals_order_identity_and_relations_and_back(empty_database: str) -> None:
    """Plain rows written under 0007 are sealed; the values of a survivor erased before 0008
    are shredded (written before the erasure) or sealed with a new key (written after);
    the downgrade restores the plaintext."""
    migrations.upgrade(empty_database, "0007")
    kept, gone = "sv-id-kept", "sv-id-gone"
    secret = {sv: identity_secrets() for sv in (kept, gone)}
    later = {"reference": canary(), "court": canary()}  # gone's order after their erasure
    engine = make_engine(empty_database)
    with engine.begin() as conn:
        insert_agency(conn)
        order_sql = text(
            "INSERT INTO court_orders (id, survivor_id, agency_id, reference, court, recipient,"
            " fields, expires_at, recorded_by, recorded_at, justification) VALUES"
            " (:id, :sv, 'harbor-outreach', :ref, :court, 'metro-police', :f, :exp, 'sup', :at,"
            " :j)"
        )
        for sv in (kept, gone):
            insert_survivor(conn, sv)
            conn.execute(
                text(
                    "INSERT INTO guardians (id, guardian_id, survivor_id, relation, suspect)"
                    " VALUES (:id, :g, :sv, :rel, false)"
                ),
                {
                    "id": 1 if sv == kept else 2,
                    "g": f"g-{sv}",
                    "sv": sv,
                    "rel": secret[sv]["relation"],
                },
            )
            conn.execute(
                text(
                    "INSERT INTO consent_versions (consent_id, version, survivor_id, status,"
                    " provisions, recorded_by, evidence, recorded_at) VALUES"
                    " (:cid, 1, :sv, 'active', :p, :by, NULL, :now)"
                ),
                {
                    "cid": f"c-{sv}",
                    "sv": sv,
                    "p": json.dumps([PROVISION]),
                    "by": json.dumps(
                        {"role": "guardian", "actor": f"g-{sv}", "relation": secret[sv]["relation"]}
                    ),
                    "now": NOW,
                },
            )
            conn.execute(
                order_sql,
                {
                    "id": f"o-{sv}",
                    "sv": sv,
                    "ref": secret[sv]["reference"],
                    "court": secret[sv]["court"],
                    "f": json.dumps(["survivor_name"]),
                    "exp": NOW + timedelta(days=30),
                    "at": NOW,
                    "j": "ac1.1.x.y",  # never opened here
                },
            )
        # gone's key was erased an hour after all that; an order was recorded after it.
        conn.execute(
            text(
                "INSERT INTO survivor_keys (survivor_id, generation, kek_id, wrapped_dek,"
                " created_at, erased_at) VALUES (:sv, 1, NULL, NULL, :now, :erased)"
            ),
            {"sv": gone, "now": NOW, "erased": NOW + timedelta(hours=1)},
        )
        conn.execute(
            order_sql,
            {
                "id": "o-after",
                "sv": gone,
                "ref": later["reference"],
                "court": later["court"],
                "f": json.dumps(["survivor_name"]),
                "exp": NOW + timedelta(days=30),
                "at": NOW + timedelta(hours=2),
                "j": "ac1.2.x.y",
            },
        )
    everything = [*secret[kept].values(), *secret[gone].values(), *later.values()]

    migrations.upgrade(empty_database)
    sessions = make_sessionmaker(engine)
    for sv in (kept, gone):
        rows = raw_rows(sessions, sv)
        assert len(rows) == (3 if sv == kept else 4)
        assert not [r for r in rows if any(v in r for v in everything)]
    with sessions() as session:
        assert {(k.survivor_id, k.generation) for k in session.scalars(select(SurvivorKey))} == {
            (kept, 1),
            (gone, 1),
            (gone, 2),
        }
        for sv, readable in ((kept, True), (gone, False)):
            order = session.get(legal_models.CourtOrder, f"o-{sv}")
            link = session.scalars(
                select(models.Guardian).where(models.Guardian.survivor_id == sv)
            ).one()
            assert order is not None
            assert legal.order_identity(session, order) == (
                (secret[sv]["reference"], secret[sv]["court"]) if readable else (None, None)
            )
            assert service.relation_of(session, link) == (
                secret[sv]["relation"] if readable else None
            )
            (consent,) = service.current_consents(session=session, survivor_id=sv, now=None)
            assert consent.recorded_by.relation == (secret[sv]["relation"] if readable else None)
            # The snapshot changes (no identity, no relation): republished at the API's start.
            survivor = session.get(models.Survivor, sv)
            assert survivor is not None and survivor.change_seq > survivor.published_seq
        after = session.get(legal_models.CourtOrder, "o-after")
        assert after is not None and after.reference.startswith("ac1.2.")
        assert legal.order_identity(session, after) == (later["reference"], later["court"])

    # And back: the plaintext returns; what was shredded reads as erased.
    migrations.downgrade(empty_database, "0007")
    with engine.connect() as conn:
        orders = {
            row_id: (reference, court)
            for row_id, reference, court in conn.execute(
                text("SELECT id, reference, court FROM court_orders")
            )
        }
        relations = {
            sv: relation
            for sv, relation in conn.execute(text("SELECT survivor_id, relation FROM guardians"))
        }
        recorded = {
            sv: (json.loads(by) if isinstance(by, str) else by).get("relation")
            for sv, by in conn.execute(
                text("SELECT survivor_id, recorded_by FROM consent_versions")
            )
        }
    assert orders == {
        f"o-{kept}": (secret[kept]["reference"], secret[kept]["court"]),
        f"o-{gone}": ("(erased)", "(erased)"),
        "o-after": (later["reference"], later["court"]),
    }
    assert relations == {kept: secret[kept]["relation"], gone: "(erased)"}
    assert recorded == {kept: secret[kept]["relation"], gone: None}
    migrations.upgrade(empty_database)  # and forward again
    with sessions() as session:
        order = session.get(legal_models.CourtOrder, f"o-{kept}")
        assert order is not None and order.reference.startswith("ac1.1.")
        assert legal.order_identity(session, order)[0] == secret[kept]["reference"]
    engine.dispose()
