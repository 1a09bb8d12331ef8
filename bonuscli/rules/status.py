"""What a replayed member is at a moment: status and the refusals every decision shares.

Pure. Imports model, rules.dates, rules.replay.
"""

from __future__ import annotations

from bonuscli.model import Refusal
from bonuscli.rules.dates import instant
from bonuscli.rules.member import Member


def status(m: Member, now: int) -> str:
    """none | pending | active | left | closed, as of `now` (epoch)."""
    if m.join is None:
        return "none"
    if m.left_at is not None:
        return "left"
    if m.cal.closed(now):
        return "closed"
    text = m.join["active_from"]
    active = _ACTIVE.get(text)
    if active is None:
        if len(_ACTIVE) > 4096:
            _ACTIVE.clear()
        active = _ACTIVE[text] = instant(text)
    if now < active:
        return "pending"
    return "active"


_ACTIVE: dict = {}  # active_from text -> epoch: every decision asks


def not_member(phone: str) -> Refusal:
    return Refusal(1, "not-member",
                   f"{phone} is not a member of the program; join first (bonuscli join {phone} --region CODE)")


def already_left(phone: str) -> Refusal:
    return Refusal(1, "already-left", f"{phone} already left the program; join again to take part")


def must_be_active(m: Member, now: int, what: str = "this") -> Refusal | None:
    st = status(m, now)
    if st in ("none", "left"):
        return not_member(m.phone)
    if st == "closed":
        return Refusal(1, "program-closed", f"the program closed on {m.cat.closing_date}; {what} is no longer possible")
    if st == "pending":
        return Refusal(1, "pending-activation",
                       f"{m.phone}'s membership activates at {m.join['active_from']}; {what} is possible from then on")
    return None


def in_order(m: Member, now: int) -> Refusal | None:
    if m.last_at is not None and now < m.last_at:
        return Refusal(1, "out-of-order",
                       f"the ledger of {m.phone} already has an event at {m.cal.iso(m.last_at)}; "
                       f"cannot record one earlier ({m.cal.iso(now)}); use a later --at")
    return None


def late_spending(cat, m: Member, t: int, spent: int) -> Refusal | None:
    """Why a late spending cannot be booked at `t` (RULES.md §3, Late spendings), or None."""
    cal = m.cal
    if spent > t:
        return Refusal(1, "late-spending", f"the spending's moment {cal.iso(spent)} is after its booking "
                       f"({cal.iso(t)}); --spent-at is for spendings booked late")
    active = m.join["active_from"]
    if spent < instant(active):
        return Refusal(1, "late-spending", f"the spending's moment {cal.iso(spent)} is before {m.phone}'s "
                       f"membership became active ({active})")
    if t - spent > cat.late_days * 86400:
        return Refusal(1, "late-spending", f"the spending's moment {cal.iso(spent)} is more than {cat.late_days} days "
                       f"before its booking ({cal.iso(t)}; earning.late_days)")
    return None
