"""The operator's channels (RULES.md §7): what an SMS to the short number or a
USSD request means, and the one-line replies the short number sends.

Owns: text -> (action, arguments) and view -> reply. Pure; imports model only.
"""

from __future__ import annotations

import re


from bonuscli.model import Catalog, Record

JOIN_USSD = ("*111*455*1#", "*455*1#")
BALANCE_USSD = ("*111*455*0#", "*455*0#")


class Action(Record):
    action: str  # join | balance | forecast | leave | gift | redeem | not-member | unknown
    args: dict


def sms_help(cat: Catalog) -> str:
    return ("send BAL for your balance, PROGNOS for points about to expire, DAR <phone> <points> to gift, "
            "a reward's code (e.g. minutes_30) to order it, 0 to leave")


def parse_sms(cat: Catalog, text: str, member: bool) -> Action:
    words = text.split()
    if not words:
        return Action("unknown", {})
    if not member:
        if words == ["0"] or (len(words) == 1 and words[0].upper() in ("BAL", "BONUS", "PROGNOS")):
            return Action("not-member", {})
        return Action("join", {"method": "sms"})
    head = words[0].upper()
    if words == ["0"]:
        return Action("leave", {})
    if len(words) == 1 and head in ("BAL", "BONUS"):
        return Action("balance", {})
    if len(words) == 1 and head == "PROGNOS":
        return Action("forecast", {})
    if head in ("DAR", "PRESENT"):
        if len(words) >= 3 and re.fullmatch(r"[0-9]+", words[-1]):
            return Action("gift", {"to": " ".join(words[1:-1]), "points": words[-1]})
        return Action("unknown", {"hint": f"to gift, send {head} <phone> <points>, e.g. {head} 9161234567 100"})
    if len(words) == 1:
        word = words[0].lower()
        for r in cat.rewards.values():
            if word == r.code.lower() or (r.sms and word == r.sms.lower()):
                return Action("redeem", {"code": r.code})
    return Action("unknown", {})


def parse_ussd(cat: Catalog, code: str, member: bool) -> Action:
    c = re.sub(r"\s+", "", code)
    if c in JOIN_USSD:
        return Action("join", {"method": "ussd"}) if not member else Action("already", {})
    if not member:
        return Action("not-member", {})
    if c in BALANCE_USSD:
        return Action("balance", {})
    for r in cat.rewards.values():
        if r.ussd and c == r.ussd.replace(" ", ""):
            return Action("redeem", {"code": r.code})
    return Action("unknown", {})


def reply(action: str, v: dict) -> str:
    if action == "join":
        if v["status"] == "pending":
            return f"Welcome to the program! Your membership activates at {v['active_from']}."
        return f"Welcome to the program! Balance: {v['balance']} points."
    if action == "balance":
        text = f"Balance: {v['available']} points."
        if v["status"] == "pending":
            text += f" Your membership activates at {v['active_from']}."
        if v.get("next_expiry"):
            text += f" {v['next_expiry']['points']} expire on {v['next_expiry']['date']}."
        if v.get("pending_in"):
            text += f" {len(v['pending_in'])} gift(s) wait for you."
        return text
    if action == "forecast":
        if not v["lots"]:
            return f"No points expire up to {v['until']}."
        parts = ", ".join(f"{l['points']} on {l['expires_on']}" for l in v["lots"])
        return f"Expiring: {parts} ({v['total']} in total up to {v['until']})."
    if action == "leave":
        return f"You have left the program; {v['forfeited']} points were forfeited."
    if action == "gift":
        return (f"Gift {v['gift_id']}: {v['points']} points offered to {v['to']}; "
                f"they can accept until {v['deadline']}. Balance: {v['balance']} points.")
    if action == "redeem":
        text = f"Ordered {v['code']} for {v['points_spent']} points"
        if v.get("active_until"):
            text += f", active until {v['active_until']}"
        if v.get("voucher"):
            text += f"; your code: {v['voucher']}"
        return text + f". Balance: {v['balance']} points."
    return ""
