"""The optional Dask engine (issue 12, item 6): the same per-member functions mapped over a
dask.distributed LocalCluster give exactly what the local engine gives.

Two directories: a small one built through the CLI (joins, a referral, earns, redemptions,
an accepted gift, a pending gift, refunds with debt, a leave) whose headline figures are
derived by hand (see test_report.py for the derivation of the shared part), and a seeded
generated one (benchmarks/generate.py, ~300 members) that spreads over several tasks and
has gifts linking members in different chunks. One LocalCluster (2 worker processes) serves
the whole module.
"""

from __future__ import annotations

import importlib.util
import json
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from bonuscli import audit, dask_engine, diff, fleet, rules, scenario, workers
from bonuscli.ledger import FileStore
from bonuscli.model import BadInput, FilesError, Refused, parse_date, parse_when
from conftest import ROOT, Run

A, B, C, D, E, F = "9160000001", "9160000002", "9160000003", "9160000004", "9160000005", "9160000006"
ASOF = "2025-04-10T12:00"


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def cluster():
    with dask_engine.Cluster() as c:
        yield c


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    data = tmp_path_factory.mktemp("dask-small") / "data"
    r = Run().in_dir(data)

    r("join", F, "--region", "RU-SPE", "--at", "2024-02-10T10:00")
    r("join", A, "--region", "RU-MOW", "--at", "2025-01-10T10:00")
    r("join", B, "--region", "RU-MOW", "--at", "2025-01-15T10:00")
    r("earn", A, "1000", "--category", "mobile", "--ref", "a1", "--at", "2025-01-20T10:00")
    r("join", C, "--region", "RU-SPE", "--at", "2025-02-03T10:00")
    r("join", D, "--region", "RU-SPE", "--method", "web", "--referrer", C, "--at", "2025-02-05T10:00")
    r("earn", A, "500", "--category", "taxi", "--ref", "a2", "--at", "2025-02-10T10:00")
    r("earn", C, "3000", "--category", "mts_store", "--ref", "c1", "--at", "2025-02-10T11:00")
    r("earn", D, "1000", "--category", "taxi", "--ref", "d1", "--at", "2025-02-10T12:00")
    r("redeem", D, "home_everywhere", "--at", "2025-02-12T10:00")
    r("redeem", A, "minutes_30", "--at", "2025-02-15T10:00")
    g = r("gift", A, B, "100", "--at", "2025-02-20T10:00")
    r("accept", B, g["gift_id"], "--at", "2025-02-21T10:00")
    r("earn", B, "2000", "--category", "mobile", "--ref", "b1", "--at", "2025-03-05T10:00")
    r("refund", B, "b1", "--amount", "500", "--at", "2025-03-06T10:00")
    r("leave", C, "--yes", "--at", "2025-03-10T10:00")
    r("refund", D, "d1", "--at", "2025-03-15T10:00")
    r("join", E, "--region", "RU-MOW", "--method", "wallet", "--at", "2025-03-20T10:00")
    # a gift still pending on 2025-04-10: 30 of A's oldest lot (a1: 40 -> 10) held, not B's yet
    r("gift", A, B, "30", "--at", "2025-03-25T10:00")
    return data


def _generate_module():
    spec = importlib.util.spec_from_file_location("bonuscli_bench_generate", ROOT / "benchmarks" / "generate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    data = tmp_path_factory.mktemp("dask-gen") / "data"
    _generate_module().generate(data, 300, 3000, seed=7)
    return data


class _Env:
    """A service over `data` as of `at`, the way the CLI opens it."""

    def __init__(self, data, at):
        from bonuscli import catalog as catalog_mod
        from bonuscli import service

        path = catalog_mod.default_path()
        self.svc = service.open_dir(Path(data), path, str(path))
        self.now = parse_when(at, self.svc.catalog.tz)
        self.store = self.svc.store


def env_of(data, at=ASOF):
    return _Env(data, at)


def new_catalog(tmp_path) -> Path:
    """The shipped catalog with every reward's price tripled (regional ones too) and mobile at 4 RUB a point."""
    text = (ROOT / "catalog.yaml").read_text()
    text = re.sub(r"(?m)^(\s+price: )(\d+)\s*$", lambda m: f"{m.group(1)}{int(m.group(2)) * 3}", text)
    text = re.sub(r"region_prices: \{[^}]*\}",
                  lambda m: re.sub(r"(: )(\d+)", lambda n: f"{n.group(1)}{int(n.group(2)) * 3}", m.group(0)), text)
    text = text.replace("mobile: {rub_per_point: 5,", "mobile: {rub_per_point: 4,")
    p = tmp_path / "new.yaml"
    p.write_text(text)
    return p


# ---------------------------------------------------------------- report


def test_report_small_directory_identical_and_right(small, cluster, monkeypatch):
    monkeypatch.setattr(workers, "MIN_CHUNK", 1)  # six tasks of one member each
    env = env_of(small)
    local = fleet.report(env.svc, env.now, jobs=1)
    got = dask_engine.report(env.svc, env.now, cluster=cluster)
    assert got == local
    assert json.dumps(got) == json.dumps(local)  # the same key order too
    # by hand (test_report.py's derivation, plus the pending gift of 30 from A's a1 lot)
    assert got["members"] == {"active": 4, "pending": 1, "left": 1, "closed": 0, "total": 6}
    assert got["regions"] == {"RU-MOW": 3, "RU-SPE": 3}
    assert got["outstanding"] == 110 + 550
    assert got["debt"] == 150


@pytest.mark.parametrize("region,since,until", [("RU-MOW", None, None), ("RU-SPE", "2025-02-01", "2025-02-28"),
                                                (None, "2025-03-01", None)])
def test_report_small_directory_filters_identical(small, cluster, monkeypatch, region, since, until):
    monkeypatch.setattr(workers, "MIN_CHUNK", 2)
    env = env_of(small)
    f = parse_date(since, "--from") if since else None
    u = parse_date(until, "--until") if until else None
    assert dask_engine.report(env.svc, env.now, region, f, u, cluster=cluster) == fleet.report(env.svc, env.now, region, f, u, jobs=1)


def test_map_members_identical(small, generated, cluster):
    for data in (small, generated):
        env = env_of(data)
        local = fleet.map_members(env.svc, env.now, jobs=1)
        assert dask_engine.map_members(env.svc, env.now, cluster=cluster) == local
        assert len(local) == len(env.store.phones())


def test_report_generated_directory_identical(generated, cluster):
    env = env_of(generated, at="2025-12-31T23:00")
    phones = env.store.phones()
    assert len(phones) == 300
    assert len(workers.chunked(phones, cluster.n_workers())) == 6  # several tasks on each worker
    local = fleet.report(env.svc, env.now, jobs=1)
    assert local["members"]["total"] == 300 and local["outstanding"] > 0
    assert dask_engine.report(env.svc, env.now, cluster=cluster) == local
    assert dask_engine.report(env.svc, env.now, "RU-MOW", cluster=cluster) == fleet.report(env.svc, env.now, "RU-MOW", jobs=1)


def test_report_corrupt_ledgers_same_error(tmp_path, small, cluster, monkeypatch):
    import shutil

    monkeypatch.setattr(workers, "MIN_CHUNK", 1)
    data = tmp_path / "data"
    shutil.copytree(small, data)
    for p in (B, E):  # a line that is not JSON in the middle of two ledgers
        path = data / "ledgers" / f"{p}.jsonl"
        lines = path.read_bytes().splitlines(keepends=True)
        path.write_bytes(lines[0] + b"{not json\n" + b"".join(lines[1:]))
    env = env_of(data)
    with pytest.raises(FilesError) as local:
        fleet.report(env.svc, env.now, jobs=1)
    with pytest.raises(FilesError) as got:
        dask_engine.report(env.svc, env.now, cluster=cluster)
    assert got.value.message == local.value.message
    assert got.value.kind == local.value.kind == "ledger-corrupt"
    assert "(and 1 more ledgers)" in got.value.message and f"{B}.jsonl" in got.value.message


def test_report_empty_directory(tmp_path, cluster):
    env = env_of(tmp_path / "nothing")
    assert dask_engine.report(env.svc, env.now, cluster=cluster) == fleet.report(env.svc, env.now, jobs=1)
    assert dask_engine.report(env.svc, env.now, cluster=cluster)["members"]["total"] == 0


def test_merge_reports_adds_exactly():
    a = {"as_of": "x", "members": {"active": 1, "total": 1}, "outstanding": 5,
         "months": [{"month": "2025-02", "earned": 3}], "regions": {"RU-MOW": 1}}
    b = {"as_of": "x", "members": {"left": 2, "total": 2}, "outstanding": 7,
         "months": [{"month": "2025-01", "earned": 1}, {"month": "2025-02", "earned": 4}], "regions": {"RU-SPE": 2}}
    assert fleet.merge_reports(a, b) == {
        "as_of": "x", "members": {"active": 1, "total": 3, "left": 2}, "outstanding": 12,
        "months": [{"month": "2025-01", "earned": 1}, {"month": "2025-02", "earned": 7}],
        "regions": {"RU-MOW": 1, "RU-SPE": 2}}
    with pytest.raises(ValueError):
        fleet.merge_reports({"as_of": "x"}, {"as_of": "y"})


# ---------------------------------------------------------------- check --ledgers


def test_check_clean_directories_identical(small, generated, cluster):
    for data in (small, generated):
        env = env_of(data)
        assert audit.check_dir(env.svc, env.now) == []
        assert dask_engine.check_dir(env.svc, env.now, cluster=cluster) == []


def test_check_tampered_directory_identical(tmp_path, small, cluster, monkeypatch):
    """B's copy of A's accepted gift says 101 points instead of 100: B's hash chain breaks at the
    next line, and A's check (in another task) must read B's ledger to see the copies differ."""
    import shutil

    monkeypatch.setattr(workers, "MIN_CHUNK", 1)
    data = tmp_path / "data"
    shutil.copytree(small, data)
    path = data / "ledgers" / f"{B}.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    n = next(i for i, raw in enumerate(lines) if b'"gift_in"' in raw and b'"points":100' in raw)
    assert n + 1 < len(lines)
    lines[n] = lines[n].replace(b'"points":100', b'"points":101')
    path.write_bytes(b"".join(lines))
    bad = data / "ledgers" / f"{F}.jsonl"  # and one unreadable ledger
    bad.write_bytes(bad.read_bytes() + b"garbage\n")
    env = env_of(data)
    local = audit.check_dir(env.svc, env.now)
    got = dask_engine.check_dir(env.svc, env.now, cluster=cluster)
    assert got == local
    texts = [p["text"] for p in got]
    assert texts[0].startswith(str(bad)) or str(bad) in texts[0]  # unreadable ledgers come first
    assert any(f"{B}.jsonl:{n + 2}:" in t for t in texts), texts  # the line whose `prev` no longer matches
    assert any(f"differs from its copy in {B}" in t and f"{A}.jsonl" in t for t in texts), texts


# ---------------------------------------------------------------- diff --ledgers


def test_components():
    linked = {"9000000001": ["9000000003"], "9000000004": ["9000000009"], "9000000005": ["9000000004"]}
    phones = [f"900000000{i}" for i in range(1, 7)]
    assert rules.components(linked, phones) == [
        ["9000000001", "9000000003"], ["9000000002"], ["9000000004", "9000000005"], ["9000000006"]]


def test_diff_impact_identical(generated, small, cluster, tmp_path, monkeypatch):
    """Prices tripled and mobile at 4 RUB a point: redemptions become unaffordable, so outcome
    changes from several tasks must be merged back into the requests' global order."""
    old = diff.load_catalog(str(ROOT / "catalog.yaml"))
    new = diff.load_catalog(str(new_catalog(tmp_path)))
    # the generated directory in ~6 groups; the small one in one task per component: {A, B} (gifts),
    # {C, D} (a referral), {E}, {F}
    for data, now, chunk in ((generated, "2025-05-31T23:00+03:00", 50), (small, "2025-04-10T12:00+03:00", 1)):
        monkeypatch.setattr(workers, "MIN_CHUNK", chunk)
        now = parse_date_time(now)
        local = diff.impact(old, new, diff.read_ledgers(FileStore(data)), now)
        got = dask_engine.impact(old, new, data, now, cluster=cluster, warn=lambda m: None)
        assert got == local
        assert json.dumps(got) == json.dumps(local)
        assert len(local["outcome_changes"]) > 1 and local["no_longer_affordable"]  # or this proves little
    # by hand: D's home_everywhere (400 -> 1200; D has 450) on 02-12, then A's minutes_30 (RU-MOW
    # 210 -> 630; A has 150 + 200 + 100 = 450) on 02-15: time order, not phone order
    assert local["total"]["members"] == 6
    assert [(c["phone"], c["at"][:10], c["new"]) for c in local["outcome_changes"]][:2] == [
        (D, "2025-02-12", "insufficient-points"), (A, "2025-02-15", "insufficient-points")]


def parse_date_time(text):
    import datetime as dt

    return dt.datetime.fromisoformat(text)


def test_diff_torn_line_warned_in_phone_order(tmp_path, small, cluster):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(small, data)
    for p in (D, A):
        with open(data / "ledgers" / f"{p}.jsonl", "ab") as f:
            f.write(b'{"v":2,"id":"torn')
    old = diff.load_catalog(str(ROOT / "catalog.yaml"))
    now = parse_date_time("2025-04-10T12:00+03:00")
    warned = []
    got = dask_engine.impact(old, old, data, now, cluster=cluster, warn=warned.append)
    assert [w.split(":")[1].rsplit("/", 1)[1] for w in warned] == [f"{A}.jsonl", f"{D}.jsonl"]
    assert got == diff.impact(old, old, diff.read_ledgers(FileStore(data)), now)
    assert got["outcome_changes"] == [] and got["total"]["change"] == 0


# ---------------------------------------------------------------- scenarios


FAILING = """name: fails on purpose
members:
  9160000001: {region: RU-MOW}
steps:
  - at: 2025-03-03T10:00
    join: {phone: 9160000001}
    expect: {balance: 999, no_such_field: 1}
"""


def test_scenarios_identical(cluster, tmp_path):
    bad = tmp_path / "fails.yaml"
    bad.write_text(FAILING)
    files = [str(ROOT / "scenarios" / n) for n in ("gifts.yaml", "referral.yaml", "calc.yaml")] + [str(bad)]
    default = Path(ROOT / "catalog.yaml")
    local = [scenario.run_one(f, default) for f in files]
    got = dask_engine.run_scenarios(files, default, cluster=cluster)
    assert [scenario.result_json(r) for r in got] == [scenario.result_json(r) for r in local]
    assert scenario.human(got) == scenario.human(local)
    assert [r.status for r in got] == ["pass", "pass", "pass", "fail"]
    missing = [f for f in got[3].failures if f.field == "no_such_field"]
    assert missing and missing[0].got is scenario.MISSING  # the sentinel survives the trip


# ---------------------------------------------------------------- the mapper and its errors


def _boom(x, chunk):
    if chunk == [3]:
        raise Refused("three is refused", "no-threes")
    return [x * c for c in chunk]


def test_map_chunks_order_and_errors(cluster):
    chunks = [[i] for i in range(12)]
    assert cluster.map_chunks(_square_all, chunks, 10) == [[10 * i * i] for i in range(12)]
    with pytest.raises(Refused) as e:
        cluster.map_chunks(_boom, [[1], [2], [3], [4]], 2)
    assert (e.value.kind, e.value.exit_code, e.value.message) == ("no-threes", 1, "three is refused")
    assert dask_engine.map_chunks(_square_all, [], 1, cluster=cluster) == []


def _square_all(k, chunk):
    return [k * c * c for c in chunk]


def test_chunked():
    items = list(range(1000))
    parts = workers.chunked(items, 2)
    assert [x for p in parts for x in p] == items
    assert len(parts) == 16 and all(len(p) <= 63 for p in parts)
    assert workers.chunked(list(range(120)), 2) == [list(range(50)), list(range(50, 100)), list(range(100, 120))]
    assert workers.chunked([], 2) == []


def test_unreachable_scheduler_is_exit_3(monkeypatch):
    monkeypatch.setattr(dask_engine, "CONNECT_TIMEOUT", 1)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(FilesError) as e:
        dask_engine.map_chunks(_square_all, [[1]], 1, scheduler=f"tcp://127.0.0.1:{port}")
    assert e.value.exit_code == 3 and e.value.kind == "scheduler-unreachable"
    assert f"127.0.0.1:{port}" in e.value.message


def test_bad_scheduler_address_is_exit_2():
    for address in ("", "nonsense://host:1"):
        with pytest.raises(BadInput) as e:
            dask_engine.map_chunks(_square_all, [[1]], 1, scheduler=address)
        assert e.value.exit_code == 2


def test_dask_missing_is_a_clean_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # `import distributed` raises ImportError
    with pytest.raises(BadInput) as e:
        dask_engine.map_chunks(_square_all, [[1]], 1)
    assert e.value.exit_code == 2 and e.value.kind == "engine-unavailable"
    assert "bonuscli[dask]" in e.value.message


def test_dask_is_never_imported_eagerly():
    code = ("import sys, bonuscli.cli, bonuscli.dask_engine, bonuscli.fleet, bonuscli.audit, bonuscli.diff; "
            "print(sorted(m for m in ('dask', 'distributed') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------- through the command line


def test_cli_engine_dask_end_to_end(small, sub):
    """A real `python -m bonuscli` starts its own LocalCluster (worker processes are spawned),
    prints the same JSON as the local engine, and nothing on stderr."""
    common = ["--data-dir", str(small), "--at", ASOF, "--json"]
    local = sub(["report", *common])
    dask = sub(["report", "--engine", "dask", *common])
    assert local.returncode == 0, local.stderr
    assert dask.returncode == 0, dask.stderr
    assert json.loads(dask.stdout) == json.loads(local.stdout)
    assert dask.stderr == ""
    checked = sub(["check", "--ledgers", "--engine", "dask", *common])
    assert checked.returncode == 0, checked.stderr
    assert json.loads(checked.stdout)["valid"] is True and checked.stderr == ""
