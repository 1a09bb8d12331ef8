"""Integrity (docs/reliability.md, "Tamper evidence"): a chain that cannot be stripped, both sides of
every gift, the directory anchor, locks that hold whatever derived file is deleted, no symbolic link
followed, no directory others may write, and no worker left behind. Each tamper scenario is one test:
detected by `check --ledgers`, or by `check --ledgers --anchor` where only an anchor can see it, and
an ordinary write refuses a tampered ledger (exit 3, kind `ledger-tampered`) without appending."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bonuscli.cli import cli
from bonuscli.ledger import genesis, line_hash

ROOT = Path(__file__).resolve().parent.parent
A, B, C = "9162220001", "9162220002", "9162220003"
T0, T1, T2 = "2025-03-01T12:00+03:00", "2025-03-02T10:00+03:00", "2025-03-03T10:00+03:00"


def run(data, *args):
    r = CliRunner().invoke(cli, ["--data-dir", str(data), *map(str, args)], catch_exceptions=False,
                           env={"BONUSCLI_FAULT": None})
    doc = None
    if r.stdout.strip():
        try:
            doc = json.loads(r.stdout)
        except ValueError:
            pass
    err = None
    for line in reversed(r.stderr.strip().splitlines()):
        try:
            err = json.loads(line).get("error")
            break
        except (ValueError, AttributeError):
            continue
    return r.exit_code, doc, err, r.stderr


def ok(data, *args):
    code, doc, err, stderr = run(data, *args, "--json")
    assert code == 0, (args, code, stderr)
    return doc


def check(data, *extra, at=T2):
    code, doc, err, stderr = run(data, "check", "--ledgers", "--at", at, *extra)
    return code, stderr


def ledger(data, phone) -> Path:
    return data / "ledgers" / f"{phone}.jsonl"


@pytest.fixture
def story(tmp_path):
    """A and B in one region: A earns, redeems, gifts B 100, B accepts; C joins."""
    data = tmp_path / "data"
    for p in (A, B, C):
        ok(data, "join", p, "--region", "RU-MOW", "--at", T0)
    ok(data, "earn", A, "1000", "--category", "mobile", "--ref", "e1", "--at", T0)
    ok(data, "redeem", A, "minutes_30", "--at", T0)
    g = ok(data, "gift", A, B, "100", "--at", T1)
    ok(data, "accept", B, g["gift_id"], "--at", T1)
    ok(data, "earn", A, "50", "--category", "mobile", "--ref", "e2", "--at", T1)
    assert check(data) == (0, "")
    return data


def lines_of(path: Path) -> list:
    return path.read_bytes().split(b"\n")[:-1]


def write_lines(path: Path, rows) -> None:
    path.write_bytes(b"".join(r + b"\n" for r in rows))


def rechain(phone, events) -> list:
    """What an attacker who knows the format writes: events re-linked so the chain verifies."""
    out, prev = [], genesis(phone)
    for e in events:
        e = dict(e, prev=prev if isinstance(prev, str) else line_hash(prev))
        raw = json.dumps(e, ensure_ascii=False, separators=(",", ":")).encode()
        out.append(raw)
        prev = raw
    return out


def refused_to_write(data, phone):
    """An ordinary write on a tampered ledger: exit 3, ledger-tampered, the file untouched."""
    before = ledger(data, phone).read_bytes()
    code, doc, err, stderr = run(data, "earn", phone, "100", "--category", "mobile", "--at", T2, "--json")
    assert code == 3, stderr
    assert err["kind"] == "ledger-tampered"
    assert str(ledger(data, phone)) in err["message"]
    assert ledger(data, phone).read_bytes() == before


# ---------------------------------------------------------------- the chain cannot be stripped


def test_lines_rewritten_as_schema_1_are_tampering(story):
    path = ledger(story, A)
    rows = lines_of(path)
    edited = []
    for raw in rows:
        e = json.loads(raw)
        e.pop("prev")
        e["v"] = 1
        if e["type"] == "redeem":
            e["points"] = 1  # the point of stripping: an edit the chain would have caught
        edited.append(json.dumps(e, separators=(",", ":")).encode())
    write_lines(path, edited)
    # all unchained: the first line no longer binds the file to its phone... still only from a
    # legacy schema-1 file; a mix is what an edit leaves
    write_lines(path, rows[:1] + edited[1:])
    code, err = check(story)
    assert code == 3 and f"{path}:2: hash chain broken: an unchained line" in err
    refused_to_write(story, A)


def test_a_ledger_copied_under_another_phone_is_tampering(story):
    rich = ledger(story, A)
    shutil.copy(rich, ledger(story, "9162220009"))
    code, err = check(story)
    assert code == 3 and "9162220009.jsonl:1:" in err
    assert "does not follow its phone" in err or "does not belong" in err
    refused_to_write(story, "9162220009")


def test_a_ledger_symlinked_under_another_phone_is_refused(story):
    os.symlink(ledger(story, A), ledger(story, "9162220008"))
    code, doc, err, stderr = run(story, "balance", "9162220008", "--json", "--at", T2)
    assert code == 3 and err["kind"] == "unsafe-file"
    code, doc, err, stderr = run(story, "earn", "9162220008", "100", "--category", "mobile", "--at", T2, "--json")
    assert code == 3 and err["kind"] == "unsafe-file"


def test_a_forged_repair_cannot_hide_a_redemption(story):
    path = ledger(story, A)
    rows = lines_of(path)
    n = next(i for i, r in enumerate(rows, start=1) if b'"redeem"' in r)
    # a "repair" appended at the end, naming the redemption's line as if it were torn
    forged = {"v": 2, "id": f"{A}.r{n}", "type": "repair", "at": "2025-03-02T11:00:00+03:00", "line": n,
              "offset": sum(len(r) + 1 for r in rows[:n - 1]), "note": "x",
              "torn_prev": line_hash(rows[n - 2]), "prev": line_hash(rows[-1])}
    write_lines(path, rows + [json.dumps(forged, separators=(",", ":")).encode()])
    code, err = check(story)
    assert code == 3 and f"{path}:{len(rows) + 1}: a repair must name the line right before it" in err
    refused_to_write(story, A)


def test_an_edited_line_is_refused_for_writes(story):
    path = ledger(story, A)
    raw = path.read_bytes()
    path.write_bytes(raw.replace(b'"code":"minutes_30","name":"30 minutes to MTS numbers"',
                                 b'"code":"minutes_30","name":"30 minutes to MTS numbers!"'))
    code, err = check(story)
    assert code == 3 and "hash chain broken" in err
    refused_to_write(story, A)


def test_restoring_the_recipients_older_ledger_after_an_accepted_gift_is_seen(story, tmp_path):
    # B's ledger as it was before the gift was accepted
    path = ledger(story, B)
    rows = lines_of(path)
    keep = [r for r in rows if b'"gift_accept"' not in r]
    write_lines(path, keep)
    code, err = check(story)
    assert code == 3
    assert f"{ledger(story, A)}:" in err and "no such decision" in err


def test_truncation_looks_like_a_crash_without_the_anchor_and_is_caught_with_it(story, tmp_path):
    anchor = tmp_path / "anchor.json"
    code, doc, err, stderr = run(story, "check", "--ledgers", "--at", T2, "--save-anchor", anchor, "--json")
    assert code == 0 and doc["anchor"] == json.loads(anchor.read_text())["digest"]
    path = ledger(story, A)
    raw = path.read_bytes()
    path.write_bytes(raw[:-40])  # the last line cut short: exactly what a crash leaves
    code, err = check(story)
    assert code == 3 and "unfinished last line" in err  # reported, but it looks like a crash
    code, err = check(story, "--anchor", anchor)
    assert code == 3 and f"{path}:" in err and "truncated or restored" in err


def test_the_anchor_passes_appends_and_new_ledgers_and_catches_deletion_and_edits(story, tmp_path):
    anchor = tmp_path / "anchor.json"
    assert run(story, "check", "--ledgers", "--at", T2, "--save-anchor", anchor)[0] == 0
    ok(story, "earn", B, "100", "--category", "mobile", "--at", T2)
    ok(story, "join", "9162220004", "--region", "RU-MOW", "--at", T2)
    digest = json.loads(anchor.read_text())["digest"]
    assert check(story, "--anchor", anchor, "--anchor-digest", digest, at="2025-03-04") == (0, "")
    code, err = check(story, "--anchor", anchor, at="2025-03-04")  # passes, but says what it did not check
    assert code == 0 and err.startswith("warning: the anchor's own authenticity was not checked")
    # an older copy of a whole ledger, re-chained by someone who knows the format
    path = ledger(story, C)
    events = [json.loads(r) for r in lines_of(path)]
    write_lines(path, rechain(C, [dict(events[0], region="RU-SPE")]))
    assert check(story, at="2025-03-04")[0] == 0  # invisible to a local check: the documented limit
    code, err = check(story, "--anchor", anchor, at="2025-03-04")
    assert code == 3 and f"{path}:1: this line is not the one the anchor saw" in err
    path.unlink()
    code, err = check(story, "--anchor", anchor, at="2025-03-04")
    assert code == 3 and f"{path}:1: this ledger was deleted since the anchor" in err
    # an edited anchor is not an anchor
    doc = json.loads(anchor.read_text())
    doc["ledgers"][A]["lines"] = 1
    anchor.write_text(json.dumps(doc))
    code, err = check(story, "--anchor", anchor, at="2025-03-04")
    assert code == 3 and "digest does not match" in err


# ---------------------------------------------------------------- locks hold whatever is deleted


def test_deleting_locks_in_a_tight_loop_lets_no_second_writer_in(tmp_path):
    """12 concurrent redeems of 100 points out of 300, while another thread deletes locks/ (and the
    cache) as fast as it can: exactly 3 succeed, the rest are refused, ids stay unique."""
    data = tmp_path / "data"
    ok(data, "join", A, "--region", "RU-MOW", "--at", T0)
    ok(data, "adjust", A, "150", "--reason", "top up", "--at", T0)  # 150 welcome + 150 = 300
    stop = threading.Event()

    def vandal():
        while not stop.is_set():
            shutil.rmtree(data / "locks", ignore_errors=True)
            shutil.rmtree(data / "cache", ignore_errors=True)

    env = dict(os.environ, BONUSCLI_DATA_DIR=str(data), BONUSCLI_LOCK_TIMEOUT="60")
    env.pop("BONUSCLI_FAULT", None)

    def redeem(i):
        return subprocess.run([sys.executable, "-m", "bonuscli", "redeem", A, "black_list_kids", "--at", T1,
                               "--json"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)

    t = threading.Thread(target=vandal)
    t.start()
    try:
        with ThreadPoolExecutor(12) as pool:
            results = list(pool.map(redeem, range(12)))
    finally:
        stop.set()
        t.join()
    codes = sorted(r.returncode for r in results)
    assert codes.count(0) == 2 and codes.count(1) == 10, [(r.returncode, r.stderr) for r in results if r.returncode not in (0, 1)]
    # black_list_kids costs 130: 300 // 130 = 2 orders, never more
    doc = ok(data, "balance", A, "--at", T2)
    assert doc["available"] == 300 - 2 * 130
    ids = [json.loads(r)["id"] for r in lines_of(ledger(data, A))]
    assert len(ids) == len(set(ids))
    assert check(data) == (0, "")


# ---------------------------------------------------------------- files: no symlink, no writable dir


def test_join_through_a_dangling_symlink_writes_nothing_outside(tmp_path):
    data = tmp_path / "data"
    ok(data, "join", A, "--region", "RU-MOW", "--at", T0)
    outside = tmp_path / "outside.jsonl"
    os.symlink(outside, ledger(data, B))
    code, doc, err, stderr = run(data, "join", B, "--region", "RU-MOW", "--at", T0, "--json")
    assert code == 3 and err["kind"] == "unsafe-file"
    assert not outside.exists()


def test_a_lock_symlink_changes_no_outside_file(tmp_path):
    """No lock file is ever opened (a member's lock is an flock on its ledger; a new ledger's creation
    is atomic): links planted in a `locks/` an older release left are never followed, by a join or by
    a member who has a ledger."""
    data = tmp_path / "data"
    ok(data, "join", A, "--region", "RU-MOW", "--at", T0)
    assert not (data / "locks").exists()
    (data / "locks").mkdir(mode=0o700)
    outside = tmp_path / "precious"
    outside.write_text("x")
    os.chmod(outside, 0o644)
    for phone in (A, B):
        os.symlink(outside, data / "locks" / f"{phone}.lock")
    code, doc, err, stderr = run(data, "join", B, "--region", "RU-MOW", "--at", T1, "--json")
    assert code == 0, stderr
    code, doc, err, stderr = run(data, "earn", A, "100", "--category", "mobile", "--at", T1, "--json")
    assert code == 0 and doc["points"] == 20, stderr
    assert stat.S_IMODE(outside.stat().st_mode) == 0o644 and outside.read_text() == "x"


@pytest.mark.parametrize("where", ["", "ledgers", "locks", "cache"])
def test_a_directory_others_may_write_is_refused_with_the_chmod(tmp_path, where):
    data = tmp_path / "data"
    ok(data, "join", A, "--region", "RU-MOW", "--at", T0)
    (data / "cache").mkdir(exist_ok=True)
    (data / "locks").mkdir(exist_ok=True)  # as an older release left it
    target = data / where if where else data
    os.chmod(target, 0o777)
    for args in (("balance", A, "--at", T1), ("earn", A, "100", "--category", "mobile", "--at", T1)):
        code, doc, err, stderr = run(data, *args, "--json")
        assert code == 3 and err["kind"] == "unsafe-permissions", stderr
        assert f"chmod go-w {target}" in err["message"]
    os.chmod(target, 0o700)
    assert run(data, "balance", A, "--at", T1)[0] == 0


def test_a_symlinked_directory_inside_the_data_directory_is_refused(tmp_path):
    data = tmp_path / "data"
    ok(data, "join", A, "--region", "RU-MOW", "--at", T0)
    elsewhere = tmp_path / "elsewhere"
    shutil.move(str(data / "ledgers"), str(elsewhere))
    os.symlink(elsewhere, data / "ledgers")
    code, doc, err, stderr = run(data, "balance", A, "--at", T1, "--json")
    assert code == 3 and err["kind"] == "unsafe-file"


# ---------------------------------------------------------------- workers


def test_killing_a_batch_parent_ends_its_workers(tmp_path):
    """A parallel batch (enough rows for a process pool), its parent killed mid-way: no worker is left
    behind."""
    from bonuscli.batch import PARALLEL_ROWS

    data = tmp_path / "data"
    rows = ["phone,points,reason,ref,region,at"]
    for i in range(2 * PARALLEL_ROWS):
        rows.append(f"9{i:09d},10,opening,o{i},RU-MOW,2025-01-05")
    csv = tmp_path / "open.csv"
    csv.write_text("\n".join(rows) + "\n")
    env = dict(os.environ, BONUSCLI_DATA_DIR=str(data))
    env.pop("BONUSCLI_FAULT", None)
    proc = subprocess.Popen([sys.executable, "-m", "bonuscli", "adjust", "--from", str(csv), "--jobs", "2"],
                            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    children = []
    while time.monotonic() < deadline and not children:
        children = _children(proc.pid)
        time.sleep(0.02)
    assert children, "the batch started no worker"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(c) for c in children):
        time.sleep(0.1)
    assert not [c for c in children if _alive(c)], "workers outlived their parent"


def _children(pid) -> list:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    out.append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    return out


def _alive(pid) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_parallel_batch_killed_midway_then_run_again_equals_one_clean_run(tmp_path):
    """The parallel path (enough rows for a process pool, --jobs 2) killed at several moments: every
    line written is whole or sealed, and running the same file again (refs make it safe) gives
    exactly what one clean run gives."""
    from bonuscli.batch import PARALLEL_ROWS

    rows = ["phone,amount,category,ref,at"]
    for i in range(2 * PARALLEL_ROWS):
        rows.append(f"9{i % 300:09d},{100 + i}.00,mobile,k{i},2025-01-{6 + i % 20:02d}T12:00")
    csv = tmp_path / "earn.csv"
    csv.write_text("\n".join(rows) + "\n")
    opening = tmp_path / "open.csv"
    opening.write_text("phone,points,reason,ref,region,at\n" + "\n".join(
        f"9{i:09d},10,opening,o{i},RU-MOW,2025-01-05" for i in range(300)) + "\n")

    def env_for(data):
        env = dict(os.environ, BONUSCLI_DATA_DIR=str(data), BONUSCLI_NOW="2025-02-01")
        env.pop("BONUSCLI_FAULT", None)
        return env

    def batch(data, args, kill_after=None):
        proc = subprocess.Popen([sys.executable, "-m", "bonuscli", *args, "--jobs", "2"], env=env_for(data),
                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if kill_after is None:
            return proc.wait(timeout=120)
        time.sleep(kill_after)
        proc.kill()
        proc.wait()
        time.sleep(0.8)  # the workers notice and exit

    clean = tmp_path / "clean"
    assert batch(clean, ["adjust", "--from", str(opening)]) == 0
    assert batch(clean, ["earn", "--from", str(csv)]) == 0
    truth = {p.name: ok(clean, "balance", p.stem, "--at", "2025-02-01")["available"]
             for p in sorted((clean / "ledgers").glob("*.jsonl"))}
    for k, delay in enumerate((0.3, 0.5, 0.8)):
        data = tmp_path / f"killed{k}"
        assert batch(data, ["adjust", "--from", str(opening)]) == 0
        batch(data, ["earn", "--from", str(csv)], kill_after=delay)
        code = batch(data, ["earn", "--from", str(csv)])
        assert code == 0
        got = {p.name: ok(data, "balance", p.stem, "--at", "2025-02-01")["available"]
               for p in sorted((data / "ledgers").glob("*.jsonl"))}
        assert got == truth
        assert check(data, at="2025-02-01") == (0, "")


def test_stored_control_characters_are_escaped_when_shown(tmp_path):
    """Text stored by an older bonuscli (before the request layer refused control characters) never
    reaches the terminal raw: `history` and `explain` escape it."""
    data = tmp_path / "data"
    ok(data, "join", A, "--region", "RU-MOW", "--at", T0)
    path = ledger(data, A)
    events = [json.loads(r) for r in lines_of(path)]
    events.append({"v": 2, "id": f"{A}.2", "type": "adjust", "at": "2025-03-01T13:00:00+03:00", "points": 5,
                   "reason": "\x1b[2J\x1b[31mgotcha\rfake line", "ref": "r\x07"})
    write_lines(path, rechain(A, events))
    for args in (("history", A), ("explain", A, f"{A}.2")):
        code, doc, err, stderr = run(data, *args, "--at", T1)
        r = CliRunner().invoke(cli, ["--data-dir", str(data), *args, "--at", T1])
        assert r.exit_code == 0, r.stderr
        assert "\x1b" not in r.stdout and "\r" not in r.stdout and "\x07" not in r.stdout
        assert "\\x1b" in r.stdout


def test_a_writer_holding_a_ledger_keeps_it_when_locks_are_deleted(tmp_path):
    """Deterministic form of the race: one writer holds a member; `locks/` is deleted; a second
    writer must still wait (and here time out), because the ledger file itself is locked."""
    from bonuscli.ledger import FileStore

    data = tmp_path / "data"
    ok(data, "join", A, "--region", "RU-MOW", "--at", T0)
    store = FileStore(data, lock_timeout=5)
    env = dict(os.environ, BONUSCLI_DATA_DIR=str(data), BONUSCLI_LOCK_TIMEOUT="1")
    env.pop("BONUSCLI_FAULT", None)
    before = ledger(data, A).read_bytes()
    with store.locked([A]):
        shutil.rmtree(data / "locks", ignore_errors=True)  # (no longer made: an older release's)
        r = subprocess.run([sys.executable, "-m", "bonuscli", "earn", A, "100", "--category", "mobile", "--at", T1,
                            "--json"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert r.returncode == 3, r.stderr
    assert json.loads(r.stderr.strip().splitlines()[-1])["error"]["kind"] == "lock-timeout"
    assert ledger(data, A).read_bytes() == before


# ---------------------------------------------------------------- the fast chain check finds what the full one finds


@pytest.fixture(scope="module")
def chain_ledger(tmp_path_factory):
    data = tmp_path_factory.mktemp("chain") / "data"
    for p in (A, B):
        ok(data, "join", p, "--region", "RU-MOW", "--at", T0)
    for i in range(6):
        ok(data, "earn", A, str(100 + i), "--category", "mobile", "--ref", f"c{i}", "--at", T0)
    g = ok(data, "gift", A, B, "10", "--at", T1)
    ok(data, "accept", B, g["gift_id"], "--at", T1)
    return lines_of(ledger(data, A))


MUTATIONS = ("swap", "drop", "duplicate", "edit-points", "edit-prev", "edit-id", "schema-1", "legacy-first", "none")


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(what=st.lists(st.tuples(st.sampled_from(MUTATIONS), st.integers(0, 20)), min_size=1, max_size=3))
def test_the_chain_check_on_decoded_events_equals_the_line_by_line_one(chain_ledger, what):
    """`verify_chain` checks a clean ledger on the events it already decoded (`_chain_holds`); on any
    doubt it goes line by line. Both must find exactly the same problems, whatever was done to the file."""
    from bonuscli.ledger import parse, verify_chain

    rows = list(chain_ledger)
    for kind, k in what:
        i = k % len(rows)
        if kind == "swap" and len(rows) > 1:
            j = (i + 1) % len(rows)
            rows[i], rows[j] = rows[j], rows[i]
        elif kind == "drop" and len(rows) > 1:
            del rows[i]
        elif kind == "duplicate":
            rows.insert(i, rows[i])
        else:
            e = json.loads(rows[i])
            if kind == "edit-points" and "points" in e:
                e["points"] = e["points"] + 1
            elif kind == "edit-prev":
                e["prev"] = "0" * 32
            elif kind == "edit-id":
                e["id"] = f"{B}.{i + 1}"
            elif kind == "schema-1":
                e["v"] = 1
                e.pop("prev", None)
            elif kind == "legacy-first" and i == 0:
                e["prev"] = ""
            rows[i] = json.dumps(e, ensure_ascii=False, separators=(",", ":")).encode()
    data = b"".join(r + b"\n" for r in rows)
    path = Path("x") / f"{A}.jsonl"
    led = parse(path, data)
    assert verify_chain(path, data, A, events=led.events) == verify_chain(path, data, A)
    if what == [("none", what[0][1])]:
        assert verify_chain(path, data, A, events=led.events) == []


@pytest.mark.parametrize("offset", ["+03:00", "+00:00"])
def test_a_line_dated_before_the_one_above_it_is_named(story, offset):
    """Lines re-chained by someone who knows the format, but one moved back in time: `check` names it,
    whether its time is written at the program's offset (compared as text) or at another one."""
    path = ledger(story, A)
    events = [json.loads(r) for r in lines_of(path)]
    k = len(events) - 1
    earlier = dict(events[k], at=f"2025-02-01T09:00:00{offset}")
    write_lines(path, rechain(A, events[:k] + [earlier]))
    code, err = check(story)
    assert code == 3
    assert f"{A}.jsonl:{k + 1}: event {events[k]['id']} is dated before the one above it" in err
    write_lines(path, rechain(A, events))  # the same lines in order: nothing to say
    assert check(story) == (0, "")


def test_a_batch_holds_its_members_until_their_lines_are_durable(tmp_path):
    """ledger.Commit: a member written by a batch stays locked until the commit has made its lines
    durable (`sync`), so no other command reads, or builds on, a line that a crash could still lose."""
    from bonuscli.ledger import FileStore

    data = tmp_path / "data"
    ok(data, "join", A, "--region", "RU-MOW", "--at", T0)
    store = FileStore(data, lock_timeout=5)
    env = dict(os.environ, BONUSCLI_DATA_DIR=str(data), BONUSCLI_LOCK_TIMEOUT="1")
    env.pop("BONUSCLI_FAULT", None)
    earn = [sys.executable, "-m", "bonuscli", "earn", A, "100", "--category", "mobile", "--at", T1, "--json"]
    commit = store.commit()
    with store.locked([A], commit):
        led = store.read(A)
        store.append(A, [{"v": 2, "id": f"{A}.{len(led.events) + 1}", "type": "adjust", "at": led.events[-1]["at"],
                          "points": 5, "reason": "batch", "ref": "c1"}], led, commit=commit)
    r = subprocess.run(earn, capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)  # block ended, not synced
    assert r.returncode == 3, r.stderr
    assert json.loads(r.stderr.strip().splitlines()[-1])["error"]["kind"] == "lock-timeout"
    assert commit.sync() == {}
    r = subprocess.run(earn, capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert r.returncode == 0, r.stderr


# ---------------------------------------------------------------- an anchor's authority lies outside the data directory


def save_anchor(data, path, *extra, at=T2):
    code, doc, err, stderr = run(data, "check", "--ledgers", "--at", at, "--save-anchor", path, *extra, "--json")
    assert code == 0, stderr
    return doc["anchor"]


def test_an_anchor_rewritten_with_its_own_digest_recomputed_is_refused_by_the_digest_kept(story, tmp_path):
    """Issue 23, scenario 2: the anchor vouched for itself (its digest is over its own content), so an
    anchor edited to match a truncated ledger, its digest recomputed, passed. With the digest the
    operator kept (`--anchor-digest`) it is `anchor-forged`, exit 3."""
    import hashlib

    anchor = tmp_path / "anchor.json"
    kept = save_anchor(story, anchor)
    path = ledger(story, A)
    lines = path.read_bytes().split(b"\n")[:-1]
    path.write_bytes(b"\n".join(lines[:-1]) + b"\n")  # the last whole line removed
    doc = json.loads(anchor.read_text())
    doc["ledgers"][A] = {"lines": len(lines) - 1, "hash": line_hash(lines[-2])}
    doc["digest"] = hashlib.sha256(json.dumps(doc["ledgers"], sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    anchor.write_text(json.dumps(doc))
    code, err = check(story, "--anchor", anchor)
    assert code == 0, err  # the forgery holds against the anchor alone: the documented limit
    code, doc2, error, stderr = run(story, "check", "--ledgers", "--at", T2, "--anchor", anchor, "--anchor-digest", kept,
                                    "--json")
    assert code == 3 and error["kind"] == "anchor-forged", (code, error)
    assert str(anchor) in error["message"]


def test_anchors_form_a_chain_an_auditor_can_walk(story, tmp_path):
    first, second = tmp_path / "a1.json", tmp_path / "a2.json"
    d1 = save_anchor(story, first)
    ok(story, "earn", B, "100", "--category", "mobile", "--at", T2)
    d2 = save_anchor(story, second, "--anchor", first, "--anchor-digest", d1)
    doc = json.loads(second.read_text())
    assert doc["previous"] == d1 and doc["digest"] == d2 != d1
    # the chain is part of what the digest covers: a changed `previous` is a forged anchor
    doc["previous"] = "0" * 64
    second.write_text(json.dumps(doc))
    code, _doc, error, _stderr = run(story, "check", "--ledgers", "--at", T2, "--anchor", second, "--anchor-digest", d2,
                                     "--json")
    assert code == 3 and error["kind"] == "anchor-forged"


def test_anchor_options_need_their_anchor(story, tmp_path):
    for extra in (["--anchor-digest", "ab"], ["--allowed-signers", str(tmp_path / "s")]):
        code, _doc, error, _stderr = run(story, "check", "--ledgers", *extra, "--json")
        assert code == 2 and error["kind"] == "usage"
    code, _doc, error, _stderr = run(story, "check", "--ledgers", "--sign-key", str(tmp_path / "k"), "--json")
    assert code == 2 and error["kind"] == "usage"


def test_a_deeply_nested_anchor_is_an_unreadable_anchor_not_an_internal_error(story, tmp_path):
    anchor = tmp_path / "deep.json"
    anchor.write_text("[" * 100_000 + "]" * 100_000)
    code, _doc, error, _stderr = run(story, "check", "--ledgers", "--at", T2, "--anchor", anchor, "--json")
    assert code == 3 and error["kind"] == "anchor-invalid", error


needs_ssh_keygen = pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="OpenSSH's ssh-keygen is not installed")


@needs_ssh_keygen
def test_a_signed_anchor_end_to_end(story, tmp_path):
    """An anchor signed with a key made by ssh-keygen verifies against an allowed-signers file listing
    it; a changed anchor, a missing signature, or a key not listed is `anchor-signature`, exit 3."""
    key = tmp_path / "auditor"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "auditor", "-f", str(key)], check=True)
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "other", "-f", str(other)], check=True)
    signers = tmp_path / "allowed_signers"
    signers.write_text("auditor@example.org " + (tmp_path / "auditor.pub").read_text())
    anchor = tmp_path / "anchor.json"
    save_anchor(story, anchor, "--sign-key", key)
    assert (tmp_path / "anchor.json.sig").read_text().startswith("-----BEGIN SSH SIGNATURE-----")
    assert check(story, "--anchor", anchor, "--allowed-signers", signers) == (0, "")

    def refused():
        code, _doc, error, _stderr = run(story, "check", "--ledgers", "--at", T2, "--anchor", anchor,
                                         "--allowed-signers", signers, "--json")
        assert code == 3 and error["kind"] == "anchor-signature", (code, error)

    good = anchor.read_bytes()
    anchor.write_bytes(good.replace(b'"format"', b' "format"', 1))  # one byte more, the same content
    refused()
    anchor.write_bytes(good)
    (tmp_path / "anchor.json.sig").unlink()
    subprocess.run(["ssh-keygen", "-q", "-Y", "sign", "-f", str(other), "-n", "bonuscli-anchor", str(anchor)],
                   check=True, capture_output=True, input=b"")
    refused()  # signed, but by a key not listed
    (tmp_path / "anchor.json.sig").unlink()
    refused()  # no signature at all


# ---------------------------------------------------------------- a repair may only seal an append cut short


def test_a_forged_repair_naming_the_last_complete_line_is_tampering(story):
    """Issue 23, scenario 1: a well-formed `repair` appended after the last line, naming it (the line
    right before it, at its offset, with the hash of the line before that and a valid `prev`), hid a
    redemption from every reader, and check passed. A repair may seal only a line that is not a
    complete chained event."""
    ok(story, "earn", A, "2000", "--category", "mobile", "--ref", "for-a-reward", "--at", T2)
    ok(story, "redeem", A, "minutes_30", "--at", T2)
    path = ledger(story, A)
    rows = lines_of(path)
    n = len(rows)  # the redemption, the last line
    assert b'"redeem"' in rows[-1]
    forged = {"v": 2, "id": f"{A}.r{n}", "type": "repair", "at": "2025-03-03T11:00:00+03:00", "line": n,
              "offset": sum(len(r) + 1 for r in rows[:n - 1]), "note": "x",
              "torn_prev": line_hash(rows[n - 2]), "prev": line_hash(rows[-1])}
    write_lines(path, rows + [json.dumps(forged, separators=(",", ":")).encode()])
    code, err = check(story)
    assert code == 3 and f"{path}:{n + 1}: a repair names line {n}, a complete chained event" in err, err
    refused_to_write(story, A)


def test_a_whole_last_event_without_its_newline_is_completed_and_kept_not_sealed(story):
    """The last event complete, valid and chained, only its newline missing: readers ignore it with a
    warning (never acknowledged), and the next change appends the newline and keeps it: no repair,
    so removing one newline can never let the next write hide a line."""
    path = ledger(story, A)
    before = ok(story, "balance", A, "--at", T2)["available"]
    ok(story, "earn", A, "1000", "--category", "mobile", "--ref", "kept", "--at", T2)
    raw = path.read_bytes()
    path.write_bytes(raw[:-1])  # the newline of the last line, gone
    code, doc, err, stderr = run(story, "balance", A, "--at", T2, "--json")
    assert code == 0 and doc["available"] == before and "unfinished last line" in stderr
    after = ok(story, "earn", A, "100", "--category", "mobile", "--ref", "next", "--at", T2)
    events = [json.loads(r) for r in lines_of(path)]
    assert [e["type"] for e in events].count("repair") == 0
    assert [e.get("ref") for e in events[-2:]] == ["kept", "next"]
    assert after["balance"] == before + 200 + 20  # both earns count
    assert check(story)[0] == 0


def test_a_repair_naming_a_line_the_anchor_counted_is_tampering(story, tmp_path):
    """A repair naming a line an anchor counted as whole is tampering, whatever the line holds (the
    anchor check says so on its own, besides the chain's own verdict)."""
    anchor = tmp_path / "anchor.json"
    kept = save_anchor(story, anchor)
    path = ledger(story, B)
    rows = lines_of(path)
    n = len(rows)
    forged = {"v": 2, "id": f"{B}.r{n}", "type": "repair", "at": "2025-03-03T11:00:00+03:00", "line": n,
              "offset": sum(len(r) + 1 for r in rows[:n - 1]), "note": "x",
              "torn_prev": line_hash(rows[n - 2]) if n > 1 else "", "prev": line_hash(rows[-1])}
    write_lines(path, rows + [json.dumps(forged, separators=(",", ":")).encode()])  # hides the counted line n
    code, err = check(story, "--anchor", anchor, "--anchor-digest", kept)
    assert code == 3 and f"{path}:{n + 1}: a repair names line {n}, which the anchor counted" in err, err
