"""A process that imports the daemon once and forks a copy of itself for each process the harnesses start: the
``athena-supervisor`` processes (fleet replicas, the crash loop's daemons, the emulator) and the servers they talk
to (the fleet's DynamoDB stand-in, moto's SQS).

Every such process used to be a fresh interpreter: about 1.3 s of CPU importing aiobotocore, aiohttp, pydantic and
the daemon (or botocore, aiohttp and moto's server, for the servers) before its first line of work, a dozen times
per test run and on a machine whose two cores the rest of the suite keeps busy. A forked copy starts with those
modules loaded and is otherwise the same thing: its own process (its own pid, event loop, sockets, journal
connection, signals: ``kill -9`` and SIGTERM do what they do to the command), running an entry point
(:func:`supervisor.cli.main` unless told otherwise, e.g. ``bench.dynamodb_server:main``) with the command's
arguments, its environment and working directory set, stdout and stderr in its log file (or stderr in a file of its
own), stdin on ``/dev/null``. ``random`` is reseeded in each copy (the standard library does it at every fork),
and the zygote opens nothing but its pipes before forking: no event loop, no thread, no connection is shared. What a
copy inherits is frozen (``gc.freeze``): its collections leave the zygote's objects alone.

The zygote preloads only what the daemon imports (:data:`PRELOAD`), not moto: importing moto registers a hook in
every botocore session made after it (``BUILTIN_HANDLERS``), which the replicas must not carry, nor its memory (a
replica's peak RSS is a figure of the fleet bench). The moto servers (:data:`SERVER_ENTRIES`) are copies of a second
zygote, forked from this one at the first request for one: it imports moto and answers one request of each service
(:func:`warm_servers`), which each server's copy did at its start and first request (~0.5 s of CPU, against ~0.02
now; the second zygote costs ~0.6 s once). Its requests and answers pass through this zygote.

A server prints a ready line on stdout; a copy's stdout is its log, so :meth:`Zygote.start_server` reads the line
from there (from where the log ended at the spawn: a kept directory may hold an earlier run's log).

The zygote is the copies' parent, so it reaps them, and tells the harness each one's exit status and resource use
(``wait4``: CPU seconds since the fork, peak RSS); :class:`ForkedProcess` offers the part of ``subprocess.Popen``
the harnesses use (``pid``, ``poll``, ``wait``, ``send_signal``, ``terminate``, ``kill``, ``returncode``) plus
``usage``.

Protocol (JSON lines): the harness writes ``{"id": N, "entry": "module:function", "argv": [...], "cwd": ...,
"env": {...}, "log": path, "stderr": path or null}``; the zygote answers ``{"id": N, "pid": P}`` and, when a copy
ends, ``{"exited": P, "status": S, "cpu_seconds": C, "maxrss_kib": M}``.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import itertools
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

if TYPE_CHECKING:
    from botocore.loaders import Loader

ROOT = Path(__file__).resolve().parents[1]
# The daemon's modules, and those it imports only once running (anyio's asyncio backend and its thread pool, the
# run command, IDNA for its connections' host names, strptime for botocore's dates): each copy imported these again.
PRELOAD = ("supervisor.cli", "supervisor.service", "supervisor.commands.run", "anyio._backends._asyncio",
           "anyio.to_thread", "concurrent.futures.thread", "encodings.idna", "_strptime")
# The services whose models the copies' clients load (Athena and STS for every daemon; DynamoDB for a replica's
# journal; SQS for event-fed discovery).
WARM_SERVICES = ("athena", "sts", "dynamodb", "sqs")
# The moto servers' entry points: their copies come from a zygote of their own (see serve), which imports moto and
# warms its DynamoDB and SQS once for them all.
SERVER_ENTRIES = frozenset({"bench.dynamodb_server:main", "moto.server:main"})
SERVER_PRELOAD = ("bench.dynamodb_server", "bench.moto_http", "bench.moto_speedups", "moto.server", "aiohttp.web",
                  "concurrent.futures.thread")
DAEMON = "supervisor.cli:main"
READY_POLL = 0.02  # seconds between looks at a starting server's log


@dataclass(frozen=True)
class Usage:
    """What the kernel says a reaped process used (``wait4``)."""

    cpu_seconds: float
    peak_rss_mib: float
    exit_code: int          # as subprocess has it: negative for a signal


class ForkedProcess:
    """A copy the zygote forked: the part of ``subprocess.Popen`` the harnesses use."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self.usage: Usage | None = None
        self._done = threading.Event()

    def _exited(self, usage: Usage) -> None:
        self.usage = usage
        self.returncode = usage.exit_code
        self._done.set()

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if not self._done.wait(timeout):
            raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout or 0.0)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class Zygote:
    """The harness's side: start the zygote (in ``env``, the environment its copies share: modules read some of it
    when imported), then :meth:`spawn` copies of it."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        with log.open("ab") as stream:
            self._process = subprocess.Popen([sys.executable, str(Path(__file__).resolve())], cwd=ROOT, env=env,
                                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stream)
        assert self._process.stdin is not None and self._process.stdout is not None
        self._requests = self._process.stdin
        self._answers = self._process.stdout
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._pending: dict[int, Future[int]] = {}
        self._copies: dict[int, ForkedProcess] = {}
        self._early: dict[int, Usage] = {}  # a copy that ended before its spawn answer was handled
        self._reader = threading.Thread(target=self._read, name="zygote-reader", daemon=True)
        self._reader.start()

    def __enter__(self) -> Zygote:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def spawn(self, argv: list[str], *, log: Path, env: dict[str, str], cwd: Path = ROOT, entry: str = DAEMON,
              stderr: Path | None = None, timeout: float = 60.0) -> ForkedProcess:
        """A copy running ``entry`` (``module:function``; ``supervisor.cli.main`` by default) on ``argv``, with
        its output appended to ``log`` (its stderr to ``stderr`` instead, if given: for a caller that reads the
        two apart, as it would a subprocess's pipes)."""
        for path in (log, stderr):
            if path is not None:
                path.open("ab").close()  # there when this returns, as with Popen (the copy opens it a moment later)
        request_id = next(self._ids)
        answer: Future[int] = Future()
        with self._lock:
            self._pending[request_id] = answer
            self._requests.write(json.dumps({"id": request_id, "entry": entry, "argv": argv, "cwd": str(cwd),
                                             "env": env, "log": str(log),
                                             "stderr": None if stderr is None else str(stderr)}).encode() + b"\n")
            self._requests.flush()
        pid = answer.result(timeout)
        with self._lock:
            copy = ForkedProcess(pid)
            self._copies[pid] = copy
            if pid in self._early:
                copy._exited(self._early.pop(pid))
        return copy

    def start_server(self, argv: list[str], *, log: Path, env: dict[str, str], ready: str, entry: str = DAEMON,
                     timeout: float = 60.0) -> tuple[ForkedProcess, dict[str, Any]]:
        """A copy serving something, once it said so: its process and its ready line, the first JSON line of
        ``log`` (written after this call) whose ``event`` is ``ready``. A copy that exits first, or says nothing
        within ``timeout`` seconds (it is killed then), is a RuntimeError."""
        start = log.stat().st_size if log.exists() else 0
        process = self.spawn(argv, log=log, env=env, entry=entry)
        deadline = time.monotonic() + timeout
        while True:
            exited = process.poll() is not None  # before the read: a line written before it exited is read
            with log.open("rb") as stream:
                stream.seek(start)
                written = stream.read()
            for line in written[:written.rfind(b"\n") + 1].splitlines():
                with contextlib.suppress(ValueError):
                    said = json.loads(line)
                    if isinstance(said, dict) and said.get("event") == ready:
                        return process, said
            if exited or time.monotonic() > deadline:
                process.kill()
                code = process.wait(10)
                raise RuntimeError(f"{entry} {' '.join(argv)} was not ready (exit {code}); log: {log}")
            time.sleep(READY_POLL)

    def _read(self) -> None:
        for line in self._answers:
            message = json.loads(line)
            with self._lock:
                if "pid" in message:
                    self._pending.pop(message["id"]).set_result(message["pid"])
                    continue
                ended = Usage(message["cpu_seconds"], message["maxrss_kib"] / 1024,
                              os.waitstatus_to_exitcode(message["status"]))
                copy = self._copies.get(message["exited"])
                if copy is None:
                    self._early[message["exited"]] = ended
                else:
                    copy._exited(ended)
        with self._lock:  # the zygote is gone: nothing pending will be answered
            for answer in self._pending.values():
                answer.set_exception(RuntimeError("the zygote exited"))

    def close(self) -> None:
        """Stop the zygote (copies still running are killed: a harness stops its own first)."""
        for copy in list(self._copies.values()):
            copy.kill()
        with contextlib.suppress(BrokenPipeError):
            self._requests.close()
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._reader.join(5)


class SharedZygote:
    """One zygote for the harnesses that run side by side in one process (the test suite's background scenarios,
    threads of one process): the first to :meth:`use` it starts it, in its environment and with its log, and the last
    to be done with it stops it; a harness that starts once every other is done starts another. Each zygote costs
    ~1.3 s of CPU (an interpreter importing the daemon, parsing its botocore models); what a copy runs does not
    depend on whose zygote it is: each gets its own arguments, environment and working directory, and the few
    variables read at import (aiohttp's and structlog's switches) are the same in every harness's environment (this
    process's, plus credentials)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._zygote: Zygote | None = None
        self._users = 0

    @contextlib.contextmanager
    def use(self, env: dict[str, str], log: Path) -> Iterator[Zygote]:
        with self._lock:
            if self._zygote is None:
                self._zygote = Zygote(env, log)
            zygote = self._zygote
            self._users += 1
        try:
            yield zygote
        finally:
            with self._lock:
                self._users -= 1
                last = self._users == 0
                if last:
                    self._zygote = None
            if last:
                zygote.close()


# -- the zygote itself ------------------------------------------------------------------------------------------

def _child(request: dict[str, Any], keep: tuple[int, ...]) -> None:
    """In the copy: become the command, then exit as a process does. Never returns."""
    code: int = 1
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the zygote's reaping
        # The rest as a fresh interpreter has them. SIGPIPE above all: ignored, so a write to a connection whose peer
        # is gone is an EPIPE error; at SIG_DFL it ended the whole process (a server whose client was killed with an
        # answer in flight, a replica whose connection was reset).
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        for fd in keep:
            os.close(fd)
        log = os.open(request["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        errors = log if request.get("stderr") is None else os.open(request["stderr"],
                                                                  os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(errors, 2)
        for fd in {log, errors, null}:
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        module, _, function = request["entry"].partition(":")
        sys.argv = [module, *request["argv"]]
        result = getattr(importlib.import_module(module), function)(request["argv"])
        code = result if isinstance(result, int) else 0  # moto's server main returns None
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        with contextlib.suppress(Exception):
            import atexit

            atexit._run_exitfuncs()
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def warm(loader: Loader | None = None) -> Loader | None:
    """Parse, once for every copy, the botocore data each copy's clients would parse again: the service models and
    endpoint rulesets of :data:`WARM_SERVICES`, botocore's endpoints, partitions and default configuration, into
    ``loader``; by default the data loader every session of this process shares (``supervisor.gateway.new_session``:
    one per ``data_path``, here the one a session made in the zygote's environment asks for, the environment the
    harnesses give the copies too). Plain data that a loader only reads once parsed; nothing opened, no thread, no
    loop. ~0.06 s of CPU per copy (of ~0.3 s in a replica's first four seconds), for a few MiB of pages each copy
    shares with the zygote. Returns the loader, or None where the environment names an AWS profile that does not
    exist (a session cannot say its ``data_path`` then; a copy's clients would fail alike, and the copies that make
    none, an emulator or a moto server, must still start)."""
    from botocore.exceptions import ProfileNotFound

    from supervisor.gateway import new_session

    if loader is None:
        try:
            loader = new_session().get_component("data_loader")
        except ProfileNotFound:
            return None
    for name in ("endpoints", "partitions", "sdk-default-configuration"):
        loader.load_data_with_path(name)
    for service in WARM_SERVICES:
        for kind in ("service-2", "endpoint-rule-set-1"):
            loader.load_service_model(service, kind, api_version=None)  # as botocore asks: the cache's key
    return loader


def warm_servers() -> None:
    """Do, once for every moto server's copy, what moto did at a copy's first request: import the service's
    modules, build its backends (with the regions it reads from botocore's data) and application, and those of
    the accounts and IAM checks every request goes through: one read-only request to each of DynamoDB and SQS
    (ListTables, ListQueues) through moto_server's application, as ``tests/moto_in_loop.py`` warms the tests' moto.
    ~0.4 s of CPU per copy. What they leave is empty backends: a copy's state starts as a fresh process's would
    after such a request."""
    from moto.server import DomainDispatcherApplication, create_backend_app
    from werkzeug.test import EnvironBuilder

    from bench.moto_http import call_wsgi

    app = DomainDispatcherApplication(create_backend_app)
    for service, target in (("dynamodb", "DynamoDB_20120810.ListTables"), ("sqs", "AmazonSQS.ListQueues")):
        headers = {"X-Amz-Target": target, "Content-Type": "application/x-amz-json-1.0",
                   "Authorization": f"AWS4-HMAC-SHA256 Credential=warm/20260101/us-east-1/{service}/aws4_request, "
                                    "SignedHeaders=host, Signature=0"}
        status, _, body = call_wsgi(app, EnvironBuilder(method="POST", path="/", headers=headers,
                                                        data=b"{}").get_environ())
        if status != 200:
            raise RuntimeError(f"moto's warm-up {target} answered {status}: {body[:200]!r}")


def serve(*, servers: bool = False, requests: int = 0, answers: BinaryIO | None = None) -> None:
    """Fork a copy for each request read from ``requests`` (a file descriptor, stdin by default), answering on
    ``answers`` (stdout by default), until ``requests`` ends.

    The zygote of the moto servers (``servers``) is itself forked from this one at the first request for a server
    (:data:`SERVER_ENTRIES`): the daemon's modules already imported, it imports moto and warms it
    (:func:`warm_servers`), then serves those requests, forwarded to it over a pipe; its answers come back the same
    way and are passed on as they are (it reaps its own copies)."""
    answers = sys.stdout.buffer if answers is None else answers
    for name in SERVER_PRELOAD if servers else PRELOAD:
        importlib.import_module(name)
    if servers:
        warm_servers()
    else:
        warm()
    if threading.active_count() != 1:  # a copy would inherit its locks, held or not, and not the thread
        raise RuntimeError(f"the zygote must fork without threads: {threading.enumerate()}")
    # SIGCHLD wakes the select below through this pipe; copies are reaped there.
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    os.set_blocking(wake_read, False)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    to_servers: int | None = None    # the moto servers' zygote: its requests pipe, its answers pipe, its pid
    from_servers: int | None = None
    servers_pid = 0
    pending = relayed = b""
    while True:
        readable, _, _ = select.select([requests, wake_read, *([from_servers] if from_servers else [])], [], [])
        if wake_read in readable:
            with contextlib.suppress(BlockingIOError):
                os.read(wake_read, 4096)
        _reap(answers, servers_pid)
        if from_servers is not None and from_servers in readable:
            data = os.read(from_servers, 65536)
            if not data:  # it ended (its traceback in the log): the next server's request forks another
                assert to_servers is not None
                os.close(to_servers)
                os.close(from_servers)
                to_servers = from_servers = None
            relayed += data
            whole = relayed[:relayed.rfind(b"\n") + 1]
            relayed = relayed[len(whole):]
            answers.write(whole)
            answers.flush()
        if requests not in readable:
            continue
        data = os.read(requests, 65536)  # read raw: a buffered reader may hold a line select() cannot see
        if not data:
            if to_servers is not None:
                os.close(to_servers)  # it returns too; reaped here, so that its CPU time counts as this process's
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(servers_pid, 0)
            return  # the harness is done with us
        pending += data
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            request = json.loads(line)
            # What a copy closes: this zygote's pipes (not 0-2, which it replaces).
            keep = (wake_read, wake_write, *(fd for fd in (to_servers, from_servers, requests, answers.fileno())
                                             if fd is not None and fd > 2))
            if request["entry"] in SERVER_ENTRIES and not servers:
                if to_servers is None:
                    servers_pid, to_servers, from_servers = _fork_servers_zygote(keep)
                os.write(to_servers, line + b"\n")
                continue
            # Everything the copy inherits out of the collector's sight (Python's advice for fork without exec): a
            # copy's full collections no longer walk ~100,000 imported objects, nor write to their pages (each
            # written page a copy of the zygote's); ~0.1 s of CPU per copy, which made one such collection.
            gc.freeze()
            pid = os.fork()
            if pid == 0:
                _child(request, keep)
            answers.write(json.dumps({"id": request["id"], "pid": pid}).encode() + b"\n")
            answers.flush()


def _fork_servers_zygote(keep: tuple[int, ...]) -> tuple[int, int, int]:
    """Fork the moto servers' zygote: its pid, the pipe to write its requests to and the one to read its answers
    from."""
    requests_read, requests_write = os.pipe()
    answers_read, answers_write = os.pipe()
    gc.freeze()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            signal.set_wakeup_fd(-1)
            for fd in (*keep, requests_write, answers_read):
                os.close(fd)
            null = os.open(os.devnull, os.O_RDWR)
            os.dup2(null, 0)  # not the harness's pipes: it must see them end with this zygote
            os.dup2(null, 1)
            os.close(null)
            serve(servers=True, requests=requests_read, answers=os.fdopen(answers_write, "wb"))
            code = 0
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)
    os.close(requests_read)
    os.close(answers_write)
    return pid, requests_write, answers_read


def _reap(answers: Any, servers_pid: int = 0) -> None:
    """Reap the copies that ended and tell the harness (not the moto servers' zygote: none of its copies)."""
    while True:
        try:
            pid, status, usage = os.wait4(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        if pid == servers_pid:
            continue
        answers.write(json.dumps({"exited": pid, "status": status, "cpu_seconds": usage.ru_utime + usage.ru_stime,
                                  "maxrss_kib": usage.ru_maxrss}).encode() + b"\n")
        answers.flush()


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    serve()
