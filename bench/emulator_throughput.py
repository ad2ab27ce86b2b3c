"""Throughput of the Athena emulator at scale: 10,000 sessions / 20,000 calculations, mixed read load.

Starts ``python -m supervisor emulator --port 0`` in a subprocess pinned to one core (when the OS allows),
populates it through the control API, then drives GetSession, GetCalculationExecution, ListSessions
(pages, following NextToken) and ListCalculationExecutions from this process (pinned to another core)
with raw AWS JSON 1.1 requests, so the number measures the server rather than a client SDK.

Usage: python bench/emulator_throughput.py [--duration 10] [--concurrency 16] [--sessions 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
HEADERS = {
    "Content-Type": "application/x-amz-json-1.1",
    "Authorization": "AWS4-HMAC-SHA256 Credential=bench/20260101/us-east-1/athena/aws4_request, "
                     "SignedHeaders=host;x-amz-date;x-amz-target, Signature=0",
    "X-Amz-Date": "20260101T000000Z",
}


def start_server(pin: bool) -> tuple[subprocess.Popen[str], str, str]:
    command = [sys.executable, "-m", "supervisor", "emulator", "--port", "0"]
    if pin and shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        command = ["taskset", "-c", "0", *command]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               text=True)
    assert process.stdout is not None
    ready = json.loads(process.stdout.readline())
    return process, ready["endpoint_url"], ready["control_url"]


def populate(control_url: str, sessions: int, workgroups: int) -> dict[str, Any]:
    per_group = sessions // workgroups
    spec = {
        "workgroups": [{"name": f"bench-{index}", "tags": {"team": f"t{index}"}}
                       for index in range(workgroups)],
        "sessions": [{
            "workgroup": f"bench-{index}", "count": per_group, "started_ago": "120s",
            "description": "# sim: start=1s",
            "calculations": [{"code": "# sim: runtime=60s dpus=4", "submitted_ago": "100s"},
                             {"code": "# sim: runtime=3600s dpus=2 on_stop=ignore", "submitted_ago": "90s"}],
        } for index in range(workgroups)],
    }
    request = urllib.request.Request(f"{control_url}/populate", data=json.dumps(spec).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=600) as response:
        result: dict[str, Any] = json.loads(response.read())
    return result


async def drive(endpoint: str, created: dict[str, Any], workgroups: int, duration: float,
                concurrency: int, seed: int) -> tuple[list[float], dict[str, int], float]:
    rng = random.Random(seed)
    session_ids = [s["SessionId"] for s in created["sessions"]]
    calc_ids = [c for s in created["sessions"] for c in s["CalculationExecutionIds"]]
    latencies: list[float] = []
    counts: dict[str, int] = {}
    tokens: dict[str, str | None] = {}
    deadline = time.perf_counter() + duration

    def next_request() -> tuple[str, dict[str, Any]]:
        roll = rng.random()
        if roll < 0.4:
            return "GetSession", {"SessionId": rng.choice(session_ids)}
        if roll < 0.7:
            return "GetCalculationExecution", {"CalculationExecutionId": rng.choice(calc_ids)}
        if roll < 0.85:
            group = f"bench-{rng.randrange(workgroups)}"
            body: dict[str, Any] = {"WorkGroup": group, "MaxResults": 50}
            if tokens.get(group):
                body["NextToken"] = tokens[group]
            return "ListSessions", body
        return "ListCalculationExecutions", {"SessionId": rng.choice(session_ids)}

    async def worker(http: aiohttp.ClientSession) -> None:
        while time.perf_counter() < deadline:
            operation, body = next_request()
            begin = time.perf_counter()
            headers = {**HEADERS, "X-Amz-Target": f"AmazonAthena.{operation}"}
            async with http.post(endpoint, data=json.dumps(body), headers=headers) as response:
                payload = await response.read()
                status = response.status
            latencies.append(time.perf_counter() - begin)
            key = operation if status == 200 else f"{operation}:{status}"
            counts[key] = counts.get(key, 0) + 1
            if operation == "ListSessions" and status == 200:
                tokens[body["WorkGroup"]] = json.loads(payload).get("NextToken")

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:
        started = time.perf_counter()
        await asyncio.gather(*(worker(http) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return latencies, counts, elapsed


def percentile(sorted_values: list[float], fraction: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(fraction * len(sorted_values)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load (default 10)")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight (default 16)")
    parser.add_argument("--sessions", type=int, default=10_000, help="sessions, 2 calculations each")
    parser.add_argument("--workgroups", type=int, default=10)
    parser.add_argument("--no-pin", action="store_true", help="do not pin server/client to cores")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    pin = not args.no_pin and hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1
    process, endpoint, control = start_server(pin)
    try:
        if pin:
            os.sched_setaffinity(process.pid, {0})  # also covers platforms without taskset
            os.sched_setaffinity(0, {1})
        begin = time.perf_counter()
        created = populate(control, args.sessions, args.workgroups)
        populate_seconds = time.perf_counter() - begin
        calcs = sum(len(s["CalculationExecutionIds"]) for s in created["sessions"])
        latencies, counts, elapsed = asyncio.run(
            drive(endpoint, created, args.workgroups, args.duration, args.concurrency, args.seed))
    finally:
        process.terminate()
        process.wait(timeout=10)
    latencies.sort()
    result = {
        "sessions": len(created["sessions"]), "calculations": calcs,
        "populate_seconds": round(populate_seconds, 2),
        "server_pinned_to_one_core": pin, "concurrency": args.concurrency, "requests": len(latencies),
        "seconds": round(elapsed, 2), "requests_per_second": round(len(latencies) / elapsed, 1),
        "latency_ms": {name: round(percentile(latencies, q) * 1000, 2)
                       for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0))},
        "by_operation": counts,
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
