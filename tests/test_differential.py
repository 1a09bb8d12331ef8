"""Differential tests: one generated history, applied three ways, must give exactly the same answers.

A history (hypothesis) is 2-4 members (phones 9160000001...) joining by sms, web, app, card or
wallet (card and wallet activate later), then earns with and without references in several
categories (card included), cheap redemptions, gifts and their accepts/rejects, refunds (by
reference, whole or partial), operator credits and debits, at strictly increasing instants over
14+ months (so points expire), often on month ends (23:59, 00:00) and on expiry dates (00:00 twelve
months after a credit, or the minute before). Some steps come in runs of one kind for one member,
and some are two corrections (debits or refunds) of one member on either side of the day one of
their lots expires, so that in (b) they share a batch file. It is applied:

(a) as single commands, `--at` each step's instant, with reads as of earlier (and current)
    instants interleaved between the writes;
(b) with every step a batch import can take (`earn --from` rows with a ref, `adjust --from` rows
    with a ref, `refund --from` rows, each row with its own `at`) written to batch files, the
    other steps as single commands; a batch is flushed before any later single command, so the
    global time order is kept (CLI.md: each row "decided as of its own at ... exactly as they
    would to single commands");
(c) as a scenario file (docs/ci.md) run by `check --scenario`: every step expects the exit code
    (a) saw, and the reads expect the documents (a) printed.

Then (a) and (b) must agree: per step exit codes; for every member `balance --json` (whole
document; gift ids translated, since an id is not part of the contract) and `forecast --json
--days 400`, and `report --json` (whole document), at the end and at earlier instants (read after
the end, and again at the end: an as-of read must not change a later answer); `check --ledgers`
exit 0; and all of it again after deleting <data-dir>/cache (CLI.md §3: deleting it changes no
answer). (a)'s interleaved reads must equal the same reads made at the end.

A second test gives the first member a burst of 420 small earns (a ledger long enough for whatever
the store keeps for long ledgers, docs/ledger.md "Checkpoints"), a read as of the middle of the burst
right after it, an earn repeating one of its references at the end, and an "earlier" instant in the
middle of the burst: as-of reads on a long ledger, followed by writes and later reads.

A third compares `report --engine dask` with the local engine on one history (dask installed only).

Settings are derandomized (the same examples every run), write no example database and do not
shrink (one example is hundreds of commands): a failure prints the history as command lines.
Runtime: about 40 s on 2 cores (20 + 2 + 1 examples) when a command takes ~2 ms in-process; it grows
with the cost of a command (BONUSCLI_DIFF_EXAMPLES sets the first test's number of examples).
"""

from __future__ import annotations

import calendar
import csv
import datetime as dt
import importlib.util
import io
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

PHONES = [f"916000000{i}" for i in range(1, 5)]
START = dt.datetime(2024, 1, 31, 10, 0)          # a month's end in a leap year
END_AT_LEAST = dt.datetime(2025, 5, 15, 12, 0)   # reads at the end: 15+ months after START
FMT = "%Y-%m-%dT%H:%M"
BULK = 420

AMOUNTS = ["0.01", "1.00", "9.99", "100.00", "333.33", "1000.00", "3000.00", "15000.00", "16500.50"]
CATEGORIES = ["mobile", "mobile", "taxi", "mts_store", "card", "card", "in_app", "home_internet", "utilities"]
REWARDS = ["minutes_30", "black_list", "black_list", "mms_10", "book_first"]
GIFT_POINTS = [1, 7, 30, 100, 150, 400, 3001]
ADJUST_POINTS = ["5", "50", "500", "-1", "-30", "-200", "-5000"]
REFUND_AMOUNTS = [None, None, "0.01", "10.00", "100.00", "333.33"]

# No shrinking: an example costs hundreds of commands, and shrinking one took over five minutes;
# a failure prints the history step by step instead (History.__repr__).
SETTINGS = dict(deadline=None, derandomize=True, database=None,
                phases=(Phase.explicit, Phase.reuse, Phase.generate),
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])


def fmt(t: dt.datetime) -> str:
    return t.strftime(FMT)


def add_months(day: dt.date, n: int) -> dt.date:
    y, m = divmod(day.month - 1 + n, 12)
    year, month = day.year + y, m + 1
    return dt.date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


# ---------------------------------------------------------------- generating a history


def next_time(draw, t: dt.datetime, gap: str, credits, mean_days: int) -> dt.datetime:
    """An instant after t: minutes, days or weeks later, a month's end or start, or the expiry
    instant (00:00 twelve months after) of an earlier credit coming up soon, or the minute before."""
    if gap == "expiry":
        horizon = t + dt.timedelta(days=2 * mean_days)
        targets = set()
        for c in credits:
            d = add_months(c, 12)
            x = dt.datetime(d.year, d.month, d.day)
            targets |= {y for y in (x, x - dt.timedelta(minutes=1)) if t < y <= horizon}
        if targets:
            return draw(st.sampled_from(sorted(targets)))
        gap = "long"
    if gap == "month_end":
        y, m = t.year, t.month
        h, mi = draw(st.sampled_from([(23, 59), (10, 0), (0, 0)]))
        x = dt.datetime(y, m, calendar.monthrange(y, m)[1], h, mi)
        if x <= t:
            y, m = (y + 1, 1) if m == 12 else (y, m + 1)
            x = dt.datetime(y, m, calendar.monthrange(y, m)[1], h, mi)
        return x
    if gap == "month_start":
        y, m = (t.year + 1, 1) if t.month == 12 else (t.year, t.month + 1)
        return dt.datetime(y, m, 1, 0, 0)
    day = 24 * 60
    minutes = {"small": (1, 180), "day": (day, 3 * day), "long": (mean_days * day // 2, 2 * mean_days * day)}[gap]
    return t + dt.timedelta(minutes=draw(st.integers(*minutes)))


def activation_day(method: str, day: dt.date) -> dt.date:
    """RULES.md §2: the local date a join by METHOD on DAY activates (and its welcome is credited)."""
    if method == "web":
        return day + dt.timedelta(days=2)
    if method == "wallet":
        return day + dt.timedelta(days=30)
    if method == "card":
        n = 0
        while n < 7:
            day += dt.timedelta(days=1)
            n += day.weekday() < 5
        return day
    return day


GAPS = ["small", "day", "long", "long", "long", "long", "month_end", "month_start", "expiry", "expiry"]
BURST_GAPS = ["small", "day", "expiry", "expiry"]
LAST = START + dt.timedelta(days=480)


class History(dict):
    """A generated history; printed as the commands it stands for."""

    def __repr__(self):
        return "\n" + describe(self) + "\n"


@st.composite
def histories(draw, bulk=False, max_actions=26):
    n = draw(st.integers(2, 4))
    phones = PHONES[:n]
    members = {}
    for i, p in enumerate(phones):
        region = "RU-MOW" if i < 2 else draw(st.sampled_from(["RU-MOW", "RU-MOW", "RU-SPE"]))
        method = "sms" if (bulk and i == 0) else draw(st.sampled_from(["sms", "web", "app", "card", "wallet"]))
        m = {"region": region, "method": method}
        since = draw(st.sampled_from([None, None, "2023-06-15", "2022-01-31"]))
        if since:
            m["customer_since"] = since
        if method == "web" and draw(st.booleans()):
            m["email"] = f"m{i}@example.ru"
            m["birth_date"] = "1990-05-17"
        members[p] = m

    steps = []
    t = START
    credits = []   # dates of credits (lots expire 12 months later)
    owned = {p: [] for p in phones}
    for p in phones:
        steps.append({"t": t, "kind": "join", "phone": p, **members[p]})
        active = activation_day(members[p]["method"], t.date())
        credits.append(active)
        owned[p].append(active)
        t += dt.timedelta(minutes=draw(st.integers(1, 3 * 24 * 60)))

    bulk_times = []
    if bulk:
        b0 = steps[0]["t"] + dt.timedelta(days=31)
        bulk_times = [b0 + dt.timedelta(minutes=90 * i) for i in range(BULK)]
    refs = {p: [] for p in phones}
    gifts = []  # (step index, from, to)
    counter = [0]

    def new(prefix):
        counter[0] += 1
        return f"{prefix}{counter[0]}"

    def burst_until(when):
        """The burst's earns (if any) that come before `when`; after the last one, a read of that
        member as of the middle of the burst (before the writes that follow)."""
        while bulk_times and bulk_times[0] < when:
            ref = f"bulk{BULK - len(bulk_times)}"
            refs[phones[0]].append(ref)
            at = bulk_times.pop(0)
            steps.append({"t": at, "kind": "earn", "phone": phones[0], "amount": "5.00", "category": "mobile",
                          "ref": ref, "bulk": True})
            if not bulk_times:
                steps.append({"t": at + dt.timedelta(minutes=1), "kind": "read", "phone": phones[0],
                              "read_at": at - dt.timedelta(minutes=90 * BULK // 2)})

    member = st.sampled_from(phones)
    kinds = (["earn"] * 7 + ["redeem"] * 2 + ["gift"] * 3 + ["accept"] * 3 + ["refund"] * 2 + ["adjust"] * 3
             + ["read"] * 2 + ["cross"])
    prev = None
    n_actions = draw(st.integers(10, max_actions))
    mean_days = max(5, 400 // n_actions)
    for n in range(n_actions + 1):
        burst = prev is not None and prev[0] in ("earn", "adjust", "refund", "redeem") and draw(st.integers(0, 2)) == 0
        if n == n_actions:   # the last step: 13+ months after the start, so expiry has happened
            if t >= START + dt.timedelta(days=400):
                break
            slot = START + dt.timedelta(days=draw(st.integers(400, 460)), minutes=draw(st.integers(0, 1439)))
        else:
            slot = next_time(draw, t, draw(st.sampled_from(BURST_GAPS if burst else GAPS)), credits, mean_days)
        if slot > LAST:
            break
        burst_until(slot)
        t = slot
        kind = prev[0] if burst else draw(st.sampled_from(kinds))
        if kind == "accept" and not gifts:
            kind = "read"
        p = prev[1] if burst else draw(member)
        if kind == "cross":
            # two corrections of one member on either side of the day one of their lots expires
            # (the second at that 00:00 or shortly after): in (b) both rows share one batch file
            ahead = sorted({add_months(c, 12) for c in owned[p]
                            if dt.datetime.combine(add_months(c, 12), dt.time()) > t + dt.timedelta(minutes=1)})
            if not ahead:
                kind = "adjust"
            else:
                e = draw(st.sampled_from(ahead[:3]))
                e = dt.datetime.combine(e, dt.time())
                before = max(t + dt.timedelta(minutes=1), e - dt.timedelta(minutes=draw(st.integers(1, 3 * 24 * 60))))
                after = e + dt.timedelta(minutes=draw(st.sampled_from([0, 1, 600, 2 * 24 * 60])))
                if after > LAST:
                    break
                use_refund = bool(refs[p]) and draw(st.booleans())
                for when, points in ((before, draw(st.sampled_from(ADJUST_POINTS))),
                                     (after, draw(st.sampled_from(["-1", "-30", "-200"])))):
                    burst_until(when)
                    if use_refund:
                        step = {"t": when, "kind": "refund", "phone": p, "ref": draw(st.sampled_from(refs[p])),
                                "amount": draw(st.sampled_from(REFUND_AMOUNTS))}
                    else:
                        step = {"t": when, "kind": "adjust", "phone": p, "points": points, "ref": new("a"),
                                "reason": "goodwill" if points[0] != "-" else "correction"}
                    steps.append(step)
                t = after
                prev = (steps[-1]["kind"], p)
                continue
        step = {"t": slot, "kind": kind}
        if kind == "earn":
            step.update(phone=p, amount=draw(st.sampled_from(AMOUNTS)), category=draw(st.sampled_from(CATEGORIES)))
            how = draw(st.sampled_from(["new", "new", "new", "none", "repeat"]))
            if how == "repeat" and refs[p]:
                step["ref"] = draw(st.sampled_from(refs[p]))
            elif how != "none":
                step["ref"] = new("e")
                refs[p].append(step["ref"])
            credits.append(slot.date())
            owned[p].append(slot.date())
        elif kind == "redeem":
            step.update(phone=p, code=draw(st.sampled_from(REWARDS)))
            via = draw(st.sampled_from([None, None, None, "sms", "app"]))
            if via:
                step["via"] = via
        elif kind == "gift":
            to = draw(st.sampled_from([x for x in phones if x != p] * 4 + [p]))
            step.update(frm=p, to=to, points=draw(st.sampled_from(GIFT_POINTS)))
            gifts.append((len(steps), p, to))
        elif kind == "accept":
            gi, frm, to = draw(st.sampled_from(gifts))
            step.update(gift=gi, phone=to if draw(st.integers(0, 9)) else p, reject=draw(st.integers(0, 3)) == 0)
        elif kind == "refund":
            step.update(phone=p, ref=draw(st.sampled_from(refs[p])) if refs[p] else "nx1",
                        amount=draw(st.sampled_from(REFUND_AMOUNTS)))
            if draw(st.sampled_from([None, "new", "new"])):
                step["refund_ref"] = new("f")
        elif kind == "adjust":
            points = draw(st.sampled_from(ADJUST_POINTS))
            step.update(phone=p, points=points, reason="goodwill" if points[0] != "-" else "correction")
            if draw(st.sampled_from(["new", "new", "new", "none"])) == "new":
                step["ref"] = new("a")
            if points[0] != "-":
                credits.append(slot.date())
                owned[p].append(slot.date())
                if draw(st.integers(0, 3)) == 0:
                    step["expires_on"] = (slot.date() + dt.timedelta(days=draw(st.integers(1, 60)))).isoformat()
        else:  # read: as of now or an earlier instant
            step.update(kind="read", phone=p)
            span = int((slot - START).total_seconds() // 60)
            back = draw(st.one_of(st.just(0), st.integers(0, span)))
            step["read_at"] = slot - dt.timedelta(minutes=back)
        steps.append(step)
        prev = (kind, p)
    if bulk:
        # what is left of the burst (when the steps stopped early), then two earns of that member at
        # the end: one repeating a reference of the burst (a duplicate), one new
        burst_until(dt.datetime.max)
        last = steps[-1]["t"] + dt.timedelta(days=1)
        steps.append({"t": last, "kind": "earn", "phone": phones[0], "amount": "100.00", "category": "mobile",
                      "ref": f"bulk{BULK - 7}"})
        steps.append({"t": last + dt.timedelta(minutes=1), "kind": "earn", "phone": phones[0], "amount": "100.00",
                      "category": "mobile", "ref": new("e")})

    times = [x["t"] for x in steps]
    writes = [x["t"] for x in steps if x["kind"] != "read"]
    assert times == sorted(times) and len(set(writes)) == len(writes), "the generator broke the time order"
    end = max(steps[-1]["t"] + dt.timedelta(days=1), END_AT_LEAST)
    span = int((end - START).total_seconds() // 60)
    earlier = [START + dt.timedelta(minutes=m) for m in draw(st.lists(st.integers(0, span), min_size=2, max_size=3))]
    if bulk:   # one of them in the middle of the burst
        earlier[0] = START + dt.timedelta(days=31, minutes=90 * BULK // 2 + draw(st.integers(-600, 600)))
    return History(phones=phones, steps=steps, end=end, earlier=earlier, bulk=bulk)


# ---------------------------------------------------------------- the three ways


def gift_label(index: int) -> str:
    return f"gift{index}"


def command(step, gift_ids) -> list:
    """The command line of a write step (without --data-dir, --at, --json)."""
    k = step["kind"]
    if k == "join":
        args = ["join", step["phone"], "--region", step["region"], "--method", step["method"]]
        for key, opt in (("customer_since", "--customer-since"), ("email", "--email"), ("birth_date", "--birth-date")):
            if step.get(key):
                args += [opt, step[key]]
        return args
    if k == "earn":
        return ["earn", step["phone"], step["amount"], "--category", step["category"]] + (
            ["--ref", step["ref"]] if step.get("ref") else [])
    if k == "redeem":
        return ["redeem", step["phone"], step["code"]] + (["--via", step["via"]] if step.get("via") else [])
    if k == "gift":
        return ["gift", step["frm"], step["to"], str(step["points"])]
    if k == "accept":
        gid = gift_ids.get(step["gift"]) or gift_label(step["gift"])
        return ["accept", step["phone"], gid] + (["--reject"] if step["reject"] else [])
    if k == "refund":
        args = ["refund", step["phone"], step["ref"]]
        if step.get("amount"):
            args += ["--amount", step["amount"]]
        if step.get("refund_ref"):
            args += ["--ref", step["refund_ref"]]
        return args
    if k == "adjust":
        args = ["adjust", step["phone"], step["points"], "--reason", step["reason"]]
        if step.get("ref"):
            args += ["--ref", step["ref"]]
        if step.get("expires_on"):
            args += ["--expires-on", step["expires_on"]]
        return args
    raise AssertionError(k)


class Dir:
    """One data directory driven through the CLI."""

    def __init__(self, run, path: Path):
        self.run = run
        self.path = path

    def __call__(self, *args, at):
        r = self.run("--data-dir", self.path, *args, "--at", at, "--json")
        assert r.exit_code in (0, 1, 2), (args, at, r.exit_code, r.stdout, r.stderr)
        assert "Traceback" not in r.stderr, r.stderr
        return r

    def doc(self, *args, at):
        r = self(*args, at=at)
        assert r.exit_code == 0, (args, at, r.exit_code, r.stdout, r.stderr)
        return json.loads(r.stdout)


def write(d: Dir, step, gift_ids) -> int:
    r = d(*command(step, gift_ids), at=fmt(step["t"]))
    if step["kind"] == "gift" and r.exit_code == 0:
        gift_ids[step["index"]] = json.loads(r.stdout)["gift_id"]
    return r.exit_code


def outcome(r):
    """(exit code, the JSON document printed, or the error's kind)."""
    if r.exit_code == 0:
        return 0, json.loads(r.stdout)
    for line in reversed(r.stderr.strip().splitlines()):
        if line.startswith("{"):
            return r.exit_code, json.loads(line)["error"]["kind"]
    raise AssertionError(f"no JSON error on stderr: {r.stderr!r}")


def reads(d: Dir, phone, at):
    return {"balance": outcome(d("balance", phone, at=at)),
            "forecast": outcome(d("forecast", phone, "--days", "400", at=at))}


def apply_single(d: Dir, history) -> tuple:
    """(a): every step a command; reads interleaved. Returns (exit codes, interleaved reads, gift ids)."""
    codes, seen, gift_ids = {}, [], {}
    for i, step in enumerate(history["steps"]):
        step["index"] = i
        if step["kind"] == "read":
            at = fmt(step["read_at"])
            seen.append((step["phone"], at, reads(d, step["phone"], at)))
            continue
        codes[i] = write(d, step, gift_ids)
    return codes, seen, gift_ids


BATCH = {
    "earn": (["phone", "amount", "category", "ref", "at"], lambda s: [s["phone"], s["amount"], s["category"], s["ref"]]),
    "adjust": (["phone", "points", "reason", "ref", "expires_on", "at"],
               lambda s: [s["phone"], s["points"], s["reason"], s["ref"], s.get("expires_on") or ""]),
    "refund": (["phone", "ref", "amount", "refund_ref", "at"],
               lambda s: [s["phone"], s["ref"], s.get("amount") or "", s.get("refund_ref") or ""]),
}


def batchable(step) -> bool:
    return step["kind"] == "refund" or (step["kind"] in ("earn", "adjust") and bool(step.get("ref")))


def apply_batched(d: Dir, history, workdir: Path) -> tuple:
    """(b): batchable steps through `--from` files, the rest single; the time order kept."""
    codes, gift_ids = {}, {}
    pending = []  # [(index, step)] of one kind
    files = [0]

    def flush():
        if not pending:
            return
        kind = pending[0][1]["kind"]
        header, row = BATCH[kind]
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(header)
        for _, s in pending:
            w.writerow(row(s) + [fmt(s["t"])])
        files[0] += 1
        f = workdir / f"batch{files[0]}-{kind}.csv"
        f.write_text(buf.getvalue(), encoding="utf-8")
        r = d(kind, "--from", f, at=fmt(pending[-1][1]["t"]))
        summary = json.loads(r.stdout)
        by_line = {p["line"]: p["code"] for p in summary["problems"]}
        assert summary["rows"] == len(pending), summary
        for n, (i, _) in enumerate(pending, start=2):
            codes[i] = by_line.get(n, 0)
        want = 2 if 2 in by_line.values() else 1 if 1 in by_line.values() else 0
        assert r.exit_code == want, (summary, r.stderr)
        pending.clear()

    for i, step in enumerate(history["steps"]):
        step["index"] = i
        if step["kind"] == "read":
            continue
        if batchable(step):
            if pending and pending[0][1]["kind"] != step["kind"]:
                flush()
            pending.append((i, step))
            continue
        flush()
        codes[i] = write(d, step, gift_ids)
    flush()
    return codes, gift_ids


def translate(got, ids: dict):
    """A balance outcome with gift ids replaced (ids: this directory's id -> the reference's)."""
    code, doc = got
    doc = json.loads(json.dumps(doc))
    if isinstance(doc, dict):
        for g in doc.get("pending_in", []):
            g["gift_id"] = ids.get(g["gift_id"], g["gift_id"])
    return code, doc


def answers(d: Dir, history, ids=None) -> dict:
    """Every compared answer: at the end, at the earlier instants, at the end again."""
    ids = ids or {}
    end = fmt(history["end"])
    moments = [end] + [fmt(t) for t in history["earlier"]]
    out = []
    for at in moments + [end]:
        per = {}
        for p in history["phones"]:
            x = reads(d, p, at)
            per[p] = {"balance": translate(x["balance"], ids), "forecast": x["forecast"]}
        out.append((at, per, d.doc("report", at=at)))
    r = d.run("--data-dir", d.path, "check", "--ledgers", "--at", end)
    assert r.exit_code == 0, ("check --ledgers", d.path, r.stdout, r.stderr)
    return out


def compare(label, got, want):
    assert len(got) == len(want)
    for (at, per_g, rep_g), (_, per_w, rep_w) in zip(got, want):
        for p in per_w:
            assert per_g[p]["balance"] == per_w[p]["balance"], (label, "balance", p, at)
            assert per_g[p]["forecast"] == per_w[p]["forecast"], (label, "forecast", p, at)
        assert rep_g == rep_w, (label, "report", at)


def scenario(history, codes, seen, finals) -> dict:
    """(c): the history as a scenario (docs/ci.md), expecting what (a) saw."""

    def expect_doc(got):
        code, doc = got
        if code:
            return {"exit": code, "error_kind": doc}
        doc = json.loads(json.dumps(doc))
        for g in doc.get("pending_in", []):
            g.pop("gift_id", None)   # the scenario's ids are its own
        return doc

    out = []
    reads_iter = iter(seen)
    for i, step in enumerate(history["steps"]):
        k = step["kind"]
        if k == "read":
            phone, at, docs = next(reads_iter)
            out.append({"at": at, "balance": phone, "expect": expect_doc(docs["balance"])})
            out.append({"at": at, "forecast": {"phone": phone, "days": "400"}, "expect": expect_doc(docs["forecast"])})
            continue
        s = {"at": fmt(step["t"])}
        if k == "join":
            s["join"] = {key: step[key] for key in ("phone", "region", "method", "customer_since", "email",
                                                     "birth_date") if step.get(key)}
        elif k == "earn":
            s["earn"] = {key: step[key] for key in ("phone", "amount", "category", "ref") if step.get(key)}
        elif k == "redeem":
            s["redeem"] = {key: step[key] for key in ("phone", "code", "via") if step.get(key)}
        elif k == "gift":
            s["gift"] = {"from": step["frm"], "to": step["to"], "points": str(step["points"])}
            s["as"] = gift_label(i)
        elif k == "accept":
            s["accept"] = {"phone": step["phone"], "gift": gift_label(step["gift"])}
            if step["reject"]:
                s["accept"]["reject"] = True
        elif k == "refund":
            s["refund"] = {key: step[key] for key in ("phone", "ref", "amount", "refund_ref") if step.get(key)}
        elif k == "adjust":
            s["adjust"] = {key: step[key] for key in ("phone", "points", "reason", "ref", "expires_on")
                           if step.get(key)}
        s["expect"] = {"exit": codes[i]}
        out.append(s)
    for at, per, _ in finals:
        for p, docs in per.items():
            out.append({"at": at, "balance": p, "expect": expect_doc(docs["balance"])})
    return {"name": "differential", "steps": out}


def run_scenario(run, doc, workdir: Path):
    f = workdir / "history.yaml"
    f.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=1000), encoding="utf-8")
    r = run("check", "--scenario", f, "--json")
    assert r.stdout.strip(), r.stderr
    report = json.loads(r.stdout)
    fails = [x["message"] for s in report["scenarios"] for x in s["failures"]]
    problems = [x["message"] for s in report["scenarios"] for x in s["problems"]]
    assert r.exit_code == 0 and not fails and not problems, (r.exit_code, problems[:5], fails[:10])


def describe(history) -> str:
    lines = []
    bulk = [i for i, s in enumerate(history["steps"]) if s.get("bulk")]
    if bulk:
        lines.append(f"steps {bulk[0]}..{bulk[-1]}: {len(bulk)} earns of 5.00 mobile (refs bulk0...) by "
                     f"{history['phones'][0]}, every 90 minutes, interleaved with the steps below")
    for i, s in enumerate(history["steps"]):
        if s["kind"] == "read":
            lines.append(f"{i:3d} read {s['phone']} as of {fmt(s['read_at'])}")
        elif i not in bulk:
            lines.append(f"{i:3d} {fmt(s['t'])} " + " ".join(command(s, {})))
    lines.append(f"end {fmt(history['end'])}, earlier {[fmt(t) for t in history['earlier']]}")
    return "\n".join(lines)


# ---------------------------------------------------------------- the tests


@settings(max_examples=int(os.environ.get("BONUSCLI_DIFF_EXAMPLES", "20")), **SETTINGS)
@given(history=histories())
def test_single_batch_and_scenario_agree(run, history):
    """(a), (b) and (c) give the same exit codes and the same answers (see the module docstring)."""
    check_three_ways(run, history)


@settings(max_examples=2, **SETTINGS)
@given(history=histories(bulk=True, max_actions=16))
def test_single_batch_and_scenario_agree_on_a_long_ledger(run, history):
    """The same, with a burst of 420 earns for the first member (a ledger past the size at which
    the store starts keeping derived state for it, docs/ledger.md "Checkpoints"), read as of the
    middle of the burst before later writes (among them a repeated reference: a duplicate)."""
    check_three_ways(run, history)


def check_three_ways(run, history):
    with tempfile.TemporaryDirectory(prefix="bonuscli-diff-") as tmp:
        tmp = Path(tmp)
        a = Dir(run, tmp / "a")
        b = Dir(run, tmp / "b")
        codes_a, seen, ids_a = apply_single(a, history)
        codes_b, ids_b = apply_batched(b, history, tmp)
        story = describe(history)

        # the same steps refused the same way
        diff = {i: (codes_a[i], codes_b[i]) for i in codes_a if codes_a[i] != codes_b.get(i)}
        assert not diff, ("exit codes differ (single, batch)", diff, story)

        # (a)'s interleaved reads are what the same reads say at the end
        for phone, at, docs in seen:
            again = reads(a, phone, at)
            assert again == docs, ("an as-of read changed after later writes", phone, at, story)

        b_to_a = {ids_b[i]: ids_a[i] for i in ids_a if i in ids_b}
        got_a = answers(a, history)
        got_b = answers(b, history, b_to_a)
        assert got_a[0] == got_a[-1], ("(a): the answer at the end changed after as-of reads", story)
        assert got_b[0] == got_b[-1], ("(b): the answer at the end changed after as-of reads", story)
        compare("single vs batch", got_b, got_a)

        # nothing kept beside the ledgers changes an answer
        for d in (a, b):
            shutil.rmtree(d.path / "cache", ignore_errors=True)
        compare("single, cache deleted", answers(a, history), got_a)
        compare("batch, cache deleted", answers(b, history, b_to_a), got_a)

        # (c): the scenario expects what (a) saw
        run_scenario(run, scenario(history, codes_a, seen, got_a), tmp)


def dask_available() -> bool:
    return importlib.util.find_spec("dask") is not None and importlib.util.find_spec("distributed") is not None


@pytest.mark.skipif(not dask_available(), reason="dask.distributed is not installed")
@settings(max_examples=1, **SETTINGS)
@given(history=histories(max_actions=14))
def test_dask_report_agrees_with_local(run, history):
    """CLI.md `report`: the engine changes how, never what: `--engine dask` prints the local document."""
    with tempfile.TemporaryDirectory(prefix="bonuscli-diff-dask-") as tmp:
        a = Dir(run, Path(tmp) / "a")
        apply_single(a, history)
        at = fmt(history["end"])
        local = a.doc("report", at=at)
        r = run("--data-dir", a.path, "report", "--engine", "dask", "--at", at, "--json")
        assert r.exit_code == 0, (r.stdout, r.stderr)
        assert json.loads(r.stdout) == local
