"""The service layer: the one path from a ledger to an answer.

Owns: opening a data directory, loading a member (and only the peers their
unsettled gifts and referrals name) as of a moment, letting the rules decide,
appending under the lock, and returning the JSON documents of CLI.md. Every
entry point goes through here: each command, the `--from` batches, the
scenario runner, `report`, `check --ledgers`, `diff --ledgers` (on a
MemoryStore), the Dask engine, `sms`/`ussd`. Returns values and raises typed
errors (model.BonusError); never prints, exits or reads the clock, argv or
the environment. Imports model, requests, rules, ledger, catalog, paths,
channels.

As of T, a member is always what replaying from scratch the lines dated up to
T gives. A snapshot (`<data-dir>/cache/members/<phone>.json`, plain JSON) is
only an optimisation: it holds the state after exactly its first N lines, as
of the instant of line N, is used only when line N is still byte for byte the
one it saw and T is not earlier, and is ignored on any doubt.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Callable, Optional

from bonuscli import paths, rules
from bonuscli.version import __version__
from bonuscli import requests as rq
from bonuscli.commands import COMMANDS
from bonuscli.ledger import Conflict, FileStore, LedgerRead, NoCommit, line_hash, torn_warning
from bonuscli.model import BadInput, Catalog, Decision, FilesError, Refusal, SCHEMA_VERSION, BonusError, money, Record

SNAPSHOT_MIN = 400  # events replayed before a member's state is worth saving


def decided(result):
    """The Decision, or the Refusal raised as the error it is."""
    if isinstance(result, Refusal):
        raise result.error()
    return result


def stamp(phone: str, count: int, events) -> list:
    """Events as ledger lines: schema, id `<phone>.<n>` (n counting the file's events), type, at."""
    out = []
    for i, e in enumerate(events, start=1):
        line = {"v": SCHEMA_VERSION, "id": f"{phone}.{count + i}", "type": e["type"], "at": e["at"]}
        line.update(e)  # "type" and "at" keep their places
        out.append(line)
    return out


class gc_paused:
    """The cyclic garbage collector off while a ledger is read and replayed: a replay allocates
    hundreds of thousands of small lists and dicts that all stay alive, and each collection would
    walk them all again (measured: 2.4 s -> 0.8 s for 100,000 events). Nothing here makes cycles."""

    def __enter__(self):
        import gc

        self.was = gc.isenabled()
        gc.disable()
        return self

    def __exit__(self, *exc):
        if self.was:
            import gc

            gc.enable()
        return False


def _last_at(events) -> Optional[int]:
    for e in reversed(events):
        if e["type"] != "repair":
            return rules.instant(e["at"])
    return None


# ---------------------------------------------------------------- snapshots: trusted in shape only
#
# A snapshot is a derived file that whoever can write `cache/` may have planted. Before one is used,
# every value a command will read from it must have the type and the range a replay gives it, so that
# nothing after the resume (a view, a decision, the stamping, a batch's next rows) can fail on it or
# answer otherwise than without it: an offset of 10**30 or -1, a text where a number belongs, a lot
# that is not a list, a date that is not one... make it a miss, and the ledger is replayed as if the
# file were absent. Whether the values are the ones a replay would give is what `check --ledgers`
# verifies (and a write verifies every line after the snapshot).
#
# Cost: the lots are checked a field at a time with `map`, `set`, `min` and `max`, which run in C: a
# read checks what a read uses (each lot's expiry and points, and the short lists), a decision the
# rest of each lot too. The earn records (100,000 for a member of 100,000 earns), which only a
# decision that names a ref reads, are checked one by one as they are read (`CheckedEarns`).

_I64 = (1 << 63) - 1  # what 64-bit JSON readers and `lseek` hold
_DAY_MIN, _DAY_MAX = dt.date(1800, 1, 1).toordinal(), dt.date(9900, 12, 31).toordinal()  # far beyond any rule
_T_MIN = (_DAY_MIN - dt.date(1970, 1, 1).toordinal()) * 86400
_T_MAX = (_DAY_MAX - dt.date(1970, 1, 1).toordinal()) * 86400
# what a replay of lines edited and re-chained outside bonuscli can raise (Service._replay)
UNREPLAYABLE = (KeyError, TypeError, ValueError, IndexError, AttributeError, ArithmeticError)
# what a planted value can raise anywhere on the way: a snapshot is then ignored, never an error
SNAPSHOT_ERRORS = (KeyError, TypeError, ValueError, IndexError, AttributeError, ArithmeticError, RecursionError,
                   MemoryError)
_GIFT_FINAL = frozenset({"cancelled", "accepted", "rejected", "returned", "forfeited", "expired"})
_HEX = frozenset("0123456789abcdef")
_INT, _STR, _LIST = frozenset({int}), frozenset({str}), frozenset({list})


def _int(v, lo: int = 0, hi: int = _I64) -> bool:
    return type(v) is int and lo <= v <= hi


def _opt_int(v, lo: int = 0, hi: int = _I64) -> bool:
    return v is None or (type(v) is int and lo <= v <= hi)


def _str(v) -> bool:
    return type(v) is str


def _opt_str(v) -> bool:
    return v is None or type(v) is str


def _any_int(v) -> bool:
    return _int(v, -_I64)


def _instant(v) -> bool:
    return _int(v, _T_MIN, _T_MAX)


def _opt_instant(v) -> bool:
    return _opt_int(v, _T_MIN, _T_MAX)


def _instant_text(v) -> bool:
    """A text `rules.instant` reads, within the years a calendar handles."""
    try:
        return type(v) is str and _T_MIN <= rules.instant(v) <= _T_MAX
    except SNAPSHOT_ERRORS:
        return False


def _date_text(v) -> bool:
    try:
        return type(v) is str and _DAY_MIN <= dt.date.fromisoformat(v).toordinal() <= _DAY_MAX
    except ValueError:
        return False


def _ints(column, lo: Optional[int] = None, hi: Optional[int] = None) -> bool:
    """Every value an int (not a bool, a float, a text), in [lo, hi] when given. (A snapshot's
    integers are within 64 bits: `ledger.load_snapshot` reads no longer one.)"""
    if lo is None and hi is None:
        return set(map(type, column)) <= _INT
    column = list(column)
    return not column or (set(map(type, column)) == _INT and (lo is None or lo <= min(column))
                          and (hi is None or max(column) <= hi))


def _strs(column) -> bool:
    return set(map(type, column)) <= _STR


def _record(d, fields: dict, optional: Optional[dict] = None) -> bool:
    """A dict with exactly these keys (and any of `optional`), each value passing its check."""
    if type(d) is not dict or not all(k in d and ok(d[k]) for k, ok in fields.items()):
        return False
    return len(d) == len(fields) or all(k in fields or (optional and k in optional and optional[k](v))
                                        for k, v in d.items())


def _bonuses(v) -> bool:
    return type(v) is list and all(_record(b, {"reason": _str, "points": _int}) for b in v)


def _earn_record(rec) -> bool:
    """[id, at, kopecks, category, points, coefficient, rub/point, bonuses, kopecks refunded, points
    refunded, month]: as `rules.replay` makes them."""
    return (type(rec) is list and len(rec) == 11 and type(rec[0]) is str and _instant_text(rec[1])
            and type(rec[3]) is str and type(rec[5]) is str and _bonuses(rec[7])
            and all(type(rec[i]) is int for i in (2, 4, 6, 8, 9, 10)))


_ABSENT = object()


class CheckedEarns(dict):
    """A resumed member's earn records (ref -> record), each checked when it is read. A snapshot may
    hold 100,000 of them, and only a decision that names a ref reads one (an earn's duplicate, a
    refund): checking each as it is read costs a few µs, checking all of them up front ~100 ms on
    every write. A record a replay could not have made (planted) makes every record that of a
    replay of the whole ledger (`replayed`), as if there were no snapshot, before it is answered."""

    __slots__ = ("replayed",)

    def _sound(self, ref) -> None:
        rec = dict.get(self, ref, _ABSENT)
        if rec is not _ABSENT and not _earn_record(rec):
            records = self.replayed()
            dict.clear(self)
            dict.update(self, records)

    def __contains__(self, ref) -> bool:
        self._sound(ref)
        return dict.__contains__(self, ref)

    def __getitem__(self, ref):
        self._sound(ref)
        return dict.__getitem__(self, ref)

    def get(self, ref, default=None):
        self._sound(ref)
        return dict.get(self, ref, default)


def _rows(v, width: int, *checks) -> bool:
    """A list of lists of `width` items, the i-th passing checks[i]."""
    return type(v) is list and all(type(r) is list and len(r) == width and all(ok(x) for ok, x in zip(checks, r))
                                   for r in v)


_JOIN = {"id": _str, "type": lambda v: v == "join", "at": _instant_text, "region": _str, "method": _str,
         "customer_since": _date_text, "active_from": _instant_text}
_REFUND_VIEW = {"phone": _str, "ref": _str, "amount": _str, "points": _any_int, "points_taken": _any_int,
                "debt": _any_int, "not_recovered": _any_int, "refund_ref": _opt_str}
_ADJUST_VIEW = {"phone": _str, "points": _any_int, "reason": _str, "ref": _opt_str}
_GIFT_OUT = {"id": _str, "gift_id": _str, "to": _str, "points": _int, "offered_at": _instant, "deadline": _instant,
             "lots": lambda v: _rows(v, 3, lambda x: _int(x, _DAY_MIN, _DAY_MAX), _int, lambda x: _int(x, 0, 1)),
             "lost": _int, "status": lambda v: v in _GIFT_FINAL, "outcome": lambda v: v in _GIFT_FINAL,
             "when": _instant}
_GIFT_IN = {"id": _str, "gift_id": _str, "from": _str, "points": _int, "offered_at": _instant, "deadline": _instant,
            "lots": lambda v: _rows(v, 2, lambda x: _int(x, _DAY_MIN, _DAY_MAX), _int),
            "status": lambda v: v in _GIFT_FINAL, "at": _opt_instant}
_REFERRAL = {"id": _str, "referral_id": _str, "invitee": _str, "points": _int,
             "status": lambda v: v in ("credited", "void"), "credit_at": _opt_instant}


def _values(d, ok, key=None) -> bool:
    """A dict of records passing `ok`, each filed under its own `key` field."""
    return type(d) is dict and all(ok(v) and (key is None or v[key] == k) for k, v in d.items())


def snapshot_header_ok(doc, phone: str, key: str, full: bool) -> bool:
    """The fields that say which lines a snapshot covers: this phone, catalog and state format, and
    numbers a file can hold (an offset of 10**30 or -1, a text, a float: not a snapshot). A decision
    (`full`) needs one made from verified lines."""
    if type(doc) is not dict:
        return False
    lines, offset, last_len, last_hash = doc.get("lines"), doc.get("offset"), doc.get("last_len"), doc.get("last_hash")
    return (type(doc.get("format")) is int and doc["format"] == rules.STATE_FORMAT and doc.get("key") == key
            and doc.get("phone") == phone and _instant(doc.get("at")) and type(doc.get("verified")) is bool
            and (doc["verified"] or not full)
            and _int(lines, 1) and _int(last_len) and _int(offset, 1) and last_len < offset and lines <= offset
            and type(last_hash) is str and len(last_hash) == 32 and set(last_hash) <= _HEX
            and type(doc.get("state")) is dict)


def snapshot_state_ok(doc: dict, phone: str, full: bool) -> bool:
    """Every value of a snapshot's state that the command will read has the type and range a replay
    gives it (see above); `full`: a decision's, which may read any of it (its earn records are
    checked as they are read: `CheckedEarns`)."""
    from operator import itemgetter

    from bonuscli.rules import member as mm

    st = doc["state"]
    at = doc["at"]
    if set(st) != set(rules.STATE_FIELDS) or st["phone"] != phone:
        return False
    if not (_int(st["count"], 1, doc["lines"]) and st["last_at"] == at and st["now"] == at and type(at) is int
            and _opt_int(st["left_at"], _T_MIN, at) and _int(st["debt"]) and _int(st["repaid"]) and _int(st["seq"])
            and type(st["card_welcome_given"]) is bool and type(st["sealed"]) is list and _strs(st["sealed"])):
        return False
    joins, totals = st["joins"], st["totals"]
    if not (type(joins) is list and joins and _int(st["join"], 0, len(joins) - 1)
            and all(type(j) is dict and all(k in j and ok(j[k]) for k, ok in _JOIN.items())
                    and _bonuses(j.get("welcome", [])) and _opt_str(j.get("referral_id")) for j in joins)
            and type(totals) is dict and set(totals) == set(mm.TOTALS) and all(map(_int, totals.values()))):
        return False
    if st["left_at"] is not None and st["left_at"] < rules.instant(joins[st["join"]]["at"]):
        return False  # one leaves after joining
    if not (_rows(st["month_spend"], 3, _str, _int, _any_int)
            and _rows(st["orders"], 5, _instant, _str, _str, _opt_instant, _str)
            and _values(st["refunds"], lambda v: _record(v, _REFUND_VIEW), "refund_ref")
            and _values(st["adjusts"], lambda v: _record(v, _ADJUST_VIEW), "ref")
            and _values(st["gifts_out"], lambda v: _record(v, _GIFT_OUT, {"settled_at": _instant}), "gift_id")
            and _values(st["gifts_in"], lambda v: _record(v, _GIFT_IN), "gift_id")
            and _values(st["referrals"], lambda v: _record(v, _REFERRAL), "referral_id")
            and all(v["phone"] == phone for d in (st["refunds"], st["adjusts"]) for v in d.values())):
        return False
    lots, earns = st["lots"], st["earns"]
    if type(lots) is not list or type(earns) is not dict:
        return False
    if lots:  # [expires_on, seq, points, id, reason, credited_at, original]
        if set(map(type, lots)) != _LIST or not _ints(map(itemgetter(mm.EXP), lots), _DAY_MIN, _DAY_MAX) \
                or not _ints(map(itemgetter(mm.PTS), lots)):
            return False  # a read uses each lot's expiry (a date) and points
        if full and not (set(map(len, lots)) == {7} and _ints(map(itemgetter(mm.SEQ), lots), None, st["seq"])
                         and _strs(map(itemgetter(mm.LID), lots))):
            return False  # a new lot sorts after every lot (bisect compares no further); spending names lots
    return True


class Service:
    """A data directory (or a MemoryStore) under one catalog."""

    def __init__(self, store, catalog: Catalog, catalog_key: str = "", fault: Callable | None = None,
                 warn: Callable | None = None, snapshots: bool = True):
        self.store = store
        self.catalog = catalog
        self.key = f"{catalog_key}\0{__version__}\0{rules.STATE_FORMAT}"
        self.fault = fault
        self.warnings: list = []
        self.warn = warn or self.warnings.append
        self.snapshots = snapshots
        self.stats = {"replayed": 0, "resumed": 0, "snapshots_saved": 0, "peers_read": 0}
        self.opener = None  # set by open_dir: how a worker process opens the same service
        self.pending: list = []  # derived files to write once the command has succeeded (the catalog cache)
        # a one-shot process (the CLI) keeps what it read until it exits without freeing it: freeing
        # a replay of 100,000 events one object at a time costs more than a third of reading it
        self.keep_alive: list | None = None
        # a simulation (MemoryStore) keeps each member's state live between requests, which come in
        # time order: phone -> Member as of its last use, extended with what this service writes
        self.live: dict | None = None

    def finish(self) -> None:
        """After a command succeeded: write the derived files it deferred."""
        pending, self.pending = self.pending, []
        for write in pending:
            write()

    # ------------------------------------------------------------ the data directory

    def require_data(self) -> None:
        """Commands that only read need the data directory to exist (CLI.md §1)."""
        if not self.store.exists():
            raise BadInput(f"no data directory at {self.store.root} (a mistyped --data-dir?); "
                           "it is created by the first `bonuscli join`", "no-data-dir")

    def _warn_torn(self, led: LedgerRead) -> None:
        msg = torn_warning(led)
        if msg:
            self.warn(msg)

    # ------------------------------------------------------------ reading a member

    def member(self, phone: str, now, register: bool = False, full: bool = False, ledgers: dict | None = None):
        """A member as of `now` (datetime or epoch). `full`: as of the ledger's last event when that is
        later (decisions: a repeated ref is still found; anything else is refused as out of order).
        `ledgers` collects what was read (phone -> LedgerRead, the part after a snapshot)."""
        if self.live is not None:  # a simulation: its caller pauses the collector around the whole run
            return self._member(phone, now, register, full, ledgers)
        with gc_paused():
            m = self._member(phone, now, register, full, ledgers)
        if self.keep_alive is not None:
            self.keep_alive.append(m)
        return m

    def _member(self, phone, now, register, full, ledgers):
        t = now if isinstance(now, int) else rules.seconds(now)
        ledgers = ledgers if ledgers is not None else {}
        if self.live is not None and not register:
            return self._live(phone, t, full, ledgers)
        if not register and self.snapshots:
            m = self._resume(phone, t, full, ledgers)
            if m is not None:
                return m
        led = self.store.read(phone, verify=full)  # a decision verifies every line first: never
        ledgers[phone] = led                         # append to a ledger changed outside bonuscli
        self._warn_torn(led)
        if full:
            last = _last_at(led.events)
            if last is not None and last > t:
                t = last
        return self._replay(phone, led, t, register, verified=full)

    def _live(self, phone: str, t: int, full: bool, ledgers: dict):
        """The member kept live (simulations): moved forward to `t` when nothing of it waits on another
        ledger (then that is exactly a replay from scratch: only expiries and scheduled effects of its
        own lines), else replayed from scratch and kept."""
        led = self.store.read(phone)
        ledgers[phone] = led
        m = self.live.get(phone)
        current = m is not None and m.count == len(led.events)  # holds every line of the ledger
        if full:
            last = m.last_at if current else _last_at(led.events)
            if last is not None and last > t:
                t = last
        if current and m.now is not None and t >= m.now and (
                # what settled_state and peers_of answer for a member no gift or referral ever touched
                (not (m.gifts_out or m.gifts_in or m.referrals or m.sched) and m.join is not None)
                or (rules.settled_state(m) and not rules.peers_of(m, t))):
            rules.advance_to(m, t)
            return m
        m = self._replay(phone, led, t, False)
        last = _last_at(led.events)
        if last is None or t >= last:  # every line applied: it can be carried forward
            self.live[phone] = m
        else:  # as of an earlier moment: later lines were left out
            self.live.pop(phone, None)
        return m

    def _peers(self, phone: str, events, t: int) -> dict:
        """The ledgers of the members these events wait on; an unreadable one reads as absent
        (its own reads and `check --ledgers` report it)."""
        out = {}
        for p in rules.peers_needed(events, t):
            if p == phone:
                continue
            self.stats["peers_read"] += 1
            try:
                out[p] = self.store.read(p).events
            except (FilesError, ValueError):
                out[p] = ()
        return out

    def _replay(self, phone: str, led: LedgerRead, t: int, register: bool, base_doc: dict | None = None,
                verified: bool = False):
        """The member after the ledger's events up to `t`. A ledger whose lines chain but that the rules
        cannot replay (an event without a field its type needs, a text where a number belongs: edited
        and re-chained outside bonuscli) is FilesError `ledger-corrupt` naming its first such line,
        never an internal error. (From a snapshot: `_resume` falls back to a replay from scratch.)"""
        try:
            return self._play(phone, led, t, register, base_doc, verified)
        except UNREPLAYABLE as e:
            if base_doc is not None:
                raise
            raise self._unreplayable(phone, led, t, e) from None

    def _unreplayable(self, phone: str, led: LedgerRead, t: int, err: Exception) -> FilesError:
        """The error naming the first line the rules cannot replay (found by bisection on the prefixes:
        this runs only when a replay failed)."""
        from bonuscli.ledger import first_malformed, line_of

        bad = first_malformed(led.path, led.events)  # a field missing or of another kind: say which
        if bad:
            out = FilesError(f"{led.path}:{bad[0]}: corrupt ledger line ({bad[1]}); nothing was changed. Restore "
                             "the file from a backup, or inspect it with `bonuscli check --ledgers`",
                             "ledger-corrupt")
            out.line, out.cause = bad[0], f"corrupt ledger line ({bad[1]})"  # `line: cause`: what check says
            return out

        def fails(k: int) -> bool:
            try:
                part = led.events[:k]
                rules.play(rules.Member(self.catalog, phone), part, t, dict.fromkeys(rules.peers_needed(part, t), ()))
            except UNREPLAYABLE:
                return True
            return False

        lo, hi = 0, len(led.events)
        if not fails(hi):  # its own lines replay alone: one of the ledgers its gifts or referrals name cannot
            return FilesError(f"{led.path}: cannot be replayed with the ledgers its gifts and referrals name "
                              f"({type(err).__name__}: {err}); run `bonuscli check --ledgers`", "ledger-corrupt")
        while hi - lo > 1:  # prefix lo replays, prefix hi does not
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if fails(mid) else (mid, hi)
        event = led.events[hi - 1]
        line = line_of(led.path, event.get("id")) if isinstance(event, dict) else 1
        out = FilesError(f"{led.path}:{line}: the rules cannot replay this event ({type(err).__name__}: {err}): "
                         "the ledger was changed outside bonuscli; it is never written to (restore it from a "
                         "backup, or see `bonuscli check --ledgers`)", "ledger-corrupt")
        out.line, out.cause = line, f"the rules cannot replay this event ({type(err).__name__}: {err})"
        return out

    def _play(self, phone: str, led: LedgerRead, t: int, register: bool, base_doc: dict | None, verified: bool):
        events = led.events
        peers = self._peers(phone, events, t)
        self.stats["replayed"] += len(events)

        def fresh():
            if base_doc is not None:
                m = rules.from_plain(self.catalog, base_doc["state"])
                if verified:  # a decision's: it may read an earn record, each checked then (CheckedEarns)
                    m.earns = CheckedEarns(m.earns)
                    m.earns.replayed = lambda: self._replay(phone, self.store.read(phone, verify=True), t,
                                                            False, verified=True).earns
                return m
            m = rules.Member(self.catalog, phone)
            m.keep = register
            return m

        if (self.snapshots and not register and not peers and led.torn is None and not led.unterminated
                and len(events) >= SNAPSHOT_MIN):
            last = _last_at(events)
            if last is not None and last <= t:
                m = rules.play(fresh(), events, last, {})
                if rules.settled_state(m):
                    self._save(phone, m, led, last, verified)
                    rules.advance_to(m, t)  # nothing waits on another ledger: only expiries up to t
                    return m
        return rules.play(fresh(), events, t, peers)

    def _save(self, phone: str, m, led: LedgerRead, at: int, verified: bool) -> None:
        doc = {"format": rules.STATE_FORMAT, "key": self.key, "phone": phone, "lines": led.lines,
               "offset": led.size, "last_len": len(led.tail), "last_hash": line_hash(led.tail), "at": at,
               "verified": bool(verified), "state": rules.to_plain(m)}
        self.store.save_snapshot(phone, doc)
        self.stats["snapshots_saved"] += 1

    def _resume(self, phone: str, t: int, full: bool, ledgers: dict):
        doc = self.store.load_snapshot(phone)
        if doc is None:
            return None
        try:
            # a decision needs every line verified: a snapshot whose lines were not is not used for one
            if not snapshot_header_ok(doc, phone, self.key, full):
                return None
            tail = self.store.read_after(phone, doc["offset"], doc["last_len"], doc["last_hash"], doc["lines"] + 1,
                                         verify=full)
            if tail is None:
                return None
            at = doc["at"]
            first = next((e for e in tail.events if e["type"] != "repair"), None)
            if first is not None and rules.instant(first["at"]) < at:
                return None
            if full:
                last = _last_at(tail.events)
                if last is not None and last > t:
                    t = last
            if t < at:
                return None  # asked as of a moment before the snapshot: replay from scratch
            if not snapshot_state_ok(doc, phone, full):
                return None  # a planted or damaged state: as if there were no snapshot
            m = self._replay(phone, tail, t, False, base_doc=doc, verified=full)
        except SNAPSHOT_ERRORS:
            return None
        self.stats["resumed"] += 1
        ledgers[phone] = tail
        self._warn_torn(tail)
        return m

    def snapshot_forged(self, phone: str) -> Optional[str]:
        """For `check --ledgers`: why this member's snapshot is not what a replay from scratch of the
        lines it names gives, or None (no snapshot, one no command would use, or a true one). A forged
        snapshot is a planted answer: between two checks, a read shows it and a decision spends from it
        (the lines after it are verified, not the state)."""
        doc = self.store.load_snapshot(phone)
        if doc is None:
            return None
        try:
            if not (snapshot_header_ok(doc, phone, self.key, False) and snapshot_state_ok(doc, phone, False)):
                return None  # no command uses it: as if absent
            prefix = self.store.read_prefix(phone, doc["offset"], doc["last_len"], doc["last_hash"])
        except SNAPSHOT_ERRORS:
            return None
        if prefix is None or not prefix.events:
            return None  # the line it ends on is not there any more: no command uses it
        last = _last_at(prefix.events)
        m = rules.play(rules.Member(self.catalog, phone), prefix.events, last,
                       self._peers(phone, prefix.events, last))
        replayed = self.store.plain(rules.to_plain(m))
        wrong = [k for k, v in (("lines", prefix.lines), ("at", last)) if doc[k] != v]
        wrong += [k for k in rules.STATE_FIELDS if doc["state"].get(k) != replayed.get(k)]
        if not wrong:
            return None
        return (f"this snapshot is not what a replay of the {prefix.lines} ledger lines it names gives "
                f"(it differs in {', '.join(wrong)}): a forged derived file; deleting it is safe")

    # ------------------------------------------------------------ writing

    def transact(self, phones, now, decide):
        """Lock `phones` (sorted), read them under the lock, decide, write; the Decision's view."""
        t = now if type(now) is int else rules.seconds(now)
        phones = list(dict.fromkeys(phones))
        for attempt in range(5):
            try:
                with self.store.locked(phones):
                    ledgers: dict = {}
                    members = {p: self.member(p, t, full=True, ledgers=ledgers) for p in phones}
                    result = decided(decide(members, t))
                    self._write(result, members, ledgers, t)
                return result.view
            except Conflict:  # a new ledger appeared between our read and our write: decide again
                if attempt == 4:
                    raise

    def lines(self, phone: str, m, count: int, events, t: int) -> list:
        """THE stamping of a decision's events for one ledger, whoever decided them (a command, a batch
        row, a simulation): the member's seals first (outcomes now final, recorded once), then the
        events, as ledger lines numbered after `count`."""
        return stamp(phone, count, (rules.seals(self.catalog, m, t) if m is not None else []) + list(events))

    def _write(self, result: Decision, members: dict, ledgers: dict, t: int) -> None:
        for phone, events in result.writes:
            m = members.get(phone)
            led = ledgers[phone]
            count = (m.count if m is not None else len(led.events)) + (1 if led.torn else 0)
            stamped = self.lines(phone, m, count, events, t)
            self.store.append(phone, stamped, led, self.fault)
            if self.live is not None:
                if m is not None and self.live.get(phone) is m and not led.torn:
                    text, at = None, None
                    for e in stamped:  # the lines of one write share their instant: parsed once
                        if e["at"] != text:
                            text, at = e["at"], rules.instant(e["at"])
                        rules.extend(m, e, at)
                else:
                    self.live.pop(phone, None)

    # ------------------------------------------------------------ the commands that write

    def run(self, name: str, req, now, dry_run: bool = False, **opts):
        """THE way a request of a writing command is decided and written, wherever it comes from (the
        CLI, a batch row aside, a scenario step, an SMS, the Python API, diff's simulation): the members
        it involves (`commands.COMMANDS[name].phones`) locked and read, its rules decide, the events
        stamped after the members' seals and appended. The Decision's view; a refusal raised as its
        error. `dry_run`: decided the same way on the members read without the lock; nothing written."""
        cmd = COMMANDS[name]
        if name == "join" and not dry_run:
            self.store.prepare()  # the first join creates the data directory
        else:
            self.require_data()
        phones = cmd.phones(req, lambda p: self.member(p, now))
        cat = self.catalog
        if dry_run:
            t = now if type(now) is int else rules.seconds(now)
            members = {p: self.member(p, t, full=True) for p in dict.fromkeys(phones)}
            return dict(decided(cmd.decide(cat, members, t, req, **opts)).view, dry_run=True)
        return self.transact(phones, now, lambda ms, t: cmd.decide(cat, ms, t, req, **opts))

    def join(self, req: rq.Join, now):
        return self.run("join", req, now)

    def earn(self, req: rq.Earn, now, dry_run: bool = False, explain: bool = True):
        return self.run("earn", req, now, dry_run=dry_run, explain=explain)

    def redeem(self, req: rq.Redeem, now):
        return self.run("redeem", req, now)

    def gift(self, req: rq.Gift, now):
        return self.run("gift", req, now)

    def accept(self, req: rq.Accept, now):
        return self.run("accept", req, now)

    def leave(self, phone: str, now):
        return self.run("leave", rq.Leave(phone), now)

    def refund(self, req: rq.Refund, now, explain: bool = False):
        return self.run("refund", req, now)

    def adjust(self, req: rq.Adjust, now):
        return self.run("adjust", req, now)

    # ------------------------------------------------------------ the commands that read

    def balance(self, phone: str, now):
        self.require_data()
        return decided(rules.balance(self.member(phone, now), now)).view

    def forecast(self, phone: str, now, days=None, until=None):
        self.require_data()
        return decided(rules.forecast(self.member(phone, now), now, days, until)).view

    def history(self, phone: str, now) -> list:
        """The member's register: one row per movement, oldest first, each with a unique `id` and
        the same keys (HISTORY_KEYS; `event` is the ledger line or lot the row comes from)."""
        self.require_data()
        m = self.member(phone, now, register=True)
        if m.join is None and not m.register:
            raise rules.not_member(phone).error()
        return history_rows(m.register)

    def explain(self, phone: str, now, key=None):
        self.require_data()
        return decided(rules.explain(self.catalog, self.member(phone, now, register=True), now, key)).view

    def summary(self, phone: str, now):
        """The report's figures of one member (None for a ledger with no membership)."""
        return rules.summary(self.member(phone, now, register=True), now)

    # ------------------------------------------------------------ batches: rows of one member

    def commit(self, dry_run: bool = False):
        """What makes a batch's appends durable together (ledger.Commit); nothing for a dry run."""
        return NoCommit() if dry_run else self.store.commit(self.fault)

    def batch_member(self, phone: str, rows, default_now, dry_run: bool, decide, commit=None) -> list:
        """Decide a member's rows, each as of its own `at` (rows sorted by it), exactly as the single
        command would; write what was decided with one lock and one fsync. `rows`: [(at or None, req)],
        `at` a datetime or epoch seconds.
        Returns one outcome per row: ("applied", view) | ("duplicate", view) | (Refusal, None). With a
        `commit` (ledger.Commit), the lock is held and the bytes made durable by `commit.sync()`, with
        other members' writes: nothing of the outcomes may be reported before it returns."""
        t0 = rules.seconds(default_now)
        rows = [(t0 if at is None else at if type(at) is int else rules.seconds(at), req) for at, req in rows]
        for attempt in range(5):
            try:
                return self._batch_member(phone, rows, dry_run, decide, commit)
            except Conflict:  # its new ledger was created by another bonuscli meanwhile (nothing of ours was
                if attempt == 4:  # written: a creation is its member's first write): read it and decide again
                    raise

    def _batch_member(self, phone: str, rows, dry_run: bool, decide, commit) -> list:
        outcomes = []
        lock = self.store.locked([phone], commit) if not dry_run else _nolock()
        with lock:
            ledgers: dict = {}
            first = rows[0][0]
            m = self.member(phone, first, full=True, ledgers=ledgers)
            led = ledgers[phone]
            count = m.count + (1 if led.torn else 0)
            events = []
            for t, req in rows:
                if t > m.now:
                    if rules.peers_of(m, t):  # waits on another ledger: read it all again
                        if events and not dry_run:
                            self.store.append(phone, events, led, self.fault, commit)
                            events = []
                        if not dry_run:
                            ledgers = {}
                            m = self.member(phone, t, full=True, ledgers=ledgers)
                            led = ledgers[phone]
                            count = m.count + (1 if led.torn else 0)
                        else:
                            rules.advance_to(m, t)
                    else:
                        rules.advance_to(m, t)
                result = decide(m, t, req)
                if isinstance(result, Refusal):
                    outcomes.append((result, None))
                    continue
                if not result.writes:
                    outcomes.append(("duplicate", result.view))
                    continue
                at_text = m.cal.iso(t)
                for _p, evs in result.writes:
                    for e in self.lines(phone, m, count + len(events), evs, t):
                        events.append(e)
                        rules.extend(m, e, t if e["at"] == at_text else None)
                outcomes.append(("applied", result.view))
            if events and not dry_run and any(o[0] == "applied" for o in outcomes):
                self.store.append(phone, events, led, self.fault, commit)
        return outcomes

    # ------------------------------------------------------------ the operator's channels

    def operator(self, phone_text, text: str, region_text, kind: str, now) -> tuple:
        """An SMS to the short number or a USSD request, as the command it maps to.
        Returns (document, error or None): the reply line is part of the document either way."""
        from bonuscli import channels

        cat = self.catalog
        phone = rq.phone(phone_text)
        known = self.store.exists() and self.store.read(phone).events
        m = self.member(phone, now) if known else rules.Member(cat, phone)
        member = rules.status(m, rules.seconds(now)) not in ("none", "left")
        act = (channels.parse_sms if kind == "sms" else channels.parse_ussd)(cat, text, member)
        result, error = None, None
        try:
            if act.action == "join":
                if region_text is None:
                    raise BadInput(f"{phone} is not a member: to join by {kind}, give --region CODE", "usage")
                today = now.astimezone(cat.tz).date()
                result = self.run("join", COMMANDS["join"].build(
                    cat, {"phone": phone, "region": region_text, "method": act.args["method"]}, today), now)
            elif act.action == "balance":
                result = self.balance(phone, now)
            elif act.action == "forecast":
                result = self.forecast(phone, now)
            elif act.action == "leave":
                result = self.run("leave", COMMANDS["leave"].build(cat, {"phone": phone}, None), now)
            elif act.action == "gift":
                result = self.run("gift", COMMANDS["gift"].build(
                    cat, {"from": phone, "to": act.args["to"], "points": act.args["points"]}, None), now)
            elif act.action == "redeem":
                result = self.run("redeem", COMMANDS["redeem"].build(
                    cat, {"phone": phone, "code": act.args["code"], "via": kind}, None), now)
            elif act.action == "not-member":
                raise rules.not_member(phone).error()
            elif act.action == "already":
                raise Refusal(1, "already-member", f"{phone} is already a member").error()
            else:
                hint = act.args.get("hint") or (channels.sms_help(cat) if kind == "sms" else
                                                "dial *111*455*0# for your balance, or a reward's USSD code to order it")
                shown = text if len(text) <= 24 else text[:20] + "..."
                raise BadInput(f"unknown {'text' if kind == 'sms' else 'code'} {shown!r}: {hint}", "unknown-text")
        except BonusError as e:
            error = e
        line = channels.reply(act.action, result) if error is None else error.message
        action = act.action if act.action in ("join", "balance", "forecast", "leave", "gift", "redeem") else None
        doc = {"reply": line, "action": action, "result": result}
        if error is not None:
            doc["error"] = {"code": error.exit_code, "kind": error.kind, "message": error.message}
        return doc, error

    # ------------------------------------------------------------ the catalog

    def reward_doc(self, code: str, region: Optional[str] = None) -> dict:
        return reward_json(self.catalog, self.catalog.rewards[code], region)


HISTORY_KEYS = ("at", "id", "event", "type", "points", "balance", "detail", "ref", "gift_id", "code", "earned",
                "adjusted", "redeemed", "expired", "gifted", "refunded", "forfeited", "debt_repaid", "taken")
_COUNTS = ("points", "balance", "earned", "adjusted", "redeemed", "expired", "gifted", "refunded", "forfeited",
           "debt_repaid")


def history_rows(register) -> list:
    seen: dict = {}
    out = []
    for row in register:
        event = row["id"]
        rid = event if event not in seen else f"{event}/{row['type']}"
        n = 1
        while rid in seen:
            n += 1
            rid = f"{event}/{row['type']}/{n}"
        seen[rid] = True
        seen.setdefault(event, True)
        doc = {k: row.get(k, 0 if k in _COUNTS else ([] if k == "taken" else None)) for k in HISTORY_KEYS}
        doc["id"], doc["event"] = rid, event
        out.append(doc)
    return out


class _nolock:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def reward_json(cat: Catalog, r, region=None) -> dict:
    sd = cat.store_discount
    doc = {"code": r.code, "name": r.name, "category": r.category, "price": cat.price_for(r, region),
           "validity_days": r.validity_days, "activation": {"ussd": r.ussd, "sms": r.sms},
           "channels": list(r.channels),
           "limits": [{"per": lim.per, "max": lim.max} for lim in cat.limits_for(r)]}
    if r.code == sd.reward:
        doc["price"] = None
        doc["points_per_rub"] = sd.points_per_rub
        doc["max_share"] = str(sd.max_share)
    if r.region_prices:
        doc["region_prices"] = dict(r.region_prices)
    if r.issues_code:
        doc["issues_code"] = True
    return doc


def catalog_rows(cat: Catalog, region=None, category=None, search=None, max_price=None, channel=None) -> list:
    if category is not None and category not in cat.reward_categories:
        raise BadInput(f"unknown reward category '{category}'{rq.suggest(category, cat.reward_categories, '')} "
                       f"(categories: {', '.join(cat.reward_categories)})", "unknown-category")
    if channel is not None:
        channel = rq.channel(cat, channel)
    rows = []
    for r in cat.rewards.values():
        doc = reward_json(cat, r, region)
        if category and r.category != category:
            continue
        if channel and channel not in r.channels:
            continue
        if search and search.lower() not in (r.code + " " + r.name).lower():
            continue
        if max_price is not None and (doc["price"] is None or doc["price"] > max_price):
            continue
        rows.append(doc)
    return rows


def calc(cat: Catalog, now, amount_text, category_text, tenure_months=None, customer_since_text=None,
         card_last_month_text=None) -> dict:
    value = rq.amount(amount_text, cat)
    if tenure_months is not None and customer_since_text is not None:
        raise BadInput("give --tenure-months or --customer-since, not both", "usage")
    since = rq.date(customer_since_text, "--customer-since") if customer_since_text else None
    last = rq.total_rub(card_last_month_text, "--card-last-month")
    on = dt.date.fromordinal(rules.calendar_of(cat).day(rules.seconds(now))) if since is not None else None
    category = rq.category(cat, category_text)
    return decided(rules.calc(cat, value, category, months=tenure_months, since=since, on=on,
                              card_last_month=last)).view


# ---------------------------------------------------------------- opening a data directory


class Opener(Record):
    """How to open the same service in another process (a worker of --jobs or of Dask)."""

    data_dir: str
    catalog_path: str
    shown: str
    lock_timeout: float = 10.0
    snapshots: bool = True
    catalog_cache: bool = True

    def open(self, warn=None) -> "Service":
        return open_dir(Path(self.data_dir), Path(self.catalog_path), self.shown, self.lock_timeout, warn=warn,
                        snapshots=self.snapshots, catalog_cache=self.catalog_cache)


def open_dir(data_dir: Path, catalog_path: Path, shown: str, lock_timeout: float = 10.0, fault=None, warn=None,
             snapshots: bool = True, catalog_cache: bool = True) -> Service:
    """A Service over a data directory with the catalog at `catalog_path` (parsed once, cached as
    plain data under `<data-dir>/cache/`; `catalog_cache=False`: parsed, the cache neither read nor
    written, as `check --ledgers` does, which verifies the cache)."""
    from bonuscli import catalog as catalog_mod

    data_dir, catalog_path = Path(data_dir), Path(catalog_path)
    pending: list = []
    cache_dir = paths.cache_dir(data_dir) if catalog_cache and data_dir.is_dir() else None
    cat = catalog_mod.load(catalog_path, shown, cache_dir, pending)
    key = catalog_mod.identity(catalog_path)
    svc = Service(FileStore(data_dir, lock_timeout), cat, key, fault=fault, warn=warn, snapshots=snapshots)
    svc.pending = pending
    svc.opener = Opener(str(data_dir), str(catalog_path), shown, lock_timeout, snapshots, catalog_cache)
    return svc


def corrupt_ledger(data_dir: Path) -> Optional[FilesError]:
    """After a command failed in a way no rule foresaw: the first ledger line of the data directory that
    does not hold what its type needs (edited and re-chained outside bonuscli), as the error to report
    instead of an internal one (`ledger-corrupt`, with its path and line), or None. Only ever run on that
    failure: plain reads do not check fields."""
    from bonuscli.ledger import first_malformed

    store = FileStore(Path(data_dir))
    try:
        phones = store.phones()
    except OSError:
        return None
    for phone in phones:
        try:
            led = store.read(phone)
        except FilesError as e:
            return e
        except (OSError, ValueError):
            continue
        bad = first_malformed(led.path, led.events)
        if bad:
            line, why = bad
            return FilesError(f"{led.path}:{line}: corrupt ledger line ({why}); nothing was changed. Restore the "
                              "file from a backup, or inspect it with `bonuscli check --ledgers`", "ledger-corrupt")
    return None


def in_memory(cat: Catalog, files: dict | None = None, live: bool = True) -> Service:
    from bonuscli.ledger import MemoryStore

    svc = Service(MemoryStore(files), cat, "memory", snapshots=False)
    svc.live = {} if live else None
    return svc


__all__ = ["Service", "open_dir", "in_memory", "stamp", "decided", "reward_json", "catalog_rows", "calc",
           "BonusError", "money"]
