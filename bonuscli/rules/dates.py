"""Dates, instants and rates: the arithmetic every other rules module builds on.

Owns: instants as integer seconds since the epoch (UTC) parsed from ledger
text without building datetimes, local dates in the program's time zone as
ordinals, expiry and activation dates, tenure coefficients, card tiers and the
points formula. Pure: no files, no clock, no environment. Imports model only.

Why integers: a replay compares and orders hundreds of thousands of instants;
`int` comparisons and dict look-ups keyed by small ints keep it at a few
microseconds an event (docs/performance.md). Everything here is exact: the
conversions are cached, never approximated.
"""

from __future__ import annotations

import calendar as _calendar
import datetime as dt
from decimal import Decimal

from bonuscli.model import Catalog, decimal_text, money, zone

EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()
UTC = dt.timezone.utc


# ---------------------------------------------------------------- instants

_BASE: dict = {}  # "YYYY-MM-DD+HH:MM" -> epoch seconds of that date's 00:00 in that offset


def _base(key: str) -> int:
    day = dt.date.fromisoformat(key[:10])
    off = key[10:]
    sign = -1 if off[0] == "-" else 1
    offset = sign * (int(off[1:3]) * 3600 + int(off[4:6]) * 60)
    value = (day.toordinal() - EPOCH_ORDINAL) * 86400 - offset
    _BASE[key] = value
    return value


def instant(text: str) -> int:
    """Seconds since the epoch of an ISO 8601 instant as ledgers store it (`2025-03-01T12:00:00+03:00`).

    The stored shape is parsed by slicing; anything else goes through datetime (exact, slower)."""
    if len(text) == 25 and text[10] == "T" and text[19] in "+-":
        key = text[:10] + text[19:]
        base = _BASE.get(key)
        if base is None:
            base = _base(key)
        return base + int(text[11:13]) * 3600 + int(text[14:16]) * 60 + int(text[17:19])
    when = dt.datetime.fromisoformat(text)
    if when.tzinfo is None:
        raise ValueError(f"an instant without its UTC offset: {text!r}")
    return int(when.timestamp())


def seconds(when: dt.datetime) -> int:
    """An aware datetime as epoch seconds (whole seconds: ledgers store no fractions)."""
    return int(when.timestamp()) if when.microsecond == 0 else int(when.replace(microsecond=0).timestamp())


class Calendar:
    """A catalog's time zone, validity and closing date, with exact cached conversions."""

    __slots__ = ("tz", "tzname", "validity", "closing", "_day", "_start", "_expiry", "_ym", "_text", "days",
                 "tenure", "coef_text", "_date_text", "_guess", "_whole")

    def __init__(self, cat: Catalog):
        self.tz = zone(cat.timezone)
        self.tzname = cat.timezone
        self.validity = cat.validity_months
        self.closing = cat.closing_date.toordinal() if cat.closing_date is not None else None
        self._day: dict = {}  # 15-minute bucket -> local ordinal (buckets that do not straddle a local midnight)
        self._start: dict = {}  # local ordinal -> epoch of its 00:00 local
        self._expiry: dict = {}  # local ordinal credited -> ordinal of expires_on
        self._ym: dict = {}  # ordinal -> year * 12 + month - 1
        self._text: dict = {}
        # "YYYY-MM-DD+HH:MM" (date and offset of a stored instant) -> (local ordinal, expires_on ordinal
        # of a credit that day, year*12+month-1, epoch of that date's 00:00 in that offset), for dates
        # on which that offset is the program's all day long; else None (then: the exact, slower way)
        self.days: dict = {}
        self.tenure: dict = {}  # customer_since (text or date) -> its tenure steps (tenure_coefficient)
        self.coef_text: dict = {}  # coefficient -> its text as stored
        self._date_text: dict = {}
        self._guess = 0  # the UTC offset (seconds) of the last local day found: where `day` looks first
        self._whole: dict = {}  # local ordinal -> (offset seconds, offset text) when it holds all day, or None

    def day_info(self, key: str):
        """`days[key]`, computed (see __init__)."""
        if key in self.days:
            return self.days[key]
        info = None
        try:
            base = _BASE.get(key)
            if base is None:
                base = _base(key)
            d = dt.date.fromisoformat(key[:10])
            o = d.toordinal()
            start = self.start(o)
            end = self.start(o + 1)
            # the stored offset is the program's at every instant of that local day
            if start == base and end - start == 86400 and self._exact_day(start) == o and self._exact_day(end - 1) == o:
                info = (o, self.expiry(o), self.ym(o), base)
        except ValueError:
            info = None
        if len(self.days) > 100_000:
            self.days.clear()
        self.days[key] = info
        return info

    def day(self, epoch: int) -> int:
        """The local date (ordinal) of an instant: the day whose local 00:00 (`start`) is at or before
        it and whose next day's is after it, found from the cached starts of days."""
        bucket = epoch // 900
        d = self._day.get(bucket)
        if d is not None:
            return d
        o = (epoch + self._guess) // 86400 + EPOCH_ORDINAL
        start = self.start
        while epoch < start(o):
            o -= 1
        while epoch >= start(o + 1):
            o += 1
        self._guess = (o - EPOCH_ORDINAL) * 86400 - start(o)
        if start(o) <= bucket * 900 and bucket * 900 + 899 < start(o + 1):
            if len(self._day) > 200_000:
                self._day.clear()
            self._day[bucket] = o
        return o

    def _exact_day(self, epoch: int) -> int:
        return dt.datetime.fromtimestamp(epoch, self.tz).date().toordinal()

    def start(self, ordinal: int) -> int:
        """The instant local 00:00 of a date begins."""
        s = self._start.get(ordinal)
        if s is None:
            d = dt.date.fromordinal(ordinal)
            s = self._start[ordinal] = int(dt.datetime(d.year, d.month, d.day, tzinfo=self.tz).timestamp())
        return s

    def expiry(self, ordinal: int) -> int:
        """expires_on (ordinal) of points credited on a local date: validity months later, clamped,
        and never after a closing date."""
        e = self._expiry.get(ordinal)
        if e is None:
            e = add_months(dt.date.fromordinal(ordinal), self.validity).toordinal()
            if self.closing is not None and self.closing < e:
                e = self.closing
            self._expiry[ordinal] = e
        return e

    def ym(self, ordinal: int) -> int:
        v = self._ym.get(ordinal)
        if v is None:
            d = dt.date.fromordinal(ordinal)
            v = self._ym[ordinal] = d.year * 12 + d.month - 1
        return v

    def local(self, epoch: int) -> dt.datetime:
        return dt.datetime.fromtimestamp(epoch, self.tz)

    def iso(self, epoch: int) -> str:
        """An instant as ledgers write it, in program time (`datetime.isoformat`, built from the local
        day and its offset when that offset holds all day long)."""
        t = self._text.get(epoch)
        if t is None:
            if len(self._text) > 4096:
                self._text.clear()
            o = self.day(epoch)
            whole = self._whole.get(o, 0)
            if whole == 0:
                whole = self._whole_day(o)
            if whole is None:
                t = dt.datetime.fromtimestamp(epoch, self.tz).isoformat(timespec="seconds")
            else:
                secs = epoch + whole[0] - (o - EPOCH_ORDINAL) * 86400
                t = f"{self.date_text(o)}T{secs // 3600:02d}:{secs % 3600 // 60:02d}:{secs % 60:02d}{whole[1]}"
            self._text[epoch] = t
        return t

    def _whole_day(self, o: int):
        """(offset seconds, offset text) when the program's offset is the same all through local day
        `o` (a day of 86,400 seconds), else None."""
        start, end = self.start(o), self.start(o + 1)
        first, last = dt.datetime.fromtimestamp(start, self.tz), dt.datetime.fromtimestamp(end - 1, self.tz)
        off = first.utcoffset()
        whole = None
        if end - start == 86400 and off == last.utcoffset() and first.time() == dt.time(0):
            whole = (int(off.total_seconds()), first.isoformat(timespec="seconds")[19:])
        if len(self._whole) > 100_000:
            self._whole.clear()
        self._whole[o] = whole
        return whole

    def date_text(self, ordinal: int) -> str:
        """`date_of`, cached (an expiry date is written on every credit)."""
        t = self._date_text.get(ordinal)
        if t is None:
            if len(self._date_text) > 4096:
                self._date_text.clear()
            t = self._date_text[ordinal] = dt.date.fromordinal(ordinal).isoformat()
        return t

    def closed(self, epoch: int) -> bool:
        return self.closing is not None and self.day(epoch) >= self.closing


_CALENDARS: dict = {}


def calendar_of(cat: Catalog) -> Calendar:
    c = _CALENDARS.get(id(cat))
    if c is None or c[0] is not cat:
        if len(_CALENDARS) > 64:
            _CALENDARS.clear()
        c = _CALENDARS[id(cat)] = (cat, Calendar(cat))
    return c[1]


def date_of(ordinal: int) -> str:
    return dt.date.fromordinal(ordinal).isoformat()


def ordinal(text: str) -> int:
    return dt.date.fromisoformat(text).toordinal()


def ym_text(ym: int) -> str:
    return f"{ym // 12:04d}-{ym % 12 + 1:02d}"


# ---------------------------------------------------------------- dates of the program


def add_months(day: dt.date, months: int) -> dt.date:
    """Same day-of-month `months` later, clamped to the month's end."""
    y, m = divmod(day.month - 1 + months, 12)
    year, month = day.year + y, m + 1
    last = _calendar.monthrange(year, month)[1]
    return dt.date(year, month, min(day.day, last))


def prev_ym(ym: int) -> int:
    return ym - 1


def local_date(cat: Catalog, when: dt.datetime) -> dt.date:
    return when.astimezone(zone(cat.timezone)).date()


def local(cat: Catalog, when: dt.datetime) -> dt.datetime:
    return when.astimezone(zone(cat.timezone))


def day_start(cat: Catalog, day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=zone(cat.timezone))


def expiry_date(cat: Catalog, credited_at: dt.datetime) -> dt.date:
    cal = calendar_of(cat)
    return dt.date.fromordinal(cal.expiry(cal.day(seconds(credited_at))))


def activation_instant(cat: Catalog, method: str, joined_at: dt.datetime) -> dt.datetime:
    act = cat.methods[method]
    if act.working_days:
        here = local(cat, joined_at)
        day, n = here.date(), 0
        while n < act.working_days:
            day += dt.timedelta(days=1)
            if day.weekday() < 5:
                n += 1
        return dt.datetime.combine(day, here.time(), tzinfo=zone(cat.timezone)).replace(fold=0)
    # RULES.md §1: N days after an instant is N x 24 hours of real time (UTC arithmetic; `+` on an
    # aware datetime adds wall-clock time, an hour off across a clock change)
    return (joined_at.astimezone(UTC) + dt.timedelta(hours=act.hours)).astimezone(zone(cat.timezone))


def closed(cat: Catalog, now: dt.datetime) -> bool:
    return cat.closing_date is not None and local_date(cat, now) >= cat.closing_date


def whole_months(since: dt.date, on: dt.date) -> int:
    n = (on.year - since.year) * 12 + on.month - since.month
    while n > 0 and add_months(since, n) > on:
        n -= 1
    return max(n, 0)


# ---------------------------------------------------------------- rates


_MONTHS_FROM = dt.date(2000, 1, 1)  # `--tenure-months N`: a customer since this date, spending N months later


def tenure_coefficient(cat: Catalog, since, on) -> Decimal:
    """THE tenure coefficient: for spending on local date `on` (a date or its ordinal) by a customer
    since `since` (a date or its ISO text): the first step whose `up_to` months after `since` is on or
    after `on` (RULES.md §3). Each customer-since date's steps are computed once per calendar (a
    batch or a diff asks for the same few thousand dates again and again)."""
    cal = calendar_of(cat)
    steps = cal.tenure.get(since)
    if steps is None:
        if len(cal.tenure) > 100_000:
            cal.tenure.clear()
        first = since if isinstance(since, dt.date) else dt.date.fromisoformat(since)
        steps = cal.tenure[since] = [(None if step.up_to is None else add_months(first, int(step.up_to)).toordinal(),
                                      step.value) for step in cat.tenure] + [(None, cat.tenure[-1].value)]
    day = on if type(on) is int else on.toordinal()
    for last, value in steps:
        if last is None or day <= last:
            return value
    return cat.tenure[-1].value  # not reached: the last step has no end


def tenure_for_months(cat: Catalog, months: int) -> Decimal:
    """The coefficient of a customer of exactly `months` whole months (`calc --tenure-months`): the
    same steps, for a customer since a first of the month spending that many months later."""
    return tenure_coefficient(cat, _MONTHS_FROM, add_months(_MONTHS_FROM, months))


def card_rate(cat: Catalog, last_month: Decimal) -> int:
    for step in cat.card_tiers:
        if step.up_to is None or last_month <= step.up_to:
            return int(step.value)
    return int(cat.card_tiers[-1].value)


def points_for(amount: Decimal, coefficient: Decimal, rub_per_point: int) -> int:
    """floor(amount x coefficient / rub_per_point), exact: one floor, at the end."""
    return int((amount * coefficient) // Decimal(rub_per_point))


def cents(text: str) -> int:
    """A stored money text ("499.90") as integer kopecks, exact."""
    whole, _, frac = text.partition(".")
    return int(whole) * 100 + (int((frac + "00")[:2]) if frac else 0)


def rub(kopecks: int) -> Decimal:
    return Decimal(kopecks) / 100


_ONE = Decimal("1.0")


def rate(cat: Catalog, category: str, *, since=None, on=None, months=None, card_last_month=Decimal(0),
         explain=True):
    """THE rate of a spending in `category`: (coefficient, rub_per_point, steps). `earn`, the batch,
    `diff` and `calc` all come here; `explain` only records the steps beside the same arithmetic
    (steps is None without it). `since`: a date or its ISO text; `on`: a date or its ordinal;
    `months`: whole months of tenure instead of `since`/`on` (`calc --tenure-months`)."""
    c = cat.categories[category]
    steps = [] if explain else None
    if c.tiered:
        rpp = card_rate(cat, card_last_month)
        if explain:
            steps.append({"rule": "card-tier", "detail": f"previous month's {category} payments {money(card_last_month)} RUB -> {rpp} RUB per point",
                          "last_month": money(card_last_month), "rub_per_point": rpp})
    else:
        rpp = c.rub_per_point
        if explain:
            steps.append({"rule": "rate", "detail": f"{category}: {rpp} RUB per point", "rub_per_point": rpp})
    coef = _ONE
    if not c.tenure:
        if explain:
            steps.append({"rule": "tenure", "detail": f"{category} does not use the tenure coefficient -> 1.0",
                          "coefficient": "1.0"})
    elif months is not None:
        coef = tenure_for_months(cat, months)
        if explain:
            steps.append({"rule": "tenure", "detail": f"customer for {months} months -> coefficient {decimal_text(coef)}",
                          "months": months, "coefficient": decimal_text(coef)})
    elif since is not None and on is not None:
        coef = tenure_coefficient(cat, since, on)
        if explain:
            since_d = since if isinstance(since, dt.date) else dt.date.fromisoformat(since)
            on_d = on if isinstance(on, dt.date) else dt.date.fromordinal(on)
            steps.append({"rule": "tenure", "detail": f"customer since {since_d}, spending on {on_d} -> coefficient {decimal_text(coef)}",
                          "customer_since": since_d.isoformat(), "on": on_d.isoformat(), "coefficient": decimal_text(coef)})
    return coef, rpp, steps


def exact_text(value: Decimal, places: int = 6) -> str:
    """An exact quotient shown to what it means: up to `places` decimals, trailing zeros dropped,
    and `...` when it was cut (33.333333...)."""
    q = Decimal(1).scaleb(-places)
    cut = value.quantize(q, rounding="ROUND_DOWN")
    text = format(cut.normalize(), "f") if cut != 0 else "0"
    return text + ("..." if cut != value else "")


def formula_step(amount, coef, rpp, points):
    exact = amount * coef / Decimal(rpp)
    shown = exact_text(exact)
    return {"rule": "formula", "detail": f"{money(amount)} x {decimal_text(coef)} / {rpp} = {shown} -> floor -> {points}",
            "exact": shown, "points": points}


def same_period(cal, a: int, b: int, per: str) -> bool:
    """Whether instants `a` and `b` fall in the same calendar day, month or year (`per`; "ever": always)."""
    if per == "ever":
        return True
    x, y = cal.day(a), cal.day(b)
    if per == "day":
        return x == y
    if per == "month":
        return cal.ym(x) == cal.ym(y)
    return cal.ym(x) // 12 == cal.ym(y) // 12
