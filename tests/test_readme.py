"""The README's option and exit-code tables say what the CLI does (issue 24: they had left out
`--format`, the engines and the missing data directory)."""

from __future__ import annotations

import re

import click

from bonuscli.cli import GLOBAL_SPECS, cli
from conftest import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")


def _section(title):
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start:end]


def _first_cells(section):
    return [row.split("|")[1].strip() for row in section.splitlines() if row.startswith("| `")]


def test_every_global_option_is_in_the_readme_table():
    cells = " ".join(_first_cells(_section("Global options and environment")))
    for decls, _attrs in GLOBAL_SPECS:
        assert f"`{decls[0]}" in cells, f"{decls[0]} is missing from the README's global options table"


def test_every_engine_option_of_the_whole_directory_commands_is_in_the_readme():
    cells = " ".join(_first_cells(_section("Global options and environment")))
    ctx = click.Context(cli)
    for name in ("report", "check", "diff"):
        cmd = cli.get_command(ctx, name)
        opts = {o for p in cmd.params if isinstance(p, click.Option) for o in p.opts}
        for opt in ("--jobs", "--engine", "--scheduler"):
            assert opt in opts, (name, opt)
            assert f"`{opt}" in cells, f"{opt} is missing from the README"


def test_the_exit_code_table_has_each_code_and_its_main_cases():
    rows = {int(m.group(1)): m.group(2) for m in re.finditer(r"^\| (\d) \| (.*) \|$", _section("Exit codes"), re.M)}
    assert sorted(rows) == [0, 1, 2, 3]
    assert "data directory" in rows[2] and "`--catalog` file that does not exist" in rows[2]
    assert "ends before it starts" in rows[2]
    assert "lock" in rows[3] and "derived file" in rows[3]


def test_every_command_is_in_the_readme_commands_table():
    cells = " ".join(_first_cells(_section("Commands")))
    ctx = click.Context(cli)
    for name in cli.list_commands(ctx):
        if cli.get_command(ctx, name).hidden:
            continue
        assert f"`{name}" in cells, f"{name} is missing from the README's commands table"
