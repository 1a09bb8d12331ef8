"""Ledgers written by the released bonuscli 0.1.0 read the same with the current code.

tests/fixtures/release-0.1.0/ledgers/ was written by the release (the story is in
make_fixture.py next to it: six members in two regions, joins by sms, web and card, a referral,
earns in several categories with the card welcome, a batch, redemptions, gifts accepted, rejected
and left to expire, a partial refund, adjustments, a member who left, and one ledger with a torn
last line). expected.json holds what the release answered as of a fixed --at. Every command here
runs on a copy of the fixture, through the CLI in a subprocess (`python -m bonuscli`, the checkout's
code unless PYTHONPATH names another bonuscli first), and must answer the same; the
ledger files must come out byte for byte as they went in.

What "the same" means: every key and value the release printed, exactly (types included, lists in
the same order and of the same length). Keys the release did not print may be added: CLI.md lets
JSON outputs grow ("add to them freely, rename none"), and the release's `report` lacks `held` and
`adjusted`, which CLI.md lists.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "release-0.1.0"
EXPECTED = json.loads((FIXTURE / "expected.json").read_text())
COMMANDS = EXPECTED["commands"]
TORN_NAME = Path(EXPECTED["torn"]).name            # e.g. 9990000003.jsonl


@pytest.fixture
def legacy_dir(tmp_path):
    """A copy of the fixture's data directory (never the fixture itself), modes as the release makes them."""
    data = tmp_path / "legacy-data"
    shutil.copytree(FIXTURE / "ledgers", data / "ledgers")
    data.chmod(0o700)
    (data / "ledgers").chmod(0o700)
    for p in (data / "ledgers").iterdir():
        p.chmod(0o600)
    return data


def bonuscli(args, cwd: Path) -> subprocess.CompletedProcess:
    """`python -m bonuscli` from a directory outside the checkout: `-m` puts the cwd first on
    sys.path, so running from ROOT would always test ROOT's code. Here the checkout comes after
    any PYTHONPATH the caller gave, so `PYTHONPATH=/path/to/bonuscli-0.1.0 pytest ...` really runs
    the release against its own fixture."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH"), str(ROOT)) if p)
    return subprocess.run([sys.executable, "-m", "bonuscli", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=120)


def ledger_bytes(data: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted((data / "ledgers").glob("*.jsonl"))}


def fixture_bytes() -> dict:
    return {p.name: p.read_bytes() for p in sorted((FIXTURE / "ledgers").iterdir())}


def parse(stdout: str, lines: bool):
    if lines:
        return [json.loads(x) for x in stdout.splitlines() if x.strip()]
    return json.loads(stdout) if stdout.strip() else None


def assert_same(expected, actual, where="$"):
    """Every key and value of `expected` in `actual`, exactly; extra keys in `actual` are allowed."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{where}: expected an object, got {actual!r}"
        missing = [k for k in expected if k not in actual]
        assert not missing, f"{where}: keys missing: {missing}"
        for k, v in expected.items():
            assert_same(v, actual[k], f"{where}.{k}")
    elif isinstance(expected, list):
        assert isinstance(actual, list), f"{where}: expected a list, got {actual!r}"
        assert len(actual) == len(expected), f"{where}: {len(actual)} items, the release had {len(expected)}"
        for i, (e, a) in enumerate(zip(expected, actual)):
            assert_same(e, a, f"{where}[{i}]")
    else:
        assert type(actual) is type(expected) and actual == expected, \
            f"{where}: {actual!r}, the release gave {expected!r}"


def check_stderr(name: str, spec: dict, stderr: str, data: Path):
    stderr = stderr.replace(str(data), "<DATA>")
    if name.startswith("check"):
        # the release names the torn line as path:line; CLI.md: problems are listed as path:line
        line = spec["stderr"].split(TORN_NAME + ":", 1)[1].split(":", 1)[0]
        assert f"{TORN_NAME}:{line}" in stderr, stderr
    elif "warning" in spec["stderr"]:
        # the release warns that it ignores the torn last line (CLI.md §3): a warning naming the file
        assert "warning" in stderr.lower() and TORN_NAME in stderr, stderr
    elif name == "report":
        # the release is silent here; a warning about the torn ledger is fine, nothing else is
        assert all(TORN_NAME in ln for ln in stderr.splitlines()), stderr
    else:
        assert stderr == "", stderr


def run_read(data: Path, name: str):
    spec = COMMANDS[name]
    r = bonuscli(["--data-dir", data, *spec["args"]], cwd=data.parent)
    assert r.returncode == spec["exit_code"], (name, r.returncode, r.stdout, r.stderr)
    check_stderr(name, spec, r.stderr, data)
    if spec["json"] is not None:
        got = parse(r.stdout, spec["args"][0] == "history")
        if spec["args"][0] == "history":
            # issue 17: history rows got unique ids; the release's `id` (shared by a join and its
            # welcome row) is now each row's `event`
            got = [dict(row, id=row["event"]) for row in got]
        assert_same(spec["json"], got, name)
    return r


def test_fixture_is_as_committed():
    """The fixture itself: only ledgers, small, one torn ledger, the release's exit code for check noted."""
    names = sorted(p.name for p in (FIXTURE / "ledgers").iterdir())
    assert names and all(n.endswith(".jsonl") for n in names)
    assert sum(p.stat().st_size for p in FIXTURE.rglob("*") if p.is_file()) < 200_000
    torn = (FIXTURE / EXPECTED["torn"]).read_bytes()
    assert not torn.endswith(b"\n")
    assert all(b.endswith(b"\n") for n, b in fixture_bytes().items() if n != TORN_NAME)
    assert COMMANDS["check --ledgers"]["exit_code"] == 3


@pytest.mark.parametrize("name", list(COMMANDS))
def test_reads_as_the_release_did(legacy_dir, name):
    run_read(legacy_dir, name)
    assert ledger_bytes(legacy_dir) == fixture_bytes()


def test_reads_change_no_ledger_and_derived_files_change_no_answer(legacy_dir):
    """Every read in a row, twice (the second time with whatever caches the first left), leaves the
    ledgers byte for byte as the release wrote them, the torn line unsealed."""
    for _ in range(2):
        for name in COMMANDS:
            run_read(legacy_dir, name)
    assert ledger_bytes(legacy_dir) == fixture_bytes()
