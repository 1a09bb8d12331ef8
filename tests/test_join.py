"""RULES.md §2 (joining and leaving) through the CLI, time moved with --at.

Every expected number is derived by hand from RULES.md / catalog.yaml defaults:
welcome 150, web form +100, web profile +10, referral 50; activation sms/ussd/app/
call/store immediately, web +48 h, wallet +720 h, card the 7th working day
(Mon-Fri) after the join date at the same local time. Program zone Europe/Moscow
(+03:00 all year).
"""

from __future__ import annotations

from pathlib import Path

import pytest

A = "9161234567"
B = "9167654321"
C = "9031112233"
D = "9035556677"

JOIN_FIELDS = {"phone", "region", "method", "joined_at", "active_from", "welcome", "balance"}
BALANCE_FIELDS = {"phone", "region", "status", "available", "held_out", "pending_in", "next_expiry",
                  "coefficient", "customer_since", "active_rewards"}


def ledger(data_dir: Path, phone: str) -> Path:
    return data_dir / "ledgers" / f"{phone}.jsonl"


def snapshot(data_dir: Path, *phones):
    """Bytes of each phone's ledger (None when the file does not exist)."""
    out = {}
    for p in phones:
        f = ledger(data_dir, p)
        out[p] = f.read_bytes() if f.exists() else None
    return out


def bal(run, phone, at):
    return run.j("balance", phone, "--at", at)


def join(run, phone, at, *extra, region="RU-MOW"):
    return run.j("join", phone, "--region", region, "--at", at, *extra)


def refused(run, *args, code=1):
    r = run(*args)
    assert r.exit_code == code, (args, r.exit_code, r.stdout, r.stderr)
    assert r.stderr.startswith("error: "), r.stderr
    return r


# ---------------------------------------------------------------- methods and activation


@pytest.mark.parametrize("method", ["sms", "ussd", "app", "call", "store"])
def test_immediate_methods_activate_at_join(run, method):
    j = join(run, A, "2025-03-01T12:00", "--method", method)
    assert JOIN_FIELDS <= set(j)
    assert j["phone"] == A
    assert j["region"] == "RU-MOW"
    assert j["method"] == method
    assert j["joined_at"] == "2025-03-01T12:00:00+03:00"
    assert j["active_from"] == "2025-03-01T12:00:00+03:00"
    assert j["welcome"] == [{"reason": "welcome", "points": 150}]
    assert j["balance"] == 150
    b = bal(run, A, "2025-03-01T12:00")
    assert b["status"] == "active"
    assert b["available"] == 150


def test_default_method_is_sms(run):
    j = join(run, A, "2025-03-01T12:00")
    assert j["method"] == "sms"
    assert j["active_from"] == j["joined_at"] == "2025-03-01T12:00:00+03:00"
    assert j["balance"] == 150


def test_web_with_profile_activates_after_48_hours_with_260(run):
    j = join(run, A, "2025-03-01T12:00", "--method", "web", "--email", "a@b.ru", "--birth-date", "1990-05-17")
    assert j["active_from"] == "2025-03-03T12:00:00+03:00"
    assert sorted((w["reason"], w["points"]) for w in j["welcome"]) == [
        ("web_form", 100), ("web_profile", 10), ("welcome", 150)]
    assert j["balance"] == 0
    one_day = bal(run, A, "2025-03-02T12:00")
    assert one_day["status"] == "pending"
    assert one_day["available"] == 0
    just_before = bal(run, A, "2025-03-03T11:59:59")
    assert just_before["status"] == "pending"
    assert just_before["available"] == 0
    at = bal(run, A, "2025-03-03T12:00")
    assert at["status"] == "active"
    assert at["available"] == 260
    assert bal(run, A, "2025-03-04")["available"] == 260


def test_web_without_profile_gives_250(run):
    j = join(run, A, "2025-03-01T12:00", "--method", "web")
    assert sorted((w["reason"], w["points"]) for w in j["welcome"]) == [("web_form", 100), ("welcome", 150)]
    assert bal(run, A, "2025-03-02T12:00")["available"] == 0
    assert bal(run, A, "2025-03-03T12:00")["available"] == 250


def test_web_with_only_email_gives_250(run):
    j = join(run, A, "2025-03-01T12:00", "--method", "web", "--email", "a@b.ru")
    assert sum(w["points"] for w in j["welcome"]) == 250
    assert bal(run, A, "2025-03-04")["available"] == 250


def test_wallet_activates_after_30_times_24_hours(run):
    j = join(run, A, "2025-03-01T12:00", "--method", "wallet")
    assert j["active_from"] == "2025-03-31T12:00:00+03:00"
    assert j["welcome"] == [{"reason": "welcome", "points": 150}]
    assert j["balance"] == 0
    before = bal(run, A, "2025-03-31T11:59")
    assert (before["status"], before["available"]) == ("pending", 0)
    after = bal(run, A, "2025-03-31T12:00")
    assert (after["status"], after["available"]) == ("active", 150)


# card: the 7th working day (Mon-Fri) after the join date, same local time.
#   Fri 2025-03-07 -> Mon10 Tue11 Wed12 Thu13 Fri14 Mon17 Tue18 -> 2025-03-18
#   Wed 2025-03-05 -> Thu06 Fri07 Mon10 Tue11 Wed12 Thu13 Fri14 -> 2025-03-14
#   Sat 2025-03-01 -> Mon03 Tue04 Wed05 Thu06 Fri07 Mon10 Tue11 -> 2025-03-11
#   Sun 2025-03-09 -> Mon10 ... Fri14 Mon17 Tue18               -> 2025-03-18
@pytest.mark.parametrize("joined, active", [
    ("2025-03-07T10:00", "2025-03-18T10:00:00+03:00"),
    ("2025-03-05T15:30", "2025-03-14T15:30:00+03:00"),
    ("2025-03-01T12:00", "2025-03-11T12:00:00+03:00"),
    ("2025-03-09T23:15", "2025-03-18T23:15:00+03:00"),
])
def test_card_activates_on_seventh_working_day(run, joined, active):
    j = join(run, A, joined, "--method", "card")
    assert j["active_from"] == active
    assert j["balance"] == 0
    day, time = active[:10], active[11:19]
    hh, mm, ss = time.split(":")
    prev = f"{hh}:{int(mm) - 1:02d}" if int(mm) else f"{int(hh) - 1:02d}:59"
    before = bal(run, A, f"{day}T{prev}")
    assert (before["status"], before["available"]) == ("pending", 0)
    after = bal(run, A, f"{day}T{hh}:{mm}")
    assert (after["status"], after["available"]) == ("active", 150)


def test_card_join_friday_pending_on_previous_working_days(run):
    join(run, A, "2025-03-07T10:00", "--method", "card")
    # the 6th working day (Mon 2025-03-17) is not enough
    assert bal(run, A, "2025-03-17T23:59")["status"] == "pending"
    assert bal(run, A, "2025-03-18T10:00")["status"] == "active"


def test_unknown_method_exit_2_nothing_written(run, data_dir):
    refused(run, "join", A, "--region", "RU-MOW", "--method", "fax", "--at", "2025-03-01", code=2)
    assert snapshot(data_dir, A)[A] is None


# ---------------------------------------------------------------- pending: nothing can be done yet


def test_earn_redeem_gift_refused_while_pending_with_activation_instant(run):
    join(run, B, "2025-03-01T09:00")  # active recipient, same region
    join(run, A, "2025-03-01T12:00", "--method", "web")
    instant = "2025-03-03T12:00:00+03:00"
    r = refused(run, "earn", A, "500", "--category", "mobile", "--at", "2025-03-02T12:00")
    assert instant in r.stderr
    r = refused(run, "redeem", A, "black_list", "--at", "2025-03-02T12:00")
    assert instant in r.stderr
    r = refused(run, "gift", A, B, "10", "--at", "2025-03-02T12:00")
    assert instant in r.stderr
    # after activation all three work
    e = run.j("earn", A, "500", "--category", "mobile", "--at", "2025-03-03T12:00")
    assert e["points"] == 100
    assert e["balance"] == 350


def test_pending_refusal_in_json_error(run):
    join(run, A, "2025-03-01T12:00", "--method", "wallet")
    r = run("earn", A, "100", "--category", "taxi", "--at", "2025-03-30T12:00", "--json")
    assert r.exit_code == 1
    assert r.stdout == ""
    import json
    doc = json.loads(r.stderr)
    assert doc["error"]["code"] == 1
    assert "2025-03-31T12:00:00+03:00" in doc["error"]["message"]


def test_pending_refusal_writes_nothing(run, data_dir):
    join(run, A, "2025-03-01T12:00", "--method", "card")
    before = snapshot(data_dir, A)
    refused(run, "earn", A, "500", "--category", "mobile", "--at", "2025-03-05")
    assert snapshot(data_dir, A) == before


def test_status_pending_then_active(run):
    join(run, A, "2025-03-01T12:00", "--method", "web")
    b = bal(run, A, "2025-03-01T12:00")
    assert BALANCE_FIELDS <= set(b)
    assert b["status"] == "pending"
    assert b["available"] == 0
    assert b["next_expiry"] is None
    b = bal(run, A, "2025-03-03T12:00")
    assert b["status"] == "active"
    # the welcome lot (credited 2025-03-03) expires 12 months later
    assert b["next_expiry"] == {"date": "2026-03-03", "points": 250}


# ---------------------------------------------------------------- welcome once per phone, ever


def test_welcome_once_per_phone_rejoin_gets_none(run):
    join(run, A, "2025-03-01T12:00")
    run.ok("earn", A, "500", "--category", "mobile", "--at", "2025-03-02")
    left = run.j("leave", A, "--yes", "--at", "2025-03-05")
    assert left["balance"] == 0
    b = bal(run, A, "2025-03-05")
    assert (b["status"], b["available"]) == ("left", 0)
    j = join(run, A, "2025-03-10", "--method", "web", "--email", "a@b.ru", "--birth-date", "1990-01-01")
    assert j["welcome"] == []
    assert j["balance"] == 0
    b = bal(run, A, "2025-03-20")
    assert (b["status"], b["available"]) == ("active", 0)


def test_rejoin_later_works_and_old_points_stay_forfeited(run):
    join(run, A, "2025-03-01T12:00")
    run.ok("earn", A, "1000", "--category", "mobile", "--at", "2025-03-02")  # 200
    assert bal(run, A, "2025-03-02")["available"] == 350
    run.ok("leave", A, "--yes", "--at", "2025-03-03")
    assert bal(run, A, "2025-03-04")["available"] == 0
    j = join(run, A, "2025-04-01", "--region", "ru-bry")
    assert j["welcome"] == [] and j["balance"] == 0
    b = bal(run, A, "2025-04-01")
    assert (b["status"], b["available"], b["region"]) == ("active", 0, "RU-BRY")
    e = run.j("earn", A, "500", "--category", "mobile", "--at", "2025-04-02")
    assert e["points"] == 100
    assert e["balance"] == 100


def test_leave_forfeits_everything(run):
    join(run, A, "2025-03-01T12:00")
    run.ok("earn", A, "300", "--category", "mts_store", "--at", "2025-03-02")  # 100
    assert bal(run, A, "2025-03-02")["available"] == 250
    run.ok("leave", A, "--yes", "--at", "2025-03-03")
    b = bal(run, A, "2025-03-03")
    assert b["status"] == "left"
    assert b["available"] == 0
    assert b["next_expiry"] is None
    refused(run, "earn", A, "500", "--category", "mobile", "--at", "2025-03-04")


def test_leave_while_pending_then_rejoin(run):
    join(run, A, "2025-03-01T12:00", "--method", "web")
    run.ok("leave", A, "--yes", "--at", "2025-03-02")
    # welcome never arrives after leaving
    b = bal(run, A, "2025-03-05")
    assert (b["status"], b["available"]) == ("left", 0)
    j = join(run, A, "2025-03-06")
    assert j["active_from"] == "2025-03-06T00:00:00+03:00"


# ---------------------------------------------------------------- services, duplicates, regions


def test_satellite_tv_only_refused(run, data_dir):
    refused(run, "join", A, "--region", "RU-MOW", "--services", "satellite_tv", "--at", "2025-03-01")
    assert snapshot(data_dir, A)[A] is None


def test_satellite_tv_with_mobile_allowed(run):
    j = join(run, A, "2025-03-01T12:00", "--services", "mobile,satellite_tv")
    assert j["balance"] == 150


@pytest.mark.parametrize("services", ["home_phone", "home_internet", "home_tv", "home_tv,satellite_tv"])
def test_other_eligible_services_allowed(run, services):
    assert join(run, A, "2025-03-01T12:00", "--services", services)["balance"] == 150


def test_unknown_service_exit_2(run, data_dir):
    refused(run, "join", A, "--region", "RU-MOW", "--services", "mobile,cable_tv", "--at", "2025-03-01", code=2)
    assert snapshot(data_dir, A)[A] is None


def test_joining_twice_refused(run, data_dir):
    join(run, A, "2025-03-01T12:00")
    before = snapshot(data_dir, A)
    refused(run, "join", A, "--region", "RU-MOW", "--at", "2025-03-02")
    refused(run, "join", "+7 916 123-45-67", "--region", "RU-SPE", "--at", "2025-03-02")
    assert snapshot(data_dir, A) == before
    assert bal(run, A, "2025-03-02")["available"] == 150


def test_joining_twice_while_pending_refused(run):
    join(run, A, "2025-03-01T12:00", "--method", "wallet")
    refused(run, "join", A, "--region", "RU-MOW", "--at", "2025-03-02")


def test_unknown_region_exit_2(run, data_dir):
    refused(run, "join", A, "--region", "RU-XXX", "--at", "2025-03-01", code=2)
    refused(run, "join", A, "--region", "Atlantis", "--at", "2025-03-01", code=2)  # a name no region has
    assert snapshot(data_dir, A)[A] is None


def test_region_case_insensitive_shown_upper(run):
    j = join(run, A, "2025-03-01T12:00", region="ru-bry")
    assert j["region"] == "RU-BRY"
    assert bal(run, A, "2025-03-01T12:00")["region"] == "RU-BRY"
    j = join(run, B, "2025-03-01T12:00", region="Ru-Spe")
    assert j["region"] == "RU-SPE"


def test_join_phone_normalised(run):
    j = join(run, "+7 (916) 123-45-67", "2025-03-01T12:00")
    assert j["phone"] == A
    assert bal(run, "89161234567", "2025-03-01T12:00")["phone"] == A


def test_join_subprocess_exit_codes(sub):
    r = sub(["join", A, "--region", "RU-ZZZ", "--at", "2025-03-01"])
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "Traceback" not in r.stderr
    r = sub(["join", A, "--region", "RU-MOW", "--services", "satellite_tv", "--at", "2025-03-01"])
    assert r.returncode == 1 and r.stderr.startswith("error: ") and "Traceback" not in r.stderr
    r = sub(["join", A, "--region", "RU-MOW", "--at", "2025-03-01"])
    assert r.returncode == 0
    r = sub(["join", A, "--region", "RU-MOW", "--at", "2025-03-02"])
    assert r.returncode == 1 and r.stderr.count("\n") == 1


# ---------------------------------------------------------------- customer since


def test_customer_since_defaults_to_join_date(run):
    j = run.j("join", A, "--region", "RU-MOW", "--at", "2025-03-01T23:30")
    b = bal(run, A, "2025-03-02")
    assert b["customer_since"] == "2025-03-01"
    assert b["coefficient"] in ("1.0", 1.0, 1)


def test_customer_since_given(run):
    join(run, A, "2025-03-01T12:00", "--customer-since", "2023-01-15")
    b = bal(run, A, "2025-03-01T12:00")
    assert b["customer_since"] == "2023-01-15"
    # more than 24 months on 2025-03-01 -> 1.3: 500 x 1.3 / 5 = 130
    assert run.j("earn", A, "500", "--category", "mobile", "--at", "2025-03-01T13:00")["points"] == 130


# ---------------------------------------------------------------- referral


def test_referral_immediate_invitee_credits_inviter(run):
    join(run, A, "2025-03-01T12:00")
    j = join(run, B, "2025-03-01T13:00", "--referrer", A, region="RU-BRY")  # no region condition
    assert j["welcome"] == [{"reason": "welcome", "points": 150}]
    assert bal(run, A, "2025-03-01T13:00")["available"] == 200
    assert bal(run, B, "2025-03-01T13:00")["available"] == 150


def test_referral_web_invitee_credits_inviter_only_at_activation(run):
    join(run, A, "2025-03-01T12:00")
    join(run, B, "2025-03-01T13:00", "--referrer", A, "--method", "web")
    assert bal(run, A, "2025-03-01T13:00")["available"] == 150
    assert bal(run, A, "2025-03-02T13:00")["available"] == 150
    assert bal(run, A, "2025-03-03T12:59")["available"] == 150
    assert bal(run, A, "2025-03-03T13:00")["available"] == 200
    assert bal(run, B, "2025-03-03T13:00")["available"] == 250


def test_referral_once_per_invited_phone(run):
    join(run, A, "2025-03-01T12:00")
    join(run, B, "2025-03-01T13:00", "--referrer", A)
    assert bal(run, A, "2025-03-01T13:00")["available"] == 200
    run.ok("leave", B, "--yes", "--at", "2025-03-02")
    join(run, B, "2025-03-03", "--referrer", A)
    assert bal(run, A, "2025-03-04")["available"] == 200


def test_referral_once_per_invited_phone_even_with_other_inviter(run):
    join(run, A, "2025-03-01T12:00")
    join(run, C, "2025-03-01T12:00")
    join(run, B, "2025-03-01T13:00", "--referrer", A)
    run.ok("leave", B, "--yes", "--at", "2025-03-02")
    join(run, B, "2025-03-03", "--referrer", C)
    assert bal(run, A, "2025-03-04")["available"] == 200
    assert bal(run, C, "2025-03-04")["available"] == 150


def test_referrer_pending_refused_nothing_written(run, data_dir):
    join(run, A, "2025-03-01T12:00", "--method", "web")
    before = snapshot(data_dir, A, B)
    refused(run, "join", B, "--region", "RU-MOW", "--referrer", A, "--at", "2025-03-02")
    assert snapshot(data_dir, A, B) == before
    assert before[B] is None
    # and A's activation still brings exactly its own welcome
    assert bal(run, A, "2025-03-04")["available"] == 250


def test_referrer_not_member_refused_nothing_written(run, data_dir):
    refused(run, "join", B, "--region", "RU-MOW", "--referrer", C, "--at", "2025-03-01")
    assert snapshot(data_dir, B, C) == {B: None, C: None}
    r = run("balance", B, "--at", "2025-03-01")
    assert r.exit_code == 1


def test_referrer_who_left_refused(run, data_dir):
    join(run, A, "2025-03-01T12:00")
    run.ok("leave", A, "--yes", "--at", "2025-03-01T13:00")
    before = snapshot(data_dir, A, B)
    refused(run, "join", B, "--region", "RU-MOW", "--referrer", A, "--at", "2025-03-02")
    assert snapshot(data_dir, A, B) == before


def test_referral_bonus_visible_after_invitee_joins_later(run):
    # the inviter's own later commands see the referral credit too
    join(run, A, "2025-03-01T12:00")
    join(run, B, "2025-03-01T13:00", "--referrer", A)
    e = run.j("earn", A, "500", "--category", "mobile", "--at", "2025-03-02")
    assert e["balance"] == 150 + 50 + 100


# ---------------------------------------------------------------- program closing


@pytest.fixture
def closing_catalog(tmp_path):
    src = Path(__file__).resolve().parent.parent / "catalog.yaml"
    text = src.read_text(encoding="utf-8")
    assert "closing_date: null" in text
    out = tmp_path / "closing.yaml"
    out.write_text(text.replace("closing_date: null", 'closing_date: "2025-06-01"', 1), encoding="utf-8")
    return str(out)


def test_program_closing(run, closing_catalog):
    cat = ("--catalog", closing_catalog)
    run.j("join", A, "--region", "RU-MOW", "--at", "2025-03-01T12:00", *cat)
    run.j("join", B, "--region", "RU-MOW", "--at", "2025-03-01T12:00", *cat)
    e = run.j("earn", A, "500", "--category", "mobile", "--at", "2025-03-02", *cat)
    assert e["points"] == 100
    b = run.j("balance", A, "--at", "2025-05-31T23:59", *cat)
    assert (b["status"], b["available"]) == ("active", 250)
    b = run.j("balance", A, "--at", "2025-06-01", *cat)
    assert b["status"] == "closed"
    assert b["available"] == 0
    b = run.j("balance", A, "--at", "2025-07-01", *cat)
    assert (b["status"], b["available"]) == ("closed", 0)
    refused(run, "join", C, "--region", "RU-MOW", "--at", "2025-06-01", *cat)
    refused(run, "earn", A, "500", "--category", "mobile", "--at", "2025-06-01", *cat)
    refused(run, "redeem", A, "black_list", "--at", "2025-06-01", *cat)
    refused(run, "gift", A, B, "10", "--at", "2025-06-01", *cat)
    f = run.j("forecast", A, "--at", "2025-06-01", *cat)
    assert f["total"] == 0
    r = run.ok("history", A, "--at", "2025-06-01", *cat)
    assert r.stdout.strip()


def test_program_closing_forecast_before_close_lists_everything(run, closing_catalog):
    cat = ("--catalog", closing_catalog)
    run.j("join", A, "--region", "RU-MOW", "--at", "2025-05-10T12:00", *cat)
    # every point is gone from 2025-06-01 on: forecast of the next 30 days from 2025-05-10 covers it
    f = run.j("forecast", A, "--at", "2025-05-10T12:00", "--days", "30", *cat)
    assert f["total"] == 150
    assert f["lots"] == [{"expires_on": "2025-06-01", "points": 150}]


def test_program_closing_redeem_works_before(run, closing_catalog):
    cat = ("--catalog", closing_catalog)
    run.j("join", A, "--region", "RU-MOW", "--at", "2025-05-30", *cat)
    r = run.j("redeem", A, "black_list", "--at", "2025-05-31", *cat)
    assert r["points_spent"] == 30
    assert r["balance"] == 120


def test_program_closing_join_refused_subprocess(sub, closing_catalog):
    r = sub(["join", A, "--region", "RU-MOW", "--at", "2025-06-02", "--catalog", closing_catalog])
    assert r.returncode == 1
    assert r.stderr.startswith("error: ") and "Traceback" not in r.stderr
