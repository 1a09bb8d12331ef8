"""Decisions: what each command would write, decided on a replayed member.

Owns: join, leave, earn, redeem, gift, accept, refund, adjust, and the
seals (records of outcomes already decided elsewhere). Each returns a Decision
(events to append per phone, in write order, and the view) or a Refusal; none
writes, reads a file or the clock. `now` is an aware datetime or epoch
seconds. Imports model and the other rules modules.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from bonuscli.model import Catalog, Decision, Refusal, decimal_text, money
from bonuscli.rules.dates import (
    activation_instant,
    same_period,
    date_of,
    formula_step,
    points_for,
    rate,
    rub,
    seconds,
)
from bonuscli.rules.member import (
    E_AMOUNT,
    E_BONUSES,
    E_CAT,
    E_COEF,
    E_POINTS,
    E_REF_AMOUNT,
    E_REF_POINTS,
    E_RPP,
    EXP,
    PTS,
    Member,
)
from bonuscli.rules.links import gift_id_for, voucher_code
from bonuscli.rules.status import already_left, in_order, late_spending, must_be_active, not_member, status


def _t(now) -> int:
    return now if isinstance(now, int) else seconds(now)


def _repay(m: Member, points: int) -> int:
    return min(m.debt, points) if points > 0 else 0


# ---------------------------------------------------------------- join and leave


def join(cat: Catalog, m: Member, now, req: dict, inviter: Member | None = None, welcome=True,
         again=False) -> Decision | Refusal:
    """req: region, method, services, email, birth_date, customer_since, referrer (normalised).
    `again` (a batch file run again): a membership with the same `at`, region and method is this
    row's, already applied: a duplicate."""
    t = _t(now)
    at = m.cal.iso(t)
    j = m.join
    if again and j is not None and m.left_at is None and j["at"] == at and j["region"] == req["region"] \
            and j["method"] == req["method"]:
        return Decision((), {"phone": m.phone, "region": j["region"], "method": j["method"], "joined_at": at,
                             "active_from": j["active_from"], "duplicate": True})
    bad = in_order(m, t)
    if bad:
        return bad
    if m.cal.closed(t):
        return Refusal(1, "program-closed", f"the program closed on {cat.closing_date}; joining is no longer possible")
    st = status(m, t)
    if st in ("pending", "active"):
        return Refusal(1, "already-member", f"{m.phone} is already a member ({st}); leave first to join again")
    services = req["services"]
    if not any(s in cat.services_eligible for s in services):
        return Refusal(1, "not-eligible",
                       f"only subscribers with one of {', '.join(cat.services_eligible)} may join "
                       f"({', '.join(services)} alone does not qualify)")
    today = dt.date.fromordinal(m.cal.day(t))
    since = req.get("customer_since") or today
    active_from = activation_instant(cat, req["method"], m.cal.local(t))
    items, first = [], welcome
    if first and not m.joins:
        b = cat.bonuses
        items.append({"reason": "welcome", "points": b.welcome})
        if req["method"] == "web":
            items.append({"reason": "web_form", "points": b.web_form})
            if req.get("email") and req.get("birth_date"):
                items.append({"reason": "web_profile", "points": b.web_profile})
        items = [w for w in items if w["points"] > 0]
    event = {"type": "join", "at": at, "region": req["region"], "method": req["method"],
             "services": list(services), "customer_since": since.isoformat(),
             "active_from": active_from.isoformat(timespec="seconds"), "welcome": items}
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
        if inviter is None or status(inviter, t) != "active":
            return Refusal(1, "referrer-not-member",
                           f"the referrer {referrer} must be an active member when {m.phone} joins")
        bad = in_order(inviter, t)
        if bad:
            return bad
        event["referrer"] = referrer
        already = any(j.get("referral_id") for j in m.joins)
        if not already and cat.bonuses.referral > 0:
            rid = "r" + gift_id_for(referrer, m.phone, at, inviter.count)[1:]
            event["referral_id"] = rid
            writes.append((referrer, ({"type": "referral", "at": at, "referral_id": rid, "invitee": m.phone,
                                       "points": cat.bonuses.referral},)))
    writes.append((m.phone, (event,)))
    active = seconds(active_from) <= t
    credited = sum(w["points"] for w in items) if active else 0
    repay = _repay(m, credited)
    view = {"phone": m.phone, "region": req["region"], "method": req["method"], "joined_at": at,
            "active_from": event["active_from"], "welcome": items, "balance": credited - repay,
            "status": "active" if active else "pending", "customer_since": since.isoformat(),
            "debt_repaid": repay, "debt": m.debt - repay}
    if referrer:
        view["referrer"] = referrer
    return Decision(tuple(writes), view)


def leave(cat: Catalog, m: Member, now) -> Decision | Refusal:
    t = _t(now)
    bad = in_order(m, t)
    if bad:
        return bad
    st = status(m, t)
    if st == "none":
        return not_member(m.phone)
    if st == "left":
        return already_left(m.phone)
    at = m.cal.iso(t)
    events = []
    for g in m.gifts_in.values():
        if g["status"] == "pending":
            events.append({"type": "gift_reject", "at": at, "gift_id": g["gift_id"], "from": g["from"],
                           "reason": "left"})
    forfeited = m.available()
    held = m.held_out()
    events.append({"type": "leave", "at": at, "points": forfeited, "held_out": held})
    view = {"phone": m.phone, "status": "left", "forfeited": forfeited + held, "balance": 0, "left_at": at}
    return Decision(((m.phone, tuple(events)),), view)


# ---------------------------------------------------------------- earn


def earn_view(m: Member, amount: str, category: str, points: int, coefficient: str, rpp: int, bonuses, ref,
              duplicate: bool, balance_now: int, repaid: int, debt: int) -> dict:
    return {"phone": m.phone, "amount": amount, "category": category, "points": points,
            "coefficient": coefficient, "rub_per_point": rpp, "bonuses": list(bonuses), "duplicate": duplicate,
            "balance": balance_now, "ref": ref, "debt_repaid": repaid, "debt": debt}


def earn(cat: Catalog, m: Member, now, amount: Decimal, category: str, ref=None, dry_run=False,
         explain=True, spent_at=None) -> Decision | Refusal:
    """A spending booked at `now` (RULES.md §3). `spent_at`: a late spending's own moment, earlier
    than the booking: its rate, tenure coefficient and card tier are those in force then; its lot
    expires counting from the booking."""
    if category not in cat.categories and category not in cat.ineligible:
        return Refusal(2, "unknown-category",
                       f"unknown category '{category}' (earning: {', '.join(cat.categories)})")
    if m.join is None:
        return not_member(m.phone)
    if ref is not None and ref in m.earns:
        rec = m.earns[ref]
        view = earn_view(m, money(rub(rec[E_AMOUNT])), rec[E_CAT], rec[E_POINTS], rec[E_COEF], rec[E_RPP],
                         rec[E_BONUSES], ref, True, m.available(), 0, m.debt)
        return Decision((), view)
    if category in cat.ineligible:
        return Refusal(1, "not-eligible", f"{category} does not earn points: {cat.ineligible[category]}",
                       ({"rule": "ineligible", "detail": f"{category} is listed under earning.ineligible",
                         "category": category},))
    t = _t(now)
    bad = in_order(m, t)
    if bad:  # a partner's late file: booked now, with the spending's own moment
        return bad._replace(message=bad.message + "; or book a late spending now with its own moment as "
                            "--spent-at (a batch's spent_at column)")
    bad = must_be_active(m, t, "earning")
    if bad:
        return bad
    cal = m.cal
    today = cal.day(t)
    ym = cal.ym(today)
    spent = None
    if spent_at is not None:
        spent = _t(spent_at)
        bad = late_spending(cat, m, t, spent)
        if bad:
            return bad
    on = today if spent is None else cal.day(spent)  # the day whose rates apply
    c = cat.categories[category]
    last_month = rub(m.month_spend.get((category, cal.ym(on) - 1), 0)) if c.tiered else Decimal(0)
    coef, rpp, steps = rate(cat, category, since=m.join["customer_since"], on=on, card_last_month=last_month,
                            explain=explain)
    points = points_for(amount, coef, rpp)
    if steps is not None:
        steps.append(formula_step(amount, coef, rpp, points))
    bonuses = []
    b = cat.bonuses
    if category == b.card_welcome_category and not m.card_welcome_given and b.card_welcome > 0:
        before = rub(m.month_spend.get((category, ym), 0))
        if before < b.card_welcome_threshold <= before + amount:
            bonuses.append({"reason": "card_welcome", "points": b.card_welcome})
            if steps is not None:
                steps.append({"rule": "card-welcome", "detail": f"{category} payments this month reach "
                              f"{money(before + amount)} RUB >= {money(b.card_welcome_threshold)}: +{b.card_welcome} once",
                              "points": b.card_welcome})
    expires_on = cal.date_text(cal.expiry(today))
    coef_text = cal.coef_text.get(coef)
    if coef_text is None:
        coef_text = cal.coef_text[coef] = decimal_text(coef)
    event = {"type": "earn", "at": cal.iso(t), "amount": money(amount), "category": category, "points": points,
             "coefficient": coef_text, "rub_per_point": rpp, "bonuses": bonuses, "expires_on": expires_on}
    if c.tiered:
        event["card_last_month"] = money(last_month)
    if ref is not None:
        event["ref"] = ref
    if spent is not None:
        event["spent_at"] = cal.iso(spent)
    credited = points + sum(x["points"] for x in bonuses) if bonuses else points
    repay = _repay(m, credited)
    after = m.available() + credited - repay
    view = earn_view(m, event["amount"], category, points, coef_text, rpp, bonuses, ref, False, after,
                     repay, m.debt - repay)
    view["expires_on"] = expires_on
    if spent is not None:
        view["spent_at"] = event["spent_at"]
    if dry_run:
        view["dry_run"] = True
    view["_steps"] = steps
    return Decision(() if dry_run else ((m.phone, (event,)),), view)


# ---------------------------------------------------------------- redeem


PER_WORDS = {"day": "a calendar day", "month": "a calendar month", "year": "a calendar year", "ever": "ever"}


def redeem(cat: Catalog, m: Member, now, code: str, channel: str = "web", price_rub=None, points=None,
           channel_given: bool = True) -> Decision | Refusal:
    reward = cat.rewards.get(code)
    if reward is None:
        return Refusal(2, "unknown-reward", f"unknown reward '{code}'; see `bonuscli catalog` for the codes")
    if channel not in cat.channels:
        return Refusal(2, "unknown-channel", f"unknown channel '{channel}' (channels: {', '.join(cat.channels)})")
    t = _t(now)
    bad = in_order(m, t) or must_be_active(m, t, "ordering rewards")
    if bad:
        return bad
    if channel not in reward.channels:
        allowed = ", ".join(reward.channels)
        if channel_given or not reward.channels:
            message, asked = f"{code} cannot be ordered via {channel}; it can be ordered via {allowed}", channel
        else:  # a default the user never typed: name it, and the option that chooses another
            add = (f"--via {reward.channels[0]}" if len(reward.channels) == 1
                   else f"--via CHANNEL, one of {allowed}")
            message = f"{code} cannot be ordered via {channel} (the default); add {add}"
            asked = f"{channel} (the default)"
        return Refusal(1, "channel-not-allowed", message,
                       ({"rule": "channels", "detail": f"{code} allows {allowed}; asked via {asked}",
                         "channels": list(reward.channels), "channel": channel},))
    sd = cat.store_discount
    rc = cat.reward_categories.get(reward.category)
    scoped = [(lim, code, 1) for lim in reward.limits] + [(lim, f"category {reward.category}", 2) for lim in (rc.limits if rc else ())]
    for lim, scope, field in scoped:
        match = code if field == 1 else reward.category
        count = sum(1 for o in m.orders if o[field] == match and same_period(m.cal, o[0], t, lim.per))
        if count >= lim.max:
            return Refusal(1, "limit-reached",
                           f"limit reached: {scope} may be ordered {lim.max} time{'s' if lim.max != 1 else ''} "
                           f"{PER_WORDS[lim.per] if lim.per == 'ever' else 'per ' + PER_WORDS[lim.per][2:]}",
                           ({"rule": "limit", "detail": f"{scope}: {count} ordered {PER_WORDS[lim.per] if lim.per == 'ever' else 'this ' + lim.per}, "
                             f"at most {lim.max}", "per": lim.per, "max": lim.max, "count": count},))
    have = m.available()
    at = m.cal.iso(t)
    event = {"type": "redeem", "at": at, "code": code, "name": reward.name, "category": reward.category,
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
                return Refusal(2, "bad-points", "--points must be at least 1")
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
    until = m.cal.iso(t + reward.validity_days * 86400)
    event.update(points=price, active_until=until)
    view.update(points_spent=price, balance=have - price, active_until=until)
    if reward.issues_code:
        event["voucher"] = view["voucher"] = voucher_code(f"{m.phone}/{m.count}/{at}/{code}")
    return Decision(((m.phone, (event,)),), view)


# ---------------------------------------------------------------- gifts


def gift(cat: Catalog, sender: Member, recipient: Member, now, points: int) -> Decision | Refusal:
    gift_rules = cat.gifts
    t = _t(now)
    bad = in_order(sender, t) or must_be_active(sender, t, "gifting")
    if bad:
        return bad
    if sender.phone == recipient.phone:
        return Refusal(1, "gift-to-self", "a member cannot gift points to themselves")
    rst = status(recipient, t)
    if rst != "active":
        why = {"none": "is not a member", "left": "is not a member", "pending": "is not active yet",
               "closed": "cannot receive gifts: the program closed"}[rst]
        return Refusal(1, "recipient-not-active", f"{recipient.phone} {why}; gifts go to active members only")
    bad = in_order(recipient, t)
    if bad:
        return bad
    if gift_rules.same_region and sender.join["region"] != recipient.join["region"]:
        return Refusal(1, "wrong-region", f"gifts stay within a region: {sender.phone} is in {sender.join['region']}, "
                       f"{recipient.phone} in {recipient.join['region']}")
    if points < gift_rules.min_points:
        return Refusal(1, "too-few-points", f"a gift is at least {gift_rules.min_points} point{'s' if gift_rules.min_points != 1 else ''}")
    made = [x for x in sender.gifts_out.values() if x["status"] != "cancelled"]
    cal = sender.cal
    today = cal.day(t)
    if sum(1 for x in made if cal.day(x["offered_at"]) == today) >= gift_rules.per_day:
        return Refusal(1, "limit-reached", f"limit reached: at most {gift_rules.per_day} gift{'s' if gift_rules.per_day != 1 else ''} a calendar day",
                       ({"rule": "gifts.per_day", "detail": f"offers made today: {gift_rules.per_day} or more, at most {gift_rules.per_day}",
                         "max": gift_rules.per_day},))
    month = sum(x["points"] for x in made if same_period(cal, x["offered_at"], t, "month"))
    if month + points > gift_rules.per_month_points:
        return Refusal(1, "limit-reached", f"limit reached: at most {gift_rules.per_month_points} points a calendar month in gifts; "
                       f"{month} offered this month, {max(gift_rules.per_month_points - month, 0)} left",
                       ({"rule": "gifts.per_month_points", "detail": f"{month} offered this month + {points} > "
                         f"{gift_rules.per_month_points}", "offered": month, "points": points, "max": gift_rules.per_month_points},))
    have = sender.available()
    if have < points:
        return Refusal(1, "insufficient-points", f"{sender.phone} has {have} points; {points - have} more needed")
    at = cal.iso(t)
    deadline = cal.iso(t + gift_rules.accept_days * 86400)
    salt = 0
    while True:
        gid = gift_id_for(sender.phone, recipient.phone, at, sender.count, salt)
        if gid not in sender.gifts_out and gid not in recipient.gifts_in:
            break
        salt += 1
    taken, left = [], points
    for lot in sender.live_lots():
        if left <= 0:
            break
        n = min(lot[PTS], left)
        taken.append({"expires_on": date_of(lot[EXP]), "points": n})
        left -= n
    out = {"type": "gift_out", "at": at, "gift_id": gid, "to": recipient.phone, "points": points,
           "deadline": deadline, "lots": taken}
    inn = {"type": "gift_in", "at": at, "gift_id": gid, "from": sender.phone, "points": points,
           "offered_at": at, "deadline": deadline, "lots": taken}
    view = {"gift_id": gid, "from": sender.phone, "to": recipient.phone, "points": points, "offered_at": at,
            "deadline": deadline, "balance": have - points}
    return Decision(((sender.phone, (out,)), (recipient.phone, (inn,))), view)


GIFT_ENDED = {"returned": "was returned to its sender (not accepted within the deadline)",
              "forfeited": "was forfeited (its sender left the program)",
              "expired": "can no longer be accepted: every point of it expired while it was held"}


def accept(cat: Catalog, recipient: Member, sender: Member | None, now, gift_id: str, reject=False) -> Decision | Refusal:
    if recipient.join is None:
        return not_member(recipient.phone)
    gin = recipient.gifts_in.get(gift_id)
    if gin is None:
        return Refusal(1, "gift-not-found", f"no gift {gift_id} was offered to {recipient.phone}")
    t = _t(now)
    bad = in_order(recipient, t) or (in_order(sender, t) if sender is not None else None)
    if bad:
        return bad
    st = gin["status"]
    if st == "expired":
        return Refusal(1, "gift-expired", f"gift {gift_id} {GIFT_ENDED['expired']}")
    if st != "pending":
        return Refusal(1, "gift-not-pending", f"gift {gift_id} {GIFT_ENDED.get(st, f'was already {st}')}")
    if t >= gin["deadline"]:
        return Refusal(1, "gift-not-pending",
                       f"gift {gift_id} can no longer be accepted: the deadline was {recipient.cal.iso(gin['deadline'])}")
    if not reject:
        bad = must_be_active(recipient, t, "accepting gifts")
        if bad:
            return bad
    today = recipient.cal.day(t)
    valid = [[exp, n] for exp, n in gin["lots"] if exp > today]
    got = sum(n for _, n in valid)
    lost = gin["points"] - got if gin["lots"] else 0
    if not reject and gin["lots"] and not valid:
        return Refusal(1, "gift-expired", f"gift {gift_id} {GIFT_ENDED['expired']}")
    at = recipient.cal.iso(t)
    outcome = "rejected" if reject else "accepted"
    if reject:
        mine = {"type": "gift_reject", "at": at, "gift_id": gift_id, "from": gin["from"], "reason": "rejected"}
        repay, bal, points = 0, recipient.available(), gin["points"]
    else:
        mine = {"type": "gift_accept", "at": at, "gift_id": gift_id, "from": gin["from"],
                "lots": [{"expires_on": date_of(exp), "points": n} for exp, n in valid]}
        repay = _repay(recipient, got)
        bal, points = recipient.available() + got - repay, got
    settle = {"type": "gift_settle", "at": at, "gift_id": gift_id, "outcome": outcome, "decided_at": at}
    writes = [(recipient.phone, (mine,))]
    if sender is not None:
        writes.append((sender.phone, (settle,)))
    view = {"gift_id": gift_id, "status": outcome, "points": points, "balance": bal, "from": gin["from"],
            "to": recipient.phone, "expired": lost}
    if not reject:
        view.update(debt_repaid=repay, debt=recipient.debt - repay)
    return Decision(tuple(writes), view)


def seals(cat: Catalog, m: Member, now) -> list:
    """Events that record, in this member's own ledger, outcomes now final (see docs/ledger.md)."""
    if not (m.gifts_out or m.referrals):  # the only outcomes a seal records
        return []
    at = m.cal.iso(_t(now))
    out = []
    for g in m.gifts_out.values():
        if g["gift_id"] in m.sealed:
            continue
        if g["outcome"] in ("cancelled", "accepted", "rejected", "returned", "forfeited", "expired"):
            out.append({"type": "gift_settle", "at": at, "gift_id": g["gift_id"], "outcome": g["outcome"],
                        "decided_at": m.cal.iso(g["when"])})
    for rec in m.referrals.values():
        final = rec["status"] == "void" or (rec["credit_at"] is not None and rec["credit_at"] <= m.now)
        if final and rec["referral_id"] not in m.sealed:
            ev = {"type": "referral_settle", "at": at, "referral_id": rec["referral_id"],
                  "outcome": "void" if rec["status"] == "void" else "confirmed"}
            if rec["credit_at"] is not None:
                ev["credit_at"] = m.cal.iso(rec["credit_at"])
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
    t = _t(now)
    bad = in_order(m, t)
    if bad:
        return bad
    rec = m.earns.get(ref)
    if rec is None:
        return Refusal(1, "unknown-ref", f"{m.phone} has no earn with reference {ref!r}",
                       ({"rule": "ref", "detail": f"no earn of {m.phone} carries the reference {ref!r}; "
                         f"known references: {len(m.earns)}", "ref": ref},))
    total, done = rub(rec[E_AMOUNT]), rub(rec[E_REF_AMOUNT])
    remaining = total - done
    left_step = {"rule": "left-to-refund", "detail": f"{ref}: {money(total)} RUB spent, "
                 f"{money(done)} refunded, {money(remaining)} left",
                 "amount": money(total), "refunded": money(done), "left": money(remaining)}
    if remaining <= 0:
        return Refusal(1, "already-refunded", f"the spending {ref} ({money(total)} RUB) is already refunded in full",
                       (left_step,))
    if amount is None:
        amount = remaining
    if amount > remaining:
        return Refusal(1, "refund-too-large", f"only {money(remaining)} RUB of {ref} ({money(total)} RUB) is left "
                       f"to refund; {money(amount)} asked",
                       (left_step, {"rule": "asked", "detail": f"{money(amount)} RUB asked", "asked": money(amount)}))
    p = rec[E_POINTS]
    if done + amount == total:
        points = p - rec[E_REF_POINTS]
        rule = f"the last part: whatever is left of {p} points"
    else:
        points = int((Decimal(p) * amount) // total)
        rule = f"floor({p} x {money(amount)} / {money(total)})"
    have = m.available()
    taken = min(points, have)
    short = points - taken
    debt_added = short if cat.allow_debt else 0
    event = {"type": "refund", "at": m.cal.iso(t), "earn_ref": ref, "amount": money(amount), "points": points,
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


def adjust(cat: Catalog, m: Member, now, points: int, reason: str, ref=None, expires_on=None,
           region=None) -> Decision | Refusal:
    """An operator's credit (points > 0) or debit (points < 0), always with a reason. With a `region`,
    a member who does not exist yet (or left) is joined first: an opening-balance import (`adjust
    --from` with a region column), no welcome points."""
    t = _t(now)
    if region and status(m, t) in ("none", "left") and not (ref is not None and ref in m.adjusts):
        return _opening(cat, m, t, points, reason, ref, expires_on, region)
    if m.join is None or status(m, t) == "left":
        return not_member(m.phone)
    if ref is not None and ref in m.adjusts:
        view = dict(m.adjusts[ref], duplicate=True, balance=m.available(), debt_repaid=0, debt=m.debt)
        return Decision((), view)
    bad = in_order(m, t)
    if bad:
        return bad
    if points == 0:
        return Refusal(2, "bad-points", "an adjustment must credit or debit at least 1 point")
    today = m.cal.day(t)
    if expires_on is not None and points < 0:
        return Refusal(2, "usage", "--expires-on goes with a credit (positive POINTS) only")
    if expires_on is not None and expires_on.toordinal() <= today:
        return Refusal(2, "bad-date", f"--expires-on {expires_on} is not after today ({date_of(today)})")
    have = m.available()
    if points < 0 and have < -points:
        return Refusal(1, "insufficient-points", f"{m.phone} has {have} points; cannot debit {-points} "
                       f"({-points - have} more than available)",
                       ({"rule": "available", "detail": f"{m.phone} has {have} points available", "available": have},
                        {"rule": "debit", "detail": f"a debit never goes below zero: {-points} asked",
                         "asked": -points, "missing": -points - have}))
    event = {"type": "adjust", "at": m.cal.iso(t), "points": points, "reason": reason}
    if ref is not None:
        event["ref"] = ref
    if points > 0 and expires_on is not None:
        event["expires_on"] = expires_on.isoformat()
    repay = _repay(m, points)
    view = {"phone": m.phone, "points": points, "reason": reason, "ref": ref, "duplicate": False,
            "balance": have + points - repay if points > 0 else have + points,
            "expires_on": (expires_on.isoformat() if expires_on else date_of(m.cal.expiry(today))) if points > 0 else None,
            "debt_repaid": repay, "debt": m.debt - repay}
    return Decision(((m.phone, (event,)),), view)


def _opening(cat: Catalog, m: Member, t: int, points, reason, ref, expires_on, region) -> Decision | Refusal:
    """The join of an opening-balance import, then the adjustment decided on the member it makes."""
    import copy

    from bonuscli.model import SCHEMA_VERSION
    from bonuscli.rules.replay import extend

    joined = join(cat, m, t, {"region": region, "method": "store", "services": ["mobile"]}, welcome=False)
    if isinstance(joined, Refusal):
        return joined
    m2 = copy.deepcopy(m, {id(m.cat): m.cat, id(m.cal): m.cal})
    for i, e in enumerate(joined.writes[0][1]):
        extend(m2, dict(e, v=SCHEMA_VERSION, id=f"{m.phone}.preview{i}"))
    result = adjust(cat, m2, t, points, reason, ref, expires_on)
    if isinstance(result, Refusal):
        return result
    return Decision(joined.writes + result.writes, result.view)
