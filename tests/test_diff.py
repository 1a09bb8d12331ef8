"""`bonuscli diff OLD NEW [--ledgers | --scenario FILE] [--fail-on KIND,...]` (docs/ci.md).

Every expected figure is worked out by hand from RULES.md and the catalog
defaults: welcome 150; mobile 5 RUB/point x tenure (1.0 up to 6 months ...
1.3 over 24); mts_store 3 RUB/point; minutes_30 costs 85 in Bryansk and 210 in
Moscow; gifts at most 3,000 points a calendar month; the store discount is 10
points per rouble.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CATALOG = ROOT / "catalog.yaml"
SCENARIOS = ROOT / "scenarios"


def variant(tmp_path: Path, *replacements, name="new.yaml") -> Path:
    text = CATALOG.read_text()
    for old, new in replacements:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    out = tmp_path / name
    out.write_text(text)
    return out


def snapshot(data_dir: Path) -> dict:
    d = data_dir / "ledgers"
    return {p.name: p.read_bytes() for p in sorted(d.glob("*"))} if d.exists() else {}


def members(doc) -> dict:
    return {m["phone"]: (m["available_old"], m["available_new"]) for m in doc["impact"]["members"]}


BRY_85_TO_95 = ("region_prices: {RU-MOW: 210, RU-MOS: 210, RU-BRY: 85}",
                "region_prices: {RU-MOW: 210, RU-MOS: 210, RU-BRY: 95}")
TENURE_OLD = ('    - {up_to_months: 24, coefficient: "1.2"}\n'
              '    - {up_to_months: null, coefficient: "1.3"}\n')
TENURE_NEW = ('    - {up_to_months: 24, coefficient: "1.2"}\n'
              '    - {up_to_months: 36, coefficient: "1.3"}\n'
              '    - {up_to_months: null, coefficient: "1.5"}\n')


# ---------------------------------------------------------------- a repriced reward in one region


def build_bryansk(run):
    for phone, region in (("9170000001", "RU-BRY"), ("9170000003", "RU-BRY"), ("9170000004", "RU-MOW")):
        run.ok("join", phone, "--region", region, "--at", "2025-03-03T10:00")
    run.ok("redeem", "9170000001", "minutes_30", "--at", "2025-03-04T10:00")                       # 150 - 85
    run.ok("redeem", "9170000003", "store_discount", "--via", "store", "--price", "100", "--points", "60",
           "--at", "2025-03-04T10:00")                                                              # 150 - 60
    run.ok("redeem", "9170000003", "minutes_30", "--at", "2025-03-04T11:00")                       # 90 - 85


def test_repriced_reward_in_one_region(run, tmp_path, data_dir):
    new = variant(tmp_path, BRY_85_TO_95)
    build_bryansk(run)
    before = snapshot(data_dir)
    doc = run.j("diff", CATALOG, new, "--ledgers", "--at", "2025-03-05T10:00")
    assert doc["changes"] == [{"kind": "price-increase", "what": "minutes_30@RU-BRY", "old": 85, "new": 95}]
    assert members(doc) == {"9170000001": (65, 55),      # 150 - 85 | 150 - 95
                            "9170000003": (5, 90),       # 90 - 85 | 90: 95 is no longer affordable
                            "9170000004": (150, 150)}    # Moscow: untouched
    total = doc["impact"]["total"]
    assert (total["available_old"], total["available_new"]) == (220, 295)
    assert (total["earned_old"], total["earned_new"]) == (450, 450)
    assert (total["spent_old"], total["spent_new"]) == (230, 155)
    nla = doc["impact"]["no_longer_affordable"]
    assert [(u["phone"], u["at"], u["code"], u["points_old"]) for u in nla] == [
        ("9170000003", "2025-03-04T11:00:00+03:00", "minutes_30", 85)]
    assert "5 more needed" in nla[0]["message"]
    assert [(o["phone"], o["command"], o["old"], o["new"]) for o in doc["impact"]["outcome_changes"]] == [
        ("9170000003", "redeem", "ok", "insufficient-points")]
    assert doc["impact"]["as_of"] == "2025-03-05T10:00:00+03:00"
    assert snapshot(data_dir) == before    # diff never writes to the data dir


def test_fail_on_price_increase(run, tmp_path):
    new = variant(tmp_path, BRY_85_TO_95)
    r = run("diff", CATALOG, new, "--fail-on", "price-increase")
    assert r.exit_code == 1
    assert r.stderr == "error: 1 change of a kind named in --fail-on: price-increase\n"
    assert re.search(r"^price-increase\s+minutes_30@RU-BRY\s+85\s+95$", r.stdout, re.M)
    r = run("diff", CATALOG, new, "--fail-on", "price-decrease,reward-removed")
    assert r.exit_code == 0 and r.stderr == ""
    # the reverse change is a decrease
    r = run("diff", new, CATALOG, "--fail-on", "price-decrease", "--json")
    assert r.exit_code == 1
    assert r.json["changes"] == [{"kind": "price-decrease", "what": "minutes_30@RU-BRY", "old": 95, "new": 85}]
    assert r.json["failed_on"] == ["price-decrease"]
    assert json.loads(r.stderr)["error"] == {"code": 1, "kind": "fail-on",
                                             "message": "1 change of a kind named in --fail-on: price-decrease"}


def test_region_price_removed_falls_back_to_default(run, tmp_path):
    new = variant(tmp_path, ("region_prices: {RU-MOW: 300, RU-MOS: 300}", "region_prices: {RU-MOW: 300}"))
    doc = run.j("diff", CATALOG, new)
    assert doc["changes"] == [{"kind": "price-decrease", "what": "minutes_60@RU-MOS", "old": 300, "new": 150}]


# ---------------------------------------------------------------- a new tenure step


def test_new_tenure_step(run, tmp_path):
    new = variant(tmp_path, (TENURE_OLD, TENURE_NEW))
    for phone, since in (("9171000001", "2020-01-01"), ("9171000002", "2023-01-01"), ("9171000003", "2022-03-02")):
        run.ok("join", phone, "--region", "RU-MOW", "--customer-since", since, "--at", "2025-03-01T10:00")
    run.ok("earn", "9171000001", "1000", "--category", "mobile", "--at", "2025-03-02T10:00")   # 62 months
    run.ok("earn", "9171000002", "1000", "--category", "mobile", "--at", "2025-03-02T10:00")   # 26 months
    run.ok("earn", "9171000003", "1000", "--category", "mobile", "--at", "2025-03-02T10:00")   # exactly 36
    run.ok("earn", "9171000003", "1000", "--category", "mobile", "--at", "2025-03-03T10:00")   # more than 36
    doc = run.j("diff", CATALOG, new, "--ledgers", "--at", "2025-03-05T10:00")
    assert doc["changes"] == [{
        "kind": "tenure-change", "what": "earning.tenure",
        "old": [{"up_to_months": 6, "coefficient": "1.0"}, {"up_to_months": 12, "coefficient": "1.1"},
                {"up_to_months": 24, "coefficient": "1.2"}, {"up_to_months": None, "coefficient": "1.3"}],
        "new": [{"up_to_months": 6, "coefficient": "1.0"}, {"up_to_months": 12, "coefficient": "1.1"},
                {"up_to_months": 24, "coefficient": "1.2"}, {"up_to_months": 36, "coefficient": "1.3"},
                {"up_to_months": None, "coefficient": "1.5"}]}]
    # 1000 x 1.3 / 5 = 260; 1000 x 1.5 / 5 = 300
    assert members(doc) == {"9171000001": (410, 450), "9171000002": (410, 410), "9171000003": (670, 710)}
    t = doc["impact"]["total"]
    assert (t["available_old"], t["available_new"], t["change"]) == (1490, 1570, 80)
    assert {m["phone"]: (m["earned_old"], m["earned_new"]) for m in doc["impact"]["members"]} == {
        "9171000001": (410, 450), "9171000002": (410, 410), "9171000003": (670, 710)}
    assert doc["impact"]["outcome_changes"] == []
    r = run("diff", CATALOG, new, "--fail-on", "tenure-change")
    assert r.exit_code == 1
    r = run("diff", CATALOG, new, "--fail-on", "price-increase,rate-change,tier-change")
    assert r.exit_code == 0


# ---------------------------------------------------------------- a stricter gift limit


def test_stricter_gift_limit(run, tmp_path):
    new = variant(tmp_path, ("per_month_points: 3000\n", "per_month_points: 1000\n"))
    a, b = "9172000001", "9172000002"
    run.ok("join", a, "--region", "RU-MOW", "--at", "2025-03-03T10:00")
    run.ok("join", b, "--region", "RU-MOW", "--at", "2025-03-03T10:00")
    run.ok("earn", a, "6000", "--category", "mts_store", "--at", "2025-03-03T11:00")      # 2000
    g = run.j("gift", a, b, "1500", "--at", "2025-03-04T10:00")
    run.ok("accept", b, g["gift_id"], "--at", "2025-03-05T10:00")
    run.ok("gift", a, b, "500", "--at", "2025-03-06T10:00")                                 # left pending
    doc = run.j("diff", CATALOG, new, "--ledgers", "--at", "2025-03-10T10:00")
    assert doc["changes"] == [{"kind": "limit-change", "what": "gifts.per_month_points", "old": 3000, "new": 1000}]
    # old: a 2150 - 1500 - 500 (held) = 150, b 150 + 1500; new: the 1500 gift is refused, the 500 one is not
    assert members(doc) == {a: (150, 1650), b: (1650, 150)}
    t = doc["impact"]["total"]
    assert (t["available_old"], t["available_new"]) == (1800, 1800)
    changes = [(o["phone"], o["command"], o["old"], o["new"]) for o in doc["impact"]["outcome_changes"]]
    assert changes == [(a, "gift", "ok", "limit-reached"), (b, "accept", "ok", "gift-not-found")]
    assert doc["impact"]["no_longer_affordable"] == []
    r = run("diff", CATALOG, new, "--fail-on", "limit-change")
    assert r.exit_code == 1


# ---------------------------------------------------------------- a changed earning rate


def build_rate(run):
    run.ok("join", "9173000001", "--region", "RU-MOW", "--at", "2025-03-03T10:00")
    run.ok("join", "9173000002", "--region", "RU-SPE", "--at", "2025-03-03T10:00")
    run.ok("earn", "9173000001", "1000", "--category", "mobile", "--at", "2025-03-04T10:00")
    run.ok("earn", "9173000002", "999", "--category", "mobile", "--ref", "t1", "--at", "2025-03-04T10:00")
    run.ok("earn", "9173000002", "999", "--category", "mobile", "--ref", "t1", "--at", "2025-03-04T10:01")  # dup
    run.ok("earn", "9173000002", "100", "--category", "taxi", "--at", "2025-03-04T11:00")


def test_changed_earning_rate_with_ledgers(run, tmp_path, data_dir):
    new = variant(tmp_path, ("    mobile: {rub_per_point: 5, tenure: true,", "    mobile: {rub_per_point: 4, tenure: true,"))
    build_rate(run)
    before = snapshot(data_dir)
    doc = run.j("diff", CATALOG, new, "--ledgers", "--at", "2025-03-05T10:00")
    assert doc["changes"] == [{"kind": "rate-change", "what": "mobile", "old": 5, "new": 4}]
    # 1000/5 = 200 vs 1000/4 = 250; 999/5 = 199.8 -> 199 vs 999/4 = 249.75 -> 249 (once: the ref repeats); taxi 20
    assert members(doc) == {"9173000001": (350, 400), "9173000002": (369, 419)}
    assert {m["phone"]: (m["earned_old"], m["earned_new"]) for m in doc["impact"]["members"]} == {
        "9173000001": (350, 400), "9173000002": (369, 419)}
    t = doc["impact"]["total"]
    assert (t["available_old"], t["available_new"], t["change"], t["members"]) == (719, 819, 100, 2)
    assert snapshot(data_dir) == before
    # as of an earlier instant, only what had happened by then
    doc = run.j("diff", CATALOG, new, "--ledgers", "--at", "2025-03-04T10:30")
    assert members(doc) == {"9173000001": (350, 400), "9173000002": (349, 399)}


def test_changed_earning_rate_human_output(run, tmp_path):
    new = variant(tmp_path, ("    mobile: {rub_per_point: 5, tenure: true,", "    mobile: {rub_per_point: 4, tenure: true,"))
    build_rate(run)
    r = run("diff", CATALOG, new, "--ledgers", "--at", "2025-03-05T10:00")
    assert r.exit_code == 0, r.stderr
    out = r.stdout
    assert re.search(r"^rate-change\s+mobile\s+5\s+4$", out, re.M)
    assert "impact as of 2025-03-05T10:00:00+03:00 (2 members, 5 requests replayed)" in out
    assert re.search(r"^9173000001\s+350\s+400\s+\+50\s+350\s+400$", out, re.M)
    assert re.search(r"^9173000002\s+369\s+419\s+\+50\s+369\s+419$", out, re.M)
    assert re.search(r"^total\s+719\s+819\s+\+100\s+719\s+819$", out, re.M)


# ---------------------------------------------------------------- --scenario


def test_scenario_members_under_both_catalogs(run, tmp_path, data_dir):
    new = variant(tmp_path, ("region_prices: {RU-MOW: 210, RU-MOS: 210, RU-BRY: 85}",
                             "region_prices: {RU-MOW: 250, RU-MOS: 210, RU-BRY: 85}"))
    # without --at (nor BONUSCLI_NOW) the impact is as of the scenario's last instant
    doc = run.j("diff", CATALOG, new, "--scenario", SCENARIOS / "redeem_prices.yaml", env={"BONUSCLI_NOW": None})
    assert doc["changes"] == [{"kind": "price-increase", "what": "minutes_30@RU-MOW", "old": 210, "new": 250}]
    imp = doc["impact"]
    assert imp["as_of"] == "2025-04-04T09:00:00+03:00"   # the scenario's last instant
    # Moscow member: 1150 - 210 - 300 - 180 - 210 - 220 = 30 | 1150 - 250 - 300 - 180 - 250 = 170, vnet refused
    assert members(doc) == {"9167100001": (30, 170), "9167100002": (940, 940), "9167100003": (685, 685),
                            "9167100004": (110, 110), "9167100005": (250, 250)}
    assert [(u["phone"], u["code"], u["points_old"]) for u in imp["no_longer_affordable"]] == [
        ("9167100001", "vnet", 220)]
    assert not (data_dir / "ledgers").exists()
    # --at picks another instant of the story: after the first three Moscow orders
    doc = run.j("diff", CATALOG, new, "--scenario", SCENARIOS / "redeem_prices.yaml", "--at", "2025-03-04T10:05")
    assert members(doc)["9167100001"] == (460, 420)   # 1150 - 210 - 300 - 180 | 1150 - 250 - 300 - 180


def test_scenario_invalid_is_exit_3(run, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps:\n  - at: 2025-03-03\n    jump: {}\n")
    r = run("diff", CATALOG, CATALOG, "--scenario", bad)
    assert r.exit_code == 3
    assert f"{bad}:3: step 1: unknown command 'jump'" in r.stderr


# ---------------------------------------------------------------- every kind of change


def test_many_kinds_of_change(run, tmp_path):
    new = variant(
        tmp_path,
        ("  - code: mts_press\n    name: MTS Press\n    category: content\n    price: 150\n    region_prices: {}\n"
         "    validity_days: 30\n    ussd: null\n    sms: null\n    channels: [web, app, sms]\n    limits: []\n", ""),
        ("  - code: mts_music\n", "  - code: mts_kids\n    name: MTS Kids\n    category: content\n    price: 120\n"
         "    region_prices: {}\n    validity_days: 30\n    ussd: null\n    sms: null\n    channels: [web, app]\n"
         "    limits: []\n  - code: mts_music\n"),
        ("referral: 50 ", "referral: 75 "),
        ('    - {up_to_rub: "15000.00", rub_per_point: 30}', '    - {up_to_rub: "10000.00", rub_per_point: 30}'),
        ("certificate: {name: Partner certificates, limits: [{per: month, max: 1}]}",
         "certificate: {name: Partner certificates, limits: [{per: month, max: 2}]}"),
        ("limits: [{per: ever, max: 1}]", "limits: [{per: year, max: 1}]"),
        ("web: {hours: 48} ", "web: {hours: 72} "),
        ("points_validity_months: 12 ", "points_validity_months: 24 "),
        ("closing_date: null ", 'closing_date: "2026-12-31" '),
        ("accept_days: 30 ", "accept_days: 14 "),
        ("  points_per_rub: 10\n", "  points_per_rub: 12\n"),
    )
    doc = run.j("diff", CATALOG, new)
    got = {(c["kind"], c["what"]): (c["old"], c["new"]) for c in doc["changes"]}
    assert got == {
        ("closing-change", "program.closing_date"): (None, "2026-12-31"),
        ("expiry-change", "program.points_validity_months"): (12, 24),
        ("activation-change", "join_methods.web"): ("48 hours", "72 hours"),
        ("bonus-change", "bonuses.referral"): (50, 75),
        ("tier-change", "earning.card_tiers"): (
            [{"up_to_rub": "15000.00", "rub_per_point": 30}, {"up_to_rub": "30000.00", "rub_per_point": 20},
             {"up_to_rub": None, "rub_per_point": 10}],
            [{"up_to_rub": "10000.00", "rub_per_point": 30}, {"up_to_rub": "30000.00", "rub_per_point": 20},
             {"up_to_rub": None, "rub_per_point": 10}]),
        ("gift-change", "gifts.accept_days"): (30, 14),
        ("price-increase", "store_discount.points_per_rub"): (10, 12),
        ("limit-change", "category:certificate"): ([{"per": "month", "max": 1}], [{"per": "month", "max": 2}]),
        ("limit-change", "book_first"): ([{"per": "ever", "max": 1}], [{"per": "year", "max": 1}]),
        ("reward-removed", "mts_press"): (150, None),
        ("reward-added", "mts_kids"): (None, 120),
    }
    assert len(doc["changes"]) == len(got)
    r = run("diff", CATALOG, new, "--fail-on", "reward-removed,bonus-change")
    assert r.exit_code == 1
    assert r.stderr == "error: 2 changes of a kind named in --fail-on: reward-removed, bonus-change\n"


def test_welcome_bonus_change_impact(run, tmp_path):
    new = variant(tmp_path, ("welcome: 150 ", "welcome: 100 "))
    run.ok("join", "9174000001", "--region", "RU-MOW", "--at", "2025-03-03T10:00")
    run.ok("join", "9174000002", "--region", "RU-MOW", "--method", "web", "--at", "2025-03-03T10:00")
    run.ok("join", "9174000003", "--region", "RU-MOW", "--referrer", "9174000001", "--at", "2025-03-03T11:00")
    doc = run.j("diff", CATALOG, new, "--ledgers", "--at", "2025-03-06T10:00")
    assert doc["changes"] == [{"kind": "bonus-change", "what": "bonuses.welcome", "old": 150, "new": 100}]
    # 150 + 50 referral | 100 + 50; web: 150 + 100 | 100 + 100
    assert members(doc) == {"9174000001": (200, 150), "9174000002": (250, 200), "9174000003": (150, 100)}


def test_identical_catalogs(run, data_dir):
    data_dir.mkdir(parents=True)  # an empty program (a missing data directory is exit 2, CLI.md §1)
    r = run("diff", CATALOG, CATALOG, "--fail-on", "price-increase")
    assert r.exit_code == 0
    assert r.stdout == "no changes\n"
    doc = run.j("diff", CATALOG, CATALOG, "--ledgers", "--at", "2025-03-05")
    assert doc["changes"] == [] and doc["failed_on"] == []
    assert doc["impact"]["members"] == [] and doc["impact"]["total"]["available_old"] == 0


# ---------------------------------------------------------------- errors


def test_invalid_new_catalog_is_exit_3(run, tmp_path):
    new = variant(tmp_path, ("welcome: 150 ", "welcome: -1 "))
    r = run("diff", CATALOG, new)
    assert r.exit_code == 3
    lines = r.stderr.splitlines()
    line = next(n for n, t in enumerate(new.read_text().splitlines(), start=1) if "welcome: -1" in t)
    assert lines[0].startswith(f"{new}:{line}: bonuses: welcome")
    assert lines[-1].startswith(f"error: invalid catalog {new}: 1 problem")
    r = run("diff", tmp_path / "missing.yaml", CATALOG)
    assert r.exit_code == 2  # a catalog file named that is not there: bad input
    assert "missing.yaml" in r.stderr


def test_invalid_catalog_subprocess_no_traceback(sub, tmp_path):
    new = tmp_path / "new.yaml"
    new.write_text("version: [1\n")
    r = sub(["diff", str(CATALOG), str(new), "--ledgers"])
    assert r.returncode == 3
    assert "Traceback" not in r.stderr
    assert r.stderr.splitlines()[0].startswith(f"{new}:")


@pytest.mark.parametrize("args", [["--fail-on", "price-hike"], ["--ledgers", "--scenario", "x.yaml"]])
def test_bad_usage_is_exit_2(run, args):
    r = run("diff", CATALOG, CATALOG, *args)
    assert r.exit_code == 2
    assert r.stderr.startswith("error: ")


# ---------------------------------------------------------------- the replay itself


@pytest.mark.parametrize("scenario,expected", [
    # final figures the scenarios themselves pin down (as of their last step)
    ("gifts.yaml", {"9167000001": 5050, "9167000002": 260, "9167000003": 150, "9167000004": 250,
                    "9167000005": 140}),
    ("leave_rejoin.yaml", {"9162000001": 100, "9162000002": 0}),
    ("referral.yaml", {"9161000001": 200, "9161000002": 0, "9161000005": 250, "9161000007": 0}),
])
def test_replay_under_the_same_catalog_reproduces_the_ledgers(run, scenario, expected):
    doc = run.j("diff", CATALOG, CATALOG, "--scenario", SCENARIOS / scenario, env={"BONUSCLI_NOW": None})
    assert members(doc) == {p: (v, v) for p, v in expected.items()}
    assert doc["impact"]["outcome_changes"] == []


def test_same_instant_requests_of_two_ledgers_keep_their_dependencies(run, tmp_path):
    """The invitee's phone sorts before the inviter's; both join at the same instant."""
    new = variant(tmp_path, ("welcome: 150 ", "welcome: 100 "))
    run.ok("join", "9179000009", "--region", "RU-MOW", "--at", "2025-03-03T10:00")
    run.ok("join", "9179000001", "--region", "RU-MOW", "--referrer", "9179000009", "--at", "2025-03-03T10:00")
    g = run.j("gift", "9179000009", "9179000001", "30", "--at", "2025-03-03T10:00")
    run.ok("accept", "9179000001", g["gift_id"], "--at", "2025-03-03T10:00")
    doc = run.j("diff", CATALOG, new, "--ledgers", "--at", "2025-03-04")
    # inviter: 150 + 50 - 30 | 100 + 50 - 30; invitee: 150 + 30 | 100 + 30
    assert members(doc) == {"9179000009": (170, 120), "9179000001": (180, 130)}
    assert doc["impact"]["outcome_changes"] == []


def test_refund_adjust_and_import_are_replayed(run, tmp_path):
    new = variant(tmp_path, ("welcome: 150 ", "welcome: 100 "))
    imp = tmp_path / "opening.csv"
    imp.write_text("phone,points,reason,ref,expires_on,region,at\n"
                   "9177000001,500,opening balance,imp-1,,RU-MOW,2025-03-03T10:00\n")
    run.ok("adjust", "--from", imp, "--at", "2025-03-03T10:00")           # joined without welcome points
    run.ok("join", "9177000002", "--region", "RU-MOW", "--at", "2025-03-03T10:00")
    run.ok("earn", "9177000002", "1000", "--category", "mobile", "--ref", "t", "--at", "2025-03-04T10:00")   # 200
    run.ok("redeem", "9177000002", "minutes_60", "--at", "2025-03-04T11:00")                               # 300
    run.ok("refund", "9177000002", "t", "--at", "2025-03-05T10:00")
    run.ok("adjust", "9177000001", "-100", "--reason", "correction", "--at", "2025-03-05T10:00")
    doc = run.j("diff", CATALOG, new, "--ledgers", "--at", "2025-03-06T10:00")
    # import: 500 - 100 in both; 9177000002 old: 350 - 300 = 50, refund takes 50, debt 150
    #                                       new: 300 - 300 = 0, refund takes 0, debt 200
    assert members(doc) == {"9177000001": (400, 400), "9177000002": (0, 0)}
    rows = {m["phone"]: m for m in doc["impact"]["members"]}
    assert (rows["9177000002"]["debt_old"], rows["9177000002"]["debt_new"]) == (150, 200)
    assert (rows["9177000001"]["earned_old"], rows["9177000001"]["earned_new"]) == (500, 500)
    assert doc["impact"]["outcome_changes"] == []
    assert doc["impact"]["requests"] == 7


def test_longer_validity_keeps_default_expiry_credits(run, tmp_path):
    new = variant(tmp_path, ("points_validity_months: 12 ", "points_validity_months: 24 "))
    run.ok("join", "9178000001", "--region", "RU-MOW", "--at", "2025-03-03T10:00")
    run.ok("adjust", "9178000001", "200", "--reason", "goodwill", "--at", "2025-03-04T10:00")
    run.ok("adjust", "9178000001", "50", "--reason", "promo", "--expires-on", "2025-12-31", "--at", "2025-03-04T11:00")
    doc = run.j("diff", CATALOG, new, "--ledgers", "--at", "2026-03-05T10:00")
    assert doc["changes"] == [{"kind": "expiry-change", "what": "program.points_validity_months", "old": 12, "new": 24}]
    # old: every lot is gone; new: 150 + 200 last 24 months, the promo 50 still ends on 2025-12-31
    assert members(doc) == {"9178000001": (0, 350)}
