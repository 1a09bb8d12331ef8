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
        led, chain = svc.store.read_checked(phone)
    except FilesError as e:
        return [{"path": str(path), "line": 0, "message": e.message, "text": e.message, "unreadable": True}]
    return check_ledger(svc, phone, led, now, chain)


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


def check_ledger(svc, phone, led, now, chain) -> list:
    """Every problem of one ledger; `chain`: its hash chain's problems, read with it (`read_checked`)."""
    cat = svc.catalog
    t = rules.seconds(now)
    ledgers = _Peers(svc.store)
    ledgers[phone] = led
    out = [_problem(led.path, n, message) for n, message in chain]
    if led.torn is not None:
        out.append(_problem(led.path, led.torn.line, "unfinished last line (an interrupted write); "
                            "the next change to this member seals it"))
    seen_ids, refs, last = set(), {}, ""
    for e in led.events:
        if e["id"] in seen_ids:
            out.append(_problem(led.path, line_of(led, e["id"]), f"duplicate event id {e['id']}"))
        seen_ids.add(e["id"])
        if e["type"] == "repair":
            continue
        text = e["at"]
        if last and len(text) == 25 and len(last) == 25 and text[19:] == last[19:]:
            earlier = text < last  # the stored shape, the same offset: the texts order as the instants do
        else:
            earlier = bool(last) and rules.instant(text) < rules.instant(last)
        if earlier:
            out.append(_problem(led.path, line_of(led, e["id"]), f"event {e['id']} is dated before the one above it"))
        last = text
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
            elif e["outcome"] in ("accepted", "rejected"):
                out.append(_problem(led.path, line_of(led, e["id"]),
                                    f"gift {e['gift_id']} recorded {e['outcome']} here, but {offer['to']}'s ledger has "
                                    "no such decision (was it restored from an older copy?)"))
        elif t in ("gift_accept", "gift_reject"):
            own = next((x for x in led.events if x["type"] == "gift_in" and x.get("gift_id") == e["gift_id"]), None)
            other = ledgers.get(e["from"])
            offer = next((x for x in (other.events if other else ())
                          if x["type"] == "gift_out" and x.get("gift_id") == e["gift_id"]), None)
            if own is None or offer is None:
                where = "this ledger" if own is None else f"{e['from']}'s ledger"
                out.append(_problem(led.path, line_of(led, e["id"]),
                                    f"gift {e['gift_id']} is decided here but its offer is missing from {where}"))
        elif t == "referral":
            other = ledgers.get(e["invitee"])
            joined = any(x["type"] == "join" and x.get("referral_id") == e["referral_id"]
                         for x in (other.events if other else ()))
            settle = next((x for x in led.events
                           if x["type"] == "referral_settle" and x.get("referral_id") == e["referral_id"]), None)
            if not joined and settle is not None and settle.get("outcome") == "confirmed":
                out.append(_problem(led.path, line_of(led, e["id"]),
                                    f"referral {e['referral_id']} was credited here, but {e['invitee']}'s ledger has no "
                                    "join naming it (was it restored from an older copy?)"))
        elif t == "join" and e.get("referral_id"):
            other = ledgers.get(e.get("referrer") or "")
            if not any(x["type"] == "referral" and x.get("referral_id") == e["referral_id"]
                       for x in (other.events if other else ())):
                out.append(_problem(led.path, line_of(led, e["id"]),
                                    f"joined on referral {e['referral_id']}, which is missing from "
                                    f"{e.get('referrer')}'s ledger"))
    return out


# ---------------------------------------------------------------- the directory anchor

ANCHOR_FORMAT = 1


def _heads(svc) -> dict:
    """phone -> {lines, hash}: each ledger's complete lines and the hash of its last one (the chain
    head: with a verified chain it stands for every line before it)."""
    out = {}
    for phone in svc.store.phones():
        path = svc.store.path(phone)
        try:
            data = ledger_mod._read_bytes(path)
        except (OSError, FilesError):
            continue
        lines = data.split(b"\n")
        lines.pop()  # after the last newline: empty, or a torn line (not part of the anchor)
        out[phone] = {"lines": len(lines), "hash": ledger_mod.line_hash(lines[-1]) if lines else ""}
    return out


def _digest(ledgers: dict) -> str:
    import hashlib
    import json

    return hashlib.sha256(json.dumps(ledgers, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def anchor(svc) -> dict:
    """The directory's anchor (CLI.md `check --ledgers --save-anchor`)."""
    ledgers = _heads(svc)
    return {"format": ANCHOR_FORMAT, "ledgers": ledgers, "digest": _digest(ledgers)}


def check_anchor(svc, doc, name: str) -> list:
    """Problems of the directory against an anchor saved earlier: every ledger it names still exists
    and still starts with exactly the lines it had (appended lines and new ledgers are fine)."""
    if (not isinstance(doc, dict) or doc.get("format") != ANCHOR_FORMAT or not isinstance(doc.get("ledgers"), dict)
            or doc.get("digest") != _digest(doc["ledgers"])):
        return [_problem(name, 1, "not an anchor written by `check --ledgers --save-anchor`, or it was changed "
                                  "(its digest does not match)")]
    out = []
    for phone, head in sorted(doc["ledgers"].items()):
        try:
            path = svc.store.path(phone)
        except ValueError:
            out.append(_problem(name, 1, f"the anchor names {phone!r}, which is not a phone"))
            continue
        try:
            data = ledger_mod._read_bytes(path)
        except FileNotFoundError:
            out.append(_problem(path, 1, f"this ledger was deleted since the anchor ({head['lines']} lines then)"))
            continue
        except (OSError, FilesError) as e:
            out.append(_problem(path, 1, f"cannot read it to compare with the anchor: {e}"))
            continue
        lines = data.split(b"\n")
        lines.pop()
        n = head["lines"]
        if len(lines) < n:
            out.append(_problem(path, max(len(lines), 1), f"this ledger has {len(lines)} lines, but had {n} when the "
                                                         "anchor was saved: it was truncated or restored from an "
                                                         "older copy"))
        elif n and ledger_mod.line_hash(lines[n - 1]) != head["hash"]:
            out.append(_problem(path, n, "this line is not the one the anchor saw: the ledger was edited, rewritten "
                                         "or restored from another copy"))
    return out
