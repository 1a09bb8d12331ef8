"""`export`: the program's points as a plain-text double-entry journal (hledger or beancount).

Owns: turning each member's history rows (the register a replay builds) into balanced
transactions, the account scheme, and the two journal syntaxes. Returns text; never
prints. Imports model, requests, rules, fleet (docs/export.md).

Accounts (hledger spelling; beancount capitalises each component):

- `liabilities:points:available:PHONE`  the member's available points (balance = -available)
- `liabilities:points:held:PHONE`       points of the member's gifts offered, not yet settled
                                        (balance = -held_out)
- `assets:points:debt:PHONE`            points the member owes after a refund (balance = debt)
- `expenses:points:earned`              issued: earns, welcome, card welcome and referral bonuses
- `expenses:points:adjusted`            operators' credits minus debits
- `income:points:redeemed` / `expired` / `refunded` / `forfeited`   where points go
- `liabilities:points:clearing`         gifts between members: the sender's side (held points
                                        leaving) and the recipient's side (points arriving) are
                                        two transactions, one per ledger; zero once both are in

Over a whole data directory every account adds up to zero, which is `report`'s reconciliation:
earned + adjusted - redeemed - expired - refunded - forfeited = outstanding + held - debt.
"""

from __future__ import annotations

from bonuscli import fleet, rules
from bonuscli import requests as rq
from bonuscli.model import BadInput, FilesError

FORMATS = ("hledger", "beancount")
COMMODITY = "PTS"

EARNED = ("expenses", "points", "earned")
ADJUSTED = ("expenses", "points", "adjusted")
REDEEMED = ("income", "points", "redeemed")
EXPIRED = ("income", "points", "expired")
REFUNDED = ("income", "points", "refunded")
FORFEITED = ("income", "points", "forfeited")
CLEARING = ("liabilities", "points", "clearing")
COUNTERS = (EARNED, ADJUSTED, REDEEMED, EXPIRED, REFUNDED, FORFEITED, CLEARING)


def available_account(phone: str) -> tuple:
    return ("liabilities", "points", "available", phone)


def held_account(phone: str) -> tuple:
    return ("liabilities", "points", "held", phone)


def debt_account(phone: str) -> tuple:
    return ("assets", "points", "debt", phone)


def account_name(account: tuple, fmt: str) -> str:
    """`liabilities:points:available:9161234567` (hledger) or `Liabilities:Points:Available:9161234567`."""
    if fmt == "beancount":
        return ":".join(part[:1].upper() + part[1:] for part in account)
    return ":".join(account)


# ---------------------------------------------------------------- rows -> transactions


def _postings(phone: str, row: dict, carry: int) -> list:
    """The postings of one history row, as [(account, points)], debits positive. `carry`: points
    of this credit that arrived already expired (their `expire` rows come just before it)."""
    avail, held, debt = available_account(phone), held_account(phone), debt_account(phone)
    t = row["type"]
    delta = row["points"]  # change of available points
    out = []

    def add(account, n):
        if n:
            out.append((account, n))

    if t == "expire":
        n = row.get("expired", 0)
        if row.get("gift_id") is not None:  # points held in a pending gift reached their date
            add(held, n)
        else:  # a lot of available points reached its date
            add(avail, -delta)
        add(EXPIRED, -n)
        return out
    repaid = row.get("debt_repaid", 0)
    add(avail, -delta)
    add(debt, -repaid)
    if carry:
        add(EXPIRED, -carry)
    if "earned" in row:
        add(EARNED, row["earned"])
    if "adjusted" in row:
        add(ADJUSTED, row["adjusted"])
    if "redeemed" in row:
        add(REDEEMED, -row["redeemed"])
    if "refunded" in row:  # what available points could not cover became debt
        add(REFUNDED, -row["refunded"])
        add(debt, row["refunded"] + delta)
    if t == "gift_out":
        add(held, delta)
    elif t == "gift_return":  # held points come back: they repay debt first, like any credit
        add(held, delta + repaid + carry)
    elif t == "gift_accepted":  # the sender's side: held points leave for the recipient
        add(held, row.get("gifted", 0))
        add(CLEARING, -row.get("gifted", 0))
    elif t == "gift_accept":  # the recipient's side
        add(CLEARING, delta + repaid + carry)
    elif t == "gift_forfeited":
        add(held, row.get("forfeited", 0))
        add(FORFEITED, -row.get("forfeited", 0))
    elif t == "leave":
        add(FORFEITED, -row.get("forfeited", 0))
    merged: dict = {}
    for account, n in out:
        merged[account] = merged.get(account, 0) + n
    return [(a, n) for a, n in merged.items() if n]


def member_entries(svc, phone, now):
    """One member's transactions as plain data (a `fleet.map_members` function): None for a ledger
    with no membership, `{"phone", "error"}` for an unreadable one."""
    try:
        m = svc.member(phone, now, register=True)
    except FilesError as e:
        return {"phone": phone, "error": e.message}
    if m.join is None:
        return None
    txns = []
    carry, carried = 0, []
    for i, row in enumerate(m.register):
        if row["type"] == "expire" and row["points"] == 0 and row.get("gift_id") is None:
            carry += row.get("expired", 0)  # arrived already expired: part of the credit that follows
            carried.append(row["detail"])
            continue
        postings = _postings(phone, row, carry)
        detail = row["detail"] + "".join(f" ({d})" for d in carried)
        carry, carried = 0, []
        if not postings:
            continue
        at = rules.instant(row["at"])
        txns.append({"key": (row["at"][:10], at, phone, i), "date": row["at"][:10], "at": row["at"],
                     "phone": phone, "id": row["id"], "type": row["type"], "detail": detail,
                     "postings": postings, "balance": row["balance"]})
    return {"phone": phone, "region": m.join["region"], "txns": txns, "available": m.available(),
            "held": m.held_out(), "debt": m.debt}


# ---------------------------------------------------------------- the journal


def journal(svc, now, fmt: str, region=None, jobs=None) -> str:
    """The program's points as of `now` as an hledger or beancount journal (docs/export.md):
    one transaction per history row that moves points, every member of `region` (or all)."""
    if fmt not in FORMATS:
        raise BadInput(f"unknown export format {fmt!r} (use {' or '.join(FORMATS)})", "usage")
    svc.require_data()
    if region is not None:
        region = rq.region(svc.catalog, region)
    results = fleet.map_members(svc, now, member_entries, jobs)
    problems = [r["error"] for r in results if r is not None and "error" in r]
    if problems:
        raise FilesError(problems[0] + (f" (and {len(problems) - 1} more ledgers)" if len(problems) > 1 else ""),
                         "ledger-corrupt")
    members = [r for r in results if r is not None and (region is None or r["region"] == region)]
    cal = rules.calendar_of(svc.catalog)
    as_of = cal.iso(rules.seconds(now))
    txns = sorted((t for r in members for t in r["txns"]), key=lambda t: t["key"])
    render = _beancount if fmt == "beancount" else _hledger
    return render(members, txns, as_of, region)


def _first_use(txns) -> dict:
    first: dict = {}
    for t in txns:
        for account, _n in t["postings"]:
            first.setdefault(account, t["date"])
    return first


def _title(as_of: str, region) -> str:
    return f"bonuscli points as of {as_of}" + (f", region {region}" if region else "")


def _clean(text: str) -> str:
    return " ".join(str(text).split())


def _width(accounts, fmt) -> int:
    return max([len(account_name(a, fmt)) for a in accounts] + [40])


def _hledger(members, txns, as_of, region) -> str:
    fmt = "hledger"
    first = _first_use(txns)
    accounts = sorted(first)
    w = _width(accounts, fmt)
    out = [f"; {_title(as_of, region)}",
           "; points are the program's liability: an available account's balance is minus the member's",
           "; available points; held = points of gifts offered, not yet settled; debt = points owed",
           "", f"commodity 1000. {COMMODITY}", ""]
    out += [f"account {account_name(a, fmt)}" for a in accounts]
    last = {}
    for k, t in enumerate(txns):
        for account, _n in t["postings"]:
            last[account] = k
    final = {}
    for r in members:
        final[held_account(r["phone"])] = -r["held"]
        final[debt_account(r["phone"])] = r["debt"]
    for k, t in enumerate(txns):
        desc = _clean(f"{t['phone']} | {t['detail']}").replace(";", ",")
        out += ["", f"{t['date']} ({t['id']}) {desc}  ; type:{t['type']}, at:{t['at']}"]
        avail = available_account(t["phone"])
        for account, n in t["postings"]:
            amount = f"{n} {COMMODITY}"
            line = f"    {account_name(account, fmt):<{w}}  {amount:>12}"
            if account == avail:
                line += f" = {-t['balance']} {COMMODITY}"
            elif account in final and last[account] == k:
                line += f" = {final[account]} {COMMODITY}"
            out.append(line)
    return "\n".join(out) + "\n"


def _quote(text: str) -> str:
    return '"' + _clean(text).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _beancount(members, txns, as_of, region) -> str:
    import datetime as dt

    fmt = "beancount"
    first = _first_use(txns)
    accounts = sorted(first)
    w = _width(accounts, fmt)
    out = [f"option \"title\" {_quote(_title(as_of, region))}", f'option "operating_currency" "{COMMODITY}"', "",
           "; points are the program's liability: an available account's balance is minus the member's",
           "; available points; held = points of gifts offered, not yet settled; debt = points owed"]
    if txns:
        out += ["", f'{txns[0]["date"]} commodity {COMMODITY}', '  name: "bonuscli loyalty points"', ""]
        opened = sorted(accounts, key=lambda a: (first[a], a))
        out += [f"{first[a]} open {account_name(a, fmt)} {COMMODITY}" for a in opened]
    for t in txns:
        out += ["", f"{t['date']} * {_quote(t['phone'])} {_quote(t['detail'])}",
                f"  id: {_quote(t['id'])}", f"  type: {_quote(t['type'])}", f"  at: {_quote(t['at'])}"]
        for account, n in t["postings"]:
            out.append(f"  {account_name(account, fmt):<{w}}  {n:>12} {COMMODITY}")
    # the closing balances, as bonuscli's own state has them, checked by bean-check
    day = (dt.date.fromisoformat(as_of[:10]) + dt.timedelta(days=1)).isoformat()
    checks = []
    for r in sorted(members, key=lambda r: r["phone"]):
        for account, value in ((available_account(r["phone"]), -r["available"]),
                               (held_account(r["phone"]), -r["held"]), (debt_account(r["phone"]), r["debt"])):
            if account in first:
                checks.append(f"{day} balance {account_name(account, fmt):<{w}}  {value:>12} {COMMODITY}")
    if CLEARING in first and region is None:
        checks.append(f"{day} balance {account_name(CLEARING, fmt):<{w}}  {0:>12} {COMMODITY}")
    if checks:
        out += ["", f"; balances as of {as_of}"] + checks
    return "\n".join(out) + "\n"


__all__ = ["journal", "member_entries", "account_name", "available_account", "held_account", "debt_account",
           "FORMATS", "COMMODITY", "COUNTERS"]
