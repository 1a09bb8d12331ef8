"""`check --ledgers` is a table of small checks (audit.LEDGER_CHECKS): every check has a tampering
here that it, and only it, catches (exit 3, kind `ledger-unsound`, the problem at its path:line), a
clean directory passes, problems come out stage by stage in the order of the events, and a ledger the
rules cannot replay stops the checks after it.

The tamperings are what someone who knows the format writes: events edited, dropped or re-linked so
the hash chain still verifies (`rechain`), except for the chain's own case."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from bonuscli import audit, service
from bonuscli.cli import cli
from bonuscli.ledger import genesis, line_hash
from bonuscli.requests import when

ROOT = Path(__file__).resolve().parent.parent
A, B, D = "9164440001", "9164440002", "9164440004"
T0, T1, T2 = "2025-03-01T12:00+03:00", "2025-03-02T10:00+03:00", "2025-03-03T10:00+03:00"


# ---------------------------------------------------------------- helpers


def run(data, *args):
    """bonuscli in-process: (exit code, stdout JSON or None, the JSON error of stderr or None)."""
    r = CliRunner().invoke(cli, ["--data-dir", str(data), *map(str, args)], catch_exceptions=False,
                           env={"BONUSCLI_FAULT": None})
    doc = json.loads(r.stdout) if r.stdout.strip() else None
    err = None
    for line in reversed(r.stderr.strip().splitlines()):
        try:
            err = json.loads(line).get("error")
            break
        except (ValueError, AttributeError):
            continue
    return r.exit_code, doc, err


def ok(data, *args):
    code, doc, err = run(data, *args, "--json")
    assert code == 0, (args, code, err)
    return doc


def check(data):
    return run(data, "check", "--ledgers", "--at", T2, "--json")


def path_of(data, phone) -> Path:
    return data / "ledgers" / f"{phone}.jsonl"


def events(data, phone) -> list:
    return [json.loads(r) for r in path_of(data, phone).read_bytes().split(b"\n")[:-1]]


def rechain(data, phone, evs) -> None:
    """Write these events as the ledger, re-linked so that the hash chain verifies."""
    rows, prev = [], genesis(phone)
    for e in evs:
        e = dict(e, prev=prev if isinstance(prev, str) else line_hash(prev))
        prev = json.dumps(e, ensure_ascii=False, separators=(",", ":")).encode()
        rows.append(prev)
    path_of(data, phone).write_bytes(b"".join(r + b"\n" for r in rows))


def edit(data, phone, line, **fields) -> dict:
    """Change (or, with None, drop) fields of one line, re-chained; returns the event as it was."""
    evs = events(data, phone)
    was = evs[line - 1]
    evs[line - 1] = {k: v for k, v in dict(was, **fields).items() if v is not None}
    rechain(data, phone, evs)
    return was


def drop(data, phone, *lines) -> list:
    evs = events(data, phone)
    rechain(data, phone, [e for n, e in enumerate(evs, start=1) if n not in lines])
    return [evs[n - 1] for n in lines]


def found_by(data) -> set:
    """The names of the checks that find a problem in some ledger, each check run on its own (in
    table order, up to a Stop, as `run_checks` does)."""
    svc = service.open_dir(data, ROOT / "catalog.yaml", "catalog.yaml")
    now = when(T2, svc.catalog.tz)
    names = set()
    for phone in svc.store.phones():
        led, chain = svc.store.read_checked(phone)
        ctx = audit.LedgerContext(svc, phone, led, now, chain)
        for c in audit.LEDGER_CHECKS:
            got = c(ctx)
            if got:
                names.add(c.__name__)
            if isinstance(got, audit.Stop):
                break
    return names


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A invites B (referral confirmed at once: sms activates on joining), earns (refs e1, e2) and gets
    a goodwill credit (ref a1); A gifts B 100 (accepted, settled in A) and D 30 (pending at T2).

    A: 1 join, 2 referral, 3 referral_settle, 4 earn e1, 5 adjust a1, 6 gift_out B, 7 gift_settle,
       8 earn e2, 9 gift_out D.   B: 1 join (referral), 2 gift_in, 3 gift_accept.   D: 1 join, 2 gift_in."""
    data = tmp_path_factory.mktemp("checks") / "data"
    ok(data, "join", A, "--region", "RU-MOW", "--at", T0)
    ok(data, "join", B, "--region", "RU-MOW", "--referrer", A, "--at", T0)
    ok(data, "join", D, "--region", "RU-MOW", "--at", T0)
    ok(data, "earn", A, "1000", "--category", "mobile", "--ref", "e1", "--at", T0)
    ok(data, "adjust", A, "50", "--reason", "goodwill", "--ref", "a1", "--at", T0)
    g = ok(data, "gift", A, B, "100", "--at", T1)
    ok(data, "accept", B, g["gift_id"], "--at", T1)
    ok(data, "earn", A, "50", "--category", "mobile", "--ref", "e2", "--at", T2)
    ok(data, "gift", A, D, "30", "--at", T2)
    assert [e["type"] for e in events(data, A)] == ["join", "referral", "referral_settle", "earn", "adjust", "gift_out",
                                                   "gift_settle", "earn", "gift_out"]
    assert [e["type"] for e in events(data, B)] == ["join", "gift_in", "gift_accept"]
    assert [e["type"] for e in events(data, D)] == ["join", "gift_in"]
    return data


@pytest.fixture
def data(template, tmp_path):
    d = tmp_path / "data"
    shutil.copytree(template, d)
    return d


# ---------------------------------------------------------------- one tampering per check
# Each returns the problems `check --ledgers` must report: [(phone, line, message)], or a message
# ending in "..." for one whose tail holds the rules' figures or an exception's text.


def chain_case(data):
    path = path_of(data, A)
    raw = path.read_bytes()
    assert raw.count(b'"reason":"goodwill"') == 1
    path.write_bytes(raw.replace(b'"reason":"goodwill"', b'"reason":"goodwilL"'))  # line 5, not re-chained
    return [(A, 6, "hash chain broken: this line does not follow line 5 as written (a line above was edited, "
                   "deleted, inserted or reordered)")]


def torn_case(data):
    with open(path_of(data, D), "ab") as f:
        f.write(b'{"v":2,"id":"9164440004.3","type":"ea')
    return [(D, 3, "unfinished last line (an interrupted write); the next change to this member seals it")]


def ids_case(data):
    first = events(data, A)[3]["id"]
    edit(data, A, 8, id=first)  # earn e2 takes earn e1's id
    return [(A, 4, f"duplicate event id {first}")]  # shown at the line of the first


def times_case(data):
    was = edit(data, A, 8, at="2025-03-02T09:00:00+03:00")  # before line 7 (2025-03-02T10:00)
    return [(A, 8, f"event {was['id']} is dated before the one above it")]


def refs_case(data):
    edit(data, A, 8, ref="e1")
    return [(A, 8, f"reference e1 applied twice (earn; first {events(data, A)[3]['id']})")]


def replay_case(data):
    edit(data, A, 5, expires_on="soon")  # an adjustment expiring "soon": well-formed, but no date to apply
    return [(A, 5, "the rules cannot replay this event (ValueError: ...")]  # the line named (bisection)


def conservation_case(data):
    edit(data, A, 5, points=-100000)  # a debit of more points than A ever had: taken, but not there
    return [(A, 1, "points do not add up: credited+received ...")]


def gift_out_case(data):
    gift = edit(data, B, 2, points=99)["gift_id"]  # B's copy of the offer
    return [(A, 6, f"gift {gift} differs from its copy in {B}'s ledger")]


def gift_in_case(data):
    [offer] = drop(data, A, 9)  # the offer to D, pending
    return [(D, 2, f"gift {offer['gift_id']} has no offer in {A}'s ledger")]


def gift_settle_case(data):
    gift = edit(data, A, 7, outcome="rejected")["gift_id"]
    return [(A, 7, f"gift {gift} recorded rejected here but accepted by {B}")]


def gift_decision_case(data):
    gift = edit(data, B, 3, **{"from": D})["gift_id"]
    return [(B, 3, f"gift {gift} is decided here but its offer is missing from {D}'s ledger")]


def referral_case(data):
    rid = edit(data, B, 1, referral_id=None, referrer=None)["referral_id"]
    return [(A, 2, f"referral {rid} was credited here, but {B}'s ledger has no join naming it (was it restored "
                   "from an older copy?)")]


def referred_join_case(data):
    referral, _settle = drop(data, A, 2, 3)
    return [(B, 1, f"joined on referral {referral['referral_id']}, which is missing from {A}'s ledger")]


CASES = {
    "check_chain": chain_case,
    "check_torn": torn_case,
    "check_ids": ids_case,
    "check_times": times_case,
    "check_refs": refs_case,
    "check_replay": replay_case,
    "check_conservation": conservation_case,
    "check_gift_out": gift_out_case,
    "check_gift_in": gift_in_case,
    "check_gift_settle": gift_settle_case,
    "check_gift_decision": gift_decision_case,
    "check_referral": referral_case,
    "check_referred_join": referred_join_case,
}


def assert_reports(data, want):
    code, doc, err = check(data)
    assert code == 3, (code, doc, err)
    assert err["kind"] == "ledger-unsound"
    assert err["message"] == f"{len(want)} problem{'s' if len(want) != 1 else ''} in the ledgers of {data}"
    assert doc["valid"] is False
    got = doc["problems"]
    assert len(got) == len(want), got
    for p, (phone, line, message) in zip(got, want):
        path = str(path_of(data, phone))
        assert (p["path"], p["line"]) == (path, line), p
        if message.endswith("..."):
            assert p["message"].startswith(message[:-3]), p
        else:
            assert p["message"] == message, p
        assert p["text"] == f"{path}:{line}: {p['message']}"


def test_every_check_has_a_case():
    assert list(CASES) == [c.__name__ for c in audit.LEDGER_CHECKS]


@pytest.mark.parametrize("name", list(CASES))
def test_each_check_catches_its_tampering_alone(data, name):
    want = CASES[name](data)
    assert_reports(data, want)
    assert found_by(data) == {name}


def test_a_clean_directory_passes(data):
    code, doc, err = check(data)
    assert (code, err) == (0, None)
    assert doc["valid"] is True
    assert found_by(data) == set()


# ---------------------------------------------------------------- the table's order and its stop


def test_problems_come_in_the_order_of_the_events_whatever_check_finds_them(data):
    """Earns e1 and e2 copied again at the end: for each copy, its duplicate id, then its date (e1 is
    older than the line above it), then its reference, as one pass over the lines would say them; the
    `lines` stage's problems interleave, and come before the later stages' (none here)."""
    evs = events(data, A)
    e1, e2 = evs[3], evs[7]
    rechain(data, A, evs + [e1, e2])
    assert_reports(data, [
        (A, 4, f"duplicate event id {e1['id']}"),
        (A, 4, f"event {e1['id']} is dated before the one above it"),  # line_of: the first line with that id
        (A, 4, f"reference e1 applied twice (earn; first {e1['id']})"),
        (A, 8, f"duplicate event id {e2['id']}"),
        (A, 8, f"reference e2 applied twice (earn; first {e2['id']})"),
    ])


def test_a_ledger_the_rules_cannot_replay_stops_the_checks_after_the_replay(data):
    """Without the replay, check_referral would report A's referral (its case above); with it broken,
    only the earlier stages and the replay's own problem are said."""
    referral_case(data)
    times_case(data)
    edit(data, A, 5, expires_on="soon")
    code, doc, err = check(data)
    assert code == 3 and err["kind"] == "ledger-unsound"
    assert [(p["line"], p["message"].split(" (")[0]) for p in doc["problems"]] == [
        (8, f"event {events(data, A)[7]['id']} is dated before the one above it"),
        (5, "the rules cannot replay this event"),
    ]
