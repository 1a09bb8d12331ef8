"""Bad input, fuzzed (issue 11): never a traceback, the documented exit code, nothing written on an error,
hostile names never reach the file system, hostile catalogs refused quickly.

Each example runs the CLI in-process on its own copy of a small data directory
(A and B members of RU-MOW, A earned 1000 RUB mobile with ref e1, B offered A a
gift of 40), from a working directory inside the test's tmp dir, and compares
the whole tmp tree before and after.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import time
from decimal import Decimal, InvalidOperation
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from bonuscli.cli import cli

ROOT = Path(__file__).resolve().parent.parent
CATALOG = ROOT / "catalog.yaml"
A, B = "9160000001", "9160000002"
T0 = "2025-03-01T12:00+03:00"
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                         HealthCheck.too_slow])

HOSTILE = ["../9160000001", "../../etc/passwd", "/etc/passwd", "9160000001/../../x", "..", ".", "~", "~root",
           "9160000001\x00", "916000\x000001", "\x00", "9" * 10000, "1" * 41, "a" * 300, "9160000001.jsonl",
           "9160000001.lock", "*", "916000000?", "$(touch pwned)", "`id`", "9160000001; rm -rf /",
           "\u0669\u0661\u0666\u0660\u0660\u0660\u0660\u0660\u0660\u0661",  # Arabic-Indic digits
           "\uff19\uff11\uff16\uff10\uff10\uff10\uff10\uff10\uff10\uff11",  # full-width digits
           "\u00b9\u00b2\u00b3" + "9160000", "916 000 0001\n", "\n", "", " ", "-", "+", "+79", "++79160000001",
           "+89160000001", "916..0000001", "C:\\Windows\\system32", "\\\\server\\share", "9160000001\u202e",
           "CON", "nul", "9160000001 ", "%2e%2e%2f", "\ud83d\ude00" * 5]
TEXT = st.one_of(st.sampled_from(HOSTILE), st.text(max_size=30), st.text(alphabet="0123456789 +-.()/", max_size=20))


# ---------------------------------------------------------------- harness


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    data = tmp_path_factory.mktemp("fuzz-template") / "data"
    for args in (["join", A, "--region", "RU-MOW"], ["join", B, "--region", "RU-MOW"],
                 ["earn", A, "1000", "--category", "mobile", "--ref", "e1"], ["gift", B, A, "40"]):
        r = CliRunner().invoke(cli, ["--data-dir", str(data), "--at", T0, *args, "--json"], catch_exceptions=False)
        assert r.exit_code == 0, r.stderr
        if args[0] == "gift":
            (data.parent / "gift_id").write_text(json.loads(r.stdout)["gift_id"])
    return data


def snapshot(root: Path) -> dict:
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        out[rel] = None if p.is_dir() else p.read_bytes()
    return out


SAFE = [re.compile(r"^data$"), re.compile(r"^data/(ledgers|locks|cache)$"), re.compile(r"^data/ledgers/\d{10}\.jsonl$"),
        re.compile(r"^data/locks/\d{10}\.lock$"), re.compile(r"^data/cache/[^/]+$"), re.compile(r"^cwd$")]


class Box:
    """One example's world: a fresh copy of the template data dir, an empty cwd."""

    def __init__(self, tmp: Path, template: Path, monkeypatch):
        self.tmp = tmp
        self.n = 0
        self.template = template
        self.monkeypatch = monkeypatch

    def fresh(self):
        self.n += 1
        root = self.tmp / f"ex{self.n}"
        shutil.copytree(self.template, root / "data")
        (root / "cwd").mkdir()
        self.monkeypatch.chdir(root / "cwd")
        return root

    def invoke(self, args, as_json=False, input=None, catalog=None, follow=None):
        """Run once in a fresh world; check the promises that hold for every command; return the result."""
        as_json = as_json or "--json" in args
        root = self.fresh()
        data = root / "data"
        full = ["--data-dir", str(data)] + (["--catalog", str(catalog)] if catalog else []) + list(args)
        if as_json:
            full.append("--json")
        before = snapshot(root)
        t = time.process_time()
        r = CliRunner().invoke(cli, full, input=input, catch_exceptions=False)
        r.cpu = time.process_time() - t
        after = snapshot(root)
        out = r.stdout + r.stderr
        try:
            event(f"{args[0]}: exit {r.exit_code}")  # --hypothesis-show-statistics: what the examples reached
        except InvalidArgument:  # not inside a hypothesis test
            pass
        assert r.exit_code in (0, 1, 2, 3), (args, r.exit_code, out)
        assert "Traceback" not in out and "internal error" not in r.stderr, (args, out)
        if r.exit_code != 0:
            lines = [l for l in r.stderr.split("\n") if l.strip() and not l.startswith("warning:")]
            if args[0] == "check":  # check prints its `path:line: message` lines, then the one error line
                lines = lines[-1:]
            assert len(lines) == 1, (args, r.stderr)
            if as_json:
                doc = json.loads(lines[0])
                assert doc["error"]["code"] == r.exit_code and doc["error"]["message"], (args, lines)
            else:
                assert lines[0].startswith("error: "), (args, lines)
            # nothing written on an error: not a byte of any ledger, no new file anywhere; only a lock file
            # may appear for the member(s) a refused change had locked
            grown = {k for k in after if k not in before}
            assert all(re.match(r"^data/locks/\d{10}\.lock$", k) for k in grown), (args, sorted(grown))
            assert {k: v for k, v in after.items() if k in before} == before, (args, r.exit_code)
        for k in after:
            assert any(p.match(k) for p in SAFE), (args, k)
        r.follow = []
        for more in follow or ():
            f = CliRunner().invoke(cli, ["--data-dir", str(data), *more], catch_exceptions=False)
            assert "Traceback" not in f.stderr and "internal error" not in f.stderr, (args, more, f.stderr)
            r.follow.append(f)
        shutil.rmtree(root)
        r.before, r.after = before, after
        return r


@pytest.fixture
def box(tmp_path, template, monkeypatch):
    return Box(tmp_path, template, monkeypatch)


def gift_id(template):
    return (template.parent / "gift_id").read_text()


# ---------------------------------------------------------------- oracles (RULES.md §1), written from the spec


def phone_oracle(text: str):
    """'bad' when RULES.md §1 clearly refuses it, the 10 digits when it clearly accepts it, else None."""
    s = text.strip()
    if any(c not in "0123456789 -.()+" for c in s) or ".." in s or "+" in s[1:]:
        return "bad"
    digits = "".join(c for c in s if c.isdigit())
    if s.startswith("+"):
        if not (len(digits) == 11 and digits[0] == "7"):
            return "bad"
    elif not (len(digits) == 10 or (len(digits) == 11 and digits[0] in "78")):
        return "bad"
    if re.fullmatch(r"\+?\d+([ -]?\d+)*", s) and len(s) <= 40:
        return digits[-10:]
    return None


def amount_oracle(text: str):
    s = text.strip()
    if not re.fullmatch(r"[0-9]*\.?[0-9]*", s) or not re.search(r"[0-9]", s):
        return "bad"
    try:
        v = Decimal(s)
    except InvalidOperation:
        return "bad"
    if v <= 0 or v > 1000000 or ("." in s and len(s.split(".")[1]) > 2):
        return "bad"
    if re.fullmatch(r"[0-9]{1,7}(\.[0-9]{1,2})?", s):
        return "ok"
    return None


# ---------------------------------------------------------------- phones


PHONE_CMDS = [
    ["balance", "{p}"], ["history", "{p}"], ["forecast", "{p}"], ["leave", "{p}", "--yes"],
    ["join", "{p}", "--region", "RU-MOW"], ["join", "9160000009", "--region", "RU-MOW", "--referrer", "{p}"],
    ["earn", "{p}", "100", "--category", "mobile", "--ref", "z1"], ["redeem", "{p}", "minutes_30"],
    ["gift", A, "{p}", "10"], ["gift", "{p}", A, "10"], ["accept", "{p}", "gzzzzzz"],
    ["refund", "{p}", "e1", "--amount", "10"], ["adjust", "{p}", "5", "--reason", "x"], ["explain", "{p}"],
    ["sms", "{p}", "BAL", "--region", "RU-MOW"], ["ussd", "{p}", "*111*455*0#"], ["path", "{p}"],
]


@FUZZ
@given(cmd=st.sampled_from(PHONE_CMDS), phone=st.one_of(TEXT, st.sampled_from([
    A, B, "+7 916 000-00-01", "8 (916) 000-00-02", "7916000 00 01", " 9160000002 ", "+7(916)0000001", "916.000.00.01",
    "0953171134", "8-916-000-00-09"]), st.builds(
    lambda pre, d, sep: pre + sep.join([d[:3], d[3:6], d[6:8], d[8:]]),
    st.sampled_from(["", "8", "+7", "7"]), st.text("0123456789", min_size=10, max_size=10),
    st.sampled_from(["", " ", "-"]))), as_json=st.booleans())
def test_fuzz_phones(box, cmd, phone, as_json):
    args = [a.replace("{p}", phone) for a in cmd]
    r = box.invoke(args, as_json)
    want = phone_oracle(phone)
    if want == "bad":
        assert r.exit_code == 2, (args, r.exit_code, r.stderr)
    elif want is not None:
        assert r.exit_code in (0, 1), (args, r.exit_code, r.stderr)
    if r.exit_code == 0 and cmd[0] in ("join", "earn", "adjust") and "{p}" == cmd[1]:
        digits = "".join(c for c in phone if c in "0123456789")[-10:]
        assert f"data/ledgers/{digits}.jsonl" in r.after, (args, sorted(r.after))


@pytest.mark.parametrize("text", ["BAL", "BONUS", "0"])
def test_sms_balance_or_leave_from_a_non_member_is_exit_1(box, text):
    """CLI.md (sms): "`0` or `BAL` from a non-member is exit 1 (not a member)"."""
    r = box.invoke(["sms", "9160000009", text])
    assert r.exit_code == 1, r.stderr
    assert "not a member" in r.stderr


# ---------------------------------------------------------------- amounts


AMOUNTS = st.one_of(
    st.decimals(min_value=Decimal("-10"), max_value=Decimal("2000000"), places=2, allow_nan=False).map(str),
    st.decimals(allow_nan=True, allow_infinity=True).map(str),
    st.integers(-10, 3000000).map(str),
    st.floats().map(repr),
    st.sampled_from(["0", "0.00", "-0", "0.001", "1e3", "1E2", "NaN", "Infinity", "-Infinity", "1,000", "1 000",
                     "1000000", "1000000.01", "999999.99", "0.01", "0.1", "00100", "100.", ".5", "+5", "5 RUB",
                     "\uff11\uff10\uff10", "\u0661\u0660\u0660", "1_000", "0x10", "1/2", "", " ", "\x00"]),
    TEXT)


@FUZZ
@given(amount=AMOUNTS, which=st.sampled_from(["earn", "calc", "refund", "price"]), as_json=st.booleans())
def test_fuzz_amounts(box, amount, which, as_json):
    args = {"earn": ["earn", A, amount, "--category", "mobile", "--ref", "z"],
            "calc": ["calc", amount, "--category", "mobile"],
            "refund": ["refund", A, "e1", "--amount", amount],
            "price": ["redeem", A, "store_discount", "--via", "store", "--price", amount]}[which]
    r = box.invoke(args, as_json)
    want = amount_oracle(amount)
    if want == "bad":
        assert r.exit_code == 2, (args, r.exit_code, r.stderr)
    elif want == "ok":
        if which in ("earn", "calc"):
            assert r.exit_code == 0, (args, r.stderr)
            if as_json:  # floor(amount / 5) at coefficient 1.0
                assert json.loads(r.stdout)["points"] == int(Decimal(amount) // 5), (args, r.stdout)
        else:
            assert r.exit_code in (0, 1), (args, r.stderr)  # refund > 1000 RUB: refused, not malformed


# ---------------------------------------------------------------- dates


DATES = st.one_of(
    st.datetimes(min_value=dt.datetime(2025, 3, 1, 12), max_value=dt.datetime(2027, 12, 31),
                 timezones=st.sampled_from([None, dt.timezone.utc, dt.timezone(dt.timedelta(hours=3)),
                                            dt.timezone(dt.timedelta(hours=-11, minutes=-30))])).map(
        lambda d: d.isoformat()),
    st.dates(min_value=dt.date(2025, 3, 2), max_value=dt.date(2030, 1, 1)).map(lambda d: d.isoformat()),
    st.datetimes(timezones=st.one_of(st.none(), st.timezones())).map(lambda d: d.isoformat()),
    st.dates().map(lambda d: d.isoformat()),
    st.sampled_from(["0001-01-01", "9999-12-31", "9999-12-31T23:59:59", "9999-12-31T23:59+00:00",
                     "0001-01-01T00:00+14:00", "9999-12-31T23:59:59-23:59", "2025-02-29", "2024-02-29",
                     "2025-13-01", "2025-00-10", "2025-03-01T25:00", "2025-03-01T12:00+24:00", "2025-03-01Z",
                     "20250301", "2025-W09-6", "2025-03-01T12:00:00.123456789+03:00", "yesterday", "now",
                     "2025/03/01", "01.03.2025", "1e9", "-2025-03-01", "\x002025-03-01", "2025-03-01\x00"]),
    TEXT)

DATE_CMDS = [
    ["balance", A, "--at", "{d}"], ["earn", A, "100", "--category", "mobile", "--ref", "z", "--at", "{d}"],
    ["join", "9160000009", "--region", "RU-MOW", "--at", "{d}"], ["forecast", A, "--until", "{d}"],
    ["adjust", A, "5", "--reason", "x", "--expires-on", "{d}"], ["gift", A, B, "10", "--at", "{d}"],
    ["join", "9160000009", "--region", "RU-MOW", "--method", "web", "--email", "a@b.ru", "--birth-date", "{d}"],
    ["join", "9160000009", "--region", "RU-MOW", "--customer-since", "{d}"], ["redeem", A, "minutes_30", "--at", "{d}"],
    ["calc", "100", "--category", "mobile", "--customer-since", "{d}"], ["report", "--from", "{d}"],
]


@FUZZ
@given(cmd=st.sampled_from(DATE_CMDS), when=DATES, as_json=st.booleans())
def test_fuzz_dates(box, cmd, when, as_json):
    args = [a.replace("{d}", when) for a in cmd]
    at = ["--at", when] if "--at" in cmd else []
    phone = cmd[1]
    # whatever a command accepts and writes can be read back and checked, as of the same instant
    r = box.invoke(args, as_json, follow=[["balance", phone, *at], ["check", "--ledgers", *at]])
    if not re.search(r"[0-9]{4}", when) and when.strip():  # (an empty --at: test_empty_at_is_malformed)
        assert r.exit_code == 2, (args, r.stderr)
    if r.exit_code == 0 and cmd[0] in ("earn", "join", "gift", "redeem", "adjust"):
        bal, chk = r.follow
        assert bal.exit_code == 0 and chk.exit_code == 0, (args, bal.stderr, chk.stderr)


@pytest.mark.parametrize("cmd", [["balance", A], ["earn", A, "100", "--category", "mobile", "--ref", "z"]])
def test_empty_at_is_malformed(box, cmd):
    """CLI.md §2: a malformed date is exit 2; an empty --at is not a date (it must not mean "now")."""
    r = box.invoke(cmd + ["--at", ""])
    assert r.exit_code == 2, (r.exit_code, r.stdout)


@pytest.mark.parametrize("when", ["9999-12-31T23:59+00:00", "0001-01-01T00:00+14:00", "9999-12-31T23:59-12:00"])
def test_instant_out_of_range_is_bad_input(box, when):
    """An --at that cannot be placed in program time (Moscow) is malformed input, not an internal error."""
    r = box.invoke(["balance", A, "--at", when])
    assert r.exit_code == 2, r.stderr


def test_join_at_the_end_of_time_leaves_a_readable_ledger(box):
    """A command that accepts an instant must leave a ledger that can be replayed as of that instant
    (the welcome lot's expiry, 12 months later, does not exist in year 10000)."""
    r = box.invoke(["join", "9160000009", "--region", "RU-MOW", "--at", "9999-12-31T23:59"],
                   follow=[["balance", "9160000009", "--at", "9999-12-31T23:59"],
                           ["check", "--ledgers", "--at", "9999-12-31T23:59"]])
    assert r.exit_code in (0, 2), r.stderr
    if r.exit_code == 0:
        assert [f.exit_code for f in r.follow] == [0, 0], [f.stderr for f in r.follow]


# ---------------------------------------------------------------- reward codes, channels, categories


def catalog_doc():
    return yaml.safe_load(CATALOG.read_text())


CAT = catalog_doc()
REWARDS = sorted(CAT["rewards"]) if isinstance(CAT.get("rewards"), dict) else sorted(
    r["code"] for r in CAT["rewards"])
CHANNELS = ["web", "app", "sms", "ussd", "store"]
ELIGIBLE = ["mobile", "mobile_internet", "home_internet", "home_tv", "home_phone", "mts_store", "partner_store",
            "taxi", "in_app", "card"]
INELIGIBLE = ["tariff_package", "topup_voucher", "loan_repayment", "utilities", "money_transfer"]


@FUZZ
@given(code=st.one_of(st.sampled_from(REWARDS), TEXT), via=st.one_of(st.sampled_from(CHANNELS), TEXT),
       as_json=st.booleans(), show=st.booleans())
def test_fuzz_reward_codes(box, code, via, as_json, show):
    if show:
        r = box.invoke(["catalog", code], as_json)
        # `--` alone ends the options (Click, like every Unix tool): `catalog --` is the listing, and
        # in `catalog -- --json` (the box puts --json last) `--json` is the code asked for: unknown
        listing = code == "--" and not as_json
        assert r.exit_code == (0 if code in REWARDS or listing else 2), (code, as_json, r.stderr)
        return
    r = box.invoke(["redeem", A, code, "--via", via], as_json)
    if code not in REWARDS or via.strip().lower() not in CHANNELS:
        assert r.exit_code == 2, (code, via, r.exit_code, r.stderr)
    elif code == "store_discount" and r.exit_code == 2:  # allowed there, but --price is missing: bad input
        assert "missing-price" in r.stderr or "needs --price" in r.stderr, (code, via, r.stderr)
    else:
        assert r.exit_code in (0, 1), (code, via, r.stderr)


@FUZZ
@given(category=st.one_of(st.sampled_from(ELIGIBLE + INELIGIBLE), TEXT), which=st.sampled_from(["earn", "calc"]),
       as_json=st.booleans())
def test_fuzz_categories(box, category, which, as_json):
    args = (["earn", A, "100", "--category", category, "--ref", "z"] if which == "earn"
            else ["calc", "100", "--category", category])
    r = box.invoke(args, as_json)
    norm = category.strip().lower()
    if category in ELIGIBLE:
        assert r.exit_code == 0, (args, r.stderr)
    elif category in INELIGIBLE:
        assert r.exit_code == 1, (args, r.stderr)
    elif norm not in ELIGIBLE + INELIGIBLE:
        assert r.exit_code == 2, (args, r.exit_code, r.stderr)


@pytest.mark.parametrize("args", [["redeem", A, "\x1b[2J\x1b]0;owned\x07"], ["catalog", "\x1b[31mred"],
                                  ["earn", A, "100", "--category", "\x1b[8m"], ["join", "9160000009", "--region", "\x9b1m"],
                                  ["redeem", A, "minutes_30", "--via", "web\u2028x"]])
def test_error_line_carries_no_control_characters(box, args):
    """The one `error:` line echoes what was typed; terminal escapes and line separators must not pass raw
    (hostile input would repaint the terminal or forge a second line)."""
    r = box.invoke(args)
    assert r.exit_code == 2
    line = r.stderr.rstrip("\n")
    assert not [c for c in line if ord(c) < 32 or 0x7f <= ord(c) <= 0x9f or c in "\u2028\u2029"], repr(line)


# ---------------------------------------------------------------- option soup


COMMANDS = ["join", "earn", "calc", "balance", "forecast", "catalog", "redeem", "gift", "accept", "history", "leave",
            "check", "sms", "ussd", "refund", "adjust", "explain", "report", "path", "completion", "diff", "nope"]
OPTIONS = ["--json", "--ref", "--category", "--at", "--dry-run", "--via", "--price", "--points", "--reason",
           "--expires-on", "--amount", "--reject", "--yes", "--region", "--referrer", "--method", "--services",
           "--days", "--until", "--tenure-months", "--customer-since", "--card-last-month", "--explain",
           "--email", "--birth-date", "--search", "--max-price", "--channel", "--ledgers", "--from", "--fail-on",
           "--help", "-h", "--version", "--debug", "--", "-", "--nope", "-x"]
VALUES = st.one_of(st.sampled_from([A, B, "9160000003", "100", "-5", "0", "RU-MOW", "ru-bry", "mobile", "card",
                                    "minutes_30", "store_discount", "store", "web", "2025-03-02", "10", "e1",
                                    "bash", "{gid}", "/etc/passwd", "../x", "-"]), TEXT)


@FUZZ
@given(cmd=st.sampled_from(COMMANDS), tokens=st.lists(st.one_of(st.sampled_from(OPTIONS), VALUES), max_size=8),
       as_json=st.booleans())
def test_fuzz_option_soup(box, template, cmd, tokens, as_json):
    args = [cmd] + [t.replace("{gid}", gift_id(template)) for t in tokens]
    assume("--debug" not in args)  # --debug may show a traceback, by design
    r = box.invoke(args, as_json, input="")
    if cmd == "nope" or any(t in ("--nope", "-x") for t in tokens):
        assert r.exit_code == 2, (args, r.exit_code)


@pytest.mark.parametrize("args", [["check", "--scenario", "x\x00"], ["--catalog", "x\x00", "balance", A],
                                  ["--data-dir", "x\x00", "balance", A], ["earn", "--from", "x\x00"],
                                  ["adjust", "--from", "x\x00"], ["check", "--catalog", "x\x00"], ["diff", "x\x00", "y"]])
def test_nul_byte_in_a_path_is_bad_input(args):
    """A NUL byte in a file name is malformed input (exit 2), not an internal error. (A shell cannot pass
    one in argv; Python callers and CliRunner can.)"""
    r = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert r.exit_code == 2 and "internal error" not in r.stderr, r.stderr


def test_batch_with_a_malformed_row_says_error_on_stderr(box, tmp_path):
    """CLI.md §2: every non-zero exit prints one line `error: ...` on stderr (the summary stays on stdout)."""
    f = tmp_path / "rows.csv"
    f.write_text(f"phone,amount,category,ref\n{A},abc,mobile,x1\n{A},100,mobile,x2\n")
    r = CliRunner().invoke(cli, ["--data-dir", str(tmp_path / "d"), "earn", "--from", str(f)], catch_exceptions=False)
    assert r.exit_code == 2
    assert [l for l in r.stderr.splitlines() if l.startswith("error: ")], r.stderr


# ---------------------------------------------------------------- hostile catalogs


CATALOG_TEXT = CATALOG.read_text()
CATALOG_LINES = CATALOG_TEXT.splitlines(keepends=True)


@st.composite
def mutated_catalog(draw):
    lines = list(CATALOG_LINES)
    for _ in range(draw(st.integers(1, 4))):
        if not lines:
            lines = ["\n"]
        op = draw(st.sampled_from(["delete", "dup", "swap", "number", "char", "truncate", "insert", "indent"]))
        i = draw(st.integers(0, len(lines) - 1))
        if op == "delete" and len(lines) > 1:
            del lines[i]
        elif op == "dup":
            lines.insert(i, lines[i])
        elif op == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "number":
            n = draw(st.one_of(st.integers(), st.sampled_from([0, -1, 10 ** 30, 2 ** 63]), st.floats().map(repr)))
            lines[i] = re.sub(r"\b\d+\b", str(n), lines[i], count=1)
        elif op == "char" and lines[i]:
            k = draw(st.integers(0, len(lines[i]) - 1))
            lines[i] = lines[i][:k] + draw(st.characters()) + lines[i][k + 1:]
        elif op == "truncate":
            lines = lines[:i]
        elif op == "insert":
            lines.insert(i, draw(st.sampled_from(["  x: 1\n", "- \n", "&a [*a]\n", "key: &x {a: *x}\n", "!!python/object:os.system ls\n",
                                                  "timezone: ../../etc/passwd\n", "  timezone: Mars/Olympus\n",
                                                  "  points_validity_months: 99999999\n", "? [a]\n: b\n", "\t\n",
                                                  "closing_date: 0001-01-01\n", "  closing_date: \"9999-12-31\"\n"])))
        elif op == "indent":
            lines[i] = "  " + lines[i]
    return "".join(lines)


JSONISH = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=10)),
                       lambda kids: st.one_of(st.lists(kids, max_size=4),
                                              st.dictionaries(st.text(max_size=8), kids, max_size=4)), max_leaves=30)
RANDOM_YAML = st.one_of(JSONISH.map(lambda d: yaml.safe_dump(d, allow_unicode=True)), st.text(max_size=200),
                        st.binary(max_size=200).map(lambda b: b.decode("latin-1")))


def check_catalog(box, text: str, tmp: Path, also_use=True):
    f = tmp / f"cat{box.n}.yaml"
    f.write_bytes(text.encode("utf-8", "surrogatepass"))
    r = box.invoke(["check", "--catalog", str(f)])
    assert r.exit_code in (0, 3), (r.exit_code, r.stderr[:500])
    assert r.cpu < 2, r.cpu
    if r.exit_code == 3:
        assert r.stderr.splitlines()[-1].startswith("error: ")
    if also_use:
        # the same catalog behind an ordinary command: it answers, refuses, or says the catalog is invalid
        r2 = box.invoke(["earn", A, "100", "--category", "mobile", "--ref", "z"], catalog=f)
        assert r2.cpu < 2
        if r.exit_code == 3:
            assert r2.exit_code == 3, r2.stderr
    return r


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=mutated_catalog())
def test_fuzz_mutated_catalog(box, tmp_path, text):
    check_catalog(box, text, tmp_path)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=RANDOM_YAML)
def test_fuzz_random_yaml_catalog(box, tmp_path, text):
    r = check_catalog(box, text, tmp_path, also_use=False)
    assert r.exit_code == 3  # nothing random is a whole valid catalog


def billion_laughs(levels=10, width=10):
    out = ['a0: &a0 "lol"\n']
    for i in range(1, levels):
        out.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]\n")
    return "".join(out)


BOMBS = {
    "billion-laughs": billion_laughs(),
    "billion-laughs-in-catalog": CATALOG_TEXT + "\nextra:\n" + "".join("  " + l for l in billion_laughs().splitlines(True)),
    "bomb-before-catalog": billion_laughs(8) + CATALOG_TEXT,
    "deep-flow-list": "[" * 100000 + "]" * 100000,
    "deep-flow-map": "{a: " * 50000 + "1" + "}" * 50000,
    "deep-block-map": "".join(" " * i + "a:\n" for i in range(3000)) + " " * 3000 + "b: 1\n",
    "deep-block-list": "".join(" " * (2 * i) + "-\n" for i in range(2000)),
    "recursive-alias": "a: &a [*a]\n",
    "huge-comment": "#" * (6 * 1024 * 1024) + "\n" + CATALOG_TEXT,
    "huge-list": "version: 1\nregions:\n" + "".join(f"  RU-X{i}: x\n" for i in range(300000)),
    "long-line": "version: " + "9" * 3_000_000 + "\n",
    "many-docs": "---\na: 1\n" * 100000,
    "python-tag": "!!python/object/apply:os.system ['touch pwned']\n",
    "nul-bytes": CATALOG_TEXT[:500] + "\x00" * 1000 + CATALOG_TEXT[500:],
    "bom-and-crlf": "\ufeff" + CATALOG_TEXT.replace("\n", "\r\n"),
    "empty": "",
    "not-utf8": "version: 1\nname: \udcff\udcfe\n",
}


@pytest.mark.parametrize("name", list(BOMBS))
def test_hostile_catalog_refused_quickly(box, tmp_path, name):
    r = check_catalog(box, BOMBS[name], tmp_path)
    if name not in ("bom-and-crlf",):
        assert r.exit_code == 3, (name, r.stderr[:300])
    assert not (ROOT / "pwned").exists()  # (and nothing appeared in the example's cwd: Box.invoke)
