"""`diff --ledgers`'s fast path against the reference path it replaced.

The fast path (simulate.Sim: events kept as stamped dicts, states live; members replayed group by
group, `components`, over a process pool) must give exactly what the reference gives
(simulate.World(reference=True): two worlds of everyone on Service.transact over a MemoryStore,
every line encoded, chained and parsed back), for any `jobs`. The stories are seeded random
directories written through the service itself, with every kind of request the simulation
re-decides: joins (web with a profile, by referral), earns, redemptions (store discount too),
gifts accepted, rejected, left to expire, refunds, adjustments (and opening-balance imports),
leaves; several requests at one instant; and catalogs that decide some of them differently.
"""

from __future__ import annotations

import datetime as dt
import heapq
import importlib.util
import json
import random
from decimal import Decimal
from pathlib import Path

import pytest

from bonuscli import diff, service, simulate, workers
from bonuscli import requests as rq
from bonuscli.ledger import FileStore
from bonuscli.model import BonusError

ROOT = Path(__file__).resolve().parent.parent
CATALOG = ROOT / "catalog.yaml"

VARIANTS = {
    "mobile-4": [("mobile: {rub_per_point: 5,", "mobile: {rub_per_point: 4,")],
    "dearer-minutes": [("region_prices: {RU-MOW: 210, RU-MOS: 210, RU-BRY: 85}",
                        "region_prices: {RU-MOW: 260, RU-MOS: 210, RU-BRY: 140}"),
                       ("    price: 230\n", "    price: 400\n")],
    "stricter-gifts": [("per_month_points: 3000\n", "per_month_points: 300\n"),
                       ("accept_days: 30 ", "accept_days: 2 ")],
    "bonuses": [("welcome: 150 ", "welcome: 40 "), ("referral: 50 ", "referral: 500 "),
                ("points_validity_months: 12 ", "points_validity_months: 1 "),
                ("allow_debt: true", "allow_debt: false")],
}


def catalog_text(name: str) -> str:
    text = CATALOG.read_text()
    for old, new in VARIANTS.get(name, ()):
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    return text


@pytest.fixture(scope="module")
def catalogs(tmp_path_factory):
    d = tmp_path_factory.mktemp("catalogs")
    out = {}
    for name in ["old"] + list(VARIANTS):
        path = d / f"{name}.yaml"
        path.write_text(catalog_text(name))
        out[name] = diff.load_catalog(str(path))
    return out


def story(cat, seed: int, members: int = 18, steps: int = 240):
    """Ledgers written by the service from `steps` random requests (refusals are simply not written);
    returns (phone -> events, the instant after the last request)."""
    rnd = random.Random(seed)
    svc = service.in_memory(cat, live=False)
    phones = [f"91{seed % 100:02d}{i:06d}" for i in range(members)]
    t = dt.datetime(2025, 1, 6, 9, 0, tzinfo=cat.tz)
    joined, gifts, refs = [], [], {}
    n = 0
    for _ in range(steps):
        t += dt.timedelta(minutes=rnd.choice([0, 0, 7, 60, 600, 1500, 4000, 20000]))
        n += 1
        kind = rnd.choices(["join", "earn", "redeem", "gift", "accept", "leave", "refund", "adjust"],
                           [4, 10, 4, 4, 4, 1, 2, 2])[0]
        p = rnd.choice(joined) if joined else None
        try:
            if kind == "join" or p is None:
                q = rnd.choice(phones)
                method = rnd.choice(["sms", "web", "store"])
                since = str(t.date() - dt.timedelta(days=rnd.randrange(0, 3000)))
                ref = rnd.choice(joined) if joined and rnd.random() < 0.4 else None
                web = method == "web" and rnd.random() < 0.5
                req = rq.join(cat, t.date(), q, rnd.choice(["RU-MOW", "RU-BRY"]), method,
                              "a@b.ru" if web else None, "1990-05-05" if web else None, since, ref)
                svc.join(req, t)
                joined.append(q)
            elif kind == "earn":
                ref = f"e{n}"
                amount = f"{rnd.randrange(50, 9000)}.{rnd.randrange(100):02d}"
                svc.earn(rq.earn(cat, p, amount, rnd.choice(["mobile", "mobile", "mts_store", "card", "taxi"]), ref), t)
                refs.setdefault(p, []).append((ref, Decimal(amount)))
            elif kind == "redeem":
                if rnd.random() < 0.2:
                    svc.redeem(rq.redeem(cat, p, "store_discount", "store", str(rnd.randrange(20, 400)),
                                         str(rnd.randrange(1, 300))), t)
                else:
                    svc.redeem(rq.redeem(cat, p, rnd.choice(["minutes_30", "sms_50", "minutes_60"])), t)
            elif kind == "gift":
                view = svc.gift(rq.gift(cat, p, rnd.choice(joined), str(rnd.randrange(1, 400))), t)
                gifts.append((view["gift_id"], view["to"]))
            elif kind == "accept" and gifts:
                gid, to = gifts.pop(rnd.randrange(len(gifts)))
                svc.accept(rq.accept(to, gid, reject=rnd.random() < 0.3), t)
            elif kind == "leave":
                svc.leave(p, t)
                joined.remove(p)
            elif kind == "refund" and refs.get(p):
                ref, amount = rnd.choice(refs[p])
                part = amount if rnd.random() < 0.5 else (amount / 3).quantize(Decimal("0.01"))
                svc.refund(rq.refund(cat, p, ref, str(part), f"f{n}" if rnd.random() < 0.5 else None), t)
            elif kind == "adjust":
                if rnd.random() < 0.3:  # an opening-balance import of someone new
                    q = rnd.choice(phones)
                    svc.adjust(rq.adjust(cat, q, str(rnd.randrange(1, 900)), "import", f"a{n}", None, "RU-MOW"), t)
                    joined.append(q)
                else:
                    pts = rnd.randrange(1, 300) * rnd.choice([1, -1])
                    exp = str(t.date() + dt.timedelta(days=rnd.randrange(2, 90))) if pts > 0 and rnd.random() < 0.3 else None
                    svc.adjust(rq.adjust(cat, p, str(pts), "goodwill", f"a{n}" if rnd.random() < 0.5 else None, exp), t)
        except BonusError:
            pass
    return diff.read_ledgers(svc.store), t


def same(a: dict, b: dict) -> bool:
    return json.dumps(a, sort_keys=False) == json.dumps(b, sort_keys=False)


def kinds(ledgers) -> set:
    return {e["type"] for evs in ledgers.values() for e in evs}


@pytest.mark.parametrize("seed", range(6))
def test_fast_path_equals_reference(seed, catalogs, monkeypatch):
    old = catalogs["old"]
    ledgers, end = story(old, seed)
    found = kinds(ledgers)
    assert {"join", "earn", "redeem", "gift_out", "gift_in", "gift_accept", "refund", "adjust"} <= found, found
    changed = 0
    for name in VARIANTS:
        new = catalogs[name]
        for now in (end - dt.timedelta(days=20), end + dt.timedelta(days=3)):  # mid-story too
            ref = diff.impact_reference(old, new, ledgers, now)
            assert same(diff.impact(old, new, ledgers, now, jobs=1), ref), (seed, name, now)
            monkeypatch.setattr(simulate, "SERIAL_BELOW", 0)  # the process pool even for a small story
            assert same(diff.impact(old, new, ledgers, now, jobs=2), ref), (seed, name, now, "jobs 2")
            assert same(diff.impact(old, new, ledgers, now, jobs=3), ref), (seed, name, now, "jobs 3")
            monkeypatch.undo()
            changed += len(ref["outcome_changes"])
    assert changed > 0  # the catalogs do decide differently


def test_stories_cover_every_request():
    """Together the seeds hold every kind of request the simulation re-decides."""
    cat = diff.load_catalog(str(CATALOG))
    found = set()
    for seed in range(6):
        found |= kinds(story(cat, seed)[0])
    assert {"join", "earn", "redeem", "gift_out", "gift_accept", "gift_reject", "leave", "refund", "adjust",
            "referral", "referral_settle", "gift_settle"} <= found, found


@pytest.mark.parametrize("seed", range(3))
def test_fast_world_writes_what_the_service_writes(seed, catalogs):
    """Under each catalog, the fast world writes exactly the reference's events (ids, seals, order)
    and answers every request the same."""
    old = catalogs["old"]
    ledgers, end = story(old, 100 + seed)
    reqs = simulate.requests_of(ledgers, old)
    for name in ["old"] + list(VARIANTS):
        fast = simulate.World(catalogs[name]).run(reqs, until=end)
        ref = simulate.World(catalogs[name], reference=True).run(reqs, until=end)
        assert fast.ledgers == ref.ledgers, name
        assert [(o.ok, o.kind, o.message, o.view) for o in fast.outcomes] == \
               [(o.ok, o.kind, o.message, o.view) for o in ref.outcomes], name
        for phone in ledgers:
            assert fast.figures(phone, end) == ref.figures(phone, end)


def test_merged_is_heapq_merge():
    """requests_of's one sort gives heapq.merge's order, even for lists not sorted by key (two
    requests of one ledger at one instant keep the ledger's order, whatever their priorities)."""
    rnd = random.Random(7)
    for _ in range(300):
        keyed = []
        for ledger in range(rnd.randrange(1, 6)):
            t, lst = 0, []
            for n in range(rnd.randrange(0, 8)):
                t += rnd.choice([0, 0, 1, 2])
                lst.append(((t, rnd.randrange(0, 7), f"p{ledger}", n), (ledger, n)))
            keyed.append(lst)
        assert simulate.merged(keyed) == [v for _, v in heapq.merge(*keyed, key=lambda x: x[0])]


def _generate(data: Path, members: int, seed: int):
    spec = importlib.util.spec_from_file_location("bonuscli_bench_generate", ROOT / "benchmarks" / "generate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.generate(data, members, members * 10, seed=seed)


def test_generated_directory(tmp_path, catalogs, monkeypatch):
    """A directory of benchmarks/generate.py (gifts across members): fast = reference, any jobs."""
    data = tmp_path / "d"
    _generate(data, 120, seed=5)
    ledgers = diff.read_ledgers(FileStore(data))
    old = catalogs["old"]
    now = dt.datetime(2025, 9, 1, tzinfo=old.tz)
    monkeypatch.setattr(simulate, "SERIAL_BELOW", 0)
    for name in ("mobile-4", "dearer-minutes", "stricter-gifts"):
        ref = diff.impact_reference(old, catalogs[name], ledgers, now)
        for jobs in (1, 2):
            assert same(diff.impact(old, catalogs[name], ledgers, now, jobs=jobs), ref), (name, jobs)
    # the data-directory path (`diff --ledgers`): ledgers read and replayed by groups in worker processes
    monkeypatch.setattr(diff, "PARALLEL_FROM", 2)
    monkeypatch.setattr(workers, "MIN_CHUNK", 1)  # a task per group of linked members: links must hold
    warned = []
    for name in ("mobile-4", "dearer-minutes"):
        ref = diff.impact_reference(old, catalogs[name], ledgers, now)
        for jobs in (2, 3):
            got = diff.impact_dir(old, catalogs[name], FileStore(data), now, jobs=jobs, warn=warned.append)
            assert same(got, ref), (name, jobs, "impact_dir")
    assert warned == []


def test_components_keep_linked_members_together(catalogs):
    """Members tied by a gift, a referral or a recorded gift id are in one group; a group's indices
    are its requests, in order."""
    old = catalogs["old"]
    ledgers, end = story(old, 3)
    reqs = [r for r in simulate.requests_of(ledgers, old) if r.at <= end]
    groups = simulate.components(reqs, sorted(ledgers))
    where = {p: k for k, (phones, _) in enumerate(groups) for p in phones}
    assert sorted(where) == sorted(set(ledgers) | {r.phone for r in reqs})
    assert sorted(i for _, idx in groups for i in idx) == list(range(len(reqs)))
    for _, idx in groups:
        assert idx == sorted(idx)
    for r in reqs:
        other = r.args.get("referrer") or r.args.get("to") or (r.args.get("from") if r.command == "accept" else None)
        if other and other in where:
            assert where[other] == where[r.phone], r


def test_parts_merged_by_their_keys_keep_the_global_order():
    """The Dask engine replays groups of ledgers apart and merges the outcome changes of each group
    (a subsequence of its requests) by `merged(..., with_keys=True)`'s keys: that must give exactly the
    order of the requests of all ledgers merged at once, whatever the grouping and whichever requests
    changed. (Merging by each request's own key does not: a request that waits behind a larger key in
    its own ledger would come out early once the one ahead of it is not among the changes.)"""
    for seed in range(3000):
        rnd = random.Random(seed)
        ledgers = []
        for p in range(rnd.randint(2, 5)):
            times = sorted(rnd.randint(0, 2) for _ in range(rnd.randint(1, 5)))  # times only move forward
            ledgers.append([((t, rnd.randint(0, 4), p, n), (p, n)) for n, t in enumerate(times)])
        whole = simulate.merged(ledgers)
        groups: dict = {}
        for lst in ledgers:
            groups.setdefault(rnd.randint(0, 2), []).append(lst)
        changed = {v for lst in ledgers for _k, v in lst if rnd.random() < 0.7}
        parts = [[(k, v) for k, v in simulate.merged(g, with_keys=True) if v in changed] for g in groups.values()]
        assert [v for _k, v in heapq.merge(*parts, key=lambda x: x[0])] == [v for v in whole if v in changed], seed


def test_an_unreadable_ledger_is_the_same_error_on_every_path(tmp_path, catalogs, monkeypatch):
    """diff --ledgers on a directory with a corrupt ledger: the error (kind, path:line) is the one
    `read_ledgers` raises, whether one process reads the ledgers or worker processes do."""
    data = tmp_path / "d"
    _generate(data, 60, seed=3)
    bad = sorted((data / "ledgers").iterdir())[41]
    with open(bad, "ab") as f:
        f.write(b"{not json\n")
    old, new = catalogs["old"], catalogs["mobile-4"]
    now = dt.datetime(2025, 9, 1, tzinfo=old.tz)
    errors = []
    for jobs, parallel_from in ((1, 400), (2, 2)):
        monkeypatch.setattr(diff, "PARALLEL_FROM", parallel_from)
        with pytest.raises(BonusError) as e:
            diff.impact_dir(old, new, FileStore(data), now, jobs=jobs)
        errors.append((type(e.value).__name__, e.value.kind, e.value.message))
    assert errors[0] == errors[1]
    assert errors[0][1] == "ledger-corrupt" and f"{bad}:" in errors[0][2]
