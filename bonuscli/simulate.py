"""Replay the requests recorded in ledgers under another catalog, in memory.

Owns: turning stored events back into the requests that made them (join, earn,
redeem, gift, accept/reject, leave, refund, adjust), and a `World` that
re-decides those requests in global time order through the one service path
(`Service.transact` on a MemoryStore: replay the members involved and only the
peers they name, decide, append the decision's events after the members'
seals). Nothing here reads or writes a file. Used by `diff --ledgers` /
`diff --scenario`. Imports model, rules, service.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Optional

from bonuscli import rules, service
from bonuscli.rules import instant
from bonuscli.model import SCHEMA_VERSION, BonusError, Catalog, Refusal, from_iso, Record

# event types that are a request's own authoritative record; the rest
# (gift_in, gift_settle, referral, referral_settle, repair, gift_reject by
# leaving) are consequences that re-deciding the request writes again.
REQUEST_TYPES = ("join", "earn", "redeem", "gift_out", "gift_accept", "gift_reject", "leave", "refund", "adjust")
PRIORITY = {"join": 0, "earn": 2, "adjust": 2, "refund": 3, "redeem": 3, "gift": 4, "accept": 5,
            "leave": 6}  # ties between ledgers


class Request(Record):
    at: dt.datetime
    phone: str
    command: str  # join | earn | redeem | gift | accept | leave
    args: dict
    source: str  # the ledger event id it was read from

    def describe(self) -> str:
        a = self.args
        if self.command == "join" and not a.get("welcome", True):
            return f"join {self.phone} --region {a['region']} (an opening-balance import, no welcome points)"
        if self.command == "join":
            return f"join {self.phone} --region {a['region']} --method {a['method']}"
        if self.command == "earn":
            return f"earn {self.phone} {a['amount']} --category {a['category']}" + (f" --ref {a['ref']}" if a.get("ref") else "")
        if self.command == "redeem":
            text = f"redeem {self.phone} {a['code']} --via {a['channel']}"
            if a.get("price_rub") is not None:
                text += f" --price {a['price_rub']} --points {a['points']}"
            return text
        if self.command == "gift":
            return f"gift {self.phone} {a['to']} {a['points']}"
        if self.command == "accept":
            return f"accept {self.phone} {a['gift_id']}" + (" --reject" if a.get("reject") else "")
        if self.command == "refund":
            return f"refund {self.phone} {a['ref']} --amount {a['amount']}" + (
                f" --ref {a['refund_ref']}" if a.get("refund_ref") else "")
        if self.command == "adjust":
            return f"adjust {self.phone} {a['points']:+d} --reason {a['reason']!r}" + (
                f" --expires-on {a['expires_on']}" if a.get("expires_on") else "")
        return f"leave {self.phone} --yes"


def requests_of(ledgers: dict, cat: Optional[Catalog] = None, with_keys: bool = False) -> list:
    """Every request recorded in `ledgers` (phone -> events), oldest first.

    Each ledger's own order is kept (its time only moves forward). Between
    ledgers, requests of the same instant go in the order that lets the later
    depend on the earlier: joins without a referrer, joins with one, earns,
    redemptions, gifts, accepts, leaves; then by phone.
    A `gift_out` whose `gift_in` was never written (an offer cut short by a
    crash) was never made and is left out. A first join recorded without
    welcome points and followed at the same instant by an adjustment is an
    opening-balance import (`adjust --from` with a region) and is replayed as
    one. A credit's `expires_on` equal to the default of `cat` (the catalog the
    ledgers were written under, as far as we know) is replayed as the default.
    """
    made = {e["gift_id"] for evs in ledgers.values() for e in evs if e.get("type") == "gift_in"}
    per_ledger = []
    for phone in sorted(ledgers):
        out = []
        per_ledger.append(out)
        joined = False
        for n, e in enumerate(ledgers[phone]):
            t = e.get("type")
            if t not in REQUEST_TYPES:
                continue
            at = from_iso(e["at"])
            if t == "join":
                events = ledgers[phone]
                first = not joined
                joined = True
                nxt = events[n + 1] if n + 1 < len(events) else None
                imported = (first and not e.get("welcome") and nxt is not None and nxt.get("type") == "adjust"
                            and nxt.get("at") == e["at"])
                args = {"region": e["region"], "method": e["method"], "services": list(e.get("services") or ["mobile"]),
                        "customer_since": e.get("customer_since"), "email": e.get("email"),
                        "birth_date": e.get("birth_date"), "referrer": e.get("referrer"), "welcome": not imported}
                out.append(((at, phone, n), Request(at, phone, "join", args, e["id"])))
            elif t == "earn":
                args = {"amount": e["amount"], "category": e["category"], "ref": e.get("ref")}
                out.append(((at, phone, n), Request(at, phone, "earn", args, e["id"])))
            elif t == "redeem":
                args = {"code": e["code"], "channel": e.get("channel", "web"), "price_rub": e.get("price_rub"),
                        "points": e["points"] if e.get("price_rub") is not None else None}
                out.append(((at, phone, n), Request(at, phone, "redeem", args, e["id"])))
            elif t == "gift_out":
                if e["gift_id"] not in made:
                    continue
                args = {"to": e["to"], "points": e["points"], "gift_id": e["gift_id"]}
                out.append(((at, phone, n), Request(at, phone, "gift", args, e["id"])))
            elif t in ("gift_accept", "gift_reject"):
                if t == "gift_reject" and e.get("reason") == "left":
                    continue  # written by `leave`, which is replayed itself
                args = {"gift_id": e["gift_id"], "from": e["from"], "reject": t == "gift_reject"}
                out.append(((at, phone, n), Request(at, phone, "accept", args, e["id"])))
            elif t == "leave":
                out.append(((at, phone, n), Request(at, phone, "leave", {}, e["id"])))
            elif t == "refund":
                args = {"ref": e["earn_ref"], "amount": e["amount"], "refund_ref": e.get("ref")}
                out.append(((at, phone, n), Request(at, phone, "refund", args, e["id"])))
            elif t == "adjust":
                exp = e.get("expires_on")
                if exp is not None and cat is not None and exp == rules.expiry_date(cat, at).isoformat():
                    exp = None
                args = {"points": e["points"], "reason": e.get("reason", ""), "ref": e.get("ref"), "expires_on": exp}
                out.append(((at, phone, n), Request(at, phone, "adjust", args, e["id"])))
    keyed = [[((_micros(key[0]), PRIORITY.get(r.command, 9) + (1 if r.args.get("referrer") else 0), key[1], key[2]), r)
              for key, r in lst] for lst in per_ledger]
    return merged(keyed, with_keys)


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_MICRO = dt.timedelta(microseconds=1)


def _micros(at: dt.datetime) -> int:
    """An aware datetime as whole microseconds since the epoch: the same order as the datetimes."""
    return (at - _EPOCH) // _MICRO


def merged(keyed: list, with_keys: bool = False) -> list:
    """What `heapq.merge(*keyed, key=first)` yields (the values), for lists of (key, value) whose keys
    are unique across all lists (they name the ledger and the position), in one sort.

    A list need not be sorted by key itself (two requests of one ledger at the same instant keep the
    ledger's order whatever their priorities), so the merge is not a sort by key: it yields each
    value when its list's head is the smallest head. That is a sort by the largest key of the value
    and those before it in its list (a value waits behind a larger key ahead of it, then is the
    smallest head), ties (only within one list) in the list's order."""
    flat = []
    for lst in keyed:
        top = None
        for i, (key, value) in enumerate(lst):
            if top is None or key > top:
                top = key
            flat.append((top, i, value))
    flat.sort(key=lambda x: (x[0], x[1]))
    if with_keys:  # each value's place in the order, comparable across calls (the Dask engine merges by it)
        return [((top, i), v) for top, i, v in flat]
    return [v for _, _, v in flat]


class Outcome(Record):
    request: Request
    ok: bool
    kind: Optional[str]  # the refusal's kind, None when done
    message: Optional[str]
    view: Optional[dict]


class Sim:
    """The store of a simulation: each member's events kept as the stamped dicts the service would
    append (no bytes, no hash chain: nothing is ever written), and each member's state kept live.

    A member is always what `Service.member` gives on a MemoryStore (`Service._live`): carried
    forward (`rules.advance_to`) when nothing of it waits on another ledger, which is exactly a
    replay from scratch of its lines dated up to then; otherwise replayed from scratch with only the
    peers its unsettled gifts and referrals name. Decisions go through the rules as
    `Service.transact` sends them: seals first, ids `<phone>.<n>`."""

    def __init__(self, cat: Catalog):
        self.cat = cat
        self.events: dict = {}  # phone -> [stamped event], oldest first
        self.live: dict = {}  # phone -> Member holding every event of `events[phone]`, as of its `now`
        self.last: dict = {}  # phone -> the instant of the last event of `events[phone]`
        self.stats = {"replayed": 0, "resumed": 0, "snapshots_saved": 0, "peers_read": 0}

    def member(self, phone: str, t: int, full: bool = False):
        """As of `t` (`full`: as of the ledger's last event when that is later)."""
        events = self.events.get(phone, ())
        last = self.last.get(phone)
        if full and last is not None and last > t:
            t = last
        m = self.live.get(phone)
        if m is not None and m.count == len(events) and m.now is not None and t >= m.now:
            if m.gifts_out or m.gifts_in or m.referrals or m.sched or m.join is None:
                carry = rules.settled_state(m) and not rules.peers_of(m, t)
            else:  # what settled_state and peers_of answer for a member no gift or referral ever touched
                carry = True
            if carry:
                rules.advance_to(m, t)
                return m
        peers = {}
        for p in rules.peers_needed(events, t):
            if p != phone:
                self.stats["peers_read"] += 1
                peers[p] = self.events.get(p, ())
        self.stats["replayed"] += len(events)
        m = rules.play(rules.Member(self.cat, phone), events, t, peers)
        if last is None or t >= last:  # every line applied: it can be carried forward
            self.live[phone] = m
        else:
            self.live.pop(phone, None)
        return m

    def transact(self, phones, t: int, decide):
        """`Service.transact` without the store: the members as of `t`, the decision, its events
        appended (each member's seals first) and applied to the live states. The Refusal or the Decision."""
        phones = list(dict.fromkeys(phones))
        members = {p: self.member(p, t, full=True) for p in phones}
        result = decide(members)
        if isinstance(result, Refusal):
            return result
        cat, live, version = self.cat, self.live, SCHEMA_VERSION
        for phone, evs in result.writes:
            m = members.get(phone)
            stored = self.events.get(phone)
            if stored is None:
                stored = self.events[phone] = []
            if m is not None:
                if m.gifts_out or m.referrals:  # the only outcomes a seal records
                    evs = rules.seals(cat, m, t) + list(evs)
                count = m.count
            else:
                count = len(stored)
            keep = m is not None and live.get(phone) is m
            at = None
            for e in evs:
                count += 1
                line = {"v": version, "id": f"{phone}.{count}", "type": e["type"], "at": e["at"]}
                line.update(e)  # the same keys in the same order as service.stamp
                stored.append(line)
                if line["type"] != "repair":
                    at = instant(line["at"])
                if keep:
                    rules.extend(m, line, at)
            if at is not None:
                self.last[phone] = at
            if not keep:
                live.pop(phone, None)
        return result


class World:
    """Ledgers in memory, changed only by re-decided requests.

    By default on a `Sim` (the events as dicts, states live); `reference=True` runs the same
    requests through the one service path instead (`Service.transact` on a MemoryStore: lines
    encoded, chained, parsed back), the slower path the tests compare it with."""

    def __init__(self, cat: Catalog, reference: bool = False):
        self.cat = cat
        self.reference = reference
        self.svc = service.in_memory(cat) if reference else None
        self.sim = None if reference else Sim(cat)
        self.gift_ids: dict = {}  # gift id as recorded -> gift id in this world
        self.outcomes: list = []

    @property
    def stats(self) -> dict:
        return self.svc.stats if self.reference else self.sim.stats

    @property
    def ledgers(self) -> dict:
        """phone -> the events this world wrote (without the chain's `prev`)."""
        if self.reference:
            return {p: [{k: v for k, v in e.items() if k != "prev"} for e in self.svc.store.read(p).events]
                    for p in self.svc.store.phones()}
        return {p: list(evs) for p, evs in sorted(self.sim.events.items())}

    def member(self, phone: str, now):
        if self.reference:
            return self.svc.member(phone, now)
        return self.sim.member(phone, now if isinstance(now, int) else rules.seconds(now))

    def _transact(self, phones, now, decide):
        try:
            if not self.reference:
                return self.sim.transact(phones, now, decide)
            self.svc.transact(phones, now, lambda ms, t: _keep(decide(ms), self))
        except BonusError as e:
            return Refusal(e.exit_code, e.kind, e.message, tuple(e.steps))
        return self._last

    # -- one request
    def apply(self, req: Request) -> Outcome:
        try:
            result = self._decide(req)
        except (KeyError, ValueError, TypeError) as e:  # a request this catalog cannot even express
            result = Refusal(2, "cannot-replay", f"{type(e).__name__}: {e}")
        if isinstance(result, Refusal):
            out = Outcome(req, False, result.kind, result.message, None)
        else:
            out = Outcome(req, True, None, None, result.view)
        self.outcomes.append(out)
        return out

    def _decide(self, req: Request):
        cat, phone, a = self.cat, req.phone, req.args
        now = req.at if self.reference else rules.seconds(req.at)  # the rules read either as the same instant
        if req.command == "join":
            region = a["region"]
            if region not in cat.regions:
                return Refusal(2, "unknown-region", f"region {region} is not in this catalog")
            if a["method"] not in cat.methods:
                return Refusal(2, "unknown-method", f"join method {a['method']} is not in this catalog")
            known = cat.services_eligible + cat.services_ineligible
            for s in a["services"]:
                if s not in known:
                    return Refusal(2, "unknown-service", f"service {s} is not in this catalog")
            req_d = {"region": region, "method": a["method"], "services": list(a["services"])}
            if a.get("email"):
                req_d["email"] = a["email"]
            if a.get("birth_date"):
                req_d["birth_date"] = dt.date.fromisoformat(a["birth_date"])
            if a.get("customer_since"):
                req_d["customer_since"] = dt.date.fromisoformat(a["customer_since"])
            phones = [phone]
            if a.get("referrer"):
                req_d["referrer"] = a["referrer"]
                if a["referrer"] != phone:
                    phones.append(a["referrer"])
            return self._transact(phones, now, lambda ms: rules.join(cat, ms[phone], now, req_d,
                                                                     ms.get(req_d.get("referrer")),
                                                                     welcome=a.get("welcome", True)))
        if req.command == "earn":
            amount = Decimal(a["amount"])
            if amount > cat.amount_max:
                return Refusal(2, "bad-amount", f"amount {a['amount']} is above this catalog's {cat.amount_max}")
            return self._transact([phone], now, lambda ms: rules.earn(cat, ms[phone], now, amount, a["category"],
                                                                      a.get("ref"), explain=False))
        if req.command == "redeem":
            price = Decimal(a["price_rub"]) if a.get("price_rub") is not None else None
            return self._transact([phone], now, lambda ms: rules.redeem(cat, ms[phone], now, a["code"], a["channel"],
                                                                        price, a.get("points")))
        if req.command == "gift":
            to = a["to"]
            result = self._transact([phone, to], now, lambda ms: rules.gift(cat, ms[phone], ms[to], now, a["points"]))
            if not isinstance(result, Refusal):
                self.gift_ids[a["gift_id"]] = result.view["gift_id"]
            return result
        if req.command == "accept":
            gid = self.gift_ids.get(a["gift_id"])
            if gid is None:
                return Refusal(1, "gift-not-found", f"gift {a['gift_id']} was never offered under this catalog")
            sender = a["from"]
            return self._transact([phone, sender], now, lambda ms: rules.accept(cat, ms[phone], ms[sender], now, gid,
                                                                                a.get("reject", False)))
        if req.command == "leave":
            return self._transact([phone], now, lambda ms: rules.leave(cat, ms[phone], now))
        if req.command == "refund":
            amount = Decimal(a["amount"])
            return self._transact([phone], now, lambda ms: rules.refund(cat, ms[phone], now, a["ref"], amount,
                                                                        a.get("refund_ref")))
        if req.command == "adjust":
            exp = dt.date.fromisoformat(a["expires_on"]) if a.get("expires_on") else None
            return self._transact([phone], now, lambda ms: rules.adjust(cat, ms[phone], now, a["points"], a["reason"],
                                                                        a.get("ref"), exp))
        raise ValueError(f"unknown request {req.command}")

    def run(self, requests, until=None) -> "World":
        for req in requests:
            if until is not None and req.at > until:
                break
            self.apply(req)
        return self

    # -- results
    def figures(self, phone: str, now) -> dict:
        """available / earned / spent of one member as of `now` (reading only the peers it names)."""
        m = self.member(phone, now)
        return {"available": m.available(), "earned": m.totals["credited"], "spent": m.totals["spent"],
                "expired": m.totals["expired"], "forfeited": m.totals["forfeited"], "debt": m.debt,
                "refunded": m.totals["refunded"]}


def _keep(result, world):
    world._last = result
    return result


# ---------------------------------------------------------------- two catalogs, member by member

SERIAL_BELOW = 4000  # requests; a process pool costs more than it saves below this
_GIFT = "\0gift "  # a gift id's node among the phones (no phone starts with NUL)


def components(requests, phones) -> list:
    """The groups of members that requests can tie together, each as (phones, request indices).

    A request involves its member and the one it names (a join's referrer, a gift's recipient, an
    accept's sender); a gift and an accept of the same recorded gift id belong together too (the
    world maps recorded ids to its own). Nothing else crosses ledgers: the peers a replay reads are
    named by gifts and referrals, which only these requests write. So each group, replayed alone in
    the requests' order, gives what one world of everyone gives. Groups are in the order of their
    first request (members without requests last, by phone); a group's phones (those that make
    requests, and those of `phones` it holds) sorted, its indices ascending."""
    parent: dict = {}

    def find(x):
        root = x
        while True:
            up = parent.get(root, root)
            if up == root:
                break
            root = up
        while x != root:
            parent[x], x = root, parent[x]
        return root

    def union(a, b):
        a, b = find(a), find(b)
        if a != b:
            parent[max(a, b)] = min(a, b)

    for r in requests:
        a = r.args
        if r.command == "join" and a.get("referrer"):
            union(r.phone, a["referrer"])
        elif r.command == "gift":
            union(r.phone, a["to"])
            union(r.phone, _GIFT + a["gift_id"])
        elif r.command == "accept":
            union(r.phone, a["from"])
            union(r.phone, _GIFT + a["gift_id"])
    groups: dict = {}
    for i, r in enumerate(requests):
        g = groups.get(find(r.phone))
        if g is None:
            g = groups[find(r.phone)] = (set(), [])
        g[0].add(r.phone)
        g[1].append(i)
    for p in phones:
        g = groups.get(find(p))
        if g is None:
            g = groups[find(p)] = (set(), [])
        g[0].add(p)
    return [(sorted(ph), idx) for ph, idx in groups.values()]


def compare_group(old: Catalog, new: Catalog, requests, indices, phones, ledgers, now) -> tuple:
    """Replay one group's requests under both catalogs: ({phone: (old figures, new figures)} for
    the group's phones that have a ledger, [(index, old outcome, new outcome)] of the requests
    decided differently). Figures and outcomes as tuples (see `compare`)."""
    wo, wn = World(old), World(new)
    changed = []
    for i in indices:
        req = requests[i]
        a, b = wo.apply(req), wn.apply(req)
        if a.ok != b.ok or a.kind != b.kind:
            changed.append((i, (a.ok, a.kind, a.message, a.view.get("points_spent") if a.ok else None),
                            (b.ok, b.kind, b.message, b.view.get("points_spent") if b.ok else None)))
    figures = {}
    for p in phones:
        if p in ledgers:
            fo, fn = wo.figures(p, now), wn.figures(p, now)
            figures[p] = ((fo["available"], fo["earned"], fo["spent"], fo["debt"]),
                          (fn["available"], fn["earned"], fn["spent"], fn["debt"]))
    return figures, changed


_JOB: dict = {}  # what a forked worker of `compare` inherits: catalogs, ledgers, requests, groups


def _compare_groups(bounds) -> tuple:
    from bonuscli.service import gc_paused

    j = _JOB
    figures, changed = {}, []
    with gc_paused():
        for indices, phones in j["groups"][bounds[0]:bounds[1]]:
            f, c = compare_group(j["old"], j["new"], j["requests"], indices, phones, j["ledgers"], j["now"])
            figures.update(f)
            changed.extend(c)
    return figures, changed


def _worker_init(parent):
    from bonuscli.service import orphan_guard

    orphan_guard(parent)


def compare(old: Catalog, new: Catalog, ledgers: dict, requests, now, jobs=None) -> tuple:
    """Replay `requests` (requests_of's, in its order) dated up to `now` under both catalogs, group
    by group (`components`), on `jobs` processes (default: the core count). The same answer as two
    worlds of everyone, whatever `jobs`: ({phone: ((available, earned, spent, debt) old, ... new)}
    for every phone of `ledgers`, [(index, (ok, kind, message, points_spent) old, ... new)] of the
    requests decided differently, by index)."""
    import os

    from bonuscli.service import gc_paused

    upto = 0
    for r in requests:
        if r.at > now:
            break
        upto += 1
    jobs = jobs or os.cpu_count() or 1
    with gc_paused():
        groups = [(idx, ph) for ph, idx in components(requests[:upto], sorted(ledgers))]
        import multiprocessing

        if jobs <= 1 or upto < SERIAL_BELOW or len(groups) < 2 or "fork" not in multiprocessing.get_all_start_methods():
            _JOB.update(old=old, new=new, ledgers=ledgers, requests=requests, now=now, groups=groups)
            try:
                parts = [_compare_groups((0, len(groups)))]
            finally:
                _JOB.clear()
        else:
            parts = _pooled(old, new, ledgers, requests, now, groups, jobs, upto)
    figures, changed = {}, []
    for f, c in parts:
        figures.update(f)
        changed.extend(c)
    changed.sort(key=lambda x: x[0])
    return figures, changed


def _pooled(old, new, ledgers, requests, now, groups, jobs, total) -> list:
    """The groups in chunks of about total / (8 jobs) requests over forked workers, which inherit
    everything they read (only the answers travel back)."""
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor

    size = max(200, total // (jobs * 8))
    bounds, start, n = [], 0, 0
    for k, (idx, ph) in enumerate(groups):
        n += len(idx) + 1
        if n >= size:
            bounds.append((start, k + 1))
            start, n = k + 1, 0
    if start < len(groups):
        bounds.append((start, len(groups)))
    _JOB.update(old=old, new=new, ledgers=ledgers, requests=requests, now=now, groups=groups)
    try:
        with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("fork"),
                                 initializer=_worker_init, initargs=(os.getpid(),)) as pool:
            return list(pool.map(_compare_groups, bounds))
    finally:
        _JOB.clear()
