"""botocore's ``athena`` service model, loaded once per emulator and shared read-only."""

from __future__ import annotations

import functools
from typing import Any

import botocore.session


@functools.lru_cache(maxsize=1)  # immutable data, parsed once per process (~100 ms)
def load_athena_model() -> Any:
    """Return botocore's ``ServiceModel`` for Athena (the source of truth for shapes and operations)."""
    return botocore.session.get_session().get_service_model("athena")
