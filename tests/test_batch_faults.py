"""Issue 23, item 6: the parallel batch (`--from FILE --jobs 2`) under faults.

The batch decides member groups in forked worker processes, each member's rows under its lock, and
makes a chunk of members' appends durable together (`ledger.Commit`: the appends, one `syncfs`,
then the locks released and the rows counted). The fault hook (`BONUSCLI_FAULT=PHASE:N`) fires at
each of those write points in the workers too, counted across the processes of the command, and
kills the whole batch there (the process that ran it, the worker, and at once the other workers).
docs/reliability.md (*Durability*, *The parallel batch's write points*) lists the phases.

Each test runs a real `python` process whose batch module is told that a small file is worth a
process pool (`PARALLEL_ROWS = 1`; everything else as shipped), so a few members cover every write
point quickly; `test_a_large_batch_killed_mid_way_*` runs the real `python -m bonuscli` on a file
over the threshold. After each kill: `check --ledgers` exits 0 or reports only unfinished last lines
(CLI.md §3: ignored with a warning, sealed by the next change); every ledger still starts with all
it had before; re-running the same file completes it (refs make rows idempotent: none is doubled);
the balances are those of a run without a fault.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from click.testing import CliRunner

from bonuscli import batch as batch_mod
from bonuscli.cli import cli

ROOT = Path(__file__).resolve().parent.parent
PHASES = ("before-write", "before-fsync", "after-fsync")
AT = "2025-03-02T12:00+03:00"  # the batches' --at
LATER = "2025-04-20T12:00+03:00"  # balances and checks also well after it
# The batch routes members to 128 groups by phone % 128, each group decided in one worker, its
# members' appends made durable by one commit. A[0] and A[1] share a group (one commit of two
# members), A[2] and A[3] each have their own; so do NEW[0] and NEW[1] (two new ledgers in one commit).
A = ["9160000001", "9160000129", "9160000002", "9160000003"]
NEW = ["9160000011", "9160000139", "9160000012"]

FILES = {
    # kind -> (file, appends per phase, the (PHASE, N) killed at: None for every one). One append per
    # member (join: a new ledger, created whole by the commit), plus, for join, the row with a
    # referrer, run after the others by the batch's own process (the referrer's append, then the
    # invitee's new ledger). earn and join are killed at every write point; refund and adjust, whose
    # write points are earn's (appends to existing ledgers in a worker's commit), at a few.
    "earn": ("phone,amount,category,ref,at\n" + "".join(
        f"{p},{300 + 100 * i},mobile,k{i}a,2025-03-02T10:00\n{p},{100 + 5 * i},taxi,k{i}b,2025-03-02T11:00\n"
        for i, p in enumerate(A[:3])), 3, None),
    "join": ("phone,region,method,referrer,at\n" + "".join(
        f"{p},RU-MOW,{('sms', 'web')[i]},,2025-03-02T10:00\n" for i, p in enumerate(NEW[:2]))
        + f"{NEW[2]},RU-MOW,sms,{A[0]},2025-03-02T10:30\n", 2 + 2, None),
    "refund": ("phone,ref,amount,refund_ref,at\n" + "".join(
        f"{p},e{i},{250 + 50 * i},rf{i},2025-03-02T10:00\n" for i, p in enumerate(A[:3])),
        3, [("before-write", 2), ("after-fsync", 3)]),
    "adjust": ("phone,points,reason,ref,at\n" + "".join(
        f"{p},{(-20 if i % 2 else 30) + i},outage,j{i},2025-03-02T10:00\n" for i, p in enumerate(A)),
        4, [("before-fsync", 3)]),
}

# A python that runs bonuscli as `python -m bonuscli` does, with a small file taking the parallel
# path. BATCH_FAULTS_TRACE=FILE also records, per process, each fault point reached and each fsync /
# syncfs (what test_the_workers_fire_every_phase_and_sync_before_after_fsync reads);
# BATCH_FAULTS_KILL_WORKER=1 makes the first group a worker finishes its last (it is killed right
# after, its results never sent): a worker lost, as the OOM killer would do it.
WRAPPER = r'''
import os, runpy, sys
import bonuscli.batch
bonuscli.batch.PARALLEL_ROWS = 1
trace = os.environ.get("BATCH_FAULTS_TRACE")
if trace:
    from bonuscli import cli, ledger
    out = os.open(trace, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    def log(*words):
        os.write(out, (" ".join(map(str, (os.getpid(), *words))) + "\n").encode())
    log("main")
    real_fault, real_fsync, real_syncfs = cli.Env.fault, os.fsync, ledger._get_syncfs()
    def fault(self, phase, phone):
        log(phase, phone)
        return real_fault(self, phase, phone)
    def fsync(fd):
        try:
            name = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            name = "?"
        log("fsync", name)
        return real_fsync(fd)
    def syncfs(fd):
        log("syncfs")
        return real_syncfs(fd)
    cli.Env.fault, os.fsync = fault, fsync
    if real_syncfs is not None:
        ledger._SYNCFS = syncfs
if os.environ.get("BATCH_FAULTS_KILL_WORKER"):
    main, real_group = os.getpid(), bonuscli.batch._group
    def group(*args):
        result = real_group(*args)
        if os.getpid() != main:
            os.kill(os.getpid(), 9)
        return result
    bonuscli.batch._group = group
sys.argv = ["bonuscli", *sys.argv[1:]]
runpy.run_module("bonuscli", run_name="__main__", alter_sys=True)
'''


# ---------------------------------------------------------------- helpers


def cli_in(data: Path, *args):
    """bonuscli in-process on `data`: (exit code, JSON document or None, stderr)."""
    r = CliRunner().invoke(cli, ["--data-dir", str(data), *map(str, args)], catch_exceptions=False,
                           env={"BONUSCLI_FAULT": None, "BONUSCLI_FAULT_MODE": None})
    try:
        doc = json.loads(r.stdout) if r.stdout.strip() else None
    except ValueError:
        doc = None
    return r.exit_code, doc, r.stderr


def _group_alive(pgid: int) -> bool:
    """Whether a process of this process group (the batch and its workers) is still running."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False


def batch(wrapper: Path, data: Path, kind: str, source: Path, env=None, jobs="2"):
    """`bonuscli KIND --from SOURCE --jobs 2 --json` in its own process group, waited for until every
    process of it (its workers too) is gone: (returncode, summary or None, stderr)."""
    full = dict(os.environ, BONUSCLI_DATA_DIR=str(data), BONUSCLI_NOW=AT)
    for k in ("BONUSCLI_FAULT", "BONUSCLI_FAULT_MODE", "BATCH_FAULTS_TRACE", "BATCH_FAULTS_KILL_WORKER"):
        full.pop(k, None)
    full.update(env or {})
    args = [str(wrapper)] if wrapper is not None else ["-m", "bonuscli"]
    proc = subprocess.Popen([sys.executable, *args, kind, "--from", str(source), "--jobs", jobs, "--json"],
                            env=full, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    out, err = proc.communicate(timeout=120)
    deadline = time.monotonic() + 10
    while _group_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not _group_alive(proc.pid), "a worker outlived its batch"
    try:
        doc = json.loads(out) if out.strip() else None
    except ValueError:
        doc = None
    return proc.returncode, doc, err


def rerun(monkeypatch, data: Path, kind: str, source: Path):
    """The same batch run again, in-process (cheaper than a process), still on the parallel path."""
    monkeypatch.setattr(batch_mod, "PARALLEL_ROWS", 1)
    return cli_in(data, kind, "--from", source, "--jobs", "2", "--at", AT, "--json")


def ledgers(data: Path) -> dict:
    d = data / "ledgers"
    return {f.stem: f.read_bytes() for f in sorted(d.glob("*.jsonl"))} if d.is_dir() else {}


def state(data: Path) -> dict:
    """Each member's balance now and later, and the rows each ledger holds (events with a ref, by type
    and ref; joins): what a run without a fault must equal. Orphan records a crash may leave (a
    referral whose invitee's join was never written, a repair) are not rows and count for nothing."""
    out = {}
    for phone, raw in ledgers(data).items():
        events = [json.loads(line) for line in raw.split(b"\n") if line.endswith(b"}")]
        rows = collections.Counter((e["type"], e.get("ref")) for e in events
                                   if e.get("ref") is not None or e["type"] == "join")
        balances = [cli_in(data, "balance", phone, "--at", at, "--json")[1] for at in (AT, LATER)]
        out[phone] = (balances, rows)
    return out


def check(data: Path, at=AT) -> list:
    """`check --ledgers` problems: [] when it exits 0. Only unfinished last lines are allowed (an
    append cut short is never acknowledged; CLI.md §3), and only while nothing sealed them."""
    code, doc, err = cli_in(data, "check", "--ledgers", "--at", at, "--json")
    if code == 0:
        return []
    assert code == 3 and doc is not None, (code, err)
    return [p["text"] for p in doc["problems"]]


def assert_sound_after_a_crash(data: Path, before: dict, case) -> None:
    problems = check(data)
    assert all("unfinished last line" in p for p in problems), (case, problems)
    after = ledgers(data)
    for phone, raw in before.items():  # nothing acknowledged before is lost, nothing rewritten
        assert after[phone].startswith(raw), (case, phone)


def fresh(template: Path, tmp_path: Path, name: str) -> Path:
    d = tmp_path / name
    shutil.copytree(template, d)
    return d


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A data directory where A[0..3] joined (2025-03-01) and earned with refs e0..e3 (what the refund
    rows take back), the batch files, the wrapper."""
    root = tmp_path_factory.mktemp("batch-faults")
    data = root / "template"
    for i, p in enumerate(A):
        assert cli_in(data, "join", p, "--region", "RU-MOW", "--at", "2025-03-01T10:00")[0] == 0
        assert cli_in(data, "earn", p, f"{1000 + 100 * i}", "--category", "mobile", "--ref", f"e{i}",
                      "--at", "2025-03-01T11:00")[0] == 0
    files = {}
    for kind, (text, _n, _at) in FILES.items():
        files[kind] = root / f"{kind}.csv"
        files[kind].write_text(text)
    wrapper = root / "run_bonuscli.py"
    wrapper.write_text(WRAPPER)
    return data, files, wrapper


@pytest.fixture(scope="module")
def clean(setup, tmp_path_factory):
    """kind -> the state after the batch ran once without a fault (run once per module)."""
    template, files, wrapper = setup
    states: dict = {}

    def of(kind):
        if kind not in states:
            data = fresh(template, tmp_path_factory.mktemp("clean"), kind)
            code, doc, err = batch(wrapper, data, kind, files[kind])
            assert code == 0, err
            assert doc["applied"] == doc["rows"] == FILES[kind][0].count("\n") - 1, doc
            assert check(data) == [] and check(data, LATER) == []
            states[kind] = state(data)
        return states[kind]

    return of


# ---------------------------------------------------------------- killed at every write point


@pytest.mark.parametrize("kind", list(FILES))
def test_a_parallel_batch_killed_at_every_write_point_then_run_again_equals_a_clean_run(setup, clean, tmp_path,
                                                                                       monkeypatch, kind):
    template, files, wrapper = setup
    _text, appends, only = FILES[kind]
    before = ledgers(template)
    want = clean(kind)
    # for each phase, N = 1..appends kills the batch there; N = appends + 1 is never reached (no write
    # point was missed, and the hook does not get in the way of a run it does not stop)
    cases = only or [(phase, n) for phase in PHASES for n in range(1, appends + 2)]
    dirs = {c: fresh(template, tmp_path, f"{c[0]}-{c[1]}") for c in cases}

    def crash(case):
        return batch(wrapper, dirs[case], kind, files[kind], env={"BONUSCLI_FAULT": f"{case[0]}:{case[1]}"})

    with ThreadPoolExecutor(2) as pool:
        crashed = dict(zip(cases, pool.map(crash, cases)))
    for case in cases:
        data = dirs[case]
        code, doc, err = crashed[case]
        assert "Traceback" not in err, (case, err)
        if case[1] > appends:
            assert code == 0 and doc["applied"] == FILES[kind][0].count("\n") - 1, (case, code, err)
            assert state(data) == want, case
            continue
        assert code == -9, (case, code, err)  # killed at that write point: nothing acknowledged
        assert_sound_after_a_crash(data, before, case)

    for case in cases:
        if case[1] > appends:
            continue
        data = dirs[case]
        # the same file again: what was written is a duplicate, the rest is applied, nothing twice
        code, doc, err = rerun(monkeypatch, data, kind, files[kind])
        assert code == 0, (case, code, err)
        assert doc["applied"] + doc["duplicates"] == doc["rows"], (case, doc)
        assert check(data) == [], case  # a torn line, if any, is sealed
        assert state(data) == want, case


def test_a_large_batch_killed_mid_way_by_the_hook_then_run_again_equals_a_clean_run(setup, tmp_path):
    """The shipped path, no patching: `python -m bonuscli adjust --from FILE --jobs 2` on a file at the
    parallel threshold (new members, each created by its first row), killed by the hook half-way
    through the commits' syncs; run again, every ledger holds exactly the file's rows."""
    from bonuscli.batch import PARALLEL_ROWS

    template, _files, _wrapper = setup
    per = 16
    # 8 groups of ~16 members: each group's members made durable by one commit, killed inside one
    members = [str(9170000000 + i % 8 + 128 * (i // 8)) for i in range(-(-PARALLEL_ROWS // per))]
    rows = {p: [(f"b{i}-{k}", 1 + (i + k) % 9) for k in range(per)] for i, p in enumerate(members)}
    source = tmp_path / "large.csv"
    source.write_text("phone,points,reason,ref,region,at\n" + "".join(
        f"{p},{points},bulk,{ref},RU-MOW,2025-03-02T10:{k:02d}\n"
        for p, mine in rows.items() for k, (ref, points) in enumerate(mine)))
    data = fresh(template, tmp_path, "killed")
    before = ledgers(data)
    code, doc, err = batch(None, data, "adjust", source, env={"BONUSCLI_FAULT": f"before-fsync:{len(members) // 2}"})
    assert code == -9 and "Traceback" not in err, (code, err)
    assert_sound_after_a_crash(data, before, "large")
    written = len(ledgers(data)) - len(before)
    assert 0 < written < len(members), written  # killed half-way: some of the new ledgers, not all
    code, doc, err = batch(None, data, "adjust", source)
    assert code == 0 and doc["applied"] + doc["duplicates"] == doc["rows"] == per * len(members), (code, err)
    assert check(data) == []
    held = ledgers_rows(data)
    for p, mine in rows.items():
        assert held[p] == sorted([("join", None, None)] + [("adjust", ref, points) for ref, points in mine],
                                 key=repr), p


def ledgers_rows(data: Path) -> dict:
    """The points and refs each ledger holds (a cheap state for many members)."""
    out = {}
    for phone, raw in ledgers(data).items():
        events = [json.loads(line) for line in raw.split(b"\n") if line.endswith(b"}")]
        out[phone] = sorted(((e["type"], e.get("ref"), e.get("points")) for e in events if e["type"] != "repair"),
                            key=repr)
    return out


# ---------------------------------------------------------------- the hook's phases, seen from inside


def test_the_workers_fire_every_phase_and_sync_before_after_fsync(setup, tmp_path):
    """Traced (a fault spec that never fires): the write points of the parallel batch are reached in
    the worker processes, for every member of the file, and in each worker a member's `after-fsync`
    comes after its append's `before-write`, its `before-fsync` and then a sync (the commit's syncfs,
    or an fsync of its ledger) — the point where the batch may count its rows."""
    template, files, wrapper = setup
    data = fresh(template, tmp_path, "traced")
    trace = tmp_path / "trace.log"
    code, doc, err = batch(wrapper, data, "earn", files["earn"],
                           env={"BONUSCLI_FAULT": "never:1", "BATCH_FAULTS_TRACE": str(trace)})
    assert code == 0 and doc["applied"] == 6, err
    by_pid: dict = collections.defaultdict(list)
    main = None
    for line in trace.read_text().splitlines():
        pid, what, *arg = line.split()
        if what == "main":
            main = pid
        else:
            by_pid[pid].append((what, arg[0] if arg else None))
    workers = {pid: seq for pid, seq in by_pid.items() if pid != main}
    assert workers and not by_pid.get(main), "the write points must be reached in the worker processes"
    written = {phone for seq in workers.values() for what, phone in seq if what == "before-write"}
    assert written == set(A[:3])
    for pid, seq in workers.items():
        for i, (what, phone) in enumerate(seq):
            if what != "after-fsync":
                continue
            w = max(j for j in range(i) if seq[j] == ("before-write", phone))
            between = seq[w + 1:i]
            assert ("before-fsync", phone) in between, (phone, seq)
            f = between.index(("before-fsync", phone))
            assert any(s == ("syncfs", None) or s == ("fsync", f"{phone}.jsonl") for s in between[f + 1:]), \
                (f"{phone}: rows counted before its append was made durable", seq)


# ---------------------------------------------------------------- a disk error; a worker lost


@pytest.mark.parametrize("fault", ["before-write:2", "before-fsync:3", "after-fsync:1"])
def test_a_disk_error_in_a_worker_summary_matches_the_ledgers(setup, clean, tmp_path, monkeypatch, fault):
    """A disk error at a worker's write point (BONUSCLI_FAULT_MODE=oserror): the summary is printed and
    every row it counts as applied is in its ledger exactly once; a row it reports with code 3 is in
    none (its member's append was taken back). At after-fsync the rows are durable already: counted
    applied. The same file run again applies exactly the rest."""
    template, files, wrapper = setup
    want = clean("earn")
    data = fresh(template, tmp_path, "disk")
    code, doc, err = batch(wrapper, data, "earn", files["earn"],
                           env={"BONUSCLI_FAULT": fault, "BONUSCLI_FAULT_MODE": "oserror"})
    assert doc is not None and "Traceback" not in err, (code, err)
    failed = {p["ref"] for p in doc["problems"]}
    if fault.startswith("after-fsync"):
        assert code == 0 and not failed, doc
    else:  # one member's two rows
        assert code == 3 and {p["code"] for p in doc["problems"]} == {3} and len(failed) == 2, doc
    held = collections.Counter(ref for raw in ledgers(data).values() for line in raw.split(b"\n")
                               if line.endswith(b"}") for ref in [json.loads(line).get("ref")] if ref)
    refs = [line.split(",")[3] for line in FILES["earn"][0].splitlines()[1:]]
    assert doc["applied"] == len(refs) - len(failed)
    for ref in refs:
        assert held[ref] == (0 if ref in failed else 1), (ref, doc)
    assert check(data) == []
    code, again, err = rerun(monkeypatch, data, "earn", files["earn"])
    assert code == 0 and (again["applied"], again["duplicates"]) == (len(failed), doc["applied"]), again
    assert state(data) == want


def test_a_worker_lost_stops_the_batch_with_exit_3_and_a_rerun_completes_it(setup, clean, tmp_path,
                                                                            monkeypatch):
    """A worker killed on its own (the out-of-memory killer) after its first group is durable: the
    batch cannot know what that worker wrote, so it reports no summary, one error (exit 3, kind
    `worker-lost`, never a traceback); the same file run again completes it, nothing doubled."""
    template, files, wrapper = setup
    want = clean("earn")
    data = fresh(template, tmp_path, "lost")
    code, doc, err = batch(wrapper, data, "earn", files["earn"], env={"BATCH_FAULTS_KILL_WORKER": "1"})
    assert code == 3 and doc is None and "Traceback" not in err, (code, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and json.loads(lines[0])["error"]["kind"] == "worker-lost", err
    assert check(data) == []
    code, again, err = rerun(monkeypatch, data, "earn", files["earn"])
    assert code == 0 and again["duplicates"] >= 1, (code, err)
    assert state(data) == want
