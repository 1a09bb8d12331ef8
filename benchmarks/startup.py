#!/usr/bin/env python3
"""Start-up cost of bonuscli against a minimal one-subcommand Click app.

STYLE.md: simple commands (`--version`, `balance`, `calc`) should start within
1.3x of a minimal Click app on the same machine. This script measures that; it
is a script, not a test (timings never belong in the unit tests).

    python benchmarks/startup.py            # 15 runs per command
    python benchmarks/startup.py --runs 40

Each command gets warm-up runs first (so the parsed-catalog cache under the
temporary data directory and the .pyc files are warm, as they are for a user), then the runs are
interleaved round-robin so that a burst of load on the machine hits every
command alike. Prints the median wall time and the ratio to the Click app.
Standard library and subprocess only.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PHONE = "9161234567"
NOW = "2025-03-01T12:00+03:00"

MINIMAL_CLICK_APP = '''\
import click


@click.group()
@click.version_option("1.0", prog_name="minimal")
def cli():
    """A minimal app."""


@cli.command()
def hello():
    """Say hello."""
    click.echo("hello")


if __name__ == "__main__":
    cli()
'''


def bonuscli_script() -> tuple[list, str]:
    """The `bonuscli` console script if one is installed, else its exact equivalent."""
    for candidate in (Path(sys.executable).parent / "bonuscli", shutil.which("bonuscli")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return [str(candidate)], "bonuscli"
    shim = "import sys; from bonuscli.cli import main; sys.exit(main())"
    return [sys.executable, "-c", shim], "bonuscli (console-script shim)"


def _load() -> str:
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except (AttributeError, OSError):
        return "n/a"


def run_once(argv, env) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(argv)}\n{proc.stderr.decode(errors='replace')}")
    return elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=15, help="timed runs per command (default 15)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed runs per command first (default 2)")
    opts = ap.parse_args()
    if opts.runs < 1:
        ap.error("--runs must be at least 1")

    py = sys.executable
    load_before = _load()
    with tempfile.TemporaryDirectory(prefix="bonuscli-bench-") as tmp:
        tmp = Path(tmp)
        app = tmp / "minimal_click_app.py"
        app.write_text(MINIMAL_CLICK_APP)
        data = tmp / "data"
        env = dict(os.environ)
        env.pop("BONUSCLI_CATALOG", None)
        # Bytecode as an installed package has it: PYTHONDONTWRITEBYTECODE would make every
        # run compile bonuscli's modules from source (but not click's, which pip compiled).
        # The .pyc files go to a temporary prefix, so the working tree stays clean.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")
        env.update({
            "BONUSCLI_DATA_DIR": str(data),
            "BONUSCLI_NOW": NOW,
            "PYTHONPATH": str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""),
        })
        script, script_label = bonuscli_script()
        # One member to look at: join first (not timed).
        run_once([py, "-m", "bonuscli", "join", PHONE, "--region", "RU-MOW"], env)

        cases = [
            ("python -c pass", [py, "-c", "pass"]),
            ("minimal Click app (1 subcommand)", [py, str(app), "hello"]),
            ("python -m bonuscli --version", [py, "-m", "bonuscli", "--version"]),
            ("python -m bonuscli catalog minutes_30", [py, "-m", "bonuscli", "catalog", "minutes_30"]),
            ("python -m bonuscli calc 500 --category mobile --tenure-months 13",
             [py, "-m", "bonuscli", "calc", "500", "--category", "mobile", "--tenure-months", "13"]),
            (f"{script_label} balance {PHONE}", script + ["balance", PHONE]),
        ]
        for _label, argv in cases:
            for _ in range(opts.warmup):
                run_once(argv, env)
        times = {label: [] for label, _ in cases}
        for _ in range(opts.runs):
            for label, argv in cases:
                times[label].append(run_once(argv, env))

    medians = {label: statistics.median(ts) for label, ts in times.items()}
    base = medians["minimal Click app (1 subcommand)"]
    print(f"machine: {platform.platform()} | {platform.machine() or '?'} | {os.cpu_count()} CPUs")
    print(f"python:  {platform.python_implementation()} {platform.python_version()} ({py})")
    print(f"bonuscli: {script[0] if len(script) == 1 else 'console-script shim'}; data dir: a temporary one "
          f"with 1 member; catalog cache warm ({opts.warmup} warm-up runs)")
    print(f"runs:    {opts.runs} per command, interleaved; median wall time; bytecode cached")
    print(f"load:    {load_before} before, {_load()} after (1-minute load average; compare with the CPU count)")
    print()
    width = max(len(label) for label in medians)
    print(f"{'command'.ljust(width)}  {'median ms':>9}  {'min ms':>7}  {'vs Click app':>12}")
    for label, _ in cases:
        m = medians[label]
        print(f"{label.ljust(width)}  {m * 1000:9.1f}  {min(times[label]) * 1000:7.1f}  {m / base:11.2f}x")
    print()
    print("STYLE.md target: --version, calc and balance within 1.3x of the minimal Click app.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
