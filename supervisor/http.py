"""The operator HTTP endpoint: ``/metrics`` (Prometheus), ``/healthz`` (process alive), ``/readyz``, ``/status``
(what the daemon is doing now, JSON), and, only when ``http.enable_lifecycle`` is on (as in Prometheus), the
``POST /-/reload`` and ``POST /-/breaker/reset`` lifecycle endpoints."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

Readiness = Callable[[], tuple[bool, str]]
Details = Callable[[], dict[str, Any]]
Status = Callable[[], dict[str, Any]]
Action = Callable[[], Awaitable[tuple[int, dict[str, Any]]]]


@dataclass(frozen=True, slots=True)
class Operations:
    """What the endpoint exposes beyond metrics and health: the status document, and the lifecycle actions
    (each answers an HTTP status and a JSON body), served only when ``lifecycle`` is on."""

    status: Status | None = None
    # Shown by /readyz beside readiness (the event path: its last message, delivery lag and queue depth).
    readiness_details: Details | None = None
    reload: Action | None = None
    breaker_reset: Action | None = None
    lifecycle: bool = False


LIFECYCLE_OFF = {"error": "lifecycle endpoints are off; set http.enable_lifecycle: true, or send the daemon SIGHUP"}


def build_app(registry: CollectorRegistry, readiness: Readiness,
              operations: Operations | None = None) -> web.Application:
    operations = operations or Operations()

    async def metrics(_: web.Request) -> web.Response:
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        ready, reason = readiness()
        body: dict[str, Any] = {"ready": ready, "reason": reason}
        if operations.readiness_details is not None:
            body.update(operations.readiness_details())
        return web.json_response(body, status=200 if ready else 503)

    async def status(_: web.Request) -> web.Response:
        if operations.status is None:
            raise web.HTTPNotFound()
        return web.json_response(operations.status())

    def lifecycle(action: Action | None) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(_: web.Request) -> web.Response:
            if action is None:
                raise web.HTTPNotFound()
            if not operations.lifecycle:
                return web.json_response(LIFECYCLE_OFF, status=403)
            code, body = await action()
            return web.json_response(body, status=code)

        return handle

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/status", status)
    app.router.add_post("/-/reload", lifecycle(operations.reload))
    app.router.add_post("/-/breaker/reset", lifecycle(operations.breaker_reset))
    return app


@asynccontextmanager
async def serving(registry: CollectorRegistry, readiness: Readiness, host: str, port: int,
                  operations: Operations | None = None) -> AsyncIterator[str]:
    """Serve until the block exits; yields the base URL (``port=0`` picks a free port)."""
    runner = web.AppRunner(build_app(registry, readiness, operations), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    try:
        bound_port = runner.addresses[0][1] if runner.addresses else port
        yield f"http://{host}:{bound_port}"
    finally:
        await runner.cleanup()
