"""Issue 16, item 5: a catalog that `check` accepts never crashes a command.

Every rule number is bounded by `check` (exit 3, `file:line: message`) so that a date computed from
a date in range (years 1900-9000: an expiry, an activation, a gift deadline, a reward's end, a
tenure step) stays a date, and points and money stay within exact arithmetic. The property test
mutates the shipped catalog (random numbers into its numeric fields, random deletions) and runs
the everyday commands under every mutant that `check` passes: none may exit 3.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bonuscli.cli import cli

ROOT = Path(__file__).resolve().parent.parent
CATALOG_TEXT = (ROOT / "catalog.yaml").read_text(encoding="utf-8")
A, B, C, D = "9161234567", "9167654321", "9031112233", "9034445566"


def invoke(args, catalog, data, at):
    r = CliRunner().invoke(cli, ["--catalog", str(catalog), "--data-dir", str(data), "--at", at, "--json",
                                 *map(str, args)], catch_exceptions=False)
    return r


def error_of(r) -> dict:
    lines = [line for line in r.stderr.splitlines() if line.startswith("{")]
    return json.loads(lines[-1])["error"] if lines else {}


def edited(tmp_path, old, new, name="cat.yaml"):
    assert CATALOG_TEXT.count(old) >= 1, old
    text = CATALOG_TEXT.replace(old, new, 1)
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    line = text[: text.index(new)].count("\n") + 1
    return p, line


# ---------------------------------------------------------------- the values of the issue, one by one


@pytest.mark.parametrize("old, new, words", [
    ("points_validity_months: 12 ", "points_validity_months: 100000 ", "points_validity_months must be at most 1,200"),
    ("    validity_days: 30\n", "    validity_days: 10000000\n", "validity_days must be at most 36,600"),
    ("accept_days: 30 ", "accept_days: 100000000 ", "accept_days must be at most 36,600"),
    ("web: {hours: 48} ", "web: {hours: 100000000} ", "hours must be at most 876,000"),
    ("card: {working_days: 7} ", "card: {working_days: 100000000} ", "working_days must be at most 26,100"),
    ("- {up_to_months: 24, coefficient: \"1.2\"}", "- {up_to_months: 2400000, coefficient: \"1.2\"}",
     "up_to_months must be at most 1,200"),
    ("- {up_to_months: 12, coefficient: \"1.1\"}", "- {up_to_months: 12.5, coefficient: \"1.1\"}",
     "up_to_months must be"),
    ("- {up_to_months: 12, coefficient: \"1.1\"}", "- {up_to_months: 12, coefficient: \"1e100000\"}",
     "coefficient must be at most 100"),
    ("- {up_to_months: 12, coefficient: \"1.1\"}", "- {up_to_months: 12, coefficient: \"1.100000000000000000000000000001\"}",
     "coefficient must have at most 4 decimals"),
    ("  points_per_rub: 10\n", "  points_per_rub: 1000000000000000000000000000000\n", "points_per_rub must be at most"),
    ("max_share: \"0.99\"", "max_share: \"0.999999999999999999999999999999\"", "max_share must have at most 4 decimals"),
    ("closing_date: null ", "closing_date: \"9999-12-31\" ", "closing_date must be between 1900 and 9000"),
    ("welcome: 150 ", "welcome: 100000000000000000000 ", "welcome must be at most 999,999,999"),
    ("amount_max: \"1000000.00\"", "amount_max: \"1e400\"", "amount_max must be at most"),
])
def test_check_refuses_a_number_that_would_break_a_command(run, tmp_path, old, new, words):
    path, line = edited(tmp_path, old, new)
    r = run("check", "--catalog", path)
    assert r.exit_code == 3, (r.stdout, r.stderr)
    problems = [p for p in r.stderr.splitlines() if not p.startswith("error: ")]
    assert any(p.startswith(f"{path}:{line}: ") and words in p for p in problems), (line, r.stderr)
    r = run("check", "--catalog", path, "--json")
    assert r.exit_code == 3 and error_of(r)["kind"] == "catalog-invalid", r.stderr
    # and a command under it says the catalog is invalid (exit 3), naming the line; it never crashes
    r = run("--catalog", path, "balance", A, "--json")
    assert r.exit_code == 3 and error_of(r)["kind"] == "catalog-invalid", r.stderr


def test_bounds_at_their_limit_are_valid_and_work_from_year_9000(tmp_path):
    """The largest accepted values, used from the last date in range: every date stays a date."""
    text = (CATALOG_TEXT.replace("points_validity_months: 12 ", "points_validity_months: 1200 ")
            .replace("accept_days: 30 ", "accept_days: 36600 ")
            .replace("web: {hours: 48} ", "web: {hours: 876000} ")
            .replace("card: {working_days: 7} ", "card: {working_days: 26100} ")
            .replace("    validity_days: 30\n", "    validity_days: 36600\n", 1)
            .replace("- {up_to_months: 24, coefficient: \"1.2\"}", "- {up_to_months: 1200, coefficient: \"1.2\"}"))
    cat = tmp_path / "big.yaml"
    cat.write_text(text, encoding="utf-8")
    data = tmp_path / "d"
    assert invoke(["check"], cat, data, "2025-03-01").exit_code == 0
    at = "9000-12-31T12:00"
    steps = [["join", A, "--region", "RU-MOW", "--customer-since", "1900-01-01"], ["join", B, "--region", "RU-MOW"],
             ["join", C, "--region", "RU-MOW", "--method", "web"], ["join", D, "--region", "RU-MOW", "--method", "card"],
             ["earn", A, "500", "--category", "mobile"], ["redeem", A, "minutes_30"], ["gift", A, B, "10"],
             ["balance", A], ["balance", B], ["balance", C], ["balance", D], ["forecast", A, "--days", "36600"],
             ["report"], ["calc", "500", "--category", "mobile", "--customer-since", "1900-01-01"]]
    for args in steps:
        r = invoke(args, cat, data, at)
        assert r.exit_code in (0, 1), (args, r.exit_code, r.stderr)


# ---------------------------------------------------------------- the property


NUMBER = re.compile(r'(?<![\w.+-])("?)(-?\d+(?:\.\d+)?)\1(?![\w.:-])')
SPOTS = [(m.start(2), m.end(2)) for m in NUMBER.finditer(CATALOG_TEXT)
         if CATALOG_TEXT.count("\n", 0, m.start()) + 1 > 10]  # not the header comments' years
VALUES = st.one_of(
    st.integers(-2, 60),
    st.integers(0, 10 ** 6),
    st.sampled_from([0, 1, 1200, 1201, 36600, 36601, 876000, 876001, 26100, 26101, 999_999_999, 10 ** 9,
                     10 ** 12, 10 ** 13, 2 ** 63, 10 ** 30, 10 ** 100]),
    st.sampled_from(["0.5", "0.0001", "0.00001", "99.9999", "100.0001", "1e30", "1e-30", "12.5", "3000.005"]),
)


@st.composite
def mutants(draw):
    """The shipped catalog with 1-3 numbers replaced and maybe a line deleted; also the reward code
    nearest to the last change (to order that reward)."""
    text = CATALOG_TEXT
    changes = sorted(draw(st.lists(st.sampled_from(SPOTS), min_size=1, max_size=3, unique=True)), reverse=True)
    for start, end in changes:
        text = text[:start] + str(draw(VALUES)) + text[end:]
    if draw(st.booleans()):
        lines = text.splitlines(keepends=True)
        del lines[draw(st.integers(20, len(lines) - 1))]
        text = "".join(lines)
    before = text[: changes[-1][0]]
    codes = re.findall(r"(?m)^  - code: (\w+)", before)
    return text, codes[-1] if codes else "minutes_30"


def commands(code):
    return [
        ["join", A, "--region", "RU-MOW"], ["join", B, "--region", "RU-MOW"],
        ["join", C, "--region", "RU-MOW", "--method", "web"], ["join", D, "--region", "RU-MOW", "--method", "card"],
        ["adjust", A, "500000", "--reason", "test"],
        ["earn", A, "500", "--category", "mobile", "--ref", "e1"], ["earn", A, "3000", "--category", "card"],
        ["redeem", A, code], ["redeem", A, "store_discount", "--via", "store", "--price", "999.99"],
        ["gift", A, B, "10"], ["balance", A], ["balance", C], ["balance", D], ["forecast", A], ["history", A],
        ["refund", A, "e1", "--amount", "100"], ["report"], ["calc", "500", "--category", "mobile", "--tenure-months", "13"],
        ["calc", "999", "--category", "card", "--card-last-month", "20000"],
    ]


def accept_all(cat, data, at):
    r = invoke(["balance", B], cat, data, at)
    if r.exit_code != 0:
        return [r]
    return [invoke(["accept", B, g["gift_id"]], cat, data, at) for g in json.loads(r.stdout)["pending_in"]]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(mutant=mutants())
@example(mutant=(CATALOG_TEXT.replace("points_validity_months: 12 ", "points_validity_months: 100000 "), "minutes_30"))
@example(mutant=(CATALOG_TEXT.replace("accept_days: 30 ", "accept_days: 100000000 "), "minutes_30"))
@example(mutant=(CATALOG_TEXT.replace("    validity_days: 30\n", "    validity_days: 10000000\n", 1), "minutes_30"))
@example(mutant=(CATALOG_TEXT.replace("web: {hours: 48} ", "web: {hours: 100000000} "), "minutes_30"))
@example(mutant=(CATALOG_TEXT.replace("  points_per_rub: 10\n", "  points_per_rub: 100000000000000000000000\n"),
                 "minutes_30"))
def test_a_catalog_check_passes_never_makes_a_command_exit_3(tmp_path_factory, mutant):
    text, code = mutant
    tmp = tmp_path_factory.mktemp("mutant")
    cat = tmp / "catalog.yaml"
    cat.write_text(text, encoding="utf-8")
    r = invoke(["check"], cat, tmp / "none", "2025-03-01")
    assert r.exit_code in (0, 3), (r.exit_code, r.stderr[-500:])
    if r.exit_code == 3:
        assert error_of(r)["kind"] == "catalog-invalid"
        return
    for at in ("2025-03-01T12:00", "9000-12-30T12:00"):
        data = tmp / f"data-{at[:4]}"
        results = [(args, invoke(args, cat, data, at)) for args in commands(code)]
        results += [(["accept"], r) for r in accept_all(cat, data, at)]
        for args, r in results:
            assert r.exit_code != 3, (at, args, r.stderr[-800:])
