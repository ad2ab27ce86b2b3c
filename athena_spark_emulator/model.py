"""botocore's ``athena`` and ``sts`` service models, loaded once per process and shared read-only."""

from __future__ import annotations

import functools
import os
from typing import Any

# The loader and the model, not botocore.session: a session imports botocore's client machinery (its docs,
# urllib3), ~0.15 s of CPU at every emulator process start, for the same service description.
from botocore.loaders import Loader, create_loader
from botocore.model import ServiceModel


@functools.lru_cache(maxsize=1)
def shared_loader() -> Loader:
    """botocore's data loader, one per process: service models parsed once (the emulator's own models, and the
    delivery clients' of its event targets)."""
    return create_loader(os.environ.get("AWS_DATA_PATH"))  # as a botocore session's loader reads it


def _service_model(name: str) -> ServiceModel:
    return ServiceModel(shared_loader().load_service_model(name, "service-2"), service_name=name)


@functools.lru_cache(maxsize=1)  # immutable data, parsed once per process (~100 ms)
def load_athena_model() -> Any:
    """Return botocore's ``ServiceModel`` for Athena (the source of truth for shapes and operations)."""
    return _service_model("athena")


@functools.lru_cache(maxsize=1)
def load_sts_model() -> Any:
    """Return botocore's ``ServiceModel`` for STS (AssumeRole's input and output shapes)."""
    return _service_model("sts")
