"""Output: tables for people, JSON for scripts, one-line errors.

Owns: every byte bonuscli prints. Imports model; tabulate lazily.
"""

from __future__ import annotations

import sys

from bonuscli.model import BonusError


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


def cell(value) -> str:
    """One CSV/TSV cell: text as is, numbers as written, nested values as compact JSON."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list, tuple)):
        return _json().dumps(public(value), ensure_ascii=False, separators=(",", ":"))
    return str(value)


def emit_rows(rows, delimiter: str = ",") -> None:
    """Rows (dicts) as CSV or TSV with a header line, quoted as Python's csv module does; the header
    is every key, in the order keys first appear."""
    import csv

    rows = [public(r) if isinstance(r, dict) else {"value": r} for r in rows]
    header: list = []
    for r in rows:
        for k in r:
            if k not in header:
                header.append(k)
    w = csv.writer(sys.stdout, delimiter=delimiter, lineterminator="\n")
    w.writerow(header)
    for r in rows:
        w.writerow([cell(r.get(k)) for k in header])
