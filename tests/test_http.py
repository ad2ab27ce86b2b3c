"""The daemon's HTTP endpoint, through real HTTP requests to a daemon running in virtual time."""

from __future__ import annotations

import platform

import aiohttp

from supervisor import __version__
from tests.virtual_fixtures import VirtualWorld


async def get_text(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        return response.status, await response.text()


async def test_metrics_say_which_version_runs_on_which_python(virtual_world: VirtualWorld) -> None:
    async with virtual_world.daemon() as service:
        status, body = await get_text(f"{service.http_url}/metrics")
    assert status == 200
    assert (f'athena_supervisor_build_info{{python="{platform.python_version()}",version="{__version__}"}} 1.0'
            in body.splitlines())
