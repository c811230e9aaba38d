"""A realistic load for the benchmark and the fault suite: 10 partners of mixed types, survivors
of whom half have consented and a quarter are minors, and signed ``accord.referral.made`` events
of a chosen size (each carrying the survivor's ``age``).

Keys are made fresh for each run and never written anywhere: the agency signs its events, the
relay seals to each partner, and each partner opens what it received.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import math
import random
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaProducer
from nacl.public import PrivateKey
from nacl.signing import SigningKey

from services import migrations
from services.broker.pipeline import seal
from services.broker.survivor_keys import EventSealer
from services.db import make_engine, make_sessionmaker, transaction
from services.events import provenance
from services.kafka import topics
from services.kafka.client import ADMIN, kafka
from services.kafka.provisioning import provision
from services.registry.schemas import RegistryIn
from services.registry.service import load_registry
from services.settings import Settings
from services.vocabulary import Category

JSON = dict[str, Any]
AGENCY = "bench-agency"
EVENT_TYPE = "accord.referral.made"
MOU = {"valid_from": "2026-01-01T00:00:00Z", "valid_until": "2030-01-01T00:00:00Z"}
ALL_CATEGORIES = [c.value for c in Category if c is not Category.SHELTER_LOCATION]
# partner id, type, purpose of its subscription
PARTNERS: tuple[tuple[str, str, str], ...] = (
    ("bench-vs", "victim_services", "care_coordination"),
    ("bench-shelter", "shelter", "service_referral"),
    ("bench-clinic", "health", "care_coordination"),
    ("bench-bh", "behavioral_health", "care_coordination"),
    ("bench-police", "law_enforcement", "investigation"),
    ("bench-cps", "child_welfare", "mandated_report"),
    ("bench-ems", "emergency_services", "emergency_response"),
    ("bench-housing", "housing", "service_referral"),
    ("bench-legal", "legal_aid", "court_proceeding"),
    ("bench-benefits", "benefits", "benefits_eligibility"),
)


def partner_rows(n: int) -> list[tuple[str, str, str]]:
    """``n`` partners: those of ``PARTNERS``, then more of the same types (``bench-vs-2``…)."""
    rows = []
    for i in range(n):
        pid, ptype, purpose = PARTNERS[i % len(PARTNERS)]
        rows.append(
            (pid if i < len(PARTNERS) else f"{pid}-{i // len(PARTNERS) + 1}", ptype, purpose)
        )
    return rows


SERVICES = ["victim_services", "shelter", "health", "behavioral_health", "housing", "legal_aid"]


def _provision(kind: str, types: list[str], categories: list[str]) -> JSON:
    return {
        "type": kind,
        "recipients": {"partners": [], "partner_types": types},
        "purposes": ["*"],
        "categories": categories,
        "period": {"start": "2026-01-01T00:00:00Z", "end": None},
    }


def consents_of(i: int, *, ends: datetime | None = None, version: int = 1) -> list[JSON]:
    """Half the survivors (even ``i``) have consented, with different provisions; with
    ``ends``, the health permits of a quarter of those end then (a time the run crosses)."""
    if i % 2:
        return []
    kind = (i // 2) % 4
    if kind == 0:
        provisions = [_provision("permit", SERVICES, ["*"])]
    elif kind == 1:
        provisions = [
            _provision("permit", ["health", "behavioral_health"], ["*", "health", "mental_health"])
        ]
        if ends is not None:
            provisions[0]["period"]["end"] = ends.isoformat().replace("+00:00", "Z")
    elif kind == 2:
        provisions = [
            _provision("permit", ["*"], ["*", "immigration"]),
            _provision("deny", ["*"], ["immigration", "contact"]),
        ]
    else:
        provisions = [_provision("permit", ["law_enforcement", "legal_aid"], ["*", "court"])]
    return [
        {
            "id": f"c-bench-{i}",
            "version": version,
            "status": "active",
            "recorded_by": {"role": "self"},
            "provisions": provisions,
        }
    ]


def age_of(i: int) -> int:
    """A quarter of the survivors are minors."""
    return 14 + i % 4 if i % 8 in (0, 3) else 19 + i % 30


@dataclass
class Scenario:
    """One run's keys, survivors and registry; ``tag`` names its topics and group."""

    survivors: int = 200
    payload_bytes: int = 1000
    agency_key: SigningKey = field(default_factory=SigningKey.generate)
    relay_key: PrivateKey = field(default_factory=PrivateKey.generate)
    partner_keys: dict[str, PrivateKey] = field(default_factory=dict)  # made for each partner
    seed: int = 11
    partners: int = len(PARTNERS)  # subscribed to the events (``partner_rows``)
    # Who the events are about: "round" (event n about survivor n % survivors), "realistic"
    # (each survivor a few to dozens of events, interleaved), "distinct" (each event another
    # survivor: nothing to reuse but the survivors without consent).
    mix: str = "round"
    events: int = 3000  # how many events "realistic" and "distinct" assign
    ends: datetime | None = None  # when some consents end (``consents_of``)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)  # noqa: S311 - a load mix, not a secret
        for pid in self.partner_ids:
            self.partner_keys.setdefault(pid, PrivateKey.generate())
        self._order = realistic_order(self.events, self.seed)

    def survivor_of(self, n: int) -> int:
        if self.mix == "distinct":
            return n
        if self.mix == "realistic":
            return self._order[n % len(self._order)]
        return n % self.survivors

    @property
    def survivor_count(self) -> int:
        if self.mix == "distinct":
            return self.events
        if self.mix == "realistic":
            return max(self._order) + 1
        return self.survivors

    def events_per_survivor(self) -> tuple[int, float, int]:
        """Fewest, mean and most events per survivor of the mix."""
        counts = Counter(self.survivor_of(n) for n in range(self.events))
        return min(counts.values()), self.events / len(counts), max(counts.values())

    @property
    def partner_ids(self) -> list[str]:
        return [p for p, _, _ in partner_rows(self.partners)]

    @property
    def consents(self) -> dict[str, list[JSON]]:
        return {f"sv-bench-{i}": consents_of(i, ends=self.ends) for i in range(self.survivor_count)}

    def relay_settings(self, s: Settings) -> Settings:
        return s.model_copy(
            update={"relay_private_key": base64.b64encode(bytes(self.relay_key)).decode()}
        )

    def registry(self) -> RegistryIn:
        partners = [
            {
                "id": pid,
                "name": pid,
                "type": ptype,
                "jurisdiction": "state-a",
                "vetted": True,
                "training_attested_until": "2030-01-01T00:00:00Z",
                "public_key": seal.public_key_of(self.partner_keys[pid]),
                "agreements": [
                    {
                        "id": f"mou-{pid}",
                        "purposes": [purpose],
                        "categories": ALL_CATEGORIES,
                        **MOU,
                    }
                ],
                "subscriptions": [
                    {"id": f"sub-{pid}", "purpose": purpose, "event_types": [EVENT_TYPE]}
                ],
            }
            for pid, ptype, purpose in partner_rows(self.partners)
        ]
        agency = {
            "id": AGENCY,
            "name": "Bench Agency",
            "jurisdiction": "state-a",
            "public_key": provenance.public_key_of(self.agency_key),
        }
        return RegistryIn.model_validate({"agencies": [agency], "partners": partners})

    def event(self, n: int, *, at: datetime | None = None) -> bytes:
        """The ``n``-th event: a signed referral about survivor ``n % survivors``."""
        rng = self._rng
        i = self.survivor_of(n)
        data: JSON = {
            "survivor_name": f"Survivor {i}",
            "age": age_of(i),
            "gender": rng.choice(["female", "male", "nonbinary"]),
            "primary_language": rng.choice(["en", "es", "vi", "tl"]),
            "phone": f"+1-555-{rng.randrange(10**4):04d}",
            "referral_id": f"ref-{n}",
            "referral_reason": rng.choice(["housing", "medical", "legal", "counselling"]),
            "referred_to": rng.choice(PARTNERS)[0],
            "urgency": rng.choice(["routine", "urgent"]),
            "service_needs": rng.sample(["housing", "medical", "legal", "counselling"], 2),
        }
        if n % 3 == 0:
            data["immigration_status"] = "pending"
        if n % 5 == 0:
            data["medical_needs"] = ["follow-up"]
        if n % 7 == 0:
            data["caseworker_notes_internal"] = "internal"
        doc: JSON = {
            "specversion": "1.0",
            "id": f"evt-{uuid.uuid4().hex[:16]}",
            "source": f"/agencies/{AGENCY}",
            "type": EVENT_TYPE,
            "subject": f"sv-bench-{i}",
            "time": (at or datetime.now(UTC)).isoformat(),
            "data": data,
        }
        pad = self.payload_bytes - len(json.dumps(doc)) - 140  # the signature's share
        if pad > 0:
            data["narrative"] = "x" * min(pad, 9000)
        return json.dumps(provenance.sign_event(doc, self.agency_key)).encode()

    def opener(self, partner_id: str) -> Callable[[bytes], JSON]:
        relay = seal.public_key_of(self.relay_key)
        key = self.partner_keys[partner_id]

        def open_record(value: bytes) -> JSON:
            return seal.open_delivery(
                value, partner_id=partner_id, partner_key=key, relay_key=relay
            ).event

        return open_record


def realistic_order(events: int, seed: int) -> list[int]:
    """Survivor of each of ``events`` events: each survivor gets a few to dozens of events
    (log-normal, median 8, 1 to 60), their events interleaved with everyone else's."""
    rng = random.Random(seed * 31)  # noqa: S311 - a load mix, not a secret
    order: list[int] = []
    i = 0
    while len(order) < events:
        order += [i] * max(1, min(60, round(rng.lognormvariate(math.log(8), 0.9))))
        i += 1
    rng.shuffle(order)
    return order[:events]


async def change_consents(
    s: Settings, scenario: Scenario, stop: asyncio.Event, *, every_s: float = 0.25
) -> Counter[str]:
    """Until ``stop``: every ``every_s`` a survivor with consent amends it (a new version,
    one category more denied) or revokes it, as the consent API would publish it."""
    rng = random.Random(scenario.seed * 17)  # noqa: S311 - a load mix, not a secret
    producer = AIOKafkaProducer(**kafka(s, ADMIN).kwargs(), acks="all")
    await producer.start()
    sealer = EventSealer.for_settings(s)
    seq: Counter[int] = Counter()
    done: Counter[str] = Counter()
    try:
        while not stop.is_set():
            i = 2 * rng.randrange(max(1, scenario.survivor_count // 2))
            seq[i] += 1
            consents = consents_of(i, ends=scenario.ends, version=1 + seq[i])
            kind = "revoked" if rng.random() < 0.3 else "amended"
            if kind == "revoked":
                consents[0]["status"] = "revoked"
            else:
                consents[0]["provisions"].append(_provision("deny", ["*"], ["contact"]))
            survivor = f"sv-bench-{i}"
            record = {"survivor_id": survivor, "seq": 1 + seq[i], "consents": consents}
            value = sealer.snapshot(json.dumps(record).encode(), survivor_id=survivor)
            await producer.send_and_wait(s.topic_consents, value, key=survivor.encode())
            done[kind] += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=every_s)
    finally:
        sealer.close()
        await producer.stop()
    return done


def prepare_database(url: str, scenario: Scenario) -> None:
    """Migrate the database and register the scenario's agency and partners."""
    migrations.upgrade(url)
    engine = make_engine(url)
    try:
        with transaction(make_sessionmaker(engine)) as session:
            load_registry(session=session, registry=scenario.registry())
    finally:
        engine.dispose()


async def prepare_topics(s: Settings, scenario: Scenario) -> None:
    """Grant the run's relay its topics, create them and publish every survivor's consents
    (as the operator: the benchmark writes the snapshots the consent API would)."""
    await provision(s, partners=scenario.partner_ids)
    await topics.ensure_topics(kafka(s, ADMIN), topics.core_topics(s))
    await topics.ensure_topics(kafka(s, ADMIN), topics.partner_topics(s, scenario.partner_ids))
    producer = AIOKafkaProducer(**kafka(s, ADMIN).kwargs(), acks="all")
    await producer.start()
    sealer = EventSealer.for_settings(s)
    try:
        for survivor, consents in scenario.consents.items():  # seq 1 each
            record = {"survivor_id": survivor, "seq": 1, "consents": consents}
            value = sealer.snapshot(json.dumps(record).encode(), survivor_id=survivor)
            await producer.send(s.topic_consents, value, key=survivor.encode())
        await producer.flush()
    finally:
        sealer.close()
        await producer.stop()


def run_tag(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"
