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
from typing import NamedTuple, Optional

from bonuscli import rules, service
from bonuscli.model import BonusError, Catalog, Refusal, from_iso

# event types that are a request's own authoritative record; the rest
# (gift_in, gift_settle, referral, referral_settle, repair, gift_reject by
# leaving) are consequences that re-deciding the request writes again.
REQUEST_TYPES = ("join", "earn", "redeem", "gift_out", "gift_accept", "gift_reject", "leave", "refund", "adjust")
PRIORITY = {"join": 0, "earn": 2, "adjust": 2, "refund": 3, "redeem": 3, "gift": 4, "accept": 5,
            "leave": 6}  # ties between ledgers


class Request(NamedTuple):
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


def requests_of(ledgers: dict, cat: Optional[Catalog] = None) -> list:
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
        for n, e in enumerate(ledgers[phone]):
            t = e.get("type")
            if t not in REQUEST_TYPES:
                continue
            at = from_iso(e["at"])
            if t == "join":
                events = ledgers[phone]
                first = not any(x.get("type") == "join" for x in events[:n])
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
    import heapq

    keyed = [[((key[0], PRIORITY.get(r.command, 9) + (1 if r.args.get("referrer") else 0), key[1], key[2]), r)
              for key, r in lst] for lst in per_ledger]
    return [r for _, r in heapq.merge(*keyed, key=lambda x: x[0])]


class Outcome(NamedTuple):
    request: Request
    ok: bool
    kind: Optional[str]  # the refusal's kind, None when done
    message: Optional[str]
    view: Optional[dict]


class World:
    """Ledgers in memory, changed only by re-decided requests."""

    def __init__(self, cat: Catalog):
        self.cat = cat
        self.svc = service.in_memory(cat)
        self.gift_ids: dict = {}  # gift id as recorded -> gift id in this world
        self.outcomes: list = []

    @property
    def ledgers(self) -> dict:
        """phone -> the events this world wrote."""
        return {p: list(self.svc.store.read(p).events) for p in self.svc.store.phones()}

    def member(self, phone: str, now):
        return self.svc.member(phone, now)

    def _transact(self, phones, now, decide):
        try:
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
        cat, now, phone, a = self.cat, req.at, req.phone, req.args
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
        m = self.svc.member(phone, now)
        return {"available": m.available(), "earned": m.totals["credited"], "spent": m.totals["spent"],
                "expired": m.totals["expired"], "forfeited": m.totals["forfeited"], "debt": m.debt,
                "refunded": m.totals["refunded"]}


def _keep(result, world):
    world._last = result
    return result
