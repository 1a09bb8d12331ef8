""""N days" after an instant is N x 24 hours of real time, across clock changes (RULES.md §1, §2, §6).

`web` and `wallet` activate 48 and 720 hours after the join instant, a gift's deadline is
accept_days x 86,400 s after the offer, and a reward's `active_until` validity_days x 86,400 s after
the order: in epoch seconds, never in wall-clock time, so a span that crosses a change of the
program's UTC offset ends at the same local time plus or minus that change, not at the same local
time. (`rules.activation_instant` once added wall-clock hours to a zone-aware datetime: a join
across a clock change activated an hour early or late.)

1. A property over the time zones of tests/test_calendar.py that change offset, with instants
   around their changes, calling the pure rules on a catalog copy in that zone.
2. The CLI: Moscow's change of 2014-10-26 (+04:00 -> +03:00) with the bundled catalog, and a catalog
   copy in Europe/Berlin across 2025-03-30 and 2025-10-26 (activation, gift deadline, reward).

Expected instants are written out by hand or computed from epoch arithmetic, never from the
program's own output.
"""

from __future__ import annotations

import bisect
import datetime as dt
import functools
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bonuscli import catalog as catalog_mod
from bonuscli import rules
from bonuscli.model import zone
from test_calendar import ZONES  # the same zone list (tests/ is on sys.path: no __init__.py)

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "catalog.yaml"
UTC = dt.timezone.utc
A, B = "9161234567", "9167654321"
DAY = 86400


# ---------------------------------------------------------------- catalog copies and zone changes


@functools.lru_cache(maxsize=None)
def shipped():
    return catalog_mod.load(SHIPPED, "catalog.yaml")


@functools.lru_cache(maxsize=None)
def catalog_in(name: str):
    """The shipped catalog with `timezone: name` (one object per zone, so its Calendar is cached), and
    a welcome bonus large enough to afford any reward."""
    cat = shipped()
    return cat._replace(timezone=name, bonuses=cat.bonuses._replace(welcome=1_000_000))


def _offset(epoch: int, tz) -> dt.timedelta:
    return dt.datetime.fromtimestamp(epoch, tz).utcoffset()


@functools.lru_cache(maxsize=None)
def changes(name: str, first_year: int = 1990, last_year: int = 2040) -> tuple:
    """Every instant (epoch) at which `name` changes its UTC offset in those years: a scan every 4 days
    (no zone of ZONES changes twice within 4 days), then a bisection to the second."""
    tz = zone(name)
    lo = int(dt.datetime(first_year, 1, 1, tzinfo=UTC).timestamp())
    hi = int(dt.datetime(last_year + 1, 1, 1, tzinfo=UTC).timestamp())
    out = []
    prev_t, prev = lo, _offset(lo, tz)
    for t in range(lo + 4 * DAY, hi, 4 * DAY):
        off = _offset(t, tz)
        if off != prev:
            a, b = prev_t, t  # offset(a) == prev != offset(b)
            while b - a > 1:
                mid = (a + b) // 2
                if _offset(mid, tz) == prev:
                    a = mid
                else:
                    b = mid
            out.append(b)
            prev = off
        prev_t = t
    return tuple(out)


CHANGING = [name for name in ZONES if changes(name)]  # UTC never changes, Kathmandu not since 1986
HOUR_METHODS = sorted(m for m, act in shipped().methods.items() if not act.working_days)
TIMED_REWARDS = sorted(code for code, r in shipped().rewards.items() if r.validity_days is not None)


def test_the_property_sees_summer_time():
    assert {"Europe/Berlin", "Europe/Moscow", "America/Sao_Paulo", "Australia/Lord_Howe"} <= set(CHANGING)
    assert {"web", "wallet"} <= set(HOUR_METHODS)
    assert {shipped().methods[m].hours for m in ("web", "wallet")} == {48, 720}
    assert len(changes("Europe/Berlin")) == 2 * 51  # two a year, 1990-2040


@st.composite
def around_a_change(draw):
    """(zone, epoch): a clock change of the zone, moved by up to 31 days before (a 720-hour span
    crosses it) or 3 days after it; sometimes any instant of 1990-2040."""
    name = draw(st.sampled_from(CHANGING))
    ch = changes(name)
    if draw(st.integers(0, 9)) == 0:
        t = draw(st.integers(ch[0] - 100 * DAY, ch[-1] + 100 * DAY))
    else:
        change = draw(st.sampled_from(ch))
        t = change + draw(st.one_of(st.integers(-31 * DAY, 3 * DAY), st.integers(-50 * 3600, 3600),
                                    st.sampled_from([-720 * 3600, -48 * 3600, -1, 0, 1])))
    return name, t


def _exact(epoch: int, tz) -> str:
    return dt.datetime.fromtimestamp(epoch, tz).isoformat(timespec="seconds")


def _member(cat, phone: str, t: int):
    """A member who joined by sms one second before `t` (active at once), replayed as of `t`."""
    joined = rules.join(cat, rules.Member(cat, phone), t - 1, {"region": "RU-MOW", "method": "sms",
                                                                "services": ["mobile"]})
    assert isinstance(joined, rules.Decision), joined
    events = [dict(e, v=2, id=f"{phone}.{i + 1}") for i, e in enumerate(joined.writes[0][1])]
    return rules.replay(cat, phone, events, t)


@settings(max_examples=150, deadline=None)
@given(case=around_a_change(), shown_in=st.sampled_from(["program", "utc", "fixed"]))
def test_activation_is_exactly_the_hours_later_in_real_time(case, shown_in):
    name, t = case
    cat, tz = catalog_in(name), zone(name)
    joined_at = {"program": rules.calendar_of(cat).local(t),  # as rules.join passes it (fold set)
                 "utc": dt.datetime.fromtimestamp(t, UTC),
                 "fixed": dt.datetime.fromtimestamp(t, dt.timezone(dt.timedelta(hours=-7, minutes=-30)))}[shown_in]
    assert rules.seconds(joined_at) == t
    for method in HOUR_METHODS:
        hours = cat.methods[method].hours
        got = rules.activation_instant(cat, method, joined_at)
        assert rules.seconds(got) - t == hours * 3600, (name, _exact(t, tz), method, got.isoformat())
        # shown in the program's time zone, with the offset in force at that instant
        assert got.isoformat(timespec="seconds") == _exact(t + hours * 3600, tz), (name, t, method)
    # the whole join decision writes the same instant
    for method in ("web", "wallet"):
        d = rules.join(cat, rules.Member(cat, A), t, {"region": "RU-MOW", "method": method, "services": ["mobile"]})
        (event,) = d.writes[0][1]
        assert event["active_from"] == _exact(t + cat.methods[method].hours * 3600, tz), (name, t, method)
        assert rules.instant(event["active_from"]) - rules.instant(event["at"]) == cat.methods[method].hours * 3600


@settings(max_examples=100, deadline=None)
@given(case=around_a_change())
def test_gift_deadline_and_reward_end_are_exact_multiples_of_86400_seconds(case):
    name, t = case
    cat, tz = catalog_in(name), zone(name)
    sender, recipient = _member(cat, A, t), _member(cat, B, t)
    d = rules.gift(cat, sender, recipient, t, 1)
    assert isinstance(d, rules.Decision), d
    want = _exact(t + cat.gifts.accept_days * DAY, tz)
    assert d.view["deadline"] == want, (name, _exact(t, tz))
    assert rules.instant(d.view["deadline"]) - rules.instant(d.view["offered_at"]) == cat.gifts.accept_days * DAY
    for _phone, events in d.writes:
        assert [e["deadline"] for e in events] == [want]
    for code in TIMED_REWARDS:
        r = rules.redeem(cat, sender, t, code, "web")
        assert isinstance(r, rules.Decision), (code, r)
        days = cat.rewards[code].validity_days
        assert r.view["active_until"] == _exact(t + days * DAY, tz), (name, _exact(t, tz), code)
        (event,) = r.writes[0][1]
        assert rules.instant(event["active_until"]) - rules.instant(event["at"]) == days * DAY


def test_every_clock_change_of_berlin_and_moscow_hand_picked():
    """Spot checks written out by hand: the local time shifts by the change, the span does not."""
    cases = [
        ("Europe/Berlin", "2025-03-29T10:00:00+01:00", "web", "2025-03-31T11:00:00+02:00"),
        ("Europe/Berlin", "2025-03-15T10:00:00+01:00", "wallet", "2025-04-14T11:00:00+02:00"),
        ("Europe/Berlin", "2025-10-25T10:00:00+02:00", "web", "2025-10-27T09:00:00+01:00"),
        ("Europe/Berlin", "2025-10-10T10:00:00+02:00", "wallet", "2025-11-09T09:00:00+01:00"),
        # joined in the repeated hour: the first 02:30 (+02:00), then the second (+01:00)
        ("Europe/Berlin", "2025-10-26T02:30:00+02:00", "web", "2025-10-28T01:30:00+01:00"),
        ("Europe/Berlin", "2025-10-26T02:30:00+01:00", "web", "2025-10-28T02:30:00+01:00"),
        ("Europe/Moscow", "2014-10-25T10:00:00+04:00", "web", "2014-10-27T09:00:00+03:00"),
        ("Europe/Moscow", "2014-10-20T10:00:00+04:00", "wallet", "2014-11-19T09:00:00+03:00"),
        ("Europe/Moscow", "2011-03-26T10:00:00+03:00", "web", "2011-03-28T11:00:00+04:00"),
        ("America/Sao_Paulo", "2018-11-03T10:00:00-03:00", "web", "2018-11-05T11:00:00-02:00"),
        ("Pacific/Apia", "2011-12-29T10:00:00-10:00", "web", "2012-01-01T10:00:00+14:00"),
    ]
    for name, joined, method, want in cases:
        cat = catalog_in(name)
        t = rules.instant(joined)
        got = rules.activation_instant(cat, method, rules.calendar_of(cat).local(t))
        assert got.isoformat(timespec="seconds") == want, (name, joined, method)


# ---------------------------------------------------------------- the CLI


def _dir(tmp_path, name="d"):
    return tmp_path / name


def _catalog_copy(tmp_path, tzname: str) -> Path:
    text = SHIPPED.read_text(encoding="utf-8")
    assert text.count("  timezone: Europe/Moscow\n") == 1
    path = tmp_path / f"catalog-{tzname.replace('/', '-')}.yaml"
    path.write_text(text.replace("  timezone: Europe/Moscow\n", f"  timezone: {tzname}\n"), encoding="utf-8")
    return path


def _status(run, base, phone, at):
    return run.j("balance", phone, "--at", at, *base)


def _activation_case(run, base, method, joined, active_from, before, phone=A):
    v = run.j("join", phone, "--region", "RU-MOW", "--method", method, "--at", joined, *base)
    assert v["status"] == "pending"
    assert v["active_from"] == active_from
    hours = {"web": 48, "wallet": 720}[method]
    assert rules.instant(v["active_from"]) - rules.instant(v["joined_at"]) == hours * 3600
    b = _status(run, base, phone, before)
    assert (b["status"], b["available"]) == ("pending", 0), b
    r = run("earn", phone, "500", "--category", "mobile", "--at", before, "--json", *base)
    assert r.exit_code == 1 and active_from in r.stdout + r.stderr, (r.stdout, r.stderr)
    b = _status(run, base, phone, active_from)
    assert b["status"] == "active" and b["available"] > 0, b
    assert b["active_from"] == active_from


def test_moscow_2014_web_join_activates_48_real_hours_later(run, tmp_path):
    """2014-10-26 02:00 MSK (+04:00) became 01:00 (+03:00). The bundled catalog (Europe/Moscow)
    accepts 2014 (--at allows the years 1900-9000). Joined Saturday 10:00 +04:00, active Monday
    09:00 +03:00: 48 hours, not 49."""
    assert shipped().timezone == "Europe/Moscow"
    base = ["--data-dir", _dir(tmp_path)]
    # --at without an offset is Moscow time: +04:00 before the change
    v = run.j("join", A, "--region", "RU-MOW", "--method", "web", "--at", "2014-10-25T10:00", *base)
    assert v["joined_at"] == "2014-10-25T10:00:00+04:00"
    assert v["active_from"] == "2014-10-27T09:00:00+03:00"
    assert v["status"] == "pending"
    b = _status(run, base, A, "2014-10-27T08:59:59")
    assert (b["status"], b["available"]) == ("pending", 0), b
    b = _status(run, base, A, "2014-10-27T09:00")
    assert (b["status"], b["available"]) == ("active", 250), b  # welcome 150 + web form 100
    # the old wall-clock sum (10:00 two days later, +03:00) is an hour late: active by then
    assert _status(run, base, A, "2014-10-27T10:00:00+03:00")["status"] == "active"


def test_moscow_2014_wallet_join_activates_720_real_hours_later(run, tmp_path):
    base = ["--data-dir", _dir(tmp_path)]
    _activation_case(run, base, "wallet", "2014-10-20T10:00", "2014-11-19T09:00:00+03:00",
                     "2014-11-19T08:59:59+03:00")


BERLIN_CASES = [
    # spring forward 2025-03-30 02:00 CET -> 03:00 CEST: one local hour later
    ("web", "2025-03-29T10:00:00+01:00", "2025-03-31T11:00:00+02:00", "2025-03-31T10:59:59+02:00"),
    ("wallet", "2025-03-15T10:00:00+01:00", "2025-04-14T11:00:00+02:00", "2025-04-14T10:59:59+02:00"),
    # fall back 2025-10-26 03:00 CEST -> 02:00 CET: one local hour earlier
    ("web", "2025-10-25T10:00:00+02:00", "2025-10-27T09:00:00+01:00", "2025-10-27T08:59:59+01:00"),
    ("wallet", "2025-10-10T10:00:00+02:00", "2025-11-09T09:00:00+01:00", "2025-11-09T08:59:59+01:00"),
]


@pytest.mark.parametrize("method,joined,active_from,before", BERLIN_CASES)
def test_berlin_activation_across_summer_time(run, tmp_path, method, joined, active_from, before):
    base = ["--data-dir", _dir(tmp_path), "--catalog", _catalog_copy(tmp_path, "Europe/Berlin")]
    _activation_case(run, base, method, joined, active_from, before)


def test_berlin_at_without_offset_is_berlin_time(run, tmp_path):
    base = ["--data-dir", _dir(tmp_path), "--catalog", _catalog_copy(tmp_path, "Europe/Berlin")]
    v = run.j("join", A, "--region", "RU-MOW", "--method", "web", "--at", "2025-10-25T10:00", *base)
    assert v["joined_at"] == "2025-10-25T10:00:00+02:00"
    assert v["active_from"] == "2025-10-27T09:00:00+01:00"


@pytest.mark.parametrize("offered,deadline", [
    ("2025-03-29T12:00:00+01:00", "2025-04-28T13:00:00+02:00"),
    ("2025-10-25T12:00:00+02:00", "2025-11-24T11:00:00+01:00"),
])
def test_berlin_gift_deadline_is_30_times_24_hours(run, tmp_path, offered, deadline):
    base = ["--data-dir", _dir(tmp_path), "--catalog", _catalog_copy(tmp_path, "Europe/Berlin")]
    for phone in (A, B):
        run.j("join", phone, "--region", "RU-MOW", "--method", "sms", "--at", "2025-03-01T09:00", *base)
    before = run.j("balance", A, "--at", offered, *base)["available"]
    g = run.j("gift", A, B, "100", "--at", offered, *base)
    assert g["offered_at"] == offered
    assert g["deadline"] == deadline
    assert rules.instant(g["deadline"]) - rules.instant(g["offered_at"]) == 30 * 24 * 3600
    just_before = rules.calendar_of(catalog_in("Europe/Berlin")).iso(rules.instant(deadline) - 1)
    inbox = run.j("balance", B, "--at", just_before, *base)["pending_in"]
    assert [(x["gift_id"], x["deadline"]) for x in inbox] == [(g["gift_id"], deadline)]
    assert run.j("balance", A, "--at", just_before, *base)["available"] == before - 100
    # at the deadline: too late to accept, and the points are back with the sender
    r = run("accept", B, g["gift_id"], "--at", deadline, "--json", *base)
    assert r.exit_code == 1, (r.stdout, r.stderr)
    assert run.j("balance", B, "--at", deadline, *base)["pending_in"] == []
    assert run.j("balance", A, "--at", deadline, *base)["available"] == before


def test_berlin_reward_active_until_is_validity_days_times_24_hours(run, tmp_path):
    base = ["--data-dir", _dir(tmp_path), "--catalog", _catalog_copy(tmp_path, "Europe/Berlin")]
    run.j("join", A, "--region", "RU-MOW", "--method", "sms", "--at", "2025-10-20T09:00", *base)
    v = run.j("redeem", A, "black_list", "--at", "2025-10-25T12:00:00+02:00", *base)  # 7 days
    assert v["active_until"] == "2025-11-01T11:00:00+01:00"
    (reward,) = run.j("balance", A, "--at", "2025-11-01T10:59:59+01:00", *base)["active_rewards"]
    assert reward["active_until"] == "2025-11-01T11:00:00+01:00"
    assert run.j("balance", A, "--at", "2025-11-01T11:00:00+01:00", *base)["active_rewards"] == []
