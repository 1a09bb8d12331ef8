"""One decision path (issue 22, item 6 "Differential"): the same history, whichever way it reaches
the rules, must come out the same, and an earn's points must be what the catalog's numbers say.

Only public behaviour is used: the CLI in-process (click.testing.CliRunner on `bonuscli.cli.cli`)
and a few real `python -m bonuscli` processes, batch files, scenario files (`check --scenario`),
`diff --ledgers` (with `--engine dask` once), `report`, `check --ledgers`, the ledger files
(docs/ledger.md: their layout and event types are documented) and the catalog YAML.

THE HISTORIES. `generate(seed)` (a seeded `random.Random`, SEEDS fixed: the same histories every
run) draws 6 members over ~14 months in two home regions, and every list comes from the catalog in
use, never from a hand-picked list: every join method of `join_methods` (spread over the members of
all histories), every earning and every ineligible category of `earning` (each history earns in
all of them), every reward of `catalog --json` (spread over the histories, each funded by an
operator credit so that even a 30,000-point certificate can be ordered, through a channel the
reward allows), referrals (across regions), gifts within a region with accepts, rejects, late
accepts and returns, a member leaving with gifts pending both ways and joining again, refunds
(whole, partial, too large, unknown, repeated), operator credits and debits (with references and
expiry dates), duplicate references, dry runs, and one torn last line (an append cut short, sealed
by the next write: the `repair` event). `test_histories_cover_the_catalog` asserts the coverage:
every category, reward and join method appears in some history, and every event type of
docs/ledger.md's table (and of `bonuscli.model.EVENT_TYPES`) in the ledger files written.

WHAT IS COMPARED (test_paths_agree):
(a) every step as a single command (`--at` its instant);
(b) the same history with every run of consecutive earns / refunds / adjustments that a batch can
    take written to a batch file (`earn --from`, `refund --from`, `adjust --from`, CSV or JSON
    lines, each row with its own `at`), the other steps as single commands, in the same global order
    (a batch is run before any later step);
(c) the same history as a scenario file run by `check --scenario` (in memory: no torn line there).
(a) and (b) must agree on: every step's exit code (a batch row's is its problem's `code`, else 0)
and the batch summaries' counts; the documents of the steps that are single commands in both; every
member's `balance --json`, `history --json` and `forecast --json` at the end; `report --json`; and
the ledger files themselves, line by line, as parsed JSON without the hash chain's `prev`, compared
last (so that a difference of figures shows first). Why that much: CLI.md says a batch row is
"applied as its own earn, decided as of its own `at` ... exactly as they would to single commands",
so the same events must be written: same types, instants, points, lots, expiry dates, and (same
lines before them) the same ids `<phone>.<n>` and gift ids. `prev` is left out only because it
hashes the bytes of the line before, and the order of keys inside a JSON object is not part of any
contract; `check --ledgers` (exit 0 on both directories) checks the chain itself. Gift ids are not
part of the contract either, so they are translated through the two runs' own `gift` outputs before
comparing (today they are equal). (c) must expect, and `check --scenario` must confirm, for each
step the exit code of (a), the error kind of a refusal, and the whole document (a) printed; and at
the end every member's balance, forecast and every history row. There the ids that count ledger
lines (event ids, lot ids, gift ids, voucher codes, and the history `detail` that names a gift id)
are left out: the scenario has no torn line, so its ledgers have two lines fewer after it;
everything else must be equal.

THE ORACLE. `Oracle` computes each earn from the catalog YAML alone (RULES.md §3):
floor(amount x coefficient / rub_per_point) with the tenure step of the spending's local date
against `customer_since` (inclusive month bounds, month-end clamping), the card tier of the
previous calendar month's applied card payments less their refunds, and the card welcome. It is
compared with every `earn --json` of (a) (dry runs too), with the earn lines (b) wrote, with the
`points` the scenario (c) expects, and with `diff` (below). It is what catches one category's
fast path (batch and diff decide earns without an explanation) earning one point less, and the
same mistake made on every path at once, which no comparison between paths can see.

DIFF. `diff OLD OLD --ledgers` on every directory written (under OLD: (a), (b); under NEW: the NEW
replays, as `diff NEW NEW`) reports no change: every member's `change` 0 and each `*_old` equal to
its `*_new`, no outcome changes; with --jobs 1 and --jobs 2, the same document, whose figures are
(a)'s. `diff OLD NEW --ledgers` (NEW: a copy of the catalog with changed rates and card tiers,
tenure table, prices and store discount, bonuses, or limits (gifts, reward and category limits, the
largest amount), or all of them: each kind on one history, two on a second) must equal replaying the
recorded requests of (a) (the steps that succeeded and were not duplicates or dry runs) as single
commands with `--catalog NEW` into a fresh data directory: per member `available`/`debt` (`balance
--json`), `earned` and `spent` (from `history --json`), the refused requests as `outcome_changes`
(and redemptions refused for too few points as `no_longer_affordable`), the number of requests; and
the `*_old` figures equal (a)'s. Each earn of that replay must match the oracle under NEW, and
`earned_new` must be the oracle's earn points plus the other credits of the replay. The parallel
paths are forced on these small directories by patching module constants in-process:
`diff.PARALLEL_FROM`/`workers.MIN_CHUNK` (each group of linked members is its own task, so a grouping
that ignored gift and referral links would split a gift from its accept and fail) and
`simulate.SERIAL_BELOW` (the request-grouped pool). One history is also diffed by a real `python -m
bonuscli diff --jobs 2` process, and one with `--engine dask`: the same document.

A DIFFERENCE THIS TEST FOUND (commit 78fafe9 and before; its smallest cases are kept as
test_batch_rows_write_what_single_commands_write): a batch file wrote a member's seals
(`gift_settle`, `referral_settle`: the records of an outcome decided elsewhere) once for all of
the member's rows, stamped with the first row's `at`, even when that row was refused; single
commands write them with the first command that changes the member after the outcome, at its
instant. So (1) a gift returned at its deadline between two of a member's rows was recorded by the
single `earn` after it, not by the batch row; (2) a referral credited before a refused first row
was recorded at the refused row's instant (a refusal writes nothing). Balances and figures agreed;
the lines, and so the ids of every later line (and of later gifts), did not.

Mutations seen caught: `rules.earn` giving one point less for `home_tv` when `explain` is off
(the oracle, in (a) earn --json, (b), diff OLD OLD and every diff OLD NEW); `commands.links_of`
(what diff groups members by) returning []: diff --jobs 2 on the directory path differs from
--jobs 1 (fewer requests replayed), and from the replay under NEW.

Runtime: about 30 s on 2 cores (data directories on /dev/shm when there is one).
"""

from __future__ import annotations

import calendar
import copy
import csv
import datetime as dt
import importlib.util
import io
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
from collections import defaultdict
from decimal import ROUND_DOWN, Decimal
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple, Optional

import pytest
import yaml
from click.testing import CliRunner

from bonuscli.cli import cli

ROOT = Path(__file__).resolve().parent.parent
CATALOG = ROOT / "catalog.yaml"
RAW = yaml.safe_load(CATALOG.read_text(encoding="utf-8"))  # the oracle's numbers come from here only
SEEDS = list(range(6))
MEMBERS = 6
START = dt.datetime(2024, 1, 8, 9, 0)
FMT = "%Y-%m-%dT%H:%M"
OFFSET = "+03:00"  # Europe/Moscow has had no DST since 2014

RUNNER = CliRunner()
# the commands get --data-dir, --catalog and --at explicitly; nothing may come from the environment
CLEAN_ENV = {k: None for k in ("BONUSCLI_DATA_DIR", "BONUSCLI_NOW", "BONUSCLI_CATALOG", "BONUSCLI_FAULT",
                               "BONUSCLI_FAULT_MODE")}


# ---------------------------------------------------------------- running the CLI


class Res(NamedTuple):
    code: int
    doc: object  # the JSON document printed (a list for history), or None
    err: Optional[dict]  # the JSON error object, or None


def bonus(args, data=None, catalog=CATALOG, at=None) -> Res:
    full = [str(a) for a in args] + ["--json", "--catalog", str(catalog)]
    if data is not None:
        full += ["--data-dir", str(data)]
    if at is not None:
        full += ["--at", at]
    r = RUNNER.invoke(cli, full, env=CLEAN_ENV, catch_exceptions=False)
    out = r.stdout.strip()
    doc = None
    if out:
        if args[0] == "history":
            doc = [json.loads(line) for line in out.splitlines() if line.strip()]
        else:
            doc = json.loads(out)
    err = None
    if r.exit_code != 0:
        lines = [line for line in r.stderr.strip().splitlines() if line.startswith("{")]
        assert lines, (full, r.exit_code, r.stdout, r.stderr)
        err = json.loads(lines[-1])["error"]
        assert err["code"] == r.exit_code, (full, err)
    return Res(r.exit_code, doc, err)


def ok(args, data=None, catalog=CATALOG, at=None):
    r = bonus(args, data, catalog, at)
    assert r.code == 0, (args, r)
    return r.doc


def sub(args, timeout=120):
    env = {k: v for k, v in os.environ.items() if k not in CLEAN_ENV}
    return subprocess.run([sys.executable, "-m", "bonuscli", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=timeout)


def scratch_root() -> str:
    """Data directories on /dev/shm when there is one: a command's fsync costs nothing there."""
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()


# ---------------------------------------------------------------- the catalog in use: every list


class Lists(NamedTuple):
    earning: list  # earning categories
    ineligible: list  # categories that do not earn
    methods: list  # join methods
    rewards: dict  # code -> `catalog --json` object
    regions: list  # region codes
    event_types: list  # ledger event types


def ledger_doc_types() -> set:
    """The event types of docs/ledger.md's table (`| type | written by | fields |`)."""
    text = (ROOT / "docs" / "ledger.md").read_text(encoding="utf-8")
    table = text.split("| type | written by | fields |", 1)[1].split("\n\n", 1)[0]
    out = set()
    for line in table.splitlines()[2:]:
        first = line.split("|")[1]
        out |= set(re.findall(r"`([a-z_]+)`", first))
    return out


def catalog_lists() -> Lists:
    from bonuscli import catalog as catalog_mod

    loaded = catalog_mod.load(CATALOG, str(CATALOG))
    # the loader and the YAML the oracle reads name the same things
    assert list(loaded.categories) == list(RAW["earning"]["categories"])
    assert list(loaded.ineligible) == list(RAW["earning"]["ineligible"])
    assert list(loaded.methods) == list(RAW["join_methods"])
    rewards = {r["code"]: r for r in ok(["catalog"])}
    assert list(rewards) == [r["code"] for r in RAW["rewards"]] == list(loaded.rewards)
    regions = [r["code"] for r in ok(["regions"])]
    types = ledger_doc_types()
    try:
        from bonuscli.model import EVENT_TYPES
        types |= set(EVENT_TYPES)
    except ImportError:
        pass
    return Lists(list(loaded.categories), list(loaded.ineligible), list(loaded.methods), rewards, regions,
                 sorted(types))


LISTS = catalog_lists()


# ---------------------------------------------------------------- generating a history


class Step(NamedTuple):
    i: int
    at: dt.datetime  # program time (naive local)
    cmd: str  # join earn refund adjust redeem gift accept leave torn
    a: dict


def fmt(t: dt.datetime) -> str:
    return t.strftime(FMT)


def iso(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:00") + OFFSET


def add_months(day: dt.date, n: int) -> dt.date:
    y, m = divmod(day.month - 1 + n, 12)
    year, month = day.year + y, m + 1
    return dt.date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def reward_share(seed: int) -> list:
    """The rewards this history orders: every reward of the catalog goes to some history."""
    codes = list(LISTS.rewards)
    random.Random(12345).shuffle(codes)
    return [c for j, c in enumerate(codes) if j % len(SEEDS) == seed % len(SEEDS)]


def price_of(reward: dict, region: str) -> Optional[int]:
    return (reward.get("region_prices") or {}).get(region, reward["price"])


def generate(seed: int) -> list:
    rnd = random.Random(seed)
    phones = [f"916{seed:03d}{k:04d}" for k in range(1, MEMBERS + 1)]
    priced = sorted({reg for r in LISTS.rewards.values() for reg in (r.get("region_prices") or {})})
    reg_a = rnd.choice(priced + [rnd.choice(LISTS.regions)])
    reg_b = rnd.choice([r for r in LISTS.regions if r != reg_a])
    region = {p: (reg_a if k < 4 else reg_b) for k, p in enumerate(phones)}
    methods = LISTS.methods
    steps: list = []
    t = START + dt.timedelta(days=seed * 3, minutes=rnd.randint(0, 600))
    counters = defaultdict(int)

    def add(cmd, **a):
        steps.append(Step(len(steps), t, cmd, a))

    def tick(lo_min=1, hi_min=9 * 24 * 60):
        nonlocal t
        t += dt.timedelta(minutes=rnd.randint(lo_min, hi_min))

    def ref(kind):
        counters[kind] += 1
        return f"{kind}{seed}-{counters[kind]}"

    # ---- joins: every method over the histories, referrals (a referrer still pending is refused:
    # then the member joins again without one), a satellite-TV-only join refused
    joined = []
    for k, p in enumerate(phones):
        tick(5, 600)
        method = methods[(seed * MEMBERS + k) % len(methods)]
        since = add_months(t.date(), -rnd.randint(0, 40)) - dt.timedelta(days=rnd.randint(0, 27))
        a = {"phone": p, "region": region[p], "method": method, "customer_since": since.isoformat()}
        if method == "web" and rnd.random() < 0.7:
            a["email"] = f"m{k}@example.ru"
            a["birth_date"] = "1990-05-17"
        if rnd.random() < 0.3:
            a["services"] = rnd.choice(["mobile,home_tv", "home_internet", "home_phone,home_tv", "mobile"])
        if k == 2 and rnd.random() < 0.5:
            add("join", **{**a, "services": "satellite_tv"})  # refused: satellite TV alone
            tick(1, 30)
        if joined and rnd.random() < 0.7:
            a["referrer"] = rnd.choice(joined)
            add("join", **a)
            tick(1, 30)
            a = {k2: v for k2, v in a.items() if k2 != "referrer"}
        add("join", **a)  # refused (already a member) when the join with a referrer went through
        joined.append(p)
    tick(60, 3 * 24 * 60)

    earn_refs = defaultdict(list)  # phone -> [(ref, amount)]
    cats = LISTS.earning + LISTS.ineligible
    must_cats = list(cats)
    rnd.shuffle(must_cats)
    must_rewards = reward_share(seed)
    rnd.shuffle(must_rewards)
    pending_gifts = []  # (gift step index, from, to)
    adjust_refs = defaultdict(list)
    refund_refs = defaultdict(list)
    left = set()
    n_ops = 46
    leave_at, rejoin_at, torn_at = 26, 34, rnd.randint(10, 20)
    leaver = phones[rnd.choice([1, 2, 3])]
    same_a = [p for p in phones if region[p] == reg_a]

    def earn_args(p, force=False):
        if must_cats and (force or rnd.random() < 0.6):
            c = must_cats.pop()
        else:
            c = rnd.choice(cats + ["card", "card", "mobile", "home_tv"])
        if c == "card":
            amount = rnd.choice(["999.99", "2500.00", "3000.00", "8000.00", "16000.00", "20000.50", "31000.00"])
        else:
            amount = rnd.choice(["0.01", "4.99", "9.99", "100.00", "333.33", "499.00", "500.00", "1234.56",
                                 "3000.00"])
        a = {"phone": p, "amount": amount, "category": c}
        r = rnd.random()
        if r < 0.08 and earn_refs[p]:
            a["ref"] = rnd.choice(earn_refs[p])[0]  # a duplicate (the first result, whatever the amount)
        elif r < 0.13:
            pass  # no reference: never in a batch
        else:
            a["ref"] = ref("e")
            earn_refs[p].append((a["ref"], amount))
        return a

    def redeem(p, code):
        """Order `code` (funded first by an operator's credit), or a random cheap reward unfunded."""
        if code is not None:
            rew = LISTS.rewards[code]
            fund = (price_of(rew, region[p]) or 3000) + rnd.choice([0, 7, 100])
            add("adjust", phone=p, points=fund, reason=f"for {code}", ref=ref("a"))
            tick(1, 90)
        else:
            code = rnd.choice([c for c in ("minutes_30", "black_list", "mms_10", "book_first", "superbit",
                                           "cert_letoile_500", "store_discount") if c in LISTS.rewards]
                              or list(LISTS.rewards))
            rew = LISTS.rewards[code]
        a = {"phone": p, "code": code, "via": rnd.choice(rew["channels"])}
        if rew["price"] is None:  # the store discount: priced by the item
            a["price"] = rnd.choice(["1999.90", "150.00", "5000.00"])
            if rnd.random() < 0.5:
                a["points"] = rnd.choice([1, 99, 1500])
        add("redeem", **a)

    for op in range(n_ops):
        tick()
        if op == torn_at:
            p = rnd.choice([q for q in phones if q not in left])
            add("torn", phone=p)
            tick(1, 60)
            add("adjust", phone=p, points=rnd.choice([5, 40]), reason="after a crash", ref=ref("a"))
            continue
        if op == leave_at:
            # a gift to the leaver and one from the leaver, both pending when it leaves
            others = [q for q in same_a if q != leaver and q not in left]
            add("adjust", phone=leaver, points=300, reason="before leaving", ref=ref("a"))
            tick(1, 60)
            add("gift", **{"from": leaver, "to": others[0], "points": 120})
            pending_gifts.append((len(steps) - 1, leaver, others[0]))
            tick(1, 60)
            add("adjust", phone=others[1], points=100, reason="to give", ref=ref("a"))
            tick(1, 60)
            add("gift", **{"from": others[1], "to": leaver, "points": 60})
            pending_gifts.append((len(steps) - 1, others[1], leaver))
            tick(1, 60)
            add("leave", phone=leaver)
            left.add(leaver)
            tick(1, 60)
            add("earn", phone=leaver, amount="100.00", category="mobile", ref=ref("e"))  # not a member
            continue
        if op == rejoin_at:
            add("join", phone=leaver, region=region[leaver], method=rnd.choice(methods),
                customer_since=add_months(t.date(), -30).isoformat())
            left.discard(leaver)
            continue
        live = [p for p in phones if p not in left]
        kind = rnd.choices(["earns", "refunds", "adjusts", "redeem", "gift", "accept", "dry"],
                           weights=[30, 10, 8, 18, 12, 10, 3])[0]
        if kind == "earns":
            for j in range(rnd.randint(1, 5)):
                add("earn", **earn_args(rnd.choice(live)))
                tick(1, 2 * 24 * 60)
        elif kind == "dry":
            a = earn_args(rnd.choice(live))
            a["dry_run"] = True
            add("earn", **a)
        elif kind == "refunds":
            for j in range(rnd.randint(1, 3)):
                p = rnd.choice(live)
                a = {"phone": p}
                if earn_refs[p] and rnd.random() < 0.9:
                    r, amount = rnd.choice(earn_refs[p])
                    a["ref"] = r
                    x = rnd.random()
                    if x < 0.4:
                        pass  # all that is left
                    elif x < 0.85:
                        part = (Decimal(amount) * rnd.randint(1, 60) / 100).quantize(Decimal("0.01"), ROUND_DOWN)
                        a["amount"] = str(max(part, Decimal("0.01")))
                    else:
                        a["amount"] = str(int(Fraction(amount)) + 1) + ".50"  # more than is left
                else:
                    a["ref"] = "never-" + ref("x")
                y = rnd.random()
                if y < 0.5:
                    a["refund_ref"] = ref("r")
                    refund_refs[p].append(a["refund_ref"])
                elif y < 0.6 and refund_refs[p]:
                    a["refund_ref"] = rnd.choice(refund_refs[p])  # a repeat
                add("refund", **a)
                tick(1, 2 * 24 * 60)
        elif kind == "adjusts":
            for j in range(rnd.randint(1, 3)):
                p = rnd.choice(live)
                pts = rnd.choice([5, 50, 500, 1200, -1, -30, -200, -5000])
                a = {"phone": p, "points": pts, "reason": rnd.choice(["goodwill", "outage, 2 days", "fix \"x\"",
                                                                       "duplicate credit"])}
                if rnd.random() < 0.1 and adjust_refs[p]:
                    a["ref"] = rnd.choice(adjust_refs[p])
                else:
                    a["ref"] = ref("a")
                    adjust_refs[p].append(a["ref"])
                if pts > 0 and rnd.random() < 0.3:
                    a["expires_on"] = (t + dt.timedelta(days=rnd.randint(1, 200))).date().isoformat()
                add("adjust", **a)
                tick(1, 2 * 24 * 60)
        elif kind == "redeem":
            redeem(rnd.choice(live), must_rewards.pop() if must_rewards and rnd.random() < 0.9 else None)
        elif kind == "gift":
            p = rnd.choice(live)
            same = [q for q in live if region[q] == region[p] and q != p]
            x = rnd.random()
            to = p if x < 0.05 or not same else (rnd.choice([q for q in phones if region[q] != region[p]])
                                                 if x < 0.1 else rnd.choice(same))
            pts = rnd.choice([1, 7, 30, 100, 150, 400, 3001])
            add("gift", **{"from": p, "to": to, "points": pts})
            if rnd.random() < 0.6:  # decided within days (most), else left to a late decision or the deadline
                g = len(steps) - 1
                tick(30, 6 * 24 * 60)
                add("accept", phone=to, gift=g, reject=rnd.random() < 0.25)
            else:
                pending_gifts.append((len(steps) - 1, p, to))
        elif kind == "accept":
            if pending_gifts:
                g = pending_gifts.pop(rnd.randrange(len(pending_gifts)))
                add("accept", phone=g[2], gift=g[0], reject=rnd.random() < 0.3)
    live = [p for p in phones if p not in left]
    while must_cats:  # whatever the draws left out: every category, every reward of this share
        tick(1, 3 * 24 * 60)
        add("earn", **earn_args(rnd.choice(live), force=True))
    while must_rewards:
        tick(1, 3 * 24 * 60)
        redeem(rnd.choice(live), must_rewards.pop())
    tick()
    for g in pending_gifts[: len(pending_gifts) // 2]:
        add("accept", phone=g[2], gift=g[0], reject=False)
        tick(1, 600)
    tick(60, 600)
    return steps


HISTORIES = {seed: generate(seed) for seed in SEEDS}


def end_of(steps) -> dt.datetime:
    return steps[-1].at + dt.timedelta(days=1)


# ---------------------------------------------------------------- the commands of a step


def batchable(s: Step) -> bool:
    if s.cmd == "earn":
        return s.a.get("ref") is not None and not s.a.get("dry_run")
    if s.cmd == "adjust":
        return s.a.get("ref") is not None
    return s.cmd == "refund"


def argv(s: Step, gift_ids: dict, over: Optional[dict] = None) -> list:
    a = dict(s.a, **(over or {}))
    if s.cmd == "join":
        out = ["join", a["phone"], "--region", a["region"], "--method", a["method"],
               "--customer-since", a["customer_since"]]
        for k, opt in (("email", "--email"), ("birth_date", "--birth-date"), ("referrer", "--referrer"),
                       ("services", "--services")):
            if a.get(k):
                out += [opt, a[k]]
        return out
    if s.cmd == "earn":
        return ["earn", a["phone"], a["amount"], "--category", a["category"]] + (
            ["--ref", a["ref"]] if a.get("ref") else []) + (["--dry-run"] if a.get("dry_run") else [])
    if s.cmd == "refund":
        return ["refund", a["phone"], a["ref"]] + (["--amount", a["amount"]] if a.get("amount") else []) + (
            ["--ref", a["refund_ref"]] if a.get("refund_ref") else [])
    if s.cmd == "adjust":
        return ["adjust", a["phone"], str(a["points"]), "--reason", a["reason"]] + (
            ["--ref", a["ref"]] if a.get("ref") else []) + (
            ["--expires-on", a["expires_on"]] if a.get("expires_on") else [])
    if s.cmd == "redeem":
        out = ["redeem", a["phone"], a["code"], "--via", a["via"]]
        if a.get("price"):
            out += ["--price", a["price"]]
        if a.get("points") is not None:
            out += ["--points", str(a["points"])]
        return out
    if s.cmd == "gift":
        return ["gift", a["from"], a["to"], str(a["points"])]
    if s.cmd == "accept":
        gid = gift_ids.get(a["gift"]) or f"gnone{a['gift']}"  # a gift that was refused: never offered
        return ["accept", a["phone"], gid] + (["--reject"] if a.get("reject") else [])
    if s.cmd == "leave":
        return ["leave", a["phone"], "--yes"]
    raise AssertionError(s)


def tear(data: Path, phone: str) -> None:
    """An append cut short by a crash: a final line without its newline (CLI.md §3)."""
    path = data / "ledgers" / f"{phone}.jsonl"
    with open(path, "ab") as f:
        f.write(b'{"v":2,"id":"' + phone.encode() + b'.99","type":"ea')


def run_singles(steps, data: Path, catalog=CATALOG) -> tuple:
    """(a): every step as one command. (outcomes by step index, gift ids by gift step index)."""
    outcomes, gift_ids = {}, {}
    for s in steps:
        if s.cmd == "torn":
            tear(data, s.a["phone"])
            continue
        r = bonus(argv(s, gift_ids), data, catalog, fmt(s.at))
        outcomes[s.i] = r
        if s.cmd == "gift" and r.code == 0:
            gift_ids[s.i] = r.doc["gift_id"]
    return outcomes, gift_ids


def batch_rows(group) -> tuple:
    """The rows of one batch file (one kind), as dicts; the optional keys only when given."""
    kind = group[0].cmd
    rows = []
    for s in group:
        a = s.a
        if kind == "earn":
            row = {"phone": a["phone"], "amount": a["amount"], "category": a["category"], "ref": a["ref"]}
        elif kind == "refund":
            row = {"phone": a["phone"], "ref": a["ref"]}
            if a.get("amount"):
                row["amount"] = a["amount"]
            if a.get("refund_ref"):
                row["refund_ref"] = a["refund_ref"]
        else:
            row = {"phone": a["phone"], "points": a["points"], "reason": a["reason"], "ref": a["ref"]}
            if a.get("expires_on"):
                row["expires_on"] = a["expires_on"]
        row["at"] = fmt(s.at)
        rows.append(row)
    return kind, rows


COLUMNS = {"earn": ["phone", "amount", "category", "ref", "at"],
           "refund": ["phone", "ref", "amount", "refund_ref", "at"],
           "adjust": ["phone", "points", "reason", "ref", "expires_on", "at"]}


def run_batch_file(group, data: Path, n: int, as_csv: bool, jobs: int) -> dict:
    """One batch file of a run of steps; {step index: exit code of its row}, and the summary."""
    kind, rows = batch_rows(group)
    path = data.parent / f"{data.name}-batch-{n}.{'csv' if as_csv else 'jsonl'}"
    if as_csv:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(COLUMNS[kind])
        for row in rows:
            w.writerow([row.get(c, "") for c in COLUMNS[kind]])
        path.write_text(buf.getvalue(), encoding="utf-8")
        first = 2  # the header is line 1
    else:
        path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
        first = 1
    r = bonus([kind, "--from", path, "--jobs", jobs], data, CATALOG, fmt(group[-1].at))
    summary = r.doc
    assert summary is not None and summary["rows"] == len(rows), (kind, r)
    codes = {s.i: 0 for s in group}
    for p in summary["problems"]:
        codes[group[p["line"] - first].i] = p["code"]
    worst = max(codes.values())
    assert r.code == (3 if worst == 3 else 2 if worst == 2 else 1 if worst == 1 else 0), (r, codes)
    return {"codes": codes, "summary": summary}


def run_batched(steps, data: Path, seed: int) -> tuple:
    """(b): runs of consecutive batchable steps of one kind as batch files, the rest single commands."""
    outcomes, gift_ids, summaries = {}, {}, []
    group: list = []
    rnd = random.Random(1000 + seed)

    def flush():
        if group:
            res = run_batch_file(list(group), data, len(summaries), rnd.random() < 0.5, rnd.choice([1, 2]))
            summaries.append((list(group), res["summary"]))
            for i, code in res["codes"].items():
                outcomes[i] = Res(code, None, None)
            group.clear()

    for s in steps:
        if batchable(s):
            if group and group[0].cmd != s.cmd:
                flush()
            group.append(s)
            continue
        flush()
        if s.cmd == "torn":
            tear(data, s.a["phone"])
            continue
        r = bonus(argv(s, gift_ids), data, CATALOG, fmt(s.at))
        outcomes[s.i] = r
        if s.cmd == "gift" and r.code == 0:
            gift_ids[s.i] = r.doc["gift_id"]
    flush()
    return outcomes, gift_ids, summaries


# ---------------------------------------------------------------- the oracle


def ym_of(day: dt.date) -> int:
    return day.year * 12 + day.month - 1


class Oracle:
    """An earn's points from the catalog YAML alone (RULES.md §3), following the applied requests."""

    def __init__(self, raw: dict):
        self.raw = raw
        self.since: dict = {}  # phone -> customer_since of the current membership
        self.spend: dict = defaultdict(Fraction)  # (phone, category, ym) -> applied roubles less refunds
        self.earns: dict = {}  # (phone, ref) -> (category, ym)
        self.card_welcome_given: set = set()

    def coefficient(self, since: dt.date, on: dt.date) -> Fraction:
        for step in self.raw["earning"]["tenure"]:
            if step["up_to_months"] is None or on <= add_months(since, step["up_to_months"]):
                return Fraction(step["coefficient"])
        raise AssertionError("the tenure table has an open last step")

    def expect(self, phone: str, amount: str, category: str, at: dt.datetime) -> dict:
        e = self.raw["earning"]
        c = e["categories"][category]
        day = at.date()
        since = dt.date.fromisoformat(self.since[phone])
        coef = self.coefficient(since, day) if c.get("tenure") else Fraction(1)
        if c.get("tiered"):
            last = self.spend[(phone, category, ym_of(day) - 1)]
            rpp = next(t["rub_per_point"] for t in e["card_tiers"]
                       if t["up_to_rub"] is None or last <= Fraction(t["up_to_rub"]))
        else:
            rpp = c["rub_per_point"]
        points = (Fraction(amount) * coef / rpp).__floor__()
        bonuses = []
        cw = self.raw["bonuses"]["card_welcome"]
        if category == cw["category"] and phone not in self.card_welcome_given and cw["points"] > 0:
            before = self.spend[(phone, category, ym_of(day))]
            if before < Fraction(cw["threshold_rub"]) <= before + Fraction(amount):
                bonuses.append({"reason": "card_welcome", "points": cw["points"]})
        return {"points": points, "coefficient": coef, "rub_per_point": rpp, "bonuses": bonuses}

    def check(self, phone, amount, category, at, doc, where) -> None:
        want = self.expect(phone, amount, category, at)
        got = {"points": doc["points"], "coefficient": Fraction(doc["coefficient"]),
               "rub_per_point": doc["rub_per_point"], "bonuses": doc["bonuses"]}
        assert got == want, (f"{where}: earn {phone} {amount} --category {category} at {fmt(at)} "
                             f"(customer since {self.since[phone]}): oracle {want}, got {got}")

    def joined(self, phone, since: str) -> None:
        self.since[phone] = since

    def applied_earn(self, phone, amount, category, ref, at, bonuses) -> None:
        key = (phone, category, ym_of(at.date()))
        self.spend[key] += Fraction(amount)
        if ref:
            self.earns[(phone, ref)] = key
        if any(b["reason"] == "card_welcome" for b in bonuses):
            self.card_welcome_given.add(phone)

    def applied_refund(self, phone, earn_ref, amount) -> None:
        self.spend[self.earns[(phone, earn_ref)]] -= Fraction(amount)


def check_oracle(steps, outcomes, raw, where) -> Oracle:
    """Every applied (and dry-run) earn of a run of single commands against the oracle."""
    o = Oracle(raw)
    for s in steps:
        r = outcomes.get(s.i)
        if r is None:
            continue
        a = s.a
        if s.cmd == "join" and r.code == 0:
            o.joined(a["phone"], r.doc["customer_since"])
        elif s.cmd == "earn":
            if a["category"] in raw["earning"].get("ineligible", {}):  # refused, unless a repeated ref
                assert r.code != 0 or r.doc["duplicate"], (where, s, r)
            if r.code == 0 and not r.doc["duplicate"]:
                o.check(a["phone"], a["amount"], a["category"], s.at, r.doc, where)
                if not a.get("dry_run"):
                    o.applied_earn(a["phone"], a["amount"], a["category"], a.get("ref"), s.at, r.doc["bonuses"])
        elif s.cmd == "refund" and r.code == 0 and not r.doc["duplicate"]:
            o.applied_refund(a["phone"], a["ref"], r.doc["amount"])
    return o


# ---------------------------------------------------------------- reading a data directory


def phones_of(steps) -> list:
    return sorted({s.a["phone"] for s in steps if s.cmd == "join"})


def reads(steps, data: Path, catalog=CATALOG) -> dict:
    at = fmt(end_of(steps))
    out = {}
    for p in phones_of(steps):
        out[p] = {"balance": bonus(["balance", p], data, catalog, at),
                  "history": bonus(["history", p], data, catalog, at),
                  "forecast": bonus(["forecast", p, "--days", "400"], data, catalog, at)}
    out["report"] = bonus(["report"], data, catalog, at)
    return out


def ledger_lines(data: Path) -> dict:
    """file name -> its lines as parsed JSON without `prev` (a torn line sealed by a `repair` as
    {"torn": text})."""
    out = {}
    for path in sorted((data / "ledgers").glob("*.jsonl")):
        lines = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                lines.append({k: v for k, v in json.loads(line).items() if k != "prev"})
            except ValueError:
                lines.append({"type": None, "torn": line})
        out[path.name] = lines
    return out


def translate(value, ids: dict):
    """Replace (b)'s gift ids with (a)'s, wherever they appear (ids, texts)."""
    text = json.dumps(value, sort_keys=True)
    for theirs, ours in ids.items():
        text = text.replace(theirs, ours)
    return json.loads(text)


def first_difference(a, b):
    """The first rows that differ between two lists (or the two values), for a readable failure."""
    if isinstance(a, list) and isinstance(b, list):
        for n, (x, y) in enumerate(zip(a, b)):
            if x != y:
                return {"row": n, "a": x, "b": y, "a next": a[n + 1: n + 2], "b next": b[n + 1: n + 2]}
        return {"lengths": (len(a), len(b))}
    return {"a": a, "b": b}


def figures_of(read: dict) -> tuple:
    """(available, earned, spent, debt) of one member from its balance and history (docs/ci.md:
    `earned` is every credit from spending, welcome and referral bonuses and adjustments (the
    operators' credits; a debit is not a negative credit), `spent` the points paid for rewards,
    `debt` what refunds left owing)."""
    b, h = read["balance"].doc, read["history"].doc
    earned = sum(r["earned"] for r in h) + sum(r["adjusted"] for r in h if r["adjusted"] > 0)
    spent = sum(r["redeemed"] for r in h)
    return b["available"], earned, spent, b["debt"]


# ---------------------------------------------------------------- (c) the scenario file

IDS = ("id", "event", "gift_id", "lot", "voucher", "referral_id")


def strip(value):
    """Leave out what counts ledger lines (ids) and texts naming a gift id: see the docstring."""
    if isinstance(value, dict):
        out = {k: strip(v) for k, v in value.items() if k not in IDS}
        if value.get("gift_id") and isinstance(out.get("detail"), str):
            del out["detail"]
        return out
    if isinstance(value, list):
        return [strip(v) for v in value]
    return value


def scenario_of(steps, outcomes, oracle_points: dict, final: dict, seed: int) -> dict:
    doc_steps = []
    for s in steps:
        if s.cmd == "torn":
            continue
        r = outcomes[s.i]
        a = s.a
        if s.cmd == "gift":
            body = {"from": a["from"], "to": a["to"], "points": a["points"]}
        elif s.cmd == "accept":
            # the label of the gift step, or, when that gift was refused, the id (a) named
            gift = f"gift-{a['gift']}" if outcomes[a["gift"]].code == 0 else argv(s, {})[2]
            body = {"phone": a["phone"], "gift": gift} | ({"reject": True} if a.get("reject") else {})
        elif s.cmd == "leave":
            body = {"phone": a["phone"]}
        elif s.cmd == "redeem":
            body = {k: a[k] for k in ("phone", "code", "via", "price", "points") if a.get(k) is not None}
        elif s.cmd == "earn":
            body = {k: a[k] for k in ("phone", "amount", "category", "ref") if a.get(k) is not None}
            if a.get("dry_run"):
                body["dry_run"] = True
        else:
            body = dict(a)
        if s.cmd == "join" and "services" in body:
            body["services"] = body["services"].split(",")
        step = {"at": fmt(s.at), s.cmd: body}
        if s.cmd == "gift":
            step["as"] = f"gift-{s.i}"
        if r.code == 0:
            expect = {"exit": 0}
            expect.update(strip(r.doc))
            if s.i in oracle_points:  # the oracle's own figure, not (a)'s
                expect["points"] = oracle_points[s.i]
        else:
            expect = {"exit": r.code, "error_kind": r.err["kind"]}
        step["expect"] = expect
        doc_steps.append(step)
    at = fmt(end_of(steps))
    for p in phones_of(steps):
        for what in ("balance", "forecast", "history"):
            got = final[p][what]
            if what == "forecast":
                step = {"at": at, "forecast": {"phone": p, "days": 400}}
            else:
                step = {"at": at, what: p}
            if got.code != 0:
                step["expect"] = {"exit": got.code, "error_kind": got.err["kind"]}
            elif what == "history":
                rows = strip(got.doc)
                step["expect"] = {"length": len(rows)} | {str(n): row for n, row in enumerate(rows)}
            else:
                step["expect"] = strip(got.doc)
            doc_steps.append(step)
    return {"name": f"one path, history {seed}", "steps": doc_steps}


# ---------------------------------------------------------------- NEW catalogs


NEW_KINDS = ("rates", "tenure", "prices", "bonuses", "limits", "everything")


def new_catalog(kind: str, seed: int) -> dict:
    """A copy of the catalog with changed numbers of one kind (or all of them)."""
    rnd = random.Random(f"{kind}/{seed}")
    doc = copy.deepcopy(RAW)
    e = doc["earning"]
    every = kind == "everything"
    if kind == "rates" or every:
        for c in e["categories"].values():
            if not c.get("tiered") and rnd.random() < 0.7:
                c["rub_per_point"] = rnd.choice([1, 2, 3, 4, 6, 7, 10])
        e["card_tiers"] = [{"up_to_rub": "2000.00", "rub_per_point": rnd.choice([25, 40])},
                           {"up_to_rub": "16000.00", "rub_per_point": rnd.choice([12, 15])},
                           {"up_to_rub": None, "rub_per_point": rnd.choice([3, 7])}]
        if "home_tv" in e["categories"]:
            e["categories"]["home_tv"]["rub_per_point"] = rnd.choice([2, 3])  # always changed
    if kind == "tenure" or every:
        e["tenure"] = [{"up_to_months": rnd.choice([2, 3]), "coefficient": "1.0"},
                       {"up_to_months": rnd.choice([9, 11]), "coefficient": rnd.choice(["1.05", "1.15"])},
                       {"up_to_months": rnd.choice([18, 30]), "coefficient": rnd.choice(["1.25", "1.33"])},
                       {"up_to_months": None, "coefficient": rnd.choice(["1.5", "1.75"])}]
    if kind == "prices" or every:
        for r in doc["rewards"]:
            if r["price"] is not None and rnd.random() < 0.6:
                r["price"] = max(1, int(r["price"] * rnd.choice([0.5, 0.8, 1.25, 2, 3])))
            if r.get("region_prices"):
                r["region_prices"] = {k: max(1, v + rnd.choice([-50, 0, 40, 400]))
                                      for k, v in r["region_prices"].items()}
        doc["store_discount"]["points_per_rub"] = rnd.choice([5, 20])
        doc["store_discount"]["max_share"] = rnd.choice(["0.5", "0.9"])
    if kind == "bonuses" or every:
        b = doc["bonuses"]
        b["welcome"] = rnd.choice([0, 100, 200])
        b["web_form"] = rnd.choice([50, 300])
        b["web_profile"] = rnd.choice([0, 25])
        b["referral"] = rnd.choice([10, 500])
        b["card_welcome"] = {"points": rnd.choice([300, 2000]), "threshold_rub": rnd.choice(["1000.00", "9000.00"]),
                             "category": "card"}
    if kind == "limits" or every:
        g = doc["gifts"]
        g["per_day"] = rnd.choice([1, 3])
        g["per_month_points"] = rnd.choice([100, 250])
        g["min_points"] = rnd.choice([1, 10, 50])
        doc["reward_categories"]["certificate"]["limits"] = [{"per": rnd.choice(["year", "ever"]), "max": 1}]
        for r in doc["rewards"]:
            if r["code"] in ("minutes_30", "black_list", "mms_10"):
                r["limits"] = [{"per": rnd.choice(["day", "month"]), "max": 1}]
        doc["program"]["amount_max"] = rnd.choice(["20000.00", "30000.00"])
    return doc


def write_catalog(doc: dict, path: Path) -> Path:
    path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), encoding="utf-8")
    r = bonus(["check"], None, path)
    assert r.code == 0, ("NEW catalog invalid", r)
    return path


# ---------------------------------------------------------------- fixtures: (a) run once per history


class World(NamedTuple):
    seed: int
    steps: list
    data: Path  # (a)
    outcomes: dict
    gift_ids: dict
    final: dict  # reads(a)
    oracle_points: dict  # step index -> points the oracle gives to (a)'s applied earns


@pytest.fixture(scope="module")
def scratch():
    root = Path(tempfile.mkdtemp(prefix="one-path-", dir=scratch_root()))
    yield root
    shutil.rmtree(root, ignore_errors=True)


_WORLDS: dict = {}


def world(seed: int, scratch: Path) -> World:
    if seed not in _WORLDS:
        steps = HISTORIES[seed]
        data = scratch / f"a{seed}"
        outcomes, gift_ids = run_singles(steps, data)
        o = Oracle(RAW)
        points = {}
        for s in steps:  # the oracle's figure for each earn (checked against (a) in test_paths_agree)
            r = outcomes.get(s.i)
            if r is None:
                continue
            if s.cmd == "join" and r.code == 0:
                o.joined(s.a["phone"], r.doc["customer_since"])
            elif s.cmd == "earn" and r.code == 0 and not r.doc["duplicate"]:
                want = o.expect(s.a["phone"], s.a["amount"], s.a["category"], s.at)
                points[s.i] = want["points"]
                if not s.a.get("dry_run"):
                    o.applied_earn(s.a["phone"], s.a["amount"], s.a["category"], s.a.get("ref"), s.at,
                                   r.doc["bonuses"])
            elif s.cmd == "refund" and r.code == 0 and not r.doc["duplicate"]:
                o.applied_refund(s.a["phone"], s.a["ref"], r.doc["amount"])
        _WORLDS[seed] = World(seed, steps, data, outcomes, gift_ids, reads(steps, data), points)
    return _WORLDS[seed]


# ---------------------------------------------------------------- 1. coverage


def test_histories_cover_the_catalog(scratch):
    seen = defaultdict(set)
    for seed in SEEDS:
        w = world(seed, scratch)
        for s in w.steps:
            if s.cmd == "earn":
                seen["category"].add(s.a["category"])
            elif s.cmd == "redeem":
                seen["reward"].add(s.a["code"])
            elif s.cmd == "join":
                seen["method"].add(s.a["method"])
        for lines in ledger_lines(w.data).values():
            seen["type"] |= {e["type"] for e in lines if e["type"]}
            seen["ordered"] |= {e["code"] for e in lines if e["type"] == "redeem"}
            seen["earned in"] |= {e["category"] for e in lines if e["type"] == "earn"}
            seen["joined by"] |= {e["method"] for e in lines if e["type"] == "join"}
    assert set(LISTS.earning + LISTS.ineligible) <= seen["category"]
    assert set(LISTS.rewards) <= seen["reward"]
    assert set(LISTS.methods) <= seen["method"]
    assert set(LISTS.event_types) <= seen["type"], set(LISTS.event_types) - seen["type"]
    # and they did happen, not just were asked for: every earning category earned, every join
    # method joined, nearly every reward ordered (a few refusals by limits are part of the story)
    assert set(LISTS.earning) <= seen["earned in"], set(LISTS.earning) - seen["earned in"]
    assert set(LISTS.methods) <= seen["joined by"]
    missing = set(LISTS.rewards) - seen["ordered"]
    assert len(missing) <= len(LISTS.rewards) // 10, missing


# ---------------------------------------------------------------- 2. single = batch = scenario = oracle


@pytest.mark.parametrize("seed", SEEDS)
def test_paths_agree(seed, scratch, monkeypatch):
    w = world(seed, scratch)
    steps = w.steps

    # the oracle against every earn --json of (a)
    check_oracle(steps, w.outcomes, RAW, f"history {seed} (a) earn --json")

    # (b) batch files. First everything but the ids that count ledger lines (see below), so that
    # a difference of figures shows as such; the ledger lines themselves are compared last.
    data_b = scratch / f"b{seed}"
    out_b, gifts_b, summaries = run_batched(steps, data_b, seed)
    ids = {gifts_b[i]: gid for i, gid in w.gift_ids.items() if i in gifts_b}
    # first the earn lines (b) wrote, against the oracle (one figure per applied earn, by reference)
    by_ref = {(s.a["phone"], s.a["ref"]): w.oracle_points[s.i] for s in steps
              if s.i in w.oracle_points and s.a.get("ref") and not s.a.get("dry_run")}
    written = {(name[:-6], e["ref"]): e["points"] for name, lines in ledger_lines(data_b).items()
               for e in lines if e["type"] == "earn" and e.get("ref")}
    assert written == by_ref, (f"history {seed}: earn lines of the batch files, (phone, ref): (oracle, written)",
                               {k: (by_ref.get(k), written.get(k)) for k in sorted(set(by_ref) | set(written))
                                if by_ref.get(k) != written.get(k)})

    for s in steps:
        if s.cmd == "torn":
            continue
        ra, rb = w.outcomes[s.i], out_b[s.i]
        assert ra.code == rb.code, (f"history {seed} step {s.i} {fmt(s.at)}", argv(s, w.gift_ids), ra, rb)
        if rb.doc is not None:  # a single command in (b) too
            assert strip(translate(rb.doc, ids)) == strip(ra.doc), (s, ra.doc, rb.doc)
    assert any(len(g) > 1 for g, _ in summaries)  # batch files of several rows, several members
    for group, summary in summaries:
        a_docs = [w.outcomes[s.i] for s in group]
        assert summary["applied"] == sum(1 for r in a_docs if r.code == 0 and not r.doc.get("duplicate"))
        assert summary["duplicates"] == sum(1 for r in a_docs if r.code == 0 and r.doc.get("duplicate"))
        assert summary["refused"] == sum(1 for r in a_docs if r.code == 1)
        assert summary["errors"] == sum(1 for r in a_docs if r.code in (2, 3))
    final_b = reads(steps, data_b)
    for p in phones_of(steps):
        for what in ("balance", "history", "forecast"):
            ra, rb = w.final[p][what], final_b[p][what]
            assert (ra.code, strip(ra.doc)) == (rb.code, strip(translate(rb.doc, ids))), \
                (f"history {seed}: {what} {p}", first_difference(ra.doc, translate(rb.doc, ids)))
    assert w.final["report"] == final_b["report"]
    for d in (w.data, data_b):
        r = bonus(["check", "--ledgers"], d, CATALOG, fmt(end_of(steps)))
        assert r.code == 0, r

    # (c) the scenario file: (a)'s exit codes and documents, the oracle's points
    sc = scenario_of(steps, w.outcomes, w.oracle_points, w.final, seed)
    path = scratch / f"scenario-{seed}.yaml"
    path.write_text(yaml.safe_dump(sc, sort_keys=False, allow_unicode=True), encoding="utf-8")
    if seed == SEEDS[0]:  # once as a real process
        p = sub(["--catalog", CATALOG, "check", "--scenario", path, "--json"])
        assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-2000:]
        doc = json.loads(p.stdout)
    else:
        r = bonus(["check", "--scenario", path], None, CATALOG)
        doc = r.doc
        assert doc is not None, r
    res = doc["scenarios"][0]
    assert res["result"] == "pass" and res["passed"] == res["steps"] == len(sc["steps"]), \
        json.dumps(res["failures"][:8] + res["problems"][:8], indent=1)

    # (b)'s directory, diffed against itself on the parallel path: nothing changes
    with monkeypatch.context() as mp:
        assert_no_change(impact(CATALOG, CATALOG, data_b, fmt(end_of(steps)), 2, mp, parallel=True),
                         f"history {seed}: diff OLD OLD on (b)")

    # last, (a) and (b) wrote the same lines: the same events, and so the same ids (`<phone>.<n>`,
    # lots, vouchers, gift ids, which count the lines before them) in every document
    la, lb = ledger_lines(w.data), translate(ledger_lines(data_b), ids)
    assert la.keys() == lb.keys()
    for name in la:
        assert la[name] == lb[name], (f"history {seed}: ledger {name}: single commands (a) and batch files (b) "
                                      "wrote different lines", first_difference(la[name], lb[name]))
    for p in phones_of(steps):
        for what in ("balance", "history", "forecast"):
            ra, rb = w.final[p][what], final_b[p][what]
            assert ra.doc == translate(rb.doc, ids), (f"history {seed}: {what} {p}",
                                                      first_difference(ra.doc, translate(rb.doc, ids)))


# ---------------------------------------------------------------- 3. diff OLD OLD: no change


def impact(old, new, data, at, jobs, mp=None, parallel=False, grouped=False) -> dict:
    """`diff OLD NEW --ledgers --jobs N` in-process; `parallel` forces the data-directory pool on a
    small directory (each linked group its own task), `grouped` the request-grouped pool."""
    from bonuscli import diff as diff_mod
    from bonuscli import simulate as sim_mod
    from bonuscli import workers as workers_mod

    if mp is not None:
        for mod, name, value, on in ((diff_mod, "PARALLEL_FROM", 2, parallel),
                                     (workers_mod, "MIN_CHUNK", 1, parallel),
                                     (sim_mod, "SERIAL_BELOW", 0, grouped)):
            if on:
                assert hasattr(mod, name), f"{mod.__name__}.{name} is gone: update this test's forcing"
                mp.setattr(mod, name, value)
    r = bonus(["diff", old, new, "--ledgers", "--jobs", jobs], data, CATALOG, at)
    assert r.code == 0, r
    return r.doc


def diff_docs(a: dict, b: dict):
    """Where two diff documents differ: the first member row, or the outcome changes."""
    ia, ib = a["impact"], b["impact"]
    if ia["members"] != ib["members"]:
        return first_difference(ia["members"], ib["members"])
    return {k: (ia[k], ib[k]) for k in ia if ia[k] != ib.get(k)}


def assert_no_change(doc: dict, where: str) -> None:
    imp = doc["impact"]
    assert doc["changes"] == [], where
    for m in imp["members"]:
        assert m["change"] == 0, (where, m)
        for k in ("available", "earned", "spent", "debt"):
            assert m[f"{k}_old"] == m[f"{k}_new"], (where, m)
    assert imp["outcome_changes"] == [] and imp["no_longer_affordable"] == [], (where, imp["outcome_changes"][:5])


def recorded(w: World) -> list:
    """The steps of (a) that its ledgers record as requests (diff replays only those)."""
    out = []
    for s in w.steps:
        r = w.outcomes.get(s.i)
        if r is None or r.code != 0 or s.cmd == "torn":
            continue
        if s.cmd in ("earn", "refund", "adjust") and r.doc.get("duplicate"):
            continue
        if s.cmd == "earn" and s.a.get("dry_run"):
            continue
        out.append(s)
    return out


@pytest.mark.parametrize("seed", SEEDS)
def test_diff_same_catalog_changes_nothing(seed, scratch, monkeypatch):
    w = world(seed, scratch)
    at = fmt(end_of(w.steps))
    docs = []
    for jobs, parallel in ((1, False), (2, True)):
        with monkeypatch.context() as mp:
            doc = impact(CATALOG, CATALOG, w.data, at, jobs, mp, parallel=parallel, grouped=not parallel)
        assert_no_change(doc, f"history {seed}: diff OLD OLD --jobs {jobs}")
        docs.append(doc)
    assert docs[0] == docs[1], (f"history {seed}: diff OLD OLD --jobs 1 and --jobs 2 differ",
                                diff_docs(docs[0], docs[1]))
    imp = docs[0]["impact"]
    assert [m["phone"] for m in imp["members"]] == phones_of(w.steps)
    assert imp["requests"] == len(recorded(w))
    for m in imp["members"]:  # the replay is what the commands printed
        want = figures_of(w.final[m["phone"]])
        got = (m["available_old"], m["earned_old"], m["spent_old"], m["debt_old"])
        assert got == want, (f"history {seed}: {m['phone']} diff (available, earned, spent, debt) vs balance+history",
                             got, want)


# ---------------------------------------------------------------- 4. diff OLD NEW = the replay under NEW


def replay(w: World, catalog: Path, data: Path) -> dict:
    """The recorded requests of (a) as single commands under `catalog`: the roubles a refund
    refunded and the points a store discount used, as recorded (docs/ci.md); an accept names the
    gift this replay's own `gift` made (or, when that gift was refused, an id never offered)."""
    outcomes, gift_ids = {}, {}
    for s in recorded(w):
        over = {}
        ra = w.outcomes[s.i]
        if s.cmd == "refund":
            over["amount"] = ra.doc["amount"]
        if s.cmd == "redeem" and s.a.get("price"):
            over["points"] = ra.doc["points_spent"]
        if s.cmd == "accept" and s.a["gift"] not in gift_ids:
            over["gift"] = -1
            gift_ids[-1] = w.gift_ids[s.a["gift"]]  # the id recorded under OLD: not offered here
        r = bonus(argv(s, gift_ids, over), data, catalog, fmt(s.at))
        outcomes[s.i] = r
        if s.cmd == "gift" and r.code == 0:
            gift_ids[s.i] = r.doc["gift_id"]
    return outcomes


# every kind of NEW once, and two histories under a second one
CASES = [(seed, NEW_KINDS[seed % len(NEW_KINDS)]) for seed in SEEDS] + [(0, "limits"), (3, "everything")]


@pytest.mark.parametrize("seed,kind", CASES)
def test_diff_new_catalog_equals_replay(seed, kind, scratch, monkeypatch):
    w = world(seed, scratch)
    raw_new = new_catalog(kind, seed)
    new = write_catalog(raw_new, scratch / f"new-{seed}-{kind}.yaml")
    at = fmt(end_of(w.steps))
    # the recorded requests replayed under NEW, one command each
    data_n = scratch / f"n{seed}-{kind}"
    out_n = replay(w, new, data_n)
    final_n = reads(w.steps, data_n, new)
    check_oracle(w.steps, out_n, raw_new, f"history {seed} under NEW ({kind}) earn --json")

    docs = []
    variants = [(2, True, False)] + ([(1, False, False), (2, False, True)] if kind in ("limits", "everything") else [])
    for jobs, parallel, grouped in variants:
        with monkeypatch.context() as mp:
            docs.append(impact(CATALOG, new, w.data, at, jobs, mp, parallel, grouped))
    for d, (jobs, parallel, grouped) in zip(docs[1:], variants[1:]):
        assert d == docs[0], (f"history {seed} ({kind}): diff --jobs {jobs} (grouped {grouped}) gives another "
                              "document than --jobs 2 on the directory path", diff_docs(d, docs[0]))
    doc = docs[0]
    assert doc["changes"], kind
    imp = doc["impact"]
    where = f"history {seed}, NEW = {kind}"

    rec = recorded(w)
    assert imp["requests"] == len(rec), where
    phones = phones_of(w.steps)
    assert [m["phone"] for m in imp["members"]] == phones
    # the earns the NEW replay applied, by member: the oracle's points under NEW
    o = Oracle(raw_new)
    oracle_earned = defaultdict(int)
    for s in rec:
        r = out_n[s.i]
        if s.cmd == "join" and r.code == 0:
            o.joined(s.a["phone"], r.doc["customer_since"])
        elif s.cmd == "earn" and r.code == 0 and not r.doc["duplicate"]:
            oracle_earned[s.a["phone"]] += o.expect(s.a["phone"], s.a["amount"], s.a["category"], s.at)["points"]
            o.applied_earn(s.a["phone"], s.a["amount"], s.a["category"], s.a.get("ref"), s.at, r.doc["bonuses"])
        elif s.cmd == "refund" and r.code == 0 and not r.doc["duplicate"]:
            o.applied_refund(s.a["phone"], s.a["ref"], r.doc["amount"])
    for m in imp["members"]:
        p = m["phone"]
        old = figures_of(w.final[p])
        new_f = figures_of(final_n[p])
        assert (m["available_old"], m["earned_old"], m["spent_old"], m["debt_old"]) == old, (where, p, "old", m, old)
        assert (m["available_new"], m["earned_new"], m["spent_new"], m["debt_new"]) == new_f, \
            (where, p, "new: diff vs the commands under NEW (available, earned, spent, debt)", m, new_f)
        h = final_n[p]["history"].doc
        other_credits = sum(r["earned"] for r in h if r["type"] != "earn") + sum(
            r["adjusted"] for r in h if r["adjusted"] > 0)
        assert m["earned_new"] == oracle_earned[p] + other_credits, \
            (where, p, "earned_new vs the oracle's earns + the other credits", m["earned_new"], oracle_earned[p],
             other_credits)
        assert m["change"] == m["available_new"] - m["available_old"]
    for k in ("available_old", "available_new", "earned_old", "earned_new", "spent_old", "spent_new"):
        assert imp["total"][k] == sum(m[k] for m in imp["members"]), k
    want_changes = [{"phone": s.a.get("phone") or s.a.get("from"), "at": iso(s.at), "command": s.cmd,
                     "old": "ok", "new": out_n[s.i].err["kind"]} for s in rec if out_n[s.i].code != 0]
    got_changes = [{k: c[k] for k in ("phone", "at", "command", "old", "new")} for c in imp["outcome_changes"]]
    assert got_changes == want_changes, (where, got_changes, want_changes)
    want_unaff = [{"phone": s.a["phone"], "at": iso(s.at), "code": s.a["code"],
                   "points_old": w.outcomes[s.i].doc["points_spent"]} for s in rec
                  if s.cmd == "redeem" and out_n[s.i].code != 0 and out_n[s.i].err["kind"] == "insufficient-points"]
    assert [{k: u[k] for k in ("phone", "at", "code", "points_old")} for u in imp["no_longer_affordable"]] == want_unaff

    # the NEW replay's directory, diffed against itself: nothing changes
    with monkeypatch.context() as mp:
        assert_no_change(impact(new, new, data_n, at, 2, mp, parallel=True), f"{where}: diff NEW NEW")

    if (seed, kind) == CASES[0]:  # once as a real process, with the real (unpatched) thresholds
        p = sub(["--data-dir", w.data, "--at", at, "diff", CATALOG, new, "--ledgers", "--jobs", "2", "--json"])
        assert p.returncode == 0, p.stderr
        assert json.loads(p.stdout) == doc
    if (seed, kind) == CASES[-1] and importlib.util.find_spec("dask") is not None:  # once on Dask
        r = bonus(["diff", CATALOG, new, "--ledgers", "--engine", "dask"], w.data, CATALOG, at)
        assert r.code == 0 and r.doc == doc, (where, "diff --engine dask", r.err,
                                              first_difference(r.doc and r.doc["impact"]["members"],
                                                               doc["impact"]["members"]))


# ---------------------------------------------------------------- the seals a batch row writes


SEAL_CASES = {
    # A's gift to B is returned at its deadline (2024-02-10T10:00) between A's two batch rows: the
    # single `earn` of 02-12 first records the return (`gift_settle`, docs/ledger.md: written by "any
    # later change to the sender"), then its own line
    "due between two rows": (
        [["join", "9160000001", "--region", "RU-BRY", "@2024-01-10T10:00"],
         ["join", "9160000002", "--region", "RU-BRY", "@2024-01-10T11:00"],
         ["gift", "9160000001", "9160000002", "30", "@2024-01-11T10:00"]],
        [("9160000001", "100.00", "mobile", "e1", "2024-02-01T10:00"),
         ("9160000001", "100.00", "mobile", "e2", "2024-02-12T10:00")]),
    # the referral of B is due; A's first row is refused (writes nothing: "a refusal writes
    # nothing"), so the seal belongs to the second row's instant
    "first row refused": (
        [["join", "9160000001", "--region", "RU-BRY", "@2024-01-10T10:00"],
         ["join", "9160000002", "--region", "RU-BRY", "--referrer", "9160000001", "@2024-01-10T11:00"]],
        [("9160000001", "100.00", next(iter(LISTS.ineligible)), "e1", "2024-02-01T10:00"),
         ("9160000001", "100.00", "mobile", "e2", "2024-02-05T10:00")]),
}


@pytest.mark.parametrize("case", list(SEAL_CASES))
def test_batch_rows_write_what_single_commands_write(case, scratch):
    """The smallest histories of the difference test_paths_agree finds in some of its histories:
    the same earns, one by one or as one batch file, must write the same ledger lines."""
    setup, rows = SEAL_CASES[case]
    dirs = {k: scratch / f"seal-{k}-{list(SEAL_CASES).index(case)}" for k in ("single", "batch")}
    for data in dirs.values():
        for args in setup:
            ok(args[:-1], data, CATALOG, args[-1][1:])
    codes = [bonus(["earn", p, amount, "--category", c, "--ref", r], dirs["single"], CATALOG, at).code
             for p, amount, c, r, at in rows]
    path = scratch / f"seal-{list(SEAL_CASES).index(case)}.csv"
    path.write_text("phone,amount,category,ref,at\n" + "".join(",".join(r) + "\n" for r in rows), encoding="utf-8")
    summary = bonus(["earn", "--from", path, "--jobs", "1"], dirs["batch"], CATALOG, rows[-1][-1])
    assert summary.code == max(codes)
    single, batch = ledger_lines(dirs["single"]), ledger_lines(dirs["batch"])
    for name in single:
        assert single[name] == batch[name], (f"{case}: ledger {name}: single earns and `earn --from` wrote "
                                             "different lines", first_difference(single[name], batch[name]))
