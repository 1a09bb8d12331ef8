"""Reliability: crash at every write, tamper evidence, disk trouble, concurrency (issue 11).

docs/reliability.md says which guarantee each test here proves.

Numbers are derived by hand from RULES.md (rub_per_point 5 for mobile/taxi, 3 for
mts_store, tenure coefficient 1.0 for a new customer, 150 welcome, 50 referral,
minutes_30 costs 210 in RU-MOW, sms_50 costs 180 in RU-MOW).
"""

from __future__ import annotations

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

from bonuscli.cli import cli

ROOT = Path(__file__).resolve().parent.parent
REGION = "RU-MOW"
A, B, C, D = "9161110001", "9161110002", "9161110003", "9161110004"
MEMBERS = (A, B, C, D)
T0 = "2025-03-01T12:00+03:00"  # the fixture
T1 = "2025-03-02T10:00+03:00"  # the command under test
T2 = "2025-04-15T10:00+03:00"  # after the fixture gift's deadline (2025-03-31T12:00)
PHASES = ("before-write", "before-fsync", "after-fsync")


# ---------------------------------------------------------------- helpers


def cli_in(data: Path, *args, input=None):
    """bonuscli in-process on `data`; returns (exit code, parsed JSON or None, stderr)."""
    env = {"BONUSCLI_FAULT": None, "BONUSCLI_FAULT_MODE": None}
    r = CliRunner().invoke(cli, ["--data-dir", str(data), *map(str, args)], input=input, env=env,
                           catch_exceptions=False)
    doc = None
    if r.stdout.strip():
        try:
            doc = json.loads(r.stdout)
        except ValueError:
            pass
    return r.exit_code, doc, r.stderr


def ok(data, *args, input=None):
    code, doc, err = cli_in(data, *args, "--json", input=input)
    assert code == 0, (args, code, err)
    return doc


def cli_sub(data: Path, *args, env=None, input=None, timeout=60):
    full = dict(os.environ, BONUSCLI_DATA_DIR=str(data))
    full.pop("BONUSCLI_FAULT", None)
    full.pop("BONUSCLI_FAULT_MODE", None)
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "bonuscli", *map(str, args)], capture_output=True, text=True,
                          env=full, cwd=ROOT, input=input, timeout=timeout)


def lines(data: Path) -> dict:
    d = data / "ledgers"
    if not d.is_dir():
        return {}
    return {f.name: f.read_bytes().count(b"\n") for f in sorted(d.iterdir())}


def member_state(data: Path, at: str) -> dict:
    """Every member's balance as of `at`, without gift ids (a re-run gift gets a new id)."""
    out = {}
    for p in MEMBERS:
        code, doc, err = cli_in(data, "balance", p, "--json", "--at", at)
        if code != 0:
            assert code == 1 and "not a member" in err, (p, code, err)
            out[p] = "not a member"
            continue
        out[p] = {
            "status": doc["status"], "available": doc["available"], "held_out": doc["held_out"],
            "debt": doc["debt"], "next_expiry": doc["next_expiry"],
            "pending_in": sorted((g["from"], g["points"]) for g in doc["pending_in"]),
            "active_rewards": sorted((r["code"], r["active_until"]) for r in doc["active_rewards"]),
        }
    return out


def state(data: Path) -> tuple:
    return member_state(data, T1), member_state(data, T2)


def available(st, phone):
    s = st[0][phone]
    return s if isinstance(s, str) else s["available"]


def check_ledgers(data: Path, at=T1):
    code, _doc, err = cli_in(data, "check", "--ledgers", "--at", at)
    return code, err


# ---------------------------------------------------------------- the fixture data dir


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A, B, C members of RU-MOW; A has earned with ref e1; B offered A a gift of 40 (pending).

    A: 150 + floor(1000/5)=200 -> 350, pending_in 40 from B
    B: 150 + floor(500/5)=100 -> 250, gift 40 -> available 210, held 40
    C: 150
    """
    data = tmp_path_factory.mktemp("template") / "data"
    for p in (A, B, C):
        ok(data, "join", p, "--region", REGION, "--at", T0)
    ok(data, "earn", A, "1000", "--category", "mobile", "--ref", "e1", "--at", T0)
    ok(data, "earn", B, "500", "--category", "mobile", "--ref", "e2", "--at", T0)
    gift = ok(data, "gift", B, A, "40", "--at", T0)
    return data, gift["gift_id"]


def test_fixture_numbers(template):
    data, _gid = template
    st = state(data)
    assert [available(st, p) for p in (A, B, C)] == [350, 210, 150]
    assert st[0][A]["pending_in"] == [(B, 40)] and st[0][B]["held_out"] == 40
    assert st[0][D] == "not a member"
    # the gift was never accepted: from its deadline (2025-03-31) the 40 points are B's again
    assert st[1][B]["available"] == 250 and st[1][B]["held_out"] == 0 and st[1][A]["pending_in"] == []
    assert check_ledgers(data) == (0, "")


# ---------------------------------------------------------------- 1. crash at every write


# name -> (args at T1, idempotent re-run?, expected available of (A, B, C, D) at T1 after one clean run)
SCENARIOS = {
    "join-referral": (["join", D, "--region", REGION, "--referrer", A], True, (400, 210, 150, 150)),
    "earn": (["earn", A, "500", "--category", "mobile", "--ref", "k1"], True, (450, 210, 150, None)),
    "earn-batch": (["earn", "--from", "{batch}"], True, (410, 250, 183, None)),
    "redeem": (["redeem", A, "minutes_30"], False, (140, 210, 150, None)),
    "gift": (["gift", A, C, "60"], False, (290, 210, 150, None)),
    "accept": (["accept", A, "{gid}"], True, (390, 210, 150, None)),
    "reject": (["accept", A, "{gid}", "--reject"], True, (350, 250, 150, None)),
    "leave": (["leave", A, "--yes"], False, (0, 250, 150, None)),
    "refund": (["refund", A, "e1", "--amount", "250", "--ref", "rf1"], True, (300, 210, 150, None)),
    "adjust": (["adjust", A, "77", "--reason", "goodwill", "--ref", "adj1"], True, (427, 210, 150, None)),
    "adjust-batch": (["adjust", "--from", "{adjust}"], True, (360, 190, 150, None)),
}

BATCH = "phone,amount,category,ref\n%s,300,mobile,b1\n%s,200,taxi,b2\n%s,100,mts_store,b3\n" % (A, B, C)
ADJUST = "phone,points,reason,ref\n%s,10,outage,j1\n%s,-20,double credit,j2\n" % (A, B)


def scenario_args(name, gid, files: Path):
    (files / "batch.csv").write_text(BATCH)
    (files / "adjust.csv").write_text(ADJUST)
    args = SCENARIOS[name][0]
    return [a.format(gid=gid, batch=files / "batch.csv", adjust=files / "adjust.csv") for a in args] + ["--at", T1]


def fresh(template, tmp_path, name) -> Path:
    d = tmp_path / name / "data"
    shutil.copytree(template[0], d)
    return d


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_crash_at_every_write(template, tmp_path, name):
    _args, idempotent, expected = SCENARIOS[name]
    args = scenario_args(name, template[1], tmp_path)
    before = state(template[0])

    # the run without faults: its outcome, and how many appends (one per ledger that grew)
    clean = fresh(template, tmp_path, "clean")
    n0 = lines(clean)
    code, _doc, err = cli_in(clean, *args)
    assert code == 0, err
    grown = [f for f, n in lines(clean).items() if n > n0.get(f, 0)]
    appends = len(grown)
    assert appends >= 1
    after = state(clean)
    assert tuple(None if isinstance(s, str) else s["available"] for s in after[0].values()) == expected
    assert check_ledgers(clean) == (0, "")

    # no write point was missed: a fault at append number appends+1 never fires
    probe = fresh(template, tmp_path, "probe")
    r = cli_sub(probe, *args, env={"BONUSCLI_FAULT": f"before-write:{appends + 1}"})
    assert r.returncode == 0, (r.returncode, r.stderr)
    assert state(probe) == after

    cases = [(phase, n) for phase in PHASES for n in range(1, appends + 1)]
    dirs = {c: fresh(template, tmp_path, f"{c[0]}-{c[1]}") for c in cases}
    with ThreadPoolExecutor(4) as pool:
        killed = dict(zip(cases, pool.map(lambda c: cli_sub(dirs[c], *args, env={"BONUSCLI_FAULT": f"{c[0]}:{c[1]}"}),
                                          cases)))
    for case in cases:
        data = dirs[case]
        r = killed[case]
        assert r.returncode == -9, (case, r.returncode, r.stderr)
        assert "Traceback" not in r.stderr
        # right after the crash: every ledger readable and every invariant holds
        code, err = check_ledgers(data)
        assert code == 0, (case, err)
        crashed = state(data)
        if idempotent:
            code, doc, err = cli_in(data, *args)
            # a re-run applies what is missing, or is a duplicate (0), or finds the work done (1)
            assert code in (0, 1), (case, code, err)
        else:
            # not idempotent: the crash left it applied once or not at all, nothing in between
            assert crashed in (before, after), (case, crashed)
            if crashed == before:
                code, doc, err = cli_in(data, *args)
                assert code == 0, (case, err)
        assert state(data) == after, case
        code, err = check_ledgers(data)
        assert code == 0, (case, err)
        code, err = check_ledgers(data, T2)
        assert code == 0, (case, err)


def test_crash_between_gift_lines_is_an_offer_never_made(template, tmp_path):
    """Killed after the sender's gift_out, before the recipient's gift_in: the points are still A's, the
    offer does not count toward the one-gift-a-day limit, so the user can simply send it again."""
    data = fresh(template, tmp_path, "g")
    args = scenario_args("gift", template[1], tmp_path)
    r = cli_sub(data, *args, env={"BONUSCLI_FAULT": "after-fsync:1"})
    assert r.returncode == -9
    led = (data / "ledgers" / f"{A}.jsonl").read_text().splitlines()
    assert json.loads(led[-1])["type"] == "gift_out"
    st = state(data)
    assert st[0][A]["available"] == 350 and st[0][A]["held_out"] == 0 and st[0][C]["pending_in"] == []
    doc = ok(data, *args)
    assert doc["points"] == 60 and doc["balance"] == 290
    types = [json.loads(l)["type"] for l in (data / "ledgers" / f"{A}.jsonl").read_text().splitlines()]
    assert types[-2:] == ["gift_settle", "gift_out"]  # the dead offer is sealed as cancelled, then the new one


# ---------------------------------------------------------------- 2. tamper evidence


def tamper_ledger(tmp_path) -> tuple:
    """A ledger of 5 lines, all at T0: join, earn e1, earn e2, adjust, earn e3."""
    data = tmp_path / "data"
    ok(data, "join", A, "--region", REGION, "--at", T0)
    ok(data, "earn", A, "100", "--category", "mobile", "--ref", "e1", "--at", T0)
    ok(data, "earn", A, "200", "--category", "mobile", "--ref", "e2", "--at", T0)
    ok(data, "adjust", A, "5", "--reason", "goodwill", "--ref", "j1", "--at", T0)
    ok(data, "earn", A, "300", "--category", "mobile", "--ref", "e3", "--at", T0)
    path = data / "ledgers" / f"{A}.jsonl"
    assert path.read_bytes().count(b"\n") == 5
    assert check_ledgers(data) == (0, "")
    return data, path


def chain_lines(err: str, path: Path) -> set:
    out = set()
    for line in err.splitlines():
        if line.startswith(f"{path}:") and "hash chain" in line:
            out.add(int(line[len(str(path)) + 1:].split(":")[0]))
    return out


def test_edited_middle_line_is_reported(tmp_path):
    data, path = tamper_ledger(tmp_path)
    rows = path.read_bytes().split(b"\n")
    assert b'"reason":"goodwill"' in rows[3]
    rows[3] = rows[3].replace(b'"reason":"goodwill"', b'"reason":"goodwilL"')  # line 4, still valid JSON
    path.write_bytes(b"\n".join(rows))
    code, err = check_ledgers(data)
    assert code == 3
    assert chain_lines(err, path) == {5}  # line 5 no longer follows line 4 as written
    assert "line 4" in err
    assert err.splitlines()[-1].startswith("error: ")


def test_edited_points_are_reported(tmp_path):
    data, path = tamper_ledger(tmp_path)
    rows = path.read_bytes().split(b"\n")
    rows[1] = rows[1].replace(b'"points":20,', b'"points":2000,')  # earn e1: 100 RUB -> 20 points
    path.write_bytes(b"\n".join(rows))
    code, err = check_ledgers(data)
    assert code == 3 and chain_lines(err, path) == {3}


def test_deleted_line_is_reported(tmp_path):
    data, path = tamper_ledger(tmp_path)
    rows = path.read_bytes().split(b"\n")
    del rows[2]  # line 3 (earn e2)
    path.write_bytes(b"\n".join(rows))
    code, err = check_ledgers(data)
    assert code == 3
    assert chain_lines(err, path) == {3}  # the old line 4, now line 3, does not follow line 2


def test_swapped_lines_are_reported(tmp_path):
    data, path = tamper_ledger(tmp_path)
    rows = path.read_bytes().split(b"\n")
    rows[1], rows[2] = rows[2], rows[1]  # lines 2 and 3
    path.write_bytes(b"\n".join(rows))
    code, err = check_ledgers(data)
    assert code == 3
    assert chain_lines(err, path) == {2, 3, 4}


def test_deleted_first_line_is_reported(tmp_path):
    data, path = tamper_ledger(tmp_path)
    rows = path.read_bytes().split(b"\n")
    del rows[0]
    path.write_bytes(b"\n".join(rows))
    code, err = check_ledgers(data)
    assert code == 3 and 1 in chain_lines(err, path)


def test_edit_of_the_last_line_is_not_detected(tmp_path):
    """The documented limit: nothing links to the last line yet, and the next append links to it as it is."""
    data, path = tamper_ledger(tmp_path)
    ok(data, "adjust", A, "1", "--reason", "last", "--ref", "j2", "--at", T0)
    raw = path.read_bytes()
    path.write_bytes(raw.replace(b'"reason":"last"', b'"reason":"LAST"'))
    assert check_ledgers(data) == (0, "")
    ok(data, "earn", A, "5", "--category", "mobile", "--ref", "e9", "--at", T0)
    assert check_ledgers(data) == (0, "")


def test_dropping_whole_last_lines_is_not_detected(tmp_path):
    """The other documented limit: the chain has no anchor outside the file, so cutting whole lines off the
    end leaves a shorter chain that is still whole (a backup, or the other member's ledger, is the defence)."""
    data, path = tamper_ledger(tmp_path)
    rows = path.read_bytes().split(b"\n")
    path.write_bytes(b"\n".join(rows[:3]) + b"\n")  # keep lines 1-3
    assert check_ledgers(data) == (0, "")
    assert ok(data, "balance", A, "--at", T0)["available"] == 150 + 20 + 40


def test_torn_final_line_is_not_tampering(tmp_path):
    data, path = tamper_ledger(tmp_path)
    with open(path, "ab") as f:
        f.write(b'{"v":2,"id":"9161110001.6","type":"ea')
    code, err = check_ledgers(data)
    assert "hash chain" not in err
    assert f"{path}:6: unfinished last line" in err
    # reading still works (with a warning), the points are those of the 5 whole lines:
    # 150 + 20 + 40 + 5 + 60 = 275
    code, doc, err = cli_in(data, "balance", A, "--json", "--at", T0)
    assert code == 0 and doc["available"] == 275 and "warning:" in err
    # the next change seals it (newline + repair naming line 6), and the chain is whole again
    doc = ok(data, "earn", A, "500", "--category", "mobile", "--ref", "e4", "--at", T0)
    assert doc["balance"] == 375
    rows = path.read_bytes().split(b"\n")
    assert json.loads(rows[6])["type"] == "repair" and json.loads(rows[6])["line"] == 6
    assert check_ledgers(data) == (0, "")


def test_tampering_after_a_repair_is_reported(tmp_path):
    """The repair records the hash of the line before the torn one: editing that line is caught too."""
    data, path = tamper_ledger(tmp_path)
    with open(path, "ab") as f:
        f.write(b'{"v":2,"id":"9161110001.6"')
    ok(data, "earn", A, "500", "--category", "mobile", "--ref", "e4", "--at", T0)
    assert check_ledgers(data) == (0, "")
    rows = path.read_bytes().split(b"\n")
    rows[4] = rows[4].replace(b'"ref":"e3"', b'"ref":"e7"')  # line 5, just before the torn line 6
    path.write_bytes(b"\n".join(rows))
    code, err = check_ledgers(data)
    assert code == 3 and chain_lines(err, path)


def schema1(phone, n, type_, **rest):
    return {"v": 1, "id": f"{phone}.{n}", "type": type_, "at": "2025-03-01T12:00:00+03:00", **rest}


def write_schema1(path: Path):
    events = [
        schema1(A, 1, "join", region=REGION, method="sms", services=["mobile"], customer_since="2025-03-01",
                active_from="2025-03-01T12:00:00+03:00", welcome=[{"reason": "welcome", "points": 150}]),
        schema1(A, 2, "earn", amount="1000.00", category="mobile", points=200, coefficient="1.0", rub_per_point=5,
                bonuses=[], expires_on="2026-03-01", ref="e1"),
        schema1(A, 3, "earn", amount="100.00", category="mts_store", points=33, coefficient="1.0", rub_per_point=3,
                bonuses=[], expires_on="2026-03-01", ref="e2"),
    ]
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.write_text("".join(json.dumps(e, separators=(",", ":")) + "\n" for e in events))


def test_schema_1_ledger_still_reads(tmp_path):
    data = tmp_path / "data"
    path = data / "ledgers" / f"{A}.jsonl"
    write_schema1(path)
    doc = ok(data, "balance", A, "--at", T1)
    assert doc["available"] == 150 + 200 + 33
    assert check_ledgers(data) == (0, "")
    # a new line (schema 2) links to the last schema-1 line; the mixed ledger checks clean
    doc = ok(data, "earn", A, "50", "--category", "taxi", "--ref", "e3", "--at", T1)
    assert doc["points"] == 10 and doc["balance"] == 393
    new = json.loads(path.read_bytes().split(b"\n")[3])
    assert new["v"] == 2 and len(new["prev"]) == 32
    assert check_ledgers(data) == (0, "")
    # the schema-1 line the first schema-2 line links to is protected
    rows = path.read_bytes().split(b"\n")
    rows[2] = rows[2].replace(b'"ref":"e2"', b'"ref":"eX"')
    path.write_bytes(b"\n".join(rows))
    code, err = check_ledgers(data)
    assert code == 3 and chain_lines(err, path) == {4}


# ---------------------------------------------------------------- 3. disk trouble


@pytest.mark.parametrize("phase", PHASES)
def test_disk_full_during_earn(template, tmp_path, phase):
    data = fresh(template, tmp_path, "disk")
    args = ["earn", A, "500", "--category", "mobile", "--ref", "k1", "--at", T1]
    r = cli_sub(data, *args, env={"BONUSCLI_FAULT": phase, "BONUSCLI_FAULT_MODE": "oserror"})
    assert r.returncode == 3, r.stderr
    assert r.stdout == ""
    err = r.stderr.splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "No space left on device" in err[0], err
    assert "Traceback" not in r.stderr
    # with --json the one line is a JSON error object
    data2 = fresh(template, tmp_path, "disk-json")
    r = cli_sub(data2, *args, "--json", env={"BONUSCLI_FAULT": phase, "BONUSCLI_FAULT_MODE": "oserror"})
    assert r.returncode == 3
    doc = json.loads(r.stderr)
    assert doc["error"]["code"] == 3 and "No space left" in doc["error"]["message"]
    # the ledger is readable and sound; a write that failed before its fsync returned was taken back
    # (the command said it failed, so nothing of it stays); after the fsync it is in, once
    code, err2 = check_ledgers(data)
    assert code == 0, err2
    a = ok(data, "balance", A, "--at", T1)["available"]
    assert a == (450 if phase == "after-fsync" else 350)
    # the caller retries with the same ref: applied exactly once
    doc = ok(data, *args)
    assert doc["balance"] == 450 and doc["duplicate"] is (phase == "after-fsync")
    assert check_ledgers(data) == (0, "")


@pytest.mark.parametrize("fault", ["before-write:2", "before-fsync:2", "after-fsync:1"])
def test_disk_full_between_the_two_lines_of_a_gift(template, tmp_path, fault):
    data = fresh(template, tmp_path, "dg")
    r = cli_sub(data, "gift", A, C, "60", "--at", T1, env={"BONUSCLI_FAULT": fault, "BONUSCLI_FAULT_MODE": "oserror"})
    assert r.returncode == 3 and len(r.stderr.splitlines()) == 1 and r.stderr.startswith("error: "), r.stderr
    assert check_ledgers(data)[0] == 0
    st = state(data)
    a, c = st[0][A], st[0][C]
    # either the gift exists (the recipient's line is written) or it was never made
    assert (a["available"], a["held_out"], c["pending_in"]) in ((290, 60, [(A, 60)]), (350, 0, []))


# ---------------------------------------------------------------- 4. concurrency


def test_concurrent_processes_same_members(tmp_path):
    """18 processes at once on three members: earns (one repeating a ref), redeems, gifts both ways, an
    accept and a batch. All run at the same --at, so every one must succeed; the result is exact."""
    data = tmp_path / "data"
    for p in (A, B, C):
        ok(data, "join", p, "--region", REGION, "--at", T0)
        ok(data, "earn", p, "10000", "--category", "mobile", "--ref", "seed", "--at", T0)  # 150 + 2000
    gid = ok(data, "gift", C, A, "100", "--at", T0)["gift_id"]
    batch = tmp_path / "batch.csv"
    batch.write_text(f"phone,amount,category,ref\n{A},1000,mobile,c-b1\n{B},1000,taxi,c-b2\n{C},300,mts_store,c-b3\n")
    jobs = [["earn", p, "500", "--category", "mobile", "--ref", f"c-{p}-{i}"]
            for p, n in ((A, 3), (B, 3), (C, 2)) for i in range(n)]
    jobs += [["earn", A, "500", "--category", "mobile", "--ref", f"c-{A}-0"],  # the same ref twice: once
             ["redeem", A, "minutes_30"], ["redeem", B, "sms_50"],
             ["gift", A, B, "50"], ["gift", B, A, "70"],
             ["accept", A, gid], ["earn", "--from", str(batch)],
             ["balance", A], ["balance", B], ["check", "--ledgers"]]
    env = dict(os.environ, BONUSCLI_DATA_DIR=str(data), BONUSCLI_NOW=T1, BONUSCLI_LOCK_TIMEOUT="30")
    env.pop("BONUSCLI_FAULT", None)
    start = time.monotonic()
    procs = [subprocess.Popen([sys.executable, "-m", "bonuscli", *j, "--json"], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for j in jobs]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        results.append((p.returncode, out, err))
    assert time.monotonic() - start < 20
    for job, (code, out, err) in zip(jobs, results):
        assert code == 0 and "Traceback" not in err, (job, code, err)
    # the repeated ref: exactly one of its two earns says duplicate
    dups = [json.loads(results[i][1])["duplicate"] for i, j in enumerate(jobs) if "c-9161110001-0" in j]
    assert sorted(dups) == [False, True]
    assert check_ledgers(data, T1) == (0, "")
    # totals exact: 8 earns of 500 mobile (100 each) + batch 200 + 200 + 100
    earned = 0
    for p in (A, B, C):
        for raw in (data / "ledgers" / f"{p}.jsonl").read_text().splitlines():
            e = json.loads(raw)
            if e["type"] == "earn" and e["ref"].startswith("c-"):
                earned += e["points"]
    assert earned == 8 * 100 + 200 + 200 + 100
    st = member_state(data, T1)
    # A: 2150 + 300 + 200 + 100 (accepted) - 210 (minutes_30) - 50 (gift to B) = 2490
    # B: 2150 + 300 + 200 - 180 (sms_50) - 70 (gift to A) = 2400;  C: 2150 - 100 + 200 + 100 = 2350
    assert [st[p]["available"] for p in (A, B, C)] == [2490, 2400, 2350]
    assert [st[p]["held_out"] for p in (A, B, C)] == [50, 70, 0]
    assert st[A]["pending_in"] == [(B, 70)] and st[B]["pending_in"] == [(A, 50)]
