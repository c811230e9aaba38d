"""FastAPI dependencies: every route is authenticated; a route names the roles it admits.

Missing or bad credentials answer 401; a valid credential of the wrong role answers 403.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, HTTPException, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from services.auth.principals import Principal, Role
from services.auth.service import authenticate
from services.deps import SessionDep

_bearer = HTTPBearer(auto_error=False, description="An Accord API key: `acc_<id>_<secret>`")


def current_principal(
    session: SessionDep,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    principal = authenticate(session=session, token=creds.credentials) if creds else None
    if principal is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="A valid API key is required (Authorization: Bearer acc_...).",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return principal


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


# Each role check made by `require`, with its roles: services/openapi.py documents its 403.
_ROLE_CHECKS: dict[Callable[..., object], frozenset[str]] = {}


def role_check_roles(call: Callable[..., object] | None) -> frozenset[str] | None:
    """The roles ``call`` admits if it is a role check made by ``require``, else None."""
    return _ROLE_CHECKS.get(call) if call is not None else None


def require(*roles: Role) -> Callable[[Principal], Principal]:
    allowed = frozenset(roles)

    def check(principal: CurrentPrincipal) -> Principal:
        if principal.role not in allowed:
            names = ", ".join(sorted(r.value for r in allowed))
            raise HTTPException(
                status.HTTP_403_FORBIDDEN, detail=f"This action needs the role: {names}."
            )
        return principal

    _ROLE_CHECKS[check] = frozenset(r.value for r in allowed)
    return check
