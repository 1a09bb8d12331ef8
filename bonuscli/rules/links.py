"""Facts across two ledgers: the outcome of a gift or a referral, and which other
ledgers a replay must see.

A gift's state is one pure function of the sender's and the recipient's
ledgers (docs/ledger.md, "Gifts across two ledgers"). Pure. Imports model and
rules.dates.
"""

from __future__ import annotations

import datetime as dt

from bonuscli.model import Catalog
from bonuscli.rules.dates import Calendar, calendar_of, instant, ordinal


def _outcome(cal: Calendar, gift_id: str, sender_events, recipient_events, now: int):
    """(status, at) of a gift from both ledgers (docs/ledger.md, "Gifts across two ledgers").

    status: cancelled | accepted | rejected | forfeited | returned | expired | pending | unknown.
    The sender's `gift_out` is the offer; it is made only once the recipient's `gift_in`
    exists. The recipient's `gift_accept` / `gift_reject` is the decision. A `gift_settle` in
    the sender's ledger records the final outcome. A gift whose held points have all expired
    before any decision, leave or deadline is `expired` from the start of that day.
    """
    offer = None
    left_at = None
    for e in sender_events or ():
        t = e["type"]
        if t == "gift_out" and e["gift_id"] == gift_id:
            offer = e
        elif t == "gift_settle" and e["gift_id"] == gift_id:
            return e["outcome"], instant(e["decided_at"])
        elif t == "leave" and offer is not None and left_at is None:
            left_at = instant(e["at"])
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
        return "cancelled", instant(offer["at"])
    deadline = instant(incoming["deadline"])
    d_at = instant(decision["at"]) if decision else None
    if d_at is not None and (left_at is None or d_at <= left_at):
        return ("accepted" if decision["type"] == "gift_accept" else "rejected"), d_at
    lots = (offer or incoming).get("lots") or ()
    gone_at = cal.start(max(ordinal(x["expires_on"]) for x in lots)) if lots and cal is not None else None
    ends = [t for t in (left_at, deadline, gone_at) if t is not None]
    first = min(ends)
    if left_at is not None and left_at == first and left_at < deadline:
        return "forfeited", left_at
    if gone_at is not None and gone_at == first and gone_at < deadline and now >= gone_at:
        return "expired", gone_at
    if now >= deadline and (gone_at is None or deadline <= gone_at or now < gone_at):
        return "returned", deadline
    return "pending", now


def gift_outcome(gift_id: str, sender_events, recipient_events, now: dt.datetime, cat: Catalog | None = None):
    """`_outcome` with datetimes: (status, instant)."""
    cal = calendar_of(cat) if cat is not None else None
    status, at = _outcome(cal, gift_id, sender_events, recipient_events, int(now.timestamp()))
    return status, dt.datetime.fromtimestamp(at, now.tzinfo or dt.timezone.utc)


def _referral(referral_id: str, invitee_events):
    """(status, credit_at): confirmed when the invitee's join names this referral and activates."""
    join = None
    for e in invitee_events or ():
        if e["type"] == "join" and e.get("referral_id") == referral_id:
            join = e
        elif e["type"] == "leave" and join is not None:
            if instant(e["at"]) < instant(join["active_from"]):
                return "void", None
    if join is None:
        return "void", None
    return "confirmed", instant(join["active_from"])


def referral_outcome(referral_id: str, invitee_events):
    status, at = _referral(referral_id, invitee_events)
    return status, (dt.datetime.fromtimestamp(at, dt.timezone.utc) if at is not None else None)


LINK_TYPES = frozenset(("gift_out", "gift_in", "gift_accept", "gift_reject", "gift_settle", "referral",
                        "referral_settle"))


def peers_needed(events, now) -> set:
    """Phones whose ledgers a replay of these events as of `now` must see (two-ledger steps not
    settled by the lines dated up to `now`: a record written later does not count as of `now`)."""
    if not isinstance(now, int):
        now = int(now.timestamp())
    events = events[:cut(events, now)]
    links = LINK_TYPES
    found = [e for e in events if e["type"] in links]  # one pass over the ledger; the rest is small
    settled, decided, need = set(), set(), {}
    for e in found:
        t = e["type"]
        if t == "gift_settle":
            settled.add(e["gift_id"])
        elif t in ("gift_accept", "gift_reject"):
            decided.add(e["gift_id"])
        elif t == "referral_settle":
            settled.add(e["referral_id"])
    for e in found:
        t = e["type"]
        if t == "gift_out" and e["gift_id"] not in settled:
            need[e["to"]] = True
        elif t == "gift_in" and e["gift_id"] not in decided and e["gift_id"] not in settled:
            if instant(e["deadline"]) > now:
                need[e["from"]] = True
        elif t == "referral" and e["referral_id"] not in settled:
            need[e["invitee"]] = True
    return set(need)


def peers_of(m, now) -> set:
    """`peers_needed(m.own, now)` for a member replayed up to `now` or before: nothing when no gift or
    referral was ever applied to it (the only events that can name another ledger), without a scan."""
    if not (m.gifts_out or m.gifts_in or m.referrals):
        return set()
    return peers_needed(m.own, now)


def cut(events, now: int) -> int:
    """How many of `events` (a ledger's, oldest first) are dated up to `now`."""
    n = len(events)
    i = n - 1
    while i >= 0 and events[i]["type"] == "repair":
        i -= 1
    if i < 0 or instant(events[i]["at"]) <= now:
        return n
    for j, e in enumerate(events):
        if e["type"] != "repair" and instant(e["at"]) > now:
            return j
    return n


def components(links: dict, nodes) -> list:
    """THE grouping of linked members (union-find): the groups of `nodes` that `links` (node ->
    nodes it is tied to) join, each sorted, in the order of their first node. A linked node that is
    not among `nodes` (a recorded gift id, a member without a ledger) joins groups without being
    listed in any."""
    parent: dict = {}

    def find(x):
        root = x
        while parent.get(root, root) != root:
            root = parent[root]
        while x != root:
            parent[x], x = root, parent[x]
        return root

    for p, others in links.items():
        for q in others:
            a, b = find(p), find(q)
            if a != b:
                parent[max(a, b)] = min(a, b)
    groups: dict = {}
    for p in nodes:
        groups.setdefault(find(p), []).append(p)
    return sorted((sorted(g) for g in groups.values()), key=lambda g: g[0])


# ---------------------------------------------------------------- the ids that tie ledgers together


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


def voucher_code(event_seed: str) -> str:
    import hashlib

    h = hashlib.sha256(event_seed.encode()).hexdigest().upper()
    return f"BOOK-{h[:4]}-{h[4:8]}-{h[8:12]}"
