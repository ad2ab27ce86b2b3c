"""End-to-end notifications: the daemon against the emulator, delivering to a local aiohttp webhook receiver
and to SNS and EventBridge served by moto (read back through SQS, as a subscriber would)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import boto3
import pytest
from aiohttp import web
from moto.server import ThreadedMotoServer

from athena_spark_emulator.testing import EmulatorHandle
from tests.daemon_fixtures import SupervisorFactory, eventually
from tests.realtime import athena, call_time, calls_of, metric, start_calculation, start_session, wait_idle

pytestmark = pytest.mark.slow
__all__ = ["athena"]  # the fixture, re-exported for pytest


class Receiver:
    """A webhook endpoint per path: ``/ok`` answers 200, ``/flaky`` 500 twice then 200, ``/down`` 503 always,
    ``/slow`` answers after 2 s (longer than the channel's timeout)."""

    def __init__(self) -> None:
        self.bodies: dict[str, list[dict[str, Any]]] = {"ok": [], "flaky": [], "down": [], "slow": []}
        self.hits: dict[str, int] = {name: 0 for name in self.bodies}
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        self.hits[name] += 1
        body = await request.json()
        if name == "down" or (name == "flaky" and self.hits[name] <= 2):
            return web.Response(status=503 if name == "down" else 500)
        if name == "slow":
            await anyio.sleep(2)
        self.bodies[name].append(body)
        return web.json_response({"ok": True})


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    hooks = Receiver()
    app = web.Application()
    app.router.add_post("/{name}", hooks.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    hooks.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield hooks
    finally:
        await runner.cleanup()


async def test_webhooks_are_retried_and_counted_while_enforcement_goes_on(
    emulator: EmulatorHandle, athena: Any, supervisor_factory: SupervisorFactory, receiver: Receiver
) -> None:
    session_id = start_session(athena, "etl-a")
    wait_idle(athena, session_id)
    calculation_id = start_calculation(athena, session_id, "# sim: runtime=60s dpus=2")
    submitted = athena.get_calculation_execution(CalculationExecutionId=calculation_id)["Status"]["SubmissionDateTime"]
    notifications = [
        {"type": "webhook", "url": f"{receiver.url}/ok", "headers": {"Authorization": "Bearer x"}},
        {"type": "webhook", "url": f"{receiver.url}/flaky", "retries": 3, "events": ["violation"]},
        {"type": "webhook", "url": f"{receiver.url}/down", "retries": 2, "min_severity": "warning"},
        {"type": "webhook", "url": f"{receiver.url}/slow", "retries": 1, "timeout": "300ms"},
    ]
    async with supervisor_factory(notifications=notifications) as service:
        stops = await eventually(lambda: calls_of(emulator, "StopCalculationExecution",
                                                  CalculationExecutionId=calculation_id))
        lag = (call_time(stops[0]) - submitted).total_seconds() - 1.5
        assert 0 <= lag < 0.5, f"stop sent {lag:.3f}s after the crossing despite failing webhooks"

        async def settled() -> bool:
            return (await metric(service.http_url, "athena_supervisor_notifications_total", channel="webhook-2",
                                 outcome="failed") == 1
                    and await metric(service.http_url, "athena_supervisor_notifications_total", channel="webhook-3",
                                     outcome="failed") == 2)

        await eventually(settled)
        await eventually(lambda: len(receiver.bodies["ok"]) == 2)
        sample = {channel: {outcome: await metric(service.http_url, "athena_supervisor_notifications_total",
                                                  channel=channel, outcome=outcome)
                            for outcome in ("delivered", "retried", "failed", "dropped")}
                  for channel in ("webhook-0", "webhook-1", "webhook-2", "webhook-3")}
        failures = [e for e in service.storage.journal.recent_events(50) if e.event == "notification.failed"]
    assert sample["webhook-0"] == {"delivered": 2, "retried": 0, "failed": 0, "dropped": 0}
    assert sample["webhook-1"] == {"delivered": 1, "retried": 2, "failed": 0, "dropped": 0}
    # Only the violation is severe enough for webhook-2 (stop_requested is info): 3 attempts, then failed.
    assert sample["webhook-2"] == {"delivered": 0, "retried": 2, "failed": 1, "dropped": 0}
    assert sample["webhook-3"] == {"delivered": 0, "retried": 2, "failed": 2, "dropped": 0}
    assert receiver.hits["down"] == 3
    assert sorted(f.detail["channel"] for f in failures) == ["webhook-2", "webhook-3", "webhook-3"]
    assert failures[0].detail["message"]["detail"]["target_id"] == calculation_id
    violation, stop = receiver.bodies["ok"]
    assert (violation["event"], violation["severity"], stop["event"]) == ("violation", "warning", "stop_requested")
    assert violation["detail"]["target_id"] == calculation_id and violation["detail"]["rule"] == "max_runtime"
    assert violation["text"].startswith(f"Calculation {calculation_id} in workgroup etl-a crossed max_runtime")
    assert receiver.bodies["flaky"][0]["event"] == "violation"


@pytest.fixture
def moto_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def receive_all(sqs: Any, queue_url: str) -> list[dict[str, Any]]:
    messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
    for message in messages:
        sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    return [json.loads(message["Body"]) for message in messages]


async def test_sns_and_eventbridge_receive_events(
    emulator: EmulatorHandle, athena: Any, supervisor_factory: SupervisorFactory, moto_endpoint: str
) -> None:
    aws = {"endpoint_url": moto_endpoint, "region_name": "us-east-1"}
    sns, sqs, events = boto3.client("sns", **aws), boto3.client("sqs", **aws), boto3.client("events", **aws)
    topic_arn = sns.create_topic(Name="athena-supervisor")["TopicArn"]
    queues = {}
    for name in ("from-sns", "from-eventbridge"):
        url = sqs.create_queue(QueueName=name)["QueueUrl"]
        attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]
        queues[name] = (url, attributes["QueueArn"])
    sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queues["from-sns"][1])
    events.put_rule(Name="supervisor", EventPattern=json.dumps({"source": ["athena-supervisor"]}))
    events.put_targets(Rule="supervisor", Targets=[{"Id": "q", "Arn": queues["from-eventbridge"][1]}])

    session_id = start_session(athena, "etl-a")
    wait_idle(athena, session_id)
    calculation_id = start_calculation(athena, session_id, "# sim: runtime=60s dpus=2")
    notifications = [
        {"type": "sns", "topic_arn": topic_arn, "endpoint_url": moto_endpoint, "events": ["violation"]},
        {"type": "eventbridge", "endpoint_url": moto_endpoint, "region": "us-east-1"},
    ]
    async with supervisor_factory(notifications=notifications) as service:
        await eventually(lambda: calls_of(emulator, "StopCalculationExecution", CalculationExecutionId=calculation_id))

        async def delivered() -> bool:
            return (await metric(service.http_url, "athena_supervisor_notifications_total", channel="sns-0",
                                 outcome="delivered") == 1
                    and await metric(service.http_url, "athena_supervisor_notifications_total",
                                     channel="eventbridge-1", outcome="delivered") == 2)

        await eventually(delivered)
        assert await metric(service.http_url, "athena_supervisor_aws_api_calls_total", operation="Publish",
                            outcome="success") == 1
    from_sns = await eventually(lambda: receive_all(sqs, queues["from-sns"][0]))
    assert len(from_sns) == 1
    assert from_sns[0]["Subject"] == "[warning] Athena Supervisor Violation"
    body = json.loads(from_sns[0]["Message"])
    assert (body["event"], body["detail"]["target_id"]) == ("violation", calculation_id)
    assert body["text"].startswith(f"Calculation {calculation_id}")
    from_eventbridge: list[dict[str, Any]] = []

    def both() -> bool:
        from_eventbridge.extend(receive_all(sqs, queues["from-eventbridge"][0]))
        return len(from_eventbridge) >= 2

    await eventually(both)
    assert sorted(e["detail-type"] for e in from_eventbridge) == [
        "Athena Supervisor Stop Requested", "Athena Supervisor Violation"]
    assert {e["source"] for e in from_eventbridge} == {"athena-supervisor"}
    assert {e["detail"]["event"] for e in from_eventbridge} == {"violation", "stop_requested"}
