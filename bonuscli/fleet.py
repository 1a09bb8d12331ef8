"""Whole-directory jobs: map a per-member function of the service over every ledger
(serially or over a process pool, `--jobs`) and reduce exactly; `report`.

Owns: `map_members`, the report's reduction and its human rendering text.
Returns values; never prints. Imports model, rules, service.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor

from bonuscli import rules
from bonuscli.model import FilesError, iso

SERIAL_BELOW = 400  # ledgers; a process pool costs more than it saves below this


def member_summary(svc, phone, now):
    """Everything `report` needs about one member, as plain data (None for no membership)."""
    try:
        return svc.summary(phone, now)
    except FilesError as e:
        return {"phone": phone, "error": e.message}


_WORKER = {}


def _init(opener, now, func, parent):
    from bonuscli.service import orphan_guard

    orphan_guard(parent)
    _WORKER.update(svc=opener.open(warn=lambda msg: None), now=now, func=func)


def _work(phones):
    w = _WORKER
    return [w["func"](w["svc"], p, w["now"]) for p in phones]


def map_members(svc, now, func=None, jobs=None, phones=None) -> list:
    """`func(svc, phone, now)` for every ledger of the data directory (or `phones`), in phone order.

    `func` must be a module-level function returning plain data; by default the report summary."""
    func = func or member_summary
    phones = svc.store.phones() if phones is None else list(phones)
    jobs = jobs or os.cpu_count() or 1
    if jobs <= 1 or len(phones) < SERIAL_BELOW or getattr(svc, "opener", None) is None:
        return [func(svc, p, now) for p in phones]
    size = max(50, len(phones) // (jobs * 8))
    chunks = [phones[i:i + size] for i in range(0, len(phones), size)]
    out = []
    with ProcessPoolExecutor(max_workers=jobs, initializer=_init,
                             initargs=(svc.opener, now, func, os.getpid())) as pool:
        for part in pool.map(_work, chunks):
            out.extend(part)
    return out


def _month_keys(first: str, last: str) -> list:
    y, m = int(first[:4]), int(first[5:7])
    keys = []
    while True:
        key = f"{y:04d}-{m:02d}"
        keys.append(key)
        if key >= last:
            return keys
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)


MONTH_FIELDS = ("earned", "adjusted", "redeemed", "expired", "gifted", "refunded", "forfeited")


def reduce(summaries, now_month: str, region=None, from_date=None, until_date=None) -> dict:
    """The report's figures from per-member summaries (see `report`)."""
    members = {"active": 0, "pending": 0, "left": 0, "closed": 0, "total": 0}
    regions, outstanding, held, debt = {}, 0, 0, 0
    expiring: dict = {}
    months: dict = {}
    problems = []
    lo = from_date.isoformat() if from_date else None
    hi = until_date.isoformat() if until_date else None
    for s in summaries:
        if s is None:
            continue
        if "error" in s:
            problems.append(s["error"])
            continue
        if region and s["region"] != region:
            continue
        members[s["status"]] = members.get(s["status"], 0) + 1
        members["total"] += 1
        regions[s["region"]] = regions.get(s["region"], 0) + 1
        outstanding += s["available"]
        held += s["held"]
        debt += s["debt"]
        for exp, pts in s["lots"]:
            expiring[exp[:7]] = expiring.get(exp[:7], 0) + pts
        for day, _t, _pts, earned, expired, gifted, refunded, forfeited, adjusted, redeemed in s["rows"]:
            if (lo and day < lo) or (hi and day > hi):
                continue
            f = months.get(day[:7])
            if f is None:
                f = months[day[:7]] = dict({"month": day[:7]}, **dict.fromkeys(MONTH_FIELDS, 0))
            f["earned"] += earned
            f["adjusted"] += adjusted
            f["redeemed"] += redeemed
            f["expired"] += expired
            f["gifted"] += gifted
            f["refunded"] += refunded
            f["forfeited"] += forfeited
    if problems:
        raise FilesError(f"{problems[0]}" + (f" (and {len(problems) - 1} more ledgers)" if len(problems) > 1 else ""),
                         "ledger-corrupt")
    last = max(expiring, default=now_month)
    keys = _month_keys(now_month, max(last, now_month))
    while len(keys) < 12:
        y, m = int(keys[-1][:4]), int(keys[-1][5:7])
        keys.append(f"{y + (m == 12):04d}-{m % 12 + 1:02d}")
    return {"members": members, "regions": dict(sorted(regions.items())), "outstanding": outstanding, "held": held,
            "debt": debt, "expiring": [{"month": k, "points": expiring.get(k, 0)} for k in keys],
            "months": [months[k] for k in sorted(months)]}


def report(svc, now, region=None, from_date=None, until_date=None, jobs=None, summaries=None) -> dict:
    """Program-wide figures as of `now` (CLI.md `report`): members by status, outstanding, held, debt,
    expiring by month through the last month in which an available point expires, and the months."""
    cal = rules.calendar_of(svc.catalog)
    t = rules.seconds(now)
    now_month = cal.iso(t)[:7]
    if summaries is None:
        summaries = map_members(svc, now, member_summary, jobs)
    doc = reduce(summaries, now_month, region, from_date, until_date)
    return dict({"as_of": cal.iso(t), "region": region}, **doc)


def reconciliation(doc: dict) -> dict:
    """earned + adjusted - redeemed - expired - refunded - forfeited, over the months shown, against
    outstanding + held - debt (equal over all months)."""
    total = {k: sum(m[k] for m in doc["months"]) for k in MONTH_FIELDS}
    flow = (total["earned"] + total["adjusted"] - total["redeemed"] - total["expired"] - total["refunded"]
            - total["forfeited"])
    return dict(total, flow=flow, stock=doc["outstanding"] + doc["held"] - doc["debt"])


def human(v, bars=None) -> str:
    from bonuscli import render

    text = render.pairs([(k, str(n)) for k, n in v["members"].items()])
    text += (f"\n\noutstanding  {v['outstanding']}\nheld         {v['held']}\ndebt         {v['debt']}")
    r = reconciliation(v)
    text += (f"\n\nearned {r['earned']} + adjusted {r['adjusted']} - redeemed {r['redeemed']} - expired {r['expired']}"
             f" - refunded {r['refunded']} - forfeited {r['forfeited']} = {r['flow']}"
             f"\noutstanding {v['outstanding']} + held {v['held']} - debt {v['debt']} = {r['stock']}")
    text += "\n\n" + render.table([[m["month"]] + [m[k] for k in MONTH_FIELDS] for m in v["months"]],
                                  ["month"] + list(MONTH_FIELDS))
    text += "\n\nexpiring:\n" + render.bars([(e["month"], e["points"]) for e in v["expiring"]])
    if v["months"]:
        text += "\n\nearned by month:\n" + render.bars([(m["month"], m["earned"]) for m in v["months"]])
    return text


__all__ = ["map_members", "member_summary", "report", "reduce", "reconciliation", "human", "iso"]
