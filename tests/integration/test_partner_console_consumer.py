"""docs/partners.md's command for Kafka's own console consumer works, exactly as written.

The shell block after the "tested as written" marker runs unchanged, with the variables the
page tells a partner to set, against the real broker (SASL/SCRAM-SHA-512 over TLS, ACLs) as a
partner principal of its own, and prints a sealed delivery of this test's event that opens
with the partner's key. The partner subscribes to an event type no other test uses, so its
topic holds only this delivery and no other test sees one more decision.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from services.broker.pipeline import seal
from services.db import transaction
from services.devstack.kafka import lib_dir
from services.kafka import client as kafka_client
from services.kafka import topics
from services.kafka.client import ADMIN, kafka
from services.kafka.provisioning import provision
from services.registry.schemas import PartnerIn
from services.registry.service import upsert_partner
from services.settings import Settings
from tests.support.events import cloudevent, consent_change, inbound_record
from tests.support.keys import PARTNER_KEYS, RELAY_KEY
from tests.support.registry import partner, permit

pytestmark = pytest.mark.integration

DOC = Path(__file__).resolve().parents[2] / "docs" / "partners.md"
MARKER = "<!-- tested as written: tests/integration/test_partner_console_consumer.py -->"
PARTNER = "console-shelter"
EVENT_TYPE = "accord.shelter_bed.requested"


def documented_command() -> str:
    text = DOC.read_text()
    assert MARKER in text, "the tested block's marker is gone from docs/partners.md"
    block = re.match(r"\s*```sh\n(.*?)\n```", text.split(MARKER, 1)[1], re.DOTALL)
    assert block, "no ```sh block right after the marker"
    return block.group(1)


async def test_the_documented_console_consumer_reads_a_sealed_delivery(
    settings: Settings, producer: AIOKafkaProducer, relay: None, sessions: Any, tmp_path: Path
) -> None:
    # A partner of this test's own: registered, with its principal, ACLs and topic.
    doc = partner(PARTNER, "shelter", "service_referral", ["identity", "service_need"])
    doc["subscriptions"][0]["event_types"] = [EVENT_TYPE]
    doc["public_key"] = seal.public_key_of(PARTNER_KEYS[PARTNER])
    with transaction(sessions) as session:
        upsert_partner(session=session, partner=PartnerIn.model_validate(doc))
    await provision(settings, partners=[PARTNER])
    topic = settings.partner_topic(PARTNER)
    await topics.ensure_topics(kafka(settings, ADMIN), topics.partner_topics(settings, [PARTNER]))

    survivor = f"sv-console-{uuid.uuid4().hex[:8]}"
    await producer.send_and_wait(
        settings.topic_consents,
        consent_change(
            settings, survivor, permit(["shelter"], ["service_referral"], ["identity", "contact"])
        ),
        key=survivor.encode(),
    )
    await asyncio.sleep(1)  # the relay applies the consent before the event (one key, in order)
    data = {"survivor_name": "Wren Halvorsen", "phone": "+1-555-0199", "bed_type": "family"}
    event = cloudevent("harbor-outreach", survivor, data, type=EVENT_TYPE)
    await producer.send_and_wait(
        settings.topic_inbound, inbound_record(settings, event), key=survivor.encode()
    )

    conn = kafka(settings, kafka_client.partner(PARTNER))
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", str(tmp_path)),
        "PARTNER": PARTNER,
        "TOPIC": topic,
        "BOOTSTRAP": conn.bootstrap,
        "CA_FILE": conn.cafile,
        "KAFKA_LIB": lib_dir(settings),
        "KAFKA_PASSWORD": conn.password,
    }
    proc = await asyncio.create_subprocess_exec(
        "bash",
        "-euo",
        "pipefail",
        "-c",
        documented_command(),
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode == 0, err.decode()[-2000:]
    # The settings file it wrote holds the password: only its owner may read it.
    assert (tmp_path / "client.properties").stat().st_mode & 0o077 == 0

    lines = [line for line in out.decode().splitlines() if line.strip()]
    assert len(lines) == 1, (lines, err.decode()[-1000:])
    record = json.loads(lines[0])
    assert set(record) >= {"delivery_id", "partner_id", "box"}  # sealed, as on the topic
    assert "Wren" not in lines[0]
    opened = seal.open_delivery(
        lines[0].encode(),
        partner_id=PARTNER,
        partner_key=PARTNER_KEYS[PARTNER],
        relay_key=seal.public_key_of(RELAY_KEY),
    ).event
    assert opened["id"] == event["id"]
    # What consent and agreement release, and nothing else.
    assert opened["data"] == {"survivor_name": "Wren Halvorsen"}
