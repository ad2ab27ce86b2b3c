"""The supervisor's configuration: models, YAML loading, environment overrides, precise errors.

See ``docs/configuration.md`` for every key. Import from here, not from the submodules.
"""

from __future__ import annotations

from supervisor.config.errors import ConfigError, ConfigProblem
from supervisor.config.loading import ENV_PREFIX, LoadedConfig, load_config, load_settings, parse_config, parse_settings
from supervisor.config.models import (
    AwsSettings,
    BudgetAction,
    BudgetConfig,
    BudgetThreshold,
    CalculationLimits,
    DiscoverySettings,
    Duration,
    EscalationSettings,
    EventBridgeChannel,
    EventName,
    HttpSettings,
    JournalSettings,
    LogLevel,
    Mode,
    NotificationChannel,
    PeriodKind,
    PolicyAction,
    PolicyConfig,
    PricingSettings,
    SafetySettings,
    SessionLimits,
    Settings,
    Severity,
    SnsChannel,
    WebhookChannel,
)

__all__ = [
    "ENV_PREFIX",
    "AwsSettings",
    "BudgetAction",
    "BudgetConfig",
    "BudgetThreshold",
    "CalculationLimits",
    "ConfigError",
    "ConfigProblem",
    "DiscoverySettings",
    "Duration",
    "EscalationSettings",
    "EventBridgeChannel",
    "EventName",
    "HttpSettings",
    "JournalSettings",
    "LoadedConfig",
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
    "load_config",
    "load_settings",
    "parse_config",
    "parse_settings",
]
