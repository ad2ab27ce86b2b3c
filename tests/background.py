"""Long real-time scenarios that mostly wait run in the background of the rest of the suite, all at once.

The crash loop, the enforcement bench, the demo, the fleet bench and the fleet's process tests each take 15-45 s of
real time for a few seconds of CPU each; run as ordinary tests they keep a worker waiting while a core idles.
Instead, a test declares its scenario with ``@in_background(scenario)``: ``scenario(directory)`` does the real-time
part (starts processes, waits for them) and returns what the test asserts on, and the test gets that value, or the
exception it raised, from ``background.result(scenario)``.

One process of the run (the first xdist worker to start a test, or the only process) starts the scenarios of
every such test selected, each in a thread, as soon as it starts its first test; it writes each outcome to the
run's temporary directory, where a test in another worker reads it. These tests are collected last, so by the
time they run their scenarios have usually ended while the other tests kept both cores busy. Those other tests run
at a lower priority than the scenarios (``yield_the_cpu``): a scenario's processes get a core when they need one,
whatever the tests in virtual time do meanwhile. The scenarios start in the session's test environment
(``aws_test_credentials``) and take it with them (each builds the environment of its processes when it starts), so
a test that changes the environment meanwhile does not reach them. A scenario must not write to this process's
stdout or stderr: that would land in the captured output of whatever test runs meanwhile (and fail one that checks
its stderr).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import pytest

from bench.zygote import SharedZygote

RESULT_TIMEOUT = 300.0  # seconds; every scenario bounds its own waits well below this
# Every scenario starts its processes as copies of a zygote (bench/zygote.py: the crash loop, the fleet's process tests,
# the fleet and enforcement benches' smoke runs, the demo, the daemons of tests/test_daemon_process.py and
# tests/test_secrets.py), this one while they run side by side: one interpreter importing the daemon and parsing its
# botocore models (~1.3 s of CPU) for them all.
ZYGOTES = SharedZygote()
OWNER_FILE = "background.owner"
# How much lower the priority of the thread that runs a process's tests is than that of its background scenarios.
# The tests in virtual time do not care when they get the CPU; the background scenarios' processes do (lease
# renewals, kills right after an intent, a Terminate due at a given instant). With a nice value 3 higher, a test
# thread competing with them for a core gets half their share (CFS weights 526 and 1024). (5, a third, starved the
# tests too much where other processes keep the cores busy: the run took 2.5 times as long.)
TEST_THREAD_NICENESS = 3

T = TypeVar("T")
Scenario = Callable[[Path], Any]


def in_background(scenario: Callable[[Path], T]) -> pytest.MarkDecorator:
    """Mark a test whose real-time part is ``scenario``, played in the background from the start of the run."""
    return pytest.mark.background.with_args(scenario)


def _key(scenario: Scenario) -> str:
    return f"{scenario.__module__}.{scenario.__qualname__}"


def _scenarios(items: list[pytest.Item]) -> list[Scenario]:
    found: dict[str, Scenario] = {}
    for item in items:
        marker = item.get_closest_marker("background")
        if marker is not None:
            found.setdefault(_key(marker.args[0]), marker.args[0])
    return list(found.values())


class Background:
    """The background scenarios of one run, as one of its processes sees them.

    Args:
        shared: a directory every process of the run shares (the run's temporary directory).
        directory: makes a fresh directory for a scenario, from its name.
    """

    def __init__(self, shared: Path, directory: Callable[[str], Path]) -> None:
        self._shared = shared
        self._directory = directory
        self._runs: dict[str, tuple[threading.Thread, Future[Any]]] = {}
        self.owner = False

    def claim(self, scenarios: list[Scenario]) -> None:
        """Play ``scenarios`` in this process, unless another process of the run already does."""
        try:
            os.close(os.open(self._shared / OWNER_FILE, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
        self.owner = True
        for scenario in scenarios:
            self._start(scenario)

    def _start(self, scenario: Scenario) -> None:
        key = _key(scenario)
        future: Future[Any] = Future()
        directory = self._directory(scenario.__name__)

        def run() -> None:
            try:
                outcome: tuple[str, Any] = ("value", scenario(directory))
            except BaseException as error:  # handed to the test, which raises it
                outcome = ("error", error)
            self._publish(key, outcome)
            if outcome[0] == "value":
                future.set_result(outcome[1])
            else:
                future.set_exception(outcome[1])

        thread = threading.Thread(target=run, name=f"background {key}", daemon=True)
        self._runs[key] = (thread, future)
        thread.start()

    def _publish(self, key: str, outcome: tuple[str, Any]) -> None:
        try:
            data = pickle.dumps(outcome)
        except Exception:  # an exception that does not pickle: its traceback as text
            error = outcome[1]
            data = pickle.dumps(("error", RuntimeError("".join(traceback.format_exception(error)))))
        part = self._shared / f"{key}.part"
        part.write_bytes(data)
        part.rename(self._shared / f"{key}.outcome")  # whole or absent for a reader in another process

    def result(self, scenario: Callable[[Path], T]) -> T:
        """What ``scenario`` returned; raises what it raised."""
        key = _key(scenario)
        if self.owner:
            if key not in self._runs:  # not selected when the run started (cannot happen through in_background)
                self._start(scenario)
            value: T = self._runs[key][1].result(RESULT_TIMEOUT)
            return value
        path = self._shared / f"{key}.outcome"
        deadline = time.monotonic() + RESULT_TIMEOUT
        while not path.exists():
            assert time.monotonic() < deadline, f"no outcome of the background scenario {key} in {RESULT_TIMEOUT} s"
            time.sleep(0.05)
        kind, payload = pickle.loads(path.read_bytes())
        if kind == "error":
            raise payload
        published: T = payload
        return published

    def join(self) -> None:
        for thread, _ in self._runs.values():
            thread.join(RESULT_TIMEOUT)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests of background scenarios last: their scenarios have the whole run to end."""
    items.sort(key=lambda item: item.get_closest_marker("background") is not None)


@pytest.fixture(scope="session", autouse=True)
def background(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
               aws_test_credentials: None) -> Iterator[Background]:
    """This process's view of the run's background scenarios; started here if no other process did first."""
    basetemp = tmp_path_factory.getbasetemp()
    shared = basetemp.parent if hasattr(request.config, "workerinput") else basetemp  # xdist: <run>/popen-gwN
    runner = Background(shared, tmp_path_factory.mktemp)
    scenarios = _scenarios(request.session.items)
    if scenarios:
        runner.claim(scenarios)
    yield_the_cpu()
    try:
        yield runner
    finally:
        runner.join()


def yield_the_cpu() -> None:
    """Lower the priority of this thread, the one that runs the tests (and of the threads and processes it starts
    from now on), by ``TEST_THREAD_NICENESS``; the background scenarios' threads, started before, keep theirs, and
    so do the processes they start. On Linux a nice value belongs to a thread; elsewhere this lowers the whole
    process, background included, which changes nothing between them."""
    with contextlib.suppress(OSError):
        os.nice(TEST_THREAD_NICENESS)
