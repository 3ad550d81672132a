"""agents/notifier.py: which topic and key each win-back message goes to (the sending and
recording on a real broker and Redis are tests/e2e/test_winback.py)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry

from retention_tracker.agents.metrics import WorkerMetrics
from retention_tracker.agents.notifier import Notifier
from retention_tracker.config.settings import Settings
from retention_tracker.streams.batch import BatchRules
from retention_tracker.streams.calendar import AppCalendar


def notifier() -> Notifier:
    settings = Settings(inactive_topic_pattern="lapsed.{days}d", reactivated_topic="back")
    return Notifier(settings, store=None, rules=BatchRules(400),  # type: ignore[arg-type]
                    metrics=WorkerMetrics(CollectorRegistry()), clock_ms=lambda: 0,
                    calendar_for=lambda _app: AppCalendar("UTC"))


def test_each_threshold_has_its_topic_and_every_message_is_keyed_by_its_user() -> None:
    inactive: list[dict[str, Any]] = [{"threshold_days": 2, "user_id": "u1"},
                                      {"threshold_days": 7, "user_id": "u2"}]
    back: list[dict[str, Any]] = [{"threshold_days": [2, 7], "user_id": "u3"}]
    messages = notifier()._messages(inactive, back)
    assert [(topic, key) for topic, key, _ in messages] == [
        ("lapsed.2d", "u1"), ("lapsed.7d", "u2"), ("back", "u3")]
    assert [body for _, _, body in messages] == [*inactive, *back]
