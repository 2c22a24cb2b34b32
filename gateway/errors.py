"""The root of every error the gateway raises on purpose.

Each error has a stable machine-readable ``code`` (the ISO 20022 external reason code where one
exists) and a ``kind`` that the HTTP adapter maps, in one place, to a status and an RFC 9457
problem body. The domain never raises HTTP exceptions.

    GatewayError
     ├── InvalidInput          kind=invalid       malformed or out-of-range input
     ├── NotFound              kind=not_found     the named object does not exist
     ├── Conflict              kind=conflict      valid input that clashes with current state
     │    └── IdempotencyConflict   DU01   same id, different body
     ├── Unprocessable         kind=unprocessable valid input the business rules refuse
     ├── Unauthorized          kind=unauthorized  missing or unknown credentials
     ├── Forbidden             kind=forbidden     credentials without the needed role
     └── Unavailable           kind=unavailable   a dependency is down; retrying may help
          └── TransientError        a race or deadlock: the service layer retries it itself

Capabilities subclass these (e.g. ``gateway.ledger.errors.InsufficientFunds``).

This module imports only the standard library, so domain models may use it.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

ErrorKind = Literal[
    "invalid", "not_found", "conflict", "unprocessable", "unauthorized", "forbidden", "unavailable"
]


HTTP_STATUS_BY_KIND: dict[ErrorKind, int] = {
    "invalid": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "conflict": 409,
    "unprocessable": 422,
    "unavailable": 503,
}
"""The HTTP status each kind maps to, for every HTTP adapter (the gateway's and the connector's)."""


class GatewayError(Exception):
    """Base of all deliberate errors. ``detail`` is safe to show to the caller unless
    ``detail_is_public`` says otherwise."""

    code: ClassVar[str] = "GATEWAY_ERROR"
    kind: ClassVar[ErrorKind] = "unprocessable"
    title: ClassVar[str] = "Request refused"
    detail_is_public: ClassVar[bool] = True
    """False where ``detail`` names internal systems (a node's address, its own words): an
    HTTP answer then carries ``title`` as its detail, and the full ``detail`` goes to the log."""

    def __init__(self, detail: str = "", **extra: Any) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.extra: dict[str, Any] = extra

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, detail={self.detail!r})"


class InvalidInput(GatewayError):
    code = "INVALID_INPUT"
    kind = "invalid"
    title = "Invalid input"


class NotFound(GatewayError):
    code = "NOT_FOUND"
    kind = "not_found"
    title = "Not found"


class Conflict(GatewayError):
    code = "CONFLICT"
    kind = "conflict"
    title = "Conflict with the current state"


class IdempotencyConflict(Conflict):
    """The client reused an operation id (or idempotency key) with a different body."""

    code = "DU01"
    title = "Id already used with a different body"


class Unprocessable(GatewayError):
    code = "UNPROCESSABLE"
    kind = "unprocessable"
    title = "Refused by business rules"


class Unauthorized(GatewayError):
    code = "UNAUTHORIZED"
    kind = "unauthorized"
    title = "Missing or invalid credentials"


class Forbidden(GatewayError):
    code = "FORBIDDEN"
    kind = "forbidden"
    title = "Not allowed for this role"


class Unavailable(GatewayError):
    code = "UNAVAILABLE"
    kind = "unavailable"
    title = "Temporarily unavailable"


class TransientError(Unavailable):
    """A transient conflict (deadlock, serialization failure, unique-key race).

    Services retry the whole unit of work on it; it reaches a caller only when retries run out.
    """

    code = "RETRY"
    title = "Transient conflict, retry"


__all__ = [
    "HTTP_STATUS_BY_KIND",
    "Conflict",
    "ErrorKind",
    "Forbidden",
    "GatewayError",
    "IdempotencyConflict",
    "InvalidInput",
    "NotFound",
    "TransientError",
    "Unauthorized",
    "Unavailable",
    "Unprocessable",
]
