"""The store (CLI.md §3) and members' lifecycle through it: layout and modes,
phone spellings as file names, torn final lines, corruption, locks,
concurrency, crashes and disk errors.

Expected numbers are derived by hand from RULES.md: welcome 150 on joining
(§2), `mobile` earns floor(amount × 1.0 / 5) for a new customer (§3),
`minutes_30` costs 210 in RU-MOW (§5).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bonuscli.model import BadInput, normalize_phone

ROOT = Path(__file__).resolve().parent.parent
PHONE = "9161234567"
OTHER = "9167654321"
REGION = "RU-MOW"
T0 = "2025-03-01T12:00+03:00"


# ---------------------------------------------------------------- helpers


def ledger_path(data_dir: Path, phone: str = PHONE) -> Path:
    return data_dir / "ledgers" / f"{phone}.jsonl"


def events(path: Path) -> list:
    """Every line of a clean ledger as a dict (fails on a torn or bad line)."""
    data = path.read_bytes()
    assert data.endswith(b"\n"), f"{path} does not end with a newline"
    return [json.loads(line) for line in data.split(b"\n")[:-1]]


def snapshot(root: Path) -> dict:
    """Every file and directory under root, with the files' bytes."""
    if not root.exists():
        return {}
    out = {}
    for p in sorted(root.rglob("*")):
        out[str(p.relative_to(root))] = p.read_bytes() if p.is_file() else "<dir>"
    return out


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def one_error_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def popen(args, env=None, **kw):
    full = dict(os.environ)
    full.update(env or {})
    return subprocess.Popen([sys.executable, "-m", "bonuscli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=full, cwd=ROOT, **kw)


def join(run, phone=PHONE, *extra, at=T0):
    return run.j("join", phone, "--region", REGION, "--at", at, *extra)


def earn(run, amount, ref, phone=PHONE, at=T0, category="mobile"):
    return run.j("earn", phone, amount, "--category", category, "--ref", ref, "--at", at)


def available(run, phone=PHONE, at=T0):
    return run.j("balance", phone, "--at", at)["available"]


def member_with_two_earns(run):
    """join (150) + 500 mobile (100) + 250 mobile (50) = 300; three ledger lines."""
    join(run)
    assert earn(run, "500", "a1")["points"] == 100
    assert earn(run, "250", "a2")["points"] == 50
    assert available(run) == 300


# ---------------------------------------------------------------- 1. layout and modes


def test_layout_one_json_object_per_line(run, data_dir):
    join(run)
    path = ledger_path(data_dir)
    assert path.is_file()
    assert sorted(p.name for p in (data_dir / "ledgers").iterdir()) == [f"{PHONE}.jsonl"]
    before = path.read_bytes()
    earn(run, "500", "a1", at="2025-03-02T09:30")
    run.j("redeem", PHONE, "minutes_30", "--at", "2025-03-03T10:00")
    after = path.read_bytes()
    assert after.startswith(before), "the ledger was rewritten, not appended to"
    evs = events(path)
    assert len(evs) >= 3
    ids = [e["id"] for e in evs]
    assert len(set(ids)) == len(ids)
    for e in evs:
        assert isinstance(e, dict)
        assert isinstance(e["type"], str) and e["type"]
        assert isinstance(e["v"], int) and e["v"] >= 1
        when = dt.datetime.fromisoformat(e["at"])
        assert when.tzinfo is not None and when.utcoffset() is not None, e["at"]
    assert [e["type"] for e in evs][0] == "join"
    # 150 + floor(500/5)=100 - 210 (minutes_30 in RU-MOW) = 40
    assert available(run, at="2025-03-03T10:00") == 40


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o777])
def test_modes_whatever_the_umask(tmp_path, umask):
    data = tmp_path / "store" / "data"
    env = dict(os.environ, BONUSCLI_DATA_DIR=str(data))
    r = subprocess.run([sys.executable, "-m", "bonuscli", "join", PHONE, "--region", REGION],
                       capture_output=True, text=True, env=env, cwd=ROOT, umask=umask, timeout=60)
    assert r.returncode == 0, r.stderr
    assert mode(data) == 0o700, oct(mode(data))
    assert mode(ledger_path(data)) == 0o600, oct(mode(ledger_path(data)))
    if umask == 0:
        r = subprocess.run([sys.executable, "-m", "bonuscli", "earn", PHONE, "100", "--category", "mobile"],
                           capture_output=True, text=True, env=env, cwd=ROOT, umask=umask, timeout=60)
        assert r.returncode == 0, r.stderr
        assert mode(data) == 0o700
        assert mode(ledger_path(data)) == 0o600


def test_modes_when_first_command_only_reads(tmp_path):
    """The first command ever run on a data dir may be a read; the dir is still 0700."""
    data = tmp_path / "data"
    env = dict(os.environ, BONUSCLI_DATA_DIR=str(data))
    r = subprocess.run([sys.executable, "-m", "bonuscli", "balance", PHONE], capture_output=True, text=True,
                       env=env, cwd=ROOT, umask=0, timeout=60)
    assert r.returncode == 2, r.stderr  # CLI.md §1: a read names the missing data directory
    assert str(data) in r.stderr
    assert not data.exists()  # and creates nothing
    r = subprocess.run([sys.executable, "-m", "bonuscli", "join", PHONE, "--region", REGION], capture_output=True,
                       text=True, env=env, cwd=ROOT, umask=0, timeout=60)
    assert r.returncode == 0, r.stderr
    assert mode(data) == 0o700, oct(mode(data))
    assert mode(ledger_path(data)) == 0o600


# ---------------------------------------------------------------- 2. phones


SAME = ["+7 916 123-45-67", "89161234567", "8 (916) 123-45-67", "9161234567", "79161234567",
        "+7(916)123-45-67", "916.123.45.67", "916 123 45 67"]


def test_spellings_share_one_ledger(run, data_dir):
    r = join(run, SAME[0])
    assert r["phone"] == PHONE
    expected = ledger_path(data_dir)
    for spelling in SAME:
        assert run.j("balance", spelling)["phone"] == PHONE
        assert run.j("path", spelling)["ledger"] == str(expected)
        again = run("join", spelling, "--region", REGION)
        assert again.exit_code == 1, (spelling, again.stdout, again.stderr)
    earn(run, "500", "a1", phone="8 (916) 123-45-67")
    assert available(run, "+7 916 123-45-67") == 250
    assert sorted(p.name for p in (data_dir / "ledgers").iterdir()) == [f"{PHONE}.jsonl"]
    types = [e["type"] for e in events(expected)]
    assert types.count("join") == 1


def test_seed_phone_with_leading_zero(run, data_dir):
    assert join(run, "0953171134")["phone"] == "0953171134"
    assert ledger_path(data_dir, "0953171134").is_file()
    assert run.j("balance", "0953171134")["available"] == 150


BAD = ["916123456a", "abcdefghij", "916/1234567", "../etc", "..", "916..1234567", "916.123..4567",
       "916123456", "91612345678", "916123456789", "891612345678", "+89161234567", "+9161234567",
       "+7916123456", "++79161234567", "9161234567\x00", "916\x001234567", "9" * 10_000,
       "/tmp/9161234567", "/etc/passwd", "../../9161234567", "9161234567/..", "", "   ", "+",
       "９１６１２３４５６７"]


def _bad_phone_commands(bad):
    return [
        ("join", bad, "--region", REGION),
        ("join", PHONE, "--region", REGION, "--referrer", bad),
        ("earn", bad, "100", "--category", "mobile", "--ref", "x1"),
        ("balance", bad),
        ("history", bad),
        ("forecast", bad),
        ("path", bad),
        ("leave", bad, "--yes"),
        ("redeem", bad, "minutes_30"),
        ("gift", OTHER, bad, "10"),
        ("gift", bad, OTHER, "10"),
    ]


# every command with these; only join and balance with the rest of BAD
EVERY_COMMAND = {"../etc", "..", "916/1234567", "9161234567\x00", "9" * 10_000, "/tmp/9161234567", "+89161234567"}


def test_bad_phone_exit_2_nothing_written(run, data_dir, tmp_path):
    join(run, OTHER)
    before = snapshot(data_dir)
    around = sorted(p.name for p in tmp_path.iterdir())
    for bad in BAD:
        commands = _bad_phone_commands(bad)
        if bad not in EVERY_COMMAND:
            commands = commands[:1] + commands[3:4]
        for args in commands:
            r = run(*args)
            assert r.exit_code == 2, (bad[:20], args[0], r.exit_code, r.stdout, r.stderr)
            assert one_error_line(r.stderr).startswith("error: ")
            assert snapshot(data_dir) == before, (bad[:20], args[0])
            assert sorted(p.name for p in tmp_path.iterdir()) == around


def test_bad_phone_on_fresh_data_dir_creates_nothing(sub, data_dir):
    r = sub(["join", "../etc", "--region", REGION])
    assert r.returncode == 2
    assert one_error_line(r.stderr).startswith("error: ")
    assert snapshot(data_dir) == {}
    r = sub(["earn", "9" * 10_000, "100", "--category", "mobile"])
    assert r.returncode == 2
    assert one_error_line(r.stderr).startswith("error: ")
    assert snapshot(data_dir) == {}


_SEPS = st.sampled_from(["", "", "", " ", "-", ".", "(", ")", " (", ") ", " - "])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(digits=st.text(alphabet="0123456789", min_size=10, max_size=10),
       seps=st.lists(_SEPS, min_size=9, max_size=9),
       prefix=st.sampled_from(["", "8", "7", "+7", "8 ", "+7 ", "8-", "+7-"]))
def test_normalize_phone_spellings(digits, seps, prefix):
    body = digits[0] + "".join(s + d for s, d in zip(seps, digits[1:]))
    text = prefix + body
    if ".." in text:
        with pytest.raises(BadInput):
            normalize_phone(text)
        return
    assert normalize_phone(text) == digits


@settings(max_examples=150, deadline=None)
@given(digits=st.text(alphabet="0123456789", min_size=10, max_size=10),
       pos=st.integers(min_value=1, max_value=9),
       junk=st.sampled_from(["a", "/", "\\", "\x00", "..", "_", "*", ",", "#", "x", "\t", "\n", "~", ":"]))
def test_normalize_phone_junk_rejected(digits, pos, junk):
    with pytest.raises(BadInput):
        normalize_phone(digits[:pos] + junk + digits[pos:])


@settings(max_examples=100, deadline=None)
@given(digits=st.text(alphabet="0123456789", min_size=1, max_size=20))
def test_normalize_phone_digit_counts(digits):
    ok = len(digits) == 10 or (len(digits) == 11 and digits[0] in "78")
    if ok:
        assert normalize_phone(digits) == digits[-10:]
    else:
        with pytest.raises(BadInput):
            normalize_phone(digits)


# ---------------------------------------------------------------- 3. torn final line


def _ghost_event() -> bytes:
    ev = {"v": 1, "id": f"{PHONE}.4", "type": "earn", "at": "2025-03-01T12:00:00+03:00", "amount": "5000.00",
          "category": "mobile", "points": 1000, "coefficient": "1.0", "rub_per_point": 5, "bonuses": [],
          "expires_on": "2026-03-01", "ref": "ghost"}
    return json.dumps(ev, separators=(",", ":")).encode()


TORN = {
    "partial-json": b'{"v":1,"id":"9161234567.4","type":"ea',
    "whole-event-without-newline": _ghost_event(),
    "bad-utf8": b"\xff\xfe\x00garbage",
}


@pytest.mark.parametrize("torn", list(TORN.values()), ids=list(TORN))
def test_torn_final_line_warned_then_sealed(run, data_dir, torn):
    member_with_two_earns(run)
    path = ledger_path(data_dir)
    clean = path.read_bytes()
    offset = len(clean)
    with open(path, "ab") as f:
        f.write(torn)
    torn_file = path.read_bytes()

    # reads: same numbers, exit 0, a warning naming path:4 (join, a1, a2 are lines 1-3)
    r = run("balance", PHONE, "--json")
    assert r.exit_code == 0, r.stderr
    assert r.json["available"] == 300
    warn = [l for l in r.stderr.splitlines() if f"{path}:4" in l]
    assert len(warn) == 1, r.stderr
    assert "warning" in warn[0].lower()
    assert run("history", PHONE, "--json").exit_code == 0
    assert path.read_bytes() == torn_file

    # neither a refusal nor a dry run changes the ledger, so neither seals it
    r = run("earn", PHONE, "100", "--category", "utilities", "--ref", "u1")
    assert r.exit_code == 1
    r = run("earn", PHONE, "100", "--category", "mobile", "--dry-run", "--json")
    assert r.exit_code == 0 and r.json["points"] == 20
    assert path.read_bytes() == torn_file

    # the next change seals: torn text + "\n", a repair naming line 4 and its offset, then the earn
    r = run("earn", PHONE, "100", "--category", "mobile", "--ref", "ghost", "--json")
    assert r.exit_code == 0, r.stderr
    assert r.json["points"] == 20 and r.json["duplicate"] is False
    assert r.json["balance"] == 320
    data = path.read_bytes()
    assert data.startswith(clean + torn + b"\n")
    rest = data[len(clean) + len(torn) + 1:]
    assert rest.endswith(b"\n")
    tail = [json.loads(l) for l in rest.split(b"\n")[:-1]]
    assert [e["type"] for e in tail] == ["repair", "earn"]
    repair, new = tail
    numbers = [v for v in repair.values() if isinstance(v, int) and not isinstance(v, bool)]
    assert 4 in numbers and offset in numbers, repair
    assert dt.datetime.fromisoformat(repair["at"]).utcoffset() is not None
    assert new["ref"] == "ghost"
    ids = [e["id"] for e in events_skipping(path, 4)]
    assert len(ids) == len(set(ids))

    # later reads are clean and right; later writes add no second repair
    r = run("balance", PHONE, "--json")
    assert r.exit_code == 0 and r.stderr == ""
    assert r.json["available"] == 320
    r = run("earn", PHONE, "50", "--category", "mobile", "--ref", "a4", "--json")
    assert r.exit_code == 0 and r.stderr == ""
    assert r.json["balance"] == 330
    assert path.read_bytes().count(b'"repair"') == 1
    r = run("history", PHONE, "--json")
    assert r.exit_code == 0 and r.stderr == ""
    earns = [json.loads(l) for l in r.stdout.splitlines()]
    assert [e.get("ref") for e in earns if e["type"] == "earn"] == ["a1", "a2", "ghost", "a4"]


def events_skipping(path: Path, skip: int) -> list:
    lines = path.read_bytes().split(b"\n")[:-1]
    return [json.loads(l) for n, l in enumerate(lines, start=1) if n != skip]


def test_torn_line_sealed_by_a_subprocess_warns_on_stderr(sub, run, data_dir):
    join(run)
    path = ledger_path(data_dir)
    with open(path, "ab") as f:
        f.write(b'{"v":1,"id":"x"')
    r = sub(["balance", PHONE, "--json"])
    assert r.returncode == 0
    assert json.loads(r.stdout)["available"] == 150
    assert f"{path}:2" in one_error_line(r.stderr)
    r = sub(["earn", PHONE, "100", "--category", "mobile", "--ref", "s1", "--json"])
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["balance"] == 170
    r = sub(["balance", PHONE, "--json"])
    assert r.returncode == 0 and r.stderr == ""
    assert json.loads(r.stdout)["available"] == 170


def test_readers_skip_exactly_the_lines_a_repair_names(run, data_dir):
    """A repair event makes readers skip the line it names, and only that one."""
    member_with_two_earns(run)
    path = ledger_path(data_dir)
    repair = {"v": 1, "id": f"{PHONE}.r3", "type": "repair", "at": "2025-03-01T12:00:00+03:00", "line": 3,
              "offset": 0}
    with open(path, "ab") as f:
        f.write(json.dumps(repair).encode() + b"\n")
    # line 3 is the 250 RUB earn (50 points): skipped
    assert available(run) == 250
    # a bad line that no repair names is still corruption
    lines = path.read_bytes().split(b"\n")
    lines[1] = b"not json"
    path.write_bytes(b"\n".join(lines))
    r = run("balance", PHONE)
    assert r.exit_code == 3
    assert f"{path}:2" in one_error_line(r.stderr)


# ---------------------------------------------------------------- 4. corruption


GARBAGE = {
    "text": b"garbage",
    "half-json": b'{"v":1,"id":"x","type":"earn"',
    "json-list": b"[1, 2]",
    "json-string": b'"hello"',
    "missing-keys": b'{"foo": 1}',
    "no-version": b'{"id":"9161234567.9","type":"earn","at":"2025-03-01T12:00:00+03:00"}',
    "blank": b"",
    "bad-utf8": b"\xff\xfe\xfd",
    "nul": b"\x00\x00\x00",
}


def _corrupt_line_2(path: Path, garbage: bytes) -> bytes:
    lines = path.read_bytes().split(b"\n")
    assert len(lines) == 4 and lines[-1] == b""
    lines[1] = garbage
    data = b"\n".join(lines)
    path.write_bytes(data)
    return data


@pytest.mark.parametrize("garbage", list(GARBAGE.values()), ids=list(GARBAGE))
def test_corrupt_middle_line_exit_3_file_untouched(run, data_dir, garbage):
    member_with_two_earns(run)
    join(run, OTHER)
    path = ledger_path(data_dir)
    other_before = ledger_path(data_dir, OTHER).read_bytes()
    data = _corrupt_line_2(path, garbage)
    where = f"{path}:2"
    commands = [
        ("balance", PHONE),
        ("history", PHONE),
        ("forecast", PHONE),
        ("earn", PHONE, "100", "--category", "mobile", "--dry-run"),
        ("earn", PHONE, "100", "--category", "mobile", "--ref", "n1"),
        ("earn", PHONE, "100", "--category", "mobile", "--ref", "a1"),
        ("join", PHONE, "--region", REGION),
        ("redeem", PHONE, "minutes_30"),
        ("leave", PHONE, "--yes"),
        ("gift", PHONE, OTHER, "10"),
        ("gift", OTHER, PHONE, "10"),
    ]
    for args in commands:
        r = run(*args)
        assert r.exit_code == 3, (args, r.exit_code, r.stdout, r.stderr)
        line = one_error_line(r.stderr)
        assert line.startswith("error: ") and where in line, line
        assert path.read_bytes() == data, args
        assert ledger_path(data_dir, OTHER).read_bytes() == other_before, args
    r = run("balance", PHONE, "--json")
    assert r.exit_code == 3
    doc = json.loads(one_error_line(r.stderr))
    assert doc["error"]["code"] == 3 and where in doc["error"]["message"]


def test_corrupt_ledger_subprocess_and_torn_tail_not_sealed(sub, run, data_dir):
    member_with_two_earns(run)
    path = ledger_path(data_dir)
    _corrupt_line_2(path, b"}{")
    with open(path, "ab") as f:
        f.write(b'{"v":1,"id"')
    data = path.read_bytes()
    for args in (["balance", PHONE], ["earn", PHONE, "100", "--category", "mobile", "--ref", "z"]):
        r = sub(args)
        assert r.returncode == 3, r.stderr
        line = one_error_line(r.stderr)
        assert line.startswith("error: ") and f"{path}:2" in line
        assert r.stdout == ""
        assert path.read_bytes() == data


# ---------------------------------------------------------------- 5. locks


def hold_lock(data_dir: Path, phone: str):
    """What a writer holds (docs/reliability.md): an flock on the member's ledger, or on its lock file
    while the member has no ledger yet."""
    ledger = data_dir / "ledgers" / f"{phone}.jsonl"
    if ledger.exists():
        f = open(ledger, "rb")
    else:
        lock = data_dir / "locks" / f"{phone}.lock"
        lock.parent.mkdir(parents=True, exist_ok=True)
        f = open(lock, "a+")
    fcntl.flock(f.fileno(), fcntl.LOCK_EX)
    return f


def test_locked_member_change_times_out_reads_work(run, sub, data_dir):
    join(run)
    join(run, OTHER)
    path = ledger_path(data_dir)
    before = path.read_bytes()
    f = hold_lock(data_dir, PHONE)
    try:
        t = time.monotonic()
        r = sub(["earn", PHONE, "100", "--category", "mobile", "--ref", "l1"], env={"BONUSCLI_LOCK_TIMEOUT": "1"})
        elapsed = time.monotonic() - t
        assert r.returncode == 3, (r.stdout, r.stderr)
        line = one_error_line(r.stderr)
        assert line.startswith("error: ") and "lock" in line.lower()
        assert r.stdout == ""
        assert 0.9 <= elapsed < 8, elapsed
        assert path.read_bytes() == before
        # other changing commands on the locked member, in-process with a short timeout
        short = {"BONUSCLI_LOCK_TIMEOUT": "0.2"}
        for args in (("leave", PHONE, "--yes"), ("redeem", PHONE, "minutes_30"), ("gift", OTHER, PHONE, "10"),
                     ("join", PHONE, "--region", REGION)):
            r = run(*args, env=short)
            assert r.exit_code == 3, (args, r.stdout, r.stderr)
            assert one_error_line(r.stderr).startswith("error: ")
        assert path.read_bytes() == before
        # reads still work
        r = sub(["balance", PHONE, "--json"])
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["available"] == 150
        assert run("history", PHONE, "--json").exit_code == 0
        assert run("forecast", PHONE, "--json").exit_code == 0
        assert run.j("earn", PHONE, "100", "--category", "mobile", "--dry-run")["points"] == 20
        # another member is not blocked
        assert earn(run, "100", "o1", phone=OTHER)["balance"] == 170
    finally:
        f.close()
    assert path.read_bytes() == before
    assert earn(run, "100", "l1")["balance"] == 170


def test_change_waits_for_the_lock(data_dir, run):
    join(run)
    f = hold_lock(data_dir, PHONE)
    try:
        p = popen(["earn", PHONE, "100", "--category", "mobile", "--ref", "w1", "--json"],
                  env={"BONUSCLI_LOCK_TIMEOUT": "20"})
        time.sleep(0.5)
        assert p.poll() is None, "the command did not wait for the lock"
    finally:
        f.close()
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    assert json.loads(out)["balance"] == 170


# ---------------------------------------------------------------- 6. concurrency


def test_concurrent_joins_and_reads(data_dir, run):
    a, b, c = "9160000001", "9160000002", "9160000003"
    jobs = [("join", a), ("join", a), ("join", a), ("join", b), ("join", b), ("join", c), ("balance", a),
            ("balance", b)]
    procs = []
    for cmd, phone in jobs:
        args = [cmd, phone] + (["--region", REGION] if cmd == "join" else [])
        procs.append((cmd, phone, popen(args)))
    results = [(cmd, phone, p.wait(timeout=60), p.stdout.read(), p.stderr.read()) for cmd, phone, p in procs]
    for _, _, p in procs:
        p.stdout.close()
        p.stderr.close()
    for phone, n in ((a, 3), (b, 2), (c, 1)):
        codes = sorted(rc for cmd, ph, rc, _, _ in results if cmd == "join" and ph == phone)
        assert codes == [0] + [1] * (n - 1), (phone, results)
    for cmd, phone, rc, out, err in results:
        assert "Traceback" not in err
        if cmd == "balance":  # before any join made the data directory, it is "no data directory" (2)
            assert rc in (0, 1) or (rc == 2 and "no data directory" in err), err
    for phone in (a, b, c):
        path = ledger_path(data_dir, phone)
        evs = events(path)  # every line whole and parseable
        assert [e["type"] for e in evs] == ["join"], evs
        assert available(run, phone) == 150


EARNS = [("500", 100), ("99.99", 19), ("7", 1), ("250.50", 50), ("4.99", 0), ("777.77", 155)]


def test_concurrent_earns_sum(data_dir, run):
    join(run)
    procs = [popen(["earn", PHONE, amount, "--category", "mobile", "--ref", f"c{i}", "--json"])
             for i, (amount, _) in enumerate(EARNS)]
    # the same ref twice more, same amount: credited once
    procs += [popen(["earn", PHONE, EARNS[0][0], "--category", "mobile", "--ref", "c0", "--json"]) for _ in range(2)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        outs.append(json.loads(out))
    c0 = [o for o in outs if o.get("ref", "c0") == "c0" and o["amount"] == "500.00"]
    assert sorted(o["duplicate"] for o in c0) == [False, True, True]
    assert all(o["points"] == 100 for o in c0)
    # 150 + 100 + 19 + 1 + 50 + 0 + 155
    assert available(run) == 475
    evs = events(ledger_path(data_dir))
    earns = [e for e in evs if e["type"] == "earn"]
    assert sorted(e["ref"] for e in earns) == sorted(f"c{i}" for i in range(len(EARNS)))
    ids = [e["id"] for e in evs]
    assert len(ids) == len(set(ids))


# ---------------------------------------------------------------- 7. crashes


def _state(run, phone=PHONE):
    bal = run.j("balance", phone)
    hist = run("history", phone, "--json")
    assert hist.exit_code == 0
    rows = [json.loads(l) for l in hist.stdout.splitlines()]
    return bal, [{k: v for k, v in r.items() if k != "id"} for r in rows]


@pytest.mark.parametrize("phase", ["before-write", "before-fsync", "after-fsync"])
def test_crash_during_join(run, sub, data_dir, tmp_path, phase):
    r = sub(["join", PHONE, "--region", REGION], env={"BONUSCLI_FAULT": phase})
    assert r.returncode == -9, (r.returncode, r.stderr)
    path = ledger_path(data_dir)
    # readable: not a member yet (exit 1) or a member; never "files in trouble"
    r = run("balance", PHONE, "--json")
    assert r.exit_code in (0, 1), r.stderr
    if r.exit_code == 0:
        assert r.json["available"] == 150
    r = run("join", PHONE, "--region", REGION)
    assert r.exit_code in (0, 1), r.stderr
    crashed = _state(run)
    clean_dir = tmp_path / "clean"
    env = {"BONUSCLI_DATA_DIR": str(clean_dir)}
    run.ok("join", PHONE, "--region", REGION, env=env)
    clean = _state(run_in(run, env))
    assert crashed == clean
    assert crashed[0]["available"] == 150
    assert [e["type"] for e in events(path)].count("join") == 1


def run_in(run, env):
    class R:
        def j(self, *a):
            return run.j(*a, env=env)

        def __call__(self, *a):
            return run(*a, env=env)

    return R()


@pytest.mark.parametrize("phase", ["before-write", "before-fsync", "after-fsync"])
def test_crash_during_earn_no_double_credit(run, sub, data_dir, tmp_path, phase):
    join(run)
    r = sub(["earn", PHONE, "500", "--category", "mobile", "--ref", "k1"], env={"BONUSCLI_FAULT": phase})
    assert r.returncode == -9, (r.returncode, r.stderr)
    path = ledger_path(data_dir)
    bal = run.j("balance", PHONE)["available"]
    assert bal in (150, 250)
    r = run.j("earn", PHONE, "500", "--category", "mobile", "--ref", "k1")
    assert r["points"] == 100 and r["balance"] == 250
    assert r["duplicate"] is (bal == 250)
    crashed = _state(run)
    env = {"BONUSCLI_DATA_DIR": str(tmp_path / "clean")}
    run.ok("join", PHONE, "--region", REGION, env=env)
    run.ok("earn", PHONE, "500", "--category", "mobile", "--ref", "k1", env=env)
    assert crashed == _state(run_in(run, env))
    assert crashed[0]["available"] == 250
    assert [e["type"] for e in events(path)].count("earn") == 1


@pytest.mark.parametrize("fault", ["before-write:2", "before-fsync:2", "after-fsync:1", "before-fsync:1"])
def test_crash_during_join_with_referrer(run, sub, data_dir, tmp_path, fault):
    """A join with a referrer writes two ledgers; a crash between them leaves no double or lost bonus."""
    join(run, OTHER)
    r = sub(["join", PHONE, "--region", REGION, "--referrer", OTHER], env={"BONUSCLI_FAULT": fault})
    assert r.returncode == -9, (r.returncode, r.stderr)
    for p in (PHONE, OTHER):
        assert run("balance", p).exit_code in (0, 1)
    r = run("join", PHONE, "--region", REGION, "--referrer", OTHER)
    assert r.exit_code in (0, 1), r.stderr
    # inviter: 150 welcome + 50 referral; invitee: 150
    assert available(run, OTHER) == 200
    assert available(run, PHONE) == 150
    env = {"BONUSCLI_DATA_DIR": str(tmp_path / "clean")}
    run.ok("join", OTHER, "--region", REGION, env=env)
    run.ok("join", PHONE, "--region", REGION, "--referrer", OTHER, env=env)
    crashed_bal = [run.j("balance", p) for p in (PHONE, OTHER)]
    clean_bal = [run.j("balance", p, env=env) for p in (PHONE, OTHER)]
    assert crashed_bal == clean_bal


# ---------------------------------------------------------------- 8. history, path, leave


def test_history_json_lines_oldest_first(run):
    join(run)
    earn(run, "500", "h1", at="2025-03-05T10:00")      # 100
    earn(run, "250", "h2", at="2025-03-10T10:00")      # 50
    run.j("redeem", PHONE, "minutes_30", "--at", "2025-03-12T10:00")  # -210 in RU-MOW
    r = run("history", PHONE, "--json", "--at", "2025-03-20")
    assert r.exit_code == 0
    lines = r.stdout.splitlines()
    rows = [json.loads(l) for l in lines]
    assert all(isinstance(x, dict) for x in rows)
    ats = [dt.datetime.fromisoformat(x["at"]) for x in rows]
    assert all(a.utcoffset() is not None for a in ats)
    assert ats == sorted(ats)
    assert ats[0] == dt.datetime.fromisoformat("2025-03-01T12:00+03:00")
    assert ats[-1] == dt.datetime.fromisoformat("2025-03-12T10:00+03:00")
    assert [x.get("ref") for x in rows if x["type"] == "earn"] == ["h1", "h2"]
    assert [x["points"] for x in rows if x["type"] == "earn"] == [100, 50]
    assert rows[-1]["balance"] == 90
    assert available(run, at="2025-03-20") == 90
    # history on a non-member: refused, exit 1
    assert run("history", OTHER, "--json").exit_code == 1


def test_path_command(run, data_dir):
    doc = run.j("path", "+7 916 123-45-67")
    assert doc["data_dir"] == str(data_dir)
    assert doc["ledger"] == str(ledger_path(data_dir))
    assert Path(doc["catalog"]).name == "catalog.yaml" and Path(doc["catalog"]).is_file()
    assert not ledger_path(data_dir).exists()  # path does not create a ledger
    human = run.ok("path", PHONE).stdout
    for value in (str(data_dir), doc["catalog"], str(ledger_path(data_dir))):
        assert value in human


def test_path_follows_catalog_and_data_dir_options(run, tmp_path):
    cat = tmp_path / "mine.yaml"
    cat.write_bytes((ROOT / "catalog.yaml").read_bytes())
    other = tmp_path / "elsewhere"
    doc = run.j("path", PHONE, "--catalog", str(cat), "--data-dir", str(other))
    assert doc["catalog"] == str(cat)
    assert doc["data_dir"] == str(other)
    assert doc["ledger"] == str(other / "ledgers" / f"{PHONE}.jsonl")


def test_leave_needs_yes(run, sub, data_dir):
    join(run)
    earn(run, "500", "a1")
    path = ledger_path(data_dir)
    before = path.read_bytes()
    r = run("leave", PHONE)
    assert r.exit_code == 2
    assert one_error_line(r.stderr).startswith("error: ")
    assert path.read_bytes() == before
    r = sub(["leave", PHONE])
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert path.read_bytes() == before
    assert available(run) == 250
    doc = run.j("leave", PHONE, "--yes")
    assert path.read_bytes().startswith(before) and path.read_bytes() != before
    bal = run.j("balance", PHONE)
    assert bal["status"] == "left" and bal["available"] == 0
    assert doc  # a JSON document was printed


# ---------------------------------------------------------------- 9. disk errors


@pytest.mark.parametrize("phase", ["before-write", "before-fsync", "after-fsync"])
def test_disk_error_on_earn(sub, run, data_dir, phase):
    join(run)
    path = ledger_path(data_dir)
    before = path.read_bytes()
    r = sub(["earn", PHONE, "500", "--category", "mobile", "--ref", "d1"],
            env={"BONUSCLI_FAULT": phase, "BONUSCLI_FAULT_MODE": "oserror"})
    assert r.returncode == 3, (r.returncode, r.stdout, r.stderr)
    assert one_error_line(r.stderr).startswith("error: ")
    assert r.stdout == ""
    after = path.read_bytes()
    assert after.startswith(before)
    if phase == "before-write":
        assert after == before
    bal = run("balance", PHONE, "--json")
    assert bal.exit_code == 0, bal.stderr
    assert bal.json["available"] in (150, 250)
    if phase == "before-write":
        assert bal.json["available"] == 150
    # re-running with the same ref gives the state of one earn
    assert run.j("earn", PHONE, "500", "--category", "mobile", "--ref", "d1")["balance"] == 250
    assert available(run) == 250
    assert [e["type"] for e in events(path)].count("earn") == 1


def test_disk_error_on_join_json(sub, run, data_dir):
    r = sub(["join", PHONE, "--region", REGION, "--json"],
            env={"BONUSCLI_FAULT": "before-write", "BONUSCLI_FAULT_MODE": "oserror"})
    assert r.returncode == 3, r.stderr
    doc = json.loads(one_error_line(r.stderr))
    assert doc["error"]["code"] == 3
    assert doc["error"]["message"]
    r = run("balance", PHONE)
    assert r.exit_code == 1, r.stderr  # readable, not a member
    assert join(run)["balance"] == 150
    assert [e["type"] for e in events(ledger_path(data_dir))] == ["join"]


@given(st.dictionaries(st.text(max_size=12), st.one_of(
    st.text(), st.integers(min_value=-(2**63), max_value=2**63 - 1), st.booleans(), st.none(),
    st.lists(st.dictionaries(st.text(max_size=5), st.one_of(st.text(max_size=10), st.integers(-1000, 1000))),
             max_size=3)), max_size=8))
def test_ledger_lines_are_the_bytes_json_dumps_would_write(event):
    """`ledger.encode` uses orjson for speed; the bytes must be exactly the stdlib's compact UTF-8
    JSON, so the hash chain never depends on which encoder wrote a line."""
    from bonuscli.ledger import encode

    want = (json.dumps(event, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")
    assert encode(event) == want


# ---------------------------------------------------------------- a batch's appends made durable together


@pytest.mark.parametrize("how", ["syncfs", "fsync-each", "syncfs-error"])
def test_a_commit_makes_every_write_durable_or_takes_it_back(tmp_path, monkeypatch, how):
    """ledger.Commit (the batch's durability): every write of the commit is synced before `sync()`
    returns and the locks go; where `syncfs` is missing or reports an error, each file is fsynced,
    and a file whose fsync fails is truncated back to where it was and named, the others kept."""
    from bonuscli import ledger as ledger_mod

    calls = []
    if how == "fsync-each":
        monkeypatch.setattr(ledger_mod, "_SYNCFS", False)
    elif how == "syncfs-error":
        monkeypatch.setattr(ledger_mod, "_SYNCFS", lambda fd: calls.append(fd) or -1)
    else:
        monkeypatch.setattr(ledger_mod, "_SYNCFS", lambda fd: calls.append(fd) or 0)
    files = {p: tmp_path / f"{p}.jsonl" for p in ("9160000001", "9160000002")}
    for f in files.values():
        f.write_bytes(b"old\n")
    real_fsync = os.fsync
    synced = []
    bad_fd = {}

    def fsync(fd):
        if fd == bad_fd.get("fd"):
            bad_fd["fd"] = None  # fails once: the truncation back is synced
            raise OSError(5, "Input/output error")
        synced.append(fd)
        return real_fsync(fd)

    monkeypatch.setattr(ledger_mod.os, "fsync", fsync)
    commit = ledger_mod.Commit()
    for phone, f in files.items():
        commit.write(f, phone, f"new {phone}\n".encode())
    bad_fd["fd"] = commit.writes[1][2] if how == "syncfs-error" else None
    failed = commit.sync()
    assert commit.writes == [] and commit.locks == []
    if how == "syncfs":
        assert calls and synced == [] and failed == {}
        assert all(f.read_bytes() == f"old\nnew {p}\n".encode() for p, f in files.items())
    elif how == "fsync-each":
        assert len(synced) == 2 and failed == {}
    else:  # syncfs said no: each file fsynced; the one that failed is back to where it was
        assert calls and list(failed) == ["9160000002"] and failed["9160000002"].kind == "disk"
        assert "nothing was recorded" in failed["9160000002"].message
        assert files["9160000001"].read_bytes() == b"old\nnew 9160000001\n"
        assert files["9160000002"].read_bytes() == b"old\n"


# ---------------------------------------------------------------- printed JSON: orjson writes what json.dumps writes


_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2 ** 70), max_value=2 ** 70)
    | st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=8), inner, max_size=4),
    max_leaves=25)


@settings(max_examples=300, deadline=None)
@given(value=_JSON_VALUES)
def test_printed_json_is_what_json_dumps_writes(value):
    """render.dumps (orjson with an indent, the stdlib for what orjson refuses) prints exactly the text
    of `json.dumps(indent=2, ensure_ascii=False)`: documents, control characters, big integers."""
    from bonuscli import render

    assert render.dumps(value) == json.dumps(render.public(value), indent=2, ensure_ascii=False)
