"""Batch commands (`earn --from`, `refund --from`, `adjust --from`): read CSV or
JSON lines, turn each row into the single command's request (bonuscli.requests:
the same validation, an empty `ref` refused), group rows per member, and let
the service decide each row as of its own `at` and write each member's events
with one lock and one fsync.

Owns: reading batch files, grouping, the process pool, the summary and its
exit code. Returns values; never prints. Imports model, requests, rules,
service.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from typing import Callable, NamedTuple

from bonuscli import requests as rq
from bonuscli import rules
from bonuscli.model import BadInput, BonusError, FilesError, Refusal, iso, parse_when
from bonuscli.service import decide_adjust


class Row(NamedTuple):
    line: int
    phone: str
    ref: object
    at: object  # datetime or None
    req: object  # the request, as the single command builds it


class Spec(NamedTuple):
    """What a batch reads and how each row is decided."""

    required: tuple
    optional: tuple
    parse: Callable  # (cat, raw dict) -> request (raises BadInput)
    decide: Callable  # (cat, member, now, request) -> Decision | Refusal


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


def _row(cat, spec: Spec, line: int, raw):
    """(Row, None) or (None, problem) for one raw row."""
    ref = None
    try:
        if isinstance(raw, BonusError):
            raise raw
        ref = raw.get("ref")
        if not (raw.get("phone") or "").strip():
            raise BadInput("phone is missing", "bad-row")
        at = parse_when(raw["at"], cat.tz) if (raw.get("at") or "").strip() else None
        req = spec.parse(cat, raw)
    except BonusError as e:
        return None, {"line": line, "ref": ref, "code": e.exit_code, "message": e.message}
    return Row(line, req.phone, ref, at, req), None


def run(svc, source: str, kind: str, now, dry_run: bool, jobs=None, progress=None) -> dict:
    """Apply a batch file; the summary (CLI.md `earn --from`). With `jobs` > 1 and many members,
    members are spread over worker processes that open the same service (`svc.opener`)."""
    spec = getattr(svc, "opener", None)
    cat = svc.catalog
    bspec = SPECS[kind]
    problems, groups = [], {}
    counts = dict(rows=0, applied=0, duplicates=0, refused=0, errors=0)
    for line, raw in raw_rows(source, bspec):
        counts["rows"] += 1
        row, problem = _row(cat, bspec, line, raw)
        if problem is not None:
            counts["errors"] += 1
            problems.append(problem)
            continue
        groups.setdefault(row.phone, []).append(row)
    total = counts["rows"] - counts["errors"]
    done = 0
    jobs = jobs or os.cpu_count() or 1
    if jobs > 1 and len(groups) >= PARALLEL_FROM and spec is not None:
        for part, found, n in _parallel(spec, kind, groups, now, dry_run, jobs):
            for k, v in part.items():
                counts[k] += v
            problems.extend(found)
            done += n
            if progress:
                progress(n, total)
    else:
        for phone, rows in groups.items():
            _member(svc, kind, phone, rows, now, dry_run, counts, problems)
            if progress:
                progress(len(rows), total)
    problems.sort(key=lambda p: p["line"])
    summary = dict(counts, problems=problems)
    if dry_run:
        summary["dry_run"] = True
    return summary


def exit_code(summary: dict) -> int:
    """3 when the files were in trouble, else 2 if any row was malformed, else 1 if any was refused."""
    codes = {p["code"] for p in summary["problems"]}
    return 3 if 3 in codes else 2 if summary["errors"] else 1 if summary["refused"] else 0


_WORKER = {}


def _worker_init(opener, now_text):
    _WORKER["svc"] = opener.open()
    _WORKER["now"] = parse_when(now_text, _WORKER["svc"].catalog.tz)


def _worker_run(kind, dry_run, groups):
    svc = _WORKER["svc"]
    counts = dict(applied=0, duplicates=0, refused=0, errors=0)
    problems = []
    for phone, rows in groups:
        _member(svc, kind, phone, rows, _WORKER["now"], dry_run, counts, problems)
    return counts, problems, sum(len(rows) for _, rows in groups)


def _parallel(spec, kind, groups, now, dry_run, jobs):
    """Members spread over a process pool: each member is still one lock and one fsync, in one worker."""
    from concurrent.futures import ProcessPoolExecutor

    items = list(groups.items())
    size = max(20, len(items) // (jobs * 16))
    chunks = [items[i:i + size] for i in range(0, len(items), size)]
    with ProcessPoolExecutor(max_workers=jobs, initializer=_worker_init, initargs=(spec, iso(now))) as pool:
        yield from pool.map(_worker_run, [kind] * len(chunks), [dry_run] * len(chunks), chunks)


def _member(svc, kind, phone, rows, now, dry_run, counts, problems):
    spec = SPECS[kind]
    cat = svc.catalog
    rows = sorted(rows, key=lambda r: (r.at or now))
    try:
        outcomes = svc.batch_member(phone, [(r.at, r.req) for r in rows], now, dry_run,
                                    lambda m, t, req: spec.decide(cat, m, t, req))
    except BonusError as e:
        for row in rows:
            counts["errors"] += 1
            problems.append({"line": row.line, "ref": row.ref, "code": e.exit_code, "message": e.message})
        return
    for row, (what, _view) in zip(rows, outcomes):
        if isinstance(what, Refusal):
            counts["refused" if what.exit_code == 1 else "errors"] += 1
            problems.append({"line": row.line, "ref": row.ref, "code": what.exit_code, "message": what.message})
        elif what == "duplicate":
            counts["duplicates"] += 1
        else:
            counts["applied"] += 1


# ---------------------------------------------------------------- the three kinds


def _given(raw, key):
    """A row's value; an empty optional column is no value."""
    v = raw.get(key)
    return None if v is None or not str(v).strip() else v


def _earn_parse(cat, raw):
    return rq.earn(cat, raw.get("phone"), raw.get("amount"), raw.get("category"), raw.get("ref"), ref_required=True)


def _earn_decide(cat, m, now, req):
    return rules.earn(cat, m, now, req.amount, req.category, req.ref, explain=False)


def _refund_parse(cat, raw):
    return rq.refund(cat, raw.get("phone"), raw.get("ref"), _given(raw, "amount"), _given(raw, "refund_ref"))


def _refund_decide(cat, m, now, req):
    return rules.refund(cat, m, now, req.ref, req.amount, req.refund_ref)


def _adjust_parse(cat, raw):
    return rq.adjust(cat, raw.get("phone"), raw.get("points"), raw.get("reason"), raw.get("ref"),
                     _given(raw, "expires_on"), _given(raw, "region"), ref_required=True)


def _adjust_decide(cat, m, now, req):
    return decide_adjust(cat, m, now, req)


SPECS = {
    "earn": Spec(("phone", "amount", "category", "ref"), ("at",), _earn_parse, _earn_decide),
    "refund": Spec(("phone", "ref"), ("amount", "refund_ref", "at"), _refund_parse, _refund_decide),
    "adjust": Spec(("phone", "points", "reason", "ref"), ("expires_on", "region", "at"), _adjust_parse,
                   _adjust_decide),
}
