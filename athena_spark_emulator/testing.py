"""pytest plugin: ``pytest_plugins = ["athena_spark_emulator.testing"]``.

Fixtures:
    emulator: a fresh thread-backed emulator per test; an :class:`EmulatorHandle` with ``endpoint_url``,
        ``control_url`` and the :class:`~athena_spark_emulator.client.ControlClient` methods; its clients
        may act as another account and/or region (``boto3_client(account=..., region=...)``).
    emulator_factory: ``emulator_factory(**Emulator kwargs)`` starts more (e.g. with a ManualClock); all
        are stopped after the test.
    emulator_clock / manual_emulator: a ManualClock and an emulator driven by it (workgroup ``spark``).
    emulator_server: one emulator shared by the whole test session (reset it if you need a clean slate).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest

from athena_spark_emulator.client import ControlClient
from athena_spark_emulator.clock import ManualClock
from athena_spark_emulator.shapecheck import check_output
from athena_spark_emulator.thread import EmulatorThread


class EmulatorHandle(ControlClient):
    """A running emulator as tests see it: URLs plus the sync control client."""

    def __init__(self, thread: EmulatorThread) -> None:
        super().__init__(thread.control_url)
        self.thread = thread
        self.endpoint_url = thread.endpoint_url
        self.account_id = thread.account_id
        self.region = thread.region

    def client_kwargs(self, *, account: str | None = None, region: str | None = None,
                      credentials: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Keyword arguments for ``boto3.client("athena", **...)`` / aiobotocore ``create_client``.

        Args:
            account: sign with this 12-digit access key id, so calls land in that account (default: an
                access key that maps to the emulator's default account).
            region: sign for this region (default: the emulator's default region).
            credentials: sign with these (``AccessKeyId``, ``SecretAccessKey``, ``SessionToken``, as
                AssumeRole answers them) instead; they decide the account.
        """
        kwargs = {"endpoint_url": self.endpoint_url, "region_name": region or self.region,
                  "aws_access_key_id": account or "testing", "aws_secret_access_key": "testing"}
        if credentials is not None:
            kwargs.update(aws_access_key_id=credentials["AccessKeyId"],
                          aws_secret_access_key=credentials["SecretAccessKey"],
                          aws_session_token=credentials["SessionToken"])
        return kwargs

    def boto3_client(self, service: str = "athena", *, parameter_validation: bool = True, check_shapes: bool = True,
                     account: str | None = None, region: str | None = None,
                     credentials: Mapping[str, Any] | None = None) -> Any:
        """A boto3 client (Athena, or ``sts``) on this emulator, without retries (errors surface at once).

        With ``check_shapes`` every successful response is checked against botocore's output shape.
        ``account``, ``region`` and ``credentials`` are those of :meth:`client_kwargs`.
        """
        import boto3
        from botocore.config import Config

        # No proxies (the emulator is on loopback): botocore looks for them by iterating os.environ, which the test
        # suite's background scenarios, creating clients in threads, do while pytest sets and deletes a variable.
        client = boto3.client(service, config=Config(
            parameter_validation=parameter_validation, retries={"mode": "standard", "total_max_attempts": 1},
            proxies={},
        ), **self.client_kwargs(account=account, region=region, credentials=credentials))
        if check_shapes:
            client.meta.events.register(f"after-call.{client.meta.service_model.service_id.hyphenize()}",
                                        check_after_call)
        return client


def check_after_call(http_response: Any, parsed: dict[str, Any], model: Any, **_: Any) -> None:
    """botocore ``after-call`` hook: check a successful response against its output shape."""
    if http_response.status_code == 200:
        check_output(model, parsed)


EmulatorFactory = Callable[..., EmulatorHandle]


@pytest.fixture
def emulator_factory() -> Iterator[EmulatorFactory]:
    started: list[EmulatorThread] = []

    def start(**kwargs: Any) -> EmulatorHandle:
        thread = EmulatorThread(**kwargs)
        thread.start()
        started.append(thread)
        return EmulatorHandle(thread)

    try:
        yield start
    finally:
        for thread in reversed(started):
            thread.stop()


@pytest.fixture
def emulator(emulator_factory: EmulatorFactory) -> EmulatorHandle:
    return emulator_factory()


@pytest.fixture
def emulator_clock() -> ManualClock:
    """A :class:`ManualClock` for :func:`manual_emulator`; time moves only with ``advance()``."""
    return ManualClock()


@pytest.fixture
def manual_emulator(emulator_factory: EmulatorFactory, emulator_clock: ManualClock) -> EmulatorHandle:
    """An emulator on ``emulator_clock`` with the Spark workgroup ``spark``: deterministic lifecycles."""
    return emulator_factory(clock=emulator_clock, workgroups=["spark"])


@pytest.fixture(scope="session")
def emulator_server() -> Iterator[EmulatorHandle]:
    with EmulatorThread() as thread:
        yield EmulatorHandle(thread)
