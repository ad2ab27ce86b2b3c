"""A wire-compatible Amazon Athena for Apache Spark emulator (AWS JSON 1.1 over HTTP).

Public API: :class:`Emulator` (async context manager), :class:`EmulatorThread` (sync, own loop),
:class:`ControlClient`, the clocks, and the pytest plugin :mod:`athena_spark_emulator.testing`.
"""

from __future__ import annotations

from athena_spark_emulator.client import ControlClient, ControlError
from athena_spark_emulator.clock import Clock, ManualClock, SystemClock
from athena_spark_emulator.faults import Faults, FaultSpec
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
    "SystemClock",
]
