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

from supervisor.config.errors import FieldProblem, join_hints, suggest
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
    Number,
    PeriodKind,
    PolicyAction,
    Severity,
    StrictModel,
    Text,
    check_globs,
)
from supervisor.durations import parse_duration

__all__ = [
    "AwsSettings", "BudgetAction", "BudgetConfig", "BudgetThreshold", "CalculationLimits", "Duration",
    "EscalationSettings", "EventBridgeChannel", "EventName", "HttpSettings", "JournalSettings", "LogLevel",
    "Mode", "NotificationChannel", "PeriodKind", "PolicyAction", "PolicyConfig", "PricingSettings",
    "SafetySettings", "SessionLimits", "Settings", "Severity", "SnsChannel", "WebhookChannel",
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


# --- policies ----------------------------------------------------------------------------------------


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
    max_dpu_hours: Annotated[Number, Field(gt=0)] | None = None
    max_cost_usd: Annotated[Number, Field(gt=0)] | None = None

    def is_empty(self) -> bool:
        return all(getattr(self, name) is None for name in type(self).model_fields)


class PolicyConfig(StrictModel):
    name: Text
    workgroups: tuple[str, ...] = ("*",)
    calculation: CalculationLimits | None = None
    session: SessionLimits | None = None
    action: PolicyAction = "stop"
    mode: Mode | None = None
    notify_before: Duration | None = None

    @field_validator("workgroups")
    @classmethod
    def _check_globs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return check_globs(value)

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


class BudgetConfig(StrictModel):
    name: Text
    workgroups: tuple[str, ...] = ("*",)
    period: str
    timezone: str = "UTC"
    limit_usd: Number = Field(gt=0)
    thresholds: tuple[BudgetThreshold, ...]
    notify_before: Duration | None = None

    @field_validator("workgroups")
    @classmethod
    def _check_globs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return check_globs(value)

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


def _unique_names(value: tuple[Any, ...], what: str, key: str) -> None:
    seen: dict[str, int] = {}
    for index, item in enumerate(value):
        if item.name in seen:
            raise FieldProblem(f"duplicate {what} name", f"already used by {key}[{seen[item.name]}]; "
                               "names must be unique", subpath=(index, "name"), value=item.name)
        seen[item.name] = index


class Settings(StrictModel):
    aws: AwsSettings = Field(default_factory=AwsSettings)
    workgroups: tuple[str, ...] = ("*",)
    mode: Mode = "enforce"
    discovery_interval: Duration = timedelta(seconds=10)
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

    def watches(self, workgroup: str) -> bool:
        """Whether the top-level ``workgroups`` globs include ``workgroup``."""
        return any(fnmatch.fnmatchcase(workgroup, glob) for glob in self.workgroups)

    def policy_for(self, workgroup: str) -> PolicyConfig | None:
        """The policy that governs ``workgroup``: the first, in file order, whose globs match it.

        ``None`` when the workgroup is not watched or no policy matches (then nothing is acted on).
        """
        if not self.watches(workgroup):
            return None
        return next((policy for policy in self.policies if policy.matches(workgroup)), None)

    def budgets_for(self, workgroup: str) -> tuple[BudgetConfig, ...]:
        """Every budget whose globs match ``workgroup`` (all of them apply, unlike policies)."""
        return tuple(budget for budget in self.budgets if budget.matches(workgroup))

    def mode_for(self, policy: PolicyConfig) -> Mode:
        """The effective mode of ``policy``: its own ``mode`` if set, else the global ``mode``."""
        return policy.effective_mode(self.mode)
