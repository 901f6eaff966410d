"""myopia recipe: list the named recipes (the measured configurations) or run one."""

from __future__ import annotations


def register(sub) -> None:
    """Add the ``myopia recipe`` parser to ``sub`` (the subparsers of :func:`myopia.cli.build_parser`)."""
    p = sub.add_parser("recipe", help="list the named recipes (measured configurations) or run one",
                       description="A recipe is the sequence of myopia commands behind a measured table of the "
                       "docs (e.g. brown-gap: pair, gap, bonus, report). Without NAME, list them; with NAME, run "
                       "its commands in order on --data and --out (--dry-run prints them only). The recipes are "
                       "data: recipes/recipes.toml.")
    p.add_argument("name", nargs="?", default=None, help="recipe name (omit to list the recipes)")
    p.add_argument("--data", default=None, help="the corpus the recipe reads (see its description)")
    p.add_argument("--data2", default=None, help="a second corpus, for recipes that use two (default: --data)")
    p.add_argument("--out", default=None, help="output folder")
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    p.set_defaults(func=run)


def run(args) -> int:
    """Run ``myopia recipe`` with the parsed arguments; returns the exit status."""
    import shlex

    from ..errors import MyopiaError
    from ..experiments.recipes import get_recipe, load_recipes

    if args.name is None:
        for r in load_recipes().values():
            print(f"{r.name:<14} {r.description}\n{'':<14} data: {r.data}")
        return 0
    recipe = get_recipe(args.name)
    if args.out is None:
        raise MyopiaError("--out is required to run a recipe")
    if recipe.uses_data and args.data is None:
        raise MyopiaError(f"recipe {recipe.name} needs --data: {recipe.data}")
    commands = recipe.commands(args.data or "", args.out, args.data2)
    for argv in commands:
        print("myopia " + shlex.join(argv), flush=True)
    if args.dry_run:
        return 0
    from . import main

    for argv in commands:
        code = main(argv)
        if code:
            return code
    return 0
