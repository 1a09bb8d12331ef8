"""Whole-directory jobs (`report`, and the readers of `check --ledgers`): read every
ledger, replay it with the rules, reduce the per-member figures exactly.

Owns: mapping a per-member function over the ledgers of a data directory,
serially or over a process pool (`--jobs`). Imports ledger, rules, model.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor

from bonuscli import ledger as ledger_mod
from bonuscli import paths, rules
from bonuscli.model import FilesError, iso

SERIAL_BELOW = 400  # ledgers; a process pool costs more than it saves below this


def _member_summary(cat, root, phone, now):
    """Everything `report` needs about one member, as plain data (picklable)."""
    try:
        led = ledger_mod.read(paths.ledger_path(root, phone))
    except FilesError as e:
        return {"phone": phone, "error": e.message}
    peers = {}
    for p in rules.peers_needed(led.events, now):
        try:
            peers[p] = ledger_mod.read(paths.ledger_path(root, p)).events
        except FilesError:
            peers[p] = ()
    m = rules.replay(cat, phone, led.events, now, peers)
    if m.join is None:
        return None
    rows = []
    for r in m.register:
        local_day = rules.local_date(cat, rules.from_iso(r["at"])).isoformat()
        rows.append((local_day, r["type"], r["points"], r.get("earned", 0), r.get("expired", 0), r.get("gifted", 0),
                     r.get("refunded", 0), r.get("forfeited", 0)))
    lots = [(l.expires_on.isoformat(), l.points) for l in m.lots]
    return {"phone": phone, "region": m.join["region"], "status": rules.status(m, now), "available": m.available(),
            "debt": m.debt, "rows": rows, "lots": lots}


_WORKER = {}


def _init(cat, root, now, func):
    _WORKER.update(cat=cat, root=root, now=now, func=func)


def _work(phones):
    w = _WORKER
    return [w["func"](w["cat"], w["root"], p, w["now"]) for p in phones]


def map_members(env, jobs=None, func=None):
    """`func(cat, root, phone, now)` for every ledger of the data directory, in phone order.

    `func` must be a module-level function returning plain data; by default the report summary.
    """
    func = func or _member_summary
    phones = env.store.phones()
    cat, root, now = env.catalog, env.data_dir, env.now
    jobs = jobs or os.cpu_count() or 1
    if jobs <= 1 or len(phones) < SERIAL_BELOW:
        return [func(cat, root, p, now) for p in phones]
    size = max(50, len(phones) // (jobs * 8))
    chunks = [phones[i:i + size] for i in range(0, len(phones), size)]
    out = []
    with ProcessPoolExecutor(max_workers=jobs, initializer=_init, initargs=(cat, root, now, func)) as pool:
        for part in pool.map(_work, chunks):
            out.extend(part)
    return out


def _month_keys(today, n=12):
    keys = []
    for i in range(n):
        y, m = divmod(today.month - 1 + i, 12)
        keys.append(f"{today.year + y:04d}-{m + 1:02d}")
    return keys


def report(env, region=None, from_date=None, until_date=None, jobs=None) -> dict:
    cat, now = env.catalog, env.now
    today = rules.local_date(cat, now)
    members = {"active": 0, "pending": 0, "left": 0, "closed": 0, "total": 0}
    regions, outstanding, debt = {}, 0, 0
    expiring = {k: 0 for k in _month_keys(today)}
    months = {}
    problems = []
    for s in map_members(env, jobs):
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
        debt += s["debt"]
        for exp, pts in s["lots"]:
            if exp[:7] in expiring:
                expiring[exp[:7]] += pts
        for day, t, pts, earned, expired, gifted, refunded, forfeited in s["rows"]:
            if from_date and day < from_date.isoformat():
                continue
            if until_date and day > until_date.isoformat():
                continue
            f = months.setdefault(day[:7], {"month": day[:7], "earned": 0, "redeemed": 0, "expired": 0, "gifted": 0,
                                            "refunded": 0, "forfeited": 0})
            f["earned"] += earned
            f["expired"] += expired
            f["gifted"] += gifted
            f["refunded"] += refunded
            f["forfeited"] += forfeited
            if t == "redeem":
                f["redeemed"] += -pts
            elif t == "expire":
                f["expired"] += -pts
            elif t == "leave":
                f["forfeited"] += -pts
    if problems:
        raise FilesError(f"{problems[0]}" + (f" (and {len(problems) - 1} more ledgers)" if len(problems) > 1 else ""),
                         "ledger-corrupt")
    return {"as_of": iso(now), "region": region, "members": members, "regions": dict(sorted(regions.items())),
            "outstanding": outstanding, "debt": debt,
            "expiring": [{"month": k, "points": v} for k, v in expiring.items()],
            "months": [months[k] for k in sorted(months)]}
