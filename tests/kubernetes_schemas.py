"""Strict Kubernetes schema validation (``kubernetes-validate``) for the deploy tests, each schema file parsed once
per process.

``kubernetes_validate.validate`` reads and parses the schema of the document's kind and the version's whole
``_definitions.json`` (1.1 MB) on every call: ~20 ms per document, ~0.5 s of CPU over the manifests of both deploy
test files. The files are read-only package data, so their parsed contents are kept (nothing in the validation
writes to them): the same schemas, the same verdicts.
"""

from __future__ import annotations

import functools
from typing import Any

import kubernetes_validate
from kubernetes_validate import utils

if not hasattr(utils.schema_contents, "cache_info"):  # once per process, whichever test module imports this first
    utils.schema_contents = functools.cache(utils.schema_contents)

ValidationError = kubernetes_validate.ValidationError
latest_version = kubernetes_validate.latest_version


def validate(document: dict[str, Any], version: str) -> None:
    """Validate ``document`` against Kubernetes ``version``'s schemas, strictly (no unknown fields)."""
    kubernetes_validate.validate(document, version, strict=True)
