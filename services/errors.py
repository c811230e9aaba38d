"""The one error type of Accord's domains: a request a service refuses, and how to answer it.

Services raise it (``ConsentError`` is the consent service's); ``services/api.py`` answers
every one with its status and the Error schema ``{"detail": message}``
(``services/openapi.py``). Messages are written by the service, never taken from the request.
"""

from __future__ import annotations


class DomainError(Exception):
    """A refused request; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
