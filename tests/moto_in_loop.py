"""moto in server mode, served from the test's event loop, for virtual-time scenarios.

Each request runs moto's WSGI app in an anyio worker thread, which the virtual-time driver waits for, so
moto's work happens within the virtual instant of the request. Requests are applied one at a time: DynamoDB
applies each request to an item atomically (a conditional write's check and its write are one step), which
moto's in-memory backend does not guarantee when several threads call it at once.

:class:`MotoFrontend` is one way in, for one client: ``cut()`` makes it drop every request without an answer
(the connection closes, as when a network path to DynamoDB is lost) until ``restore()``; ``lose_answers()``
makes it apply the next matching requests and then drop their answers (a write that landed although the client
never learns it: its read timed out, the connection broke on the way back); the other frontends, and moto's
state behind them, are not affected.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.to_thread
from aiohttp import web

from bench.moto_http import Answer, call_wsgi, start_server, wsgi_environ


@functools.cache
def _application() -> tuple[Any, threading.Lock]:
    """This process's moto server application (every service) and the lock that applies its requests one at a
    time, built once: moto keeps its state in module-level backends, so a second application would serve the same
    state, and would build its per-service apps again (~10 ms of CPU each, per test)."""
    # Imported here, not at collection: every xdist worker would pay for moto otherwise.
    from moto.server import create_backend_app
    from werkzeug.test import EnvironBuilder

    from bench import moto_speedups

    moto_speedups.install()  # the same answers for less CPU (see there)
    app = moto_speedups.Dispatcher(create_backend_app)
    # Answer one DynamoDB request now: the first one imports moto's DynamoDB backend and builds its app (a second
    # of CPU, several on a loaded machine), which inside a client's real-time read timeout would make the client
    # give up and retry.
    headers = {"X-Amz-Target": "DynamoDB_20120810.ListTables", "Content-Type": "application/x-amz-json-1.0",
               "Authorization": "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/dynamodb/aws4_request, "
                                "SignedHeaders=host, Signature=0"}
    status, _, _ = call_wsgi(app, EnvironBuilder(method="POST", path="/", headers=headers, data=b"{}").get_environ())
    assert status == 200, f"moto's warm-up ListTables answered {status}"
    return app, threading.Lock()


class Moto:
    """moto (all services), applying one request at a time. Every instance is the same moto: the process's
    backends and one application (:func:`_application`)."""

    def __init__(self) -> None:
        self._app, self._lock = _application()

    def call(self, environ: dict[str, Any]) -> Answer:
        with self._lock:
            return call_wsgi(self._app, environ)


class MotoFrontend:
    """An HTTP endpoint in front of a :class:`Moto`; ``endpoint_url`` once started."""

    def __init__(self, moto: Moto) -> None:
        self.moto = moto
        self.endpoint_url = ""
        self.cut_off = False
        self.dropped = 0
        self.lost = 0  # requests applied whose answer was dropped
        self._losing: tuple[Callable[[str, bytes], bool], int] | None = None

    def cut(self) -> None:
        self.cut_off = True

    def restore(self) -> None:
        self.cut_off = False

    def lose_answers(self, when: Callable[[str, bytes], bool], count: int) -> None:
        """Apply the next ``count`` requests for which ``when(operation, body)`` holds (``operation``: the
        ``X-Amz-Target`` action, e.g. ``TransactWriteItems``), then close their connections without an answer."""
        self._losing = (when, count)

    def _loses(self, operation: str, body: bytes) -> bool:
        if self._losing is None or not self._losing[0](operation, body):
            return False
        when, count = self._losing
        self._losing = (when, count - 1) if count > 1 else None
        return True

    @staticmethod
    def _drop(request: web.Request) -> web.StreamResponse:
        if request.transport is not None:
            request.transport.close()  # no answer: the client sees the connection drop
        raise web.HTTPServiceUnavailable()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if self.cut_off:
            self.dropped += 1
            return self._drop(request)
        lose = self._loses(request.headers.get("X-Amz-Target", "").rpartition(".")[2], body)
        status, answer_headers, payload = await anyio.to_thread.run_sync(self.moto.call, wsgi_environ(request, body))
        if lose:
            self.lost += 1
            return self._drop(request)
        return web.Response(status=status, headers=answer_headers, body=payload)

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[MotoFrontend]:
        runner, self.endpoint_url = await start_server(self._handle)
        try:
            yield self
        finally:
            await runner.cleanup()


@asynccontextmanager
async def moto_in_loop() -> AsyncIterator[str]:
    """One moto, one frontend: its endpoint URL."""
    async with MotoFrontend(Moto()).serving() as frontend:
        yield frontend.endpoint_url
