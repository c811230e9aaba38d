"""Audit entries for what the services change: declarations (R8), court orders (R9), consent
changes, compliance reviews and erasures of survivors' data keys.

Each function appends to the chain in the caller's database transaction, so the change and its
entry commit together or not at all (no window in which a change exists unaudited, and no
second path through Kafka to keep exactly-once). Records carry ids, names and times only: never
a justification, a court's name or reference, or any event field's value.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, Protocol

from sqlalchemy.orm import Session

from services.audit import store

# What each function reads of the row it is given (the consent and legal tables match these):
# the audit package imports no domain above it.


class Declaration(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def survivor_id(self) -> str: ...
    @property
    def agency_id(self) -> str: ...
    @property
    def declared_by(self) -> str: ...
    @property
    def ended_by(self) -> str | None: ...
    @property
    def tell_survivor(self) -> bool: ...


class CourtOrder(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def survivor_id(self) -> str: ...
    @property
    def agency_id(self) -> str: ...
    @property
    def recipient(self) -> str: ...
    @property
    def fields(self) -> list[str]: ...
    @property
    def expires_at(self) -> datetime: ...
    @property
    def recorded_by(self) -> str: ...
    @property
    def recorded_at(self) -> datetime: ...


class ConsentVersion(Protocol):
    @property
    def consent_id(self) -> str: ...
    @property
    def version(self) -> int: ...
    @property
    def survivor_id(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def provisions(self) -> list[dict[str, Any]]: ...
    @property
    def recorded_by(self) -> dict[str, Any]: ...
    @property
    def recorded_at(self) -> datetime: ...


def declaration(
    session: Session, row: Declaration, op: Literal["declared", "ended"], at: datetime
) -> None:
    store.append(
        session,
        "declaration",
        f"declaration:{row.id}:{op}",
        {
            "declaration_id": row.id,
            "op": op,
            "basis": ["imminent_danger"],
            "survivor_id": row.survivor_id,
            "agency_id": row.agency_id,
            "by": row.ended_by if op == "ended" else row.declared_by,
            "tell_survivor": row.tell_survivor,
            "at": store.ts(at),
        },
    )


def court_order(session: Session, row: CourtOrder) -> None:
    store.append(
        session,
        "court_order",
        f"court_order:{row.id}",
        {
            "order_id": row.id,
            "basis": ["court_order"],
            "survivor_id": row.survivor_id,
            "agency_id": row.agency_id,
            "partner_id": row.recipient,
            "fields": sorted(row.fields),
            "expires_at": store.ts(row.expires_at),
            "by": row.recorded_by,
            "at": store.ts(row.recorded_at),
        },
    )


def _names(provisions: list[dict[str, Any]], *path: str) -> list[str]:
    found: set[str] = set()
    for p in provisions:
        value: Any = p
        for part in path:
            value = value.get(part, {}) if isinstance(value, dict) else {}
        if isinstance(value, list):
            found.update(str(v) for v in value)
    return sorted(found)


def consent_change(session: Session, row: ConsentVersion) -> None:
    """A consent version: grant (version 1), amend, or revoke; which recipients, purposes and
    categories its provisions name (names only)."""
    op = "revoke" if row.status == "revoked" else "grant" if row.version == 1 else "amend"
    provisions = list(row.provisions or [])
    store.append(
        session,
        "consent_change",
        f"consent:{row.consent_id}:{row.version}",
        {
            "consent_id": row.consent_id,
            "version": row.version,
            "op": op,
            "status": row.status,
            "survivor_id": row.survivor_id,
            "recorded_by": (row.recorded_by or {}).get("role"),
            "provision_types": sorted({str(p.get("type")) for p in provisions}),
            "partner_types": _names(provisions, "recipients", "partner_types"),
            "partners": _names(provisions, "recipients", "partners"),
            "purposes": _names(provisions, "purposes"),
            "categories": _names(provisions, "categories"),
            "at": store.ts(row.recorded_at),
        },
    )


def review(
    session: Session, decision: dict[str, Any], decision_key: str, by: str, at: datetime
) -> bool:
    """Compliance marks a legal-basis release reviewed; False if it already was."""
    entry = store.append(
        session,
        "review",
        f"review:{decision_key}",
        {
            "reviewed": decision_key,
            "event_id": decision.get("event_id"),
            "partner_id": decision.get("partner_id"),
            "survivor_id": decision.get("survivor_id"),
            "basis": list(decision.get("basis") or []),
            "by": by,
            "at": store.ts(at),
        },
    )
    return entry is not None


def key_erasure(
    session: Session, survivor_id: str, generations: list[int], by: str, at: datetime
) -> None:
    """A survivor's data keys were destroyed (crypto-shredding, docs/at-rest.md): who, when,
    which generations. Nothing it erased was ever in the chain, so the chain still verifies."""
    store.append(
        session,
        "key_erasure",
        f"key_erasure:{survivor_id}:{max(generations)}",
        {
            "survivor_id": survivor_id,
            "generations": sorted(generations),
            "by": by,
            "at": store.ts(at),
        },
    )
