"""bonuscli's speed and memory, side by side with the floors and with hledger / beancount.

    python benchmarks/perf.py [--runs 7] [--work DIR] [--quick] [--skip-million]

Prints the machine, then every figure of issue 18 ("Speed at the floor") next to its target
and the ratio. A ratio against another program is the median of runs made in pairs, side by
side (A, B, A, B, ...), so both see the same load. Data directories are generated with
benchmarks/generate.py (seeded) under --work and reused on the next run. hledger and
bean-check are timed where installed (they are not dependencies). Nothing here is a test:
figures depend on the machine and its load, which are printed too.
"""

from __future__ import annotations

import argparse
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

ROOT = Path(__file__).resolve().parent.parent
ENV = dict(os.environ)
ENV.pop("PYTHONDONTWRITEBYTECODE", None)
ENV.pop("BONUSCLI_CATALOG", None)
ENV["PYTHONPATH"] = str(ROOT)
PY = sys.executable
AT = "2026-01-01"

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

RESULTS: list = []


def run(cmd, env=None, before=None):
    """Wall seconds of one run (`before`: called first, untimed)."""
    if before:
        before()
    t = time.perf_counter()
    p = subprocess.run(cmd, env=env or ENV, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE)
    took = time.perf_counter() - t
    if p.returncode not in (0, 1):
        sys.exit(f"failed ({p.returncode}): {' '.join(map(str, cmd))}\n{p.stderr.decode()[-2000:]}")
    return took


def median(cmd, runs, env=None, before=None):
    run(cmd, env, before)  # warm-up: bytecode and page cache
    return statistics.median(run(cmd, env, before) for _ in range(runs))


def pair(a, b, runs, env_a=None, env_b=None, before_a=None):
    """Medians of `a` and `b` run alternately, after one warm-up each."""
    run(a, env_a, before_a)
    run(b, env_b)
    ta, tb = [], []
    for _ in range(runs):
        ta.append(run(a, env_a, before_a))
        tb.append(run(b, env_b))
    return statistics.median(ta), statistics.median(tb)


def bonus(*args):
    return [PY, "-m", "bonuscli", *map(str, args)]


def row(name, value, unit, target="", ratio=None, ok=None):
    r = "" if ratio is None else f"{ratio:.3f}"
    mark = "" if ok is None else ("met" if ok else "MISSED")
    print(f"{name:<66} {value:>10.3f} {unit:<6} {target:<16} {r:>8} {mark}", flush=True)
    RESULTS.append((name, value, unit, target, r, mark))


def peak(cmd, env=None):
    """(wall seconds, peak RSS in MiB of the largest process of the run: the command or a worker)."""
    code = ("import resource,subprocess,sys,time;t=time.perf_counter();"
            "p=subprocess.run(sys.argv[1:],stdout=subprocess.DEVNULL,stderr=subprocess.DEVNULL);"
            "print(time.perf_counter()-t,resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss/1024,p.returncode)")
    out = subprocess.run([PY, "-c", code, *map(str, cmd)], env=env or ENV, capture_output=True, text=True)
    secs, mib, rc = out.stdout.split()
    if int(rc) not in (0, 1):
        sys.exit(f"failed ({rc}): {' '.join(map(str, cmd))}")
    return float(secs), float(mib)


def generate(work: Path, name, members, events, **extra):
    d = work / name
    if not (d / "ledgers").is_dir():
        args = [PY, str(ROOT / "benchmarks" / "generate.py"), str(d), "--members", str(members), "--events", str(events)]
        for k, v in extra.items():
            args += [f"--{k}", str(v)]
        subprocess.run(args, env=ENV, check=True, stdout=subprocess.DEVNULL)
    return d


def batch_file(path: Path, rows: int, members: int) -> Path:
    """`rows` earn rows over `members` members, dated through January 2026 in file order."""
    if path.exists():
        return path
    rnd = random.Random(5)
    cats = ["mobile", "mobile_internet", "home_internet", "home_tv", "home_phone", "mts_store", "partner_store",
            "taxi", "in_app", "card"]
    with open(path, "w") as f:
        f.write("phone,amount,category,ref,at\n")
        for i in range(rows):
            sec = 86400 + i * (27 * 86400) // rows
            f.write(f"9{rnd.randrange(members):09d},{rnd.randrange(100, 500000) / 100},{rnd.choice(cats)},b{i},"
                    f"2026-01-{1 + sec // 86400:02d}T{sec % 86400 // 3600:02d}:{sec % 3600 // 60:02d}:{sec % 60:02d}\n")
    return path


def _new_files(args):
    """One process's part of `fs_ceiling`: what a new ledger costs the file system, without bonuscli."""
    import ctypes

    d, lo, hi = args
    syncfs = getattr(ctypes.CDLL(None), "syncfs", None)
    fd0 = os.open(d, os.O_RDONLY)
    for i in range(lo, hi):
        tmp = f"{d}/.{i}.new"
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, b'{"v":2,"id":"x","type":"join"}\n' * 3)
        os.close(fd)
        os.link(tmp, f"{d}/{i:010d}.jsonl")
        os.unlink(tmp)
        if i % 64 == 63 and syncfs:
            syncfs(fd0)
    if syncfs:
        syncfs(fd0)
    os.close(fd0)


def fs_ceiling(work: Path, n: int, procs: int) -> float:
    """New files a second that this file system allows with `procs` processes, each file created under
    a temporary name, written, linked into place and unlinked, one `syncfs` per 64 (what `join --from`
    asks of it per new member, with no Python of bonuscli): the ceiling of the join figure."""
    import multiprocessing

    d = work / "fs-ceiling"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir()
    step = n // procs
    t = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(procs) as pool:
        pool.map(_new_files, [(str(d), k * step, (k + 1) * step) for k in range(procs)])
    secs = time.perf_counter() - t
    shutil.rmtree(d, ignore_errors=True)
    return n / secs


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "bonuscli-bench"))
    ap.add_argument("--quick", action="store_true", help="a tenth of the data, for a smoke run")
    ap.add_argument("--skip-million", action="store_true", help="leave out the 1,000,000-row batch")
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    scale = 10 if a.quick else 1
    cpus = os.cpu_count() or 1
    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor() or "?"
    print(f"machine: {platform.platform()} | {model} | {cpus} CPUs | load {os.getloadavg()[0]:.2f} | "
          f"Python {platform.python_version()} | {time.strftime('%Y-%m-%d %H:%M')}")
    hledger, beancheck = shutil.which("hledger"), shutil.which("bean-check")
    print(f"hledger: {hledger or 'not installed (skipped)'} | bean-check: {beancheck or 'not installed (skipped)'}")
    print(f"{'measure':<66} {'value':>10} {'unit':<6} {'target':<16} {'ratio':>8}")

    # ---- start-up, against a minimal Click app
    app = work / "click_app.py"
    app.write_text(CLICK_APP)
    data = work / "startup-data"
    shutil.rmtree(data, ignore_errors=True)
    env = dict(ENV, BONUSCLI_DATA_DIR=str(data), BONUSCLI_NOW="2025-03-01T12:00+03:00")
    subprocess.run(bonus("join", "9161234567", "--region", "RU-MOW"), env=env, stdout=subprocess.DEVNULL, check=True)
    row("python -c pass (floor)", median([PY, "-c", "pass"], a.runs, env), "s")
    click_cmd = [PY, str(app), "hello"]
    for name, cmd, target in [
        ("bonuscli --version", bonus("--version"), 1.15),
        ("bonuscli balance PHONE (small directory)", bonus("balance", "9161234567"), 1.3),
        ("bonuscli calc 500 --category mobile --tenure-months 13",
         bonus("calc", "500", "--category", "mobile", "--tenure-months", "13"), 1.3),
        ("bonuscli catalog minutes_30", bonus("catalog", "minutes_30"), 1.3),
    ]:
        t, c = pair(cmd, click_cmd, a.runs, env, env)
        row(f"{name} / Click app ({c:.3f} s)", t, "s", f"<= {target}x", t / c, t / c <= target)

    # ---- one member with 100,000 events
    n = 100_000 // scale
    one = generate(work, f"one-{n}", 1, n, journal=work / f"one-{n}.journal", beancount=work / f"one-{n}.beancount")
    env1 = dict(ENV, BONUSCLI_DATA_DIR=str(one))
    bal = bonus("balance", "9000000000", "--at", AT)

    def no_derived():
        shutil.rmtree(one / "cache", ignore_errors=True)

    if hledger:
        hcmd = [hledger, "-f", str(work / f"one-{n}.journal"), "balance"]
        runs = max(3, a.runs // 2)
        cold, h = pair(bal, hcmd, runs, env1, ENV, before_a=no_derived)
        row(f"balance of a {n}-event member, no derived file / hledger ({h:.2f} s)", cold, "s", "<= 0.2",
            cold / h, cold / h <= 0.2)
        run(bal, env1)  # builds the snapshot
        warm, h = pair(bal, hcmd, runs, env1, ENV)
        row(f"the same with its derived files / hledger ({h:.2f} s)", warm, "s", "<= 0.067", warm / h, warm / h <= 0.067)
    else:
        row(f"balance of a {n}-event member, no derived file", median(bal, 3, env1, no_derived), "s")
        row(f"the same with its derived files", median(bal, a.runs, env1), "s")
    if beancheck:
        row(f"  (bean-check --no-cache on the same {n} transactions)",
            median([beancheck, "--no-cache", str(work / f"one-{n}.beancount")], 3), "s")

    # ---- batch: 100,000 rows over 10,000 members, then 1,000,000
    members, rows = 10_000 // scale, 100_000 // scale
    base = generate(work, f"dir-{members}-joined", members, members)
    mem = {}
    for count in (rows, 10 * rows):
        if count > rows and a.skip_million:
            break
        csv = batch_file(work / f"batch-{count}.csv", count, members)
        for jobs in (("1", str(cpus)) if count == rows else (str(cpus),)):
            target = work / f"batch-run-{jobs}"
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(base, target)
            envb = dict(ENV, BONUSCLI_DATA_DIR=str(target))
            secs, mib = peak(bonus("earn", "--from", csv, "--jobs", jobs, "--at", AT, "--json"), envb)
            mem[count] = mib
            row(f"earn --from: {count} rows / {members} members, --jobs {jobs}", count / secs, "row/s",
                ">= 25000", None, count / secs >= 25000)
            row(f"  largest process's peak memory, --jobs {jobs}", mib, "MiB", "<= 150", None, mib <= 150)
            if count == rows:
                secs2, _ = peak(bonus("earn", "--from", csv, "--jobs", jobs, "--at", AT, "--json"), envb)
                row(f"  the same file again (every row a duplicate), --jobs {jobs}", count / secs2, "row/s")
    if 10 * rows in mem:
        grow = mem[10 * rows] / mem[rows]
        row(f"  memory at {10 * rows} rows / at {rows} rows", grow, "x", "flat (<= 1.1)", None, grow <= 1.1)

    # ---- the whole directory: 10,000 members, 100,000 events
    d = generate(work, f"dir-{members}-{rows}", members, rows, journal=work / f"dir-{rows}.journal",
                 beancount=work / f"dir-{rows}.beancount")
    envd = dict(ENV, BONUSCLI_DATA_DIR=str(d))
    chk = bonus("check", "--ledgers", "--at", AT)
    if hledger:
        c, h = pair(chk, [hledger, "-f", str(work / f"dir-{rows}.journal"), "balance"], 3, envd, ENV)
        row(f"check --ledgers, {members} members / {rows} events / hledger ({h:.2f} s)", c, "s", "<= 0.2", c / h,
            c / h <= 0.2)
    if beancheck:
        c, b = pair(chk, [beancheck, "--no-cache", str(work / f"dir-{rows}.beancount")], 3, envd, ENV)
        row(f"check --ledgers / bean-check --no-cache ({b:.2f} s)", c, "s", "<= 0.1", c / b, c / b <= 0.1)
    c1 = median(bonus("check", "--ledgers", "--at", AT, "--jobs", "1"), 3, envd)
    row(f"check --ledgers, --jobs 1", c1, "s")
    rep = median(bonus("report", "--at", AT), 3, envd)
    rep1 = median(bonus("report", "--at", AT, "--jobs", "1"), 3, envd)
    row(f"report, {members} members, all cores", rep, "s")
    row(f"report, {members} members, --jobs 1", rep1, "s", "", rep1 / rep)

    # ---- join --from: new members, one row each, into an empty data directory
    joins = work / f"joins-{members}.csv"
    if not joins.exists():
        with open(joins, "w") as f:
            f.write("phone,region,method,customer_since,at\n")
            for i in range(members):
                f.write(f"95{i:08d},RU-MOW,{['sms', 'store', 'app', 'web'][i % 4]},2024-0{1 + i % 9}-01,"
                        f"2025-03-01T{10 + i % 10}:{i % 60:02d}\n")
    target = work / "join-run"
    shutil.rmtree(target, ignore_errors=True)
    secs, mib = peak(bonus("join", "--from", joins, "--jobs", str(cpus), "--json"), dict(ENV, BONUSCLI_DATA_DIR=str(target)))
    ceiling = fs_ceiling(work, members, cpus)
    row(f"join --from: {members} new members, --jobs {cpus}", members / secs, "row/s", ">= 3000", None,
        members / secs >= 3000)
    row(f"  the file system's ceiling: {members} new files, {cpus} processes, no bonuscli", ceiling, "file/s", "",
        members / secs / ceiling)
    row(f"  largest process's peak memory", mib, "MiB", "<= 150", None, mib <= 150)

    # ---- diff OLD NEW --ledgers (mobile 5 -> 4 RUB a point) against check --ledgers, two sizes
    new = work / "mobile-4.yaml"
    text = (ROOT / "catalog.yaml").read_text()
    new.write_text(text.replace("mobile: {rub_per_point: 5,", "mobile: {rub_per_point: 4,"))
    for size, events in ((1000 // scale, 10_000 // scale), (members, rows)):
        dd = generate(work, f"dir-{size}-{events}", size, events)
        envx = dict(ENV, BONUSCLI_DATA_DIR=str(dd))
        dcmd = bonus("diff", ROOT / "catalog.yaml", new, "--ledgers", "--at", AT, "--json")
        t_diff, t_chk = pair(dcmd, bonus("check", "--ledgers", "--at", AT), 3, envx, envx)
        row(f"diff OLD NEW --ledgers, {size} members / check --ledgers ({t_chk:.2f} s)", t_diff, "s", "<= 2.5",
            t_diff / t_chk, t_diff / t_chk <= 2.5)
    print(f"load after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
