"""DynamoDB for the tests: moto in server mode on loopback, started once per test session (per xdist worker), and
one fresh table per test, created by the code under test (``ensure_table``) through a real gateway.

The server answers one request at a time: DynamoDB applies each request to an item atomically (a conditional
write's check and its write are one step), while moto's in-memory backend, called from several threads at once,
would interleave them; serialising the requests gives the storage the atomicity it relies on, so concurrency tests
exercise the storage's conditions, not moto's thread safety.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest
from aiobotocore.session import get_session
from aiohttp import web
from prometheus_client import CollectorRegistry

from bench.moto_http import start_server, wsgi_environ
from supervisor.clock import SystemClock
from supervisor.config import Settings, parse_settings
from supervisor.gateway import Gateway
from supervisor.metrics import Metrics
from supervisor.storage import Storage
from supervisor.storage.dynamodb_setup import ensure_table
from supervisor.storage.factory import build_storage_gateway, journal_table, open_storage
from tests.moto_in_loop import Moto

REGION = "us-east-1"


class MotoServer:
    """moto on 127.0.0.1 (a free port), served by aiohttp from a thread and an event loop of its own, one request
    at a time (moto's application runs in that loop's thread, under :class:`Moto`'s lock).

    Not werkzeug's threaded server: it closes the connection after every answer, so each request paid for a new
    TCP connection on both sides and a new server thread (~8 ms of CPU per request in all, ~3.5 ms here, where a
    gateway's connections are kept alive). Its own thread and loop, not the test's: a test may block its loop
    while another replica, on a loop of its own in another thread, calls DynamoDB (a race between two replicas).
    """

    def __init__(self) -> None:
        self._moto = Moto()  # built, and its DynamoDB warmed up, before the first test's request
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._gateways: dict[str, Gateway] = {}  # by region: the tables' maker (see create_table)
        self._closing = AsyncExitStack()
        self.endpoint_url = ""
        self._thread = threading.Thread(target=self._loop.run_forever, name="moto", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result()

    async def _start(self) -> None:
        self._runner, self.endpoint_url = await start_server(self._handle)

    async def _handle(self, request: web.Request) -> web.Response:
        # In this loop's thread, not a worker's: the loop serves nothing else, and a thread hop per request costs.
        status, answer_headers, payload = self._moto.call(wsgi_environ(request, await request.read()))
        return web.Response(status=status, headers=answer_headers, body=payload)

    async def create_table(self, settings: Settings) -> list[str]:
        """Create the settings' journal table as setup-dynamodb does (``ensure_table``, through a gateway), on this
        server's loop (awaited from the caller's). One gateway there makes every test's table: each test's own would
        make a botocore client (~10 ms of CPU) and, at the first not-found answer, its table of error shapes (~6 ms),
        for five calls."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._create_table(settings), self._loop))

    async def _create_table(self, settings: Settings) -> list[str]:
        region = settings.journal.dynamodb_region(settings.aws)
        clock = SystemClock()
        if region not in self._gateways:
            self._gateways[region] = await self._closing.enter_async_context(build_storage_gateway(
                settings, Metrics(CollectorRegistry()), clock=clock, session=AWS_SESSION))
        return await ensure_table(journal_table(settings, self._gateways[region]), clock)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._closing.aclose(), self._loop).result()
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()


@pytest.fixture(scope="session")
def moto_dynamodb() -> Iterator[str]:
    """The endpoint of a moto server shared by the session's tests (each uses a table of its own)."""
    server = MotoServer()
    SERVERS[server.endpoint_url] = server
    try:
        yield server.endpoint_url
    finally:
        del SERVERS[server.endpoint_url]
        server.stop()


SERVERS: dict[str, MotoServer] = {}
"""The running servers by endpoint URL (the fixture gives the tests the URL)."""


# One aiobotocore session for every gateway of the tests: a session loads botocore's service models once
# (a new one takes ~0.2 s to make its first DynamoDB client, a known one ~15 ms).
AWS_SESSION = get_session()


def dynamodb_settings(endpoint_url: str, table: str, **journal: Any) -> Settings:
    return parse_settings({"aws": {"region": REGION, "max_attempts": 2},
                           "journal": {"backend": "dynamodb", "table": table, "endpoint_url": endpoint_url,
                                       **journal}}, environ={})


def new_table_name() -> str:
    return f"journal-{uuid.uuid4().hex[:12]}"


async def create_table(settings: Settings) -> list[str]:
    """Create the settings' journal table as setup-dynamodb does, on the session's moto (``moto_dynamodb``)."""
    server = SERVERS.get(settings.journal.endpoint_url or "")
    assert server is not None, f"{settings.journal.endpoint_url} is not the moto_dynamodb fixture's endpoint"
    return await server.create_table(settings)


@asynccontextmanager
async def dynamodb_storage(settings: Settings, registry: CollectorRegistry | None = None) -> AsyncIterator[Storage]:
    """One replica's storage on the settings' table (its own gateway, as a separate process has)."""
    async with open_storage(settings, metrics=Metrics(registry or CollectorRegistry()), session=AWS_SESSION) as storage:
        yield storage
