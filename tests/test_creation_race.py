"""A new member's ledger is created without a lock file (issue 24: creating one cost as much as the
ledger itself): `link()` lets one creator win, and the loser reads again and decides again. These tests
make another bonuscli create the ledger between a decision and its write, in a single command and in a
batch, and check that nothing is lost, doubled or reported wrongly."""

from __future__ import annotations

import json
import subprocess
import sys

from bonuscli import batch
from conftest import NOW, ROOT

A, B = "9161234567", "9167654321"


def _join_elsewhere(data, phone):
    """Another process joins `phone` (it needs no lock the first one holds)."""
    r = subprocess.run([sys.executable, "-m", "bonuscli", "join", phone, "--region", "RU-SPE", "--at", NOW,
                        "--data-dir", str(data)], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 0, r.stderr


def _racing(monkeypatch, data, phone):
    """The batch's join decision, with another process joining `phone` right after the first one."""
    spec = batch.SPECS["join"]
    calls = []

    def decide(cat, m, t, req):
        result = spec.decide(cat, m, t, req)
        if not calls and m.phone == phone:
            _join_elsewhere(data, phone)
        calls.append(m.phone)
        return result

    monkeypatch.setitem(batch.SPECS, "join", spec._replace(decide=decide))
    return calls


def test_a_batch_whose_new_ledger_another_bonuscli_created_decides_again(run, tmp_path, monkeypatch):
    data = tmp_path / "d"
    run.ok("join", B, "--region", "RU-MOW", "--data-dir", data)
    calls = _racing(monkeypatch, data, A)
    rows = tmp_path / "joins.csv"
    rows.write_text(f"phone,region\n{A},RU-MOW\n")
    r = run("join", "--from", rows, "--jobs", "1", "--json", "--data-dir", data)
    assert r.exit_code == 1, r.stderr  # the row is refused: A joined elsewhere meanwhile
    doc = json.loads(r.stdout)
    assert (doc["applied"], doc["refused"], doc["errors"]) == (0, 1, 0), doc
    assert "already a member" in doc["problems"][0]["message"]
    assert calls == [A, A], "decided once, then again after the conflict"
    ledger = (data / "ledgers" / f"{A}.jsonl").read_text().splitlines()
    assert [json.loads(x)["region"] for x in ledger] == ["RU-SPE"], "one join: the other process's"
    assert run.j("check", "--ledgers", "--data-dir", data)["valid"] is True


def test_a_single_join_whose_ledger_another_bonuscli_created_is_refused_not_lost(run, tmp_path, monkeypatch):
    from bonuscli import commands, service

    data = tmp_path / "d"
    run.ok("join", B, "--region", "RU-MOW", "--data-dir", data)
    cmd, calls = commands.COMMANDS["join"], []

    def decide(*args, **kw):
        result = cmd.decide(*args, **kw)
        if not calls:
            _join_elsewhere(data, A)
        calls.append(1)
        return result

    monkeypatch.setitem(service.COMMANDS, "join", cmd._replace(decide=decide))
    r = run("join", A, "--region", "RU-MOW", "--json", "--data-dir", data)
    assert r.exit_code == 1 and len(calls) == 2, (r.exit_code, calls, r.stderr)
    assert json.loads(r.stderr.strip().splitlines()[-1])["error"]["kind"] == "already-member"
    ledger = (data / "ledgers" / f"{A}.jsonl").read_text().splitlines()
    assert len(ledger) == 1 and json.loads(ledger[0])["region"] == "RU-SPE"


def test_two_batches_of_the_same_new_members_at_once_join_each_once(run, tmp_path):
    data = tmp_path / "d"
    run.ok("join", B, "--region", "RU-MOW", "--data-dir", data)
    rows = tmp_path / "joins.csv"
    phones = [f"916{7000000 + i}" for i in range(300)]
    rows.write_text("phone,region\n" + "".join(f"{p},RU-MOW\n" for p in phones))
    cmd = [sys.executable, "-m", "bonuscli", "join", "--from", str(rows), "--jobs", "2", "--json", "--at", NOW,
           "--data-dir", str(data)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
             for _ in range(2)]
    docs = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode in (0, 1) and "Traceback" not in err, err
        docs.append(json.loads(out))
    assert sum(d["applied"] for d in docs) == 300, docs
    assert all(d["errors"] == 0 for d in docs), docs
    for p in phones:
        assert len((data / "ledgers" / f"{p}.jsonl").read_text().splitlines()) == 1
    assert run.j("check", "--ledgers", "--data-dir", data)["valid"] is True
