"""bench/zygote.py: what the zygote parses before its first fork is everything the daemon's clients would parse in
each copy."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from aiobotocore.config import AioConfig
from botocore.loaders import JSONFileLoader, Loader

from bench.zygote import WARM_SERVICES, warm
from supervisor.gateway import _shared_loader, new_session


class Reading(JSONFileLoader):
    """botocore's file loader, keeping the path of every file it parses."""

    def __init__(self) -> None:
        self.read: list[str] = []

    def load_file(self, file_path: str) -> Any:
        self.read.append(file_path)
        return super().load_file(file_path)


def test_making_the_daemons_clients_parses_nothing_the_zygote_has_not() -> None:
    files = Reading()
    loader = warm(Loader(file_loader=files))
    warmed = len(files.read)
    assert warmed > 0

    async def make_clients() -> None:
        session = new_session()
        session.register_component("data_loader", loader)
        config = AioConfig(retries={"mode": "standard", "total_max_attempts": 1}, user_agent="test")
        for service in WARM_SERVICES:
            async with session.create_client(service, region_name="us-east-1", endpoint_url="http://127.0.0.1:9",
                                             config=config):
                pass

    anyio.run(make_clients)
    assert files.read[warmed:] == []


def test_by_default_it_warms_the_loader_every_session_of_the_process_shares() -> None:
    shared = new_session().get_component("data_loader")
    assert shared is _shared_loader(None)  # no AWS_DATA_PATH in the tests' environment
    assert warm() is shared


def test_it_warms_nothing_and_does_not_fail_where_the_environment_names_a_missing_profile(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_PROFILE", "no-such-profile")
    assert warm() is None
