"""`diff --ledgers` for people (CLI.md `diff`, issue 24 item 4): `impact.changed` (how many members'
available points change), `--changed-only` (only those members listed; `total` and `changed` still
over every member, in every format), and a table that shows the total and the count before the rows.

The program (through the CLI, over a year), under a NEW catalog where mobile earns 1 point per
4 RUB instead of 5:

  P1  RU-MOW  2024-03-01 join (150); 2024-04-01 earn 1000 mobile: 200 | 250; 2024-05-01 gift 100 to P5
  P2  RU-MOW  2024-03-02 join: nothing else                                              (unchanged)
  P3  RU-MOW  2024-03-03 join; earn 3000 mts_store: 1000 under both                       (unchanged)
  P4  RU-MOW  2024-03-04 join; earn 2000 mobile: 400 | 500; refund 1000 of it: 200 | 250
  P5  RU-MOW  2024-03-05 join; accepts P1's gift of 100: the same under both              (unchanged)
  P6  RU-BRY  2024-03-06 join; adjust +50                                                 (unchanged)
  P7  RU-MOW  2024-03-07 join; earn 1000 mobile (200 | 250), then leaves: available 0 under both,
              earned differs: not a change of available                                (unchanged)

As of 2025-02-15 (before the first lot expires, 2025-03-01): available P1 250 | 300, P4 350 | 400.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest

from bonuscli import diff, simulate, workers
from bonuscli.ledger import FileStore

ROOT = Path(__file__).resolve().parent.parent
CATALOG = ROOT / "catalog.yaml"
P1, P2, P3, P4, P5, P6, P7 = (f"916500000{i}" for i in range(1, 8))
AT = "2025-02-15T12:00"
RATE_OLD = "    mobile: {rub_per_point: 5, tenure: true,"
RATE_NEW = "    mobile: {rub_per_point: 4, tenure: true,"


@pytest.fixture
def new_catalog(tmp_path) -> Path:
    text = CATALOG.read_text()
    assert text.count(RATE_OLD) == 1
    out = tmp_path / "new.yaml"
    out.write_text(text.replace(RATE_OLD, RATE_NEW))
    return out


@pytest.fixture
def program(run):
    for i, (phone, region) in enumerate(((P1, "RU-MOW"), (P2, "RU-MOW"), (P3, "RU-MOW"), (P4, "RU-MOW"),
                                         (P5, "RU-MOW"), (P6, "RU-BRY"), (P7, "RU-MOW"))):
        run.ok("join", phone, "--region", region, "--at", f"2024-03-0{i + 1}T10:00")
    run.ok("earn", P1, "1000", "--category", "mobile", "--ref", "p1", "--at", "2024-04-01T10:00")
    run.ok("earn", P3, "3000", "--category", "mts_store", "--ref", "p3", "--at", "2024-04-01T11:00")
    run.ok("earn", P4, "2000", "--category", "mobile", "--ref", "p4", "--at", "2024-04-02T10:00")
    run.ok("earn", P7, "1000", "--category", "mobile", "--ref", "p7", "--at", "2024-04-03T10:00")
    g = run.j("gift", P1, P5, "100", "--at", "2024-05-01T10:00")
    run.ok("accept", P5, g["gift_id"], "--at", "2024-05-02T10:00")
    run.ok("refund", P4, "p4", "--amount", "1000", "--at", "2024-06-01T10:00")
    run.ok("adjust", P6, "50", "--reason", "goodwill", "--at", "2024-07-01T10:00")
    run.ok("leave", P7, "--yes", "--at", "2024-08-01T10:00")


def available(imp) -> dict:
    return {m["phone"]: (m["available_old"], m["available_new"]) for m in imp["members"]}


EXPECTED = {P1: (250, 300), P2: (150, 150), P3: (1150, 1150), P4: (350, 400), P5: (250, 250), P6: (200, 200),
            P7: (0, 0)}


def test_changed_counts_members_whose_available_changes(run, program, new_catalog):
    imp = run.j("diff", CATALOG, new_catalog, "--ledgers", "--at", AT)["impact"]
    assert available(imp) == EXPECTED
    assert imp["changed"] == 2                                     # P1 and P4; P7's earned differs, not its available
    assert imp["changed"] == sum(1 for m in imp["members"] if m["available_old"] != m["available_new"])
    earned = {m["phone"]: (m["earned_old"], m["earned_new"]) for m in imp["members"]}
    assert earned[P7][0] != earned[P7][1]
    # nothing changes: none
    assert run.j("diff", CATALOG, CATALOG, "--ledgers", "--at", AT)["impact"]["changed"] == 0


def test_changed_only_lists_exactly_the_changed_members(run, program, new_catalog):
    whole = run.j("diff", CATALOG, new_catalog, "--ledgers", "--at", AT)
    only = run.j("diff", CATALOG, new_catalog, "--ledgers", "--changed-only", "--at", AT)
    assert available(only["impact"]) == {P1: (250, 300), P4: (350, 400)}
    assert [m["phone"] for m in only["impact"]["members"]] == [P1, P4]  # in phone order, as the whole list
    # the total and the count are over every member
    assert only["impact"]["total"] == whole["impact"]["total"]
    assert only["impact"]["total"]["members"] == 7
    assert (only["impact"]["total"]["available_old"], only["impact"]["total"]["available_new"]) == (2350, 2450)
    assert only["impact"]["changed"] == whole["impact"]["changed"] == 2
    # the rest of the document is the same
    assert dict(only, impact=None) == dict(whole, impact=None)
    assert {k: v for k, v in only["impact"].items() if k != "members"} == \
        {k: v for k, v in whole["impact"].items() if k != "members"}
    # the rows kept are the whole rows, unchanged
    assert only["impact"]["members"] == [m for m in whole["impact"]["members"] if m["phone"] in (P1, P4)]
    # nothing changes: an empty list, a total still over all
    none = run.j("diff", CATALOG, CATALOG, "--ledgers", "--changed-only", "--at", AT)["impact"]
    assert none["members"] == [] and none["changed"] == 0 and none["total"]["members"] == 7


@pytest.mark.parametrize("fmt", ["csv", "tsv"])
def test_changed_only_in_the_flat_formats(run, program, new_catalog, fmt):
    sep = "," if fmt == "csv" else "\t"
    for extra in ((), ("--table", "members")):
        r = run("diff", CATALOG, new_catalog, "--ledgers", "--changed-only", "--at", AT, "--format", fmt, *extra)
        assert r.exit_code == 0, r.stderr
        lines = r.stdout.splitlines()
        assert lines[0].split(sep)[:3] == ["phone", "available_old", "available_new"]
        assert [ln.split(sep)[:3] for ln in lines[1:]] == [[P1, "250", "300"], [P4, "350", "400"]]
    r = run("diff", CATALOG, new_catalog, "--ledgers", "--at", AT, "--format", fmt)
    assert len(r.stdout.splitlines()) == 1 + 7  # without it, every member


def test_changed_only_without_an_impact_is_bad_input(run, new_catalog):
    r = run("diff", CATALOG, new_catalog, "--changed-only")
    assert r.exit_code == 2
    assert r.stderr.startswith("error: --changed-only") and "--ledgers" in r.stderr
    r = run("diff", CATALOG, new_catalog, "--changed-only", "--json")
    assert r.exit_code == 2 and '"kind": "usage"' in r.stderr


def test_same_changed_whatever_the_jobs(run, program, new_catalog, monkeypatch):
    one = run.j("diff", CATALOG, new_catalog, "--ledgers", "--at", AT, "--jobs", "1")
    # the data-directory path of worker processes, one task per group of linked members (P1 and P5 are
    # one group, tied by the gift), merged: `changed` must be counted over the merged members
    monkeypatch.setattr(diff, "PARALLEL_FROM", 2)
    monkeypatch.setattr(workers, "MIN_CHUNK", 1)
    monkeypatch.setattr(simulate, "SERIAL_BELOW", 0)
    two = run.j("diff", CATALOG, new_catalog, "--ledgers", "--at", AT, "--jobs", "2")
    assert two == one
    assert two["impact"]["changed"] == 2
    only_two = run.j("diff", CATALOG, new_catalog, "--ledgers", "--changed-only", "--at", AT, "--jobs", "2")
    only_one = run.j("diff", CATALOG, new_catalog, "--ledgers", "--changed-only", "--at", AT, "--jobs", "1")
    assert only_two == only_one and [m["phone"] for m in only_two["impact"]["members"]] == [P1, P4]


def test_merge_counts_changed_over_the_merged_members(program, new_catalog, data_dir):
    """The parts of a parallel run, merged: `changed` over all the members, whichever part they came
    from (never the first part's count)."""
    old = diff.load_catalog(str(CATALOG))
    new = diff.load_catalog(str(new_catalog))
    now = dt.datetime.fromisoformat(AT).replace(tzinfo=old.tz)
    store = FileStore(data_dir)
    ledgers = diff.read_ledgers(store)
    parts = [diff.group_impact(old, new, {p: ledgers[p] for p in group}, now)
             for group in ([P2, P3], [P1, P5], [P4, P6, P7])]
    merged = diff.merge_impacts([d for d, _k, _u in parts], [k for _d, k, _u in parts], [u for _d, _k, u in parts])
    assert [d["changed"] for d, _k, _u in parts] == [0, 1, 1]
    assert merged["changed"] == 2
    whole = diff.impact(old, new, ledgers, now, jobs=1)
    assert merged["changed"] == whole["changed"] and merged["members"] == whole["members"]


def test_human_output_total_and_count_before_the_rows(run, program, new_catalog):
    r = run("diff", CATALOG, new_catalog, "--ledgers", "--at", AT)
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    count = next(i for i, ln in enumerate(lines) if ln.startswith("available changes for"))
    assert lines[count] == "available changes for 2 of 7 members"
    total = next(i for i, ln in enumerate(lines) if re.match(r"^total\s", ln))
    assert re.match(r"^total\s+2350\s+2450\s+\+100\s", lines[total])
    rows = [i for i, ln in enumerate(lines) if re.match(r"^9165\d{6}\s", ln)]
    assert len(rows) == 7
    assert count < total < min(rows)                          # the count, the total, then the members
    assert lines[total + 1].startswith(P1)                    # the total is the table's first row
    assert not any(re.match(r"^total\s", ln) for ln in lines[total + 1:])  # and not repeated at the end
    assert re.search(rf"^{P1}\s+250\s+300\s+\+50\s", r.stdout, re.M)
    assert re.search(rf"^{P2}\s+150\s+150\s+\+0\s", r.stdout, re.M)


def test_human_output_changed_only(run, program, new_catalog):
    r = run("diff", CATALOG, new_catalog, "--ledgers", "--changed-only", "--at", AT)
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "available changes for 2 of 7 members (only they are listed; the total counts every member)" in lines
    rows = [ln for ln in lines if re.match(r"^9165\d{6}\s", ln)]
    assert [ln.split()[0] for ln in rows] == [P1, P4]
    assert not any(re.search(r"\s\+0\s", ln) for ln in rows)
    assert any(re.match(r"^total\s+2350\s+2450\s+\+100\s", ln) for ln in lines)  # still every member


def test_scenario_changed_only(run, new_catalog):
    # a shipped scenario with mobile earns: some members' available changes under NEW, not all
    args = ("diff", CATALOG, new_catalog, "--scenario", ROOT / "scenarios" / "tenure.yaml")
    whole = run.j(*args, env={"BONUSCLI_NOW": None})["impact"]  # as of the scenario's last instant
    only = run.j(*args, "--changed-only", env={"BONUSCLI_NOW": None})["impact"]
    changed = [m for m in whole["members"] if m["available_old"] != m["available_new"]]
    assert 0 < len(changed) < len(whole["members"]), "or this proves little"
    assert only["members"] == changed and only["changed"] == whole["changed"] == len(changed)
    assert only["total"] == whole["total"]


def test_dask_engine_same_changed(run, program, new_catalog, monkeypatch):
    pytest.importorskip("distributed")
    local = run.j("diff", CATALOG, new_catalog, "--ledgers", "--changed-only", "--at", AT)
    monkeypatch.setattr(workers, "MIN_CHUNK", 1)  # a task per group of linked members: parts to merge
    dask = run.j("diff", CATALOG, new_catalog, "--ledgers", "--changed-only", "--at", AT, "--engine", "dask")
    assert dask == local
    assert dask["impact"]["changed"] == 2
