"""``--config FILE.toml``: option values from a file, for any command.

Keys are option names without the dashes (``lr = 3e-3``, ``d-model = 128`` or ``d_model = 128``; a switch such as
``--no-progress`` is ``no-progress = true``). Top-level keys apply to whichever command reads the file; a table
named after a command (``[pair]``) applies to that command only and wins over the top level. The values become
the command's defaults, so anything typed on the command line still wins. An unknown key is an error that names it.
"""

from __future__ import annotations

import argparse
import tomllib
from pathlib import Path

from ..errors import MyopiaError


def _config_path(argv: list[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg == "--config":
            if i + 1 >= len(argv):
                raise MyopiaError("--config needs a file (FILE.toml)")
            return argv[i + 1]
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
    return None


def apply_config_file(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    """Set the defaults of ``argv``'s command from its ``--config`` file, if any (see the module doc)."""
    path = _config_path(argv)
    if path is None:
        return
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    command = next((a for a in argv if a in sub.choices), None)
    if command is None:
        raise MyopiaError("--config goes with a command, e.g. myopia pair --config pair.toml")
    try:
        table = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise MyopiaError(f"cannot read --config {path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise MyopiaError(f"--config {path} is not valid TOML: {exc}") from None
    values = {k: v for k, v in table.items() if not isinstance(v, dict)}
    values.update(table.get(command, {}) if isinstance(table.get(command), dict) else {})
    command_parser = sub.choices[command]
    actions = {a.dest: a for a in command_parser._actions if a.option_strings}
    defaults = {}
    for key, value in values.items():
        dest = key.replace("-", "_")
        if dest not in actions or dest in ("config", "help"):
            raise MyopiaError(f"--config {path}: myopia {command} has no option --{key.replace('_', '-')}")
        action = actions[dest]
        defaults[dest] = action.type(value) if action.type is not None and not isinstance(value, bool) else value
        action.required = False
    command_parser.set_defaults(**defaults)
