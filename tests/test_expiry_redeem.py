"""RULES.md §4 (expiry, forecast, program closing) and §5 (rewards, redemption, limits, the
store discount), through `balance`, `forecast`, `redeem` and `catalog` with `--at` moving time.

Every expected number is worked out by hand from RULES.md:
- welcome 150 points, credited at activation (sms: at once; web: +2 x 24 h, +100 web form);
- `taxi` earns floor(amount / 5), no tenure coefficient (so earns are easy to size);
- a lot credited on local date D expires on D + 12 months (same day, clamped to the month's
  end) and is gone from 00:00 Moscow time (+03:00) of that date;
- points are spent oldest expiry first;
- minutes_30 costs 210 in RU-MOW / RU-MOS, 85 in RU-BRY, else 100; validity 30 x 24 h;
- the store discount: cap = floor(price x 0.99 x 10) points, discount = points / 10 RUB.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import pytest

A = "9161234567"
B = "9167654321"
C = "9031112233"
D = "9260000001"

MSK = dt.timezone(dt.timedelta(hours=3))
ROOT = Path(__file__).resolve().parent.parent
REDEEM_FIELDS = {"phone", "code", "points_spent", "balance", "active_until"}
FORECAST_FIELDS = {"phone", "until", "total", "lots"}


# ---------------------------------------------------------------- helpers


def ledger(data_dir: Path, phone: str) -> Path:
    return data_dir / "ledgers" / f"{phone}.jsonl"


def snap(data_dir: Path, phone: str):
    f = ledger(data_dir, phone)
    return f.read_bytes() if f.exists() else None


def join(run, phone, at, region="RU-SPE", *extra):
    return run.j("join", phone, "--region", region, "--at", at, *extra)


def earn(run, phone, amount, at, *extra):
    """A taxi spending: floor(amount / 5) points, no tenure coefficient."""
    return run.j("earn", phone, amount, "--category", "taxi", "--at", at, *extra)


def bal(run, phone, at, *extra):
    return run.j("balance", phone, "--at", at, *extra)


def avail(run, phone, at, *extra):
    return bal(run, phone, at, *extra)["available"]


def fc(run, phone, at, *extra):
    return run.j("forecast", phone, "--at", at, *extra)


def redeem(run, phone, code, at, *extra):
    return run.j("redeem", phone, code, "--at", at, *extra)


def member(run, phone, points, region="RU-SPE", at="2025-03-01T10:00"):
    """Join at `at` (sms, 150 welcome) and earn taxi so that `points` are available at `at` + 5 min."""
    join(run, phone, at, region)
    extra = points - 150
    assert extra >= 0
    if extra:
        t = dt.datetime.fromisoformat(at) + dt.timedelta(minutes=5)
        v = earn(run, phone, str(extra * 5), t.isoformat(timespec="minutes"))
        assert v["points"] == extra
        assert v["balance"] == points


def refused(run, data_dir, phone, *args, code=1):
    """The command exits `code`, prints one `error: ...` line, and the ledger is byte-for-byte unchanged."""
    before = snap(data_dir, phone)
    r = run(*args)
    assert r.exit_code == code, (args, r.exit_code, r.stdout, r.stderr)
    after = snap(data_dir, phone)
    if before is None:
        assert after in (None, b""), after
    else:
        assert after == before
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert r.stdout.strip() == ""
    return r


def instant(text: str) -> dt.datetime:
    t = dt.datetime.fromisoformat(text)
    assert t.tzinfo is not None, text
    return t


def catalog_copy(tmp_path: Path, name: str, **settings) -> str:
    """The shipped catalog with some program settings changed in the YAML text."""
    text = (ROOT / "catalog.yaml").read_text(encoding="utf-8")
    if "closing_date" in settings:
        text, n = re.subn(r"(?m)^(\s*closing_date:)\s*null", rf'\1 "{settings["closing_date"]}"', text)
        assert n == 1
    if "months" in settings:
        text, n = re.subn(r"(?m)^(\s*points_validity_months:)\s*12\b", rf"\g<1> {settings['months']}", text)
        assert n == 1
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return str(p)


# ---------------------------------------------------------------- a member's year


def test_a_year_credited_spent_oldest_first_and_expiring_on_the_right_day(run):
    # welcome 150 at join (sms: active at once), credited 2025-01-31 -> expires 2026-01-31
    join(run, A, "2025-01-31T10:00")
    b = bal(run, A, "2025-01-31T10:00")
    assert b["available"] == 150
    assert b["next_expiry"] == {"date": "2026-01-31", "points": 150}

    # 1000 RUB taxi -> 200, credited 2025-02-28 -> expires 2026-02-28
    assert earn(run, A, "1000", "2025-02-28T10:00")["points"] == 200
    # two earns on 2025-03-31 (100 + 50) -> both expire 2026-03-31
    assert earn(run, A, "500", "2025-03-31T09:00")["points"] == 100
    assert earn(run, A, "250", "2025-03-31T18:00")["points"] == 50
    b = bal(run, A, "2025-03-31T18:00")
    assert b["available"] == 500
    assert b["next_expiry"] == {"date": "2026-01-31", "points": 150}

    # minutes_30 (RU-SPE: default 100) is paid from the oldest-expiring lot: welcome 150 -> 50
    v = redeem(run, A, "minutes_30", "2025-04-01T12:00")
    assert v["points_spent"] == 100
    assert v["balance"] == 400
    b = bal(run, A, "2025-04-01T12:00")
    assert b["available"] == 400
    assert b["next_expiry"] == {"date": "2026-01-31", "points": 50}

    # the forecast shows what is left of the welcome lot, not what was spent
    f = fc(run, A, "2026-01-15T12:00")
    assert f["until"] == "2026-02-14"
    assert f["lots"] == [{"expires_on": "2026-01-31", "points": 50}]
    assert f["total"] == 50

    # gone from 00:00 Moscow time of 2026-01-31
    assert avail(run, A, "2026-01-30T23:59") == 400
    assert avail(run, A, "2026-01-30T23:59:59+03:00") == 400
    assert avail(run, A, "2026-01-30T20:59:59+00:00") == 400   # 23:59:59 in Moscow
    assert avail(run, A, "2026-01-30T21:00:00Z") == 350        # 00:00 in Moscow
    assert avail(run, A, "2026-01-31") == 350                  # a date alone: 00:00 Moscow
    b = bal(run, A, "2026-01-31T00:00")
    assert b["available"] == 350
    assert b["next_expiry"] == {"date": "2026-02-28", "points": 200}

    # another 100 from the 2026-02-28 lot (200 -> 100)
    v = redeem(run, A, "minutes_30", "2026-02-10T12:00")
    assert v["points_spent"] == 100
    assert v["balance"] == 250
    assert bal(run, A, "2026-02-10T12:00")["next_expiry"] == {"date": "2026-02-28", "points": 100}
    assert avail(run, A, "2026-02-27T23:59") == 250
    b = bal(run, A, "2026-02-28T00:00")
    assert b["available"] == 150
    assert b["next_expiry"] == {"date": "2026-03-31", "points": 150}   # two lots of one date, grouped

    assert avail(run, A, "2026-03-30T23:59") == 150
    b = bal(run, A, "2026-03-31T00:00")
    assert b["available"] == 0
    assert b["next_expiry"] is None


def test_welcome_lot_is_credited_at_activation_not_at_join(run):
    # web: active 2 x 24 h after joining; welcome 150 + web form 100 credited 2025-03-01 -> expires 2026-03-01
    join(run, B, "2025-02-27T12:00", "RU-SPE", "--method", "web")
    b = bal(run, B, "2025-03-01T11:59")
    assert b["status"] == "pending"
    assert b["available"] == 0
    b = bal(run, B, "2025-03-01T12:00")
    assert b["status"] == "active"
    assert b["available"] == 250
    assert b["next_expiry"] == {"date": "2026-03-01", "points": 250}
    assert avail(run, B, "2026-02-27T12:00") == 250   # a lot dated from the join would be gone here
    assert avail(run, B, "2026-02-28T23:59") == 250
    assert avail(run, B, "2026-03-01T00:00") == 0


def test_expiry_follows_the_local_date_of_the_credit(run):
    join(run, A, "2025-03-01T10:00")
    # 21:30 UTC on 2025-03-31 is 00:30 on 2025-04-01 in Moscow -> expires 2026-04-01
    assert earn(run, A, "500", "2025-03-31T21:30:00+00:00")["points"] == 100
    f = fc(run, A, "2025-04-02T12:00", "--until", "2027-01-01")
    assert f["lots"] == [{"expires_on": "2026-03-01", "points": 150}, {"expires_on": "2026-04-01", "points": 100}]
    assert f["total"] == 250
    assert avail(run, A, "2026-03-31T23:59") == 100
    assert avail(run, A, "2026-04-01T00:00") == 0


@pytest.mark.parametrize("months, credited, expires", [
    (12, "2025-01-31", "2026-01-31"),
    (12, "2024-02-29", "2025-02-28"),   # leap day: clamped to the end of February
    (12, "2025-03-31", "2026-03-31"),
    (12, "2025-05-31", "2026-05-31"),
    (12, "2025-08-31", "2026-08-31"),
    (1, "2025-01-31", "2025-02-28"),    # clamped
    (1, "2024-01-31", "2024-02-29"),    # clamped to a leap February
    (1, "2025-03-31", "2025-04-30"),    # clamped
    (1, "2025-12-31", "2026-01-31"),    # over the year's end
    (3, "2025-05-31", "2025-08-31"),
    (3, "2025-11-30", "2026-02-28"),    # clamped
    (6, "2025-08-31", "2026-02-28"),    # clamped
])
def test_month_end_clamping(run, tmp_path, months, credited, expires):
    cat = [] if months == 12 else ["--catalog", catalog_copy(tmp_path, f"m{months}.yaml", months=months)]
    join(run, A, f"{credited}T12:00", "RU-SPE", *cat)
    b = bal(run, A, f"{credited}T12:00", *cat)
    assert b["next_expiry"] == {"date": expires, "points": 150}
    day_before = dt.date.fromisoformat(expires) - dt.timedelta(days=1)
    assert avail(run, A, f"{day_before}T23:59", *cat) == 150
    assert avail(run, A, f"{expires}T00:00", *cat) == 0
    f = fc(run, A, f"{day_before}T12:00", "--days", "1", *cat)
    assert f["lots"] == [{"expires_on": expires, "points": 150}]


# ---------------------------------------------------------------- forecast


@pytest.fixture
def four_lots(run):
    """Lots: 150 welcome -> 2026-03-01; 100 -> 2026-03-02; 200 + 50 -> 2026-03-31; 400 -> 2026-04-01."""
    join(run, A, "2025-03-01T10:00")
    assert earn(run, A, "500", "2025-03-02T10:00")["points"] == 100
    assert earn(run, A, "1000", "2025-03-31T09:00")["points"] == 200
    assert earn(run, A, "250", "2025-03-31T20:00")["points"] == 50
    assert earn(run, A, "2000", "2025-04-01T10:00")["points"] == 400


NOW = "2026-03-01T12:00"   # the welcome lot expired today (gone since 00:00)


@pytest.mark.parametrize("window, until, lots", [
    ((), "2026-03-31", [("2026-03-02", 100), ("2026-03-31", 250)]),                 # default 30 days
    (("--days", "30"), "2026-03-31", [("2026-03-02", 100), ("2026-03-31", 250)]),   # boundary day included
    (("--days", "29"), "2026-03-30", [("2026-03-02", 100)]),
    (("--days", "31"), "2026-04-01", [("2026-03-02", 100), ("2026-03-31", 250), ("2026-04-01", 400)]),
    (("--days", "1"), "2026-03-02", [("2026-03-02", 100)]),
    (("--days", "0"), "2026-03-01", []),                                              # today's lot is gone
    (("--until", "2026-03-31"), "2026-03-31", [("2026-03-02", 100), ("2026-03-31", 250)]),
    (("--until", "2026-03-30"), "2026-03-30", [("2026-03-02", 100)]),
    (("--until", "2026-04-01"), "2026-04-01", [("2026-03-02", 100), ("2026-03-31", 250), ("2026-04-01", 400)]),
])
def test_forecast_windows(run, four_lots, window, until, lots):
    f = fc(run, A, NOW, *window)
    assert FORECAST_FIELDS <= set(f)
    assert f["phone"] == A
    assert f["until"] == until
    assert f["lots"] == [{"expires_on": d, "points": p} for d, p in lots]
    assert f["total"] == sum(p for _, p in lots)


def test_forecast_includes_the_lot_expiring_at_the_boundary_from_the_day_before(run, four_lots):
    # today 2026-02-28: today + 1 = 2026-03-01, the welcome lot's expiry date, is inside the window
    f = fc(run, A, "2026-02-28T23:59", "--days", "1")
    assert f["lots"] == [{"expires_on": "2026-03-01", "points": 150}]
    assert f["total"] == 150
    b = bal(run, A, NOW)
    assert b["available"] == 750
    assert b["next_expiry"] == {"date": "2026-03-02", "points": 100}


def test_forecast_accepts_any_phone_spelling(run, four_lots):
    f = fc(run, "+7 916 123-45-67", NOW)
    assert f["phone"] == A
    assert f["total"] == 350


def test_forecast_lists_only_points_not_spent(run):
    join(run, A, "2025-03-01T10:00")
    assert earn(run, A, "500", "2025-03-02T10:00")["points"] == 100
    redeem(run, A, "minutes_30", "2025-03-03T10:00")            # 100 from the welcome lot (150 -> 50)
    f = fc(run, A, "2025-03-03T12:00", "--until", "2026-12-31")
    assert f["lots"] == [{"expires_on": "2026-03-01", "points": 50}, {"expires_on": "2026-03-02", "points": 100}]
    assert f["total"] == 150
    redeem(run, A, "minutes_30", "2025-03-04T10:00")            # 50 welcome + 50 of the next lot
    f = fc(run, A, "2025-03-04T12:00", "--until", "2026-12-31")
    assert f["lots"] == [{"expires_on": "2026-03-02", "points": 50}]
    assert f["total"] == 50


def test_forecast_table_shows_twelve_months(run, four_lots):
    r = run.ok("forecast", A, "--at", NOW)
    for i in range(12):
        y, m = divmod(3 - 1 + i, 12)
        assert f"{2026 + y:04d}-{m + 1:02d}" in r.stdout, (f"{2026 + y:04d}-{m + 1:02d}", r.stdout)
    assert "350" in r.stdout   # the total


def test_forecast_days_and_until_together_is_bad_input(run, sub, four_lots):
    r = run("forecast", A, "--at", NOW, "--days", "5", "--until", "2026-04-01")
    assert r.exit_code == 2
    p = sub(["forecast", A, "--at", NOW, "--days", "5", "--until", "2026-04-01"])
    assert p.returncode == 2
    assert p.stderr.startswith("error: ")
    assert "Traceback" not in p.stderr


def test_forecast_skips_points_held_in_a_pending_gift(run):
    join(run, A, "2025-03-01T10:00")                                 # 150 -> 2026-03-01
    join(run, B, "2025-03-01T10:30")                                 # 150 -> 2026-03-01
    assert earn(run, A, "500", "2025-03-02T10:00")["points"] == 100   # 100 -> 2026-03-02
    g = run.j("gift", A, B, "120", "--at", "2025-03-03T10:00")        # 120 of the welcome lot, held
    f = fc(run, A, "2025-03-03T12:00", "--until", "2026-12-31")
    assert f["lots"] == [{"expires_on": "2026-03-01", "points": 30}, {"expires_on": "2026-03-02", "points": 100}]
    assert f["total"] == 130
    f = fc(run, B, "2025-03-03T12:00", "--until", "2026-12-31")
    assert f["lots"] == [{"expires_on": "2026-03-01", "points": 150}]
    run.ok("accept", B, g["gift_id"], "--at", "2025-03-04T10:00")
    f = fc(run, B, "2025-03-04T12:00", "--until", "2026-12-31")
    assert f["lots"] == [{"expires_on": "2026-03-01", "points": 270}]   # gifted points keep their date
    assert f["total"] == 270


def test_forecast_until_in_the_past_is_empty(run, four_lots):
    f = fc(run, A, NOW, "--until", "2026-02-01")
    assert f["until"] == "2026-02-01"
    assert f["lots"] == [] and f["total"] == 0


@pytest.mark.parametrize("extra", [("--days", "-1"), ("--days", "x"), ("--until", "2026-13-01"),
                                   ("--until", "tomorrow")])
def test_forecast_bad_window_is_bad_input(run, data_dir, four_lots, extra):
    refused(run, data_dir, A, "forecast", A, "--at", NOW, *extra, code=2)


def test_forecast_and_balance_of_a_non_member(run, data_dir):
    refused(run, data_dir, C, "forecast", C, "--at", NOW, code=2)  # no data directory yet (CLI.md §1)
    data_dir.mkdir(parents=True)
    refused(run, data_dir, C, "forecast", C, "--at", NOW)
    refused(run, data_dir, C, "balance", C, "--at", NOW)


# ---------------------------------------------------------------- redeem: prices and fields


@pytest.mark.parametrize("region, code, price", [
    ("RU-MOW", "minutes_30", 210),
    ("RU-MOS", "minutes_30", 210),
    ("RU-BRY", "minutes_30", 85),
    ("ru-bry", "minutes_30", 85),
    ("RU-SPE", "minutes_30", 100),   # no override: the default
    ("RU-BRY", "minutes_60", 150),   # no Bryansk price for minutes_60: the default
    ("RU-MOS", "sms_50", 180),
    ("RU-SPE", "sms_50", 230),
    ("RU-MOW", "superbit", 990),
])
def test_regional_prices(run, region, code, price):
    member(run, A, 1150, region)
    v = redeem(run, A, code, "2025-03-01T11:00")
    assert v["points_spent"] == price
    assert v["balance"] == 1150 - price
    assert avail(run, A, "2025-03-01T11:00") == 1150 - price


@pytest.mark.parametrize("code, days", [("minutes_30", 30), ("vnet", 14), ("black_list", 7)])
def test_redeem_json_and_active_until(run, code, days):
    member(run, A, 1150)
    v = redeem(run, "8 (916) 123-45-67", code, "2025-03-10T15:30:00+03:00")
    assert REDEEM_FIELDS <= set(v)
    assert v["phone"] == A
    assert v["code"] == code
    assert isinstance(v["points_spent"], int) and isinstance(v["balance"], int)
    assert instant(v["active_until"]) == dt.datetime(2025, 3, 10, 15, 30, tzinfo=MSK) + dt.timedelta(hours=24 * days)


def test_active_until_counts_24_hour_days_from_the_instant(run):
    member(run, A, 1150)
    # 23:30 UTC = 02:30 Moscow on 2025-03-11
    v = redeem(run, A, "minutes_30", "2025-03-10T23:30:00Z")
    assert instant(v["active_until"]) == dt.datetime(2025, 4, 9, 23, 30, tzinfo=dt.timezone.utc)


def test_active_rewards_listed_until_active_until(run):
    member(run, A, 1150)
    v = redeem(run, A, "minutes_30", "2025-03-10T15:30")
    until = instant(v["active_until"])
    assert until == dt.datetime(2025, 4, 9, 15, 30, tzinfo=MSK)
    b = bal(run, A, "2025-03-10T15:30")
    assert [(r["code"], instant(r["active_until"])) for r in b["active_rewards"]] == [("minutes_30", until)]
    assert b["active_rewards"][0]["name"]
    b = bal(run, A, "2025-04-09T15:29")
    assert [r["code"] for r in b["active_rewards"]] == ["minutes_30"]
    assert bal(run, A, "2025-04-09T15:31")["active_rewards"] == []
    assert bal(run, A, "2025-05-01")["active_rewards"] == []


def test_same_reward_again_while_active_has_its_own_active_until(run):
    member(run, A, 1150, "RU-BRY")
    v1 = redeem(run, A, "minutes_30", "2025-03-10T12:00")
    v2 = redeem(run, A, "minutes_30", "2025-03-15T12:00")
    assert v1["points_spent"] == v2["points_spent"] == 85
    assert v2["balance"] == 1150 - 170
    assert instant(v2["active_until"]) == dt.datetime(2025, 4, 14, 12, 0, tzinfo=MSK)
    b = bal(run, A, "2025-03-15T13:00")
    assert sorted(instant(r["active_until"]) for r in b["active_rewards"]) == [
        dt.datetime(2025, 4, 9, 12, 0, tzinfo=MSK), dt.datetime(2025, 4, 14, 12, 0, tzinfo=MSK)]
    b = bal(run, A, "2025-04-10T12:00")
    assert [instant(r["active_until"]) for r in b["active_rewards"]] == [dt.datetime(2025, 4, 14, 12, 0, tzinfo=MSK)]


def test_book_first_prints_a_voucher_code(run):
    member(run, A, 1150)
    v = redeem(run, A, "book_first", "2025-03-01T11:00")
    assert v["points_spent"] == 100
    assert isinstance(v.get("voucher"), str) and v["voucher"].strip()
    assert instant(v["active_until"]) == dt.datetime(2025, 3, 31, 11, 0, tzinfo=MSK)
    # the table output shows a code too
    member(run, B, 1150)
    r = run.ok("redeem", B, "book_first", "--at", "2025-03-01T11:00")
    b_code = bal(run, B, "2025-03-01T11:00")  # the order is recorded
    assert [x["code"] for x in b_code["active_rewards"]] == ["book_first"]
    assert "voucher" in r.stdout.lower() or re.search(r"[A-Z0-9]{4,}-[A-Z0-9]{4,}", r.stdout), r.stdout


def test_partner_certificates_via_web_and_app(run):
    member(run, A, 20150)
    v = redeem(run, A, "cert_sportmaster_500", "2025-03-05T12:00", "--via", "web")
    assert v["points_spent"] == 5000
    assert v["balance"] == 15150
    assert instant(v["active_until"]) == dt.datetime(2026, 3, 5, 12, 0, tzinfo=MSK)   # 365 x 24 h
    v = redeem(run, A, "cert_letoile_1000", "2025-04-05T12:00", "--via", "app")
    assert v["points_spent"] == 10000
    assert v["balance"] == 5150


# ---------------------------------------------------------------- redeem: refusals


def test_too_few_points_says_how_many_are_missing(run, data_dir):
    join(run, A, "2025-03-01T10:00", "RU-MOW")                     # 150; minutes_30 costs 210 in Moscow
    r = refused(run, data_dir, A, "redeem", A, "minutes_30", "--at", "2025-03-01T11:00")
    assert re.search(r"\b60\b", r.stderr), r.stderr
    r = run("redeem", A, "minutes_30", "--at", "2025-03-01T11:00", "--json")
    assert r.exit_code == 1
    err = json.loads(r.stderr)["error"]
    assert err["code"] == 1
    assert re.search(r"\b60\b", err["message"])
    assert avail(run, A, "2025-03-01T11:00") == 150


def test_too_few_points_after_spending(run, data_dir):
    join(run, A, "2025-03-01T10:00", "RU-BRY")                     # 150 - 85 = 65; 85 - 65 = 20 missing
    assert redeem(run, A, "minutes_30", "2025-03-01T11:00")["balance"] == 65
    r = refused(run, data_dir, A, "redeem", A, "minutes_30", "--at", "2025-03-01T12:00")
    assert re.search(r"\b20\b", r.stderr), r.stderr


def test_too_few_points_because_a_lot_expired(run, data_dir):
    join(run, A, "2025-03-01T10:00")                                # 150 -> expires 2026-03-01
    assert redeem(run, A, "minutes_30", "2026-02-28T23:59")["balance"] == 50
    join(run, B, "2025-03-01T10:00")
    r = refused(run, data_dir, B, "redeem", B, "minutes_30", "--at", "2026-03-01T00:00")
    assert re.search(r"\b100\b", r.stderr), r.stderr                # 0 held, 100 missing


@pytest.mark.parametrize("code, via", [
    ("cert_sportmaster_500", "sms"),
    ("cert_letoile_1000", "ussd"),
    ("cert_detsky_mir_500", "store"),
    ("store_discount", "web"),
    ("store_discount", "app"),
    ("book_first", "ussd"),      # no USSD code
    ("minutes_30", "store"),     # the store takes only the store discount
])
def test_channel_not_allowed(run, data_dir, code, via):
    member(run, A, 20150)
    extra = ("--price", "100.00") if code == "store_discount" else ()
    refused(run, data_dir, A, "redeem", A, code, "--via", via, *extra, "--at", "2025-03-01T11:00")
    assert avail(run, A, "2025-03-01T11:00") == 20150


@pytest.mark.parametrize("code, via", [("minutes_30", "ussd"), ("minutes_30", "sms"), ("minutes_30", "app"),
                                       ("turbo_1gb", "sms")])
def test_allowed_channels(run, code, via):
    member(run, A, 1150)
    assert redeem(run, A, code, "2025-03-01T11:00", "--via", via)["code"] == code


def test_book_first_once_ever(run, data_dir):
    member(run, A, 1150)
    assert redeem(run, A, "book_first", "2025-03-01T11:00")["balance"] == 1050
    refused(run, data_dir, A, "redeem", A, "book_first", "--at", "2025-03-01T12:00")
    refused(run, data_dir, A, "redeem", A, "book_first", "--via", "app", "--at", "2025-04-15T12:00")
    refused(run, data_dir, A, "redeem", A, "book_first", "--at", "2026-02-15T12:00")   # next calendar year
    # other content is not limited
    assert redeem(run, A, "mts_tv_7", "2026-02-15T12:00")["points_spent"] == 100


def test_one_certificate_a_calendar_month(run, data_dir):
    member(run, A, 20150, at="2025-03-01T10:00")
    assert redeem(run, A, "cert_sportmaster_500", "2025-03-05T12:00")["balance"] == 15150
    refused(run, data_dir, A, "redeem", A, "cert_letoile_500", "--at", "2025-03-20T12:00")        # another one
    refused(run, data_dir, A, "redeem", A, "cert_sportmaster_500", "--at", "2025-03-31T23:30")    # same one
    # 21:30 UTC on 2025-03-31 is 00:30 on 2025-04-01 in Moscow: a new calendar month
    v = redeem(run, A, "cert_letoile_500", "2025-03-31T21:30:00+00:00", "--via", "app")
    assert v["balance"] == 10150
    refused(run, data_dir, A, "redeem", A, "cert_detsky_mir_500", "--at", "2025-04-30T23:59")
    assert redeem(run, A, "cert_detsky_mir_500", "2025-05-01T00:00")["balance"] == 5150
    assert avail(run, A, "2025-05-01T00:00") == 5150
    # May of the next year is another calendar month (the 2025-03-01 earn expires 2026-03-01: top up first)
    assert earn(run, A, "25000", "2026-05-10T12:00")["points"] == 5000
    assert redeem(run, A, "cert_sportmaster_500", "2026-05-15T12:00")["balance"] == 0


def test_a_refused_order_does_not_use_up_a_limit(run, data_dir):
    join(run, A, "2025-03-01T10:00")
    refused(run, data_dir, A, "redeem", A, "cert_sportmaster_500", "--at", "2025-03-02T10:00")   # 150 < 5000
    refused(run, data_dir, A, "redeem", A, "cert_sportmaster_500", "--via", "sms", "--at", "2025-03-02T11:00")
    refused(run, data_dir, A, "redeem", A, "book_first", "--via", "ussd", "--at", "2025-03-02T11:00")
    assert earn(run, A, "25000", "2025-03-03T10:00")["points"] == 5000
    assert redeem(run, A, "cert_sportmaster_500", "2025-03-04T10:00")["balance"] == 150
    assert redeem(run, A, "book_first", "2025-03-04T11:00")["balance"] == 50


def test_not_a_member_is_refused(run, data_dir):
    data_dir.mkdir(parents=True)
    refused(run, data_dir, C, "redeem", C, "minutes_30", "--at", "2025-03-01T11:00")


def test_a_member_who_left_is_refused(run, data_dir):
    member(run, A, 1150)
    run.ok("leave", A, "--yes", "--at", "2025-03-02T10:00")
    refused(run, data_dir, A, "redeem", A, "minutes_30", "--at", "2025-03-02T11:00")


def test_pending_member_is_refused_with_the_activation_instant(run, data_dir):
    join(run, B, "2025-03-01T12:00", "RU-SPE", "--method", "web")   # active from 2025-03-03T12:00
    r = refused(run, data_dir, B, "redeem", B, "black_list", "--at", "2025-03-02T12:00")
    assert "2025-03-03T12:00" in r.stderr, r.stderr
    # once active, the 250 welcome points pay for it
    v = redeem(run, B, "black_list", "2025-03-03T12:00")
    assert v["points_spent"] == 30
    assert v["balance"] == 220


@pytest.mark.parametrize("args", [
    ("no_such_reward",),
    ("minutes_30", "--via", "fax"),
    ("minutes_30", "--via", ""),
])
def test_unknown_reward_or_channel_is_bad_input(run, sub, data_dir, args):
    member(run, A, 1150)
    refused(run, data_dir, A, "redeem", A, *args, "--at", "2025-03-01T11:00", code=2)
    if args[0] != "no_such_reward":
        return
    p = sub(["redeem", A, *args, "--at", "2025-03-01T11:00"])
    assert p.returncode == 2
    assert p.stderr.startswith("error: ") and len(p.stderr.strip().splitlines()) == 1
    assert "Traceback" not in p.stderr


def test_refusals_exit_1_in_a_real_process(sub, run, data_dir):
    join(run, A, "2025-03-01T10:00", "RU-MOW")
    before = snap(data_dir, A)
    p = sub(["redeem", A, "minutes_30", "--at", "2025-03-01T11:00", "--json"])
    assert p.returncode == 1
    assert "Traceback" not in p.stderr
    assert json.loads(p.stderr)["error"]["code"] == 1
    assert snap(data_dir, A) == before


# ---------------------------------------------------------------- the store discount


@pytest.mark.parametrize("held, price, points, spent, discount, to_pay", [
    (1234, "200.00", None, 1234, "123.40", "76.60"),    # cap 1980 > 1234 held: all of them
    (5150, "100.00", None, 990, "99.00", "1.00"),       # cap floor(990.0) = 990: 99%
    (5150, "99.99", None, 989, "98.90", "1.09"),        # cap floor(989.901) = 989
    (5150, "1.01", None, 9, "0.90", "0.11"),            # cap floor(9.999) = 9
    (5150, "0.11", None, 1, "0.10", "0.01"),            # cap floor(1.089) = 1
    (5150, "1999.90", None, 5150, "515.00", "1484.90"),  # cap 19799 > 5150 held
    (150, "100", None, 150, "15.00", "85.00"),          # only the welcome points
    (5150, "2000", "1234", 1234, "123.40", "1876.60"),
    (5150, "100.00", "990", 990, "99.00", "1.00"),      # exactly the cap
    (1234, "1000.00", "1234", 1234, "123.40", "876.60"),  # exactly the balance
    (5150, "10.00", "1", 1, "0.10", "9.90"),
])
def test_store_discount_arithmetic(run, held, price, points, spent, discount, to_pay):
    member(run, A, held)
    extra = ("--points", points) if points else ()
    v = redeem(run, A, "store_discount", "2025-03-01T11:00", "--via", "store", "--price", price, *extra)
    assert REDEEM_FIELDS <= set(v)
    assert v["phone"] == A
    assert v["code"] == "store_discount"
    assert v["points_spent"] == spent
    assert v["discount_rub"] == discount
    assert v["to_pay_rub"] == to_pay
    assert v["balance"] == held - spent
    assert avail(run, A, "2025-03-01T11:00") == held - spent


@pytest.mark.parametrize("held, price, points", [
    (5150, "100.00", "991"),       # above the cap of 990
    (5150, "0.11", "2"),           # above the cap of 1
    (1234, "1000.00", "1235"),     # above the balance, under the cap of 9900: not lowered
    (150, "1000.00", "5000"),
])
def test_store_discount_points_over_cap_or_balance_refused(run, data_dir, held, price, points):
    member(run, A, held)
    refused(run, data_dir, A, "redeem", A, "store_discount", "--via", "store", "--price", price,
            "--points", points, "--at", "2025-03-01T11:00")
    assert avail(run, A, "2025-03-01T11:00") == held


def test_store_discount_with_no_points_usable_is_refused(run, data_dir):
    member(run, A, 1234)
    # 0.01 RUB: floor(0.01 x 0.99 x 10) = 0 points may pay
    refused(run, data_dir, A, "redeem", A, "store_discount", "--via", "store", "--price", "0.01",
            "--at", "2025-03-01T11:00")
    # nothing held
    assert redeem(run, A, "store_discount", "2025-03-01T12:00", "--via", "store", "--price", "500")["balance"] == 0
    refused(run, data_dir, A, "redeem", A, "store_discount", "--via", "store", "--price", "500",
            "--at", "2025-03-01T13:00")


def test_store_discount_spends_oldest_expiry_first(run):
    join(run, A, "2025-03-01T10:00")                                 # 150 -> 2026-03-01
    assert earn(run, A, "1000", "2025-04-01T10:00")["points"] == 200  # 200 -> 2026-04-01
    v = redeem(run, A, "store_discount", "2025-04-02T10:00", "--via", "store", "--price", "20.00")
    assert v["points_spent"] == 198                                  # floor(20 x 0.99 x 10)
    assert v["discount_rub"] == "19.80" and v["to_pay_rub"] == "0.20"
    f = fc(run, A, "2025-04-02T10:00", "--until", "2026-12-31")
    assert f["lots"] == [{"expires_on": "2026-04-01", "points": 152}]


@pytest.mark.parametrize("extra", [(), ("--price", "0"), ("--price", "-5"), ("--price", "10.001"),
                                   ("--price", "abc"), ("--price", "1000000.01")])
def test_store_discount_bad_or_missing_price_is_bad_input(run, data_dir, extra):
    member(run, A, 1234)
    refused(run, data_dir, A, "redeem", A, "store_discount", "--via", "store", *extra,
            "--at", "2025-03-01T11:00", code=2)


def test_store_discount_in_the_catalog(run):
    v = run.j("catalog", "store_discount")
    assert v["code"] == "store_discount"
    assert v["price"] is None
    assert v["points_per_rub"] == 10
    assert v["max_share"] == "0.99"
    assert v["channels"] == ["store"]
    rows = run.j("catalog")
    sd = [d for d in rows if d["code"] == "store_discount"]
    assert len(sd) == 1 and sd[0]["price"] is None


# ---------------------------------------------------------------- program closing


@pytest.fixture
def history_before_closing(run):
    """Welcome 150 (2024-05-10 -> 2025-05-10), 100 (2024-06-15 -> 2025-06-15), 200 (2025-01-20 -> 2026-01-20)."""
    join(run, A, "2024-05-10T12:00")
    assert earn(run, A, "500", "2024-06-15T12:00")["points"] == 100
    assert earn(run, A, "1000", "2025-01-20T12:00")["points"] == 200


def test_program_closing(run, tmp_path, data_dir, history_before_closing):
    closing = catalog_copy(tmp_path, "closing.yaml", closing_date="2025-06-01")
    cat = ("--catalog", closing)

    # the shipped catalog: no closing date
    f = fc(run, A, "2025-05-01T12:00", "--until", "2026-12-31")
    assert f["lots"] == [{"expires_on": "2025-05-10", "points": 150}, {"expires_on": "2025-06-15", "points": 100},
                         {"expires_on": "2026-01-20", "points": 200}]

    # with the closing date: lots expiring before it keep their date, every later one ends on it
    f = fc(run, A, "2025-05-01T12:00", "--until", "2026-12-31", *cat)
    assert f["lots"] == [{"expires_on": "2025-05-10", "points": 150}, {"expires_on": "2025-06-01", "points": 300}]
    assert f["total"] == 450
    b = bal(run, A, "2025-05-01T12:00", *cat)
    assert b["status"] == "active"
    assert b["available"] == 450
    assert b["next_expiry"] == {"date": "2025-05-10", "points": 150}
    assert avail(run, A, "2025-05-10T00:00", *cat) == 300

    b = bal(run, A, "2025-05-31T23:59", *cat)
    assert b["status"] == "active"
    assert b["available"] == 300
    assert b["next_expiry"] == {"date": "2025-06-01", "points": 300}

    b = bal(run, A, "2025-06-01T00:00", *cat)
    assert b["status"] == "closed"
    assert b["available"] == 0
    assert b["next_expiry"] is None
    f = fc(run, A, "2025-06-01T00:00", "--until", "2027-12-31", *cat)
    assert f["lots"] == [] and f["total"] == 0
    f = fc(run, A, "2025-06-10T00:00", *cat)
    assert f["lots"] == [] and f["total"] == 0

    # a refused order/earn/join writes nothing
    refused(run, data_dir, A, "redeem", A, "black_list", "--at", "2025-06-01T10:00", *cat)
    refused(run, data_dir, A, "earn", A, "500", "--category", "taxi", "--at", "2025-06-01T10:00", *cat)
    refused(run, data_dir, B, "join", B, "--region", "RU-SPE", "--at", "2025-06-01T10:00", *cat)
    # the shipped catalog still has the points
    assert avail(run, A, "2025-06-01T10:00") == 300


def test_closing_date_caps_new_lots_credited_before_it(run, tmp_path):
    closing = catalog_copy(tmp_path, "closing.yaml", closing_date="2025-06-01")
    cat = ("--catalog", closing)
    join(run, A, "2025-03-01T10:00", "RU-SPE", *cat)
    run.ok("earn", A, "500", "--category", "taxi", "--at", "2025-03-02T10:00", *cat)
    b = bal(run, A, "2025-03-02T10:00", *cat)
    assert b["available"] == 250
    assert b["next_expiry"] == {"date": "2025-06-01", "points": 250}
    assert avail(run, A, "2025-05-31T23:59", *cat) == 250
    assert avail(run, A, "2025-06-01T00:00", *cat) == 0
