"""No library's log lines reach stderr without --debug (CLI.md §2), Dask's included: a heartbeat
traceback at shutdown was seen once in 19 runs under load (issue 24). The loggers of our own
LocalCluster's worker processes and of this process are quieted; --debug lets them through."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import ROOT

pytest.importorskip("distributed")

PROGRAM = """
import logging, sys
from bonuscli import dask_engine
dask_engine.VERBOSE = sys.argv[1] == "debug"

def leak():
    logging.getLogger("distributed.worker").error("LEAK-WORKER")
    logging.getLogger("distributed.nanny").error("LEAK-NANNY")
    return True

with dask_engine.Cluster() as c:
    assert all(c.client.run(leak).values())
    logging.getLogger("distributed.client").error("LEAK-CLIENT")
    logging.getLogger("tornado.application").error("LEAK-TORNADO")
    logging.getLogger("asyncio").error("LEAK-ASYNCIO")
print("done")
"""


def _run(mode):
    r = subprocess.run([sys.executable, "-c", PROGRAM, mode], capture_output=True, text=True, cwd=ROOT,
                       timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "done", r.stderr
    return r.stderr


def test_no_library_log_line_reaches_stderr_without_debug():
    err = _run("quiet")
    assert "LEAK" not in err, err
    assert err.strip() == "", err


def test_debug_lets_the_workers_log_lines_through():
    err = _run("debug")
    assert "LEAK-WORKER" in err and "LEAK-CLIENT" in err, err


def test_check_ledgers_on_dask_writes_nothing_on_stderr(run, tmp_path):
    data = tmp_path / "d"
    run.ok("join", "9161234567", "--region", "RU-MOW", "--data-dir", data)
    r = subprocess.run([sys.executable, "-m", "bonuscli", "check", "--ledgers", "--engine", "dask", "--data-dir",
                        str(data)], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stderr == "", r.stderr
