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

import itertools
import json
import os
import sys
from typing import Callable, NamedTuple

from bonuscli import requests as rq
from bonuscli import rules
from bonuscli.model import BadInput, BonusError, FilesError, Refusal, iso, parse_when
from bonuscli.service import decide_adjust, orphan_guard


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


def _lines(text: str):
    """(line number, line) for each line of the file: split at "\\n" only (a U+2028 or U+0085 inside a
    JSON string is no line break), a "\\r" before it dropped (CRLF files), a BOM at the start dropped."""
    if text.startswith("\ufeff"):
        text = text[1:]
    for n, line in enumerate(text.split("\n"), start=1):
        yield n, line[:-1] if line.endswith("\r") else line


def split_csv_line(line: str) -> list:
    """The fields of one CSV line, strictly (RFC 4180 within a line): a field is either unquoted (no `"`
    in it) or wholly quoted (`""` for a quote inside), and a quote never spans lines. ValueError says
    what is wrong and where."""
    fields, i, n = [], 0, len(line)
    while True:
        if i < n and line[i] == '"':
            start, i, parts = i, i + 1, []
            while True:
                j = line.find('"', i)
                if j < 0:
                    raise ValueError(f"the quote opened at column {start + 1} is not closed on this line "
                                     "(a stray \")")
                parts.append(line[i:j])
                if line.startswith('"', j + 1):
                    parts.append('"')
                    i = j + 2
                    continue
                i = j + 1
                break
            fields.append("".join(parts))
            if i == n:
                return fields
            if line[i] != ",":
                raise ValueError(f"',' expected after the quoted field that ends at column {i} (a stray \")")
            i += 1
        else:
            j = line.find(",", i)
            end = n if j < 0 else j
            field = line[i:end]
            q = field.find('"')
            if q >= 0:
                raise ValueError(f"a stray quote (\") at column {i + q + 1}: quote the whole field, with \"\" "
                                 "for a quote inside it")
            fields.append(field)
            if j < 0:
                return fields
            i = j + 1


def _json_value(key, value):
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (bool, list, dict)):
        raise BadInput(f"{key!r} must be a text or a number (got {type(value).__name__})", "bad-row")
    return str(value)


def raw_rows(source: str, spec: Spec):
    """Yield (line, dict or BadInput) for each data row of a CSV or JSON-lines file.

    Strict: each row is one line of the file (numbered from 1, header included), so a malformed line
    (a stray quote, a line that is not a JSON object) is that line's problem and never absorbs the
    next ones. Empty lines are skipped; a BOM and CRLF line ends are accepted. A file-level problem
    (no header, a header without the required columns) is BadInput naming the line."""
    f = _open(source)
    try:
        text = f.read()
    except UnicodeDecodeError:
        raise BadInput(f"{source} is not UTF-8 text", "bad-file")
    finally:
        if f is not sys.stdin:
            f.close()
    lines = ((n, line) for n, line in _lines(text) if line.strip())
    first = next(lines, None)
    if first is None:
        return
    if first[1].lstrip().startswith("{"):
        for n, line in itertools.chain([first], lines):
            try:
                obj = json.loads(line, parse_int=str, parse_float=str)
            except ValueError as e:
                where = f" at column {e.colno}" if isinstance(e, json.JSONDecodeError) else ""
                yield n, BadInput(f"not a JSON object ({getattr(e, 'msg', 'unreadable')}{where})", "bad-row")
                continue
            if not isinstance(obj, dict):
                yield n, BadInput(f"not a JSON object (a {type(obj).__name__})", "bad-row")
                continue
            try:
                yield n, {str(k): _json_value(k, v) for k, v in obj.items()}
            except BadInput as e:
                yield n, e
        return
    n, line = first
    try:
        header = [h.strip().lower() for h in split_csv_line(line)]
    except ValueError as e:
        raise BadInput(f"{source}:{n}: unreadable CSV header ({e})", "bad-header")
    columns = f"{', '.join(spec.required)}{' [' + ', '.join(spec.optional) + ']' if spec.optional else ''}"
    missing = [c for c in spec.required if c not in header]
    if missing:
        raise BadInput(f"{source}:{n}: the header must name {columns} (missing {', '.join(missing)})", "bad-header")
    twice = sorted({h for h in header if h and header.count(h) > 1})
    if twice:
        raise BadInput(f"{source}:{n}: the header names {', '.join(twice)} more than once", "bad-header")
    for n, line in lines:
        try:
            values = split_csv_line(line)
        except ValueError as e:
            yield n, BadInput(f"unreadable CSV row: {e}", "bad-row")
            continue
        if all(not v.strip() for v in values):
            continue
        if len(values) > len(header):
            yield n, BadInput(f"{len(values)} fields but the header has {len(header)}", "bad-row")
            continue
        yield n, {h: (values[i] if i < len(values) else "") for i, h in enumerate(header)}


PARALLEL_FROM = 200  # members: below this a process pool costs more than it saves


def _row(cat, spec: Spec, line: int, raw):
    """(Row, None) or (None, problem) for one raw row: whatever is wrong with a row is that row's
    problem, never the batch's."""
    ref = None
    try:
        if isinstance(raw, BonusError):
            raise raw
        ref = raw.get("ref")
        if not (raw.get("phone") or "").strip():
            raise BadInput("phone is missing", "bad-row")
        at = rq.when(raw["at"], cat.tz, "at") if (raw.get("at") or "").strip() else None
        req = spec.parse(cat, raw)
    except BonusError as e:
        return None, {"line": line, "ref": ref, "code": e.exit_code, "message": e.message}
    except (ValueError, OverflowError, ArithmeticError) as e:  # a value no parser foresaw: still malformed
        return None, {"line": line, "ref": ref, "code": 2,
                      "message": f"malformed row ({type(e).__name__}: {str(e)[:80]})"}
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


def _worker_init(opener, now_text, parent=None):
    if parent is not None:
        orphan_guard(parent)  # a worker ends when the batch's process is killed (as fleet's do)
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
    with ProcessPoolExecutor(max_workers=jobs, initializer=_worker_init,
                             initargs=(spec, iso(now), os.getpid())) as pool:
        yield from pool.map(_worker_run, [kind] * len(chunks), [dry_run] * len(chunks), chunks)


def _member(svc, kind, phone, rows, now, dry_run, counts, problems):
    spec = SPECS[kind]
    cat = svc.catalog
    rows = sorted(rows, key=lambda r: (r.at or now))
    decided = []  # one (m.count when it was decided, decision) per row, in the order they are decided

    def decide(m, t, req):
        """A row's decision; an error while deciding it is that row's refusal, never the batch's."""
        try:
            result = spec.decide(cat, m, t, req)
        except BonusError as e:
            result = Refusal(e.exit_code, e.kind, e.message)
        except (ValueError, OverflowError, ArithmeticError) as e:
            result = Refusal(3, "internal", f"internal error while deciding this row ({type(e).__name__}: "
                                            f"{str(e)[:80]}); report it")
        decided.append((m.count, result))
        return result

    try:
        outcomes = svc.batch_member(phone, [(r.at, r.req) for r in rows], now, dry_run, decide)
    except (BonusError, OSError) as e:
        error = e if isinstance(e, BonusError) else FilesError(f"could not write the ledger of {phone}: "
                                                               f"{e.strerror or e}", "disk")
        outcomes = _after_failure(svc, phone, len(rows), decided, error, dry_run)
    for row, (what, _view) in zip(rows, outcomes):
        if isinstance(what, Refusal):
            counts["refused" if what.exit_code == 1 else "errors"] += 1
            problems.append({"line": row.line, "ref": row.ref, "code": what.exit_code, "message": what.message})
        elif what == "duplicate":
            counts["duplicates"] += 1
        else:
            counts["applied"] += 1


def _after_failure(svc, phone, n, decided, error, dry_run) -> list:
    """The outcomes of a member's rows when their batch failed part-way (a disk error while appending,
    a lock not obtained, a ledger that cannot be read). The summary must say what was written: a row
    whose events are in the ledger now (appended before the failure, or written by an append whose
    fsync failed) is applied; every other row from the first one not written on is this error (code 3)."""
    written = [False] * len(decided)
    if not dry_run and any(not isinstance(r, Refusal) and r.writes for _c, r in decided):
        try:
            with svc.store.locked([phone]):
                events = svc.store.read(phone).events
        except (BonusError, OSError):
            events = ()  # cannot be read now either: nothing is counted as applied
        by_id = {e.get("id"): e for e in events if isinstance(e, dict)}
        for i, (c, r) in enumerate(decided):
            if not isinstance(r, Refusal) and r.writes:
                written[i] = _in_ledger(phone, c, r, by_id)
    failed = (Refusal(error.exit_code, error.kind, error.message), None)
    outcomes, broken = [], False
    for i in range(n):
        r = decided[i][1] if i < len(decided) else None
        if r is not None and not isinstance(r, Refusal) and r.writes and written[i]:
            outcomes.append(("applied", r.view))
        elif r is not None and not broken and isinstance(r, Refusal):
            outcomes.append((r, None))
        elif r is not None and not broken and not r.writes:
            outcomes.append(("duplicate", r.view))
        else:
            broken = True  # not written, or decided on a state that held rows not written
            outcomes.append(failed)
    return outcomes


def _plain(value):
    return json.loads(json.dumps(value, default=str))


def _in_ledger(phone: str, count: int, decision, by_id: dict) -> bool:
    """Whether a row's events are in the ledger: the events `Service.batch_member` stamps after `count`
    events (ids `<phone>.<count+1>`..., one more when a torn line was sealed first), same content."""
    events = [e for _p, evs in decision.writes for e in evs]
    for first in (count + 1, count + 2):
        stored = [by_id.get(f"{phone}.{first + k}") for k in range(len(events))]
        if all(s is not None and all(_plain(s.get(key)) == _plain(v) for key, v in e.items())
               for s, e in zip(stored, events)):
            return True
    return False


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
