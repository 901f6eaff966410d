"""Config from one source: command-line options are generated from the config dataclasses' fields."""

from dataclasses import fields

from myopia.cli import build_parser
from myopia.cli.common import GRADIENT_OPTIONS, MODEL_OPTIONS, TRAIN_OPTIONS, model_config, train_config
from myopia.model import GPTConfig
from myopia.train import TrainConfig


def _parse(*extra):
    return build_parser().parse_args(["train", "--data", "d.txt", "--out", "o", *extra])


def test_every_field_has_help_and_the_parsed_defaults_are_the_dataclass_defaults():
    for cls in (GPTConfig, TrainConfig):
        for f in fields(cls):
            assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help text"
    args = _parse()  # the command line leaves eval_every to the run's length: about ten evaluations
    assert train_config(args) == TrainConfig(eval_every=None) and train_config(args).eval_every == 100
    assert TrainConfig(steps=30, eval_every=None).eval_every == 3 and TrainConfig(steps=10**5, eval_every=None).eval_every == 250
    assert model_config(args, vocab_size=256) == GPTConfig()
    parser = build_parser()
    train = parser._subparsers._group_actions[0].choices["train"]
    helps = {a.dest: a.help for a in train._actions}
    for name in (*MODEL_OPTIONS, *GRADIENT_OPTIONS, "gradient"):
        assert helps[name].startswith(next(f for f in fields(GPTConfig) if f.name == name).metadata["help"])
    for name in TRAIN_OPTIONS:
        dest = "no_progress" if name == "progress" else name
        want = next(f for f in fields(TrainConfig) if f.name == name).metadata["help"].replace("%", "%%")
        assert want in helps[dest]


def test_options_map_back_onto_the_config_by_field_name():
    args = _parse("--steps", "7", "--lr", "3e-3", "--no-progress", "--compile", "--precision", "fp32",
                  "--d-model", "64", "--n-head", "2", "--gradient", "myopic-hidden", "--horizon", "3")
    t = train_config(args)
    assert (t.steps, t.lr, t.progress, t.compile, t.precision) == (7, 3e-3, False, True, "fp32")
    m = model_config(args, vocab_size=300)
    assert (m.d_model, m.n_head, m.gradient, m.horizon, m.vocab_size) == (64, 2, "myopic-hidden", 3, 300)
    assert model_config(args, gradient="vanilla").gradient == "vanilla"


def test_a_command_overrides_a_default_without_restating_the_option():
    sub = build_parser()._subparsers._group_actions[0].choices
    args = sub["synthetic"].parse_args(["--task", "precache", "--out", "o"])
    assert (args.steps, args.batch_size, args.lr) == (1500, 128, 3e-3)
    assert train_config(args).warmup_steps == TrainConfig().warmup_steps


def test_every_recipe_is_a_sequence_of_valid_myopia_command_lines(capsys):
    from myopia.cli import main
    from myopia.experiments.recipes import load_recipes

    RECIPES = load_recipes()
    assert {"train-check", "brown-gap", "hf-chain", "isoflop-cpu", "horizon-cpu"} <= set(RECIPES)
    parser = build_parser()
    for recipe in RECIPES.values():
        for argv in recipe.commands("corpus/", "runs/x", "other.txt"):
            assert "{" not in " ".join(argv), argv
            parser.parse_args(argv)  # raises on an unknown option or a bad value
    assert main(["recipe"]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in RECIPES)
    assert main(["recipe", "brown-gap", "--data", "corpus/", "--out", "runs/b", "--dry-run"]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("myopia pair --data corpus/ --out runs/b")


def test_an_unknown_recipe_or_a_missing_input_is_one_line(capsys):
    from myopia.cli import main

    assert main(["recipe", "nope", "--out", "o"]) == 2
    assert main(["recipe", "brown-gap", "--out", "o"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and "known recipes: " in err[0] and "needs --data" in err[1]


def test_a_malformed_recipe_file_is_one_line(tmp_path, monkeypatch, capsys):
    from myopia.cli import main

    monkeypatch.setenv("MYOPIA_RECIPES", str(tmp_path))
    (tmp_path / "recipes.toml").write_text('[x]\ndescription = "a"\ndata = "b"\nsteps = ["train --out {out}", 3]\n')
    assert main(["recipe"]) == 2
    (tmp_path / "recipes.toml").write_text('[x]\ndescription = "a"\nsteps = ["train --out {out}"]\nextra = 1\n')
    assert main(["recipe", "x", "--out", "o"]) == 2
    (tmp_path / "recipes.toml").write_text('[x\n')
    assert main(["recipe"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3 and "steps must be a non-empty list" in err[0]
    assert "unknown keys extra; missing data" in err[1] and "recipes.toml" in err[2]
