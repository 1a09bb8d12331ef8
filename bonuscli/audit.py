"""`check --ledgers`: every ledger of a data directory, and the invariants across them.

Owns: the invariant checker used by tests and by the command. Reads ledgers
through the service's store (never writes, never trusts a snapshot); the
arithmetic is the rules' replay. Returns problems as values. Imports model,
ledger, rules, fleet.

One ledger is checked by a table of small checks, `LEDGER_CHECKS`, as the
catalog is by `catalog.CATALOG_CHECKS`. `check_ledger` builds a
`LedgerContext` (the ledger as read once with its chain's problems, the
moment, the catalog, the peer ledgers read on demand, the replay made on first
use) and `run_checks` runs the table in order. Each check is a module-level
function `(ctx) -> [Found(line, message, event)]`, and belongs to a stage:

- read:    check_chain (the hash chain, verified by the read itself),
           check_torn (an unfinished last line);
- lines:   check_ids (duplicate ids), check_times (dated before the line above),
           check_refs (a reference applied twice);
- replay:  check_replay (the rules can replay it: returns `Stop` when they
           cannot, and no later check runs), check_conservation (the points add up);
- links:   check_gift_out, check_gift_in, check_gift_settle, check_gift_decision,
           check_referral, check_referred_join (both sides of every gift and referral).

Problems come out stage by stage, and within a stage in the order of the events
they are about (each event's in the checks' order). Then the anchor: a
directory's chain heads saved, and compared later (`check_anchor`).
"""

from __future__ import annotations

from functools import lru_cache
from itertools import groupby
from typing import NamedTuple

from bonuscli import ledger as ledger_mod
from bonuscli import rules
from bonuscli.model import FilesError


DERIVED_FORGED = "derived-file-forged"  # the kind of a snapshot or catalog cache that is not what it derives from


def _problem(path, line, message):
    return {"path": str(path), "line": line, "message": message, "text": f"{path}:{line}: {message}"}


def conservation(m) -> tuple:
    """(left side, right side) of: credited + received = available + spent + expired
    + forfeited + gifted + held + refunded - debt + debited (held: still valid; what expired
    while held is in expired)."""
    t = m.totals
    lhs = t["credited"] + t["received"]
    rhs = (m.available() + t["spent"] + t["expired"] + t["forfeited"] + t["gifted"] + m.held_out()
           + t["refunded"] + t["debited"] - m.debt)
    return lhs, rhs


def line_of(led, event_id) -> int:
    """1-based line number of an event in a ledger file (by id)."""
    return ledger_mod.line_of(led.path, event_id)


def check_member(svc, phone, now) -> tuple:
    """One ledger checked, reading the other ledgers its gifts and referrals name: (its problems,
    the lines read (events, repairs included), the repairs accepted as `{path, line, sealed}`)."""
    from bonuscli.service import gc_paused

    with gc_paused():
        return _check_member(svc, phone, now)


def _check_member(svc, phone, now) -> tuple:
    path = svc.store.path(phone)
    try:
        led, chain = svc.store.read_checked(phone)
    except FilesError as e:
        return [{"path": str(path), "line": 0, "message": e.message, "text": e.message, "unreadable": True}], 0, []
    problems = check_ledger(svc, phone, led, now, chain)
    if not problems:  # the derived file: what a replay of the (sound) lines it names gives, or forged
        forged = svc.snapshot_forged(phone)
        if forged:
            problems.append(dict(_problem(svc.store.snapshot_path(phone), 1, forged), kind=DERIVED_FORGED))
    repairs = [{"path": str(path), "line": line_of(led, e["id"]), "sealed": e.get("line")}
               for e in led.events if e.get("type") == "repair"]
    return problems, len(led.events), repairs


def check_dir(svc, now, jobs=None, engine=None) -> list:
    """Problems of every ledger in the data directory (see `check_dir_summary`)."""
    return check_dir_summary(svc, now, jobs, engine)["problems"]


def check_dir_summary(svc, now, jobs=None, engine=None) -> dict:
    """`check --ledgers`: every ledger of the data directory checked, spread over `jobs` processes (or
    the workers of `engine`): {problems (unreadable ledgers first, then each ledger's in phone order),
    ledgers (files read), events (lines read), repairs (every repair accepted)}."""
    from bonuscli import fleet

    unreadable, problems, repairs = [], [], []
    ledgers = events = 0
    for found, n, fixed in fleet.map_members(svc, now, check_member, jobs, engine=engine):
        ledgers += 1
        events += n
        repairs.extend(fixed)
        for p in found:
            (unreadable if p.pop("unreadable", False) else problems).append(p)
    return {"problems": unreadable + problems, "ledgers": ledgers, "events": events, "repairs": repairs}


def check_catalog_cache(svc) -> list:
    """The catalog cache a command would use under the service's catalog, compared with that catalog,
    which must be a parse of the file (`open_dir(..., catalog_cache=False)`): [] or its problem."""
    from pathlib import Path

    from bonuscli import catalog as catalog_mod
    from bonuscli import paths

    o = svc.opener
    if o is None or o.catalog_cache:
        return []
    cache = catalog_mod.cache_forged(Path(o.catalog_path), o.shown, paths.cache_dir(Path(o.data_dir)), svc.catalog)
    if cache is None:
        return []
    return [dict(_problem(cache, 1, f"this catalog cache is not what a parse of {o.shown} gives: a forged derived "
                                    "file; deleting it is safe"), kind=DERIVED_FORGED)]


class _Peers(dict):
    """Ledgers read on demand (a missing or unreadable one reads as absent: its own check reports it)."""

    def __init__(self, store):
        super().__init__()
        self.store = store

    def __missing__(self, phone):
        try:
            led = self.store.read(phone)
        except (FilesError, ValueError):
            led = None
        self[phone] = led
        return led

    def get(self, phone, default=None):
        led = self[phone]
        return led if led is not None and led.size else default


# ---------------------------------------------------------------- the ledger checks (LEDGER_CHECKS)


class Found(NamedTuple):
    """One problem a check found in the ledger it checks (shown as `path:line: message`)."""

    line: int
    message: str
    event: int = 0  # the index in `led.events` of the event it is about: orders a stage's problems


class Stop(list):
    """What a check returns when the checks after it would be meaningless: its problems (never
    none), and no later check runs."""


class LedgerContext:
    """What a ledger check reads: one ledger, read once, and what is derived from it."""

    def __init__(self, svc, phone, led, now, chain):
        self.catalog = svc.catalog
        self.phone = phone
        self.led = led  # ledger.LedgerRead: the events, the path, a torn last line
        self.now = now  # the moment checked (`--at`)
        self.chain = chain  # (line, message) of the hash chain's problems, from the same read (`read_checked`)
        self.ledgers = _Peers(svc.store)  # phone -> LedgerRead: this one, and the peers read on demand
        self.ledgers[phone] = led
        self.types = {e["type"] for e in led.events}  # the types of its events (`_events`)
        self._member = None
        self._svc = svc

    @property
    def member(self):
        """The rules' replay of the ledger as of `now` (reading the peers it needs), or the exception
        that stopped it. Replayed once, when check_replay first asks (after the earlier stages, as a
        ledger that cannot be replayed is still checked line by line)."""
        if self._member is None:
            self._member = self._replay()
        return self._member

    def _replay(self):
        t = rules.seconds(self.now)
        try:
            peers = {}
            for p in rules.peers_needed(self.led.events, t):
                other = self.ledgers.get(p)
                peers[p] = other.events if other is not None else ()
            return rules.replay(self.catalog, self.phone, self.led.events, t, peers)
        except Exception as e:  # a ledger the rules cannot replay is unsound: check_replay says so, and where
            try:
                return self._svc._unreplayable(self.phone, self.led, t, e)
            except Exception:
                return e


def _stage(name: str):
    """Put a check in a stage (see LEDGER_CHECKS)."""

    def mark(check):
        check.stage = name
        return check

    return mark


def _events(ctx, *types):
    """(index, event) of the ledger's events of these types, in ledger order."""
    if ctx.types.isdisjoint(types):
        return ()  # the common case for most of the checks of one type: one set lookup, no pass
    return [(i, e) for i, e in enumerate(ctx.led.events) if e["type"] in types]


# -- stage "read": what reading the file found


@_stage("read")
def check_chain(ctx) -> list:
    """Every line follows the one above it in the hash chain. The chain was verified by the read
    itself (`ledger.read_checked`: on the decoded events, line by line at the first doubt)."""
    return [Found(n, message) for n, message in ctx.chain]


@_stage("read")
def check_torn(ctx) -> list:
    """No unfinished last line (an interrupted append: reported, not tampering)."""
    if ctx.led.torn is None:
        return []
    return [Found(ctx.led.torn.line, f"unfinished last line (an interrupted write); {ledger_mod.torn_fate(ctx.led)}")]


# -- stage "lines": each line on its own and against the lines above it


@_stage("lines")
def check_ids(ctx) -> list:
    """No two events with the same id (shown at the line of the first)."""
    events = ctx.led.events
    if len({e["id"] for e in events}) == len(events):
        return []  # the common case, in one set comprehension
    out, seen = [], set()
    for i, e in enumerate(events):
        if e["id"] in seen:
            out.append(Found(line_of(ctx.led, e["id"]), f"duplicate event id {e['id']}", i))
        seen.add(e["id"])
    return out


@_stage("lines")
def check_times(ctx) -> list:
    """No event (but a repair) dated before the one above it."""
    out, last = [], ""
    for i, e in enumerate(ctx.led.events):
        if e["type"] == "repair":
            continue
        text = e["at"]
        if last and len(text) == 25 and len(last) == 25 and text[19:] == last[19:]:
            earlier = text < last  # the stored shape, the same offset: the texts order as the instants do
        else:
            earlier = bool(last) and rules.instant(text) < rules.instant(last)
        if earlier:
            out.append(Found(line_of(ctx.led, e["id"]), f"event {e['id']} is dated before the one above it", i))
        last = text
    return out


_REF_TYPES = frozenset(("earn", "refund", "adjust"))


@_stage("lines")
def check_refs(ctx) -> list:
    """No reference applied twice by events of one type (earn, refund, adjust)."""
    out, refs = [], {}
    for i, e in enumerate(ctx.led.events):
        if e["type"] not in _REF_TYPES or e.get("ref") is None:
            continue
        key = (e["type"], e["ref"])
        if key in refs:
            out.append(Found(line_of(ctx.led, e["id"]),
                             f"reference {e['ref']} applied twice ({e['type']}; first {refs[key]})", i))
        refs[key] = e["id"]
    return out


# -- stage "replay": the rules' replay of the whole ledger


@_stage("replay")
def check_replay(ctx) -> list:
    """The rules can replay the ledger. If they cannot, no check after this one runs: they all
    read the replay, or the events the rules could not make sense of."""
    e = ctx.member
    if isinstance(e, Exception):
        if isinstance(e, FilesError) and getattr(e, "line", None):  # the first line the rules cannot replay
            return Stop([Found(e.line, e.cause)])
        return Stop([Found(1, f"cannot replay this ledger ({type(e).__name__}: {e})")])
    return []


@_stage("replay")
def check_conservation(ctx) -> list:
    """Every point credited or received is accounted for (`conservation`)."""
    m = ctx.member
    lhs, rhs = conservation(m)
    if lhs == rhs:
        return []
    return [Found(1, f"points do not add up: credited+received {lhs} != accounted {rhs} "
                     f"(totals {m.totals}, available {m.available()}, held {m.held_out()}, debt {m.debt})")]


# -- stage "links": both sides of every gift and referral


@_stage("links")
def check_gift_out(ctx) -> list:
    """A gift offered here is in the recipient's ledger, the same, unless it was cancelled."""
    out, led = [], ctx.led
    for i, e in _events(ctx, "gift_out"):
        other = ctx.ledgers.get(e["to"])
        theirs = other.events if other else ()
        inn = [x for x in theirs if x["type"] == "gift_in" and x.get("gift_id") == e["gift_id"]]
        status, _ = rules.gift_outcome(e["gift_id"], led.events, theirs, ctx.now, ctx.catalog)
        if inn:
            x = inn[0]
            if x["points"] != e["points"] or x["from"] != ctx.phone or x.get("lots") != e.get("lots"):
                out.append(Found(line_of(led, e["id"]),
                                 f"gift {e['gift_id']} differs from its copy in {e['to']}'s ledger", i))
        elif status != "cancelled":
            settle = next((x for x in led.events if x["type"] == "gift_settle" and x["gift_id"] == e["gift_id"]), None)
            if settle is None or settle["outcome"] != "cancelled":
                out.append(Found(line_of(led, e["id"]), f"gift {e['gift_id']} is missing from {e['to']}'s ledger", i))
    return out


@_stage("links")
def check_gift_in(ctx) -> list:
    """A gift received here was offered in the sender's ledger."""
    out = []
    for i, e in _events(ctx, "gift_in"):
        other = ctx.ledgers.get(e["from"])
        if not any(x["type"] == "gift_out" and x.get("gift_id") == e["gift_id"]
                   for x in (other.events if other else ())):
            out.append(Found(line_of(ctx.led, e["id"]), f"gift {e['gift_id']} has no offer in {e['from']}'s ledger",
                             i))
    return out


@_stage("links")
def check_gift_settle(ctx) -> list:
    """A gift settled here was offered here, and its outcome is the recipient's decision."""
    out, led = [], ctx.led
    for i, e in _events(ctx, "gift_settle"):
        offer = next((x for x in led.events if x["type"] == "gift_out" and x["gift_id"] == e["gift_id"]), None)
        if offer is None:
            out.append(Found(line_of(led, e["id"]), f"settles unknown gift {e['gift_id']}", i))
            continue
        other = ctx.ledgers.get(offer["to"])
        decision = next((x for x in (other.events if other else ())
                         if x["type"] in ("gift_accept", "gift_reject") and x.get("gift_id") == e["gift_id"]), None)
        if decision is not None:
            want = "accepted" if decision["type"] == "gift_accept" else "rejected"
            if e["outcome"] != want:
                out.append(Found(line_of(led, e["id"]),
                                 f"gift {e['gift_id']} recorded {e['outcome']} here but {want} by {offer['to']}", i))
        elif e["outcome"] in ("accepted", "rejected"):
            out.append(Found(line_of(led, e["id"]),
                             f"gift {e['gift_id']} recorded {e['outcome']} here, but {offer['to']}'s ledger has "
                             "no such decision (was it restored from an older copy?)", i))
    return out


@_stage("links")
def check_gift_decision(ctx) -> list:
    """A gift accepted or rejected here was received here and offered in the sender's ledger."""
    out, led = [], ctx.led
    for i, e in _events(ctx, "gift_accept", "gift_reject"):
        own = next((x for x in led.events if x["type"] == "gift_in" and x.get("gift_id") == e["gift_id"]), None)
        other = ctx.ledgers.get(e["from"])
        offer = next((x for x in (other.events if other else ())
                      if x["type"] == "gift_out" and x.get("gift_id") == e["gift_id"]), None)
        if own is None or offer is None:
            where = "this ledger" if own is None else f"{e['from']}'s ledger"
            out.append(Found(line_of(led, e["id"]),
                             f"gift {e['gift_id']} is decided here but its offer is missing from {where}", i))
    return out


@_stage("links")
def check_referral(ctx) -> list:
    """A referral credited here (confirmed) has the invitee's join naming it."""
    out, led = [], ctx.led
    for i, e in _events(ctx, "referral"):
        other = ctx.ledgers.get(e["invitee"])
        joined = any(x["type"] == "join" and x.get("referral_id") == e["referral_id"]
                     for x in (other.events if other else ()))
        settle = next((x for x in led.events
                       if x["type"] == "referral_settle" and x.get("referral_id") == e["referral_id"]), None)
        if not joined and settle is not None and settle.get("outcome") == "confirmed":
            out.append(Found(line_of(led, e["id"]),
                             f"referral {e['referral_id']} was credited here, but {e['invitee']}'s ledger has no "
                             "join naming it (was it restored from an older copy?)", i))
    return out


@_stage("links")
def check_referred_join(ctx) -> list:
    """A join on a referral has the referral in the referrer's ledger."""
    out = []
    for i, e in enumerate(ctx.led.events):  # every ledger has a join: no `_events`
        if e["type"] != "join" or not e.get("referral_id"):
            continue
        other = ctx.ledgers.get(e.get("referrer") or "")
        if not any(x["type"] == "referral" and x.get("referral_id") == e["referral_id"]
                   for x in (other.events if other else ())):
            out.append(Found(line_of(ctx.led, e["id"]), f"joined on referral {e['referral_id']}, which is missing "
                                                        f"from {e.get('referrer')}'s ledger", i))
    return out


# The table: run in this order. Its problems are reported stage by stage (read, lines, replay,
# links), and within a stage in the order of the events they are about, each event's in the order of
# the checks: what one pass over the events doing every check of the stage would report. A check
# that returns `Stop` ends the run (check_replay: a ledger the rules cannot replay).
LEDGER_CHECKS = (
    check_chain,
    check_torn,
    check_ids,
    check_times,
    check_refs,
    check_replay,
    check_conservation,
    check_gift_out,
    check_gift_in,
    check_gift_settle,
    check_gift_decision,
    check_referral,
    check_referred_join,
)


@lru_cache(maxsize=8)
def _stages(checks) -> tuple:
    """The checks grouped in their stages: runs of consecutive checks of one stage."""
    return tuple(tuple(stage) for _name, stage in groupby(checks, key=lambda check: check.stage))


def run_checks(ctx: LedgerContext, checks=LEDGER_CHECKS) -> list:
    """The problems (`_problem` dicts) the checks find in the context's ledger (see LEDGER_CHECKS)."""
    out = []
    for stage in _stages(checks):
        found, stop = [], False
        for check in stage:
            try:
                got = check(ctx)
            except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
                # a line that chains but lacks what its type needs, here or in a ledger this one names
                # (edited and re-chained outside bonuscli): a problem to report, never an internal error
                got = [Found(1, f"{check.__name__[6:].replace('_', ' ')}: cannot read the events involved "
                                f"({type(e).__name__}: {e}); a ledger was edited outside bonuscli (the other "
                                "ledgers' own problems are listed under their paths)")]
            if got:
                found.extend(got)
                if type(got) is Stop:
                    stop = True
                    break
        if found:
            found.sort(key=lambda f: f.event)  # stable: each event's problems stay in the checks' order
            said = {(p["line"], p["message"]) for p in out}  # a corrupt line, read and then not replayed: once
            out.extend(_problem(ctx.led.path, f.line, f.message) for f in found if (f.line, f.message) not in said)
        if stop:
            break
    return out


def check_ledger(svc, phone, led, now, chain) -> list:
    """Every problem of one ledger; `chain`: its hash chain's problems, read with it (`read_checked`)."""
    return run_checks(LedgerContext(svc, phone, led, now, chain))


# ---------------------------------------------------------------- the directory anchor

ANCHOR_FORMAT = 1


def _heads(svc) -> dict:
    """phone -> {lines, hash}: each ledger's complete lines and the hash of its last one (the chain
    head: with a verified chain it stands for every line before it)."""
    out = {}
    for phone in svc.store.phones():
        path = svc.store.path(phone)
        try:
            data = ledger_mod._read_bytes(path, ledger=True)  # a ledger others may write is refused
        except (OSError, FilesError):
            continue
        lines = data.split(b"\n")
        lines.pop()  # after the last newline: empty, or a torn line (not part of the anchor)
        out[phone] = {"lines": len(lines), "hash": ledger_mod.line_hash(lines[-1]) if lines else ""}
    return out


def _digest(ledgers: dict, previous=None) -> str:
    """The digest over an anchor's content: its ledgers' heads (and the digest of the anchor before
    it, when it names one)."""
    import hashlib
    import json

    content = ledgers if previous is None else {"ledgers": ledgers, "previous": previous}
    return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def anchor(svc, previous: str | None = None) -> dict:
    """The directory's anchor (CLI.md `check --ledgers --save-anchor`); `previous`: the digest of the
    anchor it was checked against, so that successive anchors form a chain an auditor can walk."""
    ledgers = _heads(svc)
    doc = {"format": ANCHOR_FORMAT, "ledgers": ledgers}
    if previous is not None:
        doc["previous"] = previous
    doc["digest"] = _digest(ledgers, previous)
    return doc


def read_anchor(data: bytes, name: str) -> dict:
    """An anchor file's document; one that is not JSON, or nested beyond reason, is FilesError."""
    import json

    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as e:
        msg = "nested too deeply" if isinstance(e, RecursionError) else str(e)
        raise FilesError(f"{name}:1: cannot read the anchor ({msg})", "anchor-invalid") from None
    return doc


def anchor_digest(doc) -> str | None:
    """The digest of an anchor's content as it is now (None when it is not an anchor): what
    `--save-anchor` printed, if nobody changed it."""
    if not isinstance(doc, dict) or not isinstance(doc.get("ledgers"), dict):
        return None
    previous = doc.get("previous")
    try:
        return _digest(doc["ledgers"], previous if isinstance(previous, str) else None)
    except (TypeError, ValueError, RecursionError):
        return None


def check_anchor(svc, doc, name: str) -> list:
    """Problems of the directory against an anchor saved earlier: every ledger it names still exists
    and still starts with exactly the lines it had (appended lines and new ledgers are fine)."""
    if (not isinstance(doc, dict) or doc.get("format") != ANCHOR_FORMAT or not isinstance(doc.get("ledgers"), dict)
            or doc.get("digest") != anchor_digest(doc)):
        return [_problem(name, 1, "not an anchor written by `check --ledgers --save-anchor`, or it was changed "
                                  "(its digest does not match)")]
    out = []
    for phone, head in sorted(doc["ledgers"].items()):
        if not (isinstance(head, dict) and type(head.get("lines")) is int and head["lines"] >= 0
                and isinstance(head.get("hash"), str)):
            out.append(_problem(name, 1, f"the anchor's entry for {phone!r} is not a line count and a hash"))
            continue
        try:
            path = svc.store.path(phone)
        except ValueError:
            out.append(_problem(name, 1, f"the anchor names {phone!r}, which is not a phone"))
            continue
        try:
            data = ledger_mod._read_bytes(path, ledger=True)  # a ledger others may write is refused
        except FileNotFoundError:
            out.append(_problem(path, 1, f"this ledger was deleted since the anchor ({head['lines']} lines then)"))
            continue
        except (OSError, FilesError) as e:
            out.append(_problem(path, 1, f"cannot read it to compare with the anchor: {e}"))
            continue
        lines = data.split(b"\n")
        lines.pop()
        n = head["lines"]
        if len(lines) < n:
            out.append(_problem(path, max(len(lines), 1), f"this ledger has {len(lines)} lines, but had {n} when the "
                                                         "anchor was saved: it was truncated or restored from an "
                                                         "older copy"))
        elif n and ledger_mod.line_hash(lines[n - 1]) != head["hash"]:
            out.append(_problem(path, n, "this line is not the one the anchor saw: the ledger was edited, rewritten "
                                         "or restored from another copy"))
        else:
            for i, raw in enumerate(lines[n:], start=n + 1):  # a repair may never seal a line the anchor counted
                if b'"repair"' not in raw:
                    continue
                try:
                    event = ledger_mod.decode(raw)
                except ValueError:
                    continue
                if isinstance(event, dict) and event.get("type") == "repair" and type(event.get("line")) is int \
                        and event["line"] <= n:
                    out.append(_problem(path, i, f"a repair names line {event['line']}, which the anchor counted "
                                                 "as a whole line: tampering"))
    return out
