"""Check a deployment before it goes live: everything ``run`` would only find out by running.

Each check is one line: what was checked, ``ok``, ``failed`` or ``skipped``, and why. In order: the region and
the profile (as ``run`` checks them at start), the credentials and the identity (STS ``GetCallerIdentity``), each
member account's role (``AssumeRole``), then per account-region every read the daemon needs: one
``ListWorkGroups``, and per watched workgroup one ``ListTagsForResource`` (with tag exemptions on) and one
``ListSessions``; the journal (SQLite: it opens, takes a write, is of a known schema; DynamoDB: the table exists,
is ACTIVE, has the journal's key and TTL); the HTTP address; each notification channel (a test delivery only
when asked: it reaches people). Destructive permissions (Stop, Terminate, UpdateWorkGroup) cannot be tried
without acting: a line says so and points to the IAM policy.

Every AWS call is made once (two attempts at most), with the configured timeouts: a wrong endpoint fails in
seconds, not after the daemon's retries.
"""

from __future__ import annotations

import platform
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any, Literal

from aiobotocore.session import AioSession
from prometheus_client import CollectorRegistry

from supervisor import athena
from supervisor.clock import SystemClock
from supervisor.config import Settings
from supervisor.core.fleet import Shard
from supervisor.core.policy import workgroup_in_scope
from supervisor.credentials import AssumedRole
from supervisor.gateway import AwsCallError, Gateway, Priority
from supervisor.metrics import Metrics
from supervisor.notify.channels import DeliveryError
from supervisor.notify.messages import Message
from supervisor.notify.notifier import build_delivery, channel_name
from supervisor.shard import build_gateway
from supervisor.startup import StartupError, check_bind, check_journal, check_profile, check_region
from supervisor.storage.dynamodb_setup import KEY_SCHEMA, TTL_ATTRIBUTE
from supervisor.storage.factory import build_storage_gateway, journal_table

Result = Literal["ok", "failed", "skipped"]
PREFLIGHT_ATTEMPTS = 2
IAM_HINT = ("grant what deploy/iam/policy.json grants (python -m supervisor.iam --config FILE prints the policy "
            "this configuration needs)")


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    result: Result
    detail: str


def _failure(error: Exception) -> str:
    if isinstance(error, AwsCallError):
        return f"{error.operation}: {error.code}: {' '.join(error.message.split())}"
    return f"{type(error).__name__}: {error}"


class Preflight:
    """Runs the checks of ``settings``; ``notify_test`` delivers a test event to every channel."""

    def __init__(self, settings: Settings, *, notify_test: bool = False, session: AioSession | None = None) -> None:
        aws = settings.aws.model_copy(update={"max_attempts": min(settings.aws.max_attempts, PREFLIGHT_ATTEMPTS)})
        self.settings = settings.model_copy(update={"aws": aws})
        self.notify_test = notify_test
        self.session = session
        self.metrics = Metrics(CollectorRegistry())
        self.clock = SystemClock()

    async def run(self) -> AsyncIterator[Check]:
        """Every check, as it completes."""
        local = [self._local("region", lambda: check_region(self.settings.aws), self.settings.aws.region),
                 self._local("profile", lambda: check_profile(self.settings.aws),
                             self.settings.aws.profile or "the default credential chain")]
        for check in local:
            yield check
        if local[0].result == "failed":
            yield Check("AWS reads", "skipped", "the region is wrong: nothing was called")
        else:
            async with AsyncExitStack() as stack:
                own = await stack.enter_async_context(build_gateway(self.settings, self.metrics, clock=self.clock,
                                                                    session=self.session))
                identity = await self._identity(own)
                yield identity
                if identity.result == "ok":
                    for shard in self.settings.shards():
                        async for check in self._shard(stack, own, shard):
                            yield check
                yield Check("destructive calls", "skipped",
                            "StopCalculationExecution, TerminateSession (and UpdateWorkGroup for disable_workgroup "
                            f"budgets) cannot be tried without acting: not tested; {IAM_HINT}")
                async for check in self._notifications(own):
                    yield check
        yield await self._journal()
        yield self._local("http address", lambda: check_bind(self.settings.http.host, self.settings.http.port),
                          f"{self.settings.http.host}:{self.settings.http.port} can be bound")

    @staticmethod
    def _local(name: str, check: Any, ok: str) -> Check:
        try:
            check()
        except StartupError as error:
            return Check(name, "failed", str(error))
        return Check(name, "ok", ok)

    async def _identity(self, gateway: Gateway) -> Check:
        try:
            answer = await gateway.call("GetCallerIdentity", {}, priority=Priority.DISCOVER, service="sts")
        except AwsCallError as error:
            return Check("credentials", "failed", f"{_failure(error)}; check the credential chain (environment, "
                         "profile, IRSA, instance profile) and aws.sts_endpoint_url")
        return Check("credentials", "ok", f"{answer.get('Arn')} (account {answer.get('Account')})")

    async def _shard(self, stack: AsyncExitStack, own: Gateway, shard: Shard) -> AsyncIterator[Check]:
        where = "" if shard.implicit else f" [{shard}]"
        session = self.session
        account = self.settings.account_for(shard)
        if account is not None and account.role_arn is not None:
            role = AssumedRole(gateway=own, clock=self.clock, role_arn=account.role_arn,
                               external_id=account.external_id)
            try:
                session = await role.session()
            except AwsCallError as error:
                yield Check(f"role{where}", "failed", f"{account.role_arn}: {_failure(error)}; check the member "
                            "role's trust policy and external id (docs/fleet.md)")
                return
            yield Check(f"role{where}", "ok", f"assumed {account.role_arn}")
        settings = self.settings.for_shard(shard)
        gateway = await stack.enter_async_context(build_gateway(settings, self.metrics, clock=self.clock,
                                                                session=session))
        try:
            summaries = await athena.list_workgroups(gateway)
        except AwsCallError as error:
            yield Check(f"ListWorkGroups{where}", "failed", f"{_failure(error)}; {IAM_HINT}")
            return
        snapshots = [athena.workgroup_snapshot(summary, {}) for summary in summaries if summary.get("Name")]
        watched = [wg.name for wg in snapshots if workgroup_in_scope(wg, settings.workgroups, None) is None]
        yield Check(f"ListWorkGroups{where}", "ok", f"{len(snapshots)} workgroups, "
                    f"{sum(wg.is_spark for wg in snapshots)} Spark, {len(watched)} in scope: "
                    f"{', '.join(watched) or 'none (check the workgroups globs)'}")
        exempt_tag = settings.safety.exempt_tag
        account_id = shard.account_id or await self._account_id(own)
        for workgroup in watched:
            if exempt_tag:
                try:
                    tags = await athena.workgroup_tags(gateway, athena.workgroup_arn(shard.region, account_id,
                                                                                     workgroup))
                except AwsCallError as error:
                    yield Check(f"tags of {workgroup}{where}", "failed", f"{_failure(error)}; without them the "
                                f"workgroup is not enforced (tags_unknown); {IAM_HINT}")
                else:
                    exempt = str(tags.get(exempt_tag, "")).strip().lower() == "true"
                    yield Check(f"tags of {workgroup}{where}", "ok",
                                f"tagged {exempt_tag}=true: exempt, not watched" if exempt else "readable")
                    if exempt:
                        continue  # the daemon lists nothing there
            try:
                await gateway.call("ListSessions", {"WorkGroup": workgroup, "MaxResults": 1},
                                   priority=Priority.DISCOVER)
            except AwsCallError as error:
                yield Check(f"sessions of {workgroup}{where}", "failed", f"{_failure(error)}; {IAM_HINT}")
            else:
                yield Check(f"sessions of {workgroup}{where}", "ok", "ListSessions answered")

    async def _account_id(self, own: Gateway) -> str:
        answer = await own.call("GetCallerIdentity", {}, priority=Priority.DISCOVER, service="sts")
        return str(answer.get("Account", ""))

    async def _notifications(self, gateway: Gateway) -> AsyncIterator[Check]:
        for index, channel in enumerate(self.settings.notifications):
            name = f"notification {channel_name(channel, index)}"
            if not self.notify_test:
                yield Check(name, "skipped", "not tested: pass --notify-test to deliver a test event (it reaches "
                            "whoever reads the channel)")
                continue
            delivery = build_delivery(channel, index, gateway)
            message = Message.build("test", {"host": platform.node(), "text": "athena-supervisor preflight: a test "
                                             "event; nothing was done"}, self.clock.now())
            try:
                await delivery.deliver(message)
            except DeliveryError as error:
                yield Check(name, "failed", str(error))
            else:
                yield Check(name, "ok", "a test event was delivered")
            finally:
                await delivery.close()

    async def _journal(self) -> Check:
        journal = self.settings.journal
        if journal.backend == "sqlite":
            path = journal.path
            try:
                check_journal(path)
            except StartupError as error:
                return Check("journal", "failed", str(error))
            existing = "" if str(path) == ":memory:" or path.exists() else " (created at the first start)"
            return Check("journal", "ok", f"{path}: opens, takes a write, known schema{existing}")
        async with build_storage_gateway(self.settings, self.metrics, clock=self.clock,
                                         max_attempts=PREFLIGHT_ATTEMPTS) as gateway:
            table = journal_table(self.settings, gateway)
            try:
                described = (await table.call("DescribeTable", {"TableName": table.name}, Priority.DISCOVER))["Table"]
                ttl = (await table.call("DescribeTimeToLive", {"TableName": table.name}, Priority.DISCOVER)).get(
                    "TimeToLiveDescription") or {}
            except AwsCallError as error:
                fix = "create it: athena-supervisor setup-dynamodb --config FILE" if error.is_not_found else \
                    "check the fleet_storage grants (python -m supervisor.iam --config FILE)"
                return Check("journal", "failed", f"DynamoDB table {table.name}: {_failure(error)}; {fix}")
        problems = []
        if described.get("TableStatus") != "ACTIVE":
            problems.append(f"status {described.get('TableStatus')}")
        if described.get("KeySchema") != list(KEY_SCHEMA):
            problems.append("not the journal's key (pk, sk)")
        if ttl.get("AttributeName") != TTL_ATTRIBUTE or ttl.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING"):
            problems.append(f"TTL not on {TTL_ATTRIBUTE}")
        if problems:
            return Check("journal", "failed", f"DynamoDB table {table.name}: {', '.join(problems)}; run "
                         "athena-supervisor setup-dynamodb --config FILE")
        return Check("journal", "ok", f"DynamoDB table {table.name} is ACTIVE with the journal's key and TTL")
