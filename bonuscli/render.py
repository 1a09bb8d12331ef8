"""Output: tables for people, JSON for scripts, one-line errors.

Owns: every byte bonuscli prints. Imports model; tabulate lazily.
"""

from __future__ import annotations

import sys

from bonuscli.model import BadInput, BonusError


def _json():
    """The json module, imported when a command prints JSON (start-up: docs/performance.md)."""
    import json

    return json


def public(value):
    """Drop internal keys (leading underscore) before printing."""
    if isinstance(value, dict):
        return {k: public(v) for k, v in value.items() if not str(k).startswith("_")}
    if isinstance(value, (list, tuple)):
        return [public(v) for v in value]
    return value


def dumps(value, indent=2) -> str:
    """Indented JSON. orjson writes the same text as `json.dumps(indent=2, ensure_ascii=False)` for
    bonuscli's documents, ~10x faster (the stdlib's C encoder is not used with an indent: a
    `diff --ledgers` document of 10,000 members took ~1 s); anything orjson refuses (an integer
    beyond 64 bits) goes through the stdlib. tests/test_ledger.py holds the two equal."""
    data = public(value)
    if indent == 2:
        try:
            import orjson

            return orjson.dumps(data, option=orjson.OPT_INDENT_2).decode("utf-8")
        except (ImportError, TypeError):
            pass
    return _json().dumps(data, indent=indent, ensure_ascii=False)


def emit_json(value) -> None:
    sys.stdout.write(dumps(value) + "\n")


def emit_json_lines(rows) -> None:
    for row in rows:
        sys.stdout.write(_json().dumps(public(row), ensure_ascii=False, separators=(", ", ": ")) + "\n")


def table(rows, headers, colalign=None) -> str:
    from tabulate import tabulate

    if not rows:
        return "(none)"
    kw = {"colalign": colalign} if colalign else {}
    return tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True, **kw)


def pairs(items) -> str:
    """A two-column `name  value` block for one object."""
    width = max(len(k) for k, _ in items)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in items)


def show(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return ", ".join(show(v) for v in value) if value else "-"
    if isinstance(value, dict):
        return ", ".join(f"{k} {show(v)}" for k, v in value.items())
    return str(value)


def out(text: str) -> None:
    sys.stdout.write(text.rstrip("\n") + "\n")


def warn(text: str) -> None:
    sys.stderr.write(text.rstrip("\n") + "\n")


EIGHTHS = " ▏▎▍▌▋▊▉"


def unicode_ok() -> bool:
    """Whether stdout takes UTF-8 (else charts stay plain ASCII)."""
    enc = (getattr(sys.stdout, "encoding", None) or "").lower().replace("-", "").replace("_", "")
    return enc in ("utf8", "utf8sig")


def bars(rows, width=40) -> str:
    """A horizontal bar chart, rows of (label, value): Unicode blocks to an eighth of a cell when
    stdout is UTF-8, `#` otherwise; at most `width` cells, so label + bar + value fit 80 columns.
    A non-zero value always gets a mark."""
    top = max((abs(v) for _, v in rows), default=0)
    fine = unicode_ok()
    lines = []
    for label, v in rows:
        eighths = 0 if top == 0 else round(abs(v) * width * 8 / top)
        if v and eighths == 0:
            eighths = 1
        if fine:
            bar = "█" * (eighths // 8) + (EIGHTHS[eighths % 8] if eighths % 8 else "")
        else:
            bar = "#" * (max(1, round(eighths / 8)) if v else 0)
        lines.append(f"{label}  {bar}{' ' if bar else ''}{v}")
    return "\n".join(lines)


def printable(text: str) -> str:
    """One line, no control characters (user input can carry them into a message)."""
    text = " ".join(str(text).split("\n"))
    return "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in text)


def error(err: BonusError, as_json: bool) -> None:
    if as_json:
        doc = {"error": {"code": err.exit_code, "kind": err.kind, "message": printable(err.message)}}
        if err.steps:
            doc["error"]["steps"] = public(err.steps)
        sys.stderr.write(_json().dumps(doc, ensure_ascii=False) + "\n")
    else:
        sys.stderr.write("error: " + printable(err.message) + "\n")


def printable_lines(text: str) -> str:
    """Several lines, each made printable (stored text can carry control characters)."""
    return "\n".join(printable(line) for line in str(text).split("\n"))


# ---------------------------------------------------------------- CSV and TSV: flat tables
#
# CLI.md §1: a nested object becomes `parent_child` columns, a list of scalars one cell joined with `;`,
# a list of objects a `NAME_count` column in its row and, whole, its own table (`--table NAME`), each
# of its rows led by the key of the record it belongs to; no cell ever holds JSON. A view's tables are
# known from its data and from the shapes below, so a header never depends on whether a list is empty
# or an object null.

KEYS = ("id", "phone", "code", "what")  # a record's key, the first of these it has: leads its sub-tables' rows

OBJECTS = {  # fields holding an object or null: a null one still gives the object's columns
    "next_expiry": ("date", "points"),
    "activation": ("ussd", "sms"),
}

# Fields holding a list of objects: every key its objects can have, in the JSON's order, so that a
# sub-table's header is the same whether the list is empty or not, and whatever its rows hold. A name
# `command.field` is that command's (the same field name holds other objects elsewhere); a bare name
# is every command's. tests/test_flat_csv.py walks every command's JSON: a list of objects whose
# field is not here, or whose objects have a key its shape lacks, fails there.
_STEPS = ("rule", "detail", "last_month", "rub_per_point", "customer_since", "on", "months", "coefficient",
          "exact", "points")  # rules.dates.rate and formula_step, decide's card-welcome: earn and calc --explain

LISTS = {
    "pending_in": ("gift_id", "from", "points", "offered_at", "deadline", "offered_points"),
    "active_rewards": ("code", "name", "active_until"),
    "welcome": ("reason", "points"),
    "bonuses": ("reason", "points"),
    "limits": ("per", "max"),
    "taken": ("expires_on", "points", "lot"),
    "steps": _STEPS,
    "refund.steps": ("rule", "detail", "points", "points_taken", "missing"),
    # explain's steps carry the numbers of their rule: the balance's (totals, held, debt, each lot), an
    # earn's (its rate, tenure, formula, lot, bonuses), a refund's or an adjustment's (each lot taken)
    "explain.steps": ("rule", "detail", "amount", "category", "last_month", "rub_per_point", "customer_since",
                      "months", "coefficient", "exact", "lot", "reason", "credited_at", "credited", "spent",
                      "expired", "forfeited", "gifted", "received", "refunded", "debited", "debt_repaid", "held",
                      "debt", "available", "points", "expires_on"),
    "explain.lots": ("lot", "reason", "credited_at", "credited", "available", "expires_on"),
    "forecast.lots": ("expires_on", "points"),
    "forecast.months": ("month", "points"),
    "report.months": ("month", "earned", "adjusted", "redeemed", "expired", "gifted", "refunded", "forfeited"),
    "report.expiring": ("month", "points"),
    "diff.changes": ("kind", "what", "old", "new"),
    "diff.members": ("phone", "available_old", "available_new", "change", "earned_old", "earned_new", "spent_old",
                     "spent_new", "debt_old", "debt_new"),
    "diff.no_longer_affordable": ("phone", "at", "code", "points_old", "message"),
    "diff.outcome_changes": ("phone", "at", "command", "request", "old", "new", "message"),
    "problems": ("line", "ref", "code", "message"),  # a `--from FILE` batch's summary
}

# Lists whose objects differ in shape from one item to the next, by design: `diff`'s `old` and `new`
# (a number, a text, a list of scalars, or, for a limit, tier or tenure change, a list of objects).
# Their tables follow the data (docs/scripting.md), keyed by `what`.
VARYING = ("old", "new")

ROWS = {  # commands whose output is a list of records that may be empty: the columns of their table
    "catalog": ("code", "name", "category", "price", "validity_days", "activation", "channels", "limits"),
    "history": ("at", "id", "event", "type", "points", "balance", "detail", "ref", "gift_id", "code", "earned",
                "adjusted", "redeemed", "expired", "gifted", "refunded", "forfeited", "debt_repaid", "taken"),
    "regions": ("code", "name"),
}


def cell(value) -> str:
    """One CSV/TSV cell: text as is, numbers as written, true/false, null empty, a list of scalars
    joined with `;` (empty: an empty cell). Never JSON: objects never reach a cell (see `tables`)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ";".join(cell(v) for v in value)
    return str(value)


def _shape(name: str, command: str):
    return LISTS.get(f"{command}.{name}", LISTS.get(name))


def _objects(value, key, command: str) -> bool:
    """Whether a list (or a null) under `key` is a list of objects: a declared one (LISTS), or one that
    holds an object (`diff`'s `old` and `new`, VARYING)."""
    if _shape(str(key), command) is not None:
        return True
    return value is not None and any(isinstance(v, dict) for v in value)


def _flat(record: dict, name: str, out: dict, command: str, lead: dict, template: bool = False) -> None:
    """Add `record` as one flat row of table `name` of `out` (name -> [header dict, rows]); each list of
    objects inside goes, whole, to its own table. A template (every value None) only adds columns."""
    header, rows = out.setdefault(name, [{}, []])
    key = next((k for k in KEYS if k in record and not isinstance(record[k], (dict, list, tuple))), None)
    flat = dict(lead)

    def walk(obj, prefix):
        for k, v in obj.items():
            if str(k).startswith("_"):
                continue
            col = f"{prefix}{k}"
            if isinstance(v, dict):
                walk(v, col + "_")
            elif v is None and k in OBJECTS:
                walk(dict.fromkeys(OBJECTS[k]), col + "_")
            elif (v is None or isinstance(v, (list, tuple))) and _objects(v, k, command):
                items = [x if isinstance(x, dict) else {"value": x} for x in v or ()]
                flat[col + "_count"] = "" if v is None else len(items)
                sub, shape = str(k), _shape(str(k), command) or ()
                sub_lead = {}
                if key is not None:
                    clash = key in shape or any(key in x for x in items)
                    sub_lead[f"{name}_{key}" if clash else key] = record[key]
                if sub not in out:
                    _flat(dict.fromkeys(shape), sub, out, command, dict.fromkeys(sub_lead), template=True)
                for x in items:
                    _flat(x, sub, out, command, sub_lead, template)
            else:
                flat[col] = cell(v)

    walk(record, "")
    for c in flat:
        header.setdefault(c)
    if not template:
        rows.append({c: cell(v) for c, v in flat.items()})


WRITES = {  # the writing commands' tables beyond their own record: known before they run (CLI `--table`)
    "join": ("welcome",), "earn": ("bonuses", "steps"), "refund": ("steps",), "adjust": (), "redeem": (),
    "gift": (), "accept": (), "leave": (),
}


def tables(view, main: str, command: str = "", known=()) -> dict:
    """A command's view as flat tables, {name: (header, rows)}, `main` first (the record itself, or
    each record of a list), then each list of objects found inside, by its field's name; `known`
    names tables that exist even when the view lacks their field (their header from LISTS).
    `command` picks the shapes of fields that differ between commands (`report`'s months)."""
    out: dict = {}
    records = view if isinstance(view, list) else [view]
    shape = ROWS.get(command) if isinstance(view, list) else None
    if shape is not None:
        _flat(dict.fromkeys(shape), main, out, command, {}, template=True)
    for r in records:
        _flat(public(r) if isinstance(r, dict) else {"value": r}, main, out, command, {})
    out.setdefault(main, [{}, []])
    first = records[0] if records and isinstance(records[0], dict) else {}
    key = next((k for k in KEYS if k in first and not isinstance(first[k], (dict, list, tuple))), None)
    for n in known:
        if n not in out:
            _flat(dict.fromkeys(_shape(n, command) or ()), n, out, command,
                  {key: None} if key is not None else {}, template=True)
    return {n: (list(h), [[r.get(c, "") for c in h] for r in rows]) for n, (h, rows) in out.items()}


def _listed(names, default) -> str:
    return ", ".join(n + (" (the default)" if n == default else "") for n in names)


def check_table(name: str, names, default: str, command: str, more: str = "") -> None:
    """Bad input (exit 2) unless `name` is one of `names`: the message lists them (then `more`)."""
    if name in names:
        return
    import difflib

    close = difflib.get_close_matches(str(name), list(names), 1)
    raise BadInput(f"--table: {command} has no table {printable(name)!r}"
                   f"{f' (did you mean {close[0]!r}?)' if close else ''}; its tables: {_listed(names, default)}{more}",
                   "unknown-table")


BATCHES = ("earn", "join", "refund", "adjust")  # the writing commands that also take `--from FILE` (batch.SPECS)
BATCH_TABLES = ("summary", "problems")  # a batch's: its summary (one row, the default), the rows it did not apply

UNTABLED = {  # commands that print no table (no CSV or TSV either): --table NAME is refused, whatever NAME
    "check": "it prints a verdict, or the problems found, one per line",
    "export": "it prints an accounting journal",
    "completion": "it prints a shell script",
    "sms": "it prints the short number's one-line reply",
    "ussd": "it prints the one-line answer",
}


def check_write_table(name: str, command: str, batch=None) -> None:
    """Bad input unless a writing command has the table `name`: its own (`command`, then WRITES) for a
    single write (`batch` False), BATCH_TABLES for a `--from FILE` batch (`batch` True); either, when
    it is not yet known which (`batch` None: as `--table` is parsed). Called before anything is written."""
    single = (command,) + WRITES[command]
    if command not in BATCHES or batch is False:
        check_table(name, single, command, command,
                    f" ({name} is the table of a --from FILE batch)" if command in BATCHES and name in BATCH_TABLES
                    else "")
    elif batch:
        check_table(name, BATCH_TABLES, BATCH_TABLES[0], f"{command} --from")
    elif name not in BATCH_TABLES:
        check_table(name, single, command, command, f"; with --from FILE: {_listed(BATCH_TABLES, BATCH_TABLES[0])}")


def check_table_parsed(name, command) -> None:
    """The check `--table NAME` gets as it is parsed, before the command runs: a writing command's
    names (`check_write_table`), none for a command that prints no table (UNTABLED)."""
    if name is None or command is None:
        return
    if command in WRITES:
        check_write_table(name, command)
    elif command in UNTABLED:
        raise BadInput(f"--table: {command} has no table {printable(name)!r}: it has no tables "
                       f"({UNTABLED[command]})", "unknown-table")


def pick(view, main: str, name=None, default=None, command: str = "", known=()):
    """The table `name` of the view (else `default`, else `main`) as (header, rows); an unknown name is
    bad input listing the names."""
    found = tables(view, main, command, known)
    want = name or default or main
    check_table(want, list(found), default or main, command or main)
    return found[want]


def write_rows(header, rows, delimiter: str = ",") -> None:
    """A header line and rows, quoted as Python's csv module does."""
    import csv

    w = csv.writer(sys.stdout, delimiter=delimiter, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)

