"""``accord credentials``: API keys from the command line, for an operator with database access.

This is how the first admin key comes to exist (nothing else can make one without a key).
A secret is shown once: printed, or written to a new file of mode 0600 (then not printed).
Only its SHA-256 is stored, so a lost key cannot be shown again: rotate or revoke it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.auth import service
from services.auth.models import Credential
from services.auth.principals import Role
from services.credentials import issuing
from services.db import make_engine, make_sessionmaker, transaction
from services.settings import Settings

Echo = Callable[[str], None]


class CredentialError(ValueError):
    """The request cannot be done; the message says why, never echoing a secret."""


@contextmanager
def _session(s: Settings) -> Iterator[Session]:
    engine = make_engine(s.sqlalchemy_url)
    try:
        with transaction(make_sessionmaker(engine)) as session:
            yield session
    finally:
        engine.dispose()


def write_secret(path: Path, secret: str) -> None:
    """A new file, mode 0600 from its creation; never overwrites (a key may be in use)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise CredentialError(f"{path} exists; choose a new file") from None
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")


def _show(key: str, out: Path | None, echo: Echo) -> None:
    if out is None:
        echo(key)
    else:
        write_secret(out, key)
        echo(f"credential {key.split('_')[1]} written to {out} (mode 0600)")


def issue(
    s: Settings,
    echo: Echo,
    *,
    role: Role,
    subject: str,
    agency_id: str | None = None,
    out: Path | None = None,
) -> None:
    if out is not None and out.exists():
        raise CredentialError(f"{out} exists; choose a new file")
    with _session(s) as session:
        problems = issuing.check(session, role, subject, agency_id)
        if problems:
            raise CredentialError("; ".join(f"{p.field}: {p.message}" for p in problems))
        key = service.issue_credential(
            session=session, role=role, subject=subject, agency_id=agency_id
        )
        # Written before the commit: if the file cannot be made, no key exists unseen.
        _show(key, out, echo)


def list_credentials(
    s: Settings, echo: Echo, *, subject: str | None = None, role: Role | None = None
) -> None:
    query = select(Credential).order_by(Credential.created_at)
    if subject is not None:
        query = query.where(Credential.subject == subject)
    if role is not None:
        query = query.where(Credential.role == role.value)
    with _session(s) as session:
        rows = list(session.scalars(query))
        echo(f"{'id':<16}  {'role':<10}  {'agency':<20}  {'created':<25}  {'revoked':<25}  subject")
        for c in rows:
            created = c.created_at.isoformat(timespec="seconds")
            revoked = c.revoked_at.isoformat(timespec="seconds") if c.revoked_at else "-"
            echo(
                f"{c.id:<16}  {c.role:<10}  {c.agency_id or '-':<20}  {created:<25}  "
                f"{revoked:<25}  {c.subject}"
            )


def revoke(s: Settings, echo: Echo, credential_id: str) -> None:
    with _session(s) as session:
        if session.get(Credential, credential_id) is None:
            raise CredentialError("no such credential")
        if service.revoke_credential(session=session, credential_id=credential_id):
            echo(f"credential {credential_id} revoked")
        else:
            echo(f"credential {credential_id} was already revoked")


def rotate(s: Settings, echo: Echo, credential_id: str, *, out: Path | None = None) -> None:
    if out is not None and out.exists():
        raise CredentialError(f"{out} exists; choose a new file")
    with _session(s) as session:
        try:
            key = service.rotate_credential_id(session=session, credential_id=credential_id)
        except LookupError:
            raise CredentialError("no such credential, or it is revoked") from None
        _show(key, out, echo)
