"""The Athena service: dispatch one decoded call to its handler after validating it against the model."""

from __future__ import annotations

from typing import Any

import structlog

from athena_spark_emulator import calculations, engines, notebooks, sessions, spark_connect, workgroups
from athena_spark_emulator.context import Context, Handler
from athena_spark_emulator.errors import ApiError, internal, invalid_request, unknown_operation
from athena_spark_emulator.validation import validate_request

HANDLERS: dict[str, Handler] = {**workgroups.HANDLERS, **engines.HANDLERS, **sessions.HANDLERS,
                                 **spark_connect.HANDLERS, **calculations.HANDLERS, **notebooks.HANDLERS}


class AthenaService:
    """Validates and dispatches Athena operations.

    Real Athena operations the emulator does not implement answer an InvalidRequestException that says so;
    names that are not Athena operations answer UnknownOperationException.

    Args:
        context: the store and account identity.
        model: botocore's Athena ``ServiceModel``.
    """

    def __init__(self, context: Context, model: Any, *,
                 logger: structlog.typing.FilteringBoundLogger | None = None) -> None:
        self.context = context
        self._model = model
        self._known = frozenset(model.operation_names)
        self._operations = {name: model.operation_model(name) for name in HANDLERS}
        self._log = logger or structlog.get_logger("athena_spark_emulator")

    def handle(self, operation: str, body: dict[str, Any], now: float) -> dict[str, Any]:
        """Answer one call; raise :class:`ApiError` for every error the client should see."""
        handler = HANDLERS.get(operation)
        if handler is None:
            if operation in self._known:
                raise invalid_request(f"{operation} is not implemented by the Athena emulator")
            raise unknown_operation(operation)
        validate_request(self._operations[operation], body)
        try:
            return handler(self.context, body, now)
        except ApiError:
            raise
        except Exception as error:  # a bug in the emulator must not kill the server
            self._log.exception("emulator.internal_error", operation=operation, error=repr(error))
            raise internal(f"Emulator error: {error!r}") from error
