"""A ledger edited and re-chained outside bonuscli (its hashes recomputed) whose events lack a field
their type needs, or hold a value of the wrong type, is a ledger problem: `check --ledgers` names the
file and line (exit 3), and every command on it, or on a member whose gifts and referrals lead to it,
is exit 3 `ledger-corrupt`, never an internal error (found in the last session's review: a `gift_in`
without `from` crashed `check` and `balance`)."""

from __future__ import annotations

import json

import pytest

from bonuscli.ledger import genesis, line_hash

A, B, C = "9161234567", "9167654321", "9165550001"


def _program(run, data):
    run.ok("join", A, "--region", "RU-MOW", "--at", "2025-01-05T10:00", "--data-dir", data)
    run.ok("join", B, "--region", "RU-MOW", "--referrer", A, "--at", "2025-01-05T11:00", "--data-dir", data)
    run.ok("earn", A, "3000", "--category", "mobile", "--ref", "e1", "--at", "2025-01-06T10:00", "--data-dir", data)
    run.ok("gift", A, B, "100", "--at", "2025-01-07T10:00", "--data-dir", data)
    gift = run.j("history", A, "--data-dir", data, "--at", "2025-01-07T11:00")
    run.ok("refund", A, "e1", "--amount", "500", "--at", "2025-01-08T10:00", "--data-dir", data)
    run.ok("adjust", A, "25", "--reason", "goodwill", "--ref", "a1", "--at", "2025-01-08T11:00", "--data-dir", data)
    run.ok("redeem", A, "minutes_30", "--at", "2025-01-09T10:00", "--data-dir", data)
    return gift


def _rewrite(path, phone, change):
    events = [json.loads(raw) for raw in path.read_bytes().splitlines()]
    change(events)
    prev, out = genesis(phone), []
    for e in events:
        e["prev"] = prev
        raw = json.dumps(e, separators=(",", ":")).encode()
        out.append(raw)
        prev = line_hash(raw)
    path.write_bytes(b"\n".join(out) + b"\n")


def _cases():
    out = []
    for phone, n in ((A, 8), (B, 2)):  # every line of the program below
        for i in range(n):
            for how in ("drop", "text"):
                out.append((phone, i, how))
    return out


@pytest.mark.parametrize("phone,index,how", _cases())
def test_an_event_re_chained_without_a_field_is_reported_never_an_internal_error(run, tmp_path, phone, index, how):
    data = tmp_path / "d"
    _program(run, data)
    path = data / "ledgers" / f"{phone}.jsonl"
    lines = path.read_bytes().splitlines()
    assert len(lines) == (8 if phone == A else 2)
    keys = [k for k in json.loads(lines[index]) if k not in ("v", "id", "type", "at", "prev")]
    failures = []
    for key in keys:
        def change(events, key=key):
            if how == "drop":
                del events[index][key]
            else:
                events[index][key] = "x" if not isinstance(events[index][key], str) else 7
        original = path.read_bytes()
        _rewrite(path, phone, change)
        for args in (("check", "--ledgers"), ("balance", A), ("balance", B), ("history", A), ("forecast", B),
                     ("earn", A, "100", "--category", "mobile"), ("accept", B, "x")):
            r = run(*args, "--json", "--at", "2025-01-10T10:00", "--data-dir", data)
            kind = json.loads(r.stderr.strip().splitlines()[-1])["error"]["kind"] if r.exit_code else None
            if r.exit_code == 3 and kind not in ("ledger-unsound", "ledger-corrupt", "ledger-tampered"):
                failures.append((key, args[0], kind, r.stderr.strip()[-120:]))
        path.write_bytes(original)
    assert failures == []


def _drop_from(e):
    del e["from"]


def _many_points(e):
    e["points_taken"] = "many"


@pytest.mark.parametrize("phone,kind,change,why", [
    (B, "gift_in", _drop_from, "a gift_in event without from"),
    (A, "refund", _many_points, "a refund event whose points_taken is not a whole number"),
], ids=["missing-field", "wrong-type"])
def test_a_malformed_event_is_a_corrupt_line_named_once(run, tmp_path, phone, kind, change, why):
    data = tmp_path / "d"
    _program(run, data)
    path = data / "ledgers" / f"{phone}.jsonl"
    events = [json.loads(raw) for raw in path.read_bytes().splitlines()]
    n = next(i for i, e in enumerate(events) if e["type"] == kind)
    _rewrite(path, phone, lambda evs: change(evs[n]))
    r = run("balance", phone, "--json", "--at", "2025-01-10T10:00", "--data-dir", data)
    assert r.exit_code == 3
    err = json.loads(r.stderr.strip().splitlines()[-1])["error"]
    assert err["kind"] == "ledger-corrupt"
    assert err["message"].startswith(f"{path}:{n + 1}: corrupt ledger line ({why})")
    r = run("check", "--ledgers", "--at", "2025-01-10T10:00", "--data-dir", data)
    assert r.exit_code == 3
    assert r.stderr.count(f"{path}:{n + 1}: corrupt ledger line ({why})") == 1


def _null_region(run, tmp_path):
    """The program, B's join re-chained with a null region: (data directory, B's ledger)."""
    data = tmp_path / "d"
    _program(run, data)
    path = data / "ledgers" / f"{B}.jsonl"
    _rewrite(path, B, lambda evs: evs[0].__setitem__("region", None))
    return data, path


def test_a_command_that_fails_on_a_malformed_line_names_it_instead_of_an_internal_error(run, tmp_path):
    """`report` sorts the regions; a join re-chained with a null region made it an internal error.
    Plain reads check no fields (they do not pay for it): the failure itself looks for the line."""
    data, path = _null_region(run, tmp_path)
    for args in (("report",), ("report", "--from", "2025-01"), ("report", "--jobs", "2")):
        r = run(*args, "--json", "--at", "2025-01-10T10:00", "--data-dir", data)
        assert r.exit_code == 3, (args, r.stderr)
        err = json.loads(r.stderr.strip().splitlines()[-1])["error"]
        assert err["kind"] == "ledger-corrupt", (args, err)
        assert err["message"].startswith(f"{path}:1: corrupt ledger line (a join event whose region is not a text)")


def test_a_malformed_line_that_no_rule_trips_on_is_found_by_check_and_refuses_writes(run, tmp_path):
    """A null region breaks no replay: `balance` still answers (plain reads check no fields), but
    `check --ledgers` names the line and a change refuses to write to that ledger (CLI.md §3: a
    corrupt ledger is never written to)."""
    data, path = _null_region(run, tmp_path)
    before = path.read_bytes()
    r = run("check", "--ledgers", "--json", "--at", "2025-01-10T10:00", "--data-dir", data)
    assert r.exit_code == 3
    assert {(p["path"], p["line"], p["message"]) for p in json.loads(r.stdout)["problems"]} >= {
        (str(path), 1, "corrupt ledger line (a join event whose region is not a text)")}
    r = run("earn", B, "100", "--category", "mobile", "--json", "--at", "2025-01-10T10:00", "--data-dir", data)
    assert r.exit_code == 3
    err = json.loads(r.stderr.strip().splitlines()[-1])["error"]
    assert err["kind"] == "ledger-corrupt" and err["message"].startswith(f"{path}:1: corrupt ledger line")
    assert path.read_bytes() == before
