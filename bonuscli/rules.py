"""The program's rules: pure functions of (catalog, events, now, request).

Owns every calculation: replaying a member's ledger into lots and state
(`replay`), and each command's decision (`join`, `earn`, `redeem`, `gift`,
`accept`, `leave`, ...), which returns a Decision (events to append, view to
render) or a Refusal. Never reads files, clocks or the environment.
Imports model only.
"""

from __future__ import annotations

import datetime as dt
import bisect
import functools
import heapq
from decimal import Decimal

from bonuscli.model import (
    Catalog,
    Decision,
    Refusal,
    decimal_text,
    from_iso,
    iso,
    money,
)

# ---------------------------------------------------------------- time


def local(cat: Catalog, when: dt.datetime) -> dt.datetime:
    return when.astimezone(cat.tz)


def local_date(cat: Catalog, when: dt.datetime) -> dt.date:
    return _local_date(cat.timezone, when)


@functools.lru_cache(maxsize=65536)
def _local_date(tzname: str, when: dt.datetime) -> dt.date:
    from bonuscli.model import zone

    return when.astimezone(zone(tzname)).date()


def day_start(cat: Catalog, day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=cat.tz)


@functools.lru_cache(maxsize=65536)
def add_months(day: dt.date, months: int) -> dt.date:
    """Same day-of-month `months` later, clamped to the month's end."""
    y, m = divmod(day.month - 1 + months, 12)
    year, month = day.year + y, m + 1
    import calendar

    last = calendar.monthrange(year, month)[1]
    return dt.date(year, month, min(day.day, last))


def prev_month(year: int, month: int):
    return (year - 1, 12) if month == 1 else (year, month - 1)


def expiry_date(cat: Catalog, credited_at: dt.datetime) -> dt.date:
    d = add_months(local_date(cat, credited_at), cat.validity_months)
    if cat.closing_date is not None and cat.closing_date < d:
        return cat.closing_date
    return d


def activation_instant(cat: Catalog, method: str, joined_at: dt.datetime) -> dt.datetime:
    act = cat.methods[method]
    if act.working_days:
        here = local(cat, joined_at)
        day, n = here.date(), 0
        while n < act.working_days:
            day += dt.timedelta(days=1)
            if day.weekday() < 5:
                n += 1
        return dt.datetime.combine(day, here.time(), tzinfo=cat.tz).replace(fold=0)
    return joined_at + dt.timedelta(hours=act.hours)


def closed(cat: Catalog, now: dt.datetime) -> bool:
    return cat.closing_date is not None and local_date(cat, now) >= cat.closing_date


# ---------------------------------------------------------------- arithmetic


def tenure_coefficient(cat: Catalog, since: dt.date, on: dt.date) -> Decimal:
    """The coefficient for spending on `on` by a customer since `since` (local dates)."""
    for step in cat.tenure:
        if step.up_to is None or on <= add_months(since, int(step.up_to)):
            return step.value
    return cat.tenure[-1].value


def tenure_for_months(cat: Catalog, months: int) -> Decimal:
    for step in cat.tenure:
        if step.up_to is None or months <= step.up_to:
            return step.value
    return cat.tenure[-1].value


def card_rate(cat: Catalog, last_month: Decimal) -> int:
    for step in cat.card_tiers:
        if step.up_to is None or last_month <= step.up_to:
            return int(step.value)
    return int(cat.card_tiers[-1].value)


def points_for(amount: Decimal, coefficient: Decimal, rub_per_point: int) -> int:
    """floor(amount x coefficient / rub_per_point), exact: one floor, at the end."""
    return int((amount * coefficient) // Decimal(rub_per_point))


def rate(cat: Catalog, category: str, *, since=None, on=None, months=None, card_last_month=Decimal(0),
         explain=True):
    """(coefficient, rub_per_point, steps) for a spending in `category` (steps None unless `explain`)."""
    c = cat.categories[category]
    if not explain:
        rpp = card_rate(cat, card_last_month) if c.tiered else c.rub_per_point
        coef = Decimal("1.0")
        if c.tenure:
            coef = tenure_for_months(cat, months) if months is not None else (
                tenure_coefficient(cat, since, on) if since is not None and on is not None else coef)
        return coef, rpp, None
    steps = []
    if c.tiered:
        rpp = card_rate(cat, card_last_month)
        steps.append({"rule": "card-tier", "detail": f"previous month's {category} payments {money(card_last_month)} RUB -> {rpp} RUB per point",
                      "last_month": money(card_last_month), "rub_per_point": rpp})
    else:
        rpp = c.rub_per_point
        steps.append({"rule": "rate", "detail": f"{category}: {rpp} RUB per point", "rub_per_point": rpp})
    coef = Decimal("1.0")
    if c.tenure:
        if months is not None:
            coef = tenure_for_months(cat, months)
            steps.append({"rule": "tenure", "detail": f"customer for {months} months -> coefficient {decimal_text(coef)}",
                          "months": months, "coefficient": decimal_text(coef)})
        elif since is not None and on is not None:
            coef = tenure_coefficient(cat, since, on)
            steps.append({"rule": "tenure", "detail": f"customer since {since}, spending on {on} -> coefficient {decimal_text(coef)}",
                          "customer_since": since.isoformat(), "on": on.isoformat(), "coefficient": decimal_text(coef)})
    else:
        steps.append({"rule": "tenure", "detail": f"{category} does not use the tenure coefficient -> 1.0", "coefficient": "1.0"})
    return coef, rpp, steps


def formula_step(amount, coef, rpp, points):
    exact = amount * coef / Decimal(rpp)
    return {"rule": "formula", "detail": f"{money(amount)} x {decimal_text(coef)} / {rpp} = {exact.normalize():f} -> floor -> {points}",
            "exact": f"{exact.normalize():f}", "points": points}


# ---------------------------------------------------------------- replay


class Lot:
    __slots__ = ("id", "credited_at", "expires_on", "points", "reason", "seq", "original")

    def __init__(self, id, credited_at, expires_on, points, reason, seq):
        self.id, self.credited_at, self.expires_on = id, credited_at, expires_on
        self.points, self.reason, self.seq = points, reason, seq
        self.original = points

    def key(self):
        return (self.expires_on, self.seq)

    def __reduce__(self):  # compact and fast to load: checkpoints hold tens of thousands of lots
        return (_lot, (self.id, self.credited_at.timestamp(), self.expires_on.toordinal(), self.points, self.reason,
                       self.seq, self.original))


def _lot(id, ts, ordinal, points, reason, seq, original):
    lot = Lot(id, dt.datetime.fromtimestamp(ts, dt.timezone.utc), dt.date.fromordinal(ordinal), points, reason, seq)
    lot.original = original
    return lot


_EARN_KEYS = ("id", "at", "amount", "category", "points", "coefficient", "rub_per_point", "bonuses",
              "refunded_amount", "refunded_points")


class Earns(dict):
    """ref -> earn record; records saved in a checkpoint stay packed until one is looked up."""

    def __getitem__(self, ref):
        rec = dict.__getitem__(self, ref)
        if type(rec) is tuple:
            rec = dict(zip(_EARN_KEYS, rec))
            rec["at"] = dt.datetime.fromtimestamp(rec["at"], dt.timezone.utc)
            rec["amount"] = Decimal(rec["amount"])
            rec["refunded_amount"] = Decimal(rec["refunded_amount"])
            dict.__setitem__(self, ref, rec)
        return rec

    def get(self, ref, default=None):
        return self[ref] if ref in self else default

    def __reduce__(self):
        packed = {}
        for ref, rec in dict.items(self):
            if type(rec) is not tuple:
                rec = (rec["id"], rec["at"].timestamp(), str(rec["amount"]), rec["category"], rec["points"],
                       rec["coefficient"], rec["rub_per_point"], rec["bonuses"], str(rec["refunded_amount"]),
                       rec["refunded_points"])
            packed[ref] = rec
        return (_earns, (packed,))


def _earns(packed):
    e = Earns()
    dict.update(e, packed)
    return e


def gift_id_for(sender: str, recipient: str, at: str, count: int, salt: int = 0) -> str:
    import hashlib

    h = hashlib.sha256(f"{sender}>{recipient}@{at}#{count}/{salt}".encode()).digest()
    alphabet = "abcdefghjkmnpqrstuvwxyz23456789"
    n = int.from_bytes(h[:8], "big")
    out = []
    for _ in range(6):
        n, r = divmod(n, len(alphabet))
        out.append(alphabet[r])
    return "g" + "".join(out)


def _events_until(events, now):
    out = []
    for e in events:
        if e["type"] == "repair":
            continue
        if from_iso(e["at"]) > now:
            break
        out.append(e)
    return out


def gift_outcome(gift_id: str, sender_events, recipient_events, now: dt.datetime):
    """(status, at) of a gift from both ledgers (docs/ledger.md, "Gifts across two ledgers").

    status: cancelled | accepted | rejected | forfeited | returned | pending.
    The sender's `gift_out` is the offer; it is made only once the recipient's
    `gift_in` exists. The recipient's `gift_accept` / `gift_reject` is the
    decision. A `gift_settle` in the sender's ledger records the final outcome
    so that later reads need not look at the other ledger.
    """
    offer = None
    left_at = None
    for e in sender_events or ():
        t = e["type"]
        if t == "gift_out" and e["gift_id"] == gift_id:
            offer = e
        elif t == "gift_settle" and e["gift_id"] == gift_id:
            return e["outcome"], from_iso(e["decided_at"])
        elif t == "leave" and offer is not None and left_at is None:
            left_at = from_iso(e["at"])
    incoming = decision = None
    for e in recipient_events or ():
        if e.get("gift_id") != gift_id:
            continue
        if e["type"] == "gift_in":
            incoming = e
        elif e["type"] in ("gift_accept", "gift_reject") and decision is None:
            decision = e
    if sender_events is not None and offer is None and incoming is None:
        return "unknown", now
    if incoming is None:
        if recipient_events is None:
            return "pending", now
        return "cancelled", from_iso(offer["at"])
    deadline = from_iso(incoming["deadline"])
    d_at = from_iso(decision["at"]) if decision else None
    if d_at is not None and (left_at is None or d_at <= left_at):
        return ("accepted" if decision["type"] == "gift_accept" else "rejected"), d_at
    if left_at is not None and left_at < deadline:
        return "forfeited", left_at
    if now >= deadline:
        return "returned", deadline
    return "pending", now


def referral_outcome(referral_id: str, invitee_events):
    """(status, credit_at): confirmed when the invitee's join names this referral and activates."""
    join = None
    for e in invitee_events or ():
        if e["type"] == "join" and e.get("referral_id") == referral_id:
            join = e
        elif e["type"] == "leave" and join is not None:
            if from_iso(e["at"]) < from_iso(join["active_from"]):
                return "void", None
    if join is None:
        return "void", None
    return "confirmed", from_iso(join["active_from"])


class Member:
    """A member's state as of `now`, replayed from their events (and peers' facts)."""

    def __init__(self, cat: Catalog, phone: str):
        self.cat = cat
        self.phone = phone
        self.count = 0
        self.last_at = None
        self.joins = []  # join events, oldest first
        self.join = None  # the current (last) membership's join event
        self.left_at = None
        self.lots = []
        self._avail = 0
        self.debt = 0
        self.totals = dict(credited=0, spent=0, expired=0, forfeited=0, gifted=0, received=0,
                           refunded=0, debited=0)
        self.earns = Earns()  # ref -> earn record
        self.refunds = {}  # refund ref -> view
        self.adjusts = {}  # adjust ref -> view
        self.month_spend = {}  # (category, y, m) -> Decimal, applied earns less refunds
        self.card_welcome_given = False
        self.orders = []  # (at, code, category, active_until, name)
        self.gifts_out = {}
        self.gifts_in = {}
        self.referrals = {}
        self.sealed = set()  # gift and referral ids whose outcome this ledger already records
        self.register = []
        self.keep = True  # build the register (history rows); off for decisions and balances
        self.welcomed = False
        self._sched = []
        self._seq = 0
        self.now = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["orders"] = [(at.timestamp(), code, cat, until.timestamp() if until else None, name)
                           for at, code, cat, until, name in self.orders]
        return state

    def __setstate__(self, state):
        utc = dt.timezone.utc
        state["orders"] = [(dt.datetime.fromtimestamp(at, utc), code, cat,
                            dt.datetime.fromtimestamp(until, utc) if until is not None else None, name)
                           for at, code, cat, until, name in state["orders"]]
        self.__dict__.update(state)

    # -- lots: kept sorted by (expires_on, seq); `_avail` is their sum
    def available(self) -> int:
        return self._avail

    def _add_lot(self, lot) -> None:
        bisect.insort(self.lots, lot, key=Lot.key)
        self._avail += lot.points

    def _clear_lots(self) -> int:
        gone, self.lots, self._avail = self._avail, [], 0
        return gone

    def held_out(self) -> int:
        return sum(g["points"] for g in self.gifts_out.values() if g["status"] == "pending")

    def _row(self, at, id, type, delta, detail, **extra):
        row = {"at": iso(at), "id": id, "type": type, "points": delta, "balance": self.available(),
               "detail": detail}
        row.update(extra)
        self.register.append(row)

    def credit(self, at, id, points, reason, expires_on=None):
        """Add points as a lot (repaying debt first). Returns the lot's points."""
        if points <= 0:
            return 0
        self.totals["credited"] += points
        repay = min(self.debt, points)
        self.debt -= repay
        points -= repay
        if points <= 0:
            return 0
        self._seq += 1
        exp = expires_on or expiry_date(self.cat, at)
        if self.cat.closing_date is not None and self.cat.closing_date < exp:
            exp = self.cat.closing_date
        if exp <= local_date(self.cat, at):
            self.totals["expired"] += points
            return 0
        self._add_lot(Lot(id, at, exp, points, reason, self._seq))
        return points

    def take(self, points, first=None):
        """Remove `points` oldest expiry first (from lot `first` before the others).

        Returns the lots taken as [{expires_on, points, lot}]."""
        taken = []

        def take_from(lot, points):
            n = min(lot.points, points)
            lot.points -= n
            self._avail -= n
            taken.append({"expires_on": lot.expires_on.isoformat(), "points": n, "lot": lot.id})
            return points - n

        if first is not None and points > 0:
            for i, lot in enumerate(self.lots):
                if lot.id == first:
                    points = take_from(lot, points)
                    if lot.points == 0:
                        del self.lots[i]
                    break
        used = 0
        for lot in self.lots:
            if points <= 0:
                break
            points = take_from(lot, points)
            if lot.points == 0:
                used += 1
        if used:
            del self.lots[:used]
        return taken

    def expire(self, when):
        today = local_date(self.cat, when)
        n = 0
        for lot in self.lots:
            if lot.expires_on > today:
                break
            n += 1
            self.totals["expired"] += lot.points
            self._avail -= lot.points
            lot_points, lot.points = lot.points, 0
            self.keep and self._row(day_start(self.cat, lot.expires_on), lot.id, "expire", -lot_points,
                      f"{lot_points} points of {lot.reason} credited {local_date(self.cat, lot.credited_at)} expired")
        if n:
            del self.lots[:n]

    def schedule(self, at, kind, payload):
        self._seq += 1
        heapq.heappush(self._sched, (at, self._seq, kind, payload))

    def advance(self, to):
        while self._sched and self._sched[0][0] <= to:
            at, _, kind, payload = heapq.heappop(self._sched)
            self.expire(at)
            getattr(self, "_at_" + kind)(at, payload)
        self.expire(to)

    # -- scheduled effects
    def _at_activate(self, at, join):
        if self.join is not join or (self.left_at is not None and self.left_at <= at):
            return
        for item in join.get("welcome", ()):
            got = self.credit(at, f"{join['id']}/{item['reason']}", item["points"], item["reason"])
            self.welcomed = True
            self.keep and self._row(at, join["id"], "welcome", got, f"{item['reason']} bonus at activation", earned=item["points"])

    def _at_referral(self, at, rec):
        if self.left_at is not None and self.left_at <= at:
            rec["status"] = "void"
            return
        got = self.credit(at, rec["id"], rec["points"], "referral")
        rec["status"] = "credited"
        self.keep and self._row(at, rec["id"], "referral", got, f"referral bonus for inviting {rec['invitee']}", earned=rec["points"])

    def _at_gift_end(self, at, g):
        status = g["outcome"]
        g["status"] = status
        g["settled_at"] = at
        today = local_date(self.cat, at)
        alive = [l for l in g["lots"] if dt.date.fromisoformat(l["expires_on"]) > today]
        lost = g["points"] - sum(l["points"] for l in alive)
        self.totals["expired"] += lost
        if status in ("returned", "rejected", "cancelled"):
            for l in alive:
                self.credit_back(at, g["id"], l["points"], dt.date.fromisoformat(l["expires_on"]))
            self.keep and self._row(at, g["id"], "gift_return", sum(l["points"] for l in alive),
                      f"gift {g['gift_id']} to {g['to']} {status}; points back with their dates"
                      + (f", {lost} expired while held" if lost else ""), gift_id=g["gift_id"], expired=lost)
        elif status == "accepted":
            self.totals["gifted"] += g["points"] - lost
            self.keep and self._row(at, g["id"], "gift_accepted", 0, f"gift {g['gift_id']} accepted by {g['to']}", gift_id=g["gift_id"],
                      gifted=g["points"] - lost, expired=lost)
        elif status == "forfeited":
            self.totals["forfeited"] += g["points"] - lost
            self.keep and self._row(at, g["id"], "gift_forfeited", 0, f"gift {g['gift_id']} forfeited: its sender left",
                      gift_id=g["gift_id"], forfeited=g["points"] - lost, expired=lost)

    def credit_back(self, at, id, points, expires_on):
        """Points returning to their owner: not new credits, no debt repayment."""
        self._seq += 1
        self._add_lot(Lot(id, at, expires_on, points, "gift return", self._seq))

    # -- stored events
    def apply(self, e, at, peers):
        getattr(self, "_ev_" + e["type"], self._ev_unknown)(e, at, peers)

    def _ev_unknown(self, e, at, peers):
        pass

    def _ev_join(self, e, at, peers):
        self.joins.append(e)
        self.join = e
        self.left_at = None
        self.keep and self._row(at, e["id"], "join", 0, f"joined by {e['method']} in {e['region']}, active from {e['active_from']}")
        self.schedule(from_iso(e["active_from"]), "activate", e)

    def _ev_leave(self, e, at, peers):
        lost = self._clear_lots()
        self.totals["forfeited"] += lost
        self.left_at = at
        self.keep and self._row(at, e["id"], "leave", -lost, f"left the program; {lost} points forfeited")

    def _ev_earn(self, e, at, peers):
        got = self.credit(at, e["id"], e["points"], "earn")
        amount = Decimal(e["amount"])
        day = local_date(self.cat, at)
        key = (e["category"], day.year, day.month)
        self.month_spend[key] = self.month_spend.get(key, Decimal(0)) + amount
        rec = {"id": e["id"], "at": at, "amount": amount, "category": e["category"], "points": e["points"],
               "coefficient": e["coefficient"], "rub_per_point": e["rub_per_point"],
               "bonuses": e.get("bonuses", []), "refunded_amount": Decimal(0), "refunded_points": 0}
        if e.get("ref") is not None:
            self.earns[e["ref"]] = rec
        self.keep and self._row(at, e["id"], "earn", got, f"{money(amount)} RUB {e['category']}: {e['points']} points"
                  + (f" (ref {e['ref']})" if e.get("ref") else ""), ref=e.get("ref"), earned=e["points"])
        for b in e.get("bonuses", ()):
            got = self.credit(at, f"{e['id']}/{b['reason']}", b["points"], b["reason"])
            if b["reason"] == "card_welcome":
                self.card_welcome_given = True
            self.keep and self._row(at, e["id"], b["reason"], got, f"{b['reason']} bonus", earned=b["points"])

    def _ev_refund(self, e, at, peers):
        rec = self.earns.get(e["earn_ref"])
        taken = self.take(e["points_taken"], first=rec["id"] if rec else None)
        self.debt += e.get("debt_added", 0)
        self.totals["refunded"] += e["points_taken"] + e.get("debt_added", 0)
        amount = Decimal(e["amount"])
        if rec is not None:
            rec["refunded_amount"] += amount
            rec["refunded_points"] += e["points"]
            day = local_date(self.cat, rec["at"])
            key = (rec["category"], day.year, day.month)
            self.month_spend[key] = self.month_spend.get(key, Decimal(0)) - amount
        view = {"phone": self.phone, "ref": e["earn_ref"], "amount": e["amount"], "points": e["points"],
                "points_taken": e["points_taken"], "debt": self.debt, "not_recovered": e.get("not_recovered", 0),
                "refund_ref": e.get("ref"), "taken": taken}
        if e.get("ref") is not None:
            self.refunds[e["ref"]] = view
        self.keep and self._row(at, e["id"], "refund", -e["points_taken"],
                  f"refund of {e['amount']} RUB on {e['earn_ref']}: {e['points']} points back"
                  + (f", {e['debt_added']} as debt" if e.get("debt_added") else ""), ref=e.get("ref"),
                  refunded=e["points_taken"] + e.get("debt_added", 0), taken=taken)

    def _ev_adjust(self, e, at, peers):
        n = e["points"]
        if n > 0:
            exp = dt.date.fromisoformat(e["expires_on"]) if e.get("expires_on") else None
            got = self.credit(at, e["id"], n, "adjust", exp)
            taken = []
        else:
            taken = self.take(-n)
            self.totals["debited"] += -n
            got = n
        view = {"phone": self.phone, "points": n, "reason": e["reason"], "ref": e.get("ref"), "taken": taken}
        if e.get("ref") is not None:
            self.adjusts[e["ref"]] = view
        self.keep and self._row(at, e["id"], "adjust", got, f"adjustment {n:+d}: {e['reason']}", ref=e.get("ref"), taken=taken)

    def _ev_redeem(self, e, at, peers):
        self.take(e["points"])
        self.totals["spent"] += e["points"]
        until = from_iso(e["active_until"]) if e.get("active_until") else None
        self.orders.append((at, e["code"], e["category"], until, e.get("name", e["code"])))
        self.keep and self._row(at, e["id"], "redeem", -e["points"], f"ordered {e['code']} via {e['channel']}", code=e["code"])

    def _ev_gift_out(self, e, at, peers):
        status, when = gift_outcome(e["gift_id"], self._own, peers.get(e["to"]), self.now)
        taken = self.take(e["points"])
        g = {"id": e["id"], "gift_id": e["gift_id"], "to": e["to"], "points": e["points"], "offered_at": at,
             "deadline": from_iso(e["deadline"]), "lots": taken, "status": "pending", "outcome": status,
             "when": when}
        if status == "cancelled":
            for l in taken:
                self.credit_back(at, e["id"], l["points"], dt.date.fromisoformat(l["expires_on"]))
            g["status"] = "cancelled"
            self.gifts_out[e["gift_id"]] = g
            return
        self.gifts_out[e["gift_id"]] = g
        self.keep and self._row(at, e["id"], "gift_out", -e["points"], f"gift {e['gift_id']} offered to {e['to']}", gift_id=e["gift_id"])
        if status not in ("pending", "unknown"):
            self.schedule(when, "gift_end", g)

    def _ev_gift_in(self, e, at, peers):
        status, when = gift_outcome(e["gift_id"], peers.get(e["from"]), self._own, self.now)
        self.gifts_in[e["gift_id"]] = {"id": e["id"], "gift_id": e["gift_id"], "from": e["from"],
                                       "points": e["points"], "offered_at": from_iso(e["offered_at"]),
                                       "deadline": from_iso(e["deadline"]), "status": status, "at": when}
        self.keep and self._row(at, e["id"], "gift_in", 0, f"gift {e['gift_id']} of {e['points']} points offered by {e['from']}",
                  gift_id=e["gift_id"])

    def _ev_gift_accept(self, e, at, peers):
        got = 0
        for l in e["lots"]:
            exp = dt.date.fromisoformat(l["expires_on"])
            self.totals["received"] += l["points"]
            self._seq += 1
            if exp > local_date(self.cat, at):
                self._add_lot(Lot(e["id"], at, exp, l["points"], "gift", self._seq))
                got += l["points"]
            else:
                self.totals["expired"] += l["points"]
        if e["gift_id"] in self.gifts_in:
            self.gifts_in[e["gift_id"]]["status"] = "accepted"
        self.keep and self._row(at, e["id"], "gift_accept", got, f"gift {e['gift_id']} from {e['from']} accepted", gift_id=e["gift_id"])

    def _ev_gift_reject(self, e, at, peers):
        if e["gift_id"] in self.gifts_in:
            self.gifts_in[e["gift_id"]]["status"] = "rejected"
        self.keep and self._row(at, e["id"], "gift_reject", 0, f"gift {e['gift_id']} from {e['from']} rejected", gift_id=e["gift_id"])

    def _ev_gift_settle(self, e, at, peers):
        self.sealed.add(e["gift_id"])  # its effect is scheduled at decided_at when the gift_out is replayed

    def _ev_referral_settle(self, e, at, peers):
        self.sealed.add(e["referral_id"])

    def _ev_referral(self, e, at, peers):
        status, credit_at = "void", None
        for s in self._own:
            if s["type"] == "referral_settle" and s["referral_id"] == e["referral_id"]:
                status = s["outcome"]
                credit_at = from_iso(s["credit_at"]) if s.get("credit_at") else None
                break
        else:
            if e["invitee"] in peers:
                status, credit_at = referral_outcome(e["referral_id"], peers[e["invitee"]])
            else:
                status = "unknown"
        rec = {"id": e["id"], "referral_id": e["referral_id"], "invitee": e["invitee"], "points": e["points"],
               "status": status, "credit_at": credit_at}
        self.referrals[e["referral_id"]] = rec
        if status == "confirmed" and credit_at is not None:
            self.schedule(credit_at, "referral", rec)


def peers_needed(events, now) -> set:
    """Phones whose ledgers the replay of these events must see (unsettled two-ledger steps)."""
    settled, decided, need = set(), set(), {}
    for e in events:
        t = e["type"]
        if t == "gift_settle":
            settled.add(e["gift_id"])
        elif t in ("gift_accept", "gift_reject"):
            decided.add(e["gift_id"])
        elif t == "referral_settle":
            settled.add(e["referral_id"])
    for e in events:
        t = e["type"]
        if t == "gift_out" and e["gift_id"] not in settled:
            need[e["to"]] = True
        elif t == "gift_in" and e["gift_id"] not in decided and e["gift_id"] not in settled:
            if from_iso(e["deadline"]) > now:
                need[e["from"]] = True
        elif t == "referral" and e["referral_id"] not in settled:
            need[e["invitee"]] = True
    return set(need)


def replay(cat: Catalog, phone: str, events, now: dt.datetime, peers=None, register=True) -> Member:
    """The member's state as of `now`. `peers`: phone -> events of that ledger.

    `register`: also build the history rows (`history`, `explain`, `report` need them)."""
    m = Member(cat, phone)
    m.keep = register
    return _play(m, events, now, peers)


def _play(m: Member, events, now, peers) -> Member:
    """Apply `events` (this ledger's, oldest first) up to `now`, then advance to `now`."""
    m.now = now
    m.count += len(events)
    for e in reversed(events):  # a ledger's times only move forward: the last dated line is the latest
        if e["at"]:
            at = from_iso(e["at"])
            m.last_at = at if m.last_at is None else max(m.last_at, at)
            break
    own = _events_until(events, now)
    m._own = own
    peers = {p: _events_until(evs, now) for p, evs in (peers or {}).items()}
    for e in own:
        at = from_iso(e["at"])
        m.advance(at)
        m.apply(e, at, peers)
    m.advance(now)
    return m


def preview(m: Member, decision: Decision) -> Member:
    """The member as it would be after a decision's own events (for a decision that builds on another)."""
    import copy

    m2 = copy.deepcopy(m, {id(m.cat): m.cat})
    m2._own = list(m._own)
    for phone, evs in decision.writes:
        if phone == m.phone:
            for i, e in enumerate(evs):
                extend(m2, dict(e, v=1, id=f"{m.phone}.preview{i}"))
    return m2


def checkpointable(m: Member) -> bool:
    """True when the state depends on this ledger's own lines only (nothing scheduled, no gift
    or referral waiting on another ledger), so it can be saved and resumed from (docs/performance.md)."""
    if m._sched or m.join is None:
        return False
    if any(g["status"] == "pending" or g["outcome"] in ("pending", "unknown") for g in m.gifts_out.values()):
        return False
    if any(g["status"] == "pending" for g in m.gifts_in.values()):
        return False
    if any(r["status"] not in ("credited", "void") for r in m.referrals.values()):
        return False
    return not peers_needed(m._own, m.now)


def freeze(m: Member) -> Member:
    """A copy fit to pickle: no catalog, no register, no event list."""
    import copy

    cat, own, register = m.cat, m._own, m.register
    m.cat, m._own, m.register = None, [], []
    try:
        return copy.copy(m)
    finally:
        m.cat, m._own, m.register = cat, own, register


def resume(cat: Catalog, m: Member, events, now: dt.datetime, peers=None) -> Member:
    """Continue a checkpointed member with the events appended after it."""
    m.cat = cat
    m.register = []
    m.keep = False
    return _play(m, events, now, peers)


def extend(m: Member, event: dict) -> None:
    """Apply one more (stamped) event of this member's own, as replay would."""
    at = from_iso(event["at"])
    m.advance(at)
    m._own.append(event)
    m.apply(event, at, {})
    m.count += 1
    m.last_at = at if m.last_at is None else max(m.last_at, at)
    m.now = max(m.now, at)


# ---------------------------------------------------------------- status and views


def status(m: Member, now: dt.datetime) -> str:
    if m.join is None:
        return "none"
    if m.left_at is not None:
        return "left"
    if closed(m.cat, now):
        return "closed"
    if now < from_iso(m.join["active_from"]):
        return "pending"
    return "active"


def not_member(phone):
    return Refusal(1, "not-member", f"{phone} is not a member of the program; join first (bonuscli join {phone} --region CODE)")


def must_be_active(m: Member, now, what="this") -> Refusal | None:
    st = status(m, now)
    if st in ("none", "left"):
        return not_member(m.phone)
    if st == "closed":
        return Refusal(1, "program-closed", f"the program closed on {m.cat.closing_date}; {what} is no longer possible")
    if st == "pending":
        return Refusal(1, "pending-activation",
                       f"{m.phone}'s membership activates at {m.join['active_from']}; {what} is possible from then on")
    return None


def in_order(m: Member, now) -> Refusal | None:
    if m.last_at is not None and now < m.last_at:
        return Refusal(1, "out-of-order",
                       f"the ledger of {m.phone} already has an event at {iso(m.last_at)}; "
                       f"cannot record one earlier ({iso(now)}); use a later --at")
    return None


def next_expiry(m: Member):
    if not m.lots:
        return None
    first = m.lots[0].expires_on
    return {"date": first.isoformat(), "points": sum(l.points for l in m.lots if l.expires_on == first)}


def coefficient_now(m: Member, now) -> str | None:
    if m.join is None:
        return None
    since = dt.date.fromisoformat(m.join["customer_since"])
    return decimal_text(tenure_coefficient(m.cat, since, local_date(m.cat, now)))


def balance(m: Member, now) -> Decision | Refusal:
    if m.join is None:
        return not_member(m.phone)
    pending_in = [
        {"gift_id": g["gift_id"], "from": g["from"], "points": g["points"], "offered_at": iso(g["offered_at"]),
         "deadline": iso(g["deadline"])}
        for g in m.gifts_in.values() if g["status"] == "pending"
    ]
    active = [
        {"code": code, "name": name, "active_until": iso(local(m.cat, until))}
        for (at, code, cat, until, name) in m.orders if until is not None and until > now
    ]
    view = {
        "phone": m.phone,
        "region": m.join["region"],
        "status": status(m, now),
        "available": m.available(),
        "held_out": m.held_out(),
        "pending_in": pending_in,
        "next_expiry": next_expiry(m),
        "coefficient": coefficient_now(m, now),
        "customer_since": m.join["customer_since"],
        "active_rewards": active,
        "debt": m.debt,
        "active_from": m.join["active_from"],
        "as_of": iso(now),
    }
    return Decision((), view)


def forecast(m: Member, now, days=None, until=None) -> Decision | Refusal:
    if m.join is None:
        return not_member(m.phone)
    today = local_date(m.cat, now)
    end = until if until is not None else today + dt.timedelta(days=30 if days is None else days)
    lots = {}
    for lot in m.lots:
        if today < lot.expires_on <= end:
            lots[lot.expires_on] = lots.get(lot.expires_on, 0) + lot.points
    listed = [{"expires_on": d.isoformat(), "points": p} for d, p in sorted(lots.items())]
    months = []
    for i in range(12):
        y, mo = divmod(today.month - 1 + i, 12)
        key = (today.year + y, mo + 1)
        months.append({"month": f"{key[0]:04d}-{key[1]:02d}",
                       "points": sum(l.points for l in m.lots if (l.expires_on.year, l.expires_on.month) == key)})
    view = {"phone": m.phone, "until": end.isoformat(), "total": sum(p for p in lots.values()),
            "lots": listed, "months": months}
    return Decision((), view)


# ---------------------------------------------------------------- join


def join(cat: Catalog, m: Member, now, req: dict, inviter: Member | None = None, welcome=True) -> Decision | Refusal:
    """req: region, method, services, email, birth_date, customer_since, referrer (normalised)."""
    bad = in_order(m, now)
    if bad:
        return bad
    if closed(cat, now):
        return Refusal(1, "program-closed", f"the program closed on {cat.closing_date}; joining is no longer possible")
    st = status(m, now)
    if st in ("pending", "active"):
        return Refusal(1, "already-member", f"{m.phone} is already a member ({st}); leave first to join again")
    services = req["services"]
    if not any(s in cat.services_eligible for s in services):
        return Refusal(1, "not-eligible",
                       f"only subscribers with one of {', '.join(cat.services_eligible)} may join "
                       f"({', '.join(services)} alone does not qualify)")
    since = req.get("customer_since") or local_date(cat, now)
    active_from = activation_instant(cat, req["method"], now)
    welcome, first = [], welcome
    if first and not m.joins:
        b = cat.bonuses
        welcome.append({"reason": "welcome", "points": b.welcome})
        if req["method"] == "web":
            welcome.append({"reason": "web_form", "points": b.web_form})
            if req.get("email") and req.get("birth_date"):
                welcome.append({"reason": "web_profile", "points": b.web_profile})
        welcome = [w for w in welcome if w["points"] > 0]
    event = {"type": "join", "at": iso(now), "region": req["region"], "method": req["method"],
             "services": list(services), "customer_since": since.isoformat(), "active_from": iso(active_from),
             "welcome": welcome}
    if not first:
        event["import"] = True  # joined by an opening-balance import: no welcome points by design
    for k in ("email", "birth_date"):
        if req.get(k):
            event[k] = str(req[k])
    writes = []
    referrer = req.get("referrer")
    if referrer:
        if referrer == m.phone:
            return Refusal(1, "bad-referrer", "a member cannot invite themselves")
        if inviter is None or status(inviter, now) != "active":
            return Refusal(1, "referrer-not-member",
                           f"the referrer {referrer} must be an active member when {m.phone} joins")
        bad = in_order(inviter, now)
        if bad:
            return bad
        event["referrer"] = referrer
        already = any(j.get("referral_id") for j in m.joins)
        if not already and cat.bonuses.referral > 0:
            rid = "r" + gift_id_for(referrer, m.phone, iso(now), inviter.count)[1:]
            event["referral_id"] = rid
            writes.append((referrer, ({"type": "referral", "at": iso(now), "referral_id": rid, "invitee": m.phone,
                                       "points": cat.bonuses.referral},)))
    writes.append((m.phone, (event,)))
    now_welcome = sum(w["points"] for w in welcome) if active_from <= now else 0
    view = {"phone": m.phone, "region": req["region"], "method": req["method"], "joined_at": iso(now),
            "active_from": iso(active_from), "welcome": welcome, "balance": now_welcome,
            "status": "active" if active_from <= now else "pending", "customer_since": since.isoformat()}
    if referrer:
        view["referrer"] = referrer
    return Decision(tuple(writes), view)


def leave(cat: Catalog, m: Member, now) -> Decision | Refusal:
    bad = in_order(m, now)
    if bad:
        return bad
    st = status(m, now)
    if st in ("none", "left"):
        return not_member(m.phone)
    events = []
    for g in m.gifts_in.values():
        if g["status"] == "pending":
            events.append({"type": "gift_reject", "at": iso(now), "gift_id": g["gift_id"], "from": g["from"],
                           "reason": "left"})
    forfeited = m.available()
    events.append({"type": "leave", "at": iso(now), "points": forfeited, "held_out": m.held_out()})
    view = {"phone": m.phone, "status": "left", "forfeited": forfeited + m.held_out(), "balance": 0,
            "left_at": iso(now)}
    return Decision(((m.phone, tuple(events)),), view)


# ---------------------------------------------------------------- earn


def earn_view(m: Member, rec, duplicate: bool, balance_now: int) -> dict:
    return {"phone": m.phone, "amount": money(rec["amount"]), "category": rec["category"], "points": rec["points"],
            "coefficient": rec["coefficient"], "rub_per_point": rec["rub_per_point"],
            "bonuses": list(rec["bonuses"]), "duplicate": duplicate, "balance": balance_now,
            "ref": rec.get("ref")}


def earn(cat: Catalog, m: Member, now, amount: Decimal, category: str, ref=None, dry_run=False,
         explain=True) -> Decision | Refusal:
    if category not in cat.categories and category not in cat.ineligible:
        return Refusal(2, "unknown-category",
                       f"unknown category '{category}' (earning: {', '.join(cat.categories)})")
    if m.join is None:
        return not_member(m.phone)
    if ref is not None and ref in m.earns:
        rec = dict(m.earns[ref], ref=ref)
        view = earn_view(m, rec, True, m.available())
        return Decision((), view)
    if category in cat.ineligible:
        return Refusal(1, "not-eligible", f"{category} does not earn points: {cat.ineligible[category]}",
                       ({"rule": "ineligible", "detail": f"{category} is listed under earning.ineligible",
                         "category": category},))
    bad = in_order(m, now) or must_be_active(m, now, "earning")
    if bad:
        return bad
    today = local_date(cat, now)
    last_month = m.month_spend.get((category,) + prev_month(today.year, today.month), Decimal(0))
    since = dt.date.fromisoformat(m.join["customer_since"])
    coef, rpp, steps = rate(cat, category, since=since, on=today, card_last_month=last_month, explain=explain)
    points = points_for(amount, coef, rpp)
    if steps is not None:
        steps.append(formula_step(amount, coef, rpp, points))
    bonuses = []
    b = cat.bonuses
    if category == b.card_welcome_category and not m.card_welcome_given and b.card_welcome > 0:
        before = m.month_spend.get((category, today.year, today.month), Decimal(0))
        if before < b.card_welcome_threshold <= before + amount:
            bonuses.append({"reason": "card_welcome", "points": b.card_welcome})
            steps is not None and steps.append({"rule": "card-welcome", "detail": f"{category} payments this month reach "
                          f"{money(before + amount)} RUB >= {money(b.card_welcome_threshold)}: +{b.card_welcome} once",
                          "points": b.card_welcome})
    event = {"type": "earn", "at": iso(now), "amount": money(amount), "category": category, "points": points,
             "coefficient": decimal_text(coef), "rub_per_point": rpp, "bonuses": bonuses,
             "expires_on": expiry_date(cat, now).isoformat()}
    if cat.categories[category].tiered:
        event["card_last_month"] = money(last_month)
    if ref is not None:
        event["ref"] = ref
    repay = min(m.debt, points + sum(x["points"] for x in bonuses))
    after = m.available() + points + sum(x["points"] for x in bonuses) - repay
    rec = {"amount": amount, "category": category, "points": points, "coefficient": decimal_text(coef),
           "rub_per_point": rpp, "bonuses": bonuses, "ref": ref}
    view = earn_view(m, rec, False, after)
    view["expires_on"] = event["expires_on"]
    if dry_run:
        view["dry_run"] = True
        view["balance"] = after
    view["_steps"] = steps
    return Decision(() if dry_run else ((m.phone, (event,)),), view)


def calc(cat: Catalog, amount: Decimal, category: str, months=None, since=None, on=None,
         card_last_month=Decimal(0)) -> Decision | Refusal:
    if category not in cat.categories and category not in cat.ineligible:
        return Refusal(2, "unknown-category", f"unknown category '{category}' (earning: {', '.join(cat.categories)})")
    if category in cat.ineligible:
        return Refusal(1, "not-eligible", f"{category} does not earn points: {cat.ineligible[category]}",
                       ({"rule": "ineligible", "detail": f"{category} is listed under earning.ineligible",
                         "category": category},))
    if months is None and since is None:
        months = 0
    coef, rpp, steps = rate(cat, category, since=since, on=on, months=months, card_last_month=card_last_month)
    points = points_for(amount, coef, rpp)
    steps.append(formula_step(amount, coef, rpp, points))
    view = {"points": points, "coefficient": decimal_text(coef), "rub_per_point": rpp, "amount": money(amount),
            "category": category, "_steps": steps}
    return Decision((), view)


# ---------------------------------------------------------------- redeem


def _same_period(cat, a: dt.datetime, b: dt.datetime, per: str) -> bool:
    if per == "ever":
        return True
    x, y = local_date(cat, a), local_date(cat, b)
    if per == "year":
        return x.year == y.year
    if per == "month":
        return (x.year, x.month) == (y.year, y.month)
    return x == y


PER_WORDS = {"day": "a calendar day", "month": "a calendar month", "year": "a calendar year", "ever": "ever"}


def voucher_code(event_seed: str) -> str:
    import hashlib

    h = hashlib.sha256(event_seed.encode()).hexdigest().upper()
    return f"BOOK-{h[:4]}-{h[4:8]}-{h[8:12]}"


def redeem(cat: Catalog, m: Member, now, code: str, channel: str = "web", price_rub=None, points=None) -> Decision | Refusal:
    reward = cat.rewards.get(code)
    if reward is None:
        return Refusal(2, "unknown-reward", f"unknown reward '{code}'; see `bonuscli catalog` for the codes")
    if channel not in cat.channels:
        return Refusal(2, "unknown-channel", f"unknown channel '{channel}' (channels: {', '.join(cat.channels)})")
    bad = in_order(m, now) or must_be_active(m, now, "ordering rewards")
    if bad:
        return bad
    if channel not in reward.channels:
        return Refusal(1, "channel-not-allowed",
                       f"{code} cannot be ordered via {channel}; it can be ordered via {', '.join(reward.channels)}",
                       ({"rule": "channels", "detail": f"{code} allows {', '.join(reward.channels)}; asked via {channel}",
                         "channels": list(reward.channels), "channel": channel},))
    sd = cat.store_discount
    rc = cat.reward_categories.get(reward.category)
    scoped = [(lim, code, 1) for lim in reward.limits] + [(lim, f"category {reward.category}", 2) for lim in (rc.limits if rc else ())]
    for lim, scope, field in scoped:
        match = code if field == 1 else reward.category
        count = sum(1 for o in m.orders if o[field] == match and _same_period(cat, o[0], now, lim.per))
        if count >= lim.max:
            return Refusal(1, "limit-reached",
                           f"limit reached: {scope} may be ordered {lim.max} time{'s' if lim.max != 1 else ''} "
                           f"{PER_WORDS[lim.per] if lim.per == 'ever' else 'per ' + PER_WORDS[lim.per][2:]}",
                           ({"rule": "limit", "detail": f"{scope}: {count} ordered {PER_WORDS[lim.per] if lim.per == 'ever' else 'this ' + lim.per}, "
                             f"at most {lim.max}", "per": lim.per, "max": lim.max, "count": count},))
    have = m.available()
    event = {"type": "redeem", "at": iso(now), "code": code, "name": reward.name, "category": reward.category,
             "channel": channel, "region": m.join["region"]}
    view = {"phone": m.phone, "code": code, "name": reward.name}
    if code == sd.reward:
        if price_rub is None:
            return Refusal(2, "missing-price", f"{code} needs --price RUB (the item's price in the store)")
        cap = int(price_rub * sd.max_share * sd.points_per_rub // 1)
        if points is None:
            use = min(cap, have)
        else:
            if points < 1:
                return Refusal(1, "too-few-points", "--points must be at least 1")
            if points > cap:
                return Refusal(1, "over-cap", f"at most {cap} points can pay for an item of {money(price_rub)} RUB "
                               f"({decimal_text(sd.max_share * 100)}% of the price at {sd.points_per_rub} points per rouble)")
            if points > have:
                return Refusal(1, "insufficient-points", f"{m.phone} has {have} points; {points - have} more needed")
            use = points
        if use < 1:
            return Refusal(1, "insufficient-points", f"{m.phone} has no points to pay with")
        discount = (Decimal(use) / Decimal(sd.points_per_rub)).quantize(Decimal("0.01"))
        to_pay = price_rub - discount
        event.update(points=use, price_rub=money(price_rub), discount_rub=money(discount), to_pay_rub=money(to_pay),
                     active_until=None)
        view.update(points_spent=use, balance=have - use, active_until=None, discount_rub=money(discount),
                    to_pay_rub=money(to_pay), price_rub=money(price_rub))
        return Decision(((m.phone, (event,)),), view)
    price = cat.price_for(reward, m.join["region"])
    if have < price:
        where = "its price for the region" if m.join["region"] in reward.region_prices else "the default price"
        return Refusal(1, "insufficient-points",
                       f"{code} costs {price} points in {m.join['region']}; {m.phone} has {have}, {price - have} more needed",
                       ({"rule": "price", "detail": f"{code} in {m.join['region']}: {price} points ({where})", "price": price},
                        {"rule": "available", "detail": f"{m.phone} has {have} points available", "available": have},
                        {"rule": "missing", "detail": f"{price - have} points missing", "missing": price - have}))
    until = now + dt.timedelta(days=reward.validity_days)
    event.update(points=price, active_until=iso(until))
    view.update(points_spent=price, balance=have - price, active_until=iso(until))
    if reward.issues_code:
        event["voucher"] = view["voucher"] = voucher_code(f"{m.phone}/{m.count}/{iso(now)}/{code}")
    return Decision(((m.phone, (event,)),), view)


# ---------------------------------------------------------------- gifts


def gift(cat: Catalog, s: Member, r: Member, now, points: int) -> Decision | Refusal:
    g = cat.gifts
    bad = in_order(s, now) or must_be_active(s, now, "gifting")
    if bad:
        return bad
    if s.phone == r.phone:
        return Refusal(1, "gift-to-self", "a member cannot gift points to themselves")
    rst = status(r, now)
    if rst != "active":
        why = {"none": "is not a member", "left": "is not a member", "pending": "is not active yet",
               "closed": "cannot receive gifts: the program closed"}[rst]
        return Refusal(1, "recipient-not-active", f"{r.phone} {why}; gifts go to active members only")
    bad = in_order(r, now)
    if bad:
        return bad
    if g.same_region and s.join["region"] != r.join["region"]:
        return Refusal(1, "wrong-region", f"gifts stay within a region: {s.phone} is in {s.join['region']}, "
                       f"{r.phone} in {r.join['region']}")
    if points < g.min_points:
        return Refusal(1, "too-few-points", f"a gift is at least {g.min_points} point{'s' if g.min_points != 1 else ''}")
    made = [x for x in s.gifts_out.values() if x["status"] != "cancelled"]
    today = local_date(cat, now)
    if sum(1 for x in made if local_date(cat, x["offered_at"]) == today) >= g.per_day:
        return Refusal(1, "limit-reached", f"limit reached: at most {g.per_day} gift{'s' if g.per_day != 1 else ''} a calendar day",
                       ({"rule": "gifts.per_day", "detail": f"offers made today: {g.per_day} or more, at most {g.per_day}",
                         "max": g.per_day},))
    month = sum(x["points"] for x in made if _same_period(cat, x["offered_at"], now, "month"))
    if month + points > g.per_month_points:
        return Refusal(1, "limit-reached", f"limit reached: at most {g.per_month_points} points a calendar month in gifts; "
                       f"{month} offered this month, {max(g.per_month_points - month, 0)} left",
                       ({"rule": "gifts.per_month_points", "detail": f"{month} offered this month + {points} > "
                         f"{g.per_month_points}", "offered": month, "points": points, "max": g.per_month_points},))
    have = s.available()
    if have < points:
        return Refusal(1, "insufficient-points", f"{s.phone} has {have} points; {points - have} more needed")
    deadline = now + dt.timedelta(days=g.accept_days)
    salt = 0
    while True:
        gid = gift_id_for(s.phone, r.phone, iso(now), s.count, salt)
        if gid not in s.gifts_out and gid not in r.gifts_in:
            break
        salt += 1
    lots = [{"expires_on": l.expires_on.isoformat(), "points": l.points} for l in s.lots]
    taken, left = [], points
    for l in lots:
        if left <= 0:
            break
        n = min(l["points"], left)
        taken.append({"expires_on": l["expires_on"], "points": n})
        left -= n
    out = {"type": "gift_out", "at": iso(now), "gift_id": gid, "to": r.phone, "points": points,
           "deadline": iso(deadline), "lots": taken}
    inn = {"type": "gift_in", "at": iso(now), "gift_id": gid, "from": s.phone, "points": points,
           "offered_at": iso(now), "deadline": iso(deadline), "lots": taken}
    view = {"gift_id": gid, "from": s.phone, "to": r.phone, "points": points, "offered_at": iso(now),
            "deadline": iso(deadline), "balance": have - points}
    return Decision(((s.phone, (out,)), (r.phone, (inn,))), view)


def accept(cat: Catalog, r: Member, s: Member | None, now, gift_id: str, reject=False) -> Decision | Refusal:
    if r.join is None:
        return not_member(r.phone)
    gin = r.gifts_in.get(gift_id)
    if gin is None:
        return Refusal(1, "gift-not-found", f"no gift {gift_id} was offered to {r.phone}")
    bad = in_order(r, now) or (in_order(s, now) if s is not None else None)
    if bad:
        return bad
    st = gin["status"]
    if st != "pending":
        word = {"returned": "was returned to its sender (not accepted within the deadline)",
                "forfeited": "was forfeited (its sender left the program)"}.get(st, f"was already {st}")
        return Refusal(1, "gift-not-pending", f"gift {gift_id} {word}")
    if now >= gin["deadline"]:
        return Refusal(1, "gift-not-pending", f"gift {gift_id} can no longer be accepted: the deadline was {iso(gin['deadline'])}")
    if not reject:
        bad = must_be_active(r, now, "accepting gifts")
        if bad:
            return bad
    today = local_date(cat, now)
    offer = next((e for e in r._own if e["type"] == "gift_in" and e["gift_id"] == gift_id), None)
    lots = [l for l in offer["lots"] if dt.date.fromisoformat(l["expires_on"]) > today]
    outcome = "rejected" if reject else "accepted"
    if reject:
        mine = {"type": "gift_reject", "at": iso(now), "gift_id": gift_id, "from": gin["from"], "reason": "rejected"}
        bal = r.available()
    else:
        mine = {"type": "gift_accept", "at": iso(now), "gift_id": gift_id, "from": gin["from"], "lots": lots}
        bal = r.available() + sum(l["points"] for l in lots)
    settle = {"type": "gift_settle", "at": iso(now), "gift_id": gift_id, "outcome": outcome, "decided_at": iso(now)}
    writes = [(r.phone, (mine,))]
    if s is not None:
        writes.append((s.phone, (settle,)))
    view = {"gift_id": gift_id, "status": outcome, "points": gin["points"] if reject else sum(l["points"] for l in lots),
            "balance": bal, "from": gin["from"], "to": r.phone}
    return Decision(tuple(writes), view)


def seals(cat: Catalog, m: Member, now) -> list:
    """Events that record, in this member's own ledger, outcomes now final (see docs/ledger.md)."""
    out = []
    for g in m.gifts_out.values():
        if g["gift_id"] in m.sealed:
            continue
        if g["outcome"] in ("cancelled", "accepted", "rejected", "returned", "forfeited"):
            at = g["when"]
            out.append({"type": "gift_settle", "at": iso(now), "gift_id": g["gift_id"], "outcome": g["outcome"],
                        "decided_at": iso(at)})
    for rec in m.referrals.values():
        final = rec["status"] == "void" or (rec["credit_at"] is not None and rec["credit_at"] <= now)
        if final and rec["referral_id"] not in m.sealed:
            ev = {"type": "referral_settle", "at": iso(now), "referral_id": rec["referral_id"],
                  "outcome": "void" if rec["status"] == "void" else "confirmed"}
            if rec["credit_at"] is not None:
                ev["credit_at"] = iso(rec["credit_at"])
            out.append(ev)
    return out


# ---------------------------------------------------------------- corrections


def refund(cat: Catalog, m: Member, now, ref: str, amount=None, refund_ref=None) -> Decision | Refusal:
    """Take back the points of the earn recorded with `ref` (RULES.md §3, Refunds)."""
    if m.join is None:
        return not_member(m.phone)
    if refund_ref is not None and refund_ref in m.refunds:
        view = dict(m.refunds[refund_ref], duplicate=True, balance=m.available(), debt=m.debt)
        return Decision((), view)
    bad = in_order(m, now)
    if bad:
        return bad
    rec = m.earns.get(ref)
    if rec is None:
        return Refusal(1, "unknown-ref", f"{m.phone} has no earn with reference {ref!r}",
                       ({"rule": "ref", "detail": f"no earn of {m.phone} carries the reference {ref!r}; "
                         f"known references: {len(m.earns)}", "ref": ref},))
    remaining = rec["amount"] - rec["refunded_amount"]
    left_step = {"rule": "left-to-refund", "detail": f"{ref}: {money(rec['amount'])} RUB spent, "
                 f"{money(rec['refunded_amount'])} refunded, {money(remaining)} left",
                 "amount": money(rec["amount"]), "refunded": money(rec["refunded_amount"]), "left": money(remaining)}
    if remaining <= 0:
        return Refusal(1, "already-refunded", f"the spending {ref} ({money(rec['amount'])} RUB) is already refunded in full",
                       (left_step,))
    if amount is None:
        amount = remaining
    if amount > remaining:
        return Refusal(1, "refund-too-large", f"only {money(remaining)} RUB of {ref} ({money(rec['amount'])} RUB) is left "
                       f"to refund; {money(amount)} asked",
                       (left_step, {"rule": "asked", "detail": f"{money(amount)} RUB asked", "asked": money(amount)}))
    p, total = rec["points"], rec["amount"]
    if rec["refunded_amount"] + amount == total:
        points = p - rec["refunded_points"]
        rule = f"the last part: whatever is left of {p} points"
    else:
        points = int((Decimal(p) * amount) // total)
        rule = f"floor({p} x {money(amount)} / {money(total)})"
    have = m.available()
    taken = min(points, have)
    short = points - taken
    debt_added = short if cat.allow_debt else 0
    event = {"type": "refund", "at": iso(now), "earn_ref": ref, "amount": money(amount), "points": points,
             "points_taken": taken, "debt_added": debt_added}
    if not cat.allow_debt and short:
        event["not_recovered"] = short
    if refund_ref is not None:
        event["ref"] = refund_ref
    steps = [{"rule": "refund", "detail": f"{money(amount)} RUB of a {money(total)} RUB spending that earned {p} points: "
              f"{rule} = {points}", "points": points},
             {"rule": "take", "detail": f"{taken} from available points (the spending's own lot first, then oldest expiry)"
              + (f"; {short} missing -> {'debt' if cat.allow_debt else 'not recovered (debt is off)'}" if short else ""),
              "points_taken": taken, "missing": short}]
    view = {"phone": m.phone, "ref": ref, "amount": money(amount), "points": points, "points_taken": taken,
            "debt": m.debt + debt_added, "duplicate": False, "balance": have - taken, "refund_ref": refund_ref,
            "not_recovered": 0 if cat.allow_debt else short, "_steps": steps}
    return Decision(((m.phone, (event,)),), view)


def adjust(cat: Catalog, m: Member, now, points: int, reason: str, ref=None, expires_on=None) -> Decision | Refusal:
    """An operator's credit (points > 0) or debit (points < 0), always with a reason."""
    if m.join is None or status(m, now) == "left":
        return not_member(m.phone)
    if ref is not None and ref in m.adjusts:
        view = dict(m.adjusts[ref], duplicate=True, balance=m.available())
        return Decision((), view)
    bad = in_order(m, now)
    if bad:
        return bad
    if points == 0:
        return Refusal(2, "bad-points", "an adjustment must credit or debit at least 1 point")
    if expires_on is not None and points < 0:
        return Refusal(2, "usage", "--expires-on goes with a credit (positive POINTS) only")
    if expires_on is not None and expires_on <= local_date(cat, now):
        return Refusal(2, "bad-date", f"--expires-on {expires_on} is not after today ({local_date(cat, now)})")
    have = m.available()
    if points < 0 and have < -points:
        return Refusal(1, "insufficient-points", f"{m.phone} has {have} points; cannot debit {-points} "
                       f"({-points - have} more than available)",
                       ({"rule": "available", "detail": f"{m.phone} has {have} points available", "available": have},
                        {"rule": "debit", "detail": f"a debit never goes below zero: {-points} asked",
                         "asked": -points, "missing": -points - have}))
    event = {"type": "adjust", "at": iso(now), "points": points, "reason": reason}
    if ref is not None:
        event["ref"] = ref
    if points > 0 and expires_on is not None:
        event["expires_on"] = expires_on.isoformat()
    repay = min(m.debt, points) if points > 0 else 0
    view = {"phone": m.phone, "points": points, "reason": reason, "ref": ref, "duplicate": False,
            "balance": have + points - repay,
            "expires_on": (expires_on or expiry_date(cat, now)).isoformat() if points > 0 else None}
    return Decision(((m.phone, (event,)),), view)


# ---------------------------------------------------------------- explain


def whole_months(since: dt.date, on: dt.date) -> int:
    n = (on.year - since.year) * 12 + on.month - since.month
    while n > 0 and add_months(since, n) > on:
        n -= 1
    return max(n, 0)


def explain(cat: Catalog, m: Member, now, key=None) -> Decision | Refusal:
    """Why a number is what it is: an earn / refund / adjust by ref or id, or the balance as lots."""
    if m.join is None:
        return not_member(m.phone)
    if key is None:
        lots = [{"lot": l.id, "reason": l.reason, "credited_at": iso(l.credited_at), "credited": l.original,
                 "available": l.points, "expires_on": l.expires_on.isoformat()} for l in m.lots]
        steps = [{"rule": "totals", "detail": ", ".join(f"{k} {v}" for k, v in m.totals.items()), **m.totals},
                 {"rule": "held", "detail": f"{m.held_out()} points held in gifts not yet settled", "held": m.held_out()},
                 {"rule": "debt", "detail": f"{m.debt} points owed (repaid by the next credits)", "debt": m.debt}]
        for l in lots:
            steps.append({"rule": "lot", "detail": f"{l['lot']}: {l['reason']} of {l['credited']} credited "
                          f"{l['credited_at'][:10]}, {l['available']} available, expires on {l['expires_on']}", **l})
        result = {"phone": m.phone, "available": m.available(), "held_out": m.held_out(), "debt": m.debt, "lots": lots}
        return Decision((), {"steps": steps, "result": result})
    event = None
    for e in m._own:
        if e["id"] == key or (e.get("ref") == key and e["type"] in ("earn", "refund", "adjust")):
            event = e
            if e["type"] == "earn":
                break
    if event is None:
        return Refusal(1, "unknown-ref", f"{m.phone} has no event with id or reference {key!r}")
    at = from_iso(event["at"])
    t = event["type"]
    if t == "earn":
        amount = Decimal(event["amount"])
        category = event["category"]
        join = None
        for e in m.joins:
            if from_iso(e["at"]) <= at:
                join = e
        since = dt.date.fromisoformat(join["customer_since"]) if join else local_date(cat, at)
        on = local_date(cat, at)
        steps = [{"rule": "category", "detail": f"{money(amount)} RUB in {category}", "amount": money(amount),
                  "category": category}]
        c = cat.categories.get(category)
        if c is not None and c.tiered:
            last = Decimal(event.get("card_last_month", "0"))
            steps.append({"rule": "card-tier", "detail": f"previous calendar month's {category} payments "
                          f"{money(last)} RUB -> {event['rub_per_point']} RUB per point",
                          "last_month": money(last), "rub_per_point": event["rub_per_point"]})
        else:
            steps.append({"rule": "rate", "detail": f"{category}: {event['rub_per_point']} RUB per point",
                          "rub_per_point": event["rub_per_point"]})
        if c is not None and c.tenure:
            months = whole_months(since, on)
            steps.append({"rule": "tenure", "detail": f"customer since {since}, {months} whole months on {on} -> "
                          f"coefficient {event['coefficient']}", "customer_since": since.isoformat(),
                          "months": months, "coefficient": event["coefficient"]})
        else:
            steps.append({"rule": "tenure", "detail": f"{category} does not use the tenure coefficient -> 1.0",
                          "coefficient": "1.0"})
        coef = Decimal(event["coefficient"])
        steps.append(formula_step(amount, coef, event["rub_per_point"], event["points"]))
        steps.append({"rule": "lot", "detail": f"lot {event['id']}: {event['points']} points, expires on "
                      f"{event['expires_on']}", "lot": event["id"], "expires_on": event["expires_on"]})
        for b in event.get("bonuses", ()):
            steps.append({"rule": b["reason"], "detail": f"{b['reason']}: +{b['points']} points (once)",
                          "points": b["points"]})
        result = {"id": event["id"], "type": "earn", "points": event["points"], "ref": event.get("ref")}
        return Decision((), {"steps": steps, "result": result})
    if t in ("refund", "adjust"):
        rows = [r for r in m.register if r["id"] == event["id"]]
        steps = [{"rule": t, "detail": rows[0]["detail"] if rows else t}]
        for lot in (rows[0].get("taken") or []) if rows else []:
            steps.append({"rule": "lot", "detail": f"took {lot['points']} from lot {lot['lot']} (expires on "
                          f"{lot['expires_on']})", **lot})
        result = {"id": event["id"], "type": t, "points": event.get("points"), "ref": event.get("ref")}
        return Decision((), {"steps": steps, "result": result})
    rows = [r for r in m.register if r["id"] == event["id"]]
    return Decision((), {"steps": [{"rule": t, "detail": r["detail"]} for r in rows] or [{"rule": t, "detail": t}],
                         "result": {"id": event["id"], "type": t}})
