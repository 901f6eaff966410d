"""Config dataclasses written once: each field carries its default and its command-line help.

A field declared as ``steps: int = option(1000, "optimizer steps")`` is an ordinary dataclass field whose
``metadata["help"]`` (and optional ``choices``) :mod:`myopia.cli.common` turns into ``--steps`` with that help, type
and default; the parsed arguments map back onto the dataclass by field name. Changing a default or a help text is
one edit, here, never in the parser.
"""

from __future__ import annotations

from dataclasses import field

__all__ = ["option"]


def option(default, help: str, *, choices=None, both_switches: bool = False, unset: str | None = None):
    """A dataclass field with a default, its command-line ``help`` and optional argparse ``choices``.

    A boolean field is one switch (``--name``, or ``--no-name`` when it defaults to True); ``both_switches`` gives
    it ``--name`` and ``--no-name`` (argparse's ``BooleanOptionalAction``). ``unset`` says what a command that
    leaves the option out (default None there) does instead.
    """
    metadata = {"help": help}
    if unset is not None:
        metadata["unset"] = unset
    if choices is not None:
        metadata["choices"] = tuple(choices)
    if both_switches:
        metadata["both_switches"] = True
    return field(default=default, metadata=metadata)
