#!/usr/bin/env python3
"""What replaying a long ledger costs, per event, on this machine.

Builds (once; reused when --dir already holds it) a data directory with ONE member of N events:
a join, then `earn --from` a CSV of N-1 rows with increasing `at` over about two years, in varied
categories and amounts, every ref unique, so that most points expire along the way. Then times,
as whole processes:

- `bonuscli balance PHONE --json --at <after the last event>` with every derived file removed
  before each run (<dir>/cache and <dir>/locks deleted: a full replay), and again with the
  derived files the first run left (checkpoint, catalog cache): labelled separately;
- `bonuscli --version` and `bonuscli calc 500 --category mobile --tenure-months 13`, the
  start-up floors;

and prints the medians and µs per event = (balance - calc floor) / N.

    python benchmarks/replay.py --events 20000 --dir /tmp/replay-20k
    python benchmarks/replay.py --dir /tmp/replay-100k                       # 100,000 events
    python benchmarks/replay.py --dir /tmp/replay-100k --env PYTHONPATH=/path/to/bonuscli-0.1.0   # the release
    python benchmarks/replay.py --dir /tmp/replay-100k --decoders            # JSON decoders, µs per line

Standard library only; bonuscli is only ever run as `PYTHON -m bonuscli` in a subprocess, from an
empty working directory (`-m` puts the working directory first on sys.path, ahead of PYTHONPATH,
so running from a checkout would always measure that checkout). PYTHONDONTWRITEBYTECODE is
removed from the subprocesses' environment (compiling on every start would be measured
otherwise); bytecode goes under --pycache-prefix so that measuring a read-only checkout writes
nothing into it. A script, not a test: timings never belong in the unit tests.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PHONE = "9990000777"
REGION = "RU-MOW"
START = dt.datetime(2023, 1, 9, 9, 0, tzinfo=dt.timezone(dt.timedelta(hours=3)))
SPAN = dt.timedelta(days=730)                      # ~2 years: 12-month lots, so about half expire
CALC = ["calc", "500", "--category", "mobile", "--tenure-months", "13"]
# (category, smallest, largest amount in RUB): every earning category of the shipped catalog
CATEGORIES = [
    ("mobile", 100, 1500), ("mobile", 100, 1500), ("mobile_internet", 50, 900),
    ("home_internet", 300, 1200), ("home_tv", 200, 900), ("home_phone", 100, 500),
    ("mts_store", 150, 30000), ("partner_store", 100, 8000), ("taxi", 150, 2500),
    ("in_app", 30, 1500), ("card", 50, 6000), ("card", 50, 6000),
]


# ---------------------------------------------------------------- running bonuscli


class Target:
    """The interpreter and environment under measurement."""

    def __init__(self, python: str, env_pairs: list[str], pycache_prefix: str, workdir: Path):
        self.python = python
        env = dict(os.environ)
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        for k in ("BONUSCLI_DATA_DIR", "BONUSCLI_NOW", "BONUSCLI_CATALOG", "BONUSCLI_FAULT", "BONUSCLI_FAULT_MODE"):
            env.pop(k, None)
        if pycache_prefix:
            env["PYTHONPYCACHEPREFIX"] = pycache_prefix
        self.given = []
        for pair in env_pairs:
            key, sep, value = pair.partition("=")
            if not sep or not key:
                raise SystemExit(f"--env wants KEY=VALUE, got {pair!r}")
            env[key] = value
            self.given.append(pair)
        self.env = env
        self.cwd = workdir

    def run(self, args, check=True, **kw) -> subprocess.CompletedProcess:
        p = subprocess.run([self.python, "-m", "bonuscli", *map(str, args)], env=self.env, cwd=self.cwd,
                           capture_output=True, **kw)
        if check and p.returncode != 0:
            err = p.stderr.decode(errors="replace") if isinstance(p.stderr, bytes) else p.stderr
            raise SystemExit(f"failed (exit {p.returncode}): bonuscli {' '.join(map(str, args))}\n{err}")
        return p

    def timed(self, args) -> float:
        start = time.perf_counter()
        p = subprocess.run([self.python, "-m", "bonuscli", *map(str, args)], env=self.env, cwd=self.cwd,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        elapsed = time.perf_counter() - start
        if p.returncode != 0:
            raise SystemExit(f"failed (exit {p.returncode}): bonuscli {' '.join(map(str, args))}\n"
                             f"{p.stderr.decode(errors='replace')}")
        return elapsed

    def python_snippet(self, code: str, stdin: bytes = b"") -> str:
        p = subprocess.run([self.python, "-c", code], env=self.env, cwd=self.cwd, input=stdin, capture_output=True)
        if p.returncode != 0:
            raise SystemExit(f"{self.python} -c ... failed:\n{p.stderr.decode(errors='replace')}")
        return p.stdout.decode()


# ---------------------------------------------------------------- the data directory


def ledger_path(data: Path) -> Path:
    return data / "ledgers" / f"{PHONE}.jsonl"


def count_lines(path: Path) -> int:
    n = 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            n += block.count(b"\n")
    return n


def last_line(path: Path) -> bytes:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - 65536))
        return f.read().rstrip(b"\n").rsplit(b"\n", 1)[-1]


def nth_line(path: Path, n: int) -> bytes:
    with open(path, "rb") as f:
        for i, line in enumerate(f, 1):
            if i == n:
                return line.rstrip(b"\n")
    raise SystemExit(f"{path} has fewer than {n} lines")


def write_rows(path: Path, n_rows: int, seed: int) -> str:
    """The CSV of n_rows earns for PHONE; returns the `at` of the last row."""
    rng = random.Random(seed)
    step = max(1, int((SPAN - dt.timedelta(hours=1)).total_seconds()) // max(1, n_rows))
    at = START + dt.timedelta(hours=1)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["phone", "amount", "category", "ref", "at"])
        for i in range(1, n_rows + 1):
            cat, lo, hi = rng.choice(CATEGORIES)
            kopecks = rng.randint(lo * 100, hi * 100)
            w.writerow([PHONE, f"{kopecks // 100}.{kopecks % 100:02d}", cat, f"rp{i:08d}", at.isoformat()])
            last = at
            at += dt.timedelta(seconds=max(1, rng.randint(step * 3 // 4, step * 5 // 4)))
    return last.isoformat()


def build(target: Target, data: Path, events: int, seed: int) -> dict:
    """Reuse data/ when it holds PHONE's ledger of exactly `events` lines; else build it."""
    led = ledger_path(data)
    if led.exists():
        n = count_lines(led)
        if n != events:
            raise SystemExit(f"{led} has {n} lines, not {events}: give another --dir (or delete that one)")
        return {"built": False, "seconds": None}
    if data.exists() and any(data.iterdir()):
        raise SystemExit(f"{data} exists and is not a data directory this script built: give another --dir")
    if data.exists():
        data.rmdir()          # let `join` create it, with the modes it wants
    data.parent.mkdir(parents=True, exist_ok=True)
    rows = data.parent / f".{data.name}-rows.csv"
    last_at = write_rows(rows, events - 1, seed)
    print(f"building {events:,} events for {PHONE} in {data} (join + earn --from, {rows.stat().st_size / 1e6:.1f} MB CSV)",
          flush=True)
    start = time.perf_counter()
    target.run(["--data-dir", data, "join", PHONE, "--region", REGION, "--customer-since", "2021-06-01",
                "--at", START.isoformat(), "--json"])
    joined = time.perf_counter()
    p = target.run(["--data-dir", data, "earn", "--from", rows, "--at", last_at, "--json"], check=False)
    done = time.perf_counter()
    try:
        summary = json.loads(p.stdout)
    except ValueError:
        summary = None
    if p.returncode != 0 or not summary or summary.get("applied") != events - 1:
        raise SystemExit(f"earn --from did not apply every row (exit {p.returncode}):\n"
                         f"{p.stdout.decode(errors='replace')[:2000]}\n{p.stderr.decode(errors='replace')[-2000:]}")
    rows.unlink()
    n = count_lines(ledger_path(data))
    if n != events:
        raise SystemExit(f"the ledger has {n} lines, expected {events}")
    return {"built": True, "seconds": done - start, "batch_seconds": done - joined}


def clean(data: Path):
    for name in ("cache", "locks"):
        shutil.rmtree(data / name, ignore_errors=True)


def derived_files(data: Path) -> list[str]:
    out = []
    for name in ("cache", "locks"):
        root = data / name
        if root.exists():
            for p in sorted(root.rglob("*")):
                if p.is_file():
                    out.append(f"{p.relative_to(data)} ({p.stat().st_size / 1e6:.2f} MB)")
    return out


# ---------------------------------------------------------------- the machine


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load() -> str:
    try:
        return "/".join(f"{x:.2f}" for x in os.getloadavg())
    except (AttributeError, OSError):
        return "n/a"


def describe(target: Target) -> dict:
    code = ("import json, platform, sys, bonuscli; print(json.dumps({'python': platform.python_implementation() + ' ' + "
            "platform.python_version(), 'executable': sys.executable, 'bonuscli': bonuscli.__version__, "
            "'from': bonuscli.__file__}))")
    return json.loads(target.python_snippet(code))


# ---------------------------------------------------------------- decoders

DECODERS = r'''
import json, sys, timeit
line = sys.stdin.buffer.read()
text = line.decode()
rows = []
def bench(name, given, fn):
    t = timeit.Timer(fn)
    number, _ = t.autorange()
    best = min(t.repeat(5, number)) / number
    rows.append({"decoder": name, "input": given, "us": best * 1e6})
bench("json.loads", "bytes", lambda: json.loads(line))
bench("json.loads", "str", lambda: json.loads(text))
try:
    import orjson
    assert orjson.loads(line) == json.loads(line)
    bench("orjson.loads " + orjson.__version__, "bytes", lambda: orjson.loads(line))
except ImportError:
    rows.append({"decoder": "orjson.loads", "input": "bytes", "us": None})
try:
    import msgspec
    assert msgspec.json.decode(line) == json.loads(line)
    bench("msgspec.json.decode " + msgspec.__version__, "bytes", lambda: msgspec.json.decode(line))
except ImportError:
    rows.append({"decoder": "msgspec.json.decode", "input": "bytes", "us": None})
print(json.dumps(rows))
'''


def decoders(target: Target, data: Path, events: int):
    led = ledger_path(data)
    line = nth_line(led, max(2, events // 2))
    kind = json.loads(line).get("type")
    print(f"line      {led}:{max(2, events // 2)} ({kind}, {len(line)} bytes)")
    print(f"          {line.decode()[:160]}{'...' if len(line) > 160 else ''}")
    rows = json.loads(target.python_snippet(DECODERS, line))
    print()
    print(f"{'decoder':<28} {'input':<6} {'µs/line':>9} {'ratio':>7} {'s per ' + format(events, ',') + ' lines':>20}")
    base = rows[0]["us"]
    for r in rows:
        if r["us"] is None:
            print(f"{r['decoder']:<28} {r['input']:<6} {'-':>9}   (not importable by {target.python})")
            continue
        print(f"{r['decoder']:<28} {r['input']:<6} {r['us']:>9.3f} {r['us'] / base:>6.2f}x {r['us'] * events / 1e6:>20.3f}")
    print("\n(timeit: best of 5 repeats, each long enough for ~0.2 s; decoding only, no replay)")


# ---------------------------------------------------------------- main


def median_line(label: str, times: list[float]) -> str:
    return (f"{label:<58} median {statistics.median(times):8.3f} s   "
            f"(min {min(times):.3f}, max {max(times):.3f}, {len(times)} runs)")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", type=Path, help="the data directory to build or reuse (default: a temporary one, deleted)")
    ap.add_argument("--events", type=int, default=100_000, help="events in the member's ledger (default 100,000)")
    ap.add_argument("--runs", type=int, default=5, help="timed runs of each command (median; default 5)")
    ap.add_argument("--python", default=sys.executable, help="the interpreter that runs bonuscli (default: this one)")
    ap.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                    help="set in bonuscli's environment (repeatable), e.g. PYTHONPATH=/path/to/bonuscli-0.1.0")
    ap.add_argument("--pycache-prefix", default=os.path.join(tempfile.gettempdir(), "bonuscli-replay-pycache"),
                    help="PYTHONPYCACHEPREFIX for bonuscli ('' writes bytecode beside the sources)")
    ap.add_argument("--seed", type=int, default=20250301, help="seed of the generated rows")
    ap.add_argument("--decoders", action="store_true",
                    help="instead: µs per line to decode one ledger line with json, orjson, msgspec")
    args = ap.parse_args(argv)
    if args.events < 2 or args.runs < 1:
        ap.error("--events must be at least 2 and --runs at least 1")

    workdir = Path(tempfile.mkdtemp(prefix="bonuscli-replay-cwd-"))
    tmp_data = None
    try:
        if args.dir is None:
            tmp_data = Path(tempfile.mkdtemp(prefix="bonuscli-replay-"))
            data = tmp_data / "data"
        else:
            data = args.dir.resolve()
        target = Target(args.python, args.env, args.pycache_prefix, workdir)
        who = describe(target)
        print(f"machine   {platform.platform()}; {cpu_model()}; {os.cpu_count()} cores "
              f"({len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else '?'} usable); load {load()}")
        print(f"python    {who['python']} ({who['executable']})")
        print(f"bonuscli  {who['bonuscli']} from {Path(who['from']).parent}"
              f"{'  [env ' + ' '.join(target.given) + ']' if target.given else ''}")
        built = build(target, data, args.events, args.seed)
        led = ledger_path(data)
        size = led.stat().st_size
        if built["built"]:
            print(f"ledger    {args.events:,} events, {size / 1e6:.1f} MB, built in {built['seconds']:.1f} s "
                  f"(earn --from: {(args.events - 1) / built['batch_seconds']:,.0f} rows/s)")
        else:
            print(f"ledger    {args.events:,} events, {size / 1e6:.1f} MB, reused from {data}")
        if args.decoders:
            decoders(target, data, args.events)
            return 0

        last_at = dt.datetime.fromisoformat(json.loads(last_line(led))["at"])
        at = (last_at + dt.timedelta(hours=1)).isoformat()
        balance = ["--data-dir", data, "balance", PHONE, "--json", "--at", at]

        # warm-up: bytecode, page cache; the balance also checks the answer
        clean(data)
        target.timed(["--version"])
        target.timed(CALC)
        answer = json.loads(target.run(balance, text=True).stdout)
        print(f"balance   --at {at}: available {answer.get('available')}, next_expiry {answer.get('next_expiry')}")
        print(f"load      before the timed runs {load()}", flush=True)

        t_cold, t_version, t_calc = [], [], []
        for i in range(args.runs):          # round-robin, so a burst of load hits every command alike
            clean(data)
            t_cold.append(target.timed(balance))
            t_version.append(target.timed(["--version"]))
            t_calc.append(target.timed(CALC))
            print(f"  run {i + 1}/{args.runs}: balance {t_cold[-1]:.3f} s, --version {t_version[-1]:.3f} s, "
                  f"calc {t_calc[-1]:.3f} s", flush=True)
        clean(data)
        first = target.timed(balance)       # replays and leaves its derived files
        left = derived_files(data)
        t_warm = [target.timed(balance) for _ in range(args.runs)]
        load_after = load()

        floor = statistics.median(t_calc)
        cold = statistics.median(t_cold)
        print()
        print(f"N         {args.events:,} events (1 member)")
        print(median_line("bonuscli --version (start-up floor)", t_version))
        print(median_line("bonuscli calc 500 --category mobile ... (start-up floor)", t_calc))
        print(median_line("balance, derived files deleted before each run", t_cold))
        print(median_line("balance, derived files present (run after a first run)", t_warm))
        print(f"{'  (that first run, which wrote them)':<58}        {first:8.3f} s")
        print(f"{'  derived files it left':<58} {', '.join(left) if left else '(none)'}")
        print(f"per event (balance, deleted - calc floor) / N = {(cold - floor) / args.events * 1e6:.1f} µs"
              f"   [(balance - --version floor) / N = {(cold - statistics.median(t_version)) / args.events * 1e6:.1f} µs]")
        print(f"load      after {load_after}")
        return 0
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        if tmp_data is not None:
            shutil.rmtree(tmp_data, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
