"""botocore's ``athena`` and ``sts`` service models, loaded once per process and shared read-only."""

from __future__ import annotations

import functools
from typing import Any

import botocore.session


@functools.lru_cache(maxsize=1)  # immutable data, parsed once per process (~100 ms)
def load_athena_model() -> Any:
    """Return botocore's ``ServiceModel`` for Athena (the source of truth for shapes and operations)."""
    return botocore.session.get_session().get_service_model("athena")


@functools.lru_cache(maxsize=1)
def load_sts_model() -> Any:
    """Return botocore's ``ServiceModel`` for STS (AssumeRole's input and output shapes)."""
    return botocore.session.get_session().get_service_model("sts")
