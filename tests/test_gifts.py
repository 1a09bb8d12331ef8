"""Gifts (RULES.md §6; CLI.md `gift`, `accept`, `balance` pending_in/held_out),
exact across the sender's and the recipient's ledgers (docs/ledger.md,
"Gifts across two ledgers").

Every expected number is derived by hand from RULES.md:
- joining by sms activates at once and credits 150 welcome points (§2);
- `mobile` earns floor(amount x 1.0 / 5) for a customer of under 6 months (§3),
  so 1000 RUB -> 200 points, 20000 RUB -> 4000 points;
- a lot expires 12 months after it was credited, gone from 00:00 of that
  date (§4): credited 2025-03-01 -> expires_on 2026-03-01;
- gifts: same region, active members, >= 1 point, one a calendar day,
  3000 points a calendar month, deadline = offer + 30 x 24 h, points keep
  their expiry dates, held points that expire are lost (§6).
Program time is Europe/Moscow, UTC+03:00 all year (§1).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import pytest

from bonuscli import rules

A = "9161234567"  # sender in most tests, RU-MOW
B = "9167654321"  # recipient in most tests, RU-MOW
E = "9169998877"  # a third RU-MOW member
C = "9261112233"  # RU-SPE
D = "9035556677"  # never joined / joins by web (pending 2 days)
MOW = "RU-MOW"

MSK = dt.timezone(dt.timedelta(hours=3))


# ---------------------------------------------------------------- helpers


def ledgers(data_dir: Path) -> dict:
    """name -> bytes of every ledger file."""
    d = data_dir / "ledgers"
    if not d.exists():
        return {}
    return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.is_file()}


def refused(run, data_dir, *args) -> dict:
    """Run with --json; expect exit 1, the JSON error, and every ledger byte-for-byte unchanged."""
    before = ledgers(data_dir)
    r = run(*args, "--json")
    assert r.exit_code == 1, (args, r.exit_code, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    err = json.loads(r.stderr.strip().splitlines()[-1])["error"]
    assert err["code"] == 1
    assert ledgers(data_dir) == before, f"{args} changed a ledger although refused"
    return err


def join(run, phone, at, region=MOW, *extra):
    return run.j("join", phone, "--region", region, "--at", at, *extra)


def earn(run, phone, amount, at, category="mobile"):
    return run.j("earn", phone, amount, "--category", category, "--at", at)


def bal(run, phone, at):
    return run.j("balance", phone, "--at", at)


def lots(run, phone, at, until="2027-12-31"):
    return [(x["expires_on"], x["points"]) for x in run.j("forecast", phone, "--until", until, "--at", at)["lots"]]


def gift(run, frm, to, points, at):
    return run.j("gift", frm, to, points, "--at", at)


def check_ok(run, at):
    r = run("check", "--ledgers", "--at", at)
    assert r.exit_code == 0, (at, r.stdout, r.stderr)


def when(text):
    return dt.datetime.fromisoformat(text)


def base(run):
    """A: 150 welcome (expires 2026-03-01) + 200 earned (expires 2026-03-02) = 350.
    B: 150 welcome (expires 2026-03-05)."""
    join(run, A, "2025-03-01T10:00")
    assert earn(run, A, "1000", "2025-03-02T10:00")["points"] == 200
    join(run, B, "2025-03-05T09:00")


def rich(run):
    """A: 150 + 4000 = 4150 points (20000 RUB mobile); B joined the same day."""
    join(run, A, "2025-03-01T10:00")
    assert earn(run, A, "20000", "2025-03-01T11:00")["points"] == 4000
    join(run, B, "2025-03-01T10:00")


# ---------------------------------------------------------------- refusals of `gift`


def test_gift_to_oneself_refused(run, data_dir):
    base(run)
    refused(run, data_dir, "gift", A, A, 10, "--at", "2025-03-06T10:00")
    refused(run, data_dir, "gift", A, "+7 916 123-45-67", 10, "--at", "2025-03-06T10:00")
    # the refusals did not use up the day's gift
    gift(run, A, B, 10, "2025-03-06T10:01")


def test_gift_to_non_member_refused(run, data_dir):
    base(run)
    refused(run, data_dir, "gift", A, D, 10, "--at", "2025-03-06T10:00")
    assert not (data_dir / "ledgers" / f"{D}.jsonl").exists()
    assert bal(run, A, "2025-03-06T10:00")["available"] == 350


def test_gift_to_pending_member_refused_until_activation(run, data_dir):
    base(run)
    # web: active 2 x 24 h after joining (RULES §2)
    join(run, D, "2025-03-05T12:00", MOW, "--method", "web")
    refused(run, data_dir, "gift", A, D, 10, "--at", "2025-03-07T11:59:59")
    g = gift(run, A, D, 10, "2025-03-07T12:00")
    assert g["to"] == D


def test_gift_to_member_who_left_refused(run, data_dir):
    base(run)
    run.ok("leave", B, "--yes", "--at", "2025-03-06T09:00")
    refused(run, data_dir, "gift", A, B, 10, "--at", "2025-03-06T10:00")
    assert bal(run, A, "2025-03-06T10:00")["available"] == 350


def test_gift_from_pending_member_refused_with_activation_instant(run, data_dir):
    base(run)
    join(run, D, "2025-03-05T12:00", MOW, "--method", "web")
    err = refused(run, data_dir, "gift", D, A, 1, "--at", "2025-03-06T10:00")
    # RULES §2: refused with the activation instant in the message
    assert "2025-03-07T12:00" in err["message"]


def test_gift_from_non_member_refused(run, data_dir):
    base(run)
    refused(run, data_dir, "gift", D, A, 1, "--at", "2025-03-06T10:00")
    assert not (data_dir / "ledgers" / f"{D}.jsonl").exists()


def test_gift_from_member_who_left_refused(run, data_dir):
    base(run)
    run.ok("leave", A, "--yes", "--at", "2025-03-06T09:00")
    refused(run, data_dir, "gift", A, B, 1, "--at", "2025-03-06T10:00")


@pytest.mark.parametrize("region", ["RU-SPE", "RU-MOS"])
def test_gift_across_regions_refused_both_ways(run, data_dir, region):
    base(run)
    join(run, C, "2025-03-05T09:00", region)
    refused(run, data_dir, "gift", A, C, 10, "--at", "2025-03-06T10:00")
    refused(run, data_dir, "gift", C, A, 10, "--at", "2025-03-06T10:00")


def test_gift_of_zero_points_refused(run, data_dir):
    base(run)
    before = ledgers(data_dir)
    for n in ("0", "-5"):  # CLI.md §2: a zero or negative count is bad input (exit 2), never "No such option"
        r = run("gift", A, B, n, "--at", "2025-03-06T10:00", "--json")
        assert r.exit_code == 2, (n, r.stderr)
        assert json.loads(r.stderr.strip().splitlines()[-1])["error"]["kind"] == "bad-points"
    assert ledgers(data_dir) == before
    assert gift(run, A, B, 1, "2025-03-06T10:00")["points"] == 1


def test_gift_of_more_than_available_says_how_many_missing(run, data_dir):
    base(run)
    err = refused(run, data_dir, "gift", A, B, 400, "--at", "2025-03-06T10:00")
    assert re.search(r"\b50\b", err["message"]), err  # 400 - 350
    # all 350 can go, the same day (the refused attempt was never made)
    assert gift(run, A, B, 350, "2025-03-06T10:05")["points"] == 350


def test_held_points_are_not_available_for_another_gift(run, data_dir):
    base(run)
    gift(run, A, B, 300, "2025-03-06T10:00")
    join(run, E, "2025-03-06T11:00")
    err = refused(run, data_dir, "gift", A, E, 100, "--at", "2025-03-07T10:00")
    assert re.search(r"\b50\b", err["message"]), err  # 50 available, 100 asked
    assert gift(run, A, E, 50, "2025-03-07T10:00")["points"] == 50


def test_one_gift_per_calendar_day_in_program_time(run, data_dir):
    base(run)
    join(run, E, "2025-03-05T09:00")
    # 00:30 Moscow on 03-06 is 21:30 UTC on 03-05
    g = gift(run, A, B, 10, "2025-03-06T00:30+03:00")
    assert run.j("accept", B, g["gift_id"], "--reject", "--at", "2025-03-06T01:00")["status"] == "rejected"
    # 23:59 Moscow, same calendar day (a different UTC date): refused, even to another member,
    # even though the first gift was rejected
    refused(run, data_dir, "gift", A, E, 10, "--at", "2025-03-06T20:59Z")
    refused(run, data_dir, "gift", A, B, 10, "--at", "2025-03-06T20:59Z")
    # 00:30 Moscow on 03-07 (still 03-06 in UTC): a new day
    assert gift(run, A, E, 10, "2025-03-06T21:30Z")["to"] == E
    refused(run, data_dir, "gift", A, B, 10, "--at", "2025-03-07T23:00+03:00")
    check_ok(run, "2025-03-08")


def test_monthly_limit_counts_every_offer_whatever_became_of_it(run, data_dir):
    rich(run)
    # 1000 offered on 03-01, never answered: back to A at 03-31T12:00
    gift(run, A, B, 1000, "2025-03-01T12:00")
    # 1000 rejected
    g2 = gift(run, A, B, 1000, "2025-03-02T12:00")
    run.j("accept", B, g2["gift_id"], "--reject", "--at", "2025-03-02T13:00")
    # 999 accepted
    g3 = gift(run, A, B, 999, "2025-03-03T12:00")
    run.j("accept", B, g3["gift_id"], "--at", "2025-03-03T13:00")
    # 2999 offered in March: 2 more would be 3001
    refused(run, data_dir, "gift", A, B, 2, "--at", "2025-03-05T12:00")
    # the refused attempt does not count: 1 the same day makes exactly 3000
    assert gift(run, A, B, 1, "2025-03-05T12:05")["points"] == 1
    refused(run, data_dir, "gift", A, B, 1, "--at", "2025-03-06T12:00")
    # the first offer has come back, it still counts
    b = bal(run, A, "2025-03-31T13:00")
    assert b["available"] == 4150 - 999 - 1 and b["held_out"] == 1
    refused(run, data_dir, "gift", A, B, 1, "--at", "2025-03-31T13:00")
    # 23:59 Moscow on 03-31 is still March
    refused(run, data_dir, "gift", A, B, 1, "--at", "2025-03-31T20:59Z")
    # 00:00 Moscow on 04-01: a new calendar month
    assert gift(run, A, B, 3000, "2025-03-31T21:00Z")["points"] == 3000
    check_ok(run, "2025-04-02")


# ---------------------------------------------------------------- refusals of `accept`


def test_accept_unknown_gift_id_refused(run, data_dir):
    base(run)
    g = gift(run, A, B, 100, "2025-03-06T10:00")
    unknown = "gzzzzzz" if g["gift_id"] != "gzzzzzz" else "gyyyyyy"
    refused(run, data_dir, "accept", B, unknown, "--at", "2025-03-06T11:00")
    refused(run, data_dir, "accept", B, unknown, "--reject", "--at", "2025-03-06T11:00")
    assert [x["gift_id"] for x in bal(run, B, "2025-03-06T11:00")["pending_in"]] == [g["gift_id"]]


def test_accept_by_someone_not_the_recipient_refused(run, data_dir):
    base(run)
    join(run, E, "2025-03-05T09:00")
    g = gift(run, A, B, 100, "2025-03-06T10:00")
    gid = g["gift_id"]
    refused(run, data_dir, "accept", A, gid, "--at", "2025-03-06T11:00")  # the sender
    refused(run, data_dir, "accept", E, gid, "--at", "2025-03-06T11:00")  # another member
    refused(run, data_dir, "accept", E, gid, "--reject", "--at", "2025-03-06T11:00")
    refused(run, data_dir, "accept", D, gid, "--at", "2025-03-06T11:00")  # not a member
    assert bal(run, A, "2025-03-06T11:00")["held_out"] == 100
    assert run.j("accept", B, gid, "--at", "2025-03-06T11:00")["status"] == "accepted"


def test_accept_twice_refused(run, data_dir):
    base(run)
    gid = gift(run, A, B, 100, "2025-03-06T10:00")["gift_id"]
    run.j("accept", B, gid, "--at", "2025-03-06T11:00")
    refused(run, data_dir, "accept", B, gid, "--at", "2025-03-06T11:30")
    refused(run, data_dir, "accept", B, gid, "--reject", "--at", "2025-03-06T11:30")
    assert bal(run, B, "2025-03-06T12:00")["available"] == 250
    assert bal(run, A, "2025-03-06T12:00")["available"] == 250


def test_accept_after_reject_refused(run, data_dir):
    base(run)
    gid = gift(run, A, B, 100, "2025-03-06T10:00")["gift_id"]
    run.j("accept", B, gid, "--reject", "--at", "2025-03-06T11:00")
    refused(run, data_dir, "accept", B, gid, "--at", "2025-03-06T11:30")
    refused(run, data_dir, "accept", B, gid, "--reject", "--at", "2025-03-06T11:30")
    assert bal(run, B, "2025-03-06T12:00")["available"] == 150
    assert bal(run, A, "2025-03-06T12:00")["available"] == 350


@pytest.mark.parametrize("just_before, deadline", [
    ("2025-04-05T09:59:59", "2025-04-05T10:00:00"),
    ("2025-04-05T06:59:59Z", "2025-04-05T07:00:00Z"),
])
def test_accept_one_second_before_deadline_ok(run, data_dir, just_before, deadline):
    base(run)
    g = gift(run, A, B, 300, "2025-03-06T10:00")
    v = run.j("accept", B, g["gift_id"], "--at", just_before)
    assert v["status"] == "accepted" and v["points"] == 300 and v["balance"] == 450
    b = bal(run, A, deadline)
    assert (b["available"], b["held_out"]) == (50, 0)
    check_ok(run, "2025-04-06")


@pytest.mark.parametrize("deadline", ["2025-04-05T10:00:00", "2025-04-05T07:00:00Z", "2025-04-06T10:00"])
@pytest.mark.parametrize("reject", [False, True])
def test_accept_at_or_after_deadline_refused(run, data_dir, deadline, reject):
    base(run)
    g = gift(run, A, B, 300, "2025-03-06T10:00")
    # deadline = 2025-03-06T10:00 + 30 x 24 h
    assert when(g["deadline"]) == dt.datetime(2025, 4, 5, 10, 0, tzinfo=MSK)
    refused(run, data_dir, "accept", B, g["gift_id"], *(["--reject"] if reject else []), "--at", deadline)
    b = bal(run, A, deadline)
    assert (b["available"], b["held_out"]) == (350, 0)
    assert bal(run, B, deadline)["available"] == 150
    check_ok(run, "2025-04-06T10:00")


# ---------------------------------------------------------------- JSON contract


def test_gift_accept_balance_json_fields(run, data_dir):
    base(run)
    g = run.j("gift", "+7 916 123-45-67", "8 (916) 765-43-21", 300, "--at", "2025-03-06T07:00Z")
    assert g["from"] == A and g["to"] == B and g["points"] == 300
    assert isinstance(g["points"], int)
    gid = g["gift_id"]
    assert isinstance(gid, str) and gid.isalnum() and 1 <= len(gid) <= 12  # short enough to type
    offered = when(g["offered_at"])
    assert offered.utcoffset() is not None
    assert offered == dt.datetime(2025, 3, 6, 10, 0, tzinfo=MSK)
    assert when(g["deadline"]) == dt.datetime(2025, 4, 5, 10, 0, tzinfo=MSK)

    s = bal(run, A, "2025-03-06T11:00")
    assert s["available"] == 50 and s["held_out"] == 300 and s["pending_in"] == []
    r = bal(run, B, "2025-03-06T11:00")
    assert r["held_out"] == 0 and r["available"] == 150
    assert len(r["pending_in"]) == 1
    p = r["pending_in"][0]
    assert {"gift_id", "from", "points", "offered_at", "deadline"} <= set(p)
    assert (p["gift_id"], p["from"], p["points"]) == (gid, A, 300)
    assert when(p["offered_at"]) == offered and when(p["deadline"]) == when(g["deadline"])

    v = run.j("accept", "+79167654321", gid.upper(), "--at", "2025-03-07T10:00")
    assert v["gift_id"] == gid and v["status"] == "accepted"
    assert v["points"] == 300 and v["balance"] == 450
    assert isinstance(v["balance"], int)

    g2 = gift(run, A, B, 50, "2025-03-08T10:00")
    v2 = run.j("accept", B, g2["gift_id"], "--reject", "--at", "2025-03-08T11:00")
    assert v2["gift_id"] == g2["gift_id"] and v2["status"] == "rejected"
    assert v2["points"] == 50 and v2["balance"] == 450


# ---------------------------------------------------------------- outcomes


def test_accept_moves_points_with_their_expiry_dates(run, data_dir):
    base(run)
    gid = gift(run, A, B, 300, "2025-03-06T10:00")["gift_id"]
    # oldest expiry first: 150 of 2026-03-01 and 150 of the 200 of 2026-03-02
    s = bal(run, A, "2025-03-06T11:00")
    assert (s["available"], s["held_out"]) == (50, 300)
    assert s["next_expiry"] == {"date": "2026-03-02", "points": 50}
    assert lots(run, A, "2025-03-06T11:00") == [("2026-03-02", 50)]  # held points are not listed
    assert lots(run, B, "2025-03-06T11:00") == [("2026-03-05", 150)]

    v = run.j("accept", B, gid, "--at", "2025-03-07T10:00")
    assert (v["status"], v["points"], v["balance"]) == ("accepted", 300, 450)
    r = bal(run, B, "2025-03-07T10:00")
    assert r["available"] == 450 and r["pending_in"] == []
    assert r["next_expiry"] == {"date": "2026-03-01", "points": 150}
    assert lots(run, B, "2025-03-07T10:00") == [("2026-03-01", 150), ("2026-03-02", 150), ("2026-03-05", 150)]
    s = bal(run, A, "2025-03-07T10:00")
    assert (s["available"], s["held_out"]) == (50, 0)
    # the dates hold at the recipient
    assert bal(run, B, "2026-03-01T00:00")["available"] == 300
    assert bal(run, B, "2026-03-02T00:00")["available"] == 150
    check_ok(run, "2025-03-07T11:00")

    # gifting back does not extend a point's life: oldest first again, same dates
    back = gift(run, B, A, 300, "2025-03-08T10:00")
    run.j("accept", A, back["gift_id"], "--at", "2025-03-08T11:00")
    assert lots(run, A, "2025-03-08T11:00") == [("2026-03-01", 150), ("2026-03-02", 200)]
    assert lots(run, B, "2025-03-08T11:00") == [("2026-03-05", 150)]
    check_ok(run, "2025-03-09")


def test_reject_returns_points_at_once_with_their_dates(run, data_dir):
    base(run)
    gid = gift(run, A, B, 300, "2025-03-06T10:00")["gift_id"]
    v = run.j("accept", B, gid, "--reject", "--at", "2025-03-07T10:00")
    assert (v["status"], v["points"], v["balance"]) == ("rejected", 300, 150)
    s = bal(run, A, "2025-03-07T10:00")
    assert (s["available"], s["held_out"]) == (350, 0)
    assert s["next_expiry"] == {"date": "2026-03-01", "points": 150}
    assert lots(run, A, "2025-03-07T10:00") == [("2026-03-01", 150), ("2026-03-02", 200)]
    r = bal(run, B, "2025-03-07T10:00")
    assert r["available"] == 150 and r["pending_in"] == []
    check_ok(run, "2025-03-07T11:00")


def test_unaccepted_gift_returns_on_day_31_not_day_29_without_a_command(run, data_dir):
    base(run)
    gid = gift(run, A, B, 300, "2025-03-06T10:00")["gift_id"]
    written = ledgers(data_dir)
    # day 29
    s = bal(run, A, "2025-04-04T10:00")
    assert (s["available"], s["held_out"]) == (50, 300)
    assert [p["gift_id"] for p in bal(run, B, "2025-04-04T10:00")["pending_in"]] == [gid]
    # day 31: back, with the original dates, and nothing was written to get there
    s = bal(run, A, "2025-04-06T10:00")
    assert (s["available"], s["held_out"]) == (350, 0)
    assert s["next_expiry"] == {"date": "2026-03-01", "points": 150}
    assert lots(run, A, "2025-04-06T10:00") == [("2026-03-01", 150), ("2026-03-02", 200)]
    r = bal(run, B, "2025-04-06T10:00")
    assert r["pending_in"] == [] and r["available"] == 150
    assert ledgers(data_dir) == written
    check_ok(run, "2025-04-06T10:00")
    # the points are really back: they can be spent
    assert gift(run, A, B, 350, "2025-04-06T11:00")["points"] == 350
    check_ok(run, "2025-04-06T12:00")


def held_expiry_setup(run):
    """A: 150 (expires 2026-03-01) + 200 earned 2025-04-10 (expires 2026-04-10).
    On 2026-02-25 A gifts 250 = 150 of 2026-03-01 + 100 of 2026-04-10; deadline 2026-03-27T10:00."""
    join(run, A, "2025-03-01T10:00")
    join(run, B, "2025-03-05T09:00")
    assert earn(run, A, "1000", "2025-04-10T10:00")["points"] == 200
    g = gift(run, A, B, 250, "2026-02-25T10:00")
    s = bal(run, A, "2026-02-25T11:00")
    assert (s["available"], s["held_out"]) == (100, 250)
    return g["gift_id"]


def test_points_expiring_while_held_are_lost_on_return(run, data_dir):
    held_expiry_setup(run)
    s = bal(run, A, "2026-03-28T10:00")  # day 31
    assert s["held_out"] == 0
    assert s["available"] == 200  # 100 kept + 100 back; the 150 of 2026-03-01 are gone
    assert s["next_expiry"] == {"date": "2026-04-10", "points": 200}
    assert lots(run, A, "2026-03-28T10:00") == [("2026-04-10", 200)]
    assert bal(run, B, "2026-03-28T10:00")["pending_in"] == []
    check_ok(run, "2026-03-28T10:00")


def test_accept_after_some_held_points_expired_only_live_ones_arrive(run, data_dir):
    gid = held_expiry_setup(run)
    v = run.j("accept", B, gid, "--at", "2026-03-04T10:00")
    assert v["status"] == "accepted"
    assert v["points"] == 100  # the 150 of 2026-03-01 died while held
    assert v["balance"] == 250  # B's own 150 (expires 2026-03-05) + 100
    assert lots(run, B, "2026-03-04T10:00") == [("2026-03-05", 150), ("2026-04-10", 100)]
    s = bal(run, A, "2026-03-04T10:00")
    assert (s["available"], s["held_out"]) == (100, 0)
    check_ok(run, "2026-03-04T11:00")


def test_reject_after_some_held_points_expired_only_live_ones_return(run, data_dir):
    gid = held_expiry_setup(run)
    run.j("accept", B, gid, "--reject", "--at", "2026-03-04T10:00")
    s = bal(run, A, "2026-03-04T10:00")
    assert (s["available"], s["held_out"]) == (200, 0)
    assert lots(run, A, "2026-03-04T10:00") == [("2026-04-10", 200)]
    check_ok(run, "2026-03-04T11:00")


def test_sender_leaves_pending_gift_is_forfeited(run, data_dir):
    base(run)
    gid = gift(run, A, B, 300, "2025-03-06T10:00")["gift_id"]
    run.ok("leave", A, "--yes", "--at", "2025-03-07T10:00")
    r = bal(run, B, "2025-03-07T11:00")
    assert r["pending_in"] == [] and r["available"] == 150
    refused(run, data_dir, "accept", B, gid, "--at", "2025-03-08T10:00")
    s = bal(run, A, "2025-03-08T10:00")
    assert (s["available"], s["held_out"]) == (0, 0)
    # not returned after the deadline either: A joins again, no welcome, nothing back
    join(run, A, "2025-04-10T10:00")
    s = bal(run, A, "2025-04-10T10:00")
    assert (s["available"], s["held_out"]) == (0, 0)
    assert bal(run, B, "2025-04-10T10:00")["available"] == 150
    check_ok(run, "2025-04-10T11:00")


def test_recipient_leaves_pending_gift_goes_back_to_sender(run, data_dir):
    base(run)
    gift(run, A, B, 300, "2025-03-06T10:00")
    run.ok("leave", B, "--yes", "--at", "2025-03-07T10:00")
    s = bal(run, A, "2025-03-07T10:00")
    assert (s["available"], s["held_out"]) == (350, 0)
    assert lots(run, A, "2025-03-07T10:00") == [("2026-03-01", 150), ("2026-03-02", 200)]
    check_ok(run, "2025-03-07T11:00")
    # and the sender's next change settles it without disturbing the numbers
    earn(run, A, "500", "2025-03-08T10:00")
    s = bal(run, A, "2025-03-08T10:00")
    assert (s["available"], s["held_out"]) == (450, 0)
    check_ok(run, "2025-04-10")


def test_settled_states_survive_later_changes_of_the_sender(run, data_dir):
    """Accepted, rejected and returned gifts: the sender's later changes write the
    settlements; the numbers stay what they were."""
    rich(run)
    g1 = gift(run, A, B, 100, "2025-03-02T10:00")
    run.j("accept", B, g1["gift_id"], "--at", "2025-03-02T11:00")
    g2 = gift(run, A, B, 200, "2025-03-03T10:00")
    run.j("accept", B, g2["gift_id"], "--reject", "--at", "2025-03-03T11:00")
    gift(run, A, B, 400, "2025-03-04T10:00")  # returns 2025-04-03T10:00
    s = bal(run, A, "2025-04-04T10:00")
    assert (s["available"], s["held_out"]) == (4150 - 100, 0)
    earn(run, A, "500", "2025-04-04T11:00")
    s = bal(run, A, "2025-04-04T12:00")
    assert (s["available"], s["held_out"]) == (4150 - 100 + 100, 0)
    r = bal(run, B, "2025-04-04T12:00")
    assert (r["available"], r["pending_in"]) == (150 + 100, [])
    check_ok(run, "2025-04-04T12:00")


# ---------------------------------------------------------------- the pure outcome function


def test_gift_outcome_is_a_function_of_both_ledgers():
    """docs/ledger.md: the gift exists once the gift_in is written; the recipient's
    decision is the authority; no decision by the deadline -> returned at the deadline;
    the sender leaving first -> forfeited."""
    offered, deadline = "2025-03-06T10:00:00+03:00", "2025-04-05T10:00:00+03:00"
    out = [{"type": "gift_out", "at": offered, "id": f"{A}.3", "gift_id": "gx", "to": B, "points": 300,
            "deadline": deadline, "lots": [{"expires_on": "2026-03-01", "points": 300}]}]
    inn = [{"type": "gift_in", "at": offered, "id": f"{B}.2", "gift_id": "gx", "from": A, "points": 300,
            "offered_at": offered, "deadline": deadline, "lots": [{"expires_on": "2026-03-01", "points": 300}]}]
    t = dt.datetime(2025, 3, 20, 12, 0, tzinfo=MSK)
    dl = dt.datetime(2025, 4, 5, 10, 0, tzinfo=MSK)
    assert rules.gift_outcome("gx", out, [], t)[0] == "cancelled"
    assert rules.gift_outcome("gx", out, inn, t)[0] == "pending"
    assert rules.gift_outcome("gx", out, inn, dl - dt.timedelta(seconds=1))[0] == "pending"
    assert rules.gift_outcome("gx", out, inn, dl) == ("returned", dl)
    decided = dt.datetime(2025, 3, 7, 10, 0, tzinfo=MSK)
    acc = inn + [{"type": "gift_accept", "at": "2025-03-07T10:00:00+03:00", "id": f"{B}.3", "gift_id": "gx",
                  "from": A, "lots": []}]
    assert rules.gift_outcome("gx", out, acc, t) == ("accepted", decided)
    assert rules.gift_outcome("gx", out, acc, dl + dt.timedelta(days=5)) == ("accepted", decided)
    rej = inn + [{"type": "gift_reject", "at": "2025-03-07T10:00:00+03:00", "id": f"{B}.3", "gift_id": "gx",
                  "from": A, "reason": "rejected"}]
    assert rules.gift_outcome("gx", out, rej, t) == ("rejected", decided)
    left = out + [{"type": "leave", "at": "2025-03-07T10:00:00+03:00", "id": f"{A}.4", "points": 50,
                   "held_out": 300}]
    assert rules.gift_outcome("gx", left, inn, t) == ("forfeited", decided)
    assert rules.gift_outcome("gx", left, inn, dl + dt.timedelta(days=5)) == ("forfeited", decided)
