"""CSV and TSV carry the data, flat (issue 24, item 3; CLI.md §1): a nested object becomes
`parent_child` columns, a list of scalars one cell joined with `;`, a list of objects a `NAME_count`
column and its own table (`--table NAME`), no cell ever holds JSON, and a column means the same
thing in every format. `--table` picks a table (report: summary, months, expiring; diff: changes,
members); an unknown name is exit 2 listing the names.

Review of issue 24 (below, from "every list of objects"): every sub-table's header is fixed (render.LISTS:
every key, in the JSON's order; each command's JSON is walked so a new list without a declared shape
fails), every command refuses an unknown --table (exit 2, kind unknown-table; a writing one before it
writes; check, export, completion, sms and ussd have no tables), and a batch's summary is a record with
its `problems` table."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

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
    assert header == ["phone", "gift_id", "from", "points", "offered_at", "deadline", "offered_points"] and rows == []


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
    assert header == ["phone", *render.LISTS["steps"]] and rows == []  # no --explain: no steps, still a table


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
        elif isinstance(value, list) and (any(isinstance(v, dict) for v in value)
                                          or render._shape(key, args[0]) is not None):
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


# ---------------------------------------------------------------- every list of objects has a declared, fixed shape
#
# A sub-table's header comes from render.LISTS, so it is the same whether its list is empty or not and
# whatever its rows hold. These tests walk the JSON of every command that prints tables: a list of
# objects whose field has no declared shape, or whose objects have a key the shape lacks (or in another
# order), fails here; so does a declared shape no document exercised.

E = "9161230005"
SCALAR_LISTS = {"channels", "failed_on"}  # lists of scalars (one cell, joined with `;`)
STEPS = ("steps", "refund.steps", "explain.steps")  # a step carries the numbers of its own rule: a subset


@pytest.fixture
def rich(tmp_path):
    """OLD and a NEW catalog that changes a price (minutes_30 in RU-MOW: no longer affordable), a
    limit, the tenure coefficients and the card tiers (old/new: lists of objects)."""
    old = (ROOT / "catalog.yaml").read_text(encoding="utf-8")
    swaps = [("RU-MOW: 210", "RU-MOW: 5000"),
             ("certificate: {name: Partner certificates, limits: [{per: month, max: 1}]}",
              "certificate: {name: Partner certificates, limits: [{per: month, max: 2}]}"),
             ('{up_to_months: 12, coefficient: "1.1"}', '{up_to_months: 12, coefficient: "1.15"}'),
             ('{up_to_rub: "15000.00", rub_per_point: 30}', '{up_to_rub: "16000.00", rub_per_point: 30}')]
    new = old
    for a, b in swaps:
        assert new.count(a) == 1, a
        new = new.replace(a, b)
    (tmp_path / "rich-old.yaml").write_text(old, encoding="utf-8")
    (tmp_path / "rich-new.yaml").write_text(new, encoding="utf-8")
    return str(tmp_path / "rich-old.yaml"), str(tmp_path / "rich-new.yaml")


BATCH_FILES = {  # one applied row and one problem each
    "earn": f"phone,amount,category,ref\n{A},100,mobile,b1\n{A},abc,mobile,b2\n",
    "join": f"phone,region\n{E},RU-MOW\n{D},XX-NOPE\n",
    "refund": f"phone,ref,amount,refund_ref\n{A},t1,10,rb1\n{A},no-such-ref,10,rb2\n",
    "adjust": f"phone,points,reason,ref\n{A},5,x,ab1\n{A},five,x,ab2\n",
}


def batch_file(tmp_path, kind, text=None):
    path = tmp_path / f"batch-{kind}.csv"
    path.write_text(BATCH_FILES[kind] if text is None else text, encoding="utf-8")
    return str(path)


def documents(run, rich, tmp_path):
    """(command, JSON document) for every command that prints tables, with data in every list."""
    docs = []

    def add(*args):
        docs.append((args[0], run.j(*args)))

    add("join", C, "--region", "RU-MOW", "--at", "2025-03-06T09:00")
    add("earn", C, "5000", "--category", "card", "--ref", "c1", "--explain", "--at", "2025-03-06T10:00")
    add("earn", C, "500", "--category", "mobile", "--ref", "c2", "--explain", "--at", "2025-03-06T10:30")
    add("refund", C, "c1", "--amount", "100", "--ref", "cr1", "--explain", "--at", "2025-03-06T11:00")
    add("adjust", C, "-10", "--reason", "a debit", "--ref", "ca1", "--at", "2025-03-06T12:00")
    add("redeem", C, "minutes_30", "--at", "2025-03-06T13:00")
    add("gift", C, B, "100", "--at", "2025-03-06T14:00")
    add("accept", B, pending_gift(run, B, "2025-03-06T15:00"), "--at", "2025-03-06T15:00")
    add("join", D, "--region", "RU-BRY", "--method", "web", "--at", "2025-03-06T16:00")
    add("leave", D, "--yes", "--at", "2025-03-06T17:00")
    at = ("--at", "2025-03-07")
    for phone in (A, B, C):
        add("balance", phone, *at)
        add("forecast", phone, "--days", "400", *at)
        add("explain", phone, *at)
        docs += [("history", json.loads(line)) for line in run.ok("history", phone, "--json", *at).stdout.splitlines()]
    for key in ("t1", "r1", "a1"):
        add("explain", A, key, *at)
    for key in ("c1", "c2", "cr1", "ca1"):
        add("explain", C, key, *at)
    add("calc", "500", "--category", "mobile", "--explain", "--tenure-months", "13")
    add("calc", "500", "--category", "mobile", "--explain", "--customer-since", "2020-01-01")
    add("calc", "500", "--category", "card", "--explain", "--card-last-month", "20000")
    add("report", *at)
    add("catalog")
    add("catalog", "minutes_30")
    add("regions")
    add("path", A)
    add("diff", *rich)
    add("diff", *rich, "--ledgers", *at)
    for kind in BATCH_FILES:
        r = run(kind, "--from", batch_file(tmp_path, kind), "--at", "2025-03-08", "--json")
        assert r.exit_code in (1, 2) and json.loads(r.stdout)["problems"], (kind, r.stdout, r.stderr)
        docs.append((kind, json.loads(r.stdout)))
    return docs


def walk_lists(doc, command, seen, where=""):
    """Check every list inside `doc` against its declared shape; add the LISTS names exercised to `seen`
    (name -> the keys seen in its objects)."""
    for key, value in doc.items():
        if str(key).startswith("_"):
            continue
        here = f"{command} {where}{key}"
        if isinstance(value, dict):
            walk_lists(value, command, seen, f"{where}{key}.")
        elif isinstance(value, list):
            if key in render.VARYING and where.endswith("changes[]."):
                continue  # diff's old and new: documented to follow the data
            shape = render._shape(key, command)
            if shape is None:
                assert key in SCALAR_LISTS, f"{here}: a list without a declared shape: a list of objects " \
                    "needs its shape in render.LISTS (every key, in the JSON's order); a list of scalars, SCALAR_LISTS"
                assert not any(isinstance(v, (dict, list)) for v in value), here
                continue
            name = f"{command}.{key}" if f"{command}.{key}" in render.LISTS else key
            for item in value:
                assert isinstance(item, dict), (here, item)
                keys = [k for k in item if not str(k).startswith("_")]
                if name in STEPS:
                    assert set(keys) <= set(shape), (here, "keys missing from render.LISTS", set(keys) - set(shape))
                else:
                    assert keys == list(shape), (here, "render.LISTS", name, shape, "the JSON", keys)
                seen.setdefault(name, set()).update(keys)
                walk_lists(item, command, seen, f"{where}{key}[].")


def test_every_list_of_objects_has_a_declared_shape(members, rich, tmp_path):
    seen: dict = {}
    for command, doc in documents(members, rich, tmp_path):
        for record in doc if isinstance(doc, list) else [doc]:  # catalog, regions: a list of records
            walk_lists(record, command, seen)
    assert set(seen) == set(render.LISTS), "declared shapes no document exercised (or the reverse)"
    for name in STEPS:  # no step key is declared that no step has
        assert seen[name] == set(render.LISTS[name]), (name, set(render.LISTS[name]) - seen[name])


def test_every_table_a_document_has_is_a_declared_one(members, rich, tmp_path):
    """render.tables agrees: each sub-table of a document (but diff's old/new) is a list of LISTS, and
    its header is its record's key and that shape, whatever the rows."""
    for command, doc in documents(members, rich, tmp_path):
        main = "summary" if command in ("report", "diff") or "problems" in doc else command
        found = render.tables(doc, main, command)
        for name, (header, _rows) in found.items():
            if name == main or name in render.VARYING:
                continue
            shape = render._shape(name, command)
            assert shape is not None, (command, name)
            if name == "changes":  # an old or new that is a list of objects adds its count (documented)
                header = [c for c in header if c not in ("old_count", "new_count")]
            assert header[-len(shape):] == list(shape) and len(header) - len(shape) <= 1, (command, name, header)


def header_of(run, args, table, ok=True):
    r = run(*args, "--format", "csv", "--table", table)
    assert r.exit_code == 0 or not ok, (args, table, r.stdout, r.stderr)
    assert r.stdout, (args, table, r.stderr)
    return next(csv.reader(io.StringIO(r.stdout)))


def count_rows(run, args, table):
    return len(run.ok(*args, "--format", "csv", "--table", table).stdout.splitlines()) - 1


def test_read_tables_have_the_same_header_empty_or_not(members, rich):
    """Each (command, table): its header with the list empty and with rows (and across the kinds of rows:
    explain's steps of a balance, an earn, a refund)."""
    members.ok("join", C, "--region", "RU-BRY", "--method", "web", "--at", "2025-03-05")  # pending: nothing yet
    old, new = rich
    cases = [
        ("pending_in", ("balance", A), ("balance", B)),
        ("active_rewards", ("balance", B), ("balance", A)),
        ("balance", ("balance", C), ("balance", A), ("balance", B)),
        ("limits", ("catalog", "minutes_30"), ("catalog", "--search", "sportmaster")),
        ("limits", ("catalog", "--search", "no-such-reward"), ("catalog",)),
        ("taken", ("history", B), ("history", A)),
        ("history", ("history", B), ("history", A)),
        ("lots", ("forecast", A, "--days", "0"), ("forecast", A, "--days", "400")),
        ("forecast", ("forecast", A, "--days", "0"), ("forecast", A, "--days", "400")),
        ("lots", ("explain", C), ("explain", A)),
        ("steps", ("explain", C), ("explain", A), ("explain", A, "t1"), ("explain", A, "r1"), ("explain", A, "a1")),
        ("steps", ("calc", "500", "--category", "mobile", "--explain"),
         ("calc", "500", "--category", "card", "--explain", "--card-last-month", "20000")),
        ("months", ("report", "--from", "2024-01", "--until", "2024-02"), ("report",)),
        ("summary", ("report", "--from", "2024-01", "--until", "2024-02"), ("report",)),
        ("members", ("diff", old, old, "--ledgers", "--changed-only"),
         ("diff", old, new, "--ledgers", "--changed-only")),
        ("no_longer_affordable", ("diff", old, old, "--ledgers"), ("diff", old, new, "--ledgers")),
        ("outcome_changes", ("diff", old, old, "--ledgers"), ("diff", old, new, "--ledgers")),
        ("summary", ("diff", old, old, "--ledgers", "--changed-only"),
         ("diff", old, new, "--ledgers", "--changed-only")),
    ]
    for table, empty, *full in cases:
        if table not in ("balance", "history", "forecast", "summary", "steps"):  # a list's table: empty here
            assert count_rows(members, (*empty, *AT), table) == 0, (table, empty)
        assert any(count_rows(members, (*f, *AT), table) for f in full), (table, full)
        want = header_of(members, (*empty, *AT), table)
        for f in full:
            assert header_of(members, (*f, *AT), table) == want, (table, empty, f)
    # the headers the review found changing, now whole
    assert header_of(members, ("diff", old, old, "--ledgers", "--changed-only", *AT), "members") == \
        list(render.LISTS["diff.members"])
    assert header_of(members, ("balance", A, *AT), "pending_in")[-1] == "offered_points"
    assert header_of(members, ("diff", old, old, "--ledgers", *AT), "outcome_changes") == \
        ["phone", "at", "command", "request", "old", "new", "message"]
    assert header_of(members, ("diff", old, old, "--ledgers", *AT), "no_longer_affordable")[-1] == "message"


def test_changes_with_scalar_values_keep_their_header(members, catalogs):
    """diff's changes: kind, what, old, new whatever the kinds, as long as no value is a list of objects
    (a limit, tier or tenure change adds old_count/new_count: documented)."""
    old, new = catalogs
    price_only = new.replace("new.yaml", "price.yaml")
    text = open(old, encoding="utf-8").read().replace("RU-MOW: 210", "RU-MOW: 250", 1)
    open(price_only, "w", encoding="utf-8").write(text)
    assert header_of(members, ("diff", old, old), "changes") == header_of(members, ("diff", old, price_only), "changes")
    assert count_rows(members, ("diff", old, price_only), "changes") == 1


def header_and_count(run, args, table, ok=True):
    r = run(*args, "--format", "csv", "--table", table)
    assert r.exit_code == 0 or not ok, (args, table, r.stdout, r.stderr)
    lines = list(csv.reader(io.StringIO(r.stdout)))
    return lines[0], len(lines) - 1


def test_written_tables_have_the_same_header_empty_or_not(members, tmp_path):
    # join: a first join has its welcome, a rejoin none
    first = header_and_count(members, ("join", E, "--region", "RU-MOW", "--at", "2025-03-06T09:00"), "welcome")
    members.ok("leave", E, "--yes", "--at", "2025-03-06T10:00")
    again = header_and_count(members, ("join", E, "--region", "RU-MOW", "--at", "2025-03-06T11:00"), "welcome")
    assert first[1] == 1 and again[1] == 0 and first[0] == again[0]
    members.ok("leave", E, "--yes", "--at", "2025-03-06T12:00")
    assert header_of(members, ("join", E, "--region", "RU-MOW", "--at", "2025-03-06T13:00"), "join") == \
        header_of(members, ("join", C, "--region", "RU-MOW", "--at", "2025-03-06T13:00"), "join")
    # earn: a card earn with its welcome bonus and steps, a mobile earn with neither
    for n, table in enumerate(("earn", "bonuses", "steps")):
        phone = ("9161230011", "9161230012", "9161230013")[n]
        members.ok("join", phone, "--region", "RU-MOW", "--at", "2025-03-06T09:00")
        explain = ("--explain",) if table != "earn" else ()  # (--explain adds steps_count to the record)
        rich_ = header_and_count(members, ("earn", phone, "5000", "--category", "card", "--ref", "c1", *explain,
                                           "--at", "2025-03-06T10:00"), table)
        plain = header_and_count(members, ("earn", phone, "100", "--category", "mobile", "--ref", "c2",
                                           "--at", "2025-03-06T11:00"), table)
        assert rich_[0] == plain[0], table
        if table != "earn":
            assert rich_[1] > 0 and plain[1] == 0, table
        # refund: steps with --explain, none without
        if table == "steps":
            explained = header_and_count(members, ("refund", phone, "c1", "--amount", "100", "--ref", "r1", "--explain",
                                                   "--at", "2025-03-06T12:00"), "steps")
            bare = header_and_count(members, ("refund", phone, "c1", "--amount", "100", "--ref", "r2",
                                              "--at", "2025-03-06T12:30"), "steps")
            assert explained[0] == bare[0] and explained[1] == 2 and bare[1] == 0
    # a batch: problems or none
    clean = batch_file(tmp_path, "earn", f"phone,amount,category,ref\n{A},100,mobile,b9\n")
    messy = batch_file(tmp_path, "adjust")
    for table in ("summary", "problems"):
        assert header_of(members, ("earn", "--from", clean, *AT), table) == \
            header_of(members, ("adjust", "--from", messy, *AT), table, ok=False), table


def test_join_rejoin_welcome_table_is_empty_with_its_header(members):
    members.ok("join", E, "--region", "RU-MOW", "--at", "2025-03-06T09:00")
    members.ok("leave", E, "--yes", "--at", "2025-03-06T10:00")
    args = ("join", E, "--region", "RU-MOW", "--at", "2025-03-06T11:00")
    header, rows = csv_of(members, *args, table="welcome")
    assert header == ["phone", "reason", "points"] and rows == []


# ---------------------------------------------------------------- batch summaries: a record and its problems


@pytest.mark.parametrize("kind", sorted(BATCH_FILES))
def test_batch_summary_is_a_flat_row_and_its_problems_a_table(run, members, tmp_path, kind):
    path = batch_file(tmp_path, kind)
    r = run(kind, "--from", path, "--at", "2025-03-08", "--format", "csv", "--dry-run") if kind in ("earn", "join") \
        else None
    if r is not None:  # a dry run: the same counts, nothing written, and its dry_run column
        header, (row,) = table_of(r)
        assert header[:6] == ["rows", "applied", "duplicates", "refused", "errors", "problems_count"]
        assert row["dry_run"] == "true" and row["rows"] == "2"
    before = ledgers(members)
    r = run(kind, "--from", path, "--at", "2025-03-08", "--format", "csv")
    assert r.exit_code in (1, 2) and r.stderr.startswith("error: ")
    assert ledgers(members) != before  # the good row was applied
    header, (row,) = table_of(r)
    assert header == ["rows", "applied", "duplicates", "refused", "errors", "problems_count"]
    # the same file again: its good row a duplicate, the same problems
    doc = json.loads(run(kind, "--from", path, "--at", "2025-03-08", "--json").stdout)
    for key in ("rows", "refused", "errors"):
        assert row[key] == str(doc[key])
    assert row["problems_count"] == str(len(doc["problems"])) == "1"
    r = run(kind, "--from", path, "--at", "2025-03-08", "--format", "csv", "--table", "problems")
    header, rows = table_of(r)
    assert header == ["line", "ref", "code", "message"]
    assert rows == [{k: text(v) for k, v in p.items()} for p in doc["problems"]]
    r = run(kind, "--from", path, "--at", "2025-03-08", "--format", "tsv", "--table", "problems")
    assert table_of(r, "\t") == (header, rows)
    out = run(kind, "--from", path, "--at", "2025-03-08", "--table", "problems").stdout  # for people: aligned
    assert out.split("\n")[0].split() == ["line", "ref", "code", "message"]
    # JSON holds both, as before
    assert run(kind, "--from", path, "--at", "2025-03-08", "--json", "--table", "problems").stdout == \
        run(kind, "--from", path, "--at", "2025-03-08", "--json").stdout


def test_a_clean_batch_has_an_empty_problems_table(run, members, tmp_path):
    path = batch_file(tmp_path, "earn", f"phone,amount,category,ref\n{A},100,mobile,b9\n")
    _, (row,) = table_of(run.ok("earn", "--from", path, *AT, "--format", "csv"))
    assert row["applied"] == "1" and row["problems_count"] == "0"
    assert table_of(run.ok("earn", "--from", path, *AT, "--format", "csv", "--table", "problems")) == \
        (["line", "ref", "code", "message"], [])


def test_a_batch_refuses_another_commands_table_before_it_reads_a_row(run, members, tmp_path):
    path = batch_file(tmp_path, "earn")
    before = ledgers(members)
    for name in ("bonuses", "earn", "nope"):
        r = run("earn", "--from", path, *AT, "--format", "csv", "--table", name, "--json")
        assert r.exit_code == 2 and r.stdout == "" and err_of(r)["kind"] == "unknown-table"
        assert "summary (the default), problems" in err_of(r)["message"]
        assert ledgers(members) == before
    # and a single earn refuses the batch's tables, before it writes
    r = run("earn", A, "100", "--category", "mobile", "--ref", "x1", *AT, "--table", "problems", "--json")
    assert r.exit_code == 2 and err_of(r)["kind"] == "unknown-table" and "--from" in err_of(r)["message"]
    assert ledgers(members) == before


# ---------------------------------------------------------------- --table: every command refuses a name it lacks


def ledgers(_run=None):
    """Every ledger's bytes (the data directory of the test: conftest.isolate)."""
    root = Path(os.environ["BONUSCLI_DATA_DIR"]) / "ledgers"
    return {p.name: p.read_bytes() for p in sorted(root.glob("*.jsonl"))}


UNKNOWN_TABLE_CASES = [  # (label, arguments, writes: the same arguments without --table write)
    ("catalog", ("catalog",), False), ("catalog CODE", ("catalog", "minutes_30"), False),
    ("regions", ("regions",), False), ("path", ("path", A), False),
    ("check", ("check",), False), ("check --ledgers", ("check", "--ledgers"), False),
    ("balance", ("balance", A), False), ("history", ("history", A), False),
    ("forecast", ("forecast", A), False), ("explain", ("explain", A), False),
    ("calc", ("calc", "500", "--category", "mobile"), False), ("report", ("report",), False),
    ("diff", ("diff", "OLD", "NEW"), False), ("diff --ledgers", ("diff", "OLD", "NEW", "--ledgers"), False),
    ("export", ("export", "--format", "hledger"), False), ("completion", ("completion", "bash"), False),
    ("join", ("join", E, "--region", "RU-MOW"), True),
    ("earn", ("earn", A, "100", "--category", "mobile", "--ref", "u1"), True),
    ("refund", ("refund", A, "t1", "--amount", "10", "--ref", "u2"), True),
    ("adjust", ("adjust", A, "5", "--reason", "x", "--ref", "u3"), True),
    ("redeem", ("redeem", A, "minutes_30"), True),
    ("gift", ("gift", A, B, "100"), True),
    ("accept", ("accept", B, "GIFT"), True),
    ("leave", ("leave", B, "--yes"), True),
    ("sms", ("sms", A, "DAR", B, "100"), True),
    ("ussd", ("ussd", E, "*111*455*1#", "--region", "RU-MOW"), True),
] + [(f"{kind} --from", (kind, "--from", "FILE"), True) for kind in BATCH_FILES]
CASE_LABELS = [c[0] for c in UNKNOWN_TABLE_CASES]


def test_the_cases_cover_every_command():
    from bonuscli.cli import cli

    assert {label.split()[0] for label in CASE_LABELS} == set(cli.commands)
    assert set(render.UNTABLED) | set(render.WRITES) | set(render.ROWS) <= set(cli.commands)
    from bonuscli import batch

    assert set(render.BATCHES) == set(batch.SPECS)


@pytest.mark.parametrize("label", CASE_LABELS)
def test_every_command_refuses_an_unknown_table(members, rich, tmp_path, label):
    (args, writes), = [(a, w) for lab, a, w in UNKNOWN_TABLE_CASES if lab == label]
    given = {"OLD": rich[0], "NEW": rich[1], "FILE": batch_file(tmp_path, args[0]) if "FILE" in args else None,
             "GIFT": pending_gift(members, B, "2025-03-06") if "GIFT" in args else None}
    args = tuple(given.get(a) or a for a in args)
    before = ledgers(members)
    for where in ("after", "before"):
        full = (*args, *AT, "--table", "nope", "--json") if where == "after" else \
            ("--table", "nope", *args, *AT, "--json")
        r = members(*full)
        assert r.exit_code == 2 and r.stdout == "", (label, r.exit_code, r.stdout, r.stderr)
        err = err_of(r)
        assert err["code"] == 2 and err["kind"] == "unknown-table", (label, err)
        command = args[0]
        if command in render.UNTABLED:
            assert "it has no tables" in err["message"], err
        else:
            assert "its tables: " in err["message"], err
        assert ledgers(members) == before, label
    r = members(*args, *AT, "--table", "nope")
    assert r.exit_code == 2 and r.stderr.startswith("error: --table: ") and r.stdout == ""
    if writes:  # not vacuous: the same command without --table does write
        members(*args, *AT)
        assert ledgers(members) != before, label
