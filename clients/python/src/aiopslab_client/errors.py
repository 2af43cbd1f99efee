"""The exceptions the client raises.

Everything derives from :class:`AiopslabError`. An HTTP error answer becomes
an :class:`ApiError` built from the server's JSON error body
``{"error", "code", "details"}`` (a subclass per common status: 400, 401, 403,
404, 409, 503); a server that could not be reached becomes a
:class:`TransportError`. No message or attribute of an exception ever holds
the client token.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Type


class AiopslabError(Exception):
    """Base of every error this client raises."""


class TransportError(AiopslabError):
    """The server could not be reached, or the connection broke, on every
    attempt the retry policy allowed.

    Attributes:
        method: the HTTP method of the request.
        url: the URL asked for (no credentials are ever part of it).
        attempts: how many times the request was sent.
    """

    def __init__(self, message: str, *, method: str, url: str, attempts: int) -> None:
        super().__init__(message)
        self.method = method
        self.url = url
        self.attempts = attempts


class ApiError(AiopslabError):
    """The server answered with an error status.

    Attributes:
        status: the HTTP status code.
        code: the server's stable machine-readable code (``validation_error``,
            ``not_found``, ``idempotency_conflict``, ...).
        message: the server's human-readable message.
        details: the structured details (``field`` for a validation error,
            ``entity``/``id`` for a 404, ``key`` for an idempotency conflict).
        method, path: the request that failed.
        attempts: how many times the request was sent.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Optional[Mapping[str, Any]] = None,
        *,
        method: str = "",
        path: str = "",
        attempts: int = 1,
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.details: Dict[str, Any] = dict(details or {})
        self.method = method
        self.path = path
        self.attempts = attempts
        super().__init__(str(self))

    @property
    def field(self) -> Optional[str]:
        """The field or parameter a 400 names, if any."""
        field = self.details.get("field")
        return field if isinstance(field, str) else None

    def __str__(self) -> str:
        where = f" ({self.method} {self.path})" if self.method else ""
        return f"{self.status} {self.code}: {self.message}{where}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(status={self.status!r}, code={self.code!r}, "
            f"message={self.message!r}, details={self.details!r})"
        )


class BadRequestError(ApiError):
    """400: malformed JSON, a wrong type, an unknown field, a value out of
    bounds, or an invalid query parameter (``details["field"]`` names it)."""


class AuthenticationError(ApiError):
    """401: the client token is missing or wrong."""


class PermissionDeniedError(ApiError):
    """403: the token is not allowed on this route (e.g. a worker token)."""


class NotFoundError(ApiError):
    """404: no such task, group, worker or trajectory
    (``details["entity"]`` and ``details["id"]`` say which)."""


class ConflictError(ApiError):
    """409: ``already_terminal`` (cancel of a finished task),
    ``idempotency_conflict`` (a key reused with another request), ..."""


class UnavailableError(ApiError):
    """503: the server's store does not answer (retried for safe requests
    before it is raised)."""


_BY_STATUS: Dict[int, Type[ApiError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    503: UnavailableError,
}


def api_error_class(status: int) -> Type[ApiError]:
    """The :class:`ApiError` subclass raised for an HTTP ``status``."""
    return _BY_STATUS.get(status, ApiError)


class WaitTimeout(AiopslabError, TimeoutError):
    """:meth:`Client.wait` ran out of time.

    Attributes:
        unfinished: the ids of the tasks that were not terminal yet.
        finished: the tasks that were, in the order they were asked for.
    """

    def __init__(self, unfinished: Sequence[str], finished: Sequence[Any], timeout: float) -> None:
        self.unfinished: List[str] = list(unfinished)
        self.finished: List[Any] = list(finished)
        shown = ", ".join(self.unfinished[:10])
        more = f" and {len(self.unfinished) - 10} more" if len(self.unfinished) > 10 else ""
        super().__init__(
            f"{len(self.unfinished)} of {len(self.unfinished) + len(self.finished)} tasks "
            f"not finished after {timeout:g} s: {shown}{more}"
        )


class StreamError(AiopslabError):
    """A streamed answer (log follow, export) stopped before its end: the
    server sent an ``error`` event, or the connection was cut and could not be
    resumed."""


class DecodeError(AiopslabError):
    """The server's answer is not the JSON this client expects."""
