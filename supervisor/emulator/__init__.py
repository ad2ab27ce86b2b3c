"""A wire-compatible Amazon Athena for Apache Spark emulator (AWS JSON 1.1 over HTTP).

Public API: :class:`Emulator` (async context manager), :class:`EmulatorThread` (sync, own loop),
:class:`ControlClient`, the clocks, and the pytest plugin :mod:`supervisor.emulator.testing`.
"""

from __future__ import annotations

from supervisor.emulator.client import ControlClient, ControlError
from supervisor.emulator.clock import Clock, ManualClock, SystemClock
from supervisor.emulator.faults import Faults, FaultSpec
from supervisor.emulator.server import Emulator
from supervisor.emulator.thread import EmulatorThread

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
