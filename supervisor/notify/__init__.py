"""Notifications: webhook, SNS and EventBridge channels fed by a non-blocking event sink."""

from __future__ import annotations

from supervisor.notify.messages import DETAIL_TYPES, Message, text
from supervisor.notify.notifier import Notifier, channel_name, notifying

__all__ = ["DETAIL_TYPES", "Message", "Notifier", "channel_name", "notifying", "text"]
