"""The Python API (CLI.md §5) returns exactly what `--json` prints, raises the CLI's errors with
their kind, and has one method per command the CLI and scenarios run."""

from __future__ import annotations

import json

import pytest

import bonuscli
from bonuscli import scenario
from bonuscli.commands import COMMANDS

A, B = "9161234567", "9167654321"


def cli_doc(run, data, *args):
    r = run(*args, "--data-dir", data, "--json")
    return r.exit_code, (json.loads(r.stdout) if r.stdout.strip() else json.loads(r.stderr))


def test_the_api_returns_what_json_prints(run, tmp_path):
    program = bonuscli.open(data_dir=tmp_path / "api")
    data = tmp_path / "cli"
    steps = [
        ("join", (A,), {"region": "RU-MOW", "method": "web", "email": "a@b.ru", "birth_date": "1990-01-01"},
         ["join", A, "--region", "RU-MOW", "--method", "web", "--email", "a@b.ru", "--birth-date", "1990-01-01"],
         "2025-03-01T10:00"),
        ("join", (B,), {"region": "RU-MOW", "referrer": A}, ["join", B, "--region", "RU-MOW", "--referrer", A],
         "2025-03-03T10:00"),
        ("earn", (A, "1500.50"), {"category": "card", "ref": "t1"},
         ["earn", A, "1500.50", "--category", "card", "--ref", "t1"], "2025-03-04T10:00"),
        ("earn", (A, 300), {"category": "mobile", "dry_run": True},
         ["earn", A, "300", "--category", "mobile", "--dry-run"], "2025-03-04T11:00"),
        ("gift", (A, B, 50), {}, ["gift", A, B, "50"], "2025-03-05T10:00"),
        ("balance", (A,), {}, ["balance", A], "2025-03-05T11:00"),
        ("forecast", (A,), {"days": 400}, ["forecast", A, "--days", "400"], "2025-03-05T11:00"),
        ("refund", (A, "t1"), {"amount": "100"}, ["refund", A, "t1", "--amount", "100"], "2025-03-06T10:00"),
        ("adjust", (A, -5), {"reason": "typo"}, ["adjust", A, "-5", "--reason", "typo"], "2025-03-06T11:00"),
        ("catalog", ("minutes_30",), {"region": "RU-BRY"}, ["catalog", "minutes_30", "--region", "RU-BRY"],
         "2025-03-06T11:00"),
    ]
    for name, args, kw, argv, at in steps:
        got = getattr(program, name)(*args, at=at, **kw)
        code, want = cli_doc(run, data, *argv, "--at", at)
        assert code == 0, want
        assert got == want, name
    gift_id = program.balance(B, at="2025-03-05T12:00")["pending_in"][0]["gift_id"]
    assert program.accept(B, gift_id, at="2025-03-07")["status"] == "accepted"


def test_errors_are_the_clis_with_their_kind(tmp_path):
    program = bonuscli.open(data_dir=tmp_path / "d")
    with pytest.raises(bonuscli.BadInput) as e:
        program.join("12", region="RU-MOW", at="2025-03-01")
    assert (e.value.kind, e.value.exit_code) == ("bad-phone", 2)
    program.join(A, region="RU-MOW", at="2025-03-01")
    with pytest.raises(bonuscli.Refused) as e:
        program.join(A, region="RU-MOW", at="2025-03-02")
    assert (e.value.kind, e.value.exit_code) == ("already-member", 1)
    with pytest.raises(TypeError):
        program.earn(A, "100", categroy="mobile")  # a misspelt option is Python's error, as for any call
    bad = tmp_path / "bad.yaml"
    bad.write_text("not: [a catalog")
    with pytest.raises(bonuscli.BonusError) as e:
        bonuscli.calc("100", category="mobile", catalog=bad)
    assert e.value.exit_code in (2, 3)


def test_one_method_per_command_of_the_registry_and_of_scenarios():
    for name in list(COMMANDS) + list(scenario.COMMANDS):
        assert callable(getattr(bonuscli.Program, name)), name
    assert "category=None" in bonuscli.Program.earn.__doc__


def test_calc_needs_no_data_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert bonuscli.calc("500", category="mobile", tenure_months=13)["points"] == 120
    assert bonuscli.calc(500, category="taxi", at="2025-03-01")["points"] == 100
    assert list(tmp_path.iterdir()) == []
