"""`diff --ledgers` against `check --ledgers` on the same directories, at several sizes (issue 18:
diff <= 2.5x check, linear in members).

    python benchmarks/diff_scale.py [--members 1000,10000] [--runs 3] [--dir DIR]

Each size is a seeded directory of benchmarks/generate.py (N members, 10N events; made once, kept
under --dir); NEW is catalog.yaml with mobile at 4 RUB a point instead of 5. The two commands run
alternately, --runs times each, as of 2026-01-01; the medians are printed with the ratio, and the
machine line (CPUs, load average before and after) since a shared machine makes every figure noisy.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CATALOG = ROOT / "catalog.yaml"


def load() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def timed(args) -> float:
    t = time.perf_counter()
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--members", default="1000,10000")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dir", default=os.path.join(tempfile.gettempdir(), "bonuscli-diff-scale"))
    a = ap.parse_args()
    base = Path(a.dir)
    base.mkdir(parents=True, exist_ok=True)
    new = base / "new.yaml"
    text = CATALOG.read_text()
    old_rate = "mobile: {rub_per_point: 5,"
    assert text.count(old_rate) == 1
    new.write_text(text.replace(old_rate, "mobile: {rub_per_point: 4,"))
    exe = [sys.executable, "-m", "bonuscli"]
    print(f"machine: {platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}; {load()}")
    print(f"{'members':>8} {'events':>8} {'check (s)':>10} {'diff (s)':>10} {'ratio':>6}   runs (check / diff)")
    for n in [int(x) for x in a.members.split(",")]:
        data = base / f"m{n}"
        if not (data / "ledgers").is_dir():
            subprocess.run([sys.executable, str(ROOT / "benchmarks" / "generate.py"), str(data), "--members", str(n),
                            "--events", str(10 * n)], check=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
        events = sum(1 for p in (data / "ledgers").iterdir() for _ in p.open("rb"))
        check = exe + ["check", "--ledgers", "--data-dir", str(data), "--catalog", str(CATALOG), "--at", "2026-01-01"]
        diff = exe + ["diff", str(CATALOG), str(new), "--ledgers", "--data-dir", str(data), "--catalog", str(CATALOG),
                      "--at", "2026-01-01", "--json"]
        cs, ds = [], []
        for _ in range(a.runs):
            cs.append(timed(check))
            ds.append(timed(diff))
        c, d = statistics.median(cs), statistics.median(ds)
        print(f"{n:>8} {events:>8} {c:>10.2f} {d:>10.2f} {d / c:>6.2f}   "
              f"{' '.join(f'{x:.2f}' for x in cs)} / {' '.join(f'{x:.2f}' for x in ds)}", flush=True)
    print(f"after: {load()}")


if __name__ == "__main__":
    main()
