"""The cost of simulating a catalog change grows with the events, not with members x ledgers: each
member is replayed with only the peers its unsettled gifts and referrals name (the released engine
replayed every member with every ledger as its peers: 2 million look-ups for 1,000 members).
Counted in work done (events replayed, peer ledgers read), never in seconds."""

from __future__ import annotations

import datetime as dt
import importlib.util
from pathlib import Path

from bonuscli import simulate
from bonuscli.ledger import FileStore
from bonuscli import catalog as catalog_mod

ROOT = Path(__file__).resolve().parent.parent


def _generate(data: Path, members: int, events: int):
    spec = importlib.util.spec_from_file_location("bonuscli_bench_generate", ROOT / "benchmarks" / "generate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.generate(data, members, events, seed=3)


def _work(tmp_path, members):
    data = tmp_path / f"d{members}"
    _generate(data, members, members * 10)
    cat = catalog_mod.load(catalog_mod.default_path(), "catalog.yaml")
    store = FileStore(data)
    ledgers = {p: [e for e in store.read(p).events if e["type"] != "repair"] for p in store.phones()}
    now = dt.datetime(2025, 12, 31, 23, 0, tzinfo=cat.tz)
    world = simulate.World(cat).run(simulate.requests_of(ledgers, cat), until=now)
    before = dict(world.stats)
    for phone in ledgers:
        world.figures(phone, now)
    figures = {k: world.stats[k] - before[k] for k in before}
    events = sum(len(v) for v in ledgers.values())
    return events, before, figures


def test_simulation_work_is_linear_in_members(tmp_path):
    small_events, small_run, small_fig = _work(tmp_path, 40)
    big_events, big_run, big_fig = _work(tmp_path, 160)
    # figures: every member replayed once, plus only the peers its own unsettled steps name
    assert small_fig["replayed"] <= small_events * 1.5 and big_fig["replayed"] <= big_events * 1.5
    assert small_fig["peers_read"] <= small_events and big_fig["peers_read"] <= big_events
    # four times the members: about four times the work (quadratic would be sixteen)
    for key in ("replayed", "peers_read"):
        ratio = (big_run[key] + big_fig[key]) / max(1, small_run[key] + small_fig[key])
        assert ratio < 6, (key, ratio)


def _groups(tmp_path, members):
    data = tmp_path / f"g{members}"
    _generate(data, members, members * 10)
    cat = catalog_mod.load(catalog_mod.default_path(), "catalog.yaml")
    store = FileStore(data)
    ledgers = {p: [e for e in store.read(p).events if e["type"] != "repair"] for p in store.phones()}
    reqs = simulate.requests_of(ledgers, cat)
    return ledgers, reqs, simulate.components(reqs, sorted(ledgers)), cat


def test_diff_groups_stay_small_and_work_is_linear(tmp_path):
    """`diff --ledgers` replays group by group (members tied by gifts and referrals): the groups do not
    grow with the directory, every request is decided once per catalog, and the events replayed
    (fast path, both catalogs) stay within a constant factor of the events recorded."""
    import datetime as dt

    sizes = {}
    for members in (50, 400):
        ledgers, reqs, groups, cat = _groups(tmp_path, members)
        assert sorted(i for _, idx in groups for i in idx) == list(range(len(reqs)))
        largest = max(len(phones) for phones, _ in groups)
        now = dt.datetime(2026, 1, 1, tzinfo=cat.tz)
        replayed = peers = 0
        for phones, idx in groups:
            w = simulate.World(cat)
            for i in idx:
                w.apply(reqs[i])
            for p in phones:
                if p in ledgers:
                    w.figures(p, now)
            replayed += w.stats["replayed"]
            peers += w.stats["peers_read"]
        events = sum(len(v) for v in ledgers.values())
        sizes[members] = (largest, replayed, peers, events)
        assert largest <= 12, (members, largest)
        assert replayed <= events * 2 and peers <= events, sizes
    (_, r1, p1, e1), (_, r2, p2, e2) = sizes[50], sizes[400]
    assert (r2 + p2) / max(1, r1 + p1) < 8 * 1.5, sizes  # eight times the members: about eight times the work
