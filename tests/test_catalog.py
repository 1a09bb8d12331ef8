"""Issue "Foundation": the shipped catalog, `catalog` and `check`, broken catalogs
reported as `file:line: message`, the catalog as plain typed data, and the
parsed-catalog cache.

Expected values come from RULES.md §5's table (written out by hand below), not
from the program's output; problem messages follow the wording of
bonuscli/catalog.py, and every expected line number is found in the edited
text itself.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import pickle
import resource
from decimal import Decimal
from pathlib import Path

import pytest

from bonuscli import catalog as catalog_mod
from bonuscli.model import Catalog, FilesError, Problem, Step

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "catalog.yaml"
SRC = SHIPPED.read_text(encoding="utf-8")
MIB4 = 4 * 1024 * 1024

# ---------------------------------------------------------------- RULES.md §5, by hand
# code -> category, default price, Moscow price (RU-MOW and RU-MOS), Bryansk price (RU-BRY),
# validity days, USSD code, SMS text (None where the table has an empty cell)
MOSCOW = ("RU-MOW", "RU-MOS")
BRYANSK = "RU-BRY"


def _row(cat, price, days, ussd=None, sms=None, moscow=None, bryansk=None):
    return {"category": cat, "price": price, "moscow": moscow, "bryansk": bryansk, "days": days,
            "ussd": ussd, "sms": sms}


TABLE = {
    "minutes_30": _row("calls", 100, 30, "*111*455*11#", moscow=210, bryansk=85),
    "minutes_60": _row("calls", 150, 30, "*111*455*12#", moscow=300),
    "sms_50": _row("messages", 230, 30, "*111*455*22#", moscow=180),
    "sms_100": _row("messages", 410, 30, "*111*455*23#", moscow=270),
    "mms_10": _row("messages", 70, 30, "*111*455*41#", moscow=60),
    "mts_online": _row("messages", 130, 30, "*111*1006#"),
    "vnet": _row("internet", 220, 14, "*111*345*2#"),
    "bit": _row("internet", 590, 30, "*111*252*1#"),
    "superbit": _row("internet", 830, 30, "*111*628*1#", moscow=990),
    "turbo_100mb": _row("internet", 150, 60, sms="turbo100mb"),
    "turbo_500mb": _row("internet", 475, 60, sms="turbo500mb"),
    "turbo_1gb": _row("internet", 870, 60, sms="turbo1gb", moscow=875),
    "turbo_2gb": _row("internet", 1500, 60, sms="turbo2gb"),
    "turbo_5gb": _row("internet", 2250, 60, sms="turbo5gb", moscow=2200),
    "home_everywhere": _row("roaming", 400, 30),
    "zero_without_borders": _row("roaming", 500, 30),
    "ultra_1m": _row("roaming", 1500, 30),
    "ultra_2m": _row("roaming", 2700, 60),
    "ultra_3m": _row("roaming", 3600, 90),
    "black_list": _row("options", 30, 7),
    "black_list_kids": _row("options", 130, 30),
    "ban_in_touch": _row("options", 70, 30),
    "anti_caller_id": _row("options", 80, 30),
    "voicemail": _row("options", 200, 30),
    "super_caller_id": _row("options", 6130, 30),
    "book_first": _row("content", 100, 30),
    "ivi_7": _row("content", 75, 7),
    "ivi_14": _row("content", 150, 14),
    "amediateka_7": _row("content", 150, 7),
    "amediateka_14": _row("content", 300, 14),
    "mts_tv_7": _row("content", 100, 7),
    "mts_tv_14": _row("content", 200, 14),
    "mts_press": _row("content", 150, 30),
    "mts_music": _row("content", 300, 30),
    "store_music": _row("content", 100, 30),
    "store_video": _row("content", 100, 30),
    "store_games": _row("content", 100, 30),
    "store_weather": _row("content", 100, 30),
    "store_horoscope": _row("content", 100, 30),
    "mgts_50": _row("home", 500, 30),
    "mgts_100": _row("home", 1000, 30),
    "mgts_150": _row("home", 1500, 30),
    "mgts_200": _row("home", 2000, 30),
    "mgts_250": _row("home", 2500, 30),
    "mgts_300": _row("home", 3000, 30),
    "bank_sms_info": _row("bank", 550, 30),
    "card_maintenance": _row("bank", 5500, 365),
    "cert_sportmaster_500": _row("certificate", 5000, 365),
    "cert_sportmaster_1000": _row("certificate", 10000, 365),
    "cert_sportmaster_3000": _row("certificate", 30000, 365),
    "cert_letoile_500": _row("certificate", 5000, 365),
    "cert_letoile_1000": _row("certificate", 10000, 365),
    "cert_letoile_3000": _row("certificate", 30000, 365),
    "cert_detsky_mir_500": _row("certificate", 5000, 365),
    "cert_detsky_mir_1000": _row("certificate", 10000, 365),
    "cert_detsky_mir_3000": _row("certificate", 30000, 365),
    "store_discount": _row("store", None, None),
}
CERTS = {c for c, r in TABLE.items() if r["category"] == "certificate"}


def expected_price(code, region=None):
    row = TABLE[code]
    if region in MOSCOW and row["moscow"] is not None:
        return row["moscow"]
    if region == BRYANSK and row["bryansk"] is not None:
        return row["bryansk"]
    return row["price"]


def expected_channels(code):
    """RULES.md §5 Channels: web+app+sms for all, ussd where there is a USSD code;
    certificates web/app only; the store discount only in the store."""
    if code == "store_discount":
        return ["store"]
    if code in CERTS:
        return ["app", "web"]
    return sorted(["web", "app", "sms"] + (["ussd"] if TABLE[code]["ussd"] else []))


def expected_limits(code):
    if code in CERTS:
        return [{"per": "month", "max": 1}]
    if code == "book_first":
        return [{"per": "ever", "max": 1}]
    return []


def test_table_written_out_in_full():
    assert len(TABLE) == 57


# ---------------------------------------------------------------- helpers


def line_of(text: str, needle: str, occurrence: int = 1) -> int:
    """1-based line of the `occurrence`-th appearance of needle in text."""
    pos = -1
    for _ in range(occurrence):
        pos = text.index(needle, pos + 1)
    return text[:pos].count("\n") + 1


def edited(tmp_path, old: str, new: str, name: str = "broken.yaml"):
    """A copy of the shipped catalog with one targeted edit; (path, text)."""
    assert SRC.count(old) == 1, f"edit target not unique: {old!r}"
    text = SRC.replace(old, new)
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p, text


def summary(path, n):
    return f"error: {path}: {n} problem{'s' if n != 1 else ''} in the catalog"


def assert_check_fails(run, path, lines):
    """`check --catalog path`: exit 3, exactly these problem lines then the one error line."""
    r = run("check", "--catalog", str(path))
    assert r.exit_code == 3, (r.exit_code, r.stdout, r.stderr)
    assert r.stdout == ""
    assert r.stderr.splitlines() == list(lines) + [summary(path, len(lines))]
    return r


def codes_of(rows):
    return sorted(d["code"] for d in rows)


# ---------------------------------------------------------------- 1. the shipped catalog


def test_check_passes_shipped_catalog(run):
    r = run("check")
    assert (r.exit_code, r.stdout, r.stderr) == (0, "", "")


def test_check_passes_shipped_catalog_explicitly_subprocess(sub):
    r = sub(["check", "--catalog", str(SHIPPED)])
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")


def test_catalog_json_lists_every_reward_of_the_table(run):
    rows = run.j("catalog")
    assert isinstance(rows, list)
    codes = [d["code"] for d in rows]
    assert len(codes) == len(set(codes)) == 57
    assert sorted(codes) == sorted(TABLE)
    for d in rows:
        code = d["code"]
        row = TABLE[code]
        assert {"code", "name", "category", "price", "validity_days", "activation", "channels",
                "limits"} <= set(d), code
        assert isinstance(d["name"], str) and d["name"].strip(), code
        assert d["category"] == row["category"], code
        assert d["price"] == row["price"], code
        assert d["validity_days"] == row["days"], code
        assert d["activation"] == {"ussd": row["ussd"], "sms": row["sms"]}, code
        assert isinstance(d["channels"], list), code
        assert sorted(d["channels"]) == expected_channels(code), code
        assert d["limits"] == expected_limits(code), code
        if d["price"] is not None:
            assert type(d["price"]) is int and d["price"] > 0, code


def test_store_discount_entry(run):
    d = run.j("catalog", "store_discount")
    assert d["price"] is None
    assert d["points_per_rub"] == 10
    assert d["max_share"] == "0.99"
    assert d["category"] == "store"
    assert d["channels"] == ["store"]
    listed = {x["code"]: x for x in run.j("catalog")}["store_discount"]
    assert (listed["price"], listed["points_per_rub"], listed["max_share"]) == (None, 10, "0.99")


def test_certificates_category_limit_on_each_reward(run):
    rows = {d["code"]: d for d in run.j("catalog")}
    for code in CERTS:
        assert sorted(rows[code]["channels"]) == ["app", "web"], code
        assert rows[code]["limits"] == [{"per": "month", "max": 1}], code
    assert rows["book_first"]["limits"] == [{"per": "ever", "max": 1}]
    assert rows["minutes_30"]["limits"] == []


# ---------------------------------------------------------------- 2. regional prices and filters


@pytest.mark.parametrize("region,price", [
    ("RU-BRY", 85), ("RU-MOW", 210), ("RU-MOS", 210), ("RU-SPE", 100), ("RU-TA", 100), (None, 100),
])
def test_minutes_30_price_by_region(run, region, price):
    args = ("--region", region) if region else ()
    rows = {d["code"]: d for d in run.j("catalog", *args)}
    assert rows["minutes_30"]["price"] == price
    one = run.j("catalog", "minutes_30", *args)
    assert one["price"] == price


def test_more_regional_prices(run):
    # One test, many look-ups: the catalog cache of this test's data dir makes them cheap.
    for code, region, price in [
        ("superbit", "RU-MOW", 990), ("superbit", "RU-MOS", 990), ("superbit", "RU-BRY", 830),
        ("sms_50", "RU-MOW", 180), ("sms_50", None, 230), ("turbo_1gb", "RU-MOW", 875),
        ("turbo_1gb", "RU-SPE", 870), ("turbo_5gb", "RU-MOS", 2200), ("minutes_60", "RU-BRY", 150),
        ("mms_10", "RU-MOS", 60), ("sms_100", "RU-MOW", 270), ("minutes_60", "RU-MOW", 300),
    ]:
        args = ("--region", region) if region else ()
        assert run.j("catalog", code, *args)["price"] == price, (code, region)


def test_every_price_in_every_kind_of_region(run):
    for region in (None, "RU-MOW", "RU-MOS", "RU-BRY", "RU-SPE", "RU-KAM"):
        args = ("--region", region) if region else ()
        got = {d["code"]: d["price"] for d in run.j("catalog", *args)}
        assert got == {code: expected_price(code, region) for code in TABLE}, region


def test_region_code_case_insensitive(run):
    for spelling, price in [("ru-bry", 85), ("Ru-Mow", 210), ("ru-mos", 210), ("ru-spe", 100), ("rU-BrY", 85)]:
        rows = {d["code"]: d for d in run.j("catalog", "--region", spelling)}
        assert rows["minutes_30"]["price"] == price, spelling
        assert run.j("catalog", "minutes_30", "--region", spelling)["price"] == price, spelling


def test_catalog_code_shows_one_reward_in_full(run):
    d = run.j("catalog", "minutes_30")
    assert isinstance(d, dict)
    assert d["code"] == "minutes_30"
    assert d["category"] == "calls"
    assert d["price"] == 100
    assert d["validity_days"] == 30
    assert d["activation"] == {"ussd": "*111*455*11#", "sms": None}
    assert sorted(d["channels"]) == ["app", "sms", "ussd", "web"]
    assert d["limits"] == []
    human = run.ok("catalog", "minutes_30")
    for piece in ("minutes_30", "calls", "100", "30", "*111*455*11#", d["name"]):
        assert piece in human.stdout, piece
    assert human.stderr == ""


def test_catalog_code_in_full_for_a_certificate(run):
    d = run.j("catalog", "cert_letoile_1000", "--region", "RU-MOW")
    assert (d["code"], d["category"], d["price"], d["validity_days"]) == ("cert_letoile_1000", "certificate",
                                                                          10000, 365)
    assert d["activation"] == {"ussd": None, "sms": None}
    assert sorted(d["channels"]) == ["app", "web"]
    assert d["limits"] == [{"per": "month", "max": 1}]


def test_catalog_bad_input_exit_2(run):
    for args in [
        ("catalog", "minutes_300"),
        ("catalog", "MINUTES_30"),
        ("catalog", "--region", "RU-XXX"),
        ("catalog", "--region", "MOW"),
        ("catalog", "minutes_30", "--region", "RU-ZZZ"),
        ("catalog", "--category", "bogus"),
        ("catalog", "--channel", "fax"),
    ]:
        r = run(*args)
        assert r.exit_code == 2, (args, r.exit_code, r.stdout, r.stderr)
        assert r.stdout == "", args
        assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, (args, r.stderr)


def test_catalog_unknown_code_and_region_subprocess(sub):
    for args in (["catalog", "nothing_here"], ["catalog", "--region", "RU-XXX"]):
        r = sub(args)
        assert r.returncode == 2
        assert r.stdout == ""
        assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1
        assert "Traceback" not in r.stderr
    r = sub(["catalog", "nothing_here", "--json"])
    assert r.returncode == 2
    err = json.loads(r.stderr)["error"]
    assert err["code"] == 2


def _by_category(cat):
    return sorted(c for c, r in TABLE.items() if r["category"] == cat)


def test_filter_category(run):
    for cat in ["calls", "messages", "internet", "roaming", "options", "content", "home", "bank",
                "certificate", "store"]:
        assert codes_of(run.j("catalog", "--category", cat)) == _by_category(cat), cat
    assert codes_of(run.j("catalog", "--category", "calls")) == ["minutes_30", "minutes_60"]


def test_filter_search(run):
    for text, expected in [
        ("turbo", ["turbo_100mb", "turbo_1gb", "turbo_2gb", "turbo_500mb", "turbo_5gb"]),
        ("TURBO", ["turbo_100mb", "turbo_1gb", "turbo_2gb", "turbo_500mb", "turbo_5gb"]),
        ("cert_", sorted(CERTS)),
        ("mgts_", ["mgts_100", "mgts_150", "mgts_200", "mgts_250", "mgts_300", "mgts_50"]),
        ("cert_sportmaster", ["cert_sportmaster_1000", "cert_sportmaster_3000", "cert_sportmaster_500"]),
        ("zzzz-no-such-reward", []),
    ]:
        assert codes_of(run.j("catalog", "--search", text)) == sorted(expected), text


def test_filter_max_price(run):
    for region, limit in [(None, 100), (None, 29), (None, 30), ("RU-MOW", 100), ("RU-BRY", 85),
                          ("RU-BRY", 84), (None, 1000), ("RU-MOS", 990)]:
        args = ("--region", region) if region else ()
        expected = sorted(c for c in TABLE if expected_price(c, region) is not None
                          and expected_price(c, region) <= limit)
        got = run.j("catalog", "--max-price", limit, *args)
        assert codes_of(got) == expected, (region, limit)
        assert all(d["price"] <= limit for d in got)
    assert codes_of(run.j("catalog", "--max-price", 30)) == ["black_list"]
    assert run.j("catalog", "--max-price", 29) == []


def test_filter_max_price_hand_counted(run):
    # RULES.md §5: prices <= 100 by default: minutes_30, mms_10, black_list, ban_in_touch,
    # anti_caller_id, book_first, ivi_7, mts_tv_7 and the five mobile-content stores.
    assert len(run.j("catalog", "--max-price", 100)) == 13
    # In Moscow minutes_30 costs 210 (out) and mms_10 60 (still in).
    mow = codes_of(run.j("catalog", "--max-price", 100, "--region", "RU-MOW"))
    assert "minutes_30" not in mow and "mms_10" in mow and len(mow) == 12


def test_filter_channel(run):
    for channel in ["web", "app", "sms", "ussd", "store"]:
        expected = sorted(c for c in TABLE if channel in expected_channels(c))
        assert codes_of(run.j("catalog", "--channel", channel)) == expected, channel


def test_filter_channel_counts(run):
    assert codes_of(run.j("catalog", "--channel", "store")) == ["store_discount"]
    assert codes_of(run.j("catalog", "--channel", "ussd")) == sorted(
        ["minutes_30", "minutes_60", "sms_50", "sms_100", "mms_10", "mts_online", "vnet", "bit", "superbit"])
    assert len(run.j("catalog", "--channel", "sms")) == 57 - 9 - 1
    assert len(run.j("catalog", "--channel", "web")) == 56


def test_filters_combine(run):
    got = run.j("catalog", "--category", "internet", "--max-price", 500, "--region", "ru-mow")
    assert {d["code"]: d["price"] for d in got} == {"vnet": 220, "turbo_100mb": 150, "turbo_500mb": 475}
    got = run.j("catalog", "--category", "calls", "--region", "RU-BRY", "--max-price", 100, "--channel", "ussd")
    assert {d["code"]: d["price"] for d in got} == {"minutes_30": 85}
    assert run.j("catalog", "--category", "certificate", "--channel", "sms") == []


def test_catalog_human_table(run):
    r = run.ok("catalog", "--region", "RU-BRY", "--category", "calls")
    assert "minutes_30" in r.stdout and "minutes_60" in r.stdout and "sms_50" not in r.stdout
    assert "85" in r.stdout and "150" in r.stdout
    assert r.stderr == ""


# ---------------------------------------------------------------- 3. broken catalogs


def test_misspelt_top_level_key(run, tmp_path):
    p, text = edited(tmp_path, "\nrewards:\n", "\nrewardz:\n")
    top = line_of(text, "version: 1")  # the document's first line with content
    assert_check_fails(run, p, [
        f"{p}:{line_of(text, 'rewardz:')}: catalog: unknown key 'rewardz' (did you mean 'rewards'?)",
        f"{p}:{top}: catalog: missing key 'rewards'",
        f"{p}:{top}: rewards must be a list with at least one reward",
    ])


def test_misspelt_reward_key(run, tmp_path):
    p, text = edited(tmp_path, "    region_prices: {RU-MOW: 300, RU-MOS: 300}\n",
                     "    region_pricez: {RU-MOW: 300, RU-MOS: 300}\n")
    assert_check_fails(run, p, [
        f"{p}:{line_of(text, 'region_pricez')}: reward minutes_60: unknown key 'region_pricez' "
        "(did you mean 'region_prices'?)",
    ])


def test_missing_key(run, tmp_path):
    old = "  - code: sms_100\n    name: 100 SMS\n    category: messages\n    price: 410\n"
    p, text = edited(tmp_path, old, "  - code: sms_100\n    name: 100 SMS\n    category: messages\n")
    assert_check_fails(run, p, [f"{p}:{line_of(text, '- code: sms_100')}: reward sms_100: missing key 'price'"])


@pytest.mark.parametrize("bad,shown", [("-5", "-5"), ("0", "0"), ("150.5", "150.5"), ('"150"', "'150'"),
                                       ("true", "True"), ("1e3", "'1e3'")])
def test_bad_price(run, tmp_path, bad, shown):
    old = "    price: 150\n    region_prices: {RU-MOW: 300"
    p, text = edited(tmp_path, old, f"    price: {bad}\n    region_prices: {{RU-MOW: 300")
    line = line_of(text, f"    price: {bad}\n")
    assert_check_fails(run, p, [f"{p}:{line}: reward minutes_60: price must be a positive whole number (got {shown})"])


def test_negative_region_price(run, tmp_path):
    p, text = edited(tmp_path, "{RU-MOW: 210, RU-MOS: 210, RU-BRY: 85}", "{RU-MOW: 210, RU-MOS: 210, RU-BRY: -85}")
    assert_check_fails(run, p, [
        f"{p}:{line_of(text, 'RU-BRY: -85')}: reward minutes_30: price for RU-BRY must be a positive whole "
        "number of points (got -85)"])


def test_region_price_for_unknown_region(run, tmp_path):
    p, text = edited(tmp_path, "{RU-MOW: 990, RU-MOS: 990}", "{RU-MOW: 990, RU-XXX: 990}")
    assert_check_fails(run, p, [f"{p}:{line_of(text, 'RU-XXX: 990')}: reward superbit: price for RU-XXX: unknown region"])


def test_region_price_region_is_case_insensitive(run, tmp_path):
    p, _ = edited(tmp_path, "{RU-MOW: 210, RU-MOS: 210, RU-BRY: 85}", "{ru-mow: 210, RU-MOS: 210, ru-bry: 85}")
    r = run("check", "--catalog", p)
    assert (r.exit_code, r.stderr) == (0, "")
    assert run.j("catalog", "minutes_30", "--region", "RU-BRY", "--catalog", p)["price"] == 85
    assert run.j("catalog", "minutes_30", "--region", "RU-MOW", "--catalog", p)["price"] == 210


def test_duplicate_reward_code(run, tmp_path):
    p, text = edited(tmp_path, "  - code: minutes_60\n", "  - code: minutes_30\n")
    first, second = line_of(text, "- code: minutes_30", 1), line_of(text, "- code: minutes_30", 2)
    assert_check_fails(run, p, [f"{p}:{second}: duplicate reward code 'minutes_30' (first at line {first})"])


def test_duplicate_ussd_code(run, tmp_path):
    p, text = edited(tmp_path, 'ussd: "*111*455*12#"', 'ussd: "*111*455*11#"')
    first, second = line_of(text, '"*111*455*11#"', 1), line_of(text, '"*111*455*11#"', 2)
    assert_check_fails(run, p, [
        f"{p}:{second}: reward minutes_60: duplicate USSD code '*111*455*11#' (also reward minutes_30 at line {first})"])


def test_duplicate_sms_text(run, tmp_path):
    p, text = edited(tmp_path, "    sms: turbo500mb\n", "    sms: turbo100mb\n")
    first, second = line_of(text, "sms: turbo100mb", 1), line_of(text, "sms: turbo100mb", 2)
    assert_check_fails(run, p, [
        f"{p}:{second}: reward turbo_500mb: duplicate SMS text 'turbo100mb' (also reward turbo_100mb at line {first})"])


def test_unknown_reward_category(run, tmp_path):
    old = "  - code: bit\n    name: BIT\n    category: internet\n"
    p, text = edited(tmp_path, old, "  - code: bit\n    name: BIT\n    category: internett\n")
    assert_check_fails(run, p, [f"{p}:{line_of(text, 'category: internett')}: reward bit: unknown category 'internett'"])


def test_unknown_channel(run, tmp_path):
    old = "    sms: turbo2gb\n    channels: [web, app, sms]\n"
    p, text = edited(tmp_path, old, "    sms: turbo2gb\n    channels: [web, app, fax]\n")
    assert_check_fails(run, p, [
        f"{p}:{line_of(text, '[web, app, fax]')}: reward turbo_2gb: unknown channel 'fax' "
        "(known: web, app, sms, ussd, store)"])


def test_limit_with_unknown_period(run, tmp_path):
    p, text = edited(tmp_path, "limits: [{per: ever, max: 1}]", "limits: [{per: week, max: 1}]")
    assert_check_fails(run, p, [
        f"{p}:{line_of(text, 'per: week')}: reward book_first: limit period 'week' unknown "
        "(use day, month, year or ever)"])


def test_category_limit_with_unknown_period(run, tmp_path):
    p, text = edited(tmp_path, "limits: [{per: month, max: 1}]", "limits: [{per: week, max: 1}]")
    assert_check_fails(run, p, [
        f"{p}:{line_of(text, 'per: week')}: reward category certificate: limit period 'week' unknown "
        "(use day, month, year or ever)"])


def test_tenure_tiers_out_of_order(run, tmp_path):
    old = '    - {up_to_months: 12, coefficient: "1.1"}\n    - {up_to_months: 24, coefficient: "1.2"}\n'
    new = '    - {up_to_months: 24, coefficient: "1.2"}\n    - {up_to_months: 12, coefficient: "1.1"}\n'
    p, text = edited(tmp_path, old, new)
    assert_check_fails(run, p, [
        f"{p}:{line_of(text, 'up_to_months: 12,')}: earning.tenure: steps out of order: up_to_months 12 after 24"])


def test_card_tiers_out_of_order(run, tmp_path):
    p, text = edited(tmp_path, '{up_to_rub: "30000.00", rub_per_point: 20}', '{up_to_rub: "10000.00", rub_per_point: 20}')
    assert_check_fails(run, p, [
        f"{p}:{line_of(text, '10000.00')}: earning.card_tiers: steps out of order: up_to_rub 10000.00 after 15000.00"])


def test_malformed_yaml_reports_the_line(run, tmp_path):
    p, text = edited(tmp_path, "    name: 60 minutes to MTS numbers\n", "    name: 60 minutes: to MTS numbers\n")
    r = run("check", "--catalog", p)
    assert r.exit_code == 3
    lines = r.stderr.splitlines()
    assert len(lines) == 2 and lines[1] == summary(p, 1)
    assert lines[0].startswith(f"{p}:{line_of(text, '60 minutes: to')}: malformed YAML: ")
    assert "mapping values are not allowed" in lines[0]


def test_malformed_yaml_tab(run, tmp_path):
    p, text = edited(tmp_path, "    name: 50 SMS\n", "\tname: 50 SMS\n")
    r = run("check", "--catalog", p)
    assert r.exit_code == 3
    lines = r.stderr.splitlines()
    assert len(lines) == 2 and lines[1] == summary(p, 1)
    assert lines[0].startswith(f"{p}:{line_of(text, chr(9) + 'name: 50 SMS')}: malformed YAML: ")


def _bomb(levels=9, width=9):
    out = ["lol:", '  a0: &a0 ["lol"]']
    for i in range(1, levels + 1):
        out.append(f"  a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    return "\n".join(out) + "\n"


def _child_cpu():
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def test_alias_bomb_refused_quickly(sub, tmp_path):
    p = tmp_path / "bomb.yaml"
    p.write_text(SRC + _bomb(), encoding="utf-8")  # 9**9 = 387,420,489 strings when expanded
    # "Quickly" is measured in CPU seconds of the child (start-up included): wall time
    # on a loaded CI machine says little; the timeout bounds the wall time anyway.
    cpu = _child_cpu()
    r = sub(["check", "--catalog", p], timeout=20)
    cpu = _child_cpu() - cpu
    assert r.returncode == 3, (r.returncode, r.stderr)
    assert cpu < 2.0, cpu
    assert r.stderr.splitlines() == [f"{p}:1: refused: too many nodes (more than 200000; an alias bomb?)",
                                     summary(p, 1)]
    assert "Traceback" not in r.stderr


def test_alias_bomb_in_other_commands(run, tmp_path):
    p = tmp_path / "bomb.yaml"
    p.write_text(SRC + _bomb(), encoding="utf-8")
    r = run("catalog", "--catalog", p)
    assert r.exit_code == 3 and r.stdout == ""
    assert r.stderr == f"error: invalid catalog: {p}:1: refused: too many nodes (more than 200000; an alias bomb?)\n"


@pytest.mark.parametrize("deep", ["[" * 100 + "]" * 100, "{a: " * 100 + "1" + "}" * 100,
                                  "[" * 66 + "]" * 66], ids=["seq-100", "map-100", "seq-66"])
def test_deeply_nested_yaml_refused(run, tmp_path, deep):
    p, _ = edited(tmp_path, "limits: [{per: ever, max: 1}]", f"limits: {deep}")
    assert_check_fails(run, p, [f"{p}:1: refused: nested more than 64 levels deep"])


DEEP = 50_000


@pytest.mark.parametrize("shape", [
    "flow-sequences", "flow-mappings", "block-sequences", "complex-keys", "sequence-of-complex-keys",
])
def test_very_deeply_nested_yaml_refused_not_crashed(sub, tmp_path, shape):
    # 50,000 levels is a 100-200 KB file, far under the 4 MiB limit: it must be refused
    # like any other nesting, not crash the process (libyaml recurses in C). Run in a
    # subprocess: a crash here would otherwise take pytest down with it.
    n = DEEP
    tail = {
        "flow-sequences": "  x: " + "[" * n + "]" * n,
        "flow-mappings": "  x: " + "{a: " * n + "1" + "}" * n,
        "block-sequences": "  " + "- " * n + "x",
        "complex-keys": "  " + "? " * n + "x",
        "sequence-of-complex-keys": "  " + "- ? " * n + "x",
    }[shape]
    p = tmp_path / "deep.yaml"
    p.write_text(SRC + "lol:\n" + tail + "\n", encoding="utf-8")
    r = sub(["check", "--catalog", p], timeout=60)
    assert r.returncode == 3, (shape, r.returncode, r.stderr[-500:])
    assert r.stderr.splitlines() == [f"{p}:1: refused: nested more than 64 levels deep", summary(p, 1)]


def test_brackets_in_strings_and_comments_are_not_nesting(run, tmp_path):
    # A valid catalog: 70 brackets inside a quoted name and in a comment nest nothing.
    name = "30 minutes " + "[" * 70 + " to MTS numbers"
    text = SRC.replace("    name: 30 minutes to MTS numbers\n", f'    name: "{name}"\n', 1)
    text = text.replace("  # --- calls ---\n", "  # --- calls " + "{" * 70 + "\n", 1)
    assert text.count("[" * 70) == 1 and text.count("{" * 70) == 1
    p = tmp_path / "brackets.yaml"
    p.write_text(text, encoding="utf-8")
    r = run("check", "--catalog", p)
    assert (r.exit_code, r.stdout, r.stderr) == (0, "", "")
    assert run.j("catalog", "minutes_30", "--catalog", p)["name"] == name


def test_oversized_file_refused(run, tmp_path):
    p = tmp_path / "big.yaml"
    data = SRC.encode() + b"#" + b"x" * MIB4 + b"\n"
    p.write_bytes(data)
    r = run("check", "--catalog", p)
    assert r.exit_code == 3
    assert r.stdout == ""
    assert r.stderr == f"error: {p}:1: refused: the catalog is {len(data)} bytes (at most {MIB4})\n"


def test_file_of_exactly_4_mib_is_accepted(run, tmp_path):
    base = SRC.encode()
    p = tmp_path / "exact.yaml"
    p.write_bytes(base + b"#" + b"x" * (MIB4 - len(base) - 2) + b"\n")
    assert p.stat().st_size == MIB4
    r = run("check", "--catalog", p)
    assert (r.exit_code, r.stderr) == (0, "")
    q = tmp_path / "over.yaml"
    q.write_bytes(base + b"#" + b"x" * (MIB4 - len(base) - 1) + b"\n")
    assert q.stat().st_size == MIB4 + 1
    assert run("check", "--catalog", q).exit_code == 3


def test_non_utf8_file(run, tmp_path):
    old = "    name: 60 minutes to MTS numbers\n"
    assert SRC.count(old) == 1
    raw = SRC.encode("utf-8").replace(old.encode(), b"    name: 60 minutes \xff\xfe to MTS numbers\n")
    p = tmp_path / "latin.yaml"
    p.write_bytes(raw)
    line = line_of(SRC, old)
    r = run("check", "--catalog", p)
    assert r.exit_code == 3
    assert r.stderr == f"error: {p}:{line}: the catalog is not UTF-8 text\n"


@pytest.mark.parametrize("content", ["", "\n\n", "# only a comment\n"])
def test_empty_file(run, tmp_path, content):
    p = tmp_path / "empty.yaml"
    p.write_text(content)
    assert_check_fails(run, p, [f"{p}:1: the catalog is empty"])


@pytest.mark.parametrize("content", ["---\n", "null\n"])
def test_empty_document_is_one_problem(run, tmp_path, content):
    p = tmp_path / "empty.yaml"
    p.write_text(content)
    r = run("check", "--catalog", p)
    assert r.exit_code == 3
    lines = r.stderr.splitlines()
    assert lines[-1] == summary(p, 1), lines
    assert lines[0] in (f"{p}:1: the catalog is empty", f"{p}:1: catalog must be a mapping"), lines


def test_missing_file(run, sub, tmp_path):
    p = tmp_path / "nope.yaml"
    r = run("check", "--catalog", p)
    assert r.exit_code == 2  # CLI.md §2: a --catalog file that does not exist is bad input
    assert r.stderr.startswith(f"error: catalog not found: {p}") and r.stderr.count("\n") == 1
    s = sub(["check", "--catalog", p, "--json"])
    assert s.returncode == 2 and json.loads(s.stderr)["error"]["kind"] == "catalog-missing"


def test_catalog_not_a_mapping_is_one_problem(run, tmp_path):
    p = tmp_path / "list.yaml"
    p.write_text("- version: 1\n- rewards: []\n")
    assert_check_fails(run, p, [f"{p}:1: catalog must be a mapping"])


def test_two_mistakes_both_reported_in_check_order(run, tmp_path):
    text = SRC
    for old, new in [
        ("    channels: [web, app, sms, ussd]\n    limits: []\n  - code: sms_100",
         "    channels: [web, app, sms, pigeon]\n    limits: []\n  - code: sms_100"),  # rewards check (sms_50)
        ("    price: 100\n    region_prices: {RU-MOW: 210", "    price: -1\n    region_prices: {RU-MOW: 210"),  # prices
        ("  points_validity_months: 12", "  points_validity_months: 0 "),  # schema
    ]:
        assert text.count(old) == 1
        text = text.replace(old, new)
    p = tmp_path / "three.yaml"
    p.write_text(text)
    assert_check_fails(run, p, [
        f"{p}:{line_of(text, 'points_validity_months: 0')}: program: points_validity_months must be a positive "
        "whole number (got 0)",
        f"{p}:{line_of(text, 'price: -1')}: reward minutes_30: price must be a positive whole number (got -1)",
        f"{p}:{line_of(text, 'pigeon')}: reward sms_50: unknown channel 'pigeon' (known: web, app, sms, ussd, store)",
    ])


def test_two_mistakes_in_rewards_both_reported(run, tmp_path):
    text = SRC.replace('ussd: "*111*628*1#"', 'ussd: "*111*252*1#"').replace(
        "  - code: ivi_14\n    name: IVI or Megogo, 14 days\n    category: content\n",
        "  - code: ivi_14\n    name: IVI or Megogo, 14 days\n    category: kino\n")
    assert text.count("kino") == 1 and text.count('"*111*252*1#"') == 2
    p = tmp_path / "two.yaml"
    p.write_text(text)
    assert_check_fails(run, p, [
        f"{p}:{line_of(text, '*111*252*1#', 2)}: reward superbit: duplicate USSD code '*111*252*1#' "
        f"(also reward bit at line {line_of(text, '*111*252*1#', 1)})",
        f"{p}:{line_of(text, 'category: kino')}: reward ivi_14: unknown category 'kino'",
    ])


def test_check_json_lists_problems(run, tmp_path):
    p, text = edited(tmp_path, "{RU-MOW: 990, RU-MOS: 990}", "{RU-MOW: 990, RU-XXX: 990}")
    r = run("check", "--catalog", p, "--json")
    assert r.exit_code == 3
    doc = json.loads(r.stdout)
    assert doc["valid"] is False
    assert doc["problems"] == [{"path": str(p), "line": line_of(text, "RU-XXX"),
                                "message": "reward superbit: price for RU-XXX: unknown region"}]


def test_check_via_environment_variable(run, tmp_path, monkeypatch):
    p, text = edited(tmp_path, "{RU-MOW: 990, RU-MOS: 990}", "{RU-MOW: 990, RU-XXX: 990}")
    monkeypatch.setenv("BONUSCLI_CATALOG", str(p))
    r = run("check")
    assert r.exit_code == 3
    assert r.stderr.splitlines()[0] == f"{p}:{line_of(text, 'RU-XXX')}: reward superbit: price for RU-XXX: unknown region"


@pytest.mark.parametrize("args", [
    ("catalog",),
    ("catalog", "minutes_30"),
    ("balance", "9161234567"),
    ("calc", "500", "--category", "mobile"),
    ("join", "9161234567", "--region", "RU-MOW"),
])
def test_broken_catalog_in_other_commands(run, tmp_path, data_dir, args):
    p, text = edited(tmp_path, "price: 100\n    region_prices: {RU-MOW: 210", "price: -7\n    region_prices: {RU-MOW: 210")
    r = run(*args, "--catalog", p)
    assert r.exit_code == 3, (r.exit_code, r.stdout, r.stderr)
    assert r.stdout == ""
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: ")
    assert f"{p}:{line_of(text, 'price: -7')}: " in r.stderr
    assert not (data_dir / "ledgers" / "9161234567.jsonl").exists()
    rj = run(*args, "--catalog", p, "--json")
    assert rj.exit_code == 3 and rj.stdout == ""
    err = json.loads(rj.stderr)["error"]
    assert err["code"] == 3 and isinstance(err["kind"], str) and str(p) in err["message"]


def test_broken_catalog_with_many_problems_one_line_subprocess(sub, tmp_path):
    p, _ = edited(tmp_path, "\nrewards:\n", "\nrewardz:\n")
    for args in (["catalog"], ["balance", "9161234567"]):
        r = sub([*args, "--catalog", p])
        assert r.returncode == 3
        assert r.stdout == ""
        assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1
        assert "Traceback" not in r.stderr
    r = sub(["catalog"], env={"BONUSCLI_CATALOG": str(tmp_path / "missing.yaml")})
    assert r.returncode == 3 and r.stderr.startswith("error: ") and r.stderr.count("\n") == 1


# ---------------------------------------------------------------- 4. plain typed data

PLAIN = (str, int, bool, Decimal, type(None), dt.date)


def _assert_plain(value, where="catalog"):
    assert not isinstance(value, float), f"{where} is a float: {value!r}"
    if isinstance(value, tuple):  # NamedTuples and tuples
        names = getattr(value, "_fields", None) or range(len(value))
        for name, item in zip(names, value):
            _assert_plain(item, f"{where}.{name}")
    elif type(value) is dict:
        for k, v in value.items():
            assert type(k) is str, f"{where} key {k!r}"
            _assert_plain(v, f"{where}[{k!r}]")
    else:
        assert type(value) in PLAIN, f"{where} is {type(value).__name__}"


def test_validate_returns_plain_typed_catalog():
    cat, probs = catalog_mod.validate(SHIPPED, "catalog.yaml")
    assert probs == []
    assert isinstance(cat, Catalog) and isinstance(cat, tuple)
    _assert_plain(cat)
    assert cat.categories["mobile"].rub_per_point == 5
    assert type(cat.categories["mobile"].rub_per_point) is int
    assert cat.categories["mts_store"].rub_per_point == 3
    assert cat.categories["card"].tiered is True and cat.categories["card"].rub_per_point is None
    assert {c for c, e in cat.categories.items() if e.tenure} == {
        "mobile", "mobile_internet", "home_internet", "home_tv", "home_phone"}
    assert cat.tenure == (Step(Decimal(6), Decimal("1.0")), Step(Decimal(12), Decimal("1.1")),
                          Step(Decimal(24), Decimal("1.2")), Step(None, Decimal("1.3")))
    for step in cat.tenure:
        assert isinstance(step.value, Decimal)
        assert step.up_to is None or isinstance(step.up_to, Decimal)
    assert cat.card_tiers == (Step(Decimal(15000), 30), Step(Decimal(30000), 20), Step(None, 10))
    assert isinstance(cat.amount_max, Decimal) and cat.amount_max == Decimal("1000000")
    assert cat.validity_months == 12
    assert cat.closing_date is None
    assert cat.timezone == "Europe/Moscow"
    assert len(cat.regions) == 83
    assert cat.regions["RU-MOW"] and cat.regions["RU-BRY"] and "RU-SPE" in cat.regions
    assert set(cat.channels) == {"web", "app", "sms", "ussd", "store"}
    assert tuple(cat.store_discount) == ("store_discount", 10, Decimal("0.99"))
    b = cat.bonuses
    assert (b.welcome, b.web_form, b.web_profile, b.referral, b.card_welcome) == (150, 100, 10, 50, 1000)
    assert b.card_welcome_threshold == Decimal("3000") and b.card_welcome_category == "card"
    g = cat.gifts
    assert (g.same_region, g.min_points, g.per_day, g.per_month_points, g.accept_days) == (True, 1, 1, 3000, 30)
    assert cat.allow_debt is True
    assert cat.methods["web"].hours == 48 and cat.methods["wallet"].hours == 720
    assert cat.methods["card"].working_days == 7 and cat.methods["sms"].hours == 0
    assert set(cat.ineligible) == {"tariff_package", "topup_voucher", "loan_repayment", "utilities",
                                   "money_transfer"}
    assert set(cat.rewards) == set(TABLE)
    r = cat.rewards["minutes_30"]
    assert (r.price, r.region_prices, r.validity_days, r.ussd) == (
        100, {"RU-MOW": 210, "RU-MOS": 210, "RU-BRY": 85}, 30, "*111*455*11#")
    assert cat.price_for(r, "RU-BRY") == 85 and cat.price_for(r, None) == 100
    assert pickle.loads(pickle.dumps(cat)) == cat


def test_validate_broken_returns_problems_as_values(tmp_path):
    p, text = edited(tmp_path, "price: 100\n    region_prices: {RU-MOW: 210", "price: -7\n    region_prices: {RU-MOW: 210")
    cat, probs = catalog_mod.validate(p, "shown.yaml")
    assert cat is None
    assert probs == [Problem("shown.yaml", line_of(text, "price: -7"),
                             "reward minutes_30: price must be a positive whole number (got -7)")]
    assert str(probs[0]) == f"shown.yaml:{line_of(text, 'price: -7')}: reward minutes_30: price must be a positive " \
                            "whole number (got -7)"


def test_validate_missing_file_raises_files_error(tmp_path):
    with pytest.raises(FilesError) as e:
        catalog_mod.validate(tmp_path / "nope.yaml", "nope.yaml")
    assert e.value.exit_code == 3


# ---------------------------------------------------------------- 5. the parsed-catalog cache


@pytest.fixture
def counted(monkeypatch, data_dir):
    """Count how often the catalog file is actually parsed and validated. The cache lives in an
    existing data directory (CLI.md §1: only a writing command creates one)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    calls = []
    real = catalog_mod.validate

    def spy(path, shown):
        calls.append(str(path))
        return real(path, shown)

    monkeypatch.setattr(catalog_mod, "validate", spy)
    return calls


def cache_files(data_dir):
    d = data_dir / "cache"
    return sorted(p for p in d.iterdir() if p.is_file()) if d.is_dir() else []


def test_second_run_uses_the_cache(run, data_dir, counted):
    assert run.j("catalog", "minutes_30")["price"] == 100
    assert len(counted) == 1
    assert cache_files(data_dir), "nothing cached under <data-dir>/cache"
    assert run.j("catalog", "minutes_30", "--region", "RU-BRY")["price"] == 85
    assert run.j("calc", "500", "--category", "mobile", "--tenure-months", "13")["points"] == 120
    assert len(counted) == 1, "the second and third runs parsed the catalog again"


def test_editing_the_catalog_invalidates_the_cache(run, tmp_path, data_dir, counted):
    p = tmp_path / "mine.yaml"
    p.write_text(SRC)
    assert run.j("catalog", "minutes_30", "--catalog", p)["price"] == 100
    assert run.j("catalog", "minutes_30", "--catalog", p)["price"] == 100
    assert len(counted) == 1
    # a new size
    old = "    price: 100\n    region_prices: {RU-MOW: 210"
    p.write_text(SRC.replace(old, "    price: 1000\n    region_prices: {RU-MOW: 210"))
    assert run.j("catalog", "minutes_30", "--catalog", p)["price"] == 1000
    assert len(counted) == 2
    # the same size, a new mtime
    st = p.stat()
    p.write_text(SRC.replace(old, "    price: 2000\n    region_prices: {RU-MOW: 210"))
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    assert p.stat().st_size == st.st_size
    assert run.j("catalog", "minutes_30", "--catalog", p)["price"] == 2000
    assert len(counted) == 3
    # a catalog broken after it was cached is reported, not served from the cache
    p.write_text(SRC.replace(old, "    price: -1\n    region_prices: {RU-MOW: 210"))
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 9_000_000_000))
    r = run("catalog", "minutes_30", "--catalog", p)
    assert r.exit_code == 3 and r.stderr.startswith("error: ")


@pytest.mark.parametrize("garbage", [b"", b"not a pickle at all", b"\x80\x05\x95garbage",
                                     pickle.dumps({"rewards": {}}), pickle.dumps(("a", 1))])
def test_corrupt_cache_file_is_ignored(run, data_dir, counted, garbage):
    assert run.j("catalog", "minutes_30")["price"] == 100
    files = cache_files(data_dir)
    assert files
    for f in files:
        f.write_bytes(garbage)
    r = run("catalog", "minutes_30", "--region", "RU-MOW", "--json")
    assert r.exit_code == 0, r.stderr
    assert r.stderr == ""
    assert r.json["price"] == 210
    assert len(counted) == 2
    assert run.j("catalog", "--region", "RU-BRY", "--category", "calls") == run.j(
        "catalog", "--region", "RU-BRY", "--category", "calls")


def test_truncated_cache_file_is_ignored(run, data_dir):
    run.j("catalog")
    for f in cache_files(data_dir):
        f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 2])
    got = {d["code"]: d["price"] for d in run.j("catalog", "--region", "RU-MOS")}
    assert got == {code: expected_price(code, "RU-MOS") for code in TABLE}


def test_unwritable_cache_dir_still_works(run, data_dir):
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "cache").write_text("a file where the cache directory should be")
    r = run("catalog", "minutes_30", "--json")
    assert r.exit_code == 0, r.stderr
    assert r.json["price"] == 100


def test_cache_is_used_across_processes(sub, data_dir):
    data_dir.mkdir(parents=True)  # the cache lives in an existing data directory
    r1 = sub(["catalog", "minutes_30", "--json"])
    assert r1.returncode == 0 and json.loads(r1.stdout)["price"] == 100
    files = cache_files(data_dir)
    assert files
    for f in files:
        f.write_bytes(b"\x00garbage")
    r2 = sub(["catalog", "minutes_30", "--json"])
    assert r2.returncode == 0 and r2.stderr == "" and json.loads(r2.stdout)["price"] == 100
