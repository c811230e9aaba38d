"""``consent.revoked`` notices: after a revocation, every partner that earlier received data
under that consent is asked to stop further use (R3). The notice carries no personal data:
the survivor's pseudonym, the consent id and version, and the instruction."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

from services.consent.schemas import Consent

NOTICE_TYPE = "accord.consent.revoked"


def notice(consent: Consent, partner_id: str, at: datetime) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": f"revoked-{consent.id}-v{consent.version}-{partner_id}",
        "source": "/accord/consent",
        "type": NOTICE_TYPE,
        "subject": consent.survivor_id,
        "time": at.isoformat().replace("+00:00", "Z"),
        "datacontenttype": "application/json",
        "data": {
            "consent_id": consent.id,
            "consent_version": consent.version,
            "instruction": "stop_further_use",
        },
    }


async def send_revocation_notices(state: Any, consent: Consent) -> list[str]:
    """Send the notices; returns the partner ids notified. ``state`` is the app's state."""
    # Every release so far is in the audit chain: `accord sink` has stored the decisions topic
    # up to its end as it stands now (TimeoutError if it does not within 10 s).
    await state.audit_sink.catch_up()
    return await send_notices(state.producer, state.settings, state.disclosures, consent)


async def send_notices(
    producer: Any, settings: Any, disclosures: Any, consent: Consent
) -> list[str]:
    """A ``consent.revoked`` notice to each partner that received data under ``consent``
    (read from the audit chain), each recorded once as a disclosure (R14). The audit chain is
    read and written in a thread: never a database call on the loop."""
    now = datetime.now(UTC)
    sent = []
    recipients = await asyncio.to_thread(disclosures.recipients_under, consent.id)
    for partner_id, partner_type in recipients:
        doc = notice(consent, partner_id, now)
        await producer.send_and_wait(
            settings.partner_topic(partner_id),
            json.dumps(doc).encode(),
            key=consent.survivor_id.encode(),
        )
        await asyncio.to_thread(
            disclosures.record_notice,
            survivor_id=consent.survivor_id,
            consent_id=consent.id,
            version=consent.version,
            partner=(partner_id, partner_type),
            notice_id=doc["id"],
            at=now,
        )
        sent.append(partner_id)
    return sent
