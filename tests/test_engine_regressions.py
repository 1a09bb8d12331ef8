"""Regressions of the released engine, pinned through the command line only.

Each test states the part of the contract (the product spec: CLI.md,
RULES.md; docs/ledger.md) it holds the engine to. All of them failed on the
released code (the engine before the rewrite); the failure each one caught is
named in its docstring.

Numbers are worked out by hand from RULES.md:
- an sms join is active at once and credits 150 welcome points;
- `mobile` earns floor(amount x coefficient / 5); a customer since the join date
  earns at 1.0 for the first 6 months, 1.1 up to 12, 1.2 up to 24;
- a lot expires 12 months after it was credited (same local date), gone from
  00:00 Moscow time of that date; spending is oldest expiry first;
- RU-MOW prices: minutes_60 300, minutes_30 210;
- refunds: floor(p x r / A), taken from the spending's own lot first, then
  oldest expiry first, the rest becomes debt, repaid first by every credit.
Only `bonuscli.cli.cli` is used, through the `run` fixture; files are read from disk.
"""

from __future__ import annotations

import csv
import io
import json
import os
import pickle
import shutil
from pathlib import Path

A = "9161234567"
B = "9167654321"
C = "9031112233"
D = "9035554433"
E = "9169998877"
F = "9261112233"
MOW = "RU-MOW"


# ---------------------------------------------------------------- helpers


def ledger_file(data_dir: Path, phone: str) -> Path:
    return data_dir / "ledgers" / f"{phone}.jsonl"


def ledger_bytes(data_dir: Path, phone: str):
    f = ledger_file(data_dir, phone)
    return f.read_bytes() if f.exists() else None


def ledger_events(data_dir: Path, phone: str) -> list:
    raw = ledger_bytes(data_dir, phone) or b""
    return [json.loads(line) for line in raw.splitlines() if line.strip()]


def err_json(result) -> dict:
    """The `error` object of a refused `--json` command (CLI.md §2: one JSON line on stderr)."""
    for stream in (result.stderr, result.stdout):
        for line in reversed(stream.splitlines()):
            line = line.strip()
            if line.startswith("{"):
                try:
                    doc = json.loads(line)
                except ValueError:
                    continue
                if isinstance(doc, dict) and isinstance(doc.get("error"), dict):
                    return doc["error"]
    raise AssertionError(f"no JSON error: stdout={result.stdout!r} stderr={result.stderr!r}")


def join(run, phone, at, region=MOW, *extra):
    return run.j("join", phone, "--region", region, "--at", at, *extra)


def earn(run, phone, amount, at, ref=None, category="mobile"):
    args = ["earn", phone, amount, "--category", category, "--at", at]
    if ref is not None:
        args += ["--ref", ref]
    return run.j(*args)


def bal(run, phone, at, *extra):
    return run.j("balance", phone, "--at", at, *extra)


def sound(run, at, *extra):
    r = run("check", "--ledgers", "--at", at, *extra)
    assert r.exit_code == 0, ("check --ledgers", r.exit_code, r.stdout, r.stderr)


def refused(run, *args, code=1) -> dict:
    r = run(*args, "--json")
    assert r.exit_code == code, (args, r.exit_code, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    err = err_json(r)
    assert err["code"] == code
    return err


def write_csv(path: Path, header, rows) -> Path:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for row in rows:
        w.writerow(row)
    path.write_text(buf.getvalue(), encoding="utf-8")
    return path


def batch(run, command, path, *extra, code=0) -> dict:
    """Run `COMMAND --from PATH --json`; expect `code`; return the summary (stdout)."""
    r = run(command, "--from", path, *extra, "--json")
    assert r.exit_code == code, (command, r.exit_code, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    doc = json.loads(r.stdout)
    assert {"rows", "applied", "duplicates", "refused", "errors", "problems"} <= set(doc), doc
    return doc


# ---------------------------------------------------------------- 1. as-of reads never corrupt later answers

LONG_ROWS = 460


def long_ledger(run, data_dir, tmp_path) -> dict:
    """A: joined 2024-01-15 (sms); 460 earns by `earn --from`, one every 21 hours from 2024-01-16
    to 2025-02-21 (so the first lots expire during the history); then single commands: a
    redemption, a debit and a credit; B: a short ledger. Returns {ref: at} of A's earns."""
    import datetime as dt

    join(run, A, "2024-01-15T10:00")
    amounts = ["5.00", "0.01", "100.00", "1234.56", "7.77"]
    start = dt.datetime(2024, 1, 16, 9, 0)
    rows, refs = [], {}
    for i in range(LONG_ROWS):
        at = (start + dt.timedelta(hours=21 * i)).strftime("%Y-%m-%dT%H:%M")
        ref = f"L{i:04d}"
        rows.append([A, amounts[i % len(amounts)], "mobile", ref, at])
        refs[ref] = at
    f = write_csv(tmp_path / "long.csv", ["phone", "amount", "category", "ref", "at"], rows)
    s = batch(run, "earn", f, "--at", rows[-1][4])
    assert (s["rows"], s["applied"], s["refused"], s["errors"]) == (LONG_ROWS, LONG_ROWS, 0, 0), s
    last = rows[-1][4]
    assert last < "2025-03-10"
    run.j("redeem", A, "minutes_30", "--at", "2025-03-11T10:00")
    run.j("adjust", A, "-50", "--reason", "correction", "--at", "2025-03-12T10:00")
    run.j("adjust", A, "30", "--reason", "goodwill", "--ref", "adj-1", "--at", "2025-03-13T10:00")
    # a second, short member, for the report
    join(run, B, "2025-01-20T10:00")
    earn(run, B, "1000", "2025-02-01T10:00", "b1")
    assert len(ledger_events(data_dir, A)) >= 450
    return refs


def test_as_of_read_does_not_corrupt_the_next_answer(run, data_dir, tmp_path):
    """docs/ledger.md: "Reading as of an earlier --at is fine: events after it are ignored";
    CLI.md §3: anything under <data-dir> but ledgers can be deleted without changing any answer.
    So `balance --at <middle>` followed by `balance` at a later time gives exactly what a
    from-scratch replay (cache/ deleted) gives.
    Released engine: the as-of read saved a checkpoint claiming the whole file with the state of
    the middle; the next read resumed from it and missed every later event."""
    long_ledger(run, data_dir, tmp_path)
    late = "2025-03-20T12:00"
    fresh_late = bal(run, A, late)  # whatever caches this builds are sound
    mid = bal(run, A, "2024-08-01T12:00")
    assert mid["as_of"].startswith("2024-08-01")
    after = bal(run, A, late)
    f_after = run.j("forecast", A, "--days", "400", "--at", late)
    shutil.rmtree(data_dir / "cache", ignore_errors=True)
    scratch = bal(run, A, late)
    f_scratch = run.j("forecast", A, "--days", "400", "--at", late)
    assert after == scratch
    assert fresh_late == scratch
    assert f_after == f_scratch
    # and the as-of answer itself is what a from-scratch replay says
    shutil.rmtree(data_dir / "cache", ignore_errors=True)
    assert bal(run, A, "2024-08-01T12:00") == mid
    sound(run, late)


def test_repeated_ref_after_as_of_read_is_a_duplicate(run, data_dir, tmp_path):
    """RULES.md §3 Idempotency: a second earn with the same reference changes nothing and
    reports `duplicate: true`, whatever reads came before it.
    Released engine: after an as-of read the earn was decided on the stale checkpoint, did not
    see the references recorded after the as-of instant, and credited the spending again."""
    refs = long_ledger(run, data_dir, tmp_path)
    late_ref = sorted(r for r, at in refs.items() if at > "2025-01-01")[-3]
    bal(run, A, "2024-08-01T12:00")
    before = ledger_bytes(data_dir, A)
    v = earn(run, A, "999", "2025-03-21T10:00", late_ref)
    assert v["duplicate"] is True
    assert ledger_bytes(data_dir, A) == before
    # an as-of read again, then the same repeat through a batch row
    bal(run, A, "2024-06-01T12:00")
    f = write_csv(tmp_path / "again.csv", ["phone", "amount", "category", "ref", "at"],
                  [[A, "999", "mobile", late_ref, "2025-03-21T11:00"]])
    s = batch(run, "earn", f, "--at", "2025-03-21T11:00")
    assert (s["applied"], s["duplicates"]) == (0, 1), s
    assert ledger_bytes(data_dir, A) == before
    sound(run, "2025-03-21T12:00")


def test_report_outstanding_is_the_sum_of_balances_after_as_of_read(run, data_dir, tmp_path):
    """CLI.md `report`: `outstanding` is the points available of all members, so it equals the sum
    of every member's `balance` `available` as of the same instant, reads as of earlier instants
    notwithstanding.
    Released engine: `balance` after an as-of read answered from the stale checkpoint."""
    long_ledger(run, data_dir, tmp_path)
    late = "2025-03-21T12:00"
    bal(run, A, "2024-09-15T12:00")
    bal(run, B, "2025-01-25T12:00")
    rep = run.j("report", "--at", late)
    total = sum(bal(run, p, late)["available"] for p in (A, B))
    assert rep["outstanding"] == total
    shutil.rmtree(data_dir / "cache", ignore_errors=True)
    assert run.j("report", "--at", late)["outstanding"] == sum(bal(run, p, late)["available"] for p in (A, B))
    sound(run, late)


# ---------------------------------------------------------------- 2. batch rows decided as of their own `at`


def expiring_member(run, phone):
    """Joined 2024-02-10 (150, gone from 2025-02-10); 500 RUB mobile on 2024-06-01 (100 points,
    gone from 2025-06-01). 250 available until 2025-02-10, 100 from then on."""
    join(run, phone, "2024-02-10T10:00")
    assert earn(run, phone, "500", "2024-06-01T10:00")["points"] == 100


def test_adjust_batch_row_refused_after_expiry_like_the_single_command(run, data_dir, tmp_path):
    """CLI.md `earn --from` (and the other imports): each row is decided as of its own `at`, so
    expiry between two rows of one member applies exactly as it would to single commands;
    RULES.md §3: a debit never goes below zero (exit 1, insufficient-points).
    Row 1 (2025-02-01) debits 10: 240 left (140 of them expire 2025-02-10). Row 2 (2025-02-15)
    debits 200 but only 100 are left: refused.
    Released engine: row 2 was decided on the state as of row 1 (expired points still there) and
    applied."""
    expiring_member(run, A)
    expiring_member(run, B)  # the twin, by single commands
    assert run.j("adjust", B, "-10", "--reason", "x", "--ref", "d1", "--at", "2025-02-01T10:00")["balance"] == 240
    err = refused(run, "adjust", B, "-200", "--reason", "x", "--ref", "d2", "--at", "2025-02-15T10:00")
    assert err["kind"] == "insufficient-points"
    assert bal(run, B, "2025-02-15T10:00")["available"] == 100

    f = write_csv(tmp_path / "adj.csv", ["phone", "points", "reason", "ref", "at"],
                  [[A, "-10", "x", "d1", "2025-02-01T10:00"],
                   [A, "-200", "x", "d2", "2025-02-15T10:00"]])
    s = batch(run, "adjust", f, "--at", "2025-02-15T10:00", code=1)
    assert (s["rows"], s["applied"], s["refused"], s["errors"]) == (2, 1, 1, 0), s
    assert [(p["line"], p["code"]) for p in s["problems"]] == [(3, 1)]
    a = bal(run, A, "2025-02-16T10:00")
    b = bal(run, B, "2025-02-16T10:00")
    assert (a["available"], a["debt"]) == (100, 0)
    assert {k: v for k, v in a.items() if k != "phone"} == {k: v for k, v in b.items() if k != "phone"}
    sound(run, "2025-02-16T10:00")


def refund_member(run, phone):
    """Joined 2024-02-10 (150, gone 2025-02-10); x1: 1000 RUB mobile on 2024-02-20 (200, gone
    2025-02-20); x2: 100 RUB mobile on 2024-06-01 (20, gone 2025-06-01). 370 available."""
    join(run, phone, "2024-02-10T10:00")
    assert earn(run, phone, "1000", "2024-02-20T10:00", "x1")["points"] == 200
    assert earn(run, phone, "100", "2024-06-01T10:00", "x2")["points"] == 20


def test_refund_batch_row_after_expiry_creates_debt_like_the_single_command(run, data_dir, tmp_path):
    """CLI.md `refund --from`: rows decided as of their own `at`; RULES.md §3 Refunds: the points
    come out of the spending's lot first, then the other available points, and what is missing
    becomes debt.
    Row 1 (2025-02-01): 50 RUB of x2 -> floor(20 x 50 / 100) = 10, from x2's lot (10 left).
    Row 2 (2025-02-25): x1 in full -> 200 points; x1's lot and the welcome have expired, only 10
    are available: 10 taken, 190 debt.
    Released engine: row 2 took the 200 from x1's already expired lot (no debt)."""
    refund_member(run, A)
    refund_member(run, B)
    v = run.j("refund", B, "x2", "--amount", "50", "--at", "2025-02-01T10:00")
    assert (v["points_taken"], v["debt"], v["balance"]) == (10, 0, 360)
    v = run.j("refund", B, "x1", "--at", "2025-02-25T10:00")
    assert (v["points_taken"], v["debt"], v["balance"]) == (10, 190, 0)

    f = write_csv(tmp_path / "ref.csv", ["phone", "ref", "amount", "at"],
                  [[A, "x2", "50", "2025-02-01T10:00"],
                   [A, "x1", "", "2025-02-25T10:00"]])
    s = batch(run, "refund", f, "--at", "2025-02-25T10:00")
    assert (s["rows"], s["applied"], s["refused"], s["errors"]) == (2, 2, 0, 0), s
    at = "2025-02-26T10:00"
    a, b = bal(run, A, at), bal(run, B, at)
    assert (b["available"], b["debt"]) == (0, 190)
    assert {k: v for k, v in a.items() if k != "phone"} == {k: v for k, v in b.items() if k != "phone"}
    # the debt is real: the next credit repays it first (as the single-command twin's does)
    ea = earn(run, A, "100", "2025-02-27T10:00")
    eb = earn(run, B, "100", "2025-02-27T10:00")
    # customer for more than 12 months: floor(100 x 1.2 / 5) = 24, all of it repays the debt
    assert ea["points"] == eb["points"] == 24
    assert bal(run, A, "2025-02-27T11:00")["debt"] == bal(run, B, "2025-02-27T11:00")["debt"] == 190 - 24
    assert ea["balance"] == eb["balance"] == 0
    sound(run, "2025-02-28T10:00")


# ---------------------------------------------------------------- 3. batch rows get the single command's validation

CTRL_REF = "bad\x07ref"
LONG_REF = "r" * 300


def no_text_in_ledger(data_dir, phone, *texts):
    raw = (ledger_bytes(data_dir, phone) or b"").decode("utf-8")
    for t in texts:
        assert json.dumps(t)[1:-1] not in raw and t not in raw, f"{t[:20]!r} reached the ledger"


def single_refuses(run, *args):
    """The single command a batch row must match refuses this as malformed (CLI.md §2: exit 2)."""
    refused(run, *args, code=2)


def test_earn_batch_validates_rows_like_the_single_command(run, data_dir, tmp_path):
    """CLI.md `earn --from`: exactly the single command's validation (a row the command would
    refuse is refused, an empty `ref` included); a malformed row does not stop the batch; exit 2
    if any row was malformed; `problems` lists {line, ref, code, message}, line counting the header.
    Released engine: a control character or 300 characters in a ref went to the ledger, and an
    empty ref was an earn without a reference."""
    join(run, A, "2025-01-10T10:00")
    for bad in (CTRL_REF, LONG_REF, ""):
        single_refuses(run, "earn", A, "100", "--category", "mobile", "--ref", bad, "--at", "2025-01-10T11:00")
    f = write_csv(tmp_path / "earn.csv", ["phone", "amount", "category", "ref", "at"],
                  [[A, "1000", "mobile", "ok-1", "2025-01-11T10:00"],      # line 2: 200
                   [A, "1001", "mobile", CTRL_REF, "2025-01-11T11:00"],    # line 3
                   [A, "1002", "mobile", LONG_REF, "2025-01-11T12:00"],    # line 4
                   [A, "1003", "mobile", "", "2025-01-11T13:00"],          # line 5
                   [A, "500", "mobile", "ok-2", "2025-01-11T14:00"]])      # line 6: 100
    s = batch(run, "earn", f, "--at", "2025-01-11T14:00", code=2)
    assert (s["rows"], s["applied"], s["errors"]) == (5, 2, 3), s
    assert sorted((p["line"], p["code"]) for p in s["problems"]) == [(3, 2), (4, 2), (5, 2)]
    earns = [e for e in ledger_events(data_dir, A) if e["type"] == "earn"]
    assert [(e.get("ref"), e["amount"]) for e in earns] == [("ok-1", "1000.00"), ("ok-2", "500.00")]
    no_text_in_ledger(data_dir, A, CTRL_REF, LONG_REF)
    assert bal(run, A, "2025-01-12T10:00")["available"] == 150 + 200 + 100
    sound(run, "2025-01-12T10:00")


def test_adjust_batch_validates_rows_like_the_single_command(run, data_dir, tmp_path):
    """As for `earn --from`: `adjust --from` rows get `adjust`'s validation: a ref with a control
    character, a 300-character ref, an empty ref and a 13-digit POINTS are malformed (code 2,
    exit 2), written nowhere; the good rows are applied.
    Released engine: all four were applied (one of them a credit of a trillion points)."""
    join(run, A, "2025-01-10T10:00")
    for bad in (CTRL_REF, LONG_REF, ""):
        single_refuses(run, "adjust", A, "5", "--reason", "x", "--ref", bad, "--at", "2025-01-10T11:00")
    single_refuses(run, "adjust", A, "1000000000000", "--reason", "x", "--ref", "big", "--at", "2025-01-10T11:00")
    f = write_csv(tmp_path / "adj.csv", ["phone", "points", "reason", "ref", "at"],
                  [[A, "50", "goodwill", "a-ok-1", "2025-01-11T10:00"],          # line 2
                   [A, "7", "goodwill", CTRL_REF, "2025-01-11T11:00"],           # line 3
                   [A, "8", "goodwill", LONG_REF, "2025-01-11T12:00"],           # line 4
                   [A, "1000000000000", "goodwill", "a-big", "2025-01-11T13:00"],  # line 5
                   [A, "9", "goodwill", "", "2025-01-11T14:00"],                 # line 6
                   [A, "-20", "correction", "a-ok-2", "2025-01-11T15:00"]])      # line 7
    s = batch(run, "adjust", f, "--at", "2025-01-11T15:00", code=2)
    assert (s["rows"], s["applied"], s["errors"]) == (6, 2, 4), s
    assert sorted((p["line"], p["code"]) for p in s["problems"]) == [(3, 2), (4, 2), (5, 2), (6, 2)]
    adjusts = [e for e in ledger_events(data_dir, A) if e["type"] == "adjust"]
    assert [(e.get("ref"), e["points"]) for e in adjusts] == [("a-ok-1", 50), ("a-ok-2", -20)]
    no_text_in_ledger(data_dir, A, CTRL_REF, LONG_REF, "a-big")
    assert bal(run, A, "2025-01-12T10:00")["available"] == 150 + 50 - 20
    sound(run, "2025-01-12T10:00")


def test_refund_batch_validates_rows_like_the_single_command(run, data_dir, tmp_path):
    """`refund --from` rows get `refund`'s validation: REF (and a refund's own ref) with a control
    character, of 300 characters, or empty is malformed (code 2, exit 2), not "unknown reference"
    (code 1); the good rows are applied.
    Released engine: such refs were looked up and refused as unknown (code 1)."""
    join(run, A, "2025-01-10T10:00")
    earn(run, A, "1000", "2025-01-11T10:00", "e1")   # 200
    earn(run, A, "500", "2025-01-11T11:00", "e2")    # 100
    for bad in (CTRL_REF, LONG_REF, ""):
        single_refuses(run, "refund", A, bad, "--at", "2025-01-11T12:00")
    single_refuses(run, "refund", A, "e1", "--amount", "10", "--ref", CTRL_REF, "--at", "2025-01-11T12:00")
    f = write_csv(tmp_path / "ref.csv", ["phone", "ref", "amount", "refund_ref", "at"],
                  [[A, "e1", "100", "rf-1", "2025-01-12T10:00"],     # line 2: floor(200 x 100 / 1000) = 20
                   [A, CTRL_REF, "", "", "2025-01-12T11:00"],        # line 3
                   [A, LONG_REF, "", "", "2025-01-12T12:00"],        # line 4
                   [A, "", "10", "", "2025-01-12T13:00"],            # line 5
                   [A, "e1", "10", CTRL_REF, "2025-01-12T13:30"],    # line 6: a bad --ref
                   [A, "e2", "", "", "2025-01-12T14:00"]])           # line 7: 100
    s = batch(run, "refund", f, "--at", "2025-01-12T14:00", code=2)
    assert (s["rows"], s["applied"], s["errors"]) == (6, 2, 4), s
    assert sorted((p["line"], p["code"]) for p in s["problems"]) == [(3, 2), (4, 2), (5, 2), (6, 2)]
    refunds = [e for e in ledger_events(data_dir, A) if e["type"] == "refund"]
    assert [(e["earn_ref"], e["amount"]) for e in refunds] == [("e1", "100.00"), ("e2", "500.00")]
    no_text_in_ledger(data_dir, A, CTRL_REF, LONG_REF)
    assert bal(run, A, "2025-01-13T10:00")["available"] == 150 + 200 + 100 - 20 - 100
    sound(run, "2025-01-13T10:00")


# ---------------------------------------------------------------- 4. nothing read from the data directory is unpickled


class _Boom:
    """Unpickling this runs `touch MARKER`."""

    def __init__(self, marker: Path):
        self.cmd = f"touch {marker}"

    def __reduce__(self):
        return (os.system, (self.cmd,))


def poison(data_dir: Path, marker: Path, phones):
    payload = pickle.dumps(_Boom(marker), protocol=2)
    cache = data_dir / "cache"
    for p in sorted(cache.rglob("*")) if cache.exists() else []:
        if p.is_file() and not p.is_symlink():
            p.write_bytes(payload)
    (cache / "members").mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(cache, 0o700)
    os.chmod(cache / "members", 0o700)
    plausible = [cache / "catalog-x.pickle", cache / "catalog.json", cache / "catalog.pickle"]
    for phone in phones:
        plausible += [cache / "members" / f"{phone}.ckpt", cache / "members" / f"{phone}.json"]
    for p in plausible:
        p.write_bytes(payload)
        os.chmod(p, 0o600)


def test_nothing_in_the_data_directory_is_unpickled(run, data_dir, tmp_path):
    """CLI.md §3: what the store keeps under <data-dir> besides the ledgers is plain data:
    nothing read from the data directory is ever executed or unpickled, and deleting it changes
    no answer. Every file under cache/ (and files at the names a cache would use) is replaced by
    a pickle whose loading runs `touch MARKER`; every command still succeeds, answers exactly as
    with cache/ deleted, and the marker never appears.
    Released engine: the catalog cache and the member checkpoints were pickles, loaded as such."""
    refs = long_ledger(run, data_dir, tmp_path)   # 460+ lines: a member worth a checkpoint
    late = "2025-03-20T12:00"
    for phone in (A, B):
        bal(run, phone, late)
    run.j("report", "--at", late)

    marker = tmp_path / "MARKER"
    ref_dir = tmp_path / "reference"
    shutil.copytree(data_dir, ref_dir, symlinks=True)
    shutil.rmtree(ref_dir / "cache", ignore_errors=True)
    poison(data_dir, marker, (A, B))

    def both(*args):
        got = run("--data-dir", data_dir, *args)
        assert not marker.exists(), f"{args}: something in the data directory was unpickled"
        want = run("--data-dir", ref_dir, *args)
        assert got.exit_code == 0, (args, got.exit_code, got.stdout, got.stderr)
        assert want.exit_code == 0, (args, want.exit_code, want.stdout, want.stderr)
        if "--json" in args:  # (check's human output may name the directory)
            assert got.stdout == want.stdout, args
        return got

    for phone in (A, B):
        both("balance", phone, "--at", late, "--json")
        both("forecast", phone, "--days", "400", "--at", late, "--json")
        both("history", phone, "--at", late, "--json")
    both("balance", A, "--at", "2024-09-01T12:00", "--json")
    both("report", "--at", late, "--json")
    both("check", "--ledgers", "--at", late)
    both("earn", A, "100", "--category", "mobile", "--ref", "after-poison", "--at", "2025-03-21T10:00", "--json")
    dup = sorted(refs)[-1]
    both("earn", A, "100", "--category", "mobile", "--ref", dup, "--at", "2025-03-21T11:00", "--json")
    both("balance", A, "--at", "2025-03-22T12:00", "--json")
    both("check", "--ledgers", "--at", "2025-03-22T12:00")
    # poisoned again, after the commands above rebuilt whatever they keep
    poison(data_dir, marker, (A, B))
    both("balance", A, "--at", "2025-03-22T12:00", "--json")
    both("report", "--at", "2025-03-22T12:00", "--json")
    assert not marker.exists()


# ---------------------------------------------------------------- 5. debt is repaid by every credit


def indebted(run, phone, join_at="2025-01-10T10:00"):
    """150 welcome + t1: 1000 RUB mobile (200) = 350; minutes_60 (300, oldest first) leaves 50
    of t1's lot; refunding t1 takes those 50 and leaves 150 of debt."""
    join(run, phone, join_at)
    assert earn(run, phone, "1000", "2025-02-01T10:00", "t1")["points"] == 200
    assert run.j("redeem", phone, "minutes_60", "--at", "2025-02-05T10:00")["balance"] == 50
    v = run.j("refund", phone, "t1", "--at", "2025-02-06T10:00")
    assert (v["points_taken"], v["debt"], v["balance"]) == (50, 150, 0)


def test_adjust_and_earn_repay_debt_and_say_so(run, data_dir):
    """RULES.md §3: every credit repays debt first, and every command that credits points says
    how many went to the debt (`debt_repaid`) and the debt left (`debt`) (CLI.md `earn`).
    Released engine: `adjust` and `earn` gave neither field."""
    indebted(run, A)
    v = run.j("adjust", A, "100", "--reason", "goodwill", "--at", "2025-02-07T10:00")
    assert (v["points"], v["debt_repaid"], v["debt"], v["balance"]) == (100, 100, 50, 0)
    b = bal(run, A, "2025-02-07T11:00")
    assert (b["available"], b["debt"]) == (0, 50)
    v = earn(run, A, "500", "2025-02-08T10:00")   # 100 points: 50 repay, a lot of 50
    assert (v["points"], v["debt_repaid"], v["debt"], v["balance"]) == (100, 50, 0, 50)
    b = bal(run, A, "2025-02-08T11:00")
    assert (b["available"], b["debt"]) == (50, 0)
    v = earn(run, A, "500", "2025-02-09T10:00")
    assert (v["debt_repaid"], v["debt"], v["balance"]) == (0, 0, 150)
    sound(run, "2025-02-10")


def test_accepted_gift_repays_the_recipients_debt(run, data_dir):
    """RULES.md §3: the points of a gift the member accepts repay their debt first; `accept`
    credits points, so it gives `debt_repaid` and `debt`.
    B owes 150; A (350) gifts 200; B accepts: 150 repay the debt, 50 form lots.
    Released engine: the gift's points went to B's lots and the debt stayed."""
    indebted(run, B)
    join(run, A, "2025-01-10T10:00")
    earn(run, A, "1000", "2025-02-01T11:00")
    g = run.j("gift", A, B, "200", "--at", "2025-02-10T10:00")
    v = run.j("accept", B, g["gift_id"], "--at", "2025-02-11T10:00")
    assert (v["status"], v["points"], v["debt_repaid"], v["debt"], v["balance"]) == ("accepted", 200, 150, 0, 50)
    b = bal(run, B, "2025-02-11T11:00")
    assert (b["available"], b["debt"]) == (50, 0)
    a = bal(run, A, "2025-02-11T11:00")
    assert (a["available"], a["held_out"], a["debt"]) == (150, 0, 0)
    sound(run, "2025-02-12")


def gift_then_debt(run, sender, recipient, gift_day):
    """Sender: 150 welcome (2025-01-10) + s1: 1000 RUB mobile (200) = 350. Gifts 300 (all but 50,
    which are s1's), then refunds s1 in full: 50 taken, 150 debt, nothing available."""
    join(run, sender, "2025-01-10T10:00")
    join(run, recipient, "2025-01-10T10:05")
    assert earn(run, sender, "1000", "2025-02-01T10:00", "s1")["points"] == 200
    g = run.j("gift", sender, recipient, "300", "--at", f"{gift_day}T10:00")
    v = run.j("refund", sender, "s1", "--at", f"{gift_day}T11:00")
    assert (v["points_taken"], v["debt"], v["balance"]) == (50, 150, 0)
    b = bal(run, sender, f"{gift_day}T12:00")
    assert (b["available"], b["held_out"], b["debt"]) == (0, 300, 150)
    return g


def test_rejected_gift_coming_back_repays_the_senders_debt(run, data_dir):
    """RULES.md §3: the points of the member's own gift that come back (rejected) repay their
    debt first: 300 come back, 150 repay, 150 available.
    Released engine: the 300 came back as lots and the debt stayed."""
    g = gift_then_debt(run, A, B, "2025-02-05")
    run.j("accept", B, g["gift_id"], "--reject", "--at", "2025-02-06T10:00")
    a = bal(run, A, "2025-02-06T11:00")
    assert (a["available"], a["held_out"], a["debt"]) == (150, 0, 0)
    assert run.j("forecast", A, "--days", "400", "--at", "2025-02-06T11:00")["total"] == 150
    sound(run, "2025-02-07")


def test_returned_gift_repays_the_senders_debt(run, data_dir):
    """RULES.md §3 and §6: a gift not accepted within 30 days comes back to the sender, and those
    points repay the sender's debt first: 150 available, no debt, from the deadline on.
    Released engine: the returned 300 were available and the debt stayed."""
    g = gift_then_debt(run, A, B, "2025-02-05")
    assert g["deadline"].startswith("2025-03-07T10:00")
    a = bal(run, A, "2025-03-07T09:59")
    assert (a["available"], a["held_out"], a["debt"]) == (0, 300, 150)
    a = bal(run, A, "2025-03-07T10:01")
    assert (a["available"], a["held_out"], a["debt"]) == (150, 0, 0)
    # the next change to the sender records the outcome; the numbers stay
    v = run.j("adjust", A, "10", "--reason", "x", "--at", "2025-03-08T10:00")
    assert (v["debt_repaid"], v["debt"], v["balance"]) == (0, 0, 160)
    sound(run, "2025-03-09")


# ---------------------------------------------------------------- 6. held gift points expire


def test_held_gift_points_expire_and_the_gift_can_no_longer_be_accepted(run, data_dir):
    """RULES.md §6: held points that reach their expiry are lost: from that date they are no
    longer in the sender's `held_out` nor in the recipient's `pending_in` points; a gift whose
    held points have all expired cannot be accepted (exit 1, the message says the points
    expired; kind `gift-expired`).
    A (150 welcome, gone from 2025-03-10) gifts them all to B on 2025-03-01 (deadline 03-31).
    Released engine: `held_out` and `pending_in` still showed 150, and `accept` took the gift
    (with 0 points)."""
    join(run, A, "2024-03-10T10:00")
    join(run, B, "2025-01-05T10:00")
    g = run.j("gift", A, B, "150", "--at", "2025-03-01T10:00")
    a = bal(run, A, "2025-03-09T23:59")
    assert (a["available"], a["held_out"]) == (0, 150)
    assert [p["points"] for p in bal(run, B, "2025-03-09T23:59")["pending_in"]] == [150]

    at = "2025-03-12T10:00"
    a = bal(run, A, at)
    assert (a["available"], a["held_out"]) == (0, 0)
    pending = [p for p in bal(run, B, at)["pending_in"] if p["gift_id"] == g["gift_id"]]
    assert all(p["points"] == 0 for p in pending), pending
    before = {p: ledger_bytes(data_dir, p) for p in (A, B)}
    err = refused(run, "accept", B, g["gift_id"], "--at", at)
    assert err["kind"] == "gift-expired"
    assert "expired" in err["message"]
    assert {p: ledger_bytes(data_dir, p) for p in (A, B)} == before
    b = bal(run, B, at)
    assert b["available"] == 150
    sound(run, at)
    # after the deadline nothing comes back either
    a = bal(run, A, "2025-04-01T10:00")
    assert (a["available"], a["held_out"]) == (0, 0)
    assert bal(run, B, "2025-04-01T10:00")["pending_in"] == []
    sound(run, "2025-04-01T10:00")


def test_partly_expired_gift_transfers_only_the_valid_points(run, data_dir):
    """RULES.md §6: accepting a gift of which only some points expired transfers the points still
    valid, and says how many were lost (`points` = valid, `expired` = lost).
    A: 150 welcome (gone 2025-03-10) + 200 earned 2024-04-15 (gone 2025-04-15); gifts 250 on
    2025-03-05 (150 of 03-10, 100 of 04-15). On 2025-03-12: held_out 100, pending_in 100;
    B accepts 100, 150 expired.
    Released engine: held_out/pending_in said 250 and `accept` gave no `expired`."""
    join(run, A, "2024-03-10T10:00")
    assert earn(run, A, "1000", "2024-04-15T10:00")["points"] == 200
    join(run, B, "2025-01-01T10:00")
    g = run.j("gift", A, B, "250", "--at", "2025-03-05T10:00")
    at = "2025-03-12T10:00"
    a = bal(run, A, at)
    assert (a["available"], a["held_out"]) == (100, 100)
    assert [p["points"] for p in bal(run, B, at)["pending_in"] if p["gift_id"] == g["gift_id"]] == [100]
    v = run.j("accept", B, g["gift_id"], "--at", at)
    assert (v["status"], v["points"], v["expired"]) == ("accepted", 100, 150)
    assert v["balance"] == 150 + 100
    b = bal(run, B, "2025-03-12T11:00")
    assert (b["available"], b["pending_in"]) == (250, [])
    lots = run.j("forecast", B, "--until", "2026-12-31", "--at", "2025-03-12T11:00")["lots"]
    assert [(x["expires_on"], x["points"]) for x in lots] == [("2025-04-15", 100), ("2026-01-01", 150)]
    a = bal(run, A, "2025-03-12T11:00")
    assert (a["available"], a["held_out"]) == (100, 0)
    sound(run, "2025-03-13")


# ---------------------------------------------------------------- 7. earn says debt_repaid and debt, even when 0


def test_earn_json_has_debt_fields_without_debt(run, data_dir):
    """CLI.md `earn`: JSON gives `debt_repaid` and `debt`, for every credit (0 when no debt).
    Released engine: neither field."""
    join(run, A, "2025-01-10T10:00")
    v = earn(run, A, "1000", "2025-01-11T10:00", "e1")
    assert (v["points"], v["debt_repaid"], v["debt"], v["balance"]) == (200, 0, 0, 350)
    v = earn(run, A, "1000", "2025-01-11T11:00", "e1")  # a repeat: still the fields
    assert v["duplicate"] is True
    assert (v["debt_repaid"], v["debt"]) == (0, 0)


# ---------------------------------------------------------------- 8. (found by tests/test_differential.py) as-of reads
#                                                                     and the records later commands write


def test_as_of_read_is_not_changed_by_a_later_settle_record(run, data_dir):
    """docs/ledger.md: "Reading as of an earlier --at is fine: events after it are ignored", and a
    `gift_settle` is only "a record of an outcome already decided elsewhere". A gift not accepted
    by its deadline is back with the sender from the deadline; a read as of an instant after the
    deadline says so, before and after the sender's next command records the return.
    A (150) gifts B 30 on 2025-01-20 (deadline 2025-02-19T10:00); nobody answers; A earns on
    2025-03-01 (which records the return). As of 2025-02-25: 150 available, nothing held.
    Released engine: once the record existed (dated 2025-03-01), the as-of read no longer looked at
    B's ledger and showed the 30 points held forever (120 available, 30 held)."""
    join(run, A, "2025-01-10T10:00")
    join(run, B, "2025-01-10T10:05")
    g = run.j("gift", A, B, "30", "--at", "2025-01-20T10:00")
    assert g["deadline"].startswith("2025-02-19T10:00")
    at = "2025-02-25T10:00"
    before = bal(run, A, at)
    assert (before["available"], before["held_out"]) == (150, 0)
    assert earn(run, A, "100", "2025-03-01T10:00")["balance"] == 170
    assert bal(run, A, at) == before
    pending = bal(run, A, "2025-01-25T10:00")
    assert (pending["available"], pending["held_out"]) == (120, 30)
    assert bal(run, B, at)["pending_in"] == []
    shutil.rmtree(data_dir / "cache", ignore_errors=True)
    assert bal(run, A, at) == before
    sound(run, "2025-03-02")
