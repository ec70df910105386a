"""Every `resnetlab` command in the README and docs/ parses: a renamed or removed flag, or a
wrong choice, fails here instead of in a reader's shell."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from resnetlab.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL = ("", "bash", "sh", "shell")  # the fences whose lines are shell commands
# `resnetlab CMD`, `VAR=1 resnetlab CMD` or `torchrun ... -m resnetlab CMD`: from resnetlab on.
COMMAND = re.compile(r"(?:^(?:\w+=\S+\s+)*|\s-m\s+)(resnetlab\s+[a-z].*)")


def commands(page: Path) -> list[str]:
    """The shell commands in the page's fenced blocks that run resnetlab, continuation lines
    joined; an elided one (with ``...``) is not meant to run."""
    found: list[str] = []
    fence: str | None = None
    for line in page.read_text(encoding="utf-8").replace("\\\n", " ").splitlines():
        if line.lstrip().startswith("```"):
            fence = None if fence is not None else line.lstrip()[3:].strip()
            continue
        match = COMMAND.search(line.strip()) if fence in SHELL else None
        if match and "..." not in match.group(1):
            found.append(match.group(1))
    return found


CASES = [(p, c) for p in PAGES for c in commands(p)]


def test_the_pages_hold_commands() -> None:
    assert len(CASES) > 20
    assert {p.name for p, _ in CASES} >= {"README.md", "finetune.md", "augment.md"}


@pytest.mark.parametrize(
    ("page", "command"), CASES, ids=[f"{p.name}:{i}" for i, (p, _) in enumerate(CASES)]
)
def test_a_documented_command_parses(page: Path, command: str) -> None:
    argv = shlex.split(command, comments=True)[1:]
    try:
        build_parser(argv[0]).parse_args(argv)
    except SystemExit as e:
        if e.code != 0:  # --help exits 0
            pytest.fail(f"{page.name}: `{command}` does not parse")
