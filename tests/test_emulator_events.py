"""The emulator's CloudTrail events end to end: a real aiobotocore Athena client calls the emulator, events go
to moto's SQS and EventBridge (served in this event loop, so their work happens within a virtual instant),
and the test reads them back from a queue. Everything runs on one ManualClock in virtual time.
"""

from __future__ import annotations

import collections
import json
import re
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import anyio.to_thread
import pytest
from aiohttp import web
from botocore.exceptions import ClientError

from athena_spark_emulator import ControlClient, ControlError, Emulator
from athena_spark_emulator.testing import check_after_call
from supervisor.clock import ManualClock
from tests.moto_in_loop import Moto, MotoFrontend
from tests.virtual_fixtures import _test_client_session, aws_client
from tests.virtual_time import EmulatorClockView, VirtualTime, virtual_time

START = datetime(2026, 1, 1, tzinfo=UTC)
ACCOUNT = "123456789012"
REGION = "us-east-1"
SPARK = {"EngineVersion": {"SelectedEngineVersion": "PySpark engine version 3"}}
UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
IDLE_AT_ONCE = "# sim: start=0s"


class RecordingMoto(MotoFrontend):
    """moto, remembering the operation (``X-Amz-Target``) of every request it serves and the message bodies
    it accepted in SendMessage/SendMessageBatch (reading them back from moto's SQS costs more and more as a
    queue fills)."""

    def __init__(self, moto: Moto) -> None:
        super().__init__(moto)
        self.operations: list[str] = []
        self.sent: list[dict[str, Any]] = []

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        operation = request.headers.get("X-Amz-Target", "").rpartition(".")[2]
        self.operations.append(operation)
        response = await super()._handle(request)
        if operation in ("SendMessage", "SendMessageBatch") and response.status == 200:
            body = json.loads(await request.read())
            entries = body["Entries"] if operation == "SendMessageBatch" else [body]
            self.sent += [json.loads(entry["MessageBody"]) for entry in entries]
        return response


@dataclass
class World:
    clock: ManualClock
    vt: VirtualTime
    emulator: Emulator
    moto: RecordingMoto
    athena: Any
    http: aiohttp.ClientSession
    stack: AsyncExitStack
    queues: list[str] = field(default_factory=list)
    _moto_clients: dict[str, Any] = field(default_factory=dict)

    @property
    def control(self) -> str:
        return self.emulator.control_url

    async def moto_client(self, service: str) -> Any:
        """The test's ``sqs`` or ``events`` client on moto, made on first use (a client costs ~10 ms of CPU, and
        a third of the tests need no queue, all but one no bus)."""
        if service not in self._moto_clients:
            self._moto_clients[service] = await self.stack.enter_async_context(
                aws_client(service, self.moto.endpoint_url))
        return self._moto_clients[service]

    async def queue(self) -> str:
        """A fresh queue's url."""
        sqs = await self.moto_client("sqs")
        return str((await sqs.create_queue(QueueName=f"events-{uuid.uuid4().hex[:12]}"))["QueueUrl"])

    async def queue_arn(self, queue_url: str) -> str:
        """The queue's ARN (asked only by the one test that needs it: an SQS request costs ~3 ms of CPU)."""
        attributes = await (await self.moto_client("sqs")).get_queue_attributes(
            QueueUrl=queue_url, AttributeNames=["QueueArn"])
        return str(attributes["Attributes"]["QueueArn"])

    async def publish_to(self, queue_url: str, **options: Any) -> dict[str, Any]:
        return await self.post("events", {"sqs_queue_url": queue_url, **options})

    async def post(self, path: str, body: Any, expect: int = 200) -> dict[str, Any]:
        async with self.http.post(f"{self.control}/{path}", json=body) as response:
            answer: dict[str, Any] = await response.json()
            assert response.status == expect, answer
            return answer

    async def get(self, path: str) -> dict[str, Any]:
        async with self.http.get(f"{self.control}/{path}") as response:
            assert response.status == 200
            answer: dict[str, Any] = await response.json()
            return answer

    async def delete(self, path: str) -> dict[str, Any]:
        async with self.http.delete(f"{self.control}/{path}") as response:
            assert response.status == 200
            answer: dict[str, Any] = await response.json()
            return answer

    async def counters(self) -> dict[str, int]:
        counters: dict[str, int] = (await self.get("events"))["counters"]
        return counters

    async def receive(self, queue_url: str) -> list[dict[str, Any]]:
        """Every message in the queue now, decoded, oldest first (each read once: hidden for 12 h after).

        moto answers every visible message up to the 10 asked for, so a short answer is the last: no empty
        ReceiveMessage to end on (real SQS may answer short while more wait; these tests run on moto only)."""
        bodies: list[dict[str, Any]] = []
        sqs = await self.moto_client("sqs")
        while True:
            answer = await sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0,
                                               VisibilityTimeout=43200)
            messages = answer.get("Messages", [])
            bodies += [json.loads(message["Body"]) for message in messages]
            if len(messages) < 10:
                return bodies

    async def client(self, service: str, *, account: str | None = None, region: str = REGION,
                     credentials: dict[str, Any] | None = None) -> Any:
        """Another client on the emulator, as ``account`` (a 12-digit key) or with issued ``credentials``."""
        keys = {"aws_access_key_id": account or "testing", "aws_secret_access_key": "testing"}
        if credentials is not None:
            keys = {"aws_access_key_id": credentials["AccessKeyId"],
                    "aws_secret_access_key": credentials["SecretAccessKey"],
                    "aws_session_token": credentials["SessionToken"]}
        client = await self.stack.enter_async_context(_test_client_session().create_client(
            service, endpoint_url=self.emulator.endpoint_url, region_name=region, **keys))
        client.meta.events.register(f"after-call.{service}", check_after_call)
        return client

    async def session(self, athena: Any | None = None, workgroup: str = "etl") -> str:
        answer = await (athena or self.athena).start_session(
            WorkGroup=workgroup, Description=IDLE_AT_ONCE, EngineConfiguration={"MaxConcurrentDpus": 4})
        return str(answer["SessionId"])


@pytest.fixture
async def world() -> AsyncIterator[World]:
    clock = ManualClock(START)
    async with AsyncExitStack() as stack:
        moto = RecordingMoto(Moto())
        await stack.enter_async_context(moto.serving())
        emulator = await stack.enter_async_context(Emulator(clock=EmulatorClockView(clock), workgroups=["etl"],
                                                            account_id=ACCOUNT, region=REGION))
        athena = await stack.enter_async_context(aws_client("athena", emulator.endpoint_url))
        athena.meta.events.register("after-call.athena", check_after_call)
        http = await stack.enter_async_context(aiohttp.ClientSession())
        vt = await stack.enter_async_context(virtual_time(clock))
        yield World(clock, vt, emulator, moto, athena, http, stack)


def request_id(answer: dict[str, Any]) -> str:
    return str(answer["ResponseMetadata"]["RequestId"])


def iam_user(account: str = ACCOUNT, key: str = "testing") -> dict[str, Any]:
    return {"type": "IAMUser", "principalId": user_id(account), "arn": f"arn:aws:iam::{account}:user/athena-emulator",
            "accountId": account, "accessKeyId": key, "userName": "athena-emulator"}


def user_id(account: str) -> str:
    from athena_spark_emulator.identity import Identity

    return Identity(account, REGION).user_id


def expected(name: str, when: str, request: dict[str, Any], response: dict[str, Any] | None, answer_id: str, *,
             account: str = ACCOUNT, region: str = REGION, identity: dict[str, Any] | None = None) -> dict[str, Any]:
    """The event of one call, as the contract with the daemon's parser has it (ids and user agent apart)."""
    return {
        "version": "0", "detail-type": "AWS API Call via CloudTrail", "source": "aws.athena", "account": account,
        "time": when, "region": region, "resources": [],
        "detail": {
            "eventVersion": "1.09", "userIdentity": identity or iam_user(account), "eventTime": when,
            "eventSource": "athena.amazonaws.com", "eventName": name, "awsRegion": region,
            "sourceIPAddress": "127.0.0.1", "requestParameters": request, "responseElements": response,
            "requestID": answer_id, "readOnly": False, "eventType": "AwsApiCall", "managementEvent": True,
            "recipientAccountId": account, "eventCategory": "Management",
        },
    }


def without_ids(event: dict[str, Any], user_agent: str = "aiobotocore/") -> dict[str, Any]:
    """``event`` without its two uuid4 ids and user agent, after checking them."""
    event = json.loads(json.dumps(event))
    assert UUID4.fullmatch(event.pop("id")) and UUID4.fullmatch(event["detail"].pop("eventID"))
    assert event["detail"].pop("userAgent").startswith(user_agent)
    return event


async def test_every_write_operation_publishes_its_cloudtrail_event(world: World) -> None:
    queue_url = await world.queue()
    configured = await world.publish_to(queue_url)
    assert configured["configuration"] == {
        "sqs_queue_url": queue_url, "event_bus_name": None, "endpoint_url": world.moto.endpoint_url,
        "region": "us-east-1", "delay": "0s", "drop_rate": 0.0, "duplicate_rate": 0.0, "seed": None}
    athena, arn = world.athena, f"arn:aws:athena:{REGION}:{ACCOUNT}:workgroup/wg-x"
    await world.vt.run_for(5.9)  # eventTime is the whole second, cut: 00:00:05
    answers = [
        await athena.create_work_group(Name="wg-x", Configuration=SPARK, Tags=[{"Key": "Team", "Value": "a"}]),
        await athena.update_work_group(WorkGroup="wg-x", Description="nightly", State="ENABLED"),
        await athena.tag_resource(ResourceARN=arn, Tags=[{"Key": "Owner", "Value": "ana"}]),
        await athena.untag_resource(ResourceARN=arn, TagKeys=["Owner"]),
    ]
    started = await athena.start_session(WorkGroup="wg-x", Description=IDLE_AT_ONCE, EngineConfiguration={
        "MaxConcurrentDpus": 4, "SparkProperties": {"Spark.Mixed.Case": "1"}})
    session_id = started["SessionId"]
    calculation = await athena.start_calculation_execution(SessionId=session_id, CodeBlock="# sim: runtime=1h\nx",
                                                          Description="etl")
    calculation_id = calculation["CalculationExecutionId"]
    stopped = await athena.stop_calculation_execution(CalculationExecutionId=calculation_id)
    terminated = await athena.terminate_session(SessionId=session_id)
    deleted = await athena.delete_work_group(WorkGroup="wg-x", RecursiveDeleteOption=True)
    answers += [started, calculation, stopped, terminated, deleted]
    await world.vt.run_for(0)
    when = "2026-01-01T00:00:05Z"
    wanted: list[tuple[str, dict[str, Any], dict[str, Any] | None]] = [
        ("CreateWorkGroup", {"name": "wg-x", "configuration": {"engineVersion": {
            "selectedEngineVersion": "PySpark engine version 3"}}, "tags": [{"key": "Team", "value": "a"}]}, None),
        ("UpdateWorkGroup", {"workGroup": "wg-x", "description": "nightly", "state": "ENABLED"}, None),
        ("TagResource", {"resourceARN": arn, "tags": [{"key": "Owner", "value": "ana"}]}, None),
        ("UntagResource", {"resourceARN": arn, "tagKeys": ["Owner"]}, None),
        ("StartSession", {"workGroup": "wg-x", "description": IDLE_AT_ONCE, "engineConfiguration": {
            "maxConcurrentDpus": 4, "sparkProperties": {"Spark.Mixed.Case": "1"}}},  # map keys are kept
         {"sessionId": session_id, "state": started["State"]}),
        ("StartCalculationExecution", {"sessionId": session_id, "codeBlock": "HIDDEN_DUE_TO_SECURITY_REASONS",
                                       "description": "etl"},
         {"calculationExecutionId": calculation_id, "state": calculation["State"]}),
        ("StopCalculationExecution", {"calculationExecutionId": calculation_id}, {"state": stopped["State"]}),
        ("TerminateSession", {"sessionId": session_id}, {"state": terminated["State"]}),
        ("DeleteWorkGroup", {"workGroup": "wg-x", "recursiveDeleteOption": True}, None),
    ]
    # A standard queue keeps no order, and deliveries go out side by side: matched by name (each once here).
    by_name = {event["detail"]["eventName"]: event for event in await world.receive(queue_url)}
    assert sorted(by_name) == sorted(name for name, _, _ in wanted)
    received = [by_name[name] for name, _, _ in wanted]
    for event, (name, request, response), answer in zip(received, wanted, answers, strict=True):
        assert without_ids(event) == expected(name, when, request, response, request_id(answer))
    assert len({event["id"] for event in received} | {event["detail"]["eventID"] for event in received}) == 18
    assert await world.counters() == {"events": 9, "published": 9, "dropped": 0, "duplicated": 0, "failed": 0,
                                      "pending": 0, "discarded": 0}
    # One SendMessage per event, or a SendMessageBatch when a delivery was still under way as the next fell due
    # (timing: a loaded machine): every event exactly once either way (checked above).
    assert {"SendMessage", "SendMessageBatch"} & set(world.moto.operations)


async def test_failed_calls_and_reads_publish_nothing(world: World) -> None:
    queue_url = await world.queue()
    await world.publish_to(queue_url)
    athena = world.athena
    session_id = await world.session()
    failures = [
        (athena.start_calculation_execution, {"SessionId": "no-such-session", "CodeBlock": "x"}),
        (athena.terminate_session, {"SessionId": "no-such-session"}),
        (athena.stop_calculation_execution, {"CalculationExecutionId": "no-such-calculation"}),
        (athena.create_work_group, {"Name": "etl"}),  # exists
        (athena.delete_work_group, {"WorkGroup": "nope"}),
    ]
    for call, kwargs in failures:
        with pytest.raises(ClientError):
            await call(**kwargs)
    world.emulator.backend.add_error("InternalServerException", operation="TagResource")  # an injected fault
    with pytest.raises(ClientError):
        await athena.tag_resource(ResourceARN=f"arn:aws:athena:{REGION}:{ACCOUNT}:workgroup/etl",
                                  Tags=[{"Key": "a", "Value": "b"}])
    await athena.get_session(SessionId=session_id)
    await athena.list_sessions(WorkGroup="etl")
    await world.vt.run_for(1)
    assert [event["detail"]["eventName"] for event in await world.receive(queue_url)] == ["StartSession"]
    assert (await world.counters())["events"] == 1


async def test_a_fixed_delay_delivers_exactly_then(world: World) -> None:
    queue_url = await world.queue()
    await world.publish_to(queue_url, delay="2s")
    await world.vt.run_for(0.25)
    called = world.clock.now()
    await world.session()
    await world.vt.run_until(called + timedelta(seconds=1.998))
    assert await world.receive(queue_url) == []
    assert (await world.counters())["pending"] == 1
    await world.vt.run_until(called + timedelta(seconds=2))
    (event,) = await world.receive(queue_url)
    assert event["time"] == "2026-01-01T00:00:00Z"  # the call's instant, not the delivery's
    assert await world.counters() == {"events": 1, "published": 1, "dropped": 0, "duplicated": 0, "failed": 0,
                                      "pending": 0, "discarded": 0}


async def test_a_delay_range_spreads_deliveries_and_batches_what_falls_due_together(world: World) -> None:
    queue_url = await world.queue()
    await world.publish_to(queue_url, delay="1s-5s", seed=3)
    called = world.clock.now()
    sessions = [await world.session() for _ in range(20)]
    await world.vt.run_until(called + timedelta(seconds=0.999))
    assert (await world.counters())["published"] == 0
    await world.vt.run_until(called + timedelta(seconds=3))
    assert 0 < (await world.counters())["published"] < 20
    await world.vt.run_until(called + timedelta(seconds=5))
    received = await world.receive(queue_url)
    assert sorted(event["detail"]["responseElements"]["sessionId"] for event in received) == sorted(sessions)
    # Fixed delay: all 25 fall due at one instant and go as batches of 10.
    await world.post("events", {"sqs_queue_url": queue_url, "delay": 4})
    world.moto.operations.clear()
    for _ in range(25):
        await world.session()
    await world.vt.run_for(4)
    assert len(await world.receive(queue_url)) == 25
    assert world.moto.operations.count("SendMessageBatch") == 3 and "SendMessage" not in world.moto.operations


async def outcomes(world: World, calls: int, **options: Any) -> tuple[list[int], dict[str, int]]:
    """With publishing configured by ``options`` (to a fresh queue: moto's sends cost more as a queue fills),
    how many copies of each call's event the queue accepted, call by call, and the counters."""
    queue_url = await world.queue()
    await world.publish_to(queue_url, delay=1, **options)  # counters restart; all due at once: batches of 10
    world.moto.sent.clear()
    answers = [request_id(await world.athena.update_work_group(WorkGroup="etl", Description=str(n)))
               for n in range(calls)]
    await world.vt.run_for(1)
    copies = collections.Counter(event["detail"]["requestID"] for event in world.moto.sent)
    return [copies[answer] for answer in answers], await world.counters()


async def test_drops_and_duplicates_follow_their_rates_and_the_seed(world: World) -> None:
    # Few calls, rates high enough to show (the draws themselves: tests/test_emulator_event_settings.py).
    rates = {"drop_rate": 0.3, "duplicate_rate": 0.3}
    first, counters = await outcomes(world, 40, seed=11, **rates)
    assert counters["events"] == 40
    assert counters["dropped"] == first.count(0) and 4 <= counters["dropped"] <= 22
    assert counters["duplicated"] == first.count(2) and 2 <= counters["duplicated"] <= 18
    assert counters["published"] == sum(first) == 40 - counters["dropped"] + counters["duplicated"]
    assert (await outcomes(world, 40, seed=11, **rates))[0] == first
    assert (await outcomes(world, 40, seed=12, **rates))[0] != first



async def test_a_duplicate_is_the_same_event(world: World) -> None:
    queue_url = await world.queue()
    await world.publish_to(queue_url, duplicate_rate=1, delay="1s-2s", seed=1)
    await world.session()
    await world.vt.run_for(2)
    first, second = await world.receive(queue_url)
    assert first == second
    assert (await world.counters())["duplicated"] == 1


async def test_the_eventbridge_bus_path(world: World) -> None:
    queue_url = await world.queue()
    queue_arn = await world.queue_arn(queue_url)
    bus = f"athena-{uuid.uuid4().hex[:8]}"
    events = await world.moto_client("events")
    await events.create_event_bus(Name=bus)
    pattern = {"source": ["aws.athena"], "detail-type": ["AWS API Call via CloudTrail"],
               "detail": {"eventSource": ["athena.amazonaws.com"],
                          "eventName": ["StartSession", "StartCalculationExecution"]}}
    await events.put_rule(Name="athena-calls", EventBusName=bus, EventPattern=json.dumps(pattern))
    await events.put_targets(Rule="athena-calls", EventBusName=bus, Targets=[{"Id": "q", "Arn": queue_arn}])
    configured = await world.post("events", {"event_bus_name": bus, "endpoint_url": world.moto.endpoint_url,
                                             "region": REGION, "delay": "1s"})
    assert configured["configuration"]["event_bus_name"] == bus
    await world.vt.run_for(3.5)
    started = await world.athena.start_session(WorkGroup="etl", Description=IDLE_AT_ONCE,
                                               EngineConfiguration={"MaxConcurrentDpus": 4})
    await world.athena.update_work_group(WorkGroup="etl", Description="not in the rule's pattern")
    await world.vt.run_for(1)
    (event,) = await world.receive(queue_url)
    assert world.moto.operations.count("PutEvents") == 1  # both fell due at once: one batch
    # The bus wraps the detail in an envelope of its own: its id, the bus's region (and account: moto leaves it
    # out of what its rules deliver to SQS).
    assert UUID4.fullmatch(event.pop("id"))
    detail = without_ids({"id": str(uuid.uuid4()), "detail": event.pop("detail")})["detail"]
    want = expected("StartSession", "2026-01-01T00:00:03Z", {
        "workGroup": "etl", "description": IDLE_AT_ONCE, "engineConfiguration": {"maxConcurrentDpus": 4}},
        {"sessionId": started["SessionId"], "state": started["State"]}, request_id(started))
    assert detail == want.pop("detail")
    assert event.pop("account", ACCOUNT) == want.pop("account")
    assert event == want


async def test_events_name_the_account_region_and_the_caller(world: World) -> None:
    queue_url = await world.queue()
    await world.publish_to(queue_url)
    member = await world.client("athena", account="111111111111", region="eu-west-1")
    await member.create_work_group(Name="etl", Configuration=SPARK)
    sts = await world.client("sts", account="222222222222", region="ap-south-1")
    credentials = (await sts.assume_role(RoleArn="arn:aws:iam::333333333333:role/ops/guard",
                                         RoleSessionName="bench"))["Credentials"]
    role = await world.client("athena", region="ap-south-1", credentials=credentials)
    await role.create_work_group(Name="etl", Configuration=SPARK)
    await world.vt.run_for(0)
    created, by_role = await world.receive(queue_url)
    assert (created["account"], created["region"]) == ("111111111111", "eu-west-1")
    assert (created["detail"]["awsRegion"], created["detail"]["recipientAccountId"]) == ("eu-west-1", "111111111111")
    assert created["detail"]["userIdentity"] == iam_user("111111111111", key="111111111111")
    assert (by_role["account"], by_role["region"]) == ("333333333333", "ap-south-1")
    identity = by_role["detail"]["userIdentity"]
    role_id = identity["principalId"].split(":")[0]
    assert identity == {
        "type": "AssumedRole", "principalId": f"{role_id}:bench",
        "arn": "arn:aws:sts::333333333333:assumed-role/guard/bench", "accountId": "333333333333",
        "accessKeyId": credentials["AccessKeyId"], "sessionContext": {"sessionIssuer": {
            "type": "Role", "principalId": role_id, "arn": "arn:aws:iam::333333333333:role/ops/guard",
            "accountId": "333333333333", "userName": "guard"}}}
    assert role_id.startswith("AROA")


# Every bad setting on one world (a world costs more than all of its answers, ~25 ms of CPU): each is refused,
# so none leaves a configuration behind for the next to meet.
BAD_EVENT_SETTINGS: list[tuple[Any, str]] = [
    ({}, "sqs_queue_url"),
    ({"sqs_queue_url": "http://q/1/a", "event_bus_name": "b"}, "sqs_queue_url"),
    ({"sqs_queue_url": "not a url"}, "sqs_queue_url"),
    ({"event_bus_name": "bus"}, "endpoint_url"),
    ({"event_bus_name": "", "endpoint_url": "http://e"}, "event_bus_name"),
    ({"sqs_queue_url": "http://q/1/a", "endpoint_url": "ftp://e"}, "endpoint_url"),
    ({"sqs_queue_url": "http://q/1/a", "region": "EU WEST"}, "region"),
    ({"sqs_queue_url": "http://q/1/a", "delay": "5s-1s"}, "delay"),
    ({"sqs_queue_url": "http://q/1/a", "delay": "soon"}, "delay"),
    ({"sqs_queue_url": "http://q/1/a", "delay": -1}, "delay"),
    ({"sqs_queue_url": "http://q/1/a", "drop_rate": 1.5}, "drop_rate"),
    ({"sqs_queue_url": "http://q/1/a", "duplicate_rate": "often"}, "duplicate_rate"),
    ({"sqs_queue_url": "http://q/1/a", "seed": "x"}, "seed"),
    ({"sqs_queue_url": "http://q/1/a", "dealy": "1s"}, "dealy"),
    ([], "expected a JSON object"),
]


async def test_bad_event_settings_answer_400_naming_the_field(world: World) -> None:
    for body, named in BAD_EVENT_SETTINGS:
        answer = await world.post("events", body, expect=400)
        assert answer["error"].startswith(named), (body, answer)
        assert (await world.get("events"))["configuration"] is None, body


async def test_clearing_discards_pending_deliveries(world: World) -> None:
    queue_url = await world.queue()
    await world.publish_to(queue_url, delay="10s")
    for _ in range(3):
        await world.session()
    assert (await world.counters())["pending"] == 3
    cleared = await world.delete("events")
    assert cleared["configuration"] is None
    assert cleared["counters"] == {"events": 3, "published": 0, "dropped": 0, "duplicated": 0, "failed": 0,
                                   "pending": 0, "discarded": 3}
    await world.session()  # not published
    await world.vt.run_for(20)
    assert await world.receive(queue_url) == []
    assert (await world.get("events"))["counters"]["events"] == 3


async def test_delivery_failures_are_counted_and_never_reach_the_athena_api(world: World) -> None:
    missing = f"{world.moto.endpoint_url}/{ACCOUNT}/no-such-queue"
    await world.publish_to(missing)
    await world.session()
    await world.vt.run_for(1)
    assert (await world.counters())["failed"] == 1
    await world.publish_to("http://127.0.0.1:9/123456789012/closed-port")
    await world.session()
    await world.vt.run_until_true(lambda: world.emulator.events.status()["counters"]["pending"] == 0, limit=1)
    assert (await world.counters())["failed"] == 1
    assert len(world.emulator.backend.store.sessions) == 2  # both calls served


def control_client_round_trip(control_url: str, queue_url: str) -> dict[str, Any]:
    """What a user's script does with the ControlClient (blocking: run in a worker thread)."""
    client = ControlClient(control_url)
    results: dict[str, Any] = {"set": client.set_events(sqs_queue_url=queue_url, delay="1s-3s", drop_rate=0.0,
                                                        duplicate_rate=0.0, seed=5)}
    session = client.call("StartSession", {"WorkGroup": "etl", "Description": IDLE_AT_ONCE,
                                           "EngineConfiguration": {"MaxConcurrentDpus": 4}})
    results["calculation"] = client.call("StartCalculationExecution",
                                         {"SessionId": session["SessionId"], "CodeBlock": "x"},
                                         account=ACCOUNT, region=REGION)
    results["session"] = session
    try:
        client.call("StartCalculationExecution", {"SessionId": "nope", "CodeBlock": "x"})
    except ControlError as error:
        results["error"] = (error.status, error.error_type)
    try:
        client.set_events(sqs_queue_url=queue_url, drop_rate=2)
    except ControlError as error:
        results["bad"] = (error.status, str(error))
    results["events"] = client.events()
    return results


async def test_the_control_client_and_calls_without_throttling_or_faults(world: World) -> None:
    queue_url = await world.queue()
    world.emulator.backend.set_faults(throttle_tps=0.001, burst=1, error_rate=1.0)  # the API answers nothing
    world.emulator.backend.add_error("AccessDeniedException", workgroup="etl")
    with pytest.raises(ClientError):
        await world.session()
    results = await anyio.to_thread.run_sync(control_client_round_trip, world.control, queue_url)
    assert results["set"]["configuration"]["delay"] == "1s-3s"
    assert results["error"] == (400, "ResourceNotFoundException")
    assert results["bad"][0] == 400 and "drop_rate" in results["bad"][1]
    assert results["events"]["counters"]["pending"] == 2
    await world.vt.run_for(3)
    session_event, calculation_event = sorted(await world.receive(queue_url),
                                              key=lambda event: event["detail"]["eventName"] != "StartSession")
    assert calculation_event["detail"]["responseElements"]["calculationExecutionId"] == (
        results["calculation"]["CalculationExecutionId"])
    assert session_event["detail"]["responseElements"]["sessionId"] == results["session"]["SessionId"]
    assert calculation_event["detail"]["userIdentity"] == iam_user(key=ACCOUNT)
    assert calculation_event["detail"]["userAgent"].startswith("Python-urllib/")
    controlled = [(entry["operation"], entry["status"], entry["error"], entry["via"])
                  for entry in world.emulator.fleet.audit.entries() if entry["via"] == "control"]
    assert controlled == [("StartSession", 200, None, "control"), ("StartCalculationExecution", 200, None, "control"),
                          ("StartCalculationExecution", 400, "ResourceNotFoundException", "control")]


# Every bad call on one world, as the bad settings above: none is served, so none changes what the next meets.
BAD_CALLS: list[tuple[dict[str, Any], int, str]] = [
    ({"params": {}}, 400, "operation: expected an Athena operation name"),
    ({"operation": "StartSession", "params": []}, 400, "params: expected a JSON object"),
    ({"operation": "StartSession", "account": "12"}, 400, "account: expected 12 digits"),
    ({"operation": "StartSession", "region": "Mars"}, 400, "region: expected a region name"),
    ({"operation": "StartSession", "extra": 1}, 400, "extra: unknown key"),
    ({"operation": "StartSession", "params": {}}, 400, "InvalidRequestException: 1 validation error"),
    ({"operation": "DropEverything"}, 400, "UnknownOperationException: Unknown operation"),
]


async def test_bad_calls_answer_what_is_wrong(world: World) -> None:
    for body, status, error in BAD_CALLS:
        answer = await world.post("call", body, expect=status)
        assert answer["error"].startswith(error), (body, answer)


async def test_a_control_call_in_another_account_region(world: World) -> None:
    queue_url = await world.queue()
    await world.publish_to(queue_url)
    async with world.http.post(f"{world.control}/call", json={
        "operation": "CreateWorkGroup", "params": {"Name": "etl", "Configuration": SPARK},
        "account": "444444444444", "region": "eu-central-1"}) as response:
        assert response.status == 200 and await response.json() == {}
        answered_id = response.headers["x-amzn-RequestId"]
    await world.vt.run_for(0)
    (event,) = await world.receive(queue_url)
    assert (event["account"], event["region"], event["detail"]["requestID"]) == (
        "444444444444", "eu-central-1", answered_id)
    assert event["detail"]["userIdentity"] == iam_user("444444444444", key="444444444444")
    names: Callable[[], set[str]] = lambda: {  # noqa: E731
        record.name for record in world.emulator.backend_for("444444444444", "eu-central-1").store.workgroups.values()}
    assert names() == {"primary", "etl"}


async def test_the_users_aws_profile_is_not_read(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    queue_url = await world.queue()
    monkeypatch.setenv("AWS_PROFILE", "no-such-profile")  # the delivery clients sign with dummy keys of their own
    await world.publish_to(queue_url)
    monkeypatch.delenv("AWS_PROFILE")  # (moto, which serves this process too, would read it)
    await world.session()
    await world.vt.run_for(0)
    assert len(await world.receive(queue_url)) == 1
