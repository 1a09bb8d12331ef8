"""Shell completion (issue 8, CLI.md `completion SHELL`): the committed scripts are what
`bonuscli completion SHELL` prints, and completion answers the way Click's protocol
(`_BONUSCLI_COMPLETE`) is driven by bash, zsh and fish.

Expected values come from the spec, not from the program: the subcommands of CLI.md,
the codes of RULES.md §5 (five turbo codes), the categories of §3, the channels of §5
(web, app, sms, ussd, store), and ISO 3166-2:RU (RU-MO Mordovia, RU-MOS Moscow Oblast,
RU-MOW Moscow are the only codes starting with RU-MO).
"""

from __future__ import annotations

import os
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from bonuscli.cli import cli

ROOT = Path(__file__).resolve().parent.parent
SHELLS = ("bash", "zsh", "fish")
A = "9161234567"
B = "9167654321"
C = "9031112233"

COMMANDS = {"join", "earn", "calc", "balance", "forecast", "catalog", "redeem", "gift", "accept", "history",
            "leave", "check", "sms", "ussd", "diff", "refund", "adjust", "explain", "report", "path", "completion"}
TURBO = {"turbo_100mb", "turbo_500mb", "turbo_1gb", "turbo_2gb", "turbo_5gb"}
RU_MO = {"RU-MO", "RU-MOS", "RU-MOW"}


# ---------------------------------------------------------------- the scripts


@pytest.mark.parametrize("shell", SHELLS)
def test_committed_script_is_what_completion_prints(run, shell):
    committed = ROOT / "completions" / f"bonuscli.{shell}"
    assert committed.exists(), f"completions/bonuscli.{shell} is missing"
    r = run.ok("completion", shell)
    assert r.stdout_bytes == committed.read_bytes(), (
        f"completions/bonuscli.{shell} is stale: regenerate it with `bonuscli completion {shell}`")
    assert b"_BONUSCLI_COMPLETE" in r.stdout_bytes


def test_completion_script_subprocess_bytes():
    r = subprocess.run([sys.executable, "-m", "bonuscli", "completion", "fish"], capture_output=True, cwd=ROOT)
    assert r.returncode == 0
    assert r.stdout == (ROOT / "completions" / "bonuscli.fish").read_bytes()
    assert r.stderr == b""


@pytest.mark.parametrize("args", [["completion", "tcsh"], ["completion", "BASH"], ["completion", "powershell"],
                                  ["completion"]])
def test_unknown_or_missing_shell_is_bad_input(run, args):
    r = run(*args)
    assert r.exit_code == 2, (r.stdout, r.stderr)
    assert r.stdout == ""
    assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1


def test_unknown_shell_subprocess_no_traceback(sub):
    r = sub(["completion", "tcsh", "--json"])
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert '"code": 2' in r.stderr


# ---------------------------------------------------------------- driving the protocol


def shell_env(shell: str, words: list, incomplete: str) -> dict:
    """What each shell's script puts in the environment (see the committed scripts)."""
    if shell in ("bash", "zsh"):
        line = " ".join(["bonuscli", *map(shlex.quote, words), incomplete])
        return {"_BONUSCLI_COMPLETE": f"{shell}_complete", "COMP_WORDS": line, "COMP_CWORD": str(len(words) + 1)}
    line = " ".join(["bonuscli", *map(shlex.quote, words), incomplete]).rstrip()
    if not incomplete:
        line += " "
    return {"_BONUSCLI_COMPLETE": "fish_complete", "COMP_WORDS": line, "COMP_CWORD": incomplete}


def parse(shell: str, out: str) -> list:
    """The values offered, from the protocol's output for that shell."""
    lines = out.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if shell == "bash":
        return [l.split(",", 1)[1] for l in lines if l]
    if not lines:
        return []
    if all(lines[i] in ("plain", "dir", "file") for i in range(0, len(lines), 3)) and len(lines) % 3 == 0:
        return [lines[i + 1].replace("\\:", ":") for i in range(0, len(lines), 3)]
    return [l.split(",", 1)[1].split("\t")[0] for l in lines if l]  # older fish format: type,value<TAB>help


def complete_in_process(shell, words, incomplete="", env=None):
    e = shell_env(shell, words, incomplete)
    e.update(env or {})
    r = CliRunner().invoke(cli, [], env=e, prog_name="bonuscli", catch_exceptions=False)
    assert r.exit_code == 0, (words, incomplete, r.stdout, r.stderr)
    assert r.stderr == "", r.stderr
    return parse(shell, r.stdout)


def complete_sub(shell, words, incomplete="", env=None):
    e = dict(os.environ)
    e.update(shell_env(shell, words, incomplete))
    e.update(env or {})
    p = subprocess.run([sys.executable, "-m", "bonuscli"], capture_output=True, text=True, env=e, cwd=ROOT,
                       timeout=60)
    assert p.returncode == 0, (words, incomplete, p.stdout, p.stderr)
    assert p.stderr == "", p.stderr
    assert "Traceback" not in p.stdout
    return parse(shell, p.stdout)


def joined(run, *phones_regions):
    for phone, region in phones_regions:
        run.ok("join", phone, "--region", region, "--at", "2025-03-01T12:00")


# ---------------------------------------------------------------- what completes, in the three shells


@pytest.mark.parametrize("shell", SHELLS)
def test_subcommands(shell):
    assert complete_in_process(shell, [], "ba") == ["balance"]
    assert set(complete_in_process(shell, [], "s")) == {"sms"}
    assert COMMANDS <= set(complete_in_process(shell, [], ""))


@pytest.mark.parametrize("shell", SHELLS)
def test_options(shell):
    got = complete_in_process(shell, ["earn"], "--c")
    assert "--category" in got
    assert all(o.startswith("--c") for o in got)
    assert complete_in_process(shell, ["redeem", A, "minutes_30"], "--vi") == ["--via"]
    assert "--region" in complete_in_process(shell, ["sms", A, "hello"], "--r")


@pytest.mark.parametrize("shell", SHELLS)
def test_reward_codes(shell):
    got = complete_in_process(shell, ["redeem", A], "turbo_")
    assert sorted(got) == sorted(TURBO) and len(got) == 5
    assert set(complete_in_process(shell, ["catalog"], "cert_sportmaster_")) == {
        "cert_sportmaster_500", "cert_sportmaster_1000", "cert_sportmaster_3000"}
    assert complete_in_process(shell, ["redeem", A], "store_d") == ["store_discount"]


@pytest.mark.parametrize("shell", SHELLS)
def test_earn_categories(shell):
    assert sorted(complete_in_process(shell, ["earn", A, "100", "--category"], "mob")) == ["mobile", "mobile_internet"]
    assert sorted(complete_in_process(shell, ["calc", "100", "--category"], "home_")) == [
        "home_internet", "home_phone", "home_tv"]


def test_reward_categories_on_catalog():
    """`catalog --category` filters by reward category (RULES.md §5): those complete too."""
    assert sorted(complete_in_process("bash", ["catalog", "--category"], "c")) == ["calls", "certificate", "content"]


@pytest.mark.parametrize("shell", SHELLS)
def test_region_codes(shell):
    got = complete_in_process(shell, ["join", A, "--region"], "RU-MO")
    assert sorted(got) == sorted(RU_MO) and len(got) == 3
    assert complete_in_process(shell, ["sms", A, "hi", "--region"], "RU-BR") == ["RU-BRY"]
    assert sorted(complete_in_process(shell, ["catalog", "--region"], "RU-SP")) == ["RU-SPE"]


def test_region_codes_are_the_catalogs(tmp_path):
    """Exactly what the catalog has: the shipped one, and a user's catalog with one region more."""
    import yaml

    shipped = yaml.safe_load((ROOT / "catalog.yaml").read_text())["regions"]
    assert {r for r in shipped if r.startswith("RU-MO")} == RU_MO
    assert len(complete_in_process("bash", ["join", A, "--region"], "RU-")) == len(shipped) == 83
    text = (ROOT / "catalog.yaml").read_text()
    assert "\nregions:\n" in text
    mine = tmp_path / "mine.yaml"
    mine.write_text(text.replace("\nregions:\n", "\nregions:\n  RU-MOX: Test region\n", 1))
    assert run_check(mine) == 0
    got = complete_in_process("bash", ["join", A, "--region"], "RU-MO", env={"BONUSCLI_CATALOG": str(mine)})
    assert sorted(got) == sorted(RU_MO | {"RU-MOX"})
    got = complete_in_process("bash", ["--catalog", str(mine), "join", A, "--region"], "RU-MO")
    assert sorted(got) == sorted(RU_MO | {"RU-MOX"})


def run_check(path):
    return CliRunner().invoke(cli, ["check", "--catalog", str(path)]).exit_code


@pytest.mark.parametrize("shell", SHELLS)
def test_channels(shell):
    assert sorted(complete_in_process(shell, ["redeem", A, "minutes_30", "--via"], "s")) == ["sms", "store"]
    assert sorted(complete_in_process(shell, ["redeem", A, "minutes_30", "--via"], "")) == sorted(
        ["web", "app", "sms", "ussd", "store"])
    assert complete_in_process(shell, ["catalog", "--channel"], "u") == ["ussd"]


@pytest.mark.parametrize("shell", SHELLS)
def test_phones_of_existing_ledgers(run, shell):
    assert complete_in_process(shell, ["balance"], "916") == []  # no ledgers yet
    joined(run, (A, "RU-MOW"), (B, "RU-MOW"), (C, "RU-BRY"))
    assert sorted(complete_in_process(shell, ["balance"], "916")) == [A, B]
    assert sorted(complete_in_process(shell, ["forecast"], "")) == sorted([A, B, C])
    assert complete_in_process(shell, ["gift", A], "903") == [C]
    assert complete_in_process(shell, ["sms"], "9167") == [B]
    assert complete_in_process(shell, ["redeem"], "9031") == [C]


def test_phones_follow_data_dir_option(run, tmp_path):
    other = tmp_path / "other"
    run.ok("join", B, "--region", "RU-MOW", "--data-dir", other, "--at", "2025-03-01")
    joined(run, (A, "RU-MOW"))
    assert complete_in_process("bash", ["balance"], "916") == [A]
    assert complete_in_process("bash", ["--data-dir", str(other), "balance"], "916") == [B]
    assert complete_in_process("bash", ["balance"], "916", env={"BONUSCLI_DATA_DIR": str(other)}) == [B]


def test_phones_ignore_other_files(run, data_dir):
    joined(run, (A, "RU-MOW"))
    led = data_dir / "ledgers"
    (led / "notes.txt").write_text("x")
    (led / "9160000000.jsonl.bak").write_text("x")
    assert complete_in_process("bash", ["balance"], "916") == [A]


# ---------------------------------------------------------------- never an error, even with a broken catalog


def broken_catalogs(tmp_path):
    bad_yaml = tmp_path / "bad-yaml.yaml"
    bad_yaml.write_text("version: 1\nregions: [RU-MOW\n  rewards: {\n")
    bad_schema = tmp_path / "bad-schema.yaml"
    bad_schema.write_text("version: 1\nregions: 7\nrewards: nope\n")
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00\x01garbage\x00")
    return [bad_yaml, bad_schema, empty, binary, tmp_path / "missing.yaml", tmp_path]


CATALOG_DRIVEN = [
    (["join", A, "--region"], "RU-"),
    (["redeem", A], "turbo_"),
    (["earn", A, "100", "--category"], "mob"),
    (["redeem", A, "minutes_30", "--via"], ""),
    (["catalog"], ""),
]


def test_broken_catalog_offers_nothing_in_process(run, tmp_path):
    joined(run, (A, "RU-MOW"))
    for bad in broken_catalogs(tmp_path):
        for shell in SHELLS:
            for words, inc in CATALOG_DRIVEN:
                assert complete_in_process(shell, words, inc, env={"BONUSCLI_CATALOG": str(bad)}) == [], (bad, words)
            # what does not need the catalog still completes
            env = {"BONUSCLI_CATALOG": str(bad)}
            assert complete_in_process(shell, [], "ba", env=env) == ["balance"]
            assert complete_in_process(shell, ["balance"], "916", env=env) == [A]


@pytest.mark.parametrize("shell", SHELLS)
def test_broken_catalog_subprocess_silent(run, tmp_path, shell):
    joined(run, (A, "RU-MOW"))
    bad = broken_catalogs(tmp_path)[0]
    env = {"BONUSCLI_CATALOG": str(bad)}
    assert complete_sub(shell, ["join", A, "--region"], "RU-MO", env=env) == []


def test_broken_catalog_on_the_command_line(tmp_path):
    bad = broken_catalogs(tmp_path)[0]
    assert complete_in_process("bash", ["--catalog", str(bad), "join", A, "--region"], "RU-MO") == []


def test_unusable_data_dir_offers_no_phones(tmp_path):
    afile = tmp_path / "a-file"
    afile.write_text("not a directory")
    for d in (afile, tmp_path / "missing", afile / "below"):
        for shell in SHELLS:
            assert complete_in_process(shell, ["balance"], "9", env={"BONUSCLI_DATA_DIR": str(d)}) == []
    # the catalog still completes
    assert complete_in_process("bash", ["join", A, "--region"], "RU-BR",
                               env={"BONUSCLI_DATA_DIR": str(afile)}) == ["RU-BRY"]


@pytest.mark.parametrize("words,incomplete", [
    (["earn", "not-a-phone", "abc", "--category"], ""),
    (["redeem", "+7 (916", "--via"], ""),
    (["join", A, "--region", "RU-MOW", "--at", "yesterday", "--method"], ""),
    (["nosuchcommand"], "x"),
    (["balance", A, A, A], ""),
    (["gift"], "\U0001F381"),
    (["--at", "garbage", "balance"], "9"),
])
def test_odd_command_lines_complete_silently(words, incomplete):
    for shell in SHELLS:
        complete_in_process(shell, words, incomplete)  # exit 0 and nothing on stderr


def test_subprocess_each_shell(run):
    """One real process per shell: the protocol, end to end."""
    joined(run, (A, "RU-MOW"))
    assert complete_sub("bash", [], "ba") == ["balance"]
    assert sorted(complete_sub("zsh", ["redeem", A, "minutes_30", "--via"], "s")) == ["sms", "store"]
    assert sorted(complete_sub("fish", ["earn", A, "100", "--category"], "mob")) == ["mobile", "mobile_internet"]


# ---------------------------------------------------------------- the committed bash script, in bash


def test_bash_script_in_a_real_bash(run, tmp_path):
    """Source completions/bonuscli.bash in bash and call its function as bash would on <TAB>."""
    bash = "/bin/bash"
    if not Path(bash).exists():
        bash = "bash"
    joined(run, (A, "RU-MOW"), (B, "RU-MOW"))
    bindir = tmp_path / "bin"
    bindir.mkdir()
    exe = bindir / "bonuscli"
    exe.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -m bonuscli \"$@\"\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    script = ROOT / "completions" / "bonuscli.bash"
    prog = (f"source {shlex.quote(str(script))}\n"
            "COMP_WORDS=(bonuscli redeem 9161234567 turbo_); COMP_CWORD=3\n"
            "_bonuscli_completion bonuscli\n"
            "printf '%s\\n' \"${COMPREPLY[@]}\"\n"
            "echo ---\n"
            "COMPREPLY=(); COMP_WORDS=(bonuscli balance 916); COMP_CWORD=2\n"
            "_bonuscli_completion bonuscli\n"
            "printf '%s\\n' \"${COMPREPLY[@]}\"\n")
    env = dict(os.environ)
    env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    p = subprocess.run([bash, "--norc", "--noprofile", "-c", prog], capture_output=True, text=True, env=env,
                       cwd=tmp_path, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stderr == ""
    rewards, phones = p.stdout.split("---\n")
    assert sorted(rewards.split()) == sorted(TURBO)
    assert sorted(phones.split()) == [A, B]
