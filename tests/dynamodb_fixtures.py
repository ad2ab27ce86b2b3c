"""DynamoDB for the tests: moto in server mode on loopback, started once per test session (per xdist worker), and
one fresh table per test, created by the code under test (``ensure_table``) through a real gateway.

moto's WSGI app serves one request at a time here: DynamoDB applies each request to an item atomically (a
conditional write's check and its write are one step), while moto's in-memory backend, called from several
server threads at once, would interleave them; serialising the requests gives the storage the atomicity it
relies on, so concurrency tests exercise the storage's conditions, not moto's thread safety.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiobotocore.session import get_session
from prometheus_client import CollectorRegistry

from supervisor.clock import SystemClock
from supervisor.config import Settings, parse_settings
from supervisor.metrics import Metrics
from supervisor.storage import Storage
from supervisor.storage.dynamodb_setup import ensure_table
from supervisor.storage.factory import build_storage_gateway, journal_table, open_storage

REGION = "us-east-1"


class MotoServer:
    """moto on 127.0.0.1 (a free port), one request at a time."""

    def __init__(self) -> None:
        # Imported here, not at collection: every xdist worker would pay for moto otherwise.
        from moto.server import create_backend_app
        from werkzeug.serving import WSGIRequestHandler, make_server

        from bench import moto_speedups

        moto_speedups.install()  # the same answers for less CPU (see there)

        class Quiet(WSGIRequestHandler):
            def log(self, type: str, message: str, *args: Any) -> None:
                return None

        app = moto_speedups.Dispatcher(create_backend_app)
        lock = threading.Lock()

        def one_at_a_time(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
            with lock:
                return list(app(environ, start_response))

        self._server = make_server("127.0.0.1", 0, one_at_a_time, threaded=True,
                                                   request_handler=Quiet)
        self.endpoint_url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="moto", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join()
        self._server.server_close()


@pytest.fixture(scope="session")
def moto_dynamodb() -> Iterator[str]:
    """The endpoint of a moto server shared by the session's tests (each uses a table of its own)."""
    server = MotoServer()
    try:
        yield server.endpoint_url
    finally:
        server.stop()


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
    """Create the settings' journal table as setup-dynamodb does."""
    clock = SystemClock()
    async with build_storage_gateway(settings, Metrics(CollectorRegistry()), clock=clock,
                                     session=AWS_SESSION) as gateway:
        return await ensure_table(journal_table(settings, gateway), clock)


@asynccontextmanager
async def dynamodb_storage(settings: Settings, registry: CollectorRegistry | None = None) -> AsyncIterator[Storage]:
    """One replica's storage on the settings' table (its own gateway, as a separate process has)."""
    async with open_storage(settings, metrics=Metrics(registry or CollectorRegistry()), session=AWS_SESSION) as storage:
        yield storage
