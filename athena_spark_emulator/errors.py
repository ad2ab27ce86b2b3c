"""The API errors the emulator answers, as botocore's ``athena`` model and AWS JSON 1.1 define them."""

from __future__ import annotations

from typing import Any

CLIENT_ERROR = 400
FORBIDDEN = 403  # STS's authentication and authorization errors (AccessDenied, ExpiredToken…)
SERVER_ERROR = 500


class ApiError(Exception):
    """An error answered to an Athena API call.

    Args:
        error_type: the short ``__type`` name, e.g. ``InvalidRequestException``.
        message: the human-readable ``Message``.
        status: the HTTP status code.
        extra: additional members of the error shape (e.g. ``AthenaErrorCode``).
    """

    def __init__(self, error_type: str, message: str, *, status: int = CLIENT_ERROR,
                 extra: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.status = status
        self.extra = extra or {}

    def body(self) -> dict[str, Any]:
        """The JSON error body botocore parses (``__type`` and ``Message``)."""
        return {"__type": self.error_type, "Message": self.message, **self.extra}


def invalid_request(message: str) -> ApiError:
    return ApiError("InvalidRequestException", message)


def not_found(message: str, resource: str | None = None) -> ApiError:
    extra = {"ResourceName": resource} if resource else None
    return ApiError("ResourceNotFoundException", message, extra=extra)


def throttled(message: str = "Rate exceeded") -> ApiError:
    return ApiError("TooManyRequestsException", message)


def internal(message: str = "An internal error occurred (injected fault)") -> ApiError:
    return ApiError("InternalServerException", message, status=SERVER_ERROR)


def unknown_operation(target: str) -> ApiError:
    return ApiError("UnknownOperationException", f"Unknown operation {target!r}")


def serialization(message: str) -> ApiError:
    return ApiError("SerializationException", message)
