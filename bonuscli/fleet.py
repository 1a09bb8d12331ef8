"""Whole-directory jobs: map a per-member function of the service over every ledger
(serially or over a process pool, `--jobs`) and reduce exactly; `report`.

Owns: `map_members` and the report (per member, per chunk, merged), on any engine
of `workers`; the report's human rendering text. Returns values; never prints.
Imports model, rules, workers.
"""

from __future__ import annotations

from bonuscli import rules, workers
from bonuscli.model import FilesError, iso

SERIAL_BELOW = 400  # ledgers; a process pool costs more than it saves below this


def member_summary(svc, phone, now):
    """Everything `report` needs about one member, as plain data (None for no membership)."""
    try:
        return svc.summary(phone, now)
    except FilesError as e:
        return {"phone": phone, "error": e.message}


def period_instants(cal, now_t: int, from_date=None, until_date=None) -> tuple:
    """(opening, closing): the instants (epoch seconds, as of which a balance is read, that instant
    included, as `--at` reads it) that bound the period of `--from`/`--until`. Opening: the last
    second before --from's first instant (its local 00:00), None without --from (before anything: a
    balance of 0). Closing: the last second of --until's last day, or `now` when that is earlier
    (nothing after `now` is known). Both at most `now`, so opening <= closing."""
    opening = None if from_date is None else min(cal.start(from_date.toordinal()) - 1, now_t)
    closing = now_t if until_date is None else min(cal.start(until_date.toordinal() + 1) - 1, now_t)
    return opening, closing


def position(m) -> tuple:
    """(outstanding + held - debt, gifts received - gifts given) of one member's replayed state: the
    points the program owes it, and what gifts have moved to it from other members so far."""
    if m is None:
        return 0, 0
    return m.available() + m.held_out() - m.debt, m.totals["received"] - m.totals["gifted"]


def _quiet(_message) -> None:
    pass


def report_member(svc, phone, now, opening, closing):
    """`member_summary` plus `period`: (balance at `opening`, balance at `closing`, gifts received
    minus given between them), each balance outstanding + held - debt from a replay of the member as
    of that instant (`period_instants`; the replay as of `now` serves when closing is now)."""
    try:
        m = svc.member(phone, now, register=True)
        s = rules.summary(m, now)
        if s is None:
            return None
        t = rules.seconds(now)
        warn, svc.warn = svc.warn, _quiet  # the replay as of `now` has warned of a torn line: once is enough
        try:
            a = position(svc.member(phone, opening) if opening is not None else None)
            b = position(m if closing == t else svc.member(phone, closing))
        finally:
            svc.warn = warn
    except FilesError as e:
        return {"phone": phone, "error": e.message}
    s["period"] = (a[0], b[0], b[1] - a[1])
    return s


def members_part(func, svc, now, phones) -> list:
    """[func(svc, phone, now) for phone in phones]: one chunk of `map_members`, in any engine."""
    svc = workers.service_of(svc)
    return [func(svc, p, now) for p in phones]


def engine_for(svc, jobs, n: int):
    """This machine's engine for a job over `n` ledgers: serial below SERIAL_BELOW (a process pool
    costs more than it saves) or without a way to open the service in a worker."""
    return workers.Local(jobs if n >= SERIAL_BELOW and getattr(svc, "opener", None) is not None else 1)


def map_members(svc, now, func=None, jobs=None, phones=None, engine=None) -> list:
    """`func(svc, phone, now)` for every ledger of the data directory (or `phones`), in phone order,
    on `engine` (workers.Local(jobs) by default, or a dask_engine.Cluster).

    `func` must be a module-level function returning plain data; by default the report summary."""
    func = func or member_summary
    phones = svc.store.phones() if phones is None else list(phones)
    engine = engine or engine_for(svc, jobs, len(phones))
    source = svc.opener if engine.portable else svc
    chunks = workers.chunked(phones, engine.n_workers())
    return [r for part in engine.map_chunks(members_part, chunks, func, source, now) for r in part]


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
    opening = closing = gifts = 0
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
        if "period" in s:
            opening += s["period"][0]
            closing += s["period"][1]
            gifts += s["period"][2]
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
    flows = {k: sum(f[k] for f in months.values()) for k in PERIOD_FLOWS}
    return {"members": members, "regions": dict(sorted(regions.items())), "outstanding": outstanding, "held": held,
            "debt": debt, "expiring": [{"month": k, "points": expiring.get(k, 0)} for k in keys],
            "months": [months[k] for k in sorted(months)],
            "period": dict({"opening": opening}, **flows, gifts=gifts, closing=closing)}


# the flows of the program, in the order the reconciliation adds them (gifted is no flow: it moves
# points from member to member)
PERIOD_FLOWS = ("earned", "adjusted", "redeemed", "expired", "refunded", "forfeited")


def report(svc, now, region=None, from_date=None, until_date=None, jobs=None, engine=None) -> dict:
    """Program-wide figures as of `now` (CLI.md `report`): members by status, outstanding, held, debt,
    expiring by month through the last month in which an available point expires, and the months.

    Each chunk of members is summarised and reduced where it runs (`report_part`, on `engine`), and
    the partial reports are added up here (`merge_reports`): integers only, so the same figures
    whatever the engine and the chunks."""
    phones = svc.store.phones()
    engine = engine or engine_for(svc, jobs, len(phones))
    source = svc.opener if engine.portable else svc
    parts = engine.map_chunks(report_part, workers.chunked(phones, engine.n_workers()), source, now, region,
                              from_date, until_date)
    problems = [p for _, probs in parts for p in probs]
    if problems:
        raise FilesError(f"{problems[0]}" + (f" (and {len(problems) - 1} more ledgers)" if len(problems) > 1 else ""),
                         "ledger-corrupt")
    if not parts:  # an empty directory: the figures of no members
        return _report(svc, now, region, from_date, until_date, [])
    out = parts[0][0]
    for doc, _ in parts[1:]:
        out = merge_reports(out, doc)
    out["regions"] = dict(sorted(out["regions"].items()))
    return out


def report_part(svc, now, region, from_date, until_date, phones) -> tuple:
    """The report of one chunk of members, where it runs: (partial report, []) or, when ledgers of
    the chunk cannot be read, (None, their errors)."""
    svc = workers.service_of(svc)
    opening, closing = period_instants(rules.calendar_of(svc.catalog), rules.seconds(now), from_date, until_date)
    summaries = [report_member(svc, p, now, opening, closing) for p in phones]
    try:
        return _report(svc, now, region, from_date, until_date, summaries), []
    except FilesError:
        return None, [s["error"] for s in summaries if s is not None and "error" in s]


def _report(svc, now, region, from_date, until_date, summaries) -> dict:
    cal = rules.calendar_of(svc.catalog)
    t = rules.seconds(now)
    doc = reduce(summaries, cal.iso(t)[:7], region, from_date, until_date)
    opening, closing = period_instants(cal, t, from_date, until_date)
    doc["period"] = dict({"from": from_date and from_date.isoformat(), "until": until_date and until_date.isoformat(),
                          "opening_at": None if opening is None else cal.iso(opening),
                          "closing_at": cal.iso(closing)}, **doc["period"])
    return dict({"as_of": cal.iso(t), "region": region}, **doc)


def merge_reports(a, b):
    """Add up two partial reports: numbers add, dicts merge by key, lists of {month: ...} merge
    by month (kept sorted), anything else (as_of, region) must agree."""
    if isinstance(a, bool) or isinstance(b, bool):
        if a != b:
            raise ValueError(f"cannot merge {a!r} and {b!r}")
        return a
    if isinstance(a, int) and isinstance(b, int):
        return a + b
    if isinstance(a, dict) and isinstance(b, dict):
        out = dict(a)
        for k, v in b.items():
            out[k] = merge_reports(out[k], v) if k in out else v
        return out
    if isinstance(a, list) and isinstance(b, list) and all(isinstance(x, dict) and "month" in x for x in a + b):
        by = {x["month"]: x for x in a}
        for x in b:
            by[x["month"]] = merge_reports(by[x["month"]], x) if x["month"] in by else x
        return [by[k] for k in sorted(by)]
    if a != b:
        raise ValueError(f"cannot merge {a!r} and {b!r}")
    return a


def reconciliation(doc: dict) -> dict:
    """earned + adjusted - redeemed - expired - refunded - forfeited, over the months shown, against
    outstanding + held - debt (equal over all months)."""
    total = {k: sum(m[k] for m in doc["months"]) for k in MONTH_FIELDS}
    flow = (total["earned"] + total["adjusted"] - total["redeemed"] - total["expired"] - total["refunded"]
            - total["forfeited"])
    return dict(total, flow=flow, stock=doc["outstanding"] + doc["held"] - doc["debt"])


def _gifts_term(n: int) -> str:
    """Gifts that crossed the selection's edge (only with --region: a member who moved region, or a
    catalog whose gifts leave the region); over the whole program they add up to 0 and are not shown."""
    if not n:
        return ""
    return f" + gifts in {n}" if n > 0 else f" - gifts out {-n}"


def period_text(v: dict) -> str:
    """The period's reconciliation (`--from`/`--until`), as hledger's `balance -b` reads: the balance
    (outstanding + held - debt) at the start plus the period's flows is the balance at its end. Both
    balances are read from replays as of those instants, not derived from the flows."""
    from bonuscli import render

    p = v["period"]
    text = f"period {p['from'] or 'the first event'} .. {p['until'] or v['as_of'][:10]}"
    text += "\n" + render.pairs([
        ("opening", f"{p['opening']}  (outstanding + held - debt as of {p['opening_at'] or 'before the first event'})"),
        ("closing", f"{p['closing']}  (as of {p['closing_at']})")])
    text += (f"\nopening {p['opening']} + earned {p['earned']} + adjusted {p['adjusted']} - redeemed {p['redeemed']}"
             f" - expired {p['expired']} - refunded {p['refunded']} - forfeited {p['forfeited']}"
             f"{_gifts_term(p['gifts'])} = closing {p['closing']}")
    return text


def human(v, bars=None) -> str:
    from bonuscli import render

    text = render.pairs([(k, str(n)) for k, n in v["members"].items()])
    text += (f"\n\noutstanding  {v['outstanding']}\nheld         {v['held']}\ndebt         {v['debt']}")
    p = v.get("period")
    if p is not None and (p["from"] or p["until"]):
        text += "\n\n" + period_text(v)
    else:
        r = reconciliation(v)
        gifts = p["gifts"] if p is not None else 0
        text += (f"\n\nearned {r['earned']} + adjusted {r['adjusted']} - redeemed {r['redeemed']}"
                 f" - expired {r['expired']} - refunded {r['refunded']} - forfeited {r['forfeited']}"
                 f"{_gifts_term(gifts)} = {r['flow'] + gifts}"
                 f"\noutstanding {v['outstanding']} + held {v['held']} - debt {v['debt']} = {r['stock']}")
    text += "\n\n" + render.table([[m["month"]] + [m[k] for k in MONTH_FIELDS] for m in v["months"]],
                                  ["month"] + list(MONTH_FIELDS))
    text += "\n\nexpiring:\n" + render.bars([(e["month"], e["points"]) for e in v["expiring"]])
    if v["months"]:
        text += "\n\nearned by month:\n" + render.bars([(m["month"], m["earned"]) for m in v["months"]])
    return text


__all__ = ["map_members", "member_summary", "report", "reduce", "merge_reports", "reconciliation", "human", "iso",
           "period_instants", "period_text"]
