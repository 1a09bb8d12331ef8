"""`bonuscli check --scenario FILE...` (docs/ci.md): the shipped scenarios pass,
deliberately broken catalogs make the right ones fail with readable messages,
invalid scenario files are exit 3 with file:line, and the format's parts
(members shorthand, labels, dotted paths, catalog, catalog_overrides) work.

Expected figures come from RULES.md and catalog.yaml defaults (welcome 150;
Moscow minutes_30 210; tenure 1.0 / 1.1 / 1.2 / 1.3; rub_per_point 5 for mobile).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from bonuscli import scenario as scenario_mod

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ROOT / "scenarios"
CATALOG = ROOT / "catalog.yaml"


def shipped():
    return sorted(SCENARIOS.glob("*.yaml"))


def step_line(path: Path, snippet: str, occurrence: int = 1) -> int:
    """Line of the `- at:` step that holds the `occurrence`-th line containing snippet."""
    lines = path.read_text().splitlines()
    seen = 0
    for n, text in enumerate(lines, start=1):
        if snippet in text:
            seen += 1
            if seen == occurrence:
                for m in range(n, 0, -1):
                    if lines[m - 1].lstrip().startswith("- at:"):
                        return m
    raise AssertionError(f"{snippet!r} not in {path}")


def broken_catalog(tmp_path: Path, old: str, new: str, name="broken.yaml") -> Path:
    text = CATALOG.read_text()
    assert text.count(old) == 1, old
    out = tmp_path / name
    out.write_text(text.replace(old, new))
    return out


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def by_file(doc):
    return {Path(s["file"]).name: s for s in doc["scenarios"]}


# ---------------------------------------------------------------- the shipped scenarios


SHIPPED_NAMES = {"joining.yaml", "referral.yaml", "leave_rejoin.yaml", "earning.yaml", "tenure.yaml", "card.yaml",
                 "idempotent_refs.yaml", "expiry.yaml", "expiry_month_end.yaml", "forecast.yaml",
                 "redeem_prices.yaml", "redeem_channels_limits.yaml", "store_discount.yaml", "gifts.yaml",
                 "sms_ussd.yaml", "calc.yaml", "closing.yaml", "refunds.yaml", "refunds_no_debt.yaml", "adjust.yaml"}


def test_shipped_scenarios_all_pass(run, data_dir):
    files = shipped()
    assert SHIPPED_NAMES <= {f.name for f in files}
    r = run("check", "--scenario", *files, "--json")
    assert r.exit_code == 0, r.stdout + r.stderr
    assert r.stderr == ""
    doc = r.json
    assert doc["ok"] is True
    assert doc["total"] == {"scenarios": len(files), "passed": len(files), "failed": 0, "invalid": 0}
    for s in doc["scenarios"]:
        assert s["result"] == "pass", s
        assert s["passed"] == s["steps"] >= 5, s
        assert s["failures"] == [] and s["problems"] == []
    # scenarios run in their own temporary directories, never in the data dir in use
    assert not data_dir.exists() or not any((data_dir / "ledgers").glob("*.jsonl"))


def test_shipped_scenarios_cover_every_command_and_refusal_kind():
    """Each rule family of RULES.md is exercised: commands and the refusals they can give."""
    text = "\n".join(p.read_text() for p in shipped())
    for command in ("join", "earn", "redeem", "gift", "accept", "leave", "balance", "forecast", "calc", "catalog",
                    "sms", "ussd", "refund", "adjust", "history"):
        assert re.search(rf"^\s+{command}:", text, re.M), command
    for kind in ("pending-activation", "not-eligible", "already-member", "referrer-not-member", "not-member",
                 "unknown-category", "bad-amount", "insufficient-points", "channel-not-allowed", "limit-reached",
                 "over-cap", "wrong-region", "gift-to-self", "recipient-not-active", "bad-points",
                 "gift-not-pending", "program-closed", "unknown-text", "refund-too-large", "unknown-ref"):
        assert f"error_kind: {kind}" in text, kind
    for method in ("sms", "ussd", "app", "call", "store", "web", "card", "wallet"):
        assert re.search(rf"method: {method}\b", text), method


def test_human_table_all_pass(run):
    files = [SCENARIOS / "calc.yaml", SCENARIOS / "store_discount.yaml"]
    r = run("check", "--scenario", *files)
    assert r.exit_code == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["scenario", "name", "steps", "result"]
    assert re.search(r"calc\.yaml\s+calc what-ifs\s+19/19\s+pass$", r.stdout, re.M)
    assert re.search(r"store_discount\.yaml\s+Points as a discount in MTS stores\s+11/11\s+pass$", r.stdout, re.M)
    assert lines[-1] == "2 scenarios: 2 passed, 0 failed"


# ---------------------------------------------------------------- broken catalogs fail the right scenarios


def test_moscow_price_change_fails_the_price_scenarios(run, tmp_path):
    bad = broken_catalog(tmp_path, "region_prices: {RU-MOW: 210, RU-MOS: 210, RU-BRY: 85}",
                         "region_prices: {RU-MOW: 250, RU-MOS: 210, RU-BRY: 85}")
    prices = SCENARIOS / "redeem_prices.yaml"
    files = [prices, SCENARIOS / "joining.yaml", SCENARIOS / "calc.yaml"]
    r = run("--catalog", bad, "check", "--scenario", *files, "--json")
    assert r.exit_code == 1
    assert json.loads(r.stderr)["error"]["code"] == 1
    res = by_file(r.json)
    assert res["joining.yaml"]["result"] == "pass"
    assert res["calc.yaml"]["result"] == "pass"
    assert res["redeem_prices.yaml"]["result"] == "fail"
    first = res["redeem_prices.yaml"]["failures"][0]
    line = step_line(prices, "redeem: {phone: 9167100001, code: minutes_30}")
    assert first["line"] == line
    assert first["file"] == str(prices)
    assert first["command"] == "bonuscli redeem 9167100001 minutes_30 --at 2025-03-04T10:00"
    assert (first["field"], first["expected"], first["got"]) == ("points_spent", 210, 250)
    # the Moscow Oblast member still pays 210: only Moscow steps fail
    assert all("9167100002" not in f["command"] and "9167100003" not in f["command"]
               for f in res["redeem_prices.yaml"]["failures"])


def test_moscow_price_change_human_report(run, tmp_path):
    bad = broken_catalog(tmp_path, "region_prices: {RU-MOW: 210, RU-MOS: 210, RU-BRY: 85}",
                         "region_prices: {RU-MOW: 250, RU-MOS: 210, RU-BRY: 85}")
    prices = SCENARIOS / "redeem_prices.yaml"
    r = run("--catalog", bad, "check", "--scenario", prices)
    assert r.exit_code == 1
    line = step_line(prices, "redeem: {phone: 9167100001, code: minutes_30}")
    expected_block = (f"FAIL {prices}:{line}: step 9: bonuscli redeem 9167100001 minutes_30 --at 2025-03-04T10:00\n"
                      "  points_spent: expected 210, got 250\n"
                      "  balance: expected 940, got 900\n")
    assert expected_block in r.stdout
    assert re.search(r"redeem_prices\.yaml\s+Redemption at regional prices\s+\d+/32\s+FAIL", r.stdout)
    assert r.stdout.rstrip().endswith("1 scenario: 0 passed, 1 failed")
    assert r.stderr.startswith("error: 1 of 1 scenarios failed")
    assert r.stderr.count("\n") == 1


def test_tenure_table_change_fails_tenure_and_calc(run, tmp_path):
    bad = broken_catalog(tmp_path, '- {up_to_months: 12, coefficient: "1.1"}',
                         '- {up_to_months: 12, coefficient: "1.15"}')
    tenure = SCENARIOS / "tenure.yaml"
    files = [tenure, SCENARIOS / "calc.yaml", SCENARIOS / "earning.yaml", SCENARIOS / "card.yaml"]
    r = run("--catalog", bad, "check", "--scenario", *files, "--json")
    assert r.exit_code == 1
    res = by_file(r.json)
    assert res["earning.yaml"]["result"] == "pass"   # every earn there is at 1.0
    assert res["card.yaml"]["result"] == "pass"      # card has no tenure; its mobile earn is at 1.3
    assert res["calc.yaml"]["result"] == "fail"
    assert res["tenure.yaml"]["result"] == "fail"
    fails = res["tenure.yaml"]["failures"]
    # 100 RUB mobile on 2025-03-02, customer since 2024-09-01: 100 x 1.15 / 5 = 23, not 22
    line = step_line(tenure, "earn: {phone: 9163100001, amount: 100, category: mobile}", occurrence=2)
    mine = [f for f in fails if f["line"] == line]
    assert {(f["field"], f["expected"], f["got"]) for f in mine} == {("coefficient", "1.1", "1.15"),
                                                                      ("points", 22, 23)}
    calc_fails = {(f["field"], f["expected"], f["got"]) for f in res["calc.yaml"]["failures"]}
    assert ("points", 109, 114) in calc_fails   # 499 x 1.15 / 5 = 114.77
    assert ("points", 22, 23) in calc_fails


def test_welcome_change_fails_joining_not_calc(run, tmp_path):
    bad = broken_catalog(tmp_path, "welcome: 150 ", "welcome: 100 ")
    joining = SCENARIOS / "joining.yaml"
    r = run("--catalog", bad, "check", "--scenario", joining, SCENARIOS / "calc.yaml", "--json")
    assert r.exit_code == 1
    res = by_file(r.json)
    assert res["calc.yaml"]["result"] == "pass"
    fails = res["joining.yaml"]["failures"]
    first = fails[0]
    assert first["line"] == step_line(joining, "join: {phone: 9160000001}")
    assert (first["field"], first["got"]) == ("welcome", [{"reason": "welcome", "points": 100}])
    assert {"field": "balance", "expected": 150, "got": 100} in [
        {k: f[k] for k in ("field", "expected", "got")} for f in fails]
    # the full web form gives 100 + 100 + 10 = 210, not 260
    web = [f for f in fails if f["line"] == step_line(joining, "balance: 9160000007")]
    assert [(f["field"], f["expected"], f["got"]) for f in web] == [("available", 260, 210)]


def test_looser_gift_limit_fails_the_refusal_step(run, tmp_path):
    bad = broken_catalog(tmp_path, "per_day: 1\n", "per_day: 2\n")
    gifts = SCENARIOS / "gifts.yaml"
    r = run("--catalog", bad, "check", "--scenario", gifts)
    assert r.exit_code == 1
    line = step_line(gifts, "gift: {from: 9167000001, to: 9167000005, points: 100}")
    assert f"FAIL {gifts}:{line}: step 13: bonuscli gift 9167000001 9167000005 100 --at 2025-03-04T15:00\n" \
           "  exit: expected 1, got 0\n" in r.stdout


# ---------------------------------------------------------------- invalid scenario files: exit 3, file:line


INVALID = [
    ("steps:\n  - at: 2025-03-03T10:00\n    jump: {phone: 9160000001}\n", 3, "step 1: unknown command 'jump'"),
    ("steps:\n  - join: {phone: 9160000001, region: RU-MOW}\n", 2, "step 1: missing `at`"),
    ("steps:\n  - at: 2025-13-40\n    balance: 9160000001\n", 2, "step 1: at: not an ISO date or date-time"),
    ("steps:\n  - at: [2025\n", 3, "malformed YAML"),
    ("name: x\nsteps: []\n", 2, "steps: give a list of steps"),
    ("name: x\n", 1, "the scenario has no `steps:`"),
    ("name: x\ncolour: red\nsteps:\n  - at: 2025-03-03\n    calc: {amount: 1, category: mobile}\n", 2,
     "unknown key 'colour'"),
    ("steps:\n  - at: 2025-03-03\n    calc: {amount: 1, category: mobile}\n  - at: 2025-03-03\n"
     "    earn: {phone: 9160000001, amount: 1, category: mobile, colour: red}\n", 5,
     "step 2: earn: unknown key 'colour'"),
    ("steps:\n  - at: 2025-03-03\n    join: {phone: 9160000001}\n", 3, "step 1: join needs region"),
    ("steps:\n  - at: 2025-03-03\n    balance: 9160000001\n    expect: {exit: 7}\n", 4,
     "step 1: expect: exit must be 0, 1, 2 or 3"),
    ("steps:\n  - at: 2025-03-03\n    balance: 9160000001\n    leave: 9160000001\n", 4,
     "step 1: one command per step"),
    ("catalog: nowhere.yaml\nsteps:\n  - at: 2025-03-03\n    balance: 9160000001\n", 1,
     "catalog: no such file nowhere.yaml"),
    ("members:\n  12345: {region: RU-MOW}\nsteps:\n  - at: 2025-03-03\n    balance: 9160000001\n", 2,
     "members: not a phone number"),
    ("steps:\n  - at: 2025-03-03\n    gift: {from: 9160000001, to: 9160000002, points: 1}\n    as: g\n"
     "  - at: 2025-03-03\n    gift: {from: 9160000001, to: 9160000002, points: 1}\n    as: g\n", 7,
     "step 2: label 'g' is used twice"),
    ("- at: 2025-03-03\n", 1, "a scenario is a mapping with `steps:`"),
]


@pytest.mark.parametrize("text,line,message", INVALID)
def test_invalid_scenario_exit_3_with_file_line(run, tmp_path, text, line, message):
    p = write(tmp_path, "bad.yaml", text)
    r = run("check", "--scenario", p)
    assert r.exit_code == 3, r.stdout + r.stderr
    problems = [l for l in r.stderr.splitlines() if not l.startswith("error: ")]
    assert any(l.startswith(f"{p}:{line}: {message}") for l in problems), r.stderr
    assert r.stderr.splitlines()[-1] == "error: 1 scenario file is invalid (see the file:line lines above)"
    assert re.search(r"bad\.yaml\s+\S+\s+-\s+INVALID", r.stdout)


def test_invalid_file_does_not_stop_the_others_and_wins_exit_3(run, tmp_path):
    bad = write(tmp_path, "bad.yaml", "steps:\n  - at: 2025-03-03T10:00\n    jump: {}\n")
    failing = write(tmp_path, "fails.yaml", "steps:\n  - at: 2025-03-03\n    calc: {amount: 500, category: mobile}\n"
                                            "    expect: {points: 99}\n")
    r = run("check", "--scenario", bad, failing, SCENARIOS / "calc.yaml", "--json")
    assert r.exit_code == 3
    res = by_file(r.json)
    assert [res[n]["result"] for n in ("bad.yaml", "fails.yaml", "calc.yaml")] == ["invalid", "fail", "pass"]
    assert res["bad.yaml"]["problems"] == [{"path": str(bad), "line": 3,
                                            "message": res["bad.yaml"]["problems"][0]["message"]}]
    assert r.json["total"] == {"scenarios": 3, "passed": 1, "failed": 1, "invalid": 1}
    err = json.loads(r.stderr.splitlines()[-1])
    assert err["error"]["code"] == 3 and err["error"]["kind"] == "scenario-invalid"


def test_invalid_scenario_subprocess_no_traceback(sub, tmp_path):
    p = write(tmp_path, "bad.yaml", "steps:\n  - at: 2025-03-03T10:00\n    jump: {phone: 1}\n")
    r = sub(["check", "--scenario", str(p)])
    assert r.returncode == 3
    assert "Traceback" not in r.stderr
    assert r.stderr.splitlines()[0].startswith(f"{p}:3: step 1: unknown command 'jump'")
    assert r.stderr.splitlines()[-1].startswith("error: ")


def test_missing_scenario_file_is_exit_3(run, tmp_path):
    r = run("check", "--scenario", tmp_path / "nope.yaml")
    assert r.exit_code == 3
    assert f"{tmp_path / 'nope.yaml'}:1: no such scenario file" in r.stderr


def test_scenario_with_invalid_catalog_is_exit_3(run, tmp_path):
    bad = broken_catalog(tmp_path, "welcome: 150 ", "welcome: lots ")
    r = run("--catalog", bad, "check", "--scenario", SCENARIOS / "calc.yaml")
    assert r.exit_code == 3
    assert re.search(rf"^{re.escape(str(bad))}:\d+: bonuses: welcome", r.stderr, re.M), r.stderr


def test_check_scenario_needs_files(run):
    r = run("check", "--scenario")
    assert r.exit_code == 2


# ---------------------------------------------------------------- the format's parts


def test_failures_with_expected_refusal_and_unexpected_refusal(run, tmp_path):
    p = write(tmp_path, "s.yaml", """\
members:
  9160000001: {region: RU-MOW}
steps:
  - at: 2025-03-03T10:00
    join: {phone: 9160000001}
  - at: 2025-03-03T10:05
    redeem: {phone: 9160000001, code: minutes_30}
  - at: 2025-03-03T10:06
    redeem: {phone: 9160000001, code: mms_10}
    expect: {exit: 1, error_kind: insufficient-points}
  - at: 2025-03-03T10:07
    earn: {phone: 9160000001, amount: 100, category: utilities}
    expect: {error_kind: limit-reached}
  - at: 2025-03-03T10:08
    balance: 9160000001
    expect: {available: 90, nothing.here: 1}          # 150 - 60 (mms_10 in Moscow)
""")
    r = run("check", "--scenario", p, "--json")
    assert r.exit_code == 1
    s = r.json["scenarios"][0]
    assert (s["steps"], s["passed"]) == (5, 1)
    got = [(f["line"], f["step"], f["field"], f["expected"], f["got"]) for f in s["failures"]]
    assert got == [
        (6, 2, "exit", 0, 1),                       # no expect: the step must succeed
        (8, 3, "exit", 1, 0),                       # mms_10 (60 in Moscow) was affordable
        (11, 4, "error_kind", "limit-reached", "not-eligible"),
        (14, 5, "nothing.here", 1, None),
    ]
    assert s["failures"][0]["message"].startswith("exit: expected 0, got 1 (insufficient-points: ")
    assert s["failures"][3]["message"] == "nothing.here: expected 1, got (not in the output)"


def test_labels_dotted_paths_lengths_and_numbers(run, tmp_path):
    p = write(tmp_path, "s.yaml", """\
name: labels and paths
members:
  "+7 (916) 000-00-01": {region: RU-MOW, customer_since: 2023-01-01}
  89160000002: {region: RU-MOW}
steps:
  - at: 2025-03-03T10:00
    join: {phone: 9160000001}
    expect: {welcome.0.points: 150, welcome.length: 1, customer_since: 2023-01-01}
  - at: 2025-03-03T10:00
    join: {phone: 9160000002}
  - at: 2025-03-03T11:00
    earn: {phone: 9160000001, amount: 100, category: mobile}
    expect: {coefficient: 1.3, amount: 100, points: 26}
  - at: 2025-03-03T12:00
    gift: {from: 9160000001, to: 9160000002, points: 76}
    as: present
  - at: 2025-03-03T12:30
    balance: 9160000002
    expect: {pending_in.-1.points: 76, pending_in.0.deadline: 2025-04-02T12:00:00+03:00}
  - at: 2025-03-03T13:00
    accept: {phone: 9160000002, gift: present}
    expect: {status: accepted, balance: 226}
  - at: 2025-03-03T14:00
    history: 9160000002
    expect: {-1.type: gift_accept, -1.balance: 226}
""")
    r = run("check", "--scenario", p, "--json")
    assert r.exit_code == 0, r.stdout
    assert r.json["scenarios"][0]["passed"] == 7


def test_catalog_relative_to_the_scenario_file(run, tmp_path):
    d = tmp_path / "sub"
    d.mkdir()
    broken_catalog(d, "welcome: 150 ", "welcome: 120 ", name="mine.yaml")
    p = write(d, "s.yaml", "catalog: mine.yaml\nsteps:\n  - at: 2025-03-03\n"
                           "    join: {phone: 9160000001, region: RU-MOW}\n    expect: {balance: 120}\n")
    r = run("check", "--scenario", p)
    assert r.exit_code == 0, r.stdout + r.stderr


def test_catalog_overrides(run, tmp_path):
    p = write(tmp_path, "s.yaml", """\
catalog_overrides:
  bonuses.welcome: 200
  rewards.minutes_30.region_prices.RU-MOW: 111
steps:
  - at: 2025-03-03
    join: {phone: 9160000001, region: RU-MOW}
    expect: {balance: 200}
  - at: 2025-03-03
    redeem: {phone: 9160000001, code: minutes_30}
    expect: {points_spent: 111, balance: 89}
""")
    r = run("check", "--scenario", p)
    assert r.exit_code == 0, r.stdout + r.stderr
    bad = write(tmp_path, "b.yaml", "catalog_overrides:\n  bonuses.nothing.here: 1\n"
                                    "steps:\n  - at: 2025-03-03\n    calc: {amount: 1, category: mobile}\n")
    r = run("check", "--scenario", bad)
    assert r.exit_code == 3
    assert f"{bad}:2: catalog_overrides: the catalog has no bonuses.nothing" in r.stderr
    invalid = write(tmp_path, "c.yaml", "catalog_overrides:\n  bonuses.welcome: -5\n"
                                        "steps:\n  - at: 2025-03-03\n    calc: {amount: 1, category: mobile}\n")
    r = run("check", "--scenario", invalid)
    assert r.exit_code == 3
    assert f"{invalid}:2: catalog_overrides make the catalog invalid: " in r.stderr


def test_each_scenario_starts_from_an_empty_data_dir(run, tmp_path):
    text = ("steps:\n  - at: 2025-03-03\n    join: {phone: 9160000001, region: RU-MOW}\n"
            "    expect: {balance: 150, welcome.length: 1}\n")
    a, b = write(tmp_path, "a.yaml", text), write(tmp_path, "b.yaml", text)
    r = run("check", "--scenario", a, b)
    assert r.exit_code == 0, r.stdout + r.stderr


# ---------------------------------------------------------------- the matcher


@pytest.mark.parametrize("expected,got,ok", [
    (150, 150, True), (150, 151, False), (150, "150", True), (1.1, "1.1", True), (1.1, "1.10", True),
    (10, "10.00", True), (10, "10.01", False), ("1.1", "1.10", False), ("abc", "abc", True),
    (True, True, True), (True, 1, False), (1, True, False), (None, None, True), (None, 0, False),
    (0, None, False), ([1, 2], [1, 2], True), ([1, 2], [1, 2, 3], False), ({"a": 1}, {"a": 1, "b": 2}, True),
    ({"a": 1, "c": 3}, {"a": 1, "b": 2}, False), ([{"a": 1}], [{"a": 1, "b": 0}], True), ("150", 150, False),
])
def test_matches(expected, got, ok):
    assert scenario_mod.matches(expected, got) is ok


@pytest.mark.parametrize("doc,path,value", [
    ({"a": {"b": 3}}, "a.b", 3), ({"a": [1, 2, 3]}, "a.length", 3), ({"a": [1, 2, 3]}, "a.-1", 3),
    ({"a": [1, 2, 3]}, "a.3", scenario_mod.MISSING), ({"a": None}, "a.b", scenario_mod.MISSING),
    ([{"t": "x"}], "0.t", "x"),
])
def test_lookup(doc, path, value):
    assert scenario_mod.lookup(doc, path) is value or scenario_mod.lookup(doc, path) == value


def test_docs_example_scenario_passes(run, tmp_path):
    """The full example of docs/ci.md runs as documented."""
    text = (ROOT / "docs" / "ci.md").read_text()
    example = re.search(r"```yaml\n(# scenarios/example\.yaml\n.*?)```", text, re.S).group(1)
    (tmp_path / "scenarios").mkdir()
    (tmp_path / "catalog.yaml").write_text(CATALOG.read_text())
    p = write(tmp_path / "scenarios", "example.yaml", example)
    r = run("check", "--scenario", p, "--json")
    assert r.exit_code == 0, r.stdout + r.stderr
    assert r.json["scenarios"][0]["passed"] == r.json["scenarios"][0]["steps"] == 9


def test_history_is_always_a_list(run, tmp_path):
    p = write(tmp_path, "h.yaml", "steps:\n  - at: 2025-03-03\n    join: {phone: 9160000001, region: RU-MOW, method: web}\n"
                                  "  - at: 2025-03-03T01:00\n    history: 9160000001\n"
                                  "    expect: {length: 1, 0.type: join, 0.points: 0}\n")
    r = run("check", "--scenario", p)
    assert r.exit_code == 0, r.stdout + r.stderr
