"""RULES.md §3, Late spendings: `earn --spent-at` and the `spent_at` batch column. The earn is booked
at `--at` (the ledger stays in time order); its rate, tenure coefficient and card tier are those in
force at `spent_at`; its lot expires counting from the booking; `earning.late_days` bounds it."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import ROOT

A = "9161234567"


def j(run, *args):
    r = run(*args, "--json")
    return r.exit_code, json.loads(r.stdout) if r.exit_code == 0 else json.loads(r.stderr)["error"]


def joined(run, since="2024-01-01"):
    assert j(run, "join", A, "--region", "RU-MOW", "--customer-since", since, "--at", "2024-06-01T10:00")[0] == 0


def test_the_rate_is_that_of_the_spending_and_the_expiry_that_of_the_booking(run):
    # tenure: customer since 2024-01-01 -> 1.1 up to 12 months (through 2025-01-01), 1.2 after
    joined(run)
    code, doc = j(run, "earn", A, "1000", "--category", "mobile", "--spent-at", "2024-12-20T10:00",
                  "--at", "2025-01-20T10:00")
    assert code == 0, doc
    assert (doc["coefficient"], doc["points"]) == ("1.1", 220)  # floor(1000 x 1.1 / 5): the spending's day
    assert doc["spent_at"] == "2024-12-20T10:00:00+03:00"
    assert doc["expires_on"] == "2026-01-20"  # 12 months from the booking
    code, now = j(run, "earn", A, "1000", "--category", "mobile", "--at", "2025-01-20T11:00")
    assert (now["coefficient"], now["points"]) == ("1.2", 240)


def test_the_card_tier_is_the_one_of_the_spendings_month(run, data_dir):
    joined(run)
    # December: 20,000 RUB of card payments -> January's tier is 20 RUB a point; January: 40,000 -> February's 10
    assert j(run, "earn", A, "20000", "--category", "card", "--at", "2024-12-10T10:00")[0] == 0
    assert j(run, "earn", A, "40000", "--category", "card", "--at", "2025-01-10T10:00")[0] == 0
    code, late = j(run, "earn", A, "600", "--category", "card", "--spent-at", "2025-01-25T10:00",
                   "--at", "2025-02-05T10:00")
    assert code == 0 and late["rub_per_point"] == 20 and late["points"] == 30, late
    code, now = j(run, "earn", A, "600", "--category", "card", "--at", "2025-02-05T11:00")
    assert now["rub_per_point"] == 10 and now["points"] == 60
    events = [json.loads(x) for x in (data_dir / "ledgers" / f"{A}.jsonl").read_text().splitlines()]
    booked = [e for e in events if e.get("spent_at")]
    assert len(booked) == 1 and booked[0]["at"] == "2025-02-05T10:00:00+03:00"  # in time order, at the booking


def test_refused_after_the_booking_before_activation_or_too_late(run):
    joined(run)
    for spent, at, why in (("2025-03-02", "2025-03-01", "after its booking"),
                           ("2024-05-01", "2024-07-01", "before"),
                           ("2024-09-01", "2024-12-01", "more than 90 days")):
        code, err = j(run, "earn", A, "100", "--category", "mobile", "--spent-at", spent, "--at", at)
        assert code == 1 and err["kind"] == "late-spending" and why in err["message"], (spent, err)
    code, err = j(run, "earn", A, "100", "--category", "mobile", "--spent-at", "yesterday", "--at", "2024-07-01")
    assert code == 2 and err["kind"] == "bad-date"


def test_late_days_is_a_catalog_key_checked_by_check(run, tmp_path):
    text = (ROOT / "catalog.yaml").read_text()
    assert "late_days: 90" in text
    short = tmp_path / "short.yaml"
    short.write_text(text.replace("late_days: 90", "late_days: 10"))
    joined(run)
    code, err = j(run, "earn", A, "100", "--category", "mobile", "--spent-at", "2024-09-01", "--at", "2024-09-20",
                  "--catalog", short)
    assert code == 1 and "more than 10 days" in err["message"]
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace("late_days: 90", "late_days: -1"))
    r = run("check", "--catalog", bad)
    assert r.exit_code == 3 and "late_days" in r.stderr


def test_a_batch_column_and_the_refusal_that_suggests_it(run, tmp_path):
    joined(run)
    rows = tmp_path / "late.csv"
    rows.write_text("phone,amount,category,ref,at,spent_at\n"
                    f"{A},1000,mobile,p1,2025-01-20T10:00,2024-12-20T10:00\n"
                    f"{A},1000,mobile,p2,2025-01-20T11:00,\n")
    doc = json.loads(run("earn", "--from", rows, "--json").stdout)
    assert (doc["applied"], doc["refused"]) == (2, 0), doc
    code, bal = j(run, "balance", A, "--at", "2025-01-21")
    assert bal["available"] == 150 + 220 + 240  # the welcome points, then 1.1 (spent in December), 1.2
    late = tmp_path / "later.csv"  # a partner's file dated before what the ledger already holds
    late.write_text(f"phone,amount,category,ref,at\n{A},1000,mobile,p3,2025-01-19T10:00\n")
    r = run("earn", "--from", late, "--json")
    doc = json.loads(r.stdout)
    assert r.exit_code == 1 and doc["refused"] == 1
    assert "spent_at" in doc["problems"][0]["message"], doc["problems"]


def test_diff_re_decides_a_late_spending_with_its_spent_at(run, tmp_path):
    joined(run)
    assert j(run, "earn", A, "1000", "--category", "mobile", "--spent-at", "2024-12-20T10:00",
             "--at", "2025-01-20T10:00")[0] == 0
    new = tmp_path / "tenure.yaml"
    new.write_text((ROOT / "catalog.yaml").read_text().replace('- {up_to_months: 12, coefficient: "1.1"}',
                                                               '- {up_to_months: 12, coefficient: "1.15"}'))
    code, same = j(run, "diff", ROOT / "catalog.yaml", ROOT / "catalog.yaml", "--ledgers", "--at", "2025-02-01")
    assert code == 0 and same["impact"]["total"]["change"] == 0
    code, doc = j(run, "diff", ROOT / "catalog.yaml", new, "--ledgers", "--at", "2025-02-01")
    member = doc["impact"]["members"][0]
    assert member["earned_new"] - member["earned_old"] == 10  # floor(1000 x 1.15 / 5) - 220: the 1.1 step applied


def test_diff_lists_a_change_of_late_days(run, tmp_path):
    new = tmp_path / "late.yaml"
    new.write_text((ROOT / "catalog.yaml").read_text().replace("late_days: 90", "late_days: 30"))
    code, doc = j(run, "diff", ROOT / "catalog.yaml", new)
    assert {"kind": "limit-change", "what": "earning.late_days", "old": 90, "new": 30} in doc["changes"]
