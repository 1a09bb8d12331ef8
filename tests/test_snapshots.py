"""Snapshots are an optimisation, never a source of truth: plain JSON, pinned by a format number,
written only for exactly the lines they cover, verified before use, ignored on any doubt, and
actually used (a test fails when the resume path is disabled)."""

from __future__ import annotations

import datetime as dt
import json
import re
import pickle
from pathlib import Path

import pytest

from bonuscli import catalog as catalog_mod
from bonuscli import rules, service
from bonuscli.model import parse_when

A, B = "9161234567", "9167654321"
CAT_PATH = catalog_mod.default_path()


def open_svc(data, snapshots=True):
    return service.open_dir(Path(data), CAT_PATH, str(CAT_PATH), snapshots=snapshots)


def when(text):
    return parse_when(text, dt.timezone(dt.timedelta(hours=3)))


def long_member(run, data, n=30):
    """A member with a few dozen lines: joined, earning every few days over 14 months (points expire)."""
    run.ok("join", A, "--region", "RU-MOW", "--at", "2025-01-05T10:00", "--data-dir", data)
    run.ok("join", B, "--region", "RU-MOW", "--at", "2025-01-05T10:05", "--data-dir", data)
    rows = ["phone,amount,category,ref,at"]
    start = dt.datetime(2025, 1, 6, 12, 0)
    for i in range(n):
        at = start + dt.timedelta(days=14 * i)
        rows.append(f"{A},{100 + 37 * i}.50,{['mobile', 'taxi', 'card'][i % 3]},r{i},{at.isoformat()}")
    csv = Path(data).parent / "rows.csv"
    csv.write_text("\n".join(rows) + "\n")
    run.ok("earn", "--from", csv, "--data-dir", data)
    run.ok("redeem", A, "minutes_30", "--at", "2026-02-20T10:00", "--data-dir", data)
    return Path(data) / "ledgers" / f"{A}.jsonl"


def answer(svc, at):
    return rules.balance(svc.member(A, when(at)), when(at)).view


# ---------------------------------------------------------------- the format is pinned


def test_state_fields_are_pinned():
    """Change what a snapshot holds, or what Member holds, and this fails: bump STATE_FORMAT, then
    update the pins (as llm's migration tests pin its schema)."""
    assert rules.STATE_FORMAT == 1
    assert rules.STATE_FIELDS == (
        "phone", "count", "last_at", "joins", "join", "left_at", "lots", "debt", "repaid", "totals", "earns",
        "refunds", "adjusts", "month_spend", "card_welcome_given", "orders", "gifts_out", "gifts_in", "referrals",
        "sealed", "seq", "now",
    )
    cat = catalog_mod.load(CAT_PATH, str(CAT_PATH))
    m = rules.Member(cat, A)
    assert sorted(vars(m)) == sorted([
        "adjusts", "avail", "cal", "card_welcome_given", "cat", "count", "debt", "earns", "gifts_in", "gifts_out",
        "head", "join", "joins", "keep", "last_at", "left_at", "lots", "month_spend", "now", "orders", "own", "peers",
        "phone", "referrals", "refunds", "register", "repaid", "sched", "sealed", "seq", "totals",
    ]), "Member changed: does the snapshot format (to_plain/from_plain, STATE_FORMAT) need a bump?"
    assert set(rules.to_plain(m)) == set(rules.STATE_FIELDS)
    assert rules.TOTALS if hasattr(rules, "TOTALS") else True


def test_a_snapshot_is_plain_json_for_exactly_its_lines(run, tmp_path, monkeypatch):
    monkeypatch.setattr(service, "SNAPSHOT_MIN", 5)
    data = tmp_path / "d"
    ledger = long_member(run, data)
    run.ok("balance", A, "--at", "2026-06-01", "--data-dir", data)
    snap = data / "cache" / "members" / f"{A}.json"
    doc = json.loads(snap.read_text())  # JSON, not a pickle
    data_bytes = ledger.read_bytes()
    lines = data_bytes.splitlines()
    assert doc["format"] == rules.STATE_FORMAT and doc["phone"] == A
    # it covers the first N lines exactly: N lines end at its offset, and it names the N-th line's hash
    n = doc["lines"]
    assert 5 <= n <= len(lines)
    assert doc["offset"] == len(b"".join(line + b"\n" for line in lines[:n]))
    from bonuscli.ledger import line_hash

    assert doc["last_hash"] == line_hash(lines[n - 1])
    # the state as of that line's own instant, not as of a moment asked later (2026-06-01)
    assert doc["at"] == rules.instant(json.loads(lines[n - 1])["at"]) == doc["state"]["now"]
    assert snap.stat().st_mode & 0o777 == 0o600


# ---------------------------------------------------------------- used, and right


def test_the_snapshot_is_used_and_gives_the_answer_of_a_full_replay(run, tmp_path, monkeypatch):
    monkeypatch.setattr(service, "SNAPSHOT_MIN", 5)
    data = tmp_path / "d"
    long_member(run, data)
    run.ok("balance", A, "--at", "2026-03-01", "--data-dir", data)  # writes the snapshot
    run.ok("earn", A, "500", "--category", "mobile", "--ref", "late", "--at", "2026-03-10", "--data-dir", data)
    covered = json.loads((data / "cache" / "members" / f"{A}.json").read_text())["lines"]
    total = len((data / "ledgers" / f"{A}.jsonl").read_bytes().splitlines())
    fast = open_svc(data)
    got = answer(fast, "2026-04-01")
    assert fast.stats["resumed"] == 1, "the snapshot was not used"
    assert fast.stats["replayed"] == total - covered, "only the lines after the snapshot are replayed"
    slow = open_svc(data, snapshots=False)
    assert got == answer(slow, "2026-04-01")
    assert slow.stats["resumed"] == 0 and slow.stats["replayed"] > 30


def test_a_read_as_of_before_the_snapshot_replays_from_scratch(run, tmp_path, monkeypatch):
    monkeypatch.setattr(service, "SNAPSHOT_MIN", 5)
    data = tmp_path / "d"
    long_member(run, data)
    run.ok("balance", A, "--at", "2026-03-01", "--data-dir", data)
    svc = open_svc(data)
    early = answer(svc, "2025-06-01")
    assert svc.stats["resumed"] == 0
    assert early == answer(open_svc(data, snapshots=False), "2025-06-01")
    # and the as-of read changed nothing for later answers
    assert answer(open_svc(data), "2026-04-01") == answer(open_svc(data, snapshots=False), "2026-04-01")


def test_repeated_ref_is_found_through_the_snapshot(run, tmp_path, monkeypatch):
    monkeypatch.setattr(service, "SNAPSHOT_MIN", 5)
    data = tmp_path / "d"
    long_member(run, data)
    run.ok("balance", A, "--at", "2025-03-01", "--data-dir", data)  # an as-of read in the middle
    run.ok("balance", A, "--at", "2026-03-01", "--data-dir", data)
    r = run.j("earn", A, "999", "--category", "mobile", "--ref", "r3", "--at", "2026-03-02", "--data-dir", data)
    assert r["duplicate"] is True
    run.ok("check", "--ledgers", "--at", "2026-03-03", "--data-dir", data)


# ---------------------------------------------------------------- any doubt is a miss


def _with_snapshot(run, tmp_path, monkeypatch):
    monkeypatch.setattr(service, "SNAPSHOT_MIN", 5)
    data = tmp_path / "d"
    long_member(run, data)
    run.ok("balance", A, "--at", "2026-03-01", "--data-dir", data)
    snap = data / "cache" / "members" / f"{A}.json"
    assert snap.exists()
    return data, snap


class Boom:
    def __reduce__(self):
        import os

        return (os.system, ("touch MARKER",))


@pytest.mark.parametrize("content", [
    b"not json at all",
    b"\x80\x04\x95",  # the start of a pickle
    pickle.dumps(Boom()),
    b"[]",
    b'{"format": 1}',
    b'{"format": 99, "key": "x", "phone": "9161234567", "at": 0, "state": {}}',
])
def test_a_corrupt_or_planted_snapshot_is_ignored_and_rebuilt(run, tmp_path, monkeypatch, content):
    data, snap = _with_snapshot(run, tmp_path, monkeypatch)
    truth = answer(open_svc(data, snapshots=False), "2026-04-01")
    snap.write_bytes(content)
    monkeypatch.chdir(tmp_path)
    svc = open_svc(data)
    assert answer(svc, "2026-04-01") == truth
    assert svc.stats["resumed"] == 0
    assert not (tmp_path / "MARKER").exists()
    assert json.loads(snap.read_text())["phone"] == A  # rebuilt


def test_a_snapshot_of_another_member_is_ignored(run, tmp_path, monkeypatch):
    data, snap = _with_snapshot(run, tmp_path, monkeypatch)
    other = data / "cache" / "members" / f"{B}.json"
    other.write_bytes(snap.read_bytes())
    svc = open_svc(data)
    assert rules.balance(svc.member(B, when("2025-06-01")), when("2025-06-01")).view["available"] == 150
    assert rules.balance(svc.member(B, when("2026-04-01")), when("2026-04-01")).view["available"] == 0
    assert svc.stats["resumed"] == 0


@pytest.mark.parametrize("same_length", [False, True])
def test_a_snapshot_whose_last_line_changed_is_ignored(run, tmp_path, monkeypatch, same_length):
    """The line the snapshot ends on, changed: longer (the offset no longer ends a line), or the same
    length with other bytes (only its hash tells): either way the snapshot is not used."""
    data, snap = _with_snapshot(run, tmp_path, monkeypatch)
    ledger = data / "ledgers" / f"{A}.jsonl"
    lines = ledger.read_bytes().splitlines(keepends=True)
    n = json.loads(snap.read_text())["lines"]
    if same_length:
        old = re.search(rb'"id":"[0-9.]+"', lines[n - 1]).group(0)
        lines[n - 1] = lines[n - 1].replace(old, old[:-2] + (b"7" if old[-2:-1] != b"7" else b"8") + b'"')
        assert len(lines[n - 1]) == len(ledger.read_bytes().splitlines(keepends=True)[n - 1])
    else:
        lines[n - 1] = lines[n - 1].replace(b'"points":', b'"points": ')  # the line it ends on: other bytes
    ledger.write_bytes(b"".join(lines))
    svc = open_svc(data)
    answer(svc, "2026-04-01")
    assert svc.stats["resumed"] == 0


def test_a_snapshot_under_another_catalog_is_ignored(run, tmp_path, monkeypatch):
    data, snap = _with_snapshot(run, tmp_path, monkeypatch)
    other = tmp_path / "other.yaml"
    other.write_text(CAT_PATH.read_text().replace("mobile: {rub_per_point: 5,", "mobile: {rub_per_point: 4,"))
    svc = service.open_dir(data, other, str(other))
    svc.member(A, when("2026-04-01"))
    assert svc.stats["resumed"] == 0


# ---------------------------------------------------------------- unknown lines are loud


def test_an_unknown_event_type_names_its_file_and_line(run, data_dir):
    run.ok("join", A, "--region", "RU-MOW", "--at", "2025-01-05T10:00")
    ledger = data_dir / "ledgers" / f"{A}.jsonl"
    with open(ledger, "ab") as f:
        f.write(b'{"v":2,"id":"9161234567.2","type":"teleport","at":"2025-01-06T10:00:00+03:00","prev":""}\n')
    r = run("balance", A, "--json")
    assert r.exit_code == 3
    err = json.loads(r.stderr.strip().splitlines()[-1])["error"]
    assert err["kind"] == "ledger-corrupt"
    assert f"{ledger}:2:" in err["message"] and "teleport" in err["message"]


def test_a_read_far_ahead_does_not_leak_into_answers_before_it(run, tmp_path, monkeypatch):
    """A snapshot holds the state as of its last line, not as of the moment that wrote it: after a
    read two years ahead (every point expired by then), a later line and a read in between still
    see the points that had not expired yet."""
    monkeypatch.setattr(service, "SNAPSHOT_MIN", 5)
    data = tmp_path / "d"
    long_member(run, data)
    import shutil

    shutil.rmtree(data / "cache")  # the far read below writes the snapshot
    assert run.j("balance", A, "--at", "2028-01-01", "--data-dir", data)["available"] == 0
    assert (data / "cache" / "members" / f"{A}.json").exists()
    run.ok("earn", A, "500", "--category", "mobile", "--ref", "late", "--at", "2026-03-10", "--data-dir", data)
    svc = open_svc(data)
    got = answer(svc, "2026-04-01")
    assert svc.stats["resumed"] == 1
    assert got == answer(open_svc(data, snapshots=False), "2026-04-01")
    assert got["available"] > 100


# ---------------------------------------------------------------- a decision verifies what follows its snapshot


def test_a_write_verifies_the_lines_after_a_verified_snapshot(run, tmp_path, monkeypatch):
    """A decision resumes from a snapshot only when the snapshot's own lines were verified, and it
    verifies every line after it before it writes: a line after the snapshot edited by hand (its
    points raised, the next line's `prev` no longer matching) makes the write exit 3 with
    `ledger-tampered`, the file untouched. (Reading the tail without verifying it passed every
    other test.)"""
    monkeypatch.setattr(service, "SNAPSHOT_MIN", 5)
    data = tmp_path / "d"
    path = long_member(run, data)
    run.ok("earn", A, "100", "--category", "mobile", "--ref", "s0", "--at", "2026-03-01T10:00", "--data-dir", data)
    snap = data / "cache" / "members" / f"{A}.json"
    doc = json.loads(snap.read_text())
    assert doc["verified"] is True, "a decision's replay saves a verified snapshot"
    covered = doc["lines"]
    for i, day in enumerate(("02", "03"), start=1):
        run.ok("earn", A, "100", "--category", "mobile", "--ref", f"s{i}", "--at", f"2026-03-{day}T10:00",
               "--data-dir", data)
    svc = open_svc(data)
    svc.member(A, when("2026-03-03T12:00"), full=True)
    assert svc.stats["resumed"] == 1, "the verified snapshot is used by a decision"
    lines = path.read_bytes().split(b"\n")
    assert len(lines) - 1 > covered + 1, "two lines follow the snapshot"
    victim = covered  # 0-based: the first line after the snapshot
    edited = re.sub(rb'"points":(\d+)', lambda m: b'"points":' + str(int(m.group(1)) + 500).encode(), lines[victim],
                    count=1)
    assert edited != lines[victim]
    lines[victim] = edited
    path.write_bytes(b"\n".join(lines))
    before = path.read_bytes()
    r = run("earn", A, "100", "--category", "mobile", "--ref", "s9", "--at", "2026-03-04T10:00", "--data-dir", data,
            "--json")
    assert r.exit_code == 3, r.stdout
    err = json.loads(r.stderr)["error"]  # a JSON error goes to stderr
    assert err["kind"] == "ledger-tampered", err
    assert f":{victim + 2}:" in err["message"] or f":{victim + 1}:" in err["message"], err["message"]
    assert path.read_bytes() == before
