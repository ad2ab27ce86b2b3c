"""The emulator's HTTP server: ``POST /`` (AWS JSON 1.1) plus the control API, in the current event loop."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from types import TracebackType

import structlog
from aiohttp import web

from athena_spark_emulator import sts
from athena_spark_emulator.backend import Backend
from athena_spark_emulator.callers import DEFAULT_ACCOUNT, DEFAULT_REGION, RequestInfo
from athena_spark_emulator.clock import Clock, SystemClock
from athena_spark_emulator.control import PREFIX, ControlApi
from athena_spark_emulator.control_events import EventControlApi
from athena_spark_emulator.events import EventPublisher
from athena_spark_emulator.faults import Faults
from athena_spark_emulator.fleet import Fleet
from athena_spark_emulator.protocol import CONTENT_TYPE


class Emulator:
    """A wire-compatible Athena for Apache Spark endpoint, as an async context manager.

    ``async with Emulator(port=0) as emu:`` then point any AWS SDK at ``emu.endpoint_url``.

    Args:
        host: the loopback address to bind.
        port: the TCP port (0 picks a free one).
        workgroups: Spark workgroups (``PySpark engine version 3``, ENABLED) of the default account-region.
        throttle_tps: throttle every operation to this many requests/s (global fault of every account-region).
        account_id / region: the default account-region: requests whose credentials name no account belong
            to the default account, requests without a SigV4 scope to the default region.
        clock: time source (default wall clock); see :class:`~athena_spark_emulator.clock.ManualClock`. With
            an ``async sleep(seconds)`` method, injected latency waits on it (virtual time).
        faults: fault registry (inject one with a seeded RNG for reproducible error rates).
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, workgroups: Sequence[str] = (),
                 throttle_tps: float | None = None, account_id: str = DEFAULT_ACCOUNT,
                 region: str = DEFAULT_REGION, clock: Clock | None = None, faults: Faults | None = None,
                 logger: structlog.typing.FilteringBoundLogger | None = None) -> None:
        self.host = host
        self.port = port
        self.account_id = account_id
        self.region = region
        self._log = logger or structlog.get_logger("athena_spark_emulator")
        self.fleet = Fleet(clock=clock or SystemClock(), account_id=account_id, region=region,
                           workgroups=workgroups, throttle_tps=throttle_tps, faults=faults, logger=self._log)
        self._runner: web.AppRunner | None = None

    @property
    def backend(self) -> Backend:
        """The default account-region (store, faults; ``backend.audit`` is the whole emulator's audit log)."""
        return self.fleet.default

    @property
    def events(self) -> EventPublisher:
        """The CloudTrail event publisher (``await emu.events.configure(EventSettings.from_json({...}))``)."""
        return self.fleet.events

    def backend_for(self, account: str | None = None, region: str | None = None) -> Backend:
        """An account-region (each defaults to the default one), created on first use."""
        return self.fleet.backend(account, region)

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def control_url(self) -> str:
        return f"{self.endpoint_url}{PREFIX}"

    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.add_routes([web.post("/", self._api)])
        app.add_routes(ControlApi(self.fleet, logger=self._log).routes())
        app.add_routes(EventControlApi(self.fleet).routes())
        return app

    async def _api(self, request: web.Request) -> web.Response:
        """``POST /``: Athena (AWS JSON 1.1, ``X-Amz-Target``) or STS (Query protocol, a form body)."""
        raw = await request.read()
        headers = request.headers
        target = headers.get("X-Amz-Target")
        authorization, token = headers.get("Authorization"), headers.get("X-Amz-Security-Token")
        if target is None and request.content_type == sts.FORM_CONTENT_TYPE:
            status, body, _ = await self.fleet.call_sts(raw, authorization=authorization, security_token=token)
            return web.Response(body=body, status=status, content_type=sts.XML_CONTENT_TYPE)
        info = RequestInfo(str(uuid.uuid4()), headers.get("User-Agent", ""), request.remote or "127.0.0.1")
        status, body, _ = await self.fleet.call(target, raw, authorization=authorization, security_token=token,
                                                request=info)
        return web.Response(body=body, status=status, content_type=CONTENT_TYPE,
                            headers={"x-amzn-RequestId": info.request_id})

    async def start(self) -> None:
        """Bind and serve; afterwards ``port`` holds the bound port.

        ``handler_cancellation=False`` (aiohttp's default, stated so it stays): a client that disconnects
        mid-request does not cancel its processing, so a StopCalculationExecution whose caller timed out
        still takes effect, as on AWS.
        """
        runner = web.AppRunner(self.build_app(), access_log=None, handle_signals=False,
                               handler_cancellation=False)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        await site.start()
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        self._log.info("emulator.started", endpoint_url=self.endpoint_url)

    async def close(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
            await self.fleet.events.close()  # pending events are discarded
            self._log.info("emulator.stopped", endpoint_url=self.endpoint_url)

    async def __aenter__(self) -> Emulator:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()
