"""Issue 24, item 5: small frictions, fixed as CLI.md now says.

1. A zero or negative amount is "must be more than 0" (bad-amount, exit 2), not the decimals message.
2. A read whose output pipe closes early (`| head`) exits 0 with nothing on stderr.
3. A missing option that takes one of a few values (`export` without `--format`) lists them on one
   clean line, without Click's tabs.
4. A `--catalog` file that does not exist is bad input: exit 2.
5. `--from`/`--until` take `YYYY`, `YYYY-MM` or `YYYY-MM-DD` (from the first day, until the last), and
   a range that ends before it starts is exit 2.
6. A channel refusal of the default channel (`web`, never typed) names it as the default and the
   option to add; a channel the user typed keeps the plain refusal.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT

A = "9161234567"


def err_of(r):
    """The JSON error object a --json run printed on stderr."""
    return json.loads(r.stderr.strip().splitlines()[-1])["error"]


@pytest.fixture
def member(run):
    run.ok("join", A, "--region", "RU-MOW", "--at", "2025-02-01")
    return A


# ---------------------------------------------------------------- 1. a zero or negative amount


@pytest.mark.parametrize("amount", ["-50", "0", "-0", "0.00", "-0.5", "-1.234"])
def test_earn_zero_or_negative_amount_is_more_than_0(run, member, amount):
    r = run("earn", member, amount, "--category", "mobile", "--json")
    assert r.exit_code == 2, r.stderr
    err = err_of(r)
    assert err["kind"] == "bad-amount" and err["code"] == 2
    assert "must be more than 0" in err["message"] and "decimals" not in err["message"]


def test_malformed_amount_keeps_the_decimals_message(run, member):
    r = run("earn", member, "1.234", "--category", "mobile", "--json")
    assert r.exit_code == 2
    assert err_of(r)["kind"] == "bad-amount" and "at most 2 decimals" in err_of(r)["message"]


def test_negative_refund_amount_and_price(run, member):
    r = run("refund", member, "pos-1", "--amount", "-5", "--json")
    assert r.exit_code == 2 and err_of(r)["kind"] == "bad-amount"
    assert "more than 0" in err_of(r)["message"]
    r = run("redeem", member, "store_discount", "--via", "store", "--price", "-5", "--json")
    assert r.exit_code == 2 and err_of(r)["kind"] == "bad-amount"
    assert "more than 0" in err_of(r)["message"]
    r = run("calc", "100", "--category", "mobile", "--card-last-month", "-5", "--json")
    assert r.exit_code == 2 and err_of(r)["kind"] == "bad-amount"
    assert "0 or more" in err_of(r)["message"]  # 0 is a fine total for last month


# ---------------------------------------------------------------- 2. a read whose pipe closes early


def _popen(args):
    return subprocess.Popen([sys.executable, "-m", "bonuscli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=ROOT, env=dict(os.environ))


@pytest.mark.parametrize("fmt", ["csv", "json", "table"])
def test_pipe_closed_before_anything_is_read_exits_0_quietly(fmt):
    """The reader is gone before the command writes (deterministic EPIPE)."""
    for _ in range(4):
        p = _popen(["regions", "--format", fmt])
        p.stdout.close()
        err = p.stderr.read()
        assert p.wait(timeout=60) == 0, err
        assert err == b""


def test_pipe_closed_after_the_first_line_exits_0_quietly():
    """As `bonuscli regions --format csv | head -1`, many times (it used to be exit 1 in 5 of 6)."""
    for _ in range(12):
        p = _popen(["regions", "--format", "csv"])
        first = p.stdout.readline()
        p.stdout.close()
        err = p.stderr.read()
        assert first.startswith(b"code,name")
        assert p.wait(timeout=60) == 0, err
        assert err == b""


def test_batch_with_a_closed_pipe_keeps_its_exit_code(run, member, tmp_path):
    """A batch's exit code says how its rows went: a reader gone early must not turn it into 0."""
    f = tmp_path / "b.csv"
    f.write_text(f"phone,amount,category,ref\n{A},abc,mobile,r1\n{A},100,mobile,r2\n")
    for _ in range(3):
        p = _popen(["earn", "--from", str(f), "--dry-run"])
        p.stdout.close()
        err = p.stderr.read().decode()
        assert p.wait(timeout=60) == 2, err
        assert err.startswith("error: 1 malformed") and "Traceback" not in err


def test_shell_pipe_into_head(tmp_path):
    script = f'"{sys.executable}" -m bonuscli regions --format csv | head -1 >/dev/null; echo ${{PIPESTATUS[0]}}'
    for _ in range(6):
        r = subprocess.run(["bash", "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=60)
        assert r.stdout.strip() == "0" and r.stderr == ""


# ---------------------------------------------------------------- 3. a missing --format, listed cleanly


def test_export_without_format_lists_the_dialects_cleanly(run, member):
    r = run("export", "--json")
    assert r.exit_code == 2
    err = err_of(r)
    assert err["kind"] == "usage" and err["code"] == 2
    assert "Missing option '--format' (choose from: hledger, beancount)" in err["message"]
    assert "\\x09" not in r.stderr and "\t" not in err["message"] and "\n" not in err["message"]
    r = run("export")
    assert r.exit_code == 2
    assert r.stderr.startswith("error: Missing option '--format' (choose from: hledger, beancount)")
    assert "\\x09" not in r.stderr


def test_completion_without_shell_lists_the_shells(run):
    r = run("completion", "--json")
    assert r.exit_code == 2 and err_of(r)["kind"] == "usage"
    assert "Missing argument 'SHELL' (choose from: bash, zsh, fish)" in err_of(r)["message"]


# ---------------------------------------------------------------- 4. a missing --catalog file


@pytest.mark.parametrize("args", [["balance", A], ["calc", "100", "--category", "mobile"], ["regions"],
                                  ["catalog"], ["join", "9031112233", "--region", "RU-MOW"]])
def test_missing_catalog_file_is_exit_2(run, member, tmp_path, args):
    p = tmp_path / "nope.yaml"
    r = run(*args, "--catalog", p, "--json")
    assert r.exit_code == 2, r.stderr
    err = err_of(r)
    assert err["code"] == 2 and err["kind"] == "catalog-missing"
    assert str(p) in err["message"] and "--catalog" in err["message"]


def test_missing_catalog_directory_given_is_exit_2(run, member, tmp_path):
    r = run("balance", A, "--catalog", tmp_path, "--json")  # a directory, not a file
    assert r.exit_code == 2 and err_of(r)["kind"] in ("usage", "catalog-missing")


def test_invalid_catalog_is_still_exit_3(run, member, tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("version: [1\n")
    r = run("balance", A, "--catalog", p, "--json")
    assert r.exit_code == 3 and err_of(r)["kind"] == "catalog-invalid"


# ---------------------------------------------------------------- 5. months, years, reversed ranges


@pytest.fixture
def dated(run, member):
    """Events on 2025-02-01 (join), 2025-03-15, 2025-03-31 and 2025-04-02."""
    for ref, day in (("a1", "2025-03-15"), ("a2", "2025-03-31T23:30"), ("a3", "2025-04-02")):
        run.ok("adjust", member, "10", "--reason", "x", "--ref", ref, "--at", day)
    return member


def refs(run, *args):
    r = run("history", A, *args, "--json", "--at", "2025-06-01")
    assert r.exit_code == 0, r.stderr
    return [json.loads(line).get("ref") for line in r.stdout.splitlines() if json.loads(line)["type"] == "adjust"]


@pytest.mark.parametrize("args, expected", [
    (["--from", "2025-03", "--until", "2025-03"], ["a1", "a2"]),
    (["--from", "2025-04"], ["a3"]),
    (["--until", "2025-03"], ["a1", "a2"]),
    (["--from", "2025", "--until", "2025"], ["a1", "a2", "a3"]),
    (["--until", "2024"], []),
    (["--from", "2025-03-16", "--until", "2025-04"], ["a2", "a3"]),
    (["--from", "2025-03-31", "--until", "2025-03-31"], ["a2"]),
])
def test_history_takes_months_and_years(run, dated, args, expected):
    assert refs(run, *args) == expected


@pytest.mark.parametrize("cmd", [["history", A], ["report"]])
@pytest.mark.parametrize("lo, hi", [("2025-04", "2025-03"), ("2025-03-02", "2025-03-01"), ("2026", "2025-12-31")])
def test_reversed_range_is_exit_2(run, dated, cmd, lo, hi):
    r = run(*cmd, "--from", lo, "--until", hi, "--json")
    assert r.exit_code == 2, r.stderr
    err = err_of(r)
    assert err["code"] == 2 and err["kind"] == "bad-date"
    assert "before" in err["message"] and hi in err["message"] and lo in err["message"]


@pytest.mark.parametrize("bad", ["2025-13", "2025-00", "25", "2025-3", "1899", "9001-01", "2025-02-30"])
@pytest.mark.parametrize("cmd", [["history", A], ["report"]])
def test_malformed_month_or_year_is_bad_date(run, dated, cmd, bad):
    for opt in ("--from", "--until"):
        r = run(*cmd, opt, bad, "--json")
        assert r.exit_code == 2, (opt, bad, r.stderr)
        assert err_of(r)["kind"] == "bad-date"


def test_report_month_range_covers_whole_months(run, dated):
    doc = run.j("report", "--from", "2025-03", "--until", "2025-04", "--at", "2025-06-01")
    months = {m["month"]: m for m in doc["months"]}
    assert set(months) == {"2025-03", "2025-04"}
    assert months["2025-03"]["adjusted"] == 20 and months["2025-04"]["adjusted"] == 10
    assert run.j("report", "--from", "2025-03-01", "--until", "2025-04-30", "--at", "2025-06-01")["months"] \
        == doc["months"]


def test_forecast_until_a_month_is_its_last_day(run, dated):
    assert run.j("forecast", A, "--until", "2026-03", "--at", "2025-06-01")["until"] == "2026-03-31"


# ---------------------------------------------------------------- 6. the default channel, named


def test_refusal_of_the_default_channel_names_it_and_the_option(run, member, data_dir):
    before = (data_dir / "ledgers" / f"{A}.jsonl").read_bytes()
    r = run("redeem", A, "store_discount", "--price", "100", "--json")
    assert r.exit_code == 1, r.stderr
    err = err_of(r)
    assert err["code"] == 1 and err["kind"] == "channel-not-allowed"
    assert err["message"] == "store_discount cannot be ordered via web (the default); add --via store"
    r = run("redeem", A, "store_discount", "--price", "100")
    assert r.exit_code == 1
    assert r.stderr == "error: store_discount cannot be ordered via web (the default); add --via store\n"
    assert (data_dir / "ledgers" / f"{A}.jsonl").read_bytes() == before


def test_refusal_of_a_typed_channel_is_unchanged(run, member):
    r = run("redeem", A, "store_discount", "--price", "100", "--via", "web", "--json")
    assert r.exit_code == 1 and err_of(r)["kind"] == "channel-not-allowed"
    assert err_of(r)["message"] == "store_discount cannot be ordered via web; it can be ordered via store"
    assert "default" not in err_of(r)["message"]


def test_explain_says_the_channel_was_the_default(run, member):
    r = run("redeem", A, "store_discount", "--price", "100", "--explain")
    assert r.exit_code == 1
    assert "asked via web (the default)" in r.stderr


def test_default_channel_still_orders_what_web_allows(run, member):
    run.ok("adjust", A, "500", "--reason", "opening balance", "--ref", "o1")
    v = run.j("redeem", A, "minutes_30")
    assert v["code"] == "minutes_30" and v["points_spent"] > 0
