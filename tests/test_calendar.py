"""The calendar's cached conversions (rules.dates.Calendar) equal the exact ones, in any time zone.

`Calendar.day` finds an instant's local date from cached day starts, and `Calendar.iso` writes an
instant from its local day and that day's offset: both are on the hot path of every decision and
replay, and both must give exactly what `datetime.fromtimestamp(epoch, tz)` gives, across daylight
saving changes at midnight, skipped days, half-hour offsets and offsets with seconds."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

from hypothesis import given, settings
from hypothesis import strategies as st

from bonuscli.rules.dates import Calendar, zone

ZONES = ["Europe/Moscow", "UTC", "Europe/Berlin", "America/Sao_Paulo", "America/Santiago", "Pacific/Apia",
         "Australia/Lord_Howe", "Asia/Kathmandu", "America/St_Johns", "Africa/Casablanca", "Europe/Amsterdam",
         "America/Havana", "Asia/Tehran"]
LOW, HIGH = int(dt.datetime(1900, 1, 2, tzinfo=dt.timezone.utc).timestamp()), \
    int(dt.datetime(2100, 1, 1, tzinfo=dt.timezone.utc).timestamp())


def calendar(name):
    return Calendar(SimpleNamespace(timezone=name, validity_months=12, closing_date=None))


@settings(max_examples=400, deadline=None)
@given(name=st.sampled_from(ZONES), epochs=st.lists(
    st.one_of(st.integers(LOW, HIGH), st.integers(1293753600 - 3 * 86400, 1293753600 + 3 * 86400),
              st.integers(1325203200 - 2 * 86400, 1325203200 + 2 * 86400)), min_size=1, max_size=30))
def test_day_and_iso_equal_the_exact_conversions(name, epochs):
    cal, tz = calendar(name), zone(name)
    for epoch in epochs:  # one calendar for all: its caches are warm from the instants before
        exact = dt.datetime.fromtimestamp(epoch, tz)
        assert cal.day(epoch) == exact.date().toordinal(), (name, epoch)
        assert cal.iso(epoch) == exact.isoformat(timespec="seconds"), (name, epoch)


def test_around_every_transition_of_a_year():
    """Every second of the hour around each change of offset in 2011 (Apia skipped 30 December)."""
    for name in ZONES:
        cal, tz = calendar(name), zone(name)
        t = int(dt.datetime(2011, 1, 1, tzinfo=dt.timezone.utc).timestamp())
        end = t + 366 * 86400
        prev = dt.datetime.fromtimestamp(t, tz).utcoffset()
        while t < end:
            off = dt.datetime.fromtimestamp(t, tz).utcoffset()
            if off != prev:
                for s in range(t - 1800, t + 1800, 7):
                    exact = dt.datetime.fromtimestamp(s, tz)
                    assert cal.day(s) == exact.date().toordinal(), (name, s)
                    assert cal.iso(s) == exact.isoformat(timespec="seconds"), (name, s)
                prev = off
            t += 1800
