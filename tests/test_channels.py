"""RULES.md §7 (the operator's channels) through `bonuscli sms` and `bonuscli ussd`.

CLI.md: `sms PHONE TEXT [--region CODE]`, `ussd PHONE CODE [--region CODE]`; one
line on stdout (the short number's reply); exit code as the command the text
maps to; unrecognised text exit 2 with a reply that says which texts work; `0`
or `BAL` from a non-member exit 1. JSON: `reply`, `action`, `result` (what the
mapped command's --json gives).

Every expected number is derived by hand from RULES.md / catalog.yaml defaults:
welcome 150; mobile 5 RUB a point at tenure 1.0 (so 5,000 RUB -> 1,000); lots
expire 12 months after crediting; rewards are active validity x 24 h after the
order; gift deadline offer + 30 x 24 h; prices (default / Moscow RU-MOW and
RU-MOS / Bryansk): turbo_1gb 870/875/-, minutes_30 100/210/85, minutes_60
150/300/-, home_everywhere 400, cert_sportmaster_500 5000 (web and app only),
store_discount (store only). Program zone Europe/Moscow (+03:00 all year).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

A = "9161234567"  # RU-MOW
B = "9167654321"  # RU-MOW
C = "9031112233"  # RU-BRY
D = "9035556677"  # RU-SPE

T0 = "2025-03-01T12:00"
ACTIONS = {"join", "balance", "forecast", "leave", "gift", "redeem"}
SMS_HELP_WORDS = ("BAL", "PROGNOS", "DAR")


# ---------------------------------------------------------------- helpers


def ledger(data_dir: Path, phone: str) -> Path:
    return data_dir / "ledgers" / f"{phone}.jsonl"


def snapshot(data_dir: Path, *phones):
    out = {}
    for p in phones:
        f = ledger(data_dir, p)
        out[p] = f.read_bytes() if f.exists() else None
    return out


def one_line(r):
    """The reply: exactly one non-empty line on stdout."""
    assert r.stdout.endswith("\n"), repr(r.stdout)
    assert r.stdout.count("\n") == 1, repr(r.stdout)
    line = r.stdout[:-1]
    assert line.strip(), repr(r.stdout)
    assert "\r" not in line
    return line


def chan(run, kind, phone, text, at, *extra, code=0):
    """A channel call in human mode: one reply line, the expected exit code, one error line when non-zero."""
    args = [kind, phone, text, "--at", at, *extra]
    r = run(*args)
    assert r.exit_code == code, (args, r.exit_code, r.stdout, r.stderr)
    line = one_line(r)
    if code:
        assert r.stderr.startswith("error: "), r.stderr
        assert r.stderr.count("\n") == 1, r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    assert "internal error" not in r.stderr
    return line


def chan_j(run, kind, phone, text, at, *extra, code=0):
    """A channel call with --json: one JSON document with reply (one line), action and result."""
    args = [kind, phone, text, "--at", at, *extra, "--json"]
    r = run(*args)
    assert r.exit_code == code, (args, r.exit_code, r.stdout, r.stderr)
    doc = json.loads(r.stdout)
    assert {"reply", "action", "result"} <= set(doc), doc
    assert isinstance(doc["reply"], str) and doc["reply"].strip()
    assert "\n" not in doc["reply"] and "\r" not in doc["reply"]
    if code == 0:
        assert doc["action"] in ACTIONS
        assert isinstance(doc["result"], dict)
    else:
        err = json.loads(r.stderr)["error"]
        assert err["code"] == code
    return doc


def sms(run, phone, text, at, *extra, code=0):
    return chan_j(run, "sms", phone, text, at, *extra, code=code)


def ussd(run, phone, code_text, at, *extra, code=0):
    return chan_j(run, "ussd", phone, code_text, at, *extra, code=code)


def join(run, phone, at, region="RU-MOW", *extra):
    return run.j("join", phone, "--region", region, "--at", at, *extra)


def earn(run, phone, amount, at, category="mobile"):
    return run.j("earn", phone, amount, "--category", category, "--at", at)


def bal(run, phone, at):
    return run.j("balance", phone, "--at", at)


def err_of(r):
    return json.loads(r.stderr)["error"]


class Twin:
    """Two data directories: one driven through the channel, the other through the direct commands.

    At every step both must answer the same: the channel's `result` is the direct command's --json,
    the exit codes and error kinds are equal, and the ledgers end up identical."""

    def __init__(self, run, tmp_path):
        self.run = run
        self.chan = tmp_path / "via-channel"
        self.direct = tmp_path / "via-command"

    def both(self, *args):
        """The same direct command in both directories (setting the scene)."""
        for d in (self.chan, self.direct):
            self.run.ok(*args, "--data-dir", d)

    def step(self, kind, phone, text, direct, at, *extra, code=0, action=None):
        doc = chan_j(self.run, kind, phone, text, at, *extra, "--data-dir", self.chan, code=code)
        r = self.run(*direct, "--at", at, "--json", "--data-dir", self.direct)
        assert r.exit_code == code, (direct, r.exit_code, r.stdout, r.stderr)
        if action is not None:
            assert doc["action"] == action, doc
        if code == 0:
            assert doc["result"] == json.loads(r.stdout)
        else:
            assert doc["result"] is None, doc
            assert err_of(r)["kind"] == doc["error"]["kind"], (doc, r.stderr)
        self.same_ledgers()
        return doc

    def same_ledgers(self):
        def files(d):
            led = d / "ledgers"
            return {f.name: f.read_bytes() for f in sorted(led.glob("*.jsonl"))} if led.exists() else {}

        assert files(self.chan) == files(self.direct)


@pytest.fixture
def twin(run, tmp_path):
    return Twin(run, tmp_path)


# ---------------------------------------------------------------- a member's year through the channels, against the direct commands


def test_sms_year_matches_direct_commands(twin):
    # join by any text (method sms)
    j = twin.step("sms", A, "hello", ["join", A, "--region", "RU-MOW", "--method", "sms"], T0,
                  "--region", "RU-MOW", action="join")["result"]
    assert j["method"] == "sms" and j["region"] == "RU-MOW"
    assert j["joined_at"] == j["active_from"] == "2025-03-01T12:00:00+03:00"
    assert j["welcome"] == [{"reason": "welcome", "points": 150}]
    assert j["balance"] == 150
    twin.both("join", B, "--region", "RU-MOW", "--at", T0)
    twin.both("earn", A, "5000", "--category", "mobile", "--at", "2025-03-05T09:00")  # 1000 points, lot to 2026-03-05

    b = twin.step("sms", A, "BAL", ["balance", A], "2025-03-05T10:00", action="balance")["result"]
    assert b["available"] == 1150
    assert b["next_expiry"] == {"date": "2026-03-01", "points": 150}

    # turbo1gb costs 875 in Moscow; the welcome lot (2026-03-01) goes first, then 725 of the earn lot
    o = twin.step("sms", A, "turbo1gb", ["redeem", A, "turbo_1gb", "--via", "sms"], "2025-03-05T11:00",
                  action="redeem")["result"]
    assert o["code"] == "turbo_1gb" and o["points_spent"] == 875 and o["balance"] == 275
    assert o["active_until"] == "2025-05-04T11:00:00+03:00"  # 60 x 24 h

    g = twin.step("sms", A, "DAR 9167654321 100", ["gift", A, B, "100"], "2025-03-05T12:00", action="gift")["result"]
    assert (g["from"], g["to"], g["points"]) == (A, B, 100)
    assert g["deadline"] == "2025-04-04T12:00:00+03:00"
    assert g["balance"] == 175

    b = twin.step("ussd", A, "*111*455*0#", ["balance", A], "2025-03-06T10:00", action="balance")["result"]
    assert b["available"] == 175 and b["held_out"] == 100
    assert b["next_expiry"] == {"date": "2026-03-05", "points": 175}

    # minutes_60 costs 300 in Moscow: 125 missing
    d = twin.step("ussd", A, "*111*455*12#", ["redeem", A, "minutes_60", "--via", "ussd"], "2025-03-06T11:00",
                  code=1, action="redeem")
    assert "125" in d["reply"]

    # the gift was never accepted: its 100 came back (deadline 2025-04-04) with their 2026-03-05 date
    f = twin.step("sms", A, "PROGNOS", ["forecast", A], "2026-02-10T10:00", action="forecast")["result"]
    assert f["until"] == "2026-03-12"
    assert f["lots"] == [{"expires_on": "2026-03-05", "points": 275}]
    assert f["total"] == 275

    lv = twin.step("sms", A, "0", ["leave", A, "--yes"], "2026-02-10T11:00", action="leave")["result"]
    assert lv["forfeited"] == 275
    assert lv["balance"] == 0

    # a left member is no member: `0` is refused, nothing written
    doc = sms(twin.run, A, "0", "2026-02-10T12:00", "--data-dir", twin.chan, code=1)
    assert doc["result"] is None
    twin.same_ledgers()


def test_ussd_join_and_order_match_direct_commands(twin):
    j = twin.step("ussd", C, "*455*1#", ["join", C, "--region", "RU-BRY", "--method", "ussd"], T0,
                  "--region", "RU-BRY", action="join")["result"]
    assert j["method"] == "ussd" and j["balance"] == 150
    # minutes_30 costs 85 in Bryansk, active 30 x 24 h
    o = twin.step("ussd", C, "*111*455*11#", ["redeem", C, "minutes_30", "--via", "ussd"], "2025-03-01T13:00",
                  action="redeem")["result"]
    assert o["points_spent"] == 85 and o["balance"] == 65
    assert o["active_until"] == "2025-03-31T13:00:00+03:00"
    b = twin.step("ussd", C, "*111*455*0#", ["balance", C], "2025-03-01T14:00", action="balance")["result"]
    assert b["available"] == 65
    assert [r["code"] for r in b["active_rewards"]] == ["minutes_30"]


def test_ussd_long_join_code_matches_join_by_ussd(twin):
    j = twin.step("ussd", D, "*111*455*1#", ["join", D, "--region", "RU-SPE", "--method", "ussd"], T0,
                  "--region", "rU-sPe", action="join")["result"]
    assert j["method"] == "ussd" and j["region"] == "RU-SPE" and j["balance"] == 150


@pytest.mark.parametrize("text", ["PRESENT 9167654321 40", "present   9167654321   40", "  Dar 9167654321 40 "])
def test_present_and_spacing_gift_like_dar(twin, text):
    twin.both("join", A, "--region", "RU-MOW", "--at", T0)
    twin.both("join", B, "--region", "RU-MOW", "--at", T0)
    g = twin.step("sms", A, text, ["gift", A, B, "40"], "2025-03-02T09:00", action="gift")["result"]
    assert (g["from"], g["to"], g["points"], g["balance"]) == (A, B, 40, 110)
    assert g["deadline"] == "2025-04-01T09:00:00+03:00"


def test_gift_phone_in_any_spelling(run):
    join(run, A, T0)
    join(run, B, T0)
    doc = sms(run, A, "DAR +7 916 765-43-21 25", "2025-03-02T09:00")
    assert doc["action"] == "gift"
    assert doc["result"]["to"] == B and doc["result"]["points"] == 25
    assert bal(run, B, "2025-03-02T09:00")["pending_in"][0]["points"] == 25


def test_sms_text_split_over_arguments(run):
    """`bonuscli sms 9161234567 DAR 9167654321 30` (unquoted) is the text `DAR 9167654321 30`."""
    join(run, A, T0)
    join(run, B, T0)
    r = run("sms", A, "DAR", B, "30", "--at", "2025-03-02T09:00", "--json")
    assert r.exit_code == 0, (r.stdout, r.stderr)
    assert r.json["action"] == "gift" and r.json["result"]["points"] == 30


# ---------------------------------------------------------------- non-members


def test_any_text_joins_a_non_member_with_region(run, data_dir):
    doc = sms(run, A, "Hi there, sign me up", T0, "--region", "ru-mow")
    assert doc["action"] == "join"
    assert doc["result"]["method"] == "sms"
    assert doc["result"]["region"] == "RU-MOW"
    assert doc["result"]["balance"] == 150
    assert "150" in doc["reply"]
    b = bal(run, A, T0)
    assert b["status"] == "active" and b["available"] == 150


def test_join_text_without_region_is_bad_input_and_writes_nothing(run, data_dir):
    line = chan(run, "sms", A, "hello", T0, code=2)
    assert "--region" in line
    assert not ledger(data_dir, A).exists()


def test_ussd_join_without_region_is_bad_input(run, data_dir):
    chan(run, "ussd", A, "*111*455*1#", T0, code=2)
    assert not ledger(data_dir, A).exists()


def test_zero_from_non_member_is_refused(run, data_dir):
    doc = sms(run, A, "0", T0, "--region", "RU-MOW", code=1)
    assert doc["result"] is None
    assert json.loads(run("sms", A, "0", "--at", T0, "--json").stderr)["error"]["kind"] == "not-member"
    chan(run, "sms", A, "0", T0, code=1)
    assert not ledger(data_dir, A).exists()


def test_bal_from_non_member_is_not_a_member(run, data_dir):
    """CLI.md: "`0` or `BAL` from a non-member is exit 1 (not a member)" (no --region given)."""
    r = run("sms", A, "BAL", "--at", T0, "--json")
    assert r.exit_code == 1, (r.stdout, r.stderr)
    assert err_of(r)["kind"] == "not-member"
    assert not ledger(data_dir, A).exists()


def test_ussd_balance_from_non_member_is_refused(run, data_dir):
    chan(run, "ussd", A, "*111*455*0#", T0, code=1)
    assert not ledger(data_dir, A).exists()


@pytest.mark.parametrize("text", ["", "   "])
def test_empty_text_does_not_join(run, data_dir, text):
    """Only a non-empty text joins (RULES.md §7)."""
    r = run("sms", A, text, "--region", "RU-MOW", "--at", T0)
    assert r.exit_code == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stdout + r.stderr
    assert not ledger(data_dir, A).exists()


def test_join_code_from_member_is_refused_like_join(run, data_dir):
    join(run, A, T0)
    before = snapshot(data_dir, A)
    doc = ussd(run, A, "*111*455*1#", "2025-03-02T09:00", "--region", "RU-MOW", code=1)
    direct = run("join", A, "--region", "RU-MOW", "--method", "ussd", "--at", "2025-03-02T09:00", "--json")
    assert direct.exit_code == 1
    assert doc["result"] is None
    assert snapshot(data_dir, A) == before


def test_rejoin_by_sms_after_leaving_gets_no_welcome(run):
    sms(run, A, "join", T0, "--region", "RU-MOW")
    assert sms(run, A, "0", "2025-03-02T09:00")["result"]["forfeited"] == 150
    # BAL / BONUS from a former member answer "not a member" (CLI.md); any other text joins again
    r = run("sms", A, "BONUS", "--at", "2025-03-03T09:00", "--region", "RU-MOW", "--json")
    assert r.exit_code == 1
    doc = sms(run, A, "hello again", "2025-03-03T09:00", "--region", "RU-MOW")
    assert doc["action"] == "join"
    assert doc["result"]["welcome"] == []
    assert doc["result"]["balance"] == 0


def test_pending_member_texts_are_member_texts(run):
    """A web join is pending for 48 h: BAL answers (not a second join), an order is refused exit 1."""
    join(run, A, T0, "RU-MOW", "--method", "web")  # 150 + 100 at 2025-03-03T12:00
    doc = sms(run, A, "BAL", "2025-03-02T12:00")
    assert doc["action"] == "balance"
    assert doc["result"]["status"] == "pending"
    assert doc["result"]["available"] == 0
    r = run("sms", A, "home_everywhere", "--at", "2025-03-02T12:00", "--json")
    assert r.exit_code == 1
    assert "2025-03-03T12:00:00+03:00" in json.loads(r.stdout)["reply"]


# ---------------------------------------------------------------- member texts, one by one


@pytest.mark.parametrize("text", ["BAL", "bal", "Bonus", "BONUS", "  bal  ", "\tBAL\t"])
def test_balance_texts(run, text):
    join(run, A, T0)
    doc = sms(run, A, text, "2025-03-01T13:00")
    assert doc["action"] == "balance"
    assert doc["result"] == bal(run, A, "2025-03-01T13:00")
    assert doc["result"]["available"] == 150
    assert "150" in doc["reply"]


@pytest.mark.parametrize("text", ["*111*455*0#", " *111*455*0# "])
def test_ussd_balance(run, text):
    join(run, A, T0)
    earn(run, A, "1000", "2025-03-01T12:30")  # 200
    doc = ussd(run, A, text, "2025-03-01T13:00")
    assert doc["action"] == "balance"
    assert doc["result"]["available"] == 350
    assert "350" in doc["reply"]


@pytest.mark.parametrize("text", ["PROGNOS", "prognos", " Prognos "])
def test_prognos_is_forecast(run, text):
    join(run, A, T0)  # 150 expiring 2026-03-01
    doc = sms(run, A, text, "2026-02-01T09:00")
    assert doc["action"] == "forecast"
    assert doc["result"] == run.j("forecast", A, "--at", "2026-02-01T09:00")
    assert doc["result"]["until"] == "2026-03-03"
    assert doc["result"]["lots"] == [{"expires_on": "2026-03-01", "points": 150}]
    assert doc["result"]["total"] == 150
    assert "150" in doc["reply"] and "2026-03-01" in doc["reply"]


def test_prognos_nothing_expiring(run):
    join(run, A, T0)
    doc = sms(run, A, "PROGNOS", "2025-03-02T09:00")
    assert doc["result"]["until"] == "2025-04-01"
    assert doc["result"]["lots"] == [] and doc["result"]["total"] == 0


def test_zero_leaves_and_forfeits(run, data_dir):
    join(run, A, T0)
    earn(run, A, "500", "2025-03-01T12:30")  # 100
    doc = sms(run, A, " 0 ", "2025-03-02T09:00")
    assert doc["action"] == "leave"
    assert doc["result"]["forfeited"] == 250
    assert "250" in doc["reply"]
    b = bal(run, A, "2025-03-02T09:00")
    assert b["status"] == "left" and b["available"] == 0


@pytest.mark.parametrize("text,region,price", [("turbo1gb", "RU-MOW", 875), ("TURBO1GB", "RU-SPE", 870),
                                               ("turbo_1gb", "RU-MOS", 875), (" Turbo_1GB ", "RU-SPE", 870)])
def test_reward_by_sms_text_or_code_at_region_price(run, region, price, text):
    join(run, A, T0, region)
    earn(run, A, "5000", "2025-03-01T12:30")  # 1000 -> 1150
    doc = sms(run, A, text, "2025-03-02T09:00")
    assert doc["action"] == "redeem"
    assert doc["result"]["code"] == "turbo_1gb"
    assert doc["result"]["points_spent"] == price
    assert doc["result"]["balance"] == 1150 - price
    assert doc["result"]["active_until"] == "2025-05-01T09:00:00+03:00"  # 60 x 24 h
    assert str(1150 - price) in doc["reply"]
    assert [r["code"] for r in bal(run, A, "2025-03-02T09:00")["active_rewards"]] == ["turbo_1gb"]


@pytest.mark.parametrize("region,price", [("RU-BRY", 85), ("RU-MOS", 210), ("RU-SPE", 100)])
def test_reward_code_by_sms(run, region, price):
    join(run, A, T0, region)
    earn(run, A, "500", "2025-03-01T12:30")  # 100 -> 250
    doc = sms(run, A, "minutes_30", "2025-03-01T13:00")
    assert doc["result"]["points_spent"] == price and doc["result"]["balance"] == 250 - price


def test_reward_without_activation_text_ordered_by_code(run):
    join(run, A, T0)
    earn(run, A, "2000", "2025-03-01T12:30")  # 400 -> 550
    doc = sms(run, A, "home_everywhere", "2025-03-01T13:00")
    assert doc["result"]["code"] == "home_everywhere"
    assert doc["result"]["points_spent"] == 400 and doc["result"]["balance"] == 150
    assert doc["result"]["active_until"] == "2025-03-31T13:00:00+03:00"


@pytest.mark.parametrize("code,reward,price", [("*111*455*11#", "minutes_30", 100), ("*111*455*22#", "sms_50", 230),
                                               ("*111*1006#", "mts_online", 130), ("*111*345*2#", "vnet", 220)])
def test_reward_by_ussd_code(run, code, reward, price):
    join(run, D, T0, "RU-SPE")
    earn(run, D, "1000", "2025-03-01T12:30")  # 200 -> 350
    doc = ussd(run, D, code, "2025-03-01T13:00")
    assert doc["action"] == "redeem"
    assert doc["result"]["code"] == reward
    assert doc["result"]["points_spent"] == price and doc["result"]["balance"] == 350 - price


def test_ussd_order_too_few_points_says_how_many_missing(run, data_dir):
    join(run, A, T0)  # 150; minutes_30 is 210 in Moscow
    before = snapshot(data_dir, A)
    doc = ussd(run, A, "*111*455*11#", "2025-03-01T13:00", code=1)
    assert doc["action"] == "redeem"
    assert "60" in doc["reply"]
    assert snapshot(data_dir, A) == before


# ---------------------------------------------------------------- channel rules: web-only and store-only rewards


def test_partner_certificate_by_sms_is_refused(run, data_dir):
    join(run, A, T0)
    earn(run, A, "30000", "2025-03-01T12:30")  # 6000 -> 6150, enough for 5000
    before = snapshot(data_dir, A)
    doc = sms(run, A, "cert_sportmaster_500", "2025-03-01T13:00", code=1)
    assert doc["action"] == "redeem"
    assert doc["result"] is None
    direct = run("redeem", A, "cert_sportmaster_500", "--via", "sms", "--at", "2025-03-01T13:00", "--json")
    assert direct.exit_code == 1
    assert err_of(direct)["kind"] == doc["error"]["kind"]
    assert snapshot(data_dir, A) == before
    assert bal(run, A, "2025-03-01T13:00")["available"] == 6150
    # the same certificate on the web is fine: the refusal was the channel's
    assert run.j("redeem", A, "cert_sportmaster_500", "--at", "2025-03-01T14:00")["balance"] == 1150


def test_partner_certificate_human_reply_one_line(run):
    join(run, A, T0)
    earn(run, A, "30000", "2025-03-01T12:30")
    line = chan(run, "sms", A, "CERT_LETOILE_1000", "2025-03-01T13:00", code=1)
    assert "sms" in line.lower()


def test_store_discount_by_sms_is_refused(run, data_dir):
    join(run, A, T0)
    before = snapshot(data_dir, A)
    doc = sms(run, A, "store_discount", "2025-03-01T13:00", code=1)
    assert doc["action"] == "redeem"
    assert snapshot(data_dir, A) == before


# ---------------------------------------------------------------- gift refusals are gift's


def gift_scene(run):
    join(run, A, T0)
    join(run, B, T0)
    join(run, C, T0, "RU-BRY")


@pytest.mark.parametrize("text,direct", [
    (f"DAR {A} 10", [A, A, "10"]),  # to oneself
    (f"DAR {C} 10", [A, C, "10"]),  # another region
    (f"DAR {D} 10", [A, D, "10"]),  # not a member
    (f"DAR {B} 151", [A, B, "151"]),  # more than held
    (f"PRESENT {B} 0", [A, B, "0"]),  # at least 1 point: a non-positive count is bad input (exit 2)
])
def test_gift_refusals_exit_as_gift(run, data_dir, text, direct):
    gift_scene(run)
    before = snapshot(data_dir, A, B, C, D)
    code = 2 if direct[2] == "0" else 1
    doc = sms(run, A, text, "2025-03-02T09:00", code=code)
    assert doc["action"] == "gift"
    assert doc["result"] is None
    r = run("gift", *direct, "--at", "2025-03-02T09:00", "--json")
    assert r.exit_code == code
    assert err_of(r)["kind"] == doc["error"]["kind"]
    assert snapshot(data_dir, A, B, C, D) == before


def test_second_gift_same_day_refused(run):
    gift_scene(run)
    sms(run, A, f"DAR {B} 10", "2025-03-02T09:00")
    doc = sms(run, A, f"DAR {B} 10", "2025-03-02T20:00", code=1)
    assert doc["action"] == "gift"
    assert run("gift", A, B, "10", "--at", "2025-03-02T20:00").exit_code == 1
    # next calendar day is fine
    assert sms(run, A, f"dar {B} 10", "2025-03-03T00:30")["result"]["balance"] == 130


def test_gift_to_malformed_phone_is_bad_input(run):
    gift_scene(run)
    doc = sms(run, A, "DAR 12345 10", "2025-03-02T09:00", code=2)
    assert doc["result"] is None
    assert run("gift", A, "12345", "10", "--at", "2025-03-02T09:00").exit_code == 2


# ---------------------------------------------------------------- junk


JUNK_SMS = ["hello", "00", "turbo3gb", "*111*455*0#", "\U0001F381\U0001F600",
            "привет", "x" * 5000, "hello\nworld"]


@pytest.mark.parametrize("text", JUNK_SMS, ids=lambda t: t[:12].encode("unicode_escape").decode())
def test_junk_sms_from_member(run, data_dir, text):
    join(run, A, T0)
    before = snapshot(data_dir, A)
    r = run("sms", A, text, "--at", "2025-03-01T13:00")
    assert r.exit_code == 2, (r.stdout[:200], r.stderr[:200])
    line = one_line(r)
    for word in SMS_HELP_WORDS:
        assert word in line, (word, line)
    assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1
    doc = sms(run, A, text, "2025-03-01T13:00", code=2)
    assert doc["action"] not in ACTIONS
    assert doc["result"] is None
    assert snapshot(data_dir, A) == before


@pytest.mark.parametrize("text", ["DAR", "DAR x y", "DAR 9167654321", "PRESENT 9167654321 many", "dar 10"])
def test_junk_gift_texts_explain_the_gift_text(run, data_dir, text):
    join(run, A, T0)
    join(run, B, T0)
    before = snapshot(data_dir, A, B)
    line = chan(run, "sms", A, text, "2025-03-01T13:00", code=2)
    assert "<phone>" in line and "<points>" in line, line
    assert snapshot(data_dir, A, B) == before


@pytest.mark.parametrize("code", ["*999#", "*111*455*99#", "*111*455#", "hello", "BAL", "\U0001F4DE", "*" * 3000],
                         ids=lambda t: t[:12].encode("unicode_escape").decode())
def test_junk_ussd_from_member(run, data_dir, code):
    join(run, A, T0)
    before = snapshot(data_dir, A)
    line = chan(run, "ussd", A, code, "2025-03-01T13:00", code=2)
    assert "*111*455*0#" in line
    doc = ussd(run, A, code, "2025-03-01T13:00", code=2)
    assert doc["result"] is None
    assert snapshot(data_dir, A) == before


def test_reward_without_ussd_code_is_no_ussd_code(run):
    """turbo_1gb has no USSD code: its SMS text dialled as USSD is not understood (exit 2)."""
    join(run, A, T0)
    chan(run, "ussd", A, "turbo1gb", "2025-03-01T13:00", code=2)


def test_very_long_junk_reply_stays_short(run):
    """Answers are one *short* line, as the operator would send (issue 8): junk is not echoed in full."""
    join(run, A, T0)
    r = run("sms", A, "x" * 10000, "--at", "2025-03-01T13:00")
    assert r.exit_code == 2
    assert len(one_line(r)) <= 500


# ---------------------------------------------------------------- human output: one line for every action


def test_every_action_replies_one_line(run):
    assert "150" in chan(run, "sms", A, "start", T0, "--region", "RU-MOW")
    join(run, B, T0)
    earn(run, A, "5000", "2025-03-01T12:30")  # 1150
    assert "1150" in chan(run, "sms", A, "BAL", "2025-03-01T13:00")
    assert "1150" in chan(run, "ussd", A, "*111*455*0#", "2025-03-01T13:00")
    chan(run, "sms", A, "PROGNOS", "2026-02-20T09:00")
    chan(run, "sms", A, "PROGNOS", "2025-03-01T13:00")
    assert "275" in chan(run, "sms", A, "turbo1gb", "2025-03-01T14:00")
    assert "65" in chan(run, "ussd", A, "*111*455*11#", "2025-03-01T15:00")  # 275 - 210
    chan(run, "sms", A, f"DAR {B} 15", "2025-03-01T16:00")
    chan(run, "sms", A, f"DAR {B} 15", "2025-03-01T17:00", code=1)
    chan(run, "sms", A, "0", "2025-03-02T09:00")
    chan(run, "sms", A, "0", "2025-03-02T10:00", code=1)


# ---------------------------------------------------------------- real processes: exit codes, never a traceback


def test_subprocess_exit_codes_and_no_traceback(sub):
    r = sub(["sms", A, "hello", "--at", T0])  # a non-member's join text without --region
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stdout.count("\n") == 1
    assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1
    assert "Traceback" not in r.stdout + r.stderr
    r = sub(["sms", A, "0", "--at", T0, "--json"])  # not a member
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert json.loads(r.stderr)["error"]["code"] == 1
    assert "Traceback" not in r.stdout + r.stderr
    assert sub(["ussd", A, "*455*1#", "--region", "RU-MOW", "--at", T0]).returncode == 0
    for text in ["\U0001F381 " + "x" * 3000, "DAR x y"]:
        r = sub(["sms", A, text, "--at", "2025-03-01T13:00", "--json"])
        assert r.returncode == 2, (r.stdout[:300], r.stderr[:300])
        assert "Traceback" not in r.stdout + r.stderr
        doc = json.loads(r.stdout)
        assert doc["result"] is None and "\n" not in doc["reply"]
        assert json.loads(r.stderr)["error"]["code"] == 2
