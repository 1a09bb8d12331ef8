"""catalog.yaml -> Catalog (plain typed data) or a list of Problems with path:line.

Owns: safe YAML loading (C loader when present, no arbitrary objects, limits on
size, nesting and alias expansion), the ordered validation checks, and the
parsed-catalog cache (plain JSON with a whitelist of model types: nothing read
from the cache is executed). Imports model; yaml lazily.
"""

from __future__ import annotations

import datetime as dt
import os
from decimal import Decimal
from pathlib import Path

from bonuscli.version import __version__
from bonuscli.model import (
    Activation,
    Bonuses,
    Catalog,
    EarnCategory,
    FilesError,
    GiftRules,
    Limit,
    Problem,
    Reward,
    RewardCategory,
    Step,
    StoreDiscount,
    YEARS,
    to_decimal,
)

MAX_BYTES = 4 * 1024 * 1024
MAX_NODES = 200_000
MAX_DEPTH = 64
PERIODS = ("day", "month", "year", "ever")

# Bounds of the rule numbers. Dates are in years 1900-9000 (model.YEARS) and a date computed from
# one (an expiry, an activation, a gift deadline, a reward's end, a tenure step) must stay a date:
# each duration is at most about a century, so from 9000 nothing passes year 9999. Points and money
# stay far below what the exact arithmetic (28 digits) and 64-bit JSON readers hold.
MONTHS_MAX = 1_200  # 100 years
DAYS_MAX = 36_600  # 100 years
HOURS_MAX = 876_000  # 100 years
WORKING_DAYS_MAX = 26_100  # 100 years of Mondays to Fridays
POINTS_MAX = 999_999_999  # as requests.POINTS_MAX: an adjustment, a gift, a price, a bonus
RATE_MAX = 1_000_000  # roubles per point, points per rouble
MONEY_MAX = Decimal("1000000000000")  # roubles: amount_max, thresholds, tier bounds
COEFFICIENT_MAX = Decimal(100)
DECIMALS_MAX = 4  # a coefficient or a share: exact products need few digits

try:  # the catalog cache is read by every command: the faster decoder when installed
    from orjson import loads as _loads
except ImportError:  # pragma: no cover
    from json import loads as _loads


def default_path() -> Path:
    here = Path(__file__).resolve().parent
    for candidate in (here / "catalog.yaml", here.parent / "catalog.yaml"):
        if candidate.is_file():
            return candidate
    return here / "catalog.yaml"


# ---------------------------------------------------------------- YAML with lines


class LDict(dict):
    """A mapping that remembers the line of itself and of each key (1-based)."""

    line = 1
    lines: dict


class LList(list):
    line = 1
    lines: list


class _TooBig(Exception):
    pass


def _convert(node, budget, depth=0, constructor=None):
    import yaml

    if constructor is None:
        constructor = yaml.constructor.SafeConstructor()

    budget[0] += 1
    if budget[0] > MAX_NODES:
        raise _TooBig(f"too many nodes (more than {MAX_NODES}; an alias bomb?)")
    if depth > MAX_DEPTH:
        raise _TooBig(f"nested more than {MAX_DEPTH} levels deep")
    line = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out = LDict()
        out.line, out.lines = line, {}
        dupes = []
        for knode, vnode in node.value:
            key = _convert(knode, budget, depth + 1, constructor)
            if isinstance(key, (dict, list)):
                key = str(key)
            if key in out:
                dupes.append((knode.start_mark.line + 1, key))
            out[key] = _convert(vnode, budget, depth + 1, constructor)
            out.lines[key] = knode.start_mark.line + 1
        out.dupes = dupes
        return out
    if isinstance(node, yaml.SequenceNode):
        out = LList()
        out.line = line
        out.lines = []
        for item in node.value:
            out.append(_convert(item, budget, depth + 1, constructor))
            out.lines.append(item.start_mark.line + 1)
        return out
    return constructor.construct_object(node)


def deep_line(text: str):
    """The line of a YAML text where its nesting goes deeper than MAX_DEPTH, else None: counted on
    the scanner's start and end tokens (the scanners of PyYAML and libyaml do not recurse), before
    the composer recurses into it (in C it would crash, not raise). Catalogs and scenarios both."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    opens = (yaml.BlockMappingStartToken, yaml.BlockSequenceStartToken, yaml.FlowMappingStartToken,
             yaml.FlowSequenceStartToken)
    closes = (yaml.BlockEndToken, yaml.FlowMappingEndToken, yaml.FlowSequenceEndToken)
    depth = 0
    try:
        for token in yaml.scan(text, Loader=loader):
            if isinstance(token, opens):
                depth += 1
                if depth > MAX_DEPTH:
                    return token.start_mark.line + 1
            elif isinstance(token, closes):
                depth -= 1
    except yaml.MarkedYAMLError as e:  # PyYAML >= 6.0.4 has a nesting limit of its own; else: malformed,
        mark = e.problem_mark or e.context_mark  # which the composer reports
        return (mark.line + 1 if mark else 1) if "nesting" in str(e.problem or "") else None
    except yaml.YAMLError:
        return None
    return None


def too_deep(text: str) -> bool:
    """Refuse nesting before the composer recurses into it (`deep_line`)."""
    return deep_line(text) is not None


def parse_yaml(text: str, path: str):
    """(document, problems): the document as LDict/LList trees, or problems."""
    import yaml

    if too_deep(text):
        return None, [Problem(path, 1, f"refused: nested more than {MAX_DEPTH} levels deep")]

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        node = yaml.compose(text, Loader=loader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else 1
        what = e.problem or e.context or "malformed YAML"
        return None, [Problem(path, line, f"malformed YAML: {what}")]
    except yaml.YAMLError as e:
        return None, [Problem(path, 1, f"malformed YAML: {e}")]
    except RecursionError:
        return None, [Problem(path, 1, "malformed YAML: nested too deeply")]
    if node is None:
        return None, [Problem(path, 1, "the catalog is empty")]
    try:
        doc = _convert(node, [0])
    except _TooBig as e:
        return None, [Problem(path, 1, f"refused: {e}")]
    except RecursionError:
        return None, [Problem(path, 1, "refused: nested too deeply")]
    except yaml.YAMLError as e:
        return None, [Problem(path, 1, f"malformed YAML: {e}")]
    except (ValueError, OverflowError, TypeError) as e:  # e.g. an integer of millions of digits
        return None, [Problem(path, 1, f"malformed YAML: a value cannot be read ({str(e)[:80]})")]
    return doc, []


# ---------------------------------------------------------------- checks


class _Checker:
    """Collects problems while reading a document; every read names its line."""

    def __init__(self, path: str):
        self.path = path
        self.problems: list = []

    def add(self, line: int, message: str) -> None:
        self.problems.append(Problem(self.path, line, message))

    def keys(self, mapping, where: str, required=(), optional=()) -> bool:
        if not isinstance(mapping, dict):
            self.add(getattr(mapping, "line", 1), f"{where} must be a mapping")
            return False
        for line, key in getattr(mapping, "dupes", []):
            self.add(line, f"{where}: duplicate key '{key}'")
        known = tuple(required) + tuple(optional)
        for key in mapping:
            if key not in known:
                import difflib

                hint = difflib.get_close_matches(str(key), known, n=1)
                more = f" (did you mean '{hint[0]}'?)" if hint else f" (known: {', '.join(known)})"
                self.add(mapping.lines[key], f"{where}: unknown key '{key}'{more}")
        for key in required:
            if key not in mapping:
                self.add(mapping.line, f"{where}: missing key '{key}'")
        return True

    def line(self, mapping, key) -> int:
        lines = getattr(mapping, "lines", None)
        if isinstance(lines, dict) and key in lines:
            return lines[key]
        return getattr(mapping, "line", 1)

    def int_(self, mapping, key, where, minimum=0, null=False, maximum=None, unit=""):
        value = mapping.get(key) if isinstance(mapping, dict) else None
        if value is None and null:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            kind = "a positive whole number" if minimum >= 1 else "a whole number, 0 or more"
            self.add(self.line(mapping, key), f"{where}: {key} must be {kind} (got {_show(value)})")
            return None
        if maximum is not None and value > maximum:
            self.add(self.line(mapping, key), f"{where}: {key} must be at most {maximum:,}{unit} (got {_show(value)})")
            return None
        return value

    def str_(self, mapping, key, where, null=False):
        value = mapping.get(key) if isinstance(mapping, dict) else None
        if value is None and null:
            return None
        if not isinstance(value, str) or not value.strip():
            self.add(self.line(mapping, key), f"{where}: {key} must be a non-empty text (got {_show(value)})")
            return None
        return value

    def bool_(self, mapping, key, where):
        value = mapping.get(key) if isinstance(mapping, dict) else None
        if not isinstance(value, bool):
            self.add(self.line(mapping, key), f"{where}: {key} must be true or false (got {_show(value)})")
            return None
        return value

    def dec(self, mapping, key, where, positive=True, null=False, maximum=None, decimals=None):
        value = mapping.get(key) if isinstance(mapping, dict) else None
        if value is None and null:
            return None
        try:
            if isinstance(value, bool) or value is None:
                raise ValueError
            d = to_decimal(value)
            if not d.is_finite() or (positive and d <= 0) or d < 0:
                raise ValueError
        except ValueError:
            self.add(self.line(mapping, key), f"{where}: {key} must be a positive number (got {_show(value)})")
            return None
        if maximum is not None and d > maximum:
            self.add(self.line(mapping, key), f"{where}: {key} must be at most {maximum:,} (got {_show(value)})")
            return None
        if decimals is not None and _decimals(d) > decimals:
            self.add(self.line(mapping, key), f"{where}: {key} must have at most {decimals} decimals (got {_show(value)})")
            return None
        return d

    def str_list(self, mapping, key, where, allowed=None, allowed_name=""):
        value = mapping.get(key) if isinstance(mapping, dict) else None
        if not isinstance(value, list):
            self.add(self.line(mapping, key), f"{where}: {key} must be a list")
            return ()
        out = []
        for i, item in enumerate(value):
            line = value.lines[i] if hasattr(value, "lines") else self.line(mapping, key)
            if not isinstance(item, str):
                self.add(line, f"{where}: {key} must list texts (got {_show(item)})")
            elif allowed is not None and item not in allowed:
                self.add(line, f"{where}: unknown {allowed_name} '{item}' (known: {', '.join(allowed)})")
            else:
                out.append(item)
        return tuple(out)


def _decimals(d: Decimal) -> int:
    """How many decimals a number really has ("0.990" has 2), exactly (no context rounding)."""
    _sign, digits, exp = d.as_tuple()
    if not isinstance(exp, int):
        return 0
    digits = list(digits)
    while exp < 0 and len(digits) > 1 and digits[-1] == 0:
        digits.pop()
        exp += 1
    return max(-exp, 0)


def _show(value) -> str:
    if value is None:
        return "nothing"
    return repr(value) if isinstance(value, str) else str(value)


TOP_KEYS = (
    "version", "program", "regions", "services", "join_methods", "bonuses", "earning",
    "gifts", "refunds", "store_discount", "channels", "reward_categories", "rewards",
)


def check_schema(c: _Checker, doc, out: dict) -> None:
    if not c.keys(doc, "catalog", TOP_KEYS):
        return
    if doc.get("version") != 1:
        c.add(c.line(doc, "version"), f"catalog: version must be 1 (got {_show(doc.get('version'))})")
    p = doc.get("program")
    if c.keys(p, "program", ("name", "timezone", "short_number", "closing_date",
                             "points_validity_months", "amount_max")):
        out["name"] = c.str_(p, "name", "program")
        tzname = c.str_(p, "timezone", "program")
        if tzname:
            try:
                from zoneinfo import ZoneInfo

                ZoneInfo(tzname)
                out["timezone"] = tzname
            except Exception:
                c.add(c.line(p, "timezone"), f"program: unknown time zone '{tzname}'")
        sn = p.get("short_number")
        out["short_number"] = str(sn) if sn is not None else ""
        closing = p.get("closing_date")
        if closing is None:
            out["closing_date"] = None
        elif isinstance(closing, dt.date) and not isinstance(closing, dt.datetime):
            out["closing_date"] = closing
        else:
            try:
                out["closing_date"] = dt.date.fromisoformat(str(closing))
            except ValueError:
                c.add(c.line(p, "closing_date"),
                      f"program: closing_date must be a date YYYY-MM-DD or null (got {_show(closing)})")
        closing = out.get("closing_date")
        if closing is not None and not YEARS[0] <= closing.year <= YEARS[1]:
            c.add(c.line(p, "closing_date"),
                  f"program: closing_date must be between {YEARS[0]} and {YEARS[1]} (got {closing})")
            out["closing_date"] = None
        out["validity_months"] = c.int_(p, "points_validity_months", "program", minimum=1, maximum=MONTHS_MAX,
                                        unit=" months")
        out["amount_max"] = c.dec(p, "amount_max", "program", maximum=MONEY_MAX)
    s = doc.get("services")
    if c.keys(s, "services", ("eligible", "ineligible", "default")):
        out["services_eligible"] = c.str_list(s, "eligible", "services")
        out["services_ineligible"] = c.str_list(s, "ineligible", "services")
        known = out["services_eligible"] + out["services_ineligible"]
        out["services_default"] = c.str_list(s, "default", "services", known, "service")
    m = doc.get("join_methods")
    methods = {}
    if c.keys(m, "join_methods", (), tuple(m.keys()) if isinstance(m, dict) else ()):
        for name, spec in m.items():
            where = f"join method {name}"
            if not c.keys(spec, where, (), ("hours", "working_days")):
                continue
            if len(spec) != 1:
                c.add(spec.line, f"{where}: give exactly one of hours or working_days")
                continue
            key = next(iter(spec))
            n = c.int_(spec, key, where, minimum=0, maximum=HOURS_MAX if key == "hours" else WORKING_DAYS_MAX,
                       unit=" (100 years)")
            if n is not None:
                methods[name] = Activation(**{key: n})
        if not methods:
            c.add(m.line, "join_methods: at least one method is needed")
    out["methods"] = methods
    b = doc.get("bonuses")
    if c.keys(b, "bonuses", ("welcome", "web_form", "web_profile", "referral", "card_welcome")):
        vals = {k: c.int_(b, k, "bonuses", maximum=POINTS_MAX) for k in ("welcome", "web_form", "web_profile", "referral")}
        cw = b.get("card_welcome")
        if c.keys(cw, "bonuses.card_welcome", ("points", "threshold_rub", "category")):
            pts = c.int_(cw, "points", "bonuses.card_welcome", maximum=POINTS_MAX)
            thr = c.dec(cw, "threshold_rub", "bonuses.card_welcome", maximum=MONEY_MAX)
            cat = c.str_(cw, "category", "bonuses.card_welcome")
            if None not in vals.values() and None not in (pts, thr, cat):
                out["bonuses"] = Bonuses(card_welcome=pts, card_welcome_threshold=thr,
                                         card_welcome_category=cat, **vals)
                out["_card_welcome_line"] = c.line(cw, "category")
    g = doc.get("gifts")
    if c.keys(g, "gifts", ("same_region", "min_points", "per_day", "per_month_points", "accept_days")):
        same = c.bool_(g, "same_region", "gifts")
        ints = {k: c.int_(g, k, "gifts", minimum=1, maximum=DAYS_MAX if k == "accept_days" else POINTS_MAX,
                          unit=" days (100 years)" if k == "accept_days" else "")
                for k in ("min_points", "per_day", "per_month_points", "accept_days")}
        if same is not None and None not in ints.values():
            out["gifts"] = GiftRules(same_region=same, **ints)
    r = doc.get("refunds")
    if c.keys(r, "refunds", ("allow_debt",)):
        out["allow_debt"] = c.bool_(r, "allow_debt", "refunds")
    sd = doc.get("store_discount")
    if c.keys(sd, "store_discount", ("reward", "points_per_rub", "max_share")):
        code = c.str_(sd, "reward", "store_discount")
        ppr = c.int_(sd, "points_per_rub", "store_discount", minimum=1, maximum=RATE_MAX)
        share = c.dec(sd, "max_share", "store_discount", decimals=DECIMALS_MAX)
        if share is not None and share > 1:
            c.add(c.line(sd, "max_share"), f"store_discount: max_share must be at most 1 (got {share})")
            share = None
        if None not in (code, ppr, share):
            out["store_discount"] = StoreDiscount(code, ppr, share)
            out["_store_line"] = c.line(sd, "reward")
    out["channels"] = c.str_list(doc, "channels", "catalog")


def check_regions(c: _Checker, doc, out: dict) -> None:
    regions = doc.get("regions")
    result = {}
    if not isinstance(regions, dict) or not regions:
        c.add(c.line(doc, "regions"), "regions must be a mapping of code: name with at least one region")
    else:
        for line, key in getattr(regions, "dupes", []):
            c.add(line, f"regions: duplicate region '{key}'")
        for code, name in regions.items():
            line = regions.lines[code]
            if not isinstance(code, str) or not code.strip() or any(ch.isspace() for ch in code):
                c.add(line, f"regions: a region code must be a text without spaces (got {_show(code)})")
                continue
            upper = code.upper()
            if upper in result:
                c.add(line, f"regions: duplicate region '{upper}' (codes are case-insensitive)")
                continue
            if not isinstance(name, str) or not name.strip():
                c.add(line, f"regions: region {code} needs a name")
                continue
            result[upper] = name
    out["regions"] = result


def check_rates(c: _Checker, doc, out: dict) -> None:
    e = doc.get("earning")
    out["categories"], out["ineligible"] = {}, {}
    if not c.keys(e, "earning", ("categories", "ineligible", "tenure", "card_tiers"), ("late_days",)):
        return
    if "late_days" in e:
        late = c.int_(e, "late_days", "earning", minimum=0, maximum=3660, unit=" days")
        if late is not None:
            out["late_days"] = late
    cats = e.get("categories")
    if c.keys(cats, "earning.categories", (), tuple(cats.keys()) if isinstance(cats, dict) else ()):
        for code, spec in cats.items():
            where = f"earning category {code}"
            if not c.keys(spec, where, ("tenure",), ("rub_per_point", "tiered", "description")):
                continue
            tenure = c.bool_(spec, "tenure", where)
            tiered = spec.get("tiered", False) is True
            rpp = None
            if tiered == ("rub_per_point" in spec):
                c.add(spec.line, f"{where}: give either rub_per_point or tiered: true")
                continue
            if not tiered:
                rpp = c.int_(spec, "rub_per_point", where, minimum=1, maximum=RATE_MAX)
                if rpp is None:
                    continue
            desc = spec.get("description") or ""
            if tenure is not None:
                out["categories"][code] = EarnCategory(code, rpp, tiered, tenure, str(desc))
    inel = e.get("ineligible")
    if isinstance(inel, dict):
        for code, reason in inel.items():
            if code in out["categories"]:
                c.add(inel.lines[code], f"earning.ineligible: '{code}' is also an earning category")
            out["ineligible"][code] = str(reason or f"{code} does not earn points")
    else:
        c.add(c.line(e, "ineligible"), "earning.ineligible must be a mapping of category: reason")
    b = out.get("bonuses")
    if b and b.card_welcome_category not in out["categories"]:
        c.add(out["_card_welcome_line"],
              f"bonuses.card_welcome: unknown earning category '{b.card_welcome_category}'")


def _steps(c, e, key, bound, value_key, integer_value):
    rows = e.get(key) if isinstance(e, dict) else None
    where = f"earning.{key}"
    if not isinstance(rows, list) or not rows:
        c.add(c.line(e, key), f"{where} must be a list of steps")
        return None
    steps, ok, last = [], True, None
    for i, row in enumerate(rows):
        if not c.keys(row, f"{where}[{i + 1}]", (bound, value_key)):
            ok = False
            continue
        if integer_value:
            v = c.int_(row, value_key, f"{where}[{i + 1}]", minimum=1, maximum=RATE_MAX)
            v = Decimal(v) if v is not None else None
        else:
            v = c.dec(row, value_key, f"{where}[{i + 1}]", maximum=COEFFICIENT_MAX, decimals=DECIMALS_MAX)
        up = row.get(bound)
        if up is not None:
            if bound == "up_to_months":  # whole months, at most a century: the step's date stays a date
                up = c.int_(row, bound, f"{where}[{i + 1}]", maximum=MONTHS_MAX, unit=" months")
                up = Decimal(up) if up is not None else None
            else:
                up = c.dec(row, bound, f"{where}[{i + 1}]", positive=False, maximum=MONEY_MAX)
            if up is None:
                ok = False
                continue
            if last is not None and up <= last:
                c.add(row.line, f"{where}: steps out of order: {bound} {up} after {last}")
                ok = False
            last = up
        elif i != len(rows) - 1:
            c.add(row.line, f"{where}: only the last step may have {bound}: null")
            ok = False
        if v is None:
            ok = False
        steps.append(Step(up, v))
    if ok and steps and steps[-1].up_to is not None:
        c.add(rows.lines[-1], f"{where}: the last step must have {bound}: null (no upper bound)")
        ok = False
    return tuple(steps) if ok else None


def check_tiers(c: _Checker, doc, out: dict) -> None:
    e = doc.get("earning")
    if not isinstance(e, dict):
        return
    out["tenure"] = _steps(c, e, "tenure", "up_to_months", "coefficient", False)
    out["card_tiers"] = _steps(c, e, "card_tiers", "up_to_rub", "rub_per_point", True)


def check_prices(c: _Checker, doc, out: dict) -> None:
    rewards = doc.get("rewards")
    regions = out.get("regions", {})
    sd = out.get("store_discount")
    if not isinstance(rewards, list):
        return
    for item in rewards:
        if not isinstance(item, dict):
            continue
        code = item.get("code", "?")
        where = f"reward {code}"
        is_store = sd is not None and code == sd.reward
        if is_store:
            if item.get("price") is not None:
                c.add(c.line(item, "price"), f"{where}: the store discount is priced by store_discount; price must be null")
        elif "price" in item:
            c.int_(item, "price", where, minimum=1, maximum=POINTS_MAX)
        rp = item.get("region_prices")
        if rp is None:
            continue
        if not isinstance(rp, dict):
            c.add(c.line(item, "region_prices"), f"{where}: region_prices must be a mapping of region: price")
            continue
        for region, price in rp.items():
            line = rp.lines[region]
            if str(region).upper() not in regions:
                c.add(line, f"{where}: price for {region}: unknown region")
            elif isinstance(price, bool) or not isinstance(price, int) or price < 1:
                c.add(line, f"{where}: price for {region} must be a positive whole number of points (got {_show(price)})")
            elif price > POINTS_MAX:
                c.add(line, f"{where}: price for {region} must be at most {POINTS_MAX:,} points (got {price})")


REWARD_KEYS = ("code", "name", "category", "price", "validity_days", "channels")
REWARD_OPTIONAL = ("region_prices", "ussd", "sms", "limits", "issues_code")


def _limits(c, mapping, where):
    raw = mapping.get("limits") if isinstance(mapping, dict) else None
    if raw is None:
        return ()
    if not isinstance(raw, list):
        c.add(c.line(mapping, "limits"), f"{where}: limits must be a list of {{per, max}}")
        return ()
    out = []
    for i, lim in enumerate(raw):
        if not c.keys(lim, f"{where}: limit", ("per", "max")):
            continue
        per = lim.get("per")
        if per not in PERIODS:
            c.add(c.line(lim, "per"), f"{where}: limit period '{per}' unknown (use day, month, year or ever)")
            continue
        n = c.int_(lim, "max", f"{where}: limit", minimum=1, maximum=POINTS_MAX)
        if n is not None:
            out.append(Limit(per, n))
    return tuple(out)


def check_rewards(c: _Checker, doc, out: dict) -> None:
    channels = out.get("channels", ())
    rc = doc.get("reward_categories")
    cats = {}
    if isinstance(rc, dict):
        for code, spec in rc.items():
            where = f"reward category {code}"
            if c.keys(spec, where, ("name",), ("limits",)):
                cats[code] = RewardCategory(code, str(spec.get("name")), _limits(c, spec, where))
    else:
        c.add(c.line(doc, "reward_categories"), "reward_categories must be a mapping")
    out["reward_categories"] = cats
    rewards = doc.get("rewards")
    result = {}
    if not isinstance(rewards, list) or not rewards:
        c.add(c.line(doc, "rewards"), "rewards must be a list with at least one reward")
        out["rewards"] = result
        return
    seen_code, seen_ussd, seen_sms = {}, {}, {}
    sd = out.get("store_discount")
    regions = out.get("regions", {})
    for i, item in enumerate(rewards):
        line = rewards.lines[i]
        if not isinstance(item, dict):
            c.add(line, "rewards: each reward must be a mapping")
            continue
        code = item.get("code")
        where = f"reward {code if isinstance(code, str) else '#' + str(i + 1)}"
        c.keys(item, where, REWARD_KEYS, REWARD_OPTIONAL)
        if not isinstance(code, str) or not code.strip() or any(ch.isspace() for ch in code):
            c.add(c.line(item, "code"), f"{where}: code must be a text without spaces")
            continue
        if code in seen_code:
            c.add(c.line(item, "code"), f"duplicate reward code '{code}' (first at line {seen_code[code]})")
            continue
        seen_code[code] = c.line(item, "code")
        name = c.str_(item, "name", where)
        category = item.get("category")
        if category not in cats:
            c.add(c.line(item, "category"), f"{where}: unknown category '{category}'")
        is_store = sd is not None and code == sd.reward
        price = item.get("price") if not is_store else None
        validity = item.get("validity_days")
        if validity is not None and not is_store:
            validity = c.int_(item, "validity_days", where, minimum=1, maximum=DAYS_MAX, unit=" days (100 years)")
        elif validity is None and not is_store:
            c.add(c.line(item, "validity_days"), f"{where}: validity_days must be a positive whole number")
        codes = {}
        for key, seen, label in (("ussd", seen_ussd, "USSD code"), ("sms", seen_sms, "SMS text")):
            val = item.get(key)
            if val is None:
                codes[key] = None
                continue
            if not isinstance(val, str) or not val.strip():
                c.add(c.line(item, key), f"{where}: {key} must be a text or null")
                codes[key] = None
                continue
            norm = val.strip().lower().replace(" ", "")
            if norm in seen:
                other, oline = seen[norm]
                c.add(c.line(item, key), f"{where}: duplicate {label} '{val}' (also reward {other} at line {oline})")
            else:
                seen[norm] = (code, c.line(item, key))
            codes[key] = val.strip()
        chans = c.str_list(item, "channels", where, channels, "channel")
        if "ussd" in chans and not codes["ussd"]:
            c.add(c.line(item, "channels"), f"{where}: channel ussd needs a ussd code")
        limits = _limits(c, item, where)
        issues = item.get("issues_code", False)
        if not isinstance(issues, bool):
            c.add(c.line(item, "issues_code"), f"{where}: issues_code must be true or false")
        rp = item.get("region_prices") or {}
        prices = {}
        if isinstance(rp, dict):
            for k, v in rp.items():
                if str(k).upper() in regions and isinstance(v, int) and not isinstance(v, bool) and v >= 1:
                    prices[str(k).upper()] = v
        if isinstance(price, bool) or not (price is None or isinstance(price, int)):
            price = None
        result[code] = Reward(code, name or code, str(category), price, prices, validity,
                              codes["ussd"], codes["sms"], chans, limits, bool(issues))
    if sd is not None and sd.reward not in result:
        c.add(out.get("_store_line", 1), f"store_discount: unknown reward '{sd.reward}'")
    out["rewards"] = result


# Named, ordered: the order is part of the contract (STYLE.md §3).
CATALOG_CHECKS = (
    ("schema", check_schema),
    ("regions", check_regions),
    ("rates", check_rates),
    ("tiers", check_tiers),
    ("prices", check_prices),
    ("rewards", check_rewards),
)


def problems(doc, path: str):
    """Run every check in order; return (Catalog or None, [Problem, ...])."""
    c = _Checker(path)
    out: dict = {}
    if doc is None:
        return None, [Problem(path, 1, "the catalog is empty")]
    if not isinstance(doc, dict):
        return None, [Problem(path, getattr(doc, "line", 1), "catalog must be a mapping")]
    for _name, check in CATALOG_CHECKS:
        try:
            check(c, doc, out)
        except (AttributeError, TypeError, KeyError) as e:  # a shape no check foresaw
            c.add(getattr(doc, "line", 1), f"cannot read this part of the catalog ({type(e).__name__}: {e})")
    if c.problems:
        return None, c.problems
    fields = {k: v for k, v in out.items() if not k.startswith("_")}
    return Catalog(path=path, **fields), []


def read_text(path: Path, shown: str) -> str:
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise FilesError(f"{shown}:1: refused: the catalog is {size} bytes (at most {MAX_BYTES})", "catalog-invalid")
        data = path.read_bytes()
    except FileNotFoundError:
        raise FilesError(f"catalog not found: {shown}", "catalog-missing")
    except IsADirectoryError:
        raise FilesError(f"catalog is a directory, not a file: {shown}", "catalog-missing")
    except OSError as e:
        raise FilesError(f"cannot read catalog {shown}: {e.strerror or e}", "catalog-unreadable")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise FilesError(f"{shown}:{line}: the catalog is not UTF-8 text", "catalog-invalid")


_PARSED: dict = {}  # (text, shown) -> Catalog: the last valid catalog parsed in this process (and its workers)


def validate(path: Path, shown: str):
    """(Catalog or None, problems) for a catalog file; never raises for content. A valid catalog is
    parsed once per process: `check --ledgers` validates it, then opens the service on it (never on the
    cache it verifies), and its forked workers open it again."""
    text = read_text(path, shown)
    key = (text, shown)  # the text itself: a file rewritten within one mtime tick is still read anew
    cat = _PARSED.get(key)
    if cat is not None:
        return cat, []
    doc, probs = parse_yaml(text, shown)
    if probs:
        return None, probs
    cat, probs = problems(doc, shown)
    if cat is not None and not probs:
        _PARSED.clear()  # one is enough: the catalog a process (and its workers) uses
        _PARSED[key] = cat
    return cat, probs


def identity(path: Path) -> str:
    """What a parsed catalog depends on: the file (resolved), its mtime and size, and bonuscli's version."""
    resolved = path.resolve()
    st = resolved.stat()
    return f"{resolved}\0{st.st_mtime_ns}\0{st.st_size}\0{__version__}"


def _cache_file(cache_dir: Path, key: str) -> Path:
    import zlib

    return cache_dir / f"catalog-{zlib.crc32(key.encode()):08x}{zlib.adler32(key.encode()):08x}.json"


CACHE_FORMAT = 1
_TYPES = {t.__name__: t for t in (Catalog, Activation, Bonuses, EarnCategory, GiftRules, Limit, Reward,
                                  RewardCategory, Step, StoreDiscount)}


def to_plain(value):
    """A parsed catalog as JSON-able data: named tuples, decimals, dates and tuples tagged."""
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return {"$t": type(value).__name__, "f": [to_plain(v) for v in value]}
    if isinstance(value, Decimal):
        return {"$d": str(value)}
    if isinstance(value, dt.date):
        return {"$date": value.isoformat()}
    if isinstance(value, tuple):
        return {"$tuple": [to_plain(v) for v in value]}
    if isinstance(value, list):
        return [to_plain(v) for v in value]
    if isinstance(value, dict):
        return {"$dict": [[to_plain(k), to_plain(v)] for k, v in value.items()]}
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise TypeError(f"cannot cache {type(value).__name__}")


def from_plain(value):
    """The inverse of `to_plain`; only the model's own types are built (ValueError otherwise)."""
    if isinstance(value, dict):
        if "$t" in value:
            cls = _TYPES.get(value["$t"])
            if cls is None:
                raise ValueError(f"not a catalog type: {value['$t']!r}")
            return cls(*[from_plain(v) for v in value["f"]])
        if "$d" in value:  # as `to_plain` writes them: texts (a number, NaN... is not a cached catalog)
            if type(value["$d"]) is not str:
                raise ValueError("not a cached catalog")
            return Decimal(value["$d"])
        if "$date" in value:
            return dt.date.fromisoformat(value["$date"])
        if "$tuple" in value:
            return tuple(from_plain(v) for v in value["$tuple"])
        if "$dict" in value:
            return {from_plain(k): from_plain(v) for k, v in value["$dict"]}
        raise ValueError("not a cached catalog")
    if isinstance(value, list):
        return [from_plain(v) for v in value]
    return value


CACHE_MAX_BYTES = 16 * MAX_BYTES  # the cache of the largest catalog is far smaller: a larger file is no cache


def _whole(v, lo: int, hi: int) -> bool:
    return type(v) is int and lo <= v <= hi


def _number(v, lo, hi, decimals=None, positive=True) -> bool:
    """A finite Decimal in [lo, hi] (> 0 when `positive`), with at most `decimals` decimals."""
    return (type(v) is Decimal and v.is_finite() and lo <= v <= hi and (v > 0 or not positive)
            and (decimals is None or _decimals(v) <= decimals))


def _text(v, empty=False) -> bool:
    return type(v) is str and (empty or bool(v.strip()))


def _texts(v) -> bool:
    return type(v) is tuple and set(map(type, v)) <= {str}


def _steps_ok(steps, up_max, value_ok, whole_up) -> bool:
    if type(steps) is not tuple or not steps or any(type(s) is not Step for s in steps):
        return False
    bounds = [s.up_to for s in steps]
    if bounds[-1] is not None or not all(value_ok(s.value) for s in steps):
        return False
    ups = bounds[:-1]
    return (all(_number(u, 0, up_max, positive=False) and (not whole_up or u == u.to_integral_value())
                for u in ups) and all(a < b for a, b in zip(ups, ups[1:])))


def _limits_ok(limits) -> bool:
    return type(limits) is tuple and all(type(x) is Limit and x.per in PERIODS and _whole(x.max, 1, POINTS_MAX)
                                         for x in limits)


def cached_catalog_ok(cat) -> bool:
    """A cached catalog holds only what the checks of a catalog file let through: the model's types,
    each number within the bounds the checks apply, every name it refers to present. The cache is a
    derived file anyone who can write `cache/` may have planted ({"$d": "NaN"} for a price, a text for
    a count...): anything else is a miss, and the catalog file is read again."""
    from bonuscli.model import zone

    try:
        if not (type(cat) is Catalog and _text(cat.path) and _text(cat.name) and _text(cat.timezone)
                and _text(cat.short_number, empty=True) and _whole(cat.validity_months, 1, MONTHS_MAX)
                and _number(cat.amount_max, 0, MONEY_MAX) and type(cat.allow_debt) is bool):
            return False
        zone(cat.timezone)
        closing = cat.closing_date
        if closing is not None and not (type(closing) is dt.date and YEARS[0] <= closing.year <= YEARS[1]):
            return False
        if not (type(cat.regions) is dict and cat.regions
                and all(type(k) is str and k.split() == [k] and k == k.upper() and _text(v)
                        for k, v in cat.regions.items())):
            return False
        if not (_texts(cat.services_eligible) and _texts(cat.services_ineligible) and _texts(cat.services_default)
                and set(cat.services_default) <= set(cat.services_eligible + cat.services_ineligible)
                and _texts(cat.channels)):
            return False
        if not (type(cat.methods) is dict and cat.methods and all(
                _text(k) and type(a) is Activation and _whole(a.hours, 0, HOURS_MAX)
                and _whole(a.working_days, 0, WORKING_DAYS_MAX) for k, a in cat.methods.items())):
            return False
        cats = cat.categories
        if not (type(cats) is dict and all(
                type(c) is EarnCategory and c.code == k and _text(k) and type(c.tiered) is bool
                and type(c.tenure) is bool and _text(c.description, empty=True)
                and (c.rub_per_point is None if c.tiered else _whole(c.rub_per_point, 1, RATE_MAX))
                for k, c in cats.items())
                and type(cat.ineligible) is dict and all(_text(k) and type(v) is str and k not in cats
                                                         for k, v in cat.ineligible.items())):
            return False
        b = cat.bonuses
        if not (type(b) is Bonuses and all(_whole(getattr(b, f), 0, POINTS_MAX) for f in
                                           ("welcome", "web_form", "web_profile", "referral", "card_welcome"))
                and _number(b.card_welcome_threshold, 0, MONEY_MAX) and b.card_welcome_category in cats):
            return False
        if not (_steps_ok(cat.tenure, MONTHS_MAX, lambda v: _number(v, 0, COEFFICIENT_MAX, DECIMALS_MAX), True)
                and _steps_ok(cat.card_tiers, MONEY_MAX,
                              lambda v: _number(v, 1, RATE_MAX) and v == v.to_integral_value(), False)):
            return False
        g = cat.gifts
        if not (type(g) is GiftRules and type(g.same_region) is bool and _whole(g.accept_days, 1, DAYS_MAX)
                and all(_whole(getattr(g, f), 1, POINTS_MAX) for f in ("min_points", "per_day", "per_month_points"))):
            return False
        rcs = cat.reward_categories
        if not (type(rcs) is dict and all(type(rc) is RewardCategory and rc.code == k and _text(k)
                                          and type(rc.name) is str and _limits_ok(rc.limits)
                                          for k, rc in rcs.items())):
            return False
        sd, rewards = cat.store_discount, cat.rewards
        if not (type(sd) is StoreDiscount and _whole(sd.points_per_rub, 1, RATE_MAX)
                and _number(sd.max_share, 0, 1, DECIMALS_MAX) and type(rewards) is dict and rewards
                and sd.reward in rewards):
            return False
        for code, r in rewards.items():
            store = code == sd.reward
            if not (type(r) is Reward and r.code == code and _text(code) and _text(r.name) and r.category in rcs
                    and (r.price is None if store else _whole(r.price, 1, POINTS_MAX))
                    and (store and r.validity_days is None or _whole(r.validity_days, 1, DAYS_MAX))
                    and type(r.region_prices) is dict
                    and all(k in cat.regions and _whole(v, 1, POINTS_MAX) for k, v in r.region_prices.items())
                    and (r.ussd is None or _text(r.ussd)) and (r.sms is None or _text(r.sms))
                    and _texts(r.channels) and set(r.channels) <= set(cat.channels) and _limits_ok(r.limits)
                    and type(r.issues_code) is bool):
                return False
    except Exception:  # a shape no check foresaw (zone(): an unknown time zone): not a cache to use
        return False
    return True


def _cached(path: Path, shown: str, cache_dir: Path):
    """(the cache file of this catalog, its key, the Catalog it holds or None). A cache is only an
    optimisation: any doubt about the file is a miss (RecursionError, MemoryError too), never an error."""
    key = identity(path)
    cached = _cache_file(cache_dir, key)
    try:
        fd = os.open(cached, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as f:
            if os.fstat(f.fileno()).st_size > CACHE_MAX_BYTES:
                raise ValueError("not a catalog cache: too large")
            doc = _loads(f.read())
        if doc.get("format") == CACHE_FORMAT and doc.get("key") == key:
            cat = from_plain(doc["catalog"])
            if isinstance(cat, Catalog) and cat.path == shown and cached_catalog_ok(cat):
                return cached, key, cat
    except Exception:
        pass
    return cached, key, None


def load(path: Path, shown: str, cache_dir: Path | None = None, defer: list | None = None) -> Catalog:
    """A valid Catalog, or FilesError listing every problem (one per line). With `defer`, a cache
    miss appends the function that writes the cache instead of writing it (the caller runs it once
    the command has succeeded: bad input changes nothing on disk)."""
    cached = None
    if cache_dir is not None:
        try:
            cached, key, cat = _cached(path, shown, cache_dir)
        except Exception:  # identity(): the catalog file is not there; validate() says so
            cached = None
        else:
            if cat is not None:
                return cat
    cat, probs = validate(path, shown)
    if probs:
        err = FilesError("\n".join(str(p) for p in probs), "catalog-invalid")
        err.problems = probs
        raise err
    if cached is not None:
        if defer is not None:
            defer.append(lambda: _save(cache_dir, cached, key, cat))
        else:
            _save(cache_dir, cached, key, cat)
    return cat


def cache_forged(path: Path, shown: str, cache_dir: Path, parsed: Catalog):
    """For `check --ledgers`: the cache file of this catalog when a command would use it and it is not
    what a parse of the catalog file gives (`parsed`), else None. (A cache no command would use, for
    it is unreadable, out of range or of another catalog, is as if absent.)"""
    try:
        cached, _key, cat = _cached(path, shown, cache_dir)
    except Exception:
        return None
    return cached if cat is not None and cat != parsed else None


def _save(cache_dir: Path, cached: Path, key: str, cat: Catalog) -> None:
    try:
        from bonuscli.paths import make_private_dir

        make_private_dir(cache_dir)
        tmp = cached.with_suffix(f".{os.getpid()}.tmp")
        try:
            os.unlink(tmp)
        except OSError:
            pass
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            import json

            json.dump({"format": CACHE_FORMAT, "key": key, "catalog": to_plain(cat)}, f, ensure_ascii=False)
        os.replace(tmp, cached)
    except (OSError, TypeError, ValueError):
        pass
