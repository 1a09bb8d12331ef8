"""The speed-ups must not change a single answer: checkpoints and --jobs give the results of
the plain path, and a stale or broken checkpoint is never trusted."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bonuscli import batch, service

A, B = "9161234567", "9167654321"


def flow(run, data):
    """A member's mixed year; returns every JSON answer along the way."""
    out = []

    def j(*args):
        r = run(*args, "--json", "--data-dir", data)
        out.append((args, r.exit_code, r.stdout))
        return r

    j("join", A, "--region", "RU-MOW", "--method", "web", "--email", "a@b.ru", "--birth-date", "1990-01-01",
      "--at", "2025-01-10T10:00")
    j("join", B, "--region", "RU-MOW", "--at", "2025-01-10T11:00")
    for i in range(12):
        day = f"2025-01-{13 + i:02d}"
        j("earn", A, str(300 + 17 * i), "--category", ["mobile", "card", "taxi"][i % 3], "--ref", f"t{i}", "--at", day)
        j("balance", A, "--at", day + "T12:00")
    j("earn", A, "9000", "--category", "card", "--ref", "big", "--at", "2025-01-30")
    j("redeem", A, "minutes_60", "--at", "2025-02-01")
    j("balance", A, "--at", "2025-02-01T01:00")
    g = j("gift", A, B, "100", "--at", "2025-02-02")
    gift_id = json.loads(g.stdout)["gift_id"]
    j("balance", A, "--at", "2025-02-02T01:00")
    j("accept", B, gift_id, "--at", "2025-02-03")
    j("balance", A, "--at", "2025-02-03T01:00")
    j("refund", A, "big", "--amount", "4500", "--ref", "rf1", "--at", "2025-02-04")
    j("balance", A, "--at", "2025-02-04T01:00")
    j("earn", A, "3000", "--category", "card", "--ref", "feb", "--at", "2025-02-10")
    j("adjust", A, "-20", "--reason", "correction", "--ref", "adj1", "--at", "2025-02-11")
    j("earn", A, "500", "--category", "mobile", "--ref", "t0", "--at", "2025-01-01")  # a duplicate, back in time
    j("gift", A, B, "50", "--at", "2025-03-01")
    j("balance", A, "--at", "2025-03-01T01:00")
    j("balance", A, "--at", "2025-04-15")  # the gift came back
    j("forecast", A, "--until", "2026-12-31", "--at", "2025-04-15")
    j("balance", A, "--at", "2026-01-20")  # January's lots expired
    j("history", A, "--at", "2026-01-20")
    j("explain", A, "--at", "2026-01-20")
    j("balance", B, "--at", "2026-01-20")
    return out


def test_checkpoints_change_no_answer(run, tmp_path, monkeypatch):
    monkeypatch.setattr(service, "SNAPSHOT_MIN", 10**9)
    plain = flow(run, tmp_path / "plain")
    assert not (tmp_path / "plain" / "cache" / "members").exists()
    monkeypatch.setattr(service, "SNAPSHOT_MIN", 1)
    fast = flow(run, tmp_path / "fast")
    assert (tmp_path / "fast" / "cache" / "members" / f"{A}.json").exists()
    assert len(plain) == len(fast)
    for (args, code, out), (args2, code2, out2) in zip(plain, fast):
        assert (args, code, out) == (args2, code2, out2)
    for phone in (A, B):
        a = (tmp_path / "plain" / "ledgers" / f"{phone}.jsonl").read_bytes()
        b = (tmp_path / "fast" / "ledgers" / f"{phone}.jsonl").read_bytes()
        assert a == b


def _member_with_checkpoint(run, data, monkeypatch):
    monkeypatch.setattr(service, "SNAPSHOT_MIN", 1)
    run.ok("join", A, "--region", "RU-MOW", "--at", "2025-01-10", "--data-dir", data)
    run.ok("earn", A, "500", "--category", "mobile", "--ref", "x1", "--at", "2025-01-11", "--data-dir", data)
    doc = run.j("balance", A, "--at", "2025-01-12", "--data-dir", data)
    assert doc["available"] == 250
    assert (data / "cache" / "members" / f"{A}.json").exists()
    return data / "ledgers" / f"{A}.jsonl"


def test_a_checkpoint_is_not_trusted_once_its_line_changed(run, tmp_path, monkeypatch):
    data = tmp_path / "d"
    ledger = _member_with_checkpoint(run, data, monkeypatch)
    text = ledger.read_text()
    # rewrite the last line (the one the checkpoint ends on): 100 points become 300
    ledger.write_text(text.replace('"points":100', '"points":300'))
    assert run.j("balance", A, "--at", "2025-01-12", "--data-dir", data)["available"] == 450


def test_a_checkpoint_past_the_end_of_a_shorter_file_is_not_trusted(run, tmp_path, monkeypatch):
    data = tmp_path / "d"
    ledger = _member_with_checkpoint(run, data, monkeypatch)
    lines = ledger.read_bytes().splitlines(keepends=True)
    ledger.write_bytes(b"".join(lines[:1]))  # only the join is left
    assert run.j("balance", A, "--at", "2025-01-12", "--data-dir", data)["available"] == 150


def test_a_corrupt_or_deleted_checkpoint_is_a_miss(run, tmp_path, monkeypatch):
    data = tmp_path / "d"
    _member_with_checkpoint(run, data, monkeypatch)
    ckpt = data / "cache" / "members" / f"{A}.json"
    ckpt.write_bytes(b"not a pickle")
    assert run.j("balance", A, "--at", "2025-01-12", "--data-dir", data)["available"] == 250
    ckpt.unlink()
    assert run.j("balance", A, "--at", "2025-01-12", "--data-dir", data)["available"] == 250


def test_reading_as_of_before_the_checkpoint_replays_the_whole_ledger(run, tmp_path, monkeypatch):
    data = tmp_path / "d"
    _member_with_checkpoint(run, data, monkeypatch)
    assert run.j("balance", A, "--at", "2025-01-10T12:00", "--data-dir", data)["available"] == 150


def test_a_checkpoint_is_private(run, tmp_path, monkeypatch):
    data = tmp_path / "d"
    _member_with_checkpoint(run, data, monkeypatch)
    ckpt = data / "cache" / "members" / f"{A}.json"
    assert ckpt.stat().st_mode & 0o777 == 0o600
    assert (data / "cache" / "members").stat().st_mode & 0o777 == 0o700


def _batch_file(path: Path, members: int, rows: int) -> Path:
    cats = ["mobile", "card", "taxi", "mts_store", "utilities"]
    lines = ["phone,amount,category,ref,at"]
    for i in range(rows):
        phone = f"9{(i * 7) % members:09d}"
        lines.append(f"{phone},{100 + (i * 37) % 4000}.{i % 100:02d},{cats[i % len(cats)]},r{i},2025-02-{1 + i % 20:02d}")
    lines.append("9000000001,abc,mobile,bad,2025-02-01")
    path.write_text("\n".join(lines) + "\n")
    return path


def _joined(run, data, members):
    csv = data.parent / f"{data.name}-join.csv"
    rows = ["phone,points,reason,ref,region,at"]
    for i in range(members):
        rows.append(f"9{i:09d},10,opening,o{i},RU-MOW,2025-01-05")
    csv.write_text("\n".join(rows) + "\n")
    run.ok("adjust", "--from", csv, "--data-dir", data, "--jobs", "1")


@pytest.mark.parametrize("jobs", ["2", "3"])
def test_jobs_give_the_same_ledgers_and_summary(run, tmp_path, monkeypatch, jobs):
    monkeypatch.setattr(batch, "PARALLEL_ROWS", 2)
    members, rows = 30, 400
    src = _batch_file(tmp_path / "rows.csv", members, rows)
    results = {}
    for j in ("1", jobs):
        data = tmp_path / f"data{j}"
        _joined(run, data, members)
        r = run("earn", "--from", src, "--json", "--jobs", j, "--data-dir", data)
        assert r.exit_code == 2  # one malformed row
        files = {p.name: p.read_bytes() for p in sorted((data / "ledgers").iterdir())}
        results[j] = (json.loads(r.stdout), files)
    one, many = results["1"], results[jobs]
    assert one[0] == many[0]
    assert one[0]["applied"] + one[0]["refused"] + one[0]["errors"] == rows + 1
    assert one[1] == many[1]
    # re-running in parallel applies nothing twice
    r = run("earn", "--from", src, "--json", "--jobs", jobs, "--data-dir", tmp_path / f"data{jobs}")
    assert json.loads(r.stdout)["duplicates"] == one[0]["applied"]


def test_jobs_must_be_positive(run):
    r = run("earn", "--from", "-", "--jobs", "0", input="")
    assert r.exit_code == 2


def test_checkpoint_directory_can_be_deleted(run, tmp_path, monkeypatch):
    data = tmp_path / "d"
    _member_with_checkpoint(run, data, monkeypatch)
    import shutil

    shutil.rmtree(data / "cache")
    assert run.j("balance", A, "--at", "2025-01-12", "--data-dir", data)["available"] == 250
    assert os.path.exists(data / "cache" / "members" / f"{A}.json")


def test_engines_give_the_same_report_and_check(run, tmp_path, monkeypatch):
    data = tmp_path / "d"
    monkeypatch.setattr(service, "SNAPSHOT_MIN", 10**9)
    flow(run, data)
    local = run.j("report", "--at", "2026-01-20", "--data-dir", data, "--engine", "local")
    dask = run.j("report", "--at", "2026-01-20", "--data-dir", data, "--engine", "dask")
    assert local == dask
    assert local["members"]["total"] == 2
    for engine in ("local", "dask"):
        r = run("check", "--ledgers", "--at", "2026-01-20", "--data-dir", data, "--engine", engine)
        assert (r.exit_code, r.stdout, r.stderr) == (0, "2 ledgers, 25 events, 0 repairs, 0 problems\n", "")
    ledger = data / "ledgers" / f"{A}.jsonl"
    lines = ledger.read_bytes().splitlines(keepends=True)
    ledger.write_bytes(lines[0] + lines[2] + lines[1] + b"".join(lines[3:]))  # two lines swapped
    out = {}
    for engine in ("local", "dask"):
        r = run("check", "--ledgers", "--at", "2026-01-20", "--data-dir", data, "--engine", engine)
        assert r.exit_code == 3
        out[engine] = r.stderr
    assert out["local"] == out["dask"]
    assert f"{A}.jsonl:2: hash chain broken" in out["local"]


def test_engines_give_the_same_diff_impact(run, tmp_path, monkeypatch):
    data = tmp_path / "d"
    flow(run, data)
    from conftest import ROOT

    new = tmp_path / "new.yaml"
    text = (ROOT / "catalog.yaml").read_text()
    new.write_text(text.replace("mobile: {rub_per_point: 5,", "mobile: {rub_per_point: 4,", 1))
    assert new.read_text() != text
    docs = {}
    for engine in ("local", "dask"):
        r = run("diff", ROOT / "catalog.yaml", new, "--ledgers", "--json", "--at", "2025-04-15",
                "--data-dir", data, "--engine", engine)
        assert r.exit_code == 0, r.stderr
        docs[engine] = json.loads(r.stdout)
    assert docs["local"] == docs["dask"]
    impact = docs["local"]["impact"]
    assert impact["total"]["available_new"] > impact["total"]["available_old"]


def test_engines_give_the_same_scenario_results(run):
    from conftest import ROOT

    files = sorted(str(p) for p in (ROOT / "scenarios").glob("*.yaml"))[:3]
    out = {}
    for engine in ("local", "dask"):
        r = run("check", "--scenario", *files, "--json", "--engine", engine)
        assert r.exit_code == 0, r.stderr
        out[engine] = json.loads(r.stdout)
    assert out["local"] == out["dask"]
    assert out["local"]["total"]["passed"] == 3


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_batch_spilled_to_files_gives_the_same_ledgers_and_summary(run, tmp_path, monkeypatch, jobs):
    """Past SPILL_ROWS rows the batch's member groups go to temporary files (memory stays flat): the
    summary and every ledger byte are those of the batch held in memory, and nothing is left behind."""
    import tempfile

    members, rows = 30, 400
    src = _batch_file(tmp_path / "rows.csv", members, rows)
    results = {}
    spool_dirs = []
    real = tempfile.TemporaryDirectory

    def spy(*a, **k):
        d = real(*a, **k)
        spool_dirs.append(d.name)
        return d

    for spill in (False, True):
        if spill:
            monkeypatch.setattr(batch, "SPILL_ROWS", 7)
            monkeypatch.setattr(batch, "PARALLEL_ROWS", 2)
            monkeypatch.setattr(tempfile, "TemporaryDirectory", spy)
        data = tmp_path / f"data-{spill}"
        _joined(run, data, members)
        r = run("earn", "--from", src, "--json", "--jobs", jobs, "--data-dir", data)
        assert r.exit_code == 2  # one malformed row
        files = {p.name: p.read_bytes() for p in sorted((data / "ledgers").iterdir())}
        results[spill] = (json.loads(r.stdout), files)
    assert spool_dirs and not any(os.path.exists(d) for d in spool_dirs)
    assert results[True] == results[False]
