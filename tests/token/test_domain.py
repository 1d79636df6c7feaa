"""Pure rules of the token service."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from services.token.domain import day_window


@given(st.integers(min_value=0, max_value=4_102_444_800_000).map(lambda ms: ms / 1000))
def test_the_quota_day_is_the_utc_calendar_day(now: float) -> None:
    t = datetime.fromtimestamp(now, UTC)
    name, reset = day_window(now)
    assert name == t.strftime("%Y-%m-%d")
    assert reset == datetime(t.year, t.month, t.day, tzinfo=UTC) + timedelta(days=1)
    assert reset.timestamp() > now >= (reset - timedelta(days=1)).timestamp()


def test_the_quota_day_turns_at_utc_midnight() -> None:
    midnight = datetime(2026, 12, 8, tzinfo=UTC).timestamp()
    assert day_window(midnight - 0.001)[0] == "2026-12-07"
    assert day_window(midnight) == ("2026-12-08", datetime(2026, 12, 9, tzinfo=UTC))
