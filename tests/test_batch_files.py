"""Issue 16, items 2-4: `--from` files are read strictly, one bad row never stops a batch, and the
summary counts exactly what was written.

CLI.md `earn --from`: a malformed file (a stray quote, a wrong header) is named with its line and
never swallows rows; `line` is the 1-based line of the input file, header included. A BOM and CRLF
line ends are accepted, empty lines skipped. JSON lines: a bad line is its own problem.
"""

from __future__ import annotations

import json

import pytest

from bonuscli import batch
from bonuscli.model import BadInput

A, B, C = "9161234567", "9167654321", "9031112233"


def error_of(r) -> dict:
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, r.stderr[:2000]
    return json.loads(lines[0])["error"]


def tree(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def members(run, data_dir):
    for p in (A, B, C):
        run.ok("join", p, "--region", "RU-MOW", "--at", "2025-03-01T10:00")
    return data_dir


def from_file(run, tmp_path, kind, content, at="2025-03-02T12:00", env=None, name=None):
    f = tmp_path / (name or f"{kind}.csv")
    f.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    r = run(kind, "--from", f, "--at", at, "--json", env=env)
    return r, json.loads(r.stdout) if r.stdout.strip() else None


def balance(run, phone, at="2025-03-05"):
    return run.j("balance", phone, "--at", at)["available"]


def refs(run, phone, at="2025-03-05"):
    out = [json.loads(line) for line in run.ok("history", phone, "--json", "--at", at).stdout.split("\n") if line]
    return [e["ref"] for e in out if e.get("ref")]


def lines_refs(s, code=None):
    return [(p["line"], p["ref"]) for p in s["problems"] if code is None or p["code"] == code]


# ---------------------------------------------------------------- item 2: strict CSV


def test_a_stray_quote_is_its_lines_problem_and_swallows_nothing(run, members, tmp_path):
    text = ("phone,amount,category,ref\n"    # 1
            f"{A},500,mobile,q1\n"           # 2 applied
            f"{A},\"20,mobile,q2\n"          # 3 a quote never closed: this line only
            f"{A},100,mts_store,q3\n"        # 4 applied (before: swallowed into line 3's amount)
            f"{B},500,mobile,q4\n")          # 5 applied
    r, s = from_file(run, tmp_path, "earn", text)
    assert r.exit_code == 2, r.stderr
    assert error_of(r)["kind"] == "bad-rows"
    assert (s["rows"], s["applied"], s["errors"]) == (4, 3, 1)
    assert [(p["line"], p["code"]) for p in s["problems"]] == [(3, 2)]
    assert "quote" in s["problems"][0]["message"]
    assert refs(run, A) == ["q1", "q3"] and refs(run, B) == ["q4"]


@pytest.mark.parametrize("bad", [
    '{a},100,mobile,ab"c',              # a quote inside an unquoted field
    '{a},"100"x,mobile,r',              # text after a closing quote
    '{a},100,mobile,"r',                # a quote not closed on its line
    '{a},100,mobile,"multi',            # (a quoted field holding a newline is not a batch row)
])
def test_malformed_quoting_is_refused_line_by_line(run, members, tmp_path, bad):
    text = "phone,amount,category,ref\n" + bad.format(a=A) + f"\n{A},100,mobile,ok1\nline\"\n{B},100,mobile,ok2\n"
    r, s = from_file(run, tmp_path, "earn", text)
    assert r.exit_code == 2, r.stderr
    assert [p["line"] for p in s["problems"]] == [2, 4]  # line 4 `line"` is a row of its own, and bad too
    assert s["applied"] == 2
    assert refs(run, A) == ["ok1"] and refs(run, B) == ["ok2"]


def test_valid_quoting_is_read(run, members, tmp_path):
    text = ('phone,amount,category,ref\n'
            '"+7 916 123-45-67","500",mobile,"with ""quotes"", and a comma"\n'
            f'{B},"100.50",mobile,""\n')  # an empty ref: refused like the single command's
    r, s = from_file(run, tmp_path, "earn", text)
    assert r.exit_code == 2 and s["applied"] == 1
    assert refs(run, A) == ['with "quotes", and a comma']
    assert lines_refs(s) == [(3, "")]


def test_bom_crlf_and_empty_lines(run, members, tmp_path):
    text = ("\ufeffphone,amount,category,ref\r\n"   # 1 (a BOM: before, the column read '\ufeffphone')
            "\r\n"                                  # 2 empty: skipped
            f"{A},500,mobile,c1\r\n"                # 3
            "   \r\n"                               # 4 blank: skipped
            f"{A},abc,mobile,c2\r\n"                # 5 malformed: named by its line of the file
            ",,,\r\n"                               # 6 empty fields only: skipped
            f"{B},100,mts_store,c3\r\n")            # 7
    r, s = from_file(run, tmp_path, "earn", text)
    assert r.exit_code == 2, r.stderr
    assert (s["rows"], s["applied"], s["errors"]) == (3, 2, 1)
    assert lines_refs(s) == [(5, "c2")]
    assert refs(run, A) == ["c1"] and refs(run, B) == ["c3"]  # no '\r' kept in a ref


def test_bom_crlf_from_stdin(run, members):
    text = f"\ufeffphone,amount,category,ref\r\n{A},500,mobile,s1\r\n"
    r = run("earn", "--from", "-", "--at", "2025-03-02T12:00", "--json", input=text)
    assert r.exit_code == 0, r.stderr
    assert refs(run, A) == ["s1"]


@pytest.mark.parametrize("header, words", [
    ("phone,amount,categori,ref", "missing category"),
    ("phone;amount;category;ref", "missing"),
    ('phone,"amount,category,ref', "unreadable CSV header"),
    ("phone,amount,category,ref,ref", "more than once"),
])
def test_a_wrong_header_is_a_file_error_naming_line_1(run, members, tmp_path, header, words):
    before = tree(members)
    f = tmp_path / "bad.csv"
    f.write_text(f"{header}\n{A},500,mobile,h1\n", encoding="utf-8")
    r = run("earn", "--from", f, "--at", "2025-03-02T12:00", "--json")
    assert r.exit_code == 2, r.stderr
    err = error_of(r)
    assert err["kind"] in ("bad-header", "bad-file") and err["message"].startswith(f"{f}:1: "), err
    assert words in err["message"]
    assert tree(members) == before


def test_a_header_after_empty_lines_is_named_by_its_line(run, members, tmp_path):
    f = tmp_path / "late.csv"
    f.write_text(f"\n\nphone,amount\n{A},500\n", encoding="utf-8")
    r = run("earn", "--from", f, "--json")
    assert r.exit_code == 2
    assert error_of(r)["message"].startswith(f"{f}:3: ")


def test_too_many_fields_is_that_rows_problem(run, members, tmp_path):
    r, s = from_file(run, tmp_path, "earn", f"phone,amount,category,ref\n{A},500,mobile,x1,extra\n{A},5,taxi,x2\n")
    assert r.exit_code == 2 and lines_refs(s) == [(2, None)] and s["applied"] == 1


# ---------------------------------------------------------------- item 2: JSON lines


def test_json_lines_a_bad_line_is_its_own_problem(run, members, tmp_path):
    rows = [
        json.dumps({"phone": A, "amount": 500, "category": "mobile", "ref": "j1"}),          # 1 a number is fine
        '{"phone": "%s", "amount": "100", "category": "mobile", "ref": "j2"' % A,            # 2 not closed
        json.dumps({"phone": A, "amount": "100", "category": "mts_store", "ref": "j3"}),     # 3
        "[1, 2]",                                                                            # 4 not an object
        json.dumps({"phone": A, "amount": "100", "category": "taxi", "ref": ["j5"]}),        # 5 a list as ref
        json.dumps({"phone": A, "amount": "100", "category": "taxi", "ref": True}),          # 6 true as ref
        '{"phone": "%s", "amount": %s, "category": "taxi", "ref": "j7"}' % (A, "1" * 5000),  # 7 a huge number
        "",                                                                                  # 8 empty: skipped
        json.dumps({"phone": B, "amount": "10.10", "category": "taxi", "ref": "j9"}),        # 9
    ]
    r, s = from_file(run, tmp_path, "earn", "\r\n".join(rows) + "\r\n", name="rows.jsonl")
    assert r.exit_code == 2, r.stderr
    assert (s["rows"], s["applied"], s["errors"]) == (8, 3, 5)
    assert [p["line"] for p in s["problems"]] == [2, 4, 5, 6, 7]
    assert "amount" in s["problems"][4]["message"] and len(s["problems"][4]["message"]) < 300
    assert refs(run, A) == ["j1", "j3"] and refs(run, B) == ["j9"]


def test_json_lines_split_only_at_line_feeds(run, members, tmp_path):
    """A U+2028 or a U+0085 inside a JSON string is no line break (str.splitlines would split there)."""
    rows = [json.dumps({"phone": A, "points": 5, "reason": "a\u2028b\x85c", "ref": "u1"}, ensure_ascii=False),
            json.dumps({"phone": A, "points": "x", "reason": "bad", "ref": "u2"})]
    r, s = from_file(run, tmp_path, "adjust", "\n".join(rows) + "\n", name="adj.jsonl")
    assert lines_refs(s) == [(2, "u2")]
    assert refs(run, A) == ["u1"]


# ---------------------------------------------------------------- item 3: one bad row never stops a batch


def test_an_error_while_deciding_a_row_is_that_rows_problem(run, members, tmp_path, monkeypatch):
    spec = batch.SPECS["adjust"]

    def decide(cat, m, now, req):
        if req.ref == "boom":
            raise BadInput("this row cannot be decided", "bad-row")
        return spec.decide(cat, m, now, req)

    monkeypatch.setitem(batch.SPECS, "adjust", spec._replace(decide=decide))
    text = f"phone,points,reason,ref\n{A},10,a,r1\n{A},10,b,boom\n{A},10,c,r3\n{B},10,d,r4\n"
    r, s = from_file(run, tmp_path, "adjust", text)
    assert r.exit_code == 2, r.stderr
    assert (s["applied"], s["errors"]) == (3, 1)
    assert [(p["line"], p["ref"], p["code"]) for p in s["problems"]] == [(3, "boom", 2)]
    assert refs(run, A) == ["r1", "r3"] and refs(run, B) == ["r4"]


@pytest.mark.parametrize("kind, text", [
    ("adjust", "phone,points,reason,ref\n{a},10,a,r1\n{a},{huge},b,r2\n{a},-5,c,r3\n"),
    ("refund", "phone,ref,amount\n{a},e1,{huge}\n{a},e1,100\n{a},{huge},1\n"),
    ("earn", "phone,amount,category,ref\n{a},{huge},mobile,r2\n{a},100,taxi,r3\n{a},100,{huge},r4\n"),
])
def test_a_row_python_cannot_parse_never_aborts_the_batch(run, members, tmp_path, kind, text):
    run.ok("earn", A, "500", "--category", "mobile", "--ref", "e1", "--at", "2025-03-01T11:00")
    r, s = from_file(run, tmp_path, kind, text.format(a=A, huge="1" * 5000))
    assert r.exit_code == 2, r.stderr[:500]
    assert error_of(r)["kind"] == "bad-rows"
    assert s["applied"] == (2 if kind == "adjust" else 1)
    assert all(p["code"] == 2 for p in s["problems"]) and len(s["problems"]) == s["errors"]


# ---------------------------------------------------------------- item 4: the summary counts what was written


def check_summary_matches_ledgers(run, s, rows):
    """rows: [(line, phone, ref)]. A row is applied by the summary exactly when its ref is in the
    member's ledger afterwards; problems with code 3 name exactly the rows not written."""
    problem_lines = {p["line"] for p in s["problems"]}
    applied = [(line, phone, ref) for line, phone, ref in rows if line not in problem_lines]
    assert s["applied"] == len(applied), s
    for line, phone, ref in rows:
        assert (ref in refs(run, phone)) == (line not in problem_lines), (line, ref, s)
    assert {p["code"] for p in s["problems"]} <= {3}


DISK = {"BONUSCLI_FAULT_MODE": "oserror"}


@pytest.mark.parametrize("fault", ["before-write:1", "before-write:2", "before-fsync:1", "before-fsync:2",
                                   "after-fsync:1"])
def test_a_disk_error_during_a_batch_summary_matches_the_ledgers(run, members, tmp_path, fault):
    text = (f"phone,amount,category,ref\n{A},500,mobile,a1\n{A},100,taxi,a2\n{B},500,mobile,b1\n"
            f"{C},100,taxi,c1\n")
    r, s = from_file(run, tmp_path, "earn", text, env=dict(DISK, BONUSCLI_FAULT=fault))
    assert s is not None, r.stderr  # the summary is printed: one member's disk error is not the batch's end
    check_summary_matches_ledgers(run, s, [(2, A, "a1"), (3, A, "a2"), (4, B, "b1"), (5, C, "c1")])
    if s["problems"]:
        assert r.exit_code == 3 and error_of(r)["kind"] == "files"
    else:
        assert r.exit_code == 0
    if fault.startswith("before-write"):  # nothing of that member was written: its rows are code 3
        assert [p["line"] for p in s["problems"]] == ([2, 3] if fault.endswith(":1") else [4])
    # the batch can simply be run again: what was written is a duplicate, the rest applies
    r, s2 = from_file(run, tmp_path, "earn", text, at="2025-03-02T13:00")
    assert r.exit_code == 0 and s2["applied"] == len(s["problems"]) and s2["duplicates"] == s["applied"]
    assert (balance(run, A), balance(run, B), balance(run, C)) == (150 + 100 + 20, 150 + 100, 150 + 20)


@pytest.mark.parametrize("fault, applied", [("before-write:1", []), ("before-write:2", ["a1"]),
                                            ("before-fsync:1", []), ("before-fsync:2", [])])
def test_rows_written_before_a_disk_error_in_the_same_member_count_as_applied(run, members, tmp_path, fault,
                                                                              applied):
    """A member waiting on a gift's outcome has its rows written in two appends (the batch reads the
    other ledger again between rows of different moments): a disk error in the second write must
    leave the rows of the first counted as applied, as the ledger holds them. Both appends are made
    durable by one commit (ledger.Commit): when that fails, both are taken back and neither counts."""
    run.ok("gift", A, B, "10", "--at", "2025-03-01T12:00")
    text = (f"phone,amount,category,ref,at\n{A},500,mobile,a1,2025-03-02T10:00\n"
            f"{A},100,taxi,a2,2025-03-03T10:00\n")
    r, s = from_file(run, tmp_path, "earn", text, at="2025-03-04T12:00", env=dict(DISK, BONUSCLI_FAULT=fault))
    assert s is not None, r.stderr
    check_summary_matches_ledgers(run, s, [(2, A, "a1"), (3, A, "a2")])
    assert refs(run, A) == applied
    assert r.exit_code == (0 if len(applied) == 2 else 3)
