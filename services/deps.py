"""What every view takes as a dependency, never from ``request.app.state`` or the wall clock
itself: the database and the time.

``SessionDep`` is one session for the request (authentication reads with it too); a view that
opens its own transaction, works in the threadpool or streams after answering takes the
factory, ``Sessions``. ``Now`` is the request's time; tests override ``now`` with
``app.dependency_overrides``.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session, sessionmaker


def get_sessions(request: Request) -> sessionmaker[Session]:
    factory: sessionmaker[Session] = request.app.state.sessions
    return factory


Sessions = Annotated[sessionmaker[Session], Depends(get_sessions)]


def get_session(sessions: Sessions) -> Iterator[Session]:
    with sessions() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def now() -> datetime:
    return datetime.now(UTC)


Now = Annotated[datetime, Depends(now)]
