"""Derived files that `check --ledgers` verifies (issue 23, scenarios 3 and 4; CLI.md §3).

A snapshot (`cache/members/<phone>.json`) must be exactly what a replay from scratch of the lines it
names gives, and the catalog cache exactly what a parse of the catalog file gives. One that is not is
`derived-file-forged` (exit 3, naming the file, saying that deleting it is safe); a true one never is,
whatever commands made it (a read, a write, a resume of an older snapshot)."""

from __future__ import annotations

import json

import pytest

from bonuscli import service

from test_snapshots import A, B, long_member


def _snapshot(run, tmp_path, monkeypatch):
    monkeypatch.setattr(service, "SNAPSHOT_MIN", 5)
    data = tmp_path / "d"
    long_member(run, data)
    run.ok("balance", A, "--at", "2026-03-01", "--data-dir", data)  # writes the snapshot
    snap = data / "cache" / "members" / f"{A}.json"
    assert snap.exists()
    return data, snap


def _forge(snap, change):
    doc = json.loads(snap.read_bytes())
    change(doc["state"])
    snap.write_text(json.dumps(doc))


def _error(result):
    return json.loads(result.stderr.strip().splitlines()[-1])["error"]


def check(run, data, at="2026-03-05"):
    return run("check", "--ledgers", "--json", "--at", at, "--data-dir", data)


def test_true_snapshots_pass_check_after_reads_writes_and_resumes(run, tmp_path, monkeypatch):
    """No false alarm: snapshots written by reads, then resumed and written again after more lines,
    are what a replay gives (check verifies each one it finds)."""
    data, snap = _snapshot(run, tmp_path, monkeypatch)
    r = check(run, data)
    assert r.exit_code == 0, r.stdout
    for i in range(8):  # each write resumes the snapshot, each read may save a newer one
        run.ok("earn", A, str(100 + i), "--category", "mobile", "--ref", f"more{i}", "--at", f"2026-03-{10 + i}",
               "--data-dir", data)
        run.ok("balance", A, "--at", f"2026-03-{10 + i}T23:00", "--data-dir", data)
    run.ok("gift", A, B, "50", "--at", "2026-03-20", "--data-dir", data)
    run.ok("balance", A, "--at", "2026-05-01", "--data-dir", data)
    assert json.loads(snap.read_bytes())["lines"] > 30
    r = check(run, data, "2026-05-02")
    assert r.exit_code == 0, r.stdout


@pytest.mark.parametrize("change", [
    lambda st: st["lots"][0].__setitem__(2, st["lots"][0][2] + 5000),  # a lot's points
    lambda st: st["totals"].__setitem__("spent", st["totals"]["spent"] + 1),  # a total
    lambda st: st.__setitem__("debt", st["debt"] + 7),
    lambda st: st["lots"].pop(),  # a lot dropped
], ids=["lot-points", "total", "debt", "lot-dropped"])
def test_a_forged_snapshot_is_derived_file_forged(run, tmp_path, monkeypatch, change):
    """Scenario 3: the state edited, the hash and offset kept. A read shows the forged figure until
    the next check (documented); `check --ledgers` names the file, kind derived-file-forged, and
    deleting it is safe."""
    data, snap = _snapshot(run, tmp_path, monkeypatch)
    truth = run.j("balance", A, "--at", "2026-03-02", "--data-dir", data)["available"]
    _forge(snap, change)
    r = check(run, data)
    assert r.exit_code == 3, r.stdout
    err = _error(r)
    assert err["kind"] == "derived-file-forged"
    assert "deleting them is safe" in err["message"]
    r = run("check", "--ledgers", "--at", "2026-03-05", "--data-dir", data)
    assert r.exit_code == 3
    assert f"{snap}:1: this snapshot is not what a replay" in r.stderr and "deleting it is safe" in r.stderr
    snap.unlink()
    assert check(run, data).exit_code == 0
    assert run.j("balance", A, "--at", "2026-03-02", "--data-dir", data)["available"] == truth


def test_a_forged_snapshot_used_by_a_read_is_caught(run, tmp_path, monkeypatch):
    """The issue's scenario as told: `balance` shows the forged figure (a derived file is trusted in
    shape only, between checks), and check reports it before any debit is needed to show it."""
    data, snap = _snapshot(run, tmp_path, monkeypatch)
    before = run.j("balance", A, "--at", "2026-03-02", "--data-dir", data)["available"]

    def more(st):
        st["lots"][-1][2] += 3000

    _forge(snap, more)
    shown = run.j("balance", A, "--at", "2026-03-02", "--data-dir", data)["available"]
    assert shown == before + 3000  # what a forged derived file can do between two checks
    assert _error(check(run, data))["kind"] == "derived-file-forged"


def test_a_snapshot_no_command_uses_is_not_reported(run, tmp_path, monkeypatch):
    """A planted file that no command would use (another catalog's, or damaged) is as if absent."""
    data, snap = _snapshot(run, tmp_path, monkeypatch)
    doc = json.loads(snap.read_bytes())
    doc["key"] = "another catalog"
    doc["state"]["debt"] = 99
    snap.write_text(json.dumps(doc))
    assert check(run, data).exit_code == 0
    snap.write_text('{"offset": 1000000000000000000000000000000}')
    assert check(run, data).exit_code == 0


def test_a_forged_snapshot_beside_a_tampered_ledger_leaves_the_ledger_problem_first(run, tmp_path, monkeypatch):
    data, snap = _snapshot(run, tmp_path, monkeypatch)
    _forge(snap, lambda st: st.__setitem__("debt", 5))
    run.ok("earn", B, "100", "--category", "mobile", "--at", "2026-03-02", "--data-dir", data)
    other = data / "ledgers" / f"{B}.jsonl"
    lines = other.read_bytes().splitlines(keepends=True)
    other.write_bytes(lines[0].replace(b'"RU-MOW"', b'"RU-SPE"') + b"".join(lines[1:]))  # the chain breaks
    err = _error(check(run, data))
    assert err["kind"] == "ledger-unsound"  # a ledger problem outranks a derived file's


# ---------------------------------------------------------------- the catalog cache


def _cache(data):
    (cache,) = (data / "cache").glob("catalog-*.json")
    return cache


def test_a_forged_catalog_cache_is_derived_file_forged(run, tmp_path):
    """Scenario 4: a reward's price edited in the cache. `check --ledgers` parses the catalog file
    (it never reads the cache it verifies) and reports the cache; once deleted, all is well."""
    data = tmp_path / "d"
    run.ok("join", A, "--region", "RU-MOW", "--at", "2025-01-05T10:00", "--data-dir", data)
    run.ok("balance", A, "--data-dir", data)  # the first command on an existing directory writes the cache
    cache = _cache(data)
    assert check(run, data).exit_code == 0
    text = cache.read_text()
    doc = json.loads(text)
    forged = json.dumps(doc).replace('"roaming", 3600,', '"roaming", 1,', 1)
    assert forged != json.dumps(doc), "the catalog has no reward priced 3600"
    cache.write_text(forged)
    r = check(run, data)
    assert r.exit_code == 3
    assert _error(r)["kind"] == "derived-file-forged"
    r = run("check", "--ledgers", "--data-dir", data)
    assert f"{cache}:1: this catalog cache is not what a parse of" in r.stderr
    assert cache.read_text() == forged, "check writes nothing, the forged cache is left to the operator"
    cache.unlink()
    assert check(run, data).exit_code == 0


def test_a_forged_catalog_cache_does_not_mislead_the_check_itself(run, tmp_path):
    """The check replays with the parsed catalog: a cache that gives 1,000 welcome points cannot make
    the ledgers look otherwise than they are; only the cache is reported."""
    data = tmp_path / "d"
    run.ok("join", A, "--region", "RU-MOW", "--at", "2025-01-05T10:00", "--data-dir", data)
    run.ok("earn", A, "1000", "--category", "mobile", "--at", "2025-01-06T10:00", "--data-dir", data)
    cache = _cache(data)
    text = cache.read_text()
    forged = text.replace('"Bonuses", "f": [150,', '"Bonuses", "f": [1000,', 1)
    assert forged != text
    cache.write_text(forged)
    assert run.j("calc", "1000", "--category", "mobile", "--data-dir", data)  # the forged cache is in use
    r = check(run, data)
    assert r.exit_code == 3
    assert _error(r)["kind"] == "derived-file-forged"
    assert [p["path"] for p in json.loads(r.stdout)["problems"]] == [str(cache)]


# ---------------------------------------------------------------- what only an anchor catches (scenario 5)


def test_a_whole_ledger_rewritten_without_its_chain_passes_check_alone_and_fails_the_anchor(run, tmp_path):
    """Scenario 5: a whole ledger rewritten in schema 1 (no chain; release 0.1.0 ledgers still read)
    with an earn removed checks clean on its own, as docs/reliability.md now says; only an anchor
    kept elsewhere tells."""
    data = tmp_path / "d"
    run.ok("join", A, "--region", "RU-MOW", "--at", "2025-01-05T10:00", "--data-dir", data)
    run.ok("earn", A, "1000", "--category", "mobile", "--at", "2025-01-06T10:00", "--data-dir", data)
    run.ok("redeem", A, "minutes_30", "--at", "2025-01-07T10:00", "--data-dir", data)
    anchor = tmp_path / "anchor.json"
    digest = run.j("check", "--ledgers", "--save-anchor", anchor, "--data-dir", data)["anchor"]
    led = data / "ledgers" / f"{A}.jsonl"
    events = [json.loads(raw) for raw in led.read_bytes().splitlines()]
    kept = [e for e in events if e["type"] != "redeem"]  # the redemption hidden: its points spent again
    for e in kept:
        e["v"] = 1
        e.pop("prev", None)
    led.write_text("".join(json.dumps(e, separators=(",", ":")) + "\n" for e in kept))
    assert check(run, data).exit_code == 0  # check alone cannot tell
    r = run("check", "--ledgers", "--json", "--anchor", anchor, "--anchor-digest", digest, "--data-dir", data)
    assert r.exit_code == 3
    assert _error(r)["kind"] == "ledger-unsound"
    assert any(p["path"] == str(led) for p in json.loads(r.stdout)["problems"])


@pytest.mark.parametrize("how", ["edit-last-line", "drop-last-lines"])
def test_an_edited_last_line_or_dropped_last_lines_pass_check_alone_and_fail_the_anchor(run, tmp_path, how):
    """Nothing chains to the last line yet, and a shorter chain is still whole: `check` alone cannot
    tell (tests/test_reliability.py shows it); an anchor saved after those lines can."""
    data = tmp_path / "d"
    run.ok("join", A, "--region", "RU-MOW", "--at", "2025-01-05T10:00", "--data-dir", data)
    run.ok("earn", A, "1000", "--category", "mobile", "--at", "2025-01-06T10:00", "--data-dir", data)
    run.ok("adjust", A, "1", "--reason", "last", "--ref", "j2", "--at", "2025-01-07T10:00", "--data-dir", data)
    anchor = tmp_path / "anchor.json"
    digest = run.j("check", "--ledgers", "--save-anchor", anchor, "--data-dir", data)["anchor"]
    led = data / "ledgers" / f"{A}.jsonl"
    raw = led.read_bytes()
    if how == "edit-last-line":
        led.write_bytes(raw.replace(b'"reason":"last"', b'"reason":"LAST"'))
    else:
        led.write_bytes(b"".join(raw.splitlines(keepends=True)[:2]))
    assert check(run, data).exit_code == 0  # check alone cannot tell
    r = run("check", "--ledgers", "--json", "--anchor", anchor, "--anchor-digest", digest, "--data-dir", data)
    assert r.exit_code == 3
    assert [p["path"] for p in json.loads(r.stdout)["problems"]] == [str(led)]
