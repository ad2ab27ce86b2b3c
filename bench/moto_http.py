"""moto's WSGI application behind aiohttp: one way to serve it, for the tests' moto (``tests/moto_in_loop.py``,
``tests/dynamodb_fixtures.py``) and the fleet harness's DynamoDB server (``bench/dynamodb_server.py``).

aiohttp rather than werkzeug's server: it keeps connections open between requests, as DynamoDB does (werkzeug's
closes each after one answer, so every request paid for a connection and a server thread). werkzeug is imported
only when a request is served: a process that never serves one does not pay for it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

# Headers about one connection, not the request: aiohttp and werkzeug each set their own.
HOP_BY_HOP = frozenset({"content-length", "transfer-encoding", "connection"})
MAX_BODY = 64 * 1024 * 1024  # bytes: a watch list saved in one transaction is far below it

Answer = tuple[int, list[tuple[str, str]], bytes]


def wsgi_environ(request: web.Request, body: bytes) -> dict[str, Any]:
    """``request`` (its ``body`` read) as the WSGI environ moto's application takes."""
    from werkzeug.test import EnvironBuilder

    headers = [(k, v) for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP]
    environ: dict[str, Any] = EnvironBuilder(method=request.method, path=request.path,
                                             query_string=request.query_string, headers=headers,
                                             data=body).get_environ()
    return environ


def call_wsgi(app: Any, environ: dict[str, Any]) -> Answer:
    """``app``'s answer to ``environ``: status code, headers (not the hop-by-hop ones) and body."""
    from werkzeug.test import run_wsgi_app

    chunks, status, headers = run_wsgi_app(app, environ, buffered=True)
    return (int(status.split()[0]), [(k, v) for k, v in headers.items() if k.lower() not in HOP_BY_HOP],
            b"".join(chunks))


async def start_server(handle: Callable[[web.Request], Awaitable[web.StreamResponse]], host: str = "127.0.0.1",
                       port: int = 0, **runner_options: Any) -> tuple[web.AppRunner, str]:
    """Serve every path and method with ``handle`` on ``host:port`` (0: a free port); the runner (``cleanup()``
    stops it) and the endpoint URL."""
    app = web.Application(client_max_size=MAX_BODY)
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None, **runner_options)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner, f"http://{host}:{runner.addresses[0][1]}"
