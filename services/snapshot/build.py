"""What the relay sees of one survivor: consents, declarations (R8) and court orders (R9) in
one snapshot, built above the consent and legal services (neither imports the other for it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.broker.pipeline.model import SurvivorFacts
from services.consent.models import Guardian, Survivor
from services.consent.service import current_consents
from services.legal.service import policy_view


@dataclass(frozen=True)
class Snapshot:
    """Everything about one survivor the policy needs besides the event itself."""

    survivor_id: str
    seq: int
    consents: list[dict[str, Any]]
    declarations: list[dict[str, Any]] = field(default_factory=list)
    court_orders: list[dict[str, Any]] = field(default_factory=list)

    @property
    def facts(self) -> SurvivorFacts:
        """What the relay reads of this snapshot once published (the preview asks with it)."""
        return SurvivorFacts(
            tuple(self.consents), tuple(self.declarations), tuple(self.court_orders)
        )


def snapshot(*, session: Session, survivor: Survivor) -> Snapshot:
    """The survivor's current consents as the policy reads them (see policies/README.md).

    A guardian's ``suspect`` flag is taken from the guardian record now, not from when the
    consent was recorded: flagging a guardian voids the consents they recorded (R5).
    """
    suspects = set(
        session.scalars(
            select(Guardian.guardian_id).where(
                Guardian.survivor_id == survivor.id,
                Guardian.suspect.is_(True),
            )
        )
    )
    out = []
    for c in current_consents(session=session, survivor_id=survivor.id, now=None, evidence=False):
        doc = c.model_dump(mode="json", exclude={"evidence", "evidence_erased", "survivor_id"})
        del doc["recorded_by"]["relation"]  # sealed at rest; the policy does not read it
        doc["recorded_by"]["suspect"] = (
            c.recorded_by.role == "guardian" and c.recorded_by.actor in suspects
        )
        out.append(doc)
    legal = policy_view(session=session, survivor_id=survivor.id)
    return Snapshot(
        survivor.id, survivor.change_seq, out, legal["declarations"], legal["court_orders"]
    )
