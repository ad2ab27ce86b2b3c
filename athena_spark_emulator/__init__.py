"""A wire-compatible Amazon Athena for Apache Spark emulator (AWS JSON 1.1 over HTTP).

Public API: :class:`Emulator` (async context manager), :class:`EmulatorThread` (sync, own loop),
:class:`ControlClient`, the clocks, and the pytest plugin :mod:`athena_spark_emulator.testing`. Faults are
injected through the control API, the :class:`ControlClient` or ``Emulator.backend`` (docs/emulator.md).
One emulator serves many accounts and regions: the account comes from the credentials, the region from the
request's SigV4 scope (:mod:`athena_spark_emulator.callers`).

The package never imports :mod:`supervisor`; the daemon never imports it.
"""

from __future__ import annotations

from athena_spark_emulator.client import ControlClient, ControlError
from athena_spark_emulator.clock import Clock, ManualClock, SleepingClock, SystemClock
from athena_spark_emulator.faults import Faults, FaultSpec
from athena_spark_emulator.rulebook import UnknownRule
from athena_spark_emulator.server import Emulator
from athena_spark_emulator.thread import EmulatorThread

__all__ = [
    "Clock",
    "ControlClient",
    "ControlError",
    "Emulator",
    "EmulatorThread",
    "FaultSpec",
    "Faults",
    "ManualClock",
    "SleepingClock",
    "SystemClock",
    "UnknownRule",
]
