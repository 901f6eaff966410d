"""Named recipes: the measured configurations, as the ``myopia`` command lines that reproduce them.

The recipes are data, the tables of ``recipes/recipes.toml`` outside the package (read through
:func:`myopia.recipe_files.read_recipe_file`): each has a ``description``, what ``data`` it reads, and ``steps``,
command lines without the leading ``myopia`` with the placeholders ``{data}``, ``{data2}`` (a second corpus,
default: the first) and ``{out}``. ``myopia recipe NAME --data D --out O`` runs them in order; ``myopia recipe``
lists them.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from ..errors import MyopiaError
from ..recipe_files import read_recipe_file

__all__ = ["RECIPE_FILE", "Recipe", "load_recipes", "get_recipe"]

RECIPE_FILE = "recipes"  # recipes/recipes.toml
_FIELDS = ("description", "data", "steps")


@dataclass(frozen=True)
class Recipe:
    """A named sequence of ``myopia`` command lines (argv lists with ``{data}``, ``{data2}``, ``{out}``)."""

    name: str
    description: str
    data: str  # what --data (and --data2) should be
    steps: tuple[tuple[str, ...], ...]

    def commands(self, data: str, out: str, data2: str | None = None) -> list[list[str]]:
        """The recipe's command lines (without the leading ``myopia``) for these inputs."""
        values = {"data": str(data), "data2": str(data2 if data2 is not None else data), "out": str(out)}
        return [[arg.format(**values) for arg in step] for step in self.steps]

    @property
    def uses_data(self) -> bool:
        """Whether a step reads ``{data}`` or ``{data2}``."""
        return any("{data" in arg for step in self.steps for arg in step)


def _recipe(name: str, table) -> Recipe:
    """One table of the recipe file as a :class:`Recipe`; a one-line error naming what is wrong."""
    where = f"recipe {name} ({RECIPE_FILE}.toml)"
    if not isinstance(table, dict):
        raise MyopiaError(f"{where}: expected a table with {', '.join(_FIELDS)}")
    unknown, missing = sorted(set(table) - set(_FIELDS)), [f for f in _FIELDS if f not in table]
    if unknown or missing:
        raise MyopiaError(f"{where}: " + "; ".join(
            ([f"unknown keys {', '.join(unknown)}"] if unknown else []) + ([f"missing {', '.join(missing)}"]
                                                                          if missing else [])))
    steps = table["steps"]
    if not isinstance(steps, list) or not steps or not all(isinstance(s, str) and s.strip() for s in steps):
        raise MyopiaError(f"{where}: steps must be a non-empty list of command lines")
    try:
        argv = tuple(tuple(shlex.split(s)) for s in steps)
    except ValueError as exc:
        raise MyopiaError(f"{where}: a step is not a valid command line ({exc})") from None
    return Recipe(name, str(table["description"]), str(table["data"]), argv)


def load_recipes() -> dict[str, Recipe]:
    """Every recipe of ``recipes/recipes.toml``, by name, in the file's order."""
    return {name: _recipe(name, table) for name, table in read_recipe_file(RECIPE_FILE).items()}


def get_recipe(name: str) -> Recipe:
    """The recipe called ``name``; a clear error naming the known ones otherwise."""
    recipes = load_recipes()
    if name not in recipes:
        raise MyopiaError(f"no recipe {name!r}; known recipes: {', '.join(recipes)}")
    return recipes[name]
