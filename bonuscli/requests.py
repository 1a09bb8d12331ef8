"""The request layer: every input, wherever it comes from, parsed and validated once.

Owns: the parsers and validators for phone, amount, points, ref, date, region,
reason, category, reward, channel, method, services, e-mail, gift id and
`history --type` (its types and families), and one request builder per
writing command. A command-line argument, a batch row, a scenario step and an
SMS/USSD text all go through these, so they get
exactly the same answer (an empty `ref` included: refused). Raises BadInput
(exit 2); never prints. Imports model only.
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from typing import Optional

from bonuscli.model import YEARS, BadInput, Catalog, normalize_phone, parse_amount, parse_date, parse_when, Record

POINTS_MAX = 999_999_999  # an adjustment or a count beyond this is a typo, not a number of points
REF_MAX = 200
REASON_MAX = 500
SHOWN_MAX = 40  # an input echoed in a message is cut to this many characters (one readable line)


def suggest(value: str, choices, what: str) -> str:
    """`; did you mean 'x'?` for a near miss, as Click does for commands."""
    import difflib

    close = difflib.get_close_matches(value, list(choices), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


_CONTROL = re.compile("[\x00-\x1f\x7f]")


def _printable(text: str) -> bool:
    """No C0 control character and no DEL."""
    return _CONTROL.search(text) is None


def shown(text) -> str:
    """An input as a message quotes it: repr, cut to SHOWN_MAX characters (a 5,000-digit number stays
    one readable line)."""
    try:
        s = "" if text is None else str(text)
    except ValueError:  # an int of more than 4,300 digits cannot even be turned into text
        return "a number of thousands of digits"
    if len(s) <= SHOWN_MAX:
        return repr(s)
    return f"{s[:SHOWN_MAX - 10]!r}... ({len(s):,} characters)"


# ---------------------------------------------------------------- values


def phone(text) -> str:
    if type(text) is str and len(text) == 10 and text.isdigit() and text.isascii():
        return text  # already the normalised form (most batch rows)
    if text is None or not str(text).strip():
        raise BadInput("a phone number is missing", "bad-phone")
    if len(str(text).strip()) > SHOWN_MAX:
        raise BadInput(f"not a phone number: {shown(text)} (use 10 digits, e.g. 9161234567, +7 916 123-45-67 "
                       "or 89161234567)", "bad-phone")
    return normalize_phone(text)


def amount(text, cat: Catalog, what: str = "amount") -> Decimal:
    if text is None or not str(text).strip():
        raise BadInput(f"{what} is missing", "bad-amount")
    if len(str(text).strip()) > SHOWN_MAX:  # never a valid amount: refused without echoing all of it
        raise BadInput(f"{what} must be a number of roubles with at most 2 decimals, e.g. 499.90 "
                       f"(got {shown(text)})", "bad-amount")
    return parse_amount(text, cat.amount_max, what)


def count(text, what: str = "POINTS") -> int:
    """A whole number of points that must be positive (a gift, --points)."""
    n = _integer(text, what)
    if n < 1:
        raise BadInput(f"{what} must be a whole number of points of at least 1 (got {shown(text)})", "bad-points")
    return n


def signed_points(text, what: str = "POINTS") -> int:
    """A non-zero whole number of points, + for a credit, - for a debit (adjust)."""
    n = _integer(text, what)
    if n == 0:
        raise BadInput(f"{what}: an adjustment must credit or debit at least 1 point (e.g. 200 or -50)", "bad-points")
    return n


def _integer(text, what: str) -> int:
    """ASCII digits with an optional sign, at most POINTS_MAX: anything else is BadInput, never a
    ValueError (a Unicode digit such as '²' passes str.isdigit() but not int(); Python refuses to
    convert more than 4,300 digits; both are bad input, exit 2)."""
    if isinstance(text, bool):
        raise BadInput(f"{what} must be a whole number of points (got {shown(text)})", "bad-points")
    if isinstance(text, int):
        n = text
    else:
        s = str(text if text is not None else "").strip()
        sign = -1 if s[:1] == "-" else 1
        body = s[1:] if s[:1] in "+-" else s
        if not body or not body.isascii() or not body.isdigit():
            raise BadInput(f"{what} must be a whole number of points (got {shown(text)})", "bad-points")
        digits = body.lstrip("0") or "0"
        if len(digits) > len(str(POINTS_MAX)):
            raise BadInput(f"{what} must be at most {POINTS_MAX:,} points (got {shown(text)})", "bad-points")
        n = sign * int(digits)
    if abs(n) > POINTS_MAX:
        raise BadInput(f"{what} must be at most {POINTS_MAX:,} points (got {shown(text)})", "bad-points")
    return n


def ref(text, what: str = "--ref") -> str:
    s = "" if text is None else str(text)
    if not s.strip() or len(s) > REF_MAX or not _printable(s):
        raise BadInput(f"{what} must be a non-empty text of at most {REF_MAX} printable characters", "bad-ref")
    return s


def optional_ref(text, what: str = "--ref") -> Optional[str]:
    return None if text is None else ref(text, what)


def reason(text) -> str:
    s = "" if text is None else str(text).strip()
    if not s:
        raise BadInput("an adjustment needs a reason (--reason TEXT, kept in the ledger)", "usage")
    if len(s) > REASON_MAX or not _printable(s):
        raise BadInput(f"the reason must be at most {REASON_MAX} printable characters", "bad-reason")
    return s


def date(text, what: str = "date") -> dt.date:
    if text is not None and len(str(text).strip()) > SHOWN_MAX:
        raise BadInput(f"{what} must be a date YYYY-MM-DD (got {shown(text)})", "bad-date")
    return parse_date(text, what)


_YEAR_ONLY = re.compile(r"^([0-9]{4})$")
_YEAR_MONTH = re.compile(r"^([0-9]{4})-([0-9]{2})$")


def period_bound(text, what: str = "--from", end: bool = False) -> dt.date:
    """A `--from`/`--until` DATE: `YYYY-MM-DD`, a month `YYYY-MM` or a year `YYYY` (CLI.md §4): a
    month or year starts on its first day (`--from`) and ends on its last (`--until`, `end`)."""
    s = "" if text is None else str(text).strip()
    shape = f"{what} must be a date YYYY-MM-DD, a month YYYY-MM or a year YYYY"
    if len(s) > SHOWN_MAX:
        raise BadInput(f"{shape} (got {shown(text)})", "bad-date")
    year = _YEAR_ONLY.match(s)
    month = _YEAR_MONTH.match(s)
    if not (year or month):
        try:
            return date(s, what)
        except BadInput as e:
            if "must be between" in e.message:
                raise
            raise BadInput(f"{shape} (got {shown(text)})", "bad-date") from None
    y = int((year or month).group(1))
    m = int(month.group(2)) if month else (12 if end else 1)
    if not YEARS[0] <= y <= YEARS[1]:
        raise BadInput(f"{what} must be between {YEARS[0]} and {YEARS[1]} (got {shown(text)})", "bad-date")
    if not 1 <= m <= 12:
        raise BadInput(f"{shape}; there is no month {m:02d} (got {shown(text)})", "bad-date")
    if not end:
        return dt.date(y, m, 1)
    import calendar

    return dt.date(y, m, calendar.monthrange(y, m)[1])


def date_range(from_text, until_text, from_what: str = "--from", until_what: str = "--until"):
    """`--from`/`--until` as (first day, last day), each None when not given; a range that ends
    before it starts is bad input (exit 2), never an empty answer."""
    lo = period_bound(from_text, from_what) if from_text is not None else None
    hi = period_bound(until_text, until_what, end=True) if until_text is not None else None
    if lo is not None and hi is not None and hi < lo:
        raise BadInput(f"{until_what} {shown(until_text)} ends before {from_what} {shown(from_text)} starts "
                       f"({hi.isoformat()} is before {lo.isoformat()}): swap them?", "bad-date")
    return lo, hi


_DATE_WITH_OFFSET = re.compile(r"^(\d{4}-?\d{2}-?\d{2})([zZ]|[+-]\d{2}(?::?\d{2})?)$")
_FRACTION = re.compile(r"\d[.,]\d")


_PLAIN_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2})?")


def when(text, tz, what: str = "--at") -> dt.datetime:
    """An instant (`--at`, a batch row's `at`) in program time. Keeps or refuses, never drops
    (CLI.md): a trailing Z (or an offset) on a date alone is midnight at that offset; fractional
    seconds are refused rather than cut."""
    s = "" if text is None else str(text).strip()
    if _PLAIN_TIME.fullmatch(s):  # the common shape (a batch row's `at`): a program-time date and time
        try:
            at = dt.datetime.fromisoformat(s)
        except ValueError:
            at = None
        if at is not None and YEARS[0] <= at.year <= YEARS[1]:
            return at.replace(tzinfo=tz).astimezone(tz)
    bad = BadInput(f"{what + ': ' if what != '--at' else ''}not a date or time: {shown(text)} (use ISO 8601, "
                   "e.g. 2025-03-01 or 2025-03-01T12:00+03:00)", "bad-date")
    if not s or len(s) > 64:
        raise bad
    if _FRACTION.search(s[8:]):
        raise BadInput(f"{what} {shown(text)}: fractional seconds cannot be kept (instants are recorded to the "
                       "second); give whole seconds, e.g. 2025-03-01T12:00:05", "bad-date")
    m = _DATE_WITH_OFFSET.match(s)
    if m:  # Python 3.11 reads '2025-02-02+00:00' as a naive midnight: the offset would be lost
        offset = "+00:00" if m.group(2) in "zZ" else m.group(2)
        s = f"{m.group(1)}T00:00{offset}"
    try:
        at = parse_when(s, tz)
    except BadInput as e:
        if "between" in e.message:
            raise BadInput(f"{what} must be between {YEARS[0]} and {YEARS[1]} (got {shown(text)})", "bad-date")
        raise bad
    return at.astimezone(tz)


_NAME_SEP = re.compile(r"[\W_]+")  # spaces, hyphens, dots, brackets: one separator in a name's key
_REGION_INDEX: dict = {}  # id(cat.regions) -> (cat.regions, [(key, code)]): built once per catalog


def _name_key(text) -> str:
    """A region's name as typed and as matched: any case, and any run of spaces or punctuation is one
    space (`saint-petersburg`, `Sakha (Yakutia)` and `khanty mansi` find their names)."""
    return _NAME_SEP.sub(" ", str(text).casefold()).strip()


def _region_names(cat: Catalog) -> list:
    """[(name key, code)] of the catalog's regions, in file order (cached: a batch row pays a lookup)."""
    held = _REGION_INDEX.get(id(cat.regions))
    if held is None or held[0] is not cat.regions:
        if len(_REGION_INDEX) > 8:
            _REGION_INDEX.clear()
        held = (cat.regions, [(_name_key(name), code) for code, name in cat.regions.items()])
        _REGION_INDEX[id(cat.regions)] = held
    return held[1]


def _regions_named(cat: Catalog, text) -> list:
    """The codes whose name is `text` (any case); failing that, those whose name starts with it."""
    key = _name_key(text)
    if not key:
        return []
    names = _region_names(cat)
    exact = [code for name, code in names if name == key]
    return exact or [code for name, code in names if name.startswith(key)]


def region_completions(cat: Catalog, typed: str) -> list:
    """What `--region` completes to: the codes starting with `typed` (any case), then the codes of the
    regions whose name starts with it (`bry` -> RU-BRY), in catalog order."""
    upper = str(typed).strip().upper()
    codes = [code for code in cat.regions if code.startswith(upper)]
    named = [code for name, code in _region_names(cat) if name.startswith(_name_key(typed))] if _name_key(typed) else []
    return list(dict.fromkeys(codes + named))


def _regions_shown(cat: Catalog, codes) -> str:
    return ", ".join(f"{c} ({cat.regions[c]})" for c in codes)


def region(cat: Catalog, text) -> str:
    """A home region as `--region` and a batch row's `region` take it (CLI.md `regions`): a code in
    any letter case, or a region's name or an unambiguous prefix of it in any case (an exact name
    wins over a prefix: `moscow` is RU-MOW, not RU-MOS Moscow Oblast). An ambiguous prefix is
    BadInput listing the candidates; anything else is BadInput with a did-you-mean over codes and
    names."""
    code = str(text).strip().upper()
    if code in cat.regions:
        return code
    if len(code) <= 200:  # a name is a few words; a huge input is never one (and is not echoed whole)
        found = _regions_named(cat, text)
        if len(found) == 1:
            return found[0]
        if found:
            raise BadInput(f"ambiguous region {shown(text)}: {len(found)} regions match: {_regions_shown(cat, found)}; "
                           "give more of the name, or the code",
                           "ambiguous-region")
    raise BadInput(f"unknown region {shown(text)}{_region_hint(cat, text)} (a code or a name, e.g. RU-MOW, "
                   "moscow, bryansk; `bonuscli regions` lists them)", "unknown-region")


def _region_hint(cat: Catalog, text) -> str:
    """`; did you mean 'RU-X' (Name)?` for a near miss: a code without its `RU-`, a word inside a name
    (`tatarstan`: Republic of Tatarstan), or a misspelt name, code or name prefix."""
    code = str(text).strip().upper()
    key = _name_key(text)
    if len(code) > 200 or not key:
        return ""
    near = []
    if "RU-" + code in cat.regions:
        near = ["RU-" + code]
    if not near:  # a word inside the name: `tatarstan`, `yakutia`, `yugra`
        near = [c for name, c in _region_names(cat) if f" {key}" in f" {name}"]
    if not near:  # a misspelling of a whole name, of the start of one, or of a code
        import difflib

        ratio = {}
        for name, c in _region_names(cat):
            for candidate in (name, name[:len(key)]):
                r = difflib.SequenceMatcher(None, key, candidate).ratio()
                if r >= (0.6 if candidate == name else 0.75) and r > ratio.get(c, 0):
                    ratio[c] = r
        close = difflib.get_close_matches(code, list(cat.regions), n=1, cutoff=0.75)
        for c in close:
            ratio[c] = max(ratio.get(c, 0), 0.75)
        near = sorted(ratio, key=lambda c: -ratio[c])[:3]
    if not near:
        return ""
    if len(near) == 1:
        return f"; did you mean '{near[0]}' ({cat.regions[near[0]]})?"
    return "; did you mean one of " + ", ".join(f"'{c}' ({cat.regions[c]})" for c in near[:3]) + "?"


# The types of `history` rows, and the families `--type` also takes (CLI.md `history`). A family is a
# name no type has (tests/test_names.py checks it), so a family never changes what a type means: `earn`
# is only the earn rows, and the bonuses credited with one (`card_welcome`) are the family `bonus`.
HISTORY_TYPES = ("join", "welcome", "earn", "card_welcome", "referral", "redeem", "expire", "gift_out", "gift_in",
                 "gift_accept", "gift_reject", "gift_return", "gift_accepted", "gift_forfeited", "gift_expired",
                 "refund", "adjust", "leave")
HISTORY_FAMILIES = {
    "gift": ("gift_out", "gift_in", "gift_accept", "gift_reject", "gift_return", "gift_accepted", "gift_forfeited",
             "gift_expired"),
    "bonus": ("welcome", "card_welcome", "referral"),
}


def history_families_text() -> str:
    """`gift (gift_out, ...), bonus (...)`: the families as `history --help` and errors list them."""
    return "; ".join(f"{name} = {', '.join(types)}" for name, types in HISTORY_FAMILIES.items())


def history_types(text) -> frozenset:
    """`history --type TYPE,...`: the row types wanted, a family standing for its types; any case,
    blanks around commas ignored. An unknown name (or none at all) is BadInput with a did-you-mean
    over the types and the families."""
    names = [t.strip().lower() for t in ("" if text is None else str(text)).split(",")]
    names = [t for t in names if t]
    unknown = [t for t in dict.fromkeys(names) if t not in HISTORY_TYPES and t not in HISTORY_FAMILIES]
    if unknown or not names:
        listed = ", ".join(shown(t) for t in unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        raise BadInput(f"--type: unknown type {listed or '(none)'}"
                       f"{suggest(unknown[0], HISTORY_TYPES + tuple(HISTORY_FAMILIES), 'type') if unknown else ''} "
                       f"(types: {', '.join(HISTORY_TYPES)}; families: {history_families_text()})", "usage")
    wanted = set()
    for t in names:
        wanted.update(HISTORY_FAMILIES.get(t, (t,)))
    return frozenset(wanted)


def category(cat: Catalog, text) -> str:
    c = "" if text is None else str(text).strip().lower()
    if not c:
        raise BadInput("a category is missing (e.g. mobile, card, taxi)", "usage")
    if c not in cat.categories and c not in cat.ineligible:
        raise BadInput(f"unknown category {shown(c)}{suggest(c, list(cat.categories) + list(cat.ineligible), 'category')} "
                       f"(earning: {', '.join(cat.categories)})", "unknown-category")
    return c


def reward(cat: Catalog, text) -> str:
    code = "" if text is None else str(text).strip()
    if code not in cat.rewards:
        raise BadInput(f"unknown reward {shown(code)}{suggest(code, cat.rewards, 'reward')}; `bonuscli catalog` lists "
                       "the codes", "unknown-reward")
    return code


def channel(cat: Catalog, text) -> str:
    ch = str(text).strip().lower()
    if ch not in cat.channels:
        raise BadInput(f"unknown channel {shown(text)} (channels: {', '.join(cat.channels)})", "unknown-channel")
    return ch


def method(cat: Catalog, text) -> str:
    m = str(text).strip().lower()
    if m not in cat.methods:
        raise BadInput(f"unknown join method {shown(text)} (methods: {', '.join(cat.methods)})", "unknown-method")
    return m


def services(cat: Catalog, text) -> list:
    known = cat.services_eligible + cat.services_ineligible
    svc = [s.strip().lower() for s in (str(text).split(",") if text is not None else cat.services_default)]
    svc = [s for s in svc if s]
    for s in svc:
        if s not in known:
            raise BadInput(f"unknown service {shown(s)} (services: {', '.join(known)})", "unknown-service")
    if not svc:
        raise BadInput("--services needs at least one service", "unknown-service")
    return list(dict.fromkeys(svc))


def email(text) -> str:
    s = str(text).strip()
    if "@" not in s or any(c.isspace() for c in s) or len(s) > 254 or not _printable(s):
        raise BadInput(f"not an e-mail address: {shown(text)}", "bad-email")
    return s


def gift_id(text) -> str:
    g = str(text).strip().lower()
    if not g.isascii() or not g.isalnum() or len(g) > 32:
        raise BadInput(f"not a gift id: {shown(text)}", "bad-gift-id")
    return g


def total_rub(text, what: str) -> Decimal:
    """A non-negative rouble total (0 allowed), exact."""
    if text is None or str(text).strip() in ("0", "0.0", "0.00"):
        return Decimal(0)
    if len(str(text).strip()) > SHOWN_MAX:
        raise BadInput(f"{what} must be a number of roubles with at most 2 decimals (got {shown(text)})", "bad-amount")
    if str(text).strip().startswith("-"):
        try:
            negative = Decimal(str(text).strip()) < 0
        except ArithmeticError:
            negative = False
        if negative:
            raise BadInput(f"{what} must be 0 or more (got {shown(text)})", "bad-amount")
    return parse_amount(text, Decimal("1000000000000"), what)


# ---------------------------------------------------------------- requests of the writing commands


class Join(Record):
    phone: str
    region: str
    method: str
    services: list
    email: Optional[str] = None
    birth_date: Optional[dt.date] = None
    customer_since: Optional[dt.date] = None
    referrer: Optional[str] = None
    welcome: bool = True

    def as_rules(self) -> dict:
        return {k: v for k, v in self._asdict().items() if k not in ("phone", "welcome") and v is not None}


def join(cat: Catalog, today: dt.date, phone_text, region_text, method_text="sms", email_text=None,
         birth_date_text=None, customer_since_text=None, referrer_text=None, services_text=None) -> Join:
    p = phone(phone_text)
    if region_text is None or not str(region_text).strip():
        raise BadInput("joining needs --region CODE (e.g. RU-MOW)", "usage")
    req = Join(p, region(cat, region_text), method(cat, method_text or "sms"), services(cat, services_text))
    if email_text is not None:
        req = req._replace(email=email(email_text))
    if birth_date_text is not None:
        b = date(birth_date_text, "--birth-date")
        if b > today:
            raise BadInput("--birth-date is in the future", "bad-date")
        req = req._replace(birth_date=b)
    if customer_since_text is not None:
        c = date(customer_since_text, "--customer-since")
        if c > today:
            raise BadInput("--customer-since cannot be after the join date", "bad-date")
        req = req._replace(customer_since=c)
    if referrer_text is not None:
        req = req._replace(referrer=phone(referrer_text))
    return req


class Earn(Record):
    phone: str
    amount: Decimal
    category: str
    ref: Optional[str]
    spent_at: Optional[dt.datetime] = None  # a late spending's own moment (RULES.md §3, Late spendings)


def earn(cat: Catalog, phone_text, amount_text, category_text, ref_text=None, ref_required=False,
         spent_at_text=None) -> Earn:
    p = phone(phone_text)
    a = amount(amount_text, cat)
    c = category(cat, category_text)
    r = ref(ref_text, "ref" if ref_required else "--ref") if (ref_required or ref_text is not None) else None
    spent = when(spent_at_text, cat.tz, "spent_at" if ref_required else "--spent-at") \
        if spent_at_text is not None else None
    return Earn(p, a, c, r, spent)


class Refund(Record):
    phone: str
    ref: str
    amount: Optional[Decimal]
    refund_ref: Optional[str]


def refund(cat: Catalog, phone_text, ref_text, amount_text=None, refund_ref_text=None) -> Refund:
    p = phone(phone_text)
    r = ref(ref_text, "REF")
    a = amount(amount_text, cat, "--amount") if amount_text is not None else None
    rr = optional_ref(refund_ref_text, "--ref")
    return Refund(p, r, a, rr)


class Adjust(Record):
    phone: str
    points: int
    reason: str
    ref: Optional[str]
    expires_on: Optional[dt.date]
    region: Optional[str] = None  # an opening-balance import joins a new member in this region


def adjust(cat: Catalog, phone_text, points_text, reason_text, ref_text=None, expires_on_text=None,
           region_text=None, ref_required=False) -> Adjust:
    p = phone(phone_text)
    n = signed_points(points_text)
    why = reason(reason_text)
    r = ref(ref_text, "ref" if ref_required else "--ref") if (ref_required or ref_text is not None) else None
    exp = date(expires_on_text, "--expires-on") if expires_on_text is not None else None
    if exp is not None and n < 0:
        raise BadInput("--expires-on goes with a credit (positive POINTS) only", "usage")
    reg = region(cat, region_text) if region_text is not None else None
    return Adjust(p, n, why, r, exp, reg)


class Redeem(Record):
    phone: str
    code: str
    channel: str
    price: Optional[Decimal]
    points: Optional[int]
    channel_given: bool = True  # False when the channel is the default (`web`) the user did not type


def redeem(cat: Catalog, phone_text, code_text, via_text="web", price_text=None, points_text=None) -> Redeem:
    p = phone(phone_text)
    code = reward(cat, code_text)
    via = channel(cat, "web" if via_text is None else via_text)
    if code != cat.store_discount.reward and (price_text is not None or points_text is not None):
        raise BadInput("--price and --points are for the store discount only", "usage")
    price = amount(price_text, cat, "--price") if price_text is not None else None
    pts = count(points_text, "--points") if points_text is not None else None
    return Redeem(p, code, via, price, pts, via_text is not None)


class Gift(Record):
    sender: str
    recipient: str
    points: int


def gift(cat: Catalog, sender_text, recipient_text, points_text) -> Gift:
    return Gift(phone(sender_text), phone(recipient_text), count(points_text, "POINTS"))


class Accept(Record):
    phone: str
    gift_id: str
    reject: bool


def accept(phone_text, gift_text, reject=False) -> Accept:
    return Accept(phone(phone_text), gift_id(gift_text), bool(reject))


class Leave(Record):
    phone: str


def leave(phone_text) -> Leave:
    return Leave(phone(phone_text))
