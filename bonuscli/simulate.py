"""Replay the requests recorded in ledgers under another catalog, in memory.

Owns: turning stored events back into the requests that made them (through the
registry: `commands.RECORDED`, `Command.values_of`), the order they are
re-decided in, and a `World` that re-decides them in that order through the one
service path (`Service.run`: the request built by `requests.py`, the members
involved read, the rules decide, the seals and stamps of every command), on a
store of plain events. Nothing here reads or writes a file. Used by
`diff --ledgers` / `diff --scenario`. Imports model, commands, rules, service.
"""

from __future__ import annotations

import datetime as dt
from typing import Optional

from bonuscli import rules, service
from bonuscli.commands import COMMANDS, RECORDED, Context, links_of, today_of
from bonuscli.model import BonusError, Catalog, Refusal, from_iso, Record

class Request(Record):
    at: dt.datetime
    phone: str
    command: str  # a name of commands.COMMANDS
    args: dict  # the values that made it (commands.Command.keys), rebuilt from its recorded event
    source: str  # the ledger event id it was read from
    links: tuple = ()  # what its recorded event ties its member to (commands.links_of)
    t: int = 0  # `at` as epoch seconds

    def describe(self) -> str:
        return COMMANDS[self.command].describe(self.phone, self.args)


def requests_of(ledgers: dict, cat: Optional[Catalog] = None, with_keys: bool = False) -> list:
    """Every request recorded in `ledgers` (phone -> events), oldest first: each event that is a
    command's own record (`commands.RECORDED`) turned back into the values that made it
    (`Command.values_of`), to be built and decided again by the same code as the command.

    Each ledger's own order is kept (its time only moves forward). Between
    ledgers, requests of the same instant go in the order that lets the later
    depend on the earlier (`Command.priority`: joins without a referrer, joins
    with one, earns and adjustments, refunds and redemptions, gifts, accepts,
    leaves); then by phone. `cat`: the catalog the ledgers were written under,
    as far as we know (a credit's default expiry is replayed as the default).
    """
    made = frozenset(e["gift_id"] for evs in ledgers.values() for e in evs if e.get("type") == "gift_in")
    recorded = RECORDED
    per_ledger = []
    for phone in sorted(ledgers):
        out = []
        per_ledger.append(out)
        joined = False
        events = ledgers[phone]
        for n, e in enumerate(events):
            cmd = recorded.get(e.get("type"))
            if cmd is None:
                continue
            first = False
            if cmd.name == "join":
                first, joined = not joined, True
            values = cmd.values_of(e, Context(events, n, cat, first, made))
            if values is None:
                continue
            at = from_iso(e["at"])
            key = (_micros(at), cmd.priority + (1 if values.get("referrer") else 0), phone, n)
            out.append((key, Request(at, phone, cmd.name, values, e["id"], tuple(links_of(phone, (e,))),
                                     rules.instant(e["at"]))))
    return merged(per_ledger, with_keys)


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


class World:
    """Ledgers in memory, changed only by re-decided requests, through THE service path: each
    request's values built into its request by `requests.py` (`Command.build`), decided and written
    by `Service.run` (the members locked and read, the rules, the seals, the stamping), as the
    command itself would be. The store holds each ledger as the stamped events (`ledger.SimStore`:
    no bytes, chain or decoding) and the service keeps each member's state live between requests;
    `reference=True` uses a `MemoryStore` instead (every line encoded, chained and parsed back), the
    store the tests compare it with."""

    def __init__(self, cat: Catalog, reference: bool = False):
        from bonuscli.ledger import SimStore

        self.cat = cat
        self.reference = reference
        self.svc = service.in_memory(cat) if reference else service.Service(SimStore(), cat, "simulation",
                                                                             snapshots=False)
        self.svc.live = {}
        self.gift_ids: dict = {}  # gift id as recorded -> gift id in this world
        self.outcomes: list = []

    @property
    def stats(self) -> dict:
        return self.svc.stats

    @property
    def ledgers(self) -> dict:
        """phone -> the events this world wrote (without the chain's `prev`)."""
        store = self.svc.store
        return {p: [{k: v for k, v in e.items() if k != "prev"} for e in store.read(p).events]
                for p in store.phones()}

    def member(self, phone: str, now):
        return self.svc.member(phone, now if type(now) is int else rules.seconds(now))

    # -- one request
    def apply(self, req: Request) -> Outcome:
        try:
            view = self._decide(req)
        except BonusError as e:
            out = Outcome(req, False, e.kind, e.message, None)
        except (KeyError, ValueError, TypeError) as e:  # a request this catalog cannot even express
            out = Outcome(req, False, "cannot-replay", f"{type(e).__name__}: {e}", None)
        else:
            out = Outcome(req, True, None, None, view)
        self.outcomes.append(out)
        return out

    def _decide(self, req: Request) -> dict:
        cmd = COMMANDS[req.command]
        t = req.t or rules.seconds(req.at)
        values = dict(req.args, phone=req.phone) if "phone" in cmd.keys else dict(req.args, **{"from": req.phone})
        if req.command == "accept":
            gid = self.gift_ids.get(values["gift"])
            if gid is None:
                raise Refusal(1, "gift-not-found", f"gift {values['gift']} was never offered under this catalog").error()
            values["gift"] = gid
        request = cmd.build(self.cat, values, today_of(self.cat, t) if cmd.dated else None)
        view = self.svc.run(req.command, request, t)
        if req.command == "gift":
            self.gift_ids[req.args["gift"]] = view["gift_id"]
        return view

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


# ---------------------------------------------------------------- two catalogs, member by member

SERIAL_BELOW = 4000  # requests; a process pool costs more than it saves below this


def components(requests, phones) -> list:
    """The groups of members that requests can tie together, each as (phones, request indices):
    `rules.components` over what each request's recorded event ties its member to (`Request.links`:
    the member it names, and the recorded gift id, which the world maps to its own). Nothing else
    crosses ledgers: the peers a replay reads are named by gifts and referrals. So each group,
    replayed alone in the requests' order, gives what one world of everyone gives. Groups are in
    the order of their first request (members without requests last, by phone); a group's phones
    (those that make requests, and those of `phones` it holds) sorted, its indices ascending."""
    links: dict = {}
    for r in requests:
        links.setdefault(r.phone, set()).update(r.links)
    members = set(links) | set(phones)
    group_of = {}
    for g in rules.components(links, members):
        for p in g:
            group_of[p] = g
    groups: dict = {}
    for i, r in enumerate(requests):
        g = group_of[r.phone]
        entry = groups.get(g[0])
        if entry is None:
            entry = groups[g[0]] = (g, [])
        entry[1].append(i)
    for p in sorted(phones):
        g = group_of[p]
        if g[0] not in groups:
            groups[g[0]] = (g, [])
    return [(list(ph), idx) for ph, idx in groups.values()]


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


def _compare_groups(old, new, ledgers, requests, now, groups, bounds) -> tuple:
    """`compare_group` for groups[bounds[0]:bounds[1]], in one process: (figures, changes)."""
    from bonuscli.service import gc_paused

    figures, changed = {}, []
    with gc_paused():
        for indices, phones in groups[bounds[0]:bounds[1]]:
            f, c = compare_group(old, new, requests, indices, phones, ledgers, now)
            figures.update(f)
            changed.extend(c)
    return figures, changed


def compare(old: Catalog, new: Catalog, ledgers: dict, requests, now, jobs=None) -> tuple:
    """Replay `requests` (requests_of's, in its order) dated up to `now` under both catalogs, group
    by group (`components`), on `jobs` processes (default: the core count; workers.Local, which
    forks them: they inherit everything they read, only the answers travel back). The same answer
    as two worlds of everyone, whatever `jobs`: ({phone: ((available, earned, spent, debt) old, ...
    new)} for every phone of `ledgers`, [(index, (ok, kind, message, points_spent) old, ... new)] of
    the requests decided differently, by index)."""
    from bonuscli import workers
    from bonuscli.service import gc_paused

    upto = 0
    for r in requests:
        if r.at > now:
            break
        upto += 1
    with gc_paused():
        groups = [(idx, ph) for ph, idx in components(requests[:upto], sorted(ledgers))]
    engine = workers.Local(jobs if upto >= SERIAL_BELOW and len(groups) >= 2 else 1)
    parts = engine.map_chunks(_compare_groups, _bounds(groups, engine.n_workers(), upto), old, new, ledgers,
                              requests, now, groups)
    figures, changed = {}, []
    for f, c in parts:
        figures.update(f)
        changed.extend(c)
    changed.sort(key=lambda x: x[0])
    return figures, changed


def _bounds(groups, jobs: int, total: int) -> list:
    """The groups in slices of about total / (8 jobs) requests (one slice when serial)."""
    if jobs <= 1:
        return [(0, len(groups))]
    size = max(200, total // (jobs * 8))
    bounds, start, n = [], 0, 0
    for k, (idx, ph) in enumerate(groups):
        n += len(idx) + 1
        if n >= size:
            bounds.append((start, k + 1))
            start, n = k + 1, 0
    if start < len(groups):
        bounds.append((start, len(groups)))
    return bounds
