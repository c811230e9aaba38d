"""Who may get a key, shared by ``accord credentials issue`` and ``POST /v1/admin/credentials``.

A key names a subject the rest of Accord looks up: an agency's key acts as that registered
agency, a partner's reads that registered partner's feed, an advocate's or supervisor's acts
for the survivors of one registered agency. A key for a subject that does not exist would
authenticate and then fail in every handler, so it is refused here. Survivors and guardians
get their keys by enrollment code (``POST /v1/enroll``), never from an operator.

Problems say which part of the request is wrong, never what it contained.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy.orm import Session

from services.auth.principals import Role
from services.registry.models import Agency, Partner

# Staff subjects are pseudonymous staff ids; agencies and partners use their registry id.
SUBJECT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$")
BY_ENROLLMENT = frozenset({Role.SURVIVOR, Role.GUARDIAN})
NEEDS_AGENCY = frozenset({Role.ADVOCATE, Role.SUPERVISOR})
# What an admin may issue over the API; the first admin key (and further ones) come from the
# CLI, which needs database access.
ISSUED_BY_ADMIN = frozenset(
    {Role.AGENCY, Role.PARTNER, Role.ADVOCATE, Role.SUPERVISOR, Role.COMPLIANCE}
)


@dataclass(frozen=True)
class Problem:
    field: str  # "role", "subject" or "agency_id"
    message: str


def check(session: Session, role: Role, subject: str, agency_id: str | None) -> list[Problem]:
    """Every reason this key cannot be issued (empty: it can)."""
    problems: list[Problem] = []
    if role in BY_ENROLLMENT:
        return [Problem("role", "survivors and guardians get their key with an enrollment code")]
    if not SUBJECT.match(subject):
        problems.append(
            Problem("subject", "a letter or digit, then up to 127 of those or '.', '_', '@', '-'")
        )
    if role is Role.AGENCY:
        if session.get(Agency, subject) is None:
            problems.append(Problem("subject", "no registered agency has this id"))
        if agency_id not in (None, subject):
            problems.append(Problem("agency_id", "an agency's key acts for that agency only"))
    elif role is Role.PARTNER:
        if session.get(Partner, subject) is None:
            problems.append(Problem("subject", "no registered partner has this id"))
        if agency_id is not None:
            problems.append(Problem("agency_id", "a partner's key acts for no agency"))
    elif role in NEEDS_AGENCY:
        if agency_id is None:
            problems.append(Problem("agency_id", "an advocate or supervisor acts for an agency"))
        elif session.get(Agency, agency_id) is None:
            problems.append(Problem("agency_id", "no registered agency has this id"))
    elif agency_id is not None:
        problems.append(Problem("agency_id", "compliance and admin keys act for no agency"))
    return problems
