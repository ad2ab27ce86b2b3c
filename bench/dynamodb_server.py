"""moto's DynamoDB as a process of its own, for the fleet harness: one request at a time, leases first and bulk writes
last, transactions idempotent by their token.

This is the WSGI application ``moto_server`` runs (``DomainDispatcherApplication(create_backend_app)``), served on a
free port by aiohttp (HTTP/1.1, connections kept open between requests as DynamoDB's are; see :func:`serve`), made
cheaper per request as the tests' moto is (``bench/moto_speedups.py``: items written out directly, transactions on
their own items and Queries on their own partition, so that neither costs time in proportion to the whole table,
dispatching remembered), with three differences, all about how faithfully it stands in for DynamoDB, none about
what it answers:

- **One request at a time.** ``moto_server`` applies requests on their own threads at once, and moto's in-memory
  backend does not make a conditional write's check and its write one step (a thread switch can fall between
  them), whereas DynamoDB applies each request to an item atomically. A fleet relies on exactly that (of two
  replicas taking one expired lease, one wins), so requests are serialised, as ``tests/dynamodb_fixtures.py`` does
  in process.
- **Leases first, bulk work last.** Of the requests waiting for their turn, those on the lease and heartbeat
  items go first, and transactions of more than :data:`BULK_ITEMS` items (watch-list saves) and Queries of a
  watch list (a new owner reading ~1,000 targets: 1.5 s in moto) last (see :class:`SerialMoto`).
- **Idempotent transactions.** A TransactWriteItems sent again with the same ``ClientRequestToken`` and items is
  answered as the first one was, as DynamoDB does (moto ignores the token).

It counts the requests it served by operation (``X-Amz-Target``), every replica's (killed ones' included), and
the seconds spent serving them: ``GET /_bench/calls`` answers ``{"calls": {"PutItem": 12, ...}, "busy_seconds":
{...}}`` (not a moto route, never forwarded).

Usage:
    python bench/dynamodb_server.py [--host 127.0.0.1] [--port 0] [--slow-log SECONDS]

When it listens it prints one JSON line on stdout, ``{"event": "dynamodb.ready", "endpoint_url": ...}``; SIGTERM
stops it.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import heapq
import io
import itertools
import json
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path
from typing import Any

from moto.server import create_backend_app

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import moto_speedups  # noqa: E402

COUNTS_PATH = "/_bench/calls"


class PriorityLock:
    """A lock whose waiters get it by priority (lower first), then in arrival order."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._busy = False
        self._waiting: list[tuple[int, int]] = []
        self._order = itertools.count()

    @contextlib.contextmanager
    def held(self, priority: int) -> Iterator[None]:
        with self._condition:
            entry = (priority, next(self._order))
            heapq.heappush(self._waiting, entry)
            while self._busy or self._waiting[0] != entry:
                self._condition.wait()
            heapq.heappop(self._waiting)
            self._busy = True
        try:
            yield
        finally:
            with self._condition:
                self._busy = False
                self._condition.notify_all()


BULK_ITEMS = 10  # a transaction of more items is a bulk write (a watch-list save), served after the others waiting
WATCH_SUFFIX = "#WATCH"  # a shard's watch list (supervisor/storage/dynamodb_layout.py): a Query of it is a bulk read
LEASE_PARTITIONS = frozenset({"LEASE", "REPLICA"})  # supervisor/storage/dynamodb_layout.py: leases, heartbeats


def _partition(body: bytes) -> str | None:
    """The partition key a single-item request or a Query names (None for batches and transactions)."""
    with contextlib.suppress(ValueError, KeyError, TypeError, AttributeError):
        request = json.loads(body)
        for found in (request.get("Key"), request.get("Item")):
            if found:
                return str(found["pk"]["S"])
        return str(request["ExpressionAttributeValues"][":pk"]["S"])
    return None


class SerialMoto:
    """moto's WSGI app, one request at a time, counting requests and busy seconds by operation.

    Waiting requests on the lease and heartbeat items go first: DynamoDB serves requests side by side in
    milliseconds, while moto serves one at a time and a large Query takes it seconds (it renders ~1.5 ms of JSON
    per item on this machine); without this, a replica's lease renewal would wait behind other replicas' watch-list
    reads and lose its lease to the stand-in's queue, not to anything the replica did. For the same reason
    transactions of more than :data:`BULK_ITEMS` items (a watch-list save of up to 99 targets, which takes moto
    0.5-1.3 s where DynamoDB takes tens of milliseconds, side by side with everything else) go after everything
    waiting: a claim or an intent (a transaction of two or three items) no longer waits a second behind one. So do
    Queries of a watch list (a new owner's read of a shard's targets, ~1.5 ms per item in moto).
    """

    def __init__(self, slow_log: float | None = None) -> None:
        self._app = moto_speedups.Dispatcher(create_backend_app)
        self._lock = PriorityLock()
        self._answered: dict[str, tuple[float, bytes, str, list[tuple[str, str]], bytes]] = {}
        self.calls: Counter[str] = Counter()
        self.busy: Counter[str] = Counter()
        self.slow_log = slow_log

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == COUNTS_PATH:
            with self._lock.held(0):
                body = json.dumps({"calls": dict(self.calls),
                                   "busy_seconds": {k: round(v, 3) for k, v in self.busy.items()}}).encode()
            start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        operation = str(environ.get("HTTP_X_AMZ_TARGET", "")).rpartition(".")[2] or "other"
        arrived = time.perf_counter()
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        environ["wsgi.input"] = io.BytesIO(body)
        partition = _partition(body) if operation in ("GetItem", "PutItem", "UpdateItem", "Query") else None
        token, items, partitions = _transaction(body) if operation == "TransactWriteItems" else (None, 0, [])
        bulk = items > BULK_ITEMS or (operation == "Query" and str(partition).endswith(WATCH_SUFFIX))
        priority = 0 if partition in LEASE_PARTITIONS else 2 if bulk else 1
        with self._lock.held(priority):
            began = time.perf_counter()
            try:
                if token is None:
                    return list(self._app(environ, start_response))
                return self._idempotent(token, body, environ, start_response)
            finally:
                ended = time.perf_counter()
                self.calls[operation] += 1
                self.busy[operation] += ended - began
                if self.slow_log is not None and ended - arrived >= self.slow_log:
                    print(json.dumps({"event": "dynamodb.slow_request", "time": round(time.time(), 3),
                                      "operation": operation, "partition": partition or partitions or None,
                                      "items": items or None,
                                      "waited": round(began - arrived, 3), "served": round(ended - began, 3)}),
                          file=sys.stderr, flush=True)


    def _idempotent(self, token: str, body: bytes, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        """A TransactWriteItems sent again with its ClientRequestToken (a retry after a lost answer) is answered
        as the first one was, without applying it again, as DynamoDB does for ten minutes; moto ignores the token,
        and the retry of a claim whose first attempt landed would be refused by its own write."""
        now = time.monotonic()
        # Oldest first (insertion order): forget those past the window, not the whole dict rebuilt per request.
        while self._answered and now - next(iter(self._answered.values()))[0] >= IDEMPOTENCY_SECONDS:
            del self._answered[next(iter(self._answered))]
        if token in self._answered and self._answered[token][1] == body:
            _, _, status, headers, answer = self._answered[token]
            start_response(status, headers)
            return [answer]
        captured: dict[str, Any] = {}

        def capture(status: str, headers: list[tuple[str, str]], *args: Any) -> Any:
            captured.update(status=status, headers=headers)
            return start_response(status, headers, *args)

        answer = b"".join(self._app(environ, capture))
        if str(captured.get("status", "")).startswith("200"):
            self._answered.pop(token, None)  # a token sent again with other items: kept as the newest
            self._answered[token] = (now, body, captured["status"], list(captured["headers"]), answer)
        return [answer]


IDEMPOTENCY_SECONDS = 600.0


def _transaction(body: bytes) -> tuple[str | None, int, list[str]]:
    """A TransactWriteItems' ClientRequestToken (None without one), how many items it writes, and the partitions
    they are in (for the slow-request log)."""
    with contextlib.suppress(ValueError, TypeError):
        request = json.loads(body)
        if isinstance(request, dict):
            token = request.get("ClientRequestToken")
            items = request.get("TransactItems")
            items = items if isinstance(items, list) else []
            partitions: set[str] = set()
            for item in items:
                with contextlib.suppress(KeyError, TypeError, AttributeError, StopIteration):
                    action = next(iter(item.values()))
                    partitions.add(str((action.get("Item") or action["Key"])["pk"]["S"]))
            return (None if token is None else str(token)), len(items), sorted(partitions)
    return None, 0, []


@contextlib.asynccontextmanager
async def serving(app: SerialMoto, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
    """``app`` served over HTTP/1.1 with keep-alive (aiohttp) from the running loop: its endpoint URL.

    Each request runs the WSGI app in a worker thread (many: requests wait their turn in ``app``'s priority lock,
    not in the pool). Connections stay open between requests, as DynamoDB's do: werkzeug's server, used before,
    closes each after one answer, so every request of a replica opened a connection, and on a loaded machine
    connects timed out (the replicas' 1 s connect timeout) while its accepting thread waited for the CPU."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from aiohttp import web

    from bench.moto_http import call_wsgi, start_server, wsgi_environ

    loop = asyncio.get_running_loop()
    workers = ThreadPoolExecutor(64, thread_name_prefix="moto")

    async def handle(request: web.Request) -> web.Response:
        environ = wsgi_environ(request, await request.read())
        status, headers, body = await loop.run_in_executor(workers, call_wsgi, app, environ)
        return web.Response(status=status, headers=headers, body=body)

    runner, endpoint_url = await start_server(handle, host, port, handle_signals=False)
    try:
        yield endpoint_url
    finally:
        await runner.cleanup()
        workers.shutdown(wait=False, cancel_futures=True)


async def serve(app: SerialMoto, host: str, port: int) -> None:
    """Serve ``app`` (:func:`serving`) until SIGTERM or SIGINT; print the ready line once listening."""
    import asyncio

    async with serving(app, host, port) as endpoint_url:
        print(json.dumps({"event": "dynamodb.ready", "endpoint_url": endpoint_url}), flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--slow-log", type=float, metavar="SECONDS",
                        help="log (stderr, JSON) each request that took this long, waiting for its turn included")
    args = parser.parse_args(argv)
    moto_speedups.install()
    # No full (oldest-generation) collections: with a fleet's table in memory (12 × 1,000 watched targets, every
    # event and escalation as moto's objects) each took 0.5-0.8 s, while the request holding the lock waited and
    # every other request with it. Young cycles are still collected; this process lives for one run.
    gc.freeze()
    gc.set_threshold(gc.get_threshold()[0], gc.get_threshold()[1], 1_000_000)
    import asyncio

    asyncio.run(serve(SerialMoto(args.slow_log), args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
