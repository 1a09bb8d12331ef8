"""bonuscli's speed and memory, side by side with the floors and with hledger / beancount.

    python benchmarks/perf.py [--runs 7] [--work DIR] [--quick]

Prints the machine, then every figure next to its target (issue "Speed and scale") and the
ratio. Data directories are generated with benchmarks/generate.py (seeded) under --work and
reused on the next run. hledger and bean-check are timed where installed (not dependencies).
Nothing here is a test: figures depend on the machine and its load, which is printed too.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENV = dict(os.environ)
ENV.pop("PYTHONDONTWRITEBYTECODE", None)
ENV["PYTHONPATH"] = str(ROOT)
PY = sys.executable

CLICK_APP = '''
import click

@click.group()
def cli():
    pass

@cli.command()
def hello():
    click.echo("hello")

cli()
'''


def timed(cmd, env=None, stdin=None):
    """(seconds, peak RSS of the child in MB, exit code)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t = time.perf_counter()
    with open(stdin, "rb") if stdin else open(os.devnull, "rb") as f:
        p = subprocess.run(cmd, env=env or ENV, stdin=f, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    took = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return took, max(after, before) / 1024, p.returncode


def median(cmd, runs, env=None):
    timed(cmd, env)  # warm-up: bytecode and page cache
    return statistics.median(timed(cmd, env)[0] for _ in range(runs))


def bonus(*args):
    return [PY, "-m", "bonuscli", *map(str, args)]


def row(name, value, unit, target=None, ratio=None, ok=None):
    t = "" if target is None else target
    r = "" if ratio is None else f"{ratio:.2f}x"
    mark = "" if ok is None else ("met" if ok else "MISSED")
    print(f"{name:<58} {value:>10.3f} {unit:<5} {t:<22} {r:>9} {mark}")


def peak_rss(cmd, env=None, stdin=None):
    """Wall seconds and peak RSS (MB) of one run, measured with a fresh child."""
    code = ("import resource,subprocess,sys,time;t=time.perf_counter();"
            "p=subprocess.run(sys.argv[1:],stdout=subprocess.DEVNULL);"
            "print(time.perf_counter()-t,resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss/1024,p.returncode)")
    with open(stdin, "rb") if stdin else open(os.devnull, "rb") as f:
        out = subprocess.run([PY, "-c", code, *cmd], env=env or ENV, stdin=f, capture_output=True, text=True)
    secs, mb, rc = out.stdout.split()
    return float(secs), float(mb), int(rc)


def generate(work: Path, name, members, events, **extra):
    d = work / name
    if not (d / "ledgers").is_dir():
        args = [PY, str(ROOT / "benchmarks" / "generate.py"), str(d), "--members", str(members), "--events", str(events)]
        for k, v in extra.items():
            args += [f"--{k}", str(v)]
        subprocess.run(args, env=ENV, check=True, stdout=subprocess.DEVNULL)
    return d


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "bonuscli-bench"))
    ap.add_argument("--quick", action="store_true", help="smaller data (1/10), for a smoke run")
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    scale = 10 if a.quick else 1
    print(f"machine: {platform.platform()} | {platform.machine()} | {os.cpu_count()} CPUs | "
          f"load {os.getloadavg()[0]:.2f} | Python {platform.python_version()}")
    hledger, beancheck = shutil.which("hledger"), shutil.which("bean-check")
    print(f"hledger: {hledger or 'not installed (skipped)'} | bean-check: {beancheck or 'not installed (skipped)'}")
    print(f"{'measure':<58} {'value':>10} {'unit':<5} {'target':<22} {'ratio':>9}")

    # ---- floors and start-up
    app = work / "click_app.py"
    app.write_text(CLICK_APP)
    data = work / "startup-data"
    shutil.rmtree(data, ignore_errors=True)
    env = dict(ENV, BONUSCLI_DATA_DIR=str(data), BONUSCLI_NOW="2025-03-01T12:00+03:00")
    subprocess.run(bonus("join", "9161234567", "--region", "RU-MOW"), env=env, stdout=subprocess.DEVNULL, check=True)
    floor = median([PY, "-c", "pass"], a.runs, env)
    click_t = median([PY, str(app), "hello"], a.runs, env)
    row("python -c pass (floor)", floor, "s")
    row("minimal Click app, one subcommand (floor)", click_t, "s")
    for name, cmd, target in [
        ("bonuscli --version", bonus("--version"), 1.15),
        ("bonuscli balance PHONE", bonus("balance", "9161234567"), 1.3),
        ("bonuscli calc 500 --category mobile --tenure-months 13",
         bonus("calc", "500", "--category", "mobile", "--tenure-months", "13"), 1.3),
        ("bonuscli catalog minutes_30", bonus("catalog", "minutes_30"), 1.3),
    ]:
        t = median(cmd, a.runs, env)
        row(name, t, "s", f"<= {target}x Click app", t / click_t, t / click_t <= target)

    # ---- one member with 100,000 events
    n = 100_000 // scale
    one = generate(work, f"one-{n}", 1, n, journal=work / f"one-{n}.journal", beancount=work / f"one-{n}.beancount")
    env1 = dict(ENV, BONUSCLI_DATA_DIR=str(one))
    phone = "9000000000"
    shutil.rmtree(one / "cache", ignore_errors=True)
    cold = timed(bonus("balance", phone, "--at", "2026-01-01"), env1)[0]
    warm = median(bonus("balance", phone, "--at", "2026-01-01"), a.runs, env1)
    redeem_t = median(bonus("forecast", phone, "--at", "2026-01-01"), a.runs, env1)
    row(f"balance, one member of {n} events, first run (builds checkpoint)", cold, "s")
    row(f"balance, one member of {n} events, checkpointed", warm, "s")
    row(f"forecast, one member of {n} events, checkpointed", redeem_t, "s")
    if hledger:
        h = median([hledger, "-f", str(work / f"one-{n}.journal"), "balance"], max(3, a.runs // 2))
        row(f"hledger balance, the same {n} transactions", h, "s", ">= 15x faster", h / warm, h / warm >= 15)
    if beancheck:
        b = median([beancheck, str(work / f"one-{n}.beancount")], 3)
        row(f"bean-check, the same {n} transactions", b, "s", "", b / warm)

    # ---- batch: 100,000 rows over 10,000 members
    members, rows = 10_000 // scale, 100_000 // scale
    base = generate(work, f"dir-{members}-joined", members, members)
    csv = work / f"batch-{rows}.csv"
    if not csv.exists():
        import random

        rnd = random.Random(5)
        cats = ["mobile", "mobile_internet", "home_internet", "home_tv", "home_phone", "mts_store", "partner_store",
                "taxi", "in_app", "card"]
        with open(csv, "w") as f:
            f.write("phone,amount,category,ref,at\n")
            for i in range(rows):
                f.write(f"9{rnd.randrange(members):09d},{rnd.randrange(100, 500000) / 100},{rnd.choice(cats)},"
                        f"b{i},2026-01-{2 + i * 27 // rows:02d}T12:00\n")
    for jobs in ("1", str(os.cpu_count() or 1)):
        target = work / f"batch-run-{jobs}"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(base, target)
        envb = dict(ENV, BONUSCLI_DATA_DIR=str(target))
        secs, mb, rc = peak_rss(bonus("earn", "--from", csv, "--jobs", jobs, "--at", "2026-01-01"), envb)
        row(f"earn --from: {rows} rows / {members} members, --jobs {jobs}", rows / secs, "row/s",
            ">= 25000 row/s", None, rows / secs >= 25000)
        row(f"  peak memory (parent; each worker is smaller), --jobs {jobs}", mb, "MB", "<= 150 MB", None, mb <= 150)
        secs2, _, _ = peak_rss(bonus("earn", "--from", csv, "--jobs", jobs, "--at", "2026-01-01"), envb)
        row(f"  the same file again (all duplicates), --jobs {jobs}", rows / secs2, "row/s")

    # ---- whole directory: 10,000 members / 100,000 events
    d = generate(work, f"dir-{members}-{rows}", members, rows, journal=work / f"dir-{rows}.journal",
                 beancount=work / f"dir-{rows}.beancount")
    envd = dict(ENV, BONUSCLI_DATA_DIR=str(d))
    chk = median(bonus("check", "--ledgers", "--at", "2026-01-01"), 3, envd)
    rep = median(bonus("report", "--at", "2026-01-01"), 3, envd)
    rep1 = median(bonus("report", "--at", "2026-01-01", "--jobs", "1"), 3, envd)
    row(f"check --ledgers, {members} members / {rows} events", chk, "s")
    row(f"report, {members} members, all cores", rep, "s")
    row(f"report, {members} members, --jobs 1", rep1, "s", "", rep1 / rep)
    if hledger:
        h = median([hledger, "-f", str(work / f"dir-{rows}.journal"), "balance"], 3)
        row("hledger balance, the same transactions", h, "s", "check >= 5x faster", h / chk, h / chk >= 5)
    if beancheck:
        b = median([beancheck, str(work / f"dir-{rows}.beancount")], 3)
        row("bean-check, the same transactions", b, "s", "check >= 10x faster", b / chk, b / chk >= 10)
    print(f"load after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
