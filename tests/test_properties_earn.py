"""Property tests for earning (RULES.md §3, §2 card welcome, §4 expiry), on the rules module directly.

The shipped catalog is loaded once with bonuscli.catalog.validate. Expectations
come from an independent model written here from RULES.md (exact fractions,
our own month arithmetic), not from the program's helpers.
"""

from __future__ import annotations

import calendar
import datetime as dt
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bonuscli import catalog as catalog_mod
from bonuscli import rules
from bonuscli.model import Decision, Refusal

ROOT = Path(__file__).resolve().parent.parent
CAT, PROBLEMS = catalog_mod.validate(ROOT / "catalog.yaml", "catalog.yaml")
assert CAT is not None and not PROBLEMS, PROBLEMS

MSK = ZoneInfo("Europe/Moscow")
PHONE = "9161234567"
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# RULES.md §3, written out by hand
RATE = {"mobile": 5, "mobile_internet": 5, "home_internet": 5, "home_tv": 5, "home_phone": 5,
        "mts_store": 3, "partner_store": 3, "taxi": 5, "in_app": 5}
TENURE = {"mobile", "mobile_internet", "home_internet", "home_tv", "home_phone"}
ELIGIBLE = sorted(RATE) + ["card"]
INELIGIBLE = ["tariff_package", "topup_voucher", "loan_repayment", "utilities", "money_transfer"]

amounts = st.integers(min_value=1, max_value=100_000_000).map(lambda c: Decimal(c) / 100)
months = st.integers(min_value=0, max_value=400)
card_totals = st.one_of(
    st.sampled_from(["0", "14999.99", "15000", "15000.00", "15000.01", "29999.99", "30000", "30000.01"]).map(Decimal),
    st.integers(min_value=0, max_value=10_000_000).map(lambda c: Decimal(c) / 100),
)


def coef_for_months(n: int) -> Fraction:
    if n <= 6:
        return Fraction(1)
    if n <= 12:
        return Fraction(11, 10)
    if n <= 24:
        return Fraction(12, 10)
    return Fraction(13, 10)


def card_rpp(last_month: Decimal) -> int:
    if last_month > 30000:
        return 10
    if last_month > 15000:
        return 20
    return 30


def plus_months(day: dt.date, n: int) -> dt.date:
    y, m = divmod(day.month - 1 + n, 12)
    year, month = day.year + y, m + 1
    return dt.date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def coef_on(since: dt.date, on: dt.date) -> Fraction:
    if on <= plus_months(since, 6):
        return Fraction(1)
    if on <= plus_months(since, 12):
        return Fraction(11, 10)
    if on <= plus_months(since, 24):
        return Fraction(12, 10)
    return Fraction(13, 10)


def calc_points(amount, category, n=0, last=Decimal(0)) -> dict:
    d = rules.calc(CAT, amount, category, months=n, card_last_month=last)
    assert isinstance(d, Decision), d
    assert d.writes == ()
    return d.view


def expected_calc(amount: Decimal, category: str, n: int, last: Decimal):
    rpp = card_rpp(last) if category == "card" else RATE[category]
    c = coef_for_months(n) if category in TENURE else Fraction(1)
    return int(Fraction(amount) * c / rpp), rpp


# ---------------------------------------------------------------- pure arithmetic


@SETTINGS
@given(amounts, st.sampled_from(ELIGIBLE), months, card_totals)
def test_calc_matches_exact_formula_and_is_never_negative(amount, category, n, last):
    v = calc_points(amount, category, n, last)
    points, rpp = expected_calc(amount, category, n, last)
    assert v["rub_per_point"] == rpp
    assert v["points"] == points
    assert isinstance(v["points"], int)
    assert v["points"] >= 0


@SETTINGS
@given(amounts, st.sampled_from(ELIGIBLE), months, card_totals)
def test_points_never_more_than_amount_over_rate_times_1_3(amount, category, n, last):
    v = calc_points(amount, category, n, last)
    assert Fraction(v["points"]) <= Fraction(amount) / v["rub_per_point"] * Fraction(13, 10)
    # and never more than the cheapest rate in the catalog allows
    assert Fraction(v["points"]) <= Fraction(amount) / 3 * Fraction(13, 10)


@SETTINGS
@given(amounts, amounts, st.sampled_from(ELIGIBLE), months, card_totals)
def test_points_monotone_in_amount(a, b, category, n, last):
    lo, hi = min(a, b), max(a, b)
    assert calc_points(lo, category, n, last)["points"] <= calc_points(hi, category, n, last)["points"]


@SETTINGS
@given(amounts, amounts, st.sampled_from(ELIGIBLE), months, card_totals)
def test_splitting_a_payment_never_earns_more(a, b, category, n, last):
    if a + b > Decimal(1_000_000):
        b = Decimal(1_000_000) - a
        if b <= 0:
            return
    whole = calc_points(a + b, category, n, last)["points"]
    parts = calc_points(a, category, n, last)["points"] + calc_points(b, category, n, last)["points"]
    assert parts <= whole
    # the loss from splitting is less than one point per extra part (one floor per calculation)
    assert whole - parts <= 1


@SETTINGS
@given(amounts, st.sampled_from([Decimal("1.0"), Decimal("1.1"), Decimal("1.2"), Decimal("1.3")]),
       st.sampled_from([3, 5, 10, 20, 30]))
def test_points_for_floors_once_at_the_end(amount, coefficient, rpp):
    got = rules.points_for(amount, coefficient, rpp)
    assert got == int(Fraction(amount) * Fraction(coefficient) / rpp)
    assert got >= 0


@SETTINGS
@given(st.lists(amounts, min_size=2, max_size=6), st.sampled_from([Decimal("1.0"), Decimal("1.1"),
                                                                 Decimal("1.2"), Decimal("1.3")]),
       st.sampled_from([3, 5, 10, 20, 30]))
def test_points_for_split_in_many_parts(parts, coefficient, rpp):
    whole = rules.points_for(sum(parts), coefficient, rpp)
    split = sum(rules.points_for(p, coefficient, rpp) for p in parts)
    assert split <= whole
    assert whole - split <= len(parts) - 1


@SETTINGS
@given(st.sampled_from(INELIGIBLE), amounts)
def test_calc_ineligible_refused(category, amount):
    r = rules.calc(CAT, amount, category, months=0)
    assert isinstance(r, Refusal)
    assert r.exit_code == 1


# ---------------------------------------------------------------- in-memory ledgers


def stamp(events: list, new) -> list:
    n = len(events)
    return [{"v": 1, "id": f"{PHONE}.{n + i}", **e} for i, e in enumerate(new, start=1)]


def joined(at: dt.datetime, since: dt.date) -> list:
    m = rules.replay(CAT, PHONE, [], at)
    d = rules.join(CAT, m, at, {"region": "RU-MOW", "method": "sms", "services": ["mobile"],
                                "customer_since": since})
    assert isinstance(d, Decision), d
    ((phone, evs),) = d.writes
    assert phone == PHONE
    return stamp([], evs)


def apply_row(events: list, row) -> str:
    """Apply one earn row like a batch does: replay as of the row's instant, decide, append."""
    at, amount, category, ref = row
    m = rules.replay(CAT, PHONE, events, at)
    d = rules.earn(CAT, m, at, amount, category, ref)
    if isinstance(d, Refusal):
        return "refused"
    if not d.writes:
        assert d.view["duplicate"] is True
        return "duplicate"
    for phone, evs in d.writes:
        assert phone == PHONE
        events.extend(stamp(events, evs))
    return "applied"


START = dt.datetime(2025, 1, 6, 9, 0, tzinfo=MSK)

rows_strategy = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=20 * 24 * 60),         # minutes after the previous row
        st.integers(min_value=1, max_value=500_000).map(lambda c: Decimal(c) / 100),
        st.sampled_from(ELIGIBLE + ["card", "card", "utilities"]),
        st.integers(min_value=0, max_value=7),                     # ref number (repeats are duplicates)
    ),
    min_size=1, max_size=12,
)


def build_rows(spec):
    at = START + dt.timedelta(hours=1)
    out = []
    for gap, amount, category, ref in spec:
        at = at + dt.timedelta(minutes=gap)
        out.append((at, amount, category, f"tx-{ref}"))
    return out


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows_strategy)
def test_applying_a_batch_twice_equals_once(spec):
    rows = build_rows(spec)
    events = joined(START, dt.date(2024, 1, 1))
    first = [apply_row(events, r) for r in rows]
    once = [dict(e) for e in events]
    end = rows[-1][0] + dt.timedelta(days=1)
    state_once = rules.replay(CAT, PHONE, events, end)
    second = [apply_row(events, r) for r in rows]
    assert events == once
    assert "applied" not in second
    assert second.count("refused") <= first.count("refused")
    state_twice = rules.replay(CAT, PHONE, events, end)
    assert state_twice.available() == state_once.available()
    assert [(l.expires_on, l.points) for l in state_twice.lots_view()] == [(l.expires_on, l.points) for l in state_once.lots_view()]
    # each ref applied at most once
    refs = [e.get("ref") for e in events if e["type"] == "earn"]
    assert len(refs) == len(set(refs))


timeline = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=45 * 24 * 60),         # minutes after the previous earn
        st.integers(min_value=1, max_value=2_500_000).map(lambda c: Decimal(c) / 100),
        st.sampled_from(ELIGIBLE + ["card", "card", "card"]),
    ),
    min_size=1, max_size=18,
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(timeline, st.integers(min_value=0, max_value=500), st.integers(min_value=0, max_value=900))
def test_lots_add_up_to_credits_and_match_an_independent_model(spec, since_days, tail_days):
    since = START.date() - dt.timedelta(days=since_days)
    events = joined(START, since)
    credits = [(START.date(), 150)]  # (credit date, points): the welcome
    card_by_month: dict = {}
    card_welcome_given = False
    at = START
    for gap, amount, category in spec:
        at = at + dt.timedelta(minutes=gap + 1)
        day = at.astimezone(MSK).date()
        # the model's expectation, from RULES.md
        if category == "card":
            py, pm = (day.year - 1, 12) if day.month == 1 else (day.year, day.month - 1)
            rpp = card_rpp(card_by_month.get((py, pm), Decimal(0)))
            c = Fraction(1)
        else:
            rpp = RATE[category]
            c = coef_on(since, day) if category in TENURE else Fraction(1)
        want_points = int(Fraction(amount) * c / rpp)
        want_bonus = []
        if category == "card":
            before = card_by_month.get((day.year, day.month), Decimal(0))
            if not card_welcome_given and before + amount >= 3000:
                want_bonus = [{"reason": "card_welcome", "points": 1000}]
                card_welcome_given = True
            card_by_month[(day.year, day.month)] = before + amount

        m = rules.replay(CAT, PHONE, events, at)
        d = rules.earn(CAT, m, at, amount, category)
        assert isinstance(d, Decision), d
        assert d.view["points"] == want_points, (amount, category, day)
        assert d.view["rub_per_point"] == rpp
        assert d.view["bonuses"] == want_bonus
        for _, evs in d.writes:
            events.extend(stamp(events, evs))
        credits.append((day, want_points + sum(b["points"] for b in want_bonus)))

    now = at + dt.timedelta(days=tail_days)
    today = now.astimezone(MSK).date()
    m = rules.replay(CAT, PHONE, events, now)
    total = sum(p for _, p in credits)
    alive = sum(p for d0, p in credits if plus_months(d0, 12) > today)
    assert m.available() == sum(l.points for l in m.lots_view())
    assert all(l.points > 0 for l in m.lots_view())
    assert m.available() == alive
    assert m.totals["credited"] == total
    assert m.available() + m.totals["expired"] == m.totals["credited"]
    assert m.available() >= 0
