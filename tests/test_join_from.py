"""`join --from FILE` (CLI.md): many joins from CSV or JSON lines, each decided as the single join
would be, a referrer in the same file in any order, re-runs that change nothing, and new ledgers
made durable together (one commit per chunk of members)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import ROOT

A, B, C = "9160000001", "9160000002", "9160000003"


def batch(run, path, *extra):
    r = run("join", "--from", path, *extra, "--json")
    return r.exit_code, json.loads(r.stdout)


def test_referrers_in_any_order_and_a_rerun_changes_nothing(run, tmp_path, data_dir):
    f = tmp_path / "members.csv"
    f.write_text("phone,region,method,referrer,at\n"
                 f"{B},RU-MOW,sms,{A},2025-03-01T11:00\n"          # its referrer joins later in the file
                 f"{A},RU-MOW,sms,,2025-03-01T10:00\n"
                 f"{C},RU-MOW,web,{B},2025-03-01T12:00\n"          # a chain: C invited by B invited by A
                 "9160000004,RU-XX,sms,,2025-03-01T12:00\n"        # malformed: an unknown region
                 "9160000005,RU-MOW,sms,9169999999,2025-03-01T12:00\n")  # refused: the referrer never joins
    code, doc = batch(run, f)
    assert code == 2 and (doc["rows"], doc["applied"], doc["errors"], doc["refused"]) == (5, 3, 1, 1), doc
    assert [p["line"] for p in doc["problems"]] == [5, 6]
    balance = run("balance", A, "--at", "2025-03-05", "--json").json
    assert balance["available"] == 150 + 50  # the welcome points and the referral bonus for B
    before = {p.name: p.read_bytes() for p in (data_dir / "ledgers").iterdir()}
    code, again = batch(run, f)
    assert (again["applied"], again["duplicates"]) == (0, 3), again
    assert {p.name: p.read_bytes() for p in (data_dir / "ledgers").iterdir()} == before
    assert run("check", "--ledgers", "--at", "2025-03-05").exit_code == 0


def test_json_lines_and_the_single_commands_answer(run, tmp_path, data_dir):
    f = tmp_path / "members.jsonl"
    f.write_text(json.dumps({"phone": A, "region": "RU-MOW", "method": "web", "email": "a@b.ru",
                             "birth_date": "1990-01-01", "at": "2025-03-01T10:00"}) + "\n")
    code, doc = batch(run, f)
    assert code == 0 and doc["applied"] == 1
    single = tmp_path / "single"
    one = run("join", A, "--region", "RU-MOW", "--method", "web", "--email", "a@b.ru", "--birth-date", "1990-01-01",
              "--at", "2025-03-01T10:00", "--data-dir", single, "--json").json
    got = run("balance", A, "--at", "2025-03-04", "--json").json
    want = run("balance", A, "--at", "2025-03-04", "--data-dir", single, "--json").json
    assert got == want and one["active_from"] == "2025-03-03T10:00:00+03:00"


def test_the_options_of_a_single_join_are_not_taken_with_from(run, tmp_path):
    f = tmp_path / "m.csv"
    f.write_text(f"phone,region\n{A},RU-MOW\n")
    r = run("join", "--from", f, "--region", "RU-MOW", "--json")
    assert r.exit_code == 2 and json.loads(r.stderr)["error"]["kind"] == "usage"
    r = run("join", "--region", "RU-MOW", "--json")
    assert r.exit_code == 2 and json.loads(r.stderr)["error"]["kind"] == "usage"


def cli(data, *args, env=None):
    full = dict(os.environ, BONUSCLI_DATA_DIR=str(data), BONUSCLI_NOW="2025-03-02")
    full.pop("BONUSCLI_FAULT", None)
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "bonuscli", *map(str, args)], capture_output=True, text=True,
                          env=full, cwd=ROOT, timeout=300)


def test_parallel_joins_equal_serial_ones_and_a_failed_commit_takes_new_ledgers_back(tmp_path):
    from bonuscli.batch import PARALLEL_ROWS

    f = tmp_path / "many.csv"
    f.write_text("phone,region,method,at\n" + "".join(
        f"9{i:09d},RU-MOW,{['sms', 'store', 'web'][i % 3]},2025-03-01T{10 + i % 10}:{i % 60:02d}\n"
        for i in range(PARALLEL_ROWS + 500)))
    ledgers = {}
    for jobs in ("1", "2"):
        r = cli(tmp_path / f"d{jobs}", "join", "--from", f, "--jobs", jobs, "--json")
        assert r.returncode == 0, r.stderr
        ledgers[jobs] = {p.name: p.read_bytes() for p in (tmp_path / f"d{jobs}" / "ledgers").iterdir()}
    assert ledgers["1"] == ledgers["2"] and len(ledgers["1"]) == PARALLEL_ROWS + 500
    # a disk error when the new ledgers are made durable: none of them is acknowledged, or left behind
    small = tmp_path / "small.csv"
    small.write_text("phone,region,at\n" + "".join(f"9{i:09d},RU-MOW,2025-03-01T10:{i:02d}\n" for i in range(5)))
    data = tmp_path / "faulty"
    r = cli(data, "join", "--from", small, "--jobs", "1", "--json",
            env={"BONUSCLI_FAULT": "before-fsync:1", "BONUSCLI_FAULT_MODE": "oserror"})
    assert r.returncode == 3, r.stderr
    doc = json.loads(r.stdout)
    assert doc["applied"] + sum(1 for p in doc["problems"] if p["code"] == 3) == 5
    left = sorted(p.stem for p in (data / "ledgers").iterdir()) if (data / "ledgers").exists() else []
    assert len(left) == doc["applied"], (left, doc)
    again = cli(data, "join", "--from", small, "--jobs", "1", "--json")
    assert again.returncode == 0, again.stderr
    assert cli(data, "check", "--ledgers", "--at", "2025-03-02").returncode == 0


def test_a_referrer_later_in_the_file_at_the_same_instant_waits_for_the_next_round(run, tmp_path):
    """Rows without `at` share the batch's instant, so time order cannot put a referrer first: C
    (invited by B) comes before B (invited by A) in the file; C waits a round for B."""
    f = tmp_path / "chain.csv"
    f.write_text(f"phone,region,referrer\n{C},RU-MOW,{B}\n{B},RU-MOW,{A}\n{A},RU-MOW,\n")
    r = run("join", "--from", f, "--at", "2025-03-01T10:00", "--json")
    doc = json.loads(r.stdout)
    assert r.exit_code == 0 and doc["applied"] == 3, doc
    assert run("balance", B, "--at", "2025-03-02", "--json").json["available"] == 150 + 50
