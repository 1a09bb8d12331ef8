"""What a person at a shell and a program's operator expect (issue 17), through the CLI: formats,
filters, regions, did-you-mean, one exit code per kind of mistake, debt shown, help and completion."""

from __future__ import annotations

import csv
import io
import json

import pytest

from conftest import ROOT

A, B = "9163330001", "9163330002"


def err_of(r):
    return json.loads(r.stderr.strip().splitlines()[-1])["error"]


@pytest.fixture
def pair(run):
    run.ok("join", A, "--region", "RU-MOW", "--at", "2025-01-10T10:00")
    run.ok("join", B, "--region", "RU-MOW", "--at", "2025-01-10T10:00")
    run.ok("earn", A, "1000", "--category", "mobile", "--ref", "t1", "--at", "2025-01-15T10:00")
    run.ok("redeem", A, "minutes_30", "--at", "2025-02-01T10:00")
    return run


# ---------------------------------------------------------------- formats


def test_csv_and_tsv_give_a_header_and_rows(pair):
    r = pair.ok("history", A, "--format", "csv", "--at", "2025-03-01")
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert [row["type"] for row in rows] == ["join", "welcome", "earn", "redeem"]
    assert rows[2]["points"] == "200" and rows[2]["ref"] == "t1"
    r = pair.ok("balance", A, "--format", "tsv", "--at", "2025-03-01")
    header, row = r.stdout.rstrip("\n").split("\n")
    record = dict(zip(header.split("\t"), row.split("\t")))
    assert record["available"] == str(150 + 200 - 210) and record["phone"] == A
    # before the command too, and --json is --format json
    r = pair.ok("--format", "csv", "regions")
    assert r.stdout.startswith("code,name\n") and "RU-MOW,Moscow" in r.stdout
    assert pair.j("balance", A, "--at", "2025-03-01") == json.loads(
        pair.ok("balance", A, "--format", "json", "--at", "2025-03-01").stdout)


def test_history_rows_have_unique_ids_and_one_key_set(pair):
    rows = [json.loads(line) for line in pair.ok("history", A, "--json", "--at", "2025-03-01").stdout.splitlines()]
    assert len({r["id"] for r in rows}) == len(rows)
    assert len({tuple(r) for r in rows}) == 1
    assert rows[0]["event"] == rows[1]["event"]  # the join and its welcome: one ledger line


def test_history_filters(pair):
    def types(*args):
        return [json.loads(line)["type"] for line in
                pair.ok("history", A, "--json", "--at", "2025-03-01", *args).stdout.splitlines()]

    assert types("--type", "earn,redeem") == ["earn", "redeem"]
    assert types("--from", "2025-01-12") == ["earn", "redeem"]
    assert types("--until", "2025-01-10") == ["join", "welcome"]
    r = pair("history", A, "--type", "earnn", "--json")
    assert r.exit_code == 2 and "did you mean 'earn'" in err_of(r)["message"]


# ---------------------------------------------------------------- regions and did-you-mean


def test_regions_and_any_letter_case(run, data_dir):
    doc = run.j("regions")
    assert len(doc) == 83 and {"code": "RU-BRY", "name": "Bryansk Oblast"} in doc
    assert run.j("catalog", "minutes_30", "--region", "ru-bry")["price"] == 85
    r = run("catalog", "--region", "moskow", "--json")  # a misspelt name (`moscow` is RU-MOW: tests/test_names.py)
    assert r.exit_code == 2 and err_of(r)["kind"] == "unknown-region" and "RU-MOW" in err_of(r)["message"]


@pytest.mark.parametrize("args, kind, hint", [
    (("catalog", "minutes30"), "unknown-reward", "minutes_30"),
    (("calc", "100", "--category", "mobil"), "unknown-category", "mobile"),
    (("join", A, "--region", "MOW"), "unknown-region", "RU-MOW"),
])
def test_did_you_mean(run, args, kind, hint):
    r = run(*args, "--json")
    assert r.exit_code == 2 and err_of(r)["kind"] == kind
    assert f"did you mean '{hint}'" in err_of(r)["message"]


# ---------------------------------------------------------------- one exit code per kind of mistake


@pytest.mark.parametrize("args", [
    ("gift", A, B, "0"), ("gift", A, B, "-5"), ("earn", A, "-100", "--category", "mobile"),
    ("adjust", A, "0", "--reason", "x"), ("redeem", A, "store_discount", "--via", "store", "--price", "100",
                                          "--points", "-5"),
    ("redeem", A, "store_discount", "--via", "store", "--price", "0"), ("forecast", A, "--days", "999999999"),
])
def test_non_positive_counts_are_bad_input(pair, args):
    r = pair(*args, "--at", "2025-03-01", "--json")
    assert r.exit_code == 2, r.stderr
    assert "No such option" not in r.stderr


def test_leaving_twice_says_already_left(pair):
    pair.ok("leave", B, "--yes", "--at", "2025-03-01")
    r = pair("leave", B, "--yes", "--at", "2025-03-02", "--json")
    assert r.exit_code == 1 and err_of(r)["kind"] == "already-left"


def test_a_missing_data_directory_is_named_and_not_created(run, tmp_path):
    missing = tmp_path / "typo"
    for args in (("balance", A), ("report",), ("check", "--ledgers"), ("history", A)):
        r = run(*args, "--data-dir", missing, "--json")
        assert r.exit_code == 2 and err_of(r)["kind"] == "no-data-dir" and str(missing) in err_of(r)["message"]
    assert not missing.exists()


def test_a_bad_lock_timeout_is_bad_input(run, data_dir):
    r = run("balance", A, "--json", env={"BONUSCLI_LOCK_TIMEOUT": "abc"})
    assert r.exit_code == 2 and err_of(r)["kind"] == "usage"


def test_a_catalog_error_names_the_catalog_in_use(run, tmp_path):
    bad = tmp_path / "mine.yaml"
    bad.write_text((ROOT / "catalog.yaml").read_text().replace("points_validity_months: 12",
                                                                "points_validity_months: -1")
                   .replace("welcome: 150", "welcome: -3"))
    r = run("calc", "100", "--category", "mobile", "--catalog", bad, "--json")
    assert r.exit_code == 3
    assert f"bonuscli check --catalog {bad}" in err_of(r)["message"]


@pytest.mark.parametrize("at", ["2025-02-02T10:00:00.5", "2025-02-02T10:00:00,25"])
def test_at_refuses_what_it_cannot_keep(run, at):
    r = run("calc", "100", "--category", "mobile", "--at", at, "--json")
    assert r.exit_code == 2 and err_of(r)["kind"] == "bad-date"


def test_at_keeps_a_z(run, data_dir):
    assert run.j("join", A, "--region", "RU-MOW", "--at", "2025-02-02Z")["joined_at"] == "2025-02-02T03:00:00+03:00"


# ---------------------------------------------------------------- debt shown everywhere


def test_every_crediting_command_shows_debt_repaid_and_debt(pair):
    # 150 welcome + 200 earned - 210 redeemed = 140; the refund takes 200 back: 140 taken, 60 debt
    pair.ok("refund", A, "t1", "--at", "2025-02-02T10:00")
    assert pair.j("balance", A, "--at", "2025-02-03")["debt"] == 60
    doc = pair.j("adjust", A, "50", "--reason", "goodwill", "--at", "2025-02-03T10:00")
    assert (doc["debt_repaid"], doc["debt"], doc["balance"]) == (50, 10, 0)
    r = pair.ok("earn", A, "500", "--category", "mobile", "--at", "2025-02-04T10:00")
    assert "debt_repaid    10" in r.stdout and "debt           0" in r.stdout and "balance        90" in r.stdout
    rows = [json.loads(line) for line in pair.ok("history", A, "--json", "--at", "2025-02-05").stdout.splitlines()]
    assert [r["debt_repaid"] for r in rows if r["type"] in ("adjust", "earn")][-2:] == [50, 10]
    table = pair.ok("history", A, "--at", "2025-02-05").stdout
    assert "(50 repaid debt)" in table and "(10 repaid debt)" in table
    steps = pair.j("explain", A, "--at", "2025-02-05")["steps"]
    assert steps[0]["debt_repaid"] == 60


def test_explain_rounds_what_it_shows(run, data_dir):
    doc = run.j("calc", "100", "--category", "mts_store", "--explain")
    formula = next(s for s in doc["steps"] if s["rule"] == "formula")
    assert formula["exact"] == "33.333333..." and "33.333333... -> floor -> 33" in formula["detail"]


# ---------------------------------------------------------------- charts, help, completion


def test_report_prints_its_reconciliation_and_charts(pair):
    out = pair.ok("report", "--at", "2025-03-01").stdout
    assert "earned 500 + adjusted 0 - redeemed 210 - expired 0 - refunded 0 - forfeited 0 = 290" in out
    assert "outstanding 290 + held 0 - debt 0 = 290" in out
    assert "expiring:" in out and "█" in out


def test_charts_are_plain_ascii_when_stdout_is_not_utf8(pair, sub):
    r = sub(["forecast", A, "--at", "2025-03-01"], env={"PYTHONIOENCODING": "ascii"})
    assert r.returncode == 0, r.stderr
    assert "#" in r.stdout and "█" not in r.stdout


def test_subcommand_help_lists_its_own_options_first(run):
    text = run.ok("earn", "--help").stdout
    assert text.index("--category") < text.index("--data-dir")


def test_join_help_example_pastes(run, data_dir):
    text = run.ok("join", "--help").stdout
    line = next(ln.strip() for ln in text.splitlines() if ln.strip().startswith("bonuscli join"))
    import shlex

    args = shlex.split(line)[1:]
    assert run(*args, "--at", "2025-01-01").exit_code == 0


def test_completion_of_methods_and_pending_gift_ids(pair):
    from click.shell_completion import ShellComplete

    from bonuscli.cli import cli

    def complete(args, incomplete):
        comp = ShellComplete(cli, {}, "bonuscli", "_BONUSCLI_COMPLETE")
        return [c.value for c in comp.get_completions(args, incomplete)]

    assert complete(["join", A, "--method"], "w") == ["web", "wallet"]
    g = pair.j("gift", A, B, "10", "--at", "2025-02-10T10:00")
    assert complete(["accept", B, "--at", "2025-02-11"], "") == [g["gift_id"]]
    assert "utilities" not in complete(["earn", A, "100", "--category"], "")
