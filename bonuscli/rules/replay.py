"""The replay: a member's ledger (and the few facts of other ledgers it waits on)
turned into their state as of a moment.

Owns: the one event loop (`replay`, `play`, `extend`), the effect of each stored
event type (`APPLY`; an unknown type is an error, never skipped) and of each
scheduled effect (activation, referral credit, expiry of held gift points, end
of a gift). Pure. Imports model and the rules modules above it.

The answer as of T is always what applying, in file order, the lines dated up
to T gives, then advancing to T (expiries, activations, returns of gifts).
"""

from __future__ import annotations

import bisect
import heapq

from bonuscli.model import EVENT_TYPES as MODEL_EVENT_TYPES
from bonuscli.model import Catalog
from bonuscli.rules.dates import cents, date_of, instant, ordinal
from bonuscli.rules.links import _outcome, _referral, cut
from bonuscli.rules.member import (
    E_AT,
    E_CAT,
    E_ID,
    E_REF_AMOUNT,
    E_REF_POINTS,
    E_YM,
    EXP,
    PTS,
    Member,
    UnknownEvent,
)


# The hot path (`_earns`): runs of plain earns applied with the state in local variables, inside
# `play` and `extend`, never beside them. Off, every answer is the same (tests/test_replay_hot_path.py
# holds both ways equal over random histories); only slower.
HOT_PATH = True


def advance(m: Member, to: int) -> None:
    """Apply what is scheduled up to `to` (each after the expiries before it), then expire up to `to`."""
    sched = m.sched
    while sched and sched[0][0] <= to:
        at, _, kind, payload = heapq.heappop(sched)
        m.expire(at)
        SCHEDULED[kind](m, at, payload)
    m.expire(to)


# ---------------------------------------------------------------- scheduled effects


def _at_activate(m: Member, at: int, join: dict) -> None:
    if m.join is not join or (m.left_at is not None and m.left_at <= at):
        return
    day = m.cal.day(at)
    for item in join.get("welcome") or ():
        before = m.repaid
        got = m.credit(at, day, f"{join['id']}/{item['reason']}", item["points"], item["reason"])
        if m.keep:
            m._row(at, join["id"], "welcome", got, f"{item['reason']} bonus at activation",
                   earned=item["points"], debt_repaid=m.repaid - before)


def _at_referral(m: Member, at: int, rec: dict) -> None:
    if m.left_at is not None and m.left_at <= at:
        rec["status"] = "void"
        return
    before = m.repaid
    got = m.credit(at, m.cal.day(at), rec["id"], rec["points"], "referral")
    rec["status"] = "credited"
    if m.keep:
        m._row(at, rec["id"], "referral", got, f"referral bonus for inviting {rec['invitee']}",
               earned=rec["points"], debt_repaid=m.repaid - before)


def _at_held_expire(m: Member, at: int, payload) -> None:
    """A lot held in a pending gift reaches its expiry: lost, from the sender's held_out."""
    g, i = payload
    if g["status"] != "pending":
        return
    lot = g["lots"][i]
    if lot[2]:
        return
    lot[2] = 1
    g["lost"] += lot[1]
    m.totals["expired"] += lot[1]
    if m.keep:
        m._row(at, g["id"], "expire", 0, f"{lot[1]} points held in gift {g['gift_id']} expired",
               gift_id=g["gift_id"], expired=lot[1])


def _at_gift_end(m: Member, at: int, g: dict) -> None:
    status = g["outcome"]
    g["status"] = status
    g["settled_at"] = at
    alive = [lot for lot in g["lots"] if not lot[2]]
    points = sum(lot[1] for lot in alive)
    if status in ("returned", "rejected", "cancelled"):
        before, got = m.repaid, 0
        day = m.cal.day(at)
        for exp, n, _lost in alive:
            got += m._lot_in(at, day, g["id"], n, "gift return", exp)
        if m.keep:
            m._row(at, g["id"], "gift_return", got,
                   f"gift {g['gift_id']} to {g['to']} {status}; points back with their dates"
                   + (f", {g['lost']} expired while held" if g["lost"] else ""),
                   gift_id=g["gift_id"], debt_repaid=m.repaid - before, expired=0)
    elif status == "accepted":
        m.totals["gifted"] += points
        if m.keep:
            m._row(at, g["id"], "gift_accepted", 0, f"gift {g['gift_id']} accepted by {g['to']}",
                   gift_id=g["gift_id"], gifted=points, expired=0)
    elif status == "forfeited":
        m.totals["forfeited"] += points
        if m.keep:
            m._row(at, g["id"], "gift_forfeited", 0, f"gift {g['gift_id']} forfeited: its sender left",
                   gift_id=g["gift_id"], forfeited=points, expired=0)
    elif status == "expired":
        if m.keep:
            m._row(at, g["id"], "gift_expired", 0, f"gift {g['gift_id']} to {g['to']}: every point expired "
                   "while held", gift_id=g["gift_id"])


SCHEDULED = {"activate": _at_activate, "referral": _at_referral, "gift_end": _at_gift_end,
             "held_expire": _at_held_expire}


# ---------------------------------------------------------------- stored events


def _ev_join(m: Member, e: dict, at: int) -> None:
    ordinal(e["customer_since"])  # what the views read of it: a date (else the ledger is corrupt, not a view)
    m.joins.append(e)
    m.join = e
    m.left_at = None
    if m.keep:
        m._row(at, e["id"], "join", 0, f"joined by {e['method']} in {e['region']}, active from {e['active_from']}")
    m.schedule(instant(e["active_from"]), "activate", e)


def _ev_leave(m: Member, e: dict, at: int) -> None:
    lost = m.avail
    for lot in m.lots[m.head:]:
        lot[PTS] = 0
    m.lots, m.head, m.avail = [], 0, 0
    m.totals["forfeited"] += lost
    m.left_at = at
    if m.keep:
        m._row(at, e["id"], "leave", -lost, f"left the program; {lost} points forfeited", forfeited=lost)


def _ev_earn(m: Member, e: dict, at: int) -> None:
    day = m.cal.day(at)
    points = e["points"]
    before = m.repaid
    got = m.credit(at, day, e["id"], points, "earn")
    amount = cents(e["amount"])
    key = (e["category"], m.cal.ym(day))
    spend = m.month_spend
    spend[key] = spend.get(key, 0) + amount
    ref = e.get("ref")
    bonuses = e.get("bonuses")
    if ref is not None:
        m.earns[ref] = [e["id"], e["at"], amount, e["category"], points, e["coefficient"], e["rub_per_point"],
                        bonuses or [], 0, 0, key[1]]
    if m.keep:
        m._row(at, e["id"], "earn", got, f"{e['amount']} RUB {e['category']}: {points} points"
               + (f" (ref {ref})" if ref else ""), ref=ref, earned=points, debt_repaid=m.repaid - before)
    if bonuses:
        for b in bonuses:
            before = m.repaid
            got = m.credit(at, day, f"{e['id']}/{b['reason']}", b["points"], b["reason"])
            if b["reason"] == "card_welcome":
                m.card_welcome_given = True
            if m.keep:
                m._row(at, e["id"], b["reason"], got, f"{b['reason']} bonus", earned=b["points"],
                       debt_repaid=m.repaid - before)


def _ev_refund(m: Member, e: dict, at: int) -> None:
    rec = m.earns.get(e["earn_ref"])
    # the earn's lot expires `validity` after the earn's local day (Member._lot_in), when it has one
    near = m.cal.expiry(m.cal.day(instant(rec[E_AT]))) if rec else None
    taken = m.take(e["points_taken"], first=rec[E_ID] if rec else None, near=near)
    added = e.get("debt_added", 0)
    m.debt += added
    m.totals["refunded"] += e["points_taken"] + added
    amount = cents(e["amount"])
    if rec is not None:
        rec[E_REF_AMOUNT] += amount
        rec[E_REF_POINTS] += e["points"]
        key = (rec[E_CAT], rec[E_YM])
        m.month_spend[key] = m.month_spend.get(key, 0) - amount
    shown = [{"expires_on": date_of(x), "points": n, "lot": lid} for x, n, lid in taken]
    view = {"phone": m.phone, "ref": e["earn_ref"], "amount": e["amount"], "points": e["points"],
            "points_taken": e["points_taken"], "debt": m.debt, "not_recovered": e.get("not_recovered", 0),
            "refund_ref": e.get("ref")}
    if e.get("ref") is not None:
        m.refunds[e["ref"]] = view
    if m.keep:
        m._row(at, e["id"], "refund", -e["points_taken"],
               f"refund of {e['amount']} RUB on {e['earn_ref']}: {e['points']} points back"
               + (f", {added} as debt" if added else ""), ref=e.get("ref"),
               refunded=e["points_taken"] + added, taken=shown)


def _ev_adjust(m: Member, e: dict, at: int) -> None:
    n = e["points"]
    before = m.repaid
    shown = []
    if n > 0:
        exp = ordinal(e["expires_on"]) if e.get("expires_on") else None
        got = m.credit(at, m.cal.day(at), e["id"], n, "adjust", exp)
    else:
        taken = m.take(-n)
        m.totals["debited"] += -n
        got = n
        shown = [{"expires_on": date_of(x), "points": k, "lot": lid} for x, k, lid in taken]
    view = {"phone": m.phone, "points": n, "reason": e["reason"], "ref": e.get("ref")}
    if e.get("ref") is not None:
        m.adjusts[e["ref"]] = view
    if m.keep:
        m._row(at, e["id"], "adjust", got, f"adjustment {n:+d}: {e['reason']}", ref=e.get("ref"), taken=shown,
               adjusted=n, debt_repaid=m.repaid - before)


def _ev_redeem(m: Member, e: dict, at: int) -> None:
    points = e["points"]
    m.take(points)
    m.totals["spent"] += points
    until = e.get("active_until")
    m.orders.append([at, e["code"], e["category"], instant(until) if until else None, e.get("name", e["code"])])
    if m.keep:
        m._row(at, e["id"], "redeem", -points, f"ordered {e['code']} via {e['channel']}", code=e["code"],
               redeemed=points)


def _ev_gift_out(m: Member, e: dict, at: int) -> None:
    status, when = _outcome(m.cal, e["gift_id"], m.own, m.peers.get(e["to"]), m.now)
    taken = m.take(e["points"])
    lots = [[exp, n, 0] for exp, n, _lid in taken]
    g = {"id": e["id"], "gift_id": e["gift_id"], "to": e["to"], "points": e["points"], "offered_at": at,
         "deadline": instant(e["deadline"]), "lots": lots, "lost": 0, "status": "pending", "outcome": status,
         "when": when}
    m.gifts_out[e["gift_id"]] = g
    if status == "cancelled":  # never made: the points never left (back the way every gift return comes)
        day = m.cal.day(at)
        for exp, n, _lost in lots:
            m._lot_in(at, day, e["id"], n, "gift return", exp)
        g["status"] = "cancelled"
        return
    if m.keep:
        m._row(at, e["id"], "gift_out", -e["points"], f"gift {e['gift_id']} offered to {e['to']}",
               gift_id=e["gift_id"])
    for i, lot in enumerate(lots):
        m.schedule(m.cal.start(lot[0]), "held_expire", (g, i))
    if status not in ("pending", "unknown"):
        m.schedule(when, "gift_end", g)


def _ev_gift_in(m: Member, e: dict, at: int) -> None:
    status, when = _outcome(m.cal, e["gift_id"], m.peers.get(e["from"]), m.own, m.now)
    m.gifts_in[e["gift_id"]] = {"id": e["id"], "gift_id": e["gift_id"], "from": e["from"], "points": e["points"],
                                "offered_at": instant(e["offered_at"]), "deadline": instant(e["deadline"]),
                                "lots": [[ordinal(x["expires_on"]), x["points"]] for x in e.get("lots") or ()],
                                "status": status, "at": when}
    if m.keep:
        m._row(at, e["id"], "gift_in", 0, f"gift {e['gift_id']} of {e['points']} points offered by {e['from']}",
               gift_id=e["gift_id"])


def _ev_gift_accept(m: Member, e: dict, at: int) -> None:
    day = m.cal.day(at)
    before, got = m.repaid, 0
    for x in e["lots"]:
        m.totals["received"] += x["points"]
        got += m._lot_in(at, day, e["id"], x["points"], "gift", ordinal(x["expires_on"]))
    g = m.gifts_in.get(e["gift_id"])
    if g is not None:
        g["status"] = "accepted"
    if m.keep:
        m._row(at, e["id"], "gift_accept", got, f"gift {e['gift_id']} from {e['from']} accepted",
               gift_id=e["gift_id"], debt_repaid=m.repaid - before)


def _ev_gift_reject(m: Member, e: dict, at: int) -> None:
    g = m.gifts_in.get(e["gift_id"])
    if g is not None:
        g["status"] = "rejected"
    if m.keep:
        m._row(at, e["id"], "gift_reject", 0, f"gift {e['gift_id']} from {e['from']} rejected",
               gift_id=e["gift_id"])


def _ev_gift_settle(m: Member, e: dict, at: int) -> None:
    m.sealed.add(e["gift_id"])  # its effect is scheduled at decided_at when the gift_out is replayed


def _ev_referral_settle(m: Member, e: dict, at: int) -> None:
    m.sealed.add(e["referral_id"])


def _ev_referral(m: Member, e: dict, at: int) -> None:
    status, credit_at = "void", None
    for s in m.own:
        if s["type"] == "referral_settle" and s["referral_id"] == e["referral_id"]:
            status = s["outcome"]
            credit_at = instant(s["credit_at"]) if s.get("credit_at") else None
            break
    else:
        invitee = m.peers.get(e["invitee"])
        if invitee is not None:
            status, credit_at = _referral(e["referral_id"], invitee)
        else:
            status = "unknown"
    rec = {"id": e["id"], "referral_id": e["referral_id"], "invitee": e["invitee"], "points": e["points"],
           "status": status, "credit_at": credit_at}
    m.referrals[e["referral_id"]] = rec
    if status == "confirmed" and credit_at is not None:
        m.schedule(credit_at, "referral", rec)


def _ev_repair(m: Member, e: dict, at: int) -> None:
    pass


APPLY = {
    "join": _ev_join, "leave": _ev_leave, "earn": _ev_earn, "refund": _ev_refund, "adjust": _ev_adjust,
    "redeem": _ev_redeem, "gift_out": _ev_gift_out, "gift_in": _ev_gift_in, "gift_accept": _ev_gift_accept,
    "gift_reject": _ev_gift_reject, "gift_settle": _ev_gift_settle, "referral": _ev_referral,
    "referral_settle": _ev_referral_settle, "repair": _ev_repair,
}
EVENT_TYPES = frozenset(APPLY)
assert EVENT_TYPES == MODEL_EVENT_TYPES, "model.EVENT_TYPES names exactly the types replay applies"


# ---------------------------------------------------------------- the loop


def _epoch(now) -> int:
    return now if isinstance(now, int) else int(now.timestamp())


def replay(cat: Catalog, phone: str, events, now, peers=None, register=False) -> Member:
    """The member's state as of `now` (datetime or epoch). `peers`: phone -> events of that ledger.

    `register`: also build the history rows (`history`, `explain`, `report` need them)."""
    m = Member(cat, phone)
    m.keep = register
    return play(m, events, _epoch(now), peers)


def play(m: Member, events, now: int, peers=None) -> Member:
    """Apply `events` (this ledger's, oldest first, after what `m` already holds) up to `now`,
    then advance to `now`."""
    m.now = now
    m.count += len(events)
    for e in reversed(events):  # a ledger's times only move forward: the last dated line is the latest
        if e["type"] != "repair":
            at = instant(e["at"])
            m.last_at = at if m.last_at is None else max(m.last_at, at)
            break
    k = cut(events, now)
    own = m.own = events[:k] if k < len(events) else list(events)
    m.peers = {p: evs[:cut(evs, now)] for p, evs in (peers or {}).items()}
    cal = m.cal
    apply = APPLY
    i, n = 0, len(own)
    while i < n:
        e = own[i]
        t = e["type"]
        if t == "earn" and HOT_PATH and not m.sched and not m.keep and not m.debt:
            j = _earns(m, own, i)
            if j > i:
                i = j
                continue
        i += 1
        fn = apply.get(t)
        if fn is None:
            raise UnknownEvent(e)
        if t == "repair":
            continue
        at = instant(e["at"])
        if m.sched or (m.head < len(m.lots) and at >= cal.start(m.lots[m.head][EXP])):
            advance(m, at)
        fn(m, e, at)
    advance(m, now)
    m.peers = {}
    return m


def _earns(m: Member, own: list, i: int) -> int:
    """The hot path: a run of plain earns (no bonus, no debt, nothing scheduled, no history rows)
    from own[i], applied exactly as `_ev_earn` would, with the state in local variables. An earn
    needs the local day, not the instant: lots expire at local midnight. Returns the index of the
    first event it did not apply."""
    cal = m.cal
    days = cal.days
    totals = m.totals
    spend = m.month_spend
    earns = m.earns
    lots = m.lots
    head = m.head
    seq, avail, credited, expired = m.seq, m.avail, totals["credited"], totals["expired"]
    n = len(own)
    while i < n:
        e = own[i]
        if e["type"] != "earn":
            break
        s = e["at"]
        key = s[:10] + s[19:]
        info = days.get(key, 0)
        if info == 0:
            info = cal.day_info(key) if len(s) == 25 else None
        a = e["amount"]
        if info is None or e["bonuses"] or a[-3:-2] != ".":
            break
        day = info[0]
        if head < len(lots) and lots[head][0] <= day:
            m.seq, m.avail = seq, avail
            totals["credited"], totals["expired"] = credited, expired
            m.expire(cal.start(day))
            lots, head = m.lots, m.head
            avail, expired = m.avail, totals["expired"]
        pts = e["points"]
        if pts > 0:
            credited += pts
            exp = info[1]
            if exp > day:
                seq += 1
                lot = [exp, seq, pts, e["id"], "earn", s, pts]
                if head == len(lots) or exp >= lots[-1][0]:
                    lots.append(lot)
                else:
                    bisect.insort(lots, lot, lo=head)
                avail += pts
            else:
                expired += pts
        kop = int(a.replace(".", ""))
        cat_key = (e["category"], info[2])
        spend[cat_key] = spend.get(cat_key, 0) + kop
        ref = e.get("ref")
        if ref is not None:
            earns[ref] = [e["id"], s, kop, e["category"], pts, e["coefficient"], e["rub_per_point"], [], 0, 0,
                          info[2]]
        i += 1
    m.seq, m.avail, m.head = seq, avail, head
    totals["credited"], totals["expired"] = credited, expired
    return i


def advance_to(m: Member, now: int) -> None:
    """Move a replayed member forward to `now` with no new event (exact only when nothing waits on
    another ledger: `peers_needed(m.own, now)` is empty)."""
    advance(m, now)
    if m.now is None or now > m.now:
        m.now = now


def extend(m: Member, event: dict, at: int | None = None) -> None:
    """Apply one more (stamped) event of this member's own, as replay would (`at`: its instant,
    when the caller has it)."""
    if at is None:
        at = instant(event["at"])
    own = m.own
    if event["type"] == "earn" and HOT_PATH and not m.sched and not m.keep and not m.debt:
        own.append(event)
        if _earns(m, own, len(own) - 1) < len(own):  # not a plain earn after all: nothing was applied
            own.pop()
            _apply(m, event, at)
    else:
        _apply(m, event, at)
    m.count += 1
    m.last_at = at if m.last_at is None else max(m.last_at, at)
    m.now = max(m.now, at)


def _apply(m: Member, event: dict, at: int) -> None:
    advance(m, at)
    m.own.append(event)
    fn = APPLY.get(event["type"])
    if fn is None:
        raise UnknownEvent(event)
    fn(m, event, at)
