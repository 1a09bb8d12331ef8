"""The docs for people are executed, so they cannot drift from the tool.

1. Every command of the CLI is mentioned in README.md and has help text.
2. Every example in README.md, docs/rules.md and docs/scripting.md runs.
   The convention (also written down at the end of docs/scripting.md):

   - A fenced block marked ```console is a terminal session. A line starting
     with `$ ` is a command (a line ending in `\\` continues on the next line);
     the lines after it, up to the next `$ ` line or the end of the block, are
     exactly what the terminal shows: stdout and stderr as the command writes
     them (an error line on stderr included). Trailing whitespace and trailing
     blank lines are ignored.
   - Commands: `bonuscli ARGS` (run in-process with Click's CliRunner, after
     `shlex.split`), optionally preceded by `NAME=value` assignments;
     `export NAME=value` and `unset NAME` for the rest of the file; and
     `echo $?`, which prints the exit code of the command before it. A
     bonuscli command must exit 0 unless the next command is `echo $?`.
   - A fenced block whose info string is `LANG FILENAME` (e.g. ```csv payments.csv)
     writes that file into the working directory before the next commands run.
   - `...` on a line of its own stands for any number of lines (0 or more);
     inside a line it stands for any text. Use it rarely, for what cannot be
     stable (an absolute path).
   - Blocks marked ```sh, ```yaml, ```python (compiled, not run), ... are not
     executed: pipes, redirections and real shells go there.
   The blocks of one file run in order, in one fresh data directory
   (BONUSCLI_DATA_DIR is a temporary directory, the working directory an empty
   temporary one), with BONUSCLI_NOW fixed at 2025-03-01T12:00+03:00 unless
   the command gives --at.
3. Relative links of these docs point to files that exist.
(That completions/ matches `completion SHELL` is tests/test_completion.py's.)
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from bonuscli.cli import cli

ROOT = Path(__file__).resolve().parent.parent
NOW = "2025-03-01T12:00+03:00"
DOCS = ["README.md", "docs/rules.md", "docs/scripting.md", "docs/report.md"]
FENCE = re.compile(r"^```\s*([A-Za-z0-9_+-]*)(?:[ \t]+(\S+))?[ \t]*$")
ASSIGN = re.compile(r"^[A-Z_][A-Z0-9_]*=")


# ---------------------------------------------------------------- reading the docs


def fenced_blocks(text: str):
    """Yield (lang, name, first_line_number, lines) for each fenced block (``` only)."""
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if m and lines[i].startswith("```"):
            lang, name = m.group(1), m.group(2)
            start = i + 1
            j = start
            while j < len(lines) and lines[j].rstrip() != "```":
                j += 1
            assert j < len(lines), f"line {i + 1}: fenced block never closed"
            yield lang, name, start + 1, lines[start:j]
            i = j + 1
        else:
            i += 1


class Step:
    def __init__(self, kind, line, command=None, expected=None, name=None, content=None):
        self.kind, self.line, self.command = kind, line, command
        self.expected, self.name, self.content = expected or [], name, content


def steps_of(path: Path):
    """The executable steps of one doc file, in order."""
    out = []
    for lang, name, first, lines in fenced_blocks(path.read_text(encoding="utf-8")):
        if name is not None and lang != "console":
            out.append(Step("file", first - 1, name=name, content="\n".join(lines) + "\n"))
            continue
        if lang != "console":
            continue
        k = 0
        assert not lines or lines[0].startswith("$ "), f"{path.name}:{first}: a console block starts with `$ `"
        while k < len(lines):
            line_no = first + k
            command = lines[k][2:]
            k += 1
            while command.endswith("\\") and k < len(lines):
                command = command[:-1] + " " + lines[k].strip()
                k += 1
            expected = []
            exp_line = first + k
            while k < len(lines) and not lines[k].startswith("$ "):
                expected.append(lines[k])
                k += 1
            step = Step("cmd", line_no, command=command.strip(), expected=expected)
            step.expected_line = exp_line
            out.append(step)
    return out


def python_blocks(path: Path):
    return [(first, "\n".join(lines)) for lang, _n, first, lines in fenced_blocks(path.read_text(encoding="utf-8"))
            if lang == "python"]


# ---------------------------------------------------------------- comparing


def normalise(text: str) -> str:
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines)


def matches(expected: str, actual: str) -> bool:
    if "..." not in expected:
        return expected == actual
    parts = []
    for line in expected.split("\n"):
        if line == "...":
            parts.append(r"(?:[^\n]*\n)*?")
        else:
            parts.append("[^\\n]*?".join(re.escape(p) for p in line.split("...")) + r"\n")
    return re.fullmatch("".join(parts), actual + "\n") is not None


# ---------------------------------------------------------------- running


def run_doc(path: Path, workdir: Path, data_dir: Path, outputs=None):
    """Run the doc's steps; return a list of failure descriptions (empty when all agree).

    `outputs`, if a list, receives (step, actual output) for every command."""
    env = {"BONUSCLI_DATA_DIR": str(data_dir), "BONUSCLI_NOW": NOW, "BONUSCLI_CATALOG": None}
    steps = steps_of(path)
    failures = []
    last_code = 0
    for i, step in enumerate(steps):
        where = f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name}:{step.line}"
        if step.kind == "file":
            (workdir / step.name).write_text(step.content, encoding="utf-8")
            continue
        words = shlex.split(step.command)
        assert words, f"{where}: empty command"
        if words == ["echo", "$?"]:
            out = f"{last_code}\n"
        elif words[0] == "export":
            for w in words[1:]:
                k, _, v = w.partition("=")
                env[k] = v
            continue
        elif words[0] == "unset":
            for w in words[1:]:
                env[w] = None
            continue
        else:
            local = dict(env)
            while words and ASSIGN.match(words[0]):
                k, _, v = words.pop(0).partition("=")
                local[k] = v
            assert words and words[0] == "bonuscli", (
                f"{where}: `{step.command}` cannot run in a console block; put it in a ```sh block")
            result = CliRunner(env=local).invoke(cli, words[1:], catch_exceptions=False)
            out, last_code = result.output, result.exit_code
            nxt = steps[i + 1] if i + 1 < len(steps) else None
            checked = nxt is not None and nxt.kind == "cmd" and nxt.command == "echo $?"
            if last_code != 0 and not checked:
                failures.append(f"{where}: `{step.command}` exited {last_code} (add `$ echo $?` after it if "
                                f"that is the point)\n{out}")
                continue
        if outputs is not None:
            outputs.append((step, out))
        want, got = normalise("\n".join(step.expected)), normalise(out)
        if not matches(want, got):
            failures.append(f"{where}: `{step.command}`\n--- documented\n{want}\n--- actual\n{got}")
    return failures


@pytest.mark.parametrize("doc", DOCS)
def test_examples_run(doc, tmp_path, monkeypatch):
    path = ROOT / doc
    assert path.is_file(), f"{doc} is missing"
    assert any(s.kind == "cmd" for s in steps_of(path)), f"{doc} has no ```console example"
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    failures = run_doc(path, work, tmp_path / "doc-data")
    assert not failures, "\n\n".join(failures)


@pytest.mark.parametrize("doc", DOCS)
def test_python_snippets_compile(doc):
    for first, source in python_blocks(ROOT / doc):
        compile(source, f"{doc}:{first}", "exec")


# ---------------------------------------------------------------- the runner itself


def test_runner_catches_a_wrong_output(tmp_path, monkeypatch):
    """The doc runner must be able to fail: a wrong number, a missing exit-code check."""
    doc = tmp_path / "probe.md"
    doc.write_text("```console\n$ bonuscli calc 500 --category mobile --tenure-months 13 --json\n{\n"
                   '  "points": 121\n}\n$ bonuscli calc 500 --category utilities\n```\n', encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    failures = run_doc(doc, tmp_path, tmp_path / "d")
    assert len(failures) == 2
    assert '"points": 121' in failures[0] and '"points": 120' in failures[0]
    assert "exited 1" in failures[1]


def test_wildcards():
    assert matches("a\n...\nd", "a\nb\nc\nd")
    assert matches("a\n...\nd", "a\nd")
    assert matches("catalog   .../catalog.yaml", "catalog   /x/y/catalog.yaml")
    assert not matches("a\n...\nd", "a\nb\nc")
    assert not matches("points 120", "points 121")
    assert not matches("a ... z", "a b\nc z"), "an in-line ... stays on its line"


# ---------------------------------------------------------------- commands are documented


README = (ROOT / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("name", sorted(cli.commands))
def test_command_in_readme_and_has_help(name):
    cmd = cli.commands[name]
    assert (cmd.help or "").strip(), f"`{name}` has no help text"
    assert re.search(rf"`(?:bonuscli )?{re.escape(name)}\b", README), f"`{name}` is not mentioned in README.md"


def test_readme_starts_with_the_setup_block():
    head = README.split("\n")
    assert head[0] == "# bonuscli"
    assert head[2] == "```sh"
    assert "pip install '.[test]' && python -m pytest" in README.split("```", 2)[1]


@pytest.mark.parametrize("doc", DOCS)
def test_links_point_to_files_that_exist(doc):
    """Relative links (docs/ci.md, ../catalog.yaml, completions/) must resolve in the repository."""
    path = ROOT / doc
    text = path.read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if target.startswith(("http://", "https://", "#", "mailto:")):
            continue
        assert (path.parent / target.split("#")[0]).exists(), f"{doc} links to {target}, which does not exist"


# ---------------------------------------------------------------- the Python API's page runs


def test_every_python_example_of_docs_python_runs(tmp_path, monkeypatch):
    """docs/python.md's ```python blocks, in order, in one session (each asserts what it shows), in an
    empty working directory, with the environment the CLI reads set to nonsense: the API reads none."""
    import subprocess
    import sys

    text = (ROOT / "docs" / "python.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) >= 3
    script = tmp_path / "examples.py"
    script.write_text("\n".join(blocks) + "\nimport sys\nassert 'click' not in sys.modules, 'the API imported Click'\n")
    env = dict(os.environ, BONUSCLI_DATA_DIR=str(tmp_path / "not-this"), BONUSCLI_CATALOG=str(tmp_path / "nor-this"),
               BONUSCLI_NOW="1999-01-01")
    r = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "mobile at 4 RUB" in r.stdout
    assert not (tmp_path / "not-this").exists()
