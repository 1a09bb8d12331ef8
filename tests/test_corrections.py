"""RULES.md §3 Refunds and Adjustments, opening-balance imports and `explain` (issue 10).

Every expected number is worked out by hand from RULES.md:
- welcome 150 at join (sms: active at once); a lot expires 12 months after it
  was credited (same local date);
- points = floor(amount x coefficient / rub_per_point); mobile 5 RUB/point with
  the tenure coefficient (a customer since the join date: 1.0), taxi 5,
  mts_store 3, card 30 / 20 / 10 by the previous calendar month's card total;
- a refund of r RUB of a spending of A RUB that earned p points takes back
  floor(p x r / A), except the refund that completes A takes what is left of p;
- the points come out of the spending's own lot first, then oldest expiry
  first; what is missing becomes debt, repaid by the next credits before
  they form lots (or, with `refunds.allow_debt: false`, is not recovered).
- RU-MOW prices: minutes_60 300, minutes_30 210.
After each CLI scenario `check --ledgers` must exit 0 (the conservation invariant).
"""

from __future__ import annotations

import datetime as dt
import json
from contextlib import contextmanager
import re
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bonuscli import catalog as catalog_mod
from bonuscli import rules
from bonuscli.service import stamp
from bonuscli.model import Decision, Refusal

ROOT = Path(__file__).resolve().parent.parent
A = "9161234567"
B = "9167654321"
C = "9031112233"
D = "9035554433"

REFUND_FIELDS = {"phone", "ref", "amount", "points_taken", "debt", "duplicate", "balance"}
ADJUST_FIELDS = {"phone", "points", "reason", "duplicate", "balance"}
SUMMARY_FIELDS = {"rows", "applied", "duplicates", "refused", "errors", "problems"}


# ---------------------------------------------------------------- helpers


def ledger_bytes(data_dir: Path, phone: str):
    f = data_dir / "ledgers" / f"{phone}.jsonl"
    return f.read_bytes() if f.exists() else None


def join(run, phone, at="2025-01-10T10:00", *extra, region="RU-MOW"):
    return run.j("join", phone, "--region", region, "--at", at, *extra)


def earn(run, phone, amount, category, at, ref=None, *extra):
    args = ["earn", phone, amount, "--category", category, "--at", at]
    if ref is not None:
        args += ["--ref", ref]
    return run.j(*args, *extra)


def refund(run, phone, ref, at, *extra):
    return run.j("refund", phone, ref, "--at", at, *extra)


def bal(run, phone, at):
    return run.j("balance", phone, "--at", at)


def lots(run, phone, at, until="2027-12-31"):
    v = run.j("forecast", phone, "--until", until, "--at", at)
    return [(x["expires_on"], x["points"]) for x in v["lots"]]


def err_json(result):
    """The JSON error document of a refused command (CLI.md §2: stderr)."""
    for stream in (result.stderr, result.stdout):
        for line in stream.splitlines():
            line = line.strip()
            if line.startswith("{"):
                doc = json.loads(line)
                if "error" in doc:
                    return doc
    raise AssertionError(f"no JSON error in stdout={result.stdout!r} stderr={result.stderr!r}")


def sound(run, at, *extra):
    r = run("check", "--ledgers", "--at", at, *extra)
    assert r.exit_code == 0, (r.stdout, r.stderr)


def base(run):
    """A joins 2025-01-10 (welcome 150, expires 2026-01-10), earns 1000 mobile on 2025-02-01 ref tx1:
    floor(1000 x 1.0 / 5) = 200, lot expires 2026-02-01. Available 350."""
    join(run, A)
    v = earn(run, A, "1000", "mobile", "2025-02-01T10:00", "tx1")
    assert v["points"] == 200 and v["balance"] == 350


# ---------------------------------------------------------------- refunds


def test_full_refund_returns_to_state_before_earn(run, data_dir):
    base(run)
    v = refund(run, A, "tx1", "2025-02-02T10:00")
    assert REFUND_FIELDS <= set(v)
    assert v["phone"] == A
    assert v["ref"] == "tx1"
    assert v["amount"] == "1000.00"
    assert v["points_taken"] == 200
    assert v["debt"] == 0
    assert v["duplicate"] is False
    assert v["balance"] == 150
    b = bal(run, A, "2025-02-02T11:00")
    assert b["available"] == 150
    assert b["debt"] == 0
    assert lots(run, A, "2025-02-02T11:00") == [("2026-01-10", 150)]
    sound(run, "2025-02-03")


def test_refund_phone_spellings_and_amount_format(run):
    base(run)
    v = refund(run, "+7 916 123-45-67", "tx1", "2025-02-02T10:00", "--amount", "200")
    # floor(200 x 200 / 1000) = 40
    assert v["phone"] == A
    assert v["amount"] == "200.00"
    assert v["points_taken"] == 40
    assert v["balance"] == 310
    sound(run, "2025-02-03")


def test_partial_refund_exact_floor(run):
    base(run)
    v = refund(run, A, "tx1", "2025-02-02T10:00", "--amount", "333.33")
    # floor(200 x 333.33 / 1000) = floor(66.666) = 66
    assert v["amount"] == "333.33"
    assert v["points_taken"] == 66
    assert v["balance"] == 284
    assert bal(run, A, "2025-02-02T11:00")["available"] == 284
    sound(run, "2025-02-03")


def test_two_partials_adding_up_take_back_exactly_the_original(run):
    base(run)
    v1 = refund(run, A, "tx1", "2025-02-02T10:00", "--amount", "333.33")
    assert v1["points_taken"] == 66
    v2 = refund(run, A, "tx1", "2025-02-03T10:00", "--amount", "666.67")
    # floor(200 x 666.67 / 1000) would be 133, but this refund completes the 1000: 200 - 66 = 134
    assert v2["points_taken"] == 134
    assert v2["balance"] == 150
    assert lots(run, A, "2025-02-04") == [("2026-01-10", 150)]
    # nothing is left to refund
    r = run("refund", A, "tx1", "--amount", "0.01", "--at", "2025-02-04T10:00")
    assert r.exit_code == 1
    r = run("refund", A, "tx1", "--at", "2025-02-04T10:00")
    assert r.exit_code == 1
    sound(run, "2025-02-05")


def test_three_parts_the_last_takes_the_rest(run):
    base(run)
    got = [refund(run, A, "tx1", f"2025-02-0{2 + i}T10:00", "--amount", amt)["points_taken"]
           for i, amt in enumerate(["333.33", "333.33", "333.34"])]
    # 66, 66, then whatever is left of 200: 68
    assert got == [66, 66, 68]
    assert bal(run, A, "2025-02-05")["available"] == 150
    sound(run, "2025-02-06")


def test_refund_more_than_left_refused(run, data_dir):
    base(run)
    refund(run, A, "tx1", "2025-02-02T10:00", "--amount", "333.33")
    before = ledger_bytes(data_dir, A)
    r = run("refund", A, "tx1", "--amount", "666.68", "--at", "2025-02-03T10:00", "--json")
    assert r.exit_code == 1
    assert err_json(r)["error"]["code"] == 1
    r = run("refund", A, "tx1", "--amount", "1000.01", "--at", "2025-02-03T10:00")
    assert r.exit_code == 1
    assert r.stderr.startswith("error: ")
    assert ledger_bytes(data_dir, A) == before
    assert bal(run, A, "2025-02-03T11:00")["available"] == 284


def test_refund_unknown_ref_refused(run, data_dir):
    base(run)
    before = ledger_bytes(data_dir, A)
    r = run("refund", A, "no-such-tx", "--at", "2025-02-02T10:00", "--json")
    assert r.exit_code == 1
    doc = err_json(r)
    assert doc["error"]["code"] == 1
    assert isinstance(doc["error"]["kind"], str) and doc["error"]["message"]
    assert ledger_bytes(data_dir, A) == before
    # an earn without --ref cannot be refunded by anything
    earn(run, A, "500", "mobile", "2025-02-03T10:00")
    r = run("refund", A, "", "--at", "2025-02-04T10:00")
    assert r.exit_code != 0


def test_refund_of_non_member_refused(run, data_dir):
    r = run("refund", B, "tx1", "--at", "2025-02-02T10:00", "--json")
    assert r.exit_code == 2 and '"no-data-dir"' in r.stderr  # CLI.md §1: no data directory yet
    data_dir.mkdir(parents=True)
    r = run("refund", B, "tx1", "--at", "2025-02-02T10:00", "--json")
    assert r.exit_code == 1 and '"not-member"' in r.stderr


def test_refund_after_leave_becomes_debt_of_the_phone(run):
    # RULES.md is silent; docs/rules.md decides: "Debt survives leaving ... A refund of a
    # spending from a membership that has since ended is still recorded, entirely as debt",
    # repaid by the credits of a later membership.
    base(run)
    assert run.j("leave", A, "--yes", "--at", "2025-02-02T10:00")["forfeited"] == 350
    v = refund(run, A, "tx1", "2025-02-03T10:00")
    assert (v["points_taken"], v["debt"], v["balance"]) == (0, 200, 0)
    j = join(run, A, "2025-02-04T10:00")  # no welcome the second time
    assert j["welcome"] == []
    e = earn(run, A, "500", "mobile", "2025-02-05T10:00", "tx2")  # 100 points, all repay the debt
    assert e["points"] == 100
    b = bal(run, A, "2025-02-05T11:00")
    assert (b["available"], b["debt"]) == (0, 100)
    e = earn(run, A, "1000", "mobile", "2025-02-06T10:00", "tx3")  # 200: 100 repay, a lot of 100
    b = bal(run, A, "2025-02-06T11:00")
    assert (b["available"], b["debt"]) == (100, 0)
    assert lots(run, A, "2025-02-06T11:00") == [("2026-02-06", 100)]
    sound(run, "2025-02-07")


def test_refund_bad_amount_exit_2(run, data_dir):
    base(run)
    before = ledger_bytes(data_dir, A)
    for bad in ("0", "-5", "1.234", "abc"):
        r = run("refund", A, "tx1", "--amount", bad, "--at", "2025-02-02T10:00")
        assert r.exit_code == 2, bad
    assert ledger_bytes(data_dir, A) == before


def test_refund_after_spending_creates_debt_repaid_by_next_earn(run):
    base(run)
    # minutes_60 costs 300 in RU-MOW: oldest first, 150 welcome + 150 of tx1's lot -> 50 left (2026-02-01)
    assert run.j("redeem", A, "minutes_60", "--at", "2025-02-05T10:00")["balance"] == 50
    v = refund(run, A, "tx1", "2025-02-06T10:00")
    assert v["points_taken"] == 50
    assert v["debt"] == 150
    assert v["balance"] == 0
    b = bal(run, A, "2025-02-06T11:00")
    assert b["available"] == 0
    assert b["debt"] == 150
    assert lots(run, A, "2025-02-06T11:00") == []
    # next earn: 1000 mobile = 200 points; 150 repay the debt, a lot of 50 forms (expires 2026-02-10)
    e = earn(run, A, "1000", "mobile", "2025-02-10T10:00", "tx2")
    assert e["points"] == 200
    assert e["balance"] == 50
    b = bal(run, A, "2025-02-10T11:00")
    assert b["available"] == 50
    assert b["debt"] == 0
    assert lots(run, A, "2025-02-10T11:00") == [("2026-02-10", 50)]
    sound(run, "2025-02-11")


def test_debt_larger_than_next_earn_stays_partly(run):
    base(run)
    run.j("redeem", A, "minutes_60", "--at", "2025-02-05T10:00")
    refund(run, A, "tx1", "2025-02-06T10:00")  # debt 150
    e = earn(run, A, "500", "mobile", "2025-02-10T10:00", "tx2")  # 100 points, all to the debt
    assert e["points"] == 100
    assert e["balance"] == 0
    b = bal(run, A, "2025-02-10T11:00")
    assert (b["available"], b["debt"]) == (0, 50)
    assert lots(run, A, "2025-02-10T11:00") == []
    sound(run, "2025-02-11")


def test_refund_without_debt_reports_not_recovered(run, data_dir, tmp_path):
    text = (ROOT / "catalog.yaml").read_text(encoding="utf-8")
    assert "allow_debt: true" in text
    cat = tmp_path / "nodebt.yaml"
    cat.write_text(text.replace("allow_debt: true", "allow_debt: false"), encoding="utf-8")
    c = ("--catalog", str(cat))
    run.j("join", A, "--region", "RU-MOW", "--at", "2025-01-10T10:00", *c)
    run.j("earn", A, "1000", "--category", "mobile", "--ref", "tx1", "--at", "2025-02-01T10:00", *c)
    run.j("redeem", A, "minutes_60", "--at", "2025-02-05T10:00", *c)
    v = run.j("refund", A, "tx1", "--at", "2025-02-06T10:00", *c)
    assert v["points_taken"] == 50
    assert v["not_recovered"] == 150
    assert v["debt"] == 0
    assert v["balance"] == 0
    b = run.j("balance", A, "--at", "2025-02-06T11:00", *c)
    assert (b["available"], b["debt"]) == (0, 0)
    # no debt: the next earn forms its whole lot
    e = run.j("earn", A, "1000", "--category", "mobile", "--ref", "tx2", "--at", "2025-02-10T10:00", *c)
    assert e["balance"] == 200
    f = run.j("forecast", A, "--until", "2027-01-01", "--at", "2025-02-10T11:00", *c)
    assert [(x["expires_on"], x["points"]) for x in f["lots"]] == [("2026-02-10", 200)]
    sound(run, "2025-02-11", *c)


def test_repeated_refund_ref_changes_nothing(run, data_dir):
    base(run)
    v = refund(run, A, "tx1", "2025-02-02T10:00", "--amount", "100", "--ref", "rf-1")
    # floor(200 x 100 / 1000) = 20
    assert v["points_taken"] == 20
    assert v["duplicate"] is False
    assert v["balance"] == 330
    before = ledger_bytes(data_dir, A)
    again = refund(run, A, "tx1", "2025-02-03T10:00", "--amount", "100", "--ref", "rf-1")
    assert again["duplicate"] is True
    assert again["balance"] == 330
    assert again["points_taken"] == 20
    # even with another amount: same ref, nothing happens
    other = refund(run, A, "tx1", "2025-02-03T10:00", "--amount", "900", "--ref", "rf-1")
    assert other["duplicate"] is True
    assert other["balance"] == 330
    assert ledger_bytes(data_dir, A) == before
    assert bal(run, A, "2025-02-04")["available"] == 330
    # without --ref a second refund is a new refund: another 20
    assert refund(run, A, "tx1", "2025-02-04T10:00", "--amount", "100")["balance"] == 310
    sound(run, "2025-02-05")


def test_refused_refund_does_not_use_up_its_ref(run):
    base(run)
    r = run("refund", A, "tx1", "--amount", "5000", "--ref", "rf-9", "--at", "2025-02-02T10:00")
    assert r.exit_code == 1
    v = refund(run, A, "tx1", "2025-02-02T11:00", "--amount", "100", "--ref", "rf-9")
    assert v["duplicate"] is False
    assert v["points_taken"] == 20
    sound(run, "2025-02-03")


def test_refunded_card_payment_lowers_next_month_tier_welcome_stays(run):
    join(run, A, "2024-12-01T10:00")
    # January: 20,000 card, December total 0 -> 30 RUB/point: floor(20000/30) = 666, crosses 3,000: +1000 card welcome
    e = earn(run, A, "20000", "card", "2025-01-15T10:00", "c1")
    assert e["points"] == 666
    assert [b["points"] for b in e["bonuses"]] == [1000]
    assert e["balance"] == 150 + 666 + 1000
    # refunded in February: 6,000 of 20,000 -> floor(666 x 6000 / 20000) = floor(199.8) = 199
    v = refund(run, A, "c1", "2025-02-03T10:00", "--amount", "6000")
    assert v["points_taken"] == 199
    assert v["balance"] == 150 + 666 + 1000 - 199
    # January's card total is now 14,000 <= 15,000 -> February card payments earn at 30 RUB/point
    f = earn(run, A, "3000", "card", "2025-02-05T10:00", "c2")
    assert f["rub_per_point"] == 30
    assert f["points"] == 100  # at 20 RUB/point (20,000 total) it would be 150
    assert f["bonuses"] == []  # the card welcome once, ever
    assert bal(run, A, "2025-02-05T11:00")["available"] == 150 + 666 + 1000 - 199 + 100
    # explain of the February card earn names the previous month's total and the tier
    x = run.j("explain", A, "c2", "--at", "2025-02-05T11:00")
    text = " | ".join(s["detail"] for s in x["steps"])
    assert "14000.00" in text
    assert re.search(r"\b30\b", text)
    assert x["result"]["points"] == 100
    sound(run, "2025-02-06")


def test_full_refund_of_card_welcome_payment_keeps_welcome(run):
    join(run, A, "2024-12-01T10:00")
    e = earn(run, A, "3000", "card", "2025-01-15T10:00", "c1")
    assert e["points"] == 100  # 3000 / 30
    assert [b["points"] for b in e["bonuses"]] == [1000]
    v = refund(run, A, "c1", "2025-01-16T10:00")
    assert v["points_taken"] == 100
    assert v["balance"] == 150 + 1000
    sound(run, "2025-01-17")


def test_refund_takes_from_the_spendings_own_lot_first(run):
    base(run)
    # refund 500 of 1000: floor(200 x 500 / 1000) = 100, from tx1's lot (2026-02-01), not the older welcome lot
    v = refund(run, A, "tx1", "2025-02-02T10:00", "--amount", "500")
    assert v["points_taken"] == 100
    assert lots(run, A, "2025-02-02T11:00") == [("2026-01-10", 150), ("2026-02-01", 100)]
    x = run.j("explain", A, "--at", "2025-02-02T11:00")
    got = sorted((l["expires_on"], l["credited"], l["available"]) for l in x["result"]["lots"])
    assert got == [("2026-01-10", 150, 150), ("2026-02-01", 200, 100)]
    sound(run, "2025-02-03")


def test_refund_own_lot_then_oldest_expiry(run):
    base(run)
    run.j("redeem", A, "minutes_60", "--at", "2025-02-05T10:00")  # 150 welcome + 150 of tx1 -> tx1 lot 50
    earn(run, A, "1000", "mobile", "2025-02-10T10:00", "tx2")  # 200, expires 2026-02-10
    run.j("adjust", A, "100", "--reason", "goodwill", "--expires-on", "2026-01-20", "--at", "2025-02-11T10:00")
    assert lots(run, A, "2025-02-11T11:00") == [("2026-01-20", 100), ("2026-02-01", 50), ("2026-02-10", 200)]
    # full refund of tx1: 200 = 50 from its own lot, then oldest expiry: 100 (2026-01-20), 50 of tx2's lot
    v = refund(run, A, "tx1", "2025-02-12T10:00")
    assert v["points_taken"] == 200
    assert v["debt"] == 0
    assert v["balance"] == 150
    assert lots(run, A, "2025-02-12T11:00") == [("2026-02-10", 150)]
    sound(run, "2025-02-13")


def test_refund_from_csv_batch(run, data_dir, tmp_path):
    join(run, A)
    join(run, B)
    earn(run, A, "1000", "mobile", "2025-02-01T10:00", "tx1")  # 200
    earn(run, A, "500", "mobile", "2025-02-01T11:00", "tx2")  # 100
    earn(run, B, "300", "taxi", "2025-02-01T12:00", "tx3")  # 60
    f = tmp_path / "refunds.csv"
    f.write_text("phone,ref,amount,refund_ref\n"
                 f"{A},tx1,333.33,rf1\n"  # 66
                 f"{A},tx2,,rf2\n"  # all of it: 100
                 f"{B},tx3,150,rf3\n"  # floor(60 x 150 / 300) = 30
                 f"{A},nope,,rf4\n",  # unknown ref: refused (line 5)
                 encoding="utf-8")
    r = run("refund", "--from", str(f), "--at", "2025-02-02T10:00", "--json")
    assert r.exit_code == 1
    s = r.json
    assert SUMMARY_FIELDS <= set(s)
    assert (s["rows"], s["applied"], s["duplicates"], s["refused"], s["errors"]) == (4, 3, 0, 1, 0)
    assert [(p["line"], p["code"]) for p in s["problems"]] == [(5, 1)]
    assert bal(run, A, "2025-02-02T11:00")["available"] == 150 + 200 + 100 - 66 - 100
    assert bal(run, B, "2025-02-02T11:00")["available"] == 150 + 60 - 30
    snap = (ledger_bytes(data_dir, A), ledger_bytes(data_dir, B))
    r = run("refund", "--from", str(f), "--at", "2025-02-03T10:00", "--json")
    assert r.exit_code == 1
    s = r.json
    assert (s["rows"], s["applied"], s["duplicates"], s["refused"], s["errors"]) == (4, 0, 3, 1, 0)
    assert (ledger_bytes(data_dir, A), ledger_bytes(data_dir, B)) == snap
    sound(run, "2025-02-04")


def test_refund_subprocess_exit_codes_no_traceback(sub, data_dir):
    env = {"BONUSCLI_DATA_DIR": str(data_dir)}
    p = sub(["join", A, "--region", "RU-MOW", "--at", "2025-01-10T10:00"], env=env)
    assert p.returncode == 0, p.stderr
    p = sub(["refund", A, "tx1", "--at", "2025-01-11"], env=env)
    assert p.returncode == 1
    assert "Traceback" not in p.stderr
    assert p.stderr.startswith("error: ")
    p = sub(["adjust", A, "10", "--at", "2025-01-11"], env=env)
    assert p.returncode == 2
    assert "Traceback" not in p.stderr


# ---------------------------------------------------------------- adjustments


def test_adjust_credit_normal_expiry(run, data_dir):
    join(run, A)
    v = run.j("adjust", A, "200", "--reason", "goodwill: outage", "--at", "2025-03-01T12:00")
    assert ADJUST_FIELDS <= set(v)
    assert v["phone"] == A
    assert v["points"] == 200
    assert v["reason"] == "goodwill: outage"
    assert v["duplicate"] is False
    assert v["balance"] == 350
    assert lots(run, A, "2025-03-01T13:00") == [("2026-01-10", 150), ("2026-03-01", 200)]
    # the reason is kept in the ledger
    rows = [json.loads(x) for x in ledger_bytes(data_dir, A).decode().splitlines() if x.strip()]
    assert any(e.get("reason") == "goodwill: outage" and e.get("points") == 200 for e in rows)
    sound(run, "2025-03-02")


def test_adjust_credit_with_expiry_date(run):
    join(run, A)
    v = run.j("adjust", A, "50", "--reason", "promo", "--expires-on", "2025-04-15", "--at", "2025-03-01T12:00")
    assert v["balance"] == 200
    f = run.j("forecast", A, "--days", "60", "--at", "2025-03-01T13:00")
    assert [(x["expires_on"], x["points"]) for x in f["lots"]] == [("2025-04-15", 50)]
    assert f["total"] == 50
    assert bal(run, A, "2025-04-14T23:59")["available"] == 200
    assert bal(run, A, "2025-04-15T00:00")["available"] == 150
    sound(run, "2025-04-16")


def test_adjust_debit_oldest_first(run):
    join(run, A)
    run.j("adjust", A, "200", "--reason", "goodwill", "--at", "2025-03-01T12:00")
    v = run.j("adjust", A, "-100", "--reason", "duplicate credit", "--at", "2025-03-02T12:00")
    assert v["points"] == -100
    assert v["balance"] == 250
    assert lots(run, A, "2025-03-02T13:00") == [("2026-01-10", 50), ("2026-03-01", 200)]
    sound(run, "2025-03-03")


def test_adjust_debit_below_zero_refused(run, data_dir):
    join(run, A)
    before = ledger_bytes(data_dir, A)
    r = run("adjust", A, "-151", "--reason", "correction", "--at", "2025-03-01T12:00", "--json")
    assert r.exit_code == 1
    assert err_json(r)["error"]["code"] == 1
    assert ledger_bytes(data_dir, A) == before
    assert bal(run, A, "2025-03-01T13:00")["available"] == 150
    # exactly what is there is fine
    assert run.j("adjust", A, "-150", "--reason", "correction", "--at", "2025-03-01T14:00")["balance"] == 0
    sound(run, "2025-03-02")


@pytest.mark.parametrize("args", [
    ("200",),  # no --reason
    ("200", "--reason", ""),
    ("200", "--reason", "   "),
    ("0", "--reason", "nothing"),
    ("abc", "--reason", "x"),
    ("1.5", "--reason", "x"),
])
def test_adjust_bad_input_exit_2(run, data_dir, args):
    join(run, A)
    before = ledger_bytes(data_dir, A)
    r = run("adjust", A, *args, "--at", "2025-03-01T12:00")
    assert r.exit_code == 2, (args, r.stdout, r.stderr)
    assert ledger_bytes(data_dir, A) == before


def test_adjust_ref_idempotent(run, data_dir):
    join(run, A)
    v = run.j("adjust", A, "100", "--reason", "ticket 77", "--ref", "t-77", "--at", "2025-03-01T12:00")
    assert v["balance"] == 250 and v["duplicate"] is False
    before = ledger_bytes(data_dir, A)
    again = run.j("adjust", A, "100", "--reason", "ticket 77", "--ref", "t-77", "--at", "2025-03-02T12:00")
    assert again["duplicate"] is True
    assert again["balance"] == 250
    assert ledger_bytes(data_dir, A) == before
    sound(run, "2025-03-03")


def test_adjust_non_member_refused(run, data_dir):
    data_dir.mkdir(parents=True)
    r = run("adjust", A, "100", "--reason", "x", "--at", "2025-03-01T12:00", "--json")
    assert r.exit_code == 1 and '"not-member"' in r.stderr


def test_adjust_credit_repays_debt_first(run):
    base(run)
    run.j("redeem", A, "minutes_60", "--at", "2025-02-05T10:00")
    refund(run, A, "tx1", "2025-02-06T10:00")  # debt 150
    v = run.j("adjust", A, "200", "--reason", "goodwill", "--at", "2025-02-07T10:00")
    assert v["balance"] == 50
    b = bal(run, A, "2025-02-07T11:00")
    assert (b["available"], b["debt"]) == (50, 0)
    assert lots(run, A, "2025-02-07T11:00") == [("2026-02-07", 50)]
    sound(run, "2025-02-08")


OPENING = (
    "phone,points,reason,ref,expires_on,region\n"
    f"{A},500,opening balance,ob-a1,2025-06-30,RU-MOW\n"
    f"{A},300,opening balance,ob-a2,2025-12-31,RU-MOW\n"
    f"{A},200,opening balance,ob-a3,2026-03-31,RU-MOW\n"
    f"{B},1000,opening balance,ob-b1,2025-04-30,RU-SPE\n"
    f"{B},40,opening balance,ob-b2,,RU-SPE\n"
    f"{C},70,opening balance,ob-c1,2025-09-15,\n"
)


def test_opening_balance_import_and_rerun(run, data_dir, tmp_path):
    join(run, C, "2025-02-01T10:00")  # C is already a member: welcome 150, expires 2026-02-01
    f = tmp_path / "opening.csv"
    f.write_text(OPENING, encoding="utf-8")
    r = run("adjust", "--from", str(f), "--at", "2025-03-01T12:00", "--json")
    assert r.exit_code == 0, (r.stdout, r.stderr)
    s = r.json
    assert SUMMARY_FIELDS <= set(s)
    assert (s["rows"], s["applied"], s["duplicates"], s["refused"], s["errors"]) == (6, 6, 0, 0, 0)
    assert s["problems"] == []
    # A and B did not exist: joined first in the row's region, with NO welcome points
    a = bal(run, A, "2025-03-01T13:00")
    assert (a["status"], a["region"], a["available"]) == ("active", "RU-MOW", 1000)
    b = bal(run, B, "2025-03-01T13:00")
    assert (b["status"], b["region"], b["available"]) == ("active", "RU-SPE", 1040)
    assert bal(run, C, "2025-03-01T13:00")["available"] == 220
    assert lots(run, A, "2025-03-01T13:00") == [("2025-06-30", 500), ("2025-12-31", 300), ("2026-03-31", 200)]
    # no expires_on: the normal 12 months from 2025-03-01
    assert lots(run, B, "2025-03-01T13:00") == [("2025-04-30", 1000), ("2026-03-01", 40)]
    assert lots(run, C, "2025-03-01T13:00") == [("2025-09-15", 70), ("2026-02-01", 150)]
    snap = {p: ledger_bytes(data_dir, p) for p in (A, B, C)}
    # re-run: nothing doubled
    r = run("adjust", "--from", str(f), "--at", "2025-03-02T12:00", "--json")
    assert r.exit_code == 0, (r.stdout, r.stderr)
    s = r.json
    assert (s["rows"], s["applied"], s["duplicates"], s["refused"], s["errors"]) == (6, 0, 6, 0, 0)
    assert {p: ledger_bytes(data_dir, p) for p in (A, B, C)} == snap
    assert bal(run, A, "2025-03-02T13:00")["available"] == 1000
    assert bal(run, B, "2025-03-02T13:00")["available"] == 1040
    # the imported lots expire on their own dates
    assert bal(run, B, "2025-04-30T00:00")["available"] == 40
    assert bal(run, A, "2025-06-30T00:00")["available"] == 500
    sound(run, "2025-07-01")


def test_opening_balance_import_from_stdin(run, data_dir):
    r = run("adjust", "--from", "-", "--at", "2025-03-01T12:00", "--json", input=OPENING.replace(f"{C},70", f"{D},70")
            .replace("2025-09-15,\n", "2025-09-15,RU-SPE\n"))
    assert r.exit_code == 0, (r.stdout, r.stderr)
    assert (r.json["rows"], r.json["applied"]) == (6, 6)
    assert bal(run, D, "2025-03-01T13:00")["available"] == 70


def test_opening_balance_import_problems(run, data_dir, tmp_path):
    f = tmp_path / "bad.csv"
    f.write_text("phone,points,reason,ref,expires_on,region\n"
                 f"{A},100,opening,ok-1,2026-01-31,RU-MOW\n"  # applied
                 f"{B},100,opening,no-region,2026-01-31,\n"  # not a member, no region: refused (line 3)
                 f"{A},-500,correction,too-much,,\n"  # below zero: refused (line 4)
                 f"{A},lots,opening,bad-points,,\n"  # malformed (line 5)
                 f"{A},10,,no-reason,,\n"  # reason missing: malformed (line 6)
                 f"{C},10,opening,bad-region,,RU-XXX\n",  # unknown region: malformed (line 7)
                 encoding="utf-8")
    r = run("adjust", "--from", str(f), "--at", "2025-03-01T12:00", "--json")
    assert r.exit_code == 2
    s = r.json
    assert (s["rows"], s["applied"], s["duplicates"], s["refused"], s["errors"]) == (6, 1, 0, 2, 3)
    assert [(p["line"], p["code"]) for p in s["problems"]] == [(3, 1), (4, 1), (5, 2), (6, 2), (7, 2)]
    assert bal(run, A, "2025-03-01T13:00")["available"] == 100
    assert ledger_bytes(data_dir, B) is None or bal(run, B, "2025-03-01T13:00")["status"] not in ("active", "pending")
    sound(run, "2025-03-02")


# ---------------------------------------------------------------- explain


def test_explain_worked_example_500_mobile_13_months(run):
    # customer since 2024-02-01: on 2025-03-01, 13 whole months (more than 12, up to 24) -> 1.2
    join(run, A, "2025-03-01T12:00", "--customer-since", "2024-02-01")
    e = earn(run, A, "500", "mobile", "2025-03-01T13:00", "tx-500")
    assert e["points"] == 120
    x = run.j("explain", A, "tx-500", "--at", "2025-03-01T14:00")
    steps = x["steps"]
    assert isinstance(steps, list) and steps
    for s in steps:
        assert isinstance(s["rule"], str) and s["rule"]
        assert isinstance(s["detail"], str) and s["detail"]
    details = [s["detail"] for s in steps]
    tenure = [s for s in steps if re.search(r"\b13\b[^0-9]*months", s["detail"])]
    assert tenure, details
    assert "1.2" in tenure[0]["detail"]
    assert any("2024-02-01" in d for d in details)
    formula = [s for s in steps if "500.00 x 1.2 / 5 = 120" in s["detail"]]
    assert formula, details
    assert formula[0].get("points") == 120
    assert any("floor" in d and "120" in d for d in details)
    assert any("2026-03-01" in d for d in details)  # the lot and its expiry date
    assert any("mobile" in d and re.search(r"\b5\b", d) for d in details)  # the category and its rate
    assert x["result"]["points"] == 120


def test_explain_earn_with_fraction_shows_exact_product(run):
    # customer since 2024-08-01: on 2025-03-01, 7 months (more than 6, up to 12) -> 1.1
    join(run, A, "2025-03-01T12:00", "--customer-since", "2024-08-01")
    e = earn(run, A, "499", "mobile", "2025-03-01T13:00", "tx-499")
    assert e["points"] == 109
    x = run.j("explain", A, "tx-499", "--at", "2025-03-01T14:00")
    details = [s["detail"] for s in x["steps"]]
    assert any("499.00 x 1.1 / 5 = 109.78" in d for d in details), details  # exact: 548.9 / 5
    assert any(re.search(r"\b7\b[^0-9]*months", d) for d in details), details
    assert x["result"]["points"] == 109


def test_explain_by_event_id(run, data_dir):
    join(run, A, "2025-03-01T12:00", "--customer-since", "2024-02-01")
    earn(run, A, "500", "mobile", "2025-03-01T13:00", "tx-500")
    rows = [json.loads(x) for x in ledger_bytes(data_dir, A).decode().splitlines() if x.strip()]
    eid = next(e["id"] for e in rows if e["type"] == "earn")
    x = run.j("explain", A, eid, "--at", "2025-03-01T14:00")
    assert x["result"]["points"] == 120


def test_explain_unknown_key_refused(run):
    join(run, A)
    r = run("explain", A, "nope", "--at", "2025-03-01T14:00")
    assert r.exit_code == 1


def test_explain_balance_as_lots(run):
    base(run)
    run.j("redeem", A, "minutes_30", "--at", "2025-02-05T10:00")  # 210: 150 welcome, 60 of tx1's lot
    x = run.j("explain", A, "--at", "2025-02-06")
    assert x["steps"]
    ls = x["result"]["lots"]
    got = [(l["expires_on"], l["credited"], l["available"]) for l in ls]
    assert got == [("2026-02-01", 200, 140)]
    assert x["result"]["available"] == 140


def test_explain_refund_names_the_lots_taken(run):
    # issue 10: "For a refund or adjustment: which lots it took from."
    base(run)
    refund(run, A, "tx1", "2025-02-02T10:00", "--amount", "500", "--ref", "rf-1")
    x = run.j("explain", A, "rf-1", "--at", "2025-02-03")
    text = json.dumps(x)
    assert "2026-02-01" in text  # the expiry date of tx1's lot it took 100 from
    assert re.search(r"\b100\b", text)


def test_calc_explain_json_has_steps(run):
    v = run.j("calc", "500", "--category", "mobile", "--tenure-months", "13", "--explain")
    assert v["points"] == 120
    details = [s["detail"] for s in v["steps"]]
    assert any("500.00 x 1.2 / 5 = 120" in d for d in details), details
    assert any("1.2" in d and "13" in d for d in details), details


def test_refused_redeem_explains_with_numbers(run):
    join(run, A)
    # minutes_60 costs 300 in RU-MOW; A has 150: 150 missing
    r = run("redeem", A, "minutes_60", "--explain", "--json", "--at", "2025-01-11")
    assert r.exit_code == 1
    doc = err_json(r)
    assert doc["error"]["code"] == 1
    assert "150" in doc["error"]["message"]
    steps = doc["error"].get("steps") or doc.get("steps")
    assert steps, doc
    text = " | ".join(s["detail"] for s in steps)
    assert "300" in text and "150" in text


def test_refused_refund_explains_with_numbers(run):
    # CLI.md: `--explain` ... on a refused command: why. A refund larger than what is left.
    base(run)
    refund(run, A, "tx1", "2025-02-02T10:00", "--amount", "333.33")
    r = run("refund", A, "tx1", "--amount", "700", "--explain", "--json", "--at", "2025-02-03")
    assert r.exit_code == 1
    doc = err_json(r)
    steps = doc["error"].get("steps") or doc.get("steps")
    assert steps, doc
    text = " | ".join(s["detail"] for s in steps)
    assert "666.67" in text and "700.00" in text


# ---------------------------------------------------------------- properties on the rules module

CAT, PROBLEMS = catalog_mod.validate(ROOT / "catalog.yaml", "catalog.yaml")
assert CAT is not None and not PROBLEMS, PROBLEMS
MSK = ZoneInfo("Europe/Moscow")
START = dt.datetime(2025, 1, 6, 9, 0, tzinfo=MSK)
PROPS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def apply(events: list, d):
    assert isinstance(d, Decision), d
    for phone, evs in d.writes:
        assert phone == A
        events.extend(stamp(A, len(events), evs))


def new_member(at):
    events = []
    m = rules.replay(CAT, A, events, at)
    apply(events, rules.join(CAT, m, at, {"region": "RU-MOW", "method": "sms", "services": ["mobile"]}))
    return events


def split(total_cents: int, cuts) -> list:
    points = sorted({c for c in cuts if 0 < c < total_cents})
    bounds = [0] + points + [total_cents]
    return [Decimal(b - a) / 100 for a, b in zip(bounds, bounds[1:])]


@PROPS
@given(cents=st.integers(min_value=1, max_value=50_000_000),
       cuts=st.lists(st.integers(min_value=1, max_value=50_000_000), max_size=5),
       full=st.booleans())
def test_property_refund_parts_never_exceed_and_add_up(cents, cuts, full):
    events = new_member(START)
    amount = Decimal(cents) / 100
    at = START + dt.timedelta(hours=1)
    m = rules.replay(CAT, A, events, at)
    apply(events, rules.earn(CAT, m, at, amount, "mobile", "tx"))
    p = int(Fraction(cents, 100) / 5)  # floor(amount x 1.0 / 5)
    assert events[-1]["points"] == p
    parts = split(cents, [c % cents for c in cuts])
    if not full:
        parts = parts[:-1]  # leave the last part unrefunded
    taken = 0
    refunded = Decimal(0)
    for i, r in enumerate(parts, start=1):
        at = START + dt.timedelta(hours=1 + i)
        m = rules.replay(CAT, A, events, at)
        d = rules.refund(CAT, m, at, "tx", r)
        apply(events, d)
        refunded += r
        want = p - taken if refunded == amount else int(Fraction(p) * Fraction(r) / Fraction(amount))
        assert d.view["points_taken"] == want
        assert d.view["debt"] == 0
        taken += want
        assert taken <= p
    m = rules.replay(CAT, A, events, START + dt.timedelta(days=1))
    assert m.debt == 0
    if full:
        assert taken == p
        assert m.available() == 150
        # and nothing more can be refunded
        assert isinstance(rules.refund(CAT, m, START + dt.timedelta(days=1), "tx", Decimal("0.01")), Refusal)
    else:
        assert m.available() == 150 + p - taken
    lhs, rhs = audit_conservation(m)
    assert lhs == rhs


def audit_conservation(m):
    from bonuscli import audit

    return audit.conservation(m)


CATS = ["mobile", "taxi", "mts_store"]
spend = st.tuples(st.integers(min_value=1, max_value=2_000_000).map(lambda c: Decimal(c) / 100), st.sampled_from(CATS))


@PROPS
@given(before=st.lists(spend, max_size=3), target=spend, after=st.lists(spend, max_size=3),
       nparts=st.integers(min_value=1, max_value=3), gap_days=st.integers(min_value=0, max_value=200))
def test_property_earn_then_full_refund_as_if_never(before, target, after, nparts, gap_days):
    events = new_member(START)
    t = START
    skip_ids = set()

    def do_earn(amount, category, ref=None):
        nonlocal t
        t += dt.timedelta(hours=5)
        m = rules.replay(CAT, A, events, t)
        apply(events, rules.earn(CAT, m, t, amount, category, ref))
        return events[-1]["id"]

    for amount, category in before:
        do_earn(amount, category)
    amount, category = target
    skip_ids.add(do_earn(amount, category, "X"))
    for a, c in after:
        do_earn(a, c)
    t += dt.timedelta(days=gap_days)
    cents = int(amount * 100)
    parts = split(cents, [cents * k // nparts for k in range(1, nparts)])
    for r in parts:
        t += dt.timedelta(hours=1)
        m = rules.replay(CAT, A, events, t)
        apply(events, rules.refund(CAT, m, t, "X", r))
        skip_ids.add(events[-1]["id"])
    end = t + dt.timedelta(hours=1)
    with_x = rules.replay(CAT, A, events, end)
    without = rules.replay(CAT, A, [e for e in events if e["id"] not in skip_ids], end)
    assert with_x.available() == without.available()
    assert with_x.debt == 0
    far = end.date() + dt.timedelta(days=800)
    fa = rules.forecast(with_x, end, until=far).view
    fb = rules.forecast(without, end, until=far).view
    assert fa["lots"] == fb["lots"]
    assert fa["total"] == fb["total"]
    assert rules.balance(with_x, end).view["next_expiry"] == rules.balance(without, end).view["next_expiry"]


@PROPS
@given(steps=st.lists(st.tuples(st.sampled_from(["earn", "refund", "redeem", "wait"]),
                                st.integers(min_value=0, max_value=40), spend), min_size=3, max_size=40))
def test_property_a_refund_finds_its_lot_by_expiry_as_a_full_scan_would(steps):
    """A refund takes from the lot of the earn it names first. The replay finds that lot among the
    lots of its expiry only (Member.take's `near`), not by scanning every lot: a member replayed both
    ways has the same lots, balances and forecast, after any mix of earns, refunds, redemptions and
    time passing (some lots spent or expired before their refund)."""
    events = new_member(START)
    t = START + dt.timedelta(days=1)
    refs = []
    for kind, k, (amount, category) in steps:
        t += dt.timedelta(hours=7)
        m = rules.replay(CAT, A, events, t)
        if kind == "earn":
            d = rules.earn(CAT, m, t, amount, category, f"e{len(refs)}")
            refs.append(f"e{len(refs)}")
        elif kind == "refund" and refs:
            d = rules.refund(CAT, m, t, refs[k % len(refs)], None if k % 3 else Decimal("1.00"))
        elif kind == "redeem":
            d = rules.redeem(CAT, m, t, "minutes_30", "web")
        else:
            t += dt.timedelta(days=40 * (k % 10))
            continue
        if isinstance(d, Decision):
            apply(events, d)
    end = t + dt.timedelta(days=30)
    fast = rules.replay(CAT, A, events, end)
    with refund_by_scan():
        slow = rules.replay(CAT, A, events, end)
    assert fast.live_lots() == slow.live_lots()
    assert (fast.available(), fast.totals, fast.debt) == (slow.available(), slow.totals, slow.debt)


@contextmanager
def refund_by_scan():
    """Replays whose refunds look for their lot by scanning every lot (no `near`)."""
    from bonuscli.rules.member import Member

    real = Member.take
    Member.take = lambda self, points, first=None, near=None: real(self, points, first)
    try:
        yield
    finally:
        Member.take = real


@PROPS
@given(steps=st.lists(st.tuples(st.sampled_from(["earn", "refund", "redeem", "wait"]),
                                st.integers(min_value=0, max_value=40), spend), min_size=3, max_size=30))
@example(steps=[("wait", 1, (Decimal("1"), "mobile")), ("earn", 1, (Decimal("1000"), "mobile")),
                ("redeem", 1, (Decimal("1"), "mobile")), ("refund", 0, (Decimal("1"), "mobile")),
                ("earn", 1, (Decimal("500"), "mobile")), ("earn", 2, (Decimal("50"), "taxi"))])  # a debt repaid
def test_property_a_member_extended_event_by_event_is_its_replay(steps):
    """rules.extend (what a batch and a simulation apply after each decision, through the replay's
    fast path for plain earns) gives the state a replay from scratch gives: with debt from a refund
    after spending, welcome points still scheduled, lots expiring between events."""
    events = new_member(START)
    live = rules.replay(CAT, A, events, START)
    t = START  # the first steps come before activation: welcome points are still scheduled
    refs = []
    for kind, k, (amount, category) in steps:
        t += dt.timedelta(hours=3 + k)
        if kind == "wait":
            t += dt.timedelta(days=45 * (k % 9))
            continue
        now = rules.seconds(t)
        rules.advance_to(live, now)
        if kind == "earn":
            d = rules.earn(CAT, live, t, amount, category, f"e{len(refs)}")
            refs.append(f"e{len(refs)}")
        elif kind == "refund" and refs:
            d = rules.refund(CAT, live, t, refs[k % len(refs)], None)
        elif kind == "redeem":
            d = rules.redeem(CAT, live, t, "minutes_30", "web")
        else:
            continue
        if isinstance(d, Decision):
            for phone, evs in d.writes:
                for e in stamp(A, len(events), evs):
                    events.append(e)
                    rules.extend(live, e)
        fresh = rules.replay(CAT, A, events, now)
        assert live.live_lots() == fresh.live_lots(), (kind, t)
        assert (live.available(), live.debt, live.totals) == (fresh.available(), fresh.debt, fresh.totals)
