"""Views: what a replayed member looks like to a person or a script.

Owns: balance, forecast, explain, `calc` (a spending without a member), and
the per-member figures of `report`. Each returns plain data (the JSON documents
of CLI.md). Pure. Imports model and the other rules modules.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from bonuscli.model import Catalog, Decision, Refusal, decimal_text, money
from bonuscli.rules.dates import date_of, formula_step, points_for, rate, seconds, tenure_coefficient, whole_months, ym_text
from bonuscli.rules.member import EXP, LID, PTS, WHY, CRED, ORIG, Member
from bonuscli.rules.status import not_member, status


def _t(now) -> int:
    return now if isinstance(now, int) else seconds(now)


def next_expiry(m: Member):
    lots = m.live_lots()
    if not lots:
        return None
    first = lots[0][EXP]
    return {"date": date_of(first), "points": sum(lot[PTS] for lot in lots if lot[EXP] == first)}


def coefficient_now(m: Member, now: int) -> str | None:
    if m.join is None:
        return None
    since = dt.date.fromisoformat(m.join["customer_since"])
    return decimal_text(tenure_coefficient(m.cat, since, dt.date.fromordinal(m.cal.day(now))))


def pending_in(m: Member, now: int) -> list:
    """Gifts offered to this member and not yet decided, with the points still valid."""
    today = m.cal.day(now)
    out = []
    for g in m.gifts_in.values():
        if g["status"] != "pending":
            continue
        valid = sum(n for exp, n in g["lots"] if exp > today) if g["lots"] else g["points"]
        out.append({"gift_id": g["gift_id"], "from": g["from"], "points": valid, "offered_at": m.cal.iso(g["offered_at"]),
                    "deadline": m.cal.iso(g["deadline"]), "offered_points": g["points"]})
    return out


def balance(m: Member, now) -> Decision | Refusal:
    if m.join is None:
        return not_member(m.phone)
    t = _t(now)
    active = [{"code": code, "name": name, "active_until": m.cal.iso(until)}
              for (_at, code, _cat, until, name) in m.orders if until is not None and until > t]
    view = {
        "phone": m.phone,
        "region": m.join["region"],
        "status": status(m, t),
        "available": m.available(),
        "held_out": m.held_out(),
        "pending_in": pending_in(m, t),
        "next_expiry": next_expiry(m),
        "coefficient": coefficient_now(m, t),
        "customer_since": m.join["customer_since"],
        "active_rewards": active,
        "debt": m.debt,
        "active_from": m.join["active_from"],
        "as_of": m.cal.iso(t),
    }
    return Decision((), view)


def _months_through(start_ym: int, last_ym: int, minimum: int = 12) -> list:
    return list(range(start_ym, max(start_ym + minimum - 1, last_ym) + 1))


def forecast(m: Member, now, days=None, until=None) -> Decision | Refusal:
    """Lots expiring in the window; `months`: every month from this one through the last in which
    an available point expires (at least 12), so their points add up to `available`."""
    if m.join is None:
        return not_member(m.phone)
    t = _t(now)
    cal = m.cal
    today = cal.day(t)
    end = until.toordinal() if until is not None else today + (30 if days is None else days)
    lots: dict = {}
    by_month: dict = {}
    for lot in m.live_lots():
        if today < lot[EXP] <= end:
            lots[lot[EXP]] = lots.get(lot[EXP], 0) + lot[PTS]
        ym = cal.ym(lot[EXP])
        by_month[ym] = by_month.get(ym, 0) + lot[PTS]
    listed = [{"expires_on": date_of(d), "points": p} for d, p in sorted(lots.items())]
    this = cal.ym(today)
    months = [{"month": ym_text(k), "points": by_month.get(k, 0)}
              for k in _months_through(this, max(by_month, default=this))]
    view = {"phone": m.phone, "until": date_of(end), "total": sum(lots.values()), "lots": listed, "months": months}
    return Decision((), view)


def explain(cat: Catalog, m: Member, now, key=None) -> Decision | Refusal:
    """Why a number is what it is: an earn / refund / adjust by ref or id, or the balance as lots.
    `m` must be replayed with its register (history rows)."""
    if m.join is None:
        return not_member(m.phone)
    if key is None:
        lots = [{"lot": lot[LID], "reason": lot[WHY], "credited_at": lot[CRED], "credited": lot[ORIG],
                 "available": lot[PTS], "expires_on": date_of(lot[EXP])} for lot in m.live_lots()]
        totals = dict(m.totals, debt_repaid=m.repaid)
        steps = [{"rule": "totals", "detail": ", ".join(f"{k} {v}" for k, v in totals.items()), **totals},
                 {"rule": "held", "detail": f"{m.held_out()} points held in gifts not yet settled", "held": m.held_out()},
                 {"rule": "debt", "detail": f"{m.debt} points owed (repaid first by the next credits)", "debt": m.debt}]
        for lot in lots:
            steps.append({"rule": "lot", "detail": f"{lot['lot']}: {lot['reason']} of {lot['credited']} credited "
                          f"{lot['credited_at'][:10]}, {lot['available']} available, expires on {lot['expires_on']}", **lot})
        result = {"phone": m.phone, "available": m.available(), "held_out": m.held_out(), "debt": m.debt, "lots": lots}
        return Decision((), {"steps": steps, "result": result})
    event = None
    for e in m.own:
        if e["id"] == key or (e.get("ref") == key and e["type"] in ("earn", "refund", "adjust")):
            event = e
            if e["type"] == "earn":
                break
    if event is None:
        return Refusal(1, "unknown-ref", f"{m.phone} has no event with id or reference {key!r}")
    rows = [r for r in m.register if r["id"] == event["id"]]
    t = event["type"]
    if t == "earn":
        return Decision((), _explain_earn(cat, m, event, rows))
    if t in ("refund", "adjust"):
        steps = [{"rule": t, "detail": rows[0]["detail"] if rows else t}]
        for lot in (rows[0].get("taken") or []) if rows else []:
            steps.append({"rule": "lot", "detail": f"took {lot['points']} from lot {lot['lot']} (expires on "
                          f"{lot['expires_on']})", **lot})
        repaid = sum(r.get("debt_repaid", 0) for r in rows)
        if repaid:
            steps.append({"rule": "debt", "detail": f"{repaid} of it repaid the debt first", "debt_repaid": repaid})
        result = {"id": event["id"], "type": t, "points": event.get("points"), "ref": event.get("ref")}
        return Decision((), {"steps": steps, "result": result})
    return Decision((), {"steps": [{"rule": t, "detail": r["detail"]} for r in rows] or [{"rule": t, "detail": t}],
                         "result": {"id": event["id"], "type": t}})


def _explain_earn(cat: Catalog, m: Member, event: dict, rows: list) -> dict:
    from bonuscli.rules.dates import instant

    at = instant(event["at"])
    on = dt.date.fromordinal(m.cal.day(at))
    amount = Decimal(event["amount"])
    category = event["category"]
    join = None
    for e in m.joins:
        if instant(e["at"]) <= at:
            join = e
    since = dt.date.fromisoformat(join["customer_since"]) if join else on
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
    steps.append(formula_step(amount, Decimal(event["coefficient"]), event["rub_per_point"], event["points"]))
    earn_rows = [r for r in rows if r["type"] == "earn"]
    repaid = earn_rows[0].get("debt_repaid", 0) if earn_rows else 0
    into_lot = event["points"] - repaid
    if repaid:
        steps.append({"rule": "debt", "detail": f"{repaid} of {event['points']} points repaid the debt first",
                      "debt_repaid": repaid})
    if into_lot > 0:
        steps.append({"rule": "lot", "detail": f"lot {event['id']}: {into_lot} points, expires on "
                      f"{event['expires_on']}", "lot": event["id"], "points": into_lot,
                      "expires_on": event["expires_on"]})
    for b in event.get("bonuses", ()):
        steps.append({"rule": b["reason"], "detail": f"{b['reason']}: +{b['points']} points (once)",
                      "points": b["points"]})
    result = {"id": event["id"], "type": "earn", "points": event["points"], "ref": event.get("ref"),
              "debt_repaid": repaid}
    return {"steps": steps, "result": result}


def summary(m: Member, now) -> dict | None:
    """Everything `report` needs about one member, as plain data (`m` replayed with its register)."""
    if m.join is None:
        return None
    t = _t(now)
    rows = []
    cal = m.cal
    from bonuscli.rules.dates import instant

    for r in m.register:
        day = date_of(cal.day(instant(r["at"])))
        rows.append((day, r["type"], r["points"], r.get("earned", 0), r.get("expired", 0), r.get("gifted", 0),
                     r.get("refunded", 0), r.get("forfeited", 0), r.get("adjusted", 0), r.get("redeemed", 0)))
    lots = [(date_of(lot[EXP]), lot[PTS]) for lot in m.live_lots()]
    return {"phone": m.phone, "region": m.join["region"], "status": status(m, t), "available": m.available(),
            "held": m.held_out(), "debt": m.debt, "rows": rows, "lots": lots}


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
