"""MkDocs hooks: the CLI reference generated from the argparse parsers, and the committed figures under results/.

``docs/cli.md`` holds only a title and the marker ``<!-- cli-reference -->``; at build time the marker becomes one
section per ``myopia`` command (its description, usage and every option with its help and default), read from
:func:`myopia.cli.build_parser`, so the reference cannot drift from the code. The PNG figures committed under
``results/`` are added to the site at ``results/...`` so that pages can show them. No network is used.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[2]
MARKER = "<!-- cli-reference -->"


def _import_cli():
    src = str(ROOT / "src")
    if src not in sys.path:
        sys.path.insert(0, src)  # the working tree's package, also when it is not installed
    from myopia.cli import build_parser

    return build_parser


def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, list[str], argparse.ArgumentParser, str]]:
    """(name, aliases, parser, one-line help) of every subcommand, in the order argparse lists them."""
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            seen = {}
            for name, sub in action.choices.items():
                if id(sub) in seen:
                    seen[id(sub)][1].append(name)
                    continue
                entry = (name, [], sub, helps.get(name, ""))
                seen[id(sub)] = entry
                out.append(entry)
    return out


def _fmt_default(action: argparse.Action) -> str:
    d = action.default
    if d is None or d is argparse.SUPPRESS or isinstance(action, (argparse._StoreTrueAction,
                                                                   argparse._StoreFalseAction,
                                                                   argparse._HelpAction)):
        return ""
    return f"`{d}`" if str(d) != "" else '`""`'


def _escape(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _options_table(parser: argparse.ArgumentParser) -> list[str]:
    rows = []
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        if action.help == argparse.SUPPRESS:
            continue
        name = ", ".join(f"`{s}`" for s in action.option_strings) or f"`{action.metavar or action.dest}`"
        if action.option_strings and action.nargs != 0:
            metavar = action.metavar or (action.dest.upper())
            if isinstance(metavar, tuple):
                metavar = " ".join(metavar)
            name += f" `{metavar}`"
        help_text = action.help or ""
        if "%(" in help_text:
            try:
                help_text = help_text % {**vars(action), "prog": parser.prog,
                                         "default": action.default, "choices": action.choices}
            except (KeyError, TypeError, ValueError):
                pass
        if action.choices is not None and not isinstance(action, argparse._SubParsersAction):
            choices = ", ".join(f"`{c}`" for c in action.choices)
            if "one of" not in help_text:
                help_text = f"{help_text} (one of {choices})" if help_text else f"one of {choices}"
        required = "yes" if getattr(action, "required", False) or not action.option_strings else ""
        rows.append(f"| {name} | {_escape(help_text)} | {_fmt_default(action)} | {required} |")
    if not rows:
        return []
    return ["| option | meaning | default | required |", "|---|---|---|---|", *rows]


def _usage(parser: argparse.ArgumentParser) -> str:
    formatter = argparse.HelpFormatter(parser.prog, width=100)
    formatter.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups)
    return formatter.format_help().strip()


def _section(parser: argparse.ArgumentParser, level: int = 2, title: str | None = None) -> list[str]:
    lines = [f"{'#' * level} {title or parser.prog}", ""]
    if parser.description:
        lines += [_escape(parser.description).replace("\\|", "|"), ""]
    lines += ["```text", _usage(parser), "```", ""]
    table = _options_table(parser)
    if table:
        lines += table + [""]
    for name, aliases, sub, _ in _subcommands(parser):
        lines += _section(sub, level + 1, f"{parser.prog} {name}" + (f" (alias: {', '.join(aliases)})"
                                                                      if aliases else ""))
    return lines


def cli_reference() -> str:
    """The Markdown of the whole CLI reference: an index of commands, then one section per command."""
    parser = _import_cli()()
    subs = _subcommands(parser)
    lines = ["| command | what it does |", "|---|---|"]
    for name, aliases, sub, help_text in subs:
        anchor = f"myopia-{name}" + ("-alias-" + "-".join(aliases) if aliases else "")
        label = f"`myopia {name}`" + (f" (`{'`, `'.join(aliases)}`)" if aliases else "")
        lines.append(f"| [{label}](#{anchor}) | {_escape(help_text)} |")
    lines.append("")
    lines.append("Every command also takes `--debug` (show the full traceback on errors).")
    lines.append("")
    for name, aliases, sub, _ in subs:
        lines += _section(sub, 2, f"myopia {name}" + (f" (alias: {', '.join(aliases)})" if aliases else ""))
    return "\n".join(lines)


def on_page_markdown(markdown: str, page, config, files) -> str:
    if MARKER in markdown:
        return markdown.replace(MARKER, cli_reference())
    return markdown


def on_files(files, config):
    """Add the committed figures under results/ to the site (pages show them as results/<...>.png)."""
    results = ROOT / "results"
    for png in sorted(results.rglob("*.png")):
        rel = png.relative_to(ROOT).as_posix()
        if files.get_file_from_path(rel) is None:
            files.append(File(rel, src_dir=str(ROOT), dest_dir=config["site_dir"],
                              use_directory_urls=config["use_directory_urls"]))
    return files
