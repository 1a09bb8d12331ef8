"""The registry of commands that write: each declared once, with everything every entry point needs.

A command here is the one place that says, for `join`, `earn`, `redeem`, `gift`,
`accept`, `leave`, `refund` and `adjust`:

- `keys`: the names of its values (a scenario step's keys, a batch file's
  columns, the Python API's arguments, and the Click parameters' names);
- `build(cat, values, today, batch)`: its request, parsed and validated by
  `requests.py` from those values (text or numbers, as a user gives them);
- `phones(request, member)`: the members it locks and decides on (`member(p)`
  reads one, for a command that must look its peer up first: `accept`);
- `decide(cat, members, t, request, **opts)`: the rules' Decision or Refusal;
- `batch`: (required columns, optional columns) when it has `--from FILE`;
- `scenario`: how a scenario step spells it (positional keys, options, flags);
- `recorded` and `values_of(event, ...)`: the ledger events that are its own
  record, and the values that made them (how `diff` re-decides it under
  another catalog, through `build` and `decide` again);
- `links`: the fields of its events that name another member (a gift's
  recipient, a referral's invitee): what ties ledgers together for `diff`'s
  groups and the peers a replay reads;
- `describe(phone, values)`: the command line that asks it (diff's reports);
- `cli`: its parameters as the command line takes them (argument or option,
  `--help` text, completion kind, default): the CLI's Click parameters are
  made from these (`cli.registry_params`).

The CLI's parameters, the batch readers (`batch.SPECS`), the scenario runner
(`scenario.COMMANDS`), `diff`'s simulation (`simulate.requests_of`,
`simulate.World`) and the service (`Service.run`) are built from `COMMANDS`.
Pure: no files, clock or environment. Imports model, requests, rules.
"""

from __future__ import annotations

import datetime as dt
import importlib
from typing import Callable, Optional

from bonuscli.model import Record


class _Lazy:
    """A module imported on first use, which then takes this name's place in this module's globals
    (each later call finds the module itself). Importing the registry, as the CLI does at start-up
    for its parameters, stays light: `--version` imports no rules."""

    def __init__(self, name: str, alias: str):
        self.__dict__.update(_name=name, _alias=alias)

    def __getattr__(self, attr):
        module = importlib.import_module(self.__dict__["_name"])
        globals()[self.__dict__["_alias"]] = module
        return getattr(module, attr)


rq = _Lazy("bonuscli.requests", "rq")
rules = _Lazy("bonuscli.rules", "rules")


class Scenario(Record):
    """How a scenario step spells a command (docs/ci.md)."""

    positional: tuple  # argument keys, in order
    options: dict  # key -> --option
    flags: dict  # key -> --flag (a boolean)
    required: tuple
    extra: tuple = ()  # arguments always added
    phone_keys: tuple = ("phone",)  # keys normalised as phones for `members` look-ups
    output: str = "json"  # json | lines (history)


class Param(Record):
    """One value of a command as the command line takes it (and its `--help` line)."""

    key: str  # the value's key (`Command.keys`)
    option: str = ""  # "--option" (or a flag's "--flag"); "" for a positional argument
    help: str = ""
    complete: Optional[str] = None  # completion kind: phone, region, method, category, reward, channel, gift
    required: bool = False
    default: object = None
    flag: bool = False
    name: Optional[str] = None  # the Click parameter's name, when the key is not an identifier ("from")
    metavar: Optional[str] = None


class Command(Record):
    name: str
    keys: tuple
    build: Callable  # (cat, values, today, batch=False) -> request
    phones: Callable  # (request, member) -> [phone], the first the one who asks
    decide: Callable  # (cat, members, t, request, **opts) -> Decision | Refusal
    scenario: Scenario
    recorded: tuple = ()  # event types that are this command's own record
    values_of: Optional[Callable] = None  # (event, Context) -> values | None (not a request)
    links: dict = {}  # event type -> fields naming another member
    describe: Optional[Callable] = None  # (phone, values) -> the command line
    batch: Optional[tuple] = None  # (required columns, optional columns) of `--from FILE`
    priority: int = 9  # order between ledgers of requests at the same instant (diff)
    cli: tuple = ()  # its Params as the command line takes them, in `--help` order
    batch_opts: dict = {}  # what a batch row's decision is also given (join: `again`, re-run rows are duplicates)
    defer: Optional[Callable] = None  # request -> True when a batch decides it after the other rows (a join
    #                                   with a referrer: it writes to the referrer's ledger too)
    dated: bool = False  # `build` checks dates against the program's today (others are given None)


class Context(Record):
    """What rebuilding a request from its recorded event may look at besides the event."""

    events: list  # the ledger's events
    index: int  # the event's place in them
    cat: object  # the catalog the ledgers were written under (as far as we know), or None
    first: bool  # a join: the ledger's first
    gifts_made: frozenset  # the gift ids whose offer reached the recipient's ledger (gift_in)


def given(values: dict, key: str):
    """A batch cell's value: an empty optional column is no value."""
    v = values.get(key)
    return None if v is None or (isinstance(v, str) and not v.strip()) else v


def _get(values: dict, key: str, batch: bool):
    """An optional value: as given on a command line or in a scenario (an empty text is refused by
    its parser), or a batch cell (empty: no value)."""
    return given(values, key) if batch else values.get(key)


# ---------------------------------------------------------------- join


def _join_build(cat, v, today, batch=False):
    g = lambda k: _get(v, k, batch)  # noqa: E731
    req = rq.join(cat, today, v.get("phone"), v.get("region"), g("method") or "sms", g("email"), g("birth_date"),
                  g("customer_since"), g("referrer"), g("services"))
    return req if v.get("welcome", True) else req._replace(welcome=False)


def _join_phones(req, member):
    return [req.phone] + ([req.referrer] if req.referrer and req.referrer != req.phone else [])


def _join_decide(cat, ms, t, req, again=False):
    return rules.join(cat, ms[req.phone], t, req.as_rules(), ms.get(req.referrer), welcome=req.welcome, again=again)


def _join_values(e, ctx):
    events, n, first = ctx.events, ctx.index, ctx.first
    nxt = events[n + 1] if n + 1 < len(events) else None
    # a first join without welcome points followed at the same instant by an adjustment: an
    # opening-balance import (`adjust --from` with a region), replayed as one (no welcome points)
    imported = first and not e.get("welcome") and nxt is not None and nxt.get("type") == "adjust" \
        and nxt.get("at") == e["at"]
    v = {"region": e["region"], "method": e["method"], "services": ",".join(e.get("services") or ["mobile"]),
         "customer_since": e.get("customer_since"), "email": e.get("email"), "birth_date": e.get("birth_date"),
         "referrer": e.get("referrer")}
    v = {k: x for k, x in v.items() if x is not None}
    if imported:
        v["welcome"] = False
    return v


def _join_describe(phone, a):
    if not a.get("welcome", True):
        return f"join {phone} --region {a['region']} (an opening-balance import, no welcome points)"
    return f"join {phone} --region {a['region']} --method {a['method']}"


# ---------------------------------------------------------------- earn, refund, adjust


def _earn_build(cat, v, today, batch=False):
    return rq.earn(cat, v.get("phone"), v.get("amount"), v.get("category"), v.get("ref"), ref_required=batch,
                   spent_at_text=_get(v, "spent_at", batch))


def _earn_decide(cat, ms, t, req, dry_run=False, explain=False):
    return rules.earn(cat, ms[req.phone], t, req.amount, req.category, req.ref, dry_run=dry_run, explain=explain,
                      spent_at=req.spent_at)


def _earn_values(e, ctx):
    v = {"amount": e["amount"], "category": e["category"]}
    for k in ("ref", "spent_at"):
        if e.get(k) is not None:
            v[k] = e[k]
    return v


def _earn_describe(phone, a):
    return (f"earn {phone} {a['amount']} --category {a['category']}" + (f" --ref {a['ref']}" if a.get("ref") else "")
            + (f" --spent-at {a['spent_at']}" if a.get("spent_at") else ""))


def _refund_build(cat, v, today, batch=False):
    return rq.refund(cat, v.get("phone"), v.get("ref"), _get(v, "amount", batch), _get(v, "refund_ref", batch))


def _refund_decide(cat, ms, t, req):
    return rules.refund(cat, ms[req.phone], t, req.ref, req.amount, req.refund_ref)


def _refund_describe(phone, a):
    return f"refund {phone} {a['ref']} --amount {a['amount']}" + (
        f" --ref {a['refund_ref']}" if a.get("refund_ref") else "")


def _adjust_build(cat, v, today, batch=False):
    return rq.adjust(cat, v.get("phone"), v.get("points"), v.get("reason"), v.get("ref"), _get(v, "expires_on", batch),
                     _get(v, "region", batch), ref_required=batch)


def _adjust_decide(cat, ms, t, req):
    return rules.adjust(cat, ms[req.phone], t, req.points, req.reason, req.ref, req.expires_on, req.region)


def _adjust_values(e, ctx):
    cat = ctx.cat
    exp = e.get("expires_on")
    if exp is not None and cat is not None and exp == rules.expiry_date(cat, rules.from_iso(e["at"])).isoformat():
        exp = None  # the default of the catalog it was written under: replayed as the default
    v = {"points": e["points"], "reason": e.get("reason", ""), "ref": e.get("ref"), "expires_on": exp}
    return {k: x for k, x in v.items() if x is not None}


def _adjust_describe(phone, a):
    return f"adjust {phone} {a['points']:+d} --reason {a['reason']!r}" + (
        f" --expires-on {a['expires_on']}" if a.get("expires_on") else "")


# ---------------------------------------------------------------- redeem, gift, accept, leave


def _redeem_build(cat, v, today, batch=False):
    return rq.redeem(cat, v.get("phone"), v.get("code"), _get(v, "via", batch), _get(v, "price", batch),
                     _get(v, "points", batch))


def _redeem_decide(cat, ms, t, req):
    return rules.redeem(cat, ms[req.phone], t, req.code, req.channel, req.price, req.points,
                        channel_given=req.channel_given)


def _redeem_values(e, ctx):
    v = {"code": e["code"], "via": e.get("channel", "web")}
    if e.get("price_rub") is not None:
        v.update(price=e["price_rub"], points=e["points"])
    return v


def _redeem_describe(phone, a):
    text = f"redeem {phone} {a['code']} --via {a['via']}"
    if a.get("price") is not None:
        text += f" --price {a['price']} --points {a['points']}"
    return text


def _gift_build(cat, v, today, batch=False):
    return rq.gift(cat, v.get("from"), v.get("to"), v.get("points"))


def _gift_decide(cat, ms, t, req):
    return rules.gift(cat, ms[req.sender], ms[req.recipient], t, req.points)


def _gift_values(e, ctx):
    if e["gift_id"] not in ctx.gifts_made:
        return None  # an offer cut short by a crash (no gift_in): never made
    return {"to": e["to"], "points": e["points"], "gift": e["gift_id"]}


def _accept_phones(req, member):
    """The recipient, and the sender its gift names (read first: a gift it was never offered is
    refused before anything is locked)."""
    m = member(req.phone)
    g = m.gifts_in.get(req.gift_id)
    if g is None:
        if m.join is None:
            raise rules.not_member(req.phone).error()
        raise rules.Refusal(1, "gift-not-found", f"no gift {req.gift_id} was offered to {req.phone}").error()
    return [req.phone, g["from"]]


def _accept_decide(cat, ms, t, req):
    sender = next((p for p in ms if p != req.phone), None)
    return rules.accept(cat, ms[req.phone], ms.get(sender), t, req.gift_id, req.reject)


def _accept_values(e, ctx):
    if e["type"] == "gift_reject" and e.get("reason") == "left":
        return None  # written by `leave`, which is replayed itself
    return {"gift": e["gift_id"], "from": e["from"], "reject": e["type"] == "gift_reject"}


def _leave_decide(cat, ms, t, req):
    return rules.leave(cat, ms[req.phone], t)


def _one(req, member):
    return [req.phone]


COMMANDS = {c.name: c for c in (
    Command("join", ("phone", "region", "method", "email", "birth_date", "customer_since", "referrer", "services"),
            _join_build, _join_phones, _join_decide,
            Scenario(("phone",), {"region": "--region", "method": "--method", "email": "--email",
                                  "birth_date": "--birth-date", "customer_since": "--customer-since",
                                  "referrer": "--referrer", "services": "--services"}, {}, ("phone", "region")),
            ("join",), _join_values, {"join": ("referrer",), "referral": ("invitee",)}, _join_describe,
            (("phone", "region"), ("method", "email", "birth_date", "customer_since", "referrer", "services", "at")),
            priority=0, dated=True, batch_opts={"again": True}, defer=lambda req: req.referrer is not None, cli=(
                Param("phone", complete="phone"),
                Param("region", "--region", "Home region: a code (ISO 3166-2:RU, e.g. RU-MOW), a name or its "
                      "start (moscow, bry).", "region"),
                Param("method", "--method", "How the subscriber joins (sms, ussd, app, call, store, web, card, "
                      "wallet).", "method", default="sms"),
                Param("email", "--email", "E-mail (web form; with --birth-date gives the profile bonus)."),
                Param("birth_date", "--birth-date", "Birth date YYYY-MM-DD (web form)."),
                Param("customer_since", "--customer-since", "Date the subscriber became a customer (default: today)."),
                Param("referrer", "--referrer", "Phone of the member who invited this one.", "phone"),
                Param("services", "--services", "Comma-separated services (default mobile)."))),
    Command("earn", ("phone", "amount", "category", "ref", "spent_at"), _earn_build, _one, _earn_decide,
            Scenario(("phone", "amount"), {"category": "--category", "ref": "--ref", "spent_at": "--spent-at"},
                     {"dry_run": "--dry-run"}, ("phone", "amount", "category")),
            ("earn",), _earn_values,
            {}, _earn_describe, (("phone", "amount", "category", "ref"), ("at", "spent_at")), priority=2, cli=(
                Param("phone", complete="phone"), Param("amount"),
                Param("category", "--category", "Spending category (mobile, card, taxi, ...).", "category"),
                Param("ref", "--ref", "Transaction id: a repeat with the same ref changes nothing."),
                Param("spent_at", "--spent-at", "When the spending happened, if before this booking (a late "
                      "partner file): its rates are those of then."))),
    Command("redeem", ("phone", "code", "via", "price", "points"), _redeem_build, _one, _redeem_decide,
            Scenario(("phone", "code"), {"via": "--via", "price": "--price", "points": "--points"}, {},
                     ("phone", "code")),
            ("redeem",), _redeem_values, {}, _redeem_describe, priority=3, cli=(
                Param("phone", complete="phone", required=True), Param("code", complete="reward", required=True),
                Param("via", "--via", "Channel: web, app, sms, ussd, store.", "channel", default="web"),
                Param("price", "--price", "Store discount: the item's price in RUB."),
                Param("points", "--points", "Store discount: points to use (default: as many as allowed)."))),
    Command("gift", ("from", "to", "points"), _gift_build, lambda req, member: [req.sender, req.recipient],
            _gift_decide,
            Scenario(("from", "to", "points"), {}, {}, ("from", "to", "points"), phone_keys=("from", "to")),
            ("gift_out",), _gift_values,
            {"gift_out": ("to",), "gift_in": ("from",)},
            lambda phone, a: f"gift {phone} {a['to']} {a['points']}", priority=4, cli=(
                Param("from", complete="phone", required=True, name="sender", metavar="FROM"),
                Param("to", complete="phone", required=True, name="recipient", metavar="TO"),
                Param("points", required=True))),
    Command("accept", ("phone", "gift", "reject"), lambda cat, v, today, batch=False: rq.accept(
                v.get("phone"), v.get("gift"), bool(v.get("reject"))), _accept_phones, _accept_decide,
            Scenario(("phone", "gift"), {}, {"reject": "--reject"}, ("phone", "gift")),
            ("gift_accept", "gift_reject"), _accept_values,
            {"gift_accept": ("from",), "gift_reject": ("from",), "gift_settle": ()},
            lambda phone, a: f"accept {phone} {a['gift']}" + (" --reject" if a.get("reject") else ""), priority=5,
            cli=(Param("phone", complete="phone", required=True),
                 Param("gift", complete="gift", required=True, name="gift_id"),
                 Param("reject", "--reject", "Reject the gift: the points go back to the sender.", flag=True))),
    Command("leave", ("phone",), lambda cat, v, today, batch=False: rq.leave(v.get("phone")), _one, _leave_decide,
            Scenario(("phone",), {}, {}, ("phone",), extra=("--yes",)),
            ("leave",), lambda e, ctx: {}, {"gift_reject": ("from",)},
            lambda phone, a: f"leave {phone} --yes", priority=6, cli=(Param("phone", complete="phone", required=True),)),
    Command("refund", ("phone", "ref", "amount", "refund_ref"), _refund_build, _one, _refund_decide,
            Scenario(("phone", "ref"), {"amount": "--amount", "refund_ref": "--ref"}, {}, ("phone", "ref")),
            ("refund",), lambda e, ctx: {"ref": e["earn_ref"], "amount": e["amount"],
                                                        **({"refund_ref": e["ref"]} if e.get("ref") else {})},
            {}, _refund_describe, (("phone", "ref"), ("amount", "refund_ref", "at")), priority=3, cli=(
                Param("phone", complete="phone"), Param("ref"),
                Param("amount", "--amount", "Refunded RUB (default: all that is left of the spending)."),
                Param("refund_ref", "--ref", "This refund's own reference: a repeat changes nothing."))),
    Command("adjust", ("phone", "points", "reason", "ref", "expires_on", "region"), _adjust_build, _one,
            _adjust_decide,
            Scenario(("phone", "points"), {"reason": "--reason", "ref": "--ref", "expires_on": "--expires-on"}, {},
                     ("phone", "points")),
            ("adjust",), _adjust_values, {}, _adjust_describe,
            (("phone", "points", "reason", "ref"), ("expires_on", "region", "at")), priority=2, cli=(
                Param("phone", complete="phone"), Param("points"),
                Param("reason", "--reason", "Why (kept in the ledger; required)."),
                Param("ref", "--ref", "Reference: a repeat with the same ref changes nothing."),
                Param("expires_on", "--expires-on", "Expiry date of a credit (default: the normal 12 months)."))),
)}

# event type -> the command whose own record it is (diff re-decides these)
RECORDED = {t: c for c in COMMANDS.values() for t in c.recorded}
# event type -> the fields of it that name another member (every command's events, merged)
LINKS: dict = {}
for _c in COMMANDS.values():
    for _t, _fields in _c.links.items():
        LINKS[_t] = tuple(dict.fromkeys(LINKS.get(_t, ()) + _fields))
GIFT_NODE = "\0gift "  # a recorded gift id as a node among phones (no phone starts with NUL)


def links_of(phone: str, events) -> list:
    """What a ledger's events tie its member to (`rules.components` nodes): the other members the
    commands' events name (`LINKS`), and the recorded gift ids (a gift and its accept are one group
    wherever the two ledgers are)."""
    linked = set()
    for e in events:
        t = e.get("type")
        for k in LINKS.get(t, ()):
            v = e.get(k)
            if isinstance(v, str) and v != phone:
                linked.add(v)
        g = e.get("gift_id")
        if isinstance(g, str):
            linked.add(GIFT_NODE + g)
    return sorted(linked)


def today_of(cat, t: int) -> dt.date:
    """The program's local date of an instant (what `join` checks dates against)."""
    return dt.date.fromordinal(rules.calendar_of(cat).day(t))
