"""``accord tail``: show a partner's deliveries in a terminal, one JSON line each.

It prints the partner's own decrypted data to the partner's own terminal and nowhere else:
nothing is logged. By default it only looks (nothing is acknowledged); ``--ack``
acknowledges each line once printed.
"""

from __future__ import annotations

import json
from typing import TextIO

from nacl.public import PrivateKey

from services.sdk.client import PartnerClient
from services.sdk.delivery import Delivery
from services.sdk.source import Source


def line(d: Delivery) -> str:
    return json.dumps(
        {
            "delivery_id": d.delivery_id,
            "event_id": d.id,
            "type": d.type,
            "subject": d.event.get("subject"),
            "time": d.event.get("time"),
            "purpose": d.event.get("accordpurpose"),
            "fields": d.data,
            "sealed": d.sealed,
        },
        ensure_ascii=False,
        sort_keys=False,
    )


async def run_tail(
    *,
    partner_id: str,
    key: PrivateKey,
    relay_key: str,
    source: Source,
    out: TextIO,
    acknowledge: bool = False,
    max_deliveries: int | None = None,
) -> int:
    """Print deliveries until interrupted (or ``max_deliveries``); returns how many."""

    def show(d: Delivery) -> None:
        out.write(line(d) + "\n")
        out.flush()

    async with PartnerClient(
        partner_id, key, relay_key=relay_key, source=source, acknowledge=acknowledge
    ) as client:
        return await client.run(show, wait_s=10, max_deliveries=max_deliveries)
