"""Time as the shop sees it: a clock that tests can move, and the shop's calendar day."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo


class Clock:
    """The wall clock, always timezone-aware UTC."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock(Clock):
    """A clock that stays where it is put, for tests and for replaying a scenario."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("ManualClock needs an aware datetime")
        self._now = start.astimezone(UTC)

    def now(self) -> datetime:
        return self._now

    def set(self, moment: datetime) -> None:
        self._now = moment.astimezone(UTC)

    def advance(self, delta: timedelta) -> None:
        self._now += delta


def local_day(moment: datetime, zone: ZoneInfo) -> date:
    """The calendar day of `moment` in the shop's time zone."""
    return moment.astimezone(zone).date()


def next_local_midnight(moment: datetime, zone: ZoneInfo) -> datetime:
    """When the next calendar day starts in `zone`, as UTC."""
    local = moment.astimezone(zone)
    tomorrow = datetime.combine(local.date() + timedelta(days=1), datetime.min.time(), zone)
    return tomorrow.astimezone(UTC)


def add_months(moment: datetime, months: int) -> datetime:
    """Same day-of-month `months` later, clamped to the month's last day."""
    month_index = moment.month - 1 + months
    year, month = moment.year + month_index // 12, month_index % 12 + 1
    for day in range(moment.day, 27, -1):
        try:
            return moment.replace(year=year, month=month, day=day)
        except ValueError:
            continue
    return moment.replace(year=year, month=month, day=min(moment.day, 28))


def quarter_of(moment: datetime, zone: ZoneInfo) -> str:
    """The shop-local quarter label, e.g. `2026Q4`."""
    local = moment.astimezone(zone)
    return f"{local.year}Q{(local.month - 1) // 3 + 1}"
