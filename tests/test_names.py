"""Names where codes were needed (issue 24, item 5; CLI.md §4 `regions` and `history`).

`--region` (and a batch row's or a scenario's region, and the API's) takes a code in any letter
case, or a region's name or an unambiguous prefix of it in any case; an exact name wins over a
prefix (`moscow` is RU-MOW although it also starts "Moscow Oblast"); an ambiguous prefix is exit 2
listing the candidates. `history --type` takes families (`gift` is every gift type).

Expected values come from ISO 3166-2:RU as the shipped catalog names it (RU-MOW Moscow, RU-MOS
Moscow Oblast, RU-BRY Bryansk Oblast, RU-KGD Kaliningrad Oblast and RU-KLU Kaluga Oblast are the
only names starting "Kal", RU-SPE Saint Petersburg, RU-TA Republic of Tatarstan) and from the
history row types of CLI.md / README.
"""

from __future__ import annotations

import json
import re

import pytest

import bonuscli
from bonuscli import requests as rq
from test_completion import complete_in_process

A, B, C = "9161234567", "9167654321", "9031112233"
GIFT_TYPES = {"gift_out", "gift_in", "gift_accept", "gift_reject", "gift_return", "gift_accepted", "gift_forfeited",
              "gift_expired"}


def err(r) -> dict:
    return json.loads(r.stderr)["error"]


def joined_region(run, text, phone=A):
    return run.j("join", phone, "--region", text, "--at", "2025-03-01T10:00")["region"]


# ---------------------------------------------------------------- --region: codes, names, prefixes


@pytest.mark.parametrize("text, code", [
    ("RU-MOW", "RU-MOW"), ("ru-mow", "RU-MOW"), ("Ru-Bry", "RU-BRY"), (" ru-spe ", "RU-SPE"),
    ("RU-MO", "RU-MO"),  # a code that also starts other codes is that code (Mordovia)
])
def test_a_code_in_any_letter_case(run, text, code):
    assert joined_region(run, text) == code


@pytest.mark.parametrize("text, code", [
    ("moscow", "RU-MOW"), ("Moscow", "RU-MOW"), ("MOSCOW", "RU-MOW"),  # exact: wins over "Moscow Oblast"
    ("moscow oblast", "RU-MOS"), ("MOSCOW OBLAST", "RU-MOS"),
    ("Saint Petersburg", "RU-SPE"), ("saint-petersburg", "RU-SPE"),  # a hyphen for the space: no quoting
    ("Republic of Tatarstan", "RU-TA"), ("sakha (yakutia) republic", "RU-SA"),
])
def test_an_exact_name_in_any_case(run, text, code):
    assert joined_region(run, text) == code


@pytest.mark.parametrize("text, code", [
    ("bryansk", "RU-BRY"), ("Bry", "RU-BRY"), ("BRYANSK OBL", "RU-BRY"),
    ("moscow obl", "RU-MOS"), ("Moscow O", "RU-MOS"),  # past the exact name, only Moscow Oblast is left
    ("khanty mansi", "RU-KHM"), ("nizhny", "RU-NIZ"), ("kalin", "RU-KGD"), ("kalu", "RU-KLU"),
])
def test_an_unambiguous_prefix_of_a_name(run, text, code):
    assert joined_region(run, text) == code


@pytest.mark.parametrize("text, candidates", [
    ("mos", {"RU-MOW", "RU-MOS"}), ("MOSC", {"RU-MOW", "RU-MOS"}), ("kal", {"RU-KGD", "RU-KLU"}),
])
def test_an_ambiguous_prefix_is_exit_2_listing_the_candidates(run, data_dir, text, candidates):
    r = run("join", A, "--region", text, "--json")
    assert r.exit_code == 2 and r.stdout == ""
    e = err(r)
    assert (e["code"], e["kind"]) == (2, "ambiguous-region")
    listed = set(re.findall(r"RU-[A-Z]+", e["message"]))
    assert listed == candidates, e["message"]
    assert not list(data_dir.glob("ledgers/*"))  # nothing joined
    plain = run("join", A, "--region", text)
    assert plain.exit_code == 2 and plain.stderr.startswith("error: ambiguous region") and plain.stderr.count("\n") == 1


@pytest.mark.parametrize("text, hint", [
    ("MOW", "RU-MOW"),          # a code without its RU-
    ("tatarstan", "RU-TA"),     # a word inside a name
    ("yugra", "RU-KHM"),        # Khanty-Mansi Autonomous Okrug - Yugra
    ("brynsk", "RU-BRY"),       # a misspelt name
    ("Moskow", "RU-MOW"),
])
def test_unknown_is_exit_2_with_a_did_you_mean_over_codes_and_names(run, text, hint):
    r = run("join", A, "--region", text, "--json")
    assert r.exit_code == 2
    e = err(r)
    assert e["kind"] == "unknown-region" and "did you mean" in e["message"] and f"'{hint}'" in e["message"]


@pytest.mark.parametrize("text", ["xyz", "MSK", "-", "x" * 500])
def test_unknown_without_a_near_miss(run, text):
    r = run("join", A, "--region", text, "--json")
    assert r.exit_code == 2 and err(r)["kind"] == "unknown-region"
    assert "did you mean" not in err(r)["message"] and len(err(r)["message"]) < 300


# ---------------------------------------------------------------- every place a region is typed


def test_catalog_report_and_export_take_names(run, data_dir):
    run.ok("join", A, "--region", "bryansk", "--at", "2025-01-01")
    run.ok("join", B, "--region", "moscow", "--at", "2025-01-01")
    assert run.j("catalog", "minutes_30", "--region", "bryansk")["price"] == 85
    assert run.j("catalog", "minutes_30", "--region", "Moscow")["price"] == 210
    assert run.j("catalog", "minutes_30", "--region", "bryansk")["region"] == "RU-BRY"
    assert run.j("report", "--region", "Bry")["members"] == run.j("report", "--region", "RU-BRY")["members"]
    assert run.j("report", "--region", "Bry")["region"] == "RU-BRY"
    text = run.ok("export", "--format", "hledger", "--region", "bryansk oblast").stdout
    assert text == run.ok("export", "--format", "hledger", "--region", "ru-bry").stdout
    assert "region RU-BRY" in text and A in text and B not in text


@pytest.mark.parametrize("args", [
    ("catalog", "--region"), ("catalog", "minutes_30", "--region"), ("report", "--region"),
    ("export", "--format", "beancount", "--region"), ("join", A, "--region"), ("sms", A, "hello", "--region"),
])
def test_every_region_option_refuses_an_ambiguous_prefix(run, args):
    run.ok("join", C, "--region", "RU-KGD")  # a data directory to read
    r = run(*args, "kal", "--json")
    assert r.exit_code == 2 and err(r)["kind"] == "ambiguous-region", (r.stdout, r.stderr)
    r = run(*args, "nowhereland", "--json")
    assert r.exit_code == 2 and err(r)["kind"] == "unknown-region", (r.stdout, r.stderr)


def test_sms_join_takes_a_name(run):
    doc = run.j("sms", A, "hello", "--region", "bryansk", "--at", "2025-03-01")
    assert doc["action"] == "join" and doc["result"]["region"] == "RU-BRY"


def test_a_batch_row_takes_a_name_and_an_ambiguous_one_is_that_rows_error(run, tmp_path, data_dir):
    f = tmp_path / "members.csv"
    f.write_text("phone,region,at\n"
                 f"{A},moscow,2025-03-01T10:00\n"
                 f"{B},Bry,2025-03-01T10:00\n"
                 f"{C},mos,2025-03-01T10:00\n")   # ambiguous: malformed, the others still join
    r = run("join", "--from", f, "--json")
    doc = json.loads(r.stdout)
    assert r.exit_code == 2 and (doc["applied"], doc["errors"]) == (2, 1), doc
    assert [p["line"] for p in doc["problems"]] == [4]
    assert "ambiguous region" in doc["problems"][0]["message"] and "RU-MOS" in doc["problems"][0]["message"]
    assert run.j("balance", A)["region"] == "RU-MOW" and run.j("balance", B)["region"] == "RU-BRY"
    f.write_text(f"phone,region,at\n{A},RU-MOW,2025-03-01T10:00\n{B},ru-bry,2025-03-01T10:00\n")
    again = json.loads(run("join", "--from", f, "--json").stdout)
    assert (again["applied"], again["duplicates"]) == (0, 2), again  # the same region, however it was typed


def test_the_python_api_and_a_scenario_take_names(tmp_path, run):
    program = bonuscli.open(data_dir=tmp_path / "api")
    assert program.join(A, region="bryansk", at="2025-03-01")["region"] == "RU-BRY"
    with pytest.raises(bonuscli.BadInput) as e:
        program.join(B, region="mos", at="2025-03-01")
    assert (e.value.kind, e.value.exit_code) == ("ambiguous-region", 2)
    s = tmp_path / "names.yaml"
    s.write_text("name: region names\n"
                 "members:\n"
                 f"  {A}: {{region: moscow}}\n"
                 "steps:\n"
                 "  - at: 2025-03-01T10:00\n"
                 f"    join: {{phone: {A}}}\n"
                 "    expect: {region: RU-MOW}\n"
                 "  - at: 2025-03-01T10:00\n"
                 f"    join: {{phone: {B}, region: Bry}}\n"
                 "    expect: {region: RU-BRY}\n"
                 "  - at: 2025-03-01T10:00\n"
                 f"    join: {{phone: {C}, region: kal}}\n"
                 "    expect: {exit: 2, error_kind: ambiguous-region}\n")
    r = run("check", "--scenario", s, "--json")
    assert r.exit_code == 0, (r.stdout, r.stderr)


def test_completion_offers_the_codes_of_the_names_typed():
    assert complete_in_process("bash", ["join", A, "--region"], "bry") == ["RU-BRY"]
    assert sorted(complete_in_process("bash", ["catalog", "--region"], "mosc")) == ["RU-MOS", "RU-MOW"]
    assert sorted(complete_in_process("zsh", ["report", "--region"], "ru-mo")) == ["RU-MO", "RU-MOS", "RU-MOW"]
    assert complete_in_process("bash", ["join", A, "--region"], "zzz") == []


# ---------------------------------------------------------------- history --type families


@pytest.fixture
def gifts(run, data_dir):
    """A member with a join, welcome points, an earn, gifts accepted and rejected, and a redeem."""
    run.ok("join", A, "--region", "RU-MOW", "--method", "web", "--at", "2025-01-01")
    run.ok("join", B, "--region", "RU-MOW", "--at", "2025-01-01")
    run.ok("earn", A, "5000", "--category", "card", "--ref", "c1", "--at", "2025-01-10")
    g1 = run.j("gift", A, B, "10", "--at", "2025-01-11")["gift_id"]
    run.ok("accept", B, g1, "--at", "2025-01-12")
    g2 = run.j("gift", A, B, "20", "--at", "2025-01-13")["gift_id"]
    run.ok("accept", B, g2, "--reject", "--at", "2025-01-14")
    g3 = run.j("gift", B, A, "5", "--at", "2025-01-15")["gift_id"]
    run.ok("accept", A, g3, "--at", "2025-01-16")
    run.ok("redeem", A, "minutes_30", "--at", "2025-01-17")
    return A


def rows(run, *args):
    r = run.ok("history", A, "--json", "--at", "2025-02-01", *args)
    return [json.loads(line) for line in r.stdout.splitlines()]


def test_type_gift_is_every_gift_row_and_only_those(run, gifts):
    every = rows(run)
    assert {"join", "welcome", "earn", "redeem"} <= {r["type"] for r in every}
    want = [r for r in every if r["type"] in GIFT_TYPES]
    assert {r["type"] for r in want} >= {"gift_out", "gift_in", "gift_accept", "gift_accepted", "gift_return"}
    assert rows(run, "--type", "gift") == want
    assert rows(run, "--type", "GIFT") == want
    listed = ",".join(sorted(GIFT_TYPES))
    assert rows(run, "--type", listed) == want  # the family is exactly its types


def test_a_family_mixed_with_a_type(run, gifts):
    every = rows(run)
    want = [r for r in every if r["type"] in GIFT_TYPES | {"redeem"}]
    assert rows(run, "--type", "redeem, gift") == want
    assert rows(run, "--type", "gift,gift_out") == [r for r in every if r["type"] in GIFT_TYPES]


def test_a_type_keeps_its_meaning_and_bonus_is_the_bonus_rows(run, gifts):
    every = rows(run)
    assert [r["type"] for r in rows(run, "--type", "earn")] == ["earn"]  # not the card_welcome it brought
    bonus = [r for r in every if r["type"] in ("welcome", "card_welcome", "referral")]
    assert len(bonus) >= 2 and rows(run, "--type", "bonus") == bonus
    assert not set(rq.HISTORY_FAMILIES) & set(rq.HISTORY_TYPES)
    assert all(set(types) <= set(rq.HISTORY_TYPES) for types in rq.HISTORY_FAMILIES.values())
    assert set(rq.HISTORY_FAMILIES["gift"]) == GIFT_TYPES


@pytest.mark.parametrize("types, hint", [("gifts", "gift"), ("gift,bonuss", "bonus"), ("earnn", "earn"),
                                         (",", None), ("nothing_like_it", None)])
def test_an_unknown_type_or_family_is_exit_2(run, gifts, types, hint):
    r = run("history", A, "--type", types, "--json")
    assert r.exit_code == 2 and r.stdout == ""
    e = err(r)
    assert e["kind"] == "usage" and e["message"].startswith("--type: unknown type")
    assert "families: gift = " in e["message"]
    if hint:
        assert f"did you mean '{hint}'" in e["message"]


def test_history_help_lists_the_families(run):
    text = " ".join(run.ok("history", "--help").stdout.split())
    assert "families" in text
    for family, types in rq.HISTORY_FAMILIES.items():
        assert f"{family} = {', '.join(types)}" in text
    assert "gift = " in text and all(t in text for t in GIFT_TYPES)


def test_type_completion_offers_families():
    assert sorted(complete_in_process("bash", ["history", A, "--type"], "gift")) == sorted(GIFT_TYPES | {"gift"})
