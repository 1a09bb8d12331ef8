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
import zlib
from typing import Callable

from bonuscli import requests as rq
from bonuscli import rules
from bonuscli.commands import COMMANDS
from bonuscli.model import BadInput, BonusError, FilesError, Refusal, iso, parse_when, Record
from bonuscli.workers import can_fork, orphan_guard


class Row(Record):
    line: int
    phone: str
    ref: object
    at: object  # epoch seconds, or None (the batch's --at)
    req: object  # the request, as the single command builds it


class Spec(Record):
    """What a batch reads and how each row is decided."""

    required: tuple
    optional: tuple
    parse: Callable  # (cat, raw dict, the row's local date) -> request (raises BadInput)
    decide: Callable  # (cat, member, now, request) -> Decision | Refusal
    defer: Callable | None = None  # request -> True: decided after the other rows, one by one (`_deferred`)


def _open(source: str, stream=None):
    """`stream` when the caller opened one (the CLI passes standard input for `-`), else the file."""
    if stream is not None:
        return stream
    if source == "-":
        raise BadInput("reading standard input needs the stream the command line opened", "usage")
    try:
        return open(source, "rb")
    except FileNotFoundError:
        raise BadInput(f"no such file: {source}", "no-file")
    except IsADirectoryError:
        raise BadInput(f"{source} is a directory, not a file", "no-file")
    except OSError as e:
        raise FilesError(f"cannot read {source}: {e.strerror or e}", "unreadable")


def _lines(source: str, stream=None):
    """(line number, line) for each non-blank line of the file, streamed: split at "\\n" only (a U+2028
    or U+0085 inside a JSON string is no line break), a "\\r" before it dropped (CRLF files), a BOM at
    the start dropped. A file that is not UTF-8 is BadInput (the whole file is read before any row is
    applied, so that is still before anything was written)."""
    f = _open(source, stream)
    try:
        for n, raw in enumerate(f, start=1):
            if isinstance(raw, str):  # a text stdin without a binary buffer
                raw = raw.encode("utf-8", "surrogateescape")
            if n == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            if raw.endswith(b"\n"):
                raw = raw[:-1]
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise BadInput(f"{source} is not UTF-8 text", "bad-file")
            if line.strip():
                yield n, line
    except OSError as e:
        raise FilesError(f"cannot read {source}: {e.strerror or e}", "unreadable")
    finally:
        if stream is None:
            f.close()


def split_csv_line(line: str) -> list:
    """The fields of one CSV line, strictly (RFC 4180 within a line): a field is either unquoted (no `"`
    in it) or wholly quoted (`""` for a quote inside), and a quote never spans lines. ValueError says
    what is wrong and where."""
    if '"' not in line:
        return line.split(",")
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


class Form(Record):
    """How a file's rows read: JSON lines, or CSV with this header; `known`: the keys a row may have
    (a JSON-lines row with any other key is that row's problem)."""

    json: bool
    header: tuple = ()
    known: tuple = ()


def header_of(source: str, first, spec: Spec) -> Form:
    """The file's form, from its first non-blank line; a bad CSV header is BadInput naming its line."""
    n, line = first
    known = tuple(spec.required) + tuple(spec.optional)
    if line.lstrip().startswith("{"):
        return Form(True, (), known)
    try:
        header = [h.strip().lower() for h in split_csv_line(line)]
    except ValueError as e:
        raise BadInput(f"{source}:{n}: unreadable CSV header ({e})", "bad-header")
    columns = f"{', '.join(spec.required)}{' [' + ', '.join(spec.optional) + ']' if spec.optional else ''}"
    # one pass over the header, whatever its width (a count per column was quadratic: 31 s at 20,000)
    allowed = frozenset(known)
    seen: set = set()
    unknown: list = []
    twice: set = set()
    for h in header:
        if h not in allowed:
            unknown.append(h)
        elif h in seen:
            twice.add(h)
        seen.add(h)
    missing = [c for c in spec.required if c not in seen]
    if unknown:
        # a column the command does not know is never ignored: a misspelt `amout` would lose its values
        first_bad = unknown[0]
        what = f"column {header.index(first_bad) + 1} has no name" if not first_bad else \
            f"unknown column {rq.shown(first_bad)}"
        more = f" and {len(unknown) - 1:,} more" if len(unknown) > 1 else ""
        lacking = f"; missing {', '.join(missing)}" if missing else ""
        raise BadInput(f"{source}:{n}: {what}{more}{lacking} (the columns are {columns})"
                       f"{rq.suggest(first_bad, known, 'column') if first_bad else ''}", "bad-header")
    if missing:
        raise BadInput(f"{source}:{n}: the header must name {columns} (missing {', '.join(missing)})", "bad-header")
    if twice:
        raise BadInput(f"{source}:{n}: the header names {', '.join(sorted(twice))} more than once", "bad-header")
    return Form(False, tuple(header), known)


def raw_row(form: Form, line: str):
    """One data line as a dict of texts, a BadInput (that line's problem), or None (a CSV row of empty
    fields, which is no row)."""
    if form.json:
        try:
            obj = json.loads(line, parse_int=str, parse_float=str)
        except ValueError as e:
            where = f" at column {e.colno}" if isinstance(e, json.JSONDecodeError) else ""
            return BadInput(f"not a JSON object ({getattr(e, 'msg', 'unreadable')}{where})", "bad-row")
        except RecursionError:  # `[[[[...` thousands deep: the decoder gives up, the row is malformed
            return BadInput("not a JSON object (nested too deeply)", "bad-row")
        if not isinstance(obj, dict):
            return BadInput(f"not a JSON object (a {type(obj).__name__})", "bad-row")
        known = form.known
        if known:
            for k in obj:
                if k not in known:  # as a CSV column the command does not know: never silently ignored
                    return BadInput(f"unknown key {rq.shown(k)} (a row may have {', '.join(known)})"
                                    f"{rq.suggest(k, known, 'key')}", "bad-row")
        try:
            return {str(k): _json_value(k, v) for k, v in obj.items()}
        except BadInput as e:
            return e
    header = form.header
    try:
        values = split_csv_line(line)
    except ValueError as e:
        return BadInput(f"unreadable CSV row: {e}", "bad-row")
    if all(not v.strip() for v in values):
        return None
    if len(values) > len(header):
        return BadInput(f"{len(values)} fields but the header has {len(header)}", "bad-row")
    if len(values) == len(header):
        return dict(zip(header, values))
    return {h: (values[i] if i < len(values) else "") for i, h in enumerate(header)}


def raw_rows(source: str, spec: Spec, stream=None):
    """Yield (line, dict or BadInput) for each data row of a CSV or JSON-lines file.

    Strict: each row is one line of the file (numbered from 1, header included), so a malformed line
    (a stray quote, a line that is not a JSON object) is that line's problem and never absorbs the
    next ones. Empty lines are skipped; a BOM and CRLF line ends are accepted. A file-level problem
    (no header, a header without the required columns) is BadInput naming the line."""
    lines = _lines(source, stream)
    first = next(lines, None)
    if first is None:
        return
    form = header_of(source, first, spec)
    for n, line in (itertools.chain([first], lines) if form.json else lines):
        raw = raw_row(form, line)
        if raw is not None:
            yield n, raw


# ---------------------------------------------------------------- spooling: input -> member groups

BUCKETS = 128  # rows are routed by member to this many groups, each decided on its own
SPILL_ROWS = 50_000  # rows held in memory before the groups go to temporary files
PARALLEL_ROWS = 2_000  # below this a process pool costs more than it saves
CHUNK = 64  # members whose appends are made durable together (ledger.Commit): ~2 open files each
CHUNK_ROWS = 4096  # ...or fewer, once their rows reach this (memory: each decided row is held until then)


def _route_key(form: Form, line: str, phone_at: int) -> str:
    """Which member a line is for, as its rows will be grouped: the normalised phone when it is one,
    else the text (the row is refused later, in its group, with its line number)."""
    if form.json:
        raw = raw_row(form, line)
        text = raw.get("phone") if isinstance(raw, dict) else None
    else:
        if '"' in line:
            try:
                values = split_csv_line(line)
            except ValueError:
                return ""
        else:
            values = line.split(",", phone_at + 1)
        text = values[phone_at] if phone_at < len(values) else None
    if text is None:
        return ""
    if len(text) == 10 and text.isdigit():
        return text
    try:
        return rq.phone(text)
    except BonusError:
        return str(text)


def _bucket_of(key: str) -> int:
    return (int(key) if key.isdigit() and len(key) <= 12 else zlib.crc32(key.encode("utf-8", "replace"))) % BUCKETS


class Spool:
    """The rows of a batch file, read as a stream and routed by member into BUCKETS groups: in memory
    up to SPILL_ROWS rows, then in temporary files, so memory does not grow with the file. Every
    member's rows are in one group, in file order."""

    def __init__(self, source: str, spec: Spec, stream=None):
        self.form = Form(False)
        self.held: list = []  # (line number, text, group) while in memory
        self.files: list | None = None  # the groups' files once spilled
        self.tmp = None
        self.lines = 0
        lines = _lines(source, stream)
        first = next(lines, None)
        if first is None:
            return
        self.form = header_of(source, first, spec)
        phone_at = 0 if self.form.json else self.form.header.index("phone")
        if self.form.json:
            lines = itertools.chain([first], lines)
        form, held = self.form, self.held
        for n, line in lines:
            b = _bucket_of(_route_key(form, line, phone_at))
            self.lines += 1
            if self.files is None:
                held.append((n, line, b))
                if len(held) >= SPILL_ROWS:
                    self._spill()
            else:
                self.files[b].write(f"{n}\t{line}\n".encode("utf-8"))
        if self.files is not None:
            for f in self.files:
                f.close()

    def _spill(self) -> None:
        import tempfile

        self.tmp = tempfile.TemporaryDirectory(prefix="bonuscli-batch-")
        self.files = [open(os.path.join(self.tmp.name, f"{b}.rows"), "wb", buffering=1 << 16) for b in range(BUCKETS)]
        for n, line, b in self.held:
            self.files[b].write(f"{n}\t{line}\n".encode("utf-8"))
        self.held = []

    def parts(self, split: bool) -> list:
        """The non-empty groups: each a list of (line number, text), or the path of its file. Unless
        `split` (or spilled), one group of the whole file: members are then decided in the order the
        file names them first."""
        if self.files is not None:
            names = [os.path.join(self.tmp.name, f"{b}.rows") for b in range(BUCKETS)]
            return [name for name in names if os.path.getsize(name)]
        if not split:
            return [[(n, line) for n, line, _b in self.held]] if self.held else []
        groups: list = [[] for _ in range(BUCKETS)]
        for n, line, b in self.held:
            groups[b].append((n, line))
        return [g for g in groups if g]

    def close(self) -> None:
        if self.tmp is not None:
            self.tmp.cleanup()


def _part_lines(part):
    """(line number, text) of a group: its list, or its file read as a stream."""
    if isinstance(part, list):
        yield from part
        return
    with open(part, "rb") as f:
        for raw in f:
            n, _, line = raw[:-1].decode("utf-8").partition("\t")
            yield int(n), line


# ---------------------------------------------------------------- running a batch


_EPOCHS: dict = {}  # (at text, zone) -> epoch seconds: rows often share their `at`


def _epoch(text: str, tz) -> int:
    key = (text, tz)
    t = _EPOCHS.get(key)
    if t is None:
        if len(_EPOCHS) > 4096:
            _EPOCHS.clear()
        t = _EPOCHS[key] = rules.seconds(rq.when(text, tz, "at"))
    return t


def _row(cat, spec: Spec, line: int, raw, today=None):
    """(Row, None) or (None, problem) for one raw row: whatever is wrong with a row is that row's
    problem, never the batch's. `today`: the batch's local date (a row's own `at` gives its own)."""
    ref = None
    try:
        if isinstance(raw, BonusError):
            raise raw
        ref = raw.get("ref")
        if not (raw.get("phone") or "").strip():
            raise BadInput("phone is missing", "bad-row")
        at_text = raw.get("at")
        at = _epoch(at_text, cat.tz) if at_text and at_text.strip() else None
        if at is not None:
            today = rules.calendar_of(cat).local(at).date()
        req = spec.parse(cat, raw, today)
    except BonusError as e:
        return None, {"line": line, "ref": ref, "code": e.exit_code, "message": e.message}
    except (ValueError, OverflowError, ArithmeticError) as e:  # a value no parser foresaw: still malformed
        return None, {"line": line, "ref": ref, "code": 2,
                      "message": f"malformed row ({type(e).__name__}: {str(e)[:80]})"}
    return Row(line, req.phone, ref, at, req), None


def run(svc, source: str, kind: str, now, dry_run: bool, jobs=None, progress=None, stream=None) -> dict:
    """Apply a batch file; the summary (CLI.md `earn --from`). The file is read as a stream and its
    rows routed by member (`Spool`); each group is parsed and decided on its own, by worker
    processes that open the same service (`svc.opener`) when there are many rows and `jobs` > 1."""
    opener = getattr(svc, "opener", None)
    svc.keep_alive = None  # many members, each done with once decided: keeping them to the exit only grows memory
    spool = Spool(source, SPECS[kind], stream)
    try:
        counts = dict(rows=0, applied=0, duplicates=0, refused=0, errors=0)
        problems: list = []
        jobs = jobs or os.cpu_count() or 1
        parallel = jobs > 1 and spool.lines >= PARALLEL_ROWS and opener is not None
        parts = spool.parts(split=parallel)
        if parallel and len(parts) > 1:
            results = _parallel(opener, kind, spool.form, parts, now, dry_run, jobs, getattr(svc, "fault", None))
        else:
            results = (_group(svc, kind, spool.form, part, now, dry_run) for part in parts)
        deferred: list = []
        for part_counts, found, later in results:
            for k, v in part_counts.items():
                counts[k] += v
            problems.extend(found)
            deferred.extend(later)
            if progress:
                progress(part_counts["rows"], spool.lines)
        if deferred:
            _deferred(svc, kind, deferred, now, dry_run, counts, problems)
    finally:
        spool.close()
    problems.sort(key=lambda p: p["line"])
    summary = dict(counts, problems=problems)
    if dry_run:
        summary["dry_run"] = True
    return summary


def _deferred(svc, kind, rows, now, dry_run, counts, problems) -> None:
    """The deferred rows (a join with a referrer: it writes to the referrer's ledger too), each run
    as the single command, in time order, after every other row; a row whose referrer is not a
    member yet waits for the next round (the referrer may join later in the file), until a round
    changes nothing."""
    cmd = COMMANDS[kind]
    t0 = rules.seconds(now)
    pending = sorted(rows, key=lambda r: (t0 if r.at is None else r.at, r.line))
    while pending:
        waiting, last = [], {}
        for r in pending:
            try:
                view = svc.run(kind, r.req, t0 if r.at is None else r.at, dry_run=dry_run, **cmd.batch_opts)
            except BonusError as e:
                if e.kind == "referrer-not-member":
                    waiting.append(r)
                    last[r.line] = e
                    continue
                counts["refused" if e.exit_code == 1 else "errors"] += 1
                problems.append({"line": r.line, "ref": r.ref, "code": e.exit_code, "message": e.message})
                continue
            counts["duplicates" if view.get("duplicate") else "applied"] += 1
        if len(waiting) == len(pending):
            for r in waiting:
                e = last[r.line]
                counts["refused"] += 1
                problems.append({"line": r.line, "ref": r.ref, "code": e.exit_code, "message": e.message})
            return
        pending = waiting


def exit_code(summary: dict) -> int:
    """3 when the files were in trouble, else 2 if any row was malformed, else 1 if any was refused."""
    codes = {p["code"] for p in summary["problems"]}
    return 3 if 3 in codes else 2 if summary["errors"] else 1 if summary["refused"] else 0


def _group(svc, kind, form: Form, part, now, dry_run) -> tuple:
    """Parse, decide and write one group of rows: (counts, problems). Its lines are gathered by
    member as text, and each member is parsed only when it is decided, so a group holds ~150 bytes
    a row rather than the parsed rows (memory stays flat with the file's size)."""
    counts = dict(rows=0, applied=0, duplicates=0, refused=0, errors=0)
    problems: list = []
    deferred: list = []
    phone_at = 0 if form.json else form.header.index("phone")
    members: dict = {}
    for n, line in _part_lines(part):
        members.setdefault(_route_key(form, line, phone_at), []).append((n, line))
    keys = list(members)
    i = 0
    while i < len(keys):
        items, held = [], 0
        while i < len(keys) and len(items) < CHUNK and held < CHUNK_ROWS:
            lines = members.pop(keys[i])
            i += 1
            items.append(lines)
            held += len(lines)
        _chunk(svc, kind, form, items, now, dry_run, counts, problems, deferred)
    return counts, problems, deferred


_WORKER = {}


def _worker_init(opener, now_text, parent=None, fault=None):
    if parent is not None:
        orphan_guard(parent)  # a worker ends when the batch's process is killed (as fleet's do)
    _WORKER["svc"] = opener.open()
    # the crash tests' hook (None unless BONUSCLI_FAULT is set), inherited by the fork: the worker's
    # write points (ledger.Commit: each append, before the chunk's syncfs, after it) fire it as the
    # serial batch's do, counted with the other processes of the command
    _WORKER["svc"].fault = fault
    _WORKER["now"] = parse_when(now_text, _WORKER["svc"].catalog.tz)


def _worker_group(kind, dry_run, form, part):
    return _group(_WORKER["svc"], kind, form, part, _WORKER["now"], dry_run)


def _parallel(opener, kind, form, parts, now, dry_run, jobs, fault=None):
    """Groups spread over a process pool; results in the order of the groups. Forked where this
    system can (the workers inherit `fault`, which cannot travel otherwise). A worker that dies
    (killed, out of memory) stops the batch with exit 3: its members' rows may be applied or not,
    so nothing of the batch is reported; running the same file again completes it."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    forked = can_fork()
    context = multiprocessing.get_context("fork") if forked else None
    try:
        with ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=_worker_init,
                                 initargs=(opener, iso(now), os.getpid(), fault if forked else None)) as pool:
            yield from pool.map(_worker_group, [kind] * len(parts), [dry_run] * len(parts), [form] * len(parts),
                                parts)
    except BrokenProcessPool:
        raise FilesError("a worker process of the batch ended unexpectedly (killed?); the rows of its members "
                         "may be applied or not: run the same file again (rows already applied are duplicates)",
                         "worker-lost") from None


def _parse(cat, spec: Spec, form: Form, lines, counts, problems, today=None) -> list:
    """One member's lines as rows; a malformed one is counted and named, never decided."""
    rows = []
    for n, line in lines:
        raw = raw_row(form, line)
        if raw is None:
            continue
        counts["rows"] += 1
        row, problem = _row(cat, spec, n, raw, today)
        if problem is not None:
            counts["errors"] += 1
            problems.append(problem)
        else:
            rows.append(row)
    return rows


def _chunk(svc, kind, form, items, now, dry_run, counts, problems, deferred=None):
    """Members (each its lines) parsed, decided and written under one commit: their appends are made
    durable together, and only then is any of their rows counted as applied. Rows the command
    defers (`Spec.defer`) go to `deferred`, undecided."""
    commit = svc.commit(dry_run)
    done = []
    spec = SPECS[kind]
    try:
        for lines in items:
            rows = _parse(svc.catalog, spec, form, lines, counts, problems, now.date())
            if spec.defer is not None and deferred is not None:
                deferred.extend(r for r in rows if spec.defer(r.req))
                rows = [r for r in rows if not spec.defer(r.req)]
            if not rows:  # every row of a group is one member's (the key is the normalised phone)
                continue
            phone = rows[0].phone
            t0 = rules.seconds(now)
            rows = sorted(rows, key=lambda r: t0 if r.at is None else r.at)
            outcome = _member(svc, kind, phone, rows, now, dry_run, commit)
            # held until the chunk is durable: only what the summary needs of each row
            done.append((phone, [(r.line, r.ref) for r in rows]) + outcome)
    finally:
        failed = commit.sync()
    for phone, rows, outcomes, decided, error in done:  # the locks are released: a failure may read again
        if error is None and phone in failed:
            error = failed[phone]
        if error is not None:
            outcomes = _after_failure(svc, phone, len(rows), decided, error, dry_run)
        for (line, ref), (what, _view) in zip(rows, outcomes):
            if isinstance(what, Refusal):
                counts["refused" if what.exit_code == 1 else "errors"] += 1
                problems.append({"line": line, "ref": ref, "code": what.exit_code, "message": what.message})
            elif what == "duplicate":
                counts["duplicates"] += 1
            else:
                counts["applied"] += 1


def _member(svc, kind, phone, rows, now, dry_run, commit) -> tuple:
    """(outcomes, decisions, error): a member's rows decided and written (not yet durable)."""
    spec = SPECS[kind]
    cat = svc.catalog
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
        outcomes = svc.batch_member(phone, [(r.at, r.req) for r in rows], now, dry_run, decide, commit)
    except (BonusError, OSError) as e:
        error = e if isinstance(e, BonusError) else FilesError(f"could not write the ledger of {phone}: "
                                                               f"{e.strerror or e}", "disk")
        return None, _light(decided), error
    # held until the chunk is durable: without the views, a row costs its events only
    return [(what, None) for what, _view in outcomes], _light(decided), None


def _light(decided: list) -> list:
    return [(c, r if isinstance(r, Refusal) else r._replace(view=None)) for c, r in decided]


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


def _spec(name: str) -> Spec:
    """A batch of a command of the registry: its columns, its request builder (`ref` required: a
    re-run must be idempotent), its decision on one member."""
    cmd = COMMANDS[name]

    opts = cmd.batch_opts

    def decide(cat, m, now, req):
        return cmd.decide(cat, {m.phone: m}, now, req, **opts)

    return Spec(cmd.batch[0], cmd.batch[1], lambda cat, raw, today=None: cmd.build(cat, raw, today, True), decide,
                cmd.defer)


SPECS = {name: _spec(name) for name, cmd in COMMANDS.items() if cmd.batch is not None}
