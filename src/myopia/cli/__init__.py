"""The ``myopia`` command line: argument parsing only; each subcommand lives in its own module here.

A subcommand module defines ``register(subparsers)`` (adding its parser, with ``func=run``) and ``run(args)``.
Errors a user can fix are :class:`myopia.errors.MyopiaError`: printed as one line, exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from ..errors import MyopiaError

# One line per subcommand module (kept sorted), so that adding a command touches one line here.
COMMANDS = [
    "arithmetic",
    "demo",
    "synthetic",
    "train",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="myopia",
        description="Myopic training of transformer language models: measure how much activations are "
        "optimised for tokens beyond the next one.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    debug = args.debug or os.environ.get("MYOPIA_DEBUG") == "1"
    try:
        code = args.func(args)
        return int(code or 0)
    except MyopiaError as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # an unexpected failure: still one line unless --debug
        if debug:
            raise
        print(f"error: {type(exc).__name__}: {exc} (run with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
