"""CSV and TSV carry the data, flat (issue 24, item 3; CLI.md §1): a nested object becomes
`parent_child` columns, a list of scalars one cell joined with `;`, a list of objects a `NAME_count`
column and its own table (`--table NAME`), no cell ever holds JSON, and a column means the same
thing in every format. `--table` picks a table (report: summary, months, expiring; diff: changes,
members); an unknown name is exit 2 listing the names."""

from __future__ import annotations

import csv
import io
import json

import pytest

from bonuscli import render
from conftest import ROOT

A, B, C, D = "9161230001", "9161230002", "9161230003", "9161230004"


# ---------------------------------------------------------------- helpers


def table_of(r, delimiter=","):
    """(header, rows as dicts) of a CSV/TSV output; every cell checked: none is JSON."""
    lines = list(csv.reader(io.StringIO(r.stdout), delimiter=delimiter))
    assert lines, r.stdout
    header, body = lines[0], lines[1:]
    assert len(set(header)) == len(header), header
    for row in body:
        assert len(row) == len(header), (header, row)
        for value in row:
            assert not is_json_container(value), (value, header, row)
    return header, [dict(zip(header, row)) for row in body]


def is_json_container(text):
    try:
        return isinstance(json.loads(text), (dict, list))
    except ValueError:
        return False


def csv_of(run, *args, table=None, fmt="csv"):
    extra = ("--table", table) if table else ()
    return table_of(run.ok(*args, "--format", fmt, *extra), "," if fmt == "csv" else "\t")


def err_of(r):
    return json.loads(r.stderr.strip().splitlines()[-1])["error"]


def text(value):
    """A JSON scalar as its cell: null empty, true/false, numbers and text as written."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ";".join(text(v) for v in value)
    return str(value)


@pytest.fixture
def members(run):
    """A and B in RU-MOW: a card earn (with its card_welcome bonus), a redeem (an active reward), a
    gift from A to B still pending, a refund (taking from a lot) and an adjustment."""
    run.ok("join", A, "--region", "RU-MOW", "--at", "2025-03-01T10:00")
    run.ok("join", B, "--region", "RU-MOW", "--at", "2025-03-01T11:00")
    run.ok("earn", A, "5000", "--category", "card", "--ref", "t1", "--at", "2025-03-02T10:00")
    run.ok("redeem", A, "minutes_30", "--at", "2025-03-03T10:00")
    run.ok("gift", A, B, "100", "--at", "2025-03-04T10:00")
    run.ok("refund", A, "t1", "--amount", "100", "--ref", "r1", "--at", "2025-03-05T10:00")
    run.ok("adjust", A, "50", "--reason", "goodwill", "--ref", "a1", "--at", "2025-03-05T11:00")
    return run


AT = ("--at", "2025-03-06")


# ---------------------------------------------------------------- balance: one record, its sub-tables


def test_balance_is_one_flat_row_with_the_json_values(members):
    doc = members.j("balance", B, *AT)
    header, rows = csv_of(members, "balance", B, *AT)
    assert len(rows) == 1
    row = rows[0]
    for column in ("next_expiry_date", "next_expiry_points", "pending_in_count", "active_rewards_count"):
        assert column in header
    assert "pending_in" not in header and "next_expiry" not in header and "active_rewards" not in header
    assert row["next_expiry_date"] == doc["next_expiry"]["date"]
    assert row["next_expiry_points"] == str(doc["next_expiry"]["points"])
    assert row["pending_in_count"] == str(len(doc["pending_in"])) == "1"
    for key, value in doc.items():
        if not isinstance(value, (dict, list)):
            assert row[key] == text(value), key


def test_balance_tables_pending_in_and_active_rewards(members):
    doc = members.j("balance", B, *AT)
    header, rows = csv_of(members, "balance", B, *AT, table="pending_in")
    assert header[0] == "phone" and [r["phone"] for r in rows] == [B]
    assert [{k: r[k] for k in g} for r, g in zip(rows, doc["pending_in"])] == \
        [{k: text(v) for k, v in g.items()} for g in doc["pending_in"]]
    doc = members.j("balance", A, *AT)
    header, rows = csv_of(members, "balance", A, *AT, table="active_rewards")
    assert header == ["phone", "code", "name", "active_until"]
    assert rows == [dict(phone=A, **{k: text(v) for k, v in r.items()}) for r in doc["active_rewards"]]
    assert rows[0]["code"] == "minutes_30"


def test_balance_header_is_the_same_whatever_the_data(members):
    """An empty list still counts 0 (and its table has a header); a null object still has its columns."""
    members.ok("join", C, "--region", "RU-BRY", "--method", "web", "--at", "2025-03-05")  # pending: nothing yet
    assert members.j("balance", C, *AT)["next_expiry"] is None
    header_c, (row_c,) = csv_of(members, "balance", C, *AT)
    header_b, _ = csv_of(members, "balance", B, *AT)
    assert header_c == header_b
    assert row_c["next_expiry_date"] == row_c["next_expiry_points"] == "" and row_c["pending_in_count"] == "0"
    header, rows = csv_of(members, "balance", C, *AT, table="pending_in")
    assert header == ["phone", "gift_id", "from", "points", "offered_at", "deadline"] and rows == []


def test_tsv_is_the_same_table(members):
    assert csv_of(members, "balance", B, *AT) == csv_of(members, "balance", B, *AT, fmt="tsv")
    assert csv_of(members, "balance", B, *AT, table="pending_in") == \
        csv_of(members, "balance", B, *AT, table="pending_in", fmt="tsv")


# ---------------------------------------------------------------- catalog: lists of scalars, objects keyed by code


def test_catalog_is_flat_and_means_what_the_json_means(run):
    docs = {d["code"]: d for d in run.j("catalog")}
    header, rows = csv_of(run, "catalog")
    assert [r["code"] for r in rows] == list(docs)
    for column in ("activation_ussd", "activation_sms", "channels", "limits_count", "region_prices_RU-MOW"):
        assert column in header
    for column in ("activation", "limits", "region_prices"):
        assert column not in header
    for r in rows:
        d = docs[r["code"]]
        assert r["activation_ussd"] == text(d["activation"]["ussd"])
        assert r["activation_sms"] == text(d["activation"]["sms"])
        assert r["channels"].split(";") == d["channels"]
        assert r["limits_count"] == str(len(d["limits"]))
        for region, price in d.get("region_prices", {}).items():
            assert r[f"region_prices_{region}"] == str(price)
        assert r["price"] == text(d["price"])


def test_catalog_limits_table_is_keyed_by_code(run):
    docs = run.j("catalog")
    header, rows = csv_of(run, "catalog", table="limits")
    assert header[:3] == ["code", "per", "max"]
    want = [{"code": d["code"], "per": lim["per"], "max": str(lim["max"])} for d in docs for lim in d["limits"]]
    assert want and rows == want


def test_one_reward_and_an_empty_list_keep_their_columns(run):
    header, (row,) = csv_of(run, "catalog", "minutes_30")
    doc = run.j("catalog", "minutes_30")
    assert row["channels"] == ";".join(doc["channels"]) and row["limits_count"] == "0"
    assert row["activation_ussd"] == doc["activation"]["ussd"]
    header, rows = csv_of(run, "catalog", "--search", "no-such-reward")
    assert rows == [] and header[:3] == ["code", "name", "category"] and "limits_count" in header
    assert csv_of(run, "catalog", "--search", "no-such-reward", table="limits") == (["code", "per", "max"], [])


def test_an_empty_list_of_scalars_is_an_empty_cell():
    (header, rows), = [render.tables({"code": "x", "channels": [], "tags": ["a", "b"]}, "t")["t"]]
    assert header == ["code", "channels", "tags"] and rows == [["x", "", "a;b"]]


def test_nested_objects_flatten_recursively_and_lists_inside_lists_get_their_tables():
    found = render.tables({"id": "r1", "a": {"b": {"c": 1, "d": None}, "e": [{"f": {"g": 2}, "h": [{"i": 3}]}]},
                           "ok": True}, "t")
    assert found["t"] == (["id", "a_b_c", "a_b_d", "a_e_count", "ok"], [["r1", "1", "", "1", "true"]])
    assert found["e"] == (["id", "f_g", "h_count"], [["r1", "2", "1"]])
    assert found["h"] == (["i"], [["3"]])


# ---------------------------------------------------------------- history: a column means the same in every format


def test_history_columns_mean_what_the_json_fields_mean(members):
    events = [json.loads(line) for line in members.ok("history", A, "--json", *AT).stdout.splitlines()]
    header, rows = csv_of(members, "history", A, *AT)
    assert len(rows) == len(events)
    assert "taken" not in header and "taken_count" in header
    for row, e in zip(rows, events):
        assert row["type"] == e["type"] and row["event"] == e["event"] and row["id"] == e["id"]
        assert row["taken_count"] == str(len(e["taken"]))
        for key, value in e.items():
            if not isinstance(value, (dict, list)):
                assert row[key] == text(value), key
    assert [r["type"] for r in rows][:2] == ["join", "welcome"] and rows[0]["event"] == rows[1]["event"]


def test_history_table_for_people_labels_the_type_column_type(members):
    out = members.ok("history", A, *AT).stdout
    head = out.splitlines()[0].split()
    assert head == ["at", "type", "points", "balance", "detail"]
    assert "event" not in head


def test_history_taken_table(members):
    events = [json.loads(line) for line in members.ok("history", A, "--json", *AT).stdout.splitlines()]
    header, rows = csv_of(members, "history", A, *AT, table="taken")
    want = [dict(id=e["id"], **{k: text(v) for k, v in lot.items()}) for e in events for lot in e["taken"]]
    assert want and rows == want and header[0] == "id"


# ---------------------------------------------------------------- forecast, explain, calc


def test_forecast_lots_months_and_its_own_row(members):
    doc = members.j("forecast", A, "--days", "400", *AT)
    header, rows = csv_of(members, "forecast", A, "--days", "400", *AT)
    assert header == ["phone", "expires_on", "points"]
    assert rows == [dict(phone=A, expires_on=lot["expires_on"], points=str(lot["points"])) for lot in doc["lots"]]
    _, months = csv_of(members, "forecast", A, "--days", "400", *AT, table="months")
    assert [(m["month"], m["points"]) for m in months] == [(m["month"], str(m["points"])) for m in doc["months"]]
    _, (row,) = csv_of(members, "forecast", A, "--days", "400", *AT, table="forecast")
    assert row["total"] == str(doc["total"]) and row["lots_count"] == str(len(doc["lots"]))


def test_explain_steps_and_calc_steps(members):
    doc = members.j("explain", A, "t1", *AT)
    header, rows = csv_of(members, "explain", A, "t1", *AT)
    assert [r["rule"] for r in rows] == [s["rule"] for s in doc["steps"]]
    assert [r["detail"] for r in rows] == [s["detail"] for s in doc["steps"]]
    _, (row,) = csv_of(members, "explain", A, "t1", *AT, table="explain")
    assert row["steps_count"] == str(len(doc["steps"])) and row["result_id"] == doc["result"]["id"]
    doc = members.j("calc", "500", "--category", "mobile", "--explain")
    _, (row,) = csv_of(members, "calc", "500", "--category", "mobile", "--explain")
    assert row["points"] == str(doc["points"]) and row["steps_count"] == str(len(doc["steps"]))
    _, steps = csv_of(members, "calc", "500", "--category", "mobile", "--explain", table="steps")
    assert [s["rule"] for s in steps] == [s["rule"] for s in doc["steps"]]


# ---------------------------------------------------------------- report: summary, months, expiring


def test_report_tables(members):
    doc = members.j("report", *AT)
    header, months = csv_of(members, "report", *AT)
    assert header[:2] == ["month", "earned"]
    assert months == [{k: text(v) for k, v in m.items()} for m in doc["months"]]
    assert csv_of(members, "report", *AT, table="months") == (header, months)
    header, (summary,) = csv_of(members, "report", *AT, table="summary")
    for status, n in doc["members"].items():
        assert summary[f"members_{status}"] == str(n)
    for key in ("outstanding", "held", "debt"):
        assert summary[key] == str(doc[key])
    assert summary["expiring_count"] == str(len(doc["expiring"]))
    assert summary["months_count"] == str(len(doc["months"]))
    assert "months" not in header and "expiring" not in header and "members" not in header
    _, expiring = csv_of(members, "report", *AT, table="expiring")
    assert expiring == [{"month": e["month"], "points": str(e["points"])} for e in doc["expiring"]]
    assert sum(int(e["points"]) for e in expiring) == doc["outstanding"]


# ---------------------------------------------------------------- diff: changes, members


@pytest.fixture
def catalogs(tmp_path):
    old = (ROOT / "catalog.yaml").read_text(encoding="utf-8")
    new = old.replace("RU-MOW: 210", "RU-MOW: 250", 1).replace(
        "certificate: {name: Partner certificates, limits: [{per: month, max: 1}]}",
        "certificate: {name: Partner certificates, limits: [{per: month, max: 2}]}", 1)
    assert new.count("RU-MOW: 250") == 1 and "max: 2}]}" in new
    (tmp_path / "old.yaml").write_text(old, encoding="utf-8")
    (tmp_path / "new.yaml").write_text(new, encoding="utf-8")
    return str(tmp_path / "old.yaml"), str(tmp_path / "new.yaml")


def test_diff_changes_flat(members, catalogs):
    doc = members.j("diff", *catalogs)
    header, rows = csv_of(members, "diff", *catalogs)
    assert header[:4] == ["kind", "what", "old", "new"]
    assert [(r["kind"], r["what"]) for r in rows] == [(c["kind"], c["what"]) for c in doc["changes"]]
    limit = next(r for r in rows if r["kind"] == "limit-change")
    assert limit["old_count"] == limit["new_count"] == "1" and limit["old"] == limit["new"] == ""
    price = next(r for r in rows if r["kind"] == "price-increase")
    assert (price["what"], price["old"], price["new"]) == ("minutes_30@RU-MOW", "210", "250")
    _, old = csv_of(members, "diff", *catalogs, table="old")
    assert old == [{"what": "category:certificate", "per": "month", "max": "1"}]
    _, new = csv_of(members, "diff", *catalogs, table="new")
    assert new == [{"what": "category:certificate", "per": "month", "max": "2"}]


def test_diff_ledgers_members_by_default(members, catalogs):
    doc = members.j("diff", *catalogs, "--ledgers", *AT)
    header, rows = csv_of(members, "diff", *catalogs, "--ledgers", *AT)
    assert header[0] == "phone"
    assert rows == [{k: text(v) for k, v in m.items()} for m in doc["impact"]["members"]]
    assert {r["phone"] for r in rows} == {A, B}
    _, changes = csv_of(members, "diff", *catalogs, "--ledgers", *AT, table="changes")
    assert [c["what"] for c in changes] == [c["what"] for c in doc["changes"]]
    _, (summary,) = csv_of(members, "diff", *catalogs, "--ledgers", *AT, table="summary")
    for key, value in doc["impact"]["total"].items():
        assert summary[f"impact_total_{key}"] == str(value)
    assert summary["impact_members_count"] == str(len(doc["impact"]["members"]))
    assert summary["changes_count"] == str(len(doc["changes"]))


# ---------------------------------------------------------------- --table: unknown names, where it goes


@pytest.mark.parametrize("args, names", [
    (("report",), ["summary", "expiring", "months"]),
    (("balance", A), ["balance", "pending_in", "active_rewards"]),
    (("regions",), ["regions"]),
])
def test_an_unknown_table_is_exit_2_listing_the_names(members, args, names):
    for fmt in ("csv", "tsv", "json", "table"):
        r = members(*args, *AT, "--format", fmt, "--table", "nope", "--json")
        assert r.exit_code == 2 and r.stdout == ""
        err = err_of(r)
        assert err["code"] == 2 and err["kind"] == "unknown-table"
        for name in names:
            assert name in err["message"]
    r = members(*args, *AT, "--format", "csv", "--table", "nope")
    assert r.exit_code == 2 and r.stderr.startswith("error: --table:") and r.stdout == ""


def test_diff_lists_its_tables(members, catalogs):
    r = members("diff", *catalogs, "--format", "csv", "--table", "member", "--json")
    assert r.exit_code == 2 and err_of(r)["kind"] == "unknown-table"
    assert "changes (the default)" in err_of(r)["message"]
    r = members("diff", *catalogs, "--ledgers", *AT, "--format", "csv", "--table", "member", "--json")
    message = err_of(r)["message"]
    assert r.exit_code == 2 and "members (the default)" in message and "changes" in message
    assert "did you mean 'members'" in message


def test_table_before_the_command_and_for_people(members):
    assert members.ok("--table", "pending_in", "--format", "csv", "balance", B, *AT).stdout == \
        members.ok("balance", B, *AT, "--format", "csv", "--table", "pending_in").stdout
    out = members.ok("balance", B, *AT, "--table", "pending_in").stdout
    assert out.split("\n")[0].split() == ["phone", "gift_id", "from", "points", "offered_at", "deadline",
                                          "offered_points"]
    assert B in out.split("\n")[2]
    # JSON holds every table: --table checks the name, the document is whole
    assert members.j("balance", B, *AT, "--table", "pending_in") == members.j("balance", B, *AT)


def test_a_writing_command_checks_the_table_before_it_writes(members):
    before = members.ok("history", A, "--json", *AT).stdout
    for args in (("--table", "bonus", "earn"), ("earn",)):
        r = members(*args, A, "100", "--category", "mobile", "--ref", "t-new", *AT, "--table", "bonus", "--json")
        assert r.exit_code == 2 and err_of(r)["kind"] == "unknown-table"
        assert "bonuses" in err_of(r)["message"] and "steps" in err_of(r)["message"]
    assert members.ok("history", A, "--json", *AT).stdout == before
    header, rows = csv_of(members, "earn", A, "100", "--category", "mobile", "--ref", "t-new", *AT, table="steps")
    assert header == ["phone", "rule", "detail"] and rows == []  # no --explain: no steps, still a table


def pending_gift(run, phone, at):
    return run.j("balance", phone, "--at", at)["pending_in"][0]["gift_id"]


def test_writing_commands_declare_every_table_they_have(members):
    """render.WRITES, checked before a write, names exactly the tables a writing command's view holds."""
    views = {
        "join": members.j("join", C, "--region", "RU-MOW", "--at", "2025-03-06T09:00"),
        "earn": members.j("earn", C, "5000", "--category", "card", "--ref", "c1", "--explain",
                          "--at", "2025-03-06T10:00"),
        "refund": members.j("refund", C, "c1", "--ref", "cr1", "--explain", "--at", "2025-03-06T11:00"),
        "adjust": members.j("adjust", C, "10", "--reason", "x", "--ref", "ca1", "--at", "2025-03-06T12:00"),
        "redeem": members.j("redeem", C, "minutes_30", "--at", "2025-03-06T13:00"),
        "gift": members.j("gift", C, B, "100", "--at", "2025-03-06T14:00"),
        "accept": members.j("accept", B, pending_gift(members, B, "2025-03-06T15:00"), "--at", "2025-03-06T15:00"),
        "leave": members.j("leave", C, "--yes", "--at", "2025-03-06T16:00"),
    }
    assert set(views) == set(render.WRITES)
    for command, view in views.items():
        assert list(render.tables(view, command, command)) == [command, *render.WRITES[command]], command


# ---------------------------------------------------------------- every command: no cell is JSON, one row


def test_every_command_with_csv_output_is_flat(members, catalogs):
    """The record commands: one header line and one row, every scalar JSON field a column of the same
    value, every object flattened, every list of objects counted."""
    gift_id = members.j("balance", B, *AT)["pending_in"][0]["gift_id"]
    commands = [
        ("join", C, "--region", "RU-MOW", "--at", "2025-03-06T09:00"),
        ("earn", C, "5000", "--category", "card", "--ref", "c1", "--at", "2025-03-06T10:00"),
        ("earn", C, "100", "--category", "mobile", "--ref", "c2", "--explain", "--at", "2025-03-06T10:30"),
        ("refund", C, "c1", "--ref", "cr1", "--at", "2025-03-06T11:00"),
        ("adjust", C, "10", "--reason", "x", "--ref", "ca1", "--at", "2025-03-06T12:00"),
        ("redeem", C, "minutes_30", "--at", "2025-03-06T13:00"),
        ("accept", B, gift_id, "--at", "2025-03-06T14:00"),
        ("gift", C, B, "100", "--at", "2025-03-06T15:00"),
        ("calc", "500", "--category", "mobile", "--explain"),
        ("balance", A, *AT), ("path", A), ("catalog", "minutes_30"),
        ("explain", A, "t1", *AT, "--table", "explain"), ("forecast", A, *AT, "--table", "forecast"),
        ("report", *AT, "--table", "summary"), ("diff", *catalogs, "--ledgers", *AT, "--table", "summary"),
        ("leave", C, "--yes", "--at", "2025-03-06T16:00"),
    ]
    for args in commands:
        r = members.ok(*args, "--format", "csv")
        header, rows = table_of(r)
        assert len(rows) == 1, args
        if args[0] in ("join", "earn", "refund", "adjust", "redeem", "accept", "gift", "leave"):
            continue  # a write: its JSON cannot be asked twice; the columns are checked below
        doc = members.j(*[a for a in args])
        check_flat(doc, rows[0], args)
    for args in [("regions",), ("catalog",), ("history", A, *AT), ("explain", A, *AT)]:
        table_of(members.ok(*args, "--format", "csv"))
        table_of(members.ok(*args, "--format", "tsv"), "\t")


def check_flat(doc, row, args, prefix=""):
    for key, value in doc.items():
        column = f"{prefix}{key}"
        if isinstance(value, dict):
            check_flat(value, row, args, column + "_")
        elif isinstance(value, list) and (any(isinstance(v, dict) for v in value) or key in render.LISTS):
            assert row[column + "_count"] == str(len(value)), (args, column)
        else:
            assert row[column] == text(value), (args, column)


def test_written_results_are_flat_rows_of_their_json(members):
    """earn, join, redeem...: the CSV row of a write is its JSON document, flat (compared on a dry run
    and on idempotent repeats, which answer the same document twice)."""
    for args in [("earn", A, "500", "--category", "mobile", "--ref", "t1", *AT),
                 ("earn", A, "700", "--category", "card", "--dry-run", "--at", "2025-03-06T10:00"),
                 ("adjust", A, "50", "--reason", "goodwill", "--ref", "a1", *AT),
                 ("refund", A, "t1", "--amount", "100", "--ref", "r1", *AT)]:
        doc = members.j(*args)
        _, (row,) = csv_of(members, *args)
        check_flat(doc, row, args)
    # two joins alike, one asked for JSON, the other for its welcome table
    doc = members.j("join", C, "--region", "RU-BRY", "--method", "web", "--at", "2025-03-06")
    assert len(doc["welcome"]) > 1
    _, welcome = csv_of(members, "join", D, "--region", "RU-BRY", "--method", "web", "--at", "2025-03-06",
                        table="welcome")
    assert welcome == [dict(phone=D, **{k: text(v) for k, v in w.items()}) for w in doc["welcome"]]
