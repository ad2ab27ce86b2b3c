"""End-to-end notifications in virtual time: the daemon and the emulator on one ManualClock, delivering to a
webhook receiver in this event loop and to SNS and EventBridge served by moto (read back through SQS, as a
subscriber would).

The calculation starts at T = T0 + 100 ms under the 1.5 s ``max_runtime`` of ``daemon_config``: the violation
and the Stop (``stop_requested``) happen at S = T + 1.5 s + ``CROSSING_MARGIN`` and every channel gets its
first attempt at that instant. A failed attempt is retried after the notifier's backoff on the clock: 200 ms
doubling, plus up to 200 ms of jitter.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import anyio
import anyio.to_thread
import pytest
from aiohttp import web

from supervisor.core.scheduling import CROSSING_MARGIN
from tests.moto_in_loop import moto_in_loop
from tests.virtual_fixtures import VirtualWorld, aws_client, ms, times

# Sweeps every second rather than every 250 ms (tests/daemon_fixtures.py) wherever the instants asserted follow
# from crossings and timers, not from when a sweep lists something (targets start 100 ms after the daemon, so the
# sweep at 1 s lists them before their crossings): a quarter of the listing requests.
SWEEPS = "1s"

OFFSET = ms(0.1)
WAIT_INITIAL = ms(0.2)  # the notifier's backoff: WAIT_INITIAL × 2^(n−1) plus up to WAIT_INITIAL of jitter


def assert_backoffs(instants: list[datetime]) -> None:
    """Consecutive attempts of one message are apart by the backoff of their retry number."""
    for retry, (before, after) in enumerate(itertools.pairwise(instants), start=1):
        backoff = WAIT_INITIAL * 2 ** (retry - 1)
        assert backoff <= after - before <= backoff + WAIT_INITIAL, (retry, after - before)


class Receiver:
    """A webhook endpoint per path: ``/ok`` answers 200, ``/flaky`` 500 twice then 200, ``/down`` 503 always,
    ``/slow`` never answers: it holds the request until the client's (real-time) timeout gives up, and the
    virtual clock stands still meanwhile (``vt.busy``), so the timeout happens at the instant of the attempt."""

    def __init__(self, world: VirtualWorld) -> None:
        self.world = world
        self.bodies: dict[str, list[dict[str, Any]]] = {"ok": [], "flaky": [], "down": [], "slow": []}
        self.hits: dict[str, list[datetime]] = {name: [] for name in self.bodies}
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        self.hits[name].append(self.world.now)
        body = await request.json()
        if name == "down" or (name == "flaky" and len(self.hits[name]) <= 2):
            return web.Response(status=503 if name == "down" else 500)
        if name == "slow":
            with self.world.vt.busy("a /slow webhook request held until the client times out"):
                await anyio.sleep_forever()  # cancelled when the client disconnects (handler_cancellation)
        self.bodies[name].append(body)
        return web.json_response({"ok": True})


@pytest.fixture
async def receiver(virtual_world: VirtualWorld) -> AsyncIterator[Receiver]:
    hooks = Receiver(virtual_world)
    app = web.Application()
    app.router.add_post("/{name}", hooks.handle)
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    hooks.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield hooks
    finally:
        await runner.cleanup()


async def test_webhooks_are_retried_and_counted_while_enforcement_goes_on(
    virtual_world: VirtualWorld, receiver: Receiver
) -> None:
    world = virtual_world
    notifications = [
        {"type": "webhook", "url": f"{receiver.url}/ok", "headers": {"Authorization": "Bearer x"}},
        {"type": "webhook", "url": f"{receiver.url}/flaky", "retries": 3, "events": ["violation"]},
        {"type": "webhook", "url": f"{receiver.url}/down", "retries": 2, "min_severity": "warning"},
        {"type": "webhook", "url": f"{receiver.url}/slow", "retries": 1, "timeout": "100ms"},
    ]
    async with world.daemon(discovery_interval=SWEEPS, notifications=notifications) as service:
        await world.vt.run_for(OFFSET)
        session_id = await world.start_session("etl-a")
        calculation_id = await world.start_calculation(session_id, "# sim: runtime=60s dpus=2")
        stopped = world.now + ms(1.5) + CROSSING_MARGIN
        await world.vt.run_until(stopped)
        # Enforced at its instant, while three of the four channels fail.
        assert times(world.calls("StopCalculationExecution", CalculationExecutionId=calculation_id)) == [stopped]

        def count(channel: str, outcome: str) -> float:
            return world.metric("athena_supervisor_notifications_total", channel=channel, outcome=outcome)

        await world.vt.run_until_true(lambda: count("webhook-2", "failed") == 1 and count("webhook-3", "failed") == 2
                                      and count("webhook-1", "delivered") == 1, limit=5)
        settled = world.now
        sample = {channel: {outcome: count(channel, outcome) for outcome in ("delivered", "retried", "failed",
                                                                               "dropped")}
                  for channel in ("webhook-0", "webhook-1", "webhook-2", "webhook-3")}
        failures = [e for e in reversed(service.storage.journal.recent_events(50)) if e.event == "notification.failed"]
        await world.vt.run_for(5)
        assert world.now - settled == timedelta(seconds=5)
        assert len(world.calls("StopCalculationExecution")) == 1
    assert sample["webhook-0"] == {"delivered": 2, "retried": 0, "failed": 0, "dropped": 0}
    assert sample["webhook-1"] == {"delivered": 1, "retried": 2, "failed": 0, "dropped": 0}
    # Only the violation is severe enough for webhook-2 (stop_requested is info): 3 attempts, then failed.
    assert sample["webhook-2"] == {"delivered": 0, "retried": 2, "failed": 1, "dropped": 0}
    # Each of the two messages: an attempt that times out, one retry that times out too.
    assert sample["webhook-3"] == {"delivered": 0, "retried": 2, "failed": 2, "dropped": 0}
    # Every channel's first attempt is at the Stop's instant; retries follow at their backoffs.
    assert receiver.hits["ok"] == [stopped, stopped]
    assert len(receiver.hits["flaky"]) == 3 and receiver.hits["flaky"][0] == stopped
    assert_backoffs(receiver.hits["flaky"])
    assert len(receiver.hits["down"]) == 3 and receiver.hits["down"][0] == stopped
    assert_backoffs(receiver.hits["down"])
    slow = receiver.hits["slow"]
    assert len(slow) == 4 and slow[0] == stopped and slow[1] == slow[2]  # the second message when the first fails
    assert_backoffs(slow[:2])
    assert_backoffs(slow[2:])
    assert [(f.detail["channel"], f.time) for f in failures] == sorted(
        [("webhook-2", receiver.hits["down"][-1]), ("webhook-3", slow[1]), ("webhook-3", slow[3])],
        key=lambda failure: failure[1])
    assert next(f for f in failures if f.detail["channel"] == "webhook-2").detail["message"]["detail"][
        "target_id"] == calculation_id
    violation, stop = receiver.bodies["ok"]
    assert (violation["event"], violation["severity"], stop["event"]) == ("violation", "warning", "stop_requested")
    assert violation["detail"]["target_id"] == calculation_id and violation["detail"]["rule"] == "max_runtime"
    assert violation["text"].startswith(f"Calculation {calculation_id} in workgroup etl-a crossed max_runtime")
    assert violation["time"] == stopped.isoformat()
    assert receiver.bodies["flaky"][0]["event"] == "violation"


@pytest.fixture
async def moto_endpoint() -> AsyncIterator[str]:
    """moto (SNS, SQS, EventBridge) served from this event loop: its work (including SNS and EventBridge
    delivering to SQS) happens within the virtual instant of the request."""
    async with moto_in_loop() as endpoint_url:
        yield endpoint_url


async def receive_all(sqs: Any, queue_url: str) -> list[dict[str, Any]]:
    """The queue's messages (each queue is read once: they are not deleted, a DeleteMessage each would cost
    ~3 ms of CPU for nothing)."""
    response = await sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
    return [json.loads(message["Body"]) for message in response.get("Messages", [])]


async def test_sns_and_eventbridge_receive_events(virtual_world: VirtualWorld, moto_endpoint: str) -> None:
    world = virtual_world
    async with aws_client("sns", moto_endpoint) as sns, aws_client("sqs", moto_endpoint) as sqs, \
            aws_client("events", moto_endpoint) as events:
        topic_arn = (await sns.create_topic(Name="athena-supervisor"))["TopicArn"]
        queues = {}
        for name in ("from-sns", "from-eventbridge"):
            url = (await sqs.create_queue(QueueName=name))["QueueUrl"]
            attributes = (await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"]))["Attributes"]
            queues[name] = (url, attributes["QueueArn"])
        await sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queues["from-sns"][1])
        await events.put_rule(Name="supervisor", EventPattern=json.dumps({"source": ["athena-supervisor"]}))
        await events.put_targets(Rule="supervisor", Targets=[{"Id": "q", "Arn": queues["from-eventbridge"][1]}])

        notifications = [
            {"type": "sns", "topic_arn": topic_arn, "endpoint_url": moto_endpoint, "events": ["violation"]},
            {"type": "eventbridge", "endpoint_url": moto_endpoint, "region": "us-east-1"},
        ]
        async with world.daemon(discovery_interval=SWEEPS, notifications=notifications):
            await world.vt.run_for(OFFSET)
            session_id = await world.start_session("etl-a")
            calculation_id = await world.start_calculation(session_id, "# sim: runtime=60s dpus=2")
            stopped = world.now + ms(1.5) + CROSSING_MARGIN
            await world.vt.run_until(stopped)
            assert times(world.calls("StopCalculationExecution", CalculationExecutionId=calculation_id)) == [stopped]
            # Delivered within the instant of the Stop: moto's work runs in a thread the driver waits for.
            assert world.metric("athena_supervisor_notifications_total", channel="sns-0", outcome="delivered") == 1
            assert world.metric("athena_supervisor_notifications_total", channel="eventbridge-1",
                                outcome="delivered") == 2
            assert world.metric("athena_supervisor_aws_api_calls_total", operation="Publish", outcome="success") == 1
            assert world.metric("athena_supervisor_aws_api_calls_total", operation="PutEvents",
                                outcome="success") == 2
            from_sns = await receive_all(sqs, queues["from-sns"][0])
            from_eventbridge = await receive_all(sqs, queues["from-eventbridge"][0])
    assert len(from_sns) == 1
    assert from_sns[0]["Subject"] == "[warning] Athena Supervisor Violation"
    body = json.loads(from_sns[0]["Message"])
    assert (body["event"], body["detail"]["target_id"]) == ("violation", calculation_id)
    assert body["text"].startswith(f"Calculation {calculation_id}")
    assert body["time"] == stopped.isoformat()
    assert sorted(e["detail-type"] for e in from_eventbridge) == [
        "Athena Supervisor Stop Requested", "Athena Supervisor Violation"]
    assert {e["source"] for e in from_eventbridge} == {"athena-supervisor"}
    assert {e["detail"]["event"] for e in from_eventbridge} == {"violation", "stop_requested"}
