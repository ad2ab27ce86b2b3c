"""The reference: the fixed-interval boto3 poller a user would write in an afternoon.

Every ``--interval`` (default 60 s, measured from sweep start to sweep start; back to back when a sweep
takes longer) it walks everything, one call after another:

    ListWorkGroups → ListSessions (each active state) → ListCalculationExecutions per session
    → GetCalculationExecution per live calculation → StopCalculationExecution when over a limit

and, to be fair to it, it escalates like the supervisor: a calculation it stopped that is still live
``--stop-grace`` after its Stop gets a TerminateSession on its session (once). Throttling is left to
botocore's standard retry mode (``--max-attempts`` attempts per call); a call that still fails is logged
and that session is skipped until the next sweep. Written honestly, as the baseline of
``bench/enforcement.py``; not part of the product.

Limits come as ``--limit GLOB:RULE=VALUE`` (first matching glob wins), for example
``--limit 'etl-*:max_runtime=1800' --limit 'ml-*:max_dpu_hours=2'`` (runtime in seconds, counted from
SubmissionDateTime like the supervisor does).

Usage: python bench/baseline_naive.py --endpoint-url URL [--interval 60] [--stop-grace 10] --limit ...
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import signal
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

ACTIVE_SESSION_STATES = ("CREATING", "CREATED", "IDLE", "BUSY", "DEGRADED")
LIVE_CALCULATION_STATES = {"CREATING", "CREATED", "QUEUED", "RUNNING", "CANCELING"}

running = True


def log(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, "time": datetime.now(UTC).isoformat(), **fields}), file=sys.stderr,
          flush=True)


def pages(call: Any, result_key: str, **params: Any) -> Iterator[dict[str, Any]]:
    """Follow NextToken (botocore has no paginators for these operations)."""
    while True:
        response = call(**params)
        yield from response.get(result_key, [])
        token = response.get("NextToken")
        if not token:
            return
        params["NextToken"] = token


def parse_limits(specs: list[str]) -> list[tuple[str, dict[str, float]]]:
    limits: list[tuple[str, dict[str, float]]] = []
    for spec in specs:
        glob, _, rule = spec.partition(":")
        name, _, value = rule.partition("=")
        if name not in ("max_runtime", "max_dpu_hours"):
            raise SystemExit(f"--limit {spec!r}: rule must be max_runtime or max_dpu_hours")
        for existing_glob, rules in limits:
            if existing_glob == glob:
                rules[name] = float(value)
                break
        else:
            limits.append((glob, {name: float(value)}))
    return limits


def limits_for(limits: list[tuple[str, dict[str, float]]], workgroup: str) -> dict[str, float] | None:
    return next((rules for glob, rules in limits if fnmatch.fnmatchcase(workgroup, glob)), None)


class NaivePoller:
    def __init__(self, client: Any, limits: list[tuple[str, dict[str, float]]], stop_grace: float) -> None:
        self.client = client
        self.limits = limits
        self.stop_grace = stop_grace
        self.stopped_at: dict[str, float] = {}  # calculation id -> when we sent Stop
        self.terminated: set[str] = set()

    def sweep(self) -> None:
        workgroups = [wg["Name"] for wg in pages(self.client.list_work_groups, "WorkGroups", MaxResults=50)]
        for workgroup in workgroups:
            rules = limits_for(self.limits, workgroup)
            if rules is None or not running:
                continue
            for state in ACTIVE_SESSION_STATES:
                try:
                    sessions = list(pages(self.client.list_sessions, "Sessions", WorkGroup=workgroup,
                                          StateFilter=state, MaxResults=100))
                except (ClientError, BotoCoreError) as error:
                    log("list_sessions.failed", workgroup=workgroup, error=str(error))
                    continue
                for session in sessions:
                    if not running:
                        return
                    try:
                        self.check_session(session["SessionId"], rules)
                    except (ClientError, BotoCoreError) as error:
                        log("session.failed", session_id=session["SessionId"], error=str(error))

    def check_session(self, session_id: str, rules: dict[str, float]) -> None:
        for summary in pages(self.client.list_calculation_executions, "Calculations", SessionId=session_id,
                             MaxResults=100):
            if summary["Status"]["State"] not in LIVE_CALCULATION_STATES:
                continue
            calculation_id = summary["CalculationExecutionId"]
            detail = self.client.get_calculation_execution(CalculationExecutionId=calculation_id)
            state = detail["Status"]["State"]
            if state not in LIVE_CALCULATION_STATES:
                continue
            now = time.time()
            stopped_at = self.stopped_at.get(calculation_id)
            if stopped_at is not None:
                if now - stopped_at >= self.stop_grace and session_id not in self.terminated:
                    self.client.terminate_session(SessionId=session_id)
                    self.terminated.add(session_id)
                    log("session.terminated", session_id=session_id, calculation_id=calculation_id)
                continue
            runtime = now - detail["Status"]["SubmissionDateTime"].timestamp()
            dpu_hours = detail.get("Statistics", {}).get("DpuExecutionInMillis", 0) / 3.6e6
            over = (runtime > rules.get("max_runtime", float("inf"))
                    or dpu_hours > rules.get("max_dpu_hours", float("inf")))
            if over:
                self.client.stop_calculation_execution(CalculationExecutionId=calculation_id)
                self.stopped_at[calculation_id] = time.time()
                log("calculation.stopped", calculation_id=calculation_id, runtime=runtime, dpu_hours=dpu_hours)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--endpoint-url", default=None)
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--interval", type=float, default=60.0, help="seconds between sweep starts")
    parser.add_argument("--stop-grace", type=float, default=30.0, help="seconds before terminating the session")
    parser.add_argument("--max-attempts", type=int, default=10, help="botocore standard-mode attempts per call")
    parser.add_argument("--limit", action="append", default=[], metavar="GLOB:RULE=VALUE")
    args = parser.parse_args()

    def stop(signum: int, frame: Any) -> None:
        global running
        running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    client = boto3.client(
        "athena", region_name=args.region, endpoint_url=args.endpoint_url,
        config=Config(retries={"mode": "standard", "max_attempts": args.max_attempts}),
    )
    poller = NaivePoller(client, parse_limits(args.limit), args.stop_grace)
    log("naive.started", interval=args.interval)
    while running:
        started = time.monotonic()
        try:
            poller.sweep()
        except (ClientError, BotoCoreError) as error:
            log("sweep.failed", error=str(error))
        log("naive.sweep", seconds=round(time.monotonic() - started, 3))
        while running and time.monotonic() < started + args.interval:
            time.sleep(min(0.2, started + args.interval - time.monotonic()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
