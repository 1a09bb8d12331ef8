"""Property tests for expiry and redemption (RULES.md §4-§5), on the rules module directly.

Random sequences of earns, reward orders, store discounts and time passing are
decided by `rules.earn` / `rules.redeem` and their events appended to an
in-memory ledger stamped the way `bonuscli/cli.py` `stamp` does. Alongside, an
independent model written here from RULES.md keeps the lots (credited on local
date D, expiring on D + 12 months clamped to the month's end, gone from 00:00
Moscow time), spends oldest expiry first, and applies the regional prices, the
limits (book_first once ever, one certificate a calendar month) and the store
discount arithmetic (cap = floor(price x 0.99 x 10), discount = points / 10 RUB).
"""

from __future__ import annotations

import calendar
import datetime as dt
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from bonuscli import catalog as catalog_mod
from bonuscli import rules
from bonuscli.model import SCHEMA_VERSION, Decision, Refusal, from_iso

ROOT = Path(__file__).resolve().parent.parent
CAT, PROBLEMS = catalog_mod.validate(ROOT / "catalog.yaml", "catalog.yaml")
assert CAT is not None and not PROBLEMS, PROBLEMS

MSK = ZoneInfo("Europe/Moscow")
PHONE = "9161234567"
REGION = "RU-MOW"
START = dt.datetime(2024, 1, 31, 9, 0, tzinfo=MSK)   # a month's end in a leap year
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# RULES.md §5, Moscow prices (RU-MOW), by hand
PRICES = {"minutes_30": 210, "sms_50": 180, "superbit": 990, "black_list": 30, "vnet": 220, "book_first": 100,
          "cert_sportmaster_500": 5000, "cert_letoile_500": 5000, "mgts_50": 500}
CERTIFICATES = {"cert_sportmaster_500", "cert_letoile_500"}


def plus_months(day: dt.date, n: int) -> dt.date:
    y, m = divmod(day.month - 1 + n, 12)
    year, month = day.year + y, m + 1
    return dt.date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def local_day(at: dt.datetime) -> dt.date:
    return at.astimezone(MSK).date()


def stamp(events: list, new) -> list:
    """As bonuscli.cli.stamp: schema version, `<phone>.<n>` ids, type and at first."""
    n = len(events)
    out = []
    for i, e in enumerate(new, start=1):
        rest = {k: v for k, v in e.items() if k not in ("type", "at")}
        out.append({"v": SCHEMA_VERSION, "id": f"{PHONE}.{n + i}", "type": e["type"], "at": e["at"], **rest})
    return out


def append(events: list, d: Decision) -> None:
    for phone, evs in d.writes:
        assert phone == PHONE
        events.extend(stamp(events, evs))


class Model:
    """Lots, spending and expiry as RULES.md §4 describes them."""

    def __init__(self):
        self.lots = []            # [expires_on, points], kept sorted by expiry (stable)
        self.credited = self.spent = self.expired = 0
        self.orders = []          # (local date, code)

    def available(self) -> int:
        return sum(p for _, p in self.lots)

    def credit(self, at: dt.datetime, points: int) -> None:
        if points <= 0:
            return
        self.credited += points
        self.lots.append([plus_months(local_day(at), 12), points])
        self.lots.sort(key=lambda l: l[0])

    def expire(self, at: dt.datetime) -> None:
        today = local_day(at)
        gone = sum(p for d, p in self.lots if d <= today)
        self.expired += gone
        self.lots = [l for l in self.lots if l[0] > today]

    def spend(self, points: int) -> None:
        assert points <= self.available()
        self.spent += points
        for lot in self.lots:
            n = min(lot[1], points)
            lot[1] -= n
            points -= n
        self.lots = [l for l in self.lots if l[1] > 0]

    def by_date(self) -> list:
        out: dict = {}
        for d, p in self.lots:
            out[d] = out.get(d, 0) + p
        return sorted(out.items())

    def limit_reached(self, code: str, at: dt.datetime) -> bool:
        day = local_day(at)
        if code == "book_first":
            return any(c == "book_first" for _, c in self.orders)
        if code in CERTIFICATES:
            return any(c in CERTIFICATES and (d.year, d.month) == (day.year, day.month) for d, c in self.orders)
        return False


def program_lots(m) -> list:
    out: dict = {}
    for lot in m.lots_view():
        out[lot.expires_on] = out.get(lot.expires_on, 0) + lot.points
    return sorted(out.items())


def joined() -> list:
    m = rules.replay(CAT, PHONE, [], START)
    d = rules.join(CAT, m, START, {"region": REGION, "method": "sms", "services": ["mobile"]})
    assert isinstance(d, Decision), d
    events: list = []
    append(events, d)
    return events


def money(cents: int) -> str:
    sign = "-" if cents < 0 else ""
    cents = abs(cents)
    return f"{sign}{cents // 100}.{cents % 100:02d}"


def check_invariants(m, model: Model) -> None:
    assert m.available() >= 0
    assert all(l.points > 0 for l in m.lots_view())
    assert m.available() == model.available()
    assert program_lots(m) == model.by_date()
    t = m.totals
    assert t["credited"] == m.available() + t["spent"] + t["expired"]
    assert (t["credited"], t["spent"], t["expired"]) == (model.credited, model.spent, model.expired)


def assert_oldest_first(before: list, after: list, spent: int) -> None:
    """`after` is `before` less `spent` points taken from the earliest expiry dates."""
    left = spent
    want = []
    for d, p in before:
        n = min(p, left)
        left -= n
        if p - n:
            want.append((d, p - n))
    assert left == 0
    assert after == want, (before, after, spent)


gaps = st.integers(min_value=1, max_value=70 * 24 * 60)   # minutes
steps = st.lists(
    st.one_of(
        st.tuples(st.just("earn"), gaps, st.integers(min_value=1, max_value=5_000_000),
                  st.sampled_from(["taxi", "mobile", "mts_store", "card", "in_app"])),
        st.tuples(st.just("redeem"), st.one_of(gaps, st.integers(min_value=1, max_value=3 * 24 * 60)),
                  st.sampled_from(sorted(PRICES) + ["book_first", "cert_sportmaster_500", "cert_letoile_500"])),
        st.tuples(st.just("store"), gaps, st.integers(min_value=1, max_value=2_000_000),
                  st.one_of(st.none(), st.integers(min_value=1, max_value=1_500),
                            st.integers(min_value=1, max_value=25_000))),
        st.tuples(st.just("wait"), st.integers(min_value=1, max_value=400 * 24 * 60)),
    ),
    min_size=1, max_size=16,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps, st.integers(min_value=0, max_value=900))
def test_sequences_conserve_points_and_spend_oldest_expiry_first(seq, tail_days):
    assert CAT.validity_months == 12
    events = joined()
    model = Model()
    model.credit(START, 150)                       # the welcome, at activation (sms: at once)
    at = START
    m = rules.replay(CAT, PHONE, events, at)
    check_invariants(m, model)

    for step in seq:
        kind, gap = step[0], step[1]
        at = at + dt.timedelta(minutes=gap)
        model.expire(at)
        m = rules.replay(CAT, PHONE, events, at)
        check_invariants(m, model)
        before = model.by_date()
        have = model.available()

        if kind == "wait":
            continue

        if kind == "earn":
            _, _, cents, category = step
            d = rules.earn(CAT, m, at, Decimal(cents) / 100, category)
            assert isinstance(d, Decision), d
            got = d.view["points"] + sum(b["points"] for b in d.view["bonuses"])
            assert d.view["points"] >= 0
            assert d.view["balance"] == have + got
            append(events, d)
            model.credit(at, d.view["points"])
            for b in d.view["bonuses"]:
                model.credit(at, b["points"])
            spent = 0

        elif kind == "redeem":
            code = step[2]
            price = PRICES[code]
            d = rules.redeem(CAT, m, at, code, "web")
            if model.limit_reached(code, at) or have < price:
                event("order refused: " + ("limit" if model.limit_reached(code, at) else "points"))
                assert isinstance(d, Refusal), (code, have, d)
                assert d.exit_code == 1
                m2 = rules.replay(CAT, PHONE, events, at)
                check_invariants(m2, model)
                continue
            assert isinstance(d, Decision), (code, have, d)
            assert d.view["points_spent"] == price
            assert d.view["balance"] == have - price
            assert from_iso(d.view["active_until"]) == at + dt.timedelta(days=CAT.rewards[code].validity_days)
            append(events, d)
            model.spend(price)
            model.orders.append((local_day(at), code))
            event("order applied")
            spent = price

        else:  # store discount
            _, _, cents, points = step
            cap = cents * 99 // 1000                     # floor(price x 0.99 x 10), price = cents / 100
            d = rules.redeem(CAT, m, at, "store_discount", "store", Decimal(cents) / 100, points)
            if points is None:
                use = min(cap, have)
                ok = use >= 1
            else:
                use = points
                ok = points <= cap and points <= have
            event("store discount " + ("refused" if not ok else "applied"))
            if not ok:
                assert isinstance(d, Refusal), (cents, points, have, d)
                assert d.exit_code == 1
                m2 = rules.replay(CAT, PHONE, events, at)
                check_invariants(m2, model)
                continue
            assert isinstance(d, Decision), (cents, points, have, d)
            assert d.view["points_spent"] == use
            assert d.view["discount_rub"] == money(use * 10)          # points / 10 RUB, in kopecks: x 10
            assert d.view["to_pay_rub"] == money(cents - use * 10)
            assert cents - use * 10 >= cents // 100                  # at least 1% is paid in money
            assert d.view["balance"] == have - use
            append(events, d)
            model.spend(use)
            spent = use

        m = rules.replay(CAT, PHONE, events, at)
        check_invariants(m, model)
        if spent:
            assert_oldest_first(before, program_lots(m), spent)

    end = at + dt.timedelta(days=tail_days)
    model.expire(end)
    event("some points expired" if model.expired else "nothing expired")
    m = rules.replay(CAT, PHONE, events, end)
    check_invariants(m, model)


@SETTINGS
@given(st.lists(st.tuples(gaps, st.integers(min_value=1, max_value=500_000)), min_size=1, max_size=8),
       st.lists(st.integers(min_value=0, max_value=800 * 24 * 60), min_size=2, max_size=6))
def test_as_time_passes_available_only_falls_and_expiry_only_grows(earns, offsets):
    events = joined()
    at = START
    for gap, cents in earns:
        at = at + dt.timedelta(minutes=gap)
        m = rules.replay(CAT, PHONE, events, at)
        d = rules.earn(CAT, m, at, Decimal(cents) / 100, "taxi")
        assert isinstance(d, Decision), d
        assert d.view["points"] == cents // 500               # floor(amount / 5)
        append(events, d)
    last = None
    for off in sorted(offsets):
        m = rules.replay(CAT, PHONE, events, at + dt.timedelta(minutes=off))
        assert m.available() >= 0
        t = m.totals
        assert t["credited"] == m.available() + t["spent"] + t["expired"]
        if last is not None:
            assert m.available() <= last.available()
            assert t["expired"] >= last.totals["expired"]
            assert t["credited"] == last.totals["credited"]
        last = m


@SETTINGS
@given(st.integers(min_value=0, max_value=3 * 366), st.integers(min_value=0, max_value=23 * 60 + 59))
def test_a_lot_is_gone_exactly_from_00_00_moscow_of_its_expiry_date(day_offset, minute):
    credit_at = START + dt.timedelta(days=day_offset, minutes=minute)
    m0 = rules.replay(CAT, PHONE, [], credit_at)
    d = rules.join(CAT, m0, credit_at, {"region": REGION, "method": "sms", "services": ["mobile"]})
    assert isinstance(d, Decision), d
    events: list = []
    append(events, d)
    expires = plus_months(local_day(credit_at), 12)
    gone = dt.datetime(expires.year, expires.month, expires.day, tzinfo=MSK)
    assert rules.replay(CAT, PHONE, events, gone - dt.timedelta(seconds=1)).available() == 150
    m = rules.replay(CAT, PHONE, events, gone)
    assert m.available() == 0
    assert m.totals["expired"] == 150
    f = rules.forecast(rules.replay(CAT, PHONE, events, gone - dt.timedelta(days=1)), gone - dt.timedelta(days=1),
                       days=1)
    assert f.view["lots"] == [{"expires_on": expires.isoformat(), "points": 150}]


@SETTINGS
@given(st.lists(st.tuples(st.integers(min_value=1, max_value=45 * 24 * 60),
                          st.sampled_from(["book_first", "cert_sportmaster_500", "cert_letoile_500", "black_list"]),
                          st.sampled_from(["web", "app"])),
                min_size=1, max_size=10))
def test_limits_book_first_once_ever_and_one_certificate_a_calendar_month(orders):
    events = joined()
    at = START + dt.timedelta(minutes=1)
    m = rules.replay(CAT, PHONE, events, at)
    d = rules.earn(CAT, m, at, Decimal("1000000"), "taxi")       # 200,000 points: never short
    assert isinstance(d, Decision) and d.view["points"] == 200_000
    append(events, d)
    model = Model()
    for gap, code, via in orders:
        at = at + dt.timedelta(minutes=gap)
        m = rules.replay(CAT, PHONE, events, at)
        d = rules.redeem(CAT, m, at, code, via)
        if model.limit_reached(code, at):
            event("limit reached")
            assert isinstance(d, Refusal), (code, at, d)
            assert d.exit_code == 1
            assert rules.replay(CAT, PHONE, events, at).available() == m.available()
        else:
            assert isinstance(d, Decision), (code, at, d)
            assert d.view["points_spent"] == PRICES[code]
            append(events, d)
            model.orders.append((local_day(at), code))
