"""``myopia horizon-sweep``: at one model size, how far back may the training signal reach?

Arms (same initialisation, data order and hyperparameters; only the gradient differs):

- ``vanilla``;
- for each myopic variant (``myopic`` and ``myopic-hidden``, side by side) and each horizon h: the gradient of
  position i's loss reaches positions i-h..i in full and nothing earlier (h = 0 is plain myopia; h >= seq_len - 1
  would be vanilla);
- for each variant and each beta in (0, 1): the off-diagonal gradient scaled by beta (h = 0).

The loss as a function of h says how far ahead the model's activations are shaped for: if loss(h) reaches the
vanilla loss by h = 8, pre-caching for tokens more than 8 positions ahead is worth nothing at this scale.

The learning rate: with an lr grid, each arm trains a tuning run ``tune-<arm>-lr<lr>-s<seed>`` per grid lr and
lr seed (seeds never reported), and takes the lr of :data:`LR_RULE` (validation split); without one, every arm
trains with the settings' lr. Reported runs ``<arm>-s<seed>`` are scored on the **test** split
(:data:`~myopia.sweep_grid.TEST_EVAL_FILE`, per window and document): every gap, interval, p, Holm reading and
the vanilla-vs-vanilla null comes from those windows. A run stopped by a non-finite loss is recorded as
``diverged.json`` and gives no point. Results go to ``DIR/horizon.json``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..analysis.stats import HierarchicalBootstrap, holm, null_gap, training_noise_note
from ..errors import MyopiaError
from ..io import provenance, read_json, write_json
from ..model import non_embedding_params
from ..rundir import HORIZON_JSON as HORIZON_FILE
from ..rundir import CONFIG, RESULT
from ..sweep_grid import (
    MYOPIC_ARMS,
    FINISHED,
    TEST_EVAL_FILE,
    ModelSize,
    RunBudget,
    SweepSettings,
    TokenBudget,
    ensure_run_or_diverged,
    ensure_test_eval,
    finished,
    model_config_for,
    steps_for,
    sweep_run_status,
    train_config_for,
)

DEFAULT_BETAS = (0.1, 0.25, 0.5, 0.75)
LR_RULE = ("per arm, the grid lr with the lowest mean validation loss over the lr seeds; an lr with a diverged run "
           "is excluded; ties: the smaller lr (grid lrs are peak lrs as given, not width-scaled)")
NO_GRID_RULE = "one lr for every arm (no grid): the settings' lr"


def default_horizons(seq_len: int) -> list[int]:
    """0, 1, 2, 4, 8, ... below seq_len - 1 (seq_len - 1 itself is vanilla)."""
    out, h = [0], 1
    while h < seq_len - 1:
        out.append(h)
        h *= 2
    return out


@dataclass(frozen=True)
class HorizonArm:
    name: str
    gradient: str
    horizon: int
    beta: float


def horizon_arms(seq_len: int, horizons=None, betas=None, variants=MYOPIC_ARMS) -> list[HorizonArm]:
    horizons = default_horizons(seq_len) if horizons is None else sorted(set(int(h) for h in horizons))
    betas = list(DEFAULT_BETAS) if betas is None else sorted(set(float(b) for b in betas))
    for h in horizons:
        if not 0 <= h < seq_len - 1:
            raise MyopiaError(f"horizon {h} must lie in [0, seq_len - 1) = [0, {seq_len - 1}); "
                              "seq_len - 1 and beyond is vanilla, which is always included")
    for b in betas:
        if not 0 < b < 1:
            raise MyopiaError(f"beta {b:g} must lie strictly between 0 (myopic) and 1 (vanilla)")
    for v in variants:
        if v not in MYOPIC_ARMS:
            raise MyopiaError(f"variant {v!r} must be myopic or myopic-hidden")
    arms = [HorizonArm("vanilla", "vanilla", 0, 0.0)]
    for v in variants:
        arms += [HorizonArm(f"{v}-h{h}", v, h, 0.0) for h in horizons]
        arms += [HorizonArm(f"{v}-beta{b:g}", v, 0, b) for b in betas]
    if 0 not in horizons:  # the beta curve starts at plain myopia
        arms += [HorizonArm(f"{v}-h0", v, 0, 0.0) for v in variants]
    return arms


def tuning_name(arm: str, lr: float, seed: int) -> str:
    """The folder of one lr-tuning run: ``tune-<arm>-lr<lr:g>-s<seed>``."""
    return f"tune-{arm}-lr{lr:g}-s{seed}"


def check_lr_plan(seeds, lr_grid, lr_seeds) -> tuple[list[float] | None, list[int]]:
    """(sorted distinct grid lrs or None, lr seeds) after checking them: positive lrs, lr seeds given only with a
    grid and never among the reported ``seeds``."""
    if not lr_grid:
        if lr_seeds:
            raise MyopiaError("lr seeds are given without an lr grid (add --lr-grid, or drop --lr-seeds)")
        return None, []
    grid = sorted({float(lr) for lr in lr_grid})
    if any(not (np.isfinite(lr) and lr > 0) for lr in grid):
        raise MyopiaError(f"the lr grid {grid} must hold positive learning rates")
    lr_seeds = list(dict.fromkeys(int(s) for s in (lr_seeds or [100])))
    overlap = sorted(set(lr_seeds) & {int(s) for s in seeds})
    if overlap:
        raise MyopiaError(f"lr seeds {overlap} are also reported seeds: no lr chosen on a reported seed "
                          "(give --lr-seeds disjoint from --seeds)")
    return grid, lr_seeds


def lr_choice(out, arms, lr_grid, lr_seeds) -> tuple[dict | None, dict, list[str]]:
    """(``{arm: lr}`` by :data:`LR_RULE`, or None while a tuning run is unfinished; ``{arm: {lr: mean validation
    loss}}`` (None: the lr had a diverged run, or is unfinished); the diverged tuning runs). MyopiaError when every
    lr of an arm diverged."""
    out = Path(out)
    table, diverged, choice = {}, [], {}
    for arm in arms:
        means, pending = {}, False
        table[arm.name] = {}
        for lr in lr_grid:
            losses, bad = [], False
            for seed in lr_seeds:
                d = out / tuning_name(arm.name, lr, seed)
                status = sweep_run_status(d)
                if status == "diverged":
                    diverged.append(d.name)
                    bad = True
                elif status == "done":
                    losses.append(float(read_json(d / RESULT)["eval_loss"]))
                else:
                    pending = True
            ok = not bad and len(losses) == len(lr_seeds)
            table[arm.name][f"{lr:g}"] = float(np.mean(losses)) if ok else None
            if ok:
                means[lr] = float(np.mean(losses))
        if not pending and not means:
            raise MyopiaError(f"arm {arm.name}: every lr of the grid {', '.join(f'{lr:g}' for lr in lr_grid)} "
                              "diverged on the lr seeds; lower the grid")
        if pending:
            choice = None
        elif choice is not None:
            choice[arm.name] = min(means, key=lambda lr: (means[lr], lr))
    return choice, table, diverged


def run_horizon_sweep(data, out, settings: SweepSettings, *, horizons=None, betas=None, lr_grid=None, lr_seeds=None,
                      corpus=None, max_runs: int | None = None, bootstrap: int = 200, log=None) -> dict:
    """Train every arm at ``settings.sizes[0]`` with budget ``settings.tokens[0]``: with ``lr_grid``, first the
    tuning runs (every arm x grid lr x ``lr_seeds``, default seed 100) and each arm's lr by :data:`LR_RULE`; then
    each reported seed with its arm's lr, scored on the test split. Writes and returns horizon.json."""
    from ..data import load_corpus

    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    if len(settings.sizes) != 1 or len(settings.tokens) != 1:
        raise MyopiaError("a horizon sweep uses exactly one size and one token budget")
    grid, lr_seeds = check_lr_plan(settings.seeds, lr_grid, lr_seeds)
    out = Path(out)
    corpus = corpus if corpus is not None else load_corpus(data)
    size, budget = settings.sizes[0], settings.tokens[0]
    base = model_config_for(settings, size, corpus.vocab_size)
    steps = steps_for(settings, budget, non_embedding_params(base))
    arms = horizon_arms(settings.seq_len, horizons, betas)
    take = RunBudget(max_runs).take

    def cfg_of(arm):
        return replace(base, gradient=arm.gradient, horizon=arm.horizon, beta=arm.beta)

    if grid:
        for seed in lr_seeds:
            for arm in arms:
                for lr in grid:
                    run_dir = out / tuning_name(arm.name, lr, seed)
                    if take(run_dir):
                        tcfg = replace(train_config_for(settings, size, steps, seed), lr=lr)
                        ensure_run_or_diverged(data, run_dir, cfg_of(arm), tcfg, corpus=corpus,
                                               eval_tokens=settings.eval_tokens, log=log, window_eval=False)
        choice = lr_choice(out, arms, grid, lr_seeds)[0]
    else:
        choice = {arm.name: settings.lr_for(size) for arm in arms}
    for seed in settings.seeds if choice is not None else []:
        for arm in arms:
            run_dir = out / f"{arm.name}-s{seed}"
            _check_lr(run_dir, choice[arm.name])
            if not take(run_dir):
                continue
            tcfg = replace(train_config_for(settings, size, steps, seed), lr=choice[arm.name])
            if ensure_run_or_diverged(data, run_dir, cfg_of(arm), tcfg, corpus=corpus,
                                      eval_tokens=settings.eval_tokens, log=log, window_eval=False):
                ensure_test_eval(run_dir, corpus, settings.eval_tokens, seed)
    summary = summarise_horizon(out, arms, settings, size, budget, steps, bootstrap=bootstrap, data=data,
                                lr_grid=grid, lr_seeds=lr_seeds)
    write_json(out / HORIZON_FILE, summary)
    return summary


def _check_lr(run_dir: Path, lr: float) -> None:
    """MyopiaError when a reported run already in the folder was trained with another lr than its arm's."""
    if (run_dir / CONFIG).is_file():
        had = read_json(run_dir / CONFIG).get("train", {}).get("lr")
        if had is not None and not np.isclose(had, lr, rtol=1e-9, atol=0.0):
            raise MyopiaError(f"{run_dir} was trained with lr {had:g}, but its arm's lr is now {lr:g}; use a new "
                              "--out (a folder holds one lr per arm)")


def summarise_horizon(out, arms, settings: SweepSettings, size: ModelSize, budget: TokenBudget, steps: int, *,
                      bootstrap: int = 200, data=None, lr_grid=None, lr_seeds=None) -> dict:
    """horizon.json of a sweep folder: every reported run, the loss and gap curves over h and beta (test split),
    Holm across the sweep, the null, and the lr of every arm (``lr``: grid, seeds, rule, choice, validation
    losses, diverged tuning runs)."""
    out = Path(out)
    lr = _lr_record(out, arms, settings, size, lr_grid, lr_seeds)
    rows, evals = _reported_rows(out, arms, settings.seeds, lr["choice"])

    def point(arm_name: str) -> dict:
        return _gap_point(arm_name, rows, evals, settings.seeds, bootstrap) or {"loss": None}

    horizon_curves, beta_curves = {}, {}
    for v in MYOPIC_ARMS:
        h_arms = sorted({a.horizon for a in arms if a.gradient == v and a.beta == 0.0})
        b_arms = sorted({a.beta for a in arms if a.gradient == v and a.beta > 0})
        horizon_curves[v] = [{"horizon": h, **point(f"{v}-h{h}")} for h in h_arms]
        beta_curves[v] = ([{"beta": 0.0, **point(f"{v}-h0")}]
                          + [{"beta": b, **point(f"{v}-beta{b:g}")} for b in b_arms])
    family = holm_over_points(horizon_curves, beta_curves)
    null = _vanilla_null([evals.get(f"vanilla-s{s}") for s in settings.seeds], bootstrap)
    van = [r["test_loss"] for r in rows if r["arm"] == "vanilla" and r["status"] == "done"]
    pending = [n for n in lr["tuning_runs"] if not finished(out / n)]
    pending += [r["name"] for r in rows if r["status"] not in FINISHED]
    base = model_config_for(settings, size, 257)
    choice_note = (f"the lr of each arm: {LR_RULE}, on the validation split of lr seeds {lr['seeds']}"
                   if lr["grid"] else NO_GRID_RULE)
    return {
        "kind": "myopia-horizon-sweep",
        "complete": not pending,
        "pending": pending,
        "data": None if data is None else str(data),
        "size": size.name,
        "params_non_embedding": non_embedding_params(base),
        "budget": budget.label,
        "steps": steps,
        "tokens": steps * settings.batch_size * settings.seq_len,
        "settings": settings.to_dict(),
        "split": "test",
        "units": {"loss": f"nats/token on held-out windows of the test split ({choice_note})",
                  "gap": "loss - vanilla loss (test split)"},
        "lr": lr,
        "vanilla": {"loss": float(np.mean(van)) if van else None, "seeds": len(van)},
        "n_seeds": len(van),
        "training_noise": training_noise_note(len(van)),
        "null_gap": null,
        "holm_family_size": family,
        "horizon": horizon_curves,
        "beta": beta_curves,
        "runs": rows,
        "diverged": [r["name"] for r in rows if r["status"] == "diverged"],
        "provenance": provenance(),
    }


def _lr_record(out: Path, arms, settings: SweepSettings, size: ModelSize, lr_grid, lr_seeds) -> dict:
    """horizon.json's ``lr``: grid (None without one), seeds, rule, choice ``{arm: lr}`` (None while tuning is
    unfinished), ``val_loss`` ``{arm: {lr: mean}}``, the diverged tuning runs and every tuning run's name."""
    grid, lr_seeds = check_lr_plan(settings.seeds, lr_grid, lr_seeds)
    if not grid:
        return {"grid": None, "seeds": [], "rule": NO_GRID_RULE,
                "choice": {a.name: settings.lr_for(size) for a in arms}, "val_loss": {}, "diverged": [],
                "tuning_runs": []}
    choice, table, diverged = lr_choice(out, arms, grid, lr_seeds)
    return {"grid": grid, "seeds": lr_seeds, "rule": LR_RULE, "choice": choice, "val_loss": table,
            "diverged": diverged, "tuning_runs": [tuning_name(a.name, lr, s) for s in lr_seeds for a in arms
                                                  for lr in grid]}


def _reported_rows(out: Path, arms, seeds, choice: dict | None) -> tuple[list[dict], dict]:
    """(one row per reported run: its arm, lr, status, validation loss and test loss (``eval_loss``: the reported,
    test-split loss); ``{run name: its test-split window evaluation}``). A trained run whose test split is not
    evaluated yet counts as ``partial``."""
    rows, evals = [], {}
    for seed in seeds:
        for arm in arms:
            run_dir = out / f"{arm.name}-s{seed}"
            row = {"name": run_dir.name, "arm": arm.name, "gradient": arm.gradient, "horizon": arm.horizon,
                   "beta": arm.beta, "seed": seed, "lr": None if choice is None else choice[arm.name],
                   "status": sweep_run_status(run_dir)}
            if row["status"] == "done":
                row["val_loss"] = float(read_json(run_dir / RESULT)["eval_loss"])
                if (run_dir / TEST_EVAL_FILE).exists():
                    evals[run_dir.name] = read_json(run_dir / TEST_EVAL_FILE)
                    row["test_loss"] = float(evals[run_dir.name]["mean"])
                    row["eval_loss"] = row["test_loss"]
                else:
                    row["status"] = "partial"
            rows.append(row)
    return rows, evals


def _gap_point(arm_name: str, rows: list[dict], evals: dict, seeds, bootstrap: int) -> dict | None:
    """Mean test loss over seeds, gap to vanilla with its seed-inclusive interval (statistics module: seeds and
    test documents resampled; t over seeds with >= 3), per-seed gaps, the arm's lr and the training-noise note;
    None when no seed has both the arm and vanilla."""
    done = {r["name"]: r for r in rows if r["status"] == "done"}
    pairs = [(done[f"{arm_name}-s{s}"], done[f"vanilla-s{s}"]) for s in seeds
             if f"{arm_name}-s{s}" in done and f"vanilla-s{s}" in done]
    if not pairs:
        return None
    out = {"loss": float(np.mean([ra["test_loss"] for ra, _ in pairs])),
           "gap": float(np.mean([ra["test_loss"] - rv["test_loss"] for ra, rv in pairs])), "gap_ci": None,
           "seeds": len(pairs), "per_seed": [ra["test_loss"] - rv["test_loss"] for ra, rv in pairs],
           "lr": pairs[0][0]["lr"], "training_noise": training_noise_note(len(pairs))}
    if bootstrap > 0:
        docs, arm_w, van_w = _window_losses([evals[ra["name"]] for ra, _ in pairs],
                                            [evals[rv["name"]] for _, rv in pairs])
        _, unit = np.unique(docs, return_inverse=True)
        s = HierarchicalBootstrap(int(unit.max()) + 1, len(pairs), bootstrap, seed=1).means(arm_w - van_w,
                                                                                             unit).summary()
        out.update({"gap": s["mean"], "gap_ci": s["ci95"], "gap_ci_eval": s["ci95_eval"],
                    "per_seed": s["per_seed"], "p": s.get("p")})
    return out


def _vanilla_null(van_runs: list, bootstrap: int) -> dict | None:
    """The vanilla-vs-vanilla null over the sweep's seeds (None with fewer than 2 evaluated vanilla runs)."""
    if bootstrap <= 0 or len(van_runs) < 2 or not all(van_runs):
        return None
    docs, van_w, _ = _window_losses(van_runs, van_runs)
    return null_gap(van_w, docs, n_boot=bootstrap, seed=1)


def holm_over_points(horizon_curves: dict, beta_curves: dict) -> int:
    """Holm across every distinct gap of the sweep (h = 0 appears in both curves, once in the family): each point
    gains ``p_holm`` and ``reading``: "worse than vanilla" / "better than vanilla" when its Holm-adjusted p is
    below 0.05, else "no detectable difference". A negative gap that survives says the stop-gradient changes
    optimisation itself (the myopic model is better), by at least as much as such a gap. Returns the family size."""
    points = {}
    for curves in (horizon_curves, beta_curves):
        for variant, rows in curves.items():
            for r in rows:
                if r.get("p") is not None:
                    points[(variant, r.get("horizon", 0), r.get("beta", 0.0))] = r
    adjusted = dict(zip(points, holm([r["p"] for r in points.values()])))
    for curves in (horizon_curves, beta_curves):
        for variant, rows in curves.items():
            for r in rows:
                key = (variant, r.get("horizon", 0), r.get("beta", 0.0))
                if key in adjusted:
                    r["p_holm"] = adjusted[key]
                    r["reading"] = ("no detectable difference" if adjusted[key] >= 0.05 else
                                    "worse than vanilla" if r["gap"] > 0 else "better than vanilla")
    return len(points)


def _window_losses(arm_evals: list[dict], van_evals: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(document of each held-out window (W,), arm losses (S, W), vanilla losses (S, W)); every run must have
    been evaluated on the same windows."""
    docs = np.asarray(arm_evals[0]["doc_of_window"])
    for e in arm_evals + van_evals:
        if not np.array_equal(np.asarray(e["doc_of_window"]), docs):
            raise MyopiaError("runs to be compared were evaluated on different windows")
    stack = lambda es: np.stack([np.asarray(e["loss_per_window"], dtype=np.float64) for e in es])  # noqa: E731
    return docs, stack(arm_evals), stack(van_evals)


def load_horizon(run_dir) -> dict:
    path = Path(run_dir) / HORIZON_FILE
    if not path.exists():
        raise MyopiaError(f"{run_dir} holds no {HORIZON_FILE}; run `myopia horizon-sweep --out {run_dir}` first")
    return read_json(path)
