"""`bonuscli diff OLD NEW`: what changed between two catalogs, and what the
change does to members (docs/ci.md).

Owns: the list of changes (`{kind, what, old, new}`, kinds in KINDS), the
impact of replaying the same requests under both catalogs (simulate.World, in
memory: the data directory is only read), `--fail-on`, and the report.
Imports model, render, catalog, ledger, simulate; scenario lazily.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from bonuscli import commands, rules
from bonuscli.model import Catalog, FilesError, decimal_text, iso, money

# every kind of change, in the order they are listed
KINDS = (
    "reward-added", "reward-removed", "price-increase", "price-decrease", "rate-change", "tier-change",
    "tenure-change", "limit-change", "bonus-change", "channel-change", "validity-change", "reward-change",
    "category-added", "category-removed", "eligibility-change", "activation-change", "gift-change",
    "expiry-change", "closing-change", "region-added", "region-removed", "region-change", "refund-change",
    "program-change",
)


def _change(kind, what, old, new):
    return {"kind": kind, "what": what, "old": old, "new": new}


def _limits(limits) -> list:
    return [{"per": l.per, "max": l.max} for l in limits]


def _tenure(steps) -> list:
    return [{"up_to_months": None if s.up_to is None else int(s.up_to), "coefficient": decimal_text(s.value)}
            for s in steps]


def _tiers(steps) -> list:
    return [{"up_to_rub": None if s.up_to is None else money(s.up_to), "rub_per_point": int(s.value)} for s in steps]


def _activation(a) -> str:
    if a.working_days:
        return f"{a.working_days} working days"
    return f"{a.hours} hours"


def _price(what, old, new, out):
    if old == new or old is None or new is None:
        return
    out.append(_change("price-increase" if new > old else "price-decrease", what, old, new))


def changes(old: Catalog, new: Catalog) -> list:
    """Every difference between two catalogs, as {kind, what, old, new}."""
    out: list = []
    add = lambda kind, what, a, b: out.append(_change(kind, what, a, b)) if a != b else None  # noqa: E731

    # program
    add("program-change", "program.name", old.name, new.name)
    add("program-change", "program.timezone", old.timezone, new.timezone)
    add("program-change", "program.short_number", old.short_number, new.short_number)
    add("closing-change", "program.closing_date", old.closing_date and old.closing_date.isoformat(),
        new.closing_date and new.closing_date.isoformat())
    add("expiry-change", "program.points_validity_months", old.validity_months, new.validity_months)
    add("limit-change", "program.amount_max", money(old.amount_max), money(new.amount_max))

    # regions
    for code in old.regions:
        if code not in new.regions:
            out.append(_change("region-removed", code, old.regions[code], None))
        elif old.regions[code] != new.regions[code]:
            out.append(_change("region-change", code, old.regions[code], new.regions[code]))
    for code in new.regions:
        if code not in old.regions:
            out.append(_change("region-added", code, None, new.regions[code]))

    # who may join, and how fast they activate
    add("eligibility-change", "services.eligible", list(old.services_eligible), list(new.services_eligible))
    add("eligibility-change", "services.ineligible", list(old.services_ineligible), list(new.services_ineligible))
    add("eligibility-change", "services.default", list(old.services_default), list(new.services_default))
    for name in dict.fromkeys(list(old.methods) + list(new.methods)):
        a = _activation(old.methods[name]) if name in old.methods else None
        b = _activation(new.methods[name]) if name in new.methods else None
        add("activation-change", f"join_methods.{name}", a, b)

    # bonuses
    ob, nb = old.bonuses, new.bonuses
    for field in ("welcome", "web_form", "web_profile", "referral", "card_welcome"):
        add("bonus-change", f"bonuses.{field}", getattr(ob, field), getattr(nb, field))
    add("bonus-change", "bonuses.card_welcome.threshold_rub", money(ob.card_welcome_threshold),
        money(nb.card_welcome_threshold))
    add("bonus-change", "bonuses.card_welcome.category", ob.card_welcome_category, nb.card_welcome_category)

    # earning
    for code, c in old.categories.items():
        n = new.categories.get(code)
        if n is None:
            out.append(_change("category-removed", code, c.rub_per_point if not c.tiered else "tiered", None))
            continue
        add("rate-change", code, c.rub_per_point if not c.tiered else "tiered",
            n.rub_per_point if not n.tiered else "tiered")
        add("rate-change", f"{code}.tenure", c.tenure, n.tenure)
    for code, n in new.categories.items():
        if code not in old.categories:
            out.append(_change("category-added", code, None, n.rub_per_point if not n.tiered else "tiered"))
    for code in dict.fromkeys(list(old.ineligible) + list(new.ineligible)):
        a, b = code in old.ineligible, code in new.ineligible
        if a != b:
            out.append(_change("eligibility-change", f"earning.{code}", "not eligible" if a else None,
                               "not eligible" if b else None))
    add("tenure-change", "earning.tenure", _tenure(old.tenure), _tenure(new.tenure))
    add("tier-change", "earning.card_tiers", _tiers(old.card_tiers), _tiers(new.card_tiers))
    add("limit-change", "earning.late_days", old.late_days, new.late_days)

    # gifts
    og, ng = old.gifts, new.gifts
    add("gift-change", "gifts.same_region", og.same_region, ng.same_region)
    add("limit-change", "gifts.min_points", og.min_points, ng.min_points)
    add("limit-change", "gifts.per_day", og.per_day, ng.per_day)
    add("limit-change", "gifts.per_month_points", og.per_month_points, ng.per_month_points)
    add("gift-change", "gifts.accept_days", og.accept_days, ng.accept_days)

    add("refund-change", "refunds.allow_debt", old.allow_debt, new.allow_debt)

    # the store discount: more points per rouble is a higher price
    os_, ns = old.store_discount, new.store_discount
    add("reward-change", "store_discount.reward", os_.reward, ns.reward)
    _price("store_discount.points_per_rub", os_.points_per_rub, ns.points_per_rub, out)
    add("limit-change", "store_discount.max_share", decimal_text(os_.max_share), decimal_text(ns.max_share))

    add("channel-change", "channels", list(old.channels), list(new.channels))

    # reward categories and their limits
    for code in dict.fromkeys(list(old.reward_categories) + list(new.reward_categories)):
        a, b = old.reward_categories.get(code), new.reward_categories.get(code)
        if a is None or b is None:
            add("reward-change", f"category:{code}", a and a.name, b and b.name)
            if (a and a.limits) or (b and b.limits):
                add("limit-change", f"category:{code}", _limits(a.limits) if a else [], _limits(b.limits) if b else [])
            continue
        add("reward-change", f"category:{code}.name", a.name, b.name)
        add("limit-change", f"category:{code}", _limits(a.limits), _limits(b.limits))

    # rewards
    for code, r in old.rewards.items():
        n = new.rewards.get(code)
        if n is None:
            out.append(_change("reward-removed", code, r.price, None))
            continue
        _price(code, r.price, n.price, out)
        for region in sorted(set(r.region_prices) | set(n.region_prices)):
            _price(f"{code}@{region}", old.price_for(r, region), new.price_for(n, region), out)
        add("validity-change", code, r.validity_days, n.validity_days)
        add("channel-change", code, list(r.channels), list(n.channels))
        add("limit-change", code, _limits(r.limits), _limits(n.limits))
        for field in ("name", "category", "ussd", "sms", "issues_code"):
            add("reward-change", f"{code}.{field}", getattr(r, field), getattr(n, field))
    for code, n in new.rewards.items():
        if code not in old.rewards:
            out.append(_change("reward-added", code, None, n.price))
    return out


# ---------------------------------------------------------------- impact


def impact(old: Catalog, new: Catalog, ledgers: dict, now: dt.datetime, jobs=None) -> dict:
    """Replay the requests recorded in `ledgers` (phone -> events) under both catalogs.

    Members that no gift or referral ties together are replayed apart (simulate.compare), on `jobs`
    processes (default: the core count): the same document whatever `jobs`."""
    from bonuscli import simulate
    from bonuscli.service import gc_paused

    with gc_paused():  # a few small objects per request, all kept: a collection would walk them all
        requests = simulate.requests_of(ledgers, old)
    figures, changed = simulate.compare(old, new, ledgers, requests, now, jobs)
    return _document(ledgers, requests, figures, changed, now)


def _document(ledgers, requests, figures: dict, changed, now) -> dict:
    """The impact document: `figures` phone -> ((available, earned, spent, debt) old, ... new); `changed`:
    (request index, (ok, kind, message, points spent) old, ... new) for each outcome that differs."""
    members = []
    total = dict(available_old=0, available_new=0, earned_old=0, earned_new=0, spent_old=0, spent_new=0,
                 debt_old=0, debt_new=0)
    for phone in sorted(ledgers):
        fo, fn = figures[phone]
        row = {"phone": phone, "available_old": fo[0], "available_new": fn[0], "change": fn[0] - fo[0],
               "earned_old": fo[1], "earned_new": fn[1], "spent_old": fo[2], "spent_new": fn[2],
               "debt_old": fo[3], "debt_new": fn[3]}
        members.append(row)
        for k in total:
            total[k] += row[k]
    total["change"] = total["available_new"] - total["available_old"]
    total["members"] = len(members)
    outcome_changes, unaffordable = [], []
    for i, a, b in changed:  # in the requests' order
        req = requests[i]
        a_ok, a_kind, a_message, a_spent = a
        b_ok, b_kind, b_message, _ = b
        outcome_changes.append({"phone": req.phone, "at": iso(req.at), "command": req.command,
                                "request": req.describe(), "old": "ok" if a_ok else a_kind,
                                "new": "ok" if b_ok else b_kind, "message": b_message or a_message})
        if req.command == "redeem" and a_ok and b_kind == "insufficient-points":
            unaffordable.append({"phone": req.phone, "at": iso(req.at), "code": req.args["code"],
                                 "points_old": a_spent, "message": b_message})
    return {"as_of": iso(now), "members": members, "total": total, "changed": changed_count(members),
            "no_longer_affordable": unaffordable, "outcome_changes": outcome_changes, "requests": len(requests)}


def changed_count(members: list) -> int:
    """`impact.changed`: how many members' available points differ between the two catalogs. The one
    place it is counted: `_document` (a whole replay, or one group's) and `merge_impacts` (over the
    merged members, never summed from the parts) both call it, so every engine and `--jobs` give the
    same count, and `--changed-only` (`changed_only`, applied after it) cannot change it."""
    return sum(1 for m in members if m["available_new"] != m["available_old"])


def changed_only(imp: dict) -> dict:
    """`--changed-only`: the impact with only the members whose available points change; `total`
    and `changed` still count every member."""
    return dict(imp, members=[m for m in imp["members"] if m["available_new"] != m["available_old"]])


def impact_reference(old: Catalog, new: Catalog, ledgers: dict, now: dt.datetime) -> dict:
    """`impact` as it was first written: two worlds of everyone on the one service path
    (simulate.World(reference=True)), compared pairwise. Slow; the tests compare `impact` with it."""
    from bonuscli import simulate

    requests = simulate.requests_of(ledgers, old)
    wo = simulate.World(old, reference=True).run(requests, until=now)
    wn = simulate.World(new, reference=True).run(requests, until=now)

    def four(f):
        return f["available"], f["earned"], f["spent"], f["debt"]

    def outcome(o):
        return o.ok, o.kind, o.message, (o.view or {}).get("points_spent")

    figures = {p: (four(wo.figures(p, now)), four(wn.figures(p, now))) for p in ledgers}
    changed = [(i, outcome(a), outcome(b)) for i, (a, b) in enumerate(zip(wo.outcomes, wn.outcomes))
               if not (a.ok == b.ok and a.kind == b.kind)]
    return _document(ledgers, requests, figures, changed, now)


# ---------------------------------------------------------------- impact of a data directory, in parallel

PARALLEL_FROM = 400  # members: below this, one process reads and replays them all


def impact_dir(old: Catalog, new: Catalog, store, now: dt.datetime, jobs=None, warn=None, engine=None) -> dict:
    """`impact(old, new, read_ledgers(store, warn), now)` for a data directory, with the reading
    spread over the workers of `engine` too (workers.Local(jobs) by default, or a Dask cluster):
    the same document.

    Phase 1: each chunk of ledgers is read where it runs, naming for each member what its events
    tie it to (`commands.links_of`). Here they are joined into groups (`rules.components`), so no
    request of one group can touch another. Phase 2: each chunk of whole groups is read again and
    replayed under both catalogs where it runs; here the parts are merged: members by phone,
    outcome changes by their place in the global order of requests (simulate.merged's keys)."""
    from bonuscli import workers

    phones = store.phones()
    if engine is None:
        engine = workers.Local(jobs if len(phones) >= PARALLEL_FROM else 1)
        if engine.n_workers() <= 1 or not workers.can_fork():
            return impact(old, new, read_ledgers(store, warn), now, jobs=jobs)
    n = engine.n_workers()
    source = str(store.root) if engine.portable else store
    links = {}
    for part in engine.map_chunks(links_part, workers.chunked(phones, n), source):
        for item in part:
            if isinstance(item, workers.Raised):
                item.throw()  # the first unreadable ledger, in phone order, as read_ledgers
            phone, linked, warning = item
            if warning and warn:
                warn(warning)
            links[phone] = linked
    size = max(workers.MIN_CHUNK, -(-len(phones) // (n * 8)))  # members a task holds at least: whole groups
    groups, cur = [], []
    for group in rules.components(links, phones):
        cur.extend(group)
        if len(cur) >= size:
            groups.append(cur)
            cur = []
    if cur or not groups:
        groups.append(cur)
    parts = engine.map_chunks(impact_part, groups, old, new, source, now)
    return merge_impacts([d for d, _k, _u in parts], [k for _d, k, _u in parts], [u for _d, _k, u in parts])


def _store(source):
    """The store a chunk reads: the one given (this machine's workers inherit it), or the data
    directory at a path (a Dask worker opens it)."""
    if hasattr(source, "read"):
        return source
    from bonuscli.ledger import FileStore

    return FileStore(Path(source))


def links_part(source, phones) -> list:
    """`read_links` over one chunk of the data directory (an unreadable ledger's error as data)."""
    from bonuscli import workers

    return read_links(_store(source), phones, workers.Raised)


def impact_part(old: Catalog, new: Catalog, source, now: dt.datetime, phones) -> tuple:
    """`group_impact` over a chunk of whole link-groups (members no request outside it can touch)."""
    from bonuscli.service import gc_paused

    store = _store(source)
    with gc_paused():
        ledgers = {p: [e for e in store.read(p).events if e.get("type") != "repair"] for p in phones}
    return group_impact(old, new, ledgers, now)


def merge_impacts(docs: list, keys: list, ukeys: list) -> dict:
    """One impact document from the documents of groups that no request crosses (each with the
    global order keys of its outcome changes and of its no-longer-affordable redemptions)."""
    import heapq

    out = dict(docs[0])
    out["members"] = sorted((m for d in docs for m in d["members"]), key=lambda m: m["phone"])
    total: dict = {}
    for d in docs:
        for k, v in d["total"].items():
            total[k] = total.get(k, 0) + v
    out["total"] = total
    out["changed"] = changed_count(out["members"])
    out["requests"] = sum(d["requests"] for d in docs)
    out["outcome_changes"] = [c for _, c in heapq.merge(*[list(zip(k, d["outcome_changes"]))
                                                          for d, k in zip(docs, keys)], key=lambda x: x[0])]
    out["no_longer_affordable"] = [u for _, u in heapq.merge(*[list(zip(k, d["no_longer_affordable"]))
                                                               for d, k in zip(docs, ukeys)], key=lambda x: x[0])]
    return out


def group_impact(old: Catalog, new: Catalog, ledgers: dict, now: dt.datetime) -> tuple:
    """`impact` of ledgers no request outside them can touch, with the global order key of each
    outcome change and of each no-longer-affordable redemption (for `merge_impacts`)."""
    from bonuscli import simulate
    from bonuscli.service import gc_paused

    with gc_paused():
        keyed = simulate.requests_of(ledgers, old, with_keys=True)
    requests = [r for _k, r in keyed]
    figures, changed = simulate.compare(old, new, ledgers, requests, now, 1)
    doc = _document(ledgers, requests, figures, changed, now)
    keys = [keyed[i][0] for i, _a, _b in changed]
    ukeys = [keyed[i][0] for i, a, b in changed
             if requests[i].command == "redeem" and a[0] and b[1] == "insufficient-points"]
    return doc, keys, ukeys


def read_links(store, phones, failed) -> list:
    """For each phone: (phone, what its ledger ties it to (`commands.links_of`), torn-line warning or
    None). A ledger that cannot be read ends the list with `failed(error)`, as read_ledgers would
    stop there."""
    from bonuscli.ledger import torn_warning

    out = []
    for phone in phones:
        try:
            led = store.read(phone)
        except FilesError as e:
            out.append(failed(e))
            break
        out.append((phone, commands.links_of(phone, led.events), torn_warning(led)))
    return out


def read_ledgers(store, warn=None) -> dict:
    """phone -> events of every ledger of a store (torn-line warnings to `warn`)."""
    from bonuscli.ledger import torn_warning

    out = {}
    for phone in store.phones():
        led = store.read(phone)
        msg = torn_warning(led)
        if msg and warn:
            warn(msg)
        out[phone] = [e for e in led.events if e.get("type") != "repair"]
    return out


def scenario_ledgers(path: str, catalog_path: str, warn=None):
    """Run a scenario's steps (expectations not checked) under `catalog_path`, in memory:
    (phone -> events, the steps' `at`s)."""
    from bonuscli import scenario as scenario_mod

    sc, problems = scenario_mod.load(path)
    if sc is None:
        _report(problems, warn)
        raise FilesError(f"invalid scenario file {path} (see the file:line lines above)", "scenario-invalid")
    sc = sc._replace(catalog=None)  # the scenario runs under OLD, whatever it names
    cat, problems = scenario_mod.catalog_for(sc, Path(catalog_path).expanduser())
    if cat is None:
        _report(problems, warn)
        raise FilesError(f"cannot run scenario {path} (see the file:line lines above)", "scenario-invalid")
    svc = scenario_mod.play(sc, cat, check=False)[2]
    return read_ledgers(svc.store, warn), [step.at for step in sc.steps]


def _report(problems, warn):
    if warn:
        for p in problems:
            warn(str(p))


def load_catalog(path: str, warn=None) -> Catalog:
    from bonuscli import catalog as catalog_mod

    try:
        cat, probs = catalog_mod.validate(Path(path).expanduser(), path)
    except FilesError as e:
        if e.kind == "catalog-missing":  # a file named on the command line that is not there: bad input
            from bonuscli.model import BadInput

            raise BadInput(e.message, e.kind) from None
        raise
    if probs:
        _report(probs, warn)
        raise FilesError(f"invalid catalog {path}: {len(probs)} problem{'s' if len(probs) != 1 else ''} "
                         "(see the file:line lines above)", "catalog-invalid")
    return cat


def _cell(value) -> str:
    from bonuscli import render

    if value is None:
        return "-"
    if isinstance(value, list):
        if value and isinstance(value[0], dict):
            return "; ".join(", ".join(f"{k} {render.show(v)}" for k, v in d.items()) for d in value) or "-"
        return ", ".join(map(str, value)) or "-"
    return render.show(value)


def human(doc) -> str:
    from bonuscli import render

    rows = [[c["kind"], c["what"], _cell(c["old"]), _cell(c["new"])] for c in doc["changes"]]
    text = "no changes" if not rows else render.table(rows, ["kind", "what", "old", "new"])
    imp = doc.get("impact")
    if imp is not None:
        t = imp["total"]
        text += f"\n\nimpact as of {imp['as_of']} ({t['members']} member{'s' if t['members'] != 1 else ''}, " \
                f"{imp['requests']} requests replayed)\n"
        # the total and the count first: a big diff is read from the top (issue 24)
        text += f"available changes for {imp['changed']} of {t['members']} member{'s' if t['members'] != 1 else ''}"
        if len(imp["members"]) < t["members"]:
            text += " (only they are listed; the total counts every member)"
        text += "\n"
        mrows = [["total", t["available_old"], t["available_new"], f"{t['change']:+d}", t["earned_old"],
                  t["earned_new"]]]
        mrows += [[m["phone"], m["available_old"], m["available_new"], f"{m['change']:+d}", m["earned_old"],
                   m["earned_new"]] for m in imp["members"]]
        text += render.table([[str(c) for c in r] for r in mrows],
                             ["phone", "available old", "available new", "change", "earned old", "earned new"])
        if imp["no_longer_affordable"]:
            text += "\n\nno longer affordable:\n" + render.table(
                [[u["phone"], u["at"], u["code"], str(u["points_old"])] for u in imp["no_longer_affordable"]],
                ["phone", "at", "reward", "points under old"])
        others = [o for o in imp["outcome_changes"]
                  if not (o["command"] == "redeem" and o["new"] == "insufficient-points" and o["old"] == "ok")]
        if others:
            text += "\n\ndecided differently:\n" + render.table(
                [[o["at"], o["request"], o["old"], o["new"]] for o in others], ["at", "request", "old", "new"])
    return text
