"""Presets and named recipes are data, kept outside the package in the top-level ``recipes/`` folder as TOML files.

The folder is found next to the source tree (``recipes/`` beside ``src/``, as in an editable install from a
checkout) or wherever the environment variable ``MYOPIA_RECIPES`` points. Each file is one family of presets or
recipes (``demo.toml``, ``isoflop.toml``, ``recipes.toml``, ...); what a file's tables mean is up to the module that
reads it. TOML has no null: a field a preset leaves at its default is simply absent.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

from .errors import MyopiaError

__all__ = ["RECIPES_ENV", "recipes_dir", "read_recipe_file"]

RECIPES_ENV = "MYOPIA_RECIPES"


def recipes_dir() -> Path:
    """The folder holding the recipe files: ``$MYOPIA_RECIPES`` if set, else ``recipes/`` beside ``src/``."""
    env = os.environ.get(RECIPES_ENV)
    folder = Path(env) if env else Path(__file__).resolve().parents[2] / "recipes"
    if not folder.is_dir():
        raise MyopiaError(f"recipe folder {folder} not found; install myopia from a checkout (pip install -e .) or "
                          f"set {RECIPES_ENV} to the checkout's recipes/ folder")
    return folder


def read_recipe_file(name: str) -> dict:
    """The parsed contents of ``recipes/<name>.toml`` (a dict of tables); one-line error if absent or malformed."""
    folder = recipes_dir()
    path = folder / f"{name}.toml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in folder.glob("*.toml"))) or "none"
        raise MyopiaError(f"no recipe file {name}.toml in {folder} (known: {known})")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise MyopiaError(f"{path}: {exc}") from None
