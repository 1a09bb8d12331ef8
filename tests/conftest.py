"""Shared fixtures: every test runs against its own data directory and a fixed clock."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from bonuscli.cli import cli

ROOT = Path(__file__).resolve().parent.parent
NOW = "2025-03-01T12:00+03:00"


@pytest.fixture(autouse=True)
def isolate(monkeypatch, tmp_path):
    """No test can touch a real home: data dir in tmp, a fixed clock, the bundled catalog."""
    data = tmp_path / "data"
    monkeypatch.setenv("BONUSCLI_DATA_DIR", str(data))
    monkeypatch.setenv("BONUSCLI_NOW", NOW)
    monkeypatch.delenv("BONUSCLI_CATALOG", raising=False)
    monkeypatch.delenv("BONUSCLI_FAULT", raising=False)
    monkeypatch.delenv("BONUSCLI_FAULT_MODE", raising=False)
    return data


@pytest.fixture
def data_dir(isolate):
    return isolate


class Run:
    """Invoke the CLI in-process; `.json` parses stdout."""

    def __call__(self, *args, input=None, env=None):
        runner = CliRunner()
        result = runner.invoke(cli, [str(a) for a in args], input=input, env=env, catch_exceptions=False)
        result.json = None
        if result.stdout.strip():
            try:
                result.json = json.loads(result.stdout)
            except ValueError:
                pass
        return result

    def ok(self, *args, **kw):
        r = self(*args, **kw)
        assert r.exit_code == 0, (args, r.exit_code, r.stdout, r.stderr)
        return r

    def in_dir(self, data):
        """`r(*args)`: the command on the data directory `data`, with --json, expected to succeed; its
        document (module-scoped fixtures build their programs with it)."""

        def r(*args):
            res = self("--data-dir", str(data), *args, "--json")
            assert res.exit_code == 0, (args, res.stdout, res.stderr)
            return res.json

        return r

    def j(self, *args, **kw):
        """Run with --json, expect exit 0, return the parsed document."""
        r = self.ok(*args, "--json", **kw)
        return r.json


@pytest.fixture
def run():
    return Run()


def subprocess_run(args, env=None, input=None, cwd=None, timeout=60):
    full = dict(os.environ)
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "bonuscli", *map(str, args)], capture_output=True, text=True,
                          env=full, input=input, cwd=cwd or ROOT, timeout=timeout)


@pytest.fixture
def sub():
    return subprocess_run
