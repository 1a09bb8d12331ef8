"""`check --ledgers`: every ledger of a data directory, and the invariants across them.

Owns: the invariant checker used by tests and by the command (LEDGER_CHECKS).
Reads ledgers through the service's store (never writes, never trusts a
snapshot); the arithmetic is the rules' replay. Returns problems as values.
Imports model, ledger, rules, fleet.
"""

from __future__ import annotations

from bonuscli import ledger as ledger_mod
from bonuscli import rules
from bonuscli.model import FilesError


def _problem(path, line, message):
    return {"path": str(path), "line": line, "message": message, "text": f"{path}:{line}: {message}"}


def conservation(m) -> tuple:
    """(left side, right side) of: credited + received = available + spent + expired
    + forfeited + gifted + held + refunded - debt + debited (held: still valid; what expired
    while held is in expired)."""
    t = m.totals
    lhs = t["credited"] + t["received"]
    rhs = (m.available() + t["spent"] + t["expired"] + t["forfeited"] + t["gifted"] + m.held_out()
           + t["refunded"] + t["debited"] - m.debt)
    return lhs, rhs


def line_of(led, event_id) -> int:
    """1-based line number of an event in a ledger file (by id)."""
    try:
        with open(led.path, "rb") as f:
            for n, raw in enumerate(f, start=1):
                if f'"id":"{event_id}"'.encode() in raw:
                    return n
    except OSError:
        pass
    return 1


def check_member(svc, phone, now) -> list:
    """Every problem of one ledger, reading the other ledgers its gifts and referrals name."""
    from bonuscli.service import gc_paused

    with gc_paused():
        return _check_member(svc, phone, now)


def _check_member(svc, phone, now) -> list:
    path = svc.store.path(phone)
    try:
        led = svc.store.read(phone)
    except FilesError as e:
        return [{"path": str(path), "line": 0, "message": e.message, "text": e.message, "unreadable": True}]
    return check_ledger(svc, phone, led, now)


def check_dir(svc, now, jobs=None) -> list:
    """Problems of every ledger in the data directory, ledgers spread over `jobs` processes."""
    from bonuscli import fleet

    unreadable, problems = [], []
    for found in fleet.map_members(svc, now, check_member, jobs):
        for p in found:
            (unreadable if p.pop("unreadable", False) else problems).append(p)
    return unreadable + problems  # unreadable ledgers first, then each ledger's problems in phone order


class _Peers(dict):
    """Ledgers read on demand (a missing or unreadable one reads as absent: its own check reports it)."""

    def __init__(self, store):
        super().__init__()
        self.store = store

    def __missing__(self, phone):
        try:
            led = self.store.read(phone)
        except (FilesError, ValueError):
            led = None
        self[phone] = led
        return led

    def get(self, phone, default=None):
        led = self[phone]
        return led if led is not None and led.size else default


def check_ledger(svc, phone, led, now) -> list:
    cat = svc.catalog
    t = rules.seconds(now)
    ledgers = _Peers(svc.store)
    ledgers[phone] = led
    out = []
    try:
        with open(led.path, "rb") as f:
            data = f.read()
        for n, message in ledger_mod.verify_chain(led.path, data, phone):
            out.append(_problem(led.path, n, message))
    except OSError as e:
        out.append(_problem(led.path, 0, f"cannot read: {e.strerror or e}"))
    if led.torn is not None:
        out.append(_problem(led.path, led.torn.line, "unfinished last line (an interrupted write); "
                            "the next change to this member seals it"))
    seen_ids, refs, last = set(), {}, None
    for e in led.events:
        if e["id"] in seen_ids:
            out.append(_problem(led.path, line_of(led, e["id"]), f"duplicate event id {e['id']}"))
        seen_ids.add(e["id"])
        if e["type"] == "repair":
            continue
        at = rules.instant(e["at"])
        if last is not None and at < last:
            out.append(_problem(led.path, line_of(led, e["id"]), f"event {e['id']} is dated before the one above it"))
        last = at
        if e["type"] in ("earn", "refund", "adjust") and e.get("ref") is not None:
            key = (e["type"], e["ref"])
            if key in refs:
                out.append(_problem(led.path, line_of(led, e["id"]),
                                    f"reference {e['ref']} applied twice ({e['type']}; first {refs[key]})"))
            refs[key] = e["id"]
    peers = {}
    for p in rules.peers_needed(led.events, t):
        other = ledgers.get(p)
        peers[p] = other.events if other is not None else ()
    try:
        m = rules.replay(cat, phone, led.events, t, peers)
    except Exception as e:  # a ledger the rules cannot replay is unsound
        return out + [_problem(led.path, 1, f"cannot replay this ledger ({type(e).__name__}: {e})")]
    lhs, rhs = conservation(m)
    if lhs != rhs:
        out.append(_problem(led.path, 1, f"points do not add up: credited+received {lhs} != accounted {rhs} "
                            f"(totals {m.totals}, available {m.available()}, held {m.held_out()}, debt {m.debt})"))
    for e in led.events:
        t = e["type"]
        if t == "gift_out":
            other = ledgers.get(e["to"])
            inn = [x for x in (other.events if other else ()) if x["type"] == "gift_in" and x.get("gift_id") == e["gift_id"]]
            status, _ = rules.gift_outcome(e["gift_id"], led.events, other.events if other else (), now, cat)
            if inn:
                x = inn[0]
                if x["points"] != e["points"] or x["from"] != phone or x.get("lots") != e.get("lots"):
                    out.append(_problem(led.path, line_of(led, e["id"]),
                                        f"gift {e['gift_id']} differs from its copy in {e['to']}'s ledger"))
            elif status != "cancelled":
                settle = next((x for x in led.events if x["type"] == "gift_settle" and x["gift_id"] == e["gift_id"]), None)
                if settle is None or settle["outcome"] != "cancelled":
                    out.append(_problem(led.path, line_of(led, e["id"]),
                                        f"gift {e['gift_id']} is missing from {e['to']}'s ledger"))
        elif t == "gift_in":
            other = ledgers.get(e["from"])
            outs = [x for x in (other.events if other else ()) if x["type"] == "gift_out" and x.get("gift_id") == e["gift_id"]]
            if not outs:
                out.append(_problem(led.path, line_of(led, e["id"]),
                                    f"gift {e['gift_id']} has no offer in {e['from']}'s ledger"))
        elif t == "gift_settle":
            offer = next((x for x in led.events if x["type"] == "gift_out" and x["gift_id"] == e["gift_id"]), None)
            if offer is None:
                out.append(_problem(led.path, line_of(led, e["id"]), f"settles unknown gift {e['gift_id']}"))
                continue
            other = ledgers.get(offer["to"])
            decision = next((x for x in (other.events if other else ())
                             if x["type"] in ("gift_accept", "gift_reject") and x.get("gift_id") == e["gift_id"]), None)
            if decision is not None:
                want = "accepted" if decision["type"] == "gift_accept" else "rejected"
                if e["outcome"] != want:
                    out.append(_problem(led.path, line_of(led, e["id"]),
                                        f"gift {e['gift_id']} recorded {e['outcome']} here but {want} by {offer['to']}"))
    return out
