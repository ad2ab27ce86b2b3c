"""The configuration models: frozen pydantic v2 models; unknown keys are errors at every depth.

Key names are public (documented in ``docs/configuration.md``). Validators raise
:class:`~supervisor.config.errors.FieldProblem` so that the loader can report the exact key path.
"""

from __future__ import annotations

import fnmatch
import re
import zoneinfo
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator
from pydantic import model_validator as _model_validator

from supervisor.config.errors import NO_VALUE, FieldProblem, join_hints, suggest
from supervisor.config.notifications import (
    EventBridgeChannel,
    NotificationChannel,
    SnsChannel,
    WebhookChannel,
)
from supervisor.config.types import (
    AccountId,
    BudgetAction,
    Count,
    Duration,
    EventName,
    HttpUrl,
    LogLevel,
    Mode,
    NonNegativeDuration,
    Number,
    PeriodKind,
    PolicyAction,
    Severity,
    StrictModel,
    Text,
    check_globs,
)
from supervisor.core.fleet import Shard
from supervisor.core.model import PYSPARK_ENGINE, SPARK_CONNECT_ENGINE
from supervisor.durations import format_duration, parse_duration

__all__ = [
    "AccountSettings",
    "AwsSettings",
    "BudgetAction",
    "BudgetConfig",
    "BudgetThreshold",
    "CalculationLimits",
    "ClusterSettings",
    "DiscoverySettings",
    "Duration",
    "EngineName",
    "EscalationSettings",
    "EventBridgeChannel",
    "EventName",
    "HttpSettings",
    "JournalSettings",
    "LogLevel",
    "Mode",
    "NotificationChannel",
    "PeriodKind",
    "PolicyAction",
    "PolicyConfig",
    "PricingSettings",
    "SafetySettings",
    "SessionLimits",
    "Settings",
    "Severity",
    "SnsChannel",
    "WebhookChannel",
]


# --- sections ----------------------------------------------------------------------------------------


MAX_AWS_TIMEOUT = timedelta(minutes=5)
"""Upper bound of ``aws.connect_timeout`` and ``aws.read_timeout``: after a crash with a call in flight the
daemon waits a call timeout out before it looks again, so a longer one only delays recovery."""


class AwsSettings(StrictModel):
    region: Text = "us-east-1"
    endpoint_url: HttpUrl | None = None
    max_requests_per_second: Number = Field(default=20.0, gt=0)
    max_attempts: Count = Field(default=8, ge=1)
    profile: Text | None = None
    # Needed to build workgroup ARNs (for their tags); when unset it is asked from STS GetCallerIdentity.
    account_id: AccountId | None = None
    # Per attempt, for every AWS call (Athena, STS, SNS, EventBridge).
    connect_timeout: Duration = timedelta(seconds=2)
    read_timeout: Duration = timedelta(seconds=10)
    # STS (GetCallerIdentity, AssumeRole); unset: ``endpoint_url`` when set, else AWS's STS endpoint.
    sts_endpoint_url: HttpUrl | None = None

    @field_validator("connect_timeout", "read_timeout")
    @classmethod
    def _at_most_five_minutes(cls, value: timedelta) -> timedelta:
        if value > MAX_AWS_TIMEOUT:
            raise FieldProblem("too long", "must be at most 5m (a call in flight at a crash is waited out "
                               "for this long before the daemon looks again)")
        return value

    @property
    def effective_sts_endpoint_url(self) -> str | None:
        """Where STS calls go: ``sts_endpoint_url``, else ``endpoint_url``, else ``None`` (botocore's STS
        endpoint for ``region``)."""
        return self.sts_endpoint_url or self.endpoint_url


def _journal_path(value: object) -> object:
    if isinstance(value, str) and not value.strip():
        raise FieldProblem("must not be empty", "write a file path, e.g. /var/lib/athena-supervisor/journal.db")
    return value


DYNAMODB_TABLE_NAME = re.compile(r"[A-Za-z0-9_.-]{3,255}")
MIN_RETENTION = timedelta(days=1)
"""Lower bound of ``journal.retention``: on DynamoDB, settled claims, one-off notices and ended sessions' counted
spend expire with it too, so it must outlive any target they are about."""
_DYNAMODB_ONLY = ("table", "region", "endpoint_url")


def _dynamodb_table_name(value: object) -> object:
    if isinstance(value, str) and not DYNAMODB_TABLE_NAME.fullmatch(value):
        raise FieldProblem("not a DynamoDB table name", "use 3-255 letters, digits, '_', '-' or '.', "
                           "e.g. athena-supervisor")
    return value


class JournalSettings(StrictModel):
    """Where the daemon's durable state lives: an SQLite file (one process) or a DynamoDB table (a fleet)."""

    backend: Literal["sqlite", "dynamodb"] = "sqlite"
    path: Annotated[Path, BeforeValidator(_journal_path)] = Path("./athena-supervisor.db")
    table: Annotated[str, BeforeValidator(_dynamodb_table_name)] | None = None
    # DynamoDB's region and endpoint: unset, aws.region and AWS's endpoint (never aws.endpoint_url, Athena's).
    region: Text | None = None
    endpoint_url: HttpUrl | None = None
    retention: Duration = timedelta(days=90)

    @field_validator("retention")
    @classmethod
    def _at_least_a_day(cls, value: timedelta) -> timedelta:
        if value < MIN_RETENTION:
            raise FieldProblem("too short", "must be at least 1d (on DynamoDB, settled claims and one-off notices "
                               "expire with the events, and must outlive their targets)")
        return value

    @_model_validator(mode="after")
    def _fits_the_backend(self) -> JournalSettings:
        if self.backend == "dynamodb":
            if self.table is None:
                raise FieldProblem("missing required key", "backend dynamodb needs the table's name, e.g. table: "
                                   "athena-supervisor (create it with athena-supervisor setup-dynamodb --config "
                                   "FILE)", subpath=("table",))
            if "path" in self.model_fields_set:
                raise FieldProblem("not used with backend dynamodb (the journal is the DynamoDB table)",
                                   "remove journal.path, or set journal.backend: sqlite", subpath=("path",),
                                   value=str(self.path))
            return self
        for name in _DYNAMODB_ONLY:
            if name in self.model_fields_set:
                raise FieldProblem("only used with backend dynamodb", f"remove journal.{name}, or set "
                                   "journal.backend: dynamodb", subpath=(name,), value=getattr(self, name))
        return self

    def dynamodb_region(self, aws: AwsSettings) -> str:
        """The DynamoDB table's region: ``journal.region``, else ``aws.region``."""
        return self.region or aws.region


class HttpSettings(StrictModel):
    host: Text = "127.0.0.1"
    port: Count = Field(default=9464, ge=0, le=65535)
    # POST /-/reload and POST /-/breaker/reset (as Prometheus' --web.enable-lifecycle): off, since anyone who
    # reaches the address could use them.
    enable_lifecycle: bool = False


_QUEUE_URL_REGION = re.compile(r"^https?://sqs[.-]([a-z]{2}(?:-[a-z]+)+-\d+)\.")
MAX_LONG_POLL = timedelta(seconds=20)  # SQS's longest ReceiveMessage wait


class EventsSettings(StrictModel):
    """Event-fed discovery (docs/events.md): the SQS queue an EventBridge rule fills with Athena's API calls."""

    sqs_queue_url: HttpUrl
    # The queue's region: unset, the one in an AWS queue URL (``https://sqs.<region>.amazonaws.com/…``), else
    # aws.region. endpoint_url: unset, AWS's SQS endpoint (never aws.endpoint_url, which is Athena's).
    region: Text | None = None
    endpoint_url: HttpUrl | None = None
    # How long one ReceiveMessage waits for a message (SQS long polling, at most 20s); 0s polls.
    wait_time: NonNegativeDuration = MAX_LONG_POLL
    # An event arriving later than this after its call is late: a backstop sweep that finds its session or
    # calculation first counts it in discovery_missed_events_total.
    late_after: Duration = timedelta(minutes=5)

    @field_validator("wait_time")
    @classmethod
    def _at_most_twenty_seconds(cls, value: timedelta) -> timedelta:
        if value > MAX_LONG_POLL:
            raise FieldProblem("longer than SQS allows", "SQS long polling waits at most 20s",
                               value=format_duration(value))
        return value

    def queue_region(self, default: str) -> str:
        """``region``, else the region an AWS queue URL names, else ``default`` (aws.region)."""
        if self.region:
            return self.region
        found = _QUEUE_URL_REGION.match(self.sqs_queue_url)
        return found.group(1) if found else default


class DiscoverySettings(StrictModel):
    """How discovery looks for work (``discovery_interval``, at the top level, paces the sweeps)."""

    # The workgroup list and the workgroups' tags are re-read this often (and at every sweep when sweeps are
    # further apart): a new workgroup, or a new exemption tag, counts within this long.
    workgroup_refresh: Duration = timedelta(seconds=60)
    # Event-fed discovery: new sessions, calculations and workgroup changes learned from Athena's API-call
    # events within seconds; full sweeps then run every backstop_interval instead of discovery_interval.
    events: EventsSettings | None = None
    backstop_interval: Duration = timedelta(minutes=15)


class PricingSettings(StrictModel):
    dpu_hour_usd: Number = Field(default=0.35, gt=0)
    regions: dict[str, Annotated[Number, Field(gt=0)]] = {}

    def price_for(self, region: str) -> float:
        """USD per DPU-hour in ``region``: the per-region override, else ``dpu_hour_usd``."""
        return self.regions.get(region, self.dpu_hour_usd)


class EscalationSettings(StrictModel):
    stop_grace: Duration = timedelta(seconds=30)
    terminate_grace: Duration = timedelta(minutes=2)
    retry_backoff_max: Duration = timedelta(minutes=5)


class SafetySettings(StrictModel):
    max_actions_per_minute: Count = Field(default=60, ge=1)
    exempt_tag: Text | None = "athena-supervisor/exempt"
    circuit_breaker_fraction: Number = Field(default=0.5, gt=0, le=1)
    circuit_breaker_min_targets: Count = Field(default=10, ge=1)


_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::(\d{12}):role/[\w+=,.@/-]{1,512}$")


class AccountSettings(StrictModel):
    """One member account: supervised in each of ``regions`` (default: ``aws.region``), with the credentials of
    ``role_arn`` when set (assumed through STS, refreshed before they expire), else the daemon's own."""

    account_id: AccountId
    role_arn: Text | None = None
    external_id: Text | None = None
    regions: tuple[Text, ...] = ()

    @field_validator("role_arn")
    @classmethod
    def _check_role_arn(cls, value: str | None) -> str | None:
        if value is not None and not _ROLE_ARN.match(value):
            raise FieldProblem("not an IAM role ARN", "write arn:aws:iam::<12-digit account>:role/<name>")
        return value

    @field_validator("regions")
    @classmethod
    def _unique_regions(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for index, region in enumerate(value):
            if region in value[:index]:
                raise FieldProblem("duplicate region", "list each region once", subpath=(index,), value=region)
        return value

    @_model_validator(mode="after")
    def _role_in_this_account(self) -> AccountSettings:
        if self.role_arn is not None:
            match = _ROLE_ARN.match(self.role_arn)
            if match is not None and match.group(1) != self.account_id:
                raise FieldProblem(
                    "role_arn is in another account",
                    f"the role must be in account {self.account_id} (it is in {match.group(1)}); "
                    "use the role the member account grants the supervisor", subpath=("role_arn",),
                    value=self.role_arn)
        if self.external_id is not None and self.role_arn is None:
            # The value is never shown: an external id is a shared secret.
            raise FieldProblem("external_id without role_arn", "set role_arn, or remove external_id",
                               subpath=("external_id",))
        return self


MIN_LEASE_DURATION = timedelta(seconds=3)


class ClusterSettings(StrictModel):
    """Replicas that share the shards through leases in the DynamoDB journal (``docs/fleet.md``)."""

    lease_duration: Duration = timedelta(seconds=15)
    # The most two replicas' clocks may disagree; a replica stops acting this much (plus a call timeout)
    # before its lease could have expired (another replica takes an expired lease at its expiry by its clock).
    max_clock_skew: Duration = timedelta(seconds=1)
    # Default: the host name and process id (unique per pod/process; a restarted process is a new replica).
    replica_id: Text | None = None

    @field_validator("lease_duration")
    @classmethod
    def _long_enough(cls, value: timedelta) -> timedelta:
        if value < MIN_LEASE_DURATION:
            raise FieldProblem("too short", "must be at least 3s (leases are renewed every third of it)")
        return value


def _check_selectors(value: tuple[str, ...], what: str) -> tuple[str, ...]:
    for index, item in enumerate(value):
        if item in value[:index]:
            raise FieldProblem(f"duplicate {what}", f"list each {what} once", subpath=(index,), value=item)
    return value


# --- policies ----------------------------------------------------------------------------------------

# Athena's Spark engines a policy may select (``engines``): only the first has calculations.
EngineName = Literal["PySpark engine version 3", "Apache Spark version 3.5"]
ENGINES: tuple[str, ...] = (PYSPARK_ENGINE, SPARK_CONNECT_ENGINE)


class CalculationLimits(StrictModel):
    max_runtime: Duration | None = None
    max_queued: Duration | None = None
    max_dpu_hours: Annotated[Number, Field(gt=0)] | None = None
    max_cost_usd: Annotated[Number, Field(gt=0)] | None = None

    def is_empty(self) -> bool:
        return all(getattr(self, name) is None for name in type(self).model_fields)


class SessionLimits(StrictModel):
    max_idle: Duration | None = None
    max_age: Duration | None = None
    # BUSY without a break (from the status's LastModifiedDateTime while BUSY): the runaway-job limit of engines
    # without calculations (Apache Spark version 3.5), useful on PySpark 3 too.
    max_busy: Duration | None = None
    max_dpu_hours: Annotated[Number, Field(gt=0)] | None = None
    max_cost_usd: Annotated[Number, Field(gt=0)] | None = None

    def is_empty(self) -> bool:
        return all(getattr(self, name) is None for name in type(self).model_fields)


class Selection(StrictModel):
    """What policies and budgets share: a name, and which workgroups (globs), accounts and regions they select."""

    name: Text
    workgroups: tuple[str, ...] = ("*",)
    # Empty: every account / region supervised.
    accounts: tuple[AccountId, ...] = ()
    regions: tuple[Text, ...] = ()

    @field_validator("workgroups")
    @classmethod
    def _check_globs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return check_globs(value)

    @field_validator("accounts")
    @classmethod
    def _check_accounts(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _check_selectors(value, "account")

    @field_validator("regions")
    @classmethod
    def _check_regions(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _check_selectors(value, "region")

    def applies_to(self, shard: Shard) -> bool:
        """Whether ``accounts`` and ``regions`` select ``shard`` (empty selects all)."""
        return _selects(self.accounts, self.regions, shard)


class PolicyConfig(Selection):
    # Empty: every engine. Only PySpark engine version 3 sessions have calculations.
    engines: tuple[EngineName, ...] = ()
    calculation: CalculationLimits | None = None
    session: SessionLimits | None = None
    action: PolicyAction = "stop"
    mode: Mode | None = None
    notify_before: Duration | None = None

    @field_validator("engines")
    @classmethod
    def _check_engines(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _check_selectors(value, "engine")

    def selects_engine(self, engine: str) -> bool:
        """Whether this policy's ``engines`` select ``engine`` (empty selects all; an engine not reported, ``""``,
        is taken for PySpark engine version 3, as the daemon does)."""
        return not self.engines or (engine or PYSPARK_ENGINE) in self.engines

    @property
    def has_calculation_limits(self) -> bool:
        return self.calculation is not None and not self.calculation.is_empty()

    @property
    def may_govern_engines_without_calculations(self) -> bool:
        """Whether a workgroup this policy governs may run an engine without calculations (known at run time)."""
        return any(engine != PYSPARK_ENGINE for engine in (self.engines or ENGINES))

    @_model_validator(mode="after")
    def _calculation_limits_can_apply(self) -> PolicyConfig:
        if self.has_calculation_limits and self.engines and PYSPARK_ENGINE not in self.engines:
            raise FieldProblem(
                "calculation limits never apply",
                f"the policy's engines ({', '.join(self.engines)}) have no calculations; remove calculation (a "
                f"runaway Spark Connect job is stopped by session.max_busy), or add {PYSPARK_ENGINE!r} to engines",
                subpath=("calculation",), value=NO_VALUE)
        return self

    @_model_validator(mode="after")
    def _has_a_limit(self) -> PolicyConfig:
        if (self.calculation is None or self.calculation.is_empty()) and (
            self.session is None or self.session.is_empty()
        ):
            keys = [f"calculation.{name}" for name in CalculationLimits.model_fields]
            keys += [f"session.{name}" for name in SessionLimits.model_fields]
            raise FieldProblem("policy sets no limit", "set at least one of " + ", ".join(keys))
        return self

    def matches(self, workgroup: str) -> bool:
        """Whether one of this policy's globs matches ``workgroup`` (case-sensitive)."""
        return any(fnmatch.fnmatchcase(workgroup, glob) for glob in self.workgroups)

    def effective_mode(self, settings_mode: Mode) -> Mode:
        """This policy's ``mode`` if set, else the global one."""
        return self.mode if self.mode is not None else settings_mode


# --- budgets -----------------------------------------------------------------------------------------

_PERIOD_HINT = "accepted values: daily, weekly, monthly, rolling:<duration> (e.g. rolling:24h)"


class BudgetThreshold(StrictModel):
    at_percent: Number = Field(gt=0)
    action: BudgetAction


class BudgetConfig(Selection):
    # A budget's spend is summed over every shard it selects.
    period: str
    timezone: str = "UTC"
    limit_usd: Number = Field(gt=0)
    thresholds: tuple[BudgetThreshold, ...]
    notify_before: Duration | None = None

    @field_validator("period")
    @classmethod
    def _check_period(cls, value: str) -> str:
        if value in ("daily", "weekly", "monthly"):
            return value
        if not value.startswith("rolling:"):
            raise FieldProblem("not a budget period", join_hints(_PERIOD_HINT, suggest(
                value, ["daily", "weekly", "monthly", "rolling:24h"])))
        try:
            window = parse_duration(value.removeprefix("rolling:"))
        except ValueError:
            raise FieldProblem("rolling window is not a duration", _PERIOD_HINT) from None
        if window <= timedelta(0):
            raise FieldProblem("rolling window must be longer than zero", _PERIOD_HINT)
        return value

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            hint = "use an IANA time zone name, e.g. UTC, Europe/Berlin, America/New_York"
            raise FieldProblem("unknown time zone", join_hints(
                hint, suggest(value, zoneinfo.available_timezones()))) from None
        return value

    @field_validator("thresholds")
    @classmethod
    def _check_thresholds(cls, value: tuple[BudgetThreshold, ...]) -> tuple[BudgetThreshold, ...]:
        if not value:
            raise FieldProblem("a budget needs at least one threshold",
                               "add e.g. {at_percent: 100, action: stop_calculations}", value=[])
        for index in range(1, len(value)):
            previous, current = value[index - 1].at_percent, value[index].at_percent
            if current <= previous:
                raise FieldProblem(
                    "thresholds must be in strictly ascending order of at_percent",
                    f"must be greater than {previous:g} (thresholds[{index - 1}].at_percent)",
                    subpath=(index, "at_percent"), value=current,
                )
        return value

    @property
    def period_kind(self) -> PeriodKind:
        """``daily``, ``weekly``, ``monthly`` or ``rolling``."""
        if self.period == "daily":
            return "daily"
        if self.period == "weekly":
            return "weekly"
        if self.period == "monthly":
            return "monthly"
        return "rolling"

    @property
    def rolling_window(self) -> timedelta | None:
        """The window of a ``rolling:<duration>`` period, else ``None``."""
        if self.period_kind != "rolling":
            return None
        return parse_duration(self.period.removeprefix("rolling:"))

    def matches(self, workgroup: str) -> bool:
        """Whether one of this budget's globs matches ``workgroup`` (case-sensitive)."""
        return any(fnmatch.fnmatchcase(workgroup, glob) for glob in self.workgroups)


# --- the whole file ----------------------------------------------------------------------------------


def _selects(accounts: tuple[str, ...], regions: tuple[str, ...], shard: Shard) -> bool:
    return (not accounts or shard.account_id in accounts) and (not regions or shard.region in regions)


def _unique_names(value: tuple[Any, ...], what: str, key: str) -> None:
    seen: dict[str, int] = {}
    for index, item in enumerate(value):
        if item.name in seen:
            raise FieldProblem(f"duplicate {what} name", f"already used by {key}[{seen[item.name]}]; "
                               "names must be unique", subpath=(index, "name"), value=item.name)
        seen[item.name] = index


class Settings(StrictModel):
    aws: AwsSettings = Field(default_factory=AwsSettings)
    accounts: tuple[AccountSettings, ...] = ()
    cluster: ClusterSettings | None = None
    workgroups: tuple[str, ...] = ("*",)
    mode: Mode = "enforce"
    discovery_interval: Duration = timedelta(seconds=10)
    discovery: DiscoverySettings = Field(default_factory=DiscoverySettings)
    journal: JournalSettings = Field(default_factory=JournalSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    pricing: PricingSettings = Field(default_factory=PricingSettings)
    escalation: EscalationSettings = Field(default_factory=EscalationSettings)
    safety: SafetySettings = Field(default_factory=SafetySettings)
    policies: tuple[PolicyConfig, ...] = ()
    budgets: tuple[BudgetConfig, ...] = ()
    notifications: tuple[NotificationChannel, ...] = ()
    log_level: LogLevel = "info"

    @field_validator("workgroups")
    @classmethod
    def _check_globs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return check_globs(value)

    @field_validator("policies")
    @classmethod
    def _unique_policies(cls, value: tuple[PolicyConfig, ...]) -> tuple[PolicyConfig, ...]:
        _unique_names(value, "policy", "policies")
        return value

    @field_validator("budgets")
    @classmethod
    def _unique_budgets(cls, value: tuple[BudgetConfig, ...]) -> tuple[BudgetConfig, ...]:
        _unique_names(value, "budget", "budgets")
        return value

    @field_validator("accounts")
    @classmethod
    def _unique_accounts(cls, value: tuple[AccountSettings, ...]) -> tuple[AccountSettings, ...]:
        seen: dict[str, int] = {}
        for index, account in enumerate(value):
            if account.account_id in seen:
                raise FieldProblem("duplicate account", f"already listed as accounts[{seen[account.account_id]}]; "
                                   "list each account once, with all its regions",
                                   subpath=(index, "account_id"), value=account.account_id)
            seen[account.account_id] = index
        return value

    @_model_validator(mode="after")
    def _selectors_name_supervised_shards(self) -> Settings:
        shards = self.shards()
        known_accounts = sorted({shard.account_id for shard in shards if shard.account_id})
        known_regions = sorted({shard.region for shard in shards})
        selectors: list[tuple[str, int, PolicyConfig | BudgetConfig]] = [
            *(("policies", index, policy) for index, policy in enumerate(self.policies)),
            *(("budgets", index, budget) for index, budget in enumerate(self.budgets)),
        ]
        for key, index, item in selectors:
            if item.accounts or item.regions:
                for position, account in enumerate(item.accounts):
                    if account not in known_accounts:
                        hint = (f"supervised accounts: {', '.join(known_accounts)}" if known_accounts else
                                "list the account under accounts: (or set aws.account_id)")
                        raise FieldProblem("account is not supervised", hint,
                                           subpath=(key, index, "accounts", position), value=account)
                for position, region in enumerate(item.regions):
                    if region not in known_regions:
                        raise FieldProblem("region is not supervised",
                                           f"supervised regions: {', '.join(known_regions)}",
                                           subpath=(key, index, "regions", position), value=region)
        return self

    @_model_validator(mode="after")
    def _cluster_needs_shared_leases(self) -> Settings:
        if self.cluster is None:
            return self
        if self.journal.backend != "dynamodb":
            raise FieldProblem("replicas need a shared journal",
                               "set journal.backend: dynamodb (and journal.table), or remove cluster",
                               subpath=("cluster",), value=NO_VALUE)
        margin = self.cluster.max_clock_skew + self.aws.connect_timeout
        if self.cluster.lease_duration <= margin * 3 / 2:
            raise FieldProblem(
                "too short to act between renewals",
                f"a holder stops acting max_clock_skew + aws.connect_timeout ({format_duration(margin)}) before "
                f"its lease could expire and renews every third of it: make it longer than "
                f"{format_duration(margin * 3 / 2)}, or lower aws.connect_timeout",
                subpath=("cluster", "lease_duration"), value=format_duration(self.cluster.lease_duration))
        return self

    def shards(self) -> tuple[Shard, ...]:
        """Every account-region to supervise, in config order: one per region of each of ``accounts``, or the
        implicit shard (the credentials' account in ``aws.region``) when ``accounts`` is absent."""
        if not self.accounts:
            return (Shard(self.aws.account_id or "", self.aws.region, implicit=True),)
        return tuple(Shard(account.account_id, region)
                     for account in self.accounts for region in (account.regions or (self.aws.region,)))

    def account_for(self, shard: Shard) -> AccountSettings | None:
        """The ``accounts`` entry of ``shard`` (None for the implicit shard)."""
        return next((account for account in self.accounts if account.account_id == shard.account_id), None)

    def for_shard(self, shard: Shard) -> Settings:
        """These settings as one shard's activities see them: its region and account, and only the policies and
        budgets that select it (a budget keeps its name, so its spend is still summed over every shard)."""
        aws = self.aws.model_copy(update={"region": shard.region, "account_id": shard.account_id or None})
        return self.model_copy(update={
            "aws": aws,
            "policies": tuple(policy for policy in self.policies if policy.applies_to(shard)),
            "budgets": tuple(budget for budget in self.budgets if budget.applies_to(shard)),
        })

    def watches(self, workgroup: str) -> bool:
        """Whether the top-level ``workgroups`` globs include ``workgroup``."""
        return any(fnmatch.fnmatchcase(workgroup, glob) for glob in self.workgroups)

    def policy_for(self, workgroup: str, engine: str = "") -> PolicyConfig | None:
        """The policy that governs ``workgroup`` (running ``engine``): the first, in file order, whose globs
        match it and whose ``engines`` select the engine.

        ``None`` when the workgroup is not watched or no policy matches (then nothing is acted on).
        """
        if not self.watches(workgroup):
            return None
        return next((policy for policy in self.policies
                     if policy.matches(workgroup) and policy.selects_engine(engine)), None)

    def budgets_for(self, workgroup: str) -> tuple[BudgetConfig, ...]:
        """Every budget whose globs match ``workgroup`` (all of them apply, unlike policies)."""
        return tuple(budget for budget in self.budgets if budget.matches(workgroup))

    def mode_for(self, policy: PolicyConfig) -> Mode:
        """The effective mode of ``policy``: its own ``mode`` if set, else the global ``mode``."""
        return policy.effective_mode(self.mode)
