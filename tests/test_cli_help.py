"""Every command's help is complete and clean: each option says what it does, no literal '%%', no
'(default None)', no wording that needs the project's history to understand."""

import argparse

import pytest

from myopia.cli import COMMANDS, build_parser


def _commands():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return sub.choices


@pytest.mark.parametrize("name", [c.replace("_", "-") for c in COMMANDS])
def test_every_option_has_help_and_the_text_is_clean(name):
    parser = _commands()[name]
    missing = [a.option_strings or [a.dest] for a in parser._actions
               if a.help is None and not isinstance(a, argparse._SubParsersAction)]
    assert not missing, f"options without help in myopia {name}: {missing}"
    text = parser.format_help()
    for sub in parser._actions:  # nested subcommands (myopia data build/info)
        if isinstance(sub, argparse._SubParsersAction):
            text += "".join(child.format_help() for child in sub.choices.values())
    assert "%%" not in text and "(default None)" not in text
    assert "old behaviour" not in text and "legacy" not in text.lower()


def test_a_config_file_sets_defaults_and_typed_options_win(tmp_path, capsys):
    import json

    from myopia.cli import main

    cfg = tmp_path / "pair.toml"
    cfg.write_text('lr = 0.004\nd-model = 48\nno-progress = true\n[pair]\nsteps = 77\ndata = "corpus.txt"\n'
                   'out = "runs/p"\n[train]\nsteps = 5\n')
    assert main(["pair", "--config", str(cfg), "--steps", "12", "--dry-run"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["lr"] == 0.004 and shown["d_model"] == 48 and shown["no_progress"] is True
    assert shown["steps"] == 12 and shown["data"] == "corpus.txt"  # typed wins; the [pair] table applies
    cfg.write_text("lerning-rate = 3\n")
    assert main(["pair", "--config", str(cfg), "--dry-run"]) == 2
    assert capsys.readouterr().err.strip() == f"error: --config {cfg}: myopia pair has no option --lerning-rate"
