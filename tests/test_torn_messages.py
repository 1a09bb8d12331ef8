"""What `check --ledgers` and the readers' warning say an unfinished last line will become: sealed
(a `repair` names it) when it is not a whole chained event, completed and kept when it is one that only
lacks its newline (CLI.md §3). The message must say what the next change really does."""

from __future__ import annotations

A = "9161234567"


def _ledger(run, data_dir):
    run.ok("join", A, "--region", "RU-MOW", "--at", "2025-03-01T10:00")
    run.ok("earn", A, "500", "--category", "mobile", "--ref", "t1", "--at", "2025-03-01T11:00")
    return data_dir / "ledgers" / f"{A}.jsonl"


def test_a_whole_event_without_its_newline_is_announced_as_completed_and_kept(run, data_dir):
    path = _ledger(run, data_dir)
    path.write_bytes(path.read_bytes()[:-1])  # the last event, whole and chained, without its newline
    r = run("check", "--ledgers", "--at", "2025-03-02")
    assert r.exit_code == 3
    assert f"{path}:2: unfinished last line (an interrupted write); the next change to this member completes " \
           "and keeps it" in r.stderr
    r = run("balance", A, "--at", "2025-03-02")
    assert "the next change to this member completes and keeps it" in r.stderr
    run.ok("earn", A, "100", "--category", "mobile", "--ref", "t2", "--at", "2025-03-01T12:00")
    assert b'"repair"' not in path.read_bytes()  # kept, as announced
    assert run.j("check", "--ledgers", "--at", "2025-03-02")["valid"] is True


def test_a_partial_line_is_announced_as_sealed(run, data_dir):
    path = _ledger(run, data_dir)
    with open(path, "ab") as f:
        f.write(b'{"v":2,"id":"9161234567.3","type":"ea')
    r = run("balance", A, "--at", "2025-03-02")
    assert f"{path}:3: ignoring an unfinished last line (an interrupted write); the next change to this member " \
           "seals it" in r.stderr
    run.ok("earn", A, "100", "--category", "mobile", "--ref", "t2", "--at", "2025-03-01T12:00")
    assert b'"repair"' in path.read_bytes()  # sealed, as announced
