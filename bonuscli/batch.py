"""Batch commands (`earn --from`, and the other `--from` imports): read CSV or
JSON lines, group rows per member, decide each row with the rules, and write
each member's events with one lock and one fsync.

Owns: row parsing, grouping, the summary and its exit code. Imports model,
rules, render; called by cli with its Env.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from typing import Callable, NamedTuple

from bonuscli import render, rules
from bonuscli.model import EXIT_CLASSES as EXIT
from bonuscli.model import BadInput, BonusError, FilesError, Refusal, iso, normalize_phone, parse_when


class Row(NamedTuple):
    line: int
    phone: str
    ref: object
    at: object  # datetime or None
    args: dict


class Spec(NamedTuple):
    """What a batch reads and how each row is decided."""

    required: tuple
    optional: tuple
    parse: Callable  # (env, raw dict) -> args dict (raises BadInput)
    decide: Callable  # (cat, member, now, args) -> Decision | Refusal


def _open(source: str):
    if source == "-":
        return sys.stdin
    try:
        return open(source, encoding="utf-8", newline="")
    except FileNotFoundError:
        raise BadInput(f"no such file: {source}", "no-file")
    except IsADirectoryError:
        raise BadInput(f"{source} is a directory, not a file", "no-file")
    except OSError as e:
        raise FilesError(f"cannot read {source}: {e.strerror or e}", "unreadable")


def raw_rows(source: str, spec: Spec):
    """Yield (line, dict or BadInput) for each data row of a CSV or JSON-lines file."""
    f = _open(source)
    try:
        text = f.read()
    except UnicodeDecodeError:
        raise BadInput(f"{source} is not UTF-8 text", "bad-file")
    finally:
        if f is not sys.stdin:
            f.close()
    stripped = text.lstrip()
    if stripped.startswith("{"):
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                if not isinstance(obj, dict):
                    raise ValueError
            except ValueError:
                yield n, BadInput(f"line {n} is not a JSON object", "bad-row")
                continue
            yield n, {k: (None if v is None else str(v) if not isinstance(v, str) else v) for k, v in obj.items()}
        return
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as e:
        raise BadInput(f"{source}:1: unreadable CSV header ({e})", "bad-file")
    header = [h.strip().lower() for h in header]
    missing = [c for c in spec.required if c not in header]
    if missing:
        raise BadInput(f"{source}:1: the header must name {', '.join(spec.required)}"
                       f"{' [' + ', '.join(spec.optional) + ']' if spec.optional else ''} (missing {', '.join(missing)})",
                       "bad-header")
    start = reader.line_num
    while True:
        try:
            values = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            yield reader.line_num, BadInput(f"unreadable CSV row ({e})", "bad-row")
            continue
        line = start + 1
        start = reader.line_num
        if not values or all(not v.strip() for v in values):
            continue
        if len(values) > len(header):
            yield line, BadInput(f"{len(values)} fields but the header has {len(header)}", "bad-row")
            continue
        yield line, {h: (values[i] if i < len(values) else "") for i, h in enumerate(header)}


PARALLEL_FROM = 200  # members: below this a process pool costs more than it saves


def run(env, source: str, spec: Spec, dry_run: bool, title: str, jobs=None) -> int:
    cat = env.catalog
    problems, groups = [], {}
    counts = dict(rows=0, applied=0, duplicates=0, refused=0, errors=0)
    for line, raw in raw_rows(source, spec):
        counts["rows"] += 1
        ref = None
        try:
            if isinstance(raw, BonusError):
                raise raw
            ref = (raw.get("ref") or "").strip() or None
            if "phone" not in raw or not (raw.get("phone") or "").strip():
                raise BadInput("phone is missing", "bad-row")
            phone = normalize_phone(raw["phone"])
            at = parse_when(raw["at"], cat.tz) if (raw.get("at") or "").strip() else None
            args = spec.parse(env, raw)
        except BonusError as e:
            counts["errors"] += 1
            problems.append({"line": line, "ref": ref, "code": e.exit_code, "message": e.message})
            continue
        groups.setdefault(phone, []).append(Row(line, phone, ref, at, args))
    bar = None
    if sys.stderr.isatty() and counts["rows"] > 0:
        import click

        bar = click.progressbar(length=counts["rows"] - counts["errors"], label=title, file=sys.stderr)
        bar.__enter__()
    try:
        jobs = jobs or os.cpu_count() or 1
        if jobs > 1 and len(groups) >= PARALLEL_FROM:
            _parallel(env, groups, spec, dry_run, counts, problems, jobs, bar)
        else:
            for phone, rows in groups.items():
                _member(env, phone, rows, spec, dry_run, counts, problems)
                if bar is not None:
                    bar.update(len(rows))
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
    problems.sort(key=lambda p: p["line"])
    summary = dict(counts, problems=problems)
    if dry_run:
        summary["dry_run"] = True
    if env.as_json:
        render.emit_json(summary)
    else:
        render.out(render.pairs([(k, str(v)) for k, v in counts.items()]) + (
            "\n\n" + render.table([[p["line"], p["ref"] or "-", p["code"], p["message"]] for p in problems],
                                  ["line", "ref", "code", "problem"]) if problems else ""))
    codes = {p["code"] for p in problems}
    code = 3 if 3 in codes else 2 if counts["errors"] else 1 if counts["refused"] else 0
    if code:
        kind = {3: "files", 2: "bad-rows", 1: "refused-rows"}[code]
        first = next((p for p in problems if p["code"] == code), problems[0])
        render.error(EXIT[code](f"{counts['errors']} malformed and {counts['refused']} refused of {counts['rows']} rows "
                                f"(line {first['line']}: {first['message']})", kind), env.as_json)
    return code


_WORKER = {}


def _worker_init(args):
    from bonuscli.cli import Env

    _WORKER["env"] = Env(*args)


def _worker_run(spec_name, dry_run, groups):
    env = _WORKER["env"]
    counts = dict(applied=0, duplicates=0, refused=0, errors=0)
    problems = []
    for phone, rows in groups:
        _member(env, phone, rows, SPECS[spec_name], dry_run, counts, problems)
    return counts, problems, sum(len(rows) for _, rows in groups)


def _parallel(env, groups, spec, dry_run, counts, problems, jobs, bar):
    """Members spread over a process pool: each member is still one lock and one fsync, in one worker."""
    from concurrent.futures import ProcessPoolExecutor

    name = next(k for k, v in SPECS.items() if v is spec)
    items = list(groups.items())
    size = max(20, len(items) // (jobs * 16))
    chunks = [items[i:i + size] for i in range(0, len(items), size)]
    args = (str(env.data_dir), env.catalog_text, iso(env.now), env.as_json, env.debug)
    with ProcessPoolExecutor(max_workers=jobs, initializer=_worker_init, initargs=(args,)) as pool:
        for part, found, done in pool.map(_worker_run, [name] * len(chunks), [dry_run] * len(chunks), chunks):
            for k, v in part.items():
                counts[k] += v
            problems.extend(found)
            if bar is not None:
                bar.update(done)


def _member(env, phone, rows, spec, dry_run, counts, problems):
    from bonuscli.cli import load_member, stamp

    cat = env.catalog
    rows = sorted(rows, key=lambda r: (r.at or env.now))
    try:
        with env.store.locked([phone]) if not dry_run else _nolock():
            ledgers = {}
            first = rows[0].at or env.now
            m = load_member(env, phone, ledgers, first, full=True)
            led = ledgers[phone]
            asof = m.now
            count = m.count + (1 if led.torn else 0)
            events = stamp(phone, count, rules.seals(cat, m, asof))
            applied = 0
            for row in rows:
                now = row.at or env.now
                result = spec.decide(cat, m, now, row.args)
                if isinstance(result, Refusal):
                    key = "refused" if result.exit_code == 1 else "errors"
                    counts[key] += 1
                    problems.append({"line": row.line, "ref": row.ref, "code": result.exit_code,
                                     "message": result.message})
                    continue
                if not result.writes:
                    counts["duplicates"] += 1
                    continue
                for _p, evs in result.writes:
                    for e in stamp(phone, count + len(events), evs):
                        events.append(e)
                        rules.extend(m, e)
                counts["applied"] += 1
                applied += 1
            if applied and not dry_run:
                env.store.append(phone, events, led, env.fault)
    except BonusError as e:
        for row in rows:
            counts["errors"] += 1
            problems.append({"line": row.line, "ref": row.ref, "code": e.exit_code, "message": e.message})


class _nolock:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# ---------------------------------------------------------------- earn --from


def _earn_parse(env, raw):
    from bonuscli.model import parse_amount

    cat = env.catalog
    amount = parse_amount((raw.get("amount") or "").strip(), cat.amount_max)
    category = (raw.get("category") or "").strip().lower()
    if not category:
        raise BadInput("category is missing", "bad-row")
    if category not in cat.categories and category not in cat.ineligible:
        raise BadInput(f"unknown category '{category}'", "unknown-category")
    return {"amount": amount, "category": category, "ref": (raw.get("ref") or "").strip() or None}


def _earn_decide(cat, m, now, args):
    return rules.earn(cat, m, now, args["amount"], args["category"], args["ref"], explain=False)


EARN = Spec(("phone", "amount", "category", "ref"), ("at",), _earn_parse, _earn_decide)



# ---------------------------------------------------------------- refund --from, adjust --from


def _refund_parse(env, raw):
    from bonuscli.model import parse_amount

    ref = (raw.get("ref") or "").strip()
    if not ref:
        raise BadInput("ref (the spending's reference) is missing", "bad-row")
    text = (raw.get("amount") or "").strip()
    return {"ref": ref, "amount": parse_amount(text, env.catalog.amount_max) if text else None,
            "refund_ref": (raw.get("refund_ref") or "").strip() or None}


def _refund_decide(cat, m, now, args):
    return rules.refund(cat, m, now, args["ref"], args["amount"], args["refund_ref"])


REFUND = Spec(("phone", "ref"), ("amount", "refund_ref", "at"), _refund_parse, _refund_decide)


def _adjust_parse(env, raw):
    from bonuscli.model import parse_date

    text = (raw.get("points") or "").strip()
    if not text.lstrip("+-").isdigit():
        raise BadInput(f"points must be a whole number (got {text!r})", "bad-points")
    reason = (raw.get("reason") or "").strip()
    if not reason:
        raise BadInput("reason is missing", "bad-row")
    exp = (raw.get("expires_on") or "").strip()
    region = (raw.get("region") or "").strip().upper() or None
    if region is not None and region not in env.catalog.regions:
        raise BadInput(f"unknown region '{region}'", "unknown-region")
    return {"points": int(text), "reason": reason, "ref": (raw.get("ref") or "").strip() or None,
            "expires_on": parse_date(exp, "expires_on") if exp else None, "region": region}


def _adjust_decide(cat, m, now, args):
    """An adjustment; a member who does not exist yet is joined first when the row gives a region."""
    if args["region"] and rules.status(m, now) in ("none", "left") and not (args["ref"] and args["ref"] in m.adjusts):
        joined = rules.join(cat, m, now, {"region": args["region"], "method": "store", "services": ["mobile"]},
                            welcome=False)
        if isinstance(joined, Refusal):
            return joined
        result = rules.adjust(cat, rules.preview(m, joined), now, args["points"], args["reason"], args["ref"],
                              args["expires_on"])
        if isinstance(result, Refusal):
            return result
        return rules.Decision(joined.writes + result.writes, result.view)
    return rules.adjust(cat, m, now, args["points"], args["reason"], args["ref"], args["expires_on"])


ADJUST = Spec(("phone", "points", "reason", "ref"), ("expires_on", "region", "at"), _adjust_parse, _adjust_decide)


SPECS = {"earn": EARN, "refund": REFUND, "adjust": ADJUST}
