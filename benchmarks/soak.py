#!/usr/bin/env python3
"""Soak test: many bonuscli processes at once, random operations, random kills.

Not run by CI (it takes minutes); docs/reliability.md records its figures.

    python benchmarks/soak.py                       # 4 processes, 600 s
    python benchmarks/soak.py --procs 8 --seconds 60 --keep /tmp/soak-data

N worker threads each run one real `python -m bonuscli` process at a time, so
at most N bonuscli processes run at once, on one shared data directory and a
small pool of members (all in one region, so gifts between any two are
allowed). Each picks an operation at random: join (sometimes with a referrer),
earn with a fresh ref (sometimes repeating an old one), batch earn, redeem,
gift, accept or reject a pending gift, leave and later join again, refund,
adjust, balance.

Crashes, two kinds:
- a killer thread SIGKILLs a random running bonuscli process every few
  seconds, wherever it happens to be;
- a few commands run with BONUSCLI_FAULT=PHASE:1 (PHASE one of before-write,
  before-fsync, after-fsync), which SIGKILLs the process exactly at a write.

Time: each command runs with `--at` = a simulated clock that moves
`--sim-hours-per-second` hours per real second (default 12: ten minutes cover
about 300 days), so gift deadlines, daily/monthly gift limits, card tiers and
12-month expiry all come into play. Two commands racing on one member may
reach the ledger out of order; the later-dated one wins and the other is
refused (`out-of-order`, exit 1), which is counted as a refusal.

At the end: `check --ledgers` (the invariant checker) as of the last simulated
instant, and a durability check: every earn, refund and adjustment that was
acknowledged (exit 0, not a duplicate) must be in its ledger exactly once.
Exit 0 when both pass and no command ever printed a traceback or an internal
error, else 1.

Standard library only.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REGION = "RU-MOW"
REWARDS = ["minutes_30", "sms_50", "mms_10", "black_list", "anti_caller_id", "ivi_7", "book_first", "vnet"]
CATEGORIES = ["mobile", "mobile_internet", "home_tv", "mts_store", "taxi", "card", "in_app", "utilities"]
PHASES = ["before-write", "before-fsync", "after-fsync"]
START = dt.datetime(2025, 1, 1, 9, 0, tzinfo=dt.timezone(dt.timedelta(hours=3)))


class Soak:
    def __init__(self, args, data: Path):
        self.args = args
        self.data = data
        self.rng = random.Random(args.seed)
        self.lock = threading.Lock()
        self.phones = [f"9160{i:06d}" for i in range(1, args.members + 1)]
        self.t0 = time.monotonic()
        self.stop_at = self.t0 + args.seconds
        self.attempted = collections.Counter()
        self.outcome = collections.defaultdict(collections.Counter)  # kind -> ok/refused/bad-input/files/killed
        self.refusals = collections.Counter()  # error kind slug -> count
        self.running = {}  # thread name -> Popen
        self.kills = 0  # external SIGKILLs delivered
        self.faults = 0  # commands run with BONUSCLI_FAULT
        self.faults_fired = 0
        self.tracebacks = []
        self.acknowledged = []  # (phone, type, ref) that exit 0 said were applied
        self.earn_refs = collections.defaultdict(list)  # phone -> refs of acknowledged earns
        self.counter = 0
        self.max_at = START

    # ------------------------------------------------------------ plumbing

    def sim_now(self) -> dt.datetime:
        hours = (time.monotonic() - self.t0) * self.args.sim_hours_per_second
        at = START + dt.timedelta(hours=hours)
        with self.lock:
            self.max_at = max(self.max_at, at)
        return at.replace(microsecond=0)

    def fresh(self, prefix: str) -> str:
        with self.lock:
            self.counter += 1
            return f"{prefix}{self.counter}"

    def bonuscli(self, kind: str, args: list, stdin: str | None = None):
        """Run one command; returns (exit code, parsed stdout JSON or None, stderr)."""
        env = dict(os.environ, BONUSCLI_DATA_DIR=str(self.data), BONUSCLI_LOCK_TIMEOUT="30")
        env.pop("BONUSCLI_FAULT", None)
        env.pop("BONUSCLI_FAULT_MODE", None)
        fault = False
        if self.rng.random() < self.args.fault_rate:
            env["BONUSCLI_FAULT"] = f"{self.rng.choice(PHASES)}:1"
            fault = True
        argv = [sys.executable, "-m", "bonuscli", *args, "--json", "--at", self.sim_now().isoformat()]
        me = threading.current_thread().name
        p = subprocess.Popen(argv, cwd=ROOT, env=env, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        with self.lock:
            self.running[me] = p
            self.attempted[kind] += 1
            if fault:
                self.faults += 1
        try:
            out, err = p.communicate(stdin, timeout=120)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
            err = "timeout (deadlock?)\n" + err
        finally:
            with self.lock:
                self.running.pop(me, None)
        code = p.returncode
        with self.lock:
            if code == -signal.SIGKILL:
                self.outcome[kind]["killed"] += 1
                if fault:
                    self.faults_fired += 1
            else:
                self.outcome[kind][{0: "ok", 1: "refused", 2: "bad-input", 3: "files"}.get(code, f"exit {code}")] += 1
            if "Traceback" in err or "internal error" in err or "timeout (deadlock?)" in err:
                self.tracebacks.append((args, code, err[-2000:]))
            if code in (1, 2, 3):
                try:
                    slug = json.loads(err.strip().splitlines()[-1])["error"]["kind"]
                except (ValueError, KeyError, IndexError, TypeError):
                    slug = "batch-rows" if kind == "batch-earn" else "?"
                self.refusals[f"{code}:{slug}"] += 1
        doc = None
        if code == 0 and out.strip():
            try:
                doc = json.loads(out)
            except ValueError:
                doc = None
        return code, doc, err

    # ------------------------------------------------------------ operations

    def op_join(self):
        phone = self.rng.choice(self.phones)
        args = ["join", phone, "--region", REGION]
        if self.rng.random() < 0.4:
            args += ["--referrer", self.rng.choice(self.phones)]
        if self.rng.random() < 0.2:
            args += ["--method", self.rng.choice(["web", "app", "card"])]
        self.bonuscli("join", args)

    def op_earn(self):
        phone = self.rng.choice(self.phones)
        with self.lock:
            old = list(self.earn_refs[phone])
        ref = self.rng.choice(old) if old and self.rng.random() < 0.15 else self.fresh("e")
        amount = f"{self.rng.randint(1, 600000) / 100:.2f}"
        code, doc, _ = self.bonuscli("earn", ["earn", phone, amount, "--category", self.rng.choice(CATEGORIES),
                                              "--ref", ref])
        if code == 0 and doc is not None and not doc.get("duplicate"):
            with self.lock:
                self.acknowledged.append((phone, "earn", ref))
                self.earn_refs[phone].append(ref)

    def op_batch(self):
        rows = []
        for _ in range(self.rng.randint(2, 8)):
            phone = self.rng.choice(self.phones)
            rows.append((phone, f"{self.rng.randint(100, 300000) / 100:.2f}",
                         self.rng.choice(CATEGORIES[:6]), self.fresh("b")))
        if rows and self.rng.random() < 0.3:
            rows.append(rows[0])  # a repeated ref inside the batch: applied once
        text = "phone,amount,category,ref\n" + "".join(",".join(r) + "\n" for r in rows)
        code, doc, _ = self.bonuscli("batch-earn", ["earn", "--from", "-"], stdin=text)
        if code in (0, 1) and doc is not None:
            bad = {p["ref"] for p in doc.get("problems", ())}
            with self.lock:
                seen = set()
                for phone, _a, _c, ref in rows:
                    if ref not in bad and ref not in seen:
                        self.acknowledged.append((phone, "earn", ref))
                        self.earn_refs[phone].append(ref)
                    seen.add(ref)

    def op_redeem(self):
        self.bonuscli("redeem", ["redeem", self.rng.choice(self.phones), self.rng.choice(REWARDS)])

    def op_gift(self):
        a, b = self.rng.sample(self.phones, 2)
        self.bonuscli("gift", ["gift", a, b, str(self.rng.randint(1, 200))])

    def op_accept(self):
        phone = self.rng.choice(self.phones)
        code, doc, _ = self.bonuscli("balance", ["balance", phone])
        if code != 0 or not doc or not doc.get("pending_in"):
            return
        g = self.rng.choice(doc["pending_in"])
        reject = self.rng.random() < 0.3
        self.bonuscli("reject" if reject else "accept",
                      ["accept", phone, g["gift_id"]] + (["--reject"] if reject else []))

    def op_leave(self):
        phone = self.rng.choice(self.phones)
        code, _doc, _ = self.bonuscli("leave", ["leave", phone, "--yes"])
        if code == 0:
            self.bonuscli("join", ["join", phone, "--region", REGION])  # rejoin at once: no welcome again

    def op_refund(self):
        phone = self.rng.choice(self.phones)
        with self.lock:
            refs = list(self.earn_refs[phone])
        ref = self.rng.choice(refs) if refs else self.fresh("nope")
        rref = self.fresh("r")
        args = ["refund", phone, ref, "--ref", rref]
        if self.rng.random() < 0.7:
            args += ["--amount", f"{self.rng.randint(1, 20000) / 100:.2f}"]
        code, doc, _ = self.bonuscli("refund", args)
        if code == 0 and doc is not None and not doc.get("duplicate"):
            with self.lock:
                self.acknowledged.append((phone, "refund", rref))

    def op_adjust(self):
        phone = self.rng.choice(self.phones)
        ref = self.fresh("a")
        pts = self.rng.choice([1, 1, 1, -1]) * self.rng.randint(1, 300)
        code, doc, _ = self.bonuscli("adjust", ["adjust", phone, str(pts), "--reason", "soak", "--ref", ref])
        if code == 0 and doc is not None and not doc.get("duplicate"):
            with self.lock:
                self.acknowledged.append((phone, "adjust", ref))

    def op_balance(self):
        self.bonuscli("balance", ["balance", self.rng.choice(self.phones)])

    OPS = [("join", 6), ("earn", 30), ("batch", 6), ("redeem", 10), ("gift", 12), ("accept", 10), ("leave", 2),
           ("refund", 6), ("adjust", 6), ("balance", 12)]

    def setup(self):
        """Join most of the pool first (no faults), a few through a referral, so most operations can succeed."""
        rate, self.args.fault_rate = self.args.fault_rate, 0.0
        for i, phone in enumerate(self.phones[: max(2, len(self.phones) * 3 // 4)]):
            args = ["join", phone, "--region", REGION]
            if i % 3 == 2:
                args += ["--referrer", self.phones[0]]
            self.bonuscli("join", args)
        self.args.fault_rate = rate

    def worker(self):
        names = [n for n, _ in self.OPS]
        weights = [w for _, w in self.OPS]
        while time.monotonic() < self.stop_at:
            getattr(self, "op_" + self.rng.choices(names, weights)[0])()

    def killer(self):
        while True:
            time.sleep(self.rng.uniform(0.5 * self.args.kill_every, 1.5 * self.args.kill_every))
            if time.monotonic() >= self.stop_at:
                return
            with self.lock:
                victims = [p for p in self.running.values() if p.poll() is None]
                if victims:
                    p = self.rng.choice(victims)
                    try:
                        p.send_signal(signal.SIGKILL)
                        self.kills += 1
                    except ProcessLookupError:
                        pass

    # ------------------------------------------------------------ the end

    def verify(self):
        at = (self.max_at + dt.timedelta(hours=1)).replace(microsecond=0).isoformat()
        env = dict(os.environ, BONUSCLI_DATA_DIR=str(self.data))
        env.pop("BONUSCLI_FAULT", None)
        chk = subprocess.run([sys.executable, "-m", "bonuscli", "check", "--ledgers", "--at", at], cwd=ROOT, env=env,
                             capture_output=True, text=True)
        problems = [l for l in chk.stderr.splitlines() if l.strip() and not l.startswith("error:")]
        # durability: every acknowledged change is in its ledger, exactly once
        found = collections.Counter()
        for f in (self.data / "ledgers").glob("*.jsonl"):
            phone = f.name[:-6]
            repaired = set()
            events = []
            for n, raw in enumerate(f.read_bytes().split(b"\n"), start=1):
                try:
                    e = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(e, dict):
                    events.append((n, e))
                    if e.get("type") == "repair":
                        repaired.add(e.get("line"))
            for n, e in events:
                if n in repaired:
                    continue
                if e.get("type") in ("earn", "refund", "adjust") and e.get("ref") is not None:
                    found[(phone, e["type"], e["ref"])] += 1
        lost = [k for k in self.acknowledged if found[k] == 0]
        doubled = [k for k, n in found.items() if n > 1]
        ledgers = list((self.data / "ledgers").glob("*.jsonl"))
        lines = sum(f.read_bytes().count(b"\n") for f in ledgers)
        repairs = sum(f.read_bytes().count(b'"type":"repair"') for f in ledgers)
        return chk.returncode, problems, lost, doubled, lines, repairs, at


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--procs", type=int, default=4, help="bonuscli processes at once (default 4)")
    ap.add_argument("--seconds", type=float, default=600, help="how long to run (default 600)")
    ap.add_argument("--members", type=int, default=12, help="size of the member pool (default 12)")
    ap.add_argument("--kill-every", type=float, default=10.0, help="mean seconds between external SIGKILLs")
    ap.add_argument("--fault-rate", type=float, default=0.03, help="share of commands run with BONUSCLI_FAULT")
    ap.add_argument("--sim-hours-per-second", type=float, default=12.0)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--keep", metavar="DIR", help="use (and keep) this data directory")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args(argv)
    if args.seed is None:
        args.seed = random.randrange(1 << 30)
    if args.keep:
        data = Path(args.keep)
        if data.exists():
            shutil.rmtree(data)
        tmp = None
    else:
        tmp = tempfile.mkdtemp(prefix="bonuscli-soak-")
        data = Path(tmp) / "data"
    soak = Soak(args, data)
    threads = [threading.Thread(target=soak.worker, name=f"w{i}") for i in range(args.procs)]
    killer = threading.Thread(target=soak.killer, name="killer", daemon=True)
    started = time.monotonic()
    soak.setup()
    for t in threads:
        t.start()
    killer.start()
    for t in threads:
        t.join()
    duration = time.monotonic() - started
    code, problems, lost, doubled, lines, repairs, at = soak.verify()
    kinds = sorted(soak.attempted)
    figures = {
        "seed": args.seed, "processes": args.procs, "members": args.members, "duration_s": round(duration, 1),
        "simulated_until": at, "operations": sum(soak.attempted.values()),
        "by_kind": {k: dict(attempted=soak.attempted[k], **soak.outcome[k]) for k in kinds},
        "refusals": dict(soak.refusals.most_common()),
        "external_kills": soak.kills, "fault_injections": soak.faults, "fault_kills": soak.faults_fired,
        "ledger_lines": lines, "repairs": repairs,
        "check_ledgers_exit": code, "invariant_violations": len(problems),
        "acknowledged_changes": len(soak.acknowledged), "lost": len(lost), "doubled": len(doubled),
        "tracebacks": len(soak.tracebacks),
    }
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print(f"soak: {args.procs} processes, {duration:.0f} s, {args.members} members, seed {args.seed}")
        print(f"simulated time: {START.isoformat()} .. {at}")
        print(f"{'kind':<12}{'attempted':>10}{'ok':>8}{'refused':>9}{'bad-in':>8}{'files':>7}{'killed':>8}")
        for k in kinds:
            o = soak.outcome[k]
            print(f"{k:<12}{soak.attempted[k]:>10}{o['ok']:>8}{o['refused']:>9}{o['bad-input']:>8}{o['files']:>7}"
                  f"{o['killed']:>8}")
        tot = collections.Counter()
        for k in kinds:
            tot.update(soak.outcome[k])
        print(f"{'total':<12}{sum(soak.attempted.values()):>10}{tot['ok']:>8}{tot['refused']:>9}{tot['bad-input']:>8}"
              f"{tot['files']:>7}{tot['killed']:>8}")
        print("refusals by kind: " + ", ".join(f"{k} {n}" for k, n in soak.refusals.most_common()))
        print(f"kills: {soak.kills} external SIGKILLs, {soak.faults_fired} of {soak.faults} injected faults fired")
        print(f"ledgers: {lines} lines, {repairs} repair events (torn lines sealed)")
        print(f"acknowledged earns/refunds/adjustments: {len(soak.acknowledged)}; lost {len(lost)}, "
              f"doubled {len(doubled)}")
        print(f"check --ledgers: exit {code}, invariant violations {len(problems)}")
        print(f"tracebacks / internal errors / deadlocks: {len(soak.tracebacks)}")
    for p in problems[:20]:
        print("  " + p)
    for k in lost[:20]:
        print("  lost:", k)
    for k in doubled[:20]:
        print("  doubled:", k)
    for a, c, e in soak.tracebacks[:5]:
        print("  traceback:", a, c, e, sep="\n    ")
    if tmp and not (problems or lost or doubled):
        shutil.rmtree(tmp, ignore_errors=True)
    elif tmp:
        print(f"data kept in {data}")
    return 0 if code == 0 and not (problems or lost or doubled or soak.tracebacks) else 1


if __name__ == "__main__":
    sys.exit(main())
