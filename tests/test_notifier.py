from __future__ import annotations

from datetime import UTC, datetime, timedelta

import anyio
from prometheus_client import CollectorRegistry

from supervisor.clock import Clock, ManualClock, SystemClock
from supervisor.config import WebhookChannel
from supervisor.metrics import Metrics
from supervisor.notify import Notifier, text
from supervisor.notify.channels import DeliveryError
from supervisor.notify.messages import Message
from tests.virtual_time import virtual_time


class Fake:
    def __init__(self, name: str, *, fail: int = 0, block: anyio.Event | None = None, retries: int = 2,
                 clock: Clock | None = None) -> None:
        self.name, self.retries, self.fail, self.block = name, retries, fail, block
        self.got: list[str] = []
        self.clock = clock
        self.attempts: list[datetime] = []

    async def deliver(self, message: Message) -> None:
        if self.clock is not None:
            self.attempts.append(self.clock.now())
        if self.block is not None:
            await self.block.wait()
        if self.fail:
            self.fail -= 1
            raise DeliveryError("nope", retryable=True)
        self.got.append(message.event)

    async def close(self) -> None:
        return None


def channel(**kwargs: object) -> WebhookChannel:
    return WebhookChannel.model_validate({"type": "webhook", "url": "http://127.0.0.1:9/x", **kwargs})


def count(metrics: Metrics, channel_name: str, outcome: str) -> float:
    return metrics.registry.get_sample_value("athena_supervisor_notifications_total",
                                             {"channel": channel_name, "outcome": outcome}) or 0.0


async def test_filters_retries_and_never_blocks_the_emitter() -> None:
    metrics = Metrics(CollectorRegistry())
    everything, critical, flaky = Fake("a"), Fake("b"), Fake("c", fail=2)
    notifier = Notifier([(channel(), everything), (channel(min_severity="critical"), critical),
                         (channel(events=["violation"]), flaky)],
                        metrics=metrics, journal=None, clock=SystemClock(), wait_initial=0.001)
    notifier.emit("violation", {"policy": "p", "target_kind": "calculation", "target_id": "c1"})
    notifier.emit("escalation_failed", {"policy": "p", "session_id": "s1", "workgroup": "w"})
    async with anyio.create_task_group() as task_group:
        await task_group.start(notifier.run)
        assert await notifier.flush(timedelta(seconds=5)) == 0
        task_group.cancel_scope.cancel()
    assert everything.got == ["violation", "escalation_failed"]
    assert critical.got == ["escalation_failed"]
    assert flaky.got == ["violation"]
    assert (count(metrics, "c", "retried"), count(metrics, "c", "delivered")) == (2, 1)


async def test_a_full_queue_drops_and_counts() -> None:
    metrics = Metrics(CollectorRegistry())
    stuck = Fake("s", block=anyio.Event())
    notifier = Notifier([(channel(), stuck)], metrics=metrics, journal=None, clock=SystemClock(), buffer=2)
    for _ in range(5):
        notifier.emit("violation", {})
    assert count(metrics, "s", "dropped") == 3
    assert await notifier.flush(timedelta(milliseconds=10)) == 2  # never ran: still queued
    assert count(metrics, "s", "dropped") == 5


class NoJitter:
    def uniform(self, a: float, b: float) -> float:
        return a


async def test_retries_and_the_shutdown_flush_wait_on_the_injected_clock() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    clock = ManualClock(t0)
    metrics = Metrics(CollectorRegistry())
    down = Fake("d", fail=100, retries=10, clock=clock)
    notifier = Notifier([(channel(), down)], metrics=metrics, journal=None, clock=clock, rng=NoJitter())
    notifier.emit("violation", {})
    left: list[int] = []
    flushed = anyio.Event()

    async def flush() -> None:
        left.append(await notifier.flush(timedelta(seconds=5)))
        flushed.set()

    async with virtual_time(clock) as vt, anyio.create_task_group() as task_group:
        await task_group.start(notifier.run)
        task_group.start_soon(flush)
        await vt.run_until_set(flushed)
        task_group.cancel_scope.cancel()
    # Backoff 200 ms doubling (no jitter here); the sixth attempt would be at 6.2 s, after the flush bound.
    assert down.attempts == [t0 + timedelta(seconds=s) for s in (0, 0.2, 0.6, 1.4, 3.0)]
    assert clock.now() == t0 + timedelta(seconds=5)
    assert left == [1]
    assert (count(metrics, "d", "retried"), count(metrics, "d", "dropped"), count(metrics, "d", "failed")) == (5, 1, 0)


def test_texts_are_sentences() -> None:
    assert text("budget_threshold", {"budget": "b", "at_percent": 80, "limit_usd": 200, "spent_usd": 161.5,
                                     "forecast_usd": 230, "action": "notify", "mode": "enforce"}) == (
        "Budget b reached 80% of 200 USD: spent 161.5 USD, forecast 230 USD; action: notify (enforce).")
    assert text("warning", {"budget": "b", "spent_usd": 1, "limit_usd": 2, "at_percent": 100,
                            "action": "disable_workgroup", "predicted_at": "T"}).startswith("Warning: budget b")
    assert text("workgroup_enabled", {"workgroup": "w", "budget": "b"}) == (
        "Workgroup w enabled again: the period of budget b has reset.")
