"""athena-spark-supervisor: budget enforcement for Amazon Athena for Apache Spark."""

from __future__ import annotations

__version__ = "0.1.0"
