"""A member's state: the data a replay fills, and the operations on lots.

Owns: `Member` (lots, debt, totals, gifts, referrals, orders, references), the
lot operations (credit with debt first, oldest-first taking, expiry), and the
state as plain data for snapshots (`to_plain`, `from_plain`, pinned by
STATE_FORMAT). Instants are epoch seconds and dates are ordinals
(rules.dates); a lot is a small list `[expires_on, seq, points, id, reason,
credited_at, original]`, kept sorted by (expires_on, seq) from `head` on, so
spending oldest-first and expiring cost O(1) a lot. Pure. Imports model,
rules.dates and rules.links.
"""

from __future__ import annotations

import bisect
import datetime as dt
import heapq


from bonuscli.model import Catalog, Record
from bonuscli.rules.dates import Calendar, calendar_of, date_of
from bonuscli.rules.links import peers_of

# lot fields
EXP, SEQ, PTS, LID, WHY, CRED, ORIG = range(7)

# earn record fields (ref -> record)
E_ID, E_AT, E_AMOUNT, E_CAT, E_POINTS, E_COEF, E_RPP, E_BONUSES, E_REF_AMOUNT, E_REF_POINTS, E_YM = range(11)

# Bump whenever what `to_plain` holds (or how replay fills it) changes: a snapshot of another
# format is ignored and rebuilt. tests/test_snapshots.py pins the fields of this format.
STATE_FORMAT = 1
STATE_FIELDS = (
    "phone", "count", "last_at", "joins", "join", "left_at", "lots", "debt", "repaid", "totals", "earns",
    "refunds", "adjusts", "month_spend", "card_welcome_given", "orders", "gifts_out", "gifts_in", "referrals",
    "sealed", "seq", "now",
)

TOTALS = ("credited", "spent", "expired", "forfeited", "gifted", "received", "refunded", "debited")


class LotView(Record):
    expires_on: dt.date
    points: int
    id: str
    reason: str


class UnknownEvent(ValueError):
    """A ledger line of a type this bonuscli does not know: never skipped silently."""

    def __init__(self, event: dict):
        super().__init__(f"unknown event type {event.get('type')!r}")
        self.event = event


class Member:
    """A member's state as of `now` (epoch seconds), replayed from their events."""

    def __init__(self, cat: Catalog, phone: str):
        self.cat = cat
        self.cal: Calendar = calendar_of(cat)
        self.phone = phone
        self.count = 0  # events of the file (repair lines included): the next event is `<phone>.<count+1>`
        self.last_at = None  # epoch of the latest event of the file, whatever `now` is
        self.joins: list = []  # join events, oldest first
        self.join = None  # the current (last) membership's join event
        self.left_at = None
        self.lots: list = []  # [EXP, SEQ, PTS, LID, WHY, CRED (text), ORIG], sorted from `head` on
        self.head = 0
        self.avail = 0
        self.debt = 0
        self.repaid = 0  # points of credits that went to the debt, ever
        self.totals = dict.fromkeys(TOTALS, 0)
        self.earns: dict = {}  # ref -> earn record (E_* fields)
        self.refunds: dict = {}  # refund ref -> view
        self.adjusts: dict = {}  # adjust ref -> view
        self.month_spend: dict = {}  # (category, ym) -> kopecks of applied earns less refunds
        self.card_welcome_given = False
        self.orders: list = []  # [at, code, category, until or None, name]
        self.gifts_out: dict = {}
        self.gifts_in: dict = {}
        self.referrals: dict = {}
        self.sealed: set = set()  # gift and referral ids whose outcome this ledger records itself
        self.register: list = []  # history rows, when `keep`
        self.keep = False
        self.sched: list = []  # (at, seq, kind, payload)
        self.seq = 0
        self.now = None
        self.own: list = []  # this ledger's events dated up to now (of the part replayed)
        self.peers: dict = {}  # during a replay: phone -> that ledger's events up to now

    # -- reading
    def available(self) -> int:
        return self.avail

    def live_lots(self) -> list:
        return self.lots[self.head:]

    def lots_view(self) -> list:
        """The available lots, oldest expiry first, as readable tuples."""
        return [LotView(dt.date.fromordinal(lot[EXP]), lot[PTS], lot[LID], lot[WHY]) for lot in self.live_lots()]

    def held_out(self) -> int:
        return sum(g["points"] - g["lost"] for g in self.gifts_out.values() if g["status"] == "pending")

    def held_lost(self) -> int:
        """Points of pending gifts that expired while held (already counted as expired)."""
        return sum(g["lost"] for g in self.gifts_out.values() if g["status"] == "pending")

    def at_text(self, epoch: int) -> str:
        return self.cal.iso(epoch)

    # -- lots
    def _insert(self, lot) -> None:
        lots = self.lots
        if self.head == len(lots) or lot[EXP] >= lots[-1][EXP]:
            lots.append(lot)
        else:
            bisect.insort(lots, lot, lo=self.head)
        self.avail += lot[PTS]

    def _compact(self) -> None:
        if self.head > 256 and self.head * 2 > len(self.lots):
            del self.lots[:self.head]
            self.head = 0

    def _lot_in(self, at: int, day: int, lid: str, points: int, why: str, exp=None) -> int:
        """Points arriving (a credit, a gift received, a gift coming back): debt first, then a lot."""
        if self.debt:
            repay = min(self.debt, points)
            self.debt -= repay
            self.repaid += repay
            points -= repay
            if points <= 0:
                return 0
        if exp is None:
            exp = self.cal.expiry(day)
        elif self.cal.closing is not None and self.cal.closing < exp:
            exp = self.cal.closing
        if exp <= day:
            self.totals["expired"] += points
            if self.keep:
                self._row(at, lid, "expire", 0, f"{points} points of {why} arrived already expired", expired=points)
            return 0
        self.seq += 1
        self._insert([exp, self.seq, points, lid, why, self.cal.iso(at), points])
        return points

    def credit(self, at: int, day: int, lid: str, points: int, why: str, exp=None) -> int:
        """New points (earn, bonus, welcome, referral, operator's credit). Returns what formed a lot."""
        if points <= 0:
            return 0
        self.totals["credited"] += points
        return self._lot_in(at, day, lid, points, why, exp)

    def take(self, points: int, first=None, near=None) -> list:
        """Remove `points` oldest expiry first (from lot `first` before the others; `near`: the expiry
        that lot was given, so it is looked for among the lots of that expiry only, not all of them).
        Returns [(expires_on, points, lot id)]."""
        taken = []
        lots = self.lots
        if first is not None and points > 0:
            start = self.head if near is None else bisect.bisect_left(lots, [near], self.head)
            for i in range(start, len(lots)):
                lot = lots[i]
                if near is not None and lot[EXP] != near:
                    break  # past the lots of that expiry: it has none left
                if lot[LID] == first:
                    n = min(lot[PTS], points)
                    lot[PTS] -= n
                    self.avail -= n
                    points -= n
                    taken.append((lot[EXP], n, lot[LID]))
                    if lot[PTS] == 0:
                        del lots[i]
                    break
        h, end = self.head, len(lots)
        while points > 0 and h < end:
            lot = lots[h]
            n = lot[PTS] if lot[PTS] <= points else points
            lot[PTS] -= n
            self.avail -= n
            points -= n
            taken.append((lot[EXP], n, lot[LID]))
            if lot[PTS] == 0:
                h += 1
        self.head = h
        self._compact()
        return taken

    def expire(self, at: int) -> None:
        lots, h = self.lots, self.head
        if h >= len(lots) or at < self.cal.start(lots[h][EXP]):
            return
        today = self.cal.day(at)
        end = len(lots)
        while h < end and lots[h][EXP] <= today:
            lot = lots[h]
            n = lot[PTS]
            self.totals["expired"] += n
            self.avail -= n
            lot[PTS] = 0
            h += 1
            if self.keep:
                self._row(self.cal.start(lot[EXP]), lot[LID], "expire", -n,
                          f"{n} points of {lot[WHY]} credited {lot[CRED][:10]} expired",
                          expired=n)
        self.head = h
        self._compact()

    # -- time
    def schedule(self, at: int, kind: str, payload) -> None:
        self.seq += 1
        heapq.heappush(self.sched, (at, self.seq, kind, payload))

    def _row(self, at: int, id, type, delta, detail, **extra):
        row = {"at": self.cal.iso(at), "id": id, "type": type, "points": delta, "balance": self.avail,
               "detail": detail}
        row.update(extra)
        self.register.append(row)


def settled_state(m: Member) -> bool:
    """True when the state depends on this ledger's own lines only: nothing scheduled, no gift or
    referral waiting on another ledger. Only such a state may be saved as a snapshot."""
    if m.sched or m.join is None:
        return False
    if not (m.gifts_out or m.gifts_in or m.referrals):  # what the rest answers for a member no gift or
        return True                                     # referral ever touched, without the scans
    if any(g["status"] == "pending" or g["outcome"] in ("pending", "unknown") for g in m.gifts_out.values()):
        return False
    if any(g["status"] == "pending" for g in m.gifts_in.values()):
        return False
    if any(r["status"] not in ("credited", "void") for r in m.referrals.values()):
        return False
    return not peers_of(m, m.now)



# ---------------------------------------------------------------- plain data (snapshots)


def to_plain(m: Member) -> dict:
    """The state as JSON-able plain data (only for a `settled_state`)."""
    join_index = next((i for i, j in enumerate(m.joins) if j is m.join), None)
    return {
        "phone": m.phone, "count": m.count, "last_at": m.last_at, "joins": m.joins, "join": join_index,
        "left_at": m.left_at, "lots": m.lots[m.head:], "debt": m.debt, "repaid": m.repaid, "totals": m.totals,
        "earns": m.earns, "refunds": m.refunds, "adjusts": m.adjusts,
        "month_spend": [[c, ym, v] for (c, ym), v in m.month_spend.items()],
        "card_welcome_given": m.card_welcome_given, "orders": m.orders,
        "gifts_out": {k: {**g, "when": g["when"]} for k, g in m.gifts_out.items()},
        "gifts_in": m.gifts_in, "referrals": m.referrals, "sealed": sorted(m.sealed), "seq": m.seq, "now": m.now,
    }


def from_plain(cat: Catalog, doc: dict) -> Member:
    """A Member from `to_plain`'s data; ValueError/KeyError/TypeError on anything malformed."""
    if set(doc) != set(STATE_FIELDS):
        raise ValueError("not a member state of this format")
    m = Member(cat, doc["phone"])
    m.count = int(doc["count"])
    m.last_at = doc["last_at"]
    m.joins = list(doc["joins"])
    m.join = m.joins[doc["join"]] if doc["join"] is not None else None
    m.left_at = doc["left_at"]
    m.lots = [list(lot) for lot in doc["lots"]]
    m.avail = sum(lot[PTS] for lot in m.lots)
    m.debt = int(doc["debt"])
    m.repaid = int(doc["repaid"])
    m.totals = {k: int(doc["totals"][k]) for k in TOTALS}
    m.earns = {k: list(v) for k, v in doc["earns"].items()}
    m.refunds = dict(doc["refunds"])
    m.adjusts = dict(doc["adjusts"])
    m.month_spend = {(c, ym): v for c, ym, v in doc["month_spend"]}
    m.card_welcome_given = bool(doc["card_welcome_given"])
    m.orders = [list(o) for o in doc["orders"]]
    m.gifts_out = dict(doc["gifts_out"])
    m.gifts_in = dict(doc["gifts_in"])
    m.referrals = dict(doc["referrals"])
    m.sealed = set(doc["sealed"])
    m.seq = int(doc["seq"])
    m.now = doc["now"]
    return m
