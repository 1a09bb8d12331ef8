"""`report --from/--until`: a partial period reconciles its own period (CLI.md `report`, issue 24
item 5): the balance at its start (outstanding + held - debt as of the last second before --from)
plus the period's flows is the balance at its end (as of the last second of --until, or --at when
earlier), as hledger's `balance -b` reads; never a line that does not add up.

Every opening and closing is checked against a figure found another way: `report --at` that
instant (or the per-member summaries as of it, for a region whose members moved), never against
the flows themselves.

The directory (built once, through the CLI):

  F  RU-SPE  2024-02-10 join: welcome 150, expires 2025-02-10
  A  RU-MOW  2024-06-01 join: welcome 150 (expires 2025-06-01)
  B  RU-MOW  2024-06-02 join: welcome 150
  G  RU-SPE  2024-06-03 join: welcome 150
  A          2024-07-01 earn 2000 mobile: 400
  F -> G     2025-02-05 gift 100 (F's welcome lot, expiring 2025-02-10): G never answers; the 100
             expire while held on 2025-02-10 (deadline 2025-03-07: nothing comes back)
  A -> B     2024-08-10 gift 120, accepted 2024-08-12
  B          2024-09-01 earn 2000 mobile ref b1: 400; 2024-09-05 refund 1000 of it: 200
  A          2024-10-01 adjust -30; 2024-11-01 redeem minutes_30 (210)
  A -> B     2024-12-01 gift 50, still pending on 2024-12-20 (held), rejected 2024-12-21
  X  RU-SPE  2024-07-01 join: welcome 150; G -> X 2024-08-01 gift 60, accepted 2024-08-02;
             X leaves 2024-09-01 (210 forfeited) and joins again in RU-MOW on 2024-10-01
             (welcome 150): its gift came from RU-SPE, so RU-MOW's periods show it as gifts in
  B          2025-03-15 leave
"""

from __future__ import annotations

import datetime as dt
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bonuscli import catalog as catalog_mod
from bonuscli import fleet
from bonuscli import requests as rq
from bonuscli import service as service_mod
from bonuscli.model import BonusError
from conftest import Run

A, B, F, G, X = "9160000001", "9160000002", "9160000006", "9160000007", "9160000008"
PHONES = [A, B, F, G, X]
ASOF = "2025-04-10T12:00"
NOW_REGIONS = {"RU-MOW": (A, B, X), "RU-SPE": (F, G)}
FLOWS = ("earned", "adjusted", "redeemed", "expired", "refunded", "forfeited")


@pytest.fixture(scope="module")
def program(tmp_path_factory):
    data = tmp_path_factory.mktemp("period") / "data"
    r = Run().in_dir(data)

    r("join", F, "--region", "RU-SPE", "--at", "2024-02-10T10:00")
    r("join", A, "--region", "RU-MOW", "--at", "2024-06-01T10:00")
    r("join", B, "--region", "RU-MOW", "--at", "2024-06-02T10:00")
    r("join", G, "--region", "RU-SPE", "--at", "2024-06-03T10:00")
    r("earn", A, "2000", "--category", "mobile", "--ref", "a1", "--at", "2024-07-01T10:00")
    r("join", X, "--region", "RU-SPE", "--at", "2024-07-01T11:00")
    g = r("gift", G, X, "60", "--at", "2024-08-01T10:00")
    r("accept", X, g["gift_id"], "--at", "2024-08-02T10:00")
    g = r("gift", A, B, "120", "--at", "2024-08-10T10:00")
    r("accept", B, g["gift_id"], "--at", "2024-08-12T10:00")
    r("earn", B, "2000", "--category", "mobile", "--ref", "b1", "--at", "2024-09-01T10:00")
    r("refund", B, "b1", "--amount", "1000", "--at", "2024-09-05T10:00")
    assert r("leave", X, "--yes", "--at", "2024-09-01T12:00")["forfeited"] == 210
    r("adjust", A, "-30", "--reason", "correction", "--at", "2024-10-01T10:00")
    r("join", X, "--region", "RU-MOW", "--at", "2024-10-01T11:00")
    r("redeem", A, "minutes_30", "--at", "2024-11-01T10:00")
    g = r("gift", A, B, "50", "--at", "2024-12-01T10:00")
    r("accept", B, g["gift_id"], "--reject", "--at", "2024-12-21T10:00")
    r("gift", F, G, "100", "--at", "2025-02-05T10:00")
    r("leave", B, "--yes", "--at", "2025-03-15T10:00")
    return data


def report(data, *args, at=ASOF):
    res = Run()("--data-dir", str(data), "report", "--at", at, *args, "--json")
    assert res.exit_code == 0, (args, res.stdout, res.stderr)
    return res.json


def stock(doc) -> int:
    return doc["outstanding"] + doc["held"] - doc["debt"]


def flows_of_months(doc) -> dict:
    return {k: sum(m[k] for m in doc["months"]) for k in FLOWS}


def adds_up(p) -> bool:
    return (p["opening"] + p["earned"] + p["adjusted"] - p["redeemed"] - p["expired"] - p["refunded"]
            - p["forfeited"] + p["gifts"]) == p["closing"]


RANGES = [
    ("--from", "2024-09"),                                  # a month on, to --at
    ("--from", "2024-08", "--until", "2024-08"),            # YYYY-MM both: one month, before --at
    ("--from", "2024-12-01", "--until", "2024-12-20"),      # ends with a gift held
    ("--from", "2024-12-20", "--until", "2025-01-10"),      # starts with it held, then rejected
    ("--from", "2025-02-10", "--until", "2025-02-10"),      # one day: held points expire at its 00:00
    ("--from", "2025-02-11"),                               # just after
    ("--from", "2024"),                                     # YYYY
    ("--until", "2024-10"),                                 # no --from: from before the first event
    ("--from", "2025-04-10"),                               # the day of --at
    ("--from", "2025-05-01"),                               # after --at: nothing known yet
    ("--from", "2024-06-01", "--until", "2030-12-31"),      # ends after --at: closes at --at
]


@pytest.mark.parametrize("rng", RANGES, ids=lambda r: " ".join(r))
@pytest.mark.parametrize("region", [None, "RU-MOW", "RU-SPE"])
def test_period_reconciles_against_reports_at_its_ends(program, rng, region):
    args = list(rng) + (["--region", region] if region else [])
    doc = report(program, *args)
    p = doc["period"]
    # the flows are the months shown
    assert {k: p[k] for k in FLOWS} == flows_of_months(doc)
    assert adds_up(p), p
    # the opening and closing, found independently: the report as of those instants
    if region:  # X moved from RU-SPE to RU-MOW in 2024-10: the regions of --at are A B X and F G
        def balance_at(at):
            return sum(member_stock(program, phone, at) for phone in NOW_REGIONS[region])
    else:
        def balance_at(at):
            return stock(report(program, at=at))
    if p["opening_at"] is None:
        assert "--from" not in args and p["opening"] == 0
    else:
        assert p["opening"] == balance_at(p["opening_at"]), (p["opening_at"], p)
    assert p["closing"] == balance_at(p["closing_at"]), (p["closing_at"], p)
    if region is None:
        assert p["gifts"] == 0  # gifts move points between members, never in or out of the program


def member_stock(data, phone, at) -> int:
    res = Run()("--data-dir", str(data), "balance", phone, "--at", at, "--json")
    if res.exit_code == 1:  # not a member yet
        return 0
    assert res.exit_code == 0, res.stderr
    b = res.json
    return b["available"] + b["held_out"] - b["debt"]


def test_period_instants(program):
    p = report(program, "--from", "2024-08", "--until", "2024-08")["period"]
    assert (p["from"], p["until"]) == ("2024-08-01", "2024-08-31")
    assert (p["opening_at"], p["closing_at"]) == ("2024-07-31T23:59:59+03:00", "2024-08-31T23:59:59+03:00")
    p = report(program, "--from", "2025-02-11")["period"]
    assert (p["opening_at"], p["closing_at"], p["until"]) == ("2025-02-10T23:59:59+03:00", "2025-04-10T12:00:00+03:00",
                                                              None)
    p = report(program, "--from", "2025-05-01")["period"]  # after --at: both ends are --at, nothing moved
    assert p["opening_at"] == p["closing_at"] == "2025-04-10T12:00:00+03:00"
    assert p["opening"] == p["closing"] and not any(p[k] for k in FLOWS)


def test_period_figures_by_hand(program):
    # 2025-02-10 alone: F's 100 held in the gift to G expire at its 00:00, the last of F's welcome
    # lot (50 left after the gift) with them; nothing else moves
    p = report(program, "--from", "2025-02-10", "--until", "2025-02-10")["period"]
    assert (p["expired"], p["closing"] - p["opening"]) == (150, -150)
    # 2024-12-01..20: the gift of 50 is offered and still held at the end: no flow, the same balance
    p = report(program, "--from", "2024-12-01", "--until", "2024-12-20")["period"]
    assert p["opening"] == p["closing"] and not any(p[k] for k in FLOWS)
    # RU-MOW over 2024-08: X (RU-MOW now) received 60 from G (RU-SPE) on 2024-08-02: gifts in; A's
    # gift to B stays inside the region
    p = report(program, "--region", "RU-MOW", "--from", "2024-08", "--until", "2024-08")["period"]
    assert p["gifts"] == 60
    p = report(program, "--region", "RU-SPE", "--from", "2024-08", "--until", "2024-08")["period"]
    assert p["gifts"] == -60


def test_regions_add_up_to_the_program(program):
    for rng in RANGES:
        whole = report(program, *rng)["period"]
        parts = [report(program, *rng, "--region", r)["period"] for r in ("RU-MOW", "RU-SPE")]
        for k in ("opening", "closing", "gifts") + FLOWS:
            assert whole[k] == sum(p[k] for p in parts), (rng, k)


def equation(stdout: str) -> tuple:
    """The human reconciliation line: (terms with their signs, the right-hand side)."""
    line = next(ln for ln in stdout.splitlines() if ln.startswith("opening ") and "= closing" in ln)
    left, right = line.split(" = closing ")
    terms = re.findall(r"(?:^|\s([+-])\s)([a-z][a-z ]*?) (-?\d+)", left)
    assert " ".join(f"{s} {n} {v}" if s else f"{n} {v}" for s, n, v in terms) == left, (terms, left)
    return [(sign or "+", name, int(n)) for sign, name, n in terms], int(right)


@pytest.mark.parametrize("rng", RANGES[:4] + RANGES[7:8], ids=lambda r: " ".join(r))
@pytest.mark.parametrize("region", [None, "RU-MOW"])
def test_human_output_shows_a_period_line_that_adds_up(program, rng, region):
    args = list(rng) + (["--region", region] if region else [])
    res = Run()("--data-dir", str(program), "report", "--at", ASOF, *args)
    assert res.exit_code == 0, res.stderr
    doc = report(program, *args)
    p = doc["period"]
    terms, closing = equation(res.stdout)
    assert closing == p["closing"]
    assert sum(n if sign == "+" else -n for sign, _name, n in terms) == closing, res.stdout
    assert terms[0] == ("+", "opening", p["opening"])
    if p["gifts"]:
        assert ("+" if p["gifts"] > 0 else "-", "gifts in" if p["gifts"] > 0 else "gifts out", abs(p["gifts"])) in terms
    # the instants of both ends are shown, and never the all-months line that only holds over all months
    assert f"as of {p['closing_at']}" in res.stdout
    assert "outstanding " + str(doc["outstanding"]) + " + held" not in res.stdout


def test_without_a_range_the_all_months_reconciliation(program):
    res = Run()("--data-dir", str(program), "report", "--at", ASOF)
    doc = report(program)
    r = fleet.reconciliation(doc)
    assert f"= {r['flow']}\noutstanding {doc['outstanding']} + held {doc['held']} - debt {doc['debt']} = " \
           f"{stock(doc)}" in res.stdout
    assert r["flow"] == stock(doc)
    p = doc["period"]
    assert (p["from"], p["until"], p["opening_at"], p["opening"]) == (None, None, None, 0)
    assert (p["closing_at"], p["closing"]) == (doc["as_of"], stock(doc))
    # RU-MOW over all months: the 60 gifted in from RU-SPE (X moved) is a term of the line, which adds up
    res = Run()("--data-dir", str(program), "report", "--at", ASOF, "--region", "RU-MOW")
    doc = report(program, "--region", "RU-MOW")
    r = fleet.reconciliation(doc)
    assert doc["period"]["gifts"] == 60
    assert f" + gifts in 60 = {r['flow'] + 60}\noutstanding" in res.stdout
    assert r["flow"] + 60 == stock(doc)


def test_period_same_whatever_the_jobs(program, monkeypatch):
    monkeypatch.setattr(fleet, "SERIAL_BELOW", 0)  # the process pool even for this small directory
    for args in (("--from", "2024-09", "--until", "2025-02-10"), ("--region", "RU-MOW", "--from", "2024-08")):
        one = report(program, *args, "--jobs", "1")
        assert report(program, *args, "--jobs", "2") == one
        assert adds_up(one["period"])


# ---------------------------------------------------------------- any history, any range

_CAT = catalog_mod.load(catalog_mod.default_path(), "catalog.yaml")
_PHONES = ["9160000001", "9160000002", "9160000003", "9160000004"]
_REGIONS = ["RU-MOW", "RU-SPE"]
_OPS = st.lists(st.tuples(
    st.sampled_from(["earn", "earn", "redeem", "gift", "gift", "gift", "accept", "accept", "accept", "reject", "refund",
                     "adjust", "leave", "join", "move", "move"]),
    st.integers(0, 3), st.integers(0, 3), st.integers(1, 5000), st.integers(1, 40)), min_size=5, max_size=40)


def _history(ops):
    """An in-memory program of four members (two regions) after `ops`: (service, the instants of the
    ops). Gifts pending, accepted, rejected or returned, expiry (held points too), refunds into debt,
    operators' debits, leaving, joining again, and moving region (leave and join the other one: the
    member's past gifts then crossed regions)."""
    svc = service_mod.in_memory(_CAT)
    t = dt.datetime(2024, 1, 1, 10, 0, tzinfo=_CAT.tz)
    refs, gifts, times = {p: [] for p in _PHONES}, [], [t]

    def attempt(fn):
        try:
            return fn()
        except BonusError:
            return None

    for i, p in enumerate(_PHONES):
        svc.join(rq.join(_CAT, t.date(), p, _REGIONS[i % 2]), t)
        svc.earn(rq.earn(_CAT, p, "5000", "mobile", f"start{i}"), t)  # 1000 points to give, spend and refund
        refs[p].append(f"start{i}")

    def region_of(phone):
        s = attempt(lambda: svc.summary(phone, t))
        return s and s["region"]
    for i, (op, a, b, n, days) in enumerate(ops):
        t += dt.timedelta(days=days, hours=n % 14, minutes=n % 60)
        times.append(t)
        pa, pb = _PHONES[a], _PHONES[b]
        if op == "earn":
            ref = f"r{i}"
            if attempt(lambda: svc.earn(rq.earn(_CAT, pa, str(n), "mobile", ref), t)):
                refs[pa].append(ref)
        elif op == "redeem":
            for _ in range(1 + n % 20):  # 30 points each
                attempt(lambda: svc.redeem(rq.redeem(_CAT, pa, "black_list"), t))
                t += dt.timedelta(seconds=1)
        elif op == "gift":  # to a member of the sender's region (as of now: members move)
            peers = [q for q in _PHONES if q != pa and region_of(q) == region_of(pa)]
            if peers:
                pb = peers[b % len(peers)]
                g = attempt(lambda: svc.gift(rq.gift(_CAT, pa, pb, str(n % 300 + 1)), t))
                if g:
                    gifts.append((pb, g["gift_id"]))
        elif op in ("accept", "reject") and gifts:
            to, gid = gifts.pop(-1 if n % 2 else n % len(gifts))  # the latest: still pending, most often
            attempt(lambda: svc.accept(rq.accept(to, gid, op == "reject"), t))
        elif op == "refund" and refs[pa]:  # in part, or in full (into debt when the points are spent)
            ref = refs[pa][n % len(refs[pa])]
            attempt(lambda: svc.refund(rq.refund(_CAT, pa, ref, str(n % 700 + 1) if n % 2 else None), t))
        elif op == "adjust":
            attempt(lambda: svc.adjust(rq.adjust(_CAT, pa, str(n if n % 3 else -n // 10 - 1), "x"), t))
        elif op == "leave" and n % 3 == 0:
            attempt(lambda: svc.leave(pa, t))
        elif op == "join":  # a leaver may come back, in either region
            attempt(lambda: svc.join(rq.join(_CAT, t.date(), pa, _REGIONS[n % 2]), t))
        elif op == "move":
            s = attempt(lambda: svc.summary(pa, t))
            if s and attempt(lambda: svc.leave(pa, t)):
                t += dt.timedelta(minutes=1)
                other = _REGIONS[1 - _REGIONS.index(s["region"])]
                attempt(lambda: svc.join(rq.join(_CAT, t.date(), pa, other), t))
    return svc, times


def _stock_as_of(svc, phones, at) -> int:
    """outstanding + held - debt of `phones` as of `at`, from their report summaries as of then."""
    total = 0
    for phone in phones:
        s = svc.summary(phone, at)
        if s is not None:
            total += s["available"] + s["held"] - s["debt"]
    return total


def _midnight(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=_CAT.tz)


_END = st.one_of(st.none(), st.tuples(st.integers(0, 10**6), st.sampled_from([-1, 0, 0, 1])))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_OPS, _END, _END, st.integers(0, 10**6), st.integers(-30, 120))
def test_period_reconciles_on_random_histories(ops, start, end, at_index, later):
    """For any history, any --from/--until (often on a day something happened, or next to it) and any
    --at (after the history or inside it), in each region and over the whole program: the opening
    and closing are the balances as of the period's ends, read independently, and opening + flows
    (+ gifts across the region's edge) = closing."""
    svc, times = _history(ops)
    now = times[at_index % len(times)] + dt.timedelta(days=later)
    lo = None if start is None else (times[start[0] % len(times)] + dt.timedelta(days=start[1])).date()
    hi = None if end is None else (times[end[0] % len(times)] + dt.timedelta(days=end[1])).date()
    _check_periods(svc, now, lo, hi)


_KINDS = ["earn", "redeem", "gift", "gift", "gift", "accept", "accept", "accept", "accept", "reject", "refund",
          "adjust", "leave", "join", "move", "move"]


@pytest.mark.parametrize("seed", range(40))
def test_period_reconciles_on_seeded_histories(seed):
    """The same checks on histories drawn uniformly (hypothesis favours small numbers, so its
    histories seldom reach a debt, a held gift at a period's end or a gift across regions)."""
    import random

    rnd = random.Random(seed)
    ops = [(rnd.choice(_KINDS), rnd.randint(0, 3), rnd.randint(0, 3), rnd.randint(1, 5000), rnd.randint(1, 40))
           for _ in range(rnd.randint(20, 60))]
    svc, times = _history(ops)
    for _ in range(4):
        now = rnd.choice(times) + dt.timedelta(days=rnd.randint(-5, 60))
        lo, hi = sorted((rnd.choice(times) + dt.timedelta(days=rnd.choice([-1, 0, 1]))).date() for _ in range(2))
        _check_periods(svc, now, *rnd.choice([(lo, hi), (lo, None), (None, hi), (lo, lo)]))


def _check_periods(svc, now, lo, hi):
    if lo is not None and hi is not None and hi < lo:
        lo, hi = hi, lo
    whole = None
    parts = []
    for region in (None, "RU-MOW", "RU-SPE"):
        doc = fleet.report(svc, now, region, lo, hi)
        p = doc["period"]
        assert {k: p[k] for k in FLOWS} == flows_of_months(doc)
        assert adds_up(p), (region, p)
        # the ends: the last second before --from, the last second of --until (never after --at)
        opening_at = None if lo is None else min(_midnight(lo) - dt.timedelta(seconds=1), now)
        closing_at = now if hi is None else min(_midnight(hi + dt.timedelta(days=1)) - dt.timedelta(seconds=1), now)
        assert p["opening_at"] == (None if opening_at is None else opening_at.isoformat())
        assert p["closing_at"] == closing_at.isoformat()
        # independently: the members of the region (as of --at) as of each end
        chosen = [ph for ph in _PHONES if (s := svc.summary(ph, now)) is not None and region in (None, s["region"])]
        assert p["opening"] == (0 if opening_at is None else _stock_as_of(svc, chosen, opening_at))
        assert p["closing"] == _stock_as_of(svc, chosen, closing_at)
        if region is None:
            whole = p
            assert p["gifts"] == 0
            if lo is None and hi is None:
                assert p["closing"] == stock(doc)
        else:
            parts.append(p)
    for k in ("opening", "closing", "gifts") + FLOWS:
        assert whole[k] == sum(p[k] for p in parts), k


def test_a_torn_line_is_warned_once(run, data_dir):
    """The period's extra replays (as of its ends) read the ledger again: its warning is still one line."""
    run.j("join", A, "--region", "RU-MOW", "--at", "2025-01-10T10:00")
    run.j("earn", A, "1000", "--category", "mobile", "--ref", "a1", "--at", "2025-01-20T10:00")
    with open(data_dir / "ledgers" / f"{A}.jsonl", "ab") as f:
        f.write(b'{"v":2,"id":"torn')
    r = run("report", "--at", ASOF, "--from", "2025-01-15", "--until", "2025-02-01")
    assert r.exit_code == 0, r.stderr
    assert r.stderr.count("unfinished last line") == 1, r.stderr
    assert "opening 150 + earned 200 + adjusted 0 - redeemed 0 - expired 0 - refunded 0 - forfeited 0 = closing 350" \
        in r.stdout
