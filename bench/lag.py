"""Enforcement lag of the daemon on a small workload: crossing instant → Stop/Terminate call seen by Athena.

Starts the emulator (in a thread) and the daemon (in this event loop), submits calculations whose
runtime-limit crossings are spread over the run, half of them ignoring the Stop (so their sessions are
terminated after stop_grace), then reads the emulator's audit log: for each calculation the lag is the
time of its StopCalculationExecution call minus (SubmissionDateTime + max_runtime).

Usage (after `pip install -e .`):
    python bench/lag.py [--calculations 40] [--spread 10] [--warmup 2] [--limit 30] [--tps 50]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from datetime import datetime
from typing import Any

import anyio
import boto3
from botocore.config import Config
from prometheus_client import CollectorRegistry

from athena_spark_emulator import ControlClient, EmulatorThread
from supervisor.config import parse_settings
from supervisor.logs import configure_logging
from supervisor.service import running_service


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    with EmulatorThread(workgroups=("etl-bench",)) as emulator, tempfile.TemporaryDirectory() as tmp:
        athena = boto3.client("athena", endpoint_url=emulator.endpoint_url, region_name="us-east-1",
                              config=Config(retries={"mode": "standard", "total_max_attempts": 1}))
        # Submissions are backdated through populate so crossings land evenly over the spread.
        spec = {"sessions": [{
            "workgroup": "etl-bench", "count": 1, "description": "# sim: start=0s", "started_ago": "60s",
            "calculations": [{
                "code": f"# sim: runtime=600s dpus=2 on_stop={'ignore' if i % 2 else 'honor'}",
                # Crossing i lands `warmup + (i + 1) * spread / n` seconds after the start.
                "submitted_ago": f"{args.limit - args.warmup - (i + 1) * args.spread / args.calculations:.3f}s",
            }],
        } for i in range(args.calculations)]}
        control = ControlClient(emulator.control_url)
        created = control.populate(spec)
        calculation_ids = [cid for s in created["sessions"] for cid in s["CalculationExecutionIds"]]
        settings = parse_settings({
            "aws": {"endpoint_url": emulator.endpoint_url, "account_id": "123456789012",
                    "max_requests_per_second": args.tps},
            "workgroups": ["etl-*"], "discovery_interval": "2s", "journal": {"path": f"{tmp}/journal.db"},
            "http": {"port": 0}, "log_level": "error",
            "escalation": {"stop_grace": "2s", "terminate_grace": "5s"},
            "safety": {"max_actions_per_minute": 10_000, "circuit_breaker_fraction": 1.0},
            "policies": [{"name": "bench", "workgroups": ["etl-*"],
                          "calculation": {"max_runtime": f"{args.limit}s"}}],
        }, environ={})
        async with running_service(settings, registry=CollectorRegistry()):
            await anyio.sleep(args.warmup + args.spread + 4)
        submitted = {
            cid: athena.get_calculation_execution(CalculationExecutionId=cid)["Status"]["SubmissionDateTime"]
            for cid in calculation_ids
        }
        calls = control.calls()

    def at(call: dict[str, Any]) -> datetime:
        return datetime.fromisoformat(call["time"].replace("Z", "+00:00"))

    stops = {c["request"]["CalculationExecutionId"]: at(c) for c in calls
             if c["operation"] == "StopCalculationExecution" and c["status"] == 200}
    lags = [(stops[cid] - submitted[cid]).total_seconds() - args.limit for cid in calculation_ids if cid in stops]
    terminates = sum(1 for c in calls if c["operation"] == "TerminateSession" and c["status"] == 200)
    by_operation: dict[str, int] = {}
    for call in calls:
        by_operation[call["operation"]] = by_operation.get(call["operation"], 0) + 1
    return {
        "calculations": len(calculation_ids), "stopped": len(stops), "missed": len(calculation_ids) - len(stops),
        "terminated_sessions": terminates,
        "lag_p50_ms": round(statistics.median(lags) * 1000, 1), "lag_p99_ms": round(percentile(lags, 0.99) * 1000, 1),
        "lag_max_ms": round(max(lags) * 1000, 1), "api_calls": by_operation,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calculations", type=int, default=40)
    parser.add_argument("--spread", type=float, default=10.0, help="seconds over which crossings are spread")
    parser.add_argument("--limit", type=float, default=30.0, help="max_runtime in seconds")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before the first crossing")
    parser.add_argument("--tps", type=float, default=50.0, help="the daemon's max_requests_per_second")
    args = parser.parse_args()
    if args.limit < args.warmup + args.spread:
        parser.error("--limit must be at least --warmup + --spread (submissions are backdated, never future)")
    configure_logging("error")
    result = anyio.run(measure, args)
    for key, value in result.items():
        print(f"{key:>20}: {value}")


if __name__ == "__main__":
    main()
