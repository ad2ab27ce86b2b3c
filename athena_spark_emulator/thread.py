"""Run an :class:`Emulator` in a background thread with its own event loop (a sync context manager)."""

from __future__ import annotations

import asyncio
import threading
from types import TracebackType
from typing import Any

from athena_spark_emulator.server import Emulator


class EmulatorThread:
    """``with EmulatorThread(port=0) as emu:`` — same keyword arguments and attributes as :class:`Emulator`.

    The emulator gets its own loop, so a daemon under test in the main loop cannot stall it.
    """

    def __init__(self, **kwargs: Any) -> None:
        self._kwargs = kwargs
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._stop: asyncio.Event | None = None
        self.emulator: Emulator | None = None

    @property
    def endpoint_url(self) -> str:
        return self._require().endpoint_url

    @property
    def control_url(self) -> str:
        return self._require().control_url

    @property
    def account_id(self) -> str:
        return self._require().account_id

    @property
    def region(self) -> str:
        return self._require().region

    def _require(self) -> Emulator:
        if self.emulator is None:
            raise RuntimeError("the emulator thread is not started")
        return self.emulator

    def start(self, timeout: float = 30.0) -> None:
        self._thread = threading.Thread(target=self._run, name="athena-emulator", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("the emulator did not start in time")
        if self._failure is not None:
            raise RuntimeError("the emulator failed to start") from self._failure

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            emulator = Emulator(**self._kwargs)
            await emulator.start()
        except BaseException as error:
            self._failure = error
            self._ready.set()
            return
        self.emulator = emulator
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await emulator.close()

    def stop(self, timeout: float = 30.0) -> None:
        loop, stop, thread = self._loop, self._stop, self._thread
        if loop is not None and stop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stop.set)
        if thread is not None:
            thread.join(timeout)
        self._thread = None

    def __enter__(self) -> EmulatorThread:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
