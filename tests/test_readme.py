"""The README's commands, run: each `$ ...` line of its console blocks, in a scratch copy of
the repository's jobs/, against the simulator; each must exit as the README shows.

A block's commands run in order in one bash session (so `cd`, `source` and a
background `imgedit simulate ... &` work as they do for a reader). A command's
expected exit code is what a following `$ echo $?` prints, else 0. `make demo`
is what the Makefile runs for it; other `make` lines, and commands that serve
until stopped in the foreground (`imgedit review`, `imgedit simulate`), are not
run. A block right after `<!-- readme-test: skip -->` is left out. The Library
section's Python example runs too, and must print the block shown after it.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import ROOT

# Every README command as a whole process (about 25 s): a long scenario, run by
# `make test-slow` and CI beside kill -9 and SIGTERM.
pytestmark = pytest.mark.slow

README = ROOT / "README.md"
FENCE = re.compile(r"^```(\w*)\s*$")
SKIP_MARK = "<!-- readme-test: skip -->"
SERVES = re.compile(r"\bimgedit\s+(review|simulate)\b")


@dataclass
class Command:
    line: int
    text: str
    output: list[str] = field(default_factory=list)


@dataclass
class Block:
    line: int
    language: str
    body: list[str]
    skipped: bool

    def commands(self) -> list[Command]:
        found: list[Command] = []
        for offset, text in enumerate(self.body, start=1):
            if text.startswith("$ "):
                found.append(Command(self.line + offset, text[2:].split("  #")[0].strip()))
            elif found:
                found[-1].output.append(text)
        return found


def blocks(text: str) -> list[Block]:
    found: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        opened = FENCE.match(lines[i])
        if not opened:
            i += 1
            continue
        before = next((x.strip() for x in reversed(lines[:i]) if x.strip()), "")
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        found.append(Block(i + 1, opened.group(1), lines[i + 1 : end], before == SKIP_MARK))
        i = end + 1
    return found


def runnable() -> list[Block]:
    return [b for b in blocks(README.read_text("utf-8"))
            if b.language == "console" and not b.skipped and b.commands()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A scratch copy of what the README's commands touch: jobs/, and the .venv to activate."""
    shutil.copytree(ROOT / "jobs", tmp_path / "repo/jobs",
                    ignore=shutil.ignore_patterns("*.sqlite*", "*.edited.*", "*.report*",
                                                  ".imgedit-*"))
    venv = Path(sys.executable).parent.parent
    if (venv / "bin/activate").exists() and (venv / "bin/imgedit").exists():
        (tmp_path / "repo/.venv").symlink_to(venv)
    else:  # an interpreter outside a venv: the two files the README's commands use
        bin_ = tmp_path / "repo/.venv/bin"
        bin_.mkdir(parents=True)
        (bin_ / "activate").write_text(f"export PATH={shlex.quote(str(bin_))}:$PATH\n")
        (bin_ / "imgedit").write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -m "
                                      "pipeline \"$@\"\n")
        (bin_ / "imgedit").chmod(0o755)
    return tmp_path / "repo"


def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IMGEDIT_", "WENWEN_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["IMGEDIT_RETRY_WAIT_SCALE"] = "0"  # the same runs, without backoff sleeps
    env["PYTHONPATH"] = str(ROOT)  # this checkout's code, installed or not
    return env


def script(block: Block, repo: Path) -> tuple[str, list[tuple[Command, int]]]:
    """The bash script for a block, and each command run with the exit code it must give."""
    port = str(free_port())
    scratch = str(repo.parent / "ft")
    lines = ["set -o pipefail", f"cd {shlex.quote(str(repo))}"]
    checks: list[tuple[Command, int]] = []
    commands = block.commands()
    for i, command in enumerate(commands):
        text = command.text.replace("8799", port).replace("/tmp/ft", scratch)
        if text.startswith("echo $?"):
            continue
        if text.startswith("make "):
            if text.split()[1] != "demo":
                continue
            text = ".venv/bin/imgedit run jobs/demo.yaml"
        if text.endswith("&"):
            lines += [f"{text[:-1]} >/dev/null 2>&1 &",
                      f"for _ in $(seq 200); do (echo >/dev/tcp/127.0.0.1/{port}) 2>/dev/null "
                      "&& break; sleep 0.05; done"]
            continue
        if SERVES.search(text):
            continue
        after = commands[i + 1] if i + 1 < len(commands) else None
        expected = int(after.output[0]) if after and after.text == "echo $?" else 0
        result = shlex.quote(str(repo.parent / f"result-{len(checks)}"))
        lines += [f"{text} >{result}.out 2>{result}.err", f"echo $? >{result}.code"]
        checks.append((command, expected))
    lines.append('kill $(jobs -p) 2>/dev/null; wait; true')
    return "\n".join(lines), checks


def test_the_readme_has_commands_to_run() -> None:
    names = " ".join(c.text for b in runnable() for c in b.commands())
    for needed in ("imgedit validate", "imgedit run", "imgedit status", "imgedit export"):
        assert needed in names


@pytest.mark.parametrize("block", runnable(), ids=lambda b: f"README.md:{b.line}")
def test_each_command_exits_as_the_readme_shows(block: Block, repo: Path) -> None:
    text, checks = script(block, repo)
    done = subprocess.run(["bash", "-c", text], cwd=repo, env=environment(), timeout=300,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    for n, (command, expected) in enumerate(checks):
        got = int((repo.parent / f"result-{n}.code").read_text())
        err = (repo.parent / f"result-{n}.err").read_text()
        assert got == expected, (f"README.md:{command.line}: `{command.text}` exited {got}, "
                                 f"the README shows {expected}\n{err}")
        if command.output and command.output[0].startswith("error:"):
            assert err.startswith("error:"), f"README.md:{command.line}: {err}"


def test_the_library_example_prints_what_the_readme_shows(repo: Path) -> None:
    found = blocks(README.read_text("utf-8"))
    examples = [i for i, b in enumerate(found)
                if b.language == "python" and "from pipeline import api" in "\n".join(b.body)]
    assert examples, "the README has no Library example"
    for i in examples:
        code, shown = found[i], found[i + 1]
        done = subprocess.run([sys.executable, "-c", "\n".join(code.body)], cwd=repo,
                              env=environment(), capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines() == shown.body, f"README.md:{code.line}"
