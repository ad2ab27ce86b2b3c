"""The operator HTTP endpoint: ``/metrics`` (Prometheus), ``/healthz`` (process alive), ``/readyz``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

Readiness = Callable[[], tuple[bool, str]]


def build_app(registry: CollectorRegistry, readiness: Readiness) -> web.Application:
    async def metrics(_: web.Request) -> web.Response:
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        ready, reason = readiness()
        return web.json_response({"ready": ready, "reason": reason}, status=200 if ready else 503)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


@asynccontextmanager
async def serving(registry: CollectorRegistry, readiness: Readiness, host: str, port: int) -> AsyncIterator[str]:
    """Serve until the block exits; yields the base URL (``port=0`` picks a free port)."""
    runner = web.AppRunner(build_app(registry, readiness), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    try:
        bound_port = runner.addresses[0][1] if runner.addresses else port
        yield f"http://{host}:{bound_port}"
    finally:
        await runner.cleanup()
