"""`report` (CLI.md, issue 10) over a data directory whose figures are known by construction.

The directory (built once, every command through the CLI with --at):

  F  RU-SPE  2024-02-10 join (sms): welcome 150, expires 2025-02-10 -> expired in 2025-02
  A  RU-MOW  2025-01-10 join: welcome 150 (expires 2026-01-10)
  B  RU-MOW  2025-01-15 join: welcome 150 (expires 2026-01-15)
  A          2025-01-20 earn 1000 mobile ref a1: 200 (expires 2026-01-20)
  C  RU-SPE  2025-02-03 join: welcome 150
  D  RU-SPE  2025-02-05 join by web, invited by C: active 2025-02-07, welcome 150 + web form 100;
             C's referral 50 on 2025-02-07
  A          2025-02-10 earn 500 taxi ref a2: 100 (expires 2026-02-10)
  C          2025-02-10 earn 3000 mts_store ref c1: 1000
  D          2025-02-10 earn 1000 taxi ref d1: 200 (expires 2026-02-10)
  D          2025-02-12 redeem home_everywhere: 400 (250 welcome lots + 150 of d1 -> d1 has 50)
  A          2025-02-15 redeem minutes_30 (RU-MOW 210): welcome 150 + 60 of a1 -> a1 has 140
  A -> B     2025-02-20 gift 100 (from a1: a1 has 40; B's lot of 100 expires 2026-01-20), accepted 2025-02-21
  B          2025-03-05 earn 2000 mobile ref b1: 400 (expires 2026-03-05)
  B          2025-03-06 refund 500 of b1: floor(400 x 500 / 2000) = 100 (b1's lot -> 300)
  C          2025-03-10 leave: 150 + 50 + 1000 = 1200 forfeited
  D          2025-03-15 refund all of d1: 200 = 50 taken + 150 debt
  E  RU-MOW  2025-03-20 join by wallet: pending until 2025-04-19 (welcome 150 then)

As of 2025-04-10: active A B D F, pending E, left C; available A 140, B 550, others 0
-> outstanding 690, debt 150; lots A {2026-01-20: 40, 2026-02-10: 100}, B {2026-01-15: 150,
2026-01-20: 100, 2026-03-05: 300}.
Months: 2024-02 earned 150; 2025-01 earned 500; 2025-02 earned 150+250+50+100+1000+200 = 1750,
redeemed 400+210 = 610, expired 150, gifted 100; 2025-03 earned 400, refunded 100+200 = 300,
forfeited 1200.
"""

from __future__ import annotations

import pytest

from conftest import Run

A, B, C, D, E, F = "9160000001", "9160000002", "9160000003", "9160000004", "9160000005", "9160000006"
PHONES = [A, B, C, D, E, F]
ASOF = "2025-04-10T12:00"
FIGS = ("earned", "redeemed", "expired", "gifted", "refunded", "forfeited")


def zero():
    return dict.fromkeys(FIGS, 0)


def month(**kw):
    f = zero()
    f.update(kw)
    return f


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    data = tmp_path_factory.mktemp("fleet") / "data"
    r = Run().in_dir(data)

    r("join", F, "--region", "RU-SPE", "--at", "2024-02-10T10:00")
    r("join", A, "--region", "RU-MOW", "--at", "2025-01-10T10:00")
    r("join", B, "--region", "RU-MOW", "--at", "2025-01-15T10:00")
    assert r("earn", A, "1000", "--category", "mobile", "--ref", "a1", "--at", "2025-01-20T10:00")["points"] == 200
    r("join", C, "--region", "RU-SPE", "--at", "2025-02-03T10:00")
    r("join", D, "--region", "RU-SPE", "--method", "web", "--referrer", C, "--at", "2025-02-05T10:00")
    assert r("earn", A, "500", "--category", "taxi", "--ref", "a2", "--at", "2025-02-10T10:00")["points"] == 100
    assert r("earn", C, "3000", "--category", "mts_store", "--ref", "c1", "--at", "2025-02-10T11:00")["points"] == 1000
    assert r("earn", D, "1000", "--category", "taxi", "--ref", "d1", "--at", "2025-02-10T12:00")["points"] == 200
    assert r("redeem", D, "home_everywhere", "--at", "2025-02-12T10:00")["points_spent"] == 400
    assert r("redeem", A, "minutes_30", "--at", "2025-02-15T10:00")["points_spent"] == 210
    g = r("gift", A, B, "100", "--at", "2025-02-20T10:00")
    assert r("accept", B, g["gift_id"], "--at", "2025-02-21T10:00")["status"] == "accepted"
    assert r("earn", B, "2000", "--category", "mobile", "--ref", "b1", "--at", "2025-03-05T10:00")["points"] == 400
    assert r("refund", B, "b1", "--amount", "500", "--at", "2025-03-06T10:00")["points_taken"] == 100
    assert r("leave", C, "--yes", "--at", "2025-03-10T10:00")["forfeited"] == 1200
    v = r("refund", D, "d1", "--at", "2025-03-15T10:00")
    assert (v["points_taken"], v["debt"]) == (50, 150)
    r("join", E, "--region", "RU-MOW", "--method", "wallet", "--at", "2025-03-20T10:00")
    return data


def rep(fleet, *args, at=ASOF):
    res = Run()("--data-dir", str(fleet), "report", "--at", at, *args, "--json")
    assert res.exit_code == 0, (args, res.stdout, res.stderr)
    return res.json


def by_month(v):
    out = {}
    for m in v["months"]:
        assert set(FIGS) <= set(m), m
        out[m["month"]] = {k: m[k] for k in FIGS}
    return out


def assert_months(v, expected):
    got = by_month(v)
    for key, figs in expected.items():
        assert got.get(key) == figs, (key, got.get(key), figs)
    for key, figs in got.items():
        if key not in expected:
            assert figs == zero(), (key, figs)


def statuses(v):
    return {k: v["members"].get(k, 0) for k in ("active", "pending", "left", "closed")}


def expiring(v):
    return {e["month"]: e["points"] for e in v["expiring"]}


def twelve_months(first_year, first_month):
    out = []
    for i in range(12):
        y, m = divmod(first_month - 1 + i, 12)
        out.append(f"{first_year + y:04d}-{m + 1:02d}")
    return out


ALL_MONTHS = {
    "2024-02": month(earned=150),
    "2025-01": month(earned=500),
    "2025-02": month(earned=1750, redeemed=610, expired=150, gifted=100),
    "2025-03": month(earned=400, refunded=300, forfeited=1200),
}


def test_report_whole_directory(fleet):
    v = rep(fleet)
    assert {"members", "outstanding", "debt", "expiring", "months"} <= set(v)
    assert statuses(v) == {"active": 4, "pending": 1, "left": 1, "closed": 0}
    assert v["outstanding"] == 690
    assert v["debt"] == 150
    exp = expiring(v)
    assert [e["month"] for e in v["expiring"]] == twelve_months(2025, 4)
    assert exp == {**dict.fromkeys(twelve_months(2025, 4), 0), "2026-01": 290, "2026-02": 100, "2026-03": 300}
    assert_months(v, ALL_MONTHS)
    assert [m["month"] for m in v["months"]] == sorted(m["month"] for m in v["months"])


def test_outstanding_equals_sum_of_member_balances(fleet):
    v = rep(fleet)
    run = Run()
    total, debt = 0, 0
    for p in PHONES:
        b = run("--data-dir", str(fleet), "balance", p, "--at", ASOF, "--json")
        assert b.exit_code == 0, (p, b.stdout, b.stderr)
        total += b.json["available"]
        debt += b.json.get("debt", 0)
    assert total == 690
    assert v["outstanding"] == total
    assert v["debt"] == debt == 150


def test_report_region_moscow(fleet):
    v = rep(fleet, "--region", "ru-mow")
    assert statuses(v) == {"active": 2, "pending": 1, "left": 0, "closed": 0}
    assert v["outstanding"] == 690
    assert v["debt"] == 0
    assert expiring(v)["2026-01"] == 290
    assert expiring(v)["2026-03"] == 300
    assert_months(v, {
        "2025-01": month(earned=500),
        "2025-02": month(earned=100, redeemed=210, gifted=100),
        "2025-03": month(earned=400, refunded=100),
    })


def test_report_region_spb(fleet):
    v = rep(fleet, "--region", "RU-SPE")
    assert statuses(v) == {"active": 2, "pending": 0, "left": 1, "closed": 0}
    assert v["outstanding"] == 0
    assert v["debt"] == 150
    assert set(expiring(v).values()) == {0}
    assert_months(v, {
        "2024-02": month(earned=150),
        "2025-02": month(earned=1650, redeemed=400, expired=150),
        "2025-03": month(refunded=200, forfeited=1200),
    })


def test_report_unknown_region_exit_2(fleet):
    res = Run()("--data-dir", str(fleet), "report", "--region", "RU-XXX", "--at", ASOF)
    assert res.exit_code == 2


def test_report_from_until(fleet):
    v = rep(fleet, "--from", "2025-02-01", "--until", "2025-02-28")
    assert_months(v, {"2025-02": ALL_MONTHS["2025-02"]})
    v = rep(fleet, "--from", "2025-03-01")
    assert_months(v, {"2025-03": ALL_MONTHS["2025-03"]})
    v = rep(fleet, "--until", "2025-01-31")
    assert_months(v, {"2024-02": ALL_MONTHS["2024-02"], "2025-01": ALL_MONTHS["2025-01"]})
    # a window inside a month: only the days in it (2025-02-10..2025-02-15: earns 1300, redeems 610,
    # F's 150 expired on 2025-02-10; the gift of 2025-02-20/21 is outside)
    v = rep(fleet, "--from", "2025-02-10", "--until", "2025-02-15")
    assert_months(v, {"2025-02": month(earned=1300, redeemed=610, expired=150)})
    # with a region too
    v = rep(fleet, "--region", "RU-MOW", "--from", "2025-02-01", "--until", "2025-02-28")
    assert_months(v, {"2025-02": month(earned=100, redeemed=210, gifted=100)})


def test_report_as_of_an_earlier_date(fleet):
    # 2025-01-31: only F, A and B have joined; C, D and E are not members yet
    v = rep(fleet, at="2025-01-31T23:00")
    assert statuses(v) == {"active": 3, "pending": 0, "left": 0, "closed": 0}
    assert v["outstanding"] == 150 + 350 + 150
    assert v["debt"] == 0
    # `expiring` runs through the last month in which an available point expires, so it adds up
    months = twelve_months(2025, 1) + ["2026-01"]
    assert [e["month"] for e in v["expiring"]] == months
    assert expiring(v) == {**dict.fromkeys(months, 0), "2025-02": 150, "2026-01": 500}
    assert sum(expiring(v).values()) == v["outstanding"]
    assert_months(v, {"2024-02": ALL_MONTHS["2024-02"], "2025-01": ALL_MONTHS["2025-01"]})


def test_report_after_activation_and_expiry(fleet):
    # 2026-01-25: E active since 2025-04-19 (welcome 150, expires 2026-04-19);
    # expired in 2026-01: A 40 (2026-01-20), B 150 (2026-01-15) + 100 (2026-01-20)
    v = rep(fleet, at="2026-01-25T12:00")
    assert statuses(v) == {"active": 5, "pending": 0, "left": 1, "closed": 0}
    assert v["outstanding"] == 100 + 300 + 150
    assert v["debt"] == 150
    assert expiring(v) == {**dict.fromkeys(twelve_months(2026, 1), 0), "2026-02": 100, "2026-03": 300, "2026-04": 150}
    assert_months(v, {**ALL_MONTHS, "2025-04": month(earned=150), "2026-01": month(expired=290)})


def test_report_jobs_identical(fleet, monkeypatch):
    one = rep(fleet, "--jobs", "1")
    two = rep(fleet, "--jobs", "2")
    assert one == two
    assert one["outstanding"] == 690
    # force the process pool even for this small directory (it is used from 400 ledgers on)
    from bonuscli import fleet as fleet_mod

    monkeypatch.setattr(fleet_mod, "SERIAL_BELOW", 0)
    pooled = rep(fleet, "--jobs", "2")
    assert pooled == one
    assert rep(fleet, "--jobs", "2", "--region", "RU-SPE", "--from", "2025-02-01") == \
        rep(fleet, "--jobs", "1", "--region", "RU-SPE", "--from", "2025-02-01")


def test_report_table_output(fleet):
    res = Run()("--data-dir", str(fleet), "report", "--at", ASOF)
    assert res.exit_code == 0
    assert "690" in res.stdout
    assert "2026-01" in res.stdout


def test_fleet_ledgers_sound(fleet):
    for at in (ASOF, "2026-01-25T12:00"):
        res = Run()("--data-dir", str(fleet), "check", "--ledgers", "--at", at)
        assert res.exit_code == 0, (res.stdout, res.stderr)


def test_report_empty_directory(run, data_dir):
    r = run("report", "--at", ASOF, "--json")
    assert r.exit_code == 2 and '"no-data-dir"' in r.stderr  # a mistyped --data-dir is no empty program
    data_dir.mkdir(parents=True)
    v = run.j("report", "--at", ASOF)
    assert statuses(v) == {"active": 0, "pending": 0, "left": 0, "closed": 0}
    assert (v["outstanding"], v["debt"]) == (0, 0)
    assert expiring(v) == dict.fromkeys(twelve_months(2025, 4), 0)
    assert_months(v, {})


def test_report_corrupt_ledger_exit_3(run, data_dir, sub):
    run.j("join", A, "--region", "RU-MOW", "--at", "2025-01-10T10:00")
    run.j("join", B, "--region", "RU-MOW", "--at", "2025-01-10T11:00")
    with open(data_dir / "ledgers" / f"{A}.jsonl", "ab") as f:
        f.write(b"this is not json\n")
    r = run("report", "--at", ASOF)
    assert r.exit_code == 3
    p = sub(["report", "--at", ASOF], env={"BONUSCLI_DATA_DIR": str(data_dir)})
    assert p.returncode == 3
    assert "Traceback" not in p.stderr
    assert p.stderr.startswith("error: ")


# ---------------------------------------------------------------- the identity, on random histories

import datetime as _dt  # noqa: E402

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from bonuscli import catalog as _catalog_mod  # noqa: E402
from bonuscli import fleet as _fleet  # noqa: E402
from bonuscli import requests as _rq  # noqa: E402
from bonuscli import service as _service  # noqa: E402
from bonuscli.model import BonusError as _BonusError  # noqa: E402

_CAT = _catalog_mod.load(_catalog_mod.default_path(), "catalog.yaml")
_PHONES = ["9160000001", "9160000002", "9160000003"]
_OPS = st.lists(st.tuples(
    st.sampled_from(["earn", "earn", "redeem", "gift", "accept", "reject", "refund", "adjust", "leave", "join"]),
    st.integers(0, 2), st.integers(0, 2), st.integers(1, 5000), st.integers(1, 20)), min_size=5, max_size=40)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_OPS)
def test_report_reconciles_on_random_histories(ops):
    """earn + adjusted - redeemed - expired - refunded - forfeited = outstanding + held - debt, as of
    any moment, whatever happened (gifts both ways, expiry, debt, leaving, rejoining)."""
    svc = _service.in_memory(_CAT)
    t = _dt.datetime(2025, 1, 1, 10, 0, tzinfo=_CAT.tz)
    refs, gifts = {p: [] for p in _PHONES}, []

    def attempt(fn):
        try:
            return fn()
        except _BonusError:
            return None

    for p in _PHONES:
        svc.join(_rq.join(_CAT, t.date(), p, "RU-MOW"), t)
    for i, (op, a, b, n, days) in enumerate(ops):
        t += _dt.timedelta(days=days, hours=1)
        pa, pb = _PHONES[a], _PHONES[b]
        if op == "earn":
            ref = f"r{i}"
            if attempt(lambda: svc.earn(_rq.earn(_CAT, pa, str(n), "mobile", ref), t)):
                refs[pa].append(ref)
        elif op == "redeem":
            attempt(lambda: svc.redeem(_rq.redeem(_CAT, pa, "black_list"), t))
        elif op == "gift":
            g = attempt(lambda: svc.gift(_rq.gift(_CAT, pa, pb, str(n % 300 + 1)), t))
            if g:
                gifts.append((pb, g["gift_id"]))
        elif op in ("accept", "reject") and gifts:
            to, gid = gifts.pop(n % len(gifts))
            attempt(lambda: svc.accept(_rq.accept(to, gid, op == "reject"), t))
        elif op == "refund" and refs[pa]:
            ref = refs[pa][n % len(refs[pa])]
            attempt(lambda: svc.refund(_rq.refund(_CAT, pa, ref, str(n % 700 + 1)), t))
        elif op == "adjust":
            attempt(lambda: svc.adjust(_rq.adjust(_CAT, pa, str(n if n % 3 else -n // 10 - 1), "x"), t))
        elif op == "leave" and n % 4 == 0:
            attempt(lambda: svc.leave(pa, t))
        elif op == "join":
            attempt(lambda: svc.join(_rq.join(_CAT, t.date(), pa, "RU-MOW"), t))
    for later in (0, 45, 400):
        at = t + _dt.timedelta(days=later)
        doc = _fleet.report(svc, at)
        r = _fleet.reconciliation(doc)
        assert r["flow"] == r["stock"], (later, r, doc["outstanding"], doc["held"], doc["debt"])
        assert sum(e["points"] for e in doc["expiring"]) == doc["outstanding"]
        assert doc["outstanding"] == sum(svc.balance(p, at)["available"] for p in _PHONES)
