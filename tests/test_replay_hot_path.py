"""The replay's hot path (`rules.replay._earns`: runs of plain earns applied with the state in local
variables) lives inside `play` and `extend`, never beside them: turned off (`replay.HOT_PATH =
False`), every answer is the same; wrong, this test fails. Random histories of two members (earns
of every category, refunds, credits and debits, redemptions, gifts and accepts, over more than a
year so lots expire) are written through the one service path, then replayed both ways and
compared at several moments, and built line by line with `extend` against a replay of the whole."""

from __future__ import annotations

import datetime as dt
import importlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bonuscli import catalog as catalog_mod
from bonuscli import rules, service
from bonuscli.commands import COMMANDS
from bonuscli.model import BonusError
replay = importlib.import_module("bonuscli.rules.replay")  # the module (`rules.replay` is its function)

CAT = catalog_mod.load(catalog_mod.default_path(), "catalog.yaml")
A, B = "9161234567", "9167654321"
START = int(dt.datetime(2025, 1, 6, 10, 0, tzinfo=dt.timezone.utc).timestamp())
CATEGORIES = sorted(CAT.categories)
CHEAP = sorted(code for code, r in CAT.rewards.items() if code != CAT.store_discount.reward)

earn = st.tuples(st.just("earn"), st.sampled_from(CATEGORIES), st.integers(1, 2_000_000))
step = st.one_of(
    earn, earn, earn,
    st.tuples(st.just("refund"), st.integers(0, 40), st.integers(1, 100)),
    st.tuples(st.just("adjust"), st.integers(-400, 600)),
    st.tuples(st.just("redeem"), st.sampled_from(CHEAP)),
    st.tuples(st.just("gift"), st.integers(1, 300), st.booleans()),
)
history = st.lists(st.tuples(st.integers(1, 9 * 86400), step), min_size=5, max_size=60)


def write(steps) -> tuple:
    """The ledgers a history writes (refusals are simply not written), and its last instant."""
    svc = service.in_memory(CAT)
    t = START
    today = dt.date(2025, 1, 6)
    for phone in (A, B):
        svc.run("join", COMMANDS["join"].build(CAT, {"phone": phone, "region": "RU-MOW", "method": "store",
                                                      "customer_since": "2023-01-01"}, today), t)
    refs = []
    for n, (gap, s) in enumerate(steps):
        t += gap
        who = A if n % 3 else B
        try:
            if s[0] == "earn":
                refs.append((who, f"r{n}"))
                amount = f"{s[2] // 100}.{s[2] % 100:02d}" if s[2] >= 100 else "1.00"
                svc.run("earn", COMMANDS["earn"].build(CAT, {"phone": who, "amount": amount, "category": s[1],
                                                             "ref": f"r{n}"}, None), t)
            elif s[0] == "refund" and refs:
                phone, ref = refs[s[1] % len(refs)]
                svc.run("refund", COMMANDS["refund"].build(CAT, {"phone": phone, "ref": ref,
                                                                 "amount": f"{s[2]}.00"}, None), t)
            elif s[0] == "adjust" and s[1]:
                svc.run("adjust", COMMANDS["adjust"].build(CAT, {"phone": who, "points": s[1],
                                                                 "reason": "test"}, None), t)
            elif s[0] == "redeem":
                svc.run("redeem", COMMANDS["redeem"].build(CAT, {"phone": who, "code": s[1]}, None), t)
            elif s[0] == "gift":
                other = B if who == A else A
                view = svc.run("gift", COMMANDS["gift"].build(CAT, {"from": who, "to": other, "points": s[1]},
                                                              None), t)
                if s[2]:
                    t += 3600
                    svc.run("accept", COMMANDS["accept"].build(CAT, {"phone": other, "gift": view["gift_id"]},
                                                               None), t)
        except BonusError:
            pass
    return {p: list(svc.store.read(p).events) for p in svc.store.phones()}, t


def state(m, t) -> tuple:
    return (rules.balance(m, t).view, m.totals, [lot[:3] for lot in m.lots[m.head:]], m.debt, m.repaid,
            sorted(m.earns.items()), sorted(m.month_spend.items()), m.count)


def replayed(ledgers, phone, t, hot: bool) -> tuple:
    was = replay.HOT_PATH
    replay.HOT_PATH = hot
    try:
        events = ledgers[phone]
        peers = {p: ledgers[p] for p in rules.peers_needed(events, t) if p != phone}
        return state(rules.replay(CAT, phone, events, t, peers), t)
    finally:
        replay.HOT_PATH = was


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(history)
def test_the_hot_path_changes_no_answer(steps):
    ledgers, end = write(steps)
    moments = [START + (end - START) // 2, end, end + 200 * 86400, end + 400 * 86400]
    for phone in ledgers:
        for t in moments:
            assert replayed(ledgers, phone, t, True) == replayed(ledgers, phone, t, False), (phone, t)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(history)
def test_extend_line_by_line_is_a_replay_of_the_whole(steps):
    """What a simulation and a batch do (extend a live member with each line it writes) gives what a
    replay of the whole ledger gives, with the hot path on."""
    ledgers, end = write(steps)
    phone = A if not any(e["type"].startswith("gift") for e in ledgers[A]) else None
    if phone is None:
        return  # a gift's outcome depends on the other ledger: `extend` is used only without one
    events = ledgers[phone]
    m = rules.play(rules.Member(CAT, phone), [], rules.instant(events[0]["at"]), {})
    for e in events:
        rules.extend(m, e)
    rules.advance_to(m, end)
    assert state(m, end) == replayed(ledgers, phone, end, True)


def test_the_histories_reach_the_hot_path():
    """Or the comparison above proves nothing: a plain run of earns is applied by `_earns`."""
    calls = []
    real = replay._earns

    def counting(m, own, i):
        j = real(m, own, i)
        calls.append(j - i)
        return j

    ledgers, end = write([(86400, ("earn", "mobile", 50_000)), (86400, ("earn", "taxi", 70_000)),
                          (86400, ("earn", "mobile", 90_000))] * 3)
    replay._earns = counting
    try:
        replayed(ledgers, A, end, True)
    finally:
        replay._earns = real
    assert sum(calls) >= 3
