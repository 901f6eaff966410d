"""The front door: README's promises (length, the two commands first, only data a user has) and the docs site."""

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_readme_is_a_front_page_that_starts_with_the_two_commands():
    assert len(README) <= 15_000
    first_block = re.search(r"```bash\n(.*?)```", README, re.S).group(1).strip().splitlines()
    assert first_block[0].endswith("myopia demo --out runs/demo") and "pip install -e" in first_block[0]
    assert first_block[1] == "python -m pytest"
    assert README.index("```bash") < README.index("## What it measures")


def test_user_docs_use_data_a_user_has_and_no_file_outside_the_repository():
    pages = {"README.md": README, **{f"docs/{p.name}": p.read_text() for p in (ROOT / "docs").glob("*.md")}}
    for name, text in pages.items():
        assert "PAPER.md" not in text, name
        if name != "docs/contributing.md":
            assert "../shared" not in text and "shared/data" not in text, name
    for target in re.findall(r"\]\(((?!https?:)[^)#]+)", README):  # every relative link of the README exists
        assert (ROOT / target).exists(), target


def test_the_cli_reference_is_generated_from_every_parser():
    pytest.importorskip("mkdocs")
    sys.path.insert(0, str(ROOT / "docs" / "hooks"))
    try:
        import cli_reference
    finally:
        sys.path.pop(0)
    from myopia.cli import COMMANDS, build_parser

    text = cli_reference.cli_reference()
    for name in COMMANDS:
        assert f"## myopia {name.replace('_', '-')}" in text, name
    train = build_parser()._subparsers._group_actions[0].choices["train"]
    for action in train._actions[1:]:  # every option but -h
        for flag in action.option_strings:
            assert f"`{flag}`" in text, flag
    assert (ROOT / "docs" / "cli.md").read_text().count("\n") < 10  # the page itself is only the marker
