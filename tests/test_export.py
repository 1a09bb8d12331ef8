"""`export`: the program's points as an hledger / beancount journal (docs/export.md).

The journal is checked by the accounting tools themselves (`bean-check`, the
`beancount.loader` API, and `hledger check` / `hledger balance` when hledger is
on PATH), and the balances they compute are compared with what bonuscli says:
every member's available account is minus `balance`'s `available`, their held
and debt accounts are minus `held_out` and `debt`, the totals are `report`'s
`outstanding`, `held` and `debt`, and the counter accounts add up to `report`'s
months (earned, adjusted, redeemed, expired, refunded, forfeited).

One story (module fixture, built through the CLI) covers earns with bonuses
(web-form welcome, card welcome, referral), expiry, redemption, a gift accepted,
a gift rejected, a gift returned at its deadline, a gift whose held points all
expired, a gift accepted after some of its points expired, a refund creating
debt then credits repaying it (an earn, an accepted gift, a gift of one's own
coming back), adjustments both ways, a member who left with a gift pending, and
two regions. It is read as of several moments in the middle of its history and
after it. Also: points that arrive already expired (a closing date), the
ledgers of release 0.1.0, and random small histories (hypothesis, in memory).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
import shutil
import subprocess
import sys
from collections import defaultdict
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bonuscli import catalog as catalog_mod
from bonuscli import export, fleet, service
from bonuscli import requests as rq
from bonuscli.model import BadInput, BonusError, parse_when
from beancount import loader as beancount_loader  # the `test` extra: beancount>=3.0 (bean-check too)
from beancount.core import data as bean_data
from conftest import ROOT, Run

CAT_PATH = catalog_mod.default_path()
BEAN_CHECK = Path(sys.executable).parent / "bean-check"
HLEDGER = shutil.which("hledger")
needs_hledger = pytest.mark.skipif(HLEDGER is None, reason="hledger is not installed (not a dependency)")
MSK = ZoneInfo("Europe/Moscow")

P = {"A": "9161000001", "B": "9161000002", "C": "9161000003", "D": "9161000004", "E": "9161000005",
     "F": "9161000006", "G": "9161000007", "K": "9161000008", "M": "9161000009",
     "H": "9212000001"}
MOW = [P[x] for x in "ABCDEFGKM"]
SPE = [P["H"]]

# (at, command...): names are members, "@name" a gift offered earlier, "gift:name" names a gift
STORY = [
    ("2024-01-10T10:00", "join", "A", "--region", "RU-MOW", "--method", "web", "--email", "a@b.ru",
     "--birth-date", "1990-01-01"),  # 260 at activation, two days later
    ("2024-01-10T11:00", "join", "B", "--region", "RU-MOW"),
    ("2024-01-10T12:00", "join", "C", "--region", "RU-MOW"),
    ("2024-01-10T13:00", "join", "D", "--region", "RU-MOW", "--referrer", "C"),  # C gets 50
    ("2024-01-11T09:00", "join", "H", "--region", "RU-SPE"),
    ("2024-02-01T10:00", "earn", "A", "3500", "--category", "card", "--ref", "a1"),  # + card welcome 1000
    ("2024-02-02T10:00", "earn", "B", "1000", "--category", "mobile", "--ref", "b1"),
    ("2024-02-03T10:00", "earn", "H", "600", "--category", "taxi", "--ref", "h1"),
    ("2024-03-01T10:00", "redeem", "A", "minutes_30"),
    ("2024-03-02T10:00", "gift:ab", "A", "B", "100"),
    ("2024-03-03T10:00", "accept", "B", "@ab"),
    ("2024-03-04T10:00", "gift:cb", "C", "B", "50"),
    ("2024-03-05T10:00", "accept", "B", "@cb", "--reject"),
    ("2024-03-06T10:00", "gift:cd", "C", "D", "60"),  # never decided: back with C at its deadline
    ("2024-03-10T10:00", "join", "G", "--region", "RU-MOW"),
    ("2024-03-10T11:00", "join", "K", "--region", "RU-MOW"),
    ("2024-05-01T10:00", "redeem", "H", "sms_50"),
    ("2024-06-01T10:00", "earn", "G", "500", "--category", "mobile", "--ref", "g1"),
    ("2024-06-01T11:00", "earn", "K", "500", "--category", "mobile", "--ref", "k1"),
    ("2024-06-02T10:00", "earn", "A", "2000", "--category", "mts_store", "--ref", "a2"),
    ("2025-01-15T10:00", "join", "E", "--region", "RU-MOW"),
    ("2025-01-15T11:00", "join", "F", "--region", "RU-MOW"),
    ("2025-01-16T10:00", "earn", "E", "1000", "--category", "mobile", "--ref", "e1"),
    ("2025-01-16T11:00", "adjust", "F", "500", "--reason", 'goodwill "VIP"; call 0890 \\ later'),
    ("2025-01-17T10:00", "redeem", "E", "minutes_60"),
    ("2025-01-17T11:00", "adjust", "F", "-200", "--reason", "correction"),
    ("2025-01-18T10:00", "refund", "E", "e1"),  # 200 back: 50 available, 150 debt
    ("2025-01-18T11:00", "gift:fb", "F", "B", "100"),
    ("2025-01-19T10:00", "leave", "F", "--yes"),  # 350 forfeited, and the gift held
    ("2025-01-20T10:00", "earn", "E", "500", "--category", "mobile", "--ref", "e2"),  # all 100 to the debt
    ("2025-01-21T10:00", "earn", "B", "1500", "--category", "mobile", "--ref", "b2"),
    ("2025-01-21T11:00", "gift:be", "B", "E", "80"),
    ("2025-01-22T10:00", "accept", "E", "@be"),  # 50 repay the debt, 30 available
    ("2025-01-23T10:00", "adjust", "E", "30", "--reason", "sorry"),
    ("2025-02-01T10:00", "join", "M", "--region", "RU-MOW"),
    ("2025-02-02T10:00", "earn", "M", "1000", "--category", "mobile", "--ref", "m1"),
    ("2025-02-03T10:00", "gift:mb", "M", "B", "300"),  # never decided: back on 2025-03-05
    ("2025-02-04T10:00", "refund", "M", "m1"),  # 50 available, 150 debt: the gift coming back repays it
    ("2025-03-01T10:00", "gift:gb", "G", "B", "150"),  # every held point expires on 2025-03-10
    ("2025-03-03T10:00", "gift:kd", "K", "D", "200"),  # 150 of them expire on 2025-03-10
    ("2025-03-15T10:00", "accept", "D", "@kd"),  # the 50 still valid
    ("2025-04-01T10:00", "earn", "H", "900", "--category", "taxi", "--ref", "h2"),
]

MOMENTS = ["2024-01-10T10:30", "2024-03-02T12:00", "2024-03-05T12:00", "2024-04-05T10:00", "2025-01-18T10:30",
           "2025-01-19T12:00", "2025-02-04T12:00", "2025-03-12T12:00", "2025-03-15T10:00", "2025-07-01T12:00"]
END = "2025-07-01T12:00"


def when(text):
    return parse_when(text, MSK)


@pytest.fixture(scope="module")
def story(tmp_path_factory):
    data = tmp_path_factory.mktemp("export") / "data"
    run = Run()
    gifts = {}
    for at, cmd, *args in STORY:
        name = None
        if cmd.startswith("gift:"):
            cmd, name = "gift", cmd[5:]
        argv = [gifts[a[1:]] if a.startswith("@") else P.get(a, a) for a in args]
        r = run("--data-dir", str(data), "--catalog", str(CAT_PATH), cmd, *argv, "--at", at, "--json")
        assert r.exit_code == 0, (at, cmd, args, r.stdout, r.stderr)
        if name:
            gifts[name] = r.json["gift_id"]
    return data


def cli_json(data, *args, catalog=CAT_PATH):
    r = Run()("--data-dir", str(data), "--catalog", str(catalog), *args, "--json")
    assert r.exit_code == 0, (args, r.stdout, r.stderr)
    return r.json


def journal(data, at, fmt, region=None, catalog=CAT_PATH):
    svc = service.open_dir(Path(data), catalog, str(catalog))
    return export.journal(svc, when(at), fmt, region)


# ---------------------------------------------------------------- reading the journal with the tools


def bean_balances(path: Path) -> dict:
    """Account -> points, as beancount's own loader books the file (every check of bean-check run)."""
    entries, errors, options = beancount_loader.load_file(str(path))
    assert not errors, "\n".join(f"{e.source}: {e.message}" for e in errors)
    assert options["operating_currency"] == ["PTS"]
    bal: dict = defaultdict(int)
    for e in entries:
        if isinstance(e, bean_data.Transaction):
            for p in e.postings:
                assert p.units.currency == "PTS"
                bal[p.account] += int(p.units.number)
    return bal


def bean_check(path: Path) -> None:
    r = subprocess.run([str(BEAN_CHECK), str(path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(), r.stdout + r.stderr


def hledger(path: Path, *args) -> str:
    r = subprocess.run([HLEDGER, "-f", str(path), *args], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def hledger_balances(path: Path) -> dict:
    hledger(path, "check")
    hledger(path, "check", "-s")  # strict: every account and commodity declared
    text = hledger(path, "balance", "--flat", "--empty", "--no-total", "-O", "csv")
    bal: dict = defaultdict(int)
    for row in list(csv.reader(io.StringIO(text)))[1:]:
        account, amount = row[0], row[1].strip()
        bal[account] += 0 if amount in ("0", "") else int(Decimal(amount.removesuffix(" PTS").replace(",", "")))
    return bal


def balances(tmp_path: Path, text: str, fmt: str) -> dict:
    """The journal's balances per account, computed by the tool, keyed by hledger spelling."""
    path = tmp_path / ("points.beancount" if fmt == "beancount" else "points.journal")
    path.write_text(text, encoding="utf-8")
    if fmt == "beancount":
        bean_check(path)
        return {k.lower(): v for k, v in bean_balances(path).items()}
    return dict(hledger_balances(path))


# ---------------------------------------------------------------- what bonuscli says


def expectation(data, at, phones, region=None, catalog=CAT_PATH) -> dict:
    out = {}
    for phone in phones:
        r = Run()("--data-dir", str(data), "--catalog", str(catalog), "balance", phone, "--at", at, "--json")
        if r.exit_code == 1 and r.json is None and "not-member" in r.stderr:
            continue  # not a member yet as of `at`: no accounts
        assert r.exit_code == 0, (phone, at, r.stdout, r.stderr)
        b = r.json
        out[f"liabilities:points:available:{phone}"] = -b["available"]
        out[f"liabilities:points:held:{phone}"] = -b["held_out"]
        out[f"assets:points:debt:{phone}"] = b["debt"]
    rep = cli_json(data, "report", "--at", at, *(["--region", region] if region else []), catalog=catalog)
    months = {k: sum(m[k] for m in rep["months"]) for k in fleet.MONTH_FIELDS}
    totals = {"outstanding": rep["outstanding"], "held": rep["held"], "debt": rep["debt"]}
    counters = {"expenses:points:earned": months["earned"], "expenses:points:adjusted": months["adjusted"],
                "income:points:redeemed": -months["redeemed"], "income:points:expired": -months["expired"],
                "income:points:refunded": -months["refunded"], "income:points:forfeited": -months["forfeited"]}
    return {"members": out, "totals": totals, "counters": counters}


def assert_agrees(bal: dict, exp: dict, full=True) -> None:
    for account, value in exp["members"].items():
        assert bal.get(account, 0) == value, (account, bal.get(account, 0), value)
    mine = [a for a in bal if a.rsplit(":", 1)[-1].isdigit()]
    assert set(mine) <= set(exp["members"]), "accounts of members outside the selection"

    def total(prefix):
        return sum(v for a, v in bal.items() if a.startswith(prefix))

    assert total("liabilities:points:available:") == -exp["totals"]["outstanding"]
    assert total("liabilities:points:held:") == -exp["totals"]["held"]
    assert total("assets:points:debt:") == exp["totals"]["debt"]
    for account, value in exp["counters"].items():
        assert bal.get(account, 0) == value, (account, bal.get(account, 0), value)
    if full:
        assert bal.get("liabilities:points:clearing", 0) == 0, "both sides of every settled gift"
    assert sum(bal.values()) == 0


FORMATS = ["beancount", pytest.param("hledger", marks=needs_hledger)]


# ---------------------------------------------------------------- the story


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("at", MOMENTS)
def test_balances_agree_with_balance_and_report(story, tmp_path, at, fmt):
    text = journal(story, at, fmt)
    bal = balances(tmp_path, text, fmt)
    assert_agrees(bal, expectation(story, at, MOW + SPE))


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("region,phones", [("RU-SPE", SPE), ("ru-mow", MOW)])
def test_region_filter(story, tmp_path, fmt, region, phones):
    text = journal(story, END, fmt, region)
    bal = balances(tmp_path, text, fmt)
    assert_agrees(bal, expectation(story, END, phones, region.upper()))
    others = set(P.values()) - set(phones)
    assert not any(p in text for p in others)
    assert f"region {region.upper()}" in text


def test_the_story_numbers(story, tmp_path):
    """Hand-checked figures of the story, read by beancount (not only bonuscli against itself)."""
    bal = balances(tmp_path, journal(story, "2025-03-12T12:00", "beancount"), "beancount")
    av = lambda x: bal.get(f"liabilities:points:available:{P[x]}", 0)  # noqa: E731
    held = lambda x: bal.get(f"liabilities:points:held:{P[x]}", 0)  # noqa: E731
    # E: 150 + 200 - 300 = 50; refund of 200 takes the 50, 150 debt; the next earn (100) repays 100;
    # the gift of 80 repays the last 50 and 30 stay (they expire 2025-02-02 with B's lot); +30
    assert av("E") == -30 and bal.get(f"assets:points:debt:{P['E']}", 0) == 0
    # K offered 200 (150 expiring 2025-03-10, 50 later): 50 still held; G's whole gift expired
    assert held("K") == -50 and held("G") == 0
    assert av("F") == 0 and held("F") == 0  # left: 350 + the 100 held forfeited
    assert bal["income:points:forfeited"] == -450
    assert bal["expenses:points:adjusted"] == 500 - 200 + 30
    # M: 150 + 200, gift of 300 (50 left), refund of 200: 50 taken, 150 debt; the gift comes back at
    # its deadline: 150 repay the debt, 150 available again
    assert av("M") == -150 and held("M") == 0 and bal.get(f"assets:points:debt:{P['M']}", 0) == 0
    before = balances(tmp_path, journal(story, "2025-03-05T09:00", "beancount"), "beancount")
    assert before[f"liabilities:points:held:{P['M']}"] == -300
    assert before[f"assets:points:debt:{P['M']}"] == 150
    assert before[f"liabilities:points:available:{P['M']}"] == 0


def test_transactions_look_right(story):
    text = journal(story, END, "beancount")
    assert text.startswith('option "title" "bonuscli points as of 2025-07-01T12:00:00+03:00"\n')
    assert 'option "operating_currency" "PTS"' in text
    e = P["E"]
    refund = text.split('"refund of 1000.00 RUB on e1')[1].split("\n\n")[0]
    assert f"Liabilities:Points:Available:{e}" in refund and f"Assets:Points:Debt:{e}" in refund
    assert "Income:Points:Refunded" in refund and " -200 PTS" in refund and " 150 PTS" in refund
    # quotes and backslashes of free text are escaped; the narration is the history row's detail
    assert r'"adjustment +500: goodwill \"VIP\"; call 0890 \\ later"' in text
    # the recipient's side and the sender's side of an accepted gift meet in the clearing account
    assert text.count("Liabilities:Points:Clearing") >= 5
    # every account is opened on or before its first use (bean-check checks it too)
    opened = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[1] == "open":
            opened[parts[2]] = parts[0]
    assert f"Liabilities:Points:Available:{P['A']}" in opened and "Expenses:Points:Earned" in opened


@needs_hledger
def test_hledger_text(story, tmp_path):
    text = journal(story, END, "hledger")
    assert "commodity 1000. PTS" in text
    assert f"account liabilities:points:available:{P['A']}" in text
    # a transaction: date, the event id as code, phone | detail, the row type as a tag, and an
    # assertion of the member's running balance on the available posting
    assert (f"2024-03-01 ({P['A']}.3) {P['A']} | ordered minutes_30 via web  ; type:redeem" in text)
    assert re.search(rf"liabilities:points:available:{P['A']} +210 PTS = -1166 PTS\n", text)
    path = tmp_path / "p.journal"
    path.write_text(text)
    reg = hledger(path, "register", f"liabilities:points:available:{P['E']}", "-O", "csv")
    assert "refund of 1000.00 RUB on e1" in reg
    # a description never carries a `;` (it would start a comment): replaced by a comma
    assert 'goodwill "VIP", call 0890' in text


def test_empty_directory_and_a_moment_before_everything(story, tmp_path, data_dir):
    text = journal(story, "2023-01-01", "beancount")
    assert not re.search(r"^\d{4}-\d\d-\d\d (open|balance|\*) ", text, re.M)
    bean_check_path = tmp_path / "empty.beancount"
    bean_check_path.write_text(text)
    bean_check(bean_check_path)
    Run().ok("join", P["A"], "--region", "RU-MOW", "--at", "2025-01-01")
    svc = service.open_dir(data_dir, CAT_PATH, str(CAT_PATH))
    text = export.journal(svc, when("2025-01-01"), "hledger")
    assert "welcome bonus at activation" in text


def test_bad_input(story, tmp_path):
    svc = service.open_dir(Path(story), CAT_PATH, str(CAT_PATH))
    with pytest.raises(BadInput):
        export.journal(svc, when(END), "ledger")
    with pytest.raises(BadInput) as e:  # a region code the catalog does not have
        export.journal(svc, when(END), "beancount", "RU-NOWHERE")
    assert e.value.kind == "unknown-region"
    missing = service.open_dir(tmp_path / "nowhere", CAT_PATH, str(CAT_PATH))
    with pytest.raises(BadInput):
        export.journal(missing, when(END), "beancount")
    assert not (tmp_path / "nowhere").exists()


def test_corrupt_ledger_is_files_error(story, tmp_path):
    data = tmp_path / "copy"
    shutil.copytree(story, data)
    led = data / "ledgers" / f"{P['B']}.jsonl"
    led.write_bytes(led.read_bytes() + b"{not json}\n")
    svc = service.open_dir(data, CAT_PATH, str(CAT_PATH))
    with pytest.raises(BonusError) as e:
        export.journal(svc, when(END), "beancount")
    assert e.value.exit_code == 3


@pytest.mark.parametrize("fmt", FORMATS)
def test_points_that_arrive_already_expired(tmp_path, fmt):
    """A catalog closing the program on 2025-03-10: a card member activating after it gets a welcome
    that arrives already expired (a credit and its expiry in one transaction)."""
    cat = tmp_path / "closing.yaml"
    text = (ROOT / "catalog.yaml").read_text(encoding="utf-8")
    assert "  closing_date: null " in text
    cat.write_text(text.replace("  closing_date: null ", '  closing_date: "2025-03-10" '), encoding="utf-8")
    data = tmp_path / "data"
    run = Run()
    for args in (("join", P["A"], "--region", "RU-MOW", "--method", "card", "--at", "2025-03-05T10:00"),
                 ("join", P["B"], "--region", "RU-MOW", "--at", "2025-03-05T10:00"),
                 ("earn", P["B"], "1000", "--category", "mobile", "--ref", "x", "--at", "2025-03-06")):
        r = run("--data-dir", str(data), "--catalog", str(cat), *args)
        assert r.exit_code == 0, r.stderr
    at = "2025-04-01"
    journal_text = journal(data, at, fmt, catalog=cat)
    bal = balances(tmp_path, journal_text, fmt)
    assert_agrees(bal, expectation(data, at, [P["A"], P["B"]], catalog=cat))
    assert bal["expenses:points:earned"] == 150 + 150 + 200 == -bal["income:points:expired"]
    assert "arrived already expired" in journal_text


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("at", ["2025-03-01T12:00", "2026-06-01T12:00+03:00"])
def test_ledgers_of_release_0_1_0(tmp_path, fmt, at):
    """The ledgers written by bonuscli 0.1.0 (tests/fixtures; a torn last line among them) export
    to a journal that agrees with today's answers."""
    data = tmp_path / "legacy"
    shutil.copytree(ROOT / "tests" / "fixtures" / "release-0.1.0" / "ledgers", data / "ledgers")
    data.chmod(0o700)
    (data / "ledgers").chmod(0o700)
    for p in (data / "ledgers").iterdir():
        p.chmod(0o600)
    before = {p.name: p.read_bytes() for p in (data / "ledgers").iterdir()}
    phones = sorted(p.name[:10] for p in (data / "ledgers").iterdir())
    bal = balances(tmp_path, journal(data, at, fmt), fmt)
    assert_agrees(bal, expectation(data, at, phones))
    assert {p.name: p.read_bytes() for p in (data / "ledgers").iterdir()} == before


# ---------------------------------------------------------------- random small histories


def test_random_histories():
    """Random histories of four members (joins, earns, redemptions, gifts and their outcomes,
    refunds, adjustments, leaving and joining again), in memory: the journal, as beancount books it,
    agrees with every member's balance and with the report, as of the end and of a moment inside."""
    cat = catalog_mod.load(CAT_PATH, str(CAT_PATH))
    phones = ["9160000001", "9160000002", "9160000003", "9160000004"]
    who = st.integers(0, 3)
    args = {
        "earn": st.tuples(who, st.integers(100, 5000), st.sampled_from(["mobile", "card", "taxi", "mts_store"])),
        "gift": st.tuples(who, st.integers(1, 3), st.integers(1, 250)),  # to the 1st, 2nd or 3rd next member
        "accept": st.tuples(st.integers(0, 2), st.booleans()),
        "redeem": st.tuples(who, st.sampled_from(["minutes_30", "sms_50", "black_list", "mts_tv_7"])),
        "refund": st.tuples(who, st.integers(0, 10), st.booleans()),
        "adjust": st.tuples(who, st.integers(-300, 300).filter(bool)),
        "join": st.tuples(who, st.sampled_from(["sms", "web", "card"])),
        "leave": st.tuples(who),
    }
    kinds = ["earn"] * 4 + ["gift"] * 3 + ["accept"] * 3 + ["redeem"] * 2 + ["refund"] * 2 + ["adjust", "join", "leave"]
    op = st.sampled_from(kinds).flatmap(lambda k: args[k].map(lambda a: (k, *a)))
    step = st.tuples(st.integers(1, 24 * 40), op)  # hours since the step before

    @settings(max_examples=100, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(st.lists(step, min_size=5, max_size=40), st.floats(0.2, 0.9))
    def check(steps, middle):
        svc = service.in_memory(cat)
        t = dt.datetime(2024, 1, 1, 10, 0, tzinfo=MSK)
        start = t
        gifts, refs = [], defaultdict(list)
        for p in phones:
            svc.join(rq.join(cat, t.date(), p, "RU-MOW"), t)
        for k, (hours, o) in enumerate(steps):
            t += dt.timedelta(hours=hours)
            try:
                if o[0] == "earn":
                    ref = f"r{k}"
                    svc.earn(rq.earn(cat, phones[o[1]], str(o[2]), o[3], ref), t)
                    refs[phones[o[1]]].append(ref)
                elif o[0] == "redeem":
                    svc.redeem(rq.redeem(cat, phones[o[1]], o[2]), t)
                elif o[0] == "gift":
                    v = svc.gift(rq.gift(cat, phones[o[1]], phones[(o[1] + o[2]) % 4], str(o[3])), t)
                    gifts.append((v["to"], v["gift_id"]))
                elif o[0] == "accept" and gifts:
                    to, gid = gifts.pop(-1 - o[1] % len(gifts))  # most often the latest offer
                    svc.accept(rq.accept(to, gid, o[2]), t)
                elif o[0] == "refund" and refs[phones[o[1]]]:
                    ref = refs[phones[o[1]]][o[2] % len(refs[phones[o[1]]])]
                    svc.refund(rq.refund(cat, phones[o[1]], ref, "10" if o[3] else None), t)
                elif o[0] == "adjust":
                    svc.adjust(rq.adjust(cat, phones[o[1]], str(o[2]), "test"), t)
                elif o[0] == "leave":
                    svc.leave(phones[o[1]], t)
                elif o[0] == "join":
                    svc.join(rq.join(cat, t.date(), phones[o[1]], "RU-MOW", o[2]), t)
            except BonusError:
                pass  # refused: nothing was written
        end = t + dt.timedelta(days=400)
        for now in (start + (t - start) * middle, t, end):
            bal = {k.lower(): v for k, v in bean_string_balances(export.journal(svc, now, "beancount")).items()}
            members = {}
            for p in svc.store.phones():
                m = svc.member(p, now)
                if m.join is None:
                    continue
                b = svc.balance(p, now)
                members[f"liabilities:points:available:{p}"] = -b["available"]
                members[f"liabilities:points:held:{p}"] = -b["held_out"]
                members[f"assets:points:debt:{p}"] = b["debt"]
            rep = fleet.report(svc, now)
            months = {f: sum(m[f] for m in rep["months"]) for f in fleet.MONTH_FIELDS}
            assert_agrees(bal, {
                "members": members,
                "totals": {"outstanding": rep["outstanding"], "held": rep["held"], "debt": rep["debt"]},
                "counters": {"expenses:points:earned": months["earned"],
                             "expenses:points:adjusted": months["adjusted"],
                             "income:points:redeemed": -months["redeemed"],
                             "income:points:expired": -months["expired"],
                             "income:points:refunded": -months["refunded"],
                             "income:points:forfeited": -months["forfeited"]}})

    check()


def bean_string_balances(text: str) -> dict:
    entries, errors, _ = beancount_loader.load_string(text)
    assert not errors, "\n".join(f"{e.source}: {e.message}" for e in errors) + "\n" + text
    bal: dict = defaultdict(int)
    for e in entries:
        if isinstance(e, bean_data.Transaction):
            for p in e.postings:
                bal[p.account] += int(p.units.number)
    return bal
