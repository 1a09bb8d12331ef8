"""RULES.md §3 (earning) and §2's card welcome, through `calc`, `earn` and `earn --from`.

Expected numbers are computed by hand from RULES.md: points = floor(amount x
coefficient / rub_per_point); mobile-like categories 5 RUB/point with the tenure
coefficient (1.0 / 1.1 / 1.2 / 1.3 for <=6 / <=12 / <=24 / >24 months), mts_store
and partner_store 3, taxi and in_app 5, card 30 / 20 / 10 by the previous
calendar month's card total (<=15,000 / <=30,000 / more). Welcome 150 at join.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

A = "9161234567"
B = "9167654321"
C = "9031112233"

EARN_FIELDS = {"phone", "amount", "category", "points", "coefficient", "rub_per_point", "bonuses", "duplicate",
               "balance"}
SUMMARY_FIELDS = {"rows", "applied", "duplicates", "refused", "errors", "problems"}


def ledger(data_dir: Path, phone: str) -> Path:
    return data_dir / "ledgers" / f"{phone}.jsonl"


def snap(data_dir: Path, phone: str):
    f = ledger(data_dir, phone)
    return f.read_bytes() if f.exists() else None


def coef(value) -> Decimal:
    return Decimal(str(value))


def join(run, phone, at="2025-03-01T12:00", *extra, region="RU-MOW"):
    return run.j("join", phone, "--region", region, "--at", at, *extra)


def earn(run, phone, amount, category, at, *extra):
    return run.j("earn", phone, amount, "--category", category, "--at", at, *extra)


def balance(run, phone, at):
    return run.j("balance", phone, "--at", at)["available"]


def calc(run, amount, category, *extra):
    return run.j("calc", amount, "--category", category, *extra)


# ---------------------------------------------------------------- the worked examples


@pytest.mark.parametrize("args, points, coefficient, rpp", [
    (("500", "mobile", "--tenure-months", "13"), 120, "1.2", 5),      # 500 x 1.2 / 5 = 120
    (("100", "mts_store"), 33, "1.0", 3),                              # 100 / 3 = 33.33
    (("1000", "card", "--card-last-month", "20000"), 50, "1.0", 20),   # 1000 / 20 = 50
    (("499", "mobile", "--tenure-months", "7"), 109, "1.1", 5),        # 499 x 1.1 / 5 = 109.78
])
def test_calc_worked_examples(run, args, points, coefficient, rpp):
    amount, category, *rest = args
    v = calc(run, amount, category, *rest)
    assert {"points", "coefficient", "rub_per_point"} <= set(v)
    assert v["points"] == points
    assert coef(v["coefficient"]) == Decimal(coefficient)
    assert v["rub_per_point"] == rpp


def test_earn_example_mobile_13_months(run):
    # customer since 2024-02-01: on 2025-03-01 more than 12 months (2025-02-01), not more than 24 -> 1.2
    join(run, A, "2025-03-01T12:00", "--customer-since", "2024-02-01")
    v = earn(run, A, "500", "mobile", "2025-03-01T13:00")
    assert EARN_FIELDS <= set(v)
    assert v["phone"] == A
    assert v["amount"] == "500.00"
    assert v["category"] == "mobile"
    assert v["points"] == 120
    assert coef(v["coefficient"]) == Decimal("1.2")
    assert v["rub_per_point"] == 5
    assert v["bonuses"] == []
    assert v["duplicate"] is False
    assert v["balance"] == 270


def test_earn_example_mts_store(run):
    join(run, A)
    v = earn(run, A, "100", "mts_store", "2025-03-01T13:00")
    assert (v["points"], v["rub_per_point"], v["amount"], v["balance"]) == (33, 3, "100.00", 183)
    assert coef(v["coefficient"]) == Decimal("1.0")


def test_earn_example_mts_store_no_tenure(run):
    # mts_store does not use the tenure coefficient, even for an old customer
    join(run, A, "2025-03-01T12:00", "--customer-since", "2010-01-01")
    v = earn(run, A, "100", "mts_store", "2025-03-01T13:00")
    assert v["points"] == 33
    assert coef(v["coefficient"]) == Decimal("1.0")


def test_earn_example_card_after_20000_previous_month(run):
    join(run, A, "2025-03-01T12:00")
    first = earn(run, A, "20000", "card", "2025-03-10")  # 20000 / 30 = 666.67 -> 666, card welcome 1000
    assert first["points"] == 666
    assert first["bonuses"] == [{"reason": "card_welcome", "points": 1000}]
    v = earn(run, A, "1000", "card", "2025-04-10")
    assert v["points"] == 50
    assert v["rub_per_point"] == 20
    assert v["bonuses"] == []
    assert v["balance"] == 150 + 666 + 1000 + 50


def test_earn_example_499_at_1_1(run):
    # since 2024-08-01: 6 months = 2025-02-01 < 2025-03-01 <= 2025-08-01 -> 1.1
    join(run, A, "2025-03-01T12:00", "--customer-since", "2024-08-01")
    v = earn(run, A, "499", "mobile", "2025-03-01T13:00")
    assert v["points"] == 109
    assert v["amount"] == "499.00"
    assert coef(v["coefficient"]) == Decimal("1.1")


@pytest.mark.parametrize("category, amount, points", [
    ("mobile_internet", "99.99", 19), ("home_internet", "600", 120), ("home_tv", "4.99", 0),
    ("home_phone", "5", 1), ("partner_store", "2.99", 0), ("partner_store", "3", 1),
    ("taxi", "777.77", 155), ("in_app", "10", 2),
])
def test_other_categories(run, category, amount, points):
    join(run, A)
    assert earn(run, A, amount, category, "2025-03-01T13:00")["points"] == points


# ---------------------------------------------------------------- tenure


@pytest.mark.parametrize("months, coefficient, points", [
    (0, "1.0", 200), (6, "1.0", 200), (7, "1.1", 220), (12, "1.1", 220), (13, "1.2", 240),
    (24, "1.2", 240), (25, "1.3", 260), (120, "1.3", 260),
])
def test_calc_tenure_months(run, months, coefficient, points):
    v = calc(run, "1000", "mobile", "--tenure-months", str(months))
    assert coef(v["coefficient"]) == Decimal(coefficient)
    assert v["points"] == points


def test_calc_tenure_not_applied_to_taxi(run):
    v = calc(run, "1000", "taxi", "--tenure-months", "30")
    assert v["points"] == 200
    assert coef(v["coefficient"]) == Decimal("1.0")


@pytest.mark.parametrize("since, at, coefficient", [
    ("2024-09-01", "2025-03-01", "1.0"),
    ("2024-09-01", "2025-03-01T23:59", "1.0"),
    ("2024-09-01", "2025-03-02", "1.1"),
    ("2024-03-01", "2025-03-01", "1.1"),
    ("2024-03-01", "2025-03-02", "1.2"),
    ("2023-03-01", "2025-03-01", "1.2"),
    ("2023-03-01", "2025-03-02", "1.3"),
    # month-end clamping: 2024-08-31 + 6 months = 2025-02-28
    ("2024-08-31", "2025-02-28", "1.0"),
    ("2024-08-31", "2025-03-01", "1.1"),
    # 2024-02-29 + 12 months = 2025-02-28
    ("2024-02-29", "2025-02-28", "1.1"),
    ("2024-02-29", "2025-03-01", "1.2"),
    # 2023-08-31 + 24 months = 2025-08-31
    ("2023-08-31", "2025-08-31", "1.2"),
    ("2023-08-31", "2025-09-01", "1.3"),
    # 2024-12-31 + 6 months = 2025-06-30
    ("2024-12-31", "2025-06-30", "1.0"),
    ("2024-12-31", "2025-07-01", "1.1"),
])
def test_calc_customer_since_boundaries(run, since, at, coefficient):
    v = calc(run, "500", "mobile", "--customer-since", since, "--at", at)
    assert coef(v["coefficient"]) == Decimal(coefficient)
    assert v["points"] == int(Decimal(500) * Decimal(coefficient) / 5)


def test_earn_tenure_boundary_since_2024_09_01(run):
    join(run, A, "2025-03-01T00:00", "--customer-since", "2024-09-01")
    v1 = earn(run, A, "500", "mobile", "2025-03-01T23:59")
    assert (v1["points"], coef(v1["coefficient"])) == (100, Decimal("1.0"))
    v2 = earn(run, A, "500", "mobile", "2025-03-02T00:00")
    assert (v2["points"], coef(v2["coefficient"])) == (110, Decimal("1.1"))
    assert v2["balance"] == 150 + 100 + 110


def test_earn_tenure_local_date_not_utc(run):
    # 2025-03-01T22:30+00:00 is 2025-03-02T01:30 in Moscow: the local date counts -> 1.1
    join(run, A, "2025-03-01T00:00", "--customer-since", "2024-09-01")
    v = earn(run, A, "500", "mobile", "2025-03-01T22:30+00:00")
    assert v["points"] == 110


def test_earn_tenure_month_end_clamp(run):
    join(run, A, "2025-02-28T00:00", "--customer-since", "2024-08-31")
    assert earn(run, A, "500", "home_tv", "2025-02-28T23:00")["points"] == 100
    assert earn(run, A, "500", "home_tv", "2025-03-01T00:00")["points"] == 110


def test_balance_coefficient_follows_tenure(run):
    join(run, A, "2025-03-01T00:00", "--customer-since", "2024-09-01")
    assert coef(run.j("balance", A, "--at", "2025-03-01")["coefficient"]) == Decimal("1.0")
    assert coef(run.j("balance", A, "--at", "2025-03-02")["coefficient"]) == Decimal("1.1")


# ---------------------------------------------------------------- card tiers (previous calendar month)


@pytest.mark.parametrize("february, rpp, points", [
    ([], 30, 33),
    (["15000"], 30, 33),
    (["10000", "5000"], 30, 33),
    (["10000", "5000.01"], 20, 50),
    (["15000.01"], 20, 50),
    (["30000"], 20, 50),
    (["20000", "10000"], 20, 50),
    (["20000", "10000.01"], 10, 100),
    (["30000.01"], 10, 100),
    (["1000000"], 10, 100),
])
def test_card_tier_from_previous_month(run, february, rpp, points):
    join(run, A, "2025-01-10T12:00")
    for i, amount in enumerate(february):
        earn(run, A, amount, "card", f"2025-02-{10 + i:02d}")
    v = earn(run, A, "1000", "card", "2025-03-05")
    assert v["rub_per_point"] == rpp
    assert v["points"] == points


def test_card_tier_ignores_two_months_ago(run):
    join(run, A, "2025-01-10T12:00")
    jan = earn(run, A, "40000", "card", "2025-01-20")  # previous month (Dec) empty -> 30
    assert jan["points"] == 1333
    feb = earn(run, A, "1000", "card", "2025-02-20")   # January 40,000 -> 10
    assert (feb["rub_per_point"], feb["points"]) == (10, 100)
    mar = earn(run, A, "1000", "card", "2025-03-20")   # February 1,000 -> 30
    assert (mar["rub_per_point"], mar["points"]) == (30, 33)


def test_card_tier_counts_calendar_month_in_program_time(run):
    # 2025-02-28T22:00+00:00 is 2025-03-01T01:00 in Moscow: a March payment, not February
    join(run, A, "2025-02-01T12:00")
    earn(run, A, "20000", "card", "2025-02-28T22:00+00:00")
    v = earn(run, A, "1000", "card", "2025-03-10")
    assert v["rub_per_point"] == 30  # February had nothing


def test_card_tier_only_card_payments_count(run):
    join(run, A, "2025-02-01T12:00")
    earn(run, A, "40000", "mobile", "2025-02-10")
    v = earn(run, A, "1000", "card", "2025-03-10")
    assert v["rub_per_point"] == 30


def test_card_tier_ignores_dry_run_and_duplicates(run):
    join(run, A, "2025-02-01T12:00")
    earn(run, A, "20000", "card", "2025-02-10", "--dry-run")
    earn(run, A, "10000", "card", "2025-02-11", "--ref", "tx1")
    dup = earn(run, A, "25000", "card", "2025-02-12", "--ref", "tx1")
    assert dup["duplicate"] is True
    v = earn(run, A, "1000", "card", "2025-03-10")
    assert (v["rub_per_point"], v["points"]) == (30, 33)  # only the 10,000 applied


def test_calc_card_last_month_tiers(run):
    assert calc(run, "1000", "card")["rub_per_point"] == 30
    assert calc(run, "1000", "card", "--card-last-month", "15000")["rub_per_point"] == 30
    assert calc(run, "1000", "card", "--card-last-month", "15000.01")["rub_per_point"] == 20
    assert calc(run, "1000", "card", "--card-last-month", "30000")["rub_per_point"] == 20
    assert calc(run, "1000", "card", "--card-last-month", "30000.01")["rub_per_point"] == 10
    assert calc(run, "1000", "card", "--card-last-month", "30000.01", "--tenure-months", "30")["points"] == 100


# ---------------------------------------------------------------- card welcome


def test_card_welcome_at_the_payment_that_crosses_3000(run):
    join(run, A, "2025-03-01T12:00")
    v = earn(run, A, "1000", "card", "2025-03-05")
    assert (v["points"], v["bonuses"]) == (33, [])
    v = earn(run, A, "1500", "card", "2025-03-10")
    assert (v["points"], v["bonuses"]) == (50, [])
    v = earn(run, A, "600", "card", "2025-03-20")       # 3,100 this month
    assert v["points"] == 20
    assert v["bonuses"] == [{"reason": "card_welcome", "points": 1000}]
    assert v["balance"] == 150 + 33 + 50 + 20 + 1000
    v = earn(run, A, "5000", "card", "2025-03-25")
    assert (v["points"], v["bonuses"]) == (166, [])
    v = earn(run, A, "4000", "card", "2025-04-02")      # March 8,100 -> 30; no second welcome
    assert (v["points"], v["bonuses"]) == (133, [])
    assert balance(run, A, "2025-04-02") == 150 + 33 + 50 + 20 + 1000 + 166 + 133


def test_card_welcome_single_payment_exactly_3000(run):
    join(run, A, "2025-03-01T12:00")
    v = earn(run, A, "3000", "card", "2025-03-05")
    assert v["points"] == 100
    assert v["bonuses"] == [{"reason": "card_welcome", "points": 1000}]
    assert v["balance"] == 1250


def test_card_welcome_just_below_3000_nothing(run):
    join(run, A, "2025-03-01T12:00")
    v = earn(run, A, "2999.99", "card", "2025-03-05")
    assert (v["points"], v["bonuses"]) == (99, [])


def test_card_welcome_split_across_months_gives_nothing_until_one_month_reaches(run):
    join(run, A, "2025-03-01T12:00")
    assert earn(run, A, "2000", "card", "2025-03-15")["bonuses"] == []
    assert earn(run, A, "2000", "card", "2025-04-15")["bonuses"] == []
    v = earn(run, A, "2999.99", "card", "2025-05-10")
    assert (v["points"], v["bonuses"]) == (99, [])
    v = earn(run, A, "0.01", "card", "2025-05-11")     # May reaches exactly 3,000.00
    assert v["points"] == 0
    assert v["bonuses"] == [{"reason": "card_welcome", "points": 1000}]
    assert balance(run, A, "2025-05-11") == 150 + 66 + 66 + 99 + 0 + 1000


def test_card_welcome_split_across_months_never_reaching(run):
    join(run, A, "2025-03-01T12:00")
    earn(run, A, "2500", "card", "2025-03-31T23:59")
    v = earn(run, A, "2500", "card", "2025-04-01T00:00")
    assert v["bonuses"] == []
    assert balance(run, A, "2025-04-02") == 150 + 83 + 83


def test_card_welcome_not_used_up_by_dry_run(run):
    join(run, A, "2025-03-01T12:00")
    dry = earn(run, A, "3000", "card", "2025-03-05", "--dry-run")
    assert dry["points"] == 100
    v = earn(run, A, "3000", "card", "2025-03-06")
    assert v["bonuses"] == [{"reason": "card_welcome", "points": 1000}]


def test_card_welcome_once_per_phone_even_after_rejoin(run):
    join(run, A, "2025-03-01T12:00")
    assert earn(run, A, "3000", "card", "2025-03-05")["bonuses"] == [{"reason": "card_welcome", "points": 1000}]
    run.ok("leave", A, "--yes", "--at", "2025-03-06")
    join(run, A, "2025-03-07")
    v = earn(run, A, "3000", "card", "2025-04-05")
    assert v["bonuses"] == []


def test_mobile_payments_do_not_count_toward_card_welcome(run):
    join(run, A, "2025-03-01T12:00")
    earn(run, A, "2900", "mobile", "2025-03-02")
    assert earn(run, A, "200", "card", "2025-03-03")["bonuses"] == []


# ---------------------------------------------------------------- categories


@pytest.mark.parametrize("category", ["tariff_package", "topup_voucher", "loan_repayment", "utilities",
                                      "money_transfer"])
def test_ineligible_category_refused(run, data_dir, category):
    join(run, A)
    before = snap(data_dir, A)
    r = run("earn", A, "500", "--category", category, "--at", "2025-03-02")
    assert r.exit_code == 1
    assert r.stderr.startswith("error: ")
    assert snap(data_dir, A) == before


def test_unknown_category_exit_2(run, data_dir):
    join(run, A)
    before = snap(data_dir, A)
    r = run("earn", A, "500", "--category", "groceries", "--at", "2025-03-02")
    assert r.exit_code == 2
    assert r.stderr.startswith("error: ")
    assert snap(data_dir, A) == before
    assert run("calc", "500", "--category", "groceries").exit_code == 2


def test_earn_not_member_refused(run, data_dir):
    r = run("earn", A, "500", "--category", "mobile", "--at", "2025-03-02", "--json")
    assert r.exit_code == 2 and '"no-data-dir"' in r.stderr  # CLI.md §1: no data directory yet
    assert not data_dir.exists()
    data_dir.mkdir(parents=True)
    r = run("earn", A, "500", "--category", "mobile", "--at", "2025-03-02", "--json")
    assert r.exit_code == 1 and '"not-member"' in r.stderr
    assert snap(data_dir, A) is None


# ---------------------------------------------------------------- amounts


@pytest.mark.parametrize("amount", ["0", "0.00", "-5", "-0.01", "1000000.01", "2000000", "1.234", "0.001",
                                    "abc", "1e3", "", " ", "1,5", "NaN", "Infinity", "12.3.4"])
def test_bad_amount_exit_2_nothing_written(run, data_dir, amount):
    join(run, A)
    before = snap(data_dir, A)
    r = run("earn", A, "--category", "mobile", "--at", "2025-03-02", "--", amount)
    assert r.exit_code == 2, (amount, r.stdout, r.stderr)
    assert r.stderr.startswith("error: ")
    assert snap(data_dir, A) == before
    assert balance(run, A, "2025-03-02") == 150


@pytest.mark.parametrize("amount", ["0", "-5", "1000000.01", "1.234", "abc", "1e3"])
def test_bad_amount_calc_exit_2(run, amount):
    assert run("calc", "--category", "mobile", "--", amount).exit_code == 2


def test_bad_amount_subprocess_one_line_no_traceback(sub):
    r = sub(["earn", A, "1e3", "--category", "mobile"])
    assert r.returncode == 2
    assert r.stderr.startswith("error: ")
    assert r.stderr.count("\n") == 1
    assert "Traceback" not in r.stderr


def test_amount_one_million_exactly_ok(run):
    join(run, A)
    v = earn(run, A, "1000000", "mobile", "2025-03-02")
    assert v["amount"] == "1000000.00"
    assert v["points"] == 200000
    v = earn(run, A, "1000000.00", "taxi", "2025-03-03")
    assert v["points"] == 200000
    assert v["balance"] == 400150


def test_amount_two_decimals_kept_exact(run):
    join(run, A)
    v = earn(run, A, "499.9", "mobile", "2025-03-02")
    assert v["amount"] == "499.90"
    assert v["points"] == 99          # 499.90 / 5 = 99.98
    v = earn(run, A, "0.01", "mobile", "2025-03-02")
    assert (v["amount"], v["points"]) == ("0.01", 0)


# ---------------------------------------------------------------- --ref idempotency and --dry-run


def test_ref_repeat_is_duplicate_and_writes_nothing(run, data_dir):
    join(run, A)
    first = earn(run, A, "500", "mobile", "2025-03-02", "--ref", "tx-1")
    assert (first["points"], first["duplicate"], first["balance"]) == (100, False, 250)
    before = snap(data_dir, A)
    again = earn(run, A, "900", "mts_store", "2025-03-03", "--ref", "tx-1")
    assert again["duplicate"] is True
    assert again["points"] == 100
    assert again["amount"] == "500.00"
    assert again["category"] == "mobile"
    assert again["balance"] == 250
    assert snap(data_dir, A) == before
    assert balance(run, A, "2025-03-03") == 250


def test_ref_is_per_member(run):
    join(run, A)
    join(run, B)
    earn(run, A, "500", "mobile", "2025-03-02", "--ref", "tx-1")
    v = earn(run, B, "500", "mobile", "2025-03-02", "--ref", "tx-1")
    assert v["duplicate"] is False
    assert v["balance"] == 250


def test_refused_earn_does_not_use_up_ref(run):
    join(run, A)
    assert run("earn", A, "500", "--category", "utilities", "--ref", "tx-2", "--at", "2025-03-02").exit_code == 1
    assert run("earn", A, "--category", "mobile", "--ref", "tx-2", "--at", "2025-03-02", "--", "abc").exit_code == 2
    v = earn(run, A, "500", "mobile", "2025-03-02", "--ref", "tx-2")
    assert (v["duplicate"], v["points"], v["balance"]) == (False, 100, 250)


def test_pending_refusal_does_not_use_up_ref(run):
    join(run, A, "2025-03-01T12:00", "--method", "web")
    assert run("earn", A, "500", "--category", "mobile", "--ref", "tx-3", "--at", "2025-03-02").exit_code == 1
    v = earn(run, A, "500", "mobile", "2025-03-03T12:00", "--ref", "tx-3")
    assert (v["duplicate"], v["points"], v["balance"]) == (False, 100, 350)


def test_dry_run_does_not_use_up_ref_and_writes_nothing(run, data_dir):
    join(run, A)
    before = snap(data_dir, A)
    dry = earn(run, A, "500", "mobile", "2025-03-02", "--ref", "tx-4", "--dry-run")
    assert dry["points"] == 100
    assert dry["duplicate"] is False
    assert snap(data_dir, A) == before
    assert balance(run, A, "2025-03-02") == 150
    v = earn(run, A, "500", "mobile", "2025-03-02", "--ref", "tx-4")
    assert (v["duplicate"], v["points"], v["balance"]) == (False, 100, 250)


def test_dry_run_without_member_file_writes_nothing(run, data_dir):
    join(run, A)
    before = snap(data_dir, A)
    run.ok("earn", A, "1000", "--category", "card", "--dry-run", "--at", "2025-03-02")
    assert snap(data_dir, A) == before
    assert not ledger(data_dir, B).exists()


# ---------------------------------------------------------------- batch: earn --from FILE


def summary(r):
    doc = json.loads(r.stdout)
    assert SUMMARY_FIELDS <= set(doc), doc
    return doc


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return str(p)


CSV_OK = (
    "phone,amount,category,ref\n"
    f"{A},500,mobile,b1\n"
    f"{A},100,mts_store,b2\n"
    f"{B},1000,taxi,b3\n"
)


def test_batch_csv_applies_each_row(run, tmp_path):
    join(run, A)
    join(run, B)
    f = write(tmp_path, "pay.csv", CSV_OK)
    r = run("earn", "--from", f, "--at", "2025-03-02", "--json")
    assert r.exit_code == 0, (r.stdout, r.stderr)
    s = summary(r)
    assert (s["rows"], s["applied"], s["duplicates"], s["refused"], s["errors"]) == (3, 3, 0, 0, 0)
    assert s["problems"] == []
    assert balance(run, A, "2025-03-02") == 150 + 100 + 33
    assert balance(run, B, "2025-03-02") == 150 + 200


def test_batch_rerun_applies_nothing_twice(run, tmp_path, data_dir):
    join(run, A)
    join(run, B)
    f = write(tmp_path, "pay.csv", CSV_OK)
    assert run("earn", "--from", f, "--at", "2025-03-02", "--json").exit_code == 0
    before = (snap(data_dir, A), snap(data_dir, B))
    r = run("earn", "--from", f, "--at", "2025-03-03", "--json")
    assert r.exit_code == 0, (r.stdout, r.stderr)
    s = summary(r)
    assert (s["rows"], s["applied"], s["duplicates"], s["refused"], s["errors"]) == (3, 0, 3, 0, 0)
    assert (snap(data_dir, A), snap(data_dir, B)) == before
    assert balance(run, A, "2025-03-03") == 283
    assert balance(run, B, "2025-03-03") == 350


def test_batch_duplicate_ref_within_file(run, tmp_path):
    join(run, A)
    f = write(tmp_path, "pay.csv", f"phone,amount,category,ref\n{A},500,mobile,d1\n{A},900,mobile,d1\n")
    r = run("earn", "--from", f, "--at", "2025-03-02", "--json")
    assert r.exit_code == 0
    s = summary(r)
    assert (s["rows"], s["applied"], s["duplicates"]) == (2, 1, 1)
    assert balance(run, A, "2025-03-02") == 250


def test_batch_problems_with_line_numbers_and_exit_2(run, tmp_path):
    join(run, A)
    text = (
        "phone,amount,category,ref\n"       # 1
        f"{A},500,mobile,p1\n"              # 2 applied
        f"{A},abc,mobile,p2\n"              # 3 malformed amount
        f"{A},100,utilities,p3\n"           # 4 refused: not eligible
        "12345,100,mobile,p4\n"             # 5 malformed phone
        f"{C},100,mobile,p5\n"              # 6 refused: not a member
        f"{A},100,groceries,p6\n"           # 7 malformed: unknown category
        f"{A},300,mts_store,p7\n"           # 8 applied
    )
    f = write(tmp_path, "pay.csv", text)
    r = run("earn", "--from", f, "--at", "2025-03-02", "--json")
    assert r.exit_code == 2, (r.stdout, r.stderr)
    s = summary(r)
    assert (s["rows"], s["applied"], s["duplicates"], s["refused"], s["errors"]) == (7, 2, 0, 2, 3)
    got = [(p["line"], p["ref"], p["code"]) for p in s["problems"]]
    assert got == [(3, "p2", 2), (4, "p3", 1), (5, "p4", 2), (6, "p5", 1), (7, "p6", 2)]
    assert all(isinstance(p["message"], str) and p["message"] for p in s["problems"])
    assert balance(run, A, "2025-03-02") == 150 + 100 + 100


def test_batch_refused_only_exit_1(run, tmp_path):
    join(run, A)
    f = write(tmp_path, "pay.csv", f"phone,amount,category,ref\n{A},500,mobile,q1\n{A},100,loan_repayment,q2\n")
    r = run("earn", "--from", f, "--at", "2025-03-02", "--json")
    assert r.exit_code == 1, (r.stdout, r.stderr)
    s = summary(r)
    assert (s["rows"], s["applied"], s["refused"], s["errors"]) == (2, 1, 1, 0)
    assert [(p["line"], p["ref"], p["code"]) for p in s["problems"]] == [(3, "q2", 1)]


def test_batch_refused_row_does_not_use_up_ref(run, tmp_path):
    join(run, A)
    f1 = write(tmp_path, "a.csv", f"phone,amount,category,ref\n{A},100,utilities,z1\n")
    assert run("earn", "--from", f1, "--at", "2025-03-02", "--json").exit_code == 1
    f2 = write(tmp_path, "b.csv", f"phone,amount,category,ref\n{A},500,mobile,z1\n")
    r = run("earn", "--from", f2, "--at", "2025-03-02", "--json")
    assert r.exit_code == 0
    assert summary(r)["applied"] == 1
    assert balance(run, A, "2025-03-02") == 250


def test_batch_row_at_is_used_and_program_time(run, tmp_path):
    # customer since 2024-09-01: 1.0 up to 2025-03-01, 1.1 from 2025-03-02 (Moscow dates)
    join(run, A, "2025-03-01T00:00", "--customer-since", "2024-09-01")
    text = (
        "phone,amount,category,ref,at\n"
        f"{A},500,mobile,t1,2025-03-01T23:30\n"           # no offset: Moscow, 2025-03-01 -> 1.0 -> 100
        f"{A},500,mobile,t2,2025-03-01T21:30:00+00:00\n"  # = 2025-03-02T00:30 Moscow -> 1.1 -> 110
    )
    f = write(tmp_path, "pay.csv", text)
    r = run("earn", "--from", f, "--at", "2025-03-05", "--json")
    assert r.exit_code == 0, (r.stdout, r.stderr)
    assert summary(r)["applied"] == 2
    assert balance(run, A, "2025-03-05") == 150 + 100 + 110
    hist = [json.loads(line) for line in run.ok("history", A, "--json", "--at", "2025-03-05").stdout.splitlines()]
    earns = [h for h in hist if h["type"] == "earn"]
    assert earns[0]["at"] == "2025-03-01T23:30:00+03:00"


def test_batch_row_without_at_uses_option(run, tmp_path):
    join(run, A, "2025-03-01T00:00", "--customer-since", "2024-09-01")
    f = write(tmp_path, "pay.csv", f"phone,amount,category,ref\n{A},500,mobile,u1\n")
    assert run("earn", "--from", f, "--at", "2025-03-05", "--json").exit_code == 0
    assert balance(run, A, "2025-03-05") == 150 + 110


def test_batch_json_lines_from_stdin(run):
    join(run, A)
    text = (
        json.dumps({"phone": A, "amount": "500", "category": "mobile", "ref": "j1"}) + "\n"
        + json.dumps({"phone": A, "amount": "1e3", "category": "mobile", "ref": "j2"}) + "\n"
        + json.dumps({"phone": A, "amount": "100", "category": "mts_store", "ref": "j3",
                      "at": "2025-03-03T10:00"}) + "\n"
    )
    r = run("earn", "--from", "-", "--at", "2025-03-02", "--json", input=text)
    assert r.exit_code == 2, (r.stdout, r.stderr)
    s = summary(r)
    assert (s["rows"], s["applied"], s["duplicates"], s["refused"], s["errors"]) == (3, 2, 0, 0, 1)
    assert [(p["line"], p["ref"], p["code"]) for p in s["problems"]] == [(2, "j2", 2)]
    assert balance(run, A, "2025-03-03T10:00") == 150 + 100 + 33
    # the stdin batch is idempotent as well
    r = run("earn", "--from", "-", "--at", "2025-03-04", "--json", input=text)
    s = summary(r)
    assert (s["applied"], s["duplicates"], s["errors"]) == (0, 2, 1)
    assert balance(run, A, "2025-03-04") == 283


def test_batch_csv_from_stdin(run):
    join(run, A)
    join(run, B)
    r = run("earn", "--from", "-", "--at", "2025-03-02", "--json", input=CSV_OK)
    assert r.exit_code == 0, (r.stdout, r.stderr)
    assert summary(r)["applied"] == 3


def test_batch_dry_run_writes_nothing(run, tmp_path, data_dir):
    join(run, A)
    join(run, B)
    before = (snap(data_dir, A), snap(data_dir, B))
    f = write(tmp_path, "pay.csv", CSV_OK)
    r = run("earn", "--from", f, "--dry-run", "--at", "2025-03-02", "--json")
    assert r.exit_code == 0, (r.stdout, r.stderr)
    assert (snap(data_dir, A), snap(data_dir, B)) == before
    # and the refs are still free
    r = run("earn", "--from", f, "--at", "2025-03-02", "--json")
    assert summary(r)["applied"] == 3


def test_batch_subprocess_exit_code(sub, tmp_path):
    sub(["join", A, "--region", "RU-MOW", "--at", "2025-03-01"])
    f = write(tmp_path, "pay.csv", f"phone,amount,category,ref\n{A},abc,mobile,s1\n")
    r = sub(["earn", "--from", f, "--at", "2025-03-02", "--json"])
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert json.loads(r.stdout)["errors"] == 1
