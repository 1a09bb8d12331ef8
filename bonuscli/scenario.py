"""Scenario files: stories of members and commands with expected results
(`bonuscli check --scenario FILE...`). Format: docs/ci.md.

Owns: reading a scenario (YAML nodes, so every problem and every failure names
its `file:line`), running each step through the same request layer and
service as the command line (on a MemoryStore: the same parser, chain and
rules, no files), comparing the JSON document the command would print with the
step's `expect`, and the pass/fail report as values. Imports model, requests,
render, catalog, service; yaml lazily.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Optional

from bonuscli import render
from bonuscli.commands import COMMANDS as REGISTRY
from bonuscli.commands import Scenario as Spec
from bonuscli.model import BadInput, BonusError, FilesError, Problem, normalize_phone, zone, Record
from bonuscli.requests import when as rq_when


# how a step spells each command: the writing commands as the registry declares them
# (commands.COMMANDS), then the commands that only read
COMMANDS = {name: cmd.scenario for name, cmd in REGISTRY.items()}
COMMANDS.update({
    "balance": Spec(("phone",), {}, {}, ("phone",)),
    "forecast": Spec(("phone",), {"days": "--days", "until": "--until"}, {}, ("phone",)),
    "history": Spec(("phone",), {}, {}, ("phone",), output="lines"),
    "calc": Spec(("amount",), {"category": "--category", "tenure_months": "--tenure-months",
                               "customer_since": "--customer-since", "card_last_month": "--card-last-month"},
                 {}, ("amount", "category"), phone_keys=()),
    "catalog": Spec(("code",), {"region": "--region", "category": "--category", "search": "--search",
                                "max_price": "--max-price", "channel": "--channel"}, {}, (), phone_keys=()),
    "sms": Spec(("phone", "text"), {"region": "--region"}, {}, ("phone", "text")),
    "ussd": Spec(("phone", "code"), {"region": "--region"}, {}, ("phone", "code")),
})
STEP_KEYS = ("at", "expect", "as", "note")
TOP_KEYS = ("name", "description", "catalog", "catalog_overrides", "members", "steps")
MEMBER_KEYS = ("region", "method", "customer_since", "email", "birth_date", "referrer", "services")
JOIN_DEFAULTS = ("region", "method", "customer_since", "email", "birth_date", "referrer", "services")
SPECIAL = ("exit", "error_kind", "error_contains")
MISSING = object()


class Step(Record):
    line: int
    index: int  # 1-based
    at: str
    command: str
    args: tuple  # the command line after `bonuscli`, without --at/--json (as shown in failures)
    label: Optional[str]
    gift_ref: Optional[str]  # accept: a label or a gift id, resolved when run
    expect: dict  # key -> (line, value)
    expect_exit: Optional[int]
    values: dict = {}  # key -> the text given (flags: booleans)


class Scenario(Record):
    path: str
    name: str
    catalog: Optional[Path]  # None: the catalog in use
    overrides: list  # [(line, dotted key, value)]
    steps: list


class Failure(Record):
    file: str
    line: int
    step: int
    command: str
    field: str
    expected: object
    got: object
    message: str


# ---------------------------------------------------------------- reading


def _plain(node):
    """A YAML node as plain data; timestamps stay the text that was written."""
    import yaml

    if isinstance(node, yaml.MappingNode):
        return {_plain(k): _plain(v) for k, v in node.value}
    if isinstance(node, yaml.SequenceNode):
        return [_plain(v) for v in node.value]
    if node.tag == "tag:yaml.org,2002:timestamp":
        return node.value
    return yaml.constructor.SafeConstructor().construct_object(node)


def _line(node) -> int:
    return node.start_mark.line + 1


def _scalar_text(node, key, problems, path):
    """A command argument as the text a user would type; lists join with commas."""
    import yaml

    if isinstance(node, yaml.ScalarNode):
        value = _plain(node)
        if value is None:
            return None
        if isinstance(value, bool):
            return "true" if value else "false"
        return node.value
    if isinstance(node, yaml.SequenceNode) and all(isinstance(v, yaml.ScalarNode) for v in node.value):
        return ",".join(v.value for v in node.value)
    problems.append(Problem(path, _line(node), f"{key}: give a single value"))
    return None


def _mapping(node):
    """{key: (key_node, value_node)} of a mapping node, keys as text."""
    return {str(_plain(k)): (k, v) for k, v in node.value}


MAX_DEPTH = 64  # as catalogs (catalog.MAX_DEPTH, which `_too_deep` counts against)


def _too_deep(text: str):
    """The line where a scenario's nesting goes deeper than catalog.MAX_DEPTH, else None (a scenario
    nests a handful of levels; `[[[[...` thousands deep is bad input, never a crash)."""
    from bonuscli.catalog import deep_line

    return deep_line(text)


def parse(path: str, text: str):
    """(Scenario or None, [Problem]) for a scenario file's text."""
    import yaml

    deep = _too_deep(text)
    if deep is not None:
        return None, [Problem(path, deep, f"nested more than {MAX_DEPTH} levels deep (a scenario needs a few)")]
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        root = yaml.compose(text, Loader=loader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        return None, [Problem(path, mark.line + 1 if mark else 1, f"malformed YAML: {e.problem or e.context}")]
    except yaml.YAMLError as e:
        return None, [Problem(path, 1, f"malformed YAML: {e}")]
    except RecursionError:  # the pure-Python composer recurses; MAX_DEPTH keeps it far from the limit
        return None, [Problem(path, 1, f"nested more than {MAX_DEPTH} levels deep (a scenario needs a few)")]
    try:
        return _parse_root(path, root)
    except RecursionError:
        return None, [Problem(path, 1, f"nested more than {MAX_DEPTH} levels deep (a scenario needs a few)")]


def _parse_root(path: str, root):
    import yaml

    problems: list = []
    if root is None:
        return None, [Problem(path, 1, "the scenario is empty; it needs `steps:`")]
    if not isinstance(root, yaml.MappingNode):
        return None, [Problem(path, _line(root), "a scenario is a mapping with `steps:` (and optional name, catalog, "
                                                 "catalog_overrides, members)")]
    top = _mapping(root)
    for key, (knode, _) in top.items():
        if key not in TOP_KEYS:
            problems.append(Problem(path, _line(knode), f"unknown key '{key}' (a scenario has: {', '.join(TOP_KEYS)})"))
    name = Path(path).stem
    if "name" in top:
        name = str(_plain(top["name"][1]))
    catalog = None
    if "catalog" in top:
        value = _plain(top["catalog"][1])
        if not isinstance(value, str) or not value.strip():
            problems.append(Problem(path, _line(top["catalog"][1]), "catalog: give a path relative to this file"))
        else:
            catalog = (Path(path).parent / value).resolve() if not os.path.isabs(value) else Path(value)
            if not catalog.is_file():
                problems.append(Problem(path, _line(top["catalog"][1]), f"catalog: no such file {value}"))
    overrides = []
    if "catalog_overrides" in top:
        node = top["catalog_overrides"][1]
        if not isinstance(node, yaml.MappingNode):
            problems.append(Problem(path, _line(node), "catalog_overrides: a mapping of dotted catalog keys to values, "
                                                       "e.g. gifts.per_day: 2"))
        else:
            for knode, vnode in node.value:
                overrides.append((_line(knode), str(_plain(knode)), _plain(vnode)))
    members = {}
    if "members" in top:
        node = top["members"][1]
        if not isinstance(node, yaml.MappingNode):
            problems.append(Problem(path, _line(node), "members: a mapping of phone -> {region, method, ...}"))
        else:
            for knode, vnode in node.value:
                try:
                    phone = normalize_phone(knode.value)
                except BadInput as e:
                    problems.append(Problem(path, _line(knode), f"members: {e.message}"))
                    continue
                if not isinstance(vnode, yaml.MappingNode):
                    problems.append(Problem(path, _line(vnode), f"members: {phone}: give a mapping of "
                                                                f"{', '.join(MEMBER_KEYS)}"))
                    continue
                entry = {}
                for k, (kn, vn) in _mapping(vnode).items():
                    if k not in MEMBER_KEYS:
                        problems.append(Problem(path, _line(kn), f"members: {phone}: unknown key '{k}' "
                                                                 f"(known: {', '.join(MEMBER_KEYS)})"))
                        continue
                    entry[k] = _scalar_text(vn, k, problems, path)
                members[phone] = entry
    steps = []
    if "steps" not in top:
        problems.append(Problem(path, _line(root), "the scenario has no `steps:`"))
    else:
        node = top["steps"][1]
        if not isinstance(node, yaml.SequenceNode) or not node.value:
            problems.append(Problem(path, _line(node), "steps: give a list of steps (each with `at` and one command)"))
        else:
            labels: set = set()
            for i, snode in enumerate(node.value, start=1):
                step = _parse_step(path, i, snode, members, labels, problems)
                if step is not None:
                    steps.append(step)
    if problems:
        return None, problems
    return Scenario(path, name, catalog, overrides, steps), []


def available() -> list:
    return list(COMMANDS)


def _parse_step(path, index, snode, members, labels, problems):
    import yaml

    line = _line(snode)
    if not isinstance(snode, yaml.MappingNode):
        problems.append(Problem(path, line, f"step {index}: a step is a mapping with `at`, one command and "
                                            "optional `expect`"))
        return None
    keys = _mapping(snode)
    bad = False
    at = None
    if "at" not in keys:
        problems.append(Problem(path, line, f"step {index}: missing `at` (the step's ISO date or date-time)"))
        bad = True
    else:
        at_node = keys["at"][1]
        at = at_node.value if isinstance(at_node, yaml.ScalarNode) else ""
        try:
            rq_when(at, zone("Europe/Moscow"))
        except BadInput:
            problems.append(Problem(path, _line(at_node), f"step {index}: at: not an ISO date or date-time: {at!r}"))
            bad = True
    commands = [k for k in keys if k not in STEP_KEYS]
    if not commands:
        problems.append(Problem(path, line, f"step {index}: no command (one of: {', '.join(available())})"))
        return None
    if len(commands) > 1:
        problems.append(Problem(path, _line(keys[commands[1]][0]),
                                f"step {index}: one command per step (found {', '.join(commands)})"))
        return None
    command = commands[0]
    cnode_key, cnode = keys[command]
    if command not in COMMANDS:
        problems.append(Problem(path, _line(cnode_key), f"step {index}: unknown command '{command}' "
                                                        f"(commands: {', '.join(available())})"))
        return None
    spec = COMMANDS[command]
    values = {}
    if isinstance(cnode, yaml.MappingNode):
        for k, (kn, vn) in _mapping(cnode).items():
            if k not in spec.positional and k not in spec.options and k not in spec.flags:
                known = list(spec.positional) + list(spec.options) + list(spec.flags)
                problems.append(Problem(path, _line(kn), f"step {index}: {command}: unknown key '{k}' "
                                                         f"(known: {', '.join(known)})"))
                bad = True
                continue
            if k in spec.flags:
                v = _plain(vn)
                if not isinstance(v, bool):
                    problems.append(Problem(path, _line(vn), f"step {index}: {command}: {k} must be true or false"))
                    bad = True
                values[k] = v
            else:
                values[k] = _scalar_text(vn, k, problems, path)
    elif isinstance(cnode, yaml.ScalarNode) and len(spec.required) == 1 and cnode.value != "":
        values[spec.required[0]] = cnode.value
    elif isinstance(cnode, yaml.ScalarNode) and not spec.required and _plain(cnode) is None:
        pass
    else:
        problems.append(Problem(path, _line(cnode), f"step {index}: {command}: give a mapping of "
                                                    f"{', '.join(spec.positional + tuple(spec.options))}"))
        return None
    # members: shorthand for join options (and the region an sms/ussd join needs)
    phone = values.get("phone")
    norm = None
    if phone is not None and "phone" in spec.phone_keys:
        try:
            norm = normalize_phone(phone)
        except BadInput:
            norm = None  # the command itself will say so (exit 2), which a step may expect
    member = members.get(norm, {}) if norm else {}
    if command == "join":
        for k in JOIN_DEFAULTS:
            if k not in values and member.get(k) is not None:
                values[k] = member[k]
    if command in ("sms", "ussd") and "region" not in values and member.get("region") is not None:
        values["region"] = member["region"]
    for k in spec.required:
        if values.get(k) is None:
            hint = " (in the step or under `members:`)" if command == "join" else ""
            problems.append(Problem(path, _line(cnode), f"step {index}: {command} needs {k}{hint}"))
            bad = True
    label = None
    if "as" in keys:
        label = str(_plain(keys["as"][1]))
        if label in labels:
            problems.append(Problem(path, _line(keys["as"][1]), f"step {index}: label '{label}' is used twice"))
            bad = True
        labels.add(label)
    expect, expect_exit = {}, None
    if "expect" in keys:
        enode = keys["expect"][1]
        if not isinstance(enode, yaml.MappingNode):
            problems.append(Problem(path, _line(enode), f"step {index}: expect: a mapping of output fields to values"))
            bad = True
        else:
            for kn, vn in enode.value:
                k = str(_plain(kn))
                v = _plain(vn)
                if k == "exit":
                    if not isinstance(v, int) or isinstance(v, bool) or v not in (0, 1, 2, 3):
                        problems.append(Problem(path, _line(vn), f"step {index}: expect: exit must be 0, 1, 2 or 3"))
                        bad = True
                    expect_exit = v
                    continue
                if k in ("error_kind", "error_contains") and not isinstance(v, str):
                    problems.append(Problem(path, _line(vn), f"step {index}: expect: {k} must be a text"))
                    bad = True
                expect[k] = (_line(kn), v)
    if bad:
        return None
    args = [command]
    gift_ref = None
    for k in spec.positional:
        if values.get(k) is None:
            continue
        if command == "accept" and k == "gift":
            gift_ref = values[k]
            args.append(values[k])  # replaced when run if it names a label
            continue
        args.append(values[k])
    for k, opt in spec.options.items():
        if values.get(k) is not None:
            args += [opt, values[k]]
    for k, flag in spec.flags.items():
        if values.get(k):
            args.append(flag)
    args += list(spec.extra)
    return Step(line, index, at, command, tuple(args), label, gift_ref, expect, expect_exit, dict(values))


def load(path: str):
    """(Scenario or None, problems) for a scenario file."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return None, [Problem(path, 1, "no such scenario file")]
    except OSError as e:
        return None, [Problem(path, 1, f"cannot read the scenario file: {e.strerror or e}")]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        return None, [Problem(path, data[: e.start].count(b"\n") + 1, "the scenario file is not UTF-8 text")]
    return parse(path, text)


# ---------------------------------------------------------------- the catalog a scenario runs against


def _set_dotted(doc, key: str, value):
    """Set `a.b.c` in a plain YAML document; list items are found by index or by their `code`."""
    parts = key.split(".")
    cur = doc
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(cur, list):
            idx = None
            if part.lstrip("-").isdigit() and -len(cur) <= int(part) < len(cur):
                idx = int(part)
            else:
                idx = next((n for n, item in enumerate(cur) if isinstance(item, dict) and item.get("code") == part), None)
            if idx is None:
                raise KeyError(".".join(parts[: i + 1]))
            if last:
                cur[idx] = value
            else:
                cur = cur[idx]
        elif isinstance(cur, dict):
            if last:
                cur[part] = value
            elif part not in cur or not isinstance(cur[part], (dict, list)):
                raise KeyError(".".join(parts[: i + 1]))
            else:
                cur = cur[part]
        else:
            raise KeyError(".".join(parts[:i]))


def catalog_for(sc: Scenario, default: Path):
    """(the Catalog to run with, problems)."""
    from bonuscli import catalog as catalog_mod

    base = sc.catalog or default
    shown = str(base)
    try:
        cat, probs = catalog_mod.validate(base, shown)
    except FilesError as e:
        return None, [Problem(sc.path, 1, f"catalog: {e.message}")]
    if probs:
        return None, [Problem(p.path, p.line, p.message) for p in probs]
    if not sc.overrides:
        return cat, []
    import yaml

    doc = yaml.safe_load(base.read_text(encoding="utf-8"))
    problems = []
    for line, key, value in sc.overrides:
        try:
            _set_dotted(doc, key, value)
        except KeyError as e:
            problems.append(Problem(sc.path, line, f"catalog_overrides: the catalog has no {e.args[0]}"))
    if problems:
        return None, problems
    text = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
    shown = f"{shown} with catalog_overrides"
    parsed, probs = catalog_mod.parse_yaml(text, shown)
    if not probs:
        cat, probs = catalog_mod.problems(parsed, shown)
    if probs:
        first = sc.overrides[0][0]
        return None, [Problem(sc.path, first, f"catalog_overrides make the catalog invalid: {p.message}") for p in probs]
    return cat, []


# ---------------------------------------------------------------- running


class Outcome(Record):
    exit_code: int
    doc: object  # the JSON document the command prints (MISSING when none)
    error: Optional[dict]  # {code, kind, message}


def _int(text, what, lo=0, hi=None):
    try:
        n = int(str(text).strip())
    except ValueError:
        raise BadInput(f"{what} must be a whole number (got {text!r})", "usage")
    if n < lo or (hi is not None and n > hi):
        raise BadInput(f"{what} must be between {lo} and {hi}" if hi is not None else f"{what} must be at least {lo}",
                       "usage")
    return n


def execute(svc, command: str, v: dict, now):
    """One step's command, through the request layer and the service: the document `--json` prints."""
    from bonuscli import requests as rq
    from bonuscli import service as service_mod

    cat = svc.catalog
    g = v.get
    cmd = REGISTRY.get(command)
    if cmd is not None:  # a writing command: built and run as every entry point runs it
        request = cmd.build(cat, v, now.date() if cmd.dated else None)  # `now` is in program time
        return svc.run(command, request, now, dry_run=bool(g("dry_run")))
    if command == "balance":
        return svc.balance(rq.phone(g("phone")), now)
    if command == "forecast":
        if g("days") is not None and g("until") is not None:
            raise BadInput("give --days or --until, not both", "usage")
        days = _int(g("days"), "--days", 0, 36600) if g("days") is not None else None
        until = rq.date(g("until"), "--until") if g("until") else None
        return svc.forecast(rq.phone(g("phone")), now, days, until)
    if command == "history":
        return svc.history(rq.phone(g("phone")), now)
    if command == "calc":
        months = _int(g("tenure_months"), "--tenure-months") if g("tenure_months") is not None else None
        return service_mod.calc(cat, now, g("amount"), g("category"), months, g("customer_since"), g("card_last_month"))
    if command == "catalog":
        region = rq.region(cat, g("region")) if g("region") is not None else None
        if g("code") is not None:
            doc = service_mod.reward_json(cat, cat.rewards[rq.reward(cat, g("code"))], region)
            if region:
                doc["region"] = region
            return doc
        max_price = _int(g("max_price"), "--max-price") if g("max_price") is not None else None
        return service_mod.catalog_rows(cat, region, g("category"), g("search"), max_price, g("channel"))
    if command in ("sms", "ussd"):
        doc, error = svc.operator(g("phone"), g("text") if command == "sms" else g("code"), g("region"), command, now)
        if error is not None:
            error.doc = doc
            raise error
        return doc
    raise BadInput(f"unknown command {command}", "usage")


def invoke(svc, step: Step, values: dict) -> Outcome:
    """Run one step as `bonuscli ... --at AT --json` would, and what it would print."""
    from bonuscli import render

    try:
        now = rq_when(step.at, svc.catalog.tz)
        doc = execute(svc, step.command, values, now)
    except BonusError as e:
        doc = getattr(e, "doc", None)
        return Outcome(e.exit_code, json.loads(render.dumps(doc)) if doc is not None else MISSING,
                       {"code": e.exit_code, "kind": e.kind, "message": e.message})
    except Exception as e:  # the CLI's promise: an internal error is exit 3, never a traceback
        return Outcome(3, MISSING, {"code": 3, "kind": "internal", "message": f"{type(e).__name__}: {e}"})
    return Outcome(0, json.loads(render.dumps(doc)), None)


def shown_command(step: Step, args) -> str:
    import shlex

    return "bonuscli " + " ".join(shlex.quote(str(a)) for a in args) + f" --at {step.at}"


def lookup(doc, dotted: str):
    """The value at a dotted path (`next_expiry.points`, `lots.0.points`, `lots.length`), or MISSING."""
    cur = doc
    for part in dotted.split("."):
        if isinstance(cur, dict):
            if part not in cur:
                return MISSING
            cur = cur[part]
        elif isinstance(cur, list):
            if part == "length":
                cur = len(cur)
            elif part.lstrip("-").isdigit() and -len(cur) <= int(part) < len(cur):
                cur = cur[int(part)]
            else:
                return MISSING
        else:
            return MISSING
    return cur


def _number(v):
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float, Decimal)):
        return Decimal(str(v))
    if isinstance(v, str):
        try:
            return Decimal(v.strip())
        except InvalidOperation:
            return None
    return None


def matches(expected, got) -> bool:
    """Exact, with two conveniences: a number also matches a decimal text of the same
    value (`coefficient: 1.1` matches "1.1", `amount: 10` matches "10.00"), and a
    mapping matches when each of its keys matches."""
    if expected is None or isinstance(expected, bool):
        return got is expected
    if isinstance(expected, (int, float)):
        a, b = _number(expected), _number(got)
        return b is not None and not isinstance(got, bool) and a == b
    if isinstance(expected, str):
        return isinstance(got, str) and got == expected
    if isinstance(expected, (dt.date, dt.datetime)):
        return isinstance(got, str) and got == expected.isoformat()
    if isinstance(expected, list):
        return isinstance(got, list) and len(got) == len(expected) and all(matches(e, g) for e, g in zip(expected, got))
    if isinstance(expected, dict):
        return isinstance(got, dict) and all(k in got and matches(v, got[k]) for k, v in expected.items())
    return expected == got


def show(value) -> str:
    if value is MISSING:
        return "(not in the output)"
    return json.dumps(value, ensure_ascii=False, default=str)


class Result(Record):
    path: str
    name: str
    steps: int
    passed: int
    failures: list
    problems: list

    @property
    def status(self) -> str:
        return "invalid" if self.problems else ("pass" if not self.failures else "fail")


def check_step(sc: Scenario, step: Step, args, got: Outcome) -> list:
    cmd = shown_command(step, args)
    fails = []

    def fail(field, expected, value, message):
        fails.append(Failure(sc.path, step.line, step.index, cmd, field, expected, value, message))

    want_exit = step.expect_exit
    if want_exit is None:
        want_exit = None if "error_kind" in step.expect or "error_contains" in step.expect else 0
    err_text = f" ({got.error['kind']}: {got.error['message']})" if got.error else ""
    if want_exit is None:
        if got.exit_code == 0:
            fail("exit", "non-zero", 0, "expected a refusal, got exit 0")
    elif got.exit_code != want_exit:
        fail("exit", want_exit, got.exit_code, f"exit: expected {want_exit}, got {got.exit_code}{err_text}")
        return fails  # the fields of a failed command say nothing more
    for key, (_line, expected) in step.expect.items():
        if key == "error_kind":
            value = got.error.get("kind") if got.error else MISSING
            if value != expected:
                fail(key, expected, value, f"error_kind: expected {show(expected)}, got {show(value)}{err_text}")
            continue
        if key == "error_contains":
            value = got.error.get("message") if got.error else MISSING
            if value is MISSING or expected not in value:
                fail(key, expected, value, f"error message: expected it to contain {show(expected)}, got {show(value)}")
            continue
        value = lookup(got.doc, key) if got.doc is not MISSING else MISSING
        if not matches(expected, value):
            fail(key, expected, value, f"{key}: expected {show(expected)}, got {show(value)}")
    return fails


def play(sc: Scenario, cat, check=True) -> tuple:
    """Run every step in memory; (passed steps, failures, the service it ran on)."""
    from bonuscli import service as service_mod

    svc = service_mod.in_memory(cat)
    labels: dict = {}
    passed, failures = 0, []
    for step in sc.steps:
        args, values = list(step.args), dict(step.values)
        if step.gift_ref is not None and step.gift_ref in labels:
            saved = labels[step.gift_ref]
            gid = lookup(saved, "gift_id")
            if gid is MISSING:
                gid = lookup(saved, "result.gift_id")
            resolved = str(gid) if gid is not MISSING and gid is not None else step.gift_ref
            args[2] = values["gift"] = resolved
        got = invoke(svc, step, values)
        if step.label is not None:
            labels[step.label] = got.doc if got.doc is not MISSING else {}
        if not check:
            continue
        fails = check_step(sc, step, args, got)
        if fails:
            failures.extend(fails)
        else:
            passed += 1
    return passed, failures, svc


def run_one(path: str, default_catalog: Path) -> Result:
    sc, problems = load(path)
    if sc is None:
        return Result(path, Path(path).stem, 0, 0, [], problems)
    cat, problems = catalog_for(sc, Path(default_catalog))
    if cat is None:
        return Result(path, sc.name, len(sc.steps), 0, [], problems)
    passed, failures, _svc = play(sc, cat)
    return Result(path, sc.name, len(sc.steps), passed, failures, [])


# ---------------------------------------------------------------- the report


def result_json(r: Result) -> dict:
    return {"file": r.path, "name": r.name, "result": r.status, "steps": r.steps, "passed": r.passed,
            "failures": [{"file": f.file, "line": f.line, "step": f.step, "command": f.command, "field": f.field,
                          "expected": None if f.expected is MISSING else f.expected,
                          "got": None if f.got is MISSING else f.got, "message": f.message}
                         for f in r.failures],
            "problems": [{"path": p.path, "line": p.line, "message": p.message} for p in r.problems]}


def human(results) -> str:
    rows = [[r.path, r.name, f"{r.passed}/{r.steps}" if not r.problems else "-",
             {"pass": "pass", "fail": "FAIL", "invalid": "INVALID"}[r.status]] for r in results]
    text = render.table(rows, ["scenario", "name", "steps", "result"])
    for r in results:
        by_step: dict = {}
        for f in r.failures:
            by_step.setdefault((f.line, f.step, f.command), []).append(f)
        for (line, index, cmd), fs in by_step.items():
            text += f"\n\nFAIL {r.path}:{line}: step {index}: {cmd}"
            for f in fs:
                text += f"\n  {f.message}"
    n = len(results)
    passed = sum(1 for r in results if r.status == "pass")
    failed = sum(1 for r in results if r.status == "fail")
    invalid = sum(1 for r in results if r.status == "invalid")
    text += f"\n\n{n} scenario{'s' if n != 1 else ''}: {passed} passed, {failed} failed"
    if invalid:
        text += f", {invalid} invalid"
    return text


def results_json(results) -> dict:
    failed = [r for r in results if r.status == "fail"]
    invalid = [r for r in results if r.status == "invalid"]
    return {"scenarios": [result_json(r) for r in results],
            "total": {"scenarios": len(results), "passed": len(results) - len(failed) - len(invalid),
                      "failed": len(failed), "invalid": len(invalid)},
            "ok": not failed and not invalid}
