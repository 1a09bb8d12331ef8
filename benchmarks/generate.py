"""A seeded generator of a realistic data directory, built with bonuscli's own rules.

    python benchmarks/generate.py DIR --members 10000 --events 100000 [--seed 1]
        [--journal FILE.journal] [--beancount FILE.beancount] [--csv FILE.csv]

Every member joins (various methods and regions), then earns in every category,
redeems rewards, gifts and accepts, and gets refunds, over about a year; the
events are decided by bonuscli.rules exactly as the CLI would, and written as
ledgers (hash-chained, one write per member, no fsync: this is a fixture). With
--journal / --beancount it also writes the same transactions for hledger and
beancount, and with --csv a batch file for `earn --from`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import sys
import time
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bonuscli import catalog as catalog_mod  # noqa: E402
from bonuscli import ledger, rules  # noqa: E402
from bonuscli.service import stamp  # noqa: E402
from bonuscli.model import iso  # noqa: E402

CATEGORIES = ["mobile", "mobile_internet", "home_internet", "home_tv", "home_phone", "mts_store", "partner_store",
              "taxi", "in_app", "card"]
REGIONS = ["RU-MOW", "RU-MOS", "RU-SPE", "RU-BRY", "RU-TA", "RU-NVS"]
REWARDS = ["minutes_30", "sms_50", "mms_10", "vnet", "black_list", "ivi_7", "mts_tv_7", "store_music"]


def phone_of(i: int) -> str:
    return f"9{i:09d}"


def write_ledger(root: Path, phone: str, events) -> None:
    chunks, prev = [], ledger.genesis(phone)
    for e in events:
        prev = ledger._link(chunks, e, prev)
    path = root / "ledgers" / f"{phone}.jsonl"
    with open(path, "wb") as f:
        f.write(b"".join(chunks))
    os.chmod(path, 0o600)


class Gen:
    def __init__(self, cat, seed):
        self.cat = cat
        self.rnd = random.Random(seed)
        self.events = {}
        self.members = {}
        self.journal = []

    def member(self, phone):
        return self.members[phone]

    def apply(self, phone, decision):
        for p, evs in decision.writes:
            stamped = stamp(p, len(self.events.setdefault(p, [])), evs)
            self.events[p].extend(stamped)
            if p != phone:
                self.members[p] = rules.replay(self.cat, p, self.events[p], rules.from_iso(stamped[-1]["at"]), {})
            else:
                for e in stamped:
                    rules.extend(self.members[p], e)
        return decision.view


def generate(root: Path, members: int, events: int, seed: int = 1, start="2025-01-01", journal=None, bean=None,
             csv_path=None):
    res = catalog_mod.validate(catalog_mod.default_path(), "catalog.yaml")
    cat = res[0]
    g = Gen(cat, seed)
    rnd = g.rnd
    tz = cat.tz
    t0 = dt.datetime.fromisoformat(start).replace(tzinfo=tz)
    (root / "ledgers").mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o700)
    per = max(1, events // members - 1)
    jr, bc, rows = [], [], []
    for i in range(members):
        phone = phone_of(i)
        g.members[phone] = rules.replay(cat, phone, [], t0, {})
        when = t0 + dt.timedelta(minutes=rnd.randrange(0, 60 * 24 * 30))
        method = rnd.choice(["sms", "sms", "ussd", "app", "web"])
        g.apply(phone, rules.join(cat, g.members[phone], when, {
            "region": rnd.choice(REGIONS), "method": method, "services": ["mobile"],
            "customer_since": (when - dt.timedelta(days=rnd.randrange(0, 1500))).date()}))
        step = dt.timedelta(minutes=max(1, (330 * 24 * 60) // per))
        when += dt.timedelta(days=3)
        for k in range(per):
            when += step
            m = g.members[phone]
            r = rnd.random()
            if r < 0.8:
                category = rnd.choice(CATEGORIES)
                amount = Decimal(rnd.randrange(100, 300000)) / 100
                ref = f"t{i}-{k}"
                view = g.apply(phone, rules.earn(cat, m, when, amount, category, ref))
                jr.append((when, phone, amount, category, view["points"]))
                if csv_path is not None:
                    rows.append(f"{phone},{amount},{category},{ref},{iso(when)}")
            elif r < 0.9:
                code = rnd.choice(REWARDS)
                d = rules.redeem(cat, m, when, code, "web")
                if isinstance(d, rules.Refusal):
                    continue
                g.apply(phone, d)
                jr.append((when, phone, -d.view["points_spent"], "redeem:" + code, -d.view["points_spent"]))
            elif r < 0.95 and m.earns:
                ref = rnd.choice(list(m.earns))
                rec = m.earns[ref]
                left = (Decimal(rec[rules.member.E_AMOUNT] - rec[rules.member.E_REF_AMOUNT]) / 100).quantize(Decimal("0.01"))
                if left <= 0:
                    continue
                d = rules.refund(cat, m, when, ref, (left / 2).quantize(Decimal("0.01")) or left)
                if isinstance(d, rules.Refusal):
                    continue
                g.apply(phone, d)
                jr.append((when, phone, Decimal(0), "refund", -d.view["points_taken"]))
            else:
                other = phone_of(rnd.randrange(0, i)) if i else None
                if other is None or other == phone:
                    continue
                o = g.members[other]
                if o.join["region"] != m.join["region"] or (o.last_at and o.last_at > rules.seconds(when)):
                    continue
                d = rules.gift(cat, m, o, when, rnd.randrange(1, 50))
                if isinstance(d, rules.Refusal):
                    continue
                view = g.apply(phone, d)
                g.members[other] = rules.replay(cat, other, g.events[other], when, {phone: g.events[phone]})
                if rnd.random() < 0.7:
                    later = when + dt.timedelta(hours=1)
                    o = g.members[other]
                    a = rules.accept(cat, o, g.members[phone], later, view["gift_id"])
                    if not isinstance(a, rules.Refusal):
                        g.apply(other, a)
                        g.members[phone] = rules.replay(cat, phone, g.events[phone], later, {other: g.events[other]})
                        when = later
        if (i + 1) % 1000 == 0:
            print(f"  {i + 1} members", file=sys.stderr)
    for phone, evs in g.events.items():
        write_ledger(root, phone, evs)
    if journal:
        with open(journal, "w") as f:
            for when, phone, amount, category, points in jr:
                f.write(f"{when:%Y-%m-%d} {category}\n    members:{phone}  {points} PTS\n    program:{category}\n\n")
    if bean:
        with open(bean, "w") as f:
            f.write('option "operating_currency" "PTS"\n1970-01-01 open Equity:Program\n')
            for phone in sorted(g.events):
                f.write(f"1970-01-01 open Assets:M{phone}\n")
            for when, phone, amount, category, points in jr:
                f.write(f'{when:%Y-%m-%d} * "{category}"\n  Assets:M{phone}  {points} PTS\n  Equity:Program\n\n')
    if csv_path:
        with open(csv_path, "w") as f:
            f.write("phone,amount,category,ref,at\n" + "\n".join(rows) + "\n")
    return sum(len(v) for v in g.events.values())


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir")
    ap.add_argument("--members", type=int, default=1000)
    ap.add_argument("--events", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--journal")
    ap.add_argument("--beancount")
    ap.add_argument("--csv")
    a = ap.parse_args()
    t = time.perf_counter()
    n = generate(Path(a.dir), a.members, a.events, a.seed, journal=a.journal, bean=a.beancount, csv_path=a.csv)
    print(f"wrote {n} events for {a.members} members to {a.dir} in {time.perf_counter() - t:.1f} s")


if __name__ == "__main__":
    main()
