"""The ``myopia`` command line: argument parsing only; each subcommand lives in its own module here.

A subcommand module defines ``register(subparsers)`` (adding its parser, with ``func=run``) and ``run(args)``.
Errors a user can fix are :class:`myopia.errors.MyopiaError`: printed as one line, exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time

from ..errors import MyopiaError, first_line

# One line per subcommand module (kept sorted), so that adding a command touches one line here.
COMMANDS = [
    "arithmetic",
    "bonus",
    "data",
    "demo",
    "export",
    "finetune",
    "generate",
    "gap",
    "grad",
    "harness",
    "horizon_sweep",
    "pair",
    "probe",
    "recipe",
    "report",
    "sweep",
    "synthetic",
    "tasks",
    "train",
]


class UsageError(Exception):
    """A command line that does not parse (unknown option, bad value): one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line as one line instead of usage + message + SystemExit."""

    def error(self, message: str):
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


# commands whose --dry-run does more than print the options (a plan, the commands they would run)
_OWN_DRY_RUN = {f"{__name__}.{name}" for name in ("sweep", "horizon_sweep", "recipe")}


def build_parser() -> argparse.ArgumentParser:
    """The ``myopia`` parser with every command of :data:`COMMANDS` registered."""
    parser = _Parser(
        prog="myopia",
        description="Myopic training of transformer language models: measure how much activations are "
        "optimised for tokens beyond the next one.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    for command in sub.choices.values():  # `myopia train ... --debug` works as well as `myopia --debug train`
        if "--debug" not in command._option_string_actions:
            command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                                 help="show the full traceback on errors")
        if "--config" in command._option_string_actions:  # the same parser under an alias
            continue
        command.add_argument("--config", metavar="FILE.toml", default=None,
                             help="read option values from a TOML file (keys are option names, e.g. lr = 3e-3 or "
                             "d-model = 128; a [COMMAND] table applies to that command only); options typed on the "
                             "command line win")
        if "--dry-run" not in command._option_string_actions:
            command.add_argument("--dry-run", action="store_true",
                                 help="print the resolved options (after --config) as JSON and run nothing")
    return parser


def _config_defaults(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    """Apply ``--config FILE.toml`` of ``argv`` as defaults of its command's parser (typed options still win)."""
    from .config_file import apply_config_file

    apply_config_file(parser, argv)


def _launch_rank() -> tuple[int, int]:
    """(rank, world size) as set by torchrun, known even before the process group exists."""
    try:
        return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    except ValueError:
        return 0, 1


def _report(message: str, exc: BaseException | None = None) -> None:
    """Print ``error: message`` as one line on stderr; under torchrun, errors every rank shares only on rank 0."""
    rank, world = _launch_rank()
    if world > 1 and rank != 0:
        if exc is not None and getattr(exc, "all_ranks", False):
            time.sleep(0.5)  # let rank 0 print before the launcher stops the group
            return
        message = f"[rank {rank}] {message}"
    print("error: " + " ".join(message.split()), file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit status (0 ok, 1 unexpected failure, 2 bad input, 130 interrupted).

    A worker started by torchrun ends with ``os._exit`` once its process group is destroyed and its output
    flushed: nothing is left for interpreter finalisation but tearing down the communication library's C++
    threads, which is where finished 2-process runs used to abort (see myopia.distributed).
    """
    code = _run(argv)
    from ..distributed import launched_by_torchrun

    if launched_by_torchrun() and os.environ.get("MYOPIA_KEEP_INTERPRETER") != "1":
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _run(argv: list[str] | None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    try:
        _config_defaults(parser, argv)
        args = parser.parse_args(argv)
    except (UsageError, MyopiaError) as exc:  # a bad command line or --config file: one line
        _report(str(exc))
        return 2
    except SystemExit as exc:  # --help, --version
        return exc.code if isinstance(exc.code, int) else 0
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    args.argv = argv  # what was typed: commands that fill the rest from a saved run need to know it
    if getattr(args, "dry_run", False) and args.func.__module__ not in _OWN_DRY_RUN:
        import json

        shown = {k: v for k, v in sorted(vars(args).items()) if k not in ("func", "argv", "dry_run", "debug")}
        print(json.dumps(shown, indent=2, default=str))
        return 0
    debug = args.debug or os.environ.get("MYOPIA_DEBUG") == "1"
    clean = False
    try:
        code = args.func(args)
        clean = True
        return int(code or 0)
    except MyopiaError as exc:
        clean = getattr(exc, "all_ranks", False)  # every rank stopped at the same point: teardown in step
        if debug:
            raise
        _report(str(exc), exc)
        return 2
    except KeyboardInterrupt:
        if debug:
            raise
        _report("interrupted (a training run continues from its last checkpoint with --resume)")
        return 130
    except Exception as exc:  # an unexpected failure: still one line unless --debug
        if debug:
            raise
        _report(f"{type(exc).__name__}: {first_line(exc, empty='')} (run with --debug for the traceback)", exc)
        return 1
    finally:
        from ..distributed import shutdown_distributed

        shutdown_distributed(clean=clean)


if __name__ == "__main__":
    sys.exit(main())
