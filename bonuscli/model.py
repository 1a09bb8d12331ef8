"""Plain typed data shared by every module: the catalog, decisions, problems,
error types, and the exact value parsers (phone, money, dates).

Owns: records (namedtuples), Decimal money, error classes. Imports the standard library only.
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal, InvalidOperation
from typing import Optional

class _RecordMeta(type):
    """`class X(Record): field: type = default` makes a `collections.namedtuple` subclass, as
    `typing.NamedTuple` does, without evaluating each annotation (about 0.2 ms a class at start-up,
    ~5 ms over bonuscli's classes: docs/performance.md)."""

    def __new__(mcls, name, bases, ns):
        if not bases:  # Record itself
            return super().__new__(mcls, name, bases, ns)
        import collections

        fields = list(ns.get("__annotations__", {}))
        defaults = [ns[f] for f in fields if f in ns]
        if any(f not in ns for f in fields[len(fields) - len(defaults):]):
            raise TypeError(f"{name}: a field without a default follows one with a default")
        base = collections.namedtuple(name, fields, defaults=defaults or None, module=ns.get("__module__"))
        body = {k: v for k, v in ns.items() if k not in fields}
        body["__slots__"] = ()
        return type(name, (base,), body)


class Record(metaclass=_RecordMeta):
    """The base of bonuscli's plain records (see `_RecordMeta`)."""


SCHEMA_VERSION = 2  # 2: each line carries `prev`, the hash of the line before it
# every event type a ledger line may have (rules.replay applies each; anything else is corruption)
EVENT_TYPES = frozenset((
    "join", "leave", "earn", "refund", "adjust", "redeem", "gift_out", "gift_in", "gift_accept", "gift_reject",
    "gift_settle", "referral", "referral_settle", "repair",
))
# the fields every bonuscli writes in each type of event (rules/decide.py; release 0.1.0 too) and what
# each holds (`ledger.malformed`): a field written only sometimes (a settled referral's credit_at, a
# redemption's active_until) is not here. A line that lacks one, or holds another kind of value, is
# corruption, named with its line: found by every verified read (a change, `check --ledgers`), and by a
# command that failed on it (never an internal error); plain reads do not pay for it.
_S, _I, _L = "text", "whole number", "list"
_LOTS, _BONUSES, _TEXTS = "lots", "bonuses", "texts"  # lists of {expires_on, points}, {reason, points}, texts
EVENT_FIELDS = {
    "join": {"region": _S, "method": _S, "active_from": _S, "customer_since": _S, "services": _TEXTS,
             "welcome": _BONUSES},
    "leave": {"points": _I, "held_out": _I},
    "earn": {"amount": _S, "category": _S, "points": _I, "coefficient": _S, "rub_per_point": _I,
             "bonuses": _BONUSES, "expires_on": _S},
    "refund": {"earn_ref": _S, "amount": _S, "points": _I, "points_taken": _I, "debt_added": _I},
    "adjust": {"points": _I, "reason": _S},
    "redeem": {"code": _S, "name": _S, "category": _S, "channel": _S, "region": _S, "points": _I},
    "gift_out": {"gift_id": _S, "to": _S, "points": _I, "deadline": _S, "lots": _LOTS},
    "gift_in": {"gift_id": _S, "from": _S, "points": _I, "offered_at": _S, "deadline": _S, "lots": _LOTS},
    "gift_accept": {"gift_id": _S, "from": _S, "lots": _LOTS},
    "gift_reject": {"gift_id": _S, "from": _S},
    "gift_settle": {"gift_id": _S, "outcome": _S, "decided_at": _S},
    "referral": {"referral_id": _S, "invitee": _S, "points": _I},
    "referral_settle": {"referral_id": _S, "outcome": _S},
    "repair": {"line": _I},
}
ONE = Decimal(1)
CENT = Decimal("0.01")


# ---------------------------------------------------------------- errors


class BonusError(Exception):
    """An error that reaches the user as one line and an exit code."""

    exit_code = 3
    kind = "files"

    def __init__(self, message: str, kind: Optional[str] = None, steps=None):
        super().__init__(message)
        self.message = message
        if kind:
            self.kind = kind
        self.steps = steps or []


class Refused(BonusError):
    """A program rule said no (exit 1)."""

    exit_code = 1
    kind = "refused"


class BadInput(BonusError):
    """Malformed input (exit 2)."""

    exit_code = 2
    kind = "bad-input"


class FilesError(BonusError):
    """Catalog invalid, ledger corrupt, lock timeout, disk trouble (exit 3)."""

    exit_code = 3
    kind = "files"


EXIT_CLASSES = {1: Refused, 2: BadInput, 3: FilesError}


class Refusal(Record):
    """A decision of the rules that nothing may be written (a value, not an exception)."""

    exit_code: int
    kind: str
    message: str
    steps: tuple = ()

    def error(self) -> BonusError:
        return EXIT_CLASSES[self.exit_code](self.message, self.kind, list(self.steps))


class Decision(Record):
    """What the rules decided: events to append per phone (in write order) and the view."""

    writes: tuple  # ((phone, (event, ...)), ...) in the order they must be written
    view: dict


class Problem(Record):
    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


# ---------------------------------------------------------------- catalog


class Limit(Record):
    per: str  # day | month | year | ever
    max: int


class Activation(Record):
    hours: int = 0
    working_days: int = 0


class EarnCategory(Record):
    code: str
    rub_per_point: Optional[int]  # None when tiered
    tiered: bool
    tenure: bool
    description: str


class Step(Record):
    """One row of a stepped table: applies up to and including `up_to` (None: no bound)."""

    up_to: Optional[Decimal]
    value: Decimal


class Bonuses(Record):
    welcome: int
    web_form: int
    web_profile: int
    referral: int
    card_welcome: int
    card_welcome_threshold: Decimal
    card_welcome_category: str


class GiftRules(Record):
    same_region: bool
    min_points: int
    per_day: int
    per_month_points: int
    accept_days: int


class StoreDiscount(Record):
    reward: str
    points_per_rub: int
    max_share: Decimal


class RewardCategory(Record):
    code: str
    name: str
    limits: tuple


class Reward(Record):
    code: str
    name: str
    category: str
    price: Optional[int]
    region_prices: dict
    validity_days: Optional[int]
    ussd: Optional[str]
    sms: Optional[str]
    channels: tuple
    limits: tuple
    issues_code: bool


class Catalog(Record):
    path: str
    name: str
    timezone: str
    short_number: str
    closing_date: Optional[dt.date]
    validity_months: int
    amount_max: Decimal
    regions: dict  # code -> name, in file order
    services_eligible: tuple
    services_ineligible: tuple
    services_default: tuple
    methods: dict  # name -> Activation
    bonuses: Bonuses
    categories: dict  # code -> EarnCategory
    ineligible: dict  # code -> reason
    tenure: tuple  # of Step (months -> coefficient)
    card_tiers: tuple  # of Step (rub -> rub_per_point)
    gifts: GiftRules
    allow_debt: bool
    store_discount: StoreDiscount
    channels: tuple
    reward_categories: dict  # code -> RewardCategory
    rewards: dict  # code -> Reward, in file order
    late_days: int = 90  # earning.late_days: how long before its booking a late spending may be (RULES.md §3)

    @property
    def tz(self):
        return zone(self.timezone)

    def price_for(self, reward: Reward, region: Optional[str]) -> Optional[int]:
        if region and region in reward.region_prices:
            return reward.region_prices[region]
        return reward.price

    def limits_for(self, reward: Reward) -> tuple:
        cat = self.reward_categories.get(reward.category)
        return tuple(reward.limits) + (tuple(cat.limits) if cat else ())


_ZONES: dict = {}


def zone(name: str):
    z = _ZONES.get(name)
    if z is None:
        from zoneinfo import ZoneInfo

        z = _ZONES[name] = ZoneInfo(name)
    return z


# ---------------------------------------------------------------- parsers

_PHONE_CHARS = re.compile(r"^[0-9 ().\-]+$")


def normalize_phone(text: str) -> str:
    """Any accepted spelling -> the 10-digit national form, else BadInput."""
    raw = str(text).strip()
    plus = raw.startswith("+")
    body = raw[1:] if plus else raw
    digits = ""
    if body and _PHONE_CHARS.match(body) and ".." not in body and len(raw) <= 40:
        digits = re.sub(r"[ ().\-]", "", body)
    if digits.isdigit() and digits.isascii():
        if plus:
            if len(digits) == 11 and digits[0] == "7":
                return digits[1:]
        elif len(digits) == 10:
            return digits
        elif len(digits) == 11 and digits[0] in "78":
            return digits[1:]
    raise BadInput(
        f"not a phone number: {text!r} (use 10 digits, e.g. 9161234567, +7 916 123-45-67 or 89161234567)",
        "bad-phone",
    )


_MONEY = re.compile(r"^[0-9]{1,16}(\.[0-9]{1,2})?$")
_SIGNED = re.compile(r"^-[0-9]{1,16}(\.[0-9]{1,16})?$")  # a negative number (or -0), however many decimals


def parse_amount(text, maximum: Decimal = Decimal("1000000"), what: str = "amount") -> Decimal:
    """Roubles, > 0, at most `maximum`, at most 2 decimals; never rounded."""
    s = str(text).strip()
    if _SIGNED.match(s) and Decimal(s) <= 0:  # -50, -0.5, -1.234: the sign is the mistake, not the decimals
        raise BadInput(f"{what} must be more than 0 (got {text!r})", "bad-amount")
    if not _MONEY.match(s):
        raise BadInput(
            f"{what} must be a number of roubles with at most 2 decimals, e.g. 499.90 (got {text!r})",
            "bad-amount",
        )
    value = Decimal(s)
    if value <= 0:
        raise BadInput(f"{what} must be more than 0 (got {text!r})", "bad-amount")
    if value > maximum:
        raise BadInput(f"{what} must be at most {money(maximum)} RUB (got {text!r})", "bad-amount")
    return value.quantize(CENT)


def money(value: Decimal) -> str:
    return str(Decimal(value).quantize(CENT))


def decimal_text(value: Decimal) -> str:
    """A coefficient as text with at least one decimal: 1 -> '1.0', 1.25 -> '1.25'."""
    d = Decimal(value).normalize()
    s = format(d, "f")
    return s if "." in s else s + ".0"


def to_decimal(value) -> Decimal:
    try:
        return Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise ValueError(f"not a number: {value!r}")


YEARS = (1900, 9000)  # dates outside are refused: far enough for any program, far from overflow


def parse_date(text, what: str = "date") -> dt.date:
    try:
        day = dt.date.fromisoformat(str(text).strip())
    except ValueError:
        raise BadInput(f"{what} must be a date YYYY-MM-DD (got {text!r})", "bad-date")
    if not YEARS[0] <= day.year <= YEARS[1]:
        raise BadInput(f"{what} must be between {YEARS[0]} and {YEARS[1]} (got {text!r})", "bad-date")
    return day


def parse_when(text: str, tz) -> dt.datetime:
    """RULES.md §1: an ISO date (00:00 local) or date-time (no offset: program time)."""
    s = str(text).strip()
    bad = BadInput(
        f"not a date or time: {text!r} (use ISO 8601, e.g. 2025-03-01 or 2025-03-01T12:00+03:00)",
        "bad-date",
    )
    if not s or len(s) > 64:
        raise bad
    if s[-1] in "zZ":
        s = s[:-1] + "+00:00"
    try:
        if len(s) == 10:
            d = dt.date.fromisoformat(s)
            when = dt.datetime(d.year, d.month, d.day, tzinfo=tz)
        else:
            when = dt.datetime.fromisoformat(s)
            if when.tzinfo is None:
                when = when.replace(tzinfo=tz)
    except ValueError:
        raise bad
    if not YEARS[0] <= when.year <= YEARS[1]:
        raise BadInput(f"--at must be between {YEARS[0]} and {YEARS[1]} (got {text!r})", "bad-date")
    return when.replace(microsecond=0)


def iso(when: dt.datetime) -> str:
    return when.isoformat(timespec="seconds")


def from_iso(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)
