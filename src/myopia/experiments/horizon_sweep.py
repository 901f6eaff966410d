"""``myopia horizon-sweep``: at one model size, how far back may the training signal reach?

Arms (same initialisation, data order and hyperparameters; only the gradient differs):

- ``vanilla``;
- for each myopic variant (``myopic`` and ``myopic-hidden``, side by side) and each horizon h: the gradient of
  position i's loss reaches positions i-h..i in full and nothing earlier (h = 0 is plain myopia; h >= seq_len - 1
  would be vanilla);
- for each variant and each beta in (0, 1): the off-diagonal gradient scaled by beta (h = 0).

The loss as a function of h says how far ahead the model's activations are shaped for: if loss(h) reaches the
vanilla loss by h = 8, pre-caching for tokens more than 8 positions ahead is worth nothing at this scale.
Results go to ``DIR/horizon.json``.
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
from ..rundir import RESULT, run_status
from ..sweep_grid import (
    EVAL_FILE,
    MYOPIC_ARMS,
    ModelSize,
    SweepSettings,
    TokenBudget,
    ensure_run,
    model_config_for,
    steps_for,
    train_config_for,
)

DEFAULT_BETAS = (0.1, 0.25, 0.5, 0.75)


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


def run_horizon_sweep(data, out, settings: SweepSettings, *, horizons=None, betas=None, corpus=None,
                      max_runs: int | None = None, bootstrap: int = 200, log=None) -> dict:
    """Train every arm at ``settings.sizes[0]`` with budget ``settings.tokens[0]`` for each seed; horizon.json."""
    from ..data import load_corpus

    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    if len(settings.sizes) != 1 or len(settings.tokens) != 1:
        raise MyopiaError("a horizon sweep uses exactly one size and one token budget")
    out = Path(out)
    corpus = corpus if corpus is not None else load_corpus(data)
    size, budget = settings.sizes[0], settings.tokens[0]
    base = model_config_for(settings, size, corpus.vocab_size)
    steps = steps_for(settings, budget, non_embedding_params(base))
    arms = horizon_arms(settings.seq_len, horizons, betas)
    trained = 0
    for seed in settings.seeds:
        tcfg = train_config_for(settings, size, steps, seed)
        for arm in arms:
            run_dir = out / f"{arm.name}-s{seed}"
            if run_status(run_dir) != "done":
                if max_runs is not None and trained >= max_runs:
                    continue
                trained += 1
            cfg = replace(base, gradient=arm.gradient, horizon=arm.horizon, beta=arm.beta)
            ensure_run(data, run_dir, cfg, tcfg, corpus=corpus, eval_tokens=settings.eval_tokens, log=log)
    summary = summarise_horizon(out, arms, settings, size, budget, steps, bootstrap=bootstrap, data=data)
    write_json(out / HORIZON_FILE, summary)
    return summary


def summarise_horizon(out, arms, settings: SweepSettings, size: ModelSize, budget: TokenBudget, steps: int, *,
                      bootstrap: int = 200, data=None) -> dict:
    out = Path(out)
    rows, evals = [], {}
    for seed in settings.seeds:
        for arm in arms:
            run_dir = out / f"{arm.name}-s{seed}"
            row = {"name": run_dir.name, "arm": arm.name, "gradient": arm.gradient, "horizon": arm.horizon,
                   "beta": arm.beta, "seed": seed, "status": run_status(run_dir)}
            if row["status"] == "done":
                row["eval_loss"] = read_json(run_dir / RESULT)["eval_loss"]
                if (run_dir / EVAL_FILE).exists():
                    evals[run_dir.name] = read_json(run_dir / EVAL_FILE)
            rows.append(row)

    def point(arm_name: str) -> dict | None:
        """Mean loss over seeds, gap to vanilla with its seed-inclusive interval (statistics module: seeds and
        validation documents resampled; t over seeds with >= 3), per-seed gaps and the training-noise note."""
        pairs = []
        for seed in settings.seeds:
            a, v = f"{arm_name}-s{seed}", f"vanilla-s{seed}"
            ra = next((r for r in rows if r["name"] == a and r["status"] == "done"), None)
            rv = next((r for r in rows if r["name"] == v and r["status"] == "done"), None)
            if ra and rv:
                pairs.append((ra, rv))
        if not pairs:
            return None
        loss = float(np.mean([ra["eval_loss"] for ra, _ in pairs]))
        gap = float(np.mean([ra["eval_loss"] - rv["eval_loss"] for ra, rv in pairs]))
        out = {"loss": loss, "gap": gap, "gap_ci": None, "seeds": len(pairs),
               "per_seed": [ra["eval_loss"] - rv["eval_loss"] for ra, rv in pairs],
               "training_noise": training_noise_note(len(pairs))}
        names = [n for ra, rv in pairs for n in (ra["name"], rv["name"])]
        if bootstrap > 0 and all(n in evals for n in names):
            docs, arm_w, van_w = _window_losses([evals[ra["name"]] for ra, _ in pairs],
                                                [evals[rv["name"]] for _, rv in pairs])
            _, unit = np.unique(docs, return_inverse=True)
            s = HierarchicalBootstrap(int(unit.max()) + 1, len(pairs), bootstrap, seed=1).means(arm_w - van_w,
                                                                                                 unit).summary()
            out.update({"gap": s["mean"], "gap_ci": s["ci95"], "gap_ci_eval": s["ci95_eval"],
                        "per_seed": s["per_seed"], "p": s.get("p")})
        return out

    null = _vanilla_null([evals.get(f"vanilla-s{s}") for s in settings.seeds], bootstrap)

    van = [r["eval_loss"] for r in rows if r["arm"] == "vanilla" and r["status"] == "done"]
    horizon_curves, beta_curves = {}, {}
    for v in MYOPIC_ARMS:
        h_arms = sorted({a.horizon for a in arms if a.gradient == v and a.beta == 0.0})
        b_arms = sorted({a.beta for a in arms if a.gradient == v and a.beta > 0})
        horizon_curves[v] = [{"horizon": h, **(point(f"{v}-h{h}") or {"loss": None})} for h in h_arms]
        beta_curves[v] = ([{"beta": 0.0, **(point(f"{v}-h0") or {"loss": None})}]
                          + [{"beta": b, **(point(f"{v}-beta{b:g}") or {"loss": None})} for b in b_arms])
    family = holm_over_points(horizon_curves, beta_curves)
    pending = [r["name"] for r in rows if r["status"] != "done"]
    base = model_config_for(settings, size, 257)
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
        "units": {"loss": "nats/token on held-out windows (validation split)", "gap": "loss - vanilla loss"},
        "vanilla": {"loss": float(np.mean(van)) if van else None, "seeds": len(van)},
        "n_seeds": len(van),
        "training_noise": training_noise_note(len(van)),
        "null_gap": null,
        "holm_family_size": family,
        "horizon": horizon_curves,
        "beta": beta_curves,
        "runs": rows,
        "provenance": provenance(),
    }


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
    """(document of each validation window (W,), arm losses (S, W), vanilla losses (S, W)); every run must have
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
